# tests/integration/test_imap_sessions.py
# Several IMAP sessions on one mailbox (RFC 3501 5.2, 7.4.1; RFC 2177 IDLE): a session
# learns of mail delivered by SMTP or APPENDed elsewhere (EXISTS), of flag changes
# (FETCH FLAGS) and of expunges (EXPUNGE, never in the middle of its own FETCH, STORE or
# SEARCH); CONDSTORE/QRESYNC resynchronisation after changes made by another session
# (VANISHED (EARLIER), CHANGEDSINCE); a 10,000-message mailbox; curl as a real client.
import re
import shutil
import subprocess
import threading
import time

import pytest

from conftest import (
    IMAP_PW,
    RawIMAP,
    imap_fetches,
    imap_seqset_members,
    imap_user,
    message_body,
    smtp_deliver,
    split_trace,
)

UPDATE_WAIT = 3.0  # seconds a session may take to hear of a change while idling


def simple(n, subject=None):
    return (f"From: s@far.example\r\nSubject: {subject or f'msg {n}'}\r\n\r\n"
            f"body {n}\r\n").encode()


def wait_line(r, pattern, timeout=UPDATE_WAIT):
    """Reads lines until one matches PATTERN (bytes regex) within TIMEOUT seconds;
    returns (the matching line, the lines before it)."""
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
                return ln, seen
            seen.append(ln)
    finally:
        r.s.settimeout(old)


def uids_of(r):
    f = imap_fetches(r.ok("FETCH 1:* UID"))
    return [int(f[k]["UID"]) for k in sorted(f)]


def test_noop_reports_smtp_delivery_and_append(imap_t, imap):
    user = imap_user(imap_t)
    a = imap(user)
    for i in range(2):
        a.append("INBOX", simple(i))
    b = imap(user)
    assert b"* 2 EXISTS" in b.ok("SELECT INBOX")
    assert b.ok("NOOP") == []
    smtp_deliver(imap_t, user, simple(3))
    lines = b.ok("NOOP")
    assert b"* 3 EXISTS" in lines, lines
    a.append("INBOX", simple(4))
    lines = b.ok("NOOP")
    assert b"* 4 EXISTS" in lines, lines
    assert uids_of(b) == [1, 2, 3, 4]
    f = imap_fetches(b.ok("FETCH 4 BODY.PEEK[]"))
    assert f[4]["BODY[]"] == simple(4)
    # CHECK reports the same way
    a.append("INBOX", simple(5))
    assert b"* 5 EXISTS" in b.ok("CHECK")
    # an APPEND to another mailbox is not reported
    a.append("Trash", simple(6))
    assert not any(b"EXISTS" in l for l in b.ok("NOOP"))


def test_idle_reports_changes(imap_t, imap):
    user = imap_user(imap_t)
    a = imap(user)
    a.append("INBOX", simple(1))
    a.ok("SELECT INBOX")
    b = imap(user)
    b.ok("SELECT INBOX")
    b.send("I1 IDLE\r\n")
    assert b.line().startswith(b"+"), "no continuation for IDLE"
    # APPEND from another session
    a.append("INBOX", simple(2))
    wait_line(b, rb"^\* 2 EXISTS$")
    # delivery through SMTP
    smtp_deliver(imap_t, user, simple(3))
    wait_line(b, rb"^\* 3 EXISTS$")
    # a flag change
    a.ok("STORE 1 +FLAGS (\\Flagged)")
    ln, _ = wait_line(b, rb"^\* 1 FETCH ")
    assert b"\\Flagged" in ln, ln
    # an expunge (allowed while idling)
    a.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    a.ok("EXPUNGE")
    wait_line(b, rb"^\* 2 EXPUNGE$")
    b.send("DONE\r\n")
    lines, done = b.read_until_tagged("I1")
    assert done.startswith(b"I1 OK"), done
    assert uids_of(b) == [1, 3]
    # IDLE again, ended by a bad line
    b.send("I2 IDLE\r\n")
    assert b.line().startswith(b"+")
    b.send("NOTDONE\r\n")
    lines, done = b.read_until_tagged("I2")
    assert done.startswith(b"I2 BAD"), done
    b.ok("NOOP")


