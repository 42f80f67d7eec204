/*
 * proxy/imap/fetch.c
 * FETCH and UID FETCH (RFC 3501 6.4.5, RFC 9051 6.4.5): FLAGS, UID, INTERNALDATE,
 * RFC822.SIZE, ENVELOPE, BODYSTRUCTURE, BODY, BODY[section]<partial> and BODY.PEEK,
 * RFC822, RFC822.HEADER, RFC822.TEXT, MODSEQ and CHANGEDSINCE (RFC 7162), the macros ALL,
 * FAST, FULL. ENVELOPE and BODYSTRUCTURE come from the structure parsed at delivery
 * (node/mime); the bytes of a section are a range of the stored body.
 *
 * A non-PEEK body fetch in a read-write mailbox sets \Seen first, through Raft, and the
 * FETCH answers after that commit (with the new FLAGS), like any other write.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "body_store.h"
#include "command.h"
#include "fsm.h"
#include "cluster.h"
#include "imap.h"
#include "log.h"

#define FETCH_SECTIONS_MAX 32
#define FETCH_FIELDS_MAX   64
#define FETCH_FLUSH_BYTES  (256 * 1024) /* send as we go, not all at the end */

enum sect_kind { SK_BODY, SK_RFC822, SK_RFC822_HEADER, SK_RFC822_TEXT, SK_BINARY, SK_BINARY_SIZE };

struct fsect {
    enum sect_kind kind;
    bool peek;
    char spec[128];    /* between [ and ] up to the field list, e.g. "1.2.HEADER.FIELDS" */
    char label[512];   /* the response item name, e.g. "BODY[HEADER.FIELDS (FROM)]" */
    const char *fields[FETCH_FIELDS_MAX];
    size_t nfields;
    bool partial;
    uint64_t off, count;
};

struct fetch {
    struct imap_sess *s;
    struct imap_cmd *cmd;
    bool flags, uid, internaldate, size, envelope, bodystructure, body, modseq;
    struct fsect sect[FETCH_SECTIONS_MAX];
    size_t nsect;
    bool sets_seen;
    uint64_t changedsince;
    uint32_t *uids;
    long n;
    long pos;          /* fetch_output() resumes here */
    bool async;        /* the connection is held and the command owned (imap_done ends) */
    long fetched_at;   /* pos whose body was fetched from another node (-1 none) */
    uint8_t missing[BODY_HASH_LEN];
};

static int add_item(struct fetch *f, const struct imap_arg *a, const char **why);

/* spec_valid(): RFC 3501 9 section-spec: [nz-number *("." nz-number) ["."]] then HEADER,
 * HEADER.FIELDS[.NOT] (which need a field list), TEXT, or MIME (only after a part). */
static bool spec_valid(const char *spec, bool has_list)
{
    const char *p = spec;
    bool part = false;
    while (*p >= '1' && *p <= '9') {
        while (*p >= '0' && *p <= '9')
            p++;
        part = true;
        if (*p == 0)
            return !has_list;
        if (*p++ != '.')
            return false;
    }
    if (*p == 0)
        return !part && !has_list; /* "" is the whole message */
    if (strcasecmp(p, "HEADER.FIELDS") == 0 || strcasecmp(p, "HEADER.FIELDS.NOT") == 0)
        return has_list;
    if (strcasecmp(p, "HEADER") == 0 || strcasecmp(p, "TEXT") == 0)
        return !has_list;
    return part && strcasecmp(p, "MIME") == 0 && !has_list;
}

static int add_section(struct fetch *f, const struct imap_arg *a, bool peek, const char **why);

