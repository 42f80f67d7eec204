# tests/integration/test_cluster.py
# A real 3-node cluster on loopback (node 1 bootstraps, nodes 2 and 3 join it with its
# secret), driven through every node's own ports and through HAProxy: the members and the
# status agree on every node, and a join answers once the node is a voter; a write
# through any node (admin, SMTP, IMAP) is visible through every node: a session that
# starts after the write was acknowledged sees it (another connection of the same client,
# directly or through HAProxy), an IDLE session hears of it within a bounded wait; every
# body reaches R=3 copies and every node serves it byte for byte; strangers on the
# internal ports (Raft, RPC) are turned away without disturbing the cluster, and so is a
# node with another secret; leadership transfer and member removal.
import os
import re
import secrets
import socket
import struct
import time

from conftest import (
    TernCluster,
    RawIMAP,
    RawPOP3,
    cluster_members,
    cluster_status,
    imap_fetches,
    smtp_deliver,
    split_trace,
    try_status,
    user_addresses,
    wait_until,
)

PW = "cluster-pw"
UPDATE_WAIT = 5.0  # a change made through one node reaches an IDLE session on another
SPREAD_WAIT = 5.0  # an admin write through one node is visible on the others
BODY_WAIT = 20.0  # deliveries -> every node holds every body (repair pass every 500 ms)
REFUSE_WAIT = 8.0  # a stranger's connection is closed (handshake limit: 5 s Raft, 3 s RPC)


def setup_users(t, domain, *locals_):
    t.ctl("domain", "add", domain).ok()
    out = []
    for l in locals_:
        addr = f"{l}@{domain}"
        t.ctl("user", "add", addr, password=PW).ok()
        out.append(addr)
    return out


def msg(n, subject=None, extra=b""):
    return (f"From: s@far.example\r\nTo: u@x\r\nSubject: {subject or f'msg {n}'}\r\n"
            f"Message-ID: <{n}.{secrets.token_hex(6)}@far.example>\r\n\r\n"
            f"body {n}\r\n").encode() + extra


def imap_on(t, user):
    return RawIMAP(t.imap_ports["imap"]).login(user, PW)


def fetch_all(r, items="UID FLAGS BODY.PEEK[]"):
    """{uid: items} of the selected mailbox (empty when it is)."""
    f = imap_fetches(r.ok(f"UID FETCH 1:* ({items})"))
    return {int(v["UID"]): v for v in f.values()}


def wait_line(r, pattern, timeout=UPDATE_WAIT):
    """Reads lines until one matches PATTERN (bytes regex) within TIMEOUT; returns it."""
    deadline = time.monotonic() + timeout
    seen = []
    old = r.s.gettimeout()
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} within {timeout}s; got {seen}")
            r.s.settimeout(left)
            try:
                ln = r.line()
            except (TimeoutError, OSError) as e:
                raise AssertionError(f"no {pattern!r} within {timeout}s; got {seen}") from e
            if re.search(pattern, ln):
                return ln
            seen.append(ln)
    finally:
        r.s.settimeout(old)


# ---------------------------------------------------------------------------------------
# 1. forming


