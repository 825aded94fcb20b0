/*
 * pingpong.c - `qchat-bench pingpong`: P pairs of sessions (A, B).  A keeps
 * K ONE_CHATs in flight to B; B answers each one it receives with a chat
 * back to A carrying the same sequence number; each answer lets A send the
 * next.  Every text carries the pair, the sequence number and the send time,
 * so each delivery gives a one-way latency and is checked: right receiver,
 * right sender, not seen before, not older than one already seen.  After the
 * duration A stops, the messages still in flight are drained, and whatever
 * never arrived is counted lost.  Pairs are split over -j threads, each with
 * its own engine; the B side may use a second address (--host2/--port2).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "common/proto.h"

#define PP_KIND 'P'
#define ROLE_A  0
#define ROLE_B  1

struct pair {
    uint32_t next_seq;    /* next seq A sends = A's messages so far */
    uint32_t outstanding; /* A's messages whose answer is not back */
    uint32_t sent_ba, recv_ab, recv_ba;
    struct seqwin win_ab, win_ba;
    uint64_t last_progress;
    bool active, stalled;
    struct msgtmpl ab, ba;
};

struct ppthread {
    const struct bench_opts *o;
    const struct users *u;
    struct engine *e;
    struct pair *pairs; /* this thread's pairs */
    uint32_t lo, hi;    /* global pair numbers */
    pthread_barrier_t *bar;
    uint32_t outstanding; /* messages in flight over all pairs */
    uint32_t busy;        /* pairs with messages left (--count) */
    uint32_t live;        /* pairs running */
    uint64_t t0, t1;
};

static struct conn *pair_conn(struct ppthread *th, uint32_t local, int role)
{
    return &th->e->conns[2 * local + (uint32_t)role];
}

static bool pair_wants_more(const struct ppthread *th, const struct pair *pr)
{
    return th->e->measuring && (th->o->count == 0 || pr->next_seq < (uint32_t)th->o->count);
}

static void pair_send(struct ppthread *th, uint32_t local)
{
    struct pair *pr = &th->pairs[local];
    struct engine *e = th->e;

    if (conn_send_tmpl(e, pair_conn(th, local, ROLE_A), &pr->ab, PP_KIND, th->lo + local,
                       pr->next_seq, pr->next_seq) < 0)
        return;
    pr->next_seq++;
    pr->outstanding++;
    th->outstanding++;
    e->st.sent++;
}

static void pair_retire(struct ppthread *th, struct pair *pr)
{
    if (!pr->active)
        return;
    pr->active = false;
    th->live--;
    th->outstanding -= pr->outstanding;
    if (th->o->count)
        th->busy--;
}

static void pp_line(struct engine *e, struct conn *c, const char *p, size_t n,
                    const struct jfields *f)
{
    struct ppthread *th = e->ctx;
    uint32_t local = c->slot, pairno, seq;
    uint64_t ts;

    if (f->msgid != QC_ONE_CHAT_MSG) {
        engine_unexpected(e, c, f);
        return;
    }
    struct pair *pr = &th->pairs[local];
    struct conn *peer = pair_conn(th, local, c->role == ROLE_A ? ROLE_B : ROLE_A);
    if (!(f->has & JF_MSG) || tag_read(f->msg, f->msglen, PP_KIND, &pairno, &seq, &ts) < 0 ||
        pairno != th->lo + local || ((f->has & JF_TOID) && f->toid != c->uid) ||
        ((f->has & JF_ID) && f->id != peer->uid)) {
        engine_error(e, E_MISROUTED, "user %d got a chat meant for another (toid %ld, from %ld)",
                     (int)c->uid, (f->has & JF_TOID) ? f->toid : -1L,
                     (f->has & JF_ID) ? f->id : -1L);
        return;
    }
    int r = seqwin_add(c->role == ROLE_A ? &pr->win_ba : &pr->win_ab, seq);
    if (r == SEQ_DUP) {
        engine_error(e, E_DUP, "pair %u: seq %u received twice", pairno, seq);
        return;
    }
    if (r == SEQ_LATE)
        engine_error(e, E_REORDER, "pair %u: seq %u after a later one", pairno, seq);
    if (ts <= e->now)
        hist_add(&e->st.lat, e->now - ts);
    e->st.msgs++;
    if (e->measuring)
        e->st.window++;
    pr->last_progress = e->now;
    pr->stalled = false;
    if (c->role == ROLE_B) {
        pr->recv_ab++;
        if (pr->active && conn_send_tmpl(e, c, &pr->ba, PP_KIND, pairno, seq, seq) == 0) {
            pr->sent_ba++;
            e->st.sent++;
        }
        return;
    }
    pr->recv_ba++;
    if (!pr->active)
        return;
    if (pr->outstanding) {
        pr->outstanding--;
        th->outstanding--;
    }
    if (pair_wants_more(th, pr))
        pair_send(th, local);
    else if (th->o->count && pr->outstanding == 0 && pr->next_seq >= (uint32_t)th->o->count)
        pair_retire(th, pr);
}

