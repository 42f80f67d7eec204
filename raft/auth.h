/*
 * raft/auth.h
 * Authenticated internal connections: a mutual HMAC-SHA256 challenge-response over a
 * libuv TCP stream, keyed by the cluster secret, run before a connection is handed to its
 * user (Raft traffic through transport.c, our internal RPC). Reusable by any uv loop.
 *
 * SECURITY: the handshake reads bytes from anybody who can reach the port. A stranger
 * gets the 41-byte challenge (magic, version, a fresh random nonce) and nothing else; on
 * any failure the connection is closed without another byte. What it proves: the peer
 * knows the secret and means the same PURPOSE, in this session (fresh nonces on both
 * sides, so a recorded proof is worthless). What it does not give: confidentiality or
 * integrity after the handshake (the stream is plaintext: an on-path attacker can read or
 * hijack it; keep cluster traffic on a private network), nor a distinction between members
 * (one shared secret: any member can claim any node id).
 *
 * Wire format, version 1 (all integers big-endian):
 *   server -> client  challenge  "TERNAUTH" | version u8 (=1) | Ns [32]           41 bytes
 *   client -> server  hello      version u8 | id u64 | alen u8 | address [alen]
 *                                | Nc [32] | MACc [32]                 75..329 bytes
 *   server -> client  proof      MACs [32]
 * MACc = HMAC-SHA256(secret, T("tern-auth-client")), MACs = HMAC-SHA256(secret,
 * T("tern-auth-server")), where the transcript T(label) is
 *   label [16] | version u8 | plen u8 | purpose [plen] | Ns | Nc | id u64 | alen u8 | address
 * The address is 1..AUTH_ADDRESS_MAX printable bytes (0x21..0x7e). After the proof both
 * sides stop reading and hand the stream over; no byte beyond the handshake is consumed.
 */
#ifndef TERN_AUTH_H
#define TERN_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define AUTH_SECRET_MIN     16  /* bytes: 128 bits, the least an HMAC key should have */
#define AUTH_SECRET_MAX     64  /* bytes: an HMAC-SHA256 block; longer keys get hashed */
#define AUTH_SECRET_DEFAULT 32  /* bytes auth_key_create() draws */
#define AUTH_ADDRESS_MAX    255 /* fits the u8 length on the wire */
#define AUTH_PURPOSE_MAX    32  /* "raft", "rpc": a short tag, bound into every MAC */

#define AUTH_VERSION       1
#define AUTH_MAGIC         "TERNAUTH"
#define AUTH_MAGIC_LEN     8
#define AUTH_NONCE_LEN     32
#define AUTH_MAC_LEN       32 /* SHA-256 */
#define AUTH_CHALLENGE_LEN (AUTH_MAGIC_LEN + 1 + AUTH_NONCE_LEN)
#define AUTH_HELLO_HEAD    (1 + 8 + 1) /* version, id, alen: enough to know the rest */
#define AUTH_HELLO_MIN     (AUTH_HELLO_HEAD + 1 + AUTH_NONCE_LEN + AUTH_MAC_LEN)
#define AUTH_HELLO_MAX     (AUTH_HELLO_HEAD + AUTH_ADDRESS_MAX + AUTH_NONCE_LEN + AUTH_MAC_LEN)
#define AUTH_PROOF_LEN     AUTH_MAC_LEN

/* Status codes: 0 is success, these are negative. */
#define AUTH_EINVAL    (-1)  /* bad argument (caller's bug or configuration) */
#define AUTH_ENOMEM    (-2)  /* out of memory */
#define AUTH_EPROTO    (-3)  /* malformed handshake message */
#define AUTH_EVERSION  (-4)  /* the peer speaks another protocol version */
#define AUTH_EPROOF    (-5)  /* proof did not verify: other secret, purpose, or a replay */
#define AUTH_ETIMEDOUT (-6)  /* the handshake did not finish within timeout_ms */
#define AUTH_ECLOSED   (-7)  /* the peer closed during the handshake (a refusal, often) */
#define AUTH_ECONNECT  (-8)  /* could not connect: refused, unreachable, or timed out */
#define AUTH_EIO       (-9)  /* any other socket error */
#define AUTH_ECANCELED (-10) /* auth_cancel() */
#define AUTH_ECRYPTO   (-11) /* OpenSSL failed (RAND_bytes, HMAC) */

