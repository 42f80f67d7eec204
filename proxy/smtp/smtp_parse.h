/*
 * proxy/smtp/smtp_parse.h
 * Parsers for SMTP command lines and their arguments: the verb table, MAIL/RCPT paths and
 * ESMTP parameters, BDAT, AUTH, and the xtext, base64 and SASL PLAIN codecs they need.
 * RFC 5321 (4.1.1, 4.1.2, 4.5.3.1), 1870 SIZE, 6152 8BITMIME, 3030 CHUNKING/BINARYMIME,
 * 6531 SMTPUTF8, 3461 DSN, 4954 AUTH, 4616 PLAIN, 4648 base64.
 *
 * SECURITY: every byte comes from an unauthenticated SMTP client. The parsers never allocate,
 * never write past a named limit and never read past the LEN they are given (no input needs
 * a terminating NUL); they do not judge policy (which extension is advertised, who may relay).
 */
#ifndef TERN_SMTP_PARSE_H
#define TERN_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "address.h"

/* Limits. Each is checked before anything is copied. */
#define SMTP_LINE_MAX 1000 /* RFC 5321 4.5.3.1.6: text line incl. CRLF (DATA, 998 + CRLF) */
/* RFC 5321 4.5.3.1.4 caps a command line at 512 octets incl. CRLF, but "SMTP extensions may
 * be used to increase this limit": SIZE= (RFC 1870), RET= and ENVID= (up to 100, RFC 3461),
 * AUTH= (up to 500, RFC 4954 5) and ORCPT= (up to 500, RFC 3461 4.2). A MAIL with a 256-octet
 * path and every parameter at its cap is about 940 octets; 2048 leaves headroom for clients
 * that add more and is Postfix's line_length_limit default. The session refuses longer lines
 * before parsing (and keeps reading to the CRLF); smtp_parse_command() refuses them too. */
#define SMTP_CMD_LINE_MAX     2048 /* incl. CRLF */
#define SMTP_PATH_MAX         256  /* RFC 5321 4.5.3.1.3: "<...>" incl. route and punctuation */
#define SMTP_PARAMS_MAX       16   /* ESMTP parameters per MAIL/RCPT: we know 8; more is abuse */
#define SMTP_ENVID_MAX        100  /* RFC 3461 4.4: ENVID value, as received (xtext) */
#define SMTP_ORCPT_MAX        500  /* RFC 3461 4.2: ORCPT value, as received (type;xtext) */
#define SMTP_AUTHPARAM_MAX    500  /* RFC 4954 5: MAIL AUTH= value (decoded is never longer) */
#define SMTP_SASL_MECH_MAX    20   /* RFC 4422 3.1: sasl-mech = 1*20mech-char */
#define SMTP_PLAIN_ID_MAX     255  /* RFC 4616 2: authzid and authcid ("up to 255 octets") */
#define SMTP_PLAIN_PASSWD_MAX 1024 /* RFC 4616 asks for >= 255; long passphrases exist */
/* The path buffer: a mailbox inside a 256-octet path fits struct addr. */
#if SMTP_PATH_MAX - 2 > ADDR_MAX
#error "struct addr cannot hold a mailbox of SMTP_PATH_MAX"
#endif

/* Return codes. Each names the reply the session should give (RFC 5321 4.2, RFC 3463). */
enum smtp_err {
    SMTP_ERR_SYNTAX = -1,  /* 500 5.5.2 (command) or 501 5.5.4 (arguments) */
    SMTP_ERR_TOOLONG = -2, /* 500 5.5.2 line too long (RFC 5321 4.5.3.1.9) */
    SMTP_ERR_ADDR = -3,    /* 501 5.1.7 bad sender / 501 5.1.3 bad recipient address syntax
                              (also "501 Path too long", RFC 5321 4.5.3.1.9) */
    SMTP_ERR_PARAM = -4,   /* 555 5.5.4 parameter not recognized or not implemented
                              (RFC 5321 4.1.1.11) */
    SMTP_ERR_UTF8 = -5,    /* 553 5.6.7 non-ASCII address without SMTPUTF8 (RFC 6531) */
};

/* ---- Command lines ---------------------------------------------------------------------- */

