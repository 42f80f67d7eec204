/*
 * proxy/imap/parser.c
 * The incremental IMAP command parser (see parser.h): a byte-driven state machine in the
 * manner of Dovecot's imap-parser, so that input may stop after any byte and nothing is
 * scanned twice. Arguments are shifted onto one stack and reduced into arena arrays when a
 * list or section closes. RFC 3501 9, RFC 9051 9, RFC 7888, RFC 3516.
 *
 * SECURITY: parses bytes from unauthenticated clients. Every store is bounded: the line by
 * line_max (checked before each byte), literals by their limit and the arena cap (checked
 * before the first octet), nesting and argument counts before a push.
 */
#include "parser.h"

#include <stdlib.h>
#include <string.h>

/* ---- Arena: one per command, handed to the caller with the command ---------------------- */

#define ARENA_CHUNK 16384 /* small allocations share chunks of this size */
#define ARENA_ALIGN 16

struct arena_chunk {
    struct arena_chunk *next;
    size_t size; /* usable bytes in data */
    size_t used;
    max_align_t data[];
};

struct imap_arena {
    struct arena_chunk *head; /* the chunk small allocations come from */
    size_t total;             /* bytes malloc'd for this arena, headers included */
};

enum arena_err { ARENA_OK, ARENA_LIMIT, ARENA_NOMEM };

static size_t align_up(size_t n)
{
    return (n + ARENA_ALIGN - 1) & ~(size_t) (ARENA_ALIGN - 1);
}

/* arena_cost() is what allocating N more bytes adds to A->total (A may be NULL: the arena
 * is created on first use). N must be below SIZE_MAX / 2. */
static size_t arena_cost(const struct imap_arena *a, size_t n)
{
    size_t cost = a == NULL ? sizeof(struct imap_arena) : 0;

    n = align_up(n);
    if (a != NULL && a->head != NULL && a->head->size - a->head->used >= n)
        return cost;
    if (n > ARENA_CHUNK / 4)
        return cost + sizeof(struct arena_chunk) + n;
    return cost + sizeof(struct arena_chunk) + ARENA_CHUNK;
}

