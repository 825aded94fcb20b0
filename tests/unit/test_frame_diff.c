/*
 * test_frame_diff.c - differential test of frame.c's flat-object fast path.
 *
 * frame_read builds a flat object that arrives whole in one read without
 * json-c's tokener (flat_object); it must accept exactly what the tokener
 * path accepts and build the identical object, and refuse what it refuses.
 * A seeded generator makes near-JSON streams: flat objects of requests'
 * member names, with mutations (escapes, NUL and control bytes, invalid
 * UTF-8, huge integers, -0, leading zeros, a lone "-", duplicate and long
 * names, whitespace JSON does not have, missing or extra punctuation,
 * trailing garbage, a few objects back to back, random byte edits).  Each
 * stream goes through frame_diff.h's check: read whole (the fast path where
 * it applies), byte by byte (the tokener only, as version 1 read all) and in
 * reads of random sizes, the objects compared with one another and with
 * json-c's strict tokener alone.  QCHAT_FRAME_DIFF_SEED and
 * QCHAT_FRAME_DIFF_ROUNDS override
 * the seed and the number of streams; a difference prints the stream.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "frame_diff.h"

#define DIFF_ROUNDS     5000 /* streams per run (QCHAT_FRAME_DIFF_ROUNDS) */
#define DIFF_SEED       20261207u
#define STREAM_MAX      4096 /* bytes of one generated stream */
#define STREAM_OBJECTS  3    /* objects back to back, at most */
#define MEMBERS_MAX     7    /* members of one generated object, at most */
#define EDITS_MAX       3    /* random byte edits of a stream, at most */
#define BIG_LIMIT       (1024 * 1024)
#define SMALL_LIMIT_MIN 16 /* a small max_bytes, sometimes: the limit's path too */
#define SMALL_LIMIT_MAX 200
#define RARELY          150 /* one blank or string part in this many is not JSON's */

/* ---- a seeded generator ---------------------------------------------------- */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n) /* 0..n-1 (xorshift64*) */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32) % n;
}

static bool chance(uint32_t percent)
{
    return rnd(100) < percent;
}

static bool rarely(void) /* one in RARELY: a single mutation of many places */
{
    return rnd(RARELY) == 0;
}

struct stream {
    char b[STREAM_MAX];
    size_t n;
};

static void put(struct stream *s, const char *p, size_t n)
{
    if (s->n + n > sizeof(s->b))
        n = sizeof(s->b) - s->n;
    memcpy(s->b + s->n, p, n);
    s->n += n;
}

static void puts_(struct stream *s, const char *p)
{
    put(s, p, strlen(p));
}

#define PICK(arr) (arr)[rnd(sizeof(arr) / sizeof((arr)[0]))]

struct piece {
    const char *s;
    size_t len;
};
#define P(lit)               \
    {                        \
        lit, sizeof(lit) - 1 \
    }

static const struct piece blanks[] = {
    P(""), P(""), P(""), P(" "), P("\t"), P("\n"), P("\r\n"), P("  \n\t "),
};

static const struct piece not_blanks[] = {
    P("\v"), P("\f"), P("\0"), P("\xc2\xa0"), P("\x1f"), P("\x7f"),
};

static void put_blank(struct stream *s)
{
    const struct piece *p = rarely() ? &PICK(not_blanks) : &PICK(blanks);
    put(s, p->s, p->len);
}

/* What a string may hold: plain text, escapes json-c takes, UTF-8. */
static const struct piece string_parts[] = {
    P("hello"),
    P("a"),
    P(" "),
    P("x y z"),
    P("/"),
    P("{"),
    P("}"),
    P(","),
    P(":"),
    P("["),
    P("\x7f"),
    P("'"),
    P("\\\""),
    P("\\\\"),
    P("\\/"),
    P("\\b"),
    P("\\f"),
    P("\\n"),
    P("\\r"),
    P("\\t"),
    P("\\u0041"),
    P("\\u00e9"),
    P("\\u0000"),
    P("\\ud83d\\ude00"),
    P("\\ud800"),
    P("\\udfff"),
    P("\\uD83D"),
    P("caf\xc3\xa9"),
    P("\xf0\x9f\x98\x80"),
    P("\xef\xbf\xbf"),
    P("\xf4\x8f\xbf\xbf"),
    P("\xe4\xbd\xa0\xe5\xa5\xbd"),
};

