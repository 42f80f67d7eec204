/*
 * tests/unit/storage/test_keys.c
 * Unit tests of the key codec (storage/keys.c): round trips of every field type, byte order
 * equal to numeric order (the property every range scan relies on), key_successor() edge
 * cases, the KEY_MAX overflow guard and short-input reads.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "keys.h"

#define ORDER_N 2000 /* random values per order test */

/* Deterministic xorshift64*: the same "random" keys on every run. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

/* rng_value() mixes uniform values with small ones and values near byte boundaries, where
 * a little-endian or sign mistake would show. */
static uint64_t rng_value(unsigned bits)
{
    static const uint64_t edges[] = {0,
                                     1,
                                     0x7f,
                                     0x80,
                                     0xff,
                                     0x100,
                                     0xffff,
                                     0x10000,
                                     0x7fffffff,
                                     0x80000000,
                                     0xffffffff,
                                     0x100000000ULL,
                                     0x7fffffffffffffffULL,
                                     0x8000000000000000ULL,
                                     UINT64_MAX};
    uint64_t mask = bits == 64 ? UINT64_MAX : ((uint64_t) 1 << bits) - 1;
    uint64_t r = rng();

    switch (r % 4) {
    case 0:
        return edges[(r >> 8) % (sizeof(edges) / sizeof(edges[0]))] & mask;
    case 1:
        return (r >> 8) % 300;
    default:
        return rng() & mask;
    }
}

static int cmp_u64(uint64_t a, uint64_t b)
{
    return a < b ? -1 : a > b;
}

static int sign(int v)
{
    return v < 0 ? -1 : v > 0;
}

static void test_roundtrip_fields(void **state)
{
    struct key k;
    struct key_reader r;
    uint8_t u8, prefix;
    uint32_t u32;
    uint64_t u64;
    const uint8_t *rest;
    size_t n;
    static const uint8_t raw[] = {0x00, 0xff, 0x10, 0x00};

    key_init(&k, 0x4d);
    key_u8(&k, 0xa5);
    key_u32(&k, 0x01020304);
    key_u64(&k, 0x1122334455667788ULL);
    key_bytes(&k, raw, sizeof(raw));
    key_str(&k, "alice@example.com");
    assert_true(key_ok(&k));
    assert_int_equal(k.len, 1 + 1 + 4 + 8 + sizeof(raw) + strlen("alice@example.com"));

    /* Exact bytes: prefix, then big-endian integers. */
    static const uint8_t head[] = {0x4d, 0xa5, 0x01, 0x02, 0x03, 0x04, 0x11,
                                   0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88};
    assert_memory_equal(k.buf, head, sizeof(head));

    key_reader_init(&r, k.buf, k.len);
    assert_true(key_read_u8(&r, &prefix));
    assert_int_equal(prefix, 0x4d);
    assert_true(key_read_u8(&r, &u8));
    assert_int_equal(u8, 0xa5);
    assert_true(key_read_u32(&r, &u32));
    assert_int_equal(u32, 0x01020304);
    assert_true(key_read_u64(&r, &u64));
    assert_true(u64 == 0x1122334455667788ULL);
    rest = key_read_rest(&r, &n);
    assert_int_equal(n, sizeof(raw) + strlen("alice@example.com"));
    assert_memory_equal(rest, raw, sizeof(raw));
    assert_memory_equal(rest + sizeof(raw), "alice@example.com", strlen("alice@example.com"));
    assert_int_equal(r.left, 0);
    rest = key_read_rest(&r, &n);
    assert_int_equal(n, 0);
}

