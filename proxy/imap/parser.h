/*
 * proxy/imap/parser.h
 * The incremental IMAP command parser: turns the bytes a client sends into commands (tag,
 * upper-cased name, argument tree), one byte or one megabyte at a time. RFC 3501 9 and
 * RFC 9051 9 (formal syntax), RFC 7888 (LITERAL+ / LITERAL-), RFC 3516 (literal8 "~{n}").
 * It knows no command's argument grammar: proxy/imap handlers check their own arguments.
 *
 * SECURITY: every byte comes from an unauthenticated client. Each limit below is checked
 * before the bytes it guards are stored; nothing is kept beyond a per-command arena that is
 * capped, and a bad line is skipped (streamed, never buffered) so the next one parses.
 */
#ifndef TERN_IMAP_PARSER_H
#define TERN_IMAP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Limits (defaults of struct imap_parser_limits) ------------------------------------ */

/* Bytes of one command without its literal data, CRLFs included. RFC 7162 4 asks servers
 * to accept lines of at least 8192 octets; 64 KiB is Dovecot's imap_max_line_length. */
#define IMAP_PARSER_LINE_MAX (64 * 1024)
/* A literal outside APPEND: a password, a SEARCH string, a header name. */
#define IMAP_PARSER_LITERAL_MAX (64 * 1024)
/* A literal of APPEND or REPLACE (a message): the session sets the message size limit. */
#define IMAP_PARSER_APPEND_LITERAL_MAX (50 * 1024 * 1024)
/* Nesting of "(" and "[" (FETCH and SEARCH need fewer than 10). */
#define IMAP_PARSER_DEPTH_MAX 32
/* Arguments of one command, counted at every level (each list, string, atom is one). */
#define IMAP_PARSER_ARGS_MAX 10000
/* Arena bytes of one command beyond its literals: strings, argument nodes (10000 args
 * and their list terminators are about 1.3 MB) and chunk slack. */
#define IMAP_PARSER_MEM_SLACK (4 * 1024 * 1024)
/* RFC 7888 (LITERAL-), required by RFC 9051: a non-synchronizing literal may be at most this
 * long unless the server advertises LITERAL+. */
#define IMAP_LITERAL_MINUS_MAX 4096
/* Tags are short ("A0001", "a.123"); ours fit in a reply line with room to spare. */
#define IMAP_PARSER_TAG_MAX 64
/* Command names: the registered ones are short (UNAUTHENTICATE has 14 octets). */
#define IMAP_PARSER_NAME_MAX 32

/* Limits of one parser; each default is the constant named beside it. */
struct imap_parser_limits {
    size_t line_max;      /* IMAP_PARSER_LINE_MAX */
    uint64_t literal_max; /* IMAP_PARSER_LITERAL_MAX: literals outside APPEND */
    /* IMAP_PARSER_APPEND_LITERAL_MAX: literals of APPEND and REPLACE (RFC 8508), that is
     * the message size limit. */
    uint64_t append_literal_max;
    /* Arena bytes of one command, literals included, so that a MULTIAPPEND of several
     * messages is capped as a whole. 0: append_literal_max + IMAP_PARSER_MEM_SLACK. */
    size_t mem_max;
    unsigned depth_max; /* IMAP_PARSER_DEPTH_MAX */
    unsigned args_max;  /* IMAP_PARSER_ARGS_MAX */
};

/* imap_parser_limits_default() fills LIM with the defaults above. */
void imap_parser_limits_default(struct imap_parser_limits *lim);

/* Parser flags. IMAP_PARSER_FLAG_LITERAL_PLUS: the server advertises LITERAL+, so "{n+}"
 * is read up to the literal limit. Without it the server is LITERAL- (RFC 9051 requires
 * that much) and "{n+}" is read up to IMAP_LITERAL_MINUS_MAX octets. */
#define IMAP_PARSER_FLAG_LITERAL_PLUS (1u << 0)

/* ---- The argument tree ------------------------------------------------------------------ */

enum imap_arg_type {
    IMAP_ARG_EOL = 0, /* terminates every argument array (args[count]) */
    IMAP_ARG_ATOM,    /* an atom or any other unquoted token: sequence sets ("1:*,5"),
                         flags ("\Seen"), list patterns ("%"), base64 ("AGZvbwBiYXI=") and
                         bracket items (IMAP_ARG_FLAG_SECTION) */
    IMAP_ARG_QUOTED,  /* "..." with its \" and \\ escapes removed */
    IMAP_ARG_LITERAL, /* {n}, {n+}, ~{n}, ~{n+}: the N octets that followed */
    IMAP_ARG_NIL,     /* the atom NIL, any case (str holds it as sent) */
    IMAP_ARG_LIST,    /* ( ... ) */
};

