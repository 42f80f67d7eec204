# tests/integration/test_daemon.py
# ternd as a process: its exit codes (0 clean stop, 1 startup failure, 2 configuration
# error naming FILE:LINE), the data dir lock, --print-config round trips, signals, its log
# format, and that a password is never logged nor stored in clear.
import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import TERND, port_sets, user_addresses

RUN_TIMEOUT = 10.0  # a ternd that should refuse to start must do so well within this
CONFIG_ERROR = 2
STARTUP_FAILURE = 1


def run_ternd(*args, cwd=None):
    """Runs ternd to completion (it is expected to exit by itself). Returns the process."""
    try:
        return subprocess.run(
            [str(TERND), *map(str, args)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=RUN_TIMEOUT,
            start_new_session=True,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"ternd {args} still running after {RUN_TIMEOUT}s; expected it to exit")


def err_text(p):
    return p.stderr.decode("utf-8", "replace")


# ---- the data dir lock ----


def test_second_ternd_on_same_data_dir_refused(ternd):
    ternd.ctl("domain", "add", "lock.test").ok()
    p = run_ternd("--data", ternd.data_dir, *port_sets())
    assert p.returncode == STARTUP_FAILURE, err_text(p)
    assert "held by another ternd" in err_text(p), err_text(p)
    # The first one is untouched: its socket is still there and it still writes.
    assert ternd.running()
    assert ternd.sock.exists(), "the refused ternd removed the running one's admin socket"
    assert ternd.status()["role"] == "leader"
    ternd.ctl("domain", "add", "lock2.test").ok()


def test_data_dir_unusable_is_startup_failure(cluster):
    f = cluster.workdir / "a-file"
    f.write_text("not a directory\n")
    p = run_ternd("--data", f / "data", *port_sets())
    assert p.returncode == STARTUP_FAILURE, err_text(p)


# ---- configuration errors: exit 2, "FILE:LINE: reason" ----


def conf_error(cluster, text, line, *words):
    path = cluster.workdir / "tern.conf"
    path.write_text(text)
    p = run_ternd("--config", path, "--data", cluster.workdir / "data", *port_sets())
    err = err_text(p)
    assert p.returncode == CONFIG_ERROR, err
    assert f"{path}:{line}:" in err, err
    for w in words:
        assert w in err, err
    return err


def test_config_malformed_line(cluster):
    conf_error(cluster, "# a comment\n[node]\nbogus\n", 3)


def test_config_unknown_key(cluster):
    conf_error(cluster, "[raft]\nheartbeat_ms = 100\n\nprot = 7\n", 4, "prot")


def test_config_unknown_section(cluster):
    conf_error(cluster, "; tern.conf\n[nosuch]\nkey = 1\n", 2, "nosuch")


def test_config_key_outside_section(cluster):
    conf_error(cluster, "id = 1\n", 1)


@pytest.mark.parametrize(
    "text,line",
    [
        ("[raft]\nheartbeat_ms = soon\n", 2),
        ("[raft]\naddress = nowhere\n", 2),
        ("[raft]\naddress = 127.0.0.1:99999\n", 2),
        ("[log]\nlevel = chatty\n", 2),
        ("[node]\nid = -1\n", 2),
    ],
    ids=["uint", "addr", "port", "level", "negative"],
)
def test_config_bad_values(cluster, text, line):
    conf_error(cluster, text, line)


def test_config_missing_file(cluster):
    path = cluster.workdir / "nope.conf"
    p = run_ternd("--config", path, "--data", cluster.workdir / "data", *port_sets())
    assert p.returncode == CONFIG_ERROR, err_text(p)
    assert str(path) in err_text(p), err_text(p)


@pytest.mark.parametrize(
    "arg", ["raft.nosuch=1", "raft.heartbeat_ms=abc", "novalue", "nosection=1", "=1"]
)
def test_bad_set_option(cluster, arg):
    p = run_ternd("--data", cluster.workdir / "data", *port_sets(), "--set", arg)
    assert p.returncode == CONFIG_ERROR, err_text(p)


def test_unknown_option(cluster):
    p = run_ternd("--data", cluster.workdir / "data", *port_sets(), "--frobnicate")
    assert p.returncode == CONFIG_ERROR, err_text(p)


# ---- --print-config ----


def ini_values(text):
    """{'section.key': value} from tern.conf text (quotes kept off)."""
    out, section = {}, None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        key, _, val = line.partition("=")
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1]
        out[f"{section}.{key.strip()}"] = val
    return out


def test_print_config_round_trip_and_start(cluster):
    node = cluster.node()
    data = node.data_dir
    sets = node.ports + ["--set", "raft.heartbeat_ms=150", "--set", "node.hostname=mx.it.test"]
    p = run_ternd("--data", data, *sets, "--print-config")
    assert p.returncode == 0, err_text(p)
    text = p.stdout.decode()
    vals = ini_values(text)
    assert vals["raft.heartbeat_ms"] == "150"
    assert vals["node.hostname"] == "mx.it.test"
    assert vals["node.data_dir"] == str(data)
    assert "raft.snapshot_threshold" in vals and "listen.imap" in vals
    assert not data.exists() or not any(data.iterdir()), "--print-config must not touch data"
    conf = node.workdir / "printed.conf"
    conf.write_text(text)

    # Reading it back prints the same configuration.
    p2 = run_ternd("--config", conf, "--print-config")
    assert p2.returncode == 0, err_text(p2)
    assert p2.stdout.decode() == text

    # And it runs a ternd with no other option.
    node.config, node.bare = conf, True
    node.start()
    assert node.status()["role"] == "leader"
    assert node.stop() == 0


# ---- signals and the log ----


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_clean_exit(cluster, sig):
    t = cluster.node().start()
    t.ctl("domain", "add", "sig.test").ok()
    assert t.sock.exists()
    t.signal(sig)
    rc = t.wait(timeout=10)
    assert rc == 0, f"exit {rc}:\n{t.log_tail()}"
    assert not t.sock.exists(), "admin socket left behind after a clean stop"
    # The lock is released and the data is there.
    t.start()
    r = t.ctl("domain", "list").ok()
    assert "domain=sig.test" in r.lines


def test_log_lines_are_key_value(ternd):
    ternd.ctl("domain", "add", "log.test").ok()
    assert ternd.stop() == 0
    lines = [l for l in ternd.log().splitlines() if l.strip()]
    assert any("event=ternd.ready" in l for l in lines), ternd.log_tail()
    bad = [l for l in lines if not l.startswith("ts=") or " level=" not in l or " event=" not in l]
    assert not bad, f"log lines not in key=value form: {bad[:5]}"


def test_password_never_logged_or_stored_in_clear(cluster):
    t = cluster.node(sets=["--set", "log.level=debug"]).start()
    secret = "Zq7-not-in-any-log-9xK"
    t.ctl("domain", "add", "pw.test").ok()
    t.ctl("user", "add", "sam@pw.test", password=secret).ok()
    t.ctl("user", "verify", "sam@pw.test", password=secret).ok()
    t.ctl("user", "passwd", "sam@pw.test", password=secret + "2").ok()
    assert "sam@pw.test" in user_addresses(t)
    assert t.stop() == 0
    assert secret not in t.log(), "password in ternd's log"
    needle = secret.encode()
    for root, _, files in os.walk(t.data_dir):
        for name in files:
            data = Path(root, name).read_bytes()
            assert needle not in data, f"password in clear in {Path(root, name)}"
