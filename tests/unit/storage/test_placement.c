/*
 * tests/unit/storage/test_placement.c
 * Unit tests of body placement (storage/placement.c): golden scores and owners (stored
 * bodies depend on them), determinism and independence from the order of the members,
 * argument checks, the zone rule against a brute-force reference, balance over 10,000
 * bodies, and minimal movement when a node joins or leaves.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <string.h>

#include <openssl/evp.h>

#include "body_store.h"
#include "placement.h"

_Static_assert(PLACEMENT_HASH_LEN == BODY_HASH_LEN, "placement hashes are body hashes");

#define BODIES    10000 /* hashes per statistical test */
#define MAX_TRIES 2000  /* random clusters per reference comparison */

/* Deterministic xorshift64*: the same "random" clusters on every run. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

/* body_hash() is the SHA-256 of the 8 big-endian bytes of I: a realistic body hash. */
static void body_hash(uint64_t i, uint8_t hash[PLACEMENT_HASH_LEN])
{
    uint8_t in[8];

    for (int k = 0; k < 8; k++)
        in[k] = (uint8_t) (i >> (56 - 8 * k));
    assert_int_equal(EVP_Digest(in, sizeof(in), hash, NULL, EVP_sha256(), NULL), 1);
}

static void shuffle(struct placement_node *v, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = rng() % i;
        struct placement_node t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

static const char *zone_of(const struct placement_node *nodes, size_t n, uint64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (nodes[i].id == id)
            return nodes[i].zone != NULL ? nodes[i].zone : "";
    fail_msg("owner %llu is not a member", (unsigned long long) id);
    return NULL;
}

static bool contains(const uint64_t *v, size_t n, uint64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == id)
            return true;
    return false;
}

/* same_set() compares two owner lists as sets (each list has distinct ids). */
static bool same_set(const uint64_t *a, const uint64_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!contains(b, n, a[i]))
            return false;
    return true;
}

/* random_cluster() fills NODES with N distinct ids (small or 64-bit) and zones drawn from a
 * few labels, "" and NULL. */
static void random_cluster(struct placement_node *nodes, size_t n)
{
    static const char *zones[] = {"", NULL, "a", "b", "c", "rack-17", "b "};

    for (size_t i = 0; i < n; i++) {
        uint64_t id;
        bool dup;

        do {
            id = rng() % 2 ? rng() % 64 : rng();
            dup = false;
            for (size_t j = 0; j < i; j++)
                dup = dup || nodes[j].id == id;
        } while (dup);
        nodes[i].id = id;
        nodes[i].zone = zones[rng() % (sizeof(zones) / sizeof(zones[0]))];
    }
}

/*
 * reference_owners() states the zone rule the slow, obvious way: repeatedly take the best
 * node whose zone has no pick yet, then repeatedly the best node not yet taken. "Best" is
 * the highest score, then the lowest id. It assumes valid arguments.
 */
static size_t reference_owners(const struct placement_node *nodes, size_t n, const uint8_t *hash,
                               unsigned r, uint64_t *out)
{
    bool taken[PLACEMENT_MAX_NODES] = {false};
    size_t want = r < n ? r : n;
    size_t k = 0;

    for (int pass = 0; pass < 2; pass++) {
        while (k < want) {
            size_t best = n;

            for (size_t i = 0; i < n; i++) {
                bool zone_used = false;

                if (taken[i])
                    continue;
                for (size_t j = 0; pass == 0 && j < k; j++)
                    zone_used = zone_used || strcmp(zone_of(nodes, n, out[j]),
                                                    zone_of(nodes, n, nodes[i].id)) == 0;
                if (zone_used)
                    continue;
                if (best == n ||
                    placement_score(hash, nodes[i].id) > placement_score(hash, nodes[best].id) ||
                    (placement_score(hash, nodes[i].id) == placement_score(hash, nodes[best].id) &&
                     nodes[i].id < nodes[best].id))
                    best = i;
            }
            if (best == n)
                break;
            taken[best] = true;
            out[k++] = nodes[best].id;
        }
    }
    return k;
}

/* Golden values: placement_score() must never change (placement.h, STABILITY). They were
 * computed from the formula in placement.h by an independent implementation. */
