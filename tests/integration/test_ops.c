/*
 * test_ops.c - qchatd operated like a service (issue 4):
 *  - configuration reload by SIGHUP and by "qchatctl reload": live keys
 *    (log level, rate limit) apply to connections made before it, a key
 *    needing a restart is logged by name, -o options still win, a broken
 *    file changes nothing; no password reaches a debug log;
 *  - qchatctl status / users / kick / reload against a running server:
 *    content, --json, exit codes (0 ok, 1 server error, 2 usage);
 *  - systemd notifications (READY, MAINPID, STATUS, WATCHDOG, RELOADING,
 *    STOPPING) on a $NOTIFY_SOCKET of ours, all from the master;
 *  - USR1 reopens a rotated log file; a reload moves log.file;
 *  - SIGTERM while clients are sending: no acknowledged chat lost (live or
 *    stored offline, found after a restart on the same database), exit 0
 *    within shutdown_timeout, no worker left; and a stop with idle clients
 *    does not wait shutdown_timeout for them;
 *  - -d with a pidfile: returns, serves, refuses a second start, stops;
 *  - (issue 17) READY=1 only once every worker's loop turned; WATCHDOG=1
 *    stops while a worker is SIGSTOPped (STATUS= names it) and resumes
 *    after SIGCONT; process titles exactly "qchatd: master" / "qchatd:
 *    worker N"; startup errors at journal priority err with exit status 78
 *    (a broken file, a database the user cannot write, a control socket
 *    directory that cannot be created), a missing one created.
 *
 * These tests need what the harness's server_start cannot give: a real
 * configuration file (-c), since a reload re-reads the file and re-applies
 * the -o options over it; a restart on the same database; a daemon that is
 * not our child.  So this file starts its servers itself (ops_start) and
 * fills h_srv, which lets the harness's client helpers, h_ctl and
 * server_stop work on them.  Each test runs its own server in its own
 * temporary directory, stopped by PID in the test's teardown.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#define OPS_WORKERS       2 /* workers of the reload tests */
#define OPS_PORT_ATTEMPTS 5
#define OPS_POLL_MS       10
#define PROG_TIMEOUT_MS   15000 /* one run of qchatctl or qchatd -d */
#define PROG_DRAIN_MS     1000  /* output still read after the exit */
#define PROG_OUT_MAX      (256 * 1024)
#define MAX_PIDS          64
#define LOG_WAIT_MS       5000 /* a log line expected soon */

/* reload */
#define RATE_BEFORE         1000 /* request_rate / request_burst before */
#define RATE_AFTER          1    /* ... and after the reload */
#define BURST_AFTER         5
#define BURST_EXTRA         3    /* beyond the burst: refused, not a flood */
#define REFILL_MS           1500 /* > 1 s: one token back at RATE_AFTER */
#define TEXT_LIMIT_FILE     1000 /* limits.max_text_bytes in the file */
#define TEXT_LIMIT_OPT      200  /* ... and by -o, which wins */
#define TEXT_OVER_OPT       300  /* a text between the two */
#define DEBUG_PROBE_CONNS   4    /* connections opened to provoke debug lines */
#define WORKERS_IN_NEW_FILE 3    /* server.workers changed: needs a restart */

/* SIGTERM while sending */
#define TERM_WORKERS        3
#define TERM_SENDERS        6
#define TERM_ONLINE         3 /* recipients logged in */
#define TERM_OFFLINE        3 /* recipients never logged in */
#define TERM_RCPTS          (TERM_ONLINE + TERM_OFFLINE)
#define TERM_WINDOW         8 /* chats in flight per sender */
#define TERM_MAX_PER_SENDER 600
#define TERM_MAX_MSGS       (TERM_SENDERS * TERM_MAX_PER_SENDER)
#define TERM_AFTER_ACKS     600   /* SIGTERM once this many chats were acked */
#define TERM_SHUTDOWN_S     3     /* server.shutdown_timeout */
#define TERM_EXIT_SLACK_MS  2500  /* "a little" beyond it */
#define TERM_PUMP_MS        30000 /* bound on the sending phase */
#define TERM_SEQ_BASE       1000000
#define IDLE_SHUTDOWN_S     10   /* the default server.shutdown_timeout */
#define IDLE_CLIENTS        3    /* logged in, never closing their end */
#define IDLE_PROMPT_MS      3000 /* nothing to flush: the stop is this quick */

/* qchatctl */
#define CTL_WORKERS  3
#define CTL_USERS    3
#define NO_SUCH_USER 999999999

enum { CTL_EXIT_OK = 0, CTL_EXIT_SERVER = 1, CTL_EXIT_USAGE = 2 };

static char bin_dir[PATH_MAX - 32];
static char notify_path[PATH_MAX]; /* $NOTIFY_SOCKET for the next ops_spawn, "" none */
static char watchdog_usec[32];     /* $WATCHDOG_USEC for the next ops_spawn, "" none */
static volatile pid_t daemon_pid;  /* a -d server, not our child at first */

/* ---- small helpers ------------------------------------------------------ */

static void bin_path(char *out, size_t len, const char *prog)
{
    snprintf(out, len, "%s/%s", bin_dir, prog);
}

static void write_file(const char *path, const char *text)
{
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.new", path);
    FILE *f = fopen(tmp, "we");
    H_CHECK(f != NULL, "create %s: %s", tmp, strerror(errno));
    bool ok = fputs(text, f) >= 0;
    ok = fclose(f) == 0 && ok;
    H_CHECK(ok, "write %s: %s", tmp, strerror(errno));
    /* Replaced at once, as an editor or a config manager would. */
    H_CHECK(rename(tmp, path) == 0, "rename %s: %s", tmp, strerror(errno));
}

/* The whole file as a string (caller frees), "" if it does not exist. */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "re");
    char *text = NULL;
    size_t len = 0;
    if (f == NULL)
        return strdup("");
    FILE *mem = open_memstream(&text, &len);
    H_CHECK(mem != NULL, "open_memstream: %s", strerror(errno));
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, n, mem);
    fclose(f);
    fclose(mem);
    return text;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* Lines of the server log after byte `from` that contain every needle. */
static int log_count_since(long from, const char *needle, const char *needle2)
{
    char *text = read_file(h_srv.log_path);
    int n = 0;
    size_t len = strlen(text);
    char *line = text + ((size_t)from <= len ? (size_t)from : len);
    while (*line != '\0') {
        char *end = strchr(line, '\n');
        if (end != NULL)
            *end = '\0';
        if (strstr(line, needle) != NULL && (needle2 == NULL || strstr(line, needle2) != NULL))
            n++;
        if (end == NULL)
            break;
        line = end + 1;
    }
    free(text);
    return n;
}

struct log_wait {
    long from;
    const char *needle, *needle2;
    int count;
};

static bool log_has_enough(void *arg)
{
    struct log_wait *w = arg;
    return log_count_since(w->from, w->needle, w->needle2) >= w->count;
}

static bool wait_log(long from, const char *needle, const char *needle2, int count, int ms)
{
    struct log_wait w = { from, needle, needle2, count };
    return h_wait_for(log_has_enough, &w, ms);
}

/* Running (not a zombie) and titled with prefix. */
static bool process_alive_titled(pid_t pid, const char *prefix)
{
    return h_process_alive(pid) && h_process_titled(pid, prefix);
}

static bool pid_in(pid_t pid, const pid_t *set, int n)
{
    for (int i = 0; i < n; i++)
        if (set[i] == pid)
            return true;
    return false;
}

/* ---- running programs ---------------------------------------------------- */

struct prog {
    int status; /* wait status, -1 if it had to be killed */
    char out[PROG_OUT_MAX];
    char err[PROG_OUT_MAX];
};

static void drain_into(int *fd, char *buf, size_t *len)
{
    char sink[4096];
    ssize_t n = read(*fd, sink, sizeof sink);
    if (n <= 0) {
        close(*fd);
        *fd = -1;
        return;
    }
    size_t room = PROG_OUT_MAX - 1 - *len;
    size_t take = (size_t)n < room ? (size_t)n : room;
    memcpy(buf + *len, sink, take);
    *len += take;
    buf[*len] = '\0';
}

/*
 * Run argv (argv[0] a path) with stdin from /dev/null, collecting stdout and
 * stderr; env_socket, if not NULL, becomes $QCHATCTL_SOCKET.  Bounded by
 * PROG_TIMEOUT_MS, then SIGKILL.  Returns the exit status, -1 if killed.
 */
static int run_prog(struct prog *p, const char *env_socket, const char *const *argv)
{
    int outp[2], errp[2];
    p->out[0] = p->err[0] = '\0';
    p->status = -1;
    H_CHECK(pipe2(outp, O_CLOEXEC) == 0 && pipe2(errp, O_CLOEXEC) == 0, "pipe: %s",
            strerror(errno));
    pid_t pid = fork();
    H_CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        int nul = open("/dev/null", O_RDONLY);
        if (nul < 0 || dup2(nul, 0) < 0 || dup2(outp[1], 1) < 0 || dup2(errp[1], 2) < 0)
            _exit(126);
        if (env_socket != NULL)
            setenv("QCHATCTL_SOCKET", env_socket, 1);
        else
            unsetenv("QCHATCTL_SOCKET");
        signal(SIGPIPE, SIG_DFL);
        execv(argv[0], (char *const *)argv);
        dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(outp[1]);
    close(errp[1]);
    int fds[2] = { outp[0], errp[0] };
    size_t lens[2] = { 0, 0 };
    char *bufs[2] = { p->out, p->err };
    int64_t deadline = h_now_ms() + PROG_TIMEOUT_MS, exited_at = 0;
    bool reaped = false;
    int status = 0;
    while (h_now_ms() < deadline) {
        if (!reaped && waitpid(pid, &status, WNOHANG) == pid) {
            reaped = true;
            exited_at = h_now_ms();
        }
        if (fds[0] < 0 && fds[1] < 0) {
            if (reaped)
                break;
            h_sleep_ms(OPS_POLL_MS);
            continue;
        }
        /* A daemon may keep a copy of a pipe for a moment after its parent exits. */
        if (reaped && h_now_ms() - exited_at > PROG_DRAIN_MS)
            break;
        struct pollfd pf[2];
        int n = 0, which[2];
        for (int i = 0; i < 2; i++)
            if (fds[i] >= 0) {
                pf[n] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
                which[n++] = i;
            }
        if (poll(pf, (nfds_t)n, OPS_POLL_MS * 5) > 0)
            for (int i = 0; i < n; i++)
                if (pf[i].revents != 0)
                    drain_into(&fds[which[i]], bufs[which[i]], &lens[which[i]]);
    }
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (!reaped) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        H_FAIL("%s %s: still running after %d ms (killed)", argv[0], argv[1] ? argv[1] : "",
               PROG_TIMEOUT_MS);
    }
    p->status = status;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* qchatctl -s SOCKET A1 A2 A3: the arguments end at the first NULL. */
static int run_ctl(struct prog *p, const char *a1, const char *a2, const char *a3)
{
    char ctl[PATH_MAX];
    bin_path(ctl, sizeof ctl, "qchatctl");
    const char *argv[] = { ctl, "-s", h_srv.ctl_path, a1, a2, a3, NULL };
    return run_prog(p, NULL, argv);
}

