/*
 * proxy/imap/session.c
 * The IMAP session: greeting, the command table with the states each command is allowed
 * in, authentication, mailbox commands, SELECT and the per-session view, STORE, EXPUNGE,
 * COPY/MOVE, APPEND, IDLE, and the untagged updates driven by change events.
 * RFC 3501, RFC 9051, 2177 IDLE, 2971 ID, 3691 UNSELECT, 4315 UIDPLUS, 4959 SASL-IR,
 * 5161 ENABLE, 5258 LIST-EXTENDED, 5819 LIST-STATUS, 6154 SPECIAL-USE, 6851 MOVE,
 * 7162 CONDSTORE/QRESYNC, 7888 LITERAL+, 2342 NAMESPACE.
 *
 * Writes (STORE, EXPUNGE, COPY, MOVE, APPEND, mailbox changes) are Commands through Raft:
 * the session holds its connection until the commit and only then answers OK, so
 * pipelined commands wait in the read buffer. SECURITY: see imap.h.
 */
#include "imap.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "address.h"
#include "body_store.h"
#include "cluster.h"
#include "command.h"
#include "fsm.h"
#include "keyspace.h"
#include "log.h"
#include "model.h"
#include "passwd.h"
#include "smtp_parse.h" /* base64 and SASL PLAIN codecs */

#define CAPS_BASE                                                                                  \
    "IMAP4rev1 IMAP4rev2 SASL-IR LITERAL+ ID ENABLE IDLE NAMESPACE UNSELECT UIDPLUS MOVE "         \
    "CHILDREN SPECIAL-USE LIST-EXTENDED LIST-STATUS CONDSTORE QRESYNC ESEARCH STATUS=SIZE "        \
    "QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE SORT SORT=DISPLAY THREAD=ORDEREDSUBJECT "           \
    "THREAD=REFERENCES BINARY"

/* ---- replies ---- */

void imap_untagged(struct imap_sess *s, const char *fmt, ...)
{
    char *buf = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&buf, fmt, ap); /* any length: UID sets can be long */
    va_end(ap);
    if (n < 0)
        return;
    net_conn_write(s->c, "* ", 2);
    net_conn_write(s->c, buf, (size_t) n);
    net_conn_write(s->c, "\r\n", 2);
    free(buf);
}

void imap_tagged(struct imap_sess *s, const char *tag, const char *status, const char *fmt, ...)
{
    char *buf = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&buf, fmt, ap);
    va_end(ap);
    net_conn_write(s->c, tag, strlen(tag));
    net_conn_write(s->c, " ", 1);
    net_conn_write(s->c, status, strlen(status));
    net_conn_write(s->c, " ", 1);
    if (n > 0)
        net_conn_write(s->c, buf, (size_t) n);
    net_conn_write(s->c, "\r\n", 2);
    free(buf);
    if (strcmp(status, "BAD") == 0 && ++s->bad >= IMAP_BAD_MAX) {
        imap_untagged(s, "BYE Too many invalid commands");
        net_conn_close(s->c);
    }
}

/* uid_set(): the numbers V[0..N) (ascending or not) as an IMAP set "1:3,7" (malloc'd). */
static char *uid_set(const uint32_t *v, size_t n)
{
    size_t cap = 64, o = 0;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    out[0] = 0;
    for (size_t k = 0; k < n;) {
        size_t j = k;
        while (j + 1 < n && v[j + 1] == v[j] + 1)
            j++;
        if (o + 32 > cap) {
            cap *= 2;
            char *p = realloc(out, cap);
            if (p == NULL) {
                free(out);
                return NULL;
            }
            out = p;
        }
        if (j > k)
            o += (size_t) snprintf(out + o, cap - o, "%s%u:%u", k ? "," : "", v[k], v[j]);
        else
            o += (size_t) snprintf(out + o, cap - o, "%s%u", k ? "," : "", v[k]);
        k = j + 1;
    }
    return out;
}

void imap_write_string(struct imap_sess *s, const char *str, size_t len)
{
    bool quoted = len <= 1024;
    for (size_t i = 0; quoted && i < len; i++) {
        unsigned char ch = (unsigned char) str[i];
        if (ch == 0 || ch == '\r' || ch == '\n' || ch >= 0x80)
            quoted = false;
    }
    if (!quoted) {
        net_conn_printf(s->c, "{%zu}\r\n", len);
        net_conn_write(s->c, str, len);
        return;
    }
    net_conn_write(s->c, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; i < len; i++)
        if (str[i] == '"' || str[i] == '\\') {
            net_conn_write(s->c, str + start, i - start);
            net_conn_write(s->c, "\\", 1);
            start = i;
        }
    net_conn_write(s->c, str + start, len - start);
    net_conn_write(s->c, "\"", 1);
}

void imap_write_flags(struct imap_sess *s, char **flags, size_t n, uint32_t uid)
{
    net_conn_write(s->c, "(", 1);
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        net_conn_printf(s->c, "%s%s", first ? "" : " ", flags[i]);
        first = false;
    }
    if (s->v && !s->rev2 && uid >= s->v->recent_from)
        net_conn_printf(s->c, "%s\\Recent", first ? "" : " ");
    net_conn_write(s->c, ")", 1);
}

