/*
 * tests/unit/imap/test_parser.c
 * The IMAP command parser (proxy/imap/parser.c). Every command shape real clients send, each
 * fed all at once, byte by byte (need-more until the line ends, as Dovecot's
 * test-imap-parser does) and in random chunks, with identical results; then attacks: bad
 * tags, NUL octets, unterminated and oversized literals, a 1 MiB line, 1000-deep lists,
 * broken sections, each answered with BAD (or the documented code) and skipped so that the
 * next command in the same buffer parses.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parser.h"
#include "seqset.h"

#define S(lit) lit, sizeof(lit) - 1 /* a literal as (pointer, length), NULs included */

/* ---- A string builder and a printer for results ----------------------------------------- */

struct sb {
    char *s;
    size_t len, cap;
};

static void sb_put(struct sb *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        assert_non_null(b->s);
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_str(struct sb *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_fmt(struct sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_fmt(struct sb *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    sb_str(b, tmp);
}

/* sb_esc(): printable ASCII as is, anything else (and "\") as \xHH. */
static void sb_esc(struct sb *b, const char *s, size_t n, bool quote)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char) s[i];

        if (quote && (c == '"' || c == '\\')) {
            char e[2] = {'\\', (char) c};
            sb_put(b, e, 2);
        } else if (c < 0x20 || c >= 0x7f || (!quote && c == '\\' && i > 0)) {
            sb_fmt(b, "\\x%02x", c);
        } else {
            sb_put(b, (const char *) &c, 1);
        }
    }
}

static void put_args(struct sb *b, const struct imap_arg *args, size_t count);

static void put_arg(struct sb *b, const struct imap_arg *a)
{
    assert_int_not_equal(a->type, IMAP_ARG_EOL);
    if (a->type != IMAP_ARG_LIST) {
        assert_non_null(a->str);
        assert_int_equal(a->str[a->len], '\0');
    }
    switch (a->type) {
    case IMAP_ARG_ATOM:
        if ((a->flags & IMAP_ARG_FLAG_SECTION) == 0) {
            sb_esc(b, a->str, a->len, false);
            break;
        }
        sb_esc(b, a->str, a->name_len, false);
        sb_str(b, "[");
        put_args(b, a->list, a->count);
        sb_str(b, "]");
        if (a->flags & IMAP_ARG_FLAG_PARTIAL)
            sb_fmt(b, "<%llu.%llu>", (unsigned long long) a->partial_offset,
                   (unsigned long long) a->partial_count);
        if (a->flags & IMAP_ARG_FLAG_SUFFIX) {
            sb_str(b, "~raw=");
            sb_esc(b, a->str, a->len, false);
        }
        if (a->flags & IMAP_ARG_FLAG_RAW_LITERAL)
            sb_str(b, "~lit");
        break;
    case IMAP_ARG_QUOTED:
        sb_str(b, "\"");
        sb_esc(b, a->str, a->len, true);
        sb_str(b, "\"");
        break;
    case IMAP_ARG_LITERAL:
        sb_fmt(b, "%s{%zu%s}", (a->flags & IMAP_ARG_FLAG_LITERAL8) ? "~" : "", a->len,
               (a->flags & IMAP_ARG_FLAG_NONSYNC) ? "+" : "");
        sb_esc(b, a->str, a->len, false);
        break;
    case IMAP_ARG_NIL:
        assert_int_equal(a->len, 3);
        sb_str(b, "NIL");
        break;
    case IMAP_ARG_LIST:
        sb_str(b, "(");
        put_args(b, a->list, a->count);
        sb_str(b, ")");
        break;
    default:
        fail();
    }
}

static void put_args(struct sb *b, const struct imap_arg *args, size_t count)
{
    assert_non_null(args);
    assert_int_equal(args[count].type, IMAP_ARG_EOL);
    for (size_t i = 0; i < count; i++) {
        if (i > 0)
            sb_str(b, " ");
        put_arg(b, &args[i]);
    }
}

/* ---- Driving the parser like a session -------------------------------------------------- */

enum chunking { WHOLE, BYTES, RANDOM };

struct run_opts {
    const struct imap_parser_limits *lim;
    unsigned flags;
    uint64_t reject_over; /* reject continuations for literals larger than this */
};

struct run_out {
    struct sb events;  /* one line per event */
    struct sb offsets; /* absolute end offsets of OK, CONT and TOOBIG events */
};

static void put_ids(struct sb *b, const struct imap_parse_result *res)
{
    sb_str(b, res->tag[0] != '\0' ? res->tag : "*");
    if (res->uid)
        sb_str(b, " UID");
    if (res->name[0] != '\0') {
        sb_str(b, " ");
        sb_str(b, res->name);
    }
}

/* run() feeds INPUT to a fresh parser in chunks, consuming what it says, answering
 * continuations, and records every event. */
static void run(const char *input, size_t len, enum chunking mode, unsigned seed,
                const struct run_opts *o, struct run_out *out)
{
    struct imap_parser *p = imap_parser_new(o->lim, o->flags);
    size_t delivered = 0, off = 0;
    bool stop = false;

    assert_non_null(p);
    memset(out, 0, sizeof(*out));
    sb_str(&out->events, "");
    sb_str(&out->offsets, "");
    srand(seed);
    while (!stop) {
        if (mode == WHOLE)
            delivered = len;
        else if (mode == BYTES)
            delivered += delivered < len ? 1 : 0;
        else
            delivered += (size_t) (rand() % 23) + 1;
        if (delivered > len)
            delivered = len;
        for (;;) {
            struct imap_parse_result res;
            size_t avail = delivered - off;
            int rc = imap_parser_parse(p, (const uint8_t *) input + off, avail, &res);

            assert_true(res.consumed <= avail);
            off += res.consumed;
            if (rc == IMAP_PARSE_NEED_MORE) {
                assert_int_equal(res.consumed, avail);
                break;
            }
            if (rc == IMAP_PARSE_FATAL) {
                sb_fmt(&out->events, "FATAL %s\n", res.msg);
                stop = true;
                break;
            }
            assert_true(res.consumed > 0);
            if (rc == IMAP_PARSE_OK) {
                const struct imap_cmd *c = res.cmd;

                assert_non_null(c);
                assert_string_equal(c->tag, res.tag);
                assert_string_equal(c->name, res.name);
                sb_str(&out->events, "OK ");
                put_ids(&out->events, &res);
                if (c->count > 0)
                    sb_str(&out->events, " ");
                put_args(&out->events, c->args, c->count);
                sb_str(&out->events, "\n");
                imap_cmd_free(res.cmd);
            } else if (rc == IMAP_PARSE_NEED_CONTINUATION) {
                sb_str(&out->events, "CONT ");
                put_ids(&out->events, &res);
                sb_fmt(&out->events, " %llu\n", (unsigned long long) res.literal_size);
                if (res.literal_size > o->reject_over) {
                    sb_str(&out->events, "REJECTED\n");
                    imap_parser_reject_literal(p);
                } else {
                    imap_parser_accept_literal(p);
                }
            } else if (rc == IMAP_PARSE_LITERAL_TOO_BIG) {
                sb_str(&out->events, "TOOBIG ");
                put_ids(&out->events, &res);
                sb_fmt(&out->events, " %llu %s\n", (unsigned long long) res.literal_size, res.msg);
            } else {
                assert_int_equal(rc, IMAP_PARSE_BAD);
                assert_non_null(res.msg);
                sb_str(&out->events, "BAD ");
                put_ids(&out->events, &res);
                sb_fmt(&out->events, " %s\n", res.msg);
                continue; /* no offset: a BAD is reported as soon as it is seen */
            }
            sb_fmt(&out->offsets, "%zu ", off);
        }
        if (delivered == len)
            break;
    }
    if (!stop && !imap_parser_idle(p))
        sb_str(&out->events, "INCOMPLETE\n");
    imap_parser_free(p);
}

