/*
 * harness.c - starts and stops a private qchatd for the integration tests,
 * and the client-side helpers the tests share (see harness.h).
 *
 * The server runs in the test's process group (so `timeout` reaches it),
 * with PR_SET_PDEATHSIG so it cannot outlive a crashed test, and is stopped
 * by PID from the group teardown, atexit and the fatal-signal handler.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#define PORT_ATTEMPTS         5  /* fresh ports tried when one is taken */
#define POLL_STEP_MS          10 /* granularity of condition polling */
#define CTL_TIMEOUT_MS        5000
#define CTL_MAX_REPLY         (1 << 20)
#define MAX_TRACKED           2048 /* open clients closed by the teardown */
#define MAX_WORKERS_SEEN      64
#define RAW_CHUNK             65536
#define RAW_SEND_MS           10000
#define PROC_LINE             4096
#define SANITIZER_LINES_SHOWN 20
#define WORKER_TITLE          "qchatd: worker"
#define QCHATD_TITLE          "qchatd:"
#define PORT_BUSY_TEXT        "in use"
#define JSON_PLAIN            (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

struct h_server h_srv = { .exit_status = -1 };

static bool test_completed;  /* set when the test body returned */
static bool any_test_failed; /* keep the directory for inspection */
static bool harness_ready;
static unsigned name_counter;
static int64_t seq_counter = 1000;
static struct qclient *tracked[MAX_TRACKED];
static int tracked_fds[MAX_TRACKED];                  /* raw sockets, +1 (0: free slot) */
static char *tracked_bufs[MAX_TRACKED];               /* their receive buffers */
static volatile pid_t workers_seen[MAX_WORKERS_SEEN]; /* for the signal handler */
static unsigned long long workers_started[MAX_WORKERS_SEEN];

/* ---- time ------------------------------------------------------------ */

int64_t h_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void h_sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

bool h_wait_for(bool (*cond)(void *arg), void *arg, int timeout_ms)
{
    int64_t deadline = h_now_ms() + timeout_ms;
    for (;;) {
        if (cond(arg))
            return true;
        if (h_now_ms() >= deadline)
            return cond(arg);
        h_sleep_ms(POLL_STEP_MS);
    }
}

/* ---- processes ------------------------------------------------------- */

/* A /proc file (one read, up to outlen - 1 bytes) with NULs turned into spaces. */
static int read_proc_file(const char *path, char *out, size_t outlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return -1;
    ssize_t n = read(fd, out, outlen - 1);
    close(fd);
    if (n <= 0)
        return -1;
    for (ssize_t i = 0; i < n; i++)
        if (out[i] == '\0')
            out[i] = ' ';
    out[n] = '\0';
    return 0;
}

static int read_cmdline(pid_t pid, char *out, size_t outlen)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    return read_proc_file(path, out, outlen);
}

bool h_process_alive(pid_t pid)
{
    char path[64], stat[PROC_LINE];
    if (pid <= 0 || kill(pid, 0) == -1)
        return false;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (read_proc_file(path, stat, sizeof(stat)) != 0)
        return false;
    char *p = strrchr(stat, ')');
    return p != NULL && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

bool h_process_titled(pid_t pid, const char *prefix)
{
    char cmd[PROC_LINE];
    return read_cmdline(pid, cmd, sizeof(cmd)) == 0 && strncmp(cmd, prefix, strlen(prefix)) == 0;
}

bool h_process_titled_word(pid_t pid, const char *title)
{
    char cmd[PROC_LINE];
    size_t len = strlen(title);
    return read_cmdline(pid, cmd, sizeof(cmd)) == 0 && strncmp(cmd, title, len) == 0 &&
           (cmd[len] == '\0' || cmd[len] == ' ');
}

int h_child_pids(pid_t parent, const char *prefix, pid_t *pids, int max)
{
    char path[64], line[PROC_LINE];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)parent, (int)parent);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return 0;
    int n = 0;
    if (fgets(line, sizeof(line), f) != NULL) {
        char *save = NULL;
        for (char *tok = strtok_r(line, " \n", &save); tok != NULL && n < max;
             tok = strtok_r(NULL, " \n", &save)) {
            pid_t pid = (pid_t)atoi(tok);
            if (h_process_alive(pid) && h_process_titled(pid, prefix))
                pids[n++] = pid;
        }
    }
    fclose(f);
    return n;
}

/* Field 22 of /proc/PID/stat: start time, to tell a reused PID apart. */
static unsigned long long process_start_time(pid_t pid)
{
    char path[64], line[PROC_LINE];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return 0;
    char *got = fgets(line, sizeof(line), f);
    fclose(f);
    char *p = got ? strrchr(line, ')') : NULL;
    if (p == NULL)
        return 0;
    /* after ") " come fields 3 (state) .. 22 (starttime) */
    char *save = NULL, *tok = strtok_r(p + 1, " ", &save);
    for (int field = 3; tok != NULL && field < 22; field++)
        tok = strtok_r(NULL, " ", &save);
    return tok != NULL ? strtoull(tok, NULL, 10) : 0;
}

static void remember_workers(const pid_t *pids, int n)
{
    for (int i = 0; i < n; i++) {
        int free_slot = -1;
        bool known = false;
        for (int j = 0; j < MAX_WORKERS_SEEN; j++) {
            if (workers_seen[j] == pids[i])
                known = true;
            else if (workers_seen[j] == 0 && free_slot < 0)
                free_slot = j;
        }
        if (!known && free_slot >= 0) {
            workers_started[free_slot] = process_start_time(pids[i]);
            workers_seen[free_slot] = pids[i];
        }
    }
}

int server_worker_pids(pid_t *pids, int max)
{
    if (h_srv.pid <= 0)
        return 0;
    int n = h_child_pids(h_srv.pid, WORKER_TITLE, pids, max);
    remember_workers(pids, n);
    return n;
}

pid_t server_worker_pid(int index)
{
    pid_t pids[MAX_WORKERS_SEEN];
    char want[64];
    int n = server_worker_pids(pids, MAX_WORKERS_SEEN);
    snprintf(want, sizeof(want), WORKER_TITLE " %d", index);
    for (int i = 0; i < n; i++)
        if (h_process_titled_word(pids[i], want))
            return pids[i];
    return 0;
}