void imap_date(uint64_t t, char out[32])
{
    time_t tt = (time_t) t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    static const char *mons[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    snprintf(out, 32, "%02d-%s-%04d %02d:%02d:%02d +0000", tm.tm_mday, mons[tm.tm_mon],
             tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static void slog(struct imap_sess *s, int level, const char *ev, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void slog(struct imap_sess *s, int level, const char *ev, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    net_conn_log(s->c, level, ev, "%s", buf);
}

static struct db *sdb(struct imap_sess *s)
{
    return net_conn_node(s->c)->db;
}

/* ---- async commands ---- */

/* begin_async(): CMD waits for a completion; the connection is held until imap_done(). */
static void begin_async(struct imap_sess *s, struct imap_cmd *cmd)
{
    s->cur = cmd;
    net_conn_hold(s->c);
}

void imap_done(struct imap_sess *s)
{
    struct net_conn *c = s->c;
    imap_cmd_free(s->cur);
    s->cur = NULL;
    net_conn_release(c); /* last: may free the session */
}

/* propose(): CMD through Raft; DONE gets the result on this loop. Returns 0 or -1 (the
 * caller answers NO). */
static int propose(struct imap_sess *s, Tern__Command *cmd, command_done_cb *done, void *arg)
{
    cmd->account_hint = s->user;
    return command_propose(net_conn_node(s->c)->cons, net_conn_loopq(s->c), cmd, done, arg);
}

/* propose_async(): CMD waits for C's commit, answered by DONE(X). On failure X is freed,
 * CMD answered NO and released. Returns true: CMD was taken over either way. */
static bool propose_async(struct imap_sess *s, struct imap_cmd *cmd, Tern__Command *c,
                          command_done_cb *done, void *x)
{
    begin_async(s, cmd);
    if (propose(s, c, done, x) != 0) {
        free(x);
        imap_tagged(s, cmd->tag, "NO", "[UNAVAILABLE] Try again");
        imap_done(s);
    }
    return true;
}

/* ---- the view ---- */

static bool u32_push(uint32_t **v, size_t *n, size_t *cap, uint32_t x)
{
    if (*n == *cap) {
        size_t nc = *cap ? 2 * *cap : 16;
        uint32_t *p = realloc(*v, nc * sizeof *p);
        if (p == NULL)
            return false;
        *v = p;
        *cap = nc;
    }
    (*v)[(*n)++] = x;
    return true;
}

static void view_free(struct imap_view *v)
{
    if (v == NULL)
        return;
    free(v->uids);
    free(v->pend_new);
    free(v->pend_flags);
    free(v->pend_exp);
    free(v);
}

uint32_t imap_view_msn(const struct imap_view *v, uint32_t uid)
{
    size_t lo = 0, hi = v->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v->uids[mid] < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < v->n && v->uids[lo] == uid ? (uint32_t) lo + 1 : 0;
}

long imap_view_uids(const struct imap_view *v, const struct imap_seqset *set, bool by_uid,
                    uint32_t **out)
{
    uint32_t *r = NULL;
    size_t n = 0, cap = 0;
    *out = NULL;
    if (v->n == 0)
        return 0;
    if (by_uid) {
        uint32_t max = v->uids[v->n - 1];
        for (size_t i = 0; i < v->n; i++)
            if (imap_seqset_contains(set, v->uids[i], max) && !u32_push(&r, &n, &cap, v->uids[i])) {
                free(r);
                return -1;
            }
    } else {
        struct imap_seqset_iter it;
        imap_seqset_iter_init(&it, set, (uint32_t) v->n);
        uint32_t msn;
        while (imap_seqset_iter_next(&it, &msn))
            if (!u32_push(&r, &n, &cap, v->uids[msn - 1])) {
                free(r);
                return -1;
            }
    }
    *out = r;
    return (long) n;
}

struct load_ctx {
    struct imap_view *v;
    bool fail;
    uint32_t first_unseen; /* msn, 0 = none: found in the same pass (SELECT reads once) */
};

static int load_uid(void *ctx, const ProtobufCMessage *m)
{
    struct load_ctx *l = ctx;
    const Tern__MessageRec *r = (const Tern__MessageRec *) m;
    if (!u32_push(&l->v->uids, &l->v->n, &l->v->cap, r->uid)) {
        l->fail = true;
        return 1;
    }
    if (l->first_unseen == 0) {
        bool seen = false;
        for (size_t i = 0; i < r->n_flags && !seen; i++)
            seen = strcasecmp(r->flags[i], "\\Seen") == 0;
        if (!seen)
            l->first_unseen = (uint32_t) l->v->n;
    }
    return 0;
}

Tern__MessageRec *imap_load_message(struct imap_sess *s, uint32_t uid)
{
    Tern__MessageRec *out = NULL;
    struct key k;
    ks_message(&k, s->v->id, uid);
    char *val = NULL;
    size_t vl;
    if (db_get(sdb(s), DB_CF_META, k.buf, k.len, &val, &vl) == 1)
        out = tern__message_rec__unpack(NULL, vl, (const uint8_t *) val);
    free(val);
    return out;
}

void imap_own_store(struct imap_sess *s, uint64_t modseq)
{
    /* events of this STORE may have arrived before its completion: their uids are being
     * reported now, with the newest state, so they need no second FETCH */
    if (s->v) {
        struct imap_view *v = s->v;
        size_t o = 0;
        for (size_t i = 0; i < v->npend_flags; i++) {
            Tern__MessageRec *m = imap_load_message(s, v->pend_flags[i]);
            bool mine = m && m->modseq == modseq;
            if (m)
                tern__message_rec__free_unpacked(m, NULL);
            if (!mine)
                v->pend_flags[o++] = v->pend_flags[i];
        }
        v->npend_flags = o;
        s->v->own_modseq[s->v->own_i++ % 8] = modseq;
        if (modseq > s->v->highestmodseq)
            s->v->highestmodseq = modseq;
    }
}

static bool own(const struct imap_view *v, uint64_t modseq)
{
    for (int i = 0; i < 8; i++)
        if (v->own_modseq[i] == modseq)
            return true;
    return false;
}

static void expunged_now(struct imap_sess *s, uint32_t uid, bool vanished_ok)
{
    struct imap_view *v = s->v;
    uint32_t msn = imap_view_msn(v, uid);
    if (msn == 0)
        return;
    memmove(v->uids + msn - 1, v->uids + msn, (v->n - msn) * sizeof *v->uids);
    v->n--;
    if (s->qresync && vanished_ok)
        imap_untagged(s, "VANISHED %u", uid);
    else
        imap_untagged(s, "%u EXPUNGE", msn);
}

void imap_flush_updates(struct imap_sess *s, bool allow_expunge)
{
    struct imap_view *v = s->v;
    if (v == NULL)
        return;
    if (allow_expunge && v->npend_exp) {
        for (size_t i = 0; i < v->npend_exp; i++)
            expunged_now(s, v->pend_exp[i], true);
        v->npend_exp = 0;
    }
    if (v->npend_new) {
        uint32_t last = v->n ? v->uids[v->n - 1] : 0;
        size_t before = v->n;
        for (size_t i = 0; i < v->npend_new; i++)
            if (v->pend_new[i] > last) {
                if (!u32_push(&v->uids, &v->n, &v->cap, v->pend_new[i]))
                    break;
                last = v->pend_new[i];
            }
        v->npend_new = 0;
        if (v->n != before) {
            imap_untagged(s, "%zu EXISTS", v->n);
            if (!s->rev2) {
                size_t recent = 0;
                for (size_t i = 0; i < v->n; i++)
                    recent += v->uids[i] >= v->recent_from;
                imap_untagged(s, "%zu RECENT", recent);
            }
        }
    }
    for (size_t i = 0; i < v->npend_flags; i++) {
        uint32_t uid = v->pend_flags[i];
        uint32_t msn = imap_view_msn(v, uid);
        if (msn == 0)
            continue;
        Tern__MessageRec *m = imap_load_message(s, uid);
        if (m == NULL)
            continue;
        net_conn_printf(s->c, "* %u FETCH (UID %u FLAGS ", msn, uid);
        imap_write_flags(s, m->flags, m->n_flags, uid);
        if (s->condstore)
            net_conn_printf(s->c, " MODSEQ (%" PRIu64 ")", m->modseq);
        net_conn_write(s->c, ")\r\n", 3);
        tern__message_rec__free_unpacked(m, NULL);
    }
    v->npend_flags = 0;
}

/* ---- events from other sessions and nodes ---- */

static void session_event(void *arg, struct net_conn *c, const struct fsm_event *ev)
{
    struct imap_sess *s = arg;
    struct imap_view *v = s->v;
    if (v == NULL || ev->mailbox_id != v->id)
        return;
    switch (ev->type) {
    case FSM_EV_MESSAGE_NEW:
        u32_push(&v->pend_new, &v->npend_new, &v->cap_new, ev->uid);
        break;
    case FSM_EV_FLAGS:
        if (!own(v, ev->modseq))
            u32_push(&v->pend_flags, &v->npend_flags, &v->cap_flags, ev->uid);
        break;
    case FSM_EV_EXPUNGE:
        u32_push(&v->pend_exp, &v->npend_exp, &v->cap_exp, ev->uid);
        break;
    default:
        return;
    }
    if (ev->modseq > v->highestmodseq && !own(v, ev->modseq))
        v->highestmodseq = ev->modseq;
    if (s->idling)
        imap_flush_updates(s, true);
}

/* ---- capability, noop, logout, id, namespace, enable ---- */

static void write_caps(struct imap_sess *s)
{
    bool tls_avail = net_conn_listen(s->c)->tls == NET_TLS_STARTTLS && !net_conn_tls(s->c);
    net_conn_printf(s->c, "CAPABILITY " CAPS_BASE "%s%s%s", tls_avail ? " STARTTLS" : "",
                    net_conn_secure(s->c) ? " AUTH=PLAIN" : " LOGINDISABLED",
                    s->state == IS_NOTAUTH ? "" : "");
}

static void cmd_capability(struct imap_sess *s, struct imap_cmd *cmd)
{
    net_conn_write(s->c, "* ", 2);
    write_caps(s);
    net_conn_write(s->c, "\r\n", 2);
    imap_tagged(s, cmd->tag, "OK", "CAPABILITY completed");
}

static void cmd_noop(struct imap_sess *s, struct imap_cmd *cmd)
{
    imap_flush_updates(s, true);
    imap_tagged(s, cmd->tag, "OK", "%s completed", cmd->name);
}

static void cmd_logout(struct imap_sess *s, struct imap_cmd *cmd)
{
    imap_untagged(s, "BYE Logging out");
    imap_tagged(s, cmd->tag, "OK", "LOGOUT completed");
    s->state = IS_LOGOUT;
    net_conn_close(s->c);
}

static void cmd_id(struct imap_sess *s, struct imap_cmd *cmd)
{
    imap_untagged(s, "ID (\"name\" \"Tern\" \"vendor\" \"Tern\")");
    imap_tagged(s, cmd->tag, "OK", "ID completed");
}

static void cmd_namespace(struct imap_sess *s, struct imap_cmd *cmd)
{
    imap_untagged(s, "NAMESPACE ((\"\" \"/\")) NIL NIL");
    imap_tagged(s, cmd->tag, "OK", "NAMESPACE completed");
}

static void cmd_enable(struct imap_sess *s, struct imap_cmd *cmd)
{
    char enabled[256] = "";
    for (size_t i = 0; i < cmd->count; i++) {
        const struct imap_arg *a = &cmd->args[i];
        if (imap_arg_atom_equals(a, "CONDSTORE") && !s->condstore) {
            s->condstore = true;
            strcat(enabled, " CONDSTORE");
        } else if (imap_arg_atom_equals(a, "QRESYNC") && !s->qresync) {
            s->qresync = s->condstore = true;
            strcat(enabled, " QRESYNC");
        } else if (imap_arg_atom_equals(a, "IMAP4rev2") && !s->rev2) {
            s->rev2 = true;
            strcat(enabled, " IMAP4rev2");
        }
    }
    imap_untagged(s, "ENABLED%s", enabled);
    imap_tagged(s, cmd->tag, "OK", "ENABLE completed");
}

/* ---- QUOTA (RFC 9208): one root, "", per account ---- */

static int mailbox_name(const struct imap_arg *a, char out[1024]);

static void write_quota(struct imap_sess *s)
{
    Tern__AccountRec *a = NULL;
    if (model_account_get(sdb(s), s->account, &a) != 1) {
        imap_untagged(s, "QUOTA \"\" ()");
        return;
    }
    char res[256] = "";
    size_t o = 0;
    if (a->quota_bytes) /* STORAGE is in units of 1024 octets */
        o += (size_t) snprintf(res + o, sizeof res - o, "STORAGE %" PRIu64 " %" PRIu64,
                               (a->used_bytes + 1023) / 1024, a->quota_bytes / 1024);
    if (a->quota_messages)
        snprintf(res + o, sizeof res - o, "%sMESSAGE %" PRIu64 " %" PRIu64, o ? " " : "",
                 a->used_messages, a->quota_messages);
    imap_untagged(s, "QUOTA \"\" (%s)", res);
    tern__account_rec__free_unpacked(a, NULL);
}

static void cmd_getquotaroot(struct imap_sess *s, struct imap_cmd *cmd)
{
    char name[1024];
    Tern__MailboxRec *m = NULL;
    if (cmd->count != 1 || mailbox_name(&cmd->args[0], name) != 0) {
        imap_tagged(s, cmd->tag, "BAD", "Syntax: GETQUOTAROOT mailbox");
        return;
    }
    if (model_mailbox_by_name(sdb(s), s->account, name, &m) != 1) {
        imap_tagged(s, cmd->tag, "NO", "[NONEXISTENT] No such mailbox");
        return;
    }
    net_conn_write(s->c, "* QUOTAROOT ", 12);
    imap_write_string(s, m->name, strlen(m->name));
    net_conn_write(s->c, " \"\"\r\n", 5);
    tern__mailbox_rec__free_unpacked(m, NULL);
    write_quota(s);
    imap_tagged(s, cmd->tag, "OK", "GETQUOTAROOT completed");
}

static void cmd_getquota(struct imap_sess *s, struct imap_cmd *cmd)
{
    size_t n;
    const char *root = cmd->count == 1 ? imap_arg_astring(&cmd->args[0], &n) : NULL;
    if (root == NULL) {
        imap_tagged(s, cmd->tag, "BAD", "Syntax: GETQUOTA root");
        return;
    }
    if (n != 0) {
        imap_tagged(s, cmd->tag, "NO", "[NONEXISTENT] No such quota root");
        return;
    }
    write_quota(s);
    imap_tagged(s, cmd->tag, "OK", "GETQUOTA completed");
}

static void cmd_setquota(struct imap_sess *s, struct imap_cmd *cmd)
{
    imap_tagged(s, cmd->tag, "NO", "[NOPERM] Quotas are set by the administrator");
}

/* ---- STARTTLS ---- */

static void cmd_starttls(struct imap_sess *s, struct imap_cmd *cmd)
{
    if (net_conn_listen(s->c)->tls != NET_TLS_STARTTLS || net_conn_tls(s->c)) {
        imap_tagged(s, cmd->tag, "BAD", "STARTTLS not available");
        return;
    }
    imap_tagged(s, cmd->tag, "OK", "Begin TLS negotiation now");
    imap_parser_reset(s->parser); /* RFC 3501 6.2.1: nothing sent before TLS counts */
    if (net_conn_starttls(s->c) != 0)
        net_conn_close(s->c);
}

/* ---- LOGIN, AUTHENTICATE ---- */

struct auth_job {
    uv_work_t work;
    uv_timer_t delay; /* a failed login is answered after IMAP_FAIL_DELAY_MS */
    struct imap_sess *s;
    char user[ADDR_MAX + 1];
    char pass[PASSWD_MAX + 1];
    size_t passlen;
    int rv;
    uint64_t id;
    char tag[IMAP_PARSER_TAG_MAX + 1];
};

static void auth_work(uv_work_t *w)
{
    struct auth_job *j = w->data;
    j->rv = model_verify(net_conn_node(j->s->c)->db, j->user, j->pass, j->passlen, &j->id);
    OPENSSL_cleanse(j->pass, sizeof j->pass);
}

static void job_closed(uv_handle_t *h)
{
    struct auth_job *j = h->data;
    struct imap_sess *s = j->s;
    OPENSSL_cleanse(j, sizeof *j);
    free(j);
    imap_done(s);
}

static void failed_reply(uv_timer_t *t)
{
    struct auth_job *j = t->data;
    struct imap_sess *s = j->s;
    if (!net_conn_closing(s->c)) {
        imap_tagged(s, j->tag, "NO", "[AUTHENTICATIONFAILED] Authentication failed");
        if (++s->login_failures >= IMAP_LOGIN_FAILURES) {
            imap_untagged(s, "BYE Too many authentication failures");
            net_conn_close(s->c);
        }
    }
    uv_close((uv_handle_t *) &j->delay, job_closed);
}

static void auth_done(uv_work_t *w, int status)
{
    struct auth_job *j = w->data;
    struct imap_sess *s = j->s;
    struct net_conn *c = s->c;
    if (!net_conn_closing(c)) {
        if (status == 0 && j->rv == 1) {
            s->state = IS_AUTH;
            s->account = j->id;
            struct addr a;
            snprintf(s->user, sizeof s->user, "%s",
                     addr_parse(j->user, &a) == 0 ? a.full : j->user);
            net_conn_printf(c, "%s OK [", j->tag);
            write_caps(s);
            net_conn_printf(c, "] Logged in\r\n");
            net_conn_timeout(c, IMAP_AUTOLOGOUT_MS);
            slog(s, LOG_INFO, "imap.login", "result=ok user=%s", s->user);
        } else if (status == 0 && j->rv == 0) {
            char q[LOG_Q_MAX];
            slog(s, LOG_INFO, "imap.login", "result=failed user=%s", log_q(q, j->user));
            /* answered late: guessing passwords costs the guesser time */
            uv_timer_start(&j->delay, failed_reply, IMAP_FAIL_DELAY_MS, 0);
            return;
        } else {
            imap_tagged(s, j->tag, "NO", "[UNAVAILABLE] Temporary authentication failure");
        }
    }
    uv_close((uv_handle_t *) &j->delay, job_closed);
}

/* login(): checks USER/PASS in the thread pool, CMD (may be NULL) is answered there. */
static void login(struct imap_sess *s, struct imap_cmd *cmd, const char *tag, const char *user,
                  size_t ulen, const char *pass, size_t plen)
{
    if (ulen > ADDR_MAX || plen > PASSWD_MAX || plen == 0) {
        imap_tagged(s, tag, "NO", "[AUTHENTICATIONFAILED] Authentication failed");
        imap_cmd_free(cmd);
        return;
    }
    struct auth_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        imap_tagged(s, tag, "NO", "[UNAVAILABLE] Out of memory");
        imap_cmd_free(cmd);
        return;
    }
    j->s = s;
    memcpy(j->user, user, ulen);
    memcpy(j->pass, pass, plen);
    j->passlen = plen;
    snprintf(j->tag, sizeof j->tag, "%s", tag);
    j->work.data = j->delay.data = j;
    uv_timer_init(net_conn_loop(s->c), &j->delay);
    begin_async(s, cmd);
    if (uv_queue_work(net_conn_loop(s->c), &j->work, auth_work, auth_done) != 0) {
        imap_tagged(s, tag, "NO", "[UNAVAILABLE] Try again");
        uv_close((uv_handle_t *) &j->delay, job_closed);
    }
}

static bool may_login(struct imap_sess *s, const char *tag)
{
    if (!net_conn_secure(s->c)) {
        imap_tagged(s, tag, "NO", "[PRIVACYREQUIRED] Use STARTTLS first");
        return false;
    }
    return true;
}

/* returns true when the command was taken over (async) */
static bool cmd_login(struct imap_sess *s, struct imap_cmd *cmd)
{
    size_t ul, pl;
    const char *u = cmd->count == 2 ? imap_arg_astring(&cmd->args[0], &ul) : NULL;
    const char *p = cmd->count == 2 ? imap_arg_astring(&cmd->args[1], &pl) : NULL;
    if (u == NULL || p == NULL) {
        imap_tagged(s, cmd->tag, "BAD", "Syntax: LOGIN user password");
        return false;
    }
    if (!may_login(s, cmd->tag))
        return false;
    login(s, cmd, cmd->tag, u, ul, p, pl);
    return true;
}

static bool auth_plain(struct imap_sess *s, struct imap_cmd *cmd, const char *tag, const char *b64,
                       size_t n)
{
    uint8_t dec[2048];
    size_t dl = 0;
    struct smtp_plain p;
    if (n > 2700 || smtp_base64_decode(b64, n, dec, sizeof dec, &dl) != 0 ||
        smtp_sasl_plain(dec, dl, &p) != 0) {
        OPENSSL_cleanse(dec, sizeof dec);
        imap_tagged(s, tag, "BAD", "Invalid SASL PLAIN response");
        return false; /* CMD stays the caller's (run() frees it) */
    }
    OPENSSL_cleanse(dec, sizeof dec);
    if (p.authzid[0] && strcasecmp(p.authzid, p.authcid) != 0) {
        explicit_bzero(&p, sizeof p);
        imap_tagged(s, tag, "NO", "[AUTHORIZATIONFAILED] Authorization identity not allowed");
        return false;
    }
    login(s, cmd, tag, p.authcid, strlen(p.authcid), p.passwd, strlen(p.passwd));
    explicit_bzero(&p, sizeof p);
    return true;
}

static bool cmd_authenticate(struct imap_sess *s, struct imap_cmd *cmd)
{
    if (cmd->count < 1 || !imap_arg_atom_equals(&cmd->args[0], "PLAIN")) {
        imap_tagged(s, cmd->tag, "NO", "Unsupported authentication mechanism");
        return false;
    }
    if (!may_login(s, cmd->tag))
        return false;
    if (cmd->count >= 2) { /* SASL-IR */
        size_t n;
        const char *ir = imap_arg_astring(&cmd->args[1], &n);
        if (ir == NULL || (n == 1 && ir[0] == '=')) {
            ir = "";
            n = 0;
        }
        return auth_plain(s, cmd, cmd->tag, ir, n);
    }
    s->authenticating = true;
    snprintf(s->pending_tag, sizeof s->pending_tag, "%s", cmd->tag);
    net_conn_write(s->c, "+ \r\n", 4);
    return false;
}

/* auth_line(): the client's answer to "+ " (RFC 3501 6.2.2); "*" cancels. */
static void auth_line(struct imap_sess *s, const char *line, size_t n)
{
    s->authenticating = false;
    if (n == 1 && line[0] == '*') {
        imap_tagged(s, s->pending_tag, "BAD", "Authentication cancelled");
        return;
    }
    auth_plain(s, NULL, s->pending_tag, line, n);
}

/* ---- mailbox names and LIST ---- */

/* find_mailbox(): the account's mailbox NAME, or NULL after answering TAG with NO and
 * MISSING ("[NONEXISTENT]", "[TRYCREATE]") or [SERVERBUG] on a storage error. */
static Tern__MailboxRec *find_mailbox(struct imap_sess *s, const char *tag, const char *name,
                                      const char *missing)
{
    Tern__MailboxRec *m = NULL;
    int rv = model_mailbox_by_name(sdb(s), s->account, name, &m);
    if (rv <= 0) {
        imap_tagged(s, tag, "NO", "%s", rv < 0 ? "[SERVERBUG] Storage error" : missing);
        return NULL;
    }
    return m;
}

static int mailbox_name(const struct imap_arg *a, char out[1024])
{
    size_t n;
    const char *p = imap_arg_astring(a, &n);
    if (p == NULL || n == 0 || n >= 1024 || memchr(p, 0, n))
        return -1;
    memcpy(out, p, n);
    out[n] = 0;
    if (strncasecmp(out, "INBOX", 5) == 0 && (out[5] == 0 || out[5] == '/'))
        memcpy(out, "INBOX", 5);
    return 0;
}

/* match(): LIST pattern matching, '*' anything, '%' anything but '/'. O(n*m), no
 * recursion, so hostile patterns cost at most pattern x name steps. */
static bool match(const char *pat, const char *name)
{
    size_t m = strlen(pat), n = strlen(name);
    if (m > 1024 || n > 1024)
        return false;
    bool *prev = calloc(m + 1, sizeof *prev), *cur = calloc(m + 1, sizeof *cur);
    bool r = false;
    if (prev == NULL || cur == NULL)
        goto out;
    prev[0] = true;
    for (size_t j = 1; j <= m; j++)
        prev[j] = prev[j - 1] && (pat[j - 1] == '*' || pat[j - 1] == '%');
    for (size_t i = 1; i <= n; i++) {
        cur[0] = false;
        for (size_t j = 1; j <= m; j++) {
            char pc = pat[j - 1];
            if (pc == '*')
                cur[j] = cur[j - 1] || prev[j];
            else if (pc == '%')
                cur[j] = cur[j - 1] || (prev[j] && name[i - 1] != '/');
            else
                cur[j] = prev[j - 1] && pc == name[i - 1];
        }
        bool *t = prev;
        prev = cur;
        cur = t;
    }
    r = prev[m];
out:
    free(prev);
    free(cur);
    return r;
}

struct mbox_entry {
    Tern__MailboxRec *m;
};

struct mbox_list {
    Tern__MailboxRec **v;
    size_t n, cap;
};

static int collect_mbox(void *ctx, const ProtobufCMessage *m)
{
    struct mbox_list *l = ctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        Tern__MailboxRec **v = realloc(l->v, cap * sizeof *v);
        if (v == NULL)
            return 1;
        l->v = v;
        l->cap = cap;
    }
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return 1;
    protobuf_c_message_pack(m, buf);
    l->v[l->n] = tern__mailbox_rec__unpack(NULL, len, buf);
    free(buf);
    if (l->v[l->n] == NULL)
        return 1;
    l->n++;
    return 0;
}

static void mbox_list_free(struct mbox_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        tern__mailbox_rec__free_unpacked(l->v[i], NULL);
    free(l->v);
}

static bool has_children(const struct mbox_list *l, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < l->n; i++)
        if (strncmp(l->v[i]->name, name, n) == 0 && l->v[i]->name[n] == '/')
            return true;
    return false;
}

static void write_status_items(struct imap_sess *s, const Tern__MailboxRec *m,
                               const struct imap_arg *items, size_t n);

static void cmd_list(struct imap_sess *s, struct imap_cmd *cmd)
{
    bool lsub = strcmp(cmd->name, "LSUB") == 0;
    size_t i = 0;
    bool sel_subscribed = false, sel_special = false, ret_subscribed = lsub, ret_special = false;
    const struct imap_arg *status_items = NULL;
    size_t nstatus = 0;
    if (!lsub && i < cmd->count && cmd->args[i].type == IMAP_ARG_LIST) { /* selection options */
        for (size_t j = 0; j < cmd->args[i].count; j++) {
            if (imap_arg_atom_equals(&cmd->args[i].list[j], "SUBSCRIBED"))
                sel_subscribed = ret_subscribed = true;
            else if (imap_arg_atom_equals(&cmd->args[i].list[j], "SPECIAL-USE"))
                sel_special = ret_special = true;
        }
        i++;
    }
    if (i + 2 > cmd->count) {
        imap_tagged(s, cmd->tag, "BAD", "Syntax: LIST reference pattern");
        return;
    }
    size_t rl, pl;
    const char *ref = imap_arg_astring(&cmd->args[i], &rl);
    const struct imap_arg *pats = &cmd->args[i + 1];
    size_t npats = pats->type == IMAP_ARG_LIST ? pats->count : 1;
    if (pats->type == IMAP_ARG_LIST)
        pats = pats->list;
    if (ref == NULL || rl > 512) {
        imap_tagged(s, cmd->tag, "BAD", "Bad reference");
        return;
    }
    for (size_t j = i + 2; j < cmd->count; j++) { /* RETURN (...) */
        if (imap_arg_atom_equals(&cmd->args[j], "RETURN") && j + 1 < cmd->count &&
            cmd->args[j + 1].type == IMAP_ARG_LIST) {
            const struct imap_arg *r = &cmd->args[j + 1];
            for (size_t k = 0; k < r->count; k++) {
                if (imap_arg_atom_equals(&r->list[k], "SUBSCRIBED"))
                    ret_subscribed = true;
                else if (imap_arg_atom_equals(&r->list[k], "SPECIAL-USE"))
                    ret_special = true;
                else if (imap_arg_atom_equals(&r->list[k], "STATUS") && k + 1 < r->count &&
                         r->list[k + 1].type == IMAP_ARG_LIST) {
                    status_items = r->list[k + 1].list;
                    nstatus = r->list[k + 1].count;
                    k++;
                }
            }
            j++;
        }
    }
    (void) ret_special;
    struct mbox_list l = {0};
    if (model_mailboxes(sdb(s), s->account, collect_mbox, &l) < 0) {
        mbox_list_free(&l);
        imap_tagged(s, cmd->tag, "NO", "[SERVERBUG] Storage error");
        return;
    }
    for (size_t p = 0; p < npats; p++) {
        const char *pat = imap_arg_astring(&pats[p], &pl);
        if (pat == NULL)
            continue;
        char full[1100];
        snprintf(full, sizeof full, "%.*s%.*s", (int) rl, ref, (int) pl, pat);
        if (pl == 0 && !lsub) { /* the hierarchy delimiter and root (RFC 3501 6.3.8) */
            imap_untagged(s, "LIST (\\Noselect) \"/\" \"\"");
            continue;
        }
        for (size_t k = 0; k < l.n; k++) {
            Tern__MailboxRec *m = l.v[k];
            const char *name = m->name;
            if (!match(full, name))
                continue;
            if ((lsub || sel_subscribed) && !m->subscribed)
                continue;
            if (sel_special && (!m->special_use || !m->special_use[0]))
                continue;
            char attrs[256];
            snprintf(attrs, sizeof attrs, "%s%s%s%s",
                     has_children(&l, name) ? "\\HasChildren" : "\\HasNoChildren",
                     ret_subscribed && m->subscribed && !lsub ? " \\Subscribed" : "",
                     m->special_use && m->special_use[0] ? " " : "",
                     m->special_use ? m->special_use : "");
            net_conn_printf(s->c, "* %s (%s) \"/\" ", lsub ? "LSUB" : "LIST", attrs);
            imap_write_string(s, name, strlen(name));
            net_conn_write(s->c, "\r\n", 2);
            if (status_items && !lsub) {
                net_conn_write(s->c, "* STATUS ", 9);
                imap_write_string(s, name, strlen(name));
                net_conn_write(s->c, " ", 1);
                write_status_items(s, m, status_items, nstatus);
                net_conn_write(s->c, "\r\n", 2);
            }
        }
        /* levels that exist only as parents of others (RFC 3501 6.3.8: \Noselect) */
        if (lsub || sel_subscribed || sel_special)
            continue;
        struct mbox_list shown = {0};
        for (size_t k = 0; k < l.n; k++) {
            char prefix[1024];
            snprintf(prefix, sizeof prefix, "%s", l.v[k]->name);
            for (char *slash = strchr(prefix, '/'); slash; slash = strchr(slash + 1, '/')) {
                *slash = 0;
                bool exists = false, seen = false;
                for (size_t q = 0; q < l.n && !exists; q++)
                    exists = strcmp(l.v[q]->name, prefix) == 0;
                for (size_t q = 0; q < shown.n && !seen; q++)
                    seen = strcmp(shown.v[q]->name, prefix) == 0;
                if (!exists && !seen && match(full, prefix)) {
                    Tern__MailboxRec tmp = TERN__MAILBOX_REC__INIT;
                    tmp.name = prefix;
                    collect_mbox(&shown, &tmp.base);
                    net_conn_write(s->c, "* LIST (\\Noselect \\HasChildren) \"/\" ", 36);
                    imap_write_string(s, prefix, strlen(prefix));
                    net_conn_write(s->c, "\r\n", 2);
                }
                *slash = '/';
            }
        }
        mbox_list_free(&shown);
    }
    mbox_list_free(&l);
    imap_tagged(s, cmd->tag, "OK", "%s completed", cmd->name);
}

/* ---- STATUS ---- */

static int count_one(void *ctx, const ProtobufCMessage *m)
{
    (void) m;
    (*(size_t *) ctx)++;
    return 0;
}

static int count_deleted_one(void *ctx, const ProtobufCMessage *m)
{
    const Tern__MessageRec *r = (const Tern__MessageRec *) m;
    for (size_t i = 0; i < r->n_flags; i++)
        if (strcasecmp(r->flags[i], "\\Deleted") == 0) {
            (*(size_t *) ctx)++;
            break;
        }
    return 0;
}

/* count_deleted(): STATUS DELETED (RFC 9051 6.3.11): messages flagged \Deleted. */
static size_t count_deleted(struct imap_sess *s, const Tern__MailboxRec *m)
{
    size_t n = 0;
    model_messages(sdb(s), m->id, 1, UINT32_MAX, count_deleted_one, &n);
    return n;
}

/* count_recent(): messages no session has claimed as \Recent yet. */
static size_t count_recent(struct imap_sess *s, const Tern__MailboxRec *m)
{
    uint32_t first = m->has_first_recent_uid && m->first_recent_uid ? m->first_recent_uid : 1;
    size_t n = 0;
    if (first < m->uidnext)
        model_messages(sdb(s), m->id, first, UINT32_MAX, count_one, &n);
    return n;
}

static void write_status_items(struct imap_sess *s, const Tern__MailboxRec *m,
                               const struct imap_arg *items, size_t n)
{
    net_conn_write(s->c, "(", 1);
    for (size_t i = 0; i < n; i++) {
        const char *sep = i ? " " : "";
        const struct imap_arg *a = &items[i];
        if (imap_arg_atom_equals(a, "MESSAGES"))
            net_conn_printf(s->c, "%sMESSAGES %" PRIu64, sep, m->messages);
        else if (imap_arg_atom_equals(a, "RECENT"))
            net_conn_printf(s->c, "%sRECENT %zu", sep, count_recent(s, m));
        else if (imap_arg_atom_equals(a, "UIDNEXT"))
            net_conn_printf(s->c, "%sUIDNEXT %u", sep, m->uidnext);
        else if (imap_arg_atom_equals(a, "UIDVALIDITY"))
            net_conn_printf(s->c, "%sUIDVALIDITY %u", sep, m->uidvalidity);
        else if (imap_arg_atom_equals(a, "UNSEEN"))
            net_conn_printf(s->c, "%sUNSEEN %" PRIu64, sep, m->unseen);
        else if (imap_arg_atom_equals(a, "HIGHESTMODSEQ"))
            net_conn_printf(s->c, "%sHIGHESTMODSEQ %" PRIu64, sep, m->highestmodseq);
        else if (imap_arg_atom_equals(a, "SIZE"))
            net_conn_printf(s->c, "%sSIZE %" PRIu64, sep, m->bytes);
        else if (imap_arg_atom_equals(a, "DELETED"))
            net_conn_printf(s->c, "%sDELETED %zu", sep, count_deleted(s, m));
    }
    net_conn_write(s->c, ")", 1);
}

static bool status_items_valid(const struct imap_arg *a)
{
    static const char *ok[] = {"MESSAGES", "RECENT",        "UIDNEXT", "UIDVALIDITY",
                               "UNSEEN",   "HIGHESTMODSEQ", "SIZE",    "DELETED"};
    if (a->type != IMAP_ARG_LIST || a->count == 0)
        return false;
    for (size_t i = 0; i < a->count; i++) {
        bool found = false;
        for (size_t j = 0; j < sizeof ok / sizeof ok[0]; j++)
            found = found || imap_arg_atom_equals(&a->list[i], ok[j]);
        if (!found)
            return false;
    }
    return true;
}

static void cmd_status(struct imap_sess *s, struct imap_cmd *cmd)
{
    char name[1024];
    if (cmd->count != 2 || mailbox_name(&cmd->args[0], name) != 0 ||
        !status_items_valid(&cmd->args[1])) {
        imap_tagged(s, cmd->tag, "BAD", "Syntax: STATUS mailbox (items)");
        return;
    }
    Tern__MailboxRec *m = find_mailbox(s, cmd->tag, name, "[NONEXISTENT] No such mailbox");
    if (m == NULL) {
        return;
    }
    net_conn_write(s->c, "* STATUS ", 9);
    imap_write_string(s, m->name, strlen(m->name));
    net_conn_write(s->c, " ", 1);
    write_status_items(s, m, cmd->args[1].list, cmd->args[1].count);
    net_conn_write(s->c, "\r\n", 2);
    tern__mailbox_rec__free_unpacked(m, NULL);
    imap_flush_updates(s, true);
    imap_tagged(s, cmd->tag, "OK", "STATUS completed");
}

/* ---- mailbox writes: CREATE, DELETE, RENAME, SUBSCRIBE ---- */

struct simple_ctx {
    struct imap_sess *s;
    char tag[IMAP_PARSER_TAG_MAX + 1];
    char what[16];
};

static void simple_done(void *arg, int status, uint64_t index, const Tern__Result *res)
{
    struct simple_ctx *x = arg;
    struct imap_sess *s = x->s;
    if (!net_conn_closing(s->c)) {
        if (status != 0)
            imap_tagged(s, x->tag, "NO", "[UNAVAILABLE] %s", cons_strerror(status));
        else if (res->status == RESULT_EXISTS)
            imap_tagged(s, x->tag, "NO", "[ALREADYEXISTS] %s", res->error ? res->error : "exists");
        else if (res->status == RESULT_NOTFOUND)
            imap_tagged(s, x->tag, "NO", "[NONEXISTENT] %s", res->error ? res->error : "not found");
        else if (res->status != RESULT_OK)
            imap_tagged(s, x->tag, "NO", "[CANNOT] %s", res->error ? res->error : "refused");
        else
            imap_tagged(s, x->tag, "OK", "%s completed", x->what);
    }
    free(x);
    imap_done(s);
}

static bool propose_simple(struct imap_sess *s, struct imap_cmd *cmd, Tern__Command *c)
{
    struct simple_ctx *x = calloc(1, sizeof *x);
    if (x == NULL) {
        imap_tagged(s, cmd->tag, "NO", "[UNAVAILABLE] Out of memory");
        return false;
    }
    x->s = s;
    snprintf(x->tag, sizeof x->tag, "%s", cmd->tag);
    snprintf(x->what, sizeof x->what, "%s", cmd->name);
    return propose_async(s, cmd, c, simple_done, x);
}

static bool cmd_create(struct imap_sess *s, struct imap_cmd *cmd)
{
    char name[1024];
    if (cmd->count < 1 || mailbox_name(&cmd->args[0], name) != 0) {
        imap_tagged(s, cmd->tag, "BAD", "Syntax: CREATE mailbox");
        return false;
    }
    size_t n = strlen(name);
    if (n > 1 && name[n - 1] == '/') /* RFC 3501 6.3.3: a trailing separator is dropped */
        name[n - 1] = 0;
    Tern__MailboxCreate op = TERN__MAILBOX_CREATE__INIT;
    op.account = s->user;
    op.name = name;
    Tern__Command c = TERN__COMMAND__INIT;
    c.op_case = TERN__COMMAND__OP_MAILBOX_CREATE;
    c.mailbox_create = &op;
    return propose_simple(s, cmd, &c);
}

static bool cmd_delete(struct imap_sess *s, struct imap_cmd *cmd)
{
    char name[1024];
    if (cmd->count != 1 || mailbox_name(&cmd->args[0], name) != 0) {
        imap_tagged(s, cmd->tag, "BAD", "Syntax: DELETE mailbox");
        return false;
    }
    if (s->v) { /* deleting the selected mailbox: unselect it (as Dovecot) */
        Tern__MailboxRec *m = NULL;
        if (model_mailbox_by_name(sdb(s), s->account, name, &m) == 1 && m->id == s->v->id) {
            net_conn_watch(s->c, 0);
            view_free(s->v);
            s->v = NULL;
            s->state = IS_AUTH;
        }
        if (m)
            tern__mailbox_rec__free_unpacked(m, NULL);
    }
    Tern__MailboxDelete op = TERN__MAILBOX_DELETE__INIT;
    op.account = s->user;
    op.name = name;
    Tern__Command c = TERN__COMMAND__INIT;
    c.op_case = TERN__COMMAND__OP_MAILBOX_DELETE;
    c.mailbox_delete = &op;
    return propose_simple(s, cmd, &c);
}

static bool cmd_rename(struct imap_sess *s, struct imap_cmd *cmd)
{
    char from[1024], to[1024];
    if (cmd->count != 2 || mailbox_name(&cmd->args[0], from) != 0 ||
        mailbox_name(&cmd->args[1], to) != 0) {
        imap_tagged(s, cmd->tag, "BAD", "Syntax: RENAME from to");
        return false;
    }
    Tern__MailboxRename op = TERN__MAILBOX_RENAME__INIT;
    op.account = s->user;
    op.from = from;
    op.to = to;
    Tern__Command c = TERN__COMMAND__INIT;
    c.op_case = TERN__COMMAND__OP_MAILBOX_RENAME;
    c.mailbox_rename = &op;
    return propose_simple(s, cmd, &c);
}

static bool cmd_subscribe(struct imap_sess *s, struct imap_cmd *cmd)
{
    char name[1024];
    if (cmd->count != 1 || mailbox_name(&cmd->args[0], name) != 0) {
        imap_tagged(s, cmd->tag, "BAD", "Syntax: %s mailbox", cmd->name);
        return false;
    }
    Tern__MailboxSubscribe op = TERN__MAILBOX_SUBSCRIBE__INIT;
    op.account = s->user;
    op.name = name;
    op.subscribed = strcmp(cmd->name, "SUBSCRIBE") == 0;
    Tern__Command c = TERN__COMMAND__INIT;
    c.op_case = TERN__COMMAND__OP_MAILBOX_SUBSCRIBE;
    c.mailbox_subscribe = &op;
    return propose_simple(s, cmd, &c);
}

/* ---- SELECT, EXAMINE, CLOSE, UNSELECT ---- */

struct unseen_ctx {
    struct imap_sess *s;
    size_t idx;
    uint32_t first_unseen;
    uint64_t since;                  /* QRESYNC: report messages changed after this modseq */
    const struct imap_seqset *known; /* QRESYNC known-uids, or NULL */
};

static int scan_unseen(void *ctx, const ProtobufCMessage *m)
{
    struct unseen_ctx *u = ctx;
    const Tern__MessageRec *r = (const Tern__MessageRec *) m;
    u->idx++;
    bool seen = false;
    for (size_t i = 0; i < r->n_flags; i++)
        seen = seen || strcasecmp(r->flags[i], "\\Seen") == 0;
    if (!seen && u->first_unseen == 0)
        u->first_unseen = (uint32_t) u->idx;
    if (u->since && r->modseq > u->since) {
        net_conn_printf(u->s->c, "* %zu FETCH (UID %u FLAGS ", u->idx, r->uid);
        imap_write_flags(u->s, r->flags, r->n_flags, r->uid);
        net_conn_printf(u->s->c, " MODSEQ (%" PRIu64 "))\r\n", r->modseq);
    }
    return 0;
}

struct vanished_ctx {
    struct imap_sess *s;
    uint64_t since;
    char *buf;
    size_t len, cap;
    uint32_t max_uid;
};

/* imap_vanished(): "* VANISHED (EARLIER) uids" of the expunges in mailbox ID after SINCE,
 * limited to the UIDs of SET when given (RFC 7162 3.2.5.2, 3.2.6). */
void imap_vanished(struct imap_sess *s, uint64_t id, uint64_t since, const struct imap_seqset *set)
{
    struct key lo, hi;
    key_init(&lo, KS_EXPUNGED);
    key_u64(&lo, id);
    hi = lo;
    key_successor(&hi);
    struct db_iter *it = db_iter_open(sdb(s), DB_CF_META, lo.buf, lo.len, hi.buf, hi.len);
    if (it == NULL)
        return;
    uint32_t *v = NULL;
    size_t n = 0, cap = 0;
    for (; db_iter_valid(it); db_iter_next(it)) {
        size_t kl, vl;
        const char *k = db_iter_key(it, &kl);
        const char *val = db_iter_value(it, &vl);
        if (kl != 13)
            continue;
        uint32_t uid = be32_get((const uint8_t *) k + 9);
        if (set && !imap_seqset_contains(set, uid, UINT32_MAX))
            continue;
        Tern__ExpungedRec *x = tern__expunged_rec__unpack(NULL, vl, (const uint8_t *) val);
        if (x == NULL)
            continue;
        if (x->modseq > since)
            u32_push(&v, &n, &cap, uid);
        tern__expunged_rec__free_unpacked(x, NULL);
    }
    db_iter_close(it);
    if (n) {
        char *str = uid_set(v, n);
        if (str)
            imap_untagged(s, "VANISHED (EARLIER) %s", str);
        free(str);
    }
    free(v);
}

struct select_ctx {
    struct imap_sess *s;
    Tern__MailboxRec *m;
    uint32_t first_unseen;
    bool examine;
    uint64_t qr_validity, qr_modseq;
    char tag[IMAP_PARSER_TAG_MAX + 1];
};

/* select_respond(): the untagged data of SELECT/EXAMINE and its OK; frees X. */
static void select_respond(struct select_ctx *x)
{
    struct imap_sess *s = x->s;
    struct imap_view *v = s->v;
    Tern__MailboxRec *m = x->m;
    bool examine = x->examine;
    if (v != NULL && !net_conn_closing(s->c)) {
        imap_untagged(s, "FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)");
        imap_untagged(s, "OK [PERMANENTFLAGS (%s)] Flags permitted",
                      examine ? "" : "\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*");
        imap_untagged(s, "%zu EXISTS", v->n);
        if (!s->rev2) {
            size_t recent = 0;
            for (size_t i = 0; i < v->n; i++)
                recent += v->uids[i] >= v->recent_from;
            imap_untagged(s, "%zu RECENT", recent);
        }
        struct unseen_ctx u = {.s = s};
        if (x->qr_validity && x->qr_validity == v->uidvalidity) {
            /* QRESYNC: a second pass, only when asked for, for what changed since */
            imap_vanished(s, v->id, x->qr_modseq, NULL);
            u.since = x->qr_modseq;
            model_messages(sdb(s), v->id, 1, UINT32_MAX, scan_unseen, &u);
        }
        if (x->first_unseen && !s->rev2)
            imap_untagged(s, "OK [UNSEEN %u] First unseen", x->first_unseen);
        imap_untagged(s, "OK [UIDVALIDITY %u] UIDs valid", v->uidvalidity);
        imap_untagged(s, "OK [UIDNEXT %u] Predicted next UID", m->uidnext);
        imap_untagged(s, "OK [HIGHESTMODSEQ %" PRIu64 "] Highest", m->highestmodseq);
        if (s->rev2) {
            net_conn_write(s->c, "* LIST () \"/\" ", 14);
            imap_write_string(s, m->name, strlen(m->name));
            net_conn_write(s->c, "\r\n", 2);
        }
        imap_tagged(s, x->tag, "OK", "[%s] %s completed", examine ? "READ-ONLY" : "READ-WRITE",
                    examine ? "EXAMINE" : "SELECT");
    }
    tern__mailbox_rec__free_unpacked(m, NULL);
    free(x);
}

static void recent_claimed(void *arg, int status, uint64_t index, const Tern__Result *res)
{
    struct select_ctx *x = arg;
    struct imap_sess *s = x->s;
    if (s->v && status == 0 && res->status == RESULT_OK && res->has_id)
        s->v->recent_from = (uint32_t) res->id; /* this session's \Recent messages */
    select_respond(x);
    imap_done(s);
}

static void unselect(struct imap_sess *s);

static bool cmd_select(struct imap_sess *s, struct imap_cmd *cmd)
{
    bool examine = strcmp(cmd->name, "EXAMINE") == 0;
    char name[1024];
    if (s->v) { /* a new SELECT closes the old one without expunging (RFC 3501 6.3.1) */
        net_conn_watch(s->c, 0);
        view_free(s->v);
        s->v = NULL;
        s->state = IS_AUTH;
        if (s->qresync)
            imap_untagged(s, "OK [CLOSED] Previous mailbox closed");
    }
    if (cmd->count < 1 || mailbox_name(&cmd->args[0], name) != 0) {
        imap_tagged(s, cmd->tag, "BAD", "Syntax: %s mailbox", cmd->name);
        return false;
    }
    uint64_t qr_validity = 0, qr_modseq = 0;
    if (cmd->count >= 2 && cmd->args[1].type == IMAP_ARG_LIST) {
        const struct imap_arg *p = &cmd->args[1];
        for (size_t i = 0; i < p->count; i++) {
            if (imap_arg_atom_equals(&p->list[i], "CONDSTORE"))
                s->condstore = true;
            else if (imap_arg_atom_equals(&p->list[i], "QRESYNC") && i + 1 < p->count &&
                     p->list[i + 1].type == IMAP_ARG_LIST && p->list[i + 1].count >= 2) {
                if (!s->qresync) {
                    imap_tagged(s, cmd->tag, "BAD", "QRESYNC is not enabled");
                    return false;
                }
                const struct imap_arg *q = p->list[i + 1].list;
                qr_validity = strtoull(q[0].str ? q[0].str : "0", NULL, 10);
                qr_modseq = strtoull(q[1].str ? q[1].str : "0", NULL, 10);
                i++;
            }
        }
    }
    Tern__MailboxRec *m = find_mailbox(s, cmd->tag, name, "[NONEXISTENT] No such mailbox");
    if (m == NULL) {
        return false;
    }
    struct imap_view *v = calloc(1, sizeof *v);
    if (v == NULL) {
        tern__mailbox_rec__free_unpacked(m, NULL);
        imap_tagged(s, cmd->tag, "NO", "[UNAVAILABLE] Out of memory");
        return false;
    }
    v->id = m->id;
    v->uidvalidity = m->uidvalidity;
    v->readonly = examine;
    v->highestmodseq = m->highestmodseq;
    v->recent_from = m->uidnext; /* EXAMINE claims nothing: nothing is \Recent to it */
    /* watch before reading, so that nothing committed in between is missed */
    net_conn_watch(s->c, v->id);
    struct load_ctx l = {.v = v};
    if (model_messages(sdb(s), v->id, 1, UINT32_MAX, load_uid, &l) < 0 || l.fail) {
        net_conn_watch(s->c, 0);
        view_free(v);
        tern__mailbox_rec__free_unpacked(m, NULL);
        imap_tagged(s, cmd->tag, "NO", "[SERVERBUG] Storage error");
        return false;
    }
    s->v = v;
    s->state = IS_SELECTED;
    struct select_ctx *x = calloc(1, sizeof *x);
    if (x == NULL) {
        unselect(s);
        tern__mailbox_rec__free_unpacked(m, NULL);
        imap_tagged(s, cmd->tag, "NO", "[UNAVAILABLE] Out of memory");
        return false;
    }
    x->s = s;
    x->first_unseen = l.first_unseen;
    x->m = m; /* owned by the context from here */
    x->examine = examine;
    x->qr_validity = qr_validity;
    x->qr_modseq = qr_modseq;
    snprintf(x->tag, sizeof x->tag, "%s", cmd->tag);
    uint32_t first = m->has_first_recent_uid && m->first_recent_uid ? m->first_recent_uid : 1;
    if (examine || first >= m->uidnext) { /* nothing to claim: no write */
        select_respond(x);
        return false;
    }
    /* a read-write SELECT claims the messages no session has seen as \Recent */
    Tern__ClaimRecent op = TERN__CLAIM_RECENT__INIT;
    op.mailbox_id = v->id;
    op.up_to = m->uidnext;
    Tern__Command c = TERN__COMMAND__INIT;
    c.op_case = TERN__COMMAND__OP_CLAIM_RECENT;
    c.claim_recent = &op;
    begin_async(s, cmd);
    if (propose(s, &c, recent_claimed, x) != 0) {
        select_respond(x);
        imap_done(s);
    }
    return true;
}

static void unselect(struct imap_sess *s)
{
    net_conn_watch(s->c, 0);
    view_free(s->v);
    s->v = NULL;
    s->state = IS_AUTH;
}

static void cmd_unselect(struct imap_sess *s, struct imap_cmd *cmd)
{
    unselect(s);
    imap_tagged(s, cmd->tag, "OK", "UNSELECT completed");
}

/* ---- EXPUNGE, CLOSE ---- */

struct deleted_ctx {
    uint32_t *uids;
    size_t n, cap;
    const struct imap_seqset *only; /* UID EXPUNGE set, or NULL */
    uint32_t max;
};

static int scan_deleted(void *ctx, const ProtobufCMessage *m)
{
    struct deleted_ctx *d = ctx;
    const Tern__MessageRec *r = (const Tern__MessageRec *) m;
    if (d->only && !imap_seqset_contains(d->only, r->uid, d->max))
        return 0;
    for (size_t i = 0; i < r->n_flags; i++)
        if (strcasecmp(r->flags[i], "\\Deleted") == 0)
            return u32_push(&d->uids, &d->n, &d->cap, r->uid) ? 0 : 1;
    return 0;
}

struct expunge_ctx {
    struct imap_sess *s;
    char tag[IMAP_PARSER_TAG_MAX + 1];
    bool close; /* CLOSE: silent, then unselect */
};

static void expunge_done(void *arg, int status, uint64_t index, const Tern__Result *res)
{
    struct expunge_ctx *x = arg;
    struct imap_sess *s = x->s;
    if (!net_conn_closing(s->c) && s->v) {
        if (status != 0 || res->status != RESULT_OK) {
            imap_tagged(s, x->tag, "NO", "[UNAVAILABLE] Expunge failed, try again");
        } else if (x->close) {
            unselect(s);
            imap_tagged(s, x->tag, "OK", "CLOSE completed");
        } else {
            for (size_t i = 0; i < res->n_changed; i++)
                expunged_now(s, res->changed[i]->uid, true);
            if (res->n_changed && res->changed[0]->has_modseq)
                imap_own_store(s, res->changed[0]->modseq);
            imap_flush_updates(s, true);
            imap_tagged(s, x->tag, "OK", "EXPUNGE completed");
        }
    }
    free(x);
    imap_done(s);
}

/* expunge(): EXPUNGE, UID EXPUNGE set, CLOSE. Returns true when taken over (async). */
static bool expunge(struct imap_sess *s, struct imap_cmd *cmd, bool close)
{
    struct imap_seqset set;
    bool have_set = false;
    if (cmd->uid && !close) {
        if (cmd->count != 1 || imap_seqset_parse(cmd->args[0].str ? cmd->args[0].str : "",
                                                 cmd->args[0].len, 0, &set, NULL) != 0) {
            imap_tagged(s, cmd->tag, "BAD", "Syntax: UID EXPUNGE sequence-set");
            return false;
        }
        have_set = true;
    }
    if (s->v->readonly) {
        if (have_set)
            imap_seqset_free(&set);
        if (close) {
            unselect(s);
            imap_tagged(s, cmd->tag, "OK", "CLOSE completed");
        } else {
            imap_tagged(s, cmd->tag, "NO", "[READ-ONLY] Mailbox is read-only");
        }
        return false;
    }
    struct deleted_ctx d = {.only = have_set ? &set : NULL,
                            .max = s->v->n ? s->v->uids[s->v->n - 1] : 0};
    int rv = model_messages(sdb(s), s->v->id, 1, UINT32_MAX, scan_deleted, &d);
    if (have_set)
        imap_seqset_free(&set);
    if (rv < 0) {
        free(d.uids);
        imap_tagged(s, cmd->tag, "NO", "[SERVERBUG] Storage error");
        return false;
    }
    if (d.n == 0) {
        free(d.uids);
        if (close)
            unselect(s);
        else
            imap_flush_updates(s, true);
        imap_tagged(s, cmd->tag, "OK", "%s completed", close ? "CLOSE" : "EXPUNGE");
        return false;
    }
    struct expunge_ctx *x = calloc(1, sizeof *x);
    if (x == NULL) {
        free(d.uids);
        imap_tagged(s, cmd->tag, "NO", "[UNAVAILABLE] Out of memory");
        return false;
    }
    x->s = s;
    x->close = close;
    snprintf(x->tag, sizeof x->tag, "%s", cmd->tag);
    Tern__Expunge op = TERN__EXPUNGE__INIT;
    op.mailbox_id = s->v->id;
    op.uids = d.uids;
    op.n_uids = d.n;
    Tern__Command c = TERN__COMMAND__INIT;
    c.op_case = TERN__COMMAND__OP_EXPUNGE;
    c.expunge = &op;
    propose_async(s, cmd, &c, expunge_done, x);
    free(d.uids); /* the command was packed */
    return true;
}

/* ---- STORE ---- */

struct store_ctx {
    struct imap_sess *s;
    char tag[IMAP_PARSER_TAG_MAX + 1];
    bool silent, by_uid;
};

static void store_done(void *arg, int status, uint64_t index, const Tern__Result *res)
{
    struct store_ctx *x = arg;
    struct imap_sess *s = x->s;
    if (!net_conn_closing(s->c) && s->v) {
        if (status != 0 || res->status != RESULT_OK) {
            imap_tagged(s, x->tag, "NO", "[UNAVAILABLE] STORE failed, try again");
        } else {
            uint64_t top = 0; /* one new modseq per STORE (node/fsm.c) */
            for (size_t i = 0; i < res->n_changed; i++)
                if (res->changed[i]->modseq > top)
                    top = res->changed[i]->modseq;
            if (top)
                imap_own_store(s, top);
            for (size_t i = 0; i < res->n_changed; i++) {
                const Tern__MessageChange *ch = res->changed[i];
                uint32_t msn = imap_view_msn(s->v, ch->uid);
                if (msn == 0 || (x->silent && !s->condstore))
                    continue;
                net_conn_printf(s->c, "* %u FETCH (", msn);
                if (!x->silent) {
                    net_conn_write(s->c, "FLAGS ", 6);
                    imap_write_flags(s, ch->flags, ch->n_flags, ch->uid);
                    net_conn_write(s->c, " ", 1);
                }
                net_conn_printf(s->c, "UID %u", ch->uid);
                if (s->condstore)
                    net_conn_printf(s->c, " MODSEQ (%" PRIu64 ")", ch->modseq);
                net_conn_write(s->c, ")\r\n", 3);
            }
            imap_flush_updates(s, false);
            if (res->n_failed) {
                uint32_t *v = malloc(res->n_failed * sizeof *v);
                size_t nv = 0;
                for (size_t i = 0; v && i < res->n_failed; i++) {
                    uint32_t n = x->by_uid ? res->failed[i] : imap_view_msn(s->v, res->failed[i]);
                    if (n)
                        v[nv++] = n;
                }
                char *set = v ? uid_set(v, nv) : NULL;
                imap_tagged(s, x->tag, "OK", "[MODIFIED %s] Conditional STORE failed",
                            set ? set : "");
                free(set);
                free(v);
            } else {
                imap_tagged(s, x->tag, "OK", "STORE completed");
            }
        }
    }
    free(x);
    imap_done(s);
}

static bool cmd_store(struct imap_sess *s, struct imap_cmd *cmd)
{
    size_t i = 0;
    uint64_t unchangedsince = 0;
    if (cmd->count < 3 || cmd->args[0].type != IMAP_ARG_ATOM) {
        imap_tagged(s, cmd->tag, "BAD", "Syntax: STORE set item flags");
        return false;
    }
    struct imap_seqset set;
    if (imap_seqset_parse(cmd->args[0].str, cmd->args[0].len, 0, &set, NULL) != 0) {
        imap_tagged(s, cmd->tag, "BAD", "Invalid sequence set");
        return false;
    }
    i = 1;
    if (cmd->args[1].type == IMAP_ARG_LIST) { /* (UNCHANGEDSINCE n) */
        const struct imap_arg *m = &cmd->args[1];
        if (m->count == 2 && imap_arg_atom_equals(&m->list[0], "UNCHANGEDSINCE") &&
            m->list[1].type == IMAP_ARG_ATOM)
            unchangedsince = strtoull(m->list[1].str, NULL, 10);
        s->condstore = true;
        i = 2;
    }
    if (i + 2 > cmd->count || cmd->args[i].type != IMAP_ARG_ATOM) {
        imap_seqset_free(&set);
        imap_tagged(s, cmd->tag, "BAD", "Syntax: STORE set item flags");
        return false;
    }
    const char *item = cmd->args[i].str;
    int mode;
    if (strncasecmp(item, "+FLAGS", 6) == 0)
        mode = FSM_STORE_ADD, item += 6;
    else if (strncasecmp(item, "-FLAGS", 6) == 0)
        mode = FSM_STORE_REMOVE, item += 6;
    else if (strncasecmp(item, "FLAGS", 5) == 0)
        mode = FSM_STORE_SET, item += 5;
    else
        mode = -1;
    bool silent = strcasecmp(item, ".SILENT") == 0;
    if (mode < 0 || (*item && !silent)) {
        imap_seqset_free(&set);
        imap_tagged(s, cmd->tag, "BAD", "Unknown STORE item");
        return false;
    }
    /* flags: a list, or atoms to the end */
    const struct imap_arg *fl = &cmd->args[i + 1];
    size_t nf = cmd->count - i - 1;
    if (fl->type == IMAP_ARG_LIST) {
        nf = fl->count;
        fl = fl->list;
    }
    if (nf > FSM_FLAGS_MAX) {
        imap_seqset_free(&set);
        imap_tagged(s, cmd->tag, "BAD", "Too many flags");
        return false;
    }
    char *flags[FSM_FLAGS_MAX];
    for (size_t k = 0; k < nf; k++) {
        if (fl[k].type != IMAP_ARG_ATOM || !fsm_flag_valid(fl[k].str)) {
            imap_seqset_free(&set);
            imap_tagged(s, cmd->tag, "BAD", "Invalid flag");
            return false;
        }
        flags[k] = (char *) fl[k].str;
    }
    if (s->v->readonly) {
        imap_seqset_free(&set);
        imap_tagged(s, cmd->tag, "NO", "[READ-ONLY] Mailbox is read-only");
        return false;
    }
    uint32_t *uids = NULL;
    long n = imap_view_uids(s->v, &set, cmd->uid, &uids);
    imap_seqset_free(&set);
    if (n < 0 || n > FSM_UIDS_MAX) {
        free(uids);
        imap_tagged(s, cmd->tag, "NO", "[LIMIT] Too many messages");
        return false;
    }
    if (n == 0) {
        free(uids);
        imap_tagged(s, cmd->tag, "OK", "STORE completed");
        return false;
    }
    struct store_ctx *x = calloc(1, sizeof *x);
    if (x == NULL) {
        free(uids);
        imap_tagged(s, cmd->tag, "NO", "[UNAVAILABLE] Out of memory");
        return false;
    }
    x->s = s;
    x->silent = silent;
    x->by_uid = cmd->uid;
    snprintf(x->tag, sizeof x->tag, "%s", cmd->tag);
    Tern__StoreFlags op = TERN__STORE_FLAGS__INIT;
    op.mailbox_id = s->v->id;
    op.uids = uids;
    op.n_uids = (size_t) n;
    op.mode = mode;
    op.flags = flags;
    op.n_flags = nf;
    op.has_unchangedsince = unchangedsince != 0;
    op.unchangedsince = unchangedsince;
    Tern__Command c = TERN__COMMAND__INIT;
    c.op_case = TERN__COMMAND__OP_STORE_FLAGS;
    c.store_flags = &op;
    propose_async(s, cmd, &c, store_done, x);
    free(uids); /* the command was packed */
    return true;
}

/* ---- COPY, MOVE ---- */

struct copy_ctx {
    struct imap_sess *s;
    char tag[IMAP_PARSER_TAG_MAX + 1];
    bool move;
};

static void copy_done(void *arg, int status, uint64_t index, const Tern__Result *res)
{
    struct copy_ctx *x = arg;
    struct imap_sess *s = x->s;
    if (!net_conn_closing(s->c) && s->v) {
        if (status != 0) {
            imap_tagged(s, x->tag, "NO", "[UNAVAILABLE] %s", cons_strerror(status));
        } else if (res->status == RESULT_QUOTA) {
            imap_tagged(s, x->tag, "NO", "[OVERQUOTA] Quota exceeded");
        } else if (res->status != RESULT_OK) {
            imap_tagged(s, x->tag, "NO", "[CANNOT] %s", res->error ? res->error : "refused");
        } else {
            uint32_t *a = malloc((res->n_changed ? res->n_changed : 1) * sizeof *a);
            uint32_t *b = malloc((res->n_changed ? res->n_changed : 1) * sizeof *b);
            for (size_t i = 0; a && b && i < res->n_changed; i++) {
                a[i] = res->changed[i]->uid;
                b[i] = res->changed[i]->new_uid;
            }
            /* COPYUID pairs the two sets in order (RFC 4315 3): both ascending here */
            char *src = a && b ? uid_set(a, res->n_changed) : NULL;
            char *dst = a && b ? uid_set(b, res->n_changed) : NULL;
            if (x->move) {
                if (res->n_changed && src && dst)
                    imap_untagged(s, "OK [COPYUID %u %s %s] Moved", res->uidvalidity, src, dst);
                for (size_t i = 0; i < res->n_changed; i++)
                    expunged_now(s, res->changed[i]->uid, true);
                imap_tagged(s, x->tag, "OK", "MOVE completed");
            } else if (res->n_changed && src && dst) {
                imap_tagged(s, x->tag, "OK", "[COPYUID %u %s %s] COPY completed", res->uidvalidity,
                            src, dst);
            } else {
                imap_tagged(s, x->tag, "OK", "COPY completed");
            }
            free(src);
            free(dst);
            free(a);
            free(b);
        }
    }
    free(x);
    imap_done(s);
}

static bool cmd_copy(struct imap_sess *s, struct imap_cmd *cmd)
{
    bool move = strcmp(cmd->name, "MOVE") == 0;
    char name[1024];
    struct imap_seqset set;
    if (cmd->count != 2 || cmd->args[0].type != IMAP_ARG_ATOM ||
        mailbox_name(&cmd->args[1], name) != 0 ||
        imap_seqset_parse(cmd->args[0].str, cmd->args[0].len, 0, &set, NULL) != 0) {
        imap_tagged(s, cmd->tag, "BAD", "Syntax: %s set mailbox", cmd->name);
        return false;
    }
    if (move && s->v->readonly) {
        imap_seqset_free(&set);
        imap_tagged(s, cmd->tag, "NO", "[READ-ONLY] Mailbox is read-only");
        return false;
    }
    Tern__MailboxRec *dst = find_mailbox(s, cmd->tag, name, "[TRYCREATE] No such mailbox");
    if (dst == NULL) {
        imap_seqset_free(&set);
        return false;
    }
    uint64_t dst_id = dst->id;
    tern__mailbox_rec__free_unpacked(dst, NULL);
    if (dst_id == s->v->id) {
        imap_seqset_free(&set);
        imap_tagged(s, cmd->tag, "NO", "[CANNOT] Source and target are the same mailbox");
        return false;
    }
    uint32_t *uids = NULL;
    long n = imap_view_uids(s->v, &set, cmd->uid, &uids);
    imap_seqset_free(&set);
    if (n <= 0 || n > FSM_UIDS_MAX) {
        free(uids);
        if (n == 0)
            imap_tagged(s, cmd->tag, "OK", "%s completed", cmd->name);
        else
            imap_tagged(s, cmd->tag, "NO", "[LIMIT] Too many messages");
        return false;
    }
    struct copy_ctx *x = calloc(1, sizeof *x);
    if (x == NULL) {
        free(uids);
        imap_tagged(s, cmd->tag, "NO", "[UNAVAILABLE] Out of memory");
        return false;
    }
    x->s = s;
    x->move = move;
    snprintf(x->tag, sizeof x->tag, "%s", cmd->tag);
    Tern__CopyMessages op = TERN__COPY_MESSAGES__INIT;
    op.from_mailbox = s->v->id;
    op.to_mailbox = dst_id;
    op.uids = uids;
    op.n_uids = (size_t) n;
    op.has_move = 1;
    op.move = move;
    Tern__Command c = TERN__COMMAND__INIT;
    c.op_case = TERN__COMMAND__OP_COPY_MESSAGES;
    c.copy_messages = &op;
    propose_async(s, cmd, &c, copy_done, x);
    free(uids); /* the command was packed */
    return true;
}

/* ---- APPEND ---- */

struct append_job {
    uv_work_t work;
    struct imap_sess *s;
    char tag[IMAP_PARSER_TAG_MAX + 1];
    const uint8_t *data; /* the literal, in the command's arena (s->cur), or crlf */
    size_t len;
    uint8_t *crlf; /* the literal with bare LFs made CRLF (malloc), when it had any */
    uint8_t hash[BODY_HASH_LEN];
    uint8_t *mime;
    size_t mime_len;
    int rv;
    uint64_t mailbox_id;
    uint32_t uidvalidity;
    uint64_t account;
    uint64_t idate;
    char *flags[FSM_FLAGS_MAX];
    size_t nflags;
};

static void append_committed(void *arg, int status, uint64_t index, const Tern__Result *res)
{
    struct append_job *j = arg;
    struct imap_sess *s = j->s;
    if (!net_conn_closing(s->c)) {
        if (status != 0) {
            imap_tagged(s, j->tag, "NO", "[UNAVAILABLE] %s", cons_strerror(status));
        } else if (res->status != RESULT_OK || res->n_delivered != 1) {
            imap_tagged(s, j->tag, "NO", "[SERVERBUG] Append refused");
        } else if (res->delivered[0]->status == RESULT_QUOTA) {
            imap_tagged(s, j->tag, "NO", "[OVERQUOTA] Quota exceeded");
        } else if (res->delivered[0]->status == RESULT_NOTFOUND) {
            imap_tagged(s, j->tag, "NO", "[TRYCREATE] Mailbox gone");
        } else if (res->delivered[0]->status != RESULT_OK) {
            imap_tagged(s, j->tag, "NO", "[CANNOT] Message refused");
        } else {
            imap_flush_updates(s, true);
            imap_tagged(s, j->tag, "OK", "[APPENDUID %u %u] APPEND completed", j->uidvalidity,
                        res->delivered[0]->uid);
        }
    }
    free(j->mime);
    free(j->crlf);
    free(j);
    imap_done(s);
}

/* crlf_copy(): P with every bare LF made CRLF (RFC 5322 line ends; POP3 and IMAP sizes then
 * count what is sent), or NULL when there is none (or no memory: stored as is). */
static uint8_t *crlf_copy(const uint8_t *p, size_t n, size_t *outn)
{
    size_t bare = 0;
    for (size_t i = 0; i < n; i++)
        bare += p[i] == '\n' && (i == 0 || p[i - 1] != '\r');
    if (bare == 0)
        return NULL;
    uint8_t *o = malloc(n + bare);
    if (o == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
            o[k++] = '\r';
        o[k++] = p[i];
    }
    *outn = k;
    return o;
}

static void append_work(uv_work_t *w)
{
    struct append_job *j = w->data;
    size_t n;
    if ((j->crlf = crlf_copy(j->data, j->len, &n)) != NULL) {
        j->data = j->crlf;
        j->len = n;
    }
    j->rv = body_put(net_conn_node(j->s->c)->db, j->data, j->len, j->hash);
    struct mime_msg m = {0};
    if (j->rv == 0 && mime_parse(j->data, j->len, &m) == 0) {
        if (mime_encode(&m, &j->mime, &j->mime_len) != 0)
            j->mime = NULL;
        mime_free(&m);
    }
}

static void append_replicated(void *arg, int status);

static void append_stored(uv_work_t *w, int status)
{
    struct append_job *j = w->data;
    struct imap_sess *s = j->s;
    if (status != 0 || j->rv != 0 || net_conn_closing(s->c)) {
        append_committed(j, CONS_EIO, 0, NULL);
        return;
    }
    /* OK means the body is on a majority of its owners, synced (DESIGN.md) */
    struct cluster *cl = net_conn_node(s->c)->cluster;
    if (cl == NULL || cluster_body_replicate(cl, j->hash, j->data, j->len, net_conn_loopq(s->c),
                                             append_replicated, j) != 0)
        append_replicated(j, cl == NULL ? 0 : -1);
}

static void append_replicated(void *arg, int status)
{
    struct append_job *j = arg;
    struct imap_sess *s = j->s;
    if (status != 0 || net_conn_closing(s->c)) {
        append_committed(j, CONS_EIO, 0, NULL);
        return;
    }
    Tern__DeliverTarget t = TERN__DELIVER_TARGET__INIT, *tp = &t;
    t.account_id = j->account;
    t.has_mailbox_id = 1;
    t.mailbox_id = j->mailbox_id;
    t.flags = j->flags;
    t.n_flags = j->nflags;
    Tern__Deliver d = TERN__DELIVER__INIT;
    d.body_hash.data = j->hash;
    d.body_hash.len = BODY_HASH_LEN;
    d.size = j->len;
    d.has_internal_date = j->idate != 0;
    d.internal_date = j->idate;
    d.n_targets = 1;
    d.targets = &tp;
    d.has_mime = j->mime != NULL;
    d.mime.data = j->mime;
    d.mime.len = j->mime_len;
    Tern__Command c = TERN__COMMAND__INIT;
    c.op_case = TERN__COMMAND__OP_DELIVER;
    c.deliver = &d;
    if (propose(s, &c, append_committed, j) != 0)
        append_committed(j, CONS_ENOMEM, 0, NULL);
}

/* parse_date(): RFC 3501 date-time "dd-Mon-yyyy hh:mm:ss +zzzz" to unix time. */
static int parse_date(const char *s, uint64_t *out)
{
    static const char *mons = "JanFebMarAprMayJunJulAugSepOctNovDec";
    int d, y, hh, mm, ss, zone;
    char mon[4];
    while (*s == ' ')
        s++;
    if (sscanf(s, "%d-%3c-%d %d:%d:%d %d", &d, mon, &y, &hh, &mm, &ss, &zone) != 7)
        return -1;
    mon[3] = 0;
    const char *p = strcasestr(mons, mon);
    if (p == NULL || (p - mons) % 3 || d < 1 || d > 31 || y < 1970 || y > 9999 || hh > 23 ||
        mm > 59 || ss > 60)
        return -1;
    struct tm tm = {.tm_mday = d,
                    .tm_mon = (int) ((p - mons) / 3),
                    .tm_year = y - 1900,
                    .tm_hour = hh,
                    .tm_min = mm,
                    .tm_sec = ss};
    time_t t = timegm(&tm);
    int sign = zone < 0 ? -1 : 1;
    int z = zone * sign;
    t -= sign * ((z / 100) * 3600 + (z % 100) * 60);
    *out = t < 0 ? 0 : (uint64_t) t;
    return 0;
}

static bool cmd_append(struct imap_sess *s, struct imap_cmd *cmd)
{
    char name[1024];
    if (cmd->count < 2 || mailbox_name(&cmd->args[0], name) != 0) {
        imap_tagged(s, cmd->tag, "BAD", "Syntax: APPEND mailbox [flags] [date] literal");
        return false;
    }
    size_t i = 1;
    const struct imap_arg *flags = NULL;
    const char *date = NULL;
    if (cmd->args[i].type == IMAP_ARG_LIST)
        flags = &cmd->args[i++];
    if (i < cmd->count && cmd->args[i].type == IMAP_ARG_QUOTED)
        date = cmd->args[i++].str;
    if (i + 1 != cmd->count || cmd->args[i].type != IMAP_ARG_LITERAL) {
        imap_tagged(s, cmd->tag, "BAD", "Syntax: APPEND mailbox [flags] [date] literal");
        return false;
    }
    const struct imap_arg *lit = &cmd->args[i];
    if (lit->len == 0) {
        imap_tagged(s, cmd->tag, "NO", "Empty message");
        return false;
    }
    Tern__MailboxRec *m = find_mailbox(s, cmd->tag, name, "[TRYCREATE] No such mailbox");
    if (m == NULL) {
        return false;
    }
    struct append_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        tern__mailbox_rec__free_unpacked(m, NULL);
        imap_tagged(s, cmd->tag, "NO", "[UNAVAILABLE] Out of memory");
        return false;
    }
    j->s = s;
    snprintf(j->tag, sizeof j->tag, "%s", cmd->tag);
    j->data = (const uint8_t *) lit->str;
    j->len = lit->len;
    j->mailbox_id = m->id;
    j->uidvalidity = m->uidvalidity;
    j->account = s->account;
    tern__mailbox_rec__free_unpacked(m, NULL);
    if (date && parse_date(date, &j->idate) != 0) {
        free(j);
        imap_tagged(s, cmd->tag, "BAD", "Invalid date-time");
        return false;
    }
    if (flags) {
        for (size_t k = 0; k < flags->count; k++) {
            const struct imap_arg *fa = &flags->list[k];
            if (fa->type != IMAP_ARG_ATOM || !fsm_flag_valid(fa->str) ||
                j->nflags == FSM_FLAGS_MAX) {
                free(j);
                imap_tagged(s, cmd->tag, "BAD", "Invalid flag");
                return false;
            }
            if (strcasecmp(fa->str, "\\Recent") != 0)
                j->flags[j->nflags++] = (char *) fa->str;
        }
    }
    j->work.data = j;
    begin_async(s, cmd); /* the literal lives in cmd's arena until imap_done() */
    if (uv_queue_work(net_conn_loop(s->c), &j->work, append_work, append_stored) != 0)
        append_committed(j, CONS_ENOMEM, 0, NULL);
    return true;
}

