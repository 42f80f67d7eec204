/*
 * raft/consensus.h
 * The consensus loop: libraft (libuv backend) on a thread of its own, replicating opaque
 * commands. raft/ knows nothing of mail: it hands committed bytes to the FSM callbacks
 * given at start, and snapshots are whatever bytes the FSM returns.
 *
 * Threads: cons_start() spawns the consensus thread; cons_propose(), cons_status() and
 * cons_stop() may be called from any thread. Every FSM callback and every propose
 * completion runs on the consensus thread and must not block on the network.
 *
 * A node with no peers bootstraps a one-voter cluster on first start; on later starts the
 * Raft directory already has state and bootstrap is skipped (RAFT_CANTBOOTSTRAP).
 */
#ifndef TERN_CONSENSUS_H
#define TERN_CONSENSUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * What the state machine gives the consensus loop. All run on the consensus thread.
 *
 * apply     applies the entry at INDEX. Must be deterministic and must not fail: a
 *           problem with the command is reported through *RESULT, never as a return
 *           value (libraft stops applying on an error). *RESULT is handed to the
 *           proposer's completion and then freed with result_free. RESULT is NULL
 *           when nobody on this node waits for the entry (a follower, a replay): the
 *           FSM then produces no result. Entries at or below the FSM's persisted applied index arrive
 *           again after a restart; the FSM skips them.
 * snapshot  writes the whole replicated state into one buffer allocated with
 *           raft_malloc() (libraft frees it). Returns 0 or a negative error.
 * restore   replaces the state with a snapshot buffer's contents. The FSM only reads
 *           the buffer; consensus.c frees it. Returns 0 or negative.
 * result_free  frees a result that apply produced (NULL is passed through too).
 */
struct cons_fsm {
    void *ctx;
    void (*apply)(void *ctx, uint64_t index, const void *buf, size_t len, void **result);
    int (*snapshot)(void *ctx, void **buf, size_t *len);
    int (*restore)(void *ctx, const void *buf, size_t len);
    void (*result_free)(void *ctx, void *result);
};

struct auth_key;

/*
 * Forwarding (a follower's proposals): FORWARD sends the framed-off command BUF to the
 * leader LEADER_ID and returns 0, or -1 when it cannot even try (no address known). It
 * runs on the consensus thread and must not block; it must later call
 * cons_forward_done() exactly once with the same TOKEN, from any thread.
 */
typedef int cons_forward_fn(void *ctx, uint64_t leader_id, const void *buf, size_t len,
                            uint64_t token);

struct cons_config {
    uint64_t id;               /* this node's raft id, > 0 */
    const char *address;       /* "a.b.c.d:port" (libraft 0.15 takes IPv4 only) */
    const char *dir;           /* raft log and snapshots; created if missing */
    unsigned election_ms;      /* > heartbeat_ms */
    unsigned heartbeat_ms;
    unsigned snapshot_threshold; /* entries between snapshots */
    unsigned snapshot_trailing;  /* entries kept behind a snapshot */
    bool bootstrap;            /* fresh dir: bootstrap a one-voter cluster of this node */
    unsigned no_leader_wait_ms; /* hold proposals this long while an election runs */
    const struct auth_key *key; /* cluster secret for the Raft transport (raft/auth.h);
                                   NULL = libraft's plain TCP (tests only). Must outlive C. */
    cons_forward_fn *forward;   /* NULL: proposals on a follower fail with ENOTLEADER */
    void *forward_ctx;
};

#define CONS_MEMBERS_MAX 32
enum cons_member_role { CONS_STANDBY = 0, CONS_VOTER = 1, CONS_SPARE = 2 };
struct cons_member {
    uint64_t id;
    char address[64];
    enum cons_member_role role;
    uint64_t match_index; /* replicated up to here (known on the leader only, else 0) */
};

enum cons_role { CONS_UNAVAILABLE = 0, CONS_FOLLOWER, CONS_CANDIDATE, CONS_LEADER };

struct cons_status {
    uint64_t id;
    enum cons_role role;
    uint64_t term;
    uint64_t commit_index;
    uint64_t applied_index;
    uint64_t last_index;
    uint64_t leader_id;
    char leader_address[64];
    uint64_t snapshots_taken;
    uint64_t snapshot_index; /* index of the newest snapshot taken or restored, 0 = none */
    size_t n_members;        /* the Raft configuration as this node knows it */
    struct cons_member members[CONS_MEMBERS_MAX];
};

struct cons;

/*
 * Completion of a proposal: STATUS is 0 when the entry committed and was applied locally
 * at INDEX, with RESULT from the FSM's apply (borrowed: it is freed with result_free
 * after this returns). Otherwise STATUS is a negative CONS_E* code: the command may or
 * may not have been committed (CONS_ELOST) — callers retry with the same request id.
 * Runs on the consensus thread.
 */
