/*
 * main.c - qchatd's command line: load the configuration, check it (-t),
 * create the schema (--init-db), or daemonize (-d) and become the master.
 *
 * Every error goes through the logger, so under systemd it reaches the
 * journal at priority err ("journalctl -p err -u qchatd" shows why a start
 * failed).  A configuration the operator must fix exits with
 * QCHATD_EXIT_CONFIG (78), which the units name in RestartPreventExitStatus=.
 *
 *   qchatd [-c FILE] [-o SECTION.KEY=VALUE]... [-t] [-f | -d] [--init-db] [-V] [-h]
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <libutil.h>
#include <systemd/sd-daemon.h>

#include "common/config.h"
#include "common/log.h"
#include "common/net.h"
#include "server/master.h"
#include "server/metrics.h"
#include "server/online.h"
#include "server/preflight.h"
#include "server/relay.h"
#include "server/ws_conn.h"
#include "server/title.h"

#define QCHATD_VERSION "0.1.0"
#define MAX_OVERRIDES  256
#define FD_RESERVE     64 /* descriptors besides clients: links, store, logs */
/*
 * The start time systemd grants beyond its TimeoutStartSec while the store
 * opens: opening applies the schema migrations the database lacks, and on
 * a large store one can outlast the default 90 s (migration 004 indexes
 * every cursor: about 1.2 s per million on MariaDB).
 */
#define STORE_OPEN_EXTEND_USEC (30ULL * 60 * 1000000)

extern char **environ;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: qchatd [-c FILE] [-o SECTION.KEY=VALUE]... [-t] [-f | -d] [--init-db]\n"
            "  -c FILE        configuration file (default %s; optional)\n"
            "  -o S.K=V       override one key, e.g. -o server.listen=127.0.0.1:7000\n"
            "  -t             check the configuration and the storage, then exit\n"
            "  -f             stay in the foreground (default)\n"
            "  -d             daemonize and write server.pidfile\n"
            "  --init-db      create the database schema, then exit\n"
            "  -V             print the version\n",
            QC_DEFAULT_CONFIG);
}

/*
 * One descriptor per client: take the whole hard limit (systemd's LimitNOFILE
 * sets it), and say so when it cannot hold max_users connections.
 */
static void raise_fd_limit(const struct qc_config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            log_warning("cannot raise the open-file limit to %llu: %s",
                        (unsigned long long)rl.rlim_max, strerror(errno));
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)cfg->max_users + FD_RESERVE)
        log_warning("open-file limit %llu is below server.max_users (%d) + %d: raise LimitNOFILE",
                    (unsigned long long)rl.rlim_cur, cfg->max_users, FD_RESERVE);
}

/*
 * The kernel shortens any accept queue to net.core.somaxconn without a word:
 * say so, since the queue is what absorbs a reconnect storm (qchatd.conf(5)).
 */
static void warn_if_backlog_capped(const struct qc_config *cfg)
{
    int cap = net_somaxconn();
    if (cap > 0 && cap < cfg->listen_backlog)
        log_warning("server.listen_backlog %d is capped at net.core.somaxconn %d: raise the "
                    "sysctl for the longer queue",
                    cfg->listen_backlog, cap);
}

/* Taken before anything else is opened: a second start says "already running". */
static struct pidfh *claim_pidfile(const struct qc_config *cfg)
{
    pid_t other;
    struct pidfh *pfh = pidfile_open(cfg->pidfile, 0644, &other);
    if (pfh == NULL) {
        if (errno == EEXIST)
            log_error("already running, pid %d (%s)", (int)other, cfg->pidfile);
        else
            log_error("pidfile %s: %s", cfg->pidfile, strerror(errno));
    }
    return pfh;
}

static int daemonize(struct pidfh *pfh)
{
    if (daemon(0, 0) < 0) {
        log_error("daemon: %s", strerror(errno));
        return -1;
    }
    pidfile_write(pfh);
    return 0;
}

/* The shared memory every child writes: online table, flood guard, metrics. */
struct shared {
    struct online_table *online;
    struct guard *guard;
    struct metrics *metrics;
};

static int map_shared(const struct qc_config *cfg, struct shared *sh)
{
    sh->online = online_create((uint32_t)cfg->max_users);
    sh->guard = sh->online ? guard_create() : NULL;
    sh->metrics = sh->guard ? metrics_create() : NULL;
    if (sh->metrics == NULL) {
        log_error("shared tables for %d users: %s", cfg->max_users, strerror(errno));
        return -1;
    }
    online_set_node(sh->online, cfg->node_id);
    return 0;
}

static void unmap_shared(struct shared *sh)
{
    online_destroy(sh->online);
    guard_destroy(sh->guard);
    metrics_destroy(sh->metrics);
}

