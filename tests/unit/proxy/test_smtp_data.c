/*
 * tests/unit/proxy/test_smtp_data.c
 * The DATA reader (proxy/smtp/smtp_data.c): exact dot-unstuffing, the end of data only at
 * CRLF "." CRLF, every SMTP smuggling variant of the 2023 research (bare LF / bare CR
 * around the dot) kept as content and flagged, pipelined octets left unconsumed, the
 * counters, and the same results whether the input comes at once, byte by byte or in
 * random pieces.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_data.h"

#define OUT_MAX (1 << 20)

struct out {
    uint8_t buf[OUT_MAX];
    size_t len;
    size_t calls;
    size_t fail_after; /* refuse once LEN would exceed this (0: never) */
};

static int sink(void *ctx, const uint8_t *buf, size_t len)
{
    struct out *o = ctx;

    assert_true(len > 0);
    if (o->fail_after != 0 && o->len + len > o->fail_after)
        return -1;
    assert_true(o->len + len <= OUT_MAX);
    memcpy(o->buf + o->len, buf, len);
    o->len += len;
    o->calls++;
    return 0;
}

/* The outcome of one DATA phase. */
struct run {
    struct smtp_data d;
    struct out out;
    int rc;          /* last return of smtp_data_feed() */
    size_t consumed; /* input octets used in total */
};

/* feed(): feeds IN in pieces whose sizes cycle through STEPS (NULL: all at once); stops at
 * the end of data like a session would. */
static void feed(struct run *r, const void *in, size_t n, const size_t *steps, size_t nsteps)
{
    const uint8_t *p = in;
    size_t off = 0, k = 0, used;

    memset(r, 0, sizeof *r);
    smtp_data_init(&r->d);
    r->rc = 0;
    while (off < n || (n == 0 && k == 0)) {
        size_t step = steps != NULL ? steps[k % nsteps] : n - off;

        k++;
        if (step > n - off)
            step = n - off;
        used = 12345;
        r->rc = smtp_data_feed(&r->d, p + off, step, &used, sink, &r->out);
        assert_true(used <= step);
        r->consumed = off + used;
        if (r->rc == 1)
            return;
        assert_int_equal(r->rc, 0);
        assert_int_equal(used, step);
        off += step;
        if (n == 0)
            break;
    }
}

static void same_run(const struct run *a, const struct run *b)
{
    assert_int_equal(a->rc, b->rc);
    assert_int_equal(a->consumed, b->consumed);
    assert_int_equal(a->out.len, b->out.len);
    assert_memory_equal(a->out.buf, b->out.buf, a->out.len);
    assert_int_equal(a->d.done, b->d.done);
    assert_int_equal(a->d.bare_lf, b->d.bare_lf);
    assert_int_equal(a->d.bare_cr, b->d.bare_cr);
    assert_int_equal(a->d.eightbit, b->d.eightbit);
    assert_int_equal(a->d.nul, b->d.nul);
    assert_int_equal(a->d.size, b->d.size);
    assert_int_equal(a->d.lines, b->d.lines);
    assert_int_equal(a->d.longest, b->d.longest);
    assert_int_equal(a->d.size, a->out.len);
}

static struct run r1, r2; /* large: static */

/* check(): IN fed at once must end (or not, when CONSUMED is (size_t)-1) after CONSUMED
 * octets, give OUT, and the same when fed byte by byte and in awkward pieces. */
