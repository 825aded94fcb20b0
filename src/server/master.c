/*
 * master.c - the master process (see master.h).
 *
 * Everything the master reacts to arrives on one epoll set: a signalfd (the
 * signals become flags handled in the loop, as in nginx), a timer (respawns
 * that are due, the systemd watchdog and status), and the control socket.
 * Respawning lives in one place, spawn_worker: a new worker gets a fresh
 * channel and a fresh peer link to every live worker, whose ends the master
 * passes to those workers over their channels.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <json-c/json.h>
#include <systemd/sd-daemon.h>

#include "common/clock.h"
#include "common/buf.h"
#include "common/jsonw.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/net.h"
#include "server/control.h"
#include "server/ipc.h"
#include "server/master.h"
#include "server/proc.h"
#include "server/relay.h"
#include "server/worker_loop.h"

#define MASTER_TICK_MS    250
#define RESPAWN_MIN_MS    100
#define RESPAWN_MAX_MS    5000
#define RESPAWN_STABLE_MS 10000 /* a child alive this long resets backoff */
#define STOP_GRACE_MS     2000  /* beyond shutdown_timeout, then SIGKILL */
#define STORE_RECENT_MS   10000 /* a storage failure this recent: "failing" */
#define QCHAT_VERSION     "0.1.0"

struct child {
    pid_t pid;            /* 0: not running */
    struct ipc_chan chan; /* master's end of the channel, fd -1 when not running */
    int64_t started_ms;
    int64_t respawn_at; /* 0: no respawn scheduled */
    int backoff_ms;
};

struct master {
    const struct master_args *args;
    struct qc_config cfg;
    int listen_fd;
    struct online_table *online;
    struct guard *guard;
    uint32_t nworkers;
    struct child workers[ONLINE_MAX_WORKERS];
    struct child relay; /* pid 0 and never started without Redis */
    bool clustered;
    struct loop loop;
    int sigfd;
    struct loop_source signal_src;
    struct control *ctl; /* NULL: no control socket */
    bool stopping;
    int64_t stop_deadline;
    time_t started;
    int64_t last_status_ms;
};

int master_load_config(const struct master_args *args, struct qc_config *cfg, char *err,
                       size_t errlen)
{
    config_defaults(cfg);
    const char *path = args->config_path ? args->config_path : QC_DEFAULT_CONFIG;
    if (config_load(cfg, path, args->config_path == NULL, err, errlen) < 0)
        return -1;
    for (int i = 0; i < args->noverrides; i++)
        if (config_override(cfg, args->overrides[i], err, errlen) < 0)
            return -1;
    return config_validate(cfg, err, errlen);
}

/* ---- spawning ----------------------------------------------------------- */

/* In a new child: drop every descriptor that belongs to the master or to others. */
static void close_master_fds(struct master *m,
                             uint32_t keep_worker) /* keep_worker: its own index, or RELAY_PEER */
{
    loop_close(&m->loop);
    close(m->sigfd);
    control_close_in_child(m->ctl);
    for (uint32_t k = 0; k < m->nworkers; k++)
        ipc_chan_close(&m->workers[k].chan);
    ipc_chan_close(&m->relay.chan);
}

/*
 * Start worker k.  peer_fds[j] is k's end of its link to worker j (-1: none);
 * the master's ends were already given to the live workers.
 */
static int fork_worker(struct master *m, uint32_t k, int *peer_fds, int worker_chan)
{
    pid_t pid = fork();
    if (pid < 0) {
        log_error("fork worker %u: %s", k, strerror(errno));
        return -1;
    }
    if (pid == 0) {
        close_master_fds(m, k);
        worker_main(k, m->nworkers, m->listen_fd, worker_chan, peer_fds, &m->cfg, m->online,
                    m->guard);
    }
    m->workers[k].pid = pid;
    m->workers[k].started_ms = clock_now_ms();
    m->workers[k].respawn_at = 0;
    return 0;
}

/*
 * A new link between a running child (reached through its channel `to`) and
 * a child about to start, which the running one will know as `peer`: the
 * running child's end goes over its channel; returns the other end, or -1.
 */
