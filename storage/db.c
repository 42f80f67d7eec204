/*
 * storage/db.c
 * The node's RocksDB (see db.h): open with the families default (RocksDB wants it; unused),
 * meta, bodies and local; point reads and writes; range iterators; checkpoints. Everything
 * above storage/ reaches RocksDB through here or through the raw handles handed out here.
 *
 * Ownership (DEPS.md section 2): the filter policy belongs to the table options once set;
 * the block cache is copied into every family's table factory by shared_ptr but stays ours
 * and is destroyed after rocksdb_close(); column family handles are destroyed before it.
 */
#include "db.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "keys.h"
#include "log.h"

#define DB_MAX_OPEN_FILES 512               /* leaves room under a 1024 fd limit for sockets */
#define DB_KEEP_LOG_FILES 5                 /* RocksDB's own LOG files kept in the database dir */
#define DB_BYTES_PER_SYNC (1024 * 1024)     /* smooth out fsync of big SST/blob writes */
#define DB_BLOOM_BITS     10                /* per key: about 1% false positives on point reads */
#define DB_BG_THREADS     2                 /* flush + compaction; a mail node is I/O bound */
#define DB_BLOCK_SIZE     (16 * 1024)       /* 4x the default: a smaller index for the same cache */
#define DB_FORMAT_VERSION 5                 /* faster full filters, supported since RocksDB 6.6 */
#define DB_NFAMILIES      (DB_CF_COUNT + 1) /* "default" plus ours */
#define DB_FAMILY(cf)     ((int) (cf) + 1)  /* index of CF in the arrays below */

/* Family names in open order; index 0 is "default", then enum db_cf order. */
static const char *const db_family_names[DB_NFAMILIES] = {"default", "meta", "bodies", "local"};

struct db {
    rocksdb_t *rocks;
    rocksdb_column_family_handle_t *cf[DB_NFAMILIES]; /* [0] = "default", opened, unused */
    rocksdb_options_t *opts[DB_NFAMILIES];            /* [0] also holds the DB options */
    rocksdb_cache_t *cache;                           /* shared block cache, ours */
    rocksdb_writeoptions_t *wo_sync;                  /* WAL + fsync per write */
    rocksdb_writeoptions_t *wo_nosync;                /* WAL, no fsync (Raft is the log) */
    rocksdb_readoptions_t *ro;                        /* defaults, shared by point reads */
};

struct db_iter {
    rocksdb_iterator_t *it;
    rocksdb_readoptions_t *ro; /* holds a pointer to HI: destroyed after IT */
    char *hi;                  /* our copy of the upper bound, or NULL */
    enum db_cf cf;
};

static void db_set_err(char err[DB_ERR_MAX], const char *what, const char *msg)
{
    if (err != NULL)
        snprintf(err, DB_ERR_MAX, "%s: %s", what, msg ? msg : "unknown error");
}

static const char *db_cf_name(enum db_cf cf)
{
    return db_family_names[DB_FAMILY(cf)];
}

/* db_log_err() logs a RocksDB error message and frees it. */
static void db_log_err(const char *event, enum db_cf cf, char *msg)
{
    char q[LOG_Q_MAX];

    log_error(event, "cf=%s err=%s", db_cf_name(cf), log_q(q, msg));
    rocksdb_free(msg);
}

/*
 * db_make_options() builds the options of every family into DB->opts. The base (also used
 * for "default" and for the DB-wide settings) carries the table format, the shared cache and
 * the compression; the other families are copies of it, and bodies adds BlobDB.
 */