static void test_roundtrip_random(void **state)
{
    for (int i = 0; i < ORDER_N; i++) {
        uint32_t a = (uint32_t) rng_value(32), ra = 0;
        uint64_t b = rng_value(64), rb = 0;
        uint8_t c = (uint8_t) rng(), rc = 0, p = 0;
        struct key k;
        struct key_reader r;

        key_init(&k, 0x01);
        key_u32(&k, a);
        key_u64(&k, b);
        key_u8(&k, c);
        key_reader_init(&r, k.buf, k.len);
        assert_true(key_read_u8(&r, &p));
        assert_true(key_read_u32(&r, &ra));
        assert_true(key_read_u64(&r, &rb));
        assert_true(key_read_u8(&r, &rc));
        assert_int_equal(p, 0x01);
        assert_int_equal(ra, a);
        assert_true(rb == b);
        assert_int_equal(rc, c);
        assert_int_equal(r.left, 0);
    }
}

static void test_be_helpers(void **state)
{
    uint8_t b8[8], b4[4];
    static const uint8_t want8[] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
    static const uint8_t want4[] = {0xde, 0xad, 0xbe, 0xef};

    be64_put(b8, 0x0123456789abcdefULL);
    assert_memory_equal(b8, want8, 8);
    assert_true(be64_get(b8) == 0x0123456789abcdefULL);
    be32_put(b4, 0xdeadbeef);
    assert_memory_equal(b4, want4, 4);
    assert_int_equal(be32_get(b4), 0xdeadbeef);
    be64_put(b8, UINT64_MAX);
    assert_true(be64_get(b8) == UINT64_MAX);
    be32_put(b4, 0);
    assert_int_equal(be32_get(b4), 0);
}

/* One tuple (prefix, u64, u32) and its encoded key, for the order tests. */
struct tuple {
    uint8_t prefix;
    uint64_t a;
    uint32_t b;
    struct key k;
};

static int tuple_cmp_numeric(const void *x, const void *y)
{
    const struct tuple *s = x, *t = y;

    if (s->prefix != t->prefix)
        return s->prefix < t->prefix ? -1 : 1;
    if (s->a != t->a)
        return cmp_u64(s->a, t->a);
    return cmp_u64(s->b, t->b);
}

static int tuple_cmp_bytes(const void *x, const void *y)
{
    const struct tuple *s = x, *t = y;

    assert_int_equal(s->k.len, t->k.len); /* fixed-width fields: same length */
    return memcmp(s->k.buf, t->k.buf, s->k.len);
}

static void test_order_u32(void **state)
{
    for (int i = 0; i < ORDER_N; i++) {
        uint32_t a = (uint32_t) rng_value(32), b = (uint32_t) rng_value(32);
        struct key ka, kb;

        key_init(&ka, 0x10);
        key_u32(&ka, a);
        key_init(&kb, 0x10);
        key_u32(&kb, b);
        assert_int_equal(sign(memcmp(ka.buf, kb.buf, ka.len)), cmp_u64(a, b));
    }
}

static void test_order_u64(void **state)
{
    for (int i = 0; i < ORDER_N; i++) {
        uint64_t a = rng_value(64), b = rng_value(64);
        struct key ka, kb;

        key_init(&ka, 0x10);
        key_u64(&ka, a);
        key_init(&kb, 0x10);
        key_u64(&kb, b);
        assert_int_equal(sign(memcmp(ka.buf, kb.buf, ka.len)), cmp_u64(a, b));
    }
}

