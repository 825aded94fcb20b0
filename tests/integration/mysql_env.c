/*
 * mysql_env.c - the private MariaDB of tests/harness/mariadb.sh as the
 * tests see it (see mysql_env.h).
 */
#include "mysql_env.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#include <cmocka.h>

struct mdb_env mdb_env;

#define STOP_SETTLE_MS 2000 /* for every thread of a SIGSTOPped mariadbd to stop */
#define STOP_POLL_MS   1

static pid_t stopped_pid; /* mariadbd while a test holds it stopped */
static pid_t guard_pid;   /* resumes it should this process die first */

static void read_first_line(const char *path, char *out, size_t size)
{
    FILE *fp = fopen(path, "re");

    out[0] = '\0';
    if (fp == NULL)
        return;
    if (fgets(out, (int)size, fp) == NULL)
        out[0] = '\0';
    out[strcspn(out, "\r\n")] = '\0';
    fclose(fp);
}

bool mdb_load_env(const char *prog)
{
    const char *sock = getenv("QCHAT_MYSQL_SOCKET");
    const char *user = getenv("QCHAT_MYSQL_USER");
    const char *pwf = getenv("QCHAT_MYSQL_PASSWORD_FILE");
    const char *pid = getenv("QCHAT_MYSQL_PID");

    if (sock == NULL || user == NULL || pwf == NULL || pid == NULL || *sock == '\0') {
        fprintf(stderr,
                "%s: no private MariaDB (QCHAT_MYSQL_SOCKET, QCHAT_MYSQL_USER, "
                "QCHAT_MYSQL_PASSWORD_FILE, QCHAT_MYSQL_PID unset): skipping.  Start one "
                "with: tests/harness/mariadb.sh start DIR && set -a && . DIR/env && set +a\n",
                prog);
        return false;
    }
    snprintf(mdb_env.socket, sizeof(mdb_env.socket), "%s", sock);
    snprintf(mdb_env.user, sizeof(mdb_env.user), "%s", user);
    snprintf(mdb_env.password_file, sizeof(mdb_env.password_file), "%s", pwf);
    read_first_line(pwf, mdb_env.password, sizeof(mdb_env.password));
    mdb_env.pid = (pid_t)atoi(pid);
    return true;
}

MYSQL *mdb_connect(const char *db, unsigned long flags)
{
    MYSQL *m = mysql_init(NULL);

    assert_non_null(m);
    assert_int_equal(mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4"), 0);
    if (mysql_real_connect(m, NULL, mdb_env.user, mdb_env.password, db, 0, mdb_env.socket, flags) ==
        NULL)
        fail_msg("connecting to %s as %s: %s", mdb_env.socket, mdb_env.user, mysql_error(m));
    return m;
}

void mdb_run(MYSQL *m, const char *text, const char *what)
{
    MYSQL_RES *res;
    int rc;

    if (mysql_real_query(m, text, strlen(text)) != 0)
        fail_msg("%s: %s", what, mysql_error(m));
    do {
        res = mysql_store_result(m);
        if (res != NULL)
            mysql_free_result(res);
        else if (mysql_field_count(m) != 0)
            fail_msg("%s: %s", what, mysql_error(m));
        rc = mysql_next_result(m);
        if (rc > 0)
            fail_msg("%s: %s", what, mysql_error(m));
    } while (rc == 0);
}

char *mdb_slurp(const char *rel)
{
    const char *srcdir = getenv("QCHAT_SRCDIR");
    char path[PATH_MAX], *text;
    long size;
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", srcdir != NULL ? srcdir : ".", rel);
    fp = fopen(path, "re");
    if (fp == NULL)
        fail_msg("%s: %s (set QCHAT_SRCDIR to the project root)", path, strerror(errno));
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    size = ftell(fp);
    assert_true(size > 0);
    rewind(fp);
    text = calloc(1, (size_t)size + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)size, fp), (size_t)size);
    fclose(fp);
    return text;
}

void mdb_run_file(MYSQL *m, const char *rel)
{
    char *text = mdb_slurp(rel);

    mdb_run(m, text, rel);
    free(text);
}

