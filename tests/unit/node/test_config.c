/*
 * tests/unit/node/test_config.c
 * Unit tests for node/config.c: embedded defaults, every value type good and bad (in the
 * file and through config_set), exact "NAME:LINE: reason" messages, syntax corners (comments,
 * CRLF, BOM, quotes, no final newline), limits (line, value, file, NUL and control bytes),
 * config_print round trip, config_load errors, and the getters' abort on an unknown key.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"

#define NAME "tern.conf"

/* ---- helpers -------------------------------------------------------------------------- */

static int setup(void **state)
{
    struct config *cfg = malloc(sizeof(*cfg));

    if (cfg == NULL || config_init(cfg) < 0) {
        free(cfg);
        return -1;
    }
    *state = cfg;
    return 0;
}

static int teardown(void **state)
{
    config_free(*state);
    free(*state);
    return 0;
}

/* parse_exact() parses LEN bytes from a heap copy of exactly that size, so that ASan
 * catches any read past the end (config_parse() must not need a NUL terminator). */
static int parse_exact(struct config *cfg, const char *text, size_t len, char *err)
{
    char *copy = malloc(len > 0 ? len : 1);
    int rc;

    assert_non_null(copy);
    memcpy(copy, text, len);
    rc = config_parse(cfg, copy, len, NAME, err);
    free(copy);
    return rc;
}

static int parse(struct config *cfg, const char *text, char *err)
{
    return parse_exact(cfg, text, strlen(text), err);
}

/* expect_error() parses TEXT (LEN bytes) into a fresh config and wants exactly WANT. */
static void expect_error_len(const char *text, size_t len, const char *want)
{
    struct config cfg;
    char err[CONFIG_ERR_MAX];

    assert_int_equal(config_init(&cfg), 0);
    assert_int_equal(parse_exact(&cfg, text, len, err), -1);
    assert_string_equal(err, want);
    config_free(&cfg);
}

static void expect_error(const char *text, const char *want)
{
    expect_error_len(text, strlen(text), want);
}

/* good() sets SECTION.KEY to VALUE both from a file line and with config_set(), and wants
 * config_str() to give it back. */
static void good(const char *section, const char *key, const char *value)
{
    struct config cfg;
    char err[CONFIG_ERR_MAX], text[256], name[64];

    snprintf(text, sizeof(text), "[%s]\n%s = %s\n", section, key, value);
    snprintf(name, sizeof(name), "%s.%s", section, key);
    assert_int_equal(config_init(&cfg), 0);
    if (parse(&cfg, text, err) != 0)
        fail_msg("'%s' rejected: %s", value, err);
    assert_string_equal(config_str(&cfg, section, key), value);
    config_free(&cfg);

    assert_int_equal(config_init(&cfg), 0);
    if (config_set(&cfg, name, value, err) != 0)
        fail_msg("config_set '%s' rejected: %s", value, err);
    assert_string_equal(config_str(&cfg, section, key), value);
    config_free(&cfg);
}

/* bad() wants VALUE refused for SECTION.KEY with REASON, from a file (line 2) and from
 * config_set(), and the old value kept by config_set(). */
static void bad(const char *section, const char *key, const char *value, const char *reason)
{
    struct config cfg;
    char err[CONFIG_ERR_MAX], text[256], name[64], want[CONFIG_ERR_MAX], *before;

    snprintf(text, sizeof(text), "[%s]\n%s = %s\n", section, key, value);
    snprintf(name, sizeof(name), "%s.%s", section, key);
    snprintf(want, sizeof(want), NAME ":2: bad value for %s: %s", name, reason);
    expect_error(text, want);

    assert_int_equal(config_init(&cfg), 0);
    before = strdup(config_str(&cfg, section, key));
    assert_non_null(before);
    snprintf(want, sizeof(want), "bad value for %s: %s", name, reason);
    assert_int_equal(config_set(&cfg, name, value, err), -1);
    assert_string_equal(err, want);
    assert_string_equal(config_str(&cfg, section, key), before);
    free(before);
    config_free(&cfg);
}

/* ---- defaults ------------------------------------------------------------------------- */

static void test_defaults(void **state)
{
    struct config *cfg = *state;

    assert_true(cfg->count >= 20);
    for (size_t i = 0; i < cfg->count; i++)
        assert_non_null(cfg->values[i]);
    assert_int_equal(config_uint(cfg, "node", "id"), 1);
    assert_string_equal(config_str(cfg, "node", "data_dir"), "var/data");
    assert_string_equal(config_str(cfg, "node", "admin_socket"), "");
    assert_string_equal(config_str(cfg, "node", "zone"), "");
    assert_string_equal(config_str(cfg, "node", "hostname"), "localhost");
    assert_string_equal(config_str(cfg, "raft", "address"), "127.0.0.1:7001");
    assert_int_equal(config_uint(cfg, "raft", "election_timeout_ms"), 1000);
    assert_int_equal(config_uint(cfg, "raft", "heartbeat_ms"), 50);
    assert_int_equal(config_uint(cfg, "raft", "snapshot_threshold"), 16384);
    assert_int_equal(config_uint(cfg, "raft", "snapshot_trailing"), 128);
    assert_string_equal(config_str(cfg, "log", "level"), "info");
    assert_string_equal(config_str(cfg, "listen", "smtp"), "127.0.0.1:2525");
    assert_string_equal(config_str(cfg, "listen", "submission"), "127.0.0.1:5870");
    assert_string_equal(config_str(cfg, "listen", "smtps"), "127.0.0.1:4650");
    assert_string_equal(config_str(cfg, "listen", "imap"), "127.0.0.1:1143");
    assert_string_equal(config_str(cfg, "listen", "imaps"), "127.0.0.1:9930");
    assert_string_equal(config_str(cfg, "listen", "pop3"), "127.0.0.1:1110");
    assert_string_equal(config_str(cfg, "listen", "pop3s"), "127.0.0.1:9950");
    assert_int_equal(config_size(cfg, "quota", "default_bytes"), 0);
    assert_int_equal(config_uint(cfg, "quota", "default_messages"), 0);
}