static void out_free(struct run_out *o)
{
    free(o->events.s);
    free(o->offsets.s);
}

/* check_opts() parses INPUT whole, byte by byte and in 20 random chunkings: every run must
 * give EXPECT (events joined by "\n", with a final "\n") and the same offsets. */
static void check_opts(const char *input, size_t len, const struct run_opts *o, const char *expect)
{
    struct run_out whole, other;

    run(input, len, WHOLE, 0, o, &whole);
    if (strcmp(whole.events.s, expect) != 0)
        fprintf(stderr, "input: %.*s\nexpected:\n%sgot:\n%s", (int) (len < 200 ? len : 200), input,
                expect, whole.events.s);
    assert_string_equal(whole.events.s, expect);
    for (unsigned seed = 0; seed <= 20; seed++) {
        run(input, len, seed == 0 ? BYTES : RANDOM, seed, o, &other);
        assert_string_equal(other.events.s, whole.events.s);
        assert_string_equal(other.offsets.s, whole.offsets.s);
        out_free(&other);
    }
    out_free(&whole);
}

static const struct run_opts plain_opts = {NULL, 0, UINT64_MAX};
static const struct run_opts plus_opts = {NULL, IMAP_PARSER_FLAG_LITERAL_PLUS, UINT64_MAX};

static void check(const char *input, size_t len, const char *expect)
{
    check_opts(input, len, &plain_opts, expect);
}

/* trickle() is Dovecot's test: one complete command fed one byte at a time must give
 * NEED_MORE (consuming the byte) until the line end, NEED_CONTINUATION right after each
 * synchronizing literal's CRLF, and OK on the last byte. Returns the command. */
static struct imap_cmd *trickle(struct imap_parser *p, const char *input, size_t len)
{
    struct imap_parse_result res;
    int rc = IMAP_PARSE_NEED_MORE;

    for (size_t i = 0; i < len; i++) {
        rc = imap_parser_parse(p, (const uint8_t *) input + i, 1, &res);
        assert_int_equal(res.consumed, 1);
        if (i + 1 == len)
            break;
        if (rc == IMAP_PARSE_NEED_CONTINUATION) {
            assert_true(i >= 3 && input[i] == '\n' && (input[i - 1] == '}' || input[i - 2] == '}'));
            imap_parser_accept_literal(p);
            continue;
        }
        assert_int_equal(rc, IMAP_PARSE_NEED_MORE);
        assert_false(imap_parser_idle(p));
    }
    assert_int_equal(rc, IMAP_PARSE_OK);
    assert_true(imap_parser_idle(p));
    return res.cmd;
}

static void trickle_all(const char *input, size_t len, unsigned flags)
{
    struct imap_parser *p = imap_parser_new(NULL, flags);

    assert_non_null(p);
    imap_cmd_free(trickle(p, input, len));
    imap_parser_free(p);
}

/* ---- Commands real clients send --------------------------------------------------------- */

static void test_login(void **state)
{
    (void) state;
    check(S("a1 LOGIN alice s3cret\r\n"), "OK a1 LOGIN alice s3cret\n");
    check(S("a2 login \"al ice\" \"p\\\"w\\\\d\"\r\n"), "OK a2 LOGIN \"al ice\" \"p\\\"w\\\\d\"\n");
    check(S("a3 LOGIN {5}\r\nalice {6}\r\ns3cret\r\n"),
          "CONT a3 LOGIN 5\nCONT a3 LOGIN 6\nOK a3 LOGIN {5}alice {6}s3cret\n");
    check_opts(S("a4 LOGIN {5+}\r\nalice \"s3cret\"\r\n"), &plus_opts,
               "OK a4 LOGIN {5+}alice \"s3cret\"\n");
    /* UTF-8 in quoted strings (RFC 9051), an empty string, an empty literal. */
    check(S("a5 LOGIN \"j\xc3\xb6rg\" \"\"\r\n"), "OK a5 LOGIN \"j\\xc3\\xb6rg\" \"\"\n");
    check(S("a6 LOGIN alice {0}\r\n\r\n"), "CONT a6 LOGIN 0\nOK a6 LOGIN alice {0}\n");
    trickle_all(S("a3 LOGIN {5}\r\nalice {6}\r\ns3cret\r\n"), 0);
    trickle_all(S("a4 LOGIN {5+}\r\nalice \"s3cret\"\r\n"), 0);
    trickle_all(S("a6 LOGIN alice {0}\r\n\r\n"), 0);
}

static void test_select_list_status(void **state)
{
    (void) state;
    check(S("s1 SELECT \"INBOX\"\r\n"), "OK s1 SELECT \"INBOX\"\n");
    check(S("s2 SELECT INBOX (CONDSTORE)\r\n"), "OK s2 SELECT INBOX (CONDSTORE)\n");
    check(S("s3 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n"),
          "OK s3 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\n");
    check(S("s4 EXAMINE \"Sent Items\"\r\n"), "OK s4 EXAMINE \"Sent Items\"\n");
    check(S("l1 LIST \"\" \"*\"\r\n"), "OK l1 LIST \"\" \"*\"\n");
    check(S("l2 LIST \"\" %\r\n"), "OK l2 LIST \"\" %\n");
    check(S("l3 LIST (SUBSCRIBED) \"\" (\"INBOX\" \"Lists/%\") RETURN (CHILDREN STATUS "
            "(MESSAGES UNSEEN))\r\n"),
          "OK l3 LIST (SUBSCRIBED) \"\" (\"INBOX\" \"Lists/%\") RETURN (CHILDREN STATUS "
          "(MESSAGES UNSEEN))\n");
    check(S("l4 LSUB \"\" *\r\n"), "OK l4 LSUB \"\" *\n");
    check(S("t1 STATUS INBOX (MESSAGES UIDNEXT)\r\n"), "OK t1 STATUS INBOX (MESSAGES UIDNEXT)\n");
    check(S("t2 STATUS {5}\r\nINBOX (UIDVALIDITY)\r\n"),
          "CONT t2 STATUS 5\nOK t2 STATUS {5}INBOX (UIDVALIDITY)\n");
    check(S("n1 NAMESPACE\r\n"), "OK n1 NAMESPACE\n");
    check(S("c1 CREATE \"a/b\"\r\nc2 DELETE foo\r\nc3 RENAME foo bar\r\n"),
          "OK c1 CREATE \"a/b\"\nOK c2 DELETE foo\nOK c3 RENAME foo bar\n");
    trickle_all(S("t2 STATUS {5}\r\nINBOX (UIDVALIDITY)\r\n"), 0);
}

