/*
 * benchmarks/imap-load.c
 * IMAP load generator (RFC 3501 / 9051) for loopback servers. Three modes:
 *
 *   load (default)  --clients N logged-in clients, one thread each, one command at a time,
 *                   each drawing from a fixed mix: SELECT INBOX, FETCH (FLAGS ENVELOPE) of a
 *                   20-message range, FETCH BODY.PEEK[HEADER] of a 20-message range, FETCH
 *                   BODY[] of one message, STORE +FLAGS/-FLAGS, SEARCH (UNSEEN, FROM x,
 *                   SUBJECT y), NOOP, and IDLE followed at once by DONE. Prints commands/s
 *                   and p50/p99 per command type. --mix changes the weights of the mix.
 *   --fill M        APPEND M messages of --size bytes into the INBOX of each user, pipelined
 *                   with LITERAL+ (RFC 7888) in batches; the content depends only on the user
 *                   and the message number, so two servers filled this way hold the same mail.
 *   --idle N        open N connections that LOGIN, SELECT INBOX and IDLE, print
 *                   "imap_idle ready=N", then hold them until --hold seconds pass or SIGTERM.
 *
 * Users are <prefix><i>@<domain> for i in 1..--users, all with --password; client k uses
 * user (k mod users) + 1. Bounded: --duration (max 3600 s), --fill (max 100000 per user),
 * --idle (max 20000), every connect/read/write times out after IL_IO_TIMEOUT_S, and only
 * loopback targets are accepted.
 * Build: cc -O2 -o benchmarks/imap-load benchmarks/imap-load.c -lpthread
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define IL_IO_TIMEOUT_S  30
#define IL_CLIENTS_MAX   1000
#define IL_USERS_MAX     10000
#define IL_DURATION_MAX  3600
#define IL_FILL_MAX      100000
#define IL_IDLE_MAX      20000
#define IL_IDLE_THREADS  16
#define IL_BATCH         32          /* APPENDs in flight per fill connection */
#define IL_RANGE         20          /* messages per FETCH range */
#define IL_SIZE_MIN      512
#define IL_SIZE_MAX      (1 << 20)
#define IL_LINE_MAX      (1 << 20)   /* one response line, literals excluded */
#define IL_SENDERS       20          /* distinct From addresses in the fill */
#define IL_TOPICS        10          /* distinct subject topics in the fill */

enum il_type { T_SELECT, T_FETCH_ENV, T_FETCH_HDR, T_FETCH_BODY, T_STORE, T_SEARCH, T_NOOP,
               T_IDLE, T_COUNT };
static const char *const il_names[T_COUNT] = {"select", "fetch_env", "fetch_hdr", "fetch_body",
                                              "store", "search", "noop", "idle"};
/* the mix, in percent (sums to 100); --mix name=weight,... replaces it */
static unsigned il_weight[T_COUNT] = {5, 15, 10, 15, 20, 15, 10, 10};
static unsigned il_weight_sum = 100;

struct il_config {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    const char *host, *port, *password, *prefix, *domain;
    unsigned users, clients, duration, idle, hold, size;
    unsigned fill;
};

struct il_conn {
    int fd;
    char *buf;          /* received bytes not yet consumed: buf[off..len) */
    size_t off, len, cap;
    char *line;         /* last logical line (literals replaced by their size) */
    size_t linelen, linecap;
    unsigned tagn;
    uint64_t bytes_in;
    unsigned exists;
};

struct il_worker {
    pthread_t thread;
    unsigned id;
    uint64_t rng;
    struct il_conn c;
    uint32_t *lat[T_COUNT];
    size_t nlat[T_COUNT], caplat[T_COUNT];
    uint64_t no[T_COUNT], errors, reconnects;
    unsigned done; /* fill: messages appended; idle: connections opened */
    char last_error[256];
};

static struct il_config cfg;
static struct timespec t0;
static volatile sig_atomic_t il_stop;

static double il_elapsed(void)
{
    struct timespec n;
    clock_gettime(CLOCK_MONOTONIC, &n);
    return (double) (n.tv_sec - t0.tv_sec) + (n.tv_nsec - t0.tv_nsec) / 1e9;
}

