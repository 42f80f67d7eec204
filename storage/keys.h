/*
 * storage/keys.h
 * Key codec: a typed prefix byte followed by fields. Integers are big-endian so that the
 * byte order of keys is their numeric order (a UID range is one iterator scan). Strings
 * are written as raw bytes and must be the last field of a key, or be followed only by
 * fixed-width fields when the caller knows the string length another way.
 *
 * storage/ knows nothing of mail: the prefix bytes themselves are defined by the layer
 * that owns each key family (see storage/KEYSPACE.md).
 */
#ifndef TERN_KEYS_H
#define TERN_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KEY_MAX 512 /* longest key we build; addresses are at most 320 bytes (RFC 5321) */

/* A key under construction. When an append would pass KEY_MAX, the key is marked
 * overflowed and keeps its length; key_ok() reports it. No append ever writes past buf. */
struct key {
    uint8_t buf[KEY_MAX];
    size_t len;
    bool overflow;
};

void key_init(struct key *k, uint8_t prefix);
void key_u8(struct key *k, uint8_t v);
void key_u32(struct key *k, uint32_t v);
void key_u64(struct key *k, uint64_t v);
void key_bytes(struct key *k, const void *p, size_t n);
void key_str(struct key *k, const char *s); /* strlen(s) bytes, no terminator */
static inline bool key_ok(const struct key *k)
{
    return !k->overflow;
}

/*
 * key_successor() turns K into the smallest key greater than every key that has K as a
 * prefix (the exclusive upper bound of a prefix scan): the last byte below 0xff is
 * incremented and the bytes after it are dropped. Returns false when no such key exists
 * (K is empty or all 0xff).
 */
bool key_successor(struct key *k);

/* Reading keys back: a cursor over KEY/LEN. Every read checks the remaining length and
 * returns false (leaving the output untouched) when it is short. */
struct key_reader {
    const uint8_t *p;
    size_t left;
};
void key_reader_init(struct key_reader *r, const void *key, size_t len);
bool key_read_u8(struct key_reader *r, uint8_t *v);
bool key_read_u32(struct key_reader *r, uint32_t *v);
bool key_read_u64(struct key_reader *r, uint64_t *v);
/* key_read_rest() returns the remaining bytes (not NUL-terminated) and empties R. */
const uint8_t *key_read_rest(struct key_reader *r, size_t *n);

/* Big-endian value helpers, for small fixed values such as counters. */
void be64_put(uint8_t out[8], uint64_t v);
uint64_t be64_get(const uint8_t in[8]);
void be32_put(uint8_t out[4], uint32_t v);
uint32_t be32_get(const uint8_t in[4]);

/* hex_digit() is the value of hex digit C (either case), or -1. */
int hex_digit(int c);

#endif
