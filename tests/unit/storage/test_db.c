/*
 * tests/unit/storage/test_db.c
 * Unit tests of the RocksDB wrapper (storage/db.c) on a real database in a temporary
 * directory: point operations in every column family, batches across families, exact
 * [lo, hi) iteration, persistence across reopen, checkpoints, and close(NULL).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "db.h"
#include "keys.h"
#include "log.h"
#include "tmpdir.h"

struct fixture {
    char tmp[TMPDIR_MAX]; /* removed in teardown */
    char dir[TMPDIR_MAX]; /* tmp/db */
    struct db *db;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[DB_ERR_MAX];

    if (f == NULL || tmpdir_make(f->tmp, "db") < 0 || tmpdir_join(f->dir, f->tmp, "db") < 0)
        return -1;
    if (db_open(f->dir, &f->db, err) < 0) {
        print_error("db_open: %s\n", err);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    db_close(f->db);
    tmpdir_remove(f->tmp);
    free(f);
    return 0;
}

static void reopen(struct fixture *f)
{
    char err[DB_ERR_MAX];

    db_close(f->db);
    f->db = NULL;
    assert_int_equal(db_open(f->dir, &f->db, err), 0);
}

/* check_value() asserts that CF holds KEY = VAL (a string). */
static void check_value(struct db *db, enum db_cf cf, const char *key, const char *val)
{
    char *v = NULL;
    size_t n = 0;

    assert_int_equal(db_get(db, cf, key, strlen(key), &v, &n), 1);
    assert_int_equal(n, strlen(val));
    assert_memory_equal(v, val, n);
    free(v);
}

static void check_absent(struct db *db, enum db_cf cf, const char *key)
{
    char *v = NULL;
    size_t n = 0;

    assert_int_equal(db_get(db, cf, key, strlen(key), &v, &n), 0);
    assert_null(v);
}