/* ---- IDLE ---- */

static void cmd_idle(struct imap_sess *s, struct imap_cmd *cmd)
{
    s->idling = true;
    snprintf(s->pending_tag, sizeof s->pending_tag, "%s", cmd->tag);
    net_conn_write(s->c, "+ idling\r\n", 10);
    imap_flush_updates(s, true);
    /* RFC 2177: clients re-IDLE within 29 minutes; autologout is 30 */
    net_conn_timeout(s->c, IMAP_AUTOLOGOUT_MS);
}

static void idle_line(struct imap_sess *s, const char *line, size_t n)
{
    s->idling = false;
    if (n == 4 && strncasecmp(line, "DONE", 4) == 0)
        imap_tagged(s, s->pending_tag, "OK", "IDLE terminated");
    else
        imap_tagged(s, s->pending_tag, "BAD", "Expected DONE");
}

/* ---- the command table ---- */

enum { F_ASYNC = 1, F_UID = 2, F_SYNC = 4 /* read-your-writes: catch up first */ };

struct icmd {
    const char *name;
    unsigned states;
    unsigned flags;
    void (*fn)(struct imap_sess *, struct imap_cmd *);  /* synchronous */
    bool (*afn)(struct imap_sess *, struct imap_cmd *); /* may take CMD over */
};

