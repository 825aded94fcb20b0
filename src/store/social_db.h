/*
 * social_db.h - the few database primitives the social rules need, one
 * set per driver (sqlite_social.c, mysql_social.c), so that the rules
 * themselves (social_rules.c) are written once and behave the same on
 * both drivers.
 *
 * SQL handed to the primitives is a fixed literal with ? placeholders,
 * valid on SQLite and MariaDB alike; values travel only as bound
 * parameters.  A query asked to lock adds FOR UPDATE on MariaDB (SQLite
 * needs none: its write transactions are BEGIN IMMEDIATE).
 */
#ifndef QCHAT_STORE_SOCIAL_DB_H
#define QCHAT_STORE_SOCIAL_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "store/social.h"

#define SDB_COLS     6    /* most columns of a result row */
#define SDB_PARAMS   8    /* most placeholders of a statement */
#define SDB_TEXT_MAX 1024 /* longest text column (groupdesc: 200 characters of utf8mb4) */
#define SDB_SQL_MAX  1024 /* longest statement text */

/* Outcomes of a primitive besides QC_OK and QC_ESTORAGE (never returned by social_ops). */
enum {
    SDB_DUP = -100,     /* a unique key refused the row */
    SDB_LOST = -101,    /* MariaDB: the connection is gone (the driver retries once) */
    SDB_DEADLOCK = -102 /* MariaDB: rolled back by the server (the driver retries) */
};

struct sdb_val {
    char type; /* 'i' integer, 't' text, 'b' bytes */
    long long i;
    const void *p;
    size_t len;
};

#define SV_INT(x)      ((struct sdb_val){ 'i', (long long)(x), NULL, 0 })
#define SV_TEXT(s)     ((struct sdb_val){ 't', 0, (s), strlen(s) })
#define SV_BYTES(b, n) ((struct sdb_val){ 'b', 0, (b), (n) })

/* One result row: column c is i[c] ('i') or t[c] with len[c] bytes ('t', 'b'). */
struct sdb_row {
    long long i[SDB_COLS];
    const char *t[SDB_COLS];
    size_t len[SDB_COLS];
};

typedef void (*sdb_row_fn)(void *arg, const struct sdb_row *row);

struct sdb;
typedef int (*sdb_op)(struct sdb *db, void *arg);

struct sdb_prims {
    /*
     * Run op once (write: inside one transaction, committed when op returns
     * QC_OK, rolled back otherwise).  MariaDB runs it again after a
     * deadlock or a connection lost before COMMIT.
     */
    int (*transact)(struct store *st, sdb_op op, void *arg, bool write);
    /* A statement without result; *changes (may be NULL): rows written or matched. */
    int (*exec)(struct sdb *db, const char *sql, const struct sdb_val *v, int n,
                long long *changes);
    /* A query: fn for each row, columns typed by cols ("itt"). */
    int (*query)(struct sdb *db, const char *sql, bool lock, const struct sdb_val *v, int n,
                 const char *cols, sdb_row_fn fn, void *arg);
};

/* What an op works on: the driver's handle and its primitives. */
struct sdb {
    struct store *st;
    const struct sdb_prims *p;
};

/* ---- the rules (social_rules.c), one per social_ops function ---- */

int rules_friend_request(const struct sdb_prims *p, struct store *st, int32_t from, int32_t to,
                         int max_friends, int *outcome);
int rules_friend_decline(const struct sdb_prims *p, struct store *st, int32_t user, int32_t from);
int rules_requests_in(const struct sdb_prims *p, struct store *st, int32_t user, store_user_cb cb,
                      void *arg);
int rules_requests_out(const struct sdb_prims *p, struct store *st, int32_t user, store_user_cb cb,
                       void *arg);
int rules_friend_add(const struct sdb_prims *p, struct store *st, int32_t user, int32_t friend_id,
                     int max_friends);
int rules_friend_remove(const struct sdb_prims *p, struct store *st, int32_t user,
                        int32_t friend_id);
int rules_friends(const struct sdb_prims *p, struct store *st, int32_t user, store_user_cb cb,
                  void *arg);
