/*
 * cluster_harness.c - starts and stops the private cluster of the
 * integration tests (see cluster_harness.h): MariaDB, Redis and nginx
 * through the shell scripts of tests/harness, the qchatd nodes directly.
 *
 * Everything runs in the test's process group (so `timeout` reaches it);
 * the nodes also get PR_SET_PDEATHSIG.  cl_stop runs from the group
 * teardown and atexit, and a fatal signal kills what is known by PID.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "cluster_harness.h"
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#include <hiredis/hiredis.h>
#include <mysql.h>

#include "server/relay.h"

#define SCRIPT_DIR       "tests/harness"
#define MYSQL_START_S    90    /* mariadb.sh start: install + first answer */
#define SCRIPT_S         30    /* any other script call */
#define NODE_START_MS    15000 /* port accepting, workers up, relay connected */
#define NODE_STOP_MS     15000 /* graceful stop before SIGKILL */
#define CHILD_GONE_MS    5000  /* children of a stopped master to disappear */
#define REDIS_TIMEOUT_MS 2000
#define POLL_MS          20
#define PORT_ATTEMPTS    5
#define MAX_ARGS         64
#define OPT_MAX          (PATH_MAX + 64)
#define NODE_OPTS_MAX    20 /* -o options of one node */
#define LINE_MAX_LEN     4096
#define ENV_VALUE_MAX    PATH_MAX
#define TITLE_ANY        "qchatd:"
#define TITLE_WORKER     "qchatd: worker"
#define TITLE_RELAY      "qchatd: relay"
#define PORT_BUSY_TEXT   "in use"
#define RELAY_CONNECTED  "connected"

struct cl_cluster cl;

static bool initialized;

/* ---- the scripts ------------------------------------------------------ */

static void script_path(char *out, size_t outlen, const char *name)
{
    const char *src = getenv("QCHAT_SRCDIR");
    snprintf(out, outlen, "%s/" SCRIPT_DIR "/%s", src != NULL && *src ? src : ".", name);
}

/*
 * Run "sh SCRIPT ARGS..." with its output appended to DIR/scripts.log,
 * killed after limit_s seconds.  Returns its exit status, -1 if it did not
 * exit normally.
 */
static int run_script(const char *name, const char *const *args, int limit_s)
{
    char script[PATH_MAX], log[PATH_MAX];
    const char *argv[MAX_ARGS];
    int argc = 0;

    script_path(script, sizeof(script), name);
    snprintf(log, sizeof(log), "%s/scripts.log", cl.dir);
    argv[argc++] = "sh";
    argv[argc++] = script;
    for (int i = 0; args[i] != NULL && argc < MAX_ARGS - 1; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;

    pid_t pid = fork();
    if (pid == -1) {
        perror("cluster: fork");
        return -1;
    }
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd == -1 || nul == -1 || dup2(nul, 0) == -1 || dup2(fd, 1) == -1 || dup2(fd, 2) == -1)
            _exit(126);
        signal(SIGPIPE, SIG_DFL);
        execv("/bin/sh", (char *const *)argv);
        _exit(127);
    }
    int64_t deadline = h_now_ms() + (int64_t)limit_s * 1000;
    int status = 0;
    pid_t r;
    while ((r = waitpid(pid, &status, WNOHANG)) == 0 && h_now_ms() < deadline)
        h_sleep_ms(POLL_MS);
    if (r == 0) {
        fprintf(stderr, "cluster: %s %s did not finish within %d s: killed\n", name, args[0],
                limit_s);
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return -1;
    }
    if (r != pid || !WIFEXITED(status)) {
        fprintf(stderr, "cluster: %s %s: wait status 0x%x\n", name, args[0], status);
        return -1;
    }
    if (WEXITSTATUS(status) != 0)
        fprintf(stderr, "cluster: %s %s failed (exit %d), see %s\n", name, args[0],
                WEXITSTATUS(status), log);
    return WEXITSTATUS(status);
}

/* Value of KEY in a file of lines "export KEY='VALUE'"; 0 or -1. */
static int env_file_get(const char *path, const char *key, char *out, size_t outlen)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        fprintf(stderr, "cluster: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[LINE_MAX_LEN];
    int rc = -1;
    size_t klen = strlen(key);
    while (rc != 0 && fgets(line, sizeof(line), f) != NULL) {
        char *p = line;
        if (strncmp(p, "export ", 7) == 0)
            p += 7;
        if (strncmp(p, key, klen) != 0 || p[klen] != '=')
            continue;
        p += klen + 1;
        p[strcspn(p, "\r\n")] = '\0';
        size_t n = strlen(p);
        if (n >= 2 && p[0] == '\'' && p[n - 1] == '\'') {
            p[n - 1] = '\0';
            p++;
        }
        if (strlen(p) < outlen) {
            strcpy(out, p);
            rc = 0;
        }
    }
    fclose(f);
    if (rc != 0)
        fprintf(stderr, "cluster: %s has no %s\n", path, key);
    return rc;
}