static uint64_t il_now_us(void)
{
    struct timespec n;
    clock_gettime(CLOCK_MONOTONIC, &n);
    return (uint64_t) n.tv_sec * 1000000u + (uint64_t) n.tv_nsec / 1000u;
}

static uint64_t il_rand(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static void *il_xalloc(size_t n)
{
    void *p = calloc(1, n);
    if (p == NULL) {
        fprintf(stderr, "imap-load: out of memory\n");
        exit(2);
    }
    return p;
}

static void il_err(struct il_worker *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->last_error, sizeof w->last_error, fmt, ap);
    va_end(ap);
}

/* ---- connection and response reading ---- */

static void il_close(struct il_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->off = c->len = 0;
}

static int il_connect(struct il_conn *c)
{
    struct timeval tv = {.tv_sec = IL_IO_TIMEOUT_S};
    int one = 1;
    int fd = socket(cfg.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
        connect(fd, (struct sockaddr *) &cfg.addr, cfg.addrlen) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    c->fd = fd;
    c->off = c->len = 0;
    if (c->buf == NULL) {
        c->cap = 65536;
        c->buf = il_xalloc(c->cap);
        c->linecap = 4096;
        c->line = il_xalloc(c->linecap);
    }
    return 0;
}

static int il_write(struct il_conn *c, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(c->fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t) k;
    }
    return 0;
}

/* il_fill(): read more bytes; -1 on error, timeout or EOF */
static int il_fill(struct il_conn *c)
{
    if (c->off > 0) {
        memmove(c->buf, c->buf + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    }
    if (c->len == c->cap) {
        c->cap *= 2;
        c->buf = realloc(c->buf, c->cap);
        if (c->buf == NULL) {
            fprintf(stderr, "imap-load: out of memory\n");
            exit(2);
        }
    }
    for (;;) {
        ssize_t k = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k == 0)
            errno = ECONNRESET;
        if (k <= 0)
            return -1;
        c->len += (size_t) k;
        c->bytes_in += (uint64_t) k;
        return 0;
    }
}

static void il_line_add(struct il_conn *c, const char *p, size_t n)
{
    if (c->linelen + n + 1 > c->linecap) {
        while (c->linelen + n + 1 > c->linecap)
            c->linecap *= 2;
        c->line = realloc(c->line, c->linecap);
        if (c->line == NULL) {
            fprintf(stderr, "imap-load: out of memory\n");
            exit(2);
        }
    }
    memcpy(c->line + c->linelen, p, n);
    c->linelen += n;
    c->line[c->linelen] = '\0';
}

/* il_read_line(): one logical response line into c->line, without CRLF; a literal
 * {N} at the end of a physical line is skipped (its N bytes are consumed, not kept) and
 * the line continues after it. 0, or -1 on I/O error or an overlong line. */
static int il_read_line(struct il_conn *c)
{
    c->linelen = 0;
    c->line[0] = '\0';
    for (;;) {
        char *nl = memchr(c->buf + c->off, '\n', c->len - c->off);
        if (nl == NULL) {
            if (c->len - c->off > IL_LINE_MAX || il_fill(c) != 0)
                return -1;
            continue;
        }
        size_t n = (size_t) (nl - (c->buf + c->off));
        size_t keep = n > 0 && c->buf[c->off + n - 1] == '\r' ? n - 1 : n;
        il_line_add(c, c->buf + c->off, keep);
        c->off += n + 1;
        /* literal? */
        if (c->linelen >= 3 && c->line[c->linelen - 1] == '}') {
            char *open = strrchr(c->line, '{');
            if (open != NULL) {
                char *end;
                unsigned long long lit = strtoull(open + 1, &end, 10);
                if (end != open + 1 && (*end == '}' || *end == '+')) {
                    while (c->len - c->off < lit) {
                        lit -= c->len - c->off;
                        c->off = c->len;
                        if (il_fill(c) != 0)
                            return -1;
                    }
                    c->off += lit;
                    continue;
                }
            }
        }
        return 0;
    }
}

