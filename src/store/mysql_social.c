/*
 * mysql_social.c - the social functions (include/store/social.h) on
 * MariaDB / MySQL: the primitives of social_db.h over the handle's
 * connection (mysql_store_connection), bound to the rules of
 * social_rules.c.
 *
 * Every statement is a fixed literal (a locking read gets " FOR UPDATE"
 * appended) prepared with mysql_stmt_prepare the first time a connection
 * runs it and kept with the connection (mysql_store_social_stmt), its
 * values bound as parameters: no SQL text is built from data.  Results
 * are buffered in the client before the first callback runs; callbacks
 * must not call into the store.
 *
 * Failures as in mysql.c: a connection lost before COMMIT was sent means
 * the server rolled the transaction back, so the op runs once more on a
 * new connection; a deadlock runs it again (bounded); a connection lost
 * during COMMIT leaves the outcome unknown and is reported (QC_ESTORAGE).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mysql.h>
#include <mysqld_error.h>

#include "common/log.h"
#include "social_db.h"

#define DEADLOCK_RETRIES 3

/* An sdb with the connection the op runs on (never replaced during it). */
struct mysql_sdb {
    struct sdb base; /* first: the rules see only this */
    MYSQL *db;
};

/* The result buffers of one query. */
struct columns {
    MYSQL_BIND out[SDB_COLS];
    unsigned long len[SDB_COLS];
    my_bool null[SDB_COLS];
    my_bool trunc[SDB_COLS];
    long long num[SDB_COLS];
    char text[SDB_COLS][SDB_TEXT_MAX + 1];
};

static const struct sdb_prims mysql_social_prims;

static MYSQL *connection_of(struct sdb *d)
{
    return ((struct mysql_sdb *)d)->db;
}

/* What statement h's error means: SDB_DUP, SDB_DEADLOCK, SDB_LOST or QC_ESTORAGE. */
static int classify(MYSQL_STMT *h, const char *sql)
{
    unsigned code = mysql_stmt_errno(h);

    if (code == ER_DUP_ENTRY)
        return SDB_DUP;
    if (code == ER_LOCK_DEADLOCK)
        return SDB_DEADLOCK;
    if (mysql_store_error_is_lost(code)) {
        log_warning("mysql: %s: %s (error %u): connection lost", sql, mysql_stmt_error(h), code);
        return SDB_LOST;
    }
    log_error("mysql: %s: %s (error %u)", sql, mysql_stmt_error(h), code);
    return QC_ESTORAGE;
}

/* Prepare sql (with FOR UPDATE when lock) on h: QC_OK or an outcome. */
static int prepare_sql(MYSQL_STMT *h, const char *sql, bool lock)
{
    char text[SDB_SQL_MAX];

    if (snprintf(text, sizeof(text), "%s%s", sql, lock ? " FOR UPDATE" : "") >= (int)sizeof(text)) {
        log_error("mysql: statement too big for the social driver: %s", sql);
        return QC_ESTORAGE;
    }
    if (mysql_stmt_prepare(h, text, strlen(text)) != 0)
        return classify(h, sql);
    return QC_OK;
}

/*
 * The prepared statement for sql and lock on d's connection: the one kept
 * for the connection (*own false), or, when none can be kept, one for this
 * call that the caller closes (*own true).
 */
static int statement(struct sdb *d, const char *sql, bool lock, MYSQL_STMT **out, bool *own)
{
    MYSQL_STMT **slot = mysql_store_social_stmt(d->st, sql, lock);
    MYSQL_STMT *h;
    int err;

    *own = slot == NULL;
    if (slot != NULL && *slot != NULL) {
        *out = *slot;
        return QC_OK;
    }
    h = mysql_stmt_init(connection_of(d));
    if (h == NULL) {
        log_error("mysql: out of memory for a statement");
        return QC_ESTORAGE;
    }
    if ((err = prepare_sql(h, sql, lock)) != QC_OK) {
        (void)mysql_stmt_close(h);
        return err;
    }
    if (slot != NULL)
        *slot = h;
    *out = h;
    return QC_OK;
}

