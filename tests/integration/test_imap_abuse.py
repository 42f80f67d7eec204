# tests/integration/test_imap_abuse.py
# Hostile and broken IMAP input, on raw sockets: literals that never end or are too big,
# over-long lines, deep nesting, invalid sequence sets, commands in the wrong state, NUL
# octets, invalid flags, floods of bad commands, random garbage. After each, the same
# connection (when the server keeps it) or a new one still works and the mailbox holds
# exactly what it held before. Tests that may take ternd down run on a ternd of their own.
import base64
import random
import re
import time

import pytest

from conftest import (
    IMAP_DOMAIN,
    IMAP_PW,
    ImapClosed,
    RawIMAP,
    imap_fetches,
    imap_node,
    imap_user,
)

MSGS = [b"Subject: keep %d\r\nFrom: a@far.example\r\n\r\nprecious body %d\r\n" % (i, i)
        for i in range(3)]


@pytest.fixture
def victim(imap_t, imap):
    """A user with MSGS in INBOX; at teardown a fresh connection checks they are intact."""
    user = imap_user(imap_t, "victim")
    r = imap(user)
    for m in MSGS:
        r.append("INBOX", m, flags=["\\Flagged"])
    r.close()
    yield user
    check = RawIMAP(imap_t.imap_ports["imap"]).login(user, IMAP_PW)
    try:
        check.ok("EXAMINE INBOX")
        f = imap_fetches(check.ok("FETCH 1:* (UID FLAGS BODY.PEEK[])"))
        assert [f[k]["BODY[]"] for k in sorted(f)] == MSGS
        assert [f[k]["UID"] for k in sorted(f)] == ["1", "2", "3"]
        assert all(f[k]["FLAGS"] == ["\\Flagged"] for k in f)
    finally:
        check.close()


def is_bad(done):
    return re.match(rb"^\S+ BAD", done) is not None


def alive(imap, user):
    r = imap(user)
    r.ok("SELECT INBOX")
    r.ok("NOOP")
    r.close()


def test_unterminated_literals_client_goes_away(imap_t, imap, victim):
    # before login: a synchronizing literal for the password, half sent
    r = imap()
    r.send(b"A1 LOGIN {20}\r\n")
    assert r.line().startswith(b"+")
    r.send(b"victim")
    r.close()
    # an APPEND literal half sent, synchronizing and not
    for lit in (b"{400}", b"{400+}"):
        r = imap(victim)
        r.send(b"A1 APPEND INBOX " + lit + b"\r\n")
        if not lit.endswith(b"+}"):
            assert r.line().startswith(b"+")
        r.send(b"Subject: half\r\n\r\nonly part of it")
        time.sleep(0.1)
        r.close()
    # a command line without its end
    r = imap(victim)
    r.send(b'A1 SELECT "INB')
    r.close()
    time.sleep(0.2)
    r = imap(victim)
    lines = r.ok("STATUS INBOX (MESSAGES)")
    assert lines == [b'* STATUS "INBOX" (MESSAGES 3)'], lines


def test_literal_over_limits(imap_t, imap, victim):
    r = imap(victim)
    r.ok("SELECT INBOX")
    # a search string literal over 64 KiB: refused before it is sent
    lines, done = r.cmd("SEARCH TEXT {70000}")
    assert re.match(rb"^\S+ (NO \[TOOBIG\]|BAD)", done), done
    r.ok("NOOP")
    # a message over the size limit (50 MiB by default)
    lines, done = r.cmd("APPEND INBOX {60000000}")
    assert re.match(rb"^\S+ (NO \[TOOBIG\]|BAD)", done), done
    r.ok("NOOP")
    # before login, literals are small
    p = imap()
    lines, done = p.cmd("LOGIN {100000}")
    assert re.match(rb"^\S+ (NO|BAD)", done), done
    p.ok("NOOP")
    # a non-synchronizing literal over the limit is on its way already: BYE, close
    r2 = imap(victim)
    r2.send(b"A1 APPEND INBOX {60000000+}\r\n")
    assert r2.closed(5)
    assert b"* BYE" in r2.buf, r2.buf
    alive(imap, victim)


def test_one_mebibyte_line(imap_t, imap, victim):
    r = imap(victim)
    r.ok("SELECT INBOX")
    for payload in (b"a" * (1 << 20), b'"' + b"q" * (1 << 20) + b'"',
                    b"(" + b"FLAGS " * 200000 + b")"):
        r.send(b"L1 FETCH 1 " + payload + b"\r\n")
        lines, done = r.read_until_tagged("L1")
        assert is_bad(done), done[:200]
        f = imap_fetches(r.ok("FETCH 1 UID"))
        assert f[1]["UID"] == "1"
    # a long line split in many small writes
    r.send(b"L2 NOOP ")
    for _ in range(80):
        r.send(b"x" * 1000)
    r.send(b"\r\n")
    lines, done = r.read_until_tagged("L2")
    assert is_bad(done) or done.startswith(b"L2 OK"), done[:200]
    r.ok("NOOP")


