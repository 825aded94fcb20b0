/*
 * online.c - the shared-memory online-user table (see online.h).
 *
 * Layout of the mapping: a header (robust mutex, counters, per-worker stats)
 * followed by a power-of-two array of entries, twice max_users, so probe
 * chains stay short.  An entry is empty (uid 0), a tombstone (UID_TOMB) or a
 * live user.  A removal turns the entry into a tombstone, or into an empty
 * entry (with the tombstones before it) when the next entry is empty, which
 * keeps chains from filling with tombstones under churn.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "common/log.h"
#include "common/inttable.h"
#include "server/online.h"

#define UID_EMPTY      0u
#define UID_TOMB       0xffffffffu
#define MID_NODE_SHIFT 44 /* mid = node_id << 44 | counter */

struct online_entry {
    _Atomic uint32_t uid;
    uint32_t pad;
    _Atomic uint64_t loc; /* gen << 32 | worker << 24 | slot */
};

/*
 * The shared mapping holds no layout value: every process could write it,
 * and a size or mask read from it could send the master outside the
 * mapping.  The layout (size, mask, capacity) lives in struct online_table,
 * each process's own copy (the master's, inherited by the children at fork).
 */
struct online_shared {
    pthread_mutex_t lock;
    _Atomic uint32_t count;
    _Atomic uint32_t gen;
    _Atomic int64_t mid;
    struct worker_stats stats[ONLINE_MAX_WORKERS];
    struct relay_stats relay;
    struct online_entry entries[];
};

struct online_table {
    struct online_shared *sh;
    size_t map_size;
    uint32_t mask; /* entries - 1 */
    uint32_t max_users;
    int64_t mid_base;
};

static uint64_t pack_loc(const struct online_loc *l)
{
    return (uint64_t)l->gen << 32 | (uint64_t)(l->worker & 0xff) << ONLINE_SLOT_BITS |
           (l->slot & ONLINE_SLOT_MAX);
}

static void unpack_loc(uint64_t v, struct online_loc *l)
{
    l->gen = (uint32_t)(v >> 32);
    l->worker = (uint32_t)(v >> ONLINE_SLOT_BITS) & 0xff;
    l->slot = (uint32_t)v & ONLINE_SLOT_MAX;
}

/* Rows are written by every worker: check one before using it as an index. */
static bool loc_valid(const struct online_loc *l)
{
    return l->worker < ONLINE_MAX_WORKERS;
}

static uint32_t capacity_for(uint32_t max_users)
{
    uint32_t n = 16;
    while (n < 2 * (uint64_t)max_users && n < (1u << 31))
        n <<= 1;
    return n;
}

struct online_table *online_create(uint32_t max_users)
{
    uint32_t n = capacity_for(max_users);
    size_t size = sizeof(struct online_shared) + (size_t)n * sizeof(struct online_entry);
    struct online_table *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) {
        free(t);
        return NULL;
    }
    t->sh = map;

    pthread_mutexattr_t attr;
    if (pthread_mutexattr_init(&attr) != 0 ||
        pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED) != 0 ||
        pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST) != 0 ||
        pthread_mutex_init(&t->sh->lock, &attr) != 0) {
        munmap(map, size);
        free(t);
        errno = ENOMEM;
        return NULL;
    }
    pthread_mutexattr_destroy(&attr);
    t->map_size = size;
    t->mask = n - 1;
    t->max_users = max_users;
    atomic_init(&t->sh->gen, 0);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    t->mid_base = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    atomic_init(&t->sh->mid, 0);
    return t;
}

void online_destroy(struct online_table *t)
{
    if (t) {
        munmap(t->sh, t->map_size);
        free(t);
    }
}

void online_lock(struct online_table *t)
{
    int rc = pthread_mutex_lock(&t->sh->lock);
    if (rc == EOWNERDEAD) {
        /* A worker died holding the lock; entries are valid at every step. */
        log_warning("online table: previous lock holder died, recovering");
        pthread_mutex_consistent(&t->sh->lock);
    }
}