static int give_link(struct ipc_chan *to, const char *to_name, uint32_t peer)
{
    int link[2];
    if (ipc_pair(link) < 0) {
        log_error("link for %s to %u: %s", to_name, peer, strerror(errno));
        return -1;
    }
    struct ipc_new_peer np = { .peer = peer };
    if (ipc_chan_send_fd(to, IPC_NEW_PEER, &np, link[0]) < 0) {
        log_error("giving %s its link to %u: %s", to_name, peer, strerror(errno));
        close(link[0]);
        close(link[1]);
        return -1;
    }
    close(link[0]);
    return link[1];
}

static int give_worker_link(struct master *m, uint32_t k, uint32_t peer)
{
    char name[32];
    snprintf(name, sizeof name, "worker %u", k);
    return give_link(&m->workers[k].chan, name, peer);
}

/* Spawn (or respawn) the relay with a link to every live worker. */
static int spawn_relay(struct master *m)
{
    int chan[2];
    if (ipc_pair(chan) < 0) {
        log_error("relay channel: %s", strerror(errno));
        return -1;
    }
    int fds[ONLINE_MAX_WORKERS];
    for (uint32_t k = 0; k < m->nworkers; k++)
        fds[k] = m->workers[k].pid ? give_worker_link(m, k, RELAY_PEER) : -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(chan[0]);
        close_master_fds(m, RELAY_PEER);
        close(m->listen_fd);
        relay_main(m->nworkers, chan[1], fds, &m->cfg, m->online);
    }
    close(chan[1]);
    for (uint32_t k = 0; k < m->nworkers; k++)
        if (fds[k] >= 0)
            close(fds[k]);
    if (pid < 0) {
        log_error("fork relay: %s", strerror(errno));
        close(chan[0]);
        return -1;
    }
    m->relay.pid = pid;
    ipc_chan_init(&m->relay.chan, chan[0]);
    m->relay.started_ms = clock_now_ms();
    m->relay.respawn_at = 0;
    return 0;
}

/* Spawn (or respawn) worker k with links to every live worker. */
static int spawn_worker(struct master *m, uint32_t k)
{
    int chan[2];
    if (ipc_pair(chan) < 0) {
        log_error("worker %u channel: %s", k, strerror(errno));
        return -1;
    }
    int peer_fds[ONLINE_MAX_WORKERS + 1];
    peer_fds[RELAY_PEER] = m->relay.pid ? give_link(&m->relay.chan, "the relay", k) : -1;
    for (uint32_t j = 0; j < m->nworkers; j++)
        peer_fds[j] = j != k && m->workers[j].pid ? give_worker_link(m, j, k) : -1;
    ipc_chan_init(&m->workers[k].chan, chan[0]);
    int rc = fork_worker(m, k, peer_fds, chan[1]);
    close(chan[1]);
    for (uint32_t j = 0; j < m->nworkers; j++)
        if (peer_fds[j] >= 0)
            close(peer_fds[j]);
    if (peer_fds[RELAY_PEER] >= 0)
        close(peer_fds[RELAY_PEER]);
    if (rc < 0)
        ipc_chan_close(&m->workers[k].chan);
    return rc;
}

/* First start: every link is made before any worker is forked. */
static int spawn_all_workers(struct master *m)
{
    uint32_t n = m->nworkers;
    int(*links)[ONLINE_MAX_WORKERS + 1] = calloc(n, sizeof *links);
    int *chans = calloc(n, sizeof *chans);
    int rc = links && chans ? 0 : -1;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        chans[i] = -1;
        for (uint32_t j = 0; j <= RELAY_PEER; j++)
            links[i][j] = -1;
    }
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        int sv[2];
        if ((rc = ipc_pair(sv)) < 0)
            break;
        ipc_chan_init(&m->workers[i].chan, sv[0]);
        chans[i] = sv[1];
        for (uint32_t j = i + 1; j < n && rc == 0; j++) {
            if ((rc = ipc_pair(sv)) < 0)
                break;
            links[i][j] = sv[0];
            links[j][i] = sv[1];
        }
    }
    if (rc < 0)
        log_error("socketpairs for the workers: %s", strerror(errno));
    for (uint32_t k = 0; k < n && rc == 0; k++) {
        pid_t pid = fork();
        if (pid < 0) {
            log_error("fork worker %u: %s", k, strerror(errno));
            rc = -1;
            break;
        }
        if (pid == 0) {
            for (uint32_t i = 0; i < n; i++) {
                if (i != k)
                    close(chans[i]);
                for (uint32_t j = 0; j < n; j++)
                    if (i != k && links[i][j] >= 0)
                        close(links[i][j]);
            }
            close_master_fds(m, k);
            worker_main(k, n, m->listen_fd, chans[k], links[k], &m->cfg, m->online, m->guard);
        }
        m->workers[k].pid = pid;
        m->workers[k].started_ms = clock_now_ms();
    }
    for (uint32_t i = 0; links && chans && i < n; i++) {
        if (chans[i] >= 0)
            close(chans[i]);
        for (uint32_t j = 0; j < n; j++)
            if (links[i][j] >= 0)
                close(links[i][j]);
    }
    free(links);
    free(chans);
    return rc;
}

