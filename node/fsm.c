/*
 * node/fsm.c
 * The state machine behind Raft: one Command in, one WriteBatch out (see fsm.h).
 *
 * Every handler reads the state committed by earlier commands (RocksDB) and records its
 * changes in a transaction (struct tx): a write batch plus small caches of the records
 * it changed, so that a command that touches one mailbox twice sees its own changes.
 * tx_commit() adds the request record and the applied index and writes the batch.
 * A storage failure while applying is fatal (abort): a replica that cannot persist what
 * the log says must stop rather than diverge; Raft replays the entry after a restart.
 */
#include "fsm.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <raft.h>

#include "address.h"
#include "keyspace.h"
#include "log.h"
#include "model.h"
#include "tern.pb-c.h"

#define TX_CACHE_MAX 256 /* records one command may change */
#define MAILBOX_NAME_MAX 512
#define SNAP_REC_MAX (16 * 1024 * 1024) /* one key or value in a snapshot */

static const struct {
    const char *name;
    const char *special_use;
} default_mailboxes[] = {
    {"INBOX", ""},     {"Sent", "\\Sent"}, {"Drafts", "\\Drafts"},
    {"Trash", "\\Trash"}, {"Junk", "\\Junk"}, {"Archive", "\\Archive"},
};

struct fsm {
    struct db *db;
    rocksdb_column_family_handle_t *cf;
    _Atomic uint64_t applied;
    fsm_event_cb *event_cb;
    void *event_ctx;
};

/* A record changed by the current command, written at commit. */
enum { C_ACCOUNT, C_MAILBOX };

struct cached {
    int kind; /* C_ACCOUNT or C_MAILBOX */
    uint64_t id;
    ProtobufCMessage *msg; /* unpacked (protobuf-c allocator) or built by us */
    bool built;            /* built by us: free with free_built_* */
    bool deleted;
};

struct tx {
    struct fsm *f;
    rocksdb_writebatch_t *b;
    uint64_t index;
    uint64_t now_s; /* the command's time, seconds */
    Tern__Result *res;
    struct cached cache[TX_CACHE_MAX];
    size_t ncache;
    struct fsm_event *events;
    size_t nevents, capevents;
};

/* ---- small helpers ---- */

static void put_raw(struct tx *t, const struct key *k, const void *v, size_t vlen)
{
    rocksdb_writebatch_put_cf(t->b, t->f->cf, (const char *) k->buf, k->len, v, vlen);
}

static void put_u64(struct tx *t, const struct key *k, uint64_t v)
{
    uint8_t b[8];
    be64_put(b, v);
    put_raw(t, k, b, 8);
}

static void del_key(struct tx *t, const struct key *k)
{
    rocksdb_writebatch_delete_cf(t->b, t->f->cf, (const char *) k->buf, k->len);
}

static void put_msg(struct tx *t, const struct key *k, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf == NULL)
        abort(); /* apply cannot fail half-way; see the file comment */
    protobuf_c_message_pack(m, buf);
    put_raw(t, k, buf, n);
    free(buf);
}

static void fatal_storage(const char *what)
{
    log_event(LOG_FATAL, "fsm.storage_error", "what=%s", what);
    abort();
}

/* get_u64(): value of K or 0 when absent. */
static uint64_t get_u64(struct tx *t, const struct key *k)
{
    uint64_t v = 0;
    if (db_get_u64(t->f->db, DB_CF_META, k->buf, k->len, &v) < 0)
        fatal_storage("get_u64");
    return v;
}

static bool exists(struct tx *t, const struct key *k)
{
    char *v = NULL;
    size_t n;
    int rv = db_get(t->f->db, DB_CF_META, k->buf, k->len, &v, &n);
    if (rv < 0)
        fatal_storage("exists");
    free(v);
    return rv == 1;
}

/* get_msg(): unpacked record at K, or NULL when absent (corrupt records are fatal). */
static ProtobufCMessage *get_msg(struct tx *t, const struct key *k,
                                 const ProtobufCMessageDescriptor *d)
{
    char *v = NULL;
    size_t n;
    int rv = db_get(t->f->db, DB_CF_META, k->buf, k->len, &v, &n);
    if (rv < 0)
        fatal_storage("get_msg");
    if (rv == 0)
        return NULL;
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, n, (const uint8_t *) v);
    free(v);
    if (m == NULL)
        fatal_storage("corrupt record");
    return m;
}

static void set_result(struct tx *t, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_result(struct tx *t, int status, const char *fmt, ...)
{
    t->res->status = status;
    if (fmt) {
        char buf[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        free(t->res->error);
        t->res->error = strdup(buf);
        if (t->res->error == NULL)
            abort();
    }
}

static void emit(struct tx *t, const struct fsm_event *ev)
{
    if (t->nevents == t->capevents) {
        size_t cap = t->capevents ? 2 * t->capevents : 16;
        struct fsm_event *e = realloc(t->events, cap * sizeof *e);
        if (e == NULL)
            abort();
        t->events = e;
        t->capevents = cap;
    }
    t->events[t->nevents] = *ev;
    t->events[t->nevents].index = t->index;
    t->nevents++;
}

/* ---- cached records ---- */

static struct cached *cache_find(struct tx *t, int kind, uint64_t id)
{
    for (size_t i = 0; i < t->ncache; i++)
        if (t->cache[i].kind == kind && t->cache[i].id == id)
            return &t->cache[i];
    return NULL;
}

static struct cached *cache_add(struct tx *t, int kind, uint64_t id, ProtobufCMessage *m,
                                bool built)
{
    if (t->ncache == TX_CACHE_MAX)
        return NULL;
    struct cached *c = &t->cache[t->ncache++];
    c->kind = kind;
    c->id = id;
    c->msg = m;
    c->built = built;
    c->deleted = false;
    return c;
}

/* account(): the account record with ID, loaded once per command; NULL if absent. */
static Tern__AccountRec *account(struct tx *t, uint64_t id)
{
    struct cached *c = cache_find(t, C_ACCOUNT, id);
    if (c)
        return c->deleted ? NULL : (Tern__AccountRec *) c->msg;
    struct key k;
    ks_account(&k, id);
    ProtobufCMessage *m = get_msg(t, &k, &tern__account_rec__descriptor);
    if (m == NULL)
        return NULL;
    if (cache_add(t, C_ACCOUNT, id, m, false) == NULL) {
        protobuf_c_message_free_unpacked(m, NULL);
        return NULL;
    }
    return (Tern__AccountRec *) m;
}

static Tern__MailboxRec *mailbox(struct tx *t, uint64_t id)
{
    struct cached *c = cache_find(t, C_MAILBOX, id);
    if (c)
        return c->deleted ? NULL : (Tern__MailboxRec *) c->msg;
    struct key k;
    ks_mailbox(&k, id);
    ProtobufCMessage *m = get_msg(t, &k, &tern__mailbox_rec__descriptor);
    if (m == NULL)
        return NULL;
    if (cache_add(t, C_MAILBOX, id, m, false) == NULL) {
        protobuf_c_message_free_unpacked(m, NULL);
        return NULL;
    }
    return (Tern__MailboxRec *) m;
}

static void cache_delete(struct tx *t, int kind, uint64_t id)
{
    struct cached *c = cache_find(t, kind, id);
    if (c)
        c->deleted = true;
}

static void free_built(struct cached *c)
{
    if (c->kind == C_MAILBOX) {
        Tern__MailboxRec *m = (Tern__MailboxRec *) c->msg;
        free(m->name);
        free(m->special_use);
    }
    free(c->msg);
}

static void cache_flush(struct tx *t)
{
    for (size_t i = 0; i < t->ncache; i++) {
        struct cached *c = &t->cache[i];
        struct key k;
        if (c->kind == C_ACCOUNT)
            ks_account(&k, c->id);
        else
            ks_mailbox(&k, c->id);
        if (c->deleted)
            del_key(t, &k);
        else
            put_msg(t, &k, c->msg);
    }
}

static void cache_free(struct tx *t)
{
    for (size_t i = 0; i < t->ncache; i++) {
        if (t->cache[i].built)
            free_built(&t->cache[i]);
        else
            protobuf_c_message_free_unpacked(t->cache[i].msg, NULL);
    }
    t->ncache = 0;
}

/* ---- lookups ---- */

static uint64_t account_id_by_addr(struct tx *t, const struct addr *a)
{
    struct key k;
    ks_addr(&k, KS_ADDRESS, a->domain, a->local);
    return get_u64(t, &k);
}

/* account_arg(): resolves an address argument; sets the result and returns 0 on error. */
static uint64_t account_arg(struct tx *t, const char *address, struct addr *a)
{
    if (addr_parse(address, a) != 0) {
        set_result(t, RESULT_INVALID, "invalid address");
        return 0;
    }
    uint64_t id = account_id_by_addr(t, a);
    if (id == 0 || account(t, id) == NULL) {
        set_result(t, RESULT_NOTFOUND, "no such account: %s", a->full);
        return 0;
    }
    return id;
}

static bool domain_exists(struct tx *t, const char *domain)
{
    struct key k;
    ks_domain(&k, domain);
    return exists(t, &k);
}

static uint64_t mailbox_id_by_name(struct tx *t, uint64_t account_id, const char *name)
{
    struct key k;
    ks_mboxname(&k, account_id, name);
    if (!key_ok(&k))
        return 0;
    return get_u64(t, &k);
}

/*
 * mailbox_name_normalize(): checks a mailbox name (separator "/") and writes it with
 * "INBOX" in any case folded to "INBOX". Refuses empty names, empty levels, control
 * bytes, '*' and '%' (LIST wildcards) and names over MAILBOX_NAME_MAX.
 */
static int mailbox_name_normalize(const char *in, char out[MAILBOX_NAME_MAX + 1])
{
    size_t n = strnlen(in, MAILBOX_NAME_MAX + 1);
    if (n == 0 || n > MAILBOX_NAME_MAX || in[0] == '/' || in[n - 1] == '/')
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char) in[i];
        if (ch < 0x20 || ch == 0x7f || ch == '*' || ch == '%')
            return -1;
        if (ch == '/' && in[i + 1] == '/')
            return -1;
    }
    if (strncasecmp(in, "INBOX", 5) == 0 && (in[5] == 0 || in[5] == '/')) {
        memcpy(out, "INBOX", 5);
        memcpy(out + 5, in + 5, n - 5 + 1);
    } else {
        memcpy(out, in, n + 1);
    }
    return 0;
}

