# tests/integration/test_imap.py
# The IMAP server end to end against one shared ternd (imap_t: SMTP and IMAP listeners):
# greeting and CAPABILITY, LOGIN and AUTHENTICATE PLAIN (with and without SASL-IR),
# STARTTLS and IMAPS, LIST/LSUB (patterns, LIST-EXTENDED, LIST-STATUS), STATUS, CREATE/
# DELETE/RENAME (INBOX too)/SUBSCRIBE, SELECT/EXAMINE, FETCH of every item (sections of a
# nested multipart delivered through SMTP compared byte for byte), STORE (UNCHANGEDSINCE),
# EXPUNGE/UID EXPUNGE/CLOSE/UNSELECT, COPY/MOVE with COPYUID, APPEND with APPENDUID and
# LITERAL+. SEARCH is in test_imap_search.py, several sessions in test_imap_sessions.py,
# hostile input in test_imap_abuse.py, kill -9 in test_imap_durability.py.
import base64
import datetime
import re
import time

import pytest

from conftest import (
    IMAP_DOMAIN,
    IMAP_PW,
    RawIMAP,
    imap_client,
    imap_fetches,
    imap_parse,
    imap_seqset_members,
    imap_user,
    message_body,
    messages,
    smtp_deliver,
    split_trace,
    tls_client_context,
)

DEFAULT_MAILBOXES = {
    "INBOX": None,
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}
INTERNALDATE_RE = re.compile(r"^\d\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d [+-]\d{4}$")


def ok_tag(done):
    return re.match(rb"^\S+ OK", done) is not None


def tagged(done, status):
    return re.match(rb"^\S+ " + status.encode() + rb"\b", done) is not None


def simple(n, subject=None, body=None):
    subject = subject or f"message {n}"
    body = body or f"body of message {n}\r\n"
    return (f"From: Sender <sender@far.example>\r\nTo: rcpt@{IMAP_DOMAIN}\r\n"
            f"Subject: {subject}\r\nMessage-ID: <m{n}@far.example>\r\n\r\n{body}").encode()


def list_lines(lines, kind="LIST"):
    """{name: (attributes lowercased, delimiter)} of the untagged LIST/LSUB lines."""
    out = {}
    for ln in lines:
        items = imap_parse(ln)
        if items[:2] == ["*", kind]:
            attrs, delim, name = items[2], items[3], items[4]
            name = name.decode() if isinstance(name, bytes) else name
            out[name] = ({a.lower() for a in attrs}, delim)
    return out


def status_line(lines, mailbox=None):
    """{item: int} of the first (or MAILBOX's) untagged STATUS line."""
    for ln in lines:
        items = imap_parse(ln)
        if items[:2] == ["*", "STATUS"]:
            name = items[2].decode() if isinstance(items[2], bytes) else items[2]
            if mailbox is None or name == mailbox:
                kv = items[3]
                return {kv[i].upper(): int(kv[i + 1]) for i in range(0, len(kv), 2)}
    raise AssertionError(f"no STATUS for {mailbox} in {lines}")


def resp_code(lines, code):
    """The value after [CODE ...] in the untagged OK lines (str) or None."""
    for ln in lines:
        m = re.match(rb"\* OK \[" + code.encode() + rb"(?: ([^\]]*))?\]", ln)
        if m:
            return (m.group(1) or b"").decode()
    return None


# ---------------------------------------------------------------------------------------
# greeting, capabilities, login


def caps_of(line):
    m = re.search(rb"CAPABILITY ([^\]\r\n]*)", line)
    assert m, line
    return set(m.group(1).decode().upper().split())


def test_greeting_and_capability(imap):
    r = imap()
    assert r.greeting.startswith(b"* OK [CAPABILITY "), r.greeting
    greet = caps_of(r.greeting)
    lines = r.ok("CAPABILITY")
    assert len(lines) == 1 and lines[0].startswith(b"* CAPABILITY ")
    caps = caps_of(lines[0])
    assert caps == greet
    for c in ("IMAP4REV1", "LITERAL+", "SASL-IR", "IDLE", "UIDPLUS", "MOVE", "UNSELECT",
              "CONDSTORE", "QRESYNC", "ESEARCH", "ENABLE", "NAMESPACE", "SPECIAL-USE",
              "LIST-EXTENDED", "LIST-STATUS", "STARTTLS", "AUTH=PLAIN"):
        assert c in caps, c
    # loopback counts as secure: LOGIN is not disabled
    assert "LOGINDISABLED" not in caps


def test_imaps_capability_has_no_starttls(imap):
    r = imap(tls=True)
    caps = caps_of(r.greeting)
    assert "STARTTLS" not in caps and "AUTH=PLAIN" in caps and "IMAP4REV1" in caps


def test_login_ok_and_capability_in_ok(imap_t, imap):
    user = imap_user(imap_t)
    r = imap()
    lines, done = r.cmd(f'LOGIN "{user}" "{IMAP_PW}"')
    assert ok_tag(done), done
    assert b"[CAPABILITY " in done  # RFC 3501 7.1: clients save a CAPABILITY round trip
    # LOGIN is a not-authenticated-state command only
    lines, done = r.cmd(f'LOGIN "{user}" "{IMAP_PW}"')
    assert tagged(done, "BAD"), done
    r.ok("NOOP")


def test_login_wrong_password(imap_t, imap):
    user = imap_user(imap_t)
    r = imap()
    lines, done = r.cmd(f'LOGIN "{user}" "wrong"')
    assert tagged(done, "NO") and b"[AUTHENTICATIONFAILED]" in done, done
    lines, done = r.cmd(f'LOGIN "nobody@{IMAP_DOMAIN}" "wrong"')
    assert tagged(done, "NO") and b"[AUTHENTICATIONFAILED]" in done, done
    # still not logged in
    lines, done = r.cmd("SELECT INBOX")
    assert tagged(done, "BAD") or tagged(done, "NO"), done
    # and the right password still works on the same connection
    r.login(user, IMAP_PW)
    r.ok("SELECT INBOX")


def test_login_three_failures_bye(imap_t, imap):
    user = imap_user(imap_t)
    r = imap()
    for i in range(3):
        lines, done = r.cmd(f'LOGIN "{user}" "wrong{i}"')
        assert tagged(done, "NO") and b"AUTHENTICATIONFAILED" in done, done
    assert r.closed(5), "no disconnect after 3 failed logins"
    assert b"* BYE" in r.buf, r.buf
    # others are not affected
    imap(user)


def test_login_with_literals(imap_t, imap):
    user = imap_user(imap_t)
    r = imap()
    tag = r.tag()
    r.send(f"{tag} LOGIN {{{len(user)}}}\r\n".encode())
    assert r.line().startswith(b"+")
    r.send(f"{user} {{{len(IMAP_PW)}}}\r\n".encode())
    assert r.line().startswith(b"+")
    r.send(IMAP_PW.encode() + b"\r\n")
    lines, done = r.read_until_tagged(tag)
    assert ok_tag(done), done


def test_imaplib_login_select_logout(imap_t):
    user = imap_user(imap_t)
    m = imap_client(imap_t, user, IMAP_PW)
    try:
        typ, data = m.select("INBOX")
        assert typ == "OK" and data == [b"0"]
        typ, data = m.logout()
        assert typ == "BYE"
    finally:
        try:
            m.shutdown()
        except Exception:
            pass


def b64plain(user, pw, authz=""):
    return base64.b64encode(f"{authz}\0{user}\0{pw}".encode()).decode()


def test_authenticate_plain_sasl_ir(imap_t, imap):
    user = imap_user(imap_t)
    r = imap()
    lines, done = r.cmd(f"AUTHENTICATE PLAIN {b64plain(user, IMAP_PW)}")
    assert ok_tag(done), done
    r.ok("SELECT INBOX")


def test_authenticate_plain_continuation(imap_t, imap):
    user = imap_user(imap_t)
    r = imap()
    tag = r.tag()
    r.send(f"{tag} AUTHENTICATE PLAIN\r\n")
    cont = r.line()
    assert cont.startswith(b"+"), cont
    r.send(b64plain(user, IMAP_PW) + "\r\n")
    lines, done = r.read_until_tagged(tag)
    assert ok_tag(done), done
    r.ok("SELECT INBOX")


def test_authenticate_plain_with_authzid_same_user(imap_t, imap):
    user = imap_user(imap_t)
    r = imap()
    lines, done = r.cmd(f"AUTHENTICATE PLAIN {b64plain(user, IMAP_PW, authz=user)}")
    assert ok_tag(done), done


