/*
 * conns.c - `qchat-bench conns`: open N sessions (connect + login, at most
 * --concurrency at a time, from several --sources addresses to get past 64k
 * ports), hold them idle for the duration (optionally with heartbeats),
 * then check that they still receive: a sample (or all) of them get one
 * ONE_CHAT from a neighbour, and every one must arrive exactly once.
 * Buffers are freed while a session is idle, so 100,000 sessions cost the
 * bench little more than its socket table.  --ready-file is created once
 * every session is up, so a harness can measure the server while it holds;
 * with --go-file the hold starts only once that file exists, so several
 * processes (each under its own open-file limit) hold their sessions at
 * the same time.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "common/proto.h"

#define CN_KIND 'C'
#define CN_GOT  1 /* conn->role bit: its verify message arrived */

struct cnthread {
    const struct bench_opts *o;
    const struct users *u;
    struct engine *e;
    uint32_t lo, hi;
    uint32_t verify; /* sessions of this thread to check */
    pthread_barrier_t *bar;
    uint32_t vsent, vgot;
    uint64_t setup_ns, hold_ns, next_beat;
};

static void cn_line(struct engine *e, struct conn *c, const char *p, size_t n,
                    const struct jfields *f)
{
    struct cnthread *th = e->ctx;
    uint32_t target, zero;
    uint64_t ts;

    if (f->msgid != QC_ONE_CHAT_MSG) {
        engine_unexpected(e, c, f);
        return;
    }
    if (!(f->has & JF_MSG) || tag_read(f->msg, f->msglen, CN_KIND, &target, &zero, &ts) < 0 ||
        target != th->lo + c->slot || ((f->has & JF_TOID) && f->toid != c->uid)) {
        engine_error(e, E_MISROUTED, "user %d got a chat meant for another", (int)c->uid);
        return;
    }
    if (c->role & CN_GOT) {
        engine_error(e, E_DUP, "user %d got its check message twice", (int)c->uid);
        return;
    }
    c->role |= CN_GOT;
    th->vgot++;
    e->st.msgs++;
    e->st.window++;
    if (ts <= e->now)
        hist_add(&e->st.lat, e->now - ts);
}

static void cn_heartbeat(struct engine *e)
{
    struct cnthread *th = e->ctx;

    if (!th->o->heartbeat || !th->next_beat || e->now < th->next_beat)
        return;
    th->next_beat = e->now + (uint64_t)(th->o->heartbeat * NS_PER_SEC);
    for (uint32_t i = 0; i < e->nconns; i++)
        if (e->conns[i].state == CS_READY &&
            conn_printf(e, &e->conns[i], "{\"msgid\":%d}", QC_HEARTBEAT_MSG) == 0)
            e->st.sent++;
}

static bool cn_verified(struct engine *e)
{
    struct cnthread *th = e->ctx;
    return th->vgot >= th->vsent;
}

/* Session t gets one chat from its neighbour t + 1 (itself when alone). */
static void cn_send_checks(struct cnthread *th)
{
    struct engine *e = th->e;
    uint32_t n = e->nconns;
    char tag[TAG_LEN + 1];

    for (uint32_t k = 0; k < th->verify; k++) {
        uint32_t t = (uint32_t)((uint64_t)k * n / th->verify);
        struct conn *to = &e->conns[t], *from = &e->conns[(t + 1) % n];
        if (to->state != CS_READY || from->state != CS_READY)
            continue;
        tag_write(tag, CN_KIND, th->lo + t, 0, e->now);
        tag[TAG_LEN] = '\0';
        if (conn_printf(e, from, "{\"msgid\":%d,\"id\":%d,\"toid\":%d,\"msg\":\"%s\"}",
                        QC_ONE_CHAT_MSG, (int)from->uid, (int)to->uid, tag) == 0) {
            th->vsent++;
            e->st.sent++;
        }
    }
}

static bool go_file_exists(struct engine *e)
{
    return access(e->o->go_file, F_OK) == 0;
}

/* Hold the sessions until the harness says go (bounded by --timeout). */
void bench_wait_for_go(struct engine *e)
{
    const struct bench_opts *o = e->o;

    if (!o->go_file)
        return;
    if (e->index == 0)
        progress_phase("wait");
    if (engine_run(e, go_file_exists, now_ns() + (uint64_t)(o->timeout * NS_PER_SEC)) ==
        RUN_DEADLINE)
        engine_error(e, E_TIMEOUT, "%s did not appear within %.0fs", o->go_file, o->timeout);
}

void bench_write_ready_file(const struct bench_opts *o, struct engine **es, int n)
{
    uint64_t ready = 0;
    FILE *f;

    for (int i = 0; i < n; i++)
        ready += es[i]->ready;
    if (!o->ready_file)
        return;
    f = fopen(o->ready_file, "w");
    if (!f) {
        fprintf(stderr, "qchat-bench: %s: %s\n", o->ready_file, strerror(errno));
        return;
    }
    fprintf(f, "%llu\n", (unsigned long long)ready);
    fclose(f);
}