static int env_file_int(const char *path, const char *key, int *out)
{
    char v[ENV_VALUE_MAX];
    if (env_file_get(path, key, v, sizeof(v)) != 0)
        return -1;
    *out = atoi(v);
    return *out > 0 ? 0 : -1;
}

/* ---- fatal signals ----------------------------------------------------- */

/* Async-signal-safe: kill what is known by PID, then die of the signal. */
static void on_fatal_signal(int sig)
{
    for (int i = 0; i < CL_NODES; i++) {
        if (cl.node[i].pid > 0)
            kill(cl.node[i].pid, SIGKILL);
        for (int k = 0; k < CL_MAX_CHILDREN; k++)
            if (cl.node[i].children[k] > 0)
                kill(cl.node[i].children[k], SIGKILL);
    }
    if (cl.nginx_pid > 0)
        kill(cl.nginx_pid, SIGTERM);
    if (cl.redis_pid > 0)
        kill(cl.redis_pid, SIGTERM);
    for (int k = 0; cl.redis_cluster && k < cl.redis_nodes; k++)
        if (cl.redis_pids[k] > 0)
            kill(cl.redis_pids[k], SIGTERM);
    if (cl.own_mysql && cl.mysql_pid > 0)
        kill(cl.mysql_pid, SIGTERM);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void stop_at_exit(void)
{
    cl_stop();
}

static void init_once(void)
{
    if (initialized)
        return;
    initialized = true;
    h_install_exit_handlers(on_fatal_signal, stop_at_exit);
    for (int i = 0; i < CL_NODES; i++) {
        cl.node[i].index = i;
        cl.node[i].exit_status = -1;
    }
}

/* ---- MariaDB ------------------------------------------------------------ */

static int read_password(char *out, size_t outlen)
{
    FILE *f = fopen(cl.mysql_password_file, "re");
    if (f == NULL) {
        fprintf(stderr, "cluster: %s: %s\n", cl.mysql_password_file, strerror(errno));
        return -1;
    }
    if (fgets(out, (int)outlen, f) == NULL)
        out[0] = '\0';
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
    return 0;
}

/* Run one statement as the qchat user (which may create and drop qchat_*). */
static int mysql_exec(const char *sql)
{
    char password[256];
    if (read_password(password, sizeof(password)) != 0)
        return -1;
    MYSQL *m = mysql_init(NULL);
    if (m == NULL)
        return -1;
    int rc = -1;
    if (mysql_real_connect(m, NULL, cl.mysql_user, password, NULL, 0, cl.mysql_socket, 0) == NULL)
        fprintf(stderr, "cluster: mysql connect %s: %s\n", cl.mysql_socket, mysql_error(m));
    else if (mysql_query(m, sql) != 0)
        fprintf(stderr, "cluster: %s: %s\n", sql, mysql_error(m));
    else
        rc = 0;
    explicit_bzero(password, sizeof(password));
    mysql_close(m);
    return rc;
}

static int mysql_from_environment(void)
{
    const char *sock = getenv("QCHAT_MYSQL_SOCKET");
    const char *user = getenv("QCHAT_MYSQL_USER");
    const char *pwf = getenv("QCHAT_MYSQL_PASSWORD_FILE");
    if (sock == NULL || *sock == '\0' || user == NULL || pwf == NULL)
        return -1;
    snprintf(cl.mysql_socket, sizeof(cl.mysql_socket), "%s", sock);
    snprintf(cl.mysql_user, sizeof(cl.mysql_user), "%s", user);
    snprintf(cl.mysql_password_file, sizeof(cl.mysql_password_file), "%s", pwf);
    cl.own_mysql = false;
    fprintf(stderr, "cluster: using the exported MariaDB at %s\n", sock);
    return 0;
}

static int mysql_start_own(void)
{
    char env[PATH_MAX];
    int pid = 0;
    snprintf(cl.mysql_dir, sizeof(cl.mysql_dir), "%s/mariadb", cl.dir);
    const char *args[] = { "start", cl.mysql_dir, NULL };
    cl.own_mysql = true;
    if (run_script("mariadb.sh", args, MYSQL_START_S) != 0)
        return -1;
    snprintf(env, sizeof(env), "%s/env", cl.mysql_dir);
    if (env_file_int(env, "QCHAT_MYSQL_PID", &pid) != 0 ||
        env_file_get(env, "QCHAT_MYSQL_SOCKET", cl.mysql_socket, sizeof(cl.mysql_socket)) != 0 ||
        env_file_get(env, "QCHAT_MYSQL_USER", cl.mysql_user, sizeof(cl.mysql_user)) != 0 ||
        env_file_get(env, "QCHAT_MYSQL_PASSWORD_FILE", cl.mysql_password_file,
                     sizeof(cl.mysql_password_file)) != 0)
        return -1;
    cl.mysql_pid = pid;
    return 0;
}

static int mysql_setup(void)
{
    if (mysql_from_environment() != 0 && mysql_start_own() != 0)
        return -1;
    char sql[256];
    snprintf(cl.database, sizeof(cl.database), "qchat_cl%d", (int)getpid());
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS `%s`", cl.database);
    if (mysql_exec(sql) != 0)
        return -1;
    snprintf(sql, sizeof(sql), "CREATE DATABASE `%s` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
             cl.database);
    return mysql_exec(sql);
}

static void mysql_teardown(void)
{
    if (cl.own_mysql) {
        if (cl.mysql_dir[0] != '\0') {
            const char *args[] = { "stop", cl.mysql_dir, NULL };
            run_script("mariadb.sh", args, MYSQL_START_S);
        }
        cl.mysql_pid = 0;
    } else if (cl.database[0] != '\0') {
        char sql[256];
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS `%s`", cl.database);
        mysql_exec(sql);
    }
    cl.database[0] = '\0';
}

/* ---- Redis -------------------------------------------------------------- */

/* Up to CL_REDIS_NODES_MAX numbers from a space-separated list; how many. */
static int parse_numbers(const char *list, int *out)
{
    int n = 0;
    char *end;
    for (long v = strtol(list, &end, 10); end != list && n < CL_REDIS_NODES_MAX;
         v = strtol(list, &end, 10)) {
        out[n++] = (int)v;
        list = end;
    }
    return n;
}

/* Every master of the cluster from redis.env (redis_cluster.sh). */
static int redis_cluster_nodes(const char *env)
{
    char pids[ENV_VALUE_MAX], ports[ENV_VALUE_MAX];
    int p[CL_REDIS_NODES_MAX];
    if (env_file_get(env, "QCHAT_REDIS_PIDS", pids, sizeof(pids)) != 0 ||
        env_file_get(env, "QCHAT_REDIS_PORTS", ports, sizeof(ports)) != 0)
        return -1;
    int n = parse_numbers(pids, p);
    if (parse_numbers(ports, cl.redis_ports) != n || n == 0)
        return -1;
    for (int k = 0; k < n; k++)
        cl.redis_pids[k] = p[k];
    cl.redis_nodes = n;
    return 0;
}

/* port 0: a fresh Redis (or cluster); else the same one again after cl_redis_kill. */
static int redis_start(int port)
{
    char env[PATH_MAX], portbuf[16];
    int pid = 0;
    snprintf(portbuf, sizeof(portbuf), "%d", port);
    const char *args[] = { "start", cl.redis_dir, port > 0 ? portbuf : NULL, NULL };
    const char *again[] = { "restart", cl.redis_dir, NULL };
    if (cl.redis_cluster) {
        if (run_script("redis_cluster.sh", port > 0 ? again : args, SCRIPT_S) != 0)
            return -1;
    } else if (run_script("redis.sh", args, SCRIPT_S) != 0) {
        return -1;
    }
    snprintf(env, sizeof(env), "%s/redis.env", cl.redis_dir);
    if (env_file_int(env, "QCHAT_REDIS_PID", &pid) != 0 ||
        env_file_int(env, "QCHAT_REDIS_PORT", &cl.redis_port) != 0)
        return -1;
    if (cl.redis_cluster && redis_cluster_nodes(env) != 0)
        return -1;
    cl.redis_pid = pid;
    return 0;
}

static int kill_and_wait(pid_t pid)
{
    if (pid <= 0 || kill(pid, SIGKILL) != 0)
        return -1;
    int64_t deadline = h_now_ms() + CHILD_GONE_MS;
    while (h_process_alive(pid) && h_now_ms() < deadline)
        h_sleep_ms(POLL_MS);
    return h_process_alive(pid) ? -1 : 0;
}

int cl_redis_kill(void)
{
    if (cl.redis_pid <= 0)
        return -1;
    int rc = 0;
    if (cl.redis_cluster) {
        for (int k = 0; k < cl.redis_nodes; k++)
            if (kill_and_wait(cl.redis_pids[k]) != 0)
                rc = -1;
    } else {
        rc = kill_and_wait(cl.redis_pid);
    }
    if (rc == 0)
        cl.redis_pid = 0;
    return rc;
}

int cl_redis_restart(void)
{
    return redis_start(cl.redis_port);
}

static void redis_stop(void)
{
    if (cl.redis_dir[0] != '\0') {
        const char *args[] = { "stop", cl.redis_dir, NULL };
        run_script(cl.redis_cluster ? "redis_cluster.sh" : "redis.sh", args, SCRIPT_S);
    }
    cl.redis_pid = 0;
}

/* A connection to the Redis (or cluster node) on port, with the harness's timeout; NULL. */
static redisContext *redis_at(int port)
{
    struct timeval tv = { REDIS_TIMEOUT_MS / 1000, (REDIS_TIMEOUT_MS % 1000) * 1000 };
    redisContext *c = redisConnectWithTimeout(H_HOST, port, tv);
    if (c == NULL || c->err || redisSetTimeout(c, tv) != REDIS_OK) {
        if (c != NULL)
            redisFree(c);
        return NULL;
    }
    return c;
}

static long numsub_at(int port, int32_t uid)
{
    redisContext *c = redis_at(port);
    if (c == NULL)
        return -1;
    long n = -1;
    redisReply *r = redisCommand(c, "PUBSUB %s " RELAY_CHANNEL_PREFIX "%d",
                                 cl.redis_cluster ? "SHARDNUMSUB" : "NUMSUB", (int)uid);
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_INTEGER)
        n = (long)r->element[1]->integer;
    if (r != NULL)
        freeReplyObject(r);
    redisFree(c);
    return n;
}

