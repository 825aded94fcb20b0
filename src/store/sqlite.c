/*
 * sqlite.c - the embedded storage driver (storage.driver = sqlite).
 *
 * One connection per handle: every worker opens its own after fork and
 * uses it from its one thread (SQLITE_OPEN_NOMUTEX); a handle must never
 * cross a fork.  Several processes share the database file, so it runs in
 * WAL mode (readers never wait for the writer) with synchronous=NORMAL and
 * a busy timeout; a writer still locked out after the timeout, or any I/O
 * error, is logged and reported as QC_ESTORAGE.
 *
 * Every statement is prepared once at open (SQLITE_PREPARE_PERSISTENT),
 * bound with parameters, and reset as soon as it is done, so that no read
 * snapshot outlives a call.  Writes of more than one row run inside BEGIN
 * IMMEDIATE: a transaction that starts as a reader and then writes cannot
 * wait for the lock in WAL mode, it fails at once with SQLITE_BUSY.
 *
 * Callbacks run while their statement is stepping.  A callback may call
 * other store functions that only read (user_get or group_members from
 * within user_groups, for example), but not the function that called it,
 * and nothing at all from within offline_take's callback.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/log.h"
#include "store/store.h"
#include "social_db.h"

#define BUSY_TIMEOUT_MS 5000       /* workers take turns writing one file */
#define MEMORY_DB       ":memory:" /* private database, for tests */
#define OPEN_FLAGS      (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX)

/* sql/sqlite/schema.sql, byte for byte (tests/unit/test_store.c checks). */
const char store_sqlite_schema[] =
    "-- sql/sqlite/schema.sql - qchat schema for the embedded SQLite store.\n"
    "--\n"
    "-- The seed's tables and columns (User, Friend, AllGroup, GroupUser,\n"
    "-- OfflineMessage), with these changes:\n"
    "--   * User.password holds a yescrypt hash (a seed plaintext password is\n"
    "--     replaced by its hash at the first successful login);\n"
    "--   * OfflineMessage has an autoincrement id: a user's queue is delivered\n"
    "--     in id order, and the index on (userid, id) serves both the delivery\n"
    "--     and the limits.max_offline_messages cap;\n"
    "--   * OfflineDropped counts, per user, the messages discarded for that cap\n"
    "--     since the user's last login (reported in LOGIN_MSG_ACK, then reset);\n"
    "--   * Friend and GroupUser are WITHOUT ROWID tables clustered on their\n"
    "--     primary key, and the index on GroupUser(userid) covers \"groups of a\n"
    "--     user\", so every hot lookup is one B-tree range scan;\n"
    "--   * foreign keys name the User and AllGroup rows a row depends on\n"
    "--     (the driver turns on PRAGMA foreign_keys).\n"
    "--\n"
    "-- src/store/sqlite.c embeds this exact text (tests/unit/test_store.c checks\n"
    "-- that the two are identical) and runs it in one transaction whenever it\n"
    "-- opens a database.  Every statement is idempotent.  By hand:\n"
    "--   sqlite3 /var/lib/qchat/qchat.db < schema.sql\n"
    "\n"
    "CREATE TABLE IF NOT EXISTS User (\n"
    "    id       INTEGER PRIMARY KEY AUTOINCREMENT,\n"
    "    name     TEXT NOT NULL UNIQUE,\n"
    "    password TEXT NOT NULL,\n"
    "    state    TEXT NOT NULL DEFAULT 'offline' CHECK (state IN ('online', 'offline'))\n"
    ");\n"
    "\n"
    "-- Friendship is mutual: one row in each direction.\n"
    "CREATE TABLE IF NOT EXISTS Friend (\n"
    "    userid   INTEGER NOT NULL REFERENCES User(id),\n"
    "    friendid INTEGER NOT NULL REFERENCES User(id),\n"
    "    PRIMARY KEY (userid, friendid)\n"
    ") WITHOUT ROWID;\n"
    "\n"
    "CREATE TABLE IF NOT EXISTS AllGroup (\n"
    "    groupid   INTEGER PRIMARY KEY AUTOINCREMENT,\n"
    "    groupname TEXT NOT NULL UNIQUE,\n"
    "    groupdesc TEXT NOT NULL DEFAULT ''\n"
    ");\n"
    "\n"
    "CREATE TABLE IF NOT EXISTS GroupUser (\n"
    "    groupid   INTEGER NOT NULL REFERENCES AllGroup(groupid),\n"
    "    userid    INTEGER NOT NULL REFERENCES User(id),\n"
    "    grouprole TEXT NOT NULL DEFAULT 'normal' CHECK (grouprole IN ('creator', 'normal')),\n"
    "    PRIMARY KEY (groupid, userid)\n"
    ") WITHOUT ROWID;\n"
    "\n"
    "CREATE INDEX IF NOT EXISTS GroupUser_userid ON GroupUser (userid);\n"
    "\n"
    "-- message: the JSON object exactly as it would have been forwarded.\n"
    "CREATE TABLE IF NOT EXISTS OfflineMessage (\n"
    "    id      INTEGER PRIMARY KEY AUTOINCREMENT,\n"
    "    userid  INTEGER NOT NULL REFERENCES User(id),\n"
    "    message TEXT NOT NULL\n"
    ");\n"
    "\n"
    "CREATE INDEX IF NOT EXISTS OfflineMessage_userid_id ON OfflineMessage (userid, id);\n"
    "\n"
    "CREATE TABLE IF NOT EXISTS OfflineDropped (\n"
    "    userid  INTEGER PRIMARY KEY REFERENCES User(id),\n"
    "    dropped INTEGER NOT NULL DEFAULT 0\n"
    ");\n";

