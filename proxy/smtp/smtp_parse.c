/*
 * proxy/smtp/smtp_parse.c
 * SMTP command lines and their arguments (see smtp_parse.h): a verb table in the manner of
 * Postfix's smtpd_cmd_table, the Path and esmtp-param grammar of RFC 5321 4.1.2 with the
 * parameters of RFC 1870, 6152, 3030, 6531, 3461 and 4954, and the xtext (RFC 3461 4),
 * base64 (RFC 4648 4) and SASL PLAIN (RFC 4616) codecs.
 *
 * SECURITY: parses bytes from unauthenticated SMTP clients. No allocation; every copy is
 * bounded by a named limit checked before the copy; no input is assumed NUL-terminated.
 */
#include "smtp_parse.h"

#include <string.h>

/* ---- Characters (ASCII only: never the locale) ------------------------------------------ */

static bool is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_alnum(char c)
{
    return is_alpha(c) || is_digit(c);
}

static char to_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char) (c - 'A' + 'a') : c;
}

static char to_upper(char c)
{
    return (c >= 'a' && c <= 'z') ? (char) (c - 'a' + 'A') : c;
}

/* ieq(): S[0..N) equals the N-octet literal LIT, ignoring ASCII case. */
static bool ieq(const char *s, size_t n, const char *lit)
{
    size_t i;

    for (i = 0; i < n && lit[i] != '\0'; i++)
        if (to_lower(s[i]) != to_lower(lit[i]))
            return false;
    return i == n && lit[i] == '\0';
}

/* utf8_seq() decodes one RFC 3629 sequence at S (N > 0 octets available): its length, or 0
 * for an invalid, overlong, surrogate or out-of-range sequence. */
static size_t utf8_seq(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t c = s[0];
    size_t len, i;
    uint32_t v, min;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c < 0xc2) /* continuation octet, or 0xc0/0xc1 (always overlong) */
        return 0;
    if (c < 0xe0) {
        len = 2, v = c & 0x1f, min = 0x80;
    } else if (c < 0xf0) {
        len = 3, v = c & 0x0f, min = 0x800;
    } else if (c < 0xf5) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

