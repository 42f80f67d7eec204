/*
 * raft/auth.c
 * The cluster handshake (wire format in auth.h): the secret file, the three messages,
 * and the two state machines that run them on a libuv TCP stream.
 *
 * SECURITY: everything read here comes from whoever can reach a cluster port, before we
 * know anything about them. Every message has a fixed size or a u8 length checked before
 * the bytes are waited for; we read exactly the bytes the current message still lacks
 * (the alloc callback offers no more), so at most AUTH_HELLO_MAX bytes are ever read
 * from a stranger and none beyond the handshake from a member; a deadline bounds the
 * whole exchange; MACs are compared in constant time. A failure closes the connection
 * without sending anything.
 *
 * The happy path of the server side (auth_accept) is:
 * - Arm the deadline, write the challenge (fresh Ns) and start reading the hello head.
 * - The head gives the address length: read exactly the rest of the hello.
 * - Check MACc, stop reading, write MACs; when that write completes, hand the stream over.
 * The client side (auth_connect) connects, reads the challenge, writes its hello, reads
 * and checks MACs, stops reading and hands over once its own write has completed too.
 * Failure modes: the deadline fires, the peer closes or resets, a message is malformed,
 * a MAC does not verify, auth_cancel(). Each closes the stream and the timer; DONE fires
 * from the last close callback, so the caller never sees a handle that is still closing.
 */
#include "auth.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <raft.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keys.h"

#define AUTH_LABEL_LEN 16 /* both labels have this length: no label is a prefix of another */
static const char auth_label_client[] = "tern-auth-client";
static const char auth_label_server[] = "tern-auth-server";
_Static_assert(sizeof auth_label_client - 1 == AUTH_LABEL_LEN, "client label length");
_Static_assert(sizeof auth_label_server - 1 == AUTH_LABEL_LEN, "server label length");

/* The longest transcript: label, version, plen, purpose, Ns, Nc, id, alen, address. */
#define AUTH_TRANSCRIPT_MAX                                                                        \
    (AUTH_LABEL_LEN + 1 + 1 + AUTH_PURPOSE_MAX + 2 * AUTH_NONCE_LEN + 8 + 1 + AUTH_ADDRESS_MAX)

/* A secret file is at most 2*AUTH_SECRET_MAX hex digits and "\r\n". */
#define AUTH_KEY_FILE_MAX (2 * AUTH_SECRET_MAX + 2)

const char *auth_strerror(int status)
{
    switch (status) {
    case 0:
        return "ok";
    case AUTH_EINVAL:
        return "invalid argument";
    case AUTH_ENOMEM:
        return "out of memory";
    case AUTH_EPROTO:
        return "malformed handshake";
    case AUTH_EVERSION:
        return "unsupported handshake version";
    case AUTH_EPROOF:
        return "bad proof (other secret or purpose, or a replay)";
    case AUTH_ETIMEDOUT:
        return "handshake timed out";
    case AUTH_ECLOSED:
        return "peer closed during the handshake";
    case AUTH_ECONNECT:
        return "cannot connect";
    case AUTH_EIO:
        return "socket error";
    case AUTH_ECANCELED:
        return "canceled";
    case AUTH_ECRYPTO:
        return "crypto library failure";
    default:
        return "unknown auth error";
    }
}

/* ---- the secret ---- */

static void key_err(char *err, size_t errlen, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void key_err(char *err, size_t errlen, const char *path, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (err == NULL || errlen == 0)
        return;
    n = snprintf(err, errlen, "secret file %s: ", path);
    if (n < 0 || (size_t) n >= errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t) n, fmt, ap);
    va_end(ap);
}

bool auth_key_valid(const struct auth_key *k)
{
    return k != NULL && k->len >= AUTH_SECRET_MIN && k->len <= AUTH_SECRET_MAX;
}

/* key_decode(): TEXT[0..N) (hex digits, one optional line end) into K; NULL or a reason. */
static const char *key_decode(const char *text, size_t n, struct auth_key *k)
{
    if (n > 0 && text[n - 1] == '\n') {
        n--;
        if (n > 0 && text[n - 1] == '\r')
            n--;
    }
    for (size_t i = 0; i < n; i++)
        if (hex_digit((unsigned char) text[i]) < 0)
            return "not hex text (only 0-9, a-f and one final newline are allowed)";
    if (n % 2 != 0)
        return "odd number of hex digits";
    if (n < 2 * AUTH_SECRET_MIN || n > 2 * AUTH_SECRET_MAX)
        return "the secret must be 16 to 64 bytes (32 to 128 hex digits)";
    for (size_t i = 0; i < n; i += 2)
        k->bytes[i / 2] = (uint8_t) (hex_digit((unsigned char) text[i]) << 4 |
                                     hex_digit((unsigned char) text[i + 1]));
    k->len = n / 2;
    return NULL;
}

