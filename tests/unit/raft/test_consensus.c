/*
 * tests/unit/raft/test_consensus.c
 * The consensus loop (raft/consensus.c) on a real one-voter libraft node on 127.0.0.1, with
 * a counting state machine of the test's own: proposals of every length from 1 to 100 bytes
 * complete in order with the FSM's result, and the FSM sees exactly the proposed bytes (the
 * 8-byte entry framing stays inside consensus.c); a node that knows no leader holds
 * proposals, then refuses them; a restart replays the log into a fresh FSM, or restores the
 * newest snapshot and replays only the tail; after cons_stop() proposals complete at once
 * with CONS_ESHUTDOWN. Completions and FSM callbacks run on the consensus thread, so they
 * only record what they see under the fixture's mutex; every check is made on the test
 * thread, and every wait is bounded (WAIT_MS).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <raft.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "consensus.h"
#include "storage/tmpdir.h"

#define PAYLOAD_MAX 100  /* proposals are 1..PAYLOAD_MAX bytes */
#define ENTRIES_MAX 256  /* entries one fixture records */
#define WAIT_MS     8000 /* the longest any single wait may take */
#define NODE_ID     1

#define SNAP_MAGIC 0x434e5446u /* "CNTF": the counting FSM's snapshot */

/* ---- the counting state machine (its calls run on the consensus thread) ---- */

struct entry {
    uint64_t index;
    size_t len;
    uint8_t data[PAYLOAD_MAX];
};

/* What apply hands back to the proposer: freed by result_free. */
struct result {
    uint64_t index; /* the index apply was called with */
    uint64_t count; /* entries in the state after this one */
    uint64_t sum;   /* sum of every payload byte so far */
};

struct counter {
    struct entry entries[ENTRIES_MAX]; /* the state: every command, in order */
    size_t n;
    uint64_t sum;
    /* instrumentation, not part of the state */
    unsigned applies;       /* apply calls since the last reset */
    uint64_t first_applied; /* index of the first of those, 0 = none */
    unsigned snapshots, restores;
    size_t restored_n;  /* entries the last restored snapshot held */
    long results_live;  /* results produced and not yet freed */
    unsigned bad;       /* contract breaches seen on the consensus thread */
    char bad_what[128]; /* the first one */
};

/* One proposal's completion as the test saw it. */
struct done_rec {
    struct fx *f;
    unsigned calls;
    int status;
    uint64_t index;
    bool has_result;
    struct result res;
};

struct fx {
    char dir[TMPDIR_MAX];
    char raft_dir[TMPDIR_MAX];
    char address[32];
    struct cons_config cfg;
    struct cons *cons;
    pthread_mutex_t mu; /* guards fsm, recs, completions */
    pthread_cond_t cv;  /* apply or a completion happened */
    struct counter fsm;
    struct done_rec recs[ENTRIES_MAX];
    unsigned completions;
};

static void breach(struct counter *s, const char *what)
{
    if (s->bad++ == 0)
        snprintf(s->bad_what, sizeof s->bad_what, "%s", what);
}

