# tests/integration/test_smtp_proxy.py
# The PROXY protocol (HAProxy proxy-protocol.txt v1 and v2) in front of SMTP. A ternd with
# net.proxy_trusted=127.0.0.1 must read the header before anything else and then treat
# the address it carries as the client's: in the logs (peer=), in EHLO and in the Received
# header of the stored message. A trusted peer that sends no header, or a bad one, is
# dropped without a greeting. A ternd that trusts nobody drops a client that sends a
# header, and nothing it pipelined after the header is delivered.
import os
import socket
import struct
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
)

DOM = "proxy.test"
FAR = "far.example"
USER = f"pat@{DOM}"
PROXY_TIMEOUT = 5.0  # NET_PROXY_TIMEOUT in proxy/net/net.h


def _node(sets):
    need_binaries()
    c = Cluster()
    t = smtp_node(c, sets=sets).start()
    smtp_setup(t, DOM, {"pat": "pat-pw"})
    return c, t


@pytest.fixture(scope="module")
def trusted():
    c, t = _node(["--set", "net.proxy_trusted=127.0.0.1"])
    # a trusted peer that never sends its header: opened now, judged by the last test of
    # the module, so that the PROXY timeout runs while the other tests do
    t.silent = RawSMTP(t.smtp_ports["smtp"], greet=False, timeout=PROXY_TIMEOUT + 3)
    t.silent_since = time.monotonic()
    yield t
    t.silent.close()
    c.close(keep=os.environ.get("TERN_KEEP_TMP"))


@pytest.fixture(scope="module")
def untrusted():
    c, t = _node([])
    yield t
    c.close(keep=os.environ.get("TERN_KEEP_TMP"))


def v1(src, dst="127.0.0.1", sport=5555, dport=25, fam="TCP4"):
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()


V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(src, dst="127.0.0.1", sport=5555, dport=25, tlvs=b""):
    if ":" in src:
        fam, a = 0x21, socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    else:
        fam, a = 0x11, socket.inet_aton(src) + socket.inet_aton(dst)
    body = a + struct.pack(">HH", sport, dport) + tlvs
    return V2_SIG + bytes([0x21, fam]) + struct.pack(">H", len(body)) + body


def v2_local():
    return V2_SIG + bytes([0x20, 0x00]) + struct.pack(">H", 0)


def deliver(c, subject):
    c.expect(f"MAIL FROM:<p@{FAR}>", 250)
    c.expect(f"RCPT TO:<{USER}>", 250)
    c.expect("DATA", 354)
    c.send(dot_stuff(f"Subject: {subject}\r\n\r\nvia a proxy\r\n".encode()))
    code, lines = c.reply()
    assert code == 250, (code, lines)
    return lines[0].split()[-1].rsplit("-", 1)[0]  # the session id


def newest_trace(t):
    rec = max(messages(t, USER), key=lambda r: int(r["uid"]))
    return split_trace(message_body(t, USER, rec["uid"]))[0].decode()


def log_lines(t, sid):
    return [l for l in t.log().splitlines() if f"sid={sid}" in l]


@pytest.mark.parametrize(
    "header,client",
    [
        (v1("203.0.113.7"), "203.0.113.7"),
        (v2("198.51.100.9"), "198.51.100.9"),
        (v1("2001:db8::7", "2001:db8::1", fam="TCP6"), "2001:db8::7"),
        (v2("2001:db8::8", "2001:db8::1"), "2001:db8::8"),
        (v2("192.0.2.44", tlvs=b"\x04\x00\x03abc"), "192.0.2.44"),  # a TLV (NOOP type)
    ],
    ids=["v1-tcp4", "v2-tcp4", "v1-tcp6", "v2-tcp6", "v2-tlv"],
)
def test_header_sets_client_address(trusted, header, client):
    with RawSMTP(trusted.smtp_ports["smtp"], prefix=header) as c:
        assert c.greeting[0] == 220
        code, lines = c.cmd("EHLO client.test")
        assert code == 250 and f"[{client}]" in lines[0], lines
        sid = deliver(c, f"proxied {client}")
    assert f"([{client}])" in newest_trace(trusted)
    lines = log_lines(trusted, sid)
    assert any("event=smtp.delivered" in l and f"peer={client} " in l for l in lines), lines
    assert any("event=proxy.header" in l and "via=127.0.0.1" in l for l in lines), lines
    assert not any("peer=127.0.0.1" in l for l in lines if "event=net.connect" not in l), lines


def test_v2_local_keeps_socket_address(trusted):
    with RawSMTP(trusted.smtp_ports["smtp"], prefix=v2_local()) as c:
        code, lines = c.cmd("EHLO health.test")
        assert code == 250 and "[127.0.0.1]" in lines[0], lines


def test_header_and_commands_in_one_packet(trusted):
    n = len(messages(trusted, USER))
    with RawSMTP(trusted.smtp_ports["smtp"], greet=False) as c:
        c.send(v1("203.0.113.8") + b"EHLO one.test\r\n" + f"MAIL FROM:<p@{FAR}>\r\n".encode()
               + f"RCPT TO:<{USER}>\r\nDATA\r\n".encode())
        codes = [r[0] for r in c.replies(5)]
        assert codes == [220, 250, 250, 250, 354], codes
        c.send(b"Subject: one packet\r\n\r\nx\r\n.\r\nQUIT\r\n")
        assert [r[0] for r in c.replies(2)] == [250, 221]
    assert len(messages(trusted, USER)) == n + 1
    assert "([203.0.113.8])" in newest_trace(trusted)


