# tests/integration/test_admin.py
# The admin surface end to end: ternctl -> admin socket -> Raft -> FSM -> RocksDB -> the
# answer. Domains, users, passwords, quotas, aliases, mailboxes and status, against one
# real ternd shared by the module (each test uses names of its own), plus raw frames that
# ternctl would never send.
import itertools
import os
import stat
import subprocess

import pytest

from conftest import (
    TERNCTL,
    RawAdmin,
    encode_request,
    frame,
    mailbox_names,
    run_ctl,
    user_addresses,
)

DEFAULT_MAILBOXES = {
    "INBOX": "",
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}
STATUS_KEYS = ("node", "role", "term", "commit", "applied", "last", "leader", "snapshot_index")

_seq = itertools.count(1)


@pytest.fixture
def t(shared_ternd):
    return shared_ternd


@pytest.fixture
def dom(t):
    """A fresh local domain for one test."""
    name = f"d{next(_seq)}-{os.getpid()}.test"
    t.ctl("domain", "add", name).ok()
    return name


def add_user(t, addr, password="secret-pw", *extra):
    return t.ctl("user", "add", addr, *extra, password=password)


def refused(r, *words):
    """ternd said no: exit 1, 'ternctl: ...' on stderr mentioning one of WORDS."""
    assert r.rc == 1, repr(r)
    assert r.err.startswith("ternctl: "), repr(r)
    if words:
        assert any(w in r.err.lower() for w in words), repr(r)


# ---- status ----


def test_status_fields(t):
    r = t.ctl("status").ok()
    assert len(r.records) == 1, repr(r)
    st = r.records[0]
    for k in STATUS_KEYS:
        assert k in st, f"status lacks {k}: {r.out!r}"
    for k in STATUS_KEYS:
        if k != "role":
            assert st[k].isdigit(), f"{k}={st[k]!r} is not a number"
    assert st["role"] == "leader"
    assert st["node"] == st["leader"] == "1"
    assert int(st["term"]) >= 1
    assert int(st["applied"]) <= int(st["commit"]) <= int(st["last"])


def test_status_applied_follows_commit_after_writes(t, dom):
    """Right after each acknowledged write, status shows it committed and applied: the
    indexes are read together, never a stale commit beside a fresh applied."""
    first = t.status()
    seen = []
    for i in range(10):
        if i % 5 == 0:
            add_user(t, f"st{i}@{dom}").ok()
        t.ctl("domain", "add", f"st{i}.{dom}").ok()
        st = t.status()
        seen.append((st["applied"], st["commit"], st["last"]))
    assert all(a == c for a, c, _ in seen), f"(applied, commit, last) after writes: {seen}"
    assert all(int(c) <= int(l) for _, c, l in seen), seen
    assert int(seen[-1][1]) >= int(first["commit"]) + 12, (first, seen[-1])


# ---- domains ----


def test_domain_add_list_del(t):
    name = f"alpha-{os.getpid()}.test"
    r = t.ctl("domain", "add", name).ok()
    assert r.lines == []
    listed = [rec["domain"] for rec in t.ctl("domain", "list").ok().records]
    assert name in listed
    t.ctl("domain", "del", name).ok()
    listed = [rec["domain"] for rec in t.ctl("domain", "list").ok().records]
    assert name not in listed


def test_domain_duplicate_refused(t, dom):
    refused(t.ctl("domain", "add", dom), "exist")


def test_domain_names_are_case_insensitive(t, dom):
    refused(t.ctl("domain", "add", dom.upper()), "exist")


def test_domain_del_unknown_refused(t):
    refused(t.ctl("domain", "del", "never-added.test"))


@pytest.mark.parametrize(
    "name",
    [
        "",
        "bad domain.test",
        "a..b.test",
        ".lead.test",
        "semi;colon.test",
        "us@er.test",
        "x" * 64 + ".test",  # label over 63
        ("a" * 60 + ".") * 5 + "test",  # name over 253
        "new\nline.test",
    ],
    ids=["empty", "space", "empty-label", "leading-dot", "semicolon", "at", "long-label",
         "long-name", "newline"],
)
def test_domain_invalid_names_refused(t, name):
    r = t.ctl("domain", "add", name)
    refused(r)
    assert name not in [rec.get("domain") for rec in t.ctl("domain", "list").ok().records]