static void test_score_golden(void **state)
{
    uint8_t zero[PLACEMENT_HASH_LEN] = {0};
    uint8_t ramp[PLACEMENT_HASH_LEN];

    for (int i = 0; i < PLACEMENT_HASH_LEN; i++)
        ramp[i] = (uint8_t) i;
    assert_true(placement_score(zero, 0) == 0x6ff41300e7bac63dULL);
    assert_true(placement_score(ramp, 0x0123456789abcdefULL) == 0x83d1df3abbcaeff7ULL);
}

/* Every bit of the hash and of the id takes part in the score. */
static void test_score_uses_every_bit(void **state)
{
    uint8_t hash[PLACEMENT_HASH_LEN];
    uint64_t id = 0x0123456789abcdefULL;

    body_hash(1, hash);
    uint64_t base = placement_score(hash, id);
    for (int bit = 0; bit < 8 * PLACEMENT_HASH_LEN; bit++) {
        hash[bit / 8] ^= (uint8_t) (1u << (bit % 8));
        assert_true(placement_score(hash, id) != base);
        hash[bit / 8] ^= (uint8_t) (1u << (bit % 8));
    }
    for (int bit = 0; bit < 64; bit++)
        assert_true(placement_score(hash, id ^ ((uint64_t) 1 << bit)) != base);
}

/* Golden owners for one body: pins the ranking, the zone rule and NULL == "". Scores for
 * SHA-256("tern"), best first: 2(a) 5(c) 6("") 1(a) 7(NULL) 3(b) 4(b). */
static void test_owners_golden(void **state)
{
    const struct placement_node nodes[] = {{1, "a"}, {2, "a"}, {3, "b"}, {4, "b"},
                                           {5, "c"}, {6, ""},  {7, NULL}};
    const uint64_t want[] = {2, 5, 6, 3, 1, 7, 4};
    uint8_t hash[PLACEMENT_HASH_LEN];
    uint64_t out[7];

    assert_int_equal(EVP_Digest("tern", 4, hash, NULL, EVP_sha256(), NULL), 1);
    assert_true(placement_score(hash, 2) == 0xc81b3a4d3baf8ab2ULL);
    assert_true(placement_score(hash, 4) == 0x1a925a6ed3289486ULL);
    assert_int_equal(placement_owners(nodes, 7, hash, 7, out), 7);
    assert_memory_equal(out, want, sizeof(want));
    assert_int_equal(placement_owners(nodes, 7, hash, 3, out), 3);
    assert_memory_equal(out, want, 3 * sizeof(uint64_t));
}

/* Same members in any order, same owners in the same order; and the same on every call. */
static void test_order_independent(void **state)
{
    struct placement_node nodes[40];
    uint8_t hash[PLACEMENT_HASH_LEN];

    for (int t = 0; t < 300; t++) {
        size_t n = 1 + rng() % 40;
        unsigned r = 1 + rng() % 6;
        uint64_t first[40], again[40];
        int k;

        random_cluster(nodes, n);
        body_hash(rng(), hash);
        k = placement_owners(nodes, n, hash, r, first);
        assert_int_equal(k, r < n ? r : n);
        for (int s = 0; s < 5; s++) {
            shuffle(nodes, n);
            assert_int_equal(placement_owners(nodes, n, hash, r, again), k);
            assert_memory_equal(first, again, (size_t) k * sizeof(uint64_t));
        }
    }
}

static void test_r_above_n(void **state)
{
    const struct placement_node nodes[] = {{10, "a"}, {20, "a"}, {30, "b"}};
    uint8_t hash[PLACEMENT_HASH_LEN];
    uint64_t out[3];

    body_hash(7, hash);
    assert_int_equal(placement_owners(nodes, 3, hash, 5, out), 3);
    assert_true(contains(out, 3, 10) && contains(out, 3, 20) && contains(out, 3, 30));
    assert_int_equal(placement_owners(nodes, 3, hash, UINT_MAX, out), 3);
    assert_int_equal(placement_owners(nodes, 0, hash, 3, out), 0);
    assert_true(placement_is_owner(nodes, 3, hash, UINT_MAX, 20));
    assert_false(placement_is_owner(nodes, 0, hash, 3, 20));
}