/* An empty file and a file of comments change nothing. */
static void test_empty_file(void **state)
{
    struct config *cfg = *state;
    char err[CONFIG_ERR_MAX];

    assert_int_equal(parse(cfg, "", err), 0);
    assert_int_equal(parse(cfg, "\n\n  \t\n# nothing\n; here\n", err), 0);
    assert_int_equal(config_uint(cfg, "raft", "heartbeat_ms"), 50);
    assert_string_equal(config_str(cfg, "node", "hostname"), "localhost");
}

/* ---- a whole file --------------------------------------------------------------------- */

static const char full_file[] = "# tern.conf for node 3\n"
                                "[node]\n"
                                "id = 3\n"
                                "data_dir = /srv/tern\n"
                                "admin_socket = /run/tern/admin.sock\n"
                                "zone = eu-west-1a\n"
                                "hostname = mx3.example.org\n"
                                "\n"
                                "[raft]\n"
                                "address = 10.0.0.3:7001\n"
                                "election_timeout_ms = 1500\n"
                                "heartbeat_ms = 150\n"
                                "snapshot_threshold = 4096\n"
                                "snapshot_trailing = 256\n"
                                "[log]\n"
                                "level = debug\n"
                                "[listen]\n"
                                "smtp = 0.0.0.0:25\n"
                                "submission = [::]:587\n"
                                "smtps = mx3.example.org:465\n"
                                "imap =\n"
                                "imaps = [2001:db8::3]:993\n"
                                "pop3 = \"\"\n"
                                "pop3s = 10.0.0.3:995\n"
                                "[quota]\n"
                                "default_bytes = 2g\n"
                                "default_messages = 100000\n";

static void test_full_file(void **state)
{
    struct config *cfg = *state;
    char err[CONFIG_ERR_MAX];

    if (parse(cfg, full_file, err) != 0)
        fail_msg("%s", err);
    assert_int_equal(config_uint(cfg, "node", "id"), 3);
    assert_string_equal(config_str(cfg, "node", "data_dir"), "/srv/tern");
    assert_string_equal(config_str(cfg, "node", "admin_socket"), "/run/tern/admin.sock");
    assert_string_equal(config_str(cfg, "node", "zone"), "eu-west-1a");
    assert_string_equal(config_str(cfg, "node", "hostname"), "mx3.example.org");
    assert_string_equal(config_str(cfg, "raft", "address"), "10.0.0.3:7001");
    assert_int_equal(config_uint(cfg, "raft", "election_timeout_ms"), 1500);
    assert_int_equal(config_uint(cfg, "raft", "heartbeat_ms"), 150);
    assert_int_equal(config_uint(cfg, "raft", "snapshot_threshold"), 4096);
    assert_int_equal(config_uint(cfg, "raft", "snapshot_trailing"), 256);
    assert_string_equal(config_str(cfg, "log", "level"), "debug");
    assert_string_equal(config_str(cfg, "listen", "smtp"), "0.0.0.0:25");
    assert_string_equal(config_str(cfg, "listen", "submission"), "[::]:587");
    assert_string_equal(config_str(cfg, "listen", "smtps"), "mx3.example.org:465");
    assert_string_equal(config_str(cfg, "listen", "imap"), "");
    assert_string_equal(config_str(cfg, "listen", "imaps"), "[2001:db8::3]:993");
    assert_string_equal(config_str(cfg, "listen", "pop3"), "");
    assert_string_equal(config_str(cfg, "listen", "pop3s"), "10.0.0.3:995");
    assert_int_equal(config_size(cfg, "quota", "default_bytes"), 2ULL << 30);
    assert_int_equal(config_uint(cfg, "quota", "default_messages"), 100000);
}

/* A file is applied on top: a second file overrides, the last of two equal keys wins, a
 * section may appear twice, and keys missing from the file keep their value. */
static void test_layering(void **state)
{
    struct config *cfg = *state;
    char err[CONFIG_ERR_MAX];

    assert_int_equal(parse(cfg,
                           "[raft]\nheartbeat_ms = 10\nheartbeat_ms = 20\n[node]\nid = 2\n"
                           "[raft]\nsnapshot_trailing = 7\n",
                           err),
                     0);
    assert_int_equal(config_uint(cfg, "raft", "heartbeat_ms"), 20);
    assert_int_equal(config_uint(cfg, "raft", "snapshot_trailing"), 7);
    assert_int_equal(config_uint(cfg, "node", "id"), 2);
    assert_int_equal(parse(cfg, "[raft]\nheartbeat_ms = 30\n", err), 0);
    assert_int_equal(config_uint(cfg, "raft", "heartbeat_ms"), 30);
    assert_int_equal(config_uint(cfg, "raft", "snapshot_trailing"), 7);
    assert_int_equal(config_uint(cfg, "raft", "election_timeout_ms"), 1000);
}

/* ---- types ---------------------------------------------------------------------------- */