#define ANY    (IS_NOTAUTH | IS_AUTH | IS_SELECTED)
#define AUTHED (IS_AUTH | IS_SELECTED)

static void cmd_close(struct imap_sess *s, struct imap_cmd *cmd);
static bool cmd_close_a(struct imap_sess *s, struct imap_cmd *cmd)
{
    return expunge(s, cmd, true);
}
static bool cmd_expunge_a(struct imap_sess *s, struct imap_cmd *cmd)
{
    return expunge(s, cmd, false);
}
static void cmd_close(struct imap_sess *s, struct imap_cmd *cmd)
{
    (void) s;
    (void) cmd;
}

static const struct icmd commands[] = {
    {"CAPABILITY", ANY, 0, cmd_capability, NULL},
    {"NOOP", ANY, 0, cmd_noop, NULL},
    {"LOGOUT", ANY, 0, cmd_logout, NULL},
    {"ID", ANY, 0, cmd_id, NULL},
    {"STARTTLS", IS_NOTAUTH, 0, cmd_starttls, NULL},
    {"LOGIN", IS_NOTAUTH, 0, NULL, cmd_login},
    {"AUTHENTICATE", IS_NOTAUTH, 0, NULL, cmd_authenticate},
    {"ENABLE", AUTHED, 0, cmd_enable, NULL},
    {"NAMESPACE", AUTHED, 0, cmd_namespace, NULL},
    {"LIST", AUTHED, 0, cmd_list, NULL},
    {"LSUB", AUTHED, 0, cmd_list, NULL},
    {"STATUS", AUTHED, F_SYNC, cmd_status, NULL},
    {"CREATE", AUTHED, 0, NULL, cmd_create},
    {"DELETE", AUTHED, 0, NULL, cmd_delete},
    {"RENAME", AUTHED, 0, NULL, cmd_rename},
    {"SUBSCRIBE", AUTHED, 0, NULL, cmd_subscribe},
    {"UNSUBSCRIBE", AUTHED, 0, NULL, cmd_subscribe},
    {"SELECT", AUTHED, F_SYNC, NULL, cmd_select},
    {"EXAMINE", AUTHED, F_SYNC, NULL, cmd_select},
    {"APPEND", AUTHED, 0, NULL, cmd_append},
    {"GETQUOTAROOT", AUTHED, 0, cmd_getquotaroot, NULL},
    {"GETQUOTA", AUTHED, 0, cmd_getquota, NULL},
    {"SETQUOTA", AUTHED, 0, cmd_setquota, NULL},
    {"IDLE", AUTHED, 0, cmd_idle, NULL},
    {"CHECK", IS_SELECTED, 0, cmd_noop, NULL},
    {"CLOSE", IS_SELECTED, 0, NULL, cmd_close_a},
    {"UNSELECT", IS_SELECTED, 0, cmd_unselect, NULL},
    {"EXPUNGE", IS_SELECTED, F_UID, NULL, cmd_expunge_a},
    {"FETCH", IS_SELECTED, F_UID, imap_cmd_fetch, NULL},
    {"STORE", IS_SELECTED, F_UID, NULL, cmd_store},
    {"SEARCH", IS_SELECTED, F_UID, imap_cmd_search, NULL},
    {"SORT", IS_SELECTED, F_UID, imap_cmd_sort, NULL},
    {"THREAD", IS_SELECTED, F_UID, imap_cmd_thread, NULL},
    {"COPY", IS_SELECTED, F_UID, NULL, cmd_copy},
    {"MOVE", IS_SELECTED, F_UID, NULL, cmd_copy},
};

