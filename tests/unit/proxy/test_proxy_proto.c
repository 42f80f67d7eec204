/*
 * tests/unit/proxy/test_proxy_proto.c
 * Unit tests for proxy/net/proxy_proto.c: valid v1 (TCP4, TCP6, UNKNOWN) and v2 (PROXY
 * TCP4/TCP6 as HAProxy sends them, LOCAL health checks, TLVs, other families) headers with
 * exact results; bytes after the header left alone; every valid header fed one byte at a
 * time (0 until complete, as Dovecot's parser tests do); every malformed header rejected
 * at the exact byte that makes it invalid, never earlier, never later.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "proxy_proto.h"

#define SIG 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A

/* ---- helpers -------------------------------------------------------------------------- */

/* parse() runs pp_parse() on a heap copy of exactly LEN bytes, so that ASan catches any
 * read past the end. */
static long parse(const void *bytes, size_t len, struct pp_info *out)
{
    uint8_t *copy = malloc(len > 0 ? len : 1);
    long rc;

    assert_non_null(copy);
    memcpy(copy, bytes, len);
    rc = pp_parse(copy, len, out);
    free(copy);
    return rc;
}

/* trickle() feeds BYTES one more byte at a time: every proper prefix must give 0, and the
 * whole (LEN bytes) must give LEN. The last result is left in OUT. */
static void trickle(const void *bytes, size_t len, struct pp_info *out)
{
    for (size_t i = 0; i < len; i++) {
        struct pp_info scratch;

        if (parse(bytes, i, &scratch) != 0)
            fail_msg("prefix of %zu of a %zu-byte header did not give 0", i, len);
    }
    assert_int_equal(parse(bytes, len, out), (long) len);
}

/* reject_at() feeds BYTES one more byte at a time: prefixes shorter than AT give 0, AT
 * bytes and more (up to LEN) give -1. */
static void reject_at(const void *bytes, size_t len, size_t at)
{
    struct pp_info out;

    assert_true(at <= len);
    for (size_t i = 0; i <= len; i++) {
        long want = i < at ? 0 : -1;

        if (parse(bytes, i, &out) != want)
            fail_msg("prefix of %zu bytes (rejection expected at %zu): got %ld", i, at,
                     parse(bytes, i, &out));
    }
}

/* reject_str() is reject_at() for text: BAD is the prefix of TEXT that first gives -1. */
static void reject_str(const char *text, const char *bad)
{
    assert_memory_equal(text, bad, strlen(bad));
    reject_at(text, strlen(text), strlen(bad));
}

static void assert_addr(const struct sockaddr_storage *ss, int af, const char *text, uint16_t port)
{
    char buf[INET6_ADDRSTRLEN];

    assert_int_equal(ss->ss_family, af);
    assert_string_equal(pp_addr_str(ss, buf), text);
    if (af == AF_INET)
        assert_int_equal(ntohs(((const struct sockaddr_in *) ss)->sin_port), port);
    else
        assert_int_equal(ntohs(((const struct sockaddr_in6 *) ss)->sin6_port), port);
}

static void assert_no_addr(const struct pp_info *info)
{
    assert_false(info->has_addr);
    assert_int_equal(info->src.ss_family, AF_UNSPEC);
    assert_int_equal(info->dst.ss_family, AF_UNSPEC);
}

/* ---- valid headers -------------------------------------------------------------------- */

#define V1_TCP4 "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
#define V1_TCP6 "PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n"
/* spec 2.1: the longest TCP6 line, 104 bytes */
#define V1_TCP6_LONGEST                                                                            \
    "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "  \
    "65535 65535\r\n"
#define V1_TCP6_MAPPED "PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n"
#define V1_UNKNOWN     "PROXY UNKNOWN\r\n"
/* spec 2.1: the worst case, exactly PP_V1_MAX bytes */
#define V1_UNKNOWN_LONGEST                                                                         \
    "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "                                       \
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "                                                     \
    "65535 65535\r\n"
#define V1_UNKNOWN_JUNK "PROXY UNKNOWN \x01\x7f\xff\x00 anything\r\n"