/* ---- mailboxes ---- */

static uint64_t next_uidvalidity(struct tx *t)
{
    struct key k;
    ks_counter(&k, KS_CTR_UIDVALIDITY);
    uint64_t last = get_u64(t, &k);
    /* mailboxes created earlier in this command hold newer values than the store */
    for (size_t i = 0; i < t->ncache; i++)
        if (t->cache[i].kind == C_MAILBOX && t->cache[i].built) {
            Tern__MailboxRec *m = (Tern__MailboxRec *) t->cache[i].msg;
            if (m->uidvalidity > last)
                last = m->uidvalidity;
        }
    uint64_t v = t->now_s > last ? t->now_s : last + 1;
    if (v > UINT32_MAX || v == 0)
        v = 1; /* after 2106: wraps; never reached in practice */
    put_u64(t, &k, v);
    return v;
}

static uint64_t next_id(struct tx *t, const char *counter, uint64_t *running)
{
    struct key k;
    ks_counter(&k, counter);
    if (*running == 0)
        *running = get_u64(t, &k);
    (*running)++;
    put_u64(t, &k, *running);
    return *running;
}

/* mailbox_new(): creates NAME (normalised) for ACCOUNT; returns its id or 0. */
static uint64_t mailbox_new(struct tx *t, uint64_t account_id, const char *name,
                            const char *special_use, uint64_t *mbox_ctr)
{
    Tern__MailboxRec *m = malloc(sizeof *m);
    if (m == NULL)
        abort();
    tern__mailbox_rec__init(m);
    m->id = next_id(t, KS_CTR_MAILBOX, mbox_ctr);
    m->account_id = account_id;
    m->name = strdup(name);
    m->special_use = strdup(special_use ? special_use : "");
    if (!m->name || !m->special_use)
        abort();
    m->uidvalidity = (uint32_t) next_uidvalidity(t);
    m->uidnext = 1;
    m->highestmodseq = 1;
    m->has_subscribed = true;
    m->subscribed = true;
    m->has_messages = m->has_bytes = m->has_unseen = true;
    if (cache_add(t, C_MAILBOX, m->id, (ProtobufCMessage *) m, true) == NULL) {
        free(m->name);
        free(m->special_use);
        free(m);
        set_result(t, RESULT_INVALID, "too many changes in one command");
        return 0;
    }
    struct key k;
    ks_mboxname(&k, account_id, name);
    put_u64(t, &k, m->id);
    struct fsm_event ev = {.type = FSM_EV_MAILBOX, .account_id = account_id, .mailbox_id = m->id};
    emit(t, &ev);
    return m->id;
}

/* Body reference changes of one command, summed per hash before they are written. */
struct refdelta {
    uint8_t hash[32];
    int64_t delta;
};
struct refdeltas {
    struct refdelta *v;
    size_t n, cap;
};

static void refdelta_add(struct refdeltas *d, const uint8_t *hash, int64_t delta)
{
    for (size_t i = 0; i < d->n; i++)
        if (memcmp(d->v[i].hash, hash, 32) == 0) {
            d->v[i].delta += delta;
            return;
        }
    if (d->n == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 8;
        struct refdelta *v = realloc(d->v, cap * sizeof *v);
        if (v == NULL)
            abort();
        d->v = v;
        d->cap = cap;
    }
    memcpy(d->v[d->n].hash, hash, 32);
    d->v[d->n].delta = delta;
    d->n++;
}

/* refdelta_write(): applies the summed deltas; a count reaching 0 is deleted and
 * announced (its owners delete the body after a grace period: a later concern). */
static void refdelta_write(struct tx *t, struct refdeltas *d)
{
    for (size_t i = 0; i < d->n; i++) {
        if (d->v[i].delta == 0)
            continue;
        struct key k;
        ks_bodyref(&k, d->v[i].hash);
        int64_t refs = (int64_t) get_u64(t, &k) + d->v[i].delta;
        if (refs <= 0) {
            del_key(t, &k);
            struct fsm_event ev = {.type = FSM_EV_BODY_UNUSED, .hash = d->v[i].hash};
            emit(t, &ev);
        } else {
            put_u64(t, &k, (uint64_t) refs);
        }
    }
}

static bool has_flag(const Tern__MessageRec *m, const char *flag)
{
    for (size_t i = 0; i < m->n_flags; i++)
        if (strcasecmp(m->flags[i], flag) == 0)
            return true;
    return false;
}

/* mailbox_purge(): deletes every message of mailbox M (index entries, counts, usage),
 * collecting body reference drops in D. */
static void mailbox_purge(struct tx *t, Tern__MailboxRec *m, Tern__AccountRec *acct,
                          struct refdeltas *d)
{
    struct key lo, hi;
    ks_message(&lo, m->id, 0);
    key_init(&hi, KS_MESSAGE);
    key_u64(&hi, m->id);
    key_successor(&hi);
    struct db_iter *it = db_iter_open(t->f->db, DB_CF_META, lo.buf, lo.len, hi.buf, hi.len);
    if (it == NULL)
        fatal_storage("iter");
    for (; db_iter_valid(it); db_iter_next(it)) {
        size_t kl, vl;
        const char *kp = db_iter_key(it, &kl);
        const char *vp = db_iter_value(it, &vl);
        Tern__MessageRec *msg = tern__message_rec__unpack(NULL, vl, (const uint8_t *) vp);
        if (msg == NULL || msg->body_hash.len != 32)
            fatal_storage("corrupt message record");
        refdelta_add(d, msg->body_hash.data, -1);
        if (acct) {
            acct->used_bytes = acct->used_bytes > msg->size ? acct->used_bytes - msg->size : 0;
            acct->used_messages = acct->used_messages ? acct->used_messages - 1 : 0;
        }
        tern__message_rec__free_unpacked(msg, NULL);
        rocksdb_writebatch_delete_cf(t->b, t->f->cf, kp, kl);
    }
    if (db_iter_close(it) != 0)
        fatal_storage("iter");
    m->messages = m->bytes = m->unseen = 0;
}

/* ---- handlers: domains ---- */

