/*
 * sqlite.c - the embedded storage driver (storage.driver = sqlite).
 *
 * One connection per handle: every worker opens its own after fork and
 * uses it from its one thread (SQLITE_OPEN_NOMUTEX); a handle must never
 * cross a fork.  Several processes share the database file, so it runs in
 * WAL mode (readers never wait for the writer) with synchronous=NORMAL and
 * a busy timeout; a writer still locked out after the timeout, or any I/O
 * error, is logged and reported as QC_ESTORAGE.  The WAL is checkpointed
 * PASSIVE, then RESTART for at most WAL_RESTART_WAIT_MS (restart_wal), so
 * that it mostly starts over while several workers write without a pause,
 * and no checkpoint holds the other workers' commits for long.
 *
 * Every statement is prepared once at open (SQLITE_PREPARE_PERSISTENT),
 * bound with parameters, and reset as soon as it is done, so that no read
 * snapshot outlives a call.  Writes of more than one row run inside BEGIN
 * IMMEDIATE: a transaction that starts as a reader and then writes cannot
 * wait for the lock in WAL mode, it fails at once with SQLITE_BUSY.
 *
 * The schema is versioned: open() applies the embedded migrations
 * (sql/sqlite/NNN-*.sql, see store.h) newer than the database's
 * SchemaVersion in the same BEGIN IMMEDIATE transaction, so workers
 * opening at once take turns and a failed migration leaves nothing behind.
 * A new database file is created mode 0600, whatever the umask.
 *
 * The conversation log (version 2): appends are an INSERT OR IGNORE per
 * message plus the conversation's last cseq, in one transaction per batch;
 * the caller batches (group commit), which is what keeps several workers'
 * writers from serialising on the file lock.  Inside a batch the messages,
 * the conversation rows and the delivered cursors go 32 rows to a
 * statement (LOG_INSERT_ROWS, CONV_ROWS, CURSOR_ROWS): Debian's libsqlite3
 * has no lookaside allocator, and a statement run costs ~3,000
 * instructions of its own besides its rows (docs/BENCHMARKS.md, branch
 * lon).  A message given with cseq 0
 * gets the next cseq of its conversation inside that transaction (BEGIN
 * IMMEDIATE: no other writer runs): Conversation.last_cseq is raised by the
 * number of such messages and they take the numbers below it in batch order.
 *
 * Callbacks run while their statement is stepping.  A callback may call
 * other store functions that only read (user_get or group_members from
 * within user_groups, for example), but not the function that called it,
 * and nothing at all from within offline_take's callback.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/log.h"
#include "store/store.h"
#include "log_batch.h"
#include "pair_cache.h"
#include "purge_walk.h"
#include "social_db.h"

#define BUSY_TIMEOUT_MS 5000       /* workers take turns writing one file */
#define WAL_RETRY_MS    10         /* between tries to switch a busy file to WAL */
#define MEMORY_DB       ":memory:" /* private database, for tests */
#define OPEN_FLAGS      (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX)
#define WAL_RESTART_WAIT_MS \
    50 /* the RESTART waits this long for the other writer's commit and for readers */
#define WAL_RESTART_PAGES \
    4000 /* WAL frames (~16 MB) after a commit that bring a RESTART checkpoint */
#define WAL_RESTART_BACKOFF \
    1000 /* frames more before a RESTART that did not finish is tried again */

/*
 * Messages per multi-row INSERT: a statement's fixed cost (step, halt and
 * its cursors, reset) is paid once for these many.
 */
#define LOG_INSERT_ROWS 32
#define LOG_ROW1        "(?,?,?,?,?,?)"
#define LOG_ROW2        LOG_ROW1 "," LOG_ROW1
#define LOG_ROW4        LOG_ROW2 "," LOG_ROW2
#define LOG_ROW8        LOG_ROW4 "," LOG_ROW4
#define LOG_ROW16       LOG_ROW8 "," LOG_ROW8
#define LOG_ROW32       LOG_ROW16 "," LOG_ROW16 /* LOG_INSERT_ROWS of them */
/* The same for cursors: CURSOR_ROWS per upsert. */
#define CURSOR_ROWS  32
#define CURSOR_ROW1  "(?,?,?)"
#define CURSOR_ROW2  CURSOR_ROW1 "," CURSOR_ROW1
#define CURSOR_ROW4  CURSOR_ROW2 "," CURSOR_ROW2
#define CURSOR_ROW8  CURSOR_ROW4 "," CURSOR_ROW4
#define CURSOR_ROW16 CURSOR_ROW8 "," CURSOR_ROW8
#define CURSOR_ROW32 CURSOR_ROW16 "," CURSOR_ROW16 /* CURSOR_ROWS of them */
/* And conversations' last cseqs: CONV_ROWS per upsert (three integers a row too). */
#define CONV_ROWS  32
#define CONV_ROW32 CURSOR_ROW32
#define CONV_BUMP_SET                                                                      \
    " ON CONFLICT (conv) DO UPDATE SET last_ts = CASE WHEN excluded.last_cseq > last_cseq" \
    " THEN excluded.last_ts ELSE last_ts END, last_cseq = max(last_cseq, excluded.last_cseq)"

#define STR_(x) #x
#define STR(x)  STR_(x)

#define CSEQ_TOP "9223372036854775807" /* INT64_MAX, above every cseq, in SQL */

/*
 * The cseq of the ?2-th message of others after cursor c of conversation v
 * (the first ?2 of the login are among those up to it), found by a walk
 * from the cursor on; no bound when fewer than ?2 cseqs follow the cursor
 * (then no walk: the legacy take asks for all) or fewer such messages.
 */
