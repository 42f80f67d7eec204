/*
 * raft/consensus.c
 * libraft 0.15 with its libuv backend, run on a consensus thread of its own.
 *
 * The happy path of a proposal is:
 * - cons_propose() (any thread) pushes it on the inbox under a mutex and wakes the loop.
 * - The loop moves it to raft_apply(); raft sets req.index at once, and the proposal
 *   joins the in-flight list (kept in index order).
 * - When the entry commits, libraft calls our apply hook; the hook finds the in-flight
 *   proposal with that index and lets the FSM write its result into it.
 * - libraft then fires apply_done(status 0) and the proposer's callback gets the result.
 * Failure modes: not leader (ENOTLEADER at once, or after no_leader_wait_ms when no
 * leader is known and an election may be running), leadership lost (ELOST: the entry
 * may still commit; the FSM's request ids make the retry safe), shutdown (ESHUTDOWN for
 * everything still queued or in flight).
 *
 * libraft facts this relies on (../shared/DEPS.md §1): all raft calls on the loop thread;
 * raft_last_applied()+1 is the index being applied; restore's buffer is ours to free on
 * success; entries after the last snapshot are applied again at every start.
 */
#include "consensus.h"

#include <errno.h>
#include <pthread.h>
#include <raft.h>
#include <raft/uv.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <uv.h>

#include "auth.h"
#include "keys.h"
#include "log.h"
#include "transport.h"

#define CONS_TICK_MS          50    /* status refresh and no-leader deadline checks */
#define CONS_CLOSE_WAIT_MS    2000  /* longest wait for the leader's own appends at stop */
#define CONS_FORWARD_PAUSE_MS 100   /* between attempts to reach a leader */
#define CONS_CHANGE_RETRY_MS  200   /* another membership change is in flight */
#define CONS_CHANGE_WAIT_MS   60000 /* give up on a membership change after this */

/*
 * libraft's uv backend stores entries whose length is a multiple of 8 and only asserts it
 * (canonical/raft src/uv_segment.c, a "TODO: enforce"): an entry of another length is
 * written short and the segment cannot be read back. So every entry travels framed: an
 * 8-byte big-endian payload length, the payload, zero padding to a multiple of 8.
 */
#define ENTRY_HDR 8

struct proposal {
    struct raft_apply req; /* req.data points back here */
    struct cons *c;
    void *buf; /* raft_malloc'd until handed to raft_apply */
    size_t len;
    cons_done_cb *done;
    void *arg;
    uint64_t deadline_ms; /* while no leader is known */
    void *result;         /* set by the apply hook, freed after done() */
    uint64_t token;       /* forwarded: matches cons_forward_done() */
    uint64_t fwd_index;   /* forwarded and applied by the leader at this index */
    uint64_t retry_at_ms; /* forwarding paused until then */
    bool no_apply_wait;   /* forwarded: answer as soon as the leader applied it */
    struct proposal *next, *prev;
};

/* an answer from the forwarder, queued for the loop (cons_forward_done) */
struct fwd_answer {
    uint64_t token;
    int status;
    uint64_t index;
    void *result;
    struct fwd_answer *next;
};

/* a reader waiting for this node to apply an index (cons_wait_applied) */
struct waiter {
    uint64_t index, deadline_ms;
    cons_applied_cb *done;
    void *arg;
    struct waiter *next;
};

/* a membership change waiting for, or running on, the loop */
struct change {
    struct raft_change req; /* req.data = this */
    struct raft_transfer treq;
    struct cons *c;
    enum cons_change_op op;
    uint64_t id;
    char address[64];
    cons_change_cb *done;
    void *arg;
    uint64_t deadline_ms, retry_at_ms;
    struct change *next;
};

struct plist {
    struct proposal *head, *tail;
};

struct cons {
    struct cons_config cfg;
    char *address, *dir;
    struct cons_fsm user;

    pthread_t thread;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t tick;
    struct raft_uv_transport transport;
    bool own_transport; /* transport.c (authenticated), not libraft's TCP one */
    struct raft_io io;
    struct raft_fsm fsm;
    struct raft raft;
    bool raft_inited;

    pthread_mutex_t mu; /* guards inbox, stopping, status, start_* */
    pthread_cond_t started_cv;
    struct plist inbox;                     /* from cons_propose, not yet on the loop */
    struct fwd_answer *answers;             /* from cons_forward_done, not yet on the loop */
    struct change *changes, **changes_tail; /* from cons_change, in order */
    struct waiter *waiters;                 /* cons_wait_applied, any order */
    _Atomic uint64_t applied_now;           /* last index applied, for the fast path */
    bool stopping;
    bool stopped; /* the thread is gone: proposals fail at once */
    bool start_done;
    int start_rv;
    char start_err[256];
    struct cons_status status;

