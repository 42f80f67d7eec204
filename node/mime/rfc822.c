/*
 * node/mime/rfc822.c
 * Parsers for the structured header fields IMAP shows: address lists (RFC 5322 3.4, with
 * groups, routes and obsolete forms), Content-Type and Content-Disposition parameters (RFC 2045
 * 5.1, RFC 2183, RFC 2231 continuations merged as Dovecot does), Content-Transfer-Encoding and
 * Content-Language (RFC 3282). Lenient like Dovecot: broken input gives placeholders, not errors.
 *
 * SECURITY: values come from any sender. Every scan is bounded by the value's end; comments
 * nest without recursion; lists are capped by the MIME_* limits.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mime_int.h"

/* Bit 1: RFC 5322 atext; bit 2: RFC 2045 token character. 8-bit bytes are both; '.' is a token
 * character (Dovecot's rfc822_parse_mime_token() accepts it). */
const uint8_t mime_ctype[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x00 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
    0, 3, 0, 3, 3, 3, 3, 3, 0, 0, 3, 3, 0, 3, 2, 1, /* 0x20  !"#$%&'()*+,-./ */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 0, 0, 0, 1, 0, 1, /* 0x30 0-9:;<=>? */
    0, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, /* 0x40 @A-O */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 0, 0, 0, 3, 3, /* 0x50 P-Z[\]^_ */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, /* 0x60 `a-o */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 0, /* 0x70 p-z{|}~ DEL */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, /* 0x80 */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, /* 0x90 */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, /* 0xa0 */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, /* 0xb0 */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, /* 0xc0 */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, /* 0xd0 */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, /* 0xe0 */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, /* 0xf0 */
};

#define IS_ATEXT(c) ((mime_ctype[(uint8_t) (c)] & MIME_C_ATEXT) != 0)
#define IS_TOKEN(c) ((mime_ctype[(uint8_t) (c)] & MIME_C_TOKEN) != 0)

/* ---- arena and arrays ------------------------------------------------------------------------ */

bool mime_grow(struct mime_ctx *c, void **arr, uint32_t *cap, uint32_t need, size_t elem)
{
    uint32_t ncap;
    void *n;

    if (need <= *cap)
        return true;
    if (c->err != 0)
        return false;
    ncap = *cap < 8 ? 8 : *cap;
    while (ncap < need)
        ncap = ncap > UINT32_MAX / 2 ? need : ncap * 2;
    n = realloc(*arr, (size_t) ncap * elem);
    if (n == NULL) {
        c->err = -ENOMEM;
        return false;
    }
    *arr = n;
    *cap = ncap;
    return true;
}

bool mime_sbuf_add(struct mime_ctx *c, struct mime_sbuf *b, const void *p, size_t len)
{
    if (c->err != 0)
        return false;
    if (b->cap - b->len < len) {
        size_t ncap = b->cap < 256 ? 256 : b->cap;
        uint8_t *n;

        while (ncap - b->len < len)
            ncap *= 2;
        n = realloc(b->d, ncap);
        if (n == NULL) {
            c->err = -ENOMEM;
            return false;
        }
        b->d = n;
        b->cap = ncap;
    }
    if (len > 0)
        memcpy(b->d + b->len, p, len);
    b->len += len;
    return true;
}

struct mime_str mime_intern(struct mime_ctx *c, const void *p, size_t len)
{
    struct mime_msg *m = c->m;
    struct mime_str s = {MIME_NIL_OFF, 0};

    if (c->err != 0)
        return s;
    if (len > MIME_STRS_MAX - m->strs_len) {
        m->flags |= MIME_MSG_TRUNCATED;
        return s;
    }
    if (!mime_grow(c, (void **) &m->strs, &m->strs_cap, m->strs_len + (uint32_t) len, 1))
        return s;
    if (len > 0)
        memcpy(m->strs + m->strs_len, p, len);
    s.off = m->strs_len;
    s.len = (uint32_t) len;
    m->strs_len += (uint32_t) len;
    return s;
}

