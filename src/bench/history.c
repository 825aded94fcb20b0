/*
 * history.c - `qchat-bench history`: how long one page of a conversation's
 * log takes (HISTORY_MSG 20 -> HISTORY_MSG_ACK 21).  One reader session
 * (the first account) asks for pages of its conversation with the second
 * account (`with`), or of group --groupid, one request in flight:
 *
 *   1. the newest page (no cursor) gives the conversation's last cseq;
 *   2. then, for --count requests or the duration, a page `before` a cseq
 *      drawn uniformly from the whole conversation, so that pages come from
 *      every depth of the log, not only its hot end.
 *
 * Every reply is checked: errno 0, the page holds exactly the cseqs
 * before-limit .. before-1 (fewer at the start of the log), ascending, with
 * no gap.  The figure is the time from the request's write to the last byte
 * of its reply (p50..max); msgs/s counts the messages the pages carried.
 * The conversation is prepared beforehand (qchat-bench(1) shows how to fill
 * one with a million rows directly in the store).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "common/proto.h"

#define HIST_READER    0
#define HIST_PEER      1
#define HIST_USERS     2
#define HIST_CSEQ_KEY  "\"cseq\":"
#define HIST_MSGS_KEY  "msgs"
#define HIST_RAND_MULT 6364136223846793005ULL /* Knuth's 64-bit LCG */
#define HIST_RAND_INC  1442695040888963407ULL

struct histctx {
    const struct bench_opts *o;
    int limit;
    uint64_t last;   /* the conversation's last cseq, from the newest page */
    uint64_t before; /* the pending request's cursor, 0: none */
    uint64_t rng;
    bool waiting, done, ok;
    uint64_t requests, bytes;
};

/* ---- the page in a reply ------------------------------------------------- */

/* A pseudo-random cursor in 2..last+1: every page of the log can come. */
static uint64_t random_before(struct histctx *x)
{
    x->rng = x->rng * HIST_RAND_MULT + HIST_RAND_INC;
    return 2 + (x->rng >> 11) % x->last;
}

/* The cseq values of the page, in order: count them, check they run without a gap. */
static bool page_is_complete(struct engine *e, struct histctx *x, const char *msgs, size_t n,
                             uint64_t *first, uint64_t *last, uint64_t *count)
{
    const char *p = msgs, *end = msgs + n;
    size_t keylen = strlen(HIST_CSEQ_KEY);

    *count = 0;
    while ((p = memmem(p, (size_t)(end - p), HIST_CSEQ_KEY, keylen)) != NULL) {
        p += keylen;
        uint64_t v = strtoull(p, NULL, 10);
        if (*count == 0)
            *first = v;
        else if (v != *last + 1) {
            engine_error(e, v <= *last ? E_REORDER : E_LOST,
                         "history: cseq %" PRIu64 " after %" PRIu64 " in one page", v, *last);
            return false;
        }
        *last = v;
        (*count)++;
    }
    (void)x;
    return true;
}

/* What the page must hold: the newest `limit` below the cursor (or of all). */
static bool page_is_right(struct engine *e, struct histctx *x, uint64_t first, uint64_t last,
                          uint64_t count)
{
    uint64_t top = x->before ? x->before - 1 : x->last;
    uint64_t want = top < (uint64_t)x->limit ? top : (uint64_t)x->limit;

    if (x->before == 0 && count > 0)
        return true; /* the newest page sets x->last itself */
    if (count != want || (count > 0 && last != top) || (count > 0 && first != top - count + 1)) {
        engine_error(e, count < want ? E_LOST : E_PROTOCOL,
                     "history before %" PRIu64 ": %" PRIu64 " messages (cseq %" PRIu64 "..%" PRIu64
                     "), expected %" PRIu64 " ending at %" PRIu64,
                     x->before, count, first, last, want, top);
        return false;
    }
    return true;
}

/* ---- engine callbacks ---------------------------------------------------- */

static void hist_logged_in(struct engine *e, struct conn *c, long err)
{
    struct histctx *x = e->ctx;

    if (err == QC_OK)
        e->st.logins++;
    x->done = true;
    x->ok = err == QC_OK;
}

static void hist_line(struct engine *e, struct conn *c, const char *p, size_t n,
                      const struct jfields *f)
{
    struct histctx *x = e->ctx;
    const char *msgs;
    size_t msgslen;
    uint64_t first = 0, last = 0, count = 0;

    if (f->msgid != QC_HISTORY_MSG_ACK || !x->waiting) {
        engine_unexpected(e, c, f);
        return;
    }
    x->waiting = false;
    x->done = true;
    x->ok = false;
    if (!(f->has & JF_ERRNO) || f->err != QC_OK) {
        engine_unexpected(e, c, f); /* counted as a server error */
        return;
    }
    if (jfind(p, n, HIST_MSGS_KEY, &msgs, &msgslen) < 0) {
        engine_error(e, E_PROTOCOL, "history: reply without %s", HIST_MSGS_KEY);
        return;
    }
    if (!page_is_complete(e, x, msgs, msgslen, &first, &last, &count) ||
        !page_is_right(e, x, first, last, count))
        return;
    if (x->before == 0)
        x->last = count ? last : 0;
    hist_add(&e->st.lat, e->now - c->t_req);
    e->st.acks++;
    e->st.window++;
    e->st.msgs += count;
    x->bytes += n;
    x->ok = true;
}