/* Owners are distinct members, and the owners for R are a prefix of those for R + 1. */
static void test_distinct_and_prefix(void **state)
{
    struct placement_node nodes[PLACEMENT_MAX_NODES];
    uint8_t hash[PLACEMENT_HASH_LEN];

    for (int t = 0; t < 200; t++) {
        size_t n = t < 10 ? PLACEMENT_MAX_NODES : 1 + rng() % 30;
        uint64_t prev[PLACEMENT_MAX_NODES], out[PLACEMENT_MAX_NODES];
        int prevk = 0;

        random_cluster(nodes, n);
        body_hash(rng(), hash);
        for (unsigned r = 1; r <= n + 1 && r <= 12; r++) {
            int k = placement_owners(nodes, n, hash, r, out);

            assert_int_equal(k, r < n ? r : n);
            for (int i = 0; i < k; i++) {
                (void) zone_of(nodes, n, out[i]); /* fails unless a member */
                assert_false(contains(out, (size_t) i, out[i]));
                assert_true(placement_is_owner(nodes, n, hash, r, out[i]));
            }
            assert_memory_equal(prev, out, (size_t) prevk * sizeof(uint64_t));
            memcpy(prev, out, (size_t) k * sizeof(uint64_t));
            prevk = k;
        }
    }
}

/* Bad arguments give -1 and leave OUT alone; placement_is_owner() says false. */
static void test_bad_arguments(void **state)
{
    static struct placement_node many[PLACEMENT_MAX_NODES + 1];
    struct placement_node nodes[] = {{1, "a"}, {2, "b"}, {3, "a"}, {4, "c"}, {5, ""}};
    uint8_t hash[PLACEMENT_HASH_LEN];
    uint64_t out[5] = {99, 99, 99, 99, 99};
    const uint64_t untouched[5] = {99, 99, 99, 99, 99};

    body_hash(3, hash);
    assert_int_equal(placement_owners(NULL, 5, hash, 3, out), -1);
    assert_int_equal(placement_owners(nodes, 5, NULL, 3, out), -1);
    assert_int_equal(placement_owners(nodes, 5, hash, 3, NULL), -1);
    assert_int_equal(placement_owners(nodes, 5, hash, 0, out), -1);
    for (size_t i = 0; i < PLACEMENT_MAX_NODES + 1; i++)
        many[i].id = i;
    assert_int_equal(placement_owners(many, PLACEMENT_MAX_NODES + 1, hash, 3, out), -1);
    assert_int_equal(placement_owners(many, PLACEMENT_MAX_NODES, hash, 3, out), 3);
    memcpy(out, untouched, sizeof(out));

    /* A duplicate id anywhere, even far from the owners and in another zone. */
    for (size_t i = 0; i < 5; i++) {
        for (size_t j = 0; j < 5; j++) {
            if (i == j)
                continue;
            uint64_t saved = nodes[j].id;

            nodes[j].id = nodes[i].id;
            assert_int_equal(placement_owners(nodes, 5, hash, 1, out), -1);
            assert_false(placement_is_owner(nodes, 5, hash, 5, nodes[i].id));
            nodes[j].id = saved;
        }
    }
    assert_memory_equal(out, untouched, sizeof(out));
    assert_false(placement_is_owner(nodes, 5, hash, 0, 1));
    assert_false(placement_is_owner(NULL, 5, hash, 3, 1));
}

/* The zone rule, on random clusters, against the brute-force statement of it. */
static void test_zone_rule_reference(void **state)
{
    struct placement_node nodes[PLACEMENT_MAX_NODES];
    uint8_t hash[PLACEMENT_HASH_LEN];

    for (int t = 0; t < MAX_TRIES; t++) {
        size_t n = t < 20 ? PLACEMENT_MAX_NODES : 1 + rng() % 24;
        unsigned r = 1 + rng() % 8;
        uint64_t out[PLACEMENT_MAX_NODES], ref[PLACEMENT_MAX_NODES];
        size_t k;

        random_cluster(nodes, n);
        body_hash(rng(), hash);
        k = reference_owners(nodes, n, hash, r, ref);
        assert_int_equal(placement_owners(nodes, n, hash, r, out), (int) k);
        assert_memory_equal(out, ref, k * sizeof(uint64_t));
    }
}

