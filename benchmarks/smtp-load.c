/*
 * benchmarks/smtp-load.c
 * SMTP load generator: N connections, one thread each, send fixed-size messages to a
 * server on loopback and time every message from the final "\r\n.\r\n" to the reply of
 * DATA (RFC 5321 4.1.1.4). Plain SMTP, one command per round trip (no PIPELINING).
 * Modes: "new" opens a TCP connection per message (EHLO ... QUIT); "persistent" keeps
 * the connection and loops RSET, MAIL, RCPT, DATA.
 *
 * Bounded: stops at --duration or after --messages attempts, every socket read, write
 * and connect times out after SL_IO_TIMEOUT_S, and only loopback targets are accepted.
 * Build: cc -O2 -o benchmarks/smtp-load benchmarks/smtp-load.c -lpthread
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
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

#define SL_IO_TIMEOUT_S   30        /* every connect, read and write */
#define SL_CONNS_MAX      1000      /* threads; far above what a loopback test needs */
#define SL_USERS_MAX      10000     /* recipients to choose from */
#define SL_SIZE_MIN       256       /* room for the headers */
#define SL_SIZE_MAX       (64 << 20)
#define SL_DURATION_MAX   3600      /* seconds; a benchmark, not a soak */
#define SL_REPLY_LINE_MAX 1024      /* RFC 5321 4.5.3.1.5 says 512; leave slack */
#define SL_REPLY_LINES    64        /* lines in one multi-line reply (EHLO) */
#define SL_ADDR_MAX       256       /* RFC 5321 4.5.3.1.3 path */
#define SL_BODY_LINE      76        /* filler line length, below the 998 limit */
#define SL_ERR_BACKOFF_US 20000     /* pause after a failed connection, no tight loop */

enum sl_mode { SL_MODE_NEW, SL_MODE_PERSISTENT };

/* What went wrong with one message; counted separately in the summary. */
enum sl_err {
    SL_ERR_CONNECT,  /* connect() refused or timed out */
    SL_ERR_IO,       /* read/write error, timeout or EOF */
    SL_ERR_REPLY,    /* unexpected reply code before DATA's end */
    SL_ERR_DATA,     /* the reply to the end of DATA was not 2xx */
    SL_ERR_COUNT
};

static const char *const sl_err_names[SL_ERR_COUNT] = {"connect", "io", "reply", "data"};

struct sl_config {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    const char *host, *port;
    unsigned conns;
    size_t size;
    unsigned duration;  /* seconds, 0 = use messages */
    uint64_t messages;  /* attempts, 0 = use duration */
    enum sl_mode mode;
    const char *from;
    char **users;       /* owned; freed at exit */
    size_t nusers;
    const char *helo;
};

/* One connection's thread: its counters and latencies (microseconds). */
struct sl_worker {
    pthread_t thread;
    unsigned id;
    uint64_t rng;
    int fd;
    char rbuf[4096];    /* reply bytes not yet consumed */
    size_t rlen;
    char *msg;          /* message template, owned */
    size_t msglen;
    size_t idoff;       /* where the Message-ID's 16 hex digits start */
    uint32_t *lat;      /* owned, grows by doubling */
    size_t nlat, caplat;
    uint64_t accepted;
    uint64_t errors[SL_ERR_COUNT];
    char last_error[200];
};

static struct sl_config sl_cfg;
static struct timespec sl_start;
static double sl_deadline;             /* seconds since sl_start; 0 = none */
static _Atomic uint64_t sl_claimed;     /* message attempts started */

static double sl_elapsed(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double) (now.tv_sec - sl_start.tv_sec) + (now.tv_nsec - sl_start.tv_nsec) / 1e9;
}

static uint64_t sl_now_us(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t) now.tv_sec * 1000000u + (uint64_t) now.tv_nsec / 1000u;
}

