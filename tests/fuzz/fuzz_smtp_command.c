/*
 * tests/fuzz/fuzz_smtp_command.c
 * libFuzzer target for proxy/smtp/smtp_parse.c. Each line of the input (split at LF, one
 * CR before it dropped, copied to a buffer of its exact size so that ASan sees any
 * over-read) goes through smtp_parse_command() and, by verb, the MAIL/RCPT/BDAT/AUTH
 * parsers; a successful parse is written back and parsed again to the same result. Every
 * line is also tried as base64 (decode, encode, decode: strict base64 has one encoding)
 * and as xtext (decode, encode, decode), and decoded base64 as a SASL PLAIN message.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_parse.h"
#include "fuzz_check.h"

static void check_why(int rc, const char *why)
{
    FUZZ_CHECK(rc <= 0 && rc >= SMTP_ERR_UTF8);
    FUZZ_CHECK(why != NULL);
    FUZZ_CHECK(rc == 0 || why[0] != '\0');
}

static void check_addr(const struct addr *a)
{
    size_t ll = strnlen(a->local, sizeof a->local);
    size_t dl = strnlen(a->domain, sizeof a->domain);
    size_t fl = strnlen(a->full, sizeof a->full);

    FUZZ_CHECK(ll <= ADDR_LOCAL_MAX && dl <= ADDR_DOMAIN_MAX && fl <= ADDR_MAX);
    FUZZ_CHECK(fl + 2 <= SMTP_PATH_MAX);
    FUZZ_CHECK(smtp_utf8_valid((const uint8_t *) a->full, fl));
    for (size_t i = 0; i < fl; i++)
        FUZZ_CHECK(!(a->full[i] >= 'A' && a->full[i] <= 'Z'));
}

/* put(): appends PRE, S and POST to BUF[*N..SIZE) (no format strings from variables). */
static void put(char *buf, size_t size, size_t *n, const char *pre, const char *s, const char *post)
{
    int k = snprintf(buf + *n, size - *n, "%s%s%s", pre, s, post);

    FUZZ_CHECK(k >= 0 && (size_t) k < size - *n);
    *n += (size_t) k;
}

static bool same_addr(const struct addr *a, const struct addr *b)
{
    return strcmp(a->local, b->local) == 0 && strcmp(a->domain, b->domain) == 0 &&
           strcmp(a->full, b->full) == 0;
}

static void mail(const char *arg, size_t len)
{
    static const char *const body[] = {"", "7BIT", "8BITMIME", "BINARYMIME"};
    static const char *const ret[] = {"", "FULL", "HDRS"};
    struct smtp_mail m, again;
    const char *why = NULL;
    char buf[4096], num[32], enc[3 * SMTP_AUTHPARAM_MAX + 1];
    size_t n = 0;
    int rc = smtp_parse_mail(arg, len, &m, &why);

    check_why(rc, why);
    if (rc != 0) {
        FUZZ_CHECK(m.addr.full[0] == '\0' && m.params == 0);
        return;
    }
    check_addr(&m.addr);
    FUZZ_CHECK(m.null_path == (m.addr.full[0] == '\0'));
    FUZZ_CHECK(!m.utf8 || (m.params & SMTP_P_SMTPUTF8));
    if (!m.utf8 && !m.null_path) {
        struct addr a;

        FUZZ_CHECK(addr_parse(m.addr.full, &a) == 0 && same_addr(&a, &m.addr));
    }
    FUZZ_CHECK(strlen(m.envid) <= SMTP_ENVID_MAX && strlen(m.auth) <= SMTP_AUTHPARAM_MAX);

    /* Write it back and parse again: the same result. */
    put(buf, sizeof buf, &n, "<", m.addr.full, ">");
    if (m.params & SMTP_P_SIZE) {
        snprintf(num, sizeof num, "%" PRIu64, m.size);
        put(buf, sizeof buf, &n, " SIZE=", num, "");
    }
    if (m.params & SMTP_P_BODY)
        put(buf, sizeof buf, &n, " BODY=", body[m.body], "");
    if (m.params & SMTP_P_SMTPUTF8)
        put(buf, sizeof buf, &n, "", " SMTPUTF8", "");
    if (m.params & SMTP_P_RET)
        put(buf, sizeof buf, &n, " RET=", ret[m.ret], "");
    if (m.params & SMTP_P_ENVID)
        put(buf, sizeof buf, &n, " ENVID=", m.envid, "");
    if (m.params & SMTP_P_AUTH) {
        FUZZ_CHECK(smtp_xtext_encode((const uint8_t *) m.auth, strlen(m.auth), enc, sizeof enc,
                                     NULL) == 0);
        put(buf, sizeof buf, &n, " AUTH=", enc, "");
    }
    rc = smtp_parse_mail(buf, n, &again, &why);
    if (rc != 0) {
        fprintf(stderr, "re-parse of \"%s\": %s\n", buf, why);
        abort();
    }
    FUZZ_CHECK(same_addr(&m.addr, &again.addr));
    FUZZ_CHECK(m.null_path == again.null_path && m.utf8 == again.utf8);
    FUZZ_CHECK(m.params == again.params && m.size == again.size && m.body == again.body &&
               m.ret == again.ret);
    FUZZ_CHECK(strcmp(m.envid, again.envid) == 0 && strcmp(m.auth, again.auth) == 0);
}