/* ---- children that exit ------------------------------------------------- */

static void describe_exit(int status, char *out, size_t len)
{
    if (WIFEXITED(status))
        snprintf(out, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, len, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(out, len, "ended (status 0x%x)", status);
}

static void schedule_child_respawn(struct child *c, const char *what, int64_t now)
{
    if (now - c->started_ms >= RESPAWN_STABLE_MS || c->backoff_ms == 0)
        c->backoff_ms = RESPAWN_MIN_MS;
    else if (c->backoff_ms < RESPAWN_MAX_MS)
        c->backoff_ms = c->backoff_ms * 2 > RESPAWN_MAX_MS ? RESPAWN_MAX_MS : c->backoff_ms * 2;
    c->respawn_at = now + c->backoff_ms;
    log_info("%s will be restarted in %d ms", what, c->backoff_ms);
}

static void schedule_respawn(struct master *m, uint32_t k, int64_t now)
{
    char what[32];
    snprintf(what, sizeof what, "worker %u", k);
    schedule_child_respawn(&m->workers[k], what, now);
}

static void reap_children(struct master *m)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        char how[96];
        describe_exit(status, how, sizeof how);
        if (pid == m->relay.pid) {
            m->relay.pid = 0;
            ipc_chan_close(&m->relay.chan);
            online_relay_stats(m->online)->pid = 0;
            online_relay_stats(m->online)->state = RELAY_DOWN;
            if (m->stopping) {
                log_info("relay (pid %d) %s", (int)pid, how);
            } else {
                log_warning("relay (pid %d) %s", (int)pid, how);
                schedule_child_respawn(&m->relay, "relay", clock_now_ms());
            }
            continue;
        }
        for (uint32_t k = 0; k < m->nworkers; k++) {
            struct child *c = &m->workers[k];
            if (c->pid != pid)
                continue;
            c->pid = 0;
            ipc_chan_close(&c->chan);
            size_t cleared = online_clear_worker(m->online, k);
            guard_clear_worker(m->guard, k);
            struct worker_stats *ws = online_stats(m->online, k);
            ws->pid = 0;
            ws->connections = 0;
            ws->sessions = 0;
            if (m->stopping) {
                log_info("worker %u (pid %d) %s", k, (int)pid, how);
            } else {
                log_warning("worker %u (pid %d) %s; cleared %zu online user(s)", k, (int)pid, how,
                            cleared);
                ws->restarts++;
                schedule_respawn(m, k, clock_now_ms());
            }
        }
    }
}

static void respawn_due_workers(struct master *m, int64_t now)
{
    if (m->clustered && !m->stopping && m->relay.pid == 0 && m->relay.respawn_at &&
        now >= m->relay.respawn_at) {
        if (spawn_relay(m) == 0)
            log_info("relay restarted (pid %d)", (int)m->relay.pid);
        else
            schedule_child_respawn(&m->relay, "relay", now);
    }
    for (uint32_t k = 0; k < m->nworkers && !m->stopping; k++) {
        struct child *c = &m->workers[k];
        if (c->pid == 0 && c->respawn_at && now >= c->respawn_at) {
            if (spawn_worker(m, k) == 0)
                log_info("worker %u restarted (pid %d)", k, (int)c->pid);
            else
                schedule_respawn(m, k, now);
        }
    }
}

