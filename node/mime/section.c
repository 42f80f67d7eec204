/*
 * node/mime/section.c
 * BODY[section] support: mapping an RFC 3501 6.4.5 / RFC 9051 6.4.5 section-spec ("1.2.MIME",
 * "HEADER.FIELDS", "3.TEXT", "") to a byte range of the stored message, and the byte-exact
 * header field filter of HEADER.FIELDS and HEADER.FIELDS.NOT.
 *
 * SECURITY: section text comes from IMAP clients, header bytes from senders; both are read
 * within the lengths given, part numbers are checked against the tree.
 */
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "mime_int.h"

#define SECTION_NUMBER_MAX 1000000 /* part numbers above are no part (MIME_MAX_PARTS) */

static bool keyword(const char *s, size_t len, const char *kw)
{
    return len == strlen(kw) && strncasecmp(s, kw, len) == 0;
}

/* nth_child(): the N-th (from 1) child of part I, or MIME_NONE. */
static uint32_t nth_child(const struct mime_msg *m, uint32_t i, uint32_t n)
{
    uint32_t c = m->parts[i].child;

    while (c != MIME_NONE && --n > 0)
        c = m->parts[c].next;
    return c;
}

static struct mime_range span(uint32_t from, uint32_t to)
{
    struct mime_range r = {from, to - from};

    return r;
}

int mime_section_range(const struct mime_msg *m, const char *section, size_t len,
                       struct mime_range *out, enum mime_section_kind *kind)
{
    const char *s = section, *e = section + len;
    uint32_t i = 0;
    bool path = false;
    const struct mime_part *p;

    if (m->nparts == 0)
        return -ENOENT;
    /* part numbers, as Dovecot's imap_msgpart_find() walks them */
    while (s < e && *s >= '0' && *s <= '9') {
        uint32_t n = 0;

        if (*s == '0')
            return -EINVAL; /* nz-number */
        for (; s < e && *s >= '0' && *s <= '9'; s++) {
            n = n * 10 + (uint32_t) (*s - '0');
            if (n > SECTION_NUMBER_MAX)
                return -ENOENT;
        }
        if (s < e) {
            if (*s != '.' || s + 1 == e)
                return -EINVAL;
            s++;
        }
        path = true;
        if (m->parts[i].kind == MIME_KIND_MULTIPART)
            i = nth_child(m, i, n);
        else if (n != 1 ||
                 (s < e && *s >= '0' && *s <= '9' && m->parts[i].kind != MIME_KIND_MESSAGE))
            i = MIME_NONE; /* a non-multipart has only part 1, itself; a path goes on only
                              into a message/rfc822 (Dovecot's imap_msgpart_find()) */
        if (i == MIME_NONE)
            return -ENOENT;
        if (m->parts[i].kind == MIME_KIND_MESSAGE && s < e && *s >= '0' && *s <= '9') {
            /* going on inside a message/rfc822: its encapsulated message */
            i = m->parts[i].child;
            if (i == MIME_NONE)
                return -ENOENT;
        }
    }

    if (s == e) {
        *kind = MIME_SECTION_BODY;
        *out = path ? span(m->parts[i].body_off, m->parts[i].body_end) : span(0, m->size);
        return 0;
    }
    if (keyword(s, (size_t) (e - s), "MIME")) {
        if (!path)
            return -EINVAL; /* RFC 3501: MIME needs a part number */
        *kind = MIME_SECTION_MIME;
        *out = span(m->parts[i].hdr_off, m->parts[i].body_off);
        return 0;
    }
    if (keyword(s, (size_t) (e - s), "HEADER"))
        *kind = MIME_SECTION_HEADER;
    else if (keyword(s, (size_t) (e - s), "HEADER.FIELDS"))
        *kind = MIME_SECTION_HEADER_FIELDS;
    else if (keyword(s, (size_t) (e - s), "HEADER.FIELDS.NOT"))
        *kind = MIME_SECTION_HEADER_FIELDS_NOT;
    else if (keyword(s, (size_t) (e - s), "TEXT"))
        *kind = MIME_SECTION_TEXT;
    else
        return -EINVAL;

    /* HEADER* and TEXT: of the message itself, or of a message/rfc822 part's message */
    if (path) {
        if (m->parts[i].kind != MIME_KIND_MESSAGE || m->parts[i].child == MIME_NONE)
            return -ENOENT;
        i = m->parts[i].child;
    }
    p = &m->parts[i];
    *out =
        *kind == MIME_SECTION_TEXT ? span(p->body_off, p->body_end) : span(p->hdr_off, p->body_off);
    return 0;
}

/* listed(): NAME (LEN bytes) is one of FIELDS, ignoring ASCII case. */
static bool listed(const uint8_t *name, size_t len, const char *const *fields, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (fields[i] != NULL && strlen(fields[i]) == len &&
            strncasecmp((const char *) name, fields[i], len) == 0)
            return true;
    }
    return false;
}

int mime_header_fields(const uint8_t *msg, struct mime_range hdr, const char *const *fields,
                       size_t nfields, bool exclude, struct mime_buf *out)
{
    const uint8_t *s = msg + hdr.off, *e = s + hdr.len;
    const uint8_t *field = NULL; /* start of the current field */
    bool keep = false;

    while (s < e) {
        const uint8_t *nl = memchr(s, '\n', (size_t) (e - s));
        const uint8_t *next = nl != NULL ? nl + 1 : e;
        const uint8_t *ce = (nl != NULL && nl > s && nl[-1] == '\r') ? nl - 1 : (nl ? nl : e);

        if (nl != NULL && ce == s) {
            /* the blank line: end of the header, kept (RFC 3501 6.4.5) */
            if (field != NULL && keep)
                mime_buf_add(out, field, (size_t) (s - field));
            mime_buf_add(out, s, (size_t) (next - s));
            return out->err;
        }
        if (*s != ' ' && *s != '\t') {
            /* a new field: flush the previous one */
            const uint8_t *colon = memchr(s, ':', (size_t) (ce - s)), *name_end;

            if (field != NULL && keep)
                mime_buf_add(out, field, (size_t) (s - field));
            name_end = colon != NULL ? colon : ce;
            while (colon != NULL && name_end > s && (name_end[-1] == ' ' || name_end[-1] == '\t'))
                name_end--;
            keep = listed(s, (size_t) (name_end - s), fields, nfields) != exclude;
            field = s;
        } else if (field == NULL) {
            /* continuation lines before any field: a field without a name */
            keep = exclude;
            field = s;
        }
        s = next;
    }
    if (field != NULL && keep)
        mime_buf_add(out, field, (size_t) (e - field));
    return out->err;
}
