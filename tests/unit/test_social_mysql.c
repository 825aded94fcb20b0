/*
 * test_social_mysql.c - the social storage functions on the MySQL driver,
 * against the private MariaDB of tests/harness/mariadb.sh (its DIR/env
 * exported; without it every test is skipped with a note).  Each test
 * gets a fresh database qchat_s<pid>_<n> with today's schema (made by the
 * store's open) plus sql/mysql/003-social.sql, dropped afterwards.  The
 * cases both drivers share are in social_cases.c; here are those only a
 * server has: the connection killed under a social call, two processes
 * asking each other at once, and EXPLAIN of the hot queries.  Statements
 * are counted with the server's Com_stmt_execute.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mysql.h>

#include "../integration/mysql_env.h"
#include "social_cases.h"

#define MIGRATION_FILE "sql/mysql/003-social.sql"
#define DBNAME_MAX     64
#define CROSSING_PAIRS 20 /* pairs of users asking each other at the same instant */
#define SQL_PLAN_MAX   1024

static unsigned db_counter;

struct mysql_social_fixture {
    struct social_fixture social; /* first: *state points at all of it */
    char db[DBNAME_MAX];
    MYSQL *admin; /* the test's own connection, on db */
};

static struct mysql_social_fixture *outer(struct store_fixture *f)
{
    return (struct mysql_social_fixture *)f;
}

static void raw_sql(struct store_fixture *f, const char *sql)
{
    mdb_exec(outer(f)->admin, "%s", sql);
}

static long long raw_int(struct social_fixture *f, const char *sql)
{
    return mdb_int(outer(&f->store)->admin, "%s", sql);
}

static long long statements(struct social_fixture *f)
{
    return mdb_int(outer(&f->store)->admin,
                   "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS"
                   " WHERE VARIABLE_NAME = 'COM_STMT_EXECUTE'");
}

/* Does nothing once the store's open applies the numbered migrations itself. */
static void migrate(struct social_fixture *f)
{
    MYSQL *m;

    if (mdb_int(outer(&f->store)->admin,
                "SELECT count(*) FROM information_schema.TABLES"
                " WHERE table_schema = DATABASE() AND table_name = 'FriendRequest'") > 0)
        return;
    m = mdb_connect(outer(&f->store)->db, CLIENT_MULTI_STATEMENTS);
    mdb_run_file(m, MIGRATION_FILE);
    mysql_close(m);
}

static int setup(void **state)
{
    struct mysql_social_fixture *mf = calloc(1, sizeof(*mf));
    struct store_fixture *f;

    assert_non_null(mf);
    f = &mf->social.store;
    *state = mf;
    f->ops = store_driver("mysql");
    f->raw_sql = raw_sql;
    mf->social.so = social_driver("mysql");
    assert_ptr_equal(mf->social.so, &social_mysql_ops);
    mf->social.migrate = migrate;
    mf->social.raw_int = raw_int;
    mf->social.statements = statements;
    f->unavailable = mdb_env.socket[0] == '\0';
    if (f->unavailable)
        return 0;
    mf->admin = mdb_connect(NULL, 0);
    snprintf(mf->db, sizeof(mf->db), "qchat_s%d_%u", (int)getpid(), ++db_counter);
    mdb_exec(mf->admin, "CREATE DATABASE `%s` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", mf->db);
    assert_int_equal(mysql_select_db(mf->admin, mf->db), 0);
    config_defaults(&f->cfg);
    strlcpy(f->cfg.storage_driver, "mysql", sizeof(f->cfg.storage_driver));
    strlcpy(f->cfg.storage_socket, mdb_env.socket, sizeof(f->cfg.storage_socket));
    strlcpy(f->cfg.storage_user, mdb_env.user, sizeof(f->cfg.storage_user));
    strlcpy(f->cfg.storage_password_file, mdb_env.password_file,
            sizeof(f->cfg.storage_password_file));
    strlcpy(f->cfg.storage_database, mf->db, sizeof(f->cfg.storage_database));
    f->st = open_store(f, f->cfg.max_offline_messages);
    return 0;
}

static int teardown(void **state)
{
    struct mysql_social_fixture *mf = *state;

    if (mf->social.store.st != NULL)
        mf->social.store.ops->close(mf->social.store.st);
    if (mf->admin != NULL) {
        if (mysql_ping(mf->admin) != 0) {
            mysql_close(mf->admin);
            mf->admin = mdb_connect(NULL, 0);
        }
        mdb_exec(mf->admin, "DROP DATABASE IF EXISTS `%s`", mf->db);
        mysql_close(mf->admin);
    }
    free(mf);
    return 0;
}

