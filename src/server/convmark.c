/*
 * convmark.c - the high-water marks of chats not stored with the log off
 * (see convmark.h).
 *
 * Each note keeps only the highest cseq of its conversation (a small hash
 * index over the batch), so the batch holds one mark per conversation.  At
 * the end of a loop turn, when CONVMARK_PERIOD_MS have passed since the
 * last job (so at once after an idle spell), the batch goes to the storage
 * thread in conv order as one job (store conv_raise, one transaction).
 * Under ping-pong load a conversation's marks of a whole period thus cost
 * one upsert, not one per loop turn (that was an upsert per message).  A
 * failed or refused job puts its marks back to be sent with the next
 * period's: the sequencer keeps those conversations (their cseqs are not
 * committed, so never evicted) until a job commits, so nothing is handed
 * out twice meanwhile.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "server/convmark.h"
#include "server/seqtab.h"
#include "server/storage.h"
#include "server/worker.h"

#define CONVMARK_BATCH_MAX    65536 /* conversations held before a period ends: flushed early */
#define CONVMARK_PERIOD_MS    100   /* at most one conv_raise job per worker this often */
#define CONVMARK_FIRST_CAP    64    /* marks the first note makes room for */
#define CONVMARK_STOP_WAIT_MS 100   /* at a stop: one wait for the storage thread */
#define CONVMARK_STOP_MAX_MS  5000  /* at a stop: time before the marks left are given up */

struct convmark_batch {
    struct store_convmark *marks; /* one per conversation, the highest cseq noted */
    size_t n, cap;
    uint32_t *index;  /* 2 * cap slots: 1 + position in marks, 0 empty */
    int64_t sent_ms;  /* w->now_ms of the last job handed to the storage thread */
    size_t in_flight; /* jobs handed to the storage thread, not yet done */
    bool failing;     /* the last job failed: one warning per outage */
};

struct raise_job {
    struct worker *w;
    struct store_convmark *marks;
    size_t n;
};

static struct convmark_batch *batch_of(struct worker *w)
{
    if (w->convmarks == NULL)
        w->convmarks = calloc(1, sizeof *w->convmarks);
    return w->convmarks;
}

static size_t slot_of(const uint32_t *index, size_t slots, const struct store_convmark *marks,
                      int64_t conv)
{
    uint64_t h = (uint64_t)conv * 0x9E3779B97F4A7C15ull;
    size_t i = (size_t)(h ^ (h >> 29)) & (slots - 1);
    while (index[i] != 0 && marks[index[i] - 1].conv != conv)
        i = (i + 1) & (slots - 1);
    return i;
}

/* Index every mark of b into index (slots: a power of two, at least twice b->n, zeroed). */
static void index_marks(const struct convmark_batch *b, uint32_t *index, size_t slots)
{
    for (size_t k = 0; k < b->n; k++)
        index[slot_of(index, slots, b->marks, b->marks[k].conv)] = (uint32_t)k + 1;
}

/* Room for one more conversation (marks and index grown together). */
static bool batch_has_room(struct convmark_batch *b)
{
    if (b->n < b->cap)
        return true;
    size_t ncap = b->cap ? b->cap * 2 : CONVMARK_FIRST_CAP;
    struct store_convmark *g = realloc(b->marks, ncap * sizeof *g);
    if (g == NULL)
        return false;
    b->marks = g;
    uint32_t *index = calloc(2 * ncap, sizeof *index);
    if (index == NULL)
        return false;
    index_marks(b, index, 2 * ncap);
    free(b->index);
    b->index = index;
    b->cap = ncap;
    return true;
}

/* m kept in the batch: its conversation's mark raised to it, or added.  false: out of memory. */
static bool keep_highest(struct convmark_batch *b, const struct store_convmark *m)
{
    if (b->cap > 0) {
        size_t i = slot_of(b->index, 2 * b->cap, b->marks, m->conv);
        if (b->index[i] != 0) {
            struct store_convmark *have = &b->marks[b->index[i] - 1];
            if (m->cseq > have->cseq)
                *have = *m;
            return true;
        }
    }
    if (!batch_has_room(b))
        return false;
    b->marks[b->n] = *m;
    b->index[slot_of(b->index, 2 * b->cap, b->marks, m->conv)] = (uint32_t)++b->n;
    return true;
}

void convmark_note(struct worker *w, int64_t conv, int64_t cseq, int64_t ts)
{
    struct convmark_batch *b = batch_of(w);
    struct store_convmark m = { conv, cseq, ts };
    if (b == NULL || !keep_highest(b, &m)) {
        /* The entry stays uncommitted in the sequencer: never evicted, never reused. */
        log_error("conv %lld cseq %lld: out of memory for its high-water mark", (long long)conv,
                  (long long)cseq);
        return;
    }
    if (b->n >= CONVMARK_BATCH_MAX)
        convmark_flush(w);
}