/* sl_rand(): xorshift64*, one state per worker so that threads share nothing. */
static uint64_t sl_rand(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static void *sl_xalloc(size_t n)
{
    void *p = calloc(1, n);
    if (p == NULL) {
        fprintf(stderr, "smtp-load: out of memory\n");
        exit(2);
    }
    return p;
}

/* sl_next(): true when this worker may start one more message, and claims it. */
static bool sl_next(void)
{
    if (sl_deadline > 0 && sl_elapsed() >= sl_deadline)
        return false;
    if (sl_cfg.messages > 0 && atomic_fetch_add(&sl_claimed, 1) >= sl_cfg.messages)
        return false;
    return true;
}

static void sl_fail(struct sl_worker *w, enum sl_err e, const char *fmt, ...)
{
    va_list ap;
    w->errors[e]++;
    va_start(ap, fmt);
    vsnprintf(w->last_error, sizeof w->last_error, fmt, ap);
    va_end(ap);
}

static void sl_close(struct sl_worker *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    w->rlen = 0;
}

static int sl_connect(struct sl_worker *w)
{
    struct timeval tv = {.tv_sec = SL_IO_TIMEOUT_S};
    int one = 1;
    int fd = socket(sl_cfg.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    /* SO_SNDTIMEO also bounds connect() on Linux */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
        connect(fd, (struct sockaddr *) &sl_cfg.addr, sl_cfg.addrlen) != 0) {
        close(fd);
        return -1;
    }
    w->fd = fd;
    w->rlen = 0;
    return 0;
}

static int sl_write(struct sl_worker *w, const char *p, size_t n)
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

/* sl_line(): one reply line into line (without CRLF). Returns its length, -1 on I/O
 * error, timeout, EOF or a line longer than SL_REPLY_LINE_MAX. */
static ssize_t sl_line(struct sl_worker *w, char *line, size_t cap)
{
    for (;;) {
        char *nl = memchr(w->rbuf, '\n', w->rlen);
        if (nl != NULL) {
            size_t n = (size_t) (nl - w->rbuf) + 1, len = n - 1;
            if (len > 0 && w->rbuf[len - 1] == '\r')
                len--;
            if (len >= cap)
                return -1;
            memcpy(line, w->rbuf, len);
            line[len] = '\0';
            memmove(w->rbuf, w->rbuf + n, w->rlen - n);
            w->rlen -= n;
            return (ssize_t) len;
        }
        if (w->rlen >= SL_REPLY_LINE_MAX || w->rlen == sizeof w->rbuf)
            return -1;
        ssize_t k = recv(w->fd, w->rbuf + w->rlen, sizeof w->rbuf - w->rlen, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        w->rlen += (size_t) k;
    }
}

/* sl_reply(): read a whole (possibly multi-line) reply; its code, or -1 on I/O error or
 * a malformed reply. The last line is left in last for error messages. */
static int sl_reply(struct sl_worker *w, char *last, size_t cap)
{
    for (int i = 0; i < SL_REPLY_LINES; i++) {
        ssize_t n = sl_line(w, last, cap);
        if (n < 3)
            return -1;
        if (n > 3 && last[3] == '-')
            continue;
        if (last[0] < '2' || last[0] > '5' || last[1] < '0' || last[1] > '9' ||
            last[2] < '0' || last[2] > '9' || (n > 3 && last[3] != ' '))
            return -1;
        return (last[0] - '0') * 100 + (last[1] - '0') * 10 + (last[2] - '0');
    }
    return -1;
}

/* sl_cmd(): send one command line and expect a reply of class want (2 or 3). */
static int sl_cmd(struct sl_worker *w, const char *cmd, int want)
{
    char line[SL_REPLY_LINE_MAX];
    size_t n = strlen(cmd);
    if (sl_write(w, cmd, n) != 0) {
        sl_fail(w, SL_ERR_IO, "write %.*s: %s", (int) (n > 2 ? n - 2 : n), cmd, strerror(errno));
        return -1;
    }
    errno = 0;
    int code = sl_reply(w, line, sizeof line);
    if (code < 0) {
        sl_fail(w, SL_ERR_IO, "reply to %.*s: %s", (int) (n > 2 ? n - 2 : n), cmd,
                errno ? strerror(errno) : "EOF or malformed");
        return -1;
    }
    if (code / 100 != want) {
        sl_fail(w, SL_ERR_REPLY, "%.*s -> %s", (int) (n > 2 ? n - 2 : n), cmd, line);
        return -1;
    }
    return 0;
}

/* sl_session_open(): connect, greeting, EHLO. */
static int sl_session_open(struct sl_worker *w)
{
    char line[SL_REPLY_LINE_MAX], ehlo[300];
    if (sl_connect(w) != 0) {
        sl_fail(w, SL_ERR_CONNECT, "connect %s:%s: %s", sl_cfg.host, sl_cfg.port,
                strerror(errno));
        return -1;
    }
    errno = 0;
    int code = sl_reply(w, line, sizeof line);
    if (code != 220) {
        if (code < 0)
            sl_fail(w, SL_ERR_IO, "greeting: %s", errno ? strerror(errno) : "EOF");
        else
            sl_fail(w, SL_ERR_REPLY, "greeting -> %s", line);
        sl_close(w);
        return -1;
    }
    snprintf(ehlo, sizeof ehlo, "EHLO %s\r\n", sl_cfg.helo);
    if (sl_cmd(w, ehlo, 2) != 0) {
        sl_close(w);
        return -1;
    }
    return 0;
}

/* sl_build_message(): a message of exactly --size bytes: headers, and base64-like filler
 * lines that never start with '.' (no dot-stuffing needed). The 16 hex digits of the
 * Message-ID are rewritten for every message (sl_stamp) so that no two bodies match. */
static void sl_build_message(struct sl_worker *w)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t size = sl_cfg.size;
    w->msg = sl_xalloc(size + 1);
    int h = snprintf(w->msg, size + 1,
                     "From: <%s>\r\nTo: <bench@example.test>\r\nSubject: smtp-load %u\r\n"
                     "Message-ID: <%u.", sl_cfg.from, w->id, w->id);
    w->idoff = (size_t) h;
    h += snprintf(w->msg + h, size + 1 - (size_t) h,
                  "0000000000000000@smtp-load>\r\nMIME-Version: 1.0\r\n"
                  "Content-Type: text/plain\r\n\r\n");
    if ((size_t) h + 2 > size) {
        fprintf(stderr, "smtp-load: --size %zu is too small for the headers\n", size);
        exit(2);
    }
    size_t off = (size_t) h;
    while (off < size) {
        size_t room = size - off; /* always >= 2 here */
        size_t len = room >= SL_BODY_LINE + 4 ? SL_BODY_LINE : room - 2;
        for (size_t i = 0; i < len; i++)
            w->msg[off + i] = b64[sl_rand(&w->rng) % 64];
        memcpy(w->msg + off + len, "\r\n", 2);
        off += len + 2;
    }
    w->msglen = off;
}

/* sl_stamp(): write seq as the 16 hex digits of this message's Message-ID. */
static void sl_stamp(struct sl_worker *w, uint64_t seq)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--, seq >>= 4)
        w->msg[w->idoff + (size_t) i] = hex[seq & 15];
}

