/*
 * node/admin.c
 * ternd's admin socket: one request at a time per connection, a verb table, replies as
 * key=value lines (see admin.h and proto/admin.proto).
 *
 * Lifetimes: a connection is reference-counted. Its read side holds one reference and
 * every pending operation (a proposal, a password hash in the thread pool) holds one, so
 * a client that hangs up mid-operation never leaves a completion pointing at freed
 * memory. The admin struct itself is freed when its listener and all connections closed.
 */
#include "admin.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "address.h"
#include "body_store.h"
#include "keyspace.h"
#include "admin.pb-c.h"
#include "cluster.h"
#include "command.h"
#include "frame.h"
#include "log.h"
#include "model.h"
#include "passwd.h"

struct admin {
    uv_loop_t *loop;
    uv_pipe_t listener;
    struct admin_deps deps;
    char *path;
    struct conn *conns;
    size_t nconns;
    bool stopping;
    bool listener_closed;
};

struct conn {
    struct admin *a;
    uv_pipe_t pipe;
    uint8_t *buf; /* received, not yet parsed */
    size_t len, cap;
    bool busy;   /* a request is being answered */
    bool closed; /* uv_close called */
    int refs;
    struct conn *next, *prev;
};

/* One request being answered. */
struct req {
    struct conn *c;
    Tern__AdminRequest *rq;
    char **lines;
    size_t nlines;
    /* for thread-pool work */
    uv_work_t work;
    char hash[PASSWD_HASH_MAX];
    int work_rv;
    uint64_t account_id;
    const struct verb *verb;
};

static void conn_unref(struct conn *c);
static void conn_process(struct conn *c);

/* ---- replies ---- */

/* val(): VALUE quoted when it holds a space, quote, '=', or a control byte. */
static const char *val(char *buf, size_t cap, const char *v)
{
    bool plain = true;
    for (const char *p = v; *p; p++)
        if ((unsigned char) *p <= ' ' || *p == '"' || *p == '=' || *p == 0x7f)
            plain = false;
    if (plain)
        return v;
    size_t o = 0;
    buf[o++] = '"';
    for (const unsigned char *p = (const unsigned char *) v; *p && o + 6 < cap; p++) {
        if (*p == '"' || *p == '\\')
            o += (size_t) snprintf(buf + o, cap - o, "\\%c", *p);
        else if (*p < ' ' || *p == 0x7f)
            o += (size_t) snprintf(buf + o, cap - o, "\\x%02x", *p);
        else
            buf[o++] = (char) *p;
    }
    buf[o++] = '"';
    buf[o] = 0;
    return buf;
}

