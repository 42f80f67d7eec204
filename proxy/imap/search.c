/*
 * proxy/imap/search.c
 * SEARCH and UID SEARCH (RFC 3501 6.4.4, RFC 9051 6.4.4) with every RFC 3501 key, nesting,
 * OR/NOT, sequence and UID sets, dates, sizes, header and body/text substrings, MODSEQ
 * (RFC 7162) and ESEARCH results (RFC 4731: RETURN MIN MAX COUNT ALL).
 *
 * Substring matching is case-insensitive for ASCII letters and exact otherwise (UTF-8
 * compared byte for byte). BODY and TEXT look into the decoded content of text parts
 * (base64 and quoted-printable undone); headers are matched on their unfolded value with
 * RFC 2047 encoded words decoded when they are UTF-8, US-ASCII or ISO-8859-1.
 * SECURITY: the key tree is bounded by the parser's depth and argument limits.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "body_store.h"
#include "imap.h"
#include "keys.h"
#include "log.h"
#include "model.h"

#define SEARCH_DEPTH_MAX 32

enum sk {
    SK_ALL,
    SK_FLAG,
    SK_UNFLAG,
    SK_NEW,
    SK_OLD,
    SK_RECENT,
    SK_BEFORE,
    SK_ON,
    SK_SINCE,
    SK_SENTBEFORE,
    SK_SENTON,
    SK_SENTSINCE,
    SK_LARGER,
    SK_SMALLER,
    SK_UIDSET,
    SK_SEQSET,
    SK_HEADER,
    SK_BODY,
    SK_TEXT,
    SK_NOT,
    SK_OR,
    SK_AND,
    SK_MODSEQ,
};

struct skey {
    enum sk type;
    const char *str; /* flag, header name, or needle (arena of the command) */
    size_t len;
    const char *str2; /* header value */
    size_t len2;
    uint64_t num; /* size, date (unix day start), modseq */
    struct imap_seqset set;
    bool has_set;
    struct skey **kids;
    size_t nkids;
};

/* One message being matched, with what was loaded for it so far. */
struct cand {
    struct imap_sess *s;
    uint32_t msn, uid;
    Tern__MessageRec *m;
    char *body;
    size_t blen;
    bool body_tried;
    struct mime_msg mm;
    bool mime_ok, mime_tried;
};

static void skey_free(struct skey *k)
{
    if (k == NULL)
        return;
    for (size_t i = 0; i < k->nkids; i++)
        skey_free(k->kids[i]);
    free(k->kids);
    if (k->has_set)
        imap_seqset_free(&k->set);
    free(k);
}

static int parse_day(const char *s, uint64_t *out)
{
    static const char *mons = "JanFebMarAprMayJunJulAugSepOctNovDec";
    int d, y;
    char mon[4];
    if (sscanf(s, "%d-%3c-%d", &d, mon, &y) != 3)
        return -1;
    mon[3] = 0;
    const char *p = strcasestr(mons, mon);
    if (p == NULL || (p - mons) % 3 || d < 1 || d > 31 || y < 1900 || y > 9999)
        return -1;
    struct tm tm = {.tm_mday = d, .tm_mon = (int) ((p - mons) / 3), .tm_year = y - 1900};
    time_t t = timegm(&tm);
    *out = t < 0 ? 0 : (uint64_t) t;
    return 0;
}

static const struct {
    const char *name;
    enum sk type;
    const char *flag;
} simple_keys[] = {
    {"ALL", SK_ALL, NULL},
    {"ANSWERED", SK_FLAG, "\\Answered"},
    {"DELETED", SK_FLAG, "\\Deleted"},
    {"DRAFT", SK_FLAG, "\\Draft"},
    {"FLAGGED", SK_FLAG, "\\Flagged"},
    {"SEEN", SK_FLAG, "\\Seen"},
    {"UNANSWERED", SK_UNFLAG, "\\Answered"},
    {"UNDELETED", SK_UNFLAG, "\\Deleted"},
    {"UNDRAFT", SK_UNFLAG, "\\Draft"},
    {"UNFLAGGED", SK_UNFLAG, "\\Flagged"},
    {"UNSEEN", SK_UNFLAG, "\\Seen"},
    {"NEW", SK_NEW, NULL},
    {"OLD", SK_OLD, NULL},
    {"RECENT", SK_RECENT, NULL},
};

