/*
 * proxy/pop3/pop3.c
 * The POP3 server (RFC 1939) with CAPA (RFC 2449), STLS (RFC 2595), AUTH PLAIN with an
 * initial response (RFC 5034) and response codes (RFC 2449 8, RFC 3206).
 *
 * The maildrop is INBOX as it stood at login: message numbers are stable for the session,
 * and a second session (on any node) gets its own consistent snapshot rather than
 * [IN-USE]: there is no lock to lose when a node dies. DELE only marks; QUIT in the
 * TRANSACTION state commits every mark as ONE Expunge command through Raft and answers
 * +OK only after the commit; a dropped connection deletes nothing. A message another
 * session deleted meanwhile answers -ERR to RETR/TOP. UIDL is derived from UIDVALIDITY
 * and UID, so it is stable forever and names the same message IMAP shows.
 *
 * SECURITY: talks to anyone before login. Lines are capped (POP3_LINE_MAX), USER/PASS and
 * AUTH need TLS except from loopback, failed logins are answered after a delay and the
 * third one ends the session, passwords are checked in the thread pool, never logged.
 */
#include "pop3.h"
#include "pop3_parse.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "address.h"
#include "cluster.h"
#include "body_store.h"
#include "command.h"
#include "fsm.h"
#include "keyspace.h"
#include "log.h"
#include "model.h"
#include "passwd.h"
#include "smtp_parse.h" /* base64 and SASL PLAIN */

#define POP3_SASL_LINE_MAX 4096 /* RFC 5034 4: a long SASL response goes on its own line */
#define POP3_FAIL_DELAY_MS 1000 /* a failed login is answered after this */
#define POP3_FAILURES_MAX  3
#define POP3_ERRORS_MAX    20

enum pstate { P_AUTH, P_TRANS, P_UPDATE };

struct pmsg {
    uint32_t uid;
    uint64_t size;
    bool deleted;
};

struct psess {
    struct net_conn *c;
    unsigned idle_ms; /* pop3.idle_timeout_ms */
    enum pstate state;
    char user[ADDR_MAX + 1]; /* from USER */
    char account_addr[ADDR_MAX + 1];
    uint64_t account;
    uint64_t mailbox;
    uint32_t uidvalidity;
    struct pmsg *msgs;
    size_t n;
    unsigned failures, errors;
    bool sasl_wait; /* AUTH PLAIN without an initial response: the next line is it */
    bool skipping;  /* discarding the rest of an over-long line */
};

static void out(struct psess *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(struct psess *s, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t) n > sizeof buf - 3)
        n = (int) sizeof buf - 3;
    buf[n++] = '\r';
    buf[n++] = '\n';
    net_conn_write(s->c, buf, (size_t) n);
}

static bool error(struct psess *s)
{
    if (++s->errors < POP3_ERRORS_MAX)
        return false;
    out(s, "-ERR Too many errors");
    net_conn_close(s->c);
    return true;
}

static bool tls_offered(struct psess *s)
{
    return net_conn_listen(s->c)->tls == NET_TLS_STARTTLS && !net_conn_tls(s->c);
}

static bool auth_allowed(struct psess *s)
{
    return net_conn_secure(s->c) || config_bool(net_conn_node(s->c)->cfg, "pop3", "plaintext_auth");
}

/* ---- the maildrop ---- */

struct load_ctx {
    struct psess *s;
    bool fail;
};

static int load_msg(void *ctx, const ProtobufCMessage *m)
{
    struct load_ctx *l = ctx;
    struct psess *s = l->s;
    const Tern__MessageRec *r = (const Tern__MessageRec *) m;
    if ((s->n & (s->n - 1)) == 0) {
        size_t cap = s->n ? 2 * s->n : 1;
        struct pmsg *v = realloc(s->msgs, cap * sizeof *v);
        if (v == NULL) {
            l->fail = true;
            return 1;
        }
        s->msgs = v;
    }
    s->msgs[s->n++] = (struct pmsg){.uid = r->uid, .size = r->size};
    return 0;
}

static int open_maildrop(struct psess *s)
{
    Tern__MailboxRec *m = NULL;
    struct db *db = net_conn_node(s->c)->db;
    if (model_mailbox_by_name(db, s->account, "INBOX", &m) != 1)
        return -1;
    s->mailbox = m->id;
    s->uidvalidity = m->uidvalidity;
    tern__mailbox_rec__free_unpacked(m, NULL);
    struct load_ctx l = {.s = s};
    if (model_messages(db, s->mailbox, 1, UINT32_MAX, load_msg, &l) < 0 || l.fail)
        return -1;
    return 0;
}

