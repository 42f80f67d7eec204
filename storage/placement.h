/*
 * storage/placement.h
 * Where a message body lives: the R owner nodes of a body, chosen by rendezvous
 * (highest-random-weight) hashing of its SHA-256 over the cluster members, with replicas
 * spread across distinct zones first. Pure computation: no I/O, no allocation, no state;
 * every node that knows the same member list computes the same owners.
 *
 * STABILITY: placement_score() decides where bodies already stored are. Its definition
 * (placement.c) is frozen: changing it moves every body in every cluster. Golden values in
 * tests/unit/storage/test_placement.c catch an accidental change.
 */
#ifndef TERN_PLACEMENT_H
#define TERN_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PLACEMENT_MAX_NODES 256 /* cluster members per call; bounds the stack arrays */
#define PLACEMENT_HASH_LEN  32  /* a body's SHA-256, as BODY_HASH_LEN in body_store.h */

/* One cluster member. ZONE is an opaque label (rack, room, site) compared byte for byte;
 * "" means "no zone" and NULL is the same as "". All nodes without a zone form ONE zone
 * named "", not one zone each: a cluster that sets no zones is then plain rendezvous
 * hashing, and a half-labelled cluster does not mistake its unlabelled nodes for distinct
 * failure domains. The caller owns ZONE; it is only read during the call. */
struct placement_node {
    uint64_t id;
    const char *zone;
};

/*
 * placement_score() returns the rendezvous weight of node ID for body HASH. It depends only
 * on the 32 bytes of HASH and the value of ID (never on the host's byte order):
 *
 *   mix(x)  = splitmix64 finalizer: x ^= x >> 30; x *= 0xbf58476d1ce4e5b9;
 *             x ^= x >> 27; x *= 0x94d049bb133111eb; x ^= x >> 31
 *   w[i]    = bytes 8i..8i+7 of HASH read big-endian, i = 0..3
 *   d       = 0x9e3779b97f4a7c15; for i = 0..3: d = mix(d ^ w[i])
 *   score   = mix(d ^ mix(ID ^ 0x6a09e667f3bcc908))
 *
 * (mod 2^64 arithmetic throughout). Frozen: see STABILITY above.
 */
uint64_t placement_score(const uint8_t hash[PLACEMENT_HASH_LEN], uint64_t id);

/*
 * placement_owners() writes the ids of the min(R, N) owners of HASH among the N NODES into
 * OUT (room for min(R, N) ids), in preference order, and returns how many it wrote.
 *
 * Nodes are ranked by placement_score(), highest first; equal scores (a 2^-64 event) rank
 * the lower id first. The picks are then:
 *   1. zone by zone, the best node of each distinct zone, zones taken in the order of
 *      their best node's score, until R picks or the zones run out;
 *   2. the best remaining nodes, whatever their zone, until R picks.
 * OUT holds the picks in that order, so OUT[0] is the best node overall, the first
 * min(R, zones) owners are in distinct zones, and the owners for R are a prefix of the
 * owners for any larger R. The order of NODES does not matter.
 *
 * Adding a node changes an owner set only by bringing the new node in (and one old owner
 * out); removing a node changes only the sets that held it.
 *
 * Returns -1, writing nothing, on bad arguments: NODES, HASH or OUT NULL, R == 0,
 * N > PLACEMENT_MAX_NODES, or two nodes with the same id. N == 0 returns 0.
 * Cost: O(N) to score the nodes and check the ids, then O(log N) and at most min(R, N) zone
 * comparisons per node visited in rank order. Visiting stops at R distinct zones, so with
 * R or more zones it is a few nodes; with fewer zones than R, all N. Stack only (~11 KiB).
 */
int placement_owners(const struct placement_node *nodes, size_t n,
                     const uint8_t hash[PLACEMENT_HASH_LEN], unsigned r, uint64_t *out);

/* placement_is_owner() tells whether ID is among the R owners of HASH (placement_owners()).
 * False on the arguments placement_owners() rejects. */
bool placement_is_owner(const struct placement_node *nodes, size_t n,
                        const uint8_t hash[PLACEMENT_HASH_LEN], unsigned r, uint64_t id);

#endif
