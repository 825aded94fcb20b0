/*
 * journal.c - the append journal: cseq'd messages not yet committed, one
 * ring per worker in one shared mapping (see journal.h).
 *
 * A ring is a byte array addressed by monotonic positions (pos % size).
 * head (the next put) and tail (everything before it is done) only grow;
 * head - tail bytes are in use.  A record is a header followed by the body,
 * padded to JOURNAL_ALIGN, and never straddles the end of the array: when it
 * does not fit before the end a pad record fills the rest (or, when even a
 * header does not fit there, the rest is skipped by rule).  The handle of a
 * record is its end position, so journal_done(h) is tail = max(tail, h): it
 * releases every record before h too.
 *
 * Crash safety: the ring is written only by its worker.  A record's state
 * is cleared first, then its fields (including its own position) and body
 * are written, and its state is stored last (seq_cst: a release).  Replay
 * walks from tail while the record there is complete and carries exactly
 * that position, so a torn record (state not set) and stale records of an
 * earlier lap (another position) end the walk; head need not have been
 * advanced by the dead writer.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>

#include "server/journal.h"

#define JOURNAL_ALIGN    8u
#define JOURNAL_MIN_RING 4096u
#define REC_FREE         0u /* being written, or never written */
#define REC_MSG          1u /* a complete message */
#define REC_PAD          2u /* skip to the start of the array */

struct journal_rec {
    _Atomic uint32_t state;
    uint32_t len; /* the whole record, header and padded body */
    _Atomic uint64_t pos;
    int64_t conv, cseq, mid, ts;
    int32_t sender;
    uint32_t body_len;
    /* body bytes follow */
};

struct journal_ring {
    _Atomic uint64_t head;
    _Atomic uint64_t tail;
};

struct journal {
    size_t map_size;
    uint32_t nworkers;
    uint32_t ring_bytes;
    /* struct journal_ring rings[nworkers], then nworkers arrays of ring_bytes */
};

#define REC_HDR ((uint32_t)sizeof(struct journal_rec))

static struct journal_ring *ring_of(const struct journal *j, uint32_t worker)
{
    return (struct journal_ring *)((char *)(uintptr_t)j + sizeof(struct journal)) + worker;
}

static char *data_of(const struct journal *j, uint32_t worker)
{
    char *base = (char *)(uintptr_t)j + sizeof(struct journal) +
                 (size_t)j->nworkers * sizeof(struct journal_ring);
    return base + (size_t)worker * j->ring_bytes;
}

static size_t align_up(size_t n)
{
    return (n + JOURNAL_ALIGN - 1) & ~(size_t)(JOURNAL_ALIGN - 1);
}

struct journal *journal_create(uint32_t nworkers, size_t ring_bytes)
{
    if (nworkers == 0 || ring_bytes < JOURNAL_MIN_RING || ring_bytes > UINT32_MAX / 2) {
        errno = EINVAL;
        return NULL;
    }
    ring_bytes &= ~(size_t)(JOURNAL_ALIGN - 1);
    size_t size = sizeof(struct journal) + (size_t)nworkers * sizeof(struct journal_ring) +
                  (size_t)nworkers * ring_bytes;
    struct journal *j = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (j == MAP_FAILED)
        return NULL;
    j->map_size = size;
    j->nworkers = nworkers;
    j->ring_bytes = (uint32_t)ring_bytes;
    for (uint32_t w = 0; w < nworkers; w++) {
        atomic_init(&ring_of(j, w)->head, 0);
        atomic_init(&ring_of(j, w)->tail, 0);
    }
    return j;
}

void journal_destroy(struct journal *j)
{
    if (j)
        munmap(j, j->map_size);
}

/* Bytes from pos to the end of the array. */
static uint32_t room_to_end(const struct journal *j, uint64_t pos)
{
    return j->ring_bytes - (uint32_t)(pos % j->ring_bytes);
}

static struct journal_rec *rec_at(const struct journal *j, uint32_t worker, uint64_t pos)
{
    return (struct journal_rec *)(data_of(j, worker) + pos % j->ring_bytes);
}

/* Write a pad record at pos covering the rest of the array (if a header fits). */
static void write_pad(struct journal *j, uint32_t worker, uint64_t pos)
{
    uint32_t rest = room_to_end(j, pos);
    if (rest < REC_HDR)
        return; /* skipped by rule, see next_record_pos */
    struct journal_rec *r = rec_at(j, worker, pos);
    atomic_store_explicit(&r->state, REC_FREE, memory_order_seq_cst);
    r->len = rest;
    atomic_store_explicit(&r->pos, pos, memory_order_relaxed);
    atomic_store_explicit(&r->state, REC_PAD, memory_order_seq_cst);
}

