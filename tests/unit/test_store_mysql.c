/*
 * test_store_mysql.c - the MySQL storage driver against a private MariaDB.
 *
 * The server comes from tests/harness/mariadb.sh (its DIR/env exported:
 * QCHAT_MYSQL_SOCKET, QCHAT_MYSQL_USER, QCHAT_MYSQL_PASSWORD_FILE,
 * QCHAT_MYSQL_PID); without it every test is skipped with a note.  Each
 * test gets a fresh database qchat_u<pid>_<n>, dropped afterwards.  The
 * cases are those of test_store.c (the SQLite driver) with the same
 * expectations, plus what only a server can do: lose the connection (KILL
 * from a second client) and stop answering (SIGSTOP of mariadbd).  The
 * schema test reads sql/mysql/schema.sql below $QCHAT_SRCDIR (default ".").
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <mysql.h>

#include "common/config.h"
#include "common/proto.h"
#include "store/store.h"

#define SCHEMA_FILE     "sql/mysql/schema.sql"
#define NO_SUCH_ID      999999
#define LIST_MAX        16
#define MSG_MAX         512
#define SMALL_CAP       3
#define CONCURRENT_MSGS 100          /* per writer in the concurrency tests */
#define CHILD_ALARM_SEC 60           /* a stuck child dies instead of hanging */
#define ERR_MAX         512
#define SQL_MAX         1024
#define DBNAME_MAX      64
#define BIG_MSG         (200 * 1024) /* bigger than any first column buffer */
#define MANY_USERS      150          /* more than two offline batches */
#define OUTAGE_MAX_MS   8000         /* a hung server costs a call at most this */
#define FAST_FAIL_MS    500          /* a call while it is known to be down */
#define RECOVER_MAX_MS  10000        /* back to work after SIGCONT */
#define POLL_MS         100
#define SCHEMA_TABLES   6
#define GUARD_MS        60000        /* SIGCONT by a guard process if the test dies */

static const char *const tables[SCHEMA_TABLES] = {
    "User", "Friend", "AllGroup", "GroupUser", "OfflineMessage", "OfflineDropped",
};

/* From the harness environment; socket empty: no server, skip. */
static struct {
    char  socket[PATH_MAX];
    char  user[QC_CONFIG_STR_MAX];
    char  password_file[PATH_MAX];
    char  password[QC_CONFIG_STR_MAX];
    pid_t pid;
} env;

static pid_t stopped_pid;            /* mariadbd while a test holds it stopped */
static pid_t guard_pid;              /* resumes it should this process die first */
static unsigned db_counter;

struct fixture {
    char   db[DBNAME_MAX];
    struct qc_config cfg;
    const struct store_ops *ops;
    struct store *st;
    MYSQL *admin;                    /* the test's own connection, on db */
};

struct seen {
    int     n;
    int32_t ids[LIST_MAX];
    char    names[LIST_MAX][QC_NAME_MAX + 1];
    char    extra[LIST_MAX][QC_GROUPDESC_MAX + 1];   /* role or description */
};

