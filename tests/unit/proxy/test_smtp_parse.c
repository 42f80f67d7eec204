/*
 * tests/unit/proxy/test_smtp_parse.c
 * The SMTP command parsers (proxy/smtp/smtp_parse.c): every verb, case, the "FROM: <>"
 * leniency, NUL/CR/LF and over-long lines; MAIL and RCPT paths (null path, source routes,
 * <Postmaster>, SMTPUTF8 addresses, bad UTF-8) and every ESMTP parameter good, bad and
 * twice; BDAT and AUTH arguments; the xtext, base64 (RFC 4648 10 vectors) and SASL PLAIN
 * codecs at and past their limits.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "smtp_parse.h"

#define S(lit) lit, sizeof(lit) - 1 /* a literal as (pointer, length), NULs included */

/* ---- Command lines ----------------------------------------------------------------------- */

static void cmd_ok(const char *line, size_t len, enum smtp_verb verb, const char *arg)
{
    struct smtp_cmd c;

    assert_int_equal(smtp_parse_command(line, len, &c), 0);
    assert_int_equal(c.verb, verb);
    assert_int_equal(c.arglen, strlen(arg));
    assert_memory_equal(c.arg, arg, c.arglen);
    assert_true(c.arg >= line && c.arg + c.arglen <= line + len);
}

static void cmd_err(const char *line, size_t len, int err, enum smtp_verb verb)
{
    struct smtp_cmd c;

    assert_int_equal(smtp_parse_command(line, len, &c), err);
    assert_int_equal(c.verb, verb);
    assert_non_null(c.arg);
}

static void test_every_verb(void **state)
{
    (void) state;
    cmd_ok(S("HELO client.example"), SMTP_V_HELO, "client.example");
    cmd_ok(S("EHLO [192.0.2.1]"), SMTP_V_EHLO, "[192.0.2.1]");
    cmd_ok(S("MAIL FROM:<a@b.example> SIZE=10"), SMTP_V_MAIL, "<a@b.example> SIZE=10");
    cmd_ok(S("RCPT TO:<a@b.example>"), SMTP_V_RCPT, "<a@b.example>");
    cmd_ok(S("DATA"), SMTP_V_DATA, "");
    cmd_ok(S("BDAT 100 LAST"), SMTP_V_BDAT, "100 LAST");
    cmd_ok(S("RSET"), SMTP_V_RSET, "");
    cmd_ok(S("NOOP"), SMTP_V_NOOP, "");
    cmd_ok(S("NOOP anything at all"), SMTP_V_NOOP, "anything at all");
    cmd_ok(S("QUIT"), SMTP_V_QUIT, "");
    cmd_ok(S("VRFY user"), SMTP_V_VRFY, "user");
    cmd_ok(S("EXPN list"), SMTP_V_EXPN, "list");
    cmd_ok(S("HELP"), SMTP_V_HELP, "");
    cmd_ok(S("HELP MAIL"), SMTP_V_HELP, "MAIL");
    cmd_ok(S("STARTTLS"), SMTP_V_STARTTLS, "");
    cmd_ok(S("AUTH PLAIN dGVzdAB0ZXN0AHRlc3Q="), SMTP_V_AUTH, "PLAIN dGVzdAB0ZXN0AHRlc3Q=");
    for (int v = 0; v < SMTP_V_UNKNOWN; v++)
        assert_true(strlen(smtp_verb_name((enum smtp_verb) v)) >= 4);
    assert_string_equal(smtp_verb_name(SMTP_V_STARTTLS), "STARTTLS");
    assert_string_equal(smtp_verb_name(SMTP_V_UNKNOWN), "?");
}

static void test_case_and_spaces(void **state)
{
    (void) state;
    cmd_ok(S("ehlo x"), SMTP_V_EHLO, "x");
    cmd_ok(S("MaIl FrOm:<a@b.example>"), SMTP_V_MAIL, "<a@b.example>");
    cmd_ok(S("rcpt to:<a@b.example>"), SMTP_V_RCPT, "<a@b.example>");
    cmd_ok(S("StartTLS"), SMTP_V_STARTTLS, "");
    cmd_ok(S("quit"), SMTP_V_QUIT, "");
    /* The common space after the colon (Postfix accepts it). */
    cmd_ok(S("MAIL FROM: <a@b.example>"), SMTP_V_MAIL, "<a@b.example>");
    cmd_ok(S("RCPT TO:  <a@b.example>"), SMTP_V_RCPT, "<a@b.example>");
    cmd_ok(S("MAIL FROM:<>"), SMTP_V_MAIL, "<>");
    /* Runs of SP/HTAB between verb and argument; trailing white space ignored. */
    cmd_ok(S("HELO \t x.example \t "), SMTP_V_HELO, "x.example");
    cmd_ok(S("QUIT "), SMTP_V_QUIT, "");
    cmd_ok(S("DATA\t"), SMTP_V_DATA, "");
    cmd_ok(S("MAIL  FROM:<a@b.example>"), SMTP_V_MAIL, "<a@b.example>");
}

static void test_command_errors(void **state)
{
    (void) state;
    /* Unknown verbs are not errors of the parser; ARG is the rest of the line. */
    cmd_ok(S("XYZZY plugh"), SMTP_V_UNKNOWN, "plugh");
    cmd_ok(S(""), SMTP_V_UNKNOWN, "");
    cmd_ok(S(" QUIT"), SMTP_V_UNKNOWN, "QUIT"); /* the verb starts the line */
    cmd_ok(S("MAILFROM:<a@b.example>"), SMTP_V_UNKNOWN, "");
    cmd_ok(S("QUITX"), SMTP_V_UNKNOWN, "");
    cmd_ok(S("STARTTLSX"), SMTP_V_UNKNOWN, "");
    cmd_ok(S("HEL"), SMTP_V_UNKNOWN, "");
    /* Recognised verb, bad arguments: the verb is kept for the 501 reply. */
    cmd_err(S("MAIL"), SMTP_ERR_SYNTAX, SMTP_V_MAIL);
    cmd_err(S("MAIL FROM:"), SMTP_ERR_SYNTAX, SMTP_V_MAIL);
    cmd_err(S("MAIL FROM: "), SMTP_ERR_SYNTAX, SMTP_V_MAIL);
    cmd_err(S("MAIL TO:<a@b.example>"), SMTP_ERR_SYNTAX, SMTP_V_MAIL);
    cmd_err(S("MAIL FROM <a@b.example>"), SMTP_ERR_SYNTAX, SMTP_V_MAIL);
    cmd_err(S("MAIL FROM :<a@b.example>"), SMTP_ERR_SYNTAX, SMTP_V_MAIL);
    cmd_err(S("RCPT FROM:<a@b.example>"), SMTP_ERR_SYNTAX, SMTP_V_RCPT);
    cmd_err(S("RCPT TO"), SMTP_ERR_SYNTAX, SMTP_V_RCPT);
    cmd_err(S("HELO"), SMTP_ERR_SYNTAX, SMTP_V_HELO);
    cmd_err(S("EHLO   "), SMTP_ERR_SYNTAX, SMTP_V_EHLO);
    cmd_err(S("BDAT"), SMTP_ERR_SYNTAX, SMTP_V_BDAT);
    cmd_err(S("AUTH"), SMTP_ERR_SYNTAX, SMTP_V_AUTH);
    cmd_err(S("VRFY"), SMTP_ERR_SYNTAX, SMTP_V_VRFY);
    cmd_err(S("EXPN"), SMTP_ERR_SYNTAX, SMTP_V_EXPN);
    cmd_err(S("DATA now"), SMTP_ERR_SYNTAX, SMTP_V_DATA);
    cmd_err(S("RSET x"), SMTP_ERR_SYNTAX, SMTP_V_RSET);
    cmd_err(S("QUIT now"), SMTP_ERR_SYNTAX, SMTP_V_QUIT);
    cmd_err(S("STARTTLS x"), SMTP_ERR_SYNTAX, SMTP_V_STARTTLS); /* RFC 3207: 501 */
}

