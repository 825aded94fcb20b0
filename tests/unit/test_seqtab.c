/*
 * test_seqtab.c - the shared-memory cseq sequencer: assignment order, cold
 * entries and seeding, commits and eviction under pressure, a stale seed
 * after an eviction, forget, the stored marks of the log off, several
 * forked processes assigning on the same conversations (no duplicate, no
 * gap), and a child SIGKILLed while it holds the mutex.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "server/seqtab.h"
#include "store/store.h"

#define PROCS          4
#define CONVS          3
#define PER_PROC_CONV  500
#define PRESSURE_CAP   8
#define PRESSURE_CONVS 200

static void test_cold_then_seeded_order(void **state)
{
    (void)state;
    struct seqtab *t = seqtab_create(100);
    assert_non_null(t);
    int64_t conv = store_conv_pair(3, 7);
    assert_int_equal(seqtab_next(t, conv), SEQ_COLD);
    assert_int_equal(seqtab_seed(t, conv, 41), 0);
    assert_int_equal(seqtab_next(t, conv), 42);
    assert_int_equal(seqtab_next(t, conv), 43);
    /* A seed after the entry is warm changes nothing. */
    assert_int_equal(seqtab_seed(t, conv, 5), 0);
    assert_int_equal(seqtab_next(t, conv), 44);
    /* Another conversation is independent, a group too. */
    assert_int_equal(seqtab_next(t, store_conv_group(9)), SEQ_COLD);
    assert_int_equal(seqtab_seed(t, store_conv_group(9), 0), 0);
    assert_int_equal(seqtab_next(t, store_conv_group(9)), 1);
    assert_int_equal(seqtab_next(t, conv), 45);
    assert_int_equal(seqtab_count(t), 2);
    seqtab_destroy(t);
}

static void test_forget(void **state)
{
    (void)state;
    struct seqtab *t = seqtab_create(16);
    int64_t g = store_conv_group(4);
    assert_int_equal(seqtab_seed(t, g, 10), 0);
    assert_int_equal(seqtab_next(t, g), 11);
    seqtab_forget(t, g);
    assert_int_equal(seqtab_count(t), 0);
    assert_int_equal(seqtab_next(t, g), SEQ_COLD);
    assert_int_equal(seqtab_seed(t, g, 0), 0); /* the group's log went with it */
    assert_int_equal(seqtab_next(t, g), 1);
    seqtab_forget(t, store_conv_group(5)); /* absent: nothing happens */
    assert_int_equal(seqtab_count(t), 1);
    seqtab_destroy(t);
}

/*
 * The log off: which cseqs may be in the log.  Seeded ones may; one handed
 * out after the last stored one may not (until stored); an entry not in the
 * table may (unknown), and survives the hole shifts of a deletion.
 */
static void test_stored_marks(void **state)
{
    (void)state;
    struct seqtab *t = seqtab_create(16);
    int64_t conv = store_conv_pair(2, 9), other = store_conv_group(3);
    assert_true(seqtab_maybe_stored(t, conv, 1)); /* not in the table: unknown */
    assert_int_equal(seqtab_seed(t, conv, 4), 0);
    assert_true(seqtab_maybe_stored(t, conv, 4)); /* up to the store's last */
    assert_int_equal(seqtab_next(t, conv), 5);
    assert_int_equal(seqtab_next(t, conv), 6);
    assert_false(seqtab_maybe_stored(t, conv, 5)); /* written live only */
    assert_false(seqtab_maybe_stored(t, conv, 6));
    seqtab_stored(t, conv, 6);
    assert_true(seqtab_maybe_stored(t, conv, 6));
    assert_true(seqtab_maybe_stored(t, conv, 5)); /* at or before a stored one: may be */
    seqtab_stored(t, conv, 2);                    /* never lowered */
    assert_true(seqtab_maybe_stored(t, conv, 6));
    assert_int_equal(seqtab_next(t, conv), 7);
    assert_false(seqtab_maybe_stored(t, conv, 7));
    /* Still so after another entry's deletion (which may shift this one). */
    assert_int_equal(seqtab_seed(t, other, 0), 0);
    seqtab_forget(t, other);
    assert_false(seqtab_maybe_stored(t, conv, 7));
    assert_true(seqtab_maybe_stored(t, conv, 6));
    seqtab_destroy(t);
}

