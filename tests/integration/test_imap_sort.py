"""
tests/integration/test_imap_sort.py
SORT (RFC 5256, RFC 5957 DISPLAY), THREAD=ORDEREDSUBJECT and QUOTA (RFC 9208) against a
real ternd, each result checked against a model computed here from what was delivered.
"""
import re

from conftest import imap_user, smtp_deliver

MSGS = [  # subject, from, to, date (all distinct days so the order is certain)
    ("Re: apple", "Zed <zed@a.example>", "bob@b.example", "Mon, 03 Jan 2022 10:00:00 +0000"),
    ("banana", "amy@c.example", "Carl <carl@b.example>", "Sun, 02 Jan 2022 10:00:00 +0000"),
    ("apple", "Mike <mike@d.example>", "dan@b.example", "Sat, 01 Jan 2022 10:00:00 +0000"),
    ("[list] Fwd: banana", "bea@e.example", "al@b.example", "Tue, 04 Jan 2022 10:00:00 +0000"),
    ("cherry (fwd)", "cy@f.example", "Zoe <zoe@b.example>", "Wed, 05 Jan 2022 10:00:00 +0000"),
]


def fill(t, user):
    for i, (subj, frm, to, date) in enumerate(MSGS):
        body = "x" * (100 * (len(MSGS) - i))  # sizes strictly decreasing
        msg = (f"From: {frm}\r\nTo: {to}\r\nSubject: {subj}\r\nDate: {date}\r\n\r\n{body}\r\n").encode()
        smtp_deliver(t, user, msg)


def numbers(lines, word):
    for ln in lines:
        if ln.startswith(b"* " + word):
            return [int(x) for x in ln.split()[2:]]
    raise AssertionError(lines)


def test_sort_keys(imap_t, imap):
    user = imap_user(imap_t)
    fill(imap_t, user)
    r = imap(user)
    r.ok("SELECT INBOX")
    # base subjects: apple, banana, apple, banana, cherry; ties by sequence number
    assert numbers(r.ok("SORT (SUBJECT) UTF-8 ALL"), b"SORT") == [1, 3, 2, 4, 5]
    assert numbers(r.ok("SORT (REVERSE SUBJECT) UTF-8 ALL"), b"SORT") == [5, 2, 4, 1, 3]
    assert numbers(r.ok("SORT (DATE) UTF-8 ALL"), b"SORT") == [3, 2, 1, 4, 5]
    assert numbers(r.ok("SORT (SIZE) UTF-8 ALL"), b"SORT") == [5, 4, 3, 2, 1]
    assert numbers(r.ok("SORT (FROM) UTF-8 ALL"), b"SORT") == [2, 4, 5, 3, 1]
    assert numbers(r.ok("SORT (DISPLAYFROM) UTF-8 ALL"), b"SORT") == [2, 4, 5, 3, 1]
    assert numbers(r.ok("SORT (TO) UTF-8 ALL"), b"SORT") == [4, 1, 2, 3, 5]
    assert numbers(r.ok("SORT (DISPLAYTO) UTF-8 ALL"), b"SORT") == [4, 1, 2, 3, 5]
    assert numbers(r.ok("SORT (ARRIVAL) UTF-8 SUBJECT banana"), b"SORT") == [2, 4]
    uids = numbers(r.ok("UID SORT (SIZE) UTF-8 ALL"), b"SORT")
    assert len(uids) == 5
    lines, done = r.cmd("SORT (NOSUCH) UTF-8 ALL")
    assert b" BAD " in done
    lines, done = r.cmd("SORT (SUBJECT) KOI8-R ALL")
    assert b"BADCHARSET" in done


def test_thread_orderedsubject(imap_t, imap):
    user = imap_user(imap_t)
    fill(imap_t, user)
    r = imap(user)
    r.ok("SELECT INBOX")
    line = [l for l in r.ok("THREAD ORDEREDSUBJECT UTF-8 ALL") if l.startswith(b"* THREAD")][0]
    # threads by base subject, each ordered by date, threads by their first date
    assert line == b"* THREAD (3 1)(2 4)(5)", line
    lines, done = r.cmd("THREAD NOSUCH UTF-8 ALL")
    assert b" BAD " in done


def test_quota(imap_t, imap):
    user = imap_user(imap_t)
    imap_t.ctl("user", "quota", user, "1m", "50").ok()
    fill(imap_t, user)
    r = imap(user)
    lines = r.ok("GETQUOTAROOT INBOX")
    assert b'* QUOTAROOT "INBOX" ""' in lines, lines
    q = [l for l in lines if l.startswith(b"* QUOTA ")][0]
    m = re.match(rb'\* QUOTA "" \(STORAGE (\d+) 1024 MESSAGE 5 50\)', q)
    assert m and int(m.group(1)) >= 1, q
    assert r.ok('GETQUOTA ""')[0] == q
    lines, done = r.cmd('GETQUOTA "other"')
    assert b" NO " in done
    lines, done = r.cmd('SETQUOTA "" (STORAGE 10)')
    assert b"NOPERM" in done