    /* loop thread only */
    struct plist waiting;    /* no leader known yet */
    struct plist inflight;   /* handed to raft_apply, index order */
    struct plist forwarding; /* sent to the leader, waiting for its answer */
    struct plist applying;   /* the leader applied them; waiting for our own apply */
    uint64_t next_token;
    struct change *change; /* the membership change running now */
    bool closing;
    uint64_t close_deadline_ms; /* raft_close() by then even if appends are pending */
    uint64_t snapshots_taken, snapshot_index;
    uint64_t applied; /* last index applied through hook_apply */
};

const char *cons_strerror(int status)
{
    switch (status) {
    case 0:
        return "ok";
    case CONS_ENOTLEADER:
        return "not the leader";
    case CONS_ELOST:
        return "leadership lost, outcome unknown";
    case CONS_ESHUTDOWN:
        return "shutting down";
    case CONS_ENOMEM:
        return "out of memory";
    case CONS_EINVAL:
        return "invalid request";
    case CONS_EUNREACHABLE:
        return "leader unreachable";
    case CONS_ETIMEDOUT:
        return "timed out, outcome unknown";
    default:
        return "i/o error";
    }
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static void plist_push(struct plist *l, struct proposal *p)
{
    p->next = NULL;
    p->prev = l->tail;
    if (l->tail)
        l->tail->next = p;
    else
        l->head = p;
    l->tail = p;
}

static void plist_remove(struct plist *l, struct proposal *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        l->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        l->tail = p->prev;
    p->next = p->prev = NULL;
}

/* finish() calls the proposer back once and frees the proposal. */
static void finish(struct cons *c, struct proposal *p, int status, uint64_t index)
{
    p->done(p->arg, status, index, p->result);
    if (p->result && c->user.result_free)
        c->user.result_free(c->user.ctx, p->result);
    if (p->buf)
        raft_free(p->buf);
    free(p);
}

/* wake_waiters(): readers whose index is applied (or whose time is up) are answered.
 * Loop thread; FORCE_STATUS != 0 answers all of them with it (stop). */
static void wake_waiters(struct cons *c, uint64_t applied, int force_status)
{
    uint64_t now = now_ms();
    pthread_mutex_lock(&c->mu);
    struct waiter *ready = NULL, **pp = &c->waiters;
    while (*pp) {
        struct waiter *w = *pp;
        if (force_status || w->index <= applied || now >= w->deadline_ms) {
            *pp = w->next;
            w->next = ready;
            ready = w;
        } else {
            pp = &w->next;
        }
    }
    pthread_mutex_unlock(&c->mu);
    while (ready) {
        struct waiter *w = ready;
        ready = w->next;
        w->done(w->arg, force_status ? force_status : w->index <= applied ? 0 : CONS_ETIMEDOUT);
        free(w);
    }
}

/* finish_applied(): forwarded proposals whose index is now applied here get answered. */
static void finish_applied(struct cons *c, uint64_t applied)
{
    for (struct proposal *p = c->applying.head, *n; p; p = n) {
        n = p->next;
        if (p->fwd_index <= applied) {
            plist_remove(&c->applying, p);
            finish(c, p, 0, p->fwd_index);
        }
    }
}

static void refresh_status(struct cons *c)
{
    struct cons_status s;
    memset(&s, 0, sizeof s);
    s.id = c->cfg.id;
    if (c->raft_inited) {
        switch (raft_state(&c->raft)) {
        case RAFT_FOLLOWER:
            s.role = CONS_FOLLOWER;
            break;
        case RAFT_CANDIDATE:
            s.role = CONS_CANDIDATE;
            break;
        case RAFT_LEADER:
            s.role = CONS_LEADER;
            break;
        default:
            s.role = CONS_UNAVAILABLE;
        }
        s.term = c->raft.current_term;
        s.commit_index = c->raft.commit_index;
        s.applied_index = raft_last_applied(&c->raft);
        if (c->applied > s.applied_index) /* inside hook_apply, raft has not moved yet */
            s.applied_index = c->applied;
        s.last_index = raft_last_index(&c->raft);
        raft_id lid = 0;
        const char *laddr = NULL;
        raft_leader(&c->raft, &lid, &laddr);
        s.leader_id = lid;
        if (laddr)
            snprintf(s.leader_address, sizeof s.leader_address, "%s", laddr);
    }
    if (c->raft_inited) {
        const struct raft_configuration *conf = &c->raft.configuration;
        bool leader = raft_state(&c->raft) == RAFT_LEADER;
        for (unsigned i = 0; i < conf->n && s.n_members < CONS_MEMBERS_MAX; i++) {
            struct cons_member *m = &s.members[s.n_members++];
            m->id = conf->servers[i].id;
            snprintf(m->address, sizeof m->address, "%s", conf->servers[i].address);
            m->role = conf->servers[i].role == RAFT_VOTER     ? CONS_VOTER
                      : conf->servers[i].role == RAFT_STANDBY ? CONS_STANDBY
                                                              : CONS_SPARE;
            if (leader && c->raft.leader_state.progress != NULL)
                m->match_index = conf->servers[i].id == c->cfg.id
                                     ? raft_last_index(&c->raft)
                                     : c->raft.leader_state.progress[i].match_index;
        }
    }
    s.snapshots_taken = c->snapshots_taken;
    s.snapshot_index = c->snapshot_index;
    if (c->raft_inited && c->raft.log.snapshot.last_index > s.snapshot_index)
        s.snapshot_index = c->raft.log.snapshot.last_index; /* loaded at start */
    pthread_mutex_lock(&c->mu);
    c->status = s;
    pthread_mutex_unlock(&c->mu);
}

/* ---- FSM hooks (loop thread) ---- */

static int hook_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    struct cons *c = fsm->data;
    uint64_t index = raft_last_applied(&c->raft) + 1;
    struct proposal *p = c->inflight.head;
    while (p && p->req.index < index)
        p = p->next;
    void **slot = (p && p->req.index == index) ? &p->result : NULL;
    /* unwrap the entry frame (see entry_wrap); a malformed one is given to the FSM as an
     * empty command, which it refuses like any undecodable command */
    const uint8_t *b = buf->base;
    uint64_t n = buf->len >= ENTRY_HDR ? be64_get(b) : UINT64_MAX;
    if (n > buf->len - ENTRY_HDR || buf->len < ENTRY_HDR)
        c->user.apply(c->user.ctx, index, "", 0, slot);
    else
        c->user.apply(c->user.ctx, index, b + ENTRY_HDR, (size_t) n, slot);
    *result = NULL; /* the result travels in the proposal, see apply_done() */
    c->applied = index;
    atomic_store(&c->applied_now, index);
    refresh_status(c);
    if (c->applying.head)
        finish_applied(c, index);
    if (c->waiters)
        wake_waiters(c, index, 0);
    return 0;
}

