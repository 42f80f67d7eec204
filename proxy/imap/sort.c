/*
 * proxy/imap/sort.c
 * SORT and THREAD=ORDEREDSUBJECT (RFC 5256), with DISPLAYFROM/DISPLAYTO (RFC 5957).
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

#include "imap.h"

enum sortkey { K_ARRIVAL, K_CC, K_DATE, K_FROM, K_SIZE, K_SUBJECT, K_TO, K_DISPFROM, K_DISPTO };

#define SORT_KEYS_MAX 8
#define SORT_STR_MAX  256

struct item {
    uint32_t msn, uid;
    uint64_t arrival, date, size;
    char from[SORT_STR_MAX], to[SORT_STR_MAX], cc[SORT_STR_MAX], subject[SORT_STR_MAX];
    char dfrom[SORT_STR_MAX], dto[SORT_STR_MAX];
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
        case K_ARRIVAL: c = cmp_u64(a->arrival, b->arrival); break;
        case K_DATE: c = cmp_u64(a->date, b->date); break;
        case K_SIZE: c = cmp_u64(a->size, b->size); break;
        case K_FROM: c = strcmp(a->from, b->from); break;
        case K_TO: c = strcmp(a->to, b->to); break;
        case K_CC: c = strcmp(a->cc, b->cc); break;
        case K_SUBJECT: c = strcmp(a->subject, b->subject); break;
        case K_DISPFROM: c = strcmp(a->dfrom, b->dfrom); break;
        case K_DISPTO: c = strcmp(a->dto, b->dto); break;
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
static long select_items(struct imap_sess *s, struct imap_cmd *cmd, size_t first,
                         struct item **out)
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
    } names[] = {{"ARRIVAL", K_ARRIVAL}, {"CC", K_CC},     {"DATE", K_DATE},
                 {"FROM", K_FROM},       {"SIZE", K_SIZE}, {"SUBJECT", K_SUBJECT},
                 {"TO", K_TO},           {"DISPLAYFROM", K_DISPFROM}, {"DISPLAYTO", K_DISPTO}};
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
        while (j < sizeof names / sizeof names[0] && !imap_arg_atom_equals(&l->list[i], names[j].name))
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

void imap_cmd_thread(struct imap_sess *s, struct imap_cmd *cmd)
{
    if (cmd->count < 3) {
        imap_tagged(s, cmd->tag, "BAD", "Syntax: THREAD algorithm charset search-keys");
        return;
    }
    if (!imap_arg_atom_equals(&cmd->args[0], "ORDEREDSUBJECT")) {
        imap_tagged(s, cmd->tag, "BAD", "Unsupported threading algorithm");
        return;
    }
    if (!charset_ok(s, cmd, &cmd->args[1]))
        return;
    struct item *v = NULL;
    long n = select_items(s, cmd, 2, &v);
    if (n < 0)
        return;
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