int auth_key_load(const char *path, struct auth_key *k, char *err, size_t errlen)
{
    char text[AUTH_KEY_FILE_MAX + 1]; /* one more: a longer file shows as too long */
    const char *why;
    struct stat st;
    size_t n = 0;
    int fd;

    memset(k, 0, sizeof *k);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        key_err(err, errlen, path, "%s", strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0) {
        key_err(err, errlen, path, "%s", strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        key_err(err, errlen, path, "not a regular file");
        goto fail;
    }
    /* Any access for group or other is refused, not only reading: a writable secret can
     * be replaced by someone who then talks to the cluster. */
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        key_err(err, errlen, path, "group or other may access it (mode %03o): chmod 600",
                (unsigned) (st.st_mode & 0777));
        goto fail;
    }
    if (st.st_uid != geteuid() && st.st_uid != 0) {
        key_err(err, errlen, path, "owned by uid %u, neither us nor root", (unsigned) st.st_uid);
        goto fail;
    }
    while (n < sizeof text) {
        ssize_t r = read(fd, text + n, sizeof text - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            key_err(err, errlen, path, "%s", strerror(errno));
            goto fail_wipe;
        }
        if (r == 0)
            break;
        n += (size_t) r;
    }
    if (n > AUTH_KEY_FILE_MAX) {
        key_err(err, errlen, path, "too long for a secret of at most %d bytes", AUTH_SECRET_MAX);
        goto fail_wipe;
    }
    if ((why = key_decode(text, n, k)) != NULL) {
        key_err(err, errlen, path, "%s", why);
        goto fail_wipe;
    }
    OPENSSL_cleanse(text, sizeof text);
    close(fd);
    return 0;

fail_wipe:
    OPENSSL_cleanse(text, sizeof text);
    OPENSSL_cleanse(k, sizeof *k);
fail:
    close(fd);
    return -1;
}

/* fsync_dir_of(): makes PATH's directory entry durable. 0 or -1 (errno). */
static int fsync_dir_of(const char *path)
{
    char copy[PATH_MAX];
    int fd, rc;

    if (strlen(path) >= sizeof copy) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(copy, path);
    fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    rc = fsync(fd);
    close(fd);
    return rc;
}

int auth_key_create(const char *path, struct auth_key *k, char *err, size_t errlen)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t raw[AUTH_SECRET_DEFAULT];
    char text[2 * AUTH_SECRET_DEFAULT + 1];
    size_t off = 0;
    int fd;

    memset(k, 0, sizeof *k);
    if (RAND_bytes(raw, sizeof raw) != 1) {
        key_err(err, errlen, path, "RAND_bytes failed");
        return -1;
    }
    for (size_t i = 0; i < sizeof raw; i++) {
        text[2 * i] = hex[raw[i] >> 4];
        text[2 * i + 1] = hex[raw[i] & 15];
    }
    text[sizeof text - 1] = '\n';
    OPENSSL_cleanse(raw, sizeof raw);

    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        key_err(err, errlen, path, "cannot create: %s", strerror(errno));
        goto fail_wipe;
    }
    if (fchmod(fd, 0600) != 0) /* exactly 0600, whatever the umask left */
        goto fail_io;
    while (off < sizeof text) {
        ssize_t w = write(fd, text + off, sizeof text - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            goto fail_io;
        off += (size_t) w;
    }
    if (fsync(fd) != 0)
        goto fail_io;
    if (close(fd) != 0) {
        fd = -1;
        goto fail_io;
    }
    fd = -1;
    if (fsync_dir_of(path) != 0)
        goto fail_io;
    OPENSSL_cleanse(text, sizeof text);
    return auth_key_load(path, k, err, errlen);

fail_io:
    key_err(err, errlen, path, "cannot write: %s", strerror(errno));
    if (fd >= 0)
        close(fd);
    unlink(path);
fail_wipe:
    OPENSSL_cleanse(text, sizeof text);
    return -1;
}

/* ---- addresses ---- */

