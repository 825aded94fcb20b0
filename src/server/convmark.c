/*
 * convmark.c - the high-water marks of chats not stored with the log off
 * (see convmark.h).
 *
 * The notes of one loop turn are sorted by conversation, the highest cseq
 * of each kept, and handed to the storage thread in one job (store
 * conv_raise, one transaction, in conv order).  A failed or refused job
 * puts its marks back to be sent with the next turn's: the sequencer keeps
 * those conversations (their cseqs are not committed, so never evicted)
 * until a job commits, so nothing is handed out twice meanwhile.
 */
#include <stdlib.h>

#include "common/log.h"
#include "server/convmark.h"
#include "server/seqtab.h"
#include "server/storage.h"
#include "server/worker.h"

#define CONVMARK_BATCH_MAX 65536 /* marks held before a turn ends: flushed early beyond */

struct convmark_batch {
    struct store_convmark *marks;
    size_t n, cap;
    bool failing; /* the last job failed: one warning per outage */
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

static bool batch_has_room(struct convmark_batch *b, size_t more)
{
    if (b->n + more <= b->cap)
        return true;
    size_t ncap = b->cap ? b->cap : 64;
    while (ncap < b->n + more)
        ncap *= 2;
    struct store_convmark *g = realloc(b->marks, ncap * sizeof *g);
    if (g == NULL)
        return false;
    b->marks = g;
    b->cap = ncap;
    return true;
}

void convmark_note(struct worker *w, int64_t conv, int64_t cseq, int64_t ts)
{
    struct convmark_batch *b = batch_of(w);
    if (b == NULL || !batch_has_room(b, 1)) {
        /* The entry stays uncommitted in the sequencer: never evicted, never reused. */
        log_error("conv %lld cseq %lld: out of memory for its high-water mark", (long long)conv,
                  (long long)cseq);
        return;
    }
    b->marks[b->n++] = (struct store_convmark){ conv, cseq, ts };
    if (b->n >= CONVMARK_BATCH_MAX)
        convmark_flush(w);
}

/* By conversation, the highest cseq first. */
static int by_conv_then_highest(const void *x, const void *y)
{
    const struct store_convmark *a = x, *b = y;
    if (a->conv != b->conv)
        return a->conv < b->conv ? -1 : 1;
    return a->cseq > b->cseq ? -1 : a->cseq < b->cseq;
}

/* Sorted marks: the first (highest) of each conversation kept, in place.  How many. */
static size_t keep_highest(struct store_convmark *m, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || m[k - 1].conv != m[i].conv)
            m[k++] = m[i];
    return k;
}

static int raise_on_store(const struct store_ops *ops, struct store *st, void *arg)
{
    struct raise_job *j = arg;
    return ops->conv_raise ? ops->conv_raise(st, j->marks, j->n) : QC_EINTERNAL;
}

/* Marks whose job did not commit go out again with the next turn's. */
static void put_back(struct worker *w, const struct store_convmark *m, size_t n)
{
    struct convmark_batch *b = batch_of(w);
    if (b == NULL || !batch_has_room(b, n)) {
        log_error("%zu high-water mark(s) lost: out of memory (those conversations stay "
                  "in the sequencer)",
                  n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        b->marks[b->n++] = m[i];
}

static void raise_done(void *arg, int err)
{
    struct raise_job *j = arg;
    struct worker *w = j->w;
    struct convmark_batch *b = batch_of(w);
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
    qsort(b->marks, b->n, sizeof *b->marks, by_conv_then_highest);
    b->n = keep_highest(b->marks, b->n);
    *j = (struct raise_job){ w, b->marks, b->n };
    if (storage_submit(w->storage, raise_on_store, raise_done, j) != QC_OK) {
        /* Queue full: the marks stay for the next turn (no warning: it is back-pressure). */
        free(j);
        return;
    }
    b->marks = NULL;
    b->n = b->cap = 0;
}
