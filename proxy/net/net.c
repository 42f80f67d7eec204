/*
 * proxy/net/net.c
 * Workers, listeners and client connections (see net.h).
 *
 * The life of a connection:
 * - accept on a worker (global limit), start reading into the worker's scratch buffer;
 * - PROXY phase (trusted peers only): wait, bounded in bytes and time, for the header;
 *   the client address it carries replaces the socket's;
 * - per-address limit; implicit TLS handshake when the listener wants it;
 * - protocol open(), then input() whenever plaintext is buffered and nobody holds the
 *   connection; output is collected and sent once per callback (one TLS record, one
 *   write), so pipelined replies cost one syscall;
 * - close: TLS close_notify, flush, shutdown, close both handles; the protocol's close()
 *   runs when the last reference (holds by pending completions) is gone.
 * Failure modes: peer reset or EOF (close), buffer full while held (stop reading until
 * released), write queue over NET_WQ_HIGH (stop reading until below NET_WQ_LOW), TLS
 * errors (close), timers (PROXY timeout closes; idle timeout asks the protocol).
 */
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "proxy_proto.h"
#include "tls.h"

#define SCRATCH_SIZE  (64 * 1024)
#define TRUSTED_MAX   32
#define WATCH_BUCKETS 1024 /* per worker: selected mailbox id -> connections */
#define IPTABLE_SIZE  4096 /* open addressing; per-address counts */

struct cidr {
    int family;
    uint8_t addr[16];
    unsigned bits;
};

struct iptable_slot {
    uint8_t key[17]; /* family byte + address */
    uint32_t count;
};

struct net_worker {
    struct net_server *s;
    int index;
    pthread_t thread;
    uv_loop_t loop;
    uv_async_t stop;
    struct loopq q;
    uv_tcp_t *listeners;
    size_t nlisteners;
    struct net_conn *conns;
    struct net_conn *watch[WATCH_BUCKETS];
    char scratch[SCRATCH_SIZE];
    /* start handshake with net_start */
    int start_rv;
    char start_err[256];
    bool started;
};

struct net_server {
    struct net_node node;
    struct net_listen *listens;
    size_t nlistens;
    SSL_CTX *ssl;
    struct cidr trusted[TRUSTED_MAX];
    size_t ntrusted;
    uint64_t max_conns, max_per_ip;
    _Atomic uint64_t nconns;
    pthread_mutex_t ipmu;
    struct iptable_slot *iptable;
    pthread_mutex_t startmu;
    pthread_cond_t startcv;
    struct net_worker *workers;
    size_t nworkers;
};

enum phase { PH_PROXY, PH_TLS_ACCEPT, PH_OPEN, PH_CLOSING };

struct net_conn {
    struct net_worker *w;
    const struct net_listen *l;
    uv_tcp_t tcp;
    uv_timer_t timer;
    enum phase phase;
    int handles; /* open libuv handles */
    int refs;    /* 1 while handles are open + holds + explicit refs */
    int held;
    bool reading;
    bool in_input, again;
    bool counted_ip;
    bool probe; /* arrived as PROXY v2 LOCAL: a health check, logged at debug */
    bool tls_pending_starttls;
    bool peer_eof;
    bool ever_read;
    void *session;
    char sid[NET_SID_LEN + 1];
    struct sockaddr_storage peer;
    char peer_str[INET6_ADDRSTRLEN];
    uint16_t peer_port;
    SSL *ssl;
    uint8_t *rbuf; /* plaintext (or raw bytes before the PROXY header is parsed) */
    size_t rlen, rcap;
    uint8_t *obuf; /* plaintext output collected during a callback */
    size_t olen, ocap;
    unsigned timeout_ms;
    uint64_t watch_key;
    struct net_conn *wnext, *wprev; /* in w->watch[watch_key % WATCH_BUCKETS] */
    struct net_conn *next, *prev;
};

static void conn_dispatch(struct net_conn *c);
static void conn_close_now(struct net_conn *c);
static void tls_pump(struct net_conn *c);

/* ---- small helpers ---- */

static bool ensure(uint8_t **buf, size_t *cap, size_t need, size_t max)
{
    if (need <= *cap)
        return true;
    if (need > max)
        return false;
    size_t n = *cap ? *cap : 1024;
    while (n < need)
        n *= 2;
    if (n > max)
        n = max;
    uint8_t *p = realloc(*buf, n);
    if (p == NULL)
        return false;
    *buf = p;
    *cap = n;
    return true;
}

static void addr_key(const struct sockaddr_storage *ss, uint8_t key[17])
{
    memset(key, 0, 17);
    if (ss->ss_family == AF_INET) {
        key[0] = 4;
        memcpy(key + 1, &((const struct sockaddr_in *) ss)->sin_addr, 4);
    } else if (ss->ss_family == AF_INET6) {
        key[0] = 6;
        memcpy(key + 1, &((const struct sockaddr_in6 *) ss)->sin6_addr, 16);
    }
}

static bool is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *) ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *) ss)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return true;
        if (IN6_IS_ADDR_V4MAPPED(a))
            return a->s6_addr[12] == 127;
    }
    return false;
}