bool auth_address_ok(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > AUTH_ADDRESS_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char) s[i] < 0x21 || (unsigned char) s[i] > 0x7e)
            return false;
    return true;
}

/* purpose_ok(): 1..AUTH_PURPOSE_MAX printable bytes, no space. */
static bool purpose_ok(const char *p)
{
    size_t n;

    if (p == NULL)
        return false;
    n = strnlen(p, AUTH_PURPOSE_MAX + 1);
    return n <= AUTH_PURPOSE_MAX && auth_address_ok(p, n);
}

int auth_parse_ipv4(const char *address, struct sockaddr_in *sa)
{
    char host[INET_ADDRSTRLEN];
    const char *colon, *port;
    unsigned long p = 0;

    if (address == NULL || (colon = strrchr(address, ':')) == NULL)
        return AUTH_EINVAL;
    if ((size_t) (colon - address) >= sizeof host)
        return AUTH_EINVAL;
    memcpy(host, address, (size_t) (colon - address));
    host[colon - address] = '\0';
    port = colon + 1;
    if (*port == '\0' || strlen(port) > 5)
        return AUTH_EINVAL;
    for (const char *c = port; *c != '\0'; c++) {
        if (*c < '0' || *c > '9')
            return AUTH_EINVAL;
        p = p * 10 + (unsigned long) (*c - '0');
    }
    if (p == 0 || p > 65535)
        return AUTH_EINVAL;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t) p);
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) /* dotted quad only */
        return AUTH_EINVAL;
    return 0;
}

/* ---- the messages ---- */

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t) v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

void auth_challenge_write(uint8_t out[AUTH_CHALLENGE_LEN], const uint8_t ns[AUTH_NONCE_LEN])
{
    memcpy(out, AUTH_MAGIC, AUTH_MAGIC_LEN);
    out[AUTH_MAGIC_LEN] = AUTH_VERSION;
    memcpy(out + AUTH_MAGIC_LEN + 1, ns, AUTH_NONCE_LEN);
}

int auth_challenge_parse(const uint8_t *buf, size_t len, uint8_t ns[AUTH_NONCE_LEN])
{
    /* The magic is checked as far as it arrived, so that garbage fails early. */
    size_t m = len < AUTH_MAGIC_LEN ? len : AUTH_MAGIC_LEN;

    if (memcmp(buf, AUTH_MAGIC, m) != 0)
        return AUTH_EPROTO;
    if (len > AUTH_MAGIC_LEN && buf[AUTH_MAGIC_LEN] != AUTH_VERSION)
        return AUTH_EVERSION;
    if (len < AUTH_CHALLENGE_LEN)
        return 1;
    memcpy(ns, buf + AUTH_MAGIC_LEN + 1, AUTH_NONCE_LEN);
    return 0;
}

int auth_hello_parse(const uint8_t *buf, size_t len, struct auth_hello *h, size_t *need)
{
    size_t alen, total;
    const uint8_t *p;

    if (len >= 1 && buf[0] != AUTH_VERSION)
        return AUTH_EVERSION;
    if (len < AUTH_HELLO_HEAD) {
        *need = AUTH_HELLO_HEAD;
        return 1;
    }
    alen = buf[AUTH_HELLO_HEAD - 1];
    if (alen == 0)
        return AUTH_EPROTO;
    total = AUTH_HELLO_HEAD + alen + AUTH_NONCE_LEN + AUTH_MAC_LEN;
    if (len > AUTH_HELLO_HEAD) { /* the address, as far as it arrived */
        size_t got = len - AUTH_HELLO_HEAD < alen ? len - AUTH_HELLO_HEAD : alen;
        if (!auth_address_ok((const char *) buf + AUTH_HELLO_HEAD, got))
            return AUTH_EPROTO;
    }
    *need = total;
    if (len < total)
        return 1;

    p = buf;
    h->version = p[0];
    h->id = get64(p + 1);
    h->addr_len = (uint8_t) alen;
    p += AUTH_HELLO_HEAD;
    memcpy(h->addr, p, alen);
    h->addr[alen] = '\0';
    p += alen;
    memcpy(h->nc, p, AUTH_NONCE_LEN);
    p += AUTH_NONCE_LEN;
    memcpy(h->mac, p, AUTH_MAC_LEN);
    return 0;
}

