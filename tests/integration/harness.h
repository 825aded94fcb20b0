/*
 * harness.h - integration test harness for qchatd.
 *
 * Starts a private qchatd (build dir from $B, default "build") on a free
 * 127.0.0.1 port with its SQLite file, control socket and log in a fresh
 * temporary directory; stops it by PID.  Offers the control socket, the
 * worker processes (/proc), users built on the client library, raw sockets
 * for bytes the client library would never send, and bounded waits.
 *
 * Tests are cmocka tests registered with H_TEST(fn): when one fails, the
 * tail of the server log is printed and the temporary directory is kept.
 * Harness helpers assert through cmocka, so they may only be called from
 * the thread running the test.
 */
#ifndef QCHAT_TESTS_HARNESS_H
#define QCHAT_TESTS_HARNESS_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdbool.h>
#include <limits.h>
#include <sys/types.h>
#include <cmocka.h>
#include <json-c/json.h>

#include "client/qclient.h"
#include "common/proto.h"

#define H_HOST           "127.0.0.1"
#define H_WORKERS        4     /* server.workers unless a test overrides it */
#define H_REPLY_MS       5000  /* longest wait for one expected reply */
#define H_START_MS       10000 /* server start: port accepting, workers up */
#define H_STOP_MS        15000 /* graceful stop before SIGKILL (> shutdown_timeout) */
#define H_LOG_TAIL_LINES 60    /* server log lines shown on a failure */
#define H_NAME_LEN       (QC_NAME_MAX + 1)
#define H_PASSWORD_LEN   32

struct h_server {
    pid_t pid; /* master, 0 when not running */
    int port;
    int workers;             /* expected worker count */
    int exit_status;         /* wait status of the last stop, -1 unknown */
    int leftover_workers;    /* workers still alive after the master stopped */
    char dir[PATH_MAX - 64]; /* temporary directory */
    char log_path[PATH_MAX];
    char db_path[PATH_MAX];
    char ctl_path[PATH_MAX];
};
extern struct h_server h_srv;

/* ---- cmocka glue ---------------------------------------------------- */

struct h_test {
    void (*fn)(void **state);
};
#define H_TEST(f)                                               \
    {                                                           \
#f, h_run_test, NULL, h_test_teardown, &(struct h_test) \
        {                                                       \
            f                                                   \
        }                                                       \
    }
void h_run_test(void **state);
int h_test_teardown(void **state);

/* Run only the tests whose names match $H_FILTER (cmocka glob), if set. */
void h_apply_filter(void);

/* Fail the current test with a formatted message. */
#define H_FAIL(...)               \
    do {                          \
        print_error(__VA_ARGS__); \
        print_error("\n");        \
        fail();                   \
    } while (0)
