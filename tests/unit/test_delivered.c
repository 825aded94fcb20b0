/*
 * test_delivered.c - delivered_position: a forwarded chat's conversation and
 * cseq read from its bytes, as the written-chat notes, hand-offs and
 * recovery read them: one-to-one and group chats in the server's member
 * order and in others, member names inside string values ignored, escaped
 * quotes and backslashes, literals and nested values (the general reader
 * behind the one-pass walk), the first of a repeated member counting, and
 * objects that are not chats with a cseq refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "common/proto.h"
#include "server/delivered.h"
#include "store/store.h"

/* delivered_position on the string s; conv and cseq set only when true. */
static bool position_of(const char *s, int64_t *conv, int64_t *cseq)
{
    *conv = -1;
    *cseq = -1;
    return delivered_position(s, strlen(s), conv, cseq);
}

static void test_one_to_one_chat(void **state)
{
    (void)state;
    int64_t conv, cseq;
    assert_true(position_of("{\"msgid\":5,\"id\":7,\"name\":\"a\",\"toid\":3,\"msg\":\"hi\","
                            "\"time\":\"2026-12-07 05:00:00\",\"ts\":1765083600000,\"mid\":11,"
                            "\"cseq\":42}",
                            &conv, &cseq));
    assert_int_equal(conv, store_conv_pair(7, 3));
    assert_int_equal(cseq, 42);
    /* A legacy copy: the seed's members and cseq, in another order. */
    assert_true(
        position_of("{\"cseq\":9,\"toid\":3,\"msgid\":5,\"id\":7,\"msg\":\"x\"}", &conv, &cseq));
    assert_int_equal(conv, store_conv_pair(3, 7));
    assert_int_equal(cseq, 9);
}

static void test_group_chat(void **state)
{
    (void)state;
    int64_t conv, cseq;
    assert_true(position_of("{\"msgid\":9,\"id\":7,\"name\":\"a\",\"groupid\":12,\"msg\":\"g\","
                            "\"cseq\":1}",
                            &conv, &cseq));
    assert_int_equal(conv, store_conv_group(12));
    assert_int_equal(cseq, 1);
}

static void test_names_inside_strings_are_not_members(void **state)
{
    (void)state;
    int64_t conv, cseq;
    /* The text carries ,"cseq":99 and ,"toid":1 escaped; the members say 5 and 3. */
    assert_true(
        position_of("{\"msgid\":5,\"id\":7,\"msg\":\"a\\\",\\\"cseq\\\":99,\\\"toid\\\":1\","
                    "\"toid\":3,\"cseq\":5}",
                    &conv, &cseq));
    assert_int_equal(conv, store_conv_pair(7, 3));
    assert_int_equal(cseq, 5);
    /* A name that ends another ("groupid" is not "id"), and a string value "id". */
    assert_true(position_of(
        "{\"msgid\":5,\"name\":\"id\",\"xid\":1,\"id\":8,\"toid\":2,\"cseq\":3}", &conv, &cseq));
    assert_int_equal(conv, store_conv_pair(8, 2));
}

/*
 * A string value ending in ',' or '{' (a user may be named "bob,", a text
 * may end in a comma): the quote that closes it is not a member name's, and
 * the member after it still counts.  Every chat of such a sender was read
 * as no chat at all (no cursor advance; with the log off, a live write that
 * failed could not be kept: the chat was lost).
 */
static void test_values_ending_in_a_comma_or_a_brace(void **state)
{
    (void)state;
    int64_t conv, cseq;
    assert_true(position_of("{\"msgid\":5,\"id\":7,\"name\":\"bob,\",\"toid\":3,\"msg\":\"hi,\","
                            "\"time\":\"2026-12-07 05:00:00\",\"ts\":1,\"mid\":2,\"cseq\":42}",
                            &conv, &cseq));
    assert_int_equal(conv, store_conv_pair(7, 3));
    assert_int_equal(cseq, 42);
    assert_true(position_of("{\"msgid\":9,\"id\":7,\"userid\":7,\"name\":\"{\",\"groupid\":12,"
                            "\"msg\":\"x{\",\"cseq\":3}",
                            &conv, &cseq));
    assert_int_equal(conv, store_conv_group(12));
    assert_int_equal(cseq, 3);
    /* An escaped backslash before the closing quote, then a comma inside the text. */
    assert_true(position_of("{\"msgid\":5,\"id\":7,\"msg\":\",\\\\\",\"toid\":3,\"cseq\":5}", &conv,
                            &cseq));
    assert_int_equal(conv, store_conv_pair(7, 3));
    assert_int_equal(cseq, 5);
}