int auth_hello_write(uint8_t *out, size_t cap, const struct auth_hello *h)
{
    size_t alen = strnlen(h->addr, sizeof h->addr);
    size_t total = AUTH_HELLO_HEAD + alen + AUTH_NONCE_LEN + AUTH_MAC_LEN;
    uint8_t *p = out;

    if (!auth_address_ok(h->addr, alen) || cap < total)
        return AUTH_EINVAL;
    p[0] = h->version;
    put64(p + 1, h->id);
    p[AUTH_HELLO_HEAD - 1] = (uint8_t) alen;
    p += AUTH_HELLO_HEAD;
    memcpy(p, h->addr, alen);
    p += alen;
    memcpy(p, h->nc, AUTH_NONCE_LEN);
    p += AUTH_NONCE_LEN;
    memcpy(p, h->mac, AUTH_MAC_LEN);
    return (int) total;
}

int auth_mac(const struct auth_key *k, enum auth_side side, const char *purpose,
             const uint8_t ns[AUTH_NONCE_LEN], const struct auth_hello *h,
             uint8_t out[AUTH_MAC_LEN])
{
    uint8_t t[AUTH_TRANSCRIPT_MAX], *p = t;
    size_t plen, alen;
    unsigned int mlen = 0;

    if (!auth_key_valid(k) || !purpose_ok(purpose))
        return AUTH_EINVAL;
    plen = strlen(purpose);
    alen = strnlen(h->addr, sizeof h->addr);
    if (!auth_address_ok(h->addr, alen))
        return AUTH_EINVAL;

    memcpy(p, side == AUTH_CLIENT ? auth_label_client : auth_label_server, AUTH_LABEL_LEN);
    p += AUTH_LABEL_LEN;
    *p++ = h->version;
    *p++ = (uint8_t) plen;
    memcpy(p, purpose, plen);
    p += plen;
    memcpy(p, ns, AUTH_NONCE_LEN);
    p += AUTH_NONCE_LEN;
    memcpy(p, h->nc, AUTH_NONCE_LEN);
    p += AUTH_NONCE_LEN;
    put64(p, h->id);
    p += 8;
    *p++ = (uint8_t) alen;
    memcpy(p, h->addr, alen);
    p += alen;

    if (HMAC(EVP_sha256(), k->bytes, (int) k->len, t, (size_t) (p - t), out, &mlen) == NULL ||
        mlen != AUTH_MAC_LEN)
        return AUTH_ECRYPTO;
    return 0;
}

bool auth_mac_equal(const uint8_t a[AUTH_MAC_LEN], const uint8_t b[AUTH_MAC_LEN])
{
    return CRYPTO_memcmp(a, b, AUTH_MAC_LEN) == 0;
}

/* ---- the handshake ---- */

enum auth_state {
    AS_SERVER_HELLO,     /* challenge written (maybe still in flight), reading the hello */
    AS_SERVER_PROOF,     /* hello verified, not reading, MACs being written */
    AS_CLIENT_CONNECT,   /* TCP connect in flight */
    AS_CLIENT_CHALLENGE, /* reading the challenge */
    AS_CLIENT_PROOF,     /* hello written (maybe still in flight), reading MACs */
    AS_CLIENT_VERIFIED,  /* MACs verified, not reading, waiting for our write */
    AS_DONE,             /* handed over: only the timer is left to close */
    AS_FAILING,          /* closing our handles; DONE fires from the last close cb */
};

/* Write slots: at most two writes of one side are ever in flight. */
enum { AUTH_W_FIRST = 0, AUTH_W_PROOF = 1 };

struct auth_req {
    enum auth_state state;
    const struct auth_key *key; /* borrowed: outlives the handshake (caller's promise) */
    char purpose[AUTH_PURPOSE_MAX + 1];
    auth_done_cb *done;
    void *arg;
    int status;       /* what DONE reports on failure */
    bool done_fired;  /* DONE was called: R goes when its last handle has closed */
    unsigned closing; /* handles closing; R is freed when this drops to 0 after DONE */
    unsigned writing; /* our writes in flight (their callbacks use R) */
    uv_tcp_t *tcp;    /* raft_malloc'd; ours until handed over, freed in on_tcp_closed */
    uv_timer_t timer; /* the deadline; always ours, closed before R is freed */
    uv_connect_t connect;
    uv_write_t writes[2];
    uint8_t ns[AUTH_NONCE_LEN];
    struct auth_hello hello;           /* client: ours; server: the peer's, once parsed */
    char target[AUTH_ADDRESS_MAX + 1]; /* client: the address we dial */
    uint8_t rx[AUTH_HELLO_MAX];        /* the message being read: exactly want bytes */
    size_t have, want;
    uint8_t tx[AUTH_HELLO_MAX]; /* challenge (server) or hello (client): lives until written */
    uint8_t tx_proof[AUTH_PROOF_LEN];
};