struct msgs {
    int    n;
    size_t len[LIST_MAX * 16];
    char   text[LIST_MAX * 16][MSG_MAX];
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---- the environment ------------------------------------------------ */

static void read_first_line(const char *path, char *out, size_t size)
{
    FILE *fp = fopen(path, "re");

    out[0] = '\0';
    if (fp == NULL)
        return;
    if (fgets(out, (int)size, fp) == NULL)
        out[0] = '\0';
    out[strcspn(out, "\r\n")] = '\0';
    fclose(fp);
}

static void load_env(void)
{
    const char *sock = getenv("QCHAT_MYSQL_SOCKET");
    const char *user = getenv("QCHAT_MYSQL_USER");
    const char *pwf = getenv("QCHAT_MYSQL_PASSWORD_FILE");
    const char *pid = getenv("QCHAT_MYSQL_PID");

    if (sock == NULL || user == NULL || pwf == NULL || pid == NULL || *sock == '\0') {
        fprintf(stderr, "test_store_mysql: no private MariaDB (QCHAT_MYSQL_SOCKET, "
                "QCHAT_MYSQL_USER, QCHAT_MYSQL_PASSWORD_FILE, QCHAT_MYSQL_PID unset): "
                "skipping.  Start one with: tests/harness/mariadb.sh start DIR && "
                "set -a && . DIR/env && set +a\n");
        return;
    }
    strlcpy(env.socket, sock, sizeof(env.socket));
    strlcpy(env.user, user, sizeof(env.user));
    strlcpy(env.password_file, pwf, sizeof(env.password_file));
    read_first_line(pwf, env.password, sizeof(env.password));
    env.pid = (pid_t)atoi(pid);
}

#define NEED_SERVER() do { if (env.socket[0] == '\0') skip(); } while (0)

/* A raw connection of the test's own; db may be NULL. */
static MYSQL *connect_raw(const char *db, unsigned long flags)
{
    MYSQL *m = mysql_init(NULL);

    assert_non_null(m);
    assert_int_equal(mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4"), 0);
    if (mysql_real_connect(m, NULL, env.user, env.password, db, 0, env.socket, flags) == NULL)
        fail_msg("connecting to %s as %s: %s", env.socket, env.user, mysql_error(m));
    return m;
}

static void raw_exec(MYSQL *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void raw_exec(MYSQL *m, const char *fmt, ...)
{
    char sql[SQL_MAX];
    MYSQL_RES *res;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    if (mysql_query(m, sql) != 0)
        fail_msg("%s: %s", sql, mysql_error(m));
    res = mysql_store_result(m);
    if (res != NULL)
        mysql_free_result(res);
}

/* First column of the first row of a query, as a number (-1: no row). */
static long long raw_int(MYSQL *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static long long raw_int(MYSQL *m, const char *fmt, ...)
{
    char sql[SQL_MAX];
    MYSQL_RES *res;
    MYSQL_ROW row;
    long long v = -1;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    if (mysql_query(m, sql) != 0)
        fail_msg("%s: %s", sql, mysql_error(m));
    res = mysql_store_result(m);
    assert_non_null(res);
    row = mysql_fetch_row(res);
    if (row != NULL && row[0] != NULL)
        v = strtoll(row[0], NULL, 10);
    mysql_free_result(res);
    return v;
}

/* ---- fixture -------------------------------------------------------- */

static void fill_config(struct qc_config *cfg, const char *db)
{
    config_defaults(cfg);
    strlcpy(cfg->storage_driver, "mysql", sizeof(cfg->storage_driver));
    strlcpy(cfg->storage_socket, env.socket, sizeof(cfg->storage_socket));
    strlcpy(cfg->storage_user, env.user, sizeof(cfg->storage_user));
    strlcpy(cfg->storage_password_file, env.password_file, sizeof(cfg->storage_password_file));
    strlcpy(cfg->storage_database, db, sizeof(cfg->storage_database));
}

static struct store *open_store(struct fixture *f, int cap)
{
    struct qc_config cfg = f->cfg;
    char err[ERR_MAX] = "";
    struct store *st = NULL;

    cfg.max_offline_messages = cap;
    if (f->ops->open(&st, &cfg, err, sizeof(err)) != QC_OK)
        fail_msg("open: %s", err);
    assert_non_null(st);
    return st;
}

static void new_database(MYSQL *m, char *name, size_t size)
{
    snprintf(name, size, "qchat_u%d_%u", (int)getpid(), ++db_counter);
    raw_exec(m, "CREATE DATABASE `%s` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", name);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    *state = f;
    f->ops = store_driver("mysql");
    assert_non_null(f->ops);
    if (env.socket[0] == '\0')
        return 0;
    f->admin = connect_raw(NULL, 0);
    new_database(f->admin, f->db, sizeof(f->db));
    assert_int_equal(mysql_select_db(f->admin, f->db), 0);
    fill_config(&f->cfg, f->db);
    f->st = open_store(f, f->cfg.max_offline_messages);
    return 0;
}

static void resume_server(void)
{
    if (stopped_pid > 0) {
        kill(stopped_pid, SIGCONT);
        stopped_pid = 0;
    }
    if (guard_pid > 0) {
        kill(guard_pid, SIGKILL);
        (void)waitpid(guard_pid, NULL, 0);
        guard_pid = 0;
    }
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    resume_server();                    /* a failed outage test must not leave it stopped */
    if (f->st != NULL)
        f->ops->close(f->st);
    if (f->admin != NULL) {
        if (mysql_ping(f->admin) != 0) {        /* killed or timed out: a new one */
            mysql_close(f->admin);
            f->admin = connect_raw(NULL, 0);
        }
        raw_exec(f->admin, "DROP DATABASE IF EXISTS `%s`", f->db);
        mysql_close(f->admin);
    }
    free(f);
    return 0;
}

/* ---- helpers -------------------------------------------------------- */

static int32_t new_user(struct fixture *f, const char *name)
{
    int32_t id = 0;

    assert_int_equal(f->ops->user_create(f->st, name, "$y$hash", &id), QC_OK);
    assert_true(id > 0);
    return id;
}

static void seen_user(void *arg, int32_t id, const char *name)
{
    struct seen *s = arg;

    assert_true(s->n < LIST_MAX);
    s->ids[s->n] = id;
    strlcpy(s->names[s->n], name, sizeof(s->names[0]));
    s->n++;
}

static void seen_member(void *arg, int32_t id, const char *name, const char *role)
{
    struct seen *s = arg;

    seen_user(s, id, name);
    strlcpy(s->extra[s->n - 1], role, sizeof(s->extra[0]));
}

static void seen_group(void *arg, int32_t groupid, const char *name, const char *desc)
{
    struct seen *s = arg;

    seen_user(s, groupid, name);
    strlcpy(s->extra[s->n - 1], desc, sizeof(s->extra[0]));
}

static void seen_msg(void *arg, const char *msg, size_t len)
{
    struct msgs *m = arg;

    assert_true(m->n < (int)(sizeof(m->len) / sizeof(m->len[0])));
    assert_true(len < MSG_MAX);
    memcpy(m->text[m->n], msg, len);
    m->text[m->n][len] = '\0';
    m->len[m->n] = len;
    m->n++;
}

static void store_text(struct fixture *f, struct store *st, const int32_t *ids, size_t n,
                       const char *text)
{
    assert_int_equal(f->ops->offline_store(st, ids, n, text, strlen(text)), QC_OK);
}

static int offline_count(struct fixture *f, int32_t id)
{
    int n = -1;

    assert_int_equal(f->ops->offline_count(f->st, id, &n), QC_OK);
    return n;
}

/* The id of the driver's connection to f->db (the only one besides admin's). */
static long long driver_connection(struct fixture *f)
{
    return raw_int(f->admin, "SELECT id FROM information_schema.PROCESSLIST"
                   " WHERE db = '%s' AND id <> CONNECTION_ID() ORDER BY id LIMIT 1", f->db);
}

/* ---- tests ---------------------------------------------------------- */

static void test_driver_lookup(void **state)
{
    (void)state;
    assert_ptr_equal(store_driver("mysql"), &store_mysql_ops);
    assert_string_equal(store_mysql_ops.name, "mysql");
    assert_ptr_equal(store_driver("sqlite"), &store_sqlite_ops);
    assert_null(store_driver("MySQL"));
}

/* Read a whole file into a NUL-terminated buffer (caller frees). */
static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "re");
    char *text;
    long size;

    if (fp == NULL)
        fail_msg("%s: %s (set QCHAT_SRCDIR to the project root)", path, strerror(errno));
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    size = ftell(fp);
    assert_true(size > 0);
    rewind(fp);
    text = calloc(1, (size_t)size + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)size, fp), (size_t)size);
    fclose(fp);
    return text;
}

/* Run a file of statements on m (multi-statement connection). */
static void run_sql_file(MYSQL *m, const char *path)
{
    char *text = slurp(path);
    MYSQL_RES *res;
    int rc;

    if (mysql_real_query(m, text, strlen(text)) != 0)
        fail_msg("%s: %s", path, mysql_error(m));
    do {
        res = mysql_store_result(m);
        if (res != NULL)
            mysql_free_result(res);
        else if (mysql_field_count(m) != 0)
            fail_msg("%s: %s", path, mysql_error(m));
        rc = mysql_next_result(m);
        if (rc > 0)
            fail_msg("%s: %s", path, mysql_error(m));
    } while (rc == 0);
    free(text);
}

