/*
 * benchmarks/pop3-load.c
 * POP3 load generator (RFC 1939) for loopback servers: --clients N threads, each
 * repeating one session after another: connect, greeting, USER/PASS, STAT, UIDL, RETR of
 * every message, QUIT. Nothing is deleted (no DELE), so the sessions can repeat for as long
 * as the run lasts. Prints messages/s and MB/s of message data (the bytes of the RETR
 * responses between "+OK" and the terminating ".", dot-stuffing included).
 *
 * Users are <prefix><i>@<domain> for i in 1..--users, all with --password; client k uses
 * user (k mod users) + 1. Bounded: --duration (max 3600 s), and each connect/read/write
 * times out after PL_IO_TIMEOUT_S; only loopback targets are accepted. A session cut off
 * by the end of the run counts the messages it retrieved, but not as a session.
 * Build: cc -O2 -o benchmarks/pop3-load benchmarks/pop3-load.c -lpthread
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
#include <stdarg.h>
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

#define PL_IO_TIMEOUT_S 30
#define PL_CLIENTS_MAX  1000
#define PL_USERS_MAX    10000
#define PL_DURATION_MAX 3600
#define PL_LINE_MAX     4096  /* RFC 2449 allows 512 octets per response line; slack */
#define PL_BUF          65536

struct pl_config {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    const char *host, *port, *password, *prefix, *domain;
    unsigned users, clients, duration;
};

struct pl_worker {
    pthread_t thread;
    unsigned id;
    int fd;
    char buf[PL_BUF];
    size_t off, len;
    char line[PL_LINE_MAX];
    uint64_t messages, bytes, sessions, errors;
    uint32_t *lat; /* session latencies, microseconds */
    size_t nlat, caplat;
    char last_error[256];
};

static struct pl_config cfg;
static struct timespec t0;

static double pl_elapsed(void)
{
    struct timespec n;
    clock_gettime(CLOCK_MONOTONIC, &n);
    return (double) (n.tv_sec - t0.tv_sec) + (n.tv_nsec - t0.tv_nsec) / 1e9;
}

static void *pl_xalloc(size_t n)
{
    void *p = calloc(1, n);
    if (p == NULL) {
        fprintf(stderr, "pop3-load: out of memory\n");
        exit(2);
    }
    return p;
}

static void pl_err(struct pl_worker *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->last_error, sizeof w->last_error, fmt, ap);
    va_end(ap);
}

static void pl_close(struct pl_worker *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    w->off = w->len = 0;
}

static int pl_connect(struct pl_worker *w)
{
    struct timeval tv = {.tv_sec = PL_IO_TIMEOUT_S};
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
    w->fd = fd;
    w->off = w->len = 0;
    return 0;
}

static int pl_write(struct pl_worker *w, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(w->fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t) k;
    }
    return 0;
}

/* pl_line(): one line into w->line without CRLF; its length, or -1 on I/O error, EOF or
 * a line longer than PL_LINE_MAX. Lines of message data may be up to 998 octets. */
static ssize_t pl_line(struct pl_worker *w)
{
    for (;;) {
        char *nl = memchr(w->buf + w->off, '\n', w->len - w->off);
        if (nl != NULL) {
            size_t n = (size_t) (nl - (w->buf + w->off));
            size_t len = n > 0 && w->buf[w->off + n - 1] == '\r' ? n - 1 : n;
            if (len >= sizeof w->line)
                return -1;
            memcpy(w->line, w->buf + w->off, len);
            w->line[len] = '\0';
            w->off += n + 1;
            return (ssize_t) len;
        }
        if (w->len - w->off >= PL_LINE_MAX)
            return -1;
        if (w->off > 0) {
            memmove(w->buf, w->buf + w->off, w->len - w->off);
            w->len -= w->off;
            w->off = 0;
        }
        ssize_t k = recv(w->fd, w->buf + w->len, sizeof w->buf - w->len, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k == 0)
            errno = ECONNRESET;
        if (k <= 0)
            return -1;
        w->len += (size_t) k;
    }
}

/* pl_cmd(): send a command line (without CRLF); 0 when the answer is +OK, 1 for -ERR,
 * -1 on I/O error. */
static int pl_cmd(struct pl_worker *w, const char *fmt, ...)
{
    char cmd[600];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd - 2, fmt, ap);
    va_end(ap);
    memcpy(cmd + n, "\r\n", 2);
    if (pl_write(w, cmd, (size_t) n + 2) != 0 || pl_line(w) < 0)
        return -1;
    return strncmp(w->line, "+OK", 3) == 0 ? 0 : 1;
}

