/*
 * raft/transport.c
 * A struct raft_uv_transport (libraft 0.15, raft/uv.h) whose connections run the cluster
 * handshake of auth.c, purpose "raft", before libraft sees them.
 *
 * SECURITY: the listener takes connections from anybody who can reach the Raft port.
 * Each one gets TRANSPORT_HANDSHAKE_MS to prove it knows the cluster secret; at most
 * TRANSPORT_HANDSHAKES_MAX such strangers are heard at once (the rest are closed
 * unheard), and libraft's accept callback only ever sees authenticated streams. Refusals
 * are logged (cluster.auth_refused), at most TRANSPORT_LOG_BURST lines per
 * TRANSPORT_LOG_WINDOW_MS, so that a port scanner cannot flood the log.
 *
 * The happy path of an inbound connection: accept -> auth_accept() -> authenticated ->
 * libraft's accept_cb(id, address, stream), which takes the stream and starts reading.
 * Of an outbound one: libraft's connect() -> auth_connect() -> authenticated ->
 * req->cb(req, stream, 0). Failure modes: the handshake fails (refusal logged; inbound:
 * nothing reaches libraft; outbound: cb(req, NULL, RAFT_NOCONNECTION), and libraft retries
 * after its connect retry delay), or close() cancels it (outbound: cb(req, NULL,
 * RAFT_CANCELED)). close() fires its callback once the listener is closed and every
 * handshake in flight has reported, which is when freeing this transport is safe.
 *
 * Memory: struct transport (T->impl) is ours, freed by transport_close(); one struct hs per
 * handshake in flight, freed in its DONE callback; the listener is embedded in struct
 * transport; accepted TCP handles are raft_malloc'd here and owned by the handshake, then
 * by libraft (which raft_free()s them) or closed here again with raft_free.
 */
#include "transport.h"

#include <arpa/inet.h>
#include <assert.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "auth.h"
#include "log.h"

#define TRANSPORT_BACKLOG  128
#define TRANSPORT_PEER_MAX (INET6_ADDRSTRLEN + 8) /* "ip:port" of an accepted socket */

enum listener_state { LISTENER_NONE, LISTENER_OPEN, LISTENER_CLOSING };

/* One handshake in flight, in either direction. */
struct hs {
    struct transport *tr;
    struct hs *prev, *next;
    struct auth_req *req; /* until DONE; owned by auth.c */
    bool inbound;
    struct raft_uv_connect *connect; /* outbound: libraft's request, answered in DONE */
    raft_uv_connect_cb cb;
    char peer[AUTH_ADDRESS_MAX + 1]; /* inbound: remote ip:port; outbound: address dialled */
};

struct transport {
    struct raft_uv_transport *t;
    uv_loop_t *loop;
    const struct auth_key *key;         /* borrowed: outlives the transport (caller's promise) */
    raft_id id;                         /* ours, from libraft's init() */
    char address[AUTH_ADDRESS_MAX + 1]; /* ours, told to the servers we connect to */
    char bind[AUTH_ADDRESS_MAX + 1];    /* "" = listen on address */
    uv_tcp_t listener;
    enum listener_state lstate;
    raft_uv_accept_cb accept_cb;
    struct hs *head; /* handshakes in flight */
    unsigned inbound;
    bool closing;
    raft_uv_transport_close_cb close_cb; /* until fired */
    struct transport_stats stats;
    /* refusal log limiter */
    bool log_window_open;
    uint64_t log_window_start;
    unsigned log_lines;
    uint64_t log_suppressed;
};

/* ---- bookkeeping ---- */

static void hs_link(struct transport *tr, struct hs *hs)
{
    hs->prev = NULL;
    hs->next = tr->head;
    if (tr->head != NULL)
        tr->head->prev = hs;
    tr->head = hs;
    if (hs->inbound)
        tr->inbound++;
}

static void hs_unlink(struct transport *tr, struct hs *hs)
{
    if (hs->prev != NULL)
        hs->prev->next = hs->next;
    else
        tr->head = hs->next;
    if (hs->next != NULL)
        hs->next->prev = hs->prev;
    if (hs->inbound)
        tr->inbound--;
}

/* maybe_closed(): fires close()'s callback once nothing is left. The callback may free
 * the transport: callers return right after this. */
