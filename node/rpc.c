/*
 * node/rpc.c
 * Internal RPC (see rpc.h). Everything below runs on the RPC thread's loop except the
 * public entry points, which reach the loop through a loopq.
 *
 * Connections: one struct conn per TCP connection, inbound (a peer calls us) or outbound
 * (we call a peer, one per address, reused). An outbound connection that failed to
 * connect stays in the list, DOWN, so calls to that address fail at once for
 * RPC_CONNECT_RETRY_MS instead of each waiting for a refused connect.
 *
 * Ownership: a conn is freed when it is closed and no inbound call (struct rpc_call)
 * still points at it (refs). An out_req belongs to its conn's list until answered,
 * failed or timed out; its DONE is called exactly once.
 */
#include "rpc.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <raft.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "frame.h"
#include "log.h"

#define RPC_TICK_MS           100
#define RPC_RBUF_MIN          (64 * 1024)
#define RPC_HANDSHAKES_MAX    64    /* unauthenticated connections heard at once */
#define RPC_REFUSED_LOGS      5     /* refused handshakes logged ... */
#define RPC_REFUSED_WINDOW_MS 10000 /* ... per this long */

enum conn_state { C_CONNECTING, C_READY, C_DOWN, C_CLOSED };

struct out_req {
    struct rpc *r;
    uint64_t id;
    uint8_t *frame; /* header + packed request (malloc) */
    size_t len;
    uint64_t deadline_ms;
    bool sent;
    rpc_done_cb *done;
    void *arg;
    char address[64];
    struct out_req *next, *prev;
};

struct conn {
    struct rpc *r;
    uv_tcp_t *tcp; /* raft_malloc'd by auth (see auth.h) */
    bool outbound;
    enum conn_state state;
    char address[64]; /* outbound: the peer's; inbound: as the peer authenticated */
    struct auth_req *auth;
    uint8_t *rbuf;
    size_t rlen, rcap;
    struct out_req *head, *tail; /* outbound calls: unsent, then sent */
    int refs;                    /* inbound calls not answered yet */
    uint64_t down_until_ms;
    struct conn *next, *prev;
};

struct rpc_call {
    struct conn *conn;
    uint64_t id;
    uint8_t *frame; /* the packed answer, between rpc_reply and the loop */
    size_t len;
};

struct handshake { /* an inbound connection proving itself */
    struct rpc *r;
    char peer[64]; /* address:port as TCP saw it, for the refusal log */
    struct auth_req *auth;
    struct handshake *next, *prev;
};

struct rpc {
    struct rpc_config cfg;
    char address[64];
    pthread_t thread;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_timer_t tick;
    struct loopq q;
    struct conn *conns;
    struct handshake *handshakes;
    unsigned n_handshakes; /* in flight; strangers beyond RPC_HANDSHAKES_MAX are closed */
    uint64_t refused_window_ms;
    unsigned refused_logged;
    _Atomic uint64_t next_id;
    _Atomic bool stopped;
    bool closing;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool started;
    int start_rv;
    char start_err[256];
};