int rules_block(const struct sdb_prims *p, struct store *st, int32_t user, int32_t target);
int rules_unblock(const struct sdb_prims *p, struct store *st, int32_t user, int32_t target);
int rules_blocked_list(const struct sdb_prims *p, struct store *st, int32_t user, store_user_cb cb,
                       void *arg);
int rules_is_blocked(const struct sdb_prims *p, struct store *st, int32_t a, int32_t b,
                     bool *blocked);
int rules_blocked_by(const struct sdb_prims *p, struct store *st, int32_t user, store_user_cb cb,
                     void *arg);
int rules_group_role(const struct sdb_prims *p, struct store *st, int32_t group, int32_t user,
                     char role[SOCIAL_ROLE_MAX + 1]);
int rules_group_members(const struct sdb_prims *p, struct store *st, int32_t group,
                        store_member_cb cb, void *arg);
int rules_group_leave(const struct sdb_prims *p, struct store *st, int32_t group, int32_t user,
                      struct social_leave *out);
int rules_group_kick(const struct sdb_prims *p, struct store *st, int32_t group, int32_t by,
                     int32_t target);
int rules_group_set_role(const struct sdb_prims *p, struct store *st, int32_t group, int32_t by,
                         int32_t target, const char *role);
int rules_group_update(const struct sdb_prims *p, struct store *st, int32_t group, int32_t by,
                       const char *name, const char *desc);
int rules_group_delete(const struct sdb_prims *p, struct store *st, int32_t group, int32_t by);
int rules_group_count(const struct sdb_prims *p, struct store *st, int32_t user, int *count);
int rules_login_groups(const struct sdb_prims *p, struct store *st, int32_t user,
                       social_group_row_cb cb, void *arg);
int rules_token_create(const struct sdb_prims *p, struct store *st, int32_t user,
                       const char *device, int64_t expires_at, char token[SOCIAL_TOKEN_CHARS + 1]);
int rules_token_check(const struct sdb_prims *p, struct store *st, int32_t user, const char *token,
                      int64_t now, char device[SOCIAL_DEVICE_MAX + 1]);
int rules_token_revoke(const struct sdb_prims *p, struct store *st, int32_t user,
                       const char *token);
int rules_token_revoke_all(const struct sdb_prims *p, struct store *st, int32_t user, int *revoked);
int rules_password_change(const struct sdb_prims *p, struct store *st, int32_t user,
                          const char *pwhash);

/* ---- driver accessors (a few lines each in sqlite.c and mysql.c) ---- */

struct sqlite3;
struct sqlite3_stmt;
/* The handle's SQLite connection. */
struct sqlite3 *sqlite_store_db(struct store *st);
/*
 * The statement for sql (a literal: the key is its address), prepared once
 * per handle and kept; NULL (logged) when it does not prepare.  *own: none
 * could be kept, the caller finalizes it; otherwise the caller resets it.
 */
struct sqlite3_stmt *sqlite_store_social_stmt(struct store *st, const char *sql, bool *own);
/* BEGIN IMMEDIATE, and its end: commit when err is QC_OK, else roll back (the outcome). */
int sqlite_store_begin(struct store *st);
int sqlite_store_end(struct store *st, int err);

struct st_mysql;
/* A usable MariaDB connection (reconnecting if it was lost), or NULL. */
struct st_mysql *mysql_store_connection(struct store *st);
struct st_mysql_stmt;
/*
 * The slot of the statement for sql (a literal: the key is its address) and
 * lock on the current connection: *slot NULL until the caller prepares it
 * there, closed when the connection is replaced.  NULL when every slot is
 * taken (the caller prepares one for the call and closes it).
 */
struct st_mysql_stmt **mysql_store_social_stmt(struct store *st, const char *sql, bool lock);
/* The connection was lost: the next mysql_store_connection() replaces it at once. */
void mysql_store_connection_lost(struct store *st);
/* Whether a client or server error code means the connection is gone. */
bool mysql_store_error_is_lost(unsigned code);

#endif