/* Packets a full channel could not take (a HUP's config, a kick) go out on the tick. */
static void flush_channels(struct master *m)
{
    for (uint32_t k = 0; k < m->nworkers; k++)
        if (m->workers[k].chan.fd >= 0 && ipc_chan_flush(&m->workers[k].chan) < 0)
            log_warning("channel to worker %u: %s", k, strerror(errno));
    if (m->relay.chan.fd >= 0 && ipc_chan_flush(&m->relay.chan) < 0)
        log_warning("channel to the relay: %s", strerror(errno));
}

static uint32_t running_children(const struct master *m)
{
    uint32_t n = 0;
    for (uint32_t k = 0; k < m->nworkers; k++)
        n += m->workers[k].pid != 0;
    return n + (m->relay.pid != 0);
}

static void signal_children(struct master *m, int sig)
{
    for (uint32_t k = 0; k < m->nworkers; k++)
        if (m->workers[k].pid)
            kill(m->workers[k].pid, sig);
    if (m->relay.pid)
        kill(m->relay.pid, sig);
}

/* ---- reload, stop ------------------------------------------------------- */

static void note_restart_key(void *arg, const char *name, bool live)
{
    (void)arg;
    if (!live)
        log_warning("reload: %s changed; it takes effect only after a restart", name);
}

static int reload_config(struct master *m)
{
    struct qc_config next;
    char err[QC_CONFIG_ERR_MAX];
    sd_notify(0, "RELOADING=1");
    if (master_load_config(m->args, &next, err, sizeof err) < 0) {
        log_error("reload failed, keeping the running configuration: %s", err);
        sd_notify(0, "READY=1");
        return -1;
    }
    int changed = config_diff(&m->cfg, &next, note_restart_key, NULL);
    log_set_level((enum log_level)next.log_level);
    if ((strcmp(m->cfg.log_target, next.log_target) != 0 ||
         strcmp(m->cfg.log_file, next.log_file) != 0) &&
        log_open_configured(&next) < 0)
        log_error("reload: cannot open the new log destination: %s", strerror(errno));
    for (uint32_t k = 0; k < m->nworkers; k++)
        if (m->workers[k].chan.fd >= 0 &&
            ipc_chan_send(&m->workers[k].chan, IPC_CONFIG, &next, NULL, 0) < 0)
            log_error("sending the new configuration to worker %u: %s", k, strerror(errno));
    if (m->relay.chan.fd >= 0 && ipc_chan_send(&m->relay.chan, IPC_CONFIG, &next, NULL, 0) < 0)
        log_error("sending the new configuration to the relay: %s", strerror(errno));
    /* Keys that need a restart keep their running values in the master too. */
    config_apply_live(&m->cfg, &next);
    log_info("configuration reloaded (%d key(s) changed)", changed);
    sd_notify(0, "READY=1");
    return 0;
}

static void begin_stop(struct master *m, const char *why)
{
    if (m->stopping)
        return;
    m->stopping = true;
    m->stop_deadline = clock_now_ms() + (int64_t)m->cfg.shutdown_timeout * 1000 + STOP_GRACE_MS;
    log_info("stopping (%s)", why);
    sd_notify(0, "STOPPING=1");
    signal_children(m, SIGTERM);
}

/* ---- control socket ----------------------------------------------------- */

struct users_out {
    struct buf *b;
    bool first;
};

static void add_user_json(void *arg, int32_t uid, const struct online_loc *loc)
{
    struct users_out *u = arg;
    buf_printf(u->b, "%s{\"id\":%d,\"worker\":%u}", u->first ? "" : ",", uid, loc->worker);
    u->first = false;
}

/* "failing" while a worker answered "storage unavailable" in the last STORE_RECENT_MS. */
static const char *store_state(struct master *m)
{
    int64_t now = clock_now_ms();
    for (uint32_t k = 0; k < m->nworkers; k++) {
        struct worker_stats *ws = online_stats(m->online, k);
        if (ws->store_failures && now - ws->store_failed_ms < STORE_RECENT_MS)
            return "failing";
    }
    return "ok";
}

static unsigned long long store_failures(struct master *m)
{
    unsigned long long n = 0;
    for (uint32_t k = 0; k < m->nworkers; k++)
        n += online_stats(m->online, k)->store_failures;
    return n;
}

