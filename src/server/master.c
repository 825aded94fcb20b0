/*
 * master.c - the master process (see master.h).
 *
 * Everything the master reacts to arrives through its event loop
 * (common/loop.c): a signalfd (the signals become actions handled in the
 * loop, as in nginx), the loop's tick (reaping, respawns that are due,
 * queued channel packets, the systemd watchdog and status, control-socket
 * deadlines), and the control socket (control.c).  Its children are one
 * table, the workers and the relay, started by one function, spawn_child:
 * a new child gets a fresh channel and a fresh link to every live child it
 * talks to, whose other ends the master passes to those children over their
 * channels.
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
#include "server/delivered.h"
#include "server/ipc.h"
#include "server/journal.h"
#include "server/master.h"
#include "server/seqtab.h"
#include "server/proc.h"
#include "server/purge.h"
#include "server/relay.h"
#include "server/metrics.h"
#include "server/metrics_http.h"
#include "server/title.h"
#include "server/worker_loop.h"
#include "server/ws_conn.h"

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
    struct seqtab *seqtab;   /* single node: the cseq sequencer (NULL with Redis) */
    struct journal *journal; /* single node: each worker's uncommitted chats */
    uint32_t nworkers;
    struct child children[ONLINE_MAX_WORKERS + 1]; /* the workers, then the relay (RELAY_PEER) */
    bool clustered;
    struct loop loop;
    int sigfd;
    struct loop_source signal_src;
    struct control *ctl; /* NULL: no control socket */
    bool stopping;
    int64_t stop_deadline;
    time_t started;
    int64_t last_status_ms;
    bool ready; /* READY=1 sent: every child's loop has turned once */
    struct metrics_http *http;
    struct loop_source metrics_src;
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

/* ---- the process table: spawning ------------------------------------------ */

/*
 * One table, one spawn path (as nginx's ngx_spawn_process): children[k] is
 * worker k for k < nworkers, children[RELAY_PEER] is the relay; first start
 * and respawn both go through spawn_child.
 */
static bool is_relay(uint32_t k)
{
    return k == RELAY_PEER;
}

static const char *child_name(uint32_t k, char *buf, size_t len)
{
    if (is_relay(k))
        return "relay";
    snprintf(buf, len, "worker %u", k);
    return buf;
}

/* Every slot of the table in use: the workers, and the relay in a cluster. */
static bool child_slot_used(const struct master *m, uint32_t k)
{
    return k < m->nworkers || (is_relay(k) && m->clustered);
}

/* In a new child: drop every descriptor that belongs to the master or to others. */
static void close_master_fds(struct master *m)
{
    loop_close(&m->loop);
    close(m->sigfd);
    control_close_in_child(m->ctl);
    metrics_http_close(m->http);
    m->http = NULL;
    for (uint32_t k = 0; k <= RELAY_PEER; k++)
        ipc_chan_close(&m->children[k].chan);
}

/*
 * A new link between running child j (reached through its channel) and child
 * k about to start, which j will know as k: j's end goes over its channel;
 * returns k's end, or -1.
 */
static int give_link(struct master *m, uint32_t j, uint32_t k)
{
    char name[32];
    int link[2];
    if (ipc_pair(link) < 0) {
        log_error("link for %s to %u: %s", child_name(j, name, sizeof name), k, strerror(errno));
        return -1;
    }
    struct ipc_new_peer np = { .peer = k };
    if (ipc_chan_send_fd(&m->children[j].chan, IPC_NEW_PEER, &np, link[0]) < 0) {
        log_error("giving %s its link to %u: %s", child_name(j, name, sizeof name), k,
                  strerror(errno));
        close(link[0]);
        close(link[1]);
        return -1;
    }
    close(link[0]);
    return link[1];
}

/* In the child: become worker k or the relay; never returns. */
static void __attribute__((noreturn))
run_child(struct master *m, uint32_t k, int chan, const int *links)
{
    close_master_fds(m);
    if (is_relay(k)) {
        close(m->listen_fd);
        ws_conn_unlisten();
        relay_main(m->nworkers, chan, links, &m->cfg, m->online);
    }
    worker_main(k, m->nworkers, m->listen_fd, chan, links, &m->cfg, m->online, m->guard, m->seqtab,
                m->journal);
}