def test_deep_nesting(imap_t, imap, victim):
    r = imap(victim)
    r.ok("SELECT INBOX")
    lines, done = r.cmd("SEARCH " + "(" * 1000 + "ALL" + ")" * 1000)
    assert is_bad(done), done
    lines, done = r.cmd("FETCH 1 " + "(" * 1000 + "FLAGS" + ")" * 1000)
    assert is_bad(done), done
    lines, done = r.cmd("SEARCH " + "NOT " * 5000 + "ALL")
    assert is_bad(done) or done.split()[1] == b"OK", done
    lines, done = r.cmd("SEARCH " + "OR ALL " * 3000 + "ALL")
    assert is_bad(done) or done.split()[1] == b"OK", done
    lines, done = r.cmd("LIST " + "(" * 1000 + ")" * 1000 + ' "" "*"')
    assert is_bad(done), done
    # unbalanced
    lines, done = r.cmd("SEARCH (ALL")
    assert is_bad(done), done
    lines, done = r.cmd("SEARCH ALL)")
    assert is_bad(done), done
    # moderate nesting is fine
    lines = r.ok("SEARCH " + "(" * 20 + "ALL" + ")" * 20)
    assert lines == [b"* SEARCH 1 2 3"]


BAD_SETS = ["0", "1:0x", "*:*:*", "1,,2", ",1", "1,", ":", "1:", ":5", "-1", "1.5",
            "4294967296", "99999999999", "01", "a", "1:*:2", "$"]


def test_invalid_sequence_sets(imap_t, imap, victim):
    r = None
    for i, s in enumerate(BAD_SETS):
        if i % 8 == 0:  # stay below the BAD limit of one connection
            r = imap(victim)
            r.ok("SELECT INBOX")
        for cmd in (f"FETCH {s} FLAGS", f"UID STORE {s} +FLAGS (\\Seen)"):
            lines, done = r.cmd(cmd)
            assert is_bad(done), (cmd, done)
            assert not any(b"FETCH" in l for l in lines), (cmd, lines)
    r = imap(victim)
    r.ok("SELECT INBOX")
    for cmd in ('COPY 0 "Trash"', "SEARCH UID 0", "UID EXPUNGE 1:0x", "SEARCH 1:*:2",
                'MOVE *:*:* "Trash"'):
        lines, done = r.cmd(cmd)
        assert is_bad(done), (cmd, done)
    # valid but odd sets work: reversed ranges, duplicates, beyond the end
    f = imap_fetches(r.ok("FETCH 3:1,2,2,* UID"))
    assert sorted(f) == [1, 2, 3]
    assert imap_fetches(r.ok("UID FETCH 4294967295 UID")) == {}


def test_commands_in_the_wrong_state(imap_t, imap, victim):
    r = imap()
    for cmd in ("FETCH 1 FLAGS", "SELECT INBOX", "EXAMINE INBOX", 'LIST "" "*"', "STATUS INBOX (MESSAGES)",
                "CREATE x", "STORE 1 +FLAGS (\\Seen)", "SEARCH ALL", "EXPUNGE", "CLOSE",
                "ENABLE QRESYNC", "IDLE"):
        lines, done = r.cmd(cmd)
        assert is_bad(done) or re.match(rb"^\S+ NO", done), (cmd, done)
    # APPEND before login: the literal may be read, the command is still refused
    tag = r.tag()
    r.send(f"{tag} APPEND INBOX {{10}}\r\n".encode())
    ln = r.line()
    if ln.startswith(b"+"):
        r.send(b"Subject: x\r\n")
        lines, done = r.read_until_tagged(tag)
    else:
        done = ln
    assert is_bad(done) or re.match(rb"^\S+ NO", done), done
    r = imap(victim)  # a new connection: each counts its BAD answers
    for cmd in ("FETCH 1 FLAGS", "STORE 1 +FLAGS (\\Seen)", "SEARCH ALL", "EXPUNGE",
                "CLOSE", "UNSELECT", 'COPY 1 "Trash"', "UID FETCH 1 FLAGS", 'LOGIN a b',
                "AUTHENTICATE PLAIN", "UID NOOP", "UID SELECT INBOX"):
        lines, done = r.cmd(cmd)
        assert is_bad(done) or re.match(rb"^\S+ NO", done), (cmd, done)
    lines, done = r.cmd("STARTTLS")
    assert is_bad(done) or re.match(rb"^\S+ NO", done), done
    r.ok("SELECT INBOX")
    r.ok("FETCH 1 FLAGS")