/* Fail unless cond, with a formatted message saying what was expected. */
#define H_CHECK(cond, ...)                                                         \
    do {                                                                           \
        if (!(cond)) {                                                             \
            print_error("%s:%d: check failed: %s\n  ", __FILE__, __LINE__, #cond); \
            H_FAIL(__VA_ARGS__);                                                   \
        }                                                                          \
    } while (0)

/* ---- the server ----------------------------------------------------- */

/*
 * Start qchatd with the harness options plus extra "-o" values (array
 * ending with NULL, may be NULL).  Waits until the port accepts and the
 * workers are up.  0, or -1 with the log printed.
 */
int server_start(const char *const *extra_opts);
/* SIGTERM, bounded wait, SIGKILL; leftover workers killed by PID.  Idempotent. */
void server_stop(void);
bool server_running(void);
pid_t server_master_pid(void);
/* Children of the master titled "qchatd: worker"; returns the count. */
int server_worker_pids(pid_t *pids, int max);
/* The worker titled "qchatd: worker INDEX", 0 if none. */
pid_t server_worker_pid(int index);
void server_log_tail(int lines);
/*
 * Stop the server with SIGTERM and fail unless it exited 0 within H_STOP_MS,
 * left no worker behind, and its log has no sanitizer report.  Each test
 * file ends with a test calling this.
 */
void h_stop_and_check_clean(void);
/* Run the shell command cmd; out: its stdout (cut at outlen - 1).  Returns its exit status. */
int h_run_capture(const char *cmd, char *out, size_t outlen);
/* QCHAT_TEST_STORAGE=mysql: the servers store in the private MariaDB. */
bool h_storage_is_mysql(void);
/* The MariaDB database a server given storage.path=path uses then. */
void h_mysql_database(const char *path, char *db, size_t len);
/* cmocka group fixtures that start/stop a server with the given options. */
int h_group_setup_with(const char *const *extra_opts);
int h_group_teardown(void **state);

/* ---- control socket ------------------------------------------------- */

/* Send one request line, return the parsed answer (caller puts) or NULL. */
struct json_object *h_ctl(const char *request);
/* The same on another server's control socket (several nodes in one test). */
struct json_object *h_ctl_at(const char *ctl_path, const char *request);
/* Online users: fills ids/workers (max entries), returns count or -1. */
int h_ctl_users(int32_t *ids, int *workers, int max);
/* Worker index holding id, -1 if not online.  Fails the test if ctl fails. */
int h_worker_of(int32_t id);
/* Wait until id is (online) or is not (!online) listed; true if reached. */
bool h_wait_online(int32_t id, bool online, int timeout_ms);

/* ---- users and clients ---------------------------------------------- */

struct h_user {
    int32_t id;
    char name[H_NAME_LEN];
    char password[H_PASSWORD_LEN];
};

/* "TAG_PID_N": unique across tests and runs in parallel. */
void h_unique_name(char *out, size_t outlen, const char *tag);
int64_t h_next_seq(void);

/* Connections opened here are closed in the test teardown if still open. */
struct qclient *h_connect(void);
/* The same to another port on H_HOST (another node, a balancer in front). */
struct qclient *h_connect_to(int port);
void h_close(struct qclient *c);
/* Register a fresh user named after tag on c. */
void h_register(struct qclient *c, struct h_user *u, const char *tag);
/* New connection logged in as u; *ack gets the LOGIN_MSG_ACK if asked. */
struct qclient *h_login(const struct h_user *u, struct json_object **ack);
struct qclient *h_login_presence(const struct h_user *u, struct json_object **ack);
/* New connection to port logged in as u, asking for presence notices or not. */
struct qclient *h_login_to(int port, const struct h_user *u, bool presence,
                           struct json_object **ack);
/* Connect, register and log in a fresh user. */
struct qclient *h_new_user(struct h_user *u, const char *tag);
/* Register a fresh user on a throw-away connection (stays offline). */
void h_new_offline_user(struct h_user *u, const char *tag);
/* n (<= H_WORKERS) fresh users logged in, each on a different worker. */
void h_users_on_workers(struct h_user *u, struct qclient **c, int n, const char *tag,
                        bool presence);

/* ---- requests and replies ------------------------------------------- */

/* Send one JSON text (printf format) / one object (not consumed). */
void h_send(struct qclient *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void h_send_obj(struct qclient *c, struct json_object *o);
/* Next object, whatever it is; fails after H_REPLY_MS or at EOF. */
struct json_object *h_next(struct qclient *c, const char *what);
/* Next object, which must have this msgid. */
struct json_object *h_expect(struct qclient *c, int msgid, const char *what);
/* First object with this msgid, others set aside by the client library. */
struct json_object *h_expect_skip(struct qclient *c, int msgid, const char *what);
/* Next object must be the ACK for seq (msgid 11, req, seq); returns it. */
struct json_object *h_expect_ack(struct qclient *c, int req, int64_t seq, int err,
                                 const char *what);
/* A HEARTBEAT with seq; the next object must be its ACK: nothing else queued. */
void h_expect_quiet(struct qclient *c, const char *what);
/* The server closes c (EOF) within H_REPLY_MS, with nothing before it. */
void h_expect_eof(struct qclient *c, const char *what);
/* Send a request with a fresh seq and expect its ACK with errno err. */
struct json_object *h_request(struct qclient *c, int req, int err, const char *what,
                              const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* ---- JSON field checks ---------------------------------------------- */

bool h_has(struct json_object *o, const char *key);
int64_t h_int(struct json_object *o, const char *key);             /* must be an int */
const char *h_str(struct json_object *o, const char *key);         /* must be a string */
struct json_object *h_arr(struct json_object *o, const char *key); /* must be an array */
/* Array item i must be a string holding a JSON object: parse it (caller puts). */
struct json_object *h_parse_item(struct json_object *arr, size_t i, const char *what);
/* Array field as the seed sends it: absent or empty -> 0 items. */
size_t h_arr_len_opt(struct json_object *o, const char *key);
const char *h_json(struct json_object *o); /* for messages */
/* s as a JSON string literal (quotes, escapes); valid until 8 more calls. */
const char *h_q(const char *s);
/* n bytes of c followed by suffix, in a buffer valid until the next call. */
const char *h_fill(char c, size_t n, const char *suffix);
void h_check_time_fields(struct json_object *msg); /* time, ts */

/* ---- raw sockets ---------------------------------------------------- */

struct h_raw {
    int fd;
    char *buf; /* received bytes not yet returned */
    size_t len, cap;
    bool eof;
    int error; /* errno of a failed read (ECONNRESET...), 0 if none */
};
/* Connect to the server; rcvbuf > 0 sets SO_RCVBUF before connecting. */
void h_raw_connect(struct h_raw *r, int rcvbuf);
void h_raw_close(struct h_raw *r);
/* Write all bytes (bounded); -1 if the peer closed or reset. */
int h_raw_send(struct h_raw *r, const void *p, size_t n);
/* Next newline-terminated object; NULL on timeout/EOF/error. */
struct json_object *h_raw_recv(struct h_raw *r, int timeout_ms);
/* Read until EOF: 0 clean EOF, else the errno (ECONNRESET, ETIMEDOUT). */
int h_raw_wait_eof(struct h_raw *r, int timeout_ms);

/* ---- processes, ports and files (cluster_harness.c and tests too) ---- */

/* PID exists and is neither a zombie nor dead. */
bool h_process_alive(pid_t pid);
/* /proc/PID/cmdline (NULs read as spaces) starts with prefix. */
bool h_process_titled(pid_t pid, const char *prefix);
/* The same, title being a whole word: "qchatd: worker 1" is not "... 10". */
bool h_process_titled_word(pid_t pid, const char *title);
/* Live children of parent whose title starts with prefix; the count (<= max). */
int h_child_pids(pid_t parent, const char *prefix, pid_t *pids, int max);
/*
 * fork and exec argv[0] with argv (NULL-terminated): stdin /dev/null,
 * stdout and stderr appended to log_path after a "# COMMAND" line, SIGTERM
 * when the test process dies.  in_child (may be NULL) runs in the child
 * just before the exec.  The PID, or -1.
 */
pid_t h_spawn_logged(const char *const *argv, const char *log_path, void (*in_child)(void));
/* A port on 127.0.0.1 that was free a moment ago (bind port 0), -1 on failure. */
int h_free_port(void);
/* A TCP connection to 127.0.0.1:port is accepted. */
bool h_port_accepting(int port);
/* Some line of the file holds needle. */
bool h_file_contains(const char *path, const char *needle);
/* The last lines of a file on stderr, between two marker lines. */
void h_file_tail(const char *path, int lines);
/* Lines of a log holding a sanitizer report (the first printed after label); -1 no file. */
int h_sanitizer_lines(const char *path, const char *label);
/* Remove a directory tree ("" does nothing); a failure is said on stderr. */
void h_remove_dir(const char *dir);
/* SIGPIPE ignored, on_signal for SIGINT, SIGTERM, SIGHUP and SIGQUIT, at_exit
 * registered with atexit(), stdout line-buffered. */
void h_install_exit_handlers(void (*on_signal)(int), void (*at_exit)(void));

/* ---- time ----------------------------------------------------------- */

int64_t h_now_ms(void);
void h_sleep_ms(int ms);
/* Poll cond every few ms until true or timeout; returns the last value. */
bool h_wait_for(bool (*cond)(void *arg), void *arg, int timeout_ms);

#endif
