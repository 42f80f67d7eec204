/*
 * proxy/smtp/session.c
 * One SMTP session: the command table, the state machine, recipients, DATA and BDAT, AUTH,
 * and the durable delivery at the end of a message. RFC 5321, 2920 PIPELINING, 3030
 * CHUNKING, 3207 STARTTLS, 3461 DSN, 4954 AUTH, 6409 submission, 6531 SMTPUTF8.
 *
 * The end of a message: the body (trace headers + content) was hashed while it arrived;
 * the thread pool stores it with fsync (body_writer_finish), then one Deliver command with
 * every local target and the remote recipients goes through Raft; only its commit
 * answers 250. While that runs the session holds its connection, so pipelined commands
 * wait in the read buffer, and the event loop never waits on a disk or a peer.
 *
 * SECURITY: see smtp.h. Passwords are checked in the thread pool and never logged.
 */
#include "smtp.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "address.h"
#include "body_store.h"
#include "cluster.h"
#include "command.h"
#include "log.h"
#include "mime.h"
#include "model.h"
#include "passwd.h"
#include "smtp_data.h"
#include "smtp_parse.h"
#include "tern.pb-c.h"

#define SMTP_TARGETS_MAX  100  /* local accounts per message (FSM takes up to 128) */
#define SMTP_REMOTE_MAX   1000 /* remote recipients per message (FSM_REMOTE_MAX) */
#define SMTP_TRACE_MAX    2048 /* Return-Path + Received */
#define SMTP_LOGIN_MAX    1100 /* base64 of a 511-byte password plus slack */

enum state {
    S_FRESH,   /* no HELO/EHLO yet */
    S_READY,   /* greeted, no transaction */
    S_MAIL,    /* MAIL accepted */
    S_DATA,    /* inside DATA */
    S_BDAT,    /* inside a BDAT chunk */
    S_AUTH,    /* waiting for a SASL response line */
};

enum auth_step { A_NONE, A_PLAIN, A_LOGIN_USER, A_LOGIN_PASS };

struct target {
    uint64_t account;
    char rcpt[ADDR_MAX + 1];
    unsigned notify;
    char orcpt[SMTP_ORCPT_MAX + 1];
};

struct remote {
    char addr[SMTP_PATH_MAX + 1];
    unsigned notify;
    char orcpt[SMTP_ORCPT_MAX + 1];
};

struct session {
    struct net_conn *c;
    enum smtp_role role;
    enum state state;
    /* limits, from the config */
    uint64_t max_size;
    unsigned max_rcpts, max_errors, max_auth_failures;
    unsigned cmd_timeout, data_timeout;
    bool plaintext_auth;
    /* connection */
    char helo[256];
    bool esmtp;
    unsigned errors, auth_failures;
    bool authed;
    char user[ADDR_MAX + 1];
    uint64_t user_id;
    enum auth_step auth;
    char login_user[ADDR_MAX + 1];
    /* transaction */
    struct smtp_mail mail;
    unsigned nrcpt; /* accepted RCPT commands */
    struct target *targets; /* grown on demand: idle sessions stay small */
    size_t ntargets, captargets;
    struct remote *remotes;
    size_t nremotes, capremotes;
    struct body_writer *body;
    struct smtp_data data;
    uint64_t bdat_left;
    uint64_t bdat_total; /* octets of this message's chunks so far (without trace) */
    bool bdat_last;
    bool bdat_bad; /* a BDAT transaction that will be refused at LAST */
    const char *bdat_why;
    enum state bdat_return; /* state after a chunk */
    bool skipping; /* discarding the rest of an over-long line */
    uint64_t msg_seq;
};

/* ---- replies ---- */

static void reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(struct session *s, const char *fmt, ...)
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

static void slog(struct session *s, int level, const char *ev, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void slog(struct session *s, int level, const char *ev, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    net_conn_log(s->c, level, ev, "%s", buf);
}

/* error(): counts a protocol error; too many end the session. Returns true when ended. */
static bool error(struct session *s)
{
    if (++s->errors < s->max_errors)
        return false;
    reply(s, "421 4.7.0 %s Too many errors, closing connection",
          net_conn_node(s->c)->hostname);
    slog(s, LOG_WARN, "smtp.too_many_errors", "errors=%u", s->errors);
    net_conn_close(s->c);
    return true;
}

/* ---- transactions ---- */

static void reset_tx(struct session *s)
{
    memset(&s->mail, 0, sizeof s->mail);
    s->nrcpt = 0;
    s->ntargets = 0;
    s->nremotes = 0;
    body_writer_free(s->body);
    s->body = NULL;
    s->bdat_left = 0;
    s->bdat_last = false;
    s->bdat_bad = false;
    s->bdat_why = NULL;
    if (s->state == S_MAIL || s->state == S_DATA || s->state == S_BDAT)
        s->state = S_READY;
}

static bool in_tx(const struct session *s)
{
    return s->state == S_MAIL;
}

/* ---- EHLO and friends ---- */

static bool auth_offered(struct session *s)
{
    return s->role == SMTP_ROLE_SUBMISSION && !s->authed &&
           (net_conn_secure(s->c) || s->plaintext_auth);
}

static bool starttls_offered(struct session *s)
{
    return net_conn_listen(s->c)->tls == NET_TLS_STARTTLS && !net_conn_tls(s->c);
}

static void cmd_helo(struct session *s, const struct smtp_cmd *cmd, bool ehlo)
{
    size_t n = cmd->arglen < sizeof s->helo - 1 ? cmd->arglen : sizeof s->helo - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char) cmd->arg[i];
        s->helo[i] = (ch > ' ' && ch < 0x7f) ? (char) ch : '?';
    }
    s->helo[n] = 0;
    if (s->state != S_FRESH)
        reset_tx(s);
    s->state = S_READY;
    s->esmtp = ehlo;
    const char *host = net_conn_node(s->c)->hostname;
    if (!ehlo) {
        reply(s, "250 %s", host);
        return;
    }
    reply(s, "250-%s Hello %s [%s]", host, s->helo, net_conn_peer(s->c));
    reply(s, "250-PIPELINING");
    reply(s, "250-SIZE %" PRIu64, s->max_size);
    reply(s, "250-8BITMIME");
    reply(s, "250-SMTPUTF8");
    reply(s, "250-ENHANCEDSTATUSCODES");
    reply(s, "250-CHUNKING");
    if (starttls_offered(s))
        reply(s, "250-STARTTLS");
    if (auth_offered(s))
        reply(s, "250-AUTH PLAIN LOGIN");
    reply(s, "250 DSN");
}