bool smtp_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0, k;
    uint32_t cp;

    while (i < n) {
        k = utf8_seq(s + i, n - i, &cp);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

/* utf8_text(): S[0..N) is valid UTF-8 without C0 or C1 controls, DEL or NUL. */
static bool utf8_text(const char *s, size_t n)
{
    const uint8_t *u = (const uint8_t *) s;
    size_t i = 0, k;
    uint32_t cp;

    while (i < n) {
        k = utf8_seq(u + i, n - i, &cp);
        if (k == 0 || cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
            return false;
        i += k;
    }
    return true;
}

/* ---- Command lines ---------------------------------------------------------------------- */

enum arg_rule { ARG_NONE, ARG_OPTIONAL, ARG_REQUIRED };

/* The verbs, indexed by enum smtp_verb, with whether they take an argument. */
static const struct verb_def {
    const char *name;
    enum arg_rule arg;
} verb_table[SMTP_V_UNKNOWN] = {
    [SMTP_V_HELO] = {"HELO", ARG_REQUIRED},     /* RFC 5321 4.1.1.1: SP Domain */
    [SMTP_V_EHLO] = {"EHLO", ARG_REQUIRED},     /* SP ( Domain / address-literal ) */
    [SMTP_V_MAIL] = {"MAIL", ARG_REQUIRED},     /* 4.1.1.2: FROM:Reverse-path */
    [SMTP_V_RCPT] = {"RCPT", ARG_REQUIRED},     /* 4.1.1.3: TO:Forward-path */
    [SMTP_V_DATA] = {"DATA", ARG_NONE},         /* 4.1.1.4 */
    [SMTP_V_BDAT] = {"BDAT", ARG_REQUIRED},     /* RFC 3030 2: chunk-size [LAST] */
    [SMTP_V_RSET] = {"RSET", ARG_NONE},         /* 4.1.1.5 */
    [SMTP_V_NOOP] = {"NOOP", ARG_OPTIONAL},     /* 4.1.1.9: [ SP String ] */
    [SMTP_V_QUIT] = {"QUIT", ARG_NONE},         /* 4.1.1.10 */
    [SMTP_V_VRFY] = {"VRFY", ARG_REQUIRED},     /* 4.1.1.6: SP String */
    [SMTP_V_EXPN] = {"EXPN", ARG_REQUIRED},     /* 4.1.1.7: SP String */
    [SMTP_V_HELP] = {"HELP", ARG_OPTIONAL},     /* 4.1.1.8: [ SP String ] */
    [SMTP_V_STARTTLS] = {"STARTTLS", ARG_NONE}, /* RFC 3207 4: no parameters */
    [SMTP_V_AUTH] = {"AUTH", ARG_REQUIRED},     /* RFC 4954 4: mechanism [response] */
};

const char *smtp_verb_name(enum smtp_verb verb)
{
    if ((unsigned) verb >= SMTP_V_UNKNOWN)
        return "?";
    return verb_table[verb].name;
}

int smtp_parse_command(const char *line, size_t len, struct smtp_cmd *out)
{
    const struct verb_def *def = NULL;
    size_t i, vlen;
    const char *arg;
    size_t arglen;
    enum smtp_verb v;

    out->verb = SMTP_V_UNKNOWN;
    out->arg = line;
    out->arglen = 0;
    if (len > SMTP_CMD_LINE_MAX - 2)
        return SMTP_ERR_TOOLONG;
    out->arg = line + len;
    /* A NUL would cut C strings built from the line; a CR or LF inside a line means the
     * session split lines differently from a downstream server (command smuggling). */
    for (i = 0; i < len; i++)
        if (line[i] == '\0' || line[i] == '\r' || line[i] == '\n')
            return SMTP_ERR_SYNTAX;
    while (len > 0 && is_wsp(line[len - 1]))
        len--;

    for (vlen = 0; vlen < len && !is_wsp(line[vlen]); vlen++)
        ;
    for (v = 0; v < SMTP_V_UNKNOWN; v++) {
        if (ieq(line, vlen, verb_table[v].name)) {
            def = &verb_table[v];
            break;
        }
    }
    for (i = vlen; i < len && is_wsp(line[i]); i++)
        ;
    arg = line + i;
    arglen = len - i;
    out->arg = arg;
    out->arglen = arglen;
    if (def == NULL)
        return 0; /* SMTP_V_UNKNOWN; ARG is the rest, for the log */
    out->verb = v;

    if (v == SMTP_V_MAIL || v == SMTP_V_RCPT) {
        const char *kw = v == SMTP_V_MAIL ? "FROM:" : "TO:";
        size_t kwlen = strlen(kw);

        if (arglen < kwlen || !ieq(arg, kwlen, kw))
            return SMTP_ERR_SYNTAX;
        /* RFC 5321 has no space after the colon; many clients send one (Postfix
         * accepts it unless smtpd_strict_rfc821_envelopes). */
        for (i = kwlen; i < arglen && is_wsp(arg[i]); i++)
            ;
        out->arg = arg + i;
        out->arglen = arglen - i;
    }
    if (def->arg == ARG_NONE && out->arglen > 0)
        return SMTP_ERR_SYNTAX;
    if (def->arg == ARG_REQUIRED && out->arglen == 0)
        return SMTP_ERR_SYNTAX;
    return 0;
}

/* ---- Paths ------------------------------------------------------------------------------ */

/* masked(): copies S[0..N) (N < SIZE) into BUF as a C string with every non-ASCII octet
 * replaced by 'x', so that addr_parse() checks the structure and the octet lengths of a
 * UTF-8 address exactly as of an ASCII one (RFC 6531 3.3: "atext =/ UTF8-non-ascii"). */
static void masked(const char *s, size_t n, char *buf)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = (unsigned char) s[i] >= 0x80 ? 'x' : s[i];
    buf[n] = '\0';
}

static bool has_8bit(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char) s[i] >= 0x80)
            return true;
    return false;
}

/* domain_ok(): S[0..N) is a domain name (RFC 1035 LDH labels), or with UTF8 a name whose
 * non-ASCII labels hold valid UTF-8 (RFC 6531 "sub-domain =/ U-label", not IDNA-checked). */
static bool domain_ok(const char *s, size_t n, bool utf8)
{
    char buf[ADDR_DOMAIN_MAX + 1];

    if (n == 0 || n > ADDR_DOMAIN_MAX)
        return false;
    if (has_8bit(s, n) && (!utf8 || !utf8_text(s, n)))
        return false;
    masked(s, n, buf);
    return addr_domain_valid(buf);
}

/* mailbox(): validates Mailbox S[0..N) into A (see smtp_parse_mail()). */
static int mailbox(const char *s, size_t n, bool utf8, struct addr *a, bool *is_utf8,
                   const char **why)
{
    char buf[ADDR_MAX + 1];
    size_t at;

    if (n == 0) {
        *why = "empty address";
        return SMTP_ERR_ADDR;
    }
    if (n > ADDR_MAX) { /* unreachable within SMTP_PATH_MAX; kept for direct callers */
        *why = "address too long";
        return SMTP_ERR_ADDR;
    }
    *is_utf8 = has_8bit(s, n);
    if (*is_utf8) {
        if (!utf8) {
            *why = "non-ASCII address requires SMTPUTF8";
            return SMTP_ERR_UTF8;
        }
        if (!utf8_text(s, n)) {
            *why = "invalid UTF-8 in address";
            return SMTP_ERR_ADDR;
        }
    }
    masked(s, n, buf);
    if (addr_parse(buf, a) != 0) {
        *why = "invalid address";
        return SMTP_ERR_ADDR;
    }
    if (*is_utf8) {
        /* Put the non-ASCII octets back; addr_parse() kept every position. */
        at = (size_t) (strrchr(buf, '@') - buf);
        for (size_t i = 0; i < n; i++) {
            if ((unsigned char) s[i] < 0x80)
                continue;
            a->full[i] = s[i];
            if (i < at)
                a->local[i] = s[i];
            else
                a->domain[i - at - 1] = s[i];
        }
    }
    return 0;
}

