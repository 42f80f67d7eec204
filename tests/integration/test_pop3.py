# tests/integration/test_pop3.py
# The POP3 server end to end against one ternd for the module (SMTP, IMAP and POP3
# listeners): greeting and CAPA, USER/PASS, AUTH PLAIN (with and without an initial
# response, cancelled, listed), STAT, LIST, UIDL, RETR, TOP, DELE, NOOP, RSET, QUIT; STLS
# (and what was pipelined after it) and the implicit-TLS port; the maildrop as a snapshot
# of INBOX at login (a second session is not [IN-USE], a message delivered meanwhile is not
# seen, one deleted meanwhile answers -ERR); deletions committed only by QUIT in the
# TRANSACTION state (never by RSET or a dropped connection); UIDL equal to what IMAP shows;
# RETR/TOP dot-stuffed and CRLF byte for byte; hostile input (wrong state, bad arguments,
# over-long lines, NUL bytes, too many errors, failed logins); and fetchmail as a real
# client. kill -9 around QUIT is in test_pop3_durability.py.
import base64
import os
import re
import shutil
import socket
import struct
import subprocess
import time

import pytest

from conftest import (
    Cluster,
    RawIMAP,
    RawPOP3,
    imap_client,
    imap_user,
    message_body,
    messages,
    need_binaries,
    pop3_client,
    pop3_node,
    smtp_deliver,
    split_trace,
)

DOMAIN = "pop3.test"
PW = "pop3-secret"
FAIL_DELAY = 1.0  # POP3_FAIL_DELAY_MS in proxy/pop3/pop3.c


@pytest.fixture(scope="module")
def t():
    need_binaries()
    c = Cluster()
    node = pop3_node(c).start()
    node.ctl("domain", "add", DOMAIN).ok()
    yield node
    c.close(keep=os.environ.get("TERN_KEEP_TMP"))


@pytest.fixture
def raw(t):
    """Factory of RawPOP3 connections to t, closed at teardown: raw(user) is logged in
    with USER/PASS, raw() is not; tls=True uses the POP3S listener."""
    opened = []

    def open_(user=None, tls=False, password=PW, **kw):
        r = RawPOP3(t.pop3_ports["pop3s" if tls else "pop3"], tls=tls, **kw)
        opened.append(r)
        if user is not None:
            r.login(user, password)
        return r

    yield open_
    for r in opened:
        r.close()


@pytest.fixture
def pop(t):
    """Factory of poplib clients to t, logged in when given a user; closed at teardown."""
    opened = []

    def open_(user=None, tls=False, password=PW):
        p = pop3_client(t, user, password, tls=tls)
        opened.append(p)
        return p

    yield open_
    for p in opened:
        try:
            p.close()
        except Exception:
            pass


def new_user(t, password=PW):
    return imap_user(t, prefix="p", domain=DOMAIN, password=password)


def simple(n, body=None):
    body = body if body is not None else f"body of message {n}\r\nsecond line\r\n"
    return (f"From: Sender <sender@far.example>\r\nTo: rcpt@{DOMAIN}\r\n"
            f"Subject: message {n}\r\nMessage-ID: <p{n}@far.example>\r\n\r\n{body}").encode()


def user_with(t, n, password=PW):
    """A new user with N messages delivered through SMTP; (address, [stored octets])."""
    user = new_user(t, password)
    for i in range(1, n + 1):
        smtp_deliver(t, user, simple(i))
    return user, stored(t, user)


def stored(t, user):
    """The stored octets of every INBOX message, in UID order."""
    recs = sorted(messages(t, user), key=lambda r: int(r["uid"]))
    return [message_body(t, user, r["uid"]) for r in recs]


def uids(t, user):
    return sorted(int(r["uid"]) for r in messages(t, user))


def unstuff(lines):
    """The message a multi-line response (lines as sent) carries, with CRLF line ends."""
    return b"".join((l[1:] if l.startswith(b".") else l) + b"\r\n" for l in lines)


def plain(user, password, authzid=""):
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


def imap_uids(t, user):
    """(UIDVALIDITY, [UIDs]) of INBOX as imaplib sees them."""
    m = imap_client(t, user, PW)
    try:
        typ, _ = m.select("INBOX", readonly=True)
        assert typ == "OK"
        uidvalidity = int(m.response("UIDVALIDITY")[1][0])
        typ, data = m.uid("FETCH", "1:*", "(UID)")
        assert typ == "OK"
        got = []
        for d in data:
            if d is None:
                continue
            mm = re.search(rb"UID (\d+)", d if isinstance(d, bytes) else d[0])
            if mm:
                got.append(int(mm.group(1)))
        return uidvalidity, sorted(got)
    finally:
        m.logout()


# ---------------------------------------------------------------------------------------
# greeting, CAPA, login


def test_greeting_and_capa_before_login(raw):
    r = raw()
    assert r.greeting.startswith(b"+OK")
    first, caps = r.multi("CAPA")
    assert set(caps) >= {b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING",
                         b"USER", b"SASL PLAIN", b"STLS"}, caps
    assert any(c.startswith(b"IMPLEMENTATION") for c in caps)
    r.ok("QUIT")
    assert r.closed(2)


def test_capa_after_login_lists_no_auth(t, raw):
    user, _ = user_with(t, 0)
    r = raw(user)
    _, caps = r.multi("CAPA")
    assert b"TOP" in caps and b"UIDL" in caps
    for c in (b"USER", b"SASL PLAIN", b"STLS"):
        assert c not in caps, caps


