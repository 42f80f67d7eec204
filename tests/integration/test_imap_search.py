# tests/integration/test_imap_search.py
# SEARCH, UID SEARCH and ESEARCH (RFC 3501 6.4.4, RFC 4731, RFC 7162 MODSEQ) against a
# brute-force model: ~55 generated messages (random flags, sizes, subjects, addresses, Date
# headers, plain / base64 / quoted-printable / multipart bodies) are APPENDed, a few are
# expunged so that sequence numbers and UIDs differ, flags are changed to spread the
# modseqs, and then hundreds of random search programs (every key, NOT, OR, nesting,
# sequence and UID sets) are run on the server and evaluated in Python over what was
# generated. Targeted tests cover decoding (QP soft breaks, base64, RFC 2047) and errors.
import base64
import datetime
import quopri
import random
import re

import pytest

from conftest import IMAP_DOMAIN, IMAP_PW, RawIMAP, imap_fetches, imap_seqset_members, imap_user

SEED = 20240611
N_MESSAGES = 55
N_EXPUNGED = 5
N_QUERIES = 400

VOCAB = ["apple", "banana", "cherry", "delta", "echo", "falcon", "granite", "harbor",
         "indigo", "juniper"]
FROMS = ['"Alice Smith" <alice@alpha.example>', "bob@beta.example",
         "Carol Jones <carol@gamma.example>", "dave.d@delta.example"]