/*
 * Bracket items. An unquoted token with "[" in it is a FETCH-style item:
 *     BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]<0.1024>
 * comes out as one IMAP_ARG_ATOM with IMAP_ARG_FLAG_SECTION and IMAP_ARG_FLAG_PARTIAL:
 *     str      "BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]<0.1024>" (the bytes as received)
 *     name_len 9 ("BODY.PEEK" = str[0..name_len))
 *     list     [ATOM "HEADER.FIELDS", LIST (ATOM "FROM", ATOM "SUBJECT")], count 2
 *     partial_offset 0, partial_count 1024
 * Everything between "[" and "]" is parsed as arguments (strings and literals too: header
 * names are astrings). "[" items do not nest. After "]" the token may go on: "<n.m>" (m > 0,
 * both at most 2^63 - 1) sets IMAP_ARG_FLAG_PARTIAL; anything else sets IMAP_ARG_FLAG_SUFFIX
 * (not a FETCH item, but "[Gmail]/Sent" is still a valid astring: imap_arg_astring() takes
 * str whole). Outside "[...]" a "]" is an ordinary atom character (astring, RFC 3501 9).
 * An unquoted token with a "[" that is never closed is BAD: such mailbox names must be
 * quoted (RFC-valid, but no client we know sends them as atoms).
 */
#define IMAP_ARG_FLAG_SECTION (1u << 0) /* ATOM with [...]: see above */
#define IMAP_ARG_FLAG_PARTIAL (1u << 1) /* SECTION followed by <offset.count> */
#define IMAP_ARG_FLAG_SUFFIX  (1u << 2) /* SECTION followed by something else */
/* SECTION whose str holds a literal verbatim ("{4}\r\nFrom"): not an astring. */
#define IMAP_ARG_FLAG_RAW_LITERAL (1u << 3)
#define IMAP_ARG_FLAG_LITERAL8    (1u << 4) /* LITERAL sent as ~{n}: may hold NUL octets */
#define IMAP_ARG_FLAG_NONSYNC     (1u << 5) /* LITERAL sent as {n+} or ~{n+} */

struct imap_arg {
    enum imap_arg_type type;
    unsigned flags; /* IMAP_ARG_FLAG_* */
    /* ATOM, QUOTED, LITERAL, NIL: LEN octets and a NUL after them; only a LITERAL8 may hold
     * NULs. NULL for LIST and EOL. */
    const char *str;
    size_t len;
    size_t name_len; /* SECTION: length of the name before "[" */
    /* LIST: its items; SECTION: the items inside [...]; list[count] is IMAP_ARG_EOL. NULL
     * otherwise. */
    const struct imap_arg *list;
    size_t count;
    uint64_t partial_offset; /* PARTIAL: <offset.count> */
    uint64_t partial_count;
};

struct imap_arena;

/*
 * A complete command. Ownership: the command and everything it points to (args, strings,
 * literal data) live in one arena that belongs to the caller once imap_parser_parse()
 * returned IMAP_PARSE_OK; free it with imap_cmd_free() when the command has been executed
 * (it may outlive further parsing, the parser and the network buffer: nothing points into
 * the input).
 */
struct imap_cmd {
    const char *tag;             /* as sent, NUL-terminated */
    const char *name;            /* upper case: "FETCH" for both "FETCH" and "UID FETCH" */
    bool uid;                    /* the command was prefixed with UID */
    const struct imap_arg *args; /* args[count] is IMAP_ARG_EOL */
    size_t count;
    struct imap_arena *arena; /* private */
};

void imap_cmd_free(struct imap_cmd *cmd); /* NULL is fine */

/* Helpers for handlers. Each returns false/NULL for an argument of another shape. */

/* imap_arg_atom_equals(): A is an ATOM (or NIL) whose name equals WORD, ASCII case ignored.
 * The name is the whole atom, or for a SECTION the part before "[" (so "BODY.PEEK" matches
 * BODY.PEEK[]; test IMAP_ARG_FLAG_SECTION to tell BODY from BODY[]). */
bool imap_arg_atom_equals(const struct imap_arg *a, const char *word);
/* imap_arg_astring(): astring (RFC 3501 9): an ATOM (a SECTION as received, unless it held
 * a literal), a QUOTED, a LITERAL without NULs, or NIL as the string "NIL". */
const char *imap_arg_astring(const struct imap_arg *a, size_t *len);
/* imap_arg_string(): string (RFC 3501 9): a QUOTED or a LITERAL without NULs. */
const char *imap_arg_string(const struct imap_arg *a, size_t *len);

/* ---- The parser ------------------------------------------------------------------------- */

/*
 * Return codes of imap_parser_parse(). 0 is a command, positive codes wait for something,
 * negative codes are errors. For every code RES->consumed is the number of bytes the
 * session must consume (net_conn_consume), always <= LEN.
 */
