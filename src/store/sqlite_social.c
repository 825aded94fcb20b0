/*
 * sqlite_social.c - the social functions (include/store/social.h) on the
 * embedded SQLite store: the primitives of social_db.h over the handle's
 * connection (sqlite_store_db), bound to the rules of social_rules.c.
 *
 * Statements are prepared for each call and finalized before it returns,
 * so no read snapshot outlives a call and nothing is kept per handle.
 * Writes run in BEGIN IMMEDIATE (see sqlite.c: a transaction that starts
 * reading cannot wait for the write lock in WAL mode).  Callbacks run while
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

/* Prepare sql and bind v: the statement, or NULL (logged). */
static sqlite3_stmt *prepare_bound(sqlite3 *db, const char *sql, const struct sdb_val *v, int n)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);

    if (rc == SQLITE_OK)
        rc = bind_values(s, v, n);
    if (rc == SQLITE_OK)
        return s;
    (void)failed(db, sql, rc);
    (void)sqlite3_finalize(s);
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
    sqlite3_stmt *s = prepare_bound(db, sql, v, n);
    int rc;

    if (s == NULL)
        return QC_ESTORAGE;
    rc = sqlite3_step(s);
    (void)sqlite3_finalize(s);
    if (rc == SQLITE_DONE) {
        if (changes != NULL)
            *changes = sqlite3_changes(db);
        return QC_OK;
    }
    rc = sqlite3_extended_errcode(db);
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
    sqlite3_stmt *s = prepare_bound(db, sql, v, n);
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
    (void)sqlite3_finalize(s);
    return rc == SQLITE_DONE ? QC_OK : failed(db, sql, rc);
}

static int run_plain(sqlite3 *db, const char *sql)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);

    return rc == SQLITE_OK ? QC_OK : failed(db, sql, rc);
}

static int sq_transact(struct store *st, sdb_op op, void *arg, bool write)
{
    sqlite3 *db = sqlite_store_db(st);
    struct sdb d = { st, &sqlite_social_prims };
    int err;

    if (!write)
        return op(&d, arg);
    if ((err = run_plain(db, "BEGIN IMMEDIATE")) != QC_OK)
        return err;
    err = op(&d, arg);
    if (err == QC_OK && (err = run_plain(db, "COMMIT")) == QC_OK)
        return QC_OK;
    if (!sqlite3_get_autocommit(db))
        (void)run_plain(db, "ROLLBACK");
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
