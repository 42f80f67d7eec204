# tests/integration/conftest.py
# Fixtures for the pytest integration suite: real ternd processes on loopback ports, driven
# through the real ternctl. Binaries come from $TERN_BUILD_DIR (default <repo>/build).
# Every ternd gets a short private data dir under /tmp, its own raft.address and its own
# port for every ADDR key of node/config_keys.def, so suites can run side by side. Every
# wait is bounded; every process started here is killed (by pid) at teardown.
import os
import re
import signal
import socket
import struct
import subprocess
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("TERN_BUILD_DIR", REPO / "build"))
TERND = Path(os.environ.get("TERND_BIN", BUILD / "proxy" / "ternd"))
TERNCTL = Path(os.environ.get("TERNCTL_BIN", BUILD / "ops" / "ternctl"))
CONFIG_KEYS = REPO / "node" / "config_keys.def"

READY_TIMEOUT = 15.0  # ternd start -> admin socket answers role=leader
STOP_TIMEOUT = 10.0  # SIGTERM -> exit, before SIGKILL
# A sanitizer build (make test SAN=1 builds into build-san/): nodes still running at the end
# of a test are stopped with SIGTERM, not SIGKILL, so that LeakSanitizer runs at exit, and
# every ternd log is searched for sanitizer reports, which fail the test.
SANITIZED = os.environ.get("TERN_SAN") == "1" or BUILD.name.endswith("-san")
SAN_REPORTS = (b"ERROR: AddressSanitizer", b"ERROR: LeakSanitizer", b"runtime error:",
               b"WARNING: ThreadSanitizer")
CTL_TIMEOUT = 35.0  # ternctl gives up by itself after 30 s
SUN_PATH_MAX = 107  # sockaddr_un.sun_path minus the NUL

FRAME_ADMIN_MAX = 1024 * 1024  # node/frame.h

# ---------------------------------------------------------------------------------------
# processes and ports

_procs = []  # every Popen started here, killed at teardown if still running
_procs_lock = threading.Lock()
_ports_used = set()


def _track(proc):
    with _procs_lock:
        _procs.append(proc)
    return proc


def kill_leftovers():
    """SIGKILL every process this suite started that still runs (its own group only)."""
    with _procs_lock:
        procs = list(_procs)
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # started with start_new_session
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago and not handed out before here."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_used:
            _ports_used.add(port)
            return port
    raise RuntimeError("no free port")


def addr_keys():
    """Every section.key of type ADDR with a non-empty default, from config_keys.def."""
    text = CONFIG_KEYS.read_text()
    keys = re.findall(r'CONFIG_KEY\(\s*(\w+)\s*,\s*(\w+)\s*,\s*ADDR\s*,\s*"([^"]*)"', text)
    return [f"{sec}.{key}" for sec, key, default in keys if default]


def port_sets():
    """--set arguments giving raft.address and every listener a fresh loopback port."""
    args = []
    for key in addr_keys():
        args += ["--set", f"{key}=127.0.0.1:{free_port()}"]
    return args


def need_binaries():
    for b in (TERND, TERNCTL):
        if not b.exists():
            pytest.fail(f"{b} not built (cmake -S {REPO} -B {BUILD} && cmake --build {BUILD})")


# ---------------------------------------------------------------------------------------
# key=value output


def parse_kv(line):
    """'a=1 b= c="x y"' -> {'a': '1', 'b': '', 'c': 'x y'}. Backslashes are kept as they
    are (special_use=\\Sent); double quotes group a value with spaces."""
    out = {}
    for tok in re.findall(r'(?:[^\s"]|"[^"]*")+', line):
        key, eq, val = tok.partition("=")
        if len(val) >= 2 and val[0] == '"' and val[-1] == '"':
            val = val[1:-1]
        out[key] = val if eq else None
    return out


class CtlResult:
    def __init__(self, argv, proc):
        self.argv = argv
        self.rc = proc.returncode
        self.raw = proc.stdout  # the bytes as written (message show is not text)
        self.out = proc.stdout.decode("utf-8", "replace")
        self.err = proc.stderr.decode("utf-8", "replace")
        self.lines = [l for l in self.out.split("\n") if l]
        self.records = [parse_kv(l) for l in self.lines]

    def __repr__(self):
        return f"<ternctl {self.argv[1:]} rc={self.rc} out={self.out!r} err={self.err!r}>"

    def ok(self):
        assert self.rc == 0, repr(self)
        return self


def run_ctl(sock, *args, password=None, stdin=None, timeout=CTL_TIMEOUT, env=None):
    """Runs ternctl --socket SOCK ARGS. PASSWORD (str) is given with --password-stdin.
    ternctl runs in a session of its own: it has no /dev/tty, so it can never block on
    the terminal of whoever runs the tests."""
    argv = [str(TERNCTL)]
    if sock is not None:
        argv += ["--socket", str(sock)]
    argv += [str(a) for a in args]
    if password is not None:
        argv.append("--password-stdin")
        stdin = (password + "\n").encode()
    proc = subprocess.run(
        argv,
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=timeout,
        start_new_session=True,
        env=env,
    )
    return CtlResult(argv, proc)


# ---------------------------------------------------------------------------------------
# ternd


