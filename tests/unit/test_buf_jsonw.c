/*
 * test_buf_jsonw.c - unit tests for byte buffers and the JSON writer.
 *
 * buf: append, consume, compaction, printf growth, shrink.
 * jsonw: every byte value 0..255 (as valid UTF-8 where needed) survives a
 * round trip through json-c's parser; objects with arrays and raw members
 * parse back to what was written; qc_strerror covers every error number.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <json-c/json.h>

#include "common/buf.h"
#include "common/jsonw.h"
#include "common/proto.h"

#define BIG_APPENDS 10000
#define SHRINK_KEEP 1024

static void test_buf_append_consume(void **state)
{
    struct buf b;

    buf_init(&b);
    assert_int_equal(buf_used(&b), 0);
    assert_int_equal(buf_append_str(&b, "hello "), 0);
    assert_int_equal(buf_append(&b, "world", 5), 0);
    assert_int_equal(buf_append_char(&b, '!'), 0);
    assert_int_equal(buf_used(&b), 12);
    assert_memory_equal(buf_head(&b), "hello world!", 12);
    buf_consume(&b, 6);
    assert_int_equal(buf_used(&b), 6);
    assert_memory_equal(buf_head(&b), "world!", 6);
    buf_compact(&b);
    assert_int_equal(b.off, 0);
    assert_memory_equal(b.data, "world!", 6);
    buf_consume(&b, 100);
    assert_int_equal(buf_used(&b), 0);
    buf_free(&b);
    assert_null(b.data);
}

static void test_buf_growth_keeps_unread(void **state)
{
    struct buf b;
    char expect[16];

    buf_init(&b);
    for (int i = 0; i < BIG_APPENDS; i++) {
        assert_int_equal(buf_printf(&b, "%08d", i), 0);
        if (i % 3 == 0)
            buf_consume(&b, 8);
    }
    /* One number was consumed from the front for every third written... */
    assert_int_equal(buf_used(&b), (BIG_APPENDS - (BIG_APPENDS + 2) / 3) * 8);
    /* ...so the first unread one is the count consumed. */
    snprintf(expect, sizeof(expect), "%08d", (BIG_APPENDS + 2) / 3);
    assert_memory_equal(buf_head(&b), expect, 8);
    buf_free(&b);
}

static void test_buf_printf_long(void **state)
{
    struct buf b;
    char *big = malloc(5000);

    assert_non_null(big);
    memset(big, 'z', 4999);
    big[4999] = '\0';
    buf_init(&b);
    assert_int_equal(buf_append_str(&b, "<"), 0);
    assert_int_equal(buf_printf(&b, "%s|%d", big, 42), 0);
    assert_int_equal(buf_used(&b), 1 + 4999 + 3);
    assert_memory_equal(buf_head(&b) + 5000, "|42", 3);
    free(big);
    buf_free(&b);
}

static void test_buf_reset_shrink(void **state)
{
    struct buf b;
    char chunk[4096];

    memset(chunk, 'a', sizeof(chunk));
    buf_init(&b);
    for (int i = 0; i < 64; i++)
        assert_int_equal(buf_append(&b, chunk, sizeof(chunk)), 0);
    assert_true(b.cap >= 64 * sizeof(chunk));
    buf_consume(&b, 64 * sizeof(chunk) - 10);
    buf_shrink(&b, SHRINK_KEEP);
    assert_true(b.cap <= SHRINK_KEEP);
    assert_int_equal(buf_used(&b), 10);
    assert_memory_equal(buf_head(&b), chunk, 10);
    buf_reset(&b);
    assert_int_equal(buf_used(&b), 0);
    buf_shrink(&b, 0);
    assert_null(b.data);
    buf_free(&b);
}

/* Parse b's text and return the string member "s". */
static char *round_trip_string(const char *s, size_t n)
{
    struct json_object *obj, *val;
    struct jsonw w;
    struct buf b;
    char *copy;

    buf_init(&b);
    jsonw_begin(&w, &b);
    jsonw_strn(&w, "s", s, n);
    assert_int_equal(jsonw_end(&w), 0);
    assert_int_equal(buf_append_char(&b, '\0'), 0);
    obj = json_tokener_parse(buf_head(&b));
    assert_non_null(obj);
    assert_true(json_object_object_get_ex(obj, "s", &val));
    assert_int_equal(json_object_get_string_len(val), n);
    copy = malloc(n + 1);
    assert_non_null(copy);
    memcpy(copy, json_object_get_string(val), n + 1);
    json_object_put(obj);
    buf_free(&b);
    return copy;
}

static void test_escape_round_trip_all_ascii(void **state)
{
    char s[128];
    char *back;

    for (int i = 0; i < 128; i++)
        s[i] = (char)i;
    back = round_trip_string(s, sizeof(s));
    assert_memory_equal(back, s, sizeof(s));
    free(back);
}

