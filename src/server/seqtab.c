/*
 * seqtab.c - the shared-memory per-conversation cseq sequencer (see seqtab.h).
 *
 * Layout of the mapping: a header (robust mutex, counters) followed by a
 * power-of-two array of entries, at least twice the capacity, so probe
 * chains stay short.  An entry is empty (conv 0), a conversation (conv != 0:
 * pair keys are > 0, group keys < 0) or, only in the middle of a deletion,
 * SEQ_MOVING.  Every call holds the mutex.
 *
 * Deletion is backward-shift (no tombstones are left behind), written so a
 * process SIGKILLed at any store leaves a table that is still correct:
 *   - the deleted entry first becomes SEQ_MOVING, which lookups step over;
 *   - an entry later in the chain is copied over it values first, key last,
 *     so for a moment it exists twice with the same values, the copy nearer
 *     its home first (the one every lookup finds);
 *   - its old place then becomes SEQ_MOVING, and so on; the last hole
 *     becomes empty.
 * The next locker that gets EOWNERDEAD finishes such a deletion
 * (repair_table): every SEQ_MOVING hole and every duplicate found behind its
 * first copy is deleted the same way.
 *
 * An entry is evictable when every cseq it assigned is committed; a clock
 * hand walks the table to find one when a seed needs room.  An evicted
 * entry's last cseq is also kept in a small ring of "ghosts": a worker that
 * found the conversation cold and read the store just BEFORE another one
 * seeded, used, committed and evicted it would otherwise seed a stale last
 * and hand out a cseq twice; seqtab_seed takes the larger of the two.  The
 * guard holds as long as fewer than SEQ_GHOSTS evictions happen during one
 * store read.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>

#include "common/log.h"
#include "server/seqtab.h"

#define CONV_EMPTY     ((int64_t)0)
#define SEQ_MOVING     INT64_MIN /* a hole being filled by a deletion */
#define SEQ_MIN_SLOTS  16u
#define SEQ_MAX_SLOTS  (1u << 31)
#define SEQ_LOAD_RATIO 2u    /* slots per conversation of capacity */
#define SEQ_GHOSTS     1024u /* evicted conversations remembered */

struct seq_entry {
    _Atomic int64_t conv;
    _Atomic int64_t assigned;  /* the last cseq handed out */
    _Atomic int64_t committed; /* the last cseq the store committed */
    _Atomic int64_t stored;    /* the last cseq whose message is kept in the log */
};

/* An evicted conversation and its last cseq (conv 0: unused). */
struct seq_ghost {
    _Atomic int64_t conv;
    _Atomic int64_t last;
};

struct seqtab {
    pthread_mutex_t lock;
    size_t map_size;
    uint32_t mask;     /* slots - 1 */
    uint32_t capacity; /* conversations at most */
    _Atomic uint32_t count;
    uint32_t hand;       /* the eviction clock */
    uint32_t ghost_next; /* the ghost ring's next slot */
    struct seq_ghost ghosts[SEQ_GHOSTS];
    struct seq_entry entries[];
};

static uint32_t hash_conv(int64_t conv)
{
    uint64_t x = (uint64_t)conv;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return (uint32_t)x;
}

static uint32_t slots_for(uint32_t capacity)
{
    uint32_t n = SEQ_MIN_SLOTS;
    while (n < (uint64_t)SEQ_LOAD_RATIO * capacity && n < SEQ_MAX_SLOTS)
        n <<= 1;
    return n;
}

static int64_t key_at(const struct seqtab *t, uint32_t i)
{
    return atomic_load_explicit(&t->entries[i].conv, memory_order_acquire);
}

static void set_key(struct seqtab *t, uint32_t i, int64_t conv)
{
    atomic_store_explicit(&t->entries[i].conv, conv, memory_order_seq_cst);
}

struct seqtab *seqtab_create(uint32_t capacity)
{
    if (capacity == 0) {
        errno = EINVAL;
        return NULL;
    }
    uint32_t n = slots_for(capacity);
    size_t size = sizeof(struct seqtab) + (size_t)n * sizeof(struct seq_entry);
    struct seqtab *t = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (t == MAP_FAILED)
        return NULL;

    pthread_mutexattr_t attr;
    if (pthread_mutexattr_init(&attr) != 0 ||
        pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED) != 0 ||
        pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST) != 0 ||
        pthread_mutex_init(&t->lock, &attr) != 0) {
        munmap(t, size);
        errno = ENOMEM;
        return NULL;
    }
    pthread_mutexattr_destroy(&attr);
    t->map_size = size;
    t->mask = n - 1;
    t->capacity = capacity < n / SEQ_LOAD_RATIO ? capacity : n / SEQ_LOAD_RATIO;
    atomic_init(&t->count, 0);
    t->hand = 0;
    return t;
}

void seqtab_destroy(struct seqtab *t)
{
    if (t)
        munmap(t, t->map_size);
}