static struct skey *parse_key(const struct imap_arg *a, size_t n, size_t *i, int depth,
                              const char **why);

static struct skey *new_key(enum sk t)
{
    struct skey *k = calloc(1, sizeof *k);
    if (k)
        k->type = t;
    return k;
}

static bool add_kid(struct skey *k, struct skey *kid)
{
    struct skey **v = realloc(k->kids, (k->nkids + 1) * sizeof *v);
    if (v == NULL)
        return false;
    k->kids = v;
    k->kids[k->nkids++] = kid;
    return true;
}

/* parse_list(): keys A[*I..N) ANDed together into K. */
static int parse_list(struct skey *k, const struct imap_arg *a, size_t n, size_t *i, int depth,
                      const char **why)
{
    while (*i < n) {
        struct skey *kid = parse_key(a, n, i, depth + 1, why);
        if (kid == NULL || !add_kid(k, kid)) {
            skey_free(kid);
            return -1;
        }
    }
    return 0;
}

static const char *astr(const struct imap_arg *a, size_t *len)
{
    return imap_arg_astring(a, len);
}

static struct skey *parse_key(const struct imap_arg *a, size_t n, size_t *i, int depth,
                              const char **why)
{
    if (depth > SEARCH_DEPTH_MAX) {
        *why = "Search keys nested too deep";
        return NULL;
    }
    if (*i >= n) {
        *why = "Missing search key";
        return NULL;
    }
    const struct imap_arg *x = &a[(*i)++];
    struct skey *k = NULL;
    if (x->type == IMAP_ARG_LIST) {
        k = new_key(SK_AND);
        size_t j = 0;
        if (k == NULL || x->count == 0 || parse_list(k, x->list, x->count, &j, depth, why) != 0) {
            if (k && x->count == 0)
                *why = "Empty search list";
            skey_free(k);
            return NULL;
        }
        return k;
    }
    if (x->type != IMAP_ARG_ATOM) {
        *why = "Bad search key";
        return NULL;
    }
    for (size_t j = 0; j < sizeof simple_keys / sizeof simple_keys[0]; j++)
        if (imap_arg_atom_equals(x, simple_keys[j].name)) {
            k = new_key(simple_keys[j].type);
            if (k) {
                k->str = simple_keys[j].flag;
                k->len = k->str ? strlen(k->str) : 0;
            }
            return k;
        }
    size_t l1, l2;
    const char *s1, *s2;
    if (imap_arg_atom_equals(x, "NOT")) {
        k = new_key(SK_NOT);
        struct skey *kid = k ? parse_key(a, n, i, depth + 1, why) : NULL;
        if (kid == NULL || !add_kid(k, kid)) {
            skey_free(kid);
            skey_free(k);
            return NULL;
        }
        return k;
    }
    if (imap_arg_atom_equals(x, "OR")) {
        k = new_key(SK_OR);
        for (int j = 0; k && j < 2; j++) {
            struct skey *kid = parse_key(a, n, i, depth + 1, why);
            if (kid == NULL || !add_kid(k, kid)) {
                skey_free(kid);
                skey_free(k);
                return NULL;
            }
        }
        return k;
    }
    static const struct {
        const char *name;
        enum sk type;
    } one_arg[] = {
        {"KEYWORD", SK_FLAG},    {"UNKEYWORD", SK_UNFLAG},    {"BEFORE", SK_BEFORE},
        {"ON", SK_ON},           {"SINCE", SK_SINCE},         {"SENTBEFORE", SK_SENTBEFORE},
        {"SENTON", SK_SENTON},   {"SENTSINCE", SK_SENTSINCE}, {"LARGER", SK_LARGER},
        {"SMALLER", SK_SMALLER}, {"UID", SK_UIDSET},          {"BODY", SK_BODY},
        {"TEXT", SK_TEXT},       {"FROM", SK_HEADER},         {"TO", SK_HEADER},
        {"CC", SK_HEADER},       {"BCC", SK_HEADER},          {"SUBJECT", SK_HEADER},
        {"HEADER", SK_HEADER},   {"MODSEQ", SK_MODSEQ}};
    for (size_t j = 0; j < sizeof one_arg / sizeof one_arg[0]; j++) {
        if (!imap_arg_atom_equals(x, one_arg[j].name))
            continue;
        if (*i >= n) {
            *why = "Missing search argument";
            return NULL;
        }
        k = new_key(one_arg[j].type);
        if (k == NULL)
            return NULL;
        const struct imap_arg *y = &a[(*i)++];
        switch (k->type) {
        case SK_FLAG:
        case SK_UNFLAG:
        case SK_BODY:
        case SK_TEXT:
            if ((k->str = astr(y, &k->len)) == NULL)
                goto bad;
            return k;
        case SK_BEFORE:
        case SK_ON:
        case SK_SINCE:
        case SK_SENTBEFORE:
        case SK_SENTON:
        case SK_SENTSINCE:
            if ((s1 = astr(y, &l1)) == NULL || parse_day(s1, &k->num) != 0)
                goto bad;
            return k;
        case SK_LARGER:
        case SK_SMALLER:
        case SK_MODSEQ: {
            if (k->type == SK_MODSEQ && (y->type == IMAP_ARG_QUOTED) && *i + 1 < n) {
                *i += 1; /* entry-name and entry-type-req (RFC 7162): ignored */
                y = &a[(*i)++];
            }
            char *end;
            if (y->type != IMAP_ARG_ATOM || (k->num = strtoull(y->str, &end, 10), *end))
                goto bad;
            return k;
        }
        case SK_UIDSET:
            if (y->type != IMAP_ARG_ATOM || imap_seqset_parse(y->str, y->len, 0, &k->set, why) != 0)
                goto bad;
            k->has_set = true;
            return k;
        case SK_HEADER:
            if (imap_arg_atom_equals(x, "HEADER")) {
                if ((s1 = astr(y, &l1)) == NULL || *i >= n || (s2 = astr(&a[(*i)++], &l2)) == NULL)
                    goto bad;
                k->str = s1;
                k->len = l1;
                k->str2 = s2;
                k->len2 = l2;
            } else {
                k->str = x->str; /* FROM, TO, ... are header names */
                k->len = x->len;
                if ((k->str2 = astr(y, &k->len2)) == NULL)
                    goto bad;
            }
            return k;
        default:
            goto bad;
        }
    bad:
        if (*why == NULL || strcmp(*why, "Missing search key") == 0)
            *why = "Bad search argument";
        skey_free(k);
        return NULL;
    }
    /* a sequence set */
    k = new_key(SK_SEQSET);
    if (k == NULL)
        return NULL;
    if (imap_seqset_parse(x->str, x->len, 0, &k->set, NULL) != 0) {
        *why = "Unknown search key";
        free(k);
        return NULL;
    }
    k->has_set = true;
    return k;
}