static int hook_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct cons *c = fsm->data;
    void *data = NULL;
    size_t len = 0;
    int rv = c->user.snapshot(c->user.ctx, &data, &len);
    if (rv != 0)
        return RAFT_IOERR;
    *bufs = raft_malloc(sizeof **bufs); /* raft frees the array and data (fsm v1) */
    if (*bufs == NULL) {
        raft_free(data);
        return RAFT_NOMEM;
    }
    (*bufs)[0].base = data;
    (*bufs)[0].len = len;
    *n_bufs = 1;
    c->snapshots_taken++;
    c->snapshot_index = raft_last_applied(&c->raft);
    log_info("raft.snapshot", "node=%llu index=%llu bytes=%zu", (unsigned long long) c->cfg.id,
             (unsigned long long) c->snapshot_index, len);
    return 0;
}

static int hook_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct cons *c = fsm->data;
    int rv = c->user.restore(c->user.ctx, buf->base, buf->len);
    if (rv != 0)
        return RAFT_IOERR; /* raft keeps and frees the buffer */
    raft_free(buf->base);  /* on success the buffer is ours */
    return 0; /* forwarded proposals waiting on an index the snapshot covered: on_tick */
}

/* ---- proposals (loop thread) ---- */

static void apply_done(struct raft_apply *req, int status, void *result)
{
    struct proposal *p = req->data;
    struct cons *c = p->c;
    (void) result;
    plist_remove(&c->inflight, p);
    int st = 0;
    if (status == RAFT_NOTLEADER)
        st = CONS_ENOTLEADER;
    else if (status == RAFT_LEADERSHIPLOST)
        st = CONS_ELOST;
    else if (status == RAFT_SHUTDOWN)
        st = CONS_ESHUTDOWN;
    else if (status == RAFT_NOMEM)
        st = CONS_ENOMEM;
    else if (status != 0)
        st = CONS_EIO;
    finish(c, p, st, req->index);
}

/* submit() hands P to raft, or parks it while an election may be running. */
static void submit(struct cons *c, struct proposal *p)
{
    if (c->closing) {
        finish(c, p, CONS_ESHUTDOWN, 0);
        return;
    }
    if (raft_state(&c->raft) != RAFT_LEADER) {
        uint64_t now = now_ms();
        raft_id lid = 0;
        const char *laddr = NULL;
        raft_leader(&c->raft, &lid, &laddr);
        if (lid != 0 && lid != c->cfg.id && c->cfg.forward && now >= p->retry_at_ms) {
            const uint8_t *b = p->buf;
            p->token = ++c->next_token;
            if (c->cfg.forward(c->cfg.forward_ctx, lid, b + ENTRY_HDR, (size_t) be64_get(b),
                               p->token) == 0) {
                plist_push(&c->forwarding, p);
                return;
            }
            p->retry_at_ms = now + CONS_FORWARD_PAUSE_MS;
        }
        if (now < p->deadline_ms) {
            plist_push(&c->waiting, p);
            return;
        }
        finish(c, p, CONS_ENOTLEADER, 0);
        return;
    }
    struct raft_buffer rb = {.base = p->buf, .len = p->len};
    p->req.data = p;
    int rv = raft_apply(&c->raft, &p->req, &rb, 1, apply_done);
    if (rv != 0) {
        finish(c, p, rv == RAFT_NOTLEADER ? CONS_ENOTLEADER : CONS_EIO, 0);
        return;
    }
    p->buf = NULL; /* raft owns it now */
    plist_push(&c->inflight, p);
}

