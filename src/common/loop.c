/*
 * loop.c - the one event loop (see loop.h): epoll, a timerfd tick, a
 * before-sleep hook.
 */
#include <errno.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/loop.h"

#define LOOP_MAX_EVENTS 256

int loop_init(struct loop *l, void *ctx)
{
    *l = (struct loop){ .epfd = -1, .tick_fd = -1, .ctx = ctx, .now_ms = clock_now_ms() };
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    return l->epfd < 0 ? -1 : 0;
}

static void tick_fired(void *ctx, uint32_t events)
{
    struct loop *l = ctx;
    uint64_t expirations;
    (void)events;
    if (read(l->tick_fd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
        log_warning("tick: %m");
    if (l->on_tick)
        l->on_tick(l->ctx);
}

int loop_set_tick(struct loop *l, int tick_ms, void (*on_tick)(void *ctx))
{
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd < 0)
        return -1;
    struct timespec every = { tick_ms / 1000, (long)(tick_ms % 1000) * 1000000L };
    struct itimerspec spec = { .it_interval = every, .it_value = every };
    if (timerfd_settime(fd, 0, &spec, NULL) < 0 ||
        loop_watch(l, &l->tick, fd, EPOLLIN, tick_fired, l) < 0) {
        close(fd);
        return -1;
    }
    l->tick_fd = fd;
    l->on_tick = on_tick;
    return 0;
}

void loop_set_before_sleep(struct loop *l, void (*before_sleep)(void *ctx))
{
    l->before_sleep = before_sleep;
}

void loop_set_on_wake(struct loop *l, void (*on_wake)(void *ctx))
{
    l->on_wake = on_wake;
}

int loop_watch(struct loop *l, struct loop_source *src, int fd, uint32_t events, loop_fn *fn,
               void *ctx)
{
    src->fd = fd;
    src->fn = fn;
    src->ctx = ctx;
    struct epoll_event ev = { .events = events, .data.ptr = src };
    return epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev);
}

int loop_rewatch(struct loop *l, struct loop_source *src, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = src };
    return epoll_ctl(l->epfd, EPOLL_CTL_MOD, src->fd, &ev);
}

void loop_unwatch(struct loop *l, struct loop_source *src)
{
    if (src->fd >= 0)
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, src->fd, NULL);
    src->fd = -1;
}

int loop_run_once(struct loop *l, int timeout_ms)
{
    struct epoll_event events[LOOP_MAX_EVENTS];
    int n = epoll_wait(l->epfd, events, LOOP_MAX_EVENTS, timeout_ms);
    int rc = n < 0 && errno != EINTR ? -1 : 0;
    l->now_ms = clock_now_ms();
    if (l->on_wake)
        l->on_wake(l->ctx);
    for (int i = 0; i < n; i++) {
        struct loop_source *src = events[i].data.ptr;
        src->fn(src->ctx, events[i].events);
    }
    if (l->before_sleep)
        l->before_sleep(l->ctx);
    return rc;
}

void loop_close(struct loop *l)
{
    if (l->tick_fd >= 0)
        close(l->tick_fd);
    if (l->epfd >= 0)
        close(l->epfd);
    l->tick_fd = l->epfd = -1;
}