#define UNDELIVERED_UPTO                                                                   \
    "CASE WHEN v.last_cseq - c.delivered_cseq < ?2 THEN " CSEQ_TOP " ELSE coalesce(("      \
    "SELECT e.cseq FROM Message e WHERE e.conv = c.conv AND e.cseq > c.delivered_cseq AND" \
    " e.sender <> ?1 ORDER BY e.cseq LIMIT 1 OFFSET ?2 - 1), " CSEQ_TOP ") END"

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
    ST_SCHEMA_VERSION,
    ST_LOG_INSERT,
    ST_LOG_INSERT_ROWS,
    ST_CONV_BUMP,
    ST_CONV_BUMP_ROWS,
    ST_CONV_RESERVE,
    ST_CURSOR_INIT,
    ST_SENDER_SEEN,
    ST_CONV_LAST,
    ST_HISTORY_NEWEST,
    ST_HISTORY_OLDEST,
    ST_CONVERSATIONS,
    ST_UNDELIVERED,
    ST_DELIVERED_UP,
    ST_DELIVERED_RAISE,
    ST_DELIVERED_ROWS,
    ST_READ_UP,
    ST_READ_GET,
    ST_MEMBER_EXISTS,
    ST_CURSOR_JOIN,
    ST_PURGE_AGE,
    ST_PURGE_WINDOW,
    ST_PURGE_FIND,
    ST_PURGE_CONV,
    ST_PURGE_DELIVERED_FIND,
    ST_CONV_DELETE_MSGS,
    ST_CONV_DELETE_CURSORS,
    ST_CONV_DELETE_ROW,
    ST_LOG_PENDING,
    ST_LOG_CATCH_UP,
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
    [ST_SCHEMA_VERSION] = { "schema version",
                            "SELECT coalesce(max(version), 0) FROM SchemaVersion" },
    /* ---- the log ---- */
    [ST_LOG_INSERT] = { "log insert",
                        "INSERT OR IGNORE INTO Message (conv, cseq, mid, sender, ts, body)"
                        " VALUES (?1, ?2, ?3, ?4, ?5, ?6)" },
    /* The same for LOG_INSERT_ROWS messages, one after the other. */
    [ST_LOG_INSERT_ROWS] = { "log insert rows",
                             "INSERT OR IGNORE INTO Message (conv, cseq, mid, sender, ts, body)"
                             " VALUES " LOG_ROW32 },
    /* Every SET expression sees the old row: last_ts follows the old last_cseq. */
    [ST_CONV_BUMP] = { "conversation bump",
                       "INSERT INTO Conversation (conv, last_cseq, last_ts) VALUES (?1, ?2, ?3)" CONV_BUMP_SET },
    /* The same for CONV_ROWS conversations (each once). */
    [ST_CONV_BUMP_ROWS] = { "conversation bump rows",
                            "INSERT INTO Conversation (conv, last_cseq, last_ts) VALUES " CONV_ROW32
                                CONV_BUMP_SET },
    /* Reserve ?2 cseqs after the last one (the transaction holds the write lock). */
    [ST_CONV_RESERVE] = { "conversation reserve",
                          "INSERT INTO Conversation (conv, last_cseq, last_ts) VALUES (?1, ?2, ?3)"
                          " ON CONFLICT (conv) DO UPDATE SET"
                          " last_cseq = last_cseq + excluded.last_cseq,"
                          " last_ts = excluded.last_ts" },
    [ST_CURSOR_INIT] = { "cursor init",
                         "INSERT OR IGNORE INTO ConvCursor (userid, conv) VALUES (?1, ?2)" },
    /*
     * The sender's own run ?3..?4 continues what it has: nothing of others
     * is skipped (with the log off the stored log has gaps: no stored
     * message of others lies between).
     */
    [ST_SENDER_SEEN] = { "sender seen",
                         "UPDATE ConvCursor SET delivered_cseq = ?4 WHERE userid = ?1 AND conv = ?2"
                         " AND delivered_cseq < ?4 AND (delivered_cseq >= ?3 - 1 OR NOT EXISTS"
                         " (SELECT 1 FROM Message m WHERE m.conv = ?2"
                         " AND m.cseq > ConvCursor.delivered_cseq AND m.cseq < ?3 AND m.sender <> ?1))" },
    [ST_CONV_LAST] = { "conversation last", "SELECT last_cseq FROM Conversation WHERE conv = ?1" },
    /* The newest ?4 + 1 between ?3 and ?2 (exclusive), handed out ascending. */
    [ST_HISTORY_NEWEST] = { "history newest",
                            "SELECT conv, cseq, mid, sender, ts, body, count(*) OVER () FROM"
                            " (SELECT conv, cseq, mid, sender, ts, body FROM Message"
                            " WHERE conv = ?1 AND cseq < ?2 AND cseq > ?3 ORDER BY cseq DESC LIMIT ?4)"
                            " ORDER BY cseq" },
    [ST_HISTORY_OLDEST] = { "history oldest",
                            "SELECT conv, cseq, mid, sender, ts, body, count(*) OVER () FROM"
                            " (SELECT conv, cseq, mid, sender, ts, body FROM Message"
                            " WHERE conv = ?1 AND cseq < ?2 AND cseq > ?3 ORDER BY cseq LIMIT ?4)"
                            " ORDER BY cseq" },
    /*
     * Pairs from the user's cursors, groups from the user's memberships;
     * the newest message and the unread count only for the ?2 listed.
     */
    [ST_CONVERSATIONS] = { "conversations",
                           "SELECT conv, last_cseq, read_cseq, last_ts, name,"
                           " (SELECT body FROM Message m WHERE m.conv = x.conv AND m.cseq = x.last_cseq),"
                           " (SELECT count(*) FROM Message m WHERE m.conv = x.conv"
                           " AND m.cseq > x.read_cseq AND m.sender <> ?1)"
                           " FROM (SELECT c.conv AS conv, v.last_cseq AS last_cseq,"
                           " c.read_cseq AS read_cseq, v.last_ts AS last_ts, u.name AS name"
                           " FROM ConvCursor c JOIN Conversation v ON v.conv = c.conv"
                           " JOIN User u ON u.id = CASE WHEN (c.conv >> 32) = ?1"
                           " THEN (c.conv & 4294967295) ELSE (c.conv >> 32) END"
                           " WHERE c.userid = ?1 AND c.conv > 0"
                           " UNION ALL"
                           " SELECT -m.groupid, coalesce(v.last_cseq, 0), coalesce(c.read_cseq, 0),"
                           " coalesce(v.last_ts, 0), g.groupname"
                           " FROM GroupUser m JOIN AllGroup g ON g.groupid = m.groupid"
                           " LEFT JOIN Conversation v ON v.conv = -m.groupid"
                           " LEFT JOIN ConvCursor c ON c.userid = ?1 AND c.conv = -m.groupid"
                           " WHERE m.userid = ?1 ORDER BY 4 DESC, 1 LIMIT ?2) AS x"
                           " ORDER BY last_ts DESC, conv" },
    /*
     * ets, the running maximum of ts along each conversation's cseqs, orders
     * the messages oldest first and yet every prefix of the answer is a
     * prefix of each conversation: a cut never skips a cseq.  Messages of
     * the same millisecond go by emid, the running maximum of mid (the
     * node stamps mid in the order it sequences), so they keep send order.
     *
     * Since that order follows cseq within a conversation, the first ?2
     * of the answer hold at most the first ?2 messages of others after each
     * cursor: each conversation is read up to its ?2-th such message
     * (UNDELIVERED_UPTO), not to its end.  The window and its sort, bodies
     * and all, used to run over everything after the cursors, a whole
     * history for a user who had had none of it, to hand out ?2.
     */
    [ST_UNDELIVERED] = { "undelivered",
                         "SELECT conv, cseq, mid, sender, ts, body FROM"
                         " (SELECT m.conv AS conv, m.cseq AS cseq, m.mid AS mid, m.sender AS sender,"
                         " m.ts AS ts, m.body AS body, max(m.ts) OVER w AS ets, max(m.mid) OVER w AS emid"
                         " FROM ConvCursor c JOIN Conversation v ON v.conv = c.conv"
                         " AND v.last_cseq > c.delivered_cseq"
                         " JOIN Message m ON m.conv = c.conv AND m.cseq > c.delivered_cseq"
                         " AND m.cseq <= " UNDELIVERED_UPTO
                         " WHERE c.userid = ?1 AND (c.conv > 0 OR EXISTS (SELECT 1 FROM GroupUser g"
                         " WHERE g.groupid = -c.conv AND g.userid = ?1))"
                         " WINDOW w AS (PARTITION BY m.conv ORDER BY m.cseq ROWS UNBOUNDED PRECEDING))"
                         " WHERE sender <> ?1 ORDER BY ets, emid, conv, cseq LIMIT ?2" },
    [ST_DELIVERED_UP] = { "delivered advance",
                          "INSERT INTO ConvCursor (userid, conv, delivered_cseq) VALUES (?1, ?2, ?3)"
                          " ON CONFLICT (userid, conv) DO UPDATE SET"
                          " delivered_cseq = max(delivered_cseq, excluded.delivered_cseq)" },
    /*
     * A cursor that exists and is below ?3, raised; when it changes nothing
     * (no row yet, or already there) ST_DELIVERED_UP follows.  Cheaper than
     * the upsert's probe and update for the usual case, a row to raise.
     */
    [ST_DELIVERED_RAISE] = { "delivered raise",
                             "UPDATE ConvCursor SET delivered_cseq = ?3"
                             " WHERE userid = ?1 AND conv = ?2 AND delivered_cseq < ?3" },
    /* ST_DELIVERED_UP for CURSOR_ROWS cursors (a key twice: the higher stays). */
    [ST_DELIVERED_ROWS] = { "delivered advance rows",
                            "INSERT INTO ConvCursor (userid, conv, delivered_cseq) VALUES " CURSOR_ROW32
                            " ON CONFLICT (userid, conv) DO UPDATE SET"
                            " delivered_cseq = max(delivered_cseq, excluded.delivered_cseq)" },
    [ST_READ_UP] = { "read set",
                     "INSERT INTO ConvCursor (userid, conv, read_cseq) VALUES (?1, ?2,"
                     " max(0, min(?3, coalesce((SELECT last_cseq FROM Conversation WHERE conv = ?2), 0))))"
                     " ON CONFLICT (userid, conv) DO UPDATE SET"
                     " read_cseq = max(read_cseq, excluded.read_cseq)" },
    [ST_READ_GET] = { "read get",
                      "SELECT read_cseq FROM ConvCursor WHERE userid = ?1 AND conv = ?2" },
    [ST_MEMBER_EXISTS] = { "member exists",
                           "SELECT 1 FROM GroupUser WHERE groupid = ?1 AND userid = ?2" },
    [ST_CURSOR_JOIN] = { "cursor join",
                         "INSERT INTO ConvCursor (userid, conv, delivered_cseq, read_cseq)"
                         " SELECT ?1, ?2, s, s FROM (SELECT max(?3, coalesce((SELECT last_cseq"
                         " FROM Conversation WHERE conv = ?2), 0)) AS s) WHERE true"
                         " ON CONFLICT (userid, conv) DO UPDATE SET"
                         " delivered_cseq = max(delivered_cseq, excluded.delivered_cseq),"
                         " read_cseq = max(read_cseq, excluded.read_cseq)" },
    [ST_PURGE_AGE] = { "purge by age",
                       "DELETE FROM Message WHERE rowid IN"
                       " (SELECT rowid FROM Message WHERE ts < ?1 ORDER BY ts LIMIT ?2)" },
    /* The last of the next STORE_PURGE_SCAN_CONVS conversations after ?1, and how many. */
    [ST_PURGE_WINDOW] = { "purge window",
                          "SELECT max(conv), count(*) FROM (SELECT conv FROM Conversation"
                          " WHERE conv > ?1 ORDER BY conv LIMIT " STR(STORE_PURGE_SCAN_CONVS) ")" },
    /*
     * The finds name conversations in (?2, ?3], in order: the window of one
     * retention call.  ?1 is the cap (the delivered find has none).
     */
    /* Conversations holding more than the newest ?1: one index probe each. */
    [ST_PURGE_FIND] = { "purge find", "SELECT conv, last_cseq - ?1 FROM Conversation v"
                                      " WHERE v.conv > ?2 AND v.conv <= ?3 AND last_cseq > ?1"
                                      " AND EXISTS (SELECT 1 FROM Message m WHERE m.conv = v.conv"
                                      " AND m.cseq <= v.last_cseq - ?1) ORDER BY conv LIMIT " STR(
                                          PURGE_FIND_ROWS) },
    [ST_PURGE_CONV] = { "purge conversation",
                        "DELETE FROM Message WHERE rowid IN (SELECT rowid FROM Message"
                        " WHERE conv = ?1 AND cseq <= ?2 ORDER BY cseq LIMIT ?3)" },
    /*
     * Conversations holding messages every participant has had delivered:
     * the cursors of each through ConvCursor_conv (004-purge.sql).
     */
    [ST_PURGE_DELIVERED_FIND] = { "purge delivered find",
                                  "SELECT conv, upto FROM (SELECT v.conv AS conv,"
                                  " (SELECT min(c.delivered_cseq) FROM ConvCursor c"
                                  " WHERE c.conv = v.conv AND (c.conv > 0 OR EXISTS (SELECT 1"
                                  " FROM GroupUser g WHERE g.groupid = -c.conv AND g.userid = c.userid)))"
                                  " AS upto FROM Conversation v WHERE v.conv > ?2 AND v.conv <= ?3) AS d"
                                  " WHERE EXISTS (SELECT 1 FROM Message m WHERE m.conv = d.conv"
                                  " AND m.cseq <= d.upto) ORDER BY conv LIMIT " STR(
                                      PURGE_FIND_ROWS) },
    [ST_CONV_DELETE_MSGS] = { "conversation delete",
                              "DELETE FROM Message WHERE rowid IN"
                              " (SELECT rowid FROM Message WHERE conv = ?1 LIMIT ?2)" },
    [ST_CONV_DELETE_CURSORS] = { "conversation cursors delete",
                                 "DELETE FROM ConvCursor WHERE conv = ?1" },
    [ST_CONV_DELETE_ROW] = { "conversation row delete",
                             "DELETE FROM Conversation WHERE conv = ?1" },
    [ST_LOG_PENDING] = { "log pending",
                         "SELECT EXISTS (SELECT 1 FROM ConvCursor c JOIN Conversation v"
                         " ON v.conv = c.conv AND v.last_cseq > c.delivered_cseq WHERE c.userid = ?1)" },
    /* After the legacy take handed over everything of others. */
    [ST_LOG_CATCH_UP] = { "log catch up",
                          "UPDATE ConvCursor SET delivered_cseq = (SELECT last_cseq FROM Conversation v"
                          " WHERE v.conv = ConvCursor.conv) WHERE userid = ?1 AND delivered_cseq <"
                          " (SELECT last_cseq FROM Conversation v WHERE v.conv = ConvCursor.conv)" },
};

