/*
 * node/address.c
 * Validation and normalisation of addresses and domain names (see address.h).
 */
#include "address.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

bool addr_domain_valid(const char *s)
{
    size_t n = strnlen(s, ADDR_DOMAIN_MAX + 1);
    if (n == 0 || n > ADDR_DOMAIN_MAX)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char) s[i];
        if (ch == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!(isalnum(ch) || ch == '-') || ch > 127)
            return false;
        if (ch == '-' && label == 0)
            return false;
        if (++label > 63)
            return false;
    }
    return label > 0 && s[n - 1] != '-';
}

int addr_domain_normalize(const char *s, char out[ADDR_DOMAIN_MAX + 1])
{
    if (!addr_domain_valid(s))
        return -1;
    size_t i;
    for (i = 0; s[i]; i++)
        out[i] = (char) tolower((unsigned char) s[i]);
    out[i] = 0;
    return 0;
}

/* RFC 5322 atext */
static bool atext(unsigned char ch)
{
    return isalnum(ch) || (ch < 128 && strchr("!#$%&'*+-/=?^_`{|}~", ch) && ch != 0);
}

static int parse(const char *s, struct addr *a, bool allow_empty_local)
{
    const char *at = strrchr(s, '@');
    if (at == NULL || strnlen(s, ADDR_MAX + 1) > ADDR_MAX)
        return -1;
    size_t ll = (size_t) (at - s);
    if (ll > ADDR_LOCAL_MAX || (ll == 0 && !allow_empty_local))
        return -1;
    for (size_t i = 0; i < ll; i++) {
        unsigned char ch = (unsigned char) s[i];
        if (ch == '.') {
            if (i == 0 || i == ll - 1 || s[i + 1] == '.')
                return -1;
        } else if (!atext(ch)) {
            return -1;
        }
        a->local[i] = (char) tolower(ch);
    }
    a->local[ll] = 0;
    if (addr_domain_normalize(at + 1, a->domain) != 0)
        return -1;
    snprintf(a->full, sizeof a->full, "%s@%s", a->local, a->domain);
    return 0;
}

int addr_parse(const char *s, struct addr *a)
{
    return parse(s, a, false);
}

int addr_parse_alias(const char *s, struct addr *a)
{
    return parse(s, a, true);
}
