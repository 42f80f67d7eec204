/*
 * tests/fuzz/fuzz_haproxy_members.c
 * libFuzzer target for ops/haproxy_gen.c's parsers: the input's lines are cluster.members
 * lines (hagen_parse_member), its first line is also tried as a --ports spec and as
 * --maxconn, and the members that parse become a configuration (hagen_write) that must be
 * NUL-terminated, as long as hagen_write() said, and start with the generated-by comment.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "haproxy_gen.h"
#include "fuzz_check.h"

#define FUZZ_MEMBERS_MAX 16
#define FUZZ_LINE_MAX    2048

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct hagen_member ms[FUZZ_MEMBERS_MAX];
    size_t n = 0;
    char line[FUZZ_LINE_MAX + 1], err[256];
    size_t off = 0;
    int first = 1;
    while (off < size) {
        const uint8_t *nl = memchr(data + off, '\n', size - off);
        size_t len = nl ? (size_t) (nl - (data + off)) : size - off;
        size_t copy = len > FUZZ_LINE_MAX ? FUZZ_LINE_MAX : len;
        memcpy(line, data + off, copy);
        line[copy] = 0;
        off += len + (nl ? 1 : 0);
        if (first) {
            uint16_t ports[HAGEN_NPROTO] = {25, 587, 465, 143, 993, 110, 995};
            unsigned maxconn;
            (void) hagen_parse_ports(line, ports, err, sizeof err);
            (void) hagen_parse_maxconn(line, &maxconn, err, sizeof err);
            first = 0;
        }
        if (n < FUZZ_MEMBERS_MAX && hagen_parse_member(line, &ms[n], err, sizeof err) == 0) {
            FUZZ_CHECK(ms[n].id > 0);
            FUZZ_CHECK(hagen_role_name(ms[n].role) != NULL);
            n++;
        } else {
            FUZZ_CHECK(memchr(err, 0, sizeof err) != NULL);
        }
    }
    struct hagen_opts o;
    hagen_opts_init(&o);
    char small[64];
    long full = hagen_write(small, sizeof small, ms, n, &o, err, sizeof err);
    if (full >= 0) {
        FUZZ_CHECK(memchr(small, 0, sizeof small) != NULL);
        char *text = hagen_config(ms, n, &o, err, sizeof err);
        FUZZ_CHECK(text != NULL);
        FUZZ_CHECK((long) strlen(text) == full);
        FUZZ_CHECK(text[0] == '#');
        free(text);
    }
    return 0;
}
