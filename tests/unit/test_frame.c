/*
 * test_frame.c - unit tests for the incremental JSON object framer.
 *
 * Covers: objects split at every byte boundary, several objects in one
 * read, whitespace and NUL separators, the size limit (an object exactly at
 * it passes, one byte more fails, a huge single read fails without being
 * parsed whole), depth limit (objects and arrays, innermost empty or not),
 * non-objects at the top level, valid UTF-8 split anywhere, invalid UTF-8
 * (overlong, surrogates, beyond U+10FFFF, stray, truncated), things json-c
 * takes that are not JSON (single quotes, NaN, Infinity, raw control
 * characters, bad numbers), a corpus of valid JSON, flat objects read
 * without the tokener exactly as the tokener reads them, garbage after a
 * valid object, and a reader left usable by an error in any scanner state.
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

#include "common/frame.h"

#define TEST_MAX    65536
#define MIB         (1024 * 1024)
#define SMALL_MAX   1024
#define MAX_OBJECTS 16

/* Feed data in chunks of `step` bytes; collect the objects' "n" members. */
struct run {
    int values[MAX_OBJECTS];
    int nobj;
    enum frame_status last;
};

static struct run feed(const char *data, size_t len, size_t step, size_t max)
{
    struct frame_reader fr;
    struct run r = { .nobj = 0, .last = FRAME_NEED_MORE };
    char pending[4096];
    size_t plen = 0, pos = 0;

    assert_int_equal(frame_reader_init(&fr, max), 0);
    /* Mimic a connection: unconsumed bytes stay in front of the next read. */
    while (pos < len || plen > 0) {
        size_t n = len - pos < step ? len - pos : step;
        size_t consumed;
        struct json_object *obj;

        assert_true(plen + n <= sizeof(pending));
        memcpy(pending + plen, data + pos, n);
        plen += n;
        pos += n;
        for (;;) {
            r.last = frame_read(&fr, pending, plen, &consumed, &obj);
            assert_true(consumed <= plen);
            memmove(pending, pending + consumed, plen - consumed);
            plen -= consumed;
            if (r.last != FRAME_OBJECT)
                break;
            assert_non_null(obj);
            assert_true(r.nobj < MAX_OBJECTS);
            r.values[r.nobj++] = json_object_get_int(json_object_object_get(obj, "n"));
            json_object_put(obj);
        }
        if (r.last != FRAME_NEED_MORE)
            break;
        if (n == 0)
            break; /* leftover bytes that form no object */
    }
    frame_reader_free(&fr);
    return r;
}

static void test_split_every_boundary(void **state)
{
    const char *msg = "{\"n\":1,\"msg\":\"h\\u00e9llo \\\"w\\\"\",\"a\":[1,{\"b\":null}]}"
                      "{\"n\":2}";
    size_t len = strlen(msg);

    for (size_t split = 1; split <= len; split++) {
        struct frame_reader fr;
        struct json_object *obj = NULL;
        size_t consumed, off = 0;
        enum frame_status st;
        int got = 0;

        assert_int_equal(frame_reader_init(&fr, TEST_MAX), 0);
        st = frame_read(&fr, msg, split, &consumed, &obj);
        while (st == FRAME_OBJECT) {
            got++;
            json_object_put(obj);
            off += consumed;
            st = frame_read(&fr, msg + off, split - off, &consumed, &obj);
        }
        assert_int_equal(st, FRAME_NEED_MORE);
        off += consumed;
        assert_int_equal(off, split);
        st = frame_read(&fr, msg + off, len - off, &consumed, &obj);
        while (st == FRAME_OBJECT) {
            got++;
            json_object_put(obj);
            off += consumed;
            st = frame_read(&fr, msg + off, len - off, &consumed, &obj);
        }
        assert_int_equal(st, FRAME_NEED_MORE);
        assert_int_equal(got, 2);
        frame_reader_free(&fr);
    }
}

static void test_byte_by_byte(void **state)
{
    const char *msg = "{\"n\":7} \n{\"n\":8}\0{\"n\":9}";
    size_t len = 8 + 2 + 7 + 1 + 7;
    struct run r = feed(msg, len, 1, TEST_MAX);

    assert_int_equal(r.last, FRAME_NEED_MORE);
    assert_int_equal(r.nobj, 3);
    assert_int_equal(r.values[0], 7);
    assert_int_equal(r.values[1], 8);
    assert_int_equal(r.values[2], 9);
}

