# tests/integration/test_durability.py
# "Acknowledged means durable", tested by killing real processes: a stream of admin writes
# while ternd is SIGKILLed at a random moment, then a restart on the same data dir must
# show every acknowledged write, whole commands only, and an applied index that never
# goes back. Then the same across Raft snapshots: restart from snapshot + log tail.
# Set TERN_SEED to replay a run's kill timings.
import os
import random
import signal
import threading
import time

from conftest import mailbox_names, user_addresses, wait_until

DEFAULT_MAILBOXES = {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"}
CYCLES = 3
STREAM_MAX = 8.0  # seconds a write stream may last at most (the kill comes much earlier)
CTL_TIMEOUT = 10.0


def seed():
    s = int(os.environ.get("TERN_SEED", time.time_ns() % 1_000_000))
    print(f"TERN_SEED={s}")
    return s


def write_stream(t, user, dom, tag, kill_after):
    """Writes until ternd dies; a thread SIGKILLs it after KILL_AFTER seconds.
    Returns (acked mailboxes, acked users, highest applied index seen, failures), where
    failures are commands that were refused, or found ternd unavailable although they
    ended before the kill."""
    boxes, users, results = set(), set(), []
    max_applied = 0
    killed = threading.Event()
    kill_time = [None]

    def killer():
        time.sleep(kill_after)
        kill_time[0] = time.monotonic()
        t.signal(signal.SIGKILL)
        killed.set()

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    deadline = time.monotonic() + STREAM_MAX
    n = 0
    while time.monotonic() < deadline:
        n += 1
        if n % 7 == 0:
            addr = f"{tag}-u{n}@{dom}"
            r = t.ctl("user", "add", addr, password="pw", timeout=CTL_TIMEOUT)
            if r.rc == 0:
                users.add(addr)
        elif n % 5 == 0:
            r = t.ctl("status", timeout=CTL_TIMEOUT)
            if r.rc == 0:
                max_applied = max(max_applied, int(r.records[0]["applied"]))
        else:
            name = f"{tag}-{n:05d}"
            r = t.ctl("mailbox", "create", user, name, timeout=CTL_TIMEOUT)
            if r.rc == 0:
                boxes.add(name)
        results.append((time.monotonic(), r))
        if r.rc == 2 and killed.is_set():
            break
    th.join(timeout=STREAM_MAX)
    assert killed.is_set(), "the killer thread did not run"
    failures = [r for end, r in results if r.rc == 1 or (r.rc == 2 and end < kill_time[0])]
    return boxes, users, max_applied, failures


def test_kill9_during_write_stream(cluster):
    rng = random.Random(seed())
    t = cluster.node().start()
    dom = "dur.test"
    owner = f"owner@{dom}"
    t.ctl("domain", "add", dom).ok()
    t.ctl("user", "add", owner, password="pw").ok()
    all_boxes, all_users = set(), {owner}
    for cycle in range(CYCLES):
        boxes, users, max_applied, failures = write_stream(
            t, owner, dom, f"c{cycle}", kill_after=rng.uniform(0.3, 1.5)
        )
        assert t.wait(timeout=5) is not None, "ternd survived SIGKILL?"
        assert not failures, f"cycle {cycle}: writes failed while ternd ran: {failures[:3]}"
        assert boxes, f"cycle {cycle}: no write acknowledged before the kill: stream too short"
        all_boxes |= boxes
        all_users |= users

        t.start()
        st = t.status()
        assert int(st["applied"]) >= max_applied, (
            f"applied index went back: {st['applied']} < {max_applied} seen before the kill"
        )
        missing = all_boxes - mailbox_names(t, owner)
        assert not missing, f"cycle {cycle}: acknowledged mailboxes lost: {sorted(missing)[:10]}"
        present = user_addresses(t, dom)
        lost = all_users - present
        assert not lost, f"cycle {cycle}: acknowledged users lost: {sorted(lost)}"
        # A user add is one command: a user that exists has all of its mailboxes, whether
        # or not its add was acknowledged before the kill.
        check = (present - all_users) | set(sorted(users)[-2:])
        for addr in check:
            assert mailbox_names(t, addr) == DEFAULT_MAILBOXES, addr
    # Still a working server after all this.
    t.ctl("mailbox", "create", owner, "after-the-storm").ok()
    assert t.stop() == 0


def snapshot_sets(threshold=16, trailing=4):
    return [
        "--set", f"raft.snapshot_threshold={threshold}",
        "--set", f"raft.snapshot_trailing={trailing}",
    ]


def test_snapshot_restart_and_log_tail(cluster):
    t = cluster.node(sets=snapshot_sets()).start()
    dom = "snap.test"
    owner = f"owner@{dom}"
    t.ctl("domain", "add", dom).ok()
    t.ctl("user", "add", owner, password="pw").ok()
    users, boxes = {owner}, set()
    for i in range(100):
        if i % 10 == 9:
            addr = f"s{i}@{dom}"
            t.ctl("user", "add", addr, password="pw").ok()
            users.add(addr)
        else:
            t.ctl("mailbox", "create", owner, f"box{i:03d}").ok()
            boxes.add(f"box{i:03d}")
    t.ctl("mailbox", "subscribe", owner, "box000", "off").ok()

    st = wait_until(lambda: (lambda s: s if int(s["snapshot_index"]) > 0 else None)(t.status()),
                    timeout=5)
    assert st, f"no snapshot after 100 writes with threshold 16: {t.status()}"
    raft_dir = t.data_dir / "raft"
    snaps = sorted(p.name for p in raft_dir.glob("snapshot-*"))
    assert snaps, f"no snapshot-* files in {raft_dir}: {sorted(os.listdir(raft_dir))}"
    before = t.status()

    def check_state():
        assert users <= user_addresses(t, dom), users - user_addresses(t, dom)
        got = mailbox_names(t, owner)
        assert boxes | DEFAULT_MAILBOXES <= got, sorted(boxes - got)[:10]
        rec = [r for r in t.ctl("mailbox", "list", owner).ok().records
               if r.get("mailbox") == "box000"]
        assert rec and rec[0]["subscribed"] == "0", rec
        for addr in sorted(users - {owner})[:3]:
            assert mailbox_names(t, addr) == DEFAULT_MAILBOXES, addr

    # Clean stop and restart: state comes back from the snapshot (and the log after it).
    assert t.stop() == 0
    t.start()
    check_state()
    st = t.status()
    assert int(st["applied"]) >= int(before["applied"]), (st, before)
    assert int(st["snapshot_index"]) > 0, st

    # More writes, making sure some sit in the log after the latest snapshot, then kill -9:
    # the restart needs the snapshot plus the log tail.
    for i in range(100, 140):
        t.ctl("mailbox", "create", owner, f"box{i:03d}").ok()
        boxes.add(f"box{i:03d}")
    st = t.status()
    i = 140
    while int(st["last"]) <= int(st["snapshot_index"]) and i < 160:
        t.ctl("mailbox", "create", owner, f"box{i:03d}").ok()
        boxes.add(f"box{i:03d}")
        i += 1
        st = t.status()
    assert int(st["last"]) > int(st["snapshot_index"]), st
    seen = int(st["applied"])
    t.kill()
    t.start()
    check_state()
    st = t.status()
    assert int(st["applied"]) >= seen, (st, seen)
    assert int(st["snapshot_index"]) > 0, st
    # Old snapshots are pruned, not piling up (libraft keeps a couple).
    assert len(list(raft_dir.glob("snapshot-*"))) <= 8, sorted(os.listdir(raft_dir))