/* HAProxy "send-proxy-v2" for 192.168.0.1:56324 -> 192.168.0.11:443 */
static const uint8_t v2_tcp4[] = {
    SIG,  0x21, 0x11, 0x00, 0x0C, /* v2 PROXY, TCP over IPv4, 12 bytes follow */
    192,  168,  0,    1,          /* src */
    192,  168,  0,    11,         /* dst */
    0xDC, 0x04,                   /* 56324 */
    0x01, 0xBB,                   /* 443 */
};

/* [2001:db8::1]:56324 -> [2001:db8::2]:25 */
static const uint8_t v2_tcp6[] = {
    SIG,  0x21, 0x21, 0x00, 0x24, /* v2 PROXY, TCP over IPv6, 36 bytes follow */
    0x20, 0x01, 0x0D, 0xB8, 0,    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, /* src */
    0x20, 0x01, 0x0D, 0xB8, 0,    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, /* dst */
    0xDC, 0x04, 0x00, 0x19,                                        /* 56324, 25 */
};

/* HAProxy health check (observed live, DEPS.md 5): LOCAL, UNSPEC, len 0 */
static const uint8_t v2_local[] = {SIG, 0x20, 0x00, 0x00, 0x00};

/* LOCAL may carry a block; it is skipped unexamined (spec: "discard the protocol block") */
static const uint8_t v2_local_block[] = {
    SIG, 0x20, 0x11, 0x00, 0x05, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
};

/* TCP over IPv4 with the TLVs of "proxy-v2-options ssl,authority" plus ALPN and padding */
static const uint8_t v2_tlvs[] = {
    SIG,  0x21, 0x11, 0x00, 0x55, /* 85 bytes follow: 12 + 5 + 19 + 43 + 6 */
    10,   0,    0,    1,    10,   0,   0,   2,   0x30, 0x39, 0x00, 0x19, /* 10.0.0.1:12345 -> :25 */
    0x01, 0x00, 0x02, 'h',  '2',                                         /* ALPN */
    0x02, 0x00, 0x10, 'm',  'a',  'i', 'l', '.', 'e',  'x',  'a',  'm',  'p',
    'l',  'e',  '.',  'c',  'o',  'm',                      /* AUTHORITY */
    0x20, 0x00, 0x28,                                       /* SSL, 40 bytes: */
    0x01, 0x00, 0x00, 0x00, 0x00,                           /* client, verify */
    0x21, 0x00, 0x07, 'T',  'L',  'S', 'v', '1', '.',  '3', /* VERSION */
    0x23, 0x00, 0x16, 'T',  'L',  'S', '_', 'A', 'E',  'S',  '_',  '2',  '5',
    '6',  '_',  'G',  'C',  'M',  '_', 'S', 'H', 'A',  '3',  '8',  '4', /* CIPHER */
    0x04, 0x00, 0x03, 0,    0,    0,                                    /* NOOP */
};

/* PROXY with UNSPEC family (allowed by the spec; the socket's addresses are kept) */
static const uint8_t v2_proxy_unspec[] = {SIG, 0x21, 0x00, 0x00, 0x03, 0xAA, 0xBB, 0xCC};

/* PROXY, UDP over IPv4: a layout we know but do not use; TLVs are still walked */
static const uint8_t v2_udp4[] = {
    SIG, 0x21, 0x12, 0x00, 0x0F, 1, 2, 3, 4, 5, 6, 7, 8, 0, 53, 0, 53, 0x04, 0x00, 0x00,
};

/* The UNIX family's 216-byte block, all zero, then a NOOP TLV */
static uint8_t v2_unix[16 + 216 + 3];

static void build_unix(void)
{
    static const uint8_t head[] = {SIG, 0x21, 0x31, 0x00, 216 + 3};

    memset(v2_unix, 0, sizeof(v2_unix));
    memcpy(v2_unix, head, sizeof(head));
    v2_unix[16 + 216] = 0x04;
}

struct sample {
    const char *name;
    const uint8_t *bytes;
    size_t len;
};