enum smtp_verb {
    SMTP_V_HELO,
    SMTP_V_EHLO,
    SMTP_V_MAIL,
    SMTP_V_RCPT,
    SMTP_V_DATA,
    SMTP_V_BDAT,
    SMTP_V_RSET,
    SMTP_V_NOOP,
    SMTP_V_QUIT,
    SMTP_V_VRFY,
    SMTP_V_EXPN,
    SMTP_V_HELP,
    SMTP_V_STARTTLS,
    SMTP_V_AUTH,
    SMTP_V_UNKNOWN,
};

struct smtp_cmd {
    enum smtp_verb verb;
    const char *arg; /* into LINE, not NUL-terminated; never NULL (LINE + LEN when empty,
                        LINE after SMTP_ERR_TOOLONG) */
    size_t arglen;   /* trailing SP/HTAB already removed */
};

/* smtp_parse_command() splits one command line. LINE is the line WITHOUT its CRLF, LEN
 * octets, any bytes. The verb is case-insensitive and must start the line; SP or HTAB runs
 * separate it from the argument; trailing SP/HTAB are ignored. For MAIL and RCPT the
 * argument starts after "FROM:" / "TO:" (case-insensitive) and the SP/HTAB that many
 * clients put after the colon, as Postfix allows ("MAIL FROM: <a@b>").
 * OUT->arg points into LINE: it dies with LINE.
 * Returns 0 (an unrecognized verb is SMTP_V_UNKNOWN with return 0: 500 5.5.2 Unrecognized
 * command), SMTP_ERR_TOOLONG (LEN + 2 > SMTP_CMD_LINE_MAX) or SMTP_ERR_SYNTAX: NUL, CR or LF
 * in LINE, "MAIL" without "FROM:", a missing argument (HELO, EHLO, MAIL, RCPT, BDAT, AUTH,
 * VRFY, EXPN) or an argument where none is allowed (DATA, RSET, QUIT, STARTTLS). On
 * SMTP_ERR_SYNTAX OUT->verb is still the verb when it was recognized, so that the session
 * can answer "501 5.5.4 Syntax: MAIL FROM:<address>". */
int smtp_parse_command(const char *line, size_t len, struct smtp_cmd *out);

/* smtp_verb_name() is the verb in upper case ("MAIL"), "?" for SMTP_V_UNKNOWN. */
const char *smtp_verb_name(enum smtp_verb verb);

/* ---- MAIL and RCPT ---------------------------------------------------------------------- */

/* Which ESMTP parameters a MAIL or RCPT carried (struct smtp_mail/smtp_rcpt ->params). The
 * parser knows every parameter below whatever the session advertises: the session refuses
 * with 555 5.5.4 those of extensions it did not announce in its EHLO reply. */
#define SMTP_P_SIZE     (1u << 0) /* RFC 1870 */
#define SMTP_P_BODY     (1u << 1) /* RFC 6152, RFC 3030 (BINARYMIME) */
#define SMTP_P_SMTPUTF8 (1u << 2) /* RFC 6531 */
#define SMTP_P_RET      (1u << 3) /* RFC 3461 */
#define SMTP_P_ENVID    (1u << 4) /* RFC 3461 */
#define SMTP_P_AUTH     (1u << 5) /* RFC 4954 5 */
#define SMTP_P_NOTIFY   (1u << 6) /* RFC 3461 (RCPT) */
#define SMTP_P_ORCPT    (1u << 7) /* RFC 3461 (RCPT) */

enum smtp_body { SMTP_BODY_NONE, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME, SMTP_BODY_BINARYMIME };
enum smtp_ret { SMTP_RET_NONE, SMTP_RET_FULL, SMTP_RET_HDRS };

struct smtp_mail {
    bool null_path;   /* "<>": a bounce (RFC 5321 4.5.5); addr is all empty strings */
    bool utf8;        /* the address has non-ASCII octets (only with SMTPUTF8) */
    struct addr addr; /* the reverse-path without route, ASCII letters lowercased */
    unsigned params;  /* SMTP_P_* present */
    uint64_t size;    /* SIZE=, 0 when absent; UINT64_MAX when it does not fit (552 later) */
    enum smtp_body body;
    enum smtp_ret ret;
    char envid[SMTP_ENVID_MAX + 1];    /* ENVID= raw xtext as received (decode for a DSN
                                          with smtp_xtext_decode(), relay it as is) */
    char auth[SMTP_AUTHPARAM_MAX + 1]; /* AUTH= decoded mailbox, or "<>" (RFC 4954 5) */
};