/* SHOW CREATE TABLE without the AUTO_INCREMENT=N counter. */
static void table_definition(MYSQL *m, const char *db, const char *table, char *out, size_t size)
{
    char sql[SQL_MAX], *p;
    MYSQL_RES *res;
    MYSQL_ROW row;

    snprintf(sql, sizeof(sql), "SHOW CREATE TABLE `%s`.`%s`", db, table);
    if (mysql_query(m, sql) != 0)
        fail_msg("%s: %s", sql, mysql_error(m));
    res = mysql_store_result(m);
    assert_non_null(res);
    row = mysql_fetch_row(res);
    assert_non_null(row);
    strlcpy(out, row[1], size);
    mysql_free_result(res);
    p = strstr(out, " AUTO_INCREMENT=");
    if (p != NULL)
        memmove(p, p + strcspn(p + 1, " ") + 1, strlen(p + strcspn(p + 1, " ") + 1) + 1);
}

/* The driver's tables (built at open) are those of sql/mysql/schema.sql. */
static void test_schema_matches_file(void **state)
{
    struct fixture *f = *state;
    const char *srcdir = getenv("QCHAT_SRCDIR");
    char path[PATH_MAX], other[DBNAME_MAX], a[SQL_MAX * 2], b[SQL_MAX * 2];
    MYSQL *m;
    size_t i;

    NEED_SERVER();
    snprintf(path, sizeof(path), "%s/%s", srcdir != NULL ? srcdir : ".", SCHEMA_FILE);
    new_database(f->admin, other, sizeof(other));
    m = connect_raw(other, CLIENT_MULTI_STATEMENTS);
    run_sql_file(m, path);
    run_sql_file(m, path);                      /* idempotent */
    assert_int_equal(raw_int(m, "SELECT count(*) FROM information_schema.TABLES"
                             " WHERE table_schema = '%s'", other), SCHEMA_TABLES);
    assert_int_equal(raw_int(m, "SELECT count(*) FROM information_schema.TABLES"
                             " WHERE table_schema = '%s'", f->db), SCHEMA_TABLES);
    for (i = 0; i < SCHEMA_TABLES; i++) {
        table_definition(m, f->db, tables[i], a, sizeof(a));
        table_definition(m, other, tables[i], b, sizeof(b));
        assert_string_equal(a, b);
        assert_non_null(strstr(a, "ENGINE=InnoDB"));
        assert_non_null(strstr(a, "CHARSET=utf8mb4"));
    }
    raw_exec(m, "DROP DATABASE `%s`", other);
    mysql_close(m);
}

/* Write a password file with mode; returns its path in out. */
static void password_file(const char *dir, const char *name, const char *text, mode_t mode,
                          char *out, size_t size)
{
    int fd;

    snprintf(out, size, "%s/%s", dir, name);
    fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(fchmod(fd, mode), 0);
    assert_int_equal(close(fd), 0);
}

static void expect_open_error(struct fixture *f, const struct qc_config *cfg, const char *want)
{
    struct store *st = NULL;
    char err[ERR_MAX] = "";
    int64_t t0 = now_ms();

    assert_int_equal(f->ops->open(&st, cfg, err, sizeof(err)), QC_ESTORAGE);
    assert_null(st);
    if (strstr(err, want) == NULL)
        fail_msg("open error \"%s\" does not say \"%s\"", err, want);
    if (env.password[0] != '\0' && strstr(err, env.password) != NULL)
        fail_msg("open error shows the password");
    assert_true(now_ms() - t0 < OUTAGE_MAX_MS);
}

static void test_open_errors(void **state)
{
    struct fixture *f = *state;
    char dir[] = "/tmp/qchat-test-mysql-XXXXXX", path[PATH_MAX], text[QC_CONFIG_STR_MAX + 2];
    struct qc_config cfg;

    NEED_SERVER();
    assert_non_null(mkdtemp(dir));

    cfg = f->cfg;
    password_file(dir, "open", env.password, 0644, path, sizeof(path));
    strlcpy(cfg.storage_password_file, path, sizeof(cfg.storage_password_file));
    expect_open_error(f, &cfg, "group or others");
    assert_int_equal(unlink(path), 0);

    cfg = f->cfg;
    snprintf(cfg.storage_password_file, sizeof(cfg.storage_password_file), "%s/missing", dir);
    expect_open_error(f, &cfg, "No such file or directory");

    cfg = f->cfg;
    password_file(dir, "wrong", "not-the-password\n", 0600, path, sizeof(path));
    strlcpy(cfg.storage_password_file, path, sizeof(cfg.storage_password_file));
    expect_open_error(f, &cfg, "Access denied");
    assert_int_equal(unlink(path), 0);

    /* A trailing newline (CRLF too) is not part of the password. */
    cfg = f->cfg;
    snprintf(text, sizeof(text), "%s\r\n", env.password);
    password_file(dir, "crlf", text, 0400, path, sizeof(path));
    strlcpy(cfg.storage_password_file, path, sizeof(cfg.storage_password_file));
    {
        struct store *st = NULL;
        char err[ERR_MAX] = "";

        if (f->ops->open(&st, &cfg, err, sizeof(err)) != QC_OK)
            fail_msg("open with a CRLF password file: %s", err);
        assert_true(f->ops->ping(st));
        f->ops->close(st);
    }
    assert_int_equal(unlink(path), 0);

    cfg = f->cfg;
    strlcpy(cfg.storage_database, "qchat_no_such_database", sizeof(cfg.storage_database));
    expect_open_error(f, &cfg, "qchat_no_such_database");

    cfg = f->cfg;
    snprintf(cfg.storage_socket, sizeof(cfg.storage_socket), "%s/no.sock", dir);
    expect_open_error(f, &cfg, "no.sock");

    /* TCP to a port nobody listens on (host and port instead of the socket). */
    cfg = f->cfg;
    cfg.storage_socket[0] = '\0';
    strlcpy(cfg.storage_host, "127.0.0.1", sizeof(cfg.storage_host));
    cfg.storage_port = 1;
    expect_open_error(f, &cfg, "127.0.0.1:1");

    assert_int_equal(rmdir(dir), 0);
}

/* Over TCP (host and port) as well as the socket. */
static void test_tcp(void **state)
{
    struct fixture *f = *state;
    const char *port = getenv("QCHAT_MYSQL_PORT");
    struct store *st = NULL;
    struct store_user u;
    char err[ERR_MAX] = "";
    struct qc_config cfg = f->cfg;
    int32_t alice;

    NEED_SERVER();
    if (port == NULL)
        skip();
    alice = new_user(f, "alice");
    cfg.storage_socket[0] = '\0';
    strlcpy(cfg.storage_host, "127.0.0.1", sizeof(cfg.storage_host));
    cfg.storage_port = atoi(port);
    if (f->ops->open(&st, &cfg, err, sizeof(err)) != QC_OK)
        fail_msg("open over TCP: %s", err);
    assert_int_equal(f->ops->user_get(st, alice, &u), QC_OK);
    assert_string_equal(u.name, "alice");
    f->ops->close(st);
}

