/*
 * node/cluster.c
 * Cluster membership and body placement above Raft (see cluster.h).
 *
 * Flows, each a small state machine with one context struct that owns what it needs:
 * - forward (consensus thread -> RPC loop -> consensus thread): a follower's proposal goes
 *   to the leader's RPC address from the member table; the leader proposes it and answers
 *   with the log index and the packed Result.
 * - join (admin loop -> RPC loop): this node asks a seed; a non-leader answers with the
 *   leader's RPC address and we ask there. The leader writes the MemberRec through Raft,
 *   then adds the node as a spare and promotes it to voter (libraft's catch-up rounds).
 * - remove / transfer: done on the leader (asked over RPC when we are not it).
 * - status: every member is asked for its NodeStatus (1 s), the answers become lines.
 * - bodies: replicate (push to the other owners, done at a majority), fetch (pull a body
 *   missing here from an owner), repair (a background pass over the local bodies: push
 *   copies owners lack, drop copies this node does not own once every owner has one,
 *   delete bodies nothing references after a grace period).
 */
#include "cluster.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <openssl/rand.h>
#include <raft.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "body_store.h"
#include "command.h"
#include "frame.h"
#include "keys.h"
#include "keyspace.h"
#include "log.h"
#include "model.h"
#include "placement.h"
#include "rpc.h"

#define FORWARD_TIMEOUT_MS 5000 /* a frozen leader: give up, retry (same request id) */
#define CHANGE_TIMEOUT_MS  90000
#define STATUS_TIMEOUT_MS  1000
#define BODY_TIMEOUT_MS    30000
#define JOIN_HOPS          20
#define REPAIR_BATCH       64
#define GC_CANDIDATES_MAX  100000
#define MEMBER_CHECK_MS    1000

struct member_view {
    size_t n;
    uint64_t id[PLACEMENT_MAX_NODES];
    char zone[PLACEMENT_MAX_NODES][65];
    char rpc[PLACEMENT_MAX_NODES][64];
    struct placement_node nodes[PLACEMENT_MAX_NODES];
};

struct gc_candidate {
    uint8_t hash[32];
    uint64_t since_ms;
};

struct cluster {
    struct cluster_config cfg;
    char *raft_address, *rpc_address, *zone;
    char *listen_name[CLUSTER_LISTEN_MAX], *listen_addr[CLUSTER_LISTEN_MAX];
    struct auth_key key;
    struct db *db;
    struct fsm *fsm;
    _Atomic(struct cons *) cons;
    struct rpc *rpc;

    /* RPC loop only */
    uv_timer_t repair_timer, member_timer;
    bool repair_running, stopping, member_busy;
    bool stopped;              /* cluster_stop() ran (the stopping thread's flag) */
    uint8_t repair_cursor[33]; /* 'b' + hash: the next pass resumes after it */
    bool repair_cursor_set;
    struct gc_candidate *gc;
    size_t n_gc;
    uint64_t pass_bodies, pass_bytes, pass_short;