static void add_line(struct req *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_line(struct req *r, const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    char **v = realloc(r->lines, (r->nlines + 1) * sizeof *v);
    if (v == NULL) {
        free(s);
        return;
    }
    r->lines = v;
    r->lines[r->nlines++] = s;
}

static void on_written(uv_write_t *w, int status)
{
    struct conn *c = w->data;
    free(w);
    c->busy = false;
    if (!c->closed)
        conn_process(c);
    conn_unref(c);
}

static void req_free(struct req *r)
{
    for (size_t i = 0; i < r->nlines; i++)
        free(r->lines[i]);
    free(r->lines);
    if (r->rq) {
        if (r->rq->has_password)
            OPENSSL_cleanse(r->rq->password.data, r->rq->password.len);
        tern__admin_request__free_unpacked(r->rq, NULL);
    }
    OPENSSL_cleanse(r->hash, sizeof r->hash);
    free(r);
}

/* reply(): sends the answer and ends R (frees it, drops its connection reference). */
static void reply(struct req *r, int status, const char *error)
{
    struct conn *c = r->c;
    if (!c->closed) {
        Tern__AdminResponse resp = TERN__ADMIN_RESPONSE__INIT;
        resp.status = status;
        resp.error = (char *) error;
        resp.n_lines = r->nlines;
        resp.lines = r->lines;
        size_t n = tern__admin_response__get_packed_size(&resp);
        uv_write_t *w = malloc(sizeof *w + FRAME_HDR + n);
        if (w != NULL) {
            uint8_t *p = (uint8_t *) (w + 1);
            frame_header(p, (uint32_t) n);
            tern__admin_response__pack(&resp, p + FRAME_HDR);
            uv_buf_t b = uv_buf_init((char *) p, (unsigned) (FRAME_HDR + n));
            w->data = c;
            c->refs++;
            if (uv_write(w, (uv_stream_t *) &c->pipe, &b, 1, on_written) != 0) {
                free(w);
                c->refs--;
                c->busy = false;
            }
        } else {
            c->busy = false;
        }
    }
    req_free(r);
    conn_unref(c);
}

static void reply_err(struct req *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reply_err(struct req *r, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    reply(r, status, msg);
}

/* ---- output of records ---- */

static void account_line(struct req *r, const Tern__AccountRec *a)
{
    add_line(r,
             "id=%" PRIu64 " address=%s quota_bytes=%" PRIu64 " quota_messages=%" PRIu64
             " used_bytes=%" PRIu64 " used_messages=%" PRIu64,
             a->id, a->address, a->quota_bytes, a->quota_messages, a->used_bytes, a->used_messages);
}

static int mailbox_line(void *ctx, const ProtobufCMessage *m)
{
    const Tern__MailboxRec *mb = (const Tern__MailboxRec *) m;
    char q[1100];
    add_line(ctx,
             "mailbox=%s id=%" PRIu64 " uidvalidity=%u uidnext=%u highestmodseq=%" PRIu64
             " messages=%" PRIu64 " special_use=%s subscribed=%d",
             val(q, sizeof q, mb->name), mb->id, mb->uidvalidity, mb->uidnext, mb->highestmodseq,
             mb->messages, mb->special_use ? mb->special_use : "", mb->subscribed ? 1 : 0);
    return 0;
}

/* ---- verbs ---- */

enum { V_PASSWORD = 1 };

typedef void verb_fn(struct req *r);
struct verb {
    const char *name;
    size_t min_args, max_args;
    int flags;
    verb_fn *fn;
};

static const char *arg(struct req *r, size_t i)
{
    return i < r->rq->n_args ? r->rq->args[i] : NULL;
}

static void h_status(struct req *r)
{
    struct cons_status s;
    cons_status(r->c->a->deps.cons, &s);
    static const char *roles[] = {"unavailable", "follower", "candidate", "leader"};
    /* the persisted applied index never goes back; whatever is applied was committed */
    uint64_t applied = fsm_applied_index(r->c->a->deps.fsm);
    if (s.applied_index > applied) /* configuration entries never reach the FSM */
        applied = s.applied_index;
    if (s.commit_index < applied)
        s.commit_index = applied;
    if (s.last_index < applied)
        s.last_index = applied;
    add_line(r,
             "node=%" PRIu64 " role=%s term=%" PRIu64 " commit=%" PRIu64 " applied=%" PRIu64
             " last=%" PRIu64 " leader=%" PRIu64 " snapshot_index=%" PRIu64,
             s.id, roles[s.role], s.term, s.commit_index, applied, s.last_index, s.leader_id,
             s.snapshot_index);
    reply(r, 0, NULL);
}

/* Writes: the command goes through Raft; ON_OK adds output lines from the result. */
typedef void ok_fn(struct req *r, const Tern__Result *res);

struct write_ctx {
    struct req *r;
    ok_fn *on_ok;
};

static void write_done(void *arg, int status, uint64_t index, const Tern__Result *res)
{
    struct write_ctx *w = arg;
    struct req *r = w->r;
    ok_fn *on_ok = w->on_ok;
    free(w);
    if (status != 0)
        return reply_err(r, 2, "not committed: %s", cons_strerror(status));
    if (res->status != 0)
        return reply(r, 1, res->error ? res->error : "refused");
    if (on_ok)
        on_ok(r, res);
    reply(r, 0, NULL);
}

static void propose(struct req *r, Tern__Command *cmd, ok_fn *on_ok)
{
    if (r->c->a->stopping)
        return reply(r, 2, "shutting down");
    struct write_ctx *w = malloc(sizeof *w);
    if (w == NULL)
        return reply(r, 2, "out of memory");
    w->r = r;
    w->on_ok = on_ok;
    struct admin_deps *d = &r->c->a->deps;
    if (command_propose(d->cons, d->q, cmd, write_done, w) != 0) {
        free(w);
        reply(r, 2, "cannot propose the command");
    }
}

static void h_domain_add(struct req *r)
{
    Tern__DomainAdd op = TERN__DOMAIN_ADD__INIT;
    op.name = (char *) arg(r, 0);
    Tern__Command cmd = TERN__COMMAND__INIT;
    cmd.op_case = TERN__COMMAND__OP_DOMAIN_ADD;
    cmd.domain_add = &op;
    propose(r, &cmd, NULL);
}

static void h_domain_del(struct req *r)
{
    Tern__DomainRemove op = TERN__DOMAIN_REMOVE__INIT;
    op.name = (char *) arg(r, 0);
    Tern__Command cmd = TERN__COMMAND__INIT;
    cmd.op_case = TERN__COMMAND__OP_DOMAIN_REMOVE;
    cmd.domain_remove = &op;
    propose(r, &cmd, NULL);
}

static int domain_line(void *ctx, const ProtobufCMessage *m)
{
    add_line(ctx, "domain=%s", ((const Tern__DomainRec *) m)->name);
    return 0;
}

static void h_domain_list(struct req *r)
{
    if (model_domains(r->c->a->deps.db, domain_line, r) < 0)
        return reply(r, 2, "storage error");
    reply(r, 0, NULL);
}

/* parse_count(): decimal with an optional k/m/g (x1024) suffix. */
static int parse_count(const char *s, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    uint64_t mul = 1;
    switch (*end) {
    case 'k':
    case 'K':
        mul = 1024ULL, end++;
        break;
    case 'm':
    case 'M':
        mul = 1024ULL * 1024, end++;
        break;
    case 'g':
    case 'G':
        mul = 1024ULL * 1024 * 1024, end++;
        break;
    }
    if (*end != 0 || (v && mul > UINT64_MAX / v))
        return -1;
    *out = v * mul;
    return 0;
}

static void user_added(struct req *r, const Tern__Result *res)
{
    struct addr a;
    if (addr_parse(arg(r, 0), &a) == 0)
        add_line(r, "id=%" PRIu64 " address=%s", res->id, a.full);
}

/* Password verbs hash (or verify) in the thread pool first. */
static void hash_work(uv_work_t *w)
{
    struct req *r = w->data;
    const Tern__AdminRequest *rq = r->rq;
    if (strcmp(r->verb->name, "user.verify") == 0) {
        r->work_rv = model_verify(r->c->a->deps.db, rq->args[0], (const char *) rq->password.data,
                                  rq->password.len, &r->account_id);
    } else {
        r->work_rv = passwd_hash((const char *) rq->password.data, rq->password.len, r->hash);
    }
}

static void after_hash(uv_work_t *w, int status)
{
    struct req *r = w->data;
    const char *name = r->verb->name;
    if (status != 0)
        return reply(r, 2, "cancelled");
    if (strcmp(name, "user.verify") == 0) {
        if (r->work_rv < 0)
            return reply(r, 2, "storage error");
        if (r->work_rv == 0)
            return reply(r, 1, "authentication failed");
        add_line(r, "ok");
        return reply(r, 0, NULL);
    }
    if (r->work_rv != 0)
        return reply(r, 1, "password refused (empty, too long, or contains a NUL byte)");
    Tern__Command cmd = TERN__COMMAND__INIT;
    if (strcmp(name, "user.add") == 0) {
        Tern__AccountAdd op = TERN__ACCOUNT_ADD__INIT;
        op.address = (char *) arg(r, 0);
        op.password_hash = r->hash;
        const struct config *cfg = r->c->a->deps.cfg;
        op.has_quota_bytes = op.has_quota_messages = 1;
        op.quota_bytes = config_size(cfg, "quota", "default_bytes");
        op.quota_messages = config_uint(cfg, "quota", "default_messages");
        for (size_t i = 1; i < r->rq->n_args; i++) {
            const char *a = arg(r, i);
            uint64_t v;
            if (strncmp(a, "quota_bytes=", 12) == 0 && parse_count(a + 12, &v) == 0)
                op.quota_bytes = v;
            else if (strncmp(a, "quota_messages=", 15) == 0 && parse_count(a + 15, &v) == 0)
                op.quota_messages = v;
            else
                return reply_err(r, 1, "unknown option (quota_bytes=N or quota_messages=N)");
        }
        cmd.op_case = TERN__COMMAND__OP_ACCOUNT_ADD;
        cmd.account_add = &op;
        cmd.account_hint = op.address;
        propose(r, &cmd, user_added);
    } else {
        Tern__AccountSetPassword op = TERN__ACCOUNT_SET_PASSWORD__INIT;
        op.address = (char *) arg(r, 0);
        op.password_hash = r->hash;
        cmd.op_case = TERN__COMMAND__OP_ACCOUNT_SET_PASSWORD;
        cmd.account_set_password = &op;
        cmd.account_hint = op.address;
        propose(r, &cmd, NULL);
    }
}

static void h_password(struct req *r)
{
    if (!r->rq->has_password || r->rq->password.len == 0)
        return reply(r, 1, "a password is required");
    r->work.data = r;
    if (uv_queue_work(r->c->a->loop, &r->work, hash_work, after_hash) != 0)
        reply(r, 2, "cannot queue work");
}

static void h_user_del(struct req *r)
{
    Tern__AccountRemove op = TERN__ACCOUNT_REMOVE__INIT;
    op.address = (char *) arg(r, 0);
    Tern__Command cmd = TERN__COMMAND__INIT;
    cmd.op_case = TERN__COMMAND__OP_ACCOUNT_REMOVE;
    cmd.account_remove = &op;
    cmd.account_hint = op.address;
    propose(r, &cmd, NULL);
}

static void h_user_quota(struct req *r)
{
    Tern__AccountSetQuota op = TERN__ACCOUNT_SET_QUOTA__INIT;
    op.address = (char *) arg(r, 0);
    if (parse_count(arg(r, 1), &op.quota_bytes) != 0)
        return reply(r, 1, "quota bytes: a number, optionally with k, m or g");
    op.has_quota_bytes = 1;
    if (arg(r, 2)) {
        if (parse_count(arg(r, 2), &op.quota_messages) != 0)
            return reply(r, 1, "quota messages: a number");
        op.has_quota_messages = 1;
    }
    Tern__Command cmd = TERN__COMMAND__INIT;
    cmd.op_case = TERN__COMMAND__OP_ACCOUNT_SET_QUOTA;
    cmd.account_set_quota = &op;
    cmd.account_hint = op.address;
    propose(r, &cmd, NULL);
}

static int account_each(void *ctx, const ProtobufCMessage *m)
{
    account_line(ctx, (const Tern__AccountRec *) m);
    return 0;
}

static void h_user_list(struct req *r)
{
    const char *dom = arg(r, 0);
    char d[ADDR_DOMAIN_MAX + 1];
    if (dom && addr_domain_normalize(dom, d) != 0)
        return reply(r, 1, "invalid domain name");
    if (model_accounts(r->c->a->deps.db, dom ? d : NULL, account_each, r) < 0)
        return reply(r, 2, "storage error");
    reply(r, 0, NULL);
}

static void h_user_show(struct req *r)
{
    Tern__AccountRec *a = NULL;
    struct db *db = r->c->a->deps.db;
    int rv = model_account_by_address(db, arg(r, 0), &a);
    if (rv < 0)
        return reply(r, 2, "storage error");
    if (rv == 0)
        return reply_err(r, 1, "no such account");
    account_line(r, a);
    rv = model_mailboxes(db, a->id, mailbox_line, r);
    tern__account_rec__free_unpacked(a, NULL);
    if (rv < 0)
        return reply(r, 2, "storage error");
    reply(r, 0, NULL);
}

static void h_alias_add(struct req *r)
{
    Tern__AliasAdd op = TERN__ALIAS_ADD__INIT;
    op.alias = (char *) arg(r, 0);
    /* targets: one comma-separated argument, or several arguments */
    char *targets[1000];
    size_t n = 0;
    char *copy = strdup(arg(r, 1));
    if (copy == NULL)
        return reply(r, 2, "out of memory");
    for (size_t i = 1; i < r->rq->n_args; i++) {
        char *src = i == 1 ? copy : r->rq->args[i];
        for (char *save = NULL, *t = strtok_r(src, ", ", &save); t && n < 1000;
             t = strtok_r(NULL, ", ", &save))
            targets[n++] = t;
    }
    op.targets = targets;
    op.n_targets = n;
    Tern__Command cmd = TERN__COMMAND__INIT;
    cmd.op_case = TERN__COMMAND__OP_ALIAS_ADD;
    cmd.alias_add = &op;
    propose(r, &cmd, NULL);
    free(copy); /* the command was packed by propose() */
}

static void h_alias_del(struct req *r)
{
    Tern__AliasRemove op = TERN__ALIAS_REMOVE__INIT;
    op.alias = (char *) arg(r, 0);
    Tern__Command cmd = TERN__COMMAND__INIT;
    cmd.op_case = TERN__COMMAND__OP_ALIAS_REMOVE;
    cmd.alias_remove = &op;
    propose(r, &cmd, NULL);
}

static int alias_each(void *ctx, const ProtobufCMessage *m)
{
    const Tern__AliasRec *a = (const Tern__AliasRec *) m;
    char t[4096];
    size_t o = 0;
    t[0] = 0;
    for (size_t i = 0; i < a->n_targets && o < sizeof t - 1; i++)
        o += (size_t) snprintf(t + o, sizeof t - o, "%s%s", i ? "," : "", a->targets[i]);
    add_line(ctx, "alias=%s targets=%s", a->alias, t);
    return 0;
}

static void h_alias_list(struct req *r)
{
    const char *dom = arg(r, 0);
    char d[ADDR_DOMAIN_MAX + 1];
    if (dom && addr_domain_normalize(dom, d) != 0)
        return reply(r, 1, "invalid domain name");
    if (model_aliases(r->c->a->deps.db, dom ? d : NULL, alias_each, r) < 0)
        return reply(r, 2, "storage error");
    reply(r, 0, NULL);
}

static void mailbox_created(struct req *r, const Tern__Result *res)
{
    add_line(r, "id=%" PRIu64, res->id);
}

static void h_mailbox_create(struct req *r)
{
    Tern__MailboxCreate op = TERN__MAILBOX_CREATE__INIT;
    op.account = (char *) arg(r, 0);
    op.name = (char *) arg(r, 1);
    op.special_use = (char *) arg(r, 2);
    Tern__Command cmd = TERN__COMMAND__INIT;
    cmd.op_case = TERN__COMMAND__OP_MAILBOX_CREATE;
    cmd.mailbox_create = &op;
    cmd.account_hint = op.account;
    propose(r, &cmd, mailbox_created);
}

static void h_mailbox_rename(struct req *r)
{
    Tern__MailboxRename op = TERN__MAILBOX_RENAME__INIT;
    op.account = (char *) arg(r, 0);
    op.from = (char *) arg(r, 1);
    op.to = (char *) arg(r, 2);
    Tern__Command cmd = TERN__COMMAND__INIT;
    cmd.op_case = TERN__COMMAND__OP_MAILBOX_RENAME;
    cmd.mailbox_rename = &op;
    cmd.account_hint = op.account;
    propose(r, &cmd, NULL);
}

static void h_mailbox_delete(struct req *r)
{
    Tern__MailboxDelete op = TERN__MAILBOX_DELETE__INIT;
    op.account = (char *) arg(r, 0);
    op.name = (char *) arg(r, 1);
    Tern__Command cmd = TERN__COMMAND__INIT;
    cmd.op_case = TERN__COMMAND__OP_MAILBOX_DELETE;
    cmd.mailbox_delete = &op;
    cmd.account_hint = op.account;
    propose(r, &cmd, NULL);
}

static void h_mailbox_subscribe(struct req *r)
{
    Tern__MailboxSubscribe op = TERN__MAILBOX_SUBSCRIBE__INIT;
    op.account = (char *) arg(r, 0);
    op.name = (char *) arg(r, 1);
    const char *v = arg(r, 2);
    if (strcmp(v, "on") == 0 || strcmp(v, "1") == 0 || strcmp(v, "yes") == 0)
        op.subscribed = 1;
    else if (strcmp(v, "off") == 0 || strcmp(v, "0") == 0 || strcmp(v, "no") == 0)
        op.subscribed = 0;
    else
        return reply(r, 1, "subscribe: on or off");
    Tern__Command cmd = TERN__COMMAND__INIT;
    cmd.op_case = TERN__COMMAND__OP_MAILBOX_SUBSCRIBE;
    cmd.mailbox_subscribe = &op;
    cmd.account_hint = op.account;
    propose(r, &cmd, NULL);
}

static void h_mailbox_list(struct req *r)
{
    Tern__AccountRec *a = NULL;
    struct db *db = r->c->a->deps.db;
    int rv = model_account_by_address(db, arg(r, 0), &a);
    if (rv < 0)
        return reply(r, 2, "storage error");
    if (rv == 0)
        return reply(r, 1, "no such account");
    rv = model_mailboxes(db, a->id, mailbox_line, r);
    tern__account_rec__free_unpacked(a, NULL);
    if (rv < 0)
        return reply(r, 2, "storage error");
    reply(r, 0, NULL);
}

/* message.list USER MAILBOX: the message index, one line per message */
static int message_line(void *ctx, const ProtobufCMessage *m)
{
    const Tern__MessageRec *msg = (const Tern__MessageRec *) m;
    char flags[1024] = "", hex[BODY_HEX_LEN] = "";
    size_t o = 0;
    for (size_t i = 0; i < msg->n_flags && o < sizeof flags - 1; i++)
        o += (size_t) snprintf(flags + o, sizeof flags - o, "%s%s", i ? "," : "", msg->flags[i]);
    if (msg->body_hash.len == BODY_HASH_LEN)
        body_hash_hex(msg->body_hash.data, hex);
    char q[1100], fq[1100];
    add_line(
        ctx,
        "uid=%u size=%" PRIu64 " modseq=%" PRIu64 " internal_date=%" PRIu64
        " flags=%s body=%s from=%s rcpt=%s",
        msg->uid, msg->size, msg->modseq, msg->internal_date, val(fq, sizeof fq, flags), hex,
        val(q, sizeof q, msg->envelope && msg->envelope->mail_from ? msg->envelope->mail_from : ""),
        msg->rcpt_to ? msg->rcpt_to : "");
    return 0;
}

/* mailbox_arg(): the mailbox USER NAME names, or a reply and NULL. */
static Tern__MailboxRec *mailbox_arg(struct req *r)
{
    struct db *db = r->c->a->deps.db;
    Tern__AccountRec *a = NULL;
    Tern__MailboxRec *m = NULL;
    int rv = model_account_by_address(db, arg(r, 0), &a);
    if (rv <= 0) {
        reply(r, rv < 0 ? 2 : 1, rv < 0 ? "storage error" : "no such account");
        return NULL;
    }
    rv = model_mailbox_by_name(db, a->id, arg(r, 1), &m);
    tern__account_rec__free_unpacked(a, NULL);
    if (rv <= 0) {
        reply(r, rv < 0 ? 2 : 1, rv < 0 ? "storage error" : "no such mailbox");
        return NULL;
    }
    return m;
}

static void h_message_list(struct req *r)
{
    Tern__MailboxRec *m = mailbox_arg(r);
    if (m == NULL)
        return;
    int rv = model_messages(r->c->a->deps.db, m->id, 1, UINT32_MAX, message_line, r);
    tern__mailbox_rec__free_unpacked(m, NULL);
    if (rv < 0)
        return reply(r, 2, "storage error");
    reply(r, 0, NULL);
}

/* message.show USER MAILBOX UID: the stored body, base64 in lines of 76 (ternctl decodes
 * it). Bounded so that one answer fits a frame. */
#define ADMIN_SHOW_MAX (700 * 1024)
static void h_message_show(struct req *r)
{
    char *end;
    unsigned long uid = strtoul(arg(r, 2), &end, 10);
    if (*end || uid == 0 || uid > UINT32_MAX)
        return reply(r, 1, "UID: a number");
    Tern__MailboxRec *m = mailbox_arg(r);
    if (m == NULL)
        return;
    struct db *db = r->c->a->deps.db;
    struct key k;
    ks_message(&k, m->id, (uint32_t) uid);
    tern__mailbox_rec__free_unpacked(m, NULL);
    char *v = NULL;
    size_t vl;
    int rv = db_get(db, DB_CF_META, k.buf, k.len, &v, &vl);
    if (rv <= 0)
        return reply(r, rv < 0 ? 2 : 1, rv < 0 ? "storage error" : "no such message");
    Tern__MessageRec *msg = tern__message_rec__unpack(NULL, vl, (const uint8_t *) v);
    free(v);
    if (msg == NULL || msg->body_hash.len != BODY_HASH_LEN) {
        if (msg)
            tern__message_rec__free_unpacked(msg, NULL);
        return reply(r, 2, "corrupt message record");
    }
    char *body = NULL;
    size_t blen = 0;
    rv = body_get(db, msg->body_hash.data, &body, &blen);
    tern__message_rec__free_unpacked(msg, NULL);
    if (rv <= 0)
        return reply(r, 2, rv < 0 ? "storage error" : "body missing on this node");
    if (blen > ADMIN_SHOW_MAX) {
        free(body);
        return reply(r, 1, "message too large to show here");
    }
    for (size_t off = 0; off < blen; off += 57) {
        size_t n = blen - off < 57 ? blen - off : 57;
        char b64[80];
        EVP_EncodeBlock((unsigned char *) b64, (const unsigned char *) body + off, (int) n);
        add_line(r, "%s", b64);
    }
    free(body);
    reply(r, 0, NULL);
}

static int queue_line(void *ctx, const ProtobufCMessage *m)
{
    const Tern__QueueRec *q = (const Tern__QueueRec *) m;
    char rcpts[4096] = "", hex[BODY_HEX_LEN] = "", fq[1100], rq[4200];
    size_t o = 0;
    for (size_t i = 0; i < q->n_recipients && o < sizeof rcpts - 1; i++)
        o += (size_t) snprintf(rcpts + o, sizeof rcpts - o, "%s%s", i ? "," : "",
                               q->recipients[i]->address);
    if (q->body_hash.len == BODY_HASH_LEN)
        body_hash_hex(q->body_hash.data, hex);
    add_line(
        ctx,
        "id=%" PRIu64 " size=%" PRIu64 " from=%s rcpts=%s created=%" PRIu64 " attempts=%u body=%s",
        q->id, q->size,
        val(fq, sizeof fq, q->envelope && q->envelope->mail_from ? q->envelope->mail_from : ""),
        val(rq, sizeof rq, rcpts), q->created, q->attempts, hex);
    return 0;
}

static void h_queue_list(struct req *r)
{
    if (model_queue(r->c->a->deps.db, queue_line, r) < 0)
        return reply(r, 2, "storage error");
    reply(r, 0, NULL);
}

/* ---- cluster ---- */

/* cluster_answered(): TEXT's lines become the reply (on the admin loop). */
static void cluster_answered(void *arg, int status, const char *text)
{
    struct req *r = arg;
    if (status != 0)
        return reply(r, status, text ? text : "failed");
    for (const char *p = text; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t) (nl - p) : strlen(p);
        if (n)
            add_line(r, "%.*s", (int) n, p);
        p += n + (nl ? 1 : 0);
    }
    reply(r, 0, NULL);
}

static void h_cluster_init(struct req *r)
{
    char *t = cluster_init_text(r->c->a->deps.cluster, r->c->a->deps.secret_path);
    if (t == NULL)
        return reply(r, 2, "out of memory");
    cluster_answered(r, 0, t);
    free(t);
}

static void h_cluster_members(struct req *r)
{
    char *t = cluster_members_text(r->c->a->deps.cluster);
    if (t == NULL)
        return reply(r, 2, "out of memory");
    cluster_answered(r, 0, t);
    free(t);
}

static void h_metrics(struct req *r)
{
    char *t = cluster_metrics_text(r->c->a->deps.cluster);
    if (t == NULL)
        return reply(r, 2, "out of memory");
    cluster_answered(r, 0, t);
    free(t);
}

static void h_cluster_status(struct req *r)
{
    if (cluster_status(r->c->a->deps.cluster, r->c->a->deps.q, cluster_answered, r) != 0)
        reply(r, 2, "out of memory");
}

static void h_cluster_join(struct req *r)
{
    char host[64];
    uint16_t port;
    if (config_parse_addr(arg(r, 0), host, sizeof host, &port) != 0)
        return reply(r, 1, "want the RPC address of a member, a.b.c.d:port");
    if (cluster_join(r->c->a->deps.cluster, arg(r, 0), r->c->a->deps.q, cluster_answered, r) != 0)
        reply(r, 2, "out of memory");
}

static int id_arg(struct req *r, size_t i, uint64_t *id)
{
    const char *a = arg(r, i);
    char *end;
    if (a == NULL) {
        *id = 0;
        return 0;
    }
    errno = 0;
    unsigned long long v = strtoull(a, &end, 10);
    if (errno || end == a || *end || a[0] == '-')
        return -1;
    *id = v;
    return 0;
}

static void h_cluster_remove(struct req *r)
{
    uint64_t id;
    if (id_arg(r, 0, &id) != 0 || id == 0)
        return reply(r, 1, "want a node id");
    if (cluster_remove(r->c->a->deps.cluster, id, r->c->a->deps.q, cluster_answered, r) != 0)
        reply(r, 2, "out of memory");
}

static void h_cluster_transfer(struct req *r)
{
    uint64_t id;
    if (id_arg(r, 0, &id) != 0)
        return reply(r, 1, "want a node id");
    if (cluster_transfer(r->c->a->deps.cluster, id, r->c->a->deps.q, cluster_answered, r) != 0)
        reply(r, 2, "out of memory");
}

static const struct verb verbs[] = {
    {"metrics", 0, 0, 0, h_metrics},
    {"cluster.init", 0, 0, 0, h_cluster_init},
    {"cluster.members", 0, 0, 0, h_cluster_members},
    {"cluster.status", 0, 0, 0, h_cluster_status},
    {"cluster.join", 1, 1, 0, h_cluster_join},
    {"cluster.remove", 1, 1, 0, h_cluster_remove},
    {"cluster.transfer", 0, 1, 0, h_cluster_transfer},
    {"queue.list", 0, 0, 0, h_queue_list},
    {"message.list", 2, 2, 0, h_message_list},
    {"message.show", 3, 3, 0, h_message_show},
    {"status", 0, 0, 0, h_status},
    {"domain.add", 1, 1, 0, h_domain_add},
    {"domain.del", 1, 1, 0, h_domain_del},
    {"domain.list", 0, 0, 0, h_domain_list},
    {"user.add", 1, 3, V_PASSWORD, h_password},
    {"user.passwd", 1, 1, V_PASSWORD, h_password},
    {"user.verify", 1, 1, V_PASSWORD, h_password},
    {"user.del", 1, 1, 0, h_user_del},
    {"user.quota", 2, 3, 0, h_user_quota},
    {"user.list", 0, 1, 0, h_user_list},
    {"user.show", 1, 1, 0, h_user_show},
    {"alias.add", 2, ADMIN_ARGS_MAX, 0, h_alias_add},
    {"alias.del", 1, 1, 0, h_alias_del},
    {"alias.list", 0, 1, 0, h_alias_list},
    {"mailbox.create", 2, 3, 0, h_mailbox_create},
    {"mailbox.rename", 3, 3, 0, h_mailbox_rename},
    {"mailbox.delete", 2, 2, 0, h_mailbox_delete},
    {"mailbox.subscribe", 3, 3, 0, h_mailbox_subscribe},
    {"mailbox.list", 1, 1, 0, h_mailbox_list},
};

/* dispatch(): takes ownership of RQ. */
static void dispatch(struct conn *c, Tern__AdminRequest *rq)
{
    struct req *r = calloc(1, sizeof *r);
    if (r == NULL) {
        tern__admin_request__free_unpacked(rq, NULL);
        return;
    }
    r->c = c;
    r->rq = rq;
    c->refs++;
    c->busy = true;
    if (rq->n_args > ADMIN_ARGS_MAX)
        return reply(r, 1, "too many arguments");
    for (size_t i = 0; i < rq->n_args; i++)
        if (strlen(rq->args[i]) > ADMIN_ARG_MAX)
            return reply(r, 1, "argument too long");
    if (rq->has_password && rq->password.len > PASSWD_MAX)
        return reply(r, 1, "password too long");
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        const struct verb *v = &verbs[i];
        if (strcmp(v->name, rq->verb) != 0)
            continue;
        if (rq->n_args < v->min_args || rq->n_args > v->max_args)
            return reply_err(r, 1, "%s takes %zu to %zu arguments", v->name, v->min_args,
                             v->max_args);
        r->verb = v;
        char q[LOG_Q_MAX];
        log_info("admin.request", "verb=%s arg0=%s", v->name,
                 log_q(q, rq->n_args ? rq->args[0] : ""));
        v->fn(r);
        return;
    }
    char q[LOG_Q_MAX];
    reply_err(r, 1, "unknown command: %s", log_q(q, rq->verb));
}

