/*
 * tests/unit/storage/test_log.c
 * Unit tests of the key=value logger (storage/log.c): the exact line format and timestamp,
 * level filtering, cutting at LOG_LINE_MAX, one line per event even with hostile bytes,
 * log_q() quoting and escaping, and whole lines when several threads log at once.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define THREADS          4
#define LINES_PER_THREAD 500

/* capture: log lines go to a temporary file, read back whole. */
struct capture {
    char path[64];
    int fd;
};

static int setup(void **state)
{
    struct capture *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return -1;
    strcpy(c->path, "/tmp/tern_log_XXXXXX");
    c->fd = mkstemp(c->path);
    if (c->fd < 0)
        return -1;
    if (fcntl(c->fd, F_SETFL, O_APPEND) < 0)
        return -1;
    log_set_fd(c->fd);
    log_set_level(LOG_INFO);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct capture *c = *state;

    log_set_fd(2);
    close(c->fd);
    unlink(c->path);
    free(c);
    return 0;
}

/* slurp() returns everything logged so far (malloc'd, NUL-terminated) and its length. */
static char *slurp(struct capture *c, size_t *len)
{
    off_t end = lseek(c->fd, 0, SEEK_END);
    char *buf = malloc((size_t) end + 1);

    assert_non_null(buf);
    assert_int_equal(pread(c->fd, buf, (size_t) end, 0), end);
    buf[end] = '\0';
    *len = (size_t) end;
    return buf;
}

static void expect_match(const char *s, const char *re)
{
    regex_t rx;

    assert_int_equal(regcomp(&rx, re, REG_EXTENDED | REG_NOSUB), 0);
    if (regexec(&rx, s, 0, NULL, 0) != 0)
        fail_msg("\"%s\" does not match /%s/", s, re);
    regfree(&rx);
}

#define TS_RE "^ts=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "

static void test_format(void **state)
{
    struct capture *c = *state;
    size_t len;
    char *out;

    log_info("raft.start", "node=%d term=%llu", 1, 3ULL);
    out = slurp(c, &len);
    expect_match(out, TS_RE "level=info event=raft\\.start node=1 term=3\n$");
    free(out);
}

static void test_levels(void **state)
{
    struct capture *c = *state;
    size_t len;
    char *out;

    log_debug("a.debug", "x=1"); /* below the default level */
    log_warn("a.warn", "x=2");
    log_error("a.error", "x=3");
    log_event(LOG_FATAL, "a.fatal", "x=4");
    log_set_level(LOG_ERROR);
    log_info("a.info", "x=5");
    log_set_level(LOG_DEBUG);
    log_debug("a.debug", "x=6");
    out = slurp(c, &len);
    expect_match(out, TS_RE "level=warn event=a\\.warn x=2\n"
                            "ts=[^ ]+ level=error event=a\\.error x=3\n"
                            "ts=[^ ]+ level=fatal event=a\\.fatal x=4\n"
                            "ts=[^ ]+ level=debug event=a\\.debug x=6\n$");
    free(out);

    assert_int_equal(log_parse_level("debug"), LOG_DEBUG);
    assert_int_equal(log_parse_level("info"), LOG_INFO);
    assert_int_equal(log_parse_level("warn"), LOG_WARN);
    assert_int_equal(log_parse_level("error"), LOG_ERROR);
    assert_int_equal(log_parse_level("INFO"), -1);
    assert_int_equal(log_parse_level("verbose"), -1);
    assert_int_equal(log_parse_level(""), -1);
    assert_int_equal(log_parse_level(NULL), -1);
}

static void test_empty_body(void **state)
{
    struct capture *c = *state;
    size_t len;
    char *out;

    log_info("x.y", "%s", "");
    out = slurp(c, &len);
    expect_match(out, TS_RE "level=info event=x\\.y\n$"); /* no trailing space */
    free(out);
}

static void test_cut_long_line(void **state)
{
    struct capture *c = *state;
    char *big = malloc(5000), *out;
    size_t len;

    assert_non_null(big);
    memset(big, 'v', 4999);
    big[4999] = '\0';
    log_info("long", "v=%s", big);
    log_info("next", "ok=1");
    out = slurp(c, &len);
    char *nl = strchr(out, '\n');
    assert_non_null(nl);
    assert_int_equal(nl - out + 1, LOG_LINE_MAX);
    assert_memory_equal(nl - 3, "...", 3);
    expect_match(nl + 1, TS_RE "level=info event=next ok=1\n$");
    free(out);
    free(big);
}