static void run(struct imap_sess *s, struct imap_cmd *cmd);

/* synced(): this node caught up with the leader (or gave up trying): run the command. */
static void synced(void *arg, int status)
{
    struct imap_sess *s = arg;
    struct imap_cmd *cmd = s->cur;
    (void) status; /* not in sync: serve what this node has */
    s->cur = NULL;
    s->synced = cmd;
    if (net_conn_closing(s->c))
        imap_cmd_free(cmd);
    else
        run(s, cmd);
    s->synced = NULL;
    net_conn_release(s->c); /* the hold from begin_async(); last: may free the session */
}

void imap_note_missing(struct imap_sess *s, const uint8_t hash[32])
{
    if (!s->collect_missing || s->nmissing >= IMAP_MISSING_MAX)
        return;
    for (size_t i = 0; i < s->nmissing; i++)
        if (memcmp(s->missing + 32 * i, hash, 32) == 0)
            return;
    if (s->nmissing == s->capmissing) {
        size_t cap = s->capmissing ? 2 * s->capmissing : 16;
        uint8_t *m = realloc(s->missing, 32 * cap);
        if (m == NULL)
            return;
        s->missing = m;
        s->capmissing = cap;
    }
    memcpy(s->missing + 32 * s->nmissing++, hash, 32);
}

