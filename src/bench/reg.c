/*
 * reg.c - registration: `qchat-bench reg` creates N accounts over
 * `concurrency` connections (one REG in flight on each) and writes the ids
 * file; the other modes call the same code to get their users when neither
 * --ids nor --synthetic is given.  Bounded by --timeout.  A connection that
 * never logs in is closed by the server after security.login_timeout (30 s
 * by default), so each one is replaced by a fresh one after REG_CONN_NS.
 */
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "common/proto.h"

#define REG_CONN_NS (10 * NS_PER_SEC) /* well below the server's login_timeout */

struct regctx {
    struct users *u;
    uint32_t next, done;
};

static void reg_next(struct engine *e, struct conn *c)
{
    struct regctx *rc = e->ctx;
    const struct bench_opts *o = e->o;

    if (rc->next >= rc->u->n) {
        engine_drop(e, c);
        return;
    }
    c->slot = rc->next++;
    c->state = CS_REG;
    c->t_req = e->now;
    conn_printf(e, c, "{\"msgid\":%d,\"name\":\"%s%u\",\"password\":\"%s\"}", QC_REG_MSG, o->prefix,
                c->slot, rc->u->pw[c->slot]);
}

static void reg_line(struct engine *e, struct conn *c, const char *p, size_t n,
                     const struct jfields *f)
{
    struct regctx *rc = e->ctx;

    if (c->state != CS_REG || f->msgid != QC_REG_MSG_ACK) {
        engine_unexpected(e, c, f);
        return;
    }
    rc->done++;
    if ((f->has & JF_ERRNO) && f->err == QC_OK && (f->has & JF_ID)) {
        rc->u->id[c->slot] = (int32_t)f->id;
        e->st.regs++;
        e->st.window++;
        hist_add(&e->st.lat, e->now - c->t_req);
    } else {
        engine_error(e, E_REG, "register %s%u: errno %ld", e->o->prefix, c->slot,
                     (f->has & JF_ERRNO) ? f->err : -1L);
    }
    if (rc->next < rc->u->n && e->now - c->t_conn >= REG_CONN_NS)
        engine_restart_later(e, c); /* connects again, then reg_next */
    else
        reg_next(e, c);
}

static void reg_closed(struct engine *e, struct conn *c)
{
    struct regctx *rc = e->ctx;

    if (c->state == CS_REG)
        rc->done++;
}

static bool reg_finished(struct engine *e)
{
    struct regctx *rc = e->ctx;
    return rc->done >= rc->u->n || engine_settled(e);
}

int reg_users(const struct bench_opts *o, struct users *u, struct stats *st, double *secs)
{
    struct regctx rc = { .u = u };
    uint32_t width = o->concurrency > 0 ? (uint32_t)o->concurrency : BENCH_REG_CONCURRENCY;
    uint32_t nconns = u->n < width ? u->n : width;
    struct engine *e = engine_new(o, u, nconns, 0, 0);

    if (!e) {
        fprintf(stderr, "qchat-bench: out of memory\n");
        return -1;
    }
    e->ctx = &rc;
    e->ops.connected = reg_next;
    e->ops.line = reg_line;
    e->ops.closed = reg_closed;
    e->pcount = &e->st.regs;
    for (uint32_t i = 0; i < nconns; i++)
        e->conns[i].uid = 0;
    progress_setup(o, &e, 1, "regs");
    progress_phase("register");
    uint64_t t0 = now_ns();
    int rs = engine_run(e, reg_finished, t0 + (uint64_t)(o->timeout * NS_PER_SEC));
    *secs = (double)(now_ns() - t0) / NS_PER_SEC;
    progress_end();
    uint32_t missing = u->n - (rc.done < u->n ? rc.done : u->n);
    if (missing && rs != RUN_INTERRUPTED)
        engine_error(e, E_TIMEOUT, "%u registrations unfinished after %.0fs", missing, o->timeout);
    stats_merge(st, &e->st);
    engine_free(e);
    return 0;
}

int users_for_mode(const struct bench_opts *o, uint32_t n, struct users *u, struct stats *st)
{
    if (o->synthetic)
        return users_synthetic(u, n, o->id_base, o->password);
    if (o->ids_file)
        return users_load(u, o->ids_file, (uint32_t)o->skip, n);
    if (users_alloc(u, n, o->password) < 0)
        return -1;
    struct stats rs;
    double secs;
    stats_init(&rs);
    if (reg_users(o, u, &rs, &secs) < 0) {
        users_free(u);
        return -1;
    }
    if (!o->quiet)
        fprintf(stderr, "qchat-bench: registered %llu users in %.1fs\n",
                (unsigned long long)rs.regs, secs);
    for (int i = 0; i < E_COUNT; i++)
        st->err[i] += rs.err[i];
    return 0;
}

int mode_reg(const struct bench_opts *o, struct result *r)
{
    struct users u;
    double secs;

    if (users_alloc(&u, (uint32_t)o->users, o->password) < 0)
        return -1;
    if (reg_users(o, &u, &r->st, &secs) < 0) {
        users_free(&u);
        return -1;
    }
    int rc = users_save(&u, o->out_file, o->password);
    users_free(&u);
    if (rc < 0)
        return -1;
    result_add(r, "users", (double)o->users, 0, NULL);
    result_add(r, "registered", (double)r->st.regs, 0, NULL);
    result_add(r, "dur", secs, 2, "s");
    result_add(r, "rate", secs > 0 ? (double)r->st.regs / secs : 0, 0, "/s");
    return 0;
}
