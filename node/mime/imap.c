/*
 * node/mime/imap.c
 * IMAP output of a parse result: ENVELOPE, BODY and BODYSTRUCTURE (RFC 3501 7.4.2, RFC 9051
 * 7.5.2) in the form Dovecot sends them, written into a growable struct mime_buf.
 * Strings are quoted when they can be (escaping " and \), else literals {n}\r\n.
 *
 * SECURITY: the strings were taken from messages (any bytes); none is written unquoted, NUL is
 * replaced (IMAP forbids it), and recursion is bounded by MIME_MAX_DEPTH (mime_decode() checks
 * the depth of stored trees).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mime_int.h"

/* ---- buffer ---------------------------------------------------------------------------------- */

void mime_buf_init(struct mime_buf *b)
{
    memset(b, 0, sizeof(*b));
}

void mime_buf_free(struct mime_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

void mime_buf_reset(struct mime_buf *b)
{
    b->len = 0;
    b->err = 0;
}

static bool reserve(struct mime_buf *b, size_t n)
{
    if (b->err != 0)
        return false;
    if (b->cap - b->len < n) {
        size_t ncap = b->cap < 256 ? 256 : b->cap;
        char *d;

        while (ncap - b->len < n) {
            if (ncap > SIZE_MAX / 2) {
                b->err = -ENOMEM;
                return false;
            }
            ncap *= 2;
        }
        d = realloc(b->data, ncap);
        if (d == NULL) {
            b->err = -ENOMEM;
            return false;
        }
        b->data = d;
        b->cap = ncap;
    }
    return true;
}

void mime_buf_add(struct mime_buf *b, const void *data, size_t len)
{
    if (len == 0 || !reserve(b, len))
        return;
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

static void add_lit(struct mime_buf *b, const char *s)
{
    mime_buf_add(b, s, strlen(s));
}

static void add_u32(struct mime_buf *b, uint32_t v)
{
    char num[16];
    int n = snprintf(num, sizeof(num), "%u", v);

    mime_buf_add(b, num, (size_t) n);
}

void mime_buf_add_nstring(struct mime_buf *b, const char *s, size_t len)
{
    const uint8_t *u = (const uint8_t *) s;
    size_t nuls = 0, specials = 0;
    bool literal = len > MIME_QUOTED_MAX;

    if (s == NULL) {
        add_lit(b, "NIL");
        return;
    }
    for (size_t i = 0; i < len; i++) {
        uint8_t ch = u[i];

        if (ch == 0) {
            nuls++;
            literal = true;
        } else if (ch == '\r' || ch == '\n' || ch >= 0x80) {
            literal = true;
        } else if (ch == '"' || ch == '\\') {
            specials++;
        }
    }
    if (literal) {
        char head[32];
        int n = snprintf(head, sizeof(head), "{%zu}\r\n", len + 2 * nuls);

        if (!reserve(b, (size_t) n + len + 2 * nuls))
            return;
        mime_buf_add(b, head, (size_t) n);
        for (size_t i = 0, start = 0; i <= len; i++) {
            if (i == len || u[i] == 0) {
                mime_buf_add(b, u + start, i - start);
                if (i < len)
                    mime_buf_add(b, "\xef\xbf\xbd", 3); /* U+FFFD for NUL */
                start = i + 1;
            }
        }
        return;
    }
    if (!reserve(b, len + specials + 2))
        return;
    b->data[b->len++] = '"';
    for (size_t i = 0; i < len; i++) {
        if (u[i] == '"' || u[i] == '\\')
            b->data[b->len++] = '\\';
        b->data[b->len++] = (char) u[i];
    }
    b->data[b->len++] = '"';
}

static void add_str(struct mime_buf *b, const struct mime_msg *m, struct mime_str s)
{
    mime_buf_add_nstring(b, mime_str_ptr(m, s), s.len);
}

/* add_string(): where IMAP wants a string, never NIL (a string lost to MIME_STRS_MAX, or a
 * stored record that says NIL there, is written as ""). */
static void add_string(struct mime_buf *b, const struct mime_msg *m, struct mime_str s)
{
    if (mime_str_is_nil(s))
        add_lit(b, "\"\"");
    else
        add_str(b, m, s);
}

/* ---- ENVELOPE -------------------------------------------------------------------------------- */

static void add_addrs(struct mime_buf *b, const struct mime_msg *m, struct mime_list l)
{
    if (l.count == 0) {
        add_lit(b, "NIL");
        return;
    }
    add_lit(b, "(");
    for (uint32_t i = 0; i < l.count; i++) {
        const struct mime_addr *a = &m->addrs[l.first + i];

        add_lit(b, "(");
        add_str(b, m, a->name);
        add_lit(b, " ");
        add_str(b, m, a->adl);
        add_lit(b, " ");
        add_str(b, m, a->mailbox);
        add_lit(b, " ");
        add_str(b, m, a->host);
        add_lit(b, ")");
    }
    add_lit(b, ")");
}

int mime_write_envelope(const struct mime_msg *m, uint32_t part, struct mime_buf *b)
{
    const struct mime_envelope *env;

    if (part >= m->nparts || m->parts[part].env >= m->nenvs) {
        add_lit(b, "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
        return b->err;
    }
    env = &m->envs[m->parts[part].env];
    add_lit(b, "(");
    add_str(b, m, env->date);
    add_lit(b, " ");
    add_str(b, m, env->subject);
    add_lit(b, " ");
    add_addrs(b, m, env->from);
    add_lit(b, " ");
    /* RFC 3501 7.4.2: absent (or empty) Sender and Reply-To are the From */
    add_addrs(b, m, env->sender.count > 0 ? env->sender : env->from);
    add_lit(b, " ");
    add_addrs(b, m, env->reply_to.count > 0 ? env->reply_to : env->from);
    add_lit(b, " ");
    add_addrs(b, m, env->to);
    add_lit(b, " ");
    add_addrs(b, m, env->cc);
    add_lit(b, " ");
    add_addrs(b, m, env->bcc);
    add_lit(b, " ");
    add_str(b, m, env->in_reply_to);
    add_lit(b, " ");
    add_str(b, m, env->message_id);
    add_lit(b, ")");
    return b->err;
}

/* ---- BODYSTRUCTURE --------------------------------------------------------------------------- */

/* params(): ("name" "value" ...) or NIL; a text part without a charset gets the default one
 * appended (RFC 2045 5.2), as Dovecot does. */
static void add_params(struct mime_buf *b, const struct mime_msg *m, struct mime_list l, bool text)
{
    bool charset = false;

    if (l.count == 0 && !text) {
        add_lit(b, "NIL");
        return;
    }
    add_lit(b, "(");
    for (uint32_t i = 0; i < l.count; i++) {
        const struct mime_param *pp = &m->params[l.first + i];

        if (i > 0)
            add_lit(b, " ");
        add_string(b, m, pp->name);
        add_lit(b, " ");
        add_string(b, m, pp->value);
        if (mime_str_eq(m, pp->name, "charset"))
            charset = true;
    }
    if (text && !charset)
        add_lit(b, l.count > 0 ? " \"charset\" \"us-ascii\"" : "\"charset\" \"us-ascii\"");
    add_lit(b, ")");
}

/* add_ext(): body-fld-dsp SP body-fld-lang SP body-fld-loc */
static void add_ext(struct mime_buf *b, const struct mime_msg *m, const struct mime_part *p)
{
    if (mime_str_is_nil(p->disposition)) {
        add_lit(b, "NIL");
    } else {
        add_lit(b, "(");
        add_str(b, m, p->disposition);
        add_lit(b, " ");
        add_params(b, m, p->disp_params, false);
        add_lit(b, ")");
    }
    add_lit(b, " ");
    if (p->language.count == 0) {
        add_lit(b, "NIL");
    } else {
        add_lit(b, "(");
        for (uint32_t i = 0; i < p->language.count; i++) {
            if (i > 0)
                add_lit(b, " ");
            add_string(b, m, m->langs[p->language.first + i]);
        }
        add_lit(b, ")");
    }
    add_lit(b, " ");
    add_str(b, m, p->location);
}

static void write_part(struct mime_buf *b, const struct mime_msg *m, uint32_t i, bool ext);

static void write_multipart(struct mime_buf *b, const struct mime_msg *m, const struct mime_part *p,
                            bool ext)
{
    if (p->nchildren == 0) {
        /* no parts (no boundary found): Dovecot shows one empty text/plain */
        add_lit(b, "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0");
        add_lit(b, ext ? " NIL NIL NIL NIL)" : ")");
    }
    for (uint32_t c = p->child; c != MIME_NONE; c = m->parts[c].next)
        write_part(b, m, c, ext);
    add_lit(b, " ");
    if (mime_str_is_nil(p->subtype))
        add_lit(b, "\"x-unknown\"");
    else
        add_str(b, m, p->subtype);
    if (!ext)
        return;
    add_lit(b, " ");
    add_params(b, m, p->params, false);
    add_lit(b, " ");
    add_ext(b, m, p);
}

static void write_leaf(struct mime_buf *b, const struct mime_msg *m, const struct mime_part *p,
                       bool ext)
{
    bool text = false;

    if (p->kind == MIME_KIND_MESSAGE) {
        add_lit(b, "\"message\" \"rfc822\"");
    } else if ((p->flags & MIME_PART_TRUNCATED) != 0) {
        add_lit(b, "\"application\" \"octet-stream\"");
    } else if (mime_str_is_nil(p->type) || mime_str_is_nil(p->subtype)) {
        add_lit(b, "\"text\" \"plain\"");
        text = true;
    } else {
        add_str(b, m, p->type);
        add_lit(b, " ");
        add_str(b, m, p->subtype);
        text = mime_str_eq(m, p->type, "text");
    }
    add_lit(b, " ");
    add_params(b, m, p->params, text);
    add_lit(b, " ");
    add_str(b, m, p->id);
    add_lit(b, " ");
    add_str(b, m, p->description);
    add_lit(b, " ");
    if (mime_str_is_nil(p->encoding))
        add_lit(b, "\"7bit\"");
    else
        add_str(b, m, p->encoding);
    add_lit(b, " ");
    add_u32(b, p->body_end - p->body_off);
    if (p->kind == MIME_KIND_MESSAGE && p->child != MIME_NONE) {
        add_lit(b, " ");
        mime_write_envelope(m, p->child, b);
        add_lit(b, " ");
        write_part(b, m, p->child, ext);
        add_lit(b, " ");
        add_u32(b, p->body_lines);
    } else if (text) {
        add_lit(b, " ");
        add_u32(b, p->body_lines);
    }
    if (!ext)
        return;
    add_lit(b, " ");
    add_str(b, m, p->md5);
    add_lit(b, " ");
    add_ext(b, m, p);
}

static void write_part(struct mime_buf *b, const struct mime_msg *m, uint32_t i, bool ext)
{
    const struct mime_part *p = &m->parts[i];

    add_lit(b, "(");
    if (p->kind == MIME_KIND_MULTIPART)
        write_multipart(b, m, p, ext);
    else
        write_leaf(b, m, p, ext);
    add_lit(b, ")");
}

int mime_write_bodystructure(const struct mime_msg *m, bool extensible, struct mime_buf *b)
{
    if (m->nparts == 0) {
        add_lit(b, "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0");
        add_lit(b, extensible ? " NIL NIL NIL NIL)" : ")");
        return b->err;
    }
    write_part(b, m, 0, extensible);
    return b->err;
}
