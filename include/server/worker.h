/*
 * worker.h - a worker process: one epoll loop owning its client connections.
 *
 * All workers accept from the one listening socket (EPOLLEXCLUSIVE), parse
 * requests, call storage and route messages.  A worker talks to the master
 * over its channel and to every other worker over a peer link.
 */
#ifndef QCHAT_SERVER_WORKER_H
#define QCHAT_SERVER_WORKER_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/config.h"
#include "common/frame.h"
#include "server/guard.h"
#include "server/online.h"
#include "store/store.h"

struct conn;

/* Peer link to another worker, with a queue for when it is full. */
struct peer {
    int fd;           /* -1: no link (peer dead or not started) */
    struct buf queue; /* packets waiting: [uint32 len][packet]... */
    bool want_write;
    bool broken; /* a send failed: its last packets are being read, sends refused */
};

struct slab;     /* handle tables (slab.c) */
struct inflight; /* route.c */

#define WORKER_SPARE_BUFS    64          /* reusable buffers kept per worker */
#define WORKER_SPARE_MAX_CAP (64 * 1024) /* larger ones are freed, not kept */

struct worker {
    uint32_t index;
    uint32_t nworkers;
    int epfd;
    int listen_fd;
    int channel_fd; /* to the master */
    int signal_fd;
    int timer_fd;
    int crypt_fd;         /* eventfd: hashing jobs finished */
    char dummy_hash[256]; /* verified against for unknown ids: same cost */
    struct qc_config cfg;
    struct online_table *online;
    struct guard *guard;
    struct worker_stats *stats;
    const struct store_ops *st;
    struct store *store;

    struct peer peers[ONLINE_MAX_WORKERS + 1]; /* + the relay, RELAY_PEER */
    bool clustered;                            /* a relay exists (redis.host set) */

    struct conn **conns; /* by slot */
    uint32_t conns_cap;
    uint32_t *free_slots; /* stack of unused slots */
    uint32_t nfree;
    uint32_t nconns;
    uint32_t next_cgen;
    struct conn *dirty; /* connections with output to flush */
    struct conn *dead;  /* closed this turn, freed at its end */

    struct frame_reader fr; /* shared: one object at a time */
    char *rbuf;             /* read scratch */
    size_t rbuf_size;
    char *ipcbuf; /* peer packet scratch */

    struct buf spare[WORKER_SPARE_BUFS]; /* emptied buffers, reused: no malloc per message */
    uint32_t nspare;
    struct slab *pending;      /* requests waiting to be ACKed */
    struct slab *handoffs;     /* chats handed to peers, unconfirmed */
    struct inflight *inflight; /* uid -> the peer holding unconfirmed hand-offs */

    bool accepting;
    bool stopping;
    int64_t stop_deadline;
    int64_t now_ms;    /* CLOCK_MONOTONIC, per loop turn */
    time_t time_sec;   /* cached wall clock for "time" */
    char time_str[32]; /* "YYYY-MM-DD HH:MM:SS" */
};

/* Entry point after fork; never returns.  peer_fds has ONLINE_MAX_WORKERS + 1
   entries: the links to the other workers, then the relay's (-1: none). */
void worker_main(uint32_t index, uint32_t nworkers, int listen_fd, int channel_fd,
                 const int *peer_fds, const struct qc_config *cfg, struct online_table *online,
                 struct guard *guard) __attribute__((noreturn));

/*
 * The parts of a worker that do not depend on the master: buffers, epoll set,
 * storage, routing tables, hashing threads.  worker_main calls it; so does
 * the fuzz target, which then drives connections by hand.  0 or -1.
 */
int worker_setup(struct worker *w, uint32_t index, const struct qc_config *cfg,
                 struct online_table *online, struct guard *guard);
/* Finish the password jobs that came back (the eventfd was readable). */
void worker_finish_crypt_jobs(struct worker *w);
/* End of a loop turn: write pending output, free closed connections. */
void worker_end_turn(struct worker *w);

/* Epoll registration helpers for conn.c and route.c. */
enum worker_src {
    SRC_LISTEN = 1,
    SRC_CHANNEL,
    SRC_SIGNAL,
    SRC_TIMER,
    SRC_PEER,
    SRC_CONN,
    SRC_CRYPT
};
int worker_watch(struct worker *w, int fd, uint32_t events, enum worker_src kind, uint32_t id);
int worker_rewatch(struct worker *w, int fd, uint32_t events, enum worker_src kind, uint32_t id);
void worker_mark_dirty(struct worker *w, struct conn *c);
struct conn *worker_conn(struct worker *w, uint32_t slot);
int worker_take_slot(struct worker *w, struct conn *c); /* sets c->slot; 0 or -1 */
void worker_release_slot(struct worker *w, struct conn *c);
/*
 * Buffers for replies, forwarded messages and connection output come from a
 * small per-worker stack of emptied buffers, so the hot path does not call
 * malloc per message.  worker_buf_take returns an empty buffer (possibly
 * with room already); worker_buf_give takes one back (freed if too large or
 * the stack is full) and leaves *b empty.
 */
struct buf worker_buf_take(struct worker *w);
void worker_buf_give(struct worker *w, struct buf *b);
/* "YYYY-MM-DD HH:MM:SS" of now and epoch milliseconds. */
const char *worker_time_str(struct worker *w, int64_t *epoch_ms);

#endif