long cl_numsub(int32_t uid)
{
    if (!cl.redis_cluster)
        return numsub_at(cl.redis_port, uid);
    long most = -1; /* only the master of the channel's slot counts its subscribers */
    for (int k = 0; k < cl.redis_nodes; k++) {
        long n = numsub_at(cl.redis_ports[k], uid);
        if (n > most)
            most = n;
    }
    return most;
}

/* The integer reply to "CMD KEY" on port; none: no answer (or MOVED: another master's key). */
static long integer_at(int port, const char *cmd, const char *key, long none)
{
    redisContext *c = redis_at(port);
    if (c == NULL)
        return none;
    long v = none;
    redisReply *r = redisCommand(c, "%s %s", cmd, key);
    if (r != NULL && r->type == REDIS_REPLY_INTEGER)
        v = (long)r->integer;
    if (r != NULL)
        freeReplyObject(r);
    redisFree(c);
    return v;
}

/* integer_at on Redis; on a cluster the highest any master gives (the others answer MOVED). */
static long integer_of_key(const char *cmd, const char *key, long none)
{
    if (!cl.redis_cluster)
        return integer_at(cl.redis_port, cmd, key, none);
    long most = none;
    for (int k = 0; k < cl.redis_nodes; k++) {
        long v = integer_at(cl.redis_ports[k], cmd, key, none);
        if (v > most)
            most = v;
    }
    return most;
}

