/*
 * storage/placement.c
 * Rendezvous placement of bodies over cluster members (see placement.h).
 *
 * One call scores every node for the body into a stack array, checks the ids are distinct
 * (a small hash table, also on the stack), makes the array a heap and pops nodes best
 * first: the first node popped of each zone is that zone's leader, and leaders come out
 * in the order of their zone's best score, which is exactly the zone rule. Popping stops
 * as soon as R leaders are found, usually after a few nodes; otherwise every node is
 * popped and the ones passed over fill the remaining picks, already in rank order.
 */
#include "placement.h"

#include <string.h>

#define PLACEMENT_SEED_HASH 0x9e3779b97f4a7c15ULL     /* 2^64 / golden ratio */
#define PLACEMENT_SEED_ID   0x6a09e667f3bcc908ULL     /* frac(sqrt(2)), SHA-512's first IV word */
#define PLACEMENT_DUP_SLOTS (2 * PLACEMENT_MAX_NODES) /* duplicate-id table, half full at most */

/* A node in the ranking: its score for this body, and where it came from. */
struct placement_rank {
    uint64_t score;
    uint64_t id;
    const char *zone; /* never NULL here: NULL became "" */
};

/* placement_mix() is the splitmix64 finalizer: a bijection of 64-bit values in which every
 * input bit flips each output bit with probability close to 1/2. Note mix(0) == 0. */
static uint64_t placement_mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static uint64_t placement_be64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

/* placement_digest() folds the 32 bytes of HASH into the 64-bit value d of placement.h.
 * It is the part of the score shared by every node, computed once per body. */
static uint64_t placement_digest(const uint8_t hash[PLACEMENT_HASH_LEN])
{
    uint64_t d = PLACEMENT_SEED_HASH;

    for (int i = 0; i < PLACEMENT_HASH_LEN; i += 8)
        d = placement_mix(d ^ placement_be64(hash + i));
    return d;
}

static uint64_t placement_score_digest(uint64_t digest, uint64_t id)
{
    return placement_mix(digest ^ placement_mix(id ^ PLACEMENT_SEED_ID));
}

uint64_t placement_score(const uint8_t hash[PLACEMENT_HASH_LEN], uint64_t id)
{
    return placement_score_digest(placement_digest(hash), id);
}

/* placement_before() is the ranking order: higher score first, then lower id. */
static bool placement_before(const struct placement_rank *a, const struct placement_rank *b)
{
    if (a->score != b->score)
        return a->score > b->score;
    return a->id < b->id;
}

/* placement_sift() restores the heap below index I of V[0..n): a binary heap whose root is
 * the node ranked first. */
static void placement_sift(struct placement_rank *v, size_t n, size_t i)
{
    for (;;) {
        size_t best = i;
        size_t l = 2 * i + 1;
        size_t r = l + 1;

        if (l < n && placement_before(&v[l], &v[best]))
            best = l;
        if (r < n && placement_before(&v[r], &v[best]))
            best = r;
        if (best == i)
            return;
        struct placement_rank t = v[i];
        v[i] = v[best];
        v[best] = t;
        i = best;
    }
}

static void placement_heapify(struct placement_rank *v, size_t n)
{
    for (size_t i = n / 2; i-- > 0;)
        placement_sift(v, n, i);
}

/* placement_pop() moves the first-ranked node of the heap V[0..*N) to V[*N - 1] and
 * shrinks the heap by one; V[*N..] keeps the nodes already popped. */
static void placement_pop(struct placement_rank *v, size_t *n)
{
    struct placement_rank t = v[0];

    (*n)--;
    v[0] = v[*n];
    v[*n] = t;
    placement_sift(v, *n, 0);
}

/*
 * placement_has_duplicate() tells whether two of V[0..n) have the same id, with an open
 * addressing table at most half full. Equal ids have equal scores, and scores are uniform,
 * so the score's low bits are the slot.
 */
static bool placement_has_duplicate(const struct placement_rank *v, size_t n)
{
    uint16_t slots[PLACEMENT_DUP_SLOTS]; /* 1 + index into v; 0 is free */
    size_t size = 8;

    while (size < 2 * n)
        size *= 2;
    memset(slots, 0, size * sizeof(slots[0]));
    for (size_t i = 0; i < n; i++) {
        size_t s = (size_t) v[i].score & (size - 1);

        for (; slots[s] != 0; s = (s + 1) & (size - 1))
            if (v[slots[s] - 1].id == v[i].id)
                return true;
        slots[s] = (uint16_t) (i + 1);
    }
    return false;
}

/* placement_zone_seen() tells whether ZONE is the zone of one of the NLEADERS leaders. */
static bool placement_zone_seen(const struct placement_rank *v, const size_t *leaders,
                                size_t nleaders, const char *zone)
{
    for (size_t i = 0; i < nleaders; i++)
        if (strcmp(v[leaders[i]].zone, zone) == 0)
            return true;
    return false;
}

int placement_owners(const struct placement_node *nodes, size_t n,
                     const uint8_t hash[PLACEMENT_HASH_LEN], unsigned r, uint64_t *out)
{
    struct placement_rank v[PLACEMENT_MAX_NODES];
    size_t leaders[PLACEMENT_MAX_NODES]; /* indexes into v, in pick order */
    size_t fills[PLACEMENT_MAX_NODES];   /* indexes into v of non-leaders, in rank order */
    size_t nleaders = 0, nfills = 0;
    size_t want, heap;
    uint64_t digest;

    if (nodes == NULL || hash == NULL || out == NULL || r == 0 || n > PLACEMENT_MAX_NODES)
        return -1;
    want = r < n ? r : n;

    digest = placement_digest(hash);
    for (size_t i = 0; i < n; i++) {
        v[i].score = placement_score_digest(digest, nodes[i].id);
        v[i].id = nodes[i].id;
        v[i].zone = nodes[i].zone != NULL ? nodes[i].zone : "";
    }
    if (placement_has_duplicate(v, n))
        return -1;

    /* Pop nodes best first; each popped node lands at v[heap], just below the ones before. */
    placement_heapify(v, n);
    for (heap = n; heap > 0 && nleaders < want;) {
        placement_pop(v, &heap);
        if (!placement_zone_seen(v, leaders, nleaders, v[heap].zone))
            leaders[nleaders++] = heap;
        else if (nfills < want)
            fills[nfills++] = heap;
    }
    /* Fewer than WANT leaders means every node was popped: the fills are complete. */
    for (size_t i = 0; i < nleaders; i++)
        out[i] = v[leaders[i]].id;
    for (size_t i = 0; nleaders + i < want; i++)
        out[nleaders + i] = v[fills[i]].id;
    return (int) want;
}

bool placement_is_owner(const struct placement_node *nodes, size_t n,
                        const uint8_t hash[PLACEMENT_HASH_LEN], unsigned r, uint64_t id)
{
    uint64_t owners[PLACEMENT_MAX_NODES];
    int k = placement_owners(nodes, n, hash, r, owners);

    for (int i = 0; i < k; i++)
        if (owners[i] == id)
            return true;
    return false;
}
