/*
 * mysql.c - the MariaDB / MySQL storage driver (storage.driver = mysql).
 *
 * MariaDB Connector/C (the libmysqlclient API).  One connection per handle,
 * opened by open() after fork and used from one thread.  Every statement is
 * a fixed literal prepared with mysql_stmt_prepare (lazily, on first use on
 * a connection) and bound with parameters: no SQL text is ever built from
 * data.  The connection speaks utf8mb4 and sets, at every connect, a strict
 * sql_mode and short lock waits.
 *
 * Failures.  Connect, read and write timeouts of a few seconds bound what a
 * dead or hung server costs a worker.  When the server went away (restart,
 * KILL, timeout) the operation reconnects, prepares its statements again
 * and is retried once; a deadlock is retried a few times.  Otherwise the
 * caller gets QC_ESTORAGE and later calls try to reconnect again, at most
 * once per RECONNECT_INTERVAL_MS, failing at once in between: a database
 * that is down costs each request little.
 *
 * Retrying is safe because every write of more than one idempotent row runs
 * in an explicit transaction: a connection lost before COMMIT was sent means
 * the server rolled everything back.  A connection lost during COMMIT leaves
 * the outcome unknown; that is reported (QC_ESTORAGE), never retried, except
 * in offline_take, which then hands the messages over anyway (the worst case
 * is a message delivered twice, never one lost).
 *
 * Results are buffered in the client (mysql_stmt_store_result) before any
 * callback runs, so a callback may call other store functions (group_members
 * from within user_groups), but not the function that called it.  While a
 * callback runs the connection is never replaced: a nested call that loses
 * it fails, and the next call reconnects.
 *
 * offline_store batches: OFFLINE_BATCH recipients per INSERT ... SELECT that
 * joins the recipients against User (so an unknown recipient is noticed in
 * the same statement), the message text sent once per batch; the last,
 * partial batch pads the unused placeholders with NULL, which match nobody.
 * (MariaDB's array binding would send the text once per row and works only
 * against MariaDB servers.)  The max_offline_messages cap costs one more
 * statement per batch, plus two per recipient over the cap.
 *
 * The schema is versioned: open() and init_schema() apply the embedded
 * migrations (sql/mysql/NNN-*.sql) newer than SchemaVersion, statement by
 * statement, under GET_LOCK('qchat_schema') because DDL commits by itself.
 * log_append is one transaction of few round trips (each costs the server
 * and this process a context switch): APPEND_BATCH messages per multi-row
 * INSERT IGNORE, then CONV_BATCH conversations per multi-row upsert of
 * their last cseq, per INSERT IGNORE of a pair's two cursors (only for pairs
 * this connection has not seen committed: pair_cache.h) and per UPDATE of
 * the senders' own cursors (a join with the runs as a derived table); a
 * batch of one message to a known pair takes BEGIN, three statements and
 * COMMIT, a batch of 32 in 32 conversations the same.  Rows go in conv
 * order (so two writers never wait for each other in a cycle).  Messages
 * given with cseq 0 are numbered first, in the same transaction and in conv
 * order: an upsert raises Conversation.last_cseq by their number (which
 * locks the row until the commit, so writers of other nodes queue there);
 * they take the numbers below the new value in batch order.  One
 * conversation's upsert returns it as its insert id; CONV_BATCH
 * conversations go in one multi-row upsert read back by one SELECT
 * (two round trips instead of one per conversation: a cross-node
 * ping-pong batch has one message in each of hundreds of conversations);
 * the upsert sets the last cseq and time, so a conversation whose messages
 * were all numbered is not raised again after its inserts.  A retry after a
 * deadlock numbers them again from 0.  delivered_advance raises CURSOR_BATCH
 * cursors per multi-row upsert (idempotent: a retry raises them again).
 * undelivered (the login's messages) is planned here from the keys and the
 * picked bodies fetched after, rather than ordered by window functions in
 * the server (see mysql_store_undelivered).  No statement joins Message
 * with a bound taken from another table or a derived table of parameters
 * (m.cseq > c.delivered_cseq): MariaDB reads that as a ref on conv alone,
 * from the conversation's first message.  Bounds are placeholders, one
 * true range of (conv, cseq) per conversation, or ORDER BY cseq LIMIT walks.
 *
 * The password comes from storage.password_file, read at open (the file
 * must not be accessible by group or others).  It stays in the handle only
 * for reconnecting, is never logged, and is wiped at close.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mysql.h>
#include <errmsg.h>
#include <mysqld_error.h>

#include "common/clock.h"
#include "common/log.h"
#include "store/store.h"
#include "log_batch.h"
#include "pair_cache.h"
#include "purge_walk.h"
#include "social_db.h"

#define CONNECT_TIMEOUT_SEC   2 /* TCP connect and handshake */
#define READ_TIMEOUT_SEC      4 /* one wait for the server's answer */
#define WRITE_TIMEOUT_SEC     4
#define LOCK_WAIT_SEC         2    /* row and metadata locks; below READ_TIMEOUT_SEC */
#define RECONNECT_INTERVAL_MS 1000 /* at most one connection attempt per interval */
#define DEADLOCK_RETRIES      3
#define PASSWORD_MAX          512 /* longest password file accepted */
#define TEXT_INITIAL          256 /* first size of a text column buffer */
#define OFFLINE_BATCH         64  /* recipients per INSERT (see ID_ROWS_64) */
#define APPEND_BATCH          32  /* messages per multi-row INSERT (see LOG_ROWS_32) */
#define CURSOR_BATCH          64  /* cursors per multi-row upsert (see CURSOR_ROWS_64) */
#define CONV_BATCH            32  /* conversations per multi-row statement of log_append */
#define LOG_COLS              6   /* conv, cseq, mid, sender, ts, body */
#define MAX_PARAMS            (APPEND_BATCH * LOG_COLS)
#define MAX_COLS              7
#define BODY_CONVS            32 /* conversations per undelivered bodies query (BODY_ROWS_32) */
#define SOCIAL_STMTS          96 /* statements of mysql_social.c kept per connection */
#define MS_PER_DAY            86400000LL
#define CSEQ_NONE             INT64_MAX /* "no before": above every cseq */
#define CHARSET               "utf8mb4"
#define TARGET_MAX            (PATH_MAX + 2 * QC_CONFIG_STR_MAX + 16)

_Static_assert(CURSOR_BATCH * 3 <= MAX_PARAMS, "a cursor batch fits in struct params");
_Static_assert(CONV_BATCH * 4 <= MAX_PARAMS, "a conversation batch fits in struct params");

#define STR_(x) #x
#define STR(x)  STR_(x)

/* Run at every connect, before any statement. */
#define SESSION_SETUP                                                    \
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'," \
    " innodb_lock_wait_timeout = " STR(LOCK_WAIT_SEC) ","                \
                                                      " lock_wait_timeout = " STR(LOCK_WAIT_SEC)

/* Internal outcomes, never returned to callers (run() maps them to QC_ESTORAGE). */
enum {
    E_LOST = -1,          /* the connection is gone: reconnect, retry once */
    E_DEADLOCK = -2,      /* the server rolled the transaction back: retry */
    E_DUP = -3,           /* duplicate key: the caller names the conflict */
    E_COMMIT_UNKNOWN = -4 /* lost during COMMIT: it may or may not have happened */
};

/* The version table: the one table no migration file creates. */
#define SCHEMA_VERSION_DDL                                                        \
    "CREATE TABLE IF NOT EXISTS SchemaVersion (version INT NOT NULL PRIMARY KEY," \
    " name VARCHAR(100) NOT NULL,"                                                \
    " applied TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP"                       \
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
#define SCHEMA_LOCK_SEC 60 /* a worker waits this long for another's migration */

/* OFFLINE_BATCH placeholders, as a derived table of ids and as a list. */
#define ID_ROW    " UNION ALL SELECT ?"
#define ID_ROWS_8 ID_ROW ID_ROW ID_ROW ID_ROW ID_ROW ID_ROW ID_ROW ID_ROW
#define ID_ROWS_64                                                                        \
    "SELECT ? AS id" ID_ROW ID_ROW ID_ROW ID_ROW ID_ROW ID_ROW ID_ROW ID_ROWS_8 ID_ROWS_8 \
        ID_ROWS_8 ID_ROWS_8 ID_ROWS_8 ID_ROWS_8 ID_ROWS_8
#define LOG_ROW    "(?, ?, ?, ?, ?, ?)"
#define LOG_ROWS_4 LOG_ROW ", " LOG_ROW ", " LOG_ROW ", " LOG_ROW
#define LOG_ROWS_32                                                                            \
    LOG_ROWS_4 ", " LOG_ROWS_4 ", " LOG_ROWS_4 ", " LOG_ROWS_4 ", " LOG_ROWS_4 ", " LOG_ROWS_4 \
               ", " LOG_ROWS_4 ", " LOG_ROWS_4
#define CURSOR_ROW "(?, ?, ?)"
#define CURSOR_ROWS_8                                                                          \
    CURSOR_ROW ", " CURSOR_ROW ", " CURSOR_ROW ", " CURSOR_ROW ", " CURSOR_ROW ", " CURSOR_ROW \
               ", " CURSOR_ROW ", " CURSOR_ROW
#define CURSOR_ROWS_64                                                                        \
    CURSOR_ROWS_8 ", " CURSOR_ROWS_8 ", " CURSOR_ROWS_8 ", " CURSOR_ROWS_8 ", " CURSOR_ROWS_8 \
                  ", " CURSOR_ROWS_8 ", " CURSOR_ROWS_8 ", " CURSOR_ROWS_8
/* CONV_BATCH rows of (conv, last_cseq, last_ts), of two cursors, of sender runs. */
#define CONV_ROW     "(?, ?, ?)"
#define CONV_ROWS_8  CURSOR_ROWS_8
#define CONV_ROWS_32 CONV_ROWS_8 ", " CONV_ROWS_8 ", " CONV_ROWS_8 ", " CONV_ROWS_8
#define PAIR_ROW     "(?, ?), (?, ?)"
#define PAIR_ROWS_8                                                                              \
    PAIR_ROW ", " PAIR_ROW ", " PAIR_ROW ", " PAIR_ROW ", " PAIR_ROW ", " PAIR_ROW ", " PAIR_ROW \
             ", " PAIR_ROW
#define PAIR_ROWS_32 PAIR_ROWS_8 ", " PAIR_ROWS_8 ", " PAIR_ROWS_8 ", " PAIR_ROWS_8
#define RUN_ROW      " UNION ALL SELECT ?, ?, ?, ?"
#define RUN_ROWS_8   RUN_ROW RUN_ROW RUN_ROW RUN_ROW RUN_ROW RUN_ROW RUN_ROW RUN_ROW
#define RUN_ROWS_32                                                                           \
    "SELECT ? AS userid, ? AS conv, ? AS lo, ? AS hi" RUN_ROW RUN_ROW RUN_ROW RUN_ROW RUN_ROW \
        RUN_ROW RUN_ROW RUN_ROWS_8 RUN_ROWS_8 RUN_ROWS_8
/*
 * BODY_CONVS cseq ranges of Message with their bounds as placeholders, so
 * that each is a true range of the primary key (conv, cseq): joined
 * against a table of bounds, MariaDB reads such a range as a ref on conv
 * alone, from the conversation's first message.  Unused ones are NULL and
 * match nothing.  (conv, lo, hi]:
 */
#define BODY_RANGE "(conv = ? AND cseq > ? AND cseq <= ?)"
#define BODY_RANGES_8                                                                  \
    BODY_RANGE " OR " BODY_RANGE " OR " BODY_RANGE " OR " BODY_RANGE " OR " BODY_RANGE \
               " OR " BODY_RANGE " OR " BODY_RANGE " OR " BODY_RANGE
#define BODY_RANGES_32 BODY_RANGES_8 " OR " BODY_RANGES_8 " OR " BODY_RANGES_8 " OR " BODY_RANGES_8
/* (conv, lo, end of the conversation): */
#define AFTER_RANGE "(conv = ? AND cseq > ?)"
#define AFTER_RANGES_8                                                                      \
    AFTER_RANGE " OR " AFTER_RANGE " OR " AFTER_RANGE " OR " AFTER_RANGE " OR " AFTER_RANGE \
                " OR " AFTER_RANGE " OR " AFTER_RANGE " OR " AFTER_RANGE
#define AFTER_RANGES_32 \
    AFTER_RANGES_8 " OR " AFTER_RANGES_8 " OR " AFTER_RANGES_8 " OR " AFTER_RANGES_8
/* The first ? keys after cseq ? of conv ?, a walk from the cursor on: */
#define KEYS_AFTER                                                                      \
    "(SELECT conv, cseq, mid, sender, ts, LENGTH(body) FROM Message WHERE conv = ? AND" \
    " cseq > ? ORDER BY cseq LIMIT ?)"
#define KEYS_AFTER_8                                                                      \
    KEYS_AFTER " UNION ALL " KEYS_AFTER " UNION ALL " KEYS_AFTER " UNION ALL " KEYS_AFTER \
               " UNION ALL " KEYS_AFTER " UNION ALL " KEYS_AFTER " UNION ALL " KEYS_AFTER \
               " UNION ALL " KEYS_AFTER
#define KEYS_AFTER_32 \
    KEYS_AFTER_8 " UNION ALL " KEYS_AFTER_8 " UNION ALL " KEYS_AFTER_8 " UNION ALL " KEYS_AFTER_8
#define LIST_8  "?, ?, ?, ?, ?, ?, ?, ?"
#define LIST_32 LIST_8 ", " LIST_8 ", " LIST_8 ", " LIST_8
#define LIST_64 \
    LIST_8 ", " LIST_8 ", " LIST_8 ", " LIST_8 ", " LIST_8 ", " LIST_8 ", " LIST_8 ", " LIST_8

/*
 * The newest message of others than user in conv before cseq lo (0: none),
 * for "no stored message of others lies between the cursor and lo", the
 * sender-seen test.  Asked that way because MariaDB reads a correlated range
 * (m.cseq > the outer row's cursor) as a ref on conv alone, i.e. the whole
 * conversation from its first message, on every append: 53 rows read per
 * message after 10 s of ping-pong, 79 after 20 s.  ORDER BY cseq DESC
 * LIMIT 1 walks back from lo instead, over the sender's own run only.
 */
#define NEWEST_OTHER_BEFORE(conv, lo, user)                                                  \
    "COALESCE((SELECT m.cseq FROM Message m WHERE m.conv = " conv " AND m.cseq < " lo " AND" \
    " m.sender <> " user " ORDER BY m.cseq DESC LIMIT 1), 0)"

/*
 * The oldest stored cseq of conv (NULL: none), for the same reason read as
 * a walk of one row: a correlated MIN(cseq) or EXISTS (... cseq <= bound)
 * reads the whole conversation when its oldest message is above the bound.
 */
#define OLDEST_STORED(conv) \
    "(SELECT m.cseq FROM Message m WHERE m.conv = " conv " ORDER BY m.cseq LIMIT 1)"

enum stmt_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_PING,
    ST_USER_INSERT,
    ST_USER_GET,
    ST_USER_SET_PASSWORD,
    ST_USERS_FOUND,
    ST_USER_EXISTS,
    ST_FRIEND_INSERT_BOTH,
    ST_FRIEND_COUNT,
    ST_FRIEND_LIST,
    ST_GROUP_INSERT,
    ST_GROUP_EXISTS,
    ST_MEMBER_INSERT,
    ST_MEMBER_COUNT,
    ST_MEMBER_LIST,
    ST_USER_GROUPS,
    ST_OFFLINE_INSERT_BATCH,
    ST_OFFLINE_OVER_CAP,
    ST_OFFLINE_TRIM,
    ST_OFFLINE_PENDING,
    ST_OFFLINE_LIST,
    ST_OFFLINE_DELETE,
    ST_OFFLINE_COUNT,
    ST_DROPPED_ADD,
    ST_DROPPED_GET,
    ST_DROPPED_CLEAR,
    ST_SCHEMA_LOCK,
    ST_SCHEMA_UNLOCK,
    ST_SCHEMA_VERSION,
    ST_SCHEMA_TABLE,
    ST_VERSION_ADD,
    ST_LOG_INSERT_1,
    ST_LOG_INSERT_N,
    ST_CONV_BUMP,
    ST_CONV_BUMP_N,
    ST_CONV_RESERVE,
    ST_CONV_RESERVE_N,
    ST_CONV_LAST_N,
    ST_CURSOR_INIT_PAIR,
    ST_CURSOR_INIT_PAIR_N,
    ST_SENDER_SEEN,
    ST_SENDER_SEEN_N,
    ST_CONV_LAST,
    ST_HISTORY_NEWEST,
    ST_HISTORY_OLDEST,
    ST_CONVERSATIONS,
    ST_UNREAD_COUNTS,
    ST_UNDELIVERED_CURSORS,
    ST_UNDELIVERED_KEYS,
    ST_UNDELIVERED_BODIES,
    ST_DELIVERED_UP,
    ST_DELIVERED_UP_N,
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
    unsigned params;  /* placeholders (checked after prepare) */
    const char *cols; /* result columns, 'i' integer, 't' text; NULL: none */
};

/*
 * INSERT IGNORE skips only duplicate keys here: every other value is a
 * number or a fixed role name.  Row counts are "found rows"
 * (CLIENT_FOUND_ROWS), so an UPDATE to the same value still counts.
 */