static void test_reopen_ping_init_schema(void **state)
{
    struct fixture *f = *state;
    struct store_user u;
    int32_t id;

    NEED_SERVER();
    id = new_user(f, "alice");
    assert_true(f->ops->ping(f->st));
    assert_int_equal(f->ops->init_schema(f->st), QC_OK);
    f->ops->close(f->st);
    f->st = open_store(f, f->cfg.max_offline_messages);
    assert_int_equal(f->ops->init_schema(f->st), QC_OK);
    assert_int_equal(f->ops->user_get(f->st, id, &u), QC_OK);
    assert_string_equal(u.name, "alice");
}

static void test_users(void **state)
{
    struct fixture *f = *state;
    char longname[QC_NAME_MAX + 2];
    struct store_user u;
    int32_t alice, bob, id = 0;

    NEED_SERVER();
    alice = new_user(f, "alice");
    bob = new_user(f, "bob");
    assert_int_not_equal(alice, bob);

    assert_int_equal(f->ops->user_create(f->st, "alice", "x", &id), QC_ENAMETAKEN);
    assert_int_equal(f->ops->user_create(f->st, "Alice", "x", &id), QC_OK);

    memset(&u, 0, sizeof(u));
    assert_int_equal(f->ops->user_get(f->st, alice, &u), QC_OK);
    assert_int_equal(u.id, alice);
    assert_string_equal(u.name, "alice");
    assert_string_equal(u.password, "$y$hash");
    assert_int_equal(f->ops->user_get(f->st, NO_SUCH_ID, &u), QC_ENOUSER);

    assert_int_equal(f->ops->user_set_password(f->st, bob, "$y$other"), QC_OK);
    assert_int_equal(f->ops->user_get(f->st, bob, &u), QC_OK);
    assert_string_equal(u.password, "$y$other");
    /* The same value again still finds the user. */
    assert_int_equal(f->ops->user_set_password(f->st, bob, "$y$other"), QC_OK);
    assert_int_equal(f->ops->user_set_password(f->st, NO_SUCH_ID, "x"), QC_ENOUSER);

    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';            /* QC_NAME_MAX + 1 bytes */
    assert_int_equal(f->ops->user_create(f->st, longname, "x", &id), QC_ETOOLONG);
    longname[QC_NAME_MAX] = '\0';                     /* exactly QC_NAME_MAX */
    assert_int_equal(f->ops->user_create(f->st, longname, "x", &id), QC_OK);
    assert_int_equal(f->ops->user_get(f->st, id, &u), QC_OK);
    assert_string_equal(u.name, longname);
}

/* utf8mb4 end to end: 4-byte characters in names and messages. */
static void test_utf8mb4(void **state)
{
    struct fixture *f = *state;
    const char *name = "\xe5\xbc\xa0\xe4\xb8\x89\xf0\x9f\x98\x80";   /* 张三😀 */
    const char *text = "{\"msg\":\"\xf0\x9f\x8e\x89 \xe4\xbd\xa0\xe5\xa5\xbd\"}";
    struct msgs *m = calloc(1, sizeof(*m));
    struct store_user u;
    int32_t id, g = 0;
    struct seen s;
    int dropped = -1;

    NEED_SERVER();
    assert_non_null(m);
    id = new_user(f, name);
    assert_int_equal(f->ops->user_get(f->st, id, &u), QC_OK);
    assert_string_equal(u.name, name);
    assert_int_equal(f->ops->group_create(f->st, name, name, id, &g), QC_OK);
    memset(&s, 0, sizeof(s));
    assert_int_equal(f->ops->user_groups(f->st, id, seen_group, &s), QC_OK);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.names[0], name);
    assert_string_equal(s.extra[0], name);
    store_text(f, f->st, &id, 1, text);
    assert_int_equal(f->ops->offline_take(f->st, id, seen_msg, m, &dropped), QC_OK);
    assert_int_equal(m->n, 1);
    assert_string_equal(m->text[0], text);
    free(m);
}

static void test_friends(void **state)
{
    struct fixture *f = *state;
    int32_t alice, bob, carol;
    struct seen s;
    int n = -1;

    NEED_SERVER();
    alice = new_user(f, "alice");
    bob = new_user(f, "bob");
    carol = new_user(f, "carol");
    assert_int_equal(f->ops->friend_add(f->st, alice, bob), QC_OK);
    assert_int_equal(f->ops->friend_add(f->st, carol, alice), QC_OK);
    assert_int_equal(f->ops->friend_add(f->st, alice, bob), QC_EALREADY);
    assert_int_equal(f->ops->friend_add(f->st, bob, alice), QC_EALREADY);
    assert_int_equal(f->ops->friend_add(f->st, alice, NO_SUCH_ID), QC_ENOUSER);
    assert_int_equal(f->ops->friend_add(f->st, alice, alice), QC_ESELF);

    assert_int_equal(f->ops->friend_count(f->st, alice, &n), QC_OK);
    assert_int_equal(n, 2);
    assert_int_equal(f->ops->friend_count(f->st, bob, &n), QC_OK);
    assert_int_equal(n, 1);
    assert_int_equal(f->ops->friend_count(f->st, NO_SUCH_ID, &n), QC_OK);
    assert_int_equal(n, 0);

    memset(&s, 0, sizeof(s));
    assert_int_equal(f->ops->friend_list(f->st, alice, seen_user, &s), QC_OK);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.ids[0], bob);
    assert_string_equal(s.names[0], "bob");
    assert_int_equal(s.ids[1], carol);
    assert_string_equal(s.names[1], "carol");

    memset(&s, 0, sizeof(s));
    assert_int_equal(f->ops->friend_list(f->st, bob, seen_user, &s), QC_OK);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.ids[0], alice);
    assert_string_equal(s.names[0], "alice");
}

/* A seed database holds one-way rows; adding the friend again completes them. */
static void test_friends_seed_one_way(void **state)
{
    struct fixture *f = *state;
    int32_t alice, bob;
    int n = -1;

    NEED_SERVER();
    alice = new_user(f, "alice");
    bob = new_user(f, "bob");
    raw_exec(f->admin, "INSERT INTO Friend VALUES (%d, %d)", (int)alice, (int)bob);
    assert_int_equal(f->ops->friend_count(f->st, bob, &n), QC_OK);
    assert_int_equal(n, 0);
    assert_int_equal(f->ops->friend_add(f->st, bob, alice), QC_OK);
    assert_int_equal(f->ops->friend_count(f->st, bob, &n), QC_OK);
    assert_int_equal(n, 1);
    assert_int_equal(f->ops->friend_count(f->st, alice, &n), QC_OK);
    assert_int_equal(n, 1);
}