/* ---- matching ---- */

static bool ci_find(const char *hay, size_t hn, const char *needle, size_t nn)
{
    if (nn == 0)
        return true;
    if (nn > hn)
        return false;
    for (size_t i = 0; i + nn <= hn; i++) {
        size_t j = 0;
        while (j < nn) {
            unsigned char a = (unsigned char) hay[i + j], b = (unsigned char) needle[j];
            if (a >= 'A' && a <= 'Z')
                a += 32;
            if (b >= 'A' && b <= 'Z')
                b += 32;
            if (a != b)
                break;
            j++;
        }
        if (j == nn)
            return true;
    }
    return false;
}

static bool load_body(struct cand *c)
{
    if (!c->body_tried) {
        c->body_tried = true;
        int rv =
            c->m->body_hash.len == BODY_HASH_LEN
                ? body_get(net_conn_node(c->s->c)->db, c->m->body_hash.data, &c->body, &c->blen)
                : -1;
        if (rv != 1)
            c->body = NULL;
        if (rv == 0) /* on another node only: the command may fetch it and run again */
            imap_note_missing(c->s, c->m->body_hash.data);
    }
    return c->body != NULL;
}

static bool load_mime(struct cand *c)
{
    if (!c->mime_tried) {
        c->mime_tried = true;
        if (c->m->has_mime && mime_decode(c->m->mime.data, c->m->mime.len, &c->mm) == 0)
            c->mime_ok = true;
        else if (load_body(c) && mime_parse((const uint8_t *) c->body, c->blen, &c->mm) == 0)
            c->mime_ok = true;
    }
    return c->mime_ok;
}