def test_forming_members_and_status_agree(tern3):
    nodes = tern3.nodes
    lead = tern3.leader()  # node 1 unless an election happened meanwhile
    want = {t.node_id: t for t in nodes}
    members = {}
    for t in nodes:
        m = cluster_members(t)
        members[t.node_id] = m
        assert sorted(m) == [1, 2, 3], m
        for i, rec in m.items():
            n = want[i]
            assert rec["role"] == "voter", rec
            assert rec["raft"] == n.raft_addr and rec["rpc"] == n.rpc_addr, rec
            for name, port in {**n.smtp_ports, **n.imap_ports, **n.pop3_ports}.items():
                assert rec[name] == f"127.0.0.1:{port}", (name, rec)
    assert members[1] == members[2] == members[3]

    for t in nodes:
        head, st = cluster_status(t)
        assert head["leader"] == str(lead.node_id), head
        assert head["members"] == "3" and head["replicas"] == "3", head
        assert sorted(st) == [1, 2, 3], st
        for i, rec in st.items():
            assert rec["state"] == "up" and rec["raft_role"] == "voter", rec
            assert rec["role"] == ("leader" if i == lead.node_id else "follower"), rec
            assert rec["rpc"] == want[i].rpc_addr, rec
            assert rec["term"] == head["term"], (head, rec)
        s = t.status()
        assert s["node"] == str(t.node_id) and s["leader"] == str(lead.node_id), s
        assert s["role"] == ("leader" if t is lead else "follower"), s

    # an idle cluster: every node's own status and cluster status tell the same indexes,
    # and nothing is left to apply (the last entries are membership changes)
    last = {}

    def same_indexes():
        head, st = cluster_status(lead)
        own = {t.node_id: t.status() for t in nodes}
        last.update(cluster=st, own=own)
        return all(own[i]["commit"] == st[i]["commit"] == own[i]["applied"] == st[i]["applied"]
                   for i in own)

    assert wait_until(same_indexes, 3.0, 0.2), \
        {i: (f"status commit={last['own'][i]['commit']} applied={last['own'][i]['applied']}",
             f"cluster status commit={last['cluster'][i]['commit']} "
             f"applied={last['cluster'][i]['applied']} lag={last['cluster'][i]['lag']}")
         for i in last["own"]}

    # admin writes through a follower: visible to it at once, and on every node
    f1, f2 = [t for t in nodes if t is not lead]
    f1.ctl("domain", "add", "form.test").ok()
    f1.ctl("user", "add", "alice@form.test", password=PW).ok()
    assert "alice@form.test" in user_addresses(f1), "read-your-writes on the follower"
    f2.ctl("alias", "add", "postmaster@form.test", "alice@form.test").ok()
    f2.ctl("mailbox", "create", "alice@form.test", "Projects").ok()
    for t in nodes:
        assert wait_until(lambda: "alice@form.test" in user_addresses(t), SPREAD_WAIT), t.node_id
        assert wait_until(lambda: "postmaster@form.test" in t.ctl("alias", "list").out,
                          SPREAD_WAIT), t.node_id
        assert wait_until(lambda: "Projects" in t.ctl("mailbox", "list", "alice@form.test").out,
                          SPREAD_WAIT), t.node_id
    # a write refused on the leader is refused through a follower too (no half-writes)
    r = f1.ctl("domain", "add", "form.test")
    assert r.rc != 0, r
    st = tern3.wait_converged()
    assert len({(s["commit"], s["applied"]) for s in st.values()}) == 1


def test_join_answers_once_voter(tern3):
    """`cluster join` answers ok once the node is a voter: the leader says so at once, and
    an HAProxy config generated right then puts the node in rotation."""
    lead = tern3.leader()
    seed = next(t for t in tern3.nodes if t is not lead)  # a follower: redirects
    t4 = tern3.new_node(node_id=4)
    r = tern3.join(t4, seed=seed)
    assert r.rc == 0 and r.out.strip() == "ok", r
    m = cluster_members(lead)
    assert m.get(4, {}).get("role") == "voter", f"right after join ok: {m.get(4)}"
    cfg = lead.ctl("haproxy-config", "--bind", "127.0.0.1", "--ports", "smtp=2525").ok().out
    line = next(l for l in cfg.splitlines() if l.strip().startswith("server n4 "))
    assert "disabled" not in line, line
    tern3.wait_members([1, 2, 3, 4])


# ---------------------------------------------------------------------------------------
# 2. read-your-writes across nodes and connections


def test_read_your_writes_across_nodes(tern3):
    nodes = tern3.nodes
    (user,) = setup_users(nodes[0], "ryw.test", "rita")
    tern3.wait_converged()
    sent = {}
    # every ordered pair of nodes: B's session is open (logged in) while A APPENDs, and
    # SELECTs + FETCHes right after A's OK, as a client with two connections would
    for a in nodes:
        for b in nodes:
            if a is b:
                continue
            body = msg(f"{a.node_id}-{b.node_id}", extra=b"x" * 2000 + b"\r\n")
            with imap_on(b, user) as rb, imap_on(a, user) as ra:
                uid, done = ra.append("INBOX", body)
                assert uid is not None, done
                sent[uid] = body
                sel = rb.ok("SELECT INBOX")
                got = fetch_all(rb, "UID BODY.PEEK[]")
                assert uid in got, (f"APPEND OK through node {a.node_id}, not seen by node "
                                    f"{b.node_id}", uid, sorted(got), sel, tern3.statuses())
                assert got[uid]["BODY[]"] == body, (a.node_id, b.node_id)
    assert len(sent) == 6


