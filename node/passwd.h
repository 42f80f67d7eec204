/*
 * node/passwd.h
 * Password hashing with yescrypt through libxcrypt (crypt_gensalt_rn + crypt_rn).
 * Both calls are deliberately slow (tens of milliseconds): call them from the libuv
 * thread pool, never from an event loop. Passwords are never logged.
 */
#ifndef TERN_PASSWD_H
#define TERN_PASSWD_H

#include <stdbool.h>
#include <stddef.h>

#define PASSWD_MAX      511  /* libxcrypt's CRYPT_MAX_PASSPHRASE_SIZE (512) less the NUL */
#define PASSWD_HASH_MAX 256  /* longest hash string we produce or accept */

/* passwd_hash() writes a "$y$..." hash of PASSWORD (LEN bytes, no NUL inside) into OUT.
 * Returns 0 or -1 (bad length, NUL byte, no entropy, crypt failure). */
int passwd_hash(const char *password, size_t len, char out[PASSWD_HASH_MAX]);

/* passwd_verify(): true when PASSWORD matches HASH (constant-time comparison). A hash
 * that crypt cannot use verifies nothing. */
bool passwd_verify(const char *hash, const char *password, size_t len);

#endif