enum stmt_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_PING,
    ST_USER_INSERT,
    ST_USER_GET,
    ST_USER_SET_PASSWORD,
    ST_USER_EXISTS,
    ST_FRIEND_INSERT,
    ST_FRIEND_COUNT,
    ST_FRIEND_LIST,
    ST_GROUP_INSERT,
    ST_GROUP_EXISTS,
    ST_MEMBER_INSERT,
    ST_MEMBER_COUNT,
    ST_MEMBER_LIST,
    ST_USER_GROUPS,
    ST_OFFLINE_INSERT,
    ST_OFFLINE_TRIM,
    ST_OFFLINE_PENDING,
    ST_OFFLINE_LIST,
    ST_OFFLINE_DELETE,
    ST_OFFLINE_COUNT,
    ST_DROPPED_ADD,
    ST_DROPPED_GET,
    ST_DROPPED_CLEAR,
    ST_COUNT
};

struct stmt_def {
    const char *name; /* for log lines */
    const char *sql;
};

/*
 * "ON CONFLICT DO NOTHING" skips only a duplicate key (the caller then sees
 * no change); unlike INSERT OR IGNORE it still fails on CHECK violations.
 */
static const struct stmt_def stmt_defs[ST_COUNT] = {
    [ST_BEGIN] = { "begin", "BEGIN IMMEDIATE" },
    [ST_COMMIT] = { "commit", "COMMIT" },
    [ST_ROLLBACK] = { "rollback", "ROLLBACK" },
    [ST_PING] = { "ping", "SELECT count(*) FROM sqlite_master" },
    [ST_USER_INSERT] = { "user insert", "INSERT INTO User (name, password) VALUES (?1, ?2)" },
    [ST_USER_GET] = { "user get", "SELECT name, password FROM User WHERE id = ?1" },
    [ST_USER_SET_PASSWORD] = { "user set password", "UPDATE User SET password = ?2 WHERE id = ?1" },
    [ST_USER_EXISTS] = { "user exists", "SELECT 1 FROM User WHERE id = ?1" },
    [ST_FRIEND_INSERT] = { "friend insert",
                           "INSERT INTO Friend (userid, friendid) VALUES (?1, ?2) ON CONFLICT DO NOTHING" },
    [ST_FRIEND_COUNT] = { "friend count", "SELECT count(*) FROM Friend WHERE userid = ?1" },
    [ST_FRIEND_LIST] = { "friend list",
                         "SELECT u.id, u.name FROM Friend f JOIN User u ON u.id = f.friendid"
                         " WHERE f.userid = ?1 ORDER BY f.friendid" },
    [ST_GROUP_INSERT] = { "group insert",
                          "INSERT INTO AllGroup (groupname, groupdesc) VALUES (?1, ?2)" },
    [ST_GROUP_EXISTS] = { "group exists", "SELECT 1 FROM AllGroup WHERE groupid = ?1" },
    [ST_MEMBER_INSERT] = { "member insert",
                           "INSERT INTO GroupUser (groupid, userid, grouprole) VALUES (?1, ?2, ?3)"
                           " ON CONFLICT DO NOTHING" },
    [ST_MEMBER_COUNT] = { "member count",
                          "SELECT (SELECT count(*) FROM GroupUser WHERE groupid = ?1)"
                          " FROM AllGroup WHERE groupid = ?1" },
    [ST_MEMBER_LIST] = { "member list",
                         "SELECT u.id, u.name, m.grouprole FROM GroupUser m JOIN User u ON u.id = m.userid"
                         " WHERE m.groupid = ?1 ORDER BY m.userid" },
    [ST_USER_GROUPS] = { "user groups",
                         "SELECT g.groupid, g.groupname, g.groupdesc FROM GroupUser m"
                         " JOIN AllGroup g ON g.groupid = m.groupid WHERE m.userid = ?1 ORDER BY m.groupid" },
    [ST_OFFLINE_INSERT] = { "offline insert",
                            "INSERT INTO OfflineMessage (userid, message) VALUES (?1, ?2)" },
    /* Everything older than the ?2 newest: one walk of at most ?2 index entries. */
    [ST_OFFLINE_TRIM] = { "offline trim",
                          "DELETE FROM OfflineMessage WHERE userid = ?1 AND id <="
                          " (SELECT id FROM OfflineMessage WHERE userid = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)" },
    [ST_OFFLINE_PENDING] = { "offline pending",
                             "SELECT EXISTS (SELECT 1 FROM OfflineMessage WHERE userid = ?1)"
                             " OR EXISTS (SELECT 1 FROM OfflineDropped WHERE userid = ?1)" },
    [ST_OFFLINE_LIST] = { "offline list",
                          "SELECT id, message FROM OfflineMessage WHERE userid = ?1 ORDER BY id" },
    [ST_OFFLINE_DELETE] = { "offline delete",
                            "DELETE FROM OfflineMessage WHERE userid = ?1 AND id <= ?2" },
    [ST_OFFLINE_COUNT] = { "offline count",
                           "SELECT count(*) FROM OfflineMessage WHERE userid = ?1" },
    [ST_DROPPED_ADD] = { "dropped add",
                         "INSERT INTO OfflineDropped (userid, dropped) VALUES (?1, ?2)"
                         " ON CONFLICT (userid) DO UPDATE SET dropped = dropped + excluded.dropped" },
    [ST_DROPPED_GET] = { "dropped get", "SELECT dropped FROM OfflineDropped WHERE userid = ?1" },
    [ST_DROPPED_CLEAR] = { "dropped clear", "DELETE FROM OfflineDropped WHERE userid = ?1" },
};