# ---- users ----


def test_user_add_and_list(t, dom):
    addr = f"alice@{dom}"
    r = add_user(t, addr).ok()
    assert len(r.records) == 1, repr(r)
    assert r.records[0]["address"] == addr
    assert r.records[0]["id"].isdigit() and int(r.records[0]["id"]) > 0
    recs = [x for x in t.ctl("user", "list", dom).ok().records if x.get("address") == addr]
    assert len(recs) == 1
    u = recs[0]
    assert u["id"] == r.records[0]["id"]
    for k in ("quota_bytes", "quota_messages", "used_bytes", "used_messages"):
        assert u[k] == "0", u
    assert addr in user_addresses(t)  # unfiltered list too


def test_user_list_filters_by_domain(t, dom):
    other = f"other-{next(_seq)}.test"
    t.ctl("domain", "add", other).ok()
    add_user(t, f"a@{dom}").ok()
    add_user(t, f"b@{other}").ok()
    assert user_addresses(t, dom) == {f"a@{dom}"}
    assert user_addresses(t, other) == {f"b@{other}"}


def test_user_duplicate_refused(t, dom):
    addr = f"bob@{dom}"
    add_user(t, addr).ok()
    refused(add_user(t, addr), "exists")


def test_user_address_case_insensitive(t, dom):
    """BOB@ and bob@ are one mailbox to every mail admin and every sender."""
    add_user(t, f"bea@{dom}").ok()
    refused(add_user(t, f"BEA@{dom.upper()}"), "exists")


@pytest.mark.parametrize(
    "addr",
    ["no-at-sign", "two@@{d}", "@{d}", "sp ace@{d}", "dot.@{d}", ".lead@{d}", "semi;colon@{d}",
     "x" * 65 + "@{d}", "user@"],
    ids=["no-at", "two-at", "empty-local", "space", "trailing-dot", "leading-dot", "semicolon",
         "long-local", "empty-domain"],
)
def test_user_invalid_address_refused(t, dom, addr):
    addr = addr.replace("{d}", dom)
    r = add_user(t, addr)
    refused(r, "invalid", "address")
    assert addr not in user_addresses(t)


def test_user_foreign_domain_refused(t):
    r = add_user(t, "carol@not-local.example")
    refused(r, "domain", "local")
    assert "carol@not-local.example" not in user_addresses(t)


def test_user_show_default_mailboxes(t, dom):
    addr = f"dave@{dom}"
    add_user(t, addr).ok()
    r = t.ctl("user", "show", addr).ok()
    assert r.records[0]["address"] == addr
    boxes = {rec["mailbox"]: rec for rec in r.records[1:]}
    assert len(r.records) == 1 + len(DEFAULT_MAILBOXES), repr(r)
    assert set(boxes) == set(DEFAULT_MAILBOXES)
    for name, use in DEFAULT_MAILBOXES.items():
        b = boxes[name]
        assert b["special_use"] == use, b
        assert b["uidnext"] == "1" and b["messages"] == "0", b
        assert int(b["uidvalidity"]) > 0, b
        assert int(b["highestmodseq"]) >= 1, b
        assert b["subscribed"] == "1", b
    assert len({b["id"] for b in boxes.values()}) == len(boxes), "mailbox ids must differ"
    assert mailbox_names(t, addr) == set(DEFAULT_MAILBOXES)


def test_user_show_unknown_refused(t, dom):
    refused(t.ctl("user", "show", f"nobody@{dom}"))


def test_user_passwd_and_verify(t, dom):
    addr = f"erin@{dom}"
    add_user(t, addr, "old-password").ok()
    r = t.ctl("user", "verify", addr, password="old-password").ok()
    assert r.lines == ["ok"]
    refused(t.ctl("user", "verify", addr, password="wrong"))
    t.ctl("user", "passwd", addr, password="new-password").ok()
    refused(t.ctl("user", "verify", addr, password="old-password"))
    assert t.ctl("user", "verify", addr, password="new-password").ok().lines == ["ok"]
    refused(t.ctl("user", "verify", f"ghost@{dom}", password="new-password"))
    refused(t.ctl("user", "passwd", f"ghost@{dom}", password="x"))