#define SAMPLE_STR(s)                                                                              \
    {                                                                                              \
#s, (const uint8_t *) (s), sizeof(s) - 1                                                   \
    }
#define SAMPLE_BIN(a)                                                                              \
    {                                                                                              \
#a, a, sizeof(a)                                                                           \
    }

static const struct sample valid[] = {
    SAMPLE_STR(V1_TCP4),         SAMPLE_STR(V1_TCP6),        SAMPLE_STR(V1_TCP6_LONGEST),
    SAMPLE_STR(V1_TCP6_MAPPED),  SAMPLE_STR(V1_UNKNOWN),     SAMPLE_STR(V1_UNKNOWN_LONGEST),
    SAMPLE_STR(V1_UNKNOWN_JUNK), SAMPLE_BIN(v2_tcp4),        SAMPLE_BIN(v2_tcp6),
    SAMPLE_BIN(v2_local),        SAMPLE_BIN(v2_local_block), SAMPLE_BIN(v2_tlvs),
    SAMPLE_BIN(v2_proxy_unspec), SAMPLE_BIN(v2_udp4),        SAMPLE_BIN(v2_unix),
};

static void test_v1_tcp4(void **state)
{
    struct pp_info info;

    (void) state;
    assert_int_equal(parse(V1_TCP4, strlen(V1_TCP4), &info), strlen(V1_TCP4));
    assert_int_equal(info.version, 1);
    assert_false(info.local);
    assert_true(info.has_addr);
    assert_addr(&info.src, AF_INET, "192.168.0.1", 56324);
    assert_addr(&info.dst, AF_INET, "192.168.0.11", 443);

    assert_int_equal(parse("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", 44, &info), 44);
    assert_addr(&info.src, AF_INET, "0.0.0.0", 0);
    assert_addr(&info.dst, AF_INET, "255.255.255.255", 65535);
}

static void test_v1_tcp6(void **state)
{
    struct pp_info info;

    (void) state;
    assert_int_equal(parse(V1_TCP6, strlen(V1_TCP6), &info), strlen(V1_TCP6));
    assert_int_equal(info.version, 1);
    assert_false(info.local);
    assert_true(info.has_addr);
    assert_addr(&info.src, AF_INET6, "2001:db8::1", 65535);
    assert_addr(&info.dst, AF_INET6, "2001:db8::2", 0);

    assert_int_equal(strlen(V1_TCP6_LONGEST), 104);
    assert_int_equal(parse(V1_TCP6_LONGEST, 104, &info), 104);
    assert_addr(&info.src, AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);

    assert_int_equal(parse(V1_TCP6_MAPPED, strlen(V1_TCP6_MAPPED), &info), strlen(V1_TCP6_MAPPED));
    assert_addr(&info.src, AF_INET6, "::ffff:192.0.2.1", 1);
    assert_addr(&info.dst, AF_INET6, "::1", 2);
}

static void test_v1_unknown(void **state)
{
    struct pp_info info;

    (void) state;
    assert_int_equal(parse(V1_UNKNOWN, 15, &info), 15);
    assert_int_equal(info.version, 1);
    assert_true(info.local);
    assert_no_addr(&info);

    assert_int_equal(strlen(V1_UNKNOWN_LONGEST), PP_V1_MAX);
    assert_int_equal(parse(V1_UNKNOWN_LONGEST, PP_V1_MAX, &info), PP_V1_MAX);
    assert_true(info.local);
    assert_no_addr(&info);

    assert_int_equal(parse(V1_UNKNOWN_JUNK, sizeof(V1_UNKNOWN_JUNK) - 1, &info),
                     sizeof(V1_UNKNOWN_JUNK) - 1);
    assert_true(info.local);
}

static void test_v2_tcp4(void **state)
{
    struct pp_info info;

    (void) state;
    assert_int_equal(parse(v2_tcp4, sizeof(v2_tcp4), &info), 28);
    assert_int_equal(info.version, 2);
    assert_false(info.local);
    assert_true(info.has_addr);
    assert_addr(&info.src, AF_INET, "192.168.0.1", 56324);
    assert_addr(&info.dst, AF_INET, "192.168.0.11", 443);
}