struct store {
    sqlite3 *db;
    sqlite3_stmt *stmt[ST_COUNT];
    int max_offline; /* messages kept per user; 0: no cap */
};

/* Log what failed on st's connection; the caller reports QC_ESTORAGE. */
static int storage_failed(struct store *st, const char *what, int rc)
{
    log_error("sqlite: %s: %s (code %d)", what, sqlite3_errmsg(st->db), rc);
    return QC_ESTORAGE;
}

static int statement_failed(struct store *st, enum stmt_id id, int rc)
{
    return storage_failed(st, stmt_defs[id].name, rc);
}

/* Step a statement that returns no row and reset it; SQLITE_DONE on success. */
static int run_to_end(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);

    (void)sqlite3_reset(s);
    return rc;
}

static int bind_text(sqlite3_stmt *s, int idx, const char *text)
{
    return sqlite3_bind_text(s, idx, text, -1, SQLITE_STATIC);
}

/* Column text that is never NULL (NOT NULL columns; "" if memory ran out). */
static const char *column_text(sqlite3_stmt *s, int col)
{
    const unsigned char *v = sqlite3_column_text(s, col);

    return v != NULL ? (const char *)v : "";
}

/* Copy a text column into dst; -1 when it does not fit. */
static int copy_column(sqlite3_stmt *s, int col, char *dst, size_t size)
{
    const unsigned char *v = sqlite3_column_text(s, col);
    size_t len = (size_t)sqlite3_column_bytes(s, col);

    if (v == NULL || len >= size)
        return -1;
    memcpy(dst, v, len);
    dst[len] = '\0';
    return 0;
}

static int tx_begin(struct store *st)
{
    int rc = run_to_end(st->stmt[ST_BEGIN]);

    return rc == SQLITE_DONE ? QC_OK : statement_failed(st, ST_BEGIN, rc);
}

static void tx_rollback(struct store *st)
{
    int rc;

    if (sqlite3_get_autocommit(st->db))
        return; /* SQLite already rolled back */
    rc = run_to_end(st->stmt[ST_ROLLBACK]);
    if (rc != SQLITE_DONE)
        (void)statement_failed(st, ST_ROLLBACK, rc);
}