static void cmd_starttls(struct session *s)
{
    if (!starttls_offered(s)) {
        reply(s, net_conn_tls(s->c) ? "503 5.5.1 TLS already active"
                                    : "502 5.5.1 STARTTLS not available here");
        error(s);
        return;
    }
    reply(s, "220 2.0.0 Ready to start TLS");
    /* RFC 3207 4.2: forget everything learnt before TLS, the client greets again */
    reset_tx(s);
    s->state = S_FRESH;
    s->helo[0] = 0;
    s->authed = false; /* an AUTH done in plaintext does not survive the upgrade */
    s->user[0] = 0;
    s->user_id = 0;
    s->auth = A_NONE;
    if (net_conn_starttls(s->c) != 0) {
        slog(s, LOG_ERROR, "smtp.starttls_failed", "reason=tls_setup");
        net_conn_close(s->c);
    }
}

/* ---- AUTH ---- */

struct auth_job {
    uv_work_t work;
    struct session *s;
    char user[ADDR_MAX + 1];
    char pass[PASSWD_MAX + 1];
    size_t passlen;
    int rv;
    uint64_t id;
};

static void auth_work(uv_work_t *w)
{
    struct auth_job *j = w->data;
    j->rv = model_verify(net_conn_node(j->s->c)->db, j->user, j->pass, j->passlen, &j->id);
    OPENSSL_cleanse(j->pass, sizeof j->pass);
}

static void auth_done(uv_work_t *w, int status)
{
    struct auth_job *j = w->data;
    struct session *s = j->s;
    struct net_conn *c = s->c;
    if (!net_conn_closing(c)) {
        if (status == 0 && j->rv == 1) {
            s->authed = true;
            s->user_id = j->id;
            snprintf(s->user, sizeof s->user, "%s", j->user);
            reply(s, "235 2.7.0 Authentication successful");
            slog(s, LOG_INFO, "smtp.auth", "result=ok user=%s", s->user);
        } else if (status == 0 && j->rv == 0) {
            char q[LOG_Q_MAX];
            slog(s, LOG_INFO, "smtp.auth", "result=failed user=%s", log_q(q, j->user));
            if (++s->auth_failures >= s->max_auth_failures) {
                reply(s, "421 4.7.0 Too many authentication failures");
                net_conn_close(c);
            } else {
                reply(s, "535 5.7.8 Authentication credentials invalid");
            }
        } else {
            reply(s, "454 4.7.0 Temporary authentication failure");
        }
    }
    OPENSSL_cleanse(j, sizeof *j);
    free(j);
    net_conn_release(c); /* last: it may free the session */
}

/* auth_check(): verifies USER/PASS in the thread pool; the reply follows. */
static void auth_check(struct session *s, const char *user, const char *pass, size_t passlen)
{
    s->state = S_READY;
    s->auth = A_NONE;
    struct auth_job *j = calloc(1, sizeof *j);
    if (j == NULL || passlen > PASSWD_MAX) {
        free(j);
        reply(s, passlen > PASSWD_MAX ? "535 5.7.8 Authentication credentials invalid"
                                      : "454 4.7.0 Temporary authentication failure");
        return;
    }
    j->s = s;
    snprintf(j->user, sizeof j->user, "%s", user);
    memcpy(j->pass, pass, passlen);
    j->passlen = passlen;
    j->work.data = j;
    net_conn_hold(s->c);
    if (uv_queue_work(net_conn_loop(s->c), &j->work, auth_work, auth_done) != 0) {
        OPENSSL_cleanse(j, sizeof *j);
        free(j);
        reply(s, "454 4.7.0 Temporary authentication failure");
        net_conn_release(s->c);
    }
}

static void auth_plain(struct session *s, const char *b64, size_t n)
{
    uint8_t dec[SMTP_BASE64_DECODED_MAX(SMTP_LOGIN_MAX * 2)];
    size_t dl = 0;
    struct smtp_plain p;
    if (n > SMTP_LOGIN_MAX * 2 || smtp_base64_decode(b64, n, dec, sizeof dec, &dl) != 0 ||
        smtp_sasl_plain(dec, dl, &p) != 0) {
        OPENSSL_cleanse(dec, sizeof dec);
        s->state = S_READY;
        s->auth = A_NONE;
        reply(s, "501 5.5.2 Invalid PLAIN response");
        error(s);
        return;
    }
    OPENSSL_cleanse(dec, sizeof dec);
    if (p.authzid[0] && strcasecmp(p.authzid, p.authcid) != 0) {
        explicit_bzero(&p, sizeof p);
        s->state = S_READY;
        s->auth = A_NONE;
        reply(s, "535 5.7.8 Authorization identity not allowed");
        return;
    }
    auth_check(s, p.authcid, p.passwd, strlen(p.passwd));
    explicit_bzero(&p, sizeof p);
}

