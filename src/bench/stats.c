/*
 * stats.c - what qchat-bench counts and how it reports it: a fixed-size
 * log-linear latency histogram (no per-sample storage), the error classes,
 * the once-a-second progress line on a TTY, and the final summary, either
 * one "key=value" line or one JSON object on stdout.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

const char *const err_names[E_COUNT] = {
    [E_CONNECT] = "connfail",       [E_LOGIN] = "loginfail", [E_REG] = "regfail",
    [E_DISCONNECT] = "disconnects", [E_STALL] = "stalls",    [E_LOST] = "lost",
    [E_MISROUTED] = "misrouted",    [E_DUP] = "dup",         [E_REORDER] = "reorder",
    [E_SERVER] = "srverr",          [E_KICKED] = "kicked",   [E_PROTOCOL] = "protocol",
    [E_TIMEOUT] = "timeouts",
};

/* ---- histogram ---------------------------------------------------------- */

void hist_init(struct hist *h)
{
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

static unsigned hist_index(uint64_t v)
{
    if (v < 2 * HIST_HALF)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - (HIST_SUB_BITS - 1);
    return (shift + 1) * HIST_HALF + (unsigned)((v >> shift) - HIST_HALF);
}

/* Middle of the values a bucket holds. */
static uint64_t hist_value(unsigned idx)
{
    if (idx < 2 * HIST_HALF)
        return idx;
    unsigned shift = idx / HIST_HALF - 1;
    uint64_t m = idx % HIST_HALF + HIST_HALF;
    uint64_t lo = m << shift;
    return lo + ((1ULL << shift) >> 1);
}

void hist_add(struct hist *h, uint64_t v)
{
    h->b[hist_index(v)]++;
    h->count++;
    h->sum += v;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

void hist_merge(struct hist *into, const struct hist *from)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->b[i] += from->b[i];
    into->count += from->count;
    into->sum += from->sum;
    if (from->min < into->min)
        into->min = from->min;
    if (from->max > into->max)
        into->max = from->max;
}

uint64_t hist_percentile(const struct hist *h, double pct)
{
    if (h->count == 0)
        return 0;
    uint64_t target = (uint64_t)((double)h->count * pct / 100.0 + 0.999999);
    if (target < 1)
        target = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= target) {
            uint64_t v = hist_value(i);
            if (v > h->max)
                v = h->max;
            if (v < h->min)
                v = h->min;
            return v;
        }
    }
    return h->max;
}

/* ---- counters ----------------------------------------------------------- */

void stats_init(struct stats *s)
{
    memset(s, 0, sizeof *s);
    hist_init(&s->lat);
}

void stats_merge(struct stats *into, const struct stats *from)
{
    into->sent += from->sent;
    into->msgs += from->msgs;
    into->window += from->window;
    into->acks += from->acks;
    into->logins += from->logins;
    into->regs += from->regs;
    for (int i = 0; i < E_COUNT; i++)
        into->err[i] += from->err[i];
    for (int i = 0; i < BENCH_SRV_ERRNO_MAX; i++)
        into->srv_errno[i] += from->srv_errno[i];
    hist_merge(&into->lat, &from->lat);
}

uint64_t stats_errors(const struct stats *s)
{
    uint64_t n = 0;
    for (int i = 0; i < E_COUNT; i++)
        n += s->err[i];
    return n;
}

/* ---- progress line ------------------------------------------------------ */

static struct {
    bool on, tty;
    struct engine **es;
    int n;
    const char *what, *phase;
    uint64_t t0, next, last_count, last_t;
    bool dirty;
} prog;

void progress_setup(const struct bench_opts *o, struct engine **es, int n, const char *what)
{
    prog.tty = isatty(STDERR_FILENO) == 1;
    prog.on = !o->quiet && (o->progress || prog.tty);
    prog.es = es;
    prog.n = n;
    prog.what = what;
    prog.phase = "setup";
    prog.t0 = prog.last_t = now_ns();
    prog.next = prog.t0 + NS_PER_SEC;
    prog.last_count = 0;
}

void progress_phase(const char *phase)
{
    prog.phase = phase;
}

void engine_publish(struct engine *e)
{
    __atomic_store_n(&e->pub_count, e->pcount ? *e->pcount : 0, __ATOMIC_RELAXED);
    __atomic_store_n(&e->pub_errors, stats_errors(&e->st), __ATOMIC_RELAXED);
    __atomic_store_n(&e->pub_ready, e->ready, __ATOMIC_RELAXED);
}

