/*
 * worker_loop.c - a worker process: its epoll loop and everything the loop
 * owns (see worker_loop.h).
 *
 * The loop turns events into calls: the listening socket (shared by every
 * worker with EPOLLEXCLUSIVE) into conn_open, client sockets into
 * conn_handle_input / conn_flush, peer links into peer.c, the master's
 * channel into config updates, new peer links and operator kicks, signals
 * into the stop flag.  At the end of every turn, the output the turn produced
 * is written (one write per connection) and closed connections are freed.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/fatal.h"
#include "common/log.h"
#include "common/net.h"
#include "common/password.h"
#include "server/conn.h"
#include "server/crypt_pool.h"
#include "server/convmark.h"
#include "server/delivered.h"
#include "server/service_chat.h"
#include "server/service_social.h"
#include "server/storage.h"
#include "server/handoff.h"
#include "server/ipc.h"
#include "server/login.h"
#include "server/metrics.h"
#include "server/metrics_sample.h"
#include "server/pending.h"
#include "server/peer.h"
#include "server/proc.h"
#include "server/purge.h"
#include "server/reply.h"
#include "server/route.h"
#include "server/service.h"
#include "server/service_session.h"
#include "server/title.h"
#include "server/session.h"
#include "server/worker.h"
#include "server/worker_loop.h"
#include "server/ws_conn.h"

#define WORKER_TICK_MS           250 /* timers: deadlines, idle checks */
#define WORKER_ACCEPTS_PER_EVENT 64
#define WORKER_READ_BUF          (64 * 1024)
#define ACCEPT_SLACK_MIN         2 /* connections ahead of the least loaded worker */
#define ACCEPT_SLACK_SHIFT       3 /* ... or 1/8 of ours, whichever is more */

static struct worker the_worker;

/* ---- accepting ---------------------------------------------------------- */

/*
 * EPOLLEXCLUSIVE wakes one waiter, and an idle kernel tends to pick the same
 * one: like nginx's accept_disabled, a worker well ahead of the least loaded
 * live worker stops watching the listening socket until it is no longer
 * ahead (checked before each sleep and at each tick), so connections spread
 * over the workers.  It never stops while no other worker accepts: under
 * reconnect churn the least loaded worker may itself have stopped a moment
 * ago, and nobody would accept until a tick (a 250 ms stall per connection).
 */
static bool another_accepting(struct worker *w)
{
    for (uint32_t k = 0; k < w->nworkers; k++) {
        struct worker_stats *ws = online_stats(w->online, k);
        if (k != w->index && ws->pid != 0 && ws->accepting)
            return true;
    }
    return false;
}

static bool ahead_of_others(struct worker *w)
{
    uint32_t least = UINT32_MAX;
    for (uint32_t k = 0; k < w->nworkers; k++) {
        struct worker_stats *ws = online_stats(w->online, k);
        if (k == w->index || ws->pid == 0)
            continue;
        if (ws->connections < least)
            least = ws->connections;
    }
    uint32_t mine = w->stats->connections;
    uint32_t slack = mine >> ACCEPT_SLACK_SHIFT;
    if (slack < ACCEPT_SLACK_MIN)
        slack = ACCEPT_SLACK_MIN;
    return least != UINT32_MAX && mine > least + slack;
}

static void accept_clients(struct worker *w);

static void on_listen_event(void *ctx, uint32_t events)
{
    (void)events;
    accept_clients(ctx);
}

static void balance_accepting(struct worker *w)
{
    if (w->stopping)
        return;
    bool want = !ahead_of_others(w) || !another_accepting(w);
    if (want == w->accepting)
        return;
    if (want)
        loop_watch(&w->loop, &w->listen_src, w->listen_fd, EPOLLIN | EPOLLEXCLUSIVE,
                   on_listen_event, w);
    else
        loop_unwatch(&w->loop, &w->listen_src);
    w->accepting = want;
    w->stats->accepting = want;
}