static void test_v2_tcp6(void **state)
{
    struct pp_info info;

    (void) state;
    assert_int_equal(parse(v2_tcp6, sizeof(v2_tcp6), &info), 52);
    assert_int_equal(info.version, 2);
    assert_false(info.local);
    assert_true(info.has_addr);
    assert_addr(&info.src, AF_INET6, "2001:db8::1", 56324);
    assert_addr(&info.dst, AF_INET6, "2001:db8::2", 25);
}

static void test_v2_local(void **state)
{
    struct pp_info info;

    (void) state;
    assert_int_equal(parse(v2_local, sizeof(v2_local), &info), 16);
    assert_int_equal(info.version, 2);
    assert_true(info.local);
    assert_no_addr(&info);

    /* The family is ignored under LOCAL and the block skipped, even if it is no TLV list. */
    assert_int_equal(parse(v2_local_block, sizeof(v2_local_block), &info), 21);
    assert_true(info.local);
    assert_no_addr(&info);
}

static void test_v2_tlvs(void **state)
{
    struct pp_info info;

    (void) state;
    assert_int_equal(sizeof(v2_tlvs), 16 + 0x55); /* the test data itself adds up */
    assert_int_equal(parse(v2_tlvs, sizeof(v2_tlvs), &info), sizeof(v2_tlvs));
    assert_false(info.local);
    assert_addr(&info.src, AF_INET, "10.0.0.1", 12345);
    assert_addr(&info.dst, AF_INET, "10.0.0.2", 25);
}

static void test_v2_other_families(void **state)
{
    struct pp_info info;

    (void) state;
    assert_int_equal(parse(v2_proxy_unspec, sizeof(v2_proxy_unspec), &info), 19);
    assert_false(info.local);
    assert_no_addr(&info);

    assert_int_equal(parse(v2_udp4, sizeof(v2_udp4), &info), sizeof(v2_udp4));
    assert_false(info.local);
    assert_no_addr(&info);

    assert_int_equal(parse(v2_unix, sizeof(v2_unix), &info), sizeof(v2_unix));
    assert_false(info.local);
    assert_no_addr(&info);
}

/* The largest payload we take: TCP4 and one NOOP TLV filling PP_V2_TLV_MAX. */
static void test_v2_len_max(void **state)
{
    static uint8_t hdr[PP_HDR_MAX];
    static const uint8_t head[] = {SIG, 0x21, 0x11, PP_V2_TLV_MAX >> 8, PP_V2_TLV_MAX & 0xFF};
    size_t tlvlen = PP_V2_TLV_MAX - 12 - 3;
    struct pp_info info;

    (void) state;
    memset(hdr, 0, sizeof(hdr));
    memcpy(hdr, head, sizeof(head));
    hdr[16 + 12] = 0x04;
    hdr[16 + 13] = (uint8_t) (tlvlen >> 8);
    hdr[16 + 14] = (uint8_t) tlvlen;
    trickle(hdr, sizeof(hdr), &info);
    assert_true(info.has_addr);
    assert_addr(&info.src, AF_INET, "0.0.0.0", 0);
}

/* ---- framing -------------------------------------------------------------------------- */

static void test_trickle(void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        struct pp_info info;

        print_message("trickle %s (%zu bytes)\n", valid[i].name, valid[i].len);
        trickle(valid[i].bytes, valid[i].len, &info);
    }
}

/* Bytes after the header (a TLS ClientHello, a pipelined SMTP command, even another PROXY
 * header) do not change the result, however many of them are there. */
