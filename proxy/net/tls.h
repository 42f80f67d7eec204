/*
 * proxy/net/tls.h
 * The server TLS context: TLS 1.2+ only, forward-secret AEAD suites, no renegotiation or
 * compression. Certificate and key come from tls.cert_file/tls.key_file, or, when those
 * are empty, from DATA_DIR/tls/{cert,key}.pem, generated self-signed on first start
 * (ECDSA P-256, 10 years, SAN = hostname, localhost, 127.0.0.1, ::1).
 */
#ifndef TERN_TLS_H
#define TERN_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

/* tls_server_ctx(): a new context (the caller frees it with SSL_CTX_free), or NULL with
 * ERR set. */
SSL_CTX *tls_server_ctx(const char *cert_file, const char *key_file, const char *data_dir,
                        const char *hostname, char *err, size_t errlen);

#endif