static void test_fetch(void **state)
{
    struct imap_parser *p = imap_parser_new(NULL, 0);
    struct imap_cmd *c;
    const struct imap_arg *items, *body, *sec;

    (void) state;
    check(S("f1 FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]<0.1024>)\r\n"),
          "OK f1 FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]<0.1024>)\n");
    check(S("f2 UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY[])\r\n"),
          "OK f2 UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY[])\n");
    check(S("f3 fetch 2,4:7 ALL\r\n"), "OK f3 FETCH 2,4:7 ALL\n");
    check(S("f4 FETCH 1 (BODY[1.2.MIME] BODY.PEEK[2.TEXT]<100.200> BINARY.PEEK[1]<0.10> "
            "BINARY.SIZE[1] BODYSTRUCTURE BODY)\r\n"),
          "OK f4 FETCH 1 (BODY[1.2.MIME] BODY.PEEK[2.TEXT]<100.200> BINARY.PEEK[1]<0.10> "
          "BINARY.SIZE[1] BODYSTRUCTURE BODY)\n");
    check(S("f5 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n"),
          "OK f5 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)\n");
    /* Header names are astrings: quoted and literal ones inside the brackets. */
    check(S("f6 FETCH 1 BODY[HEADER.FIELDS.NOT (\"X-Spam\" {4}\r\nFrom)]\r\n"),
          "CONT f6 FETCH 4\nOK f6 FETCH 1 BODY[HEADER.FIELDS.NOT (\"X-Spam\" {4}From)]~lit\n");
    trickle_all(S("f1 FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]<0.1024>)\r\n"), 0);
    trickle_all(S("f6 FETCH 1 BODY[HEADER.FIELDS.NOT (\"X-Spam\" {4}\r\nFrom)]\r\n"), 0);

    /* The tree a FETCH handler walks. */
    c = trickle(p,
                S("f1 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]<0.1024>)\r\n"));
    assert_string_equal(c->tag, "f1");
    assert_string_equal(c->name, "FETCH");
    assert_true(c->uid);
    assert_int_equal(c->count, 2);
    assert_true(imap_arg_atom_equals(&c->args[0], "1:*"));
    assert_int_equal(c->args[1].type, IMAP_ARG_LIST);
    items = c->args[1].list;
    assert_int_equal(c->args[1].count, 2);
    assert_true(imap_arg_atom_equals(&items[0], "flags"));
    body = &items[1];
    assert_int_equal(body->type, IMAP_ARG_ATOM);
    assert_int_equal(body->flags, IMAP_ARG_FLAG_SECTION | IMAP_ARG_FLAG_PARTIAL);
    assert_true(imap_arg_atom_equals(body, "BODY.PEEK"));
    assert_false(imap_arg_atom_equals(body, "BODY"));
    assert_int_equal(body->name_len, 9);
    assert_string_equal(body->str, "BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]<0.1024>");
    assert_int_equal(body->partial_offset, 0);
    assert_int_equal(body->partial_count, 1024);
    assert_int_equal(body->count, 2);
    sec = body->list;
    assert_true(imap_arg_atom_equals(&sec[0], "HEADER.FIELDS"));
    assert_int_equal(sec[1].type, IMAP_ARG_LIST);
    assert_int_equal(sec[1].count, 2);
    assert_true(imap_arg_atom_equals(&sec[1].list[0], "FROM"));
    assert_true(imap_arg_atom_equals(&sec[1].list[1], "SUBJECT"));
    assert_int_equal(sec[1].list[2].type, IMAP_ARG_EOL);
    assert_int_equal(sec[2].type, IMAP_ARG_EOL);
    /* The command outlives the parser: nothing points into the input or the parser. */
    imap_parser_free(p);
    assert_string_equal(c->args[1].list[1].list[1].list[0].str, "FROM");
    imap_cmd_free(c);
}

static void test_store_copy_expunge(void **state)
{
    (void) state;
    check(S("w1 STORE 1:3 +FLAGS.SILENT (\\Seen \\Deleted)\r\n"),
          "OK w1 STORE 1:3 +FLAGS.SILENT (\\Seen \\Deleted)\n");
    check(S("w2 UID STORE 5 -FLAGS ($Junk NonJunk)\r\n"),
          "OK w2 UID STORE 5 -FLAGS ($Junk NonJunk)\n");
    check(S("w3 STORE 1 (UNCHANGEDSINCE 320162338) FLAGS ()\r\n"),
          "OK w3 STORE 1 (UNCHANGEDSINCE 320162338) FLAGS ()\n");
    check(S("w4 UID COPY 1:5 \"Archive/2024\"\r\nw5 UID MOVE 7 Trash\r\nw6 EXPUNGE\r\n"
            "w7 UID EXPUNGE 3:4\r\nw8 CLOSE\r\n"),
          "OK w4 UID COPY 1:5 \"Archive/2024\"\nOK w5 UID MOVE 7 Trash\nOK w6 EXPUNGE\n"
          "OK w7 UID EXPUNGE 3:4\nOK w8 CLOSE\n");
}

static void test_search(void **state)
{
    (void) state;
    check(S("q1 SEARCH CHARSET UTF-8 OR (FROM \"alice\" NOT SEEN) NOT (SUBJECT {5}\r\nhello) "
            "UNDELETED SINCE 1-Feb-1994\r\n"),
          "CONT q1 SEARCH 5\nOK q1 SEARCH CHARSET UTF-8 OR (FROM \"alice\" NOT SEEN) NOT "
          "(SUBJECT {5}hello) UNDELETED SINCE 1-Feb-1994\n");
    check(S("q2 UID SEARCH RETURN (MIN MAX COUNT) OR OR NOT DELETED 1:100 UID 5:* HEADER "
            "Message-ID <a@b>\r\n"),
          "OK q2 UID SEARCH RETURN (MIN MAX COUNT) OR OR NOT DELETED 1:100 UID 5:* HEADER "
          "Message-ID <a@b>\n");
    check(S("q3 SEARCH ((((OR SEEN FLAGGED))))\r\n"), "OK q3 SEARCH ((((OR SEEN FLAGGED))))\n");
    check(S("q4 SEARCH TEXT \"caf\xc3\xa9\" MODSEQ 620162338\r\n"),
          "OK q4 SEARCH TEXT \"caf\\xc3\\xa9\" MODSEQ 620162338\n");
    check(S("q5 SEARCH $\r\n"), "OK q5 SEARCH $\n");
    trickle_all(S("q1 SEARCH CHARSET UTF-8 OR (FROM \"alice\" NOT SEEN) NOT (SUBJECT {5}\r\n"
                  "hello) UNDELETED\r\n"),
                0);
}

