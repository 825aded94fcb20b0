/*
 * test_online.c - the shared-memory online table: insert, takeover, lookup,
 * remove by generation, clearing a dead worker's rows, capacity, churn, and
 * a child SIGKILLed while it holds the writers' lock, and a master that
 * keeps working after a worker scribbled over the shared counters and a row
 * (issue 14 item 7: it used to crash, trusting a mask from shared memory).
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include <time.h>

#include "server/online.h"

static struct online_loc loc(uint32_t worker, uint32_t slot, uint32_t gen)
{
    struct online_loc l = { worker, slot, gen };
    return l;
}

static void test_insert_lookup_remove(void **state)
{
    (void)state;
    struct online_table *t = online_create(100);
    assert_non_null(t);
    struct online_loc l = loc(2, 77, online_next_gen(t)), out, prev;
    assert_int_equal(online_insert(t, 42, &l, &prev), 0);
    assert_int_equal(online_lookup(t, 42, &out), 1);
    assert_int_equal(out.worker, 2);
    assert_int_equal(out.slot, 77);
    assert_int_equal(out.gen, l.gen);
    assert_int_equal(online_lookup(t, 43, &out), 0);
    assert_int_equal(online_count(t), 1);
    /* A remove with a stale generation leaves the newer session alone. */
    assert_int_equal(online_remove(t, 42, l.gen + 1), 0);
    assert_int_equal(online_remove(t, 42, l.gen), 1);
    assert_int_equal(online_lookup(t, 42, &out), 0);
    assert_int_equal(online_count(t), 0);
    online_destroy(t);
}

static void test_takeover_returns_previous(void **state)
{
    (void)state;
    struct online_table *t = online_create(10);
    struct online_loc a = loc(0, 1, online_next_gen(t)), b = loc(3, 9, online_next_gen(t));
    struct online_loc prev, out;
    assert_int_equal(online_insert(t, 7, &a, &prev), 0);
    assert_int_equal(online_insert(t, 7, &b, &prev), 1);
    assert_int_equal(prev.worker, 0);
    assert_int_equal(prev.slot, 1);
    assert_int_equal(prev.gen, a.gen);
    assert_int_equal(online_lookup(t, 7, &out), 1);
    assert_int_equal(out.worker, 3);
    assert_int_equal(online_count(t), 1);
    /* The old session ending must not remove the new one. */
    assert_int_equal(online_remove(t, 7, a.gen), 0);
    assert_int_equal(online_lookup(t, 7, &out), 1);
    online_destroy(t);
}

static void test_capacity_is_enforced(void **state)
{
    (void)state;
    struct online_table *t = online_create(16);
    struct online_loc prev;
    for (int32_t uid = 1; uid <= 16; uid++) {
        struct online_loc l = loc(0, (uint32_t)uid, online_next_gen(t));
        assert_int_equal(online_insert(t, uid, &l, &prev), 0);
    }
    struct online_loc l = loc(0, 99, online_next_gen(t));
    assert_int_equal(online_insert(t, 17, &l, &prev), -1);
    /* Re-login of someone already online still works when full. */
    assert_int_equal(online_insert(t, 5, &l, &prev), 1);
    online_destroy(t);
}

static void test_clear_worker(void **state)
{
    (void)state;
    struct online_table *t = online_create(1000);
    struct online_loc prev, out;
    for (int32_t uid = 1; uid <= 600; uid++) {
        struct online_loc l = loc((uint32_t)uid % 4, (uint32_t)uid, online_next_gen(t));
        assert_int_equal(online_insert(t, uid, &l, &prev), 0);
    }
    assert_int_equal(online_clear_worker(t, 1), 150);
    assert_int_equal(online_count(t), 450);
    for (int32_t uid = 1; uid <= 600; uid++)
        assert_int_equal(online_lookup(t, uid, &out), uid % 4 != 1);
    online_destroy(t);
}

/* Many logins and logouts: tombstones must not break lookups or fill the table. */
static void test_churn(void **state)
{
    (void)state;
    struct online_table *t = online_create(64);
    struct online_loc prev, out;
    for (int round = 0; round < 20000; round++) {
        int32_t uid = (int32_t)(round * 7919 % 5000) + 1;
        int k = round % 64;
        struct online_loc l = loc(0, (uint32_t)k, online_next_gen(t));
        int rc = online_insert(t, uid, &l, &prev);
        assert_true(rc == 0 || rc == 1);
        assert_int_equal(online_lookup(t, uid, &out), 1);
        assert_int_equal(online_remove(t, uid, l.gen), 1);
        assert_int_equal(online_lookup(t, uid, &out), 0);
    }
    assert_int_equal(online_count(t), 0);
    online_destroy(t);
}