/* What it may not: bad escapes, raw control bytes, ill-formed UTF-8. */
static const struct piece bad_string_parts[] = {
    P("\\x41"),        P("\\u12"),
    P("\\U0041"),      P("\\'"),
    P("\\"),           P("\\ "),
    P("\x01"),         P("\x1f"),
    P("\t"),           P("\n"),
    P("\0"),           P("\xc0\x80"),
    P("\xed\xa0\x80"), P("\xf4\x90\x80\x80"),
    P("\x80"),         P("\xff"),
    P("\xe0\x80"),     P("\xc3"),
};

static const char *const names[] = {
    "msgid", "id", "toid", "msg", "seq", "groupid", "password", "name", "", "a", "a",
};

static void put_plain_run(struct stream *s, char c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        put(s, &c, 1);
}

/* A string: a request's member name or text, with parts that are anything but plain. */
static void put_string(struct stream *s, bool as_name)
{
    puts_(s, "\"");
    if (as_name && chance(70)) {
        puts_(s, PICK(names));
    } else if (chance(10)) {
        put_plain_run(s, 'k', 60 + rnd(10)); /* about FLAT_KEY_MAX (64) */
    } else {
        unsigned parts = rnd(4);
        for (unsigned i = 0; i < parts; i++) {
            const struct piece *p = rarely() ? &PICK(bad_string_parts) : &PICK(string_parts);
            put(s, p->s, p->len);
        }
    }
    if (!rarely())
        puts_(s, "\"");
}

static const char *const numbers[] = {
    "0",
    "-0",
    "1",
    "-1",
    "7",
    "42",
    "-42",
    "01",
    "-01",
    "00",
    "-",
    "+1",
    "--1",
    "999999999999999999", /* 18 digits: the fast path's last */
    "-999999999999999999",
    "1000000000000000000",
    "-1000000000000000000",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "123456789012345678901234567890",
    "1.0",
    "1.5",
    "-0.0",
    "1e5",
    "1E+2",
    "-1.5e-3",
    "0e0",
    ".5",
    "1.",
    "1e",
    "1e+",
    "0x10",
    "1_000",
    "1e400",
    "-1e400",
    "NaN",
    "Infinity",
    "-Infinity",
};

static void put_number(struct stream *s)
{
    if (chance(15)) {
        puts_(s, PICK(numbers));
        return;
    }
    char d[32];
    unsigned digits = 1 + rnd(20);
    size_t k = 0;
    if (chance(30))
        d[k++] = '-';
    for (unsigned i = 0; i < digits; i++) /* a leading zero, rarely: JSON has none */
        d[k++] = (char)('0' + (i == 0 && digits > 1 && !rarely() ? 1 + rnd(9) : rnd(10)));
    d[k] = '\0';
    puts_(s, d);
}

static void put_value(struct stream *s, unsigned depth)
{
    switch (rnd(20)) {
    case 0: puts_(s, PICK(((const char *const[]){ "true", "false", "null", "tru", "nul" }))); break;
    case 1:
        if (depth < 3) {
            puts_(s, "[");
            put_value(s, depth + 1);
            puts_(s, "]");
        } else {
            puts_(s, "[]");
        }
        break;
    case 2:
        if (depth < 3) {
            puts_(s, "{");
            put_string(s, true);
            puts_(s, ":");
            put_value(s, depth + 1);
            puts_(s, "}");
        } else {
            puts_(s, "{}");
        }
        break;
    case 3:
    case 4:
    case 5:
    case 6:
    case 7:
    case 8: put_number(s); break;
    default: put_string(s, false); break;
    }
}

