/*
 * ops/haproxy_gen.h
 * The HAProxy 2.6 configuration for a Tern cluster, written from its member list (the
 * lines of the "cluster.members" admin verb) and a few options: one TCP frontend and
 * backend per protocol that some member serves, PROXY v2 and a protocol health check on
 * every server, a Prometheus/stats frontend. Pure: no I/O, no globals; ternctl's
 * "haproxy-config" is the caller. Symbols carry the prefix hagen_ ("haproxy gen").
 *
 * SECURITY: member lines come from ternd (or, for tests, a file) and end up in a file
 * HAProxy parses, so every value is checked against a narrow syntax first: nothing that
 * reaches the output can start a new configuration line or keyword.
 */
#ifndef TERN_OPS_HAPROXY_GEN_H
#define TERN_OPS_HAPROXY_GEN_H

#include <stddef.h>
#include <stdint.h>

#define HAGEN_IP_MAX          45      /* INET6_ADDRSTRLEN - 1: the longest IPv6 text form */
#define HAGEN_ZONE_MAX        63      /* bytes of node.zone kept in a member; longer is refused */
#define HAGEN_LINE_MAX        1024    /* bytes of one member line; a real one is ~300 */
#define HAGEN_MAXCONN_MAX     1000000 /* haproxy's global maxconn, a sanity bound */
#define HAGEN_MAXCONN_DEFAULT 400     /* fits `ulimit -n` 1024 (ops/haproxy, pitfall 2) */
#define HAGEN_BIND_DEFAULT    "0.0.0.0"
#define HAGEN_STATS_DEFAULT   "127.0.0.1:8404"

/* The client protocols, in output order. The names are cluster.members keys. */
enum hagen_proto {
    HAGEN_SMTP,
    HAGEN_SUBMISSION,
    HAGEN_SMTPS,
    HAGEN_IMAP,
    HAGEN_IMAPS,
    HAGEN_POP3,
    HAGEN_POP3S,
    HAGEN_NPROTO
};

/* What a member's role means for HAProxy. A "disabled" server is listed (it shows in the
 * stats) but gets no traffic until enabled at runtime or listed again as in rotation. */
enum hagen_role {
    HAGEN_VOTER,   /* in rotation */
    HAGEN_STANDBY, /* in rotation: replicates the log, does not vote */
    HAGEN_SPARE,   /* disabled: a spare does not replicate the log, its mail data is stale */
    HAGEN_UNKNOWN, /* disabled: not in the Raft configuration (being removed, or a stale
                      record), so not a node to send clients to */
};

/* hagen_in_rotation() is true for the roles that get traffic: voter and standby. */
int hagen_in_rotation(enum hagen_role r);
/* hagen_role_name() is "voter", "standby", ...; NULL for an out-of-range value. */
const char *hagen_role_name(enum hagen_role r);

/* An address as text plus port. family 0 = none (an empty value: protocol not served). */
struct hagen_addr {
    int family;                /* 0, AF_INET or AF_INET6 */
    char ip[HAGEN_IP_MAX + 1]; /* canonical text, without brackets */
    uint16_t port;             /* 0 for a bare IP (--bind, --source) */
};

/* One line of cluster.members, parsed. Self-contained: no pointers. */
struct hagen_member {
    uint64_t id; /* > 0; the server is named "n<id>" */
    enum hagen_role role;
    char zone[HAGEN_ZONE_MAX + 1]; /* may be empty */
    struct hagen_addr raft, rpc;
    struct hagen_addr proto[HAGEN_NPROTO]; /* family 0: this member does not serve it */
};

struct hagen_opts {
    struct hagen_addr bind;       /* the frontends' address, port unused */
    uint16_t ports[HAGEN_NPROTO]; /* the frontends' ports */
    struct hagen_addr source;     /* family 0: no "source" line */
    struct hagen_addr stats;      /* the /metrics and /stats frontend */
    unsigned maxconn;             /* global maxconn */
    const char *command;          /* how it was made, for the header comment; may be NULL */
};

