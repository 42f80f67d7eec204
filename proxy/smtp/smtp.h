/*
 * proxy/smtp/smtp.h
 * The SMTP server (RFC 5321) as a net_proto: MX (mail for local domains and known
 * addresses only, never a relay) and submission (RFC 6409: AUTH required, the sender must
 * be the account's own address or one of its aliases, foreign recipients go to the
 * outbound queue). Extensions: PIPELINING, SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES,
 * STARTTLS, AUTH PLAIN LOGIN, CHUNKING, DSN.
 *
 * SECURITY: talks to anyone on the Internet. Every input is bounded (line length, message
 * size, recipients, errors, auth failures, idle time); the end of DATA is only
 * CRLF.CRLF and bare CR/LF in DATA is refused (SMTP smuggling); a 250 after DATA/BDAT is
 * sent only when the body is synced and the delivery committed through Raft.
 */
#ifndef TERN_SMTP_H
#define TERN_SMTP_H

#include "net.h"

enum smtp_role { SMTP_ROLE_MX = 0, SMTP_ROLE_SUBMISSION };

/* The per-listener settings (struct net_listen.proto_cfg). */
struct smtp_listen_cfg {
    enum smtp_role role;
};

extern const struct net_proto smtp_proto;

#endif