static void test_groups(void **state)
{
    struct fixture *f = *state;
    int32_t alice, bob, g1 = 0, g2 = 0, other = 0;
    char longdesc[QC_GROUPDESC_MAX + 2];
    struct seen s;
    int n = -1;

    NEED_SERVER();
    alice = new_user(f, "alice");
    bob = new_user(f, "bob");
    assert_int_equal(f->ops->group_create(f->st, "g1", "study", alice, &g1), QC_OK);
    assert_true(g1 > 0);
    assert_int_equal(f->ops->group_create(f->st, "g1", "again", bob, &other), QC_EGROUPTAKEN);
    assert_int_equal(other, 0);
    assert_int_equal(f->ops->group_create(f->st, "g2", NULL, bob, &g2), QC_OK);
    assert_int_not_equal(g1, g2);

    memset(longdesc, 'd', sizeof(longdesc) - 1);
    longdesc[sizeof(longdesc) - 1] = '\0';
    assert_int_equal(f->ops->group_create(f->st, "g3", longdesc, bob, &other), QC_ETOOLONG);

    assert_int_equal(f->ops->group_join(f->st, g1, bob), QC_OK);
    assert_int_equal(f->ops->group_join(f->st, g1, bob), QC_EALREADY);
    assert_int_equal(f->ops->group_join(f->st, g1, alice), QC_EALREADY);
    assert_int_equal(f->ops->group_join(f->st, NO_SUCH_ID, bob), QC_ENOGROUP);
    assert_int_equal(f->ops->group_join(f->st, g1, NO_SUCH_ID), QC_ENOUSER);

    assert_int_equal(f->ops->group_member_count(f->st, g1, &n), QC_OK);
    assert_int_equal(n, 2);
    assert_int_equal(f->ops->group_member_count(f->st, g2, &n), QC_OK);
    assert_int_equal(n, 1);
    assert_int_equal(f->ops->group_member_count(f->st, NO_SUCH_ID, &n), QC_ENOGROUP);

    memset(&s, 0, sizeof(s));
    assert_int_equal(f->ops->group_members(f->st, g1, seen_member, &s), QC_OK);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.ids[0], alice);
    assert_string_equal(s.names[0], "alice");
    assert_string_equal(s.extra[0], QC_ROLE_CREATOR);
    assert_int_equal(s.ids[1], bob);
    assert_string_equal(s.extra[1], QC_ROLE_NORMAL);

    memset(&s, 0, sizeof(s));
    assert_int_equal(f->ops->group_members(f->st, NO_SUCH_ID, seen_member, &s), QC_ENOGROUP);
    assert_int_equal(s.n, 0);

    memset(&s, 0, sizeof(s));
    assert_int_equal(f->ops->user_groups(f->st, bob, seen_group, &s), QC_OK);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.ids[0], g1);
    assert_string_equal(s.names[0], "g1");
    assert_string_equal(s.extra[0], "study");
    assert_int_equal(s.ids[1], g2);
    assert_string_equal(s.extra[1], "");

    memset(&s, 0, sizeof(s));
    assert_int_equal(f->ops->user_groups(f->st, NO_SUCH_ID, seen_group, &s), QC_OK);
    assert_int_equal(s.n, 0);
}

/* Login builds groups[] with their users[]: group_members inside user_groups. */
struct nested {
    struct fixture *f;
    int groups, members;
};

static void count_member(void *arg, int32_t id, const char *name, const char *role)
{
    struct nested *n = arg;

    n->members++;
}

static void list_members(void *arg, int32_t groupid, const char *name, const char *desc)
{
    struct nested *n = arg;

    n->groups++;
    assert_int_equal(n->f->ops->group_members(n->f->st, groupid, count_member, n), QC_OK);
}

static void test_nested_calls(void **state)
{
    struct fixture *f = *state;
    int32_t alice, bob, g1 = 0, g2 = 0;
    struct nested n = { .f = f };

    NEED_SERVER();
    alice = new_user(f, "alice");
    bob = new_user(f, "bob");
    assert_int_equal(f->ops->group_create(f->st, "g1", "", alice, &g1), QC_OK);
    assert_int_equal(f->ops->group_create(f->st, "g2", "", bob, &g2), QC_OK);
    assert_int_equal(f->ops->group_join(f->st, g2, alice), QC_OK);
    assert_int_equal(f->ops->user_groups(f->st, alice, list_members, &n), QC_OK);
    assert_int_equal(n.groups, 2);
    assert_int_equal(n.members, 3);
}

static void test_group_unknown_creator(void **state)
{
    struct fixture *f = *state;
    int32_t g = 0;
    struct seen s;

    NEED_SERVER();
    assert_int_equal(f->ops->group_create(f->st, "g1", "", NO_SUCH_ID, &g), QC_ENOUSER);
    /* Rolled back: the name is still free. */
    assert_int_equal(f->ops->group_create(f->st, "g1", "", new_user(f, "alice"), &g), QC_OK);
    memset(&s, 0, sizeof(s));
    assert_int_equal(f->ops->group_members(f->st, g, seen_member, &s), QC_OK);
    assert_int_equal(s.n, 1);
}

