/*
 * tests/unit/imap/test_seqset.c
 * IMAP sequence sets (proxy/imap/seqset.c): the RFC 3501 / 9051 grammar good and bad
 * (zero, leading zeros, 2^32, empty items, "$" of RFC 5182), normalization, "*" against
 * every max including an empty mailbox, the range cap, and membership and both iterators
 * checked against a reference evaluation of random sets.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "seqset.h"

static void parse_ok(const char *s, unsigned flags, struct imap_seqset *set)
{
    const char *why = NULL;

    assert_int_equal(imap_seqset_parse(s, strlen(s), flags, set, &why), 0);
    assert_null(why);
}

static void parse_bad(const char *s, unsigned flags, int err)
{
    struct imap_seqset set;
    const char *why = NULL;

    assert_int_equal(imap_seqset_parse(s, strlen(s), flags, &set, &why), err);
    assert_non_null(why);
    assert_int_equal(set.count, 0);
    assert_null(set.ranges);
    assert_false(set.star);
    assert_false(set.searchres);
    imap_seqset_free(&set);
}

/* ranges_are() compares the concrete ranges with "lo:hi,lo:hi". */
static void ranges_are(const struct imap_seqset *set, const char *expect)
{
    char buf[512] = "";
    size_t n = 0;

    for (size_t i = 0; i < set->count; i++)
        n += (size_t) snprintf(buf + n, sizeof(buf) - n, "%s%u:%u", i ? "," : "", set->ranges[i].lo,
                               set->ranges[i].hi);
    assert_string_equal(buf, expect);
}

static void test_parse_good(void **state)
{
    struct imap_seqset set;

    (void) state;
    parse_ok("1", 0, &set);
    ranges_are(&set, "1:1");
    assert_false(set.star);
    imap_seqset_free(&set);
    parse_ok("5:1", 0, &set);
    ranges_are(&set, "1:5");
    imap_seqset_free(&set);
    parse_ok("9,1:3,2:6,8,20:30,25", 0, &set);
    ranges_are(&set, "1:6,8:9,20:30");
    imap_seqset_free(&set);
    parse_ok("1:3,4:6,7", 0, &set); /* adjacent ranges merge */
    ranges_are(&set, "1:7");
    imap_seqset_free(&set);
    parse_ok("4294967295,1,4294967294:4294967293", 0, &set);
    ranges_are(&set, "1:1,4294967293:4294967295");
    imap_seqset_free(&set);
    parse_ok("10", 0, &set);
    ranges_are(&set, "10:10");
    imap_seqset_free(&set);

    parse_ok("*", 0, &set);
    ranges_are(&set, "");
    assert_true(set.star);
    assert_int_equal(set.star_lo, UINT32_MAX);
    assert_null(set.ranges);
    imap_seqset_free(&set);
    parse_ok("1:*", 0, &set);
    assert_true(set.star);
    assert_int_equal(set.star_lo, 1);
    imap_seqset_free(&set);
    parse_ok("*:5,7:*,2,*:*", 0, &set);
    ranges_are(&set, "2:2");
    assert_int_equal(set.star_lo, 5);
    imap_seqset_free(&set);

    parse_ok("$", IMAP_SEQSET_FLAG_SEARCHRES, &set);
    assert_true(set.searchres);
    assert_int_equal(set.count, 0);
    imap_seqset_free(&set);
    imap_seqset_free(&set); /* twice is fine */
}

static void test_parse_bad(void **state)
{
    (void) state;
    const char *bad[] = {"",     "0",     "01",  "1:0",  "0:1", ",1",         "1,",
                         "1,,2", "1:2:3", "a",   "1 2",  "-1",  "1:*x",       "*1",
                         "1*",   ":",     "1:",  ":1",   "**",  "4294967296", "99999999999",
                         "$",    "1.5",   "1;2", "1:*,", " 1",  "+1"};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        parse_bad(bad[i], 0, IMAP_SEQSET_ESYNTAX);
    parse_bad("$,1", IMAP_SEQSET_FLAG_SEARCHRES, IMAP_SEQSET_ESYNTAX);
    parse_bad("1,$", IMAP_SEQSET_FLAG_SEARCHRES, IMAP_SEQSET_ESYNTAX);
    parse_bad("$:1", IMAP_SEQSET_FLAG_SEARCHRES, IMAP_SEQSET_ESYNTAX);
    {
        /* A NUL inside is never part of a set (LEN, not strlen, is what counts). */
        struct imap_seqset set;

        assert_int_equal(imap_seqset_parse("1\0"
                                           "2",
                                           3, 0, &set, NULL),
                         IMAP_SEQSET_ESYNTAX);
        imap_seqset_free(&set);
    }
}

