/*
 * node/mime/mime_int.h
 * Internals shared by the files of node/mime/: the growable arrays of struct mime_msg, the
 * string arena, and the RFC 5322 / RFC 2045 / RFC 2231 field parsers of rfc822.c that the
 * structure parser (parser.c) calls on unfolded header field values.
 *
 * SECURITY: every function here reads bytes that came from a message; all of them are bounded
 * by the [p, e) they are given and by the MIME_* limits of mime.h.
 */
#ifndef TERN_MIME_INT_H
#define TERN_MIME_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mime.h"

/* A scratch byte buffer (parser-private, reused between fields). */
struct mime_sbuf {
    uint8_t *d;
    size_t len;
    size_t cap;
};

/* What the field parsers need: the result being built, a sticky error, scratch space, the
 * item budget and the placeholder strings, interned once per message. */
struct mime_ctx {
    struct mime_msg *m;
    int err;              /* 0 or -ENOMEM; once set nothing more is added */
    struct mime_sbuf tmp; /* one value being built (phrase, quoted string, merged param) */
    struct mime_sbuf raw; /* raw parameters of one field before RFC 2231 merging */
    uint32_t items;       /* addresses + parameters + tags so far (MIME_ITEMS_MAX) */
    struct mime_str missing_mailbox, missing_domain, syntax_error, invalid_route;
};

/* Character classes of rfc822.c (RFC 5322 atext, RFC 2045 token; 8-bit counts as both, '.'
 * counts as a token character, as Dovecot does). */
#define MIME_C_ATEXT 1
#define MIME_C_TOKEN 2
extern const uint8_t mime_ctype[256];

/* Growable arrays. Each returns false (and sets c->err) when out of memory. */
bool mime_grow(struct mime_ctx *c, void **arr, uint32_t *cap, uint32_t need, size_t elem);
bool mime_sbuf_add(struct mime_ctx *c, struct mime_sbuf *b, const void *p, size_t len);

/* mime_intern() copies LEN bytes to the string arena. It returns NIL when the arena would pass
 * MIME_STRS_MAX (and flags the message truncated) or on ENOMEM (c->err set). */
struct mime_str mime_intern(struct mime_ctx *c, const void *p, size_t len);
/* mime_intern_const(): a placeholder kept once per message in *SLOT. */
struct mime_str mime_intern_const(struct mime_ctx *c, struct mime_str *slot, const char *s);

/* Field parsers. V..E is one unfolded field value. Each appends to the arrays of c->m. */

/* Content-Type: sets type, subtype and params of P if the value is valid ("type/subtype" with
 * tokens), and returns true; false leaves P untouched (RFC 2045 5.2 default applies). */
bool mime_parse_content_type(struct mime_ctx *c, const uint8_t *v, const uint8_t *e,
                             struct mime_part *p);
/* Content-Disposition: a token (possibly empty, as Dovecot keeps it) and its parameters. */
void mime_parse_disposition(struct mime_ctx *c, const uint8_t *v, const uint8_t *e,
                            struct mime_part *p);
/* Content-Transfer-Encoding: one token and nothing else, or NIL. */
struct mime_str mime_parse_encoding(struct mime_ctx *c, const uint8_t *v, const uint8_t *e);
/* Content-Language: 1#atom (RFC 3282), up to MIME_LANGS_MAX. */
void mime_parse_language(struct mime_ctx *c, const uint8_t *v, const uint8_t *e,
                         struct mime_part *p);
/* An address list (RFC 5322 3.4) appended to c->m->addrs; at most MAX entries, group markers
 * included. Returns the number appended. */
uint32_t mime_parse_addresses(struct mime_ctx *c, const uint8_t *v, const uint8_t *e, uint32_t max);

/* mime_param_find(): the value of the first parameter of LIST named NAME (ASCII case
 * insensitive), or NIL. */
struct mime_str mime_param_find(const struct mime_msg *m, struct mime_list list, const char *name);

/* mime_str_eq(): S (not NIL) equals the NUL-terminated ASCII string LIT, ignoring case. */
bool mime_str_eq(const struct mime_msg *m, struct mime_str s, const char *lit);

#endif