def test_read_your_writes_through_haproxy(tern3, haproxy):
    nodes = tern3.nodes
    (user,) = setup_users(nodes[0], "ryw.test", "rita")
    tern3.wait_converged()
    # two connections at once, as a mail client keeps them: leastconn puts the second one
    # on another node while the first is open; APPEND on one, then SELECT + FETCH on the
    # other
    h = haproxy(nodes[0])
    port = h.ports["imap"]
    for i in range(6):
        c1 = RawIMAP(port).login(user, PW)
        c2 = RawIMAP(port).login(user, PW)
        try:
            if i % 2:
                c1, c2 = c2, c1
            body = msg(f"ha-{i}")
            uid, done = c1.append("INBOX", body)
            assert uid is not None, done
            c2.ok("SELECT INBOX")
            got = fetch_all(c2, "UID BODY.PEEK[]")
            assert got.get(uid, {}).get("BODY[]") == body, \
                (f"round {i}: APPEND OK on one HAProxy connection, not seen on the other",
                 uid, sorted(got))
        finally:
            c1.close()
            c2.close()


# ---------------------------------------------------------------------------------------
# 3. every node sees every write


def test_idle_sees_writes_through_other_nodes(tern3):
    a, b, c = tern3.nodes
    (user,) = setup_users(b, "idle.test", "ida")
    tern3.wait_converged()
    ra = imap_on(a, user)
    try:
        ra.ok("SELECT INBOX")
        ra.send("I1 IDLE\r\n")
        assert ra.line().startswith(b"+"), "no continuation for IDLE"
        lat = []
        for n in range(1, 4):
            t0 = time.monotonic()
            smtp_deliver(b, user, msg(n))
            ln = wait_line(ra, rb"^\* %d EXISTS$" % n)
            lat.append(time.monotonic() - t0)
            assert ln == b"* %d EXISTS" % n
        # a flag change through the third node
        t0 = time.monotonic()
        with imap_on(c, user) as rc:
            rc.ok("SELECT INBOX")
            rc.ok("STORE 2 +FLAGS (\\Flagged)")
        ln = wait_line(ra, rb"^\* 2 FETCH ")
        lat.append(time.monotonic() - t0)
        assert b"\\Flagged" in ln, ln
        # an expunge through the third node
        with imap_on(c, user) as rc:
            rc.ok("SELECT INBOX")
            rc.ok("STORE 1 +FLAGS (\\Deleted)")
            rc.ok("EXPUNGE")
        wait_line(ra, rb"^\* 1 EXPUNGE$")
        ra.send("DONE\r\n")
        wait_line(ra, rb"^I1 OK")
        got = fetch_all(ra, "UID FLAGS")
        assert len(got) == 2 and [g["FLAGS"] for g in got.values()] == [["\\Flagged"], []], got
        print(f"IDLE latencies (s): {[round(x, 3) for x in lat]}")
    finally:
        ra.close()


# ---------------------------------------------------------------------------------------
# 4. bodies: R=3 copies, every node serves the exact bytes