/*
 * Start (or restart) child k: a fresh channel, and a link to every live
 * child it talks to (a worker: every other worker and the relay; the relay:
 * every worker), whose other ends go to those children over their channels.
 */
static int spawn_child(struct master *m, uint32_t k)
{
    char name[32];
    int chan[2];
    if (ipc_pair(chan) < 0) {
        log_error("%s channel: %s", child_name(k, name, sizeof name), strerror(errno));
        return -1;
    }
    int links[ONLINE_MAX_WORKERS + 1];
    for (uint32_t j = 0; j <= RELAY_PEER; j++) {
        bool talks = j != k && child_slot_used(m, j) && (!is_relay(k) || !is_relay(j));
        links[j] = talks && m->children[j].pid ? give_link(m, j, k) : -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(chan[0]);
        run_child(m, k, chan[1], links);
    }
    close(chan[1]);
    for (uint32_t j = 0; j <= RELAY_PEER; j++)
        if (links[j] >= 0)
            close(links[j]);
    if (pid < 0) {
        log_error("fork %s: %s", child_name(k, name, sizeof name), strerror(errno));
        close(chan[0]);
        return -1;
    }
    struct child *c = &m->children[k];
    ipc_chan_init(&c->chan, chan[0]);
    c->pid = pid;
    c->started_ms = clock_now_ms();
    c->respawn_at = 0;
    return 0;
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

static void schedule_respawn(struct master *m, uint32_t k, int64_t now)
{
    struct child *c = &m->children[k];
    char name[32];
    if (now - c->started_ms >= RESPAWN_STABLE_MS || c->backoff_ms == 0)
        c->backoff_ms = RESPAWN_MIN_MS;
    else if (c->backoff_ms < RESPAWN_MAX_MS)
        c->backoff_ms = c->backoff_ms * 2 > RESPAWN_MAX_MS ? RESPAWN_MAX_MS : c->backoff_ms * 2;
    c->respawn_at = now + c->backoff_ms;
    log_info("%s will be restarted in %d ms", child_name(k, name, sizeof name), c->backoff_ms);
}

/* What the node forgets with a dead child: a worker's sessions, the relay's state. */
static size_t forget_child(struct master *m, uint32_t k)
{
    if (is_relay(k)) {
        struct relay_stats *rs = online_relay_stats(m->online);
        rs->pid = 0;
        rs->state = RELAY_DOWN;
        rs->subscribed = 0; /* its subscriptions went with its connections */
        return 0;
    }
    size_t cleared = online_clear_worker(m->online, k);
    guard_clear_worker(m->guard, k);
    struct worker_stats *ws = online_stats(m->online, k);
    metrics_clear_gauges(metrics_node(), k);
    ws->pid = 0;
    delivered_marks_clear(ws); /* its unwritten chats: none is waited for */
    ws->connections = 0;
    ws->accepting = 0;
    ws->sessions = 0;
    if (!m->stopping)
        ws->restarts++;
    return cleared;
}

static uint32_t child_of_pid(const struct master *m, pid_t pid)
{
    for (uint32_t k = 0; k <= RELAY_PEER; k++)
        if (child_slot_used(m, k) && m->children[k].pid == pid)
            return k;
    return UINT32_MAX;
}

static void reap_children(struct master *m)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        uint32_t k = child_of_pid(m, pid);
        if (k == UINT32_MAX)
            continue;
        char how[96], name[32];
        describe_exit(status, how, sizeof how);
        child_name(k, name, sizeof name);
        m->children[k].pid = 0;
        ipc_chan_close(&m->children[k].chan);
        size_t cleared = forget_child(m, k);
        if (m->stopping) {
            log_info("%s (pid %d) %s", name, (int)pid, how);
        } else if (is_relay(k)) {
            log_warning("%s (pid %d) %s", name, (int)pid, how);
            schedule_respawn(m, k, clock_now_ms());
        } else {
            log_warning("%s (pid %d) %s; cleared %zu online user(s)", name, (int)pid, how, cleared);
            schedule_respawn(m, k, clock_now_ms());
        }
    }
}