static struct json_object *parse_json_output(const struct prog *p, const char *what)
{
    struct json_object *o = json_tokener_parse(p->out);
    H_CHECK(o != NULL && json_object_is_type(o, json_type_object),
            "%s: expected one JSON object on stdout, got \"%.300s\" (stderr \"%.300s\")", what,
            p->out, p->err);
    return o;
}

/* ---- a server of our own -------------------------------------------------- */

/* A fresh temporary directory for this test's server: log, db, socket. */
static void ops_make_dir(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(h_srv.dir, sizeof h_srv.dir, "%s/qchat-ops.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    H_CHECK(mkdtemp(h_srv.dir) != NULL, "mkdtemp %s: %s", h_srv.dir, strerror(errno));
    snprintf(h_srv.log_path, sizeof h_srv.log_path, "%s/qchatd.log", h_srv.dir);
    snprintf(h_srv.db_path, sizeof h_srv.db_path, "%s/qchat.db", h_srv.dir);
    snprintf(h_srv.ctl_path, sizeof h_srv.ctl_path, "%s/ctl.sock", h_srv.dir);
    h_srv.exit_status = -1;
}

static void ops_path(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", h_srv.dir, name);
}

#define OPS_MAX_ARGS 64

/* In the child: NOTIFY_SOCKET is the test's own socket, or not set. */
static void set_notify_socket(void)
{
    if (notify_path[0] != '\0')
        setenv("NOTIFY_SOCKET", notify_path, 1);
    else
        unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_PID");
    if (watchdog_usec[0] != '\0')
        setenv("WATCHDOG_USEC", watchdog_usec, 1);
    else
        unsetenv("WATCHDOG_USEC");
}

/* qchatd -f [-c conf] -o listen -o control_socket -o storage.path [-o opts...] */
static pid_t ops_spawn(const char *conf, const char *const *opts)
{
    char bin[PATH_MAX], listen[64], ctl[PATH_MAX + 32], db[PATH_MAX + 32];
    const char *argv[OPS_MAX_ARGS];
    int argc = 0;
    bin_path(bin, sizeof bin, "qchatd");
    snprintf(listen, sizeof listen, "server.listen=" H_HOST ":%d", h_srv.port);
    snprintf(ctl, sizeof ctl, "server.control_socket=%s", h_srv.ctl_path);
    snprintf(db, sizeof db, "storage.path=%s", h_srv.db_path);
    argv[argc++] = bin;
    argv[argc++] = "-f";
    if (conf != NULL) {
        argv[argc++] = "-c";
        argv[argc++] = conf;
    }
    const char *fixed[] = { listen, ctl, db };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        argv[argc++] = "-o";
        argv[argc++] = fixed[i];
    }
    for (int i = 0; opts != NULL && opts[i] != NULL && argc < OPS_MAX_ARGS - 3; i++) {
        argv[argc++] = "-o";
        argv[argc++] = opts[i];
    }
    argv[argc] = NULL;

    pid_t pid = h_spawn_logged(argv, h_srv.log_path, set_notify_socket);
    H_CHECK(pid >= 0, "fork: %s", strerror(errno));
    return pid;
}

/*
 * Start qchatd in h_srv.dir (made by ops_make_dir; a restart reuses it and
 * so the database) and wait until it accepts, its workers run and its
 * control socket exists.  Fails the test if it does not come up.
 */
static void ops_start(const char *conf, const char *const *opts, int workers)
{
    pid_t pids[MAX_PIDS];
    h_srv.workers = workers;
    for (int attempt = 0; attempt < OPS_PORT_ATTEMPTS; attempt++) {
        long log_from = file_size(h_srv.log_path);
        h_srv.port = h_free_port();
        H_CHECK(h_srv.port > 0, "no free loopback port: %s", strerror(errno));
        h_srv.pid = ops_spawn(conf, opts);
        int64_t deadline = h_now_ms() + H_START_MS;
        bool up = false, died = false;
        while (!up && !died && h_now_ms() < deadline) {
            int status;
            if (waitpid(h_srv.pid, &status, WNOHANG) == h_srv.pid) {
                died = true;
                h_srv.exit_status = status;
                h_srv.pid = 0;
                break;
            }
            up = h_port_accepting(h_srv.port) && server_worker_pids(pids, MAX_PIDS) >= workers &&
                 access(h_srv.ctl_path, F_OK) == 0;
            if (!up)
                h_sleep_ms(OPS_POLL_MS);
        }
        if (up) {
            fprintf(stderr, "test_ops: qchatd %d on " H_HOST ":%d, dir %s\n", (int)h_srv.pid,
                    h_srv.port, h_srv.dir);
            return;
        }
        if (died && log_count_since(log_from, "in use", NULL) > 0)
            continue; /* someone took the port in between: another one */
        H_FAIL("qchatd did not come up within %d ms (%s)", H_START_MS,
               died ? "it exited" : "no port, workers or control socket");
    }
    H_FAIL("no free port after %d attempts", OPS_PORT_ATTEMPTS);
}

/* ---- test teardown: stop what the test started --------------------------- */

static bool daemon_gone(void)
{
    pid_t pid = daemon_pid;
    return pid <= 0 || !process_alive_titled(pid, "qchatd");
}

static void stop_daemon(void)
{
    pid_t pid = daemon_pid;
    if (pid <= 0)
        return;
    if (process_alive_titled(pid, "qchatd")) {
        kill(pid, SIGTERM);
        int64_t deadline = h_now_ms() + H_STOP_MS;
        while (!daemon_gone() && h_now_ms() < deadline) {
            waitpid(pid, NULL, WNOHANG);
            h_sleep_ms(OPS_POLL_MS);
        }
        if (!daemon_gone()) {
            fprintf(stderr, "test_ops: daemon %d did not stop: SIGKILL\n", (int)pid);
            kill(pid, SIGKILL);
        }
    }
    waitpid(pid, NULL, WNOHANG);
    daemon_pid = 0;
}

static int ops_teardown(void **state)
{
    h_test_teardown(state);
    notify_path[0] = '\0';
    watchdog_usec[0] = '\0';
    stop_daemon();
    server_stop();
    return 0;
}

#define OPS_TEST(f)                                          \
    {                                                        \
#f, h_run_test, NULL, ops_teardown, &(struct h_test) \
        {                                                    \
            f                                                \
        }                                                    \
    }