/* hagen_proto_name() is "smtp", "submission", ...; NULL for an out-of-range value. */
const char *hagen_proto_name(enum hagen_proto p);

/* hagen_opts_init() sets the defaults: bind 0.0.0.0, the standard ports 25, 587, 465,
 * 143, 993, 110, 995, no source, stats on 127.0.0.1:8404, maxconn 400, no command. */
void hagen_opts_init(struct hagen_opts *o);

/*
 * The parsers below return 0, or -1 with a one-line reason in ERR (ERRLEN bytes, may be
 * 0). On -1 the output is unspecified.
 *
 * hagen_parse_ip(): an IPv4 or IPv6 address without port ("0.0.0.0", "::1").
 * hagen_parse_addr(): "a.b.c.d:port" or "[v6]:port", port 1..65535 in plain decimal; an
 * empty string gives family 0 when ALLOW_EMPTY, else it is refused.
 * hagen_parse_ports(): "smtp=25,imaps=993": the named ports are replaced in PORTS, the
 * others kept. An unknown or repeated name, a bad port, an empty item are refused.
 * hagen_parse_maxconn(): 1..HAGEN_MAXCONN_MAX in plain decimal.
 * hagen_parse_member(): one cluster.members line, exactly:
 *   "member" then space-separated key=value fields, values without spaces, every one of
 *   id role zone raft rpc smtp submission smtps imap imaps pop3 pop3s present once. A
 *   field with another well-formed key is ignored (ternd may add some). Refused: a
 *   missing or repeated field, an empty id or role, id 0 or not decimal, an unknown
 *   role, a zone over HAGEN_ZONE_MAX, a bad address, a wildcard protocol address
 *   (0.0.0.0 or [::]: HAProxy cannot connect to it), any byte outside printable ASCII
 *   (control bytes, tabs, 8-bit), a line over HAGEN_LINE_MAX. Only raft, rpc, zone
 *   and the protocols may be empty.
 */
int hagen_parse_ip(const char *s, struct hagen_addr *a, char *err, size_t errlen);
int hagen_parse_addr(const char *s, int allow_empty, struct hagen_addr *a, char *err,
                     size_t errlen);
int hagen_parse_ports(const char *spec, uint16_t ports[HAGEN_NPROTO], char *err, size_t errlen);
int hagen_parse_maxconn(const char *s, unsigned *out, char *err, size_t errlen);
int hagen_parse_member(const char *line, struct hagen_member *m, char *err, size_t errlen);

/*
 * hagen_check_opts() refuses options that cannot work whatever the members: no bind or
 * stats address, maxconn out of 1..HAGEN_MAXCONN_MAX, a port 0, two of the seven
 * frontends or a frontend and the stats frontend on one port. Returns 0 or -1 with ERR.
 */
int hagen_check_opts(const struct hagen_opts *o, char *err, size_t errlen);

/*
 * hagen_write() writes the configuration for the N members at MS with options O into
 * BUF (SIZE bytes, NUL-terminated when SIZE > 0; may be NULL when SIZE is 0), as
 * snprintf() does: it returns the full length, so a return >= SIZE means truncated.
 * Servers are listed by id, whatever the order of MS, and the text holds no time: the
 * same members and options give the same bytes, so a regenerated file that compares
 * equal needs no reload. Returns -1 with ERR set when hagen_check_opts() refuses O, or
 * when the members cannot make a working configuration: none, an id 0 or twice, no
 * member serving any protocol.
 */
long hagen_write(char *buf, size_t size, const struct hagen_member *ms, size_t n,
                 const struct hagen_opts *o, char *err, size_t errlen);

/* hagen_config() is hagen_write() into a malloc'd string the caller frees; NULL with ERR
 * set on bad input or out of memory. */
char *hagen_config(const struct hagen_member *ms, size_t n, const struct hagen_opts *o, char *err,
                   size_t errlen);

#endif
