/*
 * tests/fuzz/fuzz_imap_command.c
 * libFuzzer target for proxy/imap/parser.c and seqset.c. Byte 0 picks flags and limits
 * (bit 0 LITERAL+, bit 1 small limits, bit 2 a 64 KiB arena), byte 1 the chunking; the
 * rest is a stream of client commands, parsed as a session would (continuations answered,
 * some rejected) once in one piece and once in chunks whose sizes come from byte 1.
 * Checks: consumed <= available, and == available on NEED_MORE; the same events and
 * offsets in both runs; well-formed trees within the limits; each command written back
 * (strings re-escaped, lists re-spaced) parses to the same tree; each atom that is a
 * sequence set iterates exactly its members.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parser.h"
#include "seqset.h"
#include "fuzz_check.h"

/* ---- A growable byte string ------------------------------------------------------------- */

struct buf {
    char *s;
    size_t len, cap;
};

static void buf_put(struct buf *b, const void *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        FUZZ_CHECK(b->s != NULL);
    }
    if (n > 0)
        memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

static void buf_num(struct buf *b, unsigned long long n)
{
    char tmp[32];

    snprintf(tmp, sizeof(tmp), "%llu", n);
    buf_str(b, tmp);
}

/* ---- Tree checks, printing and writing back -------------------------------------------- */

struct limits_seen {
    const struct imap_parser_limits *lim;
    size_t nargs;
};

static bool atom_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != '(' && c != ')' && c != '{' && c != '"';
}

/* print_args() describes ARGS with types and flags (for comparisons) and checks them. */
static void print_args(struct buf *b, const struct imap_arg *args, size_t count, unsigned depth,
                       struct limits_seen *ls)
{
    FUZZ_CHECK(args != NULL);
    FUZZ_CHECK(args[count].type == IMAP_ARG_EOL);
    FUZZ_CHECK(depth <= ls->lim->depth_max);
    for (size_t i = 0; i < count; i++) {
        const struct imap_arg *a = &args[i];

        ls->nargs++;
        FUZZ_CHECK(ls->nargs <= ls->lim->args_max);
        buf_str(b, i > 0 ? " " : "");
        if (a->type != IMAP_ARG_LIST) {
            FUZZ_CHECK(a->str != NULL && a->str[a->len] == '\0');
            if (a->type != IMAP_ARG_LITERAL || !(a->flags & IMAP_ARG_FLAG_LITERAL8))
                FUZZ_CHECK(memchr(a->str, '\0', a->len) == NULL);
        }
        switch (a->type) {
        case IMAP_ARG_ATOM:
        case IMAP_ARG_NIL:
            FUZZ_CHECK(a->len > 0);
            buf_str(b, a->type == IMAP_ARG_NIL ? "N:" : "A:");
            buf_put(b, a->str, a->len);
            if (a->flags & IMAP_ARG_FLAG_SECTION) {
                FUZZ_CHECK(a->type == IMAP_ARG_ATOM);
                FUZZ_CHECK(a->name_len < a->len && a->str[a->name_len] == '[');
                buf_str(b, "[");
                print_args(b, a->list, a->count, depth + 1, ls);
                buf_str(b, "]");
                if (a->flags & IMAP_ARG_FLAG_PARTIAL) {
                    FUZZ_CHECK(!(a->flags & IMAP_ARG_FLAG_SUFFIX));
                    FUZZ_CHECK(a->partial_count > 0 && a->partial_count <= INT64_MAX);
                    buf_num(b, a->partial_offset);
                    buf_str(b, ".");
                    buf_num(b, a->partial_count);
                }
            } else {
                FUZZ_CHECK(a->flags == 0 && a->list == NULL);
                for (size_t k = 0; k < a->len; k++)
                    FUZZ_CHECK(atom_char((unsigned char) a->str[k]));
                if (a->type == IMAP_ARG_NIL)
                    FUZZ_CHECK(a->len == 3);
            }
            break;
        case IMAP_ARG_QUOTED:
            FUZZ_CHECK(a->flags == 0 && memchr(a->str, '\r', a->len) == NULL &&
                       memchr(a->str, '\n', a->len) == NULL);
            buf_str(b, "Q:");
            buf_put(b, a->str, a->len);
            break;
        case IMAP_ARG_LITERAL:
            buf_str(b, (a->flags & IMAP_ARG_FLAG_LITERAL8) ? "L8" : "L");
            buf_str(b, (a->flags & IMAP_ARG_FLAG_NONSYNC) ? "+:" : ":");
            buf_put(b, a->str, a->len);
            break;
        case IMAP_ARG_LIST:
            FUZZ_CHECK(a->str == NULL);
            buf_str(b, "(");
            print_args(b, a->list, a->count, depth + 1, ls);
            buf_str(b, ")");
            break;
        default:
            FUZZ_CHECK(0);
        }
    }
}

