/*
 * purge.c - retention of the conversation log in the background (see
 * purge.h): one batch at a time as a storage job of worker 0.
 *
 * A batch removes at most PURGE_BATCH messages and examines at most
 * STORE_PURGE_SCAN_CONVS conversations (the store walks them in order and
 * says where it stopped), so that the job holds the storage thread, and
 * with SQLite the other workers' appends, for about the same time whatever
 * the size of the store.  A round goes on, one batch per tick, until a
 * batch comes back short with both walks past the last conversation.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "server/metrics.h"
#include "server/purge.h"
#include "server/storage.h"
#include "server/worker.h"
#include "store/store.h"

struct purge_state {
    struct worker *w;
    bool in_flight;  /* a batch is on the storage thread */
    bool round;      /* a round is running: batches follow while they come back full */
    bool forced;     /* this round was asked for (qchatctl purge) */
    int64_t next_ms; /* when the next round is due (monotonic ms) */
    uint64_t round_removed;
    /* the job's parameters and result */
    int keep_days, max_per_conv;
    bool delivered_only;    /* history.enabled = no */
    int64_t scan_cap;       /* where the walk for max_per_conv stands (log_purge) */
    int64_t scan_delivered; /* where the walk for delivered_only stands */
    int removed;
};

int purge_init(struct worker *w)
{
    if (w->index != PURGE_WORKER)
        return 0;
    w->purge = calloc(1, sizeof *w->purge);
    if (w->purge == NULL) {
        log_error("purge: out of memory");
        return -1;
    }
    w->purge->w = w;
    w->purge->next_ms = w->now_ms + PURGE_INTERVAL_MS;
    w->purge->scan_cap = w->purge->scan_delivered = STORE_SCAN_START;
    return 0;
}

void purge_stop(struct worker *w)
{
    free(w->purge);
    w->purge = NULL;
}

static bool retention_configured(const struct worker *w)
{
    return w->cfg.history_keep_days > 0 || w->cfg.history_max_per_conversation > 0 ||
           strcmp(w->cfg.history_enabled, "no") == 0;
}

/* On the storage thread: one batch of each kind that is configured. */
static int run_batch(const struct store_ops *ops, struct store *st, void *arg)
{
    struct purge_state *p = arg;
    int n = 0, err = QC_OK;
    p->removed = 0;
    if (p->delivered_only) {
        err = ops->log_purge_delivered(st, PURGE_BATCH, &p->scan_delivered, &n);
        p->removed += n;
    } else {
        p->scan_delivered = STORE_SCAN_START;
    }
    if (!err && (p->keep_days > 0 || p->max_per_conv > 0)) {
        n = 0;
        err = ops->log_purge(st, p->keep_days, p->max_per_conv, PURGE_BATCH, &p->scan_cap, &n);
        p->removed += n;
    } else if (!err) {
        p->scan_cap = STORE_SCAN_START;
    }
    return err;
}

/* A walk of the conversations stopped short of the last one. */
static bool walking(const struct purge_state *p)
{
    return p->scan_cap != STORE_SCAN_START || p->scan_delivered != STORE_SCAN_START;
}

static void end_round(struct worker *w, struct purge_state *p)
{
    if (p->round_removed > 0 || p->forced)
        log_info("purge: %llu message(s) removed from the log",
                 (unsigned long long)p->round_removed);
    metrics_count(QM_PURGE_RUNS, 0);
    p->round = p->forced = false;
    p->round_removed = 0;
    p->next_ms = w->now_ms + PURGE_INTERVAL_MS;
}

static void batch_done(void *arg, int err)
{
    struct purge_state *p = arg;
    struct worker *w = p->w;
    p->in_flight = false;
    if (p->removed > 0) {
        metrics_add(QM_HISTORY_PURGED, 0, (uint64_t)p->removed);
        p->round_removed += (uint64_t)p->removed;
    }
    if (err) {
        metrics_count(QM_STORE_ERRORS, 0);
        log_warning("purge: %s; retrying in %d s", qc_strerror(err), PURGE_INTERVAL_MS / 1000);
        end_round(w, p);
        return;
    }
    /* A full batch, or a walk short of the end, means more may wait: on at the next tick. */
    bool full = p->removed >= PURGE_BATCH;
    if (!full && !walking(p))
        end_round(w, p);
}

static void start_batch(struct worker *w, struct purge_state *p)
{
    p->keep_days = w->cfg.history_keep_days;
    p->max_per_conv = w->cfg.history_max_per_conversation;
    p->delivered_only = strcmp(w->cfg.history_enabled, "no") == 0;
    if (storage_submit(w->storage, run_batch, batch_done, p) != QC_OK) {
        log_warning("purge: the storage queue is full; retrying later");
        end_round(w, p);
        return;
    }
    p->in_flight = true;
}

void purge_tick(struct worker *w)
{
    struct purge_state *p = w->purge;
    if (p == NULL || p->in_flight || w->stopping)
        return;
    if (!p->round) {
        if (w->now_ms < p->next_ms)
            return;
        if (!retention_configured(w)) {
            p->next_ms = w->now_ms + PURGE_INTERVAL_MS;
            return;
        }
        p->round = true;
    }
    start_batch(w, p);
}

void purge_now(struct worker *w)
{
    struct purge_state *p = w->purge;
    if (p == NULL) {
        log_warning("purge asked of worker %u, which does not purge", w->index);
        return;
    }
    log_info("purge: asked by the operator");
    p->forced = true;
    if (!p->round) {
        p->round = true;
        p->round_removed = 0;
    }
    if (!p->in_flight)
        start_batch(w, p);
}