/* il_cmd(): send "<tag> <cmd>\r\n" and read to its tagged response. Returns 0 for OK,
 * 1 for NO or BAD (the line is left in c->line), -1 on I/O error. Tracks EXISTS. */
static int il_cmd(struct il_conn *c, const char *fmt, ...)
{
    char cmd[1024], tag[16];
    va_list ap;
    int tl = snprintf(tag, sizeof tag, "a%u", ++c->tagn);
    int h = snprintf(cmd, sizeof cmd, "%s ", tag);
    va_start(ap, fmt);
    h += vsnprintf(cmd + h, sizeof cmd - (size_t) h - 2, fmt, ap);
    va_end(ap);
    memcpy(cmd + h, "\r\n", 2);
    if (il_write(c, cmd, (size_t) h + 2) != 0)
        return -1;
    for (;;) {
        if (il_read_line(c) != 0)
            return -1;
        if (c->line[0] == '*') {
            unsigned n;
            char w[16];
            if (sscanf(c->line, "* %u %15s", &n, w) == 2 && strcasecmp(w, "EXISTS") == 0)
                c->exists = n;
            continue;
        }
        if (strncmp(c->line, tag, (size_t) tl) == 0 && c->line[tl] == ' ')
            return strncasecmp(c->line + tl + 1, "OK", 2) == 0 ? 0 : 1;
    }
}

/* il_login(): connect, greeting, LOGIN user; optionally SELECT INBOX. 0 or -1. */
static int il_login(struct il_worker *w, unsigned user, bool select)
{
    struct il_conn *c = &w->c;
    if (il_connect(c) != 0) {
        il_err(w, "connect %s:%s: %s", cfg.host, cfg.port, strerror(errno));
        return -1;
    }
    if (il_read_line(c) != 0 || strncmp(c->line, "* OK", 4) != 0) {
        il_err(w, "greeting: %s", c->linelen ? c->line : strerror(errno));
        il_close(c);
        return -1;
    }
    int r = il_cmd(c, "LOGIN %s%u@%s \"%s\"", cfg.prefix, user, cfg.domain, cfg.password);
    if (r != 0) {
        il_err(w, "LOGIN %s%u@%s: %s", cfg.prefix, user, cfg.domain,
               r < 0 ? strerror(errno) : c->line);
        il_close(c);
        return -1;
    }
    if (select && (r = il_cmd(c, "SELECT INBOX")) != 0) {
        il_err(w, "SELECT: %s", r < 0 ? strerror(errno) : c->line);
        il_close(c);
        return -1;
    }
    return 0;
}

/* ---- load mode ---- */

static void il_lat_push(struct il_worker *w, enum il_type t, uint64_t us)
{
    if (w->nlat[t] == w->caplat[t]) {
        w->caplat[t] = w->caplat[t] ? w->caplat[t] * 2 : 4096;
        w->lat[t] = realloc(w->lat[t], w->caplat[t] * sizeof *w->lat[t]);
        if (w->lat[t] == NULL) {
            fprintf(stderr, "imap-load: out of memory\n");
            exit(2);
        }
    }
    w->lat[t][w->nlat[t]++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t) us;
}

static enum il_type il_pick(struct il_worker *w)
{
    unsigned r = (unsigned) (il_rand(&w->rng) % il_weight_sum), acc = 0;
    for (int t = 0; t < T_COUNT; t++) {
        acc += il_weight[t];
        if (r < acc)
            return (enum il_type) t;
    }
    return T_NOOP;
}

/* il_idle(): IDLE, wait for the continuation, DONE, tagged OK. 0, 1 or -1 as il_cmd. */
static int il_idle(struct il_conn *c)
{
    char cmd[32];
    int tl = snprintf(cmd, sizeof cmd, "a%u", ++c->tagn);
    memcpy(cmd + tl, " IDLE\r\n", 8);
    if (il_write(c, cmd, strlen(cmd)) != 0)
        return -1;
    bool sent_done = false;
    for (;;) {
        if (il_read_line(c) != 0)
            return -1;
        if (c->line[0] == '+' && !sent_done) {
            if (il_write(c, "DONE\r\n", 6) != 0)
                return -1;
            sent_done = true;
            continue;
        }
        if (c->line[0] == '*')
            continue;
        if (strncmp(c->line, cmd, (size_t) tl) == 0 && c->line[tl] == ' ')
            return strncasecmp(c->line + tl + 1, "OK", 2) == 0 && sent_done ? 0 : 1;
    }
}