/* msg_arg(): the message a number argument names, or an answer and NULL. */
static struct pmsg *msg_arg(struct psess *s, const char *arg)
{
    char *end;
    if (arg == NULL || *arg < '1' || *arg > '9') {
        out(s, "-ERR Invalid message number");
        return NULL;
    }
    unsigned long n = strtoul(arg, &end, 10);
    if (*end || n == 0 || n > s->n) {
        out(s, "-ERR No such message");
        return NULL;
    }
    if (s->msgs[n - 1].deleted) {
        out(s, "-ERR Message %lu already deleted", n);
        return NULL;
    }
    return &s->msgs[n - 1];
}

/* ---- authentication ---- */

struct auth_job {
    uv_work_t work;
    uv_timer_t delay;
    struct psess *s;
    char user[ADDR_MAX + 1];
    char pass[PASSWD_MAX + 1];
    size_t passlen;
    int rv;
    uint64_t id;
};

static void job_free(uv_handle_t *h)
{
    struct auth_job *j = h->data;
    struct net_conn *c = j->s->c;
    OPENSSL_cleanse(j, sizeof *j);
    free(j);
    net_conn_release(c); /* last: may free the session */
}

static void failed_reply(uv_timer_t *t)
{
    struct auth_job *j = t->data;
    struct psess *s = j->s;
    if (!net_conn_closing(s->c)) {
        if (++s->failures >= POP3_FAILURES_MAX) {
            out(s, "-ERR [AUTH] Authentication failed; too many attempts");
            net_conn_close(s->c);
        } else {
            out(s, "-ERR [AUTH] Authentication failed");
        }
    }
    uv_close((uv_handle_t *) &j->delay, job_free);
}

static void auth_work(uv_work_t *w)
{
    struct auth_job *j = w->data;
    j->rv = model_verify(net_conn_node(j->s->c)->db, j->user, j->pass, j->passlen, &j->id);
    OPENSSL_cleanse(j->pass, sizeof j->pass);
}

/* login_synced(): the password was right and this node is in sync: open the maildrop. */
static void login_synced(void *arg, int status)
{
    struct auth_job *j = arg;
    struct psess *s = j->s;
    (void) status; /* not in sync: serve what this node has */
    if (net_conn_closing(s->c)) {
        uv_close((uv_handle_t *) &j->delay, job_free);
        return;
    }
    if (open_maildrop(s) != 0) {
        out(s, "-ERR [SYS/TEMP] Cannot open the maildrop");
        net_conn_close(s->c);
    } else {
        s->state = P_TRANS;
        uint64_t total = 0;
        for (size_t i = 0; i < s->n; i++)
            total += s->msgs[i].size;
        out(s, "+OK Logged in, %zu messages (%" PRIu64 " octets)", s->n, total);
        net_conn_log(s->c, LOG_INFO, "pop3.login", "result=ok user=%s messages=%zu",
                     s->account_addr, s->n);
    }
    uv_close((uv_handle_t *) &j->delay, job_free);
}

static void auth_done(uv_work_t *w, int status)
{
    struct auth_job *j = w->data;
    struct psess *s = j->s;
    if (net_conn_closing(s->c)) {
        uv_close((uv_handle_t *) &j->delay, job_free);
        return;
    }
    if (status == 0 && j->rv == 1) {
        s->account = j->id;
        struct addr a;
        snprintf(s->account_addr, sizeof s->account_addr, "%s",
                 addr_parse(j->user, &a) == 0 ? a.full : j->user);
        /* the maildrop is a snapshot: first catch up with mail acknowledged elsewhere */
        struct cluster *cl = net_conn_node(s->c)->cluster;
        if (cl && cluster_sync(cl, net_conn_loopq(s->c), login_synced, j) == 0)
            return;
        login_synced(j, 0);
        return;
    }
    if (status != 0 || j->rv < 0) {
        out(s, "-ERR [SYS/TEMP] Temporary authentication failure");
        uv_close((uv_handle_t *) &j->delay, job_free);
        return;
    }
    char q[LOG_Q_MAX];
    net_conn_log(s->c, LOG_INFO, "pop3.login", "result=failed user=%s", log_q(q, j->user));
    /* a failed login is answered late: guessing costs the guesser time */
    uv_timer_start(&j->delay, failed_reply, POP3_FAIL_DELAY_MS, 0);
}

