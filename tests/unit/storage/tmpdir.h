/*
 * tests/unit/storage/tmpdir.h
 * Temporary directories for the storage unit tests: tmpdir_make() creates a fresh
 * directory under $TMPDIR (or /tmp) and tmpdir_remove() deletes it with everything in it,
 * so a test leaves nothing behind. Header-only; not a test itself (the glob is test_*.c).
 */
#ifndef TERN_TEST_TMPDIR_H
#define TERN_TEST_TMPDIR_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

#define TMPDIR_MAX 256

/* tmpdir_make() writes the new directory's path into OUT; returns 0 or -1. */
static inline int tmpdir_make(char out[TMPDIR_MAX], const char *tag)
{
    const char *base = getenv("TMPDIR");
    int n;

    if (base == NULL || *base == '\0')
        base = "/tmp";
    n = snprintf(out, TMPDIR_MAX, "%s/tern_%s_XXXXXX", base, tag);
    if (n < 0 || n >= TMPDIR_MAX)
        return -1;
    return mkdtemp(out) != NULL ? 0 : -1;
}

static inline int tmpdir_unlink_cb(const char *path, const struct stat *st, int type,
                                   struct FTW *ftw)
{
    return remove(path);
}

/* tmpdir_remove() deletes PATH recursively (no symlinks followed); returns 0 or -1. */
static inline int tmpdir_remove(const char *path)
{
    return nftw(path, tmpdir_unlink_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* tmpdir_join() writes DIR/NAME into OUT; returns 0, or -1 when it does not fit. */
static inline int tmpdir_join(char out[TMPDIR_MAX], const char *dir, const char *name)
{
    int n = snprintf(out, TMPDIR_MAX, "%s/%s", dir, name);

    return n >= 0 && n < TMPDIR_MAX ? 0 : -1;
}

#endif
