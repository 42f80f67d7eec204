/*
 * proxy/imap/seqset.c
 * Sequence sets (see seqset.h): RFC 3501 9 / RFC 9051 9 sequence-set and RFC 5182 "$",
 * parsed in one pass after counting the ranges, sorted and merged; "*" resolved at use.
 *
 * SECURITY: parses bytes from unauthenticated clients; the range count is checked before
 * the allocation it sizes, numbers are checked against 2^32 - 1 digit by digit.
 */
#include "seqset.h"

#include <stdlib.h>
#include <string.h>

#define STAR_NONE UINT32_MAX /* star_lo when no number was paired with "*" */

static int set_err(int err, const char *msg, const char **why)
{
    if (why != NULL)
        *why = msg;
    return err;
}

/* seq_number() reads nz-number / "*" at S[*I..LEN). Returns false on bad syntax. */
static bool seq_number(const char *s, size_t len, size_t *i, uint32_t *v, bool *star)
{
    uint64_t n = 0;

    *star = false;
    if (*i < len && s[*i] == '*') {
        (*i)++;
        *star = true;
        return true;
    }
    if (*i >= len || s[*i] < '1' || s[*i] > '9')
        return false;
    while (*i < len && s[*i] >= '0' && s[*i] <= '9') {
        n = n * 10 + (uint64_t) (s[*i] - '0');
        if (n > UINT32_MAX)
            return false;
        (*i)++;
    }
    *v = (uint32_t) n;
    return true;
}

static int range_cmp(const void *a, const void *b)
{
    const struct imap_seq_range *x = a, *y = b;

    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* normalize() sorts SET's ranges and merges those that overlap or touch. */
static void normalize(struct imap_seqset *set)
{
    size_t i, n = 0;

    if (set->count == 0)
        return;
    qsort(set->ranges, set->count, sizeof(*set->ranges), range_cmp);
    for (i = 1; i < set->count; i++) {
        struct imap_seq_range *last = &set->ranges[n];

        if ((uint64_t) set->ranges[i].lo <= (uint64_t) last->hi + 1) {
            if (set->ranges[i].hi > last->hi)
                last->hi = set->ranges[i].hi;
        } else {
            set->ranges[++n] = set->ranges[i];
        }
    }
    set->count = n + 1;
}

int imap_seqset_parse(const char *s, size_t len, unsigned flags, struct imap_seqset *out,
                      const char **why)
{
    size_t i = 0, n = 1, k;
    uint32_t a = 0, b = 0;
    bool astar, bstar;

    memset(out, 0, sizeof(*out));
    out->star_lo = STAR_NONE;
    if (len == 1 && s[0] == '$') {
        if ((flags & IMAP_SEQSET_FLAG_SEARCHRES) == 0)
            return set_err(IMAP_SEQSET_ESYNTAX, "$ without SEARCHRES", why);
        out->searchres = true;
        return 0;
    }
    if (len == 0)
        return set_err(IMAP_SEQSET_ESYNTAX, "Empty sequence set", why);
    for (k = 0; k < len; k++)
        if (s[k] == ',' && ++n > IMAP_SEQSET_RANGES_MAX)
            return set_err(IMAP_SEQSET_ETOOMANY, "Too many ranges in sequence set", why);
    out->ranges = malloc(n * sizeof(*out->ranges));
    if (out->ranges == NULL)
        return set_err(IMAP_SEQSET_ENOMEM, "Out of memory", why);

    for (;;) {
        if (!seq_number(s, len, &i, &a, &astar))
            goto bad;
        b = a;
        bstar = astar;
        if (i < len && s[i] == ':') {
            i++;
            if (!seq_number(s, len, &i, &b, &bstar))
                goto bad;
        }
        if (astar || bstar) {
            uint32_t other = astar && bstar ? STAR_NONE : astar ? b : a;

            out->star = true;
            if (other < out->star_lo)
                out->star_lo = other;
        } else {
            out->ranges[out->count].lo = a < b ? a : b;
            out->ranges[out->count].hi = a < b ? b : a;
            out->count++;
        }
        if (i == len)
            break;
        if (s[i] != ',')
            goto bad;
        i++;
    }
    normalize(out);
    if (out->count == 0) {
        free(out->ranges);
        out->ranges = NULL;
    }
    return 0;

bad:
    imap_seqset_free(out);
    return set_err(IMAP_SEQSET_ESYNTAX, "Invalid sequence set", why);
}

void imap_seqset_free(struct imap_seqset *set)
{
    free(set->ranges);
    memset(set, 0, sizeof(*set));
    set->star_lo = STAR_NONE;
}

bool imap_seqset_contains(const struct imap_seqset *set, uint32_t n, uint32_t max)
{
    size_t lo = 0, hi = set->count;

    if (n == 0 || n > max)
        return false;
    if (set->star && n >= (set->star_lo < max ? set->star_lo : max))
        return true;
    while (lo < hi) { /* binary search for the range holding N */
        size_t mid = lo + (hi - lo) / 2;

        if (set->ranges[mid].hi < n)
            lo = mid + 1;
        else if (set->ranges[mid].lo > n)
            hi = mid;
        else
            return true;
    }
    return false;
}

void imap_seqset_iter_init(struct imap_seqset_iter *it, const struct imap_seqset *set, uint32_t max)
{
    it->set = set;
    it->max = max;
    it->idx = 0;
    it->next = 1;
    it->has_star = set->star && max > 0;
    it->slo = set->star_lo < max ? set->star_lo : max;
}

/* first_member(): the smallest member >= it->next and <= max, or 0 when there is none. */
static uint64_t first_member(struct imap_seqset_iter *it)
{
    const struct imap_seqset *set = it->set;
    uint64_t cand = UINT64_MAX;

    while (it->idx < set->count && set->ranges[it->idx].hi < it->next)
        it->idx++;
    if (it->idx < set->count)
        cand = set->ranges[it->idx].lo > it->next ? set->ranges[it->idx].lo : it->next;
    if (it->has_star && it->max >= it->next) {
        uint64_t s = it->slo > it->next ? it->slo : it->next;

        if (s < cand)
            cand = s;
    }
    return cand <= it->max ? cand : 0;
}

bool imap_seqset_iter_next(struct imap_seqset_iter *it, uint32_t *n)
{
    uint64_t m = first_member(it);

    if (m == 0)
        return false;
    *n = (uint32_t) m;
    it->next = m + 1;
    return true;
}

bool imap_seqset_iter_next_range(struct imap_seqset_iter *it, uint32_t *lo, uint32_t *hi)
{
    const struct imap_seqset *set = it->set;
    uint64_t m = first_member(it), end;
    size_t j;
    bool grew = true;

    if (m == 0)
        return false;
    end = m;
    while (grew) { /* extend END while a range or the star interval touches it */
        grew = false;
        for (j = it->idx; j < set->count && set->ranges[j].lo <= end + 1; j++) {
            if (set->ranges[j].hi > end) {
                end = set->ranges[j].hi;
                grew = true;
            }
        }
        if (it->has_star && it->slo <= end + 1 && it->max > end) {
            end = it->max;
            grew = true;
        }
    }
    if (end > it->max)
        end = it->max;
    *lo = (uint32_t) m;
    *hi = (uint32_t) end;
    it->next = end + 1;
    return true;
}