static void op_domain_add(struct tx *t, const Tern__DomainAdd *op)
{
    char d[ADDR_DOMAIN_MAX + 1];
    if (addr_domain_normalize(op->name, d) != 0)
        return set_result(t, RESULT_INVALID, "invalid domain name");
    struct key k;
    ks_domain(&k, d);
    if (exists(t, &k))
        return set_result(t, RESULT_EXISTS, "domain exists: %s", d);
    Tern__DomainRec rec = TERN__DOMAIN_REC__INIT;
    rec.name = d;
    put_msg(t, &k, &rec.base);
}

/* prefix_nonempty(): any key starting with K? */
static bool prefix_nonempty(struct tx *t, const struct key *k)
{
    struct key hi = *k;
    if (!key_successor(&hi))
        return false;
    struct db_iter *it = db_iter_open(t->f->db, DB_CF_META, k->buf, k->len, hi.buf, hi.len);
    if (it == NULL)
        fatal_storage("iter");
    bool any = db_iter_valid(it);
    if (db_iter_close(it) != 0)
        fatal_storage("iter");
    return any;
}

static void op_domain_remove(struct tx *t, const Tern__DomainRemove *op)
{
    char d[ADDR_DOMAIN_MAX + 1];
    if (addr_domain_normalize(op->name, d) != 0)
        return set_result(t, RESULT_INVALID, "invalid domain name");
    struct key k;
    ks_domain(&k, d);
    if (!exists(t, &k))
        return set_result(t, RESULT_NOTFOUND, "no such domain: %s", d);
    struct key p;
    key_init(&p, KS_ADDRESS);
    key_str(&p, d);
    key_u8(&p, 0);
    if (prefix_nonempty(t, &p))
        return set_result(t, RESULT_INVALID, "domain %s still has accounts", d);
    key_init(&p, KS_ALIAS);
    key_str(&p, d);
    key_u8(&p, 0);
    if (prefix_nonempty(t, &p))
        return set_result(t, RESULT_INVALID, "domain %s still has aliases", d);
    del_key(t, &k);
}

/* ---- handlers: accounts ---- */

static bool alias_exists(struct tx *t, const struct addr *a)
{
    struct key k;
    ks_addr(&k, KS_ALIAS, a->domain, a->local);
    return exists(t, &k);
}

static bool hash_ok(const char *h)
{
    size_t n = strnlen(h, 512);
    return n > 0 && n < 512 && h[0] == '$';
}

static void op_account_add(struct tx *t, const Tern__AccountAdd *op)
{
    struct addr a;
    if (addr_parse(op->address, &a) != 0)
        return set_result(t, RESULT_INVALID, "invalid address");
    if (!domain_exists(t, a.domain))
        return set_result(t, RESULT_INVALID, "domain is not local: %s", a.domain);
    if (account_id_by_addr(t, &a) != 0)
        return set_result(t, RESULT_EXISTS, "account exists: %s", a.full);
    if (alias_exists(t, &a))
        return set_result(t, RESULT_EXISTS, "an alias exists with that address: %s", a.full);
    if (!hash_ok(op->password_hash))
        return set_result(t, RESULT_INVALID, "invalid password hash");

    uint64_t acct_ctr = 0, mbox_ctr = 0;
    Tern__AccountRec *rec = malloc(sizeof *rec);
    if (rec == NULL)
        abort();
    tern__account_rec__init(rec);
    rec->id = next_id(t, KS_CTR_ACCOUNT, &acct_ctr);
    rec->address = a.full;
    rec->password_hash = op->password_hash;
    rec->has_quota_bytes = rec->has_quota_messages = true;
    rec->quota_bytes = op->quota_bytes;
    rec->quota_messages = op->quota_messages;
    rec->has_used_bytes = rec->has_used_messages = rec->has_created = true;
    rec->created = t->now_s;
    struct key k;
    ks_account(&k, rec->id);
    put_msg(t, &k, &rec->base);
    ks_addr(&k, KS_ADDRESS, a.domain, a.local);
    put_u64(t, &k, rec->id);
    uint64_t id = rec->id;
    free(rec); /* its strings are borrowed from A and OP */

    for (size_t i = 0; i < sizeof default_mailboxes / sizeof default_mailboxes[0]; i++)
        if (mailbox_new(t, id, default_mailboxes[i].name, default_mailboxes[i].special_use,
                        &mbox_ctr) == 0)
            return;
    t->res->has_id = true;
    t->res->id = id;
    struct fsm_event ev = {.type = FSM_EV_ACCOUNT, .account_id = id};
    emit(t, &ev);
}

static void op_account_set_password(struct tx *t, const Tern__AccountSetPassword *op)
{
    struct addr a;
    uint64_t id = account_arg(t, op->address, &a);
    if (id == 0)
        return;
    if (!hash_ok(op->password_hash))
        return set_result(t, RESULT_INVALID, "invalid password hash");
    Tern__AccountRec *rec = account(t, id);
    /* the unpacked record owns its strings: replace through a copy it will free */
    char *h = strdup(op->password_hash);
    if (h == NULL)
        abort();
    free(rec->password_hash);
    rec->password_hash = h;
    struct fsm_event ev = {.type = FSM_EV_ACCOUNT, .account_id = id};
    emit(t, &ev);
}

static void op_account_set_quota(struct tx *t, const Tern__AccountSetQuota *op)
{
    struct addr a;
    uint64_t id = account_arg(t, op->address, &a);
    if (id == 0)
        return;
    Tern__AccountRec *rec = account(t, id);
    if (op->has_quota_bytes) {
        rec->has_quota_bytes = true;
        rec->quota_bytes = op->quota_bytes;
    }
    if (op->has_quota_messages) {
        rec->has_quota_messages = true;
        rec->quota_messages = op->quota_messages;
    }
    struct fsm_event ev = {.type = FSM_EV_ACCOUNT, .account_id = id};
    emit(t, &ev);
}

/* for_each_mailbox(): calls FN for each mailbox id of ACCOUNT whose name starts with
 * PREFIX (NULL = all), in name order. Collects ids first so FN may change the batch. */
static size_t account_mailboxes(struct tx *t, uint64_t account_id, const char *prefix,
                                uint64_t **ids)
{
    struct key lo, hi;
    ks_mboxname(&lo, account_id, prefix ? prefix : "");
    hi = lo;
    size_t n = 0, cap = 0;
    *ids = NULL;
    if (!key_successor(&hi))
        return 0;
    struct db_iter *it = db_iter_open(t->f->db, DB_CF_META, lo.buf, lo.len, hi.buf, hi.len);
    if (it == NULL)
        fatal_storage("iter");
    for (; db_iter_valid(it); db_iter_next(it)) {
        size_t vl;
        const char *vp = db_iter_value(it, &vl);
        if (vl != 8)
            fatal_storage("corrupt mailbox name record");
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            uint64_t *v = realloc(*ids, cap * sizeof *v);
            if (v == NULL)
                abort();
            *ids = v;
        }
        (*ids)[n++] = be64_get((const uint8_t *) vp);
    }
    if (db_iter_close(it) != 0)
        fatal_storage("iter");
    return n;
}

static void op_account_remove(struct tx *t, const Tern__AccountRemove *op)
{
    struct addr a;
    uint64_t id = account_arg(t, op->address, &a);
    if (id == 0)
        return;
    uint64_t *ids;
    size_t n = account_mailboxes(t, id, NULL, &ids);
    struct refdeltas d = {0};
    for (size_t i = 0; i < n; i++) {
        Tern__MailboxRec *m = mailbox(t, ids[i]);
        if (m == NULL)
            continue;
        mailbox_purge(t, m, NULL, &d);
        struct key k;
        ks_mboxname(&k, id, m->name);
        del_key(t, &k);
        cache_delete(t, C_MAILBOX, ids[i]);
    }
    free(ids);
    refdelta_write(t, &d);
    free(d.v);
    struct key k;
    ks_addr(&k, KS_ADDRESS, a.domain, a.local);
    del_key(t, &k);
    cache_delete(t, C_ACCOUNT, id);
    struct fsm_event ev = {.type = FSM_EV_ACCOUNT, .account_id = id};
    emit(t, &ev);
}

/* ---- handlers: aliases ---- */