/* Commit when err is QC_OK, roll back otherwise; returns the outcome. */
static int tx_end(struct store *st, int err)
{
    int rc;

    if (err == QC_OK) {
        rc = run_to_end(st->stmt[ST_COMMIT]);
        if (rc == SQLITE_DONE)
            return QC_OK;
        err = statement_failed(st, ST_COMMIT, rc);
    }
    tx_rollback(st);
    return err;
}

/* QC_OK when statement id finds a row for key, else missing (or QC_ESTORAGE). */
static int row_exists(struct store *st, enum stmt_id id, int64_t key, int missing)
{
    sqlite3_stmt *s = st->stmt[id];
    int rc = sqlite3_bind_int64(s, 1, key);

    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    (void)sqlite3_reset(s);
    if (rc == SQLITE_ROW)
        return QC_OK;
    if (rc == SQLITE_DONE)
        return missing;
    return statement_failed(st, id, rc);
}

/* Run a one-row, one-integer query keyed by key: QC_OK, missing or QC_ESTORAGE. */
static int query_int(struct store *st, enum stmt_id id, int64_t key, int missing, int64_t *value)
{
    sqlite3_stmt *s = st->stmt[id];
    int rc = sqlite3_bind_int64(s, 1, key);

    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *value = sqlite3_column_int64(s, 0);
    (void)sqlite3_reset(s);
    if (rc == SQLITE_ROW)
        return QC_OK;
    if (rc == SQLITE_DONE)
        return missing;
    return statement_failed(st, id, rc);
}

static int clamp_int(int64_t v)
{
    return v > INT_MAX ? INT_MAX : (int)v;
}

/* ---- opening -------------------------------------------------------- */

/* The database file's directory must exist and take new files (-wal, -shm). */
static int check_directory(const char *path, char *err, size_t errlen)
{
    char copy[PATH_MAX];
    const char *dir;
    struct stat sb;

    if (path[0] == '\0') {
        snprintf(err, errlen, "storage.path is empty");
        return -1;
    }
    if (strcmp(path, MEMORY_DB) == 0)
        return 0;
    if (strlcpy(copy, path, sizeof(copy)) >= sizeof(copy)) {
        snprintf(err, errlen, "storage.path is too long");
        return -1;
    }
    dir = dirname(copy);
    if (stat(dir, &sb) != 0) {
        snprintf(err, errlen, "storage.path %s: directory %s: %s", path, dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(sb.st_mode)) {
        snprintf(err, errlen, "storage.path %s: %s is not a directory", path, dir);
        return -1;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        snprintf(err, errlen, "storage.path %s: directory %s is not writable: %s", path, dir,
                 strerror(errno));
        return -1;
    }
    return 0;
}

/* PRAGMA journal_mode answers with the mode it could set. */
static int use_wal(struct store *st, const char *path, char *err, size_t errlen)
{
    const char *want = strcmp(path, MEMORY_DB) == 0 ? "memory" : "wal";
    sqlite3_stmt *s;
    int rc, ok;

    rc = sqlite3_prepare_v2(st->db, "PRAGMA journal_mode=WAL", -1, &s, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: journal_mode: %s", path, sqlite3_errmsg(st->db));
        return -1;
    }
    rc = sqlite3_step(s);
    ok = rc == SQLITE_ROW && strcmp(column_text(s, 0), want) == 0;
    if (!ok)
        snprintf(err, errlen, "%s: cannot use WAL journal mode: %s", path,
                 rc == SQLITE_ROW ? column_text(s, 0) : sqlite3_errmsg(st->db));
    (void)sqlite3_finalize(s);
    return ok ? 0 : -1;
}

static int connect_db(struct store *st, const char *path, char *err, size_t errlen)
{
    int rc = sqlite3_open_v2(path, &st->db, OPEN_FLAGS, NULL);

    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path,
                 st->db != NULL ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
        return -1;
    }
    if (sqlite3_extended_result_codes(st->db, 1) != SQLITE_OK ||
        sqlite3_busy_timeout(st->db, BUSY_TIMEOUT_MS) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(st->db));
        return -1;
    }
    if (use_wal(st, path, err, errlen) != 0)
        return -1;
    rc =
        sqlite3_exec(st->db, "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(st->db));
        return -1;
    }
    return 0;
}

/*
 * Run the schema in one write transaction (workers may open at once).
 * On failure err says why, and QC_ESTORAGE is returned.
 */
