/*
 * tests/unit/mime/test_mime_gmime.c
 * Differential test of node/mime/ against GMime 3 (DEPS.md 8: GMime only as a test oracle): the
 * part tree (count, order, nesting and type/subtype of every part, message/rfc822 included)
 * must be the same for the well-formed corpus messages and for generated nested messages.
 * GMime is loaded with dlopen() at run time, so this file needs no build flags; without
 * libgmime-3.0.so.0 (Debian: libgmime-3.0-0) the tests are skipped.
 * SECURITY: test code; the messages are our own.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mime/mime.h"

/* ---- GMime through dlopen() ----------------------------------------------------------- */

typedef unsigned long gtype_t; /* GType is a gsize */

static struct {
    void *lib;
    void (*init)(void);
    void *(*stream_mem_new_with_buffer)(const char *, size_t);
    void *(*parser_new_with_stream)(void *);
    void *(*parser_construct_message)(void *, void *);
    void *(*message_get_mime_part)(void *);
    void *(*object_get_content_type)(void *);
    const char *(*content_type_get_media_type)(void *);
    const char *(*content_type_get_media_subtype)(void *);
    int (*multipart_get_count)(void *);
    void *(*multipart_get_part)(void *, int);
    void *(*message_part_get_message)(void *);
    gtype_t (*multipart_get_type)(void);
    gtype_t (*message_part_get_type)(void);
    int (*type_check_instance_is_a)(void *, gtype_t);
    void (*object_unref)(void *);
} gm;

static bool gmime_load(void)
{
    if (gm.lib != NULL)
        return true;
    gm.lib = dlopen("libgmime-3.0.so.0", RTLD_NOW | RTLD_LOCAL);
    if (gm.lib == NULL)
        return false;
#define SYM(field, name)                                                                           \
    do {                                                                                           \
        *(void **) &gm.field = dlsym(gm.lib, name);                                                \
        if (gm.field == NULL) {                                                                    \
            dlclose(gm.lib);                                                                       \
            gm.lib = NULL;                                                                         \
            return false;                                                                          \
        }                                                                                          \
    } while (0)
    SYM(init, "g_mime_init");
    SYM(stream_mem_new_with_buffer, "g_mime_stream_mem_new_with_buffer");
    SYM(parser_new_with_stream, "g_mime_parser_new_with_stream");
    SYM(parser_construct_message, "g_mime_parser_construct_message");
    SYM(message_get_mime_part, "g_mime_message_get_mime_part");
    SYM(object_get_content_type, "g_mime_object_get_content_type");
    SYM(content_type_get_media_type, "g_mime_content_type_get_media_type");
    SYM(content_type_get_media_subtype, "g_mime_content_type_get_media_subtype");
    SYM(multipart_get_count, "g_mime_multipart_get_count");
    SYM(multipart_get_part, "g_mime_multipart_get_part");
    SYM(message_part_get_message, "g_mime_message_part_get_message");
    SYM(multipart_get_type, "g_mime_multipart_get_type");
    SYM(message_part_get_type, "g_mime_message_part_get_type");
    SYM(type_check_instance_is_a, "g_type_check_instance_is_a");
    SYM(object_unref, "g_object_unref");
#undef SYM
    gm.init();
    return true;
}

/* ---- tree signatures ------------------------------------------------------------------ */

/* A tree as text: "type/subtype" per part, children in [ ], lowercase. Both parsers' trees
 * are written this way and compared. */
struct sig {
    char buf[65536];
    size_t len;
};

static void sig_add(struct sig *s, const char *p, size_t n)
{
    for (size_t i = 0; i < n && s->len + 1 < sizeof(s->buf); i++)
        s->buf[s->len++] = (char) tolower((unsigned char) p[i]);
    s->buf[s->len] = 0;
}

static void sig_lit(struct sig *s, const char *p)
{
    sig_add(s, p, strlen(p));
}