static void op_alias_add(struct tx *t, const Tern__AliasAdd *op)
{
    struct addr a;
    if (addr_parse_alias(op->alias, &a) != 0)
        return set_result(t, RESULT_INVALID, "invalid alias address");
    if (!domain_exists(t, a.domain))
        return set_result(t, RESULT_INVALID, "domain is not local: %s", a.domain);
    if (op->n_targets == 0 || op->n_targets > 1000)
        return set_result(t, RESULT_INVALID, "an alias needs 1 to 1000 targets");
    if (a.local[0] && account_id_by_addr(t, &a) != 0)
        return set_result(t, RESULT_EXISTS, "an account exists with that address: %s", a.full);
    if (alias_exists(t, &a))
        return set_result(t, RESULT_EXISTS, "alias exists: %s", a.full);
    Tern__AliasRec rec = TERN__ALIAS_REC__INIT;
    struct addr *targets = calloc(op->n_targets, sizeof *targets);
    char **tp = calloc(op->n_targets, sizeof *tp);
    if (!targets || !tp)
        abort();
    for (size_t i = 0; i < op->n_targets; i++) {
        if (addr_parse(op->targets[i], &targets[i]) != 0) {
            set_result(t, RESULT_INVALID, "invalid target address");
            goto out;
        }
        tp[i] = targets[i].full;
    }
    rec.alias = a.full;
    rec.n_targets = op->n_targets;
    rec.targets = tp;
    struct key k;
    ks_addr(&k, KS_ALIAS, a.domain, a.local);
    put_msg(t, &k, &rec.base);
out:
    free(tp);
    free(targets);
}

static void op_alias_remove(struct tx *t, const Tern__AliasRemove *op)
{
    struct addr a;
    if (addr_parse_alias(op->alias, &a) != 0)
        return set_result(t, RESULT_INVALID, "invalid alias address");
    struct key k;
    ks_addr(&k, KS_ALIAS, a.domain, a.local);
    if (!exists(t, &k))
        return set_result(t, RESULT_NOTFOUND, "no such alias: %s", a.full);
    del_key(t, &k);
}

/* ---- handlers: mailboxes ---- */

static void op_mailbox_create(struct tx *t, const Tern__MailboxCreate *op)
{
    struct addr a;
    uint64_t acct = account_arg(t, op->account, &a);
    if (acct == 0)
        return;
    char name[MAILBOX_NAME_MAX + 1];
    if (mailbox_name_normalize(op->name, name) != 0)
        return set_result(t, RESULT_INVALID, "invalid mailbox name");
    if (mailbox_id_by_name(t, acct, name) != 0)
        return set_result(t, RESULT_EXISTS, "mailbox exists: %s", name);
    const char *su = op->special_use ? op->special_use : "";
    if (su[0] && strcmp(su, "\\Sent") && strcmp(su, "\\Drafts") && strcmp(su, "\\Trash") &&
        strcmp(su, "\\Junk") && strcmp(su, "\\Archive") && strcmp(su, "\\All") &&
        strcmp(su, "\\Flagged"))
        return set_result(t, RESULT_INVALID, "unknown special-use attribute");
    /* RFC 3501 6.3.3: superior hierarchical names are created as needed */
    uint64_t ctr = 0, id = 0;
    for (char *s = strchr(name, '/'); s; s = strchr(s + 1, '/')) {
        *s = 0;
        if (mailbox_id_by_name(t, acct, name) == 0 && mailbox_new(t, acct, name, "", &ctr) == 0) {
            *s = '/';
            return;
        }
        *s = '/';
    }
    id = mailbox_new(t, acct, name, su, &ctr);
    if (id) {
        t->res->has_id = true;
        t->res->id = id;
    }
}

static void op_mailbox_rename(struct tx *t, const Tern__MailboxRename *op)
{
    struct addr a;
    uint64_t acct = account_arg(t, op->account, &a);
    if (acct == 0)
        return;
    char from[MAILBOX_NAME_MAX + 1], to[MAILBOX_NAME_MAX + 1];
    if (mailbox_name_normalize(op->from, from) != 0 || mailbox_name_normalize(op->to, to) != 0)
        return set_result(t, RESULT_INVALID, "invalid mailbox name");
    uint64_t src = mailbox_id_by_name(t, acct, from);
    if (src == 0)
        return set_result(t, RESULT_NOTFOUND, "no such mailbox: %s", from);
    if (mailbox_id_by_name(t, acct, to) != 0)
        return set_result(t, RESULT_EXISTS, "mailbox exists: %s", to);
    size_t fl = strlen(from);
    if (strncmp(to, from, fl) == 0 && to[fl] == '/')
        return set_result(t, RESULT_INVALID, "cannot move a mailbox into itself");

    bool inbox = strcmp(from, "INBOX") == 0;
    /* the mailbox itself and, unless it is INBOX (RFC 3501 6.3.5), its inferiors */
    char pfx[MAILBOX_NAME_MAX + 2];
    snprintf(pfx, sizeof pfx, "%s/", from);
    uint64_t *ids = NULL;
    size_t n = inbox ? 0 : account_mailboxes(t, acct, pfx, &ids);
    uint64_t ctr = 0;
    for (size_t i = 0; i <= n; i++) {
        uint64_t id = i < n ? ids[i] : src;
        Tern__MailboxRec *m = mailbox(t, id);
        if (m == NULL)
            continue;
        char newname[2 * MAILBOX_NAME_MAX + 2];
        snprintf(newname, sizeof newname, "%s%s", to, m->name + fl);
        if (strlen(newname) > MAILBOX_NAME_MAX) {
            free(ids);
            return set_result(t, RESULT_INVALID, "new name too long");
        }
        struct key k;
        ks_mboxname(&k, acct, m->name);
        del_key(t, &k);
        ks_mboxname(&k, acct, newname);
        put_u64(t, &k, id);
        char *nn = strdup(newname);
        if (nn == NULL)
            abort();
        free(m->name); /* built or unpacked with the default allocator: malloc'd */
        m->name = nn;
        struct fsm_event ev = {.type = FSM_EV_MAILBOX, .account_id = acct, .mailbox_id = id};
        emit(t, &ev);
    }
    free(ids);
    if (inbox) /* a new, empty INBOX takes the old one's place */
        mailbox_new(t, acct, "INBOX", "", &ctr);
}

static void op_mailbox_delete(struct tx *t, const Tern__MailboxDelete *op)
{
    struct addr a;
    uint64_t acct = account_arg(t, op->account, &a);
    if (acct == 0)
        return;
    char name[MAILBOX_NAME_MAX + 1];
    if (mailbox_name_normalize(op->name, name) != 0)
        return set_result(t, RESULT_INVALID, "invalid mailbox name");
    if (strcmp(name, "INBOX") == 0)
        return set_result(t, RESULT_INVALID, "INBOX cannot be deleted");
    uint64_t id = mailbox_id_by_name(t, acct, name);
    Tern__MailboxRec *m = id ? mailbox(t, id) : NULL;
    if (m == NULL)
        return set_result(t, RESULT_NOTFOUND, "no such mailbox: %s", name);
    struct refdeltas d = {0};
    mailbox_purge(t, m, account(t, acct), &d);
    refdelta_write(t, &d);
    free(d.v);
    struct key k;
    ks_mboxname(&k, acct, name);
    del_key(t, &k);
    cache_delete(t, C_MAILBOX, id);
    struct fsm_event ev = {.type = FSM_EV_MAILBOX, .account_id = acct, .mailbox_id = id};
    emit(t, &ev);
}

static void op_mailbox_subscribe(struct tx *t, const Tern__MailboxSubscribe *op)
{
    struct addr a;
    uint64_t acct = account_arg(t, op->account, &a);
    if (acct == 0)
        return;
    char name[MAILBOX_NAME_MAX + 1];
    if (mailbox_name_normalize(op->name, name) != 0)
        return set_result(t, RESULT_INVALID, "invalid mailbox name");
    uint64_t id = mailbox_id_by_name(t, acct, name);
    Tern__MailboxRec *m = id ? mailbox(t, id) : NULL;
    if (m == NULL)
        return set_result(t, RESULT_NOTFOUND, "no such mailbox: %s", name);
    m->has_subscribed = true;
    m->subscribed = op->subscribed;
}

/* ---- handlers: delivery ---- */

