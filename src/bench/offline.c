/*
 * offline.c - `qchat-bench offline`: how long a login takes when the user has
 * a backlog of stored offline messages.  Two accounts: a sender that stays
 * logged in, and a receiver that comes and goes.  Each round:
 *
 *   1. the receiver logs in with an empty mailbox (the baseline: connect,
 *      password check, friends and groups), logs out (LOGINOUT with a seq,
 *      so the session is over once its ACK is back) and closes;
 *   2. the sender stores --backlog chats for it: ONE_CHATs with a seq, K in
 *      flight, each ACK meaning "stored" since the receiver is offline;
 *   3. the receiver connects and logs in again; the time from connect() to
 *      the last byte of LOGIN_MSG_ACK is the figure; the ack must carry
 *      exactly this round's messages, in order (each text is tagged with
 *      the round and its number);
 *   4. it logs out and closes.
 *
 * Reports the backlog login's latency (p50..max), the baseline's, and the
 * rate at which the backlog was stored.  One thread, strictly sequential,
 * every step bounded by --timeout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "common/proto.h"

#define OFF_KIND     'O'
#define OFF_SENDER   0
#define OFF_RECEIVER 1
#define OFF_USERS    2
#define OFF_TEXT_KEY "msg"
#define OFF_LIST_KEY "offlinemsg"

enum off_wait { W_NONE, W_LOGIN, W_LOGOUT, W_FILL };

struct offctx {
    const struct bench_opts *o;
    struct msgtmpl chat;
    uint32_t round, backlog;
    enum off_wait wait;
    bool done; /* what we wait for happened (or failed) */
    bool ok;
    bool want_backlog; /* the login in progress must bring the backlog */
    uint64_t t_connect;
    uint32_t sent, replies, stored;
    struct hist empty; /* baseline logins */
    uint64_t fill_ns, fill_msgs, ack_bytes, backlog_logins;
};

static struct conn *sender(struct engine *e)
{
    return &e->conns[OFF_SENDER];
}

static struct conn *receiver(struct engine *e)
{
    return &e->conns[OFF_RECEIVER];
}

static void step_over(struct offctx *x, bool ok)
{
    x->done = true;
    x->ok = ok;
}

/* ---- the backlog in a login ack ----------------------------------------- */

/* The ack must hold this round's messages 0..backlog-1, oldest first. */
static bool backlog_is_complete(struct engine *e, struct offctx *x)
{
    uint32_t want = x->want_backlog ? x->backlog : 0, got = 0;
    const char *list, *item, *text;
    size_t listlen, itemlen, textlen, pos = 0;
    int r;

    if (jfind(e->line, e->linelen, OFF_LIST_KEY, &list, &listlen) < 0) {
        if (want == 0)
            return true; /* an empty array may be left out */
        engine_error(e, E_LOST, "round %u: login ack has no %s (%u expected)", x->round,
                     OFF_LIST_KEY, want);
        return false;
    }
    while ((r = jarray_next(list, listlen, &pos, &item, &itemlen)) == 1) {
        uint32_t round, seq;
        uint64_t ts;
        if (jescaped_string_field(item, itemlen, OFF_TEXT_KEY, &text, &textlen) < 0 ||
            tag_read(text, textlen, OFF_KIND, &round, &seq, &ts) < 0 || round != x->round) {
            engine_error(e, E_MISROUTED, "round %u: offline message %u is not one of ours",
                         x->round, got);
            return false;
        }
        if (seq != got) {
            engine_error(e, seq < got ? E_DUP : E_REORDER,
                         "round %u: offline message %u carries number %u", x->round, got, seq);
            return false;
        }
        got++;
    }
    if (r < 0) {
        engine_error(e, E_PROTOCOL, "round %u: malformed %s", x->round, OFF_LIST_KEY);
        return false;
    }
    if (got != want) {
        engine_error(e, got < want ? E_LOST : E_DUP, "round %u: %u offline messages, %u expected",
                     x->round, got, want);
        if (got < want)
            e->st.err[E_LOST] += want - got - 1;
        return false;
    }
    return true;
}

