/*
 * test_sessreg.c - unit tests for the session registry's text
 * (server/sessreg.c): the EVAL argument vector of a claim and of a
 * heartbeat, its EVALSHA form, the NOSCRIPT answer, and the reading of a
 * field and a value, including bad ones.
 * The script itself runs in Redis: tests/integration/test_xsessions.c.
 */
#include <setjmp.h>
#include <sha1.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "server/sessreg.h"

#define FIXED_ARGS 13 /* EVAL(SHA), script (or SHA1), numkeys, key, ARGV 1..9 */

static void check_arg(const struct sessreg_cmd *cmd, int i, const char *want)
{
    assert_true(i < cmd->argc);
    assert_int_equal(cmd->argvlen[i], strlen(want));
    assert_memory_equal(cmd->argv[i], want, strlen(want));
}

static void test_claim_arguments(void **state)
{
    (void)state;
    struct sessreg_local local[2] = { { .gen = 7, .since_ms = 1000, .device = "phone" },
                                      { .gen = 9, .since_ms = -1, .device = "laptop" } };
    struct sessreg_claim c = { .uid = 42,
                               .node = 3,
                               .mode = SESSREG_MULTI,
                               .gen = 9,
                               .device = "laptop",
                               .named = true,
                               .max = 5,
                               .now_ms = 5000,
                               .ttl_ms = 30000 };
    struct sessreg_cmd cmd;
    assert_int_equal(sessreg_build(&cmd, &c, local, 2), 0);
    assert_int_equal(cmd.argc, FIXED_ARGS + 6);
    check_arg(&cmd, 0, "EVAL");
    check_arg(&cmd, 2, "1");
    check_arg(&cmd, 3, "qchat:s:42");
    check_arg(&cmd, 4, "m");
    check_arg(&cmd, 5, "3:");
    check_arg(&cmd, 6, "3:9");
    check_arg(&cmd, 7, "laptop");
    check_arg(&cmd, 8, "1");
    check_arg(&cmd, 9, "5");
    check_arg(&cmd, 10, "5000");
    check_arg(&cmd, 11, "35000");
    check_arg(&cmd, 12, "30000");
    check_arg(&cmd, 13, "3:7");
    check_arg(&cmd, 14, "1000");
    check_arg(&cmd, 15, "phone");
    check_arg(&cmd, 16, "3:9");
    check_arg(&cmd, 17, "-"); /* a heartbeat's session whose claim is out */
    check_arg(&cmd, 18, "laptop");
    sessreg_cmd_free(&cmd);
    assert_null(cmd.argv);

    /* A heartbeat: no new session, no device. */
    c.mode = SESSREG_SYNC;
    c.gen = 0;
    c.device = NULL;
    assert_int_equal(sessreg_build(&cmd, &c, NULL, 0), 0);
    assert_int_equal(cmd.argc, FIXED_ARGS);
    check_arg(&cmd, 4, "s");
    check_arg(&cmd, 6, "");
    check_arg(&cmd, 7, "");
    sessreg_cmd_free(&cmd);
}

/* EVALSHA names the very script EVAL sends, with the same arguments after it. */
static void test_by_sha(void **state)
{
    (void)state;
    struct sessreg_local local[1] = { { .gen = 7, .since_ms = 1000, .device = "phone" } };
    struct sessreg_claim c = { .uid = 42,
                               .node = 3,
                               .mode = SESSREG_REFUSE,
                               .gen = 7,
                               .device = "phone",
                               .named = true,
                               .max = 1,
                               .now_ms = 5000,
                               .ttl_ms = 30000 };
    struct sessreg_cmd text, sha;
    assert_int_equal(sessreg_build(&text, &c, local, 1), 0);
    c.by_sha = true;
    assert_int_equal(sessreg_build(&sha, &c, local, 1), 0);
    char want[SHA1_DIGEST_STRING_LENGTH];
    SHA1Data((const uint8_t *)text.argv[1], text.argvlen[1], want);
    check_arg(&text, 0, "EVAL");
    check_arg(&sha, 0, "EVALSHA");
    check_arg(&sha, 1, want);
    assert_int_equal(sha.argc, text.argc);
    for (int i = 2; i < text.argc; i++)
        check_arg(&sha, i, text.argv[i]);
    sessreg_cmd_free(&text);
    sessreg_cmd_free(&sha);

    const char *noscript = "NOSCRIPT No matching script. Please use EVAL.";
    assert_true(sessreg_noscript(noscript, strlen(noscript)));
    assert_false(sessreg_noscript("NOSCRIP", 7));
    assert_false(sessreg_noscript("ERR wrong number of arguments", 29));
}

static void test_fields(void **state)
{
    (void)state;
    int node;
    uint32_t gen;
    assert_true(sessreg_parse_field("2:17", 4, &node, &gen));
    assert_int_equal(node, 2);
    assert_int_equal(gen, 17);
    const char *bad[] = { "", "2", "2:", ":5", "2:0", "a:5", "2:5x", "2:99999999999", "-1:5" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(sessreg_parse_field(bad[i], strlen(bad[i]), &node, &gen));
}

static void test_values(void **state)
{
    (void)state;
    int64_t deadline, since;
    const char *dev;
    size_t len;
    const char *v = "1765000030000:1765000000123:my:phone";
    assert_true(sessreg_parse_value(v, strlen(v), &deadline, &since, &dev, &len));
    assert_int_equal(deadline, 1765000030000LL);
    assert_int_equal(since, 1765000000123LL);
    assert_int_equal(len, strlen("my:phone")); /* the device is the rest, colons and all */
    assert_memory_equal(dev, "my:phone", len);
    const char *bad[] = { "", "1:", "1:2", "x:2:d", "1:x:d", ":2:d" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(sessreg_parse_value(bad[i], strlen(bad[i]), &deadline, &since, &dev, &len));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_claim_arguments),
        cmocka_unit_test(test_by_sha),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_values),
    };
    return cmocka_run_group_tests_name("sessreg", tests, NULL, NULL);
}
