/*
 * tests/unit/raft/test_auth.c
 * The cluster handshake (raft/auth.c) and the authenticated Raft transport
 * (raft/transport.c), over real loopback TCP on 127.0.0.1 with ephemeral ports.
 *
 * The messages are checked against a transcript spelled out here from the wire format in
 * auth.h (not through auth.c's own encoder), byte by byte for the parsers. The handshake
 * runs real against real, and against raw peers on a helper thread (blocking sockets):
 * pipelined bytes after the handshake reach the next owner intact in both directions;
 * another secret, another purpose, garbage, a truncated hello, silence and a replayed
 * proof are refused with nothing sent after the challenge; the secret file is refused
 * when others may read it or it is not 16..64 bytes of hex. The transport runs real
 * libraft servers on one loop: they elect a leader and commit entries, also through a
 * flood of silent strangers (bounded, logged at a bounded rate), and a server with another
 * secret never hears a message. Every wait is bounded (WAIT_MS, socket timeouts), and
 * teardown stops whatever a failed test left running.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <poll.h>
#include <pthread.h>
#include <raft.h>
#include <raft/uv.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "auth.h"
#include "log.h"
#include "storage/tmpdir.h"
#include "transport.h"

#define WAIT_MS     8000 /* the longest any single wait may take */
#define SHORT_MS    300  /* handshake deadline in the tests that wait for it */
#define SOCK_WAIT_S 4    /* raw peers' socket timeouts */
#define PURPOSE     "raft"

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static void key_fill(struct auth_key *k, uint8_t seed, size_t len)
{
    memset(k, 0, sizeof *k);
    k->len = len;
    for (size_t i = 0; i < len; i++)
        k->bytes[i] = (uint8_t) (seed + i * 7);
}

/* ---- the wire format, spelled out independently of auth.c ---- */

static void be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t) v;
}

/* t_mac(): HMAC-SHA256(key, label | 1 | plen | purpose | Ns | Nc | id | alen | addr). */
static void t_mac(const struct auth_key *k, const char *label, const char *purpose,
                  const uint8_t *ns, const uint8_t *nc, uint64_t id, const char *addr,
                  uint8_t out[32])
{
    uint8_t t[1024];
    size_t n = 0;
    unsigned len = 0;

    memcpy(t + n, label, 16);
    n += 16;
    t[n++] = 1;
    t[n++] = (uint8_t) strlen(purpose);
    memcpy(t + n, purpose, strlen(purpose));
    n += strlen(purpose);
    memcpy(t + n, ns, 32);
    n += 32;
    memcpy(t + n, nc, 32);
    n += 32;
    be64(t + n, id);
    n += 8;
    t[n++] = (uint8_t) strlen(addr);
    memcpy(t + n, addr, strlen(addr));
    n += strlen(addr);
    assert_non_null(HMAC(EVP_sha256(), k->bytes, (int) k->len, t, n, out, &len));
    assert_int_equal(len, 32);
}

/* t_hello(): a client hello for the challenge nonce NS into OUT; returns its length. */
static size_t t_hello(uint8_t *out, const struct auth_key *k, const char *purpose,
                      const uint8_t *ns, uint64_t id, const char *addr)
{
    uint8_t nc[32];
    size_t n = 0, alen = strlen(addr);

    assert_int_equal(RAND_bytes(nc, sizeof nc), 1);
    out[n++] = 1;
    be64(out + n, id);
    n += 8;
    out[n++] = (uint8_t) alen;
    memcpy(out + n, addr, alen);
    n += alen;
    memcpy(out + n, nc, 32);
    n += 32;
    t_mac(k, "tern-auth-client", purpose, ns, nc, id, addr, out + n);
    return n + 32;
}

/* ---- blocking socket helpers for the raw peers ---- */

static void sock_timeouts(int fd)
{
    struct timeval tv = {.tv_sec = SOCK_WAIT_S};
    int one = 1;

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int raw_connect(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t) port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *) &sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    sock_timeouts(fd);
    return fd;
}

/* raw_listen(): a blocking listener on 127.0.0.1, ephemeral port into *PORT. */
static int raw_listen(int *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *) &sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static bool send_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t) n;
    }
    return true;
}

/* read_exact(): up to N bytes, stopping early at EOF, error or timeout; returns the count. */
static size_t read_exact(int fd, uint8_t *buf, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t r = recv(fd, buf + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t) r;
    }
    return got;
}

/* read_to_end(): everything until the peer closes (*CLOSED: EOF or reset) or a timeout
 * (*CLOSED false); at most CAP bytes are kept, the rest counted in *LEN too. */
static void read_to_end(int fd, uint8_t *buf, size_t cap, size_t *len, bool *closed)
{
    uint8_t scratch[512];

    *len = 0;
    *closed = false;
    for (;;) {
        ssize_t r = recv(fd, scratch, sizeof scratch, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0 || (r < 0 && errno == ECONNRESET)) {
            *closed = true;
            return;
        }
        if (r < 0)
            return; /* timeout */
        for (ssize_t i = 0; i < r; i++, (*len)++)
            if (*len < cap)
                buf[*len] = scratch[i];
    }
}

/* ---- a raw client (helper thread): a stranger, or a member written by hand ---- */

enum raw_mode {
    RAW_HELLO,       /* a hello computed here (key, purpose, id, addr) + extra, one send() */
    RAW_TRICKLE,     /* the same hello, one byte per send() */
    RAW_TRUNC_CLOSE, /* its first trunc bytes, then shutdown(SHUT_WR) */
    RAW_TRUNC_IDLE,  /* its first trunc bytes, then silence */
    RAW_BYTES,       /* bytes[] as they are (garbage, a replay) */
    RAW_SILENT,      /* nothing */
};

struct raw {
    pthread_t th;
    int port;
    enum raw_mode mode;
    const struct auth_key *key;
    const char *purpose;
    uint64_t id;
    const char *addr;
    uint8_t extra[64]; /* sent right after the hello, in the same send() */
    size_t extra_len;
    uint8_t bytes[4096];
    size_t bytes_len;
    size_t trunc;
    /* what happened */
    uint8_t challenge[AUTH_CHALLENGE_LEN];
    size_t challenge_len;
    uint8_t hello[AUTH_HELLO_MAX]; /* the hello as sent (for a replay) */
    size_t hello_len;
    uint8_t rx[512]; /* everything after the challenge */
    size_t rx_len;
    bool closed;
    atomic_bool finished;
    bool started, joined;
};

static void *raw_client_main(void *arg)
{
    struct raw *w = arg;
    uint8_t out[AUTH_HELLO_MAX + 64];
    size_t n;
    int fd = raw_connect(w->port);

    if (fd < 0)
        goto out;
    w->challenge_len = read_exact(fd, w->challenge, AUTH_CHALLENGE_LEN);
    switch (w->mode) {
    case RAW_HELLO:
    case RAW_TRICKLE:
    case RAW_TRUNC_CLOSE:
    case RAW_TRUNC_IDLE:
        if (w->challenge_len != AUTH_CHALLENGE_LEN)
            break;
        w->hello_len = t_hello(w->hello, w->key, w->purpose, w->challenge + 9, w->id, w->addr);
        memcpy(out, w->hello, w->hello_len);
        memcpy(out + w->hello_len, w->extra, w->extra_len);
        n = w->hello_len + w->extra_len;
        if (w->mode == RAW_HELLO) {
            send_all(fd, out, n);
        } else if (w->mode == RAW_TRICKLE) {
            for (size_t i = 0; i < n; i++) {
                send_all(fd, out + i, 1);
                usleep(1000);
            }
        } else {
            send_all(fd, out, w->trunc);
            if (w->mode == RAW_TRUNC_CLOSE)
                shutdown(fd, SHUT_WR);
        }
        break;
    case RAW_BYTES:
        send_all(fd, w->bytes, w->bytes_len);
        break;
    case RAW_SILENT:
        break;
    }
    read_to_end(fd, w->rx, sizeof w->rx, &w->rx_len, &w->closed);
    close(fd);
out:
    atomic_store(&w->finished, true);
    return NULL;
}

/* ---- a raw server (helper thread) for the client side ---- */

enum raws_mode {
    RS_NORMAL,      /* challenge, read the hello, answer MACs made with key (+ extra) */
    RS_BAD_MAGIC,   /* a challenge with another magic */
    RS_SILENT,      /* accept and say nothing */
    RS_CLOSE_EARLY, /* challenge, then close */
};

struct raws {
    pthread_t th;
    int lfd, port;
    enum raws_mode mode;
    const struct auth_key *key;
    const char *purpose;
    uint8_t extra[64]; /* sent right after the MACs, in the same send() */
    size_t extra_len;
    /* what happened */
    bool accepted;
    uint8_t hello[AUTH_HELLO_MAX];
    size_t hello_len;
    bool hello_ok; /* its MAC verified here */
    uint64_t id;
    char addr[AUTH_ADDRESS_MAX + 1];
    uint8_t rx[512]; /* after the hello */
    size_t rx_len;
    bool closed;
    atomic_bool finished;
    bool started, joined;
};