static void login(struct psess *s, const char *user, const char *pass, size_t plen)
{
    struct auth_job *j = calloc(1, sizeof *j);
    if (j == NULL || strlen(user) > ADDR_MAX || plen > PASSWD_MAX) {
        free(j);
        out(s, "-ERR [AUTH] Authentication failed");
        return;
    }
    j->s = s;
    snprintf(j->user, sizeof j->user, "%s", user);
    memcpy(j->pass, pass, plen);
    j->passlen = plen;
    j->work.data = j->delay.data = j;
    uv_timer_init(net_conn_loop(s->c), &j->delay);
    net_conn_hold(s->c);
    if (uv_queue_work(net_conn_loop(s->c), &j->work, auth_work, auth_done) != 0) {
        out(s, "-ERR [SYS/TEMP] Try again");
        uv_close((uv_handle_t *) &j->delay, job_free);
    }
}

static void sasl_plain(struct psess *s, const char *b64, size_t n)
{
    uint8_t dec[2048];
    size_t dl = 0;
    struct smtp_plain p;
    if (n > 2700 || smtp_base64_decode(b64, n, dec, sizeof dec, &dl) != 0 ||
        smtp_sasl_plain(dec, dl, &p) != 0 ||
        (p.authzid[0] && strcasecmp(p.authzid, p.authcid) != 0)) {
        OPENSSL_cleanse(dec, sizeof dec);
        explicit_bzero(&p, sizeof p);
        out(s, "-ERR [AUTH] Invalid SASL PLAIN response");
        error(s);
        return;
    }
    OPENSSL_cleanse(dec, sizeof dec);
    login(s, p.authcid, p.passwd, strlen(p.passwd));
    explicit_bzero(&p, sizeof p);
}

/* ---- QUIT and the UPDATE state ---- */

struct quit_ctx {
    struct psess *s;
    size_t deleted;
};

static void quit_done(void *arg, int status, uint64_t index, const Tern__Result *res)
{
    struct quit_ctx *q = arg;
    struct psess *s = q->s;
    struct net_conn *c = s->c;
    if (!net_conn_closing(c)) {
        if (status == 0 && res->status == RESULT_OK) {
            out(s, "+OK Bye, %zu messages deleted", q->deleted);
            net_conn_log(c, LOG_INFO, "pop3.update", "deleted=%zu index=%" PRIu64, q->deleted,
                         index);
        } else {
            out(s, "-ERR [SYS/TEMP] Deletions not committed; nothing was deleted");
        }
        net_conn_close(c);
    }
    free(q);
    net_conn_release(c);
}

static void cmd_quit(struct psess *s)
{
    if (s->state != P_TRANS) {
        out(s, "+OK Bye");
        net_conn_close(s->c);
        return;
    }
    s->state = P_UPDATE;
    uint32_t *uids = malloc((s->n ? s->n : 1) * sizeof *uids);
    size_t nd = 0;
    for (size_t i = 0; uids && i < s->n; i++)
        if (s->msgs[i].deleted)
            uids[nd++] = s->msgs[i].uid;
    struct quit_ctx *q = calloc(1, sizeof *q);
    if (uids == NULL || q == NULL || nd > FSM_UIDS_MAX) {
        free(uids);
        free(q);
        out(s, "-ERR [SYS/TEMP] Deletions not committed; nothing was deleted");
        net_conn_close(s->c);
        return;
    }
    if (nd == 0) {
        free(uids);
        free(q);
        out(s, "+OK Bye");
        net_conn_close(s->c);
        return;
    }
    q->s = s;
    q->deleted = nd;
    Tern__Expunge op = TERN__EXPUNGE__INIT;
    op.mailbox_id = s->mailbox;
    op.uids = uids;
    op.n_uids = nd;
    Tern__Command cmd = TERN__COMMAND__INIT;
    cmd.op_case = TERN__COMMAND__OP_EXPUNGE;
    cmd.expunge = &op;
    cmd.account_hint = s->account_addr;
    net_conn_hold(s->c);
    if (command_propose(net_conn_node(s->c)->cons, net_conn_loopq(s->c), &cmd, quit_done, q) != 0)
        quit_done(q, CONS_ENOMEM, 0, NULL);
    free(uids);
}

