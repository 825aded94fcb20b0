/*
 * pending.c - requests whose ACK waits for their deliveries (see pending.h).
 */
#include <stdlib.h>
#include <string.h>

#include "common/fatal.h"
#include "common/log.h"
#include "server/conn.h"
#include "server/metrics.h"
#include "server/pending.h"
#include "server/slab.h"
#include "server/worker.h"

struct pending {
    struct slab_hdr h;
    uint32_t slot, cgen;
    int msgid;
    int err;
    int outstanding;
    int64_t mid;
    int64_t cseq;
    int32_t groupid;
    int64_t opened_us; /* for qchat_delivery_seconds */
    char seq[QC_SEQ_MAX + 1];
};

uint32_t pending_open(struct worker *w, struct conn *c, int msgid, const char *seq)
{
    uint32_t handle;
    struct pending *p = slab_alloc(w->pending, &handle);
    if (p == NULL)
        return 0;
    p->slot = c->slot;
    p->cgen = c->cgen;
    p->msgid = msgid;
    p->outstanding = 1; /* the opener's reference */
    p->opened_us = metrics_now_us();
    if (seq)
        strlcpy(p->seq, seq, sizeof p->seq);
    return handle;
}

void pending_set_mid(struct worker *w, uint32_t req, int64_t mid)
{
    struct pending *p = slab_get(w->pending, req);
    if (p)
        p->mid = mid;
}

void pending_set_cseq(struct worker *w, uint32_t req, int64_t cseq)
{
    struct pending *p = slab_get(w->pending, req);
    if (p)
        p->cseq = cseq;
}

void pending_set_groupid(struct worker *w, uint32_t req, int32_t groupid)
{
    struct pending *p = slab_get(w->pending, req);
    if (p)
        p->groupid = groupid;
}

void pending_add(struct worker *w, uint32_t req)
{
    struct pending *p = slab_get(w->pending, req);
    if (p)
        p->outstanding++;
}

void pending_done(struct worker *w, uint32_t req, int err)
{
    struct pending *p = slab_get(w->pending, req);
    if (p == NULL)
        return;
    qc_assert(p->outstanding > 0);
    if (err && !p->err)
        p->err = err;
    if (--p->outstanding > 0)
        return;
    metrics_observe(QM_H_DELIVERY, metrics_now_us() - p->opened_us);
    struct conn *c = worker_conn(w, p->slot);
    if (c && c->cgen == p->cgen && c->state == CONN_OPEN && (p->seq[0] || p->err))
        w->hooks.answer(w, c, p->msgid, p->seq[0] ? p->seq : NULL, p->err, p->err ? 0 : p->mid,
                        p->err ? 0 : p->groupid, p->err ? 0 : p->cseq);
    slab_free(w->pending, req);
}

void pending_init(struct worker *w)
{
    w->pending = slab_new(sizeof(struct pending));
    if (w->pending == NULL)
        qc_fatal("out of memory at start");
}

void pending_destroy(struct worker *w)
{
    slab_destroy(w->pending);
    w->pending = NULL;
}