static bool cidr_match(const struct cidr *c, const struct sockaddr_storage *ss)
{
    const uint8_t *a;
    if (ss->ss_family == AF_INET && c->family == AF_INET)
        a = (const uint8_t *) &((const struct sockaddr_in *) ss)->sin_addr;
    else if (ss->ss_family == AF_INET6 && c->family == AF_INET6)
        a = ((const struct sockaddr_in6 *) ss)->sin6_addr.s6_addr;
    else
        return false;
    unsigned full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(a, c->addr, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t) (0xff << (8 - rest));
    return (a[full] & mask) == (c->addr[full] & mask);
}

static int parse_trusted(struct net_server *s, const char *list, char *err, size_t errlen)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        if (s->ntrusted == TRUSTED_MAX) {
            snprintf(err, errlen, "net.proxy_trusted: more than %d entries", TRUSTED_MAX);
            return -1;
        }
        struct cidr *c = &s->trusted[s->ntrusted];
        char *slash = strchr(t, '/');
        if (slash)
            *slash = 0;
        if (inet_pton(AF_INET, t, c->addr) == 1) {
            c->family = AF_INET;
            c->bits = 32;
        } else if (inet_pton(AF_INET6, t, c->addr) == 1) {
            c->family = AF_INET6;
            c->bits = 128;
        } else {
            snprintf(err, errlen, "net.proxy_trusted: bad address '%s'", t);
            return -1;
        }
        if (slash) {
            char *end;
            unsigned long b = strtoul(slash + 1, &end, 10);
            if (*end || b > c->bits) {
                snprintf(err, errlen, "net.proxy_trusted: bad prefix length in '%s'", t);
                return -1;
            }
            c->bits = (unsigned) b;
        }
        s->ntrusted++;
    }
    return 0;
}

static bool trusted(struct net_server *s, const struct sockaddr_storage *ss)
{
    for (size_t i = 0; i < s->ntrusted; i++)
        if (cidr_match(&s->trusted[i], ss))
            return true;
    return false;
}

/* ip_acquire(): counts a connection for its client address; false over the limit. */
static bool ip_acquire(struct net_server *s, const struct sockaddr_storage *ss)
{
    uint8_t key[17];
    addr_key(ss, key);
    uint32_t h = 2166136261u;
    for (int i = 0; i < 17; i++)
        h = (h ^ key[i]) * 16777619u;
    bool ok = false;
    pthread_mutex_lock(&s->ipmu);
    for (size_t i = 0; i < IPTABLE_SIZE; i++) {
        struct iptable_slot *sl = &s->iptable[(h + i) % IPTABLE_SIZE];
        if (sl->count == 0 || memcmp(sl->key, key, 17) == 0) {
            if (sl->count == 0)
                memcpy(sl->key, key, 17);
            if (sl->count < s->max_per_ip) {
                sl->count++;
                ok = true;
            }
            break;
        }
    }
    pthread_mutex_unlock(&s->ipmu);
    return ok;
}

static void ip_release(struct net_server *s, const struct sockaddr_storage *ss)
{
    uint8_t key[17];
    addr_key(ss, key);
    uint32_t h = 2166136261u;
    for (int i = 0; i < 17; i++)
        h = (h ^ key[i]) * 16777619u;
    pthread_mutex_lock(&s->ipmu);
    for (size_t i = 0; i < IPTABLE_SIZE; i++) {
        struct iptable_slot *sl = &s->iptable[(h + i) % IPTABLE_SIZE];
        if (memcmp(sl->key, key, 17) == 0 && sl->count > 0) {
            /* slots are never emptied of their key, so probing chains stay intact */
            sl->count--;
            break;
        }
    }
    pthread_mutex_unlock(&s->ipmu);
}

static void set_peer(struct net_conn *c, const struct sockaddr_storage *ss)
{
    c->peer = *ss;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *) ss;
        inet_ntop(AF_INET, &in->sin_addr, c->peer_str, sizeof c->peer_str);
        c->peer_port = ntohs(in->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, c->peer_str, sizeof c->peer_str);
        c->peer_port = ntohs(in6->sin6_port);
    } else {
        snprintf(c->peer_str, sizeof c->peer_str, "unknown");
        c->peer_port = 0;
    }
}

/* ---- public accessors ---- */

const struct net_node *net_conn_node(struct net_conn *c)
{
    return &c->w->s->node;
}
const struct net_listen *net_conn_listen(struct net_conn *c)
{
    return c->l;
}
struct loopq *net_conn_loopq(struct net_conn *c)
{
    return &c->w->q;
}
uv_loop_t *net_conn_loop(struct net_conn *c)
{
    return &c->w->loop;
}
const char *net_conn_sid(struct net_conn *c)
{
    return c->sid;
}
const char *net_conn_peer(struct net_conn *c)
{
    return c->peer_str;
}
uint16_t net_conn_peer_port(struct net_conn *c)
{
    return c->peer_port;
}
bool net_conn_tls(struct net_conn *c)
{
    return c->ssl != NULL && SSL_is_init_finished(c->ssl);
}
const char *net_conn_tls_version(struct net_conn *c)
{
    return net_conn_tls(c) ? SSL_get_version(c->ssl) : NULL;
}
const char *net_conn_tls_cipher(struct net_conn *c)
{
    return net_conn_tls(c) ? SSL_get_cipher_name(c->ssl) : NULL;
}
bool net_conn_secure(struct net_conn *c)
{
    return net_conn_tls(c) || is_loopback(&c->peer);
}
bool net_conn_closing(struct net_conn *c)
{
    return c->phase == PH_CLOSING;
}

