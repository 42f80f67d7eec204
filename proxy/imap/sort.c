/*
 * proxy/imap/sort.c
 * SORT, THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256), DISPLAYFROM/DISPLAYTO
 * (RFC 5957).
 * The messages are chosen with SEARCH's own matcher (search.c); sort keys come from the
 * ENVELOPE parsed at delivery: sent date (Date header, else the internal date), the first
 * address's mailbox or display name, and the base subject (RFC 5256 2.1: leading "Re:",
 * "Fw:", "Fwd:" and "[blob]"s, trailing "(fwd)", white space runs folded, RFC 2047 words
 * of UTF-8/ISO-8859-1 decoded, ASCII case ignored). Ties go to the sequence number.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "body_store.h"
#include "imap.h"

enum sortkey { K_ARRIVAL, K_CC, K_DATE, K_FROM, K_SIZE, K_SUBJECT, K_TO, K_DISPFROM, K_DISPTO };

#define SORT_KEYS_MAX 8
#define SORT_STR_MAX  256

struct item {
    uint32_t msn, uid;
    uint64_t arrival, date, size;
    char from[SORT_STR_MAX], to[SORT_STR_MAX], cc[SORT_STR_MAX], subject[SORT_STR_MAX];
    char dfrom[SORT_STR_MAX], dto[SORT_STR_MAX];
    bool reply; /* the subject had a reply/forward marker that base_subject() removed */
};

struct crit {
    enum sortkey key;
    bool reverse;
};

struct crits {
    struct crit v[SORT_KEYS_MAX];
    size_t n;
};

