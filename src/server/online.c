/*
 * online.c - the shared-memory online-user table (see online.h).
 *
 * Layout of the mapping: a header (robust mutex, counters, per-worker stats)
 * followed by a power-of-two array of entries, twice max_users, so probe
 * chains stay short.  An entry is empty (uid 0), a tombstone (UID_TOMB) or a
 * live session.  A user with several sessions has several entries, all on
 * the probe chain of its hash: a lookup walks the chain to its first empty
 * entry.  A removal turns the entry into a tombstone, or into an empty
 * entry (with the tombstones before it) when the next entry is empty, which
 * keeps chains from filling with tombstones under churn.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/inttable.h"
#include "server/online.h"

#define UID_EMPTY 0u
#define UID_TOMB  0xffffffffu
/*
 * mid = node_id << 44 | sequence.  The sequence counts MID_PER_MS per
 * millisecond of wall-clock time since MID_EPOCH_MS (40 bits of milliseconds:
 * until 2060), and each mid takes max(last + 1, clock * MID_PER_MS): it never
 * goes below one already issued, and after a restart it starts from the
 * clock.  The clock alone is not enough: a burst above MID_PER_MS mids a
 * millisecond runs the sequence ahead of it, and a quick restart would then
 * reissue mids.  So the sequence is also reserved in server.mid_file: before
 * the sequence passes the reserved value, a higher one (MID_RESERVE more) is
 * written there, and a start begins above what the file holds.  A mid stays
 * below 2^53 (exact in JavaScript) for node_id <= 511.
 */
#define MID_NODE_SHIFT 44
#define MID_PER_MS     16
#define MID_EPOCH_MS   INT64_C(1767225600000) /* 2026-01-01T00:00:00Z */
#define MID_SEQ_MASK   ((INT64_C(1) << MID_NODE_SHIFT) - 1)
#define MID_RESERVE    (INT64_C(1) << 20) /* sequence reserved per write of the file */
#define MID_FILE_MAX   32                 /* bytes of the file's decimal text */

struct online_entry {
    _Atomic uint32_t uid;
    uint32_t device;      /* online_device_hash; written and read under the lock only */
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
    _Atomic int64_t mid;          /* the last sequence issued */
    _Atomic int64_t mid_reserved; /* the sequence written in server.mid_file */
    struct worker_stats stats[ONLINE_MAX_WORKERS];
    struct relay_stats relay;
    struct online_entry entries[];
};

struct online_table {
    struct online_shared *sh;
    size_t map_size;
    uint32_t mask; /* entries - 1 */
    uint32_t max_users;
    int64_t mid_node; /* node_id << MID_NODE_SHIFT */
    int mid_fd;       /* server.mid_file, -1: none */
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
    size_t size = sizeof(struct online_shared) + (size_t)n * sizeof(struct online_entry) +
                  (size_t)n * sizeof(struct online_note); /* notes follow the entries */
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
    atomic_init(&t->sh->mid, 0);
    t->mid_fd = -1;
    atomic_init(&t->sh->mid_reserved, 0);
    return t;
}

void online_destroy(struct online_table *t)
{
    if (t == NULL)
        return;
    if (t->mid_fd >= 0)
        close(t->mid_fd);
    munmap(t->sh, t->map_size);
    free(t);
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

static void erase_entry(struct online_table *t, uint32_t i);

uint32_t online_device_hash(const char *device)
{
    /* FNV-1a: two devices of one user colliding is a 1 in 2^32 chance, and
       costs only that the older of the two is replaced. */
    const unsigned char *p = (const unsigned char *)(device && *device ? device : "default");
    uint32_t h = 2166136261u;
    while (*p)
        h = (h ^ *p++) * 16777619u;
    return h;
}

/* Session generations are handed out in order (and wrap): a is older than b. */
static bool gen_older(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) < 0;
}

/* The entries holding uid (up to ONLINE_USER_MAX); locked. */
static size_t find_rows(struct online_table *t, uint32_t uid, uint32_t rows[ONLINE_USER_MAX])
{
    size_t n = 0;
    uint32_t i = int_hash(uid) & t->mask;
    for (uint32_t probes = 0; probes <= t->mask; probes++, i = (i + 1) & t->mask) {
        uint32_t cur = atomic_load_explicit(&t->sh->entries[i].uid, memory_order_relaxed);
        if (cur == UID_EMPTY)
            break;
        if (cur == uid && n < ONLINE_USER_MAX)
            rows[n++] = i;
    }
    return n;
}

/* Entry i's note: the notes array follows the entries (the layout is this process's copy). */
static struct online_note *note_of(struct online_table *t, uint32_t i)
{
    struct online_note *notes = (struct online_note *)(void *)&t->sh->entries[t->mask + 1];
    return &notes[i];
}