struct cnshared {
    struct engine **engines;
    int n;
};

static struct cnshared cn_shared;

static void *cn_thread(void *arg)
{
    struct cnthread *th = arg;
    const struct bench_opts *o = th->o;
    struct engine *e = th->e;
    uint64_t start = now_ns();

    e->ctx = th;
    e->lean = true;
    e->ops.line = cn_line;
    e->ops.tick = cn_heartbeat;
    e->pcount = &e->st.msgs;
    for (uint32_t i = 0; i < e->nconns; i++) {
        struct conn *c = &e->conns[i];
        c->user = th->lo + i;
        c->uid = th->u->id[c->user];
        c->side = (uint8_t)(c->user % (uint32_t)o->nep);
        c->slot = i;
    }
    if (engine_run(e, engine_settled, start + (uint64_t)(o->timeout * NS_PER_SEC)) == RUN_DEADLINE)
        engine_error(e, E_TIMEOUT, "%u sessions not logged in after %.0fs",
                     e->nconns - e->ready - e->failed, o->timeout);
    th->setup_ns = now_ns() - start;
    engine_publish(e);
    pthread_barrier_wait(th->bar);
    if (e->index == 0)
        bench_write_ready_file(o, cn_shared.engines, cn_shared.n);
    bench_wait_for_go(e);
    if (e->index == 0)
        progress_phase("hold");
    uint64_t hold0 = now_ns();
    if (o->heartbeat)
        th->next_beat = hold0 + (uint64_t)(o->heartbeat * NS_PER_SEC);
    engine_run(e, NULL, hold0 + (uint64_t)(o->duration * NS_PER_SEC));
    th->hold_ns = now_ns() - hold0;
    th->next_beat = 0;
    if (e->index == 0)
        progress_phase("verify");
    e->now = now_ns();
    e->measuring = true;
    e->draining = true;
    cn_send_checks(th);
    engine_run(e, cn_verified, e->now + (uint64_t)(o->drain * NS_PER_SEC));
    e->measuring = false;
    e->st.err[E_LOST] += th->vsent - th->vgot;
    engine_publish(e);
    return NULL;
}

int mode_conns(const struct bench_opts *o, struct result *r)
{
    uint32_t n = (uint32_t)o->conns;
    uint64_t want = o->verify < 0 || (uint64_t)o->verify > n ? n : (uint64_t)o->verify;
    int nt = o->threads < (int)n ? o->threads : (int)n;
    struct cnthread *th = calloc((size_t)nt, sizeof *th);
    struct engine *engines[BENCH_MAX_THREADS];
    pthread_barrier_t bar;
    struct users u;
    int rc = -1;

    if (!th) {
        fprintf(stderr, "qchat-bench: out of memory\n");
        return -1;
    }
    if (users_for_mode(o, n, &u, &r->st) < 0) {
        free(th);
        return -1;
    }
    for (int i = 0; i < nt; i++) {
        th[i].o = o;
        th[i].u = &u;
        th[i].bar = &bar;
        split_range(n, nt, i, &th[i].lo, &th[i].hi);
        uint32_t vlo, vhi;
        split_range(want, nt, i, &vlo, &vhi);
        th[i].verify = vhi - vlo;
        th[i].e = engines[i] = engine_new(o, &u, th[i].hi - th[i].lo, th[i].lo, i);
        if (!th[i].e) {
            fprintf(stderr, "qchat-bench: out of memory\n");
            goto out;
        }
    }
    cn_shared.engines = engines;
    cn_shared.n = nt;
    pthread_barrier_init(&bar, NULL, (unsigned)nt);
    progress_setup(o, engines, nt, "checks");
    run_threads(nt, th, sizeof *th, cn_thread);
    progress_end();
    pthread_barrier_destroy(&bar);

    uint64_t setup = 0, hold = 0, held = 0, vsent = 0;
    for (int i = 0; i < nt; i++) {
        stats_merge(&r->st, &th[i].e->st);
        held += th[i].e->ready;
        vsent += th[i].vsent;
        if (th[i].setup_ns > setup)
            setup = th[i].setup_ns;
        if (th[i].hold_ns > hold)
            hold = th[i].hold_ns;
    }
    double ssecs = (double)setup / NS_PER_SEC;
    result_add(r, "conns", n, 0, NULL);
    result_add(r, "held", (double)held, 0, NULL);
    result_add(r, "threads", nt, 0, NULL);
    result_add(r, "setup", ssecs, 2, "s");
    result_add(r, "rate", ssecs > 0 ? (double)held / ssecs : 0, 0, "/s");
    result_add(r, "hold", (double)hold / NS_PER_SEC, 2, "s");
    result_add(r, "checked", (double)vsent, 0, NULL);
    result_add(r, "received", (double)r->st.msgs, 0, NULL);
    rc = 0;
out:
    for (int i = 0; i < nt; i++)
        engine_free(th[i].e);
    users_free(&u);
    free(th);
    return rc;
}