TOS = [f"rcpt@{IMAP_DOMAIN}", '"Team" <team@beta.example>', "eve@alpha.example"]
SYSFLAGS = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"]
KEYWORDS = ["$Work", "$Later"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
FLAG_KEYS = {"ANSWERED": "\\Answered", "DELETED": "\\Deleted", "DRAFT": "\\Draft",
             "FLAGGED": "\\Flagged", "SEEN": "\\Seen"}


def crlf(s):
    return s.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class Msg:
    """One generated message and what the model needs to know about it."""

    def __init__(self, i, rng):
        self.i = i
        words = rng.sample(VOCAB, 2)
        self.subject_words = words
        fold = rng.random() < 0.2
        subject = (f"{words[0]}\r\n {words[1]} #{i:03d}" if fold
                   else f"{words[0]} {words[1]} #{i:03d}")
        self.sent = None
        hdr = [f"From: {rng.choice(FROMS)}", f"To: {rng.choice(TOS)}"]
        if rng.random() < 0.4:
            hdr.append(f"Cc: {rng.choice(TOS)}")
        hdr.append(f"Subject: {subject}")
        if rng.random() < 0.9:
            d = datetime.date(rng.choice([2020, 2021]), rng.randint(1, 12), rng.randint(1, 28))
            self.sent = d
            tz = rng.choice(["+0000", "-0800", "+0530", "-0000"])
            day = f"{d.day:02d}" if rng.random() < 0.5 else str(d.day)
            text = f"{day} {MONTHS[d.month - 1]} {d.year} {rng.randint(0, 23):02d}:" \
                   f"{rng.randint(0, 59):02d}:00 {tz}"
            if rng.random() < 0.7:
                text = d.strftime("%a, ") + text
            hdr.append(f"Date: {text}")
        hdr.append(f"Message-ID: <gen{i}@search.example>")
        hdr.append(f"X-Serial: serial-{i:03d}")
        body_words = rng.sample(VOCAB, 3) + [f"tok{i:03d}x"]
        filler = "lorem ipsum dolor " * rng.randint(0, 150)
        text = (f"Hello {body_words[0]} and {body_words[1]}.\r\n"
                f"{filler}\r\nMore about {body_words[2]}: {body_words[3]}\r\n")
        kind = rng.choice(["plain", "b64", "qp", "multi"])
        self.kind = kind
        if kind == "plain":
            hdr.append("Content-Type: text/plain; charset=us-ascii")
            body = text.encode()
            self.texts = [body]
        elif kind == "b64":
            hdr += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
                    "Content-Transfer-Encoding: base64"]
            body = crlf(base64.encodebytes(text.encode()))
            self.texts = [text.encode()]
        elif kind == "qp":
            hdr += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
                    "Content-Transfer-Encoding: quoted-printable"]
            # a long line (soft breaks), an 8-bit word (=C3=A9), a hard break
            plain = (text.replace("\r\n", "\n") + "caf\u00e9 " + "z" * 70 +
                     f" qpword{i:03d}\n").encode()
            body = crlf(quopri.encodestring(plain))
            assert b"=\n" in quopri.encodestring(plain)
            self.texts = [crlf(plain)]
        else:
            hdr += ["MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="bb"']
            html = f"<p>{rng.choice(VOCAB)} htmlword{i:03d}</p>".encode()
            blob = bytes(rng.randrange(256) for _ in range(rng.randint(10, 600)))
            body = (b"--bb\r\nContent-Type: text/plain\r\n\r\n" + text.encode() +
                    b"\r\n--bb\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64"
                    b"\r\n\r\n" + crlf(base64.encodebytes(html)) +
                    b"\r\n--bb\r\nContent-Type: application/octet-stream\r\n"
                    b"Content-Transfer-Encoding: base64\r\n\r\n" +
                    crlf(base64.encodebytes(blob)) + b"\r\n--bb--\r\n")
            self.texts = [text.encode(), html]
        self.raw = ("\r\n".join(hdr) + "\r\n\r\n").encode() + body
        self.flags = {f for f in SYSFLAGS + KEYWORDS if rng.random() < 0.3}
        # the APPEND date-time; the model takes INTERNALDATE from the server (FETCH)
        when = datetime.datetime(2021, rng.randint(1, 3), rng.randint(1, 28),
                                 rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59))
        self.append_date = when.strftime("%d-%b-%Y %H:%M:%S ") + rng.choice(
            ["+0000", "+0100", "-0700"])
        # the header fields, unfolded as the server matches them
        self.fields = []
        for line in self.raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
            if line[:1] in (b" ", b"\t"):
                name, value = self.fields[-1]
                self.fields[-1] = (name, value + line)
            else:
                name, _, value = line.partition(b":")
                self.fields.append((name.lower(), value))
        # filled from the server: uid, msn, size, internal date, modseq
        self.uid = self.msn = self.size = self.modseq = None
        self.iday = None

    def has_flag(self, f):
        return f.lower() in {x.lower() for x in self.flags}

    def header_has(self, name, needle):
        needle = needle.encode().lower()  # ASCII case folding only, as the server
        return any(n == name.lower().encode() and needle in v.lower() for n, v in self.fields)

    def body_has(self, needle):
        needle = needle.encode().lower()
        return any(needle in t.lower() for t in self.texts)

    def text_has(self, needle):
        return needle.encode().lower() in self.raw.lower() or self.body_has(needle)

    def sent_day(self):
        return self.sent or self.iday


def parse_day(s):
    d, m, y = s.split("-")
    return datetime.date(int(y), MONTHS.index(m) + 1, int(d))


def fmt_day(d, rng):
    day = str(d.day) if rng.random() < 0.5 else f"{d.day:02d}"
    return f"{day}-{MONTHS[d.month - 1]}-{d.year}"


def set_text(nums, star_value, rng):
    """A random sequence set over NUMS (sorted) and the members it names."""
    pieces, members = [], set()
    for _ in range(rng.randint(1, 3)):
        r = rng.random()
        if r < 0.15:
            pieces.append("*")
            members.add(star_value)
        elif r < 0.35:
            a = rng.randint(1, star_value + 3)
            pieces.append(f"{a}:*")
            members.update(range(min(a, star_value), max(a, star_value) + 1))
        elif r < 0.7:
            a, b = rng.randint(1, star_value + 2), rng.randint(1, star_value + 2)
            pieces.append(f"{a}:{b}")
            members.update(range(min(a, b), max(a, b) + 1))
        else:
            a = rng.randint(1, star_value + 2)
            pieces.append(str(a))
            members.add(a)
    return ",".join(pieces), members