static int create_schema(struct store *st, char *err, size_t errlen)
{
    int rc = sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);

    if (rc == SQLITE_OK)
        rc = sqlite3_exec(st->db, store_sqlite_schema, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        return QC_OK;
    snprintf(err, errlen, "creating the schema: %s (code %d)", sqlite3_errmsg(st->db), rc);
    if (!sqlite3_get_autocommit(st->db))
        (void)sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    return QC_ESTORAGE;
}

static int prepare_statements(struct store *st, char *err, size_t errlen)
{
    int i, rc;

    for (i = 0; i < ST_COUNT; i++) {
        rc = sqlite3_prepare_v3(st->db, stmt_defs[i].sql, -1, SQLITE_PREPARE_PERSISTENT,
                                &st->stmt[i], NULL);
        if (rc != SQLITE_OK) {
            snprintf(err, errlen, "preparing \"%s\": %s", stmt_defs[i].name,
                     sqlite3_errmsg(st->db));
            return -1;
        }
    }
    return 0;
}

static void sqlite_close(struct store *st)
{
    int i, rc;

    if (st == NULL)
        return;
    for (i = 0; i < ST_COUNT; i++)
        (void)sqlite3_finalize(st->stmt[i]); /* NULL is a no-op */
    rc = sqlite3_close(st->db);
    if (rc != SQLITE_OK)
        log_error("sqlite: close: %s", sqlite3_errstr(rc));
    free(st);
}

static int sqlite_open(struct store **out, const struct qc_config *cfg, char *err, size_t errlen)
{
    struct store *st;

    *out = NULL;
    if (check_directory(cfg->storage_path, err, errlen) != 0)
        return QC_ESTORAGE;
    st = calloc(1, sizeof(*st));
    if (st == NULL) {
        snprintf(err, errlen, "out of memory");
        return QC_ESTORAGE;
    }
    st->max_offline = cfg->max_offline_messages > 0 ? cfg->max_offline_messages : 0;
    if (connect_db(st, cfg->storage_path, err, errlen) != 0)
        goto fail;
    if (create_schema(st, err, errlen) != QC_OK)
        goto fail;
    if (prepare_statements(st, err, errlen) != 0)
        goto fail;
    *out = st;
    return QC_OK;
fail:
    sqlite_close(st);
    return QC_ESTORAGE;
}

static int sqlite_init_schema(struct store *st)
{
    char err[QC_CONFIG_ERR_MAX];

    if (create_schema(st, err, sizeof(err)) == QC_OK)
        return QC_OK;
    log_error("sqlite: %s", err);
    return QC_ESTORAGE;
}

/* The connection, for the social functions (sqlite_social.c). */
struct sqlite3 *sqlite_store_db(struct store *st)
{
    return st->db;
}

static int sqlite_ping(struct store *st)
{
    return run_to_end(st->stmt[ST_PING]) == SQLITE_ROW;
}

/* ---- users ---------------------------------------------------------- */

static int sqlite_user_create(struct store *st, const char *name, const char *pwhash, int32_t *id)
{
    sqlite3_stmt *s = st->stmt[ST_USER_INSERT];
    int rc;

    if (strlen(name) > QC_NAME_MAX || strlen(pwhash) > QC_HASH_MAX)
        return QC_ETOOLONG;
    rc = bind_text(s, 1, name);
    if (rc == SQLITE_OK)
        rc = bind_text(s, 2, pwhash);
    if (rc == SQLITE_OK)
        rc = run_to_end(s);
    if (rc == SQLITE_DONE) {
        *id = (int32_t)sqlite3_last_insert_rowid(st->db);
        return QC_OK;
    }
    if (rc == SQLITE_CONSTRAINT_UNIQUE)
        return QC_ENAMETAKEN;
    return statement_failed(st, ST_USER_INSERT, rc);
}

static int sqlite_user_get(struct store *st, int32_t id, struct store_user *out)
{
    sqlite3_stmt *s = st->stmt[ST_USER_GET];
    int rc, err;

    rc = sqlite3_bind_int64(s, 1, id);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        out->id = id;
        err = QC_OK;
        if (copy_column(s, 0, out->name, sizeof(out->name)) != 0 ||
            copy_column(s, 1, out->password, sizeof(out->password)) != 0) {
            log_error("sqlite: user %d: stored name or password too long", (int)id);
            err = QC_ESTORAGE;
        }
    } else if (rc == SQLITE_DONE) {
        err = QC_ENOUSER;
    } else {
        err = statement_failed(st, ST_USER_GET, rc);
    }
    (void)sqlite3_reset(s);
    return err;
}