def test_bodies_on_every_node(tern3):
    nodes = tern3.nodes
    (user,) = setup_users(nodes[0], "body.test", "bob")
    sent = []
    for i in range(6):
        big = (b"%06d " % i) * (i * 3000)  # 0 .. 105 kB, every body distinct
        m = msg(i, extra=b"\r\n".join(big[k:k + 70] for k in range(0, len(big), 70)) + b"\r\n")
        smtp_deliver(nodes[i % 3], user, m)
        sent.append(m)
    last = {}

    def copies():
        head, st = cluster_status(nodes[0])
        last["st"] = st
        return all(int(st[t.node_id]["bodies"]) == len(sent) for t in nodes) and st

    st = wait_until(copies, BODY_WAIT, 0.2)
    assert st, f"not every node holds the {len(sent)} bodies: {last.get('st')}"
    sizes = {int(r["body_bytes"]) for r in st.values()}
    assert len(sizes) == 1, st  # the same bodies everywhere

    stored = None
    for t in nodes:
        with RawPOP3(t.pop3_ports["pop3"]) as p:
            p.login(user, PW)
            first, lines = p.multi("LIST")
            assert len(lines) == len(sent), lines
            retr = []
            for n in range(1, len(sent) + 1):
                _, body = p.multi(f"RETR {n}")
                raw = b"".join((l[1:] if l.startswith(b".") else l) + b"\r\n" for l in body)
                retr.append(raw)
            p.ok("QUIT")
        for raw, m in zip(retr, sent):
            assert split_trace(raw)[1] == m
        if stored is None:
            stored = retr
        assert retr == stored, f"node {t.node_id} serves other bytes"


def test_reads_fetch_bodies_held_elsewhere(cluster):
    """With cluster.replicas=1 each body lives on one node only: FETCH, SEARCH BODY, SORT
    and POP3 RETR on any node still see every body (fetched from its owner)."""
    tc = TernCluster(cluster, sets=["--set", "cluster.replicas=1"]).form(3)
    nodes = tc.nodes
    (user,) = setup_users(nodes[0], "one.test", "ann")
    sent = []
    for i in range(9):
        m = msg(i, extra=b"needle-%d-%s\r\n" % (i, b"x" * (i * 500)))
        smtp_deliver(nodes[i % 3], user, m)
        sent.append(m)
    last = {}

    def placed():  # one copy of each: the receivers dropped the copies they do not own
        head, st = cluster_status(nodes[0])
        last["st"] = st
        b = [int(st[t.node_id]["bodies"]) for t in nodes]
        return sum(b) == len(sent) and st

    assert wait_until(placed, BODY_WAIT, 0.2), f"not one copy per body: {last.get('st')}"
    # each node owns some bodies and lacks the others; a copy fetched for a read is a cache
    # that the next repair pass drops, so every phase starts from one copy per body again
    for t in nodes:  # SEARCH BODY and SORT fetch what they need, then search again
        with imap_on(t, user) as r:
            r.ok("EXAMINE INBOX")
            for i in range(len(sent)):
                hits = r.ok(f"SEARCH BODY needle-{i}-")
                assert any(l.strip() == f"* SEARCH {i + 1}".encode() for l in hits), (t.node_id,
                                                                                       i, hits)
            assert any(l.startswith(b"* SORT ") for l in r.ok("SORT (SIZE) UTF-8 TEXT needle"))
    assert wait_until(placed, BODY_WAIT, 0.2), f"fetched copies not dropped: {last.get('st')}"
    for t in nodes:  # FETCH BODY[] waits for each missing body, then goes on
        with imap_on(t, user) as r:
            r.ok("EXAMINE INBOX")
            got = fetch_all(r)
            assert [split_trace(got[u]["BODY[]"])[1] for u in sorted(got)] == sent, t.node_id
    assert wait_until(placed, BODY_WAIT, 0.2), f"fetched copies not dropped: {last.get('st')}"
    for t in nodes:  # POP3 RETR too
        with RawPOP3(t.pop3_ports["pop3"]) as p:
            p.login(user, PW)
            for n in range(1, len(sent) + 1):
                _, body = p.multi(f"RETR {n}")
                raw = b"".join((l[1:] if l.startswith(b".") else l) + b"\r\n" for l in body)
                assert split_trace(raw)[1] == sent[n - 1], (t.node_id, n)
            p.ok("QUIT")


# ---------------------------------------------------------------------------------------
# 5. strangers on the internal ports


def _addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def _connect(addr):
    s = socket.create_connection(_addr(addr), timeout=REFUSE_WAIT)
    return s