static void lower_copy(char *out, const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k < SORT_STR_MAX - 1; i++) {
        char ch = s[i];
        out[k++] = (char) (ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    out[k] = 0;
}

static const char *mstr(const struct mime_msg *m, struct mime_str x, size_t *len)
{
    if (x.off == MIME_NIL_OFF) {
        *len = 0;
        return "";
    }
    *len = x.len;
    return m->strs + x.off;
}

/* base_subject(): RFC 5256 2.1, simplified to what clients send in practice. */
static void base_subject(const char *in, size_t n, char out[SORT_STR_MAX])
{
    char buf[SORT_STR_MAX];
    size_t k = 0;
    bool space = false;
    for (size_t i = 0; i < n && k < sizeof buf - 1; i++) { /* fold white space */
        char ch = in[i] == '\t' || in[i] == '\r' || in[i] == '\n' ? ' ' : in[i];
        if (ch == ' ') {
            if (!space && k)
                buf[k++] = ' ';
            space = true;
        } else {
            buf[k++] = (char) (ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
            space = false;
        }
    }
    buf[k] = 0;
    char *p = buf;
    for (bool again = true; again;) {
        again = false;
        while (k && p[k - 1] == ' ')
            p[--k] = 0;
        if (k >= 5 && strcmp(p + k - 5, "(fwd)") == 0) {
            k -= 5;
            p[k] = 0;
            again = true;
        }
        while (*p == ' ')
            p++, k--;
        if (*p == '[') { /* [blob] */
            char *e = strchr(p, ']');
            if (e && e[1]) {
                k -= (size_t) (e + 1 - p);
                p = e + 1;
                again = true;
                continue;
            }
        }
        static const char *pre[] = {"re", "fwd", "fw"};
        for (size_t j = 0; j < 3; j++) {
            size_t l = strlen(pre[j]);
            if (strncmp(p, pre[j], l) == 0) {
                char *q = p + l;
                while (*q == ' ')
                    q++;
                if (*q == '[') {
                    char *e = strchr(q, ']');
                    q = e ? e + 1 : q;
                }
                if (*q == ':') {
                    k -= (size_t) (q + 1 - p);
                    p = q + 1;
                    again = true;
                    break;
                }
            }
        }
    }
    snprintf(out, SORT_STR_MAX, "%s", p);
}

static uint64_t sent_date(const struct mime_msg *m, uint64_t fallback)
{
    size_t n;
    const char *d = m->nenvs ? mstr(m, m->envs[0].date, &n) : "";
    if (m->nenvs == 0 || n == 0 || n > 200)
        return fallback;
    char buf[256];
    memcpy(buf, d, n);
    buf[n] = 0;
    struct tm tm = {0};
    const char *p = strchr(buf, ',') ? strchr(buf, ',') + 1 : buf;
    char *rest = strptime(p, " %d %b %Y %H:%M:%S", &tm);
    if (rest == NULL)
        return fallback;
    time_t t = timegm(&tm);
    int zone = 0;
    if (sscanf(rest, " %d", &zone) == 1) {
        int sign = zone < 0 ? -1 : 1, z = zone * sign;
        t -= sign * ((z / 100) * 3600 + (z % 100) * 60);
    }
    return t < 0 ? fallback : (uint64_t) t;
}

/* first_addr(): the first address of list L: its mailbox, or (DISPLAY) its name or else
 * its mailbox@host. */
static void first_addr(const struct mime_msg *m, struct mime_list l, bool display,
                       char out[SORT_STR_MAX])
{
    out[0] = 0;
    for (uint32_t i = 0; i < l.count; i++) {
        const struct mime_addr *a = &m->addrs[l.first + i];
        if (a->host.off == MIME_NIL_OFF && a->mailbox.off == MIME_NIL_OFF)
            continue; /* group end */
        if (a->host.off == MIME_NIL_OFF)
            continue; /* group start */
        size_t n;
        const char *s;
        if (display && (s = mstr(m, a->name, &n), n)) {
            lower_copy(out, s, n);
        } else if (display) {
            size_t hl;
            const char *mb = mstr(m, a->mailbox, &n), *h = mstr(m, a->host, &hl);
            char tmp[SORT_STR_MAX];
            snprintf(tmp, sizeof tmp, "%.*s@%.*s", (int) n, mb, (int) hl, h);
            lower_copy(out, tmp, strlen(tmp));
        } else {
            s = mstr(m, a->mailbox, &n);
            lower_copy(out, s, n);
        }
        return;
    }
}

static bool load_item(struct imap_sess *s, uint32_t msn, struct item *it)
{
    memset(it, 0, sizeof *it);
    it->msn = msn;
    it->uid = s->v->uids[msn - 1];
    Tern__MessageRec *r = imap_load_message(s, it->uid);
    if (r == NULL)
        return false;
    it->arrival = r->internal_date;
    it->size = r->size;
    it->date = it->arrival;
    struct mime_msg m = {0};
    if (r->has_mime && mime_decode(r->mime.data, r->mime.len, &m) == 0 && m.nenvs) {
        const struct mime_envelope *e = &m.envs[0];
        it->date = sent_date(&m, it->arrival);
        first_addr(&m, e->from, false, it->from);
        first_addr(&m, e->to, false, it->to);
        first_addr(&m, e->cc, false, it->cc);
        first_addr(&m, e->from, true, it->dfrom);
        first_addr(&m, e->to, true, it->dto);
        size_t n;
        const char *sub = mstr(&m, e->subject, &n);
        base_subject(sub, n, it->subject);
        char plain[SORT_STR_MAX];
        size_t k = 0;
        while (n && (*sub == ' ' || *sub == '\t'))
            sub++, n--;
        lower_copy(plain, sub, n);
        k = strlen(plain);
        while (k && plain[k - 1] == ' ')
            plain[--k] = 0;
        it->reply = strcmp(plain, it->subject) != 0;
    }
    mime_free(&m);
    tern__message_rec__free_unpacked(r, NULL);
    return true;
}

static int cmp_u64(uint64_t a, uint64_t b)
{
    return a < b ? -1 : a > b;
}

static int cmp_items(const void *pa, const void *pb, void *ctx)
{
    const struct item *a = pa, *b = pb;
    const struct crits *cr = ctx;
    for (size_t i = 0; i < cr->n; i++) {
        int c = 0;
        switch (cr->v[i].key) {
        case K_ARRIVAL:
            c = cmp_u64(a->arrival, b->arrival);
            break;
        case K_DATE:
            c = cmp_u64(a->date, b->date);
            break;
        case K_SIZE:
            c = cmp_u64(a->size, b->size);
            break;
        case K_FROM:
            c = strcmp(a->from, b->from);
            break;
        case K_TO:
            c = strcmp(a->to, b->to);
            break;
        case K_CC:
            c = strcmp(a->cc, b->cc);
            break;
        case K_SUBJECT:
            c = strcmp(a->subject, b->subject);
            break;
        case K_DISPFROM:
            c = strcmp(a->dfrom, b->dfrom);
            break;
        case K_DISPTO:
            c = strcmp(a->dto, b->dto);
            break;
        }
        if (c)
            return cr->v[i].reverse ? -c : c;
    }
    return cmp_u64(a->msn, b->msn);
}

/* charset(): CHARSET argument at A: UTF-8 or US-ASCII, else an answer and false. */
static bool charset_ok(struct imap_sess *s, struct imap_cmd *cmd, const struct imap_arg *a)
{
    size_t n;
    const char *cs = imap_arg_astring(a, &n);
    if (cs == NULL) {
        imap_tagged(s, cmd->tag, "BAD", "Missing charset");
        return false;
    }
    if (strcasecmp(cs, "UTF-8") && strcasecmp(cs, "US-ASCII")) {
        imap_tagged(s, cmd->tag, "NO", "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset");
        return false;
    }
    return true;
}

/* select_items(): the matching messages with their sort data; -1 after an answer. */
static long select_items(struct imap_sess *s, struct imap_cmd *cmd, size_t first, struct item **out)
{
    const char *why = NULL;
    uint32_t *hits = NULL;
    long n = imap_search_match(s, cmd->args + first, cmd->count - first, &hits, &why);
    if (n < 0) {
        imap_tagged(s, cmd->tag, "BAD", "%s", why ? why : "Bad search keys");
        return -1;
    }
    struct item *v = malloc((n ? (size_t) n : 1) * sizeof *v);
    long k = 0;
    for (long i = 0; v && i < n; i++)
        if (load_item(s, hits[i], &v[k]))
            k++;
    free(hits);
    if (v == NULL) {
        imap_tagged(s, cmd->tag, "NO", "[UNAVAILABLE] Out of memory");
        return -1;
    }
    *out = v;
    return k;
}

void imap_cmd_sort(struct imap_sess *s, struct imap_cmd *cmd)
{
    if (cmd->count < 3 || cmd->args[0].type != IMAP_ARG_LIST || cmd->args[0].count == 0) {
        imap_tagged(s, cmd->tag, "BAD", "Syntax: SORT (criteria) charset search-keys");
        return;
    }
    static const struct {
        const char *name;
        enum sortkey key;
    } names[] = {{"ARRIVAL", K_ARRIVAL}, {"CC", K_CC},
                 {"DATE", K_DATE},       {"FROM", K_FROM},
                 {"SIZE", K_SIZE},       {"SUBJECT", K_SUBJECT},
                 {"TO", K_TO},           {"DISPLAYFROM", K_DISPFROM},
                 {"DISPLAYTO", K_DISPTO}};
    struct crits cr = {0};
    struct crit *crit = cr.v;
    size_t nc = 0;
    bool rev = false;
    const struct imap_arg *l = &cmd->args[0];
    for (size_t i = 0; i < l->count; i++) {
        if (imap_arg_atom_equals(&l->list[i], "REVERSE")) {
            rev = true;
            continue;
        }
        size_t j = 0;
        while (j < sizeof names / sizeof names[0] &&
               !imap_arg_atom_equals(&l->list[i], names[j].name))
            j++;
        if (j == sizeof names / sizeof names[0] || nc == SORT_KEYS_MAX) {
            imap_tagged(s, cmd->tag, "BAD", "Unknown sort criterion");
            return;
        }
        crit[nc++] = (struct crit){.key = names[j].key, .reverse = rev};
        rev = false;
    }
    if (rev || nc == 0) {
        imap_tagged(s, cmd->tag, "BAD", "REVERSE needs a sort key");
        return;
    }
    if (!charset_ok(s, cmd, &cmd->args[1]))
        return;
    struct item *v = NULL;
    long n = select_items(s, cmd, 2, &v);
    if (n < 0)
        return;
    if (imap_prefetch(s, cmd)) { /* the search needed bodies held elsewhere */
        free(v);
        return;
    }
    cr.n = nc;
    qsort_r(v, (size_t) n, sizeof *v, cmp_items, &cr); /* workers sort concurrently */
    net_conn_write(s->c, "* SORT", 6);
    for (long i = 0; i < n; i++)
        net_conn_printf(s->c, " %u", cmd->uid ? v[i].uid : v[i].msn);
    net_conn_write(s->c, "\r\n", 2);
    free(v);
    imap_flush_updates(s, false);
    imap_tagged(s, cmd->tag, "OK", "%sSORT completed", cmd->uid ? "UID " : "");
}

static int cmp_thread(const void *pa, const void *pb)
{
    const struct item *a = pa, *b = pb;
    int c = strcmp(a->subject, b->subject);
    if (c)
        return c;
    c = cmp_u64(a->date, b->date);
    return c ? c : cmp_u64(a->msn, b->msn);
}

static void thread_references(struct imap_sess *s, struct imap_cmd *cmd, struct item *v, long n);

void imap_cmd_thread(struct imap_sess *s, struct imap_cmd *cmd)
{
    if (cmd->count < 3) {
        imap_tagged(s, cmd->tag, "BAD", "Syntax: THREAD algorithm charset search-keys");
        return;
    }
    bool refs = imap_arg_atom_equals(&cmd->args[0], "REFERENCES");
    if (!refs && !imap_arg_atom_equals(&cmd->args[0], "ORDEREDSUBJECT")) {
        imap_tagged(s, cmd->tag, "BAD", "Unsupported threading algorithm");
        return;
    }
    if (!charset_ok(s, cmd, &cmd->args[1]))
        return;
    struct item *v = NULL;
    long n = select_items(s, cmd, 2, &v);
    if (n < 0)
        return;
    if (imap_prefetch(s, cmd)) { /* the search needed bodies held elsewhere */
        free(v);
        return;
    }
    if (refs) {
        thread_references(s, cmd, v, n);
        free(v);
        imap_flush_updates(s, false);
        imap_tagged(s, cmd->tag, "OK", "%sTHREAD completed", cmd->uid ? "UID " : "");
        return;
    }
    /* threads: same base subject, ordered by sent date; threads by their first date */
    qsort(v, (size_t) n, sizeof *v, cmp_thread);
    size_t *start = malloc(((size_t) n + 1) * sizeof *start);
    size_t nt = 0;
    for (long i = 0; start && i < n; i++)
        if (i == 0 || strcmp(v[i].subject, v[i - 1].subject) != 0)
            start[nt++] = (size_t) i;
    if (start == NULL) {
        free(v);
        imap_tagged(s, cmd->tag, "NO", "[UNAVAILABLE] Out of memory");
        return;
    }
    start[nt] = (size_t) n;
    /* order the threads by the date of their first message (insertion sort on indexes) */
    size_t *order = malloc((nt ? nt : 1) * sizeof *order);
    for (size_t i = 0; order && i < nt; i++) {
        size_t j = i;
        while (j > 0 && cmp_u64(v[start[order[j - 1]]].date, v[start[i]].date) > 0) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    net_conn_write(s->c, "* THREAD ", 9);
    for (size_t t = 0; order && t < nt; t++) {
        size_t a = start[order[t]], b = start[order[t] + 1];
        /* RFC 5256: later messages are children of the first: "(1 2)", "(1 (2)(3))" */
        net_conn_printf(s->c, "(%u", cmd->uid ? v[a].uid : v[a].msn);
        if (b - a == 2)
            net_conn_printf(s->c, " %u", cmd->uid ? v[a + 1].uid : v[a + 1].msn);
        else if (b - a > 2) {
            net_conn_write(s->c, " ", 1);
            for (size_t k = a + 1; k < b; k++)
                net_conn_printf(s->c, "(%u)", cmd->uid ? v[k].uid : v[k].msn);
        }
        net_conn_write(s->c, ")", 1);
    }
    net_conn_write(s->c, "\r\n", 2);
    free(order);
    free(start);
    free(v);
    imap_flush_updates(s, false);
    imap_tagged(s, cmd->tag, "OK", "%sTHREAD completed", cmd->uid ? "UID " : "");
}

/* ---- THREAD=REFERENCES (RFC 5256 3) ----
 * Containers keyed by Message-ID are linked parent to child along each message's
 * References (else its first In-Reply-To id), loops refused; empty containers pruned;
 * roots with the same base subject gathered; siblings ordered by sent date. */

#define REFS_MAX 100

struct tnode {
    char *id;
    long item; /* index into the items, or -1 for an empty container */
    struct tnode *parent, *child, *next;
    uint64_t date; /* of its message, or of its first child once pruned */
};

struct ttable {
    struct tnode **slots; /* open addressing by Message-ID */
    size_t cap, n;
    struct tnode **nodes; /* every container, for the root set and freeing */
    size_t nnodes, capnodes;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char) *s) * 1099511628211ULL;
    return h;
}

static struct tnode *tget(struct ttable *t, const char *id)
{
    if (t->n * 2 >= t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        struct tnode **s = calloc(cap, sizeof *s);
        if (s == NULL)
            return NULL;
        for (size_t i = 0; i < t->cap; i++)
            if (t->slots[i]) {
                size_t j = hash_str(t->slots[i]->id) % cap;
                while (s[j])
                    j = (j + 1) % cap;
                s[j] = t->slots[i];
            }
        free(t->slots);
        t->slots = s;
        t->cap = cap;
    }
    size_t j = hash_str(id) % t->cap;
    while (t->slots[j]) {
        if (strcmp(t->slots[j]->id, id) == 0)
            return t->slots[j];
        j = (j + 1) % t->cap;
    }
    struct tnode *c = calloc(1, sizeof *c);
    if (c == NULL || (c->id = strdup(id)) == NULL) {
        free(c);
        return NULL;
    }
    c->item = -1;
    if (t->nnodes == t->capnodes) {
        size_t cap = t->capnodes ? 2 * t->capnodes : 64;
        struct tnode **v = realloc(t->nodes, cap * sizeof *v);
        if (v == NULL) {
            free(c->id);
            free(c);
            return NULL;
        }
        t->nodes = v;
        t->capnodes = cap;
    }
    t->nodes[t->nnodes++] = c;
    t->slots[j] = c;
    t->n++;
    return c;
}

static bool is_ancestor(const struct tnode *a, const struct tnode *c)
{
    for (; c; c = c->parent)
        if (c == a)
            return true;
    return false;
}

static void unlink_child(struct tnode *c)
{
    if (c->parent == NULL)
        return;
    struct tnode **pp = &c->parent->child;
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp)
        *pp = c->next;
    c->next = NULL;
    c->parent = NULL;
}

