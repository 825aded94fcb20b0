/*
 * guard.h - flood control shared by every worker of a node.
 *
 * Lives in a MAP_SHARED mapping made before the fork, like the online table:
 *  - connections per source address, and those of them not logged in yet:
 *    one row of counters per worker (so the master can zero a dead worker's
 *    row), addresses hashed into buckets;
 *  - registrations, per source address and in all, as rates (GCRA: one
 *    "theoretical arrival time" per record, updated with compare-and-swap);
 *  - failed logins, per account and per source address: after a few
 *    failures every further attempt is refused without checking the password
 *    for a delay that doubles with each failure (brute force gets slower,
 *    never faster), forgotten after a quiet period.
 * Buckets are shared by colliding addresses or ids: a collision can only make
 * a limit apply early, never let anyone past it.
 */
#ifndef QCHAT_SERVER_GUARD_H
#define QCHAT_SERVER_GUARD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#define GUARD_ADDR_BUCKETS          16384
#define GUARD_FAIL_BUCKETS          65536
#define GUARD_FREE_FAILURES         5      /* failures before delays start */
#define GUARD_DELAY_BASE_MS         1000   /* first delay; doubles per failure */
#define GUARD_DELAY_MAX_MS          300000 /* longest delay (5 minutes) */
#define GUARD_FORGET_MS             900000 /* failures forgotten after 15 quiet minutes */
#define GUARD_ADDR_CHECKS_PERIOD_MS 1000
#define GUARD_REG_BUCKETS           16384
#define GUARD_RATE_PERIOD_MS        60000 /* registration rates are per minute */

struct guard;

struct guard *guard_create(void);
void guard_destroy(struct guard *g);

/*
 * A registration from addr may go ahead: at most per_addr a minute from one
 * address and global a minute in all (0: no limit), each allowed in a burst
 * of as many.  false: refused, nothing counted.
 */
bool guard_register_allowed(struct guard *g, uint32_t addr, int per_addr, int global,
                            int64_t now_ms);

/* Bucket of a peer address (IPv4, IPv6; an IPv4-mapped IPv6 counts as IPv4). */
uint32_t guard_addr_hash(const struct sockaddr_storage *sa);

/* Count a new connection for worker; false (not counted) when max (>0) is reached. */
bool guard_conn_open(struct guard *g, uint32_t worker, uint32_t addr, int max);
void guard_conn_close(struct guard *g, uint32_t worker, uint32_t addr);
/* The same for connections that have not logged in yet (security.max_prelogin_per_ip). */
bool guard_prelogin_open(struct guard *g, uint32_t worker, uint32_t addr, int max);
void guard_prelogin_close(struct guard *g, uint32_t worker, uint32_t addr);
/* The master, after a worker died: its connections are gone. */
void guard_clear_worker(struct guard *g, uint32_t worker);

/*
 * A login for uid from addr is about to be checked: 0 when it may be, else
 * the milliseconds to wait (nothing counted; the password must not be
 * checked).  When it may, the attempt is already counted as a failure of
 * the account, so that logins sent in parallel cannot all pass before the
 * first has failed; the address, which many people may share, counts its
 * failures when they end, and may start at most checks_per_s (security.login_checks_per_ip)
 * checks a second (as many at once).  *why (if not NULL) says which, for
 * the log: "repeated failures" or the per-address budget.
 */
int64_t guard_login_begin(struct guard *g, uint32_t addr, int32_t uid, int64_t now_ms,
                          int checks_per_s, const char **why);
/*
 * The same for a login token (issue 15): the failure delays of the address
 * and the account apply, and the attempt is counted like a password's; the
 * address's rate of password checks does not (a token check costs no hash).
 */
int64_t guard_token_begin(struct guard *g, uint32_t addr, int32_t uid, int64_t now_ms);
/* The check failed: one more failure for addr; uid's (counted) runs from now. */
void guard_login_failed(struct guard *g, uint32_t addr, int32_t uid, int64_t now_ms);
/* The check succeeded: uid's failures are cleared (addr's are not). */
void guard_login_succeeded(struct guard *g, uint32_t addr, int32_t uid);

#endif