/* imap_decode_cte(): base64 or quoted-printable undone into OUT (malloc'd). */
char *imap_decode_cte(const char *p, size_t n, const char *enc, size_t encl, size_t *outl)
{
    char *out = malloc(n + 1);
    size_t o = 0;
    if (out == NULL)
        return NULL;
    if (encl == 6 && strncasecmp(enc, "base64", 6) == 0) {
        uint32_t acc = 0;
        int bits = 0;
        for (size_t i = 0; i < n; i++) {
            int ch = (unsigned char) p[i], v;
            if (ch >= 'A' && ch <= 'Z')
                v = ch - 'A';
            else if (ch >= 'a' && ch <= 'z')
                v = ch - 'a' + 26;
            else if (ch >= '0' && ch <= '9')
                v = ch - '0' + 52;
            else if (ch == '+')
                v = 62;
            else if (ch == '/')
                v = 63;
            else
                continue;
            acc = (acc << 6) | (uint32_t) v;
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                out[o++] = (char) ((acc >> bits) & 0xff);
            }
        }
    } else if (encl == 16 && strncasecmp(enc, "quoted-printable", 16) == 0) {
        for (size_t i = 0; i < n; i++) {
            if (p[i] == '=' && i + 1 < n && (p[i + 1] == '\r' || p[i + 1] == '\n')) {
                i += (p[i + 1] == '\r' && i + 2 < n && p[i + 2] == '\n') ? 2 : 1;
            } else if (p[i] == '=' && i + 2 < n && hex_digit(p[i + 1]) >= 0 && hex_digit(p[i + 2]) >= 0) {
                out[o++] = (char) (hex_digit(p[i + 1]) * 16 + hex_digit(p[i + 2]));
                i += 2;
            } else {
                out[o++] = p[i];
            }
        }
    } else {
        memcpy(out, p, n);
        o = n;
    }
    *outl = o;
    return out;
}

static bool body_match(struct cand *c, const char *needle, size_t nn)
{
    if (!load_body(c) || !load_mime(c))
        return false;
    for (uint32_t i = 0; i < c->mm.nparts; i++) {
        const struct mime_part *p = &c->mm.parts[i];
        if (p->kind != MIME_KIND_LEAF || p->body_end > c->blen || p->body_off > p->body_end)
            continue;
        const char *type = p->type.off == MIME_NIL_OFF ? "text" : c->mm.strs + p->type.off;
        size_t tl = p->type.off == MIME_NIL_OFF ? 4 : p->type.len;
        if (!(tl == 4 && strncasecmp(type, "text", 4) == 0) &&
            !(tl == 7 && strncasecmp(type, "message", 7) == 0))
            continue;
        const char *enc = p->encoding.off == MIME_NIL_OFF ? "" : c->mm.strs + p->encoding.off;
        size_t el = p->encoding.off == MIME_NIL_OFF ? 0 : p->encoding.len;
        size_t dl;
        char *dec = imap_decode_cte(c->body + p->body_off, p->body_end - p->body_off, enc, el, &dl);
        bool hit = dec && ci_find(dec, dl, needle, nn);
        free(dec);
        if (hit)
            return true;
    }
    return false;
}

