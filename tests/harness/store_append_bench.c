/*
 * store_append_bench.c - what the storage thread spends per chat in
 * ping-pong with the log on, measured on the SQLite driver alone, in CPU
 * time (so the figure holds on a loaded machine better than a rate).
 *
 * Per round, like one storage-thread turn: one log_append of K messages
 * (K different pair conversations, one 64-byte chat each, the senders
 * alternating as in ping-pong), then one delivered_advance_many for their
 * K recipients.  Prints the process CPU time per message.
 *
 *   make && cc -O2 -std=gnu11 -D_GNU_SOURCE -Iinclude -isystem /usr/include/bsd \
 *       -DLIBBSD_OVERLAY -o /tmp/sab tests/harness/store_append_bench.c build/libqstore.a \
 *       build/libqcommon.a -ljson-c -lhiredis -lmariadb -lsqlite3 -lbsd -lcrypt -linih \
 *       -lsystemd -ledit -lmd -lpthread
 *   /tmp/sab K ROUNDS          (a fresh database under /tmp, removed after)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/config.h"
#include "store/store.h"

#define PAIRS 1000 /* conversations the rounds go through, in turn */

static double cpu_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int fail(const char *what)
{
    fprintf(stderr, "store_append_bench: %s failed\n", what);
    return 1;
}

/* Round r's K messages and cursors, continuing each conversation's cseq. */
static void fill_round(const int32_t *ids, int64_t *cseq, int *next, int k, const char *body,
                       size_t blen, struct store_logmsg *m, struct store_cursor *pos, int32_t *who)
{
    for (int i = 0; i < k; i++) {
        int q = *next;
        *next = (q + 1) % PAIRS;
        int32_t a = ids[2 * q], b = ids[2 * q + 1];
        int64_t c = ++cseq[q];
        int32_t sender = (c & 1) ? a : b;
        m[i] = (struct store_logmsg){ store_conv_pair(a, b), c, c, 1000 + c, sender, body, blen };
        pos[i] = (struct store_cursor){ m[i].conv, c };
        who[i] = sender == a ? b : a;
    }
}

int main(int argc, char **argv)
{
    int k = argc > 1 ? atoi(argv[1]) : 64, rounds = argc > 2 ? atoi(argv[2]) : 1000;
    char dir[] = "/tmp/qchat-sab.XXXXXX", path[64], err[256], cmd[96];
    struct qc_config cfg;
    struct store *st;
    if (k < 1 || rounds < 1 || mkdtemp(dir) == NULL)
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
    int32_t *ids = malloc(sizeof *ids * 2 * PAIRS), *who = malloc(sizeof *who * (size_t)k);
    int64_t *cseq = calloc(PAIRS, sizeof *cseq);
    struct store_logmsg *m = malloc(sizeof *m * (size_t)k);
    struct store_cursor *pos = malloc(sizeof *pos * (size_t)k);
    if (!ids || !who || !cseq || !m || !pos)
        return fail("malloc");
    for (int i = 0; i < 2 * PAIRS; i++) {
        char name[32];
        snprintf(name, sizeof name, "u%d", i);
        if (ops->user_create(st, name, "x", &ids[i]) != QC_OK)
            return fail("user_create");
    }
    char body[256];
    size_t blen =
        (size_t)snprintf(body, sizeof body,
                         "{\"msgid\":5,\"id\":1,\"name\":\"u1\",\"toid\":2,\"msg\":\"%064d\","
                         "\"time\":\"2026-12-07 01:00:00\",\"ts\":1,\"mid\":1,\"cseq\":1}",
                         0);
    int next = 0;
    double t0 = cpu_ms();
    for (int r = 0; r < rounds; r++) {
        fill_round(ids, cseq, &next, k, body, blen, m, pos, who);
        if (ops->log_append(st, m, (size_t)k) != QC_OK)
            return fail("log_append");
        if (ops->delivered_advance_many(st, who, pos, (size_t)k) != QC_OK)
            return fail("delivered_advance_many");
    }
    double t1 = cpu_ms();
    printf("K=%d messages=%d cpu=%.0f ms %.2f us/message\n", k, k * rounds, t1 - t0,
           (t1 - t0) * 1e3 / ((double)k * rounds));
    ops->close(st);
    free(ids);
    free(who);
    free(cseq);
    free(m);
    free(pos);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