static void test_uint(void **state)
{
    struct config *cfg = *state;
    char err[CONFIG_ERR_MAX];

    good("raft", "heartbeat_ms", "0");
    good("raft", "heartbeat_ms", "50");
    good("raft", "heartbeat_ms", "007");
    good("raft", "heartbeat_ms", "9223372036854775807");
    assert_int_equal(config_set(cfg, "raft.heartbeat_ms", "9223372036854775807", err), 0);
    assert_true(config_uint(cfg, "raft", "heartbeat_ms") == 9223372036854775807ULL);
    assert_int_equal(config_set(cfg, "raft.heartbeat_ms", "007", err), 0);
    assert_int_equal(config_uint(cfg, "raft", "heartbeat_ms"), 7);

    bad("raft", "heartbeat_ms", "abc", "'abc' is not a number");
    bad("raft", "heartbeat_ms", "-1", "'-1' is not a number");
    bad("raft", "heartbeat_ms", "+1", "'+1' is not a number");
    expect_error("[raft]\nheartbeat_ms = \"\"\n", /* quoted empty */
                 NAME ":2: bad value for raft.heartbeat_ms: '' is not a number");
    bad("raft", "heartbeat_ms", "12ms", "'12ms' is not a number");
    bad("raft", "heartbeat_ms", "1.5", "'1.5' is not a number");
    bad("raft", "heartbeat_ms", "0x10", "'0x10' is not a number");
    bad("raft", "heartbeat_ms", "1 000", "'1 000' is not a number");
    bad("raft", "heartbeat_ms", "9223372036854775808",
        "'9223372036854775808' is out of range (max 9223372036854775807)");
    bad("raft", "heartbeat_ms", "18446744073709551616",
        "'18446744073709551616' is out of range (max 9223372036854775807)");
    bad("raft", "heartbeat_ms", "99999999999999999999999999",
        "'99999999999999999999999999' is out of range (max 9223372036854775807)");
    /* An empty value in the file, and blanks around it through config_set (not trimmed). */
    expect_error("[raft]\nheartbeat_ms =\n",
                 NAME ":2: bad value for raft.heartbeat_ms: '' is not a number");
    assert_int_equal(config_set(cfg, "raft.heartbeat_ms", "", err), -1);
    assert_string_equal(err, "bad value for raft.heartbeat_ms: '' is not a number");
    assert_int_equal(config_set(cfg, "raft.heartbeat_ms", " 5", err), -1);
    assert_string_equal(err, "bad value for raft.heartbeat_ms: ' 5' is not a number");
}

static void test_size(void **state)
{
    struct config *cfg = *state;
    char err[CONFIG_ERR_MAX];
    static const struct {
        const char *text;
        uint64_t bytes;
    } sizes[] = {
        {"0", 0},
        {"4096", 4096},
        {"64k", 64 << 10},
        {"64K", 64 << 10},
        {"50m", 50ULL << 20},
        {"50M", 50ULL << 20},
        {"1g", 1ULL << 30},
        {"1G", 1ULL << 30},
        {"0g", 0},
        {"9223372036854775807", 9223372036854775807ULL},
        {"8589934591g", 8589934591ULL << 30},
    };

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        good("quota", "default_bytes", sizes[i].text);
        assert_int_equal(config_set(cfg, "quota.default_bytes", sizes[i].text, err), 0);
        assert_true(config_size(cfg, "quota", "default_bytes") == sizes[i].bytes);
    }
    const char *tail = "is not a size (e.g. 4096, 64k, 50m, 1g)";
    const char *cases[] = {"abc", "m", "50x", "50mb", "-1", "1.5g", "50 m", "1t", "k1"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char reason[128];
        snprintf(reason, sizeof(reason), "'%s' %s", cases[i], tail);
        bad("quota", "default_bytes", cases[i], reason);
    }
    bad("quota", "default_bytes", "8589934592g",
        "'8589934592g' is out of range (max 9223372036854775807)");
    bad("quota", "default_bytes", "9007199254740992k",
        "'9007199254740992k' is out of range (max 9223372036854775807)");
    bad("quota", "default_bytes", "99999999999999999999",
        "'99999999999999999999' is out of range (max 9223372036854775807)");
    expect_error("[quota]\ndefault_bytes =\n", NAME ":2: bad value for quota.default_bytes: '' "
                                                    "is not a size (e.g. 4096, "
                                                    "64k, 50m, 1g)");
}

static void test_bool(void **state)
{
    struct config *cfg = *state;
    char err[CONFIG_ERR_MAX];
    static const struct {
        const char *text;
        bool value;
    } bools[] = {
        {"yes", true},  {"no", false},    {"true", true}, {"false", false}, {"on", true},
        {"off", false}, {"1", true},      {"0", false},   {"YES", true},    {"No", false},
        {"TRUE", true}, {"False", false}, {"oN", true},   {"OFF", false},
    };

    /* smtp.plaintext_auth is the one BOOL key so far. */
    assert_false(config_bool(cfg, "smtp", "plaintext_auth"));
    for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
        good("smtp", "plaintext_auth", bools[i].text);
        assert_int_equal(config_set(cfg, "smtp.plaintext_auth", bools[i].text, err), 0);
        assert_int_equal(config_bool(cfg, "smtp", "plaintext_auth"), bools[i].value);
    }
    const char *tail = "is not a boolean (yes/no, true/false, on/off, 1/0)";
    const char *cases[] = {"maybe", "2", "y", "n", "enable", "yes please", "01", "-1"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char reason[128];
        snprintf(reason, sizeof(reason), "'%s' %s", cases[i], tail);
        bad("smtp", "plaintext_auth", cases[i], reason);
    }
    expect_error("[smtp]\nplaintext_auth =\n",
                 NAME ":2: bad value for smtp.plaintext_auth: '' is not a boolean (yes/no, "
                      "true/false, on/off, 1/0)");
}

static void test_level(void **state)
{
    good("log", "level", "debug");
    good("log", "level", "info");
    good("log", "level", "warn");
    good("log", "level", "error");
    const char *reason = "is not a level (debug/info/warn/error)";
    const char *cases[] = {"INFO", "verbose", "fatal", "warning", "info!"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char want[128];
        snprintf(want, sizeof(want), "'%s' %s", cases[i], reason);
        bad("log", "level", cases[i], want);
    }
    expect_error("[log]\nlevel =\n",
                 NAME ":2: bad value for log.level: '' is not a level (debug/info/warn/error)");
}