/* Index of conv's first copy, or UINT32_MAX; skips SEQ_MOVING holes. */
static uint32_t find_entry(const struct seqtab *t, int64_t conv)
{
    uint32_t i = hash_conv(conv) & t->mask;
    for (uint32_t probes = 0; probes <= t->mask; probes++, i = (i + 1) & t->mask) {
        int64_t cur = key_at(t, i);
        if (cur == conv)
            return i;
        if (cur == CONV_EMPTY)
            return UINT32_MAX;
    }
    return UINT32_MAX;
}

/* May the entry at j, whose home is home, move back into the hole at hole? */
static int can_fill_hole(const struct seqtab *t, uint32_t hole, uint32_t j, uint32_t home)
{
    return ((j - home) & t->mask) >= ((j - hole) & t->mask);
}

/* Close the SEQ_MOVING hole at i by shifting the rest of its chain back. */
static void close_hole(struct seqtab *t, uint32_t hole)
{
    uint32_t j = hole;
    for (;;) {
        j = (j + 1) & t->mask;
        int64_t cur = key_at(t, j);
        if (cur == CONV_EMPTY || j == hole)
            break;
        if (cur == SEQ_MOVING)
            continue; /* a second hole (repair only): it is closed later */
        if (!can_fill_hole(t, hole, j, hash_conv(cur) & t->mask))
            continue;
        struct seq_entry *from = &t->entries[j], *to = &t->entries[hole];
        atomic_store_explicit(&to->assigned,
                              atomic_load_explicit(&from->assigned, memory_order_relaxed),
                              memory_order_relaxed);
        atomic_store_explicit(&to->committed,
                              atomic_load_explicit(&from->committed, memory_order_relaxed),
                              memory_order_relaxed);
        atomic_store_explicit(&to->stored,
                              atomic_load_explicit(&from->stored, memory_order_relaxed),
                              memory_order_relaxed);
        set_key(t, hole, cur);     /* now twice: this copy is found first */
        set_key(t, j, SEQ_MOVING); /* the hole moves on */
        hole = j;
    }
    set_key(t, hole, CONV_EMPTY);
}

static void delete_entry(struct seqtab *t, uint32_t i)
{
    set_key(t, i, SEQ_MOVING);
    close_hole(t, i);
    atomic_fetch_sub_explicit(&t->count, 1, memory_order_relaxed);
}

/* Finish the deletion a dead process left half done; locked. */
static void repair_table(struct seqtab *t)
{
    uint32_t live = 0;
    for (uint32_t i = 0; i <= t->mask; i++) {
        int64_t cur = key_at(t, i);
        if (cur == SEQ_MOVING) {
            close_hole(t, i);
            i = UINT32_MAX; /* shifting may move entries anywhere: rescan */
            live = 0;
            continue;
        }
        if (cur != CONV_EMPTY && find_entry(t, cur) != i) {
            set_key(t, i, SEQ_MOVING); /* a stale second copy */
            close_hole(t, i);
            i = UINT32_MAX;
            live = 0;
            continue;
        }
        if (cur != CONV_EMPTY)
            live++;
    }
    atomic_store_explicit(&t->count, live, memory_order_relaxed);
}

static void lock_table(struct seqtab *t)
{
    int rc = pthread_mutex_lock(&t->lock);
    if (rc == EOWNERDEAD) {
        log_warning("sequencer: previous lock holder died, repairing the table");
        repair_table(t);
        pthread_mutex_consistent(&t->lock);
    }
}

static void unlock_table(struct seqtab *t)
{
    pthread_mutex_unlock(&t->lock);
}

static int is_evictable(const struct seqtab *t, uint32_t i)
{
    int64_t cur = key_at(t, i);
    const struct seq_entry *e = &t->entries[i];
    return cur != CONV_EMPTY && cur != SEQ_MOVING &&
           atomic_load_explicit(&e->assigned, memory_order_relaxed) ==
               atomic_load_explicit(&e->committed, memory_order_relaxed);
}

/* Remember that conv's last cseq was last when it left the table. */
static void remember_ghost(struct seqtab *t, int64_t conv, int64_t last)
{
    struct seq_ghost *g = &t->ghosts[t->ghost_next];
    t->ghost_next = (t->ghost_next + 1) % SEQ_GHOSTS;
    atomic_store_explicit(&g->conv, CONV_EMPTY, memory_order_seq_cst);
    atomic_store_explicit(&g->last, last, memory_order_seq_cst);
    atomic_store_explicit(&g->conv, conv, memory_order_seq_cst);
}

/* The largest last cseq remembered for conv, or -1. */
static int64_t ghost_last(const struct seqtab *t, int64_t conv)
{
    int64_t best = -1;
    for (uint32_t i = 0; i < SEQ_GHOSTS; i++) {
        const struct seq_ghost *g = &t->ghosts[i];
        if (atomic_load_explicit(&g->conv, memory_order_acquire) == conv) {
            int64_t last = atomic_load_explicit(&g->last, memory_order_relaxed);
            if (last > best)
                best = last;
        }
    }
    return best;
}

/* Forget every ghost of conv (its log is gone: it starts again at 1). */
static void drop_ghosts(struct seqtab *t, int64_t conv)
{
    for (uint32_t i = 0; i < SEQ_GHOSTS; i++)
        if (atomic_load_explicit(&t->ghosts[i].conv, memory_order_relaxed) == conv)
            atomic_store_explicit(&t->ghosts[i].conv, CONV_EMPTY, memory_order_seq_cst);
}

