/*
 * storage/log.h
 * Process-wide logging: one line per event, as key=value pairs.
 *
 * It lives in the lowest layer because every layer logs. A line looks like
 *   ts=2026-11-22T10:00:00.123Z level=info event=raft.start node=1 term=3
 * Values that contain spaces, quotes, '=' or control bytes are quoted and escaped by
 * log_kv_str(), so a line is always one line however hostile the value.
 * Thread-safe: a line is formatted into a stack buffer and written with one write(2).
 */
#ifndef TERN_LOG_H
#define TERN_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_FATAL };

#define LOG_LINE_MAX 2048 /* longer lines are cut and end with "..." */

/* log_set_level() sets the lowest level written (default LOG_INFO). */
void log_set_level(enum log_level level);
/* log_parse_level() maps "debug"/"info"/"warn"/"error" to a level; -1 if unknown. */
int log_parse_level(const char *name);
/* log_set_fd() sets where lines go (default 2, stderr). */
void log_set_fd(int fd);

/*
 * log_event() writes "ts=... level=... event=EVENT " followed by FMT, a printf format that
 * the caller writes as key=value pairs ("node=%llu term=%llu"). Use log_q() for any value
 * that came from outside the process.
 */
void log_event(enum log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * log_q() quotes S for use as a value: returns S itself when it is 1 to 200 safe bytes
 * [A-Za-z0-9._:/@+-], else writes "..." with \" \\ \xNN escapes into BUF (cut to fit) and
 * returns BUF. At most 200 bytes of S are shown; a cut value ends with ... inside the quotes.
 * An empty (or NULL) S gives "" so that the pair still reads as key="".
 */
#define LOG_Q_MAX 256
const char *log_q(char buf[LOG_Q_MAX], const char *s);

#define log_info(ev, ...)  log_event(LOG_INFO, ev, __VA_ARGS__)
#define log_warn(ev, ...)  log_event(LOG_WARN, ev, __VA_ARGS__)
#define log_error(ev, ...) log_event(LOG_ERROR, ev, __VA_ARGS__)
#define log_debug(ev, ...) log_event(LOG_DEBUG, ev, __VA_ARGS__)

#endif
