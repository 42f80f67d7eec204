/*
 * ops/haproxy_gen.c
 * Writes the HAProxy 2.6 configuration for a Tern cluster (see haproxy_gen.h): TCP
 * passthrough, so TLS stays end to end with the nodes; PROXY v2 on every server, so the
 * nodes see the client's address (they must list HAProxy's address in net.proxy_trusted);
 * a protocol-level health check per backend. The facts behind the choices, and three
 * pitfalls met while verifying them, are in ops/haproxy/README.md.
 *
 * SECURITY: the member lines are parsed strictly (see hagen_parse_member()) because they
 * are copied into a file that HAProxy, often root at start, parses.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "haproxy_gen.h"

#define HAGEN_PORT_DIGITS 5  /* "65535" */
#define HAGEN_ID_DIGITS   20 /* UINT64_MAX has 20 digits */

/* What each protocol's backend checks: the greeting, then a polite goodbye. */
enum hagen_check {
    HAGEN_CHECK_SMTP, /* 220 greeting, QUIT, 221 */
    HAGEN_CHECK_IMAP, /* "* OK" greeting, LOGOUT, "* BYE" */
    HAGEN_CHECK_POP3, /* +OK greeting, QUIT, +OK */
};

struct hagen_proto_info {
    const char *name; /* cluster.members key, --ports key, section names */
    const char *what; /* for the section's comment */
    uint16_t port;    /* the standard client port: the default of --ports */
    bool tls;         /* implicit TLS: the check does its own handshake */
    bool imap_idle;   /* IMAP: 31 min timeouts for IDLE */
    enum hagen_check check;
};

static const struct hagen_proto_info hagen_protos[HAGEN_NPROTO] = {
    [HAGEN_SMTP] = {"smtp", "SMTP, the MX role (RFC 5321)", 25, false, false, HAGEN_CHECK_SMTP},
    [HAGEN_SUBMISSION] = {"submission", "submission with STARTTLS (RFC 6409)", 587, false, false,
                          HAGEN_CHECK_SMTP},
    [HAGEN_SMTPS] = {"smtps", "submission with implicit TLS (RFC 8314)", 465, true, false,
                     HAGEN_CHECK_SMTP},
    [HAGEN_IMAP] = {"imap", "IMAP with STARTTLS", 143, false, true, HAGEN_CHECK_IMAP},
    [HAGEN_IMAPS] = {"imaps", "IMAP with implicit TLS", 993, true, true, HAGEN_CHECK_IMAP},
    [HAGEN_POP3] = {"pop3", "POP3 with STLS", 110, false, false, HAGEN_CHECK_POP3},
    [HAGEN_POP3S] = {"pop3s", "POP3 with implicit TLS", 995, true, false, HAGEN_CHECK_POP3},
};

static const char *const hagen_role_names[] = {
    [HAGEN_VOTER] = "voter",
    [HAGEN_STANDBY] = "standby",
    [HAGEN_SPARE] = "spare",
    [HAGEN_UNKNOWN] = "unknown",
};
#define HAGEN_NROLES (sizeof(hagen_role_names) / sizeof(hagen_role_names[0]))