/* Killed from outside (timeout): the daemon is not tied to us, stop it. */
static void on_fatal_signal(int sig)
{
    if (daemon_pid > 0)
        kill(daemon_pid, SIGTERM);
    if (h_srv.pid > 0)
        kill(h_srv.pid, SIGTERM);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* ---- chat helpers ------------------------------------------------------- */

/* from chats text to `to` on the same connections; `to` receives it. */
static void chat_through(struct qclient *from, const struct h_user *fu, struct qclient *to,
                         const struct h_user *tu, const char *text, const char *what)
{
    json_object_put(
        h_request(from, QC_ONE_CHAT_MSG, 0, what, "\"toid\":%d,\"msg\":%s", tu->id, h_q(text)));
    struct json_object *m = h_expect_skip(to, QC_ONE_CHAT_MSG, what);
    H_CHECK(strcmp(h_str(m, "msg"), text) == 0 && h_int(m, "id") == fu->id,
            "%s: expected the chat \"%s\" from %d, got %s", what, text, fu->id, h_json(m));
    json_object_put(m);
}

/*
 * Send n HEARTBEATs with seq back to back, then read their n ACKs: returns
 * how many were refused with errno 14 (the others must be errno 0).
 */
static int heartbeat_burst(struct qclient *c, int n, const char *what)
{
    int64_t first = h_next_seq();
    for (int i = 1; i < n; i++)
        h_next_seq();
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    H_CHECK(mem != NULL, "open_memstream");
    for (int i = 0; i < n; i++)
        fprintf(mem, "{\"msgid\":%d,\"seq\":%lld}", QC_HEARTBEAT_MSG, (long long)(first + i));
    fclose(mem);
    int rc = qclient_send_raw(c, text, len);
    free(text);
    H_CHECK(rc == 0, "%s: sending %d heartbeats failed", what, n);
    int refused = 0;
    for (int i = 0; i < n; i++) {
        struct json_object *a = h_expect_skip(c, QC_ACK_MSG, what);
        H_CHECK(h_int(a, "seq") == first + i && h_int(a, "req") == QC_HEARTBEAT_MSG,
                "%s: expected the ACK of heartbeat seq %lld, got %s", what, (long long)(first + i),
                h_json(a));
        int64_t err = h_int(a, "errno");
        H_CHECK(err == QC_OK || err == QC_ERATE, "%s: heartbeat %d: expected errno 0 or 14, got %s",
                what, i, h_json(a));
        refused += err == QC_ERATE;
        json_object_put(a);
    }
    return refused;
}

/* ---- HUP / qchatctl reload ------------------------------------------------ */

static void write_reload_conf(const char *path, const char *level, int rate, int burst, int workers)
{
    char text[2048];
    snprintf(text, sizeof text,
             "# test_ops: configuration rewritten between reloads\n"
             "[server]\n"
             "workers = %d\n"
             "shutdown_timeout = 5\n"
             "\n"
             "[log]\n"
             "level = %s\n"
             "\n"
             "[security]\n"
             "password_cost = 1\n"
             "request_rate = %d\n"
             "request_burst = %d\n"
             "\n"
             "[limits]\n"
             "max_text_bytes = %d\n",
             workers, level, rate, burst, TEXT_LIMIT_FILE);
    write_file(path, text);
}

/* Open and close a few connections: a worker at log level debug says so. */
static void provoke_debug_lines(void)
{
    for (int i = 0; i < DEBUG_PROBE_CONNS; i++) {
        struct qclient *c = h_connect();
        h_expect_quiet(c, "a probe connection");
        h_close(c);
    }
}

enum reload_trigger { BY_SIGHUP, BY_QCHATCTL };

static void reload_keeps_clients(enum reload_trigger how)
{
    char conf[PATH_MAX], big[TEXT_OVER_OPT + 1];
    char text_opt[64];
    snprintf(text_opt, sizeof text_opt, "limits.max_text_bytes=%d", TEXT_LIMIT_OPT);
    const char *opts[] = { text_opt, NULL };
    memset(big, 'x', TEXT_OVER_OPT);
    big[TEXT_OVER_OPT] = '\0';

    ops_make_dir();
    ops_path(conf, sizeof conf, "qchatd.conf");
    write_reload_conf(conf, "info", RATE_BEFORE, RATE_BEFORE, OPS_WORKERS);
    ops_start(conf, opts, OPS_WORKERS);
    pid_t before[MAX_PIDS], after[MAX_PIDS];
    int nbefore = server_worker_pids(before, MAX_PIDS);

    struct h_user a, b;
    struct qclient *ca = h_new_user(&a, "reload_a");
    struct qclient *cb = h_new_user(&b, "reload_b");
    chat_through(ca, &a, cb, &b, "before the reload", "A->B before the reload");
    H_CHECK(heartbeat_burst(ca, BURST_AFTER + BURST_EXTRA, "burst before the reload") == 0,
            "with request_burst = %d no heartbeat of %d may be refused", RATE_BEFORE,
            BURST_AFTER + BURST_EXTRA);
    json_object_put(h_request(cb, QC_ONE_CHAT_MSG, QC_ETOOLONG, "text over the -o limit",
                              "\"toid\":%d,\"msg\":%s", a.id, h_q(big)));
    provoke_debug_lines();
    H_CHECK(log_count_since(0, " debug: ", NULL) == 0,
            "log.level = info: expected no debug line, got %d",
            log_count_since(0, " debug: ", NULL));

    /* The new file: debug, a small rate limit, a key that needs a restart. */
    long from = file_size(h_srv.log_path);
    write_reload_conf(conf, "debug", RATE_AFTER, BURST_AFTER, WORKERS_IN_NEW_FILE);
    if (how == BY_SIGHUP) {
        H_CHECK(kill(h_srv.pid, SIGHUP) == 0, "kill -HUP %d: %s", (int)h_srv.pid, strerror(errno));
    } else {
        struct prog *p = malloc(sizeof *p);
        H_CHECK(p != NULL, "out of memory");
        int rc = run_ctl(p, "reload", NULL, NULL);
        bool said = strstr(p->out, "reload") != NULL;
        char out[256];
        snprintf(out, sizeof out, "%.200s", p->out);
        free(p);
        H_CHECK(rc == CTL_EXIT_OK && said,
                "qchatctl reload: expected exit 0 and a line about "
                "the reload, got exit %d, \"%s\"",
                rc, out);
    }
    /* The master and every worker take the new configuration. */
    H_CHECK(wait_log(from, "configuration reloaded", NULL, 1 + OPS_WORKERS, LOG_WAIT_MS),
            "expected \"configuration reloaded\" from the master and %d workers, got %d line(s)",
            OPS_WORKERS, log_count_since(from, "configuration reloaded", NULL));
    H_CHECK(log_count_since(from, "server.workers", "restart") >= 1,
            "server.workers changed in the file: expected a log line naming it as needing "
            "a restart");
    H_CHECK(log_count_since(from, "log.level", "restart") == 0 &&
                log_count_since(from, "request_rate", "restart") == 0,
            "log.level and security.request_rate are live keys: no restart may be asked for");

    /* No worker replaced, none added (workers needs a restart). */
    int nafter = server_worker_pids(after, MAX_PIDS);
    H_CHECK(nafter == nbefore,
            "workers: %d before the reload, %d after (server.workers "
            "needs a restart)",
            nbefore, nafter);
    for (int i = 0; i < nafter; i++)
        H_CHECK(pid_in(after[i], before, nbefore), "worker %d is new after the reload",
                (int)after[i]);

    /* The new rate limit, on a connection made before the reload... */
    int refused = heartbeat_burst(ca, BURST_AFTER + BURST_EXTRA, "burst after the reload");
    H_CHECK(refused >= BURST_EXTRA - 1 && refused <= BURST_EXTRA,
            "request_burst %d -> %d: of %d heartbeats sent at once expected about %d refused "
            "with errno 14, got %d",
            RATE_BEFORE, BURST_AFTER, BURST_AFTER + BURST_EXTRA, BURST_EXTRA, refused);
    /* ...and on a new one. */
    struct qclient *cc = h_connect();
    refused = heartbeat_burst(cc, BURST_AFTER + BURST_EXTRA, "burst on a new connection");
    H_CHECK(refused >= BURST_EXTRA - 1,
            "new connection after the reload: expected about %d of "
            "%d heartbeats refused, got %d",
            BURST_EXTRA, BURST_AFTER + BURST_EXTRA, refused);
    h_close(cc);

    /* The same connections still chat, both ways, once a token is back. */
    h_sleep_ms(REFILL_MS);
    chat_through(ca, &a, cb, &b, "after the reload",
                 "A->B on the same connection after the reload");
    chat_through(cb, &b, ca, &a, "reply after the reload", "B->A after the reload");
    /* -o limits.max_text_bytes still wins over the file's value. */
    json_object_put(h_request(cb, QC_ONE_CHAT_MSG, QC_ETOOLONG,
                              "text over the -o limit "
                              "after the reload (the reload re-applies -o)",
                              "\"toid\":%d,\"msg\":%s", a.id, h_q(big)));

    /* log.level = debug: workers log debug lines now. */
    h_sleep_ms(REFILL_MS);
    provoke_debug_lines();
    H_CHECK(wait_log(from, " debug: ", NULL, 1, LOG_WAIT_MS),
            "log.level info -> debug: no debug line in the log after the reload");
    H_CHECK(log_count_since(from, " worker ", " debug: ") >= 1,
            "log.level info -> debug: no debug line from a worker");

    /* Even at debug level no password or hash reaches the log. */
    struct h_user d;
    struct qclient *cd = h_new_user(&d, "reload_pw");
    h_close(cd);
    char wrong[H_PASSWORD_LEN];
    snprintf(wrong, sizeof wrong, "Wrong-%d-secret", (int)getpid());
    struct qclient *cw = h_connect();
    h_send(cw, "{\"msgid\":%d,\"id\":%d,\"password\":%s}", QC_LOGIN_MSG, d.id, h_q(wrong));
    struct json_object *fail_ack = h_expect(cw, QC_LOGIN_MSG_ACK, "login with a wrong password");
    H_CHECK(h_int(fail_ack, "errno") == QC_EAUTH, "wrong password: expected errno 1, got %s",
            h_json(fail_ack));
    json_object_put(fail_ack);
    h_close(cw);
    H_CHECK(log_count_since(0, d.password, NULL) == 0 && log_count_since(0, a.password, NULL) == 0,
            "a user's password appears in the log");
    H_CHECK(log_count_since(0, wrong, NULL) == 0, "a wrong password appears in the log");
    H_CHECK(log_count_since(0, "$y$", NULL) == 0, "a yescrypt hash ($y$...) appears in the log");

    if (how == BY_QCHATCTL) {
        /* A broken file: the reload fails, everything keeps running as it was. */
        from = file_size(h_srv.log_path);
        write_file(conf, "[server]\nworkers = 2\nno_such_key = 1\n");
        struct prog *p = malloc(sizeof *p);
        H_CHECK(p != NULL, "out of memory");
        int rc = run_ctl(p, "reload", NULL, NULL);
        char err[256];
        snprintf(err, sizeof err, "%.200s", p->err);
        free(p);
        H_CHECK(rc == CTL_EXIT_SERVER,
                "qchatctl reload with an unknown key in the file: "
                "expected exit 1, got %d (stderr \"%s\")",
                rc, err);
        H_CHECK(wait_log(from, "qchatd.conf:3", NULL, 1, LOG_WAIT_MS),
                "a failed reload must log the error naming FILE:LINE (qchatd.conf:3)");
        h_sleep_ms(REFILL_MS);
        chat_through(ca, &a, cb, &b, "after a failed reload", "A->B after a failed reload");
        H_CHECK(heartbeat_burst(cb, BURST_AFTER + BURST_EXTRA, "burst after a failed reload") >= 1,
                "after a failed reload the running request_burst (%d) must stay", BURST_AFTER);
    }
    h_stop_and_check_clean();
}

static void test_sighup_reloads_without_dropping_clients(void **state)
{
    reload_keeps_clients(BY_SIGHUP);
}

static void test_qchatctl_reload_like_sighup(void **state)
{
    reload_keeps_clients(BY_QCHATCTL);
}

/* ---- SIGTERM while clients are sending ------------------------------------ */

struct term_msg {
    int sender, rcpt;
    bool sent, answered;
    int err;           /* errno of its ACK */
    int live, offline; /* copies the recipient got */
};

struct term_peer {
    struct h_user u;
    struct qclient *c; /* NULL: offline recipient, or closed */
    bool eof;
    int next; /* senders: chats sent */
    int in_flight;
};

struct term_state {
    struct term_peer senders[TERM_SENDERS];
    struct term_peer rcpts[TERM_RCPTS];
    struct term_msg msgs[TERM_MAX_MSGS];
    int nmsgs, acked, refused, kicks, other_errors;
    int first_other_err;
};

static int msg_index_of(struct json_object *m)
{
    int idx = -1;
    const char *text = h_str(m, "msg");
    H_CHECK(sscanf(text, "term %d", &idx) == 1 && idx >= 0 && idx < TERM_MAX_MSGS,
            "unexpected chat %s", h_json(m));
    return idx;
}

static void note_delivery(struct term_state *ts, int r, struct json_object *m, bool live)
{
    int idx = msg_index_of(m);
    struct term_msg *tm = &ts->msgs[idx];
    H_CHECK(tm->sent && tm->rcpt == r && h_int(m, "id") == ts->senders[tm->sender].u.id,
            "recipient %d got a chat that was not sent to it: %s", r, h_json(m));
    if (live)
        tm->live++;
    else
        tm->offline++;
}

static void term_send_one(struct term_state *ts, int s)
{
    struct term_peer *p = &ts->senders[s];
    if (ts->nmsgs >= TERM_MAX_MSGS)
        return;
    int idx = ts->nmsgs++;
    struct term_msg *tm = &ts->msgs[idx];
    tm->sender = s;
    tm->rcpt = (s + p->next) % TERM_RCPTS;
    char text[160];
    int n = snprintf(text, sizeof text, "{\"msgid\":%d,\"toid\":%d,\"msg\":\"term %d\",\"seq\":%d}",
                     QC_ONE_CHAT_MSG, ts->rcpts[tm->rcpt].u.id, idx, TERM_SEQ_BASE + idx);
    p->next++;
    if (qclient_send_raw(p->c, text, (size_t)n) != 0) {
        p->eof = true; /* the server closed: this one was never sent */
        memset(tm, 0, sizeof *tm);
        ts->nmsgs--;
        return;
    }
    tm->sent = true;
    p->in_flight++;
}

static void term_read_sender(struct term_state *ts, int s)
{
    struct term_peer *p = &ts->senders[s];
    struct json_object *o;
    while ((o = qclient_recv(p->c, 0)) != NULL) {
        int64_t msgid = -1, seq = -1, err = -1;
        qjson_int(o, "msgid", &msgid);
        if (msgid == QC_ACK_MSG && qjson_int(o, "seq", &seq) == 0 && seq >= TERM_SEQ_BASE &&
            seq < TERM_SEQ_BASE + ts->nmsgs && qjson_int(o, "errno", &err) == 0) {
            struct term_msg *tm = &ts->msgs[seq - TERM_SEQ_BASE];
            H_CHECK(!tm->answered && tm->sender == s, "sender %d: a second or foreign ACK %s", s,
                    h_json(o));
            tm->answered = true;
            tm->err = (int)err;
            p->in_flight--;
            if (err == QC_OK) {
                ts->acked++;
            } else if (err == QC_ESHUTDOWN) {
                ts->refused++;
            } else {
                if (ts->other_errors++ == 0)
                    ts->first_other_err = (int)err;
                ts->refused++;
            }
        } else if (msgid == QC_KICK_MSG) {
            ts->kicks++;
        } else {
            H_FAIL("sender %d: unexpected %s", s, h_json(o));
        }
        json_object_put(o);
    }
    if (qclient_eof(p->c) || errno == EPROTO)
        p->eof = true;
}

static void term_read_rcpt(struct term_state *ts, int r)
{
    struct term_peer *p = &ts->rcpts[r];
    struct json_object *o;
    while ((o = qclient_recv(p->c, 0)) != NULL) {
        int64_t msgid = -1;
        qjson_int(o, "msgid", &msgid);
        if (msgid == QC_ONE_CHAT_MSG)
            note_delivery(ts, r, o, true);
        else if (msgid == QC_KICK_MSG)
            ts->kicks++;
        else
            H_FAIL("recipient %d: unexpected %s", r, h_json(o));
        json_object_put(o);
    }
    if (qclient_eof(p->c) || errno == EPROTO)
        p->eof = true;
}

/* One round: send what the windows allow, wait a little, read everything. */
static void term_pump(struct term_state *ts, bool keep_sending)
{
    struct pollfd pf[TERM_SENDERS + TERM_RCPTS];
    int who[TERM_SENDERS + TERM_RCPTS], n = 0;
    bool buffered = false;
    for (int s = 0; s < TERM_SENDERS; s++) {
        struct term_peer *p = &ts->senders[s];
        while (keep_sending && !p->eof && p->in_flight < TERM_WINDOW &&
               p->next < TERM_MAX_PER_SENDER && ts->nmsgs < TERM_MAX_MSGS)
            term_send_one(ts, s);
        if (!p->eof) {
            pf[n] = (struct pollfd){ .fd = qclient_fd(p->c), .events = POLLIN };
            buffered |= qclient_buffered(p->c);
            who[n++] = s;
        }
    }
    for (int r = 0; r < TERM_ONLINE; r++) {
        struct term_peer *p = &ts->rcpts[r];
        if (!p->eof) {
            pf[n] = (struct pollfd){ .fd = qclient_fd(p->c), .events = POLLIN };
            buffered |= qclient_buffered(p->c);
            who[n++] = TERM_SENDERS + r;
        }
    }
    if (n == 0)
        return;
    if (poll(pf, (nfds_t)n, buffered ? 0 : OPS_POLL_MS * 5) < 0 && errno != EINTR)
        H_FAIL("poll: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
        if (who[i] < TERM_SENDERS)
            term_read_sender(ts, who[i]);
        else
            term_read_rcpt(ts, who[i] - TERM_SENDERS);
    }
}

static bool term_all_closed(const struct term_state *ts)
{
    for (int s = 0; s < TERM_SENDERS; s++)
        if (!ts->senders[s].eof)
            return false;
    for (int r = 0; r < TERM_ONLINE; r++)
        if (!ts->rcpts[r].eof)
            return false;
    return true;
}

static void test_sigterm_while_sending_loses_no_acked_chat(void **state)
{
    char timeout_opt[64];
    snprintf(timeout_opt, sizeof timeout_opt, "server.shutdown_timeout=%d", TERM_SHUTDOWN_S);
    char workers_opt[64];
    snprintf(workers_opt, sizeof workers_opt, "server.workers=%d", TERM_WORKERS);
    const char *opts[] = {
        workers_opt,      timeout_opt, "security.request_rate=0", "security.password_cost=1",
        "log.level=info", NULL
    };
    struct term_state *ts = calloc(1, sizeof *ts);
    H_CHECK(ts != NULL, "out of memory");

    ops_make_dir();
    ops_start(NULL, opts, TERM_WORKERS);
    for (int r = 0; r < TERM_RCPTS; r++) {
        if (r < TERM_ONLINE) {
            ts->rcpts[r].c = h_new_user(&ts->rcpts[r].u, "term_rcpt");
        } else {
            h_new_offline_user(&ts->rcpts[r].u, "term_off");
            ts->rcpts[r].eof = true;
        }
    }
    for (int s = 0; s < TERM_SENDERS; s++)
        ts->senders[s].c = h_new_user(&ts->senders[s].u, "term_send");
    pid_t workers[MAX_PIDS];
    int nworkers = server_worker_pids(workers, MAX_PIDS);
    H_CHECK(nworkers == TERM_WORKERS, "expected %d workers, found %d", TERM_WORKERS, nworkers);

    /* Chat until enough were acknowledged, then SIGTERM mid-stream. */
    int64_t deadline = h_now_ms() + TERM_PUMP_MS;
    while (ts->acked < TERM_AFTER_ACKS && h_now_ms() < deadline)
        term_pump(ts, true);
    H_CHECK(ts->acked >= TERM_AFTER_ACKS,
            "only %d chats acknowledged in %d ms before the "
            "SIGTERM",
            ts->acked, TERM_PUMP_MS);
    int sent_before_term = ts->nmsgs;
    pid_t master = h_srv.pid;
    int64_t term_at = h_now_ms();
    H_CHECK(kill(master, SIGTERM) == 0, "kill -TERM %d: %s", (int)master, strerror(errno));

    /* Keep sending until the server has closed every connection and exited. */
    int64_t limit_ms = TERM_SHUTDOWN_S * 1000 + TERM_EXIT_SLACK_MS;
    int64_t exited_at = 0;
    int status = 0;
    while (h_now_ms() - term_at < limit_ms + H_REPLY_MS) {
        if (!exited_at && waitpid(master, &status, WNOHANG) == master) {
            exited_at = h_now_ms();
            h_srv.pid = 0;
            h_srv.exit_status = status;
        }
        if (exited_at && term_all_closed(ts))
            break;
        term_pump(ts, true);
    }
    if (!exited_at) {
        server_stop(); /* SIGKILL after H_STOP_MS; the directory is kept below */
        H_FAIL("SIGTERM: the master did not exit within %lld ms", (long long)limit_ms + H_REPLY_MS);
    }
    int64_t took = exited_at - term_at;
    H_CHECK(term_all_closed(ts), "the master exited but a client connection is still open");
    H_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "SIGTERM: expected exit status 0, got wait status 0x%x", status);
    H_CHECK(took <= limit_ms,
            "SIGTERM: the master took %lld ms to exit, more than "
            "shutdown_timeout (%d s) + %d ms",
            (long long)took, TERM_SHUTDOWN_S, TERM_EXIT_SLACK_MS);
    for (int i = 0; i < nworkers; i++)
        H_CHECK(!process_alive_titled(workers[i], "qchatd"),
                "worker %d is still running after the master exited", (int)workers[i]);

    /* Same database, new server: every recipient collects its offline chats. */
    long from = file_size(h_srv.log_path);
    ops_start(NULL, opts, TERM_WORKERS);
    for (int r = 0; r < TERM_RCPTS; r++) {
        struct json_object *ack = NULL;
        struct qclient *c = h_login(&ts->rcpts[r].u, &ack);
        size_t n = h_arr_len_opt(ack, "offlinemsg");
        for (size_t i = 0; i < n; i++) {
            struct json_object *m = h_parse_item(h_arr(ack, "offlinemsg"), i, "offlinemsg");
            H_CHECK(h_int(m, "msgid") == QC_ONE_CHAT_MSG, "offlinemsg item: %s", h_json(m));
            note_delivery(ts, r, m, false);
            json_object_put(m);
        }
        H_CHECK(!h_has(ack, "offlinedropped"), "offline messages were dropped: %s", h_json(ack));
        json_object_put(ack);
        h_close(c);
    }

    int sent = 0, answered = 0, unanswered = 0, live = 0, offline = 0, lost = 0, twice = 0;
    int late_delivered = 0;
    for (int i = 0; i < ts->nmsgs; i++) {
        struct term_msg *tm = &ts->msgs[i];
        if (!tm->sent)
            continue;
        sent++;
        answered += tm->answered;
        unanswered += !tm->answered;
        live += tm->live > 0;
        offline += tm->offline > 0;
        twice += tm->live + tm->offline > 1;
        late_delivered += !tm->answered && tm->live + tm->offline > 0;
        if (tm->answered && tm->err == QC_OK && tm->live + tm->offline == 0) {
            if (lost++ < 10)
                print_error("lost: chat %d from sender %d (user %d) to recipient %d (user %d, "
                            "%s), ACKed with errno 0, neither received nor stored offline\n",
                            i, tm->sender, ts->senders[tm->sender].u.id, tm->rcpt,
                            ts->rcpts[tm->rcpt].u.id,
                            tm->rcpt < TERM_ONLINE ? "online" : "offline");
        }
    }
    printf("SIGTERM after %d chats: sent %d, answered %d: acked %d, refused %d (other errno: %d, "
           "first %d); unanswered %d, delivered live %d, stored offline %d, delivered twice %d, "
           "unanswered but delivered %d, kick notices %d, lost %d; exit after %lld ms\n",
           sent_before_term, sent, answered, ts->acked, ts->refused, ts->other_errors,
           ts->first_other_err, unanswered, live, offline, twice, late_delivered, ts->kicks, lost,
           (long long)took);
    H_CHECK(lost == 0, "%d acknowledged chat(s) lost across the SIGTERM", lost);
    H_CHECK(twice == 0, "%d chat(s) delivered more than once (live and offline)", twice);
    H_CHECK(log_count_since(from, "ERROR: AddressSanitizer", NULL) == 0 &&
                log_count_since(0, "runtime error:", NULL) == 0,
            "sanitizer report in the log");
    free(ts);
    h_stop_and_check_clean();
}