static void test_coalesced(void **state)
{
    const char *msg = "{\"n\":1}{\"n\":2}{\"n\":3}";
    struct run r = feed(msg, strlen(msg), strlen(msg), TEST_MAX);

    assert_int_equal(r.nobj, 3);
    assert_int_equal(r.values[2], 3);
    assert_int_equal(r.last, FRAME_NEED_MORE);
}

static void test_separators(void **state)
{
    /* Seed client style: trailing NUL; plus blank lines, CRLF and tabs. */
    const char msg[] = "\0\0 {\"n\":1}\0\r\n\t {\"n\":2}\n\n\0";
    struct run r = feed(msg, sizeof(msg) - 1, sizeof(msg) - 1, TEST_MAX);

    assert_int_equal(r.nobj, 2);
    assert_int_equal(r.values[0], 1);
    assert_int_equal(r.values[1], 2);
    assert_int_equal(r.last, FRAME_NEED_MORE);
}

static void test_separators_only_consumed(void **state)
{
    struct frame_reader fr;
    struct json_object *obj;
    size_t consumed;

    assert_int_equal(frame_reader_init(&fr, TEST_MAX), 0);
    assert_int_equal(frame_read(&fr, "\0 \n\0", 4, &consumed, &obj), FRAME_NEED_MORE);
    assert_int_equal(consumed, 4);
    assert_null(obj);
    assert_int_equal(frame_read(&fr, "", 0, &consumed, &obj), FRAME_NEED_MORE);
    assert_int_equal(consumed, 0);
    frame_reader_free(&fr);
}

/* {"n":1,"p":"xxx..."} exactly `size` bytes long. */
static char *object_of_size(size_t size)
{
    const char *head = "{\"n\":1,\"p\":\"", *tail = "\"}";
    size_t fixed = strlen(head) + strlen(tail);
    char *s;

    assert_true(size >= fixed);
    s = malloc(size + 1);
    assert_non_null(s);
    memcpy(s, head, strlen(head));
    memset(s + strlen(head), 'x', size - fixed);
    memcpy(s + size - strlen(tail), tail, strlen(tail) + 1);
    return s;
}

static void test_exactly_at_limit(void **state)
{
    char *s = object_of_size(SMALL_MAX);
    struct run r;

    /* Whole, followed by whitespace, and split one byte at a time. */
    r = feed(s, SMALL_MAX, SMALL_MAX, SMALL_MAX);
    assert_int_equal(r.nobj, 1);
    r = feed(s, SMALL_MAX, 1, SMALL_MAX);
    assert_int_equal(r.nobj, 1);
    assert_int_equal(r.last, FRAME_NEED_MORE);
    free(s);

    s = malloc(SMALL_MAX + 3);
    assert_non_null(s);
    {
        char *o = object_of_size(SMALL_MAX);

        memcpy(s, o, SMALL_MAX);
        memcpy(s + SMALL_MAX, "  ", 3);
        free(o);
    }
    r = feed(s, SMALL_MAX + 2, SMALL_MAX + 2, SMALL_MAX);
    assert_int_equal(r.nobj, 1);
    assert_int_equal(r.last, FRAME_NEED_MORE);
    free(s);
}

static void test_one_over_limit(void **state)
{
    char *s = object_of_size(SMALL_MAX + 1);
    struct run r;

    r = feed(s, SMALL_MAX + 1, SMALL_MAX + 1, SMALL_MAX);
    assert_int_equal(r.nobj, 0);
    assert_int_equal(r.last, FRAME_TOO_BIG);
    r = feed(s, SMALL_MAX + 1, 7, SMALL_MAX);
    assert_int_equal(r.nobj, 0);
    assert_int_equal(r.last, FRAME_TOO_BIG);
    free(s);
}