static void test_command_nul_cr_lf(void **state)
{
    (void) state;
    cmd_err(S("NOOP\0"), SMTP_ERR_SYNTAX, SMTP_V_UNKNOWN);
    cmd_err(S("MAIL FROM:<a@b.example>\0 SIZE=1"), SMTP_ERR_SYNTAX, SMTP_V_UNKNOWN);
    cmd_err(S("\0QUIT"), SMTP_ERR_SYNTAX, SMTP_V_UNKNOWN);
    cmd_err(S("NOOP\rRSET"), SMTP_ERR_SYNTAX, SMTP_V_UNKNOWN);
    cmd_err(S("NOOP\nRSET"), SMTP_ERR_SYNTAX, SMTP_V_UNKNOWN);
    cmd_err(S("QUIT\r"), SMTP_ERR_SYNTAX, SMTP_V_UNKNOWN);
}

static void test_command_length(void **state)
{
    static char line[SMTP_CMD_LINE_MAX + 16];
    struct smtp_cmd c;
    size_t max = SMTP_CMD_LINE_MAX - 2; /* without CRLF */

    (void) state;
    memcpy(line, "NOOP ", 5);
    memset(line + 5, 'x', sizeof line - 5);
    assert_int_equal(smtp_parse_command(line, max, &c), 0);
    assert_int_equal(c.verb, SMTP_V_NOOP);
    assert_int_equal(c.arglen, max - 5);
    assert_int_equal(smtp_parse_command(line, max + 1, &c), SMTP_ERR_TOOLONG);
    assert_int_equal(smtp_parse_command(line, sizeof line, &c), SMTP_ERR_TOOLONG);
    /* A huge LEN is refused before any octet is read. */
    assert_int_equal(smtp_parse_command(line, SIZE_MAX, &c), SMTP_ERR_TOOLONG);
}

/* ---- MAIL -------------------------------------------------------------------------------- */

static struct smtp_mail m;

static void mail_ok(const char *arg, size_t len, const char *addr)
{
    const char *why = NULL;

    assert_int_equal(smtp_parse_mail(arg, len, &m, &why), 0);
    assert_non_null(why);
    assert_string_equal(m.addr.full, addr);
    assert_int_equal(m.null_path, addr[0] == '\0');
}

static void mail_err(const char *arg, size_t len, int err)
{
    const char *why = NULL;
    int rc = smtp_parse_mail(arg, len, &m, &why);

    if (rc != err)
        fail_msg("%.*s: %d (%s), want %d", (int) len, arg, rc, why ? why : "-", err);
    assert_non_null(why);
    assert_true(why[0] != '\0');
    assert_string_equal(m.addr.full, ""); /* OUT is cleared on error */
    assert_int_equal(m.params, 0);
}

static void test_mail_paths(void **state)
{
    (void) state;
    mail_ok(S("<a@b.example>"), "a@b.example");
    assert_false(m.utf8);
    assert_string_equal(m.addr.local, "a");
    assert_string_equal(m.addr.domain, "b.example");
    mail_ok(S("<John.Doe@Example.COM>"), "john.doe@example.com");
    mail_ok(S("<>"), "");
    assert_true(m.null_path);
    mail_ok(S("<> SIZE=100"), "");
    assert_int_equal(m.size, 100);
    mail_ok(S("<a+tag@b.example>"), "a+tag@b.example");
    mail_ok(S("<a@b.example>   "), "a@b.example");
    /* Source routes are checked and dropped (RFC 5321 4.1.2, Appendix C). */
    mail_ok(S("<@relay.example:u@d.example>"), "u@d.example");
    mail_ok(S("<@a.example,@b.example:U@D.example>"), "u@d.example");

    mail_err(S(""), SMTP_ERR_ADDR);
    mail_err(S("a@b.example"), SMTP_ERR_ADDR); /* no brackets */
    mail_err(S("<a@b.example"), SMTP_ERR_ADDR);
    mail_err(S("a@b.example>"), SMTP_ERR_ADDR);
    mail_err(S("<a@b.example>x"), SMTP_ERR_SYNTAX);
    mail_err(S("<a@b.example>\tSIZE=1"), SMTP_ERR_SYNTAX);
    mail_err(S("<a>"), SMTP_ERR_ADDR);
    mail_err(S("<@b.example>"), SMTP_ERR_ADDR);
    mail_err(S("<a@>"), SMTP_ERR_ADDR);
    mail_err(S("<a@b..example>"), SMTP_ERR_ADDR);
    mail_err(S("<.a@b.example>"), SMTP_ERR_ADDR);
    mail_err(S("<a b@c.example>"), SMTP_ERR_ADDR);
    mail_err(S("<\"a b\"@c.example>"), SMTP_ERR_ADDR); /* quoted local parts: refused */
    mail_err(S("<a@[192.0.2.1]>"), SMTP_ERR_ADDR);     /* address literals: refused */
    mail_err(S("<postmaster>"), SMTP_ERR_ADDR);        /* a RCPT form only */
    mail_err(S("<<a@b.example>>"), SMTP_ERR_ADDR);
    mail_err(S("< a@b.example>"), SMTP_ERR_ADDR);
    /* Bad source routes. */
    mail_err(S("<@:u@d.example>"), SMTP_ERR_ADDR);
    mail_err(S("<@a.example u@d.example>"), SMTP_ERR_ADDR);
    mail_err(S("<@a.example,u@d.example>"), SMTP_ERR_ADDR);
    mail_err(S("<@a.example,:u@d.example>"), SMTP_ERR_ADDR);
    mail_err(S("<@a..example:u@d.example>"), SMTP_ERR_ADDR);
    mail_err(S("<@a.example,b.example:u@d.example>"), SMTP_ERR_ADDR);
    mail_err(S("<@a.example:>"), SMTP_ERR_ADDR);
    /* NUL anywhere, even after the path. */
    mail_err(S("<a@b.example>\0"), SMTP_ERR_SYNTAX);
    mail_err(S("<a\0@b.example>"), SMTP_ERR_SYNTAX);
    mail_err(S("<@a\0b.example:u@d.example>"), SMTP_ERR_SYNTAX);
}

