/*
 * tests/fuzz/fuzz_check.h
 * FUZZ_CHECK(cond): a property every fuzz target asserts. It holds with or without NDEBUG
 * and aborts with the file, line and condition, which libFuzzer reports as a finding.
 */
#ifndef TERN_FUZZ_CHECK_H
#define TERN_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