pid_t server_master_pid(void)
{
    return h_srv.pid;
}

bool server_running(void)
{
    if (h_srv.pid <= 0)
        return false;
    int status;
    pid_t r = waitpid(h_srv.pid, &status, WNOHANG);
    if (r == h_srv.pid) {
        h_srv.exit_status = status;
        fprintf(stderr, "harness: qchatd master %d exited unexpectedly (status 0x%x)\n",
                (int)h_srv.pid, status);
        h_srv.pid = 0;
        return false;
    }
    return true;
}

void server_log_tail(int lines)
{
    h_file_tail(h_srv.log_path, lines);
}

void h_file_tail(const char *path, int lines)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return;
    /* Find the start of the last `lines` lines by scanning backwards. */
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f), pos = size;
        int seen = 0;
        while (pos > 0 && seen <= lines) {
            pos--;
            if (fseek(f, pos, SEEK_SET) != 0)
                break;
            if (fgetc(f) == '\n' && pos != size - 1)
                seen++;
        }
        if (fseek(f, pos == 0 ? 0 : pos + 1, SEEK_SET) != 0)
            rewind(f);
    }
    fprintf(stderr, "---- last %d lines of %s ----\n", lines, path);
    char buf[PROC_LINE];
    while (fgets(buf, sizeof(buf), f) != NULL)
        fputs(buf, stderr);
    fprintf(stderr, "---- end of %s ----\n", path);
    fclose(f);
}

/* Slot i of workers_seen still names the same live qchatd process. */
static bool seen_worker_alive(int i)
{
    pid_t pid = workers_seen[i];
    return pid > 0 && h_process_titled(pid, QCHATD_TITLE) &&
           process_start_time(pid) == workers_started[i];
}

/* Kill workers left behind by a master that died or was killed. */
static void kill_leftover_workers(void)
{
    for (int i = 0; i < MAX_WORKERS_SEEN; i++) {
        pid_t pid = workers_seen[i];
        if (seen_worker_alive(i)) {
            fprintf(stderr, "harness: killing leftover worker %d\n", (int)pid);
            kill(pid, SIGKILL);
        }
        workers_seen[i] = 0;
    }
}