bool imap_prefetch(struct imap_sess *s, struct imap_cmd *cmd)
{
    struct cluster *cl = net_conn_node(s->c)->cluster;
    size_t n = s->nmissing;
    s->nmissing = 0;
    s->collect_missing = false;
    if (n == 0 || cl == NULL || s->synced == cmd)
        return false;
    if (cluster_body_fetch(cl, s->missing, n, net_conn_loopq(s->c), synced, s) != 0)
        return false;
    begin_async(s, cmd); /* synced() runs it again once the bodies are here */
    return true;
}

/* run(): executes CMD, which it owns. */
static void run(struct imap_sess *s, struct imap_cmd *cmd)
{
    (void) cmd_close;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        const struct icmd *c = &commands[i];
        if (strcmp(c->name, cmd->name) != 0)
            continue;
        if (cmd->uid && !(c->flags & F_UID))
            break;
        if (!(c->states & s->state)) {
            imap_tagged(s, cmd->tag, "BAD", "%s not allowed %s", cmd->name,
                        s->state == IS_NOTAUTH ? "before login" : "in this state");
            imap_cmd_free(cmd);
            return;
        }
        struct cluster *cl = net_conn_node(s->c)->cluster;
        s->nmissing = 0; /* a run again after a fetch answers with what it has */
        s->collect_missing = cl && s->synced != cmd;
        if ((c->flags & F_SYNC) && cl && s->synced != cmd &&
            cluster_sync(cl, net_conn_loopq(s->c), synced, s) == 0) {
            begin_async(s, cmd); /* a write acknowledged on another node must be seen here */
            return;
        }
        if (c->fn) {
            c->fn(s, cmd);
            if (s->cur != cmd) /* FETCH may take it over to set \Seen first */
                imap_cmd_free(cmd);
        } else if (!c->afn(s, cmd) && s->cur != cmd) {
            imap_cmd_free(cmd);
        }
        return;
    }
    imap_tagged(s, cmd->tag, "BAD", "Unknown command %s%s", cmd->uid ? "UID " : "", cmd->name);
    imap_cmd_free(cmd);
}

