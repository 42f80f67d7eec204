/*
 * proxy/pop3/pop3_parse.c
 * POP3 command lines (see pop3_parse.h).
 */
#include "pop3_parse.h"

#include <string.h>

int pop3_parse(const char *line, size_t len, struct pop3_cmd *out)
{
    memset(out, 0, sizeof *out);
    if (len == 0 || len + 2 > POP3_LINE_MAX)
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char) line[i];
        if (ch < 0x20 && ch != '\t')
            return -1;
        if (ch == 0x7f)
            return -1;
    }
    size_t v = 0;
    while (v < len && line[v] != ' ') {
        char ch = line[v];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z')) || v == POP3_VERB_MAX)
            return -1;
        out->verb[v++] = (char) (ch >= 'a' ? ch - 32 : ch);
    }
    if (v == 0)
        return -1;
    if (v == len)
        return 0;
    size_t r = len - v - 1; /* after the single space */
    memcpy(out->rest, line + v + 1, r);
    out->rest[r] = 0;
    for (size_t i = v + 1; i < len;) {
        while (i < len && line[i] == ' ')
            i++;
        size_t start = i;
        while (i < len && line[i] != ' ')
            i++;
        if (i == start)
            break;
        if (out->nargs < POP3_ARGS_MAX) {
            memcpy(out->args[out->nargs], line + start, i - start);
            out->args[out->nargs][i - start] = 0;
            out->nargs++;
        } else {
            out->extra++;
        }
    }
    return 0;
}