/*
 * Clients that are logged in and idle (their output is empty) and that do
 * not close their end after the kick notice, as the seed's client does
 * not: the stop must not wait shutdown_timeout for them.
 */
static void test_sigterm_with_idle_clients_is_prompt(void **state)
{
    char timeout_opt[64];
    snprintf(timeout_opt, sizeof timeout_opt, "server.shutdown_timeout=%d", IDLE_SHUTDOWN_S);
    const char *opts[] = { "server.workers=2", timeout_opt, "security.password_cost=1", NULL };
    ops_make_dir();
    ops_start(NULL, opts, OPS_WORKERS);
    struct h_user u[IDLE_CLIENTS];
    struct qclient *c[IDLE_CLIENTS];
    for (int i = 0; i < IDLE_CLIENTS; i++)
        c[i] = h_new_user(&u[i], "idle");
    pid_t workers[MAX_PIDS];
    int nworkers = server_worker_pids(workers, MAX_PIDS);

    pid_t master = h_srv.pid;
    int64_t term_at = h_now_ms(), took = -1;
    int status = 0;
    H_CHECK(kill(master, SIGTERM) == 0, "kill -TERM %d: %s", (int)master, strerror(errno));
    while (h_now_ms() - term_at < H_STOP_MS) {
        if (waitpid(master, &status, WNOHANG) == master) {
            took = h_now_ms() - term_at;
            h_srv.pid = 0;
            h_srv.exit_status = status;
            break;
        }
        h_sleep_ms(OPS_POLL_MS);
    }
    H_CHECK(took >= 0, "SIGTERM: the master did not exit within %d ms", H_STOP_MS);
    for (int i = 0; i < IDLE_CLIENTS; i++) {
        struct json_object *k = h_expect(c[i], QC_KICK_MSG, "an idle client at the stop");
        json_object_put(k);
        h_expect_eof(c[i], "an idle client after the kick notice");
    }
    H_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "SIGTERM: expected exit status 0, got wait status 0x%x", status);
    for (int i = 0; i < nworkers; i++)
        H_CHECK(!process_alive_titled(workers[i], "qchatd"),
                "worker %d is still running after the master exited", (int)workers[i]);
    H_CHECK(took <= IDLE_PROMPT_MS,
            "SIGTERM with %d idle clients and nothing to flush: expected "
            "an exit within %d ms, took %lld ms (shutdown_timeout = %d s): the stop waits for "
            "the clients to close their end",
            IDLE_CLIENTS, IDLE_PROMPT_MS, (long long)took, IDLE_SHUTDOWN_S);
}

/* ---- systemd notifications -------------------------------------------------- */

struct notify_rx {
    int fd;
    char seen[8192]; /* every datagram so far, one per line */
    size_t len;
    pid_t master;
    int foreign; /* datagrams from another pid than the master */
    pid_t foreign_pid;
};

