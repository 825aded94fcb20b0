/*
 * metrics.c - the node's counters, histograms and child heartbeats
 * in shared memory (see metrics.h).
 *
 * One slot per child, each on its own cache lines, written only by that
 * child with relaxed atomics; the master sums the slots when it is asked.
 * A reader may see one slot's counter a moment before another's: each value
 * is still exact and monotonic, which is all a scrape needs.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <systemd/sd-daemon.h>

#include "server/metrics.h"
#include "common/clock.h"

struct metrics_slot {
    _Atomic int64_t heartbeat_ms;
    _Atomic uint64_t counters[QM_COUNTER_COUNT][QM_LABELS_MAX];
    _Atomic int64_t gauges[QM_GAUGE_COUNT];
    struct {
        _Atomic uint64_t buckets[QM_BUCKETS + 1]; /* per bucket, not cumulative */
        _Atomic uint64_t sum_us;
    } hist[QM_HISTOGRAM_COUNT];
} __attribute__((aligned(64)));

struct metrics {
    struct metrics_slot slots[METRICS_SLOTS];
};

/* Upper bounds of the duration buckets, in microseconds. */
static const int64_t bucket_le_us[QM_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000, 250000, 1000000, 5000000,
};

static const struct {
    const char *name;
    const char *help;
    const char *label;
    const char *values[QM_LABELS_MAX];
} counter_info[QM_COUNTER_COUNT] = {
    [QM_MESSAGES] = { "qchat_messages_total",
                      "Chat messages accepted from clients.",
                      "type",
                      { "one", "group" } },
    [QM_DELIVERIES] = { "qchat_deliveries_total",
                        "Chat deliveries by path: same worker, another worker, the relay "
                        "(Redis), or stored for a later login.",
                        "path",
                        { "local", "worker", "relay", "stored" } },
    [QM_LOGINS] = { "qchat_logins_total",
                    "Login attempts by result.",
                    "result",
                    { "ok", "bad_credentials", "refused", "error" } },
    [QM_RATE_LIMITED] = { "qchat_rate_limited_total",
                          "Requests refused by the per-connection rate limit.",
                          NULL,
                          { NULL } },
    [QM_SLOW_KICKED] = { "qchat_slow_readers_kicked_total",
                         "Connections closed because their output queue passed "
                         "server.max_output_bytes.",
                         NULL,
                         { NULL } },
    [QM_STORE_ERRORS] = { "qchat_storage_errors_total",
                          "Storage calls that failed.",
                          NULL,
                          { NULL } },
    [QM_ACCEPTED] = { "qchat_connections_accepted_total",
                      "Client connections accepted.",
                      NULL,
                      { NULL } },
    [QM_HISTORY_PURGED] = { "qchat_history_purged_total",
                            "Messages removed from the conversation log by retention.",
                            NULL,
                            { NULL } },
    [QM_PURGE_RUNS] = { "qchat_history_purge_runs_total",
                        "Retention purge rounds finished (background or qchatctl purge).",
                        NULL,
                        { NULL } },
};

static struct metrics *node_metrics; /* set by metrics_create, inherited by children */
static struct metrics_slot *my_slot; /* set in a child by metrics_attach */

int64_t metrics_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