static void test_huge_single_read(void **state)
{
    char *s = object_of_size(MIB);
    struct frame_reader fr;
    struct json_object *obj;
    size_t consumed;

    assert_int_equal(frame_reader_init(&fr, SMALL_MAX), 0);
    assert_int_equal(frame_read(&fr, s, MIB, &consumed, &obj), FRAME_TOO_BIG);
    assert_null(obj);
    /* Refused after looking at no more than the limit and one byte. */
    assert_true(consumed <= SMALL_MAX + 1);
    frame_reader_free(&fr);
    free(s);
}

static void test_too_big_after_valid_object(void **state)
{
    char *big = object_of_size(SMALL_MAX * 2);
    char *s = malloc(8 + SMALL_MAX * 2);
    struct run r;

    assert_non_null(s);
    memcpy(s, "{\"n\":5}", 7);
    memcpy(s + 7, big, SMALL_MAX * 2);
    r = feed(s, 7 + SMALL_MAX * 2, 7 + SMALL_MAX * 2, SMALL_MAX);
    assert_int_equal(r.nobj, 1);
    assert_int_equal(r.values[0], 5);
    assert_int_equal(r.last, FRAME_TOO_BIG);
    free(s);
    free(big);
}

/*
 * {"n":[[...[1]...]]} with `levels` levels counting the object.  With
 * `empty`, the innermost level holds nothing: {"n":[[...[]...]]}.  json-c's
 * own depth counts these two shapes differently; ours must not.
 */
static char *nested_arrays(int levels, bool empty)
{
    size_t len = 5 + 2 * (size_t)(levels - 1) + 2 + 1;
    char *s = malloc(len);
    size_t p = 0;

    assert_non_null(s);
    memcpy(s, "{\"n\":", 5);
    p = 5;
    for (int i = 1; i < levels; i++)
        s[p++] = '[';
    if (!empty)
        s[p++] = '1';
    for (int i = 1; i < levels; i++)
        s[p++] = ']';
    s[p++] = '}';
    s[p] = '\0';
    return s;
}

/* {"a":{"a":...{"a":1}...}} with `levels` objects (innermost {} if empty). */
static char *nested_objects(int levels, bool empty)
{
    size_t len = 5 * (size_t)(levels - 1) + 6 + (size_t)levels + 1;
    char *s = malloc(len);
    size_t p = 0;

    assert_non_null(s);
    for (int i = 1; i < levels; i++) {
        memcpy(s + p, "{\"a\":", 5);
        p += 5;
    }
    if (empty) {
        s[p++] = '{';
    } else {
        memcpy(s + p, "{\"a\":1", 6);
        p += 6;
    }
    for (int i = 0; i < levels; i++)
        s[p++] = '}';
    s[p] = '\0';
    return s;
}

/* Whole, and one byte at a time: the status the stream ends with. */
static void assert_depth_status(char *s, int want_objects, enum frame_status want_last)
{
    struct run r;

    r = feed(s, strlen(s), strlen(s), TEST_MAX);
    assert_int_equal(r.nobj, want_objects);
    assert_int_equal(r.last, want_last);
    r = feed(s, strlen(s), 1, TEST_MAX);
    assert_int_equal(r.nobj, want_objects);
    assert_int_equal(r.last, want_last);
    free(s);
}

static void test_depth(void **state)
{
    static const bool shapes[] = { false, true };

    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        bool empty = shapes[i];

        assert_depth_status(nested_arrays(FRAME_MAX_DEPTH, empty), 1, FRAME_NEED_MORE);
        assert_depth_status(nested_arrays(FRAME_MAX_DEPTH + 1, empty), 0, FRAME_MALFORMED);
        assert_depth_status(nested_objects(FRAME_MAX_DEPTH, empty), 1, FRAME_NEED_MORE);
        assert_depth_status(nested_objects(FRAME_MAX_DEPTH + 1, empty), 0, FRAME_MALFORMED);
    }
}

static enum frame_status read_one(const char *s, size_t len)
{
    struct frame_reader fr;
    struct json_object *obj;
    enum frame_status st;
    size_t consumed;

    assert_int_equal(frame_reader_init(&fr, TEST_MAX), 0);
    st = frame_read(&fr, s, len, &consumed, &obj);
    if (obj != NULL)
        json_object_put(obj);
    frame_reader_free(&fr);
    return st;
}