static int sl_lat_push(struct sl_worker *w, uint64_t us)
{
    if (w->nlat == w->caplat) {
        size_t cap = w->caplat ? w->caplat * 2 : 4096;
        uint32_t *p = realloc(w->lat, cap * sizeof *p);
        if (p == NULL)
            return -1;
        w->lat = p;
        w->caplat = cap;
    }
    w->lat[w->nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t) us;
    return 0;
}

/* sl_send_message(): one transaction on an open session. 0 when the end of DATA got a
 * 2xx reply, -1 with the error counted otherwise (the session is then unusable). */
static int sl_send_message(struct sl_worker *w, uint64_t seq)
{
    char cmd[SL_ADDR_MAX + 64], line[SL_REPLY_LINE_MAX];
    const char *rcpt = sl_cfg.users[sl_rand(&w->rng) % sl_cfg.nusers];

    snprintf(cmd, sizeof cmd, "MAIL FROM:<%s>\r\n", sl_cfg.from);
    if (sl_cmd(w, cmd, 2) != 0)
        return -1;
    snprintf(cmd, sizeof cmd, "RCPT TO:<%s>\r\n", rcpt);
    if (sl_cmd(w, cmd, 2) != 0)
        return -1;
    if (sl_cmd(w, "DATA\r\n", 3) != 0)
        return -1;

    sl_stamp(w, seq);
    if (sl_write(w, w->msg, w->msglen) != 0) {
        sl_fail(w, SL_ERR_IO, "write body: %s", strerror(errno));
        return -1;
    }
    /* the message ends with CRLF: ".\r\n" completes the final "\r\n.\r\n" */
    uint64_t t0 = sl_now_us();
    if (sl_write(w, ".\r\n", 3) != 0) {
        sl_fail(w, SL_ERR_IO, "write end of data: %s", strerror(errno));
        return -1;
    }
    errno = 0;
    int code = sl_reply(w, line, sizeof line);
    uint64_t t1 = sl_now_us();
    if (code < 0) {
        sl_fail(w, SL_ERR_IO, "reply to end of data: %s", errno ? strerror(errno) : "EOF");
        return -1;
    }
    if (code / 100 != 2) {
        sl_fail(w, SL_ERR_DATA, "end of data -> %s", line);
        return -1;
    }
    w->accepted++;
    if (sl_lat_push(w, t1 - t0) != 0) {
        fprintf(stderr, "smtp-load: out of memory for latencies\n");
        exit(2);
    }
    return 0;
}