static void fsm_apply_cb(void *ctx, uint64_t index, const void *buf, size_t len, void **result)
{
    struct fx *f = ctx;
    struct counter *s = &f->fsm;

    pthread_mutex_lock(&f->mu);
    s->applies++;
    if (s->first_applied == 0)
        s->first_applied = index;
    if (len == 0 || len > PAYLOAD_MAX)
        breach(s, "payload length out of 1..PAYLOAD_MAX");
    else if (s->n > 0 && index <= s->entries[s->n - 1].index)
        breach(s, "apply index did not increase");
    else if (s->n == ENTRIES_MAX)
        breach(s, "more entries than the test proposed");
    else {
        struct entry *e = &s->entries[s->n++];
        e->index = index;
        e->len = len;
        memcpy(e->data, buf, len);
        for (size_t i = 0; i < len; i++)
            s->sum += e->data[i];
    }
    if (result != NULL) {
        struct result *r = malloc(sizeof *r);
        if (r != NULL) {
            r->index = index;
            r->count = s->n;
            r->sum = s->sum;
            s->results_live++;
        }
        *result = r;
    }
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void fsm_result_free_cb(void *ctx, void *result)
{
    struct fx *f = ctx;

    if (result == NULL)
        return;
    pthread_mutex_lock(&f->mu);
    f->fsm.results_live--;
    pthread_mutex_unlock(&f->mu);
    free(result);
}

/* put()/get(): native-endian fields; a snapshot never leaves this process. */
static uint8_t *put(uint8_t *p, const void *v, size_t n)
{
    memcpy(p, v, n);
    return p + n;
}

/* Snapshot: magic u32, count u64, sum u64, then per entry index u64, len u8, data. */
static int fsm_snapshot_cb(void *ctx, void **buf, size_t *len)
{
    struct fx *f = ctx;
    struct counter *s = &f->fsm;
    uint32_t magic = SNAP_MAGIC;
    uint64_t count;
    size_t size = 4 + 8 + 8;
    uint8_t *p, *out;

    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < s->n; i++)
        size += 8 + 1 + s->entries[i].len;
    out = raft_malloc(size); /* libraft frees it */
    if (out == NULL) {
        pthread_mutex_unlock(&f->mu);
        return -1;
    }
    count = s->n;
    p = put(out, &magic, 4);
    p = put(p, &count, 8);
    p = put(p, &s->sum, 8);
    for (size_t i = 0; i < s->n; i++) {
        uint8_t l = (uint8_t) s->entries[i].len;
        p = put(p, &s->entries[i].index, 8);
        p = put(p, &l, 1);
        p = put(p, s->entries[i].data, l);
    }
    s->snapshots++;
    pthread_mutex_unlock(&f->mu);
    *buf = out;
    *len = size;
    return 0;
}

/* Restore: bounds-checked before every read; a malformed snapshot changes nothing. */
static int fsm_restore_cb(void *ctx, const void *buf, size_t len)
{
    struct fx *f = ctx;
    struct counter *s = &f->fsm;
    const uint8_t *p = buf, *end = p + len;
    struct entry *tmp = calloc(ENTRIES_MAX, sizeof *tmp);
    uint32_t magic;
    uint64_t count, sum;

    if (tmp == NULL)
        return -1;
    if (len < 4 + 8 + 8)
        goto bad;
    memcpy(&magic, p, 4);
    memcpy(&count, p + 4, 8);
    memcpy(&sum, p + 12, 8);
    p += 20;
    if (magic != SNAP_MAGIC || count > ENTRIES_MAX)
        goto bad;
    for (uint64_t i = 0; i < count; i++) {
        if ((size_t) (end - p) < 9)
            goto bad;
        memcpy(&tmp[i].index, p, 8);
        tmp[i].len = p[8];
        p += 9;
        if (tmp[i].len > PAYLOAD_MAX || (size_t) (end - p) < tmp[i].len)
            goto bad;
        memcpy(tmp[i].data, p, tmp[i].len);
        p += tmp[i].len;
    }
    if (p != end)
        goto bad;

    pthread_mutex_lock(&f->mu);
    memcpy(s->entries, tmp, count * sizeof *tmp);
    s->n = count;
    s->sum = sum;
    s->restores++;
    s->restored_n = count;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    free(tmp);
    return 0;

bad:
    pthread_mutex_lock(&f->mu);
    breach(s, "restore got a malformed snapshot");
    pthread_mutex_unlock(&f->mu);
    free(tmp);
    return -1;
}

/* ---- proposals and completions ---- */

/* payload_len()/payload_byte(): proposal K of batch SEED. 13 is prime to 100, so any 100
 * consecutive K give every length from 1 to 100, multiples of 8 and the others. */
static size_t payload_len(unsigned k, unsigned seed)
{
    return 1 + (k * 13 + seed) % PAYLOAD_MAX;
}

static uint8_t payload_byte(unsigned k, unsigned seed, size_t j)
{
    return (uint8_t) (k * 31 + j * 7 + seed * 101);
}