/* take_answers(): forwarded proposals answered by the leader (cons_forward_done). */
static void take_answers(struct cons *c)
{
    pthread_mutex_lock(&c->mu);
    struct fwd_answer *a = c->answers;
    c->answers = NULL;
    pthread_mutex_unlock(&c->mu);
    /* reverse to arrival order */
    struct fwd_answer *rev = NULL;
    while (a) {
        struct fwd_answer *n = a->next;
        a->next = rev;
        rev = a;
        a = n;
    }
    uint64_t applied =
        c->applied > raft_last_applied(&c->raft) ? c->applied : raft_last_applied(&c->raft);
    for (a = rev; a; a = rev) {
        rev = a->next;
        struct proposal *p = c->forwarding.head;
        while (p && p->token != a->token)
            p = p->next;
        if (p == NULL) { /* already failed (shutdown): drop the answer */
            if (a->result && c->user.result_free)
                c->user.result_free(c->user.ctx, a->result);
            free(a);
            continue;
        }
        plist_remove(&c->forwarding, p);
        if (a->status == 0) {
            p->result = a->result;
            p->fwd_index = a->index;
            if (a->index <= applied || p->no_apply_wait)
                finish(c, p, 0, a->index);
            else
                plist_push(&c->applying, p);
        } else if (a->status == CONS_EUNREACHABLE || a->status == CONS_ENOTLEADER) {
            if (a->result && c->user.result_free)
                c->user.result_free(c->user.ctx, a->result);
            p->retry_at_ms = now_ms() + CONS_FORWARD_PAUSE_MS;
            submit(c, p); /* parks it until the pause is over, or fails at the deadline */
        } else {
            if (a->result && c->user.result_free)
                c->user.result_free(c->user.ctx, a->result);
            finish(c, p, a->status, 0);
        }
        free(a);
    }
}

/* ---- membership changes (loop thread) ---- */

static void change_start(struct cons *c);

static void change_finish(struct cons *c, struct change *ch, int status)
{
    if (c->change == ch)
        c->change = NULL;
    log_info("raft.change", "op=%d id=%llu status=%d", (int) ch->op, (unsigned long long) ch->id,
             status);
    refresh_status(c); /* whoever is told "done" sees the new configuration */
    ch->done(ch->arg, status);
    free(ch);
    if (!c->closing)
        uv_async_send(&c->wake); /* the next queued change starts from on_wake */
}

static int map_raft(int rv)
{
    switch (rv) {
    case 0:
        return 0;
    case RAFT_NOTLEADER:
    case RAFT_LEADERSHIPLOST:
        return CONS_ENOTLEADER;
    case RAFT_SHUTDOWN:
        return CONS_ESHUTDOWN;
    case RAFT_NOMEM:
        return CONS_ENOMEM;
    case RAFT_BADID:
    case RAFT_DUPLICATEID:
    case RAFT_DUPLICATEADDRESS:
    case RAFT_BADROLE:
        return CONS_EINVAL;
    default:
        return CONS_EIO;
    }
}

/* member_role(): the role of ID in the configuration, or -1 when absent. */
static int member_role(struct cons *c, uint64_t id)
{
    const struct raft_configuration *conf = &c->raft.configuration;
    for (unsigned i = 0; i < conf->n; i++)
        if (conf->servers[i].id == id)
            return conf->servers[i].role;
    return -1;
}

/* change_retry(): another change is in flight; try this one again shortly. */
static void change_retry(struct cons *c, struct change *ch)
{
    if (now_ms() >= ch->deadline_ms)
        return change_finish(c, ch, CONS_EIO);
    ch->retry_at_ms = now_ms() + CONS_CHANGE_RETRY_MS;
}

static void change_cb(struct raft_change *req, int status)
{
    struct change *ch = req->data;
    struct cons *c = ch->c;
    if (status == RAFT_CANTCHANGE)
        return change_retry(c, ch);
    if (status != 0)
        return change_finish(c, ch, map_raft(status));
    ch->retry_at_ms = 0;
    change_start(c); /* next step (spare -> voter), or done */
}

static void transfer_cb(struct raft_transfer *req)
{
    struct change *ch = req->data;
    struct cons *c = ch->c;
    raft_id lid = 0;
    const char *addr = NULL;
    raft_leader(&c->raft, &lid, &addr);
    /* with id 0 libraft picked the target and left it in req->id */
    change_finish(c, ch, (lid != 0 && lid == req->id) ? 0 : CONS_EIO);
}