    /* counters, any thread */
    _Atomic uint64_t bodies, body_bytes, repair_copied, repair_pending, bodies_deleted;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static char *xstrdup(const char *s)
{
    return strdup(s ? s : "");
}

/* ---- members ---- */

static int view_add(void *ctx, const ProtobufCMessage *m)
{
    struct member_view *v = ctx;
    const Tern__MemberRec *r = (const Tern__MemberRec *) m;
    if (v->n >= PLACEMENT_MAX_NODES)
        return 1;
    size_t i = v->n++;
    v->id[i] = r->id;
    snprintf(v->zone[i], sizeof v->zone[i], "%s", r->zone ? r->zone : "");
    snprintf(v->rpc[i], sizeof v->rpc[i], "%s", r->rpc_address);
    v->nodes[i].id = r->id;
    v->nodes[i].zone = v->zone[i];
    return 0;
}

/* load_members(): the MemberRecs of the voters in the Raft configuration as this node
 * knows it (a record can outlive its node's removal, a joining node is a voter only once
 * it caught up: neither may own bodies); with none yet (a fresh single node), just this
 * node. */
static void load_members(struct cluster *cl, struct member_view *v)
{
    memset(v, 0, sizeof *v);
    struct member_view *all = malloc(sizeof *all);
    struct cons *c = atomic_load(&cl->cons);
    if (all != NULL) {
        memset(all, 0, sizeof *all);
        if (model_members(cl->db, view_add, all) < 0)
            all->n = 0;
        struct cons_status s;
        s.n_members = 0;
        if (c)
            cons_status(c, &s);
        for (size_t i = 0; i < all->n; i++) {
            bool voter = s.n_members == 0; /* configuration unknown: trust the records */
            for (size_t j = 0; j < s.n_members; j++)
                voter |= s.members[j].id == all->id[i] && s.members[j].role == CONS_VOTER;
            if (!voter)
                continue;
            size_t k = v->n++;
            v->id[k] = all->id[i];
            memcpy(v->zone[k], all->zone[i], sizeof v->zone[k]);
            memcpy(v->rpc[k], all->rpc[i], sizeof v->rpc[k]);
        }
        free(all);
    }
    if (v->n == 0) {
        v->n = 1;
        v->id[0] = cl->cfg.id;
        snprintf(v->zone[0], sizeof v->zone[0], "%s", cl->zone);
        snprintf(v->rpc[0], sizeof v->rpc[0], "%s", cl->rpc_address);
    }
    for (size_t i = 0; i < v->n; i++) {
        v->nodes[i].id = v->id[i];
        v->nodes[i].zone = v->zone[i];
    }
}

/* load_all(): every MemberRec, voter or not (status). */
static void load_all(struct cluster *cl, struct member_view *v)
{
    memset(v, 0, sizeof *v);
    if (model_members(cl->db, view_add, v) < 0)
        v->n = 0;
    if (v->n == 0) {
        v->n = 1;
        v->id[0] = cl->cfg.id;
        snprintf(v->zone[0], sizeof v->zone[0], "%s", cl->zone);
        snprintf(v->rpc[0], sizeof v->rpc[0], "%s", cl->rpc_address);
        v->nodes[0].id = cl->cfg.id;
        v->nodes[0].zone = v->zone[0];
    }
}

static const char *member_rpc(const struct member_view *v, uint64_t id)
{
    for (size_t i = 0; i < v->n; i++)
        if (v->id[i] == id)
            return v->rpc[i];
    return NULL;
}

static void self_record(struct cluster *cl, Tern__MemberRec *m, Tern__ListenRec *ls,
                        Tern__ListenRec **lp)
{
    tern__member_rec__init(m);
    m->id = cl->cfg.id;
    m->raft_address = cl->raft_address;
    m->rpc_address = cl->rpc_address;
    m->zone = cl->zone;
    for (size_t i = 0; i < cl->cfg.n_listen; i++) {
        tern__listen_rec__init(&ls[i]);
        ls[i].name = cl->listen_name[i];
        ls[i].address = cl->listen_addr[i];
        lp[i] = &ls[i];
    }
    m->n_listen = cl->cfg.n_listen;
    m->listen = lp;
}

/* self_record_current(): the stored MemberRec of this node equals what config says. */
static bool self_record_current(struct cluster *cl)
{
    Tern__MemberRec m;
    Tern__ListenRec ls[CLUSTER_LISTEN_MAX];
    Tern__ListenRec *lp[CLUSTER_LISTEN_MAX];
    self_record(cl, &m, ls, lp);
    size_t n = tern__member_rec__get_packed_size(&m);
    uint8_t *want = malloc(n ? n : 1);
    if (want == NULL)
        return true;
    tern__member_rec__pack(&m, want);
    struct key k;
    ks_member(&k, cl->cfg.id);
    char *have = NULL;
    size_t hl = 0;
    int rv = db_get(cl->db, DB_CF_META, k.buf, k.len, &have, &hl);
    bool same = rv == 1 && hl == n && memcmp(have, want, n) == 0;
    free(have);
    free(want);
    return rv < 0 || same;
}

/* ---- proposing from the cluster's own flows ---- */

typedef void propose_cb(void *arg, int status, const Tern__Result *res);
struct proposing {
    propose_cb *cb;
    void *arg;
};

static void proposed(void *arg, int status, uint64_t index, void *result)
{
    struct proposing *p = arg;
    (void) index;
    Tern__Result *res = NULL;
    if (status == 0 && result) {
        const struct fsm_result *r = result;
        res = tern__result__unpack(NULL, r->len, r->data);
    }
    p->cb(p->arg, status == 0 && res == NULL ? CONS_EIO : status, res);
    if (res)
        tern__result__free_unpacked(res, NULL);
    free(p);
}

/* propose(): CMD through Raft (forwarded when this node is not the leader); CB runs on the
 * consensus thread. */
static int propose(struct cluster *cl, Tern__Command *cmd, propose_cb *cb, void *arg)
{
    struct cons *cons = atomic_load(&cl->cons);
    uint8_t rid[COMMAND_REQUEST_ID_LEN];
    if (cons == NULL || RAND_bytes(rid, sizeof rid) != 1)
        return -1;
    cmd->has_request_id = 1;
    cmd->request_id.data = rid;
    cmd->request_id.len = sizeof rid;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    cmd->has_time_ms = 1;
    cmd->time_ms = (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
    void *buf;
    size_t len;
    if (command_pack(cmd, &buf, &len) != 0)
        return -1;
    struct proposing *p = malloc(sizeof *p);
    if (p == NULL) {
        raft_free(buf);
        return -1;
    }
    p->cb = cb;
    p->arg = arg;
    if (cons_propose(cons, buf, len, proposed, p) != 0) {
        free(p);
        return -1;
    }
    return 0;
}

/* ---- forwarding: follower side ---- */

struct fwd {
    struct cluster *cl;
    uint64_t token;
};

static int map_rpc(int st)
{
    switch (st) {
    case RPC_EUNREACHABLE:
    case RPC_EAUTH: /* nothing was sent */
        return CONS_EUNREACHABLE;
    case RPC_ESHUTDOWN:
        return CONS_ESHUTDOWN;
    case RPC_ENOMEM:
        return CONS_ENOMEM;
    default: /* sent, then lost or timed out: the outcome is unknown */
        return CONS_ELOST;
    }
}

static void forward_done(void *arg, int status, const Tern__RpcResponse *resp)
{
    struct fwd *f = arg;
    struct cons *cons = atomic_load(&f->cl->cons);
    if (status != 0) {
        cons_forward_done(cons, f->token, map_rpc(status), 0, NULL);
    } else if (resp->status != 0) {
        cons_forward_done(cons, f->token, resp->status, 0, NULL);
    } else {
        size_t n = resp->has_result ? resp->result.len : 0;
        struct fsm_result *r = malloc(sizeof *r + n);
        if (r == NULL) {
            cons_forward_done(cons, f->token, CONS_ENOMEM, 0, NULL);
        } else {
            r->len = n;
            if (n)
                memcpy(r->data, resp->result.data, n);
            cons_forward_done(cons, f->token, 0, resp->index, r);
        }
    }
    free(f);
}

int cluster_forward(void *ctx, uint64_t leader_id, const void *buf, size_t len, uint64_t token)
{
    struct cluster *cl = ctx;
    struct member_view *v = malloc(sizeof *v);
    if (v == NULL)
        return -1;
    load_members(cl, v);
    const char *addr = member_rpc(v, leader_id);
    if (addr == NULL) {
        free(v);
        return -1;
    }
    struct fwd *f = malloc(sizeof *f);
    if (f == NULL) {
        free(v);
        return -1;
    }
    f->cl = cl;
    f->token = token;
    Tern__RpcRequest req;
    tern__rpc_request__init(&req);
    req.op_case = TERN__RPC_REQUEST__OP_FORWARD;
    req.forward.data = (uint8_t *) buf;
    req.forward.len = len;
    int rv = rpc_send(cl->rpc, addr, &req, FORWARD_TIMEOUT_MS, forward_done, f);
    free(v);
    if (rv != 0) {
        free(f);
        return -1;
    }
    return 0;
}

/* ---- RPC handlers: the leader's side of forward / join / remove / transfer ---- */

/* not_leader(): answers CALL with ENOTLEADER and where the leader is. */
static void not_leader(struct cluster *cl, struct rpc_call *call)
{
    struct cons_status s;
    cons_status(atomic_load(&cl->cons), &s);
    Tern__RpcResponse resp = TERN__RPC_RESPONSE__INIT;
    resp.status = CONS_ENOTLEADER;
    resp.error = "not the leader";
    struct member_view *v = malloc(sizeof *v);
    if (v && s.leader_id) {
        load_members(cl, v);
        const char *a = member_rpc(v, s.leader_id);
        resp.has_leader_id = 1;
        resp.leader_id = s.leader_id;
        resp.leader_rpc = (char *) a;
    }
    rpc_reply(call, &resp);
    free(v);
}

static bool is_leader(struct cluster *cl)
{
    struct cons *c = atomic_load(&cl->cons);
    if (c == NULL)
        return false;
    struct cons_status s;
    cons_status(c, &s);
    return s.role == CONS_LEADER;
}

static void forwarded_applied(void *arg, int status, uint64_t index, void *result)
{
    struct rpc_call *call = arg;
    Tern__RpcResponse resp = TERN__RPC_RESPONSE__INIT;
    resp.status = status;
    if (status == 0) {
        const struct fsm_result *r = result;
        resp.has_index = 1;
        resp.index = index;
        if (r) {
            resp.has_result = 1;
            resp.result.data = (uint8_t *) r->data;
            resp.result.len = r->len;
        }
    }
    rpc_reply(call, &resp);
}

static void h_forward(struct cluster *cl, struct rpc_call *call, const Tern__RpcRequest *req)
{
    if (!is_leader(cl))
        return not_leader(cl, call);
    if (req->forward.len == 0)
        return rpc_reply_status(call, CONS_EINVAL, "empty command");
    void *buf = raft_malloc(req->forward.len);
    if (buf == NULL)
        return rpc_reply_status(call, CONS_ENOMEM, NULL);
    memcpy(buf, req->forward.data, req->forward.len);
    int rv = cons_propose(atomic_load(&cl->cons), buf, req->forward.len, forwarded_applied, call);
    if (rv != 0)
        rpc_reply_status(call, rv, NULL);
}

/* A membership operation on the leader; its end is reported to DONE(ARG, status, text). */
typedef void change_done_fn(void *arg, int status, const char *text);
struct change_op {
    struct cluster *cl;
    enum cons_change_op op;
    Tern__MemberRec *member; /* join: packed copy, unpacked (owned) */
    uint64_t id;
    change_done_fn *done;
    void *arg;
};

static void change_op_end(struct change_op *o, int status, const char *text)
{
    o->done(o->arg, status, text);
    if (o->member)
        tern__member_rec__free_unpacked(o->member, NULL);
    free(o);
}

static void removed_record(void *arg, int status, const Tern__Result *res)
{
    struct change_op *o = arg;
    if (status != 0)
        return change_op_end(o, status, "removed from Raft; member record not deleted yet");
    (void) res; /* NOTFOUND is fine: removed twice */
    change_op_end(o, 0, NULL);
}

static void changed(void *arg, int status)
{
    struct change_op *o = arg;
    if (status != 0)
        return change_op_end(o, status, cons_strerror(status));
    if (o->op == CONS_REMOVE) {
        Tern__Command cmd = TERN__COMMAND__INIT;
        Tern__MemberRemove mr = TERN__MEMBER_REMOVE__INIT;
        mr.id = o->id;
        cmd.op_case = TERN__COMMAND__OP_MEMBER_REMOVE;
        cmd.member_remove = &mr;
        if (propose(o->cl, &cmd, removed_record, o) != 0)
            change_op_end(o, CONS_ENOMEM, "cannot propose");
        return;
    }
    change_op_end(o, 0, NULL);
}

static void member_written(void *arg, int status, const Tern__Result *res)
{
    struct change_op *o = arg;
    if (status != 0)
        return change_op_end(o, status, cons_strerror(status));
    if (res->status != 0)
        return change_op_end(o, CONS_EINVAL, res->error ? res->error : "member refused");
    int rv = cons_change(atomic_load(&o->cl->cons), CONS_ADD_VOTER, o->member->id,
                         o->member->raft_address, changed, o);
    if (rv != 0)
        change_op_end(o, rv, cons_strerror(rv));
}

static void handed_over(void *arg, int status)
{
    struct change_op *o = arg;
    change_op_end(o, status == 0 ? CONS_ENOTLEADER : status,
                  status == 0 ? "leadership handed over: ask the new leader"
                              : cons_strerror(status));
}

/* change_start_local(): on the leader. JOIN: MemberRec (borrowed). */
static void change_start_local(struct cluster *cl, enum cons_change_op op, uint64_t id,
                               const Tern__MemberRec *join, change_done_fn *done, void *arg)
{
    struct change_op *o = calloc(1, sizeof *o);
    if (o == NULL)
        return done(arg, CONS_ENOMEM, "out of memory");
    o->cl = cl;
    o->op = op;
    o->id = id;
    o->done = done;
    o->arg = arg;
    if (op == CONS_ADD_VOTER) {
        size_t n = tern__member_rec__get_packed_size(join);
        uint8_t *b = malloc(n ? n : 1);
        if (b == NULL)
            return change_op_end(o, CONS_ENOMEM, "out of memory");
        tern__member_rec__pack(join, b);
        o->member = tern__member_rec__unpack(NULL, n, b);
        free(b);
        if (o->member == NULL)
            return change_op_end(o, CONS_ENOMEM, "out of memory");
        Tern__Command cmd = TERN__COMMAND__INIT;
        Tern__MemberSet ms = TERN__MEMBER_SET__INIT;
        ms.member = o->member;
        cmd.op_case = TERN__COMMAND__OP_MEMBER_SET;
        cmd.member_set = &ms;
        log_info("cluster.join", "id=%" PRIu64 " raft=%s rpc=%s zone=%s", o->member->id,
                 o->member->raft_address, o->member->rpc_address,
                 o->member->zone ? o->member->zone : "");
        if (propose(cl, &cmd, member_written, o) != 0)
            change_op_end(o, CONS_ENOMEM, "cannot propose");
        return;
    }
    if (op == CONS_REMOVE && id == cl->cfg.id) {
        /* a leader removed from the configuration steps down only once that commits, and
         * cannot then write the MemberRemove: hand leadership over first; the asker
         * (remote_sent) is told "not the leader" and asks the new one */
        int rv = cons_change(atomic_load(&cl->cons), CONS_TRANSFER, 0, NULL, handed_over, o);
        if (rv != 0)
            change_op_end(o, rv, cons_strerror(rv));
        return;
    }
    int rv = cons_change(atomic_load(&cl->cons), op, id, NULL, changed, o);
    if (rv != 0)
        change_op_end(o, rv, cons_strerror(rv));
}

static void change_replied(void *arg, int status, const char *text)
{
    rpc_reply_status(arg, status, status ? text : NULL);
}

static void h_change(struct cluster *cl, struct rpc_call *call, const Tern__RpcRequest *req)
{
    if (!is_leader(cl))
        return not_leader(cl, call);
    switch (req->op_case) {
    case TERN__RPC_REQUEST__OP_JOIN:
        return change_start_local(cl, CONS_ADD_VOTER, req->join->id, req->join, change_replied,
                                  call);
    case TERN__RPC_REQUEST__OP_REMOVE:
        return change_start_local(cl, CONS_REMOVE, req->remove, NULL, change_replied, call);
    default:
        return change_start_local(cl, CONS_TRANSFER, req->transfer, NULL, change_replied, call);
    }
}

/* ---- RPC handlers: bodies and status ---- */

struct body_work {
    uv_work_t w;
    struct cluster *cl;
    struct rpc_call *call;
    uint8_t hash[32];
    char *data;
    size_t len;
    int rv;
};

static void put_work(uv_work_t *w)
{
    struct body_work *b = w->data;
    uint8_t got[32];
    b->rv = body_put(b->cl->db, b->data, b->len, got);
    if (b->rv == 0 && memcmp(got, b->hash, 32) != 0)
        b->rv = -2; /* the bytes do not match the name they came with */
}

static void put_after(uv_work_t *w, int status)
{
    struct body_work *b = w->data;
    (void) status;
    rpc_reply_status(b->call, b->rv == 0 ? 0 : CONS_EIO,
                     b->rv == -2 ? "hash mismatch"
                     : b->rv     ? "store failed"
                                 : NULL);
    free(b->data);
    free(b);
}

static void get_work(uv_work_t *w)
{
    struct body_work *b = w->data;
    b->rv = body_get(b->cl->db, b->hash, &b->data, &b->len);
}

static void get_after(uv_work_t *w, int status)
{
    struct body_work *b = w->data;
    (void) status;
    Tern__RpcResponse resp = TERN__RPC_RESPONSE__INIT;
    resp.status = b->rv == 1 ? 0 : b->rv == 0 ? CONS_EINVAL : CONS_EIO;
    if (b->rv == 1) {
        resp.has_body = 1;
        resp.body.data = (uint8_t *) b->data;
        resp.body.len = b->len;
    } else {
        resp.error = b->rv == 0 ? "no such body" : "read failed";
    }
    rpc_reply(b->call, &resp);
    free(b->data);
    free(b);
}

static void h_body(struct cluster *cl, struct rpc_call *call, const Tern__RpcRequest *req)
{
    struct body_work *b = calloc(1, sizeof *b);
    if (b == NULL)
        return rpc_reply_status(call, CONS_ENOMEM, NULL);
    b->cl = cl;
    b->call = call;
    b->w.data = b;
    int rv;
    if (req->op_case == TERN__RPC_REQUEST__OP_BODY_PUT) {
        const Tern__BodyData *d = req->body_put;
        if (d->hash.len != 32) {
            free(b);
            return rpc_reply_status(call, CONS_EINVAL, "bad hash");
        }
        memcpy(b->hash, d->hash.data, 32);
        b->len = d->data.len;
        b->data = malloc(b->len ? b->len : 1);
        if (b->data == NULL) {
            free(b);
            return rpc_reply_status(call, CONS_ENOMEM, NULL);
        }
        memcpy(b->data, d->data.data, b->len);
        rv = uv_queue_work(rpc_loop(cl->rpc), &b->w, put_work, put_after);
    } else {
        if (req->body_get.len != 32) {
            free(b);
            return rpc_reply_status(call, CONS_EINVAL, "bad hash");
        }
        memcpy(b->hash, req->body_get.data, 32);
        rv = uv_queue_work(rpc_loop(cl->rpc), &b->w, get_work, get_after);
    }
    if (rv != 0) {
        free(b->data);
        free(b);
        rpc_reply_status(call, CONS_EIO, "queue");
    }
}

/* body_has for a batch: each check may read a whole body (BlobDB), so in the pool */
struct has_work {
    uv_work_t w;
    struct cluster *cl;
    struct rpc_call *call;
    uint8_t *hashes;  /* n * 32 bytes (malloc) */
    uint8_t *present; /* n bytes (malloc) */
    size_t n;
};

static void has_work(uv_work_t *w)
{
    struct has_work *h = w->data;
    for (size_t i = 0; i < h->n; i++)
        h->present[i] = body_has(h->cl->db, h->hashes + 32 * i) == 1;
}

static void has_done(uv_work_t *w, int status)
{
    struct has_work *h = w->data;
    (void) status;
    Tern__RpcResponse resp = TERN__RPC_RESPONSE__INIT;
    resp.has_present = 1;
    resp.present.data = h->present;
    resp.present.len = h->n;
    rpc_reply(h->call, &resp);
    free(h->hashes);
    free(h->present);
    free(h);
}

static void h_body_has(struct cluster *cl, struct rpc_call *call, const Tern__RpcRequest *req)
{
    size_t n = req->body_has.len / 32;
    if (req->body_has.len % 32 != 0 || n > 4096)
        return rpc_reply_status(call, CONS_EINVAL, "bad hash list");
    struct has_work *h = calloc(1, sizeof *h);
    if (h != NULL) {
        h->hashes = malloc(n ? 32 * n : 1);
        h->present = malloc(n ? n : 1);
    }
    if (h == NULL || h->hashes == NULL || h->present == NULL) {
        if (h) {
            free(h->hashes);
            free(h->present);
        }
        free(h);
        return rpc_reply_status(call, CONS_ENOMEM, NULL);
    }
    memcpy(h->hashes, req->body_has.data, 32 * n);
    h->n = n;
    h->cl = cl;
    h->call = call;
    h->w.data = h;
    if (uv_queue_work(rpc_loop(cl->rpc), &h->w, has_work, has_done) != 0) {
        free(h->hashes);
        free(h->present);
        free(h);
        rpc_reply_status(call, CONS_EIO, "queue");
    }
}

static const char *role_name(enum cons_role r)
{
    static const char *names[] = {"unavailable", "follower", "candidate", "leader"};
    return names[r];
}

static void fill_status(struct cluster *cl, Tern__NodeStatus *ns)
{
    struct cons_status s;
    memset(&s, 0, sizeof s);
    struct cons *c = atomic_load(&cl->cons);
    if (c)
        cons_status(c, &s);
    /* configuration entries never reach the FSM: Raft's own count includes them */
    uint64_t applied = fsm_applied_index(cl->fsm);
    if (s.applied_index > applied)
        applied = s.applied_index;
    ns->id = cl->cfg.id;
    ns->role = (char *) role_name(s.role);
#define SET(f, v) (ns->has_##f = 1, ns->f = (v))
    SET(term, s.term);
    SET(commit_index, s.commit_index > applied ? s.commit_index : applied);
    SET(applied_index, applied);
    SET(last_index, s.last_index > applied ? s.last_index : applied);
    SET(leader_id, s.leader_id);
    SET(bodies, atomic_load(&cl->bodies));
    SET(body_bytes, atomic_load(&cl->body_bytes));
    SET(repair_copied, atomic_load(&cl->repair_copied));
    SET(repair_pending, atomic_load(&cl->repair_pending));
    SET(bodies_deleted, atomic_load(&cl->bodies_deleted));
#undef SET
    ns->zone = cl->zone;
}

static void rpc_handler(void *ctx, struct rpc_call *call, const Tern__RpcRequest *req)
{
    struct cluster *cl = ctx;
    if (atomic_load(&cl->cons) == NULL || cl->stopping)
        return rpc_reply_status(call, CONS_ESHUTDOWN, "starting or stopping");
    switch (req->op_case) {
    case TERN__RPC_REQUEST__OP_FORWARD:
        return h_forward(cl, call, req);
    case TERN__RPC_REQUEST__OP_JOIN:
    case TERN__RPC_REQUEST__OP_REMOVE:
    case TERN__RPC_REQUEST__OP_TRANSFER:
        return h_change(cl, call, req);
    case TERN__RPC_REQUEST__OP_BODY_PUT:
    case TERN__RPC_REQUEST__OP_BODY_GET:
        return h_body(cl, call, req);
    case TERN__RPC_REQUEST__OP_BODY_HAS:
        return h_body_has(cl, call, req);
    case TERN__RPC_REQUEST__OP_READ_INDEX: {
        if (!is_leader(cl))
            return not_leader(cl, call);
        struct cons_status st;
        cons_status(atomic_load(&cl->cons), &st);
        Tern__RpcResponse resp = TERN__RPC_RESPONSE__INIT;
        resp.has_index = 1;
        resp.index = st.commit_index;
        return rpc_reply(call, &resp);
    }
    case TERN__RPC_REQUEST__OP_STATUS: {
        Tern__RpcResponse resp = TERN__RPC_RESPONSE__INIT;
        Tern__NodeStatus ns = TERN__NODE_STATUS__INIT;
        fill_status(cl, &ns);
        resp.node = &ns;
        return rpc_reply(call, &resp);
    }
    default:
        return rpc_reply_status(call, CONS_EINVAL, "unknown request");
    }
}

/* ---- admin-side operations (answers on the caller's loopq) ---- */

struct admin_op {
    struct cluster *cl;
    struct loopq *q;
    cluster_done_cb *done;
    void *arg;
    int status;
    char *text;
    /* join / remote change */
    Tern__RpcRequest req;
    Tern__MemberRec member;
    Tern__ListenRec ls[CLUSTER_LISTEN_MAX];
    Tern__ListenRec *lp[CLUSTER_LISTEN_MAX];
    char target[64];
    int hops;
    uv_timer_t timer;
    /* status */
    size_t n;
    _Atomic size_t answered; /* from the RPC loop and the caller's: see status_count() */
    Tern__NodeStatus **ns;
    struct member_view *view;
};

static void op_deliver(void *arg)
{
    struct admin_op *o = arg;
    o->done(o->arg, o->status, o->text);
    free(o->text);
    if (o->ns) {
        for (size_t i = 0; i < o->n; i++)
            if (o->ns[i])
                tern__node_status__free_unpacked(o->ns[i], NULL);
        free(o->ns);
    }
    free(o->view);
    free(o);
}

/* op_end(): STATUS is admin's (0 ok, 1 refused, 2 unavailable). */
static void op_end(struct admin_op *o, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void op_end(struct admin_op *o, int status, const char *fmt, ...)
{
    o->status = status;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(&o->text, fmt, ap) < 0)
            o->text = NULL;
        va_end(ap);
    }
    if (loopq_post(o->q, op_deliver, o) != 0)
        abort();
}

static int admin_status_of(int cons_status)
{
    return cons_status == CONS_EINVAL ? 1 : 2;
}

static void remote_sent(void *arg, int status, const Tern__RpcResponse *resp);

static void remote_retry(uv_timer_t *t)
{
    struct admin_op *o = t->data;
    uv_close((uv_handle_t *) &o->timer, NULL);
    if (rpc_send(o->cl->rpc, o->target, &o->req, CHANGE_TIMEOUT_MS, remote_sent, o) != 0)
        op_end(o, 2, "out of memory");
}

/* timer_then(): runs on the RPC loop (the op's timer lives there). */
static void retry_later(void *arg)
{
    struct admin_op *o = arg;
    uv_timer_init(rpc_loop(o->cl->rpc), &o->timer);
    o->timer.data = o;
    uv_timer_start(&o->timer, remote_retry, 300, 0);
}

static void remote_sent(void *arg, int status, const Tern__RpcResponse *resp)
{
    struct admin_op *o = arg;
    if (status == 0 && resp->status == 0)
        return op_end(o, 0, "ok");
    if (++o->hops > JOIN_HOPS)
        return op_end(o, 2, "gave up after %d tries", o->hops);
    if (status == 0 && resp->status == CONS_ENOTLEADER && resp->leader_rpc && resp->leader_rpc[0]) {
        snprintf(o->target, sizeof o->target, "%s", resp->leader_rpc);
        retry_later(o);
        return;
    }
    if (status == 0 && resp->status != CONS_ENOTLEADER && resp->status != CONS_ELOST &&
        resp->status != CONS_ESHUTDOWN)
        return op_end(o, admin_status_of(resp->status), "refused: %s",
                      resp->error ? resp->error : cons_strerror(resp->status));
    if (status == RPC_ESHUTDOWN)
        return op_end(o, 2, "shutting down");
    if (status == RPC_EAUTH)
        return op_end(o, 1, "%s refused our handshake: not the same cluster secret?", o->target);
    retry_later(o); /* no leader yet, or unreachable: ask again shortly */
}

static struct admin_op *op_new(struct cluster *cl, struct loopq *q, cluster_done_cb *done,
                               void *arg)
{
    struct admin_op *o = calloc(1, sizeof *o);
    if (o == NULL)
        return NULL;
    o->cl = cl;
    o->q = q;
    o->done = done;
    o->arg = arg;
    tern__rpc_request__init(&o->req);
    return o;
}

int cluster_join(struct cluster *cl, const char *seed_rpc, struct loopq *q, cluster_done_cb *done,
                 void *arg)
{
    struct admin_op *o = op_new(cl, q, done, arg);
    if (o == NULL)
        return -1;
    snprintf(o->target, sizeof o->target, "%s", seed_rpc);
    self_record(cl, &o->member, o->ls, o->lp);
    o->req.op_case = TERN__RPC_REQUEST__OP_JOIN;
    o->req.join = &o->member;
    log_info("cluster.join_request", "seed=%s id=%" PRIu64, seed_rpc, cl->cfg.id);
    if (rpc_send(cl->rpc, o->target, &o->req, CHANGE_TIMEOUT_MS, remote_sent, o) != 0) {
        free(o);
        return -1;
    }
    return 0;
}

static void local_change_done(void *arg, int status, const char *text)
{
    struct admin_op *o = arg;
    if (status == 0)
        return op_end(o, 0, "ok");
    op_end(o, admin_status_of(status), "%s", text ? text : cons_strerror(status));
}

/* remote_or_local(): on the leader do it here, else ask the leader over RPC. */
static int remote_or_local(struct cluster *cl, enum cons_change_op op, uint64_t id, struct loopq *q,
                           cluster_done_cb *done, void *arg)
{
    struct admin_op *o = op_new(cl, q, done, arg);
    if (o == NULL)
        return -1;
    bool self_removal = op == CONS_REMOVE && id == cl->cfg.id;
    if (is_leader(cl) && !self_removal) {
        change_start_local(cl, op, id, NULL, local_change_done, o);
        return 0;
    }
    struct cons_status s;
    cons_status(atomic_load(&cl->cons), &s);
    struct member_view v;
    load_members(cl, &v);
    /* removing the leader itself goes through RPC to itself: it hands leadership over,
     * answers "not the leader", and remote_sent() asks the new leader */
    const char *addr = s.leader_id == cl->cfg.id ? cl->rpc_address
                       : s.leader_id             ? member_rpc(&v, s.leader_id)
                                                 : NULL;
    if (addr == NULL) {
        op_end(o, 2, "no leader known");
        return 0;
    }
    snprintf(o->target, sizeof o->target, "%s", addr);
    if (op == CONS_REMOVE) {
        o->req.op_case = TERN__RPC_REQUEST__OP_REMOVE;
        o->req.remove = id;
    } else {
        o->req.op_case = TERN__RPC_REQUEST__OP_TRANSFER;
        o->req.transfer = id;
    }
    if (rpc_send(cl->rpc, o->target, &o->req, CHANGE_TIMEOUT_MS, remote_sent, o) != 0) {
        free(o);
        return -1;
    }
    return 0;
}

int cluster_remove(struct cluster *cl, uint64_t id, struct loopq *q, cluster_done_cb *done,
                   void *arg)
{
    return remote_or_local(cl, CONS_REMOVE, id, q, done, arg);
}

int cluster_transfer(struct cluster *cl, uint64_t id, struct loopq *q, cluster_done_cb *done,
                     void *arg)
{
    return remote_or_local(cl, CONS_TRANSFER, id, q, done, arg);
}

/* ---- status ---- */

static void status_format(struct admin_op *o)
{
    struct cons_status s;
    cons_status(atomic_load(&o->cl->cons), &s);
    char *out = NULL;
    size_t olen = 0;
    FILE *f = open_memstream(&out, &olen);
    if (f == NULL)
        return op_end(o, 2, "out of memory");
    uint64_t leader_commit = 0;
    for (size_t i = 0; i < o->n; i++)
        if (o->ns[i] && o->ns[i]->role && strcmp(o->ns[i]->role, "leader") == 0)
            leader_commit = o->ns[i]->commit_index;
    fprintf(f, "cluster leader=%" PRIu64 " term=%" PRIu64 " members=%zu replicas=%u\n", s.leader_id,
            s.term, o->n, o->cl->cfg.replicas);
    for (size_t i = 0; i < o->n; i++) {
        uint64_t id = o->view->id[i];
        const char *raft_role = "none";
        for (size_t j = 0; j < s.n_members; j++)
            if (s.members[j].id == id)
                raft_role = s.members[j].role == CONS_VOTER     ? "voter"
                            : s.members[j].role == CONS_STANDBY ? "standby"
                                                                : "spare";
        const Tern__NodeStatus *n = o->ns[i];
        if (n == NULL) {
            fprintf(f, "node id=%" PRIu64 " raft_role=%s zone=%s rpc=%s state=down\n", id,
                    raft_role, o->view->zone[i], o->view->rpc[i]);
            continue;
        }
        uint64_t lag = leader_commit > n->applied_index ? leader_commit - n->applied_index : 0;
        fprintf(f,
                "node id=%" PRIu64 " raft_role=%s role=%s zone=%s rpc=%s state=up term=%" PRIu64
                " commit=%" PRIu64 " applied=%" PRIu64 " lag=%" PRIu64 " bodies=%" PRIu64
                " body_bytes=%" PRIu64 " repair_copied=%" PRIu64 " repair_pending=%" PRIu64
                " bodies_deleted=%" PRIu64 "\n",
                id, raft_role, n->role ? n->role : "?", o->view->zone[i], o->view->rpc[i], n->term,
                n->commit_index, n->applied_index, lag, n->bodies, n->body_bytes, n->repair_copied,
                n->repair_pending, n->bodies_deleted);
    }
    fclose(f);
    o->text = out;
    o->status = 0;
    if (loopq_post(o->q, op_deliver, o) != 0)
        abort();
}

struct status_slot {
    struct admin_op *o;
    size_t i;
};

/* status_count(): one member answered (RPC loop) or could not be asked (caller's loop);
 * the caller holds one more count until it has sent every request, so the answers are
 * formatted exactly once, after the last. */
static void status_count(struct admin_op *o)
{
    if (atomic_fetch_add(&o->answered, 1) + 1 == o->n + 1)
        status_format(o);
}

static void status_answer(void *arg, int status, const Tern__RpcResponse *resp)
{
    struct status_slot *sl = arg;
    struct admin_op *o = sl->o;
    if (status == 0 && resp->status == 0 && resp->node) {
        size_t n = tern__node_status__get_packed_size(resp->node);
        uint8_t *b = malloc(n ? n : 1);
        if (b) {
            tern__node_status__pack(resp->node, b);
            o->ns[sl->i] = tern__node_status__unpack(NULL, n, b);
            free(b);
        }
    }
    free(sl);
    status_count(o);
}

int cluster_status(struct cluster *cl, struct loopq *q, cluster_done_cb *done, void *arg)
{
    struct admin_op *o = op_new(cl, q, done, arg);
    if (o == NULL)
        return -1;
    o->view = malloc(sizeof *o->view);
    if (o->view == NULL) {
        free(o);
        return -1;
    }
    load_all(cl, o->view);
    o->n = o->view->n;
    o->ns = calloc(o->n, sizeof *o->ns);
    if (o->ns == NULL) {
        free(o->view);
        free(o);
        return -1;
    }
    for (size_t i = 0; i < o->n; i++) {
        struct status_slot *sl = malloc(sizeof *sl);
        Tern__RpcRequest req;
        tern__rpc_request__init(&req);
        req.op_case = TERN__RPC_REQUEST__OP_STATUS;
        req.status = 1;
        if (sl == NULL) {
            status_count(o); /* shown as down */
            continue;
        }
        sl->o = o;
        sl->i = i;
        if (rpc_send(cl->rpc, o->view->rpc[i], &req, STATUS_TIMEOUT_MS, status_answer, sl) != 0) {
            free(sl);
            status_count(o);
        }
    }
    status_count(o); /* the caller's own count: every request is out */
    return 0;
}

char *cluster_members_text(struct cluster *cl)
{
    char *out = NULL;
    size_t olen = 0;
    FILE *f = open_memstream(&out, &olen);
    if (f == NULL)
        return NULL;
    struct cons_status s;
    cons_status(atomic_load(&cl->cons), &s);
    struct key lo;
    key_init(&lo, KS_MEMBER);
    struct key hi = lo;
    key_successor(&hi);
    struct db_iter *it = db_iter_open(cl->db, DB_CF_META, lo.buf, lo.len, hi.buf, hi.len);
    for (; it && db_iter_valid(it); db_iter_next(it)) {
        size_t vl;
        const char *v = db_iter_value(it, &vl);
        Tern__MemberRec *m = tern__member_rec__unpack(NULL, vl, (const uint8_t *) v);
        if (m == NULL)
            continue;
        const char *role = "unknown";
        for (size_t j = 0; j < s.n_members; j++)
            if (s.members[j].id == m->id)
                role = s.members[j].role == CONS_VOTER     ? "voter"
                       : s.members[j].role == CONS_STANDBY ? "standby"
                                                           : "spare";
        fprintf(f, "member id=%" PRIu64 " role=%s zone=%s raft=%s rpc=%s", m->id, role,
                m->zone ? m->zone : "", m->raft_address, m->rpc_address);
        static const char *names[] = {"smtp",  "submission", "smtps", "imap",
                                      "imaps", "pop3",       "pop3s"};
        for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
            const char *a = "";
            for (size_t j = 0; j < m->n_listen; j++)
                if (strcmp(m->listen[j]->name, names[k]) == 0)
                    a = m->listen[j]->address;
            fprintf(f, " %s=%s", names[k], a);
        }
        fputc('\n', f);
        tern__member_rec__free_unpacked(m, NULL);
    }
    if (it)
        db_iter_close(it);
    fclose(f);
    return out;
}

