/*
 * node/admin.h
 * The admin unix socket that ternctl talks to (proto/admin.proto in node/frame.h frames).
 * Runs on one libuv loop (ternd's main loop). Writes become Commands through Raft; reads
 * come from the local replica; password hashing runs in the libuv thread pool.
 *
 * SECURITY: the socket is created mode 0600 in a directory the node owns: whoever can
 * connect is an administrator. Requests are still bounded (frame size, argument count
 * and length) and a malformed one gets an error, never a crash. Passwords are never
 * logged or echoed.
 */
#ifndef TERN_ADMIN_H
#define TERN_ADMIN_H

#include <stddef.h>
#include <uv.h>

#include "config.h"
#include "consensus.h"
#include "db.h"
#include "fsm.h"
#include "loopq.h"

#define ADMIN_ARGS_MAX    16
#define ADMIN_ARG_MAX     1024
#define ADMIN_CONNS_MAX   64

struct admin_deps {
    struct db *db;
    struct cons *cons;
    struct fsm *fsm;
    struct loopq *q; /* completions for this loop */
    const struct config *cfg;
    struct cluster *cluster;
    const char *secret_path; /* the cluster secret file (cluster init prints it) */
};

struct admin;

/* admin_start() listens on PATH (an existing socket file there is replaced, since the
 * data dir lock proves no other ternd uses it). Returns 0 or -1 with ERR set. */
int admin_start(uv_loop_t *loop, const char *path, const struct admin_deps *deps,
                struct admin **out, char *err, size_t errlen);
/* admin_stop() closes the listener and every connection and removes the socket file.
 * Operations still pending finish quietly (their replies are dropped). The struct is
 * freed once the last handle has closed, so the loop must run afterwards. */
void admin_stop(struct admin *a);

#endif