static int sqlite_user_set_password(struct store *st, int32_t id, const char *pwhash)
{
    sqlite3_stmt *s = st->stmt[ST_USER_SET_PASSWORD];
    int rc;

    if (strlen(pwhash) > QC_HASH_MAX)
        return QC_ETOOLONG;
    rc = sqlite3_bind_int64(s, 1, id);
    if (rc == SQLITE_OK)
        rc = bind_text(s, 2, pwhash);
    if (rc == SQLITE_OK)
        rc = run_to_end(s);
    if (rc != SQLITE_DONE)
        return statement_failed(st, ST_USER_SET_PASSWORD, rc);
    return sqlite3_changes(st->db) > 0 ? QC_OK : QC_ENOUSER;
}

/* ---- friends -------------------------------------------------------- */

/* One direction; *added counts a new row (an existing one is ignored). */
static int insert_friend_row(struct store *st, int32_t userid, int32_t friendid, int *added)
{
    sqlite3_stmt *s = st->stmt[ST_FRIEND_INSERT];
    int rc = sqlite3_bind_int64(s, 1, userid);

    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 2, friendid);
    if (rc == SQLITE_OK)
        rc = run_to_end(s);
    if (rc == SQLITE_DONE) {
        *added += sqlite3_changes(st->db);
        return QC_OK;
    }
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
        return QC_ENOUSER;
    return statement_failed(st, ST_FRIEND_INSERT, rc);
}

/*
 * Both directions.  A seed database holds one-way rows (its ADD_FRIEND
 * wrote one); adding the missing direction completes the friendship.
 */
static int add_friendship(struct store *st, int32_t userid, int32_t friendid)
{
    int err, added = 0;

    if ((err = row_exists(st, ST_USER_EXISTS, friendid, QC_ENOUSER)) != QC_OK)
        return err;
    if ((err = insert_friend_row(st, userid, friendid, &added)) != QC_OK)
        return err;
    if ((err = insert_friend_row(st, friendid, userid, &added)) != QC_OK)
        return err;
    return added > 0 ? QC_OK : QC_EALREADY;
}

static int sqlite_friend_add(struct store *st, int32_t userid, int32_t friendid)
{
    int err;

    if (userid == friendid)
        return QC_ESELF;
    if ((err = tx_begin(st)) != QC_OK)
        return err;
    return tx_end(st, add_friendship(st, userid, friendid));
}

static int sqlite_friend_count(struct store *st, int32_t userid, int *count)
{
    int64_t n = 0;
    int err = query_int(st, ST_FRIEND_COUNT, userid, QC_ESTORAGE, &n);

    if (err == QC_OK)
        *count = clamp_int(n);
    return err;
}

static int sqlite_friend_list(struct store *st, int32_t userid, store_user_cb cb, void *arg)
{
    sqlite3_stmt *s = st->stmt[ST_FRIEND_LIST];
    int rc = sqlite3_bind_int64(s, 1, userid);

    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(s)) == SQLITE_ROW)
            cb(arg, sqlite3_column_int(s, 0), column_text(s, 1));
    (void)sqlite3_reset(s);
    return rc == SQLITE_DONE ? QC_OK : statement_failed(st, ST_FRIEND_LIST, rc);
}

/* ---- groups --------------------------------------------------------- */

/* *added is 1 for a new member, 0 when userid already was one. */
static int insert_member(struct store *st, int64_t groupid, int32_t userid, const char *role,
                         int *added)
{
    sqlite3_stmt *s = st->stmt[ST_MEMBER_INSERT];
    int rc = sqlite3_bind_int64(s, 1, groupid);

    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 2, userid);
    if (rc == SQLITE_OK)
        rc = bind_text(s, 3, role);
    if (rc == SQLITE_OK)
        rc = run_to_end(s);
    if (rc == SQLITE_DONE) {
        *added = sqlite3_changes(st->db) > 0;
        return QC_OK;
    }
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
        return QC_ENOUSER; /* the group is known to exist */
    return statement_failed(st, ST_MEMBER_INSERT, rc);
}

