/*
 * node/mime/parser.c
 * The message structure parser: one pass over a message held in memory, finding header
 * blocks, multipart boundaries (RFC 2046 5.1) and encapsulated messages (RFC 2046 5.2.1), and
 * recording byte offsets and line counts so that IMAP never parses the message again.
 *
 * SECURITY: the bytes come from anyone who can send mail. Nothing here fails on content; the
 * MIME_* limits of mime.h bound depth, parts, header sizes and kept data, and the work is
 * linear in the message size (times at most MIME_MAX_DEPTH boundary compares per line).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mime_int.h"

/* Boundary rules follow Dovecot's message-parser: a line "--" + boundary starts a new part
 * when it *begins* with the boundary (longest of the open boundaries wins, the newest on a tie),
 * an outer boundary closes the inner parts, and a boundary line also ends a header block. */

/* Header fields of interest remembered per header block. Only repeated address fields (which
 * add up) take more than one entry: a repeated Content-* field counts once (the first), a
 * repeated Subject or Date overwrites its entry (the last counts), so HF_COUNT entries are kept
 * free for them and no number of To: lines can hide a Content-Type. */
#define HDR_FIELDS_MAX 256

/* The header fields the parser interprets. */
enum hf_id {
    HF_DATE,
    HF_SUBJECT,
    HF_FROM,
    HF_SENDER,
    HF_REPLY_TO,
    HF_TO,
    HF_CC,
    HF_BCC,
    HF_IN_REPLY_TO,
    HF_MESSAGE_ID,
    HF_MIME_VERSION,
    HF_CT,
    HF_CTE,
    HF_CID,
    HF_CDESC,
    HF_CDISP,
    HF_CLANG,
    HF_CLOC,
    HF_CMD5,
    HF_COUNT
};

struct hf_name {
    const char *name;
    uint8_t len;
    uint8_t id;
};

/* Envelope fields and MIME-Version: only in the header of a message (the root, or the
 * encapsulated message of a message/rfc822 part). */
static const struct hf_name msg_fields[] = {
    {"date", 4, HF_DATE},
    {"subject", 7, HF_SUBJECT},
    {"from", 4, HF_FROM},
    {"sender", 6, HF_SENDER},
    {"reply-to", 8, HF_REPLY_TO},
    {"to", 2, HF_TO},
    {"cc", 2, HF_CC},
    {"bcc", 3, HF_BCC},
    {"in-reply-to", 11, HF_IN_REPLY_TO},
    {"message-id", 10, HF_MESSAGE_ID},
    {"mime-version", 12, HF_MIME_VERSION},
};

/* Content-* fields, by the part of the name after "Content-". */
static const struct hf_name content_fields[] = {
    {"type", 4, HF_CT},
    {"transfer-encoding", 17, HF_CTE},
    {"id", 2, HF_CID},
    {"description", 11, HF_CDESC},
    {"disposition", 11, HF_CDISP},
    {"language", 8, HF_CLANG},
    {"location", 8, HF_CLOC},
    {"md5", 3, HF_CMD5},
};

/* One interesting field: its value is [off, end) of the message, from after the colon to the
 * end of its last line (without that line's CR LF), folds included. */
struct hfield {
    uint32_t id;
    uint32_t off;
    uint32_t end;
};

/* An open boundary: its text in the string arena and the multipart part it belongs to. */
struct bnd {
    uint32_t off;
    uint32_t len;
    uint32_t part;
};

struct parser {
    struct mime_ctx c;
    const uint8_t *msg;
    uint32_t len;
    uint32_t pos; /* start of the current line */
    uint32_t lf;  /* LFs before pos */
    struct bnd bnd[MIME_MAX_DEPTH + 1];
    uint32_t nbnd;
    uint32_t last_child[MIME_MAX_DEPTH + 1]; /* per depth: last child of the open part */
    struct hfield hf[HDR_FIELDS_MAX];
    uint32_t nhf;
    int slot[HF_COUNT];       /* entry of each non-address field in hf[], or -1 */
    struct mime_sbuf val;     /* an unfolded field value */
    struct mime_str boundary; /* boundary of the part whose header was just interpreted */
};

enum hdr_end {
    HDR_BLANK,    /* the blank line: the body follows */
    HDR_EOF,      /* the message ended in the header */
    HDR_BOUNDARY, /* a boundary line of an enclosing multipart ended the header */
    HDR_LIMIT,    /* MIME_HEADER_MAX: the rest is body */
};

static const struct mime_str nil = {MIME_NIL_OFF, 0};