/* rfc2047_decode(): encoded words of UTF-8, US-ASCII, ISO-8859-1 into OUT. */
static size_t rfc2047_decode(const char *in, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 4 < cap;) {
        if (in[i] == '=' && i + 1 < n && in[i + 1] == '?') {
            const char *cs = in + i + 2;
            const char *q1 = memchr(cs, '?', n - (size_t) (cs - in));
            if (q1 && q1 + 2 < in + n && q1[2] == '?') {
                const char *text = q1 + 3;
                const char *end = NULL;
                for (const char *t = text; t + 1 < in + n; t++)
                    if (t[0] == '?' && t[1] == '=') {
                        end = t;
                        break;
                    }
                size_t csl = (size_t) (q1 - cs);
                bool utf8 = csl == 5 && strncasecmp(cs, "utf-8", 5) == 0;
                bool latin1 = csl == 10 && strncasecmp(cs, "iso-8859-1", 10) == 0;
                bool ascii = csl == 8 && strncasecmp(cs, "us-ascii", 8) == 0;
                char e = q1[1];
                if (end && (utf8 || latin1 || ascii) && strchr("bBqQ", e)) {
                    size_t dl = 0;
                    char *d;
                    if (e == 'b' || e == 'B') {
                        d = imap_decode_cte(text, (size_t) (end - text), "base64", 6, &dl);
                    } else {
                        d = malloc((size_t) (end - text) + 1);
                        for (const char *t = text; d && t < end; t++) {
                            if (*t == '_')
                                d[dl++] = ' ';
                            else if (*t == '=' && t + 2 < end && hex_digit(t[1]) >= 0 &&
                                     hex_digit(t[2]) >= 0) {
                                d[dl++] = (char) (hex_digit(t[1]) * 16 + hex_digit(t[2]));
                                t += 2;
                            } else
                                d[dl++] = *t;
                        }
                    }
                    for (size_t k = 0; d && k < dl && o + 4 < cap; k++) {
                        unsigned char ch = (unsigned char) d[k];
                        if (latin1 && ch >= 0x80) { /* to UTF-8 */
                            out[o++] = (char) (0xc0 | (ch >> 6));
                            out[o++] = (char) (0x80 | (ch & 0x3f));
                        } else {
                            out[o++] = (char) ch;
                        }
                    }
                    free(d);
                    i = (size_t) (end - in) + 2;
                    /* white space between two encoded words is dropped (RFC 2047 6.2) */
                    size_t j = i;
                    while (j < n && (in[j] == ' ' || in[j] == '\t'))
                        j++;
                    if (j + 1 < n && in[j] == '=' && in[j + 1] == '?')
                        i = j;
                    continue;
                }
            }
        }
        out[o++] = in[i++];
    }
    return o;
}

/* env_match(): SUBJECT, FROM, TO, CC, BCC answered from the envelope stored at delivery,
 * without reading the body: *DECIDED says whether it could. */
static bool env_match(struct cand *c, const char *name, size_t nl, const char *needle, size_t nn,
                      bool *decided)
{
    static const char *fields[] = {"subject", "from", "to", "cc", "bcc"};
    size_t f = 0;
    while (f < 5 && !(strlen(fields[f]) == nl && strncasecmp(name, fields[f], nl) == 0))
        f++;
    *decided = false;
    if (f == 5 || !c->m->has_mime || !load_mime(c) || c->mm.nenvs == 0)
        return false;
    *decided = true;
    const struct mime_envelope *e = &c->mm.envs[0];
    char dec[8192];
    if (f == 0) {
        if (e->subject.off == MIME_NIL_OFF)
            return false;
        size_t dl = rfc2047_decode(c->mm.strs + e->subject.off, e->subject.len, dec, sizeof dec);
        return ci_find(dec, dl, needle, nn);
    }
    const struct mime_list *l = f == 1 ? &e->from : f == 2 ? &e->to : f == 3 ? &e->cc : &e->bcc;
    for (uint32_t i = 0; i < l->count; i++) {
        const struct mime_addr *a = &c->mm.addrs[l->first + i];
        size_t o = 0;
        if (a->name.off != MIME_NIL_OFF)
            o = rfc2047_decode(c->mm.strs + a->name.off, a->name.len, dec, sizeof dec - 600);
        if (a->mailbox.off != MIME_NIL_OFF && a->mailbox.len < 280 && o + 300 < sizeof dec) {
            dec[o++] = ' ';
            memcpy(dec + o, c->mm.strs + a->mailbox.off, a->mailbox.len);
            o += a->mailbox.len;
            if (a->host.off != MIME_NIL_OFF && a->host.len < 256 &&
                o + a->host.len + 1 < sizeof dec) {
                dec[o++] = '@';
                memcpy(dec + o, c->mm.strs + a->host.off, a->host.len);
                o += a->host.len;
            }
        }
        if (ci_find(dec, o, needle, nn))
            return true;
    }
    return false;
}

