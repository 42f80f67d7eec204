/*
 * node/model.h
 * The read side of the mail model, for frontends and admin: reads the local replica of
 * the meta column family (any thread; RocksDB point reads and short scans are fine on a
 * frontend loop, DESIGN.md). Writes go through Commands (command.h), never here.
 *
 * Records come back as unpacked protobuf-c messages owned by the caller (free with
 * protobuf_c_message_free_unpacked(m, NULL)), except in iteration callbacks, where the
 * record is borrowed for the duration of the call.
 * Return values: 1 found, 0 not found, -1 storage error (logged).
 */
#ifndef TERN_MODEL_H
#define TERN_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "tern.pb-c.h"

#define MODEL_RESOLVE_MAX   100 /* addresses an alias may expand to */
#define MODEL_ALIAS_DEPTH   8   /* aliases of aliases */

int model_domain_exists(struct db *db, const char *domain);
int model_account_get(struct db *db, uint64_t id, Tern__AccountRec **out);
int model_account_by_address(struct db *db, const char *address, Tern__AccountRec **out);
int model_mailbox_get(struct db *db, uint64_t id, Tern__MailboxRec **out);
int model_mailbox_by_name(struct db *db, uint64_t account_id, const char *name,
                          Tern__MailboxRec **out);

/*
 * model_resolve(): where mail for ADDRESS goes. An account address resolves to itself;
 * otherwise an alias (then the domain's catch-all) expands, recursively up to
 * MODEL_ALIAS_DEPTH, into local accounts and foreign addresses (deduplicated, at most
 * MODEL_RESOLVE_MAX in all). Returns 1 when the address is local and deliverable, 0 when
 * it is unknown (or its domain is not local), -1 on error. OUT's arrays are malloc'd:
 * free with model_resolution_free().
 */
struct model_resolution {
    uint64_t *accounts;
    size_t naccounts;
    char **foreign;
    size_t nforeign;
};
int model_resolve(struct db *db, const char *address, struct model_resolution *out);
void model_resolution_free(struct model_resolution *r);

/* model_verify(): checks ADDRESS's password. SLOW (yescrypt): thread pool only. Returns 1
 * and sets *ACCOUNT_ID when it matches, 0 when not (or no such account), -1 on error. */
int model_verify(struct db *db, const char *address, const char *password, size_t len,
                 uint64_t *account_id);

/*
 * model_quota_allows(): may a message of SIZE bytes go to account A? Quotas of 0 are
 * unlimited. As Dovecot's quota_grace, a message that crosses the quota is let through
 * when the account was under quota before and ends at most 10% over; so a full mailbox
 * refuses mail, and a nearly full one does not bounce a message by a few bytes. The FSM
 * (at apply) and SMTP (at RCPT, with the declared SIZE) use this one rule.
 */
bool model_quota_allows(uint64_t used_bytes, uint64_t used_messages, uint64_t quota_bytes,
                        uint64_t quota_messages, uint64_t size);

/* Iteration: CB returns 0 to go on, non-zero to stop (which is returned). */
typedef int model_each_cb(void *ctx, const ProtobufCMessage *rec);
int model_domains(struct db *db, model_each_cb *cb, void *ctx);                  /* DomainRec */
int model_accounts(struct db *db, const char *domain, model_each_cb *cb, void *ctx); /* AccountRec */
int model_aliases(struct db *db, const char *domain, model_each_cb *cb, void *ctx);  /* AliasRec */
int model_mailboxes(struct db *db, uint64_t account_id, model_each_cb *cb, void *ctx); /* MailboxRec */
/* model_queue(): the outbound queue's QueueRecs in id order. */
int model_queue(struct db *db, model_each_cb *cb, void *ctx);
/* model_members(): the cluster's MemberRecs in id order. */
int model_members(struct db *db, model_each_cb *cb, void *ctx);
/* model_messages(): MessageRecs with LO <= uid <= HI in uid order. */
int model_messages(struct db *db, uint64_t mailbox_id, uint32_t lo, uint32_t hi,
                   model_each_cb *cb, void *ctx);

#endif
