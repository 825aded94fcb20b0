/*
 * test_store_mysql.c - the MySQL storage driver against a private MariaDB.
 *
 * The server comes from tests/harness/mariadb.sh (its DIR/env exported:
 * QCHAT_MYSQL_SOCKET, QCHAT_MYSQL_USER, QCHAT_MYSQL_PASSWORD_FILE,
 * QCHAT_MYSQL_PID); without it every test is skipped with a note.  Each
 * test gets a fresh database qchat_u<pid>_<n>, dropped afterwards.  The
 * cases every driver shares are in store_cases.c (run by test_store.c for
 * SQLite too); here are those only MySQL has: its schema file, password
 * files, TCP, utf8mb4, big messages and batches, and what only a server
 * can do: lose the connection (KILL from a second client) and stop
 * answering (SIGSTOP of mariadbd).  The schema test reads the migrations
 * of sql/mysql/ below $QCHAT_SRCDIR (default ".").
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mysql.h>

#include "../integration/mysql_env.h"
#include "store_cases.h"

#define SQL_DIR        "sql/mysql"
#define SQL_MAX        1024
#define DBNAME_MAX     64
#define BIG_MSG        (200 * 1024) /* bigger than any first column buffer */
#define MANY_USERS     150          /* more than two offline batches */
#define OUTAGE_MAX_MS  8000         /* a hung server costs a call at most this */
#define FAST_FAIL_MS   500          /* a call while it is known to be down */
#define RECOVER_MAX_MS 10000        /* back to work after SIGCONT */
#define POLL_MS        100
#define SCHEMA_TABLES  12    /* the migrations' tables; the driver adds SchemaVersion */
#define GUARD_MS       60000 /* SIGCONT by a guard process if the test dies */

static const char *const tables[SCHEMA_TABLES] = {
    "User",    "Friend",       "AllGroup",   "GroupUser",     "OfflineMessage", "OfflineDropped",
    "Message", "Conversation", "ConvCursor", "FriendRequest", "UserBlock",      "LoginToken",
};

static unsigned db_counter;

struct mysql_fixture {
    struct store_fixture store; /* first: *state points at both */
    char db[DBNAME_MAX];
    MYSQL *admin; /* the test's own connection, on db */
};

static struct mysql_fixture *mysql_fixture(struct store_fixture *f)
{
    return (struct mysql_fixture *)((char *)f - offsetof(struct mysql_fixture, store));
}

/* The test's own connection, on the test's database. */
static MYSQL *admin(struct store_fixture *f)
{
    return mysql_fixture(f)->admin;
}

static const char *dbname(struct store_fixture *f)
{
    return mysql_fixture(f)->db;
}

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

#define NEED_SERVER()                  \
    do {                               \
        if (mdb_env.socket[0] == '\0') \
            skip();                    \
    } while (0)

/* ---- fixture -------------------------------------------------------- */

static void fill_config(struct qc_config *cfg, const char *db)
{
    config_defaults(cfg);
    strlcpy(cfg->storage_driver, "mysql", sizeof(cfg->storage_driver));
    strlcpy(cfg->storage_socket, mdb_env.socket, sizeof(cfg->storage_socket));
    strlcpy(cfg->storage_user, mdb_env.user, sizeof(cfg->storage_user));
    strlcpy(cfg->storage_password_file, mdb_env.password_file, sizeof(cfg->storage_password_file));
    strlcpy(cfg->storage_database, db, sizeof(cfg->storage_database));
}

static void new_database(MYSQL *m, char *name, size_t size)
{
    snprintf(name, size, "qchat_u%d_%u", (int)getpid(), ++db_counter);
    mdb_exec(m, "CREATE DATABASE `%s` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", name);
}

static void raw_sql(struct store_fixture *f, const char *sql)
{
    mdb_exec(admin(f), "%s", sql);
}

/* The test's database, emptied and given the version 1 tables only. */
static void make_v1(struct store_fixture *f)
{
    struct mysql_fixture *mf = mysql_fixture(f);
    MYSQL *m;

    mdb_exec(mf->admin, "DROP DATABASE `%s`", mf->db);
    mdb_exec(mf->admin, "CREATE DATABASE `%s` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", mf->db);
    assert_int_equal(mysql_select_db(mf->admin, mf->db), 0);
    m = mdb_connect(mf->db, CLIENT_MULTI_STATEMENTS);
    assert_string_equal(store_mysql_migrations[0].name, "001-base.sql");
    mdb_run(m, store_mysql_migrations[0].sql, "version 1 schema");
    mysql_close(m);
}

static int setup(void **state)
{
    struct mysql_fixture *mf = calloc(1, sizeof(*mf));
    struct store_fixture *f;

    assert_non_null(mf);
    f = &mf->store;
    *state = f;
    f->ops = store_driver("mysql");
    assert_non_null(f->ops);
    f->raw_sql = raw_sql;
    f->make_v1 = make_v1;
    f->unavailable = mdb_env.socket[0] == '\0';
    if (f->unavailable)
        return 0;
    mf->admin = mdb_connect(NULL, 0);
    new_database(mf->admin, mf->db, sizeof(mf->db));
    assert_int_equal(mysql_select_db(mf->admin, mf->db), 0);
    fill_config(&f->cfg, mf->db);
    f->st = open_store(f, f->cfg.max_offline_messages);
    return 0;
}

