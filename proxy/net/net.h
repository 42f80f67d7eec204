/*
 * proxy/net/net.h
 * The network core shared by every protocol: listeners, frontend worker loops, client
 * connections with bounded input, batched output with backpressure, TLS over memory BIOs
 * (implicit and STARTTLS), PROXY protocol v1/v2 from trusted addresses, timeouts,
 * connection limits and a session id on every log line.
 *
 * Threads: net_start() spawns one worker thread (with its own libuv loop) per core. Each
 * worker binds its own socket to every listener address with SO_REUSEPORT, so the kernel
 * spreads connections over the workers and a connection lives and dies on one loop.
 * Every net_conn_* call and every protocol callback runs on that connection's loop.
 *
 * SECURITY: everything read here comes from the Internet. The read buffer is bounded
 * (NET_RBUF_MAX); a protocol that cannot make progress with a full buffer must answer
 * with its own error. Plaintext buffered after STARTTLS is discarded before the
 * handshake (CVE-2011-0411 class). A PROXY header is honoured only from net.proxy_trusted
 * addresses, and a header from anyone else closes the connection.
 */
#ifndef TERN_NET_H
#define TERN_NET_H

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "config.h"
#include "consensus.h"
#include "db.h"
#include "fsm.h"
#include "loopq.h"

#define NET_RBUF_MAX      (64 * 1024)   /* plaintext bytes buffered before the protocol */
#define NET_WQ_HIGH       (1024 * 1024) /* stop reading while this much waits to be sent */
#define NET_WQ_LOW        (256 * 1024)  /* and start again below this */
#define NET_PROXY_TIMEOUT 5000          /* ms for a trusted peer to send its PROXY header */
#define NET_SID_LEN       16
#define NET_WORKERS_MAX   64

enum net_tls_mode { NET_TLS_NONE = 0, NET_TLS_STARTTLS, NET_TLS_IMPLICIT };

struct net_conn;
struct net_worker;

/*
 * A protocol. All callbacks run on the connection's loop.
 * open      the connection is ready (PROXY header read, implicit TLS done): allocate the
 *           session and usually send a greeting. Returns the session or NULL (closes).
 * input     plaintext bytes are waiting (net_conn_rdata); consume with net_conn_consume.
 *           Not called while the session holds the connection (net_conn_hold).
 * tls_ready a STARTTLS handshake finished.
 * timeout   the idle timer fired; the protocol says goodbye and closes.
 * close     the connection is gone: free the session. No net_conn_* call after this,
 *           except net_conn_unref for references the session still holds.
 */
struct net_proto {
    const char *name;
    void *(*open)(struct net_conn *c);
    void (*input)(void *session, struct net_conn *c);
    void (*tls_ready)(void *session, struct net_conn *c);
    void (*timeout)(void *session, struct net_conn *c);
    void (*close)(void *session);
    /* event   a change was applied to the mailbox this connection watches
     *         (net_conn_watch): new message, flags, expunge. Optional. */
    void (*event)(void *session, struct net_conn *c, const struct fsm_event *ev);
};

/* What a listener serves. ROLE is protocol-specific ("mx", "submission", ...). */
struct net_listen {
    const char *name; /* config key, e.g. "smtp", for logs */
    const char *host;
    uint16_t port;
    enum net_tls_mode tls;
    const struct net_proto *proto;
    const void *proto_cfg; /* the protocol's own settings for this listener */
};

/* What the frontends reach of the node (borrowed; outlives the server). */
struct cluster;
struct net_node {
    struct db *db;
    struct cons *cons;
    struct cluster *cluster; /* body placement: replicate at delivery, fetch on a miss */
    struct fsm *fsm;
    const struct config *cfg;
    const char *hostname;
};

struct net_server;

/*
 * net_start(): creates the TLS context (generating a self-signed certificate under
 * DATA_DIR/tls on first start when none is configured), starts the workers and binds
 * every listener on each. Returns 0 or -1 with ERR set (e.g. a port in use).
 */