/* closed_one(): one of R's handles has closed. After the last one, DONE (unless a success
 * already fired it) and then R goes. */
static void closed_one(struct auth_req *r)
{
    if (--r->closing > 0)
        return;
    if (!r->done_fired) {
        r->done_fired = true;
        r->done(r->arg, NULL, r->status, 0, NULL);
    }
    free(r);
}

static void on_timer_closed(uv_handle_t *h)
{
    closed_one(h->data);
}

static void on_tcp_closed(uv_handle_t *h)
{
    struct auth_req *r = h->data;

    raft_free(h); /* raft_malloc'd in auth_connect() or by auth_accept()'s caller */
    r->tcp = NULL;
    closed_one(r);
}

/* fail(): closes everything we hold; DONE follows from the last close callback. */
static void fail(struct auth_req *r, int status)
{
    if (r->state == AS_FAILING || r->state == AS_DONE)
        return;
    r->state = AS_FAILING;
    r->status = status;
    if (r->tcp != NULL) {
        r->closing++;
        uv_close((uv_handle_t *) r->tcp, on_tcp_closed); /* pending writes: ECANCELED */
    }
    r->closing++;
    uv_close((uv_handle_t *) &r->timer, on_timer_closed);
}

/* succeed(): hands the stream over. Precondition: all read, not reading, no write left. */
static void succeed(struct auth_req *r)
{
    uv_tcp_t *tcp = r->tcp;
    bool server = r->state == AS_SERVER_PROOF;

    assert(r->writing == 0);
    r->state = AS_DONE;
    r->tcp = NULL;
    tcp->data = NULL;
    uv_timer_stop(&r->timer);
    r->done_fired = true;
    r->done(r->arg, tcp, 0, server ? r->hello.id : 0, server ? r->hello.addr : r->target);
    r->closing++;
    uv_close((uv_handle_t *) &r->timer, on_timer_closed);
}

static int uv_to_auth(int uverr)
{
    switch (uverr) {
    case UV_EOF:
    case UV_ECONNRESET:
    case UV_EPIPE:
        return AUTH_ECLOSED;
    case UV_ENOMEM:
    case UV_ENOBUFS:
        return AUTH_ENOMEM;
    default:
        return AUTH_EIO;
    }
}

static void on_timeout(uv_timer_t *t)
{
    struct auth_req *r = t->data;

    /* Still connecting: the peer is down or unreachable, not refusing us. */
    fail(r, r->state == AS_CLIENT_CONNECT ? AUTH_ECONNECT : AUTH_ETIMEDOUT);
}

static void on_write(uv_write_t *w, int status)
{
    struct auth_req *r = w->data;

    r->writing--;
    if (r->state == AS_FAILING)
        return;
    if (status < 0) {
        fail(r, uv_to_auth(status));
        return;
    }
    if (r->writing == 0 && (r->state == AS_SERVER_PROOF || r->state == AS_CLIENT_VERIFIED))
        succeed(r);
}

/* send_msg(): writes BUF[0..LEN) (which lives in R) in write slot SLOT. */
static int send_msg(struct auth_req *r, int slot, const uint8_t *buf, size_t len)
{
    uv_buf_t b = uv_buf_init((char *) buf, (unsigned) len);
    int rc;

    r->writes[slot].data = r;
    rc = uv_write(&r->writes[slot], (uv_stream_t *) r->tcp, &b, 1, on_write);
    if (rc != 0)
        return uv_to_auth(rc);
    r->writing++;
    return 0;
}

/* on_alloc(): exactly the bytes the current message still lacks, never more: the bytes
 * after the handshake belong to the next owner of the stream. */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct auth_req *r = h->data;

    (void) suggested;
    if (r->want > r->have && r->want <= sizeof r->rx)
        *buf = uv_buf_init((char *) r->rx + r->have, (unsigned) (r->want - r->have));
    else
        *buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS: cannot happen */
}

