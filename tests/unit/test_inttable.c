/*
 * test_inttable.c - unit tests for the one integer hash and open-addressing
 * table (common/inttable.c).
 *
 * Covers: put/get/overwrite/delete; growth keeps every entry; deletion by
 * backward shift keeps every other key findable, checked against a plain
 * array model over a long random sequence of operations on keys chosen to
 * collide; the hash spreads sequential ids over the buckets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/inttable.h"

#define MODEL_KEYS 512    /* keys 1..MODEL_KEYS: many share a home slot */
#define OPS        200000 /* random operations checked against the model */
#define MANY       100000 /* entries to force several growths */
#define BUCKETS    1024
#define SPREAD_MAX 3 /* no bucket above this many times its fair share */

static void test_put_get_delete(void **state)
{
    (void)state;
    struct inttable *t = inttable_new();
    assert_non_null(t);
    uint64_t v = 0;
    assert_false(inttable_get(t, 7, &v));
    assert_int_equal(inttable_put(t, 7, 70), 0);
    assert_true(inttable_get(t, 7, &v));
    assert_int_equal(v, 70);
    assert_int_equal(inttable_put(t, 7, 71), 0); /* overwrite, not a second entry */
    assert_int_equal(inttable_count(t), 1);
    assert_true(inttable_get(t, 7, &v));
    assert_int_equal(v, 71);
    assert_true(inttable_del(t, 7));
    assert_false(inttable_del(t, 7));
    assert_false(inttable_get(t, 7, NULL));
    assert_int_equal(inttable_count(t), 0);
    assert_false(inttable_get(t, 0, NULL)); /* 0 is never a key */
    inttable_free(t);
}

static void test_growth_keeps_everything(void **state)
{
    (void)state;
    struct inttable *t = inttable_new();
    assert_non_null(t);
    for (uint32_t k = 1; k <= MANY; k++)
        assert_int_equal(inttable_put(t, k, (uint64_t)k * 3), 0);
    assert_int_equal(inttable_count(t), MANY);
    for (uint32_t k = 1; k <= MANY; k++) {
        uint64_t v;
        assert_true(inttable_get(t, k, &v));
        assert_int_equal(v, (uint64_t)k * 3);
    }
    inttable_free(t);
}

static void count_entry(void *arg, uint32_t key, uint64_t value)
{
    (void)key;
    (void)value;
    (*(uint32_t *)arg)++;
}

static void test_random_against_model(void **state)
{
    (void)state;
    struct inttable *t = inttable_new();
    assert_non_null(t);
    static uint64_t model[MODEL_KEYS + 1];
    static bool present[MODEL_KEYS + 1];
    memset(present, 0, sizeof present);
    srandom(12345);
    for (int i = 0; i < OPS; i++) {
        uint32_t k = 1 + (uint32_t)random() % MODEL_KEYS;
        switch (random() % 3) {
        case 0:
            model[k] = (uint64_t)random();
            present[k] = true;
            assert_int_equal(inttable_put(t, k, model[k]), 0);
            break;
        case 1:
            assert_int_equal(inttable_del(t, k), present[k]);
            present[k] = false;
            break;
        default: {
            uint64_t v;
            bool got = inttable_get(t, k, &v);
            assert_int_equal(got, present[k]);
            if (got)
                assert_int_equal(v, model[k]);
        }
        }
    }
    uint32_t n = 0, want = 0, walked = 0;
    for (uint32_t k = 1; k <= MODEL_KEYS; k++) {
        want += present[k];
        n += inttable_get(t, k, NULL);
    }
    inttable_foreach(t, count_entry, &walked);
    assert_int_equal(n, want);
    assert_int_equal(walked, want);
    assert_int_equal(inttable_count(t), want);
    inttable_free(t);
}

static void test_hash_spreads_sequential_ids(void **state)
{
    (void)state;
    static uint32_t buckets[BUCKETS];
    memset(buckets, 0, sizeof buckets);
    uint32_t n = BUCKETS * 16;
    for (uint32_t id = 1; id <= n; id++)
        buckets[int_hash(id) % BUCKETS]++;
    for (uint32_t b = 0; b < BUCKETS; b++)
        assert_true(buckets[b] <= (n / BUCKETS) * SPREAD_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_delete),
        cmocka_unit_test(test_growth_keeps_everything),
        cmocka_unit_test(test_random_against_model),
        cmocka_unit_test(test_hash_spreads_sequential_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
