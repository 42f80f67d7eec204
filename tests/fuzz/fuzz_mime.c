/*
 * tests/fuzz/fuzz_mime.c
 * libFuzzer target for node/mime/. The input is a message: it is parsed (never an error), every
 * part range must lie inside the message and the tree keep its invariants, mime_encode() then
 * mime_decode() must give back the same record (encode(decode(encode(x))) == encode(x)) and the
 * same ENVELOPE/BODY/BODYSTRUCTURE, and section lookups and HEADER.FIELDS must stay inside the
 * message. The same bytes are also fed to mime_decode() as a (corrupt) stored record.
 * SECURITY: this is the parser of bytes from anyone who can send mail.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mime/mime.h"
#include "fuzz_check.h"

static void check_tree(const struct mime_msg *m)
{
    FUZZ_CHECK(m->nparts >= 1 && m->nparts <= MIME_MAX_PARTS);
    FUZZ_CHECK(m->parts[0].hdr_off == 0 && m->parts[0].body_end == m->size);
    for (uint32_t i = 0; i < m->nparts; i++) {
        const struct mime_part *p = &m->parts[i];
        uint32_t n = 0;

        FUZZ_CHECK(p->hdr_off <= p->body_off && p->body_off <= p->body_end);
        FUZZ_CHECK(p->body_end <= m->size);
        FUZZ_CHECK(p->depth <= MIME_MAX_DEPTH);
        FUZZ_CHECK(p->body_lines <= p->body_end - p->body_off);
        if (i > 0) {
            const struct mime_part *pp = &m->parts[p->parent];

            FUZZ_CHECK(p->parent < i && p->depth == pp->depth + 1);
            FUZZ_CHECK(pp->kind != MIME_KIND_LEAF);
            FUZZ_CHECK(p->hdr_off >= pp->body_off && p->body_end <= pp->body_end);
            FUZZ_CHECK((pp->kind == MIME_KIND_MESSAGE) == (p->env != MIME_NONE));
        }
        for (uint32_t c = p->child; c != MIME_NONE; c = m->parts[c].next) {
            FUZZ_CHECK(c > i && c < m->nparts && m->parts[c].parent == i);
            n++;
        }
        FUZZ_CHECK(n == p->nchildren);
        FUZZ_CHECK(p->kind != MIME_KIND_MESSAGE || p->nchildren == 1);
    }
}

/* write_all(): every IMAP output of M into B. */
static void write_all(const struct mime_msg *m, struct mime_buf *b)
{
    for (uint32_t i = 0; i < m->nparts; i++) {
        if (m->parts[i].env != MIME_NONE)
            FUZZ_CHECK(mime_write_envelope(m, i, b) == 0);
    }
    FUZZ_CHECK(mime_write_bodystructure(m, false, b) == 0);
    FUZZ_CHECK(mime_write_bodystructure(m, true, b) == 0);
}

/* sections(): part paths up to 3 levels of 1..2 with every suffix, inside the message. */
static void sections(const struct mime_msg *m, const uint8_t *msg)
{
    static const char *const suffixes[] = {"", ".MIME", ".HEADER", ".TEXT", ".HEADER.FIELDS.NOT"};
    static const char *const fields[] = {"From", "content-type", "Subject"};
    static const char *const paths[] = {"",      "1",     "2",     "1.1",   "1.2",
                                        "2.1",   "2.2",   "1.1.1", "1.1.2", "1.2.1",
                                        "2.1.1", "2.1.2", "1.2.2", "2.2.1", "2.2.2"};
    struct mime_buf b;

    mime_buf_init(&b);
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        for (size_t k = 0; k < sizeof(suffixes) / sizeof(suffixes[0]); k++) {
            char sec[64];
            int n = snprintf(sec, sizeof(sec), "%s%s", paths[i],
                             paths[i][0] != 0 ? suffixes[k] : suffixes[k] + (k > 0));
            struct mime_range r;
            enum mime_section_kind kind;
            int rc = mime_section_range(m, sec, (size_t) n, &r, &kind);

            FUZZ_CHECK(rc == 0 || rc == -ENOENT || rc == -EINVAL);
            if (rc != 0)
                continue;
            FUZZ_CHECK((uint64_t) r.off + r.len <= m->size);
            if (kind == MIME_SECTION_HEADER_FIELDS_NOT) {
                mime_buf_reset(&b);
                FUZZ_CHECK(mime_header_fields(msg, r, fields, 3, true, &b) == 0);
                FUZZ_CHECK(b.len <= r.len);
                mime_buf_reset(&b);
                FUZZ_CHECK(mime_header_fields(msg, r, fields, 3, false, &b) == 0);
                FUZZ_CHECK(b.len <= r.len);
            }
        }
    }
    mime_buf_free(&b);
}

/* roundtrip(): encode, decode, encode: same bytes and same IMAP output. */
static void roundtrip(const struct mime_msg *m)
{
    uint8_t *e1, *e2;
    size_t l1, l2;
    struct mime_msg d;
    struct mime_buf w1, w2;

    FUZZ_CHECK(mime_encode(m, &e1, &l1) == 0);
    FUZZ_CHECK(mime_decode(e1, l1, &d) == 0);
    check_tree(&d);
    FUZZ_CHECK(mime_encode(&d, &e2, &l2) == 0);
    FUZZ_CHECK(l1 == l2 && memcmp(e1, e2, l1) == 0);
    mime_buf_init(&w1);
    mime_buf_init(&w2);
    write_all(m, &w1);
    write_all(&d, &w2);
    FUZZ_CHECK(w1.len == w2.len && memcmp(w1.data, w2.data, w1.len) == 0);
    mime_buf_free(&w1);
    mime_buf_free(&w2);
    mime_free(&d);
    free(e1);
    free(e2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mime_msg m;

    /* as a message */
    FUZZ_CHECK(mime_parse(data, size, &m) == 0);
    FUZZ_CHECK(m.size == size);
    check_tree(&m);
    roundtrip(&m);
    sections(&m, data);
    mime_free(&m);

    /* as a stored record: refused, or a tree the writers can use */
    if (mime_decode(data, size, &m) == 0) {
        check_tree(&m);
        roundtrip(&m);
        mime_free(&m);
    }
    return 0;
}
