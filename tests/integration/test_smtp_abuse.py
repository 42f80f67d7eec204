# tests/integration/test_smtp_abuse.py
# The SMTP server under hostile input, on real ternd processes: over-long lines, NUL
# bytes, bare LF and the SMTP smuggling sequences inside DATA, oversized messages, too
# many recipients, too many errors, plaintext injected after STARTTLS, idle clients and
# per-address connection limits. After each attack the same connection (where the
# protocol allows) and a new one must still work, and what was stored before must be
# untouched: see healthy(). Limits come from --set on dedicated ternd instances.
import base64
import hashlib
import os
import socket
import time

import pytest

from conftest import (
    Cluster,
    RawSMTP,
    SmtpClosed,
    dot_stuff,
    message_body,
    messages,
    need_binaries,
    smtp_node,
    smtp_setup,
    split_trace,
    tls_client_context,
    wait_until,
)

DOM = "abuse.test"
FAR = "far.example"
USERS = {"victim": "victim-pw", "other": "other-pw", "canary": "canary-pw"}
VICTIM, OTHER, CANARY = (f"{u}@{DOM}" for u in USERS)
MAX_SIZE = 100 * 1024
MAX_RCPTS = 3
MAX_PER_IP = 4
IDLE_MS = 1000


def _node(sets=()):
    need_binaries()
    c = Cluster()
    t = smtp_node(c, sets=sets).start()
    smtp_setup(t, DOM, USERS)
    return c, t


@pytest.fixture(scope="module")
def t():
    """Default limits (smtp.max_errors=10)."""
    c, node = _node()
    seed(node)
    yield node
    c.close(keep=os.environ.get("TERN_KEEP_TMP"))


@pytest.fixture(scope="module")
def lim():
    c, node = _node(["--set", f"smtp.max_message_size={MAX_SIZE}",
                     "--set", f"smtp.max_recipients={MAX_RCPTS}",
                     "--set", f"net.max_per_ip={MAX_PER_IP}"])
    seed(node)
    yield node
    c.close(keep=os.environ.get("TERN_KEEP_TMP"))


@pytest.fixture(scope="module")
def slow():
    c, node = _node(["--set", f"smtp.command_timeout_ms={IDLE_MS}",
                     "--set", f"smtp.data_timeout_ms={IDLE_MS}"])
    seed(node)
    yield node
    c.close(keep=os.environ.get("TERN_KEEP_TMP"))


def mx(t, **kw):
    return RawSMTP(t.smtp_ports["smtp"], **kw)


def seed(t):
    """Stored data that every attack must leave alone."""
    with mx(t) as c:
        c.ehlo()
        for rcpt in (VICTIM, OTHER):
            c.expect(f"MAIL FROM:<seed@{FAR}>", 250)
            c.expect(f"RCPT TO:<{rcpt}>", 250)
            c.expect("DATA", 354)
            c.send(dot_stuff(b"Subject: seed\r\n\r\nprecious\r\n.dot\r\n"))
            assert c.reply()[0] == 250


def snapshot(t):
    """Every stored message of the victims: (user, uid, size, body hash), after checking
    that the first message's octets still match its hash."""
    out = []
    for u in (VICTIM, OTHER):
        recs = messages(t, u)
        first = min(recs, key=lambda r: int(r["uid"]))
        assert hashlib.sha256(message_body(t, u, first["uid"])).hexdigest() == first["body"]
        out += [(u, r["uid"], r["size"], r["body"]) for r in recs]
    return sorted(out)


def healthy(t, before, c=None):
    """The attacked connection C (if still usable) answers; a new connection delivers
    (to the canary); the victims' mail is exactly BEFORE."""
    if c is not None:
        c.expect("NOOP", 250)
        c.expect(f"MAIL FROM:<h@{FAR}>", 250)
        c.expect("RSET", 250)
    n = len(messages(t, CANARY))
    with mx(t) as c2:
        c2.ehlo()
        c2.expect(f"MAIL FROM:<h@{FAR}>", 250)
        c2.expect(f"RCPT TO:<{CANARY}>", 250)
        c2.expect("DATA", 354)
        c2.send(b"Subject: canary\r\n\r\nalive\r\n.\r\n")
        assert c2.reply()[0] == 250
    assert len(messages(t, CANARY)) == n + 1
    assert snapshot(t) == before