static void cmd_auth(struct session *s, const struct smtp_cmd *cmd)
{
    if (s->role != SMTP_ROLE_SUBMISSION) {
        reply(s, "503 5.5.1 AUTH not available on this port");
        error(s);
        return;
    }
    if (s->authed) {
        reply(s, "503 5.5.1 Already authenticated");
        error(s);
        return;
    }
    if (in_tx(s)) {
        reply(s, "503 5.5.1 AUTH not allowed in a mail transaction");
        error(s);
        return;
    }
    if (!net_conn_secure(s->c) && !s->plaintext_auth) {
        reply(s, "538 5.7.11 Encryption required for requested authentication mechanism");
        error(s);
        return;
    }
    struct smtp_auth a;
    if (smtp_parse_auth(cmd->arg, cmd->arglen, &a) != 0) {
        reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
        error(s);
        return;
    }
    if (strcmp(a.mech, "PLAIN") == 0) {
        if (a.has_ir) {
            auth_plain(s, a.ir, a.irlen);
            return;
        }
        s->state = S_AUTH;
        s->auth = A_PLAIN;
        reply(s, "334 ");
    } else if (strcmp(a.mech, "LOGIN") == 0) {
        s->state = S_AUTH;
        if (a.has_ir) { /* RFC 4954 allows it; LOGIN's first answer is the user name */
            uint8_t u[ADDR_MAX + 8];
            size_t ul;
            if (smtp_base64_decode(a.ir, a.irlen, u, sizeof u - 1, &ul) != 0 || ul > ADDR_MAX) {
                s->state = S_READY;
                reply(s, "501 5.5.2 Invalid LOGIN response");
                error(s);
                return;
            }
            memcpy(s->login_user, u, ul);
            s->login_user[ul] = 0;
            s->auth = A_LOGIN_PASS;
            reply(s, "334 UGFzc3dvcmQ6"); /* "Password:" */
        } else {
            s->auth = A_LOGIN_USER;
            reply(s, "334 VXNlcm5hbWU6"); /* "Username:" */
        }
    } else {
        reply(s, "504 5.5.4 Unrecognized authentication type");
        error(s);
    }
}

/* auth_line(): a SASL response line (RFC 4954 4): base64, or "*" to cancel. */
static void auth_line(struct session *s, const char *line, size_t n)
{
    if (n == 1 && line[0] == '*') {
        s->state = S_READY;
        s->auth = A_NONE;
        reply(s, "501 5.7.0 Authentication cancelled");
        return;
    }
    if (s->auth == A_PLAIN) {
        auth_plain(s, line, n);
        return;
    }
    uint8_t dec[SMTP_BASE64_DECODED_MAX(SMTP_LOGIN_MAX)];
    size_t dl = 0;
    if (n > SMTP_LOGIN_MAX || smtp_base64_decode(line, n, dec, sizeof dec, &dl) != 0 ||
        memchr(dec, 0, dl) != NULL) {
        OPENSSL_cleanse(dec, sizeof dec);
        s->state = S_READY;
        s->auth = A_NONE;
        reply(s, "501 5.5.2 Invalid LOGIN response");
        error(s);
        return;
    }
    if (s->auth == A_LOGIN_USER) {
        if (dl > ADDR_MAX) {
            s->state = S_READY;
            s->auth = A_NONE;
            reply(s, "535 5.7.8 Authentication credentials invalid");
            return;
        }
        memcpy(s->login_user, dec, dl);
        s->login_user[dl] = 0;
        s->auth = A_LOGIN_PASS;
        reply(s, "334 UGFzc3dvcmQ6");
        return;
    }
    auth_check(s, s->login_user, (const char *) dec, dl);
    OPENSSL_cleanse(dec, sizeof dec);
}

/* ---- MAIL, RCPT ---- */

/* sender_allowed(): on submission the sender must be the account or resolve to it. */
static bool sender_allowed(struct session *s, const struct addr *a)
{
    struct db *db = net_conn_node(s->c)->db;
    if (strcmp(a->full, s->user) == 0)
        return true;
    struct model_resolution r;
    if (model_resolve(db, a->full, &r) != 1)
        return false;
    bool ok = r.naccounts == 1 && r.accounts[0] == s->user_id && r.nforeign == 0;
    model_resolution_free(&r);
    return ok;
}

static void cmd_mail(struct session *s, const struct smtp_cmd *cmd)
{
    if (s->state == S_FRESH) {
        reply(s, "503 5.5.1 Send HELO/EHLO first");
        error(s);
        return;
    }
    if (in_tx(s)) {
        reply(s, "503 5.5.1 Nested MAIL command");
        error(s);
        return;
    }
    if (s->role == SMTP_ROLE_SUBMISSION && !s->authed) {
        reply(s, "530 5.7.0 Authentication required");
        error(s);
        return;
    }
    const char *why = NULL;
    int rv = smtp_parse_mail(cmd->arg, cmd->arglen, &s->mail, &why);
    if (rv == SMTP_ERR_PARAM) {
        reply(s, "555 5.5.4 %s", why ? why : "Unsupported parameter");
        error(s);
        return;
    }
    if (rv == SMTP_ERR_UTF8) {
        reply(s, "553 5.6.7 %s", why ? why : "Non-ASCII address needs SMTPUTF8");
        memset(&s->mail, 0, sizeof s->mail);
        return;
    }
    if (rv != 0) {
        reply(s, rv == SMTP_ERR_ADDR ? "501 5.1.7 %s" : "501 5.5.4 %s",
              why ? why : "Syntax: MAIL FROM:<address>");
        memset(&s->mail, 0, sizeof s->mail);
        error(s);
        return;
    }
    if (!s->esmtp && s->mail.params) {
        reply(s, "555 5.5.4 Parameters need EHLO");
        error(s);
        return;
    }
    if (s->mail.body == SMTP_BODY_BINARYMIME) {
        reply(s, "555 5.5.4 BINARYMIME not supported");
        error(s);
        return;
    }
    if (s->mail.size > s->max_size) {
        reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
        memset(&s->mail, 0, sizeof s->mail);
        return;
    }
    if (s->role == SMTP_ROLE_SUBMISSION && (s->mail.null_path || !sender_allowed(s, &s->mail.addr))) {
        char q[LOG_Q_MAX];
        slog(s, LOG_WARN, "smtp.sender_refused", "user=%s from=%s", s->user,
             log_q(q, s->mail.null_path ? "<>" : s->mail.addr.full));
        reply(s, "553 5.7.1 Sender address rejected: not owned by user %s", s->user);
        memset(&s->mail, 0, sizeof s->mail);
        return;
    }
    s->bdat_bad = false; /* a refused BDAT before this MAIL is not this transaction's */
    s->bdat_why = NULL;
    s->state = S_MAIL;
    reply(s, "250 2.1.0 Ok");
}