/* add_binary(): BINARY[part]<partial>, BINARY.PEEK[...], BINARY.SIZE[part] (RFC 3516). */
static int add_binary(struct fetch *f, const struct imap_arg *a, bool peek, bool size,
                      const char **why)
{
    if (f->nsect == FETCH_SECTIONS_MAX) {
        *why = "Too many sections";
        return -1;
    }
    struct fsect *x = &f->sect[f->nsect];
    memset(x, 0, sizeof *x);
    x->kind = size ? SK_BINARY_SIZE : SK_BINARY;
    x->peek = peek || size;
    if (a->count > 1 || (a->flags & IMAP_ARG_FLAG_SUFFIX) || (size && (a->flags & IMAP_ARG_FLAG_PARTIAL))) {
        *why = "Bad BINARY section";
        return -1;
    }
    if (a->count == 1) {
        const struct imap_arg *it = &a->list[0];
        if (it->type != IMAP_ARG_ATOM || it->len >= sizeof x->spec) {
            *why = "Bad BINARY section";
            return -1;
        }
        memcpy(x->spec, it->str, it->len);
        x->spec[it->len] = 0;
        /* section-binary: part numbers only */
        for (const char *p = x->spec; *p; p++)
            if (!((*p >= '0' && *p <= '9') || *p == '.') || (*p == '0' && (p == x->spec || p[-1] == '.'))) {
                *why = "Bad BINARY section";
                return -1;
            }
    }
    char spec[sizeof x->spec]; /* a copy: GCC's -Wrestrict sees x->spec and x->label as one */
    memcpy(spec, x->spec, sizeof spec);
    int n = snprintf(x->label, sizeof x->label, "%s[%s]", size ? "BINARY.SIZE" : "BINARY", spec);
    if (a->flags & IMAP_ARG_FLAG_PARTIAL) {
        x->partial = true;
        x->off = a->partial_offset;
        x->count = a->partial_count;
        snprintf(x->label + n, sizeof x->label - (size_t) n, "<%" PRIu64 ">", x->off);
    }
    f->nsect++;
    if (!x->peek)
        f->sets_seen = true;
    return 0;
}

static int add_section(struct fetch *f, const struct imap_arg *a, bool peek, const char **why)
{
    if (f->nsect == FETCH_SECTIONS_MAX) {
        *why = "Too many sections";
        return -1;
    }
    if (a->flags & IMAP_ARG_FLAG_SUFFIX) {
        *why = "Junk after section";
        return -1;
    }
    struct fsect *x = &f->sect[f->nsect];
    memset(x, 0, sizeof *x);
    x->kind = SK_BODY;
    x->peek = peek;
    size_t o = 0;
    for (size_t i = 0; i < a->count; i++) {
        const struct imap_arg *it = &a->list[i];
        if (it->type == IMAP_ARG_ATOM && i == 0) {
            if (it->len >= sizeof x->spec) {
                *why = "Section too long";
                return -1;
            }
            memcpy(x->spec, it->str, it->len);
            o = it->len;
            x->spec[o] = 0;
        } else if (it->type == IMAP_ARG_LIST && i == 1) {
            for (size_t j = 0; j < it->count && x->nfields < FETCH_FIELDS_MAX; j++) {
                size_t fl;
                const char *fname = imap_arg_astring(&it->list[j], &fl);
                if (fname == NULL) {
                    *why = "Bad header field name";
                    return -1;
                }
                x->fields[x->nfields++] = fname;
            }
        } else {
            *why = "Bad section";
            return -1;
        }
    }
    bool has_list = a->count > 1;
    if (!spec_valid(x->spec, has_list) || (has_list && x->nfields == 0)) {
        *why = "Invalid section";
        return -1;
    }
    /* label: BODY[<what was inside the brackets, as sent>]<origin> */
    const char *lb = strchr(a->str, '[');
    const char *rb = strrchr(a->str, ']');
    if (lb == NULL || rb == NULL || rb < lb) {
        *why = "Bad section";
        return -1;
    }
    int n = snprintf(x->label, sizeof x->label, "BODY%.*s", (int) (rb - lb + 1), lb);
    if (n < 0 || (size_t) n >= sizeof x->label) {
        *why = "Section too long";
        return -1;
    }
    if (a->flags & IMAP_ARG_FLAG_PARTIAL) {
        x->partial = true;
        x->off = a->partial_offset;
        x->count = a->partial_count;
        snprintf(x->label + n, sizeof x->label - (size_t) n, "<%" PRIu64 ">", x->off);
    }
    f->nsect++;
    if (!peek)
        f->sets_seen = true;
    return 0;
}

