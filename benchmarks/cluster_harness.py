# benchmarks/cluster_harness.py
# Shared by benchmarks/cluster-smtp and benchmarks/failover: starts ternd nodes (one alone,
# or a cluster formed through `ternctl cluster join`), HAProxy in front of them (its
# configuration from `ternctl haproxy-config`), and speaks just enough SMTP and IMAP to
# measure. Loopback only; everything lives in one temporary directory under /tmp; every
# process started here is stopped on exit (also on Ctrl-C, SIGTERM and exceptions).
# Python 3 standard library only. Not a test: nothing here asserts timings.
import atexit
import imaplib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.environ.get("TERN_BUILD_DIR", os.path.join(ROOT, "build"))
TERND = os.path.join(BUILD, "proxy", "ternd")
TERNCTL = os.path.join(BUILD, "ops", "ternctl")
LOAD = os.path.join(HERE, "smtp-load")
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

PASSWORD = "bench-pw"
DOMAIN = "example.test"
HAPROXY_SOURCE = "127.0.0.2"  # HAProxy's address towards the nodes: their net.proxy_trusted
PROTOS = ("smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s")

READY_MAX = 30.0  # s for a node to answer on its admin socket, or to lead
JOIN_MAX = 60.0   # s for a node to become a voter
CHECK_MAX = 20.0  # s for HAProxy's checks to pass on every server
STOP_MAX = 20.0   # s for a process to end after SIGTERM, then SIGKILL
CTL_TIMEOUT = 20.0


def say(prog, msg):
    print(f"{prog}: {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------------------
# processes: every one started here is registered and stopped by cleanup()

_procs = []  # Popen objects, in start order
_procs_lock = threading.Lock()
_tmpdirs = []  # (path, keep)


def spawn(args, log_path, **kw):
    """Starts ARGS in its own session (so a Ctrl-C on the terminal reaches only us, and
    cleanup() decides the order), output to LOG_PATH. Registered for cleanup()."""
    with open(log_path, "ab") as log:
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True, **kw)
    with _procs_lock:
        _procs.append(p)
    return p


def stop_proc(p, sig=signal.SIGTERM, wait=STOP_MAX):
    """SIGTERM (or SIG), a bounded wait, then SIGKILL. Only P's own pid is signalled."""
    if p.poll() is None:
        try:
            p.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
    with _procs_lock:
        if p in _procs:
            _procs.remove(p)