/* Keep a login's note at entry i (or forget the entry's old one); locked. */
static void keep_note(struct online_table *t, uint32_t i, const struct online_note *note)
{
    struct online_note *dst = note_of(t, i);
    if (note != NULL)
        *dst = *note;
    else
        memset(dst, 0, sizeof *dst);
}

static struct online_loc row_loc(struct online_table *t, uint32_t i)
{
    struct online_loc l;
    unpack_loc(atomic_load_explicit(&t->sh->entries[i].loc, memory_order_relaxed), &l);
    return l;
}

/* Mark for kicking every row of rows[0..n) the policy replaces; false: refused. */
static bool choose_replaced(struct online_table *t, const uint32_t *rows, size_t n,
                            const struct online_policy *p, bool *kick)
{
    size_t kept = 0;
    for (size_t k = 0; k < n; k++) {
        bool same = t->sh->entries[rows[k]].device == p->device;
        kick[k] = p->mode == ONLINE_TAKEOVER || same;
        kept += !kick[k];
    }
    if (p->mode == ONLINE_REFUSE && (kept > 0 || (!p->named && n > 0)))
        return false;
    uint32_t max = p->max >= 1 && p->max <= ONLINE_USER_MAX ? p->max : 1;
    while (p->mode == ONLINE_MULTI && kept >= max) {
        size_t oldest = n;
        for (size_t k = 0; k < n; k++)
            if (!kick[k] &&
                (oldest == n || gen_older(row_loc(t, rows[k]).gen, row_loc(t, rows[oldest]).gen)))
                oldest = k;
        kick[oldest] = true;
        kept--;
    }
    return true;
}

/* A new entry for uid on its probe chain: the first reusable one; locked. */
static int add_row(struct online_table *t, uint32_t uid, uint64_t packed, uint32_t device,
                   const struct online_note *note)
{
    if (atomic_load_explicit(&t->sh->count, memory_order_relaxed) >= t->max_users)
        return -1;
    uint32_t i = int_hash(uid) & t->mask;
    for (uint32_t probes = 0; probes <= t->mask; probes++, i = (i + 1) & t->mask) {
        uint32_t cur = atomic_load_explicit(&t->sh->entries[i].uid, memory_order_relaxed);
        if (cur != UID_EMPTY && cur != UID_TOMB)
            continue;
        struct online_entry *e = &t->sh->entries[i];
        e->device = device;
        keep_note(t, i, note);
        atomic_store_explicit(&e->loc, packed, memory_order_relaxed);
        atomic_store_explicit(&e->uid, uid, memory_order_release);
        atomic_fetch_add_explicit(&t->sh->count, 1, memory_order_relaxed);
        return 0;
    }
    return -1;
}

int online_login(struct online_table *t, int32_t uid, const struct online_loc *loc,
                 const struct online_policy *p, struct online_loc *kicked, size_t *nkicked)
{
    uint32_t rows[ONLINE_USER_MAX];
    bool kick[ONLINE_USER_MAX];
    *nkicked = 0;
    online_lock(t);
    size_t n = find_rows(t, (uint32_t)uid, rows);
    if (!choose_replaced(t, rows, n, p, kick)) {
        online_unlock(t);
        return ONLINE_REFUSED;
    }
    /*
     * The first replaced entry takes the new location in one store, so a
     * reader sees the old session or the new one, never neither; the other
     * replaced entries are erased (from the last: erasing keeps earlier
     * entries where they are).
     */
    int rc = 0;
    size_t reused = n;
    for (size_t k = 0; k < n; k++) {
        if (!kick[k])
            continue;
        kicked[(*nkicked)++] = row_loc(t, rows[k]);
        if (reused == n) {
            t->sh->entries[rows[k]].device = p->device;
            keep_note(t, rows[k], p->note);
            atomic_store_explicit(&t->sh->entries[rows[k]].loc, pack_loc(loc),
                                  memory_order_release);
            reused = k;
        }
    }
    for (size_t k = n; k-- > 0;)
        if (kick[k] && k != reused)
            erase_entry(t, rows[k]);
    if (reused == n)
        rc = add_row(t, (uint32_t)uid, pack_loc(loc), p->device, p->note);
    online_unlock(t);
    return rc;
}

int online_insert(struct online_table *t, int32_t uid, const struct online_loc *loc,
                  struct online_loc *prev)
{
    struct online_policy p = { .mode = ONLINE_TAKEOVER, .device = online_device_hash(NULL) };
    struct online_loc kicked[ONLINE_USER_MAX];
    size_t n;
    int rc = online_login(t, uid, loc, &p, kicked, &n);
    if (rc < 0)
        return -1;
    if (n > 0)
        *prev = kicked[n - 1]; /* the newest replaced */
    return n > 0;
}

