# tests/integration/test_pop3_durability.py
# "+OK means durable" for POP3 deletions, by killing ternd with SIGKILL: right after QUIT's
# +OK every marked message stays deleted after a restart on the same data dir (and the
# quota usage with them); after DELE without QUIT nothing is deleted; a kill while QUIT is
# being committed deletes all the marked messages or none; UIDLs survive restarts and
# still match IMAP. One ternd for the module; every test kills and restarts it.
import os
import signal

import pytest

from conftest import (
    Cluster,
    RawIMAP,
    RawPOP3,
    imap_user,
    message_body,
    messages,
    need_binaries,
    pop3_node,
    smtp_deliver,
    user_usage,
)

DOMAIN = "pop3d.test"
PW = "pop3-durable"


@pytest.fixture(scope="module")
def t():
    need_binaries()
    c = Cluster()
    node = pop3_node(c).start()
    node.ctl("domain", "add", DOMAIN).ok()
    yield node
    c.close(keep=os.environ.get("TERN_KEEP_TMP"))


def kill_restart(t):
    t.signal(signal.SIGKILL)  # at once: no chance to flush anything more
    assert t.wait() == -signal.SIGKILL
    t.start()


def user_with(t, n):
    user = imap_user(t, prefix="d", domain=DOMAIN, password=PW)
    for i in range(1, n + 1):
        smtp_deliver(t, user, (f"Subject: durable {i}\r\n\r\nbody {i}\r\n.dot {i}\r\n").encode())
    return user


def pop(t, user):
    return RawPOP3(t.pop3_ports["pop3"]).login(user, PW)


def uidl(r):
    """[unique-id] of the session's UIDL listing, in message-number order."""
    return [l.split()[1] for l in r.multi("UIDL")[1]]


def stored(t, user):
    recs = sorted(messages(t, user), key=lambda r: int(r["uid"]))
    return [message_body(t, user, r["uid"]) for r in recs]


def imap_uidl(t, user):
    """The UIDL strings IMAP's UIDVALIDITY and UIDs of INBOX make."""
    with RawIMAP(t.imap_ports["imap"]) as m:
        m.login(user, PW)
        lines = m.ok("EXAMINE INBOX")
        uv = next(int(l.split(b"UIDVALIDITY ")[1].split(b"]")[0]) for l in lines
                  if b"[UIDVALIDITY " in l)
        got = []
        for l in m.ok("UID SEARCH ALL"):
            if l.startswith(b"* SEARCH"):
                got += [int(x) for x in l.split()[2:]]
    return [f"{uv:08x}{u:08x}".encode() for u in sorted(got)]


def test_quit_ok_then_sigkill(t):
    user = user_with(t, 4)
    bodies = stored(t, user)
    r = pop(t, user)
    ids = uidl(r)
    r.ok("DELE 1")
    r.ok("DELE 3")
    assert r.ok("QUIT") == b"+OK Bye, 2 messages deleted"
    kill_restart(t)
    r.close()
    assert stored(t, user) == [bodies[1], bodies[3]]
    assert user_usage(t, user) == (len(bodies[1]) + len(bodies[3]), 2)
    r = pop(t, user)
    assert r.ok("STAT") == f"+OK 2 {len(bodies[1]) + len(bodies[3])}".encode()
    assert uidl(r) == [ids[1], ids[3]]
    r.ok("QUIT")


def test_dele_then_sigkill_deletes_nothing(t):
    user = user_with(t, 3)
    bodies = stored(t, user)
    r = pop(t, user)
    ids = uidl(r)
    for i in (1, 2, 3):
        r.ok(f"DELE {i}")
    r.ok("NOOP")
    kill_restart(t)
    assert r.closed(5), "the session outlived its ternd"
    r.close()
    assert stored(t, user) == bodies
    r = pop(t, user)
    assert r.ok("STAT") == f"+OK 3 {sum(map(len, bodies))}".encode()
    assert uidl(r) == ids
    r.ok("QUIT")


def test_sigkill_during_quit_is_all_or_nothing(t):
    for attempt in range(3):
        user = user_with(t, 5)
        bodies = stored(t, user)
        r = pop(t, user)
        r.send(b"DELE 1\r\nDELE 2\r\nDELE 4\r\nDELE 5\r\n")
        for _ in range(4):
            assert r.line().startswith(b"+OK")
        r.send(b"QUIT\r\n")  # and kill at once: the Expunge may or may not be committed
        kill_restart(t)
        r.close()
        left = stored(t, user)
        assert left in (bodies, [bodies[2]]), (attempt, len(left))
        used = user_usage(t, user)
        assert used == (sum(map(len, left)), len(left)), attempt


def test_uidl_survives_restarts_and_matches_imap(t):
    user = user_with(t, 3)
    with RawIMAP(t.imap_ports["imap"]) as m:
        m.login(user, PW)
        m.ok("SELECT INBOX")
        m.ok("STORE 1 +FLAGS (\\Deleted)")
        m.ok("EXPUNGE")
    r = pop(t, user)
    before = uidl(r)
    r.ok("QUIT")
    assert before == imap_uidl(t, user)
    kill_restart(t)
    r = pop(t, user)
    assert uidl(r) == before
    r.ok("QUIT")
    assert t.stop() == 0  # and a clean restart
    t.start()
    r = pop(t, user)
    assert uidl(r) == before == imap_uidl(t, user)
    r.ok("QUIT")
