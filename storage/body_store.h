/*
 * storage/body_store.h
 * Message bodies stored once, keyed by their SHA-256, in the bodies column family.
 *
 * The writer hashes while it receives (SMTP DATA, IMAP APPEND literal), so a body is never
 * read twice; body_writer_finish() stores it with fsync and returns its hash. Puts are
 * idempotent: storing the same bytes twice leaves one copy. Reference counts live in the
 * metadata (the FSM), not here: body_delete() is for the owner that saw the count reach 0.
 */
#ifndef TERN_BODY_STORE_H
#define TERN_BODY_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"

#define BODY_HASH_LEN 32
#define BODY_HEX_LEN  (2 * BODY_HASH_LEN + 1)

/* body_hash_hex() writes the lowercase hex of HASH into OUT (NUL-terminated). */
void body_hash_hex(const uint8_t hash[BODY_HASH_LEN], char out[BODY_HEX_LEN]);
/* body_hash_parse() parses 64 hex digits; returns 0 or -1. */
int body_hash_parse(const char *hex, uint8_t hash[BODY_HASH_LEN]);

/* body_put() hashes DATA and stores it (fsync). Returns 0 or -1. */
int body_put(struct db *db, const void *data, size_t len, uint8_t hash_out[BODY_HASH_LEN]);
/* body_get(): 1 found (*DATA malloc'd, caller frees), 0 not found, -1 error. */
int body_get(struct db *db, const uint8_t hash[BODY_HASH_LEN], char **data, size_t *len);
/* body_has(): 1 present, 0 absent, -1 error. */
int body_has(struct db *db, const uint8_t hash[BODY_HASH_LEN]);
/* body_delete(): 0 (also when absent) or -1. fsync'd. */
int body_delete(struct db *db, const uint8_t hash[BODY_HASH_LEN]);
/*
 * body_delete_if_idle(): deletes HASH unless a store of it (body_put, body_writer_finish)
 * began at or after SINCE_MS (body_clock_ms()), or the record of recent stores (the last
 * 262,144) does not reach back that far. 1 deleted (or absent), 0 kept, -1 error. For the
 * GC: it decided from a reference count read at SINCE_MS, and a delivery of the same bytes
 * may have stored them since, its commit still to come.
 */
int body_delete_if_idle(struct db *db, const uint8_t hash[BODY_HASH_LEN], uint64_t since_ms);
uint64_t body_clock_ms(void); /* CLOCK_MONOTONIC, ms */

/*
 * Streaming writer. body_writer_new() caps the body at MAX bytes; an append past the cap
 * returns -1 and marks the writer too big (body_writer_too_big()), after which appends are
 * ignored and finish fails, so a protocol can keep reading to the end of DATA and then
 * answer 552. The writer owns its buffer; body_writer_free() releases it (NULL is fine).
 */
struct body_writer;
struct body_writer *body_writer_new(size_t max);
int body_writer_append(struct body_writer *w, const void *data, size_t len);
size_t body_writer_size(const struct body_writer *w);
bool body_writer_too_big(const struct body_writer *w);
/* body_writer_finish() stores the body (fsync) and writes its hash. Returns 0 or -1. The
 * writer stays valid (and keeps its bytes) until freed. */
int body_writer_finish(struct body_writer *w, struct db *db, uint8_t hash_out[BODY_HASH_LEN]);
/* body_writer_data() gives the bytes received so far (valid until the next append/free). */
const char *body_writer_data(const struct body_writer *w, size_t *len);
void body_writer_free(struct body_writer *w);

#endif
