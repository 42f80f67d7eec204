/*
 * node/address.h
 * Mail addresses and domain names as Tern stores them: validated and lowercased.
 * RFC 5321 4.1.2 (dot-atom local parts; quoted local parts are refused) and 4.5.3.1
 * (local part <= 64, domain <= 255 octets), RFC 1035 labels (<= 63, LDH).
 *
 * SECURITY: inputs come from SMTP clients and admins; every function bounds its input and
 * writes at most the given output size.
 */
#ifndef TERN_ADDRESS_H
#define TERN_ADDRESS_H

#include <stdbool.h>
#include <stddef.h>

#define ADDR_LOCAL_MAX  64  /* RFC 5321 4.5.3.1.1 */
#define ADDR_DOMAIN_MAX 253 /* presentation form without the trailing dot */
#define ADDR_MAX        (ADDR_LOCAL_MAX + 1 + ADDR_DOMAIN_MAX)

struct addr {
    char local[ADDR_LOCAL_MAX + 1];
    char domain[ADDR_DOMAIN_MAX + 1];
    char full[ADDR_MAX + 1]; /* local@domain */
};

/* addr_domain_valid(): S is a valid domain name (already lowercase or not). */
bool addr_domain_valid(const char *s);
/* addr_domain_normalize() lowercases a valid domain into OUT; -1 if invalid. */
int addr_domain_normalize(const char *s, char out[ADDR_DOMAIN_MAX + 1]);
/* addr_parse() validates local@domain and fills A lowercased; -1 if invalid. */
int addr_parse(const char *s, struct addr *a);
/* addr_parse_alias(): like addr_parse(), but also accepts "@domain" (local = "").  */
int addr_parse_alias(const char *s, struct addr *a);

#endif