/* write_args() writes ARGS back as a client would send them. */
static void write_args(struct buf *b, const struct imap_arg *args, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        const struct imap_arg *a = &args[i];

        buf_str(b, " ");
        switch (a->type) {
        case IMAP_ARG_ATOM:
        case IMAP_ARG_NIL:
            buf_put(b, a->str, a->len); /* a section as received */
            break;
        case IMAP_ARG_QUOTED:
            buf_str(b, "\"");
            for (size_t k = 0; k < a->len; k++) {
                if (a->str[k] == '"' || a->str[k] == '\\')
                    buf_str(b, "\\");
                buf_put(b, &a->str[k], 1);
            }
            buf_str(b, "\"");
            break;
        case IMAP_ARG_LITERAL:
            buf_str(b, (a->flags & IMAP_ARG_FLAG_LITERAL8) ? "~{" : "{");
            buf_num(b, a->len);
            /* bare LF: never longer than what was received (line_max) */
            buf_str(b, (a->flags & IMAP_ARG_FLAG_NONSYNC) ? "+}\n" : "}\n");
            buf_put(b, a->str, a->len);
            break;
        case IMAP_ARG_LIST:
            buf_str(b, "(");
            if (a->count > 0) {
                struct buf inner = {0};

                write_args(&inner, a->list, a->count);
                buf_put(b, inner.s + 1, inner.len - 1); /* no space after "(" */
                free(inner.s);
            }
            buf_str(b, ")");
            break;
        default:
            FUZZ_CHECK(0);
        }
    }
}

static void print_cmd(struct buf *b, const struct imap_cmd *c, const struct imap_parser_limits *lim)
{
    struct limits_seen ls = {lim, 0};

    FUZZ_CHECK(c->tag[0] != '\0' && strlen(c->tag) <= IMAP_PARSER_TAG_MAX);
    FUZZ_CHECK(c->name[0] != '\0' && strlen(c->name) <= IMAP_PARSER_NAME_MAX);
    for (const char *s = c->name; *s != '\0'; s++)
        FUZZ_CHECK(!(*s >= 'a' && *s <= 'z'));
    FUZZ_CHECK(!c->uid || strcmp(c->name, "UID") != 0);
    buf_str(b, c->tag);
    buf_str(b, c->uid ? " UID " : " ");
    buf_str(b, c->name);
    buf_str(b, " ");
    print_args(b, c->args, c->count, 0, &ls);
}

/* ---- Sequence sets ---------------------------------------------------------------------- */

static void check_seqsets(const struct imap_arg *args, size_t count)
{
    static const uint32_t maxes[] = {0, 1, 2, 7, 40};

    for (size_t i = 0; i < count; i++) {
        struct imap_seqset set;

        if (args[i].type == IMAP_ARG_LIST) {
            check_seqsets(args[i].list, args[i].count);
            continue;
        }
        if (args[i].type != IMAP_ARG_ATOM ||
            imap_seqset_parse(args[i].str, args[i].len, IMAP_SEQSET_FLAG_SEARCHRES, &set, NULL) !=
                0)
            continue;
        for (size_t k = 0; k < set.count; k++) {
            FUZZ_CHECK(set.ranges[k].lo >= 1 && set.ranges[k].lo <= set.ranges[k].hi);
            if (k > 0)
                FUZZ_CHECK((uint64_t) set.ranges[k - 1].hi + 1 < set.ranges[k].lo);
        }
        for (size_t m = 0; m < sizeof(maxes) / sizeof(maxes[0]); m++) {
            struct imap_seqset_iter it, rit;
            uint32_t n, lo = 0, hi = 0, expect = 0;
            bool have;

            imap_seqset_iter_init(&it, &set, maxes[m]);
            imap_seqset_iter_init(&rit, &set, maxes[m]);
            have = imap_seqset_iter_next_range(&rit, &lo, &hi);
            while (imap_seqset_iter_next(&it, &n)) {
                FUZZ_CHECK(n > expect && n <= maxes[m]);
                for (expect++; expect < n; expect++)
                    FUZZ_CHECK(!imap_seqset_contains(&set, expect, maxes[m]));
                FUZZ_CHECK(imap_seqset_contains(&set, n, maxes[m]));
                FUZZ_CHECK(have && lo <= n);
                if (n > hi) {
                    uint32_t prev = hi;

                    have = imap_seqset_iter_next_range(&rit, &lo, &hi);
                    FUZZ_CHECK(have && lo == n && lo > prev + 1);
                }
                FUZZ_CHECK(n <= hi && hi <= maxes[m]);
            }
            for (expect++; expect <= maxes[m] + 1; expect++)
                FUZZ_CHECK(!imap_seqset_contains(&set, expect, maxes[m]));
            FUZZ_CHECK(!have || !imap_seqset_iter_next_range(&rit, &lo, &hi));
        }
        imap_seqset_free(&set);
    }
}