static void gmime_sig(void *obj, struct sig *s)
{
    void *ct = obj != NULL ? gm.object_get_content_type(obj) : NULL;
    const char *type = ct != NULL ? gm.content_type_get_media_type(ct) : NULL;
    const char *sub = ct != NULL ? gm.content_type_get_media_subtype(ct) : NULL;

    if (obj != NULL && gm.type_check_instance_is_a(obj, gm.multipart_get_type())) {
        int n = gm.multipart_get_count(obj);

        sig_lit(s, "multipart/");
        sig_lit(s, sub != NULL ? sub : "?");
        sig_lit(s, "[");
        for (int i = 0; i < n; i++)
            gmime_sig(gm.multipart_get_part(obj, i), s);
        sig_lit(s, "]");
        return;
    }
    if (obj != NULL && gm.type_check_instance_is_a(obj, gm.message_part_get_type())) {
        void *msg = gm.message_part_get_message(obj);

        sig_lit(s, "message/rfc822[");
        gmime_sig(msg != NULL ? gm.message_get_mime_part(msg) : NULL, s);
        sig_lit(s, "]");
        return;
    }
    sig_lit(s, type != NULL ? type : "text");
    sig_lit(s, "/");
    sig_lit(s, sub != NULL ? sub : "plain");
    sig_lit(s, " ");
}

static void gmime_tree(const char *msg, size_t len, struct sig *s)
{
    void *stream = gm.stream_mem_new_with_buffer(msg, len);
    void *parser = gm.parser_new_with_stream(stream);
    void *m = gm.parser_construct_message(parser, NULL);

    s->len = 0;
    s->buf[0] = 0;
    gmime_sig(m != NULL ? gm.message_get_mime_part(m) : NULL, s);
    if (m != NULL)
        gm.object_unref(m);
    gm.object_unref(parser);
    gm.object_unref(stream);
}

static void our_sig(const struct mime_msg *m, uint32_t i, struct sig *s)
{
    const struct mime_part *p = &m->parts[i];

    if (p->kind == MIME_KIND_MULTIPART) {
        sig_lit(s, "multipart/");
        sig_add(s, mime_str_ptr(m, p->subtype), p->subtype.len);
        sig_lit(s, "[");
        for (uint32_t c = p->child; c != MIME_NONE; c = m->parts[c].next)
            our_sig(m, c, s);
        sig_lit(s, "]");
        return;
    }
    if (p->kind == MIME_KIND_MESSAGE) {
        sig_lit(s, "message/rfc822[");
        our_sig(m, p->child, s);
        sig_lit(s, "]");
        return;
    }
    if (mime_str_is_nil(p->type)) {
        sig_lit(s, "text/plain ");
        return;
    }
    sig_add(s, mime_str_ptr(m, p->type), p->type.len);
    sig_lit(s, "/");
    sig_add(s, mime_str_ptr(m, p->subtype), p->subtype.len);
    sig_lit(s, " ");
}

static uint32_t total_parts, total_messages; /* how much the comparisons covered */

static void compare(const char *name, const char *msg, size_t len)
{
    static struct sig ours, theirs;
    struct mime_msg m;

    assert_int_equal(mime_parse((const uint8_t *) msg, len, &m), 0);
    total_parts += m.nparts;
    total_messages++;
    ours.len = 0;
    ours.buf[0] = 0;
    our_sig(&m, 0, &ours);
    mime_free(&m);
    gmime_tree(msg, len, &theirs);
    if (strcmp(ours.buf, theirs.buf) != 0) {
        print_error("%s:\n  ours  %s\n  gmime %s\n", name, ours.buf, theirs.buf);
        fail();
    }
}

/* ---- tests ---------------------------------------------------------------------------- */

static char *load(const char *name, size_t *len)
{
    char path[4096];
    const char *slash = strrchr(__FILE__, '/');
    FILE *f;
    char *buf;
    long size;

    snprintf(path, sizeof(path), "%.*s/corpus/%s", slash != NULL ? (int) (slash - __FILE__) : 1,
             slash != NULL ? __FILE__ : ".", name);
    f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    rewind(f);
    buf = malloc((size_t) size + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t) size, f), (size_t) size);
    fclose(f);
    *len = (size_t) size;
    return buf;
}

/* The well-formed corpus messages. Left out, because the two parsers repair broken MIME
 * differently: missing_end.eml and no_boundary.eml (GMime keeps parts and prefix rules of its
 * own), empty.eml and header_only.eml (no body), nul_bytes.eml. */