def test_authenticate_plain_wrong_password_and_cancel(imap_t, imap):
    user = imap_user(imap_t)
    r = imap()
    lines, done = r.cmd(f"AUTHENTICATE PLAIN {b64plain(user, 'nope')}")
    assert tagged(done, "NO") and b"[AUTHENTICATIONFAILED]" in done, done
    # the client cancels the exchange with "*"
    tag = r.tag()
    r.send(f"{tag} AUTHENTICATE PLAIN\r\n")
    assert r.line().startswith(b"+")
    r.send("*\r\n")
    lines, done = r.read_until_tagged(tag)
    assert tagged(done, "BAD"), done
    # a garbage answer to the continuation is refused, the connection goes on
    tag = r.tag()
    r.send(f"{tag} AUTHENTICATE PLAIN\r\n")
    assert r.line().startswith(b"+")
    r.send("!!!not base64!!!\r\n")
    lines, done = r.read_until_tagged(tag)
    assert tagged(done, "BAD") or tagged(done, "NO"), done
    lines, done = r.cmd("AUTHENTICATE CRAM-MD5")
    assert tagged(done, "NO") or tagged(done, "BAD"), done
    # then a good one
    tag = r.tag()
    r.send(f"{tag} AUTHENTICATE PLAIN\r\n")
    assert r.line().startswith(b"+")
    r.send(b64plain(user, IMAP_PW) + "\r\n")
    lines, done = r.read_until_tagged(tag)
    assert ok_tag(done), done


def test_imaplib_authenticate_plain(imap_t):
    user = imap_user(imap_t)
    m = imap_client(imap_t)
    try:
        typ, _ = m.authenticate("PLAIN", lambda _: f"\0{user}\0{IMAP_PW}".encode())
        assert typ == "OK"
        assert m.select("INBOX")[0] == "OK"
    finally:
        m.shutdown()


def test_starttls_then_login(imap_t):
    user = imap_user(imap_t)
    m = imap_client(imap_t)
    try:
        assert "STARTTLS" in m.capabilities
        typ, _ = m.starttls(ssl_context=tls_client_context())
        assert typ == "OK"
        assert "STARTTLS" not in m.capabilities  # imaplib asked CAPABILITY again over TLS
        typ, _ = m.login(user, IMAP_PW)
        assert typ == "OK"
        assert m.select("INBOX")[0] == "OK"
    finally:
        m.shutdown()


def test_starttls_discards_pipelined_plaintext(imap_t, imap):
    """RFC 3501 6.2.1 / CVE-2011-0411: a command sent in the same packet as STARTTLS is
    never executed, neither before nor after the handshake."""
    user = imap_user(imap_t)
    r = imap()
    r.send(f'S1 STARTTLS\r\nS2 LOGIN "{user}" "{IMAP_PW}"\r\n')
    lines, done = r.read_until_tagged("S1")
    assert ok_tag(done), done
    assert r.buf == b"", f"server sent {r.buf!r} after its STARTTLS OK"
    r.s = tls_client_context().wrap_socket(r.s, server_hostname="localhost")
    r.s.settimeout(r.timeout)
    # S2 was dropped: nothing arrives for it, and we are not logged in
    assert r.quiet(0.5), r.buf
    lines, done = r.cmd("SELECT INBOX")
    assert tagged(done, "BAD"), done
    r.login(user, IMAP_PW)
    lines, done = r.cmd("STARTTLS")
    assert tagged(done, "BAD") or tagged(done, "NO"), done


def test_imaps_login_and_fetch(imap_t, imap):
    user = imap_user(imap_t)
    msg = simple(1)
    smtp_deliver(imap_t, user, msg)
    r = imap(user, tls=True)
    r.ok("SELECT INBOX")
    f = imap_fetches(r.ok("FETCH 1 BODY.PEEK[]"))
    assert split_trace(f[1]["BODY[]"])[1] == msg


def test_id_namespace_enable_noop_logout(imap_t, imap):
    user = imap_user(imap_t)
    r = imap(user)
    lines = r.ok('ID ("name" "pytest")')
    assert any(l.startswith(b"* ID ") for l in lines)
    lines = r.ok("NAMESPACE")
    assert lines == [b'* NAMESPACE (("" "/")) NIL NIL']
    lines = r.ok("ENABLE CONDSTORE")
    assert lines == [b"* ENABLED CONDSTORE"]
    lines = r.ok("ENABLE CONDSTORE")  # already enabled: not listed again
    assert lines == [b"* ENABLED"]
    r.ok("NOOP")
    lines, done = r.cmd("LOGOUT")
    assert ok_tag(done) and lines and lines[0].startswith(b"* BYE"), (lines, done)
    assert r.closed(5)


# ---------------------------------------------------------------------------------------
# mailboxes: LIST, LSUB, STATUS, CREATE, DELETE, RENAME, SUBSCRIBE


def test_list_defaults_and_special_use(imap_t, imap):
    user = imap_user(imap_t)
    r = imap(user)
    got = list_lines(r.ok('LIST "" "*"'))
    assert set(got) == set(DEFAULT_MAILBOXES)
    for name, su in DEFAULT_MAILBOXES.items():
        attrs, delim = got[name]
        assert delim == b"/"
        assert "\\hasnochildren" in attrs
        if su:
            assert su.lower() in attrs, (name, attrs)
    # the hierarchy delimiter (RFC 3501 6.3.8)
    lines = r.ok('LIST "" ""')
    assert lines == [b'* LIST (\\Noselect) "/" ""']
    # selection option SPECIAL-USE: only those with a special use
    got = list_lines(r.ok('LIST (SPECIAL-USE) "" "*"'))
    assert set(got) == {n for n, su in DEFAULT_MAILBOXES.items() if su}


def test_create_with_intermediate_levels_and_patterns(imap_t, imap):
    user = imap_user(imap_t)
    r = imap(user)
    r.ok('CREATE "work/2024/q1"')
    r.ok('CREATE "work/2024/q2/"')  # a trailing delimiter is dropped (RFC 3501 6.3.3)
    r.ok('CREATE "play"')
    got = list_lines(r.ok('LIST "" "*"'))
    assert set(got) == set(DEFAULT_MAILBOXES) | {"work", "work/2024", "work/2024/q1",
                                                 "work/2024/q2", "play"}
    assert "\\haschildren" in got["work"][0] and "\\haschildren" in got["work/2024"][0]
    assert "\\hasnochildren" in got["work/2024/q1"][0]
    assert "\\hasnochildren" in got["play"][0]
    # % does not cross the delimiter
    got = list_lines(r.ok('LIST "" "%"'))
    assert set(got) == set(DEFAULT_MAILBOXES) | {"work", "play"}
    got = list_lines(r.ok('LIST "" "work/%"'))
    assert set(got) == {"work/2024"}
    got = list_lines(r.ok('LIST "" "work/*"'))
    assert set(got) == {"work/2024", "work/2024/q1", "work/2024/q2"}
    got = list_lines(r.ok('LIST "work/" "%"'))  # reference + pattern
    assert set(got) == {"work/2024"}
    got = list_lines(r.ok('LIST "" "*q1"'))
    assert set(got) == {"work/2024/q1"}
    got = list_lines(r.ok('LIST "" "nomatch*"'))
    assert got == {}
    got = list_lines(r.ok('LIST "" "INBOX"'))
    assert set(got) == {"INBOX"}
    # the new mailboxes are usable
    r.ok('SELECT "work/2024"')
    lines, done = r.cmd('CREATE "work"')
    assert tagged(done, "NO") and b"ALREADYEXISTS" in done, done
    lines, done = r.cmd('CREATE "INBOX"')
    assert tagged(done, "NO"), done