void progress_tick(uint64_t now)
{
    if (!prog.on || !prog.es || now < prog.next)
        return;
    uint64_t count = 0, errors = 0, ready = 0;
    for (int i = 0; i < prog.n; i++) {
        count += __atomic_load_n(&prog.es[i]->pub_count, __ATOMIC_RELAXED);
        errors += __atomic_load_n(&prog.es[i]->pub_errors, __ATOMIC_RELAXED);
        ready += __atomic_load_n(&prog.es[i]->pub_ready, __ATOMIC_RELAXED);
    }
    double dt = (double)(now - prog.last_t) / NS_PER_SEC;
    double rate = dt > 0 && count >= prog.last_count ? (double)(count - prog.last_count) / dt : 0;
    fprintf(stderr, "%s%s %-7s %6.1fs  %s=%llu  rate=%.0f/s  sessions=%llu  errors=%llu%s",
            prog.tty ? "\r" : "", prog.what, prog.phase, (double)(now - prog.t0) / NS_PER_SEC,
            prog.what, (unsigned long long)count, rate, (unsigned long long)ready,
            (unsigned long long)errors, prog.tty ? "\033[K" : "\n");
    fflush(stderr);
    prog.dirty = prog.tty;
    prog.last_count = count;
    prog.last_t = now;
    prog.next = now + NS_PER_SEC;
}

void progress_end(void)
{
    if (prog.dirty)
        fputs("\r\033[K", stderr);
    prog.dirty = false;
    prog.es = NULL;
}

/* ---- result ------------------------------------------------------------- */

void result_init(struct result *r, const char *mode)
{
    memset(r, 0, sizeof *r);
    r->mode = mode;
    stats_init(&r->st);
}

void result_add(struct result *r, const char *key, double v, int prec, const char *unit)
{
    if (r->nfields >= RESULT_MAX_FIELDS)
        return;
    r->f[r->nfields++] = (struct rfield){ key, v, prec, unit ? unit : "" };
}

static const struct {
    const char *key;
    double pct;
} pcts[] = {
    { "p50", 50.0 },
    { "p90", 90.0 },
    { "p99", 99.0 },
    { "p999", 99.9 },
};

static double ns_to_ms(uint64_t ns)
{
    return (double)ns / NS_PER_MS;
}

static double ns_to_us(uint64_t ns)
{
    return (double)ns / NS_PER_US;
}

static void print_text(const struct result *r)
{
    const struct hist *h = &r->st.lat;

    printf("%s", r->mode);
    for (int i = 0; i < r->nfields; i++)
        printf(" %s=%.*f%s", r->f[i].key, r->f[i].prec, r->f[i].v, r->f[i].unit);
    for (size_t i = 0; i < sizeof pcts / sizeof pcts[0]; i++)
        printf(" %s=%.3fms", pcts[i].key, ns_to_ms(hist_percentile(h, pcts[i].pct)));
    printf(" max=%.3fms", ns_to_ms(h->max));
    printf(" errors=%llu", (unsigned long long)stats_errors(&r->st));
    for (int i = 0; i < E_COUNT; i++)
        printf(" %s=%llu", err_names[i], (unsigned long long)r->st.err[i]);
    printf("\n");
}

static void print_json(const struct result *r)
{
    const struct hist *h = &r->st.lat;
    bool first = true;

    printf("{\"mode\":\"%s\"", r->mode);
    for (int i = 0; i < r->nfields; i++)
        printf(",\"%s\":%.*f", r->f[i].key, r->f[i].prec, r->f[i].v);
    printf(",\"latency_us\":{\"count\":%llu", (unsigned long long)h->count);
    for (size_t i = 0; i < sizeof pcts / sizeof pcts[0]; i++)
        printf(",\"%s\":%.1f", pcts[i].key, ns_to_us(hist_percentile(h, pcts[i].pct)));
    printf(",\"max\":%.1f,\"mean\":%.1f}", ns_to_us(h->max),
           h->count ? ns_to_us(h->sum / h->count) : 0.0);
    printf(",\"errors\":%llu", (unsigned long long)stats_errors(&r->st));
    for (int i = 0; i < E_COUNT; i++)
        printf(",\"%s\":%llu", err_names[i], (unsigned long long)r->st.err[i]);
    printf(",\"server_errno\":{");
    for (int i = 0; i < BENCH_SRV_ERRNO_MAX; i++) {
        if (!r->st.srv_errno[i])
            continue;
        printf("%s\"%d\":%llu", first ? "" : ",", i, (unsigned long long)r->st.srv_errno[i]);
        first = false;
    }
    printf("}}\n");
}

void result_print(const struct result *r, bool json)
{
    if (json)
        print_json(r);
    else
        print_text(r);
    fflush(stdout);
}

int result_exit_code(const struct result *r)
{
    return stats_errors(&r->st) ? 1 : 0;
}