/* Async-signal-safe: stop the server when the test itself is killed. */
static void on_fatal_signal(int sig)
{
    pid_t pid = h_srv.pid;
    if (pid > 0) {
        kill(pid, SIGTERM);
        for (int i = 0; i < 200 && waitpid(pid, NULL, WNOHANG) == 0; i++) {
            struct timespec ts = { 0, POLL_STEP_MS * 1000000L };
            nanosleep(&ts, NULL);
        }
        kill(pid, SIGKILL);
        for (int i = 0; i < MAX_WORKERS_SEEN; i++)
            if (workers_seen[i] > 0)
                kill(workers_seen[i], SIGKILL);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void stop_at_exit(void)
{
    server_stop();
}

void h_install_exit_handlers(void (*on_signal)(int), void (*at_exit)(void))
{
    signal(SIGPIPE, SIG_IGN);
    static const int fatal[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
    for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++)
        signal(fatal[i], on_signal);
    atexit(at_exit);
    setvbuf(stdout, NULL, _IOLBF, 0);
}

static void harness_init(void)
{
    if (harness_ready)
        return;
    harness_ready = true;
    h_install_exit_handlers(on_fatal_signal, stop_at_exit);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

void h_remove_dir(const char *dir)
{
    if (dir[0] != '\0' && nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "harness: could not remove %s: %s\n", dir, strerror(errno));
}

int h_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -1;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = 0 };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static int connect_loopback(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -1;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

bool h_port_accepting(int port)
{
    int fd = connect_loopback(port);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

bool h_file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return false;
    char line[PROC_LINE];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL)
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

#define MAX_ARGS 128

int h_run_capture(const char *cmd, char *out, size_t outlen)
{
    FILE *p = popen(cmd, "r");
    H_CHECK(p != NULL, "popen %s: %s", cmd, strerror(errno));
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

bool h_storage_is_mysql(void)
{
    const char *kind = getenv("QCHAT_TEST_STORAGE");
    return kind != NULL && strcmp(kind, "mysql") == 0;
}

void h_mysql_database(const char *path, char *db, size_t len)
{
    uint32_t hash = 2166136261u;
    for (const char *p = path; *p; p++)
        hash = (hash ^ (unsigned char)*p) * 16777619u;
    snprintf(db, len, "qchat_h%u_%08x", (unsigned)getpid(), hash);
}

/*
 * With QCHAT_TEST_STORAGE=mysql (tests/run.sh's second pass), the server
 * uses the private MariaDB that tests/harness/mariadb.sh started (its env
 * exported).  Each storage.path gets its own database, named after the path,
 * so a test that restarts a server on the same path finds its data again.
 * Returns the number of options written, 0 for SQLite, -1 on failure.
 */
static int mysql_storage_options(const char *const *extra, char opt[5][PATH_MAX + 64])
{
    const char *kind = getenv("QCHAT_TEST_STORAGE");
    if (kind == NULL || strcmp(kind, "mysql") != 0)
        return 0;
    const char *dir = getenv("QCHAT_MYSQL_DIR"), *sock = getenv("QCHAT_MYSQL_SOCKET");
    const char *user = getenv("QCHAT_MYSQL_USER"), *pwf = getenv("QCHAT_MYSQL_PASSWORD_FILE");
    if (dir == NULL || sock == NULL || user == NULL || pwf == NULL) {
        fprintf(stderr, "harness: QCHAT_TEST_STORAGE=mysql but no private MariaDB env\n");
        return -1;
    }
    const char *path = h_srv.db_path;
    for (int i = 0; extra != NULL && extra[i] != NULL; i++)
        if (strncmp(extra[i], "storage.path=", 13) == 0)
            path = extra[i] + 13;
    char db[64], cmd[PATH_MAX * 2];
    h_mysql_database(path, db, sizeof db);
    snprintf(cmd, sizeof cmd, "sh tests/harness/mariadb.sh createdb '%s' %s >/dev/null", dir, db);
    if (system(cmd) != 0) {
        fprintf(stderr, "harness: cannot create database %s\n", db);
        return -1;
    }
    snprintf(opt[0], PATH_MAX + 64, "storage.driver=mysql");
    snprintf(opt[1], PATH_MAX + 64, "storage.socket=%s", sock);
    snprintf(opt[2], PATH_MAX + 64, "storage.user=%s", user);
    snprintf(opt[3], PATH_MAX + 64, "storage.password_file=%s", pwf);
    snprintf(opt[4], PATH_MAX + 64, "storage.database=%s", db);
    return 5;
}

/* Whether one of a test's own options sets the key prefix names ("section.key="). */
static bool extra_sets(const char *const *extra, const char *prefix)
{
    for (int i = 0; extra != NULL && extra[i] != NULL; i++)
        if (strncmp(extra[i], prefix, strlen(prefix)) == 0)
            return true;
    return false;
}

static pid_t spawn_server(const char *const *extra)
{
    const char *bdir = getenv("B");
    char bin[PATH_MAX], opt[8][PATH_MAX + 64];
    const char *argv[MAX_ARGS];
    int argc = 0;

    snprintf(bin, sizeof(bin), "%s/qchatd", bdir != NULL && *bdir ? bdir : "build");
    if (access(bin, X_OK) != 0) {
        fprintf(stderr, "harness: %s is not there (build it first): %s\n", bin, strerror(errno));
        return -1;
    }
    snprintf(opt[0], sizeof(opt[0]), "server.listen=" H_HOST ":%d", h_srv.port);
    snprintf(opt[1], sizeof(opt[1]), "server.workers=%d", H_WORKERS);
    snprintf(opt[2], sizeof(opt[2]), "storage.path=%s", h_srv.db_path);
    snprintf(opt[3], sizeof(opt[3]), "server.control_socket=%s", h_srv.ctl_path);
    snprintf(opt[4], sizeof(opt[4]), "security.password_cost=1");
    snprintf(opt[5], sizeof(opt[5]), "log.level=debug");
    argv[argc++] = bin;
    argv[argc++] = "-f";
    for (int i = 0; i < 6; i++) {
        argv[argc++] = "-o";
        argv[argc++] = opt[i];
    }
    /* QCHAT_TEST_STORAGE=mysql: the same tests on the private MariaDB. */
    static char mysql_opt[5][PATH_MAX + 64];
    int nmysql = mysql_storage_options(extra, mysql_opt);
    if (nmysql < 0)
        return -1;
    for (int i = 0; i < nmysql; i++) {
        argv[argc++] = "-o";
        argv[argc++] = mysql_opt[i];
    }
    if (!extra_sets(extra, "social.friend_consent=")) {
        /* The seed's immediate ADD_FRIEND, which the older tests expect. */
        argv[argc++] = "-o";
        argv[argc++] = "social.friend_consent=no";
    }
    for (int i = 0; extra != NULL && extra[i] != NULL && argc < MAX_ARGS - 3; i++) {
        argv[argc++] = "-o";
        argv[argc++] = extra[i];
    }
    argv[argc] = NULL;

    return h_spawn_logged(argv, h_srv.log_path, NULL);
}

pid_t h_spawn_logged(const char *const *argv, const char *log_path, void (*in_child)(void))
{
    FILE *log = fopen(log_path, "ae");
    if (log != NULL) {
        fprintf(log, "#");
        for (int i = 0; argv[i] != NULL; i++)
            fprintf(log, " %s", argv[i]);
        fprintf(log, "\n");
        fclose(log);
    }

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == -1) {
        perror("harness: fork");
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int nul = open("/dev/null", O_RDONLY);
        if (fd == -1 || nul == -1 || dup2(nul, 0) == -1 || dup2(fd, 1) == -1 || dup2(fd, 2) == -1)
            _exit(126);
        signal(SIGPIPE, SIG_DFL);
        if (in_child != NULL)
            in_child();
        execv(argv[0], (char *const *)argv);
        dprintf(2, "harness: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

enum ready { READY, NOT_READY_PORT_BUSY, NOT_READY };

static enum ready wait_ready(void)
{
    int64_t deadline = h_now_ms() + H_START_MS;
    bool accepting = false;
    pid_t pids[MAX_WORKERS_SEEN];

    while (h_now_ms() < deadline) {
        if (!server_running())
            return h_file_contains(h_srv.log_path, PORT_BUSY_TEXT) ? NOT_READY_PORT_BUSY
                                                                   : NOT_READY;
        if (!accepting)
            accepting = h_port_accepting(h_srv.port);
        if (accepting && server_worker_pids(pids, MAX_WORKERS_SEEN) >= h_srv.workers)
            return READY;
        h_sleep_ms(POLL_STEP_MS);
    }
    if (accepting) {
        /* Tests that look at workers will say so; the others can run. */
        fprintf(stderr,
                "harness: WARNING: %d of %d processes titled \"" WORKER_TITLE
                " N\" under master %d after %d ms\n",
                server_worker_pids(pids, MAX_WORKERS_SEEN), h_srv.workers, (int)h_srv.pid,
                H_START_MS);
        return READY;
    }
    fprintf(stderr, "harness: qchatd did not accept on port %d within %d ms\n", h_srv.port,
            H_START_MS);
    return NOT_READY;
}

/* The control socket is optional for start-up; note it if it never answers. */
static void wait_control_socket(void)
{
    int64_t deadline = h_now_ms() + H_REPLY_MS;
    while (h_now_ms() < deadline) {
        if (access(h_srv.ctl_path, F_OK) == 0)
            return;
        h_sleep_ms(POLL_STEP_MS);
    }
    fprintf(stderr, "harness: control socket %s did not appear\n", h_srv.ctl_path);
}

static int expected_workers(const char *const *extra)
{
    int n = H_WORKERS;
    for (int i = 0; extra != NULL && extra[i] != NULL; i++)
        if (strncmp(extra[i], "server.workers=", 15) == 0)
            n = atoi(extra[i] + 15);
    return n;
}

int server_start(const char *const *extra_opts)
{
    harness_init();
    if (h_srv.pid > 0)
        server_stop();

    const char *tmp = getenv("TMPDIR");
    snprintf(h_srv.dir, sizeof(h_srv.dir), "%s/qchat-it.XXXXXX",
             tmp != NULL && *tmp ? tmp : "/tmp");
    if (mkdtemp(h_srv.dir) == NULL) {
        fprintf(stderr, "harness: mkdtemp %s: %s\n", h_srv.dir, strerror(errno));
        return -1;
    }
    snprintf(h_srv.log_path, sizeof(h_srv.log_path), "%s/qchatd.log", h_srv.dir);
    snprintf(h_srv.db_path, sizeof(h_srv.db_path), "%s/qchat.db", h_srv.dir);
    snprintf(h_srv.ctl_path, sizeof(h_srv.ctl_path), "%s/ctl.sock", h_srv.dir);
    h_srv.workers = expected_workers(extra_opts);
    h_srv.exit_status = -1;

    for (int attempt = 0; attempt < PORT_ATTEMPTS; attempt++) {
        h_srv.port = h_free_port();
        if (h_srv.port <= 0) {
            fprintf(stderr, "harness: no free loopback port: %s\n", strerror(errno));
            return -1;
        }
        h_srv.pid = spawn_server(extra_opts);
        if (h_srv.pid <= 0) {
            h_srv.pid = 0;
            return -1;
        }
        switch (wait_ready()) {
        case READY:
            wait_control_socket();
            fprintf(stderr, "harness: qchatd %d on " H_HOST ":%d, dir %s\n", (int)h_srv.pid,
                    h_srv.port, h_srv.dir);
            return 0;
        case NOT_READY_PORT_BUSY:
            fprintf(stderr, "harness: port %d taken, retrying\n", h_srv.port);
            server_stop();
            continue;
        case NOT_READY: break;
        }
        break;
    }
    any_test_failed = true;
    server_log_tail(H_LOG_TAIL_LINES);
    server_stop();
    return -1;
}

/* SIGTERM the master, wait, SIGKILL if needed; then its workers by PID. */
static void stop_processes(void)
{
    pid_t pids[MAX_WORKERS_SEEN];
    if (h_srv.pid > 0) {
        server_worker_pids(pids, MAX_WORKERS_SEEN);
        kill(h_srv.pid, SIGTERM);
        int64_t deadline = h_now_ms() + H_STOP_MS;
        int status = 0;
        pid_t r;
        while ((r = waitpid(h_srv.pid, &status, WNOHANG)) == 0 && h_now_ms() < deadline)
            h_sleep_ms(POLL_STEP_MS);
        if (r == 0) {
            fprintf(stderr, "harness: qchatd %d did not stop within %d ms: SIGKILL\n",
                    (int)h_srv.pid, H_STOP_MS);
            kill(h_srv.pid, SIGKILL);
            r = waitpid(h_srv.pid, &status, 0);
        }
        h_srv.exit_status = r == h_srv.pid ? status : -1;
        h_srv.pid = 0;
        /* Workers should be gone with the master; give them a moment. */
        deadline = h_now_ms() + H_REPLY_MS;
        h_srv.leftover_workers = 0;
        for (int i = 0; i < MAX_WORKERS_SEEN; i++) {
            while (seen_worker_alive(i) && h_now_ms() < deadline)
                h_sleep_ms(POLL_STEP_MS);
            if (seen_worker_alive(i))
                h_srv.leftover_workers++;
        }
    }
    kill_leftover_workers();
}

void server_stop(void)
{
    stop_processes();
    if (h_srv.dir[0] != '\0') {
        if (any_test_failed)
            fprintf(stderr, "harness: kept %s for inspection\n", h_srv.dir);
        else
            h_remove_dir(h_srv.dir);
        h_srv.dir[0] = '\0';
    }
}

/* Lines a sanitizer (ASan, LSan, UBSan) writes into the server's stderr. */
static const char *const sanitizer_marks[] = {
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "ThreadSanitizer",
};

int h_sanitizer_lines(const char *path, const char *label)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    char line[PROC_LINE];
    int found = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        for (size_t i = 0; i < sizeof(sanitizer_marks) / sizeof(sanitizer_marks[0]); i++)
            if (strstr(line, sanitizer_marks[i]) != NULL && found++ < SANITIZER_LINES_SHOWN)
                fprintf(stderr, "%s: %s", label, line);
    fclose(f);
    return found;
}

void h_stop_and_check_clean(void)
{
    stop_processes(); /* the directory stays until the group teardown */
    int status = h_srv.exit_status;
    H_CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "SIGTERM: the master must exit with status 0 within %d ms (wait status 0x%x%s)",
            H_STOP_MS, status, status != -1 && WIFSIGNALED(status) ? ", killed by a signal" : "");
    H_CHECK(h_srv.leftover_workers == 0, "%d worker(s) still running after the master exited",
            h_srv.leftover_workers);
    int found = h_sanitizer_lines(h_srv.log_path, "server log");
    H_CHECK(found >= 0, "server log %s: %s", h_srv.log_path, strerror(errno));
    H_CHECK(found == 0, "%d sanitizer report line(s) in %s", found, h_srv.log_path);
}

int h_group_setup_with(const char *const *extra_opts)
{
    return server_start(extra_opts) == 0 ? 0 : -1;
}

int h_group_teardown(void **state)
{
    server_stop();
    return 0;
}

/* ---- cmocka glue ----------------------------------------------------- */

static void close_tracked(void)
{
    for (int i = 0; i < MAX_TRACKED; i++) {
        if (tracked[i] != NULL) {
            qclient_close(tracked[i]);
            tracked[i] = NULL;
        }
        if (tracked_fds[i] > 0) {
            close(tracked_fds[i] - 1);
            free(tracked_bufs[i]);
            tracked_fds[i] = 0;
            tracked_bufs[i] = NULL;
        }
    }
}

static void track_fd(int fd)
{
    for (int i = 0; i < MAX_TRACKED; i++) {
        if (tracked_fds[i] == 0) {
            tracked_fds[i] = fd + 1;
            return;
        }
    }
    H_FAIL("harness: more than %d raw sockets open at once", MAX_TRACKED);
}

static void untrack_fd(int fd)
{
    for (int i = 0; i < MAX_TRACKED; i++)
        if (tracked_fds[i] == fd + 1) {
            tracked_fds[i] = 0;
            tracked_bufs[i] = NULL;
        }
}

/* The teardown frees a raw socket's buffer if the test could not. */
static void track_buffer(int fd, char *buf)
{
    for (int i = 0; i < MAX_TRACKED; i++)
        if (tracked_fds[i] == fd + 1)
            tracked_bufs[i] = buf;
}

void h_apply_filter(void)
{
    const char *pattern = getenv("H_FILTER");
    if (pattern != NULL && *pattern != '\0')
        cmocka_set_test_filter(pattern);
}

void h_run_test(void **state)
{
    struct h_test *t = *state;
    test_completed = false;
    t->fn(state);
    test_completed = true;
}

int h_test_teardown(void **state)
{
    if (!test_completed) {
        any_test_failed = true;
        if (h_srv.pid > 0 && !server_running())
            fprintf(stderr, "harness: the qchatd master is gone\n");
        server_log_tail(H_LOG_TAIL_LINES);
    }
    close_tracked();
    return 0;
}

/* ---- control socket -------------------------------------------------- */

struct json_object *h_ctl(const char *request)
{
    return h_ctl_at(h_srv.ctl_path, request);
}

struct json_object *h_ctl_at(const char *ctl_path, const char *request)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(ctl_path) >= sizeof(sa.sun_path))
        return NULL;
    strcpy(sa.sun_path, ctl_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return NULL;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
        fprintf(stderr, "harness: control socket %s: %s\n", ctl_path, strerror(errno));
        close(fd);
        return NULL;
    }
    char line[1024];
    int n = snprintf(line, sizeof(line), "%s\n", request);
    if (n <= 0 || (size_t)n >= sizeof(line) || write(fd, line, (size_t)n) != n) {
        close(fd);
        return NULL;
    }
    char *buf = malloc(CTL_MAX_REPLY + 1);
    size_t len = 0;
    int64_t deadline = h_now_ms() + CTL_TIMEOUT_MS;
    bool done = false;
    while (buf != NULL && !done && len < CTL_MAX_REPLY) {
        int left = (int)(deadline - h_now_ms());
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (left <= 0 || poll(&p, 1, left) <= 0)
            break;
        ssize_t r = read(fd, buf + len, CTL_MAX_REPLY - len);
        if (r <= 0)
            done = true;
        else
            len += (size_t)r;
    }
    close(fd);
    if (buf == NULL)
        return NULL;
    buf[len] = '\0';
    struct json_object *o = len > 0 ? json_tokener_parse(buf) : NULL;
    if (o == NULL)
        fprintf(stderr, "harness: control socket answered %s to %s: \"%.200s\"\n",
                done ? "" : "(no EOF)", request, buf);
    free(buf);
    return o;
}

int h_ctl_users(int32_t *ids, int *workers, int max)
{
    struct json_object *o = h_ctl("{\"cmd\":\"users\"}"), *users, *ok;
    if (o == NULL)
        return -1;
    if (!json_object_object_get_ex(o, "ok", &ok) || !json_object_get_boolean(ok) ||
        !json_object_object_get_ex(o, "users", &users) ||
        !json_object_is_type(users, json_type_array)) {
        fprintf(stderr, "harness: bad users answer: %s\n", h_json(o));
        json_object_put(o);
        return -1;
    }
    int n = 0;
    size_t len = json_object_array_length(users);
    for (size_t i = 0; i < len && n < max; i++) {
        struct json_object *u = json_object_array_get_idx(users, i), *id, *w;
        if (!json_object_object_get_ex(u, "id", &id) || !json_object_object_get_ex(u, "worker", &w))
            continue;
        ids[n] = (int32_t)json_object_get_int64(id);
        workers[n] = (int)json_object_get_int64(w);
        n++;
    }
    json_object_put(o);
    return n;
}

#define CTL_USERS_MAX 8192

int h_worker_of(int32_t id)
{
    static int32_t ids[CTL_USERS_MAX];
    static int workers[CTL_USERS_MAX];
    int n = h_ctl_users(ids, workers, CTL_USERS_MAX);
    H_CHECK(n >= 0, "control socket {\"cmd\":\"users\"} gave no valid answer");
    for (int i = 0; i < n; i++)
        if (ids[i] == id)
            return workers[i];
    return -1;
}

#define H_BURST        8  /* connections opened at once to spread over workers */
#define H_BURST_ROUNDS 10 /* bursts tried */

/*
 * n fresh users logged in (with presence notices if asked), each on a different worker.  A
 * worker idle in epoll_wait takes every connection that arrives one by one,
 * so connections are opened in a burst (the kernel queues them before any
 * worker accepts) and logged in afterwards; a burst that landed on too few
 * workers is closed and tried again.
 */
void h_users_on_workers(struct h_user *u, struct qclient **c, int n, const char *tag, bool presence)
{
    H_CHECK(n >= 1 && n <= H_WORKERS, "%d users on distinct workers of %d", n, H_WORKERS);
    struct h_user pool[H_BURST];
    struct qclient *conn[H_BURST];
    for (int i = 0; i < H_BURST; i++)
        h_new_offline_user(&pool[i], tag);
    for (int round = 0; round < H_BURST_ROUNDS; round++) {
        for (int i = 0; i < H_BURST; i++)
            conn[i] = h_connect();
        int used[H_WORKERS] = { 0 }, got = 0;
        for (int i = 0; i < H_BURST; i++) {
            struct json_object *ack = NULL;
            int rc =
                qclient_login(conn[i], pool[i].id, pool[i].password, presence, &ack, H_REPLY_MS);
            H_CHECK(rc == 0, "login of %d: %s", pool[i].id, h_json(ack));
            json_object_put(ack);
            int w = h_worker_of(pool[i].id);
            if (got < n && w >= 0 && w < H_WORKERS && !used[w]) {
                used[w] = 1;
                u[got] = pool[i];
                c[got++] = conn[i];
                conn[i] = NULL;
            }
        }
        for (int i = 0; i < H_BURST; i++)
            if (conn[i] != NULL)
                h_close(conn[i]);
        if (got == n)
            return;
        for (int i = 0; i < got; i++)
            h_close(c[i]);
        for (int i = 0; i < H_BURST; i++)
            H_CHECK(h_wait_online(pool[i].id, false, H_REPLY_MS), "user %d still online",
                    pool[i].id);
    }
    H_FAIL("%d bursts of %d connections never reached %d workers", H_BURST_ROUNDS, H_BURST, n);
}

struct online_wait {
    int32_t id;
    bool online;
};

static bool online_reached(void *arg)
{
    struct online_wait *w = arg;
    return (h_worker_of(w->id) >= 0) == w->online;
}

bool h_wait_online(int32_t id, bool online, int timeout_ms)
{
    struct online_wait w = { id, online };
    return h_wait_for(online_reached, &w, timeout_ms);
}

/* ---- users and clients ----------------------------------------------- */

void h_unique_name(char *out, size_t outlen, const char *tag)
{
    snprintf(out, outlen, "%.20s_%d_%u", tag, (int)getpid(), ++name_counter);
}

int64_t h_next_seq(void)
{
    return ++seq_counter;
}

static void track(struct qclient *c)
{
    for (int i = 0; i < MAX_TRACKED; i++) {
        if (tracked[i] == NULL) {
            tracked[i] = c;
            return;
        }
    }
    H_FAIL("harness: more than %d clients open at once", MAX_TRACKED);
}

struct qclient *h_connect(void)
{
    return h_connect_to(h_srv.port);
}

struct qclient *h_connect_to(int port)
{
    char err[256] = "";
    struct qclient *c = qclient_connect(H_HOST, port, H_REPLY_MS, err, sizeof(err));
    H_CHECK(c != NULL, "connect to " H_HOST ":%d failed: %s", port, err);
    track(c);
    return c;
}

void h_close(struct qclient *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < MAX_TRACKED; i++)
        if (tracked[i] == c)
            tracked[i] = NULL;
    qclient_close(c);
}

void h_register(struct qclient *c, struct h_user *u, const char *tag)
{
    h_unique_name(u->name, sizeof(u->name), tag);
    snprintf(u->password, sizeof(u->password), "pw-%u-%d", name_counter, (int)getpid());
    int32_t id = 0;
    int rc = qclient_register(c, u->name, u->password, &id, H_REPLY_MS);
    H_CHECK(rc == 0 && id > 0, "REG {name:\"%s\"}: expected errno 0 and an id, got rc %d id %d",
            u->name, rc, id);
    u->id = id;
}

static struct qclient *login_as(const struct h_user *u, bool presence, struct json_object **ack)
{
    return h_login_to(h_srv.port, u, presence, ack);
}

struct qclient *h_login_to(int port, const struct h_user *u, bool presence,
                           struct json_object **ack)
{
    struct qclient *c = h_connect_to(port);
    struct json_object *reply = NULL;
    int rc = qclient_login(c, u->id, u->password, presence, &reply, H_REPLY_MS);
    H_CHECK(rc == 0, "LOGIN {id:%d} as %s: expected errno 0, got rc %d: %s", u->id, u->name, rc,
            h_json(reply));
    if (ack != NULL)
        *ack = reply;
    else
        json_object_put(reply);
    return c;
}

struct qclient *h_login(const struct h_user *u, struct json_object **ack)
{
    return login_as(u, false, ack);
}

struct qclient *h_login_presence(const struct h_user *u, struct json_object **ack)
{
    return login_as(u, true, ack);
}

struct qclient *h_new_user(struct h_user *u, const char *tag)
{
    struct qclient *c = h_connect();
    h_register(c, u, tag);
    struct json_object *reply = NULL;
    int rc = qclient_login(c, u->id, u->password, false, &reply, H_REPLY_MS);
    H_CHECK(rc == 0, "LOGIN {id:%d} right after REG: expected errno 0, got rc %d: %s", u->id, rc,
            h_json(reply));
    json_object_put(reply);
    return c;
}

void h_new_offline_user(struct h_user *u, const char *tag)
{
    struct qclient *c = h_connect();
    h_register(c, u, tag);
    h_close(c);
}

/* ---- requests and replies -------------------------------------------- */

void h_send(struct qclient *c, const char *fmt, ...)
{
    char *text = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&text, fmt, ap);
    va_end(ap);
    H_CHECK(n >= 0, "out of memory");
    int rc = qclient_send_raw(c, text, (size_t)n);
    if (rc != 0) {
        print_error("send %.300s: failed: %s\n", text, strerror(errno));
        free(text);
        fail();
    }
    free(text);
}