def test_user_pass_and_every_transaction_command(t, pop):
    user, bodies = user_with(t, 3)
    p = pop()
    assert p.getwelcome().startswith(b"+OK")
    assert p.user(user).startswith(b"+OK")
    resp = p.pass_(PW)
    assert resp.startswith(b"+OK"), resp
    total = sum(len(b) for b in bodies)
    assert f"3 messages ({total} octets)".encode() in resp
    assert p.stat() == (3, total)
    resp, listing, _ = p.list()
    assert resp.startswith(b"+OK")
    assert listing == [f"{i} {len(b)}".encode() for i, b in enumerate(bodies, 1)]
    for i, b in enumerate(bodies, 1):
        assert p.list(i) == f"+OK {i} {len(b)}".encode()
    resp, ulist, _ = p.uidl()
    assert [l.split()[0] for l in ulist] == [b"1", b"2", b"3"]
    for i, l in enumerate(ulist, 1):
        assert p.uidl(i) == b"+OK " + l
    for i, b in enumerate(bodies, 1):
        resp, lines, _ = p.retr(i)
        assert resp.startswith(b"+OK")
        assert b"\r\n".join(lines) + b"\r\n" == b
    resp, lines, _ = p.top(2, 0)
    assert b"\r\n".join(lines) + b"\r\n" == bodies[1].split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert p.noop().startswith(b"+OK")
    assert p.rset().startswith(b"+OK")
    assert p.quit().startswith(b"+OK")
    assert len(stored(t, user)) == 3  # RETR deletes nothing


def test_commands_are_case_insensitive(t, raw):
    user, bodies = user_with(t, 1)
    r = raw()
    r.ok(f"user {user}")
    r.ok(f"pAsS {PW}")
    assert r.ok("stat") == f"+OK 1 {len(bodies[0])}".encode()
    first, lines = r.multi("Retr 1")
    assert unstuff(lines) == bodies[0]
    r.ok("quit")


def test_empty_maildrop(t, raw):
    user, _ = user_with(t, 0)
    r = raw()
    r.ok(f"USER {user}")
    assert re.match(rb"\+OK .*\b0 messages \(0 octets\)", r.ok(f"PASS {PW}"))
    assert r.ok("STAT") == b"+OK 0 0"
    assert r.multi("LIST")[1] == []
    assert r.multi("UIDL")[1] == []
    r.err("RETR 1")
    r.err("LIST 1")
    r.ok("RSET")
    assert r.ok("QUIT").startswith(b"+OK")
    assert r.closed(2)


def test_password_with_spaces(t, raw):
    pw = "correct horse  battery staple"
    user = new_user(t, password=pw)
    r = raw()
    r.ok(f"USER {user}")
    r.ok(f"PASS {pw}")  # PASS takes the rest of the line whole (RFC 1939 7)
    assert r.ok("STAT") == b"+OK 0 0"


def test_maildrop_is_inbox_only(t, raw):
    user, bodies = user_with(t, 1)
    with RawIMAP(t.imap_ports["imap"]) as m:
        m.login(user, PW)
        m.ok('CREATE "Other"')
        m.append("Other", simple(99))
        m.append("Sent", simple(98))
    r = raw(user)
    assert r.ok("STAT") == f"+OK 1 {len(bodies[0])}".encode()
    assert unstuff(r.multi("RETR 1")[1]) == bodies[0]


# ---------------------------------------------------------------------------------------
# AUTH


def test_auth_lists_mechanisms(raw):
    r = raw()
    first, mechs = r.multi("AUTH")
    assert mechs == [b"PLAIN"]
    r.ok("CAPA")  # the session goes on
    r.body()


def test_auth_plain_initial_response(t, raw):
    user, bodies = user_with(t, 2)
    r = raw()
    r.ok(f"AUTH PLAIN {plain(user, PW)}")
    assert r.ok("STAT") == f"+OK 2 {sum(map(len, bodies))}".encode()
    r.ok("QUIT")


def test_auth_plain_authzid_equal_to_authcid(t, raw):
    user, _ = user_with(t, 0)
    r = raw()
    r.ok(f"AUTH PLAIN {plain(user, PW, authzid=user)}")
    r.ok("STAT")


def test_auth_plain_continuation(t, raw):
    user, bodies = user_with(t, 1)
    r = raw()
    assert r.cmd("AUTH PLAIN") == b"+ "
    r.ok(plain(user, PW))
    assert r.ok("STAT") == f"+OK 1 {len(bodies[0])}".encode()


def test_auth_plain_lowercase_mechanism(t, raw):
    user, _ = user_with(t, 0)
    r = raw()
    r.ok(f"auth plain {plain(user, PW)}")
    r.ok("STAT")


def test_auth_cancelled(t, raw):
    user, _ = user_with(t, 0)
    r = raw()
    assert r.cmd("AUTH PLAIN") == b"+ "
    r.err("*")
    r.err("STAT")  # still not logged in
    r.ok(f"AUTH PLAIN {plain(user, PW)}")  # and can still log in
    r.ok("STAT")


def test_auth_unsupported_and_malformed(t, raw):
    user, _ = user_with(t, 0)
    r = raw()
    r.err("AUTH CRAM-MD5")
    r.err("AUTH LOGIN")
    r.err("AUTH PLAIN !!!notbase64")
    r.err("AUTH PLAIN =")  # an empty initial response is not a PLAIN message
    r.err("AUTH PLAIN " + base64.b64encode(b"no-nuls-here").decode())
    r.err(f"AUTH PLAIN {plain(user, PW, authzid='someone.else@' + DOMAIN)}")
    assert r.cmd("AUTH PLAIN") == b"+ "
    r.err("%%%")
    r.err("STAT")
    r.ok(f"AUTH PLAIN {plain(user, PW)}")  # none of that counted as a failed login


# ---------------------------------------------------------------------------------------
# failed logins


def test_failed_logins_are_slow_and_the_third_closes(t, raw):
    user, _ = user_with(t, 0)
    r = raw()
    times = []
    for attempt in range(3):
        start = time.monotonic()
        if attempt == 0:
            r.ok(f"USER {user}")
            got = r.cmd("PASS wrong-password")
        elif attempt == 1:
            r.ok(f"USER nobody@{DOMAIN}")  # an unknown user looks the same
            got = r.cmd(f"PASS {PW}")
        else:
            got = r.cmd(f"AUTH PLAIN {plain(user, 'wrong-again')}")
        times.append(time.monotonic() - start)
        assert got.startswith(b"-ERR [AUTH]"), (attempt, got)
    assert min(times) >= FAIL_DELAY * 0.85, times
    assert r.closed(3), "the third failed login did not end the session"