static void check_bytes(const char *in, size_t n, const char *want, size_t wantlen, size_t consumed,
                        bool bad)
{
    static const size_t one[] = {1};
    static const size_t odd[] = {2, 3, 1, 5, 7, 4};

    feed(&r1, in, n, NULL, 0);
    if (consumed == (size_t) -1) {
        assert_int_equal(r1.rc, 0);
        assert_false(r1.d.done);
    } else {
        assert_int_equal(r1.rc, 1);
        assert_true(r1.d.done);
        assert_int_equal(r1.consumed, consumed);
    }
    assert_int_equal(r1.out.len, wantlen);
    assert_memory_equal(r1.out.buf, want, wantlen);
    assert_int_equal(smtp_data_bad(&r1.d), bad);
    assert_int_equal(r1.d.size, wantlen);

    feed(&r2, in, n, one, 1);
    same_run(&r1, &r2);
    feed(&r2, in, n, odd, sizeof odd / sizeof odd[0]);
    same_run(&r1, &r2);
}

#define CHECK(in, want, consumed, bad)                                                             \
    check_bytes(in, sizeof(in) - 1, want, sizeof(want) - 1, consumed, bad)
#define NOT_ENDED ((size_t) -1)

/* ---- End of data and unstuffing ---------------------------------------------------------- */

static void test_empty_message(void **state)
{
    (void) state;
    CHECK(".\r\n", "", 3, false);
    assert_int_equal(r1.d.lines, 0);
    assert_int_equal(r1.d.longest, 0);
    assert_int_equal(r1.out.calls, 0);
}

static void test_simple_message(void **state)
{
    (void) state;
    CHECK("Subject: hi\r\n\r\nbody\r\n.\r\n", "Subject: hi\r\n\r\nbody\r\n", 24, false);
    assert_int_equal(r1.d.lines, 3);
    assert_int_equal(r1.d.longest, 11);
    assert_false(r1.d.eightbit);
    assert_false(r1.d.nul);
    assert_int_equal(r1.out.calls, 1); /* one sink call for the whole feed */
}

static void test_unstuffing(void **state)
{
    (void) state;
    /* Only the first dot of a line goes; dots elsewhere stay. */
    CHECK("..\r\n...\r\n.a.b.\r\n a.\r\n..\r\n.\r\n", ".\r\n..\r\na.b.\r\n a.\r\n.\r\n", 28, false);
    assert_int_equal(r1.d.lines, 5);
    assert_int_equal(r1.d.longest, 4); /* "a.b." ; the removed dot does not count */
    /* A line that is "." followed by more than CRLF is not the end. */
    CHECK(".x\r\n.\r\n", "x\r\n", 7, false);
    CHECK(". \r\n.\r\n", " \r\n", 7, false);
    /* "..\r\n" is a line holding ".", not the end. */
    CHECK("..\r\n.\r\n", ".\r\n", 7, false);
    /* The first line of the data is at the start of a line. */
    CHECK("..x\r\n.\r\n", ".x\r\n", 8, false);
}

static void test_end_exact(void **state)
{
    (void) state;
    CHECK("a\r\n.\r\n", "a\r\n", 6, false);
    CHECK("a\r\n\r\n.\r\n", "a\r\n\r\n", 8, false);
    /* Not yet ended at any shorter prefix. */
    CHECK("a\r\n.\r", "a\r\n", NOT_ENDED, false);
    CHECK("a\r\n.", "a\r\n", NOT_ENDED, false);
    CHECK("a\r\n", "a\r\n", NOT_ENDED, false);
    CHECK("a\r", "a\r", NOT_ENDED, false); /* the CR is delivered; it may still be CRLF */
    CHECK("", "", NOT_ENDED, false);
}

static void test_pipelined_rest(void **state)
{
    (void) state;
    static const char in[] = "hello\r\n.\r\nQUIT\r\n";

    CHECK("hello\r\n.\r\nQUIT\r\n", "hello\r\n", 10, false);
    assert_memory_equal(in + r1.consumed, "QUIT\r\n", 6);
    /* A second feed after the end uses nothing. */
    size_t used = 99;
    assert_int_equal(smtp_data_feed(&r1.d, (const uint8_t *) "x", 1, &used, sink, &r1.out), 1);
    assert_int_equal(used, 0);
    /* A "." line in the pipelined rest is not ours. */
    CHECK("x\r\n.\r\n.\r\n", "x\r\n", 6, false);
    CHECK(".\r\n.\r\n", "", 3, false);
}