static void on_done(void *arg, int status, uint64_t index, void *result)
{
    struct done_rec *r = arg;
    struct fx *f = r->f;

    pthread_mutex_lock(&f->mu);
    r->calls++;
    r->status = status;
    r->index = index;
    if (result != NULL) {
        r->has_result = true;
        r->res = *(const struct result *) result;
    }
    f->completions++;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* propose(): proposal K of batch SEED, completing into recs[K]; returns cons_propose's. */
static int propose(struct fx *f, unsigned k, unsigned seed)
{
    size_t len = payload_len(k, seed);
    uint8_t *buf = raft_malloc(len);

    assert_non_null(buf);
    for (size_t j = 0; j < len; j++)
        buf[j] = payload_byte(k, seed, j);
    assert_true(k < ENTRIES_MAX);
    memset(&f->recs[k], 0, sizeof f->recs[k]);
    f->recs[k].f = f;
    return cons_propose(f->cons, buf, len, on_done, &f->recs[k]);
}

/* ---- bounded waits ---- */

typedef bool pred_fn(struct fx *f, uint64_t arg);

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

/* wait_for(): true once PRED holds (checked under f->mu), false after WAIT_MS. Wakes on
 * every apply and completion, and every 20 ms for predicates on cons_status(). */
static bool wait_for(struct fx *f, pred_fn *pred, uint64_t arg)
{
    uint64_t deadline = mono_ms() + WAIT_MS;
    bool ok;

    pthread_mutex_lock(&f->mu);
    while (!(ok = pred(f, arg)) && mono_ms() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&f->cv, &f->mu, &ts);
    }
    pthread_mutex_unlock(&f->mu);
    return ok;
}

static bool completions_at_least(struct fx *f, uint64_t n)
{
    return f->completions >= n;
}

static bool entries_at_least(struct fx *f, uint64_t n)
{
    return f->fsm.n >= n;
}

static bool is_leader(struct fx *f, uint64_t unused)
{
    struct cons_status s;

    cons_status(f->cons, &s);
    return s.role == CONS_LEADER && s.leader_id == NODE_ID;
}

static bool snapshot_taken(struct fx *f, uint64_t unused)
{
    struct cons_status s;

    cons_status(f->cons, &s);
    return s.snapshots_taken > 0 && s.snapshot_index > 0;
}

/* ---- fixture ---- */

/* free_port(): a loopback TCP port that was free a moment ago. */
static int free_port(void)
{
    struct sockaddr_in sa;
    socklen_t salen = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *) &sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *) &sa, &salen) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    pthread_condattr_t ca;
    int port = free_port();

    if (f == NULL || port <= 0 || tmpdir_make(f->dir, "cons") != 0 ||
        tmpdir_join(f->raft_dir, f->dir, "raft") != 0) {
        free(f);
        return -1;
    }
    snprintf(f->address, sizeof f->address, "127.0.0.1:%d", port);
    pthread_mutex_init(&f->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cv, &ca);
    pthread_condattr_destroy(&ca);
    f->cfg.id = NODE_ID;
    f->cfg.address = f->address;
    f->cfg.dir = f->raft_dir; /* does not exist yet: cons_start creates it */
    f->cfg.election_ms = 300;
    f->cfg.heartbeat_ms = 50;
    f->cfg.snapshot_threshold = 1024;
    f->cfg.snapshot_trailing = 128;
    f->cfg.bootstrap = true;
    f->cfg.no_leader_wait_ms = 3000;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    cons_free(f->cons); /* joins the consensus thread before the fixture goes */
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    tmpdir_remove(f->dir);
    free(f);
    return 0;
}

/* start(): a fresh FSM (the previous state is dropped) and a started node. */
static void start(struct fx *f)
{
    static const struct cons_fsm hooks = {
        .apply = fsm_apply_cb,
        .snapshot = fsm_snapshot_cb,
        .restore = fsm_restore_cb,
        .result_free = fsm_result_free_cb,
    };
    struct cons_fsm fsm = hooks;
    char err[256] = "";

    assert_null(f->cons);
    memset(&f->fsm, 0, sizeof f->fsm);
    fsm.ctx = f;
    if (cons_start(&f->cfg, &fsm, &f->cons, err, sizeof err) != 0)
        fail_msg("cons_start: %s", err);
    assert_non_null(f->cons);
}