def _read_all(s, timeout):
    """Everything the peer sends until it closes (True) or TIMEOUT passes (False)."""
    s.settimeout(timeout)
    got = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                return got, True
            got += chunk
    except (ConnectionResetError, BrokenPipeError):
        return got, True
    except (socket.timeout, TimeoutError):
        return got, False
    return got, False


def _hello(node_id, address, mac=None):
    a = address.encode()
    return (bytes([1]) + struct.pack(">Q", node_id) + bytes([len(a)]) + a
            + secrets.token_bytes(32) + (mac or secrets.token_bytes(32)))


def _challenge_ok(data):
    return len(data) == 41 and data.startswith(b"TERNAUTH\x01")


def test_strangers_on_internal_ports_are_refused(tern3):
    nodes = tern3.nodes
    lead = tern3.leader()
    follower = next(t for t in nodes if t is not lead)
    before = tern3.wait_converged()
    term0, lead0 = before[lead.node_id]["term"], before[lead.node_id]["leader"]

    # every case on the Raft and the RPC port of the leader and of a follower, all at once
    # (the silent ones wait out the handshake deadline together)
    conns = []
    for t in (lead, follower):
        other = next(n for n in nodes if n is not t)
        for kind in ("raft_addr", "rpc_addr"):
            cases = {
                "silent": None,  # connects and sends nothing at all
                "challenge-then-silent": b"",  # reads the challenge, sends nothing
                "garbage": b"GET / HTTP/1.0\r\nHost: x\r\n\r\n" + secrets.token_bytes(300),
                "bad-version": b"\x02" + secrets.token_bytes(100),
                # a well-formed hello naming a real member, with a random proof
                "wrong-proof": _hello(other.node_id, getattr(other, kind)),
                "wrong-proof-then-more": _hello(other.node_id, getattr(other, kind))
                + b"x" * 4000,
                "half-hello": _hello(7, "127.0.0.1:1")[:40],
            }
            for name, data in cases.items():
                s = _connect(getattr(t, kind))
                conns.append((t.node_id, kind, name, data, s))
    t0 = time.monotonic()
    for node_id, kind, name, data, s in conns:
        if data is None:
            continue
        chal, _ = _read_all_until(s, 41, 3.0)
        assert _challenge_ok(chal), (node_id, kind, name, chal)
        if data:
            s.sendall(data)
    bad = []
    for node_id, kind, name, data, s in conns:
        try:
            left = max(0.1, t0 + REFUSE_WAIT - time.monotonic())
            got, closed = _read_all(s, left)
        finally:
            s.close()
        if not closed:
            bad.append(f"node {node_id} {kind} {name}: not closed within {REFUSE_WAIT}s")
        if data is None:  # nothing was read yet: at most the challenge
            if not (got == b"" or _challenge_ok(got)):
                bad.append(f"node {node_id} {kind} {name}: sent {got!r}")
        elif got != b"":
            bad.append(f"node {node_id} {kind} {name}: sent {got!r} after the challenge")
    assert not bad, bad
    assert len(conns) == 28

    after = tern3.wait_converged()
    assert after[lead.node_id]["term"] == term0 and after[lead.node_id]["leader"] == lead0, after
    assert after[lead.node_id]["commit"] == before[lead.node_id]["commit"], (before, after)
    assert all(rec["state"] == "up" for rec in cluster_status(lead)[1].values())
    # and the cluster still takes writes, through any node
    (user,) = setup_users(follower, "stranger.test", "sam")
    smtp_deliver(lead, user, msg(1))
    smtp_deliver(follower, user, msg(2))
    st = tern3.wait_converged()
    assert int(st[lead.node_id]["commit"]) > int(before[lead.node_id]["commit"])


def _read_all_until(s, n, timeout):
    """Reads until N bytes came (or close/timeout)."""
    s.settimeout(timeout)
    got = b""
    try:
        while len(got) < n:
            chunk = s.recv(n - len(got))
            if not chunk:
                return got, True
            got += chunk
    except (socket.timeout, TimeoutError, ConnectionResetError):
        pass
    return got, False


