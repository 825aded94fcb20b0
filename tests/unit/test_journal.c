/*
 * test_journal.c - the append journal: put/done/replay, records released in
 * order, wrap-around with many sizes (bodies byte-exact), a full ring, rings
 * of different workers kept apart, and a forked child that puts records and
 * is SIGKILLed mid-way (the parent replays exactly its complete records).
 */
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

#include "server/journal.h"

#define RING      8192
#define MAX_BODY  700
#define MAX_SEEN  4096
#define KILL_RING (1 << 20)

/* The body of message number n: its length and bytes follow from n. */
static size_t body_len_of(int64_t n)
{
    return (size_t)((n * 37) % MAX_BODY);
}

static void fill_body(char *buf, int64_t n)
{
    size_t len = body_len_of(n);
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)((n * 131 + (int64_t)i * 7) & 0xff);
}

static struct store_logmsg msg_of(int64_t n, char *buf)
{
    fill_body(buf, n);
    struct store_logmsg m = {
        .conv = -(n % 5 + 1),
        .cseq = n,
        .mid = n * 1000 + 7,
        .ts = 1700000000000 + n,
        .sender = (int32_t)(n % 97 + 1),
        .body = buf,
        .len = body_len_of(n),
    };
    return m;
}

static void assert_msg_is(const struct store_logmsg *m, int64_t n)
{
    char buf[MAX_BODY];
    struct store_logmsg want = msg_of(n, buf);
    assert_int_equal(m->conv, want.conv);
    assert_int_equal(m->cseq, want.cseq);
    assert_int_equal(m->mid, want.mid);
    assert_int_equal(m->ts, want.ts);
    assert_int_equal(m->sender, want.sender);
    assert_int_equal(m->len, want.len);
    assert_memory_equal(m->body, want.body, want.len);
}

struct seen {
    int64_t cseq[MAX_SEEN];
    uint64_t handle[MAX_SEEN];
    size_t n;
};

static void collect(void *arg, uint64_t handle, const struct store_logmsg *m)
{
    struct seen *s = arg;
    assert_true(s->n < MAX_SEEN);
    assert_msg_is(m, m->cseq);
    s->cseq[s->n] = m->cseq;
    s->handle[s->n] = handle;
    s->n++;
}

static void test_put_done_replay(void **state)
{
    (void)state;
    struct journal *j = journal_create(2, RING);
    assert_non_null(j);
    char buf[MAX_BODY];
    uint64_t h[4];
    for (int64_t n = 1; n <= 4; n++) {
        struct store_logmsg m = msg_of(n, buf);
        h[n - 1] = journal_put(j, 1, &m);
        assert_true(h[n - 1] > 0);
        if (n > 1)
            assert_true(h[n - 1] > h[n - 2]);
    }
    assert_int_equal(journal_used(j, 0), 0);
    assert_true(journal_used(j, 1) > 0);
    struct seen *s = calloc(1, sizeof *s);
    assert_int_equal(journal_replay(j, 1, collect, s), 4);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(s->cseq[i], (int64_t)i + 1);
        assert_int_equal(s->handle[i], h[i]);
    }
    /* Replay leaves the records; done of the second releases the first too. */
    journal_done(j, 1, h[1]);
    s->n = 0;
    assert_int_equal(journal_replay(j, 1, collect, s), 2);
    assert_int_equal(s->cseq[0], 3);
    assert_int_equal(s->cseq[1], 4);
    /* An older handle after a newer one changes nothing. */
    journal_done(j, 1, h[0]);
    s->n = 0;
    assert_int_equal(journal_replay(j, 1, collect, s), 2);
    journal_done(j, 1, h[3]);
    assert_int_equal(journal_used(j, 1), 0);
    s->n = 0;
    assert_int_equal(journal_replay(j, 1, collect, s), 0);
    /* A worker index out of range is refused. */
    struct store_logmsg m = msg_of(9, buf);
    assert_int_equal(journal_put(j, 2, &m), 0);
    free(s);
    journal_destroy(j);
}