static void hist_closed(struct engine *e, struct conn *c)
{
    struct histctx *x = e->ctx;
    x->done = true;
    x->ok = false;
}

static bool hist_step_over(struct engine *e)
{
    struct histctx *x = e->ctx;
    return x->done;
}

/* ---- the steps ----------------------------------------------------------- */

static bool finish_step(struct engine *e, struct histctx *x, const char *what)
{
    uint64_t deadline = now_ns() + (uint64_t)(x->o->timeout * NS_PER_SEC);
    int rs = engine_run(e, hist_step_over, deadline);

    if (rs == RUN_DEADLINE)
        engine_error(e, E_TIMEOUT, "history: %s not done after %.0fs", what, x->o->timeout);
    return rs == RUN_DONE && x->ok;
}

static bool ask_page(struct engine *e, struct histctx *x, struct conn *c)
{
    const struct bench_opts *o = x->o;
    char req[BENCH_LINE_MAX];
    int len;

    if (o->groupid > 0)
        len = snprintf(req, sizeof req, "{\"msgid\":%d,\"groupid\":%ld,\"limit\":%d",
                       QC_HISTORY_MSG, o->groupid, x->limit);
    else
        len = snprintf(req, sizeof req, "{\"msgid\":%d,\"with\":%d,\"limit\":%d", QC_HISTORY_MSG,
                       (int)e->users->id[HIST_PEER], x->limit);
    if (x->before)
        len += snprintf(req + len, sizeof req - (size_t)len, ",\"before\":%" PRIu64, x->before);
    len += snprintf(req + len, sizeof req - (size_t)len, ",\"seq\":%" PRIu64 "}", x->requests);
    x->waiting = true;
    x->done = false;
    e->now = now_ns();
    c->t_req = e->now;
    if (conn_send(e, c, req, (size_t)len) < 0)
        return false;
    e->st.sent++;
    x->requests++;
    return finish_step(e, x, "history page");
}

static bool more_requests(const struct histctx *x, uint64_t t_end)
{
    if (bench_interrupted)
        return false;
    if (x->o->count > 0)
        return x->requests <= (uint64_t)x->o->count; /* the newest page is extra */
    return now_ns() < t_end;
}

static void report(const struct histctx *x, struct engine *e, struct result *r, double secs)
{
    result_add(r, "limit", x->limit, 0, NULL);
    result_add(r, "last_cseq", (double)x->last, 0, NULL);
    result_add(r, "pages", (double)e->st.window, 0, NULL);
    result_add(r, "rate", secs > 0 ? (double)e->st.window / secs : 0, 0, "/s");
    result_add(r, "msgs_rate", secs > 0 ? (double)e->st.msgs / secs : 0, 0, "/s");
    result_add(r, "page_kb", e->st.window ? (double)x->bytes / e->st.window / 1024 : 0, 1, NULL);
}

int mode_history(const struct bench_opts *o, struct result *r)
{
    struct histctx x = { .o = o, .limit = o->limit, .rng = (uint64_t)o->id_base };
    struct users u;
    struct engine *e;
    double secs = 0;

    if (users_for_mode(o, HIST_USERS, &u, &r->st) < 0)
        return -1;
    e = engine_new(o, &u, 1, 0, 0);
    if (!e) {
        fprintf(stderr, "qchat-bench: out of memory\n");
        users_free(&u);
        return -1;
    }
    e->ctx = &x;
    e->ops.logged_in = hist_logged_in;
    e->ops.line = hist_line;
    e->ops.closed = hist_closed;
    e->pcount = &e->st.window;
    e->started = e->nconns;
    struct conn *c = &e->conns[0];
    c->user = HIST_READER;
    c->uid = u.id[HIST_READER];
    progress_setup(o, &e, 1, "pages");
    progress_phase("setup");
    if (c->uid < 0 || u.id[HIST_PEER] < 0) {
        engine_error(e, E_REG, "the two accounts are not registered");
        goto out;
    }
    e->pending++;
    e->now = now_ns();
    engine_start(e, c);
    if (c->fd < 0 || !finish_step(e, &x, "login"))
        goto out;
    if (!ask_page(e, &x, c))
        goto out;
    if (x.last == 0) {
        engine_error(e, E_PROTOCOL, "history: the conversation is empty (prepare it first)");
        goto out;
    }
    progress_phase("pages");
    hist_init(&e->st.lat); /* the newest page warmed the cache: not counted */
    e->st.window = e->st.msgs = 0;
    x.bytes = 0;
    e->measuring = true;
    uint64_t t0 = now_ns(), t_end = t0 + (uint64_t)(o->duration * NS_PER_SEC);
    while (more_requests(&x, t_end)) {
        x.before = random_before(&x);
        if (!ask_page(e, &x, c))
            break;
    }
    secs = (double)(now_ns() - t0) / NS_PER_SEC;
    e->measuring = false;
out:
    progress_end();
    stats_merge(&r->st, &e->st);
    report(&x, e, r, secs);
    engine_free(e);
    users_free(&u);
    return 0;
}
