/*
 * node/command.h
 * Proposing Commands from an event loop: fills in the request id and the proposer's
 * clock, packs the command into raft memory, proposes it, and brings the decoded Result
 * back to the caller's loop. A proposal whose leader was lost is retried with the same
 * request id (the FSM applies it once), up to COMMAND_RETRIES times.
 */
#ifndef TERN_COMMAND_H
#define TERN_COMMAND_H

#include <stdint.h>

#include "consensus.h"
#include "loopq.h"
#include "tern.pb-c.h"

#define COMMAND_REQUEST_ID_LEN 16
#define COMMAND_RETRIES        3

/*
 * Completion on the caller's loop. STATUS is 0 or a CONS_E* code; RES is the FSM's
 * result when STATUS is 0 (borrowed: freed after the callback returns), else NULL.
 */
typedef void command_done_cb(void *arg, int status, uint64_t index, const Tern__Result *res);

/*
 * command_propose(): CMD is read, not kept (the caller may free it on return). Its
 * request_id and time_ms are set here when absent. DONE runs exactly once on Q's loop.
 * Returns 0, or -1 when CMD cannot be packed or memory is short (DONE not called).
 */
int command_propose(struct cons *cons, struct loopq *q, Tern__Command *cmd,
                    command_done_cb *done, void *arg);
/* command_propose_ex(): FLAGS are cons_propose_ex()'s (CONS_NO_APPLY_WAIT). */
int command_propose_ex(struct cons *cons, struct loopq *q, Tern__Command *cmd, unsigned flags,
                       command_done_cb *done, void *arg);

/* command_pack(): CMD packed into a raft_malloc()ed buffer (for raft_apply). */
int command_pack(const Tern__Command *cmd, void **buf, size_t *len);

#endif
