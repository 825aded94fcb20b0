/*
 * group.c - `qchat-bench group`: M online members of one group (created by
 * the first member, or --groupid to reuse one; everyone joins, "already a
 * member" is fine), S of them send GROUP_CHATs, each keeping K in flight
 * (optionally paced to --rate messages/s over all senders).  A message is
 * complete when every other joined member has it; completion lets its
 * sender send the next.  Every delivery is checked (group, sender, order,
 * duplicates) and gives a one-way latency; deliveries/s is the figure.
 * One thread: completion tracking crosses every member.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "common/proto.h"

#define GR_KIND       'G'
#define GR_JOINED     1 /* conn->role bit */
#define GR_JOINING    2
#define GR_SEQ_CREATE "\"create\""
#define GR_SEQ_JOIN   "\"join\""

struct gslot {
    uint32_t seq, got;
    bool used;
};

struct gsender {
    uint32_t member; /* conn index */
    uint32_t next_seq, outstanding;
    uint64_t last_progress;
    bool stalled;
    struct gslot *slots; /* inflight of them, by seq % inflight */
    struct msgtmpl t;
};

enum gphase { GP_LOGIN, GP_CREATE, GP_JOIN, GP_RUN };

struct grctx {
    const struct bench_opts *o;
    struct engine *e;
    enum gphase phase;
    long groupid;
    bool create_failed;
    uint32_t joins_pending, joined;
    uint32_t nsenders, expect; /* expect: deliveries per message */
    struct gsender *senders;
    struct seqwin *wins; /* [member * nsenders + sender] */
    uint32_t *sender_of; /* member -> sender number + 1, 0: not a sender */
    uint32_t outstanding;
    uint64_t total_sent, t0, t1;
};

static bool gr_may_send(struct grctx *g, struct gsender *s)
{
    const struct bench_opts *o = g->o;

    if (!g->e->measuring || s->outstanding >= (uint32_t)o->inflight)
        return false;
    if (o->count && s->next_seq >= (uint32_t)o->count)
        return false;
    if (o->rate > 0) {
        double allowed = o->rate * (double)(g->e->now - g->t0) / NS_PER_SEC + 1.0;
        if ((double)g->total_sent >= allowed)
            return false;
    }
    return true;
}

static void gr_send_more(struct grctx *g, uint32_t j)
{
    struct gsender *s = &g->senders[j];
    struct engine *e = g->e;

    while (gr_may_send(g, s)) {
        struct gslot *slot = &s->slots[s->next_seq % (uint32_t)g->o->inflight];
        if (slot->used)
            break;
        if (conn_send_tmpl(e, &e->conns[s->member], &s->t, GR_KIND, j, s->next_seq, s->next_seq) <
            0)
            break;
        *slot = (struct gslot){ .seq = s->next_seq, .got = 0, .used = true };
        s->next_seq++;
        s->outstanding++;
        g->outstanding++;
        g->total_sent++;
        e->st.sent++;
    }
}

static void gr_complete(struct grctx *g, uint32_t j, struct gslot *slot)
{
    struct gsender *s = &g->senders[j];

    slot->used = false;
    s->outstanding--;
    g->outstanding--;
    gr_send_more(g, j);
}

static void gr_delivery(struct grctx *g, struct conn *c, const struct jfields *f)
{
    struct engine *e = g->e;
    uint32_t j, seq;
    uint64_t ts;

    if (!(f->has & JF_MSG) || tag_read(f->msg, f->msglen, GR_KIND, &j, &seq, &ts) < 0 ||
        j >= g->nsenders || !(f->has & JF_GROUPID) || f->groupid != g->groupid ||
        g->senders[j].member == conn_index(e, c) ||
        ((f->has & JF_ID) && f->id != e->conns[g->senders[j].member].uid)) {
        engine_error(e, E_MISROUTED, "user %d got a group chat it should not have", (int)c->uid);
        return;
    }
    struct gsender *s = &g->senders[j];
    int r = seqwin_add(&g->wins[(size_t)conn_index(e, c) * g->nsenders + j], seq);
    if (r == SEQ_DUP) {
        engine_error(e, E_DUP, "user %d: group message %u/%u twice", (int)c->uid, j, seq);
        return;
    }
    if (r == SEQ_LATE)
        engine_error(e, E_REORDER, "user %d: group message %u/%u after a later one", (int)c->uid, j,
                     seq);
    if (ts <= e->now)
        hist_add(&e->st.lat, e->now - ts);
    e->st.msgs++;
    if (e->measuring)
        e->st.window++;
    s->last_progress = e->now;
    s->stalled = false;
    struct gslot *slot = &s->slots[seq % (uint32_t)g->o->inflight];
    if (slot->used && slot->seq == seq && ++slot->got >= g->expect)
        gr_complete(g, j, slot);
}