/* ---- RETR, TOP ---- */

/* send_body(): the body, dot-stuffed, with bare LFs sent as CRLF; TOP: the header and
 * LINES lines of the body (LINES < 0: all). */
static void send_body(struct psess *s, const char *p, size_t n, long lines)
{
    bool in_header = true, bol = true;
    long body_lines = 0;
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (bol && p[i] == '.') {
            net_conn_write(s->c, p + start, i - start);
            net_conn_write(s->c, ".", 1);
            start = i;
        }
        bol = false;
        if (p[i] != '\n')
            continue;
        bool blank = (i >= 1 && p[i - 1] == '\n') ||
                     (i >= 2 && p[i - 1] == '\r' && p[i - 2] == '\n') || i == 0 ||
                     (i == 1 && p[0] == '\r');
        if (i == 0 || p[i - 1] != '\r') { /* bare LF: send CRLF */
            net_conn_write(s->c, p + start, i - start);
            net_conn_write(s->c, "\r\n", 2);
            start = i + 1;
        }
        bol = true;
        if (lines >= 0) {
            if (!in_header && ++body_lines >= lines) {
                net_conn_write(s->c, p + start, i + 1 - start);
                start = n;
                break;
            }
            if (in_header && blank) {
                in_header = false;
                if (lines == 0) {
                    net_conn_write(s->c, p + start, i + 1 - start);
                    start = n;
                    break;
                }
            }
        }
    }
    if (start < n) {
        net_conn_write(s->c, p + start, n - start);
        if (p[n - 1] != '\n')
            net_conn_write(s->c, "\r\n", 2);
    }
    net_conn_write(s->c, ".\r\n", 3);
}

/* A RETR/TOP waiting for its body to arrive from another node. */
struct retr_wait {
    struct psess *s;
    struct pmsg *m;
    long lines;
};

static void send_message(struct psess *s, struct pmsg *m, long lines, bool may_fetch);

static void body_arrived(void *arg, int status)
{
    struct retr_wait *w = arg;
    struct net_conn *c = w->s->c;
    (void) status; /* still missing: send_message answers -ERR */
    if (!net_conn_closing(c))
        send_message(w->s, w->m, w->lines, false);
    free(w);
    net_conn_release(c); /* last: may free the session; the next command runs then */
}

static void cmd_retr(struct psess *s, const char *arg, const char *arg2, bool top)
{
    struct pmsg *m = msg_arg(s, arg);
    if (m == NULL)
        return;
    long lines = -1;
    if (top) {
        char *end;
        if (arg2 == NULL || *arg2 < '0' || *arg2 > '9' || (lines = strtol(arg2, &end, 10), *end) ||
            lines < 0) {
            out(s, "-ERR Syntax: TOP msg lines");
            return;
        }
    }
    send_message(s, m, lines, true);
}

static void send_message(struct psess *s, struct pmsg *m, long lines, bool may_fetch)
{
    struct db *db = net_conn_node(s->c)->db;
    struct key k;
    ks_message(&k, s->mailbox, m->uid);
    char *v = NULL, *body = NULL;
    size_t vl, bl;
    Tern__MessageRec *r = NULL;
    if (db_get(db, DB_CF_META, k.buf, k.len, &v, &vl) == 1)
        r = tern__message_rec__unpack(NULL, vl, (const uint8_t *) v);
    free(v);
    if (r == NULL) {
        out(s, "-ERR Message was deleted by another session");
        return;
    }
    int rv = r->body_hash.len == BODY_HASH_LEN ? body_get(db, r->body_hash.data, &body, &bl) : -1;
    struct cluster *cl = net_conn_node(s->c)->cluster;
    if (rv == 0 && may_fetch && cl) { /* on another node only (yet): bring it here first */
        struct retr_wait *w = malloc(sizeof *w);
        if (w) {
            *w = (struct retr_wait){.s = s, .m = m, .lines = lines};
            net_conn_hold(s->c); /* no further command runs until it is answered */
            if (cluster_body_fetch(cl, r->body_hash.data, 1, net_conn_loopq(s->c), body_arrived,
                                   w) == 0) {
                tern__message_rec__free_unpacked(r, NULL);
                return;
            }
            net_conn_release(s->c);
            free(w);
        }
    }
    tern__message_rec__free_unpacked(r, NULL);
    if (rv != 1) {
        out(s, "-ERR [SYS/TEMP] Message body unavailable");
        return;
    }
    out(s, "+OK %" PRIu64 " octets", m->size);
    send_body(s, body, bl, lines);
    free(body);
}