static void notify_read(struct notify_rx *n)
{
    for (;;) {
        char data[1024];
        union {
            struct cmsghdr h;
            char buf[CMSG_SPACE(sizeof(struct ucred))];
        } ctl;
        struct iovec iov = { data, sizeof data - 1 };
        struct msghdr mh = { .msg_iov = &iov,
                             .msg_iovlen = 1,
                             .msg_control = ctl.buf,
                             .msg_controllen = sizeof ctl.buf };
        ssize_t got = recvmsg(n->fd, &mh, MSG_DONTWAIT);
        if (got < 0)
            return;
        data[got] = '\0';
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        if (cm != NULL && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS) {
            struct ucred uc;
            memcpy(&uc, CMSG_DATA(cm), sizeof uc);
            if (n->master > 0 && uc.pid != n->master) {
                n->foreign++;
                n->foreign_pid = uc.pid;
            }
        }
        /* Full: keep the newer half (offsets taken earlier become stale, harmlessly). */
        if ((size_t)got + 2 > sizeof n->seen - n->len) {
            size_t keep = n->len / 2;
            memmove(n->seen, n->seen + n->len - keep, keep + 1);
            n->len = keep;
        }
        n->len += (size_t)snprintf(n->seen + n->len, sizeof n->seen - n->len, "%s\n", data);
    }
}

struct notify_wait {
    struct notify_rx *n;
    const char *text;
    size_t from;
};

static bool notify_seen(void *arg)
{
    struct notify_wait *w = arg;
    notify_read(w->n);
    return w->n->len > w->from && strstr(w->n->seen + w->from, w->text) != NULL;
}

/* Wait for a datagram containing text, received after offset from. */
static bool notify_wait(struct notify_rx *n, const char *text, size_t from, int ms)
{
    struct notify_wait w = { n, text, from };
    return h_wait_for(notify_seen, &w, ms);
}

static void test_sd_notify_ready_status_reloading_stopping(void **state)
{
    struct notify_rx *n = calloc(1, sizeof *n);
    H_CHECK(n != NULL, "out of memory");
    ops_make_dir();
    ops_path(notify_path, sizeof notify_path, "notify.sock");
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    H_CHECK(strlen(notify_path) < sizeof sa.sun_path, "socket path too long");
    strcpy(sa.sun_path, notify_path);
    int one = 1;
    H_CHECK(n->fd >= 0 && bind(n->fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
                setsockopt(n->fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) == 0,
            "notify socket %s: %s", notify_path, strerror(errno));

    const char *opts[] = { "server.workers=2", "security.password_cost=1", NULL };
    ops_start(NULL, opts, OPS_WORKERS);
    n->master = h_srv.pid;
    char want[64];
    snprintf(want, sizeof want, "MAINPID=%d", (int)h_srv.pid);
    H_CHECK(notify_wait(n, "READY=1", 0, H_REPLY_MS), "no READY=1 on $NOTIFY_SOCKET; got:\n%s",
            n->seen);
    H_CHECK(strstr(n->seen, want) != NULL, "READY=1 without %s; got:\n%s", want, n->seen);
    /* Opening the store (migrations) may outlast TimeoutStartSec: more time is asked first. */
    const char *extend = strstr(n->seen, "EXTEND_TIMEOUT_USEC=");
    H_CHECK(extend != NULL && extend < strstr(n->seen, "READY=1"),
            "no EXTEND_TIMEOUT_USEC= before READY=1; got:\n%s", n->seen);
    H_CHECK(notify_wait(n, "WATCHDOG=1", 0, H_REPLY_MS), "no WATCHDOG=1 ping; got:\n%s", n->seen);

    struct h_user u;
    struct qclient *c = h_new_user(&u, "notify");
    size_t from = n->len;
    H_CHECK(notify_wait(n, "STATUS=1 online", from, H_REPLY_MS),
            "one user online: expected a STATUS= with \"1 online\"; got:\n%s", n->seen + from);

    from = n->len;
    H_CHECK(kill(h_srv.pid, SIGHUP) == 0, "kill -HUP: %s", strerror(errno));
    H_CHECK(notify_wait(n, "RELOADING=1", from, H_REPLY_MS), "SIGHUP: no RELOADING=1; got:\n%s",
            n->seen + from);
    const char *reloading = strstr(n->seen + from, "RELOADING=1");
    size_t after = (size_t)(reloading - n->seen);
    H_CHECK(notify_wait(n, "READY=1", after, H_REPLY_MS),
            "SIGHUP: no READY=1 after RELOADING=1; got:\n%s", n->seen + from);
    h_expect_quiet(c, "a client across the reload");

    from = n->len;
    h_stop_and_check_clean();
    notify_read(n);
    H_CHECK(strstr(n->seen + from, "STOPPING=1") != NULL, "SIGTERM: no STOPPING=1; got:\n%s",
            n->seen + from);
    H_CHECK(n->foreign == 0,
            "%d notification(s) came from pid %d, not the master %d "
            "(NotifyAccess=main drops them)",
            n->foreign, (int)n->foreign_pid, (int)n->master);
    close(n->fd);
    free(n);
}

/* ---- log file: USR1 reopens it, a reload moves it ---------------------------- */

static void test_log_file_reopened_on_usr1_and_moved_by_reload(void **state)
{
    char conf[PATH_MAX], logfile[PATH_MAX], rotated[PATH_MAX + 8], moved[PATH_MAX];
    char text[PATH_MAX * 2 + 256], id_text[32];
    ops_make_dir();
    ops_path(conf, sizeof conf, "qchatd.conf");
    ops_path(logfile, sizeof logfile, "file.log");
    ops_path(moved, sizeof moved, "moved.log");
    snprintf(rotated, sizeof rotated, "%s.1", logfile);
    snprintf(text, sizeof text,
             "[server]\nworkers = %d\n[log]\ntarget = file\nfile = %s\n"
             "[security]\npassword_cost = 1\n",
             OPS_WORKERS, logfile);
    write_file(conf, text);
    ops_start(conf, NULL, OPS_WORKERS);
    struct h_user a, b, c;
    h_new_user(&a, "usr1_a");
    char *before = read_file(logfile);
    bool logged = strstr(before, "registered") != NULL;
    free(before);
    H_CHECK(logged, "log.target = file: nothing about the registration in %s", logfile);

    /* Rotate: rename, USR1; the master and the workers write to a new file. */
    H_CHECK(rename(logfile, rotated) == 0, "rename %s: %s", logfile, strerror(errno));
    H_CHECK(kill(h_srv.pid, SIGUSR1) == 0, "kill -USR1: %s", strerror(errno));
    h_sleep_ms(OPS_POLL_MS * 20);
    struct qclient *cb = h_new_user(&b, "usr1_b"); /* a worker logs */
    snprintf(id_text, sizeof id_text, "user %d", b.id);
    snprintf(text, sizeof text, "{\"cmd\":\"kick\",\"id\":%d}", b.id);
    json_object_put(h_ctl(text)); /* the master logs */
    json_object_put(h_expect(cb, QC_KICK_MSG, "the kicked user"));
    char kicked[64];
    snprintf(kicked, sizeof kicked, "kicked user %d", b.id);
    int64_t deadline = h_now_ms() + LOG_WAIT_MS;
    bool worker_line = false, master_line = false;
    while (!(worker_line && master_line) && h_now_ms() < deadline) {
        char *now = read_file(logfile);
        worker_line = strstr(now, id_text) != NULL && strstr(now, " worker ") != NULL;
        master_line = strstr(now, kicked) != NULL;
        free(now);
        if (!(worker_line && master_line))
            h_sleep_ms(OPS_POLL_MS);
    }
    char *old = read_file(rotated);
    bool old_has_new = strstr(old, kicked) != NULL || strstr(old, id_text) != NULL;
    free(old);
    H_CHECK(worker_line, "after USR1: no worker line about %s in the new %s", id_text, logfile);
    H_CHECK(master_line, "after USR1: the master's \"%s\" is not in the new %s", kicked, logfile);
    H_CHECK(!old_has_new, "after USR1: new lines still go to the rotated %s", rotated);

    /* log.file is a live key: a reload moves the log (or says it needs a restart). */
    snprintf(text, sizeof text,
             "[server]\nworkers = %d\n[log]\ntarget = file\nfile = %s\n"
             "[security]\npassword_cost = 1\n",
             OPS_WORKERS, moved);
    write_file(conf, text);
    long from = file_size(logfile);
    H_CHECK(kill(h_srv.pid, SIGHUP) == 0, "kill -HUP: %s", strerror(errno));
    h_sleep_ms(OPS_POLL_MS * 50);
    h_new_user(&c, "usr1_c");
    snprintf(id_text, sizeof id_text, "user %d registered", c.id);
    deadline = h_now_ms() + LOG_WAIT_MS;
    bool in_moved = false;
    while (!in_moved && h_now_ms() < deadline) {
        char *now = read_file(moved);
        in_moved = strstr(now, id_text) != NULL;
        free(now);
        if (!in_moved)
            h_sleep_ms(OPS_POLL_MS);
    }
    char *old_log = read_file(logfile);
    bool restart_said =
        strstr(old_log + ((size_t)from <= strlen(old_log) ? (size_t)from : 0), "log.file") != NULL;
    free(old_log);
    H_CHECK(in_moved || restart_said,
            "log.file changed to %s and SIGHUP: expected the log to "
            "move there (log.file is documented as live) or a line naming log.file as needing "
            "a restart; \"%s\" is still written to %s",
            moved, id_text, logfile);
    h_stop_and_check_clean();
}

/* ---- qchatctl ------------------------------------------------------------- */

/* Lines "INDEX PID ..." of the human status table; pids in out. */
static int status_table_pids(const char *text, pid_t *out, int max)
{
    const char *line = strstr(text, "\nindex");
    int n = 0;
    if (line == NULL)
        return -1;
    line = strchr(line + 1, '\n');
    while (line != NULL && n < max) {
        int index, pid;
        if (sscanf(line + 1, "%d %d", &index, &pid) != 2)
            break;
        out[n++] = pid;
        line = strchr(line + 1, '\n');
    }
    return n;
}

/* "key: value" line of the human status. */
static bool status_value(const char *text, const char *key, long long *v)
{
    size_t klen = strlen(key);
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':')
            return sscanf(line + klen + 1, " %lld", v) == 1;
        line = strchr(line, '\n');
        if (line != NULL)
            line++;
    }
    return false;
}

/* "ID WORKER" rows of the human users table: worker of id, -1 if absent. */
static int users_table_worker(const char *text, int32_t id)
{
    const char *line = text;
    while (line != NULL && *line != '\0') {
        long long uid;
        int w;
        if (sscanf(line, "%lld %d", &uid, &w) == 2 && uid == id)
            return w;
        line = strchr(line, '\n');
        if (line != NULL)
            line++;
    }
    return -1;
}

