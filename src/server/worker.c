/*
 * worker.c - the state every part of a worker shares (see worker.h):
 * connection slots, reusable buffers, cached time.
 */
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "common/fatal.h"
#include "server/slab.h"
#include "server/worker.h"

/* ---- connection slots --------------------------------------------------- */

/* A connection slot: an entry of the slab whose index the online table names. */
struct conn_slot {
    struct slab_hdr h;
    struct conn *c;
};

int worker_init_slots(struct worker *w)
{
    w->slots = slab_new(sizeof(struct conn_slot));
    if (w->slots == NULL)
        return -1;
    slab_set_max(w->slots, ONLINE_SLOT_MAX + 1);
    return 0;
}

uint32_t worker_slot_count(const struct worker *w)
{
    return slab_capacity(w->slots);
}

struct conn *worker_conn(struct worker *w, uint32_t slot)
{
    if (slot >= slab_capacity(w->slots))
        return NULL;
    struct conn_slot *s = slab_at(w->slots, slot);
    return s->h.live ? s->c : NULL;
}

int worker_take_slot(struct worker *w, struct conn *c, uint32_t *slot)
{
    uint32_t handle;
    struct conn_slot *s = slab_alloc(w->slots, &handle);
    if (s == NULL)
        return -1;
    s->c = c;
    *slot = slab_index(handle);
    w->nconns++;
    return 0;
}

void worker_release_slot(struct worker *w, uint32_t slot, const struct conn *c)
{
    qc_assert(worker_conn(w, slot) == c);
    slab_free(w->slots, slab_handle_of(w->slots, slot));
    w->nconns--;
}

/* ---- reusable buffers ----------------------------------------------------- */

struct buf worker_buf_take(struct worker *w)
{
    struct buf b;
    if (w->nspare > 0) {
        b = w->spare[--w->nspare];
        buf_reset(&b);
    } else {
        buf_init(&b);
    }
    return b;
}

void worker_buf_give(struct worker *w, struct buf *b)
{
    if (b->data != NULL && b->cap <= WORKER_SPARE_MAX_CAP && w->nspare < WORKER_SPARE_BUFS)
        w->spare[w->nspare++] = *b;
    else
        buf_free(b);
    buf_init(b);
}

/* ---- time --------------------------------------------------------------- */

const char *worker_time_str(struct worker *w, int64_t *epoch_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    *epoch_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (ts.tv_sec != w->time_sec) {
        struct tm tm;
        localtime_r(&ts.tv_sec, &tm);
        strftime(w->time_str, sizeof w->time_str, "%Y-%m-%d %H:%M:%S", &tm);
        w->time_sec = ts.tv_sec;
    }
    return w->time_str;
}