/* Bind v to h and execute it: QC_OK or an outcome. */
static int bind_and_execute(MYSQL_STMT *h, const char *sql, const struct sdb_val *v, int n)
{
    MYSQL_BIND b[SDB_PARAMS];
    unsigned long lens[SDB_PARAMS];
    long long nums[SDB_PARAMS];
    int i;

    if (n > SDB_PARAMS || (unsigned long)n != mysql_stmt_param_count(h)) {
        log_error("mysql: %s: %d parameters bound, expected %lu", sql, n,
                  mysql_stmt_param_count(h));
        return QC_ESTORAGE;
    }
    memset(b, 0, sizeof(b));
    for (i = 0; i < n; i++) {
        if (v[i].type == 'i') {
            nums[i] = v[i].i;
            b[i].buffer_type = MYSQL_TYPE_LONGLONG;
            b[i].buffer = &nums[i];
            continue;
        }
        lens[i] = v[i].len;
        b[i].buffer_type = v[i].type == 't' ? MYSQL_TYPE_STRING : MYSQL_TYPE_BLOB;
        b[i].buffer = (void *)v[i].p;
        b[i].buffer_length = v[i].len;
        b[i].length = &lens[i];
    }
    if (n > 0 && mysql_stmt_bind_param(h, b) != 0)
        return classify(h, sql);
    if (mysql_stmt_execute(h) != 0)
        return classify(h, sql);
    return QC_OK;
}

static int my_exec(struct sdb *d, const char *sql, const struct sdb_val *v, int n,
                   long long *changes)
{
    MYSQL_STMT *h;
    bool own;
    int err = statement(d, sql, false, &h, &own);

    if (err != QC_OK)
        return err;
    err = bind_and_execute(h, sql, v, n);
    if (err == QC_OK && changes != NULL)
        *changes = (long long)mysql_stmt_affected_rows(h);
    if (own)
        (void)mysql_stmt_close(h);
    return err;
}

static void bind_columns(struct columns *c, const char *cols)
{
    int i;

    memset(c->out, 0, sizeof(c->out));
    for (i = 0; cols[i] != '\0' && i < SDB_COLS; i++) {
        c->out[i].length = &c->len[i];
        c->out[i].is_null = &c->null[i];
        c->out[i].error = &c->trunc[i];
        if (cols[i] == 'i') {
            c->out[i].buffer_type = MYSQL_TYPE_LONGLONG;
            c->out[i].buffer = &c->num[i];
        } else {
            c->out[i].buffer_type = cols[i] == 't' ? MYSQL_TYPE_STRING : MYSQL_TYPE_BLOB;
            c->out[i].buffer = c->text[i];
            c->out[i].buffer_length = SDB_TEXT_MAX;
        }
    }
}

/* The fetched row into row; -1 when a value did not fit. */
static int read_row(struct columns *c, const char *cols, struct sdb_row *row)
{
    int i;

    for (i = 0; cols[i] != '\0' && i < SDB_COLS; i++) {
        if (cols[i] == 'i') {
            row->i[i] = c->null[i] ? 0 : c->num[i];
            continue;
        }
        if (c->null[i])
            c->len[i] = 0;
        if (c->len[i] > SDB_TEXT_MAX)
            return -1;
        c->text[i][c->len[i]] = '\0';
        row->t[i] = c->text[i];
        row->len[i] = c->len[i];
    }
    return 0;
}