/* smtp_parse_mail() parses the argument of MAIL after "FROM:" (struct smtp_cmd arg):
 *   Reverse-path [SP Mail-parameters]      (RFC 5321 4.1.2)
 * The path must be in angle brackets; "<>" is the null path. A source route
 * "<@a,@b:user@d>" is checked and dropped (RFC 5321 4.1.2, Appendix C). The mailbox is
 * validated with addr_parse() (node/address.h): dot-atom local part, no quoted local parts,
 * no address literals, lengths in octets. With the SMTPUTF8 parameter the local part and
 * the domain may also hold UTF-8 (RFC 6531 3.3): valid RFC 3629 sequences only, no C1
 * controls (without SMTPUTF8, any non-ASCII octet in the path is SMTP_ERR_UTF8); the same
 * structure and octet limits then apply with each non-ASCII octet
 * standing for a letter (so a U-label is held to 63 octets, stricter than IDNA, which
 * is not checked or converted here); only ASCII letters are lowercased.
 * Parameters: keyword[=value], keywords case-insensitive, each at most once, at most
 * SMTP_PARAMS_MAX. SIZE=1*20DIGIT; BODY=7BIT|8BITMIME|BINARYMIME; SMTPUTF8 (no value);
 * RET=FULL|HDRS; ENVID=xtext (<= SMTP_ENVID_MAX, decoding to printable ASCII, SP, HTAB);
 * AUTH=xtext of a mailbox or "<>" (<= SMTP_AUTHPARAM_MAX; kept decoded, not validated as
 * an address: RFC 4954 lets the server ignore it). Values are case-insensitive.
 * Returns 0 or a negative enum smtp_err and sets *WHY to a static English reason for the
 * log or the reply text ("" on success). OUT is fully written either way: all zero after
 * an error. */
int smtp_parse_mail(const char *arg, size_t len, struct smtp_mail *out, const char **why);

#define SMTP_NOTIFY_NEVER   (1u << 0)
#define SMTP_NOTIFY_SUCCESS (1u << 1)
#define SMTP_NOTIFY_FAILURE (1u << 2)
#define SMTP_NOTIFY_DELAY   (1u << 3)

struct smtp_rcpt {
    bool postmaster;  /* "<Postmaster>" without domain (RFC 5321 4.5.1): addr.local and
                         addr.full are "postmaster", addr.domain is "" */
    bool utf8;        /* the address has non-ASCII octets */
    struct addr addr; /* the forward-path without route, ASCII letters lowercased */
    unsigned params;  /* SMTP_P_* present */
    unsigned notify;  /* SMTP_NOTIFY_* (0 when absent); NEVER is alone when set */
    char orcpt[SMTP_ORCPT_MAX + 1]; /* ORCPT= raw "addr-type;xtext" as received */
    size_t orcpt_type_len;          /* length of addr-type: orcpt[orcpt_type_len] == ';' */
};

/* smtp_parse_rcpt() parses the argument of RCPT after "TO:":
 *   ( "<Postmaster>" / Forward-path ) [SP Rcpt-parameters]     (RFC 5321 4.1.2)
 * with the path rules of smtp_parse_mail() (no null path). SMTPUTF8 tells whether the
 * transaction's MAIL carried SMTPUTF8: without it a non-ASCII address is SMTP_ERR_UTF8.
 * Parameters: NOTIFY=NEVER or a comma list of SUCCESS, FAILURE, DELAY (RFC 3461 4.1);
 * ORCPT=addr-type;xtext (RFC 3461 4.2, <= SMTP_ORCPT_MAX; addr-type an atom; for
 * "utf-8" (RFC 6533) the value is kept unchecked beyond esmtp-value syntax, UTF-8 allowed
 * with SMTPUTF8; for other types it must be xtext that decodes to printable ASCII).
 * Returns and sets OUT and *WHY as smtp_parse_mail(). */
int smtp_parse_rcpt(const char *arg, size_t len, bool smtputf8, struct smtp_rcpt *out,
                    const char **why);

/* ---- BDAT and AUTH ---------------------------------------------------------------------- */