static int teardown(void **state)
{
    struct store_fixture *f = *state;
    struct mysql_fixture *mf = mysql_fixture(f);

    mdb_resume_server(); /* a failed outage test must not leave it stopped */
    if (f->st != NULL)
        f->ops->close(f->st);
    if (mf->admin != NULL) {
        if (mysql_ping(mf->admin) != 0) { /* killed or timed out: a new one */
            mysql_close(mf->admin);
            mf->admin = mdb_connect(NULL, 0);
        }
        mdb_exec(mf->admin, "DROP DATABASE IF EXISTS `%s`", mf->db);
        mysql_close(mf->admin);
    }
    free(mf);
    return 0;
}

/* ---- helpers -------------------------------------------------------- */

/* The id of the driver's connection to the test's database (the only one besides admin's). */
static long long driver_connection(struct store_fixture *f)
{
    return mdb_int(admin(f),
                   "SELECT id FROM information_schema.PROCESSLIST"
                   " WHERE db = '%s' AND id <> CONNECTION_ID() ORDER BY id LIMIT 1",
                   dbname(f));
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

/* The embedded migrations are the files of sql/mysql/, byte for byte, numbered 1, 2, ... */
static void test_migrations_match_files(void **state)
{
    char path[PATH_MAX];
    size_t i;

    (void)state;
    assert_true(store_mysql_migration_count >= 2);
    for (i = 0; i < store_mysql_migration_count; i++) {
        const struct store_migration *m = &store_mysql_migrations[i];
        char *text;

        assert_int_equal(m->version, (int)i + 1);
        snprintf(path, sizeof(path), "%s/%s", SQL_DIR, m->name);
        text = mdb_slurp(path);
        assert_string_equal(text, m->sql);
        free(text);
    }
}

/* The driver's tables (built at open) are those the files build, run twice by hand. */
static void test_schema_matches_file(void **state)
{
    struct store_fixture *f = *state;
    char other[DBNAME_MAX], a[SQL_MAX * 2], b[SQL_MAX * 2], path[PATH_MAX];
    MYSQL *m;
    size_t i, pass;
    int version = 0;

    NEED_SERVER();
    new_database(admin(f), other, sizeof(other));
    m = mdb_connect(other, CLIENT_MULTI_STATEMENTS);
    /* 001 and 002 are idempotent; later migrations rebuild tables and run once. */
    for (pass = 0; pass < 2; pass++)
        for (i = 0; i < store_mysql_migration_count; i++) {
            if (pass > 0 && store_mysql_migrations[i].version > 2)
                continue;
            snprintf(path, sizeof(path), "%s/%s", SQL_DIR, store_mysql_migrations[i].name);
            mdb_run_file(m, path);
        }
    assert_int_equal(mdb_int(m,
                             "SELECT count(*) FROM information_schema.TABLES"
                             " WHERE table_schema = '%s'",
                             other),
                     SCHEMA_TABLES);
    assert_int_equal(mdb_int(m,
                             "SELECT count(*) FROM information_schema.TABLES"
                             " WHERE table_schema = '%s'",
                             dbname(f)),
                     SCHEMA_TABLES + 1);
    for (i = 0; i < SCHEMA_TABLES; i++) {
        mdb_table_definition(m, dbname(f), tables[i], a, sizeof(a));
        mdb_table_definition(m, other, tables[i], b, sizeof(b));
        assert_string_equal(a, b);
        assert_non_null(strstr(a, "ENGINE=InnoDB"));
        assert_non_null(strstr(a, "CHARSET=utf8mb4"));
    }
    assert_int_equal(f->ops->schema_version(f->st, &version), QC_OK);
    assert_int_equal(version, (int)store_mysql_migration_count);
    assert_int_equal(mdb_int(admin(f), "SELECT count(*) FROM SchemaVersion"),
                     (long long)store_mysql_migration_count);
    mdb_exec(m, "DROP DATABASE `%s`", other);
    mysql_close(m);
}

/* A database from a newer qchatd is refused, not damaged. */
static void test_newer_schema_refused(void **state)
{
    struct store_fixture *f = *state;
    struct store *st = NULL;
    char err[ERR_MAX] = "";

    NEED_SERVER();
    mdb_exec(admin(f), "INSERT INTO SchemaVersion (version, name) VALUES (999, 'x.sql')");
    assert_int_equal(f->ops->open(&st, &f->cfg, err, sizeof(err)), QC_ESTORAGE);
    assert_null(st);
    assert_non_null(strstr(err, "newer"));
}

/* The seed's README schema (the part that matters here: no id on the queue). */
static const char seed_schema[] =
    "CREATE TABLE User(id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " name VARCHAR(50) NOT NULL UNIQUE, password VARCHAR(50) NOT NULL,"
    " state ENUM('online','offline') DEFAULT('offline'));\n"
    "CREATE TABLE Friend(userid INT NOT NULL, friendid INT NOT NULL,"
    " PRIMARY KEY (userid,friendid));\n"
    "CREATE TABLE AllGroup(groupid INT NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " groupname VARCHAR(50) NOT NULL UNIQUE, groupdesc VARCHAR(200) NOT NULL DEFAULT(''));\n"
    "CREATE TABLE GroupUser(groupid INT NOT NULL, userid INT NOT NULL,"
    " grouprole ENUM('creator','normal') NOT NULL DEFAULT('normal'),"
    " PRIMARY KEY (groupid,userid));\n"
    "CREATE TABLE OfflineMessage(userid INT NOT NULL, message VARCHAR(500) NOT NULL);\n";