static bool add_target(struct session *s, uint64_t account, const struct smtp_rcpt *r)
{
    for (size_t i = 0; i < s->ntargets; i++)
        if (s->targets[i].account == account)
            return true; /* one copy per account, however many addresses lead there */
    if (s->ntargets == SMTP_TARGETS_MAX)
        return false;
    if (s->ntargets == s->captargets) {
        size_t cap = s->captargets ? 2 * s->captargets : 4;
        struct target *v = realloc(s->targets, cap * sizeof *v);
        if (v == NULL)
            return false;
        s->targets = v;
        s->captargets = cap;
    }
    struct target *t = &s->targets[s->ntargets++];
    t->account = account;
    snprintf(t->rcpt, sizeof t->rcpt, "%s", r->addr.full);
    t->notify = r->notify;
    snprintf(t->orcpt, sizeof t->orcpt, "%s", r->orcpt);
    return true;
}

static bool add_remote(struct session *s, const char *addr, const struct smtp_rcpt *r)
{
    for (size_t i = 0; i < s->nremotes; i++)
        if (strcmp(s->remotes[i].addr, addr) == 0)
            return true;
    if (s->nremotes == SMTP_REMOTE_MAX)
        return false;
    if (s->nremotes == s->capremotes) {
        size_t cap = s->capremotes ? 2 * s->capremotes : 4;
        struct remote *v = realloc(s->remotes, cap * sizeof *v);
        if (v == NULL)
            return false;
        s->remotes = v;
        s->capremotes = cap;
    }
    struct remote *x = &s->remotes[s->nremotes++];
    snprintf(x->addr, sizeof x->addr, "%s", addr);
    x->notify = r->notify;
    snprintf(x->orcpt, sizeof x->orcpt, "%s", r->orcpt);
    return true;
}

/* quota_ok(): the declared size (or 0) still fits ACCOUNT. */
static bool quota_ok(struct session *s, uint64_t account)
{
    Tern__AccountRec *a = NULL;
    if (model_account_get(net_conn_node(s->c)->db, account, &a) != 1)
        return false;
    bool ok = model_quota_allows(a->used_bytes, a->used_messages, a->quota_bytes,
                                 a->quota_messages, s->mail.size);
    tern__account_rec__free_unpacked(a, NULL);
    return ok;
}

static void cmd_rcpt(struct session *s, const struct smtp_cmd *cmd)
{
    if (!in_tx(s)) {
        reply(s, "503 5.5.1 Need MAIL before RCPT");
        error(s);
        return;
    }
    if (s->nrcpt >= s->max_rcpts) {
        reply(s, "452 4.5.3 Too many recipients");
        return;
    }
    struct smtp_rcpt r;
    const char *why = NULL;
    int rv = smtp_parse_rcpt(cmd->arg, cmd->arglen, (s->mail.params & SMTP_P_SMTPUTF8) != 0,
                             &r, &why);
    if (rv == SMTP_ERR_PARAM) {
        reply(s, "555 5.5.4 %s", why ? why : "Unsupported parameter");
        error(s);
        return;
    }
    if (rv == SMTP_ERR_UTF8) {
        reply(s, "553 5.6.7 %s", why ? why : "Non-ASCII address needs SMTPUTF8");
        return;
    }
    if (rv != 0) {
        reply(s, rv == SMTP_ERR_ADDR ? "501 5.1.3 %s" : "501 5.5.4 %s",
              why ? why : "Syntax: RCPT TO:<address>");
        error(s);
        return;
    }
    if (r.postmaster) { /* RFC 5321 4.5.1: postmaster of our primary domain */
        snprintf(r.addr.domain, sizeof r.addr.domain, "%s", net_conn_node(s->c)->hostname);
        snprintf(r.addr.full, sizeof r.addr.full, "postmaster@%s", r.addr.domain);
    }
    struct db *db = net_conn_node(s->c)->db;
    int local = model_domain_exists(db, r.addr.domain);
    if (local < 0) {
        reply(s, "451 4.3.0 Temporary lookup failure");
        return;
    }
    char q[LOG_Q_MAX];
    if (local == 0) {
        /* never an open relay: foreign recipients only from authenticated submission */
        if (s->role != SMTP_ROLE_SUBMISSION || !s->authed) {
            slog(s, LOG_WARN, "smtp.relay_denied", "rcpt=%s", log_q(q, r.addr.full));
            reply(s, "554 5.7.1 <%s>: Relay access denied", r.addr.full);
            error(s);
            return;
        }
        if (!add_remote(s, r.addr.full, &r)) {
            reply(s, "452 4.5.3 Too many recipients");
            return;
        }
        s->nrcpt++;
        reply(s, "250 2.1.5 Ok");
        return;
    }
    struct model_resolution res;
    rv = model_resolve(db, r.addr.full, &res);
    if (rv < 0) {
        reply(s, "451 4.3.0 Temporary lookup failure");
        return;
    }
    if (rv == 0) {
        slog(s, LOG_INFO, "smtp.unknown_user", "rcpt=%s", log_q(q, r.addr.full));
        reply(s, "550 5.1.1 <%s>: Recipient address rejected: User unknown", r.addr.full);
        error(s);
        return;
    }
    size_t full = 0, added = 0;
    bool room = true;
    for (size_t i = 0; i < res.naccounts && room; i++) {
        if (!quota_ok(s, res.accounts[i])) {
            full++;
            continue;
        }
        room = add_target(s, res.accounts[i], &r);
        added++;
    }
    /* aliases that forward elsewhere: the message is queued for those, as a local
     * alias's owner asked; this is not relaying for strangers */
    for (size_t i = 0; i < res.nforeign && room; i++) {
        room = add_remote(s, res.foreign[i], &r);
        added++;
    }
    model_resolution_free(&res);
    if (!room) {
        reply(s, "452 4.5.3 Too many recipients");
        return;
    }
    if (added == 0 && full > 0) {
        slog(s, LOG_INFO, "smtp.quota", "rcpt=%s", log_q(q, r.addr.full));
        reply(s, "452 4.2.2 <%s>: Mailbox full", r.addr.full);
        return;
    }
    s->nrcpt++;
    reply(s, "250 2.1.5 Ok");
}

