/*
 * storage/body_store.c
 * Message bodies by SHA-256 in the bodies column family (see body_store.h), and the
 * streaming writer that hashes a body while SMTP DATA or an IMAP APPEND literal arrives.
 *
 * Key: BODY_KEY_PREFIX ('b') followed by the 32-byte hash. Values at least DB_BLOB_MIN bytes
 * go to blob files (db.c). Every write is fsync'd: nothing else protects a body.
 * SECURITY: the writer receives bytes from any SMTP client; its buffer is capped at the
 * size the caller allows and grows geometrically, so memory follows what really arrived.
 */
#include "body_store.h"

#include <pthread.h>
#include <time.h>

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"
#include "log.h"

#define BODY_KEY_PREFIX 0x62 /* 'b': the only key family in the bodies CF */
#define BODY_KEY_LEN    (1 + BODY_HASH_LEN)
#define BODY_BUF_MIN    (16 * 1024) /* first allocation; most mail is a few KiB */

struct body_writer {
    EVP_MD_CTX *md; /* running SHA-256 of buf[0..len) */
    char *buf;
    size_t len;
    size_t cap;
    size_t max;   /* cap on len, from body_writer_new() */
    bool too_big; /* an append passed MAX: appends ignored, finish fails */
    bool failed;  /* out of memory or a hashing error: finish fails */
};

static void body_key(const uint8_t hash[BODY_HASH_LEN], uint8_t key[BODY_KEY_LEN])
{
    key[0] = BODY_KEY_PREFIX;
    memcpy(key + 1, hash, BODY_HASH_LEN);
}

void body_hash_hex(const uint8_t hash[BODY_HASH_LEN], char out[BODY_HEX_LEN])
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < BODY_HASH_LEN; i++) {
        out[2 * i] = hex[hash[i] >> 4];
        out[2 * i + 1] = hex[hash[i] & 0xf];
    }
    out[2 * BODY_HASH_LEN] = '\0';
}

