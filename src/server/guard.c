/*
 * guard.c - flood control shared by the workers (see guard.h).
 *
 * A failure record is one 64-bit word updated with compare-and-swap: the
 * number of failures (16 bits) and the monotonic millisecond of the last one
 * (48 bits).  CLOCK_MONOTONIC is the same clock in every process.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/mman.h>

#include "common/inttable.h"
#include "server/guard.h"
#include "server/online.h"

#define FAIL_COUNT_BITS 16
#define FAIL_TIME_MASK  ((UINT64_C(1) << 48) - 1)

struct guard {
    uint32_t seed; /* random per start: buckets cannot be aimed at */
    _Atomic uint16_t conns[ONLINE_MAX_WORKERS][GUARD_ADDR_BUCKETS];
    _Atomic uint16_t prelogin[ONLINE_MAX_WORKERS][GUARD_ADDR_BUCKETS]; /* not logged in yet */
    _Atomic uint64_t addr_fails[GUARD_FAIL_BUCKETS];
    _Atomic uint64_t acct_fails[GUARD_FAIL_BUCKETS];
    _Atomic int64_t addr_checks[GUARD_FAIL_BUCKETS]; /* password checks started: GCRA */
    _Atomic int64_t reg_addr[GUARD_REG_BUCKETS];     /* registrations: GCRA */
    _Atomic int64_t reg_all;
};

struct guard *guard_create(void)
{
    struct guard *g =
        mmap(NULL, sizeof *g, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g == MAP_FAILED)
        return NULL;
    g->seed = arc4random();
    return g;
}

void guard_destroy(struct guard *g)
{
    if (g)
        munmap(g, sizeof *g);
}

static uint32_t mix32(uint32_t h, uint32_t v)
{
    h ^= v;
    h *= 0x01000193u; /* FNV-1a step per word */
    return h;
}

uint32_t guard_addr_hash(const struct sockaddr_storage *sa)
{
    uint32_t h = 0x811c9dc5u;
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return mix32(h, in->sin_addr.s_addr);
    }
    if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        uint32_t words[4];
        memcpy(words, &in6->sin6_addr, sizeof words);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            return mix32(h, words[3]);
        /* A /64 is what one client controls: count the prefix, not the address. */
        return mix32(mix32(h, words[0]), words[1]);
    }
    return h;
}

static uint32_t addr_bucket(const struct guard *g, uint32_t addr)
{
    return int_hash(addr ^ g->seed) % GUARD_ADDR_BUCKETS;
}

/* Count one more in row[worker] for addr's bucket; false when max (>0) is reached. */
static bool count_open(_Atomic uint16_t (*row)[GUARD_ADDR_BUCKETS], uint32_t worker, uint32_t b,
                       int max)
{
    if (max > 0) {
        uint32_t total = 0;
        for (uint32_t k = 0; k < ONLINE_MAX_WORKERS; k++)
            total += atomic_load_explicit(&row[k][b], memory_order_relaxed);
        if (total >= (uint32_t)max)
            return false;
    }
    if (atomic_load_explicit(&row[worker][b], memory_order_relaxed) < UINT16_MAX)
        atomic_fetch_add_explicit(&row[worker][b], 1, memory_order_relaxed);
    return true;
}

static void count_close(_Atomic uint16_t (*row)[GUARD_ADDR_BUCKETS], uint32_t worker, uint32_t b)
{
    if (atomic_load_explicit(&row[worker][b], memory_order_relaxed) > 0)
        atomic_fetch_sub_explicit(&row[worker][b], 1, memory_order_relaxed);
}

bool guard_conn_open(struct guard *g, uint32_t worker, uint32_t addr, int max)
{
    return count_open(g->conns, worker, addr_bucket(g, addr), max);
}

void guard_conn_close(struct guard *g, uint32_t worker, uint32_t addr)
{
    count_close(g->conns, worker, addr_bucket(g, addr));
}

bool guard_prelogin_open(struct guard *g, uint32_t worker, uint32_t addr, int max)
{
    return count_open(g->prelogin, worker, addr_bucket(g, addr), max);
}

void guard_prelogin_close(struct guard *g, uint32_t worker, uint32_t addr)
{
    count_close(g->prelogin, worker, addr_bucket(g, addr));
}