static void test_range_cap(void **state)
{
    static char buf[IMAP_SEQSET_RANGES_MAX * 8 + 16];
    struct imap_seqset set;
    size_t n = 0;

    (void) state;
    for (int i = 0; i < IMAP_SEQSET_RANGES_MAX; i++)
        n += (size_t) sprintf(buf + n, "%s%d", i ? "," : "", 2 * i + 1);
    assert_int_equal(imap_seqset_parse(buf, n, 0, &set, NULL), 0);
    assert_int_equal(set.count, IMAP_SEQSET_RANGES_MAX);
    assert_true(imap_seqset_contains(&set, 19999, 20000));
    assert_false(imap_seqset_contains(&set, 19998, 20000));
    imap_seqset_free(&set);
    n += (size_t) sprintf(buf + n, ",7");
    assert_int_equal(imap_seqset_parse(buf, n, 0, &set, NULL), IMAP_SEQSET_ETOOMANY);
    imap_seqset_free(&set);
}

static void test_contains_star(void **state)
{
    struct imap_seqset set;

    (void) state;
    /* "5:*" with 3 messages is 3:5: the last message matches (RFC 3501 6.4.8). */
    parse_ok("5:*", 0, &set);
    assert_false(imap_seqset_contains(&set, 2, 3));
    assert_true(imap_seqset_contains(&set, 3, 3));
    assert_false(imap_seqset_contains(&set, 4, 3)); /* beyond max: no such message */
    assert_true(imap_seqset_contains(&set, 5, 10));
    assert_true(imap_seqset_contains(&set, 10, 10));
    assert_false(imap_seqset_contains(&set, 4, 10));
    /* An empty mailbox has no members. */
    assert_false(imap_seqset_contains(&set, 0, 0));
    assert_false(imap_seqset_contains(&set, 1, 0));
    imap_seqset_free(&set);

    parse_ok("*", 0, &set);
    assert_true(imap_seqset_contains(&set, 10, 10));
    assert_false(imap_seqset_contains(&set, 9, 10));
    assert_true(imap_seqset_contains(&set, UINT32_MAX, UINT32_MAX));
    imap_seqset_free(&set);

    parse_ok("2,4:6", 0, &set);
    assert_false(imap_seqset_contains(&set, 0, 5));
    assert_false(imap_seqset_contains(&set, 1, 5));
    assert_true(imap_seqset_contains(&set, 2, 5));
    assert_false(imap_seqset_contains(&set, 3, 5));
    assert_true(imap_seqset_contains(&set, 5, 5));
    assert_false(imap_seqset_contains(&set, 6, 5));
    assert_true(imap_seqset_contains(&set, 6, 6));
    imap_seqset_free(&set);

    /* The literal number 4294967295 is not "*". */
    parse_ok("4294967295", 0, &set);
    assert_false(imap_seqset_contains(&set, 10, 10));
    assert_true(imap_seqset_contains(&set, UINT32_MAX, UINT32_MAX));
    imap_seqset_free(&set);
}

static void collect(const struct imap_seqset *set, uint32_t max, char *buf, size_t size)
{
    struct imap_seqset_iter it;
    uint32_t n;
    size_t len = 0;

    buf[0] = '\0';
    imap_seqset_iter_init(&it, set, max);
    while (imap_seqset_iter_next(&it, &n))
        len += (size_t) snprintf(buf + len, size - len, "%u ", n);
}

static void collect_ranges(const struct imap_seqset *set, uint32_t max, char *buf, size_t size)
{
    struct imap_seqset_iter it;
    uint32_t lo, hi;
    size_t len = 0;

    buf[0] = '\0';
    imap_seqset_iter_init(&it, set, max);
    while (imap_seqset_iter_next_range(&it, &lo, &hi))
        len += (size_t) snprintf(buf + len, size - len, "%u:%u ", lo, hi);
}