static void respawn_due_children(struct master *m, int64_t now)
{
    for (uint32_t k = 0; k <= RELAY_PEER && !m->stopping; k++) {
        struct child *c = &m->children[k];
        if (!child_slot_used(m, k) || c->pid || !c->respawn_at || now < c->respawn_at)
            continue;
        char name[32];
        if (spawn_child(m, k) == 0)
            log_info("%s restarted (pid %d)", child_name(k, name, sizeof name), (int)c->pid);
        else
            schedule_respawn(m, k, now);
    }
}

/* Packets a full channel could not take (a HUP's config, a kick) go out on the tick. */
static void flush_channels(struct master *m)
{
    for (uint32_t k = 0; k <= RELAY_PEER; k++) {
        char name[32];
        if (m->children[k].chan.fd >= 0 && ipc_chan_flush(&m->children[k].chan) < 0)
            log_warning("channel to %s: %s", child_name(k, name, sizeof name), strerror(errno));
    }
}

static uint32_t running_children(const struct master *m)
{
    uint32_t n = 0;
    for (uint32_t k = 0; k <= RELAY_PEER; k++)
        n += m->children[k].pid != 0;
    return n;
}

static void signal_children(struct master *m, int sig)
{
    for (uint32_t k = 0; k <= RELAY_PEER; k++)
        if (m->children[k].pid)
            kill(m->children[k].pid, sig);
}

/* First start: the workers in order (each links to those before it), then the relay. */
static int spawn_all(struct master *m)
{
    for (uint32_t k = 0; k < m->nworkers; k++)
        if (spawn_child(m, k) < 0)
            return -1;
    if (m->clustered && spawn_child(m, RELAY_PEER) < 0)
        schedule_respawn(m, RELAY_PEER, clock_now_ms());
    return 0;
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
        if (m->children[k].chan.fd >= 0 &&
            ipc_chan_send(&m->children[k].chan, IPC_CONFIG, &next, NULL, 0) < 0)
            log_error("sending the new configuration to worker %u: %s", k, strerror(errno));
    if (m->children[RELAY_PEER].chan.fd >= 0 &&
        ipc_chan_send(&m->children[RELAY_PEER].chan, IPC_CONFIG, &next, NULL, 0) < 0)
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

/* Ask every worker holding a session of uid (several devices) to end them. */
static int kick_every_session(struct master *m, int32_t uid)
{
    struct online_loc locs[ONLINE_USER_MAX];
    bool told[ONLINE_MAX_WORKERS] = { false };
    size_t n = online_sessions(m->online, uid, locs, ONLINE_USER_MAX);
    struct ipc_user u = { .uid = uid };
    for (size_t k = 0; k < n; k++) {
        uint32_t wk = locs[k].worker;
        if (wk >= m->nworkers || told[wk] || m->children[wk].chan.fd < 0)
            continue;
        told[wk] = true;
        if (ipc_chan_send(&m->children[wk].chan, IPC_KICK_USER, &u, NULL, 0) < 0)
            return -1;
    }
    return 0;
}

/*
 * qchatctl revoke ID: a worker revokes every login token of the user (a
 * store call) and answers the control connection itself; out stays empty.
 */
static void revoke_tokens(struct master *m, struct json_object *req, struct buf *out)
{
    struct json_object *v;
    int64_t id = json_object_object_get_ex(req, "id", &v) ? json_object_get_int64(v) : 0;
    if (id <= 0 || id > INT32_MAX) {
        control_error(out, "revoke needs a user id");
        return;
    }
    struct ipc_user u = { .uid = (int32_t)id };
    for (uint32_t k = 0; k < m->nworkers; k++) {
        if (m->children[k].chan.fd < 0 || ipc_chan_send_fd(&m->children[k].chan, IPC_REVOKE_USER,
                                                           &u, control_client_fd(m->ctl)) < 0)
            continue;
        log_info("operator revokes the login tokens of user %lld (worker %u)", (long long)id, k);
        return;
    }
    control_error(out, "no worker available");
}

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
               relay_states[rstate <= RELAY_DOWN ? rstate : RELAY_DOWN],
               (int)m->children[RELAY_PEER].pid, (unsigned)rs->subscribed,
               (unsigned long long)rs->published, (unsigned long long)rs->received,
               (unsigned long long)rs->publish_failed, (unsigned)rs->reconnects);
    for (uint32_t k = 0; k < m->nworkers; k++) {
        struct worker_stats *ws = online_stats(m->online, k);
        buf_printf(b,
                   "%s{\"index\":%u,\"pid\":%d,\"connections\":%u,\"sessions\":%u,"
                   "\"msgs_in\":%llu,\"msgs_out\":%llu,\"offline_stored\":%llu,\"restarts\":%u}",
                   k ? "," : "", k, (int)m->children[k].pid, (unsigned)ws->connections,
                   (unsigned)ws->sessions, (unsigned long long)ws->msgs_in,
                   (unsigned long long)ws->msgs_out, (unsigned long long)ws->offline_stored,
                   (unsigned)ws->restarts);
    }
    buf_append_str(b, "]}");
}

