/*
 * node/mime/codec.c
 * The stored form of a parse result, kept with the message index so that FETCH never parses
 * the message: a version byte, LEB128 varints and the string bytes (layout below). Only what
 * cannot be derived is stored (children, siblings and depths are rebuilt from the parents).
 *
 * SECURITY: records are read back from storage that other nodes wrote; mime_decode() treats
 * them as untrusted: counts are checked against the bytes left before allocating, strings and
 * lists against their arrays, the tree against the invariants the IMAP writers rely on.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mime_int.h"

/* Layout (version 1), u = varint, str = u(off + 1, 0 for NIL) [u(len) if not NIL],
 * list = u(count) [u(first) if count > 0]:
 *   u8 version; u size, flags, nparts, nparams, naddrs, nlangs, nenvs, strs_len; strs bytes;
 *   parts:  u(parent + 1) u8 kind u8 flags u hdr_off u(body_off - hdr_off)
 *           u(body_end - body_off) u body_lines u(env + 1)
 *           str type subtype id description encoding disposition md5 location
 *           list params disp_params language
 *   params: str name value; addrs: str name adl mailbox host; langs: str;
 *   envs:   str date subject in_reply_to message_id; list from sender reply_to to cc bcc */

/* ---- encode ---------------------------------------------------------------------------------- */

struct enc {
    uint8_t *d;
    size_t len, cap;
    int err;
};

static void put_bytes(struct enc *w, const void *p, size_t n)
{
    if (w->err != 0)
        return;
    if (w->cap - w->len < n) {
        size_t ncap = w->cap < 256 ? 256 : w->cap;
        uint8_t *d;

        while (ncap - w->len < n)
            ncap *= 2;
        d = realloc(w->d, ncap);
        if (d == NULL) {
            w->err = -ENOMEM;
            return;
        }
        w->d = d;
        w->cap = ncap;
    }
    memcpy(w->d + w->len, p, n);
    w->len += n;
}

static void put_u(struct enc *w, uint32_t v)
{
    uint8_t b[5];
    size_t n = 0;

    do {
        b[n] = (uint8_t) (v & 0x7f);
        v >>= 7;
        if (v != 0)
            b[n] |= 0x80;
        n++;
    } while (v != 0);
    put_bytes(w, b, n);
}

static void put_str(struct enc *w, struct mime_str s)
{
    if (s.off == MIME_NIL_OFF) {
        put_u(w, 0);
        return;
    }
    put_u(w, s.off + 1);
    put_u(w, s.len);
}

static void put_list(struct enc *w, struct mime_list l)
{
    put_u(w, l.count);
    if (l.count > 0)
        put_u(w, l.first);
}

int mime_encode(const struct mime_msg *m, uint8_t **out, size_t *out_len)
{
    struct enc w = {NULL, 0, 0, 0};
    uint8_t version = MIME_CODEC_VERSION;

    put_bytes(&w, &version, 1);
    put_u(&w, m->size);
    put_u(&w, m->flags);
    put_u(&w, m->nparts);
    put_u(&w, m->nparams);
    put_u(&w, m->naddrs);
    put_u(&w, m->nlangs);
    put_u(&w, m->nenvs);
    put_u(&w, m->strs_len);
    if (m->strs_len > 0)
        put_bytes(&w, m->strs, m->strs_len);
    for (uint32_t i = 0; i < m->nparts; i++) {
        const struct mime_part *p = &m->parts[i];
        uint8_t kf[2] = {p->kind, p->flags};

        put_u(&w, p->parent + 1); /* MIME_NONE + 1 == 0 */
        put_bytes(&w, kf, 2);
        put_u(&w, p->hdr_off);
        put_u(&w, p->body_off - p->hdr_off);
        put_u(&w, p->body_end - p->body_off);
        put_u(&w, p->body_lines);
        put_u(&w, p->env + 1);
        put_str(&w, p->type);
        put_str(&w, p->subtype);
        put_str(&w, p->id);
        put_str(&w, p->description);
        put_str(&w, p->encoding);
        put_str(&w, p->disposition);
        put_str(&w, p->md5);
        put_str(&w, p->location);
        put_list(&w, p->params);
        put_list(&w, p->disp_params);
        put_list(&w, p->language);
    }
    for (uint32_t i = 0; i < m->nparams; i++) {
        put_str(&w, m->params[i].name);
        put_str(&w, m->params[i].value);
    }
    for (uint32_t i = 0; i < m->naddrs; i++) {
        put_str(&w, m->addrs[i].name);
        put_str(&w, m->addrs[i].adl);
        put_str(&w, m->addrs[i].mailbox);
        put_str(&w, m->addrs[i].host);
    }
    for (uint32_t i = 0; i < m->nlangs; i++)
        put_str(&w, m->langs[i]);
    for (uint32_t i = 0; i < m->nenvs; i++) {
        const struct mime_envelope *env = &m->envs[i];

        put_str(&w, env->date);
        put_str(&w, env->subject);
        put_str(&w, env->in_reply_to);
        put_str(&w, env->message_id);
        put_list(&w, env->from);
        put_list(&w, env->sender);
        put_list(&w, env->reply_to);
        put_list(&w, env->to);
        put_list(&w, env->cc);
        put_list(&w, env->bcc);
    }
    if (w.err != 0) {
        free(w.d);
        return w.err;
    }
    *out = w.d;
    *out_len = w.len;
    return 0;
}