static void test_str(void **state)
{
    good("node", "zone", "eu-west-1a");
    good("node", "zone", "a # not a comment ; either");
    good("node", "zone", "k=v=w");
    good("node", "zone", "in \"middle\" quotes");
    good("node", "zone", "tab\there");
    good("node", "zone", "caf\xc3\xa9");
    good("node", "data_dir", "/a path/with spaces");
}

static void test_addr(void **state)
{
    const char *goods[] = {
        "127.0.0.1:25",      "0.0.0.0:1",          "255.255.255.255:65535", "[::1]:143",
        "[::]:587",          "[2001:db8::1]:993",  "[::ffff:10.0.0.1]:25",  "localhost:1143",
        "mx.example.org:25", "a-b.c-d.example:25", "MX1.Example.ORG:25",    "x:25",
        "1a.example:00025",
    };
    const char *bads[] = {
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        ":25",
        "[::1]",
        "[::1]25",
        "[::1:25",
        "[]:25",
        "[zz::1]:25",
        "[10.0.0.1]:25",
        "[fe80::1%eth0]:25",
        "::1:25",
        "999.1.1.1:25",
        "1.2.3:25",
        "1.2.3.4.5:25",
        "exa_mple.com:25",
        "-a.example:25",
        "a-.example:25",
        "a..b:25",
        ".a:25",
        "a.example.:25",
        "host:25x",
        "host:+25",
        "host:-1",
        "host: 25",
        "ho st:25",
        "host:99999999999999999999",
    };
    const char *reason = "is not an address (a.b.c.d:port, [v6]:port, name:port or empty)";

    for (size_t i = 0; i < sizeof(goods) / sizeof(goods[0]); i++)
        good("listen", "smtp", goods[i]);
    for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
        char want[256];
        snprintf(want, sizeof(want), "'%s' %s", bads[i], reason);
        bad("listen", "smtp", bads[i], want);
    }
    /* Empty means disabled, in the file (bare or quoted) and through config_set. */
    good("listen", "smtp", "");
    good("raft", "address", "[::1]:7001");
}

/* A DNS name is limited to 63-byte labels and 253 bytes. */
static void test_addr_name_limits(void **state)
{
    char label[64 + 1 + 8], name[300];

    memset(label, 'a', 63);
    strcpy(label + 63, ".x:25");
    good("listen", "smtp", label);
    memset(label, 'a', 64);
    strcpy(label + 64, ".x:25");
    char want[256];
    snprintf(want, sizeof(want),
             "'%.64s' is not an address (a.b.c.d:port, [v6]:port, "
             "name:port or empty)",
             label);
    bad("listen", "smtp", label, want);

    /* 4 x 63 + 3 dots = 255 > 253. */
    name[0] = '\0';
    for (int i = 0; i < 4; i++) {
        memset(label, 'b', 63);
        label[63] = '\0';
        strcat(name, label);
        if (i < 3)
            strcat(name, ".");
    }
    strcat(name, ":25");
    struct config cfg;
    char err[CONFIG_ERR_MAX];
    assert_int_equal(config_init(&cfg), 0);
    assert_int_equal(config_set(&cfg, "listen.smtp", name, err), -1);
    name[63 * 4 + 3 - 2] = '\0'; /* drop 2 bytes: 253 */
    strcat(name, ":25");
    assert_int_equal(config_set(&cfg, "listen.smtp", name, err), 0);
    config_free(&cfg);
}

static void test_parse_addr(void **state)
{
    char host[64];
    uint16_t port = 0;

    assert_int_equal(config_parse_addr("10.1.2.3:7001", host, sizeof(host), &port), 0);
    assert_string_equal(host, "10.1.2.3");
    assert_int_equal(port, 7001);
    assert_int_equal(config_parse_addr("[2001:db8::1]:993", host, sizeof(host), &port), 0);
    assert_string_equal(host, "2001:db8::1");
    assert_int_equal(port, 993);
    assert_int_equal(config_parse_addr("mx.example.org:65535", host, sizeof(host), &port), 0);
    assert_string_equal(host, "mx.example.org");
    assert_int_equal(port, 65535);
    assert_int_equal(config_parse_addr("", host, sizeof(host), &port), -1);
    assert_int_equal(config_parse_addr("1.2.3.4:0", host, sizeof(host), &port), -1);
    /* HOSTLEN counts the NUL. */
    assert_int_equal(config_parse_addr("abcd:1", host, 5, &port), 0);
    assert_string_equal(host, "abcd");
    assert_int_equal(config_parse_addr("abcde:1", host, 5, &port), -1);
    assert_int_equal(config_parse_addr("[::1]:1", host, 3, &port), -1);
    assert_int_equal(config_parse_addr("[::1]:1", host, 4, &port), 0);
    assert_string_equal(host, "::1");
}

/* ---- syntax --------------------------------------------------------------------------- */

static void test_comments_blanks_spaces(void **state)
{
    struct config *cfg = *state;
    char err[CONFIG_ERR_MAX];

    assert_int_equal(parse(cfg,
                           "# comment\n"
                           "; comment too\n"
                           "   # indented comment\n"
                           "\t\n"
                           "  [ raft ]  \n"
                           "heartbeat_ms=42\n"
                           "\t snapshot_trailing \t = \t 9 \t\n"
                           "[node]\n"
                           "zone = a#b\n"
                           "# id = 99\n",
                           err),
                     0);
    assert_int_equal(config_uint(cfg, "raft", "heartbeat_ms"), 42);
    assert_int_equal(config_uint(cfg, "raft", "snapshot_trailing"), 9);
    assert_string_equal(config_str(cfg, "node", "zone"), "a#b");
    assert_int_equal(config_uint(cfg, "node", "id"), 1);
}