struct mime_str mime_intern_const(struct mime_ctx *c, struct mime_str *slot, const char *s)
{
    if (slot->off == MIME_NIL_OFF)
        *slot = mime_intern(c, s, strlen(s));
    return *slot;
}

bool mime_str_eq(const struct mime_msg *m, struct mime_str s, const char *lit)
{
    size_t n = strlen(lit);

    return s.off != MIME_NIL_OFF && s.len == n && strncasecmp(m->strs + s.off, lit, n) == 0;
}

struct mime_str mime_param_find(const struct mime_msg *m, struct mime_list list, const char *name)
{
    struct mime_str nil = {MIME_NIL_OFF, 0};

    for (uint32_t i = 0; i < list.count; i++) {
        const struct mime_param *pp = &m->params[list.first + i];

        if (mime_str_eq(m, pp->name, name))
            return pp->value;
    }
    return nil;
}

/* ---- lexer ----------------------------------------------------------------------------------- */

/* A cursor over one unfolded field value. CMT..CMT_END is the last comment skipped. */
struct lex {
    const uint8_t *p, *e;
    const uint8_t *cmt, *cmt_end;
};

/* skip_comment(): at '(', skips a comment (nested, with quoted-pairs). An unterminated one
 * runs to the end of the value. */
static void skip_comment(struct lex *l)
{
    const uint8_t *start = ++l->p;
    unsigned depth = 1;

    while (l->p < l->e) {
        uint8_t ch = *l->p;

        if (ch == '\\') {
            l->p += (l->e - l->p >= 2) ? 2 : 1;
            continue;
        }
        if (ch == '(') {
            depth++;
        } else if (ch == ')' && --depth == 0) {
            l->cmt = start;
            l->cmt_end = l->p;
            l->p++;
            return;
        }
        l->p++;
    }
}

/* cfws(): skips white space (CR and LF too) and comments; true if something is left. */
static bool cfws(struct lex *l)
{
    while (l->p < l->e) {
        uint8_t ch = *l->p;

        if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n')
            l->p++;
        else if (ch == '(')
            skip_comment(l);
        else
            return true;
    }
    return false;
}

static bool at(const struct lex *l, uint8_t ch)
{
    return l->p < l->e && *l->p == ch;
}

/* quoted(): at '"', appends the unescaped content to OUT (removing CR and LF, which can only be
 * left from folding). False if the closing quote is missing (everything is consumed). */
static bool quoted(struct mime_ctx *c, struct lex *l, struct mime_sbuf *out)
{
    const uint8_t *start = ++l->p;

    while (l->p < l->e) {
        uint8_t ch = *l->p;

        if (ch == '"') {
            mime_sbuf_add(c, out, start, (size_t) (l->p - start));
            l->p++;
            return true;
        }
        if (ch == '\\' || ch == '\r' || ch == '\n') {
            mime_sbuf_add(c, out, start, (size_t) (l->p - start));
            l->p++;
            if (ch == '\\' && l->p < l->e) {
                mime_sbuf_add(c, out, l->p, 1);
                l->p++;
            }
            start = l->p;
            continue;
        }
        l->p++;
    }
    return false;
}

/* run(): appends the longest run of bytes of class CLS (plus '.' if DOT) to OUT; its length. */
static size_t run(struct mime_ctx *c, struct lex *l, uint8_t cls, bool dot, struct mime_sbuf *out)
{
    const uint8_t *start = l->p;

    while (l->p < l->e && ((mime_ctype[*l->p] & cls) != 0 || (dot && *l->p == '.')))
        l->p++;
    if (out != NULL)
        mime_sbuf_add(c, out, start, (size_t) (l->p - start));
    return (size_t) (l->p - start);
}

/* ---- parameters (RFC 2045 5.1, RFC 2231) ---------------------------------------------------- */

/* One parameter before merging; offsets are into c->raw. */
struct rawp {
    uint32_t name, name_len, value, value_len;
    uint32_t idx; /* continuation number (RFC 2231 3) */
    uint32_t pos; /* order in the field: a deterministic tie-break for sorting */
    bool ext;     /* "*" after the number: the value is charset'lang'%XX-encoded */
    bool cont;    /* name*... form: merged with its siblings */
};