#define SOCIAL_STMTS 96 /* statements of sqlite_social.c kept per handle */

/* A statement of sqlite_social.c, by its SQL literal. */
struct social_stmt {
    const char *sql;
    sqlite3_stmt *s;
};

struct store {
    sqlite3 *db;
    sqlite3_stmt *stmt[ST_COUNT];
    struct social_stmt social[SOCIAL_STMTS]; /* in use: s != NULL */
    int max_offline;                         /* messages kept per user; 0: no cap */
    int wal_restart_at;                      /* WAL frames that bring the next RESTART */
    struct pair_cache
        pairs; /* the pairs whose cursors exist (made in a transaction: see tx_rollback) */
    int64_t
        bumps[3 * CONV_ROWS]; /* an append's conversation rows not yet written (conv, cseq, ts) */
    size_t nbumps;
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

/*
 * A pair's cursors made or found in a transaction (bump_conversation) are
 * remembered at once; a rollback forgets every pair (tx_rollback), since an
 * entry made inside it may not be committed.
 */
static int tx_begin(struct store *st)
{
    int rc = run_to_end(st->stmt[ST_BEGIN]);

    return rc == SQLITE_DONE ? QC_OK : statement_failed(st, ST_BEGIN, rc);
}

static void tx_rollback(struct store *st)
{
    int rc;

    pair_cache_clear(&st->pairs);
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

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
    /*
     * Switching to WAL takes an exclusive lock, and SQLite answers BUSY at
     * once, without its busy handler, while another connection (a worker
     * starting beside this one) holds the file: retry until the timeout.
     */
    for (int waited = 0;; waited += WAL_RETRY_MS) {
        rc = sqlite3_step(s);
        if ((rc & 0xff) != SQLITE_BUSY || waited >= BUSY_TIMEOUT_MS)
            break;
        (void)sqlite3_reset(s);
        struct timespec pause = { 0, WAL_RETRY_MS * 1000000L };
        nanosleep(&pause, NULL);
    }
    ok = rc == SQLITE_ROW && strcmp(column_text(s, 0), want) == 0;
    if (!ok)
        snprintf(err, errlen, "%s: cannot use WAL journal mode: %s", path,
                 rc == SQLITE_ROW ? column_text(s, 0) : sqlite3_errmsg(st->db));
    (void)sqlite3_finalize(s);
    return ok ? 0 : -1;
}

/*
 * A new database file is created here, mode STORE_SQLITE_FILE_MODE whatever
 * the umask: it holds password hashes and every conversation.  SQLite gives
 * its -wal and -shm files the mode of the database file.  An existing file
 * keeps the mode its operator chose.
 */
static int create_private_file(const char *path, char *err, size_t errlen)
{
    int fd;

    if (strcmp(path, MEMORY_DB) == 0)
        return 0;
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, STORE_SQLITE_FILE_MODE);
    if (fd < 0) {
        if (errno == EEXIST)
            return 0;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (fchmod(fd, STORE_SQLITE_FILE_MODE) != 0) {
        snprintf(err, errlen, "%s: chmod: %s", path, strerror(errno));
        (void)close(fd);
        return -1;
    }
    (void)close(fd);
    return 0;
}

/*
 * After each commit (sqlite3_wal_hook, in place of the autocheckpoint):
 * once the WAL holds WAL_RESTART_PAGES frames, a RESTART checkpoint.  The
 * default PASSIVE autocheckpoint never lets the WAL start over while two
 * workers' storage threads commit in turn: a writer restarts the WAL only
 * when every frame is already in the database, and the other writer has
 * always appended some since the last checkpoint.  The WAL then grew by
 * ~600 bytes a chat (240 MB in 8 s of ping-pong, 1,000 pairs), every commit
 * after the first 1000 frames ran a checkpoint (with its fsyncs), and the
 * kernel's time went to new page-cache pages for the growing file.
 * RESTART waits (busy handler) for the other writer's transaction to end,
 * copies every frame, and makes the next writer start the WAL over.  4000
 * frames rather than SQLite's 1000: a page written by several commits is
 * copied once per checkpoint (store_append_bench K=300 W=2: ~10% less CPU
 * than at 1000, the WAL at most ~18 MB).
 *
 * But a RESTART holds the write lock while it copies, syncs and waits for
 * readers, and the hook runs inside the commit, before the round goes back
 * to the worker: with the 5 s busy timeout the other worker's commits
 * stopped for seconds in ping-pong (chats held for room to append were
 * refused, errno 13), and a reader keeping an old snapshot (a backup, an
 * operator's sqlite3 shell) held every commit for 5 s.  So a PASSIVE
 * checkpoint copies the frames first, beside the other writer, and only
 * when it copied them all does a RESTART follow, waiting at most
 * WAL_RESTART_WAIT_MS.  When it does not finish, both are tried again
 * WAL_RESTART_BACKOFF frames later, not at every commit.
 */
static int restart_wal(void *arg, sqlite3 *db, const char *name, int frames)
{
    struct store *st = arg;
    int logged = 0, done = 0, rc;
    bool restarted = false;

    if (frames < WAL_RESTART_PAGES) {
        st->wal_restart_at = WAL_RESTART_PAGES; /* the WAL started over (this or another writer) */
        return SQLITE_OK;
    }
    if (frames < st->wal_restart_at)
        return SQLITE_OK;
    rc = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, &logged, &done);
    if (rc == SQLITE_OK && done == logged) {
        (void)sqlite3_busy_timeout(db, WAL_RESTART_WAIT_MS);
        rc = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_RESTART, &logged, &done);
        (void)sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
        restarted = rc == SQLITE_OK;
    }
    if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_BUSY)
        log_warning("sqlite: WAL checkpoint: %s (code %d)", sqlite3_errmsg(db), rc);
    st->wal_restart_at = restarted ? WAL_RESTART_PAGES : frames + WAL_RESTART_BACKOFF;
    return SQLITE_OK;
}