static int add_item(struct fetch *f, const struct imap_arg *a, const char **why)
{
    if (a->type != IMAP_ARG_ATOM) {
        *why = "Bad FETCH item";
        return -1;
    }
    if (a->flags & IMAP_ARG_FLAG_SECTION) {
        if (imap_arg_atom_equals(a, "BODY"))
            return add_section(f, a, false, why);
        if (imap_arg_atom_equals(a, "BODY.PEEK"))
            return add_section(f, a, true, why);
        if (imap_arg_atom_equals(a, "BINARY"))
            return add_binary(f, a, false, false, why);
        if (imap_arg_atom_equals(a, "BINARY.PEEK"))
            return add_binary(f, a, true, false, why);
        if (imap_arg_atom_equals(a, "BINARY.SIZE"))
            return add_binary(f, a, true, true, why);
        *why = "Unknown FETCH item";
        return -1;
    }
    static const struct {
        const char *name;
        int what;
    } simple[] = {{"FLAGS", 1},  {"UID", 2},           {"INTERNALDATE", 3},  {"RFC822.SIZE", 4},
                  {"ENVELOPE", 5}, {"BODYSTRUCTURE", 6}, {"BODY", 7},        {"MODSEQ", 8},
                  {"ALL", 9},    {"FAST", 10},          {"FULL", 11},       {"RFC822", 12},
                  {"RFC822.HEADER", 13}, {"RFC822.TEXT", 14}};
    for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++) {
        if (!imap_arg_atom_equals(a, simple[i].name))
            continue;
        switch (simple[i].what) {
        case 1: f->flags = true; break;
        case 2: f->uid = true; break;
        case 3: f->internaldate = true; break;
        case 4: f->size = true; break;
        case 5: f->envelope = true; break;
        case 6: f->bodystructure = true; break;
        case 7: f->body = true; break;
        case 8: f->modseq = true; f->s->condstore = true; break;
        case 11: f->body = true; /* fall through */
        case 9: f->envelope = true; /* fall through */
        case 10: f->flags = f->internaldate = f->size = true; break;
        default: {
            if (f->nsect == FETCH_SECTIONS_MAX) {
                *why = "Too many sections";
                return -1;
            }
            struct fsect *x = &f->sect[f->nsect++];
            memset(x, 0, sizeof *x);
            x->kind = simple[i].what == 12 ? SK_RFC822
                    : simple[i].what == 13 ? SK_RFC822_HEADER : SK_RFC822_TEXT;
            x->peek = x->kind == SK_RFC822_HEADER;
            snprintf(x->label, sizeof x->label, "%s", simple[i].name);
            if (!x->peek)
                f->sets_seen = true;
        }
        }
        return 0;
    }
    *why = "Unknown FETCH item";
    return -1;
}

/* ---- output ---- */

static bool has_seen(const Tern__MessageRec *m)
{
    for (size_t i = 0; i < m->n_flags; i++)
        if (strcasecmp(m->flags[i], "\\Seen") == 0)
            return true;
    return false;
}

static void write_literal(struct imap_sess *s, const char *label, const uint8_t *p, size_t n)
{
    net_conn_printf(s->c, "%s {%zu}\r\n", label, n);
    net_conn_write(s->c, p, n);
}

/* load_mime(): the message's parsed structure, from the index or (old messages) now. */
static int load_mime(const Tern__MessageRec *m, const uint8_t *body, size_t blen,
                     struct mime_msg *out)
{
    if (m->has_mime && mime_decode(m->mime.data, m->mime.len, out) == 0)
        return 0;
    if (body == NULL)
        return -1;
    return mime_parse(body, blen, out) == 0 ? 0 : -1;
}