/* ---- engine callbacks --------------------------------------------------- */

static void off_logged_in(struct engine *e, struct conn *c, long err)
{
    struct offctx *x = e->ctx;

    if (err != QC_OK) {
        step_over(x, false); /* the engine counts and closes it */
        return;
    }
    e->st.logins++;
    if (c->role != OFF_RECEIVER) {
        step_over(x, true);
        return;
    }
    uint64_t took = e->now - x->t_connect;
    bool complete = backlog_is_complete(e, x);
    if (x->want_backlog) {
        hist_add(&e->st.lat, took);
        x->ack_bytes += e->linelen;
        x->backlog_logins++;
        if (complete)
            e->st.msgs += x->backlog;
    } else {
        hist_add(&x->empty, took);
    }
    step_over(x, complete);
}

static void fill_more(struct engine *e, struct offctx *x)
{
    while (x->sent < x->backlog && x->sent - x->replies < (uint32_t)x->o->inflight) {
        if (conn_send_tmpl(e, sender(e), &x->chat, OFF_KIND, x->round, x->sent, x->sent) < 0)
            return;
        x->sent++;
        e->st.sent++;
    }
}

static void off_line(struct engine *e, struct conn *c, const char *p, size_t n,
                     const struct jfields *f)
{
    struct offctx *x = e->ctx;
    bool is_ack = f->msgid == QC_ACK_MSG && (f->has & JF_REQ);

    if (is_ack && c->role == OFF_SENDER && f->req == QC_ONE_CHAT_MSG && x->wait == W_FILL) {
        x->replies++;
        if ((f->has & JF_ERRNO) && f->err == QC_OK) {
            x->stored++;
            e->st.acks++;
            e->st.window++;
        } else {
            engine_unexpected(e, c, f); /* counted as a server error */
        }
        fill_more(e, x);
        if (x->replies == x->backlog)
            step_over(x, x->stored == x->backlog);
        return;
    }
    if (is_ack && c->role == OFF_RECEIVER && f->req == QC_LOGINOUT_MSG && x->wait == W_LOGOUT) {
        bool ok = (f->has & JF_ERRNO) && f->err == QC_OK;
        if (!ok)
            engine_unexpected(e, c, f);
        step_over(x, ok);
        return;
    }
    engine_unexpected(e, c, f);
}

static void off_closed(struct engine *e, struct conn *c)
{
    step_over(e->ctx, false);
}

static bool off_step_over(struct engine *e)
{
    struct offctx *x = e->ctx;
    return x->done;
}

/* ---- the steps ---------------------------------------------------------- */

/* Run the engine until the step in progress is over; false if it failed. */
static bool finish_step(struct engine *e, struct offctx *x, const char *what)
{
    uint64_t deadline = now_ns() + (uint64_t)(x->o->timeout * NS_PER_SEC);
    int rs = engine_run(e, off_step_over, deadline);

    x->wait = W_NONE;
    if (rs == RUN_DEADLINE)
        engine_error(e, E_TIMEOUT, "round %u: %s not done after %.0fs", x->round, what,
                     x->o->timeout);
    return rs == RUN_DONE && x->ok;
}

static bool log_in(struct engine *e, struct offctx *x, struct conn *c, bool with_backlog)
{
    x->wait = W_LOGIN;
    x->done = false;
    x->want_backlog = with_backlog;
    c->settled = 0;
    e->pending++;
    x->t_connect = e->now = now_ns();
    engine_start(e, c);
    if (c->fd < 0)
        return false; /* connect failed at once: already counted */
    return finish_step(e, x, "login");
}

/* LOGINOUT with a seq: once its ACK is back the session is over; then close. */
static bool log_out(struct engine *e, struct offctx *x, struct conn *c)
{
    x->wait = W_LOGOUT;
    x->done = false;
    if (conn_printf(e, c, "{\"msgid\":%d,\"seq\":%u}", QC_LOGINOUT_MSG, x->round) < 0)
        return false;
    bool ok = finish_step(e, x, "logout");
    if (c->fd >= 0)
        engine_drop(e, c);
    return ok;
}