/* route(): checks an A-d-l "@a,@b" (RFC 5321 4.1.2), which is then ignored (Appendix C). */
static bool route(const char *s, size_t n, bool utf8)
{
    size_t i = 0, j;

    for (;;) {
        if (i >= n || s[i] != '@')
            return false;
        for (j = ++i; j < n && s[j] != ','; j++)
            ;
        if (!domain_ok(s + i, j - i, utf8))
            return false;
        if (j == n)
            return true;
        i = j + 1;
    }
}

enum path_kind { PATH_MAILBOX, PATH_NULL, PATH_POSTMASTER };

/* path(): parses "<" [A-d-l ":"] Mailbox ">" or "<>" at the start of S[0..N); *USED is the
 * length of the path with its brackets. */
static int path(const char *s, size_t n, bool utf8, struct addr *a, enum path_kind *kind,
                bool *is_utf8, size_t *used, const char **why)
{
    const char *end, *box, *colon;
    size_t boxlen;

    *kind = PATH_MAILBOX;
    *is_utf8 = false;
    if (n == 0 || s[0] != '<') {
        *why = "address must be in <>";
        return SMTP_ERR_ADDR;
    }
    end = memchr(s, '>', n);
    if (end == NULL) {
        *why = "missing > after the address";
        return SMTP_ERR_ADDR;
    }
    *used = (size_t) (end - s) + 1;
    if (*used > SMTP_PATH_MAX) {
        *why = "path too long";
        return SMTP_ERR_ADDR;
    }
    box = s + 1;
    boxlen = *used - 2;
    if (memchr(box, '"', boxlen) != NULL) {
        *why = "quoted local parts are not supported";
        return SMTP_ERR_ADDR;
    }
    if (boxlen == 0) {
        *kind = PATH_NULL;
        return 0;
    }
    if (box[0] == '@') {
        colon = memchr(box, ':', boxlen);
        if (colon == NULL || !route(box, (size_t) (colon - box), utf8)) {
            *why = "invalid source route";
            return SMTP_ERR_ADDR;
        }
        boxlen -= (size_t) (colon + 1 - box);
        box = colon + 1;
    } else if (ieq(box, boxlen, "postmaster")) {
        *kind = PATH_POSTMASTER;
        memcpy(a->local, "postmaster", sizeof "postmaster");
        memcpy(a->full, "postmaster", sizeof "postmaster");
        a->domain[0] = '\0';
        return 0;
    }
    return mailbox(box, boxlen, utf8, a, is_utf8, why);
}

/* ---- ESMTP parameters ------------------------------------------------------------------- */

struct param {
    const char *key;
    size_t keylen;
    const char *val; /* NULL when the parameter has no "=" */
    size_t vallen;
};

/* count_params(): the number of SP-separated words in P..END, counted before any is
 * parsed so that SMTP_PARAMS_MAX bounds the work whatever the words are. */
static size_t count_params(const char *p, const char *end)
{
    size_t n = 0;
    bool in_word = false;

    for (; p < end; p++) {
        if (*p == ' ')
            in_word = false;
        else if (!in_word)
            in_word = true, n++;
    }
    return n;
}

/* next_param(): the next esmtp-param of *P..END (RFC 5321 4.1.2), after at least one SP.
 * Returns 1 with PP filled, 0 at the end, or a negative enum smtp_err. Values are
 * 1*(%d33-60 / %d62-126), and with UTF8 also UTF8-non-ascii (RFC 6531 3.3). */