/*
 * The page cache of this connection: storage.cache_mb.  SQLite's default
 * (2 MB) is smaller than the pages one group commit touches under load (a
 * leaf of the (conv, cseq) index per conversation, the cursors, the
 * conversations): they were read back (pread) and spilled to the WAL
 * mid-transaction, about 3.8 such calls per message in a 1,000-pair ping-pong
 * (docs/BENCHMARKS.md).  The cache fills only as far as pages are used.
 */
static int size_cache(struct store *st, int cache_mb)
{
    char sql[64];

    snprintf(sql, sizeof(sql), "PRAGMA cache_size=-%lld", (long long)cache_mb * 1024);
    return sqlite3_exec(st->db, sql, NULL, NULL, NULL);
}

static int connect_db(struct store *st, const char *path, int cache_mb, char *err, size_t errlen)
{
    int rc;

    if (create_private_file(path, err, errlen) != 0)
        return -1;
    rc = sqlite3_open_v2(path, &st->db, OPEN_FLAGS, NULL);

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
    if (rc == SQLITE_OK)
        rc = size_cache(st, cache_mb);
    st->wal_restart_at = WAL_RESTART_PAGES;
    sqlite3_wal_hook(st->db, restart_wal, st); /* replaces the PASSIVE autocheckpoint */
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(st->db));
        return -1;
    }
    return 0;
}

/* The version table itself: the one table no migration file creates. */
#define SCHEMA_VERSION_DDL                                                   \
    "CREATE TABLE IF NOT EXISTS SchemaVersion (version INTEGER PRIMARY KEY," \
    " name TEXT NOT NULL, applied TEXT NOT NULL DEFAULT (datetime('now')))"
#define SCHEMA_VERSION_READ "SELECT coalesce(max(version), 0) FROM SchemaVersion"
#define SCHEMA_VERSION_ADD  "INSERT INTO SchemaVersion (version, name) VALUES (?1, ?2)"