static int insert_group(struct store *st, const char *name, const char *desc, int32_t creator,
                        int64_t *groupid)
{
    sqlite3_stmt *s = st->stmt[ST_GROUP_INSERT];
    int rc, added;

    rc = bind_text(s, 1, name);
    if (rc == SQLITE_OK)
        rc = bind_text(s, 2, desc);
    if (rc == SQLITE_OK)
        rc = run_to_end(s);
    if (rc == SQLITE_CONSTRAINT_UNIQUE)
        return QC_EGROUPTAKEN;
    if (rc != SQLITE_DONE)
        return statement_failed(st, ST_GROUP_INSERT, rc);
    *groupid = sqlite3_last_insert_rowid(st->db);
    return insert_member(st, *groupid, creator, QC_ROLE_CREATOR, &added);
}

static int sqlite_group_create(struct store *st, const char *name, const char *desc,
                               int32_t creator, int32_t *groupid)
{
    int64_t gid = 0;
    int err;

    if (desc == NULL)
        desc = "";
    if (strlen(name) > QC_NAME_MAX || strlen(desc) > QC_GROUPDESC_MAX)
        return QC_ETOOLONG;
    if ((err = tx_begin(st)) != QC_OK)
        return err;
    err = tx_end(st, insert_group(st, name, desc, creator, &gid));
    if (err == QC_OK)
        *groupid = (int32_t)gid;
    return err;
}

/* Groups are never deleted, so no transaction is needed around the check. */
static int sqlite_group_join(struct store *st, int32_t groupid, int32_t userid)
{
    int err, added = 0;

    if ((err = row_exists(st, ST_GROUP_EXISTS, groupid, QC_ENOGROUP)) != QC_OK)
        return err;
    if ((err = insert_member(st, groupid, userid, QC_ROLE_NORMAL, &added)) != QC_OK)
        return err;
    return added ? QC_OK : QC_EALREADY;
}

static int sqlite_group_member_count(struct store *st, int32_t groupid, int *count)
{
    int64_t n = 0;
    int err = query_int(st, ST_MEMBER_COUNT, groupid, QC_ENOGROUP, &n);

    if (err == QC_OK)
        *count = clamp_int(n);
    return err;
}

static int sqlite_group_members(struct store *st, int32_t groupid, store_member_cb cb, void *arg)
{
    sqlite3_stmt *s = st->stmt[ST_MEMBER_LIST];
    int rc = sqlite3_bind_int64(s, 1, groupid);
    int rows = 0;

    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            cb(arg, sqlite3_column_int(s, 0), column_text(s, 1), column_text(s, 2));
            rows++;
        }
    (void)sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return statement_failed(st, ST_MEMBER_LIST, rc);
    /* Every group has its creator: only an empty answer needs the check. */
    return rows > 0 ? QC_OK : row_exists(st, ST_GROUP_EXISTS, groupid, QC_ENOGROUP);
}

static int sqlite_user_groups(struct store *st, int32_t userid, store_group_cb cb, void *arg)
{
    sqlite3_stmt *s = st->stmt[ST_USER_GROUPS];
    int rc = sqlite3_bind_int64(s, 1, userid);

    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(s)) == SQLITE_ROW)
            cb(arg, sqlite3_column_int(s, 0), column_text(s, 1), column_text(s, 2));
    (void)sqlite3_reset(s);
    return rc == SQLITE_DONE ? QC_OK : statement_failed(st, ST_USER_GROUPS, rc);
}

/* ---- offline messages ----------------------------------------------- */

/* Drop what is beyond the newest max_offline messages, and count it. */
static int trim_queue(struct store *st, int32_t userid)
{
    sqlite3_stmt *s = st->stmt[ST_OFFLINE_TRIM];
    int rc, dropped;

    rc = sqlite3_bind_int64(s, 1, userid);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(s, 2, st->max_offline);
    if (rc == SQLITE_OK)
        rc = run_to_end(s);
    if (rc != SQLITE_DONE)
        return statement_failed(st, ST_OFFLINE_TRIM, rc);
    dropped = sqlite3_changes(st->db);
    if (dropped == 0)
        return QC_OK;
    log_info("user %d: offline queue over limits.max_offline_messages (%d): dropped the "
             "oldest %d message(s)",
             userid, st->max_offline, dropped);

    s = st->stmt[ST_DROPPED_ADD];
    rc = sqlite3_bind_int64(s, 1, userid);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(s, 2, dropped);
    if (rc == SQLITE_OK)
        rc = run_to_end(s);
    return rc == SQLITE_DONE ? QC_OK : statement_failed(st, ST_DROPPED_ADD, rc);
}