static struct mime_part *part(struct parser *p, uint32_t i)
{
    return &p->c.m->parts[i];
}

/* ---- parts ----------------------------------------------------------------------------------- */

/* new_part(): appends a part under PARENT (MIME_NONE: the root) whose header starts at HDR_OFF,
 * linked as PARENT's last child; a message header also gets an (empty) envelope. Returns its
 * index, or MIME_NONE on ENOMEM. */
static uint32_t new_part(struct parser *p, uint32_t parent, uint32_t hdr_off)
{
    struct mime_msg *m = p->c.m;
    struct mime_part *np;
    uint32_t idx = m->nparts;

    if (!mime_grow(&p->c, (void **) &m->parts, &m->parts_cap, idx + 1, sizeof(*np)))
        return MIME_NONE;
    np = &m->parts[idx];
    memset(np, 0, sizeof(*np));
    np->parent = parent;
    np->child = MIME_NONE;
    np->next = MIME_NONE;
    np->env = MIME_NONE;
    np->hdr_off = np->body_off = np->body_end = hdr_off;
    np->type = np->subtype = nil;
    np->id = np->description = np->encoding = np->disposition = nil;
    np->md5 = np->location = nil;
    m->nparts++;
    if (parent != MIME_NONE) {
        struct mime_part *pp = part(p, parent);

        np->depth = pp->depth + 1;
        if (pp->nchildren == 0)
            pp->child = idx;
        else
            part(p, p->last_child[pp->depth])->next = idx;
        p->last_child[pp->depth] = idx;
        pp->nchildren++;
    }
    if (parent == MIME_NONE || part(p, parent)->kind == MIME_KIND_MESSAGE) {
        struct mime_envelope *env;

        if (!mime_grow(&p->c, (void **) &m->envs, &m->envs_cap, m->nenvs + 1, sizeof(*env)))
            return MIME_NONE;
        env = &m->envs[m->nenvs];
        memset(env, 0, sizeof(*env));
        env->date = env->subject = env->in_reply_to = env->message_id = nil;
        part(p, idx)->env = m->nenvs++;
    }
    return idx;
}

static bool is_message_header(struct parser *p, uint32_t i)
{
    uint32_t parent = part(p, i)->parent;

    return parent == MIME_NONE || part(p, parent)->kind == MIME_KIND_MESSAGE;
}

/* demote(): a container over a limit stays a leaf (written as application/octet-stream). */
static void demote(struct parser *p, struct mime_part *pt)
{
    pt->kind = MIME_KIND_LEAF;
    pt->flags |= MIME_PART_TRUNCATED;
    p->c.m->flags |= MIME_MSG_TRUNCATED;
}

/* close_parts(): parts from FROM up to (not including) OWNER end at END, LF_END LFs into the
 * message. body_lines held the LF count at body_off until now. */
static void close_parts(struct parser *p, uint32_t from, uint32_t owner, uint32_t end,
                        uint32_t lf_end)
{
    for (uint32_t i = from; i != owner && i != MIME_NONE; i = part(p, i)->parent) {
        struct mime_part *pt = part(p, i);

        pt->body_end = end;
        pt->body_lines = lf_end - pt->body_lines;
    }
}

/* ---- lines and boundaries -------------------------------------------------------------------- */

/* boundary_line(): the line at S starts with "--" and one of the open boundaries (RFC 2046
 * 5.1.1, prefix match as Dovecot: the longest wins, the newest on a tie); *B its index. */
static bool boundary_line(struct parser *p, uint32_t s, uint32_t *b)
{
    const uint8_t *msg = p->msg;
    uint32_t avail, best = MIME_NONE, best_len = 0;

    if (p->len - s < 2 || msg[s] != '-' || msg[s + 1] != '-')
        return false;
    avail = p->len - s - 2;
    for (uint32_t i = p->nbnd; i-- > 0;) {
        const struct bnd *bd = &p->bnd[i];

        if (bd->len <= avail && (best == MIME_NONE || bd->len > best_len) &&
            memcmp(msg + s + 2, p->c.m->strs + bd->off, bd->len) == 0) {
            best = i;
            best_len = bd->len;
        }
    }
    *b = best;
    return best != MIME_NONE;
}

static uint32_t count_lf(const uint8_t *s, size_t n)
{
    const uint8_t *e = s + n;
    uint32_t lf = 0;

    while (s < e && (s = memchr(s, '\n', (size_t) (e - s))) != NULL) {
        lf++;
        s++;
    }
    return lf;
}