static void test_top_level_not_object(void **state)
{
    const char *bad[] = { "[1,2]", "\"str\"", "42", "true", "null", "x", "}", " ]" };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(read_one(bad[i], strlen(bad[i])), FRAME_MALFORMED);
}

static void test_malformed_objects(void **state)
{
    const char *bad[] = {
        "{\"a\":1,}",       /* trailing comma */
        "{\"a\" 1}",        /* missing colon */
        "{\"a\":01}",       /* leading zero */
        "{a:1}",            /* bare key */
        "{\"a\":\"x\0y\"}", /* NUL inside a string (length below) */
    };
    size_t lens[] = { 8, 7, 8, 5, 11 };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(read_one(bad[i], lens[i]), FRAME_MALFORMED);
}

/* Refused whole and when fed one byte at a time, with no object out. */
static void assert_malformed(const char *s, size_t len)
{
    struct run r;

    r = feed(s, len, len, TEST_MAX);
    assert_int_equal(r.nobj, 0);
    assert_int_equal(r.last, FRAME_MALFORMED);
    r = feed(s, len, 1, TEST_MAX);
    assert_int_equal(r.nobj, 0);
    assert_int_equal(r.last, FRAME_MALFORMED);
}

/* Exactly one object, whole and split in two at every byte boundary. */
static void assert_one_object(const char *s, size_t len)
{
    struct run r;

    r = feed(s, len, len, TEST_MAX);
    assert_int_equal(r.nobj, 1);
    assert_int_equal(r.last, FRAME_NEED_MORE);
    for (size_t step = 1; step < len; step++) {
        r = feed(s, len, step, TEST_MAX);
        assert_int_equal(r.nobj, 1);
        assert_int_equal(r.last, FRAME_NEED_MORE);
    }
}

struct bytes {
    const char *s;
    size_t len;
};

#define BYTES(lit)           \
    {                        \
        lit, sizeof(lit) - 1 \
    }

/* Put raw bytes inside a string, as a value ({"a":"..."}) or a key. */
static size_t in_string(char *out, size_t size, struct bytes b, bool as_key)
{
    const char *head = as_key ? "{\"" : "{\"a\":\"";
    const char *tail = as_key ? "\":1}" : "\"}";
    size_t hl = strlen(head), tl = strlen(tail);

    assert_true(hl + b.len + tl <= size);
    memcpy(out, head, hl);
    memcpy(out + hl, b.s, b.len);
    memcpy(out + hl + b.len, tail, tl);
    return hl + b.len + tl;
}

static const struct bytes valid_utf8[] = {
    BYTES("\x7f"),         /* U+007F */
    BYTES("\xc2\x80"),     /* U+0080 */
    BYTES("\xc3\xa9"),     /* é */
    BYTES("\xdf\xbf"),     /* U+07FF */
    BYTES("\xe0\xa0\x80"), /* U+0800 */
    BYTES("\xe4\xbd\xa0\xe5\xa5\xbd"),
    BYTES("\xed\x9f\xbf"),     /* U+D7FF, last before the surrogates */
    BYTES("\xee\x80\x80"),     /* U+E000, first after them */
    BYTES("\xef\xbf\xbf"),     /* U+FFFF */
    BYTES("\xf0\x90\x80\x80"), /* U+10000 */
    BYTES("\xf0\x9f\x98\x80"), /* emoji */
    BYTES("\xf3\xbf\xbf\xbf"), /* U+FFFFF */
    BYTES("\xf4\x8f\xbf\xbf"), /* U+10FFFF, the last code point */
    BYTES("a\xc3\xa9z\xf0\x9f\x98\x80\xe2\x82\xac!"),
};