static void test_mail_lengths(void **state)
{
    char arg[600], want[600];
    size_t n;

    (void) state;
    /* A 64-octet local part is fine, 65 is not (RFC 5321 4.5.3.1.1). */
    n = (size_t) snprintf(arg, sizeof arg, "<%s@b.example>",
                          "0123456789012345678901234567890123456789012345678901234567890123");
    snprintf(want, sizeof want, "%.*s", (int) n - 2, arg + 1);
    mail_ok(arg, n, want);
    n = (size_t) snprintf(arg, sizeof arg, "<%s@b.example>",
                          "01234567890123456789012345678901234567890123456789012345678901234");
    mail_err(arg, n, SMTP_ERR_ADDR);
    /* A path of exactly 256 octets with its brackets is fine, 257 is "path too long":
     * "<u@" + four 60-octet labels with dots + 8 octets + ">". */
    n = (size_t) snprintf(arg, sizeof arg, "<u@");
    for (int i = 0; i < 4; i++) {
        memset(arg + n, 'd', 60);
        n += 60;
        arg[n++] = '.';
    }
    memset(arg + n, 'd', 8);
    n += 8;
    arg[n++] = '>';
    assert_int_equal(n, SMTP_PATH_MAX);
    snprintf(want, sizeof want, "%.*s", (int) n - 2, arg + 1);
    mail_ok(arg, n, want);
    memmove(arg + 2, arg + 1, n - 1);
    arg[1] = 'v'; /* "<vu@...>": one octet more */
    mail_err(arg, n + 1, SMTP_ERR_ADDR);
    /* Long garbage and a huge LEN. */
    char big[SMTP_CMD_LINE_MAX + 8];
    memset(big, 'a', sizeof big);
    big[0] = '<';
    mail_err(big, sizeof big, SMTP_ERR_TOOLONG);
    mail_err(big, SMTP_CMD_LINE_MAX, SMTP_ERR_ADDR);
}

static void test_mail_params(void **state)
{
    (void) state;
    mail_ok(S("<a@b.example> SIZE=0"), "a@b.example");
    assert_int_equal(m.params, SMTP_P_SIZE);
    assert_int_equal(m.size, 0);
    mail_ok(S("<a@b.example> size=12345"), "a@b.example");
    assert_int_equal(m.size, 12345);
    mail_ok(S("<a@b.example> SIZE=18446744073709551615"), "a@b.example");
    assert_true(m.size == UINT64_MAX);
    mail_ok(S("<a@b.example> SIZE=99999999999999999999"), "a@b.example"); /* 20 digits */
    assert_true(m.size == UINT64_MAX);
    mail_ok(S("<a@b.example> SIZE=18446744073709551614"), "a@b.example");
    assert_true(m.size == UINT64_MAX - 1);

    mail_ok(S("<a@b.example> BODY=7BIT"), "a@b.example");
    assert_int_equal(m.body, SMTP_BODY_7BIT);
    mail_ok(S("<a@b.example> body=8bitmime"), "a@b.example");
    assert_int_equal(m.body, SMTP_BODY_8BITMIME);
    mail_ok(S("<a@b.example> BODY=BINARYMIME"), "a@b.example");
    assert_int_equal(m.body, SMTP_BODY_BINARYMIME);
    mail_ok(S("<a@b.example> RET=FULL"), "a@b.example");
    assert_int_equal(m.ret, SMTP_RET_FULL);
    mail_ok(S("<a@b.example> ret=hdrs"), "a@b.example");
    assert_int_equal(m.ret, SMTP_RET_HDRS);
    mail_ok(S("<a@b.example> ENVID=QQ314159+2Bx"), "a@b.example");
    assert_string_equal(m.envid, "QQ314159+2Bx");               /* raw xtext */
    mail_ok(S("<a@b.example> ENVID=a+20b+09c"), "a@b.example"); /* SP and HTAB printable */
    mail_ok(S("<a@b.example> AUTH=<>"), "a@b.example");
    assert_string_equal(m.auth, "<>");
    mail_ok(S("<a@b.example> AUTH=e+2Bf+3Dg@x.example"), "a@b.example");
    assert_string_equal(m.auth, "e+f=g@x.example"); /* decoded */
    mail_ok(S("<a@b.example> SMTPUTF8"), "a@b.example");
    assert_int_equal(m.params, SMTP_P_SMTPUTF8);

    mail_ok(S("<> SIZE=1 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x AUTH=<>"), "");
    assert_int_equal(m.params, SMTP_P_SIZE | SMTP_P_BODY | SMTP_P_SMTPUTF8 | SMTP_P_RET |
                                   SMTP_P_ENVID | SMTP_P_AUTH);
    mail_ok(S("<a@b.example>  SIZE=1   BODY=7BIT  "), "a@b.example");
    assert_int_equal(m.params, SMTP_P_SIZE | SMTP_P_BODY);
}

