/*
 * node/main.c
 * ternd: the node daemon and the one place that wires the layers together
 * (storage -> raft -> node -> proxy, DESIGN.md).
 *
 * Start: config (embedded defaults, tern.conf, --set), the data dir lock, RocksDB, the
 * FSM, the consensus thread (bootstrapping a one-voter cluster on a fresh dir), then the
 * main loop with the admin socket and signal handlers. SIGTERM/SIGINT stop it in the
 * reverse order: no new admin requests, consensus stopped (pending proposals fail with
 * "shutting down"), queued completions run, handles closed, store closed.
 *
 * SECURITY: ternd runs as an unprivileged user on unprivileged ports by default; the data
 * dir and admin socket are created private (0700 / 0600).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "admin.h"
#include "auth.h"
#include "cluster.h"
#include "config.h"
#include "consensus.h"
#include "db.h"
#include "fsm.h"
#include "log.h"
#include "loopq.h"
#include "net.h"
#include "imap.h"
#include "pop3.h"
#include "smtp.h"

#define EXIT_CONFIG      2
#define TERND_THREADPOOL "32" /* unless UV_THREADPOOL_SIZE is set already */

struct ternd {
    struct config cfg;
    uv_loop_t *loop;
    uv_signal_t sigterm, sigint;
    struct loopq q;
    struct db *db;
    struct fsm *fsm;
    struct cons *cons;
    struct cluster *cluster;
    struct auth_key key;
    char secret_path[PATH_MAX + 32];
    struct admin *admin;
    _Atomic(struct net_server *) net; /* read by the FSM event hook (consensus thread) */
    int lock_fd;
    char data_dir[PATH_MAX];
    char lock_path[PATH_MAX + 16];
    bool stopping;
};

static void usage(FILE *out)
{
    fprintf(out, "usage: ternd [--config FILE] [--data DIR] [--set section.key=value]...\n"
                 "             [--print-config]\n"
                 "  --config FILE     read tern.conf FILE (every key has a default)\n"
                 "  --data DIR        data directory (node.data_dir)\n"
                 "  --set S.K=V       override one key, e.g. --set raft.address=127.0.0.1:7002\n"
                 "  --print-config    print the effective configuration and exit\n");
}

static int mkdir_p(const char *path, mode_t mode)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int) sizeof tmp)
        return -1;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(tmp, mode) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(tmp, mode) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* take_lock(): the data dir belongs to one ternd; the lock file also holds its pid. */
