/*
 * metrics_sample.c - a worker's queue gauges (see metrics_sample.h).
 *
 * Counting queued bytes where they are appended and written would touch
 * every output path; a walk over the worker's connections once a second is
 * exact at the moment it runs, costs one pass over an array, and keeps the
 * hot path free of bookkeeping.
 */
#include "server/conn.h"
#include "server/metrics.h"
#include "server/metrics_sample.h"
#include "server/ipc.h"
#include "server/worker.h"

#define METRICS_SAMPLE_MS 1000

void metrics_sample_worker(struct worker *w)
{
    static int64_t last_ms;
    if (w->now_ms - last_ms < METRICS_SAMPLE_MS)
        return;
    last_ms = w->now_ms;
    uint64_t out = 0, links = 0;
    for (uint32_t i = 0; i < worker_slot_count(w); i++) {
        const struct conn *c = worker_conn(w, i);
        if (c && c->state != CONN_DEAD && conn_out_end(c) > c->out_written)
            out += conn_out_end(c) - c->out_written;
    }
    for (uint32_t p = 0; p <= RELAY_PEER; p++)
        if (w->peers[p].ch.fd >= 0)
            links += buf_used(&w->peers[p].ch.queue);
    metrics_gauge_set(QM_G_OUTPUT_BYTES, (int64_t)out);
    metrics_gauge_set(QM_G_LINK_BYTES, (int64_t)links);
}