static void *il_load_thread(void *arg)
{
    struct il_worker *w = arg;
    unsigned user = w->id % cfg.users + 1;
    while (!il_stop && il_elapsed() < cfg.duration) {
        if (w->c.fd < 0) {
            if (il_login(w, user, true) != 0) {
                w->errors++;
                usleep(20000);
                continue;
            }
            w->reconnects++;
        }
        enum il_type t = il_pick(w);
        unsigned n = w->c.exists;
        if (n == 0 && t != T_SELECT && t != T_NOOP && t != T_IDLE && t != T_SEARCH)
            t = T_NOOP;
        unsigned a = n ? (unsigned) (il_rand(&w->rng) % n) + 1 : 0;
        unsigned b = a + IL_RANGE - 1 > n ? n : a + IL_RANGE - 1;
        unsigned k = (unsigned) (il_rand(&w->rng) % 1000);
        uint64_t s = il_now_us();
        int r;
        switch (t) {
        case T_SELECT: r = il_cmd(&w->c, "SELECT INBOX"); break;
        case T_FETCH_ENV: r = il_cmd(&w->c, "FETCH %u:%u (FLAGS ENVELOPE)", a, b); break;
        case T_FETCH_HDR: r = il_cmd(&w->c, "FETCH %u:%u (UID BODY.PEEK[HEADER])", a, b); break;
        case T_FETCH_BODY: r = il_cmd(&w->c, "FETCH %u BODY[]", a); break;
        case T_STORE:
            r = il_cmd(&w->c, "STORE %u %cFLAGS (%s)", a, k & 1 ? '+' : '-',
                       k & 2 ? "\\Flagged" : "\\Seen");
            break;
        case T_SEARCH:
            if (k % 3 == 0)
                r = il_cmd(&w->c, "SEARCH UNSEEN");
            else if (k % 3 == 1)
                r = il_cmd(&w->c, "SEARCH FROM \"sender%u@\"", k % IL_SENDERS);
            else
                r = il_cmd(&w->c, "SEARCH SUBJECT \"topic%u\"", k % IL_TOPICS);
            break;
        case T_IDLE: r = il_idle(&w->c); break;
        default: r = il_cmd(&w->c, "NOOP"); break;
        }
        uint64_t e = il_now_us();
        if (r < 0) {
            /* a command cut off by the end of the run is not an error */
            if (il_stop)
                break;
            w->errors++;
            il_err(w, "%s: %s", il_names[t], strerror(errno));
            il_close(&w->c);
            continue;
        }
        if (r > 0) {
            w->no[t]++;
            il_err(w, "%s: %s", il_names[t], w->c.line);
        }
        il_lat_push(w, t, e - s);
    }
    if (w->c.fd >= 0) {
        il_cmd(&w->c, "LOGOUT");
        il_close(&w->c);
    }
    return NULL;
}

static int il_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;
    return x < y ? -1 : x > y;
}

static double il_pct(const uint32_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t) (p / 100.0 * (double) n + 0.999999);
    if (i < 1)
        i = 1;
    if (i > n)
        i = n;
    return v[i - 1] / 1000.0;
}