/* header_match(): a field NAME of the top header whose value contains NEEDLE. */
static bool header_match(struct cand *c, const char *name, size_t nl, const char *needle, size_t nn)
{
    bool decided;
    bool hit = env_match(c, name, nl, needle, nn, &decided);
    if (decided)
        return hit;
    if (!load_body(c))
        return false;
    const char *p = c->body, *end = c->body + c->blen;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t) (end - p));
        size_t ll = eol ? (size_t) (eol - p) : (size_t) (end - p);
        if (ll == 0 || (ll == 1 && p[0] == '\r'))
            break; /* end of the header */
        if (p[0] != ' ' && p[0] != '\t' && ll > nl && p[nl] == ':' &&
            strncasecmp(p, name, nl) == 0) {
            /* the value and its continuation lines, unfolded */
            char val[8192];
            size_t vo = 0;
            const char *q = p + nl + 1;
            const char *qe = eol ? eol : end;
            for (;;) {
                for (; q < qe && vo < sizeof val; q++)
                    if (*q != '\r')
                        val[vo++] = *q;
                if (qe >= end || qe + 1 >= end || (qe[1] != ' ' && qe[1] != '\t'))
                    break;
                q = qe + 1;
                const char *ne = memchr(q, '\n', (size_t) (end - q));
                qe = ne ? ne : end;
            }
            char dec[8192];
            size_t dl = rfc2047_decode(val, vo, dec, sizeof dec);
            if (ci_find(dec, dl, needle, nn))
                return true;
        }
        p = eol ? eol + 1 : end;
    }
    return false;
}

static uint64_t sent_day(struct cand *c)
{
    if (!load_mime(c) || c->mm.nenvs == 0)
        return 0;
    const struct mime_str *d = &c->mm.envs[0].date;
    if (d->off == MIME_NIL_OFF || d->len > 200)
        return 0;
    char buf[256];
    memcpy(buf, c->mm.strs + d->off, d->len);
    buf[d->len] = 0;
    struct tm tm = {0};
    const char *p = buf;
    if (strchr(p, ','))
        p = strchr(p, ',') + 1;
    if (strptime(p, " %d %b %Y", &tm) == NULL)
        return 0;
    return (uint64_t) timegm(&tm);
}

static bool has_flag(const Tern__MessageRec *m, const char *f, size_t fl)
{
    for (size_t i = 0; i < m->n_flags; i++)
        if (strlen(m->flags[i]) == fl && strncasecmp(m->flags[i], f, fl) == 0)
            return true;
    return false;
}

static bool eval(const struct skey *k, struct cand *c)
{
    const Tern__MessageRec *m = c->m;
    struct imap_view *v = c->s->v;
    uint64_t day = m->internal_date - m->internal_date % 86400;
    switch (k->type) {
    case SK_ALL:
        return true;
    case SK_FLAG:
        return has_flag(m, k->str, k->len);
    case SK_UNFLAG:
        return !has_flag(m, k->str, k->len);
    case SK_RECENT:
        return m->uid >= v->recent_from;
    case SK_NEW:
        return m->uid >= v->recent_from && !has_flag(m, "\\Seen", 5);
    case SK_OLD:
        return m->uid < v->recent_from;
    case SK_BEFORE:
        return day < k->num;
    case SK_ON:
        return day == k->num;
    case SK_SINCE:
        return day >= k->num;
    case SK_SENTBEFORE:
    case SK_SENTON:
    case SK_SENTSINCE: {
        uint64_t d = sent_day(c);
        if (d == 0)
            d = day; /* no Date header: the internal date, as Dovecot */
        return k->type == SK_SENTBEFORE ? d < k->num
               : k->type == SK_SENTON   ? d == k->num
                                        : d >= k->num;
    }
    case SK_LARGER:
        return m->size > k->num;
    case SK_SMALLER:
        return m->size < k->num;
    case SK_MODSEQ:
        return m->modseq >= k->num;
    case SK_UIDSET:
        return imap_seqset_contains(&k->set, m->uid, v->n ? v->uids[v->n - 1] : 0);
    case SK_SEQSET:
        return imap_seqset_contains(&k->set, c->msn, (uint32_t) v->n);
    case SK_HEADER:
        return header_match(c, k->str, k->len, k->str2, k->len2);
    case SK_BODY:
        return body_match(c, k->str, k->len);
    case SK_TEXT:
        return (load_body(c) && ci_find(c->body, c->blen, k->str, k->len)) ||
               body_match(c, k->str, k->len);
    case SK_NOT:
        return !eval(k->kids[0], c);
    case SK_OR:
        return eval(k->kids[0], c) || eval(k->kids[1], c);
    case SK_AND:
        for (size_t i = 0; i < k->nkids; i++)
            if (!eval(k->kids[i], c))
                return false;
        return true;
    }
    return false;
}

