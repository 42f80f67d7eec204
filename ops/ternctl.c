/*
 * ops/ternctl.c
 * ternctl, the admin CLI. "ternctl domain add example.test" becomes one AdminRequest
 * (verb "domain.add", args ["example.test"], node/proto/admin.proto) in one frame
 * (node/frame.h) on ternd's admin unix socket; the response lines go to stdout. Exit
 * status: 0 ok, 1 refused (by ternd, or a usage error here), 2 unavailable (cannot
 * connect, no answer within TERNCTL_TIMEOUT_MS, protocol error, ternd's status 2).
 *
 * SECURITY: runs as the operator and talks only to a local unix socket (mode 0600, so the
 * peer is a ternd of the same user). Passwords come from the terminal with echo off, or
 * from one line of stdin with --password-stdin; never from argv, which ps(1) and shell
 * history show to others. Password bytes are zeroed as soon as they are sent. Response
 * text may carry names chosen by mail users (mailbox names), so control bytes are
 * replaced before they reach the operator's terminal.
 *
 * One command runs here rather than in ternd: "haproxy-config" asks for cluster.members
 * and prints an HAProxy configuration for them (ops/haproxy_gen.c, ops/haproxy/README.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <openssl/evp.h>
#include <time.h>
#include <unistd.h>

#include "admin.pb-c.h"
#include "frame.h"
#include "haproxy_gen.h"

#define TERNCTL_SOCKET_DEFAULT "var/data/admin.sock" /* ternd's default <data_dir> */
#define TERNCTL_SOCKET_ENV     "TERN_ADMIN_SOCKET"
#define TERNCTL_TIMEOUT_MS     30000  /* connect + request + response, then exit 2 */
#define TERNCTL_SLOW_MS        180000 /* the same for TERNCTL_SLOW commands */
#define TERNCTL_PW_MAX         511    /* bytes of password; as ternd accepts (PASSWD_MAX) */
#define TERNCTL_ARGS_MAX       16     /* admin.proto: at most 16 args ... */
#define TERNCTL_ARG_MAX        1024   /* ... each at most 1024 bytes */
#define TERNCTL_ERR_MAX        512

/* Exit status, as scripts see it. */
enum ternctl_exit {
    TERNCTL_OK = 0,
    TERNCTL_REFUSED = 1,     /* ternd said no, or the command line is wrong: don't retry */
    TERNCTL_UNAVAILABLE = 2, /* no usable answer from ternd: retrying may help */
};

enum ternctl_flag {
    TERNCTL_PASSWORD = 1, /* sends a password (AdminRequest.password) */
    TERNCTL_NEW_PW = 2,   /* the password is being set: typed twice on a terminal, not empty */
    TERNCTL_RAW = 4,      /* the answer is base64 lines of raw bytes: decode to stdout */
    TERNCTL_SLOW = 8,     /* ternd answers when a cluster change is done (a new voter has
                             caught up): wait TERNCTL_SLOW_MS, not TERNCTL_TIMEOUT_MS */
    TERNCTL_HAPROXY = 16, /* not sent as is: ternctl asks VERB and writes an HAProxy config
                             from the answer (hacfg_run()) */
};

/* One command: the words typed, the verb sent, how many args follow. */
struct ternctl_cmd {
    const char *word1; /* "domain" */
    const char *word2; /* "add", or NULL for a one-word command ("status") */
    const char *verb;  /* "domain.add": word1 "." word2 */
    int min_args;      /* arguments after the command words */
    int max_args;
    int flags;            /* enum ternctl_flag */
    const char *synopsis; /* the arguments, for --help */
};