void net_conn_log(struct net_conn *c, int level, const char *event, const char *fmt, ...)
{
    char body[LOG_LINE_MAX];
    int n = snprintf(body, sizeof body, "sid=%s peer=%s", c->sid, c->peer_str);
    if (fmt && fmt[0] && n > 0 && (size_t) n < sizeof body - 1) {
        body[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(body + n, sizeof body - (size_t) n, fmt, ap);
        va_end(ap);
    }
    log_event((enum log_level) level, event, "%s", body);
}

/* ---- input ---- */

const uint8_t *net_conn_rdata(struct net_conn *c, size_t *len)
{
    *len = c->rlen;
    return c->rbuf;
}

void net_conn_consume(struct net_conn *c, size_t n)
{
    if (n >= c->rlen) {
        c->rlen = 0;
    } else {
        memmove(c->rbuf, c->rbuf + n, c->rlen - n);
        c->rlen -= n;
    }
}

bool net_conn_rfull(struct net_conn *c)
{
    return c->rlen >= NET_RBUF_MAX;
}

/* ---- output ---- */

void net_conn_write(struct net_conn *c, const void *data, size_t len)
{
    if (c->phase == PH_CLOSING && c->handles == 0)
        return;
    if (!ensure(&c->obuf, &c->ocap, c->olen + len, SIZE_MAX / 2)) {
        net_conn_log(c, LOG_ERROR, "net.oom", "what=output");
        conn_close_now(c);
        return;
    }
    memcpy(c->obuf + c->olen, data, len);
    c->olen += len;
}

void net_conn_printf(struct net_conn *c, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    net_conn_write(c, buf, (size_t) n < sizeof buf ? (size_t) n : sizeof buf - 1);
}

struct wreq {
    uv_write_t req;
    struct net_conn *c;
    size_t len;
    uint8_t data[];
};

static void update_reading(struct net_conn *c);

static void on_written(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *) req;
    struct net_conn *c = w->c;
    free(w);
    if (status < 0 && c->phase != PH_CLOSING)
        conn_close_now(c);
    else
        update_reading(c);
    net_conn_unref(c);
}

/* raw_write(): hands LEN bytes (copied) to libuv. */
static void raw_write(struct net_conn *c, const void *data, size_t len)
{
    if (len == 0 || c->handles == 0 || uv_is_closing((uv_handle_t *) &c->tcp))
        return;
    struct wreq *w = malloc(sizeof *w + len);
    if (w == NULL) {
        conn_close_now(c);
        return;
    }
    memcpy(w->data, data, len);
    w->c = c;
    w->len = len;
    uv_buf_t b = uv_buf_init((char *) w->data, (unsigned) len);
    c->refs++;
    if (uv_write(&w->req, (uv_stream_t *) &c->tcp, &b, 1, on_written) != 0) {
        free(w);
        c->refs--;
        conn_close_now(c);
    }
}

/* flush_wbio(): sends what TLS wrote into its memory BIO. */
static void flush_wbio(struct net_conn *c)
{
    BIO *wbio = SSL_get_wbio(c->ssl);
    char *p;
    long n = BIO_get_mem_data(wbio, &p);
    if (n > 0) {
        raw_write(c, p, (size_t) n);
        (void) BIO_reset(wbio);
    }
}

void net_conn_flush(struct net_conn *c)
{
    if (c->olen == 0)
        return;
    if (c->ssl) {
        size_t done = 0;
        if (SSL_write_ex(c->ssl, c->obuf, c->olen, &done) != 1 || done != c->olen) {
            ERR_clear_error();
            net_conn_log(c, LOG_INFO, "tls.write_error", NULL);
            c->olen = 0;
            conn_close_now(c);
            return;
        }
        flush_wbio(c);
    } else {
        raw_write(c, c->obuf, c->olen);
    }
    c->olen = 0;
    if (c->ocap > 16 * 1024) { /* big replies don't pin memory on idle connections */
        free(c->obuf);
        c->obuf = NULL;
        c->ocap = 0;
    }
}

