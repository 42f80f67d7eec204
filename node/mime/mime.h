/*
 * node/mime/mime.h
 * The MIME structure of a stored message, computed once at delivery/APPEND so that IMAP FETCH
 * (ENVELOPE, BODY, BODYSTRUCTURE, BODY[section]<partial>, RFC822.SIZE) never parses again.
 * RFC 5322 (header fields, addresses), RFC 2045/2046 (MIME, multipart), RFC 2231 (parameter
 * continuations), RFC 3501 7.4.2 / RFC 9051 7.5.2 (ENVELOPE, BODYSTRUCTURE, sections).
 *
 * SECURITY: the message bytes come from anyone who can send mail or APPEND. Parsing never fails
 * on content: broken MIME still gives a valid tree, and past a limit below the rest of the
 * message is plain body text. mime_decode() reads index records as untrusted input.
 */
#ifndef TERN_MIME_H
#define TERN_MIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits. Each is enforced where the parser would otherwise grow; none makes parsing fail.
 * MIME_MAX_DEPTH: nested containers (multipart, message/rfc822), as Dovecot; a deeper one is
 *   kept as a leaf. MIME_MAX_PARTS: parts in a message, root included, as Dovecot; after it
 *   boundaries are no longer looked for. MIME_HEADER_MAX: one header block; past it the rest
 *   is body text. MIME_FIELD_MAX: one header field, all its folded lines (so also the longest
 *   line): only its first bytes count. MIME_BOUNDARY_MAX: RFC 2046 5.1.1 allows 1-70, a longer
 *   one is no boundary. MIME_ADDRS_MAX, MIME_PARAMS_MAX, MIME_LANGS_MAX: kept per ENVELOPE
 *   field, per Content-Type or Content-Disposition, per Content-Language. MIME_ITEMS_MAX:
 *   addresses + parameters + language tags in a message. MIME_STRS_MAX: bytes of kept strings,
 *   a string that no longer fits is NIL. Together they bound a parse result (and its stored
 *   record) by about MIME_STRS_MAX + 40 * MIME_ITEMS_MAX + 130 * MIME_MAX_PARTS bytes. */
#define MIME_MAX_DEPTH    100
#define MIME_MAX_PARTS    10000
#define MIME_HEADER_MAX   (1024 * 1024)
#define MIME_FIELD_MAX    (64 * 1024)
#define MIME_BOUNDARY_MAX 256
#define MIME_ADDRS_MAX    1000
#define MIME_PARAMS_MAX   100
#define MIME_LANGS_MAX    32
#define MIME_ITEMS_MAX    200000
#define MIME_STRS_MAX     (8 * 1024 * 1024)
#define MIME_MESSAGE_MAX  ((size_t) 1 << 30) /* offsets are uint32_t; tern takes 50 MiB mail */

#define MIME_NONE    UINT32_MAX /* "no part", "no envelope" */
#define MIME_NIL_OFF UINT32_MAX /* mime_str.off of NIL */

/* A string of the parse result: LEN bytes at mime_msg.strs + OFF, or NIL (OFF == MIME_NIL_OFF).
 * Strings are not NUL-terminated and may hold any byte, NUL and 8-bit included. */
struct mime_str {
    uint32_t off;
    uint32_t len;
};

/* A range of one of the arrays of struct mime_msg: [first, first + count). */
struct mime_list {
    uint32_t first;
    uint32_t count;
};

/* A byte range of the stored message: [off, off + len). */
struct mime_range {
    uint32_t off;
    uint32_t len;
};

/* Content-Type / Content-Disposition parameter, as IMAP shows it: names keep their case,
 * quoted values are unquoted, RFC 2231 continuations are merged the way Dovecot does:
 * name*0="a"; name*1="b" -> name "ab"; name*0*=utf-8''%E2; name*1*=%82 -> name* "utf-8''%E2%82"
 * (still percent-encoded), plain parameters first, merged ones after, sorted by name. */
struct mime_param {
    struct mime_str name;
    struct mime_str value;
};

/* One ENVELOPE address: (name adl mailbox host). A group is (NIL NIL group-name NIL) ...
 * members ... (NIL NIL NIL NIL), as RFC 3501 7.4.2 writes it. Unparsable addresses get
 * Dovecot's placeholders: MISSING_MAILBOX, MISSING_DOMAIN, SYNTAX_ERROR, INVALID_ROUTE. */
struct mime_addr {
    struct mime_str name;
    struct mime_str adl;
    struct mime_str mailbox;
    struct mime_str host;
};

/* The ENVELOPE of a message (the root, or one inside message/rfc822). Strings are the raw
 * field values unfolded (CR LF of each fold removed), leading white space dropped, RFC 2047
 * encoded words left encoded. Lists index mime_msg.addrs; count 0 means NIL (and for sender
 * and reply_to "same as from", applied by mime_write_envelope()). A repeated string field keeps
 * the last value, repeated address fields are concatenated (both as Dovecot). */