/* server_got_hello(): the hello is complete in rx: check it and answer. */
static void server_got_hello(struct auth_req *r)
{
    uint8_t mac[AUTH_MAC_LEN];
    int rc;

    if ((rc = auth_mac(r->key, AUTH_CLIENT, r->purpose, r->ns, &r->hello, mac)) != 0) {
        fail(r, rc == AUTH_EINVAL ? AUTH_EPROTO : rc);
        return;
    }
    if (!auth_mac_equal(mac, r->hello.mac)) {
        fail(r, AUTH_EPROOF);
        return;
    }
    uv_read_stop((uv_stream_t *) r->tcp);
    if ((rc = auth_mac(r->key, AUTH_SERVER, r->purpose, r->ns, &r->hello, r->tx_proof)) != 0) {
        fail(r, rc);
        return;
    }
    r->state = AS_SERVER_PROOF;
    if ((rc = send_msg(r, AUTH_W_PROOF, r->tx_proof, sizeof r->tx_proof)) != 0)
        fail(r, rc);
}

/* client_got_challenge(): Ns is known: write our hello and wait for MACs. */
static void client_got_challenge(struct auth_req *r)
{
    int rc, len;

    if ((rc = auth_mac(r->key, AUTH_CLIENT, r->purpose, r->ns, &r->hello, r->hello.mac)) != 0) {
        fail(r, rc);
        return;
    }
    if ((len = auth_hello_write(r->tx, sizeof r->tx, &r->hello)) < 0) {
        fail(r, len);
        return;
    }
    r->state = AS_CLIENT_PROOF;
    r->have = 0;
    r->want = AUTH_PROOF_LEN;
    if ((rc = send_msg(r, AUTH_W_FIRST, r->tx, (size_t) len)) != 0)
        fail(r, rc);
}

static void client_got_proof(struct auth_req *r)
{
    uint8_t mac[AUTH_MAC_LEN];
    int rc;

    if ((rc = auth_mac(r->key, AUTH_SERVER, r->purpose, r->ns, &r->hello, mac)) != 0) {
        fail(r, rc);
        return;
    }
    if (!auth_mac_equal(mac, r->rx)) {
        fail(r, AUTH_EPROOF);
        return;
    }
    uv_read_stop((uv_stream_t *) r->tcp);
    r->state = AS_CLIENT_VERIFIED;
    if (r->writing == 0)
        succeed(r);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct auth_req *r = s->data;
    size_t need;
    int rc;

    (void) buf;
    if (r->state == AS_FAILING)
        return;
    if (nread < 0) {
        fail(r, uv_to_auth((int) nread));
        return;
    }
    if (nread == 0)
        return; /* EAGAIN */
    r->have += (size_t) nread;
    switch (r->state) {
    case AS_SERVER_HELLO:
        /* Parsed on every read, so a bad version or address fails before the rest comes. */
        rc = auth_hello_parse(r->rx, r->have, &r->hello, &need);
        if (rc < 0)
            fail(r, rc);
        else if (rc == 1)
            r->want = need; /* > have, <= AUTH_HELLO_MAX */
        else
            server_got_hello(r);
        return;
    case AS_CLIENT_CHALLENGE:
        rc = auth_challenge_parse(r->rx, r->have, r->ns);
        if (rc < 0)
            fail(r, rc);
        else if (rc == 0)
            client_got_challenge(r);
        return;
    case AS_CLIENT_PROOF:
        if (r->have == r->want)
            client_got_proof(r);
        return;
    default:
        fail(r, AUTH_EPROTO); /* reading in a state that does not read: cannot happen */
        return;
    }
}

static int start_reading(struct auth_req *r)
{
    int rc = uv_read_start((uv_stream_t *) r->tcp, on_alloc, on_read);

    return rc == 0 ? 0 : uv_to_auth(rc);
}

/* req_new(): a request with its arguments checked and copied; no handle yet. */
static int req_new(const struct auth_key *k, const char *purpose, unsigned timeout_ms,
                   auth_done_cb *done, struct auth_req **out)
{
    struct auth_req *r;

    if (!auth_key_valid(k) || !purpose_ok(purpose) || timeout_ms == 0 || done == NULL)
        return AUTH_EINVAL;
    if ((r = calloc(1, sizeof *r)) == NULL)
        return AUTH_ENOMEM;
    r->key = k;
    strcpy(r->purpose, purpose); /* purpose_ok(): fits */
    r->done = done;
    *out = r;
    return 0;
}