struct metrics *metrics_create(void)
{
    void *p = mmap(NULL, sizeof(struct metrics), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    node_metrics = p; /* anonymous mappings start zeroed */
    return p;
}

struct metrics *metrics_node(void)
{
    return node_metrics;
}

void metrics_destroy(struct metrics *m)
{
    if (m == NULL)
        return;
    if (m == node_metrics)
        node_metrics = NULL;
    my_slot = NULL;
    munmap(m, sizeof *m);
}

void metrics_attach(uint32_t slot)
{
    my_slot = node_metrics && slot < METRICS_SLOTS ? &node_metrics->slots[slot] : NULL;
    metrics_heartbeat();
}

void metrics_heartbeat(void)
{
    if (my_slot)
        atomic_store_explicit(&my_slot->heartbeat_ms, clock_now_ms(), memory_order_relaxed);
}

static bool counter_cell_is_valid(enum qm_counter c, unsigned label)
{
    return (unsigned)c < QM_COUNTER_COUNT && label < QM_LABELS_MAX;
}

void metrics_add(enum qm_counter c, unsigned label, uint64_t n)
{
    if (my_slot && counter_cell_is_valid(c, label))
        atomic_fetch_add_explicit(&my_slot->counters[c][label], n, memory_order_relaxed);
}

void metrics_count(enum qm_counter c, unsigned label)
{
    metrics_add(c, label, 1);
}

void metrics_gauge_set(enum qm_gauge g, int64_t value)
{
    if (my_slot && (unsigned)g < QM_GAUGE_COUNT)
        atomic_store_explicit(&my_slot->gauges[g], value, memory_order_relaxed);
}

static unsigned bucket_of(int64_t micros)
{
    unsigned i = 0;
    while (i < QM_BUCKETS && micros > bucket_le_us[i])
        i++;
    return i; /* QM_BUCKETS: +Inf */
}

void metrics_observe(enum qm_histogram h, int64_t micros)
{
    if (my_slot == NULL || (unsigned)h >= QM_HISTOGRAM_COUNT)
        return;
    if (micros < 0)
        micros = 0;
    atomic_fetch_add_explicit(&my_slot->hist[h].buckets[bucket_of(micros)], 1,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&my_slot->hist[h].sum_us, (uint64_t)micros, memory_order_relaxed);
}

/* ---- readers ------------------------------------------------------------- */

#define HEARTBEAT_STALE_MIN_MS 1000
#define HEARTBEAT_STALE_MAX_MS 10000

int64_t metrics_heartbeat_stale_ms(void)
{
    static int64_t stale_ms;
    uint64_t usec = 0;
    if (stale_ms)
        return stale_ms;
    stale_ms = HEARTBEAT_STALE_MAX_MS;
    if (sd_watchdog_enabled(0, &usec) > 0)
        stale_ms = (int64_t)(usec / 2000);
    if (stale_ms < HEARTBEAT_STALE_MIN_MS)
        stale_ms = HEARTBEAT_STALE_MIN_MS;
    if (stale_ms > HEARTBEAT_STALE_MAX_MS)
        stale_ms = HEARTBEAT_STALE_MAX_MS;
    return stale_ms;
}

int64_t metrics_heartbeat_ms(const struct metrics *m, uint32_t slot)
{
    if (m == NULL || slot >= METRICS_SLOTS)
        return 0;
    return atomic_load_explicit(&m->slots[slot].heartbeat_ms, memory_order_relaxed);
}

uint64_t metrics_counter_sum(const struct metrics *m, enum qm_counter c, unsigned label)
{
    uint64_t n = 0;
    if (m == NULL || !counter_cell_is_valid(c, label))
        return 0;
    for (unsigned s = 0; s < METRICS_SLOTS; s++)
        n += atomic_load_explicit(&m->slots[s].counters[c][label], memory_order_relaxed);
    return n;
}

int64_t metrics_gauge_sum(const struct metrics *m, enum qm_gauge g)
{
    int64_t n = 0;
    if (m == NULL || (unsigned)g >= QM_GAUGE_COUNT)
        return 0;
    for (unsigned s = 0; s < METRICS_SLOTS; s++)
        n += atomic_load_explicit(&m->slots[s].gauges[g], memory_order_relaxed);
    return n;
}

void metrics_clear_gauges(struct metrics *m, uint32_t slot)
{
    if (m == NULL || slot >= METRICS_SLOTS)
        return;
    for (unsigned g = 0; g < QM_GAUGE_COUNT; g++)
        atomic_store_explicit(&m->slots[slot].gauges[g], 0, memory_order_relaxed);
}

void metrics_histogram_sum(const struct metrics *m, enum qm_histogram h,
                           struct qm_histogram_sum *out)
{
    memset(out, 0, sizeof *out);
    if (m == NULL || (unsigned)h >= QM_HISTOGRAM_COUNT)
        return;
    for (unsigned s = 0; s < METRICS_SLOTS; s++) {
        for (unsigned i = 0; i <= QM_BUCKETS; i++)
            out->buckets[i] +=
                atomic_load_explicit(&m->slots[s].hist[h].buckets[i], memory_order_relaxed);
        out->sum_us += atomic_load_explicit(&m->slots[s].hist[h].sum_us, memory_order_relaxed);
    }
    for (unsigned i = 1; i <= QM_BUCKETS; i++)
        out->buckets[i] += out->buckets[i - 1];
    out->count = out->buckets[QM_BUCKETS];
}

double metrics_bucket_le(unsigned i)
{
    return i < QM_BUCKETS ? (double)bucket_le_us[i] / 1e6 : 0;
}

const char *metrics_counter_name(enum qm_counter c)
{
    return (unsigned)c < QM_COUNTER_COUNT ? counter_info[c].name : "";
}

const char *metrics_counter_help(enum qm_counter c)
{
    return (unsigned)c < QM_COUNTER_COUNT ? counter_info[c].help : "";
}

const char *metrics_label_name(enum qm_counter c)
{
    return (unsigned)c < QM_COUNTER_COUNT ? counter_info[c].label : NULL;
}

unsigned metrics_label_count(enum qm_counter c)
{
    unsigned n = 0;
    if ((unsigned)c >= QM_COUNTER_COUNT || counter_info[c].label == NULL)
        return 1;
    while (n < QM_LABELS_MAX && counter_info[c].values[n])
        n++;
    return n;
}

const char *metrics_label_value(enum qm_counter c, unsigned label)
{
    if ((unsigned)c >= QM_COUNTER_COUNT || label >= QM_LABELS_MAX)
        return "";
    return counter_info[c].values[label] ? counter_info[c].values[label] : "";
}
