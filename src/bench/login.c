/*
 * login.c - `qchat-bench login`: C loops, each its own account, log in as
 * fast as the server answers for the duration.  After each LOGIN ack a loop
 * sends LOGINOUT and LOGIN again on the same connection (one write), or with
 * --reconnect closes and connects again.  Reports logins/s and the login
 * latency (request to ack; with --reconnect, connect to ack).  Run beside a
 * pingpong to measure chat latency during a login storm.
 *
 * --tokens: before measuring, each loop logs in once with its password and
 * "token": true and keeps the token of the reply; every measured login then
 * sends {id, token} instead of the password (no hashing on the server).
 * "all_in" reports when every loop had finished its first measured login:
 * with --reconnect and as many loops as users, a reconnect storm's length.
 *
 * --storm (with --tokens) models a real one: once every loop has its token
 * (and, with --go-file, when the harness says go, so that several processes
 * storm together), every loop's connection is dropped at once and each
 * reconnects once with its token and then stays logged in: no loop comes
 * back a second time to compete with those not yet in.  --spread T delays
 * each reconnect by a random 0..T s, as clients' reconnect backoff with
 * jitter does (the qchat client's starts at 500 ms).  all_in is then the
 * time from the drop to the last loop's login ack.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "common/proto.h"

#define LOOP_STALLED  1               /* conn->role bit: a stall was already counted */
#define LOOP_MEASURED 2               /* conn->role bit: a measured login finished */
#define TOKEN_CHARS   43              /* a login token's text (base64url of 32 bytes) */
#define TOKEN_WAIT_S  600             /* the longest the password logins for tokens may take */
#define STORM_TICK_NS (1 * NS_PER_MS) /* --spread: how often due reconnects are started */

typedef char token_text[TOKEN_CHARS + 1];

struct lgthread {
    const struct bench_opts *o;
    const struct users *u;
    struct engine *e;
    uint32_t lo, hi;
    uint32_t live; /* loops still running */
    uint64_t t0, t1;
    token_text *tokens;      /* --tokens: per loop, "" until its first login */
    bool warming;            /* --tokens: password logins that fetch the tokens */
    uint32_t missing;        /* loops without a token yet */
    uint32_t measured;       /* loops with a measured login done */
    uint64_t t_all_in;       /* when the last of them finished it, 0: not yet */
    struct engine **engines; /* every thread's, for --ready-file */
    int nengines;
    pthread_barrier_t *bar; /* --storm: every thread has its tokens */
    struct due *due;        /* --storm --spread: reconnects by time */
    uint32_t ndue, next_due;
    uint64_t last_stall_walk; /* lg_check_stalls walked every loop then */
    uint64_t rng;
};

/* --spread: a loop's reconnect, when its jitter is over. */
struct due {
    uint64_t at;
    uint32_t loop;
};

/* LOGIN with the loop's token when it has one, else the password (asking for a token). */
static void lg_send_login(struct engine *e, struct conn *c)
{
    struct lgthread *th = e->ctx;
    if (!th->o->tokens) {
        engine_send_login(e, c);
        return;
    }
    c->state = CS_LOGIN;
    c->t_req = e->now;
    const char *tok = th->tokens[c->slot];
    if (tok[0])
        conn_printf(e, c, "{\"msgid\":%d,\"id\":%d,\"token\":\"%s\"}", QC_LOGIN_MSG, (int)c->uid,
                    tok);
    else
        conn_printf(e, c, "{\"msgid\":%d,\"id\":%d,\"password\":\"%s\",\"token\":true}",
                    QC_LOGIN_MSG, (int)c->uid, e->users->pw[c->user]);
}

static void lg_connected(struct engine *e, struct conn *c)
{
    lg_send_login(e, c);
}

/* The token of the LOGIN ack being handled, kept for the loop. */
static void keep_token(struct engine *e, struct lgthread *th, struct conn *c)
{
    const char *v;
    size_t vn;
    if (th->tokens[c->slot][0] || jfind(e->line, e->linelen, "token", &v, &vn) < 0 ||
        vn != TOKEN_CHARS)
        return;
    memcpy(th->tokens[c->slot], v, vn);
    th->tokens[c->slot][vn] = '\0';
    th->missing--;
}

static void loop_end(struct lgthread *th, struct conn *c)
{
    if (c->state != CS_CLOSED)
        th->live--;
}

static void lg_logged_in(struct engine *e, struct conn *c, long err)
{
    struct lgthread *th = e->ctx;

    if (err != QC_OK)
        return; /* the engine counts and closes it */
    if (th->o->tokens)
        keep_token(e, th, c);
    if (th->warming)
        return; /* stays logged in until the measurement starts */
    if (!(c->role & LOOP_MEASURED)) {
        c->role |= LOOP_MEASURED;
        if (++th->measured == e->nconns)
            th->t_all_in = e->now;
    }
    hist_add(&e->st.lat, e->now - c->t_req);
    e->st.logins++;
    if (e->measuring)
        e->st.window++;
    c->role &= (uint8_t)~LOOP_STALLED;
    if (th->o->storm)
        return; /* back online: stays, like a real client */
    if (!e->measuring) {
        loop_end(th, c);
        engine_drop(e, c);
        return;
    }
    if (th->o->reconnect) {
        engine_restart_later(e, c);
        return;
    }
    conn_printf(e, c, "{\"msgid\":%d}", QC_LOGINOUT_MSG);
    lg_send_login(e, c);
}