/* write_binary(): the decoded content of a leaf part (RFC 3516), or its size. */
static void write_binary(struct imap_sess *s, const struct fsect *x, const uint8_t *body,
                         size_t blen, struct mime_msg *mm, bool have_mime)
{
    struct mime_range r = {0, (uint32_t) blen};
    enum mime_section_kind kind;
    const char *enc = "";
    size_t encl = 0;
    if (x->spec[0]) {
        if (!have_mime || mime_section_range(mm, x->spec, strlen(x->spec), &r, &kind) != 0 ||
            r.off > blen || r.len > blen - r.off) {
            net_conn_printf(s->c, "%s NIL", x->label);
            return;
        }
        for (uint32_t i = 0; i < mm->nparts; i++) {
            const struct mime_part *p = &mm->parts[i];
            if (p->body_off == r.off && p->body_end == r.off + r.len &&
                p->encoding.off != MIME_NIL_OFF) {
                enc = mm->strs + p->encoding.off;
                encl = p->encoding.len;
            }
        }
    }
    size_t n = 0;
    char *dec = imap_decode_cte((const char *) body + r.off, r.len, enc, encl, &n);
    if (dec == NULL) {
        net_conn_printf(s->c, "%s NIL", x->label);
        return;
    }
    if (x->kind == SK_BINARY_SIZE) {
        net_conn_printf(s->c, "%s %zu", x->label, n);
        free(dec);
        return;
    }
    const char *p = dec;
    if (x->partial) {
        if (x->off >= n) {
            n = 0;
        } else {
            p += x->off;
            n -= x->off;
            if (n > x->count)
                n = x->count;
        }
    }
    /* literal8 (~{n}) when the bytes hold a NUL: RFC 3516 4.2 */
    net_conn_printf(s->c, "%s %s{%zu}\r\n", x->label, memchr(p, 0, n) ? "~" : "", n);
    net_conn_write(s->c, p, n);
    free(dec);
}

static void write_section(struct imap_sess *s, const struct fsect *x, const uint8_t *body,
                          size_t blen, struct mime_msg *mm, bool have_mime)
{
    if (x->kind == SK_BINARY || x->kind == SK_BINARY_SIZE) {
        write_binary(s, x, body, blen, mm, have_mime);
        return;
    }
    struct mime_range r = {0, (uint32_t) blen};
    enum mime_section_kind kind = MIME_SECTION_BODY;
    struct mime_buf tmp;
    mime_buf_init(&tmp);
    const uint8_t *p = body;
    size_t n = blen;
    if (x->kind == SK_RFC822_HEADER || x->kind == SK_RFC822_TEXT || x->spec[0]) {
        const char *spec = x->kind == SK_RFC822_HEADER ? "HEADER"
                         : x->kind == SK_RFC822_TEXT   ? "TEXT"
                                                       : x->spec;
        int rv = have_mime ? mime_section_range(mm, spec, strlen(spec), &r, &kind) : -1;
        if (rv != 0) {
            n = 0;
        } else if (kind == MIME_SECTION_HEADER_FIELDS || kind == MIME_SECTION_HEADER_FIELDS_NOT) {
            mime_header_fields(body, r, x->fields, x->nfields,
                               kind == MIME_SECTION_HEADER_FIELDS_NOT, &tmp);
            p = (const uint8_t *) tmp.data;
            n = tmp.err ? 0 : tmp.len;
        } else {
            p = body + r.off;
            n = r.len <= blen - r.off ? r.len : 0;
        }
    }
    if (x->partial) {
        if (x->off >= n) {
            n = 0;
        } else {
            p += x->off;
            n -= x->off;
            if (n > x->count)
                n = x->count;
        }
    }
    write_literal(s, x->label, p, n);
    mime_buf_free(&tmp);
}

/* fetch_one(): "* msn FETCH (...)" for UID; false when the message is gone. */
enum one_rv { ONE_DONE, ONE_GONE, ONE_NEED_BODY };