uint64_t journal_put(struct journal *j, uint32_t worker, const struct store_logmsg *m)
{
    if (worker >= j->nworkers || (m->len > 0 && m->body == NULL))
        return 0;
    size_t need = align_up((size_t)REC_HDR + m->len);
    if (need > j->ring_bytes)
        return 0;
    struct journal_ring *ring = ring_of(j, worker);
    uint64_t head = atomic_load_explicit(&ring->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&ring->tail, memory_order_acquire);
    uint32_t rest = room_to_end(j, head);
    uint64_t skip = rest < need ? rest : 0;
    if (head + skip + need - tail > j->ring_bytes)
        return 0;
    if (skip) {
        write_pad(j, worker, head);
        head += skip;
    }
    struct journal_rec *r = rec_at(j, worker, head);
    atomic_store_explicit(&r->state, REC_FREE, memory_order_seq_cst);
    r->len = (uint32_t)need;
    atomic_store_explicit(&r->pos, head, memory_order_relaxed);
    r->conv = m->conv;
    r->cseq = m->cseq;
    r->mid = m->mid;
    r->ts = m->ts;
    r->sender = m->sender;
    r->body_len = (uint32_t)m->len;
    if (m->len)
        memcpy((char *)(r + 1), m->body, m->len);
    atomic_store_explicit(&r->state, REC_MSG, memory_order_seq_cst);
    uint64_t end = head + need;
    atomic_store_explicit(&ring->head, end, memory_order_release);
    return end;
}

void journal_done(struct journal *j, uint32_t worker, uint64_t handle)
{
    if (worker >= j->nworkers)
        return;
    struct journal_ring *ring = ring_of(j, worker);
    uint64_t head = atomic_load_explicit(&ring->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&ring->tail, memory_order_relaxed);
    if (handle > head)
        handle = head; /* not a handle of this ring: release no more than was put */
    if (handle > tail)
        atomic_store_explicit(&ring->tail, handle, memory_order_release);
}

/*
 * The complete record at pos (after any skip of the array's end), its
 * position in *at; NULL when the walk ends there (torn, stale or garbage).
 */
static const struct journal_rec *complete_record(const struct journal *j, uint32_t worker,
                                                 uint64_t pos, uint64_t *at)
{
    for (int hops = 0; hops < 2; hops++) {
        uint32_t rest = room_to_end(j, pos);
        if (rest < REC_HDR) {
            pos += rest;
            continue;
        }
        const struct journal_rec *r = rec_at(j, worker, pos);
        uint32_t state =
            atomic_load_explicit(&((struct journal_rec *)r)->state, memory_order_acquire);
        if ((state != REC_MSG && state != REC_PAD) ||
            atomic_load_explicit(&((struct journal_rec *)r)->pos, memory_order_relaxed) != pos ||
            r->len < REC_HDR || r->len > rest || r->len % JOURNAL_ALIGN != 0)
            return NULL;
        if (state == REC_PAD) {
            pos += r->len;
            continue;
        }
        if ((size_t)REC_HDR + r->body_len > r->len)
            return NULL;
        *at = pos;
        return r;
    }
    return NULL;
}

size_t journal_replay(struct journal *j, uint32_t worker,
                      void (*cb)(void *arg, uint64_t handle, const struct store_logmsg *m),
                      void *arg)
{
    if (worker >= j->nworkers)
        return 0;
    struct journal_ring *ring = ring_of(j, worker);
    uint64_t tail = atomic_load_explicit(&ring->tail, memory_order_acquire);
    uint64_t pos = tail, at;
    size_t n = 0;
    const struct journal_rec *r;
    while (pos - tail < j->ring_bytes && (r = complete_record(j, worker, pos, &at)) != NULL) {
        uint64_t end = at + r->len;
        if (end - tail > j->ring_bytes)
            break;
        struct store_logmsg m = {
            .conv = r->conv,
            .cseq = r->cseq,
            .mid = r->mid,
            .ts = r->ts,
            .sender = r->sender,
            .body = (const char *)(r + 1),
            .len = r->body_len,
        };
        /* The walk's end is where the next put goes, whatever head the dead writer left. */
        atomic_store_explicit(&ring->head, end, memory_order_release);
        if (cb)
            cb(arg, end, &m);
        n++;
        pos = end;
    }
    if (n == 0)
        atomic_store_explicit(&ring->head, tail, memory_order_release);
    return n;
}

size_t journal_used(const struct journal *j, uint32_t worker)
{
    if (worker >= j->nworkers)
        return 0;
    const struct journal_ring *ring = ring_of(j, worker);
    uint64_t head =
        atomic_load_explicit(&((struct journal_ring *)ring)->head, memory_order_acquire);
    uint64_t tail =
        atomic_load_explicit(&((struct journal_ring *)ring)->tail, memory_order_acquire);
    return (size_t)(head - tail);
}