/* Sorting the encoded keys with memcmp gives exactly the numeric order of the tuples. */
static void test_order_tuples(void **state)
{
    struct tuple *by_num = calloc(ORDER_N, sizeof(*by_num));
    struct tuple *by_bytes = calloc(ORDER_N, sizeof(*by_bytes));

    assert_non_null(by_num);
    assert_non_null(by_bytes);
    for (int i = 0; i < ORDER_N; i++) {
        struct tuple *t = &by_num[i];
        t->prefix = (uint8_t) (rng() % 3 == 0 ? 0xff : rng() % 4); /* few prefixes: ties */
        t->a = rng() % 5 == 0 ? rng() % 4 : rng_value(64);         /* ties on a, too */
        t->b = (uint32_t) rng_value(32);
        key_init(&t->k, t->prefix);
        key_u64(&t->k, t->a);
        key_u32(&t->k, t->b);
        assert_true(key_ok(&t->k));
    }
    memcpy(by_bytes, by_num, ORDER_N * sizeof(*by_num));
    qsort(by_num, ORDER_N, sizeof(*by_num), tuple_cmp_numeric);
    qsort(by_bytes, ORDER_N, sizeof(*by_bytes), tuple_cmp_bytes);
    for (int i = 0; i < ORDER_N; i++) {
        assert_int_equal(by_num[i].prefix, by_bytes[i].prefix);
        assert_true(by_num[i].a == by_bytes[i].a);
        assert_int_equal(by_num[i].b, by_bytes[i].b);
    }
    /* And pairwise, including equal tuples. */
    for (int i = 0; i + 1 < ORDER_N; i++)
        assert_int_equal(sign(tuple_cmp_bytes(&by_num[i], &by_num[i + 1])),
                         sign(tuple_cmp_numeric(&by_num[i], &by_num[i + 1])));
    free(by_num);
    free(by_bytes);
}

static void test_successor_normal(void **state)
{
    struct key k;
    static const uint8_t want[] = {0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08};

    key_init(&k, 0x20);
    key_u64(&k, 7);
    assert_true(key_successor(&k));
    assert_int_equal(k.len, 9);
    assert_memory_equal(k.buf, want, sizeof(want));

    /* The successor of a prefix bounds every key that extends the prefix. */
    struct key p, ext;
    key_init(&p, 0x20);
    key_u32(&p, 5);
    key_init(&ext, 0x20);
    key_u32(&ext, 5);
    key_u64(&ext, UINT64_MAX);
    assert_true(key_successor(&p));
    assert_true(memcmp(ext.buf, p.buf, p.len) < 0);
}

static void test_successor_trailing_ff(void **state)
{
    struct key k;
    static const uint8_t in[] = {0x12, 0xff, 0xff};
    static const uint8_t want[] = {0x20, 0x13};

    key_init(&k, 0x20);
    key_bytes(&k, in, sizeof(in));
    assert_true(key_successor(&k));
    assert_int_equal(k.len, 2);
    assert_memory_equal(k.buf, want, sizeof(want));

    key_init(&k, 0x20);
    key_u32(&k, UINT32_MAX); /* 20 ff ff ff ff -> 21 */
    assert_true(key_successor(&k));
    assert_int_equal(k.len, 1);
    assert_int_equal(k.buf[0], 0x21);
}

static void test_successor_none(void **state)
{
    struct key k;

    key_init(&k, 0xff);
    key_u64(&k, UINT64_MAX);
    assert_false(key_successor(&k));
    assert_int_equal(k.len, 9); /* untouched */
    for (size_t i = 0; i < k.len; i++)
        assert_int_equal(k.buf[i], 0xff);

    key_init(&k, 0xff);
    assert_false(key_successor(&k));
    assert_int_equal(k.len, 1);

    k.len = 0; /* the empty key */
    assert_false(key_successor(&k));
    assert_int_equal(k.len, 0);
}

/* Fills K to exactly LEN bytes with 0x11. */
static void fill_to(struct key *k, size_t len)
{
    uint8_t junk[KEY_MAX];

    memset(junk, 0x11, sizeof(junk));
    key_init(k, 0x11);
    key_bytes(k, junk, len - 1);
    assert_true(key_ok(k));
    assert_int_equal(k->len, len);
}