static int next_param(const char **p, const char *end, bool utf8, struct param *pp,
                      const char **why)
{
    const char *s = *p, *tok, *eq;
    size_t i;

    if (s == end)
        return 0;
    if (*s != ' ') {
        *why = "expected a space before a parameter";
        return SMTP_ERR_SYNTAX;
    }
    while (s < end && *s == ' ')
        s++;
    if (s == end) /* trailing spaces */
        return 0;
    tok = s;
    while (s < end && *s != ' ')
        s++;
    *p = s;

    eq = memchr(tok, '=', (size_t) (s - tok));
    pp->key = tok;
    pp->keylen = (size_t) ((eq != NULL ? eq : s) - tok);
    pp->val = eq != NULL ? eq + 1 : NULL;
    pp->vallen = eq != NULL ? (size_t) (s - eq - 1) : 0;
    /* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
    if (pp->keylen == 0 || !is_alnum(pp->key[0])) {
        *why = "invalid parameter keyword";
        return SMTP_ERR_SYNTAX;
    }
    for (i = 1; i < pp->keylen; i++) {
        if (!is_alnum(pp->key[i]) && pp->key[i] != '-') {
            *why = "invalid parameter keyword";
            return SMTP_ERR_SYNTAX;
        }
    }
    if (pp->val == NULL)
        return 1;
    if (pp->vallen == 0) {
        *why = "empty parameter value";
        return SMTP_ERR_SYNTAX;
    }
    for (i = 0; i < pp->vallen; i++) {
        unsigned char c = (unsigned char) pp->val[i];

        if (c >= 0x80 && utf8)
            continue; /* checked as a whole below */
        if (c < 33 || c > 126 || c == '=') {
            *why = "invalid character in parameter value";
            return SMTP_ERR_SYNTAX;
        }
    }
    if (utf8 && has_8bit(pp->val, pp->vallen) && !utf8_text(pp->val, pp->vallen)) {
        *why = "invalid UTF-8 in parameter value";
        return SMTP_ERR_SYNTAX;
    }
    return 1;
}

/* need_value()/no_value(): whether a known parameter has the "=" it must or must not have. */
static int need_value(const struct param *pp, const char **why)
{
    if (pp->val == NULL) {
        *why = "parameter needs a value";
        return SMTP_ERR_SYNTAX;
    }
    return 0;
}

/* once(): marks BIT in *SEEN; a second occurrence is a syntax error. */
static int once(unsigned *seen, unsigned bit, const char **why)
{
    if (*seen & bit) {
        *why = "duplicate parameter";
        return SMTP_ERR_SYNTAX;
    }
    *seen |= bit;
    return 0;
}

/* dsn_text(): decoded ENVID / ORCPT octets are "printable (graphic and white space)
 * characters from the US-ASCII repertoire" (RFC 3461 4.2, 4.4). */
static bool dsn_text(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char) s[i];

        if (c != '\t' && (c < 0x20 || c > 0x7e))
            return false;
    }
    return true;
}

static int p_size(const struct param *pp, struct smtp_mail *out, const char **why)
{
    uint64_t v = 0;
    size_t i;

    /* size-value ::= 1*20DIGIT (RFC 1870 5); larger than we can count is "too big". */
    if (pp->vallen > 20) {
        *why = "invalid SIZE value";
        return SMTP_ERR_SYNTAX;
    }
    for (i = 0; i < pp->vallen; i++) {
        unsigned d = (unsigned) (pp->val[i] - '0');

        if (!is_digit(pp->val[i])) {
            *why = "invalid SIZE value";
            return SMTP_ERR_SYNTAX;
        }
        v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d; /* saturates */
    }
    out->size = v;
    return 0;
}

static int p_body(const struct param *pp, struct smtp_mail *out, const char **why)
{
    if (ieq(pp->val, pp->vallen, "7BIT"))
        out->body = SMTP_BODY_7BIT;
    else if (ieq(pp->val, pp->vallen, "8BITMIME"))
        out->body = SMTP_BODY_8BITMIME;
    else if (ieq(pp->val, pp->vallen, "BINARYMIME"))
        out->body = SMTP_BODY_BINARYMIME;
    else {
        *why = "unsupported BODY type";
        return SMTP_ERR_PARAM;
    }
    return 0;
}

static int p_ret(const struct param *pp, struct smtp_mail *out, const char **why)
{
    if (ieq(pp->val, pp->vallen, "FULL"))
        out->ret = SMTP_RET_FULL;
    else if (ieq(pp->val, pp->vallen, "HDRS"))
        out->ret = SMTP_RET_HDRS;
    else {
        *why = "RET must be FULL or HDRS";
        return SMTP_ERR_SYNTAX;
    }
    return 0;
}

static int p_envid(const struct param *pp, struct smtp_mail *out, const char **why)
{
    char dec[SMTP_ENVID_MAX + 1];
    size_t declen;

    if (pp->vallen > SMTP_ENVID_MAX) {
        *why = "ENVID too long";
        return SMTP_ERR_SYNTAX;
    }
    if (smtp_xtext_decode(pp->val, pp->vallen, dec, sizeof dec, &declen) != 0 ||
        !dsn_text(dec, declen)) {
        *why = "invalid ENVID value";
        return SMTP_ERR_SYNTAX;
    }
    memcpy(out->envid, pp->val, pp->vallen);
    out->envid[pp->vallen] = '\0';
    return 0;
}