static const struct ternctl_cmd ternctl_cmds[] = {
    {"status", NULL, "status", 0, 0, 0, ""},
    {"domain", "add", "domain.add", 1, 1, 0, "NAME"},
    {"domain", "list", "domain.list", 0, 0, 0, ""},
    {"domain", "del", "domain.del", 1, 1, 0, "NAME"},
    {"user", "add", "user.add", 1, 3, TERNCTL_PASSWORD | TERNCTL_NEW_PW,
     "ADDR [quota_bytes=N] [quota_messages=N]"},
    {"user", "passwd", "user.passwd", 1, 1, TERNCTL_PASSWORD | TERNCTL_NEW_PW, "ADDR"},
    {"user", "del", "user.del", 1, 1, 0, "ADDR"},
    {"user", "list", "user.list", 0, 1, 0, "[DOMAIN]"},
    {"user", "show", "user.show", 1, 1, 0, "ADDR"},
    {"user", "quota", "user.quota", 2, 3, 0, "ADDR BYTES [MESSAGES]"},
    {"user", "verify", "user.verify", 1, 1, TERNCTL_PASSWORD, "ADDR"},
    {"alias", "add", "alias.add", 2, TERNCTL_ARGS_MAX, 0, "ALIAS TARGET[,TARGET...]"},
    {"alias", "del", "alias.del", 1, 1, 0, "ALIAS"},
    {"alias", "list", "alias.list", 0, 1, 0, "[DOMAIN]"},
    {"mailbox", "list", "mailbox.list", 1, 1, 0, "USER"},
    {"mailbox", "create", "mailbox.create", 2, 3, 0, "USER NAME [SPECIAL-USE]"},
    {"mailbox", "rename", "mailbox.rename", 3, 3, 0, "USER OLD NEW"},
    {"mailbox", "delete", "mailbox.delete", 2, 2, 0, "USER NAME"},
    {"mailbox", "subscribe", "mailbox.subscribe", 3, 3, 0, "USER NAME on|off"},
    {"message", "list", "message.list", 2, 2, 0, "USER MAILBOX"},
    {"queue", "list", "queue.list", 0, 0, 0, ""},
    {"message", "show", "message.show", 3, 3, TERNCTL_RAW, "USER MAILBOX UID"},
    {"cluster", "init", "cluster.init", 0, 0, 0, ""},
    {"cluster", "join", "cluster.join", 1, 1, TERNCTL_SLOW, "ADDR"},
    {"cluster", "remove", "cluster.remove", 1, 1, TERNCTL_SLOW, "ID"},
    {"cluster", "status", "cluster.status", 0, 0, 0, ""},
    {"cluster", "transfer", "cluster.transfer", 0, 1, TERNCTL_SLOW, "[ID]"},
    {"cluster", "members", "cluster.members", 0, 0, 0, ""},
    {"metrics", NULL, "metrics", 0, 0, 0, ""},
    {"haproxy-config", NULL, "cluster.members", 0, TERNCTL_ARGS_MAX, TERNCTL_HAPROXY,
     "[--bind ADDR] [--ports NAME=PORT,...] [--source ADDR] [--stats ADDR:PORT] [--maxconn N]"},
};
#define TERNCTL_NCMDS (sizeof(ternctl_cmds) / sizeof(ternctl_cmds[0]))

/*
 * The terminal to restore if a signal arrives while echo is off. The only process-wide
 * state: a signal handler can reach nothing else. tty_fd is -1 when echo is on.
 */
static volatile sig_atomic_t tty_fd = -1;
static struct termios tty_saved;

static void usage(FILE *out)
{
    fprintf(out, "usage: ternctl [--socket PATH] [--password-stdin] COMMAND [ARG...]\n"
                 "\n"
                 "commands:\n");
    for (size_t i = 0; i < TERNCTL_NCMDS; i++) {
        const struct ternctl_cmd *c = &ternctl_cmds[i];
        fprintf(out, "  %s%s%s%s%s\n", c->word1, c->word2 ? " " : "", c->word2 ? c->word2 : "",
                c->synopsis[0] ? " " : "", c->synopsis);
    }
    fprintf(out, "\n"
                 "options:\n"
                 "  --socket PATH     ternd's admin socket (default: $" TERNCTL_SOCKET_ENV
                 ", else " TERNCTL_SOCKET_DEFAULT ")\n"
                 "  --password-stdin  read the password from one line of stdin, not the terminal\n"
                 "  --help            show this text\n"
                 "\n"
                 "Passwords are never taken from the command line.\n"
                 "cluster join ADDR: THIS node (the one behind --socket) asks the member whose\n"
                 "  cluster.rpc_address is ADDR to add it; returns once it is a voter.\n"
                 "haproxy-config: an HAProxy 2.6 configuration for the members, on stdout\n"
                 "  --bind ADDR           frontends' address (default " HAGEN_BIND_DEFAULT ")\n"
                 "  --ports NAME=PORT,... frontends' ports; default smtp=25,submission=587,\n"
                 "                        smtps=465,imap=143,imaps=993,pop3=110,pop3s=995\n"
                 "  --source ADDR         HAProxy's address towards the nodes (for their\n"
                 "                        net.proxy_trusted)\n"
                 "  --stats ADDR:PORT     /metrics and /stats (default " HAGEN_STATS_DEFAULT ")\n"
                 "  --maxconn N           HAProxy's global maxconn (default 400)\n"
                 "exit status: 0 ok, 1 refused or usage error, 2 ternd unavailable\n");
}