static void test_quotes(void **state)
{
    struct config *cfg = *state;
    char err[CONFIG_ERR_MAX];

    assert_int_equal(parse(cfg, "[node]\nzone = \"  two spaces  \"\n", err), 0);
    assert_string_equal(config_str(cfg, "node", "zone"), "  two spaces  ");
    assert_int_equal(parse(cfg, "[node]\nzone = \"\"\n", err), 0);
    assert_string_equal(config_str(cfg, "node", "zone"), "");
    /* Only the outer pair is taken off; inner quotes are kept. */
    assert_int_equal(parse(cfg, "[node]\nzone = \"\"x\"\"\n", err), 0);
    assert_string_equal(config_str(cfg, "node", "zone"), "\"x\"");
    assert_int_equal(parse(cfg, "[node]\nzone = \"\"\"\n", err), 0);
    assert_string_equal(config_str(cfg, "node", "zone"), "\"");
    /* A quote that does not start the value is part of it. */
    assert_int_equal(parse(cfg, "[node]\nzone = a\"b\"\n", err), 0);
    assert_string_equal(config_str(cfg, "node", "zone"), "a\"b\"");
    /* Quoted numbers are numbers. */
    assert_int_equal(parse(cfg, "[raft]\nheartbeat_ms = \"77\"\n", err), 0);
    assert_int_equal(config_uint(cfg, "raft", "heartbeat_ms"), 77);
    expect_error("[raft]\nheartbeat_ms = \" 77\"\n",
                 NAME ":2: bad value for raft.heartbeat_ms: ' 77' is not a number");

    expect_error("[node]\nzone = \"abc\n", NAME ":2: unterminated quoted value for node.zone");
    expect_error("[node]\nzone = \"\n", NAME ":2: unterminated quoted value for node.zone");
    expect_error("[node]\nzone = \"a\" b\n", NAME ":2: unterminated quoted value for node.zone");
}

static void test_crlf(void **state)
{
    struct config *cfg = *state;
    char err[CONFIG_ERR_MAX];

    assert_int_equal(parse(cfg,
                           "# c\r\n[raft]\r\nheartbeat_ms = 55\r\n\r\n[node]\r\n"
                           "zone = \" z \"\r\nhostname = h\r\n",
                           err),
                     0);
    assert_int_equal(config_uint(cfg, "raft", "heartbeat_ms"), 55);
    assert_string_equal(config_str(cfg, "node", "zone"), " z ");
    assert_string_equal(config_str(cfg, "node", "hostname"), "h");
    /* Line numbers still count CRLF lines. */
    expect_error("[raft]\r\n\r\nheartbeat_ms = x\r\n",
                 NAME ":3: bad value for raft.heartbeat_ms: 'x' is not a number");
    /* A lone CR is not a line end. */
    expect_error("[raft]\rheartbeat_ms = 1\n", NAME ":1: control character 0x0d");
    expect_error("[node]\nzone = a\r\r\n", NAME ":2: control character 0x0d");
}

static void test_bom(void **state)
{
    struct config *cfg = *state;
    char err[CONFIG_ERR_MAX];

    assert_int_equal(parse(cfg, "\xef\xbb\xbf[raft]\nheartbeat_ms = 66\n", err), 0);
    assert_int_equal(config_uint(cfg, "raft", "heartbeat_ms"), 66);
    assert_int_equal(parse(cfg, "\xef\xbb\xbf", err), 0);
    assert_int_equal(parse(cfg, "\xef\xbb\xbf# only a comment\r\n", err), 0);
    /* Only at the start of the file. */
    expect_error("[raft]\n\xef\xbb\xbfheartbeat_ms = 1\n",
                 NAME ":2: unknown key '\xef\xbb\xbfheartbeat_ms' in section [raft]");
    /* A partial BOM is just bytes. */
    expect_error("\xef\xbb[raft]\n", NAME ":1: expected 'key = value'");
}

/* The last line may lack its newline; a file may end anywhere. */
static void test_truncated(void **state)
{
    struct config *cfg = *state;
    char err[CONFIG_ERR_MAX];
    const char *text = "[raft]\nheartbeat_ms = 500";

    assert_int_equal(parse(cfg, text, err), 0);
    assert_int_equal(config_uint(cfg, "raft", "heartbeat_ms"), 500);
    assert_int_equal(parse_exact(cfg, text, strlen(text) - 1, err), 0);
    assert_int_equal(config_uint(cfg, "raft", "heartbeat_ms"), 50);
    assert_int_equal(parse(cfg, "[raft]\nheartbeat_ms = 51\r", err), 0);
    assert_int_equal(config_uint(cfg, "raft", "heartbeat_ms"), 51);
    assert_int_equal(parse(cfg, "[raft]\nheartbeat_ms = 52\n# no newline", err), 0);
    assert_int_equal(config_uint(cfg, "raft", "heartbeat_ms"), 52);
    assert_int_equal(parse(cfg, "[raft]", err), 0);

    expect_error("[raft]\nheartbeat_ms =", NAME ":2: bad value for raft.heartbeat_ms: '' is "
                                                "not a number");
    expect_error("[raft]\nheartbeat_ms", NAME ":2: expected 'key = value'");
    expect_error("[raft]\nheart", NAME ":2: expected 'key = value'");
    expect_error("[raf", NAME ":1: expected ']' at the end of a section line");
    expect_error("[", NAME ":1: expected ']' at the end of a section line");
    expect_error("[node]\nzone = \"x", NAME ":2: unterminated quoted value for node.zone");

    /* Every prefix of a valid file parses or fails cleanly (ASan checks the reads). */
    for (size_t n = 0; n <= sizeof(full_file) - 1; n++) {
        struct config c;
        assert_int_equal(config_init(&c), 0);
        int rc = parse_exact(&c, full_file, n, err);
        assert_true(rc == 0 || (rc == -1 && strncmp(err, NAME ":", strlen(NAME ":")) == 0));
        config_free(&c);
    }
}

