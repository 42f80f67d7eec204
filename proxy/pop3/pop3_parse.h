/*
 * proxy/pop3/pop3_parse.h
 * POP3 command lines (RFC 1939 3, RFC 2449 4): a keyword of 3 or 4 printable letters (we
 * allow up to POP3_VERB_MAX for extensions), then arguments separated by single spaces.
 * SECURITY: the line comes from unauthenticated clients; it is bounded and copied.
 */
#ifndef TERN_POP3_PARSE_H
#define TERN_POP3_PARSE_H

#include <stddef.h>

#define POP3_LINE_MAX 255 /* RFC 2449 4: up to 255 octets including CRLF */
#define POP3_VERB_MAX 16
#define POP3_ARGS_MAX 2

struct pop3_cmd {
    char verb[POP3_VERB_MAX + 1];        /* upper-cased */
    char args[POP3_ARGS_MAX][POP3_LINE_MAX + 1];
    size_t nargs;                        /* arguments (at most POP3_ARGS_MAX are kept) */
    size_t extra;                        /* arguments beyond POP3_ARGS_MAX */
    char rest[POP3_LINE_MAX + 1];        /* everything after the keyword and its space:
                                            PASS takes it whole (RFC 1939 7) */
};

/* pop3_parse(): LINE is LEN octets without the CRLF. Returns 0, or -1 for an empty line, a
 * NUL or control octet, a line over POP3_LINE_MAX, or a keyword that is not 1 to
 * POP3_VERB_MAX letters. */
int pop3_parse(const char *line, size_t len, struct pop3_cmd *out);

#endif