static void *raw_server_main(void *arg)
{
    struct raws *s = arg;
    struct pollfd p = {.fd = s->lfd, .events = POLLIN};
    uint8_t ch[AUTH_CHALLENGE_LEN], out[32 + 64], mac[32];
    int fd = -1;

    if (poll(&p, 1, SOCK_WAIT_S * 1000) != 1 || (fd = accept(s->lfd, NULL, NULL)) < 0)
        goto out;
    sock_timeouts(fd);
    s->accepted = true;
    if (s->mode == RS_SILENT)
        goto rest;
    memcpy(ch, "TERNAUTH", 8);
    ch[8] = 1;
    RAND_bytes(ch + 9, 32);
    if (s->mode == RS_BAD_MAGIC)
        ch[0] = 'X';
    send_all(fd, ch, sizeof ch);
    if (s->mode == RS_CLOSE_EARLY)
        goto done;
    s->hello_len = read_exact(fd, s->hello, AUTH_HELLO_HEAD);
    if (s->hello_len == AUTH_HELLO_HEAD) {
        size_t alen = s->hello[9];
        s->hello_len += read_exact(fd, s->hello + AUTH_HELLO_HEAD, alen + 64);
        if (s->hello_len == AUTH_HELLO_HEAD + alen + 64) {
            s->id = 0;
            for (int i = 1; i <= 8; i++)
                s->id = s->id << 8 | s->hello[i];
            memcpy(s->addr, s->hello + 10, alen);
            s->addr[alen] = '\0';
            t_mac(s->key, "tern-auth-client", s->purpose, ch + 9, s->hello + 10 + alen, s->id,
                  s->addr, mac);
            s->hello_ok = memcmp(mac, s->hello + 10 + alen + 32, 32) == 0;
            t_mac(s->key, "tern-auth-server", s->purpose, ch + 9, s->hello + 10 + alen, s->id,
                  s->addr, out);
            memcpy(out + 32, s->extra, s->extra_len);
            send_all(fd, out, 32 + s->extra_len);
        }
    }
rest:
    read_to_end(fd, s->rx, sizeof s->rx, &s->rx_len, &s->closed);
done:
    close(fd);
out:
    atomic_store(&s->finished, true);
    return NULL;
}

/* ---- the uv side: a listener running auth_accept(), clients running auth_connect() ---- */

struct result {
    unsigned calls;
    int status;
    uint64_t id;
    bool addr_null;
    char addr[AUTH_ADDRESS_MAX + 1];
    uv_tcp_t *tcp; /* handed over to the test, closed by it */
};

/* What the test reads from a handed-over stream. */
struct sink {
    uint8_t buf[512];
    size_t len;
    bool eof;
    char tmp[64];
};

struct fx {
    uv_loop_t loop;
    uv_timer_t guard; /* wakes uv_run() so that waits can check the clock */
    uv_tcp_t listener;
    int port;
    char address[32]; /* the listener's "127.0.0.1:port" */
    struct auth_key skey, ckey;
    const char *spurpose;
    unsigned stimeout;
    struct auth_req *sreq; /* the latest server handshake */
    struct result srv, cli;
    const char *srv_say, *cli_say; /* written from DONE at once, if set */
    struct sink ssink, csink;
    char dir[TMPDIR_MAX];
    /* raw peers: on the heap, so that a thread outliving a failed test writes into memory
     * of its own; teardown joins and frees them */
    struct raw *raw[8];
    struct raws *raws[8];
    unsigned n_raw, n_raws;
    /* a libraft cluster on the loop (test_transport_*): teardown stops what a failed test
     * left running, then frees it */
    void *cluster;
    void (*cluster_abort)(struct fx *f);
};

static struct fx *fx_of(uv_handle_t *h)
{
    return h->loop->data;
}

static void on_free(uv_handle_t *h)
{
    raft_free(h);
}

static void record(struct result *r, uv_tcp_t *tcp, int status, uint64_t id, const char *addr)
{
    r->calls++;
    r->status = status;
    r->id = id;
    r->addr_null = addr == NULL;
    snprintf(r->addr, sizeof r->addr, "%s", addr != NULL ? addr : "");
    r->tcp = tcp;
}

static void say(uv_tcp_t *tcp, const char *msg)
{
    uv_buf_t b = uv_buf_init((char *) msg, (unsigned) strlen(msg));

    assert_int_equal(uv_try_write((uv_stream_t *) tcp, &b, 1), (int) strlen(msg));
}

static void on_srv_done(void *arg, uv_tcp_t *tcp, int status, uint64_t id, const char *addr)
{
    struct fx *f = arg;

    record(&f->srv, tcp, status, id, addr);
    f->sreq = NULL;
    if (tcp != NULL && f->srv_say != NULL)
        say(tcp, f->srv_say);
}

static void on_cli_done(void *arg, uv_tcp_t *tcp, int status, uint64_t id, const char *addr)
{
    struct fx *f = arg;

    record(&f->cli, tcp, status, id, addr);
    if (tcp != NULL && f->cli_say != NULL)
        say(tcp, f->cli_say);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct fx *f = fx_of((uv_handle_t *) server);
    uv_tcp_t *tcp = raft_malloc(sizeof *tcp);

    assert_int_equal(status, 0);
    assert_non_null(tcp);
    uv_tcp_init(&f->loop, tcp);
    assert_int_equal(uv_accept(server, (uv_stream_t *) tcp), 0);
    assert_int_equal(auth_accept(tcp, &f->skey, f->spurpose, f->stimeout, on_srv_done, f, &f->sreq),
                     0);
}

static void sink_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct sink *s = h->data;

    *buf = uv_buf_init(s->tmp, sizeof s->tmp);
}

static void sink_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct sink *s = st->data;

    if (n < 0) {
        s->eof = true;
        uv_read_stop(st);
        return;
    }
    for (ssize_t i = 0; i < n && s->len < sizeof s->buf; i++)
        s->buf[s->len++] = (uint8_t) buf->base[i];
}

static void sink_start(uv_tcp_t *tcp, struct sink *s)
{
    tcp->data = s;
    assert_int_equal(uv_read_start((uv_stream_t *) tcp, sink_alloc, sink_read), 0);
}

static void close_tcp(uv_tcp_t **tcp)
{
    if (*tcp != NULL) {
        uv_close((uv_handle_t *) *tcp, on_free);
        *tcp = NULL;
    }
}

static void on_guard(uv_timer_t *t)
{
    (void) t;
}

typedef bool pred_fn(struct fx *f, const void *arg);

static bool sreq_set(struct fx *f, const void *arg)
{
    return f->sreq != NULL;
}

static bool sreq_unset(struct fx *f, const void *arg)
{
    return f->sreq == NULL;
}

/* run_until(): runs the loop until PRED holds; false after MS. */
static bool run_until(struct fx *f, pred_fn *pred, const void *arg, unsigned ms)
{
    uint64_t deadline = mono_ms() + ms;
    bool ok;

    uv_timer_start(&f->guard, on_guard, 5, 5);
    while (!(ok = pred(f, arg)) && mono_ms() < deadline)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&f->guard);
    return ok;
}

static bool result_in(struct fx *f, const void *arg)
{
    return ((const struct result *) arg)->calls > 0;
}

static bool both_done(struct fx *f, const void *arg)
{
    return f->srv.calls > 0 && f->cli.calls > 0;
}

static bool flag_set(struct fx *f, const void *arg)
{
    return atomic_load((atomic_bool *) (uintptr_t) arg);
}

static bool never(struct fx *f, const void *arg)
{
    return false;
}

/* run_for(): runs the loop for MS. */
static void run_for(struct fx *f, unsigned ms)
{
    run_until(f, never, NULL, ms);
}

