/*
 * test_social.c - the social storage functions on the SQLite driver,
 * against a temporary database: today's schema (made by the store's open)
 * plus sql/sqlite/003-social.sql, read below $QCHAT_SRCDIR (default ".").
 * The cases both drivers share are in social_cases.c; here are those only
 * SQLite has (the token helpers need no database and run here once).
 * Statements are counted with sqlite3_trace_v2 on the driver's connection.
 */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "../../src/store/social_db.h"
#include "social_cases.h"

#define TMP_TEMPLATE   "/tmp/qchat-test-social-XXXXXX"
#define DB_NAME        "qchat.db"
#define MIGRATION_FILE "sql/sqlite/003-social.sql"

struct sqlite_social_fixture {
    struct social_fixture social; /* first: *state points at all of it */
    char dir[sizeof(TMP_TEMPLATE)];
    char path[PATH_MAX];
    long long statements;
};

static struct sqlite_social_fixture *outer(struct store_fixture *f)
{
    return (struct sqlite_social_fixture *)f;
}

static sqlite3 *open_raw(struct store_fixture *f)
{
    sqlite3 *db = NULL;

    assert_int_equal(sqlite3_open(outer(f)->path, &db), SQLITE_OK);
    return db;
}

static void raw_sql(struct store_fixture *f, const char *sql)
{
    sqlite3 *db = open_raw(f);
    char *msg = NULL;

    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static long long raw_int(struct social_fixture *f, const char *sql)
{
    sqlite3 *db = open_raw(&f->store);
    sqlite3_stmt *s = NULL;
    long long v = -1;

    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    if (sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    assert_int_equal(sqlite3_finalize(s), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return v;
}

static char *slurp(const char *rel)
{
    const char *srcdir = getenv("QCHAT_SRCDIR");
    char path[PATH_MAX], *text;
    long size;
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", srcdir != NULL ? srcdir : ".", rel);
    fp = fopen(path, "r");
    if (fp == NULL)
        fail_msg("%s: %s (set QCHAT_SRCDIR to the project root)", path, strerror(errno));
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    size = ftell(fp);
    assert_true(size > 0);
    rewind(fp);
    text = calloc(1, (size_t)size + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)size, fp), (size_t)size);
    assert_int_equal(fclose(fp), 0);
    return text;
}

/*
 * As the migration runner will: the whole file in one transaction.  Once
 * the store's open applies the numbered migrations itself (the log
 * branch's runner), the tables are there already and this does nothing.
 */
static void migrate(struct social_fixture *f)
{
    char *text;
    sqlite3 *db;
    char *msg = NULL;

    if (raw_int(f, "SELECT count(*) FROM sqlite_master WHERE name = 'FriendRequest'") > 0)
        return;
    text = slurp(MIGRATION_FILE);
    db = open_raw(&f->store);

    if (sqlite3_exec(db, "PRAGMA foreign_keys=ON; BEGIN", NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(db, text, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", MIGRATION_FILE, msg);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    free(text);
}

static int count_statement(unsigned type, void *ctx, void *p, void *x)
{
    struct sqlite_social_fixture *sf = ctx;

    if (type == SQLITE_TRACE_STMT)
        sf->statements++;
    return 0;
}

static long long statements(struct social_fixture *f)
{
    return outer(&f->store)->statements;
}

static int setup(void **state)
{
    struct sqlite_social_fixture *sf = calloc(1, sizeof(*sf));
    struct store_fixture *f;

    assert_non_null(sf);
    f = &sf->social.store;
    memcpy(sf->dir, TMP_TEMPLATE, sizeof(TMP_TEMPLATE));
    assert_non_null(mkdtemp(sf->dir));
    snprintf(sf->path, sizeof(sf->path), "%s/%s", sf->dir, DB_NAME);
    sqlite_case_config(f, sf->path);
    f->raw_sql = raw_sql;
    f->st = open_store(f, f->cfg.max_offline_messages);
    sf->social.so = social_driver("sqlite");
    assert_ptr_equal(sf->social.so, &social_sqlite_ops);
    sf->social.migrate = migrate;
    sf->social.raw_int = raw_int;
    sf->social.statements = statements;
    assert_int_equal(
        sqlite3_trace_v2(sqlite_store_db(f->st), SQLITE_TRACE_STMT, count_statement, sf),
        SQLITE_OK);
    *state = sf;
    return 0;
}

static int teardown(void **state)
{
    struct sqlite_social_fixture *sf = *state;

    if (sf->social.store.st != NULL)
        sf->social.store.ops->close(sf->social.store.st);
    sqlite_dir_remove(sf->dir, DB_NAME);
    free(sf);
    return 0;
}

/* ---- SQLite only ---------------------------------------------------- */

static void test_driver_lookup(void **state)
{
    (void)state;
    assert_ptr_equal(social_driver("sqlite"), &social_sqlite_ops);
    assert_ptr_equal(social_driver("mysql"), &social_mysql_ops);
    assert_string_equal(social_sqlite_ops.name, "sqlite");
    assert_string_equal(social_mysql_ops.name, "mysql");
    assert_null(social_driver("postgres"));
    assert_null(social_driver(NULL));
}

/* The helpers: fresh tokens differ, the hash is SHA-256 (value from sha256sum), shapes. */
static void test_token_helpers(void **state)
{
    static const uint8_t want[SOCIAL_HASH_BYTES] = {
        0x0f, 0x00, 0x73, 0x85, 0xb6, 0xf9, 0xd4, 0xb7, 0xee, 0xb2, 0x74,
        0x86, 0x05, 0xaf, 0xe1, 0xa9, 0x84, 0xa0, 0xa3, 0xbf, 0xa3, 0xf0,
        0x14, 0xd0, 0x9e, 0x2a, 0x78, 0x4c, 0xe9, 0xe5, 0xcd, 0x1a,
    };
    const char *text = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    char a[SOCIAL_TOKEN_CHARS + 1], b[SOCIAL_TOKEN_CHARS + 1];
    uint8_t h[SOCIAL_HASH_BYTES], other[SOCIAL_HASH_BYTES];

    (void)state;
    social_token_new(a);
    social_token_new(b);
    assert_int_equal(strlen(a), SOCIAL_TOKEN_CHARS);
    assert_string_not_equal(a, b);
    assert_int_equal(social_token_hash(text, h), 0);
    assert_memory_equal(h, want, SOCIAL_HASH_BYTES);
    assert_int_equal(social_token_hash(a, other), 0);
    assert_true(social_hash_equal(h, h));
    assert_false(social_hash_equal(h, other));
    memcpy(other, h, sizeof(h));
    other[SOCIAL_HASH_BYTES - 1] ^= 1; /* the last byte counts too */
    assert_false(social_hash_equal(h, other));
    assert_int_equal(social_token_hash("short", h), -1);
    assert_int_equal(social_token_hash(NULL, h), -1);

    assert_string_equal(social_device_name(NULL), SOCIAL_DEVICE_DFLT);
    assert_string_equal(social_device_name(""), SOCIAL_DEVICE_DFLT);
    assert_string_equal(social_device_name("phone"), "phone");
    assert_int_equal(social_role_rank(QC_ROLE_CREATOR), 3);
    assert_int_equal(social_role_rank(QC_ROLE_ADMIN), 2);
    assert_int_equal(social_role_rank(QC_ROLE_NORMAL), 1);
    assert_int_equal(social_role_rank("boss"), 0);
    assert_int_equal(social_role_rank(NULL), 0);
}

/* Every query the social functions run uses an index (EXPLAIN QUERY PLAN: no full scan). */
static void test_no_full_scans(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    static const char *const queries[] = {
        "SELECT 1 FROM FriendRequest WHERE fromid = 1 AND toid = 2",
        "SELECT u.id, u.name FROM FriendRequest r JOIN User u ON u.id = r.fromid"
        " WHERE r.toid = 1 ORDER BY r.created, r.fromid",
        "SELECT u.id, u.name FROM FriendRequest r JOIN User u ON u.id = r.toid"
        " WHERE r.fromid = 1 ORDER BY r.created, r.toid",
        "SELECT count(*) FROM UserBlock WHERE (userid = 1 AND blockedid = 2)"
        " OR (userid = 2 AND blockedid = 1)",
        "SELECT grouprole FROM GroupUser WHERE groupid = 1 AND userid = 2",
        "SELECT userid FROM GroupUser WHERE groupid = 1 AND grouprole = 'admin'"
        " ORDER BY joinseq LIMIT 1",
        "SELECT userid FROM GroupUser WHERE groupid = 1 ORDER BY joinseq LIMIT 1",
        "SELECT count(*) FROM GroupUser WHERE userid = 1",
        "SELECT g.groupid, g.groupname, g.groupdesc, u.id, u.name, o.grouprole"
        " FROM GroupUser m JOIN AllGroup g ON g.groupid = m.groupid"
        " JOIN GroupUser o ON o.groupid = m.groupid JOIN User u ON u.id = o.userid"
        " WHERE m.userid = 1 ORDER BY m.groupid, o.joinseq",
        "SELECT hash, device, expires FROM LoginToken WHERE userid = 1",
        "DELETE FROM LoginToken WHERE userid = 1 AND hash = x'00'",
    };
    sqlite3 *db = open_raw(&f->store);
    char sql[SDB_SQL_MAX];
    size_t i;

    for (i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
        sqlite3_stmt *s = NULL;

        snprintf(sql, sizeof(sql), "EXPLAIN QUERY PLAN %s", queries[i]);
        if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
            fail_msg("%s: %s", sql, sqlite3_errmsg(db));
        while (sqlite3_step(s) == SQLITE_ROW) {
            const char *detail = (const char *)sqlite3_column_text(s, 3);

            if (strncmp(detail, "SCAN ", 5) == 0 && strstr(detail, "USING") == NULL)
                fail_msg("full scan in %s: %s", queries[i], detail);
        }
        assert_int_equal(sqlite3_finalize(s), SQLITE_OK);
    }
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/*
 * Another connection holds the write lock past the driver's busy timeout:
 * a social change fails with QC_ESTORAGE and leaves nothing behind, reads
 * go on (WAL), and the same change works once the lock is gone.
 */
static void test_locked_is_storage_error(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t alice = new_user(&f->store, "alice"), bob = new_user(&f->store, "bob");
    sqlite3 *locker = open_raw(&f->store);
    bool blocked = true;

    assert_int_equal(f->so->friend_add(f->store.st, alice, bob, 10), QC_OK);
    assert_int_equal(sqlite3_exec(locker, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(f->so->block(f->store.st, alice, bob), QC_ESTORAGE);
    assert_int_equal(f->so->is_blocked(f->store.st, alice, bob, &blocked), QC_OK);
    assert_false(blocked);
    assert_int_equal(sqlite3_exec(locker, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(locker), SQLITE_OK);
    assert_int_equal(f->raw_int(f, "SELECT count(*) FROM Friend"), 2);
    assert_int_equal(f->so->block(f->store.st, alice, bob), QC_OK);
    assert_int_equal(f->raw_int(f, "SELECT count(*) FROM Friend"), 0);
}

/* How many times the connection's statement with this SQL ran (0: there is none). */
static int runs_of(struct store *st, const char *sql)
{
    sqlite3 *db = sqlite_store_db(st);
    sqlite3_stmt *s;

    for (s = sqlite3_next_stmt(db, NULL); s != NULL; s = sqlite3_next_stmt(db, s))
        if (strcmp(sqlite3_sql(s), sql) == 0)
            return sqlite3_stmt_status(s, SQLITE_STMTSTATUS_RUN, 0);
    return 0;
}

/* The handle keeps each social statement prepared: the same one runs call after call. */
static void test_statements_kept(void **state)
{
    struct social_fixture *f = social_case_fixture(state);
    int32_t alice = new_user(&f->store, "alice"), bob = new_user(&f->store, "bob");
    bool blocked = false;
    int round;

    for (round = 0; round < 3; round++) {
        assert_int_equal(f->so->block(f->store.st, alice, bob), QC_OK);
        assert_int_equal(f->so->is_blocked(f->store.st, alice, bob, &blocked), QC_OK);
        assert_true(blocked);
        assert_int_equal(f->so->unblock(f->store.st, alice, bob), QC_OK);
    }
    assert_int_equal(
        runs_of(f->store.st, "SELECT 1 FROM UserBlock WHERE userid = ? AND blockedid = ?"), 3);
    assert_int_equal(runs_of(f->store.st, "BEGIN IMMEDIATE"), 6); /* the handle's own */
}

#define SOCIAL_TEST(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_driver_lookup), cmocka_unit_test(test_token_helpers),
        SOCIAL_TEST(test_no_full_scans),      SOCIAL_TEST(test_locked_is_storage_error),
        SOCIAL_TEST(test_statements_kept),    SOCIAL_CASES(setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
