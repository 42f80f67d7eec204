/*
 * node/config.c
 * tern.conf parser, typed getters and printer (see config.h for the file syntax). The key
 * table comes from config_keys.def; every value is stored as the validated string and the
 * getters convert it on each call. Depends on libc only.
 *
 * SECURITY: the file is trusted, but every byte is bounds-checked: a corrupt or hostile file
 * gives a "NAME:LINE: reason" error, never a crash or an unbounded allocation.
 */
#include "config.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum config_type { CT_STR, CT_UINT, CT_BOOL, CT_ADDR, CT_SIZE, CT_LEVEL };

struct config_key {
    const char *section;
    const char *key;
    enum config_type type;
    const char *def;  /* embedded default */
    const char *help; /* one line, printed as a comment by config_print() */
};

static const struct config_key config_keys[] = {
#define CONFIG_KEY(section, key, type, def, help) {#section, #key, CT_##type, def, help},
#include "config_keys.def"
#undef CONFIG_KEY
};

#define CONFIG_NKEYS (sizeof(config_keys) / sizeof(config_keys[0]))

#define CONFIG_NUM_MAX   ((uint64_t) INT64_MAX) /* UINT and SIZE fit an int64_t / off_t */
#define CONFIG_SHOW_MAX  64                     /* bytes of user text quoted in a message */
#define CONFIG_WHY_MAX   256                    /* a reason: SHOW_MAX of value + text */
#define CONFIG_HOST_MAX  256                    /* bracketed v6 or DNS name (253) + NUL */
#define CONFIG_LABEL_MAX 63                     /* RFC 1035 2.3.4 */
#define CONFIG_NAME_MAX  253                    /* RFC 1035 2.3.4, without the final dot */

static const char config_bom[3] = {'\xef', '\xbb', '\xbf'};

/* ---- key table ------------------------------------------------------------------------ */

/* key_find() returns the index of SECTION.KEY (KEYLEN bytes of KEY) or -1. */
static long key_find(const char *section, const char *key, size_t keylen)
{
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        if (strcmp(config_keys[i].section, section) == 0 && strlen(config_keys[i].key) == keylen &&
            memcmp(config_keys[i].key, key, keylen) == 0)
            return (long) i;
    }
    return -1;
}

/* section_known() is true when some key lives in the LEN-byte section NAME. */
static bool section_known(const char *name, size_t len)
{
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        if (strlen(config_keys[i].section) == len && memcmp(config_keys[i].section, name, len) == 0)
            return true;
    }
    return false;
}

/* key_must() is key_find() for the getters: an unknown name is a bug in the caller, so it
 * asserts, and aborts even under NDEBUG rather than read outside the table. */
static size_t key_must(const struct config *cfg, const char *section, const char *key,
                       enum config_type type)
{
    long i = key_find(section, key, strlen(key));

    assert(cfg->values != NULL && cfg->count == CONFIG_NKEYS);
    assert(i >= 0 && "config: unknown key");
    if (i < 0)
        abort();
    assert(config_keys[i].type == type && "config: getter of the wrong type");
    if (config_keys[i].type != type)
        abort();
    return (size_t) i;
}

/* ---- value checks --------------------------------------------------------------------- */

/* parse_u64() reads LEN decimal digits at S, nothing else (no sign, no space). Returns 0,
 * -1 if it is not a number, -2 if it is above MAX. */