static const struct metrics_source *metrics_source_of(struct master *m)
{
    static struct metrics_source src;
    src = (struct metrics_source){ m->online, m->nworkers, m->clustered,
                                   strcmp(store_state(m), "ok") != 0 };
    return &src;
}

/*
 * qchatctl purge: worker PURGE_WORKER runs a purge round now.  The answer
 * (and purge_status's) carries the rounds finished and messages purged so
 * far; qchatctl waits until the round count passes the one it was given.
 */
static void purge_command(struct master *m, bool start, struct buf *out)
{
    const struct metrics *mx = metrics_node();
    uint64_t runs = mx ? metrics_counter_sum(mx, QM_PURGE_RUNS, 0) : 0;
    uint64_t purged = mx ? metrics_counter_sum(mx, QM_HISTORY_PURGED, 0) : 0;
    if (start) {
        struct ipc_token t = { 0 };
        if (m->nworkers <= PURGE_WORKER || m->children[PURGE_WORKER].chan.fd < 0 ||
            ipc_chan_send(&m->children[PURGE_WORKER].chan, IPC_PURGE, &t, NULL, 0) < 0) {
            control_error(out, "the purging worker is not running");
            return;
        }
        log_info("operator asked for a purge");
    }
    buf_printf(out, "{\"ok\":true,\"runs\":%llu,\"purged\":%llu}", (unsigned long long)runs,
               (unsigned long long)purged);
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
                   m->children[loc.worker].chan.fd < 0) {
            snprintf(msg, sizeof msg, "user %lld is not online", (long long)id);
            control_error(out, msg);
        } else if (kick_every_session(m, (int32_t)id) < 0) {
            control_error(out, strerror(errno));
        } else {
            log_info("operator kicked user %lld", (long long)id);
            buf_append_str(out, "{\"ok\":true}");
        }
    } else if (strcmp(cmd, "revoke") == 0) {
        revoke_tokens(m, req, out);
    } else if (strcmp(cmd, "purge") == 0 || strcmp(cmd, "purge_status") == 0) {
        purge_command(m, strcmp(cmd, "purge") == 0, out);
    } else if (strcmp(cmd, "reload") == 0) {
        if (reload_config(m) == 0)
            buf_append_str(out, "{\"ok\":true}");
        else
            control_error(out, "reload failed; see the log");
    } else if (strcmp(cmd, "stats") == 0) {
        struct buf text;
        buf_init(&text);
        metrics_render(&text, metrics_source_of(m));
        buf_append_str(out, "{\"ok\":true,\"metrics\":");
        json_append_string(out, buf_head(&text), buf_used(&text));
        buf_append_char(out, '}');
        buf_free(&text);
    } else {
        control_error(out, "unknown command (status, users, kick, revoke, reload, stats, purge)");
    }
}

/* ---- the loop ----------------------------------------------------------- */

/*
 * READY=1 once every child has posted a heartbeat from its loop; WATCHDOG=1
 * only while every child's heartbeat is recent (a stopped or stuck worker
 * stops the pings, and systemd restarts the service); STATUS= says which
 * child is late and how the store is.
 */