static void status_json(struct master *m, struct buf *b)
{
    buf_printf(b, "{\"ok\":true,\"node_id\":%d,\"pid\":%d,\"version\":\"%s\",\"uptime\":%lld,",
               m->cfg.node_id, (int)getpid(), QCHAT_VERSION, (long long)(time(NULL) - m->started));
    buf_append_str(b, "\"listen\":");
    json_append_string(b, m->cfg.listen, strlen(m->cfg.listen));
    buf_printf(b, ",\"online\":%u,\"max_users\":%u,\"store\":{\"driver\":", online_count(m->online),
               online_capacity(m->online));
    json_append_string(b, m->cfg.storage_driver, strlen(m->cfg.storage_driver));
    static const char *const relay_states[] = { "disabled", "connecting", "connected", "down" };
    struct relay_stats *rs = online_relay_stats(m->online);
    uint32_t rstate = m->clustered ? rs->state : RELAY_DISABLED;
    buf_printf(b,
               ",\"state\":\"%s\",\"failures\":%llu},\"relay\":{\"state\":\"%s\",\"pid\":%d,"
               "\"subscribed\":%u,\"published\":%llu,\"received\":%llu,"
               "\"publish_failed\":%llu,\"reconnects\":%u},\"workers\":[",
               store_state(m), store_failures(m),
               relay_states[rstate <= RELAY_DOWN ? rstate : RELAY_DOWN], (int)m->relay.pid,
               (unsigned)rs->subscribed, (unsigned long long)rs->published,
               (unsigned long long)rs->received, (unsigned long long)rs->publish_failed,
               (unsigned)rs->reconnects);
    for (uint32_t k = 0; k < m->nworkers; k++) {
        struct worker_stats *ws = online_stats(m->online, k);
        buf_printf(b,
                   "%s{\"index\":%u,\"pid\":%d,\"connections\":%u,\"sessions\":%u,"
                   "\"msgs_in\":%llu,\"msgs_out\":%llu,\"offline_stored\":%llu,\"restarts\":%u}",
                   k ? "," : "", k, (int)m->workers[k].pid, (unsigned)ws->connections,
                   (unsigned)ws->sessions, (unsigned long long)ws->msgs_in,
                   (unsigned long long)ws->msgs_out, (unsigned long long)ws->offline_stored,
                   (unsigned)ws->restarts);
    }
    buf_append_str(b, "]}");
}

static void run_control_command(void *ctx, struct json_object *req, struct buf *out)
{
    struct master *m = ctx;
    struct json_object *v;
    const char *cmd =
        json_object_object_get_ex(req, "cmd", &v) && json_object_is_type(v, json_type_string)
            ? json_object_get_string(v)
            : "";
    if (strcmp(cmd, "status") == 0) {
        status_json(m, out);
    } else if (strcmp(cmd, "users") == 0) {
        struct users_out u = { out, true };
        buf_append_str(out, "{\"ok\":true,\"users\":[");
        online_foreach(m->online, add_user_json, &u);
        buf_append_str(out, "]}");
    } else if (strcmp(cmd, "kick") == 0) {
        struct online_loc loc;
        int64_t id = json_object_object_get_ex(req, "id", &v) ? json_object_get_int64(v) : 0;
        char msg[96];
        if (id <= 0 || id > INT32_MAX) {
            control_error(out, "kick needs a user id");
        } else if (!online_lookup(m->online, (int32_t)id, &loc) || loc.worker >= m->nworkers ||
                   m->workers[loc.worker].chan.fd < 0) {
            snprintf(msg, sizeof msg, "user %lld is not online", (long long)id);
            control_error(out, msg);
        } else {
            struct ipc_user u = { .uid = (int32_t)id };
            if (ipc_chan_send(&m->workers[loc.worker].chan, IPC_KICK_USER, &u, NULL, 0) < 0) {
                control_error(out, strerror(errno));
            } else {
                log_info("operator kicked user %lld", (long long)id);
                buf_append_str(out, "{\"ok\":true}");
            }
        }
    } else if (strcmp(cmd, "reload") == 0) {
        if (reload_config(m) == 0)
            buf_append_str(out, "{\"ok\":true}");
        else
            control_error(out, "reload failed; see the log");
    } else {
        control_error(out, "unknown command (status, users, kick, reload)");
    }
}

/* ---- the loop ----------------------------------------------------------- */