/* ---- keeping this node's MemberRec current (RPC loop timer) ---- */

static void member_written_self(void *arg, int status, const Tern__Result *res)
{
    struct cluster *cl = arg;
    (void) res;
    if (status == 0)
        log_info("cluster.member_record", "id=%" PRIu64 " written", cl->cfg.id);
    cl->member_busy = false; /* a plain store: read on the RPC loop's next tick */
}

static void member_check(uv_timer_t *t)
{
    struct cluster *cl = t->data;
    struct cons *c = atomic_load(&cl->cons);
    if (c == NULL || cl->member_busy || cl->stopping)
        return;
    struct cons_status s;
    cons_status(c, &s);
    bool voter = false;
    for (size_t i = 0; i < s.n_members; i++)
        if (s.members[i].id == cl->cfg.id && s.members[i].role == CONS_VOTER)
            voter = true;
    if (!voter || s.leader_id == 0 || self_record_current(cl))
        return;
    Tern__MemberRec m;
    Tern__ListenRec ls[CLUSTER_LISTEN_MAX];
    Tern__ListenRec *lp[CLUSTER_LISTEN_MAX];
    self_record(cl, &m, ls, lp);
    Tern__Command cmd = TERN__COMMAND__INIT;
    Tern__MemberSet ms = TERN__MEMBER_SET__INIT;
    ms.member = &m;
    cmd.op_case = TERN__COMMAND__OP_MEMBER_SET;
    cmd.member_set = &ms;
    cl->member_busy = true;
    if (propose(cl, &cmd, member_written_self, cl) != 0)
        cl->member_busy = false;
}