static void gr_ack(struct grctx *g, struct conn *c, const struct jfields *f)
{
    struct engine *e = g->e;
    long err = (f->has & JF_ERRNO) ? f->err : QC_EINTERNAL;

    if (g->phase == GP_CREATE && f->req == QC_CREATE_GROUP_MSG) {
        if (err == QC_OK && (f->has & JF_GROUPID)) {
            g->groupid = f->groupid;
            return;
        }
        g->create_failed = true;
        engine_unexpected(e, c, f);
        return;
    }
    if (f->req == QC_ADD_GROUP_MSG && (c->role & GR_JOINING)) {
        c->role &= (uint8_t)~GR_JOINING;
        g->joins_pending--;
        if (err == QC_OK || err == QC_EALREADY) {
            c->role |= GR_JOINED;
            g->joined++;
            return;
        }
    }
    engine_unexpected(e, c, f);
}

static void gr_line(struct engine *e, struct conn *c, const char *p, size_t n,
                    const struct jfields *f)
{
    struct grctx *g = e->ctx;

    if (f->msgid == QC_GROUP_CHAT_MSG)
        gr_delivery(g, c, f);
    else if (f->msgid == QC_ACK_MSG && (f->has & JF_REQ))
        gr_ack(g, c, f);
    else
        engine_unexpected(e, c, f);
}

static void gr_closed(struct engine *e, struct conn *c)
{
    struct grctx *g = e->ctx;

    if (c->role & GR_JOINING) {
        c->role &= (uint8_t)~GR_JOINING;
        g->joins_pending--;
    }
}

static void gr_tick(struct engine *e)
{
    struct grctx *g = e->ctx;
    uint64_t stall = (uint64_t)(g->o->stall * NS_PER_SEC);

    if (g->phase != GP_RUN)
        return;
    for (uint32_t j = 0; j < g->nsenders; j++) {
        struct gsender *s = &g->senders[j];
        if (g->o->rate > 0)
            gr_send_more(g, j);
        if (!s->outstanding || s->stalled || e->now - s->last_progress <= stall)
            continue;
        s->stalled = true;
        engine_error(e, E_STALL, "sender %u: no delivery for %.1fs (%u in flight)", j,
                     (double)(e->now - s->last_progress) / NS_PER_SEC, s->outstanding);
    }
}

static bool gr_created(struct engine *e)
{
    struct grctx *g = e->ctx;
    return g->groupid > 0 || g->create_failed;
}

static bool gr_all_joined(struct engine *e)
{
    struct grctx *g = e->ctx;
    return g->joins_pending == 0;
}

static bool gr_finished(struct engine *e)
{
    struct grctx *g = e->ctx;
    if (!g->o->count)
        return false;
    for (uint32_t j = 0; j < g->nsenders; j++)
        if (g->senders[j].next_seq < (uint32_t)g->o->count || g->senders[j].outstanding)
            return false;
    return true;
}

static bool gr_drained(struct engine *e)
{
    struct grctx *g = e->ctx;
    return g->outstanding == 0;
}

static int gr_create(struct grctx *g, uint64_t deadline)
{
    struct engine *e = g->e;

    if (g->o->groupid > 0) {
        g->groupid = g->o->groupid;
        return 0;
    }
    g->phase = GP_CREATE;
    for (uint32_t i = 0; i < e->nconns; i++) {
        struct conn *c = &e->conns[i];
        if (c->state != CS_READY)
            continue;
        conn_printf(e, c,
                    "{\"msgid\":%d,\"groupname\":\"%sgroup\",\"groupdesc\":\"qchat-bench\","
                    "\"seq\":" GR_SEQ_CREATE "}",
                    QC_CREATE_GROUP_MSG, g->o->prefix);
        if (engine_run(e, gr_created, deadline) != RUN_DONE && !g->create_failed)
            engine_error(e, E_TIMEOUT, "no answer to CREATE_GROUP");
        if (g->groupid > 0)
            return 0;
        return -1;
    }
    return -1;
}

static void gr_join(struct grctx *g, uint64_t deadline)
{
    struct engine *e = g->e;

    g->phase = GP_JOIN;
    for (uint32_t i = 0; i < e->nconns; i++) {
        struct conn *c = &e->conns[i];
        if (c->state != CS_READY)
            continue;
        if (conn_printf(e, c, "{\"msgid\":%d,\"groupid\":%ld,\"seq\":" GR_SEQ_JOIN "}",
                        QC_ADD_GROUP_MSG, g->groupid) < 0)
            continue;
        c->role |= GR_JOINING;
        g->joins_pending++;
    }
    if (engine_run(e, gr_all_joined, deadline) == RUN_DEADLINE)
        engine_error(e, E_TIMEOUT, "%u ADD_GROUP requests unanswered", g->joins_pending);
}