/* auth_strerror(): a short fixed text for STATUS (0 or AUTH_E*); never NULL. */
const char *auth_strerror(int status);

/* ---- the secret ---- */

struct auth_key {
    uint8_t bytes[AUTH_SECRET_MAX];
    size_t len; /* AUTH_SECRET_MIN..AUTH_SECRET_MAX */
};

/*
 * auth_key_load(): reads the cluster secret from PATH. The file holds the secret as HEX
 * TEXT: 2*AUTH_SECRET_MIN..2*AUTH_SECRET_MAX hex digits (either case), optionally followed
 * by one "\n" or "\r\n", nothing else (`openssl rand -hex 32 > secret` makes one). The
 * file must be a regular file (a symlink to one is followed) owned by the effective uid or
 * by root, with no permission bits for group or other (chmod 600 or 400). Returns 0 with K
 * filled in, or -1 with a message naming the file in ERR (K is then zeroed). The text read
 * is wiped from memory before returning.
 */
int auth_key_load(const char *path, struct auth_key *k, char *err, size_t errlen);

/*
 * auth_key_create(): writes a new random AUTH_SECRET_DEFAULT-byte secret as hex text and a
 * newline to PATH, which must not exist yet (O_EXCL; mode 0600; fsync of the file and of
 * its directory), then loads it into K with auth_key_load(). Returns 0, or -1 with ERR
 * (a file that was created is removed again).
 */
int auth_key_create(const char *path, struct auth_key *k, char *err, size_t errlen);

/* auth_key_valid(): K holds a usable secret (length in AUTH_SECRET_MIN..MAX). */
bool auth_key_valid(const struct auth_key *k);

/* ---- the handshake on a uv loop ---- */

/*
 * DONE fires exactly once, on the loop, never from inside auth_accept()/auth_connect() or
 * auth_cancel().
 * On success STATUS is 0 and TCP is handed over: open, not reading, TCP_NODELAY set,
 * tcp->data free for the new owner, and owned by the callee, who must uv_close() it and
 * then raft_free() it (it was allocated with raft_malloc(): libraft frees the streams it
 * is given that way). No byte after the handshake has been read. PEER_ID/PEER_ADDR are the
 * authenticated client's (server side), or 0 and the address we connected to (client
 * side: the server proves it knows the secret, not who it is). PEER_ADDR is valid only
 * during the call.
 * On failure STATUS < 0 (AUTH_E*), TCP is NULL, PEER_ID 0, PEER_ADDR NULL, and the
 * connection is already closed and freed: nothing is left to release.
 * Once DONE has been called the request is the library's to free: do not use it again.
 */
typedef void auth_done_cb(void *arg, uv_tcp_t *tcp, int status, uint64_t peer_id,
                          const char *peer_addr);

struct auth_req; /* one handshake in progress: owned by auth.c */

/*
 * auth_accept(): runs the server side on TCP, a connection just accepted on its loop
 * (allocated with raft_malloc, uv_tcp_init'ed, uv_accept'ed, not reading). K must
 * outlive the handshake; PURPOSE (1..AUTH_PURPOSE_MAX printable bytes) is copied.
 * TIMEOUT_MS > 0 bounds the whole handshake. Returns 0 and sets *OUT (may be NULL), after
 * which the handshake owns TCP until DONE; or AUTH_EINVAL / AUTH_ENOMEM / AUTH_ECRYPTO
 * before anything was done: TCP is untouched and still the caller's to close.
 */
int auth_accept(uv_tcp_t *tcp, const struct auth_key *k, const char *purpose, unsigned timeout_ms,
                auth_done_cb *done, void *arg, struct auth_req **out);

/*
 * auth_connect(): connects to ADDRESS "a.b.c.d:port" and runs the client side, telling
 * the server MY_ID and MY_ADDRESS (1..AUTH_ADDRESS_MAX printable bytes). The deadline
 * TIMEOUT_MS covers the TCP connect too. Same return contract as auth_accept() (plus
 * AUTH_EIO should libuv refuse a TCP handle), nothing opened on failure; on 0 every later
 * failure (refused, unreachable, timeout, bad proof) comes through DONE.
 */
