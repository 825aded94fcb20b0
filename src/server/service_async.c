/*
 * service_async.c - park a request, run its store work on the storage
 * thread, resume it on the worker's thread (see service_async.h).
 *
 * The connection is parked with its busy flag (conn.c keeps what it has
 * read in order and reads no more); the callback finds it again by slot and
 * generation, so a connection that closed meanwhile, or a new one in the
 * same slot, is never answered by mistake.
 */
#include <stdlib.h>

#include "common/log.h"
#include "server/conn.h"
#include "server/metrics.h"
#include "server/service_async.h"
#include "server/worker.h"

struct parked {
    struct worker *w;
    uint32_t slot, cgen;
    storage_run_fn run;
    service_resume_fn resume;
    void *arg;
    int64_t queued_us;
};

/* The request's connection, if it is still the one that asked and still open. */
static struct conn *connection_still_there(const struct parked *p)
{
    struct conn *c = worker_conn(p->w, p->slot);
    return c && c->cgen == p->cgen && c->state == CONN_OPEN ? c : NULL;
}

static int run_parked(const struct store_ops *ops, struct store *st, void *arg)
{
    struct parked *p = arg;
    return p->run(ops, st, p->arg);
}

static void resume_parked(void *arg, int err)
{
    struct parked *p = arg;
    struct worker *w = p->w;
    metrics_observe(QM_H_STORE, metrics_now_us() - p->queued_us);
    struct conn *c = connection_still_there(p);
    bool finished = p->resume(w, c, p->arg, err);
    free(p);
    if (c && finished &&
        connection_still_there(&(struct parked){ .w = w, .slot = c->slot, .cgen = c->cgen }))
        conn_resume(w, c);
}

int service_async(struct worker *w, struct conn *c, storage_run_fn run, service_resume_fn resume,
                  void *arg)
{
    struct parked *p = malloc(sizeof *p);
    if (p == NULL)
        return QC_EINTERNAL;
    *p = (struct parked){ .w = w,
                          .slot = c->slot,
                          .cgen = c->cgen,
                          .run = run,
                          .resume = resume,
                          .arg = arg,
                          .queued_us = metrics_now_us() };
    if (storage_submit(w->storage, run_parked, resume_parked, p) != QC_OK) {
        free(p);
        log_warning("storage queue full: request refused on conn %u", c->slot);
        return QC_ESTORAGE;
    }
    c->busy = true;
    return QC_OK;
}