def test_list_return_options(imap_t, imap):
    user = imap_user(imap_t)
    smtp_deliver(imap_t, user, simple(1))
    smtp_deliver(imap_t, user, simple(2))
    smtp_deliver(imap_t, user, simple(3))
    r = imap(user)
    r.ok("SELECT INBOX")
    r.ok("STORE 2 +FLAGS (\\Seen)")
    r.ok("UNSELECT")
    r.ok('CREATE "lists/a"')
    r.ok('UNSUBSCRIBE "Junk"')
    lines = r.ok('LIST "" "*" RETURN (SPECIAL-USE SUBSCRIBED STATUS (MESSAGES UNSEEN))')
    got = list_lines(lines)
    assert set(got) == set(DEFAULT_MAILBOXES) | {"lists", "lists/a"}
    for name, (attrs, _) in got.items():
        assert ("\\subscribed" in attrs) == (name != "Junk"), (name, attrs)
        su = DEFAULT_MAILBOXES.get(name)
        if su:
            assert su.lower() in attrs
        st = status_line(lines, name)
        want = {"MESSAGES": 3, "UNSEEN": 2} if name == "INBOX" else {"MESSAGES": 0, "UNSEEN": 0}
        assert st == want, (name, st)
    # every STATUS follows its LIST line
    names = []
    for ln in lines:
        items = imap_parse(ln)
        names.append((items[1], items[-2] if items[1] == "STATUS" else items[-1]))
    for i in range(0, len(names), 2):
        assert names[i][0] == "LIST" and names[i + 1][0] == "STATUS"
        assert names[i][1] == names[i + 1][1]
    # selection option SUBSCRIBED
    got = list_lines(r.ok('LIST (SUBSCRIBED) "" "*"'))
    assert "Junk" not in got and "INBOX" in got
    assert all("\\subscribed" in a for a, _ in got.values())


def test_lsub_subscribe_unsubscribe(imap_t, imap):
    user = imap_user(imap_t)
    r = imap(user)
    r.ok('CREATE "news/tech"')
    got = list_lines(r.ok('LSUB "" "*"'), "LSUB")
    assert "news/tech" in got and "Trash" in got
    r.ok('UNSUBSCRIBE "news/tech"')
    r.ok('UNSUBSCRIBE "Trash"')
    got = list_lines(r.ok('LSUB "" "*"'), "LSUB")
    assert "news/tech" not in got and "Trash" not in got and "INBOX" in got
    got = list_lines(r.ok('LSUB "" "%"'), "LSUB")
    assert "news/tech" not in got and "news" in got
    r.ok('SUBSCRIBE "Trash"')
    got = list_lines(r.ok('LSUB "" "T%"'), "LSUB")
    assert set(got) == {"Trash"}
    # LIST still shows everything
    got = list_lines(r.ok('LIST "" "*"'))
    assert "news/tech" in got
    lines, done = r.cmd('SUBSCRIBE "no/such"')
    assert tagged(done, "NO"), done


def test_status(imap_t, imap):
    user = imap_user(imap_t)
    msgs = [simple(i) for i in range(4)]
    for m in msgs:
        smtp_deliver(imap_t, user, m)
    stored = sum(int(rec["size"]) for rec in messages(imap_t, user))
    r = imap(user)
    r.ok("SELECT INBOX")
    r.ok("STORE 1,3 +FLAGS (\\Seen)")
    sel_lines = r.ok("SELECT INBOX")  # fresh view, HIGHESTMODSEQ after the STORE
    st = status_line(r.ok("STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN "
                          "HIGHESTMODSEQ SIZE)"))
    assert st["MESSAGES"] == 4
    assert st["UNSEEN"] == 2
    assert st["UIDNEXT"] == 5
    assert st["UIDVALIDITY"] == int(resp_code(sel_lines, "UIDVALIDITY"))
    assert st["HIGHESTMODSEQ"] == int(resp_code(sel_lines, "HIGHESTMODSEQ"))
    assert st["SIZE"] == stored
    assert st["RECENT"] == 0
    # items come back in the order asked
    lines = r.ok("STATUS INBOX (UNSEEN MESSAGES)")
    assert lines == [b'* STATUS "INBOX" (UNSEEN 2 MESSAGES 4)']
    st = status_line(r.ok('STATUS "Trash" (MESSAGES UIDNEXT)'))
    assert st == {"MESSAGES": 0, "UIDNEXT": 1}
    lines, done = r.cmd('STATUS "nosuch" (MESSAGES)')
    assert tagged(done, "NO") and b"NONEXISTENT" in done, done
    lines, done = r.cmd("STATUS INBOX (BOGUS)")
    assert tagged(done, "BAD"), done
    lines, done = r.cmd("STATUS INBOX")
    assert tagged(done, "BAD"), done


def test_delete_mailbox(imap_t, imap):
    user = imap_user(imap_t)
    r = imap(user)
    r.ok('CREATE "gone"')
    r.append("gone", simple(1))
    uv = status_line(r.ok('STATUS "gone" (UIDVALIDITY)'))["UIDVALIDITY"]
    r.ok('DELETE "gone"')
    assert "gone" not in list_lines(r.ok('LIST "" "*"'))
    lines, done = r.cmd('SELECT "gone"')
    assert tagged(done, "NO"), done
    lines, done = r.cmd('DELETE "gone"')
    assert tagged(done, "NO") and b"NONEXISTENT" in done, done
    lines, done = r.cmd("DELETE INBOX")
    assert tagged(done, "NO"), done
    # recreating gives an empty mailbox with a fresh UIDVALIDITY
    r.ok('CREATE "gone"')
    st = status_line(r.ok('STATUS "gone" (MESSAGES UIDNEXT UIDVALIDITY)'))
    assert st["MESSAGES"] == 0 and st["UIDNEXT"] == 1
    assert st["UIDVALIDITY"] != uv  # uid 1 again: a client must not take it for the old one


def test_list_percent_returns_levels_without_mailbox(imap_t, imap):
    user = imap_user(imap_t)
    r = imap(user)
    r.ok('CREATE "top/child"')
    r.ok('DELETE "top"')
    got = list_lines(r.ok('LIST "" "*"'))
    assert "top/child" in got
    got = list_lines(r.ok('LIST "" "%"'))
    assert "top" in got, got
    assert got["top"][0] & {"\\noselect", "\\nonexistent"}


def test_rename_mailbox_with_children_and_messages(imap_t, imap):
    user = imap_user(imap_t)
    r = imap(user)
    r.ok('CREATE "old/sub"')
    bodies = [simple(i) for i in range(3)]
    for b in bodies:
        r.append("old", b)
    r.append("old/sub", simple(9))
    st_before = status_line(r.ok('STATUS "old" (UIDVALIDITY UIDNEXT MESSAGES)'))
    r.ok('RENAME "old" "new"')
    got = list_lines(r.ok('LIST "" "*"'))
    assert "old" not in got and "old/sub" not in got
    assert "new" in got and "new/sub" in got
    st = status_line(r.ok('STATUS "new" (UIDVALIDITY UIDNEXT MESSAGES)'))
    assert st == st_before
    r.ok('SELECT "new"')
    f = imap_fetches(r.ok("FETCH 1:* BODY.PEEK[]"))
    assert [f[i]["BODY[]"] for i in sorted(f)] == bodies
    assert status_line(r.ok('STATUS "new/sub" (MESSAGES)')) == {"MESSAGES": 1}
    lines, done = r.cmd('RENAME "nosuch" "x"')
    assert tagged(done, "NO") and b"NONEXISTENT" in done, done
    lines, done = r.cmd('RENAME "new" "Sent"')
    assert tagged(done, "NO") and b"ALREADYEXISTS" in done, done
    lines, done = r.cmd('RENAME "new" "new/sub/deeper"')
    assert tagged(done, "NO"), done


def test_rename_inbox_moves_messages_and_leaves_empty_inbox(imap_t, imap):
    user = imap_user(imap_t)
    bodies = [simple(i) for i in range(3)]
    for b in bodies:
        smtp_deliver(imap_t, user, b)
    r = imap(user)
    r.ok('CREATE "INBOX/child"')
    uv = status_line(r.ok("STATUS INBOX (UIDVALIDITY)"))["UIDVALIDITY"]
    r.ok('RENAME "INBOX" "saved"')
    assert status_line(r.ok('STATUS "saved" (UIDVALIDITY)'))["UIDVALIDITY"] == uv
    assert status_line(r.ok("STATUS INBOX (UIDVALIDITY)"))["UIDVALIDITY"] != uv
    got = list_lines(r.ok('LIST "" "*"'))
    assert "INBOX" in got and "saved" in got
    assert "INBOX/child" in got  # inferiors of INBOX are not renamed (RFC 3501 6.3.5)
    assert status_line(r.ok('STATUS "saved" (MESSAGES)')) == {"MESSAGES": 3}
    assert status_line(r.ok('STATUS "INBOX" (MESSAGES)')) == {"MESSAGES": 0}
    r.ok('EXAMINE "saved"')
    f = imap_fetches(r.ok("FETCH 1:* BODY.PEEK[]"))
    assert [split_trace(f[i]["BODY[]"])[1] for i in sorted(f)] == bodies
    # new mail goes to the new INBOX
    smtp_deliver(imap_t, user, simple(7))
    sel = r.ok("SELECT INBOX")
    assert b"* 1 EXISTS" in sel
    f = imap_fetches(r.ok("FETCH 1 BODY.PEEK[]"))
    assert split_trace(f[1]["BODY[]"])[1] == simple(7)


