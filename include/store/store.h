/*
 * store.h - the storage interface: one table of function pointers per driver.
 *
 * Drivers: "sqlite" (embedded default, src/store/sqlite.c) and "mysql"
 * (src/store/mysql.c).  A worker opens one handle at start and uses it from
 * its own thread only.  Every function returns QC_OK (0) or an error number
 * from common/proto.h: QC_ENOUSER, QC_ENOGROUP, QC_ENAMETAKEN, QC_EGROUPTAKEN,
 * QC_EALREADY, QC_ESTORAGE (the database is unavailable; the caller reports
 * it and keeps running).  Strings passed in are NUL-terminated UTF-8; names
 * handed to callbacks are valid only during the call.
 *
 * Schema: versioned.  sql/<driver>/NNN-what.sql brings a database to
 * version NNN; the build embeds them (sql/embed.sh) and open() and
 * init_schema() apply, in order, those newer than the database's
 * SchemaVersion.  Version 1 is the seed's tables (User, Friend, AllGroup,
 * GroupUser, OfflineMessage); a database made before versioning is
 * recognised as version 1.  Version 2 is the conversation log.
 *
 * The conversation log.  A conversation is one int64_t key (store_conv_*
 * below): a pair of users a < b is (a << 32) | b, a group is -groupid.  A
 * message is stored once per conversation with its cseq (1, 2, 3, ...),
 * which the server assigns BEFORE the append: log_append takes the cseqs it
 * is given and ignores a (conv, cseq) that is already stored, so a journal
 * can be replayed.  With several nodes the database assigns instead: a
 * message appended with cseq 0 is numbered in the committing transaction.
 * Per user and conversation two cursors only grow:
 * delivered (the highest cseq written to a session of the user) and read.
 * A user's own messages are never "undelivered" to that user.
 */
#ifndef QCHAT_STORE_STORE_H
#define QCHAT_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common/config.h"
#include "common/proto.h"

struct store;

struct store_user {
    int32_t id;
    char name[QC_NAME_MAX + 1];
    char password[QC_HASH_MAX + 1]; /* stored hash (or seed plaintext) */
};

typedef void (*store_user_cb)(void *arg, int32_t id, const char *name);
typedef void (*store_group_cb)(void *arg, int32_t groupid, const char *name, const char *desc);
typedef void (*store_member_cb)(void *arg, int32_t userid, const char *name, const char *role);
typedef void (*store_msg_cb)(void *arg, const char *msg, size_t len);

/* One message of the log.  body: the forwarded JSON object (not NUL-terminated). */
struct store_logmsg {
    int64_t conv;
    int64_t cseq;
    int64_t mid;
    int64_t ts; /* epoch milliseconds */
    int32_t sender;
    const char *body;
    size_t len;
};
typedef void (*store_logmsg_cb)(void *arg, const struct store_logmsg *m);

/* One entry of a user's conversation list. */
struct store_conv_info {
    int64_t conv;
    int32_t with;     /* the other user of a pair, else 0 */
    int32_t groupid;  /* the group, else 0 */
    const char *name; /* the other user's name or the group's name */
    int64_t last_cseq, read_cseq, unread, last_ts;
    const char *last; /* the newest message's body, NULL when there is none */
    size_t last_len;
};
typedef void (*store_conv_cb)(void *arg, const struct store_conv_info *c);

/* A cursor position: (conv, cseq). */
struct store_cursor {
    int64_t conv;
    int64_t cseq;
};

/* A conversation's high-water mark: a cseq handed out, its message not stored. */
struct store_convmark {
    int64_t conv;
    int64_t cseq;
    int64_t ts; /* epoch milliseconds of that message */
};

/* Limits of the log calls. */
#define STORE_NO_CURSOR        (-1)      /* history: before / after not given */
#define STORE_HISTORY_MAX      100       /* messages in one history page */
#define STORE_CONVS_MAX        1000      /* conversations in one list */
#define STORE_SQLITE_FILE_MODE 0600      /* a new SQLite file, whatever the umask */
#define STORE_SCAN_START       INT64_MIN /* a retention scan of the conversations: from the first */
#define STORE_PURGE_SCAN_CONVS 4096      /* conversations one retention call examines, at most */

/* The conversation of the pair a, b (a != b, both > 0). */
static inline int64_t store_conv_pair(int32_t a, int32_t b)
{
    int64_t lo = a < b ? a : b, hi = a < b ? b : a;

    return (int64_t)((uint64_t)lo << 32 | (uint64_t)hi);
}

static inline int64_t store_conv_group(int32_t groupid)
{
    return -(int64_t)groupid;
}

static inline int32_t store_conv_groupid(int64_t conv)
{
    return conv < 0 ? (int32_t)-conv : 0;
}

/* The other user of a pair conversation, 0 when me is not in it (or a group). */
static inline int32_t store_conv_other(int64_t conv, int32_t me)
{
    int32_t a, b;

    if (conv <= 0)
        return 0;
    a = (int32_t)(conv >> 32);
    b = (int32_t)(conv & 0xffffffff);
    return me == a ? b : me == b ? a : 0;
}