static int p_auth(const struct param *pp, struct smtp_mail *out, const char **why)
{
    size_t declen;

    /* RFC 4954 5: AUTH=xtext of a Mailbox, or "<>" when the identity is unknown. The
     * server may ignore it, so it is kept but not judged beyond being text. */
    if (pp->vallen > SMTP_AUTHPARAM_MAX ||
        smtp_xtext_decode(pp->val, pp->vallen, out->auth, sizeof out->auth, &declen) != 0 ||
        memchr(out->auth, ' ', declen) != NULL || !utf8_text(out->auth, declen)) {
        out->auth[0] = '\0';
        *why = "invalid AUTH value";
        return SMTP_ERR_SYNTAX;
    }
    return 0;
}

static int p_notify(const struct param *pp, struct smtp_rcpt *out, const char **why)
{
    static const struct {
        const char *name;
        unsigned bit;
    } kw[] = {{"NEVER", SMTP_NOTIFY_NEVER},
              {"SUCCESS", SMTP_NOTIFY_SUCCESS},
              {"FAILURE", SMTP_NOTIFY_FAILURE},
              {"DELAY", SMTP_NOTIFY_DELAY}};
    const char *s = pp->val, *end = pp->val + pp->vallen, *comma;
    unsigned bits = 0, bit;
    size_t k;

    /* notify-esmtp-value = "NEVER" / 1#notify-list-element (RFC 3461 4.1); a keyword
     * repeated in the list is harmless and accepted. */
    for (;;) {
        comma = memchr(s, ',', (size_t) (end - s));
        if (comma == NULL)
            comma = end;
        bit = 0;
        for (k = 0; k < sizeof kw / sizeof kw[0]; k++)
            if (ieq(s, (size_t) (comma - s), kw[k].name))
                bit = kw[k].bit;
        if (bit == 0) {
            *why = "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY";
            return SMTP_ERR_SYNTAX;
        }
        bits |= bit;
        if (comma == end)
            break;
        s = comma + 1;
    }
    if ((bits & SMTP_NOTIFY_NEVER) && bits != SMTP_NOTIFY_NEVER) {
        *why = "NOTIFY=NEVER cannot be combined";
        return SMTP_ERR_SYNTAX;
    }
    out->notify = bits;
    return 0;
}

static int p_orcpt(const struct param *pp, struct smtp_rcpt *out, const char **why)
{
    char dec[SMTP_ORCPT_MAX + 1];
    const char *semi;
    size_t tlen, declen, i;

    if (pp->vallen > SMTP_ORCPT_MAX) {
        *why = "ORCPT too long";
        return SMTP_ERR_SYNTAX;
    }
    /* original-recipient-address = addr-type ";" xtext (RFC 3461 4.2); the registered
     * address types (rfc822, utf-8, x400, unknown) are letters, digits and hyphens. */
    semi = memchr(pp->val, ';', pp->vallen);
    tlen = semi != NULL ? (size_t) (semi - pp->val) : 0;
    if (semi == NULL || tlen == 0 || tlen + 1 == pp->vallen) {
        *why = "ORCPT must be addr-type;address";
        return SMTP_ERR_SYNTAX;
    }
    for (i = 0; i < tlen; i++) {
        if (!is_alnum(pp->val[i]) && pp->val[i] != '-') {
            *why = "invalid ORCPT address type";
            return SMTP_ERR_SYNTAX;
        }
    }
    /* "utf-8" (RFC 6533 3) has its own encoding with \x{...}, passed through as is. */
    if (!ieq(pp->val, tlen, "utf-8") &&
        (smtp_xtext_decode(semi + 1, pp->vallen - tlen - 1, dec, sizeof dec, &declen) != 0 ||
         !dsn_text(dec, declen))) {
        *why = "invalid ORCPT address";
        return SMTP_ERR_SYNTAX;
    }
    memcpy(out->orcpt, pp->val, pp->vallen);
    out->orcpt[pp->vallen] = '\0';
    out->orcpt_type_len = tlen;
    return 0;
}

