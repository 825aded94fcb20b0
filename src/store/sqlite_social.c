/*
 * sqlite_social.c - the social functions (include/store/social.h) on the
 * embedded SQLite store: the primitives of social_db.h over the handle's
 * connection (sqlite_store_db), bound to the rules of social_rules.c.
 *
 * Statements are prepared once per handle (sqlite_store_social_stmt) and
 * reset before each call returns, so no read snapshot outlives a call.
 * Writes run in the handle's BEGIN IMMEDIATE (see sqlite.c: a transaction
 * that starts reading cannot wait for the write lock in WAL mode).  Callbacks run while
 * a statement steps: they must not call into the store.
 */
#include <sqlite3.h>

#include "common/log.h"
#include "social_db.h"

static const struct sdb_prims sqlite_social_prims;

static int failed(sqlite3 *db, const char *what, int rc)
{
    log_error("sqlite: %s: %s (code %d)", what, sqlite3_errmsg(db), rc);
    return QC_ESTORAGE;
}

static int bind_values(sqlite3_stmt *s, const struct sdb_val *v, int n)
{
    int i, rc = SQLITE_OK;

    for (i = 0; i < n && rc == SQLITE_OK; i++) {
        if (v[i].type == 'i')
            rc = sqlite3_bind_int64(s, i + 1, v[i].i);
        else if (v[i].type == 't')
            rc = sqlite3_bind_text(s, i + 1, v[i].p, (int)v[i].len, SQLITE_STATIC);
        else
            rc = sqlite3_bind_blob(s, i + 1, v[i].p, (int)v[i].len, SQLITE_STATIC);
    }
    return rc;
}

/* Done with s: finalized when the caller owns it, else reset for the next call. */
static void release(sqlite3_stmt *s, bool own)
{
    if (own) {
        (void)sqlite3_finalize(s);
        return;
    }
    (void)sqlite3_reset(s);
    (void)sqlite3_clear_bindings(s);
}

/* The handle's statement for sql with v bound, or NULL (logged). */
static sqlite3_stmt *prepare_bound(struct store *st, const char *sql, const struct sdb_val *v,
                                   int n, bool *own)
{
    sqlite3_stmt *s = sqlite_store_social_stmt(st, sql, own);
    int rc;

    if (s == NULL)
        return NULL;
    rc = bind_values(s, v, n);
    if (rc == SQLITE_OK)
        return s;
    (void)failed(sqlite_store_db(st), sql, rc);
    release(s, *own);
    return NULL;
}

static bool is_unique_violation(int rc)
{
    return rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY;
}

static int sq_exec(struct sdb *d, const char *sql, const struct sdb_val *v, int n,
                   long long *changes)
{
    sqlite3 *db = sqlite_store_db(d->st);
    bool own;
    sqlite3_stmt *s = prepare_bound(d->st, sql, v, n, &own);
    int rc;

    if (s == NULL)
        return QC_ESTORAGE;
    rc = sqlite3_step(s);
    if (rc != SQLITE_DONE)
        rc = sqlite3_extended_errcode(db);
    release(s, own);
    if (rc == SQLITE_DONE) {
        if (changes != NULL)
            *changes = sqlite3_changes(db);
        return QC_OK;
    }
    if (is_unique_violation(rc))
        return SDB_DUP;
    return failed(db, sql, rc);
}

static void read_row(sqlite3_stmt *s, const char *cols, struct sdb_row *row)
{
    int c;

    for (c = 0; cols[c] != '\0' && c < SDB_COLS; c++) {
        if (cols[c] == 'i') {
            row->i[c] = sqlite3_column_int64(s, c);
            continue;
        }
        row->t[c] = cols[c] == 't' ? (const char *)sqlite3_column_text(s, c)
                                   : (const char *)sqlite3_column_blob(s, c);
        row->len[c] = (size_t)sqlite3_column_bytes(s, c);
        if (row->t[c] == NULL) /* NULL or empty */
            row->t[c] = "";
    }
}

static int sq_query(struct sdb *d, const char *sql, bool lock, const struct sdb_val *v, int n,
                    const char *cols, sdb_row_fn fn, void *arg)
{
    sqlite3 *db = sqlite_store_db(d->st);
    bool own;
    sqlite3_stmt *s = prepare_bound(d->st, sql, v, n, &own);
    struct sdb_row row;
    int rc;

    (void)lock; /* writes hold the database lock from BEGIN IMMEDIATE */
    if (s == NULL)
        return QC_ESTORAGE;
    memset(&row, 0, sizeof(row));
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        read_row(s, cols, &row);
        fn(arg, &row);
    }
    if (rc != SQLITE_DONE)
        (void)failed(db, sql, rc);
    release(s, own);
    return rc == SQLITE_DONE ? QC_OK : QC_ESTORAGE;
}

static int sq_transact(struct store *st, sdb_op op, void *arg, bool write)
{
    struct sdb d = { st, &sqlite_social_prims };
    int err;

    if (!write)
        return op(&d, arg);
    if ((err = sqlite_store_begin(st)) != QC_OK)
        return err;
    err = sqlite_store_end(st, op(&d, arg));
    return err < 0 ? QC_ESTORAGE : err;
}

static const struct sdb_prims sqlite_social_prims = {
    .transact = sq_transact,
    .exec = sq_exec,
    .query = sq_query,
};

#define SOCIAL_PRIMS       sqlite_social_prims
#define SOCIAL_OPS_VAR     social_sqlite_ops
#define SOCIAL_DRIVER_NAME "sqlite"
#include "social_ops_table.h"