typedef void cons_done_cb(void *arg, int status, uint64_t index, void *result);

#define CONS_ENOTLEADER (-1) /* this node is not the leader; retry there */
#define CONS_ELOST      (-2) /* leadership lost: outcome unknown, retry with same id */
#define CONS_ESHUTDOWN  (-3) /* the consensus loop is stopping */
#define CONS_ENOMEM     (-4)
#define CONS_EINVAL     (-5)
#define CONS_EIO        (-6)
#define CONS_EUNREACHABLE (-7) /* forward: the leader could not be reached, nothing sent */
#define CONS_ETIMEDOUT  (-8)   /* no answer in time: outcome unknown, retry with same id */

const char *cons_strerror(int status);

/* cons_start() starts the consensus thread and returns once libraft has started (or
 * failed). Returns 0 or -1 with a message in ERR. */
int cons_start(const struct cons_config *cfg, const struct cons_fsm *fsm, struct cons **out,
               char *err, size_t errlen);

/*
 * cons_propose() queues BUF (LEN bytes) for replication and returns at once. BUF must come
 * from raft_malloc(); ownership passes to the consensus loop whether or not this returns
 * 0. DONE(ARG, ...) is called exactly once, on the consensus thread, also when the loop
 * stops first (CONS_ESHUTDOWN). Returns 0, or CONS_EINVAL (LEN is 0) / CONS_ENOMEM, in
 * which case DONE is not called and BUF is already freed.
 */
int cons_propose(struct cons *c, void *buf, size_t len, cons_done_cb *done, void *arg);
/* cons_propose_ex(): with CONS_NO_APPLY_WAIT a forwarded proposal completes as soon as
 * the leader applied it, without waiting for this node's own apply (up to a heartbeat
 * later at low load): for writers that read nothing back in the same session, such as
 * an SMTP delivery (readers elsewhere catch up through their own sync). */
#define CONS_NO_APPLY_WAIT 1u
int cons_propose_ex(struct cons *c, void *buf, size_t len, unsigned flags, cons_done_cb *done,
                    void *arg);

/*
 * cons_forward_done(): the answer to a FORWARD call (any thread). STATUS 0: the leader
 * applied the command at INDEX with RESULT (an FSM result, freed with result_free by
 * the consensus layer); the proposer is answered once this node has applied INDEX too
 * (read-your-writes). CONS_EUNREACHABLE / CONS_ENOTLEADER: tried again (after a pause)
 * until the proposal's no-leader deadline. Anything else: the proposer gets STATUS.
 */
void cons_forward_done(struct cons *c, uint64_t token, int status, uint64_t index, void *result);

/*
 * cons_wait_applied(): DONE(ARG, 0) once this node has applied INDEX (at once, on the
 * calling thread, when it already has), or DONE(ARG, CONS_ETIMEDOUT) after TIMEOUT_MS, or
 * CONS_ESHUTDOWN at stop; otherwise on the consensus thread. Exactly once. Returns 0 or
 * CONS_ENOMEM (DONE not called).
 */
typedef void cons_applied_cb(void *arg, int status);
int cons_wait_applied(struct cons *c, uint64_t index, unsigned timeout_ms, cons_applied_cb *done,
                      void *arg);

/*
 * Membership (on the leader; elsewhere DONE gets CONS_ENOTLEADER). DONE(ARG, STATUS) runs
 * once on the consensus thread. One change runs at a time; the others wait their turn.
 * ADD_VOTER: adds ID at ADDRESS as a spare, then promotes it to voter once it has caught
 * up (libraft's catch-up rounds); already a voter = done. REMOVE: already gone = done.
 * TRANSFER: leadership to ID (0 = the most up-to-date voter).
 */
enum cons_change_op { CONS_ADD_VOTER = 1, CONS_REMOVE, CONS_TRANSFER };
typedef void cons_change_cb(void *arg, int status);
int cons_change(struct cons *c, enum cons_change_op op, uint64_t id, const char *address,
                cons_change_cb *done, void *arg);

/* cons_status() copies the latest status; cheap, any thread. */
void cons_status(struct cons *c, struct cons_status *out);

/* cons_stop() closes libraft and joins the thread. Proposals still queued fail with
 * CONS_ESHUTDOWN; those libraft already had complete with 0 or CONS_ELOST (they may still
 * commit: retry with the same request id). C stays valid: later proposals complete at once (on the caller's
 * thread) with CONS_ESHUTDOWN, so frontends may still propose while they wind down.
 * Idempotent; NULL is fine. */
void cons_stop(struct cons *c);
/* cons_free() stops C if needed and frees it; nobody may use C afterwards. */
void cons_free(struct cons *c);

#endif
