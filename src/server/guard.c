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
    _Atomic uint64_t addr_fails[GUARD_FAIL_BUCKETS];
    _Atomic uint64_t acct_fails[GUARD_FAIL_BUCKETS];
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

bool guard_conn_open(struct guard *g, uint32_t worker, uint32_t addr, int max)
{
    uint32_t b = addr_bucket(g, addr);
    if (max > 0) {
        uint32_t total = 0;
        for (uint32_t k = 0; k < ONLINE_MAX_WORKERS; k++)
            total += atomic_load_explicit(&g->conns[k][b], memory_order_relaxed);
        if (total >= (uint32_t)max)
            return false;
    }
    if (atomic_load_explicit(&g->conns[worker][b], memory_order_relaxed) < UINT16_MAX)
        atomic_fetch_add_explicit(&g->conns[worker][b], 1, memory_order_relaxed);
    return true;
}

void guard_conn_close(struct guard *g, uint32_t worker, uint32_t addr)
{
    uint32_t b = addr_bucket(g, addr);
    if (atomic_load_explicit(&g->conns[worker][b], memory_order_relaxed) > 0)
        atomic_fetch_sub_explicit(&g->conns[worker][b], 1, memory_order_relaxed);
}

void guard_clear_worker(struct guard *g, uint32_t worker)
{
    for (uint32_t b = 0; b < GUARD_ADDR_BUCKETS; b++)
        atomic_store_explicit(&g->conns[worker][b], 0, memory_order_relaxed);
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

int64_t guard_login_wait(struct guard *g, uint32_t addr, int32_t uid, int64_t now_ms)
{
    int64_t a = wait_of(atomic_load_explicit(addr_record(g, addr), memory_order_relaxed), now_ms);
    int64_t b =
        uid > 0 ? wait_of(atomic_load_explicit(acct_record(g, uid), memory_order_relaxed), now_ms)
                : 0;
    return a > b ? a : b;
}

static void record_failure(_Atomic uint64_t *rec, int64_t now_ms)
{
    uint64_t old = atomic_load_explicit(rec, memory_order_relaxed), next;
    do {
        uint64_t fails = old >> (64 - FAIL_COUNT_BITS);
        int64_t last = (int64_t)(old & FAIL_TIME_MASK);
        if (now_ms - last >= GUARD_FORGET_MS)
            fails = 0;
        if (fails < UINT16_MAX)
            fails++;
        next = fails << (64 - FAIL_COUNT_BITS) | ((uint64_t)now_ms & FAIL_TIME_MASK);
    } while (!atomic_compare_exchange_weak_explicit(rec, &old, next, memory_order_relaxed,
                                                    memory_order_relaxed));
}

void guard_login_failed(struct guard *g, uint32_t addr, int32_t uid, int64_t now_ms)
{
    record_failure(addr_record(g, addr), now_ms);
    if (uid > 0)
        record_failure(acct_record(g, uid), now_ms);
}

void guard_login_succeeded(struct guard *g, uint32_t addr, int32_t uid)
{
    (void)addr; /* one success does not clear an address that tries many accounts */
    if (uid > 0)
        atomic_store_explicit(acct_record(g, uid), 0, memory_order_relaxed);
}