/* A worker SIGKILLed while it holds the writers' lock must not wedge the table. */
static void test_holder_killed_with_lock(void **state)
{
    (void)state;
    struct online_table *t = online_create(100);
    struct online_loc prev, out, l = loc(1, 5, online_next_gen(t));
    assert_int_equal(online_insert(t, 11, &l, &prev), 0);
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        online_lock(t);
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
    /* The next writer recovers the lock and the table is intact. */
    struct online_loc m = loc(2, 6, online_next_gen(t));
    assert_int_equal(online_insert(t, 12, &m, &prev), 0);
    assert_int_equal(online_lookup(t, 11, &out), 1);
    assert_int_equal(online_lookup(t, 12, &out), 1);
    assert_int_equal(online_clear_worker(t, 1), 1);
    assert_int_equal(online_lookup(t, 11, &out), 0);
    close(ready[0]);
    close(ready[1]);
    online_destroy(t);
}

/* Entries written by one process are seen by another (the shared mapping). */
static void test_shared_across_fork(void **state)
{
    (void)state;
    struct online_table *t = online_create(100);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct online_loc prev, l = loc(3, 33, online_next_gen(t));
        _exit(online_insert(t, 99, &l, &prev) == 0 ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    struct online_loc out;
    assert_int_equal(online_lookup(t, 99, &out), 1);
    assert_int_equal(out.slot, 33);
    assert_true(online_next_gen(t) > out.gen);
    online_destroy(t);
}

static void test_mids_are_unique_and_carry_node(void **state)
{
    (void)state;
    struct online_table *a = online_create(16), *b = online_create(16);
    online_set_node(a, 1);
    online_set_node(b, 2);
    int64_t x = online_next_mid(a), y = online_next_mid(a), z = online_next_mid(b);
    assert_true(y > x);
    assert_true(z != x && z != y);
    assert_true(z < ((int64_t)1 << 53));
    online_destroy(a);
    online_destroy(b);
}

/*
 * A restarted node (a new table, same node_id) issues mids above every mid
 * of the previous run, even when that run issued a burst just before it
 * stopped (issue 14, item 10: the old base was the start time in ms plus a
 * counter, so 1,600 mids then a restart 150 ms later reused mids).
 */
static void test_mids_unique_across_restart(void **state)
{
    (void)state;
    enum { BURST = 1600, RESTART_MS = 150, NODE = 511 };
    struct online_table *a = online_create(16);
    online_set_node(a, NODE);
    int64_t last = 0;
    for (int i = 0; i < BURST; i++) {
        int64_t m = online_next_mid(a);
        assert_true(m > last);
        assert_int_equal(m >> 44, NODE);
        assert_true(m < ((int64_t)1 << 53));
        last = m;
    }
    online_destroy(a);
    struct timespec pause = { 0, RESTART_MS * 1000000L };
    nanosleep(&pause, NULL);
    struct online_table *b = online_create(16);
    online_set_node(b, NODE);
    int64_t first = online_next_mid(b);
    assert_true(first > last);
    assert_int_equal(first >> 44, NODE);
    online_destroy(b);
}

/*
 * With server.mid_file, a burst far ahead of the clock (200,000 mids at
 * once: 12.5 s of the clock's 16 a millisecond) and an immediate restart
 * still issue no mid twice; an unreadable file is refused.
 */
static void test_mids_reserved_in_file(void **state)
{
    (void)state;
    enum { BURST = 200000, NODE = 7 };
    char dir[] = "/tmp/qchat-test-mid.XXXXXX", path[64], err[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/mid", dir);
    struct online_table *a = online_create(16);
    online_set_node(a, NODE);
    assert_int_equal(online_mid_file(a, path, err, sizeof err), 0);
    int64_t last = 0;
    for (int i = 0; i < BURST; i++) {
        int64_t m = online_next_mid(a);
        assert_true(m > last);
        last = m;
    }
    online_destroy(a);
    struct online_table *b = online_create(16);
    online_set_node(b, NODE);
    assert_int_equal(online_mid_file(b, path, err, sizeof err), 0);
    int64_t first = online_next_mid(b);
    assert_true(first > last);
    assert_int_equal(first >> 44, NODE);
    online_destroy(b);

    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("not a number\n", f);
    fclose(f);
    struct online_table *c = online_create(16);
    assert_int_equal(online_mid_file(c, path, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a number written by qchatd"));
    online_destroy(c);
    unlink(path);
    rmdir(dir);
}

#define SCRIBBLE_USERS 50
#define SCRIBBLE_BYTE  0xff

static void count_row(void *arg, int32_t uid, const struct online_loc *l)
{
    (void)uid;
    assert_true(l->worker < ONLINE_MAX_WORKERS);
    (*(int *)arg)++;
}

/* What the master does when worker 1 dies, after worker 1 corrupted the shared part. */
static int master_after_scribble(struct online_table *t)
{
    size_t cleared = online_clear_worker(t, 1);
    int rows = 0;
    online_foreach(t, count_row, &rows);
    struct online_loc out;
    if (cleared != SCRIBBLE_USERS / 2)
        return 10;
    if (rows != SCRIBBLE_USERS / 2)
        return 11;
    for (int32_t uid = 1; uid <= SCRIBBLE_USERS; uid++)
        if (online_lookup(t, uid, &out) != (uid % 2 == 0))
            return 12;
    (void)online_count(t); /* garbage, but harmless */
    return 0;
}

static void test_master_survives_a_scribbled_table(void **state)
{
    (void)state;
    struct online_table *t = online_create(SCRIBBLE_USERS * 2);
    assert_non_null(t);
    struct online_loc prev;
    for (int32_t uid = 1; uid <= SCRIBBLE_USERS; uid++) {
        struct online_loc l = loc(uid % 2 ? 1 : 0, (uint32_t)uid, online_next_gen(t));
        assert_int_equal(online_insert(t, uid, &l, &prev), 0);
    }
    pid_t worker = fork();
    assert_true(worker >= 0);
    if (worker == 0) {
        /* A broken worker: garbage over every shared counter. */
        size_t len;
        void *p = online_shared_counters(t, &len);
        memset(p, SCRIBBLE_BYTE, len);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(worker, &status, 0), worker);
    pid_t master = fork();
    assert_true(master >= 0);
    if (master == 0)
        _exit(master_after_scribble(t));
    assert_int_equal(waitpid(master, &status, 0), master);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    online_destroy(t);
}

/* ---- several sessions per user (issue 15) ---- */

static struct online_policy policy(enum online_mode mode, const char *device, uint32_t max)
{
    struct online_policy p = {
        .mode = mode, .device = online_device_hash(device), .named = device != NULL, .max = max
    };
    return p;
}

/* multi: devices add up to max; one more kicks the oldest, whatever its device. */
static void test_multi_kicks_oldest_beyond_max(void **state)
{
    (void)state;
    struct online_table *t = online_create(100);
    struct online_loc kicked[ONLINE_USER_MAX], out[ONLINE_USER_MAX];
    size_t n;
    const char *dev[] = { "phone", "laptop", "tablet" };
    struct online_loc l[4];
    for (int i = 0; i < 3; i++) {
        l[i] = loc((uint32_t)i, (uint32_t)(10 + i), online_next_gen(t));
        struct online_policy p = policy(ONLINE_MULTI, dev[i], 3);
        assert_int_equal(online_login(t, 5, &l[i], &p, kicked, &n), 0);
        assert_int_equal(n, 0);
    }
    assert_int_equal(online_sessions(t, 5, out, ONLINE_USER_MAX), 3);
    assert_int_equal(out[0].gen, l[0].gen); /* oldest first */
    assert_int_equal(out[2].gen, l[2].gen);
    assert_int_equal(online_count(t), 3);
    l[3] = loc(3, 13, online_next_gen(t));
    struct online_policy p = policy(ONLINE_MULTI, "watch", 3);
    assert_int_equal(online_login(t, 5, &l[3], &p, kicked, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(kicked[0].gen, l[0].gen);
    assert_int_equal(kicked[0].worker, 0);
    assert_int_equal(online_sessions(t, 5, out, ONLINE_USER_MAX), 3);
    assert_int_equal(out[0].gen, l[1].gen);
    assert_int_equal(out[2].gen, l[3].gen);
    assert_int_equal(online_count(t), 3);
    /* the kicked session's own removal finds nothing; another's removes only it */
    assert_int_equal(online_remove(t, 5, l[0].gen), 0);
    assert_int_equal(online_remove(t, 5, l[2].gen), 1);
    assert_int_equal(online_sessions(t, 5, out, ONLINE_USER_MAX), 2);
    online_destroy(t);
}

/* A login naming a device replaces that device's session, in every mode. */
static void test_same_device_replaced_in_every_mode(void **state)
{
    (void)state;
    enum online_mode modes[] = { ONLINE_TAKEOVER, ONLINE_REFUSE, ONLINE_MULTI };
    for (size_t m = 0; m < 3; m++) {
        struct online_table *t = online_create(100);
        struct online_loc kicked[ONLINE_USER_MAX], out[ONLINE_USER_MAX];
        size_t n;
        struct online_loc a = loc(0, 1, online_next_gen(t)), b = loc(2, 7, online_next_gen(t));
        struct online_policy p = policy(modes[m], "phone", 5);
        assert_int_equal(online_login(t, 9, &a, &p, kicked, &n), 0);
        assert_int_equal(online_login(t, 9, &b, &p, kicked, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(kicked[0].gen, a.gen);
        assert_int_equal(online_sessions(t, 9, out, ONLINE_USER_MAX), 1);
        assert_int_equal(out[0].gen, b.gen);
        assert_int_equal(online_count(t), 1);
        online_destroy(t);
    }
}

/* refuse: an unnamed login, or another device, is refused while a session exists. */
static void test_refuse(void **state)
{
    (void)state;
    struct online_table *t = online_create(100);
    struct online_loc kicked[ONLINE_USER_MAX], out[ONLINE_USER_MAX];
    size_t n;
    struct online_loc a = loc(0, 1, online_next_gen(t)), b = loc(1, 2, online_next_gen(t));
    struct online_policy unnamed = policy(ONLINE_REFUSE, NULL, 5);
    struct online_policy laptop = policy(ONLINE_REFUSE, "laptop", 5);
    assert_int_equal(online_login(t, 3, &a, &unnamed, kicked, &n), 0);
    assert_int_equal(online_login(t, 3, &b, &unnamed, kicked, &n), ONLINE_REFUSED);
    assert_int_equal(online_login(t, 3, &b, &laptop, kicked, &n), ONLINE_REFUSED);
    assert_int_equal(online_sessions(t, 3, out, ONLINE_USER_MAX), 1);
    assert_int_equal(out[0].gen, a.gen);
    assert_int_equal(online_remove(t, 3, a.gen), 1);
    assert_int_equal(online_login(t, 3, &b, &laptop, kicked, &n), 0);
    online_destroy(t);
}

/* takeover: every other session goes, named or not. */
static void test_takeover_kicks_every_session(void **state)
{
    (void)state;
    struct online_table *t = online_create(100);
    struct online_loc kicked[ONLINE_USER_MAX], out[ONLINE_USER_MAX];
    size_t n;
    struct online_loc a = loc(0, 1, online_next_gen(t)), b = loc(1, 2, online_next_gen(t)),
                      c = loc(2, 3, online_next_gen(t));
    struct online_policy pa = policy(ONLINE_MULTI, "a", 5), pb = policy(ONLINE_MULTI, "b", 5);
    struct online_policy take = policy(ONLINE_TAKEOVER, NULL, 5);
    assert_int_equal(online_login(t, 4, &a, &pa, kicked, &n), 0);
    assert_int_equal(online_login(t, 4, &b, &pb, kicked, &n), 0);
    assert_int_equal(online_login(t, 4, &c, &take, kicked, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(online_sessions(t, 4, out, ONLINE_USER_MAX), 1);
    assert_int_equal(out[0].gen, c.gen);
    assert_int_equal(online_count(t), 1);
    online_destroy(t);
}

/* Many users with several sessions each, logging in and out: chains stay findable. */
static void test_multi_churn(void **state)
{
    (void)state;
    struct online_table *t = online_create(256);
    struct online_loc kicked[ONLINE_USER_MAX], out[ONLINE_USER_MAX];
    size_t n;
    char dev[16];
    for (int round = 0; round < 20000; round++) {
        int32_t uid = (int32_t)(round * 7919 % 50) + 1;
        snprintf(dev, sizeof dev, "d%d", round % 4);
        struct online_policy p = policy(ONLINE_MULTI, dev, 3);
        struct online_loc l = loc(0, (uint32_t)(round % 64), online_next_gen(t));
        assert_int_equal(online_login(t, uid, &l, &p, kicked, &n), 0);
        size_t k = online_sessions(t, uid, out, ONLINE_USER_MAX);
        assert_true(k >= 1 && k <= 3);
        assert_int_equal(out[k - 1].gen, l.gen);
        if (round % 3 == 0)
            assert_int_equal(online_remove(t, uid, l.gen), 1);
    }
    assert_true(online_count(t) <= 150);
    online_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_lookup_remove),
        cmocka_unit_test(test_mids_unique_across_restart),
        cmocka_unit_test(test_mids_reserved_in_file),
        cmocka_unit_test(test_takeover_returns_previous),
        cmocka_unit_test(test_capacity_is_enforced),
        cmocka_unit_test(test_clear_worker),
        cmocka_unit_test(test_churn),
        cmocka_unit_test(test_holder_killed_with_lock),
        cmocka_unit_test(test_shared_across_fork),
        cmocka_unit_test(test_mids_are_unique_and_carry_node),
        cmocka_unit_test(test_master_survives_a_scribbled_table),
        cmocka_unit_test(test_multi_kicks_oldest_beyond_max),
        cmocka_unit_test(test_same_device_replaced_in_every_mode),
        cmocka_unit_test(test_refuse),
        cmocka_unit_test(test_takeover_kicks_every_session),
        cmocka_unit_test(test_multi_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
