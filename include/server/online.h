/*
 * online.h - the node's shared-memory online-user table.
 *
 * Created by the master with mmap(MAP_SHARED|MAP_ANONYMOUS) before it forks,
 * so every worker sees the same table: user id -> (worker, connection slot,
 * session generation).  Fixed capacity (server.max_users), open addressing
 * with linear probing.
 *
 * Concurrency: writers (insert, remove, clear) serialize on one
 * process-shared robust mutex, so a worker SIGKILLed while holding it cannot
 * leave the table locked: the next locker gets EOWNERDEAD and carries on.
 * Every write leaves each entry valid at every instant (the location is
 * written before the user id is published), so an interrupted writer leaves
 * no torn entry.  Readers take no lock: an entry is a user id and a 64-bit
 * location read atomically; a stale answer is harmless because the worker
 * that owns a slot re-checks the generation before delivering.
 *
 * The same mapping carries the node-wide counters (session generation,
 * message ids) and one statistics block per worker for qchatctl status.
 */
#ifndef QCHAT_SERVER_ONLINE_H
#define QCHAT_SERVER_ONLINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ONLINE_MAX_WORKERS 64 /* hard limit on server.workers */
#define ONLINE_SLOT_BITS   24 /* connection slots per worker: 16M */
#define ONLINE_SLOT_MAX    ((1u << ONLINE_SLOT_BITS) - 1)

struct online_loc {
    uint32_t worker; /* worker index, 0..ONLINE_MAX_WORKERS-1 */
    uint32_t slot;   /* connection slot inside that worker */
    uint32_t gen;    /* session generation: unique per login on this node */
};

/* Per-worker counters, written by the worker, read by the master. */
struct worker_stats {
    _Atomic int32_t pid;
    _Atomic uint32_t connections;
    _Atomic uint32_t sessions;
    _Atomic uint64_t msgs_in;
    _Atomic uint64_t msgs_out;
    _Atomic uint32_t restarts;
    _Atomic uint64_t offline_stored;
    _Atomic uint64_t store_failures; /* requests answered "storage unavailable" */
    _Atomic int64_t store_failed_ms; /* CLOCK_MONOTONIC ms of the last one */
} __attribute__((aligned(64)));

/* The relay's state, written by the relay, read by the master. */
enum relay_link_state { RELAY_DISABLED = 0, RELAY_CONNECTING, RELAY_CONNECTED, RELAY_DOWN };

struct relay_stats {
    _Atomic int32_t pid;
    _Atomic uint32_t state; /* enum relay_link_state */
    _Atomic uint32_t subscribed;
    _Atomic uint64_t published;
    _Atomic uint64_t received;
    _Atomic uint64_t publish_failed;
    _Atomic uint32_t reconnects;
} __attribute__((aligned(64)));

struct online_table;

/* Map a table for max_users sessions; NULL on failure (errno set). */
struct online_table *online_create(uint32_t max_users);
void online_destroy(struct online_table *t);

/*
 * Make uid's location loc (login).  Returns 1 when uid was online already and
 * *prev holds the location it replaces (the session to kick), 0 when it was
 * not, -1 when the table is full.
 */
int online_insert(struct online_table *t, int32_t uid, const struct online_loc *loc,
                  struct online_loc *prev);
/* 1 and *out when uid is online on this node, else 0. */
int online_lookup(const struct online_table *t, int32_t uid, struct online_loc *out);
/* Remove uid if its current session is generation gen; 1 if removed. */
int online_remove(struct online_table *t, int32_t uid, uint32_t gen);
/* Remove every entry of a worker (the master, after that worker died). */
size_t online_clear_worker(struct online_table *t, uint32_t worker);
uint32_t online_count(const struct online_table *t);
uint32_t online_capacity(const struct online_table *t);
/* Call cb for every online user (no lock held: a snapshot, may race). */
void online_foreach(const struct online_table *t,
                    void (*cb)(void *arg, int32_t uid, const struct online_loc *loc), void *arg);

uint32_t online_next_gen(struct online_table *t); /* never 0 */
int64_t online_next_mid(struct online_table *t);  /* node-unique message id */
void online_set_node(struct online_table *t, int node_id);
/*
 * Reserve message ids in the file at path (server.mid_file), so that a
 * restart never reissues one: the sequence starts above what it holds.
 * 0, or -1 with err (the ids then rely on the clock alone).
 */
int online_mid_file(struct online_table *t, const char *path, char *err, size_t errlen);

struct worker_stats *online_stats(struct online_table *t, uint32_t worker);
struct relay_stats *online_relay_stats(struct online_table *t);

/*
 * The shared counters after the lock (count, generation, message ids),
 * exposed for tests that corrupt them as a broken worker could: no layout
 * value is among them (each process keeps its own), so nothing a worker
 * writes there can make another process index outside the mapping.
 */
void *online_shared_counters(struct online_table *t, size_t *len);
/* The writers' lock, exposed for tests of a holder killed mid-update. */
void online_lock(struct online_table *t);
void online_unlock(struct online_table *t);

#endif