static bool uses_modseq(const struct skey *k)
{
    if (k->type == SK_MODSEQ)
        return true;
    for (size_t i = 0; i < k->nkids; i++)
        if (uses_modseq(k->kids[i]))
            return true;
    return false;
}

/* One pass over the mailbox's index (one iterator, records decoded once), in UID order,
 * which is sequence order: each record the view knows is matched against ROOT. */
struct scan_ctx {
    struct imap_sess *s;
    const struct skey *root;
    uint32_t *hits; /* msns */
    size_t nh;
    uint64_t maxmod;
};

static int scan_one(void *ctx, const ProtobufCMessage *rec)
{
    struct scan_ctx *x = ctx;
    const Tern__MessageRec *m = (const Tern__MessageRec *) rec;
    uint32_t msn = imap_view_msn(x->s->v, m->uid);
    if (msn == 0)
        return 0; /* arrived after the view was last updated */
    struct cand c = {.s = x->s, .msn = msn, .uid = m->uid, .m = (Tern__MessageRec *) m};
    if (eval(x->root, &c)) {
        x->hits[x->nh++] = msn;
        if (m->modseq > x->maxmod)
            x->maxmod = m->modseq;
    }
    free(c.body);
    mime_free(&c.mm);
    return 0;
}

static int search_scan(struct imap_sess *s, const struct skey *root, struct scan_ctx *x)
{
    struct imap_view *v = s->v;
    memset(x, 0, sizeof *x);
    x->s = s;
    x->root = root;
    x->hits = malloc((v->n ? v->n : 1) * sizeof *x->hits);
    if (x->hits == NULL)
        return -1;
    if (v->n == 0)
        return 0;
    if (model_messages(net_conn_node(s->c)->db, v->id, v->uids[0], v->uids[v->n - 1], scan_one, x) <
        0) {
        free(x->hits);
        x->hits = NULL;
        return -1;
    }
    return 0;
}

long imap_search_match(struct imap_sess *s, const struct imap_arg *a, size_t n, uint32_t **out,
                       const char **why)
{
    size_t i = 0;
    struct skey *root = new_key(SK_AND);
    *out = NULL;
    if (root == NULL || n == 0 || parse_list(root, a, n, &i, 0, why) != 0) {
        skey_free(root);
        if (*why == NULL)
            *why = "Missing search key";
        return -1;
    }
    struct scan_ctx x;
    int rv = search_scan(s, root, &x);
    uint32_t *hits = rv == 0 ? x.hits : NULL;
    size_t nh = x.nh;
    skey_free(root);
    if (hits == NULL) {
        *why = "Out of memory";
        return -1;
    }
    *out = hits;
    return (long) nh;
}