class Ternd:
    """One ternd on DATA_DIR. Ports are chosen once, so a restart reuses them. With BARE,
    the command line is only --config CONFIG: the file must say everything."""

    _count = 0

    def __init__(self, workdir, data_dir=None, sets=(), config=None, ports=None, bare=False):
        Ternd._count += 1
        self.n = Ternd._count
        self.workdir = Path(workdir)
        self.data_dir = Path(data_dir or self.workdir / "data")
        self.sock = self.data_dir / "admin.sock"
        self.config = config
        self.bare = bare
        self.ports = list(ports) if ports is not None else port_sets()
        self.sets = list(sets)
        if len(str(self.sock)) > SUN_PATH_MAX:  # keep the default unless it cannot work
            self.sock = self.workdir / f"admin{self.n}.sock"
            self.sets += ["--set", f"node.admin_socket={self.sock}"]
        self.proc = None
        self.log_path = None
        self.starts = 0

    def argv(self):
        argv = [str(TERND)]
        if self.config:
            argv += ["--config", str(self.config)]
        if self.bare:
            return argv
        return argv + ["--data", str(self.data_dir)] + self.ports + self.sets

    def start(self, wait=True):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.log_path = self.workdir / f"ternd{self.n}.{self.starts}.log"
        log = open(self.log_path, "wb")
        self.proc = _track(
            subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.workdir,
            )
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def log(self):
        try:
            return self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""

    def log_tail(self, n=30):
        return "\n".join(self.log().splitlines()[-n:])

    def wait_ready(self, timeout=READY_TIMEOUT):
        """Waits until the admin socket answers status with role=leader."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                pytest.fail(f"ternd exited with {rc} before ready:\n{self.log_tail()}")
            if self.sock.exists():
                left = max(0.5, min(5.0, deadline - time.monotonic()))
                try:
                    last = run_ctl(self.sock, "status", timeout=left)
                    if last.rc == 0 and last.records and last.records[0].get("role") == "leader":
                        return last.records[0]
                except subprocess.TimeoutExpired:
                    last = "ternctl status timed out"
            time.sleep(0.05)
        pytest.fail(f"ternd not ready within {timeout}s (last: {last!r}):\n{self.log_tail()}")

    def ctl(self, *args, **kw):
        return run_ctl(self.sock, *args, **kw)

    def status(self):
        r = self.ctl("status").ok()
        return r.records[0]

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.running():
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout=STOP_TIMEOUT):
        """Exit code, or None if still running after TIMEOUT."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, then SIGKILL after TIMEOUT. Returns the exit code (negative: signal)."""
        if self.proc is None:
            return None
        self.signal(signal.SIGTERM)
        rc = self.wait(timeout)
        if rc is None:
            self.kill()
            pytest.fail(f"ternd ignored SIGTERM for {timeout}s:\n{self.log_tail()}")
        return rc

    def kill(self):
        """SIGKILL and reap."""
        if self.proc is None:
            return None
        self.signal(signal.SIGKILL)
        return self.wait(timeout=STOP_TIMEOUT)


def fresh_workdir():
    """A short private directory (sun_path is 108 bytes; pytest's tmp_path can be long)."""
    return Path(tempfile.mkdtemp(prefix="tern-it-"))


class Cluster:
    """Creates Ternd objects in one work dir and cleans all of them up."""

    def __init__(self):
        self.workdir = fresh_workdir()
        self.nodes = []

    def node(self, **kw):
        sub = self.workdir / f"n{len(self.nodes) + 1}"
        sub.mkdir()
        t = Ternd(sub, **kw)
        self.nodes.append(t)
        return t

    def close(self, keep):
        for t in self.nodes:
            if t.running() and SANITIZED:
                t.signal(signal.SIGTERM)
                if t.wait(STOP_TIMEOUT) is None:
                    t.kill()
            elif t.running():
                t.kill()
        reports = self.sanitizer_reports()
        keep = keep or bool(reports)
        if keep:
            print(f"\nkept {self.workdir} (ternd logs: ternd*.log)")
            for t in self.nodes:
                print(f"--- {t.log_path}\n{t.log_tail(20)}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if reports:
            pytest.fail("sanitizer reports in ternd logs (kept in %s):\n%s"
                        % (self.workdir, "\n".join(reports)))

    def sanitizer_reports(self):
        """The lines of every ternd log under the work dir that report a sanitizer error."""
        found = []
        for log in sorted(self.workdir.rglob("*.log")):
            try:
                data = log.read_bytes()
            except OSError:
                continue
            for line in data.splitlines():
                if any(p in line for p in SAN_REPORTS):
                    found.append(f"{log.name}: {line.decode(errors='replace')}")
        return found[:50]


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request):
    rep = getattr(request.node, "rep_call", None)
    return rep is not None and rep.failed


@pytest.fixture
def cluster(request):
    """Per-test factory of ternd processes: cluster.node(sets=[...]).start()."""
    need_binaries()
    c = Cluster()
    yield c
    c.close(keep=_failed(request) or os.environ.get("TERN_KEEP_TMP"))


@pytest.fixture
def ternd(cluster):
    """A fresh, ready ternd for one test."""
    return cluster.node().start()


@pytest.fixture(scope="module")
def shared_ternd(request):
    """One ready ternd shared by a module's tests (they use distinct names)."""
    need_binaries()
    c = Cluster()
    t = c.node().start()
    yield t
    c.close(keep=os.environ.get("TERN_KEEP_TMP"))


@pytest.fixture(scope="session", autouse=True)
def _reaper():
    yield
    kill_leftovers()


# ---------------------------------------------------------------------------------------
# the admin protocol by hand (for tests that send bytes ternctl never would)


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num, data):
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def encode_request(verb, args=(), password=None):
    """A packed tern.AdminRequest (node/proto/admin.proto)."""
    msg = _field(1, verb.encode())
    for a in args:
        msg += _field(2, a.encode() if isinstance(a, str) else a)
    if password is not None:
        msg += _field(3, password)
    return msg


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def _read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def decode_response(buf):
    """tern.AdminResponse -> (status, error, lines)."""
    status, error, lines, i = None, None, [], 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, i = _read_varint(buf, i)
            if num == 1:
                status = val - (1 << 64) if val >= 1 << 63 else val
        elif wt == 2:
            ln, i = _read_varint(buf, i)
            data = bytes(buf[i : i + ln])
            i += ln
            if num == 2:
                error = data.decode("utf-8", "replace")
            elif num == 3:
                lines.append(data.decode("utf-8", "replace"))
        else:
            raise ValueError(f"unexpected wire type {wt}")
    return status, error, lines


class RawAdmin:
    """A raw connection to the admin socket, with every read bounded."""

    def __init__(self, path, timeout=5.0):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(str(path))

    def send(self, data):
        self.s.sendall(data)

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                return None  # closed
            buf += chunk
        return buf

    def response(self):
        """(status, error, lines), or None when the server closed the connection."""
        hdr = self.recv_exact(4)
        if hdr is None:
            return None
        (n,) = struct.unpack(">I", hdr)
        assert n <= FRAME_ADMIN_MAX, f"response frame of {n} bytes"
        body = self.recv_exact(n)
        assert body is not None, "connection closed inside a response frame"
        return decode_response(body)

    def call(self, verb, args=(), password=None):
        self.send(frame(encode_request(verb, args, password)))
        return self.response()

    def closed(self):
        """True when the server has closed its end (EOF within the timeout)."""
        try:
            return self.s.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True

    def close(self):
        self.s.close()