static const struct stmt_def stmt_defs[ST_COUNT] = {
    [ST_BEGIN] = { "begin", "START TRANSACTION", 0, NULL },
    [ST_COMMIT] = { "commit", "COMMIT", 0, NULL },
    [ST_ROLLBACK] = { "rollback", "ROLLBACK", 0, NULL },
    [ST_PING] = { "ping", "SELECT 1", 0, "i" },
    [ST_USER_INSERT] = { "user insert", "INSERT INTO User (name, password) VALUES (?, ?)", 2,
                         NULL },
    [ST_USER_GET] = { "user get", "SELECT name, password FROM User WHERE id = ?", 1, "tt" },
    [ST_USER_SET_PASSWORD] = { "user set password", "UPDATE User SET password = ? WHERE id = ?", 2,
                               NULL },
    [ST_USERS_FOUND] = { "users found", "SELECT count(*) FROM User WHERE id IN (?, ?)", 2, "i" },
    [ST_USER_EXISTS] = { "user exists", "SELECT 1 FROM User WHERE id = ?", 1, "i" },
    [ST_FRIEND_INSERT_BOTH] = { "friend insert",
                                "INSERT IGNORE INTO Friend (userid, friendid) VALUES (?, ?), (?, ?)",
                                4, NULL },
    [ST_FRIEND_COUNT] = { "friend count", "SELECT count(*) FROM Friend WHERE userid = ?", 1, "i" },
    [ST_FRIEND_LIST] = { "friend list",
                         "SELECT u.id, u.name FROM Friend f JOIN User u ON u.id = f.friendid"
                         " WHERE f.userid = ? ORDER BY f.friendid",
                         1, "it" },
    [ST_GROUP_INSERT] = { "group insert",
                          "INSERT INTO AllGroup (groupname, groupdesc) VALUES (?, ?)", 2, NULL },
    [ST_GROUP_EXISTS] = { "group exists", "SELECT 1 FROM AllGroup WHERE groupid = ?", 1, "i" },
    /* Nothing is inserted when the group or the user does not exist. */
    [ST_MEMBER_INSERT] = { "member insert",
                           "INSERT IGNORE INTO GroupUser (groupid, userid, grouprole)"
                           " SELECT g.groupid, u.id, ? FROM AllGroup g JOIN User u ON u.id = ?"
                           " WHERE g.groupid = ?",
                           3, NULL },
    [ST_MEMBER_COUNT] = { "member count",
                          "SELECT (SELECT count(*) FROM GroupUser WHERE groupid = ?)"
                          " FROM AllGroup WHERE groupid = ?",
                          2, "i" },
    [ST_MEMBER_LIST] = { "member list",
                         "SELECT u.id, u.name, m.grouprole FROM GroupUser m JOIN User u ON u.id = m.userid"
                         " WHERE m.groupid = ? ORDER BY m.userid",
                         1, "itt" },
    [ST_USER_GROUPS] = { "user groups",
                         "SELECT g.groupid, g.groupname, g.groupdesc FROM GroupUser m"
                         " JOIN AllGroup g ON g.groupid = m.groupid WHERE m.userid = ? ORDER BY m.groupid",
                         1, "itt" },
    /* One row per listed recipient that exists (a recipient listed twice: two rows). */
    [ST_OFFLINE_INSERT_BATCH] = { "offline insert",
                                  "INSERT INTO OfflineMessage (userid, message)"
                                  " SELECT u.id, ? FROM (" ID_ROWS_64
                                  ") AS r JOIN User u ON u.id = r.id",
                                  OFFLINE_BATCH + 1, NULL },
    [ST_OFFLINE_OVER_CAP] = { "offline over cap",
                              "SELECT userid, count(*) FROM OfflineMessage WHERE userid IN (" LIST_64
                              ")"
                              " GROUP BY userid HAVING count(*) > ?",
                              OFFLINE_BATCH + 1, "ii" },
    /* The ? oldest of a user's queue. */
    [ST_OFFLINE_TRIM] = { "offline trim",
                          "DELETE FROM OfflineMessage WHERE userid = ? ORDER BY id LIMIT ?", 2,
                          NULL },
    [ST_OFFLINE_PENDING] = { "offline pending",
                             "SELECT EXISTS (SELECT 1 FROM OfflineMessage WHERE userid = ?)"
                             " OR EXISTS (SELECT 1 FROM OfflineDropped WHERE userid = ?)",
                             2, "i" },
    [ST_OFFLINE_LIST] = { "offline list",
                          "SELECT id, message FROM OfflineMessage WHERE userid = ? ORDER BY id FOR UPDATE",
                          1, "it" },
    [ST_OFFLINE_DELETE] = { "offline delete",
                            "DELETE FROM OfflineMessage WHERE userid = ? AND id <= ?", 2, NULL },
    [ST_OFFLINE_COUNT] = { "offline count", "SELECT count(*) FROM OfflineMessage WHERE userid = ?",
                           1, "i" },
    [ST_DROPPED_ADD] = { "dropped add",
                         "INSERT INTO OfflineDropped (userid, dropped) VALUES (?, ?)"
                         " ON DUPLICATE KEY UPDATE dropped = dropped + ?",
                         3, NULL },
    [ST_DROPPED_GET] = { "dropped get",
                         "SELECT dropped FROM OfflineDropped WHERE userid = ? FOR UPDATE", 1, "i" },
    [ST_DROPPED_CLEAR] = { "dropped clear", "DELETE FROM OfflineDropped WHERE userid = ?", 1,
                           NULL },
    /* ---- schema versions ---- */
    [ST_SCHEMA_LOCK] = { "schema lock", "SELECT GET_LOCK('qchat_schema', " STR(SCHEMA_LOCK_SEC) ")",
                         0, "i" },
    [ST_SCHEMA_UNLOCK] = { "schema unlock", "SELECT RELEASE_LOCK('qchat_schema')", 0, "i" },
    [ST_SCHEMA_VERSION] = { "schema version", "SELECT COALESCE(MAX(version), 0) FROM SchemaVersion",
                            0, "i" },
    [ST_SCHEMA_TABLE] = { "schema table",
                          "SELECT COUNT(*) FROM information_schema.tables"
                          " WHERE table_schema = DATABASE() AND table_name = 'SchemaVersion'",
                          0, "i" },
    [ST_VERSION_ADD] = { "schema version add",
                         "INSERT INTO SchemaVersion (version, name) VALUES (?, ?)", 2, NULL },
    /* ---- the log ---- */
    [ST_LOG_INSERT_1] = { "log insert",
                          "INSERT IGNORE INTO Message (conv, cseq, mid, sender, ts, body)"
                          " VALUES " LOG_ROW,
                          LOG_COLS, NULL },
    [ST_LOG_INSERT_N] = { "log insert batch",
                          "INSERT IGNORE INTO Message (conv, cseq, mid, sender, ts, body)"
                          " VALUES " LOG_ROWS_32,
                          APPEND_BATCH *LOG_COLS, NULL },
    /* Assignments run left to right: last_ts sees the old last_cseq. */
    [ST_CONV_BUMP] = { "conversation bump",
                       "INSERT INTO Conversation (conv, last_cseq, last_ts) VALUES (?, ?, ?)"
                       " ON DUPLICATE KEY UPDATE"
                       " last_ts = IF(VALUES(last_cseq) > last_cseq, VALUES(last_ts), last_ts),"
                       " last_cseq = GREATEST(last_cseq, VALUES(last_cseq))",
                       3, NULL },
    /* CONV_BATCH of the above (a partial batch repeats its last row: no change twice). */
    [ST_CONV_BUMP_N] = { "conversation bump batch",
                         "INSERT INTO Conversation (conv, last_cseq, last_ts) VALUES " CONV_ROWS_32
                         " ON DUPLICATE KEY UPDATE"
                         " last_ts = IF(VALUES(last_cseq) > last_cseq, VALUES(last_ts), last_ts),"
                         " last_cseq = GREATEST(last_cseq, VALUES(last_cseq))",
                         CONV_BATCH * 3, NULL },
    /*
     * Reserve ? cseqs after the last one: the row stays locked until the
     * commit.  The new last cseq comes back as the statement's insert id
     * (LAST_INSERT_ID(expr); the table has no AUTO_INCREMENT column), so
     * reading it costs no second round trip.
     */
    [ST_CONV_RESERVE] = { "conversation reserve",
                          "INSERT INTO Conversation (conv, last_cseq, last_ts)"
                          " VALUES (?, LAST_INSERT_ID(?), ?) ON DUPLICATE KEY UPDATE"
                          " last_cseq = LAST_INSERT_ID(last_cseq + VALUES(last_cseq)),"
                          " last_ts = VALUES(last_ts)",
                          3, NULL },
    /*
     * The same for CONV_BATCH conversations at once (a padding row repeats
     * the last one and reserves 0); the new last cseqs are read back by
     * ST_CONV_LAST_N.  That is a plain read: a transaction sees its own
     * writes, and the upsert's locks keep every other writer off these rows
     * (a locking read of an IN list may lock the range between, rows other
     * nodes hold: the two nodes then wait for each other).
     */
    [ST_CONV_RESERVE_N] = { "conversation reserve batch",
                            "INSERT INTO Conversation (conv, last_cseq, last_ts)"
                            " VALUES " CONV_ROWS_32 " ON DUPLICATE KEY UPDATE"
                            " last_cseq = last_cseq + VALUES(last_cseq),"
                            " last_ts = VALUES(last_ts)",
                            CONV_BATCH * 3, NULL },
    [ST_CONV_LAST_N] = { "conversation last batch",
                         "SELECT conv, last_cseq FROM Conversation WHERE conv IN (" LIST_32 ")",
                         CONV_BATCH, "ii" },
    [ST_CURSOR_INIT_PAIR] = { "cursor init",
                              "INSERT IGNORE INTO ConvCursor (userid, conv) VALUES (?, ?), (?, ?)",
                              4, NULL },
    [ST_CURSOR_INIT_PAIR_N] = { "cursor init batch",
                                "INSERT IGNORE INTO ConvCursor (userid, conv) VALUES " PAIR_ROWS_32,
                                CONV_BATCH * 4, NULL },
    /* As sqlite.c: with the log off no stored message of others lies between. */
    [ST_SENDER_SEEN] = { "sender seen",
                         "UPDATE ConvCursor SET delivered_cseq = ? WHERE userid = ? AND conv = ?"
                         " AND delivered_cseq < ? AND (delivered_cseq >= ? - 1"
                         " OR " NEWEST_OTHER_BEFORE("?", "?", "?") " <= ConvCursor.delivered_cseq)",
                         8, NULL },
    /*
     * CONV_BATCH sender runs (userid, conv, first, last) as a derived
     * table; unused rows are NULL and match nothing.
     */
    [ST_SENDER_SEEN_N] = { "sender seen batch",
                           "UPDATE ConvCursor c JOIN (" RUN_ROWS_32 ") AS r"
                           " ON c.userid = r.userid AND c.conv = r.conv"
                           " SET c.delivered_cseq = r.hi"
                           " WHERE c.delivered_cseq < r.hi AND (c.delivered_cseq >= r.lo - 1"
                           " OR " NEWEST_OTHER_BEFORE("r.conv", "r.lo",
                                                      "r.userid") " <= c.delivered_cseq)",
                           CONV_BATCH * 4, NULL },
    [ST_CONV_LAST] = { "conversation last", "SELECT last_cseq FROM Conversation WHERE conv = ?", 1,
                       "i" },
    /* The newest ? + 1 between the bounds, handed out ascending, with their count. */
    [ST_HISTORY_NEWEST] = { "history newest",
                            "SELECT conv, cseq, mid, sender, ts, body, COUNT(*) OVER () FROM"
                            " (SELECT conv, cseq, mid, sender, ts, body FROM Message"
                            " WHERE conv = ? AND cseq < ? AND cseq > ? ORDER BY cseq DESC LIMIT ?)"
                            " AS p ORDER BY cseq",
                            4, "iiiiiti" },
    [ST_HISTORY_OLDEST] = { "history oldest",
                            "SELECT conv, cseq, mid, sender, ts, body, COUNT(*) OVER () FROM"
                            " (SELECT conv, cseq, mid, sender, ts, body FROM Message"
                            " WHERE conv = ? AND cseq < ? AND cseq > ? ORDER BY cseq LIMIT ?)"
                            " AS p ORDER BY cseq",
                            4, "iiiiiti" },
    /* See the SQLite driver: pairs from cursors, groups from memberships. */
    [ST_CONVERSATIONS] = { "conversations",
                           "SELECT x.conv, x.last_cseq, x.read_cseq, x.last_ts, x.name,"
                           " (SELECT body FROM Message m WHERE m.conv = x.conv AND m.cseq = x.last_cseq)"
                           " FROM ((SELECT c.conv AS conv, v.last_cseq AS last_cseq,"
                           " c.read_cseq AS read_cseq, v.last_ts AS last_ts, u.name AS name"
                           " FROM ConvCursor c JOIN Conversation v ON v.conv = c.conv"
                           " JOIN User u ON u.id = IF((c.conv >> 32) = ?,"
                           " c.conv & 4294967295, c.conv >> 32)"
                           " WHERE c.userid = ? AND c.conv > 0)"
                           " UNION ALL"
                           " (SELECT -m.groupid, COALESCE(v.last_cseq, 0), COALESCE(c.read_cseq, 0),"
                           " COALESCE(v.last_ts, 0), g.groupname"
                           " FROM GroupUser m JOIN AllGroup g ON g.groupid = m.groupid"
                           " LEFT JOIN Conversation v ON v.conv = -m.groupid"
                           " LEFT JOIN ConvCursor c ON c.userid = ? AND c.conv = -m.groupid"
                           " WHERE m.userid = ?) ORDER BY last_ts DESC, conv LIMIT ?) AS x"
                           " ORDER BY x.last_ts DESC, x.conv",
                           5, "iiiitt" },
    /*
     * The unread (messages of others after the read cursor) of CONV_BATCH
     * conversations, counted apart: as a correlated subquery of the list
     * above MariaDB counted from each conversation's first message.
     */
    [ST_UNREAD_COUNTS] = { "unread counts",
                           "SELECT conv, COUNT(*) FROM Message WHERE (" AFTER_RANGES_32 ")"
                           " AND sender <> ? GROUP BY conv",
                           CONV_BATCH * 2 + 1, "ii" },
    /*
     * The login's undelivered messages in cheap steps, each a walk from a
     * cursor on (see mysql_store_undelivered): the conversations with
     * something after the user's delivered cursor; the first ? keys after
     * the cursor of BODY_CONVS of them; the bodies of what was picked, per
     * conversation a cseq range.  (A single query joining the cursors to
     * Message, with window functions for the order, cost MariaDB 40 ms per
     * 1,000 rows, and read every such conversation from its first message.)
     */
    [ST_UNDELIVERED_CURSORS] = { "undelivered cursors",
                                 "SELECT c.conv, c.delivered_cseq FROM ConvCursor c"
                                 " JOIN Conversation v ON v.conv = c.conv"
                                 " AND v.last_cseq > c.delivered_cseq"
                                 " WHERE c.userid = ? AND (c.conv > 0 OR EXISTS (SELECT 1"
                                 " FROM GroupUser g WHERE g.groupid = -c.conv AND g.userid = ?))"
                                 " ORDER BY c.conv",
                                 2, "ii" },
    /* BODY_CONVS (conv, cursor, count); unused ones NULL, NULL, 0. */
    [ST_UNDELIVERED_KEYS] = { "undelivered keys", KEYS_AFTER_32, BODY_CONVS * 3, "iiiiii" },
    /* BODY_CONVS ranges (conv, lo, hi]. */
    [ST_UNDELIVERED_BODIES] = { "undelivered bodies",
                                "SELECT conv, cseq, body FROM Message WHERE (" BODY_RANGES_32 ")"
                                " AND sender <> ?",
                                BODY_CONVS * 3 + 1, "iit" },
    [ST_DELIVERED_UP] = { "delivered advance",
                          "INSERT INTO ConvCursor (userid, conv, delivered_cseq) VALUES " CURSOR_ROW
                          " ON DUPLICATE KEY UPDATE"
                          " delivered_cseq = GREATEST(delivered_cseq, VALUES(delivered_cseq))",
                          3, NULL },
    [ST_DELIVERED_UP_N] = { "delivered advance batch",
                            "INSERT INTO ConvCursor (userid, conv, delivered_cseq) VALUES " CURSOR_ROWS_64
                            " ON DUPLICATE KEY UPDATE"
                            " delivered_cseq = GREATEST(delivered_cseq, VALUES(delivered_cseq))",
                            CURSOR_BATCH * 3, NULL },
    [ST_READ_UP] = { "read set",
                     "INSERT INTO ConvCursor (userid, conv, read_cseq) SELECT ?, ?,"
                     " GREATEST(0, LEAST(?, COALESCE((SELECT last_cseq FROM Conversation"
                     " WHERE conv = ?), 0)))"
                     " ON DUPLICATE KEY UPDATE read_cseq = GREATEST(read_cseq, VALUES(read_cseq))",
                     4, NULL },
    [ST_READ_GET] = { "read get", "SELECT read_cseq FROM ConvCursor WHERE userid = ? AND conv = ?",
                      2, "i" },
    [ST_MEMBER_EXISTS] = { "member exists",
                           "SELECT 1 FROM GroupUser WHERE groupid = ? AND userid = ?", 2, "i" },
    [ST_CURSOR_JOIN] = { "cursor join",
                         "INSERT INTO ConvCursor (userid, conv, delivered_cseq, read_cseq)"
                         " SELECT ?, ?, s, s FROM (SELECT GREATEST(?, COALESCE((SELECT last_cseq"
                         " FROM Conversation WHERE conv = ?), 0)) AS s) AS j"
                         " ON DUPLICATE KEY UPDATE"
                         " delivered_cseq = GREATEST(delivered_cseq, VALUES(delivered_cseq)),"
                         " read_cseq = GREATEST(read_cseq, VALUES(read_cseq))",
                         4, NULL },
    [ST_PURGE_AGE] = { "purge by age", "DELETE FROM Message WHERE ts < ? ORDER BY ts LIMIT ?", 2,
                       NULL },
    /* The last of the next STORE_PURGE_SCAN_CONVS conversations after ?, and how many. */
    [ST_PURGE_WINDOW] = { "purge window",
                          "SELECT COALESCE(MAX(conv), 0), COUNT(*) FROM (SELECT conv"
                          " FROM Conversation WHERE conv > ? ORDER BY conv"
                          " LIMIT " STR(STORE_PURGE_SCAN_CONVS) ") AS w",
                          1, "ii" },
    /*
     * The finds name conversations in (from, last], in order: the window of
     * one retention call.
     */
    [ST_PURGE_FIND] = { "purge find",
                        "SELECT conv, last_cseq - ? FROM Conversation v"
                        " WHERE v.conv > ? AND v.conv <= ? AND last_cseq > ?"
                        " AND " OLDEST_STORED("v.conv") " <= v.last_cseq - ?"
                                                        " ORDER BY conv LIMIT " STR(
                                                            PURGE_FIND_ROWS),
                        5, "ii" },
    [ST_PURGE_CONV] = { "purge conversation",
                        "DELETE FROM Message WHERE conv = ? AND cseq <= ? ORDER BY cseq LIMIT ?", 3,
                        NULL },
    /*
     * Conversations whose oldest stored message every participant has had:
     * the cursors of each through key conv (004-purge.sql).
     */
    [ST_PURGE_DELIVERED_FIND] = { "purge delivered find",
                                  "SELECT conv, upto FROM (SELECT v.conv AS conv,"
                                  " (SELECT MIN(c.delivered_cseq) FROM ConvCursor c"
                                  " WHERE c.conv = v.conv AND (c.conv > 0 OR EXISTS (SELECT 1"
                                  " FROM GroupUser g WHERE g.groupid = -c.conv AND g.userid = c.userid)))"
                                  " AS upto FROM Conversation v WHERE v.conv > ? AND v.conv <= ?) AS d"
                                  " WHERE d.upto >= " OLDEST_STORED(
                                      "d.conv") " ORDER BY conv LIMIT " STR(PURGE_FIND_ROWS),
                                  2, "ii" },
    [ST_CONV_DELETE_MSGS] = { "conversation delete",
                              "DELETE FROM Message WHERE conv = ? ORDER BY cseq LIMIT ?", 2, NULL },
    [ST_CONV_DELETE_CURSORS] = { "conversation cursors delete",
                                 "DELETE FROM ConvCursor WHERE conv = ?", 1, NULL },
    [ST_CONV_DELETE_ROW] = { "conversation row delete", "DELETE FROM Conversation WHERE conv = ?",
                             1, NULL },
    [ST_LOG_PENDING] = { "log pending",
                         "SELECT EXISTS (SELECT 1 FROM ConvCursor c JOIN Conversation v"
                         " ON v.conv = c.conv AND v.last_cseq > c.delivered_cseq WHERE c.userid = ?)",
                         1, "i" },
    [ST_LOG_CATCH_UP] = { "log catch up",
                          "UPDATE ConvCursor c JOIN Conversation v ON v.conv = c.conv"
                          " SET c.delivered_cseq = v.last_cseq"
                          " WHERE c.userid = ? AND c.delivered_cseq < v.last_cseq",
                          1, NULL },
};