static void notify_systemd(struct master *m, int64_t now)
{
    if (running_children(m) == m->nworkers + (m->clustered ? 1 : 0))
        sd_notify(0, "WATCHDOG=1");
    if (now - m->last_status_ms >= 1000) {
        sd_notifyf(0, "STATUS=%u online, %u/%u workers", online_count(m->online),
                   running_children(m), m->nworkers);
        m->last_status_ms = now;
    }
}

static void on_signals(void *ctx, uint32_t events)
{
    struct master *m = ctx;
    struct signalfd_siginfo si;
    (void)events;
    while (read(m->sigfd, &si, sizeof si) == sizeof si) {
        switch (si.ssi_signo) {
        case SIGTERM:
        case SIGINT: begin_stop(m, si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT"); break;
        case SIGHUP:
            log_info("SIGHUP: reloading %s",
                     m->args->config_path ? m->args->config_path : QC_DEFAULT_CONFIG);
            reload_config(m);
            break;
        case SIGUSR1:
            log_reopen();
            signal_children(m, SIGUSR1);
            break;
        case SIGCHLD: reap_children(m); break;
        }
    }
}

static void on_tick(void *ctx)
{
    struct master *m = ctx;
    int64_t now = m->loop.now_ms;
    reap_children(m);
    flush_channels(m);
    respawn_due_workers(m, now);
    notify_systemd(m, now);
    control_expire(m->ctl, now);
    if (m->stopping && now >= m->stop_deadline) {
        log_warning("children still running after the shutdown timeout: killing");
        signal_children(m, SIGKILL);
        m->stop_deadline = now + STOP_GRACE_MS;
    }
}

static int open_master_sources(struct master *m)
{
    m->sigfd = proc_signal_fd();
    if (loop_init(&m->loop, m) < 0 || m->sigfd < 0 ||
        loop_set_tick(&m->loop, MASTER_TICK_MS, on_tick) < 0 ||
        loop_watch(&m->loop, &m->signal_src, m->sigfd, EPOLLIN, on_signals, m) < 0)
        return -1;
    if (m->cfg.control_socket[0]) {
        char err[256];
        m->ctl =
            control_open(&m->loop, m->cfg.control_socket, run_control_command, m, err, sizeof err);
        if (m->ctl == NULL) {
            log_error("control socket: %s", err);
            return -1;
        }
    }
    return 0;
}

static uint32_t worker_count(const struct qc_config *cfg)
{
    long n = cfg->workers > 0 ? cfg->workers : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    if (n > ONLINE_MAX_WORKERS)
        n = ONLINE_MAX_WORKERS;
    return (uint32_t)n;
}

int master_run(const struct master_args *args, const struct qc_config *cfg, int listen_fd,
               struct online_table *online, struct guard *guard)
{
    static struct master the_master;
    struct master *m = &the_master;
    m->args = args;
    m->cfg = *cfg;
    m->listen_fd = listen_fd;
    m->online = online;
    m->guard = guard;
    m->started = time(NULL);
    m->nworkers = worker_count(cfg);
    for (uint32_t k = 0; k < ONLINE_MAX_WORKERS; k++)
        ipc_chan_init(&m->workers[k].chan, -1);
    ipc_chan_init(&m->relay.chan, -1);
    m->clustered = cfg->redis_host[0] != '\0';
    log_set_role("master");
    setproctitle("-qchatd: master");
    if (open_master_sources(m) < 0) {
        log_error("master setup: %s", strerror(errno));
        return 1;
    }
    if (spawn_all_workers(m) < 0) {
        log_error("could not start the workers");
        signal_children(m, SIGKILL);
        return 1;
    }
    /* The master keeps the listening socket only to hand it to respawned workers. */
    if (m->clustered && spawn_relay(m) < 0)
        schedule_child_respawn(&m->relay, "relay", clock_now_ms());
    log_info("qchatd %s: listening on %s, %u worker(s), node %d, store %s%s%s", QCHAT_VERSION,
             cfg->listen, m->nworkers, cfg->node_id, cfg->storage_driver,
             m->clustered ? ", redis " : "", m->clustered ? cfg->redis_host : "");
    sd_notifyf(0, "READY=1\nMAINPID=%d", (int)getpid());

    while (!m->stopping || running_children(m) > 0)
        loop_run_once(&m->loop, -1);
    control_close(m->ctl, 1);
    log_info("stopped");
    return 0;
}