/* Run one statement with no result on a statement of its own. */
static int exec_once(struct store *st, const char *sql, int64_t num, const char *text, int64_t *out)
{
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);

    if (rc != SQLITE_OK)
        return rc;
    if (sqlite3_bind_parameter_count(s) >= 1)
        rc = sqlite3_bind_int64(s, 1, num);
    if (rc == SQLITE_OK && sqlite3_bind_parameter_count(s) >= 2)
        rc = bind_text(s, 2, text);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    if (rc == SQLITE_ROW && out != NULL)
        *out = sqlite3_column_int64(s, 0);
    (void)sqlite3_finalize(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Apply, in the open transaction, every migration newer than the database. */
static int apply_migrations(struct store *st, char *err, size_t errlen)
{
    int64_t have = 0;
    size_t i;
    int rc;

    rc = exec_once(st, SCHEMA_VERSION_DDL, 0, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = exec_once(st, SCHEMA_VERSION_READ, 0, NULL, &have);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "reading the schema version: %s", sqlite3_errmsg(st->db));
        return -1;
    }
    if (have > (int64_t)store_sqlite_migration_count) {
        snprintf(err, errlen, "the database has schema version %lld, newer than this qchatd (%zu)",
                 (long long)have, store_sqlite_migration_count);
        return -1;
    }
    for (i = (size_t)have; i < store_sqlite_migration_count; i++) {
        const struct store_migration *m = &store_sqlite_migrations[i];

        rc = sqlite3_exec(st->db, m->sql, NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = exec_once(st, SCHEMA_VERSION_ADD, m->version, m->name, NULL);
        if (rc != SQLITE_OK) {
            snprintf(err, errlen, "applying migration %s: %s", m->name, sqlite3_errmsg(st->db));
            return -1;
        }
        log_info("sqlite: schema migrated to version %d (%s)", m->version, m->name);
    }
    return 0;
}

/*
 * Bring the schema up to date in one write transaction (workers may open
 * at once: the first migrates, the others then find nothing to do).
 * On failure err says why, and QC_ESTORAGE is returned.
 */
static int create_schema(struct store *st, char *err, size_t errlen)
{
    int rc = sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);

    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "creating the schema: %s (code %d)", sqlite3_errmsg(st->db), rc);
        return QC_ESTORAGE;
    }
    if (apply_migrations(st, err, errlen) != 0) {
        if (!sqlite3_get_autocommit(st->db))
            (void)sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        return QC_ESTORAGE;
    }
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
    for (i = 0; i < SOCIAL_STMTS; i++)
        (void)sqlite3_finalize(st->social[i].s);
    rc = sqlite3_close(st->db);
    if (rc != SQLITE_OK)
        log_error("sqlite: close: %s", sqlite3_errstr(rc));
    pair_cache_free(&st->pairs);
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
    if (connect_db(st, cfg->storage_path, cfg->storage_cache_mb, err, errlen) != 0)
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

/*
 * The statement for sql (a literal: the key is its address), prepared once
 * per handle; NULL (logged) when it does not prepare.  *own: none could be
 * kept, the caller finalizes it; else the caller resets it.
 */
sqlite3_stmt *sqlite_store_social_stmt(struct store *st, const char *sql, bool *own)
{
    sqlite3_stmt *s = NULL;
    int i, rc;

    for (i = 0; i < SOCIAL_STMTS && st->social[i].s != NULL; i++)
        if (st->social[i].sql == sql) {
            *own = false;
            return st->social[i].s;
        }
    *own = i == SOCIAL_STMTS;
    rc = sqlite3_prepare_v3(st->db, sql, -1, *own ? 0 : SQLITE_PREPARE_PERSISTENT, &s, NULL);
    if (rc != SQLITE_OK) {
        (void)storage_failed(st, sql, rc);
        (void)sqlite3_finalize(s);
        return NULL;
    }
    if (!*own)
        st->social[i] = (struct social_stmt){ sql, s };
    return s;
}

int sqlite_store_begin(struct store *st)
{
    return tx_begin(st);
}

int sqlite_store_end(struct store *st, int err)
{
    return tx_end(st, err);
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

static int join_conversation(struct store *st, int32_t userid, int64_t conv, int64_t start);

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
    int rc, added, err;

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
    if ((err = insert_member(st, *groupid, creator, QC_ROLE_CREATOR, &added)) != QC_OK)
        return err;
    return join_conversation(st, creator, store_conv_group((int32_t)*groupid), 0);
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

/* The member row and the new member's cursors at the group's last cseq. */
static int join_group(struct store *st, int32_t groupid, int32_t userid)
{
    int err, added = 0;

    if ((err = row_exists(st, ST_GROUP_EXISTS, groupid, QC_ENOGROUP)) != QC_OK)
        return err;
    if ((err = insert_member(st, groupid, userid, QC_ROLE_NORMAL, &added)) != QC_OK)
        return err;
    if (!added)
        return QC_EALREADY;
    return join_conversation(st, userid, store_conv_group(groupid), 0);
}

static int sqlite_group_join(struct store *st, int32_t groupid, int32_t userid)
{
    int err;

    if ((err = tx_begin(st)) != QC_OK)
        return err;
    return tx_end(st, join_group(st, groupid, userid));
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

/* ---- the conversation log ------------------------------------------- */

#define MS_PER_DAY   86400000LL
#define CSEQ_NONE    INT64_MAX /* "no before": above every cseq */
#define BYTES_NO_CAP ((size_t)-1)

static int sqlite_schema_version(struct store *st, int *version)
{
    sqlite3_stmt *s = st->stmt[ST_SCHEMA_VERSION];
    int rc = sqlite3_step(s);

    if (rc == SQLITE_ROW)
        *version = clamp_int(sqlite3_column_int64(s, 0));
    (void)sqlite3_reset(s);
    return rc == SQLITE_ROW ? QC_OK : statement_failed(st, ST_SCHEMA_VERSION, rc);
}

/* Bind and run a statement of integers only (n of them, ?1..?n). */
static int run_ints(struct store *st, enum stmt_id id, const int64_t *v, int n)
{
    sqlite3_stmt *s = st->stmt[id];
    int i, rc = SQLITE_OK;

    for (i = 0; i < n && rc == SQLITE_OK; i++)
        rc = sqlite3_bind_int64(s, i + 1, v[i]);
    if (rc == SQLITE_OK)
        rc = run_to_end(s);
    else
        (void)sqlite3_reset(s);
    return rc == SQLITE_DONE ? QC_OK : statement_failed(st, id, rc);
}

/* Bind m as the six parameters from first on of a log insert. */
static int bind_message(sqlite3_stmt *s, int first, const struct store_logmsg *m)
{
    int rc = sqlite3_bind_int64(s, first, m->conv);

    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, first + 1, m->cseq);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, first + 2, m->mid);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, first + 3, m->sender);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, first + 4, m->ts);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(s, first + 5, m->body, (int)m->len, SQLITE_STATIC);
    return rc;
}

/* Insert msgs[0..n) (n is 1 or LOG_INSERT_ROWS) with one statement; a stored (conv, cseq) is ignored. */
static int insert_messages(struct store *st, const struct store_logmsg *msgs, size_t n)
{
    enum stmt_id id = n == 1 ? ST_LOG_INSERT : ST_LOG_INSERT_ROWS;
    sqlite3_stmt *s = st->stmt[id];
    int rc = SQLITE_OK;

    for (size_t i = 0; i < n && rc == SQLITE_OK; i++)
        rc = bind_message(s, (int)i * 6 + 1, &msgs[i]);
    if (rc == SQLITE_OK)
        rc = run_to_end(s);
    else
        (void)sqlite3_reset(s);
    return rc == SQLITE_DONE ? QC_OK : statement_failed(st, id, rc);
}

/*
 * The conversation rows of an append go CONV_ROWS to a statement: queued
 * by bump_conversation (nothing in the append reads them), the rest
 * written by write_bumps at its end.
 */
