/*
 * tests/fuzz/fuzz_proxy_header.c
 * libFuzzer target for proxy/net/proxy_proto.c. Parses the input as the first bytes of a
 * connection and checks the contract of pp_parse(): a header length never exceeds the
 * input or the limits; the header alone parses to the same result; every shorter prefix
 * gives 0 (needs more) when the whole is a header or a valid start, and -1 stays -1 when
 * bytes are added; results are deterministic; addresses are well formed and survive
 * pp_addr_str() and inet_pton(). Prefixes are parsed from exact-size heap copies so that
 * ASan sees a read past their end.
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy_proto.h"
#include "fuzz_check.h"

/* Inputs up to this size get every prefix checked; longer ones a sample (the check is
 * quadratic). */
#define FUZZ_ALL_PREFIXES_MAX 600

/* parse_copy() parses the first LEN bytes of DATA from a heap copy of exactly LEN bytes. */
static long parse_copy(const uint8_t *data, size_t len, struct pp_info *out)
{
    uint8_t *copy = malloc(len > 0 ? len : 1);
    long rc;

    FUZZ_CHECK(copy != NULL);
    if (len > 0)
        memcpy(copy, data, len);
    rc = pp_parse(copy, len, out);
    free(copy);
    return rc;
}

static void check_addr(const struct sockaddr_storage *ss)
{
    char text[INET6_ADDRSTRLEN];
    uint8_t back[sizeof(struct in6_addr)];

    FUZZ_CHECK(ss->ss_family == AF_INET || ss->ss_family == AF_INET6);
    pp_addr_str(ss, text);
    FUZZ_CHECK(memchr(text, '\0', sizeof(text)) != NULL);
    FUZZ_CHECK(inet_pton(ss->ss_family, text, back) == 1);
    if (ss->ss_family == AF_INET)
        FUZZ_CHECK(memcmp(back, &((const struct sockaddr_in *) ss)->sin_addr, 4) == 0);
    else
        FUZZ_CHECK(memcmp(back, &((const struct sockaddr_in6 *) ss)->sin6_addr, 16) == 0);
}

static void check_info(const uint8_t *data, long rc, const struct pp_info *info)
{
    static const struct sockaddr_storage zero;

    FUZZ_CHECK(info->version == 1 || info->version == 2);
    FUZZ_CHECK(info->version == 1 ? data[0] == 'P' : data[0] == '\r');
    FUZZ_CHECK(rc <= (info->version == 1 ? PP_V1_MAX : PP_HDR_MAX));
    FUZZ_CHECK(info->version == 1 || rc >= PP_V2_HDR_LEN);
    if (info->has_addr) {
        FUZZ_CHECK(!info->local);
        FUZZ_CHECK(info->src.ss_family == info->dst.ss_family);
        check_addr(&info->src);
        check_addr(&info->dst);
    } else {
        FUZZ_CHECK(memcmp(&info->src, &zero, sizeof(zero)) == 0);
        FUZZ_CHECK(memcmp(&info->dst, &zero, sizeof(zero)) == 0);
    }
}

static bool same_info(const struct pp_info *a, const struct pp_info *b)
{
    return a->local == b->local && a->version == b->version && a->has_addr == b->has_addr &&
           memcmp(&a->src, &b->src, sizeof(a->src)) == 0 &&
           memcmp(&a->dst, &b->dst, sizeof(a->dst)) == 0;
}

/* check_prefix() parses the first K bytes given that the whole input gave RC and INFO, and
 * returns what it got. */
static long check_prefix(const uint8_t *data, size_t k, long rc, const struct pp_info *info)
{
    struct pp_info sub;
    long subrc = parse_copy(data, k, &sub);

    if (rc > 0 && k >= (size_t) rc) {
        FUZZ_CHECK(subrc == rc); /* bytes after the header do not matter */
        FUZZ_CHECK(same_info(&sub, info));
    } else if (rc >= 0) {
        FUZZ_CHECK(subrc == 0); /* a prefix of a (start of a) header is a start */
    } else {
        FUZZ_CHECK(subrc <= 0); /* a start may turn bad, a header cannot appear */
    }
    return subrc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pp_info info, again;
    long rc = pp_parse(data, size, &info), prev = 0;

    FUZZ_CHECK(rc >= -1);
    FUZZ_CHECK(rc <= (long) size);
    /* decided within the limit: PP_V1_MAX bytes for v1, PP_HDR_MAX for v2 */
    FUZZ_CHECK(rc != 0 || size == 0 || size < (data[0] == 'P' ? PP_V1_MAX : PP_HDR_MAX));
    FUZZ_CHECK(pp_parse(data, size, &again) == rc);
    if (rc > 0) {
        check_info(data, rc, &info);
        FUZZ_CHECK(same_info(&info, &again));
        FUZZ_CHECK(parse_copy(data, (size_t) rc, &again) == rc);
        FUZZ_CHECK(same_info(&info, &again));
    }

    if (size <= FUZZ_ALL_PREFIXES_MAX) {
        for (size_t k = 0; k < size; k++) {
            long subrc = check_prefix(data, k, rc, &info);

            FUZZ_CHECK(prev >= 0 || subrc == -1); /* once bad, bad for good */
            prev = subrc;
        }
        FUZZ_CHECK(prev >= 0 || rc == -1);
    } else {
        for (size_t k = 0; k < 32; k++)
            check_prefix(data, k, rc, &info);
        if (rc > 1)
            check_prefix(data, (size_t) rc - 1, rc, &info);
        check_prefix(data, size - 1, rc, &info);
    }
    return 0;
}