/* By conversation (one mark each): the order every job's rows are written in. */
static int by_conv(const void *x, const void *y)
{
    const struct store_convmark *a = x, *b = y;
    return a->conv < b->conv ? -1 : a->conv > b->conv;
}

static int raise_on_store(const struct store_ops *ops, struct store *st, void *arg)
{
    struct raise_job *j = arg;
    return ops->conv_raise ? ops->conv_raise(st, j->marks, j->n) : QC_EINTERNAL;
}

/* Marks whose job did not commit go out again with the next period's. */
static void put_back(struct worker *w, const struct store_convmark *m, size_t n)
{
    struct convmark_batch *b = batch_of(w);
    size_t lost = 0;
    for (size_t i = 0; i < n; i++)
        if (b == NULL || !keep_highest(b, &m[i]))
            lost++;
    if (lost > 0)
        log_error("%zu high-water mark(s) lost: out of memory (those conversations stay "
                  "in the sequencer)",
                  lost);
}

static void raise_done(void *arg, int err)
{
    struct raise_job *j = arg;
    struct worker *w = j->w;
    struct convmark_batch *b = batch_of(w);
    if (b)
        b->in_flight--;
    if (err) {
        if (b && !b->failing)
            log_warning("high-water marks of %zu conversation(s) not stored: %s (sent again)", j->n,
                        qc_strerror(err));
        if (b)
            b->failing = true;
        put_back(w, j->marks, j->n);
    } else {
        if (b && b->failing)
            log_info("high-water marks stored again");
        if (b)
            b->failing = false;
        for (size_t i = 0; i < j->n; i++)
            seqtab_committed(w->seqtab, j->marks[i].conv, j->marks[i].cseq);
    }
    free(j->marks);
    free(j);
}

void convmark_flush(struct worker *w)
{
    struct convmark_batch *b = w->convmarks;
    if (b == NULL || b->n == 0 || w->storage == NULL || w->seqtab == NULL)
        return;
    struct raise_job *j = malloc(sizeof *j);
    if (j == NULL)
        return; /* kept for the next turn */
    qsort(b->marks, b->n, sizeof *b->marks, by_conv);
    *j = (struct raise_job){ w, b->marks, b->n };
    if (storage_submit(w->storage, raise_on_store, raise_done, j) != QC_OK) {
        /* Queue full: the marks stay for the next turn (no warning: it is back-pressure). */
        free(j);
        memset(b->index, 0, 2 * b->cap * sizeof *b->index); /* indexed again, sorted */
        index_marks(b, b->index, 2 * b->cap);
        return;
    }
    free(b->index);
    b->index = NULL;
    b->marks = NULL;
    b->n = b->cap = 0;
    b->sent_ms = w->now_ms;
    b->in_flight++;
}

/*
 * At a stop every mark must reach the store: with the node stopped the
 * sequencer is gone, and a conversation seeded from a lagging last cseq
 * would hand the cseqs of its live-only chats out again.  So the marks go
 * out even when the queue is full (waiting for it to drain), the job's
 * outcome is waited for, and a failed job is sent again, for a bounded
 * time; what is left then is logged.
 */
void convmark_stop(struct worker *w)
{
    struct convmark_batch *b = w->convmarks;
    int64_t deadline = clock_now_ms() + CONVMARK_STOP_MAX_MS;
    while (b != NULL && w->storage != NULL && w->seqtab != NULL && (b->n > 0 || b->in_flight > 0) &&
           clock_now_ms() < deadline) {
        if (b->n > 0)
            convmark_flush(w);
        storage_kick(w->storage); /* appends filling the queue wait for the kick */
        struct pollfd p = { .fd = storage_fd(w->storage), .events = POLLIN };
        if (poll(&p, 1, CONVMARK_STOP_WAIT_MS) < 0 && errno != EINTR)
            break;
        (void)storage_complete(w->storage);
    }
    if (b != NULL && (b->n > 0 || b->in_flight > 0))
        log_error("stopping: the high-water marks of %zu conversation(s) not stored (%zu job(s) "
                  "unfinished): after a restart of the node their cseqs may be handed out again",
                  b->n, b->in_flight);
}

void convmark_end_turn(struct worker *w)
{
    struct convmark_batch *b = w->convmarks;
    if (b != NULL && b->n > 0 && w->now_ms - b->sent_ms >= CONVMARK_PERIOD_MS)
        convmark_flush(w);
}