static void test_offline_order_and_take(void **state)
{
    struct fixture *f = *state;
    int32_t alice, bob, both[2];
    struct msgs *m = calloc(1, sizeof(*m));
    int dropped = -1;

    NEED_SERVER();
    assert_non_null(m);
    alice = new_user(f, "alice");
    bob = new_user(f, "bob");
    both[0] = alice;
    both[1] = bob;
    store_text(f, f->st, both, 2, "{\"msg\":\"one\"}");
    store_text(f, f->st, &alice, 1, "{\"msg\":\"two\"}");
    store_text(f, f->st, &alice, 1, "{\"msg\":\"three\"}");
    assert_int_equal(f->ops->offline_store(f->st, &alice, 0, "x", 1), QC_OK);
    assert_int_equal(offline_count(f, alice), 3);
    assert_int_equal(offline_count(f, bob), 1);

    assert_int_equal(f->ops->offline_take(f->st, alice, seen_msg, m, &dropped), QC_OK);
    assert_int_equal(dropped, 0);
    assert_int_equal(m->n, 3);
    assert_string_equal(m->text[0], "{\"msg\":\"one\"}");
    assert_string_equal(m->text[1], "{\"msg\":\"two\"}");
    assert_string_equal(m->text[2], "{\"msg\":\"three\"}");
    assert_int_equal(m->len[2], strlen("{\"msg\":\"three\"}"));
    assert_int_equal(offline_count(f, alice), 0);
    assert_int_equal(offline_count(f, bob), 1);

    m->n = 0;
    dropped = -1;
    assert_int_equal(f->ops->offline_take(f->st, alice, seen_msg, m, &dropped), QC_OK);
    assert_int_equal(m->n, 0);
    assert_int_equal(dropped, 0);

    assert_int_equal(f->ops->offline_take(f->st, bob, seen_msg, m, &dropped), QC_OK);
    assert_int_equal(m->n, 1);
    assert_string_equal(m->text[0], "{\"msg\":\"one\"}");
    assert_int_equal(offline_count(f, bob), 0);
    free(m);
}

static void test_offline_exact_length(void **state)
{
    struct fixture *f = *state;
    struct msgs *m = calloc(1, sizeof(*m));
    int32_t alice;
    int dropped = -1;

    NEED_SERVER();
    assert_non_null(m);
    alice = new_user(f, "alice");
    assert_int_equal(f->ops->offline_store(f->st, &alice, 1, "abcdef", 3), QC_OK);
    assert_int_equal(f->ops->offline_store(f->st, &alice, 1, "", 0), QC_OK);
    assert_int_equal(f->ops->offline_take(f->st, alice, seen_msg, m, &dropped), QC_OK);
    assert_int_equal(m->n, 2);
    assert_int_equal(m->len[0], 3);
    assert_string_equal(m->text[0], "abc");
    assert_int_equal(m->len[1], 0);
    free(m);
}

/* A message far bigger than the driver's first column buffer, intact. */
struct big {
    int    n;
    size_t len;
    bool   intact;
};

static void check_big(void *arg, const char *msg, size_t len)
{
    struct big *b = arg;
    size_t i;

    b->n++;
    b->len = len;
    b->intact = true;
    for (i = 0; i < len; i++)
        if (msg[i] != (char)('a' + i % 26))
            b->intact = false;
}

static void test_offline_big_message(void **state)
{
    struct fixture *f = *state;
    char *text = malloc(BIG_MSG);
    struct big b = { 0, 0, false };
    int32_t alice;
    int dropped = -1;
    size_t i;

    NEED_SERVER();
    assert_non_null(text);
    alice = new_user(f, "alice");
    for (i = 0; i < BIG_MSG; i++)
        text[i] = (char)('a' + i % 26);
    assert_int_equal(f->ops->offline_store(f->st, &alice, 1, "short", 5), QC_OK);
    assert_int_equal(f->ops->offline_store(f->st, &alice, 1, text, BIG_MSG), QC_OK);
    assert_int_equal(f->ops->offline_store(f->st, &alice, 1, text, BIG_MSG), QC_OK);
    assert_int_equal(f->ops->offline_take(f->st, alice, check_big, &b, &dropped), QC_OK);
    assert_int_equal(b.n, 3);
    assert_int_equal(b.len, BIG_MSG);
    assert_true(b.intact);
    free(text);
}

/* One unknown recipient fails the whole batch: nothing is stored. */
static void test_offline_unknown_user(void **state)
{
    struct fixture *f = *state;
    int32_t ids[2];

    NEED_SERVER();
    ids[0] = new_user(f, "alice");
    ids[1] = NO_SUCH_ID;
    assert_int_equal(f->ops->offline_store(f->st, ids, 2, "x", 1), QC_ENOUSER);
    assert_int_equal(offline_count(f, ids[0]), 0);
}

/* More recipients than one batch holds; duplicates count twice; all or nothing. */
static void test_offline_many_recipients(void **state)
{
    struct fixture *f = *state;
    int32_t ids[MANY_USERS + 1];
    char name[QC_NAME_MAX + 1];
    int i;

    NEED_SERVER();
    for (i = 0; i < MANY_USERS; i++) {
        snprintf(name, sizeof(name), "user%d", i);
        ids[i] = new_user(f, name);
    }
    ids[MANY_USERS] = NO_SUCH_ID;                        /* in the last, partial batch */
    assert_int_equal(f->ops->offline_store(f->st, ids, MANY_USERS + 1, "x", 1), QC_ENOUSER);
    assert_int_equal(raw_int(f->admin, "SELECT count(*) FROM OfflineMessage"), 0);

    ids[MANY_USERS] = ids[0];                            /* listed twice: two copies */
    store_text(f, f->st, ids, MANY_USERS + 1, "hello");
    assert_int_equal(raw_int(f->admin, "SELECT count(*) FROM OfflineMessage"), MANY_USERS + 1);
    assert_int_equal(offline_count(f, ids[0]), 2);
    for (i = 1; i < MANY_USERS; i++)
        assert_int_equal(offline_count(f, ids[i]), 1);
}

static void test_offline_cap(void **state)
{
    struct fixture *f = *state;
    int32_t alice, bob, both[2];
    struct store *capped;
    struct msgs *m = calloc(1, sizeof(*m));
    char text[MSG_MAX];
    int i, dropped = -1;

    NEED_SERVER();
    assert_non_null(m);
    alice = new_user(f, "alice");
    bob = new_user(f, "bob");
    both[0] = alice;
    both[1] = bob;
    capped = open_store(f, SMALL_CAP);
    for (i = 1; i <= SMALL_CAP + 2; i++) {
        snprintf(text, sizeof(text), "m%d", i);
        store_text(f, capped, &alice, 1, text);
    }
    store_text(f, capped, both, 2, "last");
    assert_int_equal(offline_count(f, alice), SMALL_CAP);
    assert_int_equal(offline_count(f, bob), 1);

    assert_int_equal(f->ops->offline_take(capped, alice, seen_msg, m, &dropped), QC_OK);
    assert_int_equal(dropped, 3);                     /* m1, m2, m3 */
    assert_int_equal(m->n, SMALL_CAP);
    assert_string_equal(m->text[0], "m4");
    assert_string_equal(m->text[1], "m5");
    assert_string_equal(m->text[2], "last");

    /* The count was reset by the take. */
    m->n = 0;
    store_text(f, capped, &alice, 1, "after");
    assert_int_equal(f->ops->offline_take(capped, alice, seen_msg, m, &dropped), QC_OK);
    assert_int_equal(dropped, 0);
    assert_int_equal(m->n, 1);
    assert_string_equal(m->text[0], "after");

    m->n = 0;
    assert_int_equal(f->ops->offline_take(capped, bob, seen_msg, m, &dropped), QC_OK);
    assert_int_equal(dropped, 0);
    assert_int_equal(m->n, 1);
    f->ops->close(capped);
    free(m);
}