static void test_trailing_bytes(void **state)
{
    static const uint8_t hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03};
    static const char *const tails[] = {"EHLO client.example\r\n", V1_TCP4, "\r\n\r\n\0"};
    uint8_t buf[PP_V1_MAX + 256];

    (void) state;
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        for (size_t t = 0; t <= sizeof(tails) / sizeof(tails[0]); t++) {
            const uint8_t *tail = t < 3 ? (const uint8_t *) tails[t] : hello;
            size_t taillen = t < 3 ? strlen(tails[t]) : sizeof(hello);
            struct pp_info alone, with_tail;

            if (valid[i].len + taillen > sizeof(buf))
                continue;
            memcpy(buf, valid[i].bytes, valid[i].len);
            memcpy(buf + valid[i].len, tail, taillen);
            assert_int_equal(parse(valid[i].bytes, valid[i].len, &alone), valid[i].len);
            for (size_t n = valid[i].len; n <= valid[i].len + taillen; n++) {
                assert_int_equal(parse(buf, n, &with_tail), valid[i].len);
                assert_int_equal(with_tail.version, alone.version);
                assert_int_equal(with_tail.local, alone.local);
                assert_int_equal(with_tail.has_addr, alone.has_addr);
                assert_memory_equal(&with_tail.src, &alone.src, sizeof(alone.src));
                assert_memory_equal(&with_tail.dst, &alone.dst, sizeof(alone.dst));
            }
        }
    }
}

/* OUT is written only when a header is complete. */
static void test_out_untouched(void **state)
{
    struct pp_info info, before;

    (void) state;
    memset(&info, 0xA5, sizeof(info));
    memcpy(&before, &info, sizeof(info));
    assert_int_equal(parse(V1_TCP4, 20, &info), 0);
    assert_int_equal(parse(v2_tcp4, 20, &info), 0);
    assert_int_equal(parse("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", 31, &info), -1);
    assert_int_equal(parse("GET / HTTP/1.0\r\n", 16, &info), -1);
    assert_memory_equal(&info, &before, sizeof(info));
    assert_int_equal(parse("", 0, &info), 0);
    assert_int_equal(pp_parse(NULL, 0, &info), 0);
    assert_memory_equal(&info, &before, sizeof(info));
}

static void test_addr_str(void **state)
{
    struct sockaddr_storage ss;
    struct sockaddr_in *sin = (struct sockaddr_in *) &ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ss;
    char buf[INET6_ADDRSTRLEN];

    (void) state;
    memset(&ss, 0, sizeof(ss));
    sin->sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, "203.0.113.7", &sin->sin_addr), 1);
    assert_string_equal(pp_addr_str(&ss, buf), "203.0.113.7");
    assert_ptr_equal(pp_addr_str(&ss, buf), buf);

    memset(&ss, 0, sizeof(ss));
    sin6->sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, "2001:DB8:0:0:0:0:0:1", &sin6->sin6_addr), 1);
    assert_string_equal(pp_addr_str(&ss, buf), "2001:db8::1");

    memset(&ss, 0, sizeof(ss));
    assert_string_equal(pp_addr_str(&ss, buf), "unknown");
    ss.ss_family = AF_UNIX;
    assert_string_equal(pp_addr_str(&ss, buf), "unknown");
}

/* ---- malformed v2 --------------------------------------------------------------------- */

static void test_v2_bad_signature(void **state)
{
    uint8_t hdr[sizeof(v2_tcp4)];

    (void) state;
    for (size_t i = 1; i < 12; i++) { /* byte 0 decides the version: see garbage test */
        memcpy(hdr, v2_tcp4, sizeof(hdr));
        hdr[i] ^= 0x20;
        reject_at(hdr, sizeof(hdr), i + 1);
    }
}

static void test_v2_bad_version(void **state)
{
    static const uint8_t bad[] = {0x11, 0x10, 0x01, 0x31, 0xF1, 0x00};
    uint8_t hdr[sizeof(v2_tcp4)];

    (void) state;
    for (size_t i = 0; i < sizeof(bad); i++) {
        memcpy(hdr, v2_tcp4, sizeof(hdr));
        hdr[12] = bad[i]; /* 0x11: version 1 in a v2 header */
        reject_at(hdr, sizeof(hdr), 13);
    }
}