# ---------------------------------------------------------------------------------------
# small helpers for tests


def wait_until(pred, timeout, interval=0.05):
    """Polls PRED until it returns something true (returned) or TIMEOUT passes (None)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def mailbox_names(t, user):
    r = t.ctl("mailbox", "list", user).ok()
    return {rec["mailbox"] for rec in r.records if "mailbox" in rec}


def user_addresses(t, domain=None):
    r = t.ctl("user", "list", *([domain] if domain else [])).ok()
    return {rec["address"] for rec in r.records if "address" in rec}


# ---------------------------------------------------------------------------------------
# SMTP: a ternd with the SMTP listeners, a raw client, and what the store holds

SMTP_LISTENERS = ("smtp", "submission", "smtps")
SMTP_TIMEOUT = 5.0  # every socket operation of RawSMTP


def smtp_port_sets():
    """(--set arguments, {listener: port}): fresh loopback ports for raft.address, every
    other ADDR key but listen.*, and the three SMTP listeners; every other listener off."""
    args, ports = [], {}
    for key in addr_keys():
        sec, _, name = key.partition(".")
        if sec != "listen":
            args += ["--set", f"{key}=127.0.0.1:{free_port()}"]
        elif name in SMTP_LISTENERS:
            ports[name] = free_port()
            args += ["--set", f"{key}=127.0.0.1:{ports[name]}"]
        else:
            args += ["--set", f"{key}="]
    return args, ports


def smtp_node(cluster, sets=(), **kw):
    """An unstarted Ternd of CLUSTER with the SMTP listeners; t.smtp_ports maps
    smtp/submission/smtps to their ports (kept across restarts)."""
    args, ports = smtp_port_sets()
    t = cluster.node(ports=args, sets=list(sets), **kw)
    t.smtp_ports = ports
    return t


def tls_client_context():
    """TLS for tests: ternd's certificate is self-signed, so no verification."""
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class SmtpClosed(Exception):
    """The server closed the connection (EOF or reset) where a reply was expected."""


class RawSMTP:
    """An SMTP client that sends exactly the bytes it is given. Every read is bounded by
    TIMEOUT; replies are (code, [text lines]) with the code an int."""

    def __init__(self, port, host="127.0.0.1", tls=False, timeout=SMTP_TIMEOUT, greet=True,
                 prefix=b""):
        self.timeout = timeout
        self.s = socket.create_connection((host, port), timeout=timeout)
        self.s.settimeout(timeout)
        if prefix:  # a PROXY header, before anything else
            self.s.sendall(prefix)
        if tls:
            self.s = tls_client_context().wrap_socket(self.s, server_hostname="localhost")
            self.s.settimeout(timeout)
        self.buf = b""
        self.greeting = self.reply() if greet else None

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.s.sendall(data)

    def _fill(self):
        try:
            chunk = self.s.recv(65536)
        except (ConnectionResetError, BrokenPipeError) as e:
            raise SmtpClosed(str(e)) from e
        if not chunk:
            raise SmtpClosed("EOF")
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            assert len(self.buf) < 1 << 20, "reply line without CRLF"
            self._fill()
        ln, _, self.buf = self.buf.partition(b"\r\n")
        return ln.decode("utf-8", "replace")

    def reply(self):
        """One (possibly multi-line) reply."""
        lines = []
        while True:
            ln = self.line()
            assert len(ln) >= 3 and ln[:3].isdigit(), f"not a reply line: {ln!r}"
            lines.append(ln[4:])
            if len(ln) == 3 or ln[3] == " ":
                return int(ln[:3]), lines
            assert ln[3] == "-", f"bad reply line: {ln!r}"

    def replies(self, n):
        return [self.reply() for _ in range(n)]

    def cmd(self, line):
        """Sends LINE + CRLF and returns the reply."""
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def expect(self, line, code, text=None):
        """Sends LINE, asserts the reply code (and that TEXT is in the first line)."""
        got = self.cmd(line)
        assert got[0] == code, f"{line!r}: expected {code}, got {got}"
        if text is not None:
            assert text in got[1][0], f"{line!r}: expected {text!r} in {got}"
        return got

    def ehlo(self, name="client.test"):
        code, lines = self.cmd(f"EHLO {name}")
        assert code == 250, (code, lines)
        return [l.upper() for l in lines[1:]]

    def starttls(self):
        self.expect("STARTTLS", 220)
        assert self.buf == b"", f"server sent {self.buf!r} after 220 to STARTTLS"
        self.s = tls_client_context().wrap_socket(self.s, server_hostname="localhost")
        self.s.settimeout(self.timeout)

    def quiet(self, timeout=0.5):
        """True when the server sends nothing (and does not close) for TIMEOUT seconds."""
        if self.buf:
            return False
        self.s.settimeout(timeout)
        try:
            chunk = self.s.recv(65536)
            self.buf += chunk
            return False
        except (socket.timeout, TimeoutError):
            return True
        except OSError:
            return False
        finally:
            try:
                self.s.settimeout(self.timeout)
            except OSError:
                pass

    def closed(self, timeout=None):
        """True when the server closes the connection within TIMEOUT (default: the
        client's): EOF or reset, with anything it sent before that thrown away."""
        self.s.settimeout(timeout if timeout is not None else self.timeout)
        try:
            while True:
                chunk = self.s.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except (socket.timeout, TimeoutError):
            return False
        except OSError:  # TLS: an abrupt close shows as an SSL error
            return True
        finally:
            try:
                self.s.settimeout(self.timeout)
            except OSError:
                pass

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def messages(t, user, mailbox="INBOX"):
    """message list USER MAILBOX as a list of dicts (uid, size, body, from, rcpt...)."""
    return [r for r in t.ctl("message", "list", user, mailbox).ok().records if "uid" in r]


def message_body(t, user, uid, mailbox="INBOX"):
    """The stored octets of one message."""
    return t.ctl("message", "show", user, mailbox, uid).ok().raw