static int parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (len == 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned d = (unsigned) (s[i] - '0');
        if (v > (max - d) / 10)
            return -2;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* parse_size() reads digits with an optional k/m/g suffix (powers of 1024). Returns as
 * parse_u64(). */
static int parse_size(const char *s, uint64_t *out)
{
    size_t len = strlen(s);
    unsigned shift = 0;
    uint64_t v;
    int rc;

    if (len > 0) {
        switch (s[len - 1]) {
        case 'k':
        case 'K':
            shift = 10;
            break;
        case 'm':
        case 'M':
            shift = 20;
            break;
        case 'g':
        case 'G':
            shift = 30;
            break;
        }
        if (shift != 0)
            len--;
    }
    rc = parse_u64(s, len, CONFIG_NUM_MAX, &v);
    if (rc < 0)
        return rc;
    if (v > (CONFIG_NUM_MAX >> shift))
        return -2;
    *out = v << shift;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* LEVEL values are matched exactly (lower case), as log_parse_level() reads them. */
static int check_level(const char *s)
{
    static const char *const levels[] = {"debug", "info", "warn", "error"};

    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        if (strcmp(s, levels[i]) == 0)
            return 0;
    }
    return -1;
}

/* host_ok() accepts a dotted IPv4 address or a DNS name of [A-Za-z0-9.-] (labels of 1..63
 * bytes, not starting or ending with '-'). All-digit names must be valid IPv4. */
static bool host_ok(const char *h, size_t len)
{
    char buf[CONFIG_HOST_MAX];
    unsigned char a4[4];
    bool numeric = true;
    size_t label = 0;

    if (len == 0 || len > CONFIG_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = h[i];
        if (c == '.') {
            if (label == 0 || h[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        bool digit = c >= '0' && c <= '9';
        if (!alpha && !digit && c != '-')
            return false;
        if (c == '-' && label == 0)
            return false;
        if (!digit)
            numeric = false;
        if (++label > CONFIG_LABEL_MAX)
            return false;
    }
    if (label == 0 || h[len - 1] == '-')
        return false;
    if (!numeric)
        return true;
    memcpy(buf, h, len);
    buf[len] = '\0';
    return inet_pton(AF_INET, buf, a4) == 1;
}

int config_parse_addr(const char *s, char *host, size_t hostlen, uint16_t *port)
{
    const char *h, *colon;
    size_t hlen;
    uint64_t p;

    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        unsigned char a6[16];
        char buf[CONFIG_HOST_MAX];

        if (close == NULL || close[1] != ':')
            return -1;
        h = s + 1;
        hlen = (size_t) (close - h);
        colon = close + 1;
        if (hlen == 0 || hlen >= sizeof(buf))
            return -1;
        memcpy(buf, h, hlen);
        buf[hlen] = '\0';
        if (inet_pton(AF_INET6, buf, a6) != 1)
            return -1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return -1;
        h = s;
        hlen = (size_t) (colon - s);
        if (!host_ok(h, hlen))
            return -1;
    }
    if (parse_u64(colon + 1, strlen(colon + 1), 65535, &p) != 0 || p == 0)
        return -1;
    if (hlen >= hostlen)
        return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (uint16_t) p;
    return 0;
}

/*
 * value_check() validates the NUL-terminated value V for key K. Returns 0, or -1 with the
 * reason written to WHY (e.g. "'abc' is not a number"). Length and control bytes are
 * checked by the callers, before this.
 */
static int value_check(const struct config_key *k, const char *v, char *why, size_t whylen)
{
    char host[CONFIG_HOST_MAX];
    uint64_t u;
    uint16_t port;
    bool b;
    int rc = 0;
    const char *what = NULL;

    switch (k->type) {
    case CT_STR:
        return 0;
    case CT_UINT:
        rc = parse_u64(v, strlen(v), CONFIG_NUM_MAX, &u);
        what = "a number";
        break;
    case CT_SIZE:
        rc = parse_size(v, &u);
        what = "a size (e.g. 4096, 64k, 50m, 1g)";
        break;
    case CT_BOOL:
        rc = parse_bool(v, &b);
        what = "a boolean (yes/no, true/false, on/off, 1/0)";
        break;
    case CT_LEVEL:
        rc = check_level(v);
        what = "a level (debug/info/warn/error)";
        break;
    case CT_ADDR:
        if (v[0] != '\0')
            rc = config_parse_addr(v, host, sizeof(host), &port);
        what = "an address (a.b.c.d:port, [v6]:port, name:port or empty)";
        break;
    }
    if (rc == 0)
        return 0;
    if (rc == -2)
        snprintf(why, whylen, "'%.*s' is out of range (max %llu)", CONFIG_SHOW_MAX, v,
                 (unsigned long long) CONFIG_NUM_MAX);
    else
        snprintf(why, whylen, "'%.*s' is not %s", CONFIG_SHOW_MAX, v, what);
    return -1;
}

/* bad_byte() returns the first NUL or control byte (other than tab) of the LEN bytes at S,
 * or NULL. A control byte could not be printed back faithfully by config_print(). */
static const char *bad_byte(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return s + i;
    }
    return NULL;
}

/* value_store() replaces value I with a copy of V. Returns 0 or -1 (out of memory). */
static int value_store(struct config *cfg, size_t i, const char *v, size_t len)
{
    char *copy = malloc(len + 1);

    if (copy == NULL)
        return -1;
    memcpy(copy, v, len);
    copy[len] = '\0';
    free(cfg->values[i]);
    cfg->values[i] = copy;
    return 0;
}

/* ---- init / free ---------------------------------------------------------------------- */

int config_init(struct config *cfg)
{
    cfg->count = 0;
    cfg->values = calloc(CONFIG_NKEYS, sizeof(cfg->values[0]));
    if (cfg->values == NULL)
        return -1;
    cfg->count = CONFIG_NKEYS;
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        char why[CONFIG_WHY_MAX];

        /* A default that fails its own type check is a bug in config_keys.def. */
        assert(value_check(&config_keys[i], config_keys[i].def, why, sizeof(why)) == 0);
        (void) why;
        if (value_store(cfg, i, config_keys[i].def, strlen(config_keys[i].def)) < 0)
            goto err_after_alloc;
    }
    return 0;

err_after_alloc:
    config_free(cfg);
    return -1;
}

void config_free(struct config *cfg)
{
    if (cfg->values != NULL) {
        for (size_t i = 0; i < cfg->count; i++)
            free(cfg->values[i]);
    }
    free(cfg->values);
    cfg->values = NULL;
    cfg->count = 0;
}

/* ---- parser --------------------------------------------------------------------------- */

struct parse {
    struct config *cfg;
    const char *name;                  /* file name for messages */
    unsigned line;                     /* 1-based number of the line being parsed */
    char *err;                         /* CONFIG_ERR_MAX bytes */
    char section[CONFIG_LINE_MAX + 1]; /* current section; "" before the first one */
};

/* fail() writes "NAME:LINE: reason" into the error buffer and returns -1. */
__attribute__((format(printf, 2, 3))) static int fail(struct parse *p, const char *fmt, ...)
{
    int n = snprintf(p->err, CONFIG_ERR_MAX, "%s:%u: ", p->name, p->line);
    va_list ap;

    if (n < 0 || n >= CONFIG_ERR_MAX)
        return -1;
    va_start(ap, fmt);
    vsnprintf(p->err + n, CONFIG_ERR_MAX - (size_t) n, fmt, ap);
    va_end(ap);
    return -1;
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* trim() moves *S and *E (one past the end) inward past spaces and tabs. */
static void trim(const char **s, const char **e)
{
    while (*s < *e && is_blank(**s))
        (*s)++;
    while (*e > *s && is_blank((*e)[-1]))
        (*e)--;
}

/* parse_section() handles a line "[name]" (S..E trimmed, S[0] == '['). */
static int parse_section(struct parse *p, const char *s, const char *e)
{
    const char *n = s + 1, *ne = e - 1;

    if (e - s < 2 || *ne != ']')
        return fail(p, "expected ']' at the end of a section line");
    trim(&n, &ne);
    if (!section_known(n, (size_t) (ne - n)))
        return fail(p, "unknown section [%.*s]",
                    (int) (ne - n > CONFIG_SHOW_MAX ? CONFIG_SHOW_MAX : ne - n), n);
    memcpy(p->section, n, (size_t) (ne - n));
    p->section[ne - n] = '\0';
    return 0;
}

/* parse_pair() handles a line "key = value" (S..E trimmed, not a comment or section). */
static int parse_pair(struct parse *p, const char *s, const char *e)
{
    const char *eq = memchr(s, '=', (size_t) (e - s));
    const char *k = s, *ke, *v, *ve;
    char value[CONFIG_VALUE_MAX + 1];
    char why[CONFIG_WHY_MAX];
    int klen;
    long i;

    if (eq == NULL || eq == s)
        return fail(p, "expected 'key = value'");
    ke = eq;
    v = eq + 1;
    ve = e;
    trim(&k, &ke);
    trim(&v, &ve);
    klen = (int) (ke - k > CONFIG_SHOW_MAX ? CONFIG_SHOW_MAX : ke - k);
    if (p->section[0] == '\0')
        return fail(p, "key '%.*s' before any [section]", klen, k);
    i = key_find(p->section, k, (size_t) (ke - k));
    if (i < 0)
        return fail(p, "unknown key '%.*s' in section [%s]", klen, k, p->section);
    if (v < ve && *v == '"') {
        if (ve - v < 2 || ve[-1] != '"')
            return fail(p, "unterminated quoted value for %s.%s", p->section, config_keys[i].key);
        v++;
        ve--;
    }
    if (ve - v > CONFIG_VALUE_MAX)
        return fail(p, "value for %s.%s is too long (over %d bytes)", p->section,
                    config_keys[i].key, CONFIG_VALUE_MAX);
    memcpy(value, v, (size_t) (ve - v));
    value[ve - v] = '\0';
    if (value_check(&config_keys[i], value, why, sizeof(why)) < 0)
        return fail(p, "bad value for %s.%s: %s", p->section, config_keys[i].key, why);
    if (value_store(p->cfg, (size_t) i, value, (size_t) (ve - v)) < 0)
        return fail(p, "out of memory");
    return 0;
}

/* parse_line() handles the LEN bytes of one line, its end of line already removed. */
static int parse_line(struct parse *p, const char *s, size_t len)
{
    const char *e = s + len;
    const char *bad;

    if (len > CONFIG_LINE_MAX)
        return fail(p, "line too long (over %d bytes)", CONFIG_LINE_MAX);
    bad = bad_byte(s, len);
    if (bad != NULL && *bad == '\0')
        return fail(p, "NUL byte");
    if (bad != NULL)
        return fail(p, "control character 0x%02x", (unsigned) (unsigned char) *bad);
    trim(&s, &e);
    if (s == e || *s == '#' || *s == ';')
        return 0;
    if (*s == '[')
        return parse_section(p, s, e);
    return parse_pair(p, s, e);
}

/* count_lines() returns the number of the line holding byte OFF of TEXT. */
static unsigned count_lines(const char *text, size_t off)
{
    unsigned n = 1;
    const char *s = text, *end = text + off, *nl;

    while (s < end && (nl = memchr(s, '\n', (size_t) (end - s))) != NULL) {
        n++;
        s = nl + 1;
    }
    return n;
}

int config_parse(struct config *cfg, const char *text, size_t len, const char *name,
                 char err[CONFIG_ERR_MAX])
{
    struct parse p = {.cfg = cfg, .name = name, .line = 1, .err = err};
    const char *s = text, *end = text + len;

    err[0] = '\0';
    if (len > CONFIG_FILE_MAX) {
        /* Checked before anything is applied; name the line that crosses the limit. */
        p.line = count_lines(text, CONFIG_FILE_MAX);
        return fail(&p, "file too large (over %d bytes)", CONFIG_FILE_MAX);
    }
    if (len >= sizeof(config_bom) && memcmp(text, config_bom, sizeof(config_bom)) == 0)
        s += sizeof(config_bom);
    for (; s < end; p.line++) {
        const char *nl = memchr(s, '\n', (size_t) (end - s));
        const char *le = nl != NULL ? nl : end; /* the last line may lack its '\n' */
        size_t n = (size_t) (le - s);

        if (n > 0 && s[n - 1] == '\r')
            n--;
        if (parse_line(&p, s, n) < 0)
            return -1;
        s = nl != NULL ? nl + 1 : end;
    }
    return 0;
}

int config_load(struct config *cfg, const char *path, char err[CONFIG_ERR_MAX])
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t len;
    int rc = -1;

    if (f == NULL) {
        snprintf(err, CONFIG_ERR_MAX, "%s: %s", path, strerror(errno));
        return -1;
    }
    /* One byte more than the limit, so that config_parse() sees a file that is too big. */
    buf = malloc(CONFIG_FILE_MAX + 1);
    if (buf == NULL) {
        snprintf(err, CONFIG_ERR_MAX, "%s: out of memory", path);
        goto err_after_open;
    }
    len = fread(buf, 1, CONFIG_FILE_MAX + 1, f);
    if (ferror(f)) {
        snprintf(err, CONFIG_ERR_MAX, "%s: %s", path, strerror(errno));
        goto err_after_alloc;
    }
    rc = config_parse(cfg, buf, len, path, err);

err_after_alloc:
    free(buf);
err_after_open:
    fclose(f);
    return rc;
}

int config_set(struct config *cfg, const char *name, const char *value, char err[CONFIG_ERR_MAX])
{
    const char *dot = strchr(name, '.');
    char section[CONFIG_LINE_MAX + 1];
    char why[CONFIG_WHY_MAX];
    size_t slen, vlen = strlen(value);
    const char *bad;
    long i = -1;

    err[0] = '\0';
    if (dot != NULL && (slen = (size_t) (dot - name)) < sizeof(section)) {
        memcpy(section, name, slen);
        section[slen] = '\0';
        i = key_find(section, dot + 1, strlen(dot + 1));
    }
    if (i < 0) {
        snprintf(err, CONFIG_ERR_MAX, "unknown key '%.*s'", CONFIG_SHOW_MAX, name);
        return -1;
    }
    if (vlen > CONFIG_VALUE_MAX) {
        snprintf(err, CONFIG_ERR_MAX, "value for %s is too long (over %d bytes)", name,
                 CONFIG_VALUE_MAX);
        return -1;
    }
    bad = bad_byte(value, vlen);
    if (bad != NULL) {
        snprintf(err, CONFIG_ERR_MAX, "bad value for %s: control character 0x%02x", name,
                 (unsigned) (unsigned char) *bad);
        return -1;
    }
    if (value_check(&config_keys[i], value, why, sizeof(why)) < 0) {
        snprintf(err, CONFIG_ERR_MAX, "bad value for %s: %s", name, why);
        return -1;
    }
    if (value_store(cfg, (size_t) i, value, vlen) < 0) {
        snprintf(err, CONFIG_ERR_MAX, "out of memory");
        return -1;
    }
    return 0;
}

/* ---- getters -------------------------------------------------------------------------- */

const char *config_str(const struct config *cfg, const char *section, const char *key)
{
    long i = key_find(section, key, strlen(key));

    assert(i >= 0 && "config: unknown key");
    if (i < 0)
        abort();
    return cfg->values[i];
}

uint64_t config_uint(const struct config *cfg, const char *section, const char *key)
{
    const char *v = cfg->values[key_must(cfg, section, key, CT_UINT)];
    uint64_t u = 0;
    int rc = parse_u64(v, strlen(v), CONFIG_NUM_MAX, &u);

    assert(rc == 0); /* stored values are checked when set */
    (void) rc;
    return u;
}

bool config_bool(const struct config *cfg, const char *section, const char *key)
{
    const char *v = cfg->values[key_must(cfg, section, key, CT_BOOL)];
    bool b = false;
    int rc = parse_bool(v, &b);

    assert(rc == 0);
    (void) rc;
    return b;
}

uint64_t config_size(const struct config *cfg, const char *section, const char *key)
{
    const char *v = cfg->values[key_must(cfg, section, key, CT_SIZE)];
    uint64_t u = 0;
    int rc = parse_size(v, &u);

    assert(rc == 0);
    (void) rc;
    return u;
}

/* ---- printer -------------------------------------------------------------------------- */

/* needs_quotes() is true when V would not read back as itself unquoted: empty, leading or
 * trailing blanks (trimmed by the parser), or a leading '"' (taken as a quote). Values never
 * hold a newline or other control byte: both setters reject them. */
static bool needs_quotes(const char *v)
{
    size_t len = strlen(v);

    return len == 0 || is_blank(v[0]) || is_blank(v[len - 1]) || v[0] == '"';
}

void config_print(const struct config *cfg, FILE *out)
{
    const char *section = NULL;

    fprintf(out, "# tern.conf: effective configuration\n");
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        const struct config_key *k = &config_keys[i];
        const char *v = cfg->values[i];

        if (section == NULL || strcmp(section, k->section) != 0) {
            section = k->section;
            fprintf(out, "\n[%s]\n", section);
        }
        fprintf(out, "# %s\n", k->help);
        if (needs_quotes(v))
            fprintf(out, "%s = \"%s\"\n", k->key, v);
        else
            fprintf(out, "%s = %s\n", k->key, v);
    }
}