static const uint8_t *raw_bytes(const struct mime_ctx *c, uint32_t off)
{
    return c->raw.d + off;
}

/* raw_add(): LEN bytes to c->raw; their offset, or UINT32_MAX on ENOMEM. */
static uint32_t raw_add(struct mime_ctx *c, const void *p, size_t len)
{
    uint32_t off = (uint32_t) c->raw.len;

    return mime_sbuf_add(c, &c->raw, p, len) ? off : UINT32_MAX;
}

/* skip_to_semicolon(): after a broken parameter, resume at the next ';'. (Dovecot skips one
 * more parameter here; keeping it is kinder.) */
static void skip_to_semicolon(struct lex *l)
{
    const uint8_t *semi = memchr(l->p, ';', (size_t) (l->e - l->p));

    l->p = semi != NULL ? semi : l->e;
}

/* split_name(): classifies NAME as a plain parameter or an RFC 2231 section name*N[*] (also
 * name* alone, section 0), the way Dovecot's rfc2231_parse() does. */
static void split_name(const uint8_t *name, uint32_t len, struct rawp *r)
{
    const uint8_t *star = memchr(name, '*', len), *q, *end = name + len;
    uint64_t idx = 0;

    r->cont = false;
    r->ext = false;
    r->idx = 0;
    if (star == NULL)
        return;
    q = star;
    if (q + 1 < end) {
        q++;
        for (; q < end && *q >= '0' && *q <= '9'; q++) {
            idx = idx * 10 + (uint64_t) (*q - '0');
            if (idx > UINT32_MAX)
                return; /* no uint32_t section number: keep it as a plain name */
        }
    }
    if (q < end && *q == '*') {
        r->ext = true;
        q++;
    }
    if (q != end) {
        r->ext = false;
        return;
    }
    r->cont = true;
    r->idx = (uint32_t) idx;
    r->name_len = (uint32_t) (star - name);
}

/* Order of merged parameters (qsort_r() with the context): name (byte order, as Dovecot's
 * strcmp()), then section number, then position in the field. */
static int cmp_rawp(const void *a, const void *b, void *ctx)
{
    const struct rawp *x = a, *y = b;
    const struct mime_ctx *c = ctx;
    uint32_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int r = memcmp(raw_bytes(c, x->name), raw_bytes(c, y->name), n);

    if (r != 0)
        return r;
    if (x->name_len != y->name_len)
        return x->name_len < y->name_len ? -1 : 1;
    if (x->idx != y->idx)
        return x->idx < y->idx ? -1 : 1;
    return x->pos < y->pos ? -1 : (x->pos > y->pos ? 1 : 0);
}

static bool same_name_ci(const struct mime_ctx *c, const struct rawp *x, const struct rawp *y)
{
    return x->name_len == y->name_len &&
           strncasecmp((const char *) raw_bytes(c, x->name), (const char *) raw_bytes(c, y->name),
                       x->name_len) == 0;
}

/* add_param(): one output parameter; false when the list or the budget is full. */
static bool add_param(struct mime_ctx *c, struct mime_list *list, const void *name, size_t name_len,
                      const void *value, size_t value_len)
{
    struct mime_msg *m = c->m;
    struct mime_param *pp;

    if (list->count >= MIME_PARAMS_MAX || c->items >= MIME_ITEMS_MAX) {
        m->flags |= MIME_MSG_TRUNCATED;
        return false;
    }
    if (!mime_grow(c, (void **) &m->params, &m->params_cap, m->nparams + 1, sizeof(*pp)))
        return false;
    pp = &m->params[m->nparams];
    pp->name = mime_intern(c, name, name_len);
    pp->value = mime_intern(c, value, value_len);
    if (c->err != 0)
        return false;
    if (list->count == 0)
        list->first = m->nparams;
    m->nparams++;
    list->count++;
    c->items++;
    return true;
}

