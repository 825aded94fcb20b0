/*
 * rate.h - per-connection flood control charged by cost (issue 14, item 4).
 *
 * A connection has a token bucket: security.request_rate tokens a second,
 * security.request_burst deep.  Every request costs one token when it
 * arrives (rate_admit); a request whose work grows with what it carries is
 * charged the rest once that is known (rate_charge): a chat one token
 * more per RATE_RECIPIENTS_PER_TOKEN recipients beyond the first and per
 * RATE_BYTES_PER_TOKEN bytes it queues in all (counted as queued, escaped,
 * once per recipient) beyond the first RATE_BYTES_PER_TOKEN.  A charge may take the
 * bucket below zero (the request already ran), so the connection's next
 * requests are refused (errno 14) until the debt is refilled: one client's
 * fan-out runs at most request_rate / cost times a second, and the others
 * on its worker keep their share of the loop.  The debt is bounded by one
 * burst, so no single request can lock a connection out for longer than
 * request_burst / request_rate seconds.
 */
#ifndef QCHAT_SERVER_RATE_H
#define QCHAT_SERVER_RATE_H

#include <stdbool.h>
#include <stddef.h>

#define RATE_RECIPIENTS_PER_TOKEN 8     /* recipients of a fan-out costing one token */
#define RATE_BYTES_PER_TOKEN      16384 /* bytes queued (as escaped) costing one token */

struct worker;
struct conn;

/* Refill c's bucket and take one token for a new request; false: refused. */
bool rate_admit(struct worker *w, struct conn *c);
/* What a request sending bytes to recipients costs beyond its first token. */
double rate_fanout_cost(size_t recipients, size_t bytes);
/* Take cost more tokens from c's bucket, down to one burst below zero. */
void rate_charge(struct worker *w, struct conn *c, double cost);

#endif