/* A prepared statement and the buffers its result columns are fetched into. */
struct stmt {
    MYSQL_STMT *h; /* NULL: not prepared on this connection */
    MYSQL_BIND out[MAX_COLS];
    unsigned long len[MAX_COLS]; /* full length of the column value */
    my_bool null[MAX_COLS];
    my_bool trunc[MAX_COLS];
    long long num[MAX_COLS];
    char *text[MAX_COLS]; /* kept across connections, freed at close */
    size_t cap[MAX_COLS]; /* bytes in text[i], the NUL included */
};

/* Parameters of one execution; the values live here until it is done. */
struct params {
    MYSQL_BIND b[MAX_PARAMS];
    long long num[MAX_PARAMS];
    unsigned long len[MAX_PARAMS];
    unsigned n;
    bool overflow; /* more than MAX_PARAMS: exec refuses */
};

/* A statement of mysql_social.c, by its SQL literal (and FOR UPDATE or not). */
struct social_stmt {
    const char *sql;
    bool lock;
    MYSQL_STMT *h;
};

/* A sender's run of its own messages in one conversation (log_batch_update). */
struct sender_run {
    int32_t sender;
    int64_t conv, from, to;
};

/*
 * What log_append's walk asked for and has not been sent yet: CONV_BATCH
 * conversation rows and CONV_BATCH sender runs go out per statement.
 */
struct append_rows {
    struct conv_top conv[CONV_BATCH]; /* conversation rows to raise */
    size_t nconv;
    int64_t pair[CONV_BATCH]; /* pair conversations whose two cursors to make */
    size_t npair;
    struct sender_run run[CONV_BATCH];
    size_t nrun;
};

struct store {
    MYSQL *db;               /* NULL while disconnected */
    bool broken;             /* lost: replace before the next use */
    int depth;               /* callbacks running on buffered results */
    int64_t next_attempt_ms; /* no connection attempt before this */
    int64_t down_since_ms;   /* 0 while the database answers */
    struct stmt stmt[ST_COUNT];
    struct social_stmt social[SOCIAL_STMTS]; /* in use: sql != NULL */
    int max_offline;                         /* messages kept per user; 0: no cap */
    struct append_rows rows;                 /* log_append's pending updates */
    struct pair_cache pairs;                 /* the pairs whose cursors exist */

    char host[QC_CONFIG_STR_MAX];
    char socket[PATH_MAX];
    char user[QC_CONFIG_STR_MAX];
    char database[QC_CONFIG_STR_MAX];
    unsigned port;
    bool has_password;
    char password[PASSWORD_MAX + 1];
    char target[TARGET_MAX]; /* "user@host:port/db", for messages */
};

static int clamp_int(long long v)
{
    return v > INT_MAX ? INT_MAX : v < 0 ? 0 : (int)v;
}

/* ---- errors --------------------------------------------------------- */

/* Errors after which the connection cannot be used again. */
static bool connection_is_gone(unsigned code)
{
    switch (code) {
    case CR_SERVER_GONE_ERROR:
    case CR_SERVER_LOST:
    case CR_SERVER_LOST_EXTENDED:
    case CR_CONNECTION_ERROR:
    case CR_CONN_HOST_ERROR:
    case CR_COMMANDS_OUT_OF_SYNC: /* a bug; a fresh connection heals it */
    case CR_STMT_CLOSED:
    case CR_ERR_NET_READ:
    case CR_ERR_NET_WRITE:
    case ER_CONNECTION_KILLED:
    case ER_SERVER_SHUTDOWN:
    case ER_NET_READ_ERROR:
    case ER_NET_READ_INTERRUPTED:
    case ER_NET_ERROR_ON_WRITE:
    case ER_NEW_ABORTING_CONNECTION:
    case ER_NEED_REPREPARE: /* a table changed under the statement */ return true;
    default: return false;
    }
}

/* What error code of statement id means for the caller (logged here). */
static int classify(struct store *st, enum stmt_id id, unsigned code, const char *msg)
{
    if (code == ER_DUP_ENTRY)
        return E_DUP;
    if (code == ER_LOCK_DEADLOCK) {
        log_debug("mysql: %s: deadlock, retrying", stmt_defs[id].name);
        return E_DEADLOCK;
    }
    if (connection_is_gone(code)) {
        if (!st->broken)
            log_warning("mysql: %s: %s (error %u): connection lost", stmt_defs[id].name, msg, code);
        st->broken = true;
        return E_LOST;
    }
    log_error("mysql: %s: %s (error %u)", stmt_defs[id].name, msg, code);
    return QC_ESTORAGE;
}

static int stmt_failed(struct store *st, enum stmt_id id)
{
    MYSQL_STMT *h = st->stmt[id].h;

    return classify(st, id, mysql_stmt_errno(h), mysql_stmt_error(h));
}

static int db_failed(struct store *st, enum stmt_id id)
{
    return classify(st, id, mysql_errno(st->db), mysql_error(st->db));
}

/* ---- parameters ----------------------------------------------------- */

static void params_init(struct params *p)
{
    memset(p, 0, sizeof(*p));
}

/* The next free slot, or NULL (and the overflow noted) when there is none. */
static MYSQL_BIND *next_param(struct params *p)
{
    if (p->n < MAX_PARAMS)
        return &p->b[p->n];
    p->overflow = true;
    return NULL;
}

static void param_int(struct params *p, long long v)
{
    MYSQL_BIND *b = next_param(p);

    if (b == NULL)
        return;
    p->num[p->n] = v;
    b->buffer_type = MYSQL_TYPE_LONGLONG;
    b->buffer = &p->num[p->n];
    p->n++;
}

static void param_text(struct params *p, const char *s, size_t len)
{
    MYSQL_BIND *b = next_param(p);

    if (b == NULL)
        return;
    p->len[p->n] = len;
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = (void *)s;
    b->buffer_length = len;
    b->length = &p->len[p->n];
    p->n++;
}

static void param_str(struct params *p, const char *s)
{
    param_text(p, s, strlen(s));
}

static void param_null(struct params *p)
{
    MYSQL_BIND *b = next_param(p);

    if (b == NULL)
        return;
    b->buffer_type = MYSQL_TYPE_NULL;
    p->n++;
}

/* The same key for every placeholder of statement id. */
static void params_key(struct params *p, enum stmt_id id, long long key)
{
    unsigned i;

    params_init(p);
    for (i = 0; i < stmt_defs[id].params; i++)
        param_int(p, key);
}

/* ---- statements ----------------------------------------------------- */

static int bind_columns(struct store *st, enum stmt_id id)
{
    struct stmt *s = &st->stmt[id];
    const char *cols = stmt_defs[id].cols;
    size_t i;

    for (i = 0; cols[i] != '\0'; i++) {
        MYSQL_BIND *b = &s->out[i];

        memset(b, 0, sizeof(*b));
        b->length = &s->len[i];
        b->is_null = &s->null[i];
        b->error = &s->trunc[i];
        if (cols[i] == 'i') {
            b->buffer_type = MYSQL_TYPE_LONGLONG;
            b->buffer = &s->num[i];
            continue;
        }
        if (s->text[i] == NULL) {
            s->text[i] = malloc(TEXT_INITIAL);
            if (s->text[i] == NULL) {
                log_error("mysql: %s: out of memory", stmt_defs[id].name);
                return QC_ESTORAGE;
            }
            s->cap[i] = TEXT_INITIAL;
        }
        b->buffer_type = MYSQL_TYPE_STRING;
        b->buffer = s->text[i];
        b->buffer_length = s->cap[i];
    }
    if (mysql_stmt_bind_result(s->h, s->out))
        return stmt_failed(st, id);
    return QC_OK;
}

/* Prepare statement id on the current connection unless it already is. */
static int prepare(struct store *st, enum stmt_id id)
{
    struct stmt *s = &st->stmt[id];
    const struct stmt_def *d = &stmt_defs[id];
    int err = QC_OK;

    if (s->h != NULL)
        return QC_OK;
    s->h = mysql_stmt_init(st->db);
    if (s->h == NULL)
        return db_failed(st, id);
    if (mysql_stmt_prepare(s->h, d->sql, strlen(d->sql)) != 0) {
        err = stmt_failed(st, id);
    } else if (mysql_stmt_param_count(s->h) != d->params) {
        log_error("mysql: %s: %lu placeholders, expected %u", d->name, mysql_stmt_param_count(s->h),
                  d->params);
        err = QC_ESTORAGE;
    } else if (d->cols != NULL) {
        err = bind_columns(st, id);
    }
    if (err != QC_OK) {
        (void)mysql_stmt_close(s->h); /* prepared again next time */
        s->h = NULL;
    }
    return err;
}

/*
 * Execute statement id with p (NULL: none) and buffer its whole result in
 * the client, so the connection is free again when this returns.
 */
static int exec(struct store *st, enum stmt_id id, struct params *p)
{
    struct stmt *s = &st->stmt[id];
    int err;

    if (st->broken)
        return E_LOST;
    if ((err = prepare(st, id)) != QC_OK)
        return err;
    if (p != NULL && (p->overflow || p->n != stmt_defs[id].params)) {
        log_error("mysql: %s: %u parameters bound, expected %u", stmt_defs[id].name, p->n,
                  stmt_defs[id].params);
        return QC_ESTORAGE;
    }
    (void)mysql_stmt_free_result(s->h); /* a result a failed run left behind */
    if (p != NULL && p->n > 0 && mysql_stmt_bind_param(s->h, p->b) != 0)
        return stmt_failed(st, id);
    if (mysql_stmt_execute(s->h) != 0)
        return stmt_failed(st, id);
    if (stmt_defs[id].cols != NULL && mysql_stmt_store_result(s->h) != 0)
        return stmt_failed(st, id);
    return QC_OK;
}

static unsigned long long affected(struct store *st, enum stmt_id id)
{
    return mysql_stmt_affected_rows(st->stmt[id].h);
}

/* Fetch a truncated text column again into a buffer big enough for it. */
static int refetch_text(struct store *st, enum stmt_id id, unsigned col)
{
    struct stmt *s = &st->stmt[id];
    size_t need = (size_t)s->len[col] + 1;
    char *bigger = realloc(s->text[col], need);
    MYSQL_BIND b;

    if (bigger == NULL) {
        log_error("mysql: %s: out of memory for %lu bytes", stmt_defs[id].name, s->len[col]);
        return -1;
    }
    s->text[col] = bigger;
    s->cap[col] = need;
    memset(&b, 0, sizeof(b));
    b.buffer_type = MYSQL_TYPE_STRING;
    b.buffer = bigger;
    b.buffer_length = need;
    b.length = &s->len[col];
    if (mysql_stmt_fetch_column(s->h, &b, col, 0) != 0) {
        log_error("mysql: %s: %s", stmt_defs[id].name, mysql_stmt_error(s->h));
        return -1;
    }
    /* Later rows go straight into the bigger buffer. */
    s->out[col].buffer = bigger;
    s->out[col].buffer_length = need;
    return mysql_stmt_bind_result(s->h, s->out) == 0 ? 0 : -1;
}

/* Next buffered row of statement id: 1, 0 at the end, -1 on error. */
static int fetch(struct store *st, enum stmt_id id)
{
    struct stmt *s = &st->stmt[id];
    const char *cols = stmt_defs[id].cols;
    int rc = mysql_stmt_fetch(s->h);
    unsigned i;

    if (rc == MYSQL_NO_DATA)
        return 0;
    if (rc != 0 && rc != MYSQL_DATA_TRUNCATED) {
        log_error("mysql: %s: fetch: %s", stmt_defs[id].name, mysql_stmt_error(s->h));
        return -1;
    }
    for (i = 0; cols[i] != '\0'; i++) {
        if (cols[i] == 'i') {
            if (s->null[i])
                s->num[i] = 0;
            continue;
        }
        if (s->null[i])
            s->len[i] = 0;
        else if (s->len[i] >= s->cap[i] && refetch_text(st, id, i) != 0)
            return -1;
        s->text[i][s->len[i]] = '\0';
    }
    return 1;
}

static long long col_int(struct store *st, enum stmt_id id, unsigned col)
{
    return st->stmt[id].num[col];
}

static const char *col_text(struct store *st, enum stmt_id id, unsigned col)
{
    return st->stmt[id].text[col];
}

static size_t col_len(struct store *st, enum stmt_id id, unsigned col)
{
    return st->stmt[id].len[col];
}

/* Release statement id's buffered result. */
static void finish(struct store *st, enum stmt_id id)
{
    if (st->stmt[id].h != NULL)
        (void)mysql_stmt_free_result(st->stmt[id].h);
}

/* Run a one-row query with p: *found and column 0 in *value. */
static int query_int(struct store *st, enum stmt_id id, struct params *p, bool *found,
                     long long *value)
{
    int err = exec(st, id, p), rc;

    if (err != QC_OK)
        return err;
    rc = fetch(st, id);
    *found = rc > 0;
    if (rc > 0)
        *value = col_int(st, id, 0);
    finish(st, id);
    return rc < 0 ? QC_ESTORAGE : QC_OK;
}

/* QC_OK when statement id finds a row for key, else missing. */
static int key_exists(struct store *st, enum stmt_id id, long long key, int missing)
{
    struct params p;
    long long v = 0;
    bool found = false;
    int err;

    params_key(&p, id, key);
    err = query_int(st, id, &p, &found, &v);
    if (err != QC_OK)
        return err;
    return found ? QC_OK : missing;
}