static void test_mail_bad_params(void **state)
{
    char arg[300];
    size_t n;

    (void) state;
    /* Unknown: 555. */
    mail_err(S("<a@b.example> FOO=bar"), SMTP_ERR_PARAM);
    mail_err(S("<a@b.example> XFOO"), SMTP_ERR_PARAM);
    mail_err(S("<a@b.example> NOTIFY=NEVER"), SMTP_ERR_PARAM); /* a RCPT parameter */
    mail_err(S("<a@b.example> BODY=9BIT"), SMTP_ERR_PARAM);
    /* Duplicates, also in other case. */
    mail_err(S("<a@b.example> SIZE=1 SIZE=1"), SMTP_ERR_SYNTAX);
    mail_err(S("<a@b.example> SIZE=1 size=2"), SMTP_ERR_SYNTAX);
    mail_err(S("<a@b.example> BODY=7BIT BODY=8BITMIME"), SMTP_ERR_SYNTAX);
    mail_err(S("<a@b.example> SMTPUTF8 smtputf8"), SMTP_ERR_SYNTAX);
    mail_err(S("<a@b.example> RET=FULL RET=FULL"), SMTP_ERR_SYNTAX);
    mail_err(S("<a@b.example> ENVID=a ENVID=b"), SMTP_ERR_SYNTAX);
    mail_err(S("<a@b.example> AUTH=<> AUTH=<>"), SMTP_ERR_SYNTAX);
    /* Values. */
    mail_err(S("<a@b.example> SIZE"), SMTP_ERR_SYNTAX);
    mail_err(S("<a@b.example> SIZE="), SMTP_ERR_SYNTAX);
    mail_err(S("<a@b.example> SIZE=-1"), SMTP_ERR_SYNTAX);
    mail_err(S("<a@b.example> SIZE=1k"), SMTP_ERR_SYNTAX);
    mail_err(S("<a@b.example> SIZE=123456789012345678901"), SMTP_ERR_SYNTAX); /* 21 */
    mail_err(S("<a@b.example> BODY"), SMTP_ERR_SYNTAX);
    mail_err(S("<a@b.example> SMTPUTF8=yes"), SMTP_ERR_SYNTAX);
    mail_err(S("<a@b.example> RET=ALL"), SMTP_ERR_SYNTAX);
    mail_err(S("<a@b.example> ENVID=a+2"), SMTP_ERR_SYNTAX);
    mail_err(S("<a@b.example> ENVID=a+2b"), SMTP_ERR_SYNTAX);   /* lower-case hex */
    mail_err(S("<a@b.example> ENVID=a+0A"), SMTP_ERR_SYNTAX);   /* decodes to LF */
    mail_err(S("<a@b.example> ENVID=a+80"), SMTP_ERR_SYNTAX);   /* not ASCII */
    mail_err(S("<a@b.example> ENVID=a+00"), SMTP_ERR_SYNTAX);   /* NUL */
    mail_err(S("<a@b.example> AUTH=a+20b"), SMTP_ERR_SYNTAX);   /* a space */
    mail_err(S("<a@b.example> AUTH=a+0D+0A"), SMTP_ERR_SYNTAX); /* CRLF smuggled in */
    mail_err(S("<a@b.example> AUTH"), SMTP_ERR_SYNTAX);
    mail_err(S("<a@b.example> ENVID=a=b"), SMTP_ERR_SYNTAX);
    mail_err(S("<a@b.example> ENVID=\x01"), SMTP_ERR_SYNTAX);
    mail_err(S("<a@b.example> BODY=8BIT\xc3\xa9 SMTPUTF8"), SMTP_ERR_PARAM);
    /* Keywords. */
    mail_err(S("<a@b.example> -SIZE=1"), SMTP_ERR_SYNTAX);
    mail_err(S("<a@b.example> SI_ZE=1"), SMTP_ERR_SYNTAX);
    mail_err(S("<a@b.example> =1"), SMTP_ERR_SYNTAX);
    /* ENVID: 100 octets are fine, 101 are not. */
    n = (size_t) snprintf(arg, sizeof arg, "<a@b.example> ENVID=%0100d", 7);
    mail_ok(arg, n, "a@b.example");
    assert_int_equal(strlen(m.envid), 100);
    n = (size_t) snprintf(arg, sizeof arg, "<a@b.example> ENVID=%0101d", 7);
    mail_err(arg, n, SMTP_ERR_SYNTAX);
}

static void test_mail_param_limits(void **state)
{
    char arg[2048];
    size_t n;

    (void) state;
    /* AUTH=: 500 octets as received, fine; 501, refused. */
    n = (size_t) snprintf(arg, sizeof arg, "<a@b.example> AUTH=");
    memset(arg + n, 'u', 500);
    mail_ok(arg, n + 500, "a@b.example");
    assert_int_equal(strlen(m.auth), 500);
    memset(arg + n, 'u', 501);
    mail_err(arg, n + 501, SMTP_ERR_SYNTAX);
    /* More than SMTP_PARAMS_MAX words: refused before any is looked at. */
    n = (size_t) snprintf(arg, sizeof arg, "<a@b.example>");
    for (int i = 0; i < SMTP_PARAMS_MAX + 1; i++)
        n += (size_t) snprintf(arg + n, sizeof arg - n, " X%d=1", i);
    mail_err(arg, n, SMTP_ERR_SYNTAX);
    /* Exactly SMTP_PARAMS_MAX words are looked at (and the unknown one refused). */
    n = (size_t) snprintf(arg, sizeof arg, "<a@b.example>");
    for (int i = 0; i < SMTP_PARAMS_MAX; i++)
        n += (size_t) snprintf(arg + n, sizeof arg - n, " X%d=1", i);
    mail_err(arg, n, SMTP_ERR_PARAM);
}