TRACE_RE = re.compile(
    rb"Return-Path: <[^>\r\n]*>\r\nReceived: [^\r\n]*\r\n(?:\t[^\r\n]*\r\n)+"
)


def split_trace(body):
    """(trace headers, the rest) of a stored message: ternd prepends Return-Path and a
    folded Received header to what the client sent."""
    m = TRACE_RE.match(body)
    assert m, f"stored message does not start with Return-Path/Received: {body[:300]!r}"
    return body[: m.end()], body[m.end() :]


def smtp_setup(t, domain, users, aliases=()):
    """Creates DOMAIN, the users {local: password} and the aliases [(alias, targets)]."""
    t.ctl("domain", "add", domain).ok()
    for local, pw in users.items():
        t.ctl("user", "add", f"{local}@{domain}", password=pw).ok()
    for alias, targets in aliases:
        t.ctl("alias", "add", alias, targets).ok()


def dot_stuff(msg):
    """MSG (bytes ending in CRLF) as DATA sends it: a '.' doubled at the start of each
    line, then the terminating '.' CRLF."""
    assert msg.endswith(b"\r\n")
    lines = msg.split(b"\r\n")[:-1]
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines) + b".\r\n"


def user_usage(t, addr):
    """(used_bytes, used_messages) from user show."""
    rec = t.ctl("user", "show", addr).ok().records[0]
    return int(rec["used_bytes"]), int(rec["used_messages"])


# ---------------------------------------------------------------------------------------
# IMAP: a ternd with the SMTP and IMAP listeners, and a raw IMAP client

IMAP_LISTENERS = ("imap", "imaps")
IMAP_TIMEOUT = 10.0  # every socket operation of RawIMAP and of imap_client()


def imap_port_sets(listeners=SMTP_LISTENERS + IMAP_LISTENERS):
    """(--set arguments, {listener: port}): like smtp_port_sets(), with LISTENERS on."""
    args, ports = [], {}
    for key in addr_keys():
        sec, _, name = key.partition(".")
        if sec != "listen":
            args += ["--set", f"{key}=127.0.0.1:{free_port()}"]
        elif name in listeners:
            ports[name] = free_port()
            args += ["--set", f"{key}=127.0.0.1:{ports[name]}"]
        else:
            args += ["--set", f"{key}="]
    return args, ports


def imap_node(cluster, sets=(), **kw):
    """An unstarted Ternd of CLUSTER with the SMTP and IMAP listeners; t.smtp_ports and
    t.imap_ports map listener names to ports (kept across restarts)."""
    args, ports = imap_port_sets()
    t = cluster.node(ports=args, sets=list(sets), **kw)
    t.smtp_ports = {k: v for k, v in ports.items() if k in SMTP_LISTENERS}
    t.imap_ports = {k: v for k, v in ports.items() if k in IMAP_LISTENERS}
    return t


def imap_client(t, user=None, password=None, tls=False, timeout=IMAP_TIMEOUT):
    """An imaplib client on T's IMAP listener (IMAPS when TLS), logged in when USER is
    given. Every socket operation is bounded by TIMEOUT."""
    import imaplib

    if tls:
        m = imaplib.IMAP4_SSL("127.0.0.1", t.imap_ports["imaps"],
                              ssl_context=tls_client_context(), timeout=timeout)
    else:
        m = imaplib.IMAP4("127.0.0.1", t.imap_ports["imap"], timeout=timeout)
    if user is not None:
        typ, _ = m.login(user, password)
        assert typ == "OK"
    return m


class ImapClosed(Exception):
    """The server closed the connection where a response was expected."""


class _RawClient:
    """The socket plumbing RawIMAP and RawPOP3 share: connect (a PROXY header first if
    given, then TLS if asked), send bytes as given, and fill the read buffer with every read
    bounded by the timeout; a peer that goes away raises the subclass's CLOSED_EXC."""

    closed_exc = ConnectionError

    def _connect(self, port, host, tls, timeout, prefix=b""):
        self.timeout = timeout
        self.s = socket.create_connection((host, port), timeout=timeout)
        self.s.settimeout(timeout)
        if prefix:  # a PROXY header, before anything else
            self.s.sendall(prefix)
        if tls:
            self.s = tls_client_context().wrap_socket(self.s, server_hostname="localhost")
            self.s.settimeout(timeout)
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.s.sendall(data)

    def _fill(self):
        try:
            chunk = self.s.recv(1 << 20)
        except (ConnectionResetError, BrokenPipeError) as e:
            raise self.closed_exc(str(e)) from e
        except OSError as e:
            if isinstance(e, (socket.timeout, TimeoutError)):
                raise
            raise self.closed_exc(str(e)) from e  # TLS: an abrupt close
        if not chunk:
            raise self.closed_exc("EOF")
        self.buf += chunk

    def quiet(self, timeout=0.5):
        """True when the server sends nothing (and does not close) for TIMEOUT seconds."""
        if self.buf:
            return False
        self.s.settimeout(timeout)
        try:
            chunk = self.s.recv(65536)
            self.buf += chunk
            return False
        except (socket.timeout, TimeoutError):
            return True
        except OSError:
            return False
        finally:
            try:
                self.s.settimeout(self.timeout)
            except OSError:
                pass

    def closed(self, timeout=None):
        """True when the server closes the connection within TIMEOUT; what it sent before
        is kept in self.buf."""
        self.s.settimeout(timeout if timeout is not None else self.timeout)
        try:
            while True:
                chunk = self.s.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except (socket.timeout, TimeoutError):
            return False
        except OSError:
            return True
        finally:
            try:
                self.s.settimeout(self.timeout)
            except OSError:
                pass

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