void guard_clear_worker(struct guard *g, uint32_t worker)
{
    for (uint32_t b = 0; b < GUARD_ADDR_BUCKETS; b++) {
        atomic_store_explicit(&g->conns[worker][b], 0, memory_order_relaxed);
        atomic_store_explicit(&g->prelogin[worker][b], 0, memory_order_relaxed);
    }
}

/* ---- failed logins ------------------------------------------------------ */

static _Atomic uint64_t *addr_record(struct guard *g, uint32_t addr)
{
    return &g->addr_fails[int_hash(addr ^ g->seed) % GUARD_FAIL_BUCKETS];
}

static _Atomic uint64_t *acct_record(struct guard *g, int32_t uid)
{
    return &g->acct_fails[int_hash((uint32_t)uid ^ g->seed) % GUARD_FAIL_BUCKETS];
}

static int64_t wait_of(uint64_t rec, int64_t now_ms)
{
    uint32_t fails = (uint32_t)(rec >> (64 - FAIL_COUNT_BITS));
    int64_t last = (int64_t)(rec & FAIL_TIME_MASK);
    if (fails < GUARD_FREE_FAILURES || now_ms - last >= GUARD_FORGET_MS)
        return 0;
    uint32_t shift = fails - GUARD_FREE_FAILURES;
    int64_t delay = shift >= 20 ? GUARD_DELAY_MAX_MS : (int64_t)GUARD_DELAY_BASE_MS << shift;
    if (delay > GUARD_DELAY_MAX_MS)
        delay = GUARD_DELAY_MAX_MS;
    int64_t until = last + delay;
    return until > now_ms ? until - now_ms : 0;
}

/* rec with one more failure at now_ms (the count restarts once the old ones are forgotten). */
static uint64_t one_more(uint64_t rec, int64_t now_ms)
{
    uint64_t fails = rec >> (64 - FAIL_COUNT_BITS);
    int64_t last = (int64_t)(rec & FAIL_TIME_MASK);
    if (now_ms - last >= GUARD_FORGET_MS)
        fails = 0;
    if (fails < UINT16_MAX)
        fails++;
    return fails << (64 - FAIL_COUNT_BITS) | ((uint64_t)now_ms & FAIL_TIME_MASK);
}

/* Count one attempt on rec unless a delay runs there: 0 (counted) or the wait. */
static int64_t count_attempt(_Atomic uint64_t *rec, int64_t now_ms)
{
    uint64_t old = atomic_load_explicit(rec, memory_order_relaxed), next;
    do {
        int64_t wait = wait_of(old, now_ms);
        if (wait > 0)
            return wait;
        next = one_more(old, now_ms);
    } while (!atomic_compare_exchange_weak_explicit(rec, &old, next, memory_order_relaxed,
                                                    memory_order_relaxed));
    return 0;
}

/* Take back one counted attempt (refused by another limit before hashing). */
static void uncount_attempt(_Atomic uint64_t *rec)
{
    uint64_t old = atomic_load_explicit(rec, memory_order_relaxed), next;
    do {
        uint64_t fails = old >> (64 - FAIL_COUNT_BITS);
        if (fails == 0)
            return;
        next = (fails - 1) << (64 - FAIL_COUNT_BITS) | (old & FAIL_TIME_MASK);
    } while (!atomic_compare_exchange_weak_explicit(rec, &old, next, memory_order_relaxed,
                                                    memory_order_relaxed));
}

/* Count one completed failure on rec (its delay runs from now). */
static void record_failure(_Atomic uint64_t *rec, int64_t now_ms)
{
    uint64_t old = atomic_load_explicit(rec, memory_order_relaxed), next;
    do
        next = one_more(old, now_ms);
    while (!atomic_compare_exchange_weak_explicit(rec, &old, next, memory_order_relaxed,
                                                  memory_order_relaxed));
}

/* The failure is already counted: its delay runs from now, when it ended. */
static void touch_failure(_Atomic uint64_t *rec, int64_t now_ms)
{
    uint64_t old = atomic_load_explicit(rec, memory_order_relaxed), next;
    do {
        if ((old >> (64 - FAIL_COUNT_BITS)) == 0)
            return; /* forgotten or cleared meanwhile */
        next = (old & ~FAIL_TIME_MASK) | ((uint64_t)now_ms & FAIL_TIME_MASK);
    } while (!atomic_compare_exchange_weak_explicit(rec, &old, next, memory_order_relaxed,
                                                    memory_order_relaxed));
}