/* fetch_one(): ONE_NEED_BODY (nothing written, hash in f->missing) when the body is not
 * on this node yet and has not been looked for elsewhere. */
static enum one_rv fetch_one(struct fetch *f, uint32_t msn, uint32_t uid)
{
    struct imap_sess *s = f->s;
    Tern__MessageRec *m = imap_load_message(s, uid);
    if (m == NULL)
        return ONE_GONE;
    if (f->changedsince && m->modseq <= f->changedsince) {
        tern__message_rec__free_unpacked(m, NULL);
        return ONE_DONE;
    }
    bool need_body = f->nsect > 0;
    bool need_mime = f->envelope || f->bodystructure || f->body;
    for (size_t i = 0; i < f->nsect; i++)
        need_mime = need_mime || f->sect[i].spec[0] || f->sect[i].kind == SK_RFC822_HEADER ||
                    f->sect[i].kind == SK_RFC822_TEXT || f->sect[i].kind == SK_BINARY;
    char *body = NULL;
    size_t blen = 0;
    int got = 1;
    if ((need_body || (need_mime && !m->has_mime)) && m->body_hash.len == BODY_HASH_LEN &&
        (got = body_get(net_conn_node(s->c)->db, m->body_hash.data, &body, &blen)) != 1) {
        if (got == 0 && f->fetched_at != f->pos && net_conn_node(s->c)->cluster) {
            /* not here (yet): another node holds it; fetch, then come back */
            memcpy(f->missing, m->body_hash.data, BODY_HASH_LEN);
            tern__message_rec__free_unpacked(m, NULL);
            return ONE_NEED_BODY;
        }
        net_conn_log(s->c, LOG_ERROR, "imap.body_missing", "uid=%u", uid);
        body = NULL;
        blen = 0;
    }
    struct mime_msg mm = {0};
    bool have_mime = need_mime && load_mime(m, (const uint8_t *) body, blen, &mm) == 0;

    net_conn_printf(s->c, "* %u FETCH (", msn);
    const char *sep = "";
    if (f->uid || f->cmd->uid) {
        net_conn_printf(s->c, "UID %u", uid);
        sep = " ";
    }
    if (f->flags) {
        net_conn_printf(s->c, "%sFLAGS ", sep);
        imap_write_flags(s, m->flags, m->n_flags, uid);
        sep = " ";
    }
    if (f->modseq || f->changedsince || (s->condstore && f->flags && 0)) {
        net_conn_printf(s->c, "%sMODSEQ (%" PRIu64 ")", sep, m->modseq);
        sep = " ";
    }
    if (f->internaldate) {
        char d[32];
        imap_date(m->internal_date, d);
        net_conn_printf(s->c, "%sINTERNALDATE \"%s\"", sep, d);
        sep = " ";
    }
    if (f->size) {
        net_conn_printf(s->c, "%sRFC822.SIZE %" PRIu64, sep, m->size);
        sep = " ";
    }
    if (f->envelope || f->bodystructure || f->body) {
        struct mime_buf b;
        mime_buf_init(&b);
        if (f->envelope) {
            mime_buf_add(&b, sep, strlen(sep));
            mime_buf_add(&b, "ENVELOPE ", 9);
            if (have_mime)
                mime_write_envelope(&mm, 0, &b);
            else
                mime_buf_add(&b, "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)", 41);
            sep = " ";
        }
        if (f->bodystructure || f->body) {
            for (int pass = 0; pass < 2; pass++) {
                bool ext = pass == 0;
                if ((ext && !f->bodystructure) || (!ext && !f->body))
                    continue;
                mime_buf_add(&b, sep, strlen(sep));
                mime_buf_add(&b, ext ? "BODYSTRUCTURE " : "BODY ", ext ? 14 : 5);
                if (have_mime)
                    mime_write_bodystructure(&mm, ext, &b);
                else
                    mime_buf_add(&b, "(\"text\" \"plain\" NIL NIL NIL \"7bit\" 0 0)", 38);
                sep = " ";
            }
        }
        if (!b.err)
            net_conn_write(s->c, b.data, b.len);
        mime_buf_free(&b);
    }
    for (size_t i = 0; i < f->nsect; i++) {
        net_conn_write(s->c, sep, strlen(sep));
        write_section(s, &f->sect[i], (const uint8_t *) body, body ? blen : 0, &mm, have_mime);
        sep = " ";
    }
    net_conn_write(s->c, ")\r\n", 3);
    mime_free(&mm);
    free(body);
    tern__message_rec__free_unpacked(m, NULL);
    return ONE_DONE;
}