static void test_overflow(void **state)
{
    /* A canary after the key would be hit by any write past buf. */
    struct {
        struct key k;
        uint8_t canary[64];
    } *box = malloc(sizeof(*box));
    char big[600];

    assert_non_null(box);
    memset(box, 0xaa, sizeof(*box));

    /* Exactly full is fine. */
    fill_to(&box->k, KEY_MAX);
    key_u8(&box->k, 1);
    assert_false(key_ok(&box->k));
    assert_int_equal(box->k.len, KEY_MAX);

    /* A u64 that would straddle the end writes nothing at all. */
    memset(box, 0xaa, sizeof(*box));
    fill_to(&box->k, KEY_MAX - 3);
    key_u64(&box->k, 0);
    assert_false(key_ok(&box->k));
    assert_int_equal(box->k.len, KEY_MAX - 3);
    for (size_t i = KEY_MAX - 3; i < KEY_MAX; i++)
        assert_int_equal(box->k.buf[i], 0xaa);

    /* Sticky: a later small append that would fit is refused too. */
    key_u8(&box->k, 7);
    assert_false(key_ok(&box->k));
    assert_int_equal(box->k.len, KEY_MAX - 3);
    assert_int_equal(box->k.buf[KEY_MAX - 3], 0xaa);
    assert_false(key_successor(&box->k));

    /* u32 at KEY_MAX - 2, a long string, and a huge byte count that would wrap. */
    memset(box, 0xaa, sizeof(*box));
    fill_to(&box->k, KEY_MAX - 2);
    key_u32(&box->k, 0);
    assert_false(key_ok(&box->k));
    assert_int_equal(box->k.len, KEY_MAX - 2);

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    key_init(&box->k, 0x30);
    key_str(&box->k, big);
    assert_false(key_ok(&box->k));
    assert_int_equal(box->k.len, 1);

    key_init(&box->k, 0x30);
    key_bytes(&box->k, big, SIZE_MAX);
    assert_false(key_ok(&box->k));
    assert_int_equal(box->k.len, 1);

    for (size_t i = 0; i < sizeof(box->canary); i++)
        assert_int_equal(box->canary[i], 0xaa);
    free(box);
}

static void test_reader_short(void **state)
{
    static const uint8_t in[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07};
    struct key_reader r;
    uint8_t u8 = 0x5a;
    uint32_t u32 = 0x5a5a5a5a;
    uint64_t u64 = 0x5a5a5a5a5a5a5a5aULL;
    size_t n;

    /* 7 bytes: no u64; output and cursor untouched. */
    key_reader_init(&r, in, sizeof(in));
    assert_false(key_read_u64(&r, &u64));
    assert_true(u64 == 0x5a5a5a5a5a5a5a5aULL);
    assert_int_equal(r.left, 7);
    assert_ptr_equal(r.p, in);

    /* 3 bytes: no u32. */
    key_reader_init(&r, in, 3);
    assert_false(key_read_u32(&r, &u32));
    assert_int_equal(u32, 0x5a5a5a5a);
    assert_int_equal(r.left, 3);

    /* u32 then 3 left: u32 fails, u8 x3 works, then u8 fails. */
    key_reader_init(&r, in, sizeof(in));
    assert_true(key_read_u32(&r, &u32));
    assert_int_equal(u32, 0x01020304);
    assert_false(key_read_u32(&r, &u32));
    assert_int_equal(u32, 0x01020304);
    for (int i = 0; i < 3; i++)
        assert_true(key_read_u8(&r, &u8));
    assert_int_equal(u8, 0x07);
    assert_false(key_read_u8(&r, &u8));
    assert_int_equal(u8, 0x07);
    assert_int_equal(r.left, 0);

    /* Empty input, also with a NULL pointer. */
    key_reader_init(&r, NULL, 0);
    assert_false(key_read_u8(&r, &u8));
    assert_false(key_read_u32(&r, &u32));
    assert_false(key_read_u64(&r, &u64));
    key_read_rest(&r, &n);
    assert_int_equal(n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_fields), cmocka_unit_test(test_roundtrip_random),
        cmocka_unit_test(test_be_helpers),       cmocka_unit_test(test_order_u32),
        cmocka_unit_test(test_order_u64),        cmocka_unit_test(test_order_tuples),
        cmocka_unit_test(test_successor_normal), cmocka_unit_test(test_successor_trailing_ff),
        cmocka_unit_test(test_successor_none),   cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_reader_short),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