static void test_qchatctl_status_users_kick(void **state)
{
    char workers_opt[64];
    snprintf(workers_opt, sizeof workers_opt, "server.workers=%d", CTL_WORKERS);
    const char *opts[] = { workers_opt, "security.password_cost=1", NULL };
    struct prog *p = malloc(sizeof *p);
    H_CHECK(p != NULL, "out of memory");
    char id_text[32], other[32];

    ops_make_dir();
    ops_start(NULL, opts, CTL_WORKERS);
    struct h_user u[CTL_USERS];
    struct qclient *c[CTL_USERS];
    for (int i = 0; i < CTL_USERS; i++)
        c[i] = h_new_user(&u[i], "ctl");
    pid_t workers[MAX_PIDS];
    int nworkers = server_worker_pids(workers, MAX_PIDS);
    H_CHECK(nworkers == CTL_WORKERS, "expected %d workers, found %d", CTL_WORKERS, nworkers);

    /* status, for people */
    int rc = run_ctl(p, "status", NULL, NULL);
    H_CHECK(rc == CTL_EXIT_OK, "qchatctl status: expected exit 0, got %d (stderr \"%.300s\")", rc,
            p->err);
    long long v;
    H_CHECK(status_value(p->out, "online", &v) && v == CTL_USERS,
            "qchatctl status: expected \"online: %d\", got:\n%s", CTL_USERS, p->out);
    H_CHECK(status_value(p->out, "pid", &v) && v == h_srv.pid,
            "qchatctl status: expected \"pid: %d\" (the master), got:\n%s", (int)h_srv.pid, p->out);
    pid_t shown[MAX_PIDS];
    int nshown = status_table_pids(p->out, shown, MAX_PIDS);
    H_CHECK(nshown == nworkers, "qchatctl status: expected a table of %d workers, got %d rows:\n%s",
            nworkers, nshown, p->out);
    for (int i = 0; i < nshown; i++)
        H_CHECK(pid_in(shown[i], workers, nworkers),
                "qchatctl status shows worker pid %d, "
                "which is not a running worker:\n%s",
                (int)shown[i], p->out);
    H_CHECK(p->err[0] == '\0', "qchatctl status wrote to stderr: %s", p->err);

    /* status --json */
    rc = run_ctl(p, "--json", "status", NULL);
    H_CHECK(rc == CTL_EXIT_OK, "qchatctl --json status: expected exit 0, got %d", rc);
    struct json_object *st = parse_json_output(p, "qchatctl --json status");
    H_CHECK(h_has(st, "ok") && json_object_get_boolean(json_object_object_get(st, "ok")),
            "status: expected \"ok\":true, got %s", h_json(st));
    H_CHECK(h_int(st, "pid") == h_srv.pid && h_int(st, "online") == CTL_USERS,
            "status: expected pid %d and online %d, got %s", (int)h_srv.pid, CTL_USERS, h_json(st));
    H_CHECK(h_has(st, "uptime") && h_int(st, "uptime") >= 0, "status: no uptime in %s", h_json(st));
    struct json_object *store = json_object_object_get(st, "store");
    H_CHECK(store != NULL && strcmp(h_str(store, "driver"), "sqlite") == 0 &&
                strcmp(h_str(store, "state"), "ok") == 0,
            "status: expected store {driver: sqlite, state: ok}, got %s", h_json(st));
    struct json_object *relay = json_object_object_get(st, "relay");
    H_CHECK(relay != NULL && strcmp(h_str(relay, "state"), "disabled") == 0,
            "status: no Redis configured: expected relay state \"disabled\", got %s", h_json(st));
    struct json_object *wa = h_arr(st, "workers");
    H_CHECK((int)json_object_array_length(wa) == nworkers, "status: expected %d workers in %s",
            nworkers, h_json(st));
    int64_t sessions = 0;
    for (size_t i = 0; i < json_object_array_length(wa); i++) {
        struct json_object *w = json_object_array_get_idx(wa, i);
        H_CHECK(h_int(w, "index") == (int64_t)i, "status: worker %zu has index %lld", i,
                (long long)h_int(w, "index"));
        pid_t wp = (pid_t)h_int(w, "pid");
        H_CHECK(pid_in(wp, workers, nworkers) && server_worker_pid((int)i) == wp,
                "status: worker %zu has pid %d, but the process titled \"qchatd: worker %zu\" "
                "is %d",
                i, (int)wp, i, (int)server_worker_pid((int)i));
        H_CHECK(h_int(w, "connections") >= h_int(w, "sessions") && h_int(w, "restarts") == 0 &&
                    h_int(w, "msgs_in") >= 0 && h_int(w, "msgs_out") >= 0,
                "status: worker %zu: implausible counters %s", i, h_json(w));
        sessions += h_int(w, "sessions");
    }
    H_CHECK(sessions == CTL_USERS, "status: sessions add up to %lld, expected %d",
            (long long)sessions, CTL_USERS);
    json_object_put(st);

    /* users, for people and as JSON */
    rc = run_ctl(p, "users", NULL, NULL);
    H_CHECK(rc == CTL_EXIT_OK, "qchatctl users: expected exit 0, got %d", rc);
    for (int i = 0; i < CTL_USERS; i++) {
        int w = users_table_worker(p->out, u[i].id);
        H_CHECK(w >= 0 && w == h_worker_of(u[i].id),
                "qchatctl users: expected user %d on "
                "worker %d, got:\n%s",
                u[i].id, h_worker_of(u[i].id), p->out);
    }
    char online_line[64];
    snprintf(online_line, sizeof online_line, "%d users online", CTL_USERS);
    H_CHECK(strstr(p->out, online_line) != NULL, "qchatctl users: expected \"%s\", got:\n%s",
            online_line, p->out);
    rc = run_ctl(p, "--json", "users", NULL);
    H_CHECK(rc == CTL_EXIT_OK, "qchatctl --json users: expected exit 0, got %d", rc);
    struct json_object *us = parse_json_output(p, "qchatctl --json users");
    struct json_object *ua = h_arr(us, "users");
    H_CHECK(json_object_array_length(ua) == CTL_USERS, "users: expected %d users, got %s",
            CTL_USERS, h_json(us));
    for (size_t i = 0; i < json_object_array_length(ua); i++) {
        struct json_object *e = json_object_array_get_idx(ua, i);
        int32_t id = (int32_t)h_int(e, "id");
        bool known = false;
        for (int k = 0; k < CTL_USERS; k++)
            known |= u[k].id == id;
        H_CHECK(known, "users: %d is not one of ours: %s", id, h_json(us));
        H_CHECK(h_int(e, "worker") >= 0 && h_int(e, "worker") < nworkers,
                "users: bad worker index in %s", h_json(e));
    }
    json_object_put(us);

    /* $QCHATCTL_SOCKET instead of -s */
    char ctl[PATH_MAX];
    bin_path(ctl, sizeof ctl, "qchatctl");
    const char *env_argv[] = { ctl, "status", NULL };
    rc = run_prog(p, h_srv.ctl_path, env_argv);
    H_CHECK(rc == CTL_EXIT_OK && strstr(p->out, "online") != NULL,
            "QCHATCTL_SOCKET=%s qchatctl status: expected exit 0, got %d", h_srv.ctl_path, rc);

    /* kick: a notice, then the connection closes; the user is no longer listed */
    snprintf(id_text, sizeof id_text, "%d", u[0].id);
    rc = run_ctl(p, "kick", id_text, NULL);
    H_CHECK(rc == CTL_EXIT_OK, "qchatctl kick %s: expected exit 0, got %d (stderr \"%.300s\")",
            id_text, rc, p->err);
    struct json_object *k = h_expect(c[0], QC_KICK_MSG, "the kicked user's connection");
    H_CHECK(h_has(k, "reason"), "kick notice without a reason: %s", h_json(k));
    json_object_put(k);
    h_expect_eof(c[0], "the kicked user's connection after the notice");
    H_CHECK(h_wait_online(u[0].id, false, H_REPLY_MS), "user %d still online after the kick",
            u[0].id);
    rc = run_ctl(p, "users", NULL, NULL);
    H_CHECK(rc == CTL_EXIT_OK && users_table_worker(p->out, u[0].id) < 0 &&
                users_table_worker(p->out, u[1].id) >= 0,
            "qchatctl users after kicking %d: expected it gone and %d listed, got:\n%s", u[0].id,
            u[1].id, p->out);
    h_expect_quiet(c[1], "another user, after the kick");

    /* kick errors: not online (server error, 1); not a user id (usage, 2) */
    rc = run_ctl(p, "kick", id_text, NULL);
    H_CHECK(rc == CTL_EXIT_SERVER && strstr(p->err, "not online") != NULL,
            "qchatctl kick %s again: expected exit 1 and \"not online\", got %d \"%.300s\"",
            id_text, rc, p->err);
    snprintf(other, sizeof other, "%d", NO_SUCH_USER);
    rc = run_ctl(p, "kick", other, NULL);
    H_CHECK(rc == CTL_EXIT_SERVER, "qchatctl kick %s (no such user): expected exit 1, got %d",
            other, rc);
    rc = run_ctl(p, "--json", "kick", other);
    H_CHECK(rc == CTL_EXIT_SERVER, "qchatctl --json kick %s: expected exit 1, got %d", other, rc);
    struct json_object *ke = parse_json_output(p, "qchatctl --json kick (not online)");
    H_CHECK(h_has(ke, "ok") && !json_object_get_boolean(json_object_object_get(ke, "ok")) &&
                h_has(ke, "error"),
            "kick of a user not online: expected {ok:false, error}, got %s", h_json(ke));
    json_object_put(ke);
    static const char *const bad_ids[] = { "abc", "0", "-5", "12x", "99999999999" };
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
        rc = run_ctl(p, "kick", bad_ids[i], NULL);
        H_CHECK(rc == CTL_EXIT_USAGE, "qchatctl kick %s: expected exit 2, got %d", bad_ids[i], rc);
    }
    rc = run_ctl(p, "kick", NULL, NULL);
    H_CHECK(rc == CTL_EXIT_USAGE, "qchatctl kick (no id): expected exit 2, got %d", rc);
    rc = run_ctl(p, "frobnicate", NULL, NULL);
    H_CHECK(rc == CTL_EXIT_USAGE, "qchatctl frobnicate: expected exit 2, got %d", rc);
    rc = run_ctl(p, "status", "extra", NULL);
    H_CHECK(rc == CTL_EXIT_USAGE, "qchatctl status extra: expected exit 2, got %d", rc);
    rc = run_ctl(p, NULL, NULL, NULL);
    H_CHECK(rc == CTL_EXIT_USAGE, "qchatctl (no command): expected exit 2, got %d", rc);

    /* cannot connect: 2 */
    char missing[PATH_MAX];
    ops_path(missing, sizeof missing, "no-such.sock");
    const char *miss_argv[] = { ctl, "-s", missing, "status", NULL };
    rc = run_prog(p, NULL, miss_argv);
    H_CHECK(rc == CTL_EXIT_USAGE && p->err[0] != '\0',
            "qchatctl -s %s status: expected exit 2 and a message, got %d", missing, rc);

    /* reload: no -c file (the default is absent): ok, nothing changes */
    rc = run_ctl(p, "reload", NULL, NULL);
    H_CHECK(rc == CTL_EXIT_OK, "qchatctl reload: expected exit 0, got %d (stderr \"%.300s\")", rc,
            p->err);
    rc = run_ctl(p, "--json", "reload", NULL);
    H_CHECK(rc == CTL_EXIT_OK, "qchatctl --json reload: expected exit 0, got %d", rc);
    struct json_object *rl = parse_json_output(p, "qchatctl --json reload");
    H_CHECK(json_object_get_boolean(json_object_object_get(rl, "ok")),
            "reload: expected {\"ok\":true}, got %s", h_json(rl));
    json_object_put(rl);
    h_expect_quiet(c[1], "a user, after two reloads");
    H_CHECK(server_worker_pids(workers, MAX_PIDS) == CTL_WORKERS, "workers after the reloads");

    free(p);
    h_stop_and_check_clean();
}