static void lg_line(struct engine *e, struct conn *c, const char *p, size_t n,
                    const struct jfields *f)
{
    engine_unexpected(e, c, f);
}

static void lg_closed(struct engine *e, struct conn *c)
{
    struct lgthread *th = e->ctx;
    if (th->warming && c->state != CS_CLOSED && !th->tokens[c->slot][0])
        th->missing--; /* this loop will never have a token: do not wait for it */
    loop_end(th, c);
}

static void start_due(struct engine *e, struct lgthread *th);

/* A loop waiting longer than --stall for its connect or login ack. */
static void lg_check_stalls(struct engine *e)
{
    uint64_t stall = (uint64_t)(e->o->stall * NS_PER_SEC);
    struct lgthread *th = e->ctx;
    if (th->due)
        start_due(e, th);
    /* --spread ticks every STORM_TICK_NS: the walk over every loop stays at the usual pace */
    if (e->now - th->last_stall_walk < BENCH_TICK_NS)
        return;
    th->last_stall_walk = e->now;

    for (uint32_t i = 0; i < e->nconns; i++) {
        struct conn *c = &e->conns[i];
        if ((c->state != CS_LOGIN && c->state != CS_CONNECTING) || (c->role & LOOP_STALLED) ||
            e->now - c->t_req <= stall)
            continue;
        c->role |= LOOP_STALLED;
        engine_error(e, E_STALL, "user %d: no login ack for %.1fs", (int)c->uid,
                     (double)(e->now - c->t_req) / NS_PER_SEC);
    }
}

static bool lg_tokens_ready(struct engine *e)
{
    struct lgthread *th = e->ctx;
    return th->missing == 0 || th->live == 0;
}

/* --tokens: every loop logs in once with its password for a token; then the first token login. */
static void fetch_tokens(struct lgthread *th, struct engine *e)
{
    th->warming = true;
    th->missing = e->nconns;
    if (e->index == 0)
        progress_phase("tokens");
    engine_run(e, lg_tokens_ready, now_ns() + (uint64_t)TOKEN_WAIT_S * NS_PER_SEC);
    th->warming = false;
    e->now = now_ns();
}

/* --tokens without --storm: every loop's first measured login, now. */
static void start_token_logins(struct lgthread *th, struct engine *e)
{
    for (uint32_t i = 0; i < e->nconns; i++) {
        struct conn *c = &e->conns[i];
        if (c->state != CS_READY)
            continue;
        if (th->o->reconnect) {
            engine_restart_later(e, c);
        } else {
            conn_printf(e, c, "{\"msgid\":%d}", QC_LOGINOUT_MSG);
            lg_send_login(e, c);
        }
    }
}

/* --storm: every thread has its tokens; the ready file, then the harness's go. */
static void await_storm(struct lgthread *th, struct engine *e)
{
    engine_publish(e);
    pthread_barrier_wait(th->bar);
    if (e->index == 0)
        bench_write_ready_file(th->o, th->engines, th->nengines);
    bench_wait_for_go(e);
}

static uint64_t next_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static int by_time(const void *a, const void *b)
{
    const struct due *x = a, *y = b;
    return x->at < y->at ? -1 : x->at > y->at;
}

/* The reconnects whose jitter is over. */
static void start_due(struct engine *e, struct lgthread *th)
{
    while (th->next_due < th->ndue && th->due[th->next_due].at <= e->now)
        engine_start(e, &e->conns[th->due[th->next_due++].loop]);
}

/* --storm: every loop's connection dropped at once; back now, or after its jitter. */
static void start_storm(struct lgthread *th, struct engine *e)
{
    uint64_t spread = (uint64_t)(th->o->spread * NS_PER_SEC);
    th->ndue = th->next_due = 0;
    for (uint32_t i = 0; i < e->nconns; i++) {
        struct conn *c = &e->conns[i];
        if (c->state != CS_READY)
            continue;
        if (spread == 0 || th->due == NULL) {
            engine_restart_later(e, c);
            continue;
        }
        engine_close(e, c);
        th->due[th->ndue++] =
            (struct due){ .at = e->now + next_random(&th->rng) % spread, .loop = i };
    }
    qsort(th->due, th->ndue, sizeof *th->due, by_time);
    if (th->ndue > 0)
        e->tick_ns = STORM_TICK_NS;
    start_due(e, th);
}

static bool lg_all_back(struct engine *e)
{
    struct lgthread *th = e->ctx;
    return th->measured == e->nconns || th->live == 0;
}

static bool lg_drained(struct engine *e)
{
    struct lgthread *th = e->ctx;
    return th->live == 0;
}

