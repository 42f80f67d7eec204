/*
 * proxy/net/proxy_proto.c
 * PROXY protocol v1/v2 header parser (HAProxy proxy-protocol.txt 2.1, 2.2). See
 * proxy_proto.h for the contract. The caller re-parses its buffer from the start after each
 * read, so the parser keeps no state: every call decides from the bytes present whether
 * they are a complete header, the start of one, or not a header at all.
 *
 * SECURITY: reads bytes from any peer that connected; only allowlisted load balancers may
 * send them (checked by the caller). Every read is bounds-checked against LEN, the v2
 * signature contains a NUL so no str* function touches the input, and the limits
 * (PP_V1_MAX, PP_V2_TLV_MAX) are enforced before asking for more bytes.
 */
#include "proxy_proto.h"

#include <arpa/inet.h>
#include <string.h>

#define PP_V2_SIG_LEN   12
#define PP_V2_VERSION   0x2
#define PP_V2_CMD_LOCAL 0x0
#define PP_V2_CMD_PROXY 0x1
#define PP_V2_FAM_INET  0x1
#define PP_V2_FAM_INET6 0x2
#define PP_V2_FAM_UNIX  0x3
#define PP_V2_TRANS_MAX 0x2 /* DGRAM: highest assigned transport */
#define PP_V2_TCP4      0x11
#define PP_V2_TCP6      0x21
#define PP_V2_ADDR4_LEN 12  /* 2 * 4 address bytes + 2 * 2 port bytes */
#define PP_V2_ADDR6_LEN 36  /* 2 * 16 + 2 * 2 */
#define PP_V2_UNIX_LEN  216 /* 2 * 108 */
#define PP_V2_TLV_HDR   3   /* type, length_hi, length_lo */

/* Longest text inet_pton(AF_INET6) accepts: six "ffff:" groups and a dotted quad. */
#define PP_V1_ADDR_MAX 45

static const uint8_t pp_v2_sig[PP_V2_SIG_LEN] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* ---- v1 ------------------------------------------------------------------------------- */

/* v1_more() is the answer when the v1 line stops short after N bytes: wait for more, unless
 * the N bytes already are the longest line allowed (spec 2.1: no CRLF within 107 bytes). */
static long v1_more(size_t n)
{
    return n >= PP_V1_MAX ? -1 : 0;
}

/* v1_match() compares BUF[POS..N) with the start of LIT. Returns 1 when all of LIT is
 * there, 0 when the bytes present are a proper prefix of it, -1 on a difference. */
static int v1_match(const uint8_t *buf, size_t n, size_t pos, const char *lit)
{
    size_t litlen = strlen(lit);
    size_t avail = n - pos < litlen ? n - pos : litlen;

    if (memcmp(buf + pos, lit, avail) != 0)
        return -1;
    return avail == litlen ? 1 : 0;
}

static bool v1_addr_char(int af, uint8_t c)
{
    if (c >= '0' && c <= '9')
        return true;
    if (c == '.')
        return true;
    if (af == AF_INET6)
        return c == ':' || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    return false;
}

/*
 * v1_addr_prefix_ok() tells whether the TEXTLEN characters at TEXT (room for
 * PP_V1_ADDR_MAX + 8 bytes) can still become an address of family AF, by trying the few
 * shortest completions that matter: none (already complete), "::" or ":" (IPv6 groups),
 * "0" (after a ':' or a '.'), and the missing octets of a dotted quad. So a partial address
 * that no further byte can repair ("256", "01", "1::2::") is rejected at once, not when its
 * terminating space arrives.
 */
static bool v1_addr_prefix_ok(int af, char *text, size_t textlen)
{
    static const char *const completions[] = {"",    "0",    ":",     "::",    ".0",
                                              "0.0", ".0.0", "0.0.0", ".0.0.0"};
    struct in6_addr scratch; /* large enough for either family */

    if (textlen == 0)
        return true;
    for (size_t i = 0; i < sizeof(completions) / sizeof(completions[0]); i++) {
        memcpy(text + textlen, completions[i], strlen(completions[i]) + 1);
        if (inet_pton(af, text, &scratch) == 1)
            return true;
    }
    return false;
}