bool fsm_flag_valid(const char *f)
{
    size_t n = strnlen(f, 256);
    if (n == 0 || n >= 256)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char) f[i];
        if (ch <= 0x20 || ch >= 0x7f || strchr("(){%*\"]", ch) || (ch == '\\' && i > 0))
            return false;
    }
    return true;
}

static void op_deliver(struct tx *t, const Tern__Deliver *op)
{
    if (op->body_hash.len != 32)
        return set_result(t, RESULT_INVALID, "body hash must be 32 bytes");
    if (op->n_targets + op->n_remote == 0 || op->n_targets > TX_CACHE_MAX / 2 ||
        op->n_remote > FSM_REMOTE_MAX)
        return set_result(t, RESULT_INVALID, "1 to %d local targets, %d remote",
                          TX_CACHE_MAX / 2, FSM_REMOTE_MAX);
    for (size_t i = 0; i < op->n_remote; i++) {
        struct addr ra;
        if (op->remote[i]->address == NULL || strnlen(op->remote[i]->address, 1024) >= 1024 ||
            strchr(op->remote[i]->address, '@') == NULL)
            return set_result(t, RESULT_INVALID, "invalid remote recipient");
        (void) ra;
    }
    t->res->delivered = calloc(op->n_targets, sizeof *t->res->delivered);
    if (t->res->delivered == NULL)
        abort();
    uint64_t accepted = 0;
    uint64_t idate = op->internal_date ? op->internal_date : t->now_s;
    for (size_t i = 0; i < op->n_targets; i++) {
        const Tern__DeliverTarget *tg = op->targets[i];
        Tern__DeliverOutcome *o = malloc(sizeof *o);
        if (o == NULL)
            abort();
        tern__deliver_outcome__init(o);
        t->res->delivered[t->res->n_delivered++] = o;
        Tern__AccountRec *acct = account(t, tg->account_id);
        if (acct == NULL) {
            o->status = RESULT_NOTFOUND;
            continue;
        }
        uint64_t mid = tg->mailbox_id ? tg->mailbox_id : mailbox_id_by_name(t, acct->id, "INBOX");
        Tern__MailboxRec *m = mid ? mailbox(t, mid) : NULL;
        if (m == NULL || m->account_id != acct->id) {
            o->status = RESULT_NOTFOUND;
            continue;
        }
        if (!model_quota_allows(acct->used_bytes, acct->used_messages, acct->quota_bytes,
                                acct->quota_messages, op->size)) {
            o->status = RESULT_QUOTA;
            continue;
        }
        bool flags_ok = tg->n_flags <= 64;
        for (size_t j = 0; flags_ok && j < tg->n_flags; j++)
            flags_ok = fsm_flag_valid(tg->flags[j]);
        if (!flags_ok || m->uidnext == UINT32_MAX) {
            o->status = RESULT_INVALID;
            continue;
        }
        Tern__MessageRec rec = TERN__MESSAGE_REC__INIT;
        rec.uid = m->uidnext++;
        rec.body_hash = op->body_hash;
        rec.size = op->size;
        rec.internal_date = idate;
        rec.modseq = ++m->highestmodseq;
        rec.n_flags = tg->n_flags;
        rec.flags = tg->flags;
        rec.envelope = op->envelope;
        rec.has_mime = op->has_mime;
        rec.mime = op->mime;
        rec.rcpt_to = tg->rcpt_to;
        rec.has_notify = tg->has_notify;
        rec.notify = tg->notify;
        rec.orcpt = tg->orcpt;
        struct key k;
        ks_message(&k, m->id, rec.uid);
        put_msg(t, &k, &rec.base);
        m->messages++;
        m->bytes += op->size;
        if (!has_flag(&rec, "\\Seen"))
            m->unseen++;
        acct->used_bytes += op->size;
        acct->used_messages++;
        accepted++;
        o->status = RESULT_OK;
        o->has_mailbox_id = o->has_uid = o->has_modseq = true;
        o->mailbox_id = m->id;
        o->uid = rec.uid;
        o->modseq = rec.modseq;
        struct fsm_event ev = {.type = FSM_EV_MESSAGE_NEW,
                               .account_id = acct->id,
                               .mailbox_id = m->id,
                               .uid = rec.uid,
                               .modseq = rec.modseq};
        emit(t, &ev);
    }
    if (op->n_remote) {
        /* one outbound queue entry for every remote recipient of this message */
        uint64_t qctr = 0;
        Tern__QueueRec q = TERN__QUEUE_REC__INIT;
        q.id = next_id(t, KS_CTR_QUEUE, &qctr);
        q.body_hash = op->body_hash;
        q.size = op->size;
        q.envelope = op->envelope;
        q.n_recipients = op->n_remote;
        q.recipients = op->remote;
        q.has_created = q.has_next_attempt = q.has_attempts = 1;
        q.created = q.next_attempt = t->now_s;
        struct key k;
        ks_queue(&k, q.id);
        put_msg(t, &k, &q.base);
        t->res->has_id = 1;
        t->res->id = q.id;
        accepted++;
        struct fsm_event ev = {.type = FSM_EV_QUEUE, .uid = 0, .mailbox_id = q.id};
        emit(t, &ev);
    }
    if (accepted) {
        struct refdeltas d = {0};
        refdelta_add(&d, op->body_hash.data, (int64_t) accepted);
        refdelta_write(t, &d);
        free(d.v);
    }
}

/* ---- handlers: flags, expunge, copy (IMAP) ---- */

static Tern__MessageRec *message_get(struct tx *t, uint64_t mailbox_id, uint32_t uid)
{
    struct key k;
    ks_message(&k, mailbox_id, uid);
    return (Tern__MessageRec *) get_msg(t, &k, &tern__message_rec__descriptor);
}

static void message_put(struct tx *t, uint64_t mailbox_id, const Tern__MessageRec *m)
{
    struct key k;
    ks_message(&k, mailbox_id, m->uid);
    put_msg(t, &k, &m->base);
}

/* change_add(): a MessageChange in the result, owning copies of its flags. */
static void change_add(struct tx *t, uint32_t uid, uint64_t modseq, char **flags, size_t n,
                       uint32_t new_uid)
{
    Tern__Result *r = t->res;
    if ((r->n_changed & (r->n_changed - 1)) == 0) { /* grow at powers of two */
        size_t cap = r->n_changed ? 2 * r->n_changed : 1;
        Tern__MessageChange **v = realloc(r->changed, cap * sizeof *v);
        if (v == NULL)
            abort();
        r->changed = v;
    }
    Tern__MessageChange *c = malloc(sizeof *c);
    if (c == NULL)
        abort();
    tern__message_change__init(c);
    c->uid = uid;
    c->has_modseq = modseq != 0;
    c->modseq = modseq;
    if (new_uid) {
        c->has_new_uid = 1;
        c->new_uid = new_uid;
    }
    if (n) {
        c->flags = malloc(n * sizeof *c->flags);
        if (c->flags == NULL)
            abort();
        for (size_t i = 0; i < n; i++)
            if ((c->flags[i] = strdup(flags[i])) == NULL)
                abort();
        c->n_flags = n;
    }
    r->changed[r->n_changed++] = c;
}

static void result_free_changes(Tern__Result *r)
{
    for (size_t i = 0; i < r->n_changed; i++) {
        for (size_t j = 0; j < r->changed[i]->n_flags; j++)
            free(r->changed[i]->flags[j]);
        free(r->changed[i]->flags);
        free(r->changed[i]);
    }
    free(r->changed);
    free(r->failed);
}

/* uids_ok(): ascending, non-zero, bounded. */
static bool uids_ok(const uint32_t *uids, size_t n)
{
    if (n > FSM_UIDS_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (uids[i] == 0 || (i && uids[i] <= uids[i - 1]))
            return false;
    return true;
}

static bool flags_ok(char **flags, size_t n)
{
    if (n > FSM_FLAGS_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!fsm_flag_valid(flags[i]))
            return false;
    return true;
}

static bool flag_in(char **set, size_t n, const char *f)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(set[i], f) == 0)
            return true;
    return false;
}