/* cut(): the boundary line at p->pos ends the open parts; the [CR]LF before it belongs to the
 * boundary (RFC 2046 5.1.1) unless it is before LOWER (the start of the part's header or body:
 * then it ended the previous line, e.g. the blank line). Sets *END and the LFs before it. */
static void cut(struct parser *p, uint32_t lower, uint32_t *end, uint32_t *lf_end)
{
    uint32_t e = p->pos, lf = p->lf;

    if (e > lower && p->msg[e - 1] == '\n') {
        e--;
        lf--;
        if (e > lower && p->msg[e - 1] == '\r')
            e--;
    }
    *end = e;
    *lf_end = lf;
}

/* skip_line(): p->pos to the start of the next line. */
static void skip_line(struct parser *p)
{
    const uint8_t *nl = memchr(p->msg + p->pos, '\n', p->len - p->pos);

    if (nl == NULL) {
        p->pos = p->len;
    } else {
        p->pos = (uint32_t) (nl - p->msg) + 1;
        p->lf++;
    }
}

/* scan_body(): advances line by line to the next boundary line (true, p->pos at it, *B its
 * index) or to the end of the message (false). */
static bool scan_body(struct parser *p, uint32_t *b)
{
    if (p->nbnd == 0) {
        p->lf += count_lf(p->msg + p->pos, p->len - p->pos);
        p->pos = p->len;
        return false;
    }
    while (p->pos < p->len) {
        if (boundary_line(p, p->pos, b))
            return true;
        skip_line(p);
    }
    return false;
}

/* ---- header ---------------------------------------------------------------------------------- */

static bool is_address_field(int id)
{
    return id == HF_FROM || id == HF_SENDER || id == HF_REPLY_TO || id == HF_TO || id == HF_CC ||
           id == HF_BCC;
}

static int field_id(const uint8_t *name, size_t len, bool message_hdr)
{
    const struct hf_name *t = msg_fields;
    size_t n = sizeof(msg_fields) / sizeof(msg_fields[0]);

    if (len > 8 && strncasecmp((const char *) name, "content-", 8) == 0) {
        t = content_fields;
        n = sizeof(content_fields) / sizeof(content_fields[0]);
        name += 8;
        len -= 8;
    } else if (!message_hdr) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (t[i].len == len && strncasecmp((const char *) name, t[i].name, len) == 0)
            return t[i].id;
    }
    return -1;
}

/* end_field(): the field [FS, FE) whose first line ends at FL_END is complete; remember it if
 * it is one we interpret. The name is what precedes the colon on the first line, without the
 * white space before the colon (RFC 5322 obs-optional); a line without a colon is ignored. */
static void end_field(struct parser *p, uint32_t fs, uint32_t fl_end, uint32_t fe, bool message_hdr)
{
    const uint8_t *msg = p->msg, *colon;
    uint32_t name_end;
    int id, slot;

    if (fs == MIME_NONE)
        return;
    colon = memchr(msg + fs, ':', fl_end - fs);
    if (colon == NULL)
        return;
    name_end = (uint32_t) (colon - msg);
    while (name_end > fs && (msg[name_end - 1] == ' ' || msg[name_end - 1] == '\t'))
        name_end--;
    id = field_id(msg + fs, name_end - fs, message_hdr);
    if (id < 0)
        return;
    if (is_address_field(id)) {
        if (p->nhf >= HDR_FIELDS_MAX - HF_COUNT) {
            p->c.m->flags |= MIME_MSG_TRUNCATED;
            return;
        }
        slot = (int) p->nhf++;
    } else if (p->slot[id] < 0) {
        slot = p->slot[id] = (int) p->nhf++;
    } else if (id <= HF_MESSAGE_ID) {
        slot = p->slot[id]; /* envelope strings: the last one counts */
    } else {
        return; /* Content-* and MIME-Version: the first one counts */
    }
    p->hf[slot].id = (uint32_t) id;
    p->hf[slot].off = (uint32_t) (colon - msg) + 1;
    p->hf[slot].end = fe;
}

/* scan_header(): from p->pos, finds the end of the header block and remembers the fields of
 * interest. On HDR_BLANK p->pos is after the blank line; on HDR_BOUNDARY it is at the boundary
 * line (*B its index); on HDR_LIMIT at the line that crossed MIME_HEADER_MAX. */
static enum hdr_end scan_header(struct parser *p, bool message_hdr, uint32_t *b)
{
    const uint8_t *msg = p->msg;
    uint32_t start = p->pos, fs = MIME_NONE, fl_end = 0, fe = 0;