static int queue_message(struct store *st, int32_t userid, const char *msg, int len)
{
    sqlite3_stmt *s = st->stmt[ST_OFFLINE_INSERT];
    int rc = sqlite3_bind_int64(s, 1, userid);

    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(s, 2, msg, len, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = run_to_end(s);
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
        return QC_ENOUSER;
    if (rc != SQLITE_DONE)
        return statement_failed(st, ST_OFFLINE_INSERT, rc);
    return st->max_offline > 0 ? trim_queue(st, userid) : QC_OK;
}

static int sqlite_offline_store(struct store *st, const int32_t *userids, size_t n, const char *msg,
                                size_t len)
{
    size_t i;
    int err;

    if (n == 0)
        return QC_OK;
    if (len > INT_MAX)
        return QC_ETOOLONG;
    if ((err = tx_begin(st)) != QC_OK)
        return err;
    for (i = 0; i < n && err == QC_OK; i++)
        err = queue_message(st, userids[i], msg, (int)len);
    return tx_end(st, err);
}

/* Hand the queue to cb oldest first, then delete exactly what was handed. */
static int deliver_queue(struct store *st, int32_t userid, store_msg_cb cb, void *arg)
{
    sqlite3_stmt *s = st->stmt[ST_OFFLINE_LIST];
    int64_t maxid = 0;
    int rows = 0;
    int rc = sqlite3_bind_int64(s, 1, userid);

    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            maxid = sqlite3_column_int64(s, 0);
            cb(arg, column_text(s, 1), (size_t)sqlite3_column_bytes(s, 1));
            rows++;
        }
    (void)sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return statement_failed(st, ST_OFFLINE_LIST, rc);
    if (rows == 0)
        return QC_OK;

    s = st->stmt[ST_OFFLINE_DELETE];
    rc = sqlite3_bind_int64(s, 1, userid);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 2, maxid);
    if (rc == SQLITE_OK)
        rc = run_to_end(s);
    return rc == SQLITE_DONE ? QC_OK : statement_failed(st, ST_OFFLINE_DELETE, rc);
}

/* Read and reset the count of messages dropped for the cap (no row: 0). */
static int take_dropped(struct store *st, int32_t userid, int64_t *dropped)
{
    sqlite3_stmt *s = st->stmt[ST_DROPPED_CLEAR];
    int rc, err;

    *dropped = 0;
    if ((err = query_int(st, ST_DROPPED_GET, userid, QC_OK, dropped)) != QC_OK)
        return err;
    rc = sqlite3_bind_int64(s, 1, userid);
    if (rc == SQLITE_OK)
        rc = run_to_end(s);
    return rc == SQLITE_DONE ? QC_OK : statement_failed(st, ST_DROPPED_CLEAR, rc);
}

/*
 * Most logins find nothing queued: check that without the write lock
 * first.  If the commit fails after cb has run, the messages stay queued
 * and are handed over again next time (never lost).
 */
static int sqlite_offline_take(struct store *st, int32_t userid, store_msg_cb cb, void *arg,
                               int *dropped)
{
    int64_t pending = 0, lost = 0;
    int err;

    *dropped = 0;
    err = query_int(st, ST_OFFLINE_PENDING, userid, QC_ESTORAGE, &pending);
    if (err != QC_OK || !pending)
        return err;
    if ((err = tx_begin(st)) != QC_OK)
        return err;
    err = deliver_queue(st, userid, cb, arg);
    if (err == QC_OK)
        err = take_dropped(st, userid, &lost);
    err = tx_end(st, err);
    if (err == QC_OK)
        *dropped = clamp_int(lost);
    return err;
}

static int sqlite_offline_count(struct store *st, int32_t userid, int *count)
{
    int64_t n = 0;
    int err = query_int(st, ST_OFFLINE_COUNT, userid, QC_ESTORAGE, &n);

    if (err == QC_OK)
        *count = clamp_int(n);
    return err;
}

const struct store_ops store_sqlite_ops = {
    .name = "sqlite",
    .open = sqlite_open,
    .close = sqlite_close,
    .init_schema = sqlite_init_schema,
    .ping = sqlite_ping,
    .user_create = sqlite_user_create,
    .user_get = sqlite_user_get,
    .user_set_password = sqlite_user_set_password,
    .friend_add = sqlite_friend_add,
    .friend_count = sqlite_friend_count,
    .friend_list = sqlite_friend_list,
    .group_create = sqlite_group_create,
    .group_join = sqlite_group_join,
    .group_member_count = sqlite_group_member_count,
    .group_members = sqlite_group_members,
    .user_groups = sqlite_user_groups,
    .offline_store = sqlite_offline_store,
    .offline_take = sqlite_offline_take,
    .offline_count = sqlite_offline_count,
};