/* mail_param()/rcpt_param(): one parameter into OUT. */
static int mail_param(const struct param *pp, struct smtp_mail *out, const char **why)
{
    int rc;

    if (ieq(pp->key, pp->keylen, "SIZE")) {
        if ((rc = once(&out->params, SMTP_P_SIZE, why)) || (rc = need_value(pp, why)))
            return rc;
        return p_size(pp, out, why);
    }
    if (ieq(pp->key, pp->keylen, "BODY")) {
        if ((rc = once(&out->params, SMTP_P_BODY, why)) || (rc = need_value(pp, why)))
            return rc;
        return p_body(pp, out, why);
    }
    if (ieq(pp->key, pp->keylen, "SMTPUTF8")) {
        if ((rc = once(&out->params, SMTP_P_SMTPUTF8, why)))
            return rc;
        if (pp->val != NULL) {
            *why = "SMTPUTF8 takes no value";
            return SMTP_ERR_SYNTAX;
        }
        return 0;
    }
    if (ieq(pp->key, pp->keylen, "RET")) {
        if ((rc = once(&out->params, SMTP_P_RET, why)) || (rc = need_value(pp, why)))
            return rc;
        return p_ret(pp, out, why);
    }
    if (ieq(pp->key, pp->keylen, "ENVID")) {
        if ((rc = once(&out->params, SMTP_P_ENVID, why)) || (rc = need_value(pp, why)))
            return rc;
        return p_envid(pp, out, why);
    }
    if (ieq(pp->key, pp->keylen, "AUTH")) {
        if ((rc = once(&out->params, SMTP_P_AUTH, why)) || (rc = need_value(pp, why)))
            return rc;
        return p_auth(pp, out, why);
    }
    *why = "unrecognized MAIL parameter";
    return SMTP_ERR_PARAM;
}

static int rcpt_param(const struct param *pp, struct smtp_rcpt *out, const char **why)
{
    int rc;

    if (ieq(pp->key, pp->keylen, "NOTIFY")) {
        if ((rc = once(&out->params, SMTP_P_NOTIFY, why)) || (rc = need_value(pp, why)))
            return rc;
        return p_notify(pp, out, why);
    }
    if (ieq(pp->key, pp->keylen, "ORCPT")) {
        if ((rc = once(&out->params, SMTP_P_ORCPT, why)) || (rc = need_value(pp, why)))
            return rc;
        return p_orcpt(pp, out, why);
    }
    *why = "unrecognized RCPT parameter";
    return SMTP_ERR_PARAM;
}

/* ---- MAIL and RCPT ---------------------------------------------------------------------- */

int smtp_parse_mail(const char *arg, size_t len, struct smtp_mail *out, const char **why)
{
    enum path_kind kind;
    struct param pp;
    const char *p, *end;
    size_t used = 0;
    int rc;

    memset(out, 0, sizeof *out);
    *why = "";
    if (len > SMTP_CMD_LINE_MAX) {
        *why = "command too long";
        return SMTP_ERR_TOOLONG;
    }
    if (memchr(arg, '\0', len) != NULL) {
        *why = "NUL in command";
        return SMTP_ERR_SYNTAX;
    }
    end = arg + len;
    /* UTF-8 is allowed in the path here and refused below without SMTPUTF8, which may be
     * given after the path. */
    rc = path(arg, len, true, &out->addr, &kind, &out->utf8, &used, why);
    if (rc == 0 && kind == PATH_POSTMASTER) {
        *why = "invalid address"; /* "<postmaster>" is a RCPT form only */
        rc = SMTP_ERR_ADDR;
    }
    if (rc != 0)
        goto err;
    out->null_path = kind == PATH_NULL;
    /* RFC 6531 3.3: esmtp-value =/ UTF8-non-ascii; no MAIL parameter we know takes it, so
     * each parameter's own check refuses it; unknown parameters are refused anyway. */
    if (count_params(arg + used, end) > SMTP_PARAMS_MAX) {
        *why = "too many parameters";
        rc = SMTP_ERR_SYNTAX;
        goto err;
    }
    for (p = arg + used; (rc = next_param(&p, end, true, &pp, why)) == 1;) {
        if ((rc = mail_param(&pp, out, why)) != 0)
            goto err;
    }
    if (rc < 0)
        goto err;
    if (!(out->params & SMTP_P_SMTPUTF8) && has_8bit(arg, used)) { /* mailbox or route */
        *why = "non-ASCII address requires SMTPUTF8";
        rc = SMTP_ERR_UTF8;
        goto err;
    }
    return 0;

err:
    memset(out, 0, sizeof *out);
    return rc;
}