class RawIMAP(_RawClient):
    """An IMAP client that sends exactly the bytes it is given. Every read is bounded by
    TIMEOUT. Responses are lines (bytes, without CRLF) in which a literal {n} is kept
    inline: the line continues with the n octets and whatever follows them."""

    closed_exc = ImapClosed

    def __init__(self, port, host="127.0.0.1", tls=False, timeout=IMAP_TIMEOUT, greet=True):
        self._connect(port, host, tls, timeout)
        self.n = 0
        self.greeting = self.line() if greet else None

    def line(self):
        """One response line, literals included inline (bytes, without the final CRLF)."""
        out = b""
        while True:
            while b"\r\n" not in self.buf:
                self._fill()
            ln, _, self.buf = self.buf.partition(b"\r\n")
            out += ln
            m = re.search(rb"\{(\d+)\}$", ln)
            if not m:
                return out
            n = int(m.group(1))
            out += b"\r\n"
            while len(self.buf) < n:
                self._fill()
            out += self.buf[:n]
            self.buf = self.buf[n:]

    def tag(self):
        self.n += 1
        return f"T{self.n}"

    def read_until_tagged(self, tag):
        """(untagged and continuation lines, the tagged line) up to TAG's completion."""
        tag = tag.encode() if isinstance(tag, str) else tag
        lines = []
        while True:
            ln = self.line()
            if ln.startswith(tag + b" "):
                return lines, ln
            lines.append(ln)

    def cmd(self, text, tag=None):
        """Sends 'TAG TEXT' CRLF; returns (untagged lines, tagged line)."""
        tag = tag or self.tag()
        data = text.encode() if isinstance(text, str) else text
        self.send(tag.encode() + b" " + data + b"\r\n")
        return self.read_until_tagged(tag)

    def ok(self, text):
        """cmd() that asserts OK; returns the untagged lines."""
        tag = self.tag()
        lines, done = self.cmd(text, tag)
        assert done.startswith(f"{tag} OK".encode()), (text, lines[-5:], done)
        return lines

    def login(self, user, password):
        self.ok(f'LOGIN "{user}" "{password}"')
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def imap_parse(data, pos=0):
    """Parses IMAP response data (bytes, literals inline as RawIMAP.line() keeps them) into
    Python values: a list of items, where ( ... ) is a list, an atom is a str (bracketed
    parts such as BODY[HEADER.FIELDS (SUBJECT)]<0> stay in the atom), a quoted string or a
    literal is bytes and NIL is None."""
    items, pos = _imap_items(data, pos, None)
    return items


def _imap_items(data, pos, close):
    out = []
    n = len(data)
    while True:
        while pos < n and data[pos : pos + 1] == b" ":
            pos += 1
        if pos >= n:
            assert close is None, f"unclosed list in {data[:200]!r}"
            return out, pos
        ch = data[pos : pos + 1]
        if ch == b")":
            assert close == b")", f"unexpected ) at {pos} in {data[:200]!r}"
            return out, pos + 1
        if ch == b"(":
            sub, pos = _imap_items(data, pos + 1, b")")
            out.append(sub)
        elif ch == b'"':
            pos += 1
            val = bytearray()
            while data[pos : pos + 1] != b'"':
                if data[pos : pos + 1] == b"\\":
                    pos += 1
                val += data[pos : pos + 1]
                pos += 1
                assert pos < n, f"unterminated quoted string in {data[:200]!r}"
            out.append(bytes(val))
            pos += 1
        elif ch == b"{":
            end = data.index(b"}", pos)
            size = int(data[pos + 1 : end].rstrip(b"+"))
            assert data[end + 1 : end + 3] == b"\r\n", f"bad literal in {data[:200]!r}"
            start = end + 3
            out.append(data[start : start + size])
            pos = start + size
        else:
            start = pos
            depth = 0
            while pos < n:
                c = data[pos : pos + 1]
                if c == b"[":
                    depth += 1
                elif c == b"]":
                    depth -= 1
                elif depth == 0 and c in (b" ", b"(", b")"):
                    break
                pos += 1
            atom = data[start:pos].decode("utf-8", "replace")
            # a literal right after a section name: "BODY[] {5}\r\n..." is two items anyway
            out.append(None if atom.upper() == "NIL" else atom)


def imap_fetch(line):
    """'* 3 FETCH (UID 7 FLAGS (\\Seen) BODY[] {5}...)' -> (3, {'UID': '7', 'FLAGS': [...],
    'BODY[]': b'...'}), item names upper-cased."""
    items = imap_parse(line)
    assert len(items) == 4 and items[0] == "*" and items[2].upper() == "FETCH", line[:200]
    kv = items[3]
    assert len(kv) % 2 == 0, f"odd FETCH item list: {line[:300]!r}"
    out = {kv[i].upper(): kv[i + 1] for i in range(0, len(kv), 2)}
    if isinstance(out.get("FLAGS"), list):
        # \Recent is this session's view (RFC 3501 2.3.2), not a stored flag: the tests
        # compare stored flags; test_imap_sort.py::test_recent checks \Recent itself
        out["FLAGS"] = [f for f in out["FLAGS"] if f != "\\Recent"]
    return int(items[1]), out


def imap_fetches(lines):
    """{msn: items} of every untagged FETCH among LINES (later ones merged into earlier)."""
    out = {}
    for ln in lines:
        if re.match(rb"\* \d+ FETCH ", ln):
            msn, kv = imap_fetch(ln)
            out.setdefault(msn, {}).update(kv)
    return out


def imap_seqset_members(text):
    """'1:3,7' -> [1, 2, 3, 7] (no '*')."""
    out = []
    for part in text.split(","):
        if ":" in part:
            a, b = (int(x) for x in part.split(":"))
            out += range(min(a, b), max(a, b) + 1)
        elif part:
            out.append(int(part))
    return sorted(set(out))


def _raw_imap_append(self, mailbox, msg, flags=None, date=None, expect="OK"):
    """APPEND MSG (bytes) to MAILBOX with a LITERAL+ literal; returns (uid from APPENDUID
    or None, the tagged line)."""
    tag = self.tag()
    args = '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if flags is not None:
        args += " (" + " ".join(flags) + ")"
    if date is not None:
        args += f' "{date}"'
    self.send(f"{tag} APPEND {args} {{{len(msg)}+}}\r\n".encode() + msg + b"\r\n")
    lines, done = self.read_until_tagged(tag)
    assert done.startswith(f"{tag} {expect}".encode()), (mailbox, done)
    m = re.search(rb"\[APPENDUID (\d+) (\d+)\]", done)
    return (int(m.group(2)) if m else None), done


RawIMAP.append = _raw_imap_append

