/*
 * tests/unit/ops/test_haproxy_gen.c
 * Unit tests for ops/haproxy_gen.c: cluster.members lines parsed strictly (every field,
 * every refusal), --ports/--maxconn/addresses, and the written HAProxy configuration:
 * one frontend and backend per served protocol and no other, send-proxy-v2 and a check
 * on every server, TLS checks through "tcp-check connect default" (never "connect ssl"),
 * IMAP's 31 min timeouts, servers in id order, spare and unknown members disabled, snprintf()-like
 * lengths, and no way for member data or the command line to start a configuration line. "haproxy
 * -c" itself runs in tests/integration/test_haproxy_config.py.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "haproxy_gen.h"

/* The line of the admin contract, and the same shape for nodes 2 and 3. */
#define LINE1                                                                                      \
    "member id=1 role=voter zone=a raft=127.0.0.1:17001 rpc=127.0.0.1:17101 "                      \
    "smtp=127.0.0.1:12525 submission=127.0.0.1:15870 smtps=127.0.0.1:14650 "                       \
    "imap=127.0.0.1:11143 imaps=127.0.0.1:19930 pop3=127.0.0.1:11110 pop3s=127.0.0.1:19950"
#define LINE2                                                                                      \
    "member id=2 role=voter zone=b raft=127.0.0.1:27001 rpc=127.0.0.1:27101 "                      \
    "smtp=127.0.0.1:22525 submission=127.0.0.1:25870 smtps=127.0.0.1:24650 "                       \
    "imap=127.0.0.1:21143 imaps=127.0.0.1:29930 pop3=127.0.0.1:21110 pop3s=127.0.0.1:29950"
#define LINE3                                                                                      \
    "member id=3 role=standby zone= raft=127.0.0.1:37001 rpc=127.0.0.1:37101 "                     \
    "smtp=127.0.0.1:32525 submission=127.0.0.1:35870 smtps=127.0.0.1:34650 "                       \
    "imap=127.0.0.1:31143 imaps=127.0.0.1:39930 pop3=127.0.0.1:31110 pop3s=127.0.0.1:39950"

static const char *const protos[HAGEN_NPROTO] = {"smtp",  "submission", "smtps", "imap",
                                                 "imaps", "pop3",       "pop3s"};
static const int tls[HAGEN_NPROTO] = {0, 0, 1, 0, 1, 0, 1};

/* ---- helpers -------------------------------------------------------------------------- */

static void member(const char *line, struct hagen_member *m)
{
    char err[256] = "";

    if (hagen_parse_member(line, m, err, sizeof(err)) != 0)
        fail_msg("refused: %s: %s", line, err);
}

/* Asserts that LINE is refused with a reason containing WHY. */
static void refused(const char *line, const char *why)
{
    struct hagen_member m;
    char err[256] = "";

    if (hagen_parse_member(line, &m, err, sizeof(err)) != -1)
        fail_msg("accepted: %s", line);
    if (strstr(err, why) == NULL)
        fail_msg("refused '%s' with '%s', expected '%s'", line, err, why);
}

/* The configuration for LINES (NULL-terminated) with O, or NULL when refused (ERR). */
static char *gen(const char *const *lines, const struct hagen_opts *o, char *err, size_t errlen)
{
    struct hagen_member ms[8];
    size_t n = 0;

    for (; lines[n] != NULL; n++) {
        assert_true(n < 8);
        member(lines[n], &ms[n]);
    }
    return hagen_config(ms, n, o, err, errlen);
}

static char *gen3(const struct hagen_opts *o)
{
    static const char *const lines[] = {LINE1, LINE2, LINE3, NULL};
    char err[256] = "";
    char *text = gen(lines, o, err, sizeof(err));

    if (text == NULL)
        fail_msg("refused: %s", err);
    return text;
}

/* The section starting at line HEAD ("backend bk_smtp") up to the blank line; malloc'd. */
static char *section(const char *text, const char *head)
{
    char want[128];
    const char *s, *e;
    char *out;

    snprintf(want, sizeof(want), "\n%s\n", head);
    s = strstr(text, want);
    if (s == NULL)
        return NULL;
    s++;
    e = strstr(s, "\n\n");
    if (e == NULL)
        e = s + strlen(s);
    out = strndup(s, (size_t) (e - s));
    assert_non_null(out);
    return out;
}

