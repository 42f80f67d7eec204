/*
 * storage/log.c
 * Process-wide key=value logging (see log.h). Every layer of Tern logs through here.
 *
 * A line is formatted into a stack buffer and handed to the kernel with one write(2), so
 * lines from different threads never interleave (LOG_LINE_MAX is below PIPE_BUF). The level
 * and the fd are the only state; they are process configuration and kept in atomics.
 * SECURITY: values from outside the process reach the log only through log_q(); control
 * bytes that slip through a caller's format anyway are replaced, so one event is one line.
 */
#include "log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_Q_SHOW   200 /* bytes of a value shown by log_q(), see log.h */
#define LOG_TS_MAX   32  /* "2026-11-22T10:00:00.123Z" is 24 bytes; room for year > 9999 */
#define LOG_CUT_MARK "..."

static atomic_int log_level = LOG_INFO;
static atomic_int log_fd = 2;

static const char *const log_level_names[] = {
    [LOG_DEBUG] = "debug", [LOG_INFO] = "info",   [LOG_WARN] = "warn",
    [LOG_ERROR] = "error", [LOG_FATAL] = "fatal",
};

void log_set_level(enum log_level level)
{
    atomic_store(&log_level, (int) level);
}

int log_parse_level(const char *name)
{
    if (name == NULL)
        return -1;
    for (int i = LOG_DEBUG; i <= LOG_ERROR; i++)
        if (strcmp(name, log_level_names[i]) == 0)
            return i;
    return -1;
}

void log_set_fd(int fd)
{
    atomic_store(&log_fd, fd);
}

/* log_ts() writes the current UTC time as 2026-11-22T10:00:00.123Z into OUT. */
static void log_ts(char out[LOG_TS_MAX])
{
    struct timespec now;
    struct tm tm;
    size_t n;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    n = strftime(out, LOG_TS_MAX, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, LOG_TS_MAX - n, ".%03uZ", (unsigned) (now.tv_nsec / 1000000) % 1000u);
}

/* log_write_all() writes LEN bytes to FD, retrying on EINTR and short writes. A failing log
 * has nowhere to report to, so errors are dropped. */
static void log_write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += n;
        len -= (size_t) n;
    }
}

void log_event(enum log_level level, const char *event, const char *fmt, ...)
{
    char line[LOG_LINE_MAX];
    char ts[LOG_TS_MAX];
    size_t len;
    int n;
    va_list ap;

    if ((int) level < atomic_load(&log_level))
        return;
    if ((unsigned) level > LOG_FATAL)
        level = LOG_FATAL;

    log_ts(ts);
    n = snprintf(line, sizeof(line), "ts=%s level=%s event=%s ", ts, log_level_names[level],
                 event ? event : "-");
    if (n < 0)
        return;
    len = (size_t) n < sizeof(line) - 1 ? (size_t) n : sizeof(line) - 1;

    /* The body goes after the prefix; the byte holding vsnprintf's NUL becomes '\n'. */
    va_start(ap, fmt);
    n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
    va_end(ap);
    if (n <= 0) {
        len--; /* empty body: drop the space after event= */
    } else if ((size_t) n >= sizeof(line) - len) {
        len = sizeof(line) - 1;
        memcpy(line + len - strlen(LOG_CUT_MARK), LOG_CUT_MARK, strlen(LOG_CUT_MARK));
    } else {
        len += (size_t) n;
    }

    /* Defence against a caller that formatted a raw outside value: keep one line. */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) line[i];
        if (c < 0x20 || c == 0x7f)
            line[i] = '?';
    }
    line[len++] = '\n';
    log_write_all(atomic_load(&log_fd), line, len);
}

/* log_safe() tells whether C may appear unquoted in a value: [A-Za-z0-9._:/@+-]. */
static bool log_safe(unsigned char c)
{
    if (c == '\0')
        return false; /* strchr() would find the terminator */
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("._:/@+-", c) != NULL;
}

/* log_esc_len() is the number of bytes C takes inside quotes. */
static size_t log_esc_len(unsigned char c)
{
    if (c == '"' || c == '\\')
        return 2;
    if (c < 0x20 || c >= 0x7f)
        return 4;
    return 1;
}

const char *log_q(char buf[LOG_Q_MAX], const char *s)
{
    static const char hex[] = "0123456789abcdef";
    /* Room kept at the end for the cut mark, the closing quote and the NUL. */
    const size_t tail = strlen(LOG_CUT_MARK) + 2;
    size_t shown = 0, o = 0, i;

    if (s == NULL)
        s = "";
    while (shown <= LOG_Q_SHOW && s[shown] != '\0' && log_safe((unsigned char) s[shown]))
        shown++;
    if (shown > 0 && shown <= LOG_Q_SHOW && s[shown] == '\0')
        return s;

    buf[o++] = '"';
    for (i = 0; i < LOG_Q_SHOW && s[i] != '\0'; i++) {
        unsigned char c = (unsigned char) s[i];
        size_t e = log_esc_len(c);
        if (o + e + tail > LOG_Q_MAX)
            break;
        if (e == 1) {
            buf[o++] = (char) c;
        } else if (e == 2) {
            buf[o++] = '\\';
            buf[o++] = (char) c;
        } else {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 0xf];
        }
    }
    if (s[i] != '\0') {
        memcpy(buf + o, LOG_CUT_MARK, strlen(LOG_CUT_MARK));
        o += strlen(LOG_CUT_MARK);
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}