static double il_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double) ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double) ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static int il_run_load(void)
{
    struct il_worker *ws = il_xalloc(cfg.clients * sizeof *ws);
    for (unsigned i = 0; i < cfg.clients; i++) {
        ws[i].id = i;
        ws[i].rng = 0x9e3779b97f4a7c15ull * (i + 1);
        ws[i].c.fd = -1;
    }
    /* log in everybody before the clock starts */
    for (unsigned i = 0; i < cfg.clients; i++)
        if (il_login(&ws[i], i % cfg.users + 1, true) != 0) {
            fprintf(stderr, "imap-load: client %u: %s\n", i, ws[i].last_error);
            return 1;
        }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double cpu0 = il_cpu_s();
    for (unsigned i = 0; i < cfg.clients; i++)
        if (pthread_create(&ws[i].thread, NULL, il_load_thread, &ws[i]) != 0) {
            fprintf(stderr, "imap-load: pthread_create failed\n");
            exit(2);
        }
    for (unsigned i = 0; i < cfg.clients; i++)
        pthread_join(ws[i].thread, NULL);
    double el = il_elapsed();
    double cpu = il_cpu_s() - cpu0;

    uint64_t total = 0, errors = 0, nos = 0, bytes = 0;
    size_t n[T_COUNT] = {0};
    uint32_t *all[T_COUNT];
    for (int t = 0; t < T_COUNT; t++) {
        for (unsigned i = 0; i < cfg.clients; i++)
            n[t] += ws[i].nlat[t];
        all[t] = il_xalloc((n[t] + 1) * sizeof *all[t]);
        size_t k = 0;
        for (unsigned i = 0; i < cfg.clients; i++) {
            memcpy(all[t] + k, ws[i].lat[t], ws[i].nlat[t] * sizeof *all[t]);
            k += ws[i].nlat[t];
        }
        qsort(all[t], n[t], sizeof *all[t], il_cmp_u32);
        total += n[t];
    }
    uint32_t *every = il_xalloc((total + 1) * sizeof *every);
    size_t k = 0;
    for (int t = 0; t < T_COUNT; t++) {
        memcpy(every + k, all[t], n[t] * sizeof *every);
        k += n[t];
    }
    qsort(every, total, sizeof *every, il_cmp_u32);
    const char *last = "";
    for (unsigned i = 0; i < cfg.clients; i++) {
        errors += ws[i].errors;
        for (int t = 0; t < T_COUNT; t++)
            nos += ws[i].no[t];
        bytes += ws[i].c.bytes_in;
        if (ws[i].last_error[0])
            last = ws[i].last_error;
    }
    double rate = el > 0 ? (double) total / el : 0;
    printf("imap_load host=%s port=%s clients=%u users=%u elapsed_s=%.2f commands=%" PRIu64
           " rate=%.1f errors=%" PRIu64 " no_bad=%" PRIu64 " p50_ms=%.2f p99_ms=%.2f"
           " mb_in=%.1f cpu_s=%.2f",
           cfg.host, cfg.port, cfg.clients, cfg.users, el, total, rate, errors, nos,
           il_pct(every, total, 50), il_pct(every, total, 99), bytes / 1e6, cpu);
    for (int t = 0; t < T_COUNT; t++)
        printf(" %s_n=%zu %s_p50_ms=%.2f %s_p99_ms=%.2f", il_names[t], n[t], il_names[t],
               il_pct(all[t], n[t], 50), il_names[t], il_pct(all[t], n[t], 99));
    printf("\n");
    printf("%s:%s x%u clients: %" PRIu64 " commands in %.1f s = %.1f cmd/s, %" PRIu64
           " errors, %" PRIu64 " NO/BAD; p50 %.2f ms, p99 %.2f ms\n",
           cfg.host, cfg.port, cfg.clients, total, el, rate, errors, nos,
           il_pct(every, total, 50), il_pct(every, total, 99));
    for (int t = 0; t < T_COUNT; t++)
        printf("  %-10s %8zu  p50 %8.2f ms  p99 %8.2f ms\n", il_names[t], n[t],
               il_pct(all[t], n[t], 50), il_pct(all[t], n[t], 99));
    if (last[0])
        fprintf(stderr, "imap-load: last error: %s\n", last);
    return total > 0 ? 0 : 1;
}

/* ---- fill mode ---- */

/* il_message(): message number m of user u, exactly cfg.size bytes, the same on every
 * run. Every third message is appended with \Seen. */