static void test_append(void **state)
{
    (void) state;
    check(S("p1 APPEND saved-messages (\\Seen) \"05-Jul-1994 02:34:56 -0700\" {27}\r\n"
            "Subject: hi\r\n\r\nbody\r\n.\r\n...\r\n"),
          "CONT p1 APPEND 27\nOK p1 APPEND saved-messages (\\Seen) \"05-Jul-1994 02:34:56 "
          "-0700\" {27}Subject: hi\\x0d\\x0a\\x0d\\x0abody\\x0d\\x0a.\\x0d\\x0a...\n");
    check_opts(S("p2 APPEND INBOX {11+}\r\nHello world\r\n"), &plus_opts,
               "OK p2 APPEND INBOX {11+}Hello world\n");
    /* LITERAL- (no LITERAL+ advertised): up to 4096 octets need no continuation. */
    check(S("p3 APPEND INBOX () {5+}\r\nHello\r\n"), "OK p3 APPEND INBOX () {5+}Hello\n");
    /* literal8 (RFC 3516) may hold NUL; MULTIAPPEND; CATENATE. */
    check(S("p4 APPEND Drafts ~{5}\r\nhe\0lo\r\n"), "CONT p4 APPEND 5\nOK p4 APPEND Drafts "
                                                    "~{5}he\\x00lo\n");
    check(S("p5 APPEND INBOX (\\Seen) {3+}\r\none (\\Draft) {3+}\r\ntwo\r\n"),
          "OK p5 APPEND INBOX (\\Seen) {3+}one (\\Draft) {3+}two\n");
    check(S("p6 APPEND Drafts CATENATE (URL \"/INBOX;UIDVALIDITY=3/;UID=1\" TEXT {4+}\r\n"
            "abcd)\r\n"),
          "OK p6 APPEND Drafts CATENATE (URL \"/INBOX;UIDVALIDITY=3/;UID=1\" TEXT {4+}abcd)\n");
    trickle_all(S("p1 APPEND saved-messages (\\Seen) \"05-Jul-1994 02:34:56 -0700\" {27}\r\n"
                  "Subject: hi\r\n\r\nbody\r\n.\r\n...\r\n"),
                0);
    trickle_all(S("p2 APPEND INBOX {11+}\r\nHello world\r\n"), IMAP_PARSER_FLAG_LITERAL_PLUS);
    trickle_all(S("p4 APPEND Drafts ~{5+}\r\nhe\0lo\r\n"), 0);
}

static void test_misc_commands(void **state)
{
    struct imap_parser *p = imap_parser_new(NULL, 0);
    struct imap_cmd *c;
    size_t len;

    (void) state;
    check(S("i1 ID (\"name\" \"x\" \"version\" \"1.0\")\r\n"),
          "OK i1 ID (\"name\" \"x\" \"version\" \"1.0\")\n");
    check(S("i2 ID NIL\r\n"), "OK i2 ID NIL\n");
    check(S("d1 IDLE\r\n"), "OK d1 IDLE\n");
    check(S("e1 ENABLE CONDSTORE QRESYNC UTF8=ACCEPT\r\n"),
          "OK e1 ENABLE CONDSTORE QRESYNC UTF8=ACCEPT\n");
    check(S("u1 AUTHENTICATE PLAIN AGFsaWNlAHMzY3JldA==\r\n"),
          "OK u1 AUTHENTICATE PLAIN AGFsaWNlAHMzY3JldA==\n");
    check(S("u2 AUTHENTICATE PLAIN =\r\nu3 AUTHENTICATE XOAUTH2\r\n"),
          "OK u2 AUTHENTICATE PLAIN =\nOK u3 AUTHENTICATE XOAUTH2\n");
    check(S("x1 CAPABILITY\r\nx2 NOOP\r\nx3 STARTTLS\r\nx4 LOGOUT\r\n"),
          "OK x1 CAPABILITY\nOK x2 NOOP\nOK x3 STARTTLS\nOK x4 LOGOUT\n");
    check(S("m1 GETMETADATA \"\" (/shared/comment /private/comment)\r\n"),
          "OK m1 GETMETADATA \"\" (/shared/comment /private/comment)\n");
    check(S("m2 SETQUOTA \"\" (STORAGE 512)\r\nm3 COMPRESS DEFLATE\r\nm4 X-TERN-DEBUG 1\r\n"),
          "OK m2 SETQUOTA \"\" (STORAGE 512)\nOK m3 COMPRESS DEFLATE\nOK m4 X-TERN-DEBUG 1\n");
    check(S("m5 NOTIFY SET (selected MessageNew (uid body.peek[header.fields (from to)]) "
            "MessageExpunge)\r\n"),
          "OK m5 NOTIFY SET (selected MessageNew (uid body.peek[header.fields (from to)]) "
          "MessageExpunge)\n");
    /* Tags: any ASTRING-CHAR but "+", "]" included. */
    check(S("A.001] NOOP\r\n*tag NOOP\r\n"), "OK A.001] NOOP\nBAD * Invalid character in tag\n");
    /* Bare LF ends a line (nc, telnet); extra and trailing SP are accepted. */
    check(S("b1 NOOP\nb2 SELECT  INBOX \r\nb3 LOGOUT   \n"),
          "OK b1 NOOP\nOK b2 SELECT INBOX\nOK b3 LOGOUT\n");
    /* NIL in any case, kept as sent; an astring named NIL. */
    c = trickle(p, S("n1 SELECT nil\r\n"));
    assert_int_equal(c->args[0].type, IMAP_ARG_NIL);
    assert_string_equal(imap_arg_astring(&c->args[0], &len), "nil");
    assert_null(imap_arg_string(&c->args[0], &len));
    imap_cmd_free(c);
    /* Unquoted names with brackets are still astrings. */
    c = trickle(p, S("g1 SELECT [Gmail]/Sent\r\n"));
    assert_int_equal(c->args[0].flags, IMAP_ARG_FLAG_SECTION | IMAP_ARG_FLAG_SUFFIX);
    assert_string_equal(imap_arg_astring(&c->args[0], &len), "[Gmail]/Sent");
    assert_int_equal(len, 12);
    assert_int_equal(c->args[0].name_len, 0);
    imap_cmd_free(c);
    c = trickle(p, S("g2 LIST \"\" [Gmail]\r\n"));
    assert_int_equal(c->args[1].flags, IMAP_ARG_FLAG_SECTION);
    assert_string_equal(imap_arg_astring(&c->args[1], &len), "[Gmail]");
    imap_cmd_free(c);
    check(S("t1 SELECT ~foo ~ ~~ ]x (~)\r\n"), "OK t1 SELECT ~foo ~ ~~ ]x (~)\n");
    c = trickle(p, S("g3 SELECT foo]bar\r\n"));
    assert_int_equal(c->args[0].flags, 0);
    assert_string_equal(imap_arg_astring(&c->args[0], &len), "foo]bar");
    imap_cmd_free(c);
    imap_parser_free(p);
    check(S("g4 SELECT [Gmail]/Sent\r\n"), "OK g4 SELECT [Gmail]~raw=[Gmail]/Sent\n");
}

static void test_pipeline(void **state)
{
    (void) state;
    /* Several commands in one read: each OK leaves the rest unconsumed. */
    check(S("1 NOOP\r\n2 SELECT INBOX\r\n3 FETCH 1 FLAGS\r\n4 APPEND x {1}\r\ny\r\n5 LOGOUT\r\n"),
          "OK 1 NOOP\nOK 2 SELECT INBOX\nOK 3 FETCH 1 FLAGS\nCONT 4 APPEND 1\nOK 4 APPEND x "
          "{1}y\nOK 5 LOGOUT\n");
}

/* ---- The continuation protocol ---------------------------------------------------------- */