static void notify_systemd(struct master *m, int64_t now)
{
    char late[64] = "";
    const struct metrics *mx = metrics_node();
    int64_t stale_ms = metrics_heartbeat_stale_ms();
    for (uint32_t k = 0; k <= m->nworkers && late[0] == '\0'; k++) {
        bool relay = k == m->nworkers;
        const struct child *c = relay ? &m->children[RELAY_PEER] : &m->children[k];
        if (relay && !m->clustered)
            break;
        int64_t hb = metrics_heartbeat_ms(mx, relay ? METRICS_RELAY_SLOT : k);
        if (c->pid == 0)
            snprintf(late, sizeof late, relay ? "relay not running" : "worker %u not running", k);
        else if (hb < c->started_ms || now - hb > stale_ms)
            snprintf(late, sizeof late, relay ? "relay not responding" : "worker %u not responding",
                     k);
    }
    if (late[0] == '\0' && !m->ready && !m->stopping) {
        sd_notifyf(0, "READY=1\nMAINPID=%d", (int)getpid());
        m->ready = true;
        log_info("ready: %u worker(s)%s up", m->nworkers, m->clustered ? " and the relay" : "");
    }
    if (late[0] == '\0' && m->ready)
        sd_notify(0, "WATCHDOG=1");
    if (now - m->last_status_ms >= 1000) {
        sd_notifyf(0, "STATUS=%u online, %u/%u workers, store %s %s%s%s", online_count(m->online),
                   running_children(m) - (m->children[RELAY_PEER].pid != 0), m->nworkers,
                   m->cfg.storage_driver, store_state(m), late[0] ? ", " : "", late);
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
    respawn_due_children(m, now);
    notify_systemd(m, now);
    metrics_http_tick(m->http, now);
    control_expire(m->ctl, now);
    if (m->stopping && now >= m->stop_deadline) {
        log_warning("children still running after the shutdown timeout: killing");
        signal_children(m, SIGKILL);
        m->stop_deadline = now + STOP_GRACE_MS;
    }
}

static void on_metrics_request(void *ctx, uint32_t events)
{
    struct master *m = ctx;
    (void)events;
    metrics_http_run(m->http, metrics_source_of(m));
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
    if (m->cfg.metrics_listen[0]) {
        char err[256];
        if ((m->http = metrics_http_open(m->cfg.metrics_listen, err, sizeof err)) == NULL) {
            log_error("metrics.listen %s: %s", m->cfg.metrics_listen, err);
            return -1;
        }
        if (loop_watch(&m->loop, &m->metrics_src, metrics_http_fd(m->http), EPOLLIN,
                       on_metrics_request, m) < 0)
            return -1;
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

/*
 * Single node: the cseq sequencer and the append journal live in shared
 * memory made before the fork, so a worker's successor finds its
 * predecessor's uncommitted chats (docs/ARCHITECTURE.md, "How cseq is
 * assigned").  Several nodes: the database assigns cseq, neither exists.
 */
static int create_log_sequencer(struct master *m)
{
    m->seqtab = seqtab_create((uint32_t)m->cfg.history_sequencer_slots);
    m->journal =
        m->seqtab ? journal_create(m->nworkers, (size_t)m->cfg.history_journal_bytes) : NULL;
    if (m->journal == NULL) {
        log_error("cseq sequencer and journal in shared memory: %s", strerror(errno));
        return -1;
    }
    return 0;
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
    for (uint32_t k = 0; k <= RELAY_PEER; k++)
        ipc_chan_init(&m->children[k].chan, -1);
    m->clustered = cfg->redis_host[0] != '\0';
    log_set_role("master");
    title_set("qchatd: master");
    if (!m->clustered && create_log_sequencer(m) < 0)
        return 1;
    if (open_master_sources(m) < 0) {
        log_error("master setup: %s", strerror(errno));
        return 1;
    }
    /* The master keeps the listening socket only to hand it to respawned workers. */
    if (spawn_all(m) < 0) {
        log_error("could not start the workers");
        signal_children(m, SIGKILL);
        return 1;
    }
    log_info("qchatd %s: listening on %s, %u worker(s), node %d, store %s%s%s", QCHAT_VERSION,
             cfg->listen, m->nworkers, cfg->node_id, cfg->storage_driver,
             m->clustered ? ", redis " : "", m->clustered ? cfg->redis_host : "");
    notify_systemd(m, clock_now_ms());

    while (!m->stopping || running_children(m) > 0)
        loop_run_once(&m->loop, -1);
    control_close(m->ctl, 1);
    metrics_http_close(m->http);
    log_info("stopped");
    return 0;
}