/* ---- decode ---------------------------------------------------------------------------------- */

struct dec {
    const uint8_t *p, *e;
    bool bad;
    const struct mime_msg *m; /* for string and list checks */
};

static uint32_t get_u(struct dec *r)
{
    uint64_t v = 0;

    for (unsigned shift = 0; shift < 35; shift += 7) {
        uint8_t b;

        if (r->p >= r->e) {
            r->bad = true;
            return 0;
        }
        b = *r->p++;
        v |= (uint64_t) (b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            if (v > UINT32_MAX)
                break;
            return (uint32_t) v;
        }
    }
    r->bad = true;
    return 0;
}

static uint8_t get_byte(struct dec *r)
{
    if (r->p >= r->e) {
        r->bad = true;
        return 0;
    }
    return *r->p++;
}

static struct mime_str get_str(struct dec *r)
{
    struct mime_str s = {MIME_NIL_OFF, 0};
    uint32_t off = get_u(r);

    if (off == 0)
        return s;
    s.off = off - 1;
    s.len = get_u(r);
    if ((uint64_t) s.off + s.len > r->m->strs_len)
        r->bad = true;
    return s;
}

static struct mime_list get_list(struct dec *r, uint32_t n)
{
    struct mime_list l = {0, 0};

    l.count = get_u(r);
    if (l.count > 0) {
        l.first = get_u(r);
        if ((uint64_t) l.first + l.count > n)
            r->bad = true;
    }
    return l;
}

/* alloc_n(): room for N elements of SIZE, N already checked against the bytes left. */
static bool alloc_n(void **arr, uint32_t *cap, uint32_t n, size_t size)
{
    if (n == 0)
        return true;
    *arr = calloc(n, size);
    if (*arr == NULL)
        return false;
    *cap = n;
    return true;
}

/* check_part(): the tree invariants for part I, whose parent was read. CHAIN[0..*TOP] is the
 * path from the root to the previous part: in pre-order the parent must be on it. */
static bool check_part(struct mime_msg *m, uint32_t i, uint32_t *chain, uint32_t *top)
{
    struct mime_part *p = &m->parts[i], *pp;

    if (p->kind > MIME_KIND_MESSAGE || (p->flags & ~MIME_PART_TRUNCATED) != 0)
        return false;
    if (p->hdr_off > p->body_off || p->body_off > p->body_end || p->body_end > m->size)
        return false;
    if (p->body_lines > p->body_end - p->body_off)
        return false;
    if (p->env != MIME_NONE && p->env >= m->nenvs)
        return false;
    if ((p->flags & MIME_PART_TRUNCATED) != 0 && p->kind != MIME_KIND_LEAF)
        return false;
    if (i == 0) {
        if (p->parent != MIME_NONE || p->env == MIME_NONE || p->hdr_off != 0 ||
            p->body_end != m->size)
            return false;
        chain[0] = 0;
        *top = 0;
        return true;
    }
    if (p->parent >= i)
        return false;
    pp = &m->parts[p->parent];
    if (pp->depth >= MIME_MAX_DEPTH || pp->depth > *top || chain[pp->depth] != p->parent)
        return false;
    if (pp->kind == MIME_KIND_LEAF || (pp->kind == MIME_KIND_MESSAGE && pp->nchildren > 0))
        return false;
    if ((pp->kind == MIME_KIND_MESSAGE) != (p->env != MIME_NONE))
        return false; /* exactly the encapsulated messages have an envelope */
    if (p->hdr_off < pp->body_off || p->body_end > pp->body_end)
        return false;
    if (pp->kind == MIME_KIND_MESSAGE &&
        (p->hdr_off != pp->body_off || p->body_end != pp->body_end))
        return false; /* the encapsulated message is the whole body */
    if (pp->nchildren > 0 && p->hdr_off < m->parts[chain[pp->depth + 1]].body_end)
        return false; /* siblings in order, not overlapping */
    p->depth = pp->depth + 1;
    if (pp->nchildren == 0)
        pp->child = i;
    else
        m->parts[chain[p->depth]].next = i;
    pp->nchildren++;
    chain[p->depth] = i;
    *top = p->depth;
    return true;
}