void h_send_obj(struct qclient *c, struct json_object *o)
{
    H_CHECK(qclient_send(c, o) == 0, "send %s failed: %s", h_json(o), strerror(errno));
}

struct json_object *h_next(struct qclient *c, const char *what)
{
    struct json_object *o = qclient_recv(c, H_REPLY_MS);
    if (o == NULL)
        H_FAIL("%s: expected a reply within %d ms, got %s", what, H_REPLY_MS,
               qclient_eof(c) ? "EOF (connection closed)" : strerror(errno));
    return o;
}

/*
 * Version 2 pushes that every non-legacy session gets unasked (DESIGN.md:
 * READ sync 24, friend requests 35, group events 47): a test that waits for
 * something else steps over them.
 */
static bool is_v2_push(struct json_object *o)
{
    struct json_object *m;
    if (!json_object_object_get_ex(o, "msgid", &m) || !json_object_is_type(m, json_type_int))
        return false;
    int64_t id = json_object_get_int64(m);
    return (id == QC_READ_MSG && !h_has(o, "seq")) || id == QC_FRIEND_REQUEST_MSG ||
           id == QC_GROUP_EVENT_MSG;
}

struct json_object *h_expect(struct qclient *c, int msgid, const char *what)
{
    struct json_object *o = h_next(c, what);
    struct json_object *m;
    while (msgid != QC_READ_MSG && msgid != QC_FRIEND_REQUEST_MSG && msgid != QC_GROUP_EVENT_MSG &&
           is_v2_push(o)) {
        json_object_put(o);
        o = h_next(c, what);
    }
    if (!json_object_object_get_ex(o, "msgid", &m) || !json_object_is_type(m, json_type_int) ||
        json_object_get_int64(m) != msgid)
        H_FAIL("%s: expected msgid %d, got %s", what, msgid, h_json(o));
    return o;
}