# ---------------------------------------------------------------------------------------
# SELECT, EXAMINE, CLOSE, UNSELECT


def test_select_and_examine_responses(imap_t, imap):
    user = imap_user(imap_t)
    for i in range(3):
        smtp_deliver(imap_t, user, simple(i))
    r = imap(user)
    r.ok("SELECT INBOX")
    r.ok("STORE 1 +FLAGS (\\Seen)")
    st = status_line(r.ok("STATUS INBOX (UIDVALIDITY UIDNEXT HIGHESTMODSEQ)"))
    tag = r.tag()
    lines, done = r.cmd("SELECT INBOX", tag)
    assert done.startswith(f"{tag} OK [READ-WRITE]".encode()), done
    assert b"* 3 EXISTS" in lines
    assert any(re.match(rb"\* FLAGS \(.*\\Seen.*\)", l) for l in lines)
    perm = resp_code(lines, "PERMANENTFLAGS")
    assert "\\Seen" in perm and "\\Deleted" in perm and "\\*" in perm
    assert int(resp_code(lines, "UIDVALIDITY")) == st["UIDVALIDITY"]
    assert int(resp_code(lines, "UIDNEXT")) == st["UIDNEXT"] == 4
    assert int(resp_code(lines, "HIGHESTMODSEQ")) == st["HIGHESTMODSEQ"]
    assert resp_code(lines, "UNSEEN") == "2"  # the first unseen is message 2
    # EXAMINE: read-only
    tag = r.tag()
    lines, done = r.cmd("EXAMINE INBOX", tag)
    assert done.startswith(f"{tag} OK [READ-ONLY]".encode()), done
    assert b"* 3 EXISTS" in lines
    assert resp_code(lines, "PERMANENTFLAGS") == "()"
    lines, done = r.cmd("STORE 2 +FLAGS (\\Flagged)")
    assert tagged(done, "NO"), done
    lines, done = r.cmd("EXPUNGE")
    assert tagged(done, "NO"), done
    # BODY[] in a read-only mailbox does not set \Seen
    f = imap_fetches(r.ok("FETCH 2 BODY[]"))
    assert "FLAGS" not in f[2] or "\\Seen" not in f[2]["FLAGS"]
    f = imap_fetches(r.ok("FETCH 2 FLAGS"))
    assert "\\Seen" not in f[2]["FLAGS"]
    # a failing SELECT leaves no mailbox selected
    lines, done = r.cmd('SELECT "nosuch"')
    assert tagged(done, "NO"), done
    lines, done = r.cmd("FETCH 1 FLAGS")
    assert tagged(done, "BAD") or tagged(done, "NO"), done


def test_select_empty_mailbox(imap_t, imap):
    user = imap_user(imap_t)
    r = imap(user)
    lines = r.ok('SELECT "Trash"')
    assert b"* 0 EXISTS" in lines
    assert resp_code(lines, "UIDNEXT") == "1"
    assert resp_code(lines, "UNSEEN") is None
    assert r.ok("FETCH 1:* FLAGS") == []
    assert r.ok("SEARCH ALL") == [b"* SEARCH"]


def test_close_expunges_unselect_does_not(imap_t, imap):
    user = imap_user(imap_t)
    r = imap(user)
    for i in range(4):
        r.append("INBOX", simple(i))
    r.ok("SELECT INBOX")
    r.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    lines = r.ok("UNSELECT")
    assert lines == []
    assert status_line(r.ok("STATUS INBOX (MESSAGES)")) == {"MESSAGES": 4}
    lines, done = r.cmd("FETCH 1 FLAGS")
    assert tagged(done, "BAD"), done
    r.ok("SELECT INBOX")
    r.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")
    lines = r.ok("CLOSE")
    assert not any(b"EXPUNGE" in l for l in lines), lines  # CLOSE is silent
    assert status_line(r.ok("STATUS INBOX (MESSAGES)")) == {"MESSAGES": 2}
    r.ok("SELECT INBOX")
    f = imap_fetches(r.ok("FETCH 1:* UID"))
    assert [f[i]["UID"] for i in sorted(f)] == ["1", "4"]
    # CLOSE of an EXAMINEd mailbox expunges nothing
    r.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    r.ok("EXAMINE INBOX")
    r.ok("CLOSE")
    assert status_line(r.ok("STATUS INBOX (MESSAGES)")) == {"MESSAGES": 2}


# ---------------------------------------------------------------------------------------
# FETCH

ATTACHMENT = bytes(range(256)) * 8 + b"tail"
HTML = "<p>Hello <b>html</b> w\u00f6rld</p>".encode()


def b64lines(data):
    return base64.encodebytes(data).replace(b"\n", b"\r\n").rstrip(b"\r\n")


def nested_message():
    """(the message, {section: expected bytes}) of a nested multipart."""
    p1 = b"Plain text part.\r\nSecond line."
    p21 = b"qp caf=C3=A9 and a soft =\r\nline break"
    p22 = b64lines(HTML)
    p3 = b64lines(ATTACHMENT)
    inner = (b"From: Inner Person <inner@far.example>\r\nTo: x@far.example\r\n"
             b"Subject: inner subject\r\nDate: Wed, 02 Feb 2022 08:00:00 +0000\r\n\r\n"
             b"Inner body line 1\r\nInner body line 2")
    h1 = b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    h2 = b'Content-Type: multipart/alternative; boundary="in-b"\r\n\r\n'
    h21 = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    h22 = b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    h3 = (b'Content-Type: application/octet-stream; name="data.bin"\r\n'
          b'Content-Disposition: attachment; filename="data.bin"\r\n'
          b"Content-Transfer-Encoding: base64\r\n\r\n")
    h4 = b"Content-Type: message/rfc822\r\n\r\n"
    body2 = b"--in-b\r\n" + h21 + p21 + b"\r\n--in-b\r\n" + h22 + p22 + b"\r\n--in-b--"
    header = (b'From: "Alice Sender" <alice@far.example>\r\n'
              b"To: Bob <bob@imap.test>, carol@far.example\r\n"
              b"Cc: dave@far.example\r\n"
              b"Subject: nested multipart\r\n"
              b"Date: Tue, 01 Feb 2022 10:11:12 +0100\r\n"
              b"Message-ID: <nested-1@far.example>\r\n"
              b"In-Reply-To: <parent@far.example>\r\n"
              b"X-Folded: first\r\n second\r\n"
              b"MIME-Version: 1.0\r\n"
              b'Content-Type: multipart/mixed; boundary="out-b"\r\n\r\n')
    text = (b"This is a preamble.\r\n"
            b"--out-b\r\n" + h1 + p1 + b"\r\n"
            b"--out-b\r\n" + h2 + body2 + b"\r\n"
            b"--out-b\r\n" + h3 + p3 + b"\r\n"
            b"--out-b\r\n" + h4 + inner + b"\r\n"
            b"--out-b--\r\nepilogue\r\n")
    inner_h, _, inner_t = inner.partition(b"\r\n\r\n")
    sections = {
        "1": p1, "1.MIME": h1, "2": body2, "2.MIME": h2, "2.1": p21, "2.1.MIME": h21,
        "2.2": p22, "3": p3, "3.MIME": h3, "4": inner, "4.MIME": h4,
        "4.HEADER": inner_h + b"\r\n\r\n", "4.TEXT": inner_t, "4.1": inner_t,
        "TEXT": text,
    }
    return header + text, header, sections


@pytest.fixture(scope="module")
def nested(imap_t):
    """A user with the nested multipart in INBOX (uid 1), delivered through SMTP, and
    what was stored: (user, sent message, stored octets, {section: bytes})."""
    user = imap_user(imap_t)
    msg, header, sections = nested_message()
    smtp_deliver(imap_t, user, msg)
    stored = message_body(imap_t, user, 1)
    trace, rest = split_trace(stored)
    assert rest == msg
    sections = dict(sections, HEADER=trace + header)
    return user, msg, stored, sections