/* Prints "ternctl: MSG" to stderr and returns CODE, for "return fail(...)". */
static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int code, const char *fmt, ...)
{
    va_list ap;

    fputs("ternctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return code;
}

/* Milliseconds left until DEADLINE (CLOCK_MONOTONIC), at least 0. */
static int ms_left(const struct timespec *deadline)
{
    struct timespec now;
    long long ms;

    clock_gettime(CLOCK_MONOTONIC, &now);
    ms = (long long) (deadline->tv_sec - now.tv_sec) * 1000 +
         (deadline->tv_nsec - now.tv_nsec) / 1000000;
    return ms < 0 ? 0 : (int) ms;
}

/* ---- passwords ---- */

/*
 * pw_read_line() reads one line from FD into BUF (TERNCTL_PW_MAX + 1 bytes), one byte at
 * a time so that nothing past the line is consumed or left in a stdio buffer. The line
 * end ("\n", "\r\n") is dropped and BUF is NUL-terminated. Returns the length; -1 on a
 * read error or on end of file before any byte (errno 0); -2 when the line is longer
 * than TERNCTL_PW_MAX.
 */
static long pw_read_line(int fd, char *buf)
{
    size_t len = 0;

    for (;;) {
        char ch;
        ssize_t n = read(fd, &ch, 1);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0) {
            if (len == 0) {
                errno = 0;
                return -1;
            }
            break;
        }
        if (ch == '\n')
            break;
        if (len == TERNCTL_PW_MAX) {
            explicit_bzero(buf, TERNCTL_PW_MAX + 1);
            return -2;
        }
        buf[len++] = ch;
    }
    if (len > 0 && buf[len - 1] == '\r')
        len--;
    buf[len] = '\0';
    return (long) len;
}

/* Restores the terminal's echo, then dies of SIG as if we had not caught it. */
static void tty_on_signal(int sig)
{
    if (tty_fd >= 0)
        tcsetattr(tty_fd, TCSAFLUSH, &tty_saved); /* async-signal-safe (POSIX) */
    signal(sig, SIG_DFL);
    raise(sig);
}

/*
 * pw_prompt() writes PROMPT to /dev/tty and reads one line with echo off into BUF
 * (TERNCTL_PW_MAX + 1 bytes). Echo is restored before it returns, and by a signal that
 * ends the process meanwhile. Returns the length or a negative code with ERR set.
 */
static long pw_prompt(const char *prompt, char *buf, char *err, size_t errlen)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
    struct sigaction sa, old[4];
    struct termios quiet;
    long n;
    int fd;

    fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen,
                 "cannot open /dev/tty to ask for the password: %s "
                 "(use --password-stdin)",
                 strerror(errno));
        return -1;
    }
    if (tcgetattr(fd, &tty_saved) < 0) {
        snprintf(err, errlen, "cannot read terminal settings: %s", strerror(errno));
        close(fd);
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = tty_on_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < 4; i++)
        sigaction(sigs[i], &sa, &old[i]);
    quiet = tty_saved;
    quiet.c_lflag &= ~(tcflag_t) (ECHO | ECHOE | ECHOK | ECHONL);
    quiet.c_lflag |= ICANON;
    tty_fd = fd;
    if (tcsetattr(fd, TCSAFLUSH, &quiet) < 0) {
        snprintf(err, errlen, "cannot turn off echo: %s", strerror(errno));
        n = -1;
        goto out;
    }
    if (write(fd, prompt, strlen(prompt)) < 0) {
        snprintf(err, errlen, "cannot write to /dev/tty: %s", strerror(errno));
        n = -1;
        goto out_restore;
    }
    n = pw_read_line(fd, buf);
    if (n == -2)
        snprintf(err, errlen, "password longer than %d bytes", TERNCTL_PW_MAX);
    else if (n < 0)
        snprintf(err, errlen, "no password read from /dev/tty");
out_restore:
    tcsetattr(fd, TCSAFLUSH, &tty_saved);
    (void) !write(fd, "\n", 1); /* the newline that echo swallowed */
out:
    tty_fd = -1;
    for (size_t i = 0; i < 4; i++)
        sigaction(sigs[i], &old[i], NULL);
    close(fd);
    return n;
}

/*
 * pw_get() fills PW (TERNCTL_PW_MAX + 1 bytes) for command CMD: from stdin when FROM_STDIN,
 * else from the terminal, asked twice when a new password is being set. Returns the
 * length, or -1 with ERR set. The caller zeroes PW.
 */
static long pw_get(const struct ternctl_cmd *cmd, bool from_stdin, char *pw, char *err,
                   size_t errlen)
{
    char again[TERNCTL_PW_MAX + 1];
    long n, m;

    if (from_stdin) {
        n = pw_read_line(STDIN_FILENO, pw);
        if (n == -2)
            snprintf(err, errlen, "password longer than %d bytes", TERNCTL_PW_MAX);
        else if (n < 0 && errno == 0)
            snprintf(err, errlen, "--password-stdin: no password on stdin");
        else if (n < 0)
            snprintf(err, errlen, "--password-stdin: %s", strerror(errno));
    } else {
        n = pw_prompt("Password: ", pw, err, errlen);
        if (n >= 0 && (cmd->flags & TERNCTL_NEW_PW)) {
            m = pw_prompt("Retype password: ", again, err, errlen);
            if (m >= 0 && (m != n || memcmp(pw, again, (size_t) n) != 0)) {
                snprintf(err, errlen, "passwords do not match");
                m = -1;
            }
            explicit_bzero(again, sizeof(again));
            if (m < 0)
                n = -1;
        }
    }
    if (n == 0 && (cmd->flags & TERNCTL_NEW_PW)) {
        snprintf(err, errlen, "empty password refused");
        n = -1;
    }
    if (n < 0)
        explicit_bzero(pw, TERNCTL_PW_MAX + 1);
    return n < 0 ? -1 : n;
}

