/*
 * worker.h - what every part of a worker shares: the worker's state, its
 * connection slots, reusable buffers, the event loop, cached time, and
 * the hooks through which lower layers report upward.
 *
 * A worker process accepts from the one listening socket (EPOLLEXCLUSIVE),
 * parses requests, calls storage and routes messages; worker_loop.c runs it.
 * The layers, bottom up, each including only those below it:
 *   worker.c (this state) - conn.c (a client connection) - offline.c,
 *   pending.c, handoff.c, peer.c (delivery mechanisms) - route.c (routing
 *   decisions) - reply.c, session.c - login.c - service.c (request
 *   handlers) - worker_loop.c (the process: event loop, wiring).
 * A lower layer never calls a higher one by name: it calls a hook of struct
 * worker_hooks, which the higher layer installs at setup.
 */
#ifndef QCHAT_SERVER_WORKER_H
#define QCHAT_SERVER_WORKER_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/config.h"
#include "common/frame.h"
#include "common/loop.h"
#include "server/guard.h"
#include "server/ipc.h"
#include "server/online.h"
#include "store/store.h"

struct worker;
struct conn;
struct json_object;
struct social_ops;

/* Calls upward, installed by the layer that answers them (see the top). */
struct worker_hooks {
    /* conn.c: a request was parsed (service.c) */
    void (*request)(struct worker *w, struct conn *c, struct json_object *req);
    /* conn.c: a request broke the stream; send err before closing (reply.c) */
    void (*stream_error)(struct worker *w, struct conn *c, int err);
    /* conn.c: a delivery mark was written (err 0) or stored/lost: tell its origin (route.c) */
    void (*mark_done)(struct worker *w, uint32_t origin, uint32_t token, int err);
    /* conn.c: a connection holding a session is closing (session.c) */
    void (*session_closing)(struct worker *w, struct conn *c);
    /* pending.c: a request's outcome is known (reply.c) */
    void (*answer)(struct worker *w, struct conn *c, int msgid, const char *seq, int err,
                   int64_t mid, int32_t groupid, int64_t cseq);
    /* peer.c, route.c: a notice for c's session; true if taken (service_social.c) */
    bool (*notice)(struct worker *w, struct conn *c, const char *payload, size_t len);
    /* peer.c, route.c: a session here was taken over (session.c) */
    void (*kick)(struct worker *w, int32_t uid, uint32_t slot, uint32_t gen, const char *reason);
    /* peer.c: the relay's answers, continuations of a login (login.c) */
    void (*numsub_done)(struct worker *w, uint32_t token, const uint8_t *online, size_t n,
                        bool failed);
    void (*subscribed)(struct worker *w, uint32_t token, bool failed);
    /* peer.c: the session registry's answer to a login's claim, IPC_CLAIM_* (login.c) */
    void (*claimed)(struct worker *w, uint32_t token, int32_t result);
    /* peer.c: the registry's list of an account's sessions (service_session.c) */
    void (*devices_done)(struct worker *w, uint32_t token, const char *tail, size_t len,
                         bool failed);
    void (*relay_lost)(struct worker *w);
};

/* Peer link to another worker, with a queue for when it is full. */
struct peer {
    struct ipc_chan ch;     /* fd -1: no link (peer dead or not started) */
    struct loop_source src; /* ch.fd in the worker's loop */
    struct worker *w;
    uint32_t index;  /* a worker index, or RELAY_PEER */
    bool want_write; /* EPOLLOUT armed: packets wait in ch's queue */
};

struct slab;            /* handle tables (slab.c) */
struct inttable;        /* common/inttable.c */
struct storage;         /* the storage thread (storage.h) */
struct seqtab;          /* the node's cseq sequencer (seqtab.h) */
struct journal;         /* chats given a cseq, not yet committed (journal.h) */
struct log_retry;       /* appends the store refused, tried again (service_chat.c) */
struct delivered_batch; /* written chats, for the delivered cursors (delivered.c) */
struct convmark_batch;  /* cseqs of chats not stored, history off (convmark.c) */
struct purge_state;     /* retention (purge.c) */

#define WORKER_SPARE_BUFS    64          /* reusable buffers kept per worker */
#define WORKER_SPARE_MAX_CAP (64 * 1024) /* larger ones are freed, not kept */

struct worker {
    uint32_t index;
    uint32_t nworkers;
    struct loop loop;
    struct loop_source listen_src, channel_src, signal_src, crypt_src;
    int listen_fd;
    struct ipc_chan channel; /* to the master */
    int signal_fd;
    int crypt_fd;         /* eventfd: hashing jobs finished */
    char dummy_hash[256]; /* verified against for unknown ids: same cost */
    struct qc_config cfg;
    struct online_table *online;
    struct guard *guard;
    struct worker_stats *stats;
    const struct store_ops *st; /* the driver's calls; its handle is the storage thread's */
    /* The conversation log (issue 11): every store call off the loop. */
    struct storage *storage; /* this worker's storage thread */
    struct loop_source storage_src;
    struct seqtab *seqtab;             /* NULL: the database assigns cseq (several nodes) */
    struct journal *journal;           /* NULL with seqtab */
    struct log_retry *log_retry;       /* appends waiting to be queued again */
    struct delivered_batch *delivered; /* chats written this turn */
    struct convmark_batch *convmarks;  /* history off: cseqs to keep taken in the store */
    struct purge_state *purge;         /* retention (purge.c), worker PURGE_WORKER only */

    struct peer peers[ONLINE_MAX_WORKERS + 1]; /* + the relay, RELAY_PEER */
    bool clustered;                            /* a relay exists (redis.host set) */
    bool proxy_protocol; /* server.proxy_protocol = on: a PROXY header comes first */

    struct slab *slots; /* connections by slot (worker_conn) */
    uint32_t nconns;
    uint32_t next_cgen;
    struct conn *dirty; /* connections with output to flush */
    struct conn *dead;  /* closed this turn, freed at its end */
    struct conn *paced; /* legacy connections waiting out their gap (conn.c) */

    struct frame_reader fr; /* shared: one object at a time */
    char *rbuf;             /* read scratch */
    size_t rbuf_size;
    char *ipcbuf; /* peer packet scratch */

    struct buf spare[WORKER_SPARE_BUFS]; /* emptied buffers, reused: no malloc per message */
    uint32_t nspare;
    struct slab *pending;         /* requests waiting to be ACKed (pending.c) */
    struct slab *handoffs;        /* chats handed to peers, unconfirmed (handoff.c) */
    struct inttable *inflight;    /* uid -> the peer holding unconfirmed hand-offs */
    struct inttable *known_users; /* chat recipients known to exist (service_chat.c) */
    struct worker_hooks hooks;

    bool accepting;
    bool stopping;
    int64_t stop_deadline;
    int64_t now_ms;    /* CLOCK_MONOTONIC, per loop turn */
    time_t time_sec;   /* cached wall clock for "time" */
    char time_str[32]; /* "YYYY-MM-DD HH:MM:SS" */
};

int worker_init_slots(struct worker *w); /* 0 or -1 */
struct conn *worker_conn(struct worker *w, uint32_t slot);
/* Slots to walk: every slot < this may hold a connection (worker_conn). */
uint32_t worker_slot_count(const struct worker *w);
/* A slot for c (its index in the table, named in the online table): 0, or -1 when full. */
int worker_take_slot(struct worker *w, struct conn *c, uint32_t *slot);
void worker_release_slot(struct worker *w, uint32_t slot, const struct conn *c);
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