/* ---- reading, holding, timers ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct net_conn *c = h->data;
    size_t room = SCRATCH_SIZE;
    if (!c->ssl && c->rlen < NET_RBUF_MAX && NET_RBUF_MAX - c->rlen < room)
        room = NET_RBUF_MAX - c->rlen;
    *b = uv_buf_init(c->w->scratch, (unsigned) room);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);

static void update_reading(struct net_conn *c)
{
    if (c->phase == PH_CLOSING || c->handles == 0)
        return;
    size_t wq = uv_stream_get_write_queue_size((uv_stream_t *) &c->tcp);
    bool want =
        c->rlen < NET_RBUF_MAX && !c->peer_eof && (c->reading ? wq < NET_WQ_HIGH : wq < NET_WQ_LOW);
    if (c->held && c->rlen >= NET_RBUF_MAX)
        want = false;
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *) &c->tcp, on_alloc, on_read) == 0)
            c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *) &c->tcp);
        c->reading = false;
    }
}

static void on_timer(uv_timer_t *t)
{
    struct net_conn *c = t->data;
    if (c->phase == PH_PROXY) {
        net_conn_log(c, LOG_INFO, "proxy.timeout", NULL);
        conn_close_now(c);
        return;
    }
    if (c->phase == PH_TLS_ACCEPT || c->session == NULL) {
        net_conn_log(c, LOG_INFO, "tls.timeout", NULL);
        conn_close_now(c);
        return;
    }
    net_conn_log(c, LOG_INFO, "net.timeout", "ms=%u", c->timeout_ms);
    if (c->l->proto->timeout)
        c->l->proto->timeout(c->session, c);
    else
        net_conn_close(c);
    net_conn_flush(c);
}

void net_conn_timeout(struct net_conn *c, unsigned ms)
{
    c->timeout_ms = ms;
    if (c->handles && !uv_is_closing((uv_handle_t *) &c->timer) && c->held == 0)
        uv_timer_start(&c->timer, on_timer, ms, 0);
}

void net_conn_hold(struct net_conn *c)
{
    c->held++;
    c->refs++;
    if (c->handles && !uv_is_closing((uv_handle_t *) &c->timer))
        uv_timer_stop(&c->timer);
}

void net_conn_release(struct net_conn *c)
{
    c->held--;
    if (c->held == 0 && c->phase == PH_OPEN) {
        if (c->timeout_ms)
            net_conn_timeout(c, c->timeout_ms);
        net_conn_flush(c);
        conn_dispatch(c);
        update_reading(c);
    }
    net_conn_unref(c);
}

bool net_conn_held(struct net_conn *c)
{
    return c->held > 0;
}

void net_conn_ref(struct net_conn *c)
{
    c->refs++;
}

/* ---- change events ---- */

void net_conn_watch(struct net_conn *c, uint64_t key)
{
    struct net_worker *w = c->w;
    if (c->watch_key) {
        if (c->wprev)
            c->wprev->wnext = c->wnext;
        else
            w->watch[c->watch_key % WATCH_BUCKETS] = c->wnext;
        if (c->wnext)
            c->wnext->wprev = c->wprev;
        c->wnext = c->wprev = NULL;
    }
    c->watch_key = key;
    if (key) {
        struct net_conn **head = &w->watch[key % WATCH_BUCKETS];
        c->wnext = *head;
        if (*head)
            (*head)->wprev = c;
        *head = c;
    }
}

struct event_post {
    struct net_worker *w;
    struct fsm_event ev;
};

static void on_event(void *arg)
{
    struct event_post *p = arg;
    struct net_worker *w = p->w;
    /* N is taken before the callback: a session may stop watching (or close) itself */
    for (struct net_conn *c = w->watch[p->ev.mailbox_id % WATCH_BUCKETS], *n; c; c = n) {
        n = c->wnext;
        if (c->watch_key != p->ev.mailbox_id || c->phase != PH_OPEN || !c->l->proto->event)
            continue;
        c->refs++;
        c->l->proto->event(c->session, c, &p->ev);
        if (!c->held)
            net_conn_flush(c);
        net_conn_unref(c);
    }
    free(p);
}

void net_publish(struct net_server *s, const struct fsm_event *ev)
{
    if (s == NULL || ev->mailbox_id == 0)
        return;
    for (size_t i = 0; i < s->nworkers; i++) {
        struct event_post *p = malloc(sizeof *p);
        if (p == NULL)
            return; /* a lost notification: the session resyncs on its next command */
        p->w = &s->workers[i];
        p->ev = *ev;
        p->ev.hash = NULL;
        if (loopq_post(&s->workers[i].q, on_event, p) != 0)
            free(p);
    }
}

static void conn_free(struct net_conn *c)
{
    if (c->session && c->l->proto->close)
        c->l->proto->close(c->session);
    if (c->ssl)
        SSL_free(c->ssl); /* frees both memory BIOs */
    free(c->rbuf);
    free(c->obuf);
    free(c);
}

void net_conn_unref(struct net_conn *c)
{
    if (--c->refs == 0)
        conn_free(c);
}

/* conn_dispatch(): lets the protocol eat buffered input until it stops consuming, holds
 * the connection, or the round budget is spent. Never recursive. */
static void conn_dispatch(struct net_conn *c)
{
    if (c->in_input) {
        c->again = true;
        return;
    }
    c->in_input = true;
    c->refs++;
    for (;;) { /* until the protocol stops consuming: a burst may hold many commands */
        c->again = false;
        if (c->phase != PH_OPEN || c->held || c->session == NULL)
            break;
        if (c->ssl)
            tls_pump(c); /* decrypted bytes that did not fit before */
        if (c->rlen == 0 && !c->again)
            break;
        size_t before = c->rlen;
        c->l->proto->input(c->session, c);
        if (c->rlen == before && !c->again)
            break; /* the protocol waits for more bytes */
    }
    c->in_input = false;
    net_conn_flush(c);
    if (c->peer_eof && c->phase == PH_OPEN && !c->held)
        net_conn_close(c);
    update_reading(c);
    if (c->rlen == 0 && c->rcap > 4096) { /* idle connections keep no big buffer */
        free(c->rbuf);
        c->rbuf = NULL;
        c->rcap = 0;
    }
    net_conn_unref(c);
}