/* ---- issue 17: readiness, watchdog, titles, startup errors ------------------ */

#define WATCHDOG_TEST_USEC "2000000" /* heartbeats count as stale after 1 s */
#define STALE_WAIT_MS      1500      /* past the staleness limit */
#define NO_PING_MS         1500      /* then no WATCHDOG=1 for this long */
#define EX_CONFIG_STATUS   78

static struct notify_rx *notify_open(void)
{
    struct notify_rx *n = calloc(1, sizeof *n);
    H_CHECK(n != NULL, "out of memory");
    ops_path(notify_path, sizeof notify_path, "notify.sock");
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    H_CHECK(strlen(notify_path) < sizeof sa.sun_path, "socket path too long");
    strcpy(sa.sun_path, notify_path);
    H_CHECK(n->fd >= 0 && bind(n->fd, (struct sockaddr *)&sa, sizeof sa) == 0,
            "notify socket %s: %s", notify_path, strerror(errno));
    return n;
}

static void test_watchdog_follows_every_worker_heartbeat(void **state)
{
    ops_make_dir();
    struct notify_rx *n = notify_open();
    snprintf(watchdog_usec, sizeof watchdog_usec, "%s", WATCHDOG_TEST_USEC);
    const char *opts[] = { "server.workers=2", NULL };
    ops_start(NULL, opts, OPS_WORKERS);
    H_CHECK(notify_wait(n, "READY=1", 0, H_REPLY_MS), "no READY=1; got:\n%s", n->seen);
    /* READY=1 follows every worker's start, as the log shows. */
    char *log = read_file(h_srv.log_path);
    const char *ready = log ? strstr(log, "ready: 2 worker(s)") : NULL;
    H_CHECK(ready != NULL, "no \"ready\" line in the log:\n%s", log ? log : "");
    int started_before = 0;
    for (const char *p = log; (p = strstr(p, "info: started (pid")) != NULL && p < ready; p++)
        started_before++;
    H_CHECK(started_before == 2, "READY came after %d of 2 workers started:\n%s", started_before,
            log);
    free(log);
    H_CHECK(notify_wait(n, "WATCHDOG=1", 0, H_REPLY_MS), "no WATCHDOG=1; got:\n%s", n->seen);

    pid_t workers[MAX_PIDS];
    H_CHECK(server_worker_pids(workers, MAX_PIDS) == 2, "expected 2 workers");
    H_CHECK(kill(workers[0], SIGSTOP) == 0, "SIGSTOP: %s", strerror(errno));
    h_sleep_ms(STALE_WAIT_MS);
    notify_read(n);
    size_t from = n->len;
    h_sleep_ms(NO_PING_MS);
    notify_read(n);
    bool pinged = strstr(n->seen + from, "WATCHDOG=1") != NULL;
    bool named = strstr(n->seen + from, "not responding") != NULL;
    kill(workers[0], SIGCONT);
    H_CHECK(!pinged, "a worker is stopped, yet the master kept sending WATCHDOG=1:\n%s",
            n->seen + from);
    H_CHECK(named, "STATUS= does not name the stopped worker:\n%s", n->seen + from);
    from = n->len;
    H_CHECK(notify_wait(n, "WATCHDOG=1", from, H_REPLY_MS), "no WATCHDOG=1 after SIGCONT:\n%s",
            n->seen + from);
    h_stop_and_check_clean();
    close(n->fd);
    free(n);
}

/* /proc/PID/cmdline is exactly title (a trailing NUL allowed). */
static void check_title(pid_t pid, const char *title)
{
    char path[64], got[512];
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    H_CHECK(fd >= 0, "%s: %s", path, strerror(errno));
    ssize_t n = read(fd, got, sizeof got - 1);
    close(fd);
    H_CHECK(n > 0, "%s: empty", path);
    if (got[n - 1] == '\0')
        n--;
    got[n] = '\0';
    for (ssize_t i = 0; i < n; i++)
        if (got[i] == '\0')
            got[i] = '|'; /* show where the NULs are */
    H_CHECK(strcmp(got, title) == 0, "process %d: title \"%s\", expected \"%s\"", (int)pid, got,
            title);
}

static void test_process_titles_are_exact(void **state)
{
    ops_make_dir();
    const char *opts[] = { "server.workers=2", NULL };
    ops_start(NULL, opts, OPS_WORKERS);
    check_title(h_srv.pid, "qchatd: master");
    pid_t workers[MAX_PIDS];
    H_CHECK(server_worker_pids(workers, MAX_PIDS) == 2, "expected 2 workers");
    char want[32];
    int seen = 0;
    for (int w = 0; w < 2; w++) {
        for (int i = 0; i < 2; i++) {
            snprintf(want, sizeof want, "qchatd: worker %d", i);
            char path[64], got[64] = "";
            snprintf(path, sizeof path, "/proc/%d/cmdline", (int)workers[w]);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd >= 0) {
                ssize_t n = read(fd, got, sizeof got - 1);
                got[n > 0 ? n : 0] = '\0';
                close(fd);
            }
            if (strcmp(got, want) == 0) {
                check_title(workers[w], want);
                seen++;
            }
        }
    }
    H_CHECK(seen == 2, "expected the titles \"qchatd: worker 0\" and \"qchatd: worker 1\"");
    h_stop_and_check_clean();
}

/*
 * Run qchatd through sh with JOURNAL_STREAM naming its stderr, as systemd
 * does; prefix is put before the command (e.g. setpriv).  Returns the exit
 * status; p->err holds what it logged.
 */
static int run_qchatd_journal(struct prog *p, const char *prefix, const char *args)
{
    char bin[PATH_MAX], cmd[4 * PATH_MAX];
    bin_path(bin, sizeof bin, "qchatd");
    snprintf(cmd, sizeof cmd,
             "JOURNAL_STREAM=$(stat -L -c %%d:%%i /proc/self/fd/2) exec %s %s -f -o "
             "server.listen=" H_HOST ":%d %s",
             prefix, bin, h_free_port(), args);
    const char *argv[] = { "/bin/sh", "-c", cmd, NULL };
    return run_prog(p, NULL, argv);
}

static void test_startup_errors_reach_the_journal_as_errors(void **state)
{
    struct prog *p = calloc(1, sizeof *p);
    H_CHECK(p != NULL, "out of memory");
    ops_make_dir();
    char conf[PATH_MAX], args[4 * PATH_MAX];

    /* A broken file: exit 78, at priority err (<3>), naming FILE:LINE. */
    ops_path(conf, sizeof conf, "broken.conf");
    write_file(conf, "[server]\nworkers = 1\nbogus = 1\n");
    snprintf(args, sizeof args, "-c %s -o server.control_socket=%s -o storage.path=%s", conf,
             h_srv.ctl_path, h_srv.db_path);
    int rc = run_qchatd_journal(p, "", args);
    H_CHECK(rc == EX_CONFIG_STATUS, "unknown key: expected exit 78, got %d; stderr:\n%s", rc,
            p->err);
    H_CHECK(strncmp(p->err, "<3>", 3) == 0 && strstr(p->err, "broken.conf:3") != NULL,
            "unknown key: expected a \"<3>\" (err) journal line naming broken.conf:3, got:\n%s",
            p->err);

    /* A control socket whose directory cannot be created: one line naming the key. */
    snprintf(args, sizeof args,
             "-o server.control_socket=%s/no/such/dir/ctl.sock -o storage.path=%s", h_srv.dir,
             h_srv.db_path);
    rc = run_qchatd_journal(p, "", args);
    H_CHECK(rc == EX_CONFIG_STATUS && strstr(p->err, "<3>") != NULL &&
                strstr(p->err, "server.control_socket") != NULL,
            "uncreatable control socket directory: expected exit 78 and an err line naming "
            "server.control_socket, got %d:\n%s",
            rc, p->err);

    /* A database the service user cannot write (root's, 0644): refused, exit 78. */
    H_CHECK(chmod(h_srv.dir, 0755) == 0, "chmod: %s", strerror(errno));
    write_file(h_srv.db_path, "");
    H_CHECK(chmod(h_srv.db_path, 0644) == 0, "chmod: %s", strerror(errno));
    if (geteuid() == 0 && access("/usr/bin/setpriv", X_OK) == 0) {
        char ctl[PATH_MAX];
        ops_path(ctl, sizeof ctl, "nobody.sock");
        snprintf(args, sizeof args, "-o server.control_socket=%s -o storage.path=%s", ctl,
                 h_srv.db_path);
        rc = run_qchatd_journal(p, "/usr/bin/setpriv --reuid=nobody --regid=nogroup --clear-groups",
                                args);
        H_CHECK(rc == EX_CONFIG_STATUS && strstr(p->err, "<3>") != NULL &&
                    strstr(p->err, "not writable") != NULL,
                "a root-owned 0644 database run as nobody: expected exit 78 and an err line "
                "saying it is not writable, got %d:\n%s",
                rc, p->err);
    } else {
        fprintf(stderr, "test_ops: not root or no setpriv: the unwritable-database case "
                        "was not run\n");
    }
    unlink(h_srv.db_path);

    /* A control socket directory that is missing but can be made: made, and it serves. */
    snprintf(h_srv.ctl_path, sizeof h_srv.ctl_path, "%s/run/ctl.sock", h_srv.dir);
    const char *opts[] = { "server.workers=1", NULL };
    ops_start(NULL, opts, 1);
    h_stop_and_check_clean();
    free(p);
}

/* ---- -d: daemon with a pidfile --------------------------------------------- */

/* ---- a slow control client does not hold the master ---------------------- */

#define SLOW_WORKERS     2
#define SLOW_DRIP_MS     200  /* one byte this often: each read succeeds, none finishes */
#define SLOW_RESPAWN_MS  3000 /* a killed worker is back within this */
#define SLOW_CLOSED_MS   3000 /* the master closes the slow client within this */
#define SLOW_PROBE_BYTES 1

static int connect_ctl(void)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    H_CHECK(strlen(h_srv.ctl_path) < sizeof sa.sun_path, "socket path too long: %s",
            h_srv.ctl_path);
    memcpy(sa.sun_path, h_srv.ctl_path, strlen(h_srv.ctl_path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    H_CHECK(fd >= 0, "socket: %s", strerror(errno));
    H_CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect %s: %s", h_srv.ctl_path,
            strerror(errno));
    return fd;
}

/* The master closed fd: a read sees EOF (after any error line) or a reset. */
static bool ctl_closed_by_master(int fd)
{
    char buf[256];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            return true;
        if (n < 0)
            return false;
    }
}

/* A worker other than the killed one, new since the kill. */
static bool replacement_running(pid_t killed, const pid_t *before, int nbefore)
{
    pid_t now[MAX_PIDS];
    int n = server_worker_pids(now, MAX_PIDS);
    for (int i = 0; i < n; i++)
        if (now[i] != killed && !pid_in(now[i], before, nbefore))
            return true;
    return false;
}

/*
 * Issue 14 item 6: the master served the control socket with blocking reads
 * (1 s each, up to 4096 of them), so a client sending one byte now and then
 * held it: a killed worker stayed a zombie.  Now: non-blocking, with a
 * deadline per request.
 */