/* sink_wait(): until S holds at least N bytes. */
static bool sink_wait(struct fx *f, struct sink *s, size_t n)
{
    uint64_t deadline = mono_ms() + WAIT_MS;

    uv_timer_start(&f->guard, on_guard, 5, 5);
    while (s->len < n && !s->eof && mono_ms() < deadline)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&f->guard);
    return s->len >= n;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    struct sockaddr_in sa;
    int len = sizeof sa;

    if (f == NULL || uv_loop_init(&f->loop) != 0)
        return -1;
    f->loop.data = f;
    uv_timer_init(&f->loop, &f->guard);
    uv_tcp_init(&f->loop, &f->listener);
    uv_ip4_addr("127.0.0.1", 0, &sa);
    if (uv_tcp_bind(&f->listener, (struct sockaddr *) &sa, 0) != 0 ||
        uv_listen((uv_stream_t *) &f->listener, 16, on_connection) != 0 ||
        uv_tcp_getsockname(&f->listener, (struct sockaddr *) &sa, &len) != 0)
        return -1;
    f->port = ntohs(sa.sin_port);
    snprintf(f->address, sizeof f->address, "127.0.0.1:%d", f->port);
    key_fill(&f->skey, 1, 32);
    key_fill(&f->ckey, 1, 32);
    f->spurpose = PURPOSE;
    f->stimeout = 5000;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    if (f->sreq != NULL)
        auth_cancel(f->sreq);
    close_tcp(&f->srv.tcp);
    close_tcp(&f->cli.tcp);
    if (f->cluster_abort != NULL)
        f->cluster_abort(f);
    uv_close((uv_handle_t *) &f->listener, NULL);
    uv_close((uv_handle_t *) &f->guard, NULL);
    /* Bounded, even after a failed test: what is left are handshake deadlines at most. */
    for (uint64_t deadline = mono_ms() + 2 * WAIT_MS;
         uv_loop_alive(&f->loop) && mono_ms() < deadline; usleep(1000))
        uv_run(&f->loop, UV_RUN_NOWAIT);
    log_set_fd(2); /* test_transport_intruder's file, if it failed before setting it back */
    if (f->dir[0] != '\0')
        tmpdir_remove(f->dir);
    if (uv_loop_alive(&f->loop)) {
        fprintf(stderr, "teardown: handles still open on the loop\n");
        return -1; /* leaks the fixture: the loop cannot be freed under live handles */
    }
    free(f->cluster);
    /* Raw peers of a failed test: their socket timeouts bound these joins. */
    for (unsigned i = 0; i < f->n_raw; i++) {
        if (f->raw[i]->started && !f->raw[i]->joined)
            pthread_join(f->raw[i]->th, NULL);
        free(f->raw[i]);
    }
    for (unsigned i = 0; i < f->n_raws; i++) {
        if (f->raws[i]->started && !f->raws[i]->joined)
            pthread_join(f->raws[i]->th, NULL);
        if (f->raws[i]->lfd >= 0)
            close(f->raws[i]->lfd);
        free(f->raws[i]);
    }
    assert_int_equal(uv_loop_close(&f->loop), 0); /* no handle left behind */
    free(f);
    return 0;
}

static struct raw *raw_new(struct fx *f)
{
    struct raw *w = calloc(1, sizeof *w);

    assert_non_null(w);
    assert_true(f->n_raw < sizeof f->raw / sizeof *f->raw);
    f->raw[f->n_raw++] = w;
    return w;
}

static struct raws *raws_new(struct fx *f, const struct auth_key *key)
{
    struct raws *s = calloc(1, sizeof *s);

    assert_non_null(s);
    assert_true(f->n_raws < sizeof f->raws / sizeof *f->raws);
    f->raws[f->n_raws++] = s;
    s->key = key;
    s->lfd = -1;
    return s;
}

static void raw_start(struct raw *w, struct fx *f, enum raw_mode mode)
{
    w->port = f->port;
    w->mode = mode;
    if (w->key == NULL)
        w->key = &f->ckey;
    if (w->purpose == NULL)
        w->purpose = PURPOSE;
    if (w->addr == NULL)
        w->addr = "10.0.0.7:9001";
    atomic_init(&w->finished, false);
    assert_int_equal(pthread_create(&w->th, NULL, raw_client_main, w), 0);
    w->started = true;
}

/* raw_join(): the raw client is done, and so is the server handshake it had: the peer
 * sees the close as soon as uv_close() runs, DONE comes a loop iteration later. */
static void raw_join(struct fx *f, struct raw *w)
{
    assert_true(run_until(f, flag_set, &w->finished, WAIT_MS));
    pthread_join(w->th, NULL);
    w->joined = true;
    assert_true(run_until(f, sreq_unset, NULL, WAIT_MS));
}

static void raws_start(struct raws *s, enum raws_mode mode)
{
    assert_true(s->lfd < 0);
    s->lfd = raw_listen(&s->port);
    s->mode = mode;
    if (s->purpose == NULL)
        s->purpose = PURPOSE;
    atomic_init(&s->finished, false);
    assert_int_equal(pthread_create(&s->th, NULL, raw_server_main, s), 0);
    s->started = true;
}

static void raws_join(struct fx *f, struct raws *s)
{
    assert_true(run_until(f, flag_set, &s->finished, WAIT_MS));
    pthread_join(s->th, NULL);
    s->joined = true;
}

/* connect_to(): auth_connect() from the test to PORT as node 7, "10.0.0.7:9001". */
static void connect_to(struct fx *f, int port, const char *purpose, unsigned timeout,
                       struct auth_req **req)
{
    char address[32];

    snprintf(address, sizeof address, "127.0.0.1:%d", port);
    assert_int_equal(auth_connect(&f->loop, address, &f->ckey, purpose, 7, "10.0.0.7:9001", timeout,
                                  on_cli_done, f, req),
                     0);
}

/* refused_quietly(): the raw client got the challenge and then only the close. */
static void refused_quietly(const struct raw *w)
{
    assert_int_equal(w->challenge_len, AUTH_CHALLENGE_LEN);
    assert_memory_equal(w->challenge, "TERNAUTH\x01", 9);
    assert_int_equal(w->rx_len, 0);
    assert_true(w->closed);
}

/* ---- the messages ---- */

static void sample_hello(struct auth_hello *h)
{
    memset(h, 0, sizeof *h);
    h->version = AUTH_VERSION;
    h->id = 0x0102030405060708ull;
    strcpy(h->addr, "192.168.10.20:9001");
    h->addr_len = (uint8_t) strlen(h->addr);
    for (int i = 0; i < AUTH_NONCE_LEN; i++)
        h->nc[i] = (uint8_t) (0x40 + i);
    for (int i = 0; i < AUTH_MAC_LEN; i++)
        h->mac[i] = (uint8_t) (0x80 + i);
}

/* A hello fed one byte more at a time asks for more until it is whole, and never asks
 * for more than it is; then it parses to exactly what was written. */
