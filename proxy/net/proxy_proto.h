/*
 * proxy/net/proxy_proto.h
 * PROXY protocol header parser, v1 (text) and v2 (binary), as specified in HAProxy's
 * proxy-protocol.txt sections 2.1 and 2.2. A listener configured for it calls pp_parse() on
 * the first bytes of each connection, before TLS or any greeting, to learn the client
 * address the load balancer saw. Pure functions: no allocation, no I/O, no state.
 *
 * SECURITY: the bytes come from whoever connected. Only trusted load balancers may send a
 * PROXY header (it replaces the client address used by logs, rate limits and SPF); the
 * caller enforces that allowlist before calling pp_parse() and times the header out. The
 * parser still treats every byte as hostile.
 */
#ifndef TERN_PROXY_PROTO_H
#define TERN_PROXY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>

#define PP_V1_MAX     107  /* spec 2.1: longest v1 line ("UNKNOWN" worst case) with CRLF */
#define PP_V2_HDR_LEN 16   /* spec 2.2: signature, ver_cmd, fam, len */
#define PP_V2_TLV_MAX 2048 /* our cap on v2 len (addresses + TLVs); the spec allows 65535 */
#define PP_HDR_MAX    (PP_V2_HDR_LEN + PP_V2_TLV_MAX) /* longest header pp_parse() accepts */

/* What a complete header said. */
struct pp_info {
    bool local;    /* v2 LOCAL command (health check) or v1 "UNKNOWN": keep the socket's
                      addresses */
    int version;   /* 1 or 2 */
    bool has_addr; /* src and dst hold the client's and the proxy's listening address: only
                      for v1 TCP4/TCP6 and v2 PROXY with TCP over IPv4/IPv6 (fam 0x11, 0x21).
                      When false, keep the socket's addresses. */
    struct sockaddr_storage src, dst; /* AF_INET or AF_INET6 with port, when has_addr; else
                                         zeroed */
};

/*
 * pp_parse() looks at the LEN bytes at BUF, the first bytes the peer sent, and never reads
 * past BUF + LEN. Returns:
 *   > 0  a complete, valid header of that many bytes is at BUF; OUT is filled. Bytes after
 *        it belong to the next layer (a TLS ClientHello, an SMTP command) and are untouched.
 *   0    more bytes are needed: what is there is the start of a valid header (the caller
 *        must not wait for more than PP_HDR_MAX bytes: by then pp_parse() has decided).
 *   -1   the bytes are not a valid PROXY header, or exceed the limits above. Drop the
 *        connection. Decided as soon as the bytes present show it: a first byte that is
 *        neither 'P' nor '\r' is -1 at once.
 * OUT is written only when > 0 is returned. LEN == 0 gives 0.
 *
 * Call it again on the whole buffer after each read; it keeps no state.
 *
 * Strictness (v1): exactly "PROXY", single spaces, "TCP4", "TCP6" or "UNKNOWN" (upper case);
 * addresses as inet_pton() accepts them for the announced family (IPv4: dotted quad, no
 * leading zeros); ports decimal 0..65535, no sign, no leading zero except "0" itself; CRLF
 * required (a bare CR or LF is -1); the line, CRLF included, at most PP_V1_MAX bytes. After
 * "UNKNOWN", " anything" is skipped up to the CRLF (any byte but CR and LF).
 *
 * Strictness (v2): version 2; command LOCAL or PROXY; family nibble 0..3 and transport
 * nibble 0..2 for either command (spec 2.2: other values "must be rejected"); len <=
 * PP_V2_TLV_MAX. Under PROXY, when both nibbles are specified (INET/INET6/UNIX with
 * STREAM/DGRAM), len must hold the address block (12/36/216 bytes) and the rest must be a
 * sequence of TLVs (type, 16-bit length, value) that ends exactly at 16 + len; TLV values
 * are not interpreted. Under LOCAL, or with an UNSPEC nibble, the block is skipped
 * unexamined (spec: its layout is unknown and it must be ignored).
 */
long pp_parse(const uint8_t *buf, size_t len, struct pp_info *out);

/*
 * pp_addr_str() writes the address of SS ("192.0.2.1", "2001:db8::1") as a NUL-terminated
 * string into OUT and returns OUT. A family other than AF_INET/AF_INET6 gives "unknown".
 */
const char *pp_addr_str(const struct sockaddr_storage *ss, char out[INET6_ADDRSTRLEN]);

#endif