static void test_open_creates_private_dir(void **state)
{
    struct fixture *f = *state;
    struct stat st;

    assert_int_equal(stat(f->dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 077, 0);
    assert_non_null(db_rocks(f->db));
    for (int cf = 0; cf < DB_CF_COUNT; cf++)
        assert_non_null(db_cf(f->db, cf));
    assert_ptr_not_equal(db_cf(f->db, DB_CF_META), db_cf(f->db, DB_CF_BODIES));
}

static void test_put_get_delete_each_cf(void **state)
{
    struct fixture *f = *state;
    static const char *const vals[DB_CF_COUNT] = {"meta-value", "bodies-value", "local-value"};

    for (int cf = 0; cf < DB_CF_COUNT; cf++)
        assert_int_equal(db_put(f->db, cf, "k", 1, vals[cf], strlen(vals[cf]), cf != 0), 0);
    /* Same key, three families, three values: the families are separate key spaces. */
    for (int cf = 0; cf < DB_CF_COUNT; cf++)
        check_value(f->db, cf, "k", vals[cf]);

    /* Overwrite, then delete in one family only. */
    assert_int_equal(db_put(f->db, DB_CF_LOCAL, "k", 1, "new", 3, true), 0);
    check_value(f->db, DB_CF_LOCAL, "k", "new");
    assert_int_equal(db_delete(f->db, DB_CF_META, "k", 1, false), 0);
    check_absent(f->db, DB_CF_META, "k");
    check_value(f->db, DB_CF_BODIES, "k", "bodies-value");
    /* Deleting an absent key is fine. */
    assert_int_equal(db_delete(f->db, DB_CF_META, "nope", 4, true), 0);

    /* An empty value is found, not absent. */
    char *v = NULL;
    size_t n = 99;
    assert_int_equal(db_put(f->db, DB_CF_META, "empty", 5, "", 0, true), 0);
    assert_int_equal(db_get(f->db, DB_CF_META, "empty", 5, &v, &n), 1);
    assert_int_equal(n, 0);
    assert_non_null(v);
    free(v);

    /* Binary keys with NUL bytes. */
    static const uint8_t bk[] = {0x00, 0x01, 0x00};
    assert_int_equal(db_put(f->db, DB_CF_META, bk, sizeof(bk), "bin", 3, false), 0);
    assert_int_equal(db_get(f->db, DB_CF_META, bk, 2, &v, &n), 0);
    assert_int_equal(db_get(f->db, DB_CF_META, bk, sizeof(bk), &v, &n), 1);
    assert_memory_equal(v, "bin", 3);
    free(v);
}

static void test_get_u64(void **state)
{
    struct fixture *f = *state;
    uint8_t be[8];
    uint64_t v = 42;

    assert_int_equal(db_get_u64(f->db, DB_CF_LOCAL, "ctr", 3, &v), 0);
    assert_true(v == 0);
    be64_put(be, 0x0102030405060708ULL);
    assert_int_equal(db_put(f->db, DB_CF_LOCAL, "ctr", 3, be, 8, true), 0);
    assert_int_equal(db_get_u64(f->db, DB_CF_LOCAL, "ctr", 3, &v), 1);
    assert_true(v == 0x0102030405060708ULL);
    /* A value of the wrong size is an error, not a number. */
    assert_int_equal(db_put(f->db, DB_CF_LOCAL, "bad", 3, be, 7, true), 0);
    assert_int_equal(db_get_u64(f->db, DB_CF_LOCAL, "bad", 3, &v), -1);
}

static void test_batch_across_cfs(void **state)
{
    struct fixture *f = *state;
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();

    assert_int_equal(db_put(f->db, DB_CF_LOCAL, "old", 3, "x", 1, true), 0);
    rocksdb_writebatch_put_cf(b, db_cf(f->db, DB_CF_META), "m1", 2, "v1", 2);
    rocksdb_writebatch_put_cf(b, db_cf(f->db, DB_CF_BODIES), "b1", 2, "v2", 2);
    rocksdb_writebatch_put_cf(b, db_cf(f->db, DB_CF_LOCAL), "l1", 2, "v3", 2);
    rocksdb_writebatch_delete_cf(b, db_cf(f->db, DB_CF_LOCAL), "old", 3);

    /* Nothing is visible before the write. */
    check_absent(f->db, DB_CF_META, "m1");
    check_absent(f->db, DB_CF_BODIES, "b1");

    assert_int_equal(db_write(f->db, b, false), 0);
    /* The batch stays the caller's and is still intact. */
    assert_int_equal(rocksdb_writebatch_count(b), 4);
    rocksdb_writebatch_destroy(b);

    check_value(f->db, DB_CF_META, "m1", "v1");
    check_value(f->db, DB_CF_BODIES, "b1", "v2");
    check_value(f->db, DB_CF_LOCAL, "l1", "v3");
    check_absent(f->db, DB_CF_LOCAL, "old");

    /* Written without fsync but with the WAL: it survives a clean reopen. */
    reopen(f);
    check_value(f->db, DB_CF_META, "m1", "v1");
    check_value(f->db, DB_CF_BODIES, "b1", "v2");
    check_value(f->db, DB_CF_LOCAL, "l1", "v3");
    check_absent(f->db, DB_CF_LOCAL, "old");

    /* A synced batch too. */
    b = rocksdb_writebatch_create();
    rocksdb_writebatch_put_cf(b, db_cf(f->db, DB_CF_META), "m2", 2, "w", 1);
    rocksdb_writebatch_delete_cf(b, db_cf(f->db, DB_CF_META), "m1", 2);
    assert_int_equal(db_write(f->db, b, true), 0);
    rocksdb_writebatch_destroy(b);
    check_value(f->db, DB_CF_META, "m2", "w");
    check_absent(f->db, DB_CF_META, "m1");
}

/* Puts keys (0x41, u32 i) for i in 0..19 into META, and a neighbour family's key. */
static void put_range_keys(struct db *db)
{
    for (uint32_t i = 0; i < 20; i++) {
        struct key k;
        uint8_t v[4];
        key_init(&k, 0x41);
        key_u32(&k, i);
        be32_put(v, i * 10);
        assert_int_equal(db_put(db, DB_CF_META, k.buf, k.len, v, sizeof(v), false), 0);
    }
    /* Keys just outside any range below: another prefix on each side. */
    assert_int_equal(db_put(db, DB_CF_META, "\x40\xff", 2, "lo", 2, false), 0);
    assert_int_equal(db_put(db, DB_CF_META, "\x42", 1, "hi", 2, false), 0);
    /* Same prefix in another family must not show up. */
    assert_int_equal(db_put(db, DB_CF_LOCAL, "\x41\x00\x00\x00\x05x", 6, "z", 1, false), 0);
}

/* scan() returns the u32 ids seen in [LO, HI) of META into IDS, and their number. */
static int scan(struct db *db, const struct key *lo, const struct key *hi, uint32_t ids[], int max)
{
    struct db_iter *it;
    int n = 0;

    it = db_iter_open(db, DB_CF_META, lo ? lo->buf : NULL, lo ? lo->len : 0, hi ? hi->buf : NULL,
                      hi ? hi->len : 0);
    assert_non_null(it);
    for (; db_iter_valid(it); db_iter_next(it)) {
        size_t klen, vlen;
        const char *k = db_iter_key(it, &klen);
        const char *v = db_iter_value(it, &vlen);
        struct key_reader r;
        uint8_t p;
        uint32_t id;

        assert_true(n < max);
        key_reader_init(&r, k, klen);
        assert_true(key_read_u8(&r, &p));
        if (p != 0x41 || klen != 5) {
            ids[n++] = UINT32_MAX; /* a foreign key: the caller's expectation fails */
            continue;
        }
        assert_true(key_read_u32(&r, &id));
        assert_int_equal(vlen, 4);
        assert_int_equal(be32_get((const uint8_t *) v), id * 10);
        ids[n++] = id;
    }
    assert_int_equal(db_iter_close(it), 0);
    return n;
}

static void test_iter_range_exact(void **state)
{
    struct fixture *f = *state;
    struct key lo, hi;
    uint32_t ids[64];
    int n;

    put_range_keys(f->db);

    /* [5, 12): 5..11, both ends exact. */
    key_init(&lo, 0x41);
    key_u32(&lo, 5);
    key_init(&hi, 0x41);
    key_u32(&hi, 12);
    n = scan(f->db, &lo, &hi, ids, 64);
    assert_int_equal(n, 7);
    for (int i = 0; i < n; i++)
        assert_int_equal(ids[i], 5 + i);

    /* Whole prefix through key_successor: 0..19, nothing of 0x40 or 0x42. */
    key_init(&lo, 0x41);
    hi = lo;
    assert_true(key_successor(&hi));
    n = scan(f->db, &lo, &hi, ids, 64);
    assert_int_equal(n, 20);
    for (int i = 0; i < n; i++)
        assert_int_equal(ids[i], i);

    /* Empty ranges: lo == hi, and lo past the data. */
    key_init(&lo, 0x41);
    key_u32(&lo, 7);
    n = scan(f->db, &lo, &lo, ids, 64);
    assert_int_equal(n, 0);
    key_init(&lo, 0x41);
    key_u32(&lo, 20);
    key_init(&hi, 0x41);
    key_u32(&hi, 30);
    assert_int_equal(scan(f->db, &lo, &hi, ids, 64), 0);

    /* No upper bound: 15..19 then the 0x42 key. */
    key_init(&lo, 0x41);
    key_u32(&lo, 15);
    n = scan(f->db, &lo, NULL, ids, 64);
    assert_int_equal(n, 6);
    assert_int_equal(ids[0], 15);
    assert_int_equal(ids[4], 19);
    assert_int_equal(ids[5], UINT32_MAX);

    /* No lower bound: from the first key of the family. */
    key_init(&hi, 0x41);
    key_u32(&hi, 2);
    n = scan(f->db, NULL, &hi, ids, 64);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], UINT32_MAX); /* 0x40 0xff */
    assert_int_equal(ids[1], 0);
    assert_int_equal(ids[2], 1);
}