/* ---- errors and their line numbers ---------------------------------------------------- */

static void test_error_messages(void **state)
{
    expect_error("[raft]\nprot = 1\n", NAME ":2: unknown key 'prot' in section [raft]");
    expect_error("# a\n\n[node]\nid = 2\n\n; b\n[raft]\n\n\n\n\nprot = 3\n",
                 NAME ":12: unknown key 'prot' in section [raft]");
    /* A key that exists, but in another section. */
    expect_error("[node]\nheartbeat_ms = 1\n",
                 NAME ":2: unknown key 'heartbeat_ms' in section [node]");
    expect_error("[raft]\nHeartbeat_ms = 1\n",
                 NAME ":2: unknown key 'Heartbeat_ms' in section [raft]");
    expect_error("[node]\nid = 1\n[nope]\n", NAME ":3: unknown section [nope]");
    expect_error("[Node]\n", NAME ":1: unknown section [Node]");
    expect_error("[]\n", NAME ":1: unknown section []");
    expect_error("[node] # comment\n", NAME ":1: expected ']' at the end of a section line");
    expect_error("[node\n", NAME ":1: expected ']' at the end of a section line");
    expect_error("[node]\nid\n", NAME ":2: expected 'key = value'");
    expect_error("\n\n[node]\n= 5\n", NAME ":4: expected 'key = value'");
    expect_error("[node]\nid 5\n", NAME ":2: expected 'key = value'");
    expect_error("id = 5\n", NAME ":1: key 'id' before any [section]");
    expect_error("# c\n\nhostname = x\n[node]\n", NAME ":3: key 'hostname' before any [section]");
    expect_error("\n\n\n\n\n\n[raft]\nheartbeat_ms = abc\n",
                 NAME ":8: bad value for raft.heartbeat_ms: 'abc' is not a number");
    expect_error("[raft]\nheartbeat_ms = abc\n",
                 NAME ":2: bad value for raft.heartbeat_ms: 'abc' is not a number");
    /* A long offending key or value is cut in the message. */
    char text[512], want[512];
    snprintf(text, sizeof(text), "[raft]\n%0100d = 1\n", 0);
    snprintf(want, sizeof(want), NAME ":2: unknown key '%064d' in section [raft]", 0);
    expect_error(text, want);
}

/* The error names the file as given to config_parse(). */
static void test_error_name(void **state)
{
    struct config *cfg = *state;
    char err[CONFIG_ERR_MAX];

    assert_int_equal(config_parse(cfg, "x\n", 2, "/etc/tern/tern.conf", err), -1);
    assert_string_equal(err, "/etc/tern/tern.conf:1: expected 'key = value'");
}

static void test_nul_and_control(void **state)
{
    static const char nul_file[] = "[raft]\nheartbeat_ms = 5\0"
                                   "0\n";
    static const char nul_comment[] = "[raft]\n# a\0b\n";

    expect_error_len(nul_file, sizeof(nul_file) - 1, NAME ":2: NUL byte");
    expect_error_len(nul_comment, sizeof(nul_comment) - 1, NAME ":2: NUL byte");
    expect_error_len("\0", 1, NAME ":1: NUL byte");
    expect_error("[node]\nzone = a\x01"
                 "b\n",
                 NAME ":2: control character 0x01");
    expect_error("[node]\nzone = a\x7f\n", NAME ":2: control character 0x7f");
    expect_error("[node]\nzone = \x1b[31m\n", NAME ":2: control character 0x1b");

    struct config *cfg = *state;
    char err[CONFIG_ERR_MAX];
    assert_int_equal(config_set(cfg, "node.zone", "a\nb", err), -1);
    assert_string_equal(err, "bad value for node.zone: control character 0x0a");
    assert_int_equal(config_set(cfg, "node.zone", "a\rb", err), -1);
    assert_string_equal(err, "bad value for node.zone: control character 0x0d");
    assert_string_equal(config_str(cfg, "node", "zone"), "");
}

static void test_line_limit(void **state)
{
    struct config *cfg = *state;
    char err[CONFIG_ERR_MAX];
    size_t max = CONFIG_LINE_MAX;
    char *text = malloc(max + 64);

    assert_non_null(text);
    /* A comment line of exactly CONFIG_LINE_MAX bytes is fine, with LF or CRLF. */
    text[0] = '#';
    memset(text + 1, 'x', max - 1);
    strcpy(text + max, "\r\n[raft]\nheartbeat_ms = 8\n");
    assert_int_equal(parse(cfg, text, err), 0);
    assert_int_equal(config_uint(cfg, "raft", "heartbeat_ms"), 8);
    /* One byte more is not. */
    text[0] = '\n';
    text[1] = '#';
    memset(text + 2, 'x', max);
    strcpy(text + max + 2, "\n");
    expect_error(text, NAME ":2: line too long (over 4096 bytes)");
    /* Also as the last line without a newline. */
    text[max + 2] = '\0';
    expect_error(text, NAME ":2: line too long (over 4096 bytes)");
    free(text);
}