def test_password_stdin_strips_crlf_only(t, dom):
    addr = f"frank@{dom}"
    r = run_ctl(t.sock, "user", "add", addr, "--password-stdin", stdin=b" p w \r\n")
    r.ok()
    t.ctl("user", "verify", addr, password=" p w ").ok()  # inner/outer spaces are kept
    refused(t.ctl("user", "verify", addr, password="p w"))


def test_password_stdin_limits(t, dom):
    addr = f"gina@{dom}"
    r = run_ctl(t.sock, "user", "add", addr, "--password-stdin", stdin=b"")
    assert r.rc == 1 and "password" in r.err, repr(r)
    r = run_ctl(t.sock, "user", "add", addr, "--password-stdin", stdin=b"x" * 512 + b"\n")
    assert r.rc == 1 and "password" in r.err, repr(r)
    r = run_ctl(t.sock, "user", "add", addr, "--password-stdin", stdin=b"\n")
    assert r.rc == 1 and "password" in r.err, repr(r)  # empty password refused
    assert addr not in user_addresses(t)
    run_ctl(t.sock, "user", "add", addr, "--password-stdin", stdin=b"y" * 511).ok()
    t.ctl("user", "verify", addr, password="y" * 511).ok()


def test_password_never_from_argv(t, dom):
    addr = f"hank@{dom}"
    for argv in (
        ["user", "add", addr, "--password", "hunter2"],
        ["user", "add", addr, "--password=hunter2"],
        ["--password", "hunter2", "user", "add", addr],
        ["--password=hunter2", "user", "add", addr],
    ):
        r = run_ctl(t.sock, *argv)
        assert r.rc != 0, repr(r)
    assert addr not in user_addresses(t)
    help_text = subprocess.run([str(TERNCTL), "--help"], capture_output=True, timeout=10).stdout
    options = {w for w in help_text.decode().split() if w.startswith("--password")}
    assert options == {"--password-stdin"}, options


def test_password_without_tty_or_stdin_option_fails(t, dom):
    """No --password-stdin and no terminal: ternctl must not guess, and nothing is created."""
    addr = f"ivy@{dom}"
    r = run_ctl(t.sock, "user", "add", addr, stdin=b"secret\n")
    assert r.rc == 1, repr(r)
    assert "tty" in r.err or "terminal" in r.err, repr(r)
    assert addr not in user_addresses(t)


def test_user_quota(t, dom):
    addr = f"jack@{dom}"
    add_user(t, addr, "pw", "quota_bytes=5000", "quota_messages=7").ok()
    u = t.ctl("user", "show", addr).ok().records[0]
    assert (u["quota_bytes"], u["quota_messages"]) == ("5000", "7"), u
    t.ctl("user", "quota", addr, "1000000", "50").ok()
    u = t.ctl("user", "show", addr).ok().records[0]
    assert (u["quota_bytes"], u["quota_messages"]) == ("1000000", "50"), u
    t.ctl("user", "quota", addr, "2048").ok()
    u = t.ctl("user", "show", addr).ok().records[0]
    assert u["quota_bytes"] == "2048", u
    refused(t.ctl("user", "quota", addr, "lots"))
    refused(t.ctl("user", "quota", addr, "-5"))
    refused(t.ctl("user", "quota", f"ghost@{dom}", "10"))
    refused(add_user(t, f"kim@{dom}", "pw", "quota_bytes=abc"))
    refused(add_user(t, f"kim@{dom}", "pw", "quota_colour=blue"))


def test_user_del(t, dom):
    addr = f"lena@{dom}"
    first = int(add_user(t, addr).ok().records[0]["id"])
    t.ctl("user", "del", addr).ok()
    assert addr not in user_addresses(t)
    refused(t.ctl("user", "show", addr))
    refused(t.ctl("user", "del", addr))
    refused(t.ctl("user", "verify", addr, password="secret-pw"))
    # the address can be used again, by a new account: ids are never reused
    again = int(add_user(t, addr).ok().records[0]["id"])
    assert again > first
    assert mailbox_names(t, addr) == set(DEFAULT_MAILBOXES)


# ---- aliases ----