/* TTL: seconds, -1 without expiry, -2 missing; LONG_MIN: no answer. */
long cl_gen_ttl(int32_t uid)
{
    char key[64];
    snprintf(key, sizeof key, "qchat:gen:%d", (int)uid);
    return integer_of_key("TTL", key, LONG_MIN);
}

long cl_registry_len(int32_t uid)
{
    char key[64];
    snprintf(key, sizeof key, "qchat:s:%d", (int)uid);
    return integer_of_key("HLEN", key, -1);
}

bool cl_wait_registry_len(int32_t uid, long want, int timeout_ms)
{
    int64_t deadline = h_now_ms() + timeout_ms;
    for (;;) {
        if (cl_registry_len(uid) == want)
            return true;
        if (h_now_ms() >= deadline)
            return false;
        h_sleep_ms(POLL_MS);
    }
}

bool cl_wait_numsub(int32_t uid, long want, int timeout_ms)
{
    int64_t deadline = h_now_ms() + timeout_ms;
    for (;;) {
        long n = cl_numsub(uid);
        if (n == want)
            return true;
        if (h_now_ms() >= deadline)
            return false;
        h_sleep_ms(POLL_MS);
    }
}

/* ---- nginx -------------------------------------------------------------- */

static int nginx_start(void)
{
    char env[PATH_MAX], up[CL_NODES][64];
    const char *args[4 + CL_NODES];
    int argc = 0, pid = 0;

    snprintf(cl.nginx_dir, sizeof(cl.nginx_dir), "%s/nginx", cl.dir);
    args[argc++] = "start";
    args[argc++] = cl.nginx_dir;
    args[argc++] = "0";
    for (int i = 0; i < CL_NODES; i++) {
        snprintf(up[i], sizeof(up[i]), H_HOST ":%d", cl.node[i].port);
        args[argc++] = up[i];
    }
    args[argc] = NULL;
    if (run_script("nginx.sh", args, SCRIPT_S) != 0)
        return -1;
    snprintf(env, sizeof(env), "%s/nginx.env", cl.nginx_dir);
    if (env_file_int(env, "QCHAT_NGINX_PID", &pid) != 0 ||
        env_file_int(env, "QCHAT_NGINX_PORT", &cl.nginx_port) != 0)
        return -1;
    cl.nginx_pid = pid;
    return 0;
}