int smtp_parse_rcpt(const char *arg, size_t len, bool smtputf8, struct smtp_rcpt *out,
                    const char **why)
{
    enum path_kind kind;
    struct param pp;
    const char *p, *end;
    size_t used = 0;
    int rc;

    memset(out, 0, sizeof *out);
    *why = "";
    if (len > SMTP_CMD_LINE_MAX) {
        *why = "command too long";
        return SMTP_ERR_TOOLONG;
    }
    if (memchr(arg, '\0', len) != NULL) {
        *why = "NUL in command";
        return SMTP_ERR_SYNTAX;
    }
    end = arg + len;
    rc = path(arg, len, smtputf8, &out->addr, &kind, &out->utf8, &used, why);
    if (rc == 0 && kind == PATH_NULL) {
        *why = "null recipient";
        rc = SMTP_ERR_ADDR;
    }
    if (rc != 0)
        goto err;
    out->postmaster = kind == PATH_POSTMASTER;
    if (count_params(arg + used, end) > SMTP_PARAMS_MAX) {
        *why = "too many parameters";
        rc = SMTP_ERR_SYNTAX;
        goto err;
    }
    for (p = arg + used; (rc = next_param(&p, end, smtputf8, &pp, why)) == 1;) {
        if ((rc = rcpt_param(&pp, out, why)) != 0)
            goto err;
    }
    if (rc < 0)
        goto err;
    return 0;

err:
    memset(out, 0, sizeof *out);
    return rc;
}

/* ---- BDAT and AUTH ---------------------------------------------------------------------- */

int smtp_parse_bdat(const char *arg, size_t len, uint64_t *size, bool *last)
{
    uint64_t v = 0;
    size_t i = 0;

    *size = 0;
    *last = false;
    /* chunk-size ::= 1*DIGIT; end-marker ::= "LAST" (RFC 3030 2) */
    for (; i < len && is_digit(arg[i]); i++) {
        unsigned d = (unsigned) (arg[i] - '0');

        if (v > (UINT64_MAX - d) / 10)
            return SMTP_ERR_SYNTAX;
        v = v * 10 + d;
    }
    if (i == 0)
        return SMTP_ERR_SYNTAX;
    if (i < len && arg[i] != ' ')
        return SMTP_ERR_SYNTAX;
    while (i < len && arg[i] == ' ')
        i++;
    if (i + 4 <= len && ieq(arg + i, 4, "LAST")) {
        *last = true;
        for (i += 4; i < len && arg[i] == ' '; i++)
            ;
    }
    if (i != len) {
        *last = false;
        return SMTP_ERR_SYNTAX;
    }
    *size = v;
    return 0;
}

int smtp_parse_auth(const char *arg, size_t len, struct smtp_auth *out)
{
    size_t i, j;

    memset(out, 0, sizeof *out);
    out->ir = arg + len;
    /* sasl-mech = 1*20mech-char; mech-char = UPPER-ALPHA / DIGIT / HYPHEN / UNDERSCORE
     * (RFC 4422 3.1); clients send lower case too. */
    for (i = 0; i < len && arg[i] != ' '; i++) {
        if (i == SMTP_SASL_MECH_MAX || !(is_alnum(arg[i]) || arg[i] == '-' || arg[i] == '_'))
            goto err;
        out->mech[i] = to_upper(arg[i]);
    }
    if (i == 0)
        goto err;
    while (i < len && arg[i] == ' ')
        i++;
    if (i == len)
        return 0;
    for (j = i; j < len && arg[j] != ' '; j++)
        ;
    out->has_ir = true;
    out->ir = arg + i;
    out->irlen = j - i;
    if (out->irlen == 1 && arg[i] == '=') /* RFC 4954 4: "=" is an empty response */
        out->irlen = 0;
    while (j < len && arg[j] == ' ')
        j++;
    if (j != len)
        goto err;
    return 0;

err:
    memset(out, 0, sizeof *out);
    out->ir = arg + len;
    return SMTP_ERR_SYNTAX;
}

/* ---- xtext ------------------------------------------------------------------------------ */

/* xdigit(): value of an upper-case hex digit (xtext hexchar), -1 otherwise. */
static int xdigit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int smtp_xtext_decode(const char *in, size_t n, char *out, size_t outsize, size_t *outlen)
{
    size_t i = 0, o = 0;
    int hi, lo;
    unsigned char c;

    if (outsize == 0)
        return -1;
    while (i < n) {
        c = (unsigned char) in[i];
        if (c == '+') {
            if (n - i < 3 || (hi = xdigit(in[i + 1])) < 0 || (lo = xdigit(in[i + 2])) < 0)
                return -1;
            c = (unsigned char) (hi << 4 | lo);
            if (c == 0)
                return -1;
            i += 3;
        } else if (c < '!' || c > '~' || c == '=') {
            return -1;
        } else {
            i++;
        }
        if (o + 1 >= outsize)
            return -1;
        out[o++] = (char) c;
    }
    out[o] = '\0';
    if (outlen != NULL)
        *outlen = o;
    return 0;
}