/* pl_multiline(): the rest of a multi-line response, up to the "." line; the bytes of
 * its lines (with CRLF) are added to *bytes. 0 or -1. */
static int pl_multiline(struct pl_worker *w, uint64_t *bytes)
{
    for (;;) {
        ssize_t n = pl_line(w);
        if (n < 0)
            return -1;
        if (n == 1 && w->line[0] == '.')
            return 0;
        if (bytes != NULL)
            *bytes += (uint64_t) n + 2;
    }
}

static void pl_lat_push(struct pl_worker *w, uint64_t us)
{
    if (w->nlat == w->caplat) {
        w->caplat = w->caplat ? w->caplat * 2 : 1024;
        w->lat = realloc(w->lat, w->caplat * sizeof *w->lat);
        if (w->lat == NULL) {
            fprintf(stderr, "pop3-load: out of memory\n");
            exit(2);
        }
    }
    w->lat[w->nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t) us;
}

/* pl_session(): one whole session; 0, or -1 after counting the error. */
static int pl_session(struct pl_worker *w)
{
    unsigned user = w->id % cfg.users + 1;
    int r;
    if (pl_connect(w) != 0) {
        pl_err(w, "connect: %s", strerror(errno));
        return -1;
    }
    if (pl_line(w) < 0 || strncmp(w->line, "+OK", 3) != 0) {
        pl_err(w, "greeting: %s", w->line[0] ? w->line : strerror(errno));
        goto fail;
    }
    if ((r = pl_cmd(w, "USER %s%u@%s", cfg.prefix, user, cfg.domain)) != 0 ||
        (r = pl_cmd(w, "PASS %s", cfg.password)) != 0) {
        pl_err(w, "login %s%u@%s: %s", cfg.prefix, user, cfg.domain,
               r < 0 ? strerror(errno) : w->line);
        goto fail;
    }
    if ((r = pl_cmd(w, "STAT")) != 0) {
        pl_err(w, "STAT: %s", r < 0 ? strerror(errno) : w->line);
        goto fail;
    }
    unsigned count = 0;
    if (sscanf(w->line, "+OK %u", &count) != 1) {
        pl_err(w, "STAT: %s", w->line);
        goto fail;
    }
    if ((r = pl_cmd(w, "UIDL")) != 0 || pl_multiline(w, NULL) != 0) {
        pl_err(w, "UIDL: %s", r < 0 ? strerror(errno) : w->line);
        goto fail;
    }
    for (unsigned i = 1; i <= count; i++) {
        if (pl_elapsed() >= cfg.duration) {
            pl_close(w); /* cut off by the end of the run: not an error */
            return 0;
        }
        uint64_t b = 0;
        if ((r = pl_cmd(w, "RETR %u", i)) != 0 || pl_multiline(w, &b) != 0) {
            pl_err(w, "RETR %u: %s", i, r < 0 ? strerror(errno) : w->line);
            goto fail;
        }
        w->messages++;
        w->bytes += b;
    }
    if ((r = pl_cmd(w, "QUIT")) != 0) {
        pl_err(w, "QUIT: %s", r < 0 ? strerror(errno) : w->line);
        goto fail;
    }
    pl_close(w);
    w->sessions++;
    return 0;
fail:
    w->errors++;
    pl_close(w);
    return -1;
}

static void *pl_thread(void *arg)
{
    struct pl_worker *w = arg;
    while (pl_elapsed() < cfg.duration) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        uint64_t s0 = w->sessions;
        if (pl_session(w) != 0) {
            usleep(20000);
            continue;
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (w->sessions > s0)
            pl_lat_push(w, (uint64_t) ((b.tv_sec - a.tv_sec) * 1000000 +
                                       (b.tv_nsec - a.tv_nsec) / 1000));
    }
    return NULL;
}

static int pl_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;
    return x < y ? -1 : x > y;
}

static double pl_pct(const uint32_t *v, size_t n, double p)
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

static bool pl_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *) ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss->ss_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *) ss)->sin6_addr);
    return false;
}

static unsigned pl_uint(const char *opt, const char *v, unsigned lo, unsigned hi)
{
    char *end;
    errno = 0;
    unsigned long x = strtoul(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "pop3-load: %s must be %u..%u\n", opt, lo, hi);
        exit(2);
    }
    return (unsigned) x;
}