static void rcpt(const char *arg, size_t len)
{
    struct smtp_rcpt r, u, again;
    const char *why = NULL;
    char buf[4096];
    size_t n = 0;
    int rc = smtp_parse_rcpt(arg, len, false, &r, &why);
    int rcu;

    check_why(rc, why);
    rcu = smtp_parse_rcpt(arg, len, true, &u, &why);
    check_why(rcu, why);
    /* Allowing UTF-8 never refuses what ASCII-only accepted, and changes nothing in it. */
    if (rc == 0) {
        FUZZ_CHECK(rcu == 0);
        FUZZ_CHECK(same_addr(&r.addr, &u.addr) && r.params == u.params && r.notify == u.notify &&
                   strcmp(r.orcpt, u.orcpt) == 0);
    } else {
        FUZZ_CHECK(r.addr.full[0] == '\0' && r.params == 0);
    }
    if (rcu != 0)
        return;
    check_addr(&u.addr);
    FUZZ_CHECK(u.addr.full[0] != '\0');
    FUZZ_CHECK(!u.postmaster || strcmp(u.addr.full, "postmaster") == 0);
    FUZZ_CHECK(!(u.notify & SMTP_NOTIFY_NEVER) || u.notify == SMTP_NOTIFY_NEVER);
    FUZZ_CHECK((u.notify != 0) == ((u.params & SMTP_P_NOTIFY) != 0));
    if (u.params & SMTP_P_ORCPT)
        FUZZ_CHECK(u.orcpt_type_len > 0 && u.orcpt[u.orcpt_type_len] == ';');

    put(buf, sizeof buf, &n, "<", u.addr.full, ">");
    if (u.params & SMTP_P_NOTIFY) {
        char list[64];

        snprintf(list, sizeof list, "%s%s%s%s", u.notify & SMTP_NOTIFY_NEVER ? "NEVER," : "",
                 u.notify & SMTP_NOTIFY_SUCCESS ? "SUCCESS," : "",
                 u.notify & SMTP_NOTIFY_FAILURE ? "FAILURE," : "",
                 u.notify & SMTP_NOTIFY_DELAY ? "DELAY," : "");
        list[strlen(list) - 1] = '\0'; /* the last comma */
        put(buf, sizeof buf, &n, " NOTIFY=", list, "");
    }
    if (u.params & SMTP_P_ORCPT)
        put(buf, sizeof buf, &n, " ORCPT=", u.orcpt, "");
    rc = smtp_parse_rcpt(buf, n, true, &again, &why);
    if (rc != 0) {
        fprintf(stderr, "re-parse of \"%.*s\": %s\n", (int) n, buf, why);
        abort();
    }
    FUZZ_CHECK(same_addr(&u.addr, &again.addr) && u.postmaster == again.postmaster);
    FUZZ_CHECK(u.params == again.params && u.notify == again.notify);
    FUZZ_CHECK(strcmp(u.orcpt, again.orcpt) == 0 && u.orcpt_type_len == again.orcpt_type_len);
}

static void bdat(const char *arg, size_t len)
{
    uint64_t size, size2;
    bool last, last2;
    char buf[64];
    int n;

    if (smtp_parse_bdat(arg, len, &size, &last) != 0) {
        FUZZ_CHECK(size == 0 && !last);
        return;
    }
    n = snprintf(buf, sizeof buf, "%" PRIu64 "%s", size, last ? " LAST" : "");
    FUZZ_CHECK(smtp_parse_bdat(buf, (size_t) n, &size2, &last2) == 0);
    FUZZ_CHECK(size == size2 && last == last2);
}

static void plain(const uint8_t *msg, size_t n)
{
    struct smtp_plain p;

    if (smtp_sasl_plain(msg, n, &p) != 0) {
        FUZZ_CHECK(p.authcid[0] == '\0' && p.passwd[0] == '\0');
        return;
    }
    FUZZ_CHECK(p.authcid[0] != '\0' && p.passwd[0] != '\0');
    FUZZ_CHECK(strlen(p.authzid) + strlen(p.authcid) + strlen(p.passwd) + 2 == n);
}