static void stop(struct fx *f)
{
    cons_free(f->cons);
    f->cons = NULL;
    assert_int_equal(f->fsm.results_live, 0);
    if (f->fsm.bad != 0)
        fail_msg("%u contract breaches, the first: %s", f->fsm.bad, f->fsm.bad_what);
}

static void start_leader(struct fx *f)
{
    start(f);
    assert_true(wait_for(f, is_leader, 0));
}

/* propose_all(): proposals FIRST..FIRST+N-1 of batch SEED, waiting for every completion. */
static void propose_all(struct fx *f, unsigned first, unsigned n, unsigned seed)
{
    unsigned before;

    pthread_mutex_lock(&f->mu);
    before = f->completions;
    pthread_mutex_unlock(&f->mu);
    for (unsigned k = first; k < first + n; k++)
        assert_int_equal(propose(f, k, seed), 0);
    assert_true(wait_for(f, completions_at_least, before + n));
}

/* check_completions(): recs[FIRST..FIRST+N-1] each completed once with status 0, at
 * increasing indexes, with the FSM's result for that entry (it was command COUNT0+k). */
static void check_completions(struct fx *f, unsigned first, unsigned n, uint64_t count0)
{
    uint64_t prev = 0;

    for (unsigned k = first; k < first + n; k++) {
        const struct done_rec *r = &f->recs[k];
        assert_int_equal(r->calls, 1);
        assert_int_equal(r->status, 0);
        assert_true(r->index > prev);
        prev = r->index;
        assert_true(r->has_result);
        assert_int_equal(r->res.index, r->index);
        assert_int_equal(r->res.count, count0 + (k - first) + 1);
    }
}

/* fsm_copy(): the FSM as it is now, taken under the lock, to check without it (a failed
 * check must not leave the mutex held: the consensus thread would block on it). */
static struct counter *fsm_copy(struct fx *f)
{
    struct counter *s = malloc(sizeof *s);

    assert_non_null(s);
    pthread_mutex_lock(&f->mu);
    *s = f->fsm;
    pthread_mutex_unlock(&f->mu);
    return s;
}

/* check_entry(): the FSM's entry I holds exactly proposal K of batch SEED. */
static void check_entry(const struct counter *s, size_t i, unsigned k, unsigned seed)
{
    const struct entry *e = &s->entries[i];
    size_t len = payload_len(k, seed);

    assert_true(i < s->n);
    assert_int_equal(e->len, len);
    for (size_t j = 0; j < len; j++)
        assert_int_equal(e->data[j], payload_byte(k, seed, j));
}

static uint64_t payload_sum(unsigned first, unsigned n, unsigned seed)
{
    uint64_t sum = 0;

    for (unsigned k = first; k < first + n; k++)
        for (size_t j = 0; j < payload_len(k, seed); j++)
            sum += payload_byte(k, seed, j);
    return sum;
}

/* ---- tests ---- */

/* 120 proposals: every length 1..100; completions and FSM agree on every entry. */
static void test_propose_apply(void **state)
{
    struct fx *f = *state;
    struct cons_status s;
    struct counter *c;
    const unsigned n = 120;

    start_leader(f);
    propose_all(f, 0, n, 1);
    check_completions(f, 0, n, 0);
    c = fsm_copy(f);
    assert_int_equal(c->n, n);
    assert_int_equal(c->applies, n);
    for (unsigned k = 0; k < n; k++) {
        check_entry(c, k, k, 1);
        assert_int_equal(c->entries[k].index, f->recs[k].index);
    }
    assert_int_equal(c->sum, payload_sum(0, n, 1));
    assert_int_equal(f->recs[n - 1].res.sum, c->sum);
    free(c);

    cons_status(f->cons, &s);
    assert_int_equal(s.id, NODE_ID);
    assert_int_equal(s.role, CONS_LEADER);
    assert_int_equal(s.leader_id, NODE_ID);
    assert_string_equal(s.leader_address, f->address);
    assert_true(s.term >= 1);
    assert_true(s.last_index >= f->recs[n - 1].index);
    assert_true(s.commit_index >= f->recs[n - 1].index);
    assert_true(s.applied_index >= f->recs[n - 1].index);
    assert_int_equal(s.snapshots_taken, 0);
    stop(f);
}