static void maybe_closed(struct transport *tr)
{
    raft_uv_transport_close_cb cb = tr->close_cb;

    if (!tr->closing || cb == NULL || tr->lstate != LISTENER_NONE || tr->head != NULL)
        return;
    tr->close_cb = NULL;
    cb(tr->t);
}

static void on_handle_free(uv_handle_t *h)
{
    raft_free(h);
}

/* ---- logging ---- */

/* log_allowed(): whether one more refusal line fits the current window; *SUPPRESSED gets
 * how many were not logged since the last line that was. */
static bool log_allowed(struct transport *tr, uint64_t *suppressed)
{
    uint64_t now = uv_now(tr->loop);

    if (!tr->log_window_open || now - tr->log_window_start >= TRANSPORT_LOG_WINDOW_MS) {
        tr->log_window_open = true;
        tr->log_window_start = now;
        tr->log_lines = 0;
    }
    if (tr->log_lines >= TRANSPORT_LOG_BURST) {
        tr->log_suppressed++;
        return false;
    }
    tr->log_lines++;
    *suppressed = tr->log_suppressed;
    tr->log_suppressed = 0;
    return true;
}

/* log_refusal(): cluster.auth_refused, rate limited. DIR is "in" (they dialled us) or
 * "out" (we dialled them). */
static void log_refusal(struct transport *tr, const char *dir, const char *peer, const char *reason)
{
    char qp[LOG_Q_MAX], qr[LOG_Q_MAX];
    uint64_t suppressed;

    if (!log_allowed(tr, &suppressed))
        return;
    log_warn("cluster.auth_refused",
             "peer=%s reason=%s dir=%s node=%" PRIu64 " suppressed=%" PRIu64, log_q(qp, peer),
             log_q(qr, reason), dir, (uint64_t) tr->id, suppressed);
}

/* peer_name(): "ip:port" of TCP's remote end into OUT, or "?" */
static void peer_name(uv_tcp_t *tcp, char out[TRANSPORT_PEER_MAX])
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char ip[INET6_ADDRSTRLEN];
    int port;

    snprintf(out, TRANSPORT_PEER_MAX, "?");
    if (uv_tcp_getpeername(tcp, (struct sockaddr *) &ss, &len) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *sa = (const struct sockaddr_in *) &ss;
        if (uv_ip4_name(sa, ip, sizeof ip) != 0)
            return;
        port = ntohs(sa->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *sa = (const struct sockaddr_in6 *) &ss;
        if (uv_ip6_name(sa, ip, sizeof ip) != 0)
            return;
        port = ntohs(sa->sin6_port);
    } else {
        return;
    }
    snprintf(out, TRANSPORT_PEER_MAX, "%s:%d", ip, port);
}

/* ---- inbound ---- */

static void on_inbound_done(void *arg, uv_tcp_t *tcp, int status, uint64_t peer_id,
                            const char *peer_addr)
{
    struct hs *hs = arg;
    struct transport *tr = hs->tr;

    hs_unlink(tr, hs);
    if (status == 0 && peer_id == 0) {
        /* Raft ids start at 1: a member with a broken configuration. */
        tr->stats.refused++;
        log_refusal(tr, "in", hs->peer, "node id 0");
        uv_close((uv_handle_t *) tcp, on_handle_free);
    } else if (status == 0 && tr->closing) {
        /* Cannot happen: close() cancels every handshake. Defensive: libraft asserts if
         * accept_cb runs after its close began. */
        uv_close((uv_handle_t *) tcp, on_handle_free);
    } else if (status == 0) {
        char qp[LOG_Q_MAX], qa[LOG_Q_MAX];
        tr->stats.accepted++;
        log_debug("cluster.auth_ok", "dir=in peer=%s id=%" PRIu64 " address=%s",
                  log_q(qp, hs->peer), peer_id, log_q(qa, peer_addr));
        tr->accept_cb(tr->t, peer_id, peer_addr, (uv_stream_t *) tcp); /* libraft owns it */
    } else if (status != AUTH_ECANCELED) {
        tr->stats.refused++;
        log_refusal(tr, "in", hs->peer, auth_strerror(status));
    }
    free(hs);
    maybe_closed(tr);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct transport *tr = server->data;
    uint64_t suppressed;
    uv_tcp_t *tcp;
    struct hs *hs;

    if (status < 0) {
        if (log_allowed(tr, &suppressed))
            log_warn("cluster.accept_failed", "error=%s suppressed=%" PRIu64, uv_strerror(status),
                     suppressed);
        return;
    }
    /* Out of memory: the connection stays in the backlog and libuv stops watching the
     * listener until it is accepted, as with libraft's own transport. */
    if ((tcp = raft_malloc(sizeof *tcp)) == NULL)
        return;
    uv_tcp_init(tr->loop, tcp); /* AF_UNSPEC: creates no socket, cannot fail */
    if (uv_accept(server, (uv_stream_t *) tcp) != 0) {
        uv_close((uv_handle_t *) tcp, on_handle_free);
        return;
    }
    if (tr->closing || tr->inbound >= TRANSPORT_HANDSHAKES_MAX ||
        (hs = calloc(1, sizeof *hs)) == NULL) {
        char peer[TRANSPORT_PEER_MAX];
        tr->stats.overload++;
        peer_name(tcp, peer);
        log_refusal(tr, "in", peer, "too many handshakes in flight");
        uv_close((uv_handle_t *) tcp, on_handle_free);
        return;
    }
    hs->tr = tr;
    hs->inbound = true;
    peer_name(tcp, hs->peer);
    if (auth_accept(tcp, tr->key, TRANSPORT_PURPOSE, TRANSPORT_HANDSHAKE_MS, on_inbound_done, hs,
                    &hs->req) != 0) {
        free(hs);
        uv_close((uv_handle_t *) tcp, on_handle_free); /* auth_accept left it to us */
        return;
    }
    hs_link(tr, hs);
}