/* ---- the admin socket ---- */

/* Writes all LEN bytes of BUF to FD (whose SO_SNDTIMEO bounds each wait). */
static int write_all(int fd, const uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        buf += n;
        len -= (size_t) n;
    }
    return 0;
}

/*
 * admin_connect() connects to the unix socket PATH, with connect and every later send
 * bounded by the time left until DEADLINE. Returns the fd, or -1 with ERR set.
 */
static int admin_connect(const char *path, const struct timespec *deadline, char *err,
                         size_t errlen)
{
    struct sockaddr_un sun;
    struct timeval tv;
    int ms = ms_left(deadline);
    int fd;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sun.sun_path)) {
        snprintf(err, errlen, "cannot connect to %s: socket path longer than %zu bytes", path,
                 sizeof(sun.sun_path) - 1);
        return -1;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot connect to %s: socket: %s", path, strerror(errno));
        return -1;
    }
    /* Linux bounds a unix connect() waiting on a full backlog by SO_SNDTIMEO. */
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *) &sun, sizeof(sun)) < 0) {
        snprintf(err, errlen, "cannot connect to %s: %s%s", path, strerror(errno),
                 errno == ENOENT || errno == ECONNREFUSED ? " (is ternd running?)" : "");
        close(fd);
        return -1;
    }
    return fd;
}

/*
 * admin_send() packs REQ into one frame and writes it to FD. The packed copy (which may
 * hold a password) is zeroed before it is freed. Returns 0 or -1 with ERR set.
 */
static int admin_send(int fd, const char *path, const Tern__AdminRequest *req, char *err,
                      size_t errlen)
{
    size_t len = tern__admin_request__get_packed_size(req);
    uint8_t *buf;
    int rv;

    if (len > FRAME_ADMIN_MAX) {
        snprintf(err, errlen, "request too large (%zu bytes)", len);
        return -1;
    }
    buf = malloc(FRAME_HDR + len);
    if (buf == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    frame_header(buf, (uint32_t) len);
    tern__admin_request__pack(req, buf + FRAME_HDR);
    rv = write_all(fd, buf, FRAME_HDR + len);
    if (rv < 0)
        snprintf(err, errlen, "%s: cannot send request: %s", path,
                 errno == EAGAIN ? "timed out" : strerror(errno));
    explicit_bzero(buf, FRAME_HDR + len);
    free(buf);
    return rv;
}

/*
 * admin_recv() reads one response frame from FD before DEADLINE (TIMEOUT_MS after the
 * start: for the message) and unpacks it. Returns the response (the caller frees it with
 * tern__admin_response__free_unpacked), or NULL with ERR set: timeout, connection
 * closed, frame over FRAME_ADMIN_MAX, bad protobuf.
 */
static Tern__AdminResponse *admin_recv(int fd, const char *path, const struct timespec *deadline,
                                       int timeout_ms, char *err, size_t errlen)
{
    size_t cap = FRAME_HDR + FRAME_ADMIN_MAX, got = 0;
    Tern__AdminResponse *resp = NULL;
    const uint8_t *payload;
    uint8_t *buf;
    long plen;

    buf = malloc(cap);
    if (buf == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        ssize_t n;
        int ready;

        plen = frame_parse(buf, got, FRAME_ADMIN_MAX, &payload);
        if (plen >= 0)
            break;
        if (plen == -2) {
            snprintf(err, errlen, "%s: protocol error: response frame over %d bytes", path,
                     FRAME_ADMIN_MAX);
            goto out;
        }
        if (got == cap) { /* defensive: frame_parse() said -2 for anything longer */
            snprintf(err, errlen, "%s: protocol error: response does not fit", path);
            goto out;
        }
        ready = poll(&pfd, 1, ms_left(deadline));
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready < 0) {
            snprintf(err, errlen, "%s: poll: %s", path, strerror(errno));
            goto out;
        }
        if (ready == 0) {
            snprintf(err, errlen, "%s: no response within %d s", path, timeout_ms / 1000);
            goto out;
        }
        n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errlen, "%s: cannot read response: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0) {
            snprintf(err, errlen, "%s: connection closed by ternd before a response", path);
            goto out;
        }
        got += (size_t) n;
    }
    resp = tern__admin_response__unpack(NULL, (size_t) plen, payload);
    if (resp == NULL)
        snprintf(err, errlen, "%s: protocol error: malformed response", path);
out:
    free(buf);
    return resp;
}

