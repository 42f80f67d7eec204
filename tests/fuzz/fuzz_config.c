/*
 * tests/fuzz/fuzz_config.c
 * libFuzzer target for node/config.c. Parses the input as a tern.conf; a failure must leave
 * a "NAME:LINE: reason" message; the values (all of them, or those before a failing line)
 * must survive a round trip: config_print(), parse into a fresh config, same values, same
 * printed text. The input is also tried as an ADDR value through config_parse_addr().
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzz_check.h"

#define FUZZ_NAME "fuzz.conf"

/* print() returns config_print()'s output (free() it) and its length in *LEN. */
static char *print(const struct config *cfg, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);

    FUZZ_CHECK(f != NULL);
    config_print(cfg, f);
    FUZZ_CHECK(fclose(f) == 0);
    return buf;
}

static void round_trip(const struct config *cfg)
{
    struct config again;
    char err[CONFIG_ERR_MAX];
    size_t len, len2;
    char *text = print(cfg, &len), *text2;

    FUZZ_CHECK(config_init(&again) == 0);
    if (config_parse(&again, text, len, "printed", err) != 0) {
        fprintf(stderr, "printed config does not parse: %s\n%s", err, text);
        abort();
    }
    FUZZ_CHECK(again.count == cfg->count);
    for (size_t i = 0; i < cfg->count; i++) {
        if (strcmp(again.values[i], cfg->values[i]) != 0) {
            fprintf(stderr, "value %zu: '%s' printed and read back as '%s'\n", i, cfg->values[i],
                    again.values[i]);
            abort();
        }
    }
    text2 = print(&again, &len2);
    FUZZ_CHECK(len2 == len && memcmp(text, text2, len) == 0);
    free(text2);
    free(text);
    config_free(&again);
}

static void fuzz_addr(const uint8_t *data, size_t size)
{
    char s[300], host[256];
    uint16_t port = 0;

    if (size >= sizeof(s))
        return;
    memcpy(s, data, size);
    s[size] = '\0';
    if (config_parse_addr(s, host, sizeof(host), &port) == 0) {
        FUZZ_CHECK(port != 0);
        FUZZ_CHECK(strlen(host) < strlen(s));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config cfg;
    char err[CONFIG_ERR_MAX];

    FUZZ_CHECK(config_init(&cfg) == 0);
    if (config_parse(&cfg, (const char *) data, size, FUZZ_NAME, err) != 0) {
        FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
        FUZZ_CHECK(strncmp(err, FUZZ_NAME ":", strlen(FUZZ_NAME ":")) == 0);
    }
    /* After a failure CFG holds the lines before the bad one: each was checked when set,
     * so the round trip must hold in both cases. */
    round_trip(&cfg);
    config_free(&cfg);
    fuzz_addr(data, size);
    return 0;
}