static int count(const char *text, const char *needle)
{
    int n = 0;

    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* ---- member lines --------------------------------------------------------------------- */

static void test_member_contract_line(void **state)
{
    (void) state;
    struct hagen_member m;

    member(LINE1, &m);
    assert_int_equal(m.id, 1);
    assert_int_equal(m.role, HAGEN_VOTER);
    assert_string_equal(m.zone, "a");
    assert_string_equal(m.raft.ip, "127.0.0.1");
    assert_int_equal(m.raft.port, 17001);
    assert_int_equal(m.rpc.port, 17101);
    static const uint16_t ports[HAGEN_NPROTO] = {12525, 15870, 14650, 11143, 19930, 11110, 19950};
    for (int p = 0; p < HAGEN_NPROTO; p++) {
        assert_int_equal(m.proto[p].family, AF_INET);
        assert_string_equal(m.proto[p].ip, "127.0.0.1");
        assert_int_equal(m.proto[p].port, ports[p]);
        assert_string_equal(hagen_proto_name((enum hagen_proto) p), protos[p]);
    }
    assert_null(hagen_proto_name(HAGEN_NPROTO));
}

static void test_member_empty_values_and_roles(void **state)
{
    (void) state;
    struct hagen_member m;

    member("member id=18446744073709551615 role=spare zone= raft=[::1]:7001 rpc= smtp= "
           "submission= smtps= imap=[2001:db8::1]:143 imaps= pop3= pop3s=",
           &m);
    assert_true(m.id == UINT64_MAX);
    assert_int_equal(m.role, HAGEN_SPARE);
    assert_string_equal(m.zone, "");
    assert_int_equal(m.raft.family, AF_INET6);
    assert_string_equal(m.raft.ip, "::1");
    assert_int_equal(m.rpc.family, 0);
    assert_int_equal(m.proto[HAGEN_SMTP].family, 0);
    assert_int_equal(m.proto[HAGEN_IMAP].family, AF_INET6);
    assert_string_equal(m.proto[HAGEN_IMAP].ip, "2001:db8::1");
    assert_int_equal(m.proto[HAGEN_IMAP].port, 143);

    /* fields in any order; a well-formed unknown field (a newer ternd) is skipped */
    member("member pop3s= pop3= imaps= imap= smtps= submission= smtp=10.0.0.1:25 rpc= raft= "
           "zone=eu-west_1.b role=unknown state=catching_up id=7",
           &m);
    assert_int_equal(m.id, 7);
    assert_int_equal(m.role, HAGEN_UNKNOWN);
    assert_string_equal(m.zone, "eu-west_1.b");
    assert_int_equal(m.proto[HAGEN_SMTP].port, 25);

    member("member id=2 role=standby zone=z raft= rpc= smtp= submission= smtps= imap= imaps= "
           "pop3= pop3s=",
           &m);
    assert_int_equal(m.role, HAGEN_STANDBY);
}

#define TAIL                                                                                       \
    " raft=127.0.0.1:1 rpc=127.0.0.1:2 smtp=127.0.0.1:25 submission= smtps= imap= imaps= "         \
    "pop3= pop3s="

static void test_member_refused(void **state)
{
    (void) state;
    char big[HAGEN_LINE_MAX + 64];

    refused("", "does not start");
    refused("members id=1 role=voter zone=" TAIL, "does not start");
    refused("member", "does not start");
    refused("member ", "empty field");
    refused("Member id=1 role=voter zone=" TAIL, "does not start");
    refused(" member id=1 role=voter zone=" TAIL, "does not start");
    refused("member  id=1 role=voter zone=" TAIL, "empty field");
    refused("member id=1 role=voter zone=" TAIL " ", "empty field");
    refused("member id=1 role=voter zone=" TAIL "\r", "byte 0x0d");
    refused("member id=1 role=voter\tzone=" TAIL, "byte 0x09");
    refused("member id=1 role=voter zone=\x01" TAIL, "byte 0x01");
    refused("member id=1 role=voter zone=z\xc3\xa9" TAIL, "byte 0xc3");
    refused("member id=1 role=voter zone" TAIL, "not key=value");
    refused("member id=1 role=voter =x zone=" TAIL, "not key=value");
    refused("member id=1 role=voter Zone=a zone=" TAIL, "not key=value");
    /* every required field */
    refused("member role=voter zone=" TAIL, "id missing");
    refused("member id=1 zone=" TAIL, "role missing");
    refused("member id=1 role=voter" TAIL, "zone missing");
    refused("member id=1 role=voter zone= rpc=127.0.0.1:2 smtp=127.0.0.1:25 submission= "
            "smtps= imap= imaps= pop3= pop3s=",
            "raft missing");
    refused("member id=1 role=voter zone= raft= smtp=127.0.0.1:25 submission= smtps= imap= "
            "imaps= pop3= pop3s=",
            "rpc missing");
    for (int p = 0; p < HAGEN_NPROTO; p++) {
        char line[512], why[64];
        size_t len =
            (size_t) snprintf(line, sizeof(line), "member id=1 role=voter zone= raft= rpc=");

        for (int q = 0; q < HAGEN_NPROTO; q++)
            if (q != p)
                len += (size_t) snprintf(line + len, sizeof(line) - len, " %s=", protos[q]);
        snprintf(why, sizeof(why), "%s missing", protos[p]);
        refused(line, why);
    }
    refused("member id=1 id=1 role=voter zone=" TAIL, "id given twice");
    refused("member id=1 role=voter zone=" TAIL " smtp=127.0.0.1:26", "smtp given twice");
    /* ids */
    refused("member id=0 role=voter zone=" TAIL, "not a node id");
    refused("member id= role=voter zone=" TAIL, "not a node id");
    refused("member id=01 role=voter zone=" TAIL, "not a node id");
    refused("member id=-1 role=voter zone=" TAIL, "not a node id");
    refused("member id=+1 role=voter zone=" TAIL, "not a node id");
    refused("member id=1x role=voter zone=" TAIL, "not a node id");
    refused("member id=18446744073709551616 role=voter zone=" TAIL, "not a node id");
    refused("member id=99999999999999999999 role=voter zone=" TAIL, "not a node id");
    /* roles, zones */
    refused("member id=1 role=leader zone=" TAIL, "unknown role");
    refused("member id=1 role= zone=" TAIL, "unknown role");
    refused("member id=1 role=Voter zone=" TAIL, "unknown role");
    refused("member id=1 role=voter zone=0123456789012345678901234567890123456789012345678901234567"
            "890123" TAIL,
            "zone longer");
    /* addresses */
    refused("member id=1 role=voter zone= raft=127.0.0.1 rpc= smtp= submission= smtps= imap= "
            "imaps= pop3= pop3s=",
            "raft: '127.0.0.1' has no ':port'");
    refused("member id=1 role=voter zone= raft= rpc=localhost:7001 smtp= submission= smtps= "
            "imap= imaps= pop3= pop3s=",
            "rpc:");
    refused("member id=1 role=voter zone= raft= rpc= smtp=127.0.0.1:0 submission= smtps= imap= "
            "imaps= pop3= pop3s=",
            "smtp: '127.0.0.1:0': bad port");
    refused("member id=1 role=voter zone= raft= rpc= smtp=127.0.0.1:65536 submission= smtps= "
            "imap= imaps= pop3= pop3s=",
            "bad port");
    refused("member id=1 role=voter zone= raft= rpc= smtp=127.0.0.1:025 submission= smtps= "
            "imap= imaps= pop3= pop3s=",
            "bad port");
    refused("member id=1 role=voter zone= raft= rpc= smtp=127.0.0.1: submission= smtps= "
            "imap= imaps= pop3= pop3s=",
            "bad port");
    refused("member id=1 role=voter zone= raft= rpc= smtp=127.0.1:25 submission= smtps= imap= "
            "imaps= pop3= pop3s=",
            "is not");
    refused("member id=1 role=voter zone= raft= rpc= smtp=127.0.0.01:25 submission= smtps= "
            "imap= imaps= pop3= pop3s=",
            "is not");
    refused("member id=1 role=voter zone= raft= rpc= smtp=::1:25 submission= smtps= imap= "
            "imaps= pop3= pop3s=",
            "is not");
    refused("member id=1 role=voter zone= raft= rpc= smtp=[127.0.0.1]:25 submission= smtps= "
            "imap= imaps= pop3= pop3s=",
            "is not");
    refused("member id=1 role=voter zone= raft= rpc= smtp=[::1:25 submission= smtps= imap= "
            "imaps= pop3= pop3s=",
            "is not");
    refused("member id=1 role=voter zone= raft= rpc= smtp=0.0.0.0:25 submission= smtps= imap= "
            "imaps= pop3= pop3s=",
            "wildcard");
    refused("member id=1 role=voter zone= raft= rpc= smtp= submission= smtps= imap= imaps= "
            "pop3= pop3s=[::]:995",
            "pop3s=[::]:995 is a wildcard");
    /* length */
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big, "member zone=", 12);
    refused(big, "longer than");
}