def begin_data(c, rcpts=(VICTIM,)):
    c.expect(f"MAIL FROM:<a@{FAR}>", 250)
    for r in rcpts:
        c.expect(f"RCPT TO:<{r}>", 250)
    c.expect("DATA", 354)


# ---- lines ----


def test_megabyte_line_without_crlf(t):
    before = snapshot(t)
    with mx(t, timeout=10) as c:
        c.ehlo()
        c.send(b"A" * (1 << 20))
        code, lines = c.reply()
        assert code == 500 and lines[0].startswith("5.5.2"), (code, lines)
        assert c.quiet(0.3)  # one reply for the whole line, not one per buffer
        c.send(b"B" * 1000 + b"\r\n")  # the end of the long line: skipped silently
        healthy(t, before, c)


def test_long_command_line_with_crlf(t):
    before = snapshot(t)
    with mx(t) as c:
        c.ehlo()
        c.expect(b"NOOP " + b"x" * 3000, 500, "5.5.2")
        c.expect(f"MAIL FROM:<a@{FAR}> ENVID=" + "x" * 3000, 500, "5.5.2")
        healthy(t, before, c)


def test_long_line_in_auth_exchange(t):
    """A SASL response that is too long ends the AUTH exchange: the next line is a
    command again (RFC 4954 4: the server rejects the AUTH command)."""
    with RawSMTP(t.smtp_ports["submission"]) as c:
        c.ehlo()
        c.expect("AUTH PLAIN", 334)
        c.expect("A" * 5000, 500)
        c.expect("NOOP", 250)


def test_nul_bytes_in_commands(t):
    before = snapshot(t)
    with mx(t) as c:
        c.ehlo()
        for line in (b"NOOP\x00", b"\x00\x00\x00\x00", b"EHLO a\x00b",
                     b"MAIL FROM:<a\x00b@far.example>", b"\x00MAIL FROM:<a@far.example>"):
            code, _ = c.cmd(line)
            assert code in (500, 501), (line, code)
        c.expect(f"MAIL FROM:<a@{FAR}>", 250)
        code, _ = c.cmd(f"RCPT TO:<{VICTIM}\x00>")
        assert code in (500, 501), code
        c.expect("RSET", 250)
        healthy(t, before, c)


def test_binary_garbage_lines(t):
    before = snapshot(t)
    with mx(t) as c:
        c.ehlo()
        for junk in (bytes(range(1, 256)).replace(b"\n", b""), b"\xff\xfe\xfd" * 50, b"\r\r\r"):
            code, _ = c.cmd(junk)
            assert code in (500, 501), (junk[:20], code)
        healthy(t, before, c)


# ---- DATA: bare LF and smuggling ----


def test_bare_lf_in_data_refused(t):
    before = snapshot(t)
    with mx(t) as c:
        c.ehlo()
        begin_data(c)
        c.send(b"Subject: bare\r\n\r\nline one\nline two\r\n.\r\n")
        code, lines = c.reply()
        assert code == 550 and "bare" in lines[0].lower(), (code, lines)
        healthy(t, before, c)
    assert "smtp.bare_newline" in t.log()


