/*
 * test_store.c - the SQLite storage driver against a temporary database.
 *
 * Every test gets a fresh directory from mkdtemp() holding qchat.db and an
 * open handle on it.  The cases every driver shares are in store_cases.c;
 * here are those only SQLite has (its schema file, its directory, its
 * lock, its file mode).  The schema test reads the migrations of
 * sql/sqlite/ below $QCHAT_SRCDIR (default ".": the tests run from the
 * project root).
 */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store_cases.h"

#define TMP_TEMPLATE "/tmp/qchat-test-store-XXXXXX"
#define DB_NAME      "qchat.db"
#define SQL_DIR      "sql/sqlite"

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

/* An empty database with the version 1 tables only, as v1 of qchatd made it. */
static void make_v1(struct store_fixture *f)
{
    struct sqlite_fixture *sf = sqlite_fixture(f);
    sqlite3 *db = NULL;

    sqlite_files_remove(sf->dir, DB_NAME);
    assert_int_equal(sqlite3_open(sf->path, &db), SQLITE_OK);
    assert_string_equal(store_sqlite_migrations[0].name, "001-base.sql");
    assert_int_equal(sqlite3_exec(db, store_sqlite_migrations[0].sql, NULL, NULL, NULL), SQLITE_OK);
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
    sqlite_case_config(f, sf->path);
    f->raw_sql = raw_sql;
    f->make_v1 = make_v1;
    f->st = open_store(f, f->cfg.max_offline_messages);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct store_fixture *f = *state;
    struct sqlite_fixture *sf = sqlite_fixture(f);

    if (f->st != NULL)
        f->ops->close(f->st);
    sqlite_dir_remove(sf->dir, DB_NAME);
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

/* The embedded migrations are the files of sql/sqlite/, byte for byte, numbered 1, 2, ... */
static void test_schema_matches_file(void **state)
{
    const char *srcdir = getenv("QCHAT_SRCDIR");
    char path[PATH_MAX], *text;
    size_t i, want, got;
    FILE *fp;

    (void)state;
    assert_true(store_sqlite_migration_count >= 2);
    for (i = 0; i < store_sqlite_migration_count; i++) {
        const struct store_migration *m = &store_sqlite_migrations[i];

        assert_int_equal(m->version, (int)i + 1);
        snprintf(path, sizeof(path), "%s/%s/%s", srcdir != NULL ? srcdir : ".", SQL_DIR, m->name);
        fp = fopen(path, "r");
        if (fp == NULL)
            fail_msg("%s: %s (set QCHAT_SRCDIR to the project root)", path, strerror(errno));
        want = strlen(m->sql);
        text = calloc(1, want + 2);
        assert_non_null(text);
        got = fread(text, 1, want + 1, fp); /* one more: the file must not be longer */
        assert_int_equal(fclose(fp), 0);
        assert_int_equal(got, want);
        assert_memory_equal(text, m->sql, want);
        free(text);
    }
}

/* A new database file is 0600 whatever the umask; its WAL too. */
static void test_file_mode(void **state)
{
    struct store_fixture *f = *state;
    struct sqlite_fixture *sf = sqlite_fixture(f);
    struct stat sb;
    mode_t old;

    f->ops->close(f->st);
    f->st = NULL;
    sqlite_files_remove(sf->dir, DB_NAME);
    old = umask(0);
    f->st = open_store(f, f->cfg.max_offline_messages);
    (void)umask(old);
    new_user(f, "alice");
    assert_int_equal(stat(sf->path, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0600);
    snprintf(sf->path + strlen(sf->path), sizeof(sf->path) - strlen(sf->path), "-wal");
    assert_int_equal(stat(sf->path, &sb), 0);
    sf->path[strlen(sf->path) - 4] = '\0';
    assert_int_equal(sb.st_mode & 07777, 0600);
    /* An existing file keeps the mode its operator gave it. */
    f->ops->close(f->st);
    assert_int_equal(chmod(sf->path, 0640), 0);
    f->st = open_store(f, f->cfg.max_offline_messages);
    assert_int_equal(stat(sf->path, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0640);
}

/* A database from a newer qchatd is refused, not damaged. */
static void test_newer_schema_refused(void **state)
{
    struct store_fixture *f = *state;
    struct store *st = NULL;
    char err[ERR_MAX] = "";

    f->raw_sql(f, "INSERT INTO SchemaVersion (version, name) VALUES (999, '999-future.sql')");
    assert_int_equal(f->ops->open(&st, &f->cfg, err, sizeof(err)), QC_ESTORAGE);
    assert_null(st);
    assert_non_null(strstr(err, "newer"));
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

#define WAL_TEST_BODY     6000 /* bytes of a message: a few WAL frames per commit */
#define WAL_TEST_FRAMES   4400 /* past sqlite.c's WAL_RESTART_PAGES (4000) */
#define WAL_TEST_SLOW_MS  2000 /* a commit this slow waited for the reader (busy timeout 5 s) */
#define WAL_TEST_MAX_MSGS 5000

static int64_t ms_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Frames in the WAL now, as a checkpoint that copies nothing reports them. */
static int wal_frames(sqlite3 *db)
{
    int logged = -1, done = -1;

    assert_int_equal(
        sqlite3_wal_checkpoint_v2(db, "main", SQLITE_CHECKPOINT_PASSIVE, &logged, &done),
        SQLITE_OK);
    return logged;
}

/*
 * A reader that keeps its snapshot (an operator's sqlite3 shell, a backup)
 * while the WAL passes the RESTART threshold: each commit's checkpoint may
 * not finish, but it must not hold the commit (and, holding the write lock,
 * every other writer) for the busy timeout; once the reader is gone the WAL
 * starts over again.
 */
static void test_wal_restart_does_not_wait_for_a_reader(void **state)
{
    struct store_fixture *f = *state;
    int32_t alice = new_user(f, "alice"), bob = new_user(f, "bob");
    int64_t conv = store_conv_pair(alice, bob), cseq = 0, slowest = 0;
    static char body[WAL_TEST_BODY];
    sqlite3 *reader = NULL, *probe = NULL;

    memset(body, 'x', sizeof(body));
    assert_int_equal(sqlite3_open(sqlite_fixture(f)->path, &reader), SQLITE_OK);
    assert_int_equal(sqlite3_open(sqlite_fixture(f)->path, &probe), SQLITE_OK);
    /* A connection opens the WAL at its first read: before it, no frame count. */
    assert_int_equal(sqlite3_exec(probe, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_exec(reader, "BEGIN; SELECT count(*) FROM Message", NULL, NULL, NULL),
                     SQLITE_OK);
    while (wal_frames(probe) < WAL_TEST_FRAMES && cseq < WAL_TEST_MAX_MSGS) {
        int64_t t0 = ms_now();
        struct store_logmsg m = { conv, ++cseq, 0, t0, alice, body, sizeof(body) };

        assert_int_equal(f->ops->log_append(f->st, &m, 1), QC_OK);
        if (ms_now() - t0 > slowest)
            slowest = ms_now() - t0;
        if (slowest > WAL_TEST_SLOW_MS)
            break; /* each commit from here on would wait as long */
    }
    print_message("%lld messages, WAL %d frames, slowest commit %lld ms\n", (long long)cseq,
                  wal_frames(probe), (long long)slowest);
    assert_true(slowest <= WAL_TEST_SLOW_MS);
    assert_true(wal_frames(probe) >= WAL_TEST_FRAMES);

    /* The reader gone, a later commit's checkpoint finishes and the WAL starts over. */
    assert_int_equal(sqlite3_exec(reader, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    for (int more = 0; more < WAL_TEST_MAX_MSGS && wal_frames(probe) >= WAL_TEST_FRAMES / 10;
         more++) {
        struct store_logmsg m = { conv, ++cseq, 0, ms_now(), alice, body, sizeof(body) };
        assert_int_equal(f->ops->log_append(f->st, &m, 1), QC_OK);
    }
    assert_true(wal_frames(probe) < WAL_TEST_FRAMES / 10);
    assert_int_equal(sqlite3_close(reader), SQLITE_OK);
    assert_int_equal(sqlite3_close(probe), SQLITE_OK);
}

#define STORE_TEST(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_driver_lookup),
        cmocka_unit_test(test_schema_matches_file),
        STORE_TEST(test_open_missing_directory),
        STORE_CASES(setup, teardown),
        STORE_TEST(test_busy_is_storage_error),
        STORE_TEST(test_file_mode),
        STORE_TEST(test_newer_schema_refused),
        STORE_TEST(test_wal_restart_does_not_wait_for_a_reader),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