/* base64(): strict decoding means decode(x) == d implies encode(d) == x. */
static void base64(const char *s, size_t n)
{
    size_t max = SMTP_BASE64_DECODED_MAX(n), dn, en, dn2;
    uint8_t *dec = malloc(max + 1), *dec2;
    char *enc;

    FUZZ_CHECK(dec != NULL);
    if (smtp_base64_decode(s, n, dec, max, &dn) != 0) {
        free(dec);
        return;
    }
    FUZZ_CHECK(dn <= max);
    enc = malloc(SMTP_BASE64_ENCODED_LEN(dn) + 1);
    dec2 = malloc(dn + 1);
    FUZZ_CHECK(enc != NULL && dec2 != NULL);
    FUZZ_CHECK(smtp_base64_encode(dec, dn, enc, SMTP_BASE64_ENCODED_LEN(dn) + 1, &en) == 0);
    FUZZ_CHECK(en == n && memcmp(enc, s, n) == 0);
    FUZZ_CHECK(smtp_base64_decode(enc, en, dec2, dn, &dn2) == 0);
    FUZZ_CHECK(dn2 == dn && memcmp(dec, dec2, dn) == 0);
    plain(dec, dn);
    free(dec);
    free(dec2);
    free(enc);
}

static void xtext(const char *s, size_t n)
{
    char *dec = malloc(n + 1), *enc, *dec2;
    size_t dn, en, dn2;

    FUZZ_CHECK(dec != NULL);
    if (smtp_xtext_decode(s, n, dec, n + 1, &dn) != 0) {
        free(dec);
        return;
    }
    FUZZ_CHECK(dn <= n && dec[dn] == '\0' && strlen(dec) == dn);
    enc = malloc(3 * dn + 1);
    dec2 = malloc(dn + 1);
    FUZZ_CHECK(enc != NULL && dec2 != NULL);
    FUZZ_CHECK(smtp_xtext_encode((const uint8_t *) dec, dn, enc, 3 * dn + 1, &en) == 0);
    FUZZ_CHECK(en <= n); /* the encoder never uses more than the input did */
    FUZZ_CHECK(smtp_xtext_decode(enc, en, dec2, dn + 1, &dn2) == 0);
    FUZZ_CHECK(dn2 == dn && memcmp(dec, dec2, dn) == 0);
    free(dec);
    free(dec2);
    free(enc);
}

static void line(const char *s, size_t n)
{
    struct smtp_cmd c;
    struct smtp_auth a;
    int rc = smtp_parse_command(s, n, &c);

    FUZZ_CHECK(rc == 0 || rc == SMTP_ERR_SYNTAX || rc == SMTP_ERR_TOOLONG);
    FUZZ_CHECK(c.arg != NULL && c.arg >= s && c.arglen <= n && c.arg + c.arglen <= s + n);
    FUZZ_CHECK(rc != SMTP_ERR_TOOLONG || n + 2 > SMTP_CMD_LINE_MAX);
    if (rc == 0) {
        FUZZ_CHECK(memchr(s, '\0', n) == NULL);
        switch (c.verb) {
        case SMTP_V_MAIL:
            mail(c.arg, c.arglen);
            break;
        case SMTP_V_RCPT:
            rcpt(c.arg, c.arglen);
            break;
        case SMTP_V_BDAT:
            bdat(c.arg, c.arglen);
            break;
        case SMTP_V_AUTH:
            if (smtp_parse_auth(c.arg, c.arglen, &a) == 0) {
                size_t ml = strnlen(a.mech, sizeof a.mech);

                FUZZ_CHECK(ml > 0 && ml <= SMTP_SASL_MECH_MAX);
                FUZZ_CHECK(a.ir >= c.arg && a.ir + a.irlen <= c.arg + c.arglen);
                if (a.has_ir && a.irlen > 0)
                    base64(a.ir, a.irlen);
            }
            break;
        default:
            break;
        }
    }
    /* The argument parsers on their own, without the verb in front. */
    if (n > 0 && s[0] == '<') {
        mail(s, n);
        rcpt(s, n);
    }
    base64(s, n);
    xtext(s, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *) data, *end = p + size;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t) (end - p));
        size_t n = (size_t) ((nl != NULL ? nl : end) - p);
        char *copy;

        if (n > 0 && p[n - 1] == '\r')
            n--;
        copy = malloc(n + 1); /* + 1: malloc(0) may return NULL */
        FUZZ_CHECK(copy != NULL);
        memcpy(copy, p, n);
        line(copy, n);
        free(copy);
        p = nl != NULL ? nl + 1 : end;
    }
    return 0;
}
