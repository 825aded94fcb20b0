/*
 * main.c - qchatd's command line: load the configuration, check it (-t),
 * create the schema (--init-db), or daemonize (-d) and become the master.
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

#include "common/config.h"
#include "common/log.h"
#include "common/net.h"
#include "server/master.h"
#include "server/online.h"
#include "server/relay.h"
#include "store/store.h"

#define QCHATD_VERSION "0.1.0"
#define MAX_OVERRIDES  256
#define FD_RESERVE     64 /* descriptors besides clients: links, store, logs */

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

/* Open the store once: proves it is reachable and creates the schema. */
static int check_storage(const struct qc_config *cfg, bool init_schema)
{
    const struct store_ops *ops = store_driver(cfg->storage_driver);
    char err[QC_CONFIG_ERR_MAX];
    struct store *st;
    if (ops == NULL) {
        fprintf(stderr, "qchatd: storage driver '%s' is not available\n", cfg->storage_driver);
        return -1;
    }
    if (ops->open(&st, cfg, err, sizeof err) != 0) {
        fprintf(stderr, "qchatd: storage (%s): %s\n", cfg->storage_driver, err);
        return -1;
    }
    int rc = 0;
    if (init_schema && ops->init_schema(st) != 0) {
        fprintf(stderr, "qchatd: storage (%s): creating the schema failed\n", cfg->storage_driver);
        rc = -1;
    }
    ops->close(st);
    return rc;
}

/* Taken before anything else is opened: a second start says "already running". */
static struct pidfh *claim_pidfile(const struct qc_config *cfg)
{
    pid_t other;
    struct pidfh *pfh = pidfile_open(cfg->pidfile, 0644, &other);
    if (pfh == NULL) {
        if (errno == EEXIST)
            fprintf(stderr, "qchatd: already running, pid %d (%s)\n", (int)other, cfg->pidfile);
        else
            fprintf(stderr, "qchatd: pidfile %s: %s\n", cfg->pidfile, strerror(errno));
    }
    return pfh;
}

static int daemonize(struct pidfh *pfh)
{
    if (daemon(0, 0) < 0) {
        fprintf(stderr, "qchatd: daemon: %s\n", strerror(errno));
        return -1;
    }
    pidfile_write(pfh);
    return 0;
}

/* Open everything the master needs, then become it.  Returns the exit status. */
static int serve(const struct master_args *args, const struct qc_config *cfg, struct pidfh *pfh)
{
    char err[QC_CONFIG_ERR_MAX];
    if (log_open_configured(cfg) < 0) {
        fprintf(stderr, "qchatd: cannot open the log: %s\n", strerror(errno));
        return 1;
    }
    log_set_role("master");
    raise_fd_limit(cfg);
    if (check_storage(cfg, false) < 0)
        return 1;
    int listen_fd = net_listen_tcp(cfg->listen, err, sizeof err);
    if (listen_fd < 0) {
        fprintf(stderr, "qchatd: listen %s: %s\n", cfg->listen, err);
        return 1;
    }
    struct online_table *online = online_create((uint32_t)cfg->max_users);
    struct guard *guard = online ? guard_create() : NULL;
    if (online == NULL || guard == NULL) {
        fprintf(stderr, "qchatd: shared tables for %d users: %s\n", cfg->max_users,
                strerror(errno));
        online_destroy(online);
        close(listen_fd);
        return 1;
    }
    online_set_node(online, cfg->node_id);
    if (cfg->mid_file[0] != '\0' && online_mid_file(online, cfg->mid_file, err, sizeof err) < 0)
        log_warning("%s; message ids rely on the clock alone and may repeat after a quick "
                    "restart that follows a burst",
                    err);
    int rc = 1;
    if (pfh == NULL || daemonize(pfh) == 0)
        rc = master_run(args, cfg, listen_fd, online, guard);
    online_destroy(online);
    guard_destroy(guard);
    return rc;
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

    setproctitle_init(argc, argv, environ);
    while ((opt = getopt_long(argc, argv, "c:o:tfdVh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': args.config_path = optarg; break;
        case 'o':
            if (args.noverrides == MAX_OVERRIDES) {
                fprintf(stderr, "qchatd: too many -o options (at most %d)\n", MAX_OVERRIDES);
                return 1;
            }
            overrides[args.noverrides++] = optarg;
            break;
        case 't': test_only = true; break;
        case 'f': detach = false; break;
        case 'd': detach = true; break;
        case 'I': init_db = true; break;
        case 'V': printf("qchatd %s\n", QCHATD_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 1;
    }

    struct qc_config cfg;
    char err[QC_CONFIG_ERR_MAX];
    const char *path = args.config_path ? args.config_path : QC_DEFAULT_CONFIG;
    if (master_load_config(&args, &cfg, err, sizeof err) < 0) {
        fprintf(stderr, "qchatd: %s\n", err);
        if (test_only)
            fprintf(stderr, "qchatd: configuration file %s test failed\n", path);
        return 1;
    }
    if (test_only) {
        const char *shown = cfg.source[0] ? cfg.source : "(built-in defaults)";
        printf("qchatd: the configuration file %s syntax is ok\n", shown);
        if (check_storage(&cfg, false) < 0) {
            fprintf(stderr, "qchatd: configuration file %s test failed\n", shown);
            return 1;
        }
        printf("qchatd: storage (%s) is reachable\n", cfg.storage_driver);
        if (cfg.redis_host[0]) {
            if (relay_check_redis(&cfg, err, sizeof err) < 0) {
                fprintf(stderr, "qchatd: %s\n", err);
                fprintf(stderr, "qchatd: configuration file %s test failed\n", shown);
                return 1;
            }
            printf("qchatd: redis %s:%d is reachable\n", cfg.redis_host, cfg.redis_port);
        }
        printf("qchatd: configuration file %s test is successful\n", shown);
        return 0;
    }
    if (init_db) {
        if (check_storage(&cfg, true) < 0)
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