/* Open everything the master needs, then become it.  Returns the exit status. */
static int serve(const struct master_args *args, const struct qc_config *cfg, struct pidfh *pfh)
{
    char err[QC_CONFIG_ERR_MAX];
    bool config_error;
    if (log_open_configured(cfg) < 0) {
        log_error("cannot open the log (log.file %s): %s", cfg->log_file, strerror(errno));
        return QCHATD_EXIT_CONFIG;
    }
    log_set_role("master");
    raise_fd_limit(cfg);
    sd_notifyf(0,
               "EXTEND_TIMEOUT_USEC=%llu\nSTATUS=opening the store, applying any schema migration",
               STORE_OPEN_EXTEND_USEC);
    if (preflight_storage(cfg, &config_error) < 0)
        return config_error ? QCHATD_EXIT_CONFIG : 1;
    if (preflight_runtime_dir(cfg->control_socket, "server.control_socket") < 0 ||
        (pfh && preflight_runtime_dir(cfg->pidfile, "server.pidfile") < 0))
        return QCHATD_EXIT_CONFIG;
    int listen_fd = net_listen_tcp(cfg->listen, cfg->listen_backlog, err, sizeof err);
    if (listen_fd < 0) {
        log_error("server.listen %s: %s", cfg->listen, err);
        return 1;
    }
    warn_if_backlog_capped(cfg);
    if (ws_conn_listen(cfg) < 0) { /* [websocket] listen, shared by the workers */
        close(listen_fd);
        return 1;
    }
    struct shared sh = { 0 };
    if (map_shared(cfg, &sh) < 0) {
        unmap_shared(&sh);
        close(listen_fd);
        return 1;
    }
    if (cfg->mid_file[0] != '\0' && online_mid_file(sh.online, cfg->mid_file, err, sizeof err) < 0)
        log_warning("%s; message ids rely on the clock alone and may repeat after a quick "
                    "restart that follows a burst",
                    err);
    int rc = 1;
    if (pfh == NULL || daemonize(pfh) == 0)
        rc = master_run(args, cfg, listen_fd, sh.online, sh.guard);
    unmap_shared(&sh);
    return rc;
}

/* -t: like nginx -t, results on stdout, errors through the logger; creates nothing. */
static int test_config(const struct qc_config *cfg)
{
    char err[QC_CONFIG_ERR_MAX];
    const char *shown = cfg->source[0] ? cfg->source : "(built-in defaults)";
    printf("qchatd: the configuration file %s syntax is ok\n", shown);
    fflush(stdout);
    if (preflight_test_storage(cfg) < 0) {
        log_error("configuration file %s test failed", shown);
        return 1;
    }
    printf("qchatd: storage (%s) is reachable\n", cfg->storage_driver);
    if (cfg->redis_host[0]) {
        if (relay_check_redis(cfg, err, sizeof err) < 0) {
            log_error("%s", err);
            log_error("configuration file %s test failed", shown);
            return 1;
        }
        printf("qchatd: redis %s:%d is reachable\n", cfg->redis_host, cfg->redis_port);
    }
    printf("qchatd: configuration file %s test is successful\n", shown);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "init-db", no_argument, NULL, 'I' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    static const char *overrides[MAX_OVERRIDES];
    struct master_args args = { .overrides = overrides };
    bool test_only = false, init_db = false, detach = false;
    int opt;

    title_init(argc, argv, environ);
    opterr = 0; /* getopt's own messages would bypass the logger */
    while ((opt = getopt_long(argc, argv, "c:o:tfdVh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': args.config_path = optarg; break;
        case 'o':
            if (args.noverrides == MAX_OVERRIDES) {
                log_error("too many -o options (at most %d)", MAX_OVERRIDES);
                return QCHATD_EXIT_CONFIG;
            }
            overrides[args.noverrides++] = optarg;
            break;
        case 't': test_only = true; break;
        case 'f': detach = false; break;
        case 'd': detach = true; break;
        case 'I': init_db = true; break;
        case 'V': printf("qchatd %s\n", QCHATD_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: log_error("bad option %s (qchatd -h lists them)", argv[optind - 1]); return 1;
        }
    }
    if (optind != argc) {
        log_error("unexpected argument '%s' (qchatd -h lists the options)", argv[optind]);
        return 1;
    }

    struct qc_config cfg;
    char err[QC_CONFIG_ERR_MAX];
    const char *path = args.config_path ? args.config_path : QC_DEFAULT_CONFIG;
    if (master_load_config(&args, &cfg, err, sizeof err) < 0) {
        log_error("%s", err);
        if (test_only) {
            log_error("configuration file %s test failed", path);
            return 1;
        }
        return QCHATD_EXIT_CONFIG;
    }
    if (test_only)
        return test_config(&cfg);
    if (init_db) {
        if (preflight_open_store(&cfg, true) < 0)
            return 1;
        printf("qchatd: schema ready (%s)\n", cfg.storage_driver);
        return 0;
    }
    struct pidfh *pfh = NULL;
    if (detach && (pfh = claim_pidfile(&cfg)) == NULL)
        return 1;
    int rc = serve(&args, &cfg, pfh);
    if (pfh)
        pidfile_remove(pfh);
    return rc;
}