/* merge_group(): output the continuations R[0..n) of one name (sorted by section): merged into
 * one value when the sections are 0..n-1, else each under its own name*N[*]. */
static void merge_group(struct mime_ctx *c, struct mime_list *list, const struct rawp *r, size_t n)
{
    bool ok = true, have_ext = false;
    struct mime_sbuf *t = &c->tmp;

    for (size_t j = 0; j < n; j++) {
        if (r[j].idx != j)
            ok = false;
        if (r[j].ext)
            have_ext = true;
    }
    if (!ok) {
        for (size_t j = 0; j < n; j++) {
            char suffix[24];
            int sl = snprintf(suffix, sizeof(suffix), r[j].ext ? "*%u*" : "*%u", r[j].idx);

            t->len = 0;
            mime_sbuf_add(c, t, raw_bytes(c, r[j].name), r[j].name_len);
            mime_sbuf_add(c, t, suffix, (size_t) sl);
            if (c->err != 0)
                return;
            /* the name is in tmp, the value in raw: both are copied by add_param() */
            if (!add_param(c, list, t->d, t->len, raw_bytes(c, r[j].value), r[j].value_len))
                return;
        }
        return;
    }
    t->len = 0;
    if (!r[0].ext && have_ext)
        mime_sbuf_add(c, t, "''", 2);
    for (size_t j = 0; j < n; j++) {
        const uint8_t *v = raw_bytes(c, r[j].value);

        if (r[j].ext || !have_ext) {
            mime_sbuf_add(c, t, v, r[j].value_len);
            continue;
        }
        for (uint32_t k = 0; k < r[j].value_len; k++) {
            if (v[k] == '%')
                mime_sbuf_add(c, t, "%25", 3);
            else
                mime_sbuf_add(c, t, &v[k], 1);
        }
    }
    if (c->err != 0)
        return;
    {
        /* name (+ "*"), built after the value in tmp so that one buffer serves both */
        size_t vlen = t->len;

        mime_sbuf_add(c, t, raw_bytes(c, r[0].name), r[0].name_len);
        if (have_ext)
            mime_sbuf_add(c, t, "*", 1);
        if (c->err != 0)
            return;
        add_param(c, list, t->d + vlen, t->len - vlen, t->d, vlen);
    }
}