    p->nhf = 0;
    for (int k = 0; k < HF_COUNT; k++)
        p->slot[k] = -1;
    while (p->pos < p->len) {
        uint32_t s = p->pos;
        const uint8_t *nl = memchr(msg + s, '\n', p->len - s);
        uint32_t e = nl != NULL ? (uint32_t) (nl - msg) : p->len;
        uint32_t ce = (nl != NULL && e > s && msg[e - 1] == '\r') ? e - 1 : e;

        if (p->nbnd > 0 && boundary_line(p, s, b)) {
            end_field(p, fs, fl_end, fe, message_hdr);
            return HDR_BOUNDARY;
        }
        if (nl != NULL && ce == s) {
            end_field(p, fs, fl_end, fe, message_hdr);
            p->pos = e + 1;
            p->lf++;
            return HDR_BLANK;
        }
        if ((nl != NULL ? e + 1 : e) - start > MIME_HEADER_MAX) {
            end_field(p, fs, fl_end, fe, message_hdr);
            p->c.m->flags |= MIME_MSG_TRUNCATED;
            return HDR_LIMIT;
        }
        if (msg[s] == ' ' || msg[s] == '\t') {
            fe = ce; /* a continuation line (RFC 5322 2.2.3) */
        } else {
            end_field(p, fs, fl_end, fe, message_hdr);
            fs = s;
            fl_end = fe = ce;
        }
        skip_line(p);
    }
    end_field(p, fs, fl_end, fe, message_hdr);
    return HDR_EOF;
}

/* value(): the unfolded value of field F: CR LF (or LF) of each fold removed, the white space
 * after the colon skipped, at most MIME_FIELD_MAX bytes of the raw field considered. */
static void value(struct parser *p, const struct hfield *f, const uint8_t **v, const uint8_t **e)
{
    const uint8_t *s = p->msg + f->off, *end = p->msg + f->end;

    if ((size_t) (end - s) > MIME_FIELD_MAX) {
        end = s + MIME_FIELD_MAX;
        p->c.m->flags |= MIME_MSG_TRUNCATED;
    }
    if (memchr(s, '\n', (size_t) (end - s)) != NULL) {
        const uint8_t *q = s;

        p->val.len = 0;
        while (q < end) {
            const uint8_t *nl = memchr(q, '\n', (size_t) (end - q));
            const uint8_t *seg_end = nl != NULL ? nl : end;

            if (nl != NULL && seg_end > q && seg_end[-1] == '\r')
                seg_end--;
            mime_sbuf_add(&p->c, &p->val, q, (size_t) (seg_end - q));
            q = nl != NULL ? nl + 1 : end;
        }
        if (p->c.err != 0) {
            *v = *e = s;
            return;
        }
        if (p->val.len == 0) {
            *v = *e = s; /* only folds: an empty value */
            return;
        }
        s = p->val.d;
        end = s + p->val.len;
    }
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    *v = s;
    *e = end;
}

/* interpret(): sets what the fields of part I's header say. A repeated Content-* field counts
 * once (the first), a repeated envelope string the last time, repeated address fields add up
 * (all three as Dovecot). Content-* fields count only in a MIME part: below a multipart, or in
 * a message header with MIME-Version or Content-Type. */