/* Proposals made at once after cons_start() complete. (A lone voter elects itself inside
 * raft_start(), so nothing waits here: see test_no_leader_parks for that path.) */
static void test_propose_at_start(void **state)
{
    struct fx *f = *state;
    struct counter *c;
    const unsigned n = 10;

    start(f);
    propose_all(f, 0, n, 2);
    check_completions(f, 0, n, 0);
    c = fsm_copy(f);
    assert_int_equal(c->n, n);
    for (unsigned k = 0; k < n; k++)
        check_entry(c, k, k, 2);
    free(c);
    stop(f);
}

/* A node that knows no leader (not bootstrapped, no peers: it waits to be added) holds
 * proposals for no_leader_wait_ms, then fails them with CONS_ENOTLEADER. */
static void test_no_leader_parks(void **state)
{
    struct fx *f = *state;
    struct cons_status s;
    const unsigned n = 3, wait_ms = 300;
    uint64_t t0, elapsed;

    f->cfg.bootstrap = false;
    f->cfg.no_leader_wait_ms = wait_ms;
    start(f);
    cons_status(f->cons, &s);
    assert_int_not_equal(s.role, CONS_LEADER);
    assert_int_equal(s.leader_id, 0);
    t0 = mono_ms();
    for (unsigned k = 0; k < n; k++)
        assert_int_equal(propose(f, k, 3), 0);
    assert_true(wait_for(f, completions_at_least, n));
    elapsed = mono_ms() - t0;
    assert_true(elapsed + 10 >= wait_ms); /* held, not failed at once */
    for (unsigned k = 0; k < n; k++) {
        assert_int_equal(f->recs[k].calls, 1);
        assert_int_equal(f->recs[k].status, CONS_ENOTLEADER);
        assert_int_equal(f->recs[k].index, 0);
        assert_false(f->recs[k].has_result);
    }
    stop(f);
    assert_int_equal(f->fsm.applies, 0);
}

/* A restart replays the whole log into a fresh FSM: same bytes at the same indexes, then
 * new proposals continue after the old ones. */
static void test_restart_replays(void **state)
{
    struct fx *f = *state;
    struct cons_status s;
    struct counter *c;
    uint64_t index[40];
    const unsigned n = 40;

    start_leader(f);
    propose_all(f, 0, n, 3);
    check_completions(f, 0, n, 0);
    for (unsigned k = 0; k < n; k++)
        index[k] = f->recs[k].index;
    stop(f);

    start(f); /* fresh, empty FSM on the same dir */
    assert_true(wait_for(f, entries_at_least, n));
    assert_true(wait_for(f, is_leader, 0));
    c = fsm_copy(f);
    assert_int_equal(c->n, n);
    assert_int_equal(c->applies, n);
    assert_int_equal(c->restores, 0);
    assert_int_equal(c->results_live, 0); /* nobody waited: no results */
    for (unsigned k = 0; k < n; k++) {
        check_entry(c, k, k, 3);
        assert_int_equal(c->entries[k].index, index[k]);
    }
    free(c);

    propose_all(f, n, 5, 3);
    check_completions(f, n, 5, n);
    assert_true(f->recs[n].index > index[n - 1]);
    c = fsm_copy(f);
    for (unsigned k = n; k < n + 5; k++)
        check_entry(c, k, k, 3);
    assert_int_equal(c->sum, payload_sum(0, n + 5, 3));
    free(c);
    cons_status(f->cons, &s);
    assert_true(s.applied_index >= f->recs[n + 4].index);
    stop(f);
}