static void nginx_stop(void)
{
    if (cl.nginx_dir[0] != '\0') {
        const char *args[] = { "stop", cl.nginx_dir, NULL };
        run_script("nginx.sh", args, SCRIPT_S);
    }
    cl.nginx_pid = 0;
}

/* ---- the nodes ------------------------------------------------------------ */

static void remember_child(struct cl_node *n, pid_t pid)
{
    int free_slot = -1;
    for (int k = 0; k < CL_MAX_CHILDREN; k++) {
        if (n->children[k] == pid)
            return;
        if (free_slot < 0 && (n->children[k] == 0 || !h_process_alive(n->children[k])))
            free_slot = k;
    }
    if (free_slot >= 0)
        n->children[free_slot] = pid;
}

int cl_node_children(int i, pid_t *pids, int max)
{
    struct cl_node *n = &cl.node[i];
    pid_t seen[CL_MAX_CHILDREN];
    if (n->pid <= 0)
        return 0;
    int count = h_child_pids(n->pid, TITLE_ANY, seen, CL_MAX_CHILDREN);
    for (int k = 0; k < count; k++) {
        remember_child(n, seen[k]);
        if (pids != NULL && k < max)
            pids[k] = seen[k];
    }
    return count;
}

int cl_node_workers(int i)
{
    pid_t pids[CL_MAX_CHILDREN];
    int n = cl_node_children(i, pids, CL_MAX_CHILDREN), workers = 0;
    for (int k = 0; k < n && k < CL_MAX_CHILDREN; k++)
        if (h_process_titled(pids[k], TITLE_WORKER))
            workers++;
    return workers;
}

pid_t cl_node_relay_pid(int i)
{
    pid_t pids[CL_MAX_CHILDREN];
    int n = cl_node_children(i, pids, CL_MAX_CHILDREN);
    for (int k = 0; k < n && k < CL_MAX_CHILDREN; k++)
        if (h_process_titled(pids[k], TITLE_RELAY))
            return pids[k];
    return 0;
}

pid_t cl_node_worker_pid(int i, int index)
{
    pid_t pids[CL_MAX_CHILDREN];
    char title[64];
    int n = cl_node_children(i, pids, CL_MAX_CHILDREN);
    snprintf(title, sizeof(title), TITLE_WORKER " %d", index);
    for (int k = 0; k < n && k < CL_MAX_CHILDREN; k++)
        if (h_process_titled_word(pids[k], title))
            return pids[k];
    return 0;
}

bool cl_node_running(int i)
{
    struct cl_node *n = &cl.node[i];
    if (n->pid <= 0)
        return false;
    int status;
    pid_t r = waitpid(n->pid, &status, WNOHANG);
    if (r == n->pid) {
        n->exit_status = status;
        fprintf(stderr, "cluster: node %d master %d exited (status 0x%x)\n", i + 1, (int)n->pid,
                status);
        n->pid = 0;
        return false;
    }
    return true;
}

const char *cl_node_opts[CL_EXTRA_OPTS + 1];