char *cluster_init_text(struct cluster *cl, const char *secret_file)
{
    char *out = NULL;
    struct cons_status s;
    cons_status(atomic_load(&cl->cons), &s);
    if (asprintf(&out,
                 "cluster initialised: node=%" PRIu64 " role=%s members=%zu\n"
                 "secret_file=%s\n"
                 "give that file to every other node (cluster.secret_file), start it with "
                 "cluster.bootstrap=no, then run: ternctl cluster join %s\n",
                 cl->cfg.id, role_name(s.role), s.n_members, secret_file, cl->rpc_address) < 0)
        return NULL;
    return out;
}

/* ---- read-your-writes on followers ---- */

#define SYNC_TIMEOUT_MS 2000

struct sync {
    struct cluster *cl;
    struct loopq *q;
    void (*done)(void *arg, int status);
    void *arg;
    int status;
};

static void sync_deliver(void *arg)
{
    struct sync *y = arg;
    y->done(y->arg, y->status);
    free(y);
}

static void sync_applied(void *arg, int status)
{
    struct sync *y = arg;
    y->status = status == 0 ? 0 : -1;
    if (loopq_post(y->q, sync_deliver, y) != 0)
        abort();
}

static void sync_wait(struct sync *y, uint64_t index)
{
    if (cons_wait_applied(atomic_load(&y->cl->cons), index, SYNC_TIMEOUT_MS, sync_applied, y) != 0)
        sync_applied(y, CONS_ENOMEM);
}