/* ---- input ---- */

/* raw_line(): a line the parser must not see (AUTHENTICATE answer, IDLE's DONE). Returns
 * its length without CRLF and consumes it, or -1 while it is incomplete. */
static long raw_line(struct imap_sess *s, char *out, size_t cap)
{
    size_t len;
    const uint8_t *p = net_conn_rdata(s->c, &len);
    const uint8_t *lf = memchr(p, '\n', len);
    if (lf == NULL) {
        if (len >= cap) { /* over-long: drop it, the caller answers BAD */
            net_conn_consume(s->c, len);
            return (long) cap;
        }
        return -1;
    }
    size_t n = (size_t) (lf - p);
    size_t eat = n + 1;
    if (n && p[n - 1] == '\r')
        n--;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, p, n);
    out[n] = 0;
    net_conn_consume(s->c, eat);
    return (long) n;
}

static void session_input(void *arg, struct net_conn *c)
{
    struct imap_sess *s = arg;
    while (!net_conn_closing(c) && !net_conn_held(c)) {
        if (s->idling || s->authenticating) {
            char line[4096];
            long n = raw_line(s, line, sizeof line);
            if (n < 0)
                return;
            if (s->idling)
                idle_line(s, line, (size_t) n);
            else
                auth_line(s, line, (size_t) n);
            explicit_bzero(line, sizeof line);
            continue;
        }
        size_t len;
        const uint8_t *p = net_conn_rdata(c, &len);
        if (len == 0)
            return;
        struct imap_parse_result res;
        int rc = imap_parser_parse(s->parser, p, len, &res);
        net_conn_consume(c, res.consumed);
        switch (rc) {
        case IMAP_PARSE_OK:
            run(s, res.cmd);
            break;
        case IMAP_PARSE_NEED_MORE:
            return;
        case IMAP_PARSE_NEED_CONTINUATION:
            if (s->state == IS_NOTAUTH && res.literal_size > 8192) {
                imap_tagged(s, res.tag[0] ? res.tag : "*", "NO", "[TOOBIG] Log in first");
                imap_parser_reject_literal(s->parser);
            } else {
                net_conn_write(c, "+ OK\r\n", 6);
                imap_parser_accept_literal(s->parser);
            }
            break;
        case IMAP_PARSE_BAD:
            if (res.tag[0])
                imap_tagged(s, res.tag, "BAD", "%s", res.msg ? res.msg : "Syntax error");
            else
                imap_untagged(s, "BAD %s", res.msg ? res.msg : "Syntax error");
            break;
        case IMAP_PARSE_LITERAL_TOO_BIG:
            imap_tagged(s, res.tag[0] ? res.tag : "*", "NO", "%s",
                        res.msg ? res.msg : "[TOOBIG] Literal too big");
            break;
        default:
            imap_untagged(s, "BYE %s", res.msg ? res.msg : "Protocol error");
            net_conn_close(c);
            return;
        }
    }
}