/* ---- transactions --------------------------------------------------- */

static int tx_begin(struct store *st)
{
    return exec(st, ST_BEGIN, NULL);
}

/* Commit when err is QC_OK, roll back otherwise; returns the outcome. */
static int tx_end(struct store *st, int err)
{
    if (err == QC_OK) {
        err = exec(st, ST_COMMIT, NULL);
        if (err == QC_OK)
            return QC_OK;
        if (err == E_LOST)
            return E_COMMIT_UNKNOWN;
    }
    /* A lost connection or a deadlock has already rolled back. */
    if (!st->broken && err != E_DEADLOCK && exec(st, ST_ROLLBACK, NULL) != QC_OK)
        log_error("mysql: rollback failed");
    return err;
}

/* ---- connections ---------------------------------------------------- */

/* Close the statements and the connection (the buffers stay). */
static void disconnect(struct store *st)
{
    int i;

    for (i = 0; i < ST_COUNT; i++) {
        if (st->stmt[i].h != NULL)
            (void)mysql_stmt_close(st->stmt[i].h);
        st->stmt[i].h = NULL;
    }
    for (i = 0; i < SOCIAL_STMTS; i++)
        if (st->social[i].h != NULL)
            (void)mysql_stmt_close(st->social[i].h);
    memset(st->social, 0, sizeof(st->social));
    if (st->db != NULL)
        mysql_close(st->db);
    st->db = NULL;
    st->broken = false;
}

static int set_options(MYSQL *db, const struct store *st)
{
    unsigned int connect_timeout = CONNECT_TIMEOUT_SEC;
    unsigned int read_timeout = READ_TIMEOUT_SEC;
    unsigned int write_timeout = WRITE_TIMEOUT_SEC;
    unsigned int protocol = st->socket[0] != '\0' ? MYSQL_PROTOCOL_SOCKET : MYSQL_PROTOCOL_TCP;
    my_bool off = 0;

    return mysql_options(db, MYSQL_SET_CHARSET_NAME, CHARSET) ||
                   mysql_options(db, MYSQL_OPT_CONNECT_TIMEOUT, &connect_timeout) ||
                   mysql_options(db, MYSQL_OPT_READ_TIMEOUT, &read_timeout) ||
                   mysql_options(db, MYSQL_OPT_WRITE_TIMEOUT, &write_timeout) ||
                   mysql_options(db, MYSQL_OPT_PROTOCOL, &protocol) ||
                   mysql_options(db, MYSQL_OPT_RECONNECT, &off) ||
                   mysql_options(db, MYSQL_OPT_LOCAL_INFILE, &off) ||
                   mysql_options(db, MYSQL_INIT_COMMAND, SESSION_SETUP)
               ? -1
               : 0;
}

/* Open a new connection; on failure err says why (never with the password). */
static int connect_db(struct store *st, char *err, size_t errlen)
{
    MYSQL *db = mysql_init(NULL);
    const char *cs;

    if (db == NULL) {
        snprintf(err, errlen, "mysql: out of memory");
        return -1;
    }
    if (set_options(db, st) != 0) {
        snprintf(err, errlen, "mysql: setting connection options: %s", mysql_error(db));
        mysql_close(db);
        return -1;
    }
    if (mysql_real_connect(db, st->socket[0] != '\0' ? NULL : st->host, st->user,
                           st->has_password ? st->password : NULL, st->database, st->port,
                           st->socket[0] != '\0' ? st->socket : NULL, CLIENT_FOUND_ROWS) == NULL) {
        snprintf(err, errlen, "mysql: connecting to %s: %s (error %u)", st->target, mysql_error(db),
                 mysql_errno(db));
        mysql_close(db);
        return -1;
    }
    cs = mysql_character_set_name(db);
    if (strcmp(cs, CHARSET) != 0) {
        snprintf(err, errlen, "mysql: %s: connection character set is %s, not " CHARSET, st->target,
                 cs);
        mysql_close(db);
        return -1;
    }
    st->db = db;
    st->broken = false;
    return 0;
}

/*
 * Make sure a usable connection exists: replace a lost one (never while a
 * callback runs on a buffered result), at most one attempt per interval.
 */
static int ensure_connected(struct store *st)
{
    char err[QC_CONFIG_ERR_MAX];
    int64_t now;

    if (st->db != NULL && !st->broken)
        return QC_OK;
    if (st->depth > 0)
        return QC_ESTORAGE;
    disconnect(st);
    now = clock_now_ms();
    if (now < st->next_attempt_ms)
        return QC_ESTORAGE;
    if (connect_db(st, err, sizeof(err)) != 0) {
        st->next_attempt_ms = clock_now_ms() + RECONNECT_INTERVAL_MS;
        if (st->down_since_ms == 0) {
            st->down_since_ms = now;
            log_error("%s; retrying at most every %d ms", err, RECONNECT_INTERVAL_MS);
        } else {
            log_debug("%s", err);
        }
        return QC_ESTORAGE;
    }
    if (st->down_since_ms != 0)
        log_info("mysql: reconnected to %s after %.1f s", st->target,
                 (double)(clock_now_ms() - st->down_since_ms) / 1000.0);
    else
        log_info("mysql: reconnected to %s", st->target);
    st->down_since_ms = 0;
    return QC_OK;
}

typedef int (*op_fn)(struct store *st, void *arg);

/*
 * Run one operation: on a lost connection reconnect and run it once more,
 * on a deadlock run it again (bounded).  Internal outcomes become
 * QC_ESTORAGE.
 */
static int run(struct store *st, op_fn op, void *arg)
{
    bool retried_lost = false;
    int attempt, err = QC_ESTORAGE;

    for (attempt = 0; attempt <= DEADLOCK_RETRIES; attempt++) {
        if ((err = ensure_connected(st)) != QC_OK)
            return err;
        err = op(st, arg);
        if (err == E_DEADLOCK)
            continue;
        if (err == E_LOST && !retried_lost && st->depth == 0) {
            retried_lost = true;
            st->next_attempt_ms = 0; /* reconnect now, once */
            continue;
        }
        break;
    }
    if (err == E_COMMIT_UNKNOWN)
        log_error("mysql: connection lost during COMMIT: outcome unknown");
    if (err == E_DEADLOCK)
        log_error("mysql: deadlock %d times in a row", DEADLOCK_RETRIES + 1);
    if (err == E_DUP)
        log_error("mysql: unexpected duplicate key");
    return err < 0 ? QC_ESTORAGE : err;
}

/* ---- for the social functions (mysql_social.c) --------------------- */

MYSQL *mysql_store_connection(struct store *st)
{
    return ensure_connected(st) == QC_OK ? st->db : NULL;
}

MYSQL_STMT **mysql_store_social_stmt(struct store *st, const char *sql, bool lock)
{
    struct social_stmt *s;
    int i;

    for (i = 0; i < SOCIAL_STMTS; i++) {
        s = &st->social[i];
        if (s->sql == NULL) { /* not seen on this connection: a free slot */
            s->sql = sql;
            s->lock = lock;
            s->h = NULL;
            return &s->h;
        }
        if (s->sql == sql && s->lock == lock)
            return &s->h;
    }
    return NULL;
}

void mysql_store_connection_lost(struct store *st)
{
    st->broken = true;
    st->next_attempt_ms = 0; /* reconnect now, once */
}

bool mysql_store_error_is_lost(unsigned code)
{
    return connection_is_gone(code);
}

/* ---- opening -------------------------------------------------------- */

/*
 * Read storage.password_file into st: a regular file that group and others
 * cannot access, one line (a trailing newline is dropped).  The bytes read
 * are wiped from the stack.
 */
static int read_password(struct store *st, const char *path, char *err, size_t errlen)
{
    char buf[PASSWORD_MAX + 2];
    struct stat sb;
    ssize_t n;
    size_t len;
    int fd, rc = -1;

    st->has_password = false;
    if (path[0] == '\0')
        return 0;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(err, errlen, "storage.password_file %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &sb) != 0) {
        snprintf(err, errlen, "storage.password_file %s: %s", path, strerror(errno));
    } else if (!S_ISREG(sb.st_mode)) {
        snprintf(err, errlen, "storage.password_file %s is not a regular file", path);
    } else if ((sb.st_mode & 077) != 0) {
        snprintf(err, errlen,
                 "storage.password_file %s is accessible by group or others "
                 "(mode %04o); refusing it: chmod 600 %s",
                 path, (unsigned)(sb.st_mode & 07777), path);
    } else if ((n = read(fd, buf, sizeof(buf))) < 0) {
        snprintf(err, errlen, "storage.password_file %s: %s", path, strerror(errno));
    } else {
        len = (size_t)n;
        if (len > 0 && buf[len - 1] == '\n')
            len--;
        if (len > 0 && buf[len - 1] == '\r')
            len--;
        if (len > PASSWORD_MAX || (size_t)n == sizeof(buf))
            snprintf(err, errlen, "storage.password_file %s: longer than %d bytes", path,
                     PASSWORD_MAX);
        else if (memchr(buf, '\0', len) != NULL || memchr(buf, '\n', len) != NULL)
            snprintf(err, errlen, "storage.password_file %s: must hold one line", path);
        else {
            memcpy(st->password, buf, len);
            st->password[len] = '\0';
            st->has_password = true;
            rc = 0;
        }
    }
    explicit_bzero(buf, sizeof(buf));
    (void)close(fd);
    return rc;
}

static int copy_setting(char *dst, size_t size, const char *src, const char *key, char *err,
                        size_t errlen)
{
    if (strlcpy(dst, src, size) < size)
        return 0;
    snprintf(err, errlen, "storage.%s is too long", key);
    return -1;
}

static int load_settings(struct store *st, const struct qc_config *cfg, char *err, size_t errlen)
{
    if (copy_setting(st->host, sizeof(st->host), cfg->storage_host, "host", err, errlen) ||
        copy_setting(st->socket, sizeof(st->socket), cfg->storage_socket, "socket", err, errlen) ||
        copy_setting(st->user, sizeof(st->user), cfg->storage_user, "user", err, errlen) ||
        copy_setting(st->database, sizeof(st->database), cfg->storage_database, "database", err,
                     errlen))
        return -1;
    if (st->database[0] == '\0' || st->user[0] == '\0') {
        snprintf(err, errlen, "storage.driver = mysql needs storage.database and storage.user");
        return -1;
    }
    st->port = (unsigned)cfg->storage_port;
    if (st->socket[0] != '\0')
        snprintf(st->target, sizeof(st->target), "%s@%s/%s", st->user, st->socket, st->database);
    else
        snprintf(st->target, sizeof(st->target), "%s@%s:%u/%s", st->user, st->host, st->port,
                 st->database);
    st->max_offline = cfg->max_offline_messages > 0 ? cfg->max_offline_messages : 0;
    return read_password(st, cfg->storage_password_file, err, errlen);
}

/* One fixed DDL statement, prepared and run once. */
static int run_ddl(struct store *st, const char *sql, char *err, size_t errlen)
{
    MYSQL_STMT *h = mysql_stmt_init(st->db);
    int rc = -1;

    if (h == NULL) {
        snprintf(err, errlen, "mysql: creating the schema: %s", mysql_error(st->db));
        return -1;
    }
    if (mysql_stmt_prepare(h, sql, strlen(sql)) == 0 && mysql_stmt_execute(h) == 0)
        rc = 0;
    else
        snprintf(err, errlen, "mysql: %s: creating the schema: %s (error %u)", st->target,
                 mysql_stmt_error(h), mysql_stmt_errno(h));
    if (rc != 0 && connection_is_gone(mysql_stmt_errno(h)))
        st->broken = true;
    (void)mysql_stmt_close(h);
    return rc;
}

/* A line that is only a comment or blank. */
static bool is_comment_line(const char *line, size_t len)
{
    size_t i = 0;

    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    return i == len || (i + 1 < len && line[i] == '-' && line[i + 1] == '-');
}

/*
 * Run a migration's statements one by one: a statement ends with ';' at the
 * end of a line (the rule the sql/mysql files keep), comment lines are left out.
 */
static int run_migration_text(struct store *st, const struct store_migration *m, char *err,
                              size_t errlen)
{
    size_t total = strlen(m->sql), used = 0, len;
    const char *line = m->sql, *nl;
    char *stmt = malloc(total + 1);
    int rc = 0;

    if (stmt == NULL) {
        snprintf(err, errlen, "mysql: %s: out of memory", m->name);
        return -1;
    }
    for (; *line != '\0' && rc == 0; line = *nl != '\0' ? nl + 1 : nl) {
        nl = strchr(line, '\n');
        if (nl == NULL)
            nl = line + strlen(line);
        len = (size_t)(nl - line);
        if (is_comment_line(line, len))
            continue;
        while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\r'))
            len--;
        memcpy(stmt + used, line, len);
        used += len;
        if (len > 0 && line[len - 1] == ';') {
            stmt[used - 1] = '\0';
            rc = run_ddl(st, stmt, err, errlen);
            used = 0;
        } else {
            stmt[used++] = '\n';
        }
    }
    if (rc == 0 && used > 0) {
        snprintf(err, errlen, "mysql: %s: the last statement has no ';'", m->name);
        rc = -1;
    }
    free(stmt);
    return rc;
}

/* One-integer query with no parameter: -1 on failure (err set). */
static long long schema_query(struct store *st, enum stmt_id id, char *err, size_t errlen)
{
    long long v = -1;
    bool found = false;

    if (query_int(st, id, NULL, &found, &v) != QC_OK || !found) {
        snprintf(err, errlen, "mysql: %s: %s failed", st->target, stmt_defs[id].name);
        return -1;
    }
    return v;
}

static int record_version(struct store *st, const struct store_migration *m, char *err,
                          size_t errlen)
{
    struct params p;

    params_init(&p);
    param_int(&p, m->version);
    param_str(&p, m->name);
    if (exec(st, ST_VERSION_ADD, &p) == QC_OK)
        return 0;
    snprintf(err, errlen, "mysql: %s: recording schema version %d failed", st->target, m->version);
    return -1;
}

/* Apply every migration newer than the database, under the schema lock. */
static int apply_migrations(struct store *st, char *err, size_t errlen)
{
    long long have;
    size_t i;

    if (run_ddl(st, SCHEMA_VERSION_DDL, err, errlen) != 0)
        return -1;
    if ((have = schema_query(st, ST_SCHEMA_VERSION, err, errlen)) < 0)
        return -1;
    if (have > (long long)store_mysql_migration_count) {
        snprintf(err, errlen,
                 "mysql: %s: the database has schema version %lld, newer than this qchatd (%zu)",
                 st->target, have, store_mysql_migration_count);
        return -1;
    }
    for (i = (size_t)have; i < store_mysql_migration_count; i++) {
        const struct store_migration *m = &store_mysql_migrations[i];

        if (run_migration_text(st, m, err, errlen) != 0 || record_version(st, m, err, errlen) != 0)
            return -1;
        log_info("mysql: schema migrated to version %d (%s)", m->version, m->name);
    }
    return 0;
}

/*
 * DDL commits by itself, so workers and nodes opening at once take turns
 * with GET_LOCK; the first migrates, the others find nothing to do.
 */
static int create_schema(struct store *st, char *err, size_t errlen)
{
    long long locked = schema_query(st, ST_SCHEMA_LOCK, err, errlen);
    int rc;

    if (locked < 0)
        return -1;
    if (locked != 1) {
        snprintf(err, errlen, "mysql: %s: no schema lock within %d s", st->target, SCHEMA_LOCK_SEC);
        return -1;
    }
    rc = apply_migrations(st, err, errlen);
    if (!st->broken)
        (void)schema_query(st, ST_SCHEMA_UNLOCK, err, rc == 0 ? errlen : 0); /* keep err */
    return rc;
}

static void mysql_store_close(struct store *st)
{
    int i, c;

    if (st == NULL)
        return;
    disconnect(st);
    for (i = 0; i < ST_COUNT; i++)
        for (c = 0; c < MAX_COLS; c++)
            free(st->stmt[i].text[c]);
    explicit_bzero(st->password, sizeof(st->password));
    pair_cache_free(&st->pairs);
    free(st);
}

/* A handle connected to the configured database, its schema as it is. */
static int connect_store(struct store **out, const struct qc_config *cfg, char *err, size_t errlen)
{
    struct store *st;

    *out = NULL;
    if (mysql_library_init(0, NULL, NULL) != 0) {
        snprintf(err, errlen, "mysql: cannot initialize the client library");
        return QC_ESTORAGE;
    }
    st = calloc(1, sizeof(*st));
    if (st == NULL) {
        snprintf(err, errlen, "out of memory");
        return QC_ESTORAGE;
    }
    if (load_settings(st, cfg, err, errlen) != 0 || connect_db(st, err, errlen) != 0) {
        mysql_store_close(st);
        return QC_ESTORAGE;
    }
    *out = st;
    return QC_OK;
}

/*
 * qchatd -t: the schema version, read without the schema lock and without
 * migrating, so that testing a new binary's configuration against a
 * database an older one still serves changes nothing.
 */