static pid_t spawn_node(int i)
{
    struct cl_node *n = &cl.node[i];
    const char *bdir = getenv("B");
    char bin[PATH_MAX];
    static char opt[NODE_OPTS_MAX][OPT_MAX];
    const char *argv[MAX_ARGS];
    int argc = 0, o = 0;

    snprintf(bin, sizeof(bin), "%s/qchatd", bdir != NULL && *bdir ? bdir : "build");
    if (access(bin, X_OK) != 0) {
        fprintf(stderr, "cluster: %s is not there (build it first): %s\n", bin, strerror(errno));
        return -1;
    }
    snprintf(opt[o++], OPT_MAX, "server.listen=" H_HOST ":%d", n->port);
    snprintf(opt[o++], OPT_MAX, "server.node_id=%d", i + 1);
    snprintf(opt[o++], OPT_MAX, "server.workers=%d", CL_WORKERS);
    snprintf(opt[o++], OPT_MAX, "server.control_socket=%s", n->ctl_path);
    snprintf(opt[o++], OPT_MAX, "storage.driver=mysql");
    snprintf(opt[o++], OPT_MAX, "storage.socket=%s", cl.mysql_socket);
    snprintf(opt[o++], OPT_MAX, "storage.user=%s", cl.mysql_user);
    snprintf(opt[o++], OPT_MAX, "storage.password_file=%s", cl.mysql_password_file);
    snprintf(opt[o++], OPT_MAX, "storage.database=%s", cl.database);
    snprintf(opt[o++], OPT_MAX, "redis.host=" H_HOST);
    snprintf(opt[o++], OPT_MAX, "redis.port=%d", cl.redis_port);
    snprintf(opt[o++], OPT_MAX, "redis.cluster=%s", cl.redis_cluster ? "yes" : "no");
    snprintf(opt[o++], OPT_MAX, "security.password_cost=1");
    snprintf(opt[o++], OPT_MAX, "log.level=debug");
    /* The seed's immediate ADD_FRIEND, which the presence tests rely on. */
    snprintf(opt[o++], OPT_MAX, "social.friend_consent=no");
    argv[argc++] = bin;
    argv[argc++] = "-f";
    for (int k = 0; k < o; k++) {
        argv[argc++] = "-o";
        argv[argc++] = opt[k];
    }
    for (int k = 0; k < CL_EXTRA_OPTS && cl_node_opts[k] != NULL; k++) {
        argv[argc++] = "-o";
        argv[argc++] = cl_node_opts[k];
    }
    argv[argc] = NULL;
    return h_spawn_logged(argv, n->log_path, NULL);
}

enum ready { READY, PORT_BUSY, NOT_READY };

static enum ready wait_node_ready(int i)
{
    struct cl_node *n = &cl.node[i];
    int64_t deadline = h_now_ms() + NODE_START_MS;
    char state[64] = "";
    bool accepting = false;

    while (h_now_ms() < deadline) {
        if (!cl_node_running(i))
            return h_file_contains(n->log_path, PORT_BUSY_TEXT) ? PORT_BUSY : NOT_READY;
        if (!accepting)
            accepting = h_port_accepting(n->port);
        if (accepting && cl_node_workers(i) >= CL_WORKERS &&
            cl_relay_state(i, state, sizeof(state)) && strcmp(state, RELAY_CONNECTED) == 0)
            return READY;
        h_sleep_ms(POLL_MS);
    }
    fprintf(stderr,
            "cluster: node %d not ready within %d ms (accepting %d, workers %d, "
            "relay \"%s\")\n",
            i + 1, NODE_START_MS, accepting, cl_node_workers(i), state);
    return NOT_READY;
}

int cl_node_start(int i)
{
    struct cl_node *n = &cl.node[i];
    init_once();
    if (n->pid > 0)
        cl_node_stop(i);
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/node%d.log", cl.dir, i + 1);
    memcpy(n->log_path, path, sizeof(path));
    snprintf(path, sizeof(path), "%s/node%d.sock", cl.dir, i + 1);
    memcpy(n->ctl_path, path, sizeof(path));
    n->exit_status = -1;
    bool fixed_port = n->port > 0;

    for (int attempt = 0; attempt < PORT_ATTEMPTS; attempt++) {
        if (!fixed_port)
            n->port = h_free_port();
        if (n->port <= 0)
            return -1;
        n->pid = spawn_node(i);
        if (n->pid <= 0) {
            n->pid = 0;
            return -1;
        }
        switch (wait_node_ready(i)) {
        case READY:
            fprintf(stderr, "cluster: node %d: qchatd %d on " H_HOST ":%d\n", i + 1, (int)n->pid,
                    n->port);
            return 0;
        case PORT_BUSY:
            cl_node_stop(i);
            if (fixed_port) {
                h_sleep_ms(POLL_MS * 10); /* the old sockets may linger a moment */
                continue;
            }
            continue;
        case NOT_READY: break;
        }
        break;
    }
    cl.failed = true;
    cl_node_stop(i);
    return -1;
}

/* Wait for the remembered children of node i to be gone; kill the rest. */
static int reap_children(struct cl_node *n)
{
    int64_t deadline = h_now_ms() + CHILD_GONE_MS;
    int left = 0;
    for (int k = 0; k < CL_MAX_CHILDREN; k++) {
        pid_t pid = n->children[k];
        if (pid <= 0)
            continue;
        while (h_process_alive(pid) && h_process_titled(pid, TITLE_ANY) && h_now_ms() < deadline)
            h_sleep_ms(POLL_MS);
        if (h_process_alive(pid) && h_process_titled(pid, TITLE_ANY)) {
            fprintf(stderr, "cluster: killing leftover child %d of node %d\n", (int)pid,
                    n->index + 1);
            kill(pid, SIGKILL);
            left++;
        }
        n->children[k] = 0;
    }
    return left;
}