/*
 * v1_addr() parses the address of family AF at BUF[*POS..N), which must end with TERM.
 * Returns 1 with ADDR (struct in_addr or in6_addr) set and *POS past TERM; 0 when the bytes
 * up to N can still become such an address; -1 otherwise.
 */
static int v1_addr(const uint8_t *buf, size_t n, size_t *pos, int af, uint8_t term, void *addr)
{
    char text[PP_V1_ADDR_MAX + 8]; /* address, longest completion, NUL */
    size_t end = *pos, textlen;

    while (end < n && v1_addr_char(af, buf[end]))
        end++;
    textlen = end - *pos;
    if (textlen > PP_V1_ADDR_MAX)
        return -1;
    memcpy(text, buf + *pos, textlen);
    if (end == n)
        return v1_addr_prefix_ok(af, text, textlen) ? 0 : -1;
    if (buf[end] != term || textlen == 0)
        return -1;
    text[textlen] = '\0';
    if (inet_pton(af, text, addr) != 1)
        return -1;
    *pos = end + 1;
    return 1;
}

/*
 * v1_port() parses a port at BUF[*POS..N), which must end with TERM: decimal 0..65535, no
 * sign, no leading zero (spec 2.1: "to avoid any possible confusion with octal numbers").
 * Returns 1 with *PORT set and *POS past TERM, 0 when the digits so far are a valid start,
 * -1 otherwise.
 */
static int v1_port(const uint8_t *buf, size_t n, size_t *pos, uint8_t term, uint16_t *port)
{
    uint32_t value = 0;
    size_t i;

    for (i = *pos; i < n && buf[i] >= '0' && buf[i] <= '9'; i++) {
        if (i > *pos && buf[*pos] == '0')
            return -1;
        value = value * 10 + (uint32_t) (buf[i] - '0');
        if (value > UINT16_MAX)
            return -1;
    }
    if (i == n)
        return 0;
    if (i == *pos || buf[i] != term)
        return -1;
    *port = (uint16_t) value;
    *pos = i + 1;
    return 1;
}

/* v1_lf() expects the LF of a CRLF whose CR is at POS - 1. Returns the header length, 0 or
 * -1 as pp_parse(). */
static long v1_lf(const uint8_t *buf, size_t n, size_t pos)
{
    if (pos == n)
        return v1_more(n);
    return buf[pos] == '\n' ? (long) pos + 1 : -1;
}

/* "PROXY UNKNOWN" at BUF, then "\r\n" or " anything\r\n" (spec: "the receiver must ignore
 * anything presented before the CRLF"; a bare LF is not a line end and is refused). */
static long v1_unknown(const uint8_t *buf, size_t n, size_t pos, struct pp_info *out)
{
    long hdrlen;

    if (pos < n && buf[pos] != '\r' && buf[pos] != ' ')
        return -1;
    while (pos < n && buf[pos] != '\r') {
        if (buf[pos] == '\n')
            return -1;
        pos++;
    }
    if (pos == n)
        return v1_more(n);
    hdrlen = v1_lf(buf, n, pos + 1);
    if (hdrlen > 0) {
        memset(out, 0, sizeof(*out));
        out->local = true;
        out->version = 1;
    }
    return hdrlen;
}

static void v1_fill(struct pp_info *out, int af, const void *src, const void *dst, uint16_t sport,
                    uint16_t dport)
{
    memset(out, 0, sizeof(*out));
    out->version = 1;
    out->has_addr = true;
    if (af == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *) &out->src;
        struct sockaddr_in *d = (struct sockaddr_in *) &out->dst;

        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, src, sizeof(s->sin_addr));
        memcpy(&d->sin_addr, dst, sizeof(d->sin_addr));
        s->sin_port = htons(sport);
        d->sin_port = htons(dport);
    } else {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *) &out->src;
        struct sockaddr_in6 *d = (struct sockaddr_in6 *) &out->dst;

        s->sin6_family = d->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, src, sizeof(s->sin6_addr));
        memcpy(&d->sin6_addr, dst, sizeof(d->sin6_addr));
        s->sin6_port = htons(sport);
        d->sin6_port = htons(dport);
    }
}