/* ---- the command table ---- */

static void cmd_capa(struct psess *s)
{
    out(s, "+OK Capability list follows");
    out(s, "TOP");
    out(s, "UIDL");
    out(s, "RESP-CODES");
    out(s, "AUTH-RESP-CODE");
    out(s, "PIPELINING");
    if (s->state == P_AUTH && auth_allowed(s)) {
        out(s, "USER");
        out(s, "SASL PLAIN");
    }
    if (s->state == P_AUTH && tls_offered(s))
        out(s, "STLS");
    out(s, "IMPLEMENTATION Tern");
    out(s, ".");
}

static void dispatch(struct psess *s, char *line)
{
    struct pop3_cmd pc;
    if (pop3_parse(line, strlen(line), &pc) != 0) {
        out(s, "-ERR Invalid command");
        error(s);
        return;
    }
    char *verb = pc.verb;
    char *a1 = pc.nargs > 0 ? pc.args[0] : NULL;
    char *a2 = pc.nargs > 1 ? pc.args[1] : NULL;
    char *whole = pc.rest; /* PASS takes the rest whole: a password may hold spaces */
    if (strcmp(verb, "CAPA") == 0)
        return cmd_capa(s);
    if (strcmp(verb, "QUIT") == 0)
        return cmd_quit(s);
    if (strcmp(verb, "NOOP") == 0 && s->state == P_TRANS)
        return out(s, "+OK");
    if (s->state == P_AUTH) {
        if (strcmp(verb, "STLS") == 0) {
            if (!tls_offered(s)) {
                out(s, "-ERR STLS not available");
                error(s);
                return;
            }
            out(s, "+OK Begin TLS negotiation");
            s->user[0] = 0;
            if (net_conn_starttls(s->c) != 0)
                net_conn_close(s->c);
            return;
        }
        if (strcmp(verb, "USER") == 0 || strcmp(verb, "PASS") == 0 || strcmp(verb, "AUTH") == 0) {
            if (!auth_allowed(s)) {
                out(s, "-ERR [AUTH] Plaintext authentication requires TLS; use STLS");
                error(s);
                return;
            }
        }
        if (strcmp(verb, "USER") == 0) {
            if (a1 == NULL || strlen(a1) > ADDR_MAX) {
                out(s, "-ERR Syntax: USER name");
                return;
            }
            snprintf(s->user, sizeof s->user, "%s", a1);
            return out(s, "+OK Send PASS");
        }
        if (strcmp(verb, "PASS") == 0) {
            if (s->user[0] == 0) {
                out(s, "-ERR USER first");
                error(s);
                return;
            }
            if (whole[0] == 0) {
                out(s, "-ERR Syntax: PASS password");
                return;
            }
            login(s, s->user, whole, strlen(whole));
            explicit_bzero(&pc, sizeof pc);
            return;
        }
        if (strcmp(verb, "AUTH") == 0) {
            if (a1 == NULL) { /* RFC 5034: list mechanisms */
                out(s, "+OK");
                out(s, "PLAIN");
                out(s, ".");
                return;
            }
            if (strcasecmp(a1, "PLAIN") != 0) {
                out(s, "-ERR [AUTH] Unsupported mechanism");
                return;
            }
            if (a2 == NULL) {
                s->sasl_wait = true;
                return out(s, "+ ");
            }
            if (strcmp(a2, "=") == 0)
                a2[0] = 0;
            sasl_plain(s, a2, strlen(a2));
            return;
        }
        out(s, "-ERR Not allowed before login");
        error(s);
        return;
    }
    if (s->state != P_TRANS) {
        out(s, "-ERR Not now");
        return;
    }
    if (strcmp(verb, "STAT") == 0) {
        size_t cnt = 0;
        uint64_t total = 0;
        for (size_t i = 0; i < s->n; i++)
            if (!s->msgs[i].deleted) {
                cnt++;
                total += s->msgs[i].size;
            }
        return out(s, "+OK %zu %" PRIu64, cnt, total);
    }
    if (strcmp(verb, "LIST") == 0 || strcmp(verb, "UIDL") == 0) {
        bool uidl = verb[0] == 'U';
        if (a1) {
            struct pmsg *m = msg_arg(s, a1);
            if (m == NULL)
                return;
            size_t n = (size_t) (m - s->msgs) + 1;
            if (uidl)
                return out(s, "+OK %zu %08x%08x", n, s->uidvalidity, m->uid);
            return out(s, "+OK %zu %" PRIu64, n, m->size);
        }
        out(s, "+OK");
        for (size_t i = 0; i < s->n; i++) {
            if (s->msgs[i].deleted)
                continue;
            if (uidl)
                out(s, "%zu %08x%08x", i + 1, s->uidvalidity, s->msgs[i].uid);
            else
                out(s, "%zu %" PRIu64, i + 1, s->msgs[i].size);
        }
        return out(s, ".");
    }
    if (strcmp(verb, "RETR") == 0)
        return cmd_retr(s, a1, NULL, false);
    if (strcmp(verb, "TOP") == 0)
        return cmd_retr(s, a1, a2, true);
    if (strcmp(verb, "DELE") == 0) {
        struct pmsg *m = msg_arg(s, a1);
        if (m == NULL)
            return;
        m->deleted = true;
        return out(s, "+OK Marked to be deleted");
    }
    if (strcmp(verb, "RSET") == 0) {
        for (size_t i = 0; i < s->n; i++)
            s->msgs[i].deleted = false;
        return out(s, "+OK");
    }
    out(s, "-ERR Unknown command");
    error(s);
}