/* change_start(): one step of the current change (loop thread). */
static void change_start(struct cons *c)
{
    struct change *ch = c->change;
    if (ch == NULL || now_ms() < ch->retry_at_ms)
        return;
    if (c->closing)
        return change_finish(c, ch, CONS_ESHUTDOWN);
    if (raft_state(&c->raft) != RAFT_LEADER)
        return change_finish(c, ch, CONS_ENOTLEADER);
    int role = member_role(c, ch->id);
    int rv = 0;
    ch->req.data = ch;
    switch (ch->op) {
    case CONS_ADD_VOTER:
        if (role == RAFT_VOTER)
            return change_finish(c, ch, 0);
        if (role < 0)
            rv = raft_add(&c->raft, &ch->req, ch->id, ch->address, change_cb);
        else
            rv = raft_assign(&c->raft, &ch->req, ch->id, RAFT_VOTER, change_cb);
        break;
    case CONS_REMOVE:
        if (role < 0)
            return change_finish(c, ch, 0);
        rv = raft_remove(&c->raft, &ch->req, ch->id, change_cb);
        break;
    case CONS_TRANSFER:
        if (ch->id != 0 && role != RAFT_VOTER)
            return change_finish(c, ch, CONS_EINVAL);
        if (ch->id == c->cfg.id)
            return change_finish(c, ch, 0);
        ch->treq.data = ch;
        rv = raft_transfer(&c->raft, &ch->treq, ch->id, transfer_cb);
        break;
    }
    if (rv == RAFT_CANTCHANGE)
        return change_retry(c, ch);
    if (rv != 0)
        return change_finish(c, ch, map_raft(rv));
    ch->retry_at_ms = UINT64_MAX; /* in libraft's hands until its callback */
}

static void take_changes(struct cons *c)
{
    if (c->change != NULL) {
        if (c->change->retry_at_ms != UINT64_MAX)
            change_start(c);
        return;
    }
    pthread_mutex_lock(&c->mu);
    struct change *ch = c->changes;
    if (ch) {
        c->changes = ch->next;
        if (c->changes == NULL)
            c->changes_tail = &c->changes;
    }
    pthread_mutex_unlock(&c->mu);
    if (ch == NULL)
        return;
    c->change = ch;
    change_start(c);
}

static void drain(struct cons *c)
{
    /* parked ones first, to keep the order proposals were made in */
    struct plist parked = c->waiting;
    c->waiting.head = c->waiting.tail = NULL;
    for (struct proposal *p = parked.head, *n; p; p = n) {
        n = p->next;
        submit(c, p);
    }
    pthread_mutex_lock(&c->mu);
    struct plist in = c->inbox;
    c->inbox.head = c->inbox.tail = NULL;
    pthread_mutex_unlock(&c->mu);
    for (struct proposal *p = in.head, *n; p; p = n) {
        n = p->next;
        submit(c, p);
    }
    take_answers(c);
    take_changes(c);
}

/* ---- lifecycle (loop thread) ---- */

static void on_handle_closed(uv_handle_t *h)
{
    (void) h;
}

static void close_transport(struct cons *c)
{
    if (c->own_transport)
        transport_close(&c->transport);
    else
        raft_uv_tcp_close(&c->transport);
}

static void on_raft_closed(struct raft *r)
{
    struct cons *c = r->data;
    raft_uv_close(&c->io);
    close_transport(c);
    uv_close((uv_handle_t *) &c->wake, on_handle_closed);
    uv_close((uv_handle_t *) &c->tick, on_handle_closed);
}

/*
 * appends_pending(): the leader has entries that are not on its own disk yet. libraft 0.15
 * must not be closed then: uvClose() cancels every append still waiting for its segment,
 * and each cancelled appendLeaderCb() truncates the log from its own first index, so the
 * second one truncates past the end of the log and crashes (seen with two or more
 * proposals in flight at stop, e.g. right after start while open-1 is being created).
 */
static bool appends_pending(struct cons *c)
{
    return raft_state(&c->raft) == RAFT_LEADER && c->raft.last_stored < raft_last_index(&c->raft);
}

static void close_now(struct cons *c)
{
    uv_timer_stop(&c->tick);
    c->raft.data = c;
    raft_close(&c->raft, on_raft_closed);
}

static void on_close_tick(uv_timer_t *t)
{
    struct cons *c = t->data;
    if (!appends_pending(c) || now_ms() >= c->close_deadline_ms)
        close_now(c);
}

static void begin_close(struct cons *c)
{
    if (c->closing)
        return;
    c->closing = true;
    refresh_status(c);
    drain(c); /* fails everything queued with ESHUTDOWN */
    pthread_mutex_lock(&c->mu);
    struct change *chs = c->changes;
    c->changes = NULL;
    c->changes_tail = &c->changes;
    pthread_mutex_unlock(&c->mu);
    for (struct change *ch = chs, *n; ch; ch = n) {
        n = ch->next;
        change_finish(c, ch, CONS_ESHUTDOWN);
    }
    if (appends_pending(c)) { /* let the local writes finish first, see above */
        c->close_deadline_ms = now_ms() + CONS_CLOSE_WAIT_MS;
        uv_timer_start(&c->tick, on_close_tick, 1, 1);
        return;
    }
    close_now(c);
}

static void on_wake(uv_async_t *a)
{
    struct cons *c = a->data;
    pthread_mutex_lock(&c->mu);
    bool stop = c->stopping;
    pthread_mutex_unlock(&c->mu);
    if (stop) {
        begin_close(c);
        return;
    }
    drain(c);
}