/* "PROXY TCP4 " / "PROXY TCP6 " is at BUF[0..POS): src dst sport dport CRLF follow. */
static long v1_tcp(const uint8_t *buf, size_t n, size_t pos, int af, struct pp_info *out)
{
    struct in6_addr src, dst; /* large enough for either family */
    uint16_t sport = 0, dport = 0;
    long hdrlen;
    int rc;

    if ((rc = v1_addr(buf, n, &pos, af, ' ', &src)) != 1)
        goto stop;
    if ((rc = v1_addr(buf, n, &pos, af, ' ', &dst)) != 1)
        goto stop;
    if ((rc = v1_port(buf, n, &pos, ' ', &sport)) != 1)
        goto stop;
    if ((rc = v1_port(buf, n, &pos, '\r', &dport)) != 1)
        goto stop;
    hdrlen = v1_lf(buf, n, pos);
    if (hdrlen > 0)
        v1_fill(out, af, &src, &dst, sport, dport);
    return hdrlen;

stop:
    return rc < 0 ? -1 : v1_more(n);
}

/* BUF[0] is 'P': a v1 line, or nothing we know. */
static long v1_parse(const uint8_t *buf, size_t len, struct pp_info *out)
{
    static const char prefix[] = "PROXY ";
    size_t n = len < PP_V1_MAX ? len : PP_V1_MAX; /* never look further */
    size_t pos = sizeof(prefix) - 1;
    int tcp4, tcp6, unknown;
    int rc = v1_match(buf, n, 0, prefix);

    if (rc != 1)
        return rc;
    tcp4 = v1_match(buf, n, pos, "TCP4 ");
    tcp6 = v1_match(buf, n, pos, "TCP6 ");
    unknown = v1_match(buf, n, pos, "UNKNOWN");
    if (tcp4 == 1)
        return v1_tcp(buf, n, pos + strlen("TCP4 "), AF_INET, out);
    if (tcp6 == 1)
        return v1_tcp(buf, n, pos + strlen("TCP6 "), AF_INET6, out);
    if (unknown == 1)
        return v1_unknown(buf, n, pos + strlen("UNKNOWN"), out);
    return tcp4 == 0 || tcp6 == 0 || unknown == 0 ? 0 : -1;
}

/* ---- v2 ------------------------------------------------------------------------------- */

/* v2_addr_len() is the size of the address block for family/transport byte FAM, or 0 when
 * either nibble is UNSPEC, whose block has no defined layout. FAM is already validated. */
static size_t v2_addr_len(uint8_t fam)
{
    if ((fam & 0x0F) == 0)
        return 0;
    switch (fam >> 4) {
    case PP_V2_FAM_INET:
        return PP_V2_ADDR4_LEN;
    case PP_V2_FAM_INET6:
        return PP_V2_ADDR6_LEN;
    case PP_V2_FAM_UNIX:
        return PP_V2_UNIX_LEN;
    default:
        return 0;
    }
}

/*
 * v2_tlv_walk() checks the structure of the TLVs from OFF to END (16 + len) with AVAIL
 * (<= END) bytes present: each TLV header must fit before END, each value must end by END.
 * Returns -1 on an overrun, else 0; a TLV header beyond AVAIL is left for a later call
 * (values are skipped unread, so they need not be present yet).
 */
static int v2_tlv_walk(const uint8_t *buf, size_t avail, size_t off, size_t end)
{
    while (off < end) {
        size_t tlvlen;

        if (end - off < PP_V2_TLV_HDR)
            return -1;
        if (avail < off + PP_V2_TLV_HDR)
            return 0;
        tlvlen = (size_t) buf[off + 1] << 8 | buf[off + 2];
        if (tlvlen > end - off - PP_V2_TLV_HDR)
            return -1;
        off += PP_V2_TLV_HDR + tlvlen;
    }
    return 0;
}

