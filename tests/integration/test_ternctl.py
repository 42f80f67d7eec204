# tests/integration/test_ternctl.py
# ternctl against a scripted admin socket (no ternd): what it sends (verb, args verbatim,
# the password only in its own field) and how it treats what comes back — refusals,
# unknown statuses, oversized or malformed frames, a hang-up — with the exit codes
# scripts rely on: 0 ok, 1 refused, 2 unavailable (naming the socket).
import os
import shutil
import socket
import struct
import threading

import pytest

from conftest import (
    _field,
    _read_varint,
    _varint,
    fresh_workdir,
    need_binaries,
    run_ctl,
)


def decode_request(buf):
    """tern.AdminRequest -> (verb, args, password or None)."""
    verb, args, pw, i = None, [], None, 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        assert key & 7 == 2, f"unexpected wire type in {buf!r}"
        n, i = _read_varint(buf, i)
        data = bytes(buf[i : i + n])
        i += n
        if key >> 3 == 1:
            verb = data.decode()
        elif key >> 3 == 2:
            args.append(data.decode())
        elif key >> 3 == 3:
            pw = data
    return verb, args, pw


def response(status, error=None, lines=()):
    msg = _varint(1 << 3) + _varint(status & 0xFFFFFFFFFFFFFFFF)
    if error is not None:
        msg += _field(2, error.encode())
    for l in lines:
        msg += _field(3, l.encode())
    return struct.pack(">I", len(msg)) + msg


class FakeAdmin:
    """Answers each connection's first request with REPLY (bytes, or None: hang up).
    Records the decoded requests."""

    def __init__(self, path):
        self.path = str(path)
        self.reply = response(0)
        self.requests = []
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.path)
        self.srv.listen(8)
        self.srv.settimeout(0.2)
        self.stop = threading.Event()
        self.th = threading.Thread(target=self.serve, daemon=True)
        self.th.start()

    def serve(self):
        while not self.stop.is_set():
            try:
                c, _ = self.srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with c:
                c.settimeout(5)
                try:
                    hdr = self.read(c, 4)
                    body = self.read(c, struct.unpack(">I", hdr)[0])
                    self.requests.append(decode_request(body))
                    if self.reply is not None:
                        c.sendall(self.reply)
                except (OSError, ValueError):
                    pass

    @staticmethod
    def read(c, n):
        buf = b""
        while len(buf) < n:
            chunk = c.recv(n - len(buf))
            if not chunk:
                raise ValueError("closed")
            buf += chunk
        return buf

    def close(self):
        self.stop.set()
        self.srv.close()
        self.th.join(timeout=2)


@pytest.fixture
def fake():
    need_binaries()
    d = fresh_workdir()
    f = FakeAdmin(d / "admin.sock")
    yield f
    f.close()
    shutil.rmtree(d, ignore_errors=True)


def test_verb_and_args_verbatim(fake):
    fake.reply = response(0, lines=["id=7 address=a@b.test"])
    r = run_ctl(fake.path, "user", "add", "a@b.test", "--password-stdin", "quota_bytes=1000",
                stdin=b"s3cret pass\r\n")
    assert r.rc == 0 and r.lines == ["id=7 address=a@b.test"], repr(r)
    assert fake.requests == [("user.add", ["a@b.test", "quota_bytes=1000"], b"s3cret pass")]


def test_commands_map_to_verbs(fake):
    cases = [
        (["status"], ("status", [], None)),
        (["domain", "list"], ("domain.list", [], None)),
        (["alias", "add", "@d.test", "x@d.test,y@d.test"],
         ("alias.add", ["@d.test", "x@d.test,y@d.test"], None)),
        (["mailbox", "rename", "u@d.test", "Old Name", "New/Name"],
         ("mailbox.rename", ["u@d.test", "Old Name", "New/Name"], None)),
        (["mailbox", "subscribe", "u@d.test", "Junk", "off"],
         ("mailbox.subscribe", ["u@d.test", "Junk", "off"], None)),
        (["user", "quota", "u@d.test", "10m", "500"], ("user.quota", ["u@d.test", "10m", "500"],
                                                       None)),
    ]
    for argv, want in cases:
        fake.requests.clear()
        r = run_ctl(fake.path, *argv)
        assert r.rc == 0, repr(r)
        assert fake.requests == [want]


def test_verify_sends_password_once_and_prints_ok(fake):
    fake.reply = response(0, lines=["ok"])
    r = run_ctl(fake.path, "user", "verify", "u@d.test", password="pw")
    assert (r.rc, r.out) == (0, "ok\n")
    assert fake.requests == [("user.verify", ["u@d.test"], b"pw")]


def test_refused_is_exit_1_with_message(fake):
    fake.reply = response(1, "u@d.test exists")
    r = run_ctl(fake.path, "domain", "add", "d.test")
    assert r.rc == 1 and r.err == "ternctl: u@d.test exists\n", repr(r)


def test_unavailable_is_exit_2(fake):
    fake.reply = response(2, "not committed: shutting down")
    r = run_ctl(fake.path, "domain", "list")
    assert r.rc == 2 and "not committed" in r.err, repr(r)


@pytest.mark.parametrize(
    "reply",
    [
        response(7),  # a status the protocol does not know
        struct.pack(">I", 2 * 1024 * 1024),  # announces a frame over FRAME_ADMIN_MAX
        struct.pack(">I", 3) + b"\xff\xff\xff",  # not a protobuf message
        struct.pack(">I", 100) + b"short",  # hang-up inside a frame
        None,  # hang-up before any answer
        response(0)[:-1],  # truncated
    ],
    ids=["unknown-status", "oversized", "garbage", "short-frame", "hangup", "truncated"],
)
def test_protocol_errors_are_exit_2_naming_socket(fake, reply):
    fake.reply = reply
    r = run_ctl(fake.path, "status", timeout=10)
    assert r.rc == 2, repr(r)
    assert fake.path in r.err, repr(r)


def test_control_bytes_never_reach_the_terminal(fake):
    fake.reply = response(1, "bad \x1b]0;owned\x07 name", ["mailbox=\x1b[31mred id=1"])
    r = run_ctl(fake.path, "mailbox", "list", "u@d.test")
    assert r.rc == 1
    assert "\x1b" not in r.out + r.err and "\x07" not in r.err, repr(r)


def test_password_stdin_only_for_password_commands(fake):
    r = run_ctl(fake.path, "domain", "list", "--password-stdin", stdin=b"x\n")
    assert r.rc == 1, repr(r)
    assert fake.requests == []


def test_no_request_on_usage_error(fake):
    for argv in (["user", "add"], ["user", "show", "a", "b"], ["mailbox", "rename", "u", "x"],
                 ["user", "add", "a@b.test", "--password=x"]):
        r = run_ctl(fake.path, *argv, stdin=b"pw\n")
        assert r.rc == 1, repr(r)
    assert fake.requests == []


def test_socket_from_environment(fake):
    r = run_ctl(None, "status", env={**os.environ, "TERN_ADMIN_SOCKET": fake.path})
    assert r.rc == 0, repr(r)
    assert fake.requests == [("status", [], None)]