/* params(): parses *(";" attribute "=" value) from L into LIST. */
static void params(struct mime_ctx *c, struct lex *l, struct mime_list *list)
{
    struct rawp stack_r[16], *r = stack_r, *heap = NULL;
    size_t nr = 0, cap = 16, nplain = 0, ncont = 0;
    uint32_t pos = 0;

    list->first = 0;
    list->count = 0;
    c->raw.len = 0;
    while (c->err == 0 && cfws(l)) {
        struct rawp x;
        const uint8_t *name;
        size_t name_len;

        if (*l->p != ';') {
            l->p++; /* garbage: resume at the next ';' */
            skip_to_semicolon(l);
            continue;
        }
        l->p++;
        if (!cfws(l))
            break;
        name = l->p;
        name_len = run(c, l, MIME_C_TOKEN, true, NULL);
        if (name_len == 0 || !cfws(l) || *l->p != '=') {
            skip_to_semicolon(l);
            continue;
        }
        l->p++;
        c->tmp.len = 0;
        if (!cfws(l)) {
            /* "name=" at the end: an empty value, as Dovecot */
        } else if (*l->p == '"') {
            if (!quoted(c, l, &c->tmp))
                break; /* unterminated: dropped, as Dovecot */
        } else if (*l->p == '=') {
            /* Dovecot's workaround for name==?utf-8?b?...?= */
            const uint8_t *s = l->p;

            while (l->p < l->e && *l->p != ';' && *l->p != ' ' && *l->p != '\t' && *l->p != '\r' &&
                   *l->p != '\n')
                l->p++;
            mime_sbuf_add(c, &c->tmp, s, (size_t) (l->p - s));
        } else {
            run(c, l, MIME_C_TOKEN, true, &c->tmp);
        }
        if (nr >= MIME_PARAMS_MAX) {
            c->m->flags |= MIME_MSG_TRUNCATED;
            continue;
        }
        memset(&x, 0, sizeof(x));
        x.name = raw_add(c, name, name_len);
        x.name_len = (uint32_t) name_len;
        x.value = raw_add(c, c->tmp.d, c->tmp.len);
        x.value_len = (uint32_t) c->tmp.len;
        x.pos = pos++;
        if (c->err != 0)
            break;
        split_name(name, (uint32_t) name_len, &x);
        if (nr == cap) {
            struct rawp *n = malloc(2 * cap * sizeof(*n));

            if (n == NULL) {
                c->err = -ENOMEM;
                break;
            }
            memcpy(n, r, nr * sizeof(*n));
            free(heap);
            heap = r = n;
            cap *= 2;
        }
        r[nr++] = x;
        if (x.cont)
            ncont++;
        else
            nplain++;
    }
    if (c->err != 0)
        goto out;

    /* plain parameters first, in order */
    for (size_t i = 0; i < nr; i++) {
        if (!r[i].cont && !add_param(c, list, raw_bytes(c, r[i].name), r[i].name_len,
                                     raw_bytes(c, r[i].value), r[i].value_len))
            goto out;
    }
    if (ncont == 0)
        goto out;

    /* then the continuations, sorted and merged per name */
    {
        size_t k = 0;

        for (size_t i = 0; i < nr; i++) {
            if (r[i].cont)
                r[k++] = r[i];
        }
        qsort_r(r, k, sizeof(*r), cmp_rawp, c);
        for (size_t i = 0, next; i < k && c->err == 0; i = next) {
            for (next = i + 1; next < k && same_name_ci(c, &r[i], &r[next]); next++)
                ;
            merge_group(c, list, &r[i], next - i);
        }
    }
out:
    free(heap);
}

bool mime_parse_content_type(struct mime_ctx *c, const uint8_t *v, const uint8_t *e,
                             struct mime_part *p)
{
    struct lex l = {v, e, NULL, NULL};
    const uint8_t *type, *sub;
    size_t type_len, sub_len;

    if (!cfws(&l))
        return false;
    type = l.p;
    type_len = run(c, &l, MIME_C_TOKEN, true, NULL);
    if (type_len == 0 || !cfws(&l) || *l.p != '/')
        return false;
    l.p++;
    if (!cfws(&l))
        return false;
    sub = l.p;
    sub_len = run(c, &l, MIME_C_TOKEN, true, NULL);
    if (sub_len == 0)
        return false;
    p->type = mime_intern(c, type, type_len);
    p->subtype = mime_intern(c, sub, sub_len);
    if (mime_str_is_nil(p->type) || mime_str_is_nil(p->subtype)) {
        /* lost to MIME_STRS_MAX: both NIL, so the default type applies */
        p->type.off = p->subtype.off = MIME_NIL_OFF;
        p->type.len = p->subtype.len = 0;
        return false;
    }
    params(c, &l, &p->params);
    return true;
}

void mime_parse_disposition(struct mime_ctx *c, const uint8_t *v, const uint8_t *e,
                            struct mime_part *p)
{
    struct lex l = {v, e, NULL, NULL};
    const uint8_t *tok;
    size_t tok_len;

    cfws(&l);
    tok = l.p;
    tok_len = run(c, &l, MIME_C_TOKEN, true, NULL);
    p->disposition = mime_intern(c, tok, tok_len);
    params(c, &l, &p->disp_params);
}

struct mime_str mime_parse_encoding(struct mime_ctx *c, const uint8_t *v, const uint8_t *e)
{
    struct lex l = {v, e, NULL, NULL};
    struct mime_str nil = {MIME_NIL_OFF, 0};
    const uint8_t *tok;
    size_t tok_len;

    cfws(&l);
    tok = l.p;
    tok_len = run(c, &l, MIME_C_TOKEN, true, NULL);
    if (tok_len == 0 || cfws(&l))
        return nil; /* empty, or something after the token: ignored, as Dovecot */
    return mime_intern(c, tok, tok_len);
}