static void arena_free(struct imap_arena *a)
{
    struct arena_chunk *c, *next;

    if (a == NULL)
        return;
    for (c = a->head; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
    free(a);
}

/* arena_alloc() returns N bytes from *AP (creating the arena), keeping its total within
 * MAX, or NULL with *ERR set. */
static void *arena_alloc(struct imap_arena **ap, size_t n, size_t max, enum arena_err *err)
{
    struct imap_arena *a = *ap;
    struct arena_chunk *c;
    size_t size;

    if (n >= SIZE_MAX / 2 || (a != NULL ? a->total : 0) + arena_cost(a, n) > max) {
        *err = ARENA_LIMIT;
        return NULL;
    }
    if (a == NULL) {
        a = calloc(1, sizeof(*a));
        if (a == NULL) {
            *err = ARENA_NOMEM;
            return NULL;
        }
        a->total = sizeof(*a);
        *ap = a;
    }
    n = align_up(n);
    if (a->head == NULL || a->head->size - a->head->used < n) {
        size = n > ARENA_CHUNK / 4 ? n : ARENA_CHUNK;
        c = malloc(sizeof(*c) + size);
        if (c == NULL) {
            *err = ARENA_NOMEM;
            return NULL;
        }
        c->size = size;
        c->used = 0;
        a->total += sizeof(*c) + size;
        if (size > ARENA_CHUNK && a->head != NULL) {
            /* A big block (a literal) gets its own chunk behind the current one, so that
             * the small allocations that follow still fill the current chunk. */
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
        c->used = n;
        return c->data;
    }
    c = a->head;
    c->used += n;
    return (char *) c->data + c->used - n;
}

/* ---- Parser state ----------------------------------------------------------------------- */

enum pstate {
    ST_TAG,        /* start of a command: the tag */
    ST_NAME,       /* the command name (again after "UID ") */
    ST_ARGS,       /* between arguments */
    ST_ATOM,       /* inside an atom (tok) */
    ST_TILDE,      /* "~" starting an argument: literal8 or an atom */
    ST_QUOTED,     /* inside "..." (tok) */
    ST_QUOTED_ESC, /* after "\" inside "..." */
    ST_LIT_SIZE,   /* after "{": digits */
    ST_LIT_PLUS,   /* after "{n+": "}" must follow */
    ST_LIT_END,    /* after "}": CRLF must follow */
    ST_LIT_CR,     /* after "}" CR: LF must follow */
    ST_LIT_WAIT,   /* NEED_CONTINUATION returned: accept or reject */
    ST_LIT_DATA,   /* the literal's octets */
    ST_SEC_TAIL,   /* after the "]" of a section: the rest of the token */
    ST_EOL_CR,     /* CR between arguments: LF must follow */
    ST_SKIP,       /* discarding the rest of a bad line */
    ST_SKIP_LIT,   /* discarding a non-synchronizing literal inside a bad line */
    ST_FATAL,
};

/* What step() tells the loop. */
enum ev {
    EV_NEXT,   /* byte consumed */
    EV_AGAIN,  /* state changed: process the same byte again */
    EV_CMD,    /* byte consumed, command complete */
    EV_CONT,   /* byte consumed, NEED_CONTINUATION */
    EV_TOOBIG, /* byte consumed, LITERAL_TOO_BIG */
    EV_FATAL,
    EV_YIELD, /* byte not consumed: return the pending BAD first, then go on */
};

/* The skip tracker: a non-synchronizing literal announced at the end of a skipped line
 * ("{n+}" CRLF) means n octets follow that belong to the bad command. */
enum tracker { TR_NONE, TR_DIGITS, TR_PLUS, TR_NONSYNC, TR_NONSYNC_CR };

struct level {
    size_t start; /* stack index of its first item */
    bool section; /* "[" rather than "(" */
};

struct imap_parser {
    struct imap_parser_limits lim;
    unsigned flags;
    enum pstate state;
    const char *fatal_msg;
    uint64_t fatal_size;
    struct imap_parse_result *res; /* during imap_parser_parse() */
    bool bad_pending;              /* BAD to return once the skip ends or input runs out */

    /* The command being parsed. */
    struct imap_arena *arena;
    char tag[IMAP_PARSER_TAG_MAX + 1];
    size_t tag_len;
    bool have_tag;
    char name[IMAP_PARSER_NAME_MAX + 1];
    size_t name_len;
    bool have_name;
    bool uid;
    size_t line_len; /* bytes of the line outside literal data */
    size_t nargs;    /* arguments created, all levels */
    bool need_sep;   /* an argument just ended: SP, ")", "]" or a line end must follow */

    struct imap_arg *stack; /* arguments of the open levels, innermost last */
    size_t sp, stack_cap;
    struct level *levels;
    unsigned depth;

    char *tok; /* text of the atom or quoted string being read */
    size_t tok_len, tok_cap;

    /* The open section: its bytes as received (raw), from the name on. */
    bool sec_open; /* from "[" to the end of the token */
    bool sec_literal;
    size_t sec_name_len;
    size_t sec_tail; /* raw offset after "]" */
    const struct imap_arg *sec_items;
    size_t sec_count;
    char *raw;
    size_t raw_len, raw_cap;

    /* The literal being read. */
    uint64_t lit_size;
    unsigned lit_digits;
    bool lit_nonsync, lit8;
    uint64_t lit_left;
    char *lit_buf;

    /* Skipping. */
    uint64_t skip_left;
    enum tracker tr;
    uint64_t tr_n;
    unsigned tr_digits;
};

#define SCRATCH_KEEP 16384 /* scratch buffers larger than this are freed between commands */

/* ---- Characters (ASCII, never the locale) ----------------------------------------------- */

/* ATOM-CHAR widened for our purpose: printable 7-bit ASCII except the specials that would
 * make a token ambiguous. "*" "%" "\" "]" "[" stay (sequence sets, patterns, flags,
 * astrings, sections); "[" and "]" get their meaning in the states. */
static bool atom_char(uint8_t c)
{
    return c > 0x20 && c < 0x7f && c != '(' && c != ')' && c != '{' && c != '"';
}

/* tag = 1*<any ASTRING-CHAR except "+"> (RFC 3501 9, RFC 9051 9). */
static bool tag_char(uint8_t c)
{
    return atom_char(c) && c != '%' && c != '*' && c != '\\' && c != '+';
}

static bool name_char(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
}

static char to_upper(char c)
{
    return (c >= 'a' && c <= 'z') ? (char) (c - 'a' + 'A') : c;
}

static bool is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

/* ieq(): S[0..N) equals the NUL-terminated WORD, ASCII case ignored. */
static bool ieq(const char *s, size_t n, const char *word)
{
    size_t i;

    for (i = 0; i < n && word[i] != '\0'; i++)
        if (to_upper(s[i]) != to_upper(word[i]))
            return false;
    return i == n && word[i] == '\0';
}

/* digits_add() appends digit C to *N, saturating at UINT64_MAX. */
static void digits_add(uint64_t *n, uint8_t c)
{
    uint64_t d = (uint64_t) (c - '0');

    *n = *n > (UINT64_MAX - d) / 10 ? UINT64_MAX : *n * 10 + d;
}

/* ---- Command state ---------------------------------------------------------------------- */

static void scratch_trim(char **buf, size_t *cap)
{
    if (*cap > SCRATCH_KEEP) {
        free(*buf);
        *buf = NULL;
        *cap = 0;
    }
}

/* drop_tree() frees what was built of the command; its tag and name stay. */
static void drop_tree(struct imap_parser *p)
{
    arena_free(p->arena);
    p->arena = NULL;
    p->nargs = 0;
    p->sp = 0;
    p->depth = 0;
    p->need_sep = false;
    p->tok_len = 0;
    p->sec_open = false;
    p->raw_len = 0;
    p->lit_buf = NULL;
    p->lit_left = 0;
}

/* cmd_reset() forgets the command: the next byte starts a new one. */
static void cmd_reset(struct imap_parser *p)
{
    drop_tree(p);
    p->tag_len = 0;
    p->have_tag = false;
    p->name_len = 0;
    p->have_name = false;
    p->uid = false;
    p->line_len = 0;
    p->skip_left = 0;
    p->tr = TR_NONE;
    p->state = ST_TAG;
    scratch_trim(&p->tok, &p->tok_cap);
    scratch_trim(&p->raw, &p->raw_cap);
    if (p->stack_cap * sizeof(*p->stack) > SCRATCH_KEEP) {
        free(p->stack);
        p->stack = NULL;
        p->stack_cap = 0;
    }
}

/* fill_ids() copies what is known of the command into RES. */
static void fill_ids(const struct imap_parser *p, struct imap_parse_result *res)
{
    if (p->have_tag) {
        memcpy(res->tag, p->tag, p->tag_len);
        res->tag[p->tag_len] = '\0';
    }
    if (p->have_name) {
        memcpy(res->name, p->name, p->name_len);
        res->name[p->name_len] = '\0';
    }
    res->uid = p->uid;
}

/* bad() records a syntax error and starts skipping the rest of the line. */
static void bad(struct imap_parser *p, const char *msg)
{
    fill_ids(p, p->res);
    p->res->msg = msg;
    p->bad_pending = true;
    if (p->state == ST_LIT_DATA && p->lit_left > 0) {
        p->skip_left = p->lit_left;
        p->state = ST_SKIP_LIT;
    } else {
        p->state = ST_SKIP;
    }
    drop_tree(p);
    p->tr = TR_NONE;
}

static void fatal(struct imap_parser *p, const char *msg, uint64_t size)
{
    cmd_reset(p);
    p->state = ST_FATAL;
    p->fatal_msg = msg;
    p->fatal_size = size;
}

/* fail() is bad() for step(): the byte is processed again, in ST_SKIP. */
static int fail(struct imap_parser *p, const char *msg)
{
    bad(p, msg);
    return EV_AGAIN;
}

/* failed(): a helper has already called bad() or fatal(). */
static int failed(const struct imap_parser *p)
{
    return p->state == ST_FATAL ? EV_FATAL : EV_AGAIN;
}

static void *alloc(struct imap_parser *p, size_t n)
{
    enum arena_err err = ARENA_OK;
    void *ptr = arena_alloc(&p->arena, n, p->lim.mem_max, &err);

    if (ptr == NULL) {
        if (err == ARENA_LIMIT)
            bad(p, "Command too large");
        else
            fatal(p, "Out of memory", 0);
    }
    return ptr;
}

/* copy_str() stores S[0..N) and a NUL in the arena. */
static char *copy_str(struct imap_parser *p, const char *s, size_t n)
{
    char *d = alloc(p, n + 1);

    if (d != NULL) {
        if (n > 0)
            memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* buf_put() appends N bytes to a scratch buffer, which never grows past MAX. */
static bool buf_put(struct imap_parser *p, char **buf, size_t *len, size_t *cap, const void *s,
                    size_t n, size_t max)
{
    size_t ncap;
    char *nbuf;

    if (n == 0)
        return true;
    if (n > max || *len > max - n) {
        bad(p, "Command too large");
        return false;
    }
    if (*len + n > *cap) {
        ncap = *cap < 256 ? 256 : *cap;
        while (ncap < *len + n)
            ncap = ncap > SIZE_MAX / 2 ? *len + n : ncap * 2;
        nbuf = realloc(*buf, ncap);
        if (nbuf == NULL) {
            fatal(p, "Out of memory", 0);
            return false;
        }
        *buf = nbuf;
        *cap = ncap;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    return true;
}

static bool tok_put(struct imap_parser *p, uint8_t c)
{
    return buf_put(p, &p->tok, &p->tok_len, &p->tok_cap, &c, 1, p->lim.line_max);
}

static bool raw_put(struct imap_parser *p, const void *s, size_t n)
{
    return buf_put(p, &p->raw, &p->raw_len, &p->raw_cap, s, n, p->lim.mem_max);
}

static bool push_arg(struct imap_parser *p, const struct imap_arg *a)
{
    struct imap_arg *ns;
    size_t ncap;

    if (p->nargs >= p->lim.args_max) {
        bad(p, "Too many arguments");
        return false;
    }
    if (p->sp == p->stack_cap) {
        ncap = p->stack_cap == 0 ? 16 : p->stack_cap * 2;
        if (ncap > p->lim.args_max)
            ncap = p->lim.args_max;
        ns = realloc(p->stack, ncap * sizeof(*ns));
        if (ns == NULL) {
            fatal(p, "Out of memory", 0);
            return false;
        }
        p->stack = ns;
        p->stack_cap = ncap;
    }
    p->stack[p->sp++] = *a;
    p->nargs++;
    p->need_sep = true;
    return true;
}

/* reduce() moves the stack items from START on into an EOL-terminated arena array. */
static struct imap_arg *reduce(struct imap_parser *p, size_t start, size_t *count)
{
    size_t n = p->sp - start;
    struct imap_arg *arr = alloc(p, (n + 1) * sizeof(*arr));

    if (arr == NULL)
        return NULL;
    if (n > 0)
        memcpy(arr, p->stack + start, n * sizeof(*arr));
    memset(&arr[n], 0, sizeof(arr[n]));
    arr[n].type = IMAP_ARG_EOL;
    p->sp = start;
    *count = n;
    return arr;
}

/* literal_limit(): message literals for APPEND and REPLACE (RFC 8508), else literal_max. */
static uint64_t literal_limit(const struct imap_parser *p)
{
    if (p->have_name && (strcmp(p->name, "APPEND") == 0 || strcmp(p->name, "REPLACE") == 0))
        return p->lim.append_literal_max;
    return p->lim.literal_max;
}

/* nonsync_ok(): a non-synchronizing literal of N octets may be read (RFC 7888). */
static bool nonsync_ok(const struct imap_parser *p, uint64_t n)
{
    if ((p->flags & IMAP_PARSER_FLAG_LITERAL_PLUS) == 0 && n > IMAP_LITERAL_MINUS_MAX)
        return false;
    return n <= literal_limit(p);
}

static bool in_section(const struct imap_parser *p)
{
    return p->depth > 0 && p->levels[p->depth - 1].section;
}

/* ---- Reductions ------------------------------------------------------------------------- */

static bool finish_atom(struct imap_parser *p)
{
    struct imap_arg a;

    memset(&a, 0, sizeof(a));
    a.type = ieq(p->tok, p->tok_len, "NIL") ? IMAP_ARG_NIL : IMAP_ARG_ATOM;
    a.str = copy_str(p, p->tok, p->tok_len);
    if (a.str == NULL)
        return false;
    a.len = p->tok_len;
    p->tok_len = 0;
    return push_arg(p, &a);
}

static bool finish_quoted(struct imap_parser *p)
{
    struct imap_arg a;

    memset(&a, 0, sizeof(a));
    a.type = IMAP_ARG_QUOTED;
    a.str = copy_str(p, p->tok, p->tok_len);
    if (a.str == NULL)
        return false;
    a.len = p->tok_len;
    p->tok_len = 0;
    return push_arg(p, &a);
}

static bool open_level(struct imap_parser *p, bool section)
{
    if (p->depth >= p->lim.depth_max) {
        bad(p, "Too deeply nested");
        return false;
    }
    p->levels[p->depth].start = p->sp;
    p->levels[p->depth].section = section;
    p->depth++;
    p->need_sep = false;
    return true;
}

static bool close_list(struct imap_parser *p)
{
    struct imap_arg a;

    if (p->depth == 0) {
        bad(p, "Unexpected ')'");
        return false;
    }
    if (in_section(p)) {
        bad(p, "Missing ']'");
        return false;
    }
    memset(&a, 0, sizeof(a));
    a.type = IMAP_ARG_LIST;
    a.list = reduce(p, p->levels[p->depth - 1].start, &a.count);
    if (a.list == NULL)
        return false;
    p->depth--;
    return push_arg(p, &a);
}

/* open_section(): "[" inside an atom; tok holds the name. */
static bool open_section(struct imap_parser *p)
{
    if (!open_level(p, true))
        return false;
    p->raw_len = 0;
    if (!raw_put(p, p->tok, p->tok_len) || !raw_put(p, "[", 1))
        return false;
    p->sec_name_len = p->tok_len;
    p->sec_literal = false;
    p->sec_open = true;
    p->tok_len = 0;
    return true;
}

/* close_section(): "]" (already in raw) ends the section's items. */
static bool close_section(struct imap_parser *p)
{
    p->sec_items = reduce(p, p->levels[p->depth - 1].start, &p->sec_count);
    if (p->sec_items == NULL)
        return false;
    p->depth--;
    p->sec_tail = p->raw_len;
    return true;
}

/* parse_u63(): S[0..N) is 1*DIGIT with a value below 2^63 (number64, RFC 9051 9). */
static bool parse_u63(const char *s, size_t n, uint64_t *v)
{
    size_t i;

    *v = 0;
    if (n == 0)
        return false;
    for (i = 0; i < n; i++) {
        if (!is_digit((uint8_t) s[i]))
            return false;
        digits_add(v, (uint8_t) s[i]);
        if (*v > INT64_MAX)
            return false;
    }
    return true;
}

/* parse_partial(): "<" number64 "." nz-number64 ">" (RFC 9051 9 partial). */
static bool parse_partial(const char *s, size_t n, uint64_t *off, uint64_t *cnt)
{
    const char *dot;

    if (n < 5 || s[0] != '<' || s[n - 1] != '>')
        return false;
    dot = memchr(s, '.', n);
    if (dot == NULL)
        return false;
    return parse_u63(s + 1, (size_t) (dot - s - 1), off) &&
           parse_u63(dot + 1, (size_t) (s + n - 1 - dot - 1), cnt) && *cnt > 0;
}

static bool finish_section(struct imap_parser *p)
{
    struct imap_arg a;
    const char *tail = p->raw + p->sec_tail;
    size_t tail_len = p->raw_len - p->sec_tail;

    memset(&a, 0, sizeof(a));
    a.type = IMAP_ARG_ATOM;
    a.flags = IMAP_ARG_FLAG_SECTION | (p->sec_literal ? IMAP_ARG_FLAG_RAW_LITERAL : 0);
    if (tail_len > 0) {
        if (parse_partial(tail, tail_len, &a.partial_offset, &a.partial_count))
            a.flags |= IMAP_ARG_FLAG_PARTIAL;
        else
            a.flags |= IMAP_ARG_FLAG_SUFFIX;
    }
    a.str = copy_str(p, p->raw, p->raw_len);
    if (a.str == NULL)
        return false;
    a.len = p->raw_len;
    a.name_len = p->sec_name_len;
    a.list = p->sec_items;
    a.count = p->sec_count;
    p->sec_open = false;
    p->raw_len = 0;
    return push_arg(p, &a);
}

static int end_of_line(struct imap_parser *p)
{
    struct imap_cmd *cmd;
    size_t count;
    const struct imap_arg *args;

    if (p->depth > 0)
        return fail(p, in_section(p) ? "Missing ']'" : "Missing ')'");
    args = reduce(p, 0, &count);
    if (args == NULL)
        return failed(p);
    cmd = alloc(p, sizeof(*cmd));
    if (cmd == NULL)
        return failed(p);
    cmd->tag = copy_str(p, p->tag, p->tag_len);
    cmd->name = cmd->tag == NULL ? NULL : copy_str(p, p->name, p->name_len);
    if (cmd->name == NULL)
        return failed(p);
    cmd->uid = p->uid;
    cmd->args = args;
    cmd->count = count;
    cmd->arena = p->arena;
    p->arena = NULL;
    fill_ids(p, p->res);
    p->res->cmd = cmd;
    cmd_reset(p);
    return EV_CMD;
}

/* ---- Literals --------------------------------------------------------------------------- */

/* literal_start(): the CRLF after "{n}" / "{n+}" has been read. */
static int literal_start(struct imap_parser *p)
{
    uint64_t n = p->lit_size;
    bool fits = n <= literal_limit(p) && n < SIZE_MAX / 2 &&
                (p->arena != NULL ? p->arena->total : 0) + arena_cost(p->arena, (size_t) n + 1) <=
                    p->lim.mem_max;

    p->res->literal_size = n;
    if (!p->lit_nonsync) {
        fill_ids(p, p->res);
        if (!fits) {
            p->res->msg = "[TOOBIG] Literal too big";
            cmd_reset(p);
            return EV_TOOBIG;
        }
        p->state = ST_LIT_WAIT;
        return EV_CONT;
    }
    if ((p->flags & IMAP_PARSER_FLAG_LITERAL_PLUS) == 0 && n > IMAP_LITERAL_MINUS_MAX) {
        fatal(p, "[TOOBIG] Non-synchronizing literal over 4096 octets (LITERAL-)", n);
        return EV_FATAL;
    }
    if (!fits) {
        fatal(p, "[TOOBIG] Non-synchronizing literal too big", n);
        return EV_FATAL;
    }
    p->lit_left = n;
    p->lit_buf = NULL;
    p->state = ST_LIT_DATA;
    return EV_NEXT;
}

static bool finish_literal(struct imap_parser *p)
{
    struct imap_arg a;

    memset(&a, 0, sizeof(a));
    a.type = IMAP_ARG_LITERAL;
    a.flags = (p->lit8 ? IMAP_ARG_FLAG_LITERAL8 : 0) | (p->lit_nonsync ? IMAP_ARG_FLAG_NONSYNC : 0);
    p->lit_buf[p->lit_size] = '\0';
    a.str = p->lit_buf;
    a.len = (size_t) p->lit_size;
    p->lit_buf = NULL;
    p->state = ST_ARGS;
    return push_arg(p, &a);
}

/* literal_data() takes up to N octets of literal data; returns how many it consumed. */
static size_t literal_data(struct imap_parser *p, const uint8_t *data, size_t n)
{
    size_t take = p->lit_left < n ? (size_t) p->lit_left : n;
    size_t pos = (size_t) (p->lit_size - p->lit_left);
    const uint8_t *nul;

    if (p->lit_buf == NULL) {
        p->lit_buf = alloc(p, (size_t) p->lit_size + 1);
        if (p->lit_buf == NULL)
            return 0; /* bad() now skips the literal, or fatal */
    }
    if (!p->lit8 && take > 0 && (nul = memchr(data, 0, take)) != NULL) {
        take = (size_t) (nul - data) + 1;
        p->lit_left -= take;
        bad(p, "NUL octet in literal (use literal8)");
        return take;
    }
    if (take > 0)
        memcpy(p->lit_buf + pos, data, take);
    p->lit_left -= take;
    if (p->sec_open && take > 0) {
        p->sec_literal = true;
        if (!raw_put(p, data, take))
            return take;
    }
    if (p->lit_left == 0)
        (void) finish_literal(p);
    return take;
}

/* ---- States ----------------------------------------------------------------------------- */

static int st_tag(struct imap_parser *p, uint8_t c)
{
    if (c == ' ' || c == '\r' || c == '\n') {
        if (p->tag_len == 0)
            return fail(p, c == ' ' ? "Missing tag" : "Empty command line");
        p->tag[p->tag_len] = '\0';
        p->have_tag = true;
        if (c != ' ')
            return fail(p, "Missing command name");
        p->state = ST_NAME;
        return EV_NEXT;
    }
    if (c == 0)
        return fail(p, "NUL octet in command");
    if (!tag_char(c))
        return fail(p, "Invalid character in tag");
    if (p->tag_len == IMAP_PARSER_TAG_MAX)
        return fail(p, "Tag too long");
    p->tag[p->tag_len++] = (char) c;
    return EV_NEXT;
}

static int st_name(struct imap_parser *p, uint8_t c)
{
    if (c == ' ' || c == '\r' || c == '\n') {
        if (p->name_len == 0)
            return fail(p, p->uid ? "Missing command after UID" : "Missing command name");
        p->name[p->name_len] = '\0';
        if (strcmp(p->name, "UID") == 0) {
            if (p->uid)
                return fail(p, "Invalid command after UID");
            if (c != ' ')
                return fail(p, "Missing command after UID");
            p->uid = true;
            p->name_len = 0;
            return EV_NEXT;
        }
        p->have_name = true;
        p->state = ST_ARGS;
        p->need_sep = false;
        return c == ' ' ? EV_NEXT : EV_AGAIN;
    }
    if (c == 0)
        return fail(p, "NUL octet in command");
    if (!name_char(c))
        return fail(p, "Invalid character in command name");
    if (p->name_len == IMAP_PARSER_NAME_MAX)
        return fail(p, "Command name too long");
    p->name[p->name_len++] = to_upper((char) c);
    return EV_NEXT;
}

static int st_args(struct imap_parser *p, uint8_t c)
{
    switch (c) {
    case ' ':
        p->need_sep = false;
        return EV_NEXT;
    case '\r':
        p->state = ST_EOL_CR;
        return EV_NEXT;
    case '\n':
        return end_of_line(p);
    case ')':
        return close_list(p) ? EV_NEXT : failed(p);
    case ']':
        if (in_section(p)) {
            if (!close_section(p))
                return failed(p);
            p->state = ST_SEC_TAIL;
            return EV_NEXT;
        }
        if (p->sec_open)
            return fail(p, "Missing ')'");
        break; /* an atom character outside sections (astring) */
    default:
        break;
    }
    if (p->need_sep)
        return fail(p, "Missing space between arguments");
    switch (c) {
    case '(':
        return open_level(p, false) ? EV_NEXT : failed(p);
    case '"':
        p->tok_len = 0;
        p->state = ST_QUOTED;
        return EV_NEXT;
    case '{':
        p->lit8 = false;
        p->lit_size = 0;
        p->lit_digits = 0;
        p->state = ST_LIT_SIZE;
        return EV_NEXT;
    case '~':
        p->state = ST_TILDE;
        return EV_NEXT;
    case 0:
        return fail(p, "NUL octet in command");
    default:
        break;
    }
    if (!atom_char(c))
        return fail(p, "Invalid character in command");
    p->tok_len = 0;
    p->state = ST_ATOM;
    return EV_AGAIN;
}

static int st_atom(struct imap_parser *p, uint8_t c)
{
    if (c == ' ' || c == '\r' || c == '\n' || c == ')' || (c == ']' && p->sec_open)) {
        if (!finish_atom(p))
            return failed(p);
        p->state = ST_ARGS;
        return EV_AGAIN;
    }
    if (c == '[') {
        if (p->sec_open)
            return fail(p, "Unexpected '['");
        if (!open_section(p))
            return failed(p);
        p->state = ST_ARGS;
        return EV_NEXT;
    }
    if (c == 0)
        return fail(p, "NUL octet in command");
    if (!atom_char(c))
        return fail(p, "Invalid character in atom");
    return tok_put(p, c) ? EV_NEXT : failed(p);
}

static int st_tilde(struct imap_parser *p, uint8_t c)
{
    if (c == '{') {
        if (p->sec_open)
            return fail(p, "literal8 inside []");
        p->lit8 = true;
        p->lit_size = 0;
        p->lit_digits = 0;
        p->state = ST_LIT_SIZE;
        return EV_NEXT;
    }
    p->tok_len = 0;
    if (!tok_put(p, '~'))
        return failed(p);
    p->state = ST_ATOM;
    return EV_AGAIN;
}

static int st_quoted(struct imap_parser *p, uint8_t c)
{
    switch (c) {
    case '"':
        if (!finish_quoted(p))
            return failed(p);
        p->state = ST_ARGS;
        return EV_NEXT;
    case '\\':
        p->state = ST_QUOTED_ESC;
        return EV_NEXT;
    case '\r':
    case '\n':
        return fail(p, "Unterminated quoted string");
    case 0:
        return fail(p, "NUL octet in quoted string");
    default:
        return tok_put(p, c) ? EV_NEXT : failed(p);
    }
}

static int st_quoted_esc(struct imap_parser *p, uint8_t c)
{
    if (c != '"' && c != '\\')
        return fail(p, "Invalid escape in quoted string");
    p->state = ST_QUOTED;
    return tok_put(p, c) ? EV_NEXT : failed(p);
}

static int st_lit_size(struct imap_parser *p, uint8_t c)
{
    if (is_digit(c)) {
        digits_add(&p->lit_size, c);
        if (p->lit_digits < UINT32_MAX)
            p->lit_digits++;
        return EV_NEXT;
    }
    if ((c == '+' || c == '}') && p->lit_digits > 0) {
        p->lit_nonsync = c == '+';
        p->state = c == '+' ? ST_LIT_PLUS : ST_LIT_END;
        return EV_NEXT;
    }
    return fail(p, "Invalid literal size");
}

static int st_lit_end(struct imap_parser *p, uint8_t c)
{
    if (p->state == ST_LIT_PLUS) {
        if (c != '}')
            return fail(p, "Invalid literal size");
        p->state = ST_LIT_END;
        return EV_NEXT;
    }
    if (c == '\r' && p->state == ST_LIT_END) {
        p->state = ST_LIT_CR;
        return EV_NEXT;
    }
    if (c == '\n')
        return literal_start(p);
    return fail(p, "Missing line end after literal size");
}

static int st_sec_tail(struct imap_parser *p, uint8_t c)
{
    if (c == ' ' || c == '\r' || c == '\n' || c == ')') {
        p->raw_len--; /* the terminator was captured with the token */
        if (!finish_section(p))
            return failed(p);
        p->state = ST_ARGS;
        return EV_AGAIN;
    }
    if (c == '[')
        return fail(p, "Unexpected '['");
    if (c == 0)
        return fail(p, "NUL octet in command");
    if (!atom_char(c))
        return fail(p, "Invalid character after ']'");
    return EV_NEXT;
}

static int st_eol_cr(struct imap_parser *p, uint8_t c)
{
    if (c != '\n')
        return fail(p, "CR without LF");
    return end_of_line(p);
}

/* st_skip(): discards the bad line up to its LF; a "{n+}" at its end brings n octets more. */
static int st_skip(struct imap_parser *p, uint8_t c)
{
    switch (c) {
    case '{':
        p->tr = TR_DIGITS;
        p->tr_n = 0;
        p->tr_digits = 0;
        break;
    case '+':
        p->tr = p->tr == TR_DIGITS && p->tr_digits > 0 ? TR_PLUS : TR_NONE;
        break;
    case '}':
        p->tr = p->tr == TR_PLUS ? TR_NONSYNC : TR_NONE;
        break;
    case '\r':
        p->tr = p->tr == TR_NONSYNC ? TR_NONSYNC_CR : TR_NONE;
        break;
    case '\n':
        if (p->tr == TR_NONSYNC || p->tr == TR_NONSYNC_CR) {
            if (!nonsync_ok(p, p->tr_n)) {
                if (p->bad_pending)
                    return EV_YIELD; /* the BAD first, whatever the chunking */
                fatal(p, "[TOOBIG] Non-synchronizing literal too big", p->tr_n);
                return EV_FATAL;
            }
            p->skip_left = p->tr_n;
            p->tr = TR_NONE;
            p->state = ST_SKIP_LIT;
            return EV_NEXT;
        }
        cmd_reset(p);
        return EV_NEXT;
    default:
        if (p->tr == TR_DIGITS && is_digit(c)) {
            digits_add(&p->tr_n, c);
            p->tr_digits = 1;
        } else {
            p->tr = TR_NONE;
        }
        break;
    }
    return EV_NEXT;
}

static int step(struct imap_parser *p, uint8_t c)
{
    switch (p->state) {
    case ST_TAG:
        return st_tag(p, c);
    case ST_NAME:
        return st_name(p, c);
    case ST_ARGS:
        return st_args(p, c);
    case ST_ATOM:
        return st_atom(p, c);
    case ST_TILDE:
        return st_tilde(p, c);
    case ST_QUOTED:
        return st_quoted(p, c);
    case ST_QUOTED_ESC:
        return st_quoted_esc(p, c);
    case ST_LIT_SIZE:
        return st_lit_size(p, c);
    case ST_LIT_PLUS:
    case ST_LIT_END:
    case ST_LIT_CR:
        return st_lit_end(p, c);
    case ST_SEC_TAIL:
        return st_sec_tail(p, c);
    case ST_EOL_CR:
        return st_eol_cr(p, c);
    case ST_SKIP:
        return st_skip(p, c);
    case ST_LIT_WAIT:
    case ST_LIT_DATA:
    case ST_SKIP_LIT:
    case ST_FATAL:
        break;
    }
    abort(); /* the loop handles those states itself */
}

/* counts(): bytes read in state S count toward line_max. */
static bool counts(enum pstate s)
{
    return s != ST_SKIP && s != ST_SKIP_LIT && s != ST_LIT_DATA && s != ST_LIT_WAIT &&
           s != ST_FATAL;
}

/* ---- API -------------------------------------------------------------------------------- */

void imap_parser_limits_default(struct imap_parser_limits *lim)
{
    lim->line_max = IMAP_PARSER_LINE_MAX;
    lim->literal_max = IMAP_PARSER_LITERAL_MAX;
    lim->append_literal_max = IMAP_PARSER_APPEND_LITERAL_MAX;
    lim->mem_max = 0;
    lim->depth_max = IMAP_PARSER_DEPTH_MAX;
    lim->args_max = IMAP_PARSER_ARGS_MAX;
}

struct imap_parser *imap_parser_new(const struct imap_parser_limits *lim, unsigned flags)
{
    struct imap_parser *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return NULL;
    if (lim != NULL)
        p->lim = *lim;
    else
        imap_parser_limits_default(&p->lim);
    if (p->lim.line_max < 1024)
        p->lim.line_max = 1024;
    if (p->lim.depth_max < 1)
        p->lim.depth_max = 1;
    if (p->lim.depth_max > 4096)
        p->lim.depth_max = 4096;
    if (p->lim.args_max < 16)
        p->lim.args_max = 16;
    if (p->lim.mem_max == 0)
        p->lim.mem_max = p->lim.append_literal_max > SIZE_MAX / 4
                             ? SIZE_MAX / 4
                             : (size_t) p->lim.append_literal_max + IMAP_PARSER_MEM_SLACK;
    if (p->lim.mem_max < 64 * 1024)
        p->lim.mem_max = 64 * 1024;
    p->flags = flags;
    p->levels = calloc(p->lim.depth_max, sizeof(*p->levels));
    if (p->levels == NULL) {
        free(p);
        return NULL;
    }
    p->state = ST_TAG;
    return p;
}

void imap_parser_free(struct imap_parser *p)
{
    if (p == NULL)
        return;
    arena_free(p->arena);
    free(p->stack);
    free(p->levels);
    free(p->tok);
    free(p->raw);
    free(p);
}

void imap_cmd_free(struct imap_cmd *cmd)
{
    if (cmd != NULL)
        arena_free(cmd->arena); /* CMD itself lives in its arena */
}

int imap_parser_parse(struct imap_parser *p, const uint8_t *data, size_t len,
                      struct imap_parse_result *res)
{
    size_t i = 0;
    bool again = false;
    int ev;

    memset(res, 0, sizeof(*res));
    if (p->state == ST_FATAL) {
        res->msg = p->fatal_msg;
        res->literal_size = p->fatal_size;
        return IMAP_PARSE_FATAL;
    }
    if (p->state == ST_LIT_WAIT) {
        fill_ids(p, res);
        res->literal_size = p->lit_size;
        return IMAP_PARSE_NEED_CONTINUATION;
    }
    p->res = res;
    p->bad_pending = false;
    while (i < len) {
        if (p->state == ST_LIT_DATA) {
            i += literal_data(p, data + i, len - i);
        } else if (p->state == ST_SKIP_LIT) {
            size_t n = p->skip_left < len - i ? (size_t) p->skip_left : len - i;

            i += n;
            p->skip_left -= n;
            if (p->skip_left == 0) {
                p->state = ST_SKIP;
                p->tr = TR_NONE;
            }
        } else {
            uint8_t c = data[i];

            if (!again && counts(p->state)) {
                if (p->line_len >= p->lim.line_max) {
                    bad(p, "Command line too long");
                    again = true;
                    continue;
                }
                p->line_len++;
                if (p->sec_open && !raw_put(p, &c, 1)) {
                    again = true;
                    if (p->state == ST_FATAL)
                        break;
                    continue;
                }
            }
            ev = step(p, c);
            if (ev == EV_YIELD)
                break;
            again = ev == EV_AGAIN;
            if (!again && ev != EV_FATAL)
                i++;
            if (ev == EV_CMD || ev == EV_CONT || ev == EV_TOOBIG) {
                res->consumed = i;
                p->res = NULL;
                return ev == EV_CMD    ? IMAP_PARSE_OK
                       : ev == EV_CONT ? IMAP_PARSE_NEED_CONTINUATION
                                       : IMAP_PARSE_LITERAL_TOO_BIG;
            }
        }
        if (p->state == ST_FATAL)
            break;
        if (p->bad_pending && p->state != ST_SKIP && p->state != ST_SKIP_LIT)
            break;
    }
    res->consumed = i;
    p->res = NULL;
    if (p->state == ST_FATAL) {
        memset(res, 0, sizeof(*res));
        res->consumed = i;
        res->msg = p->fatal_msg;
        res->literal_size = p->fatal_size;
        return IMAP_PARSE_FATAL;
    }
    if (p->bad_pending) {
        res->skipping = p->state == ST_SKIP || p->state == ST_SKIP_LIT;
        return IMAP_PARSE_BAD;
    }
    return IMAP_PARSE_NEED_MORE;
}

void imap_parser_accept_literal(struct imap_parser *p)
{
    if (p->state != ST_LIT_WAIT)
        return;
    p->lit_left = p->lit_size;
    p->lit_buf = NULL;
    p->state = ST_LIT_DATA;
}

void imap_parser_reject_literal(struct imap_parser *p)
{
    if (p->state == ST_LIT_WAIT)
        cmd_reset(p);
}

bool imap_parser_idle(const struct imap_parser *p)
{
    return p->state == ST_TAG && p->tag_len == 0;
}

void imap_parser_reset(struct imap_parser *p)
{
    if (p->state != ST_FATAL)
        cmd_reset(p);
}

/* ---- Argument helpers ------------------------------------------------------------------- */

bool imap_arg_atom_equals(const struct imap_arg *a, const char *word)
{
    if (a->type != IMAP_ARG_ATOM && a->type != IMAP_ARG_NIL)
        return false;
    return ieq(a->str, (a->flags & IMAP_ARG_FLAG_SECTION) ? a->name_len : a->len, word);
}

const char *imap_arg_string(const struct imap_arg *a, size_t *len)
{
    if (a->type != IMAP_ARG_QUOTED && a->type != IMAP_ARG_LITERAL)
        return NULL;
    if (a->type == IMAP_ARG_LITERAL && memchr(a->str, 0, a->len) != NULL)
        return NULL;
    *len = a->len;
    return a->str;
}

const char *imap_arg_astring(const struct imap_arg *a, size_t *len)
{
    if (a->type == IMAP_ARG_ATOM || a->type == IMAP_ARG_NIL) {
        if (a->flags & IMAP_ARG_FLAG_RAW_LITERAL)
            return NULL;
        *len = a->len;
        return a->str;
    }
    return imap_arg_string(a, len);
}
