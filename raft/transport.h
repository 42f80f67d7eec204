/*
 * raft/transport.h
 * libraft's connections, authenticated: a struct raft_uv_transport like libraft 0.15's own
 * TCP one (raft_uv_tcp_init), except that every connection in either direction first runs
 * the cluster handshake (auth.h, purpose "raft"). A peer without the secret gets no Raft
 * message and can deliver none. Runs on the loop given to transport_init(), the same loop
 * as raft_uv_init(); nothing here is thread-safe.
 *
 * Lifecycle: transport_init() -> [transport_set_bind_address()] -> raft_uv_init() ->
 * raft_init() ... raft_close() -> (its callback) raft_uv_close(), transport_close().
 */
#ifndef TERN_TRANSPORT_H
#define TERN_TRANSPORT_H

#include <raft.h>
#include <raft/uv.h>
#include <stdint.h>
#include <uv.h>

struct auth_key;

/* Inbound handshakes in flight at once: more connections are closed unheard, so that
 * strangers cannot pile up fds and memory for TRANSPORT_HANDSHAKE_MS each. */
#define TRANSPORT_HANDSHAKES_MAX 64
#define TRANSPORT_PURPOSE        "raft"
#define TRANSPORT_HANDSHAKE_MS   5000  /* a handshake is 3 small messages: 5 s is generous */
#define TRANSPORT_LOG_BURST      5     /* refusals logged per window... */
#define TRANSPORT_LOG_WINDOW_MS  10000 /* ...the others are counted into the next line */

/*
 * transport_init(): like raft_uv_tcp_init(), but every connection is authenticated with K,
 * which must outlive the transport. Fills in T's methods and allocates T->impl; T->data is
 * left for raft_uv_init(). Returns 0, RAFT_INVALID (K is not a valid key), or RAFT_NOMEM.
 */
int transport_init(struct raft_uv_transport *t, uv_loop_t *loop, const struct auth_key *k);

/*
 * transport_set_bind_address(): listen on ADDRESS ("a.b.c.d:port", e.g. "0.0.0.0:9001")
 * instead of the address given to raft_init(), like raft_uv_tcp_set_bind_address(). Call
 * it before raft_init(). Peers still dial, and are told, the raft_init() address. Returns 0
 * or RAFT_INVALID.
 */
int transport_set_bind_address(struct raft_uv_transport *t, const char *address);

/* Counters since transport_init(), for status pages and tests. */
struct transport_stats {
    uint64_t accepted;       /* inbound connections authenticated and given to libraft */
    uint64_t refused;        /* inbound handshakes that failed (stranger, other secret...) */
    uint64_t overload;       /* inbound connections closed unheard: TRANSPORT_HANDSHAKES_MAX */
    uint64_t connected;      /* outbound connections authenticated and given to libraft */
    uint64_t connect_failed; /* outbound attempts that failed (down, refused, bad proof) */
};
void transport_stats(const struct raft_uv_transport *t, struct transport_stats *out);

/*
 * transport_close(): frees T->impl. Call it after the transport's close callback has
 * fired, i.e. in raft_close()'s callback after raft_uv_close(), like raft_uv_tcp_close();
 * or right after transport_init() if libraft never used T.
 */
void transport_close(struct raft_uv_transport *t);

#endif