static void test_continuation(void **state)
{
    struct imap_parser *p = imap_parser_new(NULL, 0);
    struct imap_parse_result res;
    const char *in = "r1 APPEND Nope {5}\r\nr2 NOOP\r\n";
    size_t len = strlen(in);
    struct run_opts reject = {NULL, 0, 3};

    (void) state;
    assert_int_equal(imap_parser_parse(p, (const uint8_t *) in, len, &res),
                     IMAP_PARSE_NEED_CONTINUATION);
    assert_int_equal(res.consumed, 20);
    assert_string_equal(res.tag, "r1");
    assert_string_equal(res.name, "APPEND");
    assert_int_equal(res.literal_size, 5);
    /* Undecided: the same answer again, nothing consumed. */
    assert_int_equal(imap_parser_parse(p, (const uint8_t *) in + 20, len - 20, &res),
                     IMAP_PARSE_NEED_CONTINUATION);
    assert_int_equal(res.consumed, 0);
    assert_int_equal(res.literal_size, 5);
    /* "r1 NO [TRYCREATE]": the client drops the literal; the next line is a command. */
    imap_parser_reject_literal(p);
    assert_true(imap_parser_idle(p));
    assert_int_equal(imap_parser_parse(p, (const uint8_t *) in + 20, len - 20, &res),
                     IMAP_PARSE_OK);
    assert_string_equal(res.cmd->name, "NOOP");
    imap_cmd_free(res.cmd);
    /* accept/reject outside a continuation do nothing. */
    imap_parser_accept_literal(p);
    imap_parser_reject_literal(p);
    assert_true(imap_parser_idle(p));
    imap_parser_free(p);

    check_opts(S("r1 APPEND Nope {5}\r\nr2 NOOP\r\nr3 LOGIN {2}\r\nab \"x\"\r\n"), &reject,
               "CONT r1 APPEND 5\nREJECTED\nOK r2 NOOP\nCONT r3 LOGIN 2\nOK r3 LOGIN {2}ab "
               "\"x\"\n");
}

/* ---- Limits and attacks ----------------------------------------------------------------- */

static void test_literal_limits(void **state)
{
    struct imap_parser_limits lim;
    struct run_opts small = {&lim, 0, UINT64_MAX};
    struct run_opts small_plus = {&lim, IMAP_PARSER_FLAG_LITERAL_PLUS, UINT64_MAX};

    (void) state;
    imap_parser_limits_default(&lim);
    lim.literal_max = 10;
    lim.append_literal_max = 100;
    /* Synchronizing: TOOBIG, and the client sends neither the literal nor the line. */
    check_opts(S("a1 LOGIN {11}\r\na2 NOOP\r\n"), &small,
               "TOOBIG a1 LOGIN 11 [TOOBIG] Literal too big\nOK a2 NOOP\n");
    check_opts(S("a1 LOGIN {10}\r\n0123456789 x\r\na2 NOOP\r\n"), &small,
               "CONT a1 LOGIN 10\nOK a1 LOGIN {10}0123456789 x\nOK a2 NOOP\n");
    /* APPEND has the message limit. */
    check_opts(S("a3 APPEND INBOX {100}\r\n"), &small, "CONT a3 APPEND 100\nINCOMPLETE\n");
    check_opts(S("a4 APPEND INBOX {101}\r\na5 NOOP\r\n"), &small,
               "TOOBIG a4 APPEND 101 [TOOBIG] Literal too big\nOK a5 NOOP\n");
    check_opts(S("a4 APPEND INBOX {99999999999999999999999999}\r\na5 NOOP\r\n"), &small,
               "TOOBIG a4 APPEND 18446744073709551615 [TOOBIG] Literal too big\nOK a5 NOOP\n");
    /* Non-synchronizing over the limit: its octets are coming, we close (FATAL). */
    check_opts(S("a6 LOGIN {11+}\r\n01234567890 x\r\na7 NOOP\r\n"), &small_plus,
               "FATAL [TOOBIG] Non-synchronizing literal too big\n");
    check_opts(S("a6 LOGIN {10+}\r\n0123456789 x\r\na7 NOOP\r\n"), &small_plus,
               "OK a6 LOGIN {10+}0123456789 x\nOK a7 NOOP\n");
    /* LITERAL-: 4096 is the most without LITERAL+. */
    check(S("a8 APPEND INBOX {4097+}\r\n"),
          "FATAL [TOOBIG] Non-synchronizing literal over 4096 octets (LITERAL-)\n");
    check_opts(S("a8 APPEND INBOX {4097+}\r\n"), &plus_opts, "INCOMPLETE\n");
    /* The arena cap covers all literals of a command (MULTIAPPEND). */
    imap_parser_limits_default(&lim);
    lim.append_literal_max = 60000;
    lim.mem_max = 100000;
    {
        static char in[130100];
        int n = snprintf(in, sizeof(in), "m1 APPEND INBOX {60000+}\r\n");

        memset(in + n, 'x', 60000);
        n += 60000;
        n += snprintf(in + n, sizeof(in) - (size_t) n, " {60000}\r\nm2 NOOP\r\n");
        check_opts(in, (size_t) n, &small_plus,
                   "TOOBIG m1 APPEND 60000 [TOOBIG] Literal too big\nOK m2 NOOP\n");
    }
}

static void test_unterminated_literal(void **state)
{
    (void) state;
    check(S("a1 LOGIN {5}\r\nab"), "CONT a1 LOGIN 5\nINCOMPLETE\n");
    check(S("a1 LOGIN {5+}\r\nab"), "INCOMPLETE\n");
    /* The count is authoritative: what follows the literal must be SP, ")" or CRLF. */
    check(S("a1 LOGIN {2+}\r\nabc d\r\na2 NOOP\r\n"),
          "BAD a1 LOGIN Missing space between arguments\nOK a2 NOOP\n");
    check(S("a1 LOGIN {2}\r\nab"), "CONT a1 LOGIN 2\nINCOMPLETE\n");
    /* Broken literal headers. */
    check(S("a1 LOGIN {}\r\na2 NOOP\r\n"), "BAD a1 LOGIN Invalid literal size\nOK a2 NOOP\n");
    check(S("a1 LOGIN {5-}\r\na2 NOOP\r\n"), "BAD a1 LOGIN Invalid literal size\nOK a2 NOOP\n");
    check(S("a1 LOGIN {5+ }\r\na2 NOOP\r\n"), "BAD a1 LOGIN Invalid literal size\nOK a2 NOOP\n");
    check(S("a1 LOGIN {5} x\r\na2 NOOP\r\n"),
          "BAD a1 LOGIN Missing line end after literal size\nOK a2 NOOP\n");
    check(S("a1 LOGIN {5}\rx\r\na2 NOOP\r\n"),
          "BAD a1 LOGIN Missing line end after literal size\nOK a2 NOOP\n");
    check(S("a1 LOGIN x{5}\r\na2 NOOP\r\n"), "BAD a1 LOGIN Invalid character in atom\nOK a2 "
                                             "NOOP\n");
}

