/*
 * proxy/imap/seqset.h
 * IMAP sequence sets: "1:5,7,10:*" as used by FETCH, STORE, COPY, SEARCH and their UID
 * forms (RFC 3501 9 / RFC 9051 9 sequence-set, and "$" of RFC 5182 SEARCHRES), parsed
 * into sorted disjoint ranges, with membership and iteration once "*" is known.
 *
 * SECURITY: the text comes from unauthenticated clients. The number of ranges is capped
 * (IMAP_SEQSET_RANGES_MAX) before anything is allocated; nothing iterates past MAX.
 */
#ifndef TERN_IMAP_SEQSET_H
#define TERN_IMAP_SEQSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Ranges per set before normalization ("1,3,5,..."): a 64 KiB line holds about 16000. */
#define IMAP_SEQSET_RANGES_MAX 10000

#define IMAP_SEQSET_FLAG_SEARCHRES (1u << 0) /* accept "$" (RFC 5182, when advertised) */

enum imap_seqset_err {
    IMAP_SEQSET_ESYNTAX = -1,  /* not a sequence-set: answer BAD */
    IMAP_SEQSET_ETOOMANY = -2, /* more than IMAP_SEQSET_RANGES_MAX ranges: BAD */
    IMAP_SEQSET_ENOMEM = -3,   /* out of memory: NO (temporary) */
};

struct imap_seq_range {
    uint32_t lo, hi; /* 1 <= lo <= hi */
};

/*
 * A parsed set. "*" stands for the largest number in use (the message count, or the
 * highest UID), known only when the set is used, so ranges with "*" are kept apart: each
 * "n:*" (or "*:n") covers [min(n, max), max(n, max)], and a lone "*" is [max, max]. Only
 * members <= max matter, so together they are [min(star_lo, max), max].
 */
struct imap_seqset {
    struct imap_seq_range *ranges; /* ranges without "*": sorted, disjoint, not adjacent;
                                      malloc'd, NULL when count is 0 */
    size_t count;
    bool star;        /* some range used "*" */
    uint32_t star_lo; /* the smallest number paired with "*" ("5:*" gives 5), UINT32_MAX
                         when "*" only stood alone (or as "*:*") */
    bool searchres;   /* the set is "$": the saved SEARCH result (no ranges) */
};

/*
 * imap_seqset_parse() parses S[0..LEN):
 *   sequence-set = ("$" / seq-range / seq-number) *("," (seq-range / seq-number))
 *   seq-range    = seq-number ":" seq-number   (either order: "5:1" is "1:5")
 *   seq-number   = nz-number / "*"             (nz-number <= 4294967295, no leading 0)
 * "$" only alone and only with IMAP_SEQSET_FLAG_SEARCHRES. OUT is written either way (empty
 * on error); free it with imap_seqset_free(). Returns 0 or an enum imap_seqset_err, with
 * *WHY (when WHY is not NULL) a static English reason.
 */
int imap_seqset_parse(const char *s, size_t len, unsigned flags, struct imap_seqset *out,
                      const char **why);
void imap_seqset_free(struct imap_seqset *set);

/* imap_seqset_contains(): N is a member when "*" is MAX: 1 <= N <= MAX and N in a range.
 * (Numbers above MAX are never members: no message has them.) */
bool imap_seqset_contains(const struct imap_seqset *set, uint32_t n, uint32_t max);

/* Iteration over the members in [1, MAX], ascending, each once. Use either function (or
 * both) on one iterator; the set must outlive it. Message sequence numbers are dense, so
 * imap_seqset_iter_next() suits them; for UIDs iterate the mailbox and test contains(), or
 * walk imap_seqset_iter_next_range() against a sorted UID index ("1:*" is one range). */
struct imap_seqset_iter {
    const struct imap_seqset *set;
    uint32_t max;
    size_t idx;    /* first concrete range that may still hold members */
    uint64_t next; /* smallest number not returned yet */
    uint32_t slo;  /* star interval [slo, max], when has_star */
    bool has_star;
};

void imap_seqset_iter_init(struct imap_seqset_iter *it, const struct imap_seqset *set,
                           uint32_t max);
/* imap_seqset_iter_next(): the next member in *N, or false when none is left. */
bool imap_seqset_iter_next(struct imap_seqset_iter *it, uint32_t *n);
/* imap_seqset_iter_next_range(): the next maximal run of members [*LO, *HI], or false. */
bool imap_seqset_iter_next_range(struct imap_seqset_iter *it, uint32_t *lo, uint32_t *hi);

#endif