/* Writes S and a newline to OUT with control bytes shown as '?' (see SECURITY). */
static void print_clean(FILE *out, const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char) *s;

        fputc(c < 0x20 || c == 0x7f ? '?' : c, out);
    }
    fputc('\n', out);
}

/*
 * admin_call() sends REQ to the socket PATH and waits for the answer, everything within
 * TIMEOUT_MS. Returns the response (free with tern__admin_response__free_unpacked) or
 * NULL with ERR set, which means "unavailable".
 */
static Tern__AdminResponse *admin_call(const char *path, const Tern__AdminRequest *req,
                                       int timeout_ms, char *err, size_t errlen)
{
    Tern__AdminResponse *resp = NULL;
    struct timespec deadline;
    int fd;

    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    fd = admin_connect(path, &deadline, err, errlen);
    if (fd < 0)
        return NULL;
    if (admin_send(fd, path, req, err, errlen) == 0)
        resp = admin_recv(fd, path, &deadline, timeout_ms, err, errlen);
    close(fd);
    return resp;
}

/* ---- the command line ---- */

/* What the command line asks for. Strings point into argv. */
struct ternctl_line {
    const char *sock;
    const struct ternctl_cmd *cmd;
    const char *args[TERNCTL_ARGS_MAX];
    int nargs;
    bool pw_stdin;
    int argc; /* the whole command line, for haproxy-config's header */
    char **argv;
};

/* Finds the command named by the words at ARGV (ARGC of them); sets *NWORDS. */
static const struct ternctl_cmd *cmd_find(int argc, char **argv, int *nwords)
{
    for (size_t i = 0; i < TERNCTL_NCMDS; i++) {
        const struct ternctl_cmd *c = &ternctl_cmds[i];

        if (strcmp(argv[0], c->word1) != 0)
            continue;
        if (c->word2 == NULL) {
            *nwords = 1;
            return c;
        }
        if (argc >= 2 && strcmp(argv[1], c->word2) == 0) {
            *nwords = 2;
            return c;
        }
    }
    return NULL;
}

/* True for an argument that tries to pass a password on the command line. */
static bool is_password_option(const char *a)
{
    return strncmp(a, "--password", 10) == 0 || strncmp(a, "--pass=", 7) == 0 ||
           strcmp(a, "--pass") == 0;
}

static int refuse_password_option(const char *a)
{
    return fail(TERNCTL_REFUSED,
                "%s: passwords are never taken from the command line; "
                "use --password-stdin or the prompt",
                a);
}

/*
 * options() reads the options before the command into L. Returns the index of the
 * command's first word, or -1 - EXIT when ternctl should exit with EXIT (--help, errors).
 */
static int options(int argc, char **argv, struct ternctl_line *l)
{
    int i;

    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return -1 - TERNCTL_OK;
        } else if (strcmp(a, "--socket") == 0 && i + 1 < argc) {
            l->sock = argv[++i];
        } else if (strncmp(a, "--socket=", 9) == 0) {
            l->sock = a + 9;
        } else if (strcmp(a, "--password-stdin") == 0) {
            l->pw_stdin = true;
        } else if (is_password_option(a)) {
            return -1 - refuse_password_option(a);
        } else {
            fail(TERNCTL_REFUSED,
                 strcmp(a, "--socket") == 0 ? "--socket needs a PATH" : "unknown option %s", a);
            usage(stderr);
            return -1 - TERNCTL_REFUSED;
        }
    }
    if (i == argc) {
        usage(stderr);
        return -1 - TERNCTL_REFUSED;
    }
    return i;
}

/*
 * cmdline() fills L from ARGV: options, the command, then its args, passed verbatim but
 * for --password-stdin (taken out) and password options (refused). Returns -1 when the
 * request can be sent, else the exit status.
 */
static int cmdline(int argc, char **argv, struct ternctl_line *l)
{
    const struct ternctl_cmd *c;
    int i, nwords;

    i = options(argc, argv, l);
    if (i < 0)
        return -1 - i;
    c = l->cmd = cmd_find(argc - i, argv + i, &nwords);
    if (c == NULL) {
        fail(TERNCTL_REFUSED, "unknown command '%s%s%s'", argv[i], i + 1 < argc ? " " : "",
             i + 1 < argc ? argv[i + 1] : "");
        usage(stderr);
        return TERNCTL_REFUSED;
    }
    for (i += nwords; i < argc; i++) {
        if (strcmp(argv[i], "--password-stdin") == 0) {
            l->pw_stdin = true;
            continue;
        }
        if (is_password_option(argv[i]))
            return refuse_password_option(argv[i]);
        if (l->nargs == TERNCTL_ARGS_MAX)
            return fail(TERNCTL_REFUSED, "more than %d arguments", TERNCTL_ARGS_MAX);
        if (strlen(argv[i]) > TERNCTL_ARG_MAX)
            return fail(TERNCTL_REFUSED, "argument %d longer than %d bytes", l->nargs + 1,
                        TERNCTL_ARG_MAX);
        l->args[l->nargs++] = argv[i];
    }
    if (l->nargs < c->min_args || l->nargs > c->max_args)
        return fail(TERNCTL_REFUSED, "usage: ternctl %s%s%s%s%s", c->word1, c->word2 ? " " : "",
                    c->word2 ? c->word2 : "", c->synopsis[0] ? " " : "", c->synopsis);
    if (l->pw_stdin && !(c->flags & TERNCTL_PASSWORD))
        return fail(TERNCTL_REFUSED, "--password-stdin: '%s' takes no password", c->verb);
    if (l->sock == NULL) {
        l->sock = getenv(TERNCTL_SOCKET_ENV);
        if (l->sock == NULL || l->sock[0] == '\0')
            l->sock = TERNCTL_SOCKET_DEFAULT;
    }
    if (l->sock[0] == '\0')
        return fail(TERNCTL_REFUSED, "--socket: empty path");
    return -1;
}