/* Thousands of records of many sizes through a small ring, a window in flight. */
static void test_wrap_around_many_sizes(void **state)
{
    (void)state;
    struct journal *j = journal_create(1, RING);
    char buf[MAX_BODY];
    struct seen *s = calloc(1, sizeof *s);
    uint64_t handles[8];
    int64_t first = 1;
    for (int64_t n = 1; n <= 5000; n++) {
        struct store_logmsg m = msg_of(n, buf);
        uint64_t h = journal_put(j, 0, &m);
        while (h == 0) { /* full: commit the oldest in flight */
            assert_true(first < n);
            journal_done(j, 0, handles[first % 8]);
            first++;
            h = journal_put(j, 0, &m);
        }
        handles[n % 8] = h;
        if (n - first >= 7) {
            journal_done(j, 0, handles[first % 8]);
            first++;
        }
        if (n % 97 == 0) { /* what is in flight replays byte-exact, in order */
            s->n = 0;
            assert_int_equal(journal_replay(j, 0, collect, s), (size_t)(n - first + 1));
            for (size_t i = 0; i < s->n; i++)
                assert_int_equal(s->cseq[i], first + (int64_t)i);
        }
        assert_true(journal_used(j, 0) <= RING);
    }
    free(s);
    journal_destroy(j);
}

static void test_full_ring(void **state)
{
    (void)state;
    struct journal *j = journal_create(1, RING);
    char big[RING];
    memset(big, 'x', sizeof big);
    struct store_logmsg m = { .conv = 1, .cseq = 1, .body = big, .len = RING };
    assert_int_equal(journal_put(j, 0, &m), 0); /* larger than the ring */
    m.len = 1000;
    uint64_t last = 0, h;
    size_t n = 0;
    while ((h = journal_put(j, 0, &m)) != 0) {
        last = h;
        m.cseq++;
        n++;
    }
    assert_true(n >= 7);
    assert_true(journal_used(j, 0) > RING - 1100);
    assert_int_equal(journal_put(j, 0, &m), 0); /* still full */
    journal_done(j, 0, last);
    assert_int_equal(journal_used(j, 0), 0);
    assert_true(journal_put(j, 0, &m) > last); /* room again, after the wrap */
    journal_destroy(j);
}

/* A child puts records as fast as it can and is killed; replay finds each complete one. */
static void test_child_killed_mid_put(void **state)
{
    (void)state;
    struct journal *j = journal_create(2, KILL_RING);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        char buf[MAX_BODY];
        for (int64_t n = 1;; n++) {
            struct store_logmsg m = msg_of(n, buf);
            uint64_t h = journal_put(j, 1, &m);
            if (h == 0)
                _exit(3); /* cannot happen: commits release every 200 */
            if (n == 50) {
                char c = 1;
                if (write(fds[1], &c, 1) != 1)
                    _exit(2);
            }
            if (n % 200 == 0)
                journal_done(j, 1, h); /* everything up to n committed */
        }
    }
    close(fds[1]);
    char c;
    assert_int_equal(read(fds[0], &c, 1), 1);
    usleep(3000);
    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    close(fds[0]);
    struct seen *s = calloc(1, sizeof *s);
    size_t got = journal_replay(j, 1, collect, s);
    assert_int_equal(got, s->n);
    assert_true(got >= 1);
    /* Consecutive numbers from just after the last commit point. */
    assert_int_equal((s->cseq[0] - 1) % 200, 0);
    for (size_t i = 1; i < s->n; i++)
        assert_int_equal(s->cseq[i], s->cseq[i - 1] + 1);
    /* What stays in use is what was replayed: after the commit point, up to the last. */
    assert_true(journal_used(j, 1) > 0);
    assert_true(journal_used(j, 1) <= s->handle[s->n - 1]);
    /* The replacing process carries on after the replayed records. */
    char buf[MAX_BODY];
    struct store_logmsg m = msg_of(s->cseq[s->n - 1] + 1, buf);
    uint64_t h = journal_put(j, 1, &m);
    assert_true(h > s->handle[s->n - 1]);
    size_t prev = s->n;
    s->n = 0;
    assert_int_equal(journal_replay(j, 1, collect, s), prev + 1);
    journal_done(j, 1, h);
    assert_int_equal(journal_used(j, 1), 0);
    assert_int_equal(journal_used(j, 0), 0);
    free(s);
    journal_destroy(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_done_replay),
        cmocka_unit_test(test_wrap_around_many_sizes),
        cmocka_unit_test(test_full_ring),
        cmocka_unit_test(test_child_killed_mid_put),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