static int db_make_options(struct db *db)
{
    rocksdb_options_t *base;
    rocksdb_block_based_table_options_t *table;

    db->cache = rocksdb_cache_create_lru(DB_CACHE_SIZE);
    base = db->opts[0] = rocksdb_options_create();
    table = rocksdb_block_based_options_create();
    if (db->cache == NULL || base == NULL || table == NULL) {
        if (table != NULL)
            rocksdb_block_based_options_destroy(table);
        return -1;
    }

    rocksdb_options_set_create_if_missing(base, 1);
    rocksdb_options_set_create_missing_column_families(base, 1);
    rocksdb_options_increase_parallelism(base, DB_BG_THREADS);
    rocksdb_options_set_max_open_files(base, DB_MAX_OPEN_FILES);
    rocksdb_options_set_keep_log_file_num(base, DB_KEEP_LOG_FILES);
    rocksdb_options_set_bytes_per_sync(base, DB_BYTES_PER_SYNC);
    rocksdb_options_set_level_compaction_dynamic_level_bytes(base, 1);
    rocksdb_options_set_compression(base, rocksdb_lz4_compression);
    rocksdb_options_set_bottommost_compression(base, rocksdb_zstd_compression);

    rocksdb_block_based_options_set_block_cache(table, db->cache); /* copies, cache stays ours */
    /* The table options own the filter policy from here: never destroy it ourselves. */
    rocksdb_block_based_options_set_filter_policy(
        table, rocksdb_filterpolicy_create_bloom_full(DB_BLOOM_BITS));
    rocksdb_block_based_options_set_block_size(table, DB_BLOCK_SIZE);
    rocksdb_block_based_options_set_format_version(table, DB_FORMAT_VERSION);
    rocksdb_block_based_options_set_cache_index_and_filter_blocks(table, 1);
    rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(table, 1);
    rocksdb_options_set_block_based_table_factory(base, table); /* copies TABLE */
    rocksdb_block_based_options_destroy(table);

    for (int i = 1; i < DB_NFAMILIES; i++) {
        db->opts[i] = rocksdb_options_create_copy(base);
        if (db->opts[i] == NULL)
            return -1;
    }

    /* bodies: values of DB_BLOB_MIN bytes and more live in blob files, so compaction of
     * the keys never rewrites message bodies; GC reclaims blobs of deleted bodies. */
    rocksdb_options_t *bodies = db->opts[DB_FAMILY(DB_CF_BODIES)];
    rocksdb_options_set_enable_blob_files(bodies, 1);
    rocksdb_options_set_min_blob_size(bodies, DB_BLOB_MIN);
    rocksdb_options_set_blob_compression_type(bodies, rocksdb_zstd_compression);
    rocksdb_options_set_enable_blob_gc(bodies, 1);
    return 0;
}

/* db_make_io_options() creates the write and read options shared by every call. */
static int db_make_io_options(struct db *db)
{
    db->wo_sync = rocksdb_writeoptions_create();
    db->wo_nosync = rocksdb_writeoptions_create();
    db->ro = rocksdb_readoptions_create();
    if (db->wo_sync == NULL || db->wo_nosync == NULL || db->ro == NULL)
        return -1;
    rocksdb_writeoptions_set_sync(db->wo_sync, 1);
    rocksdb_writeoptions_set_sync(db->wo_nosync, 0);
    rocksdb_writeoptions_disable_WAL(db->wo_sync, 0);
    rocksdb_writeoptions_disable_WAL(db->wo_nosync, 0);
    return 0;
}

int db_open(const char *dir, struct db **out, char err[DB_ERR_MAX])
{
    struct db *db;
    char *rerr = NULL;

    *out = NULL;
    db = calloc(1, sizeof(*db));
    if (db == NULL) {
        db_set_err(err, "db_open", "out of memory");
        return -1;
    }
    if (db_make_options(db) < 0 || db_make_io_options(db) < 0) {
        db_set_err(err, "db_open", "cannot create RocksDB options");
        goto err;
    }
    /* Mail is private: make the directory 0700 ourselves (RocksDB would use 0755). */
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        db_set_err(err, dir, strerror(errno));
        goto err;
    }

    db->rocks =
        rocksdb_open_column_families(db->opts[0], dir, DB_NFAMILIES, db_family_names,
                                     (const rocksdb_options_t *const *) db->opts, db->cf, &rerr);
    if (rerr != NULL) {
        db_set_err(err, dir, rerr);
        rocksdb_free(rerr);
        db->rocks = NULL;
        goto err;
    }
    *out = db;
    return 0;