class Gen:
    """Random search keys as (text, predicate over Msg)."""

    def __init__(self, rng, msgs):
        self.rng = rng
        self.msgs = msgs
        self.maxuid = max(m.uid for m in msgs)
        self.n = len(msgs)
        days = sorted({m.iday for m in msgs} | {m.sent for m in msgs if m.sent})
        one = datetime.timedelta(days=1)
        self.days = sorted({d + k * one for d in days for k in (-1, 0, 1)})
        self.sizes = sorted({m.size for m in msgs})
        self.modseqs = sorted({m.modseq for m in msgs})
        self.needles = (VOCAB + [w.upper() for w in VOCAB[:3]] + ["ApPlE", "anan", "lorem",
                        "Smith", "alice@alpha", "beta.example", "carol jones", "#01", "#04",
                        "tok01", "qpword0", "htmlword", "serial-02", "caf", "nothing-here",
                        "apple banana", "dolor lorem"] +
                        [f"tok{m.i:03d}x" for m in rng.sample(msgs, 5)] +
                        [f"qpword{m.i:03d}" for m in msgs if m.kind == "qp"][:3] +
                        [f"htmlword{m.i:03d}" for m in msgs if m.kind == "multi"][:3])

    def string(self, s):
        if re.fullmatch(r"[A-Za-z0-9.@#$-]+", s) and self.rng.random() < 0.3:
            return s  # as an atom
        return '"' + s + '"'

    def leaf(self):
        rng = self.rng
        k = rng.randrange(16)
        if k == 0:
            name = rng.choice(list(FLAG_KEYS))
            flag = FLAG_KEYS[name]
            if rng.random() < 0.5:
                return name, lambda m: m.has_flag(flag)
            return "UN" + name, lambda m: not m.has_flag(flag)
        if k == 1:
            kw = rng.choice(KEYWORDS + ["$Never"])
            if rng.random() < 0.5:
                return f"KEYWORD {kw}", lambda m: m.has_flag(kw)
            return f"UNKEYWORD {kw}", lambda m: not m.has_flag(kw)
        if k == 2:
            return rng.choice([("ALL", lambda m: True), ("NEW", lambda m: False),
                               ("OLD", lambda m: True), ("RECENT", lambda m: False)])
        if k in (3, 4):
            d = rng.choice(self.days)
            which = rng.choice(["BEFORE", "ON", "SINCE"])
            text = f"{which} {fmt_day(d, rng)}"
            if k == 4:
                return "SENT" + text, lambda m: {
                    "BEFORE": m.sent_day() < d, "ON": m.sent_day() == d,
                    "SINCE": m.sent_day() >= d}[which]
            return text, lambda m: {"BEFORE": m.iday < d, "ON": m.iday == d,
                                    "SINCE": m.iday >= d}[which]
        if k == 5:
            n = rng.choice(self.sizes) + rng.choice([-1, 0, 1])
            if rng.random() < 0.5:
                return f"LARGER {n}", lambda m: m.size > n
            return f"SMALLER {n}", lambda m: m.size < n
        if k == 6:
            text, members = set_text(None, self.maxuid, rng)
            return f"UID {text}", lambda m: m.uid in members
        if k == 7:
            text, members = set_text(None, self.n, rng)
            return text, lambda m: m.msn in members
        if k in (8, 9):
            field = rng.choice(["FROM", "TO", "CC", "SUBJECT", "BCC"])
            s = rng.choice(self.needles)
            return f"{field} {self.string(s)}", lambda m: m.header_has(field, s)
        if k == 10:
            field = rng.choice(["X-Serial", "Message-ID", "subject", "Content-Type",
                                "X-Missing"])
            s = rng.choice(["serial-0", "serial-01", "gen1", "search.example", "base64",
                            "text/plain", "mixed", "", "banana"])
            return (f"HEADER {field} {self.string(s) if s else chr(34) * 2}",
                    lambda m: m.header_has(field, s))
        if k in (11, 12):
            s = rng.choice(self.needles)
            return f"BODY {self.string(s)}", lambda m: m.body_has(s)
        if k in (13, 14):
            s = rng.choice(self.needles)
            return f"TEXT {self.string(s)}", lambda m: m.text_has(s)
        ms = rng.choice(self.modseqs) + rng.choice([-1, 0, 0, 1])
        return f"MODSEQ {ms}", lambda m: m.modseq >= ms

    def key(self, depth=0):
        r = self.rng.random()
        if depth >= 3 or r < 0.55:
            return self.leaf()
        if r < 0.7:
            t, p = self.key(depth + 1)
            return f"NOT {t}", lambda m: not p(m)
        if r < 0.85:
            (t1, p1), (t2, p2) = self.key(depth + 1), self.key(depth + 1)
            return f"OR {t1} {t2}", lambda m: p1(m) or p2(m)
        keys = [self.key(depth + 1) for _ in range(self.rng.randint(1, 3))]
        return ("(" + " ".join(t for t, _ in keys) + ")",
                lambda m: all(p(m) for _, p in keys))

    def program(self):
        keys = [self.key() for _ in range(self.rng.randint(1, 3))]
        return " ".join(t for t, _ in keys), lambda m: all(p(m) for _, p in keys)