static void test_iterate(void **state)
{
    struct imap_seqset set;
    char buf[256];

    (void) state;
    parse_ok("2,4:6,9:*", 0, &set);
    collect(&set, 12, buf, sizeof(buf));
    assert_string_equal(buf, "2 4 5 6 9 10 11 12 ");
    collect_ranges(&set, 12, buf, sizeof(buf));
    assert_string_equal(buf, "2:2 4:6 9:12 ");
    collect(&set, 5, buf, sizeof(buf));
    assert_string_equal(buf, "2 4 5 ");
    collect_ranges(&set, 7, buf, sizeof(buf)); /* 9:* with max 7 is 7:9: 4:7 in one */
    assert_string_equal(buf, "2:2 4:7 ");
    collect(&set, 0, buf, sizeof(buf));
    assert_string_equal(buf, "");
    imap_seqset_free(&set);

    parse_ok("1:*", 0, &set);
    collect_ranges(&set, UINT32_MAX, buf, sizeof(buf));
    assert_string_equal(buf, "1:4294967295 ");
    imap_seqset_free(&set);
    parse_ok("4294967294:4294967295", 0, &set);
    collect(&set, UINT32_MAX, buf, sizeof(buf));
    assert_string_equal(buf, "4294967294 4294967295 ");
    imap_seqset_free(&set);
    parse_ok("3,*", 0, &set);
    collect_ranges(&set, 4, buf, sizeof(buf));
    assert_string_equal(buf, "3:4 ");
    collect_ranges(&set, 3, buf, sizeof(buf));
    assert_string_equal(buf, "3:3 ");
    imap_seqset_free(&set);
}

/* ---- Random sets against a reference ----------------------------------------------------- */

/* ref_contains() evaluates TEXT directly: each item lo[:hi] with "*" as MAX. */
static bool ref_contains(const char *text, uint32_t n, uint32_t max)
{
    const char *p = text;

    if (n < 1 || n > max)
        return false;
    while (*p != '\0') {
        uint64_t a, b;

        a = *p == '*' ? max : strtoull(p, NULL, 10);
        while (*p != '\0' && *p != ':' && *p != ',')
            p++;
        b = a;
        if (*p == ':') {
            p++;
            b = *p == '*' ? max : strtoull(p, NULL, 10);
            while (*p != '\0' && *p != ',')
                p++;
        }
        if ((a <= n && n <= b) || (b <= n && n <= a))
            return true;
        if (*p == ',')
            p++;
    }
    return false;
}

static void test_random_against_reference(void **state)
{
    char text[512];
    struct imap_seqset set;

    (void) state;
    srand(42);
    for (int round = 0; round < 3000; round++) {
        size_t len = 0;
        int items = rand() % 8 + 1;

        for (int i = 0; i < items; i++) {
            int a = rand() % 45, b = rand() % 45;
            const char *sep = i ? "," : "";

            if (a == 0)
                len += (size_t) sprintf(text + len, "%s*", sep);
            else if (rand() % 3 == 0)
                len += (size_t) sprintf(text + len, "%s%d", sep, a);
            else if (b == 0)
                len += (size_t) sprintf(text + len, "%s%d:*", sep, a);
            else
                len += (size_t) sprintf(text + len, "%s%d:%d", sep, a, b);
        }
        parse_ok(text, 0, &set);
        for (size_t i = 0; i < set.count; i++) { /* normalized */
            assert_true(set.ranges[i].lo >= 1 && set.ranges[i].lo <= set.ranges[i].hi);
            if (i > 0)
                assert_true((uint64_t) set.ranges[i - 1].hi + 1 < set.ranges[i].lo);
        }
        for (uint32_t max = 0; max <= 50; max += (uint32_t) (rand() % 7) + 1) {
            struct imap_seqset_iter it, rit;
            uint32_t next = 0, lo = 0, hi = 0, prev_hi = 0;
            bool have;

            imap_seqset_iter_init(&it, &set, max);
            imap_seqset_iter_init(&rit, &set, max);
            have = imap_seqset_iter_next_range(&rit, &lo, &hi);
            for (uint32_t n = 0; n <= 52; n++) {
                bool in = ref_contains(text, n, max);

                assert_int_equal(imap_seqset_contains(&set, n, max), in);
                if (!in)
                    continue;
                /* The member iterator gives exactly the members, in order. */
                assert_true(imap_seqset_iter_next(&it, &next));
                assert_int_equal(next, n);
                /* The range iterator covers them with maximal runs. */
                assert_true(have);
                if (n > hi) {
                    prev_hi = hi;
                    have = imap_seqset_iter_next_range(&rit, &lo, &hi);
                    assert_true(have);
                    assert_true(lo > prev_hi + 1);
                }
                assert_true(lo <= n && n <= hi && hi <= max);
            }
            assert_false(imap_seqset_iter_next(&it, &next));
            if (have)
                assert_false(imap_seqset_iter_next_range(&rit, &lo, &hi));
        }
        imap_seqset_free(&set);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good), cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_range_cap),  cmocka_unit_test(test_contains_star),
        cmocka_unit_test(test_iterate),    cmocka_unit_test(test_random_against_reference),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