static void sync_answer(void *arg, int status, const Tern__RpcResponse *resp)
{
    struct sync *y = arg;
    if (status != 0 || resp->status != 0 || !resp->has_index)
        return sync_applied(y, CONS_EUNREACHABLE);
    sync_wait(y, resp->index);
}

int cluster_sync(struct cluster *cl, struct loopq *q, void (*done)(void *arg, int status),
                 void *arg)
{
    struct cons *c = atomic_load(&cl->cons);
    if (c == NULL)
        return -1;
    struct sync *y = calloc(1, sizeof *y);
    if (y == NULL)
        return -1;
    y->cl = cl;
    y->q = q;
    y->done = done;
    y->arg = arg;
    struct cons_status s;
    cons_status(c, &s);
    if (s.role == CONS_LEADER) { /* what it acknowledged is applied here already, or soon */
        if (s.applied_index >= s.commit_index) {
            free(y);
            return 1;
        }
        sync_wait(y, s.commit_index);
        return 0;
    }
    struct member_view *v = malloc(sizeof *v);
    const char *addr = NULL;
    if (v) {
        load_members(cl, v);
        addr = s.leader_id ? member_rpc(v, s.leader_id) : NULL;
    }
    Tern__RpcRequest req;
    tern__rpc_request__init(&req);
    req.op_case = TERN__RPC_REQUEST__OP_READ_INDEX;
    req.read_index = 1;
    if (addr == NULL || rpc_send(cl->rpc, addr, &req, SYNC_TIMEOUT_MS, sync_answer, y) != 0)
        sync_applied(y, CONS_EUNREACHABLE);
    free(v);
    return 0;
}

/* ---- bodies: replicate at delivery ---- */

/* One delivery's copies. Answers arrive on the RPC loop, failures to send on the caller's
 * thread, the verdict is delivered on the caller's loop: counts are under MU, and the
 * struct is freed by whoever drops the last of its references (one per send, one for the
 * starting call, one for the verdict). */
struct replicate {
    pthread_mutex_t mu;
    struct cluster *cl;
    struct loopq *q;
    cluster_body_cb *done;
    void *arg;
    unsigned need, have, outstanding, refs;
    bool answered;
    int status;
};

