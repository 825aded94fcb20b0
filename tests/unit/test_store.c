/*
 * test_store.c - the SQLite storage driver against a temporary database.
 *
 * Every test gets a fresh directory from mkdtemp() holding qchat.db and an
 * open handle on it.  The cases every driver shares are in store_cases.c;
 * here are those only SQLite has (its schema file, its directory, its
 * lock, its file mode, and the work its statements do on a long
 * conversation, counted in virtual-machine steps).  The schema test reads the migrations of
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

#include "../../src/store/social_db.h"
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

/* ---- work on a long conversation ------------------------------------- */

/*
 * Virtual-machine steps of every statement the driver's connection holds
 * since the last call (each step is at most one row visited, and most rows
 * visited cost several): how the cases below see what a call read.  All of
 * the log's statements are prepared once and kept, so none is missed.
 */
static long long vm_steps(struct store_fixture *f)
{
    sqlite3 *db = sqlite_store_db(f->st);
    long long steps = 0;

    for (sqlite3_stmt *s = sqlite3_next_stmt(db, NULL); s != NULL; s = sqlite3_next_stmt(db, s))
        steps += sqlite3_stmt_status(s, SQLITE_STMTSTATUS_VM_STEP, 1);
    return steps;
}

/*
 * A call on a long conversation whose answer is at most a page (PAGE
 * messages) takes fewer steps than half the conversation has messages; a
 * walk over the history costs several steps per message.  (A login of a
 * page, window and sorts included, takes about 20,000.)
 */
#define LONG_CONV_MESSAGES 100000
#define PAGE_STEPS_MAX     (LONG_CONV_MESSAGES / 2)
#define TAIL               10   /* messages at the end the cursors have not passed */
#define PAGE               50   /* the login's max_offline_messages, a history page */
#define PURGED_BELOW       1000 /* cseqs already purged in the pin case */
#define APPEND_TS          1700000000000LL

/*
 * Messages first..last of conv written straight into the tables in one
 * statement (ts = mid = cseq, body "m<cseq>", odd cseqs by odd_sender,
 * even ones by even_sender), and the conversation's last cseq.
 */
static void fill_long_conversation(struct store_fixture *f, int64_t conv, int first, int last,
                                   int32_t odd_sender, int32_t even_sender)
{
    char sql[512];

    snprintf(sql, sizeof(sql),
             "WITH RECURSIVE s(n) AS (SELECT %d UNION ALL SELECT n + 1 FROM s WHERE n < %d)"
             " INSERT INTO Message (conv, cseq, mid, sender, ts, body) SELECT %lld, n, n,"
             " CASE WHEN n %% 2 THEN %d ELSE %d END, n, 'm' || n FROM s;"
             " INSERT INTO Conversation (conv, last_cseq, last_ts) VALUES (%lld, %d, %d)",
             first, last, (long long)conv, (int)odd_sender, (int)even_sender, (long long)conv, last,
             last);
    f->raw_sql(f, sql);
}

/* user's delivered and read cursors of conv at cseq, written straight (0 is allowed). */
static void put_cursors(struct store_fixture *f, int32_t user, int64_t conv, int64_t cseq)
{
    char sql[256];

    snprintf(sql, sizeof(sql),
             "INSERT INTO ConvCursor (userid, conv, delivered_cseq, read_cseq)"
             " VALUES (%d, %lld, %lld, %lld)",
             (int)user, (long long)conv, (long long)cseq, (long long)cseq);
    f->raw_sql(f, sql);
}

struct seen_log {
    int n;
    struct store_logmsg m[PAGE];
    char body[PAGE][16];
};

static void keep_logmsg(void *arg, const struct store_logmsg *m)
{
    struct seen_log *s = arg;

    assert_true(s->n < PAGE);
    s->m[s->n] = *m;
    snprintf(s->body[s->n], sizeof(s->body[0]), "%.*s", (int)m->len, m->body);
    s->n++;
}

/* Message i of s is cseq of conv, by the even sender, with its fill body. */
static void assert_filled(const struct seen_log *s, int i, int64_t conv, int64_t cseq,
                          int32_t sender)
{
    char body[16];

    assert_int_equal(s->m[i].conv, conv);
    assert_int_equal(s->m[i].cseq, cseq);
    assert_int_equal(s->m[i].ts, cseq);
    assert_int_equal(s->m[i].mid, cseq);
    assert_int_equal(s->m[i].sender, sender);
    snprintf(body, sizeof(body), "m%lld", (long long)cseq);
    assert_string_equal(s->body[i], body);
}

/*
 * alice has had nothing of two conversations of LONG_CONV_MESSAGES (her
 * cursors at 0): the login hands out the oldest PAGE of the others', the
 * two conversations interleaved by ts (the lower conv first).  The window
 * that orders them used to run over everything after the cursors, bodies
 * and all, and sort it, to hand out PAGE.
 */
static void test_login_reads_a_page_of_a_long_backlog(void **state)
{
    struct store_fixture *f = *state;
    struct seen_log s = { 0 };
    int32_t alice = new_user(f, "alice"), other[2] = { new_user(f, "bob"), new_user(f, "carol") };
    int64_t conv[2];
    bool more = false;
    long long steps;

    for (int i = 0; i < 2; i++) {
        conv[i] = store_conv_pair(alice, other[i]);
        fill_long_conversation(f, conv[i], 1, LONG_CONV_MESSAGES, alice, other[i]);
        put_cursors(f, alice, conv[i], 0);
    }
    assert_true(conv[0] < conv[1]);
    (void)vm_steps(f);
    assert_int_equal(f->ops->undelivered(f->st, alice, PAGE, 1 << 20, keep_logmsg, &s, &more),
                     QC_OK);
    steps = vm_steps(f);
    printf("# login of %d from a backlog of two conversations of %d: %lld VM steps\n", s.n,
           LONG_CONV_MESSAGES, steps);
    assert_int_equal(s.n, PAGE);
    assert_true(more);
    for (int i = 0; i < PAGE; i++)
        assert_filled(&s, i, conv[i % 2], 2 + 2 * (i / 2), other[i % 2]);
    assert_true(steps < PAGE_STEPS_MAX);
}

