/*
 * node/model.c
 * Reads of the mail model from the local replica (see model.h).
 */
#include "model.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "address.h"
#include "keyspace.h"
#include "log.h"
#include "passwd.h"

static int get_rec(struct db *db, const struct key *k, const ProtobufCMessageDescriptor *d,
                   ProtobufCMessage **out)
{
    char *v = NULL;
    size_t n;
    if (!key_ok(k))
        return 0;
    int rv = db_get(db, DB_CF_META, k->buf, k->len, &v, &n);
    if (rv != 1)
        return rv;
    *out = protobuf_c_message_unpack(d, NULL, n, (const uint8_t *) v);
    free(v);
    if (*out == NULL) {
        log_error("model.corrupt", "descriptor=%s", d->name);
        return -1;
    }
    return 1;
}

int model_domain_exists(struct db *db, const char *domain)
{
    char d[ADDR_DOMAIN_MAX + 1];
    if (addr_domain_normalize(domain, d) != 0)
        return 0;
    struct key k;
    ks_domain(&k, d);
    char *v = NULL;
    size_t n;
    int rv = db_get(db, DB_CF_META, k.buf, k.len, &v, &n);
    free(v);
    return rv;
}

int model_account_get(struct db *db, uint64_t id, Tern__AccountRec **out)
{
    struct key k;
    ks_account(&k, id);
    return get_rec(db, &k, &tern__account_rec__descriptor, (ProtobufCMessage **) out);
}

static int account_id(struct db *db, const struct addr *a, uint64_t *id)
{
    struct key k;
    ks_addr(&k, KS_ADDRESS, a->domain, a->local);
    return db_get_u64(db, DB_CF_META, k.buf, k.len, id);
}

int model_account_by_address(struct db *db, const char *address, Tern__AccountRec **out)
{
    struct addr a;
    uint64_t id;
    if (addr_parse(address, &a) != 0)
        return 0;
    int rv = account_id(db, &a, &id);
    if (rv != 1)
        return rv;
    return model_account_get(db, id, out);
}

int model_mailbox_get(struct db *db, uint64_t id, Tern__MailboxRec **out)
{
    struct key k;
    ks_mailbox(&k, id);
    return get_rec(db, &k, &tern__mailbox_rec__descriptor, (ProtobufCMessage **) out);
}

int model_mailbox_by_name(struct db *db, uint64_t account_id_, const char *name,
                          Tern__MailboxRec **out)
{
    struct key k;
    /* INBOX is case-insensitive (RFC 3501 5.1) */
    char buf[1024];
    if (strncasecmp(name, "INBOX", 5) == 0 && (name[5] == 0 || name[5] == '/') &&
        strlen(name) < sizeof buf) {
        memcpy(buf, "INBOX", 5);
        strcpy(buf + 5, name + 5);
        name = buf;
    }
    ks_mboxname(&k, account_id_, name);
    if (!key_ok(&k))
        return 0;
    uint64_t id;
    int rv = db_get_u64(db, DB_CF_META, k.buf, k.len, &id);
    if (rv != 1)
        return rv;
    return model_mailbox_get(db, id, out);
}

/* ---- resolution ---- */

static int add_account(struct model_resolution *r, uint64_t id)
{
    for (size_t i = 0; i < r->naccounts; i++)
        if (r->accounts[i] == id)
            return 0;
    if (r->naccounts + r->nforeign >= MODEL_RESOLVE_MAX)
        return 0; /* bounded: the rest is dropped (logged by the caller's policy) */
    uint64_t *v = realloc(r->accounts, (r->naccounts + 1) * sizeof *v);
    if (v == NULL)
        return -1;
    r->accounts = v;
    r->accounts[r->naccounts++] = id;
    return 0;
}

static int add_foreign(struct model_resolution *r, const char *addr)
{
    for (size_t i = 0; i < r->nforeign; i++)
        if (strcmp(r->foreign[i], addr) == 0)
            return 0;
    if (r->naccounts + r->nforeign >= MODEL_RESOLVE_MAX)
        return 0;
    char **v = realloc(r->foreign, (r->nforeign + 1) * sizeof *v);
    if (v == NULL)
        return -1;
    r->foreign = v;
    if ((r->foreign[r->nforeign] = strdup(addr)) == NULL)
        return -1;
    r->nforeign++;
    return 0;
}