static void test_mail_utf8(void **state)
{
    (void) state;
    /* RFC 6531: UTF-8 in both parts with SMTPUTF8, in any parameter position. */
    mail_ok(S("<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.example> SMTPUTF8"),
            "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.example");
    assert_true(m.utf8);
    assert_string_equal(m.addr.local, "\xe7\x94\xa8\xe6\x88\xb7");
    assert_string_equal(m.addr.domain, "\xe4\xbe\x8b\xe5\xad\x90.example");
    mail_ok(S("<J\xc3\xb6rg@Example.ORG> SIZE=5 SMTPUTF8"), "j\xc3\xb6rg@example.org");
    mail_ok(S("<\xc3\x9c@x.example> smtputf8"), "\xc3\x9c@x.example"); /* no Unicode case */
    /* An ASCII address with SMTPUTF8 is just ASCII. */
    mail_ok(S("<a@b.example> SMTPUTF8"), "a@b.example");
    assert_false(m.utf8);
    /* Without SMTPUTF8: 553 5.6.7, also for a non-ASCII source route. */
    mail_err(S("<J\xc3\xb6rg@example.org>"), SMTP_ERR_UTF8);
    mail_err(S("<a@\xc3\xb6.example> SIZE=1"), SMTP_ERR_UTF8);
    mail_err(S("<@\xc3\xb6.example:a@b.example>"), SMTP_ERR_UTF8);
    mail_ok(S("<@\xc3\xb6.example:a@b.example> SMTPUTF8"), "a@b.example");
    assert_false(m.utf8); /* the route is gone */
    /* Invalid UTF-8 or controls: bad address, even with SMTPUTF8. */
    mail_err(S("<\xc3@x.example> SMTPUTF8"), SMTP_ERR_ADDR);             /* truncated */
    mail_err(S("<\xc0\xaf@x.example> SMTPUTF8"), SMTP_ERR_ADDR);         /* overlong */
    mail_err(S("<\xe0\x80\xaf@x.example> SMTPUTF8"), SMTP_ERR_ADDR);     /* overlong */
    mail_err(S("<\xed\xa0\x80@x.example> SMTPUTF8"), SMTP_ERR_ADDR);     /* surrogate */
    mail_err(S("<\xf4\x90\x80\x80@x.example> SMTPUTF8"), SMTP_ERR_ADDR); /* > U+10FFFF */
    mail_err(S("<\xc2\x85@x.example> SMTPUTF8"), SMTP_ERR_ADDR);         /* C1 control NEL */
    mail_err(S("<\x80@x.example> SMTPUTF8"), SMTP_ERR_ADDR);             /* lone continuation */
    mail_err(S("<\xff@x.example> SMTPUTF8"), SMTP_ERR_ADDR);
    mail_err(S("<a@x.\xc3\xb6-> SMTPUTF8"), SMTP_ERR_ADDR); /* label ends with '-' */
    /* The 64-octet limit on the local part counts octets: 32 two-octet letters fit, 33
     * do not. */
    char arg[300], want[300];
    size_t n = 0, w = 0;
    arg[n++] = '<';
    for (int i = 0; i < 32; i++) {
        arg[n++] = want[w++] = '\xc3';
        arg[n++] = want[w++] = '\xb6';
    }
    n += (size_t) snprintf(arg + n, sizeof arg - n, "@x.example> SMTPUTF8");
    snprintf(want + w, sizeof want - w, "@x.example");
    mail_ok(arg, n, want);
    assert_int_equal(strlen(m.addr.local), 64);
    memmove(arg + 3, arg + 1, n - 1);
    arg[1] = '\xc3';
    arg[2] = '\xb6';
    mail_err(arg, n + 2, SMTP_ERR_ADDR);
}

/* ---- RCPT -------------------------------------------------------------------------------- */

static struct smtp_rcpt r;

static void rcpt_ok(const char *arg, size_t len, bool utf8, const char *addr)
{
    const char *why = NULL;
    int rc = smtp_parse_rcpt(arg, len, utf8, &r, &why);

    if (rc != 0)
        fail_msg("%.*s: %d (%s)", (int) len, arg, rc, why ? why : "-");
    assert_string_equal(r.addr.full, addr);
}

static void rcpt_err(const char *arg, size_t len, bool utf8, int err)
{
    const char *why = NULL;
    int rc = smtp_parse_rcpt(arg, len, utf8, &r, &why);

    if (rc != err)
        fail_msg("%.*s: %d (%s), want %d", (int) len, arg, rc, why ? why : "-", err);
    assert_true(why != NULL && why[0] != '\0');
    assert_string_equal(r.addr.full, "");
    assert_int_equal(r.params, 0);
}

static void test_rcpt_paths(void **state)
{
    (void) state;
    rcpt_ok(S("<a@b.example>"), false, "a@b.example");
    assert_false(r.postmaster);
    rcpt_ok(S("<Postmaster>"), false, "postmaster");
    assert_true(r.postmaster);
    assert_string_equal(r.addr.local, "postmaster");
    assert_string_equal(r.addr.domain, "");
    rcpt_ok(S("<POSTMASTER> NOTIFY=NEVER"), false, "postmaster");
    assert_true(r.postmaster);
    rcpt_ok(S("<postmaster@Example.ORG>"), false, "postmaster@example.org");
    assert_false(r.postmaster); /* a normal address */
    rcpt_ok(S("<@hosta.example,@jkl.example:userc@d.bar.example>"), false, "userc@d.bar.example");
    rcpt_err(S("<>"), false, SMTP_ERR_ADDR);
    rcpt_err(S("<postmaster2>"), false, SMTP_ERR_ADDR);
    rcpt_err(S("<@a.example:postmaster>"), false, SMTP_ERR_ADDR);
    rcpt_err(S("a@b.example"), false, SMTP_ERR_ADDR);
    rcpt_err(S("<a@b.example> \0"), false, SMTP_ERR_SYNTAX);
    /* UTF-8 needs the transaction's SMTPUTF8. */
    rcpt_ok(S("<\xc3\xa9@\xc3\xa9.example>"), true, "\xc3\xa9@\xc3\xa9.example");
    assert_true(r.utf8);
    rcpt_err(S("<\xc3\xa9@x.example>"), false, SMTP_ERR_UTF8);
    rcpt_err(S("<@\xc3\xa9.example:a@x.example>"), false, SMTP_ERR_ADDR);
    rcpt_ok(S("<@\xc3\xa9.example:a@x.example>"), true, "a@x.example");
}