static void count_conv(void *arg, const struct store_conv_info *c)
{
    struct store_conv_info *last = arg;

    assert_int_equal(last->conv, 0); /* one conversation */
    *last = *c;
    last->name = last->last = NULL;
}

/*
 * The calls of the chat path on one conversation of LONG_CONV_MESSAGES,
 * each near its end: the login's undelivered, the conversation list's
 * unread count, a history page, an append (with its sender-seen check)
 * and the per-conversation cap's purge search.  SQLite plans each as a
 * range of both parts of the key (conv, cseq); this pins that down.
 */
static void test_calls_near_the_end_do_not_walk_the_history(void **state)
{
    struct store_fixture *f = *state;
    int64_t scan = STORE_SCAN_START;
    struct seen_log s = { 0 };
    struct store_conv_info c = { 0 };
    int32_t alice = new_user(f, "alice"), bob = new_user(f, "bob");
    int64_t conv = store_conv_pair(alice, bob), end = LONG_CONV_MESSAGES;
    struct store_logmsg m[2];
    bool more = true;
    long long steps;
    int removed = -1;

    fill_long_conversation(f, conv, PURGED_BELOW + 1, LONG_CONV_MESSAGES, alice, bob);
    put_cursors(f, alice, conv, end - TAIL);
    put_cursors(f, bob, conv, end - TAIL);

    (void)vm_steps(f);
    assert_int_equal(f->ops->undelivered(f->st, alice, PAGE, 1 << 20, keep_logmsg, &s, &more),
                     QC_OK);
    steps = vm_steps(f);
    printf("# login of %d at the end of %d: %lld VM steps\n", s.n, LONG_CONV_MESSAGES, steps);
    assert_int_equal(s.n, TAIL / 2);
    assert_false(more);
    for (int i = 0; i < TAIL / 2; i++)
        assert_filled(&s, i, conv, end - TAIL + 2 + 2 * i, bob);
    assert_true(steps < PAGE_STEPS_MAX);

    assert_int_equal(f->ops->conversations(f->st, alice, 100, count_conv, &c), QC_OK);
    steps = vm_steps(f);
    printf("# conversation list at the end of %d: %lld VM steps\n", LONG_CONV_MESSAGES, steps);
    assert_int_equal(c.conv, conv);
    assert_int_equal(c.last_cseq, end);
    assert_int_equal(c.read_cseq, end - TAIL);
    assert_int_equal(c.unread, TAIL / 2);
    assert_true(steps < PAGE_STEPS_MAX);

    s.n = 0;
    assert_int_equal(
        f->ops->history(f->st, conv, end - TAIL, STORE_NO_CURSOR, PAGE, keep_logmsg, &s, &more),
        QC_OK);
    steps = vm_steps(f);
    printf("# history page of %d below %lld: %lld VM steps\n", s.n, (long long)(end - TAIL), steps);
    assert_int_equal(s.n, PAGE);
    assert_true(more);
    for (int i = 0; i < PAGE; i++)
        assert_filled(&s, i, conv, end - TAIL - PAGE + i, i % 2 ? alice : bob);
    assert_true(steps < PAGE_STEPS_MAX);

    /* alice appends two: bob's after her cursor keeps it where it is. */
    for (int i = 0; i < 2; i++)
        m[i] = (struct store_logmsg){ conv, end + 1 + i, 1 + i, APPEND_TS, alice, "{}", 2 };
    assert_int_equal(f->ops->log_append(f->st, m, 2), QC_OK);
    steps = vm_steps(f);
    printf("# append of 2 at the end of %d: %lld VM steps\n", LONG_CONV_MESSAGES, steps);
    assert_true(steps < PAGE_STEPS_MAX);
    s.n = 0;
    assert_int_equal(f->ops->undelivered(f->st, alice, PAGE, 1 << 20, keep_logmsg, &s, &more),
                     QC_OK);
    assert_int_equal(s.n, TAIL / 2);
    (void)vm_steps(f);

    /* The cap's search over a conversation already purged down to the cap: nothing to do. */
    assert_int_equal(
        f->ops->log_purge(f->st, 0, LONG_CONV_MESSAGES + 2 - PURGED_BELOW, PAGE, &scan, &removed),
        QC_OK);
    steps = vm_steps(f);
    printf("# purge search over %d kept: %lld VM steps\n", LONG_CONV_MESSAGES + 2 - PURGED_BELOW,
           steps);
    assert_int_equal(removed, 0);
    assert_true(steps < PAGE_STEPS_MAX);
    s.n = 0;
    assert_int_equal(f->ops->history(f->st, conv, STORE_NO_CURSOR, 0, 1, keep_logmsg, &s, &more),
                     QC_OK);
    assert_int_equal(s.m[0].cseq, PURGED_BELOW + 1);
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
        STORE_TEST(test_login_reads_a_page_of_a_long_backlog),
        STORE_TEST(test_calls_near_the_end_do_not_walk_the_history),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