/* One embedded migration (generated from sql/<driver>/NNN-*.sql). */
struct store_migration {
    int version;
    const char *name; /* the file's name */
    const char *sql;  /* its text, byte for byte */
};

struct store_ops {
    const char *name;
    /* Open a handle (creates the schema if the database is empty). */
    int (*open)(struct store **out, const struct qc_config *cfg, char *err, size_t errlen);
    void (*close)(struct store *st);
    /* Create the schema explicitly (qchatd --init-db); idempotent. */
    int (*init_schema)(struct store *st);
    /*
     * qchatd -t: connect as open() would and change nothing; *have is the
     * database's schema version (0: none yet), *want this build's.  NULL
     * for a driver whose -t does not open the store (SQLite checks the
     * file, which open() would create).
     */
    int (*probe_schema)(const struct qc_config *cfg, int *have, int *want, char *err,
                        size_t errlen);
    /* true when the backing database answers (for status and -t). */
    int (*ping)(struct store *st);

    int (*user_create)(struct store *st, const char *name, const char *pwhash, int32_t *id);
    int (*user_get)(struct store *st, int32_t id, struct store_user *out);
    int (*user_set_password)(struct store *st, int32_t id, const char *pwhash);

    /* Mutual friendship; QC_ENOUSER if friendid does not exist, QC_EALREADY if friends. */
    int (*friend_add)(struct store *st, int32_t userid, int32_t friendid);
    int (*friend_count)(struct store *st, int32_t userid, int *count);
    int (*friend_list)(struct store *st, int32_t userid, store_user_cb cb, void *arg);

    /* New group with creator as its "creator" member; QC_EGROUPTAKEN on name clash. */
    int (*group_create)(struct store *st, const char *name, const char *desc, int32_t creator,
                        int32_t *groupid);
    /* Join as "normal"; QC_ENOGROUP, QC_EALREADY. */
    int (*group_join)(struct store *st, int32_t groupid, int32_t userid);
    /* QC_OK with *count members, or QC_ENOGROUP. */
    int (*group_member_count)(struct store *st, int32_t groupid, int *count);
    /* Members of one group (QC_ENOGROUP if it does not exist). */
    int (*group_members)(struct store *st, int32_t groupid, store_member_cb cb, void *arg);
    /* Groups userid belongs to. */
    int (*user_groups)(struct store *st, int32_t userid, store_group_cb cb, void *arg);

    /* Append msg to each listed user's offline queue, in one transaction. */
    int (*offline_store)(struct store *st, const int32_t *userids, size_t n, const char *msg,
                         size_t len);
    /*
     * Hand userid's offline messages to cb oldest first and delete them, in
     * one transaction.  *dropped is set to how many were discarded for the
     * max_offline_messages cap since the last take (may be 0).
     */
    int (*offline_take)(struct store *st, int32_t userid, store_msg_cb cb, void *arg, int *dropped);
    /* Number of stored offline messages for userid. */
    int (*offline_count)(struct store *st, int32_t userid, int *count);

    /* ---- the conversation log (schema version 2) ---- */