int mime_decode(const uint8_t *buf, size_t len, struct mime_msg *m)
{
    struct dec r = {buf, buf, false, m};
    uint32_t chain[MIME_MAX_DEPTH + 1], top = 0;
    size_t left;
    int err = -EINVAL;

    memset(m, 0, sizeof(*m));
    if (buf == NULL || len == 0)
        return -EINVAL;
    r.e = buf + len;
    if (get_byte(&r) != MIME_CODEC_VERSION)
        return -EINVAL;
    m->size = get_u(&r);
    m->flags = get_u(&r);
    m->nparts = get_u(&r);
    m->nparams = get_u(&r);
    m->naddrs = get_u(&r);
    m->nlangs = get_u(&r);
    m->nenvs = get_u(&r);
    m->strs_len = get_u(&r);
    if (r.bad || m->size > MIME_MESSAGE_MAX || (m->flags & ~MIME_MSG_TRUNCATED) != 0 ||
        m->nparts == 0 || m->nparts > MIME_MAX_PARTS || m->nenvs == 0 || m->nenvs > m->nparts ||
        m->strs_len > MIME_STRS_MAX)
        goto bad;
    /* every element takes at least one byte: no count may exceed what is left */
    left = (size_t) (r.e - r.p);
    if (m->strs_len > left || m->nparts > left || m->nparams > left || m->naddrs > left ||
        m->nlangs > left || m->nenvs > left)
        goto bad;
    err = -ENOMEM;
    if (!alloc_n((void **) &m->strs, &m->strs_cap, m->strs_len, 1) ||
        !alloc_n((void **) &m->parts, &m->parts_cap, m->nparts, sizeof(*m->parts)) ||
        !alloc_n((void **) &m->params, &m->params_cap, m->nparams, sizeof(*m->params)) ||
        !alloc_n((void **) &m->addrs, &m->addrs_cap, m->naddrs, sizeof(*m->addrs)) ||
        !alloc_n((void **) &m->langs, &m->langs_cap, m->nlangs, sizeof(*m->langs)) ||
        !alloc_n((void **) &m->envs, &m->envs_cap, m->nenvs, sizeof(*m->envs)))
        goto fail;
    err = -EINVAL;
    if (m->strs_len > 0)
        memcpy(m->strs, r.p, m->strs_len);
    r.p += m->strs_len;

    for (uint32_t i = 0; i < m->nparts && !r.bad; i++) {
        struct mime_part *p = &m->parts[i];
        uint32_t body_len, hdr_len;

        p->parent = get_u(&r) - 1;
        p->child = p->next = MIME_NONE;
        p->kind = get_byte(&r);
        p->flags = get_byte(&r);
        p->hdr_off = get_u(&r);
        hdr_len = get_u(&r);
        body_len = get_u(&r);
        p->body_lines = get_u(&r);
        p->env = get_u(&r) - 1;
        if ((uint64_t) p->hdr_off + hdr_len + body_len > m->size)
            goto bad;
        p->body_off = p->hdr_off + hdr_len;
        p->body_end = p->body_off + body_len;
        p->type = get_str(&r);
        p->subtype = get_str(&r);
        p->id = get_str(&r);
        p->description = get_str(&r);
        p->encoding = get_str(&r);
        p->disposition = get_str(&r);
        p->md5 = get_str(&r);
        p->location = get_str(&r);
        p->params = get_list(&r, m->nparams);
        p->disp_params = get_list(&r, m->nparams);
        p->language = get_list(&r, m->nlangs);
        if (r.bad || !check_part(m, i, chain, &top))
            goto bad;
    }
    for (uint32_t i = 0; i < m->nparts; i++) {
        const struct mime_part *p = &m->parts[i];

        /* a message/rfc822 has its encapsulated message; a truncated container none */
        if (p->kind == MIME_KIND_MESSAGE && p->nchildren != 1)
            goto bad;
    }
    for (uint32_t i = 0; i < m->nparams && !r.bad; i++) {
        m->params[i].name = get_str(&r);
        m->params[i].value = get_str(&r);
    }
    for (uint32_t i = 0; i < m->naddrs && !r.bad; i++) {
        m->addrs[i].name = get_str(&r);
        m->addrs[i].adl = get_str(&r);
        m->addrs[i].mailbox = get_str(&r);
        m->addrs[i].host = get_str(&r);
    }
    for (uint32_t i = 0; i < m->nlangs && !r.bad; i++)
        m->langs[i] = get_str(&r);
    for (uint32_t i = 0; i < m->nenvs && !r.bad; i++) {
        struct mime_envelope *env = &m->envs[i];

        env->date = get_str(&r);
        env->subject = get_str(&r);
        env->in_reply_to = get_str(&r);
        env->message_id = get_str(&r);
        env->from = get_list(&r, m->naddrs);
        env->sender = get_list(&r, m->naddrs);
        env->reply_to = get_list(&r, m->naddrs);
        env->to = get_list(&r, m->naddrs);
        env->cc = get_list(&r, m->naddrs);
        env->bcc = get_list(&r, m->naddrs);
    }
    if (r.bad || r.p != r.e)
        goto bad;
    return 0;

bad:
    err = -EINVAL;
fail:
    mime_free(m);
    return err;
}