static size_t il_message(char *buf, unsigned u, unsigned m)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint64_t rng = ((uint64_t) u << 32 | m) * 0x9e3779b97f4a7c15ull + 1;
    size_t size = cfg.size;
    int h = snprintf(buf, size + 1,
                     "From: \"Sender %u\" <sender%u@example.net>\r\n"
                     "To: <%s%u@%s>\r\n"
                     "Subject: bench topic%u message %u\r\n"
                     "Date: Sun, %02u Nov 2026 %02u:%02u:00 +0000\r\n"
                     "Message-ID: <%u.%u@imap-load.example.net>\r\n"
                     "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
                     m % IL_SENDERS, m % IL_SENDERS, cfg.prefix, u, cfg.domain, m % IL_TOPICS, m,
                     1 + m % 21, m / 60 % 24, m % 60, u, m);
    size_t off = (size_t) h;
    while (off < size) {
        size_t room = size - off;
        size_t len = room >= 80 ? 76 : room - 2;
        for (size_t i = 0; i < len; i++)
            buf[off + i] = b64[il_rand(&rng) % 64];
        memcpy(buf + off + len, "\r\n", 2);
        off += len + 2;
    }
    return off;
}

static void *il_fill_thread(void *arg)
{
    struct il_worker *w = arg;
    unsigned u = w->id + 1;
    if (il_login(w, u, false) != 0) {
        w->errors++;
        return NULL;
    }
    char *msg = il_xalloc(cfg.size + 1);
    size_t cap = IL_BATCH * (cfg.size + 128);
    char *out = il_xalloc(cap);
    for (unsigned m = 1; m <= cfg.fill && !il_stop;) {
        unsigned first = w->c.tagn + 1, cnt = 0;
        size_t o = 0;
        for (; cnt < IL_BATCH && m <= cfg.fill; cnt++, m++) {
            size_t len = il_message(msg, u, m);
            o += (size_t) snprintf(out + o, cap - o, "a%u APPEND INBOX %s{%zu+}\r\n",
                                   ++w->c.tagn, m % 3 == 0 ? "(\\Seen) " : "", len);
            memcpy(out + o, msg, len);
            o += len;
            memcpy(out + o, "\r\n", 2);
            o += 2;
        }
        if (il_write(&w->c, out, o) != 0) {
            w->errors++;
            il_err(w, "write: %s", strerror(errno));
            break;
        }
        /* tagged responses come back in order */
        unsigned got = 0;
        while (got < cnt) {
            if (il_read_line(&w->c) != 0) {
                w->errors++;
                il_err(w, "read: %s", strerror(errno));
                goto out;
            }
            if (w->c.line[0] != 'a')
                continue;
            unsigned tag = (unsigned) strtoul(w->c.line + 1, NULL, 10);
            if (tag < first || tag >= first + cnt)
                continue;
            got++;
            if (strstr(w->c.line, " OK") == NULL) {
                w->errors++;
                il_err(w, "APPEND: %s", w->c.line);
            } else {
                w->done++;
            }
        }
    }
out:
    if (w->c.fd >= 0) {
        il_cmd(&w->c, "LOGOUT");
        il_close(&w->c);
    }
    free(msg);
    free(out);
    return NULL;
}

static int il_run_fill(void)
{
    struct il_worker *ws = il_xalloc(cfg.users * sizeof *ws);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 0; i < cfg.users; i++) {
        ws[i].id = i;
        ws[i].c.fd = -1;
        if (pthread_create(&ws[i].thread, NULL, il_fill_thread, &ws[i]) != 0) {
            fprintf(stderr, "imap-load: pthread_create failed\n");
            exit(2);
        }
    }
    uint64_t done = 0, errors = 0;
    for (unsigned i = 0; i < cfg.users; i++) {
        pthread_join(ws[i].thread, NULL);
        done += ws[i].done;
        errors += ws[i].errors;
        if (ws[i].last_error[0])
            fprintf(stderr, "imap-load: fill user %u: %s\n", i + 1, ws[i].last_error);
    }
    double el = il_elapsed();
    printf("imap_fill host=%s port=%s users=%u per_user=%u size=%u appended=%" PRIu64
           " errors=%" PRIu64 " elapsed_s=%.2f rate=%.1f\n",
           cfg.host, cfg.port, cfg.users, cfg.fill, cfg.size, done, errors, el,
           el > 0 ? done / el : 0);
    return done == (uint64_t) cfg.users * cfg.fill && errors == 0 ? 0 : 1;
}

