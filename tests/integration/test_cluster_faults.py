# tests/integration/test_cluster_faults.py
# A 3-node cluster under faults, with real processes: SIGKILL of the leader and of
# followers while a client delivers mail and sets flags through HAProxy (no acknowledged
# message or flag is lost, nothing is delivered twice, every node ends with the same
# mailbox); a node frozen (SIGSTOP) past the election timeout rejoins as a follower and
# catches up; a node whose data is wiped is replaced by a fresh one, and repair brings
# every body back to R=3 copies.
import os
import re
import shutil
import signal
import threading
import time

import pytest

from conftest import (
    RawIMAP,
    RawPOP3,
    RawSMTP,
    SmtpClosed,
    ImapClosed,
    TernCluster,
    cluster_status,
    dot_stuff,
    imap_fetches,
    smtp_deliver,
    split_trace,
    try_status,
    wait_until,
)

PW = "faults-pw"
KILLS = 10  # SIGKILLs in the delivery stream test
DOWN_S = 1.5  # a killed node stays down this long
RUN_S = 0.8  # traffic between a node's return and the next kill
HEALTHY_WAIT = 20.0  # restart -> all 3 up with an agreed leader
CONVERGE_WAIT = 30.0
CLIENT_TIMEOUT = 20.0  # one SMTP/IMAP reply through HAProxy while leaders change
BODY_WAIT = 30.0  # repair brings every body to every node (pass every 500 ms)


def setup_user(t, domain, local="u"):
    t.ctl("domain", "add", domain).ok()
    addr = f"{local}@{domain}"
    t.ctl("user", "add", addr, password=PW).ok()
    return addr


