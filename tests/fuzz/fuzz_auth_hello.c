/*
 * tests/fuzz/fuzz_auth_hello.c
 * libFuzzer target for the cluster handshake's parsers (raft/auth.c): the client hello,
 * which the server parses from whoever connects, and the challenge, which a client parses
 * from whatever it dialled. The input is fed to both. Checked for each: results are one of
 * the documented ones; a hello round-trips (auth_hello_write() gives back exactly the
 * bytes parsed, and those bytes alone parse the same); errors stick (a longer input never
 * turns a refusal into anything else, nor changes its code); "need more" always asks for
 * more than it has and never more than AUTH_HELLO_MAX; and the server's read loop (read at
 * most what the parser asked for, parse after every read) ends in the same result as one
 * parse of the same bytes, never having read past the hello. Parsed hellos also go
 * through auth_mac() with a fixed key. Prefixes are parsed from exact-size heap copies so
 * that ASan sees a read past their end.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "fuzz_check.h"

/* Inputs up to this size get every prefix checked; longer ones a sample (the check is
 * quadratic). A hello is at most AUTH_HELLO_MAX bytes, so this covers every one. */
#define FUZZ_ALL_PREFIXES_MAX 600

static uint8_t *copy_of(const uint8_t *data, size_t len)
{
    uint8_t *copy = malloc(len > 0 ? len : 1);

    FUZZ_CHECK(copy != NULL);
    if (len > 0)
        memcpy(copy, data, len);
    return copy;
}

static int hello_copy(const uint8_t *data, size_t len, struct auth_hello *h, size_t *need)
{
    uint8_t *copy = copy_of(data, len);
    int rc;

    *need = 0;
    rc = auth_hello_parse(copy, len, h, need);
    free(copy);
    return rc;
}

static int challenge_copy(const uint8_t *data, size_t len, uint8_t ns[AUTH_NONCE_LEN])
{
    uint8_t *copy = copy_of(data, len);
    int rc = auth_challenge_parse(copy, len, ns);

    free(copy);
    return rc;
}

static bool same_hello(const struct auth_hello *a, const struct auth_hello *b)
{
    return a->version == b->version && a->id == b->id && a->addr_len == b->addr_len &&
           strcmp(a->addr, b->addr) == 0 && memcmp(a->nc, b->nc, AUTH_NONCE_LEN) == 0 &&
           memcmp(a->mac, b->mac, AUTH_MAC_LEN) == 0;
}

/* check_hello_result(): what one parse of DATA[0..LEN) may return. */
static void check_hello_result(const uint8_t *data, size_t len, int rc, const struct auth_hello *h,
                               size_t need)
{
    FUZZ_CHECK(rc == 0 || rc == 1 || rc == AUTH_EVERSION || rc == AUTH_EPROTO);
    if (rc == 1) {
        FUZZ_CHECK(need > len);
        FUZZ_CHECK(need >= AUTH_HELLO_HEAD && need <= AUTH_HELLO_MAX);
    } else if (rc == 0) {
        uint8_t out[AUTH_HELLO_MAX];
        FUZZ_CHECK(need >= AUTH_HELLO_MIN && need <= AUTH_HELLO_MAX && need <= len);
        FUZZ_CHECK(h->version == AUTH_VERSION);
        FUZZ_CHECK(h->addr_len > 0 && strlen(h->addr) == h->addr_len);
        FUZZ_CHECK(auth_address_ok(h->addr, h->addr_len));
        FUZZ_CHECK(need == (size_t) AUTH_HELLO_HEAD + h->addr_len + AUTH_NONCE_LEN + AUTH_MAC_LEN);
        FUZZ_CHECK(auth_hello_write(out, sizeof out, h) == (int) need);
        FUZZ_CHECK(memcmp(out, data, need) == 0);
    } else {
        FUZZ_CHECK(len >= 1);
    }
}

/* server_reads(): auth.c's read loop on DATA as the bytes on the wire, delivered in chunks
 * of at most what the reader offers (sizes taken from the data itself). Returns the
 * parser's last answer and how many bytes were consumed. */