static void test_escapes_literals_and_nested_values(void **state)
{
    (void)state;
    int64_t conv, cseq;
    /* A text ending in a backslash (escaped), then one ending in an escaped quote. */
    assert_true(position_of("{\"msgid\":5,\"id\":7,\"msg\":\"a\\\\\",\"toid\":3,\"cseq\":6}", &conv,
                            &cseq));
    assert_int_equal(conv, store_conv_pair(7, 3));
    assert_int_equal(cseq, 6);
    assert_true(position_of("{\"msgid\":5,\"msg\":\"\\\\\\\"\",\"id\":7,\"toid\":3,\"cseq\":7}",
                            &conv, &cseq));
    assert_int_equal(cseq, 7);
    /* Literals, negative and real numbers, an array and blanks around the members. */
    assert_true(position_of("{\"r\":true,\"s\":null,\"t\":-1.5e3,\"msgid\":5,\"id\":7,\"toid\":3,"
                            "\"cseq\":8}",
                            &conv, &cseq));
    assert_int_equal(cseq, 8);
    assert_true(
        position_of("{\"msgid\":5,\"x\":[1,2],\"id\":7,\"toid\":3,\"cseq\":9}", &conv, &cseq));
    assert_int_equal(conv, store_conv_pair(7, 3));
    assert_int_equal(cseq, 9);
    assert_true(
        position_of("{\"msgid\":5,\"id\":7, \"toid\":4,\"toid\":3,\"cseq\":10}\n", &conv, &cseq));
    assert_int_equal(conv, store_conv_pair(7, 3)); /* " \"toid\"" after a blank is no member */
    assert_int_equal(cseq, 10);
}

static void test_first_member_of_a_name_counts(void **state)
{
    (void)state;
    int64_t conv, cseq;
    assert_true(
        position_of("{\"msgid\":5,\"id\":7,\"toid\":3,\"cseq\":4,\"cseq\":8}", &conv, &cseq));
    assert_int_equal(cseq, 4);
    /* The first cseq is not a number: the object has none, a later one does not count. */
    assert_false(
        position_of("{\"msgid\":5,\"id\":7,\"toid\":3,\"cseq\":\"4\",\"cseq\":8}", &conv, &cseq));
}

static void test_not_a_chat_with_cseq(void **state)
{
    (void)state;
    int64_t conv, cseq;
    static const char *const refused[] = {
        "{\"msgid\":5,\"id\":7,\"toid\":3}",                        /* no cseq */
        "{\"msgid\":5,\"id\":7,\"toid\":3,\"cseq\":0}",             /* cseq 0 */
        "{\"msgid\":5,\"id\":7,\"toid\":3,\"cseq\":-2}",            /* not unsigned */
        "{\"id\":7,\"toid\":3,\"cseq\":2}",                         /* no msgid */
        "{\"msgid\":6,\"id\":7,\"toid\":3,\"cseq\":2}",             /* not a chat */
        "{\"msgid\":5,\"toid\":3,\"cseq\":2}",                      /* no sender */
        "{\"msgid\":5,\"id\":7,\"toid\":0,\"cseq\":2}",             /* id 0 */
        "{\"msgid\":5,\"id\":7,\"toid\":2147483648,\"cseq\":2}",    /* over int32 */
        "{\"msgid\":9,\"id\":7,\"groupid\":4294967296,\"cseq\":2}", /* over int32 */
        "{\"msgid\":9,\"id\":7,\"toid\":3,\"cseq\":2}",             /* group without id */
        "{\"msgid\" :5,\"id\":7,\"toid\":3,\"cseq\":2}",            /* not "name": */
        "{\"msgid\":5,\"id\":7,\"toid\":3,\"cseq\":",               /* cut */
        "{\"msgid\":5,\"id\":7,\"toid\":3,\"cs",                    /* cut in a name */
        "",
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        assert_false(position_of(refused[i], &conv, &cseq));
    }
    /* Bytes after n are not read: the same chat cut before its cseq has none. */
    const char *s = "{\"msgid\":5,\"id\":7,\"toid\":3,\"cseq\":2}";
    assert_false(delivered_position(s, strlen(s) - 3, &conv, &cseq));
    assert_true(delivered_position(s, strlen(s) - 1, &conv, &cseq));
    assert_int_equal(cseq, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_to_one_chat),
        cmocka_unit_test(test_group_chat),
        cmocka_unit_test(test_names_inside_strings_are_not_members),
        cmocka_unit_test(test_values_ending_in_a_comma_or_a_brace),
        cmocka_unit_test(test_escapes_literals_and_nested_values),
        cmocka_unit_test(test_first_member_of_a_name_counts),
        cmocka_unit_test(test_not_a_chat_with_cseq),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
