/*
 * tests/fuzz/fuzz_pop3_command.c
 * libFuzzer target for the POP3 command-line parser: every line of the input is parsed;
 * what comes out must be bounded, upper-cased and consistent with the input.
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "pop3_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *) data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t) (end - p));
        size_t n = nl ? (size_t) (nl - p) : (size_t) (end - p);
        struct pop3_cmd c;
        if (pop3_parse(p, n, &c) == 0) {
            size_t v = strlen(c.verb);
            assert(v >= 1 && v <= POP3_VERB_MAX);
            for (size_t i = 0; i < v; i++)
                assert(c.verb[i] >= 'A' && c.verb[i] <= 'Z');
            assert(c.nargs <= POP3_ARGS_MAX);
            assert(strlen(c.rest) < n || n == v);
            for (size_t i = 0; i < c.nargs; i++)
                assert(strlen(c.args[i]) > 0 && strchr(c.args[i], ' ') == NULL);
        }
        p += n + 1;
    }
    return 0;
}