void mime_parse_language(struct mime_ctx *c, const uint8_t *v, const uint8_t *e,
                         struct mime_part *p)
{
    struct lex l = {v, e, NULL, NULL};
    struct mime_msg *m = c->m;

    p->language.first = 0;
    p->language.count = 0;
    cfws(&l);
    while (c->err == 0 && l.p < l.e && IS_ATEXT(*l.p)) {
        const uint8_t *tag = l.p;
        size_t tag_len = run(c, &l, MIME_C_ATEXT, false, NULL);

        if (p->language.count >= MIME_LANGS_MAX || c->items >= MIME_ITEMS_MAX) {
            m->flags |= MIME_MSG_TRUNCATED;
            break;
        }
        if (!mime_grow(c, (void **) &m->langs, &m->langs_cap, m->nlangs + 1, sizeof(*m->langs)))
            break;
        m->langs[m->nlangs] = mime_intern(c, tag, tag_len);
        if (p->language.count == 0)
            p->language.first = m->nlangs;
        m->nlangs++;
        p->language.count++;
        c->items++;
        if (!cfws(&l) || *l.p != ',')
            break;
        l.p++;
        cfws(&l);
    }
}

/* ---- addresses (RFC 5322 3.4) --------------------------------------------------------------- */

/* What one mailbox parse found; pointers into c->tmp are offsets (it may move). */
struct abuild {
    struct mime_addr a;
    uint32_t count; /* entries appended so far for this list */
    uint32_t max;
};

/* add_addr(): one entry; false when the list or the budget is full, unless FORCE (the end
 * marker of a group that was started). */
static bool add_addr(struct mime_ctx *c, struct abuild *ab, bool force, struct mime_str name,
                     struct mime_str adl, struct mime_str mailbox, struct mime_str host)
{
    struct mime_msg *m = c->m;
    struct mime_addr *a;

    if (!force && (ab->count >= ab->max || c->items >= MIME_ITEMS_MAX)) {
        m->flags |= MIME_MSG_TRUNCATED;
        return false;
    }
    if (!mime_grow(c, (void **) &m->addrs, &m->addrs_cap, m->naddrs + 1, sizeof(*a)))
        return false;
    a = &m->addrs[m->naddrs++];
    a->name = name;
    a->adl = adl;
    a->mailbox = mailbox;
    a->host = host;
    ab->count++;
    c->items++;
    return true;
}

static struct mime_str nil_str(void)
{
    struct mime_str s = {MIME_NIL_OFF, 0};

    return s;
}

/* phrase(): RFC 5322 phrase (and obs-phrase: dots) into c->tmp, words joined by one space;
 * the number of words, 0 if none or if a quoted string is unterminated. */
static unsigned phrase(struct mime_ctx *c, struct lex *l)
{
    unsigned words = 0;

    c->tmp.len = 0;
    if (!cfws(l) || *l->p == '.')
        return 0;
    while (l->p < l->e) {
        if (words > 0)
            mime_sbuf_add(c, &c->tmp, " ", 1);
        if (*l->p == '"') {
            if (!quoted(c, l, &c->tmp))
                return 0;
        } else if (run(c, l, MIME_C_ATEXT, true, &c->tmp) == 0) {
            if (words > 0)
                c->tmp.len--; /* the space added above */
            break;
        }
        words++;
        if (!cfws(l))
            break;
        if (*l->p != '"' && *l->p != '.' && !IS_ATEXT(*l->p))
            break;
    }
    return words;
}

/* dots(): after a word, "." separated by CFWS ("a . b", obs-local-part and obs-domain) are
 * appended; true if a word may follow. */
static bool dots(struct mime_ctx *c, struct lex *l)
{
    bool any = false;

    while (cfws(l) && *l->p == '.') {
        mime_sbuf_add(c, &c->tmp, ".", 1);
        l->p++;
        any = true;
    }
    return any && l->p < l->e;
}