static bool fill(struct engine *e, struct offctx *x)
{
    x->wait = W_FILL;
    x->done = x->backlog == 0;
    x->ok = true;
    x->sent = x->replies = x->stored = 0;
    e->now = now_ns();
    uint64_t t0 = e->now;
    fill_more(e, x);
    bool ok = finish_step(e, x, "storing the backlog");
    x->fill_ns += now_ns() - t0;
    x->fill_msgs += x->stored;
    return ok;
}

static bool run_round(struct engine *e, struct offctx *x)
{
    struct conn *r = receiver(e);

    return log_in(e, x, r, false) && log_out(e, x, r) && fill(e, x) && log_in(e, x, r, true) &&
           log_out(e, x, r);
}

static int arm_sender(struct engine *e, struct offctx *x)
{
    struct conn *s = sender(e), *r = receiver(e);
    char head[BENCH_LINE_MAX];

    snprintf(head, sizeof head, "{\"msgid\":%d,\"id\":%d,\"toid\":%d,", QC_ONE_CHAT_MSG,
             (int)s->uid, (int)r->uid);
    if (tmpl_init(&x->chat, head, x->o->size, true) < 0) {
        fprintf(stderr, "qchat-bench: out of memory\n");
        return -1;
    }
    return 0;
}

int mode_offline(const struct bench_opts *o, struct result *r)
{
    struct offctx x = { .o = o, .backlog = (uint32_t)o->backlog };
    struct users u;
    struct engine *e;
    uint32_t rounds = 0;

    if (users_for_mode(o, OFF_USERS, &u, &r->st) < 0)
        return -1;
    e = engine_new(o, &u, OFF_USERS, 0, 0);
    if (!e) {
        fprintf(stderr, "qchat-bench: out of memory\n");
        users_free(&u);
        return -1;
    }
    hist_init(&x.empty);
    e->ctx = &x;
    e->ops.logged_in = off_logged_in;
    e->ops.line = off_line;
    e->ops.closed = off_closed;
    e->pcount = &e->st.logins;
    e->started = e->nconns; /* connections are started by the steps */
    for (uint32_t i = 0; i < OFF_USERS; i++) {
        struct conn *c = &e->conns[i];
        c->user = i;
        c->uid = u.id[i];
        c->role = (uint8_t)i;
        c->side = (uint8_t)(i % (uint32_t)o->nep);
    }
    progress_setup(o, &e, 1, "logins");
    progress_phase("setup");
    if (sender(e)->uid < 0 || receiver(e)->uid < 0) {
        engine_error(e, E_REG, "the two accounts are not registered");
        goto report;
    }
    if (!log_in(e, &x, sender(e), false) || arm_sender(e, &x) < 0)
        goto report;
    progress_phase("rounds");
    e->measuring = true;
    for (x.round = 0; x.round < (uint32_t)o->rounds && !bench_interrupted; x.round++) {
        if (!run_round(e, &x))
            break;
        rounds++;
    }
    e->measuring = false;
report:
    progress_end();
    stats_merge(&r->st, &e->st);
    result_add(r, "backlog", x.backlog, 0, NULL);
    result_add(r, "rounds", rounds, 0, NULL);
    result_add(r, "ack_kb", x.backlog_logins ? (double)x.ack_bytes / x.backlog_logins / 1024 : 0, 1,
               NULL);
    result_add(r, "stored", (double)x.fill_msgs, 0, NULL);
    result_add(r, "store_rate", x.fill_ns ? (double)x.fill_msgs * NS_PER_SEC / x.fill_ns : 0, 0,
               "/s");
    result_add(r, "empty_p50", (double)hist_percentile(&x.empty, 50.0) / NS_PER_MS, 3, "ms");
    result_add(r, "empty_max", (double)x.empty.max / NS_PER_MS, 3, "ms");
    if (rounds < (uint32_t)o->rounds && !bench_interrupted && stats_errors(&r->st) == 0)
        r->st.err[E_TIMEOUT]++; /* stopped early without a counted cause */
    tmpl_free(&x.chat);
    engine_free(e);
    users_free(&u);
    return 0;
}
