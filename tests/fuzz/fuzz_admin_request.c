/*
 * tests/fuzz/fuzz_admin_request.c
 * libFuzzer target for the admin socket's input path (node/admin.c conn_process() and
 * dispatch()): the input is the byte stream a client writes. frame_parse() cuts it into
 * frames under FRAME_ADMIN_MAX, each whole frame is unpacked as an AdminRequest and judged
 * with dispatch()'s checks (argument count and length, password length, verb, arity);
 * the verb and first argument go through log_q() as dispatch() logs them, address
 * arguments through the address parsers. Every decoded request must survive a round trip:
 * pack, unpack, same verb, args and password, and the same bytes when packed again.
 *
 * SECURITY: whoever can connect to the admin socket (mode 0600) writes these bytes.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "address.h"
#include "admin.h"
#include "admin.pb-c.h"
#include "frame.h"
#include "log.h"
#include "passwd.h"
#include "fuzz_check.h"

/* What dispatch() does with a decoded request. */
enum verdict {
    V_TOO_MANY_ARGS,
    V_ARG_TOO_LONG,
    V_PASSWORD_TOO_LONG,
    V_UNKNOWN_VERB,
    V_BAD_ARITY,
    V_RUN, /* the verb's handler runs */
};

/* The verbs of node/admin.c and their arity (its verbs[] table; keep them in step). A verb
 * missing here is judged unknown, which only costs the fuzzer some coverage. */
static const struct {
    const char *name;
    size_t min_args, max_args;
} verbs[] = {
    {"queue.list", 0, 0},     {"message.list", 2, 2},   {"message.show", 3, 3},
    {"status", 0, 0},         {"domain.add", 1, 1},     {"domain.del", 1, 1},
    {"domain.list", 0, 0},    {"user.add", 1, 3},       {"user.passwd", 1, 1},
    {"user.verify", 1, 1},    {"user.del", 1, 1},       {"user.quota", 2, 3},
    {"user.list", 0, 1},      {"user.show", 1, 1},      {"alias.add", 2, ADMIN_ARGS_MAX},
    {"alias.del", 1, 1},      {"alias.list", 0, 1},     {"mailbox.create", 2, 3},
    {"mailbox.rename", 3, 3}, {"mailbox.delete", 2, 2}, {"mailbox.subscribe", 3, 3},
    {"mailbox.list", 1, 1},
};

/* judge(): dispatch()'s checks, in its order. */
static enum verdict judge(const Tern__AdminRequest *rq)
{
    if (rq->n_args > ADMIN_ARGS_MAX)
        return V_TOO_MANY_ARGS;
    for (size_t i = 0; i < rq->n_args; i++)
        if (strlen(rq->args[i]) > ADMIN_ARG_MAX)
            return V_ARG_TOO_LONG;
    if (rq->has_password && rq->password.len > PASSWD_MAX)
        return V_PASSWORD_TOO_LONG;
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        if (strcmp(verbs[i].name, rq->verb) != 0)
            continue;
        if (rq->n_args < verbs[i].min_args || rq->n_args > verbs[i].max_args)
            return V_BAD_ARITY;
        return V_RUN;
    }
    return V_UNKNOWN_VERB;
}

/* check_log_q(): a value dispatch() logs stays one printable token: itself when it is
 * made of safe bytes only, else quoted (spaces allowed inside the quotes). */
static void check_log_q(const char *s)
{
    char buf[LOG_Q_MAX];
    const char *q = log_q(buf, s);
    size_t n = strlen(q);

    FUZZ_CHECK(n > 0);
    if (q != s)
        FUZZ_CHECK(q == buf && n < LOG_Q_MAX && n >= 2 && q[0] == '"' && q[n - 1] == '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char) q[i];
        FUZZ_CHECK(c >= ' ' && c < 0x7f);
        FUZZ_CHECK(q != s || (c != ' ' && c != '"' && c != '=' && c != '\\'));
    }
}

/* check_address(): what the user and alias verbs do with an address argument, plus
 * the parsers' own promises: bounded, lowercase, and normalising twice changes nothing. */
static void check_address(const char *s)
{
    struct addr a, again;
    char dom[ADDR_DOMAIN_MAX + 1], dom2[ADDR_DOMAIN_MAX + 1];

    if (addr_parse(s, &a) == 0) {
        FUZZ_CHECK(strlen(a.local) <= ADDR_LOCAL_MAX && strlen(a.domain) <= ADDR_DOMAIN_MAX);
        FUZZ_CHECK(strlen(a.full) == strlen(a.local) + 1 + strlen(a.domain));
        FUZZ_CHECK(addr_parse(a.full, &again) == 0 && strcmp(a.full, again.full) == 0);
    }
    if (addr_parse_alias(s, &a) == 0)
        FUZZ_CHECK(addr_parse_alias(a.full, &again) == 0 && strcmp(a.full, again.full) == 0);
    if (addr_domain_normalize(s, dom) == 0) {
        FUZZ_CHECK(strlen(dom) <= ADDR_DOMAIN_MAX && addr_domain_valid(dom));
        FUZZ_CHECK(addr_domain_normalize(dom, dom2) == 0 && strcmp(dom, dom2) == 0);
    }
}