struct write_req {
    uv_write_t req;
    size_t len;
    uint8_t data[];
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

/* ---- frames ---- */

static uint8_t *pack_frame(const ProtobufCMessage *m, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *f = malloc(FRAME_HDR + n);
    if (f == NULL)
        return NULL;
    frame_header(f, (uint32_t) n);
    protobuf_c_message_pack(m, f + FRAME_HDR);
    *len = FRAME_HDR + n;
    return f;
}

static void on_written(uv_write_t *w, int status)
{
    (void) status; /* a failed write shows up as a read error and closes the conn */
    free(w);
}

static int conn_write(struct conn *k, const uint8_t *frame, size_t len)
{
    struct write_req *w = malloc(sizeof *w + len);
    if (w == NULL)
        return -1;
    memcpy(w->data, frame, len);
    w->len = len;
    uv_buf_t b = uv_buf_init((char *) w->data, (unsigned) len);
    if (uv_write(&w->req, (uv_stream_t *) k->tcp, &b, 1, on_written) != 0) {
        free(w);
        return -1;
    }
    return 0;
}

/* ---- outbound calls ---- */

static void req_unlink(struct conn *k, struct out_req *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        k->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        k->tail = q->prev;
    q->next = q->prev = NULL;
}

static void req_finish(struct out_req *q, int status, const Tern__RpcResponse *resp)
{
    q->done(q->arg, status, resp);
    free(q->frame);
    free(q);
}

static void conn_fail_calls(struct conn *k, int sent_status, int unsent_status)
{
    while (k->head) {
        struct out_req *q = k->head;
        req_unlink(k, q);
        req_finish(q, q->sent ? sent_status : unsent_status, NULL);
    }
}

static void conn_maybe_free(struct conn *k)
{
    if (k->state != C_CLOSED || k->refs > 0 || k->tcp != NULL)
        return;
    free(k->rbuf);
    free(k);
}

static void conn_unlist(struct conn *k)
{
    struct rpc *r = k->r;
    if (k->prev)
        k->prev->next = k->next;
    else if (r->conns == k)
        r->conns = k->next;
    if (k->next)
        k->next->prev = k->prev;
    k->next = k->prev = NULL;
}

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *k = h->data;
    raft_free(h);
    k->tcp = NULL;
    conn_maybe_free(k);
}

/* conn_close(): an outbound conn becomes DOWN (kept for fail-fast) unless the rpc is
 * closing; an inbound one is gone. */
static void conn_close(struct conn *k, const char *why)
{
    if (k->state == C_CLOSED || k->state == C_DOWN)
        return;
    if (why)
        log_info("rpc.conn_closed", "peer=%s dir=%s reason=%s", k->address,
                 k->outbound ? "out" : "in", why);
    if (k->tcp) {
        uv_tcp_t *t = k->tcp; /* freed in on_conn_closed; the conn may outlive it */
        t->data = k;
        uv_close((uv_handle_t *) t, on_conn_closed);
    }
    k->rlen = 0;
    if (k->outbound && !k->r->closing) {
        conn_fail_calls(k, RPC_ELOST, RPC_EUNREACHABLE);
        k->state = C_DOWN;
        k->down_until_ms = now_ms() + RPC_CONNECT_RETRY_MS;
        /* tcp is closing; the struct stays listed, reconnects later */
        return;
    }
    conn_fail_calls(k, k->r->closing ? RPC_ESHUTDOWN : RPC_ELOST,
                    k->r->closing ? RPC_ESHUTDOWN : RPC_EUNREACHABLE);
    k->state = C_CLOSED;
    conn_unlist(k);
    conn_maybe_free(k);
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *k = h->data;
    (void) suggested;
    size_t want = k->rlen + RPC_RBUF_MIN;
    if (k->rlen >= FRAME_HDR) { /* make room for the whole announced frame */
        uint32_t n = (uint32_t) k->rbuf[0] << 24 | (uint32_t) k->rbuf[1] << 16 |
                     (uint32_t) k->rbuf[2] << 8 | k->rbuf[3];
        if ((size_t) n <= k->r->cfg.frame_max && FRAME_HDR + (size_t) n > want)
            want = FRAME_HDR + (size_t) n;
    }
    if (want > k->rcap) {
        uint8_t *nb = realloc(k->rbuf, want);
        if (nb == NULL) {
            *buf = uv_buf_init(NULL, 0); /* read fails with ENOBUFS: the conn closes */
            return;
        }
        k->rbuf = nb;
        k->rcap = want;
    }
    *buf = uv_buf_init((char *) k->rbuf + k->rlen, (unsigned) (k->rcap - k->rlen));
}

static void handle_request(struct conn *k, const uint8_t *p, size_t n)
{
    Tern__RpcRequest *req = tern__rpc_request__unpack(NULL, n, p);
    if (req == NULL) {
        conn_close(k, "undecodable request");
        return;
    }
    struct rpc_call *call = calloc(1, sizeof *call);
    if (call == NULL) {
        tern__rpc_request__free_unpacked(req, NULL);
        conn_close(k, "out of memory");
        return;
    }
    call->conn = k;
    call->id = req->id;
    k->refs++;
    k->r->cfg.handler(k->r->cfg.ctx, call, req);
    tern__rpc_request__free_unpacked(req, NULL);
}