/* ---- main ---- */

/* report() prints RESP's lines to stdout and its error to stderr; returns the exit status. */
static int report(const Tern__AdminResponse *resp, const char *sock, bool raw)
{
    bool out_err;
    int rc;

    for (size_t i = 0; i < resp->n_lines; i++) {
        if (!raw || resp->status != 0) {
            print_clean(stdout, resp->lines[i]);
            continue;
        }
        /* a message body: the bytes as stored, for redirection to a file */
        unsigned char bin[96];
        size_t n = strlen(resp->lines[i]);
        int len = n <= 76 && n % 4 == 0
                      ? EVP_DecodeBlock(bin, (const unsigned char *) resp->lines[i], (int) n)
                      : -1;
        if (len < 0)
            return fail(TERNCTL_UNAVAILABLE, "bad data in the answer");
        while (len > 0 && n >= 1 && resp->lines[i][n - 1] == '=') { /* padding */
            len--;
            n--;
        }
        fwrite(bin, 1, (size_t) len, stdout);
    }
    out_err = fflush(stdout) != 0 || ferror(stdout);
    switch (resp->status) {
    case 0:
        rc = TERNCTL_OK;
        break;
    case 1:
    case 2:
        rc = resp->status == 1 ? TERNCTL_REFUSED : TERNCTL_UNAVAILABLE;
        fputs("ternctl: ", stderr);
        print_clean(stderr, resp->error && resp->error[0] ? resp->error
                            : rc == TERNCTL_REFUSED       ? "refused"
                                                          : "unavailable");
        break;
    default:
        rc = fail(TERNCTL_UNAVAILABLE, "%s: protocol error: unknown status %d", sock,
                  (int) resp->status);
    }
    if (out_err && rc == TERNCTL_OK)
        rc = fail(TERNCTL_UNAVAILABLE, "cannot write output: %s", strerror(errno));
    return rc;
}

/* ---- haproxy-config ---- */

#define HACFG_CMD_MAX 2048 /* bytes of the command line quoted in the header comment */

/* What haproxy-config was asked for. Strings point into argv. */
struct hacfg {
    struct hagen_opts opts;
    char command[HACFG_CMD_MAX + 1];
    /*
     * Testing aid, left out of --help: read the member lines from this file (one per
     * line, blank lines skipped) instead of asking ternd, so that the generator can be
     * tried on a fixed cluster without one (tests/integration/test_haproxy_config.py).
     */
    const char *members_file;
};

enum hacfg_opt { HACFG_BIND, HACFG_PORTS, HACFG_SOURCE, HACFG_STATS, HACFG_MAXCONN, HACFG_FILE };
static const char *const hacfg_opt_names[] = {"--bind",  "--ports",   "--source",
                                              "--stats", "--maxconn", "--members-file"};
#define HACFG_NOPTS (sizeof(hacfg_opt_names) / sizeof(hacfg_opt_names[0]))

/*
 * hacfg_value() returns the value of the option at L->args[*I] when it is NAME, given as
 * "NAME=VALUE" or as "NAME" "VALUE" (then *I moves to VALUE). NULL when it is another
 * option; *MISSING is set when it is NAME with nothing after it.
 */
static const char *hacfg_value(const struct ternctl_line *l, int *i, const char *name,
                               bool *missing)
{
    const char *a = l->args[*i];
    size_t n = strlen(name);

    if (strncmp(a, name, n) != 0 || (a[n] != '\0' && a[n] != '='))
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (*i + 1 >= l->nargs) {
        *missing = true;
        return NULL;
    }
    return l->args[++*i];
}