static int gr_pick_senders(struct grctx *g)
{
    struct engine *e = g->e;
    uint32_t want = (uint32_t)g->o->senders, idx = 0;
    char head[BENCH_LINE_MAX];

    if (want > g->joined)
        want = g->joined;
    g->senders = calloc(want ? want : 1, sizeof *g->senders);
    g->wins = calloc((size_t)e->nconns * (want ? want : 1), sizeof *g->wins);
    if (!g->senders || !g->wins)
        return -1;
    /* spread the senders evenly over the joined members */
    for (uint32_t i = 0, seen = 0; i < e->nconns && g->nsenders < want; i++) {
        struct conn *c = &e->conns[i];
        if (!(c->role & GR_JOINED))
            continue;
        if ((uint64_t)seen++ * want / g->joined != idx)
            continue;
        struct gsender *s = &g->senders[g->nsenders];
        s->member = i;
        s->slots = calloc((size_t)g->o->inflight, sizeof *s->slots);
        snprintf(head, sizeof head, "{\"msgid\":%d,\"id\":%d,\"groupid\":%ld,", QC_GROUP_CHAT_MSG,
                 (int)c->uid, g->groupid);
        if (!s->slots || tmpl_init(&s->t, head, g->o->size, g->o->seq) < 0)
            return -1;
        g->nsenders++;
        idx++;
    }
    g->expect = g->joined ? g->joined - 1 : 0;
    return 0;
}

static void gr_free(struct grctx *g)
{
    for (uint32_t j = 0; g->senders && j < g->nsenders; j++) {
        free(g->senders[j].slots);
        tmpl_free(&g->senders[j].t);
    }
    free(g->senders);
    free(g->wins);
}

static void gr_measure(struct grctx *g)
{
    struct engine *e = g->e;
    const struct bench_opts *o = g->o;

    if (o->rate > 0)
        e->tick_ns = BENCH_RATE_TICK_NS;
    g->phase = GP_RUN;
    progress_phase("measure");
    g->t0 = e->now = now_ns();
    e->measuring = true;
    for (uint32_t j = 0; j < g->nsenders; j++) {
        g->senders[j].last_progress = g->t0;
        gr_send_more(g, j);
    }
    engine_run(e, gr_finished, g->t0 + (uint64_t)(o->duration * NS_PER_SEC));
    g->t1 = now_ns();
    e->measuring = false;
    progress_phase("drain");
    e->draining = true;
    engine_run(e, gr_drained, g->t1 + (uint64_t)(o->drain * NS_PER_SEC));
    e->now = now_ns();
    gr_tick(e);
    uint64_t expected = g->total_sent * g->expect;
    e->st.err[E_LOST] += expected > e->st.msgs ? expected - e->st.msgs : 0;
}

int mode_group(const struct bench_opts *o, struct result *r)
{
    uint32_t m = (uint32_t)o->members;
    struct grctx g = { .o = o, .phase = GP_LOGIN };
    struct users u;
    struct engine *e;
    int rc = -1;

    if (users_for_mode(o, m, &u, &r->st) < 0)
        return -1;
    e = g.e = engine_new(o, &u, m, 0, 0);
    if (!e) {
        fprintf(stderr, "qchat-bench: out of memory\n");
        users_free(&u);
        return -1;
    }
    e->ctx = &g;
    e->ops.line = gr_line;
    e->ops.closed = gr_closed;
    e->ops.tick = gr_tick;
    e->pcount = &e->st.msgs;
    for (uint32_t i = 0; i < m; i++) {
        e->conns[i].user = i;
        e->conns[i].uid = u.id[i];
        e->conns[i].side = (uint8_t)(i % (uint32_t)o->nep);
        e->conns[i].slot = i;
    }
    progress_setup(o, &e, 1, "deliveries");
    uint64_t deadline = now_ns() + (uint64_t)(o->timeout * NS_PER_SEC);
    if (engine_run(e, engine_settled, deadline) == RUN_DEADLINE)
        engine_error(e, E_TIMEOUT, "%u members not logged in after %.0fs",
                     e->nconns - e->ready - e->failed, o->timeout);
    if (gr_create(&g, deadline) == 0) {
        gr_join(&g, deadline);
        if (gr_pick_senders(&g) < 0)
            engine_error(e, E_PROTOCOL, "out of memory");
        else if (g.nsenders && !bench_interrupted)
            gr_measure(&g);
    }
    progress_end();
    stats_merge(&r->st, &e->st);
    double secs = (double)(g.t1 - g.t0) / NS_PER_SEC;
    result_add(r, "members", m, 0, NULL);
    result_add(r, "joined", g.joined, 0, NULL);
    result_add(r, "senders", g.nsenders, 0, NULL);
    result_add(r, "inflight", o->inflight, 0, NULL);
    result_add(r, "size", o->size, 0, NULL);
    result_add(r, "groupid", (double)g.groupid, 0, NULL);
    result_add(r, "dur", secs, 2, "s");
    result_add(r, "sent", (double)g.total_sent, 0, NULL);
    result_add(r, "deliveries", (double)r->st.msgs, 0, NULL);
    result_add(r, "rate", secs > 0 ? (double)r->st.window / secs : 0, 0, "/s");
    rc = 0;
    gr_free(&g);
    engine_free(e);
    users_free(&u);
    return rc;
}