static void link_child(struct tnode *parent, struct tnode *c)
{
    unlink_child(c);
    c->parent = parent;
    c->next = parent->child;
    parent->child = c;
}

/* msg_ids(): the <...> ids in S[0..N) into IDS (malloc'd strings), at most MAX. */
static size_t msg_ids(const char *s, size_t n, char **ids, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k < max; i++) {
        if (s[i] != '<')
            continue;
        const char *e = memchr(s + i, '>', n - i);
        if (e == NULL)
            break;
        size_t l = (size_t) (e - (s + i)) + 1;
        if (l > 2 && l < 1000 && (ids[k] = strndup(s + i, l)) != NULL)
            k++;
        i += l - 1;
    }
    return k;
}

/* header_value(): the unfolded value of field NAME in the header at the start of BODY. */
static size_t header_value(const char *body, size_t blen, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name), o = 0;
    const char *p = body, *end = body + blen;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t) (end - p));
        size_t ll = eol ? (size_t) (eol - p) : (size_t) (end - p);
        if (ll == 0 || (ll == 1 && p[0] == '\r'))
            break;
        if (ll > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *q = p + nl + 1, *qe = eol ? eol : end;
            for (;;) {
                for (; q < qe && o < cap - 1; q++)
                    if (*q != '\r')
                        out[o++] = *q;
                if (qe >= end || qe + 1 >= end || (qe[1] != ' ' && qe[1] != '\t'))
                    break;
                q = qe + 1;
                const char *ne = memchr(q, '\n', (size_t) (end - q));
                qe = ne ? ne : end;
            }
            break;
        }
        p = eol ? eol + 1 : end;
    }
    out[o] = 0;
    return o;
}