static void v2_fill(struct pp_info *out, uint8_t cmd, uint8_t fam, const uint8_t *addr)
{
    memset(out, 0, sizeof(*out));
    out->version = 2;
    out->local = cmd == PP_V2_CMD_LOCAL;
    if (out->local)
        return;
    if (fam == PP_V2_TCP4) {
        struct sockaddr_in *s = (struct sockaddr_in *) &out->src;
        struct sockaddr_in *d = (struct sockaddr_in *) &out->dst;

        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, addr, 4);
        memcpy(&d->sin_addr, addr + 4, 4);
        memcpy(&s->sin_port, addr + 8, 2); /* network order on both sides */
        memcpy(&d->sin_port, addr + 10, 2);
        out->has_addr = true;
    } else if (fam == PP_V2_TCP6) {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *) &out->src;
        struct sockaddr_in6 *d = (struct sockaddr_in6 *) &out->dst;

        s->sin6_family = d->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, addr, 16);
        memcpy(&d->sin6_addr, addr + 16, 16);
        memcpy(&s->sin6_port, addr + 32, 2);
        memcpy(&d->sin6_port, addr + 34, 2);
        out->has_addr = true;
    }
    /* Other families under PROXY: the spec lets us keep the socket's addresses. */
}

/* BUF[0] is '\r': a v2 header, or nothing we know. Each field is checked as soon as it is
 * present, the length limits before waiting for the block, the addresses only once the
 * whole block is there. */
static long v2_parse(const uint8_t *buf, size_t len, struct pp_info *out)
{
    size_t plen, total, alen;
    uint8_t cmd, fam;

    if (memcmp(buf, pp_v2_sig, len < PP_V2_SIG_LEN ? len : PP_V2_SIG_LEN) != 0)
        return -1;
    if (len > 12 && (buf[12] >> 4 != PP_V2_VERSION || (buf[12] & 0x0F) > PP_V2_CMD_PROXY))
        return -1;
    if (len > 13 && (buf[13] >> 4 > PP_V2_FAM_UNIX || (buf[13] & 0x0F) > PP_V2_TRANS_MAX))
        return -1;
    if (len < PP_V2_HDR_LEN)
        return 0;

    cmd = buf[12] & 0x0F;
    fam = buf[13];
    plen = (size_t) buf[14] << 8 | buf[15];
    if (plen > PP_V2_TLV_MAX)
        return -1;
    total = PP_V2_HDR_LEN + plen;
    alen = cmd == PP_V2_CMD_PROXY ? v2_addr_len(fam) : 0;
    if (alen > 0) {
        if (plen < alen)
            return -1;
        if (v2_tlv_walk(buf, len < total ? len : total, PP_V2_HDR_LEN + alen, total) < 0)
            return -1;
    }
    if (len < total)
        return 0;
    v2_fill(out, cmd, fam, buf + PP_V2_HDR_LEN);
    return (long) total;
}

/* ---- public --------------------------------------------------------------------------- */

long pp_parse(const uint8_t *buf, size_t len, struct pp_info *out)
{
    if (len == 0)
        return 0;
    if (buf[0] == 'P')
        return v1_parse(buf, len, out);
    if (buf[0] == pp_v2_sig[0])
        return v2_parse(buf, len, out);
    return -1;
}

const char *pp_addr_str(const struct sockaddr_storage *ss, char out[INET6_ADDRSTRLEN])
{
    const void *addr = NULL;

    if (ss->ss_family == AF_INET)
        addr = &((const struct sockaddr_in *) ss)->sin_addr;
    else if (ss->ss_family == AF_INET6)
        addr = &((const struct sockaddr_in6 *) ss)->sin6_addr;
    if (addr == NULL || inet_ntop(ss->ss_family, addr, out, INET6_ADDRSTRLEN) == NULL)
        memcpy(out, "unknown", sizeof("unknown"));
    return out;
}