static void pp_closed(struct engine *e, struct conn *c)
{
    struct ppthread *th = e->ctx;
    pair_retire(th, &th->pairs[c->slot]);
}

static void pp_tick(struct engine *e)
{
    struct ppthread *th = e->ctx;
    uint64_t stall = (uint64_t)(th->o->stall * NS_PER_SEC);

    for (uint32_t i = 0; i < th->hi - th->lo; i++) {
        struct pair *pr = &th->pairs[i];
        if (!pr->active || !pr->outstanding || pr->stalled || e->now - pr->last_progress <= stall)
            continue;
        pr->stalled = true;
        engine_error(e, E_STALL, "pair %u: no progress for %.1fs (%u in flight)", th->lo + i,
                     (double)(e->now - pr->last_progress) / NS_PER_SEC, pr->outstanding);
    }
}

static bool pp_finished(struct engine *e)
{
    struct ppthread *th = e->ctx;
    return th->live == 0 || (th->o->count && th->busy == 0);
}

static bool pp_drained(struct engine *e)
{
    struct ppthread *th = e->ctx;
    return th->outstanding == 0;
}

static void pp_wire(struct ppthread *th)
{
    struct engine *e = th->e;
    int side_b = th->o->nep - 1;

    e->ctx = th;
    e->ops.line = pp_line;
    e->ops.closed = pp_closed;
    e->ops.tick = pp_tick;
    e->pcount = &e->st.msgs;
    for (uint32_t i = 0; i < th->hi - th->lo; i++) {
        uint32_t g = th->lo + i;
        for (int role = ROLE_A; role <= ROLE_B; role++) {
            struct conn *c = pair_conn(th, i, role);
            c->user = 2 * g + (uint32_t)role;
            c->uid = th->u->id[c->user];
            c->slot = i;
            c->role = (uint8_t)role;
            c->side = (uint8_t)(role == ROLE_A ? 0 : side_b);
        }
    }
}

static int pair_arm(struct ppthread *th, uint32_t i)
{
    struct pair *pr = &th->pairs[i];
    int32_t ua = pair_conn(th, i, ROLE_A)->uid, ub = pair_conn(th, i, ROLE_B)->uid;
    char head[BENCH_LINE_MAX];

    if (pair_conn(th, i, ROLE_A)->state != CS_READY || pair_conn(th, i, ROLE_B)->state != CS_READY)
        return 0;
    snprintf(head, sizeof head, "{\"msgid\":%d,\"id\":%d,\"toid\":%d,", QC_ONE_CHAT_MSG, ua, ub);
    if (tmpl_init(&pr->ab, head, th->o->size, th->o->seq) < 0)
        return -1;
    snprintf(head, sizeof head, "{\"msgid\":%d,\"id\":%d,\"toid\":%d,", QC_ONE_CHAT_MSG, ub, ua);
    if (tmpl_init(&pr->ba, head, th->o->size, th->o->seq) < 0)
        return -1;
    pr->active = true;
    th->live++;
    if (th->o->count)
        th->busy++;
    return 0;
}