def message(n, run, size=0):
    pad = "".join(f"line {n}.{i} " + "y" * 60 + "\r\n" for i in range(size // 70))
    return (f"From: s@far.example\r\nTo: u@x\r\nSubject: msg-{n}\r\n"
            f"Message-ID: <msg-{n}.{run}@far.example>\r\n\r\nbody of msg-{n}\r\n{pad}").encode()


def mailbox_view(port, user, bodies=True, timeout=CLIENT_TIMEOUT):
    """[(uid, subject, sorted flags, body or None)] of INBOX through the IMAP port."""
    with RawIMAP(port, timeout=timeout) as r:
        r.login(user, PW)
        r.ok("EXAMINE INBOX")
        items = "UID FLAGS BODY.PEEK[]" if bodies else \
            "UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)]"
        f = imap_fetches(r.ok(f"UID FETCH 1:* ({items})"))
    out = []
    for v in f.values():
        raw = v.get("BODY[]") or v.get("BODY[HEADER.FIELDS (SUBJECT)]") or b""
        m = re.search(rb"^Subject: (.*)$", raw, re.M | re.I)
        subj = m.group(1).strip().decode() if m else None
        out.append((int(v["UID"]), subj, tuple(sorted(v["FLAGS"])),
                    v.get("BODY[]") if bodies else None))
    return sorted(out)


# ---------------------------------------------------------------------------------------
# 7. the delivery stream under kills


class Stream:
    """The client side of the kill test: a thread delivering numbered messages through
    HAProxy's SMTP port (up to 3 per connection), a thread flagging delivered ones through
    HAProxy's IMAP port. Everything acknowledged is recorded."""

    def __init__(self, h, user, run):
        self.h, self.user, self.run = h, user, run
        self.stop = threading.Event()
        self.sent = 0
        self.acked = set()  # n whose DATA got 250
        self.refused = {}  # n -> the reply or error
        self.to_flag = []  # acked n, for the flagger
        self.flag_acked = set()  # n whose UID STORE +FLAGS (\Flagged) got OK
        self.flag_tries = 0
        self.errors = []  # unexpected exceptions in a thread
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._guard, args=(f,), daemon=True)
                        for f in (self._deliver, self._flag)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def finish(self, timeout=60):
        self.stop.set()
        for t in self.threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self.threads), "client thread stuck"
        assert not self.errors, self.errors

    def _guard(self, f):
        try:
            f()
        except Exception:  # recorded: the test fails on it
            import traceback

            self.errors.append(traceback.format_exc())

    def _deliver(self):
        n = 0
        port = self.h.ports["smtp"]
        while not self.stop.is_set():
            s = None
            try:
                s = RawSMTP(port, timeout=CLIENT_TIMEOUT)
                if s.greeting[0] != 220:
                    raise SmtpClosed(f"greeting {s.greeting}")
                s.ehlo()
                for _ in range(3):
                    if self.stop.is_set():
                        break
                    n += 1
                    self.sent = n
                    try:
                        code = self._one(s, n)
                    except Exception as e:
                        self.refused[n] = repr(e)
                        raise
                    if code == 250:
                        with self.lock:
                            self.acked.add(n)
                            if n % 3 == 0:
                                self.to_flag.append(n)
                    else:
                        self.refused[n] = code
                        break
                try:
                    s.cmd("QUIT")
                except Exception:
                    pass
            except (SmtpClosed, OSError, AssertionError):
                time.sleep(0.05)  # a node died under us, or no node answers yet
            finally:
                if s is not None:
                    s.close()

    def _one(self, s, n):
        code, _ = s.cmd("MAIL FROM:<s@far.example>")
        if code != 250:
            return code
        code, _ = s.cmd(f"RCPT TO:<{self.user}>")
        if code != 250:
            s.cmd("RSET")
            return code
        code, _ = s.cmd("DATA")
        if code != 354:
            return code
        s.send(dot_stuff(message(n, self.run, size=(n % 7) * 300)))
        return s.reply()[0]

    def _flag(self):
        port = self.h.ports["imap"]
        while not self.stop.is_set():
            with self.lock:
                n = self.to_flag.pop(0) if self.to_flag else None
            if n is None:
                time.sleep(0.05)
                continue
            self.flag_tries += 1
            r = None
            try:
                r = RawIMAP(port, timeout=CLIENT_TIMEOUT)
                r.login(self.user, PW)
                r.ok("SELECT INBOX")
                lines = r.ok(f'UID SEARCH HEADER Message-ID "<msg-{n}.{self.run}@"')
                uids = [int(x) for l in lines if l.startswith(b"* SEARCH")
                        for x in l.split()[2:]]
                if len(uids) != 1:  # not visible here yet (or twice: the end check says)
                    continue
                tag = r.tag()
                _, done = r.cmd(f"UID STORE {uids[0]} +FLAGS.SILENT (\\Flagged)", tag)
                if done.startswith(f"{tag} OK".encode()):
                    with self.lock:
                        self.flag_acked.add(n)
                r.cmd("LOGOUT")
            except (ImapClosed, OSError, AssertionError):
                time.sleep(0.05)
            finally:
                if r is not None:
                    r.close()


