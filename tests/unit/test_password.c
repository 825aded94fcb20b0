/*
 * test_password.c - unit tests for password hashing and verification.
 *
 * yescrypt hash and verify, a wrong password, salts differ, seed plaintext
 * values verify and need an upgrade, locked ("*") and empty values never
 * verify, bad costs and short output buffers are refused.  The login check
 * (issue 14, item 5): a hash at another cost is replaced at login, and a
 * failure costs one hash of the current cost whatever the reason.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "common/password.h"

#define TEST_COST    1 /* the cheapest yescrypt cost keeps the test fast */
#define TIMING_COST  5 /* the default: a few ms, well above the noise */
#define TIMING_TRIES 5
#define TIMING_RATIO 0.6 /* "the same" cost: within this factor either way */

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

/* A hash of another cost (or method) is replaced at login; the current one is not. */
static void test_rehash_at_login(void **state)
{
    char old[PASSWORD_HASH_MAX], fresh[PASSWORD_HASH_MAX], out[PASSWORD_HASH_MAX];
    bool rehashed;

    assert_int_equal(password_hash("pw", TEST_COST, old, sizeof(old)), 0);
    assert_false(password_needs_rehash(old, TEST_COST));
    assert_true(password_needs_rehash(old, TEST_COST + 1));
    assert_false(password_needs_rehash("123456", TEST_COST));
    assert_false(password_needs_rehash("*LK*", TEST_COST));
    assert_true(password_needs_rehash("$6$salt$abcdef", TEST_COST));

    assert_true(password_check("pw", old, TEST_COST + 1, out, sizeof(out), &rehashed));
    assert_true(rehashed);
    assert_false(password_needs_rehash(out, TEST_COST + 1));
    assert_true(password_verify("pw", out));
    assert_false(password_check("px", old, TEST_COST + 1, out, sizeof(out), &rehashed));
    assert_false(rehashed);
    assert_int_equal(password_hash("pw", TEST_COST + 1, fresh, sizeof(fresh)), 0);
    assert_true(password_check("pw", fresh, TEST_COST + 1, out, sizeof(out), &rehashed));
    assert_false(rehashed);

    /* seed plaintext: replaced at the first login, with a hash of the cost asked */
    assert_true(password_check("123456", "123456", TEST_COST + 1, out, sizeof(out), &rehashed));
    assert_true(rehashed);
    assert_false(password_needs_rehash(out, TEST_COST + 1));
    assert_true(password_verify("123456", out));
    assert_false(password_check("12345", "123456", TEST_COST, out, sizeof(out), &rehashed));
    assert_false(rehashed);
    /* no such user, locked: never */
    assert_false(password_check("pw", NULL, TEST_COST, out, sizeof(out), &rehashed));
    assert_false(password_check("pw", "", TEST_COST, out, sizeof(out), &rehashed));
    assert_false(password_check("*", "*", TEST_COST, out, sizeof(out), &rehashed));
    assert_false(rehashed);
}

static double seconds_of_check(const char *plain, const char *stored, int cost)
{
    char out[PASSWORD_HASH_MAX];
    struct timespec a, b;
    bool rehashed;
    double best = 1e9;

    for (int i = 0; i < TIMING_TRIES; i++) {
        clock_gettime(CLOCK_MONOTONIC, &a);
        password_check(plain, stored, cost, out, sizeof(out), &rehashed);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
        best = s < best ? s : best;
    }
    return best;
}

/*
 * A failed check costs one hash of the current cost whatever the reason:
 * no such user, a wrong seed plaintext, a wrong password (fastest of a few
 * tries each, so a loaded machine only makes it slower).
 */
static void test_failure_costs_the_same(void **state)
{
    char h[PASSWORD_HASH_MAX];

    assert_int_equal(password_hash("right", TIMING_COST, h, sizeof(h)), 0);
    double real = seconds_of_check("wrong", h, TIMING_COST);
    double unknown = seconds_of_check("wrong", NULL, TIMING_COST);
    double seed = seconds_of_check("wrong", "right", TIMING_COST);
    print_message("password: failed check at cost %d: %.1f ms (hash), %.1f ms (no such user), "
                  "%.1f ms (seed plaintext)\n",
                  TIMING_COST, real * 1e3, unknown * 1e3, seed * 1e3);
    assert_true(unknown >= real * TIMING_RATIO);
    assert_true(seed >= real * TIMING_RATIO);
    assert_true(real >= unknown * TIMING_RATIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_and_verify),        cmocka_unit_test(test_utf8_password),
        cmocka_unit_test(test_seed_plaintext),         cmocka_unit_test(test_unusable_values),
        cmocka_unit_test(test_bad_arguments),          cmocka_unit_test(test_rehash_at_login),
        cmocka_unit_test(test_failure_costs_the_same),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