/* ---- idle mode ---- */

struct il_idle_thread {
    pthread_t thread;
    unsigned first, count, opened, errors;
    int *fds;
    char last_error[256];
};

static void *il_idle_thread_fn(void *arg)
{
    struct il_idle_thread *it = arg;
    struct il_worker w;
    memset(&w, 0, sizeof w);
    w.c.fd = -1;
    for (unsigned i = 0; i < it->count && !il_stop; i++) {
        unsigned k = it->first + i;
        if (il_login(&w, k % cfg.users + 1, true) != 0) {
            it->errors++;
            snprintf(it->last_error, sizeof it->last_error, "%s", w.last_error);
            break;
        }
        if (il_write(&w.c, "i IDLE\r\n", 8) != 0 || il_read_line(&w.c) != 0 ||
            w.c.line[0] != '+') {
            it->errors++;
            snprintf(it->last_error, sizeof it->last_error, "IDLE: %s",
                     w.c.linelen ? w.c.line : strerror(errno));
            il_close(&w.c);
            break;
        }
        it->fds[it->opened++] = w.c.fd; /* kept open; its buffer is reused */
        w.c.fd = -1;
    }
    free(w.c.buf);
    free(w.c.line);
    return NULL;
}

static void il_on_signal(int sig)
{
    (void) sig;
    il_stop = 1;
}

static int il_run_idle(void)
{
    unsigned nt = cfg.idle < IL_IDLE_THREADS ? cfg.idle : IL_IDLE_THREADS;
    struct il_idle_thread *ts = il_xalloc(nt * sizeof *ts);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 0, first = 0; i < nt; i++) {
        ts[i].first = first;
        ts[i].count = cfg.idle / nt + (i < cfg.idle % nt);
        first += ts[i].count;
        ts[i].fds = il_xalloc(ts[i].count * sizeof(int));
        if (pthread_create(&ts[i].thread, NULL, il_idle_thread_fn, &ts[i]) != 0) {
            fprintf(stderr, "imap-load: pthread_create failed\n");
            exit(2);
        }
    }
    unsigned opened = 0, errors = 0;
    for (unsigned i = 0; i < nt; i++) {
        pthread_join(ts[i].thread, NULL);
        opened += ts[i].opened;
        errors += ts[i].errors;
        if (ts[i].last_error[0])
            fprintf(stderr, "imap-load: idle: %s\n", ts[i].last_error);
    }
    printf("imap_idle ready=%u wanted=%u errors=%u setup_s=%.2f\n", opened, cfg.idle, errors,
           il_elapsed());
    fflush(stdout);
    double until = il_elapsed() + cfg.hold;
    while (!il_stop && il_elapsed() < until)
        usleep(100000);
    for (unsigned i = 0; i < nt; i++)
        for (unsigned j = 0; j < ts[i].opened; j++)
            close(ts[i].fds[j]);
    return opened == cfg.idle ? 0 : 1;
}

/* ---- main ---- */

static void il_usage(FILE *f)
{
    fprintf(f,
            "usage: imap-load [--host H] [--port P] [--users N] [--user-prefix u]\n"
            "                 [--domain D] [--password PW] [--clients N] [--duration S]\n"
            "                 [--mix select=5,fetch_env=15,...]\n"
            "       imap-load --fill M [--size BYTES] ...   (APPEND M messages per user)\n"
            "       imap-load --idle N [--hold S] ...       (hold N IDLE connections)\n");
}

static bool il_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *) ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss->ss_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *) ss)->sin6_addr);
    return false;
}