/*
 * round_trip(): the fields admin.c reads, packed and unpacked again, are the same request,
 * and pack to the same bytes. Only those fields: protobuf-c re-emits unknown fields as they
 * came, and 1.4.1 keeps a key of field number 0 written in more than one byte (80 00),
 * then writes it back in one byte (00), which its own unpack refuses. admin.c never looks
 * at unknown fields, so that quirk is not ours to check.
 */
static void round_trip(const Tern__AdminRequest *rq)
{
    Tern__AdminRequest known = TERN__ADMIN_REQUEST__INIT, *back;
    size_t n, n2;
    uint8_t *buf, *buf2;

    known.verb = rq->verb;
    known.n_args = rq->n_args;
    known.args = rq->args;
    known.has_password = rq->has_password;
    known.password = rq->password;
    n = tern__admin_request__get_packed_size(&known);
    buf = malloc(n + 1);
    FUZZ_CHECK(buf != NULL);
    FUZZ_CHECK(tern__admin_request__pack(&known, buf) == n);
    back = tern__admin_request__unpack(NULL, n, buf);
    FUZZ_CHECK(back != NULL);
    FUZZ_CHECK(strcmp(back->verb, rq->verb) == 0);
    FUZZ_CHECK(back->n_args == rq->n_args);
    for (size_t i = 0; i < rq->n_args; i++)
        FUZZ_CHECK(strcmp(back->args[i], rq->args[i]) == 0);
    FUZZ_CHECK(back->has_password == rq->has_password);
    if (rq->has_password) {
        FUZZ_CHECK(back->password.len == rq->password.len);
        FUZZ_CHECK(rq->password.len == 0 ||
                   memcmp(back->password.data, rq->password.data, rq->password.len) == 0);
    }
    FUZZ_CHECK(back->base.n_unknown_fields == 0);
    n2 = tern__admin_request__get_packed_size(back);
    FUZZ_CHECK(n2 == n);
    buf2 = malloc(n2 + 1);
    FUZZ_CHECK(buf2 != NULL);
    FUZZ_CHECK(tern__admin_request__pack(back, buf2) == n2);
    FUZZ_CHECK(memcmp(buf, buf2, n) == 0);
    free(buf2);
    tern__admin_request__free_unpacked(back, NULL);
    free(buf);
}

/* one_request(): what conn_process() and dispatch() do with one whole frame's payload.
 * Returns false when the connection would be closed (undecodable bytes). */
static bool one_request(const uint8_t *payload, size_t len)
{
    Tern__AdminRequest *rq = tern__admin_request__unpack(NULL, len, payload);
    enum verdict v;

    if (rq == NULL)
        return false;
    FUZZ_CHECK(rq->verb != NULL); /* required: unpack refuses a request without one */
    FUZZ_CHECK(rq->n_args == 0 || rq->args != NULL);
    for (size_t i = 0; i < rq->n_args; i++)
        FUZZ_CHECK(rq->args[i] != NULL);
    FUZZ_CHECK(!rq->has_password || rq->password.len == 0 || rq->password.data != NULL);

    v = judge(rq);
    if (v == V_RUN) {
        check_log_q(rq->n_args ? rq->args[0] : ""); /* the admin.request line */
        for (size_t i = 0; i < rq->n_args; i++)
            check_address(rq->args[i]);
    } else if (v == V_UNKNOWN_VERB) {
        check_log_q(rq->verb); /* the "unknown command" reply */
    }
    round_trip(rq);
    tern__admin_request__free_unpacked(rq, NULL);
    return true;
}

/* frame_round_trip(): PAYLOAD behind the header frame_header() writes parses back whole. */
static void frame_round_trip(const uint8_t *payload, size_t len)
{
    uint8_t *buf = malloc(FRAME_HDR + len + 1);
    const uint8_t *p = NULL;

    FUZZ_CHECK(buf != NULL);
    frame_header(buf, (uint32_t) len);
    memcpy(buf + FRAME_HDR, payload, len);
    FUZZ_CHECK(frame_parse(buf, FRAME_HDR + len, FRAME_ADMIN_MAX, &p) == (long) len);
    FUZZ_CHECK(p == buf + FRAME_HDR);
    if (len > 0) /* one byte short is "more needed", never a shorter frame */
        FUZZ_CHECK(frame_parse(buf, FRAME_HDR + len - 1, FRAME_ADMIN_MAX, &p) == -1);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;

    for (;;) {
        const uint8_t *payload = NULL;
        long n = frame_parse(data + off, size - off, FRAME_ADMIN_MAX, &payload);

        if (n == -1) /* wait for more bytes: never more than one frame's worth */
            break;
        if (n == -2) { /* announced too big: closed before any allocation */
            FUZZ_CHECK(size - off >= FRAME_HDR);
            break;
        }
        FUZZ_CHECK(n >= 0 && (size_t) n <= FRAME_ADMIN_MAX);
        FUZZ_CHECK(payload == data + off + FRAME_HDR);
        FUZZ_CHECK((size_t) n <= size - off - FRAME_HDR);
        frame_round_trip(payload, (size_t) n);
        off += FRAME_HDR + (size_t) n;
        if (!one_request(payload, (size_t) n))
            break; /* conn_close(): the rest of the stream is never read */
    }
    return 0;
}
