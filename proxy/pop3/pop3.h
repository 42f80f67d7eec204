/*
 * proxy/pop3/pop3.h
 * The POP3 server (RFC 1939, 2449, 2595, 5034) as a net_proto; see pop3.c.
 */
#ifndef TERN_POP3_H
#define TERN_POP3_H

#include "net.h"

extern const struct net_proto pop3_proto;

#endif