/* Only a dropped count pending (every message taken): reported, then reset. */
static void test_offline_dropped_only(void **state)
{
    struct fixture *f = *state;
    struct msgs *m = calloc(1, sizeof(*m));
    int32_t alice;
    int dropped = -1;

    NEED_SERVER();
    assert_non_null(m);
    alice = new_user(f, "alice");
    raw_exec(f->admin, "INSERT INTO OfflineDropped VALUES (%d, 7)", (int)alice);
    assert_int_equal(f->ops->offline_take(f->st, alice, seen_msg, m, &dropped), QC_OK);
    assert_int_equal(dropped, 7);
    assert_int_equal(m->n, 0);
    assert_int_equal(f->ops->offline_take(f->st, alice, seen_msg, m, &dropped), QC_OK);
    assert_int_equal(dropped, 0);
    free(m);
}

/* Check that writer A's and B's messages each arrived complete and in order. */
static void check_interleaved(const struct msgs *m, int per_writer)
{
    int i, a = 0, b = 0, k;
    char want[MSG_MAX];

    assert_int_equal(m->n, 2 * per_writer);
    for (i = 0; i < m->n; i++) {
        assert_true(m->text[i][0] == 'A' || m->text[i][0] == 'B');
        k = m->text[i][0] == 'A' ? a++ : b++;
        snprintf(want, sizeof(want), "%c%d", m->text[i][0], k);
        assert_string_equal(m->text[i], want);
    }
    assert_int_equal(a, per_writer);
    assert_int_equal(b, per_writer);
}

static void test_two_handles(void **state)
{
    struct fixture *f = *state;
    struct store *second;
    struct msgs *m = calloc(1, sizeof(*m));
    struct store_user u;
    char text[MSG_MAX];
    int32_t alice, id = 0;
    int i, dropped = -1;

    NEED_SERVER();
    assert_non_null(m);
    second = open_store(f, f->cfg.max_offline_messages);
    alice = new_user(f, "alice");
    assert_int_equal(f->ops->user_get(second, alice, &u), QC_OK);
    assert_int_equal(f->ops->user_create(second, "alice", "x", &id), QC_ENAMETAKEN);
    for (i = 0; i < CONCURRENT_MSGS; i++) {
        snprintf(text, sizeof(text), "A%d", i);
        store_text(f, f->st, &alice, 1, text);
        snprintf(text, sizeof(text), "B%d", i);
        store_text(f, second, &alice, 1, text);
    }
    assert_int_equal(f->ops->offline_take(second, alice, seen_msg, m, &dropped), QC_OK);
    check_interleaved(m, CONCURRENT_MSGS);
    assert_int_equal(offline_count(f, alice), 0);
    f->ops->close(second);
    free(m);
}

/* A worker process: its own handle after fork, CONCURRENT_MSGS stores. */
static void run_writer(struct fixture *f, int32_t userid, char tag)
{
    char err[ERR_MAX], text[MSG_MAX];
    struct store *st = NULL;
    int i;

    if (f->ops->open(&st, &f->cfg, err, sizeof(err)) != QC_OK) {
        fprintf(stderr, "writer %c: %s\n", tag, err);
        _exit(1);
    }
    for (i = 0; i < CONCURRENT_MSGS; i++) {
        snprintf(text, sizeof(text), "%c%d", tag, i);
        if (f->ops->offline_store(st, &userid, 1, text, strlen(text)) != QC_OK)
            _exit(2);
    }
    f->ops->close(st);
}

static void test_two_processes(void **state)
{
    struct fixture *f = *state;
    int status = -1, dropped = -1;
    struct msgs *m;
    int32_t alice;
    pid_t pid;

    NEED_SERVER();
    alice = new_user(f, "alice");
    f->ops->close(f->st);               /* like the master: nothing open across fork */
    f->st = NULL;
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(CHILD_ALARM_SEC);
        run_writer(f, alice, 'B');
        _exit(0);
    }
    run_writer(f, alice, 'A');
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    f->st = open_store(f, f->cfg.max_offline_messages);
    m = calloc(1, sizeof(*m));
    assert_non_null(m);
    assert_int_equal(f->ops->offline_take(f->st, alice, seen_msg, m, &dropped), QC_OK);
    check_interleaved(m, CONCURRENT_MSGS);
    free(m);
}

/* Another connection holds the lock the write needs past the lock wait timeout. */
static void test_busy_is_storage_error(void **state)
{
    struct fixture *f = *state;
    struct store_user u;
    int32_t alice, bob;
    int64_t t0;
    MYSQL *locker;

    NEED_SERVER();
    alice = new_user(f, "alice");
    bob = new_user(f, "bob");
    locker = connect_raw(f->db, 0);
    raw_exec(locker, "START TRANSACTION");
    raw_exec(locker, "SELECT * FROM Friend FOR UPDATE");
    t0 = now_ms();
    assert_int_equal(f->ops->friend_add(f->st, alice, bob), QC_ESTORAGE);
    assert_true(now_ms() - t0 < OUTAGE_MAX_MS);
    assert_int_equal(f->ops->user_get(f->st, alice, &u), QC_OK);   /* reads go on */
    raw_exec(locker, "ROLLBACK");
    mysql_close(locker);
    assert_int_equal(f->ops->friend_add(f->st, alice, bob), QC_OK);
}