struct json_object *h_expect_skip(struct qclient *c, int msgid, const char *what)
{
    struct json_object *o = qclient_recv_msgid(c, msgid, H_REPLY_MS);
    if (o == NULL)
        H_FAIL("%s: expected msgid %d within %d ms, got %s", what, msgid, H_REPLY_MS,
               qclient_eof(c) ? "EOF (connection closed)" : strerror(errno));
    return o;
}

struct json_object *h_expect_ack(struct qclient *c, int req, int64_t seq, int err, const char *what)
{
    struct json_object *o = h_expect(c, QC_ACK_MSG, what), *s;
    bool seq_ok = json_object_object_get_ex(o, "seq", &s) &&
                  json_object_is_type(s, json_type_int) && json_object_get_int64(s) == seq;
    if (!seq_ok || !h_has(o, "errno") || h_int(o, "errno") != err || !h_has(o, "req") ||
        h_int(o, "req") != req)
        H_FAIL("%s: expected {\"msgid\":11,\"errno\":%d,\"req\":%d,\"seq\":%lld}, got %s", what,
               err, req, (long long)seq, h_json(o));
    H_CHECK(h_has(o, "errmsg") &&
                json_object_is_type(json_object_object_get(o, "errmsg"), json_type_string),
            "%s: ACK without an errmsg string: %s", what, h_json(o));
    return o;
}