enum imap_parse_rc {
    /* RES->cmd is a command; consumed ends after its line end. Bytes after it (the next,
     * pipelined command) are left unconsumed. */
    IMAP_PARSE_OK = 0,
    /* Every byte was consumed (the parser keeps what it needs): call again when more
     * arrive. */
    IMAP_PARSE_NEED_MORE = 1,
    /* A synchronizing literal of RES->literal_size octets was announced (consumed ends
     * after its CRLF). The session either sends "+ ..." and calls
     * imap_parser_accept_literal(), or answers "tag NO [TOOBIG]" (or BAD, or NO [TRYCREATE]
     * for APPEND) and calls imap_parser_reject_literal(): the client then sends neither the
     * literal nor the rest of the command (RFC 9051 7.5). Until then every call returns
     * this code again and consumes nothing. */
    IMAP_PARSE_NEED_CONTINUATION = 2,
    /* Syntax error or a limit: answer "tag BAD RES->msg" (untagged "* BAD" when RES->tag is
     * ""). Not fatal: the rest of the line is skipped. consumed includes what of it was
     * there; while its end has not been reached (RES->skipping) later calls discard it,
     * non-synchronizing literals announced in it included, then go on with the next
     * command. */
    IMAP_PARSE_BAD = -1,
    /* A synchronizing literal over the limit (RES->literal_size): answer
     * "tag NO RES->msg" (msg starts with "[TOOBIG]"). The client sends neither the literal
     * nor the rest of the command; the parser is ready for the next one. Not fatal. */
    IMAP_PARSE_LITERAL_TOO_BIG = -2,
    /* Answer "* BYE RES->msg" and close. A non-synchronizing literal over the limit (its
     * octets are already on their way and we will not read them; Dovecot disconnects too),
     * or out of memory. Every later call returns it again. */
    IMAP_PARSE_FATAL = -3,
};

struct imap_parse_result {
    size_t consumed;      /* bytes of DATA to consume, <= LEN */
    struct imap_cmd *cmd; /* IMAP_PARSE_OK: the command, the caller's (imap_cmd_free) */
    char tag[IMAP_PARSER_TAG_MAX + 1];   /* the tag once read, "" before (or invalid) */
    char name[IMAP_PARSER_NAME_MAX + 1]; /* the command name once read, "" before */
    bool uid;                            /* "UID" prefix seen */
    uint64_t literal_size; /* NEED_CONTINUATION, LITERAL_TOO_BIG, FATAL for a literal */
    const char *msg;       /* BAD, LITERAL_TOO_BIG, FATAL: static English text */
    bool skipping;         /* BAD: the end of the bad line has not been reached yet */
};

struct imap_parser;

/* imap_parser_new(): LIM NULL means imap_parser_limits_default(). Values outside sane
 * bounds are clamped: line_max >= 1024, 1 <= depth_max <= 4096, args_max >= 16, mem_max
 * >= 64 KiB (0: the default above). FLAGS are IMAP_PARSER_FLAG_*. Returns NULL when out of
 * memory. */
struct imap_parser *imap_parser_new(const struct imap_parser_limits *lim, unsigned flags);
/* imap_parser_free(): frees the parser and any half-parsed command. Commands already
 * returned are not affected. NULL is fine. */
void imap_parser_free(struct imap_parser *p);

/*
 * imap_parser_parse() parses the LEN bytes at DATA, which follow the bytes consumed so far
 * (the session's unconsumed buffer: net_conn_rdata). Line ends are CRLF or a bare LF (as
 * Dovecot does: clients typed with nc or telnet); a CR must be followed by LF. Returns an
 * enum imap_parse_rc and fills RES. Runs in O(LEN); DATA is not kept. The session calls it
 * again on the bytes left after each result until it returns NEED_MORE (or FATAL), as
 * several commands, or a BAD and a command, may be waiting.
 * Syntax accepted: tag = 1*(ASTRING-CHAR except "+") (RFC 9051 9), exactly one SP, a
 * command name of letters, digits, "-", "_", "." (upper-cased), "UID" + SP + name. Then
 * arguments separated by runs of SP (RFC 3501 9 rule 1 wants exactly one; extra and trailing
 * SP are accepted). Atoms are 7-bit printable ASCII except ( ) { " (the atom-specials that
 * would make them ambiguous; "*", "%", "\" and "]" are kept for sequence sets, patterns,
 * flags and astrings). Quoted strings take "\\" and "\"" escapes only, any octet but NUL, CR
 * and LF (UTF-8 of RFC 9051 included, not validated). NUL outside a literal8 is BAD.
 */
int imap_parser_parse(struct imap_parser *p, const uint8_t *data, size_t len,
                      struct imap_parse_result *res);

/* After IMAP_PARSE_NEED_CONTINUATION: the session has sent "+ ..." and the literal's octets
 * are next. No-op in any other state. */
void imap_parser_accept_literal(struct imap_parser *p);
/* After IMAP_PARSE_NEED_CONTINUATION: the session has refused the literal; the command is
 * dropped and the next byte starts a new one. No-op in any other state. */
void imap_parser_reject_literal(struct imap_parser *p);

/* imap_parser_idle(): no half-parsed command or skipped line is pending (the session may
 * read raw lines: AUTHENTICATE responses, IDLE's DONE). */
bool imap_parser_idle(const struct imap_parser *p);
/* imap_parser_reset(): drops any half-parsed command or skip (STARTTLS discards the
 * plaintext that followed, CVE-2011-0411). A fatal parser stays fatal. */
void imap_parser_reset(struct imap_parser *p);

#endif