size_t online_sessions(const struct online_table *t, int32_t uid, struct online_loc *out,
                       size_t max)
{
    size_t n = 0;
    uint32_t i = int_hash((uint32_t)uid) & t->mask;
    for (uint32_t probes = 0; probes <= t->mask && n < max; probes++, i = (i + 1) & t->mask) {
        struct online_entry *e = &t->sh->entries[i];
        uint32_t cur = atomic_load_explicit(&e->uid, memory_order_acquire);
        if (cur == UID_EMPTY)
            break;
        if (cur != (uint32_t)uid)
            continue;
        uint64_t v = atomic_load_explicit(&e->loc, memory_order_acquire);
        if (atomic_load_explicit(&e->uid, memory_order_acquire) != (uint32_t)uid)
            continue; /* removed while we looked */
        struct online_loc l;
        unpack_loc(v, &l);
        if (!loc_valid(&l))
            continue;
        size_t k = n++;
        for (; k > 0 && gen_older(l.gen, out[k - 1].gen); k--)
            out[k] = out[k - 1];
        out[k] = l;
    }
    return n;
}

size_t online_sessions_noted(struct online_table *t, int32_t uid, struct online_loc *locs,
                             struct online_note *notes, size_t max)
{
    uint32_t rows[ONLINE_USER_MAX];
    online_lock(t);
    size_t n = find_rows(t, (uint32_t)uid, rows), k = 0;
    for (size_t r = 0; r < n && k < max; r++) {
        struct online_loc l = row_loc(t, rows[r]);
        if (!loc_valid(&l))
            continue;
        locs[k] = l;
        notes[k++] = *note_of(t, rows[r]);
    }
    online_unlock(t);
    return k;
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
    uint32_t rows[ONLINE_USER_MAX];
    int removed = 0;
    online_lock(t);
    size_t n = find_rows(t, (uint32_t)uid, rows);
    for (size_t k = 0; k < n && !removed; k++)
        if (row_loc(t, rows[k]).gen == gen) {
            erase_entry(t, rows[k]);
            removed = 1;
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
    t->mid_node = (int64_t)node_id << MID_NODE_SHIFT;
}

/* The lowest sequence the wall clock allows now. */
static int64_t mid_clock_floor(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 - MID_EPOCH_MS;
    return ms > 0 ? ms * MID_PER_MS : 0;
}

/* Write reserved as the file's whole content, synced.  0 or -1 (errno). */
static int mid_file_write(int fd, int64_t reserved)
{
    char text[MID_FILE_MAX];
    int n = snprintf(text, sizeof text, "%lld\n", (long long)reserved);
    if (pwrite(fd, text, (size_t)n, 0) != n || ftruncate(fd, n) < 0 || fdatasync(fd) < 0)
        return -1;
    return 0;
}

/* The sequence saved in the file: 0 for an empty file, -1 when unreadable. */
static int64_t mid_file_read(int fd)
{
    char text[MID_FILE_MAX];
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    if (n < 0)
        return -1;
    text[n] = '\0';
    if (n == 0)
        return 0;
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || (*end != '\n' && *end != '\0') || v < 0)
        return -1;
    return v;
}

int online_mid_file(struct online_table *t, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "server.mid_file %s: %s", path, strerror(errno));
        return -1;
    }
    int64_t saved = mid_file_read(fd);
    if (saved < 0) {
        snprintf(err, errlen, "server.mid_file %s: not a number written by qchatd", path);
        close(fd);
        return -1;
    }
    int64_t start = saved > mid_clock_floor() ? saved : mid_clock_floor();
    if (mid_file_write(fd, start + MID_RESERVE) < 0) {
        snprintf(err, errlen, "server.mid_file %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    atomic_store(&t->sh->mid, start);
    atomic_store(&t->sh->mid_reserved, start + MID_RESERVE);
    t->mid_fd = fd;
    return 0;
}

/*
 * Half the reservation used: the process that moves it writes the file, well
 * before any process can pass the value reserved before.
 */
static void mid_reserve_ahead(struct online_table *t, int64_t seq)
{
    int64_t reserved = atomic_load_explicit(&t->sh->mid_reserved, memory_order_relaxed);
    if (t->mid_fd < 0 || seq < reserved - MID_RESERVE / 2)
        return;
    int64_t next = seq + MID_RESERVE;
    if (!atomic_compare_exchange_strong(&t->sh->mid_reserved, &reserved, next))
        return; /* another process took it */
    if (mid_file_write(t->mid_fd, next) < 0)
        log_error("server.mid_file: cannot reserve message ids up to %lld: %s", (long long)next,
                  strerror(errno));
}

int64_t online_next_mid(struct online_table *t)
{
    int64_t least = mid_clock_floor();
    int64_t last = atomic_load_explicit(&t->sh->mid, memory_order_relaxed), next;
    do
        next = last + 1 > least ? last + 1 : least;
    while (!atomic_compare_exchange_weak_explicit(&t->sh->mid, &last, next, memory_order_relaxed,
                                                  memory_order_relaxed));
    mid_reserve_ahead(t, next);
    return t->mid_node | (next & MID_SEQ_MASK);
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
