/*
 * online.h - the node's shared-memory online-user table.
 *
 * Created by the master with mmap(MAP_SHARED|MAP_ANONYMOUS) before it forks,
 * so every worker sees the same table: user id -> (worker, connection slot,
 * session generation, device).  A user may hold several sessions (one row
 * each, [session] mode = multi; issue 15): every row of a user lies on the
 * probe chain of the user's hash.  Fixed capacity (server.max_users
 * sessions), open addressing with linear probing.
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

#include "common/proto.h"

#define ONLINE_MAX_WORKERS 64 /* hard limit on server.workers */
#define ONLINE_SLOT_BITS   24 /* connection slots per worker: 16M */
#define ONLINE_SLOT_MAX    ((1u << ONLINE_SLOT_BITS) - 1)

struct online_loc {
    uint32_t worker; /* worker index, 0..ONLINE_MAX_WORKERS-1 */
    uint32_t slot;   /* connection slot inside that worker */
    uint32_t gen;    /* session generation: unique per login on this node */
};

#define ONLINE_MARK_BUCKETS 256 /* users a worker's unresolved delivery marks are counted by */

/* Per-worker counters, written by the worker, read by the master. */
struct worker_stats {
    _Atomic int32_t pid;
    _Atomic uint32_t connections;
    _Atomic uint32_t accepting; /* 1: watching the listening socket */
    _Atomic uint32_t sessions;
    _Atomic uint64_t msgs_in;
    _Atomic uint64_t msgs_out;
    _Atomic uint32_t restarts;
    _Atomic uint64_t offline_stored;
    _Atomic uint64_t store_failures; /* requests answered "storage unavailable" */
    _Atomic int64_t store_failed_ms; /* CLOCK_MONOTONIC ms of the last one */
    _Atomic uint64_t cursor_noted;   /* chats noted as written (delivered.c) ... */
    _Atomic uint64_t cursor_done;    /* ... of which the cursor jobs have run */
    _Atomic uint64_t appends_queued; /* chats queued for the log, one node (service_chat.c) ... */
    _Atomic uint64_t appends_done;   /* ... of which the commit has come back */
    /*
     * Chats and login stashes queued on a connection, neither written whole
     * (noted) nor put back for the next login, per bucket of their user's id
     * (delivered.c): a login of the user on another worker waits for them.
     */
    _Atomic uint32_t marks_pending[ONLINE_MARK_BUCKETS];
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

/* [session] mode: what a login does to the account's other sessions on the node. */
enum online_mode {
    ONLINE_TAKEOVER = 0, /* every other session is kicked */
    ONLINE_REFUSE,       /* refused while another session exists (same device: replaced) */
    ONLINE_MULTI,        /* same device replaced; beyond max sessions the oldest kicked */
};

/*
 * What DEVICES_MSG tells of a session, kept beside its entry so that any
 * worker of the node can list a user's sessions on every worker.
 */
struct online_note {
    int64_t since_ms;               /* login time, wall clock */
    char device[QC_DEVICE_MAX + 1]; /* the login's device ("default" when unnamed) */
};

/* The rule one login applies (online_login). */
struct online_policy {
    enum online_mode mode;
    uint32_t device;                /* online_device_hash of the login's device name */
    bool named;                     /* the login named its device (refuse: unnamed is refused) */
    uint32_t max;                   /* ONLINE_MULTI: sessions per user, 1..ONLINE_USER_MAX */
    const struct online_note *note; /* kept for DEVICES_MSG; NULL: none */
};

#define ONLINE_USER_MAX 128  /* sessions of one user the table keeps (>= session.max_devices) */
#define ONLINE_REFUSED  (-2) /* online_login: refused by mode refuse */

struct online_table;

/* The 32-bit hash a device name is kept as ("" and NULL: "default"). */
uint32_t online_device_hash(const char *device);

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
/*
 * Add the session loc of uid under policy p, atomically with removing the
 * sessions it replaces, which are copied to kicked[] (room for
 * ONLINE_USER_MAX) and counted in *nkicked.  0, ONLINE_REFUSED (nothing
 * changed) or -1 when the table is full.
 */
int online_login(struct online_table *t, int32_t uid, const struct online_loc *loc,
                 const struct online_policy *p, struct online_loc *kicked, size_t *nkicked);
/*
 * uid's sessions on this node (every worker) with their notes, read under
 * the table's lock; at most max.  For DEVICES_MSG, not for routing.
 */
size_t online_sessions_noted(struct online_table *t, int32_t uid, struct online_loc *locs,
                             struct online_note *notes, size_t max);
/*
 * Every session of uid on this node (no lock: a snapshot, each row checked
 * as online_lookup does), up to max, oldest first.  Returns how many.
 */
size_t online_sessions(const struct online_table *t, int32_t uid, struct online_loc *out,
                       size_t max);
/* 1 and *out when uid is online on this node (one of its sessions), else 0. */
int online_lookup(const struct online_table *t, int32_t uid, struct online_loc *out);
/* Remove uid's session of generation gen; 1 if removed. */
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