static void test_rcpt_params(void **state)
{
    (void) state;
    rcpt_ok(S("<a@b.example> NOTIFY=NEVER"), false, "a@b.example");
    assert_int_equal(r.notify, SMTP_NOTIFY_NEVER);
    assert_int_equal(r.params, SMTP_P_NOTIFY);
    rcpt_ok(S("<a@b.example> NOTIFY=SUCCESS,FAILURE,DELAY"), false, "a@b.example");
    assert_int_equal(r.notify, SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY);
    rcpt_ok(S("<a@b.example> notify=delay,failure"), false, "a@b.example");
    assert_int_equal(r.notify, SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY);
    rcpt_ok(S("<a@b.example> NOTIFY=SUCCESS,SUCCESS"), false, "a@b.example");
    assert_int_equal(r.notify, SMTP_NOTIFY_SUCCESS);
    rcpt_ok(S("<a@b.example> ORCPT=rfc822;Old+2Buser@b.example"), false, "a@b.example");
    assert_string_equal(r.orcpt, "rfc822;Old+2Buser@b.example");
    assert_int_equal(r.orcpt_type_len, 6);
    assert_int_equal(r.params, SMTP_P_ORCPT);
    rcpt_ok(S("<a@b.example> ORCPT=utf-8;j\\x{00F6}rg@b.example NOTIFY=FAILURE"), false,
            "a@b.example");
    assert_int_equal(r.orcpt_type_len, 5);
    assert_int_equal(r.params, SMTP_P_ORCPT | SMTP_P_NOTIFY);
    /* Raw UTF-8 in an esmtp-value only with SMTPUTF8 (RFC 6531 3.3). */
    rcpt_ok(S("<a@b.example> ORCPT=utf-8;j\xc3\xb6rg@b.example"), true, "a@b.example");
    rcpt_err(S("<a@b.example> ORCPT=utf-8;j\xc3\xb6rg@b.example"), false, SMTP_ERR_SYNTAX);
    rcpt_err(S("<a@b.example> ORCPT=rfc822;j\xc3\xb6rg@b.example"), true, SMTP_ERR_SYNTAX);

    rcpt_err(S("<a@b.example> NOTIFY=NEVER,SUCCESS"), false, SMTP_ERR_SYNTAX);
    rcpt_err(S("<a@b.example> NOTIFY=FAILURE,NEVER"), false, SMTP_ERR_SYNTAX);
    rcpt_err(S("<a@b.example> NOTIFY="), false, SMTP_ERR_SYNTAX);
    rcpt_err(S("<a@b.example> NOTIFY"), false, SMTP_ERR_SYNTAX);
    rcpt_err(S("<a@b.example> NOTIFY=SUCCESS,"), false, SMTP_ERR_SYNTAX);
    rcpt_err(S("<a@b.example> NOTIFY=,SUCCESS"), false, SMTP_ERR_SYNTAX);
    rcpt_err(S("<a@b.example> NOTIFY=SUCCESS,,DELAY"), false, SMTP_ERR_SYNTAX);
    rcpt_err(S("<a@b.example> NOTIFY=ALWAYS"), false, SMTP_ERR_SYNTAX);
    rcpt_err(S("<a@b.example> NOTIFY=NEVER NOTIFY=NEVER"), false, SMTP_ERR_SYNTAX);
    rcpt_err(S("<a@b.example> ORCPT=rfc822"), false, SMTP_ERR_SYNTAX);
    rcpt_err(S("<a@b.example> ORCPT=;a@b.example"), false, SMTP_ERR_SYNTAX);
    rcpt_err(S("<a@b.example> ORCPT=rfc822;"), false, SMTP_ERR_SYNTAX);
    rcpt_err(S("<a@b.example> ORCPT=rfc.822;a@b.example"), false, SMTP_ERR_SYNTAX);
    rcpt_err(S("<a@b.example> ORCPT=rfc822;a+4"), false, SMTP_ERR_SYNTAX);
    rcpt_err(S("<a@b.example> ORCPT=rfc822;a+0Ab"), false, SMTP_ERR_SYNTAX);
    rcpt_err(S("<a@b.example> ORCPT=rfc822;a ORCPT=rfc822;b"), false, SMTP_ERR_SYNTAX);
    rcpt_err(S("<a@b.example> SIZE=10"), false, SMTP_ERR_PARAM); /* a MAIL parameter */
    rcpt_err(S("<a@b.example> FOO"), false, SMTP_ERR_PARAM);
}

static void test_rcpt_orcpt_length(void **state)
{
    char arg[1024];
    size_t n, head;

    (void) state;
    head = (size_t) snprintf(arg, sizeof arg, "<a@b.example> ORCPT=rfc822;");
    n = head + SMTP_ORCPT_MAX - strlen("rfc822;");
    memset(arg + head, 'o', n - head);
    rcpt_ok(arg, n, false, "a@b.example");
    assert_int_equal(strlen(r.orcpt), SMTP_ORCPT_MAX);
    arg[n] = 'o';
    rcpt_err(arg, n + 1, false, SMTP_ERR_SYNTAX);
    /* The same limit with xtext that decodes to less. */
    memcpy(arg + head, "+41", 3);
    rcpt_ok(arg, n, false, "a@b.example");
}

/* ---- BDAT and AUTH ----------------------------------------------------------------------- */

static void bdat(const char *arg, size_t len, int rc, uint64_t size, bool last)
{
    uint64_t s = 99;
    bool l = true;

    assert_int_equal(smtp_parse_bdat(arg, len, &s, &l), rc);
    assert_true(s == size);
    assert_int_equal(l, last);
}

static void test_bdat(void **state)
{
    (void) state;
    bdat(S("0"), 0, 0, false);
    bdat(S("0 LAST"), 0, 0, true);
    bdat(S("100 last"), 0, 100, true);
    bdat(S("100  LAST"), 0, 100, true);
    bdat(S("100 LAST "), 0, 100, true);
    bdat(S("007"), 0, 7, false);
    bdat(S("18446744073709551615"), 0, UINT64_MAX, false);
    bdat(S("000000000000000000000000000001"), 0, 1, false);
    bdat(S("18446744073709551616"), SMTP_ERR_SYNTAX, 0, false);
    bdat(S("99999999999999999999999"), SMTP_ERR_SYNTAX, 0, false);
    bdat(S(""), SMTP_ERR_SYNTAX, 0, false);
    bdat(S("LAST"), SMTP_ERR_SYNTAX, 0, false);
    bdat(S(" 10"), SMTP_ERR_SYNTAX, 0, false);
    bdat(S("-1"), SMTP_ERR_SYNTAX, 0, false);
    bdat(S("+1"), SMTP_ERR_SYNTAX, 0, false);
    bdat(S("10LAST"), SMTP_ERR_SYNTAX, 0, false);
    bdat(S("10 LASTX"), SMTP_ERR_SYNTAX, 0, false);
    bdat(S("10 LAST x"), SMTP_ERR_SYNTAX, 0, false);
    bdat(S("10 FIRST"), SMTP_ERR_SYNTAX, 0, false);
    bdat(S("10 LAS"), SMTP_ERR_SYNTAX, 0, false);
    bdat(S("10\tLAST"), SMTP_ERR_SYNTAX, 0, false);
    bdat(S("1\0"), SMTP_ERR_SYNTAX, 0, false);
}

static void test_auth(void **state)
{
    struct smtp_auth a;

    (void) state;
    assert_int_equal(smtp_parse_auth(S("PLAIN"), &a), 0);
    assert_string_equal(a.mech, "PLAIN");
    assert_false(a.has_ir);
    assert_int_equal(a.irlen, 0);
    assert_int_equal(smtp_parse_auth(S("plain dGVzdA=="), &a), 0);
    assert_string_equal(a.mech, "PLAIN");
    assert_true(a.has_ir);
    assert_int_equal(a.irlen, 8);
    assert_memory_equal(a.ir, "dGVzdA==", 8);
    assert_int_equal(smtp_parse_auth(S("PLAIN ="), &a), 0);
    assert_true(a.has_ir);
    assert_int_equal(a.irlen, 0);
    assert_int_equal(smtp_parse_auth(S("PLAIN  abc  "), &a), 0);
    assert_int_equal(a.irlen, 3);
    assert_int_equal(smtp_parse_auth(S("scram-sha-256"), &a), 0);
    assert_string_equal(a.mech, "SCRAM-SHA-256");
    assert_int_equal(smtp_parse_auth(S("X_OAUTH2"), &a), 0);
    assert_int_equal(smtp_parse_auth(S("ABCDEFGHIJKLMNOPQRST"), &a), 0); /* 20 */
    assert_string_equal(a.mech, "ABCDEFGHIJKLMNOPQRST");

    assert_int_equal(smtp_parse_auth(S("ABCDEFGHIJKLMNOPQRSTU"), &a), SMTP_ERR_SYNTAX);
    assert_string_equal(a.mech, "");
    assert_int_equal(smtp_parse_auth(S(""), &a), SMTP_ERR_SYNTAX);
    assert_int_equal(smtp_parse_auth(S(" PLAIN"), &a), SMTP_ERR_SYNTAX);
    assert_int_equal(smtp_parse_auth(S("PL@IN"), &a), SMTP_ERR_SYNTAX);
    assert_int_equal(smtp_parse_auth(S("PLAIN a b"), &a), SMTP_ERR_SYNTAX);
    assert_int_equal(smtp_parse_auth(S("PLAIN\tabc"), &a), SMTP_ERR_SYNTAX);
    assert_int_equal(smtp_parse_auth(S("PLA\0IN"), &a), SMTP_ERR_SYNTAX);
    assert_false(a.has_ir);
}

