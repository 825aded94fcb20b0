/*
 * metrics.h - counters and histograms of a qchatd node, in shared
 * memory, plus each child's heartbeat.
 *
 * The master maps one block (mmap MAP_SHARED|MAP_ANONYMOUS) before it forks.
 * Every child owns one slot (workers 0..N-1, the relay METRICS_RELAY_SLOT)
 * and is its only writer: relaxed atomic adds, no locks, no shared cache
 * lines between slots.  Readers (the master's /metrics and qchatctl stats)
 * sum the slots.  A respawned child keeps adding to its slot, so counters
 * only grow while the master lives, as Prometheus expects.
 *
 * Hooks are one-line calls from the hot path, e.g.
 *   metrics_count(QM_MESSAGES, QM_MSG_ONE);
 *   metrics_observe(QM_H_DELIVERY, elapsed_us);
 * In a process that has not attached a slot (the master, tests) they do
 * nothing.
 */
#ifndef QCHAT_SERVER_METRICS_H
#define QCHAT_SERVER_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "server/online.h"

#define METRICS_RELAY_SLOT ONLINE_MAX_WORKERS /* the relay's slot */
#define METRICS_SLOTS      (ONLINE_MAX_WORKERS + 1)

/* Counters; each has up to QM_LABELS_MAX label values (0 when unlabelled). */
enum qm_counter {
    QM_MESSAGES = 0,   /* chats accepted, label: enum qm_msg_type */
    QM_DELIVERIES,     /* deliveries by path, label: enum qm_path */
    QM_LOGINS,         /* login outcomes, label: enum qm_login */
    QM_RATE_LIMITED,   /* requests refused by the rate limit */
    QM_SLOW_KICKED,    /* connections closed for output over max_output_bytes */
    QM_STORE_ERRORS,   /* storage calls that failed */
    QM_ACCEPTED,       /* connections accepted */
    QM_HISTORY_PURGED, /* messages removed by retention */
    QM_PURGE_RUNS,     /* retention purge rounds finished (purge.c; qchatctl purge waits on it) */
    QM_COUNTER_COUNT
};

enum qm_msg_type { QM_MSG_ONE = 0, QM_MSG_GROUP, QM_MSG_TYPE_COUNT };
enum qm_path { QM_PATH_LOCAL = 0, QM_PATH_WORKER, QM_PATH_RELAY, QM_PATH_STORED, QM_PATH_COUNT };
enum qm_login { QM_LOGIN_OK = 0, QM_LOGIN_BAD, QM_LOGIN_REFUSED, QM_LOGIN_ERROR, QM_LOGIN_COUNT };

#define QM_LABELS_MAX 4

/* Gauges a child sets from time to time (metrics_sample.c). */
enum qm_gauge {
    QM_G_OUTPUT_BYTES = 0, /* bytes queued for clients, not yet written */
    QM_G_LINK_BYTES,       /* bytes queued on links to other workers and the relay */
    QM_GAUGE_COUNT
};

/* Histograms of durations. */
enum qm_histogram { QM_H_DELIVERY = 0, QM_H_STORE, QM_HISTOGRAM_COUNT };

#define QM_BUCKETS 12 /* upper bounds in metrics.c, plus +Inf */

struct metrics;

/*
 * main, before the master forks: map the node's block (NULL and errno on
 * failure); metrics_node() returns it from then on, in every process.
 */
struct metrics *metrics_create(void);
struct metrics *metrics_node(void);
void metrics_destroy(struct metrics *m);

/*
 * A child, once its loop is set up: write into slot from now on (a worker's
 * index, or METRICS_RELAY_SLOT); also its first heartbeat.  A respawned
 * child keeps counting in its predecessor's slot.
 */
void metrics_attach(uint32_t slot);
/* A child's tick: "I am alive and my loop turns". */
void metrics_heartbeat(void);

void metrics_count(enum qm_counter c, unsigned label);
void metrics_add(enum qm_counter c, unsigned label, uint64_t n);
void metrics_observe(enum qm_histogram h, int64_t micros);
void metrics_gauge_set(enum qm_gauge g, int64_t value);
/* Microseconds on CLOCK_MONOTONIC, for metrics_observe. */
int64_t metrics_now_us(void);

/* ---- readers (the master) ---- */

/*
 * How old a heartbeat may be before the child counts as not responding:
 * half of systemd's WatchdogSec when it is set, clamped to 1..10 s.
 */
int64_t metrics_heartbeat_stale_ms(void);
/* CLOCK_MONOTONIC ms (clock_now_ms) of slot's last heartbeat, 0: never. */
int64_t metrics_heartbeat_ms(const struct metrics *m, uint32_t slot);

uint64_t metrics_counter_sum(const struct metrics *m, enum qm_counter c, unsigned label);
/* Summed over the children running now (a dead child's last value is dropped). */
int64_t metrics_gauge_sum(const struct metrics *m, enum qm_gauge g);
/* The master, when a child died: its gauges no longer describe anything. */
void metrics_clear_gauges(struct metrics *m, uint32_t slot);

struct qm_histogram_sum {
    uint64_t buckets[QM_BUCKETS + 1]; /* cumulative, last = +Inf = count */
    uint64_t sum_us;
    uint64_t count;
};
void metrics_histogram_sum(const struct metrics *m, enum qm_histogram h,
                           struct qm_histogram_sum *out);
/* Upper bound of bucket i in seconds (i < QM_BUCKETS). */
double metrics_bucket_le(unsigned i);

/* Label names and values, for the exposition and qchatctl stats. */
const char *metrics_counter_name(enum qm_counter c);
const char *metrics_counter_help(enum qm_counter c);
const char *metrics_label_name(enum qm_counter c); /* NULL: unlabelled */
unsigned metrics_label_count(enum qm_counter c);
const char *metrics_label_value(enum qm_counter c, unsigned label);

#endif