def test_pipelined_failed_login_then_login(t, raw):
    """Commands pipelined behind a failing PASS wait for its (late) answer, in order."""
    user, _ = user_with(t, 2)
    r = raw()
    r.send(f"USER {user}\r\nPASS bad\r\nSTAT\r\nUSER {user}\r\nPASS {PW}\r\nSTAT\r\n"
           .encode())
    start = time.monotonic()
    assert r.line().startswith(b"+OK")
    assert r.line().startswith(b"-ERR [AUTH]")
    failed = time.monotonic()
    assert failed - start >= FAIL_DELAY * 0.85
    assert r.line().startswith(b"-ERR")  # STAT: not logged in yet
    assert r.line().startswith(b"+OK")
    assert r.line().startswith(b"+OK Logged in")  # one failure does not lock anything
    assert time.monotonic() - failed < FAIL_DELAY * 0.8, "a good login was delayed"
    assert r.line().startswith(b"+OK 2 ")


def test_close_during_pending_login(t, raw):
    user, _ = user_with(t, 1)
    for pw in ("bad", PW):
        r = raw()
        r.send(f"USER {user}\r\nPASS {pw}\r\nDELE 1\r\nQUIT\r\n".encode()[:-3])
        _abort(r.s)
    time.sleep(FAIL_DELAY + 0.2)  # the failed one's delayed answer finds no connection
    r = raw(user)
    assert r.ok("STAT").startswith(b"+OK 1 ")


# ---------------------------------------------------------------------------------------
# wrong state, bad arguments, hostile lines


def test_commands_before_login(raw):
    r = raw()
    for cmd in ("STAT", "LIST", "LIST 1", "UIDL", "RETR 1", "TOP 1 0", "DELE 1", "NOOP",
                "RSET", "XYZZY"):
        r.err(cmd)
    assert r.err("PASS secret").startswith(b"-ERR")  # PASS without USER
    r.ok("CAPA")
    r.body()
    r.ok("QUIT")
    assert r.closed(2)


def test_pass_needs_a_preceding_user_and_an_argument(t, raw):
    user, _ = user_with(t, 0)
    r = raw()
    r.err("PASS")
    r.err("USER")  # no name
    r.ok(f"USER {user}")
    r.err("PASS")  # no password: a syntax error, not a failed login
    r.ok(f"PASS {PW}")
    r.ok("STAT")


def test_authorization_commands_after_login(t, raw):
    user, _ = user_with(t, 1)
    r = raw(user)
    r.err(f"USER {user}")
    r.err(f"PASS {PW}")
    r.err(f"AUTH PLAIN {plain(user, PW)}")
    r.err("AUTH")
    r.err("STLS")
    assert r.ok("STAT").startswith(b"+OK 1 ")  # still logged in, same maildrop


@pytest.fixture(scope="module")
def three(t):
    """A user with three messages that no test changes."""
    return user_with(t, 3)


@pytest.mark.parametrize("cmd", [
    "RETR", "RETR abc", "RETR -1", "RETR +1", "RETR 0", "RETR 1x", "RETR 4", "RETR 4294967297",
    "RETR 99999999999999999999999", "RETR 0x1",
    "TOP 1", "TOP 1 x", "TOP 1 -1", "TOP x 1", "TOP 0 1", "TOP 4 1", "TOP 1 1x",
    "DELE", "DELE 0", "DELE 4", "DELE abc",
    "LIST 0", "LIST 4", "LIST x", "LIST -2",
    "UIDL 0", "UIDL 4", "UIDL x",
])
def test_bad_message_arguments(three, raw, cmd):
    user, bodies = three
    r = raw(user)
    r.err(cmd)
    # the session goes on, and nothing was marked
    assert r.ok("STAT") == f"+OK 3 {sum(map(len, bodies))}".encode()
    assert len(r.multi("LIST")[1]) == 3
    r.ok("QUIT")


def test_unknown_command_after_login(t, raw):
    user, _ = user_with(t, 0)
    r = raw(user)
    r.err("XYZZY")
    r.err("APOP user 0123456789abcdef0123456789abcdef")
    r.err("1234")
    r.ok("NOOP")


def test_over_long_lines(t, raw):
    user, bodies = user_with(t, 1)
    r = raw(user)
    assert r.err("NOOP " + "x" * 300).startswith(b"-ERR")
    r.ok("NOOP")
    # 100 kB without a line end, then the end: one -ERR for all of it
    r.send(b"RETR " + b"9" * 100_000)
    time.sleep(0.1)
    r.send(b"9" * 1000 + b"\r\n")
    assert r.line().startswith(b"-ERR")
    assert r.ok("STAT") == f"+OK 1 {len(bodies[0])}".encode()
    assert r.quiet(0.3), f"more than one answer to one long line: {r.buf!r}"
    # 255 octets with the CRLF is a line; 256 is not
    r.ok("NOOP " + "y" * (255 - 2 - 5))
    r.err("NOOP " + "y" * (256 - 2 - 5))
    r.ok("NOOP")


def test_over_long_line_before_login(t, raw):
    user, _ = user_with(t, 0)
    r = raw()
    r.err("USER " + "u" * 5000)
    r.ok(f"USER {user}")
    r.ok(f"PASS {PW}")


def test_over_long_sasl_response(t, raw):
    user, _ = user_with(t, 0)
    r = raw()
    assert r.cmd("AUTH PLAIN") == b"+ "
    r.err("A" * 4000)
    r.err("STAT")  # not logged in, not waiting for a SASL response any more
    r.ok(f"AUTH PLAIN {plain(user, PW)}")