static void *sl_worker_main(void *arg)
{
    struct sl_worker *w = arg;
    uint64_t seq = (uint64_t) w->id << 40;
    bool first = true;
    w->fd = -1;

    while (sl_next()) {
        seq++;
        if (w->fd < 0) {
            if (sl_session_open(w) != 0) {
                usleep(SL_ERR_BACKOFF_US);
                continue;
            }
            first = true;
        }
        if (sl_cfg.mode == SL_MODE_PERSISTENT && !first && sl_cmd(w, "RSET\r\n", 2) != 0) {
            sl_close(w);
            continue;
        }
        first = false;
        if (sl_send_message(w, seq) != 0) {
            sl_close(w);
            continue;
        }
        if (sl_cfg.mode == SL_MODE_NEW) {
            /* QUIT's reply is not part of the measurement; a failure there is counted */
            (void) sl_cmd(w, "QUIT\r\n", 2);
            sl_close(w);
        }
    }
    if (w->fd >= 0) {
        (void) sl_cmd(w, "QUIT\r\n", 2);
        sl_close(w);
    }
    return NULL;
}

static int sl_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;
    return x < y ? -1 : x > y;
}

/* sl_pct(): nearest-rank percentile of a sorted array, in milliseconds. */
static double sl_pct(const uint32_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t rank = (size_t) (p / 100.0 * (double) n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1] / 1000.0;
}

/* sl_is_loopback(): only 127.0.0.0/8 and ::1 may be loaded. */
static bool sl_is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *) ss;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) ss;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    return false;
}

static void sl_usage(FILE *f)
{
    fprintf(f,
            "usage: smtp-load [--host H] [--port P] [--conns N] [--size BYTES]\n"
            "                 [--duration S | --messages N] [--mode new|persistent]\n"
            "                 [--users a@d,b@d,... | --user-prefix u --domain D --nusers K]\n"
            "                 [--from ADDR] [--helo NAME]\n"
            "defaults: --host 127.0.0.1 --port 25 --conns 20 --size 4096 --duration 10\n"
            "          --mode new --user-prefix u --domain example.test --nusers 10\n"
            "          --from bench@example.net --helo smtp-load.example.net\n");
}

static void sl_add_user(const char *u)
{
    if (sl_cfg.nusers == SL_USERS_MAX || strlen(u) == 0 || strlen(u) >= SL_ADDR_MAX) {
        fprintf(stderr, "smtp-load: bad or too many users (max %d)\n", SL_USERS_MAX);
        exit(2);
    }
    sl_cfg.users[sl_cfg.nusers++] = strdup(u);
}

static unsigned long long sl_num(const char *opt, const char *s, unsigned long long lo,
                                 unsigned long long hi)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "smtp-load: %s must be %llu..%llu\n", opt, lo, hi);
        exit(2);
    }
    return v;
}

