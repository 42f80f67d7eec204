/*
 * tests/unit/pop3/test_pop3_parse.c
 * POP3 command lines: keywords, arguments, PASS's whole rest, limits and bad bytes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "pop3_parse.h"

static int parse(const char *s, struct pop3_cmd *c)
{
    return pop3_parse(s, strlen(s), c);
}

static void test_shapes(void **state)
{
    (void) state;
    struct pop3_cmd c;
    assert_int_equal(parse("stat", &c), 0);
    assert_string_equal(c.verb, "STAT");
    assert_int_equal(c.nargs, 0);
    assert_int_equal(parse("TOP 3 10", &c), 0);
    assert_string_equal(c.verb, "TOP");
    assert_int_equal(c.nargs, 2);
    assert_string_equal(c.args[0], "3");
    assert_string_equal(c.args[1], "10");
    assert_int_equal(parse("PASS  two  spaces ", &c), 0);
    assert_string_equal(c.rest, " two  spaces "); /* a password is taken as sent */
    assert_int_equal(parse("LIST 1 2 3", &c), 0);
    assert_int_equal(c.nargs, 2);
    assert_int_equal(c.extra, 1);
}

static void test_refused(void **state)
{
    (void) state;
    struct pop3_cmd c;
    assert_int_equal(parse("", &c), -1);
    assert_int_equal(parse(" STAT", &c), -1);
    assert_int_equal(parse("ST4T", &c), -1);
    assert_int_equal(parse("AVERYLONGKEYWORDXX", &c), -1);
    assert_int_equal(pop3_parse("RETR\0 1", 7, &c), -1);
    assert_int_equal(parse("RETR \x01", &c), -1);
    char big[300];
    memset(big, 'A', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(parse(big, &c), -1);
    memcpy(big, "USER ", 5);
    big[253] = 0; /* 253 + CRLF = 255: the longest allowed */
    assert_int_equal(parse(big, &c), 0);
    big[253] = 'x'; /* one more octet: 256 with CRLF */
    big[254] = 0;
    assert_int_equal(parse(big, &c), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