static uint64_t node_date(const struct tnode *c, const struct item *v)
{
    if (c->item >= 0)
        return v[c->item].date;
    return c->child ? node_date(c->child, v) : 0;
}

/* sort_siblings(): children of every node by date (insertion sort on the list). */
static void sort_siblings(struct tnode *c, const struct item *v)
{
    struct tnode *sorted = NULL;
    for (struct tnode *x = c->child, *n; x; x = n) {
        n = x->next;
        sort_siblings(x, v);
        struct tnode **pp = &sorted;
        while (*pp && node_date(*pp, v) <= node_date(x, v))
            pp = &(*pp)->next;
        x->next = *pp;
        *pp = x;
    }
    c->child = sorted;
}

static void emit_chain(struct imap_sess *s, const struct tnode *c, const struct item *v, bool uid)
{
    bool has = c->item >= 0;
    if (has)
        net_conn_printf(s->c, "%u", uid ? v[c->item].uid : v[c->item].msn);
    if (c->child == NULL)
        return;
    if (c->child->next == NULL) {
        if (has)
            net_conn_write(s->c, " ", 1);
        emit_chain(s, c->child, v, uid);
        return;
    }
    if (has)
        net_conn_write(s->c, " ", 1);
    for (const struct tnode *x = c->child; x; x = x->next) {
        net_conn_write(s->c, "(", 1);
        emit_chain(s, x, v, uid);
        net_conn_write(s->c, ")", 1);
    }
}