/* resolve(): 1 resolved to something, 0 unknown, -1 error */
static int resolve(struct db *db, const struct addr *a, int depth, struct model_resolution *r)
{
    int rv = model_domain_exists(db, a->domain);
    if (rv <= 0)
        return rv == 0 && depth > 0 ? (add_foreign(r, a->full) == 0 ? 1 : -1) : rv;
    uint64_t id;
    if ((rv = account_id(db, a, &id)) < 0)
        return -1;
    if (rv == 1)
        return add_account(r, id) == 0 ? 1 : -1;
    if (depth >= MODEL_ALIAS_DEPTH)
        return 0;
    Tern__AliasRec *al = NULL;
    struct key k;
    ks_addr(&k, KS_ALIAS, a->domain, a->local);
    rv = get_rec(db, &k, &tern__alias_rec__descriptor, (ProtobufCMessage **) &al);
    if (rv == 0) { /* the domain's catch-all */
        ks_addr(&k, KS_ALIAS, a->domain, "");
        rv = get_rec(db, &k, &tern__alias_rec__descriptor, (ProtobufCMessage **) &al);
    }
    if (rv <= 0)
        return rv;
    int found = 0;
    for (size_t i = 0; i < al->n_targets && found >= 0; i++) {
        struct addr t;
        if (addr_parse(al->targets[i], &t) != 0)
            continue;
        int x = resolve(db, &t, depth + 1, r);
        if (x < 0)
            found = -1;
        else if (x > 0)
            found = 1;
    }
    tern__alias_rec__free_unpacked(al, NULL);
    return found;
}

int model_resolve(struct db *db, const char *address, struct model_resolution *out)
{
    memset(out, 0, sizeof *out);
    struct addr a;
    if (addr_parse(address, &a) != 0)
        return 0;
    int rv = resolve(db, &a, 0, out);
    if (rv <= 0)
        model_resolution_free(out);
    return rv;
}

void model_resolution_free(struct model_resolution *r)
{
    for (size_t i = 0; i < r->nforeign; i++)
        free(r->foreign[i]);
    free(r->foreign);
    free(r->accounts);
    memset(r, 0, sizeof *r);
}

/* A hash of a random password, so that a login for an unknown account spends the same
 * time as one for a real account and timing tells nothing about which accounts exist. */
static char dummy_hash[PASSWD_HASH_MAX];
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;
static void make_dummy(void)
{
    if (passwd_hash("tern-dummy-password", 19, dummy_hash) != 0)
        dummy_hash[0] = 0;
}

int model_verify(struct db *db, const char *address, const char *password, size_t len,
                 uint64_t *id)
{
    Tern__AccountRec *a = NULL;
    int rv = model_account_by_address(db, address, &a);
    if (rv != 1) {
        /* spend the same time as a real check, so timing tells nothing about accounts */
        pthread_once(&dummy_once, make_dummy);
        passwd_verify(dummy_hash, password, len);
        return rv;
    }
    bool ok = passwd_verify(a->password_hash, password, len);
    if (ok)
        *id = a->id;
    tern__account_rec__free_unpacked(a, NULL);
    return ok ? 1 : 0;
}

bool model_quota_allows(uint64_t used_bytes, uint64_t used_messages, uint64_t quota_bytes,
                        uint64_t quota_messages, uint64_t size)
{
    if (quota_messages && used_messages >= quota_messages)
        return false;
    if (quota_bytes) {
        uint64_t grace = quota_bytes / 10;
        if (used_bytes >= quota_bytes || size > quota_bytes + grace - used_bytes)
            return false;
    }
    return true;
}

/* ---- iteration ---- */