def test_delivery_stream_under_kills(cluster, haproxy, capsys):
    tc = TernCluster(cluster).form(3)
    user = setup_user(tc.nodes[0], "kill.test")
    h = haproxy(tc.nodes[0])
    run = os.urandom(4).hex()
    stream = Stream(h, user, run).start()
    kills = []
    t_start = time.monotonic()
    try:
        assert wait_until(lambda: len(stream.acked) >= 3, 15), "no delivery before the kills"
        for k in range(KILLS):
            lead = tc.leader(timeout=HEALTHY_WAIT)
            if k % 2 == 0:
                victim = lead
            else:
                victim = next(t for t in tc.nodes if t is not lead and t.node_id != kills[-1][0])
            acked_before = len(stream.acked)
            victim.kill()
            kills.append((victim.node_id, "leader" if victim is lead else "follower"))
            time.sleep(DOWN_S)
            tc.restart(victim)
            tc.leader(timeout=HEALTHY_WAIT)  # all three up and agreeing on a leader
            time.sleep(RUN_S)
            assert wait_until(lambda: len(stream.acked) > acked_before, HEALTHY_WAIT), \
                f"no delivery acknowledged after kill {k + 1} ({kills[-1]})"
    finally:
        stream.finish()
    took = time.monotonic() - t_start

    tc.wait_converged(CONVERGE_WAIT)
    views = {}
    for t in tc.nodes:
        views[t.node_id] = mailbox_view(t.imap_ports["imap"], user)
    ref = views[tc.nodes[0].node_id]
    by_subject = {}
    for uid, subj, flags, body in ref:
        by_subject.setdefault(subj, []).append((uid, flags, body))
    dups = {s: v for s, v in by_subject.items() if len(v) > 1}
    lost = sorted(n for n in stream.acked if f"msg-{n}" not in by_subject)
    flags_lost = sorted(n for n in stream.flag_acked
                        if f"msg-{n}" in by_subject
                        and "\\Flagged" not in by_subject[f"msg-{n}"][0][1])
    unacked_present = sum(1 for n in range(1, stream.sent + 1)
                          if n not in stream.acked and f"msg-{n}" in by_subject)
    summary = (f"cluster kill stream: sent={stream.sent} acknowledged={len(stream.acked)} "
               f"kills={len(kills)} lost={len(lost)} duplicates={len(dups)} "
               f"flag_stores_acked={len(stream.flag_acked)}/{stream.flag_tries} "
               f"flags_lost={len(flags_lost)} unacked_but_stored={unacked_present} "
               f"mailbox={len(ref)} seconds={took:.0f} kills_order={kills}")
    with capsys.disabled():  # shown in CI logs even when the test passes
        print("\n" + summary)
    assert len(kills) >= KILLS
    assert len(stream.acked) >= 3 * KILLS, "too few deliveries to mean anything"
    assert len(stream.flag_acked) >= 3, "too few flag changes to mean anything"
    assert not lost, f"acknowledged messages lost: {lost}"
    assert not dups, f"delivered twice: {sorted(dups)}"
    assert not flags_lost, f"acknowledged \\Flagged lost: {flags_lost}"
    assert all(s is not None and re.fullmatch(r"msg-\d+", s) for s in by_subject), by_subject.keys()
    for subj, [(uid, flags, body)] in by_subject.items():
        n = int(subj[4:])
        assert split_trace(body)[1] == message(n, run, size=(n % 7) * 300), subj
    for node_id, v in views.items():
        assert [(u, s, f) for u, s, f, _ in v] == [(u, s, f) for u, s, f, _ in ref], \
            f"node {node_id} lists another mailbox than node {tc.nodes[0].node_id}"
        assert [b for *_, b in v] == [b for *_, b in ref], f"node {node_id}: other bodies"
    uids = [u for u, *_ in ref]
    assert uids == sorted(uids) and len(set(uids)) == len(uids)
    # and repair gives every body its 3 copies again: each node alone (the other two
    # frozen, so nothing can be fetched from them) serves every message. (cluster status
    # counts are not enough: bodies of deliveries that failed half-way stay until the GC
    # grace has passed, and count too.)
    deadline = time.monotonic() + BODY_WAIT
    for t in tc.nodes:
        others = [o for o in tc.nodes if o is not t]
        while True:
            for o in others:
                o.signal(signal.SIGSTOP)
            try:
                alone = mailbox_view(t.imap_ports["imap"], user, timeout=5)
                err = None
            except (OSError, ImapClosed, AssertionError) as e:
                alone, err = None, e
            finally:
                for o in others:
                    o.signal(signal.SIGCONT)
            if alone is not None or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert alone is not None, f"node {t.node_id} alone cannot serve every body: {err!r}"
        assert alone == ref, f"node {t.node_id} alone serves another mailbox"


# ---------------------------------------------------------------------------------------
# 8. a frozen node