/* With a small snapshot threshold a restart restores the newest snapshot and replays only
 * the entries after it. The last proposals are made one at a time after a snapshot was
 * taken, so that the newest snapshot almost never holds them all (libraft takes one when
 * THRESHOLD entries were applied since the last one completed and none is being written;
 * when a slow write of the first one completes just before the last apply, the newest
 * snapshot holds everything and the tail is empty, which is still correct). */
static void test_snapshot_restore_tail(void **state)
{
    struct fx *f = *state;
    struct cons_status s;
    struct counter *c;
    uint64_t index[33];
    const unsigned n = 33, batch = 30;
    size_t restored;

    f->cfg.snapshot_threshold = 8;
    f->cfg.snapshot_trailing = 2;
    start_leader(f);
    propose_all(f, 0, batch, 4);
    assert_true(wait_for(f, snapshot_taken, 0));
    for (unsigned k = batch; k < n; k++)
        propose_all(f, k, 1, 4);
    check_completions(f, 0, n, 0);
    for (unsigned k = 0; k < n; k++)
        index[k] = f->recs[k].index;
    cons_status(f->cons, &s);
    assert_true(s.snapshots_taken >= 1);
    assert_true(s.snapshot_index > 0 && s.snapshot_index <= index[n - 1]);
    c = fsm_copy(f);
    assert_true(c->snapshots >= 1);
    assert_int_equal(c->restores, 0);
    free(c);
    stop(f);

    start(f); /* fresh, empty FSM on the same dir */
    assert_true(wait_for(f, entries_at_least, n));
    assert_true(wait_for(f, is_leader, 0));
    cons_status(f->cons, &s);
    c = fsm_copy(f);
    restored = c->restored_n;
    assert_int_equal(c->restores, 1);
    assert_true(restored > 0 && restored <= n);
    assert_int_equal(c->n, n);
    assert_int_equal(c->applies, n - restored); /* only the tail */
    if (restored < n)
        assert_true(c->first_applied > c->entries[restored - 1].index);
    assert_true(c->entries[restored - 1].index <= s.snapshot_index);
    for (unsigned k = 0; k < n; k++) {
        check_entry(c, k, k, 4);
        assert_int_equal(c->entries[k].index, index[k]);
    }
    assert_int_equal(c->sum, payload_sum(0, n, 4));
    free(c);
    stop(f);
}

/* After cons_stop() a proposal completes at once, on the caller's thread, ESHUTDOWN. */
static void test_propose_after_stop(void **state)
{
    struct fx *f = *state;

    start_leader(f);
    cons_stop(f->cons);
    cons_stop(f->cons); /* idempotent */
    cons_stop(NULL);
    assert_int_equal(propose(f, 0, 5), 0);
    assert_int_equal(f->recs[0].calls, 1); /* already called */
    assert_int_equal(f->recs[0].status, CONS_ESHUTDOWN);
    assert_false(f->recs[0].has_result);
    assert_int_equal(f->fsm.applies, 0);
    stop(f);
}

/* status_rank(): the order statuses must come in along the proposals: committed first,
 * then those raft had (outcome unknown), then those it never got. -1: not allowed. */
static int status_rank(int status)
{
    switch (status) {
    case 0:
        return 0;
    case CONS_ELOST:
        return 1;
    case CONS_ESHUTDOWN:
        return 2;
    default:
        return -1;
    }
}

/*
 * Stopping while proposals are queued, in flight or committing, at several delays after the
 * last one: every proposal completes exactly once, with 0 (applied), CONS_ELOST (raft had
 * it: outcome unknown) or CONS_ESHUTDOWN (raft never had it), in that order along the
 * proposals; the FSM holds a prefix of the proposals covering every one completed with 0.
 *
 * This is the regression test of a libraft 0.15 crash: its uvClose cancels each pending
 * append, and each cancelled appendLeaderCb truncates the log from its own first index, so
 * the second truncated past the end and the consensus thread died of SIGSEGV. consensus.c
 * now waits for the leader's own appends before it closes libraft.
 */