static bool rate_take(_Atomic int64_t *tat, int rate, int64_t period_ms, int64_t now_ms);

int64_t guard_login_begin(struct guard *g, uint32_t addr, int32_t uid, int64_t now_ms,
                          int checks_per_s, const char **why)
{
    const char *unused;
    if (why == NULL)
        why = &unused;
    *why = "repeated failures";
    _Atomic uint64_t *a = addr_record(g, addr);
    int64_t wait = wait_of(atomic_load_explicit(a, memory_order_relaxed), now_ms);
    if (wait > 0)
        return wait;
    _Atomic uint64_t *u = uid > 0 ? acct_record(g, uid) : NULL;
    if (u != NULL && (wait = count_attempt(u, now_ms)) > 0)
        return wait;
    _Atomic int64_t *checks = &g->addr_checks[int_hash(addr ^ g->seed) % GUARD_FAIL_BUCKETS];
    if (checks_per_s > 0 && !rate_take(checks, checks_per_s, GUARD_ADDR_CHECKS_PERIOD_MS, now_ms)) {
        if (u != NULL)
            uncount_attempt(u); /* refused before hashing: not an attempt */
        *why = "security.login_checks_per_ip reached for its address";
        return GUARD_ADDR_CHECKS_PERIOD_MS;
    }
    return 0;
}

int64_t guard_token_begin(struct guard *g, uint32_t addr, int32_t uid, int64_t now_ms)
{
    int64_t wait =
        wait_of(atomic_load_explicit(addr_record(g, addr), memory_order_relaxed), now_ms);
    if (wait > 0)
        return wait;
    return uid > 0 ? count_attempt(acct_record(g, uid), now_ms) : 0;
}

void guard_login_failed(struct guard *g, uint32_t addr, int32_t uid, int64_t now_ms)
{
    record_failure(addr_record(g, addr), now_ms);
    if (uid > 0)
        touch_failure(acct_record(g, uid), now_ms);
}

void guard_login_succeeded(struct guard *g, uint32_t addr, int32_t uid)
{
    (void)addr; /* one success does not clear an address that tries many accounts */
    if (uid > 0)
        atomic_store_explicit(acct_record(g, uid), 0, memory_order_relaxed);
}

/* ---- registrations ------------------------------------------------------ */

/*
 * GCRA with a burst of rate: one arrival every period / rate on average, up
 * to rate at once.  *tat is the time the record is "paid up" to; an arrival
 * passes when that is at most a period (less one step) ahead of now.
 * true: passed and paid.
 */
static bool rate_take(_Atomic int64_t *tat, int rate, int64_t period_ms, int64_t now_ms)
{
    if (rate <= 0)
        return true;
    int64_t step = period_ms / rate;
    if (step < 1)
        step = 1;
    int64_t old = atomic_load_explicit(tat, memory_order_relaxed), next;
    do {
        int64_t base = old > now_ms ? old : now_ms;
        if (base - now_ms > period_ms - step)
            return false;
        next = base + step;
    } while (!atomic_compare_exchange_weak_explicit(tat, &old, next, memory_order_relaxed,
                                                    memory_order_relaxed));
    return true;
}

/* Give back what rate_take took (the other limit refused). */
static void rate_refund(_Atomic int64_t *tat, int rate)
{
    if (rate <= 0)
        return;
    int64_t step = GUARD_RATE_PERIOD_MS / rate;
    atomic_fetch_sub_explicit(tat, step < 1 ? 1 : step, memory_order_relaxed);
}

bool guard_register_allowed(struct guard *g, uint32_t addr, int per_addr, int global,
                            int64_t now_ms)
{
    _Atomic int64_t *a = &g->reg_addr[int_hash(addr ^ g->seed) % GUARD_REG_BUCKETS];
    if (!rate_take(a, per_addr, GUARD_RATE_PERIOD_MS, now_ms))
        return false;
    if (!rate_take(&g->reg_all, global, GUARD_RATE_PERIOD_MS, now_ms)) {
        rate_refund(a, per_addr);
        return false;
    }
    return true;
}