static void test_escape_forms(void **state)
{
    const char *in = "\"\\\b\f\n\r\t\x01\x1f/\x7f";
    const char *want = "\"\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f/\x7f\"";
    struct buf b;

    buf_init(&b);
    assert_int_equal(json_append_string(&b, in, strlen(in)), 0);
    assert_int_equal(buf_used(&b), strlen(want));
    assert_memory_equal(buf_head(&b), want, strlen(want));
    buf_free(&b);
}

static void test_escape_utf8_and_nul(void **state)
{
    const char s[] = "ni\xe4\xbd\xa0 hao\xe5\xa5\xbd \xf0\x9f\x98\x80 a\0b";
    char *back = round_trip_string(s, sizeof(s) - 1);

    assert_memory_equal(back, s, sizeof(s) - 1);
    free(back);
}

static void test_jsonw_object(void **state)
{
    struct json_object *obj, *arr, *v;
    struct jsonw w;
    struct buf b;

    buf_init(&b);
    jsonw_begin(&w, &b);
    jsonw_int(&w, "msgid", 2);
    jsonw_int(&w, "big", INT64_MIN);
    jsonw_str(&w, "name", "a\"b");
    jsonw_bool(&w, "t", 1);
    jsonw_bool(&w, "f", 0);
    jsonw_array_begin(&w, "friends");
    jsonw_array_str(&w, "{\"id\":1}", 8);
    jsonw_array_str(&w, "x", 1);
    jsonw_array_end(&w);
    jsonw_array_begin(&w, "empty");
    jsonw_array_end(&w);
    jsonw_raw(&w, "seq", "[1,\"z\"]", 7);
    assert_int_equal(jsonw_end(&w), 0);
    assert_int_equal(buf_append_char(&b, '\0'), 0);

    obj = json_tokener_parse(buf_head(&b));
    assert_non_null(obj);
    assert_true(json_object_object_get_ex(obj, "msgid", &v));
    assert_int_equal(json_object_get_int(v), 2);
    assert_true(json_object_object_get_ex(obj, "big", &v));
    assert_true(json_object_get_int64(v) == INT64_MIN);
    assert_true(json_object_object_get_ex(obj, "name", &v));
    assert_string_equal(json_object_get_string(v), "a\"b");
    assert_true(json_object_object_get_ex(obj, "t", &v));
    assert_true(json_object_get_boolean(v));
    assert_true(json_object_object_get_ex(obj, "f", &v));
    assert_false(json_object_get_boolean(v));
    assert_true(json_object_object_get_ex(obj, "friends", &arr));
    assert_int_equal(json_object_array_length(arr), 2);
    assert_string_equal(json_object_get_string(json_object_array_get_idx(arr, 0)), "{\"id\":1}");
    assert_true(json_object_object_get_ex(obj, "empty", &arr));
    assert_int_equal(json_object_array_length(arr), 0);
    assert_true(json_object_object_get_ex(obj, "seq", &arr));
    assert_int_equal(json_object_array_length(arr), 2);
    json_object_put(obj);
    buf_free(&b);
}

static void test_jsonw_empty_object(void **state)
{
    struct jsonw w;
    struct buf b;

    buf_init(&b);
    jsonw_begin(&w, &b);
    assert_int_equal(jsonw_end(&w), 0);
    assert_int_equal(buf_used(&b), 2);
    assert_memory_equal(buf_head(&b), "{}", 2);
    buf_free(&b);
}

static void test_strerror(void **state)
{
    assert_string_equal(qc_strerror(QC_EAUTH), "id or password is invalid!");
    assert_string_equal(qc_strerror(QC_OK), "ok");
    for (int e = 0; e <= QC_ERR_MAX; e++) {
        assert_non_null(qc_strerror(e));
        assert_true(strlen(qc_strerror(e)) > 0);
        assert_string_not_equal(qc_strerror(e), "unknown error");
    }
    assert_string_equal(qc_strerror(-1), "unknown error");
    assert_string_equal(qc_strerror(QC_ERR_MAX + 1), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_append_consume),
        cmocka_unit_test(test_buf_growth_keeps_unread),
        cmocka_unit_test(test_buf_printf_long),
        cmocka_unit_test(test_buf_reset_shrink),
        cmocka_unit_test(test_escape_round_trip_all_ascii),
        cmocka_unit_test(test_escape_forms),
        cmocka_unit_test(test_escape_utf8_and_nul),
        cmocka_unit_test(test_jsonw_object),
        cmocka_unit_test(test_jsonw_empty_object),
        cmocka_unit_test(test_strerror),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