def test_header_split_across_packets(trusted):
    h = v2("192.0.2.99")
    with RawSMTP(trusted.smtp_ports["smtp"], greet=False) as c:
        for part in (h[:5], h[5:14], h[14:20], h[20:]):
            c.send(part)
            time.sleep(0.05)
        assert c.reply()[0] == 220
        code, lines = c.cmd("EHLO split.test")
        assert "[192.0.2.99]" in lines[0], lines


def test_header_then_implicit_tls(trusted):
    n = len(messages(trusted, USER))
    with RawSMTP(trusted.smtp_ports["smtps"], prefix=v1("203.0.113.9", dport=465), tls=True) as c:
        code, lines = c.cmd("EHLO tls.test")
        assert "[203.0.113.9]" in lines[0], lines
        c.expect(f"MAIL FROM:<{USER}>", 530)  # submission: still needs AUTH
    with RawSMTP(trusted.smtp_ports["submission"], prefix=v2("203.0.113.10", dport=587)) as c:
        c.ehlo()
        c.starttls()
        code, lines = c.cmd("EHLO tls.test")
        assert "[203.0.113.10]" in lines[0], lines
    assert len(messages(trusted, USER)) == n


BAD_HEADERS = [
    b"EHLO client.test\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"PROXY TCP4 203.0.113.7 127.0.0.1 5555\r\n",
    b"PROXY TCP4 203.0.113.700 127.0.0.1 5555 25\r\n",
    b"PROXY TCP6 203.0.113.7 127.0.0.1 5555 25\r\n",
    b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 25\n",
    b"PROXY TCP4 203.0.113.7 127.0.0.1 05555 25\r\n",
    b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 25 " + b"x" * 120 + b"\r\n",
    b"proxy TCP4 203.0.113.7 127.0.0.1 5555 25\r\n",
    V2_SIG + bytes([0x31, 0x11]) + struct.pack(">H", 12) + b"\0" * 12,  # version 3
    V2_SIG + bytes([0x21, 0x11]) + struct.pack(">H", 4) + b"\0" * 4,  # short address block
    V2_SIG + bytes([0x21, 0x11]) + struct.pack(">H", 60000) + b"\0" * 100,  # too long
    v2("192.0.2.1", tlvs=b"\x04\x00\x09abc"),  # TLV longer than the header
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
]


@pytest.mark.parametrize("data", BAD_HEADERS, ids=range(len(BAD_HEADERS)))
def test_bad_header_closes_without_greeting(trusted, data):
    n = len(messages(trusted, USER))
    with RawSMTP(trusted.smtp_ports["smtp"], greet=False, timeout=PROXY_TIMEOUT + 3) as c:
        start = time.monotonic()
        c.send(data + f"EHLO x\r\nMAIL FROM:<p@{FAR}>\r\nRCPT TO:<{USER}>\r\n".encode())
        assert c.closed()
        assert c.buf == b"", f"answered after a bad header: {c.buf!r}"
        assert time.monotonic() - start < PROXY_TIMEOUT - 1, "closed only by the timeout"
    assert len(messages(trusted, USER)) == n


# ---- a ternd that trusts nobody ----


@pytest.mark.parametrize("header", [v1("203.0.113.7"), v2("203.0.113.7")], ids=["v1", "v2"])
def test_untrusted_header_disconnects(untrusted, header):
    n = len(messages(untrusted, USER))
    with RawSMTP(untrusted.smtp_ports["smtp"]) as c:  # the greeting comes first here
        assert c.greeting[0] == 220
        c.send(header + f"EHLO x\r\nMAIL FROM:<p@{FAR}>\r\nRCPT TO:<{USER}>\r\nDATA\r\n".encode()
               + b"Subject: smuggled via header\r\n\r\nx\r\n.\r\n")
        assert c.closed()
        assert c.buf == b"", f"answered after an untrusted header: {c.buf!r}"
    assert len(messages(untrusted, USER)) == n
    assert "event=proxy.untrusted" in untrusted.log()
    assert "203.0.113.7" not in untrusted.log()


def test_untrusted_header_not_honoured_when_split(untrusted):
    """A header split over two reads is then only an unknown command: it may be
    answered 500 or the client dropped, but the address in it is never used."""
    with RawSMTP(untrusted.smtp_ports["smtp"]) as c:
        h = v1("203.0.113.77")
        c.send(h[:3])
        time.sleep(0.1)
        c.send(h[3:])
        try:
            code, _ = c.reply()
        except SmtpClosed:
            code = None  # dropped: fine
        if code is not None:
            assert code >= 500
            code, lines = c.cmd("EHLO x")
            assert "[127.0.0.1]" in lines[0], lines
    assert "203.0.113.77" not in untrusted.log()


# ---- last: the silent trusted peer opened by the fixture ----


def test_missing_header_times_out(trusted):
    """(Kept last in the module: see the trusted fixture.)"""
    c = trusted.silent
    assert c.closed(timeout=max(0.1, trusted.silent_since + PROXY_TIMEOUT + 3 - time.monotonic())), \
        "still open long after the PROXY timeout"
    elapsed = time.monotonic() - trusted.silent_since
    assert c.buf == b"", f"greeted without a PROXY header: {c.buf!r}"
    assert elapsed >= PROXY_TIMEOUT - 0.5, f"closed after {elapsed:.1f}s"
    assert "event=proxy.timeout" in trusted.log()