/* ---- SMTP smuggling ------------------------------------------------------------------------ */

/* Each pair is the fake terminator an attacker hides in the data, followed by a smuggled
 * transaction; the real end comes after. None may end the data early. */
static void test_smuggling_variants(void **state)
{
    (void) state;
    static const char *const fake[] = {
        "\n.\n",     "\n.\r\n",     "\r.\r\n",   "\r\n.\r",     "\r\n.\n",
        "\r.\r",     "\r.\n",       "\n.\r",     "\r\n.\r\r\n", "\n\n.\n\n",
        "\r\r.\r\r", "\r\n.\n\r\n", "\n.\r\r\n", "\r\n\n.\r\n", "\r\n.\r\r",
    };
    static const char smuggled[] = "MAIL FROM:<admin@victim.example>\r\n"
                                   "RCPT TO:<x@victim.example>\r\nDATA\r\nSpoofed\r\n";
    static const char tail[] = "\r\n.\r\nQUIT\r\n";
    char in[512];

    for (size_t i = 0; i < sizeof fake / sizeof fake[0]; i++) {
        size_t n = 0, end;

        n += (size_t) sprintf(in + n, "Subject: x\r\n\r\nbody");
        memcpy(in + n, fake[i], strlen(fake[i]));
        n += strlen(fake[i]);
        memcpy(in + n, smuggled, sizeof smuggled - 1);
        n += sizeof smuggled - 1;
        memcpy(in + n, tail, sizeof tail - 1);
        n += sizeof tail - 1;
        end = n - strlen("QUIT\r\n");

        feed(&r1, in, n, NULL, 0);
        assert_int_equal(r1.rc, 1);
        assert_int_equal(r1.consumed, end); /* only the real CRLF.CRLF ended it */
        assert_true(smtp_data_bad(&r1.d));
        /* The smuggled commands are content of this message (which will be refused). */
        assert_non_null(memmem(r1.out.buf, r1.out.len, "MAIL FROM:<admin", 16));
        static const size_t one[] = {1}, odd[] = {3, 1, 4, 1, 5, 9, 2, 6};
        feed(&r2, in, n, one, 1);
        same_run(&r1, &r2);
        feed(&r2, in, n, odd, 8);
        same_run(&r1, &r2);
    }
}

static void test_bare_lf(void **state)
{
    (void) state;
    CHECK("a\nb\r\n.\r\n", "a\nb\r\n", 8, true);
    assert_true(r1.d.bare_lf);
    assert_false(r1.d.bare_cr);
    assert_int_equal(r1.d.lines, 1);
    assert_int_equal(r1.d.longest, 3); /* "a\nb" */
    /* "\n.\n" is content; the dot after a bare LF is not a line start: it stays. */
    CHECK("a\n.\nb\r\n.\r\n", "a\n.\nb\r\n", 10, true);
    CHECK("\n.\r\n.\r\n", "\n.\r\n", 7, true);
    /* CRLF "." LF: the dot starts a line and goes; the LF is bare. */
    CHECK("a\r\n.\nx\r\n.\r\n", "a\r\n\nx\r\n", 11, true);
    assert_true(r1.d.bare_lf);
    /* A bare LF as the very first octet. */
    CHECK("\n.\r\n", "\n.\r\n", NOT_ENDED, true);
    /* LF LF . CR LF */
    CHECK("\n\n.\r\n\r\n.\r\n", "\n\n.\r\n\r\n", 10, true);
}