void online_unlock(struct online_table *t)
{
    pthread_mutex_unlock(&t->sh->lock);
}

/* Index of uid's entry, or of the first reusable entry when absent; locked. */
static uint32_t find_slot(struct online_table *t, uint32_t uid, int *found)
{
    uint32_t i = int_hash(uid) & t->mask, reusable = UINT32_MAX;
    for (uint32_t probes = 0; probes <= t->mask; probes++, i = (i + 1) & t->mask) {
        uint32_t cur = atomic_load_explicit(&t->sh->entries[i].uid, memory_order_relaxed);
        if (cur == uid) {
            *found = 1;
            return i;
        }
        if (cur == UID_TOMB && reusable == UINT32_MAX)
            reusable = i;
        if (cur == UID_EMPTY) {
            *found = 0;
            return reusable != UINT32_MAX ? reusable : i;
        }
    }
    *found = 0;
    return reusable;
}

int online_insert(struct online_table *t, int32_t uid, const struct online_loc *loc,
                  struct online_loc *prev)
{
    int found, rc;
    online_lock(t);
    uint32_t i = find_slot(t, (uint32_t)uid, &found);
    struct online_entry *e = i == UINT32_MAX ? NULL : &t->sh->entries[i];
    if (found) {
        unpack_loc(atomic_load_explicit(&e->loc, memory_order_relaxed), prev);
        atomic_store_explicit(&e->loc, pack_loc(loc), memory_order_release);
        rc = 1;
    } else if (e == NULL ||
               atomic_load_explicit(&t->sh->count, memory_order_relaxed) >= t->max_users) {
        rc = -1;
    } else {
        atomic_store_explicit(&e->loc, pack_loc(loc), memory_order_relaxed);
        atomic_store_explicit(&e->uid, (uint32_t)uid, memory_order_release);
        atomic_fetch_add_explicit(&t->sh->count, 1, memory_order_relaxed);
        rc = 0;
    }
    online_unlock(t);
    return rc;
}

int online_lookup(const struct online_table *t, int32_t uid, struct online_loc *out)
{
    uint32_t i = int_hash((uint32_t)uid) & t->mask;
    for (uint32_t probes = 0; probes <= t->mask; probes++, i = (i + 1) & t->mask) {
        struct online_entry *e = &t->sh->entries[i];
        uint32_t cur = atomic_load_explicit(&e->uid, memory_order_acquire);
        if (cur == UID_EMPTY)
            return 0;
        if (cur != (uint32_t)uid)
            continue;
        uint64_t v = atomic_load_explicit(&e->loc, memory_order_acquire);
        if (atomic_load_explicit(&e->uid, memory_order_acquire) != (uint32_t)uid)
            return 0; /* removed while we looked: not online */
        unpack_loc(v, out);
        return loc_valid(out); /* a row no worker can own: not trusted, not online */
    }
    return 0;
}

/* Turn entry i into a tombstone, or into empties when the chain ends here. */
static void erase_entry(struct online_table *t, uint32_t i)
{
    uint32_t next = (i + 1) & t->mask;
    if (atomic_load_explicit(&t->sh->entries[next].uid, memory_order_relaxed) != UID_EMPTY) {
        atomic_store_explicit(&t->sh->entries[i].uid, UID_TOMB, memory_order_release);
    } else {
        atomic_store_explicit(&t->sh->entries[i].uid, UID_EMPTY, memory_order_release);
        for (uint32_t j = (i - 1) & t->mask;
             atomic_load_explicit(&t->sh->entries[j].uid, memory_order_relaxed) == UID_TOMB;
             j = (j - 1) & t->mask)
            atomic_store_explicit(&t->sh->entries[j].uid, UID_EMPTY, memory_order_release);
    }
    atomic_fetch_sub_explicit(&t->sh->count, 1, memory_order_relaxed);
}

