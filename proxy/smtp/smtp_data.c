/*
 * proxy/smtp/smtp_data.c
 * The DATA reader (see smtp_data.h): a five-state machine over the octets that matter
 * (CR, LF, and a "." at the start of a line), with memchr() over everything else, so that
 * a feed of ordinary text costs a few passes of libc's vectorised scans and one sink call.
 * RFC 5321 4.1.1.4, 4.5.2, 2.3.8.
 *
 * SECURITY: input from any SMTP client, split anywhere. No buffering: the only octets held
 * back across feeds are a line-initial "." and the CR after it, and they are state, not
 * data. The end of data is recognised only as CRLF "." CRLF (smuggling defence).
 */
#include "smtp_data.h"

#include <string.h>

/* Where we are, as a function of the octets already read. */
enum {
    S_BOL,    /* just after CRLF (or at the start): a "." here is special */
    S_DOT,    /* CRLF "." read; the dot is held back (it is never content) */
    S_DOT_CR, /* CRLF "." CR read; both held back: LF ends the data */
    S_TEXT,   /* inside a line */
    S_CR,     /* inside a line, just after a CR that was delivered */
};

/* any_8bit(): an octet >= 0x80 in P[0..N), eight octets at a time. */
static bool any_8bit(const uint8_t *p, size_t n)
{
    size_t i = 0;
    uint64_t w;

    for (; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, sizeof w);
        if (w & UINT64_C(0x8080808080808080))
            return true;
    }
    for (; i < n; i++)
        if (p[i] & 0x80)
            return true;
    return false;
}

/* deliver(): P[0..LEN) is content: counted, scanned for NUL and 8-bit octets (until one is
 * seen), and handed to the sink unless it has failed before. Called once per run of
 * content, not per line. */
static void deliver(struct smtp_data *d, const uint8_t *p, size_t len, smtp_data_sink *sink,
                    void *ctx)
{
    if (len == 0)
        return;
    d->size += len;
    if (!d->nul && memchr(p, '\0', len) != NULL)
        d->nul = true;
    if (!d->eightbit && any_8bit(p, len))
        d->eightbit = true;
    if (!d->sink_failed && sink(ctx, p, len) != 0)
        d->sink_failed = true;
}

/* end_line(): the CRLF just counted in line_len ends a line. */
static void end_line(struct smtp_data *d)
{
    uint64_t len = d->line_len - 2; /* without CRLF; line_len >= 2 here */

    if (len > d->longest)
        d->longest = len;
    d->line_len = 0;
    d->lines++;
}

void smtp_data_init(struct smtp_data *d)
{
    memset(d, 0, sizeof *d);
    d->state = S_BOL;
}

int smtp_data_feed(struct smtp_data *d, const uint8_t *in, size_t n, size_t *consumed,
                   smtp_data_sink *sink, void *ctx)
{
    static const uint8_t cr_octet[1] = {'\r'};
    const uint8_t *p = in, *end = in + n;
    const uint8_t *run = in;  /* content [run, p) not yet given to the sink */
    const uint8_t *lf = NULL; /* next LF at or after p, NULL if none: valid if lf_known */
    const uint8_t *cr, *lim;
    bool lf_known = false;

    if (d->done) {
        *consumed = 0;
        return 1;
    }
    while (p < end) {
        switch (d->state) {
        case S_BOL:
            if (*p == '.') {
                deliver(d, run, (size_t) (p - run), sink, ctx);
                run = ++p;
                d->state = S_DOT;
            } else {
                d->state = S_TEXT;
            }
            break;

        case S_DOT:
            if (*p == '\r') {
                run = ++p;
                d->state = S_DOT_CR;
            } else {
                d->state = S_TEXT; /* the dot was for transparency: dropped */
            }
            break;

        case S_DOT_CR:
            if (*p == '\n') {
                d->done = true;
                *consumed = (size_t) (p + 1 - in);
                return 1;
            }
            /* CRLF "." CR not followed by LF: the dot goes, the CR is a bare CR (content).
             * run == p here: nothing is pending before it. */
            deliver(d, cr_octet, 1, sink, ctx);
            d->line_len++;
            d->bare_cr = true;
            d->state = S_TEXT;
            break;

        case S_CR:
            if (*p == '\n') {
                d->line_len++;
                p++;
                end_line(d);
                d->state = S_BOL;
            } else {
                d->bare_cr = true; /* the CR was content already; *p is looked at next */
                d->state = S_TEXT;
            }
            break;

        case S_TEXT:
            /* Up to the next LF, or the end of the input. The LF position is kept across
             * bare CRs so that a run of them stays linear. */
            if (!lf_known || (lf != NULL && lf < p)) {
                lf = memchr(p, '\n', (size_t) (end - p));
                lf_known = true;
            }
            lim = lf != NULL ? lf : end;
            cr = memchr(p, '\r', (size_t) (lim - p));
            if (cr != NULL && cr + 1 < lim) { /* CR followed by something but LF */
                d->line_len += (size_t) (cr + 1 - p);
                d->bare_cr = true;
                p = cr + 1;
            } else if (lf == NULL) { /* no LF in this input; perhaps a CR as its last octet */
                d->line_len += (size_t) (end - p);
                if (cr != NULL)
                    d->state = S_CR;
                p = end;
            } else { /* a LF: the end of the line if a CR precedes it, else a bare LF */
                d->line_len += (size_t) (lf + 1 - p);
                p = lf + 1;
                if (cr != NULL) {
                    end_line(d);
                    d->state = S_BOL;
                } else {
                    d->bare_lf = true;
                }
            }
            break;
        }
    }
    deliver(d, run, (size_t) (p - run), sink, ctx);
    *consumed = n;
    return 0;
}