def alias_map(t, *domain):
    return {
        rec["alias"]: rec["targets"]
        for rec in t.ctl("alias", "list", *domain).ok().records
        if "alias" in rec
    }


def test_alias_add_list_del(t, dom):
    add_user(t, f"a1@{dom}").ok()
    add_user(t, f"a2@{dom}").ok()
    t.ctl("alias", "add", f"team@{dom}", f"a1@{dom},a2@{dom}").ok()
    assert alias_map(t, dom) == {f"team@{dom}": f"a1@{dom},a2@{dom}"}
    assert alias_map(t)[f"team@{dom}"] == f"a1@{dom},a2@{dom}"
    refused(t.ctl("alias", "add", f"team@{dom}", f"a1@{dom}"), "exist")
    t.ctl("alias", "del", f"team@{dom}").ok()
    assert alias_map(t, dom) == {}
    refused(t.ctl("alias", "del", f"team@{dom}"))


def test_alias_catch_all(t, dom):
    add_user(t, f"post@{dom}").ok()
    t.ctl("alias", "add", f"@{dom}", f"post@{dom}").ok()
    assert alias_map(t, dom) == {f"@{dom}": f"post@{dom}"}
    t.ctl("alias", "del", f"@{dom}").ok()
    assert alias_map(t, dom) == {}


def test_alias_external_target_and_bad_input(t, dom):
    t.ctl("alias", "add", f"fwd@{dom}", "someone@elsewhere.example").ok()
    assert alias_map(t, dom)[f"fwd@{dom}"] == "someone@elsewhere.example"
    refused(t.ctl("alias", "add", "x@not-local.example", f"fwd@{dom}"))
    refused(t.ctl("alias", "add", f"bad@{dom}", "not an address"))
    refused(t.ctl("alias", "add", f"empty@{dom}", ""))
    refused(t.ctl("alias", "add", "no-at-sign", f"fwd@{dom}"))


# ---- mailboxes ----


def boxes(t, user):
    return {rec["mailbox"]: rec for rec in t.ctl("mailbox", "list", user).ok().records}


def test_mailbox_create_rename_delete(t, dom):
    u = f"mo@{dom}"
    add_user(t, u).ok()
    t.ctl("mailbox", "create", u, "Projects").ok()
    b = boxes(t, u)
    assert "Projects" in b and b["Projects"]["special_use"] == ""
    assert b["Projects"]["uidnext"] == "1" and b["Projects"]["messages"] == "0"
    refused(t.ctl("mailbox", "create", u, "Projects"), "exist")
    t.ctl("mailbox", "rename", u, "Projects", "Done").ok()
    b = boxes(t, u)
    assert "Done" in b and "Projects" not in b
    refused(t.ctl("mailbox", "rename", u, "Projects", "Again"))
    refused(t.ctl("mailbox", "rename", u, "Done", "Sent"), "exist")
    t.ctl("mailbox", "delete", u, "Done").ok()
    assert set(boxes(t, u)) == set(DEFAULT_MAILBOXES)
    refused(t.ctl("mailbox", "delete", u, "Done"))


def test_mailbox_inbox_cannot_be_deleted(t, dom):
    u = f"nina@{dom}"
    add_user(t, u).ok()
    refused(t.ctl("mailbox", "delete", u, "INBOX"))
    refused(t.ctl("mailbox", "delete", u, "inbox"))  # INBOX is case-insensitive (RFC 3501)
    assert "INBOX" in boxes(t, u)


def test_mailbox_subscribe(t, dom):
    u = f"otto@{dom}"
    add_user(t, u).ok()
    t.ctl("mailbox", "subscribe", u, "Junk", "off").ok()
    assert boxes(t, u)["Junk"]["subscribed"] == "0"
    t.ctl("mailbox", "subscribe", u, "Junk", "on").ok()
    assert boxes(t, u)["Junk"]["subscribed"] == "1"
    refused(t.ctl("mailbox", "subscribe", u, "Junk", "maybe"))
    refused(t.ctl("mailbox", "subscribe", u, "NoSuchBox", "on"))


def test_mailbox_unknown_user_refused(t, dom):
    refused(t.ctl("mailbox", "list", f"ghost@{dom}"))
    refused(t.ctl("mailbox", "create", f"ghost@{dom}", "X"))


