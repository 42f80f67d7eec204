# tests/integration/test_smtp.py
# The SMTP server end to end, against one ternd with its three SMTP listeners (MX with
# STARTTLS, submission with STARTTLS, submission with implicit TLS): delivery and the
# exact octets stored, STARTTLS and implicit TLS, AUTH PLAIN/LOGIN, PIPELINING, BDAT,
# DSN/8BITMIME/SMTPUTF8 parameters, one body for many recipients, quotas, swaks as a
# real client, and the submission sender rules. What was stored is read back through
# ternctl (message list / message show / user show). Attacks are in test_smtp_abuse.py.
import base64
import hashlib
import os
import re
import smtplib
import subprocess

import pytest

from conftest import (
    Cluster,
    RawSMTP,
    dot_stuff,
    message_body,
    messages,
    need_binaries,
    smtp_node,
    smtp_setup,
    split_trace,
    tls_client_context,
    user_usage,
)

DOM = "mx.test"
FAR = "far.example"
PW = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "dave": "dave-pw",
      "qbytes": "q-pw", "qmsgs": "q-pw", "qsize": "q-pw"}
ALICE, BOB, CAROL, DAVE = (f"{u}@{DOM}" for u in ("alice", "bob", "carol", "dave"))
ALIASES = [
    (f"al@{DOM}", ALICE),  # alice under another name
    (f"team@{DOM}", f"{ALICE},{BOB}"),  # two accounts
    (f"bobby@{DOM}", BOB),
    (f"postmaster@{DOM}", ALICE),
]


@pytest.fixture(scope="module")
def t():
    need_binaries()
    c = Cluster()
    node = smtp_node(c, sets=["--set", f"node.hostname={DOM}"]).start()
    smtp_setup(node, DOM, PW, ALIASES)
    yield node
    c.close(keep=os.environ.get("TERN_KEEP_TMP"))


def mx(t, **kw):
    return RawSMTP(t.smtp_ports["smtp"], **kw)


def sub(t, **kw):
    return RawSMTP(t.smtp_ports["submission"], **kw)


def count(t, user):
    return len(messages(t, user))


def newest(t, user):
    """(record, stored octets) of USER's INBOX message with the highest uid."""
    recs = messages(t, user)
    assert recs, f"{user} has no message"
    rec = max(recs, key=lambda r: int(r["uid"]))
    return rec, message_body(t, user, rec["uid"])


def auth_plain_b64(user, pw, authz=""):
    return base64.b64encode(f"{authz}\0{user}\0{pw}".encode()).decode()


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def login_raw(c, user, pw):
    c.expect(f"AUTH PLAIN {auth_plain_b64(user, pw)}", 235, "2.7.0")


def transaction(c, frm, rcpts, msg, params=""):
    """MAIL, RCPTs (all must be accepted), DATA with MSG dot-stuffed. Returns the reply to
    the final dot."""
    c.expect(f"MAIL FROM:<{frm}>{params}", 250)
    for r in rcpts:
        c.expect(f"RCPT TO:<{r}>", 250)
    c.expect("DATA", 354)
    c.send(dot_stuff(msg))
    return c.reply()


def simple_msg(subject, body=b"hello\r\n"):
    return (f"From: sender@{FAR}\r\nTo: someone@{DOM}\r\nSubject: {subject}\r\n\r\n").encode() + body


# ---- greeting, EHLO ----


def test_greeting_and_mx_capabilities(t):
    with mx(t) as c:
        assert c.greeting[0] == 220 and "ESMTP" in c.greeting[1][0]
        caps = c.ehlo()
        for cap in ("PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING",
                    "STARTTLS", "DSN"):
            assert cap in caps, caps
        assert any(x.startswith("SIZE ") for x in caps), caps
        assert not any(x.startswith("AUTH") for x in caps), f"AUTH offered on MX: {caps}"
        c.expect("NOOP", 250)
        c.expect("HELP", 214)
        c.expect("VRFY alice", 252)
        c.expect("EXPN team", 502)
        c.expect("QUIT", 221)
        assert c.closed()


def test_submission_capabilities(t):
    with sub(t) as c:
        caps = c.ehlo()
        assert "STARTTLS" in caps
        assert "AUTH PLAIN LOGIN" in caps, caps  # loopback counts as secure


def test_mail_before_helo_refused(t):
    with mx(t) as c:
        c.expect(f"MAIL FROM:<x@{FAR}>", 503, "5.5.1")
        c.expect("HELO client.test", 250)
        c.expect(f"MAIL FROM:<x@{FAR}>", 250)
        c.expect(f"MAIL FROM:<y@{FAR}>", 503, "Nested")
        c.expect("RSET", 250)
        c.expect(f"RCPT TO:<{ALICE}>", 503, "5.5.1")
        c.expect("DATA", 503, "5.5.1")


# ---- delivery and the octets stored ----