static void *pp_thread(void *arg)
{
    struct ppthread *th = arg;
    const struct bench_opts *o = th->o;
    struct engine *e = th->e;
    uint32_t npairs = th->hi - th->lo;
    uint64_t start = now_ns();

    pp_wire(th);
    if (engine_run(e, engine_settled, start + (uint64_t)(o->timeout * NS_PER_SEC)) == RUN_DEADLINE)
        engine_error(e, E_TIMEOUT, "%u sessions not logged in after %.0fs",
                     e->nconns - e->ready - e->failed, o->timeout);
    for (uint32_t i = 0; i < npairs; i++)
        if (pair_arm(th, i) < 0) {
            engine_error(e, E_PROTOCOL, "out of memory");
            break;
        }
    pthread_barrier_wait(th->bar);
    if (e->index == 0)
        progress_phase("measure");
    th->t0 = e->now = now_ns();
    e->measuring = true;
    for (uint32_t i = 0; i < npairs; i++) {
        struct pair *pr = &th->pairs[i];
        pr->last_progress = th->t0;
        for (int k = 0; pr->active && k < o->inflight && pair_wants_more(th, pr); k++)
            pair_send(th, i);
    }
    engine_run(e, pp_finished, th->t0 + (uint64_t)(o->duration * NS_PER_SEC));
    th->t1 = now_ns();
    e->measuring = false;
    if (e->index == 0)
        progress_phase("drain");
    e->draining = true;
    engine_run(e, pp_drained, th->t1 + (uint64_t)(o->drain * NS_PER_SEC));
    pp_tick(e);
    for (uint32_t i = 0; i < npairs; i++) {
        struct pair *pr = &th->pairs[i];
        e->st.err[E_LOST] += (pr->next_seq - pr->recv_ab) + (pr->sent_ba - pr->recv_ba);
    }
    engine_publish(e);
    return NULL;
}

int mode_pingpong(const struct bench_opts *o, struct result *r)
{
    uint32_t npairs = (uint32_t)o->pairs;
    int nt = o->threads < (int)npairs ? o->threads : (int)npairs;
    struct users u;
    struct pair *pairs = calloc(npairs, sizeof *pairs);
    struct ppthread *th = calloc((size_t)nt, sizeof *th);
    struct engine *engines[BENCH_MAX_THREADS];
    pthread_barrier_t bar;
    int rc = -1;

    if (!pairs || !th) {
        fprintf(stderr, "qchat-bench: out of memory\n");
        goto out;
    }
    if (users_for_mode(o, 2 * npairs, &u, &r->st) < 0)
        goto out;
    for (int i = 0; i < nt; i++) {
        th[i].o = o;
        th[i].u = &u;
        th[i].bar = &bar;
        split_range(npairs, nt, i, &th[i].lo, &th[i].hi);
        th[i].pairs = pairs + th[i].lo;
        th[i].e = engines[i] = engine_new(o, &u, 2 * (th[i].hi - th[i].lo), 2 * th[i].lo, i);
        if (!th[i].e) {
            fprintf(stderr, "qchat-bench: out of memory\n");
            goto engines;
        }
    }
    pthread_barrier_init(&bar, NULL, (unsigned)nt);
    progress_setup(o, engines, nt, "msgs");
    run_threads(nt, th, sizeof *th, pp_thread);
    progress_end();
    pthread_barrier_destroy(&bar);

    uint64_t window = 0;
    for (int i = 0; i < nt; i++) {
        stats_merge(&r->st, &th[i].e->st);
        if (th[i].t1 - th[i].t0 > window)
            window = th[i].t1 - th[i].t0;
    }
    double secs = (double)window / NS_PER_SEC;
    result_add(r, "pairs", (double)npairs, 0, NULL);
    result_add(r, "inflight", o->inflight, 0, NULL);
    result_add(r, "size", o->size, 0, NULL);
    result_add(r, "threads", nt, 0, NULL);
    result_add(r, "dur", secs, 2, "s");
    result_add(r, "msgs", (double)r->st.msgs, 0, NULL);
    result_add(r, "rate", secs > 0 ? (double)r->st.window / secs : 0, 0, "/s");
    if (o->seq)
        result_add(r, "acks", (double)r->st.acks, 0, NULL);
    rc = 0;
engines:
    for (int i = 0; i < nt; i++)
        engine_free(th[i].e);
    for (uint32_t i = 0; i < npairs; i++) {
        tmpl_free(&pairs[i].ab);
        tmpl_free(&pairs[i].ba);
    }
    users_free(&u);
out:
    free(pairs);
    free(th);
    return rc;
}
