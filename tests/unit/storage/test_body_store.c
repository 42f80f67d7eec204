/*
 * tests/unit/storage/test_body_store.c
 * Unit tests of the body store (storage/body_store.c) on a real database: put/get/has/
 * delete, SHA-256 test vectors (FIPS 180-2), the streaming writer fed one byte at a time,
 * the size cap, deduplication, a multi-MiB body through a blob file, and hex parsing.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "body_store.h"
#include "keys.h"
#include "log.h"
#include "tmpdir.h"

#define LARGE_BODY (3 * 1024 * 1024) /* well above DB_BLOB_MIN */

struct fixture {
    char tmp[TMPDIR_MAX];
    char dir[TMPDIR_MAX];
    struct db *db;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[DB_ERR_MAX];

    if (f == NULL || tmpdir_make(f->tmp, "body") < 0 || tmpdir_join(f->dir, f->tmp, "db") < 0)
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

static void expect_hex(const uint8_t hash[BODY_HASH_LEN], const char *want)
{
    char hex[BODY_HEX_LEN];

    body_hash_hex(hash, hex);
    assert_string_equal(hex, want);
}

/* count_bodies() counts every key in the bodies family and checks its shape. */
static int count_bodies(struct db *db)
{
    struct db_iter *it = db_iter_open(db, DB_CF_BODIES, NULL, 0, NULL, 0);
    int n = 0;

    assert_non_null(it);
    for (; db_iter_valid(it); db_iter_next(it)) {
        size_t klen;
        const char *k = db_iter_key(it, &klen);
        assert_int_equal(klen, 1 + BODY_HASH_LEN);
        assert_int_equal((uint8_t) k[0], 0x62);
        n++;
    }
    assert_int_equal(db_iter_close(it), 0);
    return n;
}

/* FIPS 180-2 examples, plus the empty string. */
static const struct {
    const char *in;
    const char *hex;
} vectors[] = {
    {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
    {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
    {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
     "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
};
#define MILLION_A_HEX "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"

static void test_vectors_put_get(void **state)
{
    struct fixture *f = *state;

    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        uint8_t hash[BODY_HASH_LEN];
        char *data = NULL;
        size_t len = 99;

        assert_int_equal(body_put(f->db, vectors[i].in, strlen(vectors[i].in), hash), 0);
        expect_hex(hash, vectors[i].hex);
        assert_int_equal(body_has(f->db, hash), 1);
        assert_int_equal(body_get(f->db, hash, &data, &len), 1);
        assert_int_equal(len, strlen(vectors[i].in));
        assert_memory_equal(data, vectors[i].in, len);
        free(data);
    }
}

/* The stored key is 'b' followed by the raw hash, readable with plain db_get(). */
static void test_key_layout(void **state)
{
    struct fixture *f = *state;
    uint8_t hash[BODY_HASH_LEN];
    struct key k;
    char *v;
    size_t n;

    assert_int_equal(body_put(f->db, "abc", 3, hash), 0);
    key_init(&k, 0x62);
    key_bytes(&k, hash, BODY_HASH_LEN);
    assert_int_equal(db_get(f->db, DB_CF_BODIES, k.buf, k.len, &v, &n), 1);
    assert_int_equal(n, 3);
    assert_memory_equal(v, "abc", 3);
    free(v);
    /* Nothing leaked into the other families. */
    assert_int_equal(db_get(f->db, DB_CF_META, k.buf, k.len, &v, &n), 0);
}

static void test_has_delete(void **state)
{
    struct fixture *f = *state;
    uint8_t hash[BODY_HASH_LEN], other[BODY_HASH_LEN];
    char *data = NULL;
    size_t len;

    assert_int_equal(body_put(f->db, "hello\r\n", 7, hash), 0);
    assert_int_equal(body_has(f->db, hash), 1);
    memcpy(other, hash, sizeof(other));
    other[BODY_HASH_LEN - 1] ^= 1;
    assert_int_equal(body_has(f->db, other), 0);
    assert_int_equal(body_get(f->db, other, &data, &len), 0);
    assert_null(data);

    assert_int_equal(body_delete(f->db, hash), 0);
    assert_int_equal(body_has(f->db, hash), 0);
    assert_int_equal(body_get(f->db, hash, &data, &len), 0);
    /* Deleting again (absent) is fine. */
    assert_int_equal(body_delete(f->db, hash), 0);
    assert_int_equal(count_bodies(f->db), 0);
}

/* The GC's delete keeps a body stored at or after the time its decision was based on
 * (an identical delivery on its way to a reference), and deletes it otherwise. */
static void test_delete_if_idle(void **state)
{
    struct fixture *f = *state;
    uint8_t hash[BODY_HASH_LEN], other[BODY_HASH_LEN];
    struct timespec pause = {0, 3 * 1000 * 1000};

    uint64_t before = body_clock_ms();
    assert_int_equal(body_put(f->db, "idle body\r\n", 11, hash), 0);
    assert_int_equal(body_delete_if_idle(f->db, hash, before), 0); /* stored since: kept */
    assert_int_equal(body_has(f->db, hash), 1);
    nanosleep(&pause, NULL);
    uint64_t after = body_clock_ms();
    assert_true(after > before);
    /* a store of other bytes since does not keep this one */
    assert_int_equal(body_put(f->db, "other body\r\n", 12, other), 0);
    nanosleep(&pause, NULL);
    assert_int_equal(body_delete_if_idle(f->db, hash, after), 1);
    assert_int_equal(body_has(f->db, hash), 0);
    /* the same bytes stored again after the decision: kept again */
    assert_int_equal(body_put(f->db, "idle body\r\n", 11, hash), 0);
    assert_int_equal(body_delete_if_idle(f->db, hash, after), 0);
    assert_int_equal(body_has(f->db, hash), 1);
    assert_int_equal(body_delete_if_idle(f->db, other, after), 0);
    assert_int_equal(body_has(f->db, other), 1);
}

static void test_same_body_one_key(void **state)
{
    struct fixture *f = *state;
    uint8_t h1[BODY_HASH_LEN], h2[BODY_HASH_LEN], h3[BODY_HASH_LEN];
    struct body_writer *w;

    assert_int_equal(body_put(f->db, "same body", 9, h1), 0);
    assert_int_equal(body_put(f->db, "same body", 9, h2), 0);
    w = body_writer_new(100);
    assert_non_null(w);
    assert_int_equal(body_writer_append(w, "same ", 5), 0);
    assert_int_equal(body_writer_append(w, "body", 4), 0);
    assert_int_equal(body_writer_finish(w, f->db, h3), 0);
    body_writer_free(w);
    assert_memory_equal(h1, h2, BODY_HASH_LEN);
    assert_memory_equal(h1, h3, BODY_HASH_LEN);
    assert_int_equal(count_bodies(f->db), 1);

    assert_int_equal(body_put(f->db, "other body", 10, h2), 0);
    assert_int_equal(count_bodies(f->db), 2);
}

/* One million 'a' fed one byte at a time: the FIPS vector, and the same hash as one put. */
static void test_writer_byte_by_byte(void **state)
{
    struct fixture *f = *state;
    const size_t n = 1000000;
    char *body = malloc(n);
    uint8_t hw[BODY_HASH_LEN], hp[BODY_HASH_LEN];
    struct body_writer *w = body_writer_new(n);
    const char *p;
    size_t len;
    char *back;

    assert_non_null(body);
    assert_non_null(w);
    memset(body, 'a', n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(body_writer_append(w, body + i, 1), 0);
    assert_int_equal(body_writer_size(w), n);
    assert_false(body_writer_too_big(w));
    p = body_writer_data(w, &len);
    assert_int_equal(len, n);
    assert_memory_equal(p, body, n);

    assert_int_equal(body_writer_finish(w, f->db, hw), 0);
    expect_hex(hw, MILLION_A_HEX);
    /* The writer keeps its bytes after finish. */
    p = body_writer_data(w, &len);
    assert_int_equal(len, n);
    body_writer_free(w);

    assert_int_equal(body_put(f->db, body, n, hp), 0);
    assert_memory_equal(hw, hp, BODY_HASH_LEN);
    assert_int_equal(body_get(f->db, hw, &back, &len), 1);
    assert_int_equal(len, n);
    assert_memory_equal(back, body, n);
    free(back);
    free(body);
    assert_int_equal(count_bodies(f->db), 1);
}

/* Chunks of varying sizes give the same hash as a single put. */
static void test_writer_chunks(void **state)
{
    struct fixture *f = *state;
    uint8_t body[70000], hw[BODY_HASH_LEN], hp[BODY_HASH_LEN];
    struct body_writer *w = body_writer_new(sizeof(body));
    size_t off = 0, step = 1;

    assert_non_null(w);
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (uint8_t) (i * 131 + (i >> 8));
    while (off < sizeof(body)) {
        size_t n = step < sizeof(body) - off ? step : sizeof(body) - off;
        assert_int_equal(body_writer_append(w, body + off, n), 0);
        off += n;
        step = step * 3 + 1;
    }
    assert_int_equal(body_writer_append(w, NULL, 0), 0); /* an empty append is a no-op */
    assert_int_equal(body_writer_finish(w, f->db, hw), 0);
    /* Finish does not consume the running hash: finishing twice gives the same answer. */
    assert_int_equal(body_writer_finish(w, f->db, hp), 0);
    assert_memory_equal(hw, hp, BODY_HASH_LEN);
    body_writer_free(w);
    assert_int_equal(body_put(f->db, body, sizeof(body), hp), 0);
    assert_memory_equal(hw, hp, BODY_HASH_LEN);
}

static void test_writer_empty(void **state)
{
    struct fixture *f = *state;
    uint8_t hash[BODY_HASH_LEN];
    struct body_writer *w = body_writer_new(10);
    char *data;
    size_t len;

    assert_non_null(w);
    assert_int_equal(body_writer_finish(w, f->db, hash), 0);
    expect_hex(hash, vectors[1].hex);
    body_writer_free(w);
    assert_int_equal(body_get(f->db, hash, &data, &len), 1);
    assert_int_equal(len, 0);
    free(data);
}

static void test_writer_over_cap(void **state)
{
    struct fixture *f = *state;
    uint8_t hash[BODY_HASH_LEN];
    struct body_writer *w = body_writer_new(10);
    const char *p;
    size_t len;

    assert_non_null(w);
    memset(hash, 0x77, sizeof(hash));
    assert_int_equal(body_writer_append(w, "123456", 6), 0);
    assert_int_equal(body_writer_append(w, "7890", 4), 0); /* exactly at the cap */
    assert_false(body_writer_too_big(w));
    assert_int_equal(body_writer_append(w, "x", 1), -1);
    assert_true(body_writer_too_big(w));
    /* Later appends are ignored, even ones that would fit nothing. */
    assert_int_equal(body_writer_append(w, "y", 1), -1);
    assert_int_equal(body_writer_size(w), 10);
    p = body_writer_data(w, &len);
    assert_int_equal(len, 10);
    assert_memory_equal(p, "1234567890", 10);
    assert_int_equal(body_writer_finish(w, f->db, hash), -1);
    for (size_t i = 0; i < sizeof(hash); i++)
        assert_int_equal(hash[i], 0x77);
    body_writer_free(w);
    assert_int_equal(count_bodies(f->db), 0);

    /* One append bigger than the whole cap. */
    w = body_writer_new(4);
    assert_non_null(w);
    assert_int_equal(body_writer_append(w, "12345", 5), -1);
    assert_true(body_writer_too_big(w));
    assert_int_equal(body_writer_size(w), 0);
    assert_int_equal(body_writer_finish(w, f->db, hash), -1);
    body_writer_free(w);

    /* A zero cap refuses any byte. */
    w = body_writer_new(0);
    assert_non_null(w);
    assert_int_equal(body_writer_append(w, "1", 1), -1);
    assert_true(body_writer_too_big(w));
    body_writer_free(w);
    body_writer_free(NULL);
    assert_int_equal(count_bodies(f->db), 0);
}

/* count_blob_files() counts *.blob files in DIR. */
static int count_blob_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l > 5 && strcmp(e->d_name + l - 5, ".blob") == 0)
            n++;
    }
    closedir(d);
    return n;
}

static void test_large_body_blob(void **state)
{
    struct fixture *f = *state;
    char *body = malloc(LARGE_BODY), *back = NULL;
    uint8_t hash[BODY_HASH_LEN], small[BODY_HASH_LEN];
    uint64_t x = 88172645463325252ULL;
    size_t len = 0;

    assert_non_null(body);
    for (size_t i = 0; i < LARGE_BODY; i++) { /* xorshift bytes: not compressible */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body[i] = (char) x;
    }
    assert_int_equal(body_put(f->db, body, LARGE_BODY, hash), 0);
    assert_int_equal(body_put(f->db, "small", 5, small), 0);

    /* Close and reopen (the WAL is replayed), then force a flush: the large body must
     * land in a blob file, the small one stays inline. */
    reopen(f);
    assert_int_equal(body_get(f->db, hash, &back, &len), 1);
    assert_int_equal(len, LARGE_BODY);
    assert_memory_equal(back, body, LARGE_BODY);
    free(back);

    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    char *err = NULL;
    rocksdb_flushoptions_set_wait(fo, 1);
    rocksdb_flush_cf(db_rocks(f->db), fo, db_cf(f->db, DB_CF_BODIES), &err);
    assert_null(err);
    rocksdb_flushoptions_destroy(fo);
    assert_true(count_blob_files(f->dir) >= 1);

    reopen(f);
    back = NULL;
    assert_int_equal(body_get(f->db, hash, &back, &len), 1);
    assert_int_equal(len, LARGE_BODY);
    assert_memory_equal(back, body, LARGE_BODY);
    free(back);
    assert_int_equal(body_get(f->db, small, &back, &len), 1);
    assert_int_equal(len, 5);
    free(back);
    assert_int_equal(body_has(f->db, hash), 1);
    free(body);
}

static void test_hex(void **state)
{
    uint8_t hash[BODY_HASH_LEN], back[BODY_HASH_LEN];
    char hex[BODY_HEX_LEN], upper[BODY_HEX_LEN];

    for (size_t i = 0; i < BODY_HASH_LEN; i++)
        hash[i] = (uint8_t) (i * 37 + 5);
    body_hash_hex(hash, hex);
    assert_int_equal(strlen(hex), 64);
    assert_int_equal(body_hash_parse(hex, back), 0);
    assert_memory_equal(hash, back, BODY_HASH_LEN);

    /* Known value, and upper case parses to the same bytes. */
    assert_int_equal(body_hash_parse(vectors[0].hex, back), 0);
    assert_int_equal(back[0], 0xba);
    assert_int_equal(back[31], 0xad);
    for (size_t i = 0; i < BODY_HEX_LEN; i++)
        upper[i] = vectors[0].hex[i] >= 'a' ? (char) (vectors[0].hex[i] - 32) : vectors[0].hex[i];
    assert_int_equal(body_hash_parse(upper, hash), 0);
    assert_memory_equal(hash, back, BODY_HASH_LEN);
    expect_hex(hash, vectors[0].hex);

    /* Bad input fails and leaves the output untouched. */
    static const char *const bad[] = {
        "",
        "ba",
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a",   /* 63 */
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad0", /* 65 */
        "ga7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",  /* g */
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a ",  /* space */
        "ba7816bf8f01cfea414140de5dae2223 00361a396177a9cb410ff61f20015ad0",
        "-a7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "0xba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(back, 0x5c, sizeof(back));
        assert_int_equal(body_hash_parse(bad[i], back), -1);
        for (size_t j = 0; j < BODY_HASH_LEN; j++)
            assert_int_equal(back[j], 0x5c);
    }
    assert_int_equal(body_hash_parse(NULL, back), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_vectors_put_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_has_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_body_one_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_if_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_byte_by_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_over_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_body_blob, setup, teardown),
        cmocka_unit_test(test_hex),
    };
    log_set_level(LOG_FATAL);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