/* hacfg_quote() appends " ARG" to BUF (LEN used of SIZE), shell-quoted when needed. */
static void hacfg_quote(char *buf, size_t size, size_t *len, const char *arg)
{
    static const char safe[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                               "0123456789_-./:=,@%+[]";
    bool plain = arg[0] != '\0' && strspn(arg, safe) == strlen(arg);
    size_t need = 1 + strlen(arg) + (plain ? 0 : 2);
    char *p;

    for (const char *c = arg; !plain && *c != '\0'; c++)
        need += *c == '\'' ? 3 : 0; /* ' becomes '\'' */
    if (*len + need + 4 > size) {   /* room for " ..." and the NUL */
        if (*len + 4 < size && (*len < 4 || strcmp(buf + *len - 4, " ...") != 0))
            *len += (size_t) snprintf(buf + *len, size - *len, " ...");
        return;
    }
    p = buf + *len;
    *p++ = ' ';
    if (!plain)
        *p++ = '\'';
    for (const char *c = arg; *c != '\0'; c++) {
        if (!plain && *c == '\'') {
            memcpy(p, "'\\''", 4);
            p += 4;
        } else {
            *p++ = *c;
        }
    }
    if (!plain)
        *p++ = '\'';
    *p = '\0';
    *len = (size_t) (p - buf);
}

/* hacfg_options() fills CFG from L's arguments; returns -1, or the exit status. */
static int hacfg_options(const struct ternctl_line *l, struct hacfg *cfg)
{
    char err[TERNCTL_ERR_MAX];
    size_t len;

    hagen_opts_init(&cfg->opts);
    for (int i = 0; i < l->nargs; i++) {
        const char *v = NULL;
        bool missing = false;
        size_t o;
        int rv = 0;

        for (o = 0; o < HACFG_NOPTS; o++) {
            v = hacfg_value(l, &i, hacfg_opt_names[o], &missing);
            if (v != NULL || missing)
                break;
        }
        if (o == HACFG_NOPTS)
            return fail(TERNCTL_REFUSED, "haproxy-config: unknown option '%s' (see --help)",
                        l->args[i]);
        if (missing)
            return fail(TERNCTL_REFUSED, "haproxy-config: %s needs a value", hacfg_opt_names[o]);
        switch ((enum hacfg_opt) o) {
        case HACFG_BIND:
            rv = hagen_parse_ip(v, &cfg->opts.bind, err, sizeof(err));
            break;
        case HACFG_PORTS:
            rv = hagen_parse_ports(v, cfg->opts.ports, err, sizeof(err));
            break;
        case HACFG_SOURCE:
            rv = hagen_parse_ip(v, &cfg->opts.source, err, sizeof(err));
            break;
        case HACFG_STATS:
            rv = hagen_parse_addr(v, 0, &cfg->opts.stats, err, sizeof(err));
            break;
        case HACFG_MAXCONN:
            rv = hagen_parse_maxconn(v, &cfg->opts.maxconn, err, sizeof(err));
            break;
        case HACFG_FILE:
            cfg->members_file = v;
            break;
        }
        if (rv < 0)
            return fail(TERNCTL_REFUSED, "haproxy-config: %s: %s", hacfg_opt_names[o], err);
    }
    if (hagen_check_opts(&cfg->opts, err, sizeof(err)) < 0)
        return fail(TERNCTL_REFUSED, "haproxy-config: %s", err);
    len = (size_t) snprintf(cfg->command, sizeof(cfg->command), "ternctl");
    for (int i = 1; i < l->argc; i++)
        hacfg_quote(cfg->command, sizeof(cfg->command), &len, l->argv[i]);
    cfg->opts.command = cfg->command;
    return -1;
}

/*
 * hacfg_print() parses the N member LINES (from ORIGIN, for messages), writes the
 * configuration to stdout and returns the exit status: a malformed line or members that
 * make no configuration are "unavailable" (2), like any bad answer from ternd.
 */
static int hacfg_print(const struct hacfg *cfg, char *const *lines, size_t n, const char *origin)
{
    char err[TERNCTL_ERR_MAX], why[TERNCTL_ERR_MAX];
    struct hagen_member *ms;
    size_t nm = 0;
    char *text;
    int rc = TERNCTL_OK;

    ms = calloc(n > 0 ? n : 1, sizeof(*ms));
    if (ms == NULL)
        return fail(TERNCTL_UNAVAILABLE, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (cfg->members_file != NULL && lines[i][0] == '\0')
            continue; /* a blank line in the file */
        if (hagen_parse_member(lines[i], &ms[nm], why, sizeof(why)) < 0) {
            rc = fail(TERNCTL_UNAVAILABLE, "%s: cluster.members line %zu: %s", origin, i + 1, why);
            goto out;
        }
        nm++;
    }
    for (size_t i = 0; i < nm; i++)
        if (!hagen_in_rotation(ms[i].role))
            fprintf(stderr, "ternctl: warning: member %llu is %s: its servers are disabled\n",
                    (unsigned long long) ms[i].id, hagen_role_name(ms[i].role));
    text = hagen_config(ms, nm, &cfg->opts, err, sizeof(err));
    if (text == NULL) {
        rc = fail(TERNCTL_UNAVAILABLE, "%s: no HAProxy configuration from these members: %s",
                  origin, err);
        goto out;
    }
    fputs(text, stdout);
    free(text);
    if (fflush(stdout) != 0 || ferror(stdout))
        rc = fail(TERNCTL_UNAVAILABLE, "cannot write output: %s", strerror(errno));
out:
    free(ms);
    return rc;
}

/*
 * hacfg_read_file() reads PATH (at most FRAME_ADMIN_MAX bytes, as ternd's answer) into
 * *BUF and splits it into *LINES (*N of them), both malloc'd for the caller to free.
 * Returns 0 or -1 with ERR set.
 */
static int hacfg_read_file(const char *path, char **buf, char ***lines, size_t *n, char *err,
                           size_t errlen)
{
    size_t len = 0, cap = FRAME_ADMIN_MAX + 1, count = 0;
    FILE *f = fopen(path, "r");
    char *p;

    *buf = NULL;
    *lines = NULL;
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    *buf = malloc(cap + 1);
    if (*buf == NULL) {
        fclose(f);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    len = fread(*buf, 1, cap, f);
    if (ferror(f) || len == cap || memchr(*buf, '\0', len) != NULL) {
        snprintf(err, errlen, "%s: %s", path,
                 ferror(f)    ? "read error"
                 : len == cap ? "larger than an admin answer may be"
                              : "NUL byte");
        fclose(f);
        return -1;
    }
    fclose(f);
    (*buf)[len] = '\0';
    for (p = *buf; *p != '\0'; p++)
        count += *p == '\n';
    *lines = calloc(count + 1, sizeof(**lines));
    if (*lines == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    *n = 0;
    for (p = *buf; *p != '\0';) {
        char *nl = strchr(p, '\n');

        (*lines)[(*n)++] = p;
        if (nl == NULL)
            break;
        *nl = '\0';
        p = nl + 1;
    }
    return 0;
}

/* haproxy-config: the members from ternd (cluster.members) or --members-file, then print. */
static int hacfg_run(const struct ternctl_line *l)
{
    Tern__AdminRequest req = TERN__ADMIN_REQUEST__INIT;
    char err[TERNCTL_ERR_MAX];
    Tern__AdminResponse *resp;
    struct hacfg cfg = {0};
    int rc;

    rc = hacfg_options(l, &cfg);
    if (rc >= 0)
        return rc;
    if (cfg.members_file != NULL) {
        char *buf, **lines;
        size_t n = 0;

        if (hacfg_read_file(cfg.members_file, &buf, &lines, &n, err, sizeof(err)) < 0)
            rc = fail(TERNCTL_UNAVAILABLE, "%s", err);
        else
            rc = hacfg_print(&cfg, lines, n, cfg.members_file);
        free(lines);
        free(buf);
        return rc;
    }
    req.verb = (char *) l->cmd->verb;
    resp = admin_call(l->sock, &req, TERNCTL_TIMEOUT_MS, err, sizeof(err));
    if (resp == NULL)
        return fail(TERNCTL_UNAVAILABLE, "%s", err);
    if (resp->status != 0)
        rc = report(resp, l->sock, false);
    else
        rc = hacfg_print(&cfg, resp->lines, resp->n_lines, l->sock);
    tern__admin_response__free_unpacked(resp, NULL);
    return rc;
}

int main(int argc, char **argv)
{
    Tern__AdminRequest req = TERN__ADMIN_REQUEST__INIT;
    struct ternctl_line l = {0};
    char pw[TERNCTL_PW_MAX + 1], err[TERNCTL_ERR_MAX];
    Tern__AdminResponse *resp;
    long pwlen;
    int rc;

    rc = cmdline(argc, argv, &l);
    if (rc >= 0)
        return rc;
    l.argc = argc;
    l.argv = argv;
    if (l.cmd->flags & TERNCTL_HAPROXY)
        return hacfg_run(&l);
    req.verb = (char *) l.cmd->verb;
    req.n_args = (size_t) l.nargs;
    req.args = (char **) l.args;
    if (l.cmd->flags & TERNCTL_PASSWORD) {
        pwlen = pw_get(l.cmd, l.pw_stdin, pw, err, sizeof(err));
        if (pwlen < 0)
            return fail(TERNCTL_REFUSED, "%s", err);
        req.has_password = 1;
        req.password.data = (uint8_t *) pw;
        req.password.len = (size_t) pwlen;
    }
    resp = admin_call(l.sock, &req,
                      (l.cmd->flags & TERNCTL_SLOW) ? TERNCTL_SLOW_MS : TERNCTL_TIMEOUT_MS, err,
                      sizeof(err));
    explicit_bzero(pw, sizeof(pw));
    if (resp == NULL)
        return fail(TERNCTL_UNAVAILABLE, "%s", err);
    rc = report(resp, l.sock, (l.cmd->flags & TERNCTL_RAW) != 0);
    tern__admin_response__free_unpacked(resp, NULL);
    return rc;
}