def test_mailbox_bad_names_refused(t, dom):
    u = f"paul@{dom}"
    add_user(t, u).ok()
    for name in ("", "a\nb", "a\rb"):
        r = t.ctl("mailbox", "create", u, name)
        assert r.rc == 1, repr(r)
    assert set(boxes(t, u)) == set(DEFAULT_MAILBOXES)


# ---- ternctl itself ----


def test_ternctl_missing_socket(tmp_path):
    sock = tmp_path / "no-such.sock"
    r = run_ctl(sock, "status")
    assert r.rc == 2, repr(r)
    assert str(sock) in r.err, repr(r)
    r = run_ctl(None, "status", env={**os.environ, "TERN_ADMIN_SOCKET": str(sock)})
    assert r.rc == 2 and str(sock) in r.err, repr(r)


def test_ternctl_usage_errors(t):
    for argv in (["bogus"], ["domain"], ["domain", "add"], ["domain", "add", "a", "b"],
                 ["status", "extra"], ["--no-such-option", "status"]):
        r = run_ctl(t.sock, *argv)
        assert r.rc == 1, repr(r)
    r = run_ctl(None, "--help")
    assert r.rc == 0
    for cmd in ("status", "domain add", "domain list", "domain del", "user add", "user passwd",
                "user del", "user list", "user show", "user quota", "user verify", "alias add",
                "alias del", "alias list", "mailbox list", "mailbox create", "mailbox rename",
                "mailbox delete", "mailbox subscribe"):
        assert cmd in r.out, f"--help lacks {cmd}"


def test_admin_socket_is_private(t):
    mode = os.stat(t.sock).st_mode
    assert stat.S_ISSOCK(mode)
    assert mode & 0o077 == 0, oct(mode)


# ---- raw frames: what ternctl never sends ----


def test_raw_unknown_verb_and_bad_args(t):
    """Requests ternctl would refuse itself: ternd refuses them too (status 1, or it drops
    the connection), and keeps serving."""
    bad = [
        ("no.such.verb", []),
        ("domain.add", ["a.test"] * 17),  # over 16 args
        ("domain.add", ["x" * 1025 + ".test"]),  # an arg over 1024 bytes
        ("domain.add", []),  # missing arg
        ("status", ["extra"]),
    ]
    for verb, args in bad:
        c = RawAdmin(t.sock)
        try:
            res = c.call(verb, args)
            assert res is None or (res[0] == 1 and res[1]), (verb, len(args), res)
        finally:
            c.close()
    c = RawAdmin(t.sock)
    try:
        st, err, _ = c.call("no.such.verb")
        st, _, lines = c.call("status")  # a refusal leaves the connection usable
        assert st == 0 and lines and "role=leader" in lines[0]
    finally:
        c.close()


def test_raw_oversized_frame_closes_connection(t):
    c = RawAdmin(t.sock)
    try:
        c.send(b"\xff\xff\xff\xf0")  # announces ~4 GiB
        assert c.closed(), "ternd must drop a connection announcing an oversized frame"
    finally:
        c.close()
    t.status()  # and keep serving


def test_raw_garbage_and_truncation(t):
    c = RawAdmin(t.sock)
    try:
        c.send(frame(b"\x0a\xff\xff\xff\xff\x0f"))  # string field longer than the frame
        res = c.response()
        assert res is None or res[0] != 0, res
    finally:
        c.close()
    c = RawAdmin(t.sock)
    c.send(frame(encode_request("status"))[:-2])  # half a frame, then hang up
    c.close()
    c = RawAdmin(t.sock)
    try:
        c.send(frame(b""))  # empty message: the required verb is missing
        res = c.response()
        assert res is None or res[0] != 0, res
    finally:
        c.close()
    assert t.status()["role"] == "leader"


def test_raw_pipelined_requests(t):
    """Two requests in one write: two responses, in order."""
    c = RawAdmin(t.sock)
    try:
        c.send(frame(encode_request("status")) + frame(encode_request("domain.list")))
        first, second = c.response(), c.response()
        assert first[0] == 0 and "role=" in first[2][0]
        assert second[0] == 0 and all(l.startswith("domain=") for l in second[2])
    finally:
        c.close()