/* Writes the reason for a refusal into ERR (if it has room) and returns -1. */
static int refuse(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int hagen_in_rotation(enum hagen_role r)
{
    return r == HAGEN_VOTER || r == HAGEN_STANDBY;
}

const char *hagen_role_name(enum hagen_role r)
{
    return (unsigned) r < HAGEN_NROLES ? hagen_role_names[r] : NULL;
}

const char *hagen_proto_name(enum hagen_proto p)
{
    return (unsigned) p < HAGEN_NPROTO ? hagen_protos[p].name : NULL;
}

void hagen_opts_init(struct hagen_opts *o)
{
    memset(o, 0, sizeof(*o));
    hagen_parse_ip(HAGEN_BIND_DEFAULT, &o->bind, NULL, 0);
    for (int p = 0; p < HAGEN_NPROTO; p++)
        o->ports[p] = hagen_protos[p].port;
    hagen_parse_addr(HAGEN_STATS_DEFAULT, 0, &o->stats, NULL, 0);
    o->maxconn = HAGEN_MAXCONN_DEFAULT;
    o->command = NULL;
}

/* ---- parsers ---- */

/*
 * parse_decimal() reads LEN bytes at S as a plain decimal number (no sign, no leading
 * zero, at most MAX_DIGITS digits) no larger than MAX. Returns 0 or -1.
 */
static int parse_decimal(const char *s, size_t len, size_t max_digits, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (len == 0 || len > max_digits || (s[0] == '0' && len > 1))
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned d = (unsigned char) s[i] - '0';

        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

/* parse_ip_len() is hagen_parse_ip() on LEN bytes at S. */
static int parse_ip_len(const char *s, size_t len, struct hagen_addr *a)
{
    char tmp[HAGEN_IP_MAX + 1];
    unsigned char bin[16];

    if (len == 0 || len > HAGEN_IP_MAX)
        return -1;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    memset(a, 0, sizeof(*a));
    if (inet_pton(AF_INET, tmp, bin) == 1)
        a->family = AF_INET;
    else if (inet_pton(AF_INET6, tmp, bin) == 1)
        a->family = AF_INET6;
    else
        return -1;
    /* canonical text: what HAProxy's log and stats will show */
    if (inet_ntop(a->family, bin, a->ip, sizeof(a->ip)) == NULL)
        return -1;
    return 0;
}

int hagen_parse_ip(const char *s, struct hagen_addr *a, char *err, size_t errlen)
{
    if (parse_ip_len(s, strlen(s), a) < 0)
        return refuse(err, errlen, "'%s' is not an IPv4 or IPv6 address", s);
    return 0;
}

int hagen_parse_addr(const char *s, int allow_empty, struct hagen_addr *a, char *err, size_t errlen)
{
    const char *ip = s, *colon;
    size_t iplen;
    uint64_t port;

    if (s[0] == '\0') {
        if (!allow_empty)
            return refuse(err, errlen, "empty address");
        memset(a, 0, sizeof(*a));
        return 0;
    }
    colon = strrchr(s, ':');
    if (colon == NULL)
        return refuse(err, errlen, "'%s' has no ':port'", s);
    iplen = (size_t) (colon - s);
    if (s[0] == '[') { /* "[v6]:port" */
        if (iplen < 2 || s[iplen - 1] != ']')
            return refuse(err, errlen, "'%s' is not \"[v6]:port\"", s);
        ip++;
        iplen -= 2;
    }
    if (parse_ip_len(ip, iplen, a) < 0 || (s[0] == '[') != (a->family == AF_INET6))
        return refuse(err, errlen, "'%s' is not \"a.b.c.d:port\" or \"[v6]:port\"", s);
    if (parse_decimal(colon + 1, strlen(colon + 1), HAGEN_PORT_DIGITS, 65535, &port) < 0 ||
        port == 0)
        return refuse(err, errlen, "'%s': bad port (1..65535)", s);
    a->port = (uint16_t) port;
    return 0;
}

/* proto_find() returns the protocol named by LEN bytes at S, or -1. */
static int proto_find(const char *s, size_t len)
{
    for (int p = 0; p < HAGEN_NPROTO; p++)
        if (strlen(hagen_protos[p].name) == len && memcmp(hagen_protos[p].name, s, len) == 0)
            return p;
    return -1;
}

int hagen_parse_ports(const char *spec, uint16_t ports[HAGEN_NPROTO], char *err, size_t errlen)
{
    bool seen[HAGEN_NPROTO] = {false};
    const char *item = spec;

    for (;;) {
        const char *end = strchr(item, ',');
        size_t len = end ? (size_t) (end - item) : strlen(item);
        const char *eq = memchr(item, '=', len), *num;
        size_t numlen;
        uint64_t port;
        int p;

        if (len == 0)
            return refuse(err, errlen, "empty item in '%s'", spec);
        if (eq == NULL)
            return refuse(err, errlen, "'%.*s' is not NAME=PORT", (int) len, item);
        p = proto_find(item, (size_t) (eq - item));
        if (p < 0)
            return refuse(err, errlen,
                          "unknown protocol '%.*s' (smtp, submission, smtps, imap, "
                          "imaps, pop3, pop3s)",
                          (int) (eq - item), item);
        if (seen[p])
            return refuse(err, errlen, "%s given twice", hagen_protos[p].name);
        num = eq + 1;
        numlen = len - (size_t) (num - item);
        if (parse_decimal(num, numlen, HAGEN_PORT_DIGITS, 65535, &port) < 0 || port == 0)
            return refuse(err, errlen, "%s: bad port '%.*s' (1..65535)", hagen_protos[p].name,
                          (int) numlen, num);
        seen[p] = true;
        ports[p] = (uint16_t) port;
        if (end == NULL)
            return 0;
        item = end + 1;
    }
}

int hagen_parse_maxconn(const char *s, unsigned *out, char *err, size_t errlen)
{
    uint64_t v;

    if (parse_decimal(s, strlen(s), 7, HAGEN_MAXCONN_MAX, &v) < 0 || v == 0)
        return refuse(err, errlen, "'%s' is not a number from 1 to %d", s, HAGEN_MAXCONN_MAX);
    *out = (unsigned) v;
    return 0;
}

/* The fields every member line carries (beside the protocols), as bits of a "seen" mask. */
enum hagen_field {
    HAGEN_F_ID = HAGEN_NPROTO,
    HAGEN_F_ROLE,
    HAGEN_F_ZONE,
    HAGEN_F_RAFT,
    HAGEN_F_RPC,
    HAGEN_F_COUNT
};

static const char *const hagen_field_names[HAGEN_F_COUNT] = {
    "smtp",  "submission", "smtps", "imap", "imaps", "pop3",
    "pop3s", "id",         "role",  "zone", "raft",  "rpc",
};

static bool is_wildcard(const struct hagen_addr *a)
{
    return (a->family == AF_INET && strcmp(a->ip, "0.0.0.0") == 0) ||
           (a->family == AF_INET6 && strcmp(a->ip, "::") == 0);
}

/*
 * member_field() stores the field number F, whose value is VAL (NUL-terminated), in M.
 * Returns 0 or -1 with ERR set.
 */
static int member_field(struct hagen_member *m, int f, const char *val, char *err, size_t errlen)
{
    const char *name = hagen_field_names[f];
    char why[128];
    uint64_t id;

    switch (f) {
    case HAGEN_F_ID:
        if (parse_decimal(val, strlen(val), HAGEN_ID_DIGITS, UINT64_MAX, &id) < 0 || id == 0)
            return refuse(err, errlen, "id '%s' is not a node id (decimal, > 0)", val);
        m->id = id;
        return 0;
    case HAGEN_F_ROLE:
        for (size_t r = 0; r < HAGEN_NROLES; r++) {
            if (strcmp(val, hagen_role_names[r]) == 0) {
                m->role = (enum hagen_role) r;
                return 0;
            }
        }
        return refuse(err, errlen, "unknown role '%s' (voter, standby, spare, unknown)", val);
    case HAGEN_F_ZONE:
        if (strlen(val) > HAGEN_ZONE_MAX)
            return refuse(err, errlen, "zone longer than %d bytes", HAGEN_ZONE_MAX);
        memcpy(m->zone, val, strlen(val) + 1);
        return 0;
    case HAGEN_F_RAFT:
    case HAGEN_F_RPC:
        if (hagen_parse_addr(val, 1, f == HAGEN_F_RAFT ? &m->raft : &m->rpc, why, sizeof(why)) < 0)
            return refuse(err, errlen, "%s: %s", name, why);
        return 0;
    default: /* a protocol */
        if (hagen_parse_addr(val, 1, &m->proto[f], why, sizeof(why)) < 0)
            return refuse(err, errlen, "%s: %s", name, why);
        if (is_wildcard(&m->proto[f]))
            return refuse(err, errlen,
                          "%s=%s is a wildcard address: HAProxy needs an address it can "
                          "connect to (set listen.%s to the node's own address)",
                          name, val, name);
        return 0;
    }
}

/* True when LEN bytes at S are a well-formed field name: [a-z0-9_]+. */
static bool is_key(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

int hagen_parse_member(const char *line, struct hagen_member *m, char *err, size_t errlen)
{
    static const char prefix[] = "member ";
    char val[HAGEN_LINE_MAX + 1];
    unsigned seen = 0;
    size_t len = strlen(line);
    const char *tok;

    memset(m, 0, sizeof(*m));
    if (len > HAGEN_LINE_MAX)
        return refuse(err, errlen, "line longer than %d bytes", HAGEN_LINE_MAX);
    for (size_t i = 0; i < len; i++) /* no control bytes, no 8-bit bytes, no tabs */
        if ((unsigned char) line[i] < 0x20 || (unsigned char) line[i] > 0x7e)
            return refuse(err, errlen, "byte 0x%02x at offset %zu", (unsigned char) line[i], i);
    if (strncmp(line, prefix, sizeof(prefix) - 1) != 0)
        return refuse(err, errlen, "does not start with \"member \"");
    for (tok = line + sizeof(prefix) - 1;;) {
        const char *end = strchr(tok, ' ');
        size_t tlen = end ? (size_t) (end - tok) : strlen(tok);
        const char *eq = memchr(tok, '=', tlen);
        int f = -1;

        if (tlen == 0)
            return refuse(err, errlen, "empty field (two spaces, or a space at the end)");
        if (eq == NULL || !is_key(tok, (size_t) (eq - tok)))
            return refuse(err, errlen, "field '%.*s' is not key=value", (int) tlen, tok);
        for (int i = 0; i < HAGEN_F_COUNT; i++)
            if (strlen(hagen_field_names[i]) == (size_t) (eq - tok) &&
                memcmp(hagen_field_names[i], tok, (size_t) (eq - tok)) == 0)
                f = i;
        if (f >= 0) { /* an unknown key is a field from a newer ternd: skipped */
            if (seen & (1u << f))
                return refuse(err, errlen, "field %s given twice", hagen_field_names[f]);
            seen |= 1u << f;
            memcpy(val, eq + 1, tlen - (size_t) (eq + 1 - tok));
            val[tlen - (size_t) (eq + 1 - tok)] = '\0';
            if (member_field(m, f, val, err, errlen) < 0)
                return -1;
        }
        if (end == NULL)
            break;
        tok = end + 1;
    }
    for (int k = 0; k < HAGEN_F_COUNT; k++) { /* in line order: id role zone raft rpc smtp ... */
        int f = (k + HAGEN_NPROTO) % HAGEN_F_COUNT;

        if (!(seen & (1u << f)))
            return refuse(err, errlen, "field %s missing", hagen_field_names[f]);
    }
    return 0;
}

/* ---- the writer ---- */

/* An output that counts what it could not store, as snprintf() does. */
struct hagen_out {
    char *buf;
    size_t size;
    size_t len; /* bytes the whole text needs so far (may exceed size) */
};

static void out(struct hagen_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(struct hagen_out *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(o->len < o->size ? o->buf + o->len : NULL,
                  o->len < o->size ? o->size - o->len : 0, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t) n;
}

/* Writes S with control and 8-bit bytes as '?': comment text must stay on its line. */
static void out_comment_text(struct hagen_out *o, const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char) *s;

        out(o, "%c", c < 0x20 || c > 0x7e ? '?' : c);
    }
}

/* "1.2.3.4:25" or "[::1]:25": the form HAProxy's bind and server lines take. */
static void out_addr(struct hagen_out *o, const struct hagen_addr *a, uint16_t port)
{
    if (a->family == AF_INET6)
        out(o, "[%s]:%u", a->ip, (unsigned) port);
    else
        out(o, "%s:%u", a->ip, (unsigned) port);
}

/* "a.b.c.d:port" as cluster.members writes it; empty for family 0. */
static const char *addr_text(const struct hagen_addr *a, char *buf, size_t size)
{
    if (a->family == 0)
        snprintf(buf, size, "%s", "");
    else if (a->family == AF_INET6)
        snprintf(buf, size, "[%s]:%u", a->ip, (unsigned) a->port);
    else
        snprintf(buf, size, "%s:%u", a->ip, (unsigned) a->port);
    return buf;
}

/* The member with the smallest id above AFTER, or NULL: members in id order, no copy. */
static const struct hagen_member *next_member(const struct hagen_member *ms, size_t n,
                                              uint64_t after)
{
    const struct hagen_member *best = NULL;

    for (size_t i = 0; i < n; i++)
        if (ms[i].id > after && (best == NULL || ms[i].id < best->id))
            best = &ms[i];
    return best;
}

#define FOR_EACH_MEMBER(m, ms, n)                                                                  \
    for (const struct hagen_member *m = next_member(ms, n, 0); m != NULL;                          \
         m = next_member(ms, n, m->id))

int hagen_check_opts(const struct hagen_opts *o, char *err, size_t errlen)
{
    if (o->bind.family == 0)
        return refuse(err, errlen, "no bind address");
    if (o->stats.family == 0 || o->stats.port == 0)
        return refuse(err, errlen, "no stats address");
    if (o->maxconn == 0 || o->maxconn > HAGEN_MAXCONN_MAX)
        return refuse(err, errlen, "maxconn %u out of range (1..%d)", o->maxconn,
                      HAGEN_MAXCONN_MAX);
    for (int p = 0; p < HAGEN_NPROTO; p++) {
        if (o->ports[p] == 0)
            return refuse(err, errlen, "no port for %s", hagen_protos[p].name);
        if (o->ports[p] == o->stats.port)
            return refuse(err, errlen, "%s and the stats frontend both on port %u",
                          hagen_protos[p].name, (unsigned) o->ports[p]);
        for (int q = 0; q < p; q++)
            if (o->ports[q] == o->ports[p])
                return refuse(err, errlen, "%s and %s both on port %u", hagen_protos[q].name,
                              hagen_protos[p].name, (unsigned) o->ports[p]);
    }
    return 0;
}

/* validate() refuses what cannot make a working configuration (see hagen_write()) and
 * fills SERVED: the protocols some member serves. */
static int validate(const struct hagen_member *ms, size_t n, const struct hagen_opts *o,
                    bool served[HAGEN_NPROTO], char *err, size_t errlen)
{
    bool any = false;

    if (hagen_check_opts(o, err, errlen) < 0)
        return -1;
    if (n == 0)
        return refuse(err, errlen, "no members");
    for (size_t i = 0; i < n; i++) {
        if (ms[i].id == 0)
            return refuse(err, errlen, "member with id 0");
        if ((unsigned) ms[i].role >= HAGEN_NROLES)
            return refuse(err, errlen, "member %llu: bad role", (unsigned long long) ms[i].id);
        for (size_t j = 0; j < i; j++)
            if (ms[i].id == ms[j].id)
                return refuse(err, errlen, "member id %llu listed twice",
                              (unsigned long long) ms[i].id);
        for (int p = 0; p < HAGEN_NPROTO; p++)
            if (ms[i].proto[p].family != 0)
                any = served[p] = true;
    }
    if (!any)
        return refuse(err, errlen, "no member serves any protocol");
    return 0;
}

static void write_header(struct hagen_out *w, const struct hagen_member *ms, size_t n,
                         const struct hagen_opts *o)
{
    char raft[HAGEN_IP_MAX + 9], rpc[HAGEN_IP_MAX + 9];

    out(w, "# HAProxy 2.6 configuration for a Tern cluster: TCP passthrough (TLS ends on the\n"
           "# nodes), PROXY protocol v2 and a protocol health check towards every node.\n"
           "# Generated by: ");
    out_comment_text(w, o->command != NULL ? o->command : "ternctl haproxy-config");
    out(w, "\n"
           "# Do not edit: regenerate it after every membership change (ops/haproxy/README.md).\n"
           "# The same members and options always give the same text: compare, then reload.\n"
           "#\n"
           "# Members, by id:\n");
    FOR_EACH_MEMBER(m, ms, n)
    {
        out(w, "#   n%llu  role=%s zone=%s raft=%s rpc=%s%s\n", (unsigned long long) m->id,
            hagen_role_names[m->role], m->zone, addr_text(&m->raft, raft, sizeof(raft)),
            addr_text(&m->rpc, rpc, sizeof(rpc)),
            m->role == HAGEN_SPARE     ? "  (disabled: a spare does not replicate the log)"
            : m->role == HAGEN_UNKNOWN ? "  (disabled: not in the Raft configuration)"
                                       : "");
    }
    out(w, "#\n"
           "# Every node must require the PROXY header from HAProxy's address, and from no\n");
    if (o->source.family != 0)
        out(w, "# other: net.proxy_trusted=%s (the \"source\" of every backend below).\n",
            o->source.ip);
    else
        out(w, "# other: net.proxy_trusted=<the address this host reaches the nodes from>;\n"
               "# regenerate with --source ADDR to pin that address.\n");
    out(w, "#\n"
           "# Check: haproxy -c -f FILE    Run in the foreground: haproxy -db -f FILE\n\n");
}

static void write_global(struct hagen_out *w, const struct hagen_opts *o)
{
    out(w,
        "global\n"
        "    log stderr format short local0 info\n"
        "    maxconn %u  # ~2 fds per connection: as non-root, keep it under `ulimit -n`/2\n"
        "\n",
        o->maxconn);
    out(w, "defaults\n"
           "    mode tcp\n"
           "    log global\n"
           "    option tcplog\n"
           "    option dontlognull\n"
           "    retries 3               # a connection a node refuses is tried again...\n"
           "    option redispatch 1     # ...on another node, every time\n"
           "    timeout connect 3s\n"
           "    timeout client 11m      # above ternd's own idle limits (10 min for SMTP DATA\n"
           "    timeout server 11m      # and POP3): the node ends idle sessions itself\n"
           "    timeout check 2s        # for the reply; a check's connect gets min(inter, "
           "connect)\n"
           "    # A dead node leaves rotation within ~2 s, and its sessions are cut at once:\n"
           "    default-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions\n"
           "\n");
}

static void write_check(struct hagen_out *w, const struct hagen_proto_info *pi)
{
    out(w, "    option tcp-check\n");
    if (pi->tls)
        out(w, "    # the check does its own TLS handshake (the greeting comes after it);\n"
               "    # \"default\" inherits check-ssl AND send-proxy-v2 from the server line,\n"
               "    # \"connect ssl\" would drop the PROXY header\n"
               "    tcp-check connect default\n");
    switch (pi->check) {
    case HAGEN_CHECK_SMTP:
        out(w, "    tcp-check expect rstring ^220[\\ -]\n"
               "    tcp-check send QUIT\\r\\n\n"
               "    tcp-check expect rstring ^221\n");
        break;
    case HAGEN_CHECK_IMAP:
        out(w, "    tcp-check expect rstring ^\\*\\ OK\n"
               "    tcp-check send a1\\ LOGOUT\\r\\n\n"
               "    tcp-check expect rstring ^\\*\\ BYE\n");
        break;
    case HAGEN_CHECK_POP3:
        out(w, "    tcp-check expect rstring ^\\+OK\n"
               "    tcp-check send QUIT\\r\\n\n"
               "    tcp-check expect rstring ^\\+OK\n");
        break;
    }
}

static void write_proto(struct hagen_out *w, enum hagen_proto p, const struct hagen_member *ms,
                        size_t n, const struct hagen_opts *o)
{
    const struct hagen_proto_info *pi = &hagen_protos[p];

    out(w, "# ---------- %s: %s ----------\n", pi->name, pi->what);
    out(w, "frontend ft_%s\n    bind ", pi->name);
    out_addr(w, &o->bind, o->ports[p]);
    out(w, "\n");
    if (pi->imap_idle)
        out(w,
            "    timeout client 31m      # IMAP IDLE: clients re-IDLE within 29 min (RFC 9051)\n");
    out(w, "    default_backend bk_%s\n\n", pi->name);

    out(w, "backend bk_%s\n", pi->name);
    out(w, "    balance %s\n", p == HAGEN_SMTP ? "roundrobin" : "leastconn");
    if (pi->imap_idle)
        out(w, "    timeout server 31m\n");
    if (o->source.family == AF_INET6)
        out(w, "    source [%s]\n", o->source.ip);
    else if (o->source.family != 0)
        out(w, "    source %s\n", o->source.ip);
    write_check(w, pi);
    FOR_EACH_MEMBER(m, ms, n)
    {
        if (m->proto[p].family == 0)
            continue;
        out(w, "    server n%llu ", (unsigned long long) m->id);
        out_addr(w, &m->proto[p], m->proto[p].port);
        out(w, " check send-proxy-v2%s%s\n", pi->tls ? " check-ssl verify none" : "",
            hagen_in_rotation(m->role) ? "" : " disabled");
    }
    out(w, "\n");
}

static void write_stats(struct hagen_out *w, const struct hagen_opts *o)
{
    out(w, "# ---------- observability: Prometheus /metrics and the /stats page ----------\n"
           "frontend ft_stats\n"
           "    mode http\n"
           "    bind ");
    out_addr(w, &o->stats, o->stats.port);
    out(w, "\n"
           "    option httplog\n"
           "    timeout client 10s\n"
           "    http-request use-service prometheus-exporter if { path /metrics }\n"
           "    stats enable\n"
           "    stats uri /stats\n"
           "    stats refresh 10s\n");
}

long hagen_write(char *buf, size_t size, const struct hagen_member *ms, size_t n,
                 const struct hagen_opts *o, char *err, size_t errlen)
{
    struct hagen_out w = {.buf = buf, .size = buf != NULL ? size : 0, .len = 0};
    bool served[HAGEN_NPROTO] = {false};

    if (size > 0 && buf != NULL)
        buf[0] = '\0';
    if (validate(ms, n, o, served, err, errlen) < 0)
        return -1;
    write_header(&w, ms, n, o);
    write_global(&w, o);
    for (int p = 0; p < HAGEN_NPROTO; p++)
        if (served[p])
            write_proto(&w, (enum hagen_proto) p, ms, n, o);
    write_stats(&w, o);
    return (long) w.len;
}

char *hagen_config(const struct hagen_member *ms, size_t n, const struct hagen_opts *o, char *err,
                   size_t errlen)
{
    long len = hagen_write(NULL, 0, ms, n, o, err, errlen);
    char *text;

    if (len < 0)
        return NULL;
    text = malloc((size_t) len + 1);
    if (text == NULL) {
        refuse(err, errlen, "out of memory");
        return NULL;
    }
    if (hagen_write(text, (size_t) len + 1, ms, n, o, err, errlen) != len) { /* defensive */
        free(text);
        refuse(err, errlen, "configuration changed length between passes");
        return NULL;
    }
    return text;
}