/* ---- message content ---- */

static void rfc5322_date(char *out, size_t n)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    static const char *days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *mons[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    snprintf(out, n, "%s, %d %s %d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
             mons[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* begin_body(): a new body writer with the trace headers (RFC 5321 4.4) in front. */
static bool begin_body(struct session *s)
{
    s->body = body_writer_new(s->max_size + SMTP_TRACE_MAX);
    if (s->body == NULL)
        return false;
    char date[64], trace[SMTP_TRACE_MAX];
    rfc5322_date(date, sizeof date);
    bool tls = net_conn_tls(s->c);
    bool utf8 = (s->mail.params & SMTP_P_SMTPUTF8) != 0;
    /* RFC 3848 / RFC 6531 "with" keywords: ESMTP, ESMTPS, ESMTPSA, UTF8SMTPS, ... */
    char with[16];
    snprintf(with, sizeof with, "%s%s%s",
             utf8 ? "UTF8SMTP" : (s->esmtp || tls || s->authed ? "ESMTP" : "SMTP"), tls ? "S" : "",
             s->authed ? "A" : "");
    char tlsinfo[160] = "";
    if (tls)
        snprintf(tlsinfo, sizeof tlsinfo, "\r\n\t(using %s with cipher %s)",
                 net_conn_tls_version(s->c), net_conn_tls_cipher(s->c));
    char forclause[ADDR_MAX + 16] = "";
    if (s->nrcpt == 1 && s->ntargets + s->nremotes == 1)
        snprintf(forclause, sizeof forclause, "\r\n\tfor <%s>",
                 s->ntargets ? s->targets[0].rcpt : s->remotes[0].addr);
    int n = snprintf(trace, sizeof trace,
                     "Return-Path: <%s>\r\n"
                     "Received: from %s ([%s])\r\n\tby %s (Tern) with %s id %s-%" PRIu64
                     "%s%s;\r\n\t%s\r\n",
                     s->mail.null_path ? "" : s->mail.addr.full, s->helo[0] ? s->helo : "unknown",
                     net_conn_peer(s->c), net_conn_node(s->c)->hostname, with, net_conn_sid(s->c),
                     s->msg_seq, tlsinfo, forclause, date);
    if (n < 0 || (size_t) n >= sizeof trace)
        n = 0;
    return body_writer_append(s->body, trace, (size_t) n) == 0;
}

static int data_sink(void *ctx, const uint8_t *p, size_t n)
{
    struct session *s = ctx;
    /* over the size limit the writer marks itself too big; the reader keeps reading to
     * the end of the data so that the 552 comes in step */
    return body_writer_append(s->body, p, n) == 0 ? 0 : -1;
}

/* ---- the durable end of a message ---- */

struct delivery {
    uv_work_t work;
    struct session *s;
    struct body_writer *body;
    uint8_t hash[BODY_HASH_LEN];
    uint8_t *mime; /* the parsed structure for IMAP (malloc), or NULL */
    size_t mime_len;
    int rv;
};

static void delivered(void *arg, int status, uint64_t index, const Tern__Result *res)
{
    struct delivery *d = arg;
    struct session *s = d->s;
    struct net_conn *c = s->c;
    if (!net_conn_closing(c)) {
        char hex[BODY_HEX_LEN];
        body_hash_hex(d->hash, hex);
        if (status != 0) {
            slog(s, LOG_WARN, "smtp.deliver_failed", "reason=%s", cons_strerror(status));
            reply(s, "451 4.3.0 Temporary failure, try again later");
        } else if (res->status != RESULT_OK) {
            slog(s, LOG_ERROR, "smtp.deliver_refused", "status=%d", res->status);
            reply(s, "451 4.3.0 Temporary failure, try again later");
        } else {
            size_t ok = 0, quota = 0;
            for (size_t i = 0; i < res->n_delivered; i++) {
                if (res->delivered[i]->status == RESULT_OK)
                    ok++;
                else if (res->delivered[i]->status == RESULT_QUOTA)
                    quota++;
            }
            if (ok == 0 && s->nremotes == 0 && quota > 0) {
                reply(s, "552 5.2.2 Mailbox full");
            } else {
                if (ok + quota < res->n_delivered || quota)
                    slog(s, LOG_ERROR, "smtp.partial_delivery", "ok=%zu quota=%zu targets=%zu",
                         ok, quota, res->n_delivered);
                reply(s, "250 2.0.0 Ok: queued as %s-%" PRIu64, net_conn_sid(c), s->msg_seq);
            }
            slog(s, LOG_INFO, "smtp.delivered",
                 "from=%s local=%zu remote=%zu size=%zu body=%.16s index=%" PRIu64,
                 s->mail.null_path ? "<>" : s->mail.addr.full, ok, s->nremotes,
                 body_writer_size(d->body), hex, index);
        }
        reset_tx(s);
        s->msg_seq++;
        net_conn_timeout(c, s->cmd_timeout);
    }
    body_writer_free(d->body);
    free(d->mime);
    free(d);
    net_conn_release(c);
}

static void store_work(uv_work_t *w)
{
    struct delivery *d = w->data;
    d->rv = body_writer_finish(d->body, net_conn_node(d->s->c)->db, d->hash);
    /* parsed once here, in the thread pool, so that IMAP FETCH never parses */
    size_t len;
    const char *data = body_writer_data(d->body, &len);
    struct mime_msg m = {0};
    if (d->rv == 0 && mime_parse((const uint8_t *) data, len, &m) == 0) {
        if (mime_encode(&m, &d->mime, &d->mime_len) != 0)
            d->mime = NULL;
        mime_free(&m);
    }
}

static void propose_delivery(struct delivery *d)
{
    struct session *s = d->s;
    Tern__Envelope env = TERN__ENVELOPE__INIT;
    env.mail_from = s->mail.null_path ? "" : s->mail.addr.full;
    env.envid = s->mail.envid[0] ? s->mail.envid : NULL;
    env.has_ret = env.has_smtputf8 = env.has_body = 1;
    env.ret = (int32_t) s->mail.ret;
    env.smtputf8 = (s->mail.params & SMTP_P_SMTPUTF8) != 0;
    env.body = s->mail.body == SMTP_BODY_8BITMIME ? 1 : 0;
    env.helo = s->helo;
    env.client = (char *) net_conn_peer(s->c);
    env.auth = s->authed ? s->user : NULL;

    Tern__DeliverTarget tg[SMTP_TARGETS_MAX], *tgp[SMTP_TARGETS_MAX];
    for (size_t i = 0; i < s->ntargets; i++) {
        tern__deliver_target__init(&tg[i]);
        tg[i].account_id = s->targets[i].account;
        tg[i].rcpt_to = s->targets[i].rcpt;
        tg[i].has_notify = s->targets[i].notify != 0;
        tg[i].notify = s->targets[i].notify;
        tg[i].orcpt = s->targets[i].orcpt[0] ? s->targets[i].orcpt : NULL;
        tgp[i] = &tg[i];
    }
    Tern__QueueRecipient *qr = calloc(s->nremotes ? s->nremotes : 1, sizeof *qr);
    Tern__QueueRecipient **qrp = calloc(s->nremotes ? s->nremotes : 1, sizeof *qrp);
    Tern__Deliver del = TERN__DELIVER__INIT;
    Tern__Command cmd = TERN__COMMAND__INIT;
    if (qr == NULL || qrp == NULL)
        goto fail;
    for (size_t i = 0; i < s->nremotes; i++) {
        tern__queue_recipient__init(&qr[i]);
        qr[i].address = s->remotes[i].addr;
        qr[i].has_notify = s->remotes[i].notify != 0;
        qr[i].notify = s->remotes[i].notify;
        qr[i].orcpt = s->remotes[i].orcpt[0] ? s->remotes[i].orcpt : NULL;
        qrp[i] = &qr[i];
    }
    del.body_hash.data = d->hash;
    del.body_hash.len = BODY_HASH_LEN;
    del.size = body_writer_size(d->body);
    del.n_targets = s->ntargets;
    del.targets = tgp;
    del.n_remote = s->nremotes;
    del.remote = qrp;
    del.envelope = &env;
    del.has_mime = d->mime != NULL;
    del.mime.data = d->mime;
    del.mime.len = d->mime_len;
    cmd.op_case = TERN__COMMAND__OP_DELIVER;
    cmd.deliver = &del;
    cmd.account_hint = s->ntargets ? s->targets[0].rcpt : NULL;
    /* the session reads nothing back: no need to wait for this node's own apply */
    if (command_propose_ex(net_conn_node(s->c)->cons, net_conn_loopq(s->c), &cmd,
                           CONS_NO_APPLY_WAIT, delivered, d) != 0)
        goto fail;
    free(qr);
    free(qrp);
    return;
fail:
    free(qr);
    free(qrp);
    delivered(d, CONS_ENOMEM, 0, NULL);
}

/* replicated(): the body is on a majority of its owners (or not: 451). */
static void replicated(void *arg, int status)
{
    struct delivery *d = arg;
    if (status != 0 || net_conn_closing(d->s->c)) {
        if (!net_conn_closing(d->s->c))
            slog(d->s, LOG_ERROR, "smtp.replicate_failed", "size=%zu",
                 body_writer_size(d->body));
        delivered(d, CONS_EIO, 0, NULL);
        return;
    }
    propose_delivery(d);
}

static void stored(uv_work_t *w, int status)
{
    struct delivery *d = w->data;
    if (status != 0 || d->rv != 0 || net_conn_closing(d->s->c)) {
        if (!net_conn_closing(d->s->c))
            slog(d->s, LOG_ERROR, "smtp.store_failed", "size=%zu", body_writer_size(d->body));
        delivered(d, CONS_EIO, 0, NULL);
        return;
    }
    /* acknowledged means durable on a majority of the body's owners (DESIGN.md) */
    struct cluster *cl = net_conn_node(d->s->c)->cluster;
    size_t len;
    const char *data = body_writer_data(d->body, &len);
    if (cl == NULL ||
        cluster_body_replicate(cl, d->hash, data, len, net_conn_loopq(d->s->c), replicated, d) != 0)
        replicated(d, cl == NULL ? 0 : -1);
}

/* finish_message(): the whole message is in; check it, then store and commit. */
static void finish_message(struct session *s, bool bare_newline, bool bdat)
{
    net_conn_timeout(s->c, s->cmd_timeout);
    if (bare_newline) {
        slog(s, LOG_WARN, "smtp.bare_newline", "action=reject");
        /* as Postfix's smtpd_forbid_bare_newline = reject */
        reply(s, "550 5.5.2 Message contains bare CR or LF (SMTP smuggling defence)");
        reset_tx(s);
        return;
    }
    if (s->body != NULL && !body_writer_too_big(s->body) && !bdat && s->data.sink_failed) {
        reply(s, "451 4.3.0 Temporary failure, try again later"); /* out of memory */
        reset_tx(s);
        return;
    }
    if (s->body == NULL || body_writer_too_big(s->body)) {
        reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
        reset_tx(s);
        return;
    }
    struct delivery *d = calloc(1, sizeof *d);
    if (d == NULL) {
        reply(s, "451 4.3.0 Temporary failure, try again later");
        reset_tx(s);
        return;
    }
    d->s = s;
    d->body = s->body; /* the delivery owns the body from here */
    s->body = NULL;
    d->work.data = d;
    s->state = S_READY;
    net_conn_hold(s->c);
    if (uv_queue_work(net_conn_loop(s->c), &d->work, store_work, stored) != 0)
        delivered(d, CONS_ENOMEM, 0, NULL);
}

static void cmd_data(struct session *s)
{
    if (s->body != NULL || s->bdat_bad) { /* RFC 3030 2: no DATA inside a BDAT transfer */
        reply(s, "503 5.5.1 DATA not allowed after BDAT");
        error(s);
        return;
    }
    if (!in_tx(s)) {
        reply(s, "503 5.5.1 Need MAIL command");
        error(s);
        return;
    }
    if (s->nrcpt == 0) {
        reply(s, "554 5.5.1 No valid recipients");
        error(s);
        return;
    }
    if (!begin_body(s)) {
        reply(s, "451 4.3.0 Temporary failure, try again later");
        reset_tx(s);
        return;
    }
    smtp_data_init(&s->data);
    s->state = S_DATA;
    net_conn_timeout(s->c, s->data_timeout);
    reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void cmd_bdat(struct session *s, const struct smtp_cmd *cmd)
{
    uint64_t size;
    bool last;
    if (smtp_parse_bdat(cmd->arg, cmd->arglen, &size, &last) != 0) {
        /* the chunk size is unknown: the stream cannot be resynchronised */
        reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");
        net_conn_close(s->c);
        return;
    }
    s->bdat_left = size;
    if (s->body == NULL && !s->bdat_bad)
        s->bdat_total = 0;
    s->bdat_total += size;
    s->bdat_last = last;
    s->bdat_return = s->state;
    if (s->body == NULL && !s->bdat_bad) { /* the first chunk of a message */
        if (!in_tx(s) || s->nrcpt == 0) {
            s->bdat_bad = true;
            s->bdat_why = in_tx(s) ? "554 5.5.1 No valid recipients" : "503 5.5.1 Need MAIL command";
        } else if (!begin_body(s)) {
            s->bdat_bad = true;
            s->bdat_why = "451 4.3.0 Temporary failure, try again later";
        }
    }
    s->state = S_BDAT;
    net_conn_timeout(s->c, s->data_timeout);
}

/* bdat_input(): chunk bytes, counted exactly, no dot-stuffing (RFC 3030 2). A refused
 * transaction still reads every chunk so the stream stays in step, and answers each. */
static void bdat_input(struct session *s)
{
    size_t len;
    const uint8_t *p = net_conn_rdata(s->c, &len);
    size_t take = len < s->bdat_left ? len : (size_t) s->bdat_left;
    if (take && s->body && !s->bdat_bad)
        (void) body_writer_append(s->body, p, take);
    net_conn_consume(s->c, take);
    s->bdat_left -= take;
    if (s->bdat_left > 0)
        return;
    s->state = s->bdat_return;
    net_conn_timeout(s->c, s->cmd_timeout);
    if (s->bdat_bad) {
        reply(s, "%s", s->bdat_why);
        if (s->bdat_last) {
            s->bdat_bad = false;
            reset_tx(s);
        }
        return;
    }
    if (s->bdat_last) {
        finish_message(s, false, true);
        return;
    }
    if (body_writer_too_big(s->body))
        reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
    else
        reply(s, "250 2.0.0 %" PRIu64 " octets received", s->bdat_total);
}

static void data_input(struct session *s)
{
    size_t len, used = 0;
    const uint8_t *p = net_conn_rdata(s->c, &len);
    int done = smtp_data_feed(&s->data, p, len, &used, data_sink, s);
    net_conn_consume(s->c, used);
    if (done == 1) {
        s->state = S_MAIL;
        finish_message(s, smtp_data_bad(&s->data), false);
    }
}

/* ---- the command table ---- */

static void cmd_dispatch(struct session *s, const char *line, size_t n)
{
    struct smtp_cmd cmd;
    int rv = smtp_parse_command(line, n, &cmd);
    if (rv == SMTP_ERR_TOOLONG) {
        reply(s, "500 5.5.2 Line too long");
        error(s);
        return;
    }
    if (rv != 0 && cmd.verb == SMTP_V_UNKNOWN) {
        reply(s, "500 5.5.2 Syntax error, command unrecognized");
        error(s);
        return;
    }
    if (rv != 0) {
        static const char *syntax[] = {
            [SMTP_V_HELO] = "501 5.5.4 Syntax: HELO hostname",
            [SMTP_V_EHLO] = "501 5.5.4 Syntax: EHLO hostname",
            [SMTP_V_MAIL] = "501 5.5.4 Syntax: MAIL FROM:<address>",
            [SMTP_V_RCPT] = "501 5.5.4 Syntax: RCPT TO:<address>",
            [SMTP_V_DATA] = "501 5.5.4 Syntax: DATA",
            [SMTP_V_BDAT] = "501 5.5.4 Syntax: BDAT size [LAST]",
            [SMTP_V_RSET] = "501 5.5.4 Syntax: RSET",
            [SMTP_V_NOOP] = "501 5.5.4 Syntax: NOOP",
            [SMTP_V_QUIT] = "501 5.5.4 Syntax: QUIT",
            [SMTP_V_VRFY] = "501 5.5.4 Syntax: VRFY address",
            [SMTP_V_EXPN] = "501 5.5.4 Syntax: EXPN list",
            [SMTP_V_HELP] = "501 5.5.4 Syntax: HELP",
            [SMTP_V_STARTTLS] = "501 5.5.4 Syntax: STARTTLS",
            [SMTP_V_AUTH] = "501 5.5.4 Syntax: AUTH mechanism",
        };
        reply(s, "%s", syntax[cmd.verb] ? syntax[cmd.verb] : "501 5.5.4 Syntax error");
        if (cmd.verb == SMTP_V_BDAT) { /* see cmd_bdat: no resync possible */
            net_conn_close(s->c);
            return;
        }
        error(s);
        return;
    }
    switch (cmd.verb) {
    case SMTP_V_HELO:
    case SMTP_V_EHLO:
        cmd_helo(s, &cmd, cmd.verb == SMTP_V_EHLO);
        return;
    case SMTP_V_STARTTLS:
        cmd_starttls(s);
        return;
    case SMTP_V_AUTH:
        cmd_auth(s, &cmd);
        return;
    case SMTP_V_MAIL:
        cmd_mail(s, &cmd);
        return;
    case SMTP_V_RCPT:
        cmd_rcpt(s, &cmd);
        return;
    case SMTP_V_DATA:
        cmd_data(s);
        return;
    case SMTP_V_BDAT:
        cmd_bdat(s, &cmd);
        return;
    case SMTP_V_RSET:
        reset_tx(s);
        reply(s, "250 2.0.0 Ok");
        return;
    case SMTP_V_NOOP:
        reply(s, "250 2.0.0 Ok");
        return;
    case SMTP_V_QUIT:
        reply(s, "221 2.0.0 Bye");
        net_conn_close(s->c);
        return;
    case SMTP_V_VRFY:
        reply(s, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
        return;
    case SMTP_V_EXPN:
        reply(s, "502 5.5.1 EXPN not supported");
        return;
    case SMTP_V_HELP:
        reply(s, "214 2.0.0 See RFC 5321: https://www.rfc-editor.org/rfc/rfc5321");
        return;
    default:
        slog(s, LOG_INFO, "smtp.unknown_command", "bytes=%zu", n);
        reply(s, "500 5.5.2 Syntax error, command unrecognized");
        error(s);
        return;
    }
}

/* cancel_auth(): an unusable SASL answer ends the exchange; the next line is a command */
static void cancel_auth(struct session *s)
{
    if (s->state == S_AUTH)
        s->state = S_READY;
    s->auth = A_NONE;
}

/* ---- net_proto ---- */

static void session_input(void *arg, struct net_conn *c)
{
    struct session *s = arg;
    while (!net_conn_closing(c) && !net_conn_held(c)) {
        if (s->state == S_DATA) {
            data_input(s);
            return; /* finish_message may hold; the net layer calls again */
        }
        if (s->state == S_BDAT) {
            bdat_input(s);
            if (s->state == S_BDAT)
                return;
            continue;
        }
        size_t len;
        const uint8_t *p = net_conn_rdata(c, &len);
        if (len == 0)
            return;
        const uint8_t *lf = memchr(p, '\n', len);
        if (lf == NULL) {
            if (net_conn_rfull(c) || len >= SMTP_CMD_LINE_MAX) {
                /* RFC 5321 4.5.3.1.9: line too long; skip to its end and go on */
                net_conn_consume(c, len);
                if (!s->skipping) {
                    s->skipping = true;
                    cancel_auth(s);
                    reply(s, "500 5.5.2 Line too long");
                    if (error(s))
                        return;
                }
            }
            return;
        }
        size_t linelen = (size_t) (lf - p);
        size_t eat = linelen + 1;
        if (s->skipping) {
            net_conn_consume(c, eat);
            s->skipping = false;
            continue;
        }
        if (linelen && p[linelen - 1] == '\r')
            linelen--;
        char line[SMTP_CMD_LINE_MAX + 1];
        if (linelen >= SMTP_CMD_LINE_MAX) {
            net_conn_consume(c, eat);
            cancel_auth(s);
            reply(s, "500 5.5.2 Line too long");
            if (error(s))
                return;
            continue;
        }
        memcpy(line, p, linelen);
        line[linelen] = 0;
        net_conn_consume(c, eat);
        if (s->state == S_AUTH)
            auth_line(s, line, linelen);
        else
            cmd_dispatch(s, line, linelen);
        explicit_bzero(line, linelen); /* may have held a password */
    }
}

static void *session_open(struct net_conn *c)
{
    struct session *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->c = c;
    const struct smtp_listen_cfg *lc = net_conn_listen(c)->proto_cfg;
    s->role = lc ? lc->role : SMTP_ROLE_MX;
    const struct config *cfg = net_conn_node(c)->cfg;
    s->max_size = config_size(cfg, "smtp", "max_message_size");
    s->max_rcpts = (unsigned) config_uint(cfg, "smtp", "max_recipients");
    s->max_errors = (unsigned) config_uint(cfg, "smtp", "max_errors");
    s->max_auth_failures = (unsigned) config_uint(cfg, "smtp", "max_auth_failures");
    s->cmd_timeout = (unsigned) config_uint(cfg, "smtp", "command_timeout_ms");
    s->data_timeout = (unsigned) config_uint(cfg, "smtp", "data_timeout_ms");
    s->plaintext_auth = config_bool(cfg, "smtp", "plaintext_auth");
    if (s->max_errors == 0)
        s->max_errors = 1;
    if (s->max_auth_failures == 0)
        s->max_auth_failures = 1;
    s->state = S_FRESH;
    net_conn_timeout(c, s->cmd_timeout);
    reply(s, "220 %s ESMTP Tern", net_conn_node(c)->hostname);
    return s;
}

static void session_tls_ready(void *arg, struct net_conn *c)
{
    (void) arg;
    (void) c; /* the client speaks first after STARTTLS (EHLO) */
}

static void session_timeout(void *arg, struct net_conn *c)
{
    struct session *s = arg;
    reply(s, "421 4.4.2 %s Error: timeout exceeded", net_conn_node(c)->hostname);
    net_conn_close(c);
}

static void session_close(void *arg)
{
    struct session *s = arg;
    body_writer_free(s->body);
    free(s->targets);
    free(s->remotes);
    explicit_bzero(s, sizeof *s);
    free(s);
}

const struct net_proto smtp_proto = {
    .name = "smtp",
    .open = session_open,
    .input = session_input,
    .tls_ready = session_tls_ready,
    .timeout = session_timeout,
    .close = session_close,
};
