/*
 * store_append_bench.c - what the storage thread spends per chat in
 * ping-pong with the log on, measured on the SQLite driver alone, in CPU
 * time (so the figure holds on a loaded machine better than a rate).
 *
 * Per round, like one storage-thread turn: one log_append of K messages
 * (K different pair conversations, one 64-byte chat each, the senders
 * alternating as in ping-pong), then one delivered_advance_many for their
 * K recipients; or, with MERGED=1 in the environment, both in one
 * log_append_advance (one transaction, as the storage thread does now).
 * W writer processes (default 1) append to the one database file at once,
 * each to its own conversations, like qchatd's workers' storage threads:
 * with W=2 the figure includes what sharing the file costs (the write
 * lock's waits, page caches dropped after the other's commits, the WAL
 * that keeps growing).  Prints each writer's CPU time per message (user
 * and system), its wall time, and the WAL's size when it ended.
 *
 *   make && cc -O2 -std=gnu11 -D_GNU_SOURCE -Iinclude -isystem /usr/include/bsd \
 *       -DLIBBSD_OVERLAY -o /tmp/sab tests/harness/store_append_bench.c build/libqstore.a \
 *       build/libqcommon.a -ljson-c -lhiredis -lmariadb -lsqlite3 -lbsd -lcrypt -linih \
 *       -lsystemd -ledit -lmd -lpthread
 *   /tmp/sab K ROUNDS [W]      (a fresh database under /tmp, removed after)
 *   MERGED=1 /tmp/sab K ROUNDS [W]
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/config.h"
#include "store/store.h"

#define PAIRS       1000 /* conversations the rounds go through, in turn (split among writers) */
#define WRITERS_MAX 8

static double tv_ms(struct timeval t)
{
    return (double)t.tv_sec * 1e3 + (double)t.tv_usec / 1e3;
}

static double wall_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int fail(const char *what)
{
    fprintf(stderr, "store_append_bench: %s failed\n", what);
    return 1;
}

/* Round r's K messages and cursors, continuing each conversation's cseq (writer w's of nw). */
static void fill_round(const int32_t *ids, int64_t *cseq, int *next, int w, int nw, int k,
                       const char *body, size_t blen, struct store_logmsg *m,
                       struct store_cursor *pos, int32_t *who)
{
    for (int i = 0; i < k; i++) {
        int q = *next;
        *next = (q + nw) % (PAIRS - PAIRS % nw);
        (void)w;
        int32_t a = ids[2 * q], b = ids[2 * q + 1];
        int64_t c = ++cseq[q];
        int32_t sender = (c & 1) ? a : b;
        m[i] = (struct store_logmsg){ store_conv_pair(a, b), c, c, 1000 + c, sender, body, blen };
        pos[i] = (struct store_cursor){ m[i].conv, c };
        who[i] = sender == a ? b : a;
    }
}