static void test_long_line(void **state)
{
    const size_t big = 1024 * 1024;
    char *in = malloc(big + 64);
    size_t n;

    (void) state;
    assert_non_null(in);
    /* 1 MiB of arguments: BAD at 64 KiB, the rest streamed away. */
    n = (size_t) sprintf(in, "a1 NOOP ");
    memset(in + n, 'x', big);
    n += big;
    n += (size_t) sprintf(in + n, "\r\na2 NOOP\r\n");
    check(in, n, "BAD a1 NOOP Command line too long\nOK a2 NOOP\n");
    /* 1 MiB of quoted string, and of list. */
    in[8] = '"';
    check(in, n, "BAD a1 NOOP Command line too long\nOK a2 NOOP\n");
    memset(in + 8, '(', 40);
    check(in, n, "BAD a1 NOOP Too deeply nested\nOK a2 NOOP\n");
    /* 1 MiB without a space: the tag is too long. */
    memset(in, 'y', big);
    n = big + (size_t) sprintf(in + big, "\r\na2 NOOP\r\n");
    check(in, n, "BAD * Tag too long\nOK a2 NOOP\n");
    /* Exactly at the limit is fine, one more byte is not (CRLF counts). */
    n = (size_t) sprintf(in, "a3 NOOP ");
    memset(in + n, 'z', IMAP_PARSER_LINE_MAX - n - 2);
    n = IMAP_PARSER_LINE_MAX - 2;
    n += (size_t) sprintf(in + n, "\r\n");
    {
        struct imap_parser *p = imap_parser_new(NULL, 0);
        struct imap_parse_result res;

        assert_int_equal(imap_parser_parse(p, (const uint8_t *) in, n, &res), IMAP_PARSE_OK);
        assert_int_equal(res.consumed, IMAP_PARSER_LINE_MAX);
        assert_int_equal(res.cmd->args[0].len, IMAP_PARSER_LINE_MAX - 10);
        imap_cmd_free(res.cmd);
        in[8] = 'w';
        memmove(in + 9, in + 8, n - 8);
        assert_int_equal(imap_parser_parse(p, (const uint8_t *) in, n + 1, &res), IMAP_PARSE_BAD);
        assert_string_equal(res.msg, "Command line too long");
        assert_int_equal(res.consumed, n + 1);
        assert_false(res.skipping);
        imap_parser_free(p);
    }
    free(in);
}

static void test_nesting(void **state)
{
    char in[2100 + 64];
    size_t n;
    struct imap_parser_limits lim;
    struct run_opts o = {&lim, 0, UINT64_MAX};

    (void) state;
    n = (size_t) sprintf(in, "a1 FETCH 1 ");
    memset(in + n, '(', 1000);
    memset(in + n + 1000, ')', 1000);
    n += 2000;
    n += (size_t) sprintf(in + n, "\r\na2 NOOP\r\n");
    check(in, n, "BAD a1 FETCH Too deeply nested\nOK a2 NOOP\n");
    /* 32 levels are fine; 33 are not ("[" counts). */
    n = (size_t) sprintf(in, "a1 SEARCH ");
    memset(in + n, '(', 32);
    memset(in + n + 32, ')', 32);
    n += 64;
    n += (size_t) sprintf(in + n, "\r\n");
    {
        char expect[128];

        memcpy(expect, "OK a1 SEARCH ", 13);
        memset(expect + 13, '(', 32);
        memset(expect + 45, ')', 32);
        strcpy(expect + 77, "\n");
        check(in, n, expect);
    }
    n = (size_t) sprintf(in, "a1 FETCH 1 ");
    memset(in + n, '(', 32);
    n += 32;
    n += (size_t) sprintf(in + n, "BODY[]\r\na2 NOOP\r\n");
    check(in, n, "BAD a1 FETCH Too deeply nested\nOK a2 NOOP\n");
    /* Unbalanced. */
    check(S("a1 FETCH 1 (FLAGS\r\na2 NOOP\r\n"), "BAD a1 FETCH Missing ')'\nOK a2 NOOP\n");
    check(S("a1 FETCH 1 FLAGS)\r\na2 NOOP\r\n"), "BAD a1 FETCH Unexpected ')'\nOK a2 NOOP\n");
    check(S("a1 FETCH 1 (FLAGS)(UID)\r\na2 NOOP\r\n"),
          "BAD a1 FETCH Missing space between arguments\nOK a2 NOOP\n");
    /* Argument count. */
    imap_parser_limits_default(&lim);
    lim.args_max = 16;
    check_opts(S("a1 X 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\r\n"), &o,
               "OK a1 X 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n");
    check_opts(S("a1 X 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 (16)\r\na2 NOOP\r\n"), &o,
               "BAD a1 X Too many arguments\nOK a2 NOOP\n");
    n = (size_t) sprintf(in, "a1 X ");
    memset(in + n, '(', 17);
    memset(in + n + 17, ')', 17);
    n += 34;
    n += (size_t) sprintf(in + n, "\r\na2 NOOP\r\n");
    check_opts(in, n, &o, "BAD a1 X Too many arguments\nOK a2 NOOP\n");
}

static void test_sections(void **state)
{
    (void) state;
    check(S("a1 FETCH 1 BODY[HEADER\r\na2 NOOP\r\n"), "BAD a1 FETCH Missing ']'\nOK a2 NOOP\n");
    check(S("a1 FETCH 1 BODY[HEADER.FIELDS (A]\r\na2 NOOP\r\n"),
          "BAD a1 FETCH Missing ')'\nOK a2 NOOP\n");
    check(S("a1 FETCH 1 BODY[HEADER.FIELDS (A)\r\na2 NOOP\r\n"),
          "BAD a1 FETCH Missing ']'\nOK a2 NOOP\n");
    check(S("a1 FETCH 1 BODY[a[b]]\r\na2 NOOP\r\n"), "BAD a1 FETCH Unexpected '['\nOK a2 NOOP\n");
    check(S("a1 FETCH 1 BODY[](FLAGS)\r\na2 NOOP\r\n"),
          "BAD a1 FETCH Invalid character after ']'\nOK a2 NOOP\n");
    check(S("a1 FETCH 1 BODY[]x[\r\na2 NOOP\r\n"), "BAD a1 FETCH Unexpected '['\nOK a2 NOOP\n");
    check(S("a1 FETCH 1 BODY[1 ~{1+}\r\nx]\r\na2 NOOP\r\n"),
          "BAD a1 FETCH literal8 inside []\nOK a2 NOOP\n");
    /* Partials: "<n.m>" with m > 0, else the item is kept with SUFFIX for the handler. */
    check(S("a1 FETCH 1 (BODY[]<0.1> BODY[]<0> BODY[]<1.0> BODY[]<x.1> BODY[]<9223372036854775807."
            "9223372036854775807> BODY[]<9223372036854775808.1>)\r\n"),
          "OK a1 FETCH 1 (BODY[]<0.1> BODY[]~raw=BODY[]<0> BODY[]~raw=BODY[]<1.0> "
          "BODY[]~raw=BODY[]<x.1> BODY[]<9223372036854775807.9223372036854775807> "
          "BODY[]~raw=BODY[]<9223372036854775808.1>)\n");
    check(S("a1 FETCH 1 BODY[a)\r\na2 NOOP\r\n"), "BAD a1 FETCH Missing ']'\nOK a2 NOOP\n");
    check(S("a1 FETCH 1 BODY[]\0\r\na2 NOOP\r\n"),
          "BAD a1 FETCH NUL octet in command\nOK a2 NOOP\n");
    check(S("a1 FETCH 1 BODY[ 1  ]\r\n"), "OK a1 FETCH 1 BODY[1]\n");
    check(S("a1 FETCH 1 (BODY[])\r\n"), "OK a1 FETCH 1 (BODY[])\n");
}