struct mime_envelope {
    struct mime_str date;
    struct mime_str subject;
    struct mime_str in_reply_to;
    struct mime_str message_id;
    struct mime_list from, sender, reply_to, to, cc, bcc;
};

enum mime_kind {
    MIME_KIND_LEAF = 0,  /* a body: text, image, application... */
    MIME_KIND_MULTIPART, /* multipart/...: children are its body parts (maybe none) */
    MIME_KIND_MESSAGE,   /* message/rfc822: one child, the encapsulated message */
};

/* MIME_PART_TRUNCATED: a container over a limit, kept as a leaf; written as
 * application/octet-stream with its parameters, as Dovecot does. */
#define MIME_PART_TRUNCATED 0x01

/* One part. Offsets are into the stored message:
 *   header (BODY[n.MIME], or BODY[HEADER] of a message) = [hdr_off, body_off)
 *   body   (BODY[n], BODY[TEXT] of a message)           = [body_off, body_end)
 * The header includes its blank line when there is one. The CRLF before a boundary line
 * belongs to the boundary (RFC 2046 5.1.1), so it is in no part's body. The encapsulated message
 * of a message/rfc822 part P is P's only child, with child.hdr_off == P.body_off.
 * Content-* strings are NIL when the field is absent (or the part is not MIME: no MIME-Version
 * and no Content-Type at the top of a message); type and subtype are NIL when Content-Type is
 * absent or syntactically invalid (RFC 2045 5.2: then text/plain; charset=us-ascii). Case is
 * kept as in the message: IMAP clients compare case-insensitively, and Dovecot does the same. */
struct mime_part {
    uint32_t parent; /* MIME_NONE for the root (parts[0]) */
    uint32_t child;  /* first child or MIME_NONE */
    uint32_t next;   /* next sibling or MIME_NONE */
    uint32_t nchildren;
    uint32_t depth; /* root 0; at most MIME_MAX_DEPTH */
    uint32_t hdr_off;
    uint32_t body_off;
    uint32_t body_end;
    uint32_t body_lines; /* LF count of the body, as IMAP's body-fld-lines */
    uint32_t env;        /* envelope index if this part is a message (root or encapsulated) */
    uint8_t kind;        /* enum mime_kind */
    uint8_t flags;       /* MIME_PART_* */
    struct mime_str type, subtype;
    struct mime_list params; /* mime_msg.params */
    struct mime_str id, description, encoding;
    struct mime_str disposition;
    struct mime_list disp_params; /* mime_msg.params */
    struct mime_list language;    /* mime_msg.langs */
    struct mime_str md5, location;
};

#define MIME_MSG_TRUNCATED 0x01 /* some limit was reached while parsing */

/* A parse result. parts[] is in document order (pre-order), parts[0] is the message itself.
 * All arrays and strs are owned by the struct: free with mime_free(). */
struct mime_msg {
    uint32_t size; /* octets of the message (RFC822.SIZE) */
    uint32_t flags;
    struct mime_part *parts;
    uint32_t nparts;
    struct mime_param *params;
    uint32_t nparams;
    struct mime_addr *addrs;
    uint32_t naddrs;
    struct mime_str *langs;
    uint32_t nlangs;
    struct mime_envelope *envs;
    uint32_t nenvs;
    char *strs;
    uint32_t strs_len;
    /* allocated sizes (parser use) */
    uint32_t parts_cap, params_cap, addrs_cap, langs_cap, envs_cap, strs_cap;
};

/* mime_parse() parses LEN bytes of MSG (not NUL-terminated; any bytes) into *M, which the
 * caller then owns (mime_free()). MSG is only read, never copied, and need not outlive *M.
 * Line ends may be CRLF or bare LF; sizes are octets of MSG as stored (a bare-LF message gets
 * smaller sizes than Dovecot, which counts every LF as CRLF).
 * Returns 0, -ENOMEM (*M is then empty) or -EFBIG (LEN > MIME_MESSAGE_MAX). */
int mime_parse(const uint8_t *msg, size_t len, struct mime_msg *m);

/* mime_free() releases what *M holds and zeroes it; safe on a zeroed or already freed *M. */
void mime_free(struct mime_msg *m);

/* mime_str_ptr(): the bytes of S (S.len of them), or NULL for NIL. Valid until mime_free(). */
static inline const char *mime_str_ptr(const struct mime_msg *m, struct mime_str s)
{
    if (s.off == MIME_NIL_OFF)
        return NULL;
    return m->strs != NULL ? m->strs + s.off : ""; /* "" is the only string of no arena */
}

static inline bool mime_str_is_nil(struct mime_str s)
{
    return s.off == MIME_NIL_OFF;
}

/* ---- storage ------------------------------------------------------------------------------ */

#define MIME_CODEC_VERSION 1

/* mime_encode() serializes M into a malloc()ed buffer (*OUT, *OUT_LEN; the caller free()s it):
 * a version byte then LEB128 varints and the string bytes. The output is deterministic (same
 * message, same bytes), so it can travel in a Raft command. 0 or -ENOMEM. */