/* prune(): drops empty containers without children and replaces an empty container by
 * its children (RFC 5256 3 step 4), except at the top, where an empty container with
 * several children stays (their common, missing, ancestor). Children first. */
static void prune(struct tnode *parent, bool top)
{
    struct tnode **pp = &parent->child;
    while (*pp) {
        struct tnode *c = *pp;
        prune(c, false);
        if (c->item < 0 && c->child == NULL) {
            *pp = c->next;
            continue;
        }
        if (c->item < 0 && (!top || c->child->next == NULL)) {
            struct tnode *kids = c->child, *last = kids;
            for (struct tnode *k = kids; k; k = k->next) {
                k->parent = top ? NULL : parent;
                last = k;
            }
            last->next = c->next;
            *pp = kids;
            pp = &last->next;
            continue;
        }
        pp = &c->next;
    }
}

static void thread_references(struct imap_sess *s, struct imap_cmd *cmd, struct item *v, long n)
{
    struct ttable t = {0};
    struct tnode root = {.item = -1};
    struct db *db = net_conn_node(s->c)->db;
    bool fail = false;
    for (long i = 0; i < n && !fail; i++) {
        Tern__MessageRec *r = imap_load_message(s, v[i].uid);
        char *body = NULL;
        size_t blen = 0;
        if (r && r->body_hash.len == 32 && body_get(db, r->body_hash.data, &body, &blen) != 1)
            body = NULL;
        if (r)
            tern__message_rec__free_unpacked(r, NULL);
        char hv[8192], idbuf[64];
        char *ids[REFS_MAX];
        size_t nids = 0;
        char *own[1];
        size_t nown = 0;
        if (body) {
            header_value(body, blen, "Message-ID", hv, sizeof hv);
            nown = msg_ids(hv, strlen(hv), own, 1);
            header_value(body, blen, "References", hv, sizeof hv);
            nids = msg_ids(hv, strlen(hv), ids, REFS_MAX);
            if (nids == 0) {
                header_value(body, blen, "In-Reply-To", hv, sizeof hv);
                nids = msg_ids(hv, strlen(hv), ids, 1);
            }
        }
        free(body);
        struct tnode *c = nown ? tget(&t, own[0]) : NULL;
        if (c && c->item >= 0)
            c = NULL; /* a duplicate Message-ID: treated as having none */
        if (c == NULL) {
            snprintf(idbuf, sizeof idbuf, " uid %u", v[i].uid); /* not a valid msg-id */
            c = tget(&t, idbuf);
        }
        if (c == NULL) {
            fail = true;
        } else {
            c->item = i;
            struct tnode *prev = NULL;
            for (size_t k = 0; k < nids; k++) {
                struct tnode *rc = tget(&t, ids[k]);
                if (rc == NULL)
                    continue;
                if (prev && rc->parent == NULL && !is_ancestor(rc, prev) && rc != prev)
                    link_child(prev, rc);
                prev = rc;
            }
            if (prev && prev != c && !is_ancestor(c, prev))
                link_child(prev, c);
            else if (prev == NULL || prev == c)
                unlink_child(c);
        }
        for (size_t k = 0; k < nids; k++)
            free(ids[k]);
        if (nown)
            free(own[0]);
    }
    /* the root set under an artificial root */
    for (size_t i = 0; i < t.nnodes; i++)
        if (t.nodes[i]->parent == NULL) {
            t.nodes[i]->parent = NULL;
            t.nodes[i]->next = root.child;
            root.child = t.nodes[i];
        }
    for (struct tnode *c = root.child; c; c = c->next)
        c->parent = NULL;
    prune(&root, true);
    /* gather roots with the same base subject (RFC 5256 3 step 5) */
    size_t nr = 0;
    for (struct tnode *c = root.child; c; c = c->next)
        nr++;
    struct tnode **roots = calloc(nr ? nr : 1, sizeof *roots);
    struct tnode *dummies = NULL; /* extra empty containers made here, freed below */
    size_t k = 0;
    for (struct tnode *c = root.child; roots && c; c = c->next)
        roots[k++] = c;
    for (size_t i = 0; roots && i < nr; i++) {
        struct tnode *a = roots[i];
        const struct tnode *am = a->item >= 0 ? a : a->child;
        if (a == NULL || am == NULL || am->item < 0 || v[am->item].subject[0] == 0)
            continue;
        for (size_t j = 0; j < i; j++) {
            struct tnode *r = roots[j];
            const struct tnode *rm = r ? (r->item >= 0 ? r : r->child) : NULL;
            if (rm == NULL || rm->item < 0 || strcmp(v[rm->item].subject, v[am->item].subject) != 0)
                continue;
            if (r->item < 0 && a->item >= 0) { /* into the existing dummy */
                a->next = r->child, r->child = a, a->parent = r;
            } else if (r->item >= 0 && a->item >= 0 && !v[r->item].reply && v[a->item].reply) {
                a->next = r->child, r->child = a, a->parent = r;
            } else if (r->item >= 0 && a->item >= 0 && v[r->item].reply && !v[a->item].reply) {
                r->next = a->child, a->child = r, r->parent = a;
                roots[j] = a;
            } else { /* both or neither replies: siblings under a new dummy */
                struct tnode *d = calloc(1, sizeof *d);
                if (d == NULL)
                    break;
                d->item = -1;
                d->child = r;
                r->next = a;
                a->next = NULL;
                r->parent = a->parent = d;
                roots[j] = d;
                /* the dummy's own next is its sibling link: free it through a side list */
                struct tnode *hold = calloc(1, sizeof *hold);
                if (hold) {
                    hold->child = d;
                    hold->next = dummies;
                    dummies = hold;
                }
            }
            roots[i] = NULL;
            break;
        }
    }
    root.child = NULL;
    for (size_t i = nr; roots && i > 0; i--)
        if (roots[i - 1]) {
            roots[i - 1]->next = root.child;
            root.child = roots[i - 1];
        }
    free(roots);
    sort_siblings(&root, v);
    net_conn_write(s->c, "* THREAD ", 9);
    for (const struct tnode *c = root.child; c; c = c->next) {
        net_conn_write(s->c, "(", 1);
        emit_chain(s, c, v, cmd->uid);
        net_conn_write(s->c, ")", 1);
    }
    net_conn_write(s->c, "\r\n", 2);
    for (size_t i = 0; i < t.nnodes; i++) {
        free(t.nodes[i]->id);
        free(t.nodes[i]);
    }
    while (dummies) {
        struct tnode *next = dummies->next;
        free(dummies->child);
        free(dummies);
        dummies = next;
    }
    free(t.nodes);
    free(t.slots);
}
