/*
 * test_password.c - unit tests for password hashing and verification.
 *
 * yescrypt hash and verify, a wrong password, salts differ, seed plaintext
 * values verify and need an upgrade, locked ("*") and empty values never
 * verify, bad costs and short output buffers are refused.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "common/password.h"

#define TEST_COST 1 /* the cheapest yescrypt cost keeps the test fast */

static void test_hash_and_verify(void **state)
{
    char h1[PASSWORD_HASH_MAX], h2[PASSWORD_HASH_MAX];

    assert_int_equal(password_hash("s3cret pass", TEST_COST, h1, sizeof(h1)), 0);
    assert_memory_equal(h1, "$y$", 3);
    assert_true(password_verify("s3cret pass", h1));
    assert_false(password_verify("s3cret pasS", h1));
    assert_false(password_verify("", h1));
    assert_false(password_verify("s3cret pass ", h1));
    assert_false(password_needs_upgrade(h1));

    /* A fresh salt every time. */
    assert_int_equal(password_hash("s3cret pass", TEST_COST, h2, sizeof(h2)), 0);
    assert_string_not_equal(h1, h2);
    assert_true(password_verify("s3cret pass", h2));
}

static void test_utf8_password(void **state)
{
    char h[PASSWORD_HASH_MAX];

    assert_int_equal(password_hash("\xe5\xaf\x86\xe7\xa0\x81", TEST_COST, h, sizeof(h)), 0);
    assert_true(password_verify("\xe5\xaf\x86\xe7\xa0\x81", h));
    assert_false(password_verify("\xe5\xaf\x86", h));
}

static void test_seed_plaintext(void **state)
{
    assert_true(password_needs_upgrade("123456"));
    assert_true(password_verify("123456", "123456"));
    assert_false(password_verify("12345", "123456"));
    assert_false(password_verify("1234567", "123456"));
    assert_false(password_verify("123457", "123456"));
    assert_false(password_verify("", "123456"));
}

static void test_unusable_values(void **state)
{
    assert_false(password_verify("", ""));
    assert_false(password_verify("x", ""));
    assert_false(password_needs_upgrade(""));
    assert_false(password_verify("*", "*"));
    assert_false(password_verify("*LK*", "*LK*"));
    assert_false(password_needs_upgrade("*LK*"));
    /* A '$' value that is no valid hash fails instead of matching. */
    assert_false(password_verify("$garbage", "$garbage"));
    assert_false(password_verify("x", "$y$"));
}

static void test_bad_arguments(void **state)
{
    char h[PASSWORD_HASH_MAX], tiny[8];

    assert_int_equal(password_hash("p", 0, h, sizeof(h)), -1);
    assert_int_equal(password_hash("p", 12, h, sizeof(h)), -1);
    assert_int_equal(password_hash("p", TEST_COST, tiny, sizeof(tiny)), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_and_verify), cmocka_unit_test(test_utf8_password),
        cmocka_unit_test(test_seed_plaintext),  cmocka_unit_test(test_unusable_values),
        cmocka_unit_test(test_bad_arguments),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
