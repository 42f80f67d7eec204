/*
 * node/command.c
 * Proposals from event loops to the consensus loop and back (see command.h).
 *
 * The happy path: pack (raft memory) -> cons_propose -> on the consensus thread,
 * on_done() copies the result bytes -> loopq_post to the caller's loop -> deliver()
 * decodes the Result and calls the caller. On CONS_ELOST the saved copy of the packed
 * command is proposed again with the same request id.
 */
#include "command.h"

#include <openssl/rand.h>
#include <raft.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fsm.h"
#include "log.h"

struct pending {
    struct cons *cons;
    struct loopq *q;
    command_done_cb *done;
    void *arg;
    uint8_t *copy; /* the packed command, for retries (malloc) */
    size_t len;
    int tries;
    unsigned flags; /* cons_propose_ex() flags */
    /* filled on the consensus thread */
    int status;
    uint64_t index;
    uint8_t *result; /* packed Result (malloc) */
    size_t result_len;
};

int command_pack(const Tern__Command *cmd, void **buf, size_t *len)
{
    size_t n = tern__command__get_packed_size(cmd);
    void *p = raft_malloc(n ? n : 1);
    if (p == NULL)
        return -1;
    tern__command__pack(cmd, p);
    *buf = p;
    *len = n;
    return 0;
}

static void deliver(void *arg)
{
    struct pending *p = arg;
    Tern__Result *res = NULL;
    int status = p->status;
    if (status == 0) {
        res = tern__result__unpack(NULL, p->result_len, p->result);
        if (res == NULL) {
            log_error("command.result", "error=undecodable_result bytes=%zu", p->result_len);
            status = CONS_EIO;
        }
    }
    p->done(p->arg, status, p->index, res);
    if (res)
        tern__result__free_unpacked(res, NULL);
    free(p->result);
    free(p->copy);
    free(p);
}

static int submit(struct pending *p);

static void on_done(void *arg, int status, uint64_t index, void *result)
{
    struct pending *p = arg;
    if (status == CONS_ELOST && p->tries < COMMAND_RETRIES) {
        log_warn("command.retry", "reason=leadership_lost try=%d", p->tries + 1);
        if (submit(p) == 0)
            return;
        status = CONS_ENOMEM;
    }
    p->status = status;
    p->index = index;
    const struct fsm_result *r = result;
    if (status == 0 && r == NULL) {
        p->status = CONS_EIO; /* applied, but no result reached us: never expected */
    } else if (status == 0) {
        p->result = malloc(r->len ? r->len : 1);
        if (p->result == NULL) {
            p->status = CONS_ENOMEM;
        } else {
            memcpy(p->result, r->data, r->len);
            p->result_len = r->len;
        }
    }
    if (loopq_post(p->q, deliver, p) != 0) {
        /* cannot reach the caller's loop: nothing sane is left to do */
        log_event(LOG_FATAL, "command.lost_completion", "reason=out_of_memory");
        abort();
    }
}

static int submit(struct pending *p)
{
    void *buf = raft_malloc(p->len);
    if (buf == NULL)
        return -1;
    memcpy(buf, p->copy, p->len);
    p->tries++;
    return cons_propose_ex(p->cons, buf, p->len, p->flags, on_done, p) == 0 ? 0 : -1;
}

int command_propose(struct cons *cons, struct loopq *q, Tern__Command *cmd,
                    command_done_cb *done, void *arg)
{
    return command_propose_ex(cons, q, cmd, 0, done, arg);
}

int command_propose_ex(struct cons *cons, struct loopq *q, Tern__Command *cmd, unsigned flags,
                       command_done_cb *done, void *arg)
{
    uint8_t rid[COMMAND_REQUEST_ID_LEN];
    if (!cmd->has_request_id) {
        if (RAND_bytes(rid, sizeof rid) != 1)
            return -1;
        cmd->has_request_id = 1;
        cmd->request_id.data = rid;
        cmd->request_id.len = sizeof rid;
    }
    if (!cmd->has_time_ms) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        cmd->has_time_ms = 1;
        cmd->time_ms = (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
    }
    struct pending *p = calloc(1, sizeof *p);
    if (p == NULL)
        return -1;
    p->len = tern__command__get_packed_size(cmd);
    p->copy = malloc(p->len ? p->len : 1);
    if (p->copy == NULL) {
        free(p);
        return -1;
    }
    tern__command__pack(cmd, p->copy);
    if (cmd->request_id.data == rid) { /* don't leave a pointer to our stack behind */
        cmd->has_request_id = 0;
        cmd->request_id.data = NULL;
        cmd->request_id.len = 0;
    }
    p->cons = cons;
    p->flags = flags;
    p->q = q;
    p->done = done;
    p->arg = arg;
    if (submit(p) != 0) {
        free(p->copy);
        free(p);
        return -1;
    }
    return 0;
}