/* ---- Codecs ------------------------------------------------------------------------------ */

static void test_base64_vectors(void **state)
{
    /* RFC 4648 10. */
    static const char *const v[][2] = {{"", ""},
                                       {"f", "Zg=="},
                                       {"fo", "Zm8="},
                                       {"foo", "Zm9v"},
                                       {"foob", "Zm9vYg=="},
                                       {"fooba", "Zm9vYmE="},
                                       {"foobar", "Zm9vYmFy"}};
    uint8_t dec[16];
    char enc[16];
    size_t n;

    (void) state;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        assert_int_equal(smtp_base64_decode(v[i][1], strlen(v[i][1]), dec, sizeof dec, &n), 0);
        assert_int_equal(n, strlen(v[i][0]));
        assert_memory_equal(dec, v[i][0], n);
        assert_int_equal(
            smtp_base64_encode((const uint8_t *) v[i][0], strlen(v[i][0]), enc, sizeof enc, &n), 0);
        assert_string_equal(enc, v[i][1]);
        assert_int_equal(n, SMTP_BASE64_ENCODED_LEN(strlen(v[i][0])));
    }
    /* All octet values survive. */
    uint8_t all[256], back[256];
    char text[SMTP_BASE64_ENCODED_LEN(256) + 1];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t) i;
    assert_int_equal(smtp_base64_encode(all, 256, text, sizeof text, &n), 0);
    assert_int_equal(smtp_base64_decode(text, n, back, sizeof back, &n), 0);
    assert_int_equal(n, 256);
    assert_memory_equal(all, back, 256);
}