static void handle_response(struct conn *k, const uint8_t *p, size_t n)
{
    Tern__RpcResponse *resp = tern__rpc_response__unpack(NULL, n, p);
    if (resp == NULL) {
        conn_close(k, "undecodable response");
        return;
    }
    struct out_req *q = k->head;
    while (q && q->id != resp->id)
        q = q->next;
    if (q) { /* else it timed out already */
        req_unlink(k, q);
        req_finish(q, 0, resp);
    }
    tern__rpc_response__free_unpacked(resp, NULL);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *k = s->data;
    (void) buf;
    if (nread < 0) {
        conn_close(k, nread == UV_EOF ? NULL : uv_strerror((int) nread));
        return;
    }
    k->rlen += (size_t) nread;
    size_t off = 0;
    while (k->state == C_READY) {
        const uint8_t *payload;
        long n = frame_parse(k->rbuf + off, k->rlen - off, k->r->cfg.frame_max, &payload);
        if (n == -1)
            break;
        if (n == -2) {
            conn_close(k, "frame too large");
            return;
        }
        if (k->outbound)
            handle_response(k, payload, (size_t) n);
        else
            handle_request(k, payload, (size_t) n);
        off += FRAME_HDR + (size_t) n;
    }
    if (k->state != C_READY)
        return;
    if (off > 0) {
        memmove(k->rbuf, k->rbuf + off, k->rlen - off);
        k->rlen -= off;
    }
    if (k->rlen == 0 && k->rcap > 4 * RPC_RBUF_MIN) { /* give a big frame's memory back */
        free(k->rbuf);
        k->rbuf = NULL;
        k->rcap = 0;
    }
}

static int conn_ready(struct conn *k, uv_tcp_t *tcp)
{
    k->tcp = tcp;
    tcp->data = k;
    uv_tcp_nodelay(tcp, 1);
    k->state = C_READY;
    if (uv_read_start((uv_stream_t *) tcp, on_alloc, on_read) != 0) {
        conn_close(k, "read start");
        return -1;
    }
    return 0;
}

/* ---- outbound connections ---- */

static void flush_unsent(struct conn *k)
{
    for (struct out_req *q = k->head; q && k->state == C_READY; q = q->next) {
        if (q->sent)
            continue;
        if (conn_write(k, q->frame, q->len) != 0) {
            conn_close(k, "write");
            return;
        }
        q->sent = true;
        free(q->frame); /* not needed once written */
        q->frame = NULL;
    }
}

static void on_connected(void *arg, uv_tcp_t *tcp, int status, uint64_t peer_id,
                         const char *peer_addr)
{
    struct conn *k = arg;
    (void) peer_id;
    (void) peer_addr;
    k->auth = NULL;
    if (status != 0) {
        if (k->r->closing) {
            conn_fail_calls(k, RPC_ESHUTDOWN, RPC_ESHUTDOWN);
            k->state = C_CLOSED;
            conn_unlist(k);
            conn_maybe_free(k);
            return;
        }
        /* a peer that closes on our hello, or whose proof fails, does not share our
         * secret: say so, rather than "unreachable" */
        int why = status == AUTH_ECLOSED || status == AUTH_EPROOF ? RPC_EAUTH : RPC_EUNREACHABLE;
        log_info("rpc.connect_failed", "peer=%s error=\"%s\"", k->address, auth_strerror(status));
        conn_fail_calls(k, why, why);
        k->state = C_DOWN;
        k->down_until_ms = now_ms() + RPC_CONNECT_RETRY_MS;
        return;
    }
    if (conn_ready(k, tcp) == 0)
        flush_unsent(k);
}

static void conn_connect(struct conn *k)
{
    struct rpc *r = k->r;
    k->state = C_CONNECTING;
    if (auth_connect(&r->loop, k->address, r->cfg.key, "rpc", r->cfg.id, r->address,
                     RPC_HANDSHAKE_MS, on_connected, k, &k->auth) != 0) {
        conn_fail_calls(k, RPC_EUNREACHABLE, RPC_EUNREACHABLE);
        k->state = C_DOWN;
        k->down_until_ms = now_ms() + RPC_CONNECT_RETRY_MS;
    }
}