void mdb_exec(MYSQL *m, const char *fmt, ...)
{
    char sql[MDB_SQL_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    mdb_run(m, sql, sql);
}

/* The first row of the query sql (NULL: no row) in *res, to free. */
static MYSQL_ROW first_row(MYSQL *m, const char *sql, MYSQL_RES **res)
{
    if (mysql_query(m, sql) != 0)
        fail_msg("%s: %s", sql, mysql_error(m));
    *res = mysql_store_result(m);
    if (*res == NULL)
        fail_msg("%s: no result: %s", sql, mysql_error(m));
    return mysql_fetch_row(*res);
}

void mdb_text(MYSQL *m, char *out, size_t size, const char *fmt, ...)
{
    char sql[MDB_SQL_MAX];
    MYSQL_RES *res;
    MYSQL_ROW row;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    row = first_row(m, sql, &res);
    snprintf(out, size, "%s", row != NULL && row[0] != NULL ? row[0] : "");
    mysql_free_result(res);
}

long long mdb_int(MYSQL *m, const char *fmt, ...)
{
    char sql[MDB_SQL_MAX];
    MYSQL_RES *res;
    MYSQL_ROW row;
    long long v = -1;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    row = first_row(m, sql, &res);
    if (row != NULL && row[0] != NULL)
        v = strtoll(row[0], NULL, 10);
    mysql_free_result(res);
    return v;
}

void mdb_table_definition(MYSQL *m, const char *db, const char *table, char *out, size_t size)
{
    char sql[MDB_SQL_MAX], *p;
    MYSQL_RES *res;
    MYSQL_ROW row;

    snprintf(sql, sizeof(sql), "SHOW CREATE TABLE `%s`.`%s`", db, table);
    row = first_row(m, sql, &res);
    if (row == NULL)
        fail_msg("%s: no row", sql);
    snprintf(out, size, "%s", row[1]);
    mysql_free_result(res);
    if ((p = strstr(out, " AUTO_INCREMENT=")) != NULL) {
        size_t skip = 1 + strcspn(p + 1, " ");
        memmove(p, p + skip, strlen(p + skip) + 1);
    }
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Every thread of pid is in the stopped state ('T' in /proc/PID/task/TID/stat). */
static bool all_threads_stopped(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return false;
    bool stopped = true;
    struct dirent *e;
    while (stopped && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char stat[PATH_MAX], line[512] = "";
        snprintf(stat, sizeof stat, "%s/%s/stat", path, e->d_name);
        read_first_line(stat, line, sizeof line);
        const char *paren = strrchr(line, ')'); /* the name may hold spaces */
        stopped = paren != NULL && (paren[2] == 'T' || paren[2] == 't');
    }
    closedir(d);
    return stopped;
}

void mdb_stop_server(int guard_ms)
{
    pid_t g;

    if (mdb_env.pid <= 0)
        fail_msg("QCHAT_MYSQL_PID is not set");
    g = fork();
    if (g < 0)
        fail_msg("fork: %s", strerror(errno));
    if (g == 0) {
        (void)setsid();
        sleep_ms(guard_ms);
        kill(mdb_env.pid, SIGCONT);
        _exit(0);
    }
    guard_pid = g;
    if (kill(mdb_env.pid, SIGSTOP) != 0)
        fail_msg("SIGSTOP mariadbd %d: %s", (int)mdb_env.pid, strerror(errno));
    stopped_pid = mdb_env.pid;
    /*
     * kill() returns before the group stop has reached every thread: a
     * thread running on another CPU may still answer a query sent now.
     */
    int64_t waited = 0;
    while (!all_threads_stopped(mdb_env.pid) && waited < STOP_SETTLE_MS) {
        sleep_ms(STOP_POLL_MS);
        waited += STOP_POLL_MS;
    }
    if (!all_threads_stopped(mdb_env.pid))
        fail_msg("mariadbd %d: not every thread stopped within %d ms of SIGSTOP", (int)mdb_env.pid,
                 STOP_SETTLE_MS);
}

void mdb_resume_server(void)
{
    if (stopped_pid > 0) {
        kill(stopped_pid, SIGCONT);
        stopped_pid = 0;
    }
    if (guard_pid > 0) {
        kill(guard_pid, SIGKILL);
        (void)waitpid(guard_pid, NULL, 0);
        guard_pid = 0;
    }
}