def test_mx_delivery_stored_exactly(t):
    """What the client sent, after dot-unstuffing, is stored octet for octet behind the
    trace headers; lines that start with '.' survive the round trip."""
    body = (
        b".leading dot\r\n"
        b"..two dots\r\n"
        b".\r\n"  # a line that is a lone dot: stuffed to "..", must come back as "."
        b"...\r\n"
        b" .space then dot\r\n"
        b"tab\there, trailing spaces   \r\n"
        b"\r\n"
        b"last line\r\n"
    )
    msg = simple_msg("exact", body)
    before = count(t, ALICE)
    with mx(t) as c:
        c.ehlo()
        code, lines = transaction(c, f"sender@{FAR}", [ALICE], msg)
        assert code == 250 and lines[0].startswith("2.0.0"), (code, lines)
        c.expect("QUIT", 221)
    assert count(t, ALICE) == before + 1
    rec, stored = newest(t, ALICE)
    trace, rest = split_trace(stored)
    assert rest == msg
    assert int(rec["size"]) == len(stored)
    assert rec["body"] == hashlib.sha256(stored).hexdigest()
    assert rec["from"] == f"sender@{FAR}" and rec["rcpt"] == ALICE
    t_ = trace.decode()
    assert t_.startswith(f"Return-Path: <sender@{FAR}>\r\n")
    assert "Received: from client.test ([127.0.0.1])" in t_
    assert "with ESMTP " in t_ and f"for <{ALICE}>;" in t_


def test_message_without_trailing_crlf_and_empty_message(t):
    """DATA ending right after the header, and a body that is just the terminator."""
    before = count(t, BOB)
    with mx(t) as c:
        c.ehlo()
        c.expect(f"MAIL FROM:<x@{FAR}>", 250)
        c.expect(f"RCPT TO:<{BOB}>", 250)
        c.expect("DATA", 354)
        c.send(b".\r\n")  # empty message
        assert c.reply()[0] == 250
    assert count(t, BOB) == before + 1
    _, stored = newest(t, BOB)
    assert split_trace(stored)[1] == b""


def test_smtplib_sendmail(t):
    msg = simple_msg("smtplib", b"line 1\r\n.dot line\r\nline 3\r\n")
    before = count(t, CAROL)
    with smtplib.SMTP("127.0.0.1", t.smtp_ports["smtp"], timeout=5) as s:
        refused = s.sendmail(f"x@{FAR}", [CAROL], msg)
        assert refused == {}
    assert count(t, CAROL) == before + 1
    assert split_trace(newest(t, CAROL)[1])[1] == msg


def test_null_sender_accepted_on_mx(t):
    """Bounces (MAIL FROM:<>) must be accepted by an MX (RFC 5321 4.5.5)."""
    before = count(t, ALICE)
    with mx(t) as c:
        c.ehlo()
        assert transaction(c, "", [ALICE], simple_msg("bounce"))[0] == 250
    rec, stored = newest(t, ALICE)
    assert count(t, ALICE) == before + 1
    assert stored.startswith(b"Return-Path: <>\r\n")


def test_recipient_checks_on_mx(t):
    with mx(t) as c:
        c.ehlo()
        c.expect(f"MAIL FROM:<x@{FAR}>", 250)
        c.expect(f"RCPT TO:<nobody@{DOM}>", 550, "5.1.1")
        c.expect(f"RCPT TO:<x@{FAR}>", 554, "5.7.1")
        c.expect("RCPT TO:<ALICE@MX.TEST>", 250)  # case-insensitive
        c.expect("RCPT TO:<bad address>", 501)
        c.expect("DATA", 354)
        c.send(b"Subject: case\r\n\r\nx\r\n.\r\n")
        assert c.reply()[0] == 250


# ---- TLS ----


def test_starttls_mx(t):
    before = count(t, ALICE)
    with mx(t) as c:
        assert "STARTTLS" in c.ehlo()
        c.starttls()
        caps = c.ehlo()
        assert "STARTTLS" not in caps, caps
        assert not any(x.startswith("AUTH") for x in caps), caps
        c.expect("STARTTLS", 503, "5.5.1")
        assert transaction(c, f"x@{FAR}", [ALICE], simple_msg("over tls"))[0] == 250
        c.expect("QUIT", 221)
    assert count(t, ALICE) == before + 1
    trace = split_trace(newest(t, ALICE)[1])[0].decode()
    assert "with ESMTPS " in trace and "(using TLS" in trace, trace


def test_starttls_forgets_the_plaintext_session(t):
    """RFC 3207 4.2: after STARTTLS the client must greet again; the transaction is gone."""
    with mx(t) as c:
        c.ehlo()
        c.expect(f"MAIL FROM:<x@{FAR}>", 250)
        c.starttls()
        c.expect(f"RCPT TO:<{ALICE}>", 503)  # no MAIL any more
        c.expect(f"MAIL FROM:<x@{FAR}>", 503)  # no EHLO yet
        c.ehlo()
        c.expect(f"MAIL FROM:<x@{FAR}>", 250)


def test_starttls_forgets_authentication(t):
    with sub(t) as c:
        c.ehlo()
        login_raw(c, ALICE, PW["alice"])
        c.starttls()
        caps = c.ehlo()
        code, lines = c.cmd(f"MAIL FROM:<{ALICE}>")
        assert code == 530, f"still authenticated after STARTTLS: {code} {lines}"
        assert "AUTH PLAIN LOGIN" in caps, caps


def test_starttls_submission_then_auth(t):
    before = count(t, BOB)
    with smtplib.SMTP("127.0.0.1", t.smtp_ports["submission"], timeout=5) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        s.starttls(context=tls_client_context())
        s.ehlo()
        assert not s.has_extn("starttls")
        assert "PLAIN" in s.esmtp_features["auth"] and "LOGIN" in s.esmtp_features["auth"]
        s.login(ALICE, PW["alice"])
        assert s.sendmail(ALICE, [BOB], simple_msg("submission starttls")) == {}
    assert count(t, BOB) == before + 1
    trace = split_trace(newest(t, BOB)[1])[0].decode()
    assert "with ESMTPSA " in trace, trace