int body_hash_parse(const char *hex, uint8_t hash[BODY_HASH_LEN])
{
    uint8_t tmp[BODY_HASH_LEN];

    if (hex == NULL)
        return -1;
    /* The NUL check comes first in each step, so a short string is never read past. */
    for (size_t i = 0; i < BODY_HASH_LEN; i++) {
        int hi, lo;
        if (hex[2 * i] == '\0' || hex[2 * i + 1] == '\0')
            return -1;
        hi = hex_digit((unsigned char) hex[2 * i]);
        lo = hex_digit((unsigned char) hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        tmp[i] = (uint8_t) (hi << 4 | lo);
    }
    if (hex[2 * BODY_HASH_LEN] != '\0')
        return -1; /* exactly 64 digits: a longer string is not a hash */
    memcpy(hash, tmp, BODY_HASH_LEN);
    return 0;
}

/*
 * The record of recent stores, for body_delete_if_idle(): a ring of (first 8 bytes of the
 * hash, time) written BEFORE each store, under MU. A delete checks the ring under MU too,
 * so a store either is recorded before the check (the delete keeps the body) or writes
 * after the delete (the body is there again). Process-wide.
 */
#define STORES_RING 262144 /* 4 MiB; at 2,000 stores/s it reaches back 2 minutes */
static struct {
    pthread_mutex_t mu;
    uint64_t prefix[STORES_RING];
    uint64_t at_ms[STORES_RING];
    size_t next;
    bool wrapped;
} stores = {.mu = PTHREAD_MUTEX_INITIALIZER};

uint64_t body_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static uint64_t hash_prefix(const uint8_t hash[BODY_HASH_LEN])
{
    uint64_t p = 0;
    for (int i = 0; i < 8; i++)
        p = p << 8 | hash[i];
    return p;
}

/* body_store() records, then writes DATA under HASH with fsync. */
static int body_store(struct db *db, const uint8_t hash[BODY_HASH_LEN], const void *data,
                      size_t len)
{
    uint8_t key[BODY_KEY_LEN];

    pthread_mutex_lock(&stores.mu);
    stores.prefix[stores.next] = hash_prefix(hash);
    stores.at_ms[stores.next] = body_clock_ms();
    if (++stores.next == STORES_RING) {
        stores.next = 0;
        stores.wrapped = true;
    }
    pthread_mutex_unlock(&stores.mu);
    body_key(hash, key);
    return db_put(db, DB_CF_BODIES, key, sizeof(key), data, len, true);
}

/*
 * Storing the same bytes again rewrites the same key with the same value: the result is one
 * copy, and the older blob becomes garbage for blob GC. Checking body_has() first would not
 * be cheaper: a point read of a blob value reads the blob.
 */
int body_put(struct db *db, const void *data, size_t len, uint8_t hash_out[BODY_HASH_LEN])
{
    uint8_t hash[BODY_HASH_LEN];

    if (EVP_Digest(data, len, hash, NULL, EVP_sha256(), NULL) != 1) {
        log_error("body.put", "err=sha256 size=%zu", len);
        return -1;
    }
    if (body_store(db, hash, data, len) < 0)
        return -1;
    memcpy(hash_out, hash, BODY_HASH_LEN);
    return 0;
}

int body_get(struct db *db, const uint8_t hash[BODY_HASH_LEN], char **data, size_t *len)
{
    uint8_t key[BODY_KEY_LEN];

    body_key(hash, key);
    return db_get(db, DB_CF_BODIES, key, sizeof(key), data, len);
}

int body_has(struct db *db, const uint8_t hash[BODY_HASH_LEN])
{
    char *data;
    size_t len;
    int rc = body_get(db, hash, &data, &len);

    if (rc == 1)
        free(data);
    return rc;
}

int body_delete(struct db *db, const uint8_t hash[BODY_HASH_LEN])
{
    uint8_t key[BODY_KEY_LEN];

    body_key(hash, key);
    return db_delete(db, DB_CF_BODIES, key, sizeof(key), true);
}

int body_delete_if_idle(struct db *db, const uint8_t hash[BODY_HASH_LEN], uint64_t since_ms)
{
    uint8_t key[BODY_KEY_LEN];
    uint64_t p = hash_prefix(hash);
    int rv = 1;

    body_key(hash, key);
    pthread_mutex_lock(&stores.mu);
    /* the oldest record must be older than SINCE_MS, or a store may have been forgotten */
    size_t oldest = stores.wrapped ? stores.next : 0;
    if (stores.wrapped && stores.at_ms[oldest] >= since_ms)
        rv = 0;
    size_t n = stores.wrapped ? STORES_RING : stores.next;
    for (size_t i = 0; rv == 1 && i < n; i++)
        if (stores.prefix[i] == p && stores.at_ms[i] >= since_ms)
            rv = 0;
    if (rv == 1 && db_delete(db, DB_CF_BODIES, key, sizeof(key), true) != 0)
        rv = -1;
    pthread_mutex_unlock(&stores.mu);
    return rv;
}

struct body_writer *body_writer_new(size_t max)
{
    struct body_writer *w = calloc(1, sizeof(*w));

    if (w == NULL)
        return NULL;
    w->max = max;
    w->md = EVP_MD_CTX_new();
    if (w->md == NULL || EVP_DigestInit_ex(w->md, EVP_sha256(), NULL) != 1) {
        body_writer_free(w);
        return NULL;
    }
    return w;
}

/* body_writer_grow() makes room for NEED bytes in total: the capacity doubles from
 * BODY_BUF_MIN and is clamped to MAX (NEED <= MAX is checked by the caller). */
static int body_writer_grow(struct body_writer *w, size_t need)
{
    size_t cap = w->cap > 0 ? w->cap : BODY_BUF_MIN;
    char *buf;

    while (cap < need && cap <= w->max / 2)
        cap *= 2;
    if (cap < need || cap > w->max)
        cap = w->max; /* the last step lands on the cap exactly */
    buf = realloc(w->buf, cap);
    if (buf == NULL)
        return -1;
    w->buf = buf;
    w->cap = cap;
    return 0;
}

int body_writer_append(struct body_writer *w, const void *data, size_t len)
{
    if (w->too_big || w->failed)
        return -1;
    if (len == 0)
        return 0;
    if (len > w->max - w->len) {
        w->too_big = true;
        return -1;
    }
    if (w->len + len > w->cap && body_writer_grow(w, w->len + len) < 0) {
        log_error("body.writer", "err=nomem size=%zu", w->len + len);
        w->failed = true;
        return -1;
    }
    if (EVP_DigestUpdate(w->md, data, len) != 1) {
        log_error("body.writer", "err=sha256 size=%zu", w->len);
        w->failed = true;
        return -1;
    }
    memcpy(w->buf + w->len, data, len);
    w->len += len;
    return 0;
}

size_t body_writer_size(const struct body_writer *w)
{
    return w->len;
}

bool body_writer_too_big(const struct body_writer *w)
{
    return w->too_big;
}

int body_writer_finish(struct body_writer *w, struct db *db, uint8_t hash_out[BODY_HASH_LEN])
{
    uint8_t hash[BODY_HASH_LEN];
    EVP_MD_CTX *fin;
    int ok;

    if (w->too_big || w->failed)
        return -1;
    /* Finalize a copy, so the writer's own context can still take appends afterwards. */
    fin = EVP_MD_CTX_new();
    ok = fin != NULL && EVP_MD_CTX_copy_ex(fin, w->md) == 1 &&
         EVP_DigestFinal_ex(fin, hash, NULL) == 1;
    EVP_MD_CTX_free(fin);
    if (!ok) {
        log_error("body.writer", "err=sha256 size=%zu", w->len);
        return -1;
    }
    if (body_store(db, hash, w->buf, w->len) < 0)
        return -1;
    memcpy(hash_out, hash, BODY_HASH_LEN);
    return 0;
}

const char *body_writer_data(const struct body_writer *w, size_t *len)
{
    *len = w->len;
    return w->buf;
}

void body_writer_free(struct body_writer *w)
{
    if (w == NULL)
        return;
    EVP_MD_CTX_free(w->md);
    free(w->buf);
    free(w);
}
