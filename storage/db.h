/*
 * storage/db.h
 * The node's RocksDB: one database with the column families meta, bodies and local.
 *
 *   meta    replicated by Raft (the FSM writes it); synced through the Raft log, so FSM
 *           batches are written with the WAL on but without fsync (db_write(.., false)).
 *   bodies  message bodies by SHA-256, integrated BlobDB above DB_BLOB_MIN bytes; written
 *           with fsync (nothing else protects them).
 *   local   node identity and caches; written with fsync.
 *
 * Compression: lz4 on upper levels, zstd on the bottommost level. One LRU block cache is
 * shared by all families. storage/ knows nothing of mail.
 */
#ifndef TERN_DB_H
#define TERN_DB_H

#include <rocksdb/c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum db_cf { DB_CF_META = 0, DB_CF_BODIES, DB_CF_LOCAL, DB_CF_COUNT };

#define DB_BLOB_MIN   (64 * 1024)         /* bodies values at least this big go to blob files */
#define DB_CACHE_SIZE (64 * 1024 * 1024)  /* shared block cache */
#define DB_ERR_MAX    256

struct db;

/* db_open() opens or creates the database in DIR (created if missing). On failure returns
 * -1 and writes a message into ERR. */
int db_open(const char *dir, struct db **out, char err[DB_ERR_MAX]);
/* db_close() closes DB and frees everything it owns; NULL is fine. */
void db_close(struct db *db);

/* Raw handles for code that needs the full RocksDB C API (iterators, checkpoints). */
rocksdb_t *db_rocks(struct db *db);
rocksdb_column_family_handle_t *db_cf(struct db *db, enum db_cf cf);

/*
 * db_get() reads KEY from CF. Returns 1 and sets *VAL (malloc'd, caller frees with free())
 * and *VLEN when found; 0 when not found; -1 on a storage error (logged). Safe from any
 * thread.
 */
int db_get(struct db *db, enum db_cf cf, const void *key, size_t klen, char **val, size_t *vlen);
/* db_get_u64() reads an 8-byte big-endian value; 1 found, 0 not found (*V = 0), -1 error
 * (also when the value is not 8 bytes). */
int db_get_u64(struct db *db, enum db_cf cf, const void *key, size_t klen, uint64_t *v);

/* db_put()/db_delete(): one key, fsync'd when SYNC. Returns 0 or -1 (logged). */
int db_put(struct db *db, enum db_cf cf, const void *key, size_t klen, const void *val,
           size_t vlen, bool sync);
int db_delete(struct db *db, enum db_cf cf, const void *key, size_t klen, bool sync);

/* db_write() applies BATCH atomically; fsync'd when SYNC. Returns 0 or -1 (logged). The
 * batch stays the caller's. */
int db_write(struct db *db, rocksdb_writebatch_t *batch, bool sync);

/*
 * Iteration over [LO, HI) in CF. The iterator reads a consistent view (an implicit
 * snapshot). HI may be NULL (no upper bound); otherwise it is copied, so the caller's
 * buffer may die. Key/value pointers are valid until the next db_iter_next() or
 * db_iter_close().
 */
struct db_iter;
struct db_iter *db_iter_open(struct db *db, enum db_cf cf, const void *lo, size_t lolen,
                             const void *hi, size_t hilen);
bool db_iter_valid(struct db_iter *it);
void db_iter_next(struct db_iter *it);
const char *db_iter_key(struct db_iter *it, size_t *len);
const char *db_iter_value(struct db_iter *it, size_t *len);
/* db_iter_close() returns 0, or -1 when the scan stopped on a storage error (logged). */
int db_iter_close(struct db_iter *it);

/* db_checkpoint() makes a hard-linked copy of the whole database in DIR (which must not
 * exist). Returns 0 or -1 (message in ERR). */
int db_checkpoint(struct db *db, const char *dir, char err[DB_ERR_MAX]);

#endif
