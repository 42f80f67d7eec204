/*
 * proxy/smtp/smtp_data.h
 * Streaming reader of the SMTP DATA phase: finds the end of the mail data, removes the
 * transparency dots and hands the message to a sink, with the SMTP smuggling defence.
 * RFC 5321 4.1.1.4 (end of data is CRLF "." CRLF), 4.5.2 (transparency), 2.3.8 (bare CR
 * and LF), 4.5.3.1.6; RFC 5322 2.1.1 and 2.3 (line lengths, CR and LF only as CRLF).
 *
 * SECURITY: the bytes come from any SMTP client, in pieces of any size. Only CRLF "." CRLF
 * ends the data; "<LF>.<LF>", "<CR>.<CR><LF>", "<LF>.<CR><LF>" and the like, which other
 * servers accept as the end (SMTP smuggling, 2023), never do: they are message content,
 * flagged as bare CR/LF so that the session refuses the message after the real end.
 */
#ifndef TERN_SMTP_DATA_H
#define TERN_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* smtp_data_sink receives the message content: dot-unstuffed, line endings untouched,
 * in input order. BUF points into the caller's input (or a constant) and is valid only
 * during the call; LEN > 0. Returns 0, or non-zero to refuse further content (disk full,
 * size limit): the reader then stops calling it and sets sink_failed, but keeps reading
 * to the end of the data so that the session stays in step with the client. */
typedef int smtp_data_sink(void *ctx, const uint8_t *buf, size_t len);

struct smtp_data {
    /* Private: where the previous octets left us (SMTP_DATA_S_* in smtp_data.c). */
    int state;
    uint64_t line_len; /* octets of the current line so far */

    /* Results. Valid at any time, final once smtp_data_feed() has returned 1. */
    bool done;        /* the end of data was read */
    bool bare_lf;     /* a LF not preceded by CR: refuse the message (550 5.5.2, RFC 5321
                         2.3.8), as Postfix's smtpd_forbid_bare_newline = reject */
    bool bare_cr;     /* a CR not followed by LF: same */
    bool eightbit;    /* an octet >= 0x80 (needs BODY=8BITMIME, RFC 6152) */
    bool nul;         /* a NUL octet (RFC 5322 forbids it; only BINARYMIME carries it) */
    bool sink_failed; /* the sink returned non-zero once; it was not called again */
    uint64_t size;    /* octets of content (after unstuffing), delivered or not */
    uint64_t lines;   /* CRLF-terminated lines of content */
    uint64_t longest; /* longest line in octets without its CRLF and without the
                         transparency dot (RFC 5322 2.1.1: 998; RFC 5321 4.5.3.1.6);
                         bare CR/LF count as octets of the line they are in */
};

/* smtp_data_init() prepares D for one DATA phase, after the 354 reply. The data starts as
 * if after a CRLF, so ".\r\n" as the very first line ends an empty message. */
void smtp_data_init(struct smtp_data *d);

/* smtp_data_feed() reads N octets of IN and passes the content to SINK(CTX, ...) in as
 * few calls as the dots allow (usually one per feed). A bare CR or LF never ends a line:
 * a "." after one is content, and only CRLF "." CRLF ends the data. The dot that starts a
 * line after a CRLF is removed (only that one dot).
 * Returns 1 when the end of data was reached: *CONSUMED octets of IN were used (up to and
 * including the final LF) and IN + *CONSUMED is the next pipelined command. Returns 0 when
 * it needs more: all N octets were used (*CONSUMED == N). Called again after returning 1,
 * it returns 1 with *CONSUMED == 0. Memory and time are O(1) per octet: no buffering. */
int smtp_data_feed(struct smtp_data *d, const uint8_t *in, size_t n, size_t *consumed,
                   smtp_data_sink *sink, void *ctx);

/* smtp_data_bad() is true if the message must be refused: a bare CR or LF was seen. */
static inline bool smtp_data_bad(const struct smtp_data *d)
{
    return d->bare_lf || d->bare_cr;
}

#endif