/* ---- Sessions --------------------------------------------------------------------------- */

struct cfg {
    struct imap_parser_limits lim;
    unsigned flags;
};

/* chunk_next(): sizes 1..(seed % 64 + 1) from a xorshift generator; seed 0 is byte by byte. */
static size_t chunk_next(uint32_t *state, uint8_t seed)
{
    if (seed == 0)
        return 1;
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    return (size_t) (*state % ((uint32_t) seed % 64 + 1)) + 1;
}

static void record_ids(struct buf *b, const char *what, const struct imap_parse_result *res)
{
    buf_str(b, what);
    buf_str(b, " ");
    buf_str(b, res->tag);
    buf_str(b, res->uid ? " UID " : " ");
    buf_str(b, res->name);
}

/*
 * session() parses DATA[0..LEN) delivering it in chunks (CHUNK_SEED, or all at once when
 * WHOLE), records events in EVENTS, and if WRITE_BACK is set writes each command back into
 * it (canonical form). Continuations of a size that is 4 modulo 5 are rejected unless
 * ACCEPT_ALL. Returns the number of commands.
 */
static size_t session(const uint8_t *data, size_t len, const struct cfg *cfg, bool whole,
                      uint8_t chunk_seed, bool accept_all, struct buf *events,
                      struct buf *write_back)
{
    struct imap_parser *p = imap_parser_new(&cfg->lim, cfg->flags);
    uint32_t rng = 0x9e3779b9u ^ (uint32_t) len;
    size_t delivered = 0, off = 0, commands = 0, guard = 0;
    bool stop = false;

    FUZZ_CHECK(p != NULL);
    while (!stop) {
        delivered = whole ? len : delivered + chunk_next(&rng, chunk_seed);
        if (delivered > len)
            delivered = len;
        for (;;) {
            struct imap_parse_result res;
            size_t avail = delivered - off;
            int rc = imap_parser_parse(p, data + off, avail, &res);

            FUZZ_CHECK(res.consumed <= avail);
            FUZZ_CHECK(++guard < 4 * len + 100); /* progress */
            off += res.consumed;
            if (rc == IMAP_PARSE_NEED_MORE) {
                FUZZ_CHECK(res.consumed == avail);
                break;
            }
            if (rc == IMAP_PARSE_FATAL) {
                FUZZ_CHECK(res.msg != NULL);
                buf_str(events, "FATAL ");
                buf_str(events, res.msg);
                buf_str(events, "\n");
                stop = true;
                break;
            }
            FUZZ_CHECK(res.consumed > 0);
            if (rc == IMAP_PARSE_OK) {
                FUZZ_CHECK(res.cmd != NULL);
                FUZZ_CHECK(strcmp(res.cmd->tag, res.tag) == 0);
                FUZZ_CHECK(strcmp(res.cmd->name, res.name) == 0);
                buf_str(events, "OK ");
                print_cmd(events, res.cmd, &cfg->lim);
                if (write_back != NULL) {
                    buf_str(write_back, res.cmd->tag);
                    buf_str(write_back, res.cmd->uid ? " UID " : " ");
                    buf_str(write_back, res.cmd->name);
                    write_args(write_back, res.cmd->args, res.cmd->count);
                    buf_str(write_back, "\n");
                    check_seqsets(res.cmd->args, res.cmd->count);
                }
                imap_cmd_free(res.cmd);
                commands++;
            } else if (rc == IMAP_PARSE_NEED_CONTINUATION) {
                record_ids(events, "CONT", &res);
                buf_num(events, res.literal_size);
                if (!accept_all && res.literal_size % 5 == 4) {
                    buf_str(events, " rejected");
                    imap_parser_reject_literal(p);
                } else {
                    imap_parser_accept_literal(p);
                }
            } else if (rc == IMAP_PARSE_LITERAL_TOO_BIG) {
                FUZZ_CHECK(res.msg != NULL);
                record_ids(events, "TOOBIG", &res);
                buf_num(events, res.literal_size);
            } else {
                FUZZ_CHECK(rc == IMAP_PARSE_BAD && res.msg != NULL);
                record_ids(events, "BAD", &res);
                buf_str(events, res.msg);
                buf_str(events, "\n");
                continue; /* the offset of a BAD depends on what had arrived */
            }
            buf_str(events, " @");
            buf_num(events, off);
            buf_str(events, "\n");
        }
        if (delivered == len)
            break;
    }
    if (!stop && !imap_parser_idle(p))
        buf_str(events, "INCOMPLETE\n");
    imap_parser_free(p);
    return commands;
}