void h_expect_quiet(struct qclient *c, const char *what)
{
    int64_t seq = h_next_seq();
    h_send(c, "{\"msgid\":14,\"seq\":%lld}", (long long)seq);
    struct json_object *o = h_next(c, what), *s;
    while (is_v2_push(o)) {
        json_object_put(o);
        o = h_next(c, what);
    }
    bool is_ack = json_object_object_get_ex(o, "seq", &s) &&
                  json_object_is_type(s, json_type_int) && json_object_get_int64(s) == seq &&
                  h_has(o, "msgid") && h_int(o, "msgid") == QC_ACK_MSG;
    if (!is_ack)
        H_FAIL("%s: expected no traffic (next object = ACK of HEARTBEAT seq %lld), got %s", what,
               (long long)seq, h_json(o));
    json_object_put(o);
}

void h_expect_eof(struct qclient *c, const char *what)
{
    struct json_object *o = qclient_recv(c, H_REPLY_MS);
    if (o != NULL)
        H_FAIL("%s: expected the connection to be closed, got %s", what, h_json(o));
    H_CHECK(qclient_eof(c), "%s: expected EOF within %d ms, got %s", what, H_REPLY_MS,
            strerror(errno));
}

struct json_object *h_request(struct qclient *c, int req, int err, const char *what,
                              const char *fmt, ...)
{
    char *body = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&body, fmt, ap);
    va_end(ap);
    H_CHECK(n >= 0, "out of memory");
    int64_t seq = h_next_seq();
    /* body is the inside of an object without braces: "toid":5,"msg":"x" */
    char *text = NULL;
    n = asprintf(&text, "{\"msgid\":%d,%s%s\"seq\":%lld}", req, body, *body ? "," : "",
                 (long long)seq);
    free(body);
    H_CHECK(n >= 0, "out of memory");
    char label[512];
    snprintf(label, sizeof(label), "%s: request %.400s", what, text);
    int rc = qclient_send_raw(c, text, (size_t)n);
    free(text);
    H_CHECK(rc == 0, "%s: send failed", label);
    return h_expect_ack(c, req, seq, err, label);
}