/* Over the per-address cap: one error line, then the door. */
static void refuse_connection(struct worker *w, int fd)
{
    char line[160];
    int n = snprintf(line, sizeof line, "{\"msgid\":%d,\"errno\":%d,\"errmsg\":\"%s\",\"req\":0}\n",
                     QC_ACK_MSG, QC_ELIMIT, "too many connections from your address");
    if (send(fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_debug("refused connection: %s", strerror(errno));
    close(fd);
    log_info("connection refused: server.max_conns_per_ip (%d) reached for an address",
             w->cfg.max_conns_per_ip);
}

static void accept_clients(struct worker *w)
{
    for (int i = 0; i < WORKER_ACCEPTS_PER_EVENT && w->accepting; i++) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        int fd =
            accept4(w->listen_fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_warning("accept: %s", strerror(errno));
            return;
        }
        /* Behind a load balancer speaking PROXY, the address comes in the header. */
        bool proxied = w->proxy_protocol;
        uint32_t addr = guard_addr_hash(&peer);
        if (!proxied && !guard_conn_open(w->guard, w->index, addr, w->cfg.max_conns_per_ip)) {
            refuse_connection(w, fd);
            continue;
        }
        struct conn *c = conn_open(w, fd);
        if (c) {
            metrics_count(QM_ACCEPTED, 0);
            c->ip_hash = addr;
            c->ip_counted = !proxied;
            c->awaiting_proxy = proxied;
            if (!proxied && !conn_count_prelogin(w, c))
                conn_fail(w, c, QC_ELIMIT);
        } else if (!proxied) {
            guard_conn_close(w->guard, w->index, addr);
        }
        if (c == NULL) {
            log_error("cannot take a new connection: out of memory or slots");
            close(fd);
        }
        balance_accepting(w);
    }
}

/* ---- the master's channel ----------------------------------------------- */

static void note_restart_key(void *arg, const char *name, bool live)
{
    (void)arg;
    if (!live)
        log_warning("reload: %s changed but needs a restart; keeping the old value", name);
}

/* Take the live keys of a new config; the others stay as they were. */
static void apply_config(struct worker *w, const struct qc_config *next)
{
    config_diff(&w->cfg, next, note_restart_key, NULL);
    bool log_moved = strcmp(w->cfg.log_target, next->log_target) != 0 ||
                     strcmp(w->cfg.log_file, next->log_file) != 0;
    config_apply_live(&w->cfg, next);
    if (log_moved && log_open_configured(&w->cfg) < 0)
        log_error("reload: cannot open the new log destination: %s", strerror(errno));
    log_set_level((enum log_level)w->cfg.log_level);
    w->fr.max_bytes = (size_t)w->cfg.max_message_bytes;
    log_info("configuration reloaded");
}

static void kick_user(struct worker *w, int32_t uid)
{
    struct online_loc locs[ONLINE_USER_MAX];
    size_t n = online_sessions(w->online, uid, locs, ONLINE_USER_MAX);
    for (size_t k = 0; k < n; k++) {
        struct conn *c = locs[k].worker == w->index ? worker_conn(w, locs[k].slot) : NULL;
        if (c && c->sgen == locs[k].gen) {
            reply_kick(w, c, "kicked by the operator");
            conn_close_gracefully(w, c);
        }
    }
}

static void begin_stop(struct worker *w, const char *why);

static void on_new_peer(void *ctx, uint32_t link, const struct ipc_msg *m)
{
    const struct ipc_new_peer *np = m->body;
    (void)link;
    peer_adopt(ctx, np->peer, m->fd);
}

static void on_config(void *ctx, uint32_t link, const struct ipc_msg *m)
{
    (void)link;
    apply_config(ctx, m->body);
}

static void on_purge(void *ctx, uint32_t link, const struct ipc_msg *m)
{
    (void)link;
    (void)m;
    purge_now(ctx);
}

static void on_kick_user(void *ctx, uint32_t link, const struct ipc_msg *m)
{
    const struct ipc_user *u = m->body;
    (void)link;
    kick_user(ctx, u->uid);
}

static void on_revoke_user(void *ctx, uint32_t link, const struct ipc_msg *m)
{
    const struct ipc_user *u = m->body;
    (void)link;
    service_revoke_user(ctx, u->uid, m->fd);
}

/* What a worker accepts from the master. */
static const struct ipc_handlers from_master = {
    .from = "the master",
    .fn = { [IPC_NEW_PEER] = on_new_peer,
            [IPC_CONFIG] = on_config,
            [IPC_KICK_USER] = on_kick_user,
            [IPC_REVOKE_USER] = on_revoke_user,
            [IPC_PURGE] = on_purge },
};

static void read_channel(struct worker *w)
{
    enum ipc_read_result r;
    do
        r = ipc_chan_read(&w->channel, w->ipcbuf, INT_MAX, &from_master, w, 0);
    while (r == IPC_READ_MORE);
    if (r == IPC_READ_CLOSED) {
        begin_stop(w, "master went away");
        loop_unwatch(&w->loop, &w->channel_src);
        ipc_chan_close(&w->channel);
    }
}

/* ---- timers ------------------------------------------------------------- */

static void check_deadlines(struct worker *w)
{
    int64_t idle_ms = (int64_t)w->cfg.idle_timeout * 1000;
    for (uint32_t i = 0; i < worker_slot_count(w); i++) {
        struct conn *c = worker_conn(w, i);
        if (c == NULL || c->state == CONN_DEAD)
            continue;
        if (c->state == CONN_CLOSING) {
            if (w->now_ms >= c->deadline)
                conn_close(w, c, "drain deadline");
        } else if (c->deadline && w->now_ms >= c->deadline && c->sgen == 0) {
            conn_fail(w, c, QC_ENOTLOGGEDIN);
        } else if (idle_ms > 0 && w->now_ms - c->last_active >= idle_ms) {
            log_info("conn %u: idle for %d s, closing", c->slot, w->cfg.idle_timeout);
            conn_close_gracefully(w, c);
        }
    }
}

static void on_tick(void *ctx)
{
    struct worker *w = ctx;
    metrics_heartbeat();
    metrics_sample_worker(w);
    check_deadlines(w);
    ws_conn_tick(w);
    balance_accepting(w);
    service_chat_tick(w);
    social_tick(w);
    purge_tick(w);
}

/* ---- stopping ----------------------------------------------------------- */

static void begin_stop(struct worker *w, const char *why)
{
    if (w->stopping)
        return;
    log_info("stopping (%s)", why);
    w->stopping = true;
    w->stop_deadline = w->now_ms + (int64_t)w->cfg.shutdown_timeout * 1000;
    if (w->accepting)
        loop_unwatch(&w->loop, &w->listen_src);
    w->accepting = false;
    w->stats->accepting = false;
    close(w->listen_fd);
    w->listen_fd = -1;
    ws_conn_stop(w);
    for (uint32_t i = 0; i < worker_slot_count(w); i++) {
        struct conn *c = worker_conn(w, i);
        if (c == NULL || c->state != CONN_OPEN)
            continue;
        if (c->sgen)
            reply_kick(w, c, "server shutting down");
        conn_close_gracefully(w, c);
        c->deadline = w->stop_deadline;
    }
}

static void on_signal(void *ctx, uint32_t events)
{
    struct worker *w = ctx;
    struct signalfd_siginfo si;
    (void)events;
    while (read(w->signal_fd, &si, sizeof si) == sizeof si) {
        switch (si.ssi_signo) {
        case SIGTERM:
        case SIGINT: begin_stop(w, "signal"); break;
        case SIGUSR1: log_reopen(); break;
        default: break;
        }
    }
}

/* Stopping waits for output to be written, not for clients to hang up. */
static bool output_pending(struct worker *w)
{
    for (uint32_t i = 0; i < worker_slot_count(w); i++) {
        struct conn *c = worker_conn(w, i);
        if (c && c->state != CONN_DEAD && (c->busy || c->out_written < conn_out_end(c)))
            return true;
    }
    if (peer_output_waiting(w))
        return true;
    /* Chats whose append has not committed yet: their ACKs wait. */
    struct storage_stats st;
    storage_get_stats(w->storage, &st);
    if (st.outstanding > 0 || service_chat_waiting(w))
        return true;
    /* A confirmation still on its way: exiting now would store a written chat again. */
    return handoff_waiting(w);
}

static void flush_dirty(struct worker *w);
static void free_dead(struct worker *w);

static void __attribute__((noreturn)) finish_stop(struct worker *w)
{
    for (uint32_t i = 0; i < worker_slot_count(w); i++) {
        struct conn *c = worker_conn(w, i);
        if (c && c->state != CONN_DEAD)
            conn_close(w, c, "shutdown");
    }
    flush_dirty(w);
    free_dead(w);
    peer_flush_all(w);
    handoff_shutdown(w);
    delivered_flush(w);
    convmark_stop(w);         /* waits for the marks' job: queue full or failed, not dropped */
    storage_stop(w->storage); /* commits what is queued; the journal keeps the rest */
    pending_destroy(w);
    crypt_pool_stop(w);
    purge_stop(w); /* after storage_stop: a purge batch may have been on the thread */
    while (w->nspare > 0)
        buf_free(&w->spare[--w->nspare]);
    log_info("stopped");
    _exit(0);
}

/* ---- the loop ----------------------------------------------------------- */

static void flush_dirty(struct worker *w)
{
    while (w->dirty) {
        struct conn *c = w->dirty;
        w->dirty = c->dirty_next;
        c->dirty = false;
        if (c->state == CONN_DEAD)
            continue;
        if (c->overflow) {
            log_info("conn %u: output over %d bytes (reader too slow), closing", c->slot,
                     w->cfg.max_output_bytes);
            metrics_count(QM_SLOW_KICKED, 0);
            conn_close(w, c, "slow reader");
        } else if (conn_flush(w, c) < 0) {
            conn_close(w, c, strerror(errno));
        }
    }
}

static void free_dead(struct worker *w)
{
    while (w->dead) {
        struct conn *c = w->dead;
        w->dead = c->dead_next;
        conn_free(w, c);
    }
}

/* Before the loop sleeps: the batch's output leaves, closed connections go. */
static void before_sleep(void *ctx)
{
    struct worker *w = ctx;
    flush_dirty(w);
    free_dead(w);
    delivered_flush(w);
    convmark_end_turn(w);     /* the marks: once per period, not per turn */
    storage_kick(w->storage); /* the turn's appends: one group commit */
    balance_accepting(w);
    peer_flush_corked(w); /* last: the confirmations of what flush_dirty wrote go too */
}

static void on_wake(void *ctx)
{
    struct worker *w = ctx;
    w->now_ms = w->loop.now_ms;
}

static void run_loop(struct worker *w)
{
    /* Only this loop ends every turn with before_sleep's storage_kick (not a fuzz driver). */
    storage_batch_turns(w->storage);
    for (;;) {
        if (loop_run_once(&w->loop, w->stopping ? WORKER_TICK_MS : -1) < 0) {
            log_error("epoll_wait: %s", strerror(errno));
            begin_stop(w, "epoll failure");
        }
        if (w->stopping && (!output_pending(w) || w->now_ms >= w->stop_deadline))
            finish_stop(w);
    }
}

/* ---- start -------------------------------------------------------------- */

static void on_channel_event(void *ctx, uint32_t events)
{
    (void)events;
    read_channel(ctx);
}

static void on_storage_event(void *ctx, uint32_t events)
{
    struct worker *w = ctx;
    (void)events;
    storage_complete(w->storage);
}

static void on_crypt_event(void *ctx, uint32_t events)
{
    (void)events;
    worker_finish_crypt_jobs(ctx);
}

/* A worker's sources: listening socket, channel, signals, the links made before the fork. */
static int open_event_sources(struct worker *w, const int *peer_fds)
{
    w->signal_fd = proc_signal_fd();
    if (w->signal_fd < 0 || loop_set_tick(&w->loop, WORKER_TICK_MS, on_tick) < 0)
        return -1;
    if (loop_watch(&w->loop, &w->listen_src, w->listen_fd, EPOLLIN | EPOLLEXCLUSIVE,
                   on_listen_event, w) < 0 ||
        loop_watch(&w->loop, &w->channel_src, w->channel.fd, EPOLLIN, on_channel_event, w) < 0 ||
        loop_watch(&w->loop, &w->signal_src, w->signal_fd, EPOLLIN, on_signal, w) < 0 ||
        ws_conn_start(w) < 0)
        return -1;
    for (uint32_t p = 0; p <= RELAY_PEER; p++) {
        int fd = p < w->nworkers || p == RELAY_PEER ? peer_fds[p] : -1;
        if (fd >= 0 && peer_watch(w, p, fd) < 0)
            return -1;
    }
    return 0;
}

/* Every layer's tables and upward hooks (see worker.h). */
static void install_layers(struct worker *w)
{
    pending_init(w);
    handoff_init(w);
    route_install(w);
    reply_install(w);
    session_install(w);
    login_install(w);
    service_session_install(w);
    service_install(w);
}

int worker_setup(struct worker *w, uint32_t index, const struct qc_config *cfg,
                 struct online_table *online, struct guard *guard)
{
    w->index = index;
    w->cfg = *cfg;
    w->online = online;
    w->guard = guard;
    w->stats = online_stats(online, index);
    w->stats->cursor_noted = w->stats->cursor_done = 0; /* before pid: see delivered_fence_wait */
    w->stats->appends_queued = w->stats->appends_done = 0;
    delivered_marks_clear(w->stats); /* a predecessor's marks died with it */
    w->stats->pid = getpid();
    w->stats->connections = 0;
    w->stats->sessions = 0;
    w->now_ms = clock_now_ms();
    w->listen_fd = w->signal_fd = -1;
    ipc_chan_init(&w->channel, -1);
    for (uint32_t p = 0; p <= RELAY_PEER; p++)
        ipc_chan_init(&w->peers[p].ch, -1);
    w->clustered = cfg->redis_host[0] != '\0';
    w->proxy_protocol = strcmp(cfg->proxy_protocol, "on") == 0; /* restart-only: parsed once */
    if (worker_init_slots(w) < 0) {
        log_error("worker setup: out of memory");
        return -1;
    }
    w->rbuf_size = WORKER_READ_BUF;
    w->rbuf = malloc(w->rbuf_size);
    w->ipcbuf = malloc(IPC_MAX_PACKET);
    if (w->rbuf == NULL || w->ipcbuf == NULL || loop_init(&w->loop, w) < 0 ||
        frame_reader_init(&w->fr, (size_t)cfg->max_message_bytes) < 0) {
        log_error("worker setup: %s", strerror(errno));
        return -1;
    }
    char err[QC_CONFIG_ERR_MAX];
    w->st = store_driver(cfg->storage_driver);
    if (w->st == NULL) {
        log_error("storage: unknown driver %s", cfg->storage_driver);
        return -1;
    }
    w->storage = storage_start(cfg, err, sizeof err);
    if (w->storage == NULL || loop_watch(&w->loop, &w->storage_src, storage_fd(w->storage), EPOLLIN,
                                         on_storage_event, w) < 0) {
        log_error("storage thread: %s", w->storage ? strerror(errno) : err);
        return -1;
    }
    loop_set_on_wake(&w->loop, on_wake);
    loop_set_before_sleep(&w->loop, before_sleep);
    install_layers(w);
    if (purge_init(w) < 0)
        return -1;
    w->crypt_fd = crypt_pool_start(w, cfg->hash_threads);
    if (w->crypt_fd < 0 ||
        loop_watch(&w->loop, &w->crypt_src, w->crypt_fd, EPOLLIN, on_crypt_event, w) < 0 ||
        password_hash("unknown user", cfg->password_cost, w->dummy_hash, sizeof w->dummy_hash) <
            0) {
        log_error("password hashing threads: %s", strerror(errno));
        return -1;
    }
    return 0;
}

void worker_finish_crypt_jobs(struct worker *w)
{
    for (struct crypt_job *job = crypt_pool_done(w), *next; job; job = next) {
        next = job->next;
        service_crypt_done(w, job);
        crypt_job_free(job);
    }
}

void worker_end_turn(struct worker *w)
{
    flush_dirty(w);
    free_dead(w);
}

void worker_main(uint32_t index, uint32_t nworkers, int listen_fd, int channel_fd,
                 const int *peer_fds, const struct qc_config *cfg, struct online_table *online,
                 struct guard *guard, struct seqtab *seqtab, struct journal *journal)
{
    struct worker *w = &the_worker;
    char role[32];
    snprintf(role, sizeof role, "worker %u", index);
    log_set_role(role);
    title_set("qchatd: worker %u", index);
    if (worker_setup(w, index, cfg, online, guard) < 0)
        _exit(1);
    w->nworkers = nworkers;
    w->seqtab = seqtab;
    w->journal = journal;
    service_chat_replay(w); /* queued before any client's chat */
    w->listen_fd = listen_fd;
    ipc_chan_init(&w->channel, channel_fd);
    w->accepting = true;
    w->stats->accepting = true;
    if (open_event_sources(w, peer_fds) < 0) {
        log_error("event loop setup: %s", strerror(errno));
        _exit(1);
    }
    log_info("started (pid %d)", (int)getpid());
    metrics_attach(index);
    run_loop(w);
    _exit(0);
}
