/*
 * node/config.h
 * tern.conf: an INI file. Every key has an embedded default (config_keys.def), so a
 * missing file section or key keeps its default and ternd runs with no file at all.
 *
 * Syntax: "[section]" lines, "key = value" lines, blank lines, and comments starting with
 * '#' or ';' (whole lines only: a '#' inside a value is part of the value). Whitespace
 * around keys and values is trimmed; a value may be wrapped in double quotes to keep
 * leading or trailing spaces. Unknown sections or keys, a key outside a section, a
 * missing '=', a value of the wrong type, a line over CONFIG_LINE_MAX bytes, a NUL byte
 * and a file over CONFIG_FILE_MAX bytes are errors naming the file and line:
 *   "tern.conf:12: unknown key 'prot' in section [raft]"
 *
 * SECURITY: the file is trusted by whoever starts ternd, but it is parsed with every
 * input bounded so that a corrupt file gives an error, never a crash.
 */
#ifndef TERN_CONFIG_H
#define TERN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_LINE_MAX  4096
#define CONFIG_FILE_MAX  (1024 * 1024)
#define CONFIG_VALUE_MAX 1024
#define CONFIG_ERR_MAX   512

/* One value per known key, in config_keys.def order. Values are owned by the config. */
struct config {
    char **values;  /* values[i] for key i; never NULL after config_init() */
    size_t count;
};

/* config_init() fills every key with its default. Returns 0 or -1 (out of memory). */
int config_init(struct config *cfg);
void config_free(struct config *cfg);

/*
 * config_parse() applies TEXT (LEN bytes; need not be NUL-terminated) on top of the
 * current values. NAME is the file name used in messages. On error returns -1, writes
 * "NAME:LINE: reason" into ERR, and CFG may hold a part of the file's values.
 */
int config_parse(struct config *cfg, const char *text, size_t len, const char *name,
                 char err[CONFIG_ERR_MAX]);
/* config_load() reads PATH and calls config_parse(). Returns 0 or -1 with ERR set
 * (including "PATH: No such file or directory"). */
int config_load(struct config *cfg, const char *path, char err[CONFIG_ERR_MAX]);

/* config_set() sets one key from a "section.key" NAME (as the command line does), with the
 * same type checks. Returns 0 or -1 with ERR set. */
int config_set(struct config *cfg, const char *name, const char *value,
               char err[CONFIG_ERR_MAX]);

/* Typed getters. The key must exist in config_keys.def (asserted: a typo is our bug). */
const char *config_str(const struct config *cfg, const char *section, const char *key);
uint64_t config_uint(const struct config *cfg, const char *section, const char *key);
bool config_bool(const struct config *cfg, const char *section, const char *key);
/* SIZE values in bytes. */
uint64_t config_size(const struct config *cfg, const char *section, const char *key);

/* config_print() writes the effective configuration as a valid tern.conf, each key with
 * its help text as a comment, to OUT. config_parse() of that output gives the same
 * values. */
void config_print(const struct config *cfg, FILE *out);

/* config_parse_addr() splits "host:port" / "[v6]:port" into HOST (NUL-terminated) and
 * PORT (1..65535). Returns 0 or -1. Used for ADDR values. */
int config_parse_addr(const char *s, char *host, size_t hostlen, uint16_t *port);

#endif