/* ---- options -------------------------------------------------------------------------- */

static void test_ports(void **state)
{
    (void) state;
    struct hagen_opts o;
    char err[256] = "";
    static const uint16_t std[HAGEN_NPROTO] = {25, 587, 465, 143, 993, 110, 995};

    hagen_opts_init(&o);
    for (int p = 0; p < HAGEN_NPROTO; p++)
        assert_int_equal(o.ports[p], std[p]);
    assert_int_equal(o.bind.family, AF_INET);
    assert_string_equal(o.bind.ip, "0.0.0.0");
    assert_int_equal(o.source.family, 0);
    assert_string_equal(o.stats.ip, "127.0.0.1");
    assert_int_equal(o.stats.port, 8404);
    assert_int_equal(o.maxconn, 400);
    assert_int_equal(hagen_check_opts(&o, err, sizeof(err)), 0);

    /* a subset replaces those ports only */
    assert_int_equal(hagen_parse_ports("imaps=10993,smtp=2525", o.ports, err, sizeof(err)), 0);
    assert_int_equal(o.ports[HAGEN_SMTP], 2525);
    assert_int_equal(o.ports[HAGEN_IMAPS], 10993);
    assert_int_equal(o.ports[HAGEN_SUBMISSION], 587);
    assert_int_equal(o.ports[HAGEN_POP3S], 995);
    assert_int_equal(hagen_parse_ports("smtp=2525,submission=5870,smtps=4650,imap=1143,"
                                       "imaps=9930,pop3=1110,pop3s=9950",
                                       o.ports, err, sizeof(err)),
                     0);
    static const uint16_t demo[HAGEN_NPROTO] = {2525, 5870, 4650, 1143, 9930, 1110, 9950};
    for (int p = 0; p < HAGEN_NPROTO; p++)
        assert_int_equal(o.ports[p], demo[p]);
    assert_int_equal(hagen_parse_ports("pop3s=65535", o.ports, err, sizeof(err)), 0);
    assert_int_equal(o.ports[HAGEN_POP3S], 65535);

    static const char *const bad[][2] = {
        {"", "empty item"},
        {"smtp=25,", "empty item"},
        {",smtp=25", "empty item"},
        {"smtp=25,,imap=143", "empty item"},
        {"smtp", "not NAME=PORT"},
        {"smtp:25", "not NAME=PORT"},
        {"smtps25=1", "unknown protocol"},
        {"SMTP=25", "unknown protocol"},
        {"=25", "unknown protocol"},
        {"lmtp=24", "unknown protocol"},
        {"smtp=25,smtp=26", "smtp given twice"},
        {"smtp=0", "bad port"},
        {"smtp=65536", "bad port"},
        {"smtp=", "bad port"},
        {"smtp=025", "bad port"},
        {"smtp=-25", "bad port"},
        {"smtp=25x", "bad port"},
        {"smtp= 25", "bad port"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint16_t ports[HAGEN_NPROTO];

        err[0] = '\0';
        if (hagen_parse_ports(bad[i][0], ports, err, sizeof(err)) != -1)
            fail_msg("--ports '%s' accepted", bad[i][0]);
        if (strstr(err, bad[i][1]) == NULL)
            fail_msg("--ports '%s': '%s', expected '%s'", bad[i][0], err, bad[i][1]);
    }

    /* ports that collide are refused whatever the members */
    hagen_opts_init(&o);
    assert_int_equal(hagen_parse_ports("imap=25", o.ports, err, sizeof(err)), 0);
    assert_int_equal(hagen_check_opts(&o, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "smtp and imap both on port 25"));
    hagen_opts_init(&o);
    assert_int_equal(hagen_parse_ports("pop3=8404", o.ports, err, sizeof(err)), 0);
    assert_int_equal(hagen_check_opts(&o, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "stats frontend"));
    hagen_opts_init(&o);
    o.maxconn = 0;
    assert_int_equal(hagen_check_opts(&o, err, sizeof(err)), -1);
}

static void test_addresses_and_maxconn(void **state)
{
    (void) state;
    struct hagen_addr a;
    unsigned n = 0;
    char err[256] = "";

    assert_int_equal(hagen_parse_ip("::", &a, err, sizeof(err)), 0);
    assert_int_equal(a.family, AF_INET6);
    assert_int_equal(hagen_parse_ip("0:0::0:1", &a, err, sizeof(err)), 0);
    assert_string_equal(a.ip, "::1"); /* canonical */
    assert_int_equal(hagen_parse_ip("127.0.0.2", &a, err, sizeof(err)), 0);
    assert_int_equal(a.port, 0);
    assert_int_equal(hagen_parse_ip("127.0.0.2:25", &a, err, sizeof(err)), -1);
    assert_int_equal(hagen_parse_ip("[::1]", &a, err, sizeof(err)), -1);
    assert_int_equal(hagen_parse_ip("localhost", &a, err, sizeof(err)), -1);
    assert_int_equal(hagen_parse_ip("", &a, err, sizeof(err)), -1);
    assert_int_equal(hagen_parse_addr("[::1]:8404", 0, &a, err, sizeof(err)), 0);
    assert_int_equal(a.port, 8404);
    assert_int_equal(hagen_parse_addr("0.0.0.0:8404", 0, &a, err, sizeof(err)), 0);
    assert_int_equal(hagen_parse_addr("", 0, &a, err, sizeof(err)), -1);
    assert_int_equal(hagen_parse_addr("", 1, &a, err, sizeof(err)), 0);
    assert_int_equal(a.family, 0);
    assert_int_equal(hagen_parse_addr("127.0.0.1", 0, &a, err, sizeof(err)), -1);
    assert_int_equal(hagen_parse_addr("[]:1", 0, &a, err, sizeof(err)), -1);
    assert_int_equal(hagen_parse_addr(":25", 0, &a, err, sizeof(err)), -1);

    assert_int_equal(hagen_parse_maxconn("1", &n, err, sizeof(err)), 0);
    assert_int_equal(n, 1);
    assert_int_equal(hagen_parse_maxconn("1000000", &n, err, sizeof(err)), 0);
    assert_int_equal(n, 1000000);
    static const char *const bad[] = {"0", "", "-1", "1000001", "10k", "040", " 4", "99999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (hagen_parse_maxconn(bad[i], &n, err, sizeof(err)) != -1)
            fail_msg("--maxconn '%s' accepted", bad[i]);
}

/* ---- the configuration ---------------------------------------------------------------- */

static void test_all_protocols(void **state)
{
    (void) state;
    struct hagen_opts o;
    char *text, head[64];

    hagen_opts_init(&o);
    text = gen3(&o);
    assert_non_null(strstr(text, "\nglobal\n"));
    assert_non_null(strstr(text, "\n    maxconn 400 "));
    assert_non_null(strstr(text, "\ndefaults\n    mode tcp\n"));
    assert_non_null(strstr(text, "\n    retries 3 "));
    assert_non_null(strstr(text, "\n    option redispatch 1 "));
    assert_non_null(strstr(text, "\n    default-server inter 1s fall 2 rise 2 "
                                 "on-marked-down shutdown-sessions\n"));
    assert_int_equal(count(text, "\nfrontend "), HAGEN_NPROTO + 1);
    assert_int_equal(count(text, "\nbackend "), HAGEN_NPROTO);
    assert_int_equal(count(text, "\n    server "), 3 * HAGEN_NPROTO);
    assert_int_equal(count(text, "tcp-check connect ssl"), 0); /* drops send-proxy-v2 */
    assert_int_equal(count(text, "\n    tcp-check connect default\n"), 3);
    assert_int_equal(count(text, "\n    source "), 0); /* no --source */

    for (int p = 0; p < HAGEN_NPROTO; p++) {
        static const int port[HAGEN_NPROTO] = {25, 587, 465, 143, 993, 110, 995};
        char want[128], *ft, *bk;

        snprintf(head, sizeof(head), "frontend ft_%s", protos[p]);
        ft = section(text, head);
        assert_non_null(ft);
        snprintf(want, sizeof(want), "\n    bind 0.0.0.0:%d\n", port[p]);
        assert_non_null(strstr(ft, want));
        snprintf(want, sizeof(want), "\n    default_backend bk_%s", protos[p]);
        assert_non_null(strstr(ft, want));

        snprintf(head, sizeof(head), "backend bk_%s", protos[p]);
        bk = section(text, head);
        assert_non_null(bk);
        assert_non_null(strstr(bk, p == HAGEN_SMTP ? "\n    balance roundrobin\n"
                                                   : "\n    balance leastconn\n"));
        assert_non_null(strstr(bk, "\n    option tcp-check\n"));
        /* implicit TLS: the check's own handshake, inheriting send-proxy-v2 */
        assert_int_equal(count(bk, "\n    tcp-check connect default\n"), tls[p]);
        assert_int_equal(count(bk, "tcp-check connect"), tls[p]);
        assert_int_equal(count(bk, " check-ssl verify none"), tls[p] ? 3 : 0);
        /* every server: checked, PROXY v2 */
        assert_int_equal(count(bk, "\n    server "), 3);
        assert_int_equal(count(bk, " check send-proxy-v2"), 3);
        assert_int_equal(count(bk, " disabled"), 0);
        /* IMAP IDLE */
        int imap = p == HAGEN_IMAP || p == HAGEN_IMAPS;
        assert_int_equal(count(ft, "\n    timeout client 31m"), imap);
        assert_int_equal(count(bk, "\n    timeout server 31m"), imap);
        /* the greeting, then goodbye */
        if (p <= HAGEN_SMTPS)
            assert_non_null(strstr(bk, "    tcp-check expect rstring ^220[\\ -]\n"
                                       "    tcp-check send QUIT\\r\\n\n"
                                       "    tcp-check expect rstring ^221\n"));
        else if (imap)
            assert_non_null(strstr(bk, "    tcp-check expect rstring ^\\*\\ OK\n"
                                       "    tcp-check send a1\\ LOGOUT\\r\\n\n"
                                       "    tcp-check expect rstring ^\\*\\ BYE\n"));
        else
            assert_non_null(strstr(bk, "    tcp-check expect rstring ^\\+OK\n"
                                       "    tcp-check send QUIT\\r\\n\n"
                                       "    tcp-check expect rstring ^\\+OK\n"));
        free(ft);
        free(bk);
    }
    char *bk = section(text, "backend bk_imaps");
    assert_non_null(strstr(bk, "\n    server n1 127.0.0.1:19930 check send-proxy-v2 check-ssl "
                               "verify none\n    server n2 127.0.0.1:29930 "));
    free(bk);
    bk = section(text, "backend bk_smtp");
    assert_non_null(strstr(bk, "\n    server n3 127.0.0.1:32525 check send-proxy-v2"));
    free(bk);

    char *st = section(text, "frontend ft_stats");
    assert_non_null(st);
    assert_non_null(strstr(st, "\n    mode http\n    bind 127.0.0.1:8404\n"));
    assert_non_null(strstr(st, "use-service prometheus-exporter if { path /metrics }"));
    assert_non_null(strstr(st, "\n    stats uri /stats\n"));
    free(st);
    free(text);
}

static void test_some_protocols(void **state)
{
    (void) state;
    static const char *const lines[] = {
        "member id=1 role=voter zone= raft= rpc= smtp=10.0.0.1:2525 submission= smtps= "
        "imap= imaps=10.0.0.1:9930 pop3= pop3s=",
        "member id=2 role=voter zone= raft= rpc= smtp= submission= smtps= imap= "
        "imaps=10.0.0.2:9930 pop3= pop3s=",
        NULL};
    struct hagen_opts o;
    char err[256] = "", *text, *bk;

    hagen_opts_init(&o);
    text = gen(lines, &o, err, sizeof(err));
    assert_non_null(text);
    assert_int_equal(count(text, "\nfrontend "), 3); /* smtp, imaps, stats */
    assert_int_equal(count(text, "\nbackend "), 2);
    assert_non_null(strstr(text, "\nfrontend ft_smtp\n"));
    assert_non_null(strstr(text, "\nfrontend ft_imaps\n"));
    assert_null(strstr(text, "ft_submission"));
    assert_null(strstr(text, "bk_pop3"));
    assert_null(strstr(text, "bk_imap\n"));
    bk = section(text, "backend bk_smtp");
    assert_int_equal(count(bk, "\n    server "), 1); /* n2 does not serve smtp */
    assert_non_null(strstr(bk, "\n    server n1 10.0.0.1:2525 check send-proxy-v2"));
    free(bk);
    bk = section(text, "backend bk_imaps");
    assert_int_equal(count(bk, "\n    server "), 2);
    free(bk);
    free(text);
}

/* Each protocol alone: its frontend and backend, the stats frontend, nothing else. */
static void test_each_protocol_alone(void **state)
{
    (void) state;
    struct hagen_opts o;

    hagen_opts_init(&o);
    for (int p = 0; p < HAGEN_NPROTO; p++) {
        char line[512], want[128], err[256] = "", *text;
        struct hagen_member m;
        size_t len =
            (size_t) snprintf(line, sizeof(line), "member id=4 role=voter zone= raft= rpc=");

        for (int q = 0; q < HAGEN_NPROTO; q++)
            len += (size_t) snprintf(line + len, sizeof(line) - len, " %s=%s", protos[q],
                                     q == p ? "192.0.2.4:4000" : "");
        member(line, &m);
        text = hagen_config(&m, 1, &o, err, sizeof(err));
        assert_non_null(text);
        assert_int_equal(count(text, "\nfrontend "), 2);
        assert_int_equal(count(text, "\nbackend "), 1);
        snprintf(want, sizeof(want), "\nfrontend ft_%s\n", protos[p]);
        assert_non_null(strstr(text, want));
        snprintf(want, sizeof(want), "\nbackend bk_%s\n", protos[p]);
        assert_non_null(strstr(text, want));
        snprintf(want, sizeof(want), "\n    server n4 192.0.2.4:4000 check send-proxy-v2%s\n",
                 tls[p] ? " check-ssl verify none" : "");
        assert_non_null(strstr(text, want));
        assert_int_equal(count(text, "tcp-check connect default"), tls[p]);
        assert_non_null(strstr(text, "\nfrontend ft_stats\n"));
        free(text);
    }
}

static void test_order_spare_source_v6(void **state)
{
    (void) state;
    static const char *const shuffled[] = {
        LINE3,
        "member id=10 role=spare zone=z raft= rpc= smtp=127.0.0.1:2 submission= smtps= "
        "imap= imaps= pop3= pop3s=",
        LINE1, LINE2, NULL};
    static const char *const sorted[] = {
        LINE1, LINE2, LINE3,
        "member id=10 role=spare zone=z raft= rpc= smtp=127.0.0.1:2 submission= smtps= "
        "imap= imaps= pop3= pop3s=",
        NULL};
    struct hagen_opts o;
    char err[256] = "", *a, *b, *bk;

    hagen_opts_init(&o);
    assert_int_equal(hagen_parse_ip("127.0.0.2", &o.source, err, sizeof(err)), 0);
    a = gen(shuffled, &o, err, sizeof(err));
    b = gen(sorted, &o, err, sizeof(err));
    assert_non_null(a);
    assert_non_null(b);
    assert_string_equal(a, b); /* servers by id, whatever the order given */
    bk = section(a, "backend bk_smtp");
    const char *n1 = strstr(bk, "server n1 "), *n2 = strstr(bk, "server n2 "),
               *n3 = strstr(bk, "server n3 "), *n10 = strstr(bk, "server n10 ");
    assert_true(n1 != NULL && n1 < n2 && n2 < n3 && n3 < n10);
    assert_non_null(strstr(bk, "server n10 127.0.0.1:2 check send-proxy-v2 disabled"));
    assert_int_equal(count(a, " disabled"), 1); /* only the spare */
    assert_non_null(strstr(a, "#   n10  role=spare zone=z raft= rpc=  (disabled: a spare"));
    free(bk);
    /* --source: in every backend, so that nodes can trust exactly that address */
    assert_int_equal(count(a, "\n    source 127.0.0.2\n"), HAGEN_NPROTO);
    assert_non_null(strstr(a, "net.proxy_trusted=127.0.0.2"));
    free(a);
    free(b);

    /* IPv6 everywhere */
    static const char *const v6[] = {
        "member id=1 role=voter zone= raft= rpc= smtp=[fd00::1]:25 submission= smtps= imap= "
        "imaps= pop3= pop3s=",
        NULL};
    hagen_opts_init(&o);
    assert_int_equal(hagen_parse_ip("::", &o.bind, err, sizeof(err)), 0);
    assert_int_equal(hagen_parse_ip("fd00::ff", &o.source, err, sizeof(err)), 0);
    assert_int_equal(hagen_parse_addr("[::1]:9000", 0, &o.stats, err, sizeof(err)), 0);
    a = gen(v6, &o, err, sizeof(err));
    assert_non_null(a);
    assert_non_null(strstr(a, "\n    bind [::]:25\n"));
    assert_non_null(strstr(a, "\n    source [fd00::ff]\n"));
    assert_non_null(strstr(a, "\n    server n1 [fd00::1]:25 check send-proxy-v2\n"));
    assert_non_null(strstr(a, "\n    bind [::1]:9000\n"));
    free(a);
}

static void test_roles(void **state)
{
    (void) state;
    static const char *const lines[] = {
        "member id=1 role=voter zone= raft= rpc= smtp=127.0.0.1:1 submission= smtps= imap= "
        "imaps= pop3= pop3s=",
        "member id=2 role=standby zone= raft= rpc= smtp=127.0.0.1:2 submission= smtps= imap= "
        "imaps= pop3= pop3s=",
        "member id=3 role=spare zone= raft= rpc= smtp=127.0.0.1:3 submission= smtps= imap= "
        "imaps= pop3= pop3s=",
        "member id=4 role=unknown zone= raft= rpc= smtp=127.0.0.1:4 submission= smtps= imap= "
        "imaps= pop3= pop3s=",
        NULL};
    struct hagen_opts o;
    char err[256] = "", *text;

    assert_true(hagen_in_rotation(HAGEN_VOTER) && hagen_in_rotation(HAGEN_STANDBY));
    assert_false(hagen_in_rotation(HAGEN_SPARE) || hagen_in_rotation(HAGEN_UNKNOWN));
    assert_string_equal(hagen_role_name(HAGEN_UNKNOWN), "unknown");
    assert_null(hagen_role_name((enum hagen_role) 4));
    hagen_opts_init(&o);
    text = gen(lines, &o, err, sizeof(err));
    assert_non_null(text);
    assert_non_null(strstr(text, "\n    server n1 127.0.0.1:1 check send-proxy-v2\n"));
    assert_non_null(strstr(text, "\n    server n2 127.0.0.1:2 check send-proxy-v2\n"));
    assert_non_null(strstr(text, "\n    server n3 127.0.0.1:3 check send-proxy-v2 disabled\n"));
    assert_non_null(strstr(text, "\n    server n4 127.0.0.1:4 check send-proxy-v2 disabled\n"));
    assert_non_null(strstr(text, "#   n4  role=unknown zone= raft= rpc=  (disabled: not in the"));
    free(text);
}

static void test_refused_configs(void **state)
{
    (void) state;
    struct hagen_member ms[2];
    struct hagen_opts o;
    char err[256] = "";

    hagen_opts_init(&o);
    assert_null(hagen_config(ms, 0, &o, err, sizeof(err)));
    assert_string_equal(err, "no members");
    assert_int_equal(hagen_write(NULL, 0, ms, 0, &o, err, sizeof(err)), -1);

    member(LINE1, &ms[0]);
    member(LINE2, &ms[1]);
    ms[1].id = 1;
    assert_null(hagen_config(ms, 2, &o, err, sizeof(err)));
    assert_string_equal(err, "member id 1 listed twice");
    ms[1].id = 0;
    assert_null(hagen_config(ms, 2, &o, err, sizeof(err)));

    member("member id=1 role=voter zone= raft=127.0.0.1:1 rpc=127.0.0.1:2 smtp= submission= "
           "smtps= imap= imaps= pop3= pop3s=",
           &ms[0]);
    assert_null(hagen_config(ms, 1, &o, err, sizeof(err)));
    assert_string_equal(err, "no member serves any protocol");

    member(LINE1, &ms[0]);
    o.ports[HAGEN_POP3S] = o.ports[HAGEN_IMAPS];
    assert_null(hagen_config(ms, 1, &o, err, sizeof(err)));
    assert_string_equal(err, "imaps and pop3s both on port 993");
    hagen_opts_init(&o);
    o.stats.port = 0;
    assert_null(hagen_config(ms, 1, &o, err, sizeof(err)));
    hagen_opts_init(&o);
    o.bind.family = 0;
    assert_null(hagen_config(ms, 1, &o, err, sizeof(err)));
    /* errlen 0: refused all the same, nothing written */
    assert_int_equal(hagen_write(NULL, 0, ms, 1, &o, NULL, 0), -1);
}

static void test_lengths(void **state)
{
    (void) state;
    struct hagen_member m;
    struct hagen_opts o;
    char err[256] = "", small[100], *full;
    long len;

    hagen_opts_init(&o);
    member(LINE1, &m);
    full = hagen_config(&m, 1, &o, err, sizeof(err));
    assert_non_null(full);
    len = hagen_write(NULL, 0, &m, 1, &o, err, sizeof(err));
    assert_int_equal(len, (long) strlen(full));
    memset(small, 'X', sizeof(small));
    assert_int_equal(hagen_write(small, sizeof(small), &m, 1, &o, err, sizeof(err)), len);
    assert_int_equal(small[sizeof(small) - 1], '\0');
    assert_memory_equal(small, full, sizeof(small) - 1);
    assert_int_equal(hagen_write(small, 1, &m, 1, &o, err, sizeof(err)), len);
    assert_int_equal(small[0], '\0');
    free(full);
}

/* Neither the command nor member data can put anything but comments in the header. */
static void test_no_injection(void **state)
{
    (void) state;
    struct hagen_member m;
    struct hagen_opts o;
    char err[256] = "", *text;

    hagen_opts_init(&o);
    o.command = "ternctl haproxy-config 'x\nfrontend evil\n    bind :1'\r\x1b";
    member("member id=1 role=voter zone=#\\evil'\" raft= rpc= smtp=127.0.0.1:25 submission= "
           "smtps= imap= imaps= pop3= pop3s=",
           &m);
    text = hagen_config(&m, 1, &o, err, sizeof(err));
    assert_non_null(text);
    assert_null(strstr(text, "\nfrontend evil"));
    assert_null(strstr(text, "\n    bind :1"));
    assert_non_null(strstr(text, "# Generated by: ternctl haproxy-config 'x?frontend evil?    "
                                 "bind :1'??\n"));
    assert_non_null(strstr(text, "zone=#\\evil'\" "));
    /* every line is a comment, blank, a section header or an indented keyword */
    for (const char *l = text; *l != '\0';) {
        const char *nl = strchr(l, '\n');
        assert_non_null(nl);
        if (!(l[0] == '#' || l[0] == '\n' || strncmp(l, "global\n", 7) == 0 ||
              strncmp(l, "defaults\n", 9) == 0 || strncmp(l, "frontend ", 9) == 0 ||
              strncmp(l, "backend ", 8) == 0 || strncmp(l, "    ", 4) == 0))
            fail_msg("unexpected line: %.*s", (int) (nl - l), l);
        l = nl + 1;
    }
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_member_contract_line),
        cmocka_unit_test(test_member_empty_values_and_roles),
        cmocka_unit_test(test_member_refused),
        cmocka_unit_test(test_ports),
        cmocka_unit_test(test_addresses_and_maxconn),
        cmocka_unit_test(test_all_protocols),
        cmocka_unit_test(test_some_protocols),
        cmocka_unit_test(test_each_protocol_alone),
        cmocka_unit_test(test_order_spare_source_v6),
        cmocka_unit_test(test_roles),
        cmocka_unit_test(test_refused_configs),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_no_injection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