static const struct bytes invalid_utf8[] = {
    BYTES("\xff"),
    BYTES("\xfe"),
    BYTES("\xc0\xaf"),                 /* overlong '/' */
    BYTES("\xc1\xbf"),                 /* overlong */
    BYTES("\xe0\x80\xaf"),             /* overlong '/' */
    BYTES("\xe0\x9f\xbf"),             /* overlong U+07FF */
    BYTES("\xf0\x80\x80\xaf"),         /* overlong '/' */
    BYTES("\xf0\x8f\xbf\xbf"),         /* overlong U+FFFF */
    BYTES("\xed\xa0\x80"),             /* U+D800, a surrogate */
    BYTES("\xed\xbf\xbf"),             /* U+DFFF */
    BYTES("\xed\xa0\xbd\xed\xb8\x80"), /* a surrogate pair, CESU-8 style */
    BYTES("\xf4\x90\x80\x80"),         /* U+110000 */
    BYTES("\xf5\x80\x80\x80"),
    BYTES("\xf8\x88\x80\x80\x80"), /* old 5-byte form */
    BYTES("\x80"),                 /* stray continuation */
    BYTES("a\xbf"),
    BYTES("\xc3\xa9\xa9"), /* one continuation too many */
    BYTES("\xc3"),         /* truncated at the end of the string */
    BYTES("\xe2\x82"),
    BYTES("\xf0\x9f\x98"),
    BYTES("\xc3\x41"), /* lead byte then ASCII */
    BYTES("\xe2\x28\xa1"),
};

static void test_valid_utf8_split_anywhere(void **state)
{
    char buf[64];

    for (size_t i = 0; i < sizeof(valid_utf8) / sizeof(valid_utf8[0]); i++) {
        assert_one_object(buf, in_string(buf, sizeof(buf), valid_utf8[i], false));
        assert_one_object(buf, in_string(buf, sizeof(buf), valid_utf8[i], true));
    }
}

static void test_invalid_utf8(void **state)
{
    char buf[64];
    const char *outside = "{\"a\":1 \xc3\xa9}";

    for (size_t i = 0; i < sizeof(invalid_utf8) / sizeof(invalid_utf8[0]); i++) {
        assert_malformed(buf, in_string(buf, sizeof(buf), invalid_utf8[i], false));
        assert_malformed(buf, in_string(buf, sizeof(buf), invalid_utf8[i], true));
    }
    assert_malformed(outside, strlen(outside));
}

/* json-c takes all of these even in strict mode; none is JSON. */
static void test_not_json(void **state)
{
    static const struct bytes bad[] = {
        BYTES("{'msgid':14}"),
        BYTES("{\"a\":'x'}"),
        BYTES("{\"a\":NaN}"),
        BYTES("{\"a\":nan}"),
        BYTES("{\"a\":NAN}"),
        BYTES("{\"a\":-NaN}"),
        BYTES("{\"a\":Infinity}"),
        BYTES("{\"a\":-Infinity}"),
        BYTES("{\"a\":infinity}"),
        BYTES("{\"a\":inf}"),
        BYTES("{\"a\":-inf}"),
        BYTES("{\"a\":[1,Infinity]}"),
        BYTES("{\"a\":\"x\ty\"}"), /* raw control characters in strings */
        BYTES("{\"a\":\"x\ny\"}"),
        BYTES("{\"a\":\"\r\"}"),
        BYTES("{\"a\":\"\x01\"}"),
        BYTES("{\"a\":\"\x1f\"}"),
        BYTES("{\"\x1b\":1}"),
        BYTES("{\"a\":\"\\\x01\"}"), /* escaping one does not help */
        BYTES("{\"a\":1.}"),         /* numbers outside the grammar */
        BYTES("{\"a\":1.e5}"),
        BYTES("{\"a\":00}"),
        BYTES("{\"a\":-01}"),
        BYTES("{\"a\":.5}"),
        BYTES("{\"a\":+1}"),
        BYTES("{\"a\":-}"),
        BYTES("{\"a\":1e}"),
        BYTES("{\"a\":1e+}"),
        BYTES("{\"a\":0x10}"),
        BYTES("{\"a\":1e999}"), /* grammatical, but not a finite double */
        BYTES("{\"a\":-1e999}"),
        BYTES("{\"a\":tru}"),
        BYTES("{\"a\":True}"),
        BYTES("{\"a\":/*c*/1}"),
        BYTES("{\"a\":\f1}"),
        BYTES("{\"a\":1\v}"),
        BYTES("{\"a\"\0:1}"),
    };
    char huge[512];
    size_t n;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_malformed(bad[i].s, bad[i].len);

    /* A mantissa so long it overflows a double, without any exponent. */
    n = (size_t)snprintf(huge, sizeof(huge), "{\"a\":1%0400d.5}", 0);
    assert_true(n < sizeof(huge));
    assert_malformed(huge, n);
}