static void test_stop_with_pending(void **state)
{
    static const unsigned delays_us[] = {0, 0, 0, 50, 200, 1000, 5000};
    const size_t rounds = sizeof delays_us / sizeof delays_us[0];
    const unsigned n = 60;
    struct fx *f = *state;
    char name[16];

    for (size_t round = 0; round < rounds; round++) {
        unsigned seed = 10 + (unsigned) round, ok = 0;
        int rank = 0;
        struct counter *c;

        snprintf(name, sizeof name, "raft%zu", round); /* a fresh log: nothing to replay */
        assert_int_equal(tmpdir_join(f->raft_dir, f->dir, name), 0);
        f->completions = 0;
        start_leader(f);
        for (unsigned k = 0; k < n; k++)
            assert_int_equal(propose(f, k, seed), 0);
        usleep(delays_us[round]);
        cons_stop(f->cons);
        assert_int_equal(f->completions, n);
        for (unsigned k = 0; k < n; k++) {
            const struct done_rec *r = &f->recs[k];
            int rk = status_rank(r->status);
            if (r->calls != 1 || rk < rank)
                fail_msg("round %zu proposal %u: %u calls, status %d (%s)", round, k, r->calls,
                         r->status, cons_strerror(r->status));
            rank = rk;
            if (r->status == 0) {
                ok++;
                assert_true(r->has_result);
            }
        }
        c = fsm_copy(f);
        assert_true(c->n >= ok);
        for (unsigned k = 0; k < c->n; k++)
            check_entry(c, k, k, seed);
        free(c);
        stop(f);
    }
}

/* An empty command is refused at once and its buffer freed (ASan checks the free). */
static void test_propose_empty(void **state)
{
    struct fx *f = *state;
    void *buf;

    start_leader(f);
    f->recs[0].f = f;
    buf = raft_malloc(8);
    assert_non_null(buf);
    assert_int_equal(cons_propose(f->cons, buf, 0, on_done, &f->recs[0]), CONS_EINVAL);
    assert_int_equal(cons_propose(f->cons, NULL, 0, on_done, &f->recs[0]), CONS_EINVAL);
    assert_int_equal(f->recs[0].calls, 0);
    propose_all(f, 1, 1, 7); /* the loop is still fine */
    check_completions(f, 1, 1, 0);
    assert_int_equal(f->recs[0].calls, 0);
    stop(f);
}

/* A raft dir that cannot be created fails cons_start with a message and no node. */
static void test_start_bad_dir(void **state)
{
    struct fx *f = *state;
    struct cons_fsm fsm = {.ctx = f,
                           .apply = fsm_apply_cb,
                           .snapshot = fsm_snapshot_cb,
                           .restore = fsm_restore_cb,
                           .result_free = fsm_result_free_cb};
    struct cons *c = NULL;
    char file[TMPDIR_MAX], below[TMPDIR_MAX], err[256] = "";
    FILE *fp;

    assert_int_equal(tmpdir_join(file, f->dir, "file"), 0);
    assert_int_equal(tmpdir_join(below, file, "raft"), 0);
    fp = fopen(file, "w");
    assert_non_null(fp);
    fclose(fp);
    f->cfg.dir = below;
    assert_int_equal(cons_start(&f->cfg, &fsm, &c, err, sizeof err), -1);
    assert_null(c);
    assert_non_null(strstr(err, "raft dir"));
}

static void test_strerror(void **state)
{
    const int codes[] = {0,           CONS_ENOTLEADER, CONS_ELOST, CONS_ESHUTDOWN,
                         CONS_ENOMEM, CONS_EINVAL,     CONS_EIO};
    const size_t n = sizeof codes / sizeof codes[0];

    for (size_t i = 0; i < n; i++) {
        assert_non_null(cons_strerror(codes[i]));
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(cons_strerror(codes[i]), cons_strerror(codes[j]));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_propose_apply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_propose_at_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_leader_parks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_replays, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_restore_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_propose_after_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_with_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_propose_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_bad_dir, setup, teardown),
        cmocka_unit_test(test_strerror),
    };

    signal(SIGPIPE, SIG_IGN); /* libraft writes to peers' sockets (../shared/DEPS.md §1) */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