static void test_bare_cr(void **state)
{
    (void) state;
    CHECK("a\rb\r\n.\r\n", "a\rb\r\n", 8, true);
    assert_true(r1.d.bare_cr);
    assert_false(r1.d.bare_lf);
    /* CR . CR LF: content. */
    CHECK("a\r.\r\n.\r\n", "a\r.\r\n", 8, true);
    /* CRLF . CR x: the dot goes, the CR stays and is bare. */
    CHECK("a\r\n.\rX\r\n.\r\n", "a\r\n\rX\r\n", 11, true);
    assert_true(r1.d.bare_cr);
    /* CRLF . CR CR LF */
    CHECK("a\r\n.\r\r\n.\r\n", "a\r\n\r\r\n", 10, true);
    /* CR CR LF: the first CR is bare. */
    CHECK("a\r\r\n.\r\n", "a\r\r\n", 7, true);
    /* CRLF . CR CRLF . CRLF */
    CHECK("\r\n.\r\r\n.\r\n", "\r\n\r\r\n", 9, true);
    /* A run of CRs stays linear and is all content. */
    CHECK("\r\r\r\r\r\r\r\n.\r\n", "\r\r\r\r\r\r\r\n", 11, true);
    assert_int_equal(r1.d.lines, 1);
    assert_int_equal(r1.d.longest, 6);
}

static void test_bare_then_good(void **state)
{
    (void) state;
    /* The flags stay set once seen; the message still ends at the real terminator. */
    CHECK("a\nb\r\nc\r\n.\r\nNOOP\r\n", "a\nb\r\nc\r\n", 11, true);
    assert_int_equal(r1.d.lines, 2);
}

/* ---- Counters ------------------------------------------------------------------------------ */

static void test_eightbit_nul(void **state)
{
    (void) state;
    CHECK("caf\xc3\xa9\r\n.\r\n", "caf\xc3\xa9\r\n", 10, false);
    assert_true(r1.d.eightbit);
    assert_false(r1.d.nul);
    CHECK("a\0b\r\n.\r\n", "a\0b\r\n", 8, false);
    assert_true(r1.d.nul);
    assert_false(r1.d.eightbit);
    /* 8-bit after the first 8 octets of a long line (word-at-a-time path). */
    CHECK("abcdefghijklmnopq\x80rstuvwxyz\r\n.\r\n", "abcdefghijklmnopq\x80rstuvwxyz\r\n", 32,
          false);
    assert_true(r1.d.eightbit);
    /* Octets after the end are not looked at. */
    CHECK("a\r\n.\r\n\xff\0", "a\r\n", 6, false);
    assert_false(r1.d.eightbit);
    assert_false(r1.d.nul);
}

static void test_long_lines(void **state)
{
    (void) state;
    static char in[5000], want[5000];
    size_t n = 0, w = 0;

    /* 998 octets is the RFC 5322 limit; the reader reports, the session judges. */
    memset(in, 'x', 998);
    n = 998;
    memcpy(in + n, "\r\n", 2);
    n += 2;
    in[n++] = '.'; /* a stuffed line of 1001 + dot */
    memset(in + n, '.', 1001);
    n += 1001;
    memcpy(in + n, "\r\nshort\r\n.\r\n", 12);
    n += 12;

    memset(want, 'x', 998);
    w = 998;
    memcpy(want + w, "\r\n", 2);
    w += 2;
    memset(want + w, '.', 1001);
    w += 1001;
    memcpy(want + w, "\r\nshort\r\n", 9);
    w += 9;

    check_bytes(in, n, want, w, n, false);
    assert_int_equal(r1.d.longest, 1001);
    assert_int_equal(r1.d.lines, 3);
}

static void test_big_message_few_calls(void **state)
{
    (void) state;
    static char in[600000];
    size_t n = 0;

    for (int i = 0; i < 10000; i++)
        n += (size_t) sprintf(in + n, "line %05d of a message of some length\r\n", i);
    memcpy(in + n, ".\r\n", 3);
    n += 3;
    feed(&r1, in, n, NULL, 0);
    assert_int_equal(r1.rc, 1);
    assert_int_equal(r1.consumed, n);
    assert_int_equal(r1.out.len, n - 3);
    assert_memory_equal(r1.out.buf, in, n - 3);
    assert_int_equal(r1.out.calls, 1);
    assert_int_equal(r1.d.lines, 10000);
    assert_int_equal(r1.d.longest, 38);
}