@pytest.mark.parametrize("who", ["leader", "follower"])
def test_frozen_node_rejoins_and_catches_up(cluster, who):
    tc = TernCluster(cluster).form(3)
    user = setup_user(tc.nodes[0], f"frozen-{who}.test")
    lead = tc.leader()
    frozen = lead if who == "leader" else next(t for t in tc.nodes if t is not lead)
    live = [t for t in tc.nodes if t is not frozen]
    for i in range(2):
        smtp_deliver(tc.nodes[i], user, message(i, "f", size=500))
    before = tc.wait_converged()
    term0 = int(before[frozen.node_id]["term"])

    frozen.signal(signal.SIGSTOP)
    try:
        time.sleep(1.5)  # > 2x the 500 ms election timeout
        new_lead = None
        if who == "leader":
            def elected():
                st = {t.node_id: try_status(t) for t in live}
                ok = all(s and s["role"] in ("leader", "follower") and s["leader"] not in
                         ("0", str(frozen.node_id)) for s in st.values())
                return ok and st
            st = wait_until(elected, 10)
            assert st, {t.node_id: try_status(t) for t in live}
            new_lead = int(next(iter(st.values()))["leader"])
        sent = []
        for i in range(2, 10):
            t0 = time.monotonic()
            m = message(i, "f", size=(i % 4) * 2000)
            smtp_deliver(live[i % 2], user, m)
            assert time.monotonic() - t0 < 10, "a delivery waited on the frozen node"
            sent.append(m)
        # the frozen node's admin socket does not answer, the cluster does
        assert try_status(frozen, timeout=1.0) is None
        head, st = cluster_status(live[0])
        assert st[frozen.node_id]["state"] == "down", st
    finally:
        frozen.signal(signal.SIGCONT)

    st = tc.wait_converged(CONVERGE_WAIT)
    s = st[frozen.node_id]
    if who == "leader":
        assert s["role"] == "follower" and s["leader"] == str(new_lead), s
        assert int(s["term"]) > term0, s
    else:
        assert s["role"] == "follower" and s["leader"] == str(lead.node_id), s
    # it serves the mail delivered while it was frozen, bodies included
    view = mailbox_view(frozen.imap_ports["imap"], user)
    assert [v[1] for v in view] == [f"msg-{i}" for i in range(10)], view
    for (_, _, _, body), m in zip(view[2:], sent):
        assert split_trace(body)[1] == m
    assert view == mailbox_view(live[0].imap_ports["imap"], user)
    # and the bodies come back to it by repair (R=3 of 3 nodes: every node owns all)
    assert wait_until(lambda: int(cluster_status(frozen)[1][frozen.node_id]["bodies"]) == 10,
                      BODY_WAIT), cluster_status(frozen)


# ---------------------------------------------------------------------------------------
# 9. a wiped node is replaced, and repair restores R=3


def test_wiped_node_replaced_and_bodies_repaired(cluster):
    tc = TernCluster(cluster).form(3)
    n1, n2, n3 = tc.nodes
    user = setup_user(n1, "wiped.test")
    sent = []
    for i in range(6):
        m = message(i, "w", size=i * 3000)
        smtp_deliver(tc.nodes[i % 3], user, m)
        sent.append(m)

    def bodies_everywhere(nodes, count):
        last = {}

        def ok():
            head, st = cluster_status(nodes[0])
            last["st"] = st
            return all(int(st[t.node_id].get("bodies", -1)) == count for t in nodes) and st
        st = wait_until(ok, BODY_WAIT, 0.25)
        assert st, f"not {count} bodies on every node: {last.get('st')}"
        return st

    bodies_everywhere(tc.nodes, 6)

    # node 3 dies with its disk; mail keeps coming while it is gone
    n3.kill()
    shutil.rmtree(n3.data_dir)
    for i in range(6, 9):
        m = message(i, "w", size=2000 + i)
        smtp_deliver(tc.nodes[i % 2], user, m)
        sent.append(m)
    n1.ctl("cluster", "remove", "3").ok()
    tc.wait_members([1, 2])
    for t in (n1, n2):
        head, st = cluster_status(t)
        assert head["members"] == "2" and sorted(st) == [1, 2], (head, st)

    # a fresh node 4 on new ports joins
    n4 = tc.new_node(node_id=4)
    r = tc.join(n4, seed=n2)
    assert r.rc == 0 and r.out.strip() == "ok", r
    tc.wait_members([1, 2, 4])
    st = bodies_everywhere([n1, n2, n4], len(sent))
    assert len({st[i]["body_bytes"] for i in (1, 2, 4)}) == 1, st
    assert sum(int(st[i]["repair_copied"]) for i in (1, 2, 4)) >= len(sent), st
    tc.wait_converged()

    # node 4 serves every body, byte for byte, without asking anybody
    n1.signal(signal.SIGSTOP)
    n2.signal(signal.SIGSTOP)
    try:
        with RawPOP3(n4.pop3_ports["pop3"]) as p:
            p.login(user, PW)
            _, lines = p.multi("LIST")
            assert len(lines) == len(sent), lines
            for k, m in enumerate(sent, 1):
                _, body = p.multi(f"RETR {k}")
                raw = b"".join((l[1:] if l.startswith(b".") else l) + b"\r\n" for l in body)
                assert split_trace(raw)[1] == m, k
    finally:
        n1.signal(signal.SIGCONT)
        n2.signal(signal.SIGCONT)
    view = mailbox_view(n4.imap_ports["imap"], user)
    assert [split_trace(v[3])[1] for v in view] == sent
    tc.wait_converged(CONVERGE_WAIT)