int online_remove(struct online_table *t, int32_t uid, uint32_t gen)
{
    int found, removed = 0;
    online_lock(t);
    uint32_t i = find_slot(t, (uint32_t)uid, &found);
    if (found) {
        struct online_loc cur;
        unpack_loc(atomic_load_explicit(&t->sh->entries[i].loc, memory_order_relaxed), &cur);
        if (cur.gen == gen) {
            erase_entry(t, i);
            removed = 1;
        }
    }
    online_unlock(t);
    return removed;
}

size_t online_clear_worker(struct online_table *t, uint32_t worker)
{
    size_t n = 0;
    online_lock(t);
    for (uint32_t i = 0; i <= t->mask; i++) {
        uint32_t cur = atomic_load_explicit(&t->sh->entries[i].uid, memory_order_relaxed);
        if (cur == UID_EMPTY || cur == UID_TOMB)
            continue;
        struct online_loc l;
        unpack_loc(atomic_load_explicit(&t->sh->entries[i].loc, memory_order_relaxed), &l);
        if (l.worker == worker) {
            atomic_store_explicit(&t->sh->entries[i].uid, UID_TOMB, memory_order_release);
            atomic_fetch_sub_explicit(&t->sh->count, 1, memory_order_relaxed);
            n++;
        }
    }
    /* Tombstones followed by an empty entry can become empty again. */
    for (uint32_t i = 0; i <= t->mask; i++) {
        if (atomic_load_explicit(&t->sh->entries[i].uid, memory_order_relaxed) == UID_EMPTY) {
            for (uint32_t j = (i - 1) & t->mask;
                 j != i &&
                 atomic_load_explicit(&t->sh->entries[j].uid, memory_order_relaxed) == UID_TOMB;
                 j = (j - 1) & t->mask)
                atomic_store_explicit(&t->sh->entries[j].uid, UID_EMPTY, memory_order_release);
        }
    }
    online_unlock(t);
    return n;
}

uint32_t online_count(const struct online_table *t)
{
    return atomic_load_explicit(&t->sh->count, memory_order_relaxed);
}

uint32_t online_capacity(const struct online_table *t)
{
    return t->max_users;
}

void online_foreach(const struct online_table *t,
                    void (*cb)(void *arg, int32_t uid, const struct online_loc *loc), void *arg)
{
    for (uint32_t i = 0; i <= t->mask; i++) {
        uint32_t cur = atomic_load_explicit(&t->sh->entries[i].uid, memory_order_acquire);
        if (cur == UID_EMPTY || cur == UID_TOMB)
            continue;
        struct online_loc l;
        unpack_loc(atomic_load_explicit(&t->sh->entries[i].loc, memory_order_acquire), &l);
        if (loc_valid(&l))
            cb(arg, (int32_t)cur, &l);
    }
}

uint32_t online_next_gen(struct online_table *t)
{
    uint32_t g;
    do
        g = atomic_fetch_add_explicit(&t->sh->gen, 1, memory_order_relaxed) + 1;
    while (g == 0);
    return g;
}

void online_set_node(struct online_table *t, int node_id)
{
    t->mid_base += (int64_t)node_id << MID_NODE_SHIFT;
}

int64_t online_next_mid(struct online_table *t)
{
    return t->mid_base + atomic_fetch_add_explicit(&t->sh->mid, 1, memory_order_relaxed);
}

struct worker_stats *online_stats(struct online_table *t, uint32_t worker)
{
    return worker < ONLINE_MAX_WORKERS ? &t->sh->stats[worker] : NULL;
}

struct relay_stats *online_relay_stats(struct online_table *t)
{
    return &t->sh->relay;
}

void *online_shared_counters(struct online_table *t, size_t *len)
{
    *len = offsetof(struct online_shared, stats) - offsetof(struct online_shared, count);
    return &t->sh->count;
}