void imap_cmd_search(struct imap_sess *s, struct imap_cmd *cmd)
{
    const struct imap_arg *a = cmd->args;
    size_t n = cmd->count, i = 0;
    const char *why = NULL;
    unsigned ret = 0; /* ESEARCH: 1 MIN, 2 MAX, 4 COUNT, 8 ALL */
    /* IMAP4rev2 (RFC 9051 7.3.4) has no SEARCH response: always ESEARCH, ALL by default */
    bool esearch = s->rev2;
    if (esearch)
        ret = 8;
    if (i < n && imap_arg_atom_equals(&a[i], "RETURN") && i + 1 < n &&
        a[i + 1].type == IMAP_ARG_LIST) {
        esearch = true;
        ret = 0;
        const struct imap_arg *r = &a[i + 1];
        for (size_t j = 0; j < r->count; j++) {
            if (imap_arg_atom_equals(&r->list[j], "MIN"))
                ret |= 1;
            else if (imap_arg_atom_equals(&r->list[j], "MAX"))
                ret |= 2;
            else if (imap_arg_atom_equals(&r->list[j], "COUNT"))
                ret |= 4;
            else if (imap_arg_atom_equals(&r->list[j], "ALL"))
                ret |= 8;
            else {
                imap_tagged(s, cmd->tag, "BAD", "Unknown RETURN option");
                return;
            }
        }
        if (ret == 0)
            ret = 8;
        i += 2;
    }
    if (i < n && imap_arg_atom_equals(&a[i], "CHARSET")) {
        size_t cl;
        const char *cs = i + 1 < n ? astr(&a[i + 1], &cl) : NULL;
        if (cs == NULL) {
            imap_tagged(s, cmd->tag, "BAD", "Missing charset");
            return;
        }
        if (strcasecmp(cs, "UTF-8") != 0 && strcasecmp(cs, "US-ASCII") != 0) {
            imap_tagged(s, cmd->tag, "NO", "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset");
            return;
        }
        i += 2;
    }
    struct skey *root = new_key(SK_AND);
    if (root == NULL || i >= n || parse_list(root, a, n, &i, 0, &why) != 0) {
        skey_free(root);
        imap_tagged(s, cmd->tag, "BAD", "%s", why ? why : "Missing search key");
        return;
    }
    struct scan_ctx x;
    uint32_t *hits = search_scan(s, root, &x) == 0 ? x.hits : NULL;
    size_t nh = x.nh;
    uint64_t maxmod = x.maxmod;
    for (size_t k = 0; hits && cmd->uid && k < nh; k++)
        hits[k] = s->v->uids[hits[k] - 1];
    bool modseq = uses_modseq(root);
    skey_free(root);
    if (hits == NULL) {
        imap_tagged(s, cmd->tag, "NO", "[UNAVAILABLE] Out of memory");
        return;
    }
    if (imap_prefetch(s, cmd)) { /* bodies on other nodes: fetched, then searched again */
        free(hits);
        return;
    }
    if (esearch) {
        net_conn_printf(s->c, "* ESEARCH (TAG \"%s\")%s", cmd->tag, cmd->uid ? " UID" : "");
        if (nh && (ret & 1))
            net_conn_printf(s->c, " MIN %u", hits[0]);
        if (nh && (ret & 2))
            net_conn_printf(s->c, " MAX %u", hits[nh - 1]);
        if (ret & 4)
            net_conn_printf(s->c, " COUNT %zu", nh);
        if (nh && (ret & 8)) {
            net_conn_write(s->c, " ALL ", 5);
            for (size_t k = 0; k < nh;) { /* as ranges */
                size_t j = k;
                while (j + 1 < nh && hits[j + 1] == hits[j] + 1)
                    j++;
                if (j > k)
                    net_conn_printf(s->c, "%s%u:%u", k ? "," : "", hits[k], hits[j]);
                else
                    net_conn_printf(s->c, "%s%u", k ? "," : "", hits[k]);
                k = j + 1;
            }
        }
        if (modseq && nh)
            net_conn_printf(s->c, " MODSEQ %" PRIu64, maxmod);
        net_conn_write(s->c, "\r\n", 2);
    } else {
        net_conn_write(s->c, "* SEARCH", 8);
        for (size_t k = 0; k < nh; k++)
            net_conn_printf(s->c, " %u", hits[k]);
        if (modseq && nh)
            net_conn_printf(s->c, " (MODSEQ %" PRIu64 ")", maxmod);
        net_conn_write(s->c, "\r\n", 2);
    }
    free(hits);
    imap_flush_updates(s, false);
    imap_tagged(s, cmd->tag, "OK", "%sSEARCH completed", cmd->uid ? "UID " : "");
}