static int write_bumps(struct store *st)
{
    size_t i;
    int err = QC_OK;

    if (st->nbumps == CONV_ROWS)
        err = run_ints(st, ST_CONV_BUMP_ROWS, st->bumps, 3 * CONV_ROWS);
    else
        for (i = 0; i < st->nbumps && err == QC_OK; i++)
            err = run_ints(st, ST_CONV_BUMP, st->bumps + 3 * i, 3);
    st->nbumps = 0;
    return err;
}

static int queue_bump(struct store *st, const int64_t bump[3])
{
    memcpy(st->bumps + 3 * st->nbumps++, bump, 3 * sizeof(*bump));
    return st->nbumps == CONV_ROWS ? write_bumps(st) : QC_OK;
}

/* A conversation's last cseq (never lowered, queued) and a pair's two cursors (at 0 if new). */
static int bump_conversation(struct store *st, const struct conv_top *t)
{
    int64_t bump[3] = { t->conv, t->cseq, t->ts };
    int64_t a[2] = { t->conv >> 32, t->conv }, b[2] = { t->conv & 0xffffffff, t->conv };
    int err;

    if ((err = queue_bump(st, bump)) != QC_OK || t->conv < 0 || pair_cache_has(&st->pairs, t->conv))
        return err;
    if ((err = run_ints(st, ST_CURSOR_INIT, a, 2)) != QC_OK ||
        (err = run_ints(st, ST_CURSOR_INIT, b, 2)) != QC_OK)
        return err;
    pair_cache_add(&st->pairs, t->conv);
    return QC_OK;
}

static int sender_seen(struct store *st, int32_t sender, int64_t conv, int64_t from, int64_t to)
{
    int64_t v[4] = { sender, conv, from, to };

    return run_ints(st, ST_SENDER_SEEN, v, 4);
}

/* Give the k messages todo[0..k) (one conversation, batch order) the next k cseqs. */
static int reserve_cseqs(struct store *st, struct store_logmsg *msgs, const size_t *todo, size_t k)
{
    int64_t v[3] = { msgs[todo[0]].conv, (int64_t)k, msgs[todo[k - 1]].ts };
    int64_t last = 0;
    int err;

    if ((err = run_ints(st, ST_CONV_RESERVE, v, 3)) != QC_OK)
        return err;
    if ((err = query_int(st, ST_CONV_LAST, v[0], QC_ESTORAGE, &last)) != QC_OK)
        return err;
    for (size_t i = 0; i < k; i++)
        msgs[todo[i]].cseq = last - (int64_t)k + 1 + (int64_t)i;
    return QC_OK;
}

/* Number, then every message (a stored (conv, cseq) is ignored), then each conversation once. */
static int append_batch(struct store *st, struct log_batch *b)
{
    size_t i, n;
    int err = log_batch_number(b, st, reserve_cseqs);

    for (i = 0; i < b->n && err == QC_OK; i += n) {
        n = b->n - i >= LOG_INSERT_ROWS ? LOG_INSERT_ROWS : 1;
        err = insert_messages(st, b->msgs + i, n);
    }
    st->nbumps = 0;
    if (err == QC_OK)
        err = log_batch_update(b, st, bump_conversation, sender_seen);
    if (err == QC_OK)
        err = write_bumps(st);
    st->nbumps = 0; /* written, or rolled back with the rest */
    return err;
}

static int sqlite_log_append(struct store *st, struct store_logmsg *msgs, size_t n)
{
    struct log_batch b;
    int err;

    if (n == 0)
        return QC_OK;
    if ((err = log_batch_init(&b, msgs, n, "sqlite")) != QC_OK)
        return err;
    if ((err = tx_begin(st)) == QC_OK)
        err = tx_end(st, append_batch(st, &b));
    if (err != QC_OK) /* rolled back: the caller's messages are as they were */
        log_batch_unnumber(&b);
    log_batch_free(&b);
    return err;
}

/* Each conversation's last cseq raised to its mark (never lowered), one transaction. */
static int raise_marks(struct store *st, const struct store_convmark *marks, size_t n)
{
    int err = QC_OK;

    for (size_t i = 0; i < n && err == QC_OK; i++) {
        int64_t v[3] = { marks[i].conv, marks[i].cseq, marks[i].ts };

        err = run_ints(st, ST_CONV_BUMP, v, 3);
    }
    return err;
}

static int sqlite_conv_raise(struct store *st, const struct store_convmark *marks, size_t n)
{
    int err;

    for (size_t i = 0; i < n; i++) /* refused before taking the write lock, as in mysql.c */
        if (marks[i].conv == 0 || marks[i].cseq <= 0)
            return QC_EBADREQ;
    if (n == 0)
        return QC_OK;
    if ((err = tx_begin(st)) == QC_OK)
        err = tx_end(st, raise_marks(st, marks, n));
    return err;
}

static int sqlite_conv_last_cseq(struct store *st, int64_t conv, int64_t *last)
{
    *last = 0;
    return query_int(st, ST_CONV_LAST, conv, QC_OK, last);
}

/* The current row of a (conv, cseq, mid, sender, ts, body) query. */
static void row_message(sqlite3_stmt *s, struct store_logmsg *m)
{
    m->conv = sqlite3_column_int64(s, 0);
    m->cseq = sqlite3_column_int64(s, 1);
    m->mid = sqlite3_column_int64(s, 2);
    m->sender = (int32_t)sqlite3_column_int64(s, 3);
    m->ts = sqlite3_column_int64(s, 4);
    m->body = column_text(s, 5);
    m->len = (size_t)sqlite3_column_bytes(s, 5);
}

static int bind_range(sqlite3_stmt *s, int64_t conv, int64_t below, int64_t above, int limit)
{
    int rc = sqlite3_bind_int64(s, 1, conv);

    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 2, below);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 3, above);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(s, 4, limit);
    return rc;
}

/*
 * limit + 1 rows are asked for, each with the count of rows found: the
 * extra one only says there is more.  Newest-first pages come ascending,
 * so their extra row is the first; oldest-first pages, the last.
 */
static int sqlite_history(struct store *st, int64_t conv, int64_t before, int64_t after, int limit,
                          store_logmsg_cb cb, void *arg, bool *more)
{
    bool newest = after < 0;
    enum stmt_id id = newest ? ST_HISTORY_NEWEST : ST_HISTORY_OLDEST;
    sqlite3_stmt *s = st->stmt[id];
    struct store_logmsg m;
    int rc, row = 0;

    *more = false;
    if (limit < 1 || limit > STORE_HISTORY_MAX)
        return QC_EBADREQ;
    rc = bind_range(s, conv, before >= 0 ? before : CSEQ_NONE, after >= 0 ? after : 0, limit + 1);
    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            bool extra;

            *more = sqlite3_column_int(s, 6) > limit;
            extra = *more && (newest ? row == 0 : row == limit);
            row++;
            if (extra)
                continue;
            row_message(s, &m);
            cb(arg, &m);
        }
    (void)sqlite3_reset(s);
    return rc == SQLITE_DONE ? QC_OK : statement_failed(st, id, rc);
}