static void test_nul(void **state)
{
    (void) state;
    check(S("a\0 NOOP\r\na2 NOOP\r\n"), "BAD * NUL octet in command\nOK a2 NOOP\n");
    check(S("a1 NO\0OP\r\na2 NOOP\r\n"), "BAD a1 NUL octet in command\nOK a2 NOOP\n");
    check(S("a1 LOGIN a\0b c\r\na2 NOOP\r\n"), "BAD a1 LOGIN NUL octet in command\nOK a2 NOOP\n");
    check(S("a1 LOGIN \0 c\r\na2 NOOP\r\n"), "BAD a1 LOGIN NUL octet in command\nOK a2 NOOP\n");
    check(S("a1 LOGIN \"a\0b\" c\r\na2 NOOP\r\n"),
          "BAD a1 LOGIN NUL octet in quoted string\nOK a2 NOOP\n");
    /* In a literal the rest of it is skipped too, then the rest of the line. */
    check(S("a1 LOGIN {5}\r\na\0bcd e\r\na2 NOOP\r\n"),
          "CONT a1 LOGIN 5\nBAD a1 LOGIN NUL octet in literal (use literal8)\nOK a2 NOOP\n");
    check(S("a1 LOGIN {5+}\r\n\0\r\nbc e {3+}\r\n\r\n\n\r\na2 NOOP\r\n"),
          "BAD a1 LOGIN NUL octet in literal (use literal8)\nOK a2 NOOP\n");
    check(S("a1 APPEND x ~{3}\r\n\0\0\0\r\n"), "CONT a1 APPEND 3\nOK a1 APPEND x "
                                               "~{3}\\x00\\x00\\x00\n");
}

static void test_bad_tags(void **state)
{
    char in[200];

    (void) state;
    check(S("+ NOOP\r\na2 NOOP\r\n"), "BAD * Invalid character in tag\nOK a2 NOOP\n");
    check(S("a+1 NOOP\r\na2 NOOP\r\n"), "BAD * Invalid character in tag\nOK a2 NOOP\n");
    check(S("a%1 NOOP\r\na(1 NOOP\r\n\"a\" NOOP\r\na{1 NOOP\r\na\\1 NOOP\r\na2 NOOP\r\n"),
          "BAD * Invalid character in tag\nBAD * Invalid character in tag\nBAD * Invalid "
          "character in tag\nBAD * Invalid character in tag\nBAD * Invalid character in "
          "tag\nOK a2 NOOP\n");
    check(S("\xc3\xa9"
            "1 NOOP\r\n\ta NOOP\r\na2 NOOP\r\n"),
          "BAD * Invalid character in tag\nBAD * Invalid character in tag\nOK a2 NOOP\n");
    check(S(" NOOP\r\n\r\n\na1\r\na2  NOOP\r\na3 \r\na4 NOOP\r\n"),
          "BAD * Missing tag\nBAD * Empty command line\nBAD * Empty command line\nBAD a1 "
          "Missing command name\nBAD a2 Missing command name\nBAD a3 Missing command "
          "name\nOK a4 NOOP\n");
    memset(in, 't', 64);
    strcpy(in + 64, " NOOP\r\n");
    check(in, strlen(in),
          "OK tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt NOOP\n");
    memset(in, 't', 65);
    strcpy(in + 65, " NOOP\r\na2 NOOP\r\n");
    check(in, strlen(in), "BAD * Tag too long\nOK a2 NOOP\n");
    /* Command names. */
    check(S("a1 FE(TCH\r\na2 UID\r\na3 UID UID FETCH\r\na4 UID  FETCH\r\na5 N\xc3\xa9\r\n"
            "a6 NOOP\r\n"),
          "BAD a1 Invalid character in command name\nBAD a2 Missing command after UID\nBAD a3 "
          "UID Invalid command after UID\nBAD a4 UID Missing command after UID\nBAD a5 "
          "Invalid character in command name\nOK a6 NOOP\n");
    check(S("a1 ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456\r\na2 NOOP\r\n"),
          "BAD a1 Command name too long\nOK a2 NOOP\n");
}

static void test_bad_lines(void **state)
{
    (void) state;
    check(S("a1 NOOP\rx\r\na2 NOOP\r\n"), "BAD a1 NOOP CR without LF\nOK a2 NOOP\n");
    check(S("a1 LOGIN \"abc\r\na2 NOOP\r\n"),
          "BAD a1 LOGIN Unterminated quoted string\nOK a2 NOOP\n");
    check(S("a1 LOGIN \"a\\bc\"\r\na2 NOOP\r\n"),
          "BAD a1 LOGIN Invalid escape in quoted string\nOK a2 NOOP\n");
    check(S("a1 LOGIN caf\xc3\xa9 x\r\na2 NOOP\r\n"),
          "BAD a1 LOGIN Invalid character in atom\nOK a2 NOOP\n");
    check(S("a1 LOGIN \xc3\xa9 x\r\na2 NOOP\r\n"),
          "BAD a1 LOGIN Invalid character in command\nOK a2 NOOP\n");
    check(S("a1 LOGIN a\x01 x\r\na2 NOOP\r\n"),
          "BAD a1 LOGIN Invalid character in atom\nOK a2 NOOP\n");
    check(S("a1 LOGIN \"a\"\"b\"\r\na2 NOOP\r\n"),
          "BAD a1 LOGIN Missing space between arguments\nOK a2 NOOP\n");
    /* A bad line that announces a non-synchronizing literal: its octets are skipped too
     * (they could hold "a2 NOOP" that the client did not mean as a command). */
    check(S("a1 LOGIN \x01 {9+}\r\na2 NOOP\r\n\r\na3 NOOP\r\n"),
          "BAD a1 LOGIN Invalid character in command\nOK a3 NOOP\n");
    check(S("a1 LOGIN \x01 {3+}\r\nabc {2+}\nxy\r\na3 NOOP\r\n"),
          "BAD a1 LOGIN Invalid character in command\nOK a3 NOOP\n");
    /* ...but a synchronizing one is never sent: we do not say "+". */
    check(S("a1 LOGIN \x01 {9}\r\na2 NOOP\r\n"),
          "BAD a1 LOGIN Invalid character in command\nOK a2 NOOP\n");
    check(S("a1 LOGIN \x01 {9+}x\r\na2 NOOP\r\n"),
          "BAD a1 LOGIN Invalid character in command\nOK a2 NOOP\n");
    /* ...and one over the limit is fatal there too. */
    check(S("a1 LOGIN \x01 {70000+}\r\n"), "BAD a1 LOGIN Invalid character in command\n"
                                           "FATAL [TOOBIG] Non-synchronizing literal too big\n");
}

/* A sequence set that is not one parses as an atom; the handler refuses it with BAD and
 * the next command is unaffected. One that breaks the command syntax is BAD here. */
