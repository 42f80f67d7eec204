/*
 * proxy/net/tls.c
 * The server TLS context and the self-signed certificate of a fresh node (see tls.h).
 */
#include "tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

static void ssl_err(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    snprintf(err, errlen, "%s: %s", what, e ? buf : "unknown error");
    ERR_clear_error();
}

static int add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ex == NULL)
        return -1;
    int rv = X509_add_ext(x, ex, -1) == 1 ? 0 : -1;
    X509_EXTENSION_free(ex);
    return rv;
}

/* generate(): writes a new key (0600) and self-signed certificate. */
static int generate(const char *cert, const char *key, const char *hostname, char *err,
                    size_t errlen)
{
    int rv = -1;
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    FILE *f = NULL;
    if (pk == NULL || x == NULL) {
        ssl_err(err, errlen, "generate key");
        goto out;
    }
    unsigned char serial[16];
    RAND_bytes(serial, sizeof serial);
    serial[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    X509_set_version(x, 2);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 24 * 3600);
    X509_set_pubkey(x, pk);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *) "Tern", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *) hostname, -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    char san[512];
    snprintf(san, sizeof san, "DNS:%s,DNS:localhost,IP:127.0.0.1,IP:::1", hostname);
    if (add_ext(x, NID_subject_alt_name, san) || add_ext(x, NID_basic_constraints, "CA:FALSE") ||
        add_ext(x, NID_key_usage, "digitalSignature") ||
        add_ext(x, NID_ext_key_usage, "serverAuth")) {
        ssl_err(err, errlen, "certificate extensions");
        goto out;
    }
    if (X509_sign(x, pk, EVP_sha256()) == 0) {
        ssl_err(err, errlen, "sign certificate");
        goto out;
    }
    mode_t old = umask(0077);
    f = fopen(key, "w");
    umask(old);
    if (f == NULL || PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) != 1 ||
        fflush(f) != 0 || fsync(fileno(f)) != 0) {
        snprintf(err, errlen, "write %s: %s", key, strerror(errno));
        goto out;
    }
    fclose(f);
    f = fopen(cert, "w");
    if (f == NULL || PEM_write_X509(f, x) != 1 || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        snprintf(err, errlen, "write %s: %s", cert, strerror(errno));
        goto out;
    }
    log_info("tls.generated", "cert=%s hostname=%s", cert, hostname);
    rv = 0;
out:
    if (f)
        fclose(f);
    X509_free(x);
    EVP_PKEY_free(pk);
    return rv;
}

SSL_CTX *tls_server_ctx(const char *cert_file, const char *key_file, const char *data_dir,
                        const char *hostname, char *err, size_t errlen)
{
    char cert[4096], key[4096];
    if (cert_file && cert_file[0]) {
        snprintf(cert, sizeof cert, "%s", cert_file);
        snprintf(key, sizeof key, "%s", key_file && key_file[0] ? key_file : cert_file);
    } else {
        char dir[4000]; /* leaves room for "/cert.pem" in cert[] */
        snprintf(dir, sizeof dir, "%s/tls", data_dir);
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "mkdir %s: %s", dir, strerror(errno));
            return NULL;
        }
        snprintf(cert, sizeof cert, "%s/cert.pem", dir);
        snprintf(key, sizeof key, "%s/key.pem", dir);
        if (access(cert, R_OK) != 0 || access(key, R_OK) != 0) {
            if (generate(cert, key, hostname, err, errlen) != 0)
                return NULL;
        }
    }
    SSL_CTX *c = SSL_CTX_new(TLS_server_method());
    if (c == NULL) {
        ssl_err(err, errlen, "SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_cipher_list(c, "ECDHE+AESGCM:ECDHE+CHACHA20");
    SSL_CTX_set1_groups_list(c, "X25519:P-256:P-384");
    SSL_CTX_set_session_id_context(c, (const unsigned char *) "tern", 4);
    /* nodes behind one balancer would need shared ticket keys: no tickets until then */
    SSL_CTX_set_num_tickets(c, 0);
    SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
    SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS); /* idle connections keep no buffers */
    if (SSL_CTX_use_certificate_chain_file(c, cert) != 1) {
        ssl_err(err, errlen, cert);
        SSL_CTX_free(c);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(c) != 1) {
        ssl_err(err, errlen, key);
        SSL_CTX_free(c);
        return NULL;
    }
    return c;
}
