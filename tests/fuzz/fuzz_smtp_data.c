/*
 * tests/fuzz/fuzz_smtp_data.c
 * libFuzzer target for proxy/smtp/smtp_data.c. Input: byte 0 gives K = 1 + (byte % 16),
 * bytes 1..K are piece sizes (0 feeds nothing), the rest is the DATA stream. The stream is
 * fed at once and in those pieces (each copied to a buffer of its exact size, so that ASan
 * sees over-reads); both must agree on everything. Then: the output is never longer than
 * the input, the end is exactly CRLF "." CRLF, the counters match the output, a failing
 * sink changes nothing but delivery, and clean output dot-stuffed again reads back the same.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_data.h"
#include "fuzz_check.h"

struct out {
    uint8_t *buf;
    size_t len, cap;
    size_t fail_after; /* refuse a call that would pass this length; SIZE_MAX: never */
};

static int sink(void *ctx, const uint8_t *buf, size_t len)
{
    struct out *o = ctx;

    FUZZ_CHECK(len > 0);
    if (o->len + len > o->fail_after)
        return -1;
    FUZZ_CHECK(o->len + len <= o->cap);
    memcpy(o->buf + o->len, buf, len);
    o->len += len;
    return 0;
}

struct result {
    struct smtp_data d;
    struct out out;
    int rc;
    size_t consumed;
};

static void out_init(struct out *o, size_t cap)
{
    o->buf = malloc(cap + 1);
    FUZZ_CHECK(o->buf != NULL);
    o->len = 0;
    o->cap = cap;
    o->fail_after = SIZE_MAX;
}

/* feed(): IN in pieces cycling through STEPS (NSTEPS 0: at once), each from its own copy. */
static void feed(struct result *r, const uint8_t *in, size_t n, const uint8_t *steps, size_t nsteps)
{
    size_t off = 0, k = 0, zeros = 0, used;

    smtp_data_init(&r->d);
    r->rc = 0;
    r->consumed = 0;
    for (;;) {
        size_t step = nsteps == 0 ? n - off : steps[k++ % nsteps];
        uint8_t *piece;

        if (step > n - off)
            step = n - off;
        if (step == 0 && ++zeros > nsteps)
            step = n - off; /* a whole cycle of zero sizes: take the rest */
        else if (step > 0)
            zeros = 0;
        piece = malloc(step + 1);
        FUZZ_CHECK(piece != NULL);
        memcpy(piece, in + off, step);
        used = SIZE_MAX;
        r->rc = smtp_data_feed(&r->d, piece, step, &used, sink, &r->out);
        free(piece);
        FUZZ_CHECK(r->rc == 0 || r->rc == 1);
        FUZZ_CHECK(used <= step);
        FUZZ_CHECK(r->rc == 1 || used == step);
        FUZZ_CHECK(r->rc == 0 || (r->d.done && used > 0));
        off += used;
        if (r->rc == 1 || off == n)
            break;
    }
    r->consumed = off;
}

static void same(const struct result *a, const struct result *b)
{
    FUZZ_CHECK(a->rc == b->rc && a->consumed == b->consumed);
    FUZZ_CHECK(a->d.done == b->d.done && a->d.bare_lf == b->d.bare_lf &&
               a->d.bare_cr == b->d.bare_cr && a->d.eightbit == b->d.eightbit &&
               a->d.nul == b->d.nul && a->d.size == b->d.size && a->d.lines == b->d.lines &&
               a->d.longest == b->d.longest);
}

/* Counters against the output: lines are its CRLFs, longest its longest CRLF line. */
static void check_counters(const struct result *r)
{
    const uint8_t *o = r->out.buf;
    size_t n = r->out.len, lines = 0, longest = 0, start = 0;
    bool eight = false, nul = false;

    FUZZ_CHECK(r->d.size == n);
    for (size_t i = 0; i < n; i++) {
        eight |= o[i] >= 0x80;
        nul |= o[i] == 0;
        if (i + 1 < n && o[i] == '\r' && o[i + 1] == '\n') {
            lines++;
            if (i - start > longest)
                longest = i - start;
            start = i + 2;
        }
    }
    FUZZ_CHECK(r->d.lines == lines && r->d.longest == longest);
    FUZZ_CHECK(r->d.eightbit == eight && r->d.nul == nul);
    /* Without bare CR/LF, a finished message is whole CRLF lines. */
    if (r->rc == 1 && !smtp_data_bad(&r->d))
        FUZZ_CHECK(start == n);
}

/* restuff(): the clean output of a finished message, dot-stuffed again with ".\r\n"
 * after it, must read back to the same output and end exactly at its end. */
static void restuff(const struct result *r)
{
    const uint8_t *o = r->out.buf;
    size_t n = r->out.len, m = 0;
    uint8_t *s = malloc(2 * n + 3);
    struct result again;

    FUZZ_CHECK(s != NULL);
    for (size_t i = 0; i < n; i++) {
        if (o[i] == '.' && (i == 0 || (i >= 2 && o[i - 2] == '\r' && o[i - 1] == '\n')))
            s[m++] = '.';
        s[m++] = o[i];
    }
    memcpy(s + m, ".\r\n", 3);
    m += 3;
    out_init(&again.out, m);
    feed(&again, s, m, NULL, 0);
    FUZZ_CHECK(again.rc == 1 && again.consumed == m && !smtp_data_bad(&again.d));
    FUZZ_CHECK(again.out.len == n && memcmp(again.out.buf, o, n) == 0);
    free(again.out.buf);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct result one, chunked, failing;
    const uint8_t *steps, *in;
    size_t nsteps, n;

    if (size < 1)
        return 0;
    nsteps = 1 + data[0] % 16;
    if (size < 1 + nsteps)
        return 0;
    steps = data + 1;
    in = data + 1 + nsteps;
    n = size - 1 - nsteps;

    out_init(&one.out, n);
    feed(&one, in, n, NULL, 0);
    FUZZ_CHECK(one.out.len <= n && one.consumed <= n);
    FUZZ_CHECK(one.rc == 1 ? one.d.done : one.consumed == n && !one.d.done);
    if (one.rc == 1) {
        /* Ended exactly at CRLF "." CRLF, the first CRLF possibly the virtual one. */
        size_t e = one.consumed;

        FUZZ_CHECK(e >= 3 && memcmp(in + e - 3, ".\r\n", 3) == 0);
        FUZZ_CHECK(e == 3 || (e >= 5 && memcmp(in + e - 5, "\r\n", 2) == 0));
        FUZZ_CHECK(one.out.len <= e - 3);
    }
    check_counters(&one);

    out_init(&chunked.out, n);
    feed(&chunked, in, n, steps, nsteps);
    same(&one, &chunked);
    FUZZ_CHECK(chunked.out.len == one.out.len &&
               memcmp(chunked.out.buf, one.out.buf, one.out.len) == 0);

    /* A sink that refuses after some octets: same reading, a prefix of the output. */
    out_init(&failing.out, n);
    failing.out.fail_after = steps[0] * (size_t) 7;
    feed(&failing, in, n, steps, nsteps);
    same(&one, &failing);
    FUZZ_CHECK(failing.out.len <= one.out.len &&
               memcmp(failing.out.buf, one.out.buf, failing.out.len) == 0);
    FUZZ_CHECK(failing.d.sink_failed == (failing.out.len < one.out.len));

    if (one.rc == 1 && !smtp_data_bad(&one.d))
        restuff(&one);

    free(one.out.buf);
    free(chunked.out.buf);
    free(failing.out.buf);
    return 0;
}