def test_nul_octets(imap_t, imap, victim):
    r = imap(victim)
    r.ok("SELECT INBOX")
    for cmd in (b"NOOP \x00", b'SEARCH TEXT "a\x00b"', b"SEARCH TEXT a\x00b",
                b'SELECT "IN\x00BOX"', b"FETCH 1 (FLAGS\x00)"):
        lines, done = r.cmd(cmd)
        assert is_bad(done), (cmd, done)
    # NUL in a tag: the answer cannot carry the tag
    r.send(b"x\x00y NOOP\r\n")
    ln = r.line()
    assert ln.startswith(b"* BAD") or b" BAD " in ln, ln
    # NUL in a literal: refused unless literal8 (RFC 3516)
    m = b"Subject: nul\r\n\r\na\x00b\r\n"
    lines, done = r.cmd(b"APPEND INBOX {%d+}\r\n%s" % (len(m), m))
    assert is_bad(done) or re.match(rb"^\S+ NO", done), done
    lines, done = r.cmd(b"LOGIN x {3+}\r\na\x00b")
    assert is_bad(done), done
    r.ok("NOOP")
    assert r.ok("STATUS INBOX (MESSAGES)") == [b'* STATUS "INBOX" (MESSAGES 3)']


def test_store_invalid_flag_is_bad(imap_t, imap, victim):
    r = imap(victim)
    r.ok("SELECT INBOX")
    for flag in ("a\\b", "fo*o", "fo%o"):
        lines, done = r.cmd(f"STORE 1 +FLAGS ({flag})")
        assert is_bad(done), (flag, done)


def test_append_invalid_flag_is_not_trycreate(imap_t, imap, victim):
    r = imap(victim)
    m = b"Subject: x\r\n\r\ny\r\n"
    lines, done = r.cmd(b"APPEND INBOX (a\\b) {%d+}\r\n%s" % (len(m), m))
    assert b"TRYCREATE" not in done and (is_bad(done) or b" NO " in done), done


def test_too_many_flags(imap_t, imap, victim):
    r = imap(victim)
    r.ok("SELECT INBOX")
    lines, done = r.cmd("STORE 1 +FLAGS (" + " ".join(f"$k{i}" for i in range(100)) + ")")
    assert is_bad(done) or re.match(rb"^\S+ NO", done), done
    r.ok("NOOP")


def test_too_many_bad_commands_bye(imap_t, imap, victim):
    r = imap(victim)
    for i in range(19):
        lines, done = r.cmd(f"BOGUS{i}")
        assert is_bad(done), done
    r.send(b"T99 BOGUS\r\n")
    assert r.closed(5)
    assert b"T99 BAD" in r.buf and b"* BYE" in r.buf, r.buf
    alive(imap, victim)


def test_random_garbage(imap_t, imap, victim):
    rng = random.Random(7)
    for round_ in range(4):
        r = imap(victim if round_ % 2 else None)
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(100, 20000)))
        try:
            r.send(junk + b"\r\n")
            r.closed(0.2)
        except (ImapClosed, OSError):
            pass
        r.close()
    # printable junk with IMAP-ish tokens
    toks = ["(", ")", "{5}", "{3+}", '"', "\\", "*", "%", "[", "]", "<1.2>", "BODY[",
            "UID", "FETCH", "1:*", "NIL", "~{2}", " ", "\r\n", "A1"]
    for round_ in range(4):
        r = imap(victim)
        r.ok("SELECT INBOX")
        junk = "".join(rng.choice(toks) for _ in range(400))
        try:
            r.send(junk.encode() + b"\r\nZZ NOOP\r\n")
            r.closed(0.2)
        except (ImapClosed, OSError):
            pass
        r.close()
    alive(imap, victim)


def test_many_pipelined_commands(imap_t, imap, victim):
    """2000 commands in one write are all answered, in order."""
    r = imap(victim)
    r.ok("SELECT INBOX")
    data = b"".join(b"P%d FETCH %d (UID FLAGS)\r\n" % (i, i % 3 + 1) for i in range(2000))
    r.send(data + b"PEND NOOP\r\n")
    lines, done = r.read_until_tagged("PEND")
    oks = [l for l in lines if re.match(rb"P\d+ OK", l)]
    assert [int(l.split()[0][1:]) for l in oks] == list(range(2000))


# ---------------------------------------------------------------------------------------
# on a ternd of its own: input that has brought ternd down


@pytest.fixture
def own_t(cluster):
    t = imap_node(cluster).start()
    t.ctl("domain", "add", IMAP_DOMAIN).ok()
    return t


@pytest.mark.parametrize("ir", ["!!!!", base64.b64encode(b"other@x\0u@imap.test\0pw").decode()])
def test_authenticate_invalid_initial_response(own_t, ir):
    user = imap_user(own_t)
    r = RawIMAP(own_t.imap_ports["imap"])
    try:
        lines, done = r.cmd(f"AUTHENTICATE PLAIN {ir}")
        assert is_bad(done) or re.match(rb"^\S+ NO", done), done
        r.login(user, IMAP_PW)
    finally:
        r.close()
        time.sleep(0.2)
    assert own_t.running(), f"ternd died:\n{own_t.log_tail()}"


def test_many_connections_before_login(imap_t, victim):
    """60 idle unauthenticated connections; the next client is still served."""
    conns = []
    try:
        for _ in range(60):
            conns.append(RawIMAP(imap_t.imap_ports["imap"]))
        r = RawIMAP(imap_t.imap_ports["imap"]).login(victim, IMAP_PW)
        r.ok("SELECT INBOX")
        r.close()
    finally:
        for c in conns:
            c.close()