/* ---- opening the protocol, TLS ---- */

static void proto_open(struct net_conn *c)
{
    c->phase = PH_OPEN;
    c->session = c->l->proto->open(c);
    if (c->session == NULL) {
        net_conn_flush(c);
        net_conn_close(c);
        return;
    }
    net_conn_flush(c);
    conn_dispatch(c);
}

static int tls_begin(struct net_conn *c)
{
    c->ssl = SSL_new(c->w->s->ssl);
    if (c->ssl == NULL)
        return -1;
    BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());
    if (rbio == NULL || wbio == NULL) {
        BIO_free(rbio);
        BIO_free(wbio);
        SSL_free(c->ssl);
        c->ssl = NULL;
        return -1;
    }
    BIO_set_mem_eof_return(rbio, -1); /* empty = want read, not EOF */
    SSL_set_bio(c->ssl, rbio, wbio);
    SSL_set_accept_state(c->ssl);
    return 0;
}

/* tls_pump(): advances the handshake, then decrypts into the read buffer while there is
 * room. Errors close the connection. */
static void tls_pump(struct net_conn *c)
{
    if (!SSL_is_init_finished(c->ssl)) {
        int r = SSL_do_handshake(c->ssl);
        flush_wbio(c);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ)
                return;
            unsigned long code = ERR_get_error();
            char buf[128] = "";
            if (code)
                ERR_error_string_n(code, buf, sizeof buf);
            ERR_clear_error();
            char q[LOG_Q_MAX];
            net_conn_log(c, LOG_INFO, "tls.handshake_failed", "error=%s", log_q(q, buf));
            conn_close_now(c);
            return;
        }
        net_conn_log(c, c->probe ? LOG_DEBUG : LOG_INFO, "tls.established", "version=%s cipher=%s",
                     SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl));
        if (c->phase == PH_TLS_ACCEPT) {
            proto_open(c);
            return;
        }
        if (c->tls_pending_starttls) {
            c->tls_pending_starttls = false;
            if (c->l->proto->tls_ready)
                c->l->proto->tls_ready(c->session, c);
            net_conn_flush(c);
        }
    }
    while (c->rlen < NET_RBUF_MAX) {
        if (!ensure(&c->rbuf, &c->rcap,
                    c->rlen + 16384 < NET_RBUF_MAX ? c->rlen + 16384 : NET_RBUF_MAX,
                    NET_RBUF_MAX)) {
            conn_close_now(c);
            return;
        }
        size_t n = 0;
        if (SSL_read_ex(c->ssl, c->rbuf + c->rlen, c->rcap - c->rlen, &n) == 1) {
            c->rlen += n;
            c->again = true;
            continue;
        }
        int e = SSL_get_error(c->ssl, 0);
        if (e == SSL_ERROR_WANT_READ)
            break;
        ERR_clear_error();
        if (e == SSL_ERROR_ZERO_RETURN)
            c->peer_eof = true;
        else
            conn_close_now(c);
        break;
    }
    flush_wbio(c); /* TLS 1.3 may answer (KeyUpdate) while reading */
}

int net_conn_starttls(struct net_conn *c)
{
    /* At this point there must be no pending plaintext (CVE-2011-0411 class): whatever
     * the client pipelined after STARTTLS is dropped, never read as protected. */
    c->rlen = 0;
    net_conn_flush(c);
    if (c->ssl || tls_begin(c) != 0)
        return -1;
    c->tls_pending_starttls = true;
    return 0;
}

/* ---- the PROXY phase ---- */