/* Messages as the seed stored them: one per recipient, a group chat once per member. */
static const char seed_rows[] =
    "INSERT INTO User (name, password) VALUES ('zhang san', '123456'), ('jose', 'pw'),"
    " ('li si', '654321');\n"
    "INSERT INTO AllGroup (groupname, groupdesc) VALUES ('study', 'study group');\n"
    "INSERT INTO GroupUser VALUES (1, 1, 'creator'), (1, 2, 'normal'), (1, 3, 'normal');\n"
    "INSERT INTO OfflineMessage VALUES"
    " (2, '{\"id\":1,\"msgid\":5,\"msg\":\"hello\",\"name\":\"zhang san\","
    "\"time\":\"2023-03-01 10:00:00\",\"toid\":2}'),"
    " (2, '{\"groupid\":1,\"id\":1,\"msg\":\"hi all\",\"msgid\":9,\"name\":\"zhang san\","
    "\"time\":\"2023-03-01 10:01:00\"}'),"
    " (3, '{\"groupid\":1,\"id\":1,\"msg\":\"hi all\",\"msgid\":9,\"name\":\"zhang san\","
    "\"time\":\"2023-03-01 10:01:00\"}'),"
    " (3, '{\"id\":1,\"msgid\":5,\"msg\":\"ping\",\"name\":\"zhang san\","
    "\"time\":\"2023-03-01 10:02:00\",\"toid\":3}');\n";

static void count_log(void *arg, const struct store_logmsg *m)
{
    int *n = arg;

    (*n)++;
}

/*
 * A seed database, converted by migrate-from-seed.sql, opens as version 2:
 * its queue is in the log (the group chat queued for two members is one
 * message), each recipient still has it undelivered, and the group's
 * creator, who sent it, has nothing waiting.
 */