IMAP_DOMAIN = "imap.test"
IMAP_PW = "imap-secret"


@pytest.fixture(scope="session")
def imap_t():
    """One ternd with SMTP and IMAP listeners shared by the IMAP test modules (each test
    makes its own users with imap_user()). Tests that may crash or restart ternd use a
    ternd of their own."""
    need_binaries()
    c = Cluster()
    t = imap_node(c).start()
    t.ctl("domain", "add", IMAP_DOMAIN).ok()
    yield t
    c.close(keep=os.environ.get("TERN_KEEP_TMP"))


_imap_users = iter(range(1, 1 << 30))


def imap_user(t, prefix="u", domain=IMAP_DOMAIN, password=IMAP_PW):
    """A new account on T; returns its address."""
    addr = f"{prefix}{next(_imap_users)}@{domain}"
    t.ctl("user", "add", addr, password=password).ok()
    return addr


@pytest.fixture
def imap(imap_t):
    """Factory of RawIMAP connections to imap_t, closed at teardown:
    imap(user) is logged in, imap() is not; tls=True uses the IMAPS listener."""
    opened = []

    def open_(user=None, tls=False, t=None, password=IMAP_PW, timeout=IMAP_TIMEOUT):
        t = t or imap_t
        r = RawIMAP(t.imap_ports["imaps" if tls else "imap"], tls=tls, timeout=timeout)
        opened.append(r)
        if user is not None:
            r.login(user, password)
        return r

    yield open_
    for r in opened:
        r.close()


def smtp_deliver(t, rcpts, msg, sender="sender@far.example"):
    """Delivers MSG (bytes, CRLF line ends) through T's SMTP (MX) listener."""
    import smtplib

    if isinstance(rcpts, str):
        rcpts = [rcpts]
    s = smtplib.SMTP("127.0.0.1", t.smtp_ports["smtp"], timeout=SMTP_TIMEOUT)
    try:
        refused = s.sendmail(sender, rcpts, msg)
        assert not refused, refused
    finally:
        try:
            s.quit()
        except Exception:
            s.close()


# ---------------------------------------------------------------------------------------
# POP3: a ternd with the SMTP, IMAP and POP3 listeners, and a raw POP3 client

POP3_LISTENERS = ("pop3", "pop3s")
POP3_TIMEOUT = 10.0  # every socket operation of RawPOP3 and of pop3_client()


def pop3_node(cluster, sets=(), **kw):
    """An unstarted Ternd of CLUSTER with the SMTP, IMAP and POP3 listeners; t.smtp_ports,
    t.imap_ports and t.pop3_ports map listener names to ports (kept across restarts)."""
    args, ports = imap_port_sets(SMTP_LISTENERS + IMAP_LISTENERS + POP3_LISTENERS)
    t = cluster.node(ports=args, sets=list(sets), **kw)
    t.smtp_ports = {k: v for k, v in ports.items() if k in SMTP_LISTENERS}
    t.imap_ports = {k: v for k, v in ports.items() if k in IMAP_LISTENERS}
    t.pop3_ports = {k: v for k, v in ports.items() if k in POP3_LISTENERS}
    return t


def pop3_client(t, user=None, password=None, tls=False, timeout=POP3_TIMEOUT):
    """A poplib client on T's POP3 listener (POP3S when TLS), logged in with USER/PASS when
    USER is given. Every socket operation is bounded by TIMEOUT."""
    import poplib

    if tls:
        p = poplib.POP3_SSL("127.0.0.1", t.pop3_ports["pop3s"], timeout=timeout,
                            context=tls_client_context())
    else:
        p = poplib.POP3("127.0.0.1", t.pop3_ports["pop3"], timeout=timeout)
    if user is not None:
        p.user(user)
        resp = p.pass_(password)
        assert resp.startswith(b"+OK"), resp
    return p


class Pop3Closed(Exception):
    """The server closed the connection where a response was expected."""


class RawPOP3(_RawClient):
    """A POP3 client that sends exactly the bytes it is given. Every read is bounded by
    TIMEOUT. Lines are bytes without the CRLF; multi-line responses are returned as sent,
    dot-stuffing included."""

    closed_exc = Pop3Closed

    def __init__(self, port, host="127.0.0.1", tls=False, timeout=POP3_TIMEOUT, greet=True,
                 prefix=b""):
        self._connect(port, host, tls, timeout, prefix)
        self.greeting = self.line() if greet else None

    def line(self):
        while b"\r\n" not in self.buf:
            assert len(self.buf) < 1 << 24, "response line without CRLF"
            self._fill()
        ln, _, self.buf = self.buf.partition(b"\r\n")
        return ln

    def cmd(self, line):
        """Sends LINE + CRLF and returns the first response line."""
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.line()

    def ok(self, line):
        got = self.cmd(line)
        assert got.startswith(b"+OK"), (line, got)
        return got

    def err(self, line):
        got = self.cmd(line)
        assert got.startswith(b"-ERR"), (line, got)
        return got

    def body(self):
        """The lines of a multi-line response up to (without) the terminating '.', exactly
        as sent (still dot-stuffed)."""
        out = []
        while True:
            ln = self.line()
            if ln == b".":
                return out
            out.append(ln)

    def multi(self, line):
        """Sends LINE, asserts +OK; returns (first line, body lines as sent)."""
        first = self.ok(line)
        return first, self.body()

    def login(self, user, password):
        self.ok(f"USER {user}")
        self.ok(f"PASS {password}")
        return self

    def stls(self):
        got = self.ok("STLS")
        assert self.buf == b"", f"server sent {self.buf!r} after +OK to STLS"
        self.s = tls_client_context().wrap_socket(self.s, server_hostname="localhost")
        self.s.settimeout(self.timeout)
        return got

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------
# a cluster: N ternd nodes joined into one Raft group (node 1 bootstraps, the others join
# it with its secret), and HAProxy in front of it (config from `ternctl haproxy-config`)