/* Many conversations through a small table: only fully committed ones go. */
static void test_eviction_under_pressure(void **state)
{
    (void)state;
    struct seqtab *t = seqtab_create(PRESSURE_CAP);
    assert_non_null(t);
    /* Fill the table with conversations that have a cseq in flight. */
    for (int32_t g = 1; g <= PRESSURE_CAP; g++) {
        assert_int_equal(seqtab_seed(t, store_conv_group(g), 0), 0);
        assert_int_equal(seqtab_next(t, store_conv_group(g)), 1);
    }
    assert_int_equal(seqtab_count(t), PRESSURE_CAP);
    /* Nothing is evictable: a new one is refused, the others are intact. */
    assert_int_equal(seqtab_next(t, store_conv_group(1000)), SEQ_FULL);
    assert_int_equal(seqtab_seed(t, store_conv_group(1000), 0), -1);
    /* Commit one: now it can make room, and it is the one that goes. */
    seqtab_committed(t, store_conv_group(3), 1);
    assert_int_equal(seqtab_seed(t, store_conv_group(1000), 7), 0);
    assert_int_equal(seqtab_next(t, store_conv_group(1000)), 8);
    assert_int_equal(seqtab_next(t, store_conv_group(3)), SEQ_FULL);
    for (int32_t g = 1; g <= PRESSURE_CAP; g++)
        if (g != 3)
            assert_int_equal(seqtab_next(t, store_conv_group(g)), 2);

    /* Churn: many conversations, each committed as it goes; a store stands in. */
    int64_t stored[PRESSURE_CONVS + 1] = { 0 };
    for (int32_t g = 1; g <= PRESSURE_CAP; g++)
        seqtab_committed(t, store_conv_group(g), 2);
    seqtab_committed(t, store_conv_group(1000), 8);
    stored[3] = 1;
    for (int round = 0; round < 5; round++) {
        for (int32_t g = 1; g <= PRESSURE_CONVS; g++) {
            int64_t conv = store_conv_group(2000 + g);
            int64_t c = seqtab_next(t, conv);
            if (c == SEQ_COLD) {
                assert_int_equal(seqtab_seed(t, conv, stored[g]), 0);
                c = seqtab_next(t, conv);
            }
            assert_int_equal(c, stored[g] + 1);
            stored[g] = c;
            seqtab_committed(t, conv, c);
            assert_true(seqtab_count(t) <= PRESSURE_CAP);
        }
    }
    seqtab_destroy(t);
}

/*
 * A worker found conv cold and read the store (last 5); before it seeds,
 * another seeded, assigned 6, committed it and the entry was evicted.  The
 * stale seed must not hand out 6 again.
 */
static void test_stale_seed_after_eviction(void **state)
{
    (void)state;
    struct seqtab *t = seqtab_create(1); /* one entry: any other seed evicts conv */
    int64_t conv = store_conv_pair(2, 3), other = store_conv_group(1);
    assert_int_equal(seqtab_next(t, conv), SEQ_COLD); /* worker A reads the store: 5 */
    assert_int_equal(seqtab_seed(t, conv, 5), 0);     /* worker B was quicker */
    assert_int_equal(seqtab_next(t, conv), 6);
    seqtab_committed(t, conv, 6);
    assert_int_equal(seqtab_seed(t, other, 0), 0); /* pressure evicts conv */
    assert_int_equal(seqtab_count(t), 1);
    assert_int_equal(seqtab_next(t, conv), SEQ_COLD);
    assert_int_equal(seqtab_seed(t, conv, 5), 0); /* A's stale read */
    assert_int_equal(seqtab_next(t, conv), 7);
    /* A fresher read than the ghost wins. */
    seqtab_committed(t, conv, 7);
    assert_int_equal(seqtab_seed(t, other, 0), 0);
    assert_int_equal(seqtab_next(t, conv), SEQ_COLD);
    assert_int_equal(seqtab_seed(t, conv, 20), 0);
    assert_int_equal(seqtab_next(t, conv), 21);
    /* Forgotten (its log deleted): the ghosts go too, it starts again. */
    seqtab_forget(t, conv);
    assert_int_equal(seqtab_seed(t, conv, 0), 0);
    assert_int_equal(seqtab_next(t, conv), 1);
    seqtab_destroy(t);
}