def test_smtps_implicit_tls(t):
    before = count(t, CAROL)
    with smtplib.SMTP_SSL("127.0.0.1", t.smtp_ports["smtps"], timeout=5,
                          context=tls_client_context()) as s:
        code, _ = s.ehlo()
        assert code == 250
        assert not s.has_extn("starttls")
        assert s.has_extn("auth")
        s.login(BOB, PW["bob"])
        assert s.sendmail(BOB, [CAROL], simple_msg("smtps")) == {}
    assert count(t, CAROL) == before + 1


def test_smtps_plaintext_client_gets_nothing(t):
    """A client speaking plaintext to the implicit-TLS port gets no SMTP reply."""
    with RawSMTP(t.smtp_ports["smtps"], greet=False, timeout=3) as c:
        c.send(b"EHLO plain.test\r\n")
        assert c.closed()
        assert not c.buf.startswith(b"2"), c.buf


# ---- AUTH ----


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("initial_response", [True, False])
def test_auth_smtplib(t, mech, initial_response):
    with smtplib.SMTP("127.0.0.1", t.smtp_ports["submission"], timeout=5) as s:
        s.ehlo()
        s.user, s.password = CAROL, PW["carol"]
        code, _ = s.auth(mech, getattr(s, "auth_" + mech.lower()),
                         initial_response_ok=initial_response)
        assert code == 235
        code, _ = s.mail(CAROL)
        assert code == 250


def test_auth_plain_raw_forms(t):
    with sub(t) as c:  # initial response
        c.ehlo()
        login_raw(c, ALICE, PW["alice"])
        c.expect(f"AUTH PLAIN {auth_plain_b64(ALICE, PW['alice'])}", 503, "5.5.1")  # again
        c.expect(f"MAIL FROM:<{ALICE}>", 250)
    with sub(t) as c:  # 334 continuation
        c.ehlo()
        code, lines = c.cmd("AUTH PLAIN")
        assert code == 334 and lines == [""], (code, lines)
        c.expect(auth_plain_b64(ALICE, PW["alice"]), 235)
    with sub(t) as c:  # authzid equal to authcid is fine, another one is not
        c.ehlo()
        c.expect(f"AUTH PLAIN {auth_plain_b64(ALICE, PW['alice'], authz=BOB)}", 535)
        c.expect(f"AUTH PLAIN {auth_plain_b64(ALICE, PW['alice'], authz=ALICE)}", 235)


def test_auth_login_raw(t):
    with sub(t) as c:
        c.ehlo()
        code, lines = c.cmd("AUTH LOGIN")
        assert code == 334 and base64.b64decode(lines[0]) == b"Username:"
        code, lines = c.cmd(b64(BOB))
        assert code == 334 and base64.b64decode(lines[0]) == b"Password:"
        c.expect(b64(PW["bob"]), 235)
        c.expect(f"MAIL FROM:<{BOB}>", 250)


def test_auth_cancel(t):
    with sub(t) as c:
        c.ehlo()
        c.expect("AUTH PLAIN", 334)
        c.expect("*", 501, "5.7.0")
        c.expect(f"MAIL FROM:<{ALICE}>", 530, "5.7.0")  # still not authenticated
        c.expect("AUTH LOGIN", 334)
        c.expect(b64(ALICE), 334)
        c.expect("*", 501)
        c.expect("NOOP", 250)
        login_raw(c, ALICE, PW["alice"])  # and AUTH still works afterwards


def test_auth_bad_input(t):
    with sub(t) as c:
        c.ehlo()
        c.expect("AUTH PLAIN not-base64!", 501, "5.5.2")
        c.expect("AUTH CRAM-MD5", 504, "5.5.4")
        c.expect("AUTH", 501)
        c.expect("AUTH PLAIN", 334)
        c.expect("%%%", 501)
        c.expect(f"AUTH PLAIN {b64('no-nuls-at-all')}", 501)
        login_raw(c, ALICE, PW["alice"])


def test_auth_wrong_password_then_right(t):
    with sub(t) as c:
        c.ehlo()
        c.expect(f"AUTH PLAIN {auth_plain_b64(ALICE, 'wrong')}", 535, "5.7.8")
        c.expect(f"AUTH PLAIN {auth_plain_b64('nobody@' + DOM, 'x')}", 535, "5.7.8")
        c.expect(f"MAIL FROM:<{ALICE}>", 530)
        login_raw(c, ALICE, PW["alice"])
        c.expect(f"MAIL FROM:<{ALICE}>", 250)


def test_auth_too_many_failures(t):
    with sub(t) as c:
        c.ehlo()
        c.expect(f"AUTH PLAIN {auth_plain_b64(ALICE, 'bad1')}", 535)
        c.expect("AUTH LOGIN", 334)
        c.expect(b64(ALICE), 334)
        c.expect(b64("bad2"), 535)
        c.expect(f"AUTH PLAIN {auth_plain_b64(ALICE, 'bad3')}", 421, "4.7.0")
        assert c.closed()
    with sub(t) as c:  # the account is not locked for others
        c.ehlo()
        login_raw(c, ALICE, PW["alice"])


def test_auth_on_mx_refused(t):
    with mx(t) as c:
        c.ehlo()
        c.expect(f"AUTH PLAIN {auth_plain_b64(ALICE, PW['alice'])}", 503, "5.5.1")
        c.expect(f"MAIL FROM:<{ALICE}>", 250)
        c.expect(f"RCPT TO:<x@{FAR}>", 554, "5.7.1")  # still no relay