/* ---- connections ---- */

static void conn_free(struct conn *c)
{
    struct admin *a = c->a;
    if (c->prev)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    a->nconns--;
    free(c->buf);
    free(c);
    if (a->listener_closed && a->nconns == 0) {
        free(a->path);
        free(a);
    }
}

static void conn_unref(struct conn *c)
{
    if (--c->refs == 0)
        conn_free(c);
}

static void on_conn_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

static void conn_close(struct conn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    uv_close((uv_handle_t *) &c->pipe, on_conn_closed);
}

/* conn_process(): answers the next complete frame, unless one is being answered. */
static void conn_process(struct conn *c)
{
    if (c->busy || c->closed)
        return;
    const uint8_t *payload;
    long n = frame_parse(c->buf, c->len, FRAME_ADMIN_MAX, &payload);
    if (n == -1)
        return;
    if (n == -2) {
        log_warn("admin.bad_frame", "reason=too_big");
        return conn_close(c);
    }
    Tern__AdminRequest *rq = tern__admin_request__unpack(NULL, (size_t) n, payload);
    size_t used = FRAME_HDR + (size_t) n;
    memmove(c->buf, c->buf + used, c->len - used);
    c->len -= used;
    if (rq == NULL) {
        log_warn("admin.bad_frame", "reason=undecodable bytes=%ld", n);
        return conn_close(c);
    }
    dispatch(c, rq);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct conn *c = h->data;
    size_t want = c->len + 64 * 1024;
    if (want > FRAME_HDR + FRAME_ADMIN_MAX)
        want = FRAME_HDR + FRAME_ADMIN_MAX;
    if (c->cap < want) {
        uint8_t *p = realloc(c->buf, want);
        if (p) {
            c->buf = p;
            c->cap = want;
        }
    }
    *b = uv_buf_init((char *) c->buf + c->len, (unsigned) (c->cap - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct conn *c = s->data;
    if (n < 0)
        return conn_close(c);
    /* a full buffer gives libuv no room and ends in UV_ENOBUFS above: a peer that
     * pipelines more than one maximal frame while we answer is disconnected */
    c->len += (size_t) n;
    conn_process(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct admin *a = server->data;
    if (status < 0 || a->stopping)
        return;
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return;
    c->a = a;
    c->refs = 1; /* the handle's */
    uv_pipe_init(a->loop, &c->pipe, 0);
    c->pipe.data = c;
    c->next = a->conns;
    if (a->conns)
        a->conns->prev = c;
    a->conns = c;
    a->nconns++;
    if (uv_accept(server, (uv_stream_t *) &c->pipe) != 0 || a->nconns > ADMIN_CONNS_MAX) {
        conn_close(c);
        return;
    }
    uv_read_start((uv_stream_t *) &c->pipe, on_alloc, on_read);
}

int admin_start(uv_loop_t *loop, const char *path, const struct admin_deps *deps,
                struct admin **out, char *err, size_t errlen)
{
    struct admin *a = calloc(1, sizeof *a);
    if (a == NULL || (a->path = strdup(path)) == NULL) {
        free(a);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    a->loop = loop;
    a->deps = *deps;
    uv_pipe_init(loop, &a->listener, 0);
    a->listener.data = a;
    unlink(path); /* a stale socket of a previous run: the data dir lock is ours */
    mode_t old = umask(0077);
    int rv = uv_pipe_bind(&a->listener, path);
    umask(old);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *) &a->listener, 16, on_connection);
    if (rv != 0) {
        snprintf(err, errlen, "admin socket %s: %s", path, uv_strerror(rv));
        uv_close((uv_handle_t *) &a->listener, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        free(a->path);
        free(a);
        return -1;
    }
    chmod(path, 0600);
    *out = a;
    return 0;
}

static void on_listener_closed(uv_handle_t *h)
{
    struct admin *a = h->data;
    a->listener_closed = true;
    if (a->nconns == 0) {
        free(a->path);
        free(a);
    }
}

void admin_stop(struct admin *a)
{
    if (a == NULL)
        return;
    a->stopping = true;
    for (struct conn *c = a->conns; c; c = c->next)
        conn_close(c);
    unlink(a->path);
    uv_close((uv_handle_t *) &a->listener, on_listener_closed);
}
