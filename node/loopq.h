/*
 * node/loopq.h
 * Run a function on a given libuv loop from any thread: a mutex-guarded list plus a
 * uv_async_t. This is how completions travel from the consensus loop back to the loop
 * that asked (DESIGN.md "Threads and I/O").
 */
#ifndef TERN_LOOPQ_H
#define TERN_LOOPQ_H

#include <pthread.h>
#include <uv.h>

typedef void loopq_fn(void *arg);

struct loopq_item;
struct loopq {
    uv_async_t async;
    pthread_mutex_t mu;
    struct loopq_item *head, *tail;
    int closing;
};

/* loopq_init(): on LOOP's thread. Returns 0 or a libuv error. */
int loopq_init(struct loopq *q, uv_loop_t *loop);
/* loopq_post(): any thread. FN(ARG) runs on the loop, in post order. Returns 0, or -1 when
 * out of memory (FN is then not called). */
int loopq_post(struct loopq *q, loopq_fn *fn, void *arg);
/* loopq_close(): on the loop's thread: runs what is queued and closes the handle (the loop
 * must run once more to finish the close). Posts that still arrive are kept, not signalled:
 * loopq_drain() runs them. */
void loopq_close(struct loopq *q);
/* loopq_drain(): on the loop's thread after uv_run() returned: runs what was posted since
 * loopq_close(); returns how many ran (the caller runs the loop again while > 0). */
size_t loopq_drain(struct loopq *q);
/* loopq_destroy(): after the handle's close finished and the queue is drained. */
void loopq_destroy(struct loopq *q);

#endif