/* ---- JSON field checks ----------------------------------------------- */

const char *h_json(struct json_object *o)
{
    return o == NULL ? "(nothing)" : json_object_to_json_string_ext(o, JSON_PLAIN);
}

#define QUOTE_RING 8
#define QUOTE_MAX  (64 * 1024)

const char *h_q(const char *s)
{
    static char ring[QUOTE_RING][QUOTE_MAX];
    static int next;
    struct json_object *o = json_object_new_string(s);
    H_CHECK(o != NULL, "out of memory");
    const char *text = json_object_to_json_string_ext(o, JSON_PLAIN);
    char *out = ring[next];
    next = (next + 1) % QUOTE_RING;
    size_t n = strlen(text);
    if (n >= QUOTE_MAX) {
        json_object_put(o);
        H_FAIL("h_q: string of %zu bytes too long for the harness", n);
    }
    memcpy(out, text, n + 1);
    json_object_put(o);
    return out;
}

const char *h_fill(char c, size_t n, const char *suffix)
{
    static char *buf;
    static size_t cap;
    size_t need = n + strlen(suffix) + 1;
    if (need > cap) {
        char *nb = realloc(buf, need);
        H_CHECK(nb != NULL, "out of memory");
        buf = nb;
        cap = need;
    }
    memset(buf, c, n);
    strcpy(buf + n, suffix);
    return buf;
}

bool h_has(struct json_object *o, const char *key)
{
    return o != NULL && json_object_object_get_ex(o, key, NULL);
}

int64_t h_int(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
        H_FAIL("expected integer field \"%s\" in %s", key, h_json(o));
    return json_object_get_int64(v);
}

const char *h_str(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        H_FAIL("expected string field \"%s\" in %s", key, h_json(o));
    return json_object_get_string(v);
}