/* ---- net_proto ---- */

static void session_input(void *arg, struct net_conn *c)
{
    struct psess *s = arg;
    while (!net_conn_closing(c) && !net_conn_held(c)) {
        size_t len;
        const uint8_t *p = net_conn_rdata(c, &len);
        if (len == 0)
            return;
        const uint8_t *lf = memchr(p, '\n', len);
        if (lf == NULL) {
            if (len > (s->sasl_wait ? POP3_SASL_LINE_MAX : POP3_LINE_MAX)) {
                net_conn_consume(c, len);
                if (!s->skipping) {
                    s->skipping = true;
                    s->sasl_wait = false;
                    out(s, "-ERR Line too long");
                    if (error(s))
                        return;
                }
            }
            return;
        }
        size_t n = (size_t) (lf - p), eat = n + 1;
        if (s->skipping) {
            net_conn_consume(c, eat);
            s->skipping = false;
            continue;
        }
        if (n && p[n - 1] == '\r')
            n--;
        size_t max = s->sasl_wait ? POP3_SASL_LINE_MAX : POP3_LINE_MAX;
        if (n > max || memchr(p, 0, n)) {
            net_conn_consume(c, eat);
            s->sasl_wait = false;
            out(s, n > max ? "-ERR Line too long" : "-ERR NUL byte in command");
            if (error(s))
                return;
            continue;
        }
        char line[POP3_SASL_LINE_MAX + 1];
        memcpy(line, p, n);
        line[n] = 0;
        net_conn_consume(c, eat);
        if (s->sasl_wait) {
            s->sasl_wait = false;
            if (strcmp(line, "*") == 0)
                out(s, "-ERR Authentication cancelled");
            else
                sasl_plain(s, line, n);
        } else {
            dispatch(s, line);
        }
        explicit_bzero(line, sizeof line);
        net_conn_timeout(c, s->idle_ms);
    }
}

static void *session_open(struct net_conn *c)
{
    struct psess *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->c = c;
    s->state = P_AUTH;
    s->idle_ms = (unsigned) config_uint(net_conn_node(c)->cfg, "pop3", "idle_timeout_ms");
    if (s->idle_ms == 0)
        s->idle_ms = 600000;
    net_conn_timeout(c, s->idle_ms);
    out(s, "+OK Tern POP3 ready");
    return s;
}

static void session_timeout(void *arg, struct net_conn *c)
{
    struct psess *s = arg;
    out(s, "-ERR Idle for too long, closing");
    net_conn_close(c); /* nothing deleted: only QUIT commits */
}

static void session_close(void *arg)
{
    struct psess *s = arg;
    free(s->msgs);
    explicit_bzero(s, sizeof *s);
    free(s);
}

static void session_tls_ready(void *arg, struct net_conn *c)
{
    (void) arg;
    (void) c;
}

const struct net_proto pop3_proto = {
    .name = "pop3",
    .open = session_open,
    .input = session_input,
    .tls_ready = session_tls_ready,
    .timeout = session_timeout,
    .close = session_close,
};
