/*
 * tests/unit/raft/test_membership.c
 * The cluster side of the consensus loop (raft/consensus.c): three, sometimes four, real
 * libraft nodes in this one process on 127.0.0.1 (ephemeral ports), talking over the
 * authenticated transport (raft/transport.c) with a shared 32-byte secret. Each node has a
 * counting state machine of the test's own. Covered: growing a cluster with
 * CONS_ADD_VOTER, forwarding a follower's proposals through the forward hook with
 * read-your-writes, retries when the hook reports the leader unreachable, leadership
 * transfer, removal, a node with another secret that can never join, and stopping with a
 * forwarded proposal unanswered. Callbacks run on the consensus threads and only record
 * what they see under the cluster's mutex; every check is made on the test thread, from
 * copies, and every wait is bounded (WAIT_MS).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <raft.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "consensus.h"
#include "storage/tmpdir.h"

#define NODES_MAX    4     /* ids 1..NODES_MAX; node 4 is the stranger of test 6 */
#define PAYLOAD_MAX  100   /* proposals are 1..PAYLOAD_MAX bytes */
#define ENTRIES_MAX  128   /* entries one node's FSM records */
#define RECS_MAX     64    /* proposals one test makes */
#define CHANGES_MAX  8     /* membership changes one test makes */
#define WAIT_MS      10000 /* the longest any single wait may take */
#define ELECTION_MS  300
#define HEARTBEAT_MS 30
#define NO_LEADER_MS 3000 /* no_leader_wait_ms, unless a test sets its own */
#define PAUSE_MS     100  /* consensus.c's CONS_FORWARD_PAUSE_MS, between forward attempts */
#define STRANGER_MS  2000 /* how long test 6 watches the stranger not catching up */
#define FAR_INDEX    (UINT64_C(1) << 40) /* an index no test ever reaches */

/* ---- the cluster: nodes, their FSMs, their forward hooks ---- */

struct entry {
    uint64_t index;
    size_t len;
    uint8_t data[PAYLOAD_MAX];
};

/* What apply hands back to a waiting proposer (and what the hook copies): result_free. */
struct result {
    uint64_t index; /* the index apply was called with */
    uint64_t count; /* entries in the state after this one */
};

struct fsm_state {
    struct entry entries[ENTRIES_MAX];
    size_t n;
    unsigned applies;
    unsigned bad;       /* contract breaches seen on the consensus thread */
    char bad_what[128]; /* the first one */
};

struct cluster;

struct node {
    struct cluster *cl;
    uint64_t id;
    char address[32];
    char dir[TMPDIR_MAX];
    unsigned no_leader_ms;
    struct cons *cons;    /* written under cl->mu */
    struct fsm_state fsm; /* cl->mu */
    /* the forward hook's behaviour and what it saw (cl->mu) */
    unsigned refuse_left;      /* return -1 this many more times */
    unsigned unreachable_left; /* answer CONS_EUNREACHABLE this many more times */
    bool never_answer;         /* keep the proposal, answer nothing */
    bool fake_answer;          /* answer 0 at FAR_INDEX with a made-up result */
    unsigned hook_calls;
    uint64_t last_token, last_leader;
    unsigned early; /* leader answered before this node had applied the index */
};

/* One proposal's completion as the test saw it. */
struct done_rec {
    struct cluster *cl;
    uint64_t node; /* proposed on */
    unsigned calls;
    int status;
    uint64_t index;
    bool has_result;
    struct result res;
    bool rw_ok;       /* status 0: the proposer's FSM held INDEX when it completed */
    uint64_t done_ms; /* when it completed */
};

struct change_rec {
    struct cluster *cl;
    unsigned calls;
    int status;
};

struct cluster {
    char dir[TMPDIR_MAX];
    pthread_mutex_t mu; /* guards everything the consensus threads write */
    pthread_cond_t cv;  /* an apply, a completion or a hook call happened */
    struct auth_key key, other_key;
    struct node nodes[NODES_MAX + 1]; /* by id; [0] unused */
    long results_live;                /* results made (FSM or hook copies), not yet freed */
    struct done_rec recs[RECS_MAX];
    unsigned completions;
    struct change_rec changes[CHANGES_MAX];
    uint64_t t0;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static void breach(struct fsm_state *s, const char *what)
{
    if (s->bad++ == 0)
        snprintf(s->bad_what, sizeof s->bad_what, "%s", what);
}

/* last_index()/has_index(): the FSM's newest index; whether it applied INDEX (cl->mu). */
static uint64_t last_index(const struct fsm_state *s)
{
    return s->n > 0 ? s->entries[s->n - 1].index : 0;
}

static const struct entry *find_index(const struct fsm_state *s, uint64_t index)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->entries[i].index == index)
            return &s->entries[i];
    return NULL;
}

static struct result *result_new(struct cluster *cl, uint64_t index, uint64_t count)
{
    struct result *r = malloc(sizeof *r);

    if (r != NULL) {
        r->index = index;
        r->count = count;
        pthread_mutex_lock(&cl->mu);
        cl->results_live++;
        pthread_mutex_unlock(&cl->mu);
    }
    return r;
}

static void fsm_apply_cb(void *ctx, uint64_t index, const void *buf, size_t len, void **result)
{
    struct node *nd = ctx;
    struct fsm_state *s = &nd->fsm;
    size_t count;

    pthread_mutex_lock(&nd->cl->mu);
    s->applies++;
    if (len == 0 || len > PAYLOAD_MAX)
        breach(s, "payload length out of 1..PAYLOAD_MAX");
    else if (index <= last_index(s))
        breach(s, "apply index did not increase");
    else if (s->n == ENTRIES_MAX)
        breach(s, "more entries than the test proposed");
    else {
        struct entry *e = &s->entries[s->n++];
        e->index = index;
        e->len = len;
        memcpy(e->data, buf, len);
    }
    count = s->n;
    pthread_cond_broadcast(&nd->cl->cv);
    pthread_mutex_unlock(&nd->cl->mu);
    if (result != NULL)
        *result = result_new(nd->cl, index, count);
}