static void test_hello_bytewise(void **state)
{
    struct auth_hello h, got;
    uint8_t buf[AUTH_HELLO_MAX + 8];
    size_t need = 0;
    int n;

    (void) state;
    sample_hello(&h);
    n = auth_hello_write(buf, sizeof buf, &h);
    assert_int_equal(n, AUTH_HELLO_HEAD + 18 + 32 + 32);
    assert_int_equal(buf[0], 1);
    assert_memory_equal(buf + 1, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
    assert_int_equal(buf[9], 18);
    assert_memory_equal(buf + 10, "192.168.10.20:9001", 18);
    for (size_t len = 0; len < (size_t) n; len++) {
        assert_int_equal(auth_hello_parse(buf, len, &got, &need), 1);
        assert_true(need > len);
        assert_int_equal(need, len < AUTH_HELLO_HEAD ? AUTH_HELLO_HEAD : (size_t) n);
    }
    memset(buf + n, 0xee, 8); /* what follows a hello is not its business */
    memset(&got, 0, sizeof got);
    assert_int_equal(auth_hello_parse(buf, (size_t) n + 8, &got, &need), 0);
    assert_int_equal(need, n);
    assert_int_equal(got.version, 1);
    assert_true(got.id == h.id);
    assert_int_equal(got.addr_len, 18);
    assert_string_equal(got.addr, h.addr);
    assert_memory_equal(got.nc, h.nc, 32);
    assert_memory_equal(got.mac, h.mac, 32);

    /* The longest address there is. */
    memset(h.addr, 'a', AUTH_ADDRESS_MAX);
    h.addr[AUTH_ADDRESS_MAX] = '\0';
    assert_int_equal(auth_hello_write(buf, sizeof buf, &h), AUTH_HELLO_MAX);
    assert_int_equal(auth_hello_parse(buf, AUTH_HELLO_MAX, &got, &need), 0);
    assert_int_equal(got.addr_len, AUTH_ADDRESS_MAX);
    assert_int_equal(auth_hello_write(buf, AUTH_HELLO_MAX - 1, &h), AUTH_EINVAL);
    h.addr[0] = '\0';
    assert_int_equal(auth_hello_write(buf, sizeof buf, &h), AUTH_EINVAL);
}

/* Bad hellos fail as soon as the bad byte is there, not when the whole hello is. */
static void test_hello_bad(void **state)
{
    struct auth_hello h, got;
    uint8_t buf[AUTH_HELLO_MAX];
    size_t need;
    int n;

    (void) state;
    sample_hello(&h);
    n = auth_hello_write(buf, sizeof buf, &h);

    buf[0] = 2;
    assert_int_equal(auth_hello_parse(buf, 1, &got, &need), AUTH_EVERSION);
    buf[0] = 'G';
    assert_int_equal(auth_hello_parse(buf, 1, &got, &need), AUTH_EVERSION);
    buf[0] = 1;

    buf[9] = 0; /* empty address */
    assert_int_equal(auth_hello_parse(buf, AUTH_HELLO_HEAD, &got, &need), AUTH_EPROTO);
    buf[9] = 18;

    static const uint8_t bad[] = {' ', '\n', '\0', 0x7f, 0x80, 0xff};
    for (size_t i = 0; i < sizeof bad; i++) {
        uint8_t save = buf[15];
        buf[15] = bad[i];
        assert_int_equal(auth_hello_parse(buf, 15, &got, &need), 1); /* not there yet */
        assert_int_equal(auth_hello_parse(buf, 16, &got, &need), AUTH_EPROTO);
        assert_int_equal(auth_hello_parse(buf, (size_t) n, &got, &need), AUTH_EPROTO);
        buf[15] = save;
    }
    assert_int_equal(auth_hello_parse(buf, (size_t) n, &got, &need), 0);
}

static void test_challenge(void **state)
{
    uint8_t ns[AUTH_NONCE_LEN], got[AUTH_NONCE_LEN], buf[AUTH_CHALLENGE_LEN];

    (void) state;
    for (int i = 0; i < AUTH_NONCE_LEN; i++)
        ns[i] = (uint8_t) (i * 3);
    auth_challenge_write(buf, ns);
    assert_memory_equal(buf, "TERNAUTH\x01", 9);
    assert_memory_equal(buf + 9, ns, 32);
    for (size_t len = 0; len < sizeof buf; len++)
        assert_int_equal(auth_challenge_parse(buf, len, got), 1);
    assert_int_equal(auth_challenge_parse(buf, sizeof buf, got), 0);
    assert_memory_equal(got, ns, 32);

    buf[0] = 'X';
    assert_int_equal(auth_challenge_parse(buf, 1, got), AUTH_EPROTO);
    buf[0] = 'T';
    buf[7] = 'h';
    assert_int_equal(auth_challenge_parse(buf, 7, got), 1);
    assert_int_equal(auth_challenge_parse(buf, 8, got), AUTH_EPROTO);
    buf[7] = 'H';
    buf[8] = 2;
    assert_int_equal(auth_challenge_parse(buf, 9, got), AUTH_EVERSION);
}

/* auth_mac() is the transcript of auth.h, and every field of it matters. */
static void test_mac(void **state)
{
    struct auth_key k, k2;
    struct auth_hello h, h2;
    uint8_t ns[32], ns2[32], mine[32], want[32], other[32];

    (void) state;
    key_fill(&k, 9, 32);
    sample_hello(&h);
    memset(ns, 0x11, sizeof ns);
    assert_int_equal(auth_mac(&k, AUTH_CLIENT, "raft", ns, &h, mine), 0);
    t_mac(&k, "tern-auth-client", "raft", ns, h.nc, h.id, h.addr, want);
    assert_memory_equal(mine, want, 32);
    assert_int_equal(auth_mac(&k, AUTH_SERVER, "raft", ns, &h, mine), 0);
    t_mac(&k, "tern-auth-server", "raft", ns, h.nc, h.id, h.addr, want);
    assert_memory_equal(mine, want, 32);
    assert_true(auth_mac_equal(mine, want));

    assert_int_equal(auth_mac(&k, AUTH_CLIENT, "raft", ns, &h, mine), 0);
    assert_int_equal(auth_mac(&k, AUTH_CLIENT, "rpc", ns, &h, other), 0);
    assert_false(auth_mac_equal(mine, other));
    memcpy(ns2, ns, 32);
    ns2[31] ^= 1;
    assert_int_equal(auth_mac(&k, AUTH_CLIENT, "raft", ns2, &h, other), 0);
    assert_false(auth_mac_equal(mine, other));
    h2 = h;
    h2.nc[0] ^= 1;
    assert_int_equal(auth_mac(&k, AUTH_CLIENT, "raft", ns, &h2, other), 0);
    assert_false(auth_mac_equal(mine, other));
    h2 = h;
    h2.id++;
    assert_int_equal(auth_mac(&k, AUTH_CLIENT, "raft", ns, &h2, other), 0);
    assert_false(auth_mac_equal(mine, other));
    h2 = h;
    h2.addr[0] = '2';
    assert_int_equal(auth_mac(&k, AUTH_CLIENT, "raft", ns, &h2, other), 0);
    assert_false(auth_mac_equal(mine, other));
    key_fill(&k2, 10, 32);
    assert_int_equal(auth_mac(&k2, AUTH_CLIENT, "raft", ns, &h, other), 0);
    assert_false(auth_mac_equal(mine, other));

    k2.len = AUTH_SECRET_MIN - 1;
    assert_int_equal(auth_mac(&k2, AUTH_CLIENT, "raft", ns, &h, other), AUTH_EINVAL);
    assert_int_equal(auth_mac(&k, AUTH_CLIENT, "", ns, &h, other), AUTH_EINVAL);
    assert_int_equal(auth_mac(&k, AUTH_CLIENT, "ra ft", ns, &h, other), AUTH_EINVAL);
}

static void test_parse_ipv4(void **state)
{
    static const char *good[] = {"127.0.0.1:1", "0.0.0.0:65535", "10.1.2.3:9001"};
    static const char *bad[] = {
        "127.0.0.1",     "127.0.0.1:",   "127.0.0.1:0",      "127.0.0.1:65536", "127.0.0.1:+80",
        "127.0.0.1:80x", "localhost:80", "[::1]:80",         "1.2.3:80",        "1.2.3.4.5:80",
        "256.1.1.1:80",  ":80",          "127.0.0.1:123456", "01.2.3.4:80",     ""};
    struct sockaddr_in sa;

    (void) state;
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        assert_int_equal(auth_parse_ipv4(good[i], &sa), 0);
    assert_int_equal(auth_parse_ipv4("10.1.2.3:9001", &sa), 0);
    assert_int_equal(ntohs(sa.sin_port), 9001);
    assert_int_equal(ntohl(sa.sin_addr.s_addr), 0x0a010203);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (auth_parse_ipv4(bad[i], &sa) != AUTH_EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
    assert_int_equal(auth_parse_ipv4(NULL, &sa), AUTH_EINVAL);
}

static void test_strerror(void **state)
{
    (void) state;
    for (int i = 0; i >= AUTH_ECRYPTO; i--) {
        assert_non_null(auth_strerror(i));
        for (int j = 0; j > i; j--)
            assert_string_not_equal(auth_strerror(i), auth_strerror(j));
    }
    assert_non_null(auth_strerror(-1000));
}

/* ---- the secret file ---- */

static void write_file(const char *path, const char *text, size_t len, mode_t mode)
{
    int fd;

    unlink(path); /* the last one may be 0400 */
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t) len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static void hex_text(char *out, size_t bytes)
{
    for (size_t i = 0; i < bytes; i++)
        sprintf(out + 2 * i, "%02x", (unsigned) (i * 37 + 5) & 0xff);
}

static void test_key_create_load(void **state)
{
    struct fx *f = *state;
    char path[TMPDIR_MAX], err[256] = "", text[200];
    struct auth_key k, k2;
    struct stat st;
    FILE *fp;
    size_t n;

    assert_int_equal(tmpdir_make(f->dir, "authkey"), 0);
    assert_int_equal(tmpdir_join(path, f->dir, "secret"), 0);
    if (auth_key_create(path, &k, err, sizeof err) != 0)
        fail_msg("auth_key_create: %s", err);
    assert_int_equal(k.len, AUTH_SECRET_DEFAULT);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    fp = fopen(path, "r");
    assert_non_null(fp);
    n = fread(text, 1, sizeof text, fp);
    fclose(fp);
    assert_int_equal(n, 2 * AUTH_SECRET_DEFAULT + 1);
    assert_int_equal(text[n - 1], '\n');
    for (size_t i = 0; i + 1 < n; i++)
        assert_non_null(strchr("0123456789abcdef", text[i]));
    assert_int_equal(auth_key_load(path, &k2, err, sizeof err), 0);
    assert_int_equal(k2.len, k.len);
    assert_memory_equal(k2.bytes, k.bytes, k.len);

    /* Never over an existing file. */
    assert_int_equal(auth_key_create(path, &k2, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot create"));
    assert_int_equal(auth_key_load(path, &k2, err, sizeof err), 0);
    assert_memory_equal(k2.bytes, k.bytes, k.len);
}

static void test_key_load_refuses(void **state)
{
    struct fx *f = *state;
    char path[TMPDIR_MAX], err[256], text[300];
    struct auth_key k;

    assert_int_equal(tmpdir_make(f->dir, "authkey"), 0);
    assert_int_equal(tmpdir_join(path, f->dir, "secret"), 0);

    /* What it takes: 16..64 bytes of hex, one final LF or CRLF, mode 600 or 400. */
    hex_text(text, 16);
    write_file(path, text, 32, 0400);
    assert_int_equal(auth_key_load(path, &k, err, sizeof err), 0);
    assert_int_equal(k.len, 16);
    assert_int_equal(k.bytes[1], 42);
    hex_text(text, 64);
    strcpy(text + 128, "\r\n");
    write_file(path, text, 130, 0600);
    assert_int_equal(auth_key_load(path, &k, err, sizeof err), 0);
    assert_int_equal(k.len, 64);
    for (size_t i = 0; i < 64; i++)
        text[i] = (char) toupper((unsigned char) text[i]);
    write_file(path, text, 64, 0600);
    assert_int_equal(auth_key_load(path, &k, err, sizeof err), 0);
    assert_int_equal(k.len, 32);

    struct {
        size_t bytes;    /* of hex */
        const char *end; /* appended */
        mode_t mode;
        const char *why;
    } bad[] = {
        {32, "\n", 0640, "group or other"}, {32, "\n", 0604, "group or other"},
        {32, "\n", 0620, "group or other"}, {15, "\n", 0600, "16 to 64"},
        {65, "", 0600, "16 to 64"},         {70, "", 0600, "too long"},
        {32, "\n\n", 0600, "not hex"},      {32, " ", 0600, "not hex"},
        {32, "g", 0600, "not hex"},         {32, "a", 0600, "odd"},
        {32, "0g", 0600, "not hex"},        {0, "", 0600, "16 to 64"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        hex_text(text, bad[i].bytes);
        strcpy(text + 2 * bad[i].bytes, bad[i].end);
        write_file(path, text, strlen(text), bad[i].mode);
        err[0] = '\0';
        k.len = 99;
        assert_int_equal(auth_key_load(path, &k, err, sizeof err), -1);
        assert_int_equal(k.len, 0);
        if (strstr(err, bad[i].why) == NULL || strstr(err, path) == NULL)
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, bad[i].why);
    }
    if (geteuid() == 0) { /* only root can give a file away */
        hex_text(text, 32);
        write_file(path, text, 64, 0600);
        assert_int_equal(chown(path, 65534, 65534), 0);
        assert_int_equal(auth_key_load(path, &k, err, sizeof err), -1);
        assert_non_null(strstr(err, "owned by uid 65534"));
    }
    assert_int_equal(auth_key_load(f->dir, &k, err, sizeof err), -1);
    assert_non_null(strstr(err, "regular"));
    unlink(path);
    assert_int_equal(auth_key_load(path, &k, err, sizeof err), -1);
    assert_non_null(strstr(err, "No such file"));
}

/* ---- the handshake ---- */

/* Real client, real server: both succeed; each writes at once from its DONE, and what
 * each reads afterwards is exactly what the other wrote (nothing swallowed). */
static void test_handshake_ok(void **state)
{
    struct fx *f = *state;
    static const char c2s[] = "client-to-server after the handshake";
    static const char s2c[] = "server-to-client after the handshake";

    f->cli_say = c2s;
    f->srv_say = s2c;
    connect_to(f, f->port, PURPOSE, 5000, NULL);
    assert_int_equal(f->cli.calls, 0); /* never from inside auth_connect() */
    assert_true(run_until(f, both_done, NULL, WAIT_MS));
    assert_int_equal(f->srv.status, 0);
    assert_int_equal(f->cli.status, 0);
    assert_true(f->srv.id == 7);
    assert_string_equal(f->srv.addr, "10.0.0.7:9001");
    assert_true(f->cli.id == 0);
    assert_string_equal(f->cli.addr, f->address);
    assert_non_null(f->srv.tcp);
    assert_non_null(f->cli.tcp);

    sink_start(f->srv.tcp, &f->ssink);
    sink_start(f->cli.tcp, &f->csink);
    assert_true(sink_wait(f, &f->ssink, strlen(c2s)));
    assert_true(sink_wait(f, &f->csink, strlen(s2c)));
    assert_int_equal(f->ssink.len, strlen(c2s));
    assert_memory_equal(f->ssink.buf, c2s, strlen(c2s));
    assert_int_equal(f->csink.len, strlen(s2c));
    assert_memory_equal(f->csink.buf, s2c, strlen(s2c));
    assert_int_equal(f->srv.calls, 1);
    assert_int_equal(f->cli.calls, 1);
}

/* A client (raw) that sends its first bytes of payload in the same segment as its hello:
 * the server reads the hello and not one byte more. */
static void test_server_pipelined(void **state)
{
    struct fx *f = *state;
    static const char extra[] = "PIPELINED-PAYLOAD";
    struct raw *w = raw_new(f);
    uint8_t want[32];

    w->id = 42;
    w->addr = "10.9.8.7:7000";
    memcpy(w->extra, extra, strlen(extra));
    w->extra_len = strlen(extra);
    raw_start(w, f, RAW_HELLO);
    assert_true(run_until(f, result_in, &f->srv, WAIT_MS));
    assert_int_equal(f->srv.status, 0);
    assert_true(f->srv.id == 42);
    assert_string_equal(f->srv.addr, "10.9.8.7:7000");
    sink_start(f->srv.tcp, &f->ssink);
    assert_true(sink_wait(f, &f->ssink, strlen(extra)));
    assert_int_equal(f->ssink.len, strlen(extra));
    assert_memory_equal(f->ssink.buf, extra, strlen(extra));
    say(f->srv.tcp, "pong");
    close_tcp(&f->srv.tcp);
    raw_join(f, w);

    /* What the raw client got: MACs (right for this session), then our "pong". */
    assert_int_equal(w->rx_len, 32 + 4);
    t_mac(&f->ckey, "tern-auth-server", PURPOSE, w->challenge + 9, w->hello + 10 + 13, 42,
          "10.9.8.7:7000", want);
    assert_memory_equal(w->rx, want, 32);
    assert_memory_equal(w->rx + 32, "pong", 4);
}

/* Dovecot's test: the hello arrives one byte per segment. */
static void test_server_trickle(void **state)
{
    struct fx *f = *state;
    struct raw *w = raw_new(f);

    w->id = 3;
    raw_start(w, f, RAW_TRICKLE);
    assert_true(run_until(f, result_in, &f->srv, WAIT_MS));
    assert_int_equal(f->srv.status, 0);
    assert_true(f->srv.id == 3);
    close_tcp(&f->srv.tcp);
    raw_join(f, w);
    assert_int_equal(w->rx_len, 32);
}

/* A server (raw) that sends payload in the same segment as its MACs: our client reads
 * the MACs and not one byte more. The raw server also checks our hello against auth.h. */
static void test_client_pipelined(void **state)
{
    struct fx *f = *state;
    static const char extra[] = "SERVER-PAYLOAD";
    struct raws *s = raws_new(f, &f->ckey);

    memcpy(s->extra, extra, strlen(extra));
    s->extra_len = strlen(extra);
    raws_start(s, RS_NORMAL);
    f->cli_say = "ping";
    connect_to(f, s->port, PURPOSE, 5000, NULL);
    assert_true(run_until(f, result_in, &f->cli, WAIT_MS));
    assert_int_equal(f->cli.status, 0);
    sink_start(f->cli.tcp, &f->csink);
    assert_true(sink_wait(f, &f->csink, strlen(extra)));
    assert_int_equal(f->csink.len, strlen(extra));
    assert_memory_equal(f->csink.buf, extra, strlen(extra));
    close_tcp(&f->cli.tcp);
    raws_join(f, s);
    assert_true(s->hello_ok);
    assert_true(s->id == 7);
    assert_string_equal(s->addr, "10.0.0.7:9001");
    assert_int_equal(s->hello_len, AUTH_HELLO_HEAD + 13 + 64);
    assert_int_equal(s->rx_len, 4);
    assert_memory_equal(s->rx, "ping", 4);
    assert_true(s->closed);
}

/* Another secret, real against real: the server refuses, the client sees it close. */
static void test_wrong_secret(void **state)
{
    struct fx *f = *state;

    key_fill(&f->ckey, 2, 32);
    connect_to(f, f->port, PURPOSE, 5000, NULL);
    assert_true(run_until(f, both_done, NULL, WAIT_MS));
    assert_int_equal(f->srv.status, AUTH_EPROOF);
    assert_int_equal(f->cli.status, AUTH_ECLOSED);
    assert_null(f->srv.tcp);
    assert_null(f->cli.tcp);
    assert_true(f->srv.addr_null && f->srv.id == 0);
}

/* Another secret on either side, against raw peers: a raw client with the wrong key gets
 * nothing after the challenge; a raw server with the wrong key is refused by our client,
 * which closes without another byte. */
static void test_wrong_secret_raw(void **state)
{
    struct fx *f = *state;
    struct auth_key other;
    struct raw *w = raw_new(f);
    struct raws *s = raws_new(f, &other);

    key_fill(&other, 3, 32);
    w->key = &other;
    raw_start(w, f, RAW_HELLO);
    raw_join(f, w);
    assert_int_equal(f->srv.status, AUTH_EPROOF);
    refused_quietly(w);

    raws_start(s, RS_NORMAL);
    connect_to(f, s->port, PURPOSE, 5000, NULL);
    raws_join(f, s);
    assert_true(run_until(f, result_in, &f->cli, WAIT_MS));
    assert_int_equal(f->cli.status, AUTH_EPROOF);
    assert_false(s->hello_ok);
    assert_int_equal(s->rx_len, 0);
    assert_true(s->closed);
}

/* The same secret for another purpose: "rpc" against a "raft" server is refused. */
static void test_purpose_mismatch(void **state)
{
    struct fx *f = *state;
    struct raw *w = raw_new(f);

    connect_to(f, f->port, "rpc", 5000, NULL);
    assert_true(run_until(f, both_done, NULL, WAIT_MS));
    assert_int_equal(f->srv.status, AUTH_EPROOF);
    assert_int_equal(f->cli.status, AUTH_ECLOSED);

    memset(&f->srv, 0, sizeof f->srv);
    w->purpose = "rpc";
    raw_start(w, f, RAW_HELLO);
    raw_join(f, w);
    assert_int_equal(f->srv.status, AUTH_EPROOF);
    refused_quietly(w);
}

/* Strangers with garbage: each is refused at once, and gets the challenge only. */
static void test_stranger_garbage(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *bytes;
        size_t len;
        int status;
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27, AUTH_EVERSION},
        {"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11, AUTH_EVERSION}, /* TLS */
        {"\x01\x00\x00\x00\x00\x00\x00\x00\x01\x00", 10, AUTH_EPROTO},       /* alen 0 */
        {"\x01\x00\x00\x00\x00\x00\x00\x00\x01\x05"
         "ab\ncd",
         15, AUTH_EPROTO}, /* LF in the address */
        {"\x01\x00\x00\x00\x00\x00\x00\x00\x01\x05"
         "ab cd",
         15, AUTH_EPROTO}, /* space in the address */
    };

    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct raw *w = raw_new(f);
        memcpy(w->bytes, cases[i].bytes, cases[i].len);
        w->bytes_len = cases[i].len;
        memset(&f->srv, 0, sizeof f->srv);
        raw_start(w, f, RAW_BYTES);
        raw_join(f, w);
        if (f->srv.calls != 1 || f->srv.status != cases[i].status)
            fail_msg("case %zu: %u calls, status %d", i, f->srv.calls, f->srv.status);
        refused_quietly(w);
    }

    /* A well-formed hello with a random MAC, followed by a flood: refused for the proof;
     * no byte of the flood is read (the hello is 10 + 2 + 64 bytes). */
    struct raw *w = raw_new(f);
    static const char head[] = "\x01\x00\x00\x00\x00\x00\x00\x00\x05\x02"
                               "ab";
    memcpy(w->bytes, head, 12);
    RAND_bytes(w->bytes + 12, 64);
    memset(w->bytes + 76, 'A', sizeof w->bytes - 76);
    w->bytes_len = sizeof w->bytes;
    memset(&f->srv, 0, sizeof f->srv);
    raw_start(w, f, RAW_BYTES);
    raw_join(f, w);
    assert_int_equal(f->srv.status, AUTH_EPROOF);
    refused_quietly(w);
}

/* A truncated hello: refused when the peer closes, or when the deadline passes. */
static void test_stranger_truncated(void **state)
{
    struct fx *f = *state;
    struct raw *w1 = raw_new(f), *w2 = raw_new(f);
    uint64_t t0;

    w1->trunc = 30;
    w2->trunc = 5;
    raw_start(w1, f, RAW_TRUNC_CLOSE);
    raw_join(f, w1);
    assert_int_equal(f->srv.status, AUTH_ECLOSED);
    refused_quietly(w1);

    memset(&f->srv, 0, sizeof f->srv);
    f->stimeout = SHORT_MS;
    t0 = mono_ms();
    raw_start(w2, f, RAW_TRUNC_IDLE);
    raw_join(f, w2);
    assert_int_equal(f->srv.status, AUTH_ETIMEDOUT);
    assert_true(mono_ms() - t0 >= SHORT_MS - 10);
    refused_quietly(w2);
}

/* A stranger who says nothing is closed when the deadline passes. */
static void test_stranger_silent(void **state)
{
    struct fx *f = *state;
    struct raw *w = raw_new(f);
    uint64_t t0 = mono_ms(), dt;

    f->stimeout = SHORT_MS;
    raw_start(w, f, RAW_SILENT);
    raw_join(f, w);
    dt = mono_ms() - t0;
    assert_int_equal(f->srv.status, AUTH_ETIMEDOUT);
    assert_true(dt >= SHORT_MS - 10 && dt < SHORT_MS + 2000);
    refused_quietly(w);
}

/* A proof recorded from a good session is worthless in the next one (fresh Ns). */
static void test_replay(void **state)
{
    struct fx *f = *state;
    struct raw *w1 = raw_new(f), *w2 = raw_new(f);

    w1->id = 5;
    raw_start(w1, f, RAW_HELLO);
    assert_true(run_until(f, result_in, &f->srv, WAIT_MS));
    assert_int_equal(f->srv.status, 0);
    close_tcp(&f->srv.tcp);
    raw_join(f, w1);
    assert_int_equal(w1->rx_len, 32);

    memcpy(w2->bytes, w1->hello, w1->hello_len);
    w2->bytes_len = w1->hello_len;
    memset(&f->srv, 0, sizeof f->srv);
    raw_start(w2, f, RAW_BYTES);
    raw_join(f, w2);
    assert_int_equal(f->srv.status, AUTH_EPROOF);
    refused_quietly(w2);
    assert_memory_not_equal(w1->challenge + 9, w2->challenge + 9, 32);
}

/* The client side against servers that misbehave. */
static void test_client_failures(void **state)
{
    struct fx *f = *state;
    struct raws *s1 = raws_new(f, &f->ckey), *s2 = raws_new(f, &f->ckey),
                *s3 = raws_new(f, &f->ckey);
    int port, lfd;
    uint64_t t0;

    raws_start(s1, RS_BAD_MAGIC); /* refused at the first byte; our hello never sent */
    connect_to(f, s1->port, PURPOSE, 5000, NULL);
    raws_join(f, s1);
    assert_true(run_until(f, result_in, &f->cli, WAIT_MS));
    assert_int_equal(f->cli.status, AUTH_EPROTO);
    assert_int_equal(s1->hello_len, 0);

    memset(&f->cli, 0, sizeof f->cli);
    raws_start(s2, RS_SILENT);
    t0 = mono_ms();
    connect_to(f, s2->port, PURPOSE, SHORT_MS, NULL);
    assert_true(run_until(f, result_in, &f->cli, WAIT_MS));
    assert_int_equal(f->cli.status, AUTH_ETIMEDOUT);
    assert_true(mono_ms() - t0 >= SHORT_MS - 10);
    raws_join(f, s2);
    assert_int_equal(s2->rx_len, 0);

    memset(&f->cli, 0, sizeof f->cli);
    raws_start(s3, RS_CLOSE_EARLY);
    connect_to(f, s3->port, PURPOSE, 5000, NULL);
    assert_true(run_until(f, result_in, &f->cli, WAIT_MS));
    assert_int_equal(f->cli.status, AUTH_ECLOSED);
    raws_join(f, s3);

    /* Nobody listening. */
    memset(&f->cli, 0, sizeof f->cli);
    lfd = raw_listen(&port);
    close(lfd);
    connect_to(f, port, PURPOSE, 5000, NULL);
    assert_true(run_until(f, result_in, &f->cli, WAIT_MS));
    assert_int_equal(f->cli.status, AUTH_ECONNECT);
}

/* auth_cancel(): DONE fires later, once, with AUTH_ECANCELED, whatever the stage. */
static void test_cancel(void **state)
{
    struct fx *f = *state;
    struct raw *w = raw_new(f);
    struct raws *s = raws_new(f, &f->ckey);
    struct auth_req *req;

    raw_start(w, f, RAW_SILENT);
    assert_true(run_until(f, sreq_set, NULL, WAIT_MS));
    auth_cancel(f->sreq);
    assert_int_equal(f->srv.calls, 0);
    raw_join(f, w);
    assert_int_equal(f->srv.calls, 1);
    assert_int_equal(f->srv.status, AUTH_ECANCELED);
    refused_quietly(w);

    /* During the TCP connect. */
    connect_to(f, f->port, PURPOSE, 5000, &req);
    auth_cancel(req);
    auth_cancel(req); /* twice is harmless before DONE */
    assert_int_equal(f->cli.calls, 0);
    assert_true(run_until(f, result_in, &f->cli, WAIT_MS));
    assert_int_equal(f->cli.status, AUTH_ECANCELED);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(f->cli.calls, 1);

    /* Waiting for a silent server's challenge. */
    memset(&f->cli, 0, sizeof f->cli);
    raws_start(s, RS_SILENT);
    connect_to(f, s->port, PURPOSE, 5000, &req);
    assert_false(run_until(f, result_in, &f->cli, 100));
    auth_cancel(req);
    assert_true(run_until(f, result_in, &f->cli, WAIT_MS));
    assert_int_equal(f->cli.status, AUTH_ECANCELED);
    raws_join(f, s);
    assert_true(s->closed);

    /* The server side handshake of the first connect, if it got that far, is left to
     * teardown, which cancels it. */
}

static void never_done(void *arg, uv_tcp_t *tcp, int status, uint64_t id, const char *addr)
{
    fail_msg("DONE after a refused call");
}

/* Bad arguments are refused at once: no DONE, no handle left on the loop. */
static void test_invalid_args(void **state)
{
    struct fx *f = *state;
    char longaddr[AUTH_ADDRESS_MAX + 2];
    struct auth_key shortkey;
    uv_tcp_t *tcp;

    memset(longaddr, 'a', sizeof longaddr - 1);
    longaddr[sizeof longaddr - 1] = '\0';
    key_fill(&shortkey, 1, AUTH_SECRET_MIN - 1);
#define CONNECT(addr, key, purpose, myaddr, ms)                                                    \
    auth_connect(&f->loop, addr, key, purpose, 1, myaddr, ms, never_done, NULL, NULL)
    assert_int_equal(CONNECT("localhost:80", &f->ckey, "raft", "1.2.3.4:5", 100), AUTH_EINVAL);
    assert_int_equal(CONNECT(f->address, &shortkey, "raft", "1.2.3.4:5", 100), AUTH_EINVAL);
    assert_int_equal(CONNECT(f->address, NULL, "raft", "1.2.3.4:5", 100), AUTH_EINVAL);
    assert_int_equal(CONNECT(f->address, &f->ckey, "", "1.2.3.4:5", 100), AUTH_EINVAL);
    assert_int_equal(CONNECT(f->address, &f->ckey, "r aft", "1.2.3.4:5", 100), AUTH_EINVAL);
    assert_int_equal(CONNECT(f->address, &f->ckey, longaddr + 200, "1.2.3.4:5", 100), AUTH_EINVAL);
    assert_int_equal(CONNECT(f->address, &f->ckey, "raft", "", 100), AUTH_EINVAL);
    assert_int_equal(CONNECT(f->address, &f->ckey, "raft", "a b", 100), AUTH_EINVAL);
    assert_int_equal(CONNECT(f->address, &f->ckey, "raft", longaddr, 100), AUTH_EINVAL);
    assert_int_equal(CONNECT(f->address, &f->ckey, "raft", "1.2.3.4:5", 0), AUTH_EINVAL);
#undef CONNECT
    longaddr[AUTH_ADDRESS_MAX] = '\0'; /* the longest that is allowed */
    assert_int_equal(auth_connect(&f->loop, f->address, &f->ckey, "raft", 1, longaddr, 5000,
                                  on_cli_done, f, NULL),
                     0);
    assert_true(run_until(f, both_done, NULL, WAIT_MS));
    assert_int_equal(f->srv.status, 0);
    assert_string_equal(f->srv.addr, longaddr);

    tcp = raft_malloc(sizeof *tcp);
    uv_tcp_init(&f->loop, tcp);
    assert_int_equal(auth_accept(tcp, &f->skey, "", 100, never_done, NULL, NULL), AUTH_EINVAL);
    assert_int_equal(auth_accept(tcp, &shortkey, "raft", 100, never_done, NULL, NULL), AUTH_EINVAL);
    assert_int_equal(auth_accept(NULL, &f->skey, "raft", 100, never_done, NULL, NULL), AUTH_EINVAL);
    uv_close((uv_handle_t *) tcp, on_free); /* still ours */
}

/* ---- the transport, with real libraft servers on one loop ---- */

#define NODES       3
#define ENTRY       "tern-auth-entry!" /* 16 bytes: libraft 0.15 wants multiples of 8 */
#define ELECTION_MS 300
#define HEART_MS    50

struct node {
    struct cluster *cl;
    bool started, closing;
    uint64_t id;
    char address[32];
    char dir[TMPDIR_MAX];
    struct raft_uv_transport transport;
    struct raft_io io;
    struct raft_fsm fsm;
    struct raft raft;
    unsigned applied;
    uint8_t last[sizeof ENTRY];
    bool closed;
};

struct cluster {
    struct fx *f;
    struct auth_key keys[NODES]; /* node i's secret */
    struct node n[NODES];
    bool bind_any;      /* node 0 listens on 0.0.0.0 (transport_set_bind_address()) */
    unsigned committed; /* entries commit_one() got committed */
    int apply_status;
    bool apply_done;
};

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    struct node *n = fsm->data;

    n->applied++;
    memcpy(n->last, buf->base, buf->len < sizeof n->last ? buf->len : sizeof n->last);
    *result = NULL;
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n)
{
    return RAFT_BUSY; /* never needed here: one entry */
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    raft_free(buf->base);
    return 0;
}

/* free_port(): a loopback TCP port that was free a moment ago. */
static int free_port(void)
{
    int port, fd = raw_listen(&port);

    close(fd);
    return port;
}

static void node_start(struct cluster *cl, unsigned i)
{
    struct node *n = &cl->n[i];
    struct raft_configuration conf;
    char name[8];

    n->cl = cl;
    snprintf(name, sizeof name, "n%u", i + 1);
    assert_int_equal(tmpdir_join(n->dir, cl->f->dir, name), 0);
    assert_int_equal(mkdir(n->dir, 0700), 0);
    assert_int_equal(transport_init(&n->transport, &cl->f->loop, &cl->keys[i]), 0);
    if (i == 0 && cl->bind_any) {
        char any[32];
        snprintf(any, sizeof any, "0.0.0.0:%s", strchr(n->address, ':') + 1);
        assert_int_equal(transport_set_bind_address(&n->transport, any), 0);
    }
    assert_int_equal(raft_uv_init(&n->io, &cl->f->loop, n->dir, &n->transport), 0);
    raft_uv_set_connect_retry_delay(&n->io, 100);
    n->fsm.version = 1;
    n->fsm.data = n;
    n->fsm.apply = fsm_apply;
    n->fsm.snapshot = fsm_snapshot;
    n->fsm.restore = fsm_restore;
    assert_int_equal(raft_init(&n->raft, &n->io, &n->fsm, n->id, n->address), 0);
    raft_configuration_init(&conf);
    for (unsigned j = 0; j < NODES; j++)
        assert_int_equal(raft_configuration_add(&conf, cl->n[j].id, cl->n[j].address, RAFT_VOTER),
                         0);
    assert_int_equal(raft_bootstrap(&n->raft, &conf), 0);
    raft_configuration_close(&conf);
    raft_set_election_timeout(&n->raft, ELECTION_MS);
    raft_set_heartbeat_timeout(&n->raft, HEART_MS);
    assert_int_equal(raft_start(&n->raft), 0);
    n->started = true;
}

static void on_raft_closed(struct raft *r)
{
    struct node *n = r->data;

    raft_uv_close(&n->io);
    transport_close(&n->transport);
    n->closed = true;
}

static bool all_closed(struct fx *f, const void *arg)
{
    const struct cluster *cl = arg;

    for (unsigned i = 0; i < NODES; i++)
        if (cl->n[i].started && !cl->n[i].closed)
            return false;
    return true;
}

/* cluster_close(): raft_close() on every node running. */
static void cluster_close(struct cluster *cl)
{
    for (unsigned i = 0; i < NODES; i++) {
        struct node *n = &cl->n[i];
        if (!n->started || n->closing)
            continue;
        n->closing = true;
        n->raft.data = n;
        raft_close(&n->raft, on_raft_closed);
    }
}

static void cluster_abort(struct fx *f)
{
    cluster_close(f->cluster);
}

static void cluster_stop(struct cluster *cl)
{
    cluster_close(cl);
    assert_true(run_until(cl->f, all_closed, cl, WAIT_MS));
}

/* cluster_start_with(): NODES voters on the loop; node i uses keys[i]; BIND_ANY: node 0
 * listens on 0.0.0.0. */
static struct cluster *cluster_start_with(struct fx *f, const struct auth_key keys[NODES],
                                          bool bind_any)
{
    struct cluster *cl = calloc(1, sizeof *cl);

    assert_non_null(cl);
    f->cluster = cl; /* teardown's from here on */
    f->cluster_abort = cluster_abort;
    memcpy(cl->keys, keys, sizeof cl->keys);
    cl->bind_any = bind_any;
    cl->f = f;
    assert_int_equal(tmpdir_make(f->dir, "transport"), 0);
    for (unsigned i = 0; i < NODES; i++) {
        cl->n[i].id = i + 1;
        snprintf(cl->n[i].address, sizeof cl->n[i].address, "127.0.0.1:%d", free_port());
    }
    for (unsigned i = 0; i < NODES; i++)
        node_start(cl, i);
    return cl;
}

static struct cluster *cluster_start(struct fx *f, const struct auth_key keys[NODES])
{
    return cluster_start_with(f, keys, false);
}

/* good(): node I has the secret of node 0 (the cluster's; the others are intruders). */
static bool good(const struct cluster *cl, unsigned i)
{
    return cl->keys[i].len == cl->keys[0].len &&
           memcmp(cl->keys[i].bytes, cl->keys[0].bytes, cl->keys[0].len) == 0;
}

/* A leader among the good nodes, known to all of them. */
static struct node *good_leader(struct cluster *cl)
{
    struct node *leader = NULL;

    for (unsigned i = 0; i < NODES; i++) {
        struct node *n = &cl->n[i];
        if (good(cl, i) && raft_state(&n->raft) == RAFT_LEADER)
            leader = n;
    }
    if (leader == NULL)
        return NULL;
    for (unsigned i = 0; i < NODES; i++) {
        raft_id id = 0;
        const char *addr = NULL;
        if (!good(cl, i))
            continue;
        raft_leader(&cl->n[i].raft, &id, &addr);
        if (id != leader->id)
            return NULL;
    }
    return leader;
}

static bool has_leader(struct fx *f, const void *arg)
{
    return good_leader((struct cluster *) (uintptr_t) arg) != NULL;
}

static void on_applied(struct raft_apply *req, int status, void *result)
{
    struct cluster *cl = req->data;

    cl->apply_status = status;
    cl->apply_done = true;
}

/* applied_by_good(): every good node applied every entry committed so far. */
static bool applied_by_good(struct fx *f, const void *arg)
{
    const struct cluster *cl = arg;

    if (!cl->apply_done)
        return false;
    for (unsigned i = 0; i < NODES; i++)
        if (good(cl, i) && cl->n[i].applied < cl->committed)
            return false;
    return true;
}

static void commit_one(struct cluster *cl)
{
    static struct raft_apply req;
    struct node *leader;
    struct raft_buffer buf;

    assert_true(run_until(cl->f, has_leader, cl, WAIT_MS));
    leader = good_leader(cl);
    buf.len = strlen(ENTRY);
    buf.base = raft_malloc(buf.len); /* libraft owns it once raft_apply() returns 0 */
    assert_non_null(buf.base);
    memcpy(buf.base, ENTRY, buf.len);
    req.data = cl;
    cl->apply_done = false;
    cl->committed++;
    assert_int_equal(raft_apply(&leader->raft, &req, &buf, 1, on_applied), 0);
    assert_true(run_until(cl->f, applied_by_good, cl, WAIT_MS));
    assert_int_equal(cl->apply_status, 0);
}

static size_t count_lines(const char *path, const char *needle)
{
    char line[4096];
    size_t n = 0;
    FILE *fp = fopen(path, "r");

    assert_non_null(fp);
    while (fgets(line, sizeof line, fp) != NULL)
        if (strstr(line, needle) != NULL)
            n++;
    fclose(fp);
    return n;
}

static bool overloaded(struct fx *f, const void *arg)
{
    const struct cluster *cl = arg;
    struct transport_stats st;

    transport_stats(&cl->n[0].transport, &st);
    return st.overload >= 6;
}

static bool flood_refused(struct fx *f, const void *arg)
{
    const struct cluster *cl = arg;
    struct transport_stats st;

    transport_stats(&cl->n[0].transport, &st);
    return st.refused >= TRANSPORT_HANDSHAKES_MAX;
}

/*
 * Three members with one secret (node 1 listening on 0.0.0.0): a leader is elected and an
 * entry commits everywhere. Then a flood of silent strangers on node 1: the first
 * TRANSPORT_HANDSHAKES_MAX are heard, the rest closed at once, and the cluster commits
 * another entry all the same; the refusals are logged, rate limited. A stranger is still
 * mid-handshake when the cluster stops: close() cancels it and completes.
 */
static void test_transport_cluster(void **state)
{
    struct fx *f = *state;
    struct auth_key keys[NODES];
    struct transport_stats st;
    struct cluster *cl;
    int flood[TRANSPORT_HANDSHAKES_MAX + 6], port, stranger, logfd;
    char logpath[TMPDIR_MAX];
    uint64_t t0 = mono_ms();
    size_t lines;

    for (unsigned i = 0; i < NODES; i++)
        key_fill(&keys[i], 77, 32);
    cl = cluster_start_with(f, keys, true);
    assert_int_equal(tmpdir_join(logpath, f->dir, "log"), 0);
    logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    assert_true(logfd >= 0);
    log_set_fd(logfd);
    commit_one(cl);
    for (unsigned i = 0; i < NODES; i++) {
        assert_true(run_until(f, applied_by_good, cl, WAIT_MS));
        assert_int_equal(cl->n[i].applied, 1);
        assert_memory_equal(cl->n[i].last, ENTRY, strlen(ENTRY));
        transport_stats(&cl->n[i].transport, &st);
        assert_true(st.connected >= 1 || st.accepted >= 1);
        assert_int_equal(st.refused, 0);
    }

    port = atoi(strchr(cl->n[0].address, ':') + 1);
    for (size_t i = 0; i < sizeof flood / sizeof *flood; i++)
        assert_true((flood[i] = raw_connect(port)) >= 0);
    assert_true(run_until(f, overloaded, cl, WAIT_MS));
    commit_one(cl);
    transport_stats(&cl->n[0].transport, &st);
    assert_int_equal(st.overload, 6);
    assert_int_equal(st.refused, 0); /* the 64 are still in their handshakes */
    for (unsigned i = 0; i < NODES; i++)
        assert_int_equal(cl->n[i].applied, 2);
    for (size_t i = 0; i < sizeof flood / sizeof *flood; i++)
        close(flood[i]);
    assert_true(run_until(f, flood_refused, cl, WAIT_MS));

    stranger = raw_connect(port);
    assert_true(stranger >= 0);
    run_for(f, 100); /* let it be accepted */
    cluster_stop(cl);
    close(stranger);

    log_set_fd(2);
    close(logfd);
    lines = count_lines(logpath, "event=cluster.auth_refused");
    assert_true(lines >= 1);
    assert_true(lines <= TRANSPORT_LOG_BURST * (1 + (mono_ms() - t0) / TRANSPORT_LOG_WINDOW_MS));
}

static bool intruder_refused(struct fx *f, const void *arg)
{
    const struct cluster *cl = arg;
    struct transport_stats a, b, c;

    transport_stats(&cl->n[0].transport, &a);
    transport_stats(&cl->n[1].transport, &b);
    transport_stats(&cl->n[2].transport, &c);
    return a.refused > 0 && b.refused > 0 && c.refused > 0 && c.connect_failed > 0;
}

/* Node 3 has another secret: nodes 1 and 2 elect a leader and commit without it; node 3
 * never authenticates a connection either way, so it gets no Raft message at all: no
 * leader, no entry. The refusals are logged, rate limited. */
static void test_transport_intruder(void **state)
{
    struct fx *f = *state;
    struct auth_key keys[NODES];
    struct transport_stats st;
    struct cluster *cl;
    char logpath[TMPDIR_MAX];
    raft_id id = 99;
    const char *addr = NULL;
    size_t lines;
    int logfd;
    uint64_t t0 = mono_ms();

    key_fill(&keys[0], 77, 32);
    key_fill(&keys[1], 77, 32);
    key_fill(&keys[2], 78, 32); /* the intruder */
    cl = cluster_start(f, keys);
    assert_int_equal(tmpdir_join(logpath, f->dir, "log"), 0);
    logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    assert_true(logfd >= 0);
    log_set_fd(logfd);

    commit_one(cl);
    assert_true(run_until(f, intruder_refused, cl, WAIT_MS));
    run_for(f, 3 * ELECTION_MS);

    assert_int_equal(cl->n[2].applied, 0);
    assert_true(raft_last_index(&cl->n[2].raft) == 1); /* the bootstrap configuration */
    assert_true(raft_state(&cl->n[2].raft) != RAFT_LEADER);
    raft_leader(&cl->n[2].raft, &id, &addr);
    assert_true(id == 0);
    transport_stats(&cl->n[2].transport, &st);
    assert_true(st.accepted == 0 && st.connected == 0);
    for (unsigned i = 0; i < 2; i++)
        assert_int_equal(cl->n[i].applied, 1);

    cluster_stop(cl);
    log_set_fd(2);
    close(logfd);
    lines = count_lines(logpath, "event=cluster.auth_refused");
    assert_true(count_lines(logpath, "dir=in") >= 1);
    assert_true(count_lines(logpath, "dir=out") >= 1);
    /* At most TRANSPORT_LOG_BURST per window per node. */
    assert_true(lines >= 2);
    assert_true(lines <=
                NODES * TRANSPORT_LOG_BURST * (1 + (mono_ms() - t0) / TRANSPORT_LOG_WINDOW_MS));
}

static void test_transport_args(void **state)
{
    struct raft_uv_transport t;
    struct auth_key k;

    (void) state;
    memset(&t, 0, sizeof t);
    key_fill(&k, 1, 8);
    assert_int_equal(transport_init(&t, uv_default_loop(), &k), RAFT_INVALID);
    assert_int_equal(transport_init(&t, uv_default_loop(), NULL), RAFT_INVALID);
    key_fill(&k, 1, 32);
    assert_int_equal(transport_init(&t, uv_default_loop(), &k), 0);
    assert_int_equal(transport_set_bind_address(&t, "0.0.0.0:9001"), 0);
    assert_int_equal(transport_set_bind_address(&t, "localhost:9001"), RAFT_INVALID);
    assert_int_equal(t.init(&t, 1, "127.0.0.1:9001"), 0);
    assert_int_equal(t.init(&t, 1, "127.0.0.1 9001"), RAFT_INVALID);
    transport_close(&t);
    assert_null(t.impl);
    transport_close(&t); /* idempotent */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_bytewise),
        cmocka_unit_test(test_hello_bad),
        cmocka_unit_test(test_challenge),
        cmocka_unit_test(test_mac),
        cmocka_unit_test(test_parse_ipv4),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test_setup_teardown(test_key_create_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_load_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handshake_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_pipelined, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_trickle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_pipelined, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_secret_raw, setup, teardown),
        cmocka_unit_test_setup_teardown(test_purpose_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stranger_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stranger_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stranger_silent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_args, setup, teardown),
        cmocka_unit_test(test_transport_args),
        cmocka_unit_test_setup_teardown(test_transport_cluster, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transport_intruder, setup, teardown),
    };

    signal(SIGPIPE, SIG_IGN); /* libraft writes to peers' sockets (../shared/DEPS.md §1) */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
