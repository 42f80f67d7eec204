/*
 * node/keyspace.h
 * The meta column family's key families (documented in storage/KEYSPACE.md; keep both
 * true). Builders shared by the FSM (writer) and the read model (readers).
 */
#ifndef TERN_KEYSPACE_H
#define TERN_KEYSPACE_H

#include <stdint.h>
#include <string.h>

#include "keys.h"

#define KS_APPLIED   'a' /* "a" -> u64 applied index */
#define KS_COUNTER   'n' /* "n" name -> u64 */
#define KS_DOMAIN    'D' /* "D" domain -> DomainRec */
#define KS_ACCOUNT   'U' /* "U" u64 account id -> AccountRec */
#define KS_ADDRESS   'u' /* "u" domain 0x00 local -> u64 account id */
#define KS_ALIAS     'L' /* "L" domain 0x00 local -> AliasRec ("" local: catch-all) */
#define KS_MAILBOX   'M' /* "M" u64 mailbox id -> MailboxRec */
#define KS_MBOXNAME  'm' /* "m" u64 account id, name -> u64 mailbox id */
#define KS_MESSAGE   'I' /* "I" u64 mailbox id, u32 uid -> MessageRec */
#define KS_BODYREF   'B' /* "B" 32-byte sha256 -> u64 reference count */
#define KS_REQUEST   'Q' /* "Q" request id -> RequestRec */
#define KS_REQRING   'q' /* "q" u64 seq -> request id */
#define KS_QUEUE     'O' /* "O" u64 queue id -> QueueRec (outbound) */
#define KS_EXPUNGED  'X' /* "X" u64 mailbox id, u32 uid -> ExpungedRec (tombstone) */
#define KS_MEMBER    'N' /* "N" u64 node id -> MemberRec (cluster member) */

#define KS_CTR_ACCOUNT     "account"
#define KS_CTR_MAILBOX     "mailbox"
#define KS_CTR_UIDVALIDITY "uidvalidity"
#define KS_CTR_REQUEST     "request"
#define KS_CTR_QUEUE       "queue"

static inline void ks_applied(struct key *k)
{
    key_init(k, KS_APPLIED);
}
static inline void ks_counter(struct key *k, const char *name)
{
    key_init(k, KS_COUNTER);
    key_str(k, name);
}
static inline void ks_domain(struct key *k, const char *domain)
{
    key_init(k, KS_DOMAIN);
    key_str(k, domain);
}
static inline void ks_account(struct key *k, uint64_t id)
{
    key_init(k, KS_ACCOUNT);
    key_u64(k, id);
}
/* ks_addr(): PREFIX is KS_ADDRESS or KS_ALIAS; LOCAL may be "" (catch-all alias). */
static inline void ks_addr(struct key *k, uint8_t prefix, const char *domain, const char *local)
{
    key_init(k, prefix);
    key_str(k, domain);
    key_u8(k, 0);
    key_str(k, local);
}
static inline void ks_member(struct key *k, uint64_t id)
{
    key_init(k, KS_MEMBER);
    key_u64(k, id);
}
static inline void ks_mailbox(struct key *k, uint64_t id)
{
    key_init(k, KS_MAILBOX);
    key_u64(k, id);
}
static inline void ks_mboxname(struct key *k, uint64_t account, const char *name)
{
    key_init(k, KS_MBOXNAME);
    key_u64(k, account);
    key_str(k, name);
}
static inline void ks_message(struct key *k, uint64_t mailbox, uint32_t uid)
{
    key_init(k, KS_MESSAGE);
    key_u64(k, mailbox);
    key_u32(k, uid);
}
static inline void ks_queue(struct key *k, uint64_t id)
{
    key_init(k, KS_QUEUE);
    key_u64(k, id);
}
static inline void ks_expunged(struct key *k, uint64_t mailbox, uint32_t uid)
{
    key_init(k, KS_EXPUNGED);
    key_u64(k, mailbox);
    key_u32(k, uid);
}
static inline void ks_bodyref(struct key *k, const uint8_t hash[32])
{
    key_init(k, KS_BODYREF);
    key_bytes(k, hash, 32);
}

#endif