/* The driver's connection (the only one on the database besides admin's). */
static long long driver_connection(struct mysql_social_fixture *mf)
{
    return mdb_int(mf->admin,
                   "SELECT id FROM information_schema.PROCESSLIST"
                   " WHERE db = '%s' AND id <> CONNECTION_ID() ORDER BY id LIMIT 1",
                   mf->db);
}

/* ---- MySQL only ----------------------------------------------------- */

/* KILL the driver's connection: social reads and transactions reconnect and go on. */
static void test_reconnect_after_kill(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    struct mysql_social_fixture *mf = *state;
    int32_t alice = new_user(&f->store, "alice"), bob = new_user(&f->store, "bob");
    long long conn;
    bool blocked = true;
    int outcome = 0;

    conn = driver_connection(mf);
    assert_true(conn > 0);
    mdb_exec(mf->admin, "KILL CONNECTION %lld", conn);
    assert_int_equal(f->so->is_blocked(f->store.st, alice, bob, &blocked), QC_OK); /* a read */
    assert_false(blocked);
    assert_true(driver_connection(mf) != conn);

    mdb_exec(mf->admin, "KILL CONNECTION %lld", driver_connection(mf));
    assert_int_equal(f->so->friend_request(f->store.st, alice, bob, 10, &outcome), QC_OK);
    assert_int_equal(outcome, SOCIAL_REQUESTED);
    assert_int_equal(mdb_int(mf->admin, "SELECT count(*) FROM FriendRequest"), 1);

    mdb_exec(mf->admin, "KILL CONNECTION %lld", driver_connection(mf));
    assert_int_equal(f->so->block(f->store.st, bob, alice), QC_OK); /* a transaction */
    assert_int_equal(mdb_int(mf->admin, "SELECT count(*) FROM FriendRequest"), 0);
    /* the v1 functions share the connection and go on too */
    assert_int_equal(f->store.ops->friend_add(f->store.st, alice, bob), QC_OK);
}

/*
 * Pairs of users ask each other at the same instant from two processes:
 * every pair ends as friends with no request left, whichever came first,
 * and no call fails (deadlocks are retried).
 */
static void test_crossing_requests(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t a[CROSSING_PAIRS], b[CROSSING_PAIRS];
    char name[QC_NAME_MAX + 1];
    pid_t pid;
    int i, status = -1, outcome = 0, failures = 0;

    for (i = 0; i < CROSSING_PAIRS; i++) {
        snprintf(name, sizeof(name), "a%d", i);
        a[i] = new_user(&f->store, name);
        snprintf(name, sizeof(name), "b%d", i);
        b[i] = new_user(&f->store, name);
    }
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct store *st = open_store(&f->store, f->store.cfg.max_offline_messages);

        alarm(CHILD_ALARM_SEC);
        for (i = 0; i < CROSSING_PAIRS; i++)
            if (f->so->friend_request(st, b[i], a[i], 10, &outcome) != QC_OK)
                failures++;
        f->store.ops->close(st);
        _exit(failures == 0 ? 0 : 1);
    }
    for (i = 0; i < CROSSING_PAIRS; i++)
        if (f->so->friend_request(f->store.st, a[i], b[i], 10, &outcome) != QC_OK)
            failures++;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(failures, 0);
    assert_int_equal(mdb_int(outer(&f->store)->admin, "SELECT count(*) FROM Friend"),
                     2 * CROSSING_PAIRS);
    assert_int_equal(mdb_int(outer(&f->store)->admin, "SELECT count(*) FROM FriendRequest"), 0);
}

