# tests/integration/test_smtp_durability.py
# "250 means durable" for SMTP, by killing ternd with SIGKILL: a message acknowledged with
# 250 is in the mailbox after a restart on the same data dir, whole; a message whose
# client was cut off before the 250 (ternd killed inside DATA, or between the final dot
# and the reply) is either absent or whole, never partial. One ternd per test.
import os
import signal
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
    user_usage,
)

DOM = "dur.test"
FAR = "far.example"
USER = f"keeper@{DOM}"
ROUNDS = 3
DELAYS = (0.0, 0.004, 0.03)  # seconds between the final dot and SIGKILL


@pytest.fixture(scope="module")
def t():
    """One ternd for the module; every test kills and restarts it (same data dir, same
    ports) and leaves it running."""
    need_binaries()
    c = Cluster()
    node = smtp_node(c).start()
    smtp_setup(node, DOM, {"keeper": "keeper-pw"})
    yield node
    c.close(keep=os.environ.get("TERN_KEEP_TMP"))


def stored(t):
    """{content as sent: count} of USER's INBOX."""
    out = {}
    for r in messages(t, USER):
        rest = split_trace(message_body(t, USER, r["uid"]))[1]
        out[rest] = out.get(rest, 0) + 1
    return out


def msg(tag, size=2000):
    line = (tag.encode() + b" ") * 8 + b"\r\n"
    return b"Subject: " + tag.encode() + b"\r\n\r\n" + line * (size // len(line))


def test_acked_message_survives_sigkill(t):
    base = stored(t)
    acked = []
    for i in range(ROUNDS):
        m = msg(f"round-{i}")
        with RawSMTP(t.smtp_ports["smtp"]) as c:
            c.ehlo()
            c.expect(f"MAIL FROM:<k@{FAR}>", 250)
            c.expect(f"RCPT TO:<{USER}>", 250)
            c.expect("DATA", 354)
            c.send(dot_stuff(m))
            code, lines = c.reply()
            assert code == 250, (code, lines)
            t.signal(signal.SIGKILL)  # at once: no chance to flush anything more
        acked.append(m)
        assert t.wait() == -signal.SIGKILL
        t.start()
        assert stored(t) == {**base, **{a: 1 for a in acked}}, f"after kill {i + 1}"


def test_pipelined_burst_killed_after_second_ack(t):
    """Five pipelined transactions; SIGKILL as soon as the second 250 arrives. After the
    restart every acknowledged message is there, and anything else is whole or absent."""
    base = stored(t)
    sent = [msg(f"burst-{i}", 20000) for i in range(5)]
    blob = b"".join(
        f"MAIL FROM:<k@{FAR}>\r\nRCPT TO:<{USER}>\r\nDATA\r\n".encode() + dot_stuff(m)
        for m in sent
    )
    acked = 0
    with RawSMTP(t.smtp_ports["smtp"]) as c:
        c.ehlo()
        c.send(blob)
        try:
            for i in range(len(sent)):
                assert [r[0] for r in c.replies(3)] == [250, 250, 354]
                code, _ = c.reply()
                assert code == 250
                acked += 1
                if acked == 2:
                    t.signal(signal.SIGKILL)
        except (SmtpClosed, ConnectionError, socket.timeout, TimeoutError):
            pass
    assert acked >= 2
    t.wait()
    t.start()
    got = stored(t)
    for m in base:
        got[m] -= base[m]
    got = {m: n for m, n in got.items() if n}
    for m in sent[:acked]:
        assert got.get(m) == 1, "an acknowledged message is missing"
    assert set(got) <= set(sent), "a stored message is not one that was sent (partial?)"
    assert all(n == 1 for n in got.values())


def test_sigkill_inside_data_leaves_nothing(t):
    before = stored(t)
    used = user_usage(t, USER)
    with RawSMTP(t.smtp_ports["smtp"]) as c:
        c.ehlo()
        c.expect(f"MAIL FROM:<k@{FAR}>", 250)
        c.expect(f"RCPT TO:<{USER}>", 250)
        c.expect("DATA", 354)
        m = msg("cut-off", 50000)
        c.send(m[:30000])
        assert c.quiet(0.2)
        t.signal(signal.SIGKILL)
        assert t.wait() == -signal.SIGKILL
        try:
            c.send(m[30000:] + b".\r\n")
            reply = c.reply()
        except (SmtpClosed, ConnectionError, socket.timeout, TimeoutError) as e:
            reply = e
        assert not isinstance(reply, tuple), f"a dead server answered {reply}"
    t.start()
    assert stored(t) == before
    assert user_usage(t, USER) == used


def test_sigkill_between_dot_and_reply(t):
    """Killed right after the client sent the final dot: whatever the client saw, the
    message is then either whole or absent, and present if it was acknowledged."""
    base = stored(t)
    outcomes = []
    for i in range(ROUNDS):
        m = msg(f"race-{i}")
        with RawSMTP(t.smtp_ports["smtp"]) as c:
            c.ehlo()
            c.expect(f"MAIL FROM:<k@{FAR}>", 250)
            c.expect(f"RCPT TO:<{USER}>", 250)
            c.expect("DATA", 354)
            c.send(dot_stuff(m))
            time.sleep(DELAYS[i % len(DELAYS)])  # land the kill at different moments
            t.signal(signal.SIGKILL)
            try:
                acked = c.reply()[0] == 250
            except (SmtpClosed, ConnectionError, socket.timeout, TimeoutError):
                acked = False
        t.wait()
        t.start()
        n = stored(t).get(m, 0)
        assert n in (0, 1)
        if acked:
            assert n == 1, "acknowledged but lost"
        outcomes.append((acked, n))
        assert set(stored(t)) - set(base) <= {msg(f"race-{j}") for j in range(i + 1)}
    print("(acked, stored) per round:", outcomes)