/* Collect every cseq PROCS processes got for CONVS conversations: 1..N each, once. */
static void test_forked_assigners(void **state)
{
    (void)state;
    struct seqtab *t = seqtab_create(64);
    for (int c = 0; c < CONVS; c++)
        assert_int_equal(seqtab_seed(t, store_conv_pair(1, 2 + c), 0), 0);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0) {
            close(fds[0]);
            for (int i = 0; i < PER_PROC_CONV * CONVS; i++) {
                int c = (i + p) % CONVS;
                int64_t rec[2] = { c, seqtab_next(t, store_conv_pair(1, 2 + c)) };
                if (write(fds[1], rec, sizeof rec) != (ssize_t)sizeof rec)
                    _exit(2);
            }
            _exit(0);
        }
    }
    close(fds[1]);
    enum { TOTAL = PROCS * PER_PROC_CONV };
    static unsigned char seen[CONVS][TOTAL + 1];
    memset(seen, 0, sizeof seen);
    int64_t rec[2];
    size_t got = 0;
    while (read(fds[0], rec, sizeof rec) == (ssize_t)sizeof rec) {
        assert_true(rec[0] >= 0 && rec[0] < CONVS);
        assert_true(rec[1] >= 1 && rec[1] <= TOTAL);
        assert_int_equal(seen[rec[0]][rec[1]], 0); /* no duplicate */
        seen[rec[0]][rec[1]] = 1;
        got++;
    }
    close(fds[0]);
    for (int p = 0; p < PROCS; p++) {
        int status;
        assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    assert_int_equal(got, (size_t)PROCS * PER_PROC_CONV * CONVS);
    for (int c = 0; c < CONVS; c++) {
        for (int s = 1; s <= TOTAL; s++)
            assert_int_equal(seen[c][s], 1); /* no gap */
        assert_int_equal(seqtab_next(t, store_conv_pair(1, 2 + c)), TOTAL + 1);
    }
    seqtab_destroy(t);
}

/* A worker SIGKILLed while it holds the mutex must not wedge or corrupt the table. */
static void test_holder_killed_with_lock(void **state)
{
    (void)state;
    struct seqtab *t = seqtab_create(32);
    int64_t a = store_conv_pair(5, 6), b = store_conv_group(8);
    assert_int_equal(seqtab_seed(t, a, 100), 0);
    assert_int_equal(seqtab_seed(t, b, 0), 0);
    assert_int_equal(seqtab_next(t, a), 101);
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* No public call holds the lock across a pause, so take it directly:
           it is the first member of struct seqtab (seqtab.c). */
        pthread_mutex_lock((pthread_mutex_t *)(void *)t);
        char c = 1;
        if (write(ready[1], &c, 1) != 1)
            _exit(2);
        pause();
        _exit(0);
    }
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1);
    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    /* The next locker recovers and every entry is intact. */
    assert_int_equal(seqtab_next(t, a), 102);
    assert_int_equal(seqtab_next(t, b), 1);
    assert_int_equal(seqtab_count(t), 2);
    close(ready[0]);
    close(ready[1]);
    seqtab_destroy(t);
}

/* Children SIGKILLed at random points of forget/seed churn leave a usable table. */
static void test_killed_mid_churn(void **state)
{
    (void)state;
    struct seqtab *t = seqtab_create(PRESSURE_CAP);
    int64_t keep = store_conv_pair(1, 99);
    assert_int_equal(seqtab_seed(t, keep, 500), 0);
    assert_int_equal(seqtab_next(t, keep), 501); /* in flight: never evicted */
    for (int round = 0; round < 20; round++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            for (int32_t g = 1;; g = g % 1000 + 1) {
                seqtab_seed(t, store_conv_group(g), g);
                seqtab_forget(t, store_conv_group(g % 7 + 1));
            }
        }
        usleep(2000 + (useconds_t)(round * 300));
        kill(pid, SIGKILL);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(seqtab_count(t) <= PRESSURE_CAP);
        int64_t g = store_conv_group(5000 + round);
        int64_t n = seqtab_next(t, g);
        assert_true(n == SEQ_COLD);
        assert_int_equal(seqtab_seed(t, g, 0), 0);
        assert_int_equal(seqtab_next(t, g), 1);
        seqtab_committed(t, g, 1);
    }
    assert_int_equal(seqtab_next(t, keep), 502);
    seqtab_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cold_then_seeded_order),
        cmocka_unit_test(test_forget),
        cmocka_unit_test(test_stored_marks),
        cmocka_unit_test(test_eviction_under_pressure),
        cmocka_unit_test(test_stale_seed_after_eviction),
        cmocka_unit_test(test_forked_assigners),
        cmocka_unit_test(test_holder_killed_with_lock),
        cmocka_unit_test(test_killed_mid_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