static void fetch_free(struct fetch *f)
{
    free(f->uids);
    free(f);
}

static bool fetch_output(struct fetch *f);

/* body_arrived(): the missing body was fetched (or could not be): go on. */
static void body_arrived(void *arg, int status)
{
    struct fetch *f = arg;
    struct imap_sess *s = f->s;
    (void) status; /* still missing: fetch_one answers without it and logs */
    f->fetched_at = f->pos;
    if (net_conn_closing(s->c) || s->v == NULL) {
        fetch_free(f);
        imap_done(s);
        return;
    }
    if (fetch_output(f)) {
        fetch_free(f);
        imap_done(s);
    }
}

/* fetch_output(): writes the FETCH responses from f->pos on; true when the command is
 * answered. False: it waits for a body from another node (the command is then owned by
 * the fetch, see f->async, and body_arrived() carries on). */
static bool fetch_output(struct fetch *f)
{
    struct imap_sess *s = f->s;
    size_t since_flush = 0;
    for (; f->pos < f->n; f->pos++) {
        uint32_t msn = imap_view_msn(s->v, f->uids[f->pos]);
        if (msn == 0)
            continue;
        if (fetch_one(f, msn, f->uids[f->pos]) == ONE_NEED_BODY) {
            if (!f->async) {
                s->cur = f->cmd;
                net_conn_hold(s->c);
                f->async = true;
            }
            net_conn_flush(s->c);
            if (cluster_body_fetch(net_conn_node(s->c)->cluster, f->missing, 1,
                                   net_conn_loopq(s->c), body_arrived, f) == 0)
                return false;
            f->fetched_at = f->pos; /* cannot ask: answer without it */
            f->pos--;
            continue;
        }
        if (++since_flush >= 16) { /* large FETCHes go out as they are built */
            net_conn_flush(s->c);
            since_flush = 0;
        }
    }
    imap_flush_updates(s, false);
    imap_tagged(s, f->cmd->tag, "OK", "%sFETCH completed", f->cmd->uid ? "UID " : "");
    return true;
}

/* \Seen was set (or could not be): answer now. */
static void seen_done(void *arg, int status, uint64_t index, const Tern__Result *res)
{
    struct fetch *f = arg;
    struct imap_sess *s = f->s;
    if (!net_conn_closing(s->c) && s->v) {
        if (status == 0 && res->status == RESULT_OK && res->n_changed &&
            res->changed[0]->has_modseq)
            imap_own_store(s, res->changed[0]->modseq);
        if (status == 0 && res->status == RESULT_OK)
            f->flags = true; /* RFC 3501 6.4.5: the flag change is reported */
        f->async = true;
        if (!fetch_output(f))
            return; /* body_arrived() finishes */
    }
    fetch_free(f);
    imap_done(s);
}