static void on_tick(uv_timer_t *t)
{
    struct cons *c = t->data;
    refresh_status(c);
    pthread_mutex_lock(&c->mu);
    bool queued = c->changes != NULL;
    pthread_mutex_unlock(&c->mu);
    if (c->waiting.head || c->change || queued)
        drain(c);
    uint64_t la = raft_last_applied(&c->raft);
    if (la > atomic_load(&c->applied_now))
        atomic_store(&c->applied_now, la); /* configuration entries, restored snapshots */
    if (c->applying.head)                  /* a restored snapshot may have covered their index */
        finish_applied(c, la);
    pthread_mutex_lock(&c->mu);
    bool waiting = c->waiters != NULL;
    pthread_mutex_unlock(&c->mu);
    if (waiting)
        wake_waiters(c, atomic_load(&c->applied_now), 0);
}

static int mkdir_p(const char *path)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int) sizeof tmp)
        return -1;
    for (char *q = tmp + 1; *q; q++) {
        if (*q == '/') {
            *q = 0;
            if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
                return -1;
            *q = '/';
        }
    }
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

static void start_result(struct cons *c, int rv, const char *msg)
{
    pthread_mutex_lock(&c->mu);
    c->start_done = true;
    c->start_rv = rv;
    if (msg)
        snprintf(c->start_err, sizeof c->start_err, "%s", msg);
    pthread_cond_signal(&c->started_cv);
    pthread_mutex_unlock(&c->mu);
}

/* setup() brings libraft up on the loop; returns 0 or -1 with c->start_err set. */
static int setup(struct cons *c)
{
    char msg[256];
    int rv;
    if (mkdir_p(c->dir) != 0) {
        snprintf(msg, sizeof msg, "cannot create raft dir %s: %s", c->dir, strerror(errno));
        goto fail;
    }
    c->own_transport = c->cfg.key != NULL;
    rv = c->own_transport ? transport_init(&c->transport, &c->loop, c->cfg.key)
                          : raft_uv_tcp_init(&c->transport, &c->loop);
    if (rv != 0) {
        snprintf(msg, sizeof msg, "raft transport: %s", raft_strerror(rv));
        goto fail;
    }
    if ((rv = raft_uv_init(&c->io, &c->loop, c->dir, &c->transport)) != 0) {
        snprintf(msg, sizeof msg, "raft io on %s: %s", c->dir, raft_strerror(rv));
        goto fail_transport;
    }
    c->fsm.version = 1;
    c->fsm.data = c;
    c->fsm.apply = hook_apply;
    c->fsm.snapshot = hook_snapshot;
    c->fsm.restore = hook_restore;
    if ((rv = raft_init(&c->raft, &c->io, &c->fsm, c->cfg.id, c->address)) != 0) {
        snprintf(msg, sizeof msg, "raft init: %s", raft_errmsg(&c->raft));
        goto fail_io;
    }
    c->raft_inited = true;
    if (c->cfg.bootstrap) {
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        rv = raft_configuration_add(&conf, c->cfg.id, c->address, RAFT_VOTER);
        if (rv == 0)
            rv = raft_bootstrap(&c->raft, &conf);
        raft_configuration_close(&conf);
        if (rv != 0 && rv != RAFT_CANTBOOTSTRAP) {
            snprintf(msg, sizeof msg, "raft bootstrap: %s", raft_strerror(rv));
            goto fail_raft;
        }
        if (rv == 0)
            log_info("raft.bootstrap", "node=%llu address=%s", (unsigned long long) c->cfg.id,
                     c->address);
    }
    raft_set_election_timeout(&c->raft, c->cfg.election_ms);
    raft_set_heartbeat_timeout(&c->raft, c->cfg.heartbeat_ms);
    raft_set_snapshot_threshold(&c->raft, c->cfg.snapshot_threshold);
    raft_set_snapshot_trailing(&c->raft, c->cfg.snapshot_trailing);
    raft_set_pre_vote(&c->raft, true);
    if ((rv = raft_start(&c->raft)) != 0) {
        snprintf(msg, sizeof msg, "raft start: %s", raft_errmsg(&c->raft));
        goto fail_raft;
    }
    return 0;

fail_raft:
    /* raft_close() also closes io, transport and our handles (on_raft_closed) */
    c->raft.data = c;
    raft_close(&c->raft, on_raft_closed);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    snprintf(c->start_err, sizeof c->start_err, "%s", msg);
    return -1;
fail_io:
    raft_uv_close(&c->io);
fail_transport:
    close_transport(c);
fail:
    uv_close((uv_handle_t *) &c->wake, on_handle_closed);
    uv_close((uv_handle_t *) &c->tick, on_handle_closed);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    snprintf(c->start_err, sizeof c->start_err, "%s", msg);
    return -1;
}