static void proxy_phase(struct net_conn *c)
{
    struct pp_info info;
    long n = pp_parse(c->rbuf, c->rlen, &info);
    if (n == 0) {
        if (c->rlen >= PP_V1_MAX + 16 + PP_V2_TLV_MAX)
            n = -1;
        else
            return;
    }
    if (n < 0) {
        net_conn_log(c, LOG_WARN, "proxy.bad_header", "bytes=%zu", c->rlen);
        conn_close_now(c);
        return;
    }
    net_conn_consume(c, (size_t) n);
    if (!info.local && info.has_addr) {
        char via[INET6_ADDRSTRLEN];
        snprintf(via, sizeof via, "%s", c->peer_str);
        set_peer(c, &info.src);
        net_conn_log(c, LOG_INFO, "proxy.header", "version=%d via=%s listener=%s port=%u",
                     info.version, via, c->l->name, c->l->port);
    }
    c->probe = info.local; /* PROXY LOCAL: the balancer's own health check */
    uv_timer_stop(&c->timer);
    if (!ip_acquire(c->w->s, &c->peer)) {
        net_conn_log(c, LOG_WARN, "net.limit", "reason=per_ip");
        conn_close_now(c);
        return;
    }
    c->counted_ip = true;
    if (c->l->tls == NET_TLS_IMPLICIT) {
        c->phase = PH_TLS_ACCEPT;
        if (tls_begin(c) != 0) {
            conn_close_now(c);
            return;
        }
        net_conn_timeout(c, NET_PROXY_TIMEOUT * 6);
        if (c->rlen) { /* a ClientHello in the same segment as the header */
            BIO_write(SSL_get_rbio(c->ssl), c->rbuf, (int) c->rlen);
            c->rlen = 0;
        }
        tls_pump(c);
        return;
    }
    proto_open(c);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct net_conn *c = s->data;
    if (n == 0)
        return;
    if (n < 0) {
        if (n == UV_EOF && c->phase == PH_OPEN) {
            /* a half-close: answer what was sent (and any pending commit), then close */
            c->peer_eof = true;
            if (c->reading) {
                uv_read_stop(s);
                c->reading = false;
            }
            conn_dispatch(c);
            return;
        }
        conn_close_now(c);
        return;
    }
    bool first = !c->ever_read;
    c->ever_read = true;
    c->refs++;
    if (c->ssl) {
        BIO_write(SSL_get_rbio(c->ssl), b->base, (int) n);
        tls_pump(c);
    } else {
        if (!ensure(&c->rbuf, &c->rcap, c->rlen + (size_t) n, NET_RBUF_MAX)) {
            conn_close_now(c);
            net_conn_unref(c);
            return;
        }
        memcpy(c->rbuf + c->rlen, b->base, (size_t) n);
        c->rlen += (size_t) n;
        if (first && c->phase == PH_OPEN && c->rlen >= 5 &&
            (memcmp(c->rbuf, "PROXY", 5) == 0 ||
             memcmp(c->rbuf, "\r\n\r\n\0\r\nQUIT\n", c->rlen < 12 ? c->rlen : 12) == 0)) {
            net_conn_log(c, LOG_WARN, "proxy.untrusted", "reason=header_from_untrusted_peer");
            conn_close_now(c);
            net_conn_unref(c);
            return;
        }
    }
    if (c->phase == PH_PROXY)
        proxy_phase(c);
    else if (c->phase == PH_TLS_ACCEPT && c->ssl && SSL_is_init_finished(c->ssl))
        ; /* proto_open ran inside tls_pump */
    else if (c->phase == PH_OPEN && !c->held) {
        if (c->timeout_ms)
            net_conn_timeout(c, c->timeout_ms);
        conn_dispatch(c);
    }
    update_reading(c);
    net_conn_unref(c);
}

/* ---- closing ---- */

static void on_handle_closed(uv_handle_t *h)
{
    struct net_conn *c = h->data;
    if (--c->handles == 0) {
        struct net_worker *w = c->w;
        net_conn_watch(c, 0);
        if (c->prev)
            c->prev->next = c->next;
        else
            w->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        atomic_fetch_sub(&w->s->nconns, 1);
        if (c->counted_ip)
            ip_release(w->s, &c->peer);
        net_conn_unref(c);
    }
}