static void *session_open(struct net_conn *c)
{
    struct imap_sess *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    struct imap_parser_limits lim;
    imap_parser_limits_default(&lim);
    lim.append_literal_max = config_size(net_conn_node(c)->cfg, "smtp", "max_message_size");
    s->parser = imap_parser_new(&lim, IMAP_PARSER_FLAG_LITERAL_PLUS);
    if (s->parser == NULL) {
        free(s);
        return NULL;
    }
    s->c = c;
    s->state = IS_NOTAUTH;
    net_conn_timeout(c, IMAP_PREAUTH_MS);
    net_conn_write(c, "* OK [", 6);
    write_caps(s);
    net_conn_write(c, "] Tern IMAP ready\r\n", 19);
    return s;
}

static void session_tls_ready(void *arg, struct net_conn *c)
{
    (void) arg;
    (void) c;
}

static void session_timeout(void *arg, struct net_conn *c)
{
    struct imap_sess *s = arg;
    imap_untagged(s, "BYE Autologout; idle for too long");
    net_conn_close(c);
}

static void session_close(void *arg)
{
    struct imap_sess *s = arg;
    imap_cmd_free(s->cur);
    imap_parser_free(s->parser);
    view_free(s->v);
    free(s->missing);
    free(s);
}

const struct net_proto imap_proto = {
    .name = "imap",
    .open = session_open,
    .input = session_input,
    .tls_ready = session_tls_ready,
    .timeout = session_timeout,
    .close = session_close,
    .event = session_event,
};