/* KILL the driver's connection: the next calls reconnect without a word. */
static void test_reconnect_after_kill(void **state)
{
    struct fixture *f = *state;
    struct store_user u;
    int32_t alice, bob, id = 0, g = 0;
    long long conn;

    NEED_SERVER();
    alice = new_user(f, "alice");

    conn = driver_connection(f);
    assert_true(conn > 0);
    raw_exec(f->admin, "KILL CONNECTION %lld", conn);
    assert_int_equal(f->ops->user_get(f->st, alice, &u), QC_OK);    /* a read */
    assert_string_equal(u.name, "alice");
    assert_true(driver_connection(f) != conn);

    raw_exec(f->admin, "KILL CONNECTION %lld", driver_connection(f));
    assert_int_equal(f->ops->user_create(f->st, "bob", "$y$x", &id), QC_OK);   /* a write */
    bob = id;
    assert_int_equal(raw_int(f->admin, "SELECT count(*) FROM User WHERE name = 'bob'"), 1);

    raw_exec(f->admin, "KILL CONNECTION %lld", driver_connection(f));
    assert_int_equal(f->ops->group_create(f->st, "g", "", bob, &g), QC_OK);   /* a transaction */
    assert_int_equal(raw_int(f->admin, "SELECT count(*) FROM GroupUser"), 1);
    assert_int_equal(f->ops->group_join(f->st, g, alice), QC_OK);
}

/* The connection dies while a callback makes a nested call. */
struct killer {
    struct fixture *f;
    int groups;
    int nested_err;
};

static void kill_then_nest(void *arg, int32_t groupid, const char *name, const char *desc)
{
    struct killer *k = arg;
    struct seen s;

    if (k->groups++ > 0)
        return;
    raw_exec(k->f->admin, "KILL CONNECTION %lld", driver_connection(k->f));
    memset(&s, 0, sizeof(s));
    k->nested_err = k->f->ops->group_members(k->f->st, groupid, seen_member, &s);
}

static void test_lost_in_callback(void **state)
{
    struct fixture *f = *state;
    struct killer k = { .f = f, .nested_err = -1 };
    int32_t alice, g1 = 0, g2 = 0;
    struct nested n = { .f = f };

    NEED_SERVER();
    alice = new_user(f, "alice");
    assert_int_equal(f->ops->group_create(f->st, "g1", "", alice, &g1), QC_OK);
    assert_int_equal(f->ops->group_create(f->st, "g2", "", alice, &g2), QC_OK);
    assert_int_equal(f->ops->user_groups(f->st, alice, kill_then_nest, &k), QC_OK);
    assert_int_equal(k.groups, 2);              /* the outer rows were all handed over */
    assert_int_equal(k.nested_err, QC_ESTORAGE);
    assert_int_equal(f->ops->user_groups(f->st, alice, list_members, &n), QC_OK);
    assert_int_equal(n.groups, 2);
    assert_int_equal(n.members, 2);
}

/*
 * SIGSTOP mariadbd.  A guard in its own session sends SIGCONT after
 * GUARD_MS unless resume_server() kills it first, so a test killed by a
 * timeout never leaves the server stopped for the tests after it.
 */
static void stop_server(void)
{
    pid_t g;

    assert_true(env.pid > 0);
    g = fork();
    assert_true(g >= 0);
    if (g == 0) {
        (void)setsid();
        sleep_ms(GUARD_MS);
        kill(env.pid, SIGCONT);
        _exit(0);
    }
    guard_pid = g;
    assert_int_equal(kill(env.pid, SIGSTOP), 0);
    stopped_pid = env.pid;
}

/*
 * mariadbd stopped (SIGSTOP: it accepts connections and never answers, the
 * worst case): every call fails with QC_ESTORAGE within OUTAGE_MAX_MS, a
 * call right after fails fast, and after SIGCONT the handle works again.
 */
static void test_server_stopped(void **state)
{
    struct fixture *f = *state;
    struct store_user u;
    int32_t alice, bob, id = 0;
    int64_t t0, first, second, third;
    int err = QC_ESTORAGE, n = -1;

    NEED_SERVER();
    alice = new_user(f, "alice");
    bob = new_user(f, "bob");
    stop_server();

    t0 = now_ms();
    assert_int_equal(f->ops->friend_add(f->st, alice, bob), QC_ESTORAGE);
    first = now_ms() - t0;
    t0 = now_ms();
    assert_int_equal(f->ops->user_get(f->st, alice, &u), QC_ESTORAGE);
    second = now_ms() - t0;
    sleep_ms(1100);                     /* past the reconnect interval: one more attempt */
    t0 = now_ms();
    assert_int_equal(f->ops->offline_count(f->st, alice, &n), QC_ESTORAGE);
    third = now_ms() - t0;
    assert_false(f->ops->ping(f->st));
    fprintf(stderr, "test_server_stopped: first call %lld ms, next %lld ms, "
            "after the interval %lld ms\n", (long long)first, (long long)second,
            (long long)third);
    assert_true(first <= OUTAGE_MAX_MS);
    assert_true(second <= FAST_FAIL_MS);
    assert_true(third <= OUTAGE_MAX_MS);

    resume_server();
    t0 = now_ms();
    while (now_ms() - t0 < RECOVER_MAX_MS) {
        err = f->ops->user_create(f->st, "carol", "$y$x", &id);
        if (err == QC_OK)
            break;
        assert_int_equal(err, QC_ESTORAGE);
        sleep_ms(POLL_MS);
    }
    assert_int_equal(err, QC_OK);
    fprintf(stderr, "test_server_stopped: recovered %lld ms after SIGCONT\n",
            (long long)(now_ms() - t0));
    assert_int_equal(f->ops->friend_add(f->st, alice, bob), QC_OK);
    assert_int_equal(f->ops->user_get(f->st, id, &u), QC_OK);
    assert_string_equal(u.name, "carol");
}

#define STORE_TEST(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_driver_lookup),
        STORE_TEST(test_schema_matches_file),
        STORE_TEST(test_open_errors),
        STORE_TEST(test_tcp),
        STORE_TEST(test_reopen_ping_init_schema),
        STORE_TEST(test_users),
        STORE_TEST(test_utf8mb4),
        STORE_TEST(test_friends),
        STORE_TEST(test_friends_seed_one_way),
        STORE_TEST(test_groups),
        STORE_TEST(test_nested_calls),
        STORE_TEST(test_group_unknown_creator),
        STORE_TEST(test_offline_order_and_take),
        STORE_TEST(test_offline_exact_length),
        STORE_TEST(test_offline_big_message),
        STORE_TEST(test_offline_unknown_user),
        STORE_TEST(test_offline_many_recipients),
        STORE_TEST(test_offline_cap),
        STORE_TEST(test_offline_dropped_only),
        STORE_TEST(test_two_handles),
        STORE_TEST(test_two_processes),
        STORE_TEST(test_busy_is_storage_error),
        STORE_TEST(test_reconnect_after_kill),
        STORE_TEST(test_lost_in_callback),
        STORE_TEST(test_server_stopped),
    };

    load_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
