/*
 * mysql_env.h - the private MariaDB of tests/harness/mariadb.sh as the
 * tests see it: its exported environment (DIR/env), a connection of the
 * test's own for raw SQL, and stopping it (SIGSTOP) with a guard that
 * resumes it should the test die.  Shared by tests/unit/test_store_mysql.c
 * (the driver) and tests/integration/test_mysql.c (qchatd on it).
 *
 * The helpers fail the running cmocka test on any error.
 */
#ifndef QCHAT_TESTS_MYSQL_ENV_H
#define QCHAT_TESTS_MYSQL_ENV_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <mysql.h>

#include "common/config.h"

#define MDB_SQL_MAX 2048

/* From QCHAT_MYSQL_SOCKET, _USER, _PASSWORD_FILE (its first line), _PID. */
struct mdb_env {
    char socket[PATH_MAX]; /* "" when there is no server: tests skip */
    char user[QC_CONFIG_STR_MAX];
    char password_file[PATH_MAX];
    char password[QC_CONFIG_STR_MAX];
    pid_t pid;
};
extern struct mdb_env mdb_env;

/* Read the environment; without it say so (as prog) and return false. */
bool mdb_load_env(const char *prog);
/* A connection of the test's own (utf8mb4) to db, or to no database if NULL. */
MYSQL *mdb_connect(const char *db, unsigned long flags);
/* Run every statement of text (several need CLIENT_MULTI_STATEMENTS). */
void mdb_run(MYSQL *m, const char *text, const char *what);
/* A file below $QCHAT_SRCDIR (default "."), whole and NUL-terminated (caller frees). */
char *mdb_slurp(const char *rel);
/* mdb_run on a file below $QCHAT_SRCDIR. */
void mdb_run_file(MYSQL *m, const char *rel);
void mdb_exec(MYSQL *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* First column of the first row as text into out ("" when no row). */
void mdb_text(MYSQL *m, char *out, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The same as a number (-1: no row). */
long long mdb_int(MYSQL *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* SHOW CREATE TABLE without the AUTO_INCREMENT=N counter. */
void mdb_table_definition(MYSQL *m, const char *db, const char *table, char *out, size_t size);
/*
 * SIGSTOP mariadbd.  A guard in its own session sends SIGCONT after
 * guard_ms unless mdb_resume_server() kills it first, so a test killed by
 * a timeout never leaves the server stopped for the tests after it.
 */
void mdb_stop_server(int guard_ms);
/* SIGCONT it and end the guard, if a test stopped it; idempotent. */
void mdb_resume_server(void);

#endif