/* local_part(): dot-atom / quoted-string / obs-local-part (word *("." word), CFWS around dots)
 * into c->tmp; false if there is none. Words are runs of atext and dots, so ".a" and "a."
 * stay as they are (Dovecot keeps them too). */
static bool local_part(struct mime_ctx *c, struct lex *l)
{
    bool any = false;

    c->tmp.len = 0;
    do {
        if (at(l, '"')) {
            if (!quoted(c, l, &c->tmp))
                return false;
        } else if (run(c, l, MIME_C_ATEXT, true, &c->tmp) == 0) {
            break;
        }
        any = true;
    } while (dots(c, l));
    return any;
}

/* domain(): after '@': a domain literal kept with its brackets, or dot-atom with CFWS around
 * dots, into c->tmp from offset FROM on. Returns the number of bytes added. */
static size_t domain(struct mime_ctx *c, struct lex *l, size_t from)
{
    c->tmp.len = from;
    if (!cfws(l))
        return 0;
    if (*l->p == '[') {
        const uint8_t *s = l->p;

        for (l->p++; l->p < l->e; l->p++) {
            if (*l->p == '\\' && l->p + 1 < l->e) {
                l->p++;
            } else if (*l->p == ']') {
                l->p++;
                mime_sbuf_add(c, &c->tmp, s, (size_t) (l->p - s));
                cfws(l);
                return c->tmp.len - from;
            }
        }
        /* missing ']': no domain (Dovecot: MISSING_DOMAIN), the rest is garbage */
        return 0;
    }
    while (run(c, l, MIME_C_ATEXT, true, &c->tmp) > 0 && dots(c, l))
        ;
    cfws(l);
    return c->tmp.len - from;
}

static struct mime_str tmp_str(struct mime_ctx *c, size_t from)
{
    if (c->tmp.len == from)
        return mime_intern(c, "", 0); /* c->tmp.d may still be NULL */
    return mime_intern(c, c->tmp.d + from, c->tmp.len - from);
}

/* angle_addr(): at '<': [route ":"] local-part ["@" domain] ">" (RFC 5322 3.4, obs-route). */
static bool angle_addr(struct mime_ctx *c, struct lex *l, struct abuild *ab, struct mime_str name)
{
    struct mime_str adl = nil_str(), mbox = nil_str(), host = nil_str();
    bool syntax_error = false;

    l->p++;
    cfws(l);
    if (at(l, '@')) {
        /* obs-domain-list: "@" domain *("," [CFWS] ["@" domain]) ":" */
        size_t len = 0;

        c->tmp.len = 0;
        while (at(l, '@')) {
            if (len > 0)
                mime_sbuf_add(c, &c->tmp, ",", 1);
            mime_sbuf_add(c, &c->tmp, "@", 1);
            l->p++;
            len = c->tmp.len;
            domain(c, l, len);
            len = c->tmp.len;
            while (cfws(l) && *l->p == ',')
                l->p++;
        }
        if (at(l, ':')) {
            adl = tmp_str(c, 0);
            l->p++;
            cfws(l);
        } else {
            adl = mime_intern_const(c, &c->invalid_route, "INVALID_ROUTE");
        }
    }
    if (local_part(c, l))
        mbox = tmp_str(c, 0);
    cfws(l);
    if (at(l, '@')) {
        l->p++;
        if (domain(c, l, 0) > 0)
            host = tmp_str(c, 0);
    }
    if (cfws(l) && *l->p == '>')
        l->p++;
    else
        syntax_error = true;
    if (mime_str_is_nil(mbox))
        mbox = mime_intern_const(c, &c->missing_mailbox, "MISSING_MAILBOX");
    if (syntax_error)
        host = mime_intern_const(c, &c->syntax_error, "SYNTAX_ERROR");
    else if (mime_str_is_nil(host))
        host = mime_intern_const(c, &c->missing_domain, "MISSING_DOMAIN");
    return add_addr(c, ab, false, name, adl, mbox, host);
}