/* One writer: its own handle, rounds of k on the conversations q = w, w + nw, ... */
static int write_rounds(const struct qc_config *cfg, const int32_t *ids, int w, int nw, int k,
                        int rounds, bool merged)
{
    const struct store_ops *ops = store_driver("sqlite");
    char err[256], body[256], wal[sizeof cfg->storage_path + 8];
    struct store *st;
    struct rusage ru;
    struct stat sb;
    int next = w;
    if (ops->open(&st, cfg, err, sizeof err) != QC_OK)
        return fail(err);
    int32_t *who = malloc(sizeof *who * (size_t)k);
    int64_t *cseq = calloc(PAIRS, sizeof *cseq);
    struct store_logmsg *m = malloc(sizeof *m * (size_t)k);
    struct store_cursor *pos = malloc(sizeof *pos * (size_t)k);
    if (!who || !cseq || !m || !pos)
        return fail("malloc");
    size_t blen =
        (size_t)snprintf(body, sizeof body,
                         "{\"msgid\":5,\"id\":1,\"name\":\"u1\",\"toid\":2,\"msg\":\"%064d\","
                         "\"time\":\"2026-12-07 01:00:00\",\"ts\":1,\"mid\":1,\"cseq\":1}",
                         0);
    double t0 = wall_ms();
    for (int r = 0; r < rounds; r++) {
        fill_round(ids, cseq, &next, w, nw, k, body, blen, m, pos, who);
        if (merged) {
            if (ops->log_append_advance(st, m, (size_t)k, who, pos, (size_t)k) != QC_OK)
                return fail("log_append_advance");
            continue;
        }
        if (ops->log_append(st, m, (size_t)k) != QC_OK)
            return fail("log_append");
        if (ops->delivered_advance_many(st, who, pos, (size_t)k) != QC_OK)
            return fail("delivered_advance_many");
    }
    double t1 = wall_ms();
    getrusage(RUSAGE_SELF, &ru);
    double n = (double)k * rounds;
    snprintf(wal, sizeof wal, "%s-wal", cfg->storage_path);
    printf("writer %d/%d K=%d%s messages=%.0f wall=%.0f ms cpu us/message %.2f (user %.2f sys "
           "%.2f) wal=%lld bytes\n",
           w + 1, nw, k, merged ? " merged" : "", n, t1 - t0,
           (tv_ms(ru.ru_utime) + tv_ms(ru.ru_stime)) * 1e3 / n, tv_ms(ru.ru_utime) * 1e3 / n,
           tv_ms(ru.ru_stime) * 1e3 / n, stat(wal, &sb) == 0 ? (long long)sb.st_size : -1LL);
    fflush(stdout); /* the child leaves by _exit */
    ops->close(st);
    free(who);
    free(cseq);
    free(m);
    free(pos);
    return 0;
}

int main(int argc, char **argv)
{
    int k = argc > 1 ? atoi(argv[1]) : 64, rounds = argc > 2 ? atoi(argv[2]) : 1000;
    int nw = argc > 3 ? atoi(argv[3]) : 1, failed = 0;
    bool merged = getenv("MERGED") != NULL && strcmp(getenv("MERGED"), "1") == 0;
    char dir[] = "/tmp/qchat-sab.XXXXXX", path[64], err[256], cmd[96];
    struct qc_config cfg;
    struct store *st;
    if (k < 1 || rounds < 1 || nw < 1 || nw > WRITERS_MAX || mkdtemp(dir) == NULL)
        return fail("arguments or mkdtemp");
    snprintf(path, sizeof path, "%s/q.db", dir);
    config_defaults(&cfg);
    strlcpy(cfg.storage_driver, "sqlite", sizeof cfg.storage_driver);
    strlcpy(cfg.storage_path, path, sizeof cfg.storage_path);
    const struct store_ops *ops = store_driver("sqlite");
    if (ops->open(&st, &cfg, err, sizeof err) != QC_OK)
        return fail(err);
    if (ops->init_schema(st) != QC_OK) /* logged; err is open's alone */
        return fail("init_schema");
    int32_t *ids = malloc(sizeof *ids * 2 * PAIRS);
    if (!ids)
        return fail("malloc");
    for (int i = 0; i < 2 * PAIRS; i++) {
        char name[32];
        snprintf(name, sizeof name, "u%d", i);
        if (ops->user_create(st, name, "x", &ids[i]) != QC_OK)
            return fail("user_create");
    }
    ops->close(st); /* a handle never crosses a fork */
    fflush(stdout);
    for (int w = 0; w < nw; w++) {
        pid_t pid = fork();
        if (pid < 0)
            return fail("fork");
        if (pid == 0)
            _exit(write_rounds(&cfg, ids, w, nw, k, rounds, merged));
    }
    for (int w = 0; w < nw; w++) {
        int status;
        if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed = 1;
    }
    free(ids);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 && !failed ? 0 : 1;
}
