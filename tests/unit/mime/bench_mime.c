/*
 * tests/unit/mime/bench_mime.c
 * Timing of node/mime/ (not a ctest: tern_unit_dir() only builds test_*.c). Build and run:
 *   gcc -O2 -D_GNU_SOURCE -Inode tests/unit/mime/bench_mime.c node/mime/[a-z]*.c -o bench_mime
 *   ./bench_mime tests/unit/mime/corpus
 * Prints per-operation times for the corpus messages (mixed_nested.eml is 4.2 KiB) and for
 * generated 10 MB and 50 MB messages with one base64 attachment.
 * SECURITY: benchmark only; reads our own corpus.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mime/mime.h"

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static uint8_t *load(const char *dir, const char *name, size_t *len)
{
    char path[4096];
    FILE *f;
    uint8_t *buf;
    long size;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    rewind(f);
    buf = malloc((size_t) size + 1);
    if (buf == NULL || fread(buf, 1, (size_t) size, f) != (size_t) size)
        exit(1);
    fclose(f);
    *len = (size_t) size;
    return buf;
}

static void bench(const char *name, const uint8_t *msg, size_t len, int iters)
{
    struct mime_msg m, d;
    struct mime_buf b;
    uint8_t *enc = NULL;
    size_t enc_len = 0;
    double t0, t_parse, t_enc, t_dec, t_write;

    mime_buf_init(&b);
    t0 = now();
    for (int i = 0; i < iters; i++) {
        if (mime_parse(msg, len, &m) != 0)
            exit(1);
        mime_free(&m);
    }
    t_parse = (now() - t0) / iters;
    mime_parse(msg, len, &m);
    t0 = now();
    for (int i = 0; i < iters; i++) {
        free(enc);
        if (mime_encode(&m, &enc, &enc_len) != 0)
            exit(1);
    }
    t_enc = (now() - t0) / iters;
    t0 = now();
    for (int i = 0; i < iters; i++) {
        if (mime_decode(enc, enc_len, &d) != 0)
            exit(1);
        mime_free(&d);
    }
    t_dec = (now() - t0) / iters;
    t0 = now();
    for (int i = 0; i < iters; i++) {
        mime_buf_reset(&b);
        mime_write_envelope(&m, 0, &b);
        mime_write_bodystructure(&m, true, &b);
    }
    t_write = (now() - t0) / iters;
    printf("%-22s %9zu B %5u parts  parse %9.2f us (%6.0f MB/s)  encode %6.2f us (%5zu B)  "
           "decode %6.2f us  envelope+bodystructure %6.2f us\n",
           name, len, m.nparts, t_parse * 1e6, (double) len / t_parse / 1e6, t_enc * 1e6, enc_len,
           t_dec * 1e6, t_write * 1e6);
    free(enc);
    mime_free(&m);
    mime_buf_free(&b);
}

static uint8_t *big(size_t size, size_t *len)
{
    static const char head[] = "From: a@b.c\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
                               "Content-Type: multipart/mixed; boundary=\"==b==\"\r\n\r\n"
                               "--==b==\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
                               "--==b==\r\nContent-Type: application/octet-stream\r\n"
                               "Content-Transfer-Encoding: base64\r\n\r\n";
    static const char line[] =
        "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n";
    uint8_t *buf = malloc(size + 256);
    size_t n = 0;

    if (buf == NULL)
        exit(1);
    memcpy(buf, head, sizeof(head) - 1);
    n = sizeof(head) - 1;
    while (n + sizeof(line) < size) {
        memcpy(buf + n, line, sizeof(line) - 1);
        n += sizeof(line) - 1;
    }
    memcpy(buf + n, "--==b==--\r\n", 11);
    *len = n + 11;
    return buf;
}

int main(int argc, char **argv)
{
    static const char *const files[] = {"plain.eml", "mixed_nested.eml", "rfc822_attach.eml",
                                        "encoded_words.eml", "params_2231.eml"};
    const char *dir = argc > 1 ? argv[1] : "tests/unit/mime/corpus";
    size_t len;
    uint8_t *msg;

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        msg = load(dir, files[i], &len);
        bench(files[i], msg, len, 200000);
        free(msg);
    }
    msg = big(10 * 1000 * 1000, &len);
    bench("10 MB attachment", msg, len, 50);
    free(msg);
    msg = big(50 * 1024 * 1024, &len);
    bench("50 MiB attachment", msg, len, 10);
    free(msg);
    return 0;
}
