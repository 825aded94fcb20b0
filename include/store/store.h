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
 * Schema: the seed's tables User, Friend, AllGroup, GroupUser and
 * OfflineMessage (sql/sqlite/schema.sql, sql/mysql/schema.sql).
 */
#ifndef QCHAT_STORE_STORE_H
#define QCHAT_STORE_STORE_H

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

struct store_ops {
    const char *name;
    /* Open a handle (creates the schema if the database is empty). */
    int (*open)(struct store **out, const struct qc_config *cfg, char *err, size_t errlen);
    void (*close)(struct store *st);
    /* Create the schema explicitly (qchatd --init-db); idempotent. */
    int (*init_schema)(struct store *st);
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
};

/* The driver named by cfg->storage_driver, or NULL. */
const struct store_ops *store_driver(const char *name);

extern const struct store_ops store_sqlite_ops;
extern const struct store_ops store_mysql_ops;

/* The SQLite schema, byte for byte the text of sql/sqlite/schema.sql. */
extern const char store_sqlite_schema[];

#endif