def cleanup():
    with _procs_lock:
        procs = list(reversed(_procs))  # HAProxy (started last) first, then the nodes
    for p in procs:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + STOP_MAX
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"cluster_harness: pid {p.pid} still running after {STOP_MAX:.0f}s; SIGKILL",
                  file=sys.stderr)
            p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    with _procs_lock:
        _procs.clear()
    while _tmpdirs:
        path, keep = _tmpdirs.pop()
        if keep:
            print(f"cluster_harness: kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def install_cleanup():
    """cleanup() at exit; SIGTERM and SIGHUP become KeyboardInterrupt (so finally runs)."""
    atexit.register(cleanup)
    # SIGINT too: a background job of a non-interactive shell starts with SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)


def keep_tmpdirs():
    """After an error: keep the temporary directories (their logs) for inspection."""
    for i, (path, _) in enumerate(_tmpdirs):
        _tmpdirs[i] = (path, True)


def make_tmpdir(prefix, keep=False):
    d = tempfile.mkdtemp(prefix=prefix + ".", dir="/tmp")
    _tmpdirs.append((d, keep))
    return d


def need_binaries(prog, load=False):
    for b in (TERND, TERNCTL):
        if not os.access(b, os.X_OK):
            raise BenchError(f"{b} is missing: cmake --build build -j8")
    if not os.access(HAPROXY, os.X_OK):
        raise BenchError("haproxy is not installed (ops/install-deps.sh installs it)")
    if load:
        r = subprocess.run(["make", "-s", "-C", HERE, "smtp-load"], capture_output=True, text=True)
        if r.returncode != 0 or not os.access(LOAD, os.X_OK):
            raise BenchError(f"cannot build smtp-load: {r.stderr.strip()}")


def tree_info():
    """HEAD of the source tree, and whether it has uncommitted changes."""
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"HEAD {head}" + (" with uncommitted changes" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "HEAD unknown"


def snapshot_binaries(tmp):
    """Copies ternd and ternctl into TMP and uses the copies: other sessions rebuild build/
    while a run goes on. Returns a line naming what was copied (build time, sha256)."""
    global TERND, TERNCTL
    import hashlib
    info = []
    for name in ("TERND", "TERNCTL"):
        src = globals()[name]
        dst = os.path.join(tmp, os.path.basename(src))
        shutil.copy2(src, dst)
        with open(dst, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:12]
        built = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(os.stat(dst).st_mtime))
        info.append(f"{os.path.relpath(src, ROOT)} built {built} UTC sha256 {digest}")
        globals()[name] = dst
    return "; ".join(info) + f"; tree {tree_info()}"


# ---------------------------------------------------------------------------------------
# ports: loopback, 20000-29999 (below the ephemeral range the load's connections use)

_used_ports = set()


def free_port():
    for _ in range(500):
        p = random.randint(20000, 29999)
        if p in _used_ports:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            s.close()
        _used_ports.add(p)
        return p
    raise BenchError("no free port found")


def kv(line):
    """key=value fields of one line (values without spaces)."""
    return dict(f.split("=", 1) for f in line.split() if "=" in f)


# ---------------------------------------------------------------------------------------
# CPU accounting (the machine may be shared: say who used the CPU)

HZ = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """CPU seconds of PID, its threads and its reaped children; 0 when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / HZ  # utime stime cutime cstime
    except (OSError, IndexError, ValueError):
        return 0.0


def sys_busy():
    """CPU seconds all cores spent busy since boot (not idle, not iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / HZ


def wait_quiet(max_s, pct=15.0):
    """Waits (at most MAX_S) until the machine is under PCT % busy over 3 s; returns the
    busy % last seen."""
    start = time.monotonic()
    while True:
        b0 = sys_busy()
        time.sleep(3)
        busy = 100.0 * (sys_busy() - b0) / (3 * os.cpu_count())
        if busy < pct or time.monotonic() - start >= max_s:
            return busy


# ---------------------------------------------------------------------------------------
# ternctl

def ctl(sock, *args, stdin=None, timeout=CTL_TIMEOUT, check=True):
    """ternctl --socket SOCK ARGS; returns stdout. Raises BenchError when CHECK and rc != 0."""
    try:
        r = subprocess.run([TERNCTL, "--socket", sock, *map(str, args)], input=stdin,
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        if check:
            raise BenchError(f"ternctl {' '.join(map(str, args))}: no answer in {timeout:.0f}s")
        return None
    if check and r.returncode != 0:
        raise BenchError(f"ternctl {' '.join(map(str, args))}: rc={r.returncode} "
                         f"{(r.stderr or r.stdout).strip()}")
    return r.stdout if r.returncode == 0 else None


def parse_cluster_status(text):
    """`ternctl cluster status` -> {'leader': id, 'term': n, 'nodes': {id: {...}}}."""
    out = {"leader": 0, "term": 0, "nodes": {}}
    for line in (text or "").splitlines():
        if line.startswith("cluster "):
            f = kv(line)
            out["leader"] = int(f.get("leader", 0))
            out["term"] = int(f.get("term", 0))
        elif line.startswith("node "):
            f = kv(line)
            out["nodes"][int(f["id"])] = f
    return out


# ---------------------------------------------------------------------------------------
# nodes

class Node:
    def __init__(self, base, node_id, protos=("smtp",), extra=()):
        self.id = node_id
        self.dir = os.path.join(base, f"node{node_id}")
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.data, "admin.sock")
        self.log = os.path.join(self.dir, "ternd.log")
        self.raft = f"127.0.0.1:{free_port()}"
        self.rpc = f"127.0.0.1:{free_port()}"
        self.ports = {p: free_port() for p in protos}
        self.extra = list(extra)  # further --set key=value, every start
        self.proc = None
        self.starts = 0
        os.makedirs(self.data, exist_ok=True)

    def args(self, bootstrap, secret_file, proxy_trusted):
        a = [TERND, "--data", self.data,
             "--set", f"node.id={self.id}", "--set", f"node.zone=z{self.id}",
             "--set", f"raft.address={self.raft}", "--set", f"cluster.rpc_address={self.rpc}"]
        for p in PROTOS:
            addr = f"127.0.0.1:{self.ports[p]}" if p in self.ports else ""
            a += ["--set", f"listen.{p}={addr}"]
        if proxy_trusted:
            a += ["--set", f"net.proxy_trusted={proxy_trusted}"]
        if not bootstrap:
            a += ["--set", "cluster.bootstrap=no"]
        if secret_file:
            a += ["--set", f"cluster.secret_file={secret_file}"]
        for kvs in self.extra:
            a += ["--set", kvs]
        return a

    def start(self, bootstrap=True, secret_file=None, proxy_trusted=None):
        self._start_args = (bootstrap, secret_file, proxy_trusted)
        with open(self.log, "ab") as f:
            f.write(f"---- start {self.starts + 1} at {time.time():.3f}\n".encode())
        self.proc = spawn(self.args(bootstrap, secret_file, proxy_trusted), self.log)
        self.starts += 1

    def restart(self):
        self.start(*self._start_args)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self):
        if not self.alive():
            raise BenchError(f"node {self.id} exited (rc={self.proc.returncode if self.proc else None});"
                             f" end of {self.log}:\n{tail(self.log)}")

    def sigkill(self):
        """SIGKILL to this node's process only, reaped at once."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        with _procs_lock:
            if self.proc in _procs:
                _procs.remove(self.proc)

    def stop(self):
        if self.proc:
            stop_proc(self.proc)

    def ctl(self, *args, **kw):
        return ctl(self.sock, *args, **kw)

    def status(self):
        """`ternctl status` as a dict, or None."""
        if not os.path.exists(self.sock):
            return None
        out = ctl(self.sock, "status", timeout=5, check=False)
        return kv(out.splitlines()[0]) if out else None

    def wait_status(self, pred, what, limit=READY_MAX):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            self.check_alive()
            st = self.status()
            if st is not None and pred(st):
                return st
            time.sleep(0.05)
        raise BenchError(f"node {self.id}: {what} not reached in {limit:.0f}s; end of {self.log}:\n"
                         f"{tail(self.log)}")


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def add_users(node, users):
    node.ctl("domain", "add", DOMAIN)
    for u in users:
        node.ctl("user", "add", u, "--password-stdin", stdin=PASSWORD + "\n")


class Cluster:
    """N ternd nodes in BASE: node 1 bootstraps, the others join it. HAProxy optional."""

    def __init__(self, base, n, protos=("smtp",), extra=(), proxy=True):
        self.base = base
        self.proxy = proxy
        self.nodes = [Node(base, i, protos, extra) for i in range(1, n + 1)]
        self.haproxy = None
        self.haproxy_cfg = os.path.join(base, "haproxy.cfg")
        self.haproxy_log = os.path.join(base, "haproxy.log")
        self.front = {}  # protocol -> HAProxy's port
        self.stats = None
        self.protos = protos

    def node(self, node_id):
        return self.nodes[node_id - 1]

    def form(self):
        trusted = HAPROXY_SOURCE if self.proxy else None
        n1 = self.nodes[0]
        n1.start(bootstrap=True, proxy_trusted=trusted)
        n1.wait_status(lambda s: s.get("role") == "leader", "role=leader")
        secret = os.path.join(n1.data, "cluster.secret")
        if not os.path.exists(secret):
            raise BenchError(f"node 1 created no {secret}")
        for nd in self.nodes[1:]:
            nd.start(bootstrap=False, secret_file=secret, proxy_trusted=trusted)
        for nd in self.nodes[1:]:
            nd.wait_status(lambda s: "role" in s, "an answer on the admin socket")
            deadline = time.monotonic() + JOIN_MAX
            while True:
                out = nd.ctl("cluster", "join", n1.rpc, check=False, timeout=JOIN_MAX)
                if out is not None:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"node {nd.id} could not join; end of {nd.log}:\n{tail(nd.log)}")
                time.sleep(1)
        # every node a voter, up, and listed by cluster.members (each writes its own record)
        deadline = time.monotonic() + JOIN_MAX
        while True:
            st = self.status()
            members = ctl(n1.sock, "cluster", "members", check=False) or ""
            n_members = sum(1 for l in members.splitlines() if l.startswith("member "))
            if (st and st["leader"] and len(st["nodes"]) == len(self.nodes) and
                    n_members == len(self.nodes) and
                    all(v.get("state") == "up" and v.get("raft_role") == "voter"
                        for v in st["nodes"].values())):
                return st
            if time.monotonic() > deadline:
                raise BenchError(f"cluster not formed in {JOIN_MAX:.0f}s: {st}\n{members}")
            time.sleep(0.2)

    def live(self):
        return [nd for nd in self.nodes if nd.alive()]

    def status(self, via=None):
        """cluster status from VIA (or the first live node that answers)."""
        for nd in ([via] if via else self.live()):
            out = ctl(nd.sock, "cluster", "status", timeout=10, check=False)
            if out:
                return parse_cluster_status(out)
        return None

    def start_haproxy(self, ports):
        """PORTS: protocol -> HAProxy's port, for the protocols the nodes serve."""
        self.front = dict(ports)
        self.stats = f"127.0.0.1:{free_port()}"
        spec = ",".join(f"{p}={v}" for p, v in ports.items())
        cfg = self.nodes[0].ctl("haproxy-config", "--bind", "127.0.0.1", "--source", HAPROXY_SOURCE,
                                "--ports", spec, "--stats", self.stats)
        with open(self.haproxy_cfg, "w") as f:
            f.write(cfg)
        r = subprocess.run([HAPROXY, "-c", "-f", self.haproxy_cfg], capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"haproxy -c refuses {self.haproxy_cfg}: {r.stdout}{r.stderr}")
        self.haproxy = spawn([HAPROXY, "-db", "-f", self.haproxy_cfg], self.haproxy_log)
        self.wait_checks()

    def checks(self):
        """HAProxy's servers: [(backend, server, check_status, status)]."""
        try:
            with urllib.request.urlopen(f"http://{self.stats}/stats;csv", timeout=3) as r:
                text = r.read().decode()
        except OSError:
            return []
        lines = text.splitlines()
        if not lines or not lines[0].startswith("# "):
            return []
        cols = lines[0][2:].split(",")
        out = []
        for l in lines[1:]:
            row = dict(zip(cols, l.split(",")))
            if re.fullmatch(r"n\d+", row.get("svname", "")):
                out.append((row["pxname"], row["svname"], row.get("check_status", ""),
                            row.get("status", "")))
        return out

    def wait_checks(self, limit=CHECK_MAX):
        """Until every server of every backend is UP with L7OK."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.haproxy.poll() is not None:
                raise BenchError(f"haproxy exited; end of {self.haproxy_log}:\n{tail(self.haproxy_log)}")
            c = self.checks()
            if c and all(s[2] == "L7OK" and s[3] == "UP" for s in c):
                return
            time.sleep(0.1)
        raise BenchError(f"HAProxy's checks did not all pass in {limit:.0f}s: {self.checks()}")

    def check_alive(self):
        for nd in self.nodes:
            nd.check_alive()
        if self.haproxy and self.haproxy.poll() is not None:
            raise BenchError(f"haproxy exited; end of {self.haproxy_log}:\n{tail(self.haproxy_log)}")

    def pids(self):
        """{label: pid} of the live server processes: n<id> for nodes, haproxy."""
        p = {f"n{nd.id}": nd.pid for nd in self.nodes if nd.alive()}
        if self.haproxy and self.haproxy.poll() is None:
            p["haproxy"] = self.haproxy.pid
        return p


def used_messages(node, users):
    """Sum of used_messages of USERS as NODE sees them."""
    n = 0
    for u in users:
        out = node.ctl("user", "show", u)
        m = re.search(r"used_messages=(\d+)", out)
        n += int(m.group(1)) if m else 0
    return n


# ---------------------------------------------------------------------------------------
# smtp-load

def smtp_load(port, conns, size, duration, mode, nusers, err_path):
    args = [LOAD, "--port", str(port), "--conns", str(conns), "--size", str(size),
            "--duration", str(duration), "--mode", mode, "--user-prefix", "u",
            "--domain", DOMAIN, "--nusers", str(nusers)]
    with open(err_path, "w") as err:
        r = subprocess.run(args, stdout=subprocess.PIPE, stderr=err, text=True,
                           timeout=duration + 120, start_new_session=True)
    line = next((l for l in r.stdout.splitlines() if l.startswith("smtp_load ")), None)
    if line is None:
        raise BenchError(f"no result from smtp-load: {tail(err_path)}")
    return kv(line), r.stdout


# ---------------------------------------------------------------------------------------
# one SMTP transaction, with a deadline per reply

class SMTPFail(Exception):
    def __init__(self, stage, what):
        super().__init__(f"{stage}: {what}")
        self.stage = stage
        self.what = what


class SMTPConn:
    """A plain SMTP client connection: one command per round trip, TIMEOUT per step."""

    def __init__(self, port, timeout, host="127.0.0.1", helo="bench.example.net"):
        self.timeout = timeout
        self.buf = b""
        try:
            self.s = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise SMTPFail("connect", type(e).__name__)
        self.s.settimeout(timeout)
        try:
            self.expect("greeting", "220")
            self.cmd("EHLO", f"EHLO {helo}", "250")
        except SMTPFail:
            self.close()
            raise

    def reply(self, stage):
        """The last line of one reply ('250 ...')."""
        while True:
            while b"\r\n" not in self.buf:
                try:
                    d = self.s.recv(4096)
                except socket.timeout:
                    raise SMTPFail(stage, "timeout")
                except OSError as e:
                    raise SMTPFail(stage, type(e).__name__)
                if not d:
                    raise SMTPFail(stage, "eof")
                self.buf += d
            line, self.buf = self.buf.split(b"\r\n", 1)
            if len(line) < 4 or line[3:4] != b"-":
                return line.decode("latin-1")

    def expect(self, stage, code):
        line = self.reply(stage)
        if not line.startswith(code):
            raise SMTPFail(stage, line[:3] or "short")
        return line

    def cmd(self, stage, text, code):
        try:
            self.s.sendall(text.encode() + b"\r\n")
        except OSError as e:
            raise SMTPFail(stage, type(e).__name__)
        return self.expect(stage, code)

    def send(self, rcpt, subject, msgid, body_lines=20):
        """One MAIL/RCPT/DATA transaction; returns on 250 after DATA, else SMTPFail."""
        self.cmd("MAIL", "MAIL FROM:<bench@example.net>", "250")
        self.cmd("RCPT", f"RCPT TO:<{rcpt}>", "250")
        self.cmd("DATA", "DATA", "354")
        body = (f"From: bench@example.net\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
                f"Message-ID: <{msgid}>\r\n\r\n" +
                "".join(f"line {i} of {subject}\r\n" for i in range(body_lines)) + ".\r\n")
        try:
            self.s.sendall(body.encode())
        except OSError as e:
            raise SMTPFail("DATA-end", type(e).__name__)
        return self.expect("DATA-end", "250")

    def rset(self):
        self.cmd("RSET", "RSET", "250")

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def smtp_once(port, rcpt, subject, msgid, timeout):
    """A whole transaction on a new connection; returns None on 250, else the SMTPFail."""
    try:
        c = SMTPConn(port, timeout)
    except SMTPFail as e:
        return e
    try:
        c.send(rcpt, subject, msgid)
        try:
            c.s.sendall(b"QUIT\r\n")
        except OSError:
            pass
        return None
    except SMTPFail as e:
        return e
    finally:
        c.close()


# ---------------------------------------------------------------------------------------
# IMAP: which subjects a node's mailbox holds

def imap_subjects(port, user, timeout=60):
    """The Subject of every message in USER's INBOX on the node at PORT (its own IMAP
    listener, not HAProxy). Fetching the header needs the body, so this also proves that
    the node can read every body."""
    m = imaplib.IMAP4("127.0.0.1", port, timeout=timeout)
    try:
        m.login(user, PASSWORD)
        typ, data = m.select("INBOX", readonly=True)
        if typ != "OK":
            raise BenchError(f"IMAP SELECT on port {port}: {typ} {data}")
        exists = int(data[0])
        subjects = []
        if exists:
            typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            if typ != "OK":
                raise BenchError(f"IMAP FETCH on port {port}: {typ} {data}")
            for item in data:
                if isinstance(item, tuple):
                    mt = re.search(rb"Subject: *([^\r\n]*)", item[1], re.I)
                    subjects.append(mt.group(1).decode("latin-1") if mt else "")
        m.logout()
        return exists, subjects
    finally:
        try:
            m.shutdown()
        except Exception:
            pass


def median(v):
    s = sorted(v)
    if not s:
        return float("nan")
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