static int sqlite_conversations(struct store *st, int32_t userid, int limit, store_conv_cb cb,
                                void *arg)
{
    sqlite3_stmt *s = st->stmt[ST_CONVERSATIONS];
    struct store_conv_info c;
    int rc;

    if (limit < 1 || limit > STORE_CONVS_MAX)
        return QC_EBADREQ;
    rc = sqlite3_bind_int64(s, 1, userid);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(s, 2, limit);
    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            memset(&c, 0, sizeof(c));
            c.conv = sqlite3_column_int64(s, 0);
            c.with = store_conv_other(c.conv, userid);
            c.groupid = store_conv_groupid(c.conv);
            c.last_cseq = sqlite3_column_int64(s, 1);
            c.read_cseq = sqlite3_column_int64(s, 2);
            c.last_ts = sqlite3_column_int64(s, 3);
            c.name = column_text(s, 4);
            if (sqlite3_column_type(s, 5) != SQLITE_NULL) {
                c.last = column_text(s, 5);
                c.last_len = (size_t)sqlite3_column_bytes(s, 5);
            }
            c.unread = sqlite3_column_int64(s, 6);
            cb(arg, &c);
        }
    (void)sqlite3_reset(s);
    return rc == SQLITE_DONE ? QC_OK : statement_failed(st, ST_CONVERSATIONS, rc);
}

/* Hand rows to cb while they fit max_count and max_bytes (the first always does). */
static int sqlite_undelivered(struct store *st, int32_t userid, int max_count, size_t max_bytes,
                              store_logmsg_cb cb, void *arg, bool *more)
{
    sqlite3_stmt *s = st->stmt[ST_UNDELIVERED];
    struct store_logmsg m;
    size_t bytes = 0;
    int rc, rows = 0;

    *more = false;
    if (max_count < 1)
        return QC_EBADREQ;
    rc = sqlite3_bind_int64(s, 1, userid);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 2, (int64_t)max_count + 1);
    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            row_message(s, &m);
            if (rows == max_count || (rows > 0 && m.len > max_bytes - bytes)) {
                *more = true;
                rc = SQLITE_DONE;
                break;
            }
            bytes += m.len < max_bytes - bytes ? m.len : max_bytes - bytes;
            rows++;
            cb(arg, &m);
        }
    (void)sqlite3_reset(s);
    return rc == SQLITE_DONE ? QC_OK : statement_failed(st, ST_UNDELIVERED, rc);
}

/* Raise n cursors (inside the caller's transaction): of userids[i], or of userid when NULL. */
static int raise_cursors(struct store *st, const int32_t *userids, int32_t userid,
                         const struct store_cursor *pos, size_t n)
{
    int64_t v[3 * CURSOR_ROWS];
    size_t i = 0, k;
    int err = QC_OK;

    for (; n - i >= CURSOR_ROWS && err == QC_OK; i += CURSOR_ROWS) {
        for (k = 0; k < CURSOR_ROWS; k++) {
            v[3 * k] = userids != NULL ? userids[i + k] : userid;
            v[3 * k + 1] = pos[i + k].conv;
            v[3 * k + 2] = pos[i + k].cseq;
        }
        err = run_ints(st, ST_DELIVERED_ROWS, v, 3 * CURSOR_ROWS);
    }
    for (; i < n && err == QC_OK; i++) {
        v[0] = userids != NULL ? userids[i] : userid;
        v[1] = pos[i].conv;
        v[2] = pos[i].cseq;
        err = run_ints(st, ST_DELIVERED_RAISE, v, 3);
        if (err == QC_OK && sqlite3_changes(st->db) == 0) /* missing, or already there */
            err = run_ints(st, ST_DELIVERED_UP, v, 3);
    }
    return err;
}

/* Raise n cursors in one transaction. */
static int advance_cursors(struct store *st, const int32_t *userids, int32_t userid,
                           const struct store_cursor *pos, size_t n)
{
    int err;

    if (n == 0)
        return QC_OK;
    if ((err = tx_begin(st)) != QC_OK)
        return err;
    return tx_end(st, raise_cursors(st, userids, userid, pos, n));
}

static int sqlite_delivered_advance(struct store *st, int32_t userid,
                                    const struct store_cursor *pos, size_t n)
{
    return advance_cursors(st, NULL, userid, pos, n);
}

static int sqlite_delivered_advance_many(struct store *st, const int32_t *userids,
                                         const struct store_cursor *pos, size_t n)
{
    return advance_cursors(st, userids, 0, pos, n);
}

/*
 * A storage round in one commit: the appends, then the cursors (a cursor
 * may name a message of this very batch).  Each commit costs a WAL write
 * of every page it touched and, with two workers, a turn at the file's
 * write lock: one per round instead of two halves both.
 */
static int sqlite_log_append_advance(struct store *st, struct store_logmsg *msgs, size_t n,
                                     const int32_t *userids, const struct store_cursor *pos,
                                     size_t m)
{
    struct log_batch b;
    int err;

    if (n == 0)
        return advance_cursors(st, userids, 0, pos, m);
    if ((err = log_batch_init(&b, msgs, n, "sqlite")) != QC_OK)
        return err;
    if ((err = tx_begin(st)) == QC_OK) {
        err = append_batch(st, &b);
        if (err == QC_OK)
            err = raise_cursors(st, userids, 0, pos, m);
        err = tx_end(st, err);
    }
    if (err != QC_OK) /* rolled back: the caller's messages are as they were */
        log_batch_unnumber(&b);
    log_batch_free(&b);
    return err;
}

static int sqlite_read_set(struct store *st, int32_t userid, int64_t conv, int64_t cseq,
                           int64_t *now)
{
    sqlite3_stmt *s = st->stmt[ST_READ_GET];
    int64_t v[3] = { userid, conv, cseq };
    int rc, err;

    *now = 0;
    if ((err = run_ints(st, ST_READ_UP, v, 3)) != QC_OK)
        return err;
    rc = sqlite3_bind_int64(s, 1, userid);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 2, conv);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *now = sqlite3_column_int64(s, 0);
    (void)sqlite3_reset(s);
    return rc == SQLITE_ROW ? QC_OK : statement_failed(st, ST_READ_GET, rc);
}

static int sqlite_conv_member(struct store *st, int32_t userid, int64_t conv, bool *member)
{
    sqlite3_stmt *s = st->stmt[ST_MEMBER_EXISTS];
    int rc;

    *member = false;
    if (conv > 0) {
        *member = store_conv_other(conv, userid) > 0;
        return QC_OK;
    }
    rc = sqlite3_bind_int64(s, 1, store_conv_groupid(conv));
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 2, userid);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    (void)sqlite3_reset(s);
    *member = rc == SQLITE_ROW;
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? QC_OK
                                                 : statement_failed(st, ST_MEMBER_EXISTS, rc);
}

static int join_conversation(struct store *st, int32_t userid, int64_t conv, int64_t start)
{
    int64_t v[3] = { userid, conv, start };

    return run_ints(st, ST_CURSOR_JOIN, v, 3);
}

static int sqlite_conv_join(struct store *st, int32_t userid, int64_t conv, int64_t start)
{
    return join_conversation(st, userid, conv, start);
}

/* Delete by a statement of integer parameters; *removed += rows. */
static int delete_rows(struct store *st, enum stmt_id id, const int64_t *v, int n, int *removed)
{
    int err = run_ints(st, id, v, n);

    if (err == QC_OK)
        *removed += sqlite3_changes(st->db);
    return err;
}