def test_auth_in_transaction_refused(t):
    with sub(t) as c:
        c.ehlo()
        login_raw(c, ALICE, PW["alice"])
        c.expect(f"MAIL FROM:<{ALICE}>", 250)
        c.expect(f"AUTH PLAIN {auth_plain_b64(BOB, PW['bob'])}", 503)


# ---- PIPELINING ----


def test_pipelining(t):
    before = (count(t, ALICE), count(t, BOB))
    msg = simple_msg("pipelined", b"body\r\n.dot\r\n")
    with mx(t) as c:
        c.ehlo()
        c.send(
            f"MAIL FROM:<p@{FAR}>\r\nRCPT TO:<{ALICE}>\r\nRCPT TO:<nobody@{DOM}>\r\n"
            f"RCPT TO:<{BOB}>\r\nDATA\r\n"
        )
        codes = [r[0] for r in c.replies(5)]
        assert codes == [250, 250, 550, 250, 354], codes
        c.send(dot_stuff(msg) + b"QUIT\r\n")
        final, bye = c.replies(2)
        assert final[0] == 250 and bye[0] == 221, (final, bye)
        assert c.closed()
    assert (count(t, ALICE), count(t, BOB)) == (before[0] + 1, before[1] + 1)
    assert split_trace(newest(t, ALICE)[1])[1] == msg
    assert newest(t, ALICE)[0]["body"] == newest(t, BOB)[0]["body"]


def test_pipelining_whole_transactions_in_one_write(t):
    """Two complete transactions and QUIT in one packet: the server holds the connection
    while the first delivery commits and answers everything, in order."""
    before = count(t, CAROL)
    m1, m2 = simple_msg("burst 1"), simple_msg("burst 2")
    blob = b""
    for m in (m1, m2):
        blob += f"MAIL FROM:<b@{FAR}>\r\nRCPT TO:<{CAROL}>\r\nDATA\r\n".encode() + dot_stuff(m)
    with mx(t) as c:
        c.ehlo()
        c.send(blob + b"RSET\r\nQUIT\r\n")
        codes = [r[0] for r in c.replies(10)]
        assert codes == [250, 250, 354, 250, 250, 250, 354, 250, 250, 221], codes
        assert c.closed()
    recs = sorted(messages(t, CAROL), key=lambda r: int(r["uid"]))
    assert len(recs) == before + 2
    assert split_trace(message_body(t, CAROL, recs[-2]["uid"]))[1] == m1
    assert split_trace(message_body(t, CAROL, recs[-1]["uid"]))[1] == m2


# ---- BDAT (CHUNKING) ----


BINARYISH = bytes(range(256)) + b"\r\n.\r\n" + b"\n.\n" + b"\r\n.\r\nQUIT\r\n" + b"\x00" * 10


def test_bdat_chunks(t):
    parts = [b"Subject: bdat\r\n\r\n", BINARYISH, b"tail\r\n"]
    before = count(t, DAVE)
    with mx(t) as c:
        c.ehlo()
        c.expect(f"MAIL FROM:<c@{FAR}>", 250)
        c.expect(f"RCPT TO:<{DAVE}>", 250)
        for p in parts:
            c.send(b"BDAT %d\r\n" % len(p) + p)
            code, lines = c.reply()
            assert code == 250, (code, lines)
        c.send(b"BDAT 0 LAST\r\n")
        code, lines = c.reply()
        assert code == 250 and "queued" in lines[0], (code, lines)
        c.expect("NOOP", 250)
    assert count(t, DAVE) == before + 1
    assert split_trace(newest(t, DAVE)[1])[1] == b"".join(parts)


def test_bdat_chunk_reply_counts_client_octets(t):
    with mx(t) as c:
        c.ehlo()
        c.expect(f"MAIL FROM:<c@{FAR}>", 250)
        c.expect(f"RCPT TO:<{DAVE}>", 250)
        c.send(b"BDAT 5\r\nfirst")
        code, lines = c.reply()
        assert code == 250
        c.send(b"BDAT 6\r\nsecond")
        code, lines2 = c.reply()
        c.expect("RSET", 250)
        assert re.match(r"2\.0\.0 5 octets", lines[0]), lines
        assert re.match(r"2\.0\.0 11 octets", lines2[0]), lines2


def test_bdat_pipelined_single_write(t):
    msg = b"Subject: one write\r\n\r\n.x\r\n"
    before = count(t, DAVE)
    with mx(t) as c:
        c.ehlo()
        c.send(f"MAIL FROM:<c@{FAR}>\r\nRCPT TO:<{DAVE}>\r\n".encode()
               + b"BDAT 7\r\n" + msg[:7] + b"BDAT %d LAST\r\n" % (len(msg) - 7) + msg[7:]
               + b"NOOP\r\n")
        codes = [r[0] for r in c.replies(5)]
        assert codes == [250, 250, 250, 250, 250], codes
    assert count(t, DAVE) == before + 1
    assert split_trace(newest(t, DAVE)[1])[1] == msg