/* Every path through the grammar that must keep working. */
static void test_valid_json(void **state)
{
    static const struct bytes good[] = {
        BYTES("{}"),
        BYTES("{ \"a\" : [ ] , \"b\" : { } }\n"),
        BYTES("{\"a\":[true,false,null,0,-0,1,-12,0.5,-0.25,1e5,1E+5,1.5e-3,10E-0,7e07]}"),
        BYTES("{\"a\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"}"),
        BYTES("{\"it's\":\"{[\\\"]}'\",\"b\":\"\x7f\"}"),
        BYTES("{\"t\":true,\"f\":false,\"n\":null}"),
        BYTES("{\"a\":[[],[{}],{\"b\":[1,[2,[3]]]}]}"),
        BYTES("{\"a\":1.7976931348623157e308,\"b\":-2.2250738585072014e-308}"),
    };

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_one_object(good[i].s, good[i].len);
}

/*
 * Flat objects whole in one read skip json-c's tokener (frame.c's
 * flat_object): each of these must come out exactly as the tokener makes
 * it (json_object_equal: the same members, types and values), whether or not
 * it takes the fast path, and in one read or byte by byte.
 */
static void test_flat_objects_as_the_tokener_makes_them(void **state)
{
    static const struct bytes cases[] = {
        BYTES("{\"msgid\":5,\"toid\":1234,\"msg\":\"hello there\",\"seq\":\"s-17\"}"),
        BYTES("{}"),
        BYTES("{ }"),
        BYTES(" {\"a\" : 1 ,\r\n\t\"b\":\"x\"\n}"),
        BYTES("{\"a\":-0,\"b\":-12,\"c\":0,\"d\":999999999999999999}"),  /* 18 digits */
        BYTES("{\"a\":9223372036854775807,\"b\":-9223372036854775808}"), /* int64 ends */
        BYTES("{\"a\":9223372036854775808,\"b\":18446744073709551616}"), /* beyond */
        BYTES("{\"a\":1,\"a\":\"two\",\"b\":2,\"a\":3}"),                /* last one wins */
        BYTES("{\"\":\"\",\"k\":\"\"}"),                                 /* empty name, value */
        BYTES("{\"msg\":\"caf\xc3\xa9 \xf0\x9f\x98\x80 \x7f\"}"),        /* UTF-8, DEL */
        BYTES("{\"msg\":\"a\\\"b\",\"n\":1}"),                           /* escapes */
        BYTES("{\"m\\u0041\":1}"),
        BYTES("{\"a\":1.5,\"b\":1}"),
        BYTES("{\"a\":1e3}"),
        BYTES("{\"a\":true,\"b\":null}"),
        BYTES("{\"a\":{\"b\":1}}"),
        BYTES("{\"a\":[1,2]}"),
        BYTES("{\"a_member_name_longer_than_sixty_four_bytes_goes_to_the_tokener_too\":1}"),
    };
    struct json_tokener *tok = json_tokener_new();

    assert_non_null(tok);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *text = cases[i].s + strspn(cases[i].s, " ");
        size_t tlen = cases[i].len - (size_t)(text - cases[i].s);
        struct json_object *want = json_tokener_parse_ex(tok, text, (int)tlen);

        assert_non_null(want);
        json_tokener_reset(tok);
        for (size_t step = cases[i].len; step >= 1; step = step > 1 ? 1 : 0) {
            struct frame_reader fr;
            struct json_object *got = NULL;
            size_t pos = 0, consumed;
            enum frame_status st = FRAME_NEED_MORE;

            assert_int_equal(frame_reader_init(&fr, TEST_MAX), 0);
            while (pos < cases[i].len && st == FRAME_NEED_MORE) {
                size_t n = cases[i].len - pos < step ? cases[i].len - pos : step;

                st = frame_read(&fr, cases[i].s + pos, n, &consumed, &got);
                pos += consumed;
            }
            assert_int_equal(st, FRAME_OBJECT);
            if (!json_object_equal(want, got))
                fail_msg("case %zu (step %zu): %s, the tokener %s", i, step,
                         json_object_to_json_string(got), json_object_to_json_string(want));
            json_object_put(got);
            frame_reader_free(&fr);
        }
        json_object_put(want);
    }
    json_tokener_free(tok);
}