static struct conn *out_conn(struct rpc *r, const char *address)
{
    for (struct conn *k = r->conns; k; k = k->next)
        if (k->outbound && strcmp(k->address, address) == 0)
            return k;
    struct conn *k = calloc(1, sizeof *k);
    if (k == NULL)
        return NULL;
    k->r = r;
    k->outbound = true;
    k->state = C_DOWN;
    snprintf(k->address, sizeof k->address, "%s", address);
    k->next = r->conns;
    if (r->conns)
        r->conns->prev = k;
    r->conns = k;
    return k;
}

static void send_on_loop(void *arg)
{
    struct out_req *q = arg;
    struct rpc *r = q->r;
    if (r->closing || atomic_load(&r->stopped))
        return req_finish(q, RPC_ESHUTDOWN, NULL);
    struct conn *k = out_conn(r, q->address);
    if (k == NULL)
        return req_finish(q, RPC_ENOMEM, NULL);
    if (k->state == C_DOWN) {
        if (now_ms() < k->down_until_ms)
            return req_finish(q, RPC_EUNREACHABLE, NULL);
        if (k->tcp != NULL) /* the last connection is still closing */
            return req_finish(q, RPC_EUNREACHABLE, NULL);
        conn_connect(k);
        if (k->state == C_DOWN)
            return req_finish(q, RPC_EUNREACHABLE, NULL);
    }
    q->prev = k->tail;
    if (k->tail)
        k->tail->next = q;
    else
        k->head = q;
    k->tail = q;
    if (k->state == C_READY)
        flush_unsent(k);
}

int rpc_send(struct rpc *r, const char *address, Tern__RpcRequest *req, unsigned timeout_ms,
             rpc_done_cb *done, void *arg)
{
    struct out_req *q = calloc(1, sizeof *q);
    if (q == NULL)
        return -1;
    req->id = atomic_fetch_add(&r->next_id, 1) + 1;
    q->id = req->id;
    size_t n = tern__rpc_request__get_packed_size(req);
    q->r = r;
    q->frame = malloc(FRAME_HDR + n);
    if (q->frame == NULL) {
        free(q);
        return -1;
    }
    frame_header(q->frame, (uint32_t) n);
    tern__rpc_request__pack(req, q->frame + FRAME_HDR);
    q->len = FRAME_HDR + n;
    q->deadline_ms = now_ms() + timeout_ms;
    q->done = done;
    q->arg = arg;
    snprintf(q->address, sizeof q->address, "%s", address);
    if (atomic_load(&r->stopped) || loopq_post(&r->q, send_on_loop, q) != 0) {
        req_finish(q, RPC_ESHUTDOWN, NULL);
        return 0;
    }
    return 0;
}

/* ---- answers to inbound calls ---- */

static void reply_on_loop(void *arg)
{
    struct rpc_call *call = arg;
    struct conn *k = call->conn;
    if (k->state == C_READY && !atomic_load(&k->r->stopped) && call->frame &&
        conn_write(k, call->frame, call->len) != 0)
        conn_close(k, "write");
    k->refs--;
    free(call->frame);
    free(call);
    conn_maybe_free(k);
}

void rpc_reply(struct rpc_call *call, Tern__RpcResponse *resp)
{
    resp->id = call->id;
    call->frame = pack_frame(&resp->base, &call->len); /* NULL: the peer times out */
    struct rpc *r = call->conn->r;
    if (loopq_post(&r->q, reply_on_loop, call) != 0) {
        free(call->frame);
        free(call); /* the conn keeps a ref it never gives back: it leaks, not crashes */
    }
}

void rpc_reply_status(struct rpc_call *call, int status, const char *error)
{
    Tern__RpcResponse resp = TERN__RPC_RESPONSE__INIT;
    resp.status = status;
    resp.error = (char *) error;
    rpc_reply(call, &resp);
}

/* ---- inbound connections ---- */