static void test_slow_control_client_does_not_block_the_master(void **state)
{
    char workers_opt[64];
    snprintf(workers_opt, sizeof workers_opt, "server.workers=%d", SLOW_WORKERS);
    const char *opts[] = { workers_opt, NULL };
    ops_make_dir();
    ops_start(NULL, opts, SLOW_WORKERS);
    pid_t before[MAX_PIDS];
    int nbefore = server_worker_pids(before, MAX_PIDS);
    H_CHECK(nbefore == SLOW_WORKERS, "expected %d workers, found %d", SLOW_WORKERS, nbefore);

    int fd = connect_ctl();
    H_CHECK(send(fd, "{\"cmd\":", 7, MSG_NOSIGNAL) == 7, "send: %s", strerror(errno));
    h_sleep_ms(SLOW_DRIP_MS); /* the master has started on this request */
    int64_t killed_at = h_now_ms();
    H_CHECK(kill(before[0], SIGKILL) == 0, "kill worker %d: %s", (int)before[0], strerror(errno));

    bool respawned = false, closed = false;
    int64_t respawn_ms = -1, closed_ms = -1;
    while (h_now_ms() - killed_at < SLOW_RESPAWN_MS + SLOW_CLOSED_MS && !(respawned && closed)) {
        if (!closed &&
            (send(fd, " ", SLOW_PROBE_BYTES, MSG_NOSIGNAL) < 0 || ctl_closed_by_master(fd))) {
            closed = true;
            closed_ms = h_now_ms() - killed_at;
        }
        if (!respawned && replacement_running(before[0], before, nbefore)) {
            respawned = true;
            respawn_ms = h_now_ms() - killed_at;
        }
        h_sleep_ms(SLOW_DRIP_MS);
    }
    close(fd);
    printf("slow control client: worker respawned after %lld ms, client closed after %lld ms\n",
           (long long)respawn_ms, (long long)closed_ms);
    H_CHECK(respawned && respawn_ms <= SLOW_RESPAWN_MS,
            "a worker killed while a control client dripped bytes was not respawned within %d ms",
            SLOW_RESPAWN_MS);
    H_CHECK(closed && closed_ms <= SLOW_CLOSED_MS,
            "the master did not close a control client that never finished its request within %d "
            "ms",
            SLOW_CLOSED_MS);
    H_CHECK(!process_alive_titled(before[0], "qchatd"), "the killed worker %d was not reaped",
            (int)before[0]);

    /* Everyone else is still served. */
    struct prog *p = malloc(sizeof *p);
    H_CHECK(p != NULL, "out of memory");
    int rc = run_ctl(p, "status", NULL, NULL);
    H_CHECK(rc == CTL_EXIT_OK, "qchatctl status after the slow client: exit %d (%.300s)", rc,
            p->err);
    free(p);
}

static pid_t read_pidfile(const char *path)
{
    char *text = read_file(path);
    long pid = 0;
    char *end = NULL;
    pid = strtol(text, &end, 10);
    bool ok = end != text && (*end == '\0' || *end == '\n');
    free(text);
    return ok && pid > 0 ? (pid_t)pid : 0;
}

struct pidfile_wait {
    const char *path;
};

static bool pidfile_written(void *arg)
{
    struct pidfile_wait *w = arg;
    return read_pidfile(w->path) > 0;
}

static bool daemon_serves(void *arg)
{
    pid_t pids[MAX_PIDS];
    return h_port_accepting(h_srv.port) && access(h_srv.ctl_path, F_OK) == 0 &&
           h_child_pids(daemon_pid, "qchatd: worker", pids, MAX_PIDS) == OPS_WORKERS;
}

static bool daemon_stopped(void *arg)
{
    return daemon_gone();
}

static void test_daemon_with_pidfile(void **state)
{
    char bin[PATH_MAX], pidfile[PATH_MAX], listen[64], ctl[PATH_MAX + 32], db[PATH_MAX + 32];
    char pidopt[PATH_MAX + 32], logfile[PATH_MAX + 32], workers_opt[64];
    struct prog *p = malloc(sizeof *p);
    H_CHECK(p != NULL, "out of memory");

    ops_make_dir();
    h_srv.port = h_free_port();
    h_srv.workers = OPS_WORKERS;
    bin_path(bin, sizeof bin, "qchatd");
    ops_path(pidfile, sizeof pidfile, "q.pid");
    snprintf(listen, sizeof listen, "server.listen=" H_HOST ":%d", h_srv.port);
    snprintf(ctl, sizeof ctl, "server.control_socket=%s", h_srv.ctl_path);
    snprintf(db, sizeof db, "storage.path=%s", h_srv.db_path);
    snprintf(pidopt, sizeof pidopt, "server.pidfile=%s", pidfile);
    snprintf(logfile, sizeof logfile, "log.file=%s", h_srv.log_path);
    snprintf(workers_opt, sizeof workers_opt, "server.workers=%d", OPS_WORKERS);
    const char *argv[] = { bin,  "-d",
                           "-o", listen,
                           "-o", ctl,
                           "-o", db,
                           "-o", pidopt,
                           "-o", workers_opt,
                           "-o", "log.target=file",
                           "-o", logfile,
                           "-o", "security.password_cost=1",
                           NULL };

    /* The daemon becomes our child when its parent exits: we can reap it. */
    H_CHECK(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0, "PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
    int rc = run_prog(p, NULL, argv);
    H_CHECK(rc == 0, "qchatd -d: expected the command to return 0, got %d (stderr \"%.300s\")", rc,
            p->err);
    struct pidfile_wait pw = { pidfile };
    H_CHECK(h_wait_for(pidfile_written, &pw, H_START_MS), "qchatd -d: no pid in %s", pidfile);
    daemon_pid = read_pidfile(pidfile);
    H_CHECK(h_wait_for(daemon_serves, NULL, H_START_MS),
            "qchatd -d: the daemon %d (from %s) does not serve: port %d, control socket, "
            "%d workers as its children",
            (int)daemon_pid, pidfile, h_srv.port, OPS_WORKERS);
    H_CHECK(process_alive_titled(daemon_pid, "qchatd: master"),
            "the pidfile's pid %d is not the master", (int)daemon_pid);

    /* It serves: two users register, log in and chat. */
    struct h_user a, b;
    struct qclient *ca = h_new_user(&a, "daemon_a");
    struct qclient *cb = h_new_user(&b, "daemon_b");
    chat_through(ca, &a, cb, &b, "hello daemon", "A->B on the daemon");
    struct json_object *st = h_ctl("{\"cmd\":\"status\"}");
    H_CHECK(st != NULL && h_int(st, "pid") == daemon_pid,
            "control socket status: expected pid %d, got %s", (int)daemon_pid, h_json(st));
    json_object_put(st);

    /*
     * A second start with the same pidfile is refused while the first runs:
     * first on another port and control socket (only the pidfile is shared),
     * then the very same command, as an admin would type it twice.  The
     * latter is checked after the stop, so that the stop is tested anyway.
     */
    char listen2[64], ctl2[PATH_MAX + 32], ctl2_path[PATH_MAX];
    snprintf(listen2, sizeof listen2, "server.listen=" H_HOST ":%d", h_free_port());
    ops_path(ctl2_path, sizeof ctl2_path, "ctl2.sock");
    snprintf(ctl2, sizeof ctl2, "server.control_socket=%s", ctl2_path);
    const char *argv2[] = { bin,  "-d",
                            "-o", listen2,
                            "-o", ctl2,
                            "-o", db,
                            "-o", pidopt,
                            "-o", workers_opt,
                            "-o", "log.target=file",
                            "-o", logfile,
                            "-o", "security.password_cost=1",
                            NULL };
    rc = run_prog(p, NULL, argv2);
    H_CHECK(rc == 1 && strstr(p->err, "already running") != NULL,
            "a second qchatd -d (other port, same pidfile): expected exit 1 and \"already "
            "running\", got %d, stderr \"%.300s\"",
            rc, p->err);
    H_CHECK(access(ctl2_path, F_OK) != 0, "the refused second daemon created its control socket");
    rc = run_prog(p, NULL, argv);
    char same_cmd_err[512];
    snprintf(same_cmd_err, sizeof same_cmd_err, "exit %d, stderr \"%.300s\"", rc, p->err);
    bool same_cmd_ok = rc == 1 && strstr(p->err, "already running") != NULL;
    H_CHECK(read_pidfile(pidfile) == daemon_pid && process_alive_titled(daemon_pid, "qchatd"),
            "the refused second start must leave the pidfile and the daemon alone");
    h_expect_quiet(ca, "a client of the daemon after the refused second start");

    /* SIGTERM: stops, exit status 0, pidfile removed, no worker left. */
    pid_t workers[MAX_PIDS];
    int nworkers = h_child_pids(daemon_pid, "qchatd: worker", workers, MAX_PIDS);
    pid_t pid = daemon_pid;
    H_CHECK(kill(pid, SIGTERM) == 0, "kill -TERM %d: %s", (int)pid, strerror(errno));
    int status = -1;
    int64_t deadline = h_now_ms() + H_STOP_MS;
    while (h_now_ms() < deadline) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD && daemon_stopped(NULL)))
            break;
        h_sleep_ms(OPS_POLL_MS);
    }
    H_CHECK(daemon_stopped(NULL), "the daemon %d is still running %d ms after SIGTERM", (int)pid,
            H_STOP_MS);
    daemon_pid = 0;
    prctl(PR_SET_CHILD_SUBREAPER, 0);
    H_CHECK(status == -1 || (WIFEXITED(status) && WEXITSTATUS(status) == 0),
            "the daemon exited with wait status 0x%x, expected 0", status);
    H_CHECK(access(pidfile, F_OK) != 0 && errno == ENOENT,
            "the pidfile %s is still there after the daemon stopped", pidfile);
    for (int i = 0; i < nworkers; i++)
        H_CHECK(!process_alive_titled(workers[i], "qchatd"), "worker %d of the daemon still runs",
                (int)workers[i]);
    H_CHECK(access(h_srv.ctl_path, F_OK) != 0, "the control socket is still there");
    free(p);
    H_CHECK(same_cmd_ok,
            "the same qchatd -d command run twice: expected the second to exit 1 "
            "saying \"already running\" (the pidfile), got %s",
            same_cmd_err);
}

int main(void)
{
    const char *b = getenv("B");
    snprintf(bin_dir, sizeof bin_dir, "%s", b != NULL && *b ? b : "build");
    signal(SIGPIPE, SIG_IGN);
    static const int fatal[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
        signal(fatal[i], on_fatal_signal);
    atexit(server_stop);
    setvbuf(stdout, NULL, _IOLBF, 0);
    h_apply_filter();
    const struct CMUnitTest tests[] = {
        OPS_TEST(test_sighup_reloads_without_dropping_clients),
        OPS_TEST(test_qchatctl_reload_like_sighup),
        OPS_TEST(test_qchatctl_status_users_kick),
        OPS_TEST(test_sd_notify_ready_status_reloading_stopping),
        OPS_TEST(test_log_file_reopened_on_usr1_and_moved_by_reload),
        OPS_TEST(test_sigterm_while_sending_loses_no_acked_chat),
        OPS_TEST(test_sigterm_with_idle_clients_is_prompt),
        OPS_TEST(test_daemon_with_pidfile),
        OPS_TEST(test_watchdog_follows_every_worker_heartbeat),
        OPS_TEST(test_process_titles_are_exact),
        OPS_TEST(test_startup_errors_reach_the_journal_as_errors),
        OPS_TEST(test_slow_control_client_does_not_block_the_master),
    };
    return cmocka_run_group_tests_name("ops", tests, NULL, NULL);
}