SMUGGLE = [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r", b"\n.\r"]


@pytest.mark.parametrize("seq", SMUGGLE, ids=lambda s: s.decode().replace("\r", "CR").replace("\n", "LF"))
def test_smtp_smuggling(t, seq):
    """An end-of-data look-alike inside DATA followed by a whole second transaction: the
    data does not end there, the message (bare CR/LF) is refused, and nothing is
    smuggled through."""
    before = snapshot(t)
    smuggled = (
        f"MAIL FROM:<admin@{DOM}>\r\nRCPT TO:<{OTHER}>\r\nDATA\r\n"
        "From: admin@abuse.test\r\nSubject: smuggled\r\n\r\nsmuggled\r\n"
    ).encode()
    with mx(t) as c:
        c.ehlo()
        begin_data(c)
        c.send(b"Subject: outer\r\n\r\nbefore" + seq + smuggled)
        assert c.quiet(0.3), f"the server answered inside DATA: {c.buf!r}"
        c.send(b".\r\n")  # after smuggled's CRLF this is the real end of data
        code, lines = c.reply()
        assert code == 550 and "bare" in lines[0].lower(), (code, lines)
        assert c.quiet(0.3), f"more replies than one: {c.buf!r}"
        healthy(t, before, c)


def test_dot_crlf_at_line_start_only_ends_data(t):
    """'.\\r\\n' that is not at the start of a line is content; the message is whole."""
    n = len(messages(t, OTHER))
    msg = b"Subject: dots\r\n\r\nx.\r\n .\r\n\t.\r\nend\r\n"
    with mx(t) as c:
        c.ehlo()
        begin_data(c, (OTHER,))
        c.send(msg + b".\r\n")
        assert c.reply()[0] == 250
    recs = sorted(messages(t, OTHER), key=lambda r: int(r["uid"]))
    assert len(recs) == n + 1
    assert split_trace(message_body(t, OTHER, recs[-1]["uid"]))[1] == msg


# ---- errors ----


def test_unknown_commands_until_421(t):
    before = snapshot(t)
    with mx(t) as c:
        c.ehlo()
        c.send(b"XYZZY\r\n" * 20)  # more than max_errors; the rest must be ignored
        replies = c.replies(11)
        assert [r[0] for r in replies] == [500] * 10 + [421], replies
        assert "4.7.0" in replies[-1][1][0]
        assert c.closed()
    healthy(t, before)


def test_mixed_errors_count(t):
    with mx(t) as c:
        c.ehlo()
        c.expect(f"MAIL FROM:<a@{FAR}>", 250)
        for _ in range(3):
            c.expect(f"RCPT TO:<x@{FAR}>", 554)  # relay attempts
            c.expect(f"RCPT TO:<nobody@{DOM}>", 550)  # directory harvest
            c.expect("BOGUS", 500)
        c.send(b"BOGUS\r\n")
        codes = [r[0] for r in c.replies(2)]
        assert codes == [500, 421], codes
        assert c.closed()


# ---- STARTTLS injection ----


def test_plaintext_after_starttls_is_discarded_mx(t):
    with mx(t) as c:
        c.ehlo()
        c.send(b"STARTTLS\r\nNOOP\r\n")  # one packet
        code, _ = c.reply()
        assert code == 220
        assert c.buf == b"", f"plaintext after 220: {c.buf!r}"
        c.s = tls_client_context().wrap_socket(c.s, server_hostname="localhost")
        c.s.settimeout(c.timeout)
        assert c.quiet(0.5), f"the server answered the injected NOOP inside TLS: {c.buf!r}"
        code, lines = c.cmd("EHLO after.test")
        assert code == 250 and len(lines) > 1, (code, lines)  # EHLO's, not NOOP's, reply
        c.expect("NOOP", 250)


def test_plaintext_auth_after_starttls_is_discarded(t):
    plain = base64.b64encode(f"\0{VICTIM}\0{USERS['victim']}".encode())
    with RawSMTP(t.smtp_ports["submission"]) as c:
        c.ehlo()
        c.send(b"STARTTLS\r\nAUTH PLAIN " + plain + b"\r\nMAIL FROM:<" + VICTIM.encode() + b">\r\n")
        assert c.reply()[0] == 220
        c.s = tls_client_context().wrap_socket(c.s, server_hostname="localhost")
        c.s.settimeout(c.timeout)
        assert c.quiet(0.5), c.buf
        c.ehlo()
        c.expect(f"MAIL FROM:<{VICTIM}>", 530)  # the injected AUTH did not count


# ---- limits (dedicated ternd) ----


def test_oversized_message_data(lim):
    before = snapshot(lim)
    with mx(lim, timeout=10) as c:
        caps = c.ehlo()
        assert f"SIZE {MAX_SIZE}" in caps, caps
        begin_data(c)
        line = b"y" * 998 + b"\r\n"
        c.send(b"Subject: big\r\n\r\n" + line * (MAX_SIZE // len(line) + 50))
        assert c.quiet(0.3), "refused before the end of the data"
        c.send(b".\r\n")
        code, lines = c.reply()
        assert code == 552 and "5.3.4" in lines[0], (code, lines)
        healthy(lim, before, c)


def test_message_at_size_limit_accepted(lim):
    n = len(messages(lim, OTHER))
    head = b"Subject: exactly max\r\n\r\n"
    body = (b"z" * 98 + b"\r\n") * ((MAX_SIZE - len(head)) // 100)
    msg = head + body + b"w" * (MAX_SIZE - len(head) - len(body) - 2) + b"\r\n"
    assert len(msg) == MAX_SIZE
    with mx(lim, timeout=10) as c:
        c.ehlo()
        begin_data(c, (OTHER,))
        c.send(dot_stuff(msg))
        assert c.reply()[0] == 250
    assert len(messages(lim, OTHER)) == n + 1


def test_oversized_message_bdat_and_size(lim):
    before = snapshot(lim)
    with mx(lim, timeout=10) as c:
        c.ehlo()
        c.expect(f"MAIL FROM:<a@{FAR}> SIZE={MAX_SIZE + 1}", 552, "5.3.4")
        c.expect(f"MAIL FROM:<a@{FAR}>", 250)
        c.expect(f"RCPT TO:<{VICTIM}>", 250)
        big = b"b" * (MAX_SIZE + 4096)
        c.send(b"BDAT %d LAST\r\n" % len(big) + big)
        code, lines = c.reply()
        assert code == 552, (code, lines)
        # the same in two chunks, then LAST
        c.expect(f"MAIL FROM:<a@{FAR}>", 250)
        c.expect(f"RCPT TO:<{VICTIM}>", 250)
        half = b"h" * (MAX_SIZE // 2 + 2048)
        c.send(b"BDAT %d\r\n" % len(half) + half)
        assert c.reply()[0] == 250
        c.send(b"BDAT %d\r\n" % len(half) + half)
        assert c.reply()[0] == 552
        c.send(b"BDAT 0 LAST\r\n")
        assert c.reply()[0] == 552
        healthy(lim, before, c)


def test_too_many_recipients(lim):
    users = [VICTIM, OTHER, CANARY]
    counts = {u: len(messages(lim, u)) for u in users}
    with mx(lim) as c:
        c.ehlo()
        c.expect(f"MAIL FROM:<a@{FAR}>", 250)
        for u in users:
            c.expect(f"RCPT TO:<{u}>", 250)
        c.expect(f"RCPT TO:<{VICTIM}>", 452, "4.5.3")
        c.expect(f"RCPT TO:<nobody@{DOM}>", 452, "4.5.3")
        c.expect("DATA", 354)
        c.send(b"Subject: three\r\n\r\nx\r\n.\r\n")
        assert c.reply()[0] == 250
        # the limit is per transaction
        c.expect(f"MAIL FROM:<a@{FAR}>", 250)
        for u in users:
            c.expect(f"RCPT TO:<{u}>", 250)
    for u in users:
        assert len(messages(lim, u)) == counts[u] + 1


def test_connections_per_address(lim):
    conns = []
    try:
        for _ in range(MAX_PER_IP):
            conns.append(mx(lim))
        extra = RawSMTP(lim.smtp_ports["smtp"], greet=False, timeout=3)
        try:
            assert extra.closed(), f"connection {MAX_PER_IP + 1} was served: {extra.buf!r}"
            assert not extra.buf.startswith(b"220"), extra.buf
        finally:
            extra.close()
        for c in conns:  # the ones admitted still work
            c.expect("NOOP", 250)
    finally:
        for c in conns:
            c.close()

    def admitted():
        try:
            with mx(lim, timeout=2) as c:
                c.expect("NOOP", 250)
                return True
        except (SmtpClosed, OSError, AssertionError):
            return False

    assert wait_until(admitted, 5.0), "slots not released after the clients left"


# ---- idle clients (dedicated ternd, 1 s timeouts) ----


def test_idle_timeouts(slow):
    """Idle at the greeting, after EHLO with half a command, inside DATA, inside a BDAT
    chunk and inside AUTH: each gets 421 4.4.2 and is closed; nothing is stored."""
    before = snapshot(slow)
    conns = {}
    conns["greeting"] = mx(slow)
    c = conns["half-command"] = mx(slow)
    c.ehlo()
    c.send(b"MAIL FROM:<a@far")
    c = conns["data"] = mx(slow)
    c.ehlo()
    begin_data(c)
    c.send(b"Subject: stalled\r\n\r\npartial")
    c = conns["bdat"] = mx(slow)
    c.ehlo()
    c.expect(f"MAIL FROM:<a@{FAR}>", 250)
    c.expect(f"RCPT TO:<{VICTIM}>", 250)
    c.send(b"BDAT 100 LAST\r\nonly ten..")
    c = conns["auth"] = RawSMTP(slow.smtp_ports["submission"])
    c.ehlo()
    c.expect("AUTH LOGIN", 334)
    start = time.monotonic()
    try:
        for name, c in conns.items():
            try:
                code, lines = c.reply()
            except (SmtpClosed, socket.timeout, TimeoutError) as e:
                pytest.fail(f"{name}: no 421 before close/timeout ({e!r})")
            assert code == 421 and "4.4.2" in lines[0], (name, code, lines)
            assert c.closed(), name
        elapsed = time.monotonic() - start
        assert elapsed < IDLE_MS / 1000 + 3, elapsed
    finally:
        for c in conns.values():
            c.close()
    healthy(slow, before)


def test_active_client_not_timed_out(slow):
    """Each command restarts the idle timer: a client that keeps talking is served."""
    with mx(slow) as c:
        c.ehlo()
        for _ in range(4):
            time.sleep(IDLE_MS / 1000 * 0.45)
            c.expect("NOOP", 250)


# ---- clients that vanish ----


def test_client_vanishes_while_server_works(t):
    """Clients that hang up right after the final dot (delivery in flight) or right after
    AUTH (password check in flight): ternd stays up, the message is stored once or not
    at all, and nothing else changes."""
    before = snapshot(t)
    n = len(messages(t, CANARY))
    for _ in range(5):
        c = mx(t)
        c.ehlo()
        c.expect(f"MAIL FROM:<v@{FAR}>", 250)
        c.expect(f"RCPT TO:<{CANARY}>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: gone\r\n\r\nbye\r\n.\r\n")
        c.close()
    plain = base64.b64encode(f"\0{VICTIM}\0{USERS['victim']}".encode())
    for _ in range(5):
        c = RawSMTP(t.smtp_ports["submission"])
        c.ehlo()
        c.send(b"AUTH PLAIN " + plain + b"\r\nMAIL FROM:<" + VICTIM.encode() + b">\r\n")
        c.close()
    assert t.running()
    got = wait_until(lambda: len(messages(t, CANARY)) == n + 5 or None, 3.0)
    assert len(messages(t, CANARY)) <= n + 5
    print("delivered after hang-up:", len(messages(t, CANARY)) - n, "of 5", got)
    healthy(t, before)