/* arm(): the timer, on LOOP, for the whole handshake. From here on R fails through fail(). */
static void arm(struct auth_req *r, uv_loop_t *loop, unsigned timeout_ms)
{
    uv_timer_init(loop, &r->timer); /* cannot fail */
    r->timer.data = r;
    uv_timer_start(&r->timer, on_timeout, timeout_ms, 0);
}

int auth_accept(uv_tcp_t *tcp, const struct auth_key *k, const char *purpose, unsigned timeout_ms,
                auth_done_cb *done, void *arg, struct auth_req **out)
{
    struct auth_req *r;
    int rc;

    if (tcp == NULL)
        return AUTH_EINVAL;
    if ((rc = req_new(k, purpose, timeout_ms, done, &r)) != 0)
        return rc;
    if (RAND_bytes(r->ns, sizeof r->ns) != 1) {
        free(r);
        return AUTH_ECRYPTO;
    }
    r->arg = arg;
    r->state = AS_SERVER_HELLO;
    r->tcp = tcp;
    tcp->data = r;
    arm(r, tcp->loop, timeout_ms);
    if (out != NULL)
        *out = r;

    uv_tcp_nodelay(tcp, 1); /* small messages, each written once: no Nagle delay */
    auth_challenge_write(r->tx, r->ns);
    r->want = AUTH_HELLO_HEAD;
    if ((rc = send_msg(r, AUTH_W_FIRST, r->tx, AUTH_CHALLENGE_LEN)) != 0 ||
        (rc = start_reading(r)) != 0)
        fail(r, rc);
    return 0;
}

static void on_connect(uv_connect_t *c, int status)
{
    struct auth_req *r = c->data;
    int rc;

    if (r->state == AS_FAILING)
        return; /* closed under the connect: UV_ECANCELED */
    if (status < 0) {
        fail(r, AUTH_ECONNECT);
        return;
    }
    uv_tcp_nodelay(r->tcp, 1);
    r->state = AS_CLIENT_CHALLENGE;
    r->have = 0;
    r->want = AUTH_CHALLENGE_LEN;
    if ((rc = start_reading(r)) != 0)
        fail(r, rc);
}

int auth_connect(uv_loop_t *loop, const char *address, const struct auth_key *k,
                 const char *purpose, uint64_t my_id, const char *my_address, unsigned timeout_ms,
                 auth_done_cb *done, void *arg, struct auth_req **out)
{
    struct sockaddr_in sa;
    struct auth_req *r;
    int rc;

    if (loop == NULL || auth_parse_ipv4(address, &sa) != 0 || my_address == NULL ||
        !auth_address_ok(my_address, strnlen(my_address, AUTH_ADDRESS_MAX + 1)))
        return AUTH_EINVAL;
    if ((rc = req_new(k, purpose, timeout_ms, done, &r)) != 0)
        return rc;
    r->arg = arg;
    r->hello.version = AUTH_VERSION;
    r->hello.id = my_id;
    strcpy(r->hello.addr, my_address); /* auth_address_ok(): fits */
    r->hello.addr_len = (uint8_t) strlen(my_address);
    snprintf(r->target, sizeof r->target, "%s", address); /* parsed: at most 21 bytes */
    if (RAND_bytes(r->hello.nc, sizeof r->hello.nc) != 1) {
        free(r);
        return AUTH_ECRYPTO;
    }
    if ((r->tcp = raft_malloc(sizeof *r->tcp)) == NULL) {
        free(r);
        return AUTH_ENOMEM;
    }
    if ((rc = uv_tcp_init(loop, r->tcp)) != 0) {
        raft_free(r->tcp);
        free(r);
        return uv_to_auth(rc);
    }
    r->tcp->data = r;
    r->state = AS_CLIENT_CONNECT;
    arm(r, loop, timeout_ms);
    if (out != NULL)
        *out = r;

    r->connect.data = r;
    if (uv_tcp_connect(&r->connect, r->tcp, (const struct sockaddr *) &sa, on_connect) != 0)
        fail(r, AUTH_ECONNECT);
    return 0;
}

void auth_cancel(struct auth_req *r)
{
    /* After DONE R is gone and calling this is the caller's bug; inside a successful
     * DONE (R lives until its timer has closed) it is a no-op. */
    if (r == NULL || r->done_fired)
        return;
    if (r->state == AS_FAILING) {
        r->status = AUTH_ECANCELED; /* DONE has not fired yet: it reports the cancel */
        return;
    }
    fail(r, AUTH_ECANCELED);
}