static void op_store_flags(struct tx *t, const Tern__StoreFlags *op)
{
    Tern__MailboxRec *m = mailbox(t, op->mailbox_id);
    if (m == NULL)
        return set_result(t, RESULT_NOTFOUND, "no such mailbox");
    if (!uids_ok(op->uids, op->n_uids) || !flags_ok(op->flags, op->n_flags) || op->mode < 0 ||
        op->mode > FSM_STORE_REMOVE)
        return set_result(t, RESULT_INVALID, "invalid STORE");
    uint64_t modseq = 0; /* one new modseq for every message this command changes */
    for (size_t i = 0; i < op->n_uids; i++) {
        Tern__MessageRec *msg = message_get(t, m->id, op->uids[i]);
        if (msg == NULL)
            continue; /* expunged meanwhile: nothing to store (RFC 3501 6.4.6) */
        if (op->unchangedsince && msg->modseq > op->unchangedsince) {
            if ((t->res->n_failed & (t->res->n_failed - 1)) == 0) {
                size_t cap = t->res->n_failed ? 2 * t->res->n_failed : 1;
                uint32_t *v = realloc(t->res->failed, cap * sizeof *v);
                if (v == NULL)
                    abort();
                t->res->failed = v;
            }
            t->res->failed[t->res->n_failed++] = msg->uid;
            tern__message_rec__free_unpacked(msg, NULL);
            continue;
        }
        char *nf[2 * FSM_FLAGS_MAX];
        size_t nn = 0;
        if (op->mode != FSM_STORE_SET)
            for (size_t j = 0; j < msg->n_flags && nn < FSM_FLAGS_MAX; j++)
                if (op->mode == FSM_STORE_ADD || !flag_in(op->flags, op->n_flags, msg->flags[j]))
                    nf[nn++] = msg->flags[j];
        if (op->mode != FSM_STORE_REMOVE)
            for (size_t j = 0; j < op->n_flags && nn < FSM_FLAGS_MAX; j++)
                if (strcasecmp(op->flags[j], "\\Recent") != 0 && !flag_in(nf, nn, op->flags[j]))
                    nf[nn++] = op->flags[j];
        bool same = nn == msg->n_flags;
        for (size_t j = 0; same && j < nn; j++)
            same = flag_in(msg->flags, msg->n_flags, nf[j]);
        if (same) {
            change_add(t, msg->uid, msg->modseq, msg->flags, msg->n_flags, 0);
            tern__message_rec__free_unpacked(msg, NULL);
            continue;
        }
        bool was_seen = flag_in(msg->flags, msg->n_flags, "\\Seen");
        bool seen = flag_in(nf, nn, "\\Seen");
        if (was_seen != seen)
            m->unseen = seen ? (m->unseen ? m->unseen - 1 : 0) : m->unseen + 1;
        if (modseq == 0)
            modseq = ++m->highestmodseq;
        char **old = msg->flags;
        size_t oldn = msg->n_flags;
        msg->flags = nf;
        msg->n_flags = nn;
        msg->modseq = modseq;
        message_put(t, m->id, msg);
        change_add(t, msg->uid, modseq, nf, nn, 0);
        msg->flags = old; /* give the record its own array back before freeing it */
        msg->n_flags = oldn;
        struct fsm_event ev = {.type = FSM_EV_FLAGS,
                               .account_id = m->account_id,
                               .mailbox_id = m->id,
                               .uid = msg->uid,
                               .modseq = modseq};
        emit(t, &ev);
        tern__message_rec__free_unpacked(msg, NULL);
    }
}

/* expunge_one(): removes MSG from M at MODSEQ, leaving a tombstone. */
static void expunge_one(struct tx *t, Tern__MailboxRec *m, Tern__AccountRec *acct,
                        const Tern__MessageRec *msg, uint64_t modseq, struct refdeltas *d)
{
    struct key k;
    ks_message(&k, m->id, msg->uid);
    del_key(t, &k);
    ks_expunged(&k, m->id, msg->uid);
    Tern__ExpungedRec x = TERN__EXPUNGED_REC__INIT;
    x.modseq = modseq;
    put_msg(t, &k, &x.base);
    m->messages = m->messages ? m->messages - 1 : 0;
    m->bytes = m->bytes > msg->size ? m->bytes - msg->size : 0;
    if (!has_flag(msg, "\\Seen"))
        m->unseen = m->unseen ? m->unseen - 1 : 0;
    if (acct) {
        acct->used_bytes = acct->used_bytes > msg->size ? acct->used_bytes - msg->size : 0;
        acct->used_messages = acct->used_messages ? acct->used_messages - 1 : 0;
    }
    if (msg->body_hash.len == 32)
        refdelta_add(d, msg->body_hash.data, -1);
    struct fsm_event ev = {.type = FSM_EV_EXPUNGE,
                           .account_id = m->account_id,
                           .mailbox_id = m->id,
                           .uid = msg->uid,
                           .modseq = modseq};
    emit(t, &ev);
}

static void op_expunge(struct tx *t, const Tern__Expunge *op)
{
    Tern__MailboxRec *m = mailbox(t, op->mailbox_id);
    if (m == NULL)
        return set_result(t, RESULT_NOTFOUND, "no such mailbox");
    if (!uids_ok(op->uids, op->n_uids))
        return set_result(t, RESULT_INVALID, "invalid EXPUNGE");
    Tern__AccountRec *acct = account(t, m->account_id);
    struct refdeltas d = {0};
    uint64_t modseq = 0;
    for (size_t i = 0; i < op->n_uids; i++) {
        Tern__MessageRec *msg = message_get(t, m->id, op->uids[i]);
        if (msg == NULL)
            continue;
        if (modseq == 0)
            modseq = ++m->highestmodseq;
        expunge_one(t, m, acct, msg, modseq, &d);
        change_add(t, msg->uid, modseq, NULL, 0, 0);
        tern__message_rec__free_unpacked(msg, NULL);
    }
    refdelta_write(t, &d);
    free(d.v);
}

static void op_copy(struct tx *t, const Tern__CopyMessages *op)
{
    Tern__MailboxRec *src = mailbox(t, op->from_mailbox);
    Tern__MailboxRec *dst = mailbox(t, op->to_mailbox);
    if (src == NULL || dst == NULL)
        return set_result(t, RESULT_NOTFOUND, "no such mailbox");
    if (src->account_id != dst->account_id || src->id == dst->id)
        return set_result(t, RESULT_INVALID, "copy within one account, between two mailboxes");
    if (!uids_ok(op->uids, op->n_uids))
        return set_result(t, RESULT_INVALID, "invalid COPY");
    Tern__AccountRec *acct = account(t, dst->account_id);
    if (acct == NULL)
        return set_result(t, RESULT_NOTFOUND, "no such account");
    struct refdeltas d = {0};
    uint64_t dst_modseq = 0, src_modseq = 0;
    for (size_t i = 0; i < op->n_uids; i++) {
        Tern__MessageRec *msg = message_get(t, src->id, op->uids[i]);
        if (msg == NULL)
            continue;
        if (!op->move && !model_quota_allows(acct->used_bytes, acct->used_messages,
                                             acct->quota_bytes, acct->quota_messages, msg->size)) {
            tern__message_rec__free_unpacked(msg, NULL);
            free(d.v);
            return set_result(t, RESULT_QUOTA, "over quota");
        }
        if (dst->uidnext == UINT32_MAX) {
            tern__message_rec__free_unpacked(msg, NULL);
            free(d.v);
            return set_result(t, RESULT_INVALID, "target mailbox out of UIDs");
        }
        uint32_t old_uid = msg->uid;
        if (dst_modseq == 0)
            dst_modseq = ++dst->highestmodseq;
        Tern__MessageRec copy = *msg;
        copy.uid = dst->uidnext++;
        copy.modseq = dst_modseq;
        message_put(t, dst->id, &copy);
        dst->messages++;
        dst->bytes += msg->size;
        if (!has_flag(msg, "\\Seen"))
            dst->unseen++;
        acct->used_bytes += msg->size;
        acct->used_messages++;
        if (msg->body_hash.len == 32)
            refdelta_add(&d, msg->body_hash.data, 1);
        change_add(t, old_uid, dst_modseq, NULL, 0, copy.uid);
        struct fsm_event ev = {.type = FSM_EV_MESSAGE_NEW,
                               .account_id = dst->account_id,
                               .mailbox_id = dst->id,
                               .uid = copy.uid,
                               .modseq = dst_modseq};
        emit(t, &ev);
        if (op->move) {
            if (src_modseq == 0)
                src_modseq = ++src->highestmodseq;
            expunge_one(t, src, acct, msg, src_modseq, &d);
        }
        tern__message_rec__free_unpacked(msg, NULL);
    }
    refdelta_write(t, &d);
    free(d.v);
    t->res->has_uidvalidity = 1;
    t->res->uidvalidity = dst->uidvalidity;
}