/* smtp_parse_bdat() parses "chunk-size [SP LAST]" (RFC 3030 2): 1*20DIGIT that fits in
 * uint64_t, "LAST" case-insensitive. Returns 0 or SMTP_ERR_SYNTAX. */
int smtp_parse_bdat(const char *arg, size_t len, uint64_t *size, bool *last);

struct smtp_auth {
    char mech[SMTP_SASL_MECH_MAX + 1]; /* upper case, e.g. "PLAIN" */
    bool has_ir;                       /* an initial response was given (RFC 4954 4) */
    const char *ir;                    /* into ARG, not NUL-terminated: base64, undecoded */
    size_t irlen;                      /* 0 for "=" (an empty initial response) */
};

/* smtp_parse_auth() parses "mechanism [SP initial-response]" (RFC 4954 4). The mechanism
 * is 1*20 of ALPHA, DIGIT, "-", "_" (RFC 4422 3.1) and is uppercased. The response is one
 * token without spaces, "=" meaning empty; it is not decoded here (smtp_base64_decode()).
 * OUT->ir points into ARG. Returns 0 or SMTP_ERR_SYNTAX. */
int smtp_parse_auth(const char *arg, size_t len, struct smtp_auth *out);

/* ---- Codecs ----------------------------------------------------------------------------- */

/* smtp_xtext_decode() decodes xtext (RFC 3461 4: xchar = "!".."~" but "+" and "=";
 * "+" 2 upper-case hex digits for any octet) into OUT, NUL-terminated, *OUTLEN octets.
 * Refuses other octets, lower-case or short hex, an encoded NUL, and output that does not
 * fit in OUTSIZE (including the NUL). Returns 0 or -1. */
int smtp_xtext_decode(const char *in, size_t n, char *out, size_t outsize, size_t *outlen);
/* smtp_xtext_encode() encodes N octets as xtext into OUT (NUL-terminated); the result is
 * at most 3 * N octets. Returns 0, or -1 if it does not fit in OUTSIZE. For both xtext
 * functions OUTLEN may be NULL. */
int smtp_xtext_encode(const uint8_t *in, size_t n, char *out, size_t outsize, size_t *outlen);

#define SMTP_BASE64_ENCODED_LEN(n) ((((n) + 2) / 3) * 4) /* without the NUL */
#define SMTP_BASE64_DECODED_MAX(n) (((n) / 4) * 3)

/* smtp_base64_decode() decodes strict RFC 4648 4 base64: the standard alphabet only, no
 * white space, length a multiple of 4, "=" padding only at the end, and zero pad bits
 * (RFC 4648 3.5), so that every input has one encoding. N == 0 decodes to nothing.
 * Writes at most OUTMAX octets (SMTP_BASE64_DECODED_MAX(n) is enough). Returns 0, or -1
 * for bad input or too small an OUT. For both base64 functions OUTLEN may be NULL. */
int smtp_base64_decode(const char *in, size_t n, uint8_t *out, size_t outmax, size_t *outlen);
/* smtp_base64_encode() writes the padded base64 of N octets and a NUL into OUT. OUTSIZE
 * must be at least SMTP_BASE64_ENCODED_LEN(n) + 1. Returns 0, or -1 if it is smaller. */
int smtp_base64_encode(const uint8_t *in, size_t n, char *out, size_t outsize, size_t *outlen);

/* The three fields of a SASL PLAIN message, NUL-terminated copies. The caller clears it
 * (explicit_bzero(p, sizeof *p)) once the password has been checked. */
struct smtp_plain {
    char authzid[SMTP_PLAIN_ID_MAX + 1]; /* "" when absent: act as AUTHCID */
    char authcid[SMTP_PLAIN_ID_MAX + 1];
    char passwd[SMTP_PLAIN_PASSWD_MAX + 1];
};

/* smtp_sasl_plain() splits a decoded RFC 4616 message [authzid] NUL authcid NUL passwd:
 * exactly two NULs, AUTHCID and PASSWD non-empty, all three valid UTF-8 (RFC 3629) within
 * their limits. Returns 0 or -1; on -1 OUT is zeroed. */
int smtp_sasl_plain(const uint8_t *msg, size_t n, struct smtp_plain *out);

/* smtp_utf8_valid() is true if S[0..N) is valid UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF). NUL octets are valid UTF-8: check them apart. */
bool smtp_utf8_valid(const uint8_t *s, size_t n);

#endif