static void interpret(struct parser *p, uint32_t i)
{
    struct mime_ctx *c = &p->c;
    struct mime_msg *m = c->m;
    struct mime_part *pt = part(p, i);
    bool message_hdr = is_message_header(p, i), is_mime = !message_hdr;
    int first[HF_COUNT], last[HF_COUNT];
    const uint8_t *v, *e;

    p->boundary = nil;
    for (int k = 0; k < HF_COUNT; k++)
        first[k] = last[k] = -1;
    for (uint32_t k = 0; k < p->nhf; k++) {
        if (first[p->hf[k].id] < 0)
            first[p->hf[k].id] = (int) k;
        last[p->hf[k].id] = (int) k;
    }
    if (first[HF_MIME_VERSION] >= 0 || first[HF_CT] >= 0)
        is_mime = true;

    if (message_hdr && pt->env != MIME_NONE) {
        static const uint8_t str_ids[] = {HF_DATE, HF_SUBJECT, HF_IN_REPLY_TO, HF_MESSAGE_ID};
        static const uint8_t addr_ids[] = {HF_FROM, HF_SENDER, HF_REPLY_TO, HF_TO, HF_CC, HF_BCC};
        struct mime_str strs[4];
        struct mime_list lists[6];

        for (int k = 0; k < 4; k++) {
            strs[k] = nil;
            if (last[str_ids[k]] >= 0) {
                value(p, &p->hf[last[str_ids[k]]], &v, &e);
                strs[k] = mime_intern(c, v, (size_t) (e - v));
            }
        }
        for (int k = 0; k < 6; k++) {
            lists[k].first = 0;
            lists[k].count = 0;
            if (first[addr_ids[k]] < 0)
                continue;
            lists[k].first = m->naddrs;
            for (uint32_t h = (uint32_t) first[addr_ids[k]]; h < p->nhf; h++) {
                if (p->hf[h].id != addr_ids[k] || lists[k].count >= MIME_ADDRS_MAX)
                    continue;
                value(p, &p->hf[h], &v, &e);
                lists[k].count += mime_parse_addresses(c, v, e, MIME_ADDRS_MAX - lists[k].count);
            }
            if (lists[k].count == 0)
                lists[k].first = 0;
        }
        {
            struct mime_envelope *env = &m->envs[pt->env];

            env->date = strs[0];
            env->subject = strs[1];
            env->in_reply_to = strs[2];
            env->message_id = strs[3];
            env->from = lists[0];
            env->sender = lists[1];
            env->reply_to = lists[2];
            env->to = lists[3];
            env->cc = lists[4];
            env->bcc = lists[5];
        }
    }

    if (is_mime) {
        if (first[HF_CT] >= 0) {
            value(p, &p->hf[first[HF_CT]], &v, &e);
            mime_parse_content_type(c, v, e, pt);
        }
        if (first[HF_CTE] >= 0) {
            value(p, &p->hf[first[HF_CTE]], &v, &e);
            pt->encoding = mime_parse_encoding(c, v, e);
        }
        if (first[HF_CDISP] >= 0) {
            value(p, &p->hf[first[HF_CDISP]], &v, &e);
            mime_parse_disposition(c, v, e, pt);
        }
        if (first[HF_CLANG] >= 0) {
            value(p, &p->hf[first[HF_CLANG]], &v, &e);
            mime_parse_language(c, v, e, pt);
        }
        {
            static const uint8_t raw_ids[] = {HF_CID, HF_CDESC, HF_CLOC, HF_CMD5};
            struct mime_str *dst[] = {&pt->id, &pt->description, &pt->location, &pt->md5};

            for (int k = 0; k < 4; k++) {
                if (first[raw_ids[k]] < 0)
                    continue;
                value(p, &p->hf[first[raw_ids[k]]], &v, &e);
                *dst[k] = mime_intern(c, v, (size_t) (e - v));
            }
        }
    }

    /* the kind of part */
    pt->kind = MIME_KIND_LEAF;
    if (!mime_str_is_nil(pt->type)) {
        if (mime_str_eq(m, pt->type, "multipart")) {
            struct mime_str b = mime_param_find(m, pt->params, "boundary");

            pt->kind = MIME_KIND_MULTIPART;
            /* a usable boundary: 1..MIME_BOUNDARY_MAX bytes on one line */
            if (!mime_str_is_nil(b) && b.len > 0 && b.len <= MIME_BOUNDARY_MAX &&
                memchr(m->strs + b.off, '\n', b.len) == NULL)
                p->boundary = b;
        } else if (mime_str_eq(m, pt->type, "message") && mime_str_eq(m, pt->subtype, "rfc822")) {
            pt->kind = MIME_KIND_MESSAGE;
        }
    } else if (pt->parent != MIME_NONE) {
        const struct mime_part *pp = part(p, pt->parent);

        /* RFC 2046 5.1.5: in a multipart/digest the default is message/rfc822 */
        if (pp->kind == MIME_KIND_MULTIPART && mime_str_eq(m, pp->subtype, "digest"))
            pt->kind = MIME_KIND_MESSAGE;
    }
}

/* begin_body(): part I's header is done and its body starts at body_off (EMPTY: the body is
 * empty because a boundary line ended the header). A multipart opens its boundary; a
 * message/rfc822 gets its encapsulated message, returned (else MIME_NONE). Over a limit the
 * container is kept as a leaf. */