static int server_reads(const uint8_t *data, size_t size, struct auth_hello *h, size_t *have)
{
    uint8_t rx[AUTH_HELLO_MAX];
    size_t want = AUTH_HELLO_HEAD, need = 0;
    int rc = 1;

    *have = 0;
    while (rc == 1 && *have < size) {
        size_t offer = want - *have, chunk = 1 + data[*have] % 5;
        if (chunk > offer)
            chunk = offer;
        if (chunk > size - *have)
            chunk = size - *have;
        memcpy(rx + *have, data + *have, chunk);
        *have += chunk;
        rc = auth_hello_parse(rx, *have, h, &need);
        if (rc == 1) {
            FUZZ_CHECK(need > *have && need <= sizeof rx);
            want = need;
        }
    }
    return rc;
}

static void fuzz_hello(const uint8_t *data, size_t size)
{
    static const struct auth_key key = {.bytes = "fuzz-cluster-secret-32-bytes-...", .len = 32};
    static const uint8_t ns[AUTH_NONCE_LEN];
    struct auth_hello h, h2;
    size_t need, need2, have, step;
    int rc, rc2, first_err = 0;

    memset(&h, 0, sizeof h);
    rc = hello_copy(data, size, &h, &need);
    check_hello_result(data, size, rc, &h, need);

    if (rc == 0) {
        uint8_t mac[AUTH_MAC_LEN];
        /* The hello alone parses the same. */
        memset(&h2, 0, sizeof h2);
        FUZZ_CHECK(hello_copy(data, need, &h2, &need2) == 0 && need2 == need);
        FUZZ_CHECK(same_hello(&h, &h2));
        FUZZ_CHECK(auth_mac(&key, AUTH_CLIENT, "raft", ns, &h, mac) == 0);
        (void) auth_mac_equal(mac, h.mac);
    }

    /* Every prefix: "need more" until the answer, then errors stick. */
    step = size <= FUZZ_ALL_PREFIXES_MAX ? 1 : size / 97 + 1;
    for (size_t len = 0; len < size; len += step) {
        memset(&h2, 0, sizeof h2);
        rc2 = hello_copy(data, len, &h2, &need2);
        check_hello_result(data, len, rc2, &h2, need2);
        if (first_err != 0)
            FUZZ_CHECK(rc2 == first_err);
        else if (rc2 < 0)
            first_err = rc2;
        if (rc2 == 0)
            FUZZ_CHECK(rc == 0 && need2 == need && same_hello(&h, &h2));
    }
    if (first_err != 0)
        FUZZ_CHECK(rc == first_err);

    /* The server's loop: same answer, never a byte past the hello. */
    memset(&h2, 0, sizeof h2);
    rc2 = server_reads(data, size, &h2, &have);
    FUZZ_CHECK(have <= size && have <= AUTH_HELLO_MAX);
    FUZZ_CHECK(rc2 == rc);
    if (rc2 == 0)
        FUZZ_CHECK(have == need && same_hello(&h, &h2));
    if (rc2 == 1)
        FUZZ_CHECK(have == size);
}

static void fuzz_challenge(const uint8_t *data, size_t size)
{
    uint8_t ns[AUTH_NONCE_LEN], out[AUTH_CHALLENGE_LEN];
    int rc = challenge_copy(data, size, ns), first_err = 0;

    FUZZ_CHECK(rc == 0 || rc == 1 || rc == AUTH_EPROTO || rc == AUTH_EVERSION);
    if (rc == 1)
        FUZZ_CHECK(size < AUTH_CHALLENGE_LEN);
    if (rc == 0) {
        FUZZ_CHECK(size >= AUTH_CHALLENGE_LEN);
        auth_challenge_write(out, ns);
        FUZZ_CHECK(memcmp(out, data, AUTH_CHALLENGE_LEN) == 0);
    }
    for (size_t len = 0; len < size && len <= AUTH_CHALLENGE_LEN; len++) {
        int rc2 = challenge_copy(data, len, ns);
        if (first_err != 0)
            FUZZ_CHECK(rc2 == first_err);
        else if (rc2 < 0)
            first_err = rc2;
        FUZZ_CHECK(rc2 != 0 || len == AUTH_CHALLENGE_LEN);
    }
    if (first_err != 0)
        FUZZ_CHECK(rc == first_err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_hello(data, size);
    fuzz_challenge(data, size);
    return 0;
}
