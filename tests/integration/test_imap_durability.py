# tests/integration/test_imap_durability.py
# "OK means durable" for IMAP writes, by killing ternd with SIGKILL right after the tagged
# OK: an APPENDed message, STOREd flags, an EXPUNGE, a COPY/MOVE, mailbox CREATE/RENAME
# and the \Seen set by FETCH BODY[] are all there after a restart on the same data dir,
# and a burst of pipelined APPENDs cut off midway leaves every acknowledged message whole
# and nothing partial. One ternd for the module; every test kills and restarts it.
import os
import re
import signal
import threading

import pytest

from conftest import (
    IMAP_DOMAIN,
    IMAP_PW,
    Cluster,
    RawIMAP,
    imap_fetches,
    imap_node,
    imap_user,
    need_binaries,
)


@pytest.fixture(scope="module")
def t():
    need_binaries()
    c = Cluster()
    node = imap_node(c).start()
    node.ctl("domain", "add", IMAP_DOMAIN).ok()
    yield node
    c.close(keep=os.environ.get("TERN_KEEP_TMP"))


def kill_restart(t):
    t.signal(signal.SIGKILL)  # at once: no chance to flush anything more
    assert t.wait() == -signal.SIGKILL
    t.start()


def conn(t, user):
    return RawIMAP(t.imap_ports["imap"]).login(user, IMAP_PW)


def msg(tag, size=1500):
    line = (tag + " ").encode() * 8 + b"\r\n"
    return b"Subject: " + tag.encode() + b"\r\n\r\n" + line * (size // len(line))


def contents(t, user, mailbox="INBOX"):
    """[(uid, sorted flags, body)] of MAILBOX, read through IMAP."""
    r = conn(t, user)
    try:
        r.ok(f'EXAMINE "{mailbox}"')
        f = imap_fetches(r.ok("FETCH 1:* (UID FLAGS BODY.PEEK[])"))
        return [(int(v["UID"]), sorted(v["FLAGS"]), v["BODY[]"]) for _, v in sorted(f.items())]
    finally:
        r.close()


def test_append_ok_then_sigkill(t):
    user = imap_user(t)
    acked = []
    for i in range(3):
        r = conn(t, user)
        m = msg(f"append-{i}")
        uid, _ = r.append("INBOX", m, flags=["\\Flagged", "$Kept"])
        kill_restart(t)
        r.close()
        acked.append((uid, ["$Kept", "\\Flagged"], m))
        assert contents(t, user) == acked, f"after kill {i + 1}"


def test_store_ok_then_sigkill(t):
    user = imap_user(t)
    r = conn(t, user)
    for i in range(3):
        r.append("INBOX", msg(f"store-{i}"))
    r.ok("ENABLE CONDSTORE")
    r.ok("SELECT INBOX")
    f = imap_fetches(r.ok("STORE 1,3 +FLAGS (\\Answered $Done)"))
    modseq = int(f[1]["MODSEQ"][0])
    kill_restart(t)
    r.close()
    got = contents(t, user)
    assert [g[1] for g in got] == [["$Done", "\\Answered"], [], ["$Done", "\\Answered"]]
    r = conn(t, user)
    r.ok("ENABLE CONDSTORE")
    sel = r.ok("SELECT INBOX")
    assert int(re.search(rb"HIGHESTMODSEQ (\d+)", b"\n".join(sel)).group(1)) >= modseq
    f = imap_fetches(r.ok("FETCH 1 MODSEQ"))
    assert int(f[1]["MODSEQ"][0]) == modseq
    # -FLAGS and FLAGS too
    r.ok("STORE 1 -FLAGS ($Done)")
    r.ok("STORE 2 FLAGS (\\Draft)")
    kill_restart(t)
    r.close()
    assert [g[1] for g in contents(t, user)] == [["\\Answered"], ["\\Draft"],
                                                 ["$Done", "\\Answered"]]


def test_fetch_seen_then_sigkill(t):
    user = imap_user(t)
    r = conn(t, user)
    r.append("INBOX", msg("seen"))
    r.ok("SELECT INBOX")
    f = imap_fetches(r.ok("FETCH 1 BODY[]"))
    assert "\\Seen" in f[1]["FLAGS"]
    kill_restart(t)
    r.close()
    assert contents(t, user)[0][1] == ["\\Seen"]


def test_expunge_ok_then_sigkill(t):
    user = imap_user(t)
    r = conn(t, user)
    for i in range(4):
        r.append("INBOX", msg(f"expunge-{i}"))
    r.ok("ENABLE QRESYNC")
    sel = r.ok("SELECT INBOX")
    uv = int(re.search(rb"UIDVALIDITY (\d+)", b"\n".join(sel)).group(1))
    hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"\n".join(sel)).group(1))
    r.ok("STORE 2,3 +FLAGS.SILENT (\\Deleted)")
    r.ok("EXPUNGE")
    kill_restart(t)
    r.close()
    assert [g[0] for g in contents(t, user)] == [1, 4]
    # the expunges are remembered for QRESYNC
    r = conn(t, user)
    r.ok("ENABLE QRESYNC")
    lines = r.ok(f"SELECT INBOX (QRESYNC ({uv} {hms}))")
    assert any(re.match(rb"\* VANISHED \(EARLIER\) 2(:3|,3)$", l) for l in lines), lines
    r.close()


def test_copy_move_mailboxes_then_sigkill(t):
    user = imap_user(t)
    r = conn(t, user)
    bodies = [msg(f"cm-{i}") for i in range(3)]
    for b in bodies:
        r.append("INBOX", b)
    r.ok('CREATE "kept/deep"')
    r.ok('CREATE "renamed-from"')
    r.ok('RENAME "renamed-from" "renamed-to"')
    r.ok("SELECT INBOX")
    r.ok('COPY 1 "kept/deep"')
    r.ok('MOVE 2 "renamed-to"')
    kill_restart(t)
    r.close()
    assert [g[2] for g in contents(t, user)] == [bodies[0], bodies[2]]
    assert [g[2] for g in contents(t, user, "kept/deep")] == [bodies[0]]
    assert [g[2] for g in contents(t, user, "renamed-to")] == [bodies[1]]
    r = conn(t, user)
    names = {l.split(b'"/" ')[-1] for l in r.ok('LIST "" "*"')}
    assert b'"renamed-from"' not in names and b'"kept"' in names
    r.close()


def test_pipelined_appends_cut_off(t):
    """100 APPENDs in one stream, ternd killed after the 30th OK: the acknowledged ones
    are there, whole; any other is whole or absent."""
    user = imap_user(t)
    r = conn(t, user)
    bodies = [msg(f"burst-{i}", size=3000) for i in range(100)]
    data = b"".join(b"B%d APPEND INBOX {%d+}\r\n%s\r\n" % (i, len(b), b)
                    for i, b in enumerate(bodies))
    sender = threading.Thread(target=lambda: _send_quietly(r, data), daemon=True)
    sender.start()
    acked = []
    while len(acked) < 30:
        ln = r.line()
        m = re.match(rb"B(\d+) OK", ln)
        if m:
            acked.append(int(m.group(1)))
    kill_restart(t)
    r.close()
    sender.join(10)
    got = [g[2] for g in contents(t, user)]
    assert set(bodies[i] for i in acked) <= set(got)
    assert all(g in bodies for g in got)  # nothing partial
    assert len(got) == len(set(got))
    # in order, without holes: a prefix of the stream
    assert got == bodies[: len(got)]


def _send_quietly(r, data):
    try:
        r.send(data)
    except OSError:
        pass  # ternd was killed under our feet
