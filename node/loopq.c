/*
 * node/loopq.c
 * Cross-thread function queue for a libuv loop (see loopq.h).
 */
#include "loopq.h"

#include <stdlib.h>

struct loopq_item {
    loopq_fn *fn;
    void *arg;
    struct loopq_item *next;
};

static void run_all(struct loopq *q)
{
    pthread_mutex_lock(&q->mu);
    struct loopq_item *it = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    while (it) {
        struct loopq_item *next = it->next;
        it->fn(it->arg);
        free(it);
        it = next;
    }
}

static void on_async(uv_async_t *a)
{
    run_all(a->data);
}

int loopq_init(struct loopq *q, uv_loop_t *loop)
{
    q->head = q->tail = NULL;
    q->closing = 0;
    pthread_mutex_init(&q->mu, NULL);
    q->async.data = q;
    return uv_async_init(loop, &q->async, on_async);
}

int loopq_post(struct loopq *q, loopq_fn *fn, void *arg)
{
    struct loopq_item *it = malloc(sizeof *it);
    if (it == NULL)
        return -1;
    it->fn = fn;
    it->arg = arg;
    it->next = NULL;
    pthread_mutex_lock(&q->mu);
    if (q->tail)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    pthread_mutex_unlock(&q->mu);
    uv_async_send(&q->async);
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    struct loopq *q = h->data;
    pthread_mutex_destroy(&q->mu);
}

void loopq_close(struct loopq *q)
{
    run_all(q);
    q->closing = 1;
    uv_close((uv_handle_t *) &q->async, on_closed);
}
