/*
 * rate.c - per-connection token buckets charged by the work a request
 * causes (see rate.h).
 */
#include "server/conn.h"
#include "server/rate.h"
#include "server/worker.h"

static bool rate_limit_off(const struct worker *w)
{
    return w->cfg.request_rate <= 0;
}

/* Add the tokens earned since the last look, up to one burst. */
static void refill_bucket(struct worker *w, struct conn *c)
{
    double elapsed = (double)(w->now_ms - c->tokens_ms) / 1000.0;
    c->tokens_ms = w->now_ms;
    c->tokens += elapsed * w->cfg.request_rate;
    if (c->tokens > w->cfg.request_burst)
        c->tokens = w->cfg.request_burst;
}

bool rate_admit(struct worker *w, struct conn *c)
{
    if (rate_limit_off(w))
        return true;
    refill_bucket(w, c);
    if (c->tokens < 1.0)
        return false;
    c->tokens -= 1.0;
    c->rate_strikes = 0;
    return true;
}

/* The first recipient and the first RATE_BYTES_PER_TOKEN bytes are in the
   request's own token: a plain chat costs one, like any request. */
double rate_fanout_cost(size_t recipients, size_t bytes)
{
    if (recipients == 0)
        return 0;
    double total = (double)recipients * (double)bytes;
    double over = total > RATE_BYTES_PER_TOKEN ? total - RATE_BYTES_PER_TOKEN : 0;
    return (double)(recipients - 1) / RATE_RECIPIENTS_PER_TOKEN + over / RATE_BYTES_PER_TOKEN;
}

void rate_charge(struct worker *w, struct conn *c, double cost)
{
    if (rate_limit_off(w) || cost <= 0)
        return;
    c->tokens -= cost;
    if (c->tokens < -(double)w->cfg.request_burst)
        c->tokens = -(double)w->cfg.request_burst;
}