void imap_cmd_fetch(struct imap_sess *s, struct imap_cmd *cmd)
{
    const char *why = "Syntax: FETCH set items";
    struct imap_seqset set;
    if (cmd->count < 2 || cmd->args[0].type != IMAP_ARG_ATOM ||
        imap_seqset_parse(cmd->args[0].str, cmd->args[0].len, 0, &set, &why) != 0) {
        imap_tagged(s, cmd->tag, "BAD", "%s", why);
        return;
    }
    struct fetch *f = calloc(1, sizeof *f);
    if (f == NULL) {
        imap_seqset_free(&set);
        imap_tagged(s, cmd->tag, "NO", "[UNAVAILABLE] Out of memory");
        return;
    }
    f->s = s;
    f->cmd = cmd;
    f->fetched_at = -1;
    int rv = 0;
    bool vanished = false;
    const struct imap_arg *items = &cmd->args[1];
    if (items->type == IMAP_ARG_LIST) {
        for (size_t i = 0; rv == 0 && i < items->count; i++)
            rv = add_item(f, &items->list[i], &why);
    } else {
        rv = add_item(f, items, &why);
    }
    if (rv == 0 && cmd->count >= 3) { /* modifiers: (CHANGEDSINCE n [VANISHED]) */
        const struct imap_arg *m = &cmd->args[2];
        if (m->type != IMAP_ARG_LIST) {
            rv = -1;
            why = "Bad FETCH modifier";
        }
        for (size_t i = 0; rv == 0 && i < m->count; i++) {
            if (imap_arg_atom_equals(&m->list[i], "CHANGEDSINCE") && i + 1 < m->count &&
                m->list[i + 1].type == IMAP_ARG_ATOM) {
                f->changedsince = strtoull(m->list[i + 1].str, NULL, 10);
                s->condstore = true;
                i++;
            } else if (imap_arg_atom_equals(&m->list[i], "VANISHED")) {
                vanished = true;
            } else {
                rv = -1;
                why = "Unknown FETCH modifier";
            }
        }
    }
    if (rv == 0 && vanished && (!cmd->uid || !f->changedsince || !s->qresync)) {
        rv = -1; /* RFC 7162 3.2.6: UID FETCH with CHANGEDSINCE, QRESYNC enabled */
        why = "VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC";
    }
    if (rv != 0) {
        imap_seqset_free(&set);
        free(f);
        imap_tagged(s, cmd->tag, "BAD", "%s", why);
        return;
    }
    if (vanished)
        imap_vanished(s, s->v->id, f->changedsince, &set);
    f->n = imap_view_uids(s->v, &set, cmd->uid, &f->uids);
    imap_seqset_free(&set);
    if (f->n < 0) {
        free(f);
        imap_tagged(s, cmd->tag, "NO", "[UNAVAILABLE] Out of memory");
        return;
    }
    if (f->sets_seen && !s->v->readonly && f->n > 0) {
        /* which of them are not \Seen yet? */
        uint32_t *unseen = malloc((size_t) f->n * sizeof *unseen);
        size_t nu = 0;
        for (long i = 0; unseen && i < f->n; i++) {
            Tern__MessageRec *m = imap_load_message(s, f->uids[i]);
            if (m && !has_seen(m))
                unseen[nu++] = f->uids[i];
            if (m)
                tern__message_rec__free_unpacked(m, NULL);
        }
        if (unseen && nu > 0 && nu <= FSM_UIDS_MAX) {
            char *seen[] = {"\\Seen"};
            Tern__StoreFlags op = TERN__STORE_FLAGS__INIT;
            op.mailbox_id = s->v->id;
            op.uids = unseen;
            op.n_uids = nu;
            op.mode = FSM_STORE_ADD;
            op.flags = seen;
            op.n_flags = 1;
            Tern__Command c = TERN__COMMAND__INIT;
            c.op_case = TERN__COMMAND__OP_STORE_FLAGS;
            c.store_flags = &op;
            c.account_hint = s->user;
            /* the command is the caller's: keep our own pointer to it until done */
            s->cur = NULL;
            net_conn_hold(s->c);
            struct imap_cmd *own = cmd;
            if (command_propose(net_conn_node(s->c)->cons, net_conn_loopq(s->c), &c, seen_done,
                                f) == 0) {
                free(unseen);
                s->cur = own;
                f->cmd = own;
                return; /* see imap_cmd_fetch_owned() */
            }
            net_conn_release(s->c);
        }
        free(unseen);
    }
    if (fetch_output(f))
        fetch_free(f);
}