def test_recent(imap_t, imap):
    """RFC 3501 2.3.2: a message is \\Recent in the first read-write session to SELECT the
    mailbox after it arrived, and in no other; EXAMINE claims nothing."""
    user = imap_user(imap_t)
    for i in range(3):
        smtp_deliver(imap_t, user, f"Subject: r{i}\r\n\r\nx\r\n".encode())
    peek = imap(user)
    st = [l for l in peek.ok("STATUS INBOX (RECENT MESSAGES)") if l.startswith(b"* STATUS")][0]
    assert b"RECENT 3" in st and b"MESSAGES 3" in st, st
    lines = peek.ok("EXAMINE INBOX")
    assert b"* 0 RECENT" in lines, lines
    first = imap(user)
    lines = first.ok("SELECT INBOX")
    assert b"* 3 RECENT" in lines, lines
    flags = [l for l in first.ok("FETCH 1:* (FLAGS)") if b"FETCH" in l]
    assert all(b"\\Recent" in l for l in flags), flags
    second = imap(user)
    lines = second.ok("SELECT INBOX")
    assert b"* 0 RECENT" in lines, lines
    flags = [l for l in second.ok("FETCH 1:* (FLAGS)") if b"FETCH" in l]
    assert not any(b"\\Recent" in l for l in flags), flags
    assert second.ok("SEARCH RECENT")[0].strip() == b"* SEARCH"
    st = [l for l in peek.ok("STATUS INBOX (RECENT)") if l.startswith(b"* STATUS")][0]
    assert b"RECENT 0" in st, st


def test_thread_references(imap_t, imap):
    """RFC 5256 3: parents from References (else In-Reply-To), a missing common parent
    kept as an empty container, roots with one base subject gathered, dates ordering."""
    user = imap_user(imap_t)
    msgs = [("<a@x>", "", "", "topic", 1), ("<b@x>", "<a@x>", "", "Re: topic", 2),
            ("<c@x>", "<a@x> <b@x>", "", "Re: topic", 3), ("<d@x>", "<zz@x>", "", "other", 4),
            ("<e@x>", "", "<zz@x>", "other2", 5), ("<f@x>", "", "", "topic", 6),
            ("<a@x>", "", "", "duplicate id", 7)]
    for mid, refs, irt, subj, day in msgs:
        m = f"Message-ID: {mid}\r\nSubject: {subj}\r\nDate: Mon, 0{day} Jan 2022 10:00:00 +0000\r\n"
        if refs:
            m += f"References: {refs}\r\n"
        if irt:
            m += f"In-Reply-To: {irt}\r\n"
        smtp_deliver(imap_t, user, (m + "\r\nbody\r\n").encode())
    r = imap(user)
    r.ok("SELECT INBOX")
    line = [l for l in r.ok("THREAD REFERENCES UTF-8 ALL") if l.startswith(b"* THREAD")][0]
    assert line == b"* THREAD ((1 2 3)(6))((4)(5))(7)", line
    line = [l for l in r.ok("THREAD REFERENCES UTF-8 NOT SUBJECT other")
            if l.startswith(b"* THREAD")][0]
    assert line == b"* THREAD ((1 2 3)(6))(7)", line


def test_binary(imap_t, imap):
    """RFC 3516: BINARY[part] decodes base64 and quoted-printable; literal8 when the bytes
    hold a NUL; BINARY.SIZE is the decoded size; partials count decoded octets."""
    import base64 as b64

    user = imap_user(imap_t)
    payload = bytes(range(256))
    msg = ("Subject: bin\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n"
           "\r\n--XX\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable"
           "\r\n\r\nh=C3=A9llo=\r\n world\r\n--XX\r\nContent-Type: application/octet-stream\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\n"
           + b64.encodebytes(payload).decode().replace("\n", "\r\n") + "--XX--\r\n")
    smtp_deliver(imap_t, user, msg.encode())
    r = imap(user)
    r.ok("SELECT INBOX")
    lines = r.ok("FETCH 1 (BINARY.SIZE[1] BINARY.SIZE[2])")
    assert b"BINARY.SIZE[1] 12" in lines[0] and b"BINARY.SIZE[2] 256" in lines[0], lines
    lines = r.ok("FETCH 1 (BINARY.PEEK[2]<16.8>)")
    assert b"BINARY[2]<16> {8}" in lines[0] or b"BINARY[2]<16> ~{8}" in lines[0], lines
    lines = r.ok("FETCH 1 (BINARY.PEEK[2])")
    assert b"BINARY[2] ~{256}\r\n" + payload + b")" in lines[0], lines[0][:80]  # literal8
    lines, done = r.cmd("FETCH 1 (BINARY[1.HEADER])")
    assert b" BAD " in done, done


def test_rev2_search_answers_esearch(imap_t, imap):
    """RFC 9051 7.3.4: after ENABLE IMAP4rev2 a SEARCH is answered with ESEARCH (ALL)."""
    user = imap_user(imap_t)
    for i in range(3):
        smtp_deliver(imap_t, user, f"Subject: s{i}\r\n\r\nx\r\n".encode())
    r = imap(user)
    assert any(b"ENABLED IMAP4rev2" in l for l in r.ok("ENABLE IMAP4rev2"))
    r.ok("SELECT INBOX")
    lines = r.ok("SEARCH ALL")
    assert any(l.startswith(b"* ESEARCH (TAG ") and l.endswith(b" ALL 1:3") for l in lines), lines
    assert not any(l.startswith(b"* SEARCH") for l in lines), lines
    lines = r.ok("UID SEARCH RETURN (COUNT) ALL")
    assert any(b" UID COUNT 3" in l for l in lines), lines
    lines = r.ok("SEARCH SUBJECT nomatch")
    assert any(l.startswith(b"* ESEARCH (TAG ") and b"ALL" not in l for l in lines), lines


def test_status_deleted(imap_t, imap):
    """RFC 9051 6.3.11: STATUS DELETED counts the messages flagged \\Deleted."""
    user = imap_user(imap_t)
    for i in range(3):
        smtp_deliver(imap_t, user, f"Subject: d{i}\r\n\r\nx\r\n".encode())
    r = imap(user)
    r.ok("SELECT INBOX")
    r.ok("STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    st = [l for l in r.ok("STATUS INBOX (MESSAGES DELETED)") if l.startswith(b"* STATUS")][0]
    assert b"MESSAGES 3" in st and b"DELETED 2" in st, st