static void test_bad_seqsets(void **state)
{
    struct imap_parser *p = imap_parser_new(NULL, 0);
    struct imap_parse_result res;
    struct imap_seqset set;
    const char *in = "a1 FETCH 1:0 FLAGS\r\na2 FETCH 1:*,,3 FLAGS\r\na3 FETCH 2:4 FLAGS\r\n";
    size_t off = 0, len = strlen(in);
    const char *why;

    (void) state;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(imap_parser_parse(p, (const uint8_t *) in + off, len - off, &res),
                         IMAP_PARSE_OK);
        off += res.consumed;
        assert_int_equal(
            imap_seqset_parse(res.cmd->args[0].str, res.cmd->args[0].len, 0, &set, &why),
            i < 2 ? IMAP_SEQSET_ESYNTAX : 0);
        if (i == 2)
            assert_true(imap_seqset_contains(&set, 3, 10));
        imap_seqset_free(&set);
        imap_cmd_free(res.cmd);
    }
    assert_int_equal(off, len);
    imap_parser_free(p);
    check(S("a1 FETCH 1:{ FLAGS\r\na2 FETCH 1,(2 FLAGS\r\na3 FETCH \"1\"2 FLAGS\r\na4 NOOP\r\n"),
          "BAD a1 FETCH Invalid character in atom\nBAD a2 FETCH Invalid character in atom\n"
          "BAD a3 FETCH Missing space between arguments\nOK a4 NOOP\n");
}

static void test_memory_cap(void **state)
{
    struct imap_parser_limits lim;
    struct run_opts o = {&lim, 0, UINT64_MAX};
    static char in[70000];
    size_t n = 0;

    (void) state;
    imap_parser_limits_default(&lim);
    lim.mem_max = 64 * 1024;
    lim.append_literal_max = 1000;
    /* 6000 empty lists cost 6000 nodes and 6000 terminators: over 64 KiB of arena. */
    n = (size_t) sprintf(in, "a1 X");
    for (int i = 0; i < 6000; i++)
        n += (size_t) sprintf(in + n, " ()");
    n += (size_t) sprintf(in + n, "\r\na2 NOOP\r\n");
    check_opts(in, n, &o, "BAD a1 X Command too large\nOK a2 NOOP\n");
}

/* The bytes of a [...] item are kept as received: they are capped by mem_max as well. Here
 * the literal fits in the arena (16 KiB chunk for "1" + 49000), but the name before "[" and
 * the literal together (66000) do not fit in the raw copy. */
static void test_section_cap(void **state)
{
    struct imap_parser_limits lim;
    struct run_opts o = {&lim, IMAP_PARSER_FLAG_LITERAL_PLUS, UINT64_MAX};
    static char in[70000];
    size_t n, name = 17000, lit = 49000;

    (void) state;
    imap_parser_limits_default(&lim);
    lim.mem_max = 64 * 1024;
    lim.literal_max = 64 * 1024;
    n = (size_t) sprintf(in, "a1 FETCH 1 ");
    memset(in + n, 'B', name);
    n += name;
    n += (size_t) sprintf(in + n, "[{%zu+}\r\n", lit);
    memset(in + n, 'h', lit);
    n += lit;
    n += (size_t) sprintf(in + n, "]\r\na2 NOOP\r\n");
    check_opts(in, n, &o, "BAD a1 FETCH Command too large\nOK a2 NOOP\n");
    /* With a literal that does not fit in the arena it is the literal that is refused. */
    n = (size_t) sprintf(in, "a1 FETCH 1 B[{50000+}\r\n");
    check_opts(in, n, &o, "FATAL [TOOBIG] Non-synchronizing literal too big\n");
}

static void test_reset_and_fatal(void **state)
{
    struct imap_parser *p = imap_parser_new(NULL, 0);
    struct imap_parse_result res;

    (void) state;
    /* STARTTLS: a half-read command is dropped with the plaintext. */
    assert_int_equal(imap_parser_parse(p, (const uint8_t *) S("a1 LOGIN al"), &res),
                     IMAP_PARSE_NEED_MORE);
    assert_false(imap_parser_idle(p));
    imap_parser_reset(p);
    assert_true(imap_parser_idle(p));
    assert_int_equal(imap_parser_parse(p, (const uint8_t *) S("a2 NOOP\r\n"), &res), IMAP_PARSE_OK);
    imap_cmd_free(res.cmd);
    /* Fatal stays fatal, even after a reset. */
    assert_int_equal(imap_parser_parse(p, (const uint8_t *) S("a3 LOGIN {5000+}\r\n"), &res),
                     IMAP_PARSE_FATAL);
    assert_int_equal(res.literal_size, 5000);
    imap_parser_reset(p);
    assert_int_equal(imap_parser_parse(p, (const uint8_t *) S("a4 NOOP\r\n"), &res),
                     IMAP_PARSE_FATAL);
    assert_int_equal(res.consumed, 0);
    assert_non_null(res.msg);
    imap_parser_free(p);
    imap_parser_free(NULL);
    imap_cmd_free(NULL);
}

static void test_helpers(void **state)
{
    struct imap_parser *p = imap_parser_new(NULL, 0);
    struct imap_cmd *c;
    size_t len = 0;

    (void) state;
    c = trickle(p, S("h1 X atom \"q\" ~{2}\r\na\0 {2}\r\nab NIL (l) BODY[] BODY[{1}\r\nx]\r\n"));
    assert_int_equal(c->count, 8);
    assert_string_equal(imap_arg_astring(&c->args[0], &len), "atom");
    assert_null(imap_arg_string(&c->args[0], &len));
    assert_string_equal(imap_arg_astring(&c->args[1], &len), "q");
    assert_string_equal(imap_arg_string(&c->args[1], &len), "q");
    assert_null(imap_arg_astring(&c->args[2], &len)); /* NUL inside */
    assert_string_equal(imap_arg_string(&c->args[3], &len), "ab");
    assert_int_equal(len, 2);
    assert_true(imap_arg_atom_equals(&c->args[4], "nil"));
    assert_null(imap_arg_astring(&c->args[5], &len));
    assert_false(imap_arg_atom_equals(&c->args[5], "l"));
    assert_true(imap_arg_atom_equals(&c->args[6], "body"));
    assert_false(imap_arg_atom_equals(&c->args[6], "body[]"));
    assert_false(imap_arg_atom_equals(&c->args[0], "ato"));
    assert_false(imap_arg_atom_equals(&c->args[0], "atoms"));
    assert_null(imap_arg_astring(&c->args[7], &len)); /* a literal inside [] */
    assert_int_equal(c->args[8].type, IMAP_ARG_EOL);
    imap_cmd_free(c);
    imap_parser_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_login),
        cmocka_unit_test(test_select_list_status),
        cmocka_unit_test(test_fetch),
        cmocka_unit_test(test_store_copy_expunge),
        cmocka_unit_test(test_search),
        cmocka_unit_test(test_append),
        cmocka_unit_test(test_misc_commands),
        cmocka_unit_test(test_pipeline),
        cmocka_unit_test(test_continuation),
        cmocka_unit_test(test_literal_limits),
        cmocka_unit_test(test_unterminated_literal),
        cmocka_unit_test(test_long_line),
        cmocka_unit_test(test_nesting),
        cmocka_unit_test(test_sections),
        cmocka_unit_test(test_nul),
        cmocka_unit_test(test_bad_tags),
        cmocka_unit_test(test_bad_lines),
        cmocka_unit_test(test_bad_seqsets),
        cmocka_unit_test(test_memory_cap),
        cmocka_unit_test(test_section_cap),
        cmocka_unit_test(test_reset_and_fatal),
        cmocka_unit_test(test_helpers),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