static void replicate_release(struct replicate *r)
{
    pthread_mutex_lock(&r->mu);
    bool last = --r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (last) {
        pthread_mutex_destroy(&r->mu);
        free(r);
    }
}

static void replicate_deliver(void *arg)
{
    struct replicate *r = arg;
    r->done(r->arg, r->status);
    replicate_release(r);
}

/* replicate_note(): one copy's outcome (OK or not); may decide the verdict. */
static void replicate_note(struct replicate *r, bool ok, bool is_send)
{
    pthread_mutex_lock(&r->mu);
    if (is_send)
        r->outstanding--;
    if (ok)
        r->have++;
    bool post = false;
    if (!r->answered && (r->have >= r->need || r->outstanding == 0)) {
        r->answered = true;
        r->status = r->have >= r->need ? 0 : -1;
        post = true;
    }
    pthread_mutex_unlock(&r->mu);
    if (post && loopq_post(r->q, replicate_deliver, r) != 0)
        abort();
}

static void put_answered(void *arg, int status, const Tern__RpcResponse *resp)
{
    struct replicate *r = arg;
    bool ok = status == 0 && resp->status == 0;
    if (!ok)
        log_warn("cluster.body_put_failed", "status=%d error=%s", status ? status : resp->status,
                 status == 0 && resp->error ? resp->error : "-");
    replicate_note(r, ok, true);
    replicate_release(r);
}

int cluster_body_replicate(struct cluster *cl, const uint8_t hash[32], const void *data, size_t len,
                           struct loopq *q, cluster_body_cb *done, void *arg)
{
    struct member_view *v = malloc(sizeof *v);
    struct replicate *r = calloc(1, sizeof *r);
    if (v == NULL || r == NULL) {
        free(v);
        free(r);
        return -1;
    }
    pthread_mutex_init(&r->mu, NULL);
    load_members(cl, v);
    uint64_t owners[PLACEMENT_MAX_NODES];
    unsigned rr = cl->cfg.replicas ? cl->cfg.replicas : 1;
    int n = placement_owners(v->nodes, v->n, hash, rr, owners);
    if (n <= 0) { /* cannot happen with a valid view: keep the local copy's word */
        owners[0] = cl->cfg.id;
        n = 1;
    }
    r->cl = cl;
    r->q = q;
    r->done = done;
    r->arg = arg;
    r->need = (unsigned) n / 2 + 1;
    unsigned remote = 0;
    for (int i = 0; i < n; i++) {
        if (owners[i] == cl->cfg.id)
            r->have++; /* the caller stored it here with fsync */
        else
            remote++;
    }
    r->outstanding = remote + 1; /* +1: this call, until every send is out */
    r->refs = remote + 2;        /* each send, this call, the verdict */
    Tern__BodyData bd = TERN__BODY_DATA__INIT;
    bd.hash.data = (uint8_t *) hash;
    bd.hash.len = 32;
    bd.data.data = (uint8_t *) data;
    bd.data.len = len;
    Tern__RpcRequest req;
    tern__rpc_request__init(&req);
    req.op_case = TERN__RPC_REQUEST__OP_BODY_PUT;
    req.body_put = &bd;
    for (int i = 0; i < n; i++) {
        if (owners[i] == cl->cfg.id)
            continue;
        const char *addr = member_rpc(v, owners[i]);
        if (addr == NULL || rpc_send(cl->rpc, addr, &req, BODY_TIMEOUT_MS, put_answered, r) != 0)
            put_answered(r, RPC_EUNREACHABLE, NULL);
    }
    free(v);
    replicate_note(r, false, true); /* every send is out */
    replicate_release(r);
    return 0;
}

/* ---- bodies: fetch what is missing here (RPC loop) ---- */

struct fetch {
    struct cluster *cl;
    struct loopq *q;
    cluster_body_cb *done;
    void *arg;
    uint8_t *hashes; /* the missing ones */
    size_t n, i;     /* working on hashes[i] */
    struct member_view view;
    uint64_t owners[PLACEMENT_MAX_NODES];
    int n_owners, next_owner;
    uv_work_t w;
    char *data;
    size_t len;
    int rv;
    int status;
};

static void fetch_next(struct fetch *f);

static void fetch_deliver(void *arg)
{
    struct fetch *f = arg;
    f->done(f->arg, f->status);
    free(f->hashes);
    free(f);
}

static void fetch_end(struct fetch *f, int status)
{
    f->status = status;
    if (loopq_post(f->q, fetch_deliver, f) != 0)
        abort();
}

static void fetch_store_work(uv_work_t *w)
{
    struct fetch *f = w->data;
    uint8_t got[32];
    f->rv = body_put(f->cl->db, f->data, f->len, got);
    if (f->rv == 0 && memcmp(got, f->hashes + 32 * f->i, 32) != 0)
        f->rv = -1;
}

static void fetch_stored(uv_work_t *w, int status)
{
    struct fetch *f = w->data;
    (void) status;
    free(f->data);
    f->data = NULL;
    if (f->rv != 0) { /* a bad copy: try the next owner */
        fetch_next(f);
        return;
    }
    f->i++;
    f->n_owners = -1;
    fetch_next(f);
}

static void fetch_got(void *arg, int status, const Tern__RpcResponse *resp)
{
    struct fetch *f = arg;
    if (status != 0 || resp->status != 0 || !resp->has_body)
        return fetch_next(f);
    f->len = resp->body.len;
    f->data = malloc(f->len ? f->len : 1);
    if (f->data == NULL)
        return fetch_end(f, -1);
    memcpy(f->data, resp->body.data, f->len);
    f->w.data = f;
    if (uv_queue_work(rpc_loop(f->cl->rpc), &f->w, fetch_store_work, fetch_stored) != 0) {
        free(f->data);
        fetch_end(f, -1);
    }
}

static void fetch_next(struct fetch *f)
{
    struct cluster *cl = f->cl;
    if (f->i >= f->n)
        return fetch_end(f, 0);
    const uint8_t *h = f->hashes + 32 * f->i;
    if (f->n_owners < 0) { /* a new hash: everyone, owners first */
        unsigned rr = cl->cfg.replicas ? cl->cfg.replicas : 1;
        int n = placement_owners(f->view.nodes, f->view.n, h, rr, f->owners);
        if (n < 0)
            n = 0;
        /* then the other members: a copy may still sit where placement used to be */
        for (size_t j = 0; j < f->view.n; j++) {
            bool have = false;
            for (int k = 0; k < n; k++)
                have |= f->owners[k] == f->view.id[j];
            if (!have)
                f->owners[n++] = f->view.id[j];
        }
        f->n_owners = n;
        f->next_owner = 0;
    }
    while (f->next_owner < f->n_owners && f->owners[f->next_owner] == cl->cfg.id)
        f->next_owner++;
    if (f->next_owner >= f->n_owners) {
        char hex[BODY_HEX_LEN];
        body_hash_hex(h, hex);
        log_error("cluster.body_missing", "hash=%s reason=no_member_has_it", hex);
        return fetch_end(f, -1);
    }
    uint64_t id = f->owners[f->next_owner++];
    const char *addr = member_rpc(&f->view, id);
    Tern__RpcRequest req;
    tern__rpc_request__init(&req);
    req.op_case = TERN__RPC_REQUEST__OP_BODY_GET;
    req.body_get.data = (uint8_t *) h;
    req.body_get.len = 32;
    if (addr == NULL || rpc_send(cl->rpc, addr, &req, BODY_TIMEOUT_MS, fetch_got, f) != 0)
        fetch_next(f); /* recursion depth bounded by the member count */
}

static void fetch_start(void *arg)
{
    struct fetch *f = arg;
    fetch_next(f);
}

int cluster_body_fetch(struct cluster *cl, const uint8_t *hashes, size_t n, struct loopq *q,
                       cluster_body_cb *done, void *arg)
{
    struct fetch *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    f->hashes = malloc(n ? 32 * n : 1);
    if (f->hashes == NULL) {
        free(f);
        return -1;
    }
    /* the callers found these missing; checking again here would read on their loop */
    memcpy(f->hashes, hashes, 32 * n);
    f->n = n;
    f->cl = cl;
    f->q = q;
    f->done = done;
    f->arg = arg;
    f->n_owners = -1;
    load_members(cl, &f->view);
    if (f->n == 0)
        fetch_end(f, 0);
    else if (loopq_post(rpc_loopq(cl->rpc), fetch_start, f) != 0) {
        free(f->hashes);
        free(f);
        return -1;
    }
    return 0;
}

/* ---- repair and GC: a background pass over this node's bodies (RPC loop) ----
 *
 * A pass reads REPAIR_BATCH bodies at a time in key order. For each body: its reference
 * count (replicated) and its owners (placement over the members). Referenced bodies are
 * offered to every other owner that lacks one (body_has, then body_put); a copy on a node
 * that is not an owner is deleted once every owner confirmed it has one. Unreferenced
 * bodies are deleted when they stayed unreferenced for gc_grace_ms (a delivery stores the
 * body before its Deliver commits, so "unreferenced" alone is not enough). */

struct repair_item {
    uint8_t hash[32];
    uint64_t refs;
    size_t size;
    int n_owners;
    uint64_t owners[8];
    bool owned;         /* this node is an owner */
    unsigned confirmed; /* other owners that have it */
    bool drop;          /* delete here at the end of the batch */
};