def test_bdat_without_recipients_stays_in_sync(t):
    """A refused BDAT still consumes its chunk: commands inside the chunk are data, and
    the next real command is answered."""
    before = count(t, DAVE)
    chunk = b"QUIT\r\nRSET\r\n"
    with mx(t) as c:
        c.ehlo()
        c.expect(f"MAIL FROM:<c@{FAR}>", 250)
        c.expect(f"RCPT TO:<nobody@{DOM}>", 550)
        c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
        code, lines = c.reply()
        assert code == 554 and lines[0].startswith("5.5.1"), (code, lines)
        c.expect("NOOP", 250)
        # without MAIL at all, two chunks, each answered
        c.send(b"BDAT 4\r\nQUITBDAT 4 LAST\r\nQUIT")
        codes = [r[0] for r in c.replies(2)]
        assert codes == [503, 503], codes
        c.expect("NOOP", 250)
        # and a good transaction on the same connection
        c.expect(f"MAIL FROM:<c@{FAR}>", 250)
        c.expect(f"RCPT TO:<{DAVE}>", 250)
        c.send(b"BDAT 3 LAST\r\nabc")
        assert c.reply()[0] == 250
    assert count(t, DAVE) == before + 1
    assert split_trace(newest(t, DAVE)[1])[1] == b"abc"


def test_bdat_refused_chunk_does_not_poison_next_transaction(t):
    """After a refused non-LAST BDAT (no MAIL), the client starts over with MAIL, RCPT and
    BDAT LAST: that new transaction must be judged on its own."""
    before = count(t, DAVE)
    with mx(t) as c:
        c.ehlo()
        c.send(b"BDAT 4\r\nabcd")
        assert c.reply()[0] == 503
        c.expect(f"MAIL FROM:<c@{FAR}>", 250)
        c.expect(f"RCPT TO:<{DAVE}>", 250)
        c.send(b"BDAT 3 LAST\r\nxyz")
        code, lines = c.reply()
        assert code == 250, (code, lines)
    assert count(t, DAVE) == before + 1


def test_bdat_bad_size_closes(t):
    """BDAT whose size cannot be parsed: the stream cannot be resynchronised, so 501 and
    close (documented in session.c)."""
    with mx(t) as c:
        c.ehlo()
        c.expect(f"MAIL FROM:<c@{FAR}>", 250)
        c.expect(f"RCPT TO:<{DAVE}>", 250)
        c.expect("BDAT x", 501)
        assert c.closed()


def test_data_after_bdat_refused(t):
    """RFC 3030 2: DATA and BDAT must not be mixed in one transaction (503)."""
    before = count(t, DAVE)
    with mx(t) as c:
        c.ehlo()
        c.expect(f"MAIL FROM:<c@{FAR}>", 250)
        c.expect(f"RCPT TO:<{DAVE}>", 250)
        c.send(b"BDAT 5\r\nfirst")
        assert c.reply()[0] == 250
        code, lines = c.cmd("DATA")
        if code == 354:  # the server took it: finish, so that the state is visible
            c.send(b"second\r\n.\r\n")
            c.reply()
        assert code == 503, f"DATA after BDAT answered {code} {lines}"
    assert count(t, DAVE) == before


# ---- DSN, 8BITMIME, SMTPUTF8 ----