def test_nul_bytes(t, raw):
    user, _ = user_with(t, 1)
    r = raw()
    r.err(b"US\0ER " + user.encode())
    r.err(b"USER " + user.encode() + b"\0")
    r.ok(f"USER {user}")
    r.err(b"PASS " + PW.encode() + b"\0junk")
    r.ok(f"USER {user}")
    r.ok(f"PASS {PW}")
    r.err(b"STAT\0")
    r.err(b"\0")
    r.err(b"RETR 1\0")
    assert r.ok("STAT").startswith(b"+OK 1 ")


def test_control_characters_and_empty_lines(t, raw):
    user, _ = user_with(t, 0)
    r = raw(user)
    r.err(b"")
    r.err(b"NO\x01OP")
    r.err(b"NOOP\x7f")
    r.err(b" NOOP")
    r.ok(b"NOOP")
    r.send(b"NOOP\n")  # a bare LF ends a command line too
    assert r.line().startswith(b"+OK")


def test_too_many_errors_close(raw):
    r = raw()
    r.send(b"XYZZY\r\n" * 19)
    for _ in range(19):
        assert r.line().startswith(b"-ERR")
    assert r.quiet(0.2)
    r.send(b"XYZZY\r\n")
    assert r.line().startswith(b"-ERR")
    assert r.closed(3), "20 errors did not end the session"


def test_pipelining(t, raw):
    user, bodies = user_with(t, 2)
    r = raw()
    r.send((f"CAPA\r\nUSER {user}\r\nPASS {PW}\r\nSTAT\r\nLIST\r\nRETR 2\r\nDELE 1\r\n"
            "UIDL 2\r\nRSET\r\nNOOP\r\nQUIT\r\n").encode())
    assert r.line().startswith(b"+OK")
    caps = r.body()
    assert b"PIPELINING" in caps
    assert r.line().startswith(b"+OK")  # USER
    assert r.line().startswith(b"+OK Logged in")
    assert r.line() == f"+OK 2 {sum(map(len, bodies))}".encode()
    assert r.line() == b"+OK"
    assert r.body() == [f"{i} {len(b)}".encode() for i, b in enumerate(bodies, 1)]
    assert r.line().startswith(b"+OK")
    assert unstuff(r.body()) == bodies[1]
    assert r.line().startswith(b"+OK")  # DELE
    assert r.line().startswith(b"+OK 2 ")  # UIDL 2
    assert r.line() == b"+OK"  # RSET
    assert r.line() == b"+OK"  # NOOP
    assert r.line().startswith(b"+OK")  # QUIT
    assert r.closed(2)
    assert len(stored(t, user)) == 2  # RSET undid the DELE


# ---------------------------------------------------------------------------------------
# RETR and TOP: dot-stuffing, CRLF


DOTTY = (b"From: dots@far.example\r\nTo: rcpt@pop3.test\r\nSubject: dots\r\n\r\n"
         b".\r\n..\r\n...\r\n.leading dot\r\n..two leading dots\r\n"
         b"middle . dot\r\n .space then dot\r\n\r\n.\r\nend.\r\n.")


def test_retr_dot_stuffing_exact(t, pop, raw):
    user = new_user(t)
    msg = DOTTY + b"\r\n"
    smtp_deliver(t, user, msg)
    (body,) = stored(t, user)
    assert split_trace(body)[1] == msg
    p = pop(user)
    resp, lines, _ = p.retr(1)
    assert resp.startswith(b"+OK")
    assert b"\r\n".join(lines) + b"\r\n" == body
    assert p.list(1) == f"+OK 1 {len(body)}".encode()
    p.quit()
    # on the wire: every line that starts with '.' got one more
    r = raw(user)
    first, sent = r.multi("RETR 1")
    expect = [(b"." + l if l.startswith(b".") else l) for l in body.split(b"\r\n")[:-1]]
    assert sent == expect


def test_top(t, raw, pop):
    user = new_user(t)
    msg = DOTTY + b"\r\n"
    smtp_deliver(t, user, msg)
    (body,) = stored(t, user)
    head, _, rest = body.partition(b"\r\n\r\n")
    body_lines = rest.split(b"\r\n")[:-1]
    p = pop(user)
    for n in (0, 1, 2, 3, 5, len(body_lines) - 1, len(body_lines), len(body_lines) + 10, 10**9):
        resp, lines, _ = p.top(1, n)
        assert resp.startswith(b"+OK"), (n, resp)
        want = head + b"\r\n\r\n" + b"".join(l + b"\r\n" for l in body_lines[:n])
        assert b"\r\n".join(lines) + b"\r\n" == want, n
    p.quit()
    r = raw(user)
    _, sent = r.multi("TOP 1 3")
    assert sent[-3:] == [b"..", b"...", b"...."]  # '.', '..', '...' stuffed


def test_top_of_message_without_body(t, raw):
    user = new_user(t)
    with RawIMAP(t.imap_ports["imap"]) as m:
        m.login(user, PW)
        m.append("INBOX", b"Subject: header only\r\nX-A: b\r\n")
    r = raw(user)
    assert unstuff(r.multi("TOP 1 0")[1]) == b"Subject: header only\r\nX-A: b\r\n"
    assert unstuff(r.multi("TOP 1 5")[1]) == b"Subject: header only\r\nX-A: b\r\n"
    assert unstuff(r.multi("RETR 1")[1]) == b"Subject: header only\r\nX-A: b\r\n"


BARE_LF = (b"Subject: bare LF\nX-Other: h\n\nline one\n.dot line\n\n..\nlast line\n")