/* Fetch every buffered row of h into fn. */
static int deliver_rows(MYSQL_STMT *h, const char *sql, struct columns *c, const char *cols,
                        sdb_row_fn fn, void *arg)
{
    struct sdb_row row;
    int rc;

    memset(&row, 0, sizeof(row));
    while ((rc = mysql_stmt_fetch(h)) == 0 || rc == MYSQL_DATA_TRUNCATED) {
        if (read_row(c, cols, &row) != 0) {
            log_error("mysql: %s: a value longer than %d bytes", sql, SDB_TEXT_MAX);
            return QC_ESTORAGE;
        }
        fn(arg, &row);
    }
    if (rc == MYSQL_NO_DATA)
        return QC_OK;
    log_error("mysql: %s: fetch: %s", sql, mysql_stmt_error(h));
    return QC_ESTORAGE;
}

static int my_query(struct sdb *d, const char *sql, bool lock, const struct sdb_val *v, int n,
                    const char *cols, sdb_row_fn fn, void *arg)
{
    MYSQL_STMT *h;
    struct columns *c;
    bool own;
    int err;

    c = malloc(sizeof(*c));
    if (c == NULL) {
        log_error("mysql: out of memory for a result");
        return QC_ESTORAGE;
    }
    err = statement(d, sql, lock, &h, &own);
    if (err != QC_OK) {
        free(c);
        return err;
    }
    err = bind_and_execute(h, sql, v, n);
    if (err == QC_OK) {
        bind_columns(c, cols);
        if (mysql_stmt_bind_result(h, c->out) != 0 || mysql_stmt_store_result(h) != 0)
            err = classify(h, sql);
    }
    if (err == QC_OK)
        err = deliver_rows(h, sql, c, cols, fn, arg);
    (void)mysql_stmt_free_result(h);
    if (own)
        (void)mysql_stmt_close(h);
    free(c);
    return err;
}

/* op between START TRANSACTION and COMMIT (or ROLLBACK when it fails). */
static int run_in_transaction(struct mysql_sdb *d, sdb_op op, void *arg)
{
    int err = my_exec(&d->base, "START TRANSACTION", NULL, 0, NULL);

    if (err != QC_OK)
        return err;
    err = op(&d->base, arg);
    if (err == QC_OK) {
        err = my_exec(&d->base, "COMMIT", NULL, 0, NULL);
        if (err == SDB_LOST) {
            log_error("mysql: connection lost during COMMIT: outcome unknown");
            mysql_store_connection_lost(d->base.st);
            return QC_ESTORAGE;
        }
        return err;
    }
    /* A lost connection or a deadlock has already rolled back. */
    if (err != SDB_LOST && err != SDB_DEADLOCK &&
        my_exec(&d->base, "ROLLBACK", NULL, 0, NULL) != QC_OK)
        log_error("mysql: rollback failed");
    return err;
}

static int my_transact(struct store *st, sdb_op op, void *arg, bool write)
{
    bool retried_lost = false;
    int attempt, err = QC_ESTORAGE;

    for (attempt = 0; attempt <= DEADLOCK_RETRIES; attempt++) {
        struct mysql_sdb d = { { st, &mysql_social_prims }, mysql_store_connection(st) };

        if (d.db == NULL)
            return QC_ESTORAGE;
        err = write ? run_in_transaction(&d, op, arg) : op(&d.base, arg);
        if (err == SDB_LOST) {
            mysql_store_connection_lost(st);
            if (retried_lost)
                break;
            retried_lost = true;
            continue;
        }
        if (err != SDB_DEADLOCK)
            break;
        log_debug("mysql: social: deadlock, retrying");
    }
    if (err == SDB_DEADLOCK)
        log_error("mysql: social: deadlock %d times in a row", DEADLOCK_RETRIES + 1);
    return err < 0 ? QC_ESTORAGE : err;
}

static const struct sdb_prims mysql_social_prims = {
    .transact = my_transact,
    .exec = my_exec,
    .query = my_query,
};

#define SOCIAL_PRIMS       mysql_social_prims
#define SOCIAL_OPS_VAR     social_mysql_ops
#define SOCIAL_DRIVER_NAME "mysql"
#include "social_ops_table.h"