def test_fetch_sections_exact_bytes(nested, imap):
    user, msg, stored, sections = nested
    r = imap(user)
    r.ok("EXAMINE INBOX")
    for sec, want in sections.items():
        f = imap_fetches(r.ok(f"FETCH 1 (BODY.PEEK[{sec}])"))
        assert f[1][f"BODY[{sec}]"] == want, sec
    f = imap_fetches(r.ok("FETCH 1 (BODY.PEEK[])"))
    assert f[1]["BODY[]"] == stored
    # several sections in one FETCH, lower case too
    f = imap_fetches(r.ok("FETCH 1 (body.peek[3] BODY.PEEK[2.2] UID)"))
    assert base64.b64decode(f[1]["BODY[3]"]) == ATTACHMENT
    assert base64.b64decode(f[1]["BODY[2.2]"]) == HTML
    assert f[1]["UID"] == "1"
    # parts that do not exist are empty (as Dovecot)
    f = imap_fetches(r.ok("FETCH 1 (BODY.PEEK[9] BODY.PEEK[1.HEADER])"))
    assert f[1]["BODY[9]"] in (b"", None) and f[1]["BODY[1.HEADER]"] in (b"", None)


def test_fetch_header_fields(nested, imap):
    user, msg, stored, sections = nested
    r = imap(user)
    r.ok("EXAMINE INBOX")
    f = imap_fetches(r.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
    assert f[1]["BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: nested multipart\r\n\r\n"
    # field names in any case; the fields come in message order, each with its folds
    f = imap_fetches(r.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (subject x-folded FROM nope)])"))
    (label, got), = f[1].items()
    assert label.startswith("BODY[HEADER.FIELDS ("), label
    assert got == (b'From: "Alice Sender" <alice@far.example>\r\n'
                   b"Subject: nested multipart\r\n"
                   b"X-Folded: first\r\n second\r\n\r\n")
    f = imap_fetches(r.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT X-Folded)])"))
    want = sections["HEADER"].replace(b"Subject: nested multipart\r\n", b"")
    want = want.replace(b"X-Folded: first\r\n second\r\n", b"")
    assert f[1]["BODY[HEADER.FIELDS.NOT (SUBJECT X-FOLDED)]"] == want
    f = imap_fetches(r.ok("FETCH 1 (BODY.PEEK[4.HEADER.FIELDS (SUBJECT)])"))
    assert f[1]["BODY[4.HEADER.FIELDS (SUBJECT)]"] == b"Subject: inner subject\r\n\r\n"
    f = imap_fetches(r.ok("FETCH 1 (RFC822.HEADER)"))
    assert f[1]["RFC822.HEADER"] == sections["HEADER"]


def test_fetch_partial(nested, imap):
    user, msg, stored, sections = nested
    r = imap(user)
    r.ok("EXAMINE INBOX")
    f = imap_fetches(r.ok("FETCH 1 (BODY.PEEK[]<0.10>)"))
    assert f[1]["BODY[]<0>"] == stored[:10]
    f = imap_fetches(r.ok("FETCH 1 (BODY.PEEK[TEXT]<5.20> BODY.PEEK[3]<100.50>)"))
    assert f[1]["BODY[TEXT]<5>"] == sections["TEXT"][5:25]
    assert f[1]["BODY[3]<100>"] == sections["3"][100:150]
    n = len(stored)
    f = imap_fetches(r.ok(f"FETCH 1 (BODY.PEEK[]<{n - 4}.100>)"))
    assert f[1][f"BODY[]<{n - 4}>"] == stored[-4:]
    f = imap_fetches(r.ok(f"FETCH 1 (BODY.PEEK[]<{n + 10}.5>)"))
    assert f[1][f"BODY[]<{n + 10}>"] in (b"", None)


def test_fetch_bodystructure_and_body(nested, imap):
    user, msg, stored, sections = nested
    r = imap(user)
    r.ok("EXAMINE INBOX")
    f = imap_fetches(r.ok("FETCH 1 (BODYSTRUCTURE BODY)"))
    bs, body = f[1]["BODYSTRUCTURE"], f[1]["BODY"]

    def basic(part, typ, sub, enc, sec, text=False):
        assert part[0].lower() == typ and part[1].lower() == sub, part
        assert part[5].lower() == enc, part
        assert int(part[6]) == len(sections[sec]), (sec, part)
        if text:
            assert int(part[7]) == sections[sec].count(b"\n"), (sec, part)

    # multipart/mixed: 4 children, subtype, then (extension) boundary parameter
    nkids = next(i for i, p in enumerate(bs) if not isinstance(p, list))
    assert nkids == 4, bs
    assert bs[4].lower() == b"mixed"
    assert [x.lower() for x in bs[5]] == [b"boundary", b"out-b"]
    basic(bs[0], b"text", b"plain", b"7bit", "1", text=True)
    alt = bs[1]
    assert alt[2].lower() == b"alternative"
    basic(alt[0], b"text", b"plain", b"quoted-printable", "2.1", text=True)
    assert [x.lower() for x in alt[0][2]] == [b"charset", b"utf-8"]
    basic(alt[1], b"text", b"html", b"base64", "2.2", text=True)
    basic(bs[2], b"application", b"octet-stream", b"base64", "3")
    assert [x.lower() for x in bs[2][2]] == [b"name", b"data.bin"]
    # extension data of a basic part: md5, disposition
    assert bs[2][8][0].lower() == b"attachment"
    msgpart = bs[3]
    assert msgpart[0].lower() == b"message" and msgpart[1].lower() == b"rfc822"
    assert int(msgpart[6]) == len(sections["4"])
    inner_env = msgpart[7]
    assert inner_env[1] == b"inner subject"
    assert inner_env[2] == [[b"Inner Person", None, b"inner", b"far.example"]]
    assert msgpart[8][0].lower() == b"text" and int(msgpart[8][6]) == len(sections["4.TEXT"])
    assert int(msgpart[9]) == sections["4"].count(b"\n")
    # BODY is BODYSTRUCTURE without extension data
    assert body[4].lower() == b"mixed" and len(body) == 5
    assert len(body[0]) == 8 and len(body[2]) == 7


def test_fetch_envelope(nested, imap):
    user, msg, stored, sections = nested
    r = imap(user)
    r.ok("EXAMINE INBOX")
    f = imap_fetches(r.ok("FETCH 1 ENVELOPE"))
    env = f[1]["ENVELOPE"]
    alice = [[b"Alice Sender", None, b"alice", b"far.example"]]
    assert env == [
        b"Tue, 01 Feb 2022 10:11:12 +0100",
        b"nested multipart",
        alice,
        alice,  # sender defaults to from
        alice,  # reply-to defaults to from
        [[b"Bob", None, b"bob", b"imap.test"], [None, None, b"carol", b"far.example"]],
        [[None, None, b"dave", b"far.example"]],
        None,
        b"<parent@far.example>",
        b"<nested-1@far.example>",
    ]