struct repair {
    struct cluster *cl;
    uv_work_t w;
    struct member_view view;
    struct repair_item items[REPAIR_BATCH];
    size_t n;
    uint64_t scan_ms; /* when this batch's reference counts were read (body_clock_ms) */
    bool pass_done;
    /* asking owners */
    size_t asks;
    /* pushing */
    size_t push_i;
    int push_o;
    char *data;
    size_t len;
};

static void repair_schedule(struct cluster *cl, unsigned ms);

static void scan_work(uv_work_t *w)
{
    struct repair *rp = w->data;
    struct cluster *cl = rp->cl;
    rp->scan_ms = body_clock_ms(); /* before any reference count is read */
    uint8_t lo[33];
    size_t lolen = 1;
    lo[0] = 'b';
    if (cl->repair_cursor_set) { /* resume at the last key seen, skipping it */
        memcpy(lo, cl->repair_cursor, 33);
        lolen = 33;
    }
    uint8_t hi[1] = {'c'};
    struct db_iter *it = db_iter_open(cl->db, DB_CF_BODIES, lo, lolen, hi, 1);
    rp->n = 0;
    for (; it && db_iter_valid(it) && rp->n < REPAIR_BATCH; db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        if (kl != 33 || (lolen == 33 && memcmp(k, lo, 33) == 0))
            continue;
        db_iter_value(it, &vl);
        struct repair_item *x = &rp->items[rp->n++];
        memset(x, 0, sizeof *x);
        memcpy(x->hash, k + 1, 32);
        x->size = vl;
        struct key rk;
        ks_bodyref(&rk, x->hash);
        uint64_t refs = 0;
        if (db_get_u64(cl->db, DB_CF_META, rk.buf, rk.len, &refs) != 1)
            refs = 0;
        x->refs = refs;
        unsigned rr = cl->cfg.replicas ? cl->cfg.replicas : 1;
        if (rr > 8)
            rr = 8;
        x->n_owners = placement_owners(rp->view.nodes, rp->view.n, x->hash, rr, x->owners);
        for (int j = 0; j < x->n_owners; j++)
            x->owned |= x->owners[j] == cl->cfg.id;
        memcpy(cl->repair_cursor, k, 33);
        cl->repair_cursor_set = true;
    }
    rp->pass_done = rp->n < REPAIR_BATCH;
    if (it)
        db_iter_close(it);
}

static bool gc_due(struct cluster *cl, const uint8_t hash[32], uint64_t now)
{
    for (size_t i = 0; i < cl->n_gc; i++)
        if (memcmp(cl->gc[i].hash, hash, 32) == 0)
            return now - cl->gc[i].since_ms >= cl->cfg.gc_grace_ms;
    if (cl->n_gc < GC_CANDIDATES_MAX) {
        struct gc_candidate *g = realloc(cl->gc, (cl->n_gc + 1) * sizeof *g);
        if (g) {
            cl->gc = g;
            memcpy(g[cl->n_gc].hash, hash, 32);
            g[cl->n_gc].since_ms = now;
            cl->n_gc++;
        }
    }
    return false;
}

static void gc_forget(struct cluster *cl, const uint8_t hash[32])
{
    for (size_t i = 0; i < cl->n_gc; i++)
        if (memcmp(cl->gc[i].hash, hash, 32) == 0) {
            cl->gc[i] = cl->gc[--cl->n_gc];
            return;
        }
}

/* A delivery stores its body, then replicates and proposes: its commit can come long
 * after the store (retries through a failover). An unreferenced body is kept if it was
 * stored within this long (at most gc_grace_ms) before the scan that found it so, since
 * the same bytes may be on their way to a reference (an identical APPEND). */
#define GC_STORE_MARGIN_MS 120000

static void delete_work(uv_work_t *w)
{
    struct repair *rp = w->data;
    uint64_t margin =
        rp->cl->cfg.gc_grace_ms < GC_STORE_MARGIN_MS ? rp->cl->cfg.gc_grace_ms : GC_STORE_MARGIN_MS;
    uint64_t since = rp->scan_ms > margin ? rp->scan_ms - margin : 0;
    for (size_t i = 0; i < rp->n; i++) {
        const struct repair_item *x = &rp->items[i];
        if (!x->drop)
            continue;
        /* referenced: a copy this node does not own, every owner has one */
        int rv = x->refs > 0 ? (body_delete(rp->cl->db, x->hash) == 0 ? 1 : -1)
                             : body_delete_if_idle(rp->cl->db, x->hash, since);
        if (rv == 1)
            atomic_fetch_add(&rp->cl->bodies_deleted, 1);
    }
}

static void batch_end(uv_work_t *w, int status)
{
    struct repair *rp = w->data;
    struct cluster *cl = rp->cl;
    (void) status;
    bool pass_done = rp->pass_done;
    /* a deleted body's grace starts afresh if the same bytes are stored again later (an
     * identical APPEND): an old candidate entry must not delete the new copy at once */
    for (size_t i = 0; i < rp->n; i++)
        if (rp->items[i].drop)
            gc_forget(cl, rp->items[i].hash);
    free(rp);
    if (cl->stopping) {
        cl->repair_running = false;
        return;
    }
    if (pass_done) {
        atomic_store(&cl->bodies, cl->pass_bodies);
        atomic_store(&cl->body_bytes, cl->pass_bytes);
        atomic_store(&cl->repair_pending, cl->pass_short);
        cl->pass_bodies = cl->pass_bytes = cl->pass_short = 0;
        cl->repair_cursor_set = false;
        cl->repair_running = false;
        repair_schedule(cl, cl->cfg.repair_interval_ms);
        return;
    }
    cl->repair_running = false;
    repair_schedule(cl, 1); /* the next batch at once */
}

static void batch_finish(struct repair *rp)
{
    struct cluster *cl = rp->cl;
    uint64_t now = now_ms();
    bool any = false;
    for (size_t i = 0; i < rp->n; i++) {
        struct repair_item *x = &rp->items[i];
        unsigned others = 0;
        for (int j = 0; j < x->n_owners; j++)
            others += x->owners[j] != cl->cfg.id;
        cl->pass_bodies++;
        cl->pass_bytes += x->size;
        if (x->refs == 0) {
            x->drop = gc_due(cl, x->hash, now);
        } else {
            gc_forget(cl, x->hash);
            if (x->confirmed < others)
                cl->pass_short++;
            /* not an owner: the copy goes once every owner has its own */
            x->drop = !x->owned && x->n_owners > 0 && x->confirmed >= others;
        }
        any |= x->drop;
    }
    rp->w.data = rp;
    if (!any || uv_queue_work(rpc_loop(cl->rpc), &rp->w, delete_work, batch_end) != 0)
        batch_end(&rp->w, 0);
}

static void push_next(struct repair *rp);

static void pushed(void *arg, int status, const Tern__RpcResponse *resp)
{
    struct repair *rp = arg;
    if (status == 0 && resp->status == 0) {
        rp->items[rp->push_i].confirmed++;
        atomic_fetch_add(&rp->cl->repair_copied, 1);
    }
    rp->push_o++;
    push_next(rp);
}

static void read_work(uv_work_t *w)
{
    struct repair *rp = w->data;
    free(rp->data);
    rp->data = NULL;
    if (body_get(rp->cl->db, rp->items[rp->push_i].hash, &rp->data, &rp->len) != 1)
        rp->data = NULL;
}

static void read_done(uv_work_t *w, int status);

/* the owners that lack items[push_i] were marked in the high bit of owners[] */
#define LACKS (UINT64_C(1) << 63)

static void push_next(struct repair *rp)
{
    struct cluster *cl = rp->cl;
    while (rp->push_i < rp->n && !cl->stopping) {
        struct repair_item *x = &rp->items[rp->push_i];
        while (rp->push_o < x->n_owners && !(x->owners[rp->push_o] & LACKS))
            rp->push_o++;
        if (rp->push_o >= x->n_owners || x->refs == 0) {
            rp->push_i++;
            rp->push_o = 0;
            free(rp->data);
            rp->data = NULL;
            continue;
        }
        if (rp->data == NULL) { /* read it once per body, off the loop */
            rp->w.data = rp;
            if (uv_queue_work(rpc_loop(cl->rpc), &rp->w, read_work, read_done) != 0)
                break;
            return;
        }
        uint64_t id = x->owners[rp->push_o] & ~LACKS;
        x->owners[rp->push_o] = id;
        const char *addr = member_rpc(&rp->view, id);
        Tern__BodyData bd = TERN__BODY_DATA__INIT;
        bd.hash.data = x->hash;
        bd.hash.len = 32;
        bd.data.data = (uint8_t *) rp->data;
        bd.data.len = rp->len;
        Tern__RpcRequest req;
        tern__rpc_request__init(&req);
        req.op_case = TERN__RPC_REQUEST__OP_BODY_PUT;
        req.body_put = &bd;
        if (addr && rpc_send(cl->rpc, addr, &req, BODY_TIMEOUT_MS, pushed, rp) == 0)
            return;
        rp->push_o++;
    }
    free(rp->data);
    rp->data = NULL;
    for (size_t i = 0; i < rp->n; i++) /* clear marks left by a stop */
        for (int j = 0; j < rp->items[i].n_owners; j++)
            rp->items[i].owners[j] &= ~LACKS;
    batch_finish(rp);
}

