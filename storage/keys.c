/*
 * storage/keys.c
 * Key codec (see keys.h): builds RocksDB keys from a prefix byte and big-endian fields, and
 * reads them back with a bounds check before every read.
 *
 * Keys are built on the stack in a fixed KEY_MAX buffer. An append either fits whole or
 * marks the key overflowed and writes nothing, so a too-long address can never produce a
 * truncated key that aliases another one. Keys read back come from our own database, but
 * the reader still checks lengths: a corrupt or foreign key must not read past its end.
 */
#include "keys.h"

#include <string.h>

/* key_append() adds N bytes at the end of K, or marks K overflowed (and writes nothing)
 * when they would not fit. Once overflowed, a key stays overflowed and unchanged. */
static void key_append(struct key *k, const void *p, size_t n)
{
    if (k->overflow)
        return;
    if (n > KEY_MAX - k->len) {
        k->overflow = true;
        return;
    }
    if (n > 0)
        memcpy(k->buf + k->len, p, n);
    k->len += n;
}

void key_init(struct key *k, uint8_t prefix)
{
    k->buf[0] = prefix;
    k->len = 1;
    k->overflow = false;
}

void key_u8(struct key *k, uint8_t v)
{
    key_append(k, &v, 1);
}

void key_u32(struct key *k, uint32_t v)
{
    uint8_t b[4];

    be32_put(b, v);
    key_append(k, b, sizeof(b));
}

void key_u64(struct key *k, uint64_t v)
{
    uint8_t b[8];

    be64_put(b, v);
    key_append(k, b, sizeof(b));
}

void key_bytes(struct key *k, const void *p, size_t n)
{
    key_append(k, p, n);
}

void key_str(struct key *k, const char *s)
{
    key_append(k, s, strlen(s));
}

bool key_successor(struct key *k)
{
    size_t i = k->len;

    if (k->overflow)
        return false;
    while (i > 0 && k->buf[i - 1] == 0xff)
        i--;
    if (i == 0)
        return false; /* empty or all 0xff: leave K as it was */
    k->buf[i - 1]++;
    k->len = i;
    return true;
}

void key_reader_init(struct key_reader *r, const void *key, size_t len)
{
    r->p = key;
    r->left = len;
}

bool key_read_u8(struct key_reader *r, uint8_t *v)
{
    if (r->left < 1)
        return false;
    *v = r->p[0];
    r->p++;
    r->left--;
    return true;
}

bool key_read_u32(struct key_reader *r, uint32_t *v)
{
    if (r->left < 4)
        return false;
    *v = be32_get(r->p);
    r->p += 4;
    r->left -= 4;
    return true;
}

bool key_read_u64(struct key_reader *r, uint64_t *v)
{
    if (r->left < 8)
        return false;
    *v = be64_get(r->p);
    r->p += 8;
    r->left -= 8;
    return true;
}

const uint8_t *key_read_rest(struct key_reader *r, size_t *n)
{
    const uint8_t *p = r->p;

    *n = r->left;
    if (r->left > 0) /* P may be NULL for an empty key: no arithmetic on it */
        r->p += r->left;
    r->left = 0;
    return p;
}

void be64_put(uint8_t out[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (uint8_t) v;
        v >>= 8;
    }
}

uint64_t be64_get(const uint8_t in[8])
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = (v << 8) | in[i];
    return v;
}

void be32_put(uint8_t out[4], uint32_t v)
{
    out[0] = (uint8_t) (v >> 24);
    out[1] = (uint8_t) (v >> 16);
    out[2] = (uint8_t) (v >> 8);
    out[3] = (uint8_t) v;
}

uint32_t be32_get(const uint8_t in[4])
{
    return (uint32_t) in[0] << 24 | (uint32_t) in[1] << 16 | (uint32_t) in[2] << 8 |
           (uint32_t) in[3];
}

int hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}