int auth_connect(uv_loop_t *loop, const char *address, const struct auth_key *k,
                 const char *purpose, uint64_t my_id, const char *my_address, unsigned timeout_ms,
                 auth_done_cb *done, void *arg, struct auth_req **out);

/*
 * auth_cancel(): abandons a handshake whose DONE has not fired yet: the connection is
 * closed and DONE fires later (on the loop) with AUTH_ECANCELED, even if the handshake
 * was already failing for another reason. R must not be used after DONE.
 */
void auth_cancel(struct auth_req *r);

/* auth_parse_ipv4(): "a.b.c.d:port" (port 1..65535, nothing else) into SA: 0 or
 * AUTH_EINVAL. libraft 0.15 takes nothing else either (no names, no IPv6). */
int auth_parse_ipv4(const char *address, struct sockaddr_in *sa);

/* ---- the messages (pure functions, no I/O): used by the handshake, tests, fuzzer ---- */

struct auth_hello {
    uint8_t version;
    uint64_t id;
    uint8_t addr_len;
    char addr[AUTH_ADDRESS_MAX + 1]; /* NUL-terminated */
    uint8_t nc[AUTH_NONCE_LEN];
    uint8_t mac[AUTH_MAC_LEN];
};

/* auth_address_ok(): S[0..LEN) is an address we send or accept: 1..AUTH_ADDRESS_MAX bytes
 * in 0x21..0x7e. */
bool auth_address_ok(const char *s, size_t len);

/* auth_challenge_write(): the challenge carrying NS into OUT. */
void auth_challenge_write(uint8_t out[AUTH_CHALLENGE_LEN], const uint8_t ns[AUTH_NONCE_LEN]);

/*
 * auth_challenge_parse(): BUF[0..LEN) as a challenge. Returns 1 when LEN < AUTH_CHALLENGE_LEN
 * (read more), 0 with NS set when the first AUTH_CHALLENGE_LEN bytes are a challenge
 * (later bytes are not looked at), AUTH_EPROTO for another magic, AUTH_EVERSION for
 * another version.
 */
int auth_challenge_parse(const uint8_t *buf, size_t len, uint8_t ns[AUTH_NONCE_LEN]);

/*
 * auth_hello_parse(): BUF[0..LEN) as a hello. Returns 1 with *NEED = the length the hello
 * is known to have at least (> LEN; at most AUTH_HELLO_MAX) when LEN is short: read up to
 * *NEED bytes and call again. Returns 0 with H filled in and *NEED = the hello's exact
 * length when BUF holds it all (bytes after it are not looked at), or AUTH_EVERSION
 * (first byte is not AUTH_VERSION) / AUTH_EPROTO (bad address) as soon as the bytes show
 * it. Checks the form only; the MAC is checked by auth_mac() and auth_mac_equal().
 */
int auth_hello_parse(const uint8_t *buf, size_t len, struct auth_hello *h, size_t *need);

/* auth_hello_write(): H (version, id, addr, nc, mac; addr_len is taken from addr) into
 * OUT[0..CAP): its length, or AUTH_EINVAL for a bad address or too small a CAP. */
int auth_hello_write(uint8_t *out, size_t cap, const struct auth_hello *h);

enum auth_side { AUTH_CLIENT, AUTH_SERVER }; /* whose MAC: the label of the transcript */

/* auth_mac(): MACc (AUTH_CLIENT) or MACs (AUTH_SERVER) of the session NS + H (version,
 * id, addr, nc) for PURPOSE into OUT. 0, AUTH_EINVAL (bad purpose or address), or
 * AUTH_ECRYPTO. */
int auth_mac(const struct auth_key *k, enum auth_side side, const char *purpose,
             const uint8_t ns[AUTH_NONCE_LEN], const struct auth_hello *h,
             uint8_t out[AUTH_MAC_LEN]);

/* auth_mac_equal(): constant-time comparison (CRYPTO_memcmp). */
bool auth_mac_equal(const uint8_t a[AUTH_MAC_LEN], const uint8_t b[AUTH_MAC_LEN]);

#endif