@pytest.fixture(scope="module")
def corpus(imap_t):
    """(user, [Msg] in mailbox order) after appends, expunges and flag changes."""
    rng = random.Random(SEED)
    user = imap_user(imap_t, "search")
    r = RawIMAP(imap_t.imap_ports["imap"]).login(user, IMAP_PW)
    msgs = [Msg(i, rng) for i in range(N_MESSAGES)]
    data = b"".join(b'A%d APPEND INBOX (%s) "%s" {%d+}\r\n%s\r\n' % (
        m.i, " ".join(sorted(m.flags)).encode(), m.append_date.encode(), len(m.raw), m.raw)
        for m in msgs)
    r.send(data + b"A999 NOOP\r\n")
    lines, done = r.read_until_tagged("A999")
    oks = [l for l in lines if re.match(rb"A\d+ OK", l)]
    assert len(oks) == N_MESSAGES, [l for l in lines if not re.match(rb"A\d+ OK", l)][:5]
    r.ok("SELECT INBOX")
    r.ok("ENABLE CONDSTORE")
    # expunge a few (msn != uid afterwards), keeping other \Deleted messages
    gone = sorted(rng.sample(range(1, N_MESSAGES + 1), N_EXPUNGED))
    gone_set = ",".join(map(str, gone))
    r.ok(f"UID STORE {gone_set} +FLAGS.SILENT (\\Deleted)")
    r.ok(f"UID EXPUNGE {gone_set}")
    msgs = [m for k, m in enumerate(msgs) if k + 1 not in gone]
    # spread the modseqs: random flag changes
    for _ in range(12):
        m = rng.choice(msgs)
        flag = rng.choice(SYSFLAGS + KEYWORDS)
        op = "-" if m.has_flag(flag) else "+"
        r.ok(f"STORE {msgs.index(m) + 1} {op}FLAGS.SILENT ({flag})")
        if op == "+":
            m.flags.add(flag)
        else:
            m.flags = {f for f in m.flags if f.lower() != flag.lower()}
    r.ok("UNSELECT")
    r.ok("SELECT INBOX")  # nothing is \Recent in this new view
    f = imap_fetches(r.ok("FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE MODSEQ)"))
    assert sorted(f) == list(range(1, len(msgs) + 1))
    for msn, m in enumerate(msgs, 1):
        it = f[msn]
        m.msn, m.uid = msn, int(it["UID"])
        m.size, m.modseq = int(it["RFC822.SIZE"]), int(it["MODSEQ"][0])
        assert m.size == len(m.raw), (m.i, m.size, len(m.raw))
        assert {x.lower() for x in it["FLAGS"]} == {x.lower() for x in m.flags}, (m.i, it)
        when = datetime.datetime.strptime(it["INTERNALDATE"].decode(), "%d-%b-%Y %H:%M:%S %z")
        m.iday = when.astimezone(datetime.timezone.utc).date()
    assert len({m.uid for m in msgs}) == len(msgs)
    assert any(m.uid != m.msn for m in msgs)
    yield user, msgs, r
    r.close()


