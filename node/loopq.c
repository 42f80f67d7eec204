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

static size_t run_all(struct loopq *q)
{
    size_t n = 0;
    pthread_mutex_lock(&q->mu);
    struct loopq_item *it = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    while (it) {
        struct loopq_item *next = it->next;
        it->fn(it->arg);
        free(it);
        it = next;
        n++;
    }
    return n;
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
    int closing = q->closing;
    pthread_mutex_unlock(&q->mu);
    if (!closing)
        uv_async_send(&q->async);
    return 0;
}

void loopq_close(struct loopq *q)
{
    pthread_mutex_lock(&q->mu);
    q->closing = 1;
    pthread_mutex_unlock(&q->mu);
    run_all(q);
    uv_close((uv_handle_t *) &q->async, NULL);
}

size_t loopq_drain(struct loopq *q)
{
    return run_all(q);
}

void loopq_destroy(struct loopq *q)
{
    pthread_mutex_destroy(&q->mu);
}
