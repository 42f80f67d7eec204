/*
 * node/cluster.h
 * What makes one ternd a member of a cluster, above Raft: the internal RPC service
 * (forwarded commands, membership requests, body copies, status), the member table's
 * upkeep, where bodies live (storage/placement.h over the MemberRecs) and keeping them
 * there (replication at delivery, fetch on a local miss, background repair and GC).
 *
 * Threads: the RPC thread runs the handlers and the repair loop; public calls may come
 * from any loop and answer on the loopq they name.
 */
#ifndef TERN_CLUSTER_H
#define TERN_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "consensus.h"
#include "db.h"
#include "fsm.h"
#include "loopq.h"

#define CLUSTER_LISTEN_MAX 8

struct cluster_config {
    uint64_t id;
    const char *raft_address;
    const char *rpc_address;
    const char *zone;
    unsigned replicas;           /* R, copies of every body */
    size_t frame_max;            /* largest RPC frame: the largest body plus room */
    unsigned repair_interval_ms; /* pause between two repair passes */
    unsigned gc_grace_ms;        /* an unreferenced body is deleted after this long */
    size_t n_listen;             /* client listeners, for MemberRec (haproxy-config) */
    const char *listen_name[CLUSTER_LISTEN_MAX];
    const char *listen_addr[CLUSTER_LISTEN_MAX];
};

struct cluster;

/* cluster_start(): starts the RPC service. The FSM and DB must outlive it. The key is
 * copied. 0, or -1 with ERR. */
int cluster_start(const struct cluster_config *cfg, const struct auth_key *key, struct db *db,
                  struct fsm *fsm, struct cluster **out, char *err, size_t errlen);
/* cluster_attach(): the consensus loop, once started (the RPC handlers need it). */
void cluster_attach(struct cluster *cl, struct cons *cons);
/* The forwarding hook for struct cons_config (ctx = the cluster). */
int cluster_forward(void *ctx, uint64_t leader_id, const void *buf, size_t len, uint64_t token);
/* cluster_stop(): before cons_stop(): no more repair; RPC closed. */
void cluster_stop(struct cluster *cl);
void cluster_free(struct cluster *cl);

/* Completions run on the caller's loopq. TEXT (may be NULL) is the answer's lines, or the
 * error, valid during the call. STATUS 0 ok, 1 refused, 2 unavailable (as admin). */
typedef void cluster_done_cb(void *arg, int status, const char *text);
int cluster_join(struct cluster *cl, const char *seed_rpc, struct loopq *q, cluster_done_cb *done,
                 void *arg);
int cluster_remove(struct cluster *cl, uint64_t id, struct loopq *q, cluster_done_cb *done,
                   void *arg);
int cluster_transfer(struct cluster *cl, uint64_t id, struct loopq *q, cluster_done_cb *done,
                     void *arg);
int cluster_status(struct cluster *cl, struct loopq *q, cluster_done_cb *done, void *arg);
/* cluster_members_text(): one "member id=..." line per MemberRec (malloc'd, caller frees). */
char *cluster_members_text(struct cluster *cl);
/* cluster_metrics_text(): this node's Raft and body figures in the Prometheus text format
 * (malloc'd). */
char *cluster_metrics_text(struct cluster *cl);
/* cluster_init_text(): what `ternctl cluster init` prints (malloc'd). Makes sure this
 * node's own MemberRec is written first. */
char *cluster_init_text(struct cluster *cl, const char *secret_file);

/*
 * cluster_sync(): read-your-writes for reads on any node. DONE(ARG, 0) on Q once this
 * node has applied everything the leader had committed when asked (a write acknowledged
 * anywhere before the call is then visible here); DONE(ARG, -1) when that cannot be
 * established in time (no leader, unreachable): the caller serves what it has.
 */
int cluster_sync(struct cluster *cl, struct loopq *q, void (*done)(void *arg, int status),
                 void *arg);

/*
 * Bodies. cluster_body_replicate(): the body (already stored here with fsync) is copied
 * to its other owners; DONE(ARG, 0) once a majority of its owners hold it synced, else
 * DONE(ARG, -1) (answer "try again later"). DATA is copied before this returns.
 */
typedef void cluster_body_cb(void *arg, int status);
int cluster_body_replicate(struct cluster *cl, const uint8_t hash[32], const void *data, size_t len,
                           struct loopq *q, cluster_body_cb *done, void *arg);
/* cluster_body_fetch(): brings the bodies named in HASHES (N of them, 32 bytes each),
 * which the caller found missing here, from their owners and stores them here; DONE(ARG, 0) when all are
 * here, -1 when one could not be found. */
int cluster_body_fetch(struct cluster *cl, const uint8_t *hashes, size_t n, struct loopq *q,
                       cluster_body_cb *done, void *arg);

#endif