err:
    db_close(db);
    return -1;
}

void db_close(struct db *db)
{
    if (db == NULL)
        return;
    /* Handles first: RocksDB requires them gone before the DB closes. */
    for (int i = 0; i < DB_NFAMILIES; i++)
        if (db->cf[i] != NULL)
            rocksdb_column_family_handle_destroy(db->cf[i]);
    if (db->rocks != NULL)
        rocksdb_close(db->rocks);
    for (int i = 0; i < DB_NFAMILIES; i++)
        if (db->opts[i] != NULL)
            rocksdb_options_destroy(db->opts[i]);
    if (db->cache != NULL)
        rocksdb_cache_destroy(db->cache);
    if (db->wo_sync != NULL)
        rocksdb_writeoptions_destroy(db->wo_sync);
    if (db->wo_nosync != NULL)
        rocksdb_writeoptions_destroy(db->wo_nosync);
    if (db->ro != NULL)
        rocksdb_readoptions_destroy(db->ro);
    free(db);
}

rocksdb_t *db_rocks(struct db *db)
{
    return db->rocks;
}

rocksdb_column_family_handle_t *db_cf(struct db *db, enum db_cf cf)
{
    return db->cf[DB_FAMILY(cf)];
}

int db_get(struct db *db, enum db_cf cf, const void *key, size_t klen, char **val, size_t *vlen)
{
    rocksdb_pinnableslice_t *ps;
    const char *p;
    char *rerr = NULL;
    size_t n;

    /* Pinned read + our own copy: rocksdb_get_cf() cannot tell an empty value from a
     * missing key when malloc(0) returns NULL, and this copies no more than it does. */
    ps = rocksdb_get_pinned_cf(db->rocks, db->ro, db_cf(db, cf), key, klen, &rerr);
    if (rerr != NULL) {
        db_log_err("db.get", cf, rerr);
        return -1;
    }
    if (ps == NULL)
        return 0;
    p = rocksdb_pinnableslice_value(ps, &n);
    *val = malloc(n > 0 ? n : 1);
    if (*val == NULL) {
        rocksdb_pinnableslice_destroy(ps);
        log_error("db.get", "cf=%s err=nomem size=%zu", db_cf_name(cf), n);
        return -1;
    }
    if (n > 0)
        memcpy(*val, p, n);
    *vlen = n;
    rocksdb_pinnableslice_destroy(ps);
    return 1;
}

int db_get_u64(struct db *db, enum db_cf cf, const void *key, size_t klen, uint64_t *v)
{
    char *val;
    size_t vlen;
    int rc;

    *v = 0;
    rc = db_get(db, cf, key, klen, &val, &vlen);
    if (rc <= 0)
        return rc;
    if (vlen != 8) {
        log_error("db.get_u64", "cf=%s err=bad_length len=%zu", db_cf_name(cf), vlen);
        free(val);
        return -1;
    }
    *v = be64_get((const uint8_t *) val);
    free(val);
    return 1;
}

int db_put(struct db *db, enum db_cf cf, const void *key, size_t klen, const void *val, size_t vlen,
           bool sync)
{
    char *rerr = NULL;

    rocksdb_put_cf(db->rocks, sync ? db->wo_sync : db->wo_nosync, db_cf(db, cf), key, klen, val,
                   vlen, &rerr);
    if (rerr != NULL) {
        db_log_err("db.put", cf, rerr);
        return -1;
    }
    return 0;
}