/* il_mix(): parse --mix "search=1,noop=1"; unnamed types get weight 0 */
static void il_mix(const char *arg)
{
    char *copy = strdup(arg), *save = NULL;
    memset(il_weight, 0, sizeof il_weight);
    il_weight_sum = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        int t;
        if (eq == NULL)
            goto bad;
        *eq = '\0';
        for (t = 0; t < T_COUNT && strcmp(tok, il_names[t]) != 0; t++)
            ;
        if (t == T_COUNT || atoi(eq + 1) < 0 || atoi(eq + 1) > 1000)
            goto bad;
        il_weight[t] = (unsigned) atoi(eq + 1);
        il_weight_sum += il_weight[t];
    }
    free(copy);
    if (il_weight_sum > 0)
        return;
bad:
    fprintf(stderr, "imap-load: --mix wants name=weight,... with names select fetch_env "
                    "fetch_hdr fetch_body store search noop idle\n");
    exit(2);
}

static unsigned il_uint(const char *opt, const char *v, unsigned lo, unsigned hi)
{
    char *end;
    errno = 0;
    unsigned long x = strtoul(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "imap-load: %s must be %u..%u\n", opt, lo, hi);
        exit(2);
    }
    return (unsigned) x;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", 1, 0, 'H'},     {"port", 1, 0, 'p'},        {"users", 1, 0, 'u'},
        {"password", 1, 0, 'w'}, {"clients", 1, 0, 'c'},     {"duration", 1, 0, 'd'},
        {"fill", 1, 0, 'f'},     {"size", 1, 0, 's'},        {"idle", 1, 0, 'i'},
        {"hold", 1, 0, 'o'},     {"user-prefix", 1, 0, 'x'}, {"domain", 1, 0, 'D'},
        {"mix", 1, 0, 'm'},      {"help", 0, 0, 'h'},        {0, 0, 0, 0}};
    cfg.host = "127.0.0.1";
    cfg.port = "143";
    cfg.users = 10;
    cfg.password = "bench-pw";
    cfg.prefix = "u";
    cfg.domain = "example.test";
    cfg.clients = 20;
    cfg.duration = 10;
    cfg.hold = 60;
    cfg.size = 4096;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'H': cfg.host = optarg; break;
        case 'p': cfg.port = optarg; break;
        case 'u': cfg.users = il_uint("--users", optarg, 1, IL_USERS_MAX); break;
        case 'w': cfg.password = optarg; break;
        case 'c': cfg.clients = il_uint("--clients", optarg, 1, IL_CLIENTS_MAX); break;
        case 'd': cfg.duration = il_uint("--duration", optarg, 1, IL_DURATION_MAX); break;
        case 'f': cfg.fill = il_uint("--fill", optarg, 1, IL_FILL_MAX); break;
        case 's': cfg.size = il_uint("--size", optarg, IL_SIZE_MIN, IL_SIZE_MAX); break;
        case 'i': cfg.idle = il_uint("--idle", optarg, 1, IL_IDLE_MAX); break;
        case 'o': cfg.hold = il_uint("--hold", optarg, 0, IL_DURATION_MAX); break;
        case 'x': cfg.prefix = optarg; break;
        case 'D': cfg.domain = optarg; break;
        case 'm': il_mix(optarg); break;
        case 'h': il_usage(stdout); return 0;
        default: il_usage(stderr); return 2;
        }
    }
    if (optind != argc || strpbrk(cfg.password, "\"\\\r\n") != NULL) {
        il_usage(stderr);
        return 2;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    int rv = getaddrinfo(cfg.host, cfg.port, &hints, &ai);
    if (rv != 0) {
        fprintf(stderr, "imap-load: %s:%s: %s\n", cfg.host, cfg.port, gai_strerror(rv));
        return 2;
    }
    memcpy(&cfg.addr, ai->ai_addr, ai->ai_addrlen);
    cfg.addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    if (!il_loopback(&cfg.addr)) {
        fprintf(stderr, "imap-load: refusing a non-loopback target %s\n", cfg.host);
        return 2;
    }
    struct sigaction sa = {.sa_handler = il_on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (cfg.fill)
        return il_run_fill();
    if (cfg.idle)
        return il_run_idle();
    return il_run_load();
}