/* A raw newline from a careless caller does not split the event into two lines. */
static void test_control_bytes_one_line(void **state)
{
    struct capture *c = *state;
    size_t len;
    char *out;

    log_warn("bad", "v=%s", "a\r\nlevel=fatal\x1b[0m");
    out = slurp(c, &len);
    expect_match(out, TS_RE "level=warn event=bad v=a\\?\\?level=fatal\\?\\[0m\n$");
    free(out);
}

static void test_q_safe(void **state)
{
    char buf[LOG_Q_MAX], s[202];
    const char *safe = "Alice.B-1+tag@example.com:25/x_y";

    assert_ptr_equal(log_q(buf, safe), safe);
    memset(s, 'a', 200);
    s[200] = '\0';
    assert_ptr_equal(log_q(buf, s), s); /* 200 bytes: shown as is */
    s[200] = 'a';
    s[201] = '\0';
    assert_ptr_equal(log_q(buf, s), buf); /* 201: cut, so quoted */
    assert_int_equal(strlen(buf), 1 + 200 + 3 + 1);
    assert_memory_equal(buf + 201, "...\"", 4);
}

static void test_q_escape(void **state)
{
    char buf[LOG_Q_MAX];

    assert_string_equal(log_q(buf, ""), "\"\"");
    assert_string_equal(log_q(buf, NULL), "\"\"");
    assert_string_equal(log_q(buf, "a b"), "\"a b\"");
    assert_string_equal(log_q(buf, "k=v"), "\"k=v\"");
    assert_string_equal(log_q(buf, "say \"hi\""), "\"say \\\"hi\\\"\"");
    assert_string_equal(log_q(buf, "back\\slash"), "\"back\\\\slash\"");
    assert_string_equal(log_q(buf, "l1\r\nl2\t"), "\"l1\\x0d\\x0al2\\x09\"");
    assert_string_equal(log_q(buf, "\x7f\x80\xff"), "\"\\x7f\\x80\\xff\"");
    assert_string_equal(log_q(buf, "caf\xc3\xa9"), "\"caf\\xc3\\xa9\"");
}

/* Worst case: every byte needs \xNN. The result fits BUF, is cut and still well formed. */
static void test_q_cut_to_fit(void **state)
{
    char buf[LOG_Q_MAX + 16], s[300];
    size_t n;

    memset(buf, 0x5a, sizeof(buf));
    memset(s, 0x01, sizeof(s) - 1);
    s[sizeof(s) - 1] = '\0';
    log_q(buf, s);
    n = strlen(buf);
    assert_true(n < LOG_Q_MAX);
    assert_int_equal(buf[0], '"');
    assert_memory_equal(buf + n - 4, "...\"", 4);
    assert_int_equal((n - 5) % 4, 0); /* whole escapes only */
    for (size_t i = LOG_Q_MAX; i < sizeof(buf); i++)
        assert_int_equal((unsigned char) buf[i], 0x5a);

    /* 60 bytes to escape need 242 bytes: they fit without a cut. */
    s[60] = '\0';
    log_q(buf, s);
    assert_int_equal(strlen(buf), 2 + 60 * 4);
    assert_int_equal(buf[strlen(buf) - 1], '"');
    assert_int_not_equal(buf[strlen(buf) - 2], '.');
}

static void *logger_thread(void *arg)
{
    int id = (int) (intptr_t) arg;
    char pad[300];

    memset(pad, 'p', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    for (int i = 0; i < LINES_PER_THREAD; i++)
        log_info("t.line", "thread=%d i=%d pad=%s end=1", id, i, pad + (i % 200));
    return NULL;
}

/* Lines written from several threads at once come out whole, none lost. */
static void test_threads_whole_lines(void **state)
{
    struct capture *c = *state;
    pthread_t th[THREADS];
    int seen[THREADS] = {0};
    size_t len;
    char *out, *line, *save = NULL;

    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, logger_thread, (void *) (intptr_t) t), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    out = slurp(c, &len);
    assert_int_equal(out[len - 1], '\n');
    for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int t, i;
        assert_int_equal(strncmp(line, "ts=", 3), 0);
        assert_int_equal(sscanf(strstr(line, "thread="), "thread=%d i=%d", &t, &i), 2);
        assert_true(t >= 0 && t < THREADS);
        assert_int_equal(i, seen[t]); /* each thread's lines in its own order */
        seen[t]++;
        assert_string_equal(line + strlen(line) - 6, " end=1");
    }
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(seen[t], LINES_PER_THREAD);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_levels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cut_long_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_control_bytes_one_line, setup, teardown),
        cmocka_unit_test(test_q_safe),
        cmocka_unit_test(test_q_escape),
        cmocka_unit_test(test_q_cut_to_fit),
        cmocka_unit_test_setup_teardown(test_threads_whole_lines, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