struct json_object *h_arr(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_array))
        H_FAIL("expected array field \"%s\" in %s", key, h_json(o));
    return v;
}

size_t h_arr_len_opt(struct json_object *o, const char *key)
{
    if (!h_has(o, key))
        return 0;
    return json_object_array_length(h_arr(o, key));
}

struct json_object *h_parse_item(struct json_object *arr, size_t i, const char *what)
{
    struct json_object *item = json_object_array_get_idx(arr, i);
    if (item == NULL || !json_object_is_type(item, json_type_string))
        H_FAIL("%s: item %zu must be a JSON string (the seed's encoding), got %s", what, i,
               h_json(item));
    struct json_object *o = json_tokener_parse(json_object_get_string(item));
    if (o == NULL || !json_object_is_type(o, json_type_object))
        H_FAIL("%s: item %zu does not hold a JSON object: %s", what, i, h_json(item));
    return o;
}

void h_check_time_fields(struct json_object *msg)
{
    const char *t = h_str(msg, "time");
    static const char pattern[] = "dddd-dd-dd dd:dd:dd";
    bool ok = strlen(t) == strlen(pattern);
    for (size_t i = 0; ok && pattern[i] != '\0'; i++)
        ok = pattern[i] == 'd' ? (t[i] >= '0' && t[i] <= '9') : t[i] == pattern[i];
    H_CHECK(ok, "\"time\" must look like YYYY-MM-DD HH:MM:SS, got \"%s\" in %s", t, h_json(msg));
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    int64_t ts = h_int(msg, "ts");
    H_CHECK(ts > now_ms - 600000 && ts < now_ms + 60000,
            "\"ts\" must be epoch milliseconds near now (%lld), got %lld", (long long)now_ms,
            (long long)ts);
}

/* ---- raw sockets ----------------------------------------------------- */

void h_raw_connect(struct h_raw *r, int rcvbuf)
{
    memset(r, 0, sizeof(*r));
    r->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    H_CHECK(r->fd >= 0, "socket: %s", strerror(errno));
    track_fd(r->fd);
    if (rcvbuf > 0)
        H_CHECK(setsockopt(r->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) == 0,
                "SO_RCVBUF: %s", strerror(errno));
    int one = 1;
    setsockopt(r->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)h_srv.port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    H_CHECK(connect(r->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect to port %d: %s",
            h_srv.port, strerror(errno));
    H_CHECK(fcntl(r->fd, F_SETFL, fcntl(r->fd, F_GETFL) | O_NONBLOCK) == 0, "O_NONBLOCK: %s",
            strerror(errno));
}

void h_raw_close(struct h_raw *r)
{
    if (r->fd >= 0) {
        untrack_fd(r->fd);
        close(r->fd);
    }
    r->fd = -1;
    free(r->buf);
    r->buf = NULL;
    r->len = r->cap = 0;
}

int h_raw_send(struct h_raw *r, const void *p, size_t n)
{
    const char *s = p;
    int64_t deadline = h_now_ms() + RAW_SEND_MS;
    while (n > 0) {
        ssize_t w = send(r->fd, s, n, MSG_NOSIGNAL);
        if (w > 0) {
            s += w;
            n -= (size_t)w;
            continue;
        }
        if (w == -1 && errno != EAGAIN && errno != EINTR)
            return -1;
        int left = (int)(deadline - h_now_ms());
        struct pollfd pf = { .fd = r->fd, .events = POLLOUT };
        if (left <= 0 || poll(&pf, 1, left) <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
    }
    return 0;
}

/* Read what is available into the buffer; wait up to timeout_ms for some. */
static int raw_fill(struct h_raw *r, int timeout_ms)
{
    if (r->eof || r->error)
        return -1;
    struct pollfd pf = { .fd = r->fd, .events = POLLIN };
    int pr = poll(&pf, 1, timeout_ms < 0 ? 0 : timeout_ms);
    if (pr <= 0)
        return 0;
    if (r->cap - r->len < RAW_CHUNK) {
        size_t cap = r->cap ? r->cap * 2 : 4 * RAW_CHUNK;
        while (cap - r->len < RAW_CHUNK)
            cap *= 2;
        char *nb = realloc(r->buf, cap);
        H_CHECK(nb != NULL, "out of memory");
        r->buf = nb;
        r->cap = cap;
        track_buffer(r->fd, nb);
    }
    ssize_t n = recv(r->fd, r->buf + r->len, RAW_CHUNK, 0);
    if (n > 0) {
        r->len += (size_t)n;
        return 1;
    }
    if (n == 0)
        r->eof = true;
    else if (errno != EAGAIN && errno != EINTR)
        r->error = errno;
    return r->eof || r->error ? -1 : 0;
}

struct json_object *h_raw_recv(struct h_raw *r, int timeout_ms)
{
    int64_t deadline = h_now_ms() + timeout_ms;
    size_t scanned = 0;
    for (;;) {
        char *nl = r->len > scanned ? memchr(r->buf + scanned, '\n', r->len - scanned) : NULL;
        if (nl != NULL) {
            size_t line = (size_t)(nl - r->buf);
            struct json_tokener *tok = json_tokener_new();
            struct json_object *o = tok ? json_tokener_parse_ex(tok, r->buf, (int)line) : NULL;
            json_tokener_free(tok);
            memmove(r->buf, nl + 1, r->len - line - 1);
            r->len -= line + 1;
            if (o == NULL)
                H_FAIL("the server sent a line that is not JSON");
            return o;
        }
        scanned = r->len;
        int left = (int)(deadline - h_now_ms());
        if (left <= 0 || raw_fill(r, left) < 0)
            return NULL;
    }
}

int h_raw_wait_eof(struct h_raw *r, int timeout_ms)
{
    int64_t deadline = h_now_ms() + timeout_ms;
    while (!r->eof && !r->error) {
        int left = (int)(deadline - h_now_ms());
        if (left <= 0)
            return ETIMEDOUT;
        raw_fill(r, left);
        r->len = 0; /* discard */
    }
    return r->eof ? 0 : r->error;
}