/* 3 zones of 3 nodes, R = 3: always one owner per zone. */
static void test_zone_spread_three(void **state)
{
    const struct placement_node nodes[] = {{1, "z1"}, {2, "z1"}, {3, "z1"}, {4, "z2"}, {5, "z2"},
                                           {6, "z2"}, {7, "z3"}, {8, "z3"}, {9, "z3"}};
    uint8_t hash[PLACEMENT_HASH_LEN];
    uint64_t out[3];

    for (int b = 0; b < BODIES; b++) {
        body_hash((uint64_t) b, hash);
        assert_int_equal(placement_owners(nodes, 9, hash, 3, out), 3);
        const char *z0 = zone_of(nodes, 9, out[0]);
        const char *z1 = zone_of(nodes, 9, out[1]);
        const char *z2 = zone_of(nodes, 9, out[2]);
        assert_true(strcmp(z0, z1) != 0 && strcmp(z0, z2) != 0 && strcmp(z1, z2) != 0);
    }
}

/* 2 zones, R = 3: both zones always hold a copy, and the first two owners are in different
 * zones (the third fills by score). The small zone is not overloaded beyond that. */
static void test_zone_spread_two(void **state)
{
    const struct placement_node nodes[] = {{1, "east"}, {2, "east"}, {3, "east"},
                                           {4, "east"}, {5, "west"}, {6, "west"}};
    uint8_t hash[PLACEMENT_HASH_LEN];
    uint64_t out[3];

    for (int b = 0; b < BODIES; b++) {
        body_hash((uint64_t) b, hash);
        assert_int_equal(placement_owners(nodes, 6, hash, 3, out), 3);
        const char *z0 = zone_of(nodes, 6, out[0]);
        const char *z1 = zone_of(nodes, 6, out[1]);
        const char *z2 = zone_of(nodes, 6, out[2]);
        assert_true(strcmp(z0, z1) != 0);
        assert_true(strcmp(z2, "east") == 0 || strcmp(z2, "west") == 0);
    }
}

/* "" and NULL are one zone, not one zone per node: with one labelled node, it is always
 * among the first two owners; and a cluster without zones is plain rendezvous, R best. */
static void test_empty_zone(void **state)
{
    const struct placement_node mixed[] = {{1, ""}, {2, NULL}, {3, ""}, {4, "lab"}};
    const struct placement_node plain[] = {{1, ""}, {2, NULL}, {3, ""}, {4, NULL}, {5, ""}};
    uint8_t hash[PLACEMENT_HASH_LEN];
    uint64_t out[3];

    for (int b = 0; b < 1000; b++) {
        body_hash((uint64_t) b, hash);
        assert_int_equal(placement_owners(mixed, 4, hash, 2, out), 2);
        assert_true(out[0] == 4 || out[1] == 4);

        assert_int_equal(placement_owners(plain, 5, hash, 3, out), 3);
        for (int i = 0; i < 2; i++)
            assert_true(placement_score(hash, out[i]) > placement_score(hash, out[i + 1]));
        for (size_t i = 0; i < 5; i++)
            if (!contains(out, 3, plain[i].id))
                assert_true(placement_score(hash, plain[i].id) < placement_score(hash, out[2]));
    }
}

/* 10,000 bodies over 5 nodes with R = 3: each node owns 6,000 +- 10% of them, and is the
 * first owner of 2,000 +- 10% (binomial standard deviations are 49 and 40). */
static void test_balance(void **state)
{
    const struct placement_node nodes[] = {{101, ""}, {102, ""}, {103, ""}, {104, ""}, {105, ""}};
    unsigned owned[5] = {0}, first[5] = {0};
    uint8_t hash[PLACEMENT_HASH_LEN];
    uint64_t out[3];

    for (int b = 0; b < BODIES; b++) {
        body_hash((uint64_t) b, hash);
        assert_int_equal(placement_owners(nodes, 5, hash, 3, out), 3);
        for (int i = 0; i < 3; i++)
            owned[out[i] - 101]++;
        first[out[0] - 101]++;
    }
    for (int i = 0; i < 5; i++) {
        assert_in_range(owned[i], 5400, 6600);
        assert_in_range(first[i], 1800, 2200);
    }
}

/* check_join() compares the owners before (BEFORE, N nodes) and after (AFTER = BEFORE plus
 * node NEW) for BODIES bodies: a set changes only by NEW coming in and one old owner going
 * out. Returns how many sets changed. */