def parse_search(lines):
    """(numbers, MODSEQ or None) of the one untagged SEARCH response."""
    rs = [l for l in lines if l.startswith(b"* SEARCH")]
    assert len(rs) == 1, lines
    text = rs[0][len(b"* SEARCH"):].decode()
    mod = None
    m = re.search(r"\(MODSEQ (\d+)\)\s*$", text)
    if m:
        mod = int(m.group(1))
        text = text[: m.start()]
    return [int(x) for x in text.split()], mod


def parse_esearch(lines, tag):
    rs = [l for l in lines if l.startswith(b"* ESEARCH")]
    assert len(rs) == 1, lines
    text = rs[0].decode()
    assert text.startswith(f'* ESEARCH (TAG "{tag}")'), text
    rest = text[len(f'* ESEARCH (TAG "{tag}")'):].split()
    out = {}
    if rest and rest[0] == "UID":
        out["UID"] = True
        rest = rest[1:]
    for i in range(0, len(rest), 2):
        out[rest[i]] = rest[i + 1]
    return out


def expected(msgs, pred, by_uid):
    hits = [m for m in msgs if pred(m)]
    return [m.uid if by_uid else m.msn for m in hits], (max(m.modseq for m in hits)
                                                        if hits else None)


def test_search_random_programs_match_brute_force(corpus):
    user, msgs, r = corpus
    rng = random.Random(SEED + 1)
    gen = Gen(rng, msgs)
    mismatches = []
    for q in range(N_QUERIES):
        text, pred = gen.program()
        by_uid = rng.random() < 0.3
        charset = "CHARSET UTF-8 " if rng.random() < 0.1 else ""
        cmd = ("UID SEARCH " if by_uid else "SEARCH ") + charset + text
        tag = r.tag()
        lines, done = r.cmd(cmd, tag)
        assert done.startswith(f"{tag} OK".encode()), (cmd, done)
        got, mod = parse_search(lines)
        want, want_mod = expected(msgs, pred, by_uid)
        if got != want:
            mismatches.append((cmd, sorted(set(got) - set(want)), sorted(set(want) - set(got))))
            continue
        if "MODSEQ" in text and want:
            assert mod == want_mod, (cmd, mod, want_mod)
        elif "MODSEQ" not in text:
            assert mod is None, (cmd, lines)
    assert not mismatches, f"{len(mismatches)} of {N_QUERIES} differ, e.g. {mismatches[:5]}"