static void hs_unlink(struct handshake *h)
{
    struct rpc *r = h->r;
    r->n_handshakes--;
    if (h->prev)
        h->prev->next = h->next;
    else
        r->handshakes = h->next;
    if (h->next)
        h->next->prev = h->prev;
}

static void on_accepted(void *arg, uv_tcp_t *tcp, int status, uint64_t peer_id,
                        const char *peer_addr)
{
    struct handshake *h = arg;
    struct rpc *r = h->r;
    hs_unlink(h);
    if (status != 0) { /* auth closed it */
        if (status != AUTH_ECANCELED) {
            uint64_t now = now_ms();
            if (now - r->refused_window_ms >= RPC_REFUSED_WINDOW_MS) {
                r->refused_window_ms = now;
                r->refused_logged = 0;
            }
            if (r->refused_logged++ < RPC_REFUSED_LOGS)
                log_warn("cluster.auth_refused", "peer=%s reason=\"%s\" dir=in port=rpc", h->peer,
                         auth_strerror(status));
        }
        free(h);
        return;
    }
    free(h);
    if (r->closing) {
        uv_close((uv_handle_t *) tcp, (uv_close_cb) raft_free);
        return;
    }
    struct conn *k = calloc(1, sizeof *k);
    if (k == NULL) {
        uv_close((uv_handle_t *) tcp, (uv_close_cb) raft_free);
        return;
    }
    k->r = r;
    snprintf(k->address, sizeof k->address, "%s", peer_addr ? peer_addr : "?");
    k->next = r->conns;
    if (r->conns)
        r->conns->prev = k;
    r->conns = k;
    log_debug("rpc.accepted", "peer=%s id=%llu", k->address, (unsigned long long) peer_id);
    conn_ready(k, tcp);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct rpc *r = server->data;
    if (status != 0 || r->closing)
        return;
    uv_tcp_t *tcp = raft_malloc(sizeof *tcp);
    if (tcp == NULL)
        return;
    uv_tcp_init(&r->loop, tcp);
    if (uv_accept(server, (uv_stream_t *) tcp) != 0) {
        uv_close((uv_handle_t *) tcp, (uv_close_cb) raft_free);
        return;
    }
    struct handshake *h = r->n_handshakes < RPC_HANDSHAKES_MAX ? calloc(1, sizeof *h) : NULL;
    if (h == NULL) { /* a flood of silent strangers must not starve members */
        uv_close((uv_handle_t *) tcp, (uv_close_cb) raft_free);
        return;
    }
    h->r = r;
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    char ip[48] = "?";
    if (uv_tcp_getpeername(tcp, (struct sockaddr *) &ss, &sl) == 0 && ss.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *) &ss;
        uv_ip4_name(sin, ip, sizeof ip);
        snprintf(h->peer, sizeof h->peer, "%s:%u", ip, ntohs(sin->sin_port));
    } else {
        snprintf(h->peer, sizeof h->peer, "%s", ip);
    }
    h->next = r->handshakes;
    if (r->handshakes)
        r->handshakes->prev = h;
    r->handshakes = h;
    r->n_handshakes++;
    if (auth_accept(tcp, r->cfg.key, "rpc", RPC_HANDSHAKE_MS, on_accepted, h, &h->auth) != 0) {
        hs_unlink(h);
        free(h);
        uv_close((uv_handle_t *) tcp, (uv_close_cb) raft_free);
    }
}

/* ---- timeouts, lifecycle ---- */

static void on_tick(uv_timer_t *t)
{
    struct rpc *r = t->data;
    uint64_t now = now_ms();
    for (struct conn *k = r->conns; k; k = k->next) {
        for (struct out_req *q = k->head, *n; q; q = n) {
            n = q->next;
            if (now >= q->deadline_ms) {
                req_unlink(k, q);
                req_finish(q, q->sent ? RPC_ETIMEDOUT : RPC_EUNREACHABLE, NULL);
            }
        }
    }
}

