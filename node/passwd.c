/*
 * node/passwd.c
 * yescrypt password hashes (see passwd.h).
 */
#include "passwd.h"

#include <crypt.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#define YESCRYPT_PREFIX "$y$"

/* with_cstr(): copies a length-delimited password to a NUL-terminated buffer; -1 when it
 * is too long or holds a NUL. The caller cleanses BUF. */
static int with_cstr(const char *p, size_t len, char buf[PASSWD_MAX + 1])
{
    if (len == 0 || len > PASSWD_MAX || memchr(p, 0, len) != NULL)
        return -1;
    memcpy(buf, p, len);
    buf[len] = 0;
    return 0;
}

int passwd_hash(const char *password, size_t len, char out[PASSWD_HASH_MAX])
{
    char pw[PASSWD_MAX + 1];
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    int rv = -1;
    if (with_cstr(password, len, pw) != 0)
        return -1;
    /* count 0 = libxcrypt's default cost; NULL rbytes = the OS's random source */
    if (crypt_gensalt_rn(YESCRYPT_PREFIX, 0, NULL, 0, salt, sizeof salt) == NULL)
        goto out;
    struct crypt_data *cd = calloc(1, sizeof *cd);
    if (cd == NULL)
        goto out;
    const char *h = crypt_rn(pw, salt, cd, sizeof *cd);
    if (h != NULL && h[0] == '$' && strlen(h) < PASSWD_HASH_MAX) {
        memcpy(out, h, strlen(h) + 1);
        rv = 0;
    }
    OPENSSL_cleanse(cd, sizeof *cd);
    free(cd);
out:
    OPENSSL_cleanse(pw, sizeof pw);
    return rv;
}

bool passwd_verify(const char *hash, const char *password, size_t len)
{
    char pw[PASSWD_MAX + 1];
    bool ok = false;
    if (hash == NULL || hash[0] != '$' || strnlen(hash, PASSWD_HASH_MAX) >= PASSWD_HASH_MAX)
        return false;
    if (with_cstr(password, len, pw) != 0)
        return false;
    struct crypt_data *cd = calloc(1, sizeof *cd);
    if (cd != NULL) {
        const char *h = crypt_rn(pw, hash, cd, sizeof *cd);
        size_t hl = strlen(hash);
        ok = h != NULL && h[0] == '$' && strlen(h) == hl && CRYPTO_memcmp(h, hash, hl) == 0;
        OPENSSL_cleanse(cd, sizeof *cd);
        free(cd);
    }
    OPENSSL_cleanse(pw, sizeof pw);
    return ok;
}
