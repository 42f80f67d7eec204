/*
 * proxy/imap/imap.h
 * The IMAP server (RFC 3501 IMAP4rev1, RFC 9051 IMAP4rev2) as a net_proto, and the pieces
 * its files share: the session, the selected-mailbox view (message sequence numbers are
 * per session), replies. fetch.c answers FETCH, search.c SEARCH, session.c the rest.
 *
 * SECURITY: talks to anyone on the Internet before LOGIN. Commands are parsed with hard
 * limits (parser.h); LOGIN and AUTHENTICATE are refused without TLS except from loopback
 * (LOGINDISABLED); passwords are checked in the thread pool and never logged; every
 * write is acknowledged only after its Raft commit (DESIGN.md).
 */
#ifndef TERN_IMAP_H
#define TERN_IMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "address.h"
#include "mime.h"
#include "net.h"
#include "parser.h"
#include "seqset.h"
#include "tern.pb-c.h"

extern const struct net_proto imap_proto;

#define IMAP_AUTOLOGOUT_MS  (30 * 60 * 1000) /* RFC 3501 5.4: at least 30 minutes */
#define IMAP_PREAUTH_MS     (60 * 1000)      /* before LOGIN */
#define IMAP_LOGIN_FAILURES 3                /* then BYE */
#define IMAP_FAIL_DELAY_MS  1000             /* a failed login is answered after this */
#define IMAP_BAD_MAX        20               /* BAD answers before BYE */
#define IMAP_MESSAGE_MAX    (50 * 1024 * 1024)

enum imap_state { IS_NOTAUTH = 1, IS_AUTH = 2, IS_SELECTED = 4, IS_LOGOUT = 8 };

/* The selected mailbox as this session sees it: msn i+1 is uids[i]. Changes made
 * elsewhere wait in the pending lists until the session may tell the client. */
struct imap_view {
    uint64_t id;
    uint32_t uidvalidity;
    bool readonly;
    uint32_t *uids;
    size_t n, cap;
    uint64_t highestmodseq;
    uint32_t recent_from; /* uids >= this are \Recent in this session */
    uint32_t *pend_new, *pend_flags, *pend_exp;
    size_t npend_new, npend_flags, npend_exp;
    size_t cap_new, cap_flags, cap_exp;
    uint64_t own_modseq[8]; /* our own STOREs: their events need no second FETCH */
    unsigned own_i;
};

struct imap_sess {
    struct net_conn *c;
    struct imap_cmd *synced; /* the command that waited (cluster_sync, a body fetch) and runs now */
    /* bodies a SEARCH/SORT/THREAD found missing on this node (imap_note_missing) */
    uint8_t *missing;
    size_t nmissing, capmissing;
    bool collect_missing;
    struct imap_parser *parser;
    enum imap_state state;
    uint64_t account;
    char user[ADDR_MAX + 1];
    unsigned bad, login_failures;
    bool condstore, qresync, rev2;
    struct imap_view *v;
    struct imap_cmd *cur; /* a command waiting for an asynchronous completion */
    bool idling;
    bool authenticating;
    char pending_tag[IMAP_PARSER_TAG_MAX + 1];
};

/* ---- replies (session.c) ---- */
void imap_tagged(struct imap_sess *s, const char *tag, const char *status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void imap_untagged(struct imap_sess *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* imap_write_astring(): an IMAP string (quoted or literal) of S[0..LEN) to the output. */
void imap_write_string(struct imap_sess *s, const char *str, size_t len);
void imap_write_flags(struct imap_sess *s, char **flags, size_t n, uint32_t uid);

/* ---- the view (session.c) ---- */
/* imap_view_msn(): the message sequence number of UID, or 0. */
uint32_t imap_view_msn(const struct imap_view *v, uint32_t uid);
/* imap_view_uids(): the UIDs (ascending) that SET names (as UIDs when BY_UID, else as
 * sequence numbers) among the view's messages. *OUT is malloc'd. Returns the count or -1. */
long imap_view_uids(const struct imap_view *v, const struct imap_seqset *set, bool by_uid,
                    uint32_t **out);
/* imap_flush_updates(): tells the client what changed elsewhere. EXPUNGEs only when
 * ALLOW_EXPUNGE (never during FETCH, STORE, SEARCH: RFC 3501 7.4.1). */
void imap_flush_updates(struct imap_sess *s, bool allow_expunge);
/* imap_vanished(): VANISHED (EARLIER) of expunges after SINCE, within SET (NULL: all). */
void imap_vanished(struct imap_sess *s, uint64_t mailbox_id, uint64_t since,
                   const struct imap_seqset *set);
/* imap_own_store(): MODSEQ was produced by this session's STORE. */
void imap_own_store(struct imap_sess *s, uint64_t modseq);

/* ---- commands in their own files ---- */
void imap_cmd_fetch(struct imap_sess *s, struct imap_cmd *cmd);  /* fetch.c */
void imap_cmd_search(struct imap_sess *s, struct imap_cmd *cmd); /* search.c */
void imap_cmd_sort(struct imap_sess *s, struct imap_cmd *cmd);   /* sort.c */
void imap_cmd_thread(struct imap_sess *s, struct imap_cmd *cmd); /* sort.c */
/* imap_decode_cte(): P[0..N) with content-transfer-encoding ENC (base64, quoted-printable;
 * anything else is copied) undone, malloc'd, *OUTL octets; NULL when out of memory. */
char *imap_decode_cte(const char *p, size_t n, const char *enc, size_t encl, size_t *outl);
/* imap_search_match(): the sequence numbers (ascending, malloc'd in *OUT) of the messages
 * that search keys A[0..N) match; -1 with *WHY (a BAD text) when the keys are invalid. */
long imap_search_match(struct imap_sess *s, const struct imap_arg *a, size_t n, uint32_t **out,
                       const char **why);

/* imap_done(): ends an asynchronous command: frees it, releases the connection. */
void imap_done(struct imap_sess *s);
/* imap_note_missing(): a body the running command needed is not on this node; remembered
 * (up to IMAP_MISSING_MAX) while the command may still be run again. */
#define IMAP_MISSING_MAX 10000
void imap_note_missing(struct imap_sess *s, const uint8_t hash[32]);
/* imap_prefetch(): when bodies were noted missing, takes CMD over: fetches them from the
 * members that hold them and runs CMD again (answering nothing now). True when it did;
 * the caller then frees its results and returns without answering. */
bool imap_prefetch(struct imap_sess *s, struct imap_cmd *cmd);

/* imap_date(): "dd-Mon-yyyy hh:mm:ss +0000" of unix time T (INTERNALDATE). */
void imap_date(uint64_t t, char out[32]);

/* imap_load_message(): the index record of UID in the selected mailbox (caller frees with
 * tern__message_rec__free_unpacked), or NULL. */
Tern__MessageRec *imap_load_message(struct imap_sess *s, uint32_t uid);

#endif