def test_idle_in_authenticated_state(imap_t, imap):
    user = imap_user(imap_t)
    b = imap(user)
    b.send("I1 IDLE\r\n")
    assert b.line().startswith(b"+")
    assert b.quiet(0.3)
    b.send("DONE\r\n")
    lines, done = b.read_until_tagged("I1")
    assert done.startswith(b"I1 OK"), done


def test_flags_reported_to_other_session(imap_t, imap):
    user = imap_user(imap_t)
    a = imap(user)
    for i in range(3):
        a.append("INBOX", simple(i))
    a.ok("SELECT INBOX")
    b = imap(user)
    b.ok("SELECT INBOX")
    c = imap(user)
    c.ok("ENABLE CONDSTORE")
    c.ok("SELECT INBOX")
    a.ok("STORE 2 +FLAGS (\\Flagged $Tag)")
    f = imap_fetches(b.ok("NOOP"))
    assert list(f) == [2] and set(f[2]["FLAGS"]) == {"\\Flagged", "$Tag"}
    assert f[2]["UID"] == "2"
    f = imap_fetches(c.ok("NOOP"))  # with CONDSTORE: the new MODSEQ too
    assert set(f[2]["FLAGS"]) == {"\\Flagged", "$Tag"} and "MODSEQ" in f[2]
    # the session's own STORE is not echoed a second time
    f = imap_fetches(a.ok("NOOP"))
    assert f == {}
    # several changes before the next NOOP: the latest state
    a.ok("STORE 1 +FLAGS (\\Seen)")
    a.ok("STORE 1 -FLAGS (\\Seen)")
    a.ok("STORE 3 FLAGS (\\Answered)")
    f = imap_fetches(b.ok("NOOP"))
    assert f[1]["FLAGS"] == [] and f[3]["FLAGS"] == ["\\Answered"]
    # a \Seen set by another session's FETCH BODY[] is reported too
    a.ok("FETCH 3 BODY[]")
    f = imap_fetches(b.ok("NOOP"))
    assert set(f[3]["FLAGS"]) == {"\\Answered", "\\Seen"}