static void read_done(uv_work_t *w, int status)
{
    struct repair *rp = w->data;
    (void) status;
    if (rp->data == NULL) { /* gone meanwhile: nothing to push */
        struct repair_item *x = &rp->items[rp->push_i];
        for (int j = 0; j < x->n_owners; j++)
            x->owners[j] &= ~LACKS;
        rp->push_i++;
        rp->push_o = 0;
    }
    push_next(rp);
}

struct ask {
    struct repair *rp;
    uint64_t owner;
    size_t idx[REPAIR_BATCH]; /* which items were asked about */
    size_t n;
};

static void asked(void *arg, int status, const Tern__RpcResponse *resp)
{
    struct ask *a = arg;
    struct repair *rp = a->rp;
    bool ok = status == 0 && resp->status == 0 && resp->has_present && resp->present.len == a->n;
    for (size_t i = 0; i < a->n; i++) {
        struct repair_item *x = &rp->items[a->idx[i]];
        if (ok && resp->present.data[i]) {
            x->confirmed++;
        } else if (ok && x->refs > 0) {
            /* it lacks the body: mark it for a push (whoever holds a copy pushes) */
            for (int j = 0; j < x->n_owners; j++)
                if (x->owners[j] == a->owner)
                    x->owners[j] |= LACKS;
        }
    }
    free(a);
    if (--rp->asks == 0) {
        rp->push_i = 0;
        rp->push_o = 0;
        push_next(rp);
    }
}

static void scan_done(uv_work_t *w, int status)
{
    struct repair *rp = w->data;
    struct cluster *cl = rp->cl;
    (void) status;
    if (cl->stopping || rp->n == 0) {
        rp->pass_done = true;
        batch_end(&rp->w, 0);
        return;
    }
    /* one body_has per other member, naming the bodies it owns */
    rp->asks = 1;
    for (size_t m = 0; m < rp->view.n; m++) {
        uint64_t id = rp->view.id[m];
        if (id == cl->cfg.id)
            continue;
        struct ask *a = calloc(1, sizeof *a);
        uint8_t *hs = malloc(32 * REPAIR_BATCH);
        if (a == NULL || hs == NULL) {
            free(a);
            free(hs);
            continue;
        }
        a->rp = rp;
        a->owner = id;
        for (size_t i = 0; i < rp->n; i++) {
            struct repair_item *x = &rp->items[i];
            for (int j = 0; j < x->n_owners; j++)
                if (x->owners[j] == id) {
                    memcpy(hs + 32 * a->n, x->hash, 32);
                    a->idx[a->n++] = i;
                }
        }
        if (a->n == 0) {
            free(a);
            free(hs);
            continue;
        }
        Tern__RpcRequest req;
        tern__rpc_request__init(&req);
        req.op_case = TERN__RPC_REQUEST__OP_BODY_HAS;
        req.body_has.data = hs;
        req.body_has.len = 32 * a->n;
        rp->asks++;
        if (rpc_send(cl->rpc, rp->view.rpc[m], &req, BODY_TIMEOUT_MS, asked, a) != 0) {
            rp->asks--;
            free(a);
        }
        free(hs);
    }
    if (--rp->asks == 0) {
        rp->push_i = 0;
        rp->push_o = 0;
        push_next(rp);
    }
}

static void repair_tick(uv_timer_t *t)
{
    struct cluster *cl = t->data;
    if (cl->repair_running || cl->stopping || atomic_load(&cl->cons) == NULL)
        return;
    struct repair *rp = calloc(1, sizeof *rp);
    if (rp == NULL)
        return repair_schedule(cl, cl->cfg.repair_interval_ms);
    rp->cl = cl;
    load_members(cl, &rp->view);
    rp->w.data = rp;
    cl->repair_running = true;
    if (uv_queue_work(rpc_loop(cl->rpc), &rp->w, scan_work, scan_done) != 0) {
        cl->repair_running = false;
        free(rp);
        repair_schedule(cl, cl->cfg.repair_interval_ms);
    }
}

static void repair_schedule(struct cluster *cl, unsigned ms)
{
    if (!cl->stopping)
        uv_timer_start(&cl->repair_timer, repair_tick, ms ? ms : 1, 0);
}

/* ---- lifecycle ---- */

static void start_timers(void *arg)
{
    struct cluster *cl = arg;
    uv_timer_init(rpc_loop(cl->rpc), &cl->repair_timer);
    uv_timer_init(rpc_loop(cl->rpc), &cl->member_timer);
    cl->repair_timer.data = cl->member_timer.data = cl;
    uv_timer_start(&cl->member_timer, member_check, 200, MEMBER_CHECK_MS);
    /* the first pass soon: a restarted node repairs what it missed while down, and its
     * status shows real body counts, without waiting a whole interval */
    repair_schedule(cl, cl->cfg.repair_interval_ms < 2000 ? cl->cfg.repair_interval_ms : 2000);
}

static void stop_timers(void *arg)
{
    struct cluster *cl = arg;
    cl->stopping = true;
    uv_close((uv_handle_t *) &cl->repair_timer, NULL);
    uv_close((uv_handle_t *) &cl->member_timer, NULL);
}

int cluster_start(const struct cluster_config *cfg, const struct auth_key *key, struct db *db,
                  struct fsm *fsm, struct cluster **out, char *err, size_t errlen)
{
    struct cluster *cl = calloc(1, sizeof *cl);
    if (cl == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    cl->cfg = *cfg;
    cl->raft_address = xstrdup(cfg->raft_address);
    cl->rpc_address = xstrdup(cfg->rpc_address);
    cl->zone = xstrdup(cfg->zone);
    for (size_t i = 0; i < cfg->n_listen && i < CLUSTER_LISTEN_MAX; i++) {
        cl->listen_name[i] = xstrdup(cfg->listen_name[i]);
        cl->listen_addr[i] = xstrdup(cfg->listen_addr[i]);
    }
    cl->key = *key;
    cl->db = db;
    cl->fsm = fsm;
    struct rpc_config rc = {.id = cfg->id,
                            .address = cl->rpc_address,
                            .key = &cl->key,
                            .frame_max = cfg->frame_max,
                            .handler = rpc_handler,
                            .ctx = cl};
    if (rpc_start(&rc, &cl->rpc, err, errlen) != 0) {
        cluster_free(cl);
        return -1;
    }
    if (loopq_post(rpc_loopq(cl->rpc), start_timers, cl) != 0) {
        snprintf(err, errlen, "out of memory");
        cluster_free(cl);
        return -1;
    }
    *out = cl;
    return 0;
}

void cluster_attach(struct cluster *cl, struct cons *cons)
{
    atomic_store(&cl->cons, cons);
}

void cluster_stop(struct cluster *cl)
{
    if (cl == NULL || cl->rpc == NULL || cl->stopped)
        return;
    cl->stopped = true;
    if (loopq_post(rpc_loopq(cl->rpc), stop_timers, cl) != 0)
        abort(); /* the timers would fire on a closed loop */
    rpc_stop(cl->rpc);
}

void cluster_free(struct cluster *cl)
{
    if (cl == NULL)
        return;
    cluster_stop(cl);
    rpc_free(cl->rpc);
    free(cl->raft_address);
    free(cl->rpc_address);
    free(cl->zone);
    for (size_t i = 0; i < CLUSTER_LISTEN_MAX; i++) {
        free(cl->listen_name[i]);
        free(cl->listen_addr[i]);
    }
    free(cl->gc);
    free(cl);
}

char *cluster_metrics_text(struct cluster *cl)
{
    Tern__NodeStatus ns = TERN__NODE_STATUS__INIT;
    fill_status(cl, &ns);
    struct cons_status s;
    memset(&s, 0, sizeof s);
    struct cons *c = atomic_load(&cl->cons);
    if (c)
        cons_status(c, &s);
    char *out = NULL;
    size_t olen = 0;
    FILE *f = open_memstream(&out, &olen);
    if (f == NULL)
        return NULL;
    struct {
        const char *name, *type, *help;
        uint64_t v;
    } m[] = {
        {"tern_raft_term", "gauge", "current Raft term", ns.term},
        {"tern_raft_leader", "gauge", "1 when this node leads", s.role == CONS_LEADER},
        {"tern_raft_commit_index", "gauge", "highest committed log index known", ns.commit_index},
        {"tern_raft_applied_index", "gauge", "highest log index applied here", ns.applied_index},
        {"tern_raft_snapshots_total", "counter", "snapshots taken", s.snapshots_taken},
        {"tern_cluster_voters", "gauge", "voters in the Raft configuration", 0},
        {"tern_bodies", "gauge", "message bodies stored here (last repair pass)", ns.bodies},
        {"tern_body_bytes", "gauge", "bytes of message bodies here (last repair pass)",
         ns.body_bytes},
        {"tern_body_repair_copied_total", "counter", "body copies made by repair",
         ns.repair_copied},
        {"tern_body_repair_pending", "gauge", "bodies short of copies in the last pass",
         ns.repair_pending},
        {"tern_bodies_deleted_total", "counter", "unreferenced or misplaced bodies deleted",
         ns.bodies_deleted},
    };
    for (size_t i = 0; i < s.n_members; i++)
        m[5].v += s.members[i].role == CONS_VOTER;
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s{node=\"%" PRIu64 "\"} %" PRIu64 "\n", m[i].name,
                m[i].help, m[i].name, m[i].type, m[i].name, cl->cfg.id, m[i].v);
    fclose(f);
    return out;
}
