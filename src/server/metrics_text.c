/*
 * metrics_text.c - the node's metrics as Prometheus text (see
 * metrics_http.h): HELP and TYPE for every family, counters summed over the
 * children's slots, histograms with cumulative buckets, _sum and _count.
 * Family names follow Prometheus conventions (base units, _total for
 * counters) so that "promtool check metrics" finds nothing to report.
 */
#include <stdio.h>

#include "server/metrics.h"
#include "server/metrics_http.h"

static void family(struct buf *out, const char *name, const char *type, const char *help)
{
    buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void gauge(struct buf *out, const char *name, const char *help, long long value)
{
    family(out, name, "gauge", help);
    buf_printf(out, "%s %lld\n", name, value);
}

static void counter_value(struct buf *out, const char *name, const char *help,
                          unsigned long long value)
{
    family(out, name, "counter", help);
    buf_printf(out, "%s %llu\n", name, value);
}

static void shared_counters(struct buf *out, const struct metrics *m)
{
    for (unsigned c = 0; c < QM_COUNTER_COUNT; c++) {
        const char *name = metrics_counter_name(c);
        const char *label = metrics_label_name(c);
        family(out, name, "counter", metrics_counter_help(c));
        for (unsigned v = 0; v < metrics_label_count(c); v++) {
            unsigned long long n = metrics_counter_sum(m, c, v);
            if (label)
                buf_printf(out, "%s{%s=\"%s\"} %llu\n", name, label, metrics_label_value(c, v), n);
            else
                buf_printf(out, "%s %llu\n", name, n);
        }
    }
}

static void histogram(struct buf *out, const struct metrics *m, enum qm_histogram h,
                      const char *name, const char *help)
{
    struct qm_histogram_sum s;
    metrics_histogram_sum(m, h, &s);
    family(out, name, "histogram", help);
    for (unsigned i = 0; i < QM_BUCKETS; i++)
        buf_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name, metrics_bucket_le(i),
                   (unsigned long long)s.buckets[i]);
    buf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)s.count);
    buf_printf(out, "%s_sum %.6f\n%s_count %llu\n", name, (double)s.sum_us / 1e6, name,
               (unsigned long long)s.count);
}

/* What the online table's per-worker statistics already count. */
struct worker_totals {
    unsigned long long connections, sessions, restarts, offline_stored, store_failures;
    unsigned running;
};

static void sum_workers(const struct metrics_source *src, struct worker_totals *t)
{
    *t = (struct worker_totals){ 0 };
    for (uint32_t k = 0; k < src->nworkers; k++) {
        struct worker_stats *ws = online_stats(src->online, k);
        t->connections += ws->connections;
        t->sessions += ws->sessions;
        t->restarts += ws->restarts;
        t->offline_stored += ws->offline_stored;
        t->store_failures += ws->store_failures;
        t->running += ws->pid != 0;
    }
}

void metrics_render(struct buf *out, const struct metrics_source *src)
{
    const struct metrics *m = metrics_node();
    struct worker_totals t;
    sum_workers(src, &t);
    struct relay_stats *rs = online_relay_stats(src->online);

    gauge(out, "qchat_connections", "Client connections open.", (long long)t.connections);
    gauge(out, "qchat_sessions", "Logged-in sessions.", (long long)t.sessions);
    gauge(out, "qchat_online_users", "Users in the node's online table.",
          (long long)online_count(src->online));
    gauge(out, "qchat_online_capacity", "Capacity of the online table (server.max_users).",
          (long long)online_capacity(src->online));
    gauge(out, "qchat_workers", "Worker processes configured.", (long long)src->nworkers);
    gauge(out, "qchat_workers_running", "Worker processes running.", (long long)t.running);
    counter_value(out, "qchat_worker_restarts_total", "Workers restarted after dying.", t.restarts);
    gauge(out, "qchat_relay_up", "1 when the relay is connected to Redis (0 without Redis).",
          src->clustered && rs->state == RELAY_CONNECTED);
    gauge(out, "qchat_relay_subscribed", "Redis channels the relay is subscribed to.",
          src->clustered ? (long long)rs->subscribed : 0);
    counter_value(out, "qchat_relay_published_total", "Messages the relay published to Redis.",
                  rs->published);
    counter_value(out, "qchat_relay_received_total", "Messages the relay received from Redis.",
                  rs->received);
    counter_value(out, "qchat_relay_publish_failures_total",
                  "Publishes that failed (the message was stored instead).", rs->publish_failed);
    counter_value(out, "qchat_relay_reconnects_total", "Reconnections of the relay to Redis.",
                  rs->reconnects);
    gauge(out, "qchat_output_queue_bytes", "Bytes queued for clients, not yet written.",
          (long long)metrics_gauge_sum(m, QM_G_OUTPUT_BYTES));
    gauge(out, "qchat_link_queue_bytes",
          "Bytes queued on the links between workers and to the relay, not yet written.",
          (long long)metrics_gauge_sum(m, QM_G_LINK_BYTES));
    counter_value(out, "qchat_offline_stored_total", "Messages stored for a later login.",
                  t.offline_stored);
    counter_value(out, "qchat_storage_unavailable_total",
                  "Requests answered \"storage unavailable\".", t.store_failures);
    gauge(out, "qchat_storage_up", "0 while storage calls have been failing in the last 10 s.",
          !src->store_failing);
    shared_counters(out, m);
    histogram(out, m, QM_H_DELIVERY, "qchat_delivery_seconds",
              "Time from a chat's arrival to its last recipient's write or store.");
    histogram(out, m, QM_H_STORE, "qchat_store_seconds", "Duration of storage calls.");
}