static void fsm_result_free_cb(void *ctx, void *result)
{
    struct node *nd = ctx;

    if (result == NULL)
        return;
    pthread_mutex_lock(&nd->cl->mu);
    nd->cl->results_live--;
    pthread_cond_broadcast(&nd->cl->cv);
    pthread_mutex_unlock(&nd->cl->mu);
    free(result);
}

/* Snapshots are not exercised here (the threshold is never reached); these only have to
 * be valid: an empty snapshot, and a restore that refuses everything. */
static int fsm_snapshot_cb(void *ctx, void **buf, size_t *len)
{
    struct node *nd = ctx;

    pthread_mutex_lock(&nd->cl->mu);
    breach(&nd->fsm, "snapshot taken below the threshold");
    pthread_mutex_unlock(&nd->cl->mu);
    *buf = raft_malloc(8);
    *len = 8;
    return *buf != NULL ? 0 : -1;
}

static int fsm_restore_cb(void *ctx, const void *buf, size_t len)
{
    struct node *nd = ctx;

    (void) buf;
    (void) len;
    pthread_mutex_lock(&nd->cl->mu);
    breach(&nd->fsm, "restore called");
    pthread_mutex_unlock(&nd->cl->mu);
    return -1;
}

/* ---- the forward hook: the follower proposes on the leader's cons ---- */

struct fwd {
    struct node *from; /* the follower the proposal came from */
    uint64_t token;
};

/* fwd_leader_done(): the leader's completion (leader's consensus thread): answer the
 * follower with the leader's index and a copy of its result. */
static void fwd_leader_done(void *arg, int status, uint64_t index, void *result)
{
    struct fwd *fw = arg;
    struct node *nd = fw->from;
    struct cluster *cl = nd->cl;
    struct cons *c;
    struct result *copy = NULL;

    if (status == 0 && result != NULL) {
        const struct result *r = result;
        copy = result_new(cl, r->index, r->count);
    }
    pthread_mutex_lock(&cl->mu);
    if (status == 0 && last_index(&nd->fsm) < index)
        nd->early++;
    c = nd->cons;
    pthread_mutex_unlock(&cl->mu);
    cons_forward_done(c, fw->token, status, index, copy);
    free(fw);
}

static int fwd_hook(void *ctx, uint64_t leader_id, const void *buf, size_t len, uint64_t token)
{
    struct node *nd = ctx;
    struct cluster *cl = nd->cl;
    struct cons *self, *leader = NULL;
    bool refuse, unreachable, keep, fake;
    struct fwd *fw;
    void *copy;

    pthread_mutex_lock(&cl->mu);
    nd->hook_calls++;
    nd->last_token = token;
    nd->last_leader = leader_id;
    refuse = nd->refuse_left > 0;
    if (refuse)
        nd->refuse_left--;
    unreachable = !refuse && nd->unreachable_left > 0;
    if (unreachable)
        nd->unreachable_left--;
    keep = nd->never_answer;
    fake = nd->fake_answer;
    self = nd->cons;
    if (leader_id >= 1 && leader_id <= NODES_MAX)
        leader = cl->nodes[leader_id].cons;
    pthread_cond_broadcast(&cl->cv);
    pthread_mutex_unlock(&cl->mu);

    if (refuse)
        return -1;
    if (unreachable) { /* answered from inside the hook: allowed, "from any thread" */
        cons_forward_done(self, token, CONS_EUNREACHABLE, 0, NULL);
        return 0;
    }
    if (keep)
        return 0;
    if (fake) {
        cons_forward_done(self, token, 0, FAR_INDEX, result_new(cl, FAR_INDEX, 0));
        return 0;
    }
    if (leader == NULL)
        return -1;
    fw = malloc(sizeof *fw);
    copy = raft_malloc(len);
    if (fw == NULL || copy == NULL) {
        free(fw);
        raft_free(copy);
        return -1;
    }
    memcpy(copy, buf, len);
    fw->from = nd;
    fw->token = token;
    if (cons_propose(leader, copy, len, fwd_leader_done, fw) != 0) {
        free(fw);
        return -1;
    }
    return 0;
}

/* ---- proposals, completions, changes ---- */

/* payload_len()/payload_byte(): proposal K of batch SEED. */
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
    struct cluster *cl = r->cl;
    const struct fsm_state *s = &cl->nodes[r->node].fsm;

    pthread_mutex_lock(&cl->mu);
    r->calls++;
    r->status = status;
    r->index = index;
    r->done_ms = mono_ms();
    if (result != NULL) {
        r->has_result = true;
        r->res = *(const struct result *) result;
    }
    /* read-your-writes: checked at the very moment the proposer is answered */
    r->rw_ok = status == 0 && last_index(s) >= index && find_index(s, index) != NULL;
    cl->completions++;
    pthread_cond_broadcast(&cl->cv);
    pthread_mutex_unlock(&cl->mu);
}

/* propose(): proposal K of batch SEED on node ID, completing into recs[K]. */
static int propose(struct cluster *cl, uint64_t id, unsigned k, unsigned seed)
{
    size_t len = payload_len(k, seed);
    uint8_t *buf = raft_malloc(len);
    struct done_rec *r = &cl->recs[k];

    assert_non_null(buf);
    assert_true(k < RECS_MAX);
    for (size_t j = 0; j < len; j++)
        buf[j] = payload_byte(k, seed, j);
    pthread_mutex_lock(&cl->mu);
    memset(r, 0, sizeof *r);
    r->cl = cl;
    r->node = id;
    pthread_mutex_unlock(&cl->mu);
    return cons_propose(cl->nodes[id].cons, buf, len, on_done, r);
}

static void on_change(void *arg, int status)
{
    struct change_rec *r = arg;

    pthread_mutex_lock(&r->cl->mu);
    r->calls++;
    r->status = status;
    pthread_cond_broadcast(&r->cl->cv);
    pthread_mutex_unlock(&r->cl->mu);
}