static void test_garbage_after_object(void **state)
{
    const char *msg = "{\"n\":1}garbage";
    struct run r = feed(msg, strlen(msg), strlen(msg), TEST_MAX);

    assert_int_equal(r.nobj, 1);
    assert_int_equal(r.last, FRAME_MALFORMED);
    msg = "{\"n\":1} [1]";
    r = feed(msg, strlen(msg), 1, TEST_MAX);
    assert_int_equal(r.nobj, 1);
    assert_int_equal(r.last, FRAME_MALFORMED);
}

static void test_reset_after_error(void **state)
{
    struct frame_reader fr;
    struct json_object *obj;
    size_t consumed;

    assert_int_equal(frame_reader_init(&fr, TEST_MAX), 0);
    assert_int_equal(frame_read(&fr, "{\"a\":", 5, &consumed, &obj), FRAME_NEED_MORE);
    frame_reader_reset(&fr);
    assert_int_equal(frame_read(&fr, "{\"n\":3}", 7, &consumed, &obj), FRAME_OBJECT);
    assert_int_equal(consumed, 7);
    assert_int_equal(json_object_get_int(json_object_object_get(obj, "n")), 3);
    json_object_put(obj);
    frame_reader_free(&fr);
}

/*
 * A worker shares one reader among its connections: after a stream dies
 * (malformed, too big), the same reader must parse the next stream's objects
 * without anyone resetting it by hand.
 */
static void test_error_leaves_reader_usable(void **state)
{
    static const char *const bad[] = {
        "{\"a\":,}",
        "[1]",
        "{\"a\":\"\xff\"}",
        "{\"a\":\"\x01",         /* inside a string */
        "{\"a\":\"\xe2\x82\x01", /* inside a UTF-8 sequence */
        "{\"a\":[[{\"b\":tru]",  /* nested, inside a literal */
        "{\"a\":[-1.e",          /* inside a number */
    };
    struct frame_reader fr;
    struct json_object *obj;
    size_t consumed;
    char big[TEST_MAX + 64];

    (void)state;
    assert_int_equal(frame_reader_init(&fr, TEST_MAX), 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(frame_read(&fr, bad[i], strlen(bad[i]), &consumed, &obj), FRAME_MALFORMED);
        assert_int_equal(frame_read(&fr, "{\"n\":1}", 7, &consumed, &obj), FRAME_OBJECT);
        json_object_put(obj);
    }
    memset(big, ' ', sizeof(big));
    big[0] = '{';
    big[1] = '"';
    memset(big + 2, 'x', sizeof(big) - 2);
    assert_int_equal(frame_read(&fr, big, sizeof(big), &consumed, &obj), FRAME_TOO_BIG);
    assert_int_equal(frame_read(&fr, "{\"n\":2}", 7, &consumed, &obj), FRAME_OBJECT);
    assert_int_equal(json_object_get_int(json_object_object_get(obj, "n")), 2);
    json_object_put(obj);
    frame_reader_free(&fr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_every_boundary),
        cmocka_unit_test(test_byte_by_byte),
        cmocka_unit_test(test_coalesced),
        cmocka_unit_test(test_separators),
        cmocka_unit_test(test_separators_only_consumed),
        cmocka_unit_test(test_exactly_at_limit),
        cmocka_unit_test(test_one_over_limit),
        cmocka_unit_test(test_huge_single_read),
        cmocka_unit_test(test_too_big_after_valid_object),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_top_level_not_object),
        cmocka_unit_test(test_malformed_objects),
        cmocka_unit_test(test_valid_utf8_split_anywhere),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_not_json),
        cmocka_unit_test(test_valid_json),
        cmocka_unit_test(test_flat_objects_as_the_tokener_makes_them),
        cmocka_unit_test(test_garbage_after_object),
        cmocka_unit_test(test_reset_after_error),
        cmocka_unit_test(test_error_leaves_reader_usable),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