    /* The schema version of the open database. */
    int (*schema_version)(struct store *st, int *version);
    /*
     * Append n messages (any conversations) in ONE transaction.  A message
     * with cseq > 0 keeps it (assigned by the node's sequencer), and a
     * (conv, cseq) already stored is left as it is.  A message with cseq 0
     * gets the next cseq of its conversation INSIDE the transaction (the
     * database is the sequencer, for several nodes), in batch order, written
     * back into msgs[i].cseq; on an error those are 0 again.  cseq < 0 or
     * conv 0: QC_EBADREQ; a body over INT_MAX bytes: QC_ETOOLONG.  Keeps
     * each conversation's last cseq and time, and
     * creates both users' cursors of a new pair conversation (at 0).
     */
    int (*log_append)(struct store *st, struct store_logmsg *msgs, size_t n);
    /*
     * Optional (NULL: such chats are appended instead): raise the last cseq
     * (and its time) of each conversation marks[i].conv to marks[i].cseq,
     * never lowering it, storing no message, all in ONE transaction, in the
     * order given (the caller sorts by conv: no lock cycles).  With
     * [history] enabled = no a chat written live to every recipient is not
     * stored, but its cseq must never be handed out again (after a restart
     * the sequencer is seeded from conv_last_cseq): this keeps it taken.
     */
    int (*conv_raise)(struct store *st, const struct store_convmark *marks, size_t n);
    /* The highest cseq stored or raised for conv (0: none), to seed a sequencer. */
    int (*conv_last_cseq)(struct store *st, int64_t conv, int64_t *last);
    /*
     * One page of conv's log, ascending cseq, at most limit (1..100,
     * else QC_EBADREQ) messages.  before/after are cseqs, STORE_NO_CURSOR
     * (any negative) = not given; after 0 starts at the first message:
     * neither: the newest limit; before: the newest below it; after: the
     * oldest above it; both: the oldest between them.  *more: older
     * messages exist (neither, before) or newer ones (after).
     */
    int (*history)(struct store *st, int64_t conv, int64_t before, int64_t after, int limit,
                   store_logmsg_cb cb, void *arg, bool *more);
    /*
     * userid's conversations, most recent first, at most limit (1..1000):
     * the pairs the user took part in and every group the user belongs to
     * (a group without messages has last_cseq 0 and no last).
     */
    int (*conversations)(struct store *st, int32_t userid, int limit, store_conv_cb cb, void *arg);
    /*
     * Messages of others after userid's delivered cursors, across the
     * user's conversations (pairs, and groups the user is a member of),
     * oldest first and in cseq order within each conversation, at most
     * max_count and max_bytes of bodies (but always the first one, however
     * big).  *more: some were left out.  Nothing moves: the caller advances
     * the cursors (delivered_advance) once the messages are written.
     */
    int (*undelivered)(struct store *st, int32_t userid, int max_count, size_t max_bytes,
                       store_logmsg_cb cb, void *arg, bool *more);
    /*
     * Raise userid's delivered cursors (never lowers one), one transaction.
     * Like read_set it trusts the caller to have checked conv_member.
     */
    int (*delivered_advance)(struct store *st, int32_t userid, const struct store_cursor *pos,
                             size_t n);
    /*
     * Optional (NULL: call delivered_advance per user): raise the delivered
     * cursor pos[i] of userids[i] for every i, all in ONE transaction.  A
     * worker advances the cursors of every user it wrote to in a loop turn
     * at once; a transaction per user made the storage thread the limit of
     * the chat path (docs/BENCHMARKS.md, version 2).
     */
    int (*delivered_advance_many)(struct store *st, const int32_t *userids,
                                  const struct store_cursor *pos, size_t n);
    /*
     * Optional (NULL: log_append, then delivered_advance_many): log_append
     * of msgs[0..n) and delivered_advance_many of userids/pos[0..m), all
     * in ONE transaction (one commit for a storage round instead of two).
     * On an error nothing of either is written (msgs' assigned cseqs are 0
     * again); the caller may retry them apart.
     */
    int (*log_append_advance)(struct store *st, struct store_logmsg *msgs, size_t n,
                              const int32_t *userids, const struct store_cursor *pos, size_t m);
    /*
     * Raise userid's read cursor of conv to cseq, clamped to the
     * conversation's last cseq (never lowers it); *now: the cursor after.
     */
    int (*read_set)(struct store *st, int32_t userid, int64_t conv, int64_t cseq, int64_t *now);
    /* *member: userid is one of the pair / a member of the group. */
    int (*conv_member)(struct store *st, int32_t userid, int64_t conv, bool *member);
    /*
     * userid starts following conv at start (a group member joining: the
     * sequencer's current cseq; the stored last cseq if that is higher):
     * both cursors are raised to it.  group_create and group_join do this
     * with the stored last cseq; call it for any other way into a group.
     */
    int (*conv_join)(struct store *st, int32_t userid, int64_t conv, int64_t start);
    /*
     * Retention, in small steps: remove at most batch messages older than
     * keep_days (0: no age limit) or beyond the newest max_per_conv of
     * their conversation (0: no cap).  *removed: how many.  Last cseqs are
     * kept, so cseqs are never reused.
     *
     * The cap is found by walking the conversations in order, at most
     * STORE_PURGE_SCAN_CONVS of them per call, so that one call takes about
     * the same time on a store of a thousand conversations as on one of
     * millions.  *scan says where the walk stands: STORE_SCAN_START to
     * begin, and on return where the next call goes on, or
     * STORE_SCAN_START again once it passed the last conversation.  Keep
     * calling while *removed equals batch or *scan is not
     * STORE_SCAN_START.  On an error *scan is left as it was.
     */
    int (*log_purge)(struct store *st, int keep_days, int max_per_conv, int batch, int64_t *scan,
                     int *removed);
    /*
     * history.enabled = no: remove at most batch messages that every
     * participant (both users of a pair, every current member of a group)
     * has had delivered.  *scan and *removed as for log_purge.
     */
    int (*log_purge_delivered)(struct store *st, int batch, int64_t *scan, int *removed);
    /*
     * Remove at most batch messages of conv (a deleted group's log); when
     * none are left, its cursors and last cseq go too.  Loop while
     * *removed equals batch.
     */
    int (*conv_delete)(struct store *st, int64_t conv, int batch, int *removed);
};

/* The driver named by cfg->storage_driver, or NULL. */
const struct store_ops *store_driver(const char *name);

extern const struct store_ops store_sqlite_ops;
extern const struct store_ops store_mysql_ops;

/* The embedded migrations of each driver, version 1 first. */
extern const struct store_migration store_sqlite_migrations[];
extern const size_t store_sqlite_migration_count;
extern const struct store_migration store_mysql_migrations[];
extern const size_t store_mysql_migration_count;

#endif