static void *thread_main(void *arg)
{
    struct cons *c = arg;
    sigset_t all;
    sigfillset(&all);
    /* signals belong to the main thread, but faults must still kill with a report */
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    pthread_sigmask(SIG_BLOCK, &all, NULL);

    if (setup(c) != 0) { /* setup closed every handle */
        start_result(c, -1, NULL);
        return NULL;
    }
    uv_timer_start(&c->tick, on_tick, CONS_TICK_MS, CONS_TICK_MS);
    refresh_status(c);
    log_info("raft.start", "node=%llu address=%s dir=%s last_index=%llu",
             (unsigned long long) c->cfg.id, c->address, c->dir,
             (unsigned long long) raft_last_index(&c->raft));
    start_result(c, 0, NULL);
    uv_run(&c->loop, UV_RUN_DEFAULT);

    /* the loop ended: anything left (parked or in flight) fails with ESHUTDOWN */
    for (struct proposal *p = c->waiting.head, *n; p; p = n) {
        n = p->next;
        finish(c, p, CONS_ESHUTDOWN, 0);
    }
    c->waiting.head = c->waiting.tail = NULL;
    for (struct proposal *p = c->inflight.head, *n; p; p = n) {
        n = p->next;
        finish(c, p, CONS_ESHUTDOWN, 0);
    }
    c->inflight.head = c->inflight.tail = NULL;
    struct plist *more[] = {&c->forwarding, &c->applying};
    for (size_t i = 0; i < 2; i++) {
        for (struct proposal *p = more[i]->head, *n; p; p = n) {
            n = p->next;
            /* forwarded: the leader may still apply it; the caller retries with its id */
            finish(c, p, CONS_ESHUTDOWN, 0);
        }
        more[i]->head = more[i]->tail = NULL;
    }
    if (c->change)
        change_finish(c, c->change, CONS_ESHUTDOWN);
    wake_waiters(c, 0, CONS_ESHUTDOWN);
    return NULL;
}

/* ---- public API (any thread) ---- */

int cons_start(const struct cons_config *cfg, const struct cons_fsm *fsm, struct cons **out,
               char *err, size_t errlen)
{
    if (errlen)
        err[0] = 0;
    struct cons *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->cfg = *cfg;
    c->address = strdup(cfg->address);
    c->dir = strdup(cfg->dir);
    c->user = *fsm;
    c->cfg.address = c->address;
    c->cfg.dir = c->dir;
    if (!c->address || !c->dir)
        goto fail_alloc;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->started_cv, NULL);
    c->changes_tail = &c->changes;
    if (uv_loop_init(&c->loop) != 0)
        goto fail_alloc;
    uv_async_init(&c->loop, &c->wake, on_wake);
    c->wake.data = c;
    uv_timer_init(&c->loop, &c->tick);
    c->tick.data = c;

    if (pthread_create(&c->thread, NULL, thread_main, c) != 0) {
        snprintf(err, errlen, "cannot start the consensus thread");
        goto fail_loop;
    }
    pthread_mutex_lock(&c->mu);
    while (!c->start_done)
        pthread_cond_wait(&c->started_cv, &c->mu);
    int rv = c->start_rv;
    pthread_mutex_unlock(&c->mu);
    if (rv != 0) {
        snprintf(err, errlen, "%s", c->start_err);
        pthread_join(c->thread, NULL);
        uv_loop_close(&c->loop);
        goto fail_alloc;
    }
    *out = c;
    return 0;

fail_loop:
    uv_close((uv_handle_t *) &c->wake, NULL);
    uv_close((uv_handle_t *) &c->tick, NULL);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    uv_loop_close(&c->loop);
fail_alloc:
    if (err[0] == 0)
        snprintf(err, errlen, "out of memory");
    free(c->address);
    free(c->dir);
    free(c);
    return -1;
}

/* entry_wrap(): the framed copy of BUF (raft memory), see ENTRY_HDR; frees BUF. */
static void *entry_wrap(void *buf, size_t len, size_t *out_len)
{
    size_t n = (ENTRY_HDR + len + 7) & ~(size_t) 7;
    uint8_t *p = raft_malloc(n);
    if (p != NULL) {
        be64_put(p, len);
        memcpy(p + ENTRY_HDR, buf, len);
        memset(p + ENTRY_HDR + len, 0, n - ENTRY_HDR - len);
        *out_len = n;
    }
    raft_free(buf);
    return p;
}

int cons_propose(struct cons *c, void *buf, size_t len, cons_done_cb *done, void *arg)
{
    return cons_propose_ex(c, buf, len, 0, done, arg);
}

int cons_propose_ex(struct cons *c, void *buf, size_t len, unsigned flags, cons_done_cb *done,
                    void *arg)
{
    if (len == 0) {
        raft_free(buf);
        return CONS_EINVAL;
    }
    buf = entry_wrap(buf, len, &len);
    if (buf == NULL)
        return CONS_ENOMEM;
    struct proposal *p = calloc(1, sizeof *p);
    if (p == NULL) {
        raft_free(buf);
        return CONS_ENOMEM; /* DONE is not called */
    }
    p->c = c;
    p->buf = buf;
    p->len = len;
    p->done = done;
    p->arg = arg;
    p->no_apply_wait = (flags & CONS_NO_APPLY_WAIT) != 0;
    p->deadline_ms = now_ms() + c->cfg.no_leader_wait_ms;
    pthread_mutex_lock(&c->mu);
    if (c->stopped) {
        pthread_mutex_unlock(&c->mu);
        finish(c, p, CONS_ESHUTDOWN, 0);
        return 0;
    }
    plist_push(&c->inbox, p);
    uv_async_send(&c->wake); /* under mu: cons_stop() closes the loop only after "stopped" */
    pthread_mutex_unlock(&c->mu);
    return 0;
}