/* scan(): records under PREFIX; when INDIRECT, values are u64 account ids to load. */
static int scan(struct db *db, const struct key *prefix, const ProtobufCMessageDescriptor *d,
                bool indirect, model_each_cb *cb, void *ctx)
{
    struct key hi = *prefix;
    if (!key_successor(&hi))
        return -1;
    struct db_iter *it = db_iter_open(db, DB_CF_META, prefix->buf, prefix->len, hi.buf, hi.len);
    if (it == NULL)
        return -1;
    int rv = 0;
    for (; rv == 0 && db_iter_valid(it); db_iter_next(it)) {
        size_t vl;
        const char *v = db_iter_value(it, &vl);
        ProtobufCMessage *m = NULL;
        if (indirect) {
            if (vl != 8) {
                rv = -1;
                break;
            }
            struct key k;
            if (d == &tern__account_rec__descriptor)
                ks_account(&k, be64_get((const uint8_t *) v));
            else
                ks_mailbox(&k, be64_get((const uint8_t *) v));
            int g = get_rec(db, &k, d, &m);
            if (g < 0) {
                rv = -1;
                break;
            }
            if (g == 0)
                continue;
        } else {
            m = protobuf_c_message_unpack(d, NULL, vl, (const uint8_t *) v);
            if (m == NULL) {
                log_error("model.corrupt", "descriptor=%s", d->name);
                rv = -1;
                break;
            }
        }
        rv = cb(ctx, m);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if (db_iter_close(it) != 0)
        rv = -1;
    return rv;
}

int model_domains(struct db *db, model_each_cb *cb, void *ctx)
{
    struct key p;
    key_init(&p, KS_DOMAIN);
    return scan(db, &p, &tern__domain_rec__descriptor, false, cb, ctx);
}

static void domain_prefix(struct key *p, uint8_t fam, const char *domain)
{
    key_init(p, fam);
    if (domain) {
        key_str(p, domain);
        key_u8(p, 0);
    }
}

int model_accounts(struct db *db, const char *domain, model_each_cb *cb, void *ctx)
{
    struct key p;
    domain_prefix(&p, KS_ADDRESS, domain);
    return scan(db, &p, &tern__account_rec__descriptor, true, cb, ctx);
}

int model_aliases(struct db *db, const char *domain, model_each_cb *cb, void *ctx)
{
    struct key p;
    domain_prefix(&p, KS_ALIAS, domain);
    return scan(db, &p, &tern__alias_rec__descriptor, false, cb, ctx);
}

int model_mailboxes(struct db *db, uint64_t account, model_each_cb *cb, void *ctx)
{
    struct key p;
    key_init(&p, KS_MBOXNAME);
    key_u64(&p, account);
    return scan(db, &p, &tern__mailbox_rec__descriptor, true, cb, ctx);
}

int model_queue(struct db *db, model_each_cb *cb, void *ctx)
{
    struct key p;
    key_init(&p, KS_QUEUE);
    return scan(db, &p, &tern__queue_rec__descriptor, false, cb, ctx);
}

int model_members(struct db *db, model_each_cb *cb, void *ctx)
{
    struct key p;
    key_init(&p, KS_MEMBER);
    return scan(db, &p, &tern__member_rec__descriptor, false, cb, ctx);
}

int model_messages(struct db *db, uint64_t mailbox, uint32_t lo, uint32_t hi, model_each_cb *cb,
                   void *ctx)
{
    struct key klo, khi;
    ks_message(&klo, mailbox, lo);
    if (hi == UINT32_MAX) {
        key_init(&khi, KS_MESSAGE);
        key_u64(&khi, mailbox);
        key_successor(&khi);
    } else {
        ks_message(&khi, mailbox, hi + 1);
    }
    struct db_iter *it = db_iter_open(db, DB_CF_META, klo.buf, klo.len, khi.buf, khi.len);
    if (it == NULL)
        return -1;
    int rv = 0;
    for (; rv == 0 && db_iter_valid(it); db_iter_next(it)) {
        size_t vl;
        const char *v = db_iter_value(it, &vl);
        Tern__MessageRec *m = tern__message_rec__unpack(NULL, vl, (const uint8_t *) v);
        if (m == NULL) {
            rv = -1;
            break;
        }
        rv = cb(ctx, &m->base);
        tern__message_rec__free_unpacked(m, NULL);
    }
    if (db_iter_close(it) != 0)
        rv = -1;
    return rv;
}