static void test_seed_to_log(void **state)
{
    struct store_fixture *f = *state;
    struct mysql_fixture *mf;
    MYSQL *m;
    int64_t last = 0;
    bool more = true;
    int n, version = 0;

    NEED_SERVER();
    mf = mysql_fixture(f);
    f->ops->close(f->st);
    f->st = NULL;
    mdb_exec(mf->admin, "DROP DATABASE `%s`", mf->db);
    mdb_exec(mf->admin, "CREATE DATABASE `%s` CHARACTER SET latin1", mf->db);
    assert_int_equal(mysql_select_db(mf->admin, mf->db), 0);
    m = mdb_connect(mf->db, CLIENT_MULTI_STATEMENTS);
    mdb_run(m, seed_schema, "the seed's schema");
    mdb_run(m, seed_rows, "seed rows");
    mdb_run_file(m, "sql/mysql/migrate-from-seed.sql");
    mysql_close(m);

    f->st = open_store(f, f->cfg.max_offline_messages);
    assert_int_equal(f->ops->schema_version(f->st, &version), QC_OK);
    assert_int_equal(version, (int)store_mysql_migration_count);
    assert_int_equal(mdb_int(mf->admin, "SELECT count(*) FROM OfflineMessage"), 0);
    assert_int_equal(mdb_int(mf->admin, "SELECT count(*) FROM Message"), 3);
    assert_int_equal(f->ops->conv_last_cseq(f->st, store_conv_group(1), &last), QC_OK);
    assert_int_equal(last, 1);
    n = 0;
    assert_int_equal(f->ops->undelivered(f->st, 2, 100, 1 << 20, count_log, &n, &more), QC_OK);
    assert_int_equal(n, 2);
    n = 0;
    assert_int_equal(f->ops->undelivered(f->st, 3, 100, 1 << 20, count_log, &n, &more), QC_OK);
    assert_int_equal(n, 2);
    n = 0;
    assert_int_equal(f->ops->undelivered(f->st, 1, 100, 1 << 20, count_log, &n, &more), QC_OK);
    assert_int_equal(n, 0);
    n = 0;
    assert_int_equal(f->ops->history(f->st, store_conv_pair(1, 3), STORE_NO_CURSOR, STORE_NO_CURSOR,
                                     10, count_log, &n, &more),
                     QC_OK);
    assert_int_equal(n, 1);
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

static void expect_open_error(struct store_fixture *f, const struct qc_config *cfg,
                              const char *want)
{
    struct store *st = NULL;
    char err[ERR_MAX] = "";
    int64_t t0 = now_ms();

    assert_int_equal(f->ops->open(&st, cfg, err, sizeof(err)), QC_ESTORAGE);
    assert_null(st);
    if (strstr(err, want) == NULL)
        fail_msg("open error \"%s\" does not say \"%s\"", err, want);
    if (mdb_env.password[0] != '\0' && strstr(err, mdb_env.password) != NULL)
        fail_msg("open error shows the password");
    assert_true(now_ms() - t0 < OUTAGE_MAX_MS);
}

static void test_open_errors(void **state)
{
    struct store_fixture *f = *state;
    char dir[] = "/tmp/qchat-test-mysql-XXXXXX", path[PATH_MAX], text[QC_CONFIG_STR_MAX + 2];
    struct qc_config cfg;

    NEED_SERVER();
    assert_non_null(mkdtemp(dir));

    cfg = f->cfg;
    password_file(dir, "open", mdb_env.password, 0644, path, sizeof(path));
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
    snprintf(text, sizeof(text), "%s\r\n", mdb_env.password);
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
    struct store_fixture *f = *state;
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

/* utf8mb4 end to end: 4-byte characters in names and messages. */
static void test_utf8mb4(void **state)
{
    struct store_fixture *f = *state;
    const char *name = "\xe5\xbc\xa0\xe4\xb8\x89\xf0\x9f\x98\x80"; /* 张三😀 */
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

/* A message far bigger than the driver's first column buffer, intact. */
struct big {
    int n;
    size_t len;
    bool intact;
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
    struct store_fixture *f = *state;
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

/*
 * Index rows the whole server walked (Handler_read_next + _prev): the
 * private MariaDB serves this test alone while it runs.
 */
static long long rows_walked(struct store_fixture *f)
{
    return mdb_int(admin(f), "SELECT SUM(VARIABLE_VALUE) FROM information_schema.GLOBAL_STATUS"
                             " WHERE VARIABLE_NAME IN ('HANDLER_READ_NEXT', 'HANDLER_READ_PREV')");
}

/*
 * An append checks that no message of others lies between the sender's
 * delivered cursor and the sender's own run (the cursor follows the run
 * only then).  MariaDB used to read that range from the conversation's
 * first message on (a correlated range is a ref on conv alone): every chat
 * cost a walk over the whole history.  Now it walks back from the run.
 */
#define LONG_CONV_MESSAGES 20000
#define RUN_WALK_MAX       200 /* rows an append near the end may walk, all statements */
#define APPEND_TS          1700000000000LL

/*
 * Messages first..last of conv written straight into the tables (ts = mid =
 * cseq, body "m<cseq>", odd cseqs by odd_sender, even ones by even_sender),
 * and the conversation's last cseq.
 */
static void fill_long_conversation(struct store_fixture *f, int64_t conv, int first, int last,
                                   int32_t odd_sender, int32_t even_sender)
{
    mdb_exec(admin(f),
             "INSERT INTO Message (conv, cseq, mid, sender, ts, body) SELECT %lld, seq, seq,"
             " IF(seq %% 2, %d, %d), seq, CONCAT('m', seq) FROM seq_%d_to_%d",
             (long long)conv, (int)odd_sender, (int)even_sender, first, last);
    mdb_exec(admin(f), "INSERT INTO Conversation (conv, last_cseq, last_ts) VALUES (%lld, %d, %d)",
             (long long)conv, last, last);
}
static void test_append_does_not_walk_the_history(void **state)
{
    struct store_fixture *f = *state;
    int32_t alice, bob;
    int64_t conv;
    struct store_cursor at = { 0, LONG_CONV_MESSAGES - 3 };
    struct store_logmsg m[2];
    long long before;

    NEED_SERVER();
    alice = new_user(f, "alice");
    bob = new_user(f, "bob");
    conv = store_conv_pair(alice, bob);
    at.conv = conv;
    fill_long_conversation(f, conv, 1, LONG_CONV_MESSAGES, alice, bob);
    /* alice has seen up to 3 before the end: bob's last (even) one is after her cursor. */
    assert_int_equal(f->ops->delivered_advance(f->st, alice, &at, 1), QC_OK);
    assert_int_equal(f->ops->delivered_advance(f->st, bob, &at, 1), QC_OK);
    for (int i = 0; i < 2; i++)
        m[i] =
            (struct store_logmsg){ conv, LONG_CONV_MESSAGES + 1 + i, 1 + i, APPEND_TS, alice, "{}",
                                   2 };
    before = rows_walked(f);
    assert_int_equal(f->ops->log_append(f->st, m, 2), QC_OK);
    long long walked = rows_walked(f) - before;
    printf("# append of 2 at the end of %d messages walked %lld index rows\n", LONG_CONV_MESSAGES,
           walked);
    assert_true(walked < RUN_WALK_MAX);
    /* And the cursor rule still holds: bob's message between kept alice's cursor. */
    assert_int_equal(
        mdb_int(admin(f), "SELECT delivered_cseq FROM ConvCursor WHERE userid = %d AND conv = %lld",
                (int)alice, (long long)conv),
        LONG_CONV_MESSAGES - 3);
}

/*
 * Rows the whole server wrote or changed (Handler_write + Handler_update,
 * attempts included: an INSERT IGNORE of an existing row counts).
 */
static long long rows_written(struct store_fixture *f)
{
    return mdb_int(admin(f), "SELECT SUM(VARIABLE_VALUE) FROM information_schema.GLOBAL_STATUS"
                             " WHERE VARIABLE_NAME IN ('HANDLER_WRITE', 'HANDLER_UPDATE')");
}

/*
 * A cross-node chat is numbered by the database (cseq 0 given) in a
 * transaction that holds, in a ping-pong, one message per conversation.
 * Its reservation already raises the conversation's last cseq and time,
 * and a pair's cursors, made with its first message, are never deleted:
 * the second chat of a conversation writes its message, its reservation
 * and its sender's cursor, not the conversation row again nor the two
 * cursors (7 rows before, 4 now).
 */
#define NUMBERED_WRITES_MAX 5

static void test_numbered_append_writes_only_what_changes(void **state)
{
    struct store_fixture *f = *state;
    int32_t alice, bob;
    int64_t conv;
    struct store_logmsg m;
    long long before, written;

    NEED_SERVER();
    alice = new_user(f, "alice");
    bob = new_user(f, "bob");
    conv = store_conv_pair(alice, bob);
    m = (struct store_logmsg){ conv, 0, 1, APPEND_TS, alice, "{}", 2 };
    assert_int_equal(f->ops->log_append(f->st, &m, 1), QC_OK);
    assert_int_equal(m.cseq, 1);
    m = (struct store_logmsg){ conv, 0, 2, APPEND_TS + 5, alice, "{}", 2 };
    before = rows_written(f);
    assert_int_equal(f->ops->log_append(f->st, &m, 1), QC_OK);
    written = rows_written(f) - before;
    printf("# a numbered append to a known conversation wrote %lld rows\n", written);
    assert_int_equal(m.cseq, 2);
    assert_true(written <= NUMBERED_WRITES_MAX);
    /* The conversation row, both cursors and the sender's own cursor are right. */
    assert_int_equal(
        mdb_int(admin(f), "SELECT last_cseq FROM Conversation WHERE conv = %lld", (long long)conv),
        2);
    assert_int_equal(
        mdb_int(admin(f), "SELECT last_ts FROM Conversation WHERE conv = %lld", (long long)conv),
        APPEND_TS + 5);
    assert_int_equal(
        mdb_int(admin(f), "SELECT COUNT(*) FROM ConvCursor WHERE conv = %lld", (long long)conv), 2);
    assert_int_equal(
        mdb_int(admin(f), "SELECT delivered_cseq FROM ConvCursor WHERE userid = %d AND conv = %lld",
                (int)alice, (long long)conv),
        2);
    assert_int_equal(
        mdb_int(admin(f), "SELECT delivered_cseq FROM ConvCursor WHERE userid = %d AND conv = %lld",
                (int)bob, (long long)conv),
        0);
}

/*
 * alice with ten messages she has not had at the end of two conversations
 * of LONG_CONV_MESSAGES (senders alternate, ts = cseq, so the two interleave
 * by ts, the lower conv first); her delivered and read cursors at
 * LONG_CONV_MESSAGES - TAIL.  Returns the two conversations.
 */
#define TAIL           10
#define LOGIN_MAX      50  /* max_offline_messages of the login below */
#define LOGIN_WALK_MAX 200 /* rows a login or a conversation list may walk, all statements */
static void two_long_conversations(struct store_fixture *f, int32_t *alice, int64_t conv[2])
{
    int32_t other[2];
    int64_t now;

    *alice = new_user(f, "alice");
    other[0] = new_user(f, "bob");
    other[1] = new_user(f, "carol");
    for (int i = 0; i < 2; i++) {
        struct store_cursor at = { store_conv_pair(*alice, other[i]), LONG_CONV_MESSAGES - TAIL };

        conv[i] = at.conv;
        fill_long_conversation(f, conv[i], 1, LONG_CONV_MESSAGES, *alice, other[i]);
        assert_int_equal(f->ops->delivered_advance(f->st, *alice, &at, 1), QC_OK);
        assert_int_equal(f->ops->read_set(f->st, *alice, at.conv, at.cseq, &now), QC_OK);
        assert_int_equal(now, LONG_CONV_MESSAGES - TAIL);
    }
    if (conv[0] > conv[1]) {
        int64_t t = conv[0];

        conv[0] = conv[1];
        conv[1] = t;
    }
}

struct seen_log {
    int n;
    struct store_logmsg m[LOGIN_MAX];
    char body[LOGIN_MAX][16];
};

static void keep_logmsg(void *arg, const struct store_logmsg *m)
{
    struct seen_log *s = arg;

    assert_true(s->n < LOGIN_MAX);
    s->m[s->n] = *m;
    snprintf(s->body[s->n], sizeof(s->body[0]), "%.*s", (int)m->len, m->body);
    s->n++;
}

/*
 * A login reads the messages after the delivered cursors.  MariaDB used to
 * join them as a ref on conv alone: every conversation with anything
 * undelivered was read from its first message (20,000 rows per
 * conversation here).  Now the rows walked follow the rows returned.
 */
static void test_login_does_not_walk_the_history(void **state)
{
    struct store_fixture *f = *state;
    struct seen_log s = { 0 };
    int32_t alice;
    int64_t conv[2];
    bool more = true;
    long long before, walked;

    NEED_SERVER();
    two_long_conversations(f, &alice, conv);
    before = rows_walked(f);
    assert_int_equal(f->ops->undelivered(f->st, alice, LOGIN_MAX, 1 << 20, keep_logmsg, &s, &more),
                     QC_OK);
    walked = rows_walked(f) - before;
    printf("# login with %d undelivered at the end of two conversations of %d walked %lld index"
           " rows\n",
           s.n, LONG_CONV_MESSAGES, walked);
    /* bob's and carol's (even) ones after the cursor, interleaved by ts, the lower conv first. */
    assert_int_equal(s.n, TAIL);
    assert_false(more);
    for (int i = 0; i < TAIL; i++) {
        int64_t cseq = LONG_CONV_MESSAGES - TAIL + 2 + 2 * (i / 2);
        char body[16];

        assert_int_equal(s.m[i].conv, conv[i % 2]);
        assert_int_equal(s.m[i].cseq, cseq);
        assert_int_equal(s.m[i].ts, cseq);
        assert_int_not_equal(s.m[i].sender, alice);
        snprintf(body, sizeof(body), "m%lld", (long long)cseq);
        assert_string_equal(s.body[i], body);
    }
    assert_true(walked < LOGIN_WALK_MAX);
    /* The same with a cap below what waits: the oldest three, and more. */
    s.n = 0;
    assert_int_equal(f->ops->undelivered(f->st, alice, 3, 1 << 20, keep_logmsg, &s, &more), QC_OK);
    assert_int_equal(s.n, 3);
    assert_true(more);
    assert_int_equal(s.m[2].conv, conv[0]);
    assert_int_equal(s.m[2].cseq, LONG_CONV_MESSAGES - TAIL + 4);
}

struct seen_convs {
    int n;
    int64_t conv[2], unread[2];
};

static void keep_conv(void *arg, const struct store_conv_info *c)
{
    struct seen_convs *s = arg;

    assert_true(s->n < 2);
    s->conv[s->n] = c->conv;
    s->unread[s->n] = c->unread;
    s->n++;
}

/* The unread counts of the conversation list: counted from the read cursor, not the first. */
static void test_conversations_do_not_walk_the_history(void **state)
{
    struct store_fixture *f = *state;
    struct seen_convs s = { 0 };
    int32_t alice;
    int64_t conv[2];
    long long before, walked;

    NEED_SERVER();
    two_long_conversations(f, &alice, conv);
    before = rows_walked(f);
    assert_int_equal(f->ops->conversations(f->st, alice, 100, keep_conv, &s), QC_OK);
    walked = rows_walked(f) - before;
    printf("# conversation list of two conversations of %d walked %lld index rows\n",
           LONG_CONV_MESSAGES, walked);
    assert_int_equal(s.n, 2); /* same last_ts: by conv */
    assert_int_equal(s.conv[0], conv[0]);
    assert_int_equal(s.conv[1], conv[1]);
    assert_int_equal(s.unread[0], TAIL / 2);
    assert_int_equal(s.unread[1], TAIL / 2);
    assert_true(walked < LOGIN_WALK_MAX);
}

/*
 * The per-conversation cap's search asks whether a conversation keeps
 * anything at or below last - cap.  When it does not (already purged down
 * to the cap) that used to walk every message the conversation keeps.
 */
#define PURGED_BELOW 1000
static void test_purge_search_does_not_walk_the_history(void **state)
{
    struct store_fixture *f = *state;
    int64_t scan = STORE_SCAN_START;
    int64_t conv;
    long long before, walked;
    int removed = -1;

    NEED_SERVER();
    int32_t alice = new_user(f, "alice"), bob = new_user(f, "bob");

    conv = store_conv_pair(alice, bob);
    fill_long_conversation(f, conv, PURGED_BELOW + 1, LONG_CONV_MESSAGES, alice, bob);
    before = rows_walked(f);
    assert_int_equal(
        f->ops->log_purge(f->st, 0, LONG_CONV_MESSAGES - PURGED_BELOW, 100, &scan, &removed),
        QC_OK);
    walked = rows_walked(f) - before;
    printf("# purge search over a conversation of %d kept walked %lld index rows\n",
           LONG_CONV_MESSAGES - PURGED_BELOW, walked);
    assert_int_equal(removed, 0);
    assert_true(walked < RUN_WALK_MAX);
    /* One more than the cap: the oldest goes. */
    mdb_exec(admin(f), "UPDATE Conversation SET last_cseq = last_cseq + 1 WHERE conv = %lld",
             (long long)conv);
    assert_int_equal(
        f->ops->log_purge(f->st, 0, LONG_CONV_MESSAGES - PURGED_BELOW, 100, &scan, &removed),
        QC_OK);
    assert_int_equal(removed, 1);
    assert_int_equal(
        mdb_int(admin(f), "SELECT MIN(cseq) FROM Message WHERE conv = %lld", (long long)conv),
        PURGED_BELOW + 2);
}

/* More recipients than one batch holds; duplicates count twice; all or nothing. */
static void test_offline_many_recipients(void **state)
{
    struct store_fixture *f = *state;
    int32_t ids[MANY_USERS + 1];
    char name[QC_NAME_MAX + 1];
    int i;

    NEED_SERVER();
    for (i = 0; i < MANY_USERS; i++) {
        snprintf(name, sizeof(name), "user%d", i);
        ids[i] = new_user(f, name);
    }
    ids[MANY_USERS] = NO_SUCH_ID; /* in the last, partial batch */
    assert_int_equal(f->ops->offline_store(f->st, ids, MANY_USERS + 1, "x", 1), QC_ENOUSER);
    assert_int_equal(mdb_int(admin(f), "SELECT count(*) FROM OfflineMessage"), 0);

    ids[MANY_USERS] = ids[0]; /* listed twice: two copies */
    store_text(f, f->st, ids, MANY_USERS + 1, "hello");
    assert_int_equal(mdb_int(admin(f), "SELECT count(*) FROM OfflineMessage"), MANY_USERS + 1);
    assert_int_equal(offline_count(f, ids[0]), 2);
    for (i = 1; i < MANY_USERS; i++)
        assert_int_equal(offline_count(f, ids[i]), 1);
}

/* Only a dropped count pending (every message taken): reported, then reset. */
static void test_offline_dropped_only(void **state)
{
    struct store_fixture *f = *state;
    struct msgs *m = calloc(1, sizeof(*m));
    int32_t alice;
    int dropped = -1;

    NEED_SERVER();
    assert_non_null(m);
    alice = new_user(f, "alice");
    mdb_exec(admin(f), "INSERT INTO OfflineDropped VALUES (%d, 7)", (int)alice);
    assert_int_equal(f->ops->offline_take(f->st, alice, seen_msg, m, &dropped), QC_OK);
    assert_int_equal(dropped, 7);
    assert_int_equal(m->n, 0);
    assert_int_equal(f->ops->offline_take(f->st, alice, seen_msg, m, &dropped), QC_OK);
    assert_int_equal(dropped, 0);
    free(m);
}

/* Another connection holds the lock the write needs past the lock wait timeout. */
static void test_busy_is_storage_error(void **state)
{
    struct store_fixture *f = *state;
    struct store_user u;
    int32_t alice, bob;
    int64_t t0;
    MYSQL *locker;

    NEED_SERVER();
    alice = new_user(f, "alice");
    bob = new_user(f, "bob");
    locker = mdb_connect(dbname(f), 0);
    mdb_exec(locker, "START TRANSACTION");
    mdb_exec(locker, "SELECT * FROM Friend FOR UPDATE");
    t0 = now_ms();
    assert_int_equal(f->ops->friend_add(f->st, alice, bob), QC_ESTORAGE);
    assert_true(now_ms() - t0 < OUTAGE_MAX_MS);
    assert_int_equal(f->ops->user_get(f->st, alice, &u), QC_OK); /* reads go on */
    mdb_exec(locker, "ROLLBACK");
    mysql_close(locker);
    assert_int_equal(f->ops->friend_add(f->st, alice, bob), QC_OK);
}

/* KILL the driver's connection: the next calls reconnect without a word. */
static void test_reconnect_after_kill(void **state)
{
    struct store_fixture *f = *state;
    struct store_user u;
    int32_t alice, bob, id = 0, g = 0;
    long long conn;

    NEED_SERVER();
    alice = new_user(f, "alice");

    conn = driver_connection(f);
    assert_true(conn > 0);
    mdb_exec(admin(f), "KILL CONNECTION %lld", conn);
    assert_int_equal(f->ops->user_get(f->st, alice, &u), QC_OK); /* a read */
    assert_string_equal(u.name, "alice");
    assert_true(driver_connection(f) != conn);

    mdb_exec(admin(f), "KILL CONNECTION %lld", driver_connection(f));
    assert_int_equal(f->ops->user_create(f->st, "bob", "$y$x", &id), QC_OK); /* a write */
    bob = id;
    assert_int_equal(mdb_int(admin(f), "SELECT count(*) FROM User WHERE name = 'bob'"), 1);

    mdb_exec(admin(f), "KILL CONNECTION %lld", driver_connection(f));
    assert_int_equal(f->ops->group_create(f->st, "g", "", bob, &g), QC_OK); /* a transaction */
    assert_int_equal(mdb_int(admin(f), "SELECT count(*) FROM GroupUser"), 1);
    assert_int_equal(f->ops->group_join(f->st, g, alice), QC_OK);
}

/* The connection dies while a callback makes a nested call. */
struct killer {
    struct store_fixture *f;
    int groups;
    int nested_err;
};

static void kill_then_nest(void *arg, int32_t groupid, const char *name, const char *desc)
{
    struct killer *k = arg;
    struct seen s;

    if (k->groups++ > 0)
        return;
    mdb_exec(admin(k->f), "KILL CONNECTION %lld", driver_connection(k->f));
    memset(&s, 0, sizeof(s));
    k->nested_err = k->f->ops->group_members(k->f->st, groupid, seen_member, &s);
}

static void test_lost_in_callback(void **state)
{
    struct store_fixture *f = *state;
    struct killer k = { .f = f, .nested_err = -1 };
    int32_t alice, g1 = 0, g2 = 0;
    struct nested n = { .f = f };

    NEED_SERVER();
    alice = new_user(f, "alice");
    assert_int_equal(f->ops->group_create(f->st, "g1", "", alice, &g1), QC_OK);
    assert_int_equal(f->ops->group_create(f->st, "g2", "", alice, &g2), QC_OK);
    assert_int_equal(f->ops->user_groups(f->st, alice, kill_then_nest, &k), QC_OK);
    assert_int_equal(k.groups, 2); /* the outer rows were all handed over */
    assert_int_equal(k.nested_err, QC_ESTORAGE);
    assert_int_equal(f->ops->user_groups(f->st, alice, list_members, &n), QC_OK);
    assert_int_equal(n.groups, 2);
    assert_int_equal(n.members, 2);
}

/*
 * mariadbd stopped (SIGSTOP: it accepts connections and never answers, the
 * worst case): every call fails with QC_ESTORAGE within OUTAGE_MAX_MS, a
 * call right after fails fast, and after SIGCONT the handle works again.
 */
static void test_server_stopped(void **state)
{
    struct store_fixture *f = *state;
    struct store_user u;
    int32_t alice, bob, id = 0;
    int64_t t0, first, second, third;
    int err = QC_ESTORAGE, n = -1;

    NEED_SERVER();
    alice = new_user(f, "alice");
    bob = new_user(f, "bob");
    mdb_stop_server(GUARD_MS);

    t0 = now_ms();
    assert_int_equal(f->ops->friend_add(f->st, alice, bob), QC_ESTORAGE);
    first = now_ms() - t0;
    t0 = now_ms();
    assert_int_equal(f->ops->user_get(f->st, alice, &u), QC_ESTORAGE);
    second = now_ms() - t0;
    sleep_ms(1100); /* past the reconnect interval: one more attempt */
    t0 = now_ms();
    assert_int_equal(f->ops->offline_count(f->st, alice, &n), QC_ESTORAGE);
    third = now_ms() - t0;
    assert_false(f->ops->ping(f->st));
    fprintf(stderr,
            "test_server_stopped: first call %lld ms, next %lld ms, "
            "after the interval %lld ms\n",
            (long long)first, (long long)second, (long long)third);
    assert_true(first <= OUTAGE_MAX_MS);
    assert_true(second <= FAST_FAIL_MS);
    assert_true(third <= OUTAGE_MAX_MS);

    mdb_resume_server();
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
        cmocka_unit_test(test_migrations_match_files),
        STORE_TEST(test_newer_schema_refused),
        STORE_TEST(test_seed_to_log),
        STORE_TEST(test_open_errors),
        STORE_TEST(test_tcp),
        STORE_CASES(setup, teardown),
        STORE_TEST(test_utf8mb4),
        STORE_TEST(test_offline_big_message),
        STORE_TEST(test_offline_many_recipients),
        STORE_TEST(test_append_does_not_walk_the_history),
        STORE_TEST(test_numbered_append_writes_only_what_changes),
        STORE_TEST(test_login_does_not_walk_the_history),
        STORE_TEST(test_conversations_do_not_walk_the_history),
        STORE_TEST(test_purge_search_does_not_walk_the_history),
        STORE_TEST(test_offline_dropped_only),
        STORE_TEST(test_busy_is_storage_error),
        STORE_TEST(test_reconnect_after_kill),
        STORE_TEST(test_lost_in_callback),
        STORE_TEST(test_server_stopped),
    };

    (void)mdb_load_env("test_store_mysql");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