int smtp_xtext_encode(const uint8_t *in, size_t n, char *out, size_t outsize, size_t *outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        uint8_t c = in[i];

        if (c >= '!' && c <= '~' && c != '+' && c != '=') {
            if (o + 2 > outsize)
                return -1;
            out[o++] = (char) c;
        } else {
            if (o + 4 > outsize)
                return -1;
            out[o++] = '+';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    if (o + 1 > outsize)
        return -1;
    out[o] = '\0';
    if (outlen != NULL)
        *outlen = o;
    return 0;
}

/* ---- base64 ----------------------------------------------------------------------------- */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int smtp_base64_decode(const char *in, size_t n, uint8_t *out, size_t outmax, size_t *outlen)
{
    size_t i, o = 0, k;
    int v[4];

    if (outlen != NULL)
        *outlen = 0;
    if (n % 4 != 0)
        return -1;
    for (i = 0; i < n; i += 4) {
        bool last = i + 4 == n;

        /* Quantum with "=" padding: "xx==" (1 octet) or "xxx=" (2), final quantum only. */
        k = 3;
        if (last && in[i + 3] == '=')
            k = in[i + 2] == '=' ? 1 : 2;
        for (size_t j = 0; j < 4; j++) {
            v[j] = j <= k ? b64_value(in[i + j]) : 0;
            if (j > k && in[i + j] != '=')
                return -1;
            if (v[j] < 0)
                return -1;
        }
        /* RFC 4648 3.5: pad bits must be zero, or one output would have two encodings. */
        if ((k == 1 && (v[1] & 0x0f) != 0) || (k == 2 && (v[2] & 0x03) != 0))
            return -1;
        if (outmax - o < k) /* o <= outmax always */
            return -1;
        out[o++] = (uint8_t) (v[0] << 2 | v[1] >> 4);
        if (k > 1)
            out[o++] = (uint8_t) ((v[1] & 0x0f) << 4 | v[2] >> 2);
        if (k > 2)
            out[o++] = (uint8_t) ((v[2] & 0x03) << 6 | v[3]);
    }
    if (outlen != NULL)
        *outlen = o;
    return 0;
}

int smtp_base64_encode(const uint8_t *in, size_t n, char *out, size_t outsize, size_t *outlen)
{
    size_t i, o = 0;

    if (n > (SIZE_MAX - 1) / 4 * 3 - 2 || outsize < SMTP_BASE64_ENCODED_LEN(n) + 1)
        return -1;
    for (i = 0; i + 3 <= n; i += 3) {
        uint32_t w = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8 | in[i + 2];

        out[o++] = b64_alphabet[w >> 18];
        out[o++] = b64_alphabet[(w >> 12) & 63];
        out[o++] = b64_alphabet[(w >> 6) & 63];
        out[o++] = b64_alphabet[w & 63];
    }
    if (n - i == 1) {
        out[o++] = b64_alphabet[in[i] >> 2];
        out[o++] = b64_alphabet[(in[i] & 3) << 4];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        out[o++] = b64_alphabet[in[i] >> 2];
        out[o++] = b64_alphabet[(in[i] & 3) << 4 | in[i + 1] >> 4];
        out[o++] = b64_alphabet[(in[i + 1] & 15) << 2];
        out[o++] = '=';
    }
    out[o] = '\0';
    if (outlen != NULL)
        *outlen = o;
    return 0;
}

/* ---- SASL PLAIN ------------------------------------------------------------------------- */

/* field(): copies a PLAIN field of LEN octets (<= MAX, valid UTF-8) as a C string. */
static bool field(const uint8_t *s, size_t len, size_t max, char *out)
{
    if (len > max || !smtp_utf8_valid(s, len))
        return false;
    memcpy(out, s, len);
    out[len] = '\0';
    return true;
}

int smtp_sasl_plain(const uint8_t *msg, size_t n, struct smtp_plain *out)
{
    const uint8_t *nul1, *nul2, *end = msg + n;

    memset(out, 0, sizeof *out);
    /* message = [authzid] UTF8NUL authcid UTF8NUL passwd; authcid and passwd are 1*SAFE,
     * SAFE excluding NUL (RFC 4616 2): exactly two NULs. */
    if (n == 0 || (nul1 = memchr(msg, 0, n)) == NULL ||
        (nul2 = memchr(nul1 + 1, 0, (size_t) (end - nul1 - 1))) == NULL ||
        memchr(nul2 + 1, 0, (size_t) (end - nul2 - 1)) != NULL)
        goto err;
    if (nul2 == nul1 + 1 || nul2 + 1 == end) /* empty authcid or passwd */
        goto err;
    if (!field(msg, (size_t) (nul1 - msg), SMTP_PLAIN_ID_MAX, out->authzid) ||
        !field(nul1 + 1, (size_t) (nul2 - nul1 - 1), SMTP_PLAIN_ID_MAX, out->authcid) ||
        !field(nul2 + 1, (size_t) (end - nul2 - 1), SMTP_PLAIN_PASSWD_MAX, out->passwd))
        goto err;
    return 0;

err:
    explicit_bzero(out, sizeof *out);
    return -1;
}