/* ---- outbound ---- */

static void on_outbound_done(void *arg, uv_tcp_t *tcp, int status, uint64_t peer_id,
                             const char *peer_addr)
{
    struct hs *hs = arg;
    struct transport *tr = hs->tr;

    (void) peer_id;
    (void) peer_addr;
    hs_unlink(tr, hs);
    if (status == 0 && tr->closing) { /* cannot happen: close() cancels; defensive */
        uv_close((uv_handle_t *) tcp, on_handle_free);
        status = AUTH_ECANCELED;
    }
    if (status == 0) {
        char qp[LOG_Q_MAX];
        tr->stats.connected++;
        log_debug("cluster.auth_ok", "dir=out peer=%s", log_q(qp, hs->peer));
        hs->cb(hs->connect, (uv_stream_t *) tcp, 0); /* libraft owns the stream */
    } else if (status == AUTH_ECANCELED) {
        hs->cb(hs->connect, NULL, RAFT_CANCELED);
    } else {
        tr->stats.connect_failed++;
        /* A peer that is down is not a refusal: libraft retries and says so itself. */
        if (status != AUTH_ECONNECT)
            log_refusal(tr, "out", hs->peer, auth_strerror(status));
        hs->cb(hs->connect, NULL, RAFT_NOCONNECTION);
    }
    free(hs);
    maybe_closed(tr);
}

/* ---- the raft_uv_transport methods ---- */

static int tr_init(struct raft_uv_transport *t, raft_id id, const char *address)
{
    struct transport *tr = t->impl;
    size_t n = address != NULL ? strnlen(address, AUTH_ADDRESS_MAX + 1) : 0;

    if (!auth_address_ok(address, n)) {
        snprintf(t->errmsg, sizeof t->errmsg, "invalid raft address");
        return RAFT_INVALID;
    }
    tr->id = id;
    memcpy(tr->address, address, n);
    tr->address[n] = '\0';
    return 0;
}

static void on_listener_closed(uv_handle_t *h)
{
    struct transport *tr = h->data;

    tr->lstate = LISTENER_NONE;
    maybe_closed(tr);
}