static int mysql_store_probe_schema(const struct qc_config *cfg, int *have, int *want, char *err,
                                    size_t errlen)
{
    struct store *st;
    long long tables, version = 0;

    *have = 0;
    *want = (int)store_mysql_migration_count;
    if (connect_store(&st, cfg, err, errlen) != QC_OK)
        return QC_ESTORAGE;
    tables = schema_query(st, ST_SCHEMA_TABLE, err, errlen);
    if (tables > 0)
        version = schema_query(st, ST_SCHEMA_VERSION, err, errlen);
    mysql_store_close(st);
    if (tables < 0 || version < 0)
        return QC_ESTORAGE;
    *have = (int)version;
    return QC_OK;
}

static int mysql_store_open(struct store **out, const struct qc_config *cfg, char *err,
                            size_t errlen)
{
    struct store *st;
    int rc = connect_store(&st, cfg, err, errlen);

    *out = NULL;
    if (rc != QC_OK)
        return rc;
    if (create_schema(st, err, errlen) != 0) {
        mysql_store_close(st);
        return QC_ESTORAGE;
    }
    *out = st;
    return QC_OK;
}

static int op_init_schema(struct store *st, void *arg)
{
    char err[QC_CONFIG_ERR_MAX];

    if (create_schema(st, err, sizeof(err)) == 0)
        return QC_OK;
    if (st->broken)
        return E_LOST;
    log_error("%s", err);
    return QC_ESTORAGE;
}

static int mysql_store_init_schema(struct store *st)
{
    return run(st, op_init_schema, NULL);
}

/* ---- one-statement reads -------------------------------------------- */

/* Execute a statement whose every placeholder is key; its result stays buffered. */
struct keyed {
    enum stmt_id id;
    long long key;
};

static int op_keyed(struct store *st, void *arg)
{
    struct keyed *k = arg;
    struct params p;

    params_key(&p, k->id, k->key);
    return exec(st, k->id, &p);
}

/* One-row, one-integer read: QC_OK, missing (no row) or QC_ESTORAGE. */
static int read_int(struct store *st, enum stmt_id id, long long key, int missing, int *value)
{
    struct keyed k = { id, key };
    int err = run(st, op_keyed, &k), rc;

    if (err != QC_OK)
        return err;
    rc = fetch(st, id);
    if (rc > 0)
        *value = clamp_int(col_int(st, id, 0));
    finish(st, id);
    return rc < 0 ? QC_ESTORAGE : rc == 0 ? missing : QC_OK;
}

static int mysql_store_ping(struct store *st)
{
    int one = 0;

    return read_int(st, ST_PING, 0, QC_ESTORAGE, &one) == QC_OK && one == 1;
}

/* ---- users ---------------------------------------------------------- */

struct user_args {
    const char *name;
    const char *pwhash;
    int32_t id;
};

static int op_user_create(struct store *st, void *arg)
{
    struct user_args *a = arg;
    struct params p;
    int err;

    if ((err = tx_begin(st)) != QC_OK)
        return err;
    params_init(&p);
    param_str(&p, a->name);
    param_str(&p, a->pwhash);
    err = exec(st, ST_USER_INSERT, &p);
    if (err == QC_OK)
        a->id = (int32_t)mysql_stmt_insert_id(st->stmt[ST_USER_INSERT].h);
    else if (err == E_DUP)
        err = QC_ENAMETAKEN;
    return tx_end(st, err);
}

static int mysql_store_user_create(struct store *st, const char *name, const char *pwhash,
                                   int32_t *id)
{
    struct user_args a = { name, pwhash, 0 };
    int err;

    if (strlen(name) > QC_NAME_MAX || strlen(pwhash) > QC_HASH_MAX)
        return QC_ETOOLONG;
    err = run(st, op_user_create, &a);
    if (err == QC_OK)
        *id = a.id;
    return err;
}

static int mysql_store_user_get(struct store *st, int32_t id, struct store_user *out)
{
    struct keyed k = { ST_USER_GET, id };
    int err = run(st, op_keyed, &k), rc;

    if (err != QC_OK)
        return err;
    rc = fetch(st, ST_USER_GET);
    if (rc > 0) {
        out->id = id;
        if (strlcpy(out->name, col_text(st, ST_USER_GET, 0), sizeof(out->name)) >=
                sizeof(out->name) ||
            strlcpy(out->password, col_text(st, ST_USER_GET, 1), sizeof(out->password)) >=
                sizeof(out->password)) {
            log_error("mysql: user %d: stored name or password too long", (int)id);
            rc = -1;
        }
    }
    finish(st, ST_USER_GET);
    return rc < 0 ? QC_ESTORAGE : rc == 0 ? QC_ENOUSER : QC_OK;
}

/* One UPDATE: running it twice changes nothing, so no transaction. */
static int op_user_set_password(struct store *st, void *arg)
{
    struct user_args *a = arg;
    struct params p;
    int err;

    params_init(&p);
    param_str(&p, a->pwhash);
    param_int(&p, a->id);
    if ((err = exec(st, ST_USER_SET_PASSWORD, &p)) != QC_OK)
        return err;
    return affected(st, ST_USER_SET_PASSWORD) > 0 ? QC_OK : QC_ENOUSER;
}

static int mysql_store_user_set_password(struct store *st, int32_t id, const char *pwhash)
{
    struct user_args a = { NULL, pwhash, id };

    if (strlen(pwhash) > QC_HASH_MAX)
        return QC_ETOOLONG;
    return run(st, op_user_set_password, &a);
}

/* ---- friends -------------------------------------------------------- */

struct pair_args {
    int32_t a, b;
};

/*
 * Both directions.  A seed database holds one-way rows (its ADD_FRIEND
 * wrote one); adding the missing direction completes the friendship.
 */
static int add_friendship(struct store *st, int32_t userid, int32_t friendid)
{
    struct params p;
    long long found = 0;
    bool row = false;
    int err;

    params_init(&p);
    param_int(&p, userid);
    param_int(&p, friendid);
    if ((err = query_int(st, ST_USERS_FOUND, &p, &row, &found)) != QC_OK)
        return err;
    if (found < 2)
        return QC_ENOUSER;
    params_init(&p);
    param_int(&p, userid);
    param_int(&p, friendid);
    param_int(&p, friendid);
    param_int(&p, userid);
    if ((err = exec(st, ST_FRIEND_INSERT_BOTH, &p)) != QC_OK)
        return err;
    return affected(st, ST_FRIEND_INSERT_BOTH) > 0 ? QC_OK : QC_EALREADY;
}

static int op_friend_add(struct store *st, void *arg)
{
    struct pair_args *a = arg;
    int err;

    if ((err = tx_begin(st)) != QC_OK)
        return err;
    return tx_end(st, add_friendship(st, a->a, a->b));
}

static int mysql_store_friend_add(struct store *st, int32_t userid, int32_t friendid)
{
    struct pair_args a = { userid, friendid };

    if (userid == friendid)
        return QC_ESELF;
    return run(st, op_friend_add, &a);
}

static int mysql_store_friend_count(struct store *st, int32_t userid, int *count)
{
    return read_int(st, ST_FRIEND_COUNT, userid, QC_ESTORAGE, count);
}

/* Where the rows of a list query go: one of the callbacks, and its argument. */
struct sink {
    store_user_cb user;
    store_member_cb member;
    store_group_cb group;
    store_msg_cb msg;
    void *arg;
};

/* Hand one buffered row of statement id to the sink's callback. */
static void emit(struct store *st, enum stmt_id id, const struct sink *k)
{
    int32_t first = (int32_t)col_int(st, id, 0);

    if (k->user != NULL)
        k->user(k->arg, first, col_text(st, id, 1));
    else if (k->member != NULL)
        k->member(k->arg, first, col_text(st, id, 1), col_text(st, id, 2));
    else if (k->group != NULL)
        k->group(k->arg, first, col_text(st, id, 1), col_text(st, id, 2));
    else
        k->msg(k->arg, col_text(st, id, 1), col_len(st, id, 1));
}

/*
 * Hand the buffered rows of a query to the sink.  depth keeps the
 * connection (and so these rows) in place while callbacks make calls.
 */
static int each_row(struct store *st, enum stmt_id id, const struct sink *k, int *rows)
{
    int rc;

    *rows = 0;
    st->depth++;
    while ((rc = fetch(st, id)) > 0) {
        emit(st, id, k);
        (*rows)++;
    }
    st->depth--;
    finish(st, id);
    return rc < 0 ? QC_ESTORAGE : QC_OK;
}

/* Run a list query keyed by key and hand its rows to the sink. */
static int list(struct store *st, enum stmt_id id, long long key, const struct sink *k, int *rows)
{
    struct keyed q = { id, key };
    int err = run(st, op_keyed, &q);

    *rows = 0;
    if (err != QC_OK)
        return err;
    return each_row(st, id, k, rows);
}

static int mysql_store_friend_list(struct store *st, int32_t userid, store_user_cb cb, void *arg)
{
    struct sink k = { .user = cb, .arg = arg };
    int rows;

    return list(st, ST_FRIEND_LIST, userid, &k, &rows);
}

/* ---- groups --------------------------------------------------------- */

/* Raise userid's cursors of conv to start (or the stored last cseq). */
static int join_conversation(struct store *st, int32_t userid, int64_t conv, int64_t start)
{
    struct params p;

    params_init(&p);
    param_int(&p, userid);
    param_int(&p, conv);
    param_int(&p, start);
    param_int(&p, conv);
    return exec(st, ST_CURSOR_JOIN, &p);
}

struct group_args {
    const char *name;
    const char *desc;
    int32_t userid;
    int32_t groupid;
};

/* Insert userid into groupid with role; *added is 1 for a new member. */
static int insert_member(struct store *st, int32_t groupid, int32_t userid, const char *role,
                         int *added)
{
    struct params p;
    int err;

    params_init(&p);
    param_str(&p, role);
    param_int(&p, userid);
    param_int(&p, groupid);
    if ((err = exec(st, ST_MEMBER_INSERT, &p)) != QC_OK)
        return err;
    *added = affected(st, ST_MEMBER_INSERT) > 0;
    return QC_OK;
}

static int insert_group(struct store *st, struct group_args *a)
{
    struct params p;
    int err, added = 0;

    params_init(&p);
    param_str(&p, a->name);
    param_str(&p, a->desc);
    err = exec(st, ST_GROUP_INSERT, &p);
    if (err == E_DUP)
        return QC_EGROUPTAKEN;
    if (err != QC_OK)
        return err;
    a->groupid = (int32_t)mysql_stmt_insert_id(st->stmt[ST_GROUP_INSERT].h);
    if ((err = insert_member(st, a->groupid, a->userid, QC_ROLE_CREATOR, &added)) != QC_OK)
        return err;
    if (!added)
        return QC_ENOUSER; /* the group is new: no such creator */
    return join_conversation(st, a->userid, store_conv_group(a->groupid), 0);
}

static int op_group_create(struct store *st, void *arg)
{
    struct group_args *a = arg;
    int err;

    if ((err = tx_begin(st)) != QC_OK)
        return err;
    return tx_end(st, insert_group(st, a));
}

static int mysql_store_group_create(struct store *st, const char *name, const char *desc,
                                    int32_t creator, int32_t *groupid)
{
    struct group_args a = { name, desc != NULL ? desc : "", creator, 0 };
    int err;

    if (strlen(a.name) > QC_NAME_MAX || strlen(a.desc) > QC_GROUPDESC_MAX)
        return QC_ETOOLONG;
    err = run(st, op_group_create, &a);
    if (err == QC_OK)
        *groupid = a.groupid;
    return err;
}

/* Nothing inserted: say why, in the SQLite driver's order. */
static int join_refused(struct store *st, int32_t groupid, int32_t userid)
{
    int err = key_exists(st, ST_GROUP_EXISTS, groupid, QC_ENOGROUP);

    if (err == QC_OK)
        err = key_exists(st, ST_USER_EXISTS, userid, QC_ENOUSER);
    return err == QC_OK ? QC_EALREADY : err;
}

static int join_group(struct store *st, int32_t groupid, int32_t userid)
{
    int err, added = 0;

    if ((err = insert_member(st, groupid, userid, QC_ROLE_NORMAL, &added)) != QC_OK)
        return err;
    if (!added)
        return join_refused(st, groupid, userid);
    return join_conversation(st, userid, store_conv_group(groupid), 0);
}

static int op_group_join(struct store *st, void *arg)
{
    struct group_args *a = arg;
    int err;

    if ((err = tx_begin(st)) != QC_OK)
        return err;
    return tx_end(st, join_group(st, a->groupid, a->userid));
}

static int mysql_store_group_join(struct store *st, int32_t groupid, int32_t userid)
{
    struct group_args a = { NULL, NULL, userid, groupid };

    return run(st, op_group_join, &a);
}

static int mysql_store_group_member_count(struct store *st, int32_t groupid, int *count)
{
    return read_int(st, ST_MEMBER_COUNT, groupid, QC_ENOGROUP, count);
}

static int mysql_store_group_members(struct store *st, int32_t groupid, store_member_cb cb,
                                     void *arg)
{
    struct sink k = { .member = cb, .arg = arg };
    int rows, dummy = 0;
    int err = list(st, ST_MEMBER_LIST, groupid, &k, &rows);

    if (err != QC_OK || rows > 0)
        return err;
    /* Every group has its creator: only an empty answer needs the check. */
    return read_int(st, ST_GROUP_EXISTS, groupid, QC_ENOGROUP, &dummy);
}

static int mysql_store_user_groups(struct store *st, int32_t userid, store_group_cb cb, void *arg)
{
    struct sink k = { .group = cb, .arg = arg };
    int rows;

    return list(st, ST_USER_GROUPS, userid, &k, &rows);
}

/* ---- the conversation log ------------------------------------------- */

static int op_schema_version(struct store *st, void *arg)
{
    long long *v = arg;
    bool found = false;
    int err = query_int(st, ST_SCHEMA_VERSION, NULL, &found, v);

    return err == QC_OK && !found ? QC_ESTORAGE : err;
}

static int mysql_store_schema_version(struct store *st, int *version)
{
    long long v = 0;
    int err = run(st, op_schema_version, &v);

    if (err == QC_OK)
        *version = clamp_int(v);
    return err;
}

static void param_message(struct params *p, const struct store_logmsg *m)
{
    param_int(p, m->conv);
    param_int(p, m->cseq);
    param_int(p, m->mid);
    param_int(p, m->sender);
    param_int(p, m->ts);
    param_text(p, m->body, m->len);
}

/*
 * The messages: APPEND_BATCH rows per INSERT, one round trip each.  A last,
 * partial batch repeats its last message, which INSERT IGNORE skips as the
 * duplicate it is; a single message goes alone.
 */
static int insert_messages(struct store *st, const struct store_logmsg *msgs, size_t n)
{
    struct params p;
    size_t i, k;
    int err = QC_OK;

    if (n == 1) {
        params_init(&p);
        param_message(&p, &msgs[0]);
        return exec(st, ST_LOG_INSERT_1, &p);
    }
    for (i = 0; i < n && err == QC_OK; i += APPEND_BATCH) {
        params_init(&p);
        for (k = 0; k < APPEND_BATCH; k++)
            param_message(&p, &msgs[i + k < n ? i + k : n - 1]);
        err = exec(st, ST_LOG_INSERT_N, &p);
    }
    return err;
}

/*
 * After the commit of an append every pair of the batch has its cursors
 * (pair_cache.h): its later appends make them no more.  A cross-node chat is
 * numbered in a transaction that holds, in a ping-pong, one message per
 * conversation, where the two cursor rows were a third of its writes.
 */
static void remember_pairs(struct store *st, const struct log_batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        if (b->tops[i].conv > 0)
            pair_cache_add(&st->pairs, b->tops[i].conv);
}

/* One conversation row. */
static int bump_conversation(struct store *st, const struct conv_top *t)
{
    struct params p;

    params_init(&p);
    param_int(&p, t->conv);
    param_int(&p, t->cseq);
    param_int(&p, t->ts);
    return exec(st, ST_CONV_BUMP, &p);
}

static void param_pair(struct params *p, int64_t conv)
{
    param_int(p, conv >> 32);
    param_int(p, conv);
    param_int(p, conv & 0xffffffff);
    param_int(p, conv);
}

/* The pending pairs' cursors (groups have theirs from joining), one statement. */
static int send_pair_cursors(struct store *st)
{
    struct append_rows *r = &st->rows;
    struct params p;
    size_t i;
    int err;

    if (r->npair == 0)
        return QC_OK;
    params_init(&p);
    if (r->npair == 1) {
        param_pair(&p, r->pair[0]);
        r->npair = 0;
        return exec(st, ST_CURSOR_INIT_PAIR, &p);
    }
    for (i = 0; i < CONV_BATCH; i++) /* a partial batch repeats its last: INSERT IGNORE skips it */
        param_pair(&p, r->pair[i < r->npair ? i : r->npair - 1]);
    err = exec(st, ST_CURSOR_INIT_PAIR_N, &p);
    r->npair = 0;
    return err;
}

/*
 * The pending conversation rows in one statement; rows were queued in conv
 * order, so the locks are taken in conv order (no cycles between writers).
 * A partial batch repeats its last row (raising a row to the same values
 * twice changes nothing).
 */