/* change(): cons_change on node ON, completing into changes[SLOT]. */
static void change(struct cluster *cl, uint64_t on, unsigned slot, enum cons_change_op op,
                   uint64_t id)
{
    struct change_rec *r = &cl->changes[slot];
    const char *address = op == CONS_ADD_VOTER ? cl->nodes[id].address : NULL;

    assert_true(slot < CHANGES_MAX);
    pthread_mutex_lock(&cl->mu);
    memset(r, 0, sizeof *r);
    r->cl = cl;
    pthread_mutex_unlock(&cl->mu);
    assert_int_equal(cons_change(cl->nodes[on].cons, op, id, address, on_change, r), 0);
}

/* ---- bounded waits ---- */

typedef bool pred_fn(struct cluster *cl, uint64_t arg);

/* wait_ms(): true once PRED holds (checked under cl->mu), false after MS. Wakes on every
 * callback, and every 20 ms for predicates on cons_status(). */
static bool wait_ms(struct cluster *cl, pred_fn *pred, uint64_t arg, uint64_t ms)
{
    uint64_t deadline = mono_ms() + ms;
    bool ok;

    pthread_mutex_lock(&cl->mu);
    while (!(ok = pred(cl, arg)) && mono_ms() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&cl->cv, &cl->mu, &ts);
    }
    pthread_mutex_unlock(&cl->mu);
    return ok;
}

static bool wait_for(struct cluster *cl, pred_fn *pred, uint64_t arg)
{
    return wait_ms(cl, pred, arg, WAIT_MS);
}

static bool completions_at_least(struct cluster *cl, uint64_t n)
{
    return cl->completions >= n;
}

static bool change_done(struct cluster *cl, uint64_t slot)
{
    return cl->changes[slot].calls > 0;
}

/* ARG packs a node id (low 8 bits) and a count: the node's FSM holds at least COUNT. */
#define NODE_ARG(id, n) (((uint64_t) (n) << 8) | (id))
static bool applied_at_least(struct cluster *cl, uint64_t arg)
{
    return cl->nodes[arg & 0xff].fsm.n >= (arg >> 8);
}

static bool hook_calls_at_least(struct cluster *cl, uint64_t arg)
{
    return cl->nodes[arg & 0xff].hook_calls >= (arg >> 8);
}

static bool results_freed(struct cluster *cl, uint64_t unused)
{
    (void) unused;
    return cl->results_live == 0;
}

/* voters_are(): every running node among 1..3 sees exactly the voters in bitmask ARG
 * (bit = id), and nobody else. */
static bool voters_are(struct cluster *cl, uint64_t mask)
{
    for (uint64_t id = 1; id <= 3; id++) {
        struct cons_status s;
        uint64_t seen = 0;
        if (!(mask & (UINT64_C(1) << id)) || cl->nodes[id].cons == NULL)
            continue;
        cons_status(cl->nodes[id].cons, &s);
        for (size_t i = 0; i < s.n_members; i++) {
            if (s.members[i].role != CONS_VOTER)
                return false;
            seen |= UINT64_C(1) << s.members[i].id;
        }
        if (seen != mask)
            return false;
    }
    return true;
}

/* leader_is(): every node in 1..3 that is running agrees ARG leads, and ARG says so. */
static bool leader_is(struct cluster *cl, uint64_t id)
{
    for (uint64_t n = 1; n <= 3; n++) {
        struct cons_status s;
        if (cl->nodes[n].cons == NULL)
            continue;
        cons_status(cl->nodes[n].cons, &s);
        if (s.leader_id != id || (n == id && s.role != CONS_LEADER))
            return false;
    }
    return true;
}

/* leader_not(): a leader is known by every running node in 1..3, the same one, not ARG. */
static bool leader_not(struct cluster *cl, uint64_t id)
{
    struct cons_status s;

    cons_status(cl->nodes[1].cons, &s);
    return s.leader_id != 0 && s.leader_id != id && leader_is(cl, s.leader_id);
}

/* stranger_is_spare(): node 1 (the leader) lists node 4 as a spare it has not replicated
 * anything to. */