def test_node_with_another_secret_cannot_join(tern3):
    before = tern3.wait_converged()
    lead = tern3.leader()
    secret = tern3.c.workdir / "other.secret"
    secret.write_text(secrets.token_hex(32) + "\n")
    os.chmod(secret, 0o600)
    t4 = tern3.new_node(node_id=4, secret=str(secret))
    t0 = time.monotonic()
    r = tern3.join(t4, seed=lead)
    took = time.monotonic() - t0
    assert r.rc != 0 and r.out.strip() != "ok", r
    print(f"refused join took {took:.1f}s: rc={r.rc} {r.err.strip()!r}")
    for t in tern3.nodes[:3]:
        assert sorted(cluster_members(t)) == [1, 2, 3]
        head, st = cluster_status(t)
        assert head["members"] == "3" and sorted(st) == [1, 2, 3], (head, st)
    st4 = try_status(t4)
    assert st4 is not None and st4["leader"] == "0", st4  # it learnt nothing
    after = tern3.wait_converged(nodes=tern3.nodes[:3])
    assert {s["term"] for s in after.values()} == {before[lead.node_id]["term"]}, after
    tern3.nodes[1].ctl("domain", "add", "secret.test").ok()


# ---------------------------------------------------------------------------------------
# 6. leadership transfer and member removal


def test_transfer_and_remove(tern3):
    nodes = tern3.nodes
    old = tern3.leader()
    old.ctl("cluster", "transfer").ok()
    new = wait_until(lambda: (lambda l: l if l is not old else None)(tern3.leader()), 10)
    assert new is not None and new is not old
    # transfer to a named node, asked through a follower
    target = next(t for t in nodes if t is not new)
    asker = next(t for t in nodes if t is not new and t is not target) if len(nodes) > 2 else new
    asker.ctl("cluster", "transfer", target.node_id).ok()
    assert wait_until(lambda: tern3.leader() is target, 10), tern3.statuses()
    st = tern3.wait_converged()
    assert {s["leader"] for s in st.values()} == {str(target.node_id)}

    # remove a follower (asked through the other follower): a 2-node cluster remains
    lead = tern3.leader()
    f_gone, f_stay = [t for t in nodes if t is not lead]
    f_stay.ctl("cluster", "remove", f_gone.node_id).ok()
    rest = [lead, f_stay]
    assert wait_until(lambda: all(sorted(cluster_members(t)) ==
                                  sorted([lead.node_id, f_stay.node_id]) for t in rest), 10), \
        [cluster_members(t) for t in rest]
    f_gone.kill()
    for t in rest:
        head, st = cluster_status(t)
        assert head["members"] == "2" and head["replicas"] == "3", head
        assert sorted(st) == sorted(x.node_id for x in rest), st
        assert all(r["state"] == "up" for r in st.values()), st
    (user,) = setup_users(f_stay, "remove.test", "rob")
    smtp_deliver(f_stay, user, msg(1))
    smtp_deliver(lead, user, msg(2))
    for t in rest:
        with imap_on(t, user) as r:
            r.ok("SELECT INBOX")
            got = fetch_all(r, "UID BODY.PEEK[]")
            assert len(got) == 2, (t.node_id, got)
    tern3.wait_converged(nodes=rest)


def test_remove_the_leader(tern3):
    """Removing the leader (asked through the leader itself) hands leadership over first,
    then the new leader removes it and its member record: two nodes remain and serve."""
    nodes = tern3.nodes
    lead = tern3.leader()
    r = lead.ctl("cluster", "remove", lead.node_id)
    assert r.rc == 0 and r.out.strip() == "ok", r
    rest = [t for t in nodes if t is not lead]
    assert wait_until(lambda: all(sorted(cluster_members(t)) ==
                                  sorted(t2.node_id for t2 in rest) for t in rest), 10), \
        [cluster_members(t) for t in rest]
    lead.kill()  # removed: it knows no leader any more, so it would not agree
    new = tern3.leader()
    assert new is not lead and new in rest
    (user,) = setup_users(rest[0], "lead-gone.test", "liz")
    for i, t in enumerate(rest):
        smtp_deliver(t, user, msg(i))
    for t in rest:
        with imap_on(t, user) as c:
            c.ok("SELECT INBOX")
            assert len(fetch_all(c, "UID")) == 2, t.node_id