static void test_v2_bad_command(void **state)
{
    static const uint8_t bad[] = {0x22, 0x23, 0x2F};
    uint8_t hdr[sizeof(v2_local)];

    (void) state;
    for (size_t i = 0; i < sizeof(bad); i++) {
        memcpy(hdr, v2_local, sizeof(hdr));
        hdr[12] = bad[i];
        reject_at(hdr, sizeof(hdr), 13);
    }
}

/* Family above UNIX, transport above DGRAM: rejected under PROXY and under LOCAL. */
static void test_v2_bad_family(void **state)
{
    static const uint8_t bad[] = {0x41, 0xF1, 0x13, 0x1F, 0x03, 0xFF};
    uint8_t hdr[sizeof(v2_tcp4)];

    (void) state;
    for (size_t i = 0; i < sizeof(bad); i++) {
        memcpy(hdr, v2_tcp4, sizeof(hdr));
        hdr[13] = bad[i];
        reject_at(hdr, sizeof(hdr), 14);
        hdr[12] = 0x20;
        reject_at(hdr, sizeof(hdr), 14);
    }
}

/* len below the family's address block is decided from the 16-byte header alone. */
static void test_v2_len_too_small(void **state)
{
    uint8_t hdr[sizeof(v2_tcp6)];

    (void) state;
    memcpy(hdr, v2_tcp4, sizeof(v2_tcp4));
    hdr[15] = 11;
    reject_at(hdr, sizeof(v2_tcp4), 16);
    hdr[15] = 0;
    reject_at(hdr, sizeof(v2_tcp4), 16);

    memcpy(hdr, v2_tcp6, sizeof(v2_tcp6));
    hdr[15] = 35;
    reject_at(hdr, sizeof(v2_tcp6), 16);
    hdr[15] = 12;
    reject_at(hdr, sizeof(v2_tcp6), 16);

    memcpy(hdr, v2_udp4, sizeof(v2_udp4));
    hdr[15] = 11;
    reject_at(hdr, sizeof(v2_udp4), 16);

    memcpy(hdr, v2_unix, 16);
    hdr[14] = 0;
    hdr[15] = 215;
    reject_at(hdr, 16, 16);
}

/* len over PP_V2_TLV_MAX is refused before waiting for the block, for either command. */
static void test_v2_len_too_big(void **state)
{
    static const uint16_t bad[] = {PP_V2_TLV_MAX + 1, 0x1000, 0xFFFF};
    uint8_t hdr[sizeof(v2_tcp4)];

    (void) state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memcpy(hdr, v2_tcp4, sizeof(hdr));
        hdr[14] = (uint8_t) (bad[i] >> 8);
        hdr[15] = (uint8_t) bad[i];
        reject_at(hdr, sizeof(hdr), 16);
        hdr[12] = 0x20; /* LOCAL */
        reject_at(hdr, sizeof(hdr), 16);
    }
}

/* A TLV whose length runs past 16 + len, or a block ending in 1 or 2 stray bytes, is
 * refused as soon as the offending TLV header is there. */
static void test_v2_tlv_overrun(void **state)
{
    uint8_t hdr[sizeof(v2_tlvs)];
    struct pp_info info;

    (void) state;
    /* ALPN claims 0x0100 bytes */
    memcpy(hdr, v2_tlvs, sizeof(hdr));
    hdr[28 + 1] = 0x01;
    reject_at(hdr, sizeof(hdr), 28 + 3);

    /* the NOOP at the end claims one byte more than is left */
    memcpy(hdr, v2_tlvs, sizeof(hdr));
    hdr[sizeof(hdr) - 4] = 4;
    reject_at(hdr, sizeof(hdr), sizeof(hdr) - 3);

    /* one byte less in len: the NOOP value overruns */
    memcpy(hdr, v2_tlvs, sizeof(hdr));
    hdr[15] = 0x54;
    reject_at(hdr, sizeof(hdr) - 1, sizeof(hdr) - 3);

    /* len shortened so that only 2 bytes of the NOOP header are inside the block: the
     * previous TLV (SSL) ends 2 bytes before the end, decided once its header is there */
    memcpy(hdr, v2_tlvs, sizeof(hdr));
    hdr[15] = 0x55 - 4;
    reject_at(hdr, sizeof(hdr) - 4, 16 + 12 + 5 + 19 + 3);

    /* the SSL TLV's length is one too long: it eats the NOOP's first byte, leaving 5 */
    memcpy(hdr, v2_tlvs, sizeof(hdr));
    hdr[16 + 12 + 5 + 19 + 2] = 0x29;
    assert_int_equal(parse(hdr, sizeof(hdr), &info), -1);

    /* the same overrun under UDP: the TLV walk does not depend on TCP */
    memcpy(hdr, v2_udp4, sizeof(v2_udp4));
    hdr[sizeof(v2_udp4) - 1] = 1;
    reject_at(hdr, sizeof(v2_udp4), sizeof(v2_udp4));
}