int db_delete(struct db *db, enum db_cf cf, const void *key, size_t klen, bool sync)
{
    char *rerr = NULL;

    rocksdb_delete_cf(db->rocks, sync ? db->wo_sync : db->wo_nosync, db_cf(db, cf), key, klen,
                      &rerr);
    if (rerr != NULL) {
        db_log_err("db.delete", cf, rerr);
        return -1;
    }
    return 0;
}

int db_write(struct db *db, rocksdb_writebatch_t *batch, bool sync)
{
    char q[LOG_Q_MAX];
    char *rerr = NULL;

    rocksdb_write(db->rocks, sync ? db->wo_sync : db->wo_nosync, batch, &rerr);
    if (rerr != NULL) {
        log_error("db.write", "ops=%d err=%s", rocksdb_writebatch_count(batch), log_q(q, rerr));
        rocksdb_free(rerr);
        return -1;
    }
    return 0;
}

struct db_iter *db_iter_open(struct db *db, enum db_cf cf, const void *lo, size_t lolen,
                             const void *hi, size_t hilen)
{
    struct db_iter *it = calloc(1, sizeof(*it));

    if (it == NULL)
        goto nomem;
    it->cf = cf;
    it->ro = rocksdb_readoptions_create();
    if (it->ro == NULL)
        goto nomem;
    if (hi != NULL) {
        /* RocksDB keeps a pointer to the bound, not a copy: ours lives as long as IT. */
        it->hi = malloc(hilen > 0 ? hilen : 1);
        if (it->hi == NULL)
            goto nomem;
        if (hilen > 0)
            memcpy(it->hi, hi, hilen);
        rocksdb_readoptions_set_iterate_upper_bound(it->ro, it->hi, hilen);
    }
    it->it = rocksdb_create_iterator_cf(db->rocks, it->ro, db_cf(db, cf));
    if (it->it == NULL)
        goto nomem;
    if (lo != NULL)
        rocksdb_iter_seek(it->it, lo, lolen);
    else
        rocksdb_iter_seek_to_first(it->it);
    return it;

nomem:
    log_error("db.iter", "cf=%s err=nomem", db_cf_name(cf));
    if (it != NULL) {
        if (it->ro != NULL)
            rocksdb_readoptions_destroy(it->ro);
        free(it->hi);
        free(it);
    }
    return NULL;
}

bool db_iter_valid(struct db_iter *it)
{
    return rocksdb_iter_valid(it->it) != 0;
}

void db_iter_next(struct db_iter *it)
{
    rocksdb_iter_next(it->it);
}

const char *db_iter_key(struct db_iter *it, size_t *len)
{
    return rocksdb_iter_key(it->it, len);
}

const char *db_iter_value(struct db_iter *it, size_t *len)
{
    return rocksdb_iter_value(it->it, len);
}

int db_iter_close(struct db_iter *it)
{
    char *rerr = NULL;
    int rc = 0;

    if (it == NULL)
        return 0;
    rocksdb_iter_get_error(it->it, &rerr);
    if (rerr != NULL) {
        db_log_err("db.iter", it->cf, rerr);
        rc = -1;
    }
    rocksdb_iter_destroy(it->it);
    rocksdb_readoptions_destroy(it->ro); /* after the iterator that points into it */
    free(it->hi);
    free(it);
    return rc;
}

int db_checkpoint(struct db *db, const char *dir, char err[DB_ERR_MAX])
{
    rocksdb_checkpoint_t *cp;
    char *rerr = NULL;

    cp = rocksdb_checkpoint_object_create(db->rocks, &rerr);
    if (rerr != NULL) {
        db_set_err(err, "checkpoint", rerr);
        rocksdb_free(rerr);
        return -1;
    }
    /* log_size_for_flush 0: always flush the memtables, so the copy needs no WAL replay. */
    rocksdb_checkpoint_create(cp, dir, 0, &rerr);
    rocksdb_checkpoint_object_destroy(cp);
    if (rerr != NULL) {
        db_set_err(err, dir, rerr);
        rocksdb_free(rerr);
        return -1;
    }
    return 0;
}