static void op_claim_recent(struct tx *t, const Tern__ClaimRecent *op)
{
    Tern__MailboxRec *m = mailbox(t, op->mailbox_id);
    if (m == NULL)
        return set_result(t, RESULT_NOTFOUND, "no such mailbox");
    uint32_t first = m->has_first_recent_uid && m->first_recent_uid ? m->first_recent_uid : 1;
    t->res->has_id = 1;
    t->res->id = first;
    if (op->up_to > first) {
        m->has_first_recent_uid = 1;
        m->first_recent_uid = op->up_to;
    }
}

/* ---- handlers: cluster members ---- */

/* member_addr_ok(): "a.b.c.d:port" as libraft 0.15 and our transport take it. */
static bool member_addr_ok(const char *a)
{
    unsigned b[4], port;
    char tail;
    return a && strlen(a) <= 21 &&
           sscanf(a, "%3u.%3u.%3u.%3u:%5u%c", &b[0], &b[1], &b[2], &b[3], &port, &tail) == 5 &&
           b[0] < 256 && b[1] < 256 && b[2] < 256 && b[3] < 256 && port > 0 && port < 65536;
}

static bool member_text_ok(const char *s, size_t max)
{
    if (s == NULL)
        return true;
    size_t n = strlen(s);
    if (n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] == 0x7f)
            return false;
    return true;
}

static void op_member_set(struct tx *t, const Tern__MemberSet *op)
{
    const Tern__MemberRec *m = op->member;
    if (m == NULL || m->id == 0 || !member_addr_ok(m->raft_address) ||
        !member_addr_ok(m->rpc_address) || !member_text_ok(m->zone, 64) || m->n_listen > 16)
        return set_result(t, RESULT_INVALID, "invalid member record");
    for (size_t i = 0; i < m->n_listen; i++)
        if (!member_text_ok(m->listen[i]->name, 32) || !member_text_ok(m->listen[i]->address, 64))
            return set_result(t, RESULT_INVALID, "invalid member listener");
    struct key k;
    ks_member(&k, m->id);
    put_msg(t, &k, &m->base);
    t->res->has_id = 1;
    t->res->id = m->id;
}

static void op_member_remove(struct tx *t, const Tern__MemberRemove *op)
{
    struct key k;
    ks_member(&k, op->id);
    if (!exists(t, &k))
        return set_result(t, RESULT_NOTFOUND, "no such member: %llu", (unsigned long long) op->id);
    del_key(t, &k);
}

/* ---- apply ---- */

static void dispatch(struct tx *t, const Tern__Command *c)
{
    switch (c->op_case) {
    case TERN__COMMAND__OP_DOMAIN_ADD:
        return op_domain_add(t, c->domain_add);
    case TERN__COMMAND__OP_DOMAIN_REMOVE:
        return op_domain_remove(t, c->domain_remove);
    case TERN__COMMAND__OP_ACCOUNT_ADD:
        return op_account_add(t, c->account_add);
    case TERN__COMMAND__OP_ACCOUNT_SET_PASSWORD:
        return op_account_set_password(t, c->account_set_password);
    case TERN__COMMAND__OP_ACCOUNT_REMOVE:
        return op_account_remove(t, c->account_remove);
    case TERN__COMMAND__OP_ACCOUNT_SET_QUOTA:
        return op_account_set_quota(t, c->account_set_quota);
    case TERN__COMMAND__OP_ALIAS_ADD:
        return op_alias_add(t, c->alias_add);
    case TERN__COMMAND__OP_ALIAS_REMOVE:
        return op_alias_remove(t, c->alias_remove);
    case TERN__COMMAND__OP_MAILBOX_CREATE:
        return op_mailbox_create(t, c->mailbox_create);
    case TERN__COMMAND__OP_MAILBOX_RENAME:
        return op_mailbox_rename(t, c->mailbox_rename);
    case TERN__COMMAND__OP_MAILBOX_DELETE:
        return op_mailbox_delete(t, c->mailbox_delete);
    case TERN__COMMAND__OP_MAILBOX_SUBSCRIBE:
        return op_mailbox_subscribe(t, c->mailbox_subscribe);
    case TERN__COMMAND__OP_DELIVER:
        return op_deliver(t, c->deliver);
    case TERN__COMMAND__OP_STORE_FLAGS:
        return op_store_flags(t, c->store_flags);
    case TERN__COMMAND__OP_EXPUNGE:
        return op_expunge(t, c->expunge);
    case TERN__COMMAND__OP_COPY_MESSAGES:
        return op_copy(t, c->copy_messages);
    case TERN__COMMAND__OP_CLAIM_RECENT:
        return op_claim_recent(t, c->claim_recent);
    case TERN__COMMAND__OP_MEMBER_SET:
        return op_member_set(t, c->member_set);
    case TERN__COMMAND__OP_MEMBER_REMOVE:
        return op_member_remove(t, c->member_remove);
    default:
        return set_result(t, RESULT_INVALID, "unknown command");
    }
}

static struct fsm_result *pack_result(const Tern__Result *r)
{
    size_t n = tern__result__get_packed_size(r);
    struct fsm_result *out = malloc(sizeof *out + n);
    if (out == NULL)
        abort();
    out->len = n;
    tern__result__pack(r, out->data);
    return out;
}

static struct fsm_result *copy_result(const uint8_t *p, size_t n)
{
    struct fsm_result *out = malloc(sizeof *out + n);
    if (out == NULL)
        abort();
    out->len = n;
    memcpy(out->data, p, n);
    return out;
}

/* remember(): stores the request id with its result and evicts the oldest beyond
 * FSM_REQUESTS_KEPT, all in the command's batch. */
static void remember(struct tx *t, const ProtobufCBinaryData *id, const struct fsm_result *r)
{
    struct key k;
    key_init(&k, KS_REQUEST);
    key_bytes(&k, id->data, id->len);
    Tern__RequestRec rec = TERN__REQUEST_REC__INIT;
    rec.index = t->index;
    rec.result.data = (uint8_t *) r->data;
    rec.result.len = r->len;
    put_msg(t, &k, &rec.base);

    struct key ck;
    ks_counter(&ck, KS_CTR_REQUEST);
    uint64_t seq = get_u64(t, &ck) + 1;
    put_u64(t, &ck, seq);
    struct key rk;
    key_init(&rk, KS_REQRING);
    key_u64(&rk, seq);
    put_raw(t, &rk, id->data, id->len);
    if (seq > FSM_REQUESTS_KEPT) {
        key_init(&rk, KS_REQRING);
        key_u64(&rk, seq - FSM_REQUESTS_KEPT);
        char *old = NULL;
        size_t ol;
        int rv = db_get(t->f->db, DB_CF_META, rk.buf, rk.len, &old, &ol);
        if (rv < 0)
            fatal_storage("request ring");
        if (rv == 1) {
            struct key qk;
            key_init(&qk, KS_REQUEST);
            key_bytes(&qk, old, ol);
            del_key(t, &qk);
            del_key(t, &rk);
        }
        free(old);
    }
}

/* lookup_request(): the stored result of a request id seen before, or NULL. */
static struct fsm_result *lookup_request(struct fsm *f, const ProtobufCBinaryData *id)
{
    struct key k;
    key_init(&k, KS_REQUEST);
    key_bytes(&k, id->data, id->len);
    char *v = NULL;
    size_t n;
    int rv = db_get(f->db, DB_CF_META, k.buf, k.len, &v, &n);
    if (rv < 0)
        fatal_storage("request lookup");
    if (rv == 0)
        return NULL;
    Tern__RequestRec *rec = tern__request_rec__unpack(NULL, n, (const uint8_t *) v);
    free(v);
    if (rec == NULL)
        fatal_storage("corrupt request record");
    struct fsm_result *r = copy_result(rec->result.data, rec->result.len);
    tern__request_rec__free_unpacked(rec, NULL);
    return r;
}