/*
 * The window of one retention call: the conversations after from, at most
 * STORE_PURGE_SCAN_CONVS of them.  *count: how many (0: none is left);
 * *last: the last of them.
 */
static int purge_window(struct store *st, int64_t from, int64_t *last, int64_t *count)
{
    sqlite3_stmt *s = st->stmt[ST_PURGE_WINDOW];
    int rc = sqlite3_bind_int64(s, 1, from);

    if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        *count = sqlite3_column_int64(s, 1);
        *last = sqlite3_column_int64(s, 0);
    }
    (void)sqlite3_reset(s);
    return rc == SQLITE_ROW ? QC_OK : statement_failed(st, ST_PURGE_WINDOW, rc);
}

/* Up to PURGE_FIND_ROWS (conversation, up to) pairs the find names in (from, last]; ?1 is cap. */
static int purge_find(struct store *st, int find, int cap, int64_t from, int64_t last,
                      int64_t found[][2], int *n)
{
    sqlite3_stmt *s = st->stmt[find];
    int rc = sqlite3_bind_int64(s, 1, cap);

    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 2, from);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 3, last);
    for (*n = 0; rc == SQLITE_OK || rc == SQLITE_ROW;) {
        if (*n == PURGE_FIND_ROWS || (rc = sqlite3_step(s)) != SQLITE_ROW)
            break;
        found[*n][0] = sqlite3_column_int64(s, 0);
        found[*n][1] = sqlite3_column_int64(s, 1);
        (*n)++;
    }
    (void)sqlite3_reset(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? QC_OK : statement_failed(st, find, rc);
}

/* Delete at most limit messages of conv up to cseq upto. */
static int purge_remove(struct store *st, int64_t conv, int64_t upto, int limit, int *removed)
{
    int64_t v[3] = { conv, upto, limit };

    return delete_rows(st, ST_PURGE_CONV, v, 3, removed);
}

static const struct purge_walk_ops sqlite_walk = { purge_window, purge_find, purge_remove };

/* End the deletes' transaction with err; nothing counts as removed unless it committed. */
static int commit_deletes(struct store *st, int err, int *removed)
{
    err = tx_end(st, err);
    if (err != QC_OK)
        *removed = 0;
    return err;
}

static int purge_step(struct store *st, int keep_days, int max_per_conv, int batch, int64_t *scan,
                      int *removed)
{
    int err = QC_OK;

    if (keep_days > 0) {
        int64_t v[2] = { now_ms() - keep_days * MS_PER_DAY, batch };

        err = delete_rows(st, ST_PURGE_AGE, v, 2, removed);
    }
    if (err == QC_OK && max_per_conv > 0)
        err = purge_walk(st, &sqlite_walk, ST_PURGE_FIND, max_per_conv, batch, scan, removed);
    else if (err == QC_OK)
        *scan = STORE_SCAN_START; /* no cap: nothing to walk */
    return err;
}

/* *scan takes the walk's new place only once its deletes committed. */
static int commit_scan(struct store *st, int err, int64_t walked, int64_t *scan, int *removed)
{
    err = commit_deletes(st, err, removed);
    if (err == QC_OK)
        *scan = walked;
    return err;
}

static int sqlite_log_purge(struct store *st, int keep_days, int max_per_conv, int batch,
                            int64_t *scan, int *removed)
{
    int64_t walked = *scan;
    int err;

    *removed = 0;
    if (batch < 1 || keep_days < 0 || max_per_conv < 0)
        return QC_EBADREQ;
    if (keep_days == 0 && max_per_conv == 0) {
        *scan = STORE_SCAN_START;
        return QC_OK;
    }
    if ((err = tx_begin(st)) != QC_OK)
        return err;
    err = purge_step(st, keep_days, max_per_conv, batch, &walked, removed);
    return commit_scan(st, err, walked, scan, removed);
}

static int sqlite_log_purge_delivered(struct store *st, int batch, int64_t *scan, int *removed)
{
    int64_t walked = *scan;
    int err;

    *removed = 0;
    if (batch < 1)
        return QC_EBADREQ;
    if ((err = tx_begin(st)) != QC_OK)
        return err;
    /* what every participant has had delivered */
    err = purge_walk(st, &sqlite_walk, ST_PURGE_DELIVERED_FIND, 0, batch, &walked, removed);
    return commit_scan(st, err, walked, scan, removed);
}

static int delete_conversation(struct store *st, int64_t conv, int batch, int *removed)
{
    int64_t v[2] = { conv, batch };
    int err = delete_rows(st, ST_CONV_DELETE_MSGS, v, 2, removed), none = 0;

    if (err != QC_OK || *removed == batch)
        return err;
    pair_cache_forget(&st->pairs, conv);
    if ((err = delete_rows(st, ST_CONV_DELETE_CURSORS, v, 1, &none)) != QC_OK)
        return err;
    return delete_rows(st, ST_CONV_DELETE_ROW, v, 1, &none);
}

static int sqlite_conv_delete(struct store *st, int64_t conv, int batch, int *removed)
{
    int err;

    *removed = 0;
    if (batch < 1)
        return QC_EBADREQ;
    if ((err = tx_begin(st)) != QC_OK)
        return err;
    return commit_deletes(st, delete_conversation(st, conv, batch, removed), removed);
}

/* The legacy take: the log's undelivered messages first (a migrated queue). */
struct legacy_sink {
    store_msg_cb cb;
    void *arg;
};

static void legacy_message(void *arg, const struct store_logmsg *m)
{
    struct legacy_sink *k = arg;

    k->cb(k->arg, m->body, m->len);
}

static int deliver_log(struct store *st, int32_t userid, store_msg_cb cb, void *arg)
{
    struct legacy_sink k = { cb, arg };
    int64_t v[1] = { userid };
    bool more = false;
    int err;

    err = sqlite_undelivered(st, userid, INT_MAX - 1, BYTES_NO_CAP, legacy_message, &k, &more);
    if (err != QC_OK)
        return err;
    return run_ints(st, ST_LOG_CATCH_UP, v, 1);
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
    int64_t pending = 0, logged = 0, lost = 0;
    int err;

    *dropped = 0;
    err = query_int(st, ST_OFFLINE_PENDING, userid, QC_ESTORAGE, &pending);
    if (err == QC_OK)
        err = query_int(st, ST_LOG_PENDING, userid, QC_ESTORAGE, &logged);
    if (err != QC_OK || (!pending && !logged))
        return err;
    if ((err = tx_begin(st)) != QC_OK)
        return err;
    err = deliver_log(st, userid, cb, arg);
    if (err == QC_OK)
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
    .schema_version = sqlite_schema_version,
    .log_append = sqlite_log_append,
    .conv_raise = sqlite_conv_raise,
    .conv_last_cseq = sqlite_conv_last_cseq,
    .history = sqlite_history,
    .conversations = sqlite_conversations,
    .undelivered = sqlite_undelivered,
    .delivered_advance = sqlite_delivered_advance,
    .delivered_advance_many = sqlite_delivered_advance_many,
    .log_append_advance = sqlite_log_append_advance,
    .read_set = sqlite_read_set,
    .conv_member = sqlite_conv_member,
    .conv_join = sqlite_conv_join,
    .log_purge = sqlite_log_purge,
    .log_purge_delivered = sqlite_log_purge_delivered,
    .conv_delete = sqlite_conv_delete,
};
