/*
 * test_frame.c - unit tests for the incremental JSON object framer.
 *
 * Covers: objects split at every byte boundary, several objects in one
 * read, whitespace and NUL separators, the size limit (an object exactly at
 * it passes, one byte more fails, a huge single read fails without being
 * parsed whole), depth limit, non-objects at the top level, invalid UTF-8
 * and garbage after a valid object.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/frame.h"

#define TEST_MAX      65536
#define MIB           (1024 * 1024)
#define SMALL_MAX     1024
#define MAX_OBJECTS   16

/* Feed data in chunks of `step` bytes; collect the objects' "n" members. */
struct run {
    int    values[MAX_OBJECTS];
    int    nobj;
    enum frame_status last;
};

static struct run
feed(const char *data, size_t len, size_t step, size_t max)
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
            break;      /* leftover bytes that form no object */
    }
    frame_reader_free(&fr);
    return r;
}

static void
test_split_every_boundary(void **state)
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

static void
test_byte_by_byte(void **state)
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

static void
test_coalesced(void **state)
{
    const char *msg = "{\"n\":1}{\"n\":2}{\"n\":3}";
    struct run r = feed(msg, strlen(msg), strlen(msg), TEST_MAX);

    assert_int_equal(r.nobj, 3);
    assert_int_equal(r.values[2], 3);
    assert_int_equal(r.last, FRAME_NEED_MORE);
}

static void
test_separators(void **state)
{
    /* Seed client style: trailing NUL; plus blank lines, CRLF and tabs. */
    const char msg[] = "\0\0 {\"n\":1}\0\r\n\t {\"n\":2}\n\n\0";
    struct run r = feed(msg, sizeof(msg) - 1, sizeof(msg) - 1, TEST_MAX);

    assert_int_equal(r.nobj, 2);
    assert_int_equal(r.values[0], 1);
    assert_int_equal(r.values[1], 2);
    assert_int_equal(r.last, FRAME_NEED_MORE);
}

static void
test_separators_only_consumed(void **state)
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
static char *
object_of_size(size_t size)
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

static void
test_exactly_at_limit(void **state)
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

static void
test_one_over_limit(void **state)
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

static void
test_huge_single_read(void **state)
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

static void
test_too_big_after_valid_object(void **state)
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

static char *
nested(int levels)
{
    /* {"n":[[...[1]...]]} with `levels` levels counting the object. */
    size_t len = 5 + 2 * (size_t)(levels - 1) + 2 + 1;
    char *s = malloc(len);
    size_t p = 0;

    assert_non_null(s);
    memcpy(s, "{\"n\":", 5);
    p = 5;
    for (int i = 1; i < levels; i++)
        s[p++] = '[';
    s[p++] = '1';
    for (int i = 1; i < levels; i++)
        s[p++] = ']';
    s[p++] = '}';
    s[p] = '\0';
    return s;
}

static void
test_depth(void **state)
{
    char *ok = nested(FRAME_MAX_DEPTH);
    char *deep = nested(FRAME_MAX_DEPTH + 1);
    struct run r;

    r = feed(ok, strlen(ok), strlen(ok), TEST_MAX);
    assert_int_equal(r.last, FRAME_NEED_MORE);
    assert_int_equal(r.nobj, 1);
    r = feed(deep, strlen(deep), strlen(deep), TEST_MAX);
    assert_int_equal(r.nobj, 0);
    assert_int_equal(r.last, FRAME_MALFORMED);
    free(ok);
    free(deep);
}

static enum frame_status
read_one(const char *s, size_t len)
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

static void
test_top_level_not_object(void **state)
{
    const char *bad[] = { "[1,2]", "\"str\"", "42", "true", "null", "x", "}", " ]" };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(read_one(bad[i], strlen(bad[i])), FRAME_MALFORMED);
}

static void
test_malformed_objects(void **state)
{
    const char *bad[] = {
        "{\"a\":1,}",           /* trailing comma */
        "{\"a\" 1}",            /* missing colon */
        "{\"a\":01}",           /* leading zero */
        "{a:1}",                /* bare key */
        "{\"a\":\"x\0y\"}",     /* NUL inside a string (length below) */
    };
    size_t lens[] = { 8, 7, 8, 5, 11 };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(read_one(bad[i], lens[i]), FRAME_MALFORMED);
}

static void
test_invalid_utf8(void **state)
{
    const char *bad[] = {
        "{\"a\":\"\xff\"}",
        "{\"a\":\"\xc3\"}",             /* truncated sequence */
        "{\"\xe2\x82\":1}",             /* truncated, in a key */
    };
    const char *good;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(read_one(bad[i], strlen(bad[i])), FRAME_MALFORMED);
    /* Valid multi-byte UTF-8 passes. */
    good = "{\"a\":\"\xe4\xbd\xa0\xe5\xa5\xbd\"}";
    assert_int_equal(read_one(good, strlen(good)), FRAME_OBJECT);
}

static void
test_garbage_after_object(void **state)
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

static void
test_reset_after_error(void **state)
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
static void
test_error_leaves_reader_usable(void **state)
{
    static const char *const bad[] = { "{\"a\":,}", "[1]", "{\"a\":\"\xff\"}" };
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

int
main(void)
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
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_garbage_after_object),
        cmocka_unit_test(test_reset_after_error),
        cmocka_unit_test(test_error_leaves_reader_usable),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