static unsigned check_join(const struct placement_node *before, size_t n,
                           const struct placement_node *after, uint64_t new_id, unsigned r)
{
    uint8_t hash[PLACEMENT_HASH_LEN];
    uint64_t old[PLACEMENT_MAX_NODES], now[PLACEMENT_MAX_NODES];
    unsigned changed = 0;

    for (int b = 0; b < BODIES; b++) {
        body_hash((uint64_t) b, hash);
        int k = placement_owners(before, n, hash, r, old);
        assert_int_equal(placement_owners(after, n + 1, hash, r, now), k);
        if (same_set(old, now, (size_t) k))
            continue;
        changed++;
        assert_true(contains(now, (size_t) k, new_id));
        unsigned gone = 0;
        for (int i = 0; i < k; i++)
            gone += !contains(now, (size_t) k, old[i]);
        assert_int_equal(gone, 1);
    }
    return changed;
}

/* A 6th node joins 5, R = 3: it takes one slot of about R/6 = half the bodies (1/6 of all
 * slots), and no body moves between two old nodes. Then the same with zones. */
static void test_join_moves_little(void **state)
{
    const struct placement_node plain[] = {{1, ""}, {2, ""}, {3, ""}, {4, ""}, {5, ""}, {6, ""}};
    const struct placement_node zoned[] = {{1, "a"}, {2, "a"}, {3, "b"}, {4, "b"},
                                           {5, "c"}, {6, "c"}, {7, "d"}};
    unsigned changed = check_join(plain, 5, plain, 6, 3);

    assert_in_range(changed, BODIES / 2 - BODIES / 20, BODIES / 2 + BODIES / 20);
    /* In an existing zone, in a new zone, with fills (R = 4 > 3 zones) and without. */
    for (unsigned r = 2; r <= 4; r++) {
        struct placement_node joined[7];

        memcpy(joined, zoned, sizeof(joined));
        joined[6].zone = "a";
        assert_true(check_join(zoned, 6, joined, 7, r) > 0);
        assert_true(check_join(zoned, 6, zoned, 7, r) > 0);
    }
}

/* check_leave() removes node GONE_AT from NODES and checks that only the owner sets that
 * held it change, each by losing it and gaining one other node. */
static void check_leave(const struct placement_node *nodes, size_t n, size_t gone_at, unsigned r)
{
    struct placement_node rest[PLACEMENT_MAX_NODES];
    uint8_t hash[PLACEMENT_HASH_LEN];
    uint64_t old[PLACEMENT_MAX_NODES], now[PLACEMENT_MAX_NODES];
    uint64_t gone = nodes[gone_at].id;
    size_t m = 0;

    for (size_t i = 0; i < n; i++)
        if (i != gone_at)
            rest[m++] = nodes[i];
    for (int b = 0; b < BODIES / 4; b++) {
        body_hash((uint64_t) b, hash);
        int k = placement_owners(nodes, n, hash, r, old);
        int k2 = placement_owners(rest, m, hash, r, now);

        if (!contains(old, (size_t) k, gone)) {
            assert_int_equal(k2, k);
            assert_true(same_set(old, now, (size_t) k));
            continue;
        }
        for (int i = 0; i < k; i++)
            assert_true(old[i] == gone || contains(now, (size_t) k2, old[i]));
    }
}

static void test_leave_moves_little(void **state)
{
    const struct placement_node plain[] = {{1, ""}, {2, ""}, {3, ""}, {4, ""}, {5, ""}, {6, ""}};
    const struct placement_node zoned[] = {{1, "a"}, {2, "a"}, {3, "b"}, {4, "b"},
                                           {5, "c"}, {6, "c"}, {7, "a"}, {8, "d"}};

    for (size_t g = 0; g < 6; g++)
        check_leave(plain, 6, g, 3);
    for (size_t g = 0; g < 8; g++)
        for (unsigned r = 1; r <= 5; r++)
            check_leave(zoned, 8, g, r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_score_golden),      cmocka_unit_test(test_score_uses_every_bit),
        cmocka_unit_test(test_owners_golden),     cmocka_unit_test(test_order_independent),
        cmocka_unit_test(test_r_above_n),         cmocka_unit_test(test_distinct_and_prefix),
        cmocka_unit_test(test_bad_arguments),     cmocka_unit_test(test_zone_rule_reference),
        cmocka_unit_test(test_zone_spread_three), cmocka_unit_test(test_zone_spread_two),
        cmocka_unit_test(test_empty_zone),        cmocka_unit_test(test_balance),
        cmocka_unit_test(test_join_moves_little), cmocka_unit_test(test_leave_moves_little),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
