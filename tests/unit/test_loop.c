/*
 * test_loop.c - unit tests for the one event loop (common/loop.c).
 *
 * Covers: a watched descriptor's callback runs with its context and events;
 * rewatch changes the events (EPOLLOUT); unwatch stops the calls; the tick
 * fires about every tick_ms; on_wake runs before the batch and before_sleep
 * after it, once per loop_run_once; a timeout with nothing ready returns.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/clock.h"
#include "common/loop.h"

#define TICK_MS     20
#define TICKS       5
#define WAIT_MS     1000
#define SLACK_TICKS 2

struct seen {
    int calls;
    uint32_t events;
    int ticks;
    int wakes, sleeps;
    int order_ok; /* on_wake before the callback, before_sleep after */
    int phase;    /* 0 asleep, 1 woken, 2 dispatched */
};

static struct seen seen;

static void on_ready(void *ctx, uint32_t events)
{
    struct seen *s = ctx;
    s->calls++;
    s->events = events;
    if (s->phase == 1)
        s->order_ok++;
    s->phase = 2;
}

static void on_tick(void *ctx)
{
    ((struct seen *)ctx)->ticks++;
}

static void on_wake(void *ctx)
{
    struct seen *s = ctx;
    s->wakes++;
    s->phase = 1;
}

static void before_sleep(void *ctx)
{
    struct seen *s = ctx;
    s->sleeps++;
    s->phase = 0;
}

static void test_callbacks_and_hooks(void **state)
{
    (void)state;
    seen = (struct seen){ 0 };
    struct loop l;
    assert_int_equal(loop_init(&l, &seen), 0);
    loop_set_on_wake(&l, on_wake);
    loop_set_before_sleep(&l, before_sleep);
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct loop_source src;
    assert_int_equal(loop_watch(&l, &src, p[0], EPOLLIN, on_ready, &seen), 0);
    assert_int_equal(write(p[1], "x", 1), 1);
    assert_int_equal(loop_run_once(&l, WAIT_MS), 0);
    assert_int_equal(seen.calls, 1);
    assert_true(seen.events & EPOLLIN);
    assert_int_equal(seen.wakes, 1);
    assert_int_equal(seen.sleeps, 1);
    assert_int_equal(seen.order_ok, 1);

    /* The write end, watched for output: ready at once. */
    struct loop_source out;
    assert_int_equal(loop_watch(&l, &out, p[1], 0, on_ready, &seen), 0);
    assert_int_equal(loop_rewatch(&l, &out, EPOLLOUT), 0);
    loop_unwatch(&l, &src); /* the unread byte no longer calls */
    assert_int_equal(loop_run_once(&l, WAIT_MS), 0);
    assert_int_equal(seen.calls, 2);
    assert_true(seen.events & EPOLLOUT);

    loop_unwatch(&l, &out);
    int64_t t0 = clock_now_ms();
    assert_int_equal(loop_run_once(&l, TICK_MS), 0); /* nothing ready: the timeout */
    assert_true(clock_now_ms() - t0 >= TICK_MS - 1);
    assert_int_equal(seen.calls, 2);
    close(p[0]);
    close(p[1]);
    loop_close(&l);
}

static void test_tick(void **state)
{
    (void)state;
    seen = (struct seen){ 0 };
    struct loop l;
    assert_int_equal(loop_init(&l, &seen), 0);
    assert_int_equal(loop_set_tick(&l, TICK_MS, on_tick), 0);
    int64_t t0 = clock_now_ms();
    while (seen.ticks < TICKS && clock_now_ms() - t0 < WAIT_MS)
        assert_int_equal(loop_run_once(&l, WAIT_MS), 0);
    int64_t took = clock_now_ms() - t0;
    assert_int_equal(seen.ticks, TICKS);
    assert_true(took >= (TICKS - 1) * TICK_MS);
    assert_true(took <= (TICKS + SLACK_TICKS) * TICK_MS * 5); /* a busy machine, not a hang */
    assert_true(l.now_ms >= t0);
    loop_close(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_callbacks_and_hooks),
        cmocka_unit_test(test_tick),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