/* One object, flat mostly, with the punctuation sometimes wrong. */
static void put_object(struct stream *s)
{
    unsigned members = rnd(MEMBERS_MAX + 1);

    puts_(s, chance(1) ? "[" : "{");
    put_blank(s);
    for (unsigned i = 0; i < members; i++) {
        if (i > 0) {
            put_blank(s);
            if (!rarely())
                puts_(s, ",");
            put_blank(s);
        }
        put_string(s, true);
        put_blank(s);
        puts_(s, chance(1) ? "::" : chance(1) ? "" : ":");
        put_blank(s);
        put_value(s, 1);
    }
    if (members > 0 && chance(2))
        puts_(s, ",");
    put_blank(s);
    if (!chance(2))
        puts_(s, chance(1) ? "}}" : "}");
}

static const char interesting[] = { '\0', '"',    '\\',   '{',    '}',    ',',   ':',
                                    '-',  '0',    '9',    ' ',    '\n',   'e',   '.',
                                    'u',  '\x01', '\x7f', '\x80', '\xc3', '\xff' };

/* A few random byte edits: overwrite, insert, delete. */
static void edit(struct stream *s)
{
    unsigned edits = chance(75) ? 0 : 1 + rnd(EDITS_MAX);

    for (unsigned e = 0; e < edits && s->n > 0; e++) {
        size_t at = rnd((uint32_t)s->n);
        char c = chance(70) ? PICK(interesting) : (char)rnd(256);
        switch (rnd(3)) {
        case 0: s->b[at] = c; break;
        case 1:
            if (s->n < sizeof(s->b)) {
                memmove(s->b + at + 1, s->b + at, s->n - at);
                s->b[at] = c;
                s->n++;
            }
            break;
        default:
            memmove(s->b + at, s->b + at + 1, s->n - at - 1);
            s->n--;
            break;
        }
    }
}

static const struct piece separators[] = {
    P(""), P(" "), P("\n"), P("\r\n"), P("\0"), P("\0\0"),
};

static const struct piece garbage[] = {
    P("x"), P("]"), P("}"), P("{"), P("[1]"), P("\"s\""), P("1"), P("{\"a\":"), P("\xff"),
};

static void make_stream(struct stream *s)
{
    unsigned objects = 1 + rnd(STREAM_OBJECTS);

    s->n = 0;
    if (chance(20)) {
        const struct piece *lead = &PICK(separators);
        put(s, lead->s, lead->len);
    }
    for (unsigned i = 0; i < objects; i++) {
        const struct piece *sep = &PICK(separators);
        if (i > 0)
            put(s, sep->s, sep->len);
        put_object(s);
    }
    if (chance(10)) {
        const struct piece *g = &PICK(garbage);
        put(s, g->s, g->len);
    }
    edit(s);
}

static unsigned long env_or(const char *name, unsigned long dflt)
{
    const char *v = getenv(name);
    return v != NULL && *v != '\0' ? strtoul(v, NULL, 0) : dflt;
}

static void test_fast_path_reads_as_the_tokener(void **state)
{
    unsigned long seed = env_or("QCHAT_FRAME_DIFF_SEED", DIFF_SEED);
    unsigned long rounds = env_or("QCHAT_FRAME_DIFF_ROUNDS", DIFF_ROUNDS);
    static struct stream s;
    size_t objects = 0, refused = 0;

    rng_state = seed * 0x9E3779B97F4A7C15ull + 1;
    for (unsigned long r = 0; r < rounds; r++) {
        bool small = chance(10);
        size_t max = small ? SMALL_LIMIT_MIN + rnd(SMALL_LIMIT_MAX - SMALL_LIMIT_MIN) : BIG_LIMIT;
        enum frame_status last;
        size_t nobj;

        make_stream(&s);
        if (!frame_diff_check(s.b, s.n, max, small, rng_state, &nobj, &last))
            fail_msg("stream %lu of seed %lu: the fast path and the tokener differ", r, seed);
        objects += nobj;
        refused += last != FRAME_NEED_MORE;
    }
    /* The generator must reach both sides, or the comparison says nothing. */
    print_message("%lu streams (seed %lu): %zu objects read, %zu streams refused\n", rounds, seed,
                  objects, refused);
    assert_true(objects > rounds / 4);
    assert_true(refused > rounds / 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_path_reads_as_the_tokener),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