static void *lg_thread(void *arg)
{
    struct lgthread *th = arg;
    struct engine *e = th->e;

    e->ctx = th;
    e->ops.logged_in = lg_logged_in;
    e->ops.connected = lg_connected;
    e->ops.line = lg_line;
    e->ops.closed = lg_closed;
    e->ops.tick = lg_check_stalls;
    e->pcount = &e->st.logins;
    e->concurrency = e->nconns;
    for (uint32_t i = 0; i < e->nconns; i++) {
        struct conn *c = &e->conns[i];
        c->user = th->lo + i;
        c->uid = th->u->id[c->user];
        c->side = (uint8_t)(c->user % (uint32_t)th->o->nep);
        c->slot = i;
    }
    th->live = e->nconns;
    if (th->o->tokens)
        fetch_tokens(th, e);
    if (th->o->storm)
        await_storm(th, e);
    if (e->index == 0)
        progress_phase(th->o->storm ? "storm" : "measure");
    th->t0 = e->now = now_ns();
    e->measuring = true;
    if (th->o->storm)
        start_storm(th, e);
    else if (th->o->tokens)
        start_token_logins(th, e);
    engine_run(e, th->o->storm ? lg_all_back : NULL,
               th->t0 + (uint64_t)(th->o->duration * NS_PER_SEC));
    th->t1 = now_ns();
    e->measuring = false;
    if (e->index == 0)
        progress_phase("drain");
    e->draining = true;
    if (!th->o->storm) /* a storm's loops stay logged in: nothing is in flight */
        engine_run(e, lg_drained, th->t1 + (uint64_t)(th->o->drain * NS_PER_SEC));
    e->now = now_ns();
    th->last_stall_walk = 0; /* the last walk, whenever the one before was */
    lg_check_stalls(e);
    engine_publish(e);
    return NULL;
}

int mode_login(const struct bench_opts *o, struct result *r)
{
    uint32_t nloops = (uint32_t)o->loops;
    int nt = o->threads < (int)nloops ? o->threads : (int)nloops;
    struct lgthread *th = calloc((size_t)nt, sizeof *th);
    struct engine *engines[BENCH_MAX_THREADS];
    struct users u;
    pthread_barrier_t bar;
    int rc = -1;

    if (!th) {
        fprintf(stderr, "qchat-bench: out of memory\n");
        return -1;
    }
    if (users_for_mode(o, nloops, &u, &r->st) < 0) {
        free(th);
        return -1;
    }
    for (int i = 0; i < nt; i++) {
        th[i].o = o;
        th[i].u = &u;
        split_range(nloops, nt, i, &th[i].lo, &th[i].hi);
        if (o->tokens &&
            (th[i].tokens = calloc(th[i].hi - th[i].lo + 1, sizeof(token_text))) == NULL) {
            fprintf(stderr, "qchat-bench: out of memory\n");
            goto out;
        }
        th[i].e = engines[i] = engine_new(o, &u, th[i].hi - th[i].lo, th[i].lo, i);
        if (!th[i].e) {
            fprintf(stderr, "qchat-bench: out of memory\n");
            goto out;
        }
        th[i].engines = engines;
        th[i].nengines = nt;
        th[i].bar = &bar;
        th[i].rng = now_ns() ^ ((uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull);
        if (o->spread > 0 &&
            (th[i].due = calloc(th[i].hi - th[i].lo + 1, sizeof *th[i].due)) == NULL) {
            fprintf(stderr, "qchat-bench: out of memory\n");
            goto out;
        }
    }
    pthread_barrier_init(&bar, NULL, (unsigned)nt);
    progress_setup(o, engines, nt, "logins");
    run_threads(nt, th, sizeof *th, lg_thread);
    progress_end();
    pthread_barrier_destroy(&bar);

    uint64_t window = 0, all_in = 0;
    bool every_loop_in = true;
    for (int i = 0; i < nt; i++) {
        stats_merge(&r->st, &th[i].e->st);
        if (th[i].t1 - th[i].t0 > window)
            window = th[i].t1 - th[i].t0;
        if (th[i].t_all_in == 0)
            every_loop_in = false;
        else if (th[i].t_all_in - th[i].t0 > all_in)
            all_in = th[i].t_all_in - th[i].t0;
    }
    double secs = (double)window / NS_PER_SEC;
    result_add(r, "loops", nloops, 0, NULL);
    result_add(r, "reconnect", o->reconnect, 0, NULL);
    result_add(r, "tokens", o->tokens, 0, NULL);
    result_add(r, "storm", o->storm, 0, NULL);
    result_add(r, "spread", o->spread, 2, "s");
    result_add(r, "threads", nt, 0, NULL);
    result_add(r, "dur", secs, 2, "s");
    result_add(r, "logins", (double)r->st.logins, 0, NULL);
    result_add(r, "rate", secs > 0 ? (double)r->st.window / secs : 0, 0, "/s");
    /* every loop's first measured login done: -1 when some loop never got there */
    result_add(r, "all_in", every_loop_in ? (double)all_in / NS_PER_SEC : -1, 2, "s");
    rc = 0;
out:
    for (int i = 0; i < nt; i++) {
        engine_free(th[i].e);
        free(th[i].tokens);
        free(th[i].due);
    }
    users_free(&u);
    free(th);
    return rc;
}