static void test_base64_strict(void **state)
{
    static const char *const bad[] = {
        "Zg=",  "Zg",       "Z",        "Zg=a",     "Z===",     "====", "Zh==",
        "Zm9=", "Zm9v\n",   "Zm 9v",    "Zg==Zg==", "Zm-v",     "Zm_v", "Zg\r\n==",
        "=Zg=", "Zm8=Zm8=", "Zm9v====", "Zm9vYg=",  "Zm9vY===", "*m9v",
    };
    uint8_t dec[64];
    size_t n;

    (void) state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (smtp_base64_decode(bad[i], strlen(bad[i]), dec, sizeof dec, &n) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
    assert_int_equal(smtp_base64_decode("Zm\0v", 4, dec, sizeof dec, &n), -1);
    assert_int_equal(smtp_base64_decode("Zm9v\xff\xff\xff\xff", 8, dec, sizeof dec, &n), -1);
    /* Output room: exact fits, one less does not. */
    assert_int_equal(smtp_base64_decode("Zm9vYmE=", 8, dec, 5, &n), 0);
    assert_int_equal(n, 5);
    assert_int_equal(smtp_base64_decode("Zm9vYmE=", 8, dec, 4, &n), -1);
    assert_int_equal(smtp_base64_decode("Zm9vYmFy", 8, dec, 5, &n), -1);
    assert_int_equal(smtp_base64_decode("", 0, dec, 0, &n), 0);
    assert_int_equal(n, 0);
    char enc[9];
    assert_int_equal(smtp_base64_encode((const uint8_t *) "foobar", 6, enc, 9, &n), 0);
    assert_int_equal(smtp_base64_encode((const uint8_t *) "foobar", 6, enc, 8, &n), -1);
    assert_int_equal(smtp_base64_encode((const uint8_t *) "", 0, enc, 1, &n), 0);
    assert_int_equal(smtp_base64_encode((const uint8_t *) "", 0, enc, 0, &n), -1);
}

static void test_xtext(void **state)
{
    char out[32];
    size_t n;

    (void) state;
    assert_int_equal(smtp_xtext_decode(S("abc"), out, sizeof out, &n), 0);
    assert_string_equal(out, "abc");
    assert_int_equal(smtp_xtext_decode(S("a+2Bb+3Dc+20d"), out, sizeof out, &n), 0);
    assert_string_equal(out, "a+b=c d");
    assert_int_equal(n, 7);
    assert_int_equal(smtp_xtext_decode(S("+FF"), out, sizeof out, &n), 0);
    assert_int_equal((unsigned char) out[0], 0xff);
    assert_int_equal(smtp_xtext_decode(S(""), out, sizeof out, &n), 0);
    assert_int_equal(n, 0);
    assert_string_equal(out, "");
    assert_int_equal(smtp_xtext_decode(S("a+2b"), out, sizeof out, &n), -1);
    assert_int_equal(smtp_xtext_decode(S("a+2"), out, sizeof out, &n), -1);
    assert_int_equal(smtp_xtext_decode(S("a+"), out, sizeof out, &n), -1);
    assert_int_equal(smtp_xtext_decode(S("+G0"), out, sizeof out, &n), -1);
    assert_int_equal(smtp_xtext_decode(S("a=b"), out, sizeof out, &n), -1);
    assert_int_equal(smtp_xtext_decode(S("a b"), out, sizeof out, &n), -1);
    assert_int_equal(smtp_xtext_decode(S("+00"), out, sizeof out, &n), -1);
    assert_int_equal(smtp_xtext_decode(S("\x7f"), out, sizeof out, &n), -1);
    assert_int_equal(smtp_xtext_decode(S("\x80"), out, sizeof out, &n), -1);
    assert_int_equal(smtp_xtext_decode(S("a\0"), out, sizeof out, &n), -1);
    /* Output room includes the NUL. */
    assert_int_equal(smtp_xtext_decode(S("abc"), out, 4, &n), 0);
    assert_int_equal(smtp_xtext_decode(S("abc"), out, 3, &n), -1);
    assert_int_equal(smtp_xtext_decode(S(""), out, 0, &n), -1);

    assert_int_equal(smtp_xtext_encode((const uint8_t *) "a+b=c d\x01\xff", 9, out, sizeof out, &n),
                     0);
    assert_string_equal(out, "a+2Bb+3Dc+20d+01+FF");
    assert_int_equal(n, 19);
    assert_int_equal(smtp_xtext_encode((const uint8_t *) "+", 1, out, 4, &n), 0);
    assert_int_equal(smtp_xtext_encode((const uint8_t *) "+", 1, out, 3, &n), -1);
    assert_int_equal(smtp_xtext_encode((const uint8_t *) "ab", 2, out, 2, &n), -1);
    /* Round trip over every octet but NUL. */
    uint8_t all[255];
    char enc[3 * 255 + 1], dec[256];
    for (int i = 0; i < 255; i++)
        all[i] = (uint8_t) (i + 1);
    assert_int_equal(smtp_xtext_encode(all, 255, enc, sizeof enc, &n), 0);
    assert_int_equal(smtp_xtext_decode(enc, n, dec, sizeof dec, &n), 0);
    assert_int_equal(n, 255);
    assert_memory_equal(dec, all, 255);
}

static void test_sasl_plain(void **state)
{
    struct smtp_plain p;
    uint8_t msg[2048];
    size_t n;

    (void) state;
    assert_int_equal(smtp_sasl_plain((const uint8_t *) S("\0tim\0tanstaaftanstaaf"), &p), 0);
    assert_string_equal(p.authzid, "");
    assert_string_equal(p.authcid, "tim");
    assert_string_equal(p.passwd, "tanstaaftanstaaf");
    assert_int_equal(smtp_sasl_plain((const uint8_t *) S("Ursel\0Kurt\0xipj3plmq"), &p), 0);
    assert_string_equal(p.authzid, "Ursel");
    assert_string_equal(p.authcid, "Kurt");
    assert_string_equal(p.passwd, "xipj3plmq");
    assert_int_equal(smtp_sasl_plain((const uint8_t *) S("\0j\xc3\xb6rg\0p\xc3\xa4ss"), &p), 0);
    assert_string_equal(p.authcid, "j\xc3\xb6rg");

    static const struct {
        const char *m;
        size_t n;
    } bad[] = {
        {S("")},
        {S("\0")},
        {S("user\0pass")},     /* one NUL */
        {S("\0\0pass")},       /* empty authcid */
        {S("\0user\0")},       /* empty passwd */
        {S("\0user\0pa\0ss")}, /* three NULs */
        {S("\0\0")},
        {S("\0user\0p\xc3")}, /* bad UTF-8 */
        {S("\0us\xff\0pass")},
        {S("\xc0\x80\0user\0pass")},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&p, 'x', sizeof p);
        if (smtp_sasl_plain((const uint8_t *) bad[i].m, bad[i].n, &p) != -1)
            fail_msg("accepted case %zu", i);
        assert_string_equal(p.authcid, ""); /* zeroed */
        assert_string_equal(p.passwd, "");
    }

    /* Limits: authzid/authcid 255, passwd 1024. */
    n = 0;
    memset(msg, 'z', 255);
    n += 255;
    msg[n++] = 0;
    memset(msg + n, 'c', 255);
    n += 255;
    msg[n++] = 0;
    memset(msg + n, 'p', 1024);
    n += 1024;
    assert_int_equal(smtp_sasl_plain(msg, n, &p), 0);
    assert_int_equal(strlen(p.authzid), 255);
    assert_int_equal(strlen(p.authcid), 255);
    assert_int_equal(strlen(p.passwd), 1024);
    msg[n++] = 'p';
    assert_int_equal(smtp_sasl_plain(msg, n, &p), -1);
    n = 0;
    msg[n++] = 0;
    memset(msg + n, 'c', 256);
    n += 256;
    msg[n++] = 0;
    msg[n++] = 'p';
    assert_int_equal(smtp_sasl_plain(msg, n, &p), -1);
    n = 0;
    memset(msg, 'z', 256);
    n += 256;
    msg[n++] = 0;
    msg[n++] = 'c';
    msg[n++] = 0;
    msg[n++] = 'p';
    assert_int_equal(smtp_sasl_plain(msg, n, &p), -1);
}

static void test_utf8_valid(void **state)
{
    (void) state;
    assert_true(smtp_utf8_valid((const uint8_t *) S("")));
    assert_true(smtp_utf8_valid((const uint8_t *) S("ascii\0nul")));
    assert_true(smtp_utf8_valid((const uint8_t *) S("\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf")));
    assert_true(smtp_utf8_valid((const uint8_t *) S("\xf0\x90\x80\x80\xf4\x8f\xbf\xbf")));
    assert_false(smtp_utf8_valid((const uint8_t *) S("\xc1\xbf")));
    assert_false(smtp_utf8_valid((const uint8_t *) S("\xe0\x9f\xbf")));
    assert_false(smtp_utf8_valid((const uint8_t *) S("\xf0\x8f\xbf\xbf")));
    assert_false(smtp_utf8_valid((const uint8_t *) S("\xed\xbf\xbf")));
    assert_false(smtp_utf8_valid((const uint8_t *) S("\xf4\x90\x80\x80")));
    assert_false(smtp_utf8_valid((const uint8_t *) S("\xf5\x80\x80\x80")));
    assert_false(smtp_utf8_valid((const uint8_t *) S("\xe2\x82")));
    assert_false(smtp_utf8_valid((const uint8_t *) S("\xe2\x28\xa1")));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_verb),
        cmocka_unit_test(test_case_and_spaces),
        cmocka_unit_test(test_command_errors),
        cmocka_unit_test(test_command_nul_cr_lf),
        cmocka_unit_test(test_command_length),
        cmocka_unit_test(test_mail_paths),
        cmocka_unit_test(test_mail_lengths),
        cmocka_unit_test(test_mail_params),
        cmocka_unit_test(test_mail_bad_params),
        cmocka_unit_test(test_mail_param_limits),
        cmocka_unit_test(test_mail_utf8),
        cmocka_unit_test(test_rcpt_paths),
        cmocka_unit_test(test_rcpt_params),
        cmocka_unit_test(test_rcpt_orcpt_length),
        cmocka_unit_test(test_bdat),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_base64_vectors),
        cmocka_unit_test(test_base64_strict),
        cmocka_unit_test(test_xtext),
        cmocka_unit_test(test_sasl_plain),
        cmocka_unit_test(test_utf8_valid),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