static int send_conversation_rows(struct store *st)
{
    struct append_rows *r = &st->rows;
    struct params p;
    size_t i;
    int err;

    if (r->nconv == 0)
        return QC_OK;
    if (r->nconv == 1) {
        r->nconv = 0;
        return bump_conversation(st, &r->conv[0]);
    }
    params_init(&p);
    for (i = 0; i < CONV_BATCH; i++) {
        const struct conv_top *t = &r->conv[i < r->nconv ? i : r->nconv - 1];

        param_int(&p, t->conv);
        param_int(&p, t->cseq);
        param_int(&p, t->ts);
    }
    err = exec(st, ST_CONV_BUMP_N, &p);
    r->nconv = 0;
    return err;
}

/* The conversation rows, then the pairs' cursors (a sender run needs its cursor). */
static int send_conversations(struct store *st)
{
    int err = send_conversation_rows(st);

    return err == QC_OK ? send_pair_cursors(st) : err;
}

static int sender_seen(struct store *st, const struct sender_run *run)
{
    struct params p;

    params_init(&p);
    param_int(&p, run->to);
    param_int(&p, run->sender);
    param_int(&p, run->conv);
    param_int(&p, run->to);
    param_int(&p, run->from);
    param_int(&p, run->conv);
    param_int(&p, run->from);
    param_int(&p, run->sender);
    return exec(st, ST_SENDER_SEEN, &p);
}

/* The pending sender runs in one statement (unused rows NULL: they match nothing). */
static int send_sender_runs(struct store *st)
{
    struct append_rows *r = &st->rows;
    struct params p;
    size_t i;
    int err;

    if (r->nrun == 0)
        return QC_OK;
    if (r->nrun == 1) {
        r->nrun = 0;
        return sender_seen(st, &r->run[0]);
    }
    params_init(&p);
    for (i = 0; i < CONV_BATCH; i++) {
        if (i >= r->nrun) {
            param_null(&p);
            param_null(&p);
            param_null(&p);
            param_null(&p);
            continue;
        }
        param_int(&p, r->run[i].sender);
        param_int(&p, r->run[i].conv);
        param_int(&p, r->run[i].from);
        param_int(&p, r->run[i].to);
    }
    err = exec(st, ST_SENDER_SEEN_N, &p);
    r->nrun = 0;
    return err;
}

/*
 * log_batch_update's callbacks queue their rows; a full queue is sent.
 * The conversation rows always go before the runs, so a run's cursor
 * exists (a new pair's is made with its conversation row).
 */
static int queue_conversation(struct store *st, const struct conv_top *t)
{
    int err;

    if (!t->numbered) { /* a numbered one's reservation raised its row */
        if (st->rows.nconv == CONV_BATCH && (err = send_conversation_rows(st)) != QC_OK)
            return err;
        st->rows.conv[st->rows.nconv++] = *t;
    }
    if (t->conv > 0 && !pair_cache_has(&st->pairs, t->conv)) {
        if (st->rows.npair == CONV_BATCH && (err = send_conversations(st)) != QC_OK)
            return err;
        st->rows.pair[st->rows.npair++] = t->conv;
    }
    return QC_OK;
}

static int queue_sender_run(struct store *st, int32_t sender, int64_t conv, int64_t from,
                            int64_t to)
{
    int err;

    if (st->rows.nrun == CONV_BATCH &&
        ((err = send_conversations(st)) != QC_OK || (err = send_sender_runs(st)) != QC_OK))
        return err;
    st->rows.run[st->rows.nrun++] = (struct sender_run){ sender, conv, from, to };
    return QC_OK;
}

/* What the walk left queued: conversations first, then the runs. */
static int send_queued(struct store *st)
{
    int err = send_conversations(st);

    return err == QC_OK ? send_sender_runs(st) : err;
}

/* Give the k messages todo[0..k) (one conversation, batch order) the next k cseqs. */
static int reserve_cseqs(struct store *st, struct store_logmsg *msgs, const size_t *todo, size_t k)
{
    struct params p;
    long long last;
    int err;

    params_init(&p);
    param_int(&p, msgs[todo[0]].conv);
    param_int(&p, (long long)k);
    param_int(&p, msgs[todo[k - 1]].ts);
    if ((err = exec(st, ST_CONV_RESERVE, &p)) != QC_OK)
        return err;
    last = (long long)mysql_stmt_insert_id(st->stmt[ST_CONV_RESERVE].h);
    if (last < (long long)k) {
        log_error("mysql: conversation reserve: last cseq %lld after reserving %zu", last, k);
        return QC_ESTORAGE;
    }
    for (size_t i = 0; i < k; i++)
        msgs[todo[i]].cseq = last - (int64_t)k + 1 + (int64_t)i;
    return QC_OK;
}

/* A conversation's messages to number: todo[first..first + k) of the batch. */
struct reservation {
    int64_t conv;
    size_t first, k;
};

/* Give r's messages the k cseqs up to last, its conversation's new last cseq. */
static void number_reserved(struct log_batch *b, const struct reservation *r, int64_t last)
{
    for (size_t i = 0; i < r->k; i++)
        b->msgs[b->todo[r->first + i]].cseq = last - (int64_t)r->k + 1 + (int64_t)i;
}

/*
 * n (2..CONV_BATCH) conversations' reservations in two round trips: one
 * multi-row upsert raises each last cseq by its count (rows in conv order,
 * locked until the commit), one read gets the new values back.
 */
static int reserve_batch(struct store *st, struct log_batch *b, const struct reservation *r,
                         size_t n)
{
    struct params p;
    size_t i, got = 0;
    int err, rc;

    params_init(&p);
    for (i = 0; i < CONV_BATCH; i++) {
        const struct reservation *x = &r[i < n ? i : n - 1];

        param_int(&p, x->conv);
        param_int(&p, i < n ? (long long)x->k : 0); /* a padding row reserves nothing */
        param_int(&p, b->msgs[b->todo[x->first + x->k - 1]].ts);
    }
    if ((err = exec(st, ST_CONV_RESERVE_N, &p)) != QC_OK)
        return err;
    params_init(&p);
    for (i = 0; i < CONV_BATCH; i++)
        param_int(&p, r[i < n ? i : n - 1].conv);
    if ((err = exec(st, ST_CONV_LAST_N, &p)) != QC_OK)
        return err;
    while ((rc = fetch(st, ST_CONV_LAST_N)) == 1) {
        int64_t conv = col_int(st, ST_CONV_LAST_N, 0), last = col_int(st, ST_CONV_LAST_N, 1);

        for (i = 0; i < n && r[i].conv != conv; i++)
            ;
        if (i < n && last >= (int64_t)r[i].k) {
            number_reserved(b, &r[i], last);
            got++;
        }
    }
    finish(st, ST_CONV_LAST_N);
    if (rc < 0 || got != n) {
        log_error("mysql: conversation reserve batch: %zu of %zu conversations read back", got, n);
        return QC_ESTORAGE;
    }
    return QC_OK;
}

/*
 * Number every message given with cseq 0 (b->todo, by conv): CONV_BATCH
 * conversations per reserve_batch, a lone one by reserve_cseqs.
 */
static int reserve_all(struct store *st, struct log_batch *b)
{
    struct reservation r[CONV_BATCH];
    size_t i = 0, n = 0;
    int err = QC_OK;

    while (i < b->ntodo && err == QC_OK) {
        size_t j = i;
        int64_t conv = b->msgs[b->todo[i]].conv;

        while (j < b->ntodo && b->msgs[b->todo[j]].conv == conv)
            j++;
        r[n++] = (struct reservation){ conv, i, j - i };
        i = j;
        if (n == CONV_BATCH || i == b->ntodo) {
            err = n == 1 ? reserve_cseqs(st, b->msgs, b->todo + r[0].first, r[0].k)
                         : reserve_batch(st, b, r, n);
            n = 0;
        }
    }
    return err;
}

static int op_log_append(struct store *st, void *arg)
{
    struct log_batch *b = arg;
    int err;

    log_batch_unnumber(b); /* a retry numbers them again */
    st->rows.nconv = 0;
    st->rows.npair = 0;
    st->rows.nrun = 0;
    if ((err = tx_begin(st)) != QC_OK)
        return err;
    err = reserve_all(st, b);
    if (err == QC_OK)
        log_batch_sort(b);
    if (err == QC_OK)
        err = insert_messages(st, b->msgs, b->n);
    if (err == QC_OK)
        err = log_batch_update(b, st, queue_conversation, queue_sender_run);
    if (err == QC_OK)
        err = send_queued(st);
    return tx_end(st, err);
}

/*
 * Idempotent as a whole for messages with their cseq (INSERT IGNORE,
 * GREATEST, INSERT IGNORE), so a lost connection or a deadlock simply runs
 * it again; messages with cseq 0 are numbered afresh by each run.
 */
static int mysql_store_log_append(struct store *st, struct store_logmsg *msgs, size_t n)
{
    struct log_batch b;
    int err;

    if (n == 0)
        return QC_OK;
    if ((err = log_batch_init(&b, msgs, n, "mysql")) != QC_OK)
        return err;
    err = run(st, op_log_append, &b);
    if (err == QC_OK)
        remember_pairs(st, &b);
    else /* rolled back (or unknown): the caller's messages are as they were */
        log_batch_unnumber(&b);
    log_batch_free(&b);
    return err;
}

struct mark_batch {
    const struct store_convmark *marks;
    size_t n;
};

/* Each conversation's last cseq raised to its mark (GREATEST: idempotent, so retried whole). */
static int op_conv_raise(struct store *st, void *arg)
{
    const struct mark_batch *b = arg;
    struct params p;
    int err;

    if ((err = tx_begin(st)) != QC_OK)
        return err;
    for (size_t i = 0; i < b->n && err == QC_OK; i++) {
        params_init(&p);
        param_int(&p, b->marks[i].conv);
        param_int(&p, b->marks[i].cseq);
        param_int(&p, b->marks[i].ts);
        err = exec(st, ST_CONV_BUMP, &p);
    }
    return tx_end(st, err);
}

static int mysql_store_conv_raise(struct store *st, const struct store_convmark *marks, size_t n)
{
    struct mark_batch b = { marks, n };

    for (size_t i = 0; i < n; i++)
        if (marks[i].conv == 0 || marks[i].cseq <= 0)
            return QC_EBADREQ;
    return n == 0 ? QC_OK : run(st, op_conv_raise, &b);
}

static int mysql_store_conv_last_cseq(struct store *st, int64_t conv, int64_t *last)
{
    struct keyed k = { ST_CONV_LAST, conv };
    int err, rc;

    *last = 0;
    if ((err = run(st, op_keyed, &k)) != QC_OK)
        return err;
    rc = fetch(st, ST_CONV_LAST);
    if (rc > 0)
        *last = col_int(st, ST_CONV_LAST, 0);
    finish(st, ST_CONV_LAST);
    return rc < 0 ? QC_ESTORAGE : QC_OK;
}

/* The current row of a (conv, cseq, mid, sender, ts, body) result. */
static void row_message(struct store *st, enum stmt_id id, struct store_logmsg *m)
{
    m->conv = col_int(st, id, 0);
    m->cseq = col_int(st, id, 1);
    m->mid = col_int(st, id, 2);
    m->sender = (int32_t)col_int(st, id, 3);
    m->ts = col_int(st, id, 4);
    m->body = col_text(st, id, 5);
    m->len = col_len(st, id, 5);
}

/* A statement with its parameters, run (and retried) by run(). */
struct prepared {
    enum stmt_id id;
    struct params p;
};

static int op_prepared(struct store *st, void *arg)
{
    struct prepared *q = arg;

    return exec(st, q->id, &q->p);
}

static int mysql_store_history(struct store *st, int64_t conv, int64_t before, int64_t after,
                               int limit, store_logmsg_cb cb, void *arg, bool *more)
{
    bool newest = after < 0;
    struct prepared q;
    struct store_logmsg m;
    int err, rc, row = 0;

    *more = false;
    if (limit < 1 || limit > STORE_HISTORY_MAX)
        return QC_EBADREQ;
    q.id = newest ? ST_HISTORY_NEWEST : ST_HISTORY_OLDEST;
    params_init(&q.p);
    param_int(&q.p, conv);
    param_int(&q.p, before >= 0 ? before : CSEQ_NONE);
    param_int(&q.p, after >= 0 ? after : 0);
    param_int(&q.p, limit + 1);
    if ((err = run(st, op_prepared, &q)) != QC_OK)
        return err;
    st->depth++;
    while ((rc = fetch(st, q.id)) > 0) {
        bool extra;

        *more = col_int(st, q.id, 6) > limit;
        extra = *more && (newest ? row == 0 : row == limit);
        row++;
        if (extra)
            continue;
        row_message(st, q.id, &m);
        cb(arg, &m);
    }
    st->depth--;
    finish(st, q.id);
    return rc < 0 ? QC_ESTORAGE : QC_OK;
}

/*
 * A conversation list, read whole before any callback: the unread counts
 * come from a second statement.  Names and last bodies are copies.
 */
struct conv_list {
    int32_t userid;
    int limit;
    struct store_conv_info *c;
    char **text; /* 2 per conversation: name, last */
    size_t n;
};

static void conv_list_free(struct conv_list *l)
{
    for (size_t i = 0; i < 2 * l->n; i++)
        free(l->text[i]);
    free(l->text);
    free(l->c);
    l->text = NULL;
    l->c = NULL;
    l->n = 0;
}

/* A copy of column col of the current row, with a NUL (NULL when out of memory). */
static char *col_copy(struct store *st, enum stmt_id id, unsigned col)
{
    size_t len = col_len(st, id, col);
    char *s = malloc(len + 1);

    if (s != NULL)
        memcpy(s, col_text(st, id, col), len + 1);
    return s;
}

/* The current ST_CONVERSATIONS row into l->c[l->n]. */
static int keep_conversation(struct store *st, struct conv_list *l)
{
    enum stmt_id id = ST_CONVERSATIONS;
    struct store_conv_info *c = &l->c[l->n];
    char **text = &l->text[2 * l->n];

    memset(c, 0, sizeof(*c));
    text[0] = text[1] = NULL;
    l->n++;
    c->conv = col_int(st, id, 0);
    c->with = store_conv_other(c->conv, l->userid);
    c->groupid = store_conv_groupid(c->conv);
    c->last_cseq = col_int(st, id, 1);
    c->read_cseq = col_int(st, id, 2);
    c->last_ts = col_int(st, id, 3);
    if ((text[0] = col_copy(st, id, 4)) == NULL)
        return QC_ESTORAGE;
    c->name = text[0];
    if (!st->stmt[id].null[5]) {
        if ((text[1] = col_copy(st, id, 5)) == NULL)
            return QC_ESTORAGE;
        c->last = text[1];
        c->last_len = col_len(st, id, 5);
    }
    return QC_OK;
}

static int read_conversations(struct store *st, struct conv_list *l)
{
    struct params p;
    int err = QC_OK, rc, i;

    params_init(&p);
    for (i = 0; i < 4; i++)
        param_int(&p, l->userid);
    param_int(&p, l->limit);
    if ((err = exec(st, ST_CONVERSATIONS, &p)) != QC_OK)
        return err;
    while ((rc = fetch(st, ST_CONVERSATIONS)) > 0 && err == QC_OK)
        err = l->n < (size_t)l->limit ? keep_conversation(st, l) : QC_ESTORAGE;
    finish(st, ST_CONVERSATIONS);
    return err != QC_OK ? err : rc < 0 ? QC_ESTORAGE : QC_OK;
}

/* Whether conversation c can have unread messages at all. */
static bool may_have_unread(const struct store_conv_info *c)
{
    return c->last_cseq > c->read_cseq;
}

/* The unread counts of l->c[from, to) (CONV_BATCH at most with something unread). */
static int count_unread(struct store *st, struct conv_list *l, size_t from, size_t to)
{
    struct params p;
    unsigned ranges = 0;
    int rc;

    params_init(&p);
    for (size_t i = from; i < to; i++) {
        if (!may_have_unread(&l->c[i]))
            continue;
        param_int(&p, l->c[i].conv);
        param_int(&p, l->c[i].read_cseq);
        ranges++;
    }
    if (ranges == 0)
        return QC_OK;
    for (; ranges < CONV_BATCH; ranges++) {
        param_null(&p);
        param_null(&p);
    }
    param_int(&p, l->userid);
    if ((rc = exec(st, ST_UNREAD_COUNTS, &p)) != QC_OK)
        return rc;
    while ((rc = fetch(st, ST_UNREAD_COUNTS)) > 0) {
        int64_t conv = col_int(st, ST_UNREAD_COUNTS, 0);

        for (size_t i = from; i < to; i++)
            if (l->c[i].conv == conv)
                l->c[i].unread = col_int(st, ST_UNREAD_COUNTS, 1);
    }
    finish(st, ST_UNREAD_COUNTS);
    return rc < 0 ? QC_ESTORAGE : QC_OK;
}

static int op_conversations(struct store *st, void *arg)
{
    struct conv_list *l = arg;
    size_t i = 0, j;
    int err;

    conv_list_free(l); /* a retry starts again */
    l->c = malloc((size_t)l->limit * sizeof(*l->c));
    l->text = malloc(2 * (size_t)l->limit * sizeof(*l->text));
    if (l->c == NULL || l->text == NULL)
        return QC_ESTORAGE;
    if ((err = read_conversations(st, l)) != QC_OK)
        return err;
    while (i < l->n && err == QC_OK) {
        unsigned ranges = 0;

        for (j = i; j < l->n && ranges < CONV_BATCH; j++)
            ranges += may_have_unread(&l->c[j]);
        err = count_unread(st, l, i, j);
        i = j;
    }
    return err;
}