static bool stranger_is_spare(struct cluster *cl, uint64_t unused)
{
    struct cons_status s;

    (void) unused;
    cons_status(cl->nodes[1].cons, &s);
    for (size_t i = 0; i < s.n_members; i++)
        if (s.members[i].id == 4)
            return s.members[i].role == CONS_SPARE;
    return false;
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

static int random_key(struct auth_key *k)
{
    k->len = 32;
    return getrandom(k->bytes, k->len, 0) == (ssize_t) k->len ? 0 : -1;
}

static int setup(void **state)
{
    struct cluster *cl = calloc(1, sizeof *cl);
    pthread_condattr_t ca;

    if (cl == NULL || tmpdir_make(cl->dir, "membership") != 0) {
        free(cl);
        return -1;
    }
    if (random_key(&cl->key) != 0 || random_key(&cl->other_key) != 0 ||
        memcmp(cl->key.bytes, cl->other_key.bytes, 32) == 0) {
        tmpdir_remove(cl->dir);
        free(cl);
        return -1;
    }
    pthread_mutex_init(&cl->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cl->cv, &ca);
    pthread_condattr_destroy(&ca);
    for (uint64_t id = 1; id <= NODES_MAX; id++) {
        cl->nodes[id].cl = cl;
        cl->nodes[id].id = id;
        cl->nodes[id].no_leader_ms = NO_LEADER_MS;
    }
    cl->t0 = mono_ms();
    *state = cl;
    return 0;
}

/* stop_all(): every node stopped (not freed: a late cons_forward_done must still find its
 * cons), then every node freed. */
static void stop_all(struct cluster *cl)
{
    for (uint64_t id = NODES_MAX; id >= 1; id--)
        cons_stop(cl->nodes[id].cons);
    for (uint64_t id = 1; id <= NODES_MAX; id++) {
        struct cons *c;
        pthread_mutex_lock(&cl->mu);
        c = cl->nodes[id].cons;
        cl->nodes[id].cons = NULL;
        pthread_mutex_unlock(&cl->mu);
        cons_free(c);
    }
}

static int teardown(void **state)
{
    struct cluster *cl = *state;

    stop_all(cl);
    fprintf(stderr, "[ membership ] %llu ms\n", (unsigned long long) (mono_ms() - cl->t0));
    pthread_cond_destroy(&cl->cv);
    pthread_mutex_destroy(&cl->mu);
    tmpdir_remove(cl->dir);
    free(cl);
    return 0;
}

/* node_start(): node ID on a fresh port and an empty dir, with KEY; BOOTSTRAP only for
 * the first node of a cluster. */
static void node_start(struct cluster *cl, uint64_t id, bool bootstrap, const struct auth_key *key)
{
    static const struct cons_fsm hooks = {
        .apply = fsm_apply_cb,
        .snapshot = fsm_snapshot_cb,
        .restore = fsm_restore_cb,
        .result_free = fsm_result_free_cb,
    };
    struct node *nd = &cl->nodes[id];
    struct cons_fsm fsm = hooks;
    struct cons_config cfg;
    struct cons *c = NULL;
    char base[TMPDIR_MAX], name[16], err[256] = "";
    int port;

    do { /* distinct from the other nodes' ports */
        port = free_port();
        assert_true(port > 0);
        snprintf(nd->address, sizeof nd->address, "127.0.0.1:%d", port);
        for (uint64_t o = 1; o <= NODES_MAX; o++)
            if (o != id && strcmp(cl->nodes[o].address, nd->address) == 0)
                port = 0;
    } while (port == 0);
    snprintf(name, sizeof name, "node%llu", (unsigned long long) id);
    memcpy(base, cl->dir, sizeof base); /* not the same object as nd->dir for snprintf */
    assert_int_equal(tmpdir_join(nd->dir, base, name), 0);
    memset(&cfg, 0, sizeof cfg);
    cfg.id = id;
    cfg.address = nd->address;
    cfg.dir = nd->dir; /* does not exist yet: cons_start creates it */
    cfg.election_ms = ELECTION_MS;
    cfg.heartbeat_ms = HEARTBEAT_MS;
    cfg.snapshot_threshold = 1024;
    cfg.snapshot_trailing = 128;
    cfg.bootstrap = bootstrap;
    cfg.no_leader_wait_ms = nd->no_leader_ms;
    cfg.key = key; /* lives in the cluster, which outlives every cons */
    cfg.forward = fwd_hook;
    cfg.forward_ctx = nd;
    fsm.ctx = nd;
    if (cons_start(&cfg, &fsm, &c, err, sizeof err) != 0)
        fail_msg("cons_start node %llu: %s", (unsigned long long) id, err);
    pthread_mutex_lock(&cl->mu);
    nd->cons = c;
    pthread_mutex_unlock(&cl->mu);
}

static uint64_t mask_upto(uint64_t n)
{
    uint64_t m = 0;

    for (uint64_t id = 1; id <= n; id++)
        m |= UINT64_C(1) << id;
    return m;
}

static struct change_rec change_copy(struct cluster *cl, unsigned slot);

/* add_voter_wait(): CONS_ADD_VOTER of ID on node 1 in change slot SLOT, which must
 * succeed, once. */
static void add_voter_wait(struct cluster *cl, uint64_t id, unsigned slot)
{
    struct change_rec r;

    change(cl, 1, slot, CONS_ADD_VOTER, id);
    assert_true(wait_for(cl, change_done, slot));
    r = change_copy(cl, slot);
    if (r.status != 0)
        fail_msg("ADD_VOTER %llu: %d (%s)", (unsigned long long) id, r.status,
                 cons_strerror(r.status));
    assert_int_equal(r.calls, 1);
}

/*
 * cluster_up(): node 1 bootstraps and leads; nodes 2..N start empty and are added with
 * CONS_ADD_VOTER, one after the other (test_changes_queued queues them at once); returns
 * once every node sees N voters. Change slots 0..N-2 are used.
 */
static void cluster_up(struct cluster *cl, uint64_t n)
{
    node_start(cl, 1, true, &cl->key);
    assert_true(wait_for(cl, leader_is, 1));
    for (uint64_t id = 2; id <= n; id++)
        node_start(cl, id, false, &cl->key);
    for (uint64_t id = 2; id <= n; id++)
        add_voter_wait(cl, id, (unsigned) (id - 2));
    assert_true(wait_for(cl, voters_are, mask_upto(n)));
    assert_true(wait_for(cl, leader_is, 1));
}

/* fsm_copy(): node ID's FSM as it is now, taken under the lock, to check without it (a
 * failed check must not leave the mutex held: the consensus threads would block on it). */
static struct fsm_state *fsm_copy(struct cluster *cl, uint64_t id)
{
    struct fsm_state *s = malloc(sizeof *s);

    assert_non_null(s);
    pthread_mutex_lock(&cl->mu);
    *s = cl->nodes[id].fsm;
    pthread_mutex_unlock(&cl->mu);
    if (s->bad != 0)
        fail_msg("node %llu: %u contract breaches, the first: %s", (unsigned long long) id, s->bad,
                 s->bad_what);
    return s;
}

static struct done_rec rec_copy(struct cluster *cl, unsigned k)
{
    struct done_rec r;

    pthread_mutex_lock(&cl->mu);
    r = cl->recs[k];
    pthread_mutex_unlock(&cl->mu);
    return r;
}

static struct change_rec change_copy(struct cluster *cl, unsigned slot)
{
    struct change_rec r;

    pthread_mutex_lock(&cl->mu);
    r = cl->changes[slot];
    pthread_mutex_unlock(&cl->mu);
    return r;
}

/* check_entry(): E holds exactly proposal K of batch SEED. */
static void check_entry(const struct entry *e, unsigned k, unsigned seed)
{
    size_t len = payload_len(k, seed);

    assert_non_null(e);
    assert_int_equal(e->len, len);
    for (size_t j = 0; j < len; j++)
        assert_int_equal(e->data[j], payload_byte(k, seed, j));
}

/* check_applied(): recs[K] completed once with 0, and node ID's FSM holds proposal K of
 * batch SEED at that index. */
static void check_applied(struct cluster *cl, uint64_t id, unsigned k, unsigned seed)
{
    struct done_rec r = rec_copy(cl, k);
    struct fsm_state *s;

    assert_int_equal(r.calls, 1);
    assert_true(wait_for(cl, applied_at_least, NODE_ARG(id, 1)));
    s = fsm_copy(cl, id);
    check_entry(find_index(s, r.index), k, seed);
    free(s);
}

/* check_done(): recs[K] completed exactly once with status 0 and its own result. */
static void check_done(struct cluster *cl, unsigned k)
{
    struct done_rec r = rec_copy(cl, k);

    if (r.calls != 1 || r.status != 0)
        fail_msg("proposal %u: %u calls, status %d (%s)", k, r.calls, r.status,
                 cons_strerror(r.status));
    assert_true(r.index > 0);
    assert_true(r.has_result);
    assert_int_equal(r.res.index, r.index);
    assert_true(r.rw_ok);
}

/* propose_wait(): proposals FIRST..FIRST+N-1 of batch SEED on node ID, all at once, then
 * wait for every completion. */
static void propose_wait(struct cluster *cl, uint64_t id, unsigned first, unsigned n, unsigned seed)
{
    unsigned before;

    pthread_mutex_lock(&cl->mu);
    before = cl->completions;
    pthread_mutex_unlock(&cl->mu);
    for (unsigned k = first; k < first + n; k++)
        assert_int_equal(propose(cl, id, k, seed), 0);
    assert_true(wait_for(cl, completions_at_least, before + n));
}

/* check_same_fsms(): nodes in MASK hold the same entries, at the same indexes; at least N. */
static void check_same_fsms(struct cluster *cl, uint64_t mask, size_t n)
{
    struct fsm_state *ref = NULL;

    for (uint64_t id = 1; id <= NODES_MAX; id++) {
        struct fsm_state *s;
        if (!(mask & (UINT64_C(1) << id)))
            continue;
        assert_true(wait_for(cl, applied_at_least, NODE_ARG(id, n)));
        s = fsm_copy(cl, id);
        if (ref == NULL) {
            ref = s;
            continue;
        }
        assert_int_equal(s->n, ref->n);
        for (size_t i = 0; i < s->n; i++) {
            assert_int_equal(s->entries[i].index, ref->entries[i].index);
            assert_int_equal(s->entries[i].len, ref->entries[i].len);
            assert_memory_equal(s->entries[i].data, ref->entries[i].data, s->entries[i].len);
        }
        free(s);
    }
    free(ref);
}

/* finish_clean(): stop everything; no result leaked, no breach seen. */
static void finish_clean(struct cluster *cl)
{
    long live;

    stop_all(cl);
    pthread_mutex_lock(&cl->mu);
    live = cl->results_live;
    pthread_mutex_unlock(&cl->mu);
    assert_int_equal(live, 0);
    for (uint64_t id = 1; id <= NODES_MAX; id++)
        free(fsm_copy(cl, id)); /* fails on a breach */
}

/* ---- tests ---- */

/*
 * 1. Node 1 bootstraps; nodes 2 and 3 (empty dirs, no bootstrap) are added with
 * CONS_ADD_VOTER, one after the other. Every node then lists the same three
 * voters; the leader knows how far each has replicated; a proposal on node 1 is applied
 * by all three FSMs at the same index with the same bytes. Adding a voter again is done
 * at once, and a change asked of a follower fails with CONS_ENOTLEADER.
 */
static void test_add_voters(void **state)
{
    struct cluster *cl = *state;
    struct cons_status s;
    struct done_rec r;
    struct change_rec ch;

    cluster_up(cl, 3);
    for (uint64_t id = 1; id <= 3; id++) {
        cons_status(cl->nodes[id].cons, &s);
        assert_int_equal(s.id, id);
        assert_int_equal(s.leader_id, 1);
        assert_int_equal(s.n_members, 3);
        assert_int_equal(s.role, id == 1 ? CONS_LEADER : CONS_FOLLOWER);
        for (size_t i = 0; i < s.n_members; i++)
            assert_string_equal(s.members[i].address, cl->nodes[s.members[i].id].address);
    }

    propose_wait(cl, 1, 0, 1, 1);
    check_done(cl, 0);
    r = rec_copy(cl, 0);
    check_same_fsms(cl, mask_upto(3), 1);
    check_applied(cl, 3, 0, 1);
    for (uint64_t id = 1; id <= 3; id++) {
        struct fsm_state *f = fsm_copy(cl, id);
        assert_int_equal(f->n, 1);
        assert_int_equal(f->entries[0].index, r.index);
        free(f);
    }
    /* the leader's view of replication catches up with the entry on both followers */
    for (uint64_t t0 = mono_ms();; usleep(20 * 1000)) {
        bool all = true;
        cons_status(cl->nodes[1].cons, &s);
        for (size_t i = 0; i < s.n_members; i++)
            all = all && s.members[i].match_index >= r.index;
        if (all)
            break;
        if (mono_ms() - t0 > WAIT_MS)
            fail_msg("match_index on the leader never reached %llu", (unsigned long long) r.index);
    }

    change(cl, 1, 4, CONS_ADD_VOTER, 2); /* already a voter */
    assert_true(wait_for(cl, change_done, 4));
    ch = change_copy(cl, 4);
    assert_int_equal(ch.status, 0);
    change(cl, 2, 5, CONS_REMOVE, 3); /* node 2 does not lead */
    assert_true(wait_for(cl, change_done, 5));
    ch = change_copy(cl, 5);
    assert_int_equal(ch.status, CONS_ENOTLEADER);
    assert_true(voters_are(cl, mask_upto(3)));
    finish_clean(cl);
}

/*
 * 1b. Changes queued at once run one after the other: ADD_VOTER of nodes 2 and 3 asked
 * back to back both complete with 0, and every node then lists three voters. Nothing else
 * is proposed meanwhile, so the second change has to be started by the loop itself.
 */
static void test_changes_queued(void **state)
{
    struct cluster *cl = *state;

    node_start(cl, 1, true, &cl->key);
    assert_true(wait_for(cl, leader_is, 1));
    node_start(cl, 2, false, &cl->key);
    node_start(cl, 3, false, &cl->key);
    change(cl, 1, 0, CONS_ADD_VOTER, 2);
    change(cl, 1, 1, CONS_ADD_VOTER, 3);
    for (unsigned slot = 0; slot < 2; slot++) {
        struct change_rec r;
        if (!wait_for(cl, change_done, slot))
            fail_msg("queued change %u (ADD_VOTER %u) never completed", slot, slot + 2);
        r = change_copy(cl, slot);
        assert_int_equal(r.calls, 1);
        assert_int_equal(r.status, 0);
    }
    assert_true(wait_for(cl, voters_are, mask_upto(3)));
    finish_clean(cl);
}

/*
 * 2. Proposals on the followers travel through the forward hook to the leader's cons.
 * Each completes once, with status 0, the index the leader applied it at, and (a copy of)
 * the leader's result; when it completes, the follower's own FSM already holds that index
 * (read-your-writes, checked inside the completion). At least one answer reached its
 * follower before the follower had applied the entry, so the waiting path was taken.
 */
static void test_forward(void **state)
{
    struct cluster *cl = *state;
    const unsigned n = 10;
    unsigned before, early, calls2, calls3;
    struct fsm_state *leader;

    cluster_up(cl, 3);
    pthread_mutex_lock(&cl->mu);
    before = cl->completions;
    pthread_mutex_unlock(&cl->mu);
    for (unsigned k = 0; k < n; k++) {
        assert_int_equal(propose(cl, 2, k, 2), 0);
        assert_int_equal(propose(cl, 3, n + k, 2), 0);
    }
    assert_true(wait_for(cl, completions_at_least, before + 2 * n));

    check_same_fsms(cl, mask_upto(3), 2 * n);
    leader = fsm_copy(cl, 1);
    assert_int_equal(leader->n, 2 * n);
    for (unsigned k = 0; k < 2 * n; k++) {
        struct done_rec r = rec_copy(cl, k);
        check_done(cl, k);
        check_entry(find_index(leader, r.index), k, 2); /* the leader's index */
        for (unsigned j = 0; j < k; j++)
            assert_int_not_equal(rec_copy(cl, j).index, r.index);
    }
    free(leader);

    pthread_mutex_lock(&cl->mu);
    early = cl->nodes[2].early + cl->nodes[3].early;
    calls2 = cl->nodes[2].hook_calls;
    calls3 = cl->nodes[3].hook_calls;
    pthread_mutex_unlock(&cl->mu);
    assert_int_equal(calls2, n);
    assert_int_equal(calls3, n);
    assert_true(early >= 1);
    finish_clean(cl);
}

/*
 * 3. The hook fails first: node 2's answers CONS_EUNREACHABLE three times, node 3's hook
 * returns -1 twice; each proposal still completes exactly once, with 0, after the pauses
 * between attempts. With a hook that answers CONS_EUNREACHABLE for ever, the proposal
 * fails once its no-leader deadline has passed, and only once.
 */
static void test_forward_retry(void **state)
{
    struct cluster *cl = *state;
    const unsigned fails = 3, refusals = 2, short_wait = 600;
    struct done_rec r;
    unsigned calls2, calls3, done;
    uint64_t t0;

    cl->nodes[3].no_leader_ms = short_wait;
    cluster_up(cl, 3);

    pthread_mutex_lock(&cl->mu);
    cl->nodes[2].unreachable_left = fails;
    cl->nodes[3].refuse_left = refusals;
    pthread_mutex_unlock(&cl->mu);
    t0 = mono_ms();
    assert_int_equal(propose(cl, 2, 0, 3), 0);
    assert_int_equal(propose(cl, 3, 1, 3), 0);
    assert_true(wait_for(cl, completions_at_least, 2));
    usleep(3 * PAUSE_MS * 1000); /* room for a wrong second completion */

    check_done(cl, 0);
    check_done(cl, 1);
    r = rec_copy(cl, 0);
    assert_true(r.done_ms - t0 + 10 >= fails * PAUSE_MS); /* paused between attempts */
    r = rec_copy(cl, 1);
    assert_true(r.done_ms - t0 + 10 >= refusals * PAUSE_MS);
    pthread_mutex_lock(&cl->mu); /* copied out: no check may fail with the mutex held */
    calls2 = cl->nodes[2].hook_calls;
    calls3 = cl->nodes[3].hook_calls;
    done = cl->completions;
    pthread_mutex_unlock(&cl->mu);
    assert_int_equal(calls2, fails + 1);
    assert_int_equal(calls3, refusals + 1);
    assert_int_equal(done, 2);
    check_same_fsms(cl, mask_upto(3), 2);
    check_applied(cl, 2, 0, 3);
    check_applied(cl, 3, 1, 3);

    /* unreachable for ever: fails at node 3's deadline, once */
    pthread_mutex_lock(&cl->mu);
    cl->nodes[3].unreachable_left = UINT_MAX;
    calls3 = cl->nodes[3].hook_calls;
    pthread_mutex_unlock(&cl->mu);
    t0 = mono_ms();
    assert_int_equal(propose(cl, 3, 2, 3), 0);
    assert_true(wait_for(cl, completions_at_least, 3));
    usleep(3 * PAUSE_MS * 1000);
    r = rec_copy(cl, 2);
    assert_int_equal(r.calls, 1);
    if (r.status != CONS_ENOTLEADER && r.status != CONS_EUNREACHABLE)
        fail_msg("never reachable: status %d (%s)", r.status, cons_strerror(r.status));
    assert_false(r.has_result);
    assert_true(r.done_ms - t0 + 10 >= short_wait);
    pthread_mutex_lock(&cl->mu);
    calls3 = cl->nodes[3].hook_calls - calls3;
    done = cl->completions;
    pthread_mutex_unlock(&cl->mu);
    assert_true(calls3 >= 2); /* it did retry */
    assert_int_equal(done, 3);
    finish_clean(cl);
}

/*
 * 4. CONS_TRANSFER to node 2: every node then names node 2 the leader, and a proposal on
 * node 1 (now a follower) goes through node 1's hook to node 2. CONS_TRANSFER to 0 then
 * moves the leadership away from node 2, to whichever voter.
 */
static void test_transfer(void **state)
{
    struct cluster *cl = *state;
    struct change_rec ch;
    uint64_t leader;
    unsigned calls;

    cluster_up(cl, 3);
    change(cl, 1, 2, CONS_TRANSFER, 2);
    assert_true(wait_for(cl, change_done, 2));
    ch = change_copy(cl, 2);
    if (ch.status != 0)
        fail_msg("TRANSFER to 2: %d (%s)", ch.status, cons_strerror(ch.status));
    assert_true(wait_for(cl, leader_is, 2));

    propose_wait(cl, 1, 0, 1, 4);
    check_done(cl, 0);
    pthread_mutex_lock(&cl->mu);
    calls = cl->nodes[1].hook_calls;
    leader = cl->nodes[1].last_leader;
    pthread_mutex_unlock(&cl->mu);
    assert_int_equal(calls, 1);
    assert_int_equal(leader, 2);
    propose_wait(cl, 2, 1, 1, 4); /* and the new leader takes its own */
    check_done(cl, 1);
    check_same_fsms(cl, mask_upto(3), 2);

    change(cl, 1, 3, CONS_ADD_VOTER, 3); /* node 1 leads no more */
    assert_true(wait_for(cl, change_done, 3));
    assert_int_equal(change_copy(cl, 3).status, CONS_ENOTLEADER);

    change(cl, 2, 4, CONS_TRANSFER, 0);
    assert_true(wait_for(cl, change_done, 4));
    ch = change_copy(cl, 4);
    assert_int_equal(ch.status, 0);
    assert_true(wait_for(cl, leader_not, 2));
    finish_clean(cl);
}

/*
 * 4b. CONS_TRANSFER to 0 that cannot happen: node 2 is stopped while it is still as
 * up to date as the leader, so libraft picks it as the target; its TimeoutNow never
 * arrives and the transfer expires. Node 3 keeps node 1 in power, so node 1 still leads,
 * and the change must not report success (it does for a named target: CONS_EIO).
 */
static void test_transfer_any_fails(void **state)
{
    struct cluster *cl = *state;
    struct change_rec ch;
    struct cons *c;

    cluster_up(cl, 3);
    pthread_mutex_lock(&cl->mu);
    c = cl->nodes[2].cons;
    cl->nodes[2].cons = NULL; /* leader_is() and the hooks skip it from now on */
    pthread_mutex_unlock(&cl->mu);
    cons_free(c);

    change(cl, 1, 2, CONS_TRANSFER, 0);
    assert_true(wait_for(cl, change_done, 2));
    ch = change_copy(cl, 2);
    assert_int_equal(ch.calls, 1);
    if (ch.status == 0) {
        if (!wait_ms(cl, leader_not, 1, 2 * ELECTION_MS))
            fail_msg("TRANSFER 0 reported success, but node 1 still leads");
    } else {
        assert_true(wait_for(cl, leader_is, 1));
    }
    finish_clean(cl);
}

/*
 * 5. CONS_REMOVE of node 3: nodes 1 and 2 list two voters; writes still commit on both,
 * from the leader and forwarded from node 2, and node 3 gets none of them. Removing it
 * again is done at once.
 */
static void test_remove(void **state)
{
    struct cluster *cl = *state;
    struct fsm_state *s;
    struct cons_status st;
    size_t had;

    cluster_up(cl, 3);
    propose_wait(cl, 1, 0, 1, 5);
    check_same_fsms(cl, mask_upto(3), 1);

    change(cl, 1, 2, CONS_REMOVE, 3);
    assert_true(wait_for(cl, change_done, 2));
    assert_int_equal(change_copy(cl, 2).status, 0);
    assert_true(wait_for(cl, voters_are, mask_upto(2)));
    cons_status(cl->nodes[1].cons, &st);
    assert_int_equal(st.n_members, 2);
    assert_int_equal(st.role, CONS_LEADER);
    s = fsm_copy(cl, 3);
    had = s->n;
    free(s);

    propose_wait(cl, 1, 1, 3, 5);
    propose_wait(cl, 2, 4, 3, 5);
    for (unsigned k = 1; k < 7; k++)
        check_done(cl, k);
    check_same_fsms(cl, mask_upto(2), 7);
    usleep(5 * HEARTBEAT_MS * 1000); /* several heartbeats: node 3 would have had them */
    s = fsm_copy(cl, 3);
    assert_int_equal(s->n, had);
    free(s);

    change(cl, 1, 3, CONS_REMOVE, 3);
    assert_true(wait_for(cl, change_done, 3));
    assert_int_equal(change_copy(cl, 3).status, 0);
    finish_clean(cl);
}

/*
 * 6. Node 4 has ANOTHER secret. ADD_VOTER of it makes it a spare in the leader's
 * configuration, but the leader's connections to it never authenticate, so it never
 * catches up: within STRANGER_MS the change has not succeeded, node 4 knows no leader
 * and applied nothing, and the cluster still commits. Stopping everything then ends the
 * change, once, with an error.
 */
static void test_other_secret(void **state)
{
    struct cluster *cl = *state;
    struct cons_status s;
    struct change_rec ch;
    struct fsm_state *f;

    cluster_up(cl, 3);
    node_start(cl, 4, false, &cl->other_key);
    change(cl, 1, 2, CONS_ADD_VOTER, 4);
    assert_true(wait_for(cl, stranger_is_spare, 0));
    propose_wait(cl, 1, 0, 2, 6); /* the cluster still works meanwhile */
    check_done(cl, 0);
    check_done(cl, 1);
    check_same_fsms(cl, mask_upto(3), 2);

    /* the change must not succeed within the bound (libraft gives up on an unresponsive
     * promotee only after its 5 s catch-up round, so it is usually still pending) */
    if (wait_ms(cl, change_done, 2, STRANGER_MS)) {
        ch = change_copy(cl, 2);
        assert_int_equal(ch.calls, 1);
        assert_int_not_equal(ch.status, 0);
    }
    assert_true(stranger_is_spare(cl, 0)); /* still not a voter */
    cons_status(cl->nodes[1].cons, &s);
    for (size_t i = 0; i < s.n_members; i++)
        if (s.members[i].id == 4)
            assert_int_equal(s.members[i].match_index, 0);
    cons_status(cl->nodes[4].cons, &s);
    assert_int_equal(s.leader_id, 0);
    assert_int_equal(s.applied_index, 0);
    assert_int_equal(s.n_members, 0);
    f = fsm_copy(cl, 4);
    assert_int_equal(f->applies, 0);
    free(f);

    finish_clean(cl);
    ch = change_copy(cl, 2);
    assert_int_equal(ch.calls, 1);
    assert_int_not_equal(ch.status, 0);
    f = fsm_copy(cl, 4);
    assert_int_equal(f->applies, 0);
    free(f);
}

/*
 * 7. Stopping a follower with forwarded proposals unanswered: one the hook never answers,
 * one answered 0 at an index the follower will never reach (waiting for read-your-writes).
 * cons_stop completes each exactly once with CONS_ESHUTDOWN; a late cons_forward_done
 * after the stop is harmless and its result is freed (results_live returns to 0).
 */
static void test_stop_while_forwarded(void **state)
{
    struct cluster *cl = *state;
    struct done_rec r;
    uint64_t token;
    long live;

    cluster_up(cl, 3);
    pthread_mutex_lock(&cl->mu);
    cl->nodes[2].never_answer = true;
    cl->nodes[3].fake_answer = true;
    pthread_mutex_unlock(&cl->mu);
    assert_int_equal(propose(cl, 2, 0, 7), 0);
    assert_int_equal(propose(cl, 3, 1, 7), 0);
    assert_true(wait_for(cl, hook_calls_at_least, NODE_ARG(2, 1)));
    assert_true(wait_for(cl, hook_calls_at_least, NODE_ARG(3, 1)));
    usleep(3 * HEARTBEAT_MS * 1000); /* the fake answer reaches node 3's loop */
    r = rec_copy(cl, 0);
    assert_int_equal(r.calls, 0); /* still waiting */
    assert_int_equal(rec_copy(cl, 1).calls, 0);

    cons_stop(cl->nodes[2].cons);
    cons_stop(cl->nodes[3].cons);
    for (unsigned k = 0; k < 2; k++) {
        r = rec_copy(cl, k);
        if (r.calls != 1 || r.status != CONS_ESHUTDOWN)
            fail_msg("proposal %u: %u calls, status %d (%s)", k, r.calls, r.status,
                     cons_strerror(r.status));
    }

    /* the late answer, as the hook's RPC would deliver it after the stop */
    pthread_mutex_lock(&cl->mu);
    token = cl->nodes[2].last_token;
    pthread_mutex_unlock(&cl->mu);
    cons_forward_done(cl->nodes[2].cons, token, 0, 1, result_new(cl, 1, 1));
    cons_forward_done(cl->nodes[2].cons, token, CONS_EUNREACHABLE, 0, NULL);
    cons_forward_done(cl->nodes[3].cons, token + 1000, 0, 1, result_new(cl, 1, 1));
    assert_true(wait_for(cl, results_freed, 0));
    pthread_mutex_lock(&cl->mu);
    live = cl->results_live;
    pthread_mutex_unlock(&cl->mu);
    assert_int_equal(live, 0);
    assert_int_equal(rec_copy(cl, 0).calls, 1);
    assert_int_equal(rec_copy(cl, 1).calls, 1);

    finish_clean(cl);
    assert_int_equal(rec_copy(cl, 0).calls, 1);
    assert_int_equal(rec_copy(cl, 1).calls, 1);
}

/* Every status, the cluster ones included, has a text of its own: a log line must tell an
 * unreachable leader or a timeout from a disk error. */
static void test_strerror_cluster(void **state)
{
    const int codes[] = {
        0,           CONS_ENOTLEADER, CONS_ELOST,        CONS_ESHUTDOWN, CONS_ENOMEM,
        CONS_EINVAL, CONS_EIO,        CONS_EUNREACHABLE, CONS_ETIMEDOUT};
    const size_t n = sizeof codes / sizeof codes[0];

    (void) state;
    for (size_t i = 0; i < n; i++) {
        assert_non_null(cons_strerror(codes[i]));
        for (size_t j = 0; j < i; j++)
            if (strcmp(cons_strerror(codes[i]), cons_strerror(codes[j])) == 0)
                fail_msg("cons_strerror(%d) and cons_strerror(%d) are both \"%s\"", codes[i],
                         codes[j], cons_strerror(codes[i]));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_add_voters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forward, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forward_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transfer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transfer_any_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_while_forwarded, setup, teardown),
        cmocka_unit_test(test_strerror_cluster),
    };

    signal(SIGPIPE, SIG_IGN); /* libraft writes to peers' sockets (../shared/DEPS.md §1) */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