static void sl_parse_args(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'H'},     {"port", required_argument, NULL, 'p'},
        {"conns", required_argument, NULL, 'c'},    {"size", required_argument, NULL, 's'},
        {"duration", required_argument, NULL, 'd'}, {"messages", required_argument, NULL, 'n'},
        {"mode", required_argument, NULL, 'm'},     {"users", required_argument, NULL, 'u'},
        {"user-prefix", required_argument, NULL, 'P'},
        {"domain", required_argument, NULL, 'D'},   {"nusers", required_argument, NULL, 'K'},
        {"from", required_argument, NULL, 'f'},     {"helo", required_argument, NULL, 'e'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    const char *users = NULL, *prefix = "u", *domain = "example.test";
    unsigned nusers = 10;
    bool have_duration = false;
    int o;

    sl_cfg.host = "127.0.0.1";
    sl_cfg.port = "25";
    sl_cfg.conns = 20;
    sl_cfg.size = 4096;
    sl_cfg.duration = 10;
    sl_cfg.mode = SL_MODE_NEW;
    sl_cfg.from = "bench@example.net";
    sl_cfg.helo = "smtp-load.example.net";
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'H': sl_cfg.host = optarg; break;
        case 'p': sl_cfg.port = optarg; break;
        case 'c': sl_cfg.conns = (unsigned) sl_num("--conns", optarg, 1, SL_CONNS_MAX); break;
        case 's': sl_cfg.size = sl_num("--size", optarg, SL_SIZE_MIN, SL_SIZE_MAX); break;
        case 'd':
            sl_cfg.duration = (unsigned) sl_num("--duration", optarg, 1, SL_DURATION_MAX);
            have_duration = true;
            break;
        case 'n': sl_cfg.messages = sl_num("--messages", optarg, 1, 100000000); break;
        case 'm':
            if (strcmp(optarg, "new") == 0)
                sl_cfg.mode = SL_MODE_NEW;
            else if (strcmp(optarg, "persistent") == 0)
                sl_cfg.mode = SL_MODE_PERSISTENT;
            else {
                fprintf(stderr, "smtp-load: --mode is new or persistent\n");
                exit(2);
            }
            break;
        case 'u': users = optarg; break;
        case 'P': prefix = optarg; break;
        case 'D': domain = optarg; break;
        case 'K': nusers = (unsigned) sl_num("--nusers", optarg, 1, SL_USERS_MAX); break;
        case 'f': sl_cfg.from = optarg; break;
        case 'e': sl_cfg.helo = optarg; break;
        case 'h': sl_usage(stdout); exit(0);
        default: sl_usage(stderr); exit(2);
        }
    }
    if (optind != argc) {
        sl_usage(stderr);
        exit(2);
    }
    if (have_duration && sl_cfg.messages > 0) {
        fprintf(stderr, "smtp-load: give --duration or --messages, not both\n");
        exit(2);
    }
    if (sl_cfg.messages > 0)
        sl_cfg.duration = 0;
    if (strlen(sl_cfg.from) >= SL_ADDR_MAX || strlen(sl_cfg.helo) >= 255) {
        fprintf(stderr, "smtp-load: --from or --helo too long\n");
        exit(2);
    }

    sl_cfg.users = sl_xalloc(SL_USERS_MAX * sizeof *sl_cfg.users);
    if (users != NULL) {
        char *copy = strdup(users), *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
            sl_add_user(t);
        free(copy);
    } else {
        char u[SL_ADDR_MAX * 2];
        for (unsigned i = 1; i <= nusers; i++) {
            snprintf(u, sizeof u, "%s%u@%s", prefix, i, domain);
            sl_add_user(u);
        }
    }
    if (sl_cfg.nusers == 0) {
        fprintf(stderr, "smtp-load: no recipients\n");
        exit(2);
    }

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai;
    int rv = getaddrinfo(sl_cfg.host, sl_cfg.port, &hints, &ai);
    if (rv != 0) {
        fprintf(stderr, "smtp-load: %s:%s: %s\n", sl_cfg.host, sl_cfg.port, gai_strerror(rv));
        exit(2);
    }
    memcpy(&sl_cfg.addr, ai->ai_addr, ai->ai_addrlen);
    sl_cfg.addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    if (!sl_is_loopback(&sl_cfg.addr)) {
        fprintf(stderr, "smtp-load: %s is not a loopback address; refusing\n", sl_cfg.host);
        exit(2);
    }
}