static void conn_close_now(struct net_conn *c)
{
    if (c->handles == 0 || uv_is_closing((uv_handle_t *) &c->tcp))
        return;
    c->phase = PH_CLOSING;
    uv_close((uv_handle_t *) &c->tcp, on_handle_closed);
    uv_close((uv_handle_t *) &c->timer, on_handle_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct net_conn *c = req->data;
    free(req);
    conn_close_now(c);
    net_conn_unref(c);
}

void net_conn_close(struct net_conn *c)
{
    if (c->phase == PH_CLOSING)
        return;
    net_conn_flush(c);
    if (c->ssl && SSL_is_init_finished(c->ssl)) {
        SSL_shutdown(c->ssl); /* close_notify */
        flush_wbio(c);
    }
    c->phase = PH_CLOSING;
    if (c->handles == 0)
        return;
    if (c->reading) {
        uv_read_stop((uv_stream_t *) &c->tcp);
        c->reading = false;
    }
    uv_timer_stop(&c->timer);
    uv_shutdown_t *req = malloc(sizeof *req);
    if (req == NULL) {
        conn_close_now(c);
        return;
    }
    req->data = c;
    c->refs++;
    if (uv_shutdown(req, (uv_stream_t *) &c->tcp, on_shutdown) != 0) {
        free(req);
        c->refs--;
        conn_close_now(c);
    }
}

/* ---- accepting ---- */

static void on_connection(uv_stream_t *server, int status)
{
    struct net_worker *w = server->data;
    if (status < 0)
        return;
    size_t li = 0;
    for (; li < w->nlisteners; li++)
        if ((uv_stream_t *) &w->listeners[li] == server)
            break;
    struct net_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return;
    c->w = w;
    c->l = &w->s->listens[li];
    uv_tcp_init(&w->loop, &c->tcp);
    uv_timer_init(&w->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    c->refs = 1;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    atomic_fetch_add(&w->s->nconns, 1);
    uint8_t rnd[NET_SID_LEN / 2];
    RAND_bytes(rnd, sizeof rnd);
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(c->sid + 2 * i, 3, "%02x", rnd[i]);
    if (uv_accept(server, (uv_stream_t *) &c->tcp) != 0) {
        conn_close_now(c);
        return;
    }
    struct sockaddr_storage ss;
    int len = sizeof ss;
    memset(&ss, 0, sizeof ss);
    uv_tcp_getpeername(&c->tcp, (struct sockaddr *) &ss, &len);
    set_peer(c, &ss);
    uv_tcp_nodelay(&c->tcp, 1);
    if (atomic_load(&w->s->nconns) > w->s->max_conns) {
        net_conn_log(c, LOG_WARN, "net.limit", "reason=max_connections");
        conn_close_now(c);
        return;
    }
    /* from the load balancer, the PROXY header names the client: logged then (or not at
     * all for its health checks, which arrive every second or so) */
    bool via_proxy = trusted(w->s, &c->peer);
    net_conn_log(c, via_proxy ? LOG_DEBUG : LOG_INFO, "net.connect", "listener=%s port=%u",
                 c->l->name, c->l->port);
    if (uv_read_start((uv_stream_t *) &c->tcp, on_alloc, on_read) == 0)
        c->reading = true;
    if (via_proxy) {
        c->phase = PH_PROXY;
        uv_timer_start(&c->timer, on_timer, NET_PROXY_TIMEOUT, 0);
        return;
    }
    /* no PROXY header expected: run the rest of the PROXY phase with nothing to parse */
    if (!ip_acquire(w->s, &c->peer)) {
        net_conn_log(c, LOG_WARN, "net.limit", "reason=per_ip");
        conn_close_now(c);
        return;
    }
    c->counted_ip = true;
    if (c->l->tls == NET_TLS_IMPLICIT) {
        c->phase = PH_TLS_ACCEPT;
        if (tls_begin(c) != 0) {
            conn_close_now(c);
            return;
        }
        uv_timer_start(&c->timer, on_timer, NET_PROXY_TIMEOUT * 6, 0);
        return;
    }
    proto_open(c);
}

/* ---- workers ---- */

static int bind_listener(struct net_worker *w, uv_tcp_t *h, const struct net_listen *l, char *err,
                         size_t errlen)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    int family;
    if (uv_ip4_addr(l->host, l->port, (struct sockaddr_in *) &ss) == 0)
        family = AF_INET;
    else if (uv_ip6_addr(l->host, l->port, (struct sockaddr_in6 *) &ss) == 0)
        family = AF_INET6;
    else {
        snprintf(err, errlen, "listen.%s: '%s' is not an IP address", l->name, l->host);
        return -1;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *) &ss,
             family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)) != 0 ||
        listen(fd, 511) != 0) {
        snprintf(err, errlen, "listen.%s %s:%u: %s", l->name, l->host, l->port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    uv_tcp_init(&w->loop, h);
    h->data = w;
    int rv = uv_tcp_open(h, fd);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *) h, 511, on_connection);
    if (rv != 0) {
        snprintf(err, errlen, "listen.%s: %s", l->name, uv_strerror(rv));
        return -1;
    }
    return 0;
}

/*
 * probe_port(): SO_REUSEPORT lets our workers share a port, but it would also let a second
 * ternd (same user) bind the same port silently and take half the connections. A plain
 * bind first proves that nobody else listens there.
 */