def test_bare_lf_comes_back_as_crlf(t, raw, pop):
    user = new_user(t)
    with RawIMAP(t.imap_ports["imap"]) as m:
        m.login(user, PW)
        m.append("INBOX", BARE_LF)
    # APPEND stores RFC 5322 line ends: bare LFs become CRLF once, at APPEND
    assert stored(t, user) == [BARE_LF.replace(b"\n", b"\r\n")]
    r = raw(user)
    first, sent = r.multi("RETR 1")
    assert all(b"\n" not in l and b"\r" not in l for l in sent), sent
    assert unstuff(sent) == BARE_LF.replace(b"\n", b"\r\n")
    assert sent[4] == b"..dot line" and sent[6] == b"..."
    _, top = r.multi("TOP 1 2")
    assert all(b"\n" not in l and b"\r" not in l for l in top), top
    assert unstuff(top) == b"Subject: bare LF\r\nX-Other: h\r\n\r\nline one\r\n.dot line\r\n"
    _, top0 = r.multi("TOP 1 0")
    assert unstuff(top0) == b"Subject: bare LF\r\nX-Other: h\r\n\r\n"
    p = pop(user)
    assert b"\r\n".join(p.retr(1)[1]) + b"\r\n" == BARE_LF.replace(b"\n", b"\r\n")


def test_bare_lf_message_size_counts_crlf(t, raw):
    user = new_user(t)
    with RawIMAP(t.imap_ports["imap"]) as m:
        m.login(user, PW)
        m.append("INBOX", BARE_LF)
    size = len(BARE_LF.replace(b"\n", b"\r\n"))
    r = raw(user)
    assert r.ok("LIST 1") == f"+OK 1 {size}".encode()


def test_message_without_final_line_end(t, raw):
    user = new_user(t)
    with RawIMAP(t.imap_ports["imap"]) as m:
        m.login(user, PW)
        m.append("INBOX", b"Subject: x\r\n\r\nno final newline\r\n.")
    r = raw(user)
    _, sent = r.multi("RETR 1")
    assert sent == [b"Subject: x", b"", b"no final newline", b".."]