CLUSTER_LISTENERS = SMTP_LISTENERS + IMAP_LISTENERS + POP3_LISTENERS
HAPROXY_SOURCE = "127.0.0.2"  # HAProxy's address towards the nodes: their net.proxy_trusted
CLUSTER_TEST_SETS = (  # small timeouts so elections, repair and HAProxy checks are quick
    "--set", "raft.election_timeout_ms=500",
    "--set", "raft.heartbeat_ms=50",
    "--set", "cluster.repair_interval_ms=500",
    "--set", f"net.proxy_trusted={HAPROXY_SOURCE}",
)
JOIN_TIMEOUT = 30.0  # ternctl cluster join -> ok


def stable_port():
    """A loopback port below the kernel's ephemeral range (so no outgoing connection can
    take it while its node is down between a kill and a restart), free a moment ago and
    not handed out before here."""
    import random

    lo = 10000
    try:
        lo_eph = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        lo_eph = 32768
    hi = max(lo + 1000, lo_eph - 1)
    for _ in range(1000):
        port = random.randint(lo, hi)
        if port in _ports_used:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_used.add(port)
        return port
    raise RuntimeError("no free port")


def cluster_port_sets(listeners=CLUSTER_LISTENERS):
    """(--set arguments, {listener: port}, {key: address}): like imap_port_sets(), from
    stable_port(); the third map holds every non-listener ADDR key (raft.address,
    cluster.rpc_address) with its address."""
    args, ports, addrs = [], {}, {}
    for key in addr_keys():
        sec, _, name = key.partition(".")
        if sec != "listen":
            addrs[key] = f"127.0.0.1:{stable_port()}"
            args += ["--set", f"{key}={addrs[key]}"]
        elif name in listeners:
            ports[name] = stable_port()
            args += ["--set", f"{key}=127.0.0.1:{ports[name]}"]
        else:
            args += ["--set", f"{key}="]
    return args, ports, addrs