static int take_lock(struct ternd *t)
{
    snprintf(t->lock_path, sizeof t->lock_path, "%s/ternd.pid", t->data_dir);
    t->lock_fd = open(t->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (t->lock_fd < 0) {
        fprintf(stderr, "ternd: cannot open %s: %s\n", t->lock_path, strerror(errno));
        return -1;
    }
    if (flock(t->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        char buf[32] = {0};
        ssize_t n = pread(t->lock_fd, buf, sizeof buf - 1, 0);
        long pid = n > 0 ? strtol(buf, NULL, 10) : 0;
        fprintf(stderr, "ternd: data dir %s is held by another ternd (pid %ld)\n", t->data_dir,
                pid);
        close(t->lock_fd);
        t->lock_fd = -1;
        return -1;
    }
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld\n", (long) getpid());
    if (ftruncate(t->lock_fd, 0) != 0 || pwrite(t->lock_fd, buf, (size_t) n, 0) != n) {
        fprintf(stderr, "ternd: cannot write %s: %s\n", t->lock_path, strerror(errno));
        return -1;
    }
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    (void) h;
}

static void shutdown_node(struct ternd *t)
{
    if (t->stopping)
        return;
    t->stopping = true;
    log_info("ternd.stopping", "node=%" PRIu64, config_uint(&t->cfg, "node", "id"));
    admin_stop(t->admin);
    t->admin = NULL;
    cluster_stop(t->cluster); /* forwarded proposals in flight end with "shutting down" */
    cons_stop(t->cons);       /* in-flight proposals complete with ESHUTDOWN, via the loopqs */
    struct net_server *net = atomic_exchange(&t->net, NULL);
    net_stop(net); /* closes every client connection and joins the workers */
    loopq_close(&t->q);
    uv_close((uv_handle_t *) &t->sigterm, on_handle_closed);
    uv_close((uv_handle_t *) &t->sigint, on_handle_closed);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct ternd *t = s->data;
    log_info("ternd.signal", "signal=%d", signum);
    shutdown_node(t);
}

static const struct smtp_listen_cfg smtp_mx = {.role = SMTP_ROLE_MX};
static const struct smtp_listen_cfg smtp_submission = {.role = SMTP_ROLE_SUBMISSION};

/* start_frontends(): the client listeners named in [listen] (empty = off). */
static int start_frontends(struct ternd *t, char *err, size_t errlen)
{
    static const struct {
        const char *key;
        enum net_tls_mode tls;
        const struct net_proto *proto;
        const void *cfg;
    } table[] = {
        {"smtp", NET_TLS_STARTTLS, &smtp_proto, &smtp_mx},
        {"submission", NET_TLS_STARTTLS, &smtp_proto, &smtp_submission},
        {"smtps", NET_TLS_IMPLICIT, &smtp_proto, &smtp_submission},
        {"imap", NET_TLS_STARTTLS, &imap_proto, NULL},
        {"imaps", NET_TLS_IMPLICIT, &imap_proto, NULL},
        {"pop3", NET_TLS_STARTTLS, &pop3_proto, NULL},
        {"pop3s", NET_TLS_IMPLICIT, &pop3_proto, NULL},
    };
    struct net_listen ls[sizeof table / sizeof table[0]];
    char hosts[sizeof table / sizeof table[0]][256];
    size_t n = 0;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        const char *v = config_str(&t->cfg, "listen", table[i].key);
        if (v[0] == 0)
            continue;
        uint16_t port;
        if (config_parse_addr(v, hosts[n], sizeof hosts[n], &port) != 0) {
            snprintf(err, errlen, "listen.%s: bad address '%s'", table[i].key, v);
            return -1;
        }
        ls[n] = (struct net_listen){.name = table[i].key,
                                    .host = hosts[n],
                                    .port = port,
                                    .tls = table[i].tls,
                                    .proto = table[i].proto,
                                    .proto_cfg = table[i].cfg};
        n++;
    }
    struct net_node node = {.db = t->db,
                            .cons = t->cons,
                            .cluster = t->cluster,
                            .fsm = t->fsm,
                            .cfg = &t->cfg,
                            .hostname = config_str(&t->cfg, "node", "hostname")};
    struct net_server *net = NULL;
    if (net_start(&node, ls, n, t->data_dir, &net, err, errlen) != 0)
        return -1;
    atomic_store(&t->net, net);
    return 0;
}

/* on_fsm_event(): every applied change reaches the frontends (IMAP IDLE and friends). */
static void on_fsm_event(void *ctx, const struct fsm_event *ev)
{
    struct ternd *t = ctx;
    net_publish(atomic_load(&t->net), ev);
}

/* load_config(): defaults, then --config, then --data and each --set in order. */
static int load_config(struct ternd *t, int argc, char **argv, bool *print)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"data", required_argument, NULL, 'd'},
        {"set", required_argument, NULL, 's'},    {"print-config", no_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    char err[CONFIG_ERR_MAX];
    const char *file = NULL;
    int c;
    if (config_init(&t->cfg) != 0) {
        fprintf(stderr, "ternd: out of memory\n");
        return -1;
    }
    /* first pass: the file, so that --data and --set apply on top of it */
    while ((c = getopt_long(argc, argv, "c:d:s:ph", opts, NULL)) != -1) {
        if (c == 'c')
            file = optarg;
        else if (c == 'h') {
            usage(stdout);
            exit(0);
        } else if (c == '?') {
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ternd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return -1;
    }
    if (file && config_load(&t->cfg, file, err) != 0) {
        fprintf(stderr, "ternd: %s\n", err);
        return -1;
    }
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:d:s:ph", opts, NULL)) != -1) {
        if (c == 'd' && config_set(&t->cfg, "node.data_dir", optarg, err) != 0) {
            fprintf(stderr, "ternd: --data: %s\n", err);
            return -1;
        }
        if (c == 'p')
            *print = true;
        if (c == 's') {
            char name[128];
            const char *eq = strchr(optarg, '=');
            if (eq == NULL || (size_t) (eq - optarg) >= sizeof name) {
                fprintf(stderr, "ternd: --set wants section.key=value, got '%s'\n", optarg);
                return -1;
            }
            memcpy(name, optarg, (size_t) (eq - optarg));
            name[eq - optarg] = 0;
            if (config_set(&t->cfg, name, eq + 1, err) != 0) {
                fprintf(stderr, "ternd: --set %s: %s\n", name, err);
                return -1;
            }
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct ternd t;
    memset(&t, 0, sizeof t);
    t.lock_fd = -1;
    bool print = false;
    char err[512];
    int status = 1;

    if (load_config(&t, argc, argv, &print) != 0) {
        config_free(&t.cfg);
        return EXIT_CONFIG;
    }
    if (print) {
        config_print(&t.cfg, stdout);
        config_free(&t.cfg);
        return 0;
    }
    int level = log_parse_level(config_str(&t.cfg, "log", "level"));
    log_set_level(level < 0 ? LOG_INFO : (enum log_level) level);
    signal(SIGPIPE, SIG_IGN); /* raft and clients write to peers that may be gone */
    /* libuv's thread pool (default 4) runs every body fsync, libraft's disk writes and the
     * password hashes: 4 threads capped how many bodies share one RocksDB sync. Set before
     * the pool starts (benchmarks/README.md: +25% at 20 connections, +40% at 60). */
    setenv("UV_THREADPOOL_SIZE", TERND_THREADPOOL, 0);

    uint64_t id = config_uint(&t.cfg, "node", "id");
    if (id == 0) {
        fprintf(stderr, "ternd: node.id must be > 0\n");
        config_free(&t.cfg);
        return EXIT_CONFIG;
    }
    const char *dd = config_str(&t.cfg, "node", "data_dir");
    if (dd[0] == 0 || realpath(dd, t.data_dir) == NULL) {
        if (dd[0] == 0 || mkdir_p(dd, 0700) != 0 || realpath(dd, t.data_dir) == NULL) {
            fprintf(stderr, "ternd: cannot create data dir '%s': %s\n", dd, strerror(errno));
            config_free(&t.cfg);
            return 1;
        }
    }
    if (take_lock(&t) != 0)
        goto out;

    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/db", t.data_dir);
    char dberr[DB_ERR_MAX];
    if (db_open(path, &t.db, dberr) != 0) {
        fprintf(stderr, "ternd: %s\n", dberr);
        goto out;
    }
    if (fsm_open(t.db, &t.fsm) != 0) {
        fprintf(stderr, "ternd: cannot read the state machine's applied index\n");
        goto out;
    }
    fsm_set_event_cb(t.fsm, on_fsm_event, &t);
    log_info("ternd.start", "node=%" PRIu64 " data=%s applied=%" PRIu64, id, t.data_dir,
             fsm_applied_index(t.fsm));

    /* the cluster secret: every internal connection proves it (raft/auth.h) */
    const char *sf = config_str(&t.cfg, "cluster", "secret_file");
    bool bootstrap = config_bool(&t.cfg, "cluster", "bootstrap");
    if (sf[0])
        snprintf(t.secret_path, sizeof t.secret_path, "%s", sf);
    else
        snprintf(t.secret_path, sizeof t.secret_path, "%s/cluster.secret", t.data_dir);
    if (access(t.secret_path, F_OK) != 0 && errno == ENOENT && bootstrap) {
        if (auth_key_create(t.secret_path, &t.key, err, sizeof err) != 0) {
            fprintf(stderr, "ternd: %s\n", err);
            goto out;
        }
        log_info("cluster.secret_created", "file=%s", t.secret_path);
    } else if (auth_key_load(t.secret_path, &t.key, err, sizeof err) != 0) {
        fprintf(stderr, "ternd: cluster secret: %s%s\n", err,
                bootstrap ? "" : " (a node that joins needs the first node's secret file)");
        status = EXIT_CONFIG;
        goto out;
    }
    {
        static const char *names[] = {"smtp",  "submission", "smtps", "imap",
                                      "imaps", "pop3",       "pop3s"};
        struct cluster_config clc = {
            .id = id,
            .raft_address = config_str(&t.cfg, "raft", "address"),
            .rpc_address = config_str(&t.cfg, "cluster", "rpc_address"),
            .zone = config_str(&t.cfg, "node", "zone"),
            .replicas = (unsigned) config_uint(&t.cfg, "cluster", "replicas"),
            .frame_max = (size_t) config_size(&t.cfg, "smtp", "max_message_size") + (1u << 20),
            .repair_interval_ms = (unsigned) config_uint(&t.cfg, "cluster", "repair_interval_ms"),
            .gc_grace_ms = (unsigned) config_uint(&t.cfg, "cluster", "gc_grace_ms"),
        };
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            const char *v = config_str(&t.cfg, "listen", names[i]);
            if (v[0] == 0)
                continue;
            clc.listen_name[clc.n_listen] = names[i];
            clc.listen_addr[clc.n_listen++] = v;
        }
        if (clc.replicas == 0) {
            fprintf(stderr, "ternd: cluster.replicas must be > 0\n");
            status = EXIT_CONFIG;
            goto out;
        }
        if (cluster_start(&clc, &t.key, t.db, t.fsm, &t.cluster, err, sizeof err) != 0) {
            fprintf(stderr, "ternd: %s\n", err);
            goto out;
        }
    }

    char raftdir[PATH_MAX + 32];
    snprintf(raftdir, sizeof raftdir, "%s/raft", t.data_dir);
    struct cons_config cc = {
        .id = id,
        .address = config_str(&t.cfg, "raft", "address"),
        .dir = raftdir,
        .election_ms = (unsigned) config_uint(&t.cfg, "raft", "election_timeout_ms"),
        .heartbeat_ms = (unsigned) config_uint(&t.cfg, "raft", "heartbeat_ms"),
        .snapshot_threshold = (unsigned) config_uint(&t.cfg, "raft", "snapshot_threshold"),
        .snapshot_trailing = (unsigned) config_uint(&t.cfg, "raft", "snapshot_trailing"),
        .bootstrap = bootstrap,
        .no_leader_wait_ms = 10000,
        .key = &t.key,
        .forward = cluster_forward,
        .forward_ctx = NULL, /* set below, once the cluster exists */
    };
    cc.forward_ctx = t.cluster;
    if (cc.heartbeat_ms == 0 || cc.heartbeat_ms >= cc.election_ms) {
        fprintf(stderr, "ternd: raft.heartbeat_ms must be > 0 and < raft.election_timeout_ms\n");
        status = EXIT_CONFIG;
        goto out;
    }
    if (cc.snapshot_threshold == 0) {
        fprintf(stderr, "ternd: raft.snapshot_threshold must be > 0\n");
        status = EXIT_CONFIG;
        goto out;
    }
    struct cons_fsm hooks = fsm_hooks(t.fsm);
    if (cons_start(&cc, &hooks, &t.cons, err, sizeof err) != 0) {
        fprintf(stderr, "ternd: %s\n", err);
        goto out;
    }
    cluster_attach(t.cluster, t.cons);

    t.loop = uv_default_loop();
    loopq_init(&t.q, t.loop);
    uv_signal_init(t.loop, &t.sigterm);
    uv_signal_init(t.loop, &t.sigint);
    t.sigterm.data = t.sigint.data = &t;
    uv_signal_start(&t.sigterm, on_signal, SIGTERM);
    uv_signal_start(&t.sigint, on_signal, SIGINT);

    if (start_frontends(&t, err, sizeof err) != 0) {
        fprintf(stderr, "ternd: %s\n", err);
        status = strstr(err, "listen.") ? EXIT_CONFIG : 1;
        shutdown_node(&t);
        uv_run(t.loop, UV_RUN_DEFAULT);
        goto out;
    }

    char sock[PATH_MAX + 32];
    const char *as = config_str(&t.cfg, "node", "admin_socket");
    if (as[0])
        snprintf(sock, sizeof sock, "%s", as);
    else
        snprintf(sock, sizeof sock, "%s/admin.sock", t.data_dir);
    struct admin_deps deps = {.db = t.db,
                              .cons = t.cons,
                              .fsm = t.fsm,
                              .q = &t.q,
                              .cfg = &t.cfg,
                              .cluster = t.cluster,
                              .secret_path = t.secret_path};
    if (admin_start(t.loop, sock, &deps, &t.admin, err, sizeof err) != 0) {
        fprintf(stderr, "ternd: %s\n", err);
        shutdown_node(&t);
        uv_run(t.loop, UV_RUN_DEFAULT);
        goto out;
    }
    log_info("ternd.ready", "node=%" PRIu64 " raft=%s rpc=%s admin=%s pid=%ld", id, cc.address,
             config_str(&t.cfg, "cluster", "rpc_address"), sock, (long) getpid());

    uv_run(t.loop, UV_RUN_DEFAULT);
    while (loopq_drain(&t.q) > 0) /* completions posted while the loop wound down */
        uv_run(t.loop, UV_RUN_DEFAULT);
    loopq_destroy(&t.q);
    status = 0;
    int rc = uv_loop_close(t.loop);
    if (rc != 0)
        log_warn("ternd.loop_close", "error=%s", uv_strerror(rc));

out:
    cluster_stop(t.cluster);
    cons_free(t.cons);
    cluster_free(t.cluster);
    fsm_close(t.fsm);
    db_close(t.db);
    if (t.lock_fd >= 0) {
        unlink(t.lock_path); /* while still holding the lock */
        close(t.lock_fd);
    }
    if (status == 0)
        log_info("ternd.stopped", "node=%" PRIu64, id);
    config_free(&t.cfg);
    return status;
}
