/*
 * benchmarks/placement-bench.c
 * Cost of placement_owners() (storage/placement.c) per body, for clusters of 3 to
 * PLACEMENT_MAX_NODES members in 3 zones, R = 3. Pure computation: no server, no network.
 * Not built by the Makefile (it needs storage/placement.c):
 *   cc -O2 -Wall -Wextra -Istorage -o benchmarks/placement-bench \
 *      benchmarks/placement-bench.c storage/placement.c
 *   benchmarks/placement-bench [calls-per-size]
 * Output: one key=value line per cluster size.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "placement.h"

#define BENCH_CALLS_DEFAULT 200000

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec * 1e9 + (double) ts.tv_nsec;
}

int main(int argc, char **argv)
{
    static const size_t sizes[] = {3, 5, 9, 16, 64, PLACEMENT_MAX_NODES};
    static const char *zones[] = {"z1", "z2", "z3"};
    struct placement_node nodes[PLACEMENT_MAX_NODES];
    long calls = argc > 1 ? atol(argv[1]) : BENCH_CALLS_DEFAULT;
    uint64_t sink = 0;

    if (calls <= 0) {
        fprintf(stderr, "usage: %s [calls-per-size]\n", argv[0]);
        return 2;
    }
    for (size_t i = 0; i < PLACEMENT_MAX_NODES; i++) {
        nodes[i].id = 1000 + i;
        nodes[i].zone = zones[i % 3];
    }
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        uint8_t hash[PLACEMENT_HASH_LEN] = {0};
        uint64_t out[3];
        double t0 = now_ns();

        for (long c = 0; c < calls; c++) {
            /* A different body each call; the bytes need not be a real SHA-256. */
            for (int b = 0; b < 8; b++)
                hash[b] = (uint8_t) ((unsigned long) c >> (8 * b));
            if (placement_owners(nodes, sizes[s], hash, 3, out) != 3)
                return 1;
            sink += out[0];
        }
        printf("nodes=%zu r=3 calls=%ld ns_per_call=%.1f\n", sizes[s], calls,
               (now_ns() - t0) / (double) calls);
    }
    return sink == 0; /* keeps the loop from being optimised away */
}