/* The upper bound is copied: the caller's buffer may change or die right after open. */
static void test_iter_bound_copied(void **state)
{
    struct fixture *f = *state;
    struct key lo, *hi = malloc(sizeof(*hi));
    struct db_iter *it;
    int n = 0;

    assert_non_null(hi);
    put_range_keys(f->db);
    key_init(&lo, 0x41);
    key_u32(&lo, 3);
    key_init(hi, 0x41);
    key_u32(hi, 6);
    it = db_iter_open(f->db, DB_CF_META, lo.buf, lo.len, hi->buf, hi->len);
    assert_non_null(it);
    memset(hi, 0xff, sizeof(*hi));
    free(hi);
    for (; db_iter_valid(it); db_iter_next(it))
        n++;
    assert_int_equal(n, 3);
    assert_int_equal(db_iter_close(it), 0);
}

/* The iterator sees the database as it was when opened. */
static void test_iter_consistent_view(void **state)
{
    struct fixture *f = *state;
    struct db_iter *it;
    int n = 0;

    put_range_keys(f->db);
    it = db_iter_open(f->db, DB_CF_META, "\x41", 1, "\x42", 1);
    assert_non_null(it);
    assert_int_equal(db_put(f->db, DB_CF_META, "\x41\x00\x00\x00\x63", 5, "late", 4, false), 0);
    assert_int_equal(db_delete(f->db, DB_CF_META, "\x41\x00\x00\x00\x00", 5, false), 0);
    for (; db_iter_valid(it); db_iter_next(it))
        n++;
    assert_int_equal(n, 20);
    assert_int_equal(db_iter_close(it), 0);
}