static int mysql_store_conversations(struct store *st, int32_t userid, int limit, store_conv_cb cb,
                                     void *arg)
{
    struct conv_list l = { .userid = userid, .limit = limit };
    int err;

    if (limit < 1 || limit > STORE_CONVS_MAX)
        return QC_EBADREQ;
    err = run(st, op_conversations, &l);
    if (err == QC_OK) {
        st->depth++;
        for (size_t i = 0; i < l.n; i++)
            cb(arg, &l.c[i]);
        st->depth--;
    }
    conv_list_free(&l);
    return err;
}

/*
 * The login's undelivered messages, planned in this process.  The order is
 * the one of the SQLite driver: by the highest ts, then mid, a
 * conversation had up to each message (so conversations interleave by time
 * and each stays in cseq order), then conv and cseq.  First the
 * conversations with something after the user's delivered cursor; then,
 * BODY_CONVS conversations per query, the keys of the first `window` stored
 * messages after each cursor, window = max_count + 1 at first.  These hold
 * every message that can make the cut unless the user's own messages are
 * among a conversation's first window: when the plan reaches the last key
 * read of a conversation that had window of them before it is full, the
 * keys did not hold enough and they are read again with twice the window.
 * Then only the picked bodies are fetched, per conversation one cseq
 * range.  Every step is a walk from a cursor on over the rows it returns:
 * nothing reads a conversation from its first message.
 */
struct und_row {
    int64_t conv, cseq, mid, ts;
    int64_t ets, emid; /* the highest ts and mid of its conversation up to it */
    int32_t sender;
    bool last_read; /* the last key read of a conversation that may go on */
    bool picked;
    size_t len;
    char *body; /* the picked rows' bodies, fetched last */
};

struct und_conv {
    int64_t conv, after; /* the user's delivered cursor */
};

struct und_plan {
    int32_t userid;
    int max_count;
    size_t max_bytes;
    bool more;              /* some were left out */
    struct und_conv *convs; /* by conv */
    size_t nconv, conv_cap;
    struct und_row *rows; /* by conv, cseq */
    size_t n, cap;
    size_t *order; /* rows[] in the order handed out */
};

#define UND_ROWS_INITIAL  256
#define UND_CONVS_INITIAL 32

static void und_rows_free(struct und_plan *u)
{
    for (size_t i = 0; i < u->n; i++)
        free(u->rows[i].body);
    free(u->rows);
    free(u->order);
    u->rows = NULL;
    u->order = NULL;
    u->n = u->cap = 0;
}

static void und_plan_free(struct und_plan *u)
{
    und_rows_free(u);
    free(u->convs);
    u->convs = NULL;
    u->nconv = u->conv_cap = 0;
}

static struct und_row *und_row_add(struct und_plan *u)
{
    if (u->n == u->cap) {
        size_t cap = u->cap ? 2 * u->cap : UND_ROWS_INITIAL;
        struct und_row *rows = realloc(u->rows, cap * sizeof(*rows));

        if (rows == NULL)
            return NULL;
        u->rows = rows;
        u->cap = cap;
    }
    memset(&u->rows[u->n], 0, sizeof(u->rows[0]));
    return &u->rows[u->n++];
}

static int read_undelivered_cursors(struct store *st, struct und_plan *u)
{
    enum stmt_id id = ST_UNDELIVERED_CURSORS;
    struct params p;
    int err = QC_OK, rc;

    params_init(&p);
    param_int(&p, u->userid);
    param_int(&p, u->userid);
    if ((err = exec(st, id, &p)) != QC_OK)
        return err;
    while ((rc = fetch(st, id)) > 0) {
        if (u->nconv == u->conv_cap) {
            size_t cap = u->conv_cap ? 2 * u->conv_cap : UND_CONVS_INITIAL;
            struct und_conv *convs = realloc(u->convs, cap * sizeof(*convs));

            if (convs == NULL) {
                err = QC_ESTORAGE;
                break;
            }
            u->convs = convs;
            u->conv_cap = cap;
        }
        u->convs[u->nconv].conv = col_int(st, id, 0);
        u->convs[u->nconv].after = col_int(st, id, 1);
        u->nconv++;
    }
    finish(st, id);
    return err != QC_OK ? err : rc < 0 ? QC_ESTORAGE : QC_OK;
}

/* The keys of the last keys query into u. */
static int keep_keys(struct store *st, struct und_plan *u)
{
    enum stmt_id id = ST_UNDELIVERED_KEYS;
    int rc;

    while ((rc = fetch(st, id)) > 0) {
        struct und_row *r = und_row_add(u);

        if (r == NULL) {
            rc = -1;
            break;
        }
        r->conv = col_int(st, id, 0);
        r->cseq = col_int(st, id, 1);
        r->mid = col_int(st, id, 2);
        r->sender = (int32_t)col_int(st, id, 3);
        r->ts = col_int(st, id, 4);
        r->len = (size_t)col_int(st, id, 5);
    }
    finish(st, id);
    return rc < 0 ? QC_ESTORAGE : QC_OK;
}

static int by_conv_cseq(const void *a, const void *b)
{
    const struct und_row *x = a, *y = b;

    if (x->conv != y->conv)
        return x->conv < y->conv ? -1 : 1;
    return x->cseq < y->cseq ? -1 : x->cseq > y->cseq;
}

/*
 * Sort the keys by conv and cseq, give each its conversation's running
 * highest ts and mid, and mark the last key of each conversation that
 * filled its window (more may follow it).
 */
static void annotate_keys(struct und_plan *u, long long window)
{
    size_t i, first = 0;

    if (u->n == 0) /* every message after the cursors purged, or not stored */
        return;
    qsort(u->rows, u->n, sizeof(*u->rows), by_conv_cseq);
    for (i = 0; i < u->n; i++) {
        struct und_row *r = &u->rows[i];

        if (i > 0 && u->rows[i - 1].conv == r->conv) {
            r->ets = u->rows[i - 1].ets > r->ts ? u->rows[i - 1].ets : r->ts;
            r->emid = u->rows[i - 1].emid > r->mid ? u->rows[i - 1].emid : r->mid;
        } else {
            first = i;
            r->ets = r->ts;
            r->emid = r->mid;
        }
        if ((i + 1 == u->n || u->rows[i + 1].conv != r->conv) &&
            (long long)(i + 1 - first) >= window)
            r->last_read = true;
    }
}

/* The first window keys after each cursor, BODY_CONVS conversations per query. */
static int read_undelivered_keys(struct store *st, struct und_plan *u, long long window)
{
    struct params p;
    size_t i = 0, k;
    int err = QC_OK;

    while (i < u->nconv && err == QC_OK) {
        params_init(&p);
        for (k = 0; k < BODY_CONVS; k++, i++) {
            if (i < u->nconv) {
                param_int(&p, u->convs[i].conv);
                param_int(&p, u->convs[i].after);
                param_int(&p, window);
            } else {
                param_null(&p);
                param_null(&p);
                param_int(&p, 0);
            }
        }
        if ((err = exec(st, ST_UNDELIVERED_KEYS, &p)) == QC_OK)
            err = keep_keys(st, u);
    }
    if (err == QC_OK)
        annotate_keys(u, window);
    return err;
}

static int by_delivery_order(const void *a, const void *b, void *arg)
{
    const struct und_row *rows = arg, *x = &rows[*(const size_t *)a],
                         *y = &rows[*(const size_t *)b];

    if (x->ets != y->ets)
        return x->ets < y->ets ? -1 : 1;
    if (x->emid != y->emid)
        return x->emid < y->emid ? -1 : 1;
    if (x->conv != y->conv)
        return x->conv < y->conv ? -1 : 1;
    return x->cseq < y->cseq ? -1 : x->cseq > y->cseq;
}

/*
 * Sort u and pick what the reply takes: max_count, max_bytes (the first one
 * always).  *short_keys: a conversation's keys ended before the plan did.
 */
static int pick_undelivered(struct und_plan *u, bool *short_keys)
{
    size_t i, bytes = 0;
    int picked = 0;

    u->more = false;
    u->order = malloc((u->n ? u->n : 1) * sizeof(*u->order));
    if (u->order == NULL)
        return QC_ESTORAGE;
    for (i = 0; i < u->n; i++)
        u->order[i] = i;
    qsort_r(u->order, u->n, sizeof(*u->order), by_delivery_order, u->rows);
    for (i = 0; i < u->n; i++) {
        struct und_row *r = &u->rows[u->order[i]];

        if (r->sender != u->userid) {
            if (picked == u->max_count || (picked > 0 && r->len > u->max_bytes - bytes)) {
                u->more = true;
                break;
            }
            bytes += r->len < u->max_bytes - bytes ? r->len : u->max_bytes - bytes;
            picked++;
            r->picked = true;
        }
        if (r->last_read) { /* what follows it in its conversation was not read */
            *short_keys = true;
            break;
        }
    }
    return QC_OK;
}

static struct und_row *und_find(struct und_plan *u, int64_t conv, int64_t cseq)
{
    size_t lo = 0, hi = u->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct und_row *r = &u->rows[mid];

        if (r->conv < conv || (r->conv == conv && r->cseq < cseq))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < u->n && u->rows[lo].conv == conv && u->rows[lo].cseq == cseq ? &u->rows[lo] : NULL;
}

/* Copy the bodies of the last bodies query into their picked rows. */
static int keep_bodies(struct store *st, struct und_plan *u)
{
    enum stmt_id id = ST_UNDELIVERED_BODIES;
    int rc;

    while ((rc = fetch(st, id)) > 0) {
        struct und_row *r = und_find(u, col_int(st, id, 0), col_int(st, id, 1));
        size_t len = col_len(st, id, 2);

        if (r == NULL || !r->picked || r->body != NULL)
            continue;
        if ((r->body = malloc(len + 1)) == NULL) {
            rc = -1;
            break;
        }
        memcpy(r->body, col_text(st, id, 2), len + 1);
        r->len = len;
    }
    finish(st, id);
    return rc < 0 ? QC_ESTORAGE : QC_OK;
}

/*
 * The picked rows' bodies, BODY_CONVS conversations per query: in each
 * conversation the picked rows are its first messages of others, so one
 * range (first - 1, last] with the user's own left out holds exactly them.
 */
static int fetch_undelivered_bodies(struct store *st, struct und_plan *u)
{
    struct params p;
    size_t i = 0, j, ranges;
    int err = QC_OK;

    while (i < u->n && err == QC_OK) {
        params_init(&p);
        for (ranges = 0; ranges < BODY_CONVS && i < u->n; i = j) {
            int64_t first = 0, last = 0;

            for (j = i; j < u->n && u->rows[j].conv == u->rows[i].conv; j++) {
                if (!u->rows[j].picked)
                    continue;
                first = first ? first : u->rows[j].cseq;
                last = u->rows[j].cseq;
            }
            if (last == 0)
                continue;
            param_int(&p, u->rows[i].conv);
            param_int(&p, first - 1);
            param_int(&p, last);
            ranges++;
        }
        if (ranges == 0)
            break;
        for (; ranges < BODY_CONVS; ranges++) {
            param_null(&p);
            param_null(&p);
            param_null(&p);
        }
        param_int(&p, u->userid);
        if ((err = exec(st, ST_UNDELIVERED_BODIES, &p)) == QC_OK)
            err = keep_bodies(st, u);
    }
    return err;
}

/* The whole plan, from the cursors to the picked bodies (run again from scratch on a retry). */
static int plan_undelivered(struct store *st, struct und_plan *u)
{
    long long window = (long long)u->max_count + 1;
    bool short_keys = true;
    int err;

    und_plan_free(u);
    u->more = false;
    if ((err = read_undelivered_cursors(st, u)) != QC_OK || u->nconv == 0)
        return err;
    while (short_keys) {
        short_keys = false;
        und_rows_free(u);
        if ((err = read_undelivered_keys(st, u, window)) != QC_OK ||
            (err = pick_undelivered(u, &short_keys)) != QC_OK)
            return err;
        window = window > LLONG_MAX / 2 ? LLONG_MAX : 2 * window;
    }
    return fetch_undelivered_bodies(st, u);
}

static int op_undelivered(struct store *st, void *arg)
{
    return plan_undelivered(st, arg);
}

/* Hand the picked rows out in order (one purged meanwhile is left out). */
static void hand_picked(struct store *st, const struct und_plan *u, store_logmsg_cb cb, void *arg)
{
    st->depth++;
    for (size_t i = 0; i < u->n; i++) {
        const struct und_row *r = &u->rows[u->order[i]];
        struct store_logmsg m = { r->conv, r->cseq, r->mid, r->ts, r->sender, r->body, r->len };

        if (r->picked && r->body != NULL)
            cb(arg, &m);
    }
    st->depth--;
}

static int mysql_store_undelivered(struct store *st, int32_t userid, int max_count,
                                   size_t max_bytes, store_logmsg_cb cb, void *arg, bool *more)
{
    struct und_plan u = { .userid = userid, .max_count = max_count, .max_bytes = max_bytes };
    int err;

    *more = false;
    if (max_count < 1)
        return QC_EBADREQ;
    err = run(st, op_undelivered, &u);
    if (err == QC_OK) {
        hand_picked(st, &u, cb, arg);
        *more = u.more;
    }
    und_plan_free(&u);
    return err;
}

/* userids[i] owns pos[i]; one user for all (userids NULL): userid. */
struct advance_args {
    int32_t userid;
    const int32_t *userids;
    const struct store_cursor *pos;
    size_t n;
};

static void param_cursor(struct params *p, const struct advance_args *a, size_t i)
{
    param_int(p, a->userids ? a->userids[i] : a->userid);
    param_int(p, a->pos[i].conv);
    param_int(p, a->pos[i].cseq);
}

/* Raise cursors [i, i + CURSOR_BATCH) in one statement (one cursor: the short one). */
static int advance_some(struct store *st, const struct advance_args *a, size_t i)
{
    struct params p;
    size_t k;

    params_init(&p);
    if (a->n - i == 1) {
        param_cursor(&p, a, i);
        return exec(st, ST_DELIVERED_UP, &p);
    }
    /* A last, partial batch repeats its last cursor: raising it twice changes nothing. */
    for (k = 0; k < CURSOR_BATCH; k++)
        param_cursor(&p, a, i + k < a->n ? i + k : a->n - 1);
    return exec(st, ST_DELIVERED_UP_N, &p);
}

/*
 * CURSOR_BATCH cursors per upsert, one round trip each.  One statement is
 * atomic by itself; more run in one transaction.
 */
static int op_delivered_advance(struct store *st, void *arg)
{
    struct advance_args *a = arg;
    size_t i;
    int err;

    if (a->n <= CURSOR_BATCH)
        return advance_some(st, a, 0);
    if ((err = tx_begin(st)) != QC_OK)
        return err;
    for (i = 0; i < a->n && err == QC_OK; i += CURSOR_BATCH)
        err = advance_some(st, a, i);
    return tx_end(st, err);
}

static int mysql_store_delivered_advance(struct store *st, int32_t userid,
                                         const struct store_cursor *pos, size_t n)
{
    struct advance_args a = { userid, NULL, pos, n };

    return n == 0 ? QC_OK : run(st, op_delivered_advance, &a);
}

static int mysql_store_delivered_advance_many(struct store *st, const int32_t *userids,
                                              const struct store_cursor *pos, size_t n)
{
    struct advance_args a = { 0, userids, pos, n };

    return n == 0 ? QC_OK : run(st, op_delivered_advance, &a);
}

struct cursor_args {
    int32_t userid;
    int64_t conv, cseq;
    long long now;
};

static int op_read_set(struct store *st, void *arg)
{
    struct cursor_args *a = arg;
    struct params p;
    bool found = false;
    int err;

    params_init(&p);
    param_int(&p, a->userid);
    param_int(&p, a->conv);
    param_int(&p, a->cseq);
    param_int(&p, a->conv);
    if ((err = exec(st, ST_READ_UP, &p)) != QC_OK)
        return err;
    params_init(&p);
    param_int(&p, a->userid);
    param_int(&p, a->conv);
    err = query_int(st, ST_READ_GET, &p, &found, &a->now);
    return err == QC_OK && !found ? QC_ESTORAGE : err;
}

static int mysql_store_read_set(struct store *st, int32_t userid, int64_t conv, int64_t cseq,
                                int64_t *now)
{
    struct cursor_args a = { userid, conv, cseq, 0 };
    int err = run(st, op_read_set, &a);

    *now = err == QC_OK ? a.now : 0;
    return err;
}

static int op_member(struct store *st, void *arg)
{
    struct cursor_args *a = arg;
    struct params p;
    bool found = false;
    long long one = 0;
    int err;

    params_init(&p);
    param_int(&p, store_conv_groupid(a->conv));
    param_int(&p, a->userid);
    err = query_int(st, ST_MEMBER_EXISTS, &p, &found, &one);
    a->now = found;
    return err;
}

static int mysql_store_conv_member(struct store *st, int32_t userid, int64_t conv, bool *member)
{
    struct cursor_args a = { userid, conv, 0, 0 };
    int err;

    *member = false;
    if (conv > 0) {
        *member = store_conv_other(conv, userid) > 0;
        return QC_OK;
    }
    err = run(st, op_member, &a);
    *member = err == QC_OK && a.now;
    return err;
}