def wait_admin(t, timeout=READY_TIMEOUT):
    """Waits until T's admin socket answers status (any role); returns the record."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        rc = t.proc.poll()
        if rc is not None:
            pytest.fail(f"ternd exited with {rc} before its admin socket answered:\n"
                        f"{t.log_tail()}")
        if t.sock.exists():
            try:
                last = run_ctl(t.sock, "status", timeout=max(0.5, min(5.0, deadline - time.monotonic())))
                if last.rc == 0 and last.records:
                    return last.records[0]
            except subprocess.TimeoutExpired:
                last = "ternctl status timed out"
        time.sleep(0.05)
    pytest.fail(f"ternd admin socket not answering within {timeout}s (last: {last!r}):\n"
                f"{t.log_tail()}")


def try_status(t, timeout=3.0):
    """T's status record, or None (not running, no answer)."""
    if not t.running():
        return None
    try:
        r = run_ctl(t.sock, "status", timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return r.records[0] if r.rc == 0 and r.records else None


def cluster_status(t, timeout=CTL_TIMEOUT):
    """`cluster status` on T: (header record, {node id: node record})."""
    r = t.ctl("cluster", "status", timeout=timeout).ok()
    head = next(rec for rec in r.records if "cluster" in rec)
    nodes = {int(rec["id"]): rec for rec in r.records if "node" in rec and "id" in rec}
    return head, nodes


def cluster_members(t):
    """`cluster members` on T: {node id: member record}."""
    r = t.ctl("cluster", "members").ok()
    return {int(rec["id"]): rec for rec in r.records if "member" in rec}


class TernCluster:
    """Ternd nodes of CLUSTER (the `cluster` fixture: it kills them at teardown and keeps
    the logs of a failed test) joined into one Raft group. Every node has the SMTP, IMAP
    and POP3 listeners (t.smtp_ports, t.imap_ports, t.pop3_ports), t.node_id, t.raft_addr
    and t.rpc_addr, all kept across restarts. SETS go to every node (after
    CLUSTER_TEST_SETS, so they win)."""

    def __init__(self, cluster, sets=()):
        self.c = cluster
        self.sets = list(CLUSTER_TEST_SETS) + list(sets)
        self.nodes = []  # every node made here, current members or not
        self.secret = None  # node 1's cluster.secret, given to every joining node
        self.next_id = 1

    def new_node(self, node_id=None, sets=(), secret=None):
        """An unstarted node. The first one bootstraps; later ones wait to be joined and
        get the first node's secret file (or SECRET)."""
        node_id = node_id or self.next_id
        self.next_id = max(self.next_id, node_id + 1)
        s = ["--set", f"node.id={node_id}"] + self.sets
        if self.secret is not None or secret is not None:
            s += ["--set", "cluster.bootstrap=no",
                  "--set", f"cluster.secret_file={secret or self.secret}"]
        args, ports, addrs = cluster_port_sets()
        t = self.c.node(ports=args, sets=s + list(sets))
        t.node_id = node_id
        t.smtp_ports = {k: v for k, v in ports.items() if k in SMTP_LISTENERS}
        t.imap_ports = {k: v for k, v in ports.items() if k in IMAP_LISTENERS}
        t.pop3_ports = {k: v for k, v in ports.items() if k in POP3_LISTENERS}
        t.raft_addr = addrs["raft.address"]
        t.rpc_addr = addrs["cluster.rpc_address"]
        self.nodes.append(t)
        return t

    def node(self, node_id):
        return next(t for t in self.nodes if t.node_id == node_id)

    def running(self):
        return [t for t in self.nodes if t.running()]

    def join(self, t, seed=None):
        """Starts T (unless running) and joins it through SEED (a node; default the first
        running one that is not T). Returns the ternctl result (not asserted)."""
        if not t.running():
            t.start(wait=False)
        wait_admin(t)
        seed = seed or next(n for n in self.running() if n is not t)
        return t.ctl("cluster", "join", seed.rpc_addr, timeout=JOIN_TIMEOUT + 5)

    def form(self, n=3):
        """Starts node 1 (bootstrap), then N-1 nodes that join it; waits until every node
        lists the N members as voters."""
        first = self.new_node()
        first.start()
        self.secret = first.data_dir / "cluster.secret"
        assert self.secret.exists(), f"no {self.secret} after the first start"
        rest = [self.new_node() for _ in range(n - 1)]
        for t in rest:
            t.start(wait=False)
        for t in rest:
            r = self.join(t, seed=first)
            assert r.rc == 0 and r.out.strip() == "ok", r
        self.wait_members([t.node_id for t in self.nodes[:n]])
        return self

    def wait_members(self, ids, timeout=10.0):
        """Waits until every running node's `cluster members` lists exactly IDS, all
        voters."""
        want = sorted(ids)
        last = {}

        def agree():
            for t in self.running():
                m = cluster_members(t)
                last[t.node_id] = m
                if sorted(m) != want or any(r["role"] != "voter" for r in m.values()):
                    return False
            return True

        assert wait_until(agree, timeout, 0.1), f"members do not agree on {want}: {last}"

    def statuses(self):
        """{node id: status record} of the running nodes that answer."""
        out = {}
        for t in self.running():
            s = try_status(t)
            if s is not None:
                out[t.node_id] = s
        return out

    def leader(self, timeout=15.0):
        """The node every running node names as leader (and which says it is): waits."""
        found = {}

        def one():
            st = self.statuses()
            found["last"] = st
            if len(st) != len(self.running()):
                return None
            leaders = {s.get("leader") for s in st.values()}
            if len(leaders) != 1:
                return None
            lid = int(leaders.pop())
            if lid == 0 or st.get(lid, {}).get("role") != "leader":
                return None
            return self.node(lid)

        t = wait_until(one, timeout, 0.05)
        assert t is not None, f"no agreed leader within {timeout}s: {found.get('last')}"
        return t

    def followers(self):
        lead = self.leader()
        return [t for t in self.running() if t is not lead]

    def wait_converged(self, timeout=20.0, nodes=None):
        """Waits until NODES (default: the running ones) agree on the leader and the term
        and have the same commit and applied indexes; returns {id: status}. (applied may
        stay below commit when the last entries are configuration changes: libraft does
        not count them as applied until a command follows.)"""
        nodes = nodes or self.running()
        found = {}

        def same():
            st = {}
            for t in nodes:
                s = try_status(t)
                if s is None:
                    return None
                st[t.node_id] = s
            found["last"] = st
            keys = {(s["leader"], s["term"], s["commit"], s["applied"]) for s in st.values()}
            if len(keys) != 1:
                return None
            lid, _, commit, applied = keys.pop()
            if lid == "0" or int(applied) > int(commit):
                return None
            return st

        st = wait_until(same, timeout, 0.1)
        assert st, f"nodes did not converge within {timeout}s: {found.get('last')}"
        return st

    def restart(self, t, timeout=READY_TIMEOUT):
        """Starts T again (same data dir, same ports) and waits for its admin socket."""
        t.start(wait=False)
        return wait_admin(t, timeout)


@pytest.fixture
def tern3(cluster):
    """A formed 3-node cluster (TernCluster) with CLUSTER_TEST_SETS."""
    return TernCluster(cluster).form(3)


HAPROXY_BIN = shutil.which("haproxy") or next(
    (p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)
HAPROXY_UP_TIMEOUT = 15.0  # start -> every enabled server UP (inter 1s, rise 2)


class HAProxy:
    """HAProxy in front of a TernCluster, from `ternctl haproxy-config` on NODE: frontends
    on fresh loopback ports (self.ports, one per client protocol), HAProxy's source
    HAPROXY_SOURCE, stats on self.stats_port. Runs in the foreground (-db), killed by
    stop() (and by kill_leftovers)."""

    def __init__(self, workdir, node):
        self.workdir = Path(workdir)
        self.node = node
        self.ports = {p: free_port() for p in CLUSTER_LISTENERS}
        self.stats_port = free_port()
        self.cfg = self.workdir / "haproxy.cfg"
        self.log_path = self.workdir / "haproxy.log"
        self.proc = None

    def generate(self):
        r = self.node.ctl("haproxy-config", "--bind", "127.0.0.1", "--source", HAPROXY_SOURCE,
                          "--ports", ",".join(f"{k}={v}" for k, v in self.ports.items()),
                          "--stats", f"127.0.0.1:{self.stats_port}", "--maxconn", "200").ok()
        self.cfg.write_text(r.out)
        return r.out

    def start(self, wait=True):
        if HAPROXY_BIN is None:
            pytest.skip("haproxy is not installed")
        self.generate()
        log = open(self.log_path, "ab")
        self.proc = _track(subprocess.Popen([HAPROXY_BIN, "-db", "-f", str(self.cfg)],
                                            stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True))
        log.close()
        if wait:
            self.wait_up()
        return self

    def servers(self):
        """{(backend, server): status} from /stats;csv ('UP', 'DOWN', 'MAINT', 'UP 1/2'...),
        or None when the stats page does not answer."""
        import csv
        import io
        import urllib.request

        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.stats_port}/stats;csv",
                                          timeout=2).read().decode()
        except OSError:
            return None
        rows = list(csv.reader(io.StringIO(text.lstrip("# "))))
        head = rows[0]
        i_px, i_sv, i_st = head.index("pxname"), head.index("svname"), head.index("status")
        return {(r[i_px], r[i_sv]): r[i_st] for r in rows[1:]
                if len(r) > i_st and r[i_sv] not in ("FRONTEND", "BACKEND")}

    def wait_up(self, timeout=HAPROXY_UP_TIMEOUT, servers=None):
        """Waits until every server (or every one of SERVERS, names like 'n1') not in
        maintenance is UP."""
        last = {}

        def up():
            if self.proc.poll() is not None:
                pytest.fail(f"haproxy exited with {self.proc.returncode}:\n{self.log_tail()}")
            s = self.servers()
            last["s"] = s
            if not s:
                return False
            return all(st == "UP" for (bk, sv), st in s.items()
                       if not st.startswith("MAINT") and (servers is None or sv in servers))

        assert wait_until(up, timeout, 0.2), f"haproxy servers not UP: {last.get('s')}"

    def log_tail(self, n=30):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def haproxy(cluster, request):
    """Factory: haproxy(node) starts HAProxy from NODE's members, waits until its servers
    are UP; killed at teardown (its log printed when the test failed)."""
    started = []

    def start(node, wait=True):
        h = HAProxy(cluster.workdir, node)
        started.append(h)
        return h.start(wait=wait)

    yield start
    for h in started:
        h.stop()
        if _failed(request):
            print(f"--- {h.log_path}\n{h.log_tail(40)}")