static void write_applied(struct tx *t)
{
    struct key k;
    ks_applied(&k);
    put_u64(t, &k, t->index);
}

void fsm_apply(void *ctx, uint64_t index, const void *buf, size_t len, void **result)
{
    struct fsm *f = ctx;
    if (result)
        *result = NULL;
    if (index <= atomic_load(&f->applied))
        return; /* replayed after a restart: already in the store */

    struct tx t = {.f = f, .index = index};
    Tern__Result res = TERN__RESULT__INIT;
    t.res = &res;
    t.b = rocksdb_writebatch_create();
    struct fsm_result *packed = NULL;

    Tern__Command *c = tern__command__unpack(NULL, len, buf);
    if (c == NULL) {
        set_result(&t, RESULT_INVALID, "undecodable command");
    } else if (c->has_request_id && c->request_id.len > FSM_REQUEST_ID_MAX) {
        set_result(&t, RESULT_INVALID, "request id too long");
    } else if (c->has_request_id && c->request_id.len > 0 &&
               (packed = lookup_request(f, &c->request_id)) != NULL) {
        /* seen before: answer as the first time, change nothing */
    } else {
        t.now_s = c->time_ms / 1000;
        dispatch(&t, c);
        if (res.status == RESULT_OK) {
            cache_flush(&t);
        } else {
            /* a refused command changes nothing but the applied index */
            rocksdb_writebatch_clear(t.b);
            t.nevents = 0;
            result_free_changes(&res);
            res.changed = NULL;
            res.n_changed = 0;
            res.failed = NULL;
            res.n_failed = 0;
        }
    }
    if (packed == NULL) {
        packed = pack_result(&res);
        if (c && c->has_request_id && c->request_id.len > 0 &&
            c->request_id.len <= FSM_REQUEST_ID_MAX)
            remember(&t, &c->request_id, packed);
    }
    write_applied(&t);
    if (db_write(f->db, t.b, false) != 0)
        fatal_storage("write batch");
    atomic_store(&f->applied, index);

    for (size_t i = 0; i < t.nevents && f->event_cb; i++)
        f->event_cb(f->event_ctx, &t.events[i]);

    if (res.status != RESULT_OK && c)
        log_debug("fsm.refused", "index=%llu op=%d status=%d", (unsigned long long) index,
                  (int) c->op_case, res.status);
    if (result)
        *result = packed;
    else
        free(packed);

    /* free what the tx holds: the result's own allocations, the cache, the command */
    free(res.error);
    for (size_t i = 0; i < res.n_delivered; i++)
        free(res.delivered[i]);
    free(res.delivered);
    result_free_changes(&res);
    cache_free(&t);
    free(t.events);
    rocksdb_writebatch_destroy(t.b);
    if (c)
        tern__command__free_unpacked(c, NULL);
}

void fsm_result_free(void *ctx, void *result)
{
    (void) ctx;
    free(result);
}

/* ---- snapshots ----
 * Format: magic "TERNSNAP1", u64 applied index, then records (u32 key length, key,
 * u32 value length, value) for every key of the meta family, then a u32 0xffffffff end
 * marker. Integers big-endian. */

struct sbuf {
    uint8_t *p;
    size_t len, cap;
};

static int sbuf_put(struct sbuf *s, const void *d, size_t n)
{
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 64 * 1024;
        while (cap < s->len + n)
            cap *= 2;
        void *p = raft_realloc(s->p, cap); /* handed to libraft, which raft_free()s it */
        if (p == NULL)
            return -1;
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->len, d, n);
    s->len += n;
    return 0;
}

int fsm_snapshot(void *ctx, void **out, size_t *outlen)
{
    struct fsm *f = ctx;
    struct sbuf s = {0};
    uint8_t b8[8], b4[4];
    be64_put(b8, atomic_load(&f->applied));
    if (sbuf_put(&s, FSM_SNAPSHOT_MAGIC, sizeof FSM_SNAPSHOT_MAGIC - 1) || sbuf_put(&s, b8, 8))
        goto fail;
    struct db_iter *it = db_iter_open(f->db, DB_CF_META, "", 0, NULL, 0);
    if (it == NULL)
        goto fail;
    for (; db_iter_valid(it); db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *v = db_iter_value(it, &vl);
        be32_put(b4, (uint32_t) kl);
        if (sbuf_put(&s, b4, 4) || sbuf_put(&s, k, kl))
            goto fail_iter;
        be32_put(b4, (uint32_t) vl);
        if (sbuf_put(&s, b4, 4) || sbuf_put(&s, v, vl))
            goto fail_iter;
    }
    if (db_iter_close(it) != 0)
        goto fail;
    be32_put(b4, 0xffffffffu);
    if (sbuf_put(&s, b4, 4))
        goto fail;
    *out = s.p;
    *outlen = s.len;
    return 0;
fail_iter:
    db_iter_close(it);
fail:
    raft_free(s.p);
    return -1;
}

int fsm_restore(void *ctx, const void *buf, size_t len)
{
    struct fsm *f = ctx;
    const uint8_t *p = buf, *end = p + len;
    size_t ml = sizeof FSM_SNAPSHOT_MAGIC - 1;
    if (len < ml + 8 || memcmp(p, FSM_SNAPSHOT_MAGIC, ml) != 0) {
        log_error("fsm.restore", "error=bad_magic bytes=%zu", len);
        return -1;
    }
    p += ml;
    uint64_t index = be64_get(p);
    p += 8;
    uint64_t applied = atomic_load(&f->applied);
    if (index <= applied) {
        /* our store is already at or past the snapshot (a restart): keep it */
        log_info("fsm.restore", "skipped=1 snapshot_index=%llu applied=%llu",
                 (unsigned long long) index, (unsigned long long) applied);
        return 0;
    }
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    rocksdb_column_family_handle_t *cf = f->cf;
    const char hi[2] = {(char) 0xff, (char) 0xff}; /* above every key family */
    rocksdb_writebatch_delete_range_cf(b, cf, "", 0, hi, 2);
    size_t n = 0;
    for (;;) {
        if (end - p < 4)
            goto bad;
        uint32_t kl = be32_get(p);
        p += 4;
        if (kl == 0xffffffffu)
            break;
        if (kl > SNAP_REC_MAX || (size_t) (end - p) < kl + 4)
            goto bad;
        const uint8_t *k = p;
        p += kl;
        uint32_t vl = be32_get(p);
        p += 4;
        if (vl > SNAP_REC_MAX || (size_t) (end - p) < vl)
            goto bad;
        rocksdb_writebatch_put_cf(b, cf, (const char *) k, kl, (const char *) p, vl);
        p += vl;
        n++;
    }
    if (p != end)
        goto bad;
    if (db_write(f->db, b, true) != 0) {
        rocksdb_writebatch_destroy(b);
        return -1;
    }
    rocksdb_writebatch_destroy(b);
    atomic_store(&f->applied, index);
    log_info("fsm.restore", "snapshot_index=%llu keys=%zu previous_applied=%llu",
             (unsigned long long) index, n, (unsigned long long) applied);
    return 0;
bad:
    rocksdb_writebatch_destroy(b);
    log_error("fsm.restore", "error=corrupt_snapshot bytes=%zu", len);
    return -1;
}

/* ---- lifecycle ---- */

int fsm_open(struct db *db, struct fsm **out)
{
    struct fsm *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    f->db = db;
    f->cf = db_cf(db, DB_CF_META);
    struct key k;
    ks_applied(&k);
    uint64_t applied = 0;
    if (db_get_u64(db, DB_CF_META, k.buf, k.len, &applied) < 0) {
        free(f);
        return -1;
    }
    atomic_store(&f->applied, applied);
    *out = f;
    return 0;
}

void fsm_close(struct fsm *f)
{
    free(f);
}

void fsm_set_event_cb(struct fsm *f, fsm_event_cb *cb, void *ctx)
{
    f->event_cb = cb;
    f->event_ctx = ctx;
}

uint64_t fsm_applied_index(struct fsm *f)
{
    return atomic_load(&f->applied);
}

struct cons_fsm fsm_hooks(struct fsm *f)
{
    struct cons_fsm h = {.ctx = f,
                         .apply = fsm_apply,
                         .snapshot = fsm_snapshot,
                         .restore = fsm_restore,
                         .result_free = fsm_result_free};
    return h;
}