static void test_sink_failure(void **state)
{
    (void) state;
    static const char in[] = "0123456789\r\n..abc\r\nmore\r\n.\r\nRSET\r\n";
    struct run r;

    memset(&r, 0, sizeof r);
    smtp_data_init(&r.d);
    r.out.fail_after = 5;
    size_t used;
    /* The sink refuses the first call; the reader still finds the end. */
    assert_int_equal(smtp_data_feed(&r.d, (const uint8_t *) in, sizeof in - 1, &used, sink, &r.out),
                     1);
    assert_int_equal(used, sizeof in - 1 - 6);
    assert_true(r.d.sink_failed);
    assert_int_equal(r.out.len, 0);
    assert_int_equal(r.d.size, strlen("0123456789\r\n.abc\r\nmore\r\n"));
    assert_int_equal(r.d.lines, 3);

    /* Fails midway: no call after the failing one. */
    memset(&r, 0, sizeof r);
    smtp_data_init(&r.d);
    r.out.fail_after = 13;
    assert_int_equal(smtp_data_feed(&r.d, (const uint8_t *) in, sizeof in - 1, &used, sink, &r.out),
                     1);
    assert_true(r.d.sink_failed);
    assert_int_equal(r.out.len, 12); /* "0123456789\r\n", then ".abc..." was refused */
    assert_int_equal(r.out.calls, 1);
}

/* ---- Random pieces ------------------------------------------------------------------------- */

static void test_random_chunks(void **state)
{
    (void) state;
    static const char *const parts[] = {"\r\n", "\r", "\n",   ".",     "..",    "a",
                                        "bc",   "\0", "\xe9", "\r\n.", ".\r\n", "\r\n.\r\n"};
    static uint8_t in[4096];
    size_t steps[64];

    srand(5321);
    for (int iter = 0; iter < 3000; iter++) {
        size_t n = 0;
        int count = rand() % 200;

        for (int i = 0; i < count && n < sizeof in - 16; i++) {
            const char *s = parts[rand() % (int) (sizeof parts / sizeof parts[0])];
            size_t l = s[0] == '\0' ? 1 : strlen(s);

            memcpy(in + n, s, l);
            n += l;
        }
        for (size_t k = 0; k < 64; k++)
            steps[k] = 1 + (size_t) (rand() % 17);
        feed(&r1, in, n, NULL, 0);
        feed(&r2, in, n, steps, 1 + (size_t) (rand() % 64));
        same_run(&r1, &r2);
        assert_true(r1.out.len <= n);
        if (r1.rc == 1) {
            /* Ended exactly at CRLF "." CRLF (the first CRLF may be the virtual one). */
            assert_true(r1.consumed >= 3);
            assert_memory_equal(in + r1.consumed - 3, ".\r\n", 3);
            assert_true(r1.consumed == 3 || memcmp(in + r1.consumed - 5, "\r\n", 2) == 0);
        }
        static const size_t one[] = {1};
        feed(&r2, in, n, one, 1);
        same_run(&r1, &r2);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_message),  cmocka_unit_test(test_simple_message),
        cmocka_unit_test(test_unstuffing),     cmocka_unit_test(test_end_exact),
        cmocka_unit_test(test_pipelined_rest), cmocka_unit_test(test_smuggling_variants),
        cmocka_unit_test(test_bare_lf),        cmocka_unit_test(test_bare_cr),
        cmocka_unit_test(test_bare_then_good), cmocka_unit_test(test_eightbit_nul),
        cmocka_unit_test(test_long_lines),     cmocka_unit_test(test_big_message_few_calls),
        cmocka_unit_test(test_sink_failure),   cmocka_unit_test(test_random_chunks),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