void cons_forward_done(struct cons *c, uint64_t token, int status, uint64_t index, void *result)
{
    struct fwd_answer *a = calloc(1, sizeof *a);
    pthread_mutex_lock(&c->mu);
    if (c->stopped || a == NULL) { /* nobody waits any more */
        pthread_mutex_unlock(&c->mu);
        free(a);
        if (result && c->user.result_free)
            c->user.result_free(c->user.ctx, result);
        return;
    }
    a->token = token;
    a->status = status;
    a->index = index;
    a->result = result;
    a->next = c->answers;
    c->answers = a;
    uv_async_send(&c->wake); /* under mu, as in cons_propose() */
    pthread_mutex_unlock(&c->mu);
}

int cons_wait_applied(struct cons *c, uint64_t index, unsigned timeout_ms, cons_applied_cb *done,
                      void *arg)
{
    if (index <= atomic_load(&c->applied_now)) {
        done(arg, 0);
        return 0;
    }
    struct waiter *w = malloc(sizeof *w);
    if (w == NULL)
        return CONS_ENOMEM;
    w->index = index;
    w->deadline_ms = now_ms() + timeout_ms;
    w->done = done;
    w->arg = arg;
    pthread_mutex_lock(&c->mu);
    if (c->stopped) {
        pthread_mutex_unlock(&c->mu);
        free(w);
        done(arg, CONS_ESHUTDOWN);
        return 0;
    }
    w->next = c->waiters;
    c->waiters = w;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

int cons_change(struct cons *c, enum cons_change_op op, uint64_t id, const char *address,
                cons_change_cb *done, void *arg)
{
    if ((op == CONS_ADD_VOTER && (address == NULL || strlen(address) >= 64 || id == 0)) ||
        (op == CONS_REMOVE && id == 0))
        return CONS_EINVAL;
    struct change *ch = calloc(1, sizeof *ch);
    if (ch == NULL)
        return CONS_ENOMEM;
    ch->c = c;
    ch->op = op;
    ch->id = id;
    if (address)
        snprintf(ch->address, sizeof ch->address, "%s", address);
    ch->done = done;
    ch->arg = arg;
    ch->deadline_ms = now_ms() + CONS_CHANGE_WAIT_MS;
    pthread_mutex_lock(&c->mu);
    if (c->stopping) {
        pthread_mutex_unlock(&c->mu);
        free(ch);
        return CONS_ESHUTDOWN;
    }
    *c->changes_tail = ch;
    c->changes_tail = &ch->next;
    uv_async_send(&c->wake); /* under mu, as in cons_propose() */
    pthread_mutex_unlock(&c->mu);
    return 0;
}

void cons_status(struct cons *c, struct cons_status *out)
{
    pthread_mutex_lock(&c->mu);
    *out = c->status;
    pthread_mutex_unlock(&c->mu);
}

void cons_stop(struct cons *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->mu);
    bool already = c->stopping;
    c->stopping = true;
    pthread_mutex_unlock(&c->mu);
    if (already)
        return;
    uv_async_send(&c->wake);
    pthread_join(c->thread, NULL);
    pthread_mutex_lock(&c->mu);
    c->stopped = true;
    struct plist in = c->inbox; /* pushed after the loop stopped reading the inbox */
    c->inbox.head = c->inbox.tail = NULL;
    struct fwd_answer *ans = c->answers;
    c->answers = NULL;
    struct waiter *ws = c->waiters; /* added after the loop answered the others */
    c->waiters = NULL;
    pthread_mutex_unlock(&c->mu);
    for (struct waiter *w = ws, *n; w; w = n) {
        n = w->next;
        w->done(w->arg, CONS_ESHUTDOWN);
        free(w);
    }
    for (struct fwd_answer *a = ans, *n; a; a = n) {
        n = a->next;
        if (a->result && c->user.result_free)
            c->user.result_free(c->user.ctx, a->result);
        free(a);
    }
    for (struct proposal *p = in.head, *n; p; p = n) {
        n = p->next;
        finish(c, p, CONS_ESHUTDOWN, 0);
    }
    uv_loop_close(&c->loop);
    log_info("raft.stop", "node=%llu", (unsigned long long) c->cfg.id);
}

void cons_free(struct cons *c)
{
    if (c == NULL)
        return;
    cons_stop(c);
    pthread_cond_destroy(&c->started_cv);
    pthread_mutex_destroy(&c->mu);
    free(c->address);
    free(c->dir);
    free(c);
}