/* The hot queries use a key (EXPLAIN type is never ALL, a full table scan). */
static void test_explain_uses_keys(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    static const char *const queries[] = {
        "SELECT u.id, u.name FROM FriendRequest r JOIN User u ON u.id = r.fromid"
        " WHERE r.toid = 1 ORDER BY r.created, r.fromid",
        "SELECT userid FROM GroupUser WHERE groupid = 1 AND grouprole = 'admin'"
        " ORDER BY joinseq LIMIT 1",
        "SELECT count(*) FROM GroupUser WHERE userid = 1",
        "SELECT hash, device, expires FROM LoginToken WHERE userid = 1",
        "SELECT 1 FROM UserBlock WHERE userid = 1 AND blockedid = 2",
    };
    MYSQL *m = outer(&f->store)->admin;
    size_t i;

    for (i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
        MYSQL_RES *res;
        MYSQL_ROW row;
        char sql[SQL_PLAN_MAX];

        snprintf(sql, sizeof(sql), "EXPLAIN %s", queries[i]);
        if (mysql_query(m, sql) != 0)
            fail_msg("%s: %s", sql, mysql_error(m));
        res = mysql_store_result(m);
        assert_non_null(res);
        while ((row = mysql_fetch_row(res)) != NULL) /* column 3 is type */
            if (row[3] != NULL && strcmp(row[3], "ALL") == 0)
                fail_msg("full scan of %s in %s", row[2], queries[i]);
        mysql_free_result(res);
    }
}

/*
 * Another connection holds the rows a change needs past the lock wait
 * timeout: QC_ESTORAGE, nothing half done, and the change works after.
 */
static void test_lock_wait_is_storage_error(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    struct mysql_social_fixture *mf = *state;
    int32_t alice = new_user(&f->store, "alice"), bob = new_user(&f->store, "bob");
    MYSQL *locker;

    assert_int_equal(f->so->friend_add(f->store.st, alice, bob, 10), QC_OK);
    locker = mdb_connect(mf->db, 0);
    mdb_exec(locker, "START TRANSACTION");
    mdb_exec(locker, "SELECT * FROM Friend FOR UPDATE");
    assert_int_equal(f->so->block(f->store.st, alice, bob), QC_ESTORAGE);
    mdb_exec(locker, "ROLLBACK");
    mysql_close(locker);
    assert_int_equal(mdb_int(mf->admin, "SELECT count(*) FROM UserBlock"), 0);
    assert_int_equal(mdb_int(mf->admin, "SELECT count(*) FROM Friend"), 2);
    assert_int_equal(f->so->block(f->store.st, alice, bob), QC_OK);
    assert_int_equal(mdb_int(mf->admin, "SELECT count(*) FROM Friend"), 0);
}

static long long prepares(struct mysql_social_fixture *mf)
{
    return mdb_int(mf->admin, "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS"
                              " WHERE VARIABLE_NAME = 'COM_STMT_PREPARE'");
}

static void ignore_user(void *arg, int32_t id, const char *name)
{
    (void)arg;
    (void)id;
    (void)name;
}

/*
 * A connection prepares each social statement once: calls again (reads,
 * transactions, locking reads) prepare nothing more; after the connection
 * is replaced they are prepared again on the new one.
 */
static void test_statements_prepared_once(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    struct mysql_social_fixture *mf = *state;
    int32_t alice = new_user(&f->store, "alice"), bob = new_user(&f->store, "bob");
    bool blocked = false;
    long long before;
    int round;

    for (round = 0; round < 4; round++) {
        if (round == 1)
            before = prepares(mf);
        assert_int_equal(f->so->friend_add(f->store.st, alice, bob, 10), QC_OK);
        assert_int_equal(f->so->friends(f->store.st, alice, ignore_user, NULL), QC_OK);
        assert_int_equal(f->so->block(f->store.st, alice, bob), QC_OK);
        assert_int_equal(f->so->is_blocked(f->store.st, alice, bob, &blocked), QC_OK);
        assert_true(blocked);
        assert_int_equal(f->so->unblock(f->store.st, alice, bob), QC_OK);
    }
    assert_int_equal(prepares(mf) - before, 0);

    mdb_exec(mf->admin, "KILL CONNECTION %lld", driver_connection(mf));
    assert_int_equal(f->so->is_blocked(f->store.st, alice, bob, &blocked), QC_OK);
    assert_false(blocked);
    assert_true(prepares(mf) > before);
}

#define SOCIAL_TEST(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        SOCIAL_CASES(setup, teardown),
        SOCIAL_TEST(test_reconnect_after_kill),
        SOCIAL_TEST(test_crossing_requests),
        SOCIAL_TEST(test_explain_uses_keys),
        SOCIAL_TEST(test_lock_wait_is_storage_error),
        SOCIAL_TEST(test_statements_prepared_once),
    };

    (void)mdb_load_env("test_social_mysql");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