static void pl_usage(FILE *f)
{
    fprintf(f, "usage: pop3-load [--host H] [--port P] [--users N] [--user-prefix u]\n"
               "                 [--domain D] [--password PW] [--clients N] [--duration S]\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", 1, 0, 'H'},     {"port", 1, 0, 'p'},        {"users", 1, 0, 'u'},
        {"password", 1, 0, 'w'}, {"clients", 1, 0, 'c'},     {"duration", 1, 0, 'd'},
        {"user-prefix", 1, 0, 'x'}, {"domain", 1, 0, 'D'},   {"help", 0, 0, 'h'},
        {0, 0, 0, 0}};
    cfg.host = "127.0.0.1";
    cfg.port = "110";
    cfg.users = 10;
    cfg.password = "bench-pw";
    cfg.prefix = "u";
    cfg.domain = "example.test";
    cfg.clients = 10;
    cfg.duration = 10;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'H': cfg.host = optarg; break;
        case 'p': cfg.port = optarg; break;
        case 'u': cfg.users = pl_uint("--users", optarg, 1, PL_USERS_MAX); break;
        case 'w': cfg.password = optarg; break;
        case 'c': cfg.clients = pl_uint("--clients", optarg, 1, PL_CLIENTS_MAX); break;
        case 'd': cfg.duration = pl_uint("--duration", optarg, 1, PL_DURATION_MAX); break;
        case 'x': cfg.prefix = optarg; break;
        case 'D': cfg.domain = optarg; break;
        case 'h': pl_usage(stdout); return 0;
        default: pl_usage(stderr); return 2;
        }
    }
    if (optind != argc || strpbrk(cfg.password, "\r\n") != NULL) {
        pl_usage(stderr);
        return 2;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    int rv = getaddrinfo(cfg.host, cfg.port, &hints, &ai);
    if (rv != 0) {
        fprintf(stderr, "pop3-load: %s:%s: %s\n", cfg.host, cfg.port, gai_strerror(rv));
        return 2;
    }
    memcpy(&cfg.addr, ai->ai_addr, ai->ai_addrlen);
    cfg.addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    if (!pl_loopback(&cfg.addr)) {
        fprintf(stderr, "pop3-load: refusing a non-loopback target %s\n", cfg.host);
        return 2;
    }
    struct pl_worker *ws = pl_xalloc(cfg.clients * sizeof *ws);
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 0; i < cfg.clients; i++) {
        ws[i].id = i;
        ws[i].fd = -1;
        if (pthread_create(&ws[i].thread, NULL, pl_thread, &ws[i]) != 0) {
            fprintf(stderr, "pop3-load: pthread_create failed\n");
            return 2;
        }
    }
    uint64_t msgs = 0, bytes = 0, sessions = 0, errors = 0;
    size_t nlat = 0;
    for (unsigned i = 0; i < cfg.clients; i++) {
        pthread_join(ws[i].thread, NULL);
        msgs += ws[i].messages;
        bytes += ws[i].bytes;
        sessions += ws[i].sessions;
        errors += ws[i].errors;
        nlat += ws[i].nlat;
        if (ws[i].last_error[0])
            fprintf(stderr, "pop3-load: client %u: %s\n", i, ws[i].last_error);
    }
    double el = pl_elapsed();
    getrusage(RUSAGE_SELF, &r1);
    double cpu = (double) (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) +
                 (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6 +
                 (double) (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) +
                 (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
    uint32_t *lat = pl_xalloc((nlat + 1) * sizeof *lat);
    for (unsigned i = 0, k = 0; i < cfg.clients; i++) {
        memcpy(lat + k, ws[i].lat, ws[i].nlat * sizeof *lat);
        k += (unsigned) ws[i].nlat;
    }
    qsort(lat, nlat, sizeof *lat, pl_cmp_u32);
    double rate = el > 0 ? msgs / el : 0, mbs = el > 0 ? bytes / el / 1e6 : 0;
    printf("pop3_load host=%s port=%s clients=%u users=%u elapsed_s=%.2f sessions=%" PRIu64
           " messages=%" PRIu64 " bytes=%" PRIu64 " errors=%" PRIu64
           " rate=%.1f mb_s=%.2f session_p50_ms=%.1f session_p99_ms=%.1f cpu_s=%.2f\n",
           cfg.host, cfg.port, cfg.clients, cfg.users, el, sessions, msgs, bytes, errors, rate,
           mbs, pl_pct(lat, nlat, 50), pl_pct(lat, nlat, 99), cpu);
    printf("%s:%s x%u clients: %" PRIu64 " messages (%" PRIu64 " whole sessions) in %.1f s = "
           "%.1f msg/s, %.2f MB/s, %" PRIu64 " errors; session p50 %.1f ms, p99 %.1f ms\n",
           cfg.host, cfg.port, cfg.clients, msgs, sessions, el, rate, mbs, errors,
           pl_pct(lat, nlat, 50), pl_pct(lat, nlat, 99));
    return msgs > 0 ? 0 : 1;
}