static int op_conv_join(struct store *st, void *arg)
{
    struct cursor_args *a = arg;

    return join_conversation(st, a->userid, a->conv, a->cseq);
}

static int mysql_store_conv_join(struct store *st, int32_t userid, int64_t conv, int64_t start)
{
    struct cursor_args a = { userid, conv, start, 0 };

    return run(st, op_conv_join, &a);
}

struct purge_args {
    int (*step)(struct store *st, struct purge_args *a); /* the deletes, in the transaction */
    int keep_days, max_per_conv, batch;
    int64_t conv;            /* conv_delete */
    int64_t scan_from, scan; /* the walk of the conversations: where it began, where it is */
    int removed;
};

static int delete_counted(struct store *st, enum stmt_id id, struct params *p, int *removed)
{
    int err = exec(st, id, p);

    if (err == QC_OK)
        *removed += (int)affected(st, id);
    return err;
}

/*
 * The window of one retention call: the conversations after from, at most
 * STORE_PURGE_SCAN_CONVS of them.  *count: how many (0: none is left);
 * *last: the last of them.
 */
static int purge_window(struct store *st, int64_t from, int64_t *last, int64_t *count)
{
    struct params p;
    int err, rc;

    params_init(&p);
    param_int(&p, from);
    if ((err = exec(st, ST_PURGE_WINDOW, &p)) != QC_OK)
        return err;
    if ((rc = fetch(st, ST_PURGE_WINDOW)) > 0) {
        *last = col_int(st, ST_PURGE_WINDOW, 0);
        *count = col_int(st, ST_PURGE_WINDOW, 1);
    }
    finish(st, ST_PURGE_WINDOW);
    return rc > 0 ? QC_OK : QC_ESTORAGE;
}

/*
 * Up to PURGE_FIND_ROWS (conversation, up to) pairs the find names in
 * (from, last]; the cap's search binds cap around the window.
 */
static int purge_find(struct store *st, int find, int cap, int64_t from, int64_t last,
                      int64_t found[][2], int *n)
{
    struct params p;
    int err, rc = 0;

    params_init(&p);
    if (cap > 0)
        param_int(&p, cap);
    param_int(&p, from);
    param_int(&p, last);
    if (cap > 0) {
        param_int(&p, cap);
        param_int(&p, cap);
    }
    if ((err = exec(st, find, &p)) != QC_OK)
        return err;
    for (*n = 0; *n < PURGE_FIND_ROWS && (rc = fetch(st, find)) > 0; (*n)++) {
        found[*n][0] = col_int(st, find, 0);
        found[*n][1] = col_int(st, find, 1);
    }
    finish(st, find);
    return rc < 0 ? QC_ESTORAGE : QC_OK;
}

/* Delete at most limit messages of conv up to cseq upto. */
static int purge_remove(struct store *st, int64_t conv, int64_t upto, int limit, int *removed)
{
    struct params p;

    params_init(&p);
    param_int(&p, conv);
    param_int(&p, upto);
    param_int(&p, limit);
    return delete_counted(st, ST_PURGE_CONV, &p, removed);
}

static const struct purge_walk_ops mysql_walk = { purge_window, purge_find, purge_remove };

static int purge_step(struct store *st, struct purge_args *a)
{
    struct params p;
    struct timespec now;
    int err = QC_OK;

    if (a->keep_days > 0) {
        clock_gettime(CLOCK_REALTIME, &now);
        params_init(&p);
        param_int(&p,
                  (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000 - a->keep_days * MS_PER_DAY);
        param_int(&p, a->batch);
        err = delete_counted(st, ST_PURGE_AGE, &p, &a->removed);
    }
    if (err == QC_OK && a->max_per_conv > 0)
        err = purge_walk(st, &mysql_walk, ST_PURGE_FIND, a->max_per_conv, a->batch, &a->scan,
                         &a->removed);
    else if (err == QC_OK)
        a->scan = STORE_SCAN_START; /* no cap: nothing to walk */
    return err;
}

/* Run a->step in one transaction (retried by run()); *removed only once it committed. */
static int op_purge(struct store *st, void *arg)
{
    struct purge_args *a = arg;
    int err;

    a->removed = 0;
    a->scan = a->scan_from; /* a retried transaction walks again from where the call began */
    if ((err = tx_begin(st)) != QC_OK)
        return err;
    return tx_end(st, a->step(st, a));
}

/* *removed and *scan take the call's result only once its deletes committed. */
static int run_purge(struct store *st, struct purge_args *a, int64_t *scan, int *removed)
{
    int err = run(st, op_purge, a);

    if (err == QC_OK) {
        *removed = a->removed;
        if (scan != NULL)
            *scan = a->scan;
    }
    return err;
}

static int mysql_store_log_purge(struct store *st, int keep_days, int max_per_conv, int batch,
                                 int64_t *scan, int *removed)
{
    struct purge_args a = { .step = purge_step,
                            .keep_days = keep_days,
                            .max_per_conv = max_per_conv,
                            .batch = batch,
                            .scan_from = *scan };

    *removed = 0;
    if (batch < 1 || keep_days < 0 || max_per_conv < 0)
        return QC_EBADREQ;
    if (keep_days == 0 && max_per_conv == 0) {
        *scan = STORE_SCAN_START;
        return QC_OK;
    }
    return run_purge(st, &a, scan, removed);
}

/* What every participant has had delivered. */
static int purge_delivered(struct store *st, struct purge_args *a)
{
    return purge_walk(st, &mysql_walk, ST_PURGE_DELIVERED_FIND, 0, a->batch, &a->scan, &a->removed);
}

static int mysql_store_log_purge_delivered(struct store *st, int batch, int64_t *scan, int *removed)
{
    struct purge_args a = { .step = purge_delivered, .batch = batch, .scan_from = *scan };

    *removed = 0;
    if (batch < 1)
        return QC_EBADREQ;
    return run_purge(st, &a, scan, removed);
}

static int delete_conversation(struct store *st, struct purge_args *a)
{
    struct params p;
    int err, none = 0;

    params_init(&p);
    param_int(&p, a->conv);
    param_int(&p, a->batch);
    if ((err = delete_counted(st, ST_CONV_DELETE_MSGS, &p, &a->removed)) != QC_OK ||
        a->removed == a->batch)
        return err;
    pair_cache_forget(&st->pairs, a->conv);
    params_key(&p, ST_CONV_DELETE_CURSORS, a->conv);
    if ((err = delete_counted(st, ST_CONV_DELETE_CURSORS, &p, &none)) != QC_OK)
        return err;
    params_key(&p, ST_CONV_DELETE_ROW, a->conv);
    return delete_counted(st, ST_CONV_DELETE_ROW, &p, &none);
}

static int mysql_store_conv_delete(struct store *st, int64_t conv, int batch, int *removed)
{
    struct purge_args a = { .step = delete_conversation, .batch = batch, .conv = conv };

    *removed = 0;
    if (batch < 1)
        return QC_EBADREQ;
    return run_purge(st, &a, NULL, removed);
}

/*
 * The legacy take's first half: the log's undelivered messages (a migrated
 * queue), read and the cursors caught up in one transaction, handed over
 * after the commit (twice at worst, never lost, as for the queue).
 */
static int op_log_take(struct store *st, void *arg)
{
    struct und_plan *u = arg;
    struct params p;
    int err;

    if ((err = tx_begin(st)) != QC_OK)
        return err;
    err = plan_undelivered(st, u);
    if (err == QC_OK) {
        params_key(&p, ST_LOG_CATCH_UP, u->userid);
        err = exec(st, ST_LOG_CATCH_UP, &p);
    }
    err = tx_end(st, err);
    return err == E_COMMIT_UNKNOWN ? QC_OK : err;
}

static void legacy_message(void *arg, const struct store_logmsg *m)
{
    const struct sink *k = arg;

    k->msg(k->arg, m->body, m->len);
}

static int take_log(struct store *st, int32_t userid, store_msg_cb cb, void *arg)
{
    struct sink k = { .msg = cb, .arg = arg };
    struct und_plan u = { .userid = userid, .max_count = INT_MAX, .max_bytes = (size_t)-1 };
    int pending = 0, err;

    err = read_int(st, ST_LOG_PENDING, userid, QC_ESTORAGE, &pending);
    if (err != QC_OK || !pending)
        return err;
    if ((err = run(st, op_log_take, &u)) == QC_OK)
        hand_picked(st, &u, legacy_message, &k);
    und_plan_free(&u);
    return err;
}

/* ---- offline messages: storing -------------------------------------- */

struct store_args {
    const int32_t *userids;
    size_t n;
    const char *msg;
    size_t len;
};

/* The cap: drop the oldest beyond max_offline of one user, and count them. */
static int trim_queue(struct store *st, int32_t userid, long long excess)
{
    struct params p;
    unsigned long long dropped;
    int err;

    params_init(&p);
    param_int(&p, userid);
    param_int(&p, excess);
    if ((err = exec(st, ST_OFFLINE_TRIM, &p)) != QC_OK)
        return err;
    dropped = affected(st, ST_OFFLINE_TRIM);
    if (dropped == 0)
        return QC_OK;
    log_info("user %d: offline queue over limits.max_offline_messages (%d): dropped the "
             "oldest %llu message(s)",
             userid, st->max_offline, dropped);
    params_init(&p);
    param_int(&p, userid);
    param_int(&p, (long long)dropped);
    param_int(&p, (long long)dropped);
    return exec(st, ST_DROPPED_ADD, &p);
}

/* Trim every recipient of one batch whose queue is over the cap. */
static int apply_cap(struct store *st, const int32_t *ids, size_t n)
{
    struct params p;
    size_t i;
    int err, rc;

    params_init(&p);
    for (i = 0; i < OFFLINE_BATCH; i++) {
        if (i < n)
            param_int(&p, ids[i]);
        else
            param_null(&p);
    }
    param_int(&p, st->max_offline);
    if ((err = exec(st, ST_OFFLINE_OVER_CAP, &p)) != QC_OK)
        return err;
    /* The rows are buffered: other statements may run while reading them. */
    while ((rc = fetch(st, ST_OFFLINE_OVER_CAP)) > 0) {
        err = trim_queue(st, (int32_t)col_int(st, ST_OFFLINE_OVER_CAP, 0),
                         col_int(st, ST_OFFLINE_OVER_CAP, 1) - st->max_offline);
        if (err != QC_OK)
            break;
    }
    finish(st, ST_OFFLINE_OVER_CAP);
    return rc < 0 ? QC_ESTORAGE : err;
}

/* One batch of at most OFFLINE_BATCH recipients; every one of them must exist. */
static int store_batch(struct store *st, const struct store_args *a, const int32_t *ids, size_t n)
{
    struct params p;
    size_t i;
    int err;

    params_init(&p);
    param_text(&p, a->msg, a->len);
    for (i = 0; i < OFFLINE_BATCH; i++) {
        if (i < n)
            param_int(&p, ids[i]);
        else
            param_null(&p);
    }
    if ((err = exec(st, ST_OFFLINE_INSERT_BATCH, &p)) != QC_OK)
        return err;
    if (affected(st, ST_OFFLINE_INSERT_BATCH) != n)
        return QC_ENOUSER;
    return st->max_offline > 0 ? apply_cap(st, ids, n) : QC_OK;
}

static int op_offline_store(struct store *st, void *arg)
{
    struct store_args *a = arg;
    size_t done, chunk;
    int err;

    if ((err = tx_begin(st)) != QC_OK)
        return err;
    for (done = 0; done < a->n && err == QC_OK; done += chunk) {
        chunk = a->n - done < OFFLINE_BATCH ? a->n - done : OFFLINE_BATCH;
        err = store_batch(st, a, a->userids + done, chunk);
    }
    return tx_end(st, err);
}

static int mysql_store_offline_store(struct store *st, const int32_t *userids, size_t n,
                                     const char *msg, size_t len)
{
    struct store_args a = { userids, n, msg, len };

    if (n == 0)
        return QC_OK;
    if (len > INT_MAX)
        return QC_ETOOLONG;
    return run(st, op_offline_store, &a);
}

/* ---- offline messages: taking --------------------------------------- */

struct take_args {
    int32_t userid;
    long long rows; /* messages buffered in ST_OFFLINE_LIST */
    long long dropped;
};

/* Read the count of messages dropped for the cap and reset it. */
static int take_dropped(struct store *st, struct take_args *a)
{
    struct params p;
    bool found = false;
    int err;

    a->dropped = 0;
    params_key(&p, ST_DROPPED_GET, a->userid);
    if ((err = query_int(st, ST_DROPPED_GET, &p, &found, &a->dropped)) != QC_OK || !found)
        return err;
    params_key(&p, ST_DROPPED_CLEAR, a->userid);
    return exec(st, ST_DROPPED_CLEAR, &p);
}

/* Lock and buffer the queue, then delete exactly what was read. */
static int take_queue(struct store *st, struct take_args *a)
{
    MYSQL_STMT *h;
    struct params p;
    long long maxid;
    int err;

    params_key(&p, ST_OFFLINE_LIST, a->userid);
    if ((err = exec(st, ST_OFFLINE_LIST, &p)) != QC_OK)
        return err;
    h = st->stmt[ST_OFFLINE_LIST].h;
    a->rows = (long long)mysql_stmt_num_rows(h);
    if (a->rows == 0)
        return QC_OK;
    mysql_stmt_data_seek(h, (unsigned long long)a->rows - 1);
    if (fetch(st, ST_OFFLINE_LIST) <= 0)
        return QC_ESTORAGE;
    maxid = col_int(st, ST_OFFLINE_LIST, 0);
    mysql_stmt_data_seek(h, 0);
    params_init(&p);
    param_int(&p, a->userid);
    param_int(&p, maxid);
    return exec(st, ST_OFFLINE_DELETE, &p);
}

/*
 * The rows stay buffered for the caller, who hands them over after the
 * commit.  When the commit's outcome is unknown they are handed over all
 * the same: if it did not happen they come again at the next login.
 */
static int op_offline_take(struct store *st, void *arg)
{
    struct take_args *a = arg;
    int err;

    a->rows = 0;
    a->dropped = 0;
    if ((err = tx_begin(st)) != QC_OK)
        return err;
    err = take_queue(st, a);
    if (err == QC_OK)
        err = take_dropped(st, a);
    err = tx_end(st, err);
    if (err == E_COMMIT_UNKNOWN) {
        log_warning("mysql: user %d: commit of the offline take unknown; "
                    "the messages may be delivered twice",
                    (int)a->userid);
        return QC_OK;
    }
    return err;
}

static int mysql_store_offline_take(struct store *st, int32_t userid, store_msg_cb cb, void *arg,
                                    int *dropped)
{
    struct take_args a = { userid, 0, 0 };
    struct sink k = { .msg = cb, .arg = arg };
    int pending = 0, rows, err;

    *dropped = 0;
    if ((err = take_log(st, userid, cb, arg)) != QC_OK)
        return err;
    /* Most logins find nothing: check that without locking anything. */
    err = read_int(st, ST_OFFLINE_PENDING, userid, QC_ESTORAGE, &pending);
    if (err != QC_OK || !pending)
        return err;
    err = run(st, op_offline_take, &a);
    if (err != QC_OK) {
        finish(st, ST_OFFLINE_LIST);
        return err;
    }
    *dropped = clamp_int(a.dropped);
    if (a.rows == 0) {
        finish(st, ST_OFFLINE_LIST);
        return QC_OK;
    }
    return each_row(st, ST_OFFLINE_LIST, &k, &rows);
}

static int mysql_store_offline_count(struct store *st, int32_t userid, int *count)
{
    return read_int(st, ST_OFFLINE_COUNT, userid, QC_ESTORAGE, count);
}

const struct store_ops store_mysql_ops = {
    .name = "mysql",
    .open = mysql_store_open,
    .close = mysql_store_close,
    .init_schema = mysql_store_init_schema,
    .probe_schema = mysql_store_probe_schema,
    .ping = mysql_store_ping,
    .user_create = mysql_store_user_create,
    .user_get = mysql_store_user_get,
    .user_set_password = mysql_store_user_set_password,
    .friend_add = mysql_store_friend_add,
    .friend_count = mysql_store_friend_count,
    .friend_list = mysql_store_friend_list,
    .group_create = mysql_store_group_create,
    .group_join = mysql_store_group_join,
    .group_member_count = mysql_store_group_member_count,
    .group_members = mysql_store_group_members,
    .user_groups = mysql_store_user_groups,
    .offline_store = mysql_store_offline_store,
    .offline_take = mysql_store_offline_take,
    .offline_count = mysql_store_offline_count,
    .schema_version = mysql_store_schema_version,
    .log_append = mysql_store_log_append,
    .conv_raise = mysql_store_conv_raise,
    .conv_last_cseq = mysql_store_conv_last_cseq,
    .history = mysql_store_history,
    .conversations = mysql_store_conversations,
    .undelivered = mysql_store_undelivered,
    .delivered_advance = mysql_store_delivered_advance,
    .delivered_advance_many = mysql_store_delivered_advance_many,
    .read_set = mysql_store_read_set,
    .conv_member = mysql_store_conv_member,
    .conv_join = mysql_store_conv_join,
    .log_purge = mysql_store_log_purge,
    .log_purge_delivered = mysql_store_log_purge_delivered,
    .conv_delete = mysql_store_conv_delete,
};
