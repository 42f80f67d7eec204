/*
 * node/rpc.h
 * Internal RPC between cluster members: a thread with its own libuv loop that listens on
 * cluster.rpc_address and keeps one outbound connection per peer address. Every
 * connection is authenticated with the cluster secret first (raft/auth.h, purpose "rpc"),
 * then carries frames (node/frame.h) of RpcRequest / RpcResponse (proto/cluster.proto),
 * many requests at once, answered in any order.
 *
 * Threads: rpc_send() and rpc_reply() may be called from any thread. Handlers and
 * rpc_send() completions run on the RPC loop and must not block: disk work goes to the
 * libuv pool of that loop (rpc_loop()).
 *
 * SECURITY: nothing is read from a connection before the handshake proves the peer holds
 * the cluster secret; frames are capped (frame_max) before any allocation.
 */
#ifndef TERN_RPC_H
#define TERN_RPC_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cluster.pb-c.h"
#include "loopq.h"

/* rpc_send() completion statuses, aligned with raft/consensus.h's CONS_E* codes */
#define RPC_ELOST        (-2) /* sent, then the connection broke: outcome unknown */
#define RPC_ESHUTDOWN    (-3)
#define RPC_ENOMEM       (-4)
#define RPC_EPROTO       (-6) /* the peer answered something undecodable */
#define RPC_EUNREACHABLE (-7) /* could not connect or authenticate: nothing was sent */
#define RPC_ETIMEDOUT    (-8) /* no answer in time: outcome unknown */
#define RPC_EAUTH        (-9) /* the peer refused our handshake (another cluster secret?) */

#define RPC_HANDSHAKE_MS     3000
#define RPC_CONNECT_RETRY_MS 200 /* after a failed connect, calls fail fast this long */

struct rpc;
struct rpc_call; /* an inbound request waiting for its answer */
struct auth_key;

/* A request arrived (RPC loop). REQ is valid during the call only. The handler answers
 * exactly once with rpc_reply(), now or later, from any thread. */
typedef void rpc_handler_fn(void *ctx, struct rpc_call *call, const Tern__RpcRequest *req);

struct rpc_config {
    uint64_t id;                /* this node */
    const char *address;        /* listen here, "a.b.c.d:port" */
    const struct auth_key *key; /* must outlive the rpc */
    size_t frame_max;           /* largest frame in either direction */
    rpc_handler_fn *handler;
    void *ctx;
};

/* rpc_start(): binds and starts the thread. 0, or -1 with ERR (e.g. the port is taken). */
int rpc_start(const struct rpc_config *cfg, struct rpc **out, char *err, size_t errlen);
/* rpc_stop(): closes every connection and joins the thread. Calls waiting for an answer
 * complete with RPC_ESHUTDOWN; answers still coming (rpc_reply) are dropped. Later
 * rpc_send() calls complete at once with RPC_ESHUTDOWN. Idempotent; NULL is fine. */
void rpc_stop(struct rpc *r);
void rpc_free(struct rpc *r);

uv_loop_t *rpc_loop(struct rpc *r);
struct loopq *rpc_loopq(struct rpc *r);

/* rpc_reply(): answers CALL with RESP (its id is set here) and frees CALL. Any thread. */
void rpc_reply(struct rpc_call *call, Tern__RpcResponse *resp);
/* rpc_reply_status(): an answer with only a status (and an error text, may be NULL). */
void rpc_reply_status(struct rpc_call *call, int status, const char *error);

/* DONE(ARG, STATUS, RESP) runs once on the RPC loop; RESP (borrowed) when STATUS is 0. */
typedef void rpc_done_cb(void *arg, int status, const Tern__RpcResponse *resp);
/* rpc_send(): REQ is packed now (its id is set here; the caller keeps REQ). Returns 0, or
 * -1 when out of memory (DONE not called). */
int rpc_send(struct rpc *r, const char *address, Tern__RpcRequest *req, unsigned timeout_ms,
             rpc_done_cb *done, void *arg);

#endif