/* ---- malformed v1 --------------------------------------------------------------------- */

static void test_v1_bad_address(void **state)
{
    (void) state;
    reject_str("PROXY TCP4 256.1.1.1 1.2.3.4 1 2\r\n", "PROXY TCP4 256");
    reject_str("PROXY TCP4 1.2.3.4 1.2.3.256 1 2\r\n", "PROXY TCP4 1.2.3.4 1.2.3.256");
    reject_str("PROXY TCP4 01.2.3.4 1.2.3.4 1 2\r\n", "PROXY TCP4 01");
    reject_str("PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n", "PROXY TCP4 1.2.3 ");
    reject_str("PROXY TCP4 1.2.3.4.5 1.2.3.4 1 2\r\n", "PROXY TCP4 1.2.3.4.");
    reject_str("PROXY TCP4 1..2.3 1.2.3.4 1 2\r\n", "PROXY TCP4 1..");
    reject_str("PROXY TCP4 ::1 ::1 1 2\r\n", "PROXY TCP4 :");
    reject_str("PROXY TCP4 0x7f.1.1.1 1.2.3.4 1 2\r\n", "PROXY TCP4 0x");
    reject_str("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "PROXY TCP6 1.");
    reject_str("PROXY TCP6 1::2::3 ::1 1 2\r\n", "PROXY TCP6 1::2::");
    reject_str("PROXY TCP6 :::1 ::1 1 2\r\n", "PROXY TCP6 :::");
    reject_str("PROXY TCP6 12345::1 ::1 1 2\r\n", "PROXY TCP6 12345");
    reject_str("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", "PROXY TCP6 1:2:3:4:5:6:7:8:");
    reject_str("PROXY TCP6 1:2:3:4:5:6:7:1.2.3.4 ::1 1 2\r\n", "PROXY TCP6 1:2:3:4:5:6:7:1.");
    reject_str("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "PROXY TCP6 fe80::1%");
    reject_str("PROXY TCP6 1:2 ::1 1 2\r\n", "PROXY TCP6 1:2 ");
    reject_str("PROXY TCP6 g::1 ::1 1 2\r\n", "PROXY TCP6 g");
}

static void test_v1_bad_port(void **state)
{
    (void) state;
    reject_str("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 65536");
    reject_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999");
    reject_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 123456\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 123456");
    reject_str("PROXY TCP4 1.2.3.4 5.6.7.8 0443 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 04");
    reject_str("PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 00");
    reject_str("PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 +");
    reject_str("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 -");
    reject_str("PROXY TCP4 1.2.3.4 5.6.7.8  2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8  ");
    reject_str("PROXY TCP4 1.2.3.4 5.6.7.8 80a 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 80a");
    reject_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ");
    reject_str("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r");
    reject_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 \r");
}

static void test_v1_bad_syntax(void **state)
{
    (void) state;
    reject_str("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY  ");
    reject_str("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP4  ");
    reject_str("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.4  ");
    reject_str("PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY\t");
    reject_str("Proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "Pr");
    reject_str("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY t");
    reject_str("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP5");
    reject_str("PROXY TCP 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP ");
    reject_str("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY UD");
    reject_str("PROXY TCP41.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP41");
    reject_str("PROXY UNKNOWNX\r\n", "PROXY UNKNOWNX");
    reject_str("PROXY UNKNOW\r\n", "PROXY UNKNOW\r");
    reject_str("PROXY \r\n", "PROXY \r");
    reject_str("PROXY\r\n", "PROXY\r");
}

static void test_v1_line_end(void **state)
{
    (void) state;
    /* bare LF, at each place a line could end */
    reject_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n");
    reject_str("PROXY UNKNOWN\n", "PROXY UNKNOWN\n");
    reject_str("PROXY UNKNOWN 1.2.3.4\n\r\n", "PROXY UNKNOWN 1.2.3.4\n");
    /* CR without LF */
    reject_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r");
    reject_str("PROXY UNKNOWN\rX\n", "PROXY UNKNOWN\rX");
    reject_str("PROXY UNKNOWN abc\r \r\n", "PROXY UNKNOWN abc\r ");
    /* LF CR */
    reject_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n");
}

/* No CRLF within PP_V1_MAX bytes: 0 up to 106 bytes, -1 from 107 on. */
static void test_v1_too_long(void **state)
{
    char line[PP_V1_MAX + 8];
    size_t n;

    (void) state;
    /* UNKNOWN with one byte too many before the CRLF: 108 bytes */
    memcpy(line, "PROXY UNKNOWN ", 14);
    memset(line + 14, 'x', 92);
    memcpy(line + 106, "\r\n", 2);
    n = 108;
    reject_at(line, n, PP_V1_MAX);
    /* no CR at all */
    memset(line, 'x', sizeof(line));
    memcpy(line, "PROXY UNKNOWN ", 14);
    reject_at(line, sizeof(line), PP_V1_MAX);
    /* TCP6 in the longest forms inet_pton accepts: 116 bytes, cut at 107 */
    reject_str("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
               "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 65535 65535\r\n",
               "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
               "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 6553");
}

/* Only 'P' (v1) and '\r' (v2) can start a header; anything else is refused at byte 1. */
static void test_garbage_first_byte(void **state)
{
    (void) state;
    for (int c = 0; c < 256; c++) {
        uint8_t b = (uint8_t) c;
        struct pp_info info;

        assert_int_equal(parse(&b, 1, &info), c == 'P' || c == '\r' ? 0 : -1);
    }
    reject_str("GET / HTTP/1.1\r\n", "G");
    reject_str("EHLO client.example\r\n", "E");
    reject_at("\x16\x03\x01\x02\x00", 5, 1);                   /* TLS ClientHello */
    reject_at("\r\nQUIT\r\n", 8, 3);                           /* v2-like, then not */
    reject_str("PROXX TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "PROXX"); /* v1-like, then not */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_tcp4),        cmocka_unit_test(test_v1_tcp6),
        cmocka_unit_test(test_v1_unknown),     cmocka_unit_test(test_v2_tcp4),
        cmocka_unit_test(test_v2_tcp6),        cmocka_unit_test(test_v2_local),
        cmocka_unit_test(test_v2_tlvs),        cmocka_unit_test(test_v2_other_families),
        cmocka_unit_test(test_v2_len_max),     cmocka_unit_test(test_trickle),
        cmocka_unit_test(test_trailing_bytes), cmocka_unit_test(test_out_untouched),
        cmocka_unit_test(test_addr_str),       cmocka_unit_test(test_v2_bad_signature),
        cmocka_unit_test(test_v2_bad_version), cmocka_unit_test(test_v2_bad_command),
        cmocka_unit_test(test_v2_bad_family),  cmocka_unit_test(test_v2_len_too_small),
        cmocka_unit_test(test_v2_len_too_big), cmocka_unit_test(test_v2_tlv_overrun),
        cmocka_unit_test(test_v1_bad_address), cmocka_unit_test(test_v1_bad_port),
        cmocka_unit_test(test_v1_bad_syntax),  cmocka_unit_test(test_v1_line_end),
        cmocka_unit_test(test_v1_too_long),    cmocka_unit_test(test_garbage_first_byte),
    };

    build_unix();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