/* commands_only() keeps the OK lines of EVENTS without their offsets. */
static void commands_only(const struct buf *events, struct buf *out)
{
    const char *s = events->s, *end = events->s + events->len;

    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t) (end - s));
        const char *at;

        if (nl == NULL)
            nl = end;
        if (nl - s > 3 && memcmp(s, "OK ", 3) == 0) {
            at = nl;
            while (at > s && *at != '@')
                at--;
            buf_put(out, s, (size_t) (at - s));
            buf_str(out, "\n");
        }
        s = nl + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cfg cfg;
    struct buf whole = {0}, chunked = {0}, back = {0}, back_events = {0}, a = {0}, b = {0};
    size_t n;

    if (size < 2)
        return 0;
    imap_parser_limits_default(&cfg.lim);
    cfg.lim.append_literal_max = 1024 * 1024; /* no 50 MB allocations per input */
    cfg.flags = (data[0] & 1) ? IMAP_PARSER_FLAG_LITERAL_PLUS : 0;
    if (data[0] & 2) { /* small limits, to reach them */
        cfg.lim.line_max = 1024;
        cfg.lim.literal_max = 16;
        cfg.lim.append_literal_max = 200;
        cfg.lim.mem_max = 64 * 1024;
        cfg.lim.depth_max = 3;
        cfg.lim.args_max = 24;
    } else if (data[0] & 4) { /* tight memory: the arena cap before any other limit */
        cfg.lim.literal_max = 16 * 1024;
        cfg.lim.append_literal_max = 48 * 1024;
        cfg.lim.mem_max = 64 * 1024;
    }
    buf_str(&whole, "");
    buf_str(&chunked, "");
    n = session(data + 2, size - 2, &cfg, true, 0, false, &whole, &back);
    session(data + 2, size - 2, &cfg, false, data[1], false, &chunked, NULL);
    if (strcmp(whole.s, chunked.s) != 0) {
        fprintf(stderr, "whole:\n%s\nchunked (%u):\n%s\n", whole.s, data[1], chunked.s);
        FUZZ_CHECK(0);
    }
    /* Written back, the commands parse to the same trees. */
    if (n > 0) {
        buf_str(&back_events, "");
        FUZZ_CHECK(session((const uint8_t *) back.s, back.len, &cfg, true, 0, true, &back_events,
                           NULL) == n);
        commands_only(&whole, &a);
        commands_only(&back_events, &b);
        if (a.len != b.len || memcmp(a.s, b.s, a.len) != 0) {
            fprintf(stderr, "parsed:\n%s\nwritten back:\n%s\n", a.s, b.s);
            FUZZ_CHECK(0);
        }
    }
    free(whole.s);
    free(chunked.s);
    free(back.s);
    free(back_events.s);
    free(a.s);
    free(b.s);
    return 0;
}
