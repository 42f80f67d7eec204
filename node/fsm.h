/*
 * node/fsm.h
 * The replicated state machine: applies one Command (proto/tern.proto) as ONE RocksDB
 * WriteBatch on the meta column family that also records the applied index, so a crash
 * leaves all of a command or none of it.
 *
 * apply is deterministic: it reads only the meta state and the command (which carries the
 * proposer's clock and every hash), never a clock, randomness or the network. Commands
 * with a request id are remembered (FSM_REQUESTS_KEPT most recent) with their result, so a
 * command retried after a leader change is applied once and answers the same.
 *
 * Threads: the fsm_* hooks run on the consensus thread. Readers on other threads read
 * RocksDB directly (node/model.h); they see each command's effects all at once.
 */
#ifndef TERN_FSM_H
#define TERN_FSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "consensus.h"
#include "db.h"

#define FSM_REQUESTS_KEPT 50000 /* remembered request ids: covers minutes of retries */
#define FSM_REQUEST_ID_MAX 32
#define FSM_SNAPSHOT_MAGIC "TERNSNAP1"
#define FSM_REMOTE_MAX 1000 /* remote recipients in one delivery */
#define FSM_UIDS_MAX   100000 /* messages one STORE/EXPUNGE/COPY command may name */
#define FSM_FLAGS_MAX  64     /* flags on one message */
enum fsm_store_mode { FSM_STORE_SET = 0, FSM_STORE_ADD = 1, FSM_STORE_REMOVE = 2 };

/* Result.status values */
enum fsm_status {
    RESULT_OK = 0,
    RESULT_EXISTS = 1,   /* the thing to create exists already */
    RESULT_NOTFOUND = 2, /* the thing to change does not exist */
    RESULT_INVALID = 3,  /* malformed or not allowed */
    RESULT_QUOTA = 4,    /* over quota (per delivery target) */
    RESULT_INTERNAL = 5, /* a storage error: never expected */
};

/* A packed tern.Result, as handed to a proposer's completion. Owned by the consensus
 * layer until fsm_result_free(). */
struct fsm_result {
    size_t len;
    uint8_t data[];
};

/* Change events, published after a command's batch is written. */
enum fsm_event_type {
    FSM_EV_MAILBOX = 1,   /* created, renamed, deleted or status changed */
    FSM_EV_MESSAGE_NEW,   /* uid in mailbox */
    FSM_EV_ACCOUNT,       /* account added, removed or changed */
    FSM_EV_BODY_UNUSED,   /* a body's reference count reached 0 (hash) */
    FSM_EV_QUEUE,         /* an outbound queue entry was added (id in mailbox_id) */
    FSM_EV_FLAGS,         /* uid's flags changed, at modseq */
    FSM_EV_EXPUNGE,       /* uid was expunged, at modseq */
};
struct fsm_event {
    enum fsm_event_type type;
    uint64_t index; /* log index of the command */
    uint64_t account_id;
    uint64_t mailbox_id;
    uint32_t uid;
    uint64_t modseq;
    const uint8_t *hash; /* FSM_EV_BODY_UNUSED: 32 bytes, valid during the call */
};
/* Runs on the consensus thread; must not block. */
typedef void fsm_event_cb(void *ctx, const struct fsm_event *ev);

struct fsm;

/* fsm_open() reads the applied index from DB. Returns 0 or -1. The DB stays the caller's
 * and must outlive the FSM. */
int fsm_open(struct db *db, struct fsm **out);
void fsm_close(struct fsm *f);
void fsm_set_event_cb(struct fsm *f, fsm_event_cb *cb, void *ctx);
/* fsm_applied_index(): the last index written to the store (any thread). */
uint64_t fsm_applied_index(struct fsm *f);

/* fsm_flag_valid(): F is a flag the FSM stores: an IMAP atom of at most 255 octets, a
 * backslash only first (system flags), no list wildcards. Frontends check it before they
 * propose, so a bad flag is their BAD, not a refused command. */
bool fsm_flag_valid(const char *f);

/* The hooks for raft/consensus.h; the context is the struct fsm. */
struct cons_fsm fsm_hooks(struct fsm *f);

/* fsm_apply() is public so that tests can drive the FSM without Raft. RESULT may be NULL. */
void fsm_apply(void *ctx, uint64_t index, const void *buf, size_t len, void **result);
int fsm_snapshot(void *ctx, void **buf, size_t *len);
int fsm_restore(void *ctx, const void *buf, size_t len);
void fsm_result_free(void *ctx, void *result);

#endif