int net_start(const struct net_node *node, const struct net_listen *listens, size_t n,
              const char *data_dir, struct net_server **out, char *err, size_t errlen);
/* net_stop(): stops accepting, closes every connection, joins the workers, frees. */
void net_stop(struct net_server *s);

/* ---- what protocols use ---- */

const struct net_node *net_conn_node(struct net_conn *c);
const struct net_listen *net_conn_listen(struct net_conn *c);
struct loopq *net_conn_loopq(struct net_conn *c); /* completions for this conn's loop */
uv_loop_t *net_conn_loop(struct net_conn *c);
const char *net_conn_sid(struct net_conn *c);     /* session id for logs */
const char *net_conn_peer(struct net_conn *c);    /* client address (after PROXY) */
uint16_t net_conn_peer_port(struct net_conn *c);
bool net_conn_tls(struct net_conn *c);            /* TLS is active */
const char *net_conn_tls_version(struct net_conn *c); /* "TLSv1.3", or NULL */
const char *net_conn_tls_cipher(struct net_conn *c);
/* net_conn_secure(): TLS is active, or the client (after PROXY) is on loopback, which
 * counts as secure as in Dovecot, so plaintext authentication works there. */
bool net_conn_secure(struct net_conn *c);

/* Input: the bytes not yet consumed (valid until the next consume or callback return). */
const uint8_t *net_conn_rdata(struct net_conn *c, size_t *len);
void net_conn_consume(struct net_conn *c, size_t n);
/* net_conn_rfull(): the read buffer is full (NET_RBUF_MAX) and nothing will be added
 * until the protocol consumes. */
bool net_conn_rfull(struct net_conn *c);

/* Output: queued and sent when the current callback returns (or at net_conn_flush). */
void net_conn_write(struct net_conn *c, const void *data, size_t len);
void net_conn_printf(struct net_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void net_conn_flush(struct net_conn *c);

/*
 * Holding: while a session waits for an asynchronous answer (a commit, a password hash),
 * it holds the connection: input() is not called (pipelined commands wait in the buffer)
 * and the idle timer is stopped. net_conn_release() resumes; input() is called again if
 * bytes are waiting. Each hold also takes a reference (see below).
 */
void net_conn_hold(struct net_conn *c);
void net_conn_release(struct net_conn *c);
/* net_conn_held(): somebody holds the connection (input() is paused). */
bool net_conn_held(struct net_conn *c);
/* net_conn_closing(): the connection is closing or closed; a completion that finds it so
 * should just release/unref. */
bool net_conn_closing(struct net_conn *c);

/* References keep the net_conn memory valid past its close (for async completions). */
void net_conn_ref(struct net_conn *c);
void net_conn_unref(struct net_conn *c);

/* net_conn_starttls(): discards every buffered plaintext byte, flushes pending output in
 * plaintext, then starts the TLS handshake; tls_ready() follows. Returns 0 or -1. */
int net_conn_starttls(struct net_conn *c);

/* net_conn_timeout(): (re)arms the idle timer to MS milliseconds from now. */
void net_conn_timeout(struct net_conn *c, unsigned ms);

/* net_conn_close(): flushes output, then closes. Safe to call twice. */
void net_conn_close(struct net_conn *c);

/*
 * Change events. net_publish() (any thread; ternd calls it from the FSM's event hook on
 * the consensus thread) copies EV to every worker; each worker calls proto->event() of
 * the connections that watch EV->mailbox_id. A connection watches one key at a time
 * (IMAP: the selected mailbox); 0 stops watching.
 */
void net_publish(struct net_server *s, const struct fsm_event *ev);
void net_conn_watch(struct net_conn *c, uint64_t key);

/* net_conn_log(): a log line with "sid=... peer=..." in front of FMT's pairs. */
void net_conn_log(struct net_conn *c, int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
