/*
 * loop.h - the one event loop of every qchatd process (master, workers,
 * relay).
 *
 * A source is a descriptor and a callback: loop_watch registers it (an
 * eventfd from a new thread pool is one call), loop_rewatch changes the
 * events wanted, loop_unwatch drops it.  The loop also runs a periodic tick
 * (a timerfd) and, after every batch of events and before it sleeps again,
 * a before-sleep hook: where a worker writes the output the batch produced,
 * one write per connection, like Redis's beforeSleep.
 *
 * Sources live in their owners' structs (a connection, a peer link): the
 * loop keeps pointers to them, so an owner must unwatch before it frees the
 * memory, and memory freed during a batch must wait for the before-sleep
 * hook (events already fetched for it are still dispatched).
 */
#ifndef QCHAT_COMMON_LOOP_H
#define QCHAT_COMMON_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct loop_source;
typedef void loop_fn(void *ctx, uint32_t events);

struct loop_source {
    int fd;
    loop_fn *fn;
    void *ctx;
};

struct loop {
    int epfd;
    int tick_fd; /* -1: no tick */
    struct loop_source tick;
    void (*on_tick)(void *ctx);
    void (*on_wake)(void *ctx); /* the wait returned: before the batch (e.g. cache the time) */
    void (*before_sleep)(void *ctx);
    void *ctx;      /* passed to on_tick and before_sleep */
    int64_t now_ms; /* clock_now_ms() when the current batch began */
};

/* 0, or -1 with errno. */
int loop_init(struct loop *l, void *ctx);
/* Call on_tick every tick_ms milliseconds.  0 or -1. */
int loop_set_tick(struct loop *l, int tick_ms, void (*on_tick)(void *ctx));
void loop_set_before_sleep(struct loop *l, void (*before_sleep)(void *ctx));
void loop_set_on_wake(struct loop *l, void (*on_wake)(void *ctx));

int loop_watch(struct loop *l, struct loop_source *src, int fd, uint32_t events, loop_fn *fn,
               void *ctx);
int loop_rewatch(struct loop *l, struct loop_source *src, uint32_t events);
void loop_unwatch(struct loop *l, struct loop_source *src);

/*
 * Wait up to timeout_ms (-1: until something happens), dispatch the events,
 * then run the before-sleep hook.  0, or -1 when epoll_wait failed (not EINTR).
 */
int loop_run_once(struct loop *l, int timeout_ms);
/* Close the epoll set and the tick (also in a forked child that must not share them). */
void loop_close(struct loop *l);

#endif