static void test_value_limit(void **state)
{
    struct config *cfg = *state;
    char err[CONFIG_ERR_MAX];
    char *text = malloc(CONFIG_VALUE_MAX + 64), *value = malloc(CONFIG_VALUE_MAX + 2);

    assert_non_null(text);
    assert_non_null(value);
    memset(value, 'v', CONFIG_VALUE_MAX);
    value[CONFIG_VALUE_MAX] = '\0';
    snprintf(text, CONFIG_VALUE_MAX + 64, "[node]\nzone = %s\n", value);
    assert_int_equal(parse(cfg, text, err), 0);
    assert_string_equal(config_str(cfg, "node", "zone"), value);
    /* Quotes do not count. */
    snprintf(text, CONFIG_VALUE_MAX + 64, "[node]\nzone = \"%s\"\n", value);
    assert_int_equal(parse(cfg, text, err), 0);
    assert_int_equal(config_set(cfg, "node.zone", value, err), 0);

    strcat(value, "v");
    snprintf(text, CONFIG_VALUE_MAX + 64, "[node]\nzone = %s\n", value);
    expect_error(text, NAME ":2: value for node.zone is too long (over 1024 bytes)");
    assert_int_equal(config_set(cfg, "node.zone", value, err), -1);
    assert_string_equal(err, "value for node.zone is too long (over 1024 bytes)");
    free(text);
    free(value);
}

static void test_file_limit(void **state)
{
    size_t len = CONFIG_FILE_MAX + 1;
    char *text = malloc(len);
    struct config cfg;
    char err[CONFIG_ERR_MAX];

    assert_non_null(text);
    /* 1 MiB of comment lines of 64 bytes, then one byte more: the 16384 lines before the
     * extra byte, plus 2 from the header written over the first one, put it on line 16387. */
    for (size_t i = 0; i < len; i += 64) {
        size_t n = len - i < 64 ? len - i : 64;
        memset(text + i, '#', n);
        if (n == 64)
            text[i + 63] = '\n';
    }
    assert_int_equal(config_init(&cfg), 0);
    assert_int_equal(parse_exact(&cfg, text, len - 1, err), 0);
    memcpy(text, "[raft]\nheartbeat_ms = 9\n", 24);
    assert_int_equal(parse_exact(&cfg, text, len, err), -1);
    assert_string_equal(err, NAME ":16387: file too large (over 1048576 bytes)");
    /* Nothing was applied. */
    assert_int_equal(config_uint(&cfg, "raft", "heartbeat_ms"), 50);
    config_free(&cfg);
    free(text);
}

/* ---- config_set ----------------------------------------------------------------------- */

static void test_set(void **state)
{
    struct config *cfg = *state;
    char err[CONFIG_ERR_MAX];

    assert_int_equal(config_set(cfg, "raft.heartbeat_ms", "50", err), 0);
    assert_int_equal(config_uint(cfg, "raft", "heartbeat_ms"), 50);
    assert_int_equal(config_set(cfg, "node.zone", "  spaced  ", err), 0);
    assert_string_equal(config_str(cfg, "node", "zone"), "  spaced  ");
    assert_int_equal(config_set(cfg, "quota.default_bytes", "50m", err), 0);
    assert_int_equal(config_size(cfg, "quota", "default_bytes"), 50 << 20);
    assert_int_equal(config_set(cfg, "listen.imap", "", err), 0);
    assert_string_equal(config_str(cfg, "listen", "imap"), "");

    assert_int_equal(config_set(cfg, "raft.prot", "1", err), -1);
    assert_string_equal(err, "unknown key 'raft.prot'");
    assert_int_equal(config_set(cfg, "heartbeat_ms", "1", err), -1);
    assert_string_equal(err, "unknown key 'heartbeat_ms'");
    assert_int_equal(config_set(cfg, "raft.heartbeat_ms.x", "1", err), -1);
    assert_string_equal(err, "unknown key 'raft.heartbeat_ms.x'");
    assert_int_equal(config_set(cfg, ".heartbeat_ms", "1", err), -1);
    assert_string_equal(err, "unknown key '.heartbeat_ms'");
    assert_int_equal(config_set(cfg, "", "1", err), -1);
    assert_string_equal(err, "unknown key ''");
    assert_int_equal(config_set(cfg, "raft.heartbeat_ms", "abc", err), -1);
    assert_string_equal(err, "bad value for raft.heartbeat_ms: 'abc' is not a number");
    assert_int_equal(config_uint(cfg, "raft", "heartbeat_ms"), 50);
}

/* ---- print and round trip ------------------------------------------------------------- */

static char *print_to_string(const struct config *cfg, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);

    assert_non_null(f);
    config_print(cfg, f);
    assert_int_equal(fclose(f), 0);
    return buf;
}

static void assert_same(const struct config *a, const struct config *b)
{
    assert_int_equal(a->count, b->count);
    for (size_t i = 0; i < a->count; i++)
        assert_string_equal(a->values[i], b->values[i]);
}

static void round_trip(const struct config *cfg)
{
    struct config again;
    char err[CONFIG_ERR_MAX];
    size_t len;
    char *text = print_to_string(cfg, &len);

    assert_int_equal(config_init(&again), 0);
    if (config_parse(&again, text, len, "printed", err) != 0)
        fail_msg("%s\n--- printed:\n%s", err, text);
    assert_same(cfg, &again);
    config_free(&again);
    free(text);
}

static void test_print_defaults(void **state)
{
    struct config *cfg = *state;
    size_t len;
    char *text = print_to_string(cfg, &len);

    assert_non_null(strstr(text, "\n[node]\n# this node's id in the cluster (> 0)\nid = 1\n"));
    assert_non_null(strstr(text, "\nadmin_socket = \"\"\n"));
    assert_non_null(strstr(text, "\n[raft]\n"));
    assert_non_null(strstr(text, "\n# leader heartbeat interval (followers learn commits at the next one)\nheartbeat_ms = 50\n"));
    assert_non_null(strstr(text, "\nlevel = info\n"));
    assert_non_null(strstr(text, "\n[quota]\n"));
    assert_int_equal(text[len - 1], '\n');
    /* One "key = value" line per key. */
    size_t pairs = 0;
    for (const char *line = text; line < text + len; line = strchr(line, '\n') + 1) {
        if (line[0] != '#' && line[0] != '[' && line[0] != '\n')
            pairs++;
    }
    assert_int_equal(pairs, cfg->count);
    free(text);
    round_trip(cfg);
}