def bodies_per_node(t, ids):
    head, st = cluster_status(t)
    return {i: int(st[i].get("bodies", -1)) for i in ids if i in st and st[i].get("state") == "up"}


def test_join_moves_bodies_so_placement_holds(cluster):
    """With R=3, a fourth node takes its share of the bodies and the nodes that stopped
    owning a body drop their copy: every body ends with exactly 3 copies."""
    tc = TernCluster(cluster).form(3)
    n1 = tc.nodes[0]
    user = setup_user(n1, "rebalance.test")
    count = 16
    for i in range(count):
        smtp_deliver(tc.nodes[i % 3], user, message(i, "r", size=500 + 97 * i))
    ids = [1, 2, 3]
    got = wait_until(lambda: (lambda b: b if len(b) == 3 and all(v == count for v in b.values())
                              else None)(bodies_per_node(n1, ids)), BODY_WAIT, 0.25)
    assert got, bodies_per_node(n1, ids)

    n4 = tc.new_node(node_id=4)
    r = tc.join(n4, seed=n1)
    assert r.rc == 0 and r.out.strip() == "ok", r
    tc.wait_members([1, 2, 3, 4])
    ids = [1, 2, 3, 4]

    def settled():
        b = bodies_per_node(n1, ids)
        return b if len(b) == 4 and sum(b.values()) == 3 * count and b[4] > 0 else None

    b = wait_until(settled, BODY_WAIT, 0.25)
    assert b, f"bodies never settled at {3 * count} copies: {bodies_per_node(n1, ids)}"
    assert all(v <= count for v in b.values()), b
    head, st = cluster_status(n1)
    assert sum(int(st[i]["bodies_deleted"]) for i in ids) >= count // 4, st
    # the new node serves every message (its own copies or fetched from an owner)
    view = mailbox_view(n4.imap_ports["imap"], user)
    assert sorted(v[1] for v in view) == sorted(f"msg-{i}" for i in range(count)), view


def test_unreferenced_bodies_are_deleted_everywhere(cluster):
    """Expunged mail's bodies go from every node once the grace period has passed, and
    a body still referenced by another mailbox stays."""
    tc = TernCluster(cluster, sets=["--set", "cluster.gc_grace_ms=1000"]).form(3)
    n1, n2, n3 = tc.nodes
    user = setup_user(n1, "gc.test")
    other = "o@gc.test"
    n1.ctl("user", "add", other, password=PW).ok()
    for i in range(4):
        smtp_deliver(tc.nodes[i % 3], user, message(i, "g", size=800))
    kept = message(99, "g", size=300)
    smtp_deliver(n2, [user, other], kept)  # one transaction: one body, two references
    ids = [1, 2, 3]
    assert wait_until(lambda: all(v == 5 for v in bodies_per_node(n1, ids).values())
                      and len(bodies_per_node(n1, ids)) == 3, BODY_WAIT, 0.25), \
        bodies_per_node(n1, ids)

    with RawIMAP(n2.imap_ports["imap"]) as c:
        c.login(user, PW)
        c.ok("SELECT INBOX")
        c.ok("STORE 1:* +FLAGS (\\Deleted)")
        c.ok("EXPUNGE")

    def gone():
        b = bodies_per_node(n1, ids)
        return b if len(b) == 3 and all(v == 1 for v in b.values()) else None

    b = wait_until(gone, BODY_WAIT, 0.25)
    assert b, f"unreferenced bodies not deleted: {bodies_per_node(n1, ids)}"
    head, st = cluster_status(n1)
    assert all(int(st[i]["bodies_deleted"]) >= 4 for i in ids), st
    # the shared body is still served to its other owner
    view = mailbox_view(n3.imap_ports["imap"], other)
    assert [v[1] for v in view] == ["msg-99"], view