void cl_node_stop(int i)
{
    struct cl_node *n = &cl.node[i];
    if (n->pid > 0) {
        pid_t pids[CL_MAX_CHILDREN];
        int count = cl_node_children(i, pids, CL_MAX_CHILDREN);
        for (int k = 0; k < count && k < CL_MAX_CHILDREN; k++)
            kill(pids[k], SIGCONT); /* a test may have stopped one */
        kill(n->pid, SIGTERM);
        int64_t deadline = h_now_ms() + NODE_STOP_MS;
        int status = 0;
        pid_t r;
        while ((r = waitpid(n->pid, &status, WNOHANG)) == 0 && h_now_ms() < deadline)
            h_sleep_ms(POLL_MS);
        if (r == 0) {
            fprintf(stderr, "cluster: node %d (%d) did not stop within %d ms: SIGKILL\n", i + 1,
                    (int)n->pid, NODE_STOP_MS);
            kill(n->pid, SIGKILL);
            r = waitpid(n->pid, &status, 0);
        }
        n->exit_status = r == n->pid ? status : -1;
        n->pid = 0;
    }
    n->leftover_children = reap_children(n);
}

void cl_resume_all(void)
{
    pid_t pids[CL_MAX_CHILDREN];
    for (int i = 0; i < CL_NODES; i++) {
        int n = cl_node_children(i, pids, CL_MAX_CHILDREN);
        for (int k = 0; k < n && k < CL_MAX_CHILDREN; k++)
            kill(pids[k], SIGCONT);
    }
}

void cl_node_kill(int i)
{
    struct cl_node *n = &cl.node[i];
    pid_t pids[CL_MAX_CHILDREN];
    if (n->pid <= 0)
        return;
    int count = cl_node_children(i, pids, CL_MAX_CHILDREN);
    /*
     * Frozen first, then killed: otherwise a worker scheduled between the
     * master's SIGKILL and its own sees the master gone and says "server
     * shutting down" to its clients, which a node dying at once never does.
     */
    kill(n->pid, SIGSTOP);
    for (int k = 0; k < count && k < CL_MAX_CHILDREN; k++)
        kill(pids[k], SIGSTOP);
    kill(n->pid, SIGKILL);
    for (int k = 0; k < count && k < CL_MAX_CHILDREN; k++)
        kill(pids[k], SIGKILL);
    int status = 0;
    if (waitpid(n->pid, &status, 0) == n->pid)
        n->exit_status = status;
    n->pid = 0;
    n->leftover_children = reap_children(n);
}

/* ---- control socket ------------------------------------------------------ */

bool cl_relay_state(int i, char *out, size_t outlen)
{
    struct json_object *o = h_ctl_at(cl.node[i].ctl_path, "{\"cmd\":\"status\"}"), *relay, *st;
    bool ok = o != NULL && json_object_object_get_ex(o, "relay", &relay) &&
              json_object_object_get_ex(relay, "state", &st) &&
              json_object_is_type(st, json_type_string);
    if (ok)
        snprintf(out, outlen, "%s", json_object_get_string(st));
    json_object_put(o);
    return ok;
}

bool cl_wait_relay(int i, const char *state, int timeout_ms)
{
    int64_t deadline = h_now_ms() + timeout_ms;
    char now[64];
    for (;;) {
        if (cl_relay_state(i, now, sizeof(now)) && strcmp(now, state) == 0)
            return true;
        if (h_now_ms() >= deadline)
            return false;
        h_sleep_ms(POLL_MS);
    }
}

int cl_worker_of(int i, int32_t uid)
{
    struct json_object *o = h_ctl_at(cl.node[i].ctl_path, "{\"cmd\":\"users\"}"), *users;
    int worker = -1;
    if (o != NULL && json_object_object_get_ex(o, "users", &users) &&
        json_object_is_type(users, json_type_array)) {
        size_t len = json_object_array_length(users);
        for (size_t k = 0; k < len && worker < 0; k++) {
            struct json_object *u = json_object_array_get_idx(users, k), *id, *w;
            if (json_object_object_get_ex(u, "id", &id) && json_object_get_int64(id) == uid &&
                json_object_object_get_ex(u, "worker", &w))
                worker = json_object_get_int(w);
        }
    }
    json_object_put(o);
    return worker;
}

static bool node_lists(int i, int32_t uid)
{
    return cl_worker_of(i, uid) >= 0;
}