def test_expunge_reported_only_when_allowed(imap_t, imap):
    """RFC 3501 7.4.1: no EXPUNGE during FETCH, STORE or SEARCH; NOOP delivers it."""
    user = imap_user(imap_t)
    a = imap(user)
    for i in range(5):
        a.append("INBOX", simple(i))
    a.ok("SELECT INBOX")
    b = imap(user)
    b.ok("SELECT INBOX")
    a.ok("STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    a.ok("EXPUNGE")
    # B's FETCH, SEARCH, STORE: no EXPUNGE yet, numbering unchanged
    lines = b.ok("FETCH 1:* (UID FLAGS)")
    assert not any(b"EXPUNGE" in l for l in lines), lines
    f = imap_fetches(lines)
    assert all(int(f[k]["UID"]) == k for k in f), f  # old numbering: msn == uid
    lines = b.ok("SEARCH ALL")
    assert not any(b"EXPUNGE" in l for l in lines), lines
    assert set(int(x) for x in lines[0].split()[2:]) <= {1, 2, 3, 4, 5}
    lines = b.ok("STORE 5 +FLAGS (\\Seen)")
    assert not any(b"EXPUNGE" in l for l in lines), lines
    f = imap_fetches(lines)
    assert f[5]["FLAGS"] == ["\\Seen"]  # msn 5 is still uid 5 for B
    lines = b.ok("UID SEARCH ALL")
    assert not any(b"EXPUNGE" in l for l in lines), lines
    # NOOP: the expunges, with sequence numbers as they shift
    lines = b.ok("NOOP")
    assert [l for l in lines if l.endswith(b"EXPUNGE")] == [b"* 2 EXPUNGE", b"* 3 EXPUNGE"]
    assert uids_of(b) == [1, 3, 5]
    f = imap_fetches(b.ok("FETCH 3 FLAGS"))
    assert f[3]["FLAGS"] == ["\\Seen"]


def test_condstore_and_qresync_resync(imap_t, imap):
    user = imap_user(imap_t)
    a = imap(user)
    for i in range(6):
        a.append("INBOX", simple(i))
    # the client's last state
    c = imap(user)
    assert c.ok("ENABLE QRESYNC") == [b"* ENABLED QRESYNC"]
    sel = c.ok("SELECT INBOX")
    uv = int(re.search(rb"UIDVALIDITY (\d+)", b"\n".join(sel)).group(1))
    hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"\n".join(sel)).group(1))
    c.ok("LOGOUT")
    # changes made elsewhere
    a.ok("SELECT INBOX")
    a.ok("STORE 2 +FLAGS (\\Flagged)")
    a.ok("STORE 3,5 +FLAGS.SILENT (\\Deleted)")
    a.ok("EXPUNGE")  # uids 3 and 5 gone
    a.append("INBOX", simple(7))  # uid 7 new
    a.ok("STORE 1 +FLAGS (\\Seen)")
    # resync
    c = imap(user)
    c.ok("ENABLE QRESYNC")
    tag = c.tag()
    lines, done = c.cmd(f"SELECT INBOX (QRESYNC ({uv} {hms}))", tag)
    assert done.startswith(f"{tag} OK".encode()), done
    assert b"* 5 EXISTS" in lines
    van = [l for l in lines if l.startswith(b"* VANISHED")]
    assert len(van) == 1 and van[0].startswith(b"* VANISHED (EARLIER) "), lines
    assert imap_seqset_members(van[0].split()[-1].decode()) == [3, 5]
    f = imap_fetches(lines)
    changed = {int(v["UID"]): v for v in f.values()}
    assert set(changed) == {1, 2, 7}, lines
    assert changed[1]["FLAGS"] == ["\\Seen"] and changed[2]["FLAGS"] == ["\\Flagged"]
    assert all(int(v["MODSEQ"][0]) > hms for v in changed.values())
    new_hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"\n".join(lines)).group(1))
    assert new_hms == max(int(v["MODSEQ"][0]) for v in changed.values())
    # FETCH CHANGEDSINCE: only what changed after the given modseq
    f = imap_fetches(c.ok(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {hms})"))
    assert sorted(int(v["MODSEQ"][0]) > hms for v in f.values()) == [True] * 3
    assert len(f) == 3
    f = imap_fetches(c.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {new_hms})"))
    assert f == {}
    # after the resync, changes from A are reported with MODSEQ and VANISHED
    a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    a.ok("EXPUNGE")
    lines = c.ok("NOOP")
    assert b"* VANISHED 1" in lines, lines
    # a stale UIDVALIDITY: no VANISHED, no FETCH (a full resync is needed)
    lines = c.ok(f"SELECT INBOX (QRESYNC ({uv + 1} {hms}))")
    assert not any(l.startswith(b"* VANISHED") or b"FETCH" in l for l in lines), lines
    assert lines[0].startswith(b"* OK [CLOSED]")  # RFC 7162 3.2.11


def test_qresync_select_requires_enable(imap_t, imap):
    user = imap_user(imap_t)
    c = imap(user)
    lines, done = c.cmd("SELECT INBOX (QRESYNC (1 1))")
    assert re.match(rb"\S+ BAD", done), done
    # CONDSTORE as a SELECT parameter turns it on
    lines = c.ok("SELECT INBOX (CONDSTORE)")
    assert any(b"HIGHESTMODSEQ" in l for l in lines)


def test_uid_fetch_vanished_modifier(imap_t, imap):
    user = imap_user(imap_t)
    a = imap(user)
    for i in range(4):
        a.append("INBOX", simple(i))
    a.ok("ENABLE QRESYNC")
    sel = a.ok("SELECT INBOX")
    hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"\n".join(sel)).group(1))
    b = imap(user)
    b.ok("SELECT INBOX")
    b.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    b.ok("EXPUNGE")
    a.ok("NOOP")
    lines = a.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {hms} VANISHED)")
    assert b"* VANISHED (EARLIER) 2" in lines, lines