/* Evict one fully committed entry; 0, or -1 when every entry has cseqs in flight. */
static int evict_one(struct seqtab *t)
{
    for (uint32_t probes = 0; probes <= t->mask; probes++) {
        uint32_t i = t->hand;
        t->hand = (t->hand + 1) & t->mask;
        if (is_evictable(t, i)) {
            remember_ghost(t, key_at(t, i),
                           atomic_load_explicit(&t->entries[i].committed, memory_order_relaxed));
            delete_entry(t, i);
            return 0;
        }
    }
    return -1;
}

static int table_is_full(const struct seqtab *t)
{
    return atomic_load_explicit(&t->count, memory_order_relaxed) >= t->capacity;
}

static void insert_entry(struct seqtab *t, int64_t conv, int64_t last)
{
    uint32_t i = hash_conv(conv) & t->mask;
    while (key_at(t, i) != CONV_EMPTY)
        i = (i + 1) & t->mask;
    atomic_store_explicit(&t->entries[i].assigned, last, memory_order_relaxed);
    atomic_store_explicit(&t->entries[i].committed, last, memory_order_relaxed);
    atomic_store_explicit(&t->entries[i].stored, last, memory_order_relaxed);
    set_key(t, i, conv); /* values first, key last: valid when it appears */
    atomic_fetch_add_explicit(&t->count, 1, memory_order_relaxed);
}

int64_t seqtab_next(struct seqtab *t, int64_t conv)
{
    if (conv == CONV_EMPTY || conv == SEQ_MOVING)
        return SEQ_COLD;
    lock_table(t);
    int64_t next;
    uint32_t i = find_entry(t, conv);
    if (i != UINT32_MAX) {
        next = atomic_load_explicit(&t->entries[i].assigned, memory_order_relaxed) + 1;
        atomic_store_explicit(&t->entries[i].assigned, next, memory_order_seq_cst);
    } else if (table_is_full(t) && evict_one(t) != 0) {
        next = SEQ_FULL;
    } else {
        next = SEQ_COLD; /* room was made (or there is room) for the seed */
    }
    unlock_table(t);
    return next;
}

int seqtab_seed(struct seqtab *t, int64_t conv, int64_t last)
{
    if (conv == CONV_EMPTY || conv == SEQ_MOVING || last < 0)
        return -1;
    int rc = 0;
    lock_table(t);
    if (find_entry(t, conv) == UINT32_MAX) {
        int64_t ghost = ghost_last(t, conv);
        if (table_is_full(t) && evict_one(t) != 0)
            rc = -1;
        else
            insert_entry(t, conv, ghost > last ? ghost : last);
    }
    unlock_table(t);
    return rc;
}

void seqtab_committed(struct seqtab *t, int64_t conv, int64_t cseq)
{
    if (conv == CONV_EMPTY || conv == SEQ_MOVING)
        return;
    lock_table(t);
    uint32_t i = find_entry(t, conv);
    if (i != UINT32_MAX) {
        struct seq_entry *e = &t->entries[i];
        /* Never hand out a cseq the store already holds. */
        if (cseq > atomic_load_explicit(&e->assigned, memory_order_relaxed))
            atomic_store_explicit(&e->assigned, cseq, memory_order_seq_cst);
        if (cseq > atomic_load_explicit(&e->committed, memory_order_relaxed))
            atomic_store_explicit(&e->committed, cseq, memory_order_seq_cst);
    }
    unlock_table(t);
}

void seqtab_stored(struct seqtab *t, int64_t conv, int64_t cseq)
{
    if (conv == CONV_EMPTY || conv == SEQ_MOVING)
        return;
    lock_table(t);
    uint32_t i = find_entry(t, conv);
    if (i != UINT32_MAX && cseq > atomic_load_explicit(&t->entries[i].stored, memory_order_relaxed))
        atomic_store_explicit(&t->entries[i].stored, cseq, memory_order_seq_cst);
    unlock_table(t);
}

bool seqtab_maybe_stored(struct seqtab *t, int64_t conv, int64_t cseq)
{
    if (conv == CONV_EMPTY || conv == SEQ_MOVING)
        return true;
    lock_table(t);
    uint32_t i = find_entry(t, conv);
    bool maybe = i == UINT32_MAX ||
                 cseq <= atomic_load_explicit(&t->entries[i].stored, memory_order_relaxed);
    unlock_table(t);
    return maybe;
}

void seqtab_forget(struct seqtab *t, int64_t conv)
{
    if (conv == CONV_EMPTY || conv == SEQ_MOVING)
        return;
    lock_table(t);
    uint32_t i = find_entry(t, conv);
    if (i != UINT32_MAX)
        delete_entry(t, i);
    drop_ghosts(t, conv);
    unlock_table(t);
}

uint32_t seqtab_count(const struct seqtab *t)
{
    return atomic_load_explicit(&t->count, memory_order_relaxed);
}