def test_search_every_key_once(corpus):
    """Each key alone, so that a failure names the key."""
    user, msgs, r = corpus
    d = sorted({m.iday for m in msgs})[0]
    sent = sorted(m.sent for m in msgs if m.sent)[len(msgs) // 2]
    mid = sorted(m.size for m in msgs)[len(msgs) // 2]
    ms = sorted(m.modseq for m in msgs)[-3]
    uids = sorted(m.uid for m in msgs)
    day = lambda x: f"{x.day}-{MONTHS[x.month - 1]}-{x.year}"
    cases = [
        ("ALL", lambda m: True),
        ("ANSWERED", lambda m: m.has_flag("\\Answered")),
        ("DELETED", lambda m: m.has_flag("\\Deleted")),
        ("DRAFT", lambda m: m.has_flag("\\Draft")),
        ("FLAGGED", lambda m: m.has_flag("\\Flagged")),
        ("SEEN", lambda m: m.has_flag("\\Seen")),
        ("UNANSWERED", lambda m: not m.has_flag("\\Answered")),
        ("UNDELETED", lambda m: not m.has_flag("\\Deleted")),
        ("UNDRAFT", lambda m: not m.has_flag("\\Draft")),
        ("UNFLAGGED", lambda m: not m.has_flag("\\Flagged")),
        ("UNSEEN", lambda m: not m.has_flag("\\Seen")),
        ("KEYWORD $Work", lambda m: m.has_flag("$Work")),
        ("UNKEYWORD $Work", lambda m: not m.has_flag("$Work")),
        ("NEW", lambda m: False),
        ("OLD", lambda m: True),
        ("RECENT", lambda m: False),
        (f"BEFORE {day(d + datetime.timedelta(days=1))}", lambda m: m.iday <= d),
        (f"ON {day(d)}", lambda m: m.iday == d),
        (f"SINCE {day(d)}", lambda m: m.iday >= d),
        (f"SENTBEFORE {day(sent)}", lambda m: m.sent_day() < sent),
        (f"SENTON {day(sent)}", lambda m: m.sent_day() == sent),
        (f"SENTSINCE {day(sent)}", lambda m: m.sent_day() >= sent),
        (f"LARGER {mid}", lambda m: m.size > mid),
        (f"SMALLER {mid}", lambda m: m.size < mid),
        (f"UID {uids[3]}:{uids[10]},{uids[-1]}",
         lambda m: uids[3] <= m.uid <= uids[10] or m.uid == uids[-1]),
        ("2:5,9,*", lambda m: 2 <= m.msn <= 5 or m.msn in (9, len(msgs))),
        ('FROM "alice"', lambda m: m.header_has("from", "alice")),
        ('TO "team"', lambda m: m.header_has("to", "team")),
        ('CC "eve"', lambda m: m.header_has("cc", "eve")),
        ('BCC "x"', lambda m: False),
        ('SUBJECT "cherry"', lambda m: m.header_has("subject", "cherry")),
        ('HEADER X-Serial "serial-01"', lambda m: m.header_has("x-serial", "serial-01")),
        ('HEADER Cc ""', lambda m: any(n == b"cc" for n, _ in m.fields)),
        ('BODY "juniper"', lambda m: m.body_has("juniper")),
        ('TEXT "juniper"', lambda m: m.text_has("juniper")),
        ('TEXT "serial-02"', lambda m: m.text_has("serial-02")),
        (f"MODSEQ {ms}", lambda m: m.modseq >= ms),
        ("NOT SEEN", lambda m: not m.has_flag("\\Seen")),
        ("OR FLAGGED DRAFT", lambda m: m.has_flag("\\Flagged") or m.has_flag("\\Draft")),
        ("(OR SEEN (FLAGGED ANSWERED)) NOT (OR DELETED KEYWORD $Later)",
         lambda m: (m.has_flag("\\Seen") or (m.has_flag("\\Flagged") and m.has_flag(
             "\\Answered"))) and not (m.has_flag("\\Deleted") or m.has_flag("$Later"))),
        ("((((((((FLAGGED))))))))", lambda m: m.has_flag("\\Flagged")),
    ]
    bad = []
    for text, pred in cases:
        for by_uid in (False, True):
            cmd = ("UID SEARCH " if by_uid else "SEARCH ") + text
            tag = r.tag()
            lines, done = r.cmd(cmd, tag)
            assert done.startswith(f"{tag} OK".encode()), (cmd, done)
            got, _ = parse_search(lines)
            want, _ = expected(msgs, pred, by_uid)
            if got != want:
                bad.append((cmd, got, want))
    assert not bad, bad


def test_esearch_return_options(corpus):
    user, msgs, r = corpus
    rng = random.Random(SEED + 2)
    gen = Gen(rng, msgs)
    for q in range(60):
        text, pred = gen.program()
        by_uid = rng.random() < 0.5
        opts = rng.choice(["MIN MAX COUNT ALL", "MIN", "MAX", "COUNT", "ALL", "",
                           "COUNT MIN"])
        tag = r.tag()
        cmd = ("UID SEARCH" if by_uid else "SEARCH") + f" RETURN ({opts}) {text}"
        lines, done = r.cmd(cmd, tag)
        assert done.startswith(f"{tag} OK".encode()), (cmd, done)
        assert not any(l.startswith(b"* SEARCH") for l in lines), lines
        got = parse_esearch(lines, tag)
        want, _ = expected(msgs, pred, by_uid)
        assert got.pop("UID", False) == by_uid, (cmd, lines)
        wanted = set(opts.split()) or {"ALL"}
        if "MIN" in wanted and want:
            assert int(got.pop("MIN")) == min(want), (cmd, lines)
        if "MAX" in wanted and want:
            assert int(got.pop("MAX")) == max(want), (cmd, lines)
        if "COUNT" in wanted:
            assert int(got.pop("COUNT")) == len(want), (cmd, lines)
        if "ALL" in wanted and want:
            assert imap_seqset_members(got.pop("ALL")) == want, (cmd, lines)
        got.pop("MODSEQ", None)
        assert got == {}, (cmd, lines)  # nothing else, and nothing for an empty result


def test_search_decoding(imap_t, imap):
    """BODY and TEXT look into decoded text parts; headers are unfolded and RFC 2047
    words decoded."""
    user = imap_user(imap_t)
    r = imap(user)
    qp = (b"Subject: =?utf-8?q?caf=C3=A9_cr=C3=A8me?= =?UTF-8?B?YnLDu2zDqWU=?=\r\n"
          b"From: =?iso-8859-1?q?J=F6rg?= <joerg@far.example>\r\n"
          b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
          b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
          b"supercali=\r\nfragilistic and na=C3=AFve\r\n")
    b64 = (b"Subject: plain subject\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + crlf(base64.encodebytes("hidden zeppelin w\u00f6rd\r\n".encode())))
    folded = b"Subject: first half\r\n\tsecond half\r\n\r\nbody\r\n"
    for m in (qp, b64, folded):
        r.append("INBOX", m)
    r.ok("SELECT INBOX")

    def search(crit, literal=None):
        if literal is None:
            lines = r.ok(f"SEARCH {crit}")
        else:
            tag = r.tag()
            r.send(f"{tag} SEARCH CHARSET UTF-8 {crit} {{{len(literal)}+}}\r\n".encode()
                   + literal + b"\r\n")
            lines, done = r.read_until_tagged(tag)
            assert done.startswith(f"{tag} OK".encode()), done
        return parse_search(lines)[0]

    assert search('BODY "supercalifragilistic"') == [1]  # a QP soft line break undone
    assert search('BODY "supercali="') == []
    assert search("BODY", "naïve".encode()) == [1]
    assert search('BODY "zeppelin"') == [2]  # base64 decoded
    assert search("BODY", "wörd".encode()) == [2]
    assert search('TEXT "zeppelin"') == [2]
    assert search('BODY "aGlkZGVu"') == []  # not the encoded form
    assert search("SUBJECT", "crème".encode()) == [1]
    assert search("SUBJECT", "brûlée".encode()) == [1]
    assert search("FROM", "Jörg".encode()) == [1]
    assert search('SUBJECT "half\tsecond"') == [3]  # unfolded: CRLF removed
    assert search('SUBJECT "HALF"') == [3]
    assert search('HEADER Subject "plain"') == [2]
    assert search('HEADER "content-transfer-encoding" "BASE64"') == [2]


def test_search_errors(imap_t, imap):
    user = imap_user(imap_t)
    r = imap(user)
    r.append("INBOX", b"Subject: x\r\n\r\ny\r\n")
    r.ok("SELECT INBOX")
    for crit in ("FOO", "BEFORE notadate", "BEFORE 32-Jan-2020", "LARGER x", "OR ALL",
                 "NOT", "()", "UID 0", "1:0x", "HEADER Subject", "RETURN (FOO) ALL", "",
                 "KEYWORD"):
        lines, done = r.cmd(f"SEARCH {crit}".rstrip())
        assert re.match(rb"\S+ BAD", done), (crit, lines, done)
    lines, done = r.cmd("SEARCH CHARSET KOI8-R ALL")
    assert re.match(rb"\S+ NO \[BADCHARSET", done), done
    assert parse_search(r.ok("SEARCH CHARSET us-ascii ALL"))[0] == [1]
    assert parse_search(r.ok("search all"))[0] == [1]