static void test_reopen_keeps_data(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(db_put(f->db, DB_CF_META, "a", 1, "1", 1, false), 0);
    assert_int_equal(db_put(f->db, DB_CF_BODIES, "b", 1, "2", 1, true), 0);
    assert_int_equal(db_put(f->db, DB_CF_LOCAL, "c", 1, "3", 1, true), 0);
    reopen(f);
    check_value(f->db, DB_CF_META, "a", "1");
    check_value(f->db, DB_CF_BODIES, "b", "2");
    check_value(f->db, DB_CF_LOCAL, "c", "3");
    /* Flushed to SST files, then reopened again. */
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    char *err = NULL;
    rocksdb_flushoptions_set_wait(fo, 1);
    for (int cf = 0; cf < DB_CF_COUNT; cf++) {
        rocksdb_flush_cf(db_rocks(f->db), fo, db_cf(f->db, cf), &err);
        assert_null(err);
    }
    rocksdb_flushoptions_destroy(fo);
    reopen(f);
    check_value(f->db, DB_CF_META, "a", "1");
    check_value(f->db, DB_CF_BODIES, "b", "2");
    check_value(f->db, DB_CF_LOCAL, "c", "3");
}

static void test_checkpoint(void **state)
{
    struct fixture *f = *state;
    char cpdir[TMPDIR_MAX], err[DB_ERR_MAX];
    struct db *cp = NULL;

    assert_int_equal(db_put(f->db, DB_CF_META, "a", 1, "before", 6, false), 0);
    assert_int_equal(db_put(f->db, DB_CF_BODIES, "b", 1, "body", 4, true), 0);
    assert_int_equal(tmpdir_join(cpdir, f->tmp, "cp"), 0);
    assert_int_equal(db_checkpoint(f->db, cpdir, err), 0);
    /* A write after the checkpoint does not reach it. */
    assert_int_equal(db_put(f->db, DB_CF_META, "a", 1, "after", 5, false), 0);

    assert_int_equal(db_open(cpdir, &cp, err), 0);
    check_value(cp, DB_CF_META, "a", "before");
    check_value(cp, DB_CF_BODIES, "b", "body");
    db_close(cp);
    check_value(f->db, DB_CF_META, "a", "after");

    /* The target must not exist. */
    err[0] = '\0';
    assert_int_equal(db_checkpoint(f->db, cpdir, err), -1);
    assert_true(strlen(err) > 0);
}

static void test_open_errors(void **state)
{
    struct fixture *f = *state;
    char path[TMPDIR_MAX], err[DB_ERR_MAX];
    struct db *db = (struct db *) 1;

    /* A second open of the same database fails on RocksDB's lock. */
    err[0] = '\0';
    assert_int_equal(db_open(f->dir, &db, err), -1);
    assert_null(db);
    assert_true(strlen(err) > 0);

    /* A parent that does not exist. */
    assert_int_equal(tmpdir_join(path, f->tmp, "missing/db"), 0);
    assert_int_equal(db_open(path, &db, err), -1);
    assert_null(db);
}

static void test_close_null(void **state)
{
    db_close(NULL);
    assert_int_equal(db_iter_close(NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_creates_private_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_get_delete_each_cf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_u64, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_across_cfs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iter_range_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iter_bound_copied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iter_consistent_view, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_keeps_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
        cmocka_unit_test(test_close_null),
    };
    log_set_level(LOG_FATAL); /* the error paths tested here log; keep the output clean */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