static void test_print_round_trip(void **state)
{
    struct config *cfg = *state;
    char err[CONFIG_ERR_MAX];

    assert_int_equal(parse(cfg, full_file, err), 0);
    round_trip(cfg);

    /* Values that need quotes or look like syntax. */
    const char *zones[] = {" lead",  "trail ", "\tboth\t", "\"",          "\"quoted\"",
                           "\"open", "a\"",    "# hash",   "; semi",      "[sect]",
                           "k = v",  "",       " ",        "caf\xc3\xa9", "\xef\xbb\xbf"};
    for (size_t i = 0; i < sizeof(zones) / sizeof(zones[0]); i++) {
        assert_int_equal(config_set(cfg, "node.zone", zones[i], err), 0);
        round_trip(cfg);
    }
    assert_int_equal(config_set(cfg, "raft.heartbeat_ms", "0050", err), 0);
    assert_int_equal(config_set(cfg, "quota.default_bytes", "1G", err), 0);
    round_trip(cfg);

    /* The longest value still fits on a printed line. */
    char value[CONFIG_VALUE_MAX + 1];
    memset(value, ' ', CONFIG_VALUE_MAX);
    value[CONFIG_VALUE_MAX] = '\0';
    assert_int_equal(config_set(cfg, "node.data_dir", value, err), 0);
    round_trip(cfg);
}

/* ---- config_load ---------------------------------------------------------------------- */

static void test_load(void **state)
{
    struct config *cfg = *state;
    char err[CONFIG_ERR_MAX];
    char path[] = "/tmp/test_config.XXXXXX";
    int fd = mkstemp(path);
    const char text[] = "[raft]\nheartbeat_ms = 60\n[nope]\n";

    assert_int_equal(config_load(cfg, "/nonexistent/dir/tern.conf", err), -1);
    assert_string_equal(err, "/nonexistent/dir/tern.conf: No such file or directory");
    assert_int_equal(config_load(cfg, "/", err), -1);
    assert_string_equal(err, "/: Is a directory");

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, 25), 25);
    assert_int_equal(config_load(cfg, path, err), 0);
    assert_int_equal(config_uint(cfg, "raft", "heartbeat_ms"), 60);
    assert_int_equal(write(fd, text + 25, sizeof(text) - 1 - 25), sizeof(text) - 1 - 25);
    assert_int_equal(config_load(cfg, path, err), -1);
    char want[128];
    snprintf(want, sizeof(want), "%s:3: unknown section [nope]", path);
    assert_string_equal(err, want);
    close(fd);
    unlink(path);
}

static void test_load_too_large(void **state)
{
    struct config *cfg = *state;
    char err[CONFIG_ERR_MAX], want[128];
    char path[] = "/tmp/test_config.XXXXXX";
    int fd = mkstemp(path);
    char block[4096];

    assert_true(fd >= 0);
    memset(block, '\n', sizeof(block));
    for (size_t n = 0; n < CONFIG_FILE_MAX; n += sizeof(block))
        assert_int_equal(write(fd, block, sizeof(block)), sizeof(block));
    assert_int_equal(config_load(cfg, path, err), 0);
    assert_int_equal(write(fd, "\n", 1), 1);
    assert_int_equal(config_load(cfg, path, err), -1);
    snprintf(want, sizeof(want), "%s:1048577: file too large (over 1048576 bytes)", path);
    assert_string_equal(err, want);
    close(fd);
    unlink(path);
}

/* ---- getters on unknown keys ---------------------------------------------------------- */

/* A getter given an unknown key (or a key of another type) is our bug: it must abort. */
static void expect_abort(int which)
{
    pid_t pid = fork();
    int status;

    assert_true(pid >= 0);
    if (pid == 0) {
        struct config cfg;
        int devnull = open("/dev/null", O_WRONLY);

        dup2(devnull, 2); /* keep the assertion message out of the test output */
        if (config_init(&cfg) < 0)
            _exit(3);
        switch (which) {
        case 0:
            (void) config_str(&cfg, "raft", "prot");
            break;
        case 1:
            (void) config_uint(&cfg, "raft", "prot");
            break;
        case 2:
            (void) config_bool(&cfg, "nope", "x");
            break;
        case 3:
            (void) config_size(&cfg, "quota", "default_messages");
            break;
        case 4:
            (void) config_uint(&cfg, "node", "zone");
            break;
        case 5:
            (void) config_bool(&cfg, "raft", "heartbeat_ms");
            break;
        }
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
}

static void test_getter_abort(void **state)
{
    for (int i = 0; i <= 5; i++)
        expect_abort(i);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_defaults),
        T(test_empty_file),
        T(test_full_file),
        T(test_layering),
        T(test_uint),
        T(test_size),
        T(test_bool),
        T(test_level),
        T(test_str),
        T(test_addr),
        T(test_addr_name_limits),
        T(test_parse_addr),
        T(test_comments_blanks_spaces),
        T(test_quotes),
        T(test_crlf),
        T(test_bom),
        T(test_truncated),
        T(test_error_messages),
        T(test_error_name),
        T(test_nul_and_control),
        T(test_line_limit),
        T(test_value_limit),
        T(test_file_limit),
        T(test_set),
        T(test_print_defaults),
        T(test_print_round_trip),
        T(test_load),
        T(test_load_too_large),
        T(test_getter_abort),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
