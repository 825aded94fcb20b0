/*
 * test_store.c - the SQLite storage driver against a temporary database.
 *
 * Every test gets a fresh directory from mkdtemp() holding qchat.db and an
 * open handle on it.  The cases every driver shares are in store_cases.c;
 * here are those only SQLite has (its schema file, its directory, its
 * lock).  The schema test reads sql/sqlite/schema.sql below $QCHAT_SRCDIR
 * (default ".": the tests run from the project root).
 */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store_cases.h"

#define TMP_TEMPLATE "/tmp/qchat-test-store-XXXXXX"
#define DB_NAME      "qchat.db"
#define SCHEMA_FILE  "sql/sqlite/schema.sql"

struct sqlite_fixture {
    struct store_fixture store; /* first: *state points at both */
    char dir[sizeof(TMP_TEMPLATE)];
    char path[PATH_MAX];
};

static struct sqlite_fixture *sqlite_fixture(struct store_fixture *f)
{
    return (struct sqlite_fixture *)((char *)f - offsetof(struct sqlite_fixture, store));
}

/* ---- fixture -------------------------------------------------------- */

/* Run SQL on a connection of the test's own, bypassing the driver. */
static void raw_sql(struct store_fixture *f, const char *sql)
{
    sqlite3 *db = NULL;

    assert_int_equal(sqlite3_open(sqlite_fixture(f)->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static int setup(void **state)
{
    struct sqlite_fixture *sf = calloc(1, sizeof(*sf));
    struct store_fixture *f;

    assert_non_null(sf);
    f = &sf->store;
    memcpy(sf->dir, TMP_TEMPLATE, sizeof(TMP_TEMPLATE));
    assert_non_null(mkdtemp(sf->dir));
    snprintf(sf->path, sizeof(sf->path), "%s/%s", sf->dir, DB_NAME);
    config_defaults(&f->cfg);
    strlcpy(f->cfg.storage_driver, "sqlite", sizeof(f->cfg.storage_driver));
    strlcpy(f->cfg.storage_path, sf->path, sizeof(f->cfg.storage_path));
    f->raw_sql = raw_sql;
    f->ops = store_driver("sqlite");
    assert_non_null(f->ops);
    f->st = open_store(f, f->cfg.max_offline_messages);
    *state = f;
    return 0;
}

static void remove_file(const char *dir, const char *name)
{
    char path[PATH_MAX];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (unlink(path) != 0 && errno != ENOENT)
        fprintf(stderr, "unlink %s: %s\n", path, strerror(errno));
}

static int teardown(void **state)
{
    struct store_fixture *f = *state;
    struct sqlite_fixture *sf = sqlite_fixture(f);

    if (f->st != NULL)
        f->ops->close(f->st);
    remove_file(sf->dir, DB_NAME);
    remove_file(sf->dir, DB_NAME "-wal");
    remove_file(sf->dir, DB_NAME "-shm");
    if (rmdir(sf->dir) != 0)
        fprintf(stderr, "rmdir %s: %s\n", sf->dir, strerror(errno));
    free(sf);
    return 0;
}

/* ---- tests ---------------------------------------------------------- */

static void test_driver_lookup(void **state)
{
    (void)state;
    assert_ptr_equal(store_driver("sqlite"), &store_sqlite_ops);
    assert_string_equal(store_sqlite_ops.name, "sqlite");
    assert_null(store_driver("postgres"));
    assert_null(store_driver(""));
    assert_null(store_driver(NULL));
}

static void test_schema_matches_file(void **state)
{
    const char *srcdir = getenv("QCHAT_SRCDIR");
    char path[PATH_MAX], *text;
    size_t want = strlen(store_sqlite_schema), got;
    FILE *fp;

    (void)state;
    snprintf(path, sizeof(path), "%s/%s", srcdir != NULL ? srcdir : ".", SCHEMA_FILE);
    fp = fopen(path, "r");
    if (fp == NULL)
        fail_msg("%s: %s (set QCHAT_SRCDIR to the project root)", path, strerror(errno));
    text = calloc(1, want + 2);
    assert_non_null(text);
    got = fread(text, 1, want + 1, fp); /* one more: the file must not be longer */
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(got, want);
    assert_memory_equal(text, store_sqlite_schema, want);
    free(text);
}

static void test_open_missing_directory(void **state)
{
    struct store_fixture *f = *state;
    const char *dir = sqlite_fixture(f)->dir;
    struct qc_config cfg = f->cfg;
    struct store *st = NULL;
    char err[ERR_MAX] = "";

    snprintf(cfg.storage_path, sizeof(cfg.storage_path), "%s/missing/%s", dir, DB_NAME);
    assert_int_equal(f->ops->open(&st, &cfg, err, sizeof(err)), QC_ESTORAGE);
    assert_null(st);
    assert_non_null(strstr(err, "missing"));
    assert_non_null(strstr(err, "No such file or directory"));

    /* The parent is a file, not a directory. */
    snprintf(cfg.storage_path, sizeof(cfg.storage_path), "%s/%s/x.db", dir, DB_NAME);
    assert_int_equal(f->ops->open(&st, &cfg, err, sizeof(err)), QC_ESTORAGE);
    assert_null(st);
    assert_non_null(strstr(err, "not a directory"));

    cfg.storage_path[0] = '\0';
    assert_int_equal(f->ops->open(&st, &cfg, err, sizeof(err)), QC_ESTORAGE);
    assert_non_null(strstr(err, "empty"));
}

/* Another connection holds the write lock past the busy timeout. */
static void test_busy_is_storage_error(void **state)
{
    struct store_fixture *f = *state;
    int32_t alice = new_user(f, "alice"), bob = new_user(f, "bob");
    struct store_user u;
    sqlite3 *db = NULL;

    assert_int_equal(sqlite3_open(sqlite_fixture(f)->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(f->ops->friend_add(f->st, alice, bob), QC_ESTORAGE);
    assert_int_equal(f->ops->user_get(f->st, alice, &u), QC_OK); /* WAL: reads go on */
    assert_int_equal(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_int_equal(f->ops->friend_add(f->st, alice, bob), QC_OK);
}

#define STORE_TEST(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_driver_lookup),    cmocka_unit_test(test_schema_matches_file),
        STORE_TEST(test_open_missing_directory), STORE_CASES(setup, teardown),
        STORE_TEST(test_busy_is_storage_error),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