def test_fetch_simple_items_and_macros(imap_t, imap):
    user = imap_user(imap_t)
    msg = simple(1)
    smtp_deliver(imap_t, user, msg)
    size = int(messages(imap_t, user)[0]["size"])
    r = imap(user)
    r.ok("SELECT INBOX")
    f = imap_fetches(r.ok("FETCH 1 (FLAGS UID INTERNALDATE RFC822.SIZE)"))[1]
    assert f["FLAGS"] == [] and f["UID"] == "1"
    assert int(f["RFC822.SIZE"]) == size
    assert INTERNALDATE_RE.match(f["INTERNALDATE"].decode()), f["INTERNALDATE"]
    when = datetime.datetime.strptime(f["INTERNALDATE"].decode(), "%d-%b-%Y %H:%M:%S %z")
    assert abs(when.timestamp() - time.time()) < 600, f["INTERNALDATE"]
    items = {"FAST": {"FLAGS", "INTERNALDATE", "RFC822.SIZE"},
             "ALL": {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"},
             "FULL": {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"}}
    for macro, want in items.items():
        f = imap_fetches(r.ok(f"FETCH 1 {macro}"))[1]
        assert set(f) == want, (macro, f)
    # UID FETCH always reports the UID
    f = imap_fetches(r.ok("UID FETCH 1 FLAGS"))[1]
    assert set(f) == {"UID", "FLAGS"}
    # none of these set \Seen
    assert imap_fetches(r.ok("FETCH 1 FLAGS"))[1]["FLAGS"] == []


def test_fetch_peek_and_seen(imap_t, imap):
    user = imap_user(imap_t)
    r = imap(user)
    bodies = [simple(i, body="line one\r\nline two\r\n") for i in range(6)]
    for b in bodies:
        r.append("INBOX", b)
    r.ok("SELECT INBOX")

    def flags(n):
        return imap_fetches(r.ok(f"FETCH {n} FLAGS"))[n]["FLAGS"]

    f = imap_fetches(r.ok("FETCH 1 (BODY.PEEK[] BODY.PEEK[TEXT] BODY.PEEK[HEADER])"))[1]
    assert f["BODY[]"] == bodies[0]
    assert flags(1) == []
    # BODY[] sets \Seen and reports it in the same response
    f = imap_fetches(r.ok("FETCH 1 BODY[]"))[1]
    assert f["BODY[]"] == bodies[0] and "\\Seen" in f["FLAGS"]
    assert flags(1) == ["\\Seen"]
    # RFC822.HEADER does not set it; RFC822.TEXT, RFC822 and BODY[TEXT] do
    f = imap_fetches(r.ok("FETCH 2 RFC822.HEADER"))[2]
    assert f["RFC822.HEADER"] == bodies[1].split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert flags(2) == []
    f = imap_fetches(r.ok("FETCH 2 RFC822.TEXT"))[2]
    assert f["RFC822.TEXT"] == b"line one\r\nline two\r\n"
    assert flags(2) == ["\\Seen"]
    f = imap_fetches(r.ok("FETCH 3 RFC822"))[3]
    assert f["RFC822"] == bodies[2]
    assert flags(3) == ["\\Seen"]
    imap_fetches(r.ok("FETCH 4 BODY[HEADER.FIELDS (SUBJECT)]"))
    assert flags(4) == ["\\Seen"]
    f = imap_fetches(r.ok("FETCH 5 RFC822.SIZE"))[5]
    assert int(f["RFC822.SIZE"]) == len(bodies[4])
    assert flags(5) == []
    # a range: only the unseen ones change, all are reported
    f = imap_fetches(r.ok("FETCH 1:6 BODY[]<0.4>"))
    assert sorted(f) == [1, 2, 3, 4, 5, 6]
    for i in range(1, 7):
        assert f[i]["BODY[]<0>"] == bodies[i - 1][:4]
        assert flags(i) == ["\\Seen"]


def test_fetch_invalid_section_is_bad(imap_t, imap):
    """RFC 3501 section-spec: nz-number parts, known keywords, MIME only after a part."""
    user = imap_user(imap_t)
    r = imap(user)
    r.append("INBOX", simple(1))
    r.ok("SELECT INBOX")
    for sec in ("0", "FOO", "1.0", "MIME", "1.", ".1", "HEADER.FIELDS", "TEXT.1"):
        lines, done = r.cmd(f"FETCH 1 (UID BODY.PEEK[{sec}])")
        assert tagged(done, "BAD"), (sec, lines, done)
        assert not any(b"FETCH" in l for l in lines), (sec, lines)
    r.ok("FETCH 1 (BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[HEADER.FIELDS (X)])")


def test_fetch_sequence_sets_and_uid_fetch(imap_t, imap):
    user = imap_user(imap_t)
    r = imap(user)
    for i in range(8):
        r.append("INBOX", simple(i))
    r.ok("SELECT INBOX")
    r.ok("STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    r.ok("EXPUNGE")
    # msn 1..6 are uids 1,3,5,6,7,8
    uids = {1: 1, 2: 3, 3: 5, 4: 6, 5: 7, 6: 8}
    f = imap_fetches(r.ok("FETCH 1:* UID"))
    assert {k: int(v["UID"]) for k, v in f.items()} == uids
    f = imap_fetches(r.ok("FETCH 2,5:6,* UID"))
    assert sorted(f) == [2, 5, 6]
    f = imap_fetches(r.ok("FETCH 6:4 UID"))
    assert sorted(f) == [4, 5, 6]
    f = imap_fetches(r.ok("UID FETCH 2:6 FLAGS"))  # uids 3, 5, 6
    assert sorted(int(v["UID"]) for v in f.values()) == [3, 5, 6]
    f = imap_fetches(r.ok("UID FETCH 4 FLAGS"))  # expunged
    assert f == {}
    f = imap_fetches(r.ok("UID FETCH 100:* FLAGS"))  # "*" is the highest uid: 8
    assert [int(v["UID"]) for v in f.values()] == [8]


# ---------------------------------------------------------------------------------------
# STORE


def test_store_flags(imap_t, imap):
    user = imap_user(imap_t)
    r = imap(user)
    for i in range(4):
        r.append("INBOX", simple(i))
    r.ok("SELECT INBOX")
    f = imap_fetches(r.ok("STORE 1 +FLAGS (\\Flagged $Work)"))
    assert set(f[1]["FLAGS"]) == {"\\Flagged", "$Work"}
    f = imap_fetches(r.ok("STORE 1 +FLAGS (\\Seen \\Flagged)"))
    assert set(f[1]["FLAGS"]) == {"\\Flagged", "$Work", "\\Seen"}
    f = imap_fetches(r.ok("STORE 1 -FLAGS ($Work)"))
    assert set(f[1]["FLAGS"]) == {"\\Flagged", "\\Seen"}
    f = imap_fetches(r.ok("STORE 1 FLAGS (\\Answered)"))
    assert f[1]["FLAGS"] == ["\\Answered"]
    f = imap_fetches(r.ok("STORE 1 FLAGS ()"))
    assert f[1]["FLAGS"] == []
    # flags as bare atoms, several messages
    f = imap_fetches(r.ok("STORE 2:3 +FLAGS \\Draft"))
    assert sorted(f) == [2, 3] and all(v["FLAGS"] == ["\\Draft"] for v in f.values())
    # .SILENT: no untagged FETCH
    lines = r.ok("STORE 4 +FLAGS.SILENT (\\Deleted)")
    assert not any(b"FETCH" in l for l in lines), lines
    lines = r.ok("STORE 4 FLAGS.SILENT (\\Seen)")
    assert lines == []
    # UID STORE reports the UID
    f = imap_fetches(r.ok("UID STORE 3 +FLAGS (\\Flagged)"))
    assert f[3]["UID"] == "3" and set(f[3]["FLAGS"]) == {"\\Draft", "\\Flagged"}
    # \Recent cannot be stored
    f = imap_fetches(r.ok("STORE 2 +FLAGS (\\Recent)"))
    assert "\\Recent" not in f.get(2, {}).get("FLAGS", [])
    # the result, read back on a new connection
    r2 = imap(user)
    r2.ok("EXAMINE INBOX")
    f = imap_fetches(r2.ok("FETCH 1:4 FLAGS"))
    assert {k: set(v["FLAGS"]) for k, v in f.items()} == {
        1: set(), 2: {"\\Draft"}, 3: {"\\Draft", "\\Flagged"}, 4: {"\\Seen"}}
    lines, done = r.cmd("STORE 1 FLAGZ (\\Seen)")
    assert tagged(done, "BAD"), done
    lines, done = r.cmd("STORE 1 +FLAGS (\\Seen")
    assert tagged(done, "BAD"), done


def test_store_unchangedsince(imap_t, imap):
    user = imap_user(imap_t)
    r = imap(user)
    for i in range(3):
        r.append("INBOX", simple(i))
    r.ok("ENABLE CONDSTORE")
    r.ok("SELECT INBOX")
    f = imap_fetches(r.ok("FETCH 1:3 MODSEQ"))
    mod = {k: int(v["MODSEQ"][0]) for k, v in f.items()}
    assert mod[1] < mod[2] < mod[3]
    # message 2 changes after we read its modseq
    f = imap_fetches(r.ok("STORE 2 +FLAGS (\\Answered)"))
    new2 = int(f[2]["MODSEQ"][0])
    assert new2 > mod[3]
    # conditional on the old modseq of 3: 1 and 3 change, 2 fails
    lines, done = r.cmd(f"STORE 1:3 (UNCHANGEDSINCE {mod[3]}) +FLAGS (\\Flagged)")
    assert ok_tag(done) and b"[MODIFIED 2]" in done, done
    f = imap_fetches(lines)
    assert sorted(f) == [1, 3]
    assert all("\\Flagged" in v["FLAGS"] for v in f.values())
    assert int(f[1]["MODSEQ"][0]) == int(f[3]["MODSEQ"][0]) > new2  # one modseq per STORE
    # UID STORE reports UIDs in MODIFIED
    lines, done = r.cmd("UID STORE 2,3 (UNCHANGEDSINCE 1) +FLAGS (\\Seen)")
    assert ok_tag(done) and (b"[MODIFIED 2,3]" in done or b"[MODIFIED 2:3]" in done), done
    f = imap_fetches(r.ok("FETCH 2:3 FLAGS"))
    assert all("\\Seen" not in v["FLAGS"] for v in f.values())
    # UNCHANGEDSINCE equal to the current modseq succeeds
    cur = int(imap_fetches(r.ok("FETCH 2 MODSEQ"))[2]["MODSEQ"][0])
    lines, done = r.cmd(f"STORE 2 (UNCHANGEDSINCE {cur}) +FLAGS (\\Seen)")
    assert ok_tag(done) and b"MODIFIED" not in done, done
    # HIGHESTMODSEQ follows
    st = status_line(r.ok("STATUS INBOX (HIGHESTMODSEQ)"))
    last = max(int(v["MODSEQ"][0]) for v in imap_fetches(r.ok("FETCH 1:* MODSEQ")).values())
    assert st["HIGHESTMODSEQ"] == last


# ---------------------------------------------------------------------------------------
# EXPUNGE


def test_expunge_and_uid_expunge(imap_t, imap):
    user = imap_user(imap_t)
    r = imap(user)
    for i in range(8):
        r.append("INBOX", simple(i))
    r.ok("SELECT INBOX")
    r.ok("STORE 2,4,5 +FLAGS.SILENT (\\Deleted)")
    lines = r.ok("EXPUNGE")
    # each EXPUNGE names the sequence number at the time it is sent
    assert lines == [b"* 2 EXPUNGE", b"* 3 EXPUNGE", b"* 3 EXPUNGE"], lines
    f = imap_fetches(r.ok("FETCH 1:* UID"))
    assert [int(f[k]["UID"]) for k in sorted(f)] == [1, 3, 6, 7, 8]
    # UID EXPUNGE: only the \Deleted ones in the set
    r.ok("STORE 1:* +FLAGS.SILENT (\\Deleted)")
    lines = r.ok("UID EXPUNGE 6:7")
    assert lines == [b"* 3 EXPUNGE", b"* 3 EXPUNGE"], lines
    f = imap_fetches(r.ok("FETCH 1:* UID"))
    assert [int(f[k]["UID"]) for k in sorted(f)] == [1, 3, 8]
    lines = r.ok("UID EXPUNGE 100")
    assert lines == []
    r.ok("STORE 1:* -FLAGS.SILENT (\\Deleted)")
    assert r.ok("EXPUNGE") == []
    st = status_line(r.ok("STATUS INBOX (MESSAGES UIDNEXT)"))
    assert st == {"MESSAGES": 3, "UIDNEXT": 9}
    lines, done = r.cmd("UID EXPUNGE")
    assert tagged(done, "BAD"), done


# ---------------------------------------------------------------------------------------
# COPY, MOVE, APPEND


def test_copy_with_copyuid(imap_t, imap):
    user = imap_user(imap_t)
    r = imap(user)
    bodies = [simple(i) for i in range(5)]
    for b in bodies:
        r.append("INBOX", b)
    r.ok('CREATE "dest"')
    r.append("dest", simple(99))  # dest uid 1 is taken
    st = status_line(r.ok('STATUS "dest" (UIDVALIDITY)'))
    r.ok("SELECT INBOX")
    r.ok("STORE 2 +FLAGS.SILENT (\\Flagged $Kw)")
    lines, done = r.cmd('COPY 2:3 "dest"')
    m = re.search(rb"\[COPYUID (\d+) (\S+) (\S+)\]", done)
    assert ok_tag(done) and m, done
    assert int(m.group(1)) == st["UIDVALIDITY"]
    assert m.group(2) == b"2,3" or m.group(2) == b"2:3", done
    assert m.group(3) in (b"2,3", b"2:3"), done
    lines, done = r.cmd('UID COPY 5 "dest"')
    assert b"[COPYUID" in done and done.split(b"]")[0].endswith(b" 5 4"), done
    # the source is unchanged
    assert b"* 5 EXISTS" in r.ok("SELECT INBOX")
    r.ok('SELECT "dest"')
    f = imap_fetches(r.ok("FETCH 2:4 (UID FLAGS BODY.PEEK[])"))
    assert [f[k]["BODY[]"] for k in (2, 3, 4)] == [bodies[1], bodies[2], bodies[4]]
    assert set(f[2]["FLAGS"]) == {"\\Flagged", "$Kw"}  # flags are copied
    lines, done = r.cmd('COPY 1 "nosuch"')
    assert tagged(done, "NO") and b"[TRYCREATE]" in done, done


def test_move(imap_t, imap):
    user = imap_user(imap_t)
    r = imap(user)
    bodies = [simple(i) for i in range(5)]
    for b in bodies:
        r.append("INBOX", b)
    r.ok('CREATE "moved"')
    r.ok("SELECT INBOX")
    lines, done = r.cmd('MOVE 2,4 "moved"')
    assert ok_tag(done), done
    cu = [l for l in lines if l.startswith(b"* OK [COPYUID ")]
    assert len(cu) == 1 and cu[0].split(b"]")[0].split(b" ")[-2:] in (
        [b"2,4", b"1,2"], [b"2,4", b"1:2"]), cu
    assert [l for l in lines if l.endswith(b"EXPUNGE")] == [b"* 2 EXPUNGE", b"* 3 EXPUNGE"]
    f = imap_fetches(r.ok("FETCH 1:* UID"))
    assert [int(f[k]["UID"]) for k in sorted(f)] == [1, 3, 5]
    lines, done = r.cmd('UID MOVE 5 "moved"')
    assert ok_tag(done) and b"* 3 EXPUNGE" in lines, (lines, done)
    assert status_line(r.ok('STATUS "moved" (MESSAGES)')) == {"MESSAGES": 3}
    assert status_line(r.ok("STATUS INBOX (MESSAGES)")) == {"MESSAGES": 2}
    r.ok('EXAMINE "moved"')
    f = imap_fetches(r.ok("FETCH 1:* BODY.PEEK[]"))
    assert [f[k]["BODY[]"] for k in sorted(f)] == [bodies[1], bodies[3], bodies[4]]
    lines, done = r.cmd('MOVE 1 "INBOX"')  # EXAMINE: read-only
    assert tagged(done, "NO"), done
    r.ok('SELECT "moved"')
    lines, done = r.cmd('MOVE 1 "moved"')  # same mailbox
    assert tagged(done, "NO") or tagged(done, "BAD"), done


def test_append_flags_and_appenduid(imap_t, imap):
    user = imap_user(imap_t)
    r = imap(user)
    st = status_line(r.ok("STATUS INBOX (UIDVALIDITY)"))
    msg = simple(1)
    tag = r.tag()
    r.send(f"{tag} APPEND INBOX (\\Seen \\Flagged $Label) {{{len(msg)}}}\r\n".encode())
    assert r.line().startswith(b"+")
    r.send(msg + b"\r\n")
    lines, done = r.read_until_tagged(tag)
    assert ok_tag(done), done
    assert f"[APPENDUID {st['UIDVALIDITY']} 1]".encode() in done, done
    uid, _ = r.append("INBOX", simple(2), flags=[])
    assert uid == 2
    r.ok("SELECT INBOX")
    f = imap_fetches(r.ok("FETCH 1:2 (FLAGS RFC822.SIZE BODY.PEEK[])"))
    assert set(f[1]["FLAGS"]) == {"\\Seen", "\\Flagged", "$Label"}
    assert f[2]["FLAGS"] == []
    assert f[1]["BODY[]"] == msg and int(f[1]["RFC822.SIZE"]) == len(msg)
    # APPEND into the selected mailbox: the new message shows up
    uid, done = r.append("INBOX", simple(3))
    f = imap_fetches(r.ok("FETCH 3 UID"))
    assert f[3]["UID"] == "3"
    _, done = r.append("nosuch", simple(4), expect="NO")
    assert b"[TRYCREATE]" in done
    _, done = r.append("INBOX", b"", expect="NO")


def test_imaplib_append(imap_t):
    user = imap_user(imap_t)
    m = imap_client(imap_t, user, IMAP_PW)
    try:
        msg = simple(5)
        typ, data = m.append("INBOX", "(\\Draft)", None, msg)
        assert typ == "OK" and b"APPENDUID" in data[0]
        m.select("INBOX")
        typ, data = m.fetch("1", "(FLAGS BODY.PEEK[])")
        assert typ == "OK" and data[0][1] == msg and b"\\Draft" in data[0][0]
    finally:
        m.shutdown()


def test_append_internal_date(imap_t, imap):
    user = imap_user(imap_t)
    r = imap(user)
    r.append("INBOX", simple(1), date="05-Mar-2021 10:20:30 +0200")
    r.ok("SELECT INBOX")
    f = imap_fetches(r.ok("FETCH 1 INTERNALDATE"))[1]
    assert f["INTERNALDATE"] == b"05-Mar-2021 08:20:30 +0000"


def test_append_bad_date_refused(imap_t, imap):
    user = imap_user(imap_t)
    r = imap(user)
    _, done = r.append("INBOX", simple(1), date="31-Foo-2021 10:20:30 +0200", expect="BAD")
    assert status_line(r.ok("STATUS INBOX (MESSAGES)")) == {"MESSAGES": 0}


def test_append_literal_plus_pipelined(imap_t, imap):
    """Several APPENDs with non-synchronizing literals in one write: no continuation
    requests, every message stored exactly, UIDs in order."""
    user = imap_user(imap_t)
    r = imap(user)
    bodies = [simple(i, body="x" * (i * 300) + "\r\n") for i in range(1, 6)]
    data = b"".join(b"P%d APPEND INBOX (\\Seen) {%d+}\r\n%s\r\n" % (i, len(b), b)
                    for i, b in enumerate(bodies))
    data += b"P9 NOOP\r\n"
    r.send(data)
    lines, done = r.read_until_tagged("P9")
    assert ok_tag(done)
    assert not any(l.startswith(b"+") for l in lines), lines
    oks = [l for l in lines if re.match(rb"P\d OK \[APPENDUID \d+ \d+\]", l)]
    assert len(oks) == 5, lines
    assert [int(l.split(b"]")[0].split()[-1]) for l in oks] == [1, 2, 3, 4, 5]
    r.ok("EXAMINE INBOX")
    f = imap_fetches(r.ok("FETCH 1:* (FLAGS BODY.PEEK[])"))
    assert [f[k]["BODY[]"] for k in sorted(f)] == bodies
    assert all(f[k]["FLAGS"] == ["\\Seen"] for k in f)
    # a literal with 8-bit and NUL-free binary-ish content
    odd = b"Subject: odd\r\n\r\n" + bytes(range(1, 256)).replace(b"\r", b"").replace(b"\n", b"") + b"\r\n"
    uid, _ = r.append("INBOX", odd)
    f = imap_fetches(r.ok(f"UID FETCH {uid} BODY.PEEK[]"))
    assert list(f.values())[0]["BODY[]"] == odd


# ---------------------------------------------------------------------------------------
# responses that name many messages

MANY = 600


def read_through(r, marker, timeout=10):
    """Raw bytes from the server up to and including the line holding MARKER (bytes):
    robust against a response line that lost its CRLF."""
    deadline = time.monotonic() + timeout
    while marker not in r.buf:
        assert time.monotonic() < deadline, f"no {marker!r}; got ...{r.buf[-300:]!r}"
        r._fill()
    end = r.buf.index(marker)
    end = r.buf.index(b"\r\n", end) + 2
    out, r.buf = r.buf[:end], r.buf[end:]
    return out


@pytest.fixture(scope="module")
def many(imap_t):
    """A user with MANY small messages in INBOX."""
    user = imap_user(imap_t)
    r = RawIMAP(imap_t.imap_ports["imap"]).login(user, IMAP_PW)
    m = simple(0)
    r.send(b"".join(b"A%d APPEND INBOX {%d+}\r\n%s\r\n" % (i, len(m), m) for i in range(MANY))
           + b"A-END NOOP\r\n")
    lines, done = r.read_until_tagged("A-END")
    assert sum(1 for l in lines if re.match(rb"A\d+ OK", l)) == MANY
    r.close()
    return user


def copyuid_sets(line):
    m = re.search(rb"\[COPYUID (\d+) ([0-9:,]+) ([0-9:,]+)\]", line)
    assert m, line[:200] + b"..." + line[-200:]
    return (imap_seqset_members(m.group(2).decode()),
            imap_seqset_members(m.group(3).decode()))


def test_copy_many_messages_copyuid(many, imap):
    r = imap(many)
    r.ok('CREATE "copies"')
    r.ok("SELECT INBOX")
    r.send(b'C1 COPY 1:* "copies"\r\nC2 NOOP\r\n')
    out = read_through(r, b"C2 OK")
    lines = out.split(b"\r\n")
    assert lines[0].startswith(b"C1 OK") and lines[1].startswith(b"C2 OK"), out[-300:]
    src, dst = copyuid_sets(lines[0])
    assert src == list(range(1, MANY + 1)) and dst == list(range(1, MANY + 1))


def test_move_many_messages_copyuid(many, imap):
    r = imap(many)
    r.ok('CREATE "src-many"')
    r.ok('CREATE "moved-many"')
    r.ok("SELECT INBOX")
    r.send(b'C1 COPY 1:* "src-many"\r\nC2 NOOP\r\n')
    read_through(r, b"C2 OK")
    r.ok('SELECT "src-many"')
    r.send(b'M1 MOVE 1:* "moved-many"\r\nM2 NOOP\r\n')
    out = read_through(r, b"M2 OK")
    lines = out.split(b"\r\n")
    cu = [l for l in lines if l.startswith(b"* OK [COPYUID")]
    assert len(cu) == 1, lines[:3]
    src, dst = copyuid_sets(cu[0])
    assert len(src) == len(dst) == MANY


def test_store_unchangedsince_many_modified(many, imap):
    r = imap(many)
    r.ok("SELECT INBOX")
    r.ok("STORE 1:* +FLAGS.SILENT ($Touched)")
    r.send(b"S1 STORE 1:* (UNCHANGEDSINCE 1) +FLAGS.SILENT (\\Flagged)\r\nS2 NOOP\r\n")
    out = read_through(r, b"S2 OK")
    lines = [l for l in out.split(b"\r\n") if not l.startswith(b"* ")]
    assert lines[0].startswith(b"S1 OK") and lines[1].startswith(b"S2 OK"), out[-300:]
    m = re.search(rb"\[MODIFIED ([0-9:,]+)\]", lines[0])
    assert m and imap_seqset_members(m.group(1).decode()) == list(range(1, MANY + 1))


def test_many_messages_expunge_and_fetch(many, imap):
    r = imap(many)
    r.ok('CREATE "bulk-copy"')
    r.ok("SELECT INBOX")
    r.send(b'C1 COPY 1:* "bulk-copy"\r\nC2 NOOP\r\n')
    read_through(r, b"C2 OK")
    r.ok('SELECT "bulk-copy"')
    f = imap_fetches(r.ok("FETCH 1:* (UID BODY.PEEK[])"))
    assert len(f) == MANY and all(v["BODY[]"] == simple(0) for v in f.values())
    r.ok("STORE 1:* +FLAGS.SILENT (\\Deleted)")
    lines = r.ok("EXPUNGE")
    assert lines == [b"* 1 EXPUNGE"] * MANY
    assert status_line(r.ok('STATUS "bulk-copy" (MESSAGES)')) == {"MESSAGES": 0}


def test_pipelined_commands_answered_in_order(imap_t, imap):
    """Commands that wait for a commit (LOGIN, APPEND, STORE, FETCH setting \\Seen) hold
    the ones pipelined behind them: everything is answered, in order, with the effects of
    the earlier commands visible to the later ones."""
    user = imap_user(imap_t)
    r = imap()
    m = simple(1)
    r.send(f'P1 LOGIN "{user}" "{IMAP_PW}"\r\n'.encode() +
           b"P2 APPEND INBOX {%d+}\r\n%s\r\n" % (len(m), m) +
           b"P3 SELECT INBOX\r\n"
           b"P4 FETCH 1 BODY[]\r\n"
           b"P5 FETCH 1 FLAGS\r\n"
           b"P6 STORE 1 +FLAGS (\\Flagged)\r\n"
           b"P7 FETCH 1 FLAGS\r\n"
           b'P8 COPY 1 "Trash"\r\n'
           b'P9 STATUS "Trash" (MESSAGES)\r\n'
           b"P10 LOGOUT\r\n")
    got = {}
    order = []
    for i in range(1, 11):
        lines, done = r.read_until_tagged(f"P{i}")
        assert ok_tag(done), (i, lines, done)
        order.append(i)
        got[i] = lines
    assert order == list(range(1, 11))
    assert imap_fetches(got[4])[1]["BODY[]"] == m
    assert imap_fetches(got[5])[1]["FLAGS"] == ["\\Seen"]
    assert set(imap_fetches(got[7])[1]["FLAGS"]) == {"\\Seen", "\\Flagged"}
    assert status_line(got[9]) == {"MESSAGES": 1}