static void test_corpus(void **state)
{
    static const char *const files[] = {
        "plain.eml",         "alternative.eml",      "mixed_nested.eml", "rfc822_attach.eml",
        "encoded_words.eml", "eightbit_headers.eml", "bare_lf.eml",      "groups.eml",
        "params_2231.eml",   "digest.eml",           "no_mime.eml",
    };

    (void) state;
    if (!gmime_load())
        skip();
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        size_t len;
        char *msg = load(files[i], &len);

        compare(files[i], msg, len);
        free(msg);
    }
}

/* Generated messages: random trees of multipart/mixed|alternative|related, message/rfc822 and
 * leaves of several types, up to 5 levels, with CRLF or LF line ends (deterministic PRNG). */
static uint32_t rng_state = 12345;

static uint32_t rng(uint32_t n)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return (rng_state >> 8) % n;
}

struct gen {
    char *d;
    size_t len, cap;
    const char *nl;
    unsigned boundary;
};

__attribute__((format(printf, 2, 3))) static void gen_add(struct gen *g, const char *fmt, ...);

static void gen_add(struct gen *g, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(g->d + g->len, g->cap - g->len, fmt, ap);
        va_end(ap);
        if ((size_t) n < g->cap - g->len)
            break;
        g->cap = g->cap * 2 + (size_t) n;
        g->d = realloc(g->d, g->cap);
        assert_non_null(g->d);
    }
    g->len += (size_t) n;
}

static void gen_entity(struct gen *g, int depth)
{
    static const char *const leaves[] = {"text/plain; charset=utf-8", "text/html", "image/png",
                                         "application/pdf; name=\"a.pdf\"",
                                         "application/octet-stream"};
    static const char *const multis[] = {"mixed", "alternative", "related"};
    uint32_t what = depth >= 5 ? 0 : depth == 0 ? 6 + rng(4) : rng(10);
    const char *nl = g->nl;

    if (what < 6) {
        gen_add(g, "Content-Type: %s%s", leaves[rng(5)], nl);
        if (rng(2))
            gen_add(g, "Content-Transfer-Encoding: base64%s", nl);
        gen_add(g, "%s", nl);
        for (uint32_t i = rng(4); i > 0; i--)
            gen_add(g, "line %u of text -- not a boundary%s", i, nl);
    } else if (what < 9) {
        unsigned b = g->boundary++;
        uint32_t n = 1 + rng(4);

        gen_add(g, "Content-Type: multipart/%s; boundary=\"=_b%u_=\"%s%s", multis[rng(3)], b, nl,
                nl);
        if (rng(2))
            gen_add(g, "preamble%s", nl);
        for (uint32_t i = 0; i < n; i++) {
            gen_add(g, "--=_b%u_=%s", b, nl);
            gen_entity(g, depth + 1);
            gen_add(g, "%s", nl);
        }
        gen_add(g, "--=_b%u_=--%s", b, nl);
        if (rng(2))
            gen_add(g, "epilogue%s", nl);
    } else {
        gen_add(g, "Content-Type: message/rfc822%s%s", nl, nl);
        gen_add(g, "From: inner@example.org%sSubject: inner %d%sMIME-Version: 1.0%s", nl, depth, nl,
                nl);
        gen_entity(g, depth + 1);
    }
}

static void test_generated(void **state)
{
    struct gen g = {NULL, 0, 0, "\r\n", 0};

    (void) state;
    if (!gmime_load())
        skip();
    g.cap = 4096;
    g.d = malloc(g.cap);
    assert_non_null(g.d);
    for (int i = 0; i < 500; i++) {
        char name[32];

        g.len = 0;
        g.nl = rng(4) == 0 ? "\n" : "\r\n";
        gen_add(&g, "From: gen@example.org%sSubject: generated %d%sMIME-Version: 1.0%s", g.nl, i,
                g.nl, g.nl);
        gen_entity(&g, 0);
        snprintf(name, sizeof(name), "generated #%d", i);
        compare(name, g.d, g.len);
    }
    print_message("%u messages, %u parts compared with GMime\n", total_messages, total_parts);
    assert_true(total_parts > 4 * total_messages); /* the generator does nest */
    free(g.d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus),
        cmocka_unit_test(test_generated),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