static int probe_port(const struct net_listen *l, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    int family = AF_INET;
    socklen_t sl = sizeof(struct sockaddr_in);
    if (uv_ip4_addr(l->host, l->port, (struct sockaddr_in *) &ss) != 0) {
        if (uv_ip6_addr(l->host, l->port, (struct sockaddr_in6 *) &ss) != 0) {
            snprintf(err, errlen, "listen.%s: '%s' is not an IP address", l->name, l->host);
            return -1;
        }
        family = AF_INET6;
        sl = sizeof(struct sockaddr_in6);
    }
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *) &ss, sl) != 0) {
        snprintf(err, errlen, "listen.%s %s:%u: %s", l->name, l->host, l->port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

static void on_closed_quiet(uv_handle_t *h)
{
    (void) h;
}

static void on_stop(uv_async_t *a)
{
    struct net_worker *w = a->data;
    for (size_t i = 0; i < w->nlisteners; i++)
        if (!uv_is_closing((uv_handle_t *) &w->listeners[i]))
            uv_close((uv_handle_t *) &w->listeners[i], on_closed_quiet);
    for (struct net_conn *c = w->conns; c; c = c->next)
        conn_close_now(c);
    uv_close((uv_handle_t *) &w->stop, on_closed_quiet);
    loopq_close(&w->q);
}

static void *worker_main(void *arg)
{
    struct net_worker *w = arg;
    struct net_server *s = w->s;
    sigset_t all;
    sigfillset(&all);
    sigdelset(&all, SIGSEGV); /* faults must still kill with a report */
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    int rv = 0;
    w->listeners = calloc(s->nlistens, sizeof *w->listeners);
    if (w->listeners == NULL) {
        snprintf(w->start_err, sizeof w->start_err, "out of memory");
        rv = -1;
    }
    for (size_t i = 0; rv == 0 && i < s->nlistens; i++) {
        rv = bind_listener(w, &w->listeners[i], &s->listens[i], w->start_err, sizeof w->start_err);
        if (rv == 0)
            w->nlisteners++;
    }
    pthread_mutex_lock(&s->startmu);
    w->start_rv = rv;
    w->started = true;
    pthread_cond_broadcast(&s->startcv);
    pthread_mutex_unlock(&s->startmu);
    if (rv != 0)
        on_stop(&w->stop);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    while (loopq_drain(&w->q) > 0) /* completions that arrived while closing */
        uv_run(&w->loop, UV_RUN_DEFAULT);
    loopq_destroy(&w->q);
    return NULL;
}

int net_start(const struct net_node *node, const struct net_listen *listens, size_t n,
              const char *data_dir, struct net_server **out, char *err, size_t errlen)
{
    struct net_server *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->node = *node;
    s->listens = calloc(n ? n : 1, sizeof *s->listens);
    s->iptable = calloc(IPTABLE_SIZE, sizeof *s->iptable);
    if (s->listens == NULL || s->iptable == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    memcpy(s->listens, listens, n * sizeof *listens);
    s->nlistens = n;
    for (size_t i = 0; i < n; i++) /* the caller's host strings may die: keep copies */
        s->listens[i].host = NULL;
    for (size_t i = 0; i < n; i++)
        if ((s->listens[i].host = strdup(listens[i].host)) == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    s->max_conns = config_uint(node->cfg, "net", "max_connections");
    s->max_per_ip = config_uint(node->cfg, "net", "max_per_ip");
    if (parse_trusted(s, config_str(node->cfg, "net", "proxy_trusted"), err, errlen) != 0)
        goto fail;
    pthread_mutex_init(&s->ipmu, NULL);
    pthread_mutex_init(&s->startmu, NULL);
    pthread_cond_init(&s->startcv, NULL);
    s->ssl = tls_server_ctx(config_str(node->cfg, "tls", "cert_file"),
                            config_str(node->cfg, "tls", "key_file"), data_dir, node->hostname, err,
                            errlen);
    if (s->ssl == NULL)
        goto fail;

    for (size_t i = 0; i < n; i++)
        if (probe_port(&s->listens[i], err, errlen) != 0)
            goto fail;
    size_t nw = config_uint(node->cfg, "net", "workers");
    if (nw == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        nw = cpus > 0 ? (size_t) cpus : 1;
    }
    if (nw > NET_WORKERS_MAX)
        nw = NET_WORKERS_MAX;
    s->workers = calloc(nw, sizeof *s->workers);
    if (s->workers == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    int failed = 0;
    for (size_t i = 0; i < nw; i++) {
        struct net_worker *w = &s->workers[i];
        w->s = s;
        w->index = (int) i;
        uv_loop_init(&w->loop);
        uv_async_init(&w->loop, &w->stop, on_stop);
        w->stop.data = w;
        loopq_init(&w->q, &w->loop);
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            snprintf(err, errlen, "cannot start worker threads");
            uv_close((uv_handle_t *) &w->stop, NULL);
            loopq_close(&w->q);
            uv_run(&w->loop, UV_RUN_DEFAULT);
            uv_loop_close(&w->loop);
            failed = 1;
            break;
        }
        s->nworkers++;
    }
    pthread_mutex_lock(&s->startmu);
    for (size_t i = 0; i < s->nworkers; i++) {
        while (!s->workers[i].started)
            pthread_cond_wait(&s->startcv, &s->startmu);
        if (s->workers[i].start_rv != 0 && !failed) {
            snprintf(err, errlen, "%s", s->workers[i].start_err);
            failed = 1;
        }
    }
    pthread_mutex_unlock(&s->startmu);
    if (failed) {
        net_stop(s);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        log_info("net.listen", "listener=%s address=%s:%u tls=%s workers=%zu", listens[i].name,
                 listens[i].host, listens[i].port,
                 listens[i].tls == NET_TLS_IMPLICIT   ? "implicit"
                 : listens[i].tls == NET_TLS_STARTTLS ? "starttls"
                                                      : "none",
                 s->nworkers);
    *out = s;
    return 0;
fail:
    if (s->ssl)
        SSL_CTX_free(s->ssl);
    for (size_t i = 0; s->listens && i < s->nlistens; i++)
        free((char *) s->listens[i].host);
    free(s->listens);
    free(s->iptable);
    free(s);
    return -1;
}

void net_stop(struct net_server *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->nworkers; i++)
        uv_async_send(&s->workers[i].stop);
    for (size_t i = 0; i < s->nworkers; i++) {
        struct net_worker *w = &s->workers[i];
        pthread_join(w->thread, NULL);
        uv_loop_close(&w->loop);
        free(w->listeners);
    }
    free(s->workers);
    SSL_CTX_free(s->ssl);
    pthread_mutex_destroy(&s->ipmu);
    for (size_t i = 0; i < s->nlistens; i++)
        free((char *) s->listens[i].host);
    free(s->listens);
    free(s->iptable);
    free(s);
}