int main(int argc, char **argv)
{
    sl_parse_args(argc, argv);

    struct sl_worker *ws = sl_xalloc(sl_cfg.conns * sizeof *ws);
    uint64_t seed = sl_now_us() ^ ((uint64_t) getpid() << 32);
    for (unsigned i = 0; i < sl_cfg.conns; i++) {
        ws[i].id = i;
        ws[i].rng = seed + 0x9E3779B97F4A7C15ull * (i + 1);
        sl_build_message(&ws[i]);
    }

    clock_gettime(CLOCK_MONOTONIC, &sl_start);
    sl_deadline = sl_cfg.duration;
    for (unsigned i = 0; i < sl_cfg.conns; i++) {
        if (pthread_create(&ws[i].thread, NULL, sl_worker_main, &ws[i]) != 0) {
            fprintf(stderr, "smtp-load: pthread_create failed\n");
            exit(2);
        }
    }
    for (unsigned i = 0; i < sl_cfg.conns; i++)
        pthread_join(ws[i].thread, NULL);
    double elapsed = sl_elapsed();

    uint64_t accepted = 0, errors[SL_ERR_COUNT] = {0}, nerr = 0;
    size_t nlat = 0;
    const char *last_error = NULL;
    for (unsigned i = 0; i < sl_cfg.conns; i++) {
        accepted += ws[i].accepted;
        nlat += ws[i].nlat;
        for (int e = 0; e < SL_ERR_COUNT; e++) {
            errors[e] += ws[i].errors[e];
            nerr += ws[i].errors[e];
        }
        if (ws[i].last_error[0])
            last_error = ws[i].last_error;
    }
    uint32_t *lat = sl_xalloc((nlat ? nlat : 1) * sizeof *lat);
    size_t k = 0;
    double sum = 0;
    for (unsigned i = 0; i < sl_cfg.conns; i++) {
        memcpy(lat + k, ws[i].lat, ws[i].nlat * sizeof *lat);
        k += ws[i].nlat;
    }
    qsort(lat, nlat, sizeof *lat, sl_cmp_u32);
    for (size_t i = 0; i < nlat; i++)
        sum += lat[i];

    double rate = elapsed > 0 ? accepted / elapsed : 0;
    double p50 = sl_pct(lat, nlat, 50), p90 = sl_pct(lat, nlat, 90), p99 = sl_pct(lat, nlat, 99);
    double max = nlat ? lat[nlat - 1] / 1000.0 : 0, mean = nlat ? sum / nlat / 1000.0 : 0;
    const char *mode = sl_cfg.mode == SL_MODE_NEW ? "new" : "persistent";

    printf("smtp_load host=%s port=%s mode=%s conns=%u size=%zu elapsed_s=%.2f accepted=%llu "
           "errors=%llu",
           sl_cfg.host, sl_cfg.port, mode, sl_cfg.conns, sl_cfg.size, elapsed,
           (unsigned long long) accepted, (unsigned long long) nerr);
    for (int e = 0; e < SL_ERR_COUNT; e++)
        printf(" err_%s=%llu", sl_err_names[e], (unsigned long long) errors[e]);
    struct rusage ru;
    double cpu = 0;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double) ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
              (double) ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    printf(" rate=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f mean_ms=%.2f cpu_s=%.2f\n",
           rate, p50, p90, p99, max, mean, cpu);
    printf("%s:%s %s x%u %zu B: %llu accepted in %.1f s = %.1f msg/s, %llu errors; "
           "DATA-end latency p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms\n",
           sl_cfg.host, sl_cfg.port, mode, sl_cfg.conns, sl_cfg.size,
           (unsigned long long) accepted, elapsed, rate, (unsigned long long) nerr, p50, p90,
           p99, max);
    if (last_error != NULL)
        fprintf(stderr, "smtp-load: last error: %s\n", last_error);

    for (unsigned i = 0; i < sl_cfg.conns; i++) {
        free(ws[i].msg);
        free(ws[i].lat);
    }
    for (size_t i = 0; i < sl_cfg.nusers; i++)
        free(sl_cfg.users[i]);
    free(sl_cfg.users);
    free(ws);
    free(lat);
    return accepted > 0 ? 0 : 1;
}