static uint32_t begin_body(struct parser *p, uint32_t i, bool empty)
{
    struct mime_part *pt = part(p, i);
    bool room = pt->depth < MIME_MAX_DEPTH && p->c.m->nparts < MIME_MAX_PARTS;

    if (pt->kind == MIME_KIND_MULTIPART) {
        if (mime_str_is_nil(p->boundary))
            return MIME_NONE; /* no boundary: a multipart with no parts, as Dovecot */
        if (!room) {
            demote(p, pt);
            return MIME_NONE;
        }
        if (!empty) {
            p->bnd[p->nbnd].off = p->boundary.off;
            p->bnd[p->nbnd].len = p->boundary.len;
            p->bnd[p->nbnd].part = i;
            p->nbnd++;
        }
        return MIME_NONE;
    }
    if (pt->kind == MIME_KIND_MESSAGE) {
        if (!room) {
            demote(p, pt);
            return MIME_NONE;
        }
        return new_part(p, i, pt->body_off);
    }
    return MIME_NONE;
}

/* ---- the message ----------------------------------------------------------------------------- */

static void parse_message(struct parser *p)
{
    uint32_t cur = new_part(p, MIME_NONE, 0), b = 0, end, lf_end;
    bool in_header = true;

    while (cur != MIME_NONE && p->c.err == 0) {
        uint32_t owner;
        bool close;

        if (in_header) {
            enum hdr_end he = scan_header(p, is_message_header(p, cur), &b);
            uint32_t child;

            interpret(p, cur);
            if (he != HDR_BOUNDARY) {
                part(p, cur)->body_off = p->pos;
                part(p, cur)->body_lines = p->lf;
                child = begin_body(p, cur, false);
                if (child != MIME_NONE)
                    cur = child; /* the header of the encapsulated message is next */
                else
                    in_header = false;
                continue;
            }
            cut(p, part(p, cur)->hdr_off, &end, &lf_end);
            part(p, cur)->body_off = end;
            part(p, cur)->body_lines = lf_end;
            child = begin_body(p, cur, true);
            if (child != MIME_NONE) {
                /* an empty encapsulated message: header and body empty */
                part(p, child)->body_lines = lf_end;
                cur = child;
            }
        } else {
            if (!scan_body(p, &b)) {
                close_parts(p, cur, MIME_NONE, p->len, p->lf);
                break;
            }
            cut(p, part(p, cur)->body_off, &end, &lf_end);
        }

        /* a boundary line at p->pos: the parts inside its multipart end */
        owner = p->bnd[b].part;
        close_parts(p, cur, owner, end, lf_end);
        cur = owner;
        close = p->pos + 2 + p->bnd[b].len + 2 <= p->len &&
                p->msg[p->pos + 2 + p->bnd[b].len] == '-' &&
                p->msg[p->pos + 3 + p->bnd[b].len] == '-';
        skip_line(p);
        in_header = false;
        if (close) {
            p->nbnd = b; /* "--boundary--": the epilogue follows */
        } else if (p->c.m->nparts >= MIME_MAX_PARTS) {
            p->nbnd = 0; /* no more parts: the rest is body text */
            p->c.m->flags |= MIME_MSG_TRUNCATED;
        } else {
            p->nbnd = b + 1; /* inner boundaries are forgotten */
            cur = new_part(p, owner, p->pos);
            in_header = true;
        }
    }
}

int mime_parse(const uint8_t *msg, size_t len, struct mime_msg *m)
{
    static const uint8_t empty_msg[1];
    struct parser *p;
    int err;

    memset(m, 0, sizeof(*m));
    if (len > MIME_MESSAGE_MAX)
        return -EFBIG;
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    p->c.m = m;
    p->c.missing_mailbox = p->c.missing_domain = p->c.syntax_error = nil;
    p->c.invalid_route = nil;
    p->msg = msg != NULL ? msg : empty_msg;
    p->len = (uint32_t) len;
    m->size = (uint32_t) len;
    /* room for a typical message up front */
    if (mime_grow(&p->c, (void **) &m->parts, &m->parts_cap, 4, sizeof(*m->parts)) &&
        mime_grow(&p->c, (void **) &m->envs, &m->envs_cap, 2, sizeof(*m->envs)) &&
        mime_grow(&p->c, (void **) &m->strs, &m->strs_cap, 512, 1))
        parse_message(p);
    err = p->c.err;
    free(p->c.tmp.d);
    free(p->c.raw.d);
    free(p->val.d);
    free(p);
    if (err != 0) {
        mime_free(m);
        return err;
    }
    return 0;
}

void mime_free(struct mime_msg *m)
{
    free(m->parts);
    free(m->params);
    free(m->addrs);
    free(m->langs);
    free(m->envs);
    free(m->strs);
    memset(m, 0, sizeof(*m));
}