static int tr_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    struct transport *tr = t->impl;
    const char *addr = tr->bind[0] != '\0' ? tr->bind : tr->address;
    struct sockaddr_in sa;
    uv_os_fd_t fd;
    int one = 1, rc;

    assert(tr->lstate == LISTENER_NONE && !tr->closing);
    if (auth_parse_ipv4(addr, &sa) != 0) {
        snprintf(t->errmsg, sizeof t->errmsg, "listen address %.100s is not a.b.c.d:port", addr);
        return RAFT_INVALID;
    }
    tr->accept_cb = cb;
    if ((rc = uv_tcp_init_ex(tr->loop, &tr->listener, AF_INET)) != 0) {
        snprintf(t->errmsg, sizeof t->errmsg, "listen on %.64s: %s", addr, uv_strerror(rc));
        return RAFT_IOERR;
    }
    tr->listener.data = tr;
    tr->lstate = LISTENER_OPEN;
    /* libuv's bind sets SO_REUSEADDR too; said here so that a restart never waits for
     * TIME_WAIT whatever libuv does. */
    if (uv_fileno((uv_handle_t *) &tr->listener, &fd) == 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if ((rc = uv_tcp_bind(&tr->listener, (const struct sockaddr *) &sa, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *) &tr->listener, TRANSPORT_BACKLOG, on_connection)) != 0) {
        snprintf(t->errmsg, sizeof t->errmsg, "listen on %.64s: %s", addr, uv_strerror(rc));
        tr->lstate = LISTENER_CLOSING; /* close() waits for it */
        uv_close((uv_handle_t *) &tr->listener, on_listener_closed);
        return RAFT_IOERR;
    }
    return 0;
}

static int tr_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                      const char *address, raft_uv_connect_cb cb)
{
    struct transport *tr = t->impl;
    struct hs *hs;
    int rc;

    (void) id; /* the server proves the secret, not its id (auth.h) */
    if (tr->closing)
        return RAFT_CANCELED;
    if ((hs = calloc(1, sizeof *hs)) == NULL)
        return RAFT_NOMEM;
    hs->tr = tr;
    hs->connect = req;
    hs->cb = cb;
    req->cb = cb;
    snprintf(hs->peer, sizeof hs->peer, "%s", address);
    rc = auth_connect(tr->loop, address, tr->key, TRANSPORT_PURPOSE, (uint64_t) tr->id, tr->address,
                      TRANSPORT_HANDSHAKE_MS, on_outbound_done, hs, &hs->req);
    if (rc != 0) {
        free(hs);
        snprintf(t->errmsg, sizeof t->errmsg, "connect to %.100s: %s", address, auth_strerror(rc));
        return rc == AUTH_ENOMEM ? RAFT_NOMEM : RAFT_NOCONNECTION;
    }
    hs_link(tr, hs);
    return 0;
}

static void tr_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
    struct transport *tr = t->impl;

    assert(!tr->closing);
    tr->closing = true;
    tr->close_cb = cb;
    if (tr->lstate == LISTENER_OPEN) {
        tr->lstate = LISTENER_CLOSING;
        uv_close((uv_handle_t *) &tr->listener, on_listener_closed);
    }
    /* DONE never fires inside auth_cancel(), so the list stays as it is while we walk it;
     * each handshake reports later and leaves then. */
    for (struct hs *hs = tr->head; hs != NULL; hs = hs->next)
        auth_cancel(hs->req);
    maybe_closed(tr); /* nothing was in flight: at once, as libraft's own transport does */
}

/* ---- public ---- */

int transport_init(struct raft_uv_transport *t, uv_loop_t *loop, const struct auth_key *k)
{
    struct transport *tr;

    if (t == NULL || loop == NULL || !auth_key_valid(k))
        return RAFT_INVALID;
    if ((tr = calloc(1, sizeof *tr)) == NULL)
        return RAFT_NOMEM;
    tr->t = t;
    tr->loop = loop;
    tr->key = k;
    tr->lstate = LISTENER_NONE;
    t->impl = tr;
    t->errmsg[0] = '\0';
    t->init = tr_init;
    t->listen = tr_listen;
    t->connect = tr_connect;
    t->close = tr_close;
    return 0;
}

int transport_set_bind_address(struct raft_uv_transport *t, const char *address)
{
    struct transport *tr = t->impl;
    struct sockaddr_in sa;

    if (tr == NULL || auth_parse_ipv4(address, &sa) != 0)
        return RAFT_INVALID;
    snprintf(tr->bind, sizeof tr->bind, "%s", address); /* parsed: at most 21 bytes */
    return 0;
}

void transport_stats(const struct raft_uv_transport *t, struct transport_stats *out)
{
    const struct transport *tr = t->impl;

    if (tr != NULL)
        *out = tr->stats;
    else
        memset(out, 0, sizeof *out);
}

void transport_close(struct raft_uv_transport *t)
{
    struct transport *tr = t->impl;

    if (tr == NULL)
        return;
    /* Freed under a live handle would corrupt the loop: close() must have completed. */
    assert(tr->head == NULL && tr->lstate == LISTENER_NONE);
    free(tr);
    t->impl = NULL;
}
