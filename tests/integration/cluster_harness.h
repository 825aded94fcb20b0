/*
 * cluster_harness.h - a private qchat cluster for the integration tests:
 * MariaDB, Redis, CL_NODES qchatd nodes (node_id 1..CL_NODES, storage
 * mysql, redis configured) and nginx's TCP balancer in front of them, all
 * on 127.0.0.1 ports under one temporary directory, every process stopped
 * by PID.
 *
 * MariaDB, Redis and nginx come from tests/harness/{mariadb,redis,nginx}.sh
 * (found under $QCHAT_SRCDIR, default the current directory).  A MariaDB
 * already exported by the runner (QCHAT_MYSQL_SOCKET, QCHAT_MYSQL_USER,
 * QCHAT_MYSQL_PASSWORD_FILE) is used instead of starting one, with a
 * database of its own that is dropped at the end; Redis and nginx are
 * always private, because the fault tests kill Redis.
 *
 * Use with the single-node harness (harness.h) for clients and checks:
 * h_connect_to(cl.node[i].port), h_login_to(...), h_ctl_at(cl.node[i].ctl_path).
 */
#ifndef QCHAT_TESTS_CLUSTER_HARNESS_H
#define QCHAT_TESTS_CLUSTER_HARNESS_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define CL_NODES        2
#define CL_WORKERS      2  /* server.workers of each node */
#define CL_MAX_CHILDREN 64 /* workers + relay of one node, remembered for kill */
#define CL_DIR_MAX      (PATH_MAX - 256)
#define CL_SUBDIR_MAX   (CL_DIR_MAX + 32) /* a directory under dir */
#define CL_NAME_MAX     128

struct cl_node {
    int index; /* 0 .. CL_NODES-1 (node_id index + 1) */
    pid_t pid; /* master, 0 when not running */
    int port;
    int exit_status;                 /* wait status of the last stop, -1 unknown */
    int leftover_children;           /* children alive after the master stopped */
    pid_t children[CL_MAX_CHILDREN]; /* workers and relay seen, for kill -9 */
    char log_path[PATH_MAX];
    char ctl_path[PATH_MAX];
};

#define CL_REDIS_NODES_MAX 3 /* masters of the test's Redis Cluster */

struct cl_cluster {
    char dir[CL_DIR_MAX]; /* temporary directory, "" when none */
    struct cl_node node[CL_NODES];

    bool own_mysql; /* started here (else taken from the environment) */
    pid_t mysql_pid;
    char mysql_dir[CL_SUBDIR_MAX];
    char mysql_socket[PATH_MAX];
    char mysql_user[CL_NAME_MAX];
    char mysql_password_file[PATH_MAX];
    char database[CL_NAME_MAX];

    pid_t redis_pid;
    int redis_port;
    char redis_dir[CL_SUBDIR_MAX];
    /*
     * QCHAT_TEST_REDIS_CLUSTER=1: a three-master Redis Cluster
     * (tests/harness/redis_cluster.sh) instead of one Redis, the nodes with
     * redis.cluster=yes; redis_pid/redis_port are its seed, these all nodes.
     */
    bool redis_cluster;
    int redis_nodes;
    pid_t redis_pids[CL_REDIS_NODES_MAX];
    int redis_ports[CL_REDIS_NODES_MAX];

    pid_t nginx_pid;
    int nginx_port;
    char nginx_dir[CL_SUBDIR_MAX];

    bool failed; /* keep the directory for inspection */
};
extern struct cl_cluster cl;

/*
 * Extra "KEY=VALUE" options (-o) for every node started from now on, after
 * the harness's own (so they win); NULL-terminated, at most CL_EXTRA_OPTS.
 * A test that sets them restarts the nodes (cl_node_start) and clears them
 * when done.
 */
#define CL_EXTRA_OPTS 8
extern const char *cl_node_opts[CL_EXTRA_OPTS + 1];

/* Everything up: MariaDB, Redis, the nodes (relays connected), nginx.  0 or -1. */
int cl_start(void);
/* Everything down, by PID; the directory removed unless a test failed.  Idempotent. */
void cl_stop(void);

/* Start node i on its port (a fresh one if 0); waits for workers, control socket, relay. */
int cl_node_start(int i);
/* SIGTERM, bounded wait, SIGKILL; then its children by PID.  Idempotent. */
void cl_node_stop(int i);
/* SIGCONT every child of every node (a failed test may have left one stopped). */
void cl_resume_all(void);
/* SIGKILL the master and every child (workers, relay) at once, by PID. */
void cl_node_kill(int i);
bool cl_node_running(int i);
/* The node's child titled "qchatd: relay", 0 if none. */
pid_t cl_node_relay_pid(int i);
/* The node's child titled "qchatd: worker INDEX", 0 if none; live workers counted. */
pid_t cl_node_worker_pid(int i, int index);
int cl_node_workers(int i);
/* Worker index holding uid on node i ({"cmd":"users"}), -1 if not there. */
int cl_worker_of(int i, int32_t uid);
/* The node's live children (workers and relay); remembers them.  Returns the count. */
int cl_node_children(int i, pid_t *pids, int max);

/* SIGKILL Redis (every master of a cluster) / start it again on the same port(s).  0 or -1. */
int cl_redis_kill(void);
int cl_redis_restart(void);

/* The relay state from {"cmd":"status"} ("connected", ...) into out; false if none. */
bool cl_relay_state(int i, char *out, size_t outlen);
bool cl_wait_relay(int i, const char *state, int timeout_ms);
/*
 * PUBSUB NUMSUB qchat:u:<uid> (a cluster: PUBSUB SHARDNUMSUB, the highest
 * count any master gives): subscriber count, -1 when Redis does not answer.
 */
long cl_numsub(int32_t uid);
bool cl_wait_numsub(int32_t uid, long want, int timeout_ms);
/*
 * Sessions of uid in the cluster's session registry (HLEN qchat:s:<uid>,
 * fields whose deadline passed included until a claim drops them); -1 when
 * Redis does not answer.
 */
long cl_registry_len(int32_t uid);
bool cl_wait_registry_len(int32_t uid, long want, int timeout_ms);
/* TTL in seconds of the user's login generation key (qchat:gen:<uid>), as TTL says. */
long cl_gen_ttl(int32_t uid);
/* Index of the node listing uid in {"cmd":"users"}, -1 if none. */
int cl_node_of(int32_t uid);
bool cl_wait_node_of(int32_t uid, int node, int timeout_ms);

/* The last lines of every node's log (and nginx's error log) on stderr. */
void cl_log_tails(int lines);
/* Lines of node i's log holding a sanitizer report (printed); 0 if clean. */
int cl_sanitizer_lines(int i);

/*
 * cmocka glue of the cluster tests: CL_TEST(f) runs f like H_TEST, and a
 * test that did not finish marks the cluster failed (its directory kept),
 * resumes every node's children and Redis (a failed pause test may have
 * left them stopped) and prints CL_FAIL_TAIL_LINES of every log.
 * cl_group_setup/teardown start and stop the whole cluster.
 */
#define CL_FAIL_TAIL_LINES 60
void cl_run_test(void **state);
int cl_test_teardown(void **state);
int cl_group_setup(void **state);
int cl_group_teardown(void **state);
#define CL_TEST(f)                                                \
    {                                                             \
#f, cl_run_test, NULL, cl_test_teardown, &(struct h_test) \
        {                                                         \
            f                                                     \
        }                                                         \
    }

#endif