def test_large_message(t, pop):
    user = new_user(t)
    line = b"." + b"0123456789abcdef" * 4 + b"\r\n"  # every line dot-stuffed
    msg = b"Subject: big\r\n\r\n" + line * (1_500_000 // len(line))
    smtp_deliver(t, user, msg)
    (rec,) = messages(t, user)  # too large for message show
    p = pop(user)
    assert p.stat() == (1, int(rec["size"]))
    resp, lines, _ = p.retr(1)
    got = b"\r\n".join(lines) + b"\r\n"
    assert len(got) == int(rec["size"])
    assert split_trace(got)[1] == msg
    p.quit()


# ---------------------------------------------------------------------------------------
# DELE, RSET, QUIT: only QUIT commits


def test_deleted_message_access(t, raw):
    user, bodies = user_with(t, 3)
    r = raw(user)
    r.ok("DELE 2")
    for cmd in ("RETR 2", "TOP 2 0", "LIST 2", "UIDL 2", "DELE 2"):
        r.err(cmd)
    assert r.ok("STAT") == f"+OK 2 {len(bodies[0]) + len(bodies[2])}".encode()
    assert r.multi("LIST")[1] == [f"1 {len(bodies[0])}".encode(), f"3 {len(bodies[2])}".encode()]
    assert [l.split()[0] for l in r.multi("UIDL")[1]] == [b"1", b"3"]
    assert unstuff(r.multi("RETR 3")[1]) == bodies[2]  # numbers did not move


def test_deletions_committed_only_at_quit(t, raw):
    user, bodies = user_with(t, 3)
    before = uids(t, user)
    a = raw(user)
    a.ok("DELE 1")
    a.ok("DELE 3")
    assert uids(t, user) == before  # marked only
    b = raw(user)  # a second session meanwhile sees everything
    assert b.ok("STAT") == f"+OK 3 {sum(map(len, bodies))}".encode()
    assert a.ok("QUIT") == b"+OK Bye, 2 messages deleted"
    assert a.closed(2)
    assert uids(t, user) == [before[1]]  # durable when +OK came
    c = raw(user)
    assert c.ok("STAT") == f"+OK 1 {len(bodies[1])}".encode()
    assert unstuff(c.multi("RETR 1")[1]) == bodies[1]
    # b's snapshot still numbers 3 messages, and 1 and 3 are gone now
    assert b.ok("STAT").startswith(b"+OK 3 ")
    b.err("RETR 1")
    b.err("TOP 3 0")
    assert unstuff(b.multi("RETR 2")[1]) == bodies[1]


def test_deletion_by_other_session_then_own_dele(t, raw):
    user, bodies = user_with(t, 3)
    a = raw(user)
    b = raw(user)
    b.ok("DELE 1")
    b.ok("QUIT")
    assert b.closed(2)
    a.err("RETR 1")  # deleted by b meanwhile
    a.ok("DELE 1")  # marking a message gone meanwhile is harmless
    a.ok("DELE 2")
    got = a.ok("QUIT")
    assert got.startswith(b"+OK"), got
    assert len(stored(t, user)) == 1
    assert stored(t, user)[0] == bodies[2]


def test_rset_unmarks(t, raw):
    user, bodies = user_with(t, 3)
    r = raw(user)
    r.ok("DELE 1")
    r.ok("DELE 2")
    r.ok("RSET")
    assert r.ok("STAT") == f"+OK 3 {sum(map(len, bodies))}".encode()
    assert unstuff(r.multi("RETR 1")[1]) == bodies[0]
    assert r.ok("QUIT") == b"+OK Bye"
    assert r.closed(2)
    assert len(stored(t, user)) == 3


def test_dele_rset_dele_quit(t, raw):
    user, bodies = user_with(t, 3)
    r = raw(user)
    r.ok("DELE 1")
    r.ok("RSET")
    r.ok("DELE 3")
    assert r.ok("QUIT") == b"+OK Bye, 1 messages deleted"
    assert stored(t, user) == bodies[:2]


def _abort(sock):
    """Closes SOCK with a TCP RST (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_dropped_connection_deletes_nothing(t, raw):
    user, bodies = user_with(t, 3)
    a = raw(user)
    for i in (1, 2, 3):
        a.ok(f"DELE {i}")
    a.close()  # FIN without QUIT
    b = raw(user)
    b.ok("DELE 1")
    _abort(b.s)  # RST
    c = raw(user)
    c.ok("DELE 2")
    c.send(b"QUI")  # half a QUIT, then gone
    c.close()
    time.sleep(0.3)
    assert stored(t, user) == bodies
    d = raw(user)
    assert d.ok("STAT") == f"+OK 3 {sum(map(len, bodies))}".encode()


def test_quit_before_login_deletes_nothing(t, raw):
    user, bodies = user_with(t, 1)
    r = raw()
    r.ok(f"USER {user}")
    assert r.ok("QUIT").startswith(b"+OK")
    assert r.closed(2)
    assert stored(t, user) == bodies


def test_commands_after_quit_are_not_run(t, raw):
    user, bodies = user_with(t, 2)
    r = raw(user)
    r.send(b"DELE 1\r\nQUIT\r\nRSET\r\nDELE 2\r\nQUIT\r\n")
    assert r.line().startswith(b"+OK")
    assert r.line() == b"+OK Bye, 1 messages deleted"
    assert r.closed(2)
    assert r.buf == b"", f"answered after QUIT: {r.buf!r}"
    assert stored(t, user) == bodies[1:]


# ---------------------------------------------------------------------------------------
# the maildrop: snapshot at login, several sessions


def test_second_session_is_not_in_use(t, pop):
    user, bodies = user_with(t, 2)
    a = pop(user)
    b = pop(user)  # no [IN-USE]
    total = sum(map(len, bodies))
    assert a.stat() == b.stat() == (2, total)
    assert b"\r\n".join(a.retr(2)[1]) + b"\r\n" == bodies[1]
    assert b"\r\n".join(b.retr(2)[1]) + b"\r\n" == bodies[1]
    a.quit()
    b.quit()


def test_snapshot_hides_later_deliveries(t, raw):
    user, bodies = user_with(t, 2)
    a = raw(user)
    listing = a.multi("LIST")[1]
    uidl = a.multi("UIDL")[1]
    smtp_deliver(t, user, simple(3))
    assert len(stored(t, user)) == 3
    assert a.ok("STAT") == f"+OK 2 {sum(map(len, bodies))}".encode()
    assert a.multi("LIST")[1] == listing
    assert a.multi("UIDL")[1] == uidl
    a.err("RETR 3")
    b = raw(user)
    assert b.ok("STAT").startswith(b"+OK 3 ")
    # a's QUIT with deletions leaves the new message alone
    a.ok("DELE 1")
    a.ok("DELE 2")
    assert a.ok("QUIT") == b"+OK Bye, 2 messages deleted"
    left = stored(t, user)
    assert len(left) == 1 and b"Subject: message 3" in left[0]


def test_imap_expunge_meanwhile(t, raw):
    user, bodies = user_with(t, 2)
    a = raw(user)
    with RawIMAP(t.imap_ports["imap"]) as m:
        m.login(user, PW)
        m.ok("SELECT INBOX")
        m.ok("STORE 1 +FLAGS (\\Deleted)")
        m.ok("EXPUNGE")
    assert a.err("RETR 1")
    assert unstuff(a.multi("RETR 2")[1]) == bodies[1]
    a.ok("QUIT")


def test_many_messages(t, raw):
    user = new_user(t)
    n = 150
    with RawIMAP(t.imap_ports["imap"]) as m:
        m.login(user, PW)
        tag = "A"
        data = b""
        for i in range(1, n + 1):
            msg = simple(i)
            data += f"{tag}{i} APPEND INBOX {{{len(msg)}+}}\r\n".encode() + msg + b"\r\n"
        m.send(data)
        for i in range(1, n + 1):
            _, done = m.read_until_tagged(f"{tag}{i}")
            assert b" OK" in done, done
    r = raw(user)
    listing = r.multi("LIST")[1]
    uidl = r.multi("UIDL")[1]
    assert [l.split()[0] for l in listing] == [str(i).encode() for i in range(1, n + 1)]
    assert len({l.split()[1] for l in uidl}) == n
    for i in range(1, n + 1, 2):
        r.send(f"DELE {i}\r\n".encode())
    for i in range(1, n + 1, 2):
        assert r.line().startswith(b"+OK")
    assert r.ok("STAT").startswith(f"+OK {n // 2} ".encode())
    assert r.ok("QUIT") == f"+OK Bye, {n // 2} messages deleted".encode()
    r2 = raw(user)
    kept = [l.split()[1] for l in uidl][1::2]
    assert [l.split()[1] for l in r2.multi("UIDL")[1]] == kept
    assert b"Subject: message 150" in unstuff(r2.multi(f"RETR {n // 2}")[1])


# ---------------------------------------------------------------------------------------
# UIDL


def test_uidl_matches_imap(t, raw):
    user, _ = user_with(t, 3)
    with RawIMAP(t.imap_ports["imap"]) as m:  # make UIDs that are not 1..n
        m.login(user, PW)
        m.ok("SELECT INBOX")
        m.ok("STORE 2 +FLAGS (\\Deleted)")
        m.ok("EXPUNGE")
        m.append("INBOX", simple(4))
    uidvalidity, imap = imap_uids(t, user)
    assert len(imap) == 3
    want = [f"{uidvalidity:08x}{u:08x}".encode() for u in imap]
    r = raw(user)
    got = r.multi("UIDL")[1]
    assert got == [f"{i} ".encode() + w for i, w in enumerate(want, 1)]
    for i, w in enumerate(want, 1):
        assert r.ok(f"UIDL {i}") == f"+OK {i} ".encode() + w
    for w in want:  # RFC 1939: 1 to 70 characters in 0x21..0x7E
        assert 1 <= len(w) <= 70 and all(0x21 <= c <= 0x7E for c in w)


def test_uidl_stable_across_sessions(t, raw):
    user, bodies = user_with(t, 4)
    r1 = raw(user)
    first = dict(l.split() for l in r1.multi("UIDL")[1])  # number -> uid string
    assert len(set(first.values())) == 4
    r1.ok("QUIT")
    r2 = raw(user)
    assert dict(l.split() for l in r2.multi("UIDL")[1]) == first
    r2.ok("DELE 2")
    r2.ok("QUIT")
    r3 = raw(user)
    third = r3.multi("UIDL")[1]
    # renumbered 1..3, the same unique ids for the same messages
    assert third == [b"1 " + first[b"1"], b"2 " + first[b"3"], b"3 " + first[b"4"]]
    assert unstuff(r3.multi("RETR 2")[1]) == bodies[2]


# ---------------------------------------------------------------------------------------
# TLS


def test_stls_upgrade(t, raw):
    user, bodies = user_with(t, 1)
    r = raw()
    assert b"STLS" in r.multi("CAPA")[1]
    r.stls()
    caps = r.multi("CAPA")[1]
    assert b"STLS" not in caps
    assert b"USER" in caps and b"SASL PLAIN" in caps
    r.err("STLS")  # not twice
    r.login(user, PW)
    assert r.ok("STAT") == f"+OK 1 {len(bodies[0])}".encode()
    assert unstuff(r.multi("RETR 1")[1]) == bodies[0]
    assert r.ok("QUIT").startswith(b"+OK")
    assert r.closed(2)


def test_stls_with_poplib(t):
    user, bodies = user_with(t, 2)
    from conftest import tls_client_context

    p = pop3_client(t)
    try:
        assert "STLS" in p.capa()
        p.stls(context=tls_client_context())
        assert "STLS" not in p.capa()
        p.user(user)
        p.pass_(PW)
        assert p.stat() == (2, sum(map(len, bodies)))
        assert b"\r\n".join(p.retr(1)[1]) + b"\r\n" == bodies[0]
        p.quit()
    finally:
        p.close()


def test_stls_drops_pipelined_plaintext(t, raw):
    user, _ = user_with(t, 1)
    r = raw()
    r.send(f"STLS\r\nUSER {user}\r\nPASS {PW}\r\nDELE 1\r\nQUIT\r\n".encode())
    assert r.line().startswith(b"+OK")
    assert r.buf == b""
    from conftest import tls_client_context

    r.s = tls_client_context().wrap_socket(r.s, server_hostname="localhost")
    r.s.settimeout(r.timeout)
    assert r.quiet(0.5), f"plaintext sent before STLS was run over TLS: {r.buf!r}"
    r.err("STAT")  # not logged in: USER/PASS were dropped
    assert len(stored(t, user)) == 1


def test_stls_resets_user(t, raw):
    user, _ = user_with(t, 0)
    r = raw()
    r.ok(f"USER {user}")
    r.stls()
    r.err(f"PASS {PW}")  # USER from before TLS is forgotten
    r.login(user, PW)


def test_stls_then_garbage_instead_of_a_handshake(t, raw):
    r = raw()
    r.ok("STLS")
    r.send(b"USER someone\r\nPASS x\r\n" + b"\x00" * 64)
    assert r.closed(5), "no TLS handshake, yet the connection stays open"
    assert b"+OK" not in r.buf


def test_implicit_tls_port(t, raw, pop):
    user, bodies = user_with(t, 2)
    r = raw(tls=True)
    assert r.greeting.startswith(b"+OK")
    caps = r.multi("CAPA")[1]
    assert b"STLS" not in caps and b"USER" in caps
    r.err("STLS")
    r.ok(f"AUTH PLAIN {plain(user, PW)}")
    assert r.ok("STAT").startswith(b"+OK 2 ")
    p = pop(user, tls=True)
    assert p.stat() == (2, sum(map(len, bodies)))
    assert b"\r\n".join(p.retr(2)[1]) + b"\r\n" == bodies[1]
    p.dele(1)
    assert p.quit().startswith(b"+OK")
    assert stored(t, user) == bodies[1:]


def test_plaintext_auth_refused_from_remote_peer(cluster):
    """Through a trusted PROXY header the client is 203.0.113.5, not loopback: USER, PASS
    and AUTH need STLS first."""
    node = pop3_node(cluster, sets=["--set", "net.proxy_trusted=127.0.0.1"]).start()
    node.ctl("domain", "add", DOMAIN).ok()
    user = imap_user(node, prefix="r", domain=DOMAIN, password=PW)
    port = node.pop3_ports["pop3"]
    hdr = f"PROXY TCP4 203.0.113.5 127.0.0.1 40000 {port}\r\n".encode()
    with RawPOP3(port, prefix=hdr) as r:
        caps = r.multi("CAPA")[1]
        assert b"STLS" in caps
        assert b"USER" not in caps and b"SASL PLAIN" not in caps
        assert r.err(f"USER {user}").startswith(b"-ERR [AUTH]")
        r.err(f"PASS {PW}")
        r.err(f"AUTH PLAIN {plain(user, PW)}")
        r.err("AUTH")
        r.stls()
        caps = r.multi("CAPA")[1]
        assert b"USER" in caps and b"SASL PLAIN" in caps
        r.login(user, PW)
        assert r.ok("STAT") == b"+OK 0 0"


# ---------------------------------------------------------------------------------------
# a real client: fetchmail

FETCHMAIL = shutil.which("fetchmail")


def run_fetchmail(t, user, home, outdir, keep, server_opts="", proto="POP3", port=None,
                  tls="sslproto ''"):
    """Runs fetchmail once against t with an MDA that stores every message in a file of
    its own under OUTDIR; returns the CompletedProcess."""
    mda = home / "mda.sh"
    if not mda.exists():
        mda.write_text(f'#!/bin/sh\nexec cat > "$(mktemp {outdir}/msg.XXXXXXXX)"\n')
        mda.chmod(0o700)
    rc = home / ".fetchmailrc"
    rc.write_text(
        "set no syslog\nset invisible\n"
        f"poll 127.0.0.1 with proto {proto} port {port or t.pop3_ports['pop3']} timeout 10"
        f" {server_opts}\n"
        f'  user "{user}" there with password "{PW}" is "nobody" here\n'
        f"  options {'keep' if keep else 'nokeep'} {tls} fetchall\n"
        f'  mda "{mda}"\n'
    )
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(home), FETCHMAILHOME=str(home))
    return subprocess.run(
        [FETCHMAIL, "-f", str(rc), "--nodetach", "-v", "--pidfile", str(home / "fm.pid")],
        env=env, capture_output=True, timeout=30, start_new_session=True,
    )


def got_files(outdir):
    return sorted(p.read_bytes() for p in outdir.iterdir())


def lf(b):
    return b.replace(b"\r\n", b"\n")


@pytest.mark.skipif(FETCHMAIL is None, reason="fetchmail not installed")
def test_fetchmail_keep_then_delete(t, tmp_path):
    user = new_user(t)
    msgs = [simple(1), DOTTY + b"\r\n", simple(3, body="x\r\n" * 50)]
    for m in msgs:
        smtp_deliver(t, user, m)
    bodies = stored(t, user)
    home = tmp_path / "home"
    out = tmp_path / "out"
    home.mkdir()
    out.mkdir()
    r = run_fetchmail(t, user, home, out, keep=True)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    got = got_files(out)
    assert len(got) == 3
    # what fetchmail hands the MDA is the message with LF line ends (dot-unstuffed)
    assert sorted(lf(b) for b in bodies) == sorted(lf(g) for g in got)
    assert stored(t, user) == bodies  # kept
    for p in out.iterdir():
        p.unlink()
    r = run_fetchmail(t, user, home, out, keep=False)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    assert sorted(lf(b) for b in bodies) == sorted(lf(g) for g in got_files(out))
    assert stored(t, user) == []  # deleted at fetchmail's QUIT
    r = run_fetchmail(t, user, home, out, keep=False)
    assert r.returncode == 1, r  # 1: no mail


@pytest.mark.skipif(FETCHMAIL is None, reason="fetchmail not installed")
def test_fetchmail_uidl_fetches_only_new(t, tmp_path):
    user = new_user(t)
    smtp_deliver(t, user, simple(1))
    smtp_deliver(t, user, simple(2))
    home = tmp_path / "home"
    out = tmp_path / "out"
    home.mkdir()
    out.mkdir()
    r = run_fetchmail(t, user, home, out, keep=True, server_opts="uidl")
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    assert len(got_files(out)) == 2
    # without fetchall, the UIDs fetchmail kept from the last run decide what is new
    rc = home / ".fetchmailrc"
    rc.write_text(rc.read_text().replace(" fetchall", ""))
    env = dict(os.environ, HOME=str(home), FETCHMAILHOME=str(home))
    argv = [FETCHMAIL, "-f", str(rc), "--nodetach", "-v", "--pidfile", str(home / "fm.pid")]
    r = subprocess.run(argv, env=env, capture_output=True, timeout=30, start_new_session=True)
    assert r.returncode == 1, r.stderr.decode(errors="replace")[-2000:]  # nothing new
    assert b"UIDL" in r.stderr + r.stdout
    assert len(got_files(out)) == 2
    smtp_deliver(t, user, simple(3))
    r = subprocess.run(argv, env=env, capture_output=True, timeout=30, start_new_session=True)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    files = got_files(out)
    assert len(files) == 3
    assert sum(b"Subject: message 3" in f for f in files) == 1
    assert len(stored(t, user)) == 3


@pytest.mark.skipif(FETCHMAIL is None, reason="fetchmail not installed")
def test_fetchmail_over_stls_and_pop3s(t, tmp_path):
    user = new_user(t)
    smtp_deliver(t, user, simple(1))
    smtp_deliver(t, user, simple(2))
    bodies = stored(t, user)
    home = tmp_path / "home"
    out = tmp_path / "out"
    home.mkdir()
    out.mkdir()
    r = run_fetchmail(t, user, home, out, keep=True, tls="sslproto 'TLS1.2+' no sslcertck")
    err = r.stderr.decode(errors="replace") + r.stdout.decode(errors="replace")
    assert r.returncode == 0, err[-2000:]
    assert "STLS" in err, "fetchmail did not upgrade with STLS"
    assert sorted(map(lf, bodies)) == sorted(map(lf, got_files(out)))
    for p in out.iterdir():
        p.unlink()
    r = run_fetchmail(t, user, home, out, keep=False, port=t.pop3_ports["pop3s"],
                      tls="ssl no sslcertck")
    assert r.returncode == 0, (r.stderr + r.stdout).decode(errors="replace")[-2000:]
    assert sorted(map(lf, bodies)) == sorted(map(lf, got_files(out)))
    assert stored(t, user) == []


def test_idle_timeout_deletes_nothing(cluster):
    """pop3.idle_timeout_ms: an idle session is told and closed; its DELE marks are lost."""
    from conftest import pop3_node

    t = pop3_node(cluster, sets=("--set", "pop3.idle_timeout_ms=800")).start()
    t.ctl("domain", "add", "idle.test").ok()
    t.ctl("user", "add", "i@idle.test", password="pw").ok()
    smtp_deliver(t, "i@idle.test", b"Subject: keep\r\n\r\nx\r\n")
    import socket

    s = socket.create_connection(("127.0.0.1", t.pop3_ports["pop3"]), timeout=10)
    f = s.makefile("rb")
    assert f.readline().startswith(b"+OK")
    s.sendall(b"USER i@idle.test\r\nPASS pw\r\nDELE 1\r\n")
    for _ in range(3):
        assert f.readline().startswith(b"+OK")
    last = f.readline()  # the server speaks first: idle for too long
    assert last.startswith(b"-ERR"), last
    assert f.readline() == b""  # then closes
    s.close()
    assert len(messages(t, "i@idle.test")) == 1