int mime_encode(const struct mime_msg *m, uint8_t **out, size_t *out_len);

/* mime_decode() rebuilds *M from LEN bytes of BUF, checking every count, offset, string and
 * list against the buffer and the tree invariants the writers rely on (pre-order, parents
 * before children, child ranges inside parent ranges, depth, kinds). 0, -EINVAL (corrupt or
 * unknown version; *M is then empty) or -ENOMEM. Free *M with mime_free(). */
int mime_decode(const uint8_t *buf, size_t len, struct mime_msg *m);

/* ---- IMAP output --------------------------------------------------------------------------- */

/* A growable output buffer. Writers append; the first allocation failure sets err = -ENOMEM,
 * later appends do nothing, and the writer returns err. data is not NUL-terminated. */
struct mime_buf {
    char *data;
    size_t len;
    size_t cap;
    int err;
};

void mime_buf_init(struct mime_buf *b);
void mime_buf_free(struct mime_buf *b);
void mime_buf_reset(struct mime_buf *b); /* len = 0, err = 0, memory kept */
void mime_buf_add(struct mime_buf *b, const void *data, size_t len);

/* mime_buf_add_nstring() writes an IMAP nstring: NIL for NULL; a quoted string ("..." with \"
 * and \\ escaped) when the bytes are 7-bit without CR, LF or NUL and at most MIME_QUOTED_MAX
 * long; otherwise a literal {n}\r\n<bytes>, in which each NUL becomes U+FFFD (IMAP forbids NUL,
 * Dovecot does the same). */
#define MIME_QUOTED_MAX 1024
void mime_buf_add_nstring(struct mime_buf *b, const char *s, size_t len);

/* mime_write_envelope() appends the ENVELOPE of the message whose header is part PART (0 for
 * the message itself, or the child of a message/rfc822 part), parenthesized, as RFC 3501
 * 7.4.2: sender and reply-to default to from. NIL envelope fields if PART has none.
 * Returns b->err. */
int mime_write_envelope(const struct mime_msg *m, uint32_t part, struct mime_buf *b);

/* mime_write_bodystructure() appends the parenthesized BODYSTRUCTURE (EXTENSIBLE true) or BODY
 * (false) of the message, in Dovecot's form: type/subtype/parameter case as in the message,
 * defaults "text" "plain" ("charset" "us-ascii") and "7bit", a text part without a charset
 * parameter gets ("charset" "us-ascii") appended, a multipart with no parts shows one empty
 * text/plain part, extension data always has all four fields. Returns b->err. */
int mime_write_bodystructure(const struct mime_msg *m, bool extensible, struct mime_buf *b);

/* ---- sections ------------------------------------------------------------------------------ */

enum mime_section_kind {
    MIME_SECTION_BODY = 0,          /* "" (whole message) or "1.2" (part body) */
    MIME_SECTION_HEADER,            /* "HEADER", "1.2.HEADER" */
    MIME_SECTION_HEADER_FIELDS,     /* "HEADER.FIELDS": filter with mime_header_fields() */
    MIME_SECTION_HEADER_FIELDS_NOT, /* "HEADER.FIELDS.NOT" */
    MIME_SECTION_TEXT,              /* "TEXT", "1.2.TEXT" */
    MIME_SECTION_MIME,              /* "1.2.MIME" */
};

/* mime_section_range() maps an RFC 3501 6.4.5 section-spec (the text between [ and ], without
 * the header-list of HEADER.FIELDS; keywords case-insensitive; LEN bytes of SECTION) to the byte
 * range of the stored message. Part numbers follow RFC 3501: in a multipart, n is the n-th
 * child; a non-multipart has only part 1 (itself); n.HEADER, n.TEXT and a further n.m step
 * inside a message/rfc822 part refer to its encapsulated message.
 * Returns 0 (*OUT, *KIND set), -EINVAL (syntax: bad number, unknown keyword, MIME without a part
 * number) or -ENOENT (no such part, or HEADER/TEXT of a part that is not message/rfc822: the
 * IMAP layer answers those with an empty string, as Dovecot does). */
int mime_section_range(const struct mime_msg *m, const char *section, size_t len,
                       struct mime_range *out, enum mime_section_kind *kind);

/* mime_header_fields() appends to OUT, byte-exactly, the fields of the header block HDR of MSG
 * whose names are (EXCLUDE false) or are not (EXCLUDE true) among the NFIELDS names in FIELDS
 * (compared case-insensitively; each field with all its continuation lines), then the block's blank
 * line if it has one, as RFC 3501 6.4.5 wants for HEADER.FIELDS and HEADER.FIELDS.NOT. HDR must lie
 * inside MSG (e.g. from mime_section_range()). Returns out->err. */
int mime_header_fields(const uint8_t *msg, struct mime_range hdr, const char *const *fields,
                       size_t nfields, bool exclude, struct mime_buf *out);

#endif