def test_dsn_parameters_mx(t):
    before = count(t, ALICE)
    with mx(t) as c:
        c.ehlo()
        c.expect(f"MAIL FROM:<d@{FAR}> RET=HDRS ENVID=abc", 250)
        c.expect(f"RCPT TO:<{ALICE}> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y", 250)
        c.expect(f"RCPT TO:<{BOB}> NOTIFY=NEVER", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: dsn\r\n\r\nx\r\n.\r\n")
        assert c.reply()[0] == 250
    assert count(t, ALICE) == before + 1


def test_dsn_bad_parameters(t):
    with mx(t) as c:
        c.ehlo()
        c.expect(f"MAIL FROM:<d@{FAR}> RET=SOME", 501, "5.5.4")  # bad value, known parameter
        c.expect(f"MAIL FROM:<d@{FAR}> FOO=BAR", 555)
        c.expect(f"MAIL FROM:<d@{FAR}> BODY=BINARYMIME", 555)
        c.expect(f"MAIL FROM:<d@{FAR}>", 250)
        for bad in ("NOTIFY=NEVER,SUCCESS", "NOTIFY=SUCCESS NOTIFY=FAILURE", "NOTIFY=SOMETIMES",
                    "ORCPT=rfc822", "BAR=1"):
            code, lines = c.cmd(f"RCPT TO:<{ALICE}> {bad}")
            assert code in (501, 555) and "5.5.4" in lines[0], (bad, code, lines)
        c.expect(f"RCPT TO:<{ALICE}>", 250)
    with mx(t) as c:  # parameters need EHLO
        c.expect("HELO old.test", 250)
        c.expect(f"MAIL FROM:<d@{FAR}> RET=HDRS", 555)
        c.expect(f"MAIL FROM:<d@{FAR}>", 250)


def test_dsn_foreign_recipient_queued_on_submission(t):
    before = count(t, ALICE)
    with sub(t) as c:
        c.ehlo()
        login_raw(c, ALICE, PW["alice"])
        c.expect(f"MAIL FROM:<{ALICE}> RET=HDRS ENVID=abc", 250)
        c.expect(f"RCPT TO:<x@{FAR}> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@{FAR}", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: outbound\r\n\r\nto the world\r\n.\r\n")
        code, lines = c.reply()
        assert code == 250, (code, lines)
        queued = lines[0].split()[-1]
    assert count(t, ALICE) == before  # nothing local
    sid = queued.rsplit("-", 1)[0]
    log = t.log()
    line = [l for l in log.splitlines() if "smtp.delivered" in l and f"sid={sid}" in l]
    assert line and "remote=1" in line[0] and "local=0" in line[0], line


def test_8bitmime(t):
    body = "Grüße aus Köln — ½ €\r\n".encode() + bytes(range(0x80, 0x100)) + b"\r\n"
    msg = b"Subject: 8bit\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body
    with mx(t) as c:
        c.ehlo()
        assert transaction(c, f"e@{FAR}", [BOB], msg, " BODY=8BITMIME")[0] == 250
        assert transaction(c, f"e@{FAR}", [BOB], msg, " BODY=7BIT")[0] == 250
    assert split_trace(newest(t, BOB)[1])[1] == msg


def test_smtputf8_sender(t):
    frm = "jörg@bücher.example"
    msg = "Subject: ünïcödé\r\nFrom: jörg@bücher.example\r\n\r\nhallo\r\n".encode()
    with mx(t) as c:
        c.ehlo()
        c.expect(f"MAIL FROM:<{frm}> SMTPUTF8 BODY=8BITMIME".encode(), 250)
        c.expect(f"RCPT TO:<{CAROL}>", 250)
        c.expect(f"RCPT TO:<jörg@{DOM}>".encode(), 550, "5.1.1")  # valid, but unknown
        c.expect("DATA", 354)
        c.send(dot_stuff(msg))
        assert c.reply()[0] == 250
    rec, stored = newest(t, CAROL)
    trace, rest = split_trace(stored)
    assert rest == msg
    assert trace.startswith(f"Return-Path: <{frm}>\r\n".encode())
    assert b"with UTF8SMTP " in trace, trace


def test_non_ascii_without_smtputf8(t):
    with mx(t) as c:
        c.ehlo()
        c.expect("MAIL FROM:<jörg@bücher.example>".encode(), 553, "5.6.7")
        c.expect(f"MAIL FROM:<x@{FAR}>", 250)
        c.expect(f"RCPT TO:<jörg@{DOM}>".encode(), 553, "5.6.7")
        c.expect(f"RCPT TO:<{ALICE}>", 250)  # the transaction goes on


def test_invalid_utf8_refused(t):
    with mx(t) as c:
        c.ehlo()
        code, _ = c.cmd(b"MAIL FROM:<j\xc3\x28rg@x.example> SMTPUTF8")
        assert 500 <= code < 600, code
        code, _ = c.cmd(b"MAIL FROM:<j\xc0\xafrg@x.example> SMTPUTF8")  # overlong '/'
        assert 500 <= code < 600, code
        c.expect("NOOP", 250)


# ---- many recipients, one body ----


def test_multi_recipient_single_storage(t):
    before = {u: count(t, u) for u in (ALICE, BOB, CAROL)}
    msg = simple_msg("three of them")
    with mx(t) as c:
        c.ehlo()
        assert transaction(c, f"m@{FAR}", [ALICE, BOB, CAROL], msg)[0] == 250
    hashes = set()
    for u in (ALICE, BOB, CAROL):
        assert count(t, u) == before[u] + 1, u
        rec, stored = newest(t, u)
        assert split_trace(stored)[1] == msg
        hashes.add(rec["body"])
    assert len(hashes) == 1, hashes
    trace = split_trace(newest(t, ALICE)[1])[0]
    assert b"for <" not in trace  # several recipients: no single "for" clause


def test_same_account_twice_one_copy(t):
    before = (count(t, ALICE), count(t, BOB))
    with mx(t) as c:
        c.ehlo()
        c.expect(f"MAIL FROM:<m@{FAR}>", 250)
        for r in (ALICE, f"al@{DOM}", f"team@{DOM}", f"bobby@{DOM}", ALICE.upper()):
            c.expect(f"RCPT TO:<{r}>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: dup\r\n\r\nonce\r\n.\r\n")
        assert c.reply()[0] == 250
    assert (count(t, ALICE), count(t, BOB)) == (before[0] + 1, before[1] + 1)


# ---- quota and size ----


def send_sized(t, rcpt, total, size_param=None):
    """Sends a message of TOTAL octets (as sent, before trace headers). Returns the RCPT
    reply code, and the reply to the final dot when RCPT was accepted."""
    head = b"Subject: fill\r\n\r\n"
    line = b"x" * 76 + b"\r\n"
    n = max(0, total - len(head))
    body = line * (n // len(line)) + b"y" * (n % len(line))
    if n % len(line):
        body = body[:-2] + b"\r\n" if len(body) >= 2 else b"\r\n"
    msg = head + body
    with mx(t) as c:
        c.ehlo()
        c.expect(f"MAIL FROM:<q@{FAR}>" + (f" SIZE={size_param}" if size_param else ""), 250)
        rc = c.cmd(f"RCPT TO:<{rcpt}>")
        if rc[0] != 250:
            return rc, None
        c.expect("DATA", 354)
        c.send(dot_stuff(msg))
        return rc, c.reply()


def test_quota_bytes(t):
    u = f"qbytes@{DOM}"
    t.ctl("user", "quota", u, 4000).ok()  # grace: up to 4400
    rc, final = send_sized(t, u, 2000)
    assert rc[0] == 250 and final[0] == 250, (rc, final)
    used, _ = user_usage(t, u)
    assert 2000 < used < 3000, used  # the message plus trace headers
    left = 4400 - used
    # declared SIZE larger than what is left, grace included: refused at RCPT
    rc, _ = send_sized(t, u, 100, size_param=left + 1)
    assert rc[0] == 452 and rc[1][0].startswith("4.2.2"), rc
    # no SIZE, but the message does not fit: refused when it is committed
    rc, final = send_sized(t, u, left + 500)
    assert rc[0] == 250 and final[0] == 552 and "5.2.2" in final[1][0], (rc, final)
    assert user_usage(t, u)[0] == used
    # a message that ends inside the 10% grace is still taken...
    rc, final = send_sized(t, u, 4000 - used + 100)
    assert final is not None and final[0] == 250, (rc, final)
    used2, _ = user_usage(t, u)
    assert 4000 <= used2 <= 4400, used2
    # ...and then the account is full: even SIZE-less mail is refused at RCPT
    rc, _ = send_sized(t, u, 10)
    assert rc[0] == 452 and rc[1][0].startswith("4.2.2"), rc
    assert user_usage(t, u)[0] == used2


def test_quota_messages(t):
    u = f"qmsgs@{DOM}"
    t.ctl("user", "quota", u, 0, 1).ok()
    rc, final = send_sized(t, u, 300)
    assert final[0] == 250, (rc, final)
    rc, _ = send_sized(t, u, 300)
    assert rc[0] == 452 and "4.2.2" in rc[1][0], rc
    # a full account among others: the others still get the message
    before = count(t, BOB)
    with mx(t) as c:
        c.ehlo()
        c.expect(f"MAIL FROM:<q@{FAR}>", 250)
        c.expect(f"RCPT TO:<{u}>", 452)
        c.expect(f"RCPT TO:<{BOB}>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: q\r\n\r\nq\r\n.\r\n")
        assert c.reply()[0] == 250
    assert count(t, BOB) == before + 1
    assert len(messages(t, u)) == 1


def test_size_parameter_over_maximum(t):
    with mx(t) as c:
        caps = c.ehlo()
        maxsize = int([x for x in caps if x.startswith("SIZE ")][0].split()[1])
        c.expect(f"MAIL FROM:<s@{FAR}> SIZE={maxsize + 1}", 552, "5.3.4")
        c.expect(f"MAIL FROM:<s@{FAR}> SIZE=99999999999999999999", 552, "5.3.4")
        c.expect(f"MAIL FROM:<s@{FAR}> SIZE={maxsize}", 250)
        c.expect(f"RCPT TO:<{ALICE}>", 250)


# ---- a real client ----


def swaks(*args):
    return subprocess.run(["swaks", "--timeout", "10", *map(str, args)], capture_output=True,
                          timeout=30, stdin=subprocess.DEVNULL)


def test_swaks_mx(t):
    before = count(t, ALICE)
    r = swaks("--server", f"127.0.0.1:{t.smtp_ports['smtp']}", "--from", f"sw@{FAR}", "--to",
              ALICE, "--h-Subject", "swaks-mx-marker", "--body", "hello from swaks")
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert count(t, ALICE) == before + 1
    assert b"swaks-mx-marker" in newest(t, ALICE)[1]


@pytest.mark.parametrize("mode", ["--tls", "--tlsc"])
def test_swaks_submission_tls_auth(t, mode):
    port = t.smtp_ports["submission" if mode == "--tls" else "smtps"]
    before = count(t, CAROL)
    r = swaks("--server", f"127.0.0.1:{port}", mode, "--auth", "LOGIN", "--auth-user", BOB,
              "--auth-password", PW["bob"], "--from", BOB, "--to", CAROL, "--h-Subject",
              f"swaks{mode}", "--body", "authenticated")
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert count(t, CAROL) == before + 1
    assert f"swaks{mode}".encode() in newest(t, CAROL)[1]


def test_swaks_wrong_password_fails(t):
    r = swaks("--server", f"127.0.0.1:{t.smtp_ports['submission']}", "--tls", "--auth", "PLAIN",
              "--auth-user", BOB, "--auth-password", "nope", "--from", BOB, "--to", CAROL)
    assert r.returncode != 0
    assert b"535" in r.stdout


# ---- relaying and the submission sender rules ----


def test_no_open_relay(t):
    with mx(t) as c:
        c.ehlo()
        c.expect(f"MAIL FROM:<{ALICE}>", 250)  # even with a local sender
        c.expect(f"RCPT TO:<x@{FAR}>", 554, "5.7.1")
        c.expect(f"RCPT TO:<@{DOM}:x@{FAR}>", 554)  # source route: dropped, still foreign
        code, _ = c.cmd(f"RCPT TO:<x%{FAR}@{DOM}>")
        assert code >= 500, code
        code, _ = c.cmd(f"RCPT TO:<x@{FAR}@{DOM}>")
        assert code >= 500, code
        code, _ = c.cmd("RCPT TO:<x@[192.0.2.1]>")
        assert code >= 500, code
        c.expect("DATA", 554)  # no valid recipients
    for listener in ("submission", "smtps"):
        with RawSMTP(t.smtp_ports[listener], tls=listener == "smtps") as c:
            c.ehlo()
            c.expect(f"MAIL FROM:<x@{FAR}>", 530, "5.7.0")
            c.expect(f"MAIL FROM:<{ALICE}>", 530, "5.7.0")
            c.expect(f"RCPT TO:<x@{FAR}>", 503)
            c.expect(f"RCPT TO:<{ALICE}>", 503)


def test_submission_sender_rules(t):
    with sub(t) as c:
        c.ehlo()
        login_raw(c, ALICE, PW["alice"])
        c.expect(f"MAIL FROM:<{BOB}>", 553, "5.7.1")
        c.expect(f"MAIL FROM:<bobby@{DOM}>", 553)  # an alias of someone else
        c.expect(f"MAIL FROM:<team@{DOM}>", 553)  # an alias of alice and bob
        c.expect(f"MAIL FROM:<x@{FAR}>", 553)
        c.expect("MAIL FROM:<>", 553)
        c.expect(f"MAIL FROM:<al@{DOM}>", 250)  # her own alias
        c.expect("RSET", 250)
        c.expect(f"MAIL FROM:<{ALICE.upper()}>", 250)  # her address, any case
        c.expect(f"RCPT TO:<x@{FAR}>", 250)
        c.expect(f"RCPT TO:<{BOB}>", 250)


# ---- ordering under load: pipelined AUTH, big bursts, concurrency ----


def test_commands_pipelined_after_auth_wait_for_it(t):
    """AUTH is checked in the thread pool; what the client pipelined after it must be
    judged with its outcome."""
    with sub(t) as c:
        c.ehlo()
        c.send(f"AUTH PLAIN {auth_plain_b64(ALICE, 'wrong')}\r\nMAIL FROM:<{ALICE}>\r\n"
               f"AUTH PLAIN {auth_plain_b64(ALICE, PW['alice'])}\r\nMAIL FROM:<{ALICE}>\r\n"
               f"RCPT TO:<{BOB}>\r\nRSET\r\n")
        codes = [r[0] for r in c.replies(6)]
        assert codes == [535, 530, 235, 250, 250, 250], codes


def test_large_messages_over_tls(t):
    """600 KB (compared octet for octet) and 5 MB (too big for message show: its size is
    compared) over STARTTLS, many TLS records and read buffers each."""
    line = b"0123456789abcdef" * 4 + b"\r\n"
    medium = b"Subject: medium\r\n\r\n" + line * (600 * 1024 // len(line))  # show: 700 KB
    large = b"Subject: large\r\n\r\n" + line * (5 * 1024 * 1024 // len(line))
    before = count(t, DAVE)
    with mx(t, timeout=20) as c:
        c.ehlo()
        c.starttls()
        c.ehlo()
        assert transaction(c, f"big@{FAR}", [DAVE], medium)[0] == 250
        assert split_trace(newest(t, DAVE)[1])[1] == medium
        assert transaction(c, f"big@{FAR}", [DAVE], large)[0] == 250
    assert count(t, DAVE) == before + 2
    rec = max(messages(t, DAVE), key=lambda r: int(r["uid"]))
    assert 100 < int(rec["size"]) - len(large) < 2048, rec  # the trace headers


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "starttls"])
def test_big_pipelined_burst(t, tls):
    """Four 300 KB transactions in one write: more than the read buffer while the
    connection is held for each delivery."""
    line = b"x" * 78 + b"\r\n"
    msgs = [f"Subject: burst {i}\r\n\r\n".encode() + line * 3800 for i in range(4)]
    before = count(t, CAROL)
    with mx(t, timeout=20) as c:
        c.ehlo()
        if tls:
            c.starttls()
            c.ehlo()
        c.send(b"".join(f"MAIL FROM:<b@{FAR}>\r\nRCPT TO:<{CAROL}>\r\nDATA\r\n".encode()
                        + dot_stuff(m) for m in msgs) + b"QUIT\r\n")
        codes = [r[0] for r in c.replies(17)]
        assert codes == [250, 250, 354, 250] * 4 + [221], codes
    recs = sorted(messages(t, CAROL), key=lambda r: int(r["uid"]))
    assert len(recs) == before + 4
    for rec, m in zip(recs[-4:], msgs):
        assert split_trace(message_body(t, CAROL, rec["uid"]))[1] == m


def test_concurrent_clients(t):
    """Eight clients at once, three messages each, on the three listeners."""
    import threading

    n_clients, per = 8, 3
    before = count(t, BOB)
    errors = []

    def client(i):
        try:
            listener = ("smtp", "submission", "smtps")[i % 3]
            with RawSMTP(t.smtp_ports[listener], tls=listener == "smtps", timeout=20) as c:
                c.ehlo()
                if listener != "smtp":
                    login_raw(c, ALICE, PW["alice"])
                frm = f"c{i}@{FAR}" if listener == "smtp" else ALICE
                for j in range(per):
                    msg = simple_msg(f"concurrent {i}.{j}")
                    code, lines = transaction(c, frm, [BOB], msg)
                    assert code == 250, (code, lines)
        except Exception as e:  # reported below, in the test's thread
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n_clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads), "a client hung"
    assert not errors, errors
    recs = messages(t, BOB)
    assert len(recs) == before + n_clients * per
    subjects = set()
    for r in sorted(recs, key=lambda r: int(r["uid"]))[-n_clients * per:]:
        body = split_trace(message_body(t, BOB, r["uid"]))[1]
        subjects.add(re.search(rb"Subject: (concurrent \d+\.\d+)", body).group(1))
    assert len(subjects) == n_clients * per


def test_postmaster_without_domain(t):
    """RFC 5321 4.5.1: RCPT TO:<Postmaster> is postmaster of the node's own domain
    (node.hostname, an alias of alice here)."""
    before = count(t, ALICE)
    with mx(t) as c:
        c.ehlo()
        assert transaction(c, f"x@{FAR}", ["Postmaster"], simple_msg("to postmaster"))[0] == 250
    assert count(t, ALICE) == before + 1
    assert newest(t, ALICE)[0]["rcpt"] == f"postmaster@{DOM}"