int cl_node_of(int32_t uid)
{
    for (int i = 0; i < CL_NODES; i++)
        if (cl.node[i].pid > 0 && node_lists(i, uid))
            return i;
    return -1;
}

bool cl_wait_node_of(int32_t uid, int node, int timeout_ms)
{
    int64_t deadline = h_now_ms() + timeout_ms;
    for (;;) {
        if (cl_node_of(uid) == node)
            return true;
        if (h_now_ms() >= deadline)
            return false;
        h_sleep_ms(POLL_MS);
    }
}

/* ---- logs ------------------------------------------------------------------ */

void cl_log_tails(int lines)
{
    char path[PATH_MAX];
    for (int i = 0; i < CL_NODES; i++)
        if (cl.node[i].log_path[0] != '\0')
            h_file_tail(cl.node[i].log_path, lines);
    if (cl.nginx_dir[0] != '\0') {
        snprintf(path, sizeof(path), "%s/error.log", cl.nginx_dir);
        h_file_tail(path, lines / 4);
    }
}

int cl_sanitizer_lines(int i)
{
    char label[32];
    snprintf(label, sizeof(label), "node %d log", i + 1);
    int found = h_sanitizer_lines(cl.node[i].log_path, label);
    return found < 0 ? 0 : found;
}

/* ---- everything ------------------------------------------------------------ */

int cl_start(void)
{
    init_once();
    if (cl.dir[0] != '\0')
        cl_stop();
    const char *tmp = getenv("TMPDIR");
    snprintf(cl.dir, sizeof(cl.dir), "%s/qchat-cl.XXXXXX", tmp != NULL && *tmp ? tmp : "/tmp");
    if (mkdtemp(cl.dir) == NULL) {
        fprintf(stderr, "cluster: mkdtemp %s: %s\n", cl.dir, strerror(errno));
        cl.dir[0] = '\0';
        return -1;
    }
    snprintf(cl.redis_dir, sizeof(cl.redis_dir), "%s/redis", cl.dir);
    const char *rc_env = getenv("QCHAT_TEST_REDIS_CLUSTER");
    cl.redis_cluster = rc_env != NULL && strcmp(rc_env, "1") == 0;
    int64_t t0 = h_now_ms();
    if (mysql_setup() != 0 || redis_start(0) != 0)
        goto failed;
    for (int i = 0; i < CL_NODES; i++) {
        cl.node[i].port = 0;
        if (cl_node_start(i) != 0)
            goto failed;
    }
    if (nginx_start() != 0)
        goto failed;
    fprintf(stderr, "cluster: up in %lld ms: dir %s, database %s, redis %d, nginx %d, nodes",
            (long long)(h_now_ms() - t0), cl.dir, cl.database, cl.redis_port, cl.nginx_port);
    for (int i = 0; i < CL_NODES; i++)
        fprintf(stderr, " %d", cl.node[i].port);
    fprintf(stderr, "\n");
    return 0;

failed:
    cl.failed = true;
    cl_log_tails(40);
    cl_stop();
    return -1;
}

void cl_stop(void)
{
    if (cl.dir[0] == '\0')
        return;
    nginx_stop();
    for (int i = 0; i < CL_NODES; i++)
        cl_node_stop(i);
    redis_stop();
    mysql_teardown();
    if (cl.failed) {
        if (cl.own_mysql && cl.mysql_dir[0] != '\0') {
            char data[PATH_MAX];
            snprintf(data, sizeof(data), "%s/data", cl.mysql_dir);
            h_remove_dir(data); /* ~100 MB; the logs stay */
        }
        fprintf(stderr, "cluster: kept the logs in %s for inspection\n", cl.dir);
    } else {
        h_remove_dir(cl.dir);
    }
    cl.dir[0] = '\0';
}

/* ---- cmocka glue ---------------------------------------------------------- */

static bool test_done;

void cl_run_test(void **state)
{
    test_done = false;
    h_run_test(state);
    test_done = true;
}

static void redis_resume(void)
{
    if (cl.redis_pid > 0)
        kill(cl.redis_pid, SIGCONT);
    for (int k = 0; cl.redis_cluster && k < cl.redis_nodes; k++)
        if (cl.redis_pids[k] > 0)
            kill(cl.redis_pids[k], SIGCONT);
}

int cl_test_teardown(void **state)
{
    if (!test_done) {
        cl.failed = true;
        cl_resume_all();
        redis_resume();
        cl_log_tails(CL_FAIL_TAIL_LINES);
    }
    return h_test_teardown(state);
}

int cl_group_setup(void **state)
{
    return cl_start() == 0 ? 0 : -1;
}

int cl_group_teardown(void **state)
{
    cl_stop();
    return 0;
}