static void stop_on_loop(void *arg)
{
    struct rpc *r = arg;
    r->closing = true;
    uv_close((uv_handle_t *) &r->listener, NULL);
    uv_close((uv_handle_t *) &r->tick, NULL);
    for (struct handshake *h = r->handshakes; h; h = h->next)
        auth_cancel(h->auth); /* on_accepted runs later with a failure and frees h */
    for (struct conn *k = r->conns, *n; k; k = n) {
        n = k->next;
        if (k->state == C_CONNECTING && k->auth) {
            auth_cancel(k->auth); /* on_connected fails the calls and frees k */
            continue;
        }
        if (k->state == C_DOWN) {
            conn_fail_calls(k, RPC_ESHUTDOWN, RPC_ESHUTDOWN);
            k->state = C_CLOSED;
            conn_unlist(k);
            conn_maybe_free(k);
            continue;
        }
        conn_close(k, NULL);
    }
    loopq_close(&r->q);
}

static void *thread_main(void *arg)
{
    struct rpc *r = arg;
    sigset_t all;
    sigfillset(&all);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    while (loopq_drain(&r->q) > 0)
        uv_run(&r->loop, UV_RUN_DEFAULT);
    return NULL;
}

int rpc_start(const struct rpc_config *cfg, struct rpc **out, char *err, size_t errlen)
{
    struct rpc *r = calloc(1, sizeof *r);
    if (r == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    r->cfg = *cfg;
    snprintf(r->address, sizeof r->address, "%s", cfg->address);
    r->cfg.address = r->address;
    if (uv_loop_init(&r->loop) != 0) {
        snprintf(err, errlen, "rpc loop");
        free(r);
        return -1;
    }
    loopq_init(&r->q, &r->loop);
    uv_timer_init(&r->loop, &r->tick);
    r->tick.data = r;
    uv_tcp_init(&r->loop, &r->listener);
    r->listener.data = r;

    char host[64];
    snprintf(host, sizeof host, "%s", cfg->address);
    char *colon = strrchr(host, ':');
    struct sockaddr_in sa;
    int rv = -1;
    if (colon) {
        *colon = 0;
        rv = uv_ip4_addr(host, atoi(colon + 1), &sa);
    }
    if (rv == 0)
        rv = uv_tcp_bind(&r->listener, (const struct sockaddr *) &sa, 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *) &r->listener, 128, on_connection);
    if (rv != 0) {
        snprintf(err, errlen, "cluster.rpc_address %s: %s", cfg->address,
                 colon ? uv_strerror(rv) : "bad address");
        uv_close((uv_handle_t *) &r->listener, NULL);
        uv_close((uv_handle_t *) &r->tick, NULL);
        loopq_close(&r->q);
        uv_run(&r->loop, UV_RUN_DEFAULT);
        loopq_destroy(&r->q);
        uv_loop_close(&r->loop);
        free(r);
        return -1;
    }
    uv_timer_start(&r->tick, on_tick, RPC_TICK_MS, RPC_TICK_MS);
    if (pthread_create(&r->thread, NULL, thread_main, r) != 0) {
        snprintf(err, errlen, "cannot start the rpc thread");
        stop_on_loop(r);
        uv_run(&r->loop, UV_RUN_DEFAULT);
        loopq_destroy(&r->q);
        uv_loop_close(&r->loop);
        free(r);
        return -1;
    }
    r->started = true;
    log_info("rpc.listen", "address=%s", r->address);
    *out = r;
    return 0;
}

void rpc_stop(struct rpc *r)
{
    if (r == NULL || !r->started || atomic_load(&r->stopped))
        return;
    if (loopq_post(&r->q, stop_on_loop, r) != 0)
        abort(); /* cannot reach the loop: nothing sane left */
    pthread_join(r->thread, NULL);
    atomic_store(&r->stopped, true);
    while (loopq_drain(&r->q) > 0) /* posted after the loop ended: fail or drop them */
        ;
}

void rpc_free(struct rpc *r)
{
    if (r == NULL)
        return;
    rpc_stop(r);
    loopq_destroy(&r->q);
    uv_loop_close(&r->loop);
    free(r);
}

uv_loop_t *rpc_loop(struct rpc *r)
{
    return &r->loop;
}

struct loopq *rpc_loopq(struct rpc *r)
{
    return &r->q;
}