# ---------------------------------------------------------------------------------------
# a large mailbox

BIG = 10000
BIG_CONNS = 8


def fill_pipelined(port, user, n, make, conns=BIG_CONNS, timeout=120):
    """APPENDs make(i) for i in range(n) over CONNS connections, each sending all its
    APPENDs with LITERAL+ in one stream while its responses are read. Returns the
    elapsed seconds."""
    errors = []
    t0 = time.monotonic()

    def worker(k):
        try:
            r = RawIMAP(port, timeout=30).login(user, IMAP_PW)
            mine = list(range(k, n, conns))
            data = b"".join(b"B%d APPEND INBOX {%d+}\r\n%s\r\n" % (i, len(make(i)), make(i))
                            for i in mine)
            sender = threading.Thread(target=r.send, args=(data,), daemon=True)
            sender.start()
            done = 0
            while done < len(mine):
                ln = r.line()
                if ln.startswith(b"B"):
                    assert b" OK " in ln, ln
                    done += 1
            sender.join(10)
            r.close()
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(conns)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout)
    assert not errors, errors
    assert not any(th.is_alive() for th in threads), "fill did not finish"
    return time.monotonic() - t0


def test_ten_thousand_messages(imap_t, imap):
    user = imap_user(imap_t, "big")

    def make(i):
        return b"From: bulk@far.example\r\nSubject: bulk %d\r\n\r\nbody %d\r\n" % (i, i)

    fill_s = fill_pipelined(imap_t.imap_ports["imap"], user, BIG, make)
    r = imap(user, timeout=60)
    times = {"fill": fill_s}
    t0 = time.monotonic()
    lines = r.ok("SELECT INBOX")
    times["select"] = time.monotonic() - t0
    assert f"* {BIG} EXISTS".encode() in lines
    assert re.search(rb"UIDNEXT %d\]" % (BIG + 1), b"\n".join(lines))
    t0 = time.monotonic()
    r.ok("STORE 1:100 +FLAGS.SILENT (\\Flagged)")
    times["store 100"] = time.monotonic() - t0
    t0 = time.monotonic()
    lines = r.ok("FETCH 1:* (UID FLAGS)")
    times["fetch all"] = time.monotonic() - t0
    f = imap_fetches(lines)
    assert len(f) == BIG
    assert all(int(f[k]["UID"]) == k for k in f)
    assert sum(1 for v in f.values() if v["FLAGS"] == ["\\Flagged"]) == 100
    t0 = time.monotonic()
    lines = r.ok("SEARCH ALL")
    times["search all"] = time.monotonic() - t0
    assert len(lines[0].split()) - 2 == BIG
    lines = r.ok("SEARCH RETURN (COUNT MIN MAX) FLAGGED")
    assert lines[0].endswith(b"MIN 1 MAX 100 COUNT 100") or b"COUNT 100" in lines[0], lines
    lines = r.ok("SEARCH RETURN (COUNT) ALL")
    assert lines[0].endswith(b"COUNT %d" % BIG), lines
    t0 = time.monotonic()
    f = imap_fetches(r.ok(f"UID FETCH {BIG} (UID BODY.PEEK[])"))
    times["uid fetch last"] = time.monotonic() - t0
    last = f[BIG]["BODY[]"]  # the four connections interleave: which one is last varies
    i = int(re.search(rb"Subject: bulk (\d+)", last).group(1))
    assert last == make(i)
    t0 = time.monotonic()
    lines = r.ok(f'SEARCH SUBJECT "bulk {i}"')  # reads every message's header
    times["search subject"] = time.monotonic() - t0
    assert lines == [f"* SEARCH {BIG}".encode()], lines
    f = imap_fetches(r.ok("UID FETCH * UID"))
    assert list(f) == [BIG]
    print("\n10k mailbox timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()))
    assert times["select"] < 10 and times["fetch all"] < 20 and times["search all"] < 10, times
    assert times["search subject"] < 20, times


# ---------------------------------------------------------------------------------------
# curl, a real client


def curl(args, timeout=20):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (apt-get install -y curl)")
    return subprocess.run(["curl", "-s", "-S", "--max-time", "10"] + args, capture_output=True,
                          timeout=timeout, start_new_session=True)


def test_curl_reads_message(imap_t):
    user = imap_user(imap_t)
    msg = (b"From: Sender <sender@far.example>\r\nTo: <" + user.encode() + b">\r\n"
           b"Subject: for curl\r\nMessage-ID: <curl-1@far.example>\r\n\r\n"
           b"Hello curl,\r\nthis is line two.\r\n.leading dot\r\n")
    smtp_deliver(imap_t, user, msg)  # uid 1: smtplib, the exact octets
    stored = message_body(imap_t, user, 1)
    assert split_trace(stored)[1] == msg
    swaks_stored = None
    if shutil.which("swaks"):  # uid 2: swaks, which writes its own header
        p = subprocess.run(["swaks", "--server", f"127.0.0.1:{imap_t.smtp_ports['smtp']}",
                            "--to", user, "--from", "sender@far.example", "--header",
                            "Subject: swaks message", "--body", "swaks body line",
                            "--timeout", "10"], capture_output=True, timeout=30,
                           start_new_session=True)
        assert p.returncode == 0, p.stdout[-2000:]
        swaks_stored = message_body(imap_t, user, 2)
        assert b"swaks body line" in swaks_stored
    port = imap_t.imap_ports["imap"]
    p = curl(["--url", f"imap://127.0.0.1:{port}/INBOX;UID=1", "--user", f"{user}:{IMAP_PW}"])
    assert p.returncode == 0, p.stderr
    assert p.stdout == stored
    if swaks_stored is not None:
        p = curl(["--url", f"imap://127.0.0.1:{port}/INBOX;UID=2",
                  "--user", f"{user}:{IMAP_PW}"])
        assert p.returncode == 0 and p.stdout == swaks_stored, p.stderr
    # implicit TLS, and STARTTLS required
    sport = imap_t.imap_ports["imaps"]
    p = curl(["-k", "--url", f"imaps://127.0.0.1:{sport}/INBOX;UID=1",
              "--user", f"{user}:{IMAP_PW}"])
    assert p.returncode == 0 and p.stdout == stored, p.stderr
    p = curl(["-k", "--ssl-reqd", "--url", f"imap://127.0.0.1:{port}/INBOX;UID=1;SECTION=TEXT",
              "--user", f"{user}:{IMAP_PW}"])
    assert p.returncode == 0, p.stderr
    assert p.stdout == msg.split(b"\r\n\r\n", 1)[1]
    # a mailbox listing and a search
    p = curl(["--url", f"imap://127.0.0.1:{port}/", "--user", f"{user}:{IMAP_PW}"])
    assert p.returncode == 0 and b'"INBOX"' in p.stdout, (p.stdout, p.stderr)
    p = curl(["--url", f"imap://127.0.0.1:{port}/INBOX?SUBJECT%20curl",
              "--user", f"{user}:{IMAP_PW}"])
    assert p.returncode == 0 and p.stdout.strip() == b"* SEARCH 1", (p.stdout, p.stderr)
    # a wrong password fails
    p = curl(["--url", f"imap://127.0.0.1:{port}/INBOX;UID=1", "--user", f"{user}:wrong"])
    assert p.returncode != 0