/* mailbox(): name-addr / addr-spec, with Dovecot's fallbacks for broken input. */
static bool mailbox(struct mime_ctx *c, struct lex *l, struct abuild *ab)
{
    const uint8_t *start = l->p, *phrase_end;
    struct mime_str name = nil_str(), mbox = nil_str(), host = nil_str();
    unsigned words;
    bool have_local;

    words = phrase(c, l);
    phrase_end = l->p;
    if (at(l, '<')) {
        if (words > 0 && c->tmp.len > 0)
            name = tmp_str(c, 0); /* an empty display name ("") is NIL, as Dovecot */
        return angle_addr(c, l, ab, name);
    }

    /* addr-spec; a comment inside or right after it is the name (old "a@b (Name)" form) */
    l->p = start;
    l->cmt = NULL;
    have_local = local_part(c, l);
    if (have_local)
        mbox = tmp_str(c, 0);
    cfws(l);
    if (at(l, '@')) {
        l->p++;
        if (domain(c, l, 0) > 0)
            host = tmp_str(c, 0);
    } else if (words > 1) {
        /* "just some text", "Name user@host": the phrase is a name without an address */
        l->p = start;
        phrase(c, l);
        name = tmp_str(c, 0);
        l->p = phrase_end;
        mbox = nil_str();
    }
    cfws(l);
    if (mime_str_is_nil(name) && l->cmt != NULL && l->cmt_end > l->cmt) {
        /* the comment's quoted-pairs are unescaped */
        struct lex cl = {l->cmt, l->cmt_end, NULL, NULL};

        c->tmp.len = 0;
        while (cl.p < cl.e) {
            if (*cl.p == '\\' && cl.p + 1 < cl.e)
                cl.p++;
            mime_sbuf_add(c, &c->tmp, cl.p, 1);
            cl.p++;
        }
        name = tmp_str(c, 0);
    }
    if (mime_str_is_nil(mbox))
        mbox = mime_intern_const(c, &c->missing_mailbox, "MISSING_MAILBOX");
    if (mime_str_is_nil(host))
        host = mime_intern_const(c, &c->missing_domain, "MISSING_DOMAIN");
    return add_addr(c, ab, false, name, nil_str(), mbox, host);
}

/* group(): display-name ":" [mailbox-list] ";" if L is at one (else false, L unchanged). */
static bool group(struct mime_ctx *c, struct lex *l, struct abuild *ab, bool *is_group)
{
    const uint8_t *start = l->p;
    struct mime_str name;
    bool ok = true;

    *is_group = false;
    if (phrase(c, l) == 0 || !at(l, ':')) {
        l->p = start;
        return true;
    }
    *is_group = true;
    l->p++;
    name = tmp_str(c, 0);
    if (!add_addr(c, ab, false, nil_str(), nil_str(), name, nil_str()))
        return false;
    while (cfws(l)) {
        if (*l->p == ';') {
            l->p++;
            break;
        }
        if (!mailbox(c, l, ab)) {
            ok = false;
            break;
        }
        if (!cfws(l))
            break;
        if (*l->p == ',') {
            l->p++;
            continue;
        }
        if (*l->p == ';')
            l->p++;
        break;
    }
    /* the group's end marker is added even when the list is full */
    add_addr(c, ab, true, nil_str(), nil_str(), nil_str(), nil_str());
    return ok && c->err == 0;
}

uint32_t mime_parse_addresses(struct mime_ctx *c, const uint8_t *v, const uint8_t *e, uint32_t max)
{
    struct lex l = {v, e, NULL, NULL};
    struct abuild ab;

    memset(&ab, 0, sizeof(ab));
    ab.max = max;
    if (!cfws(&l))
        return 0;
    while (c->err == 0 && ab.count < ab.max) {
        bool is_group;

        if (!group(c, &l, &ab, &is_group))
            break;
        if (!is_group && !mailbox(c, &l, &ab))
            break;
        if (!cfws(&l) || *l.p != ',')
            break; /* the end, or garbage after an address: the rest is ignored */
        l.p++;
        if (!cfws(&l))
            break;
    }
    return ab.count;
}
