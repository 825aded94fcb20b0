/*
 * test_storage.c - the per-worker storage thread (src/server/storage.c) on
 * both drivers: SQLite in a temporary directory, MySQL on the private
 * MariaDB of tests/harness/mariadb.sh (its DIR/env exported; without it
 * the MySQL cases are skipped with a note).
 *
 * What a worker relies on: appends queued while a transaction runs are
 * written together (group commit: 10,000 appends from one producer take
 * far fewer transactions); done callbacks run on the submitting thread,
 * jobs on the storage thread, in queue order; a blocked database never
 * blocks the submitter, and a full queue is refused at once; several
 * workers (each its own storage thread and handle) appending to one
 * conversation with cseqs from one atomic counter leave cseq 1..N with no
 * gap and no duplicate, and replaying every append changes nothing.  With
 * the store as the sequencer (storage_append_assign): cseqs follow queue
 * order per conversation, and two nodes (processes) numbering one
 * conversation at once get distinct cseqs 1..N, each what the log holds.
 * Delivered-cursor advances (storage_advance) wait for the kick like
 * appends, are written with the round's appends (in their very
 * transaction on SQLite, apart on MySQL), report on the storage thread
 * first and on the worker's after, and move exactly the cursor asked.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

#include "../integration/mysql_env.h"
#include "server/convmark.h"
#include "server/seqtab.h"
#include "server/storage.h"
#include "server/worker.h"
#include "store/store.h"

#define TMP_TEMPLATE  "/tmp/qchat-test-storage-XXXXXX"
#define DB_NAME       "qchat.db"
#define DBNAME_MAX    64
#define ERR_MAX       512
#define BODY_MAX      64
#define PRODUCER_MSGS 10000
#define WORKERS       4
#define WORKER_MSGS   2500 /* per worker: WORKERS * WORKER_MSGS in one conversation */
#define SMALL_QUEUE   16
#define DRAIN_MS      120000 /* everything queued is done within this */
#define REFUSE_MAX_MS 100    /* a full queue answers at once */
#define PAGE          100
#define GATE_OPEN_MS  300 /* a stop meets a full queue this long */
#define MARK_CONVS    5

struct env {
    struct qc_config cfg;
    bool skip;
    bool mysql;
    char dir[sizeof(TMP_TEMPLATE)];
    char db[DBNAME_MAX];
    MYSQL *admin;
};

static unsigned db_counter;

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- fixtures ------------------------------------------------------- */

static int setup_sqlite(void **state)
{
    struct env *e = calloc(1, sizeof(*e));

    assert_non_null(e);
    memcpy(e->dir, TMP_TEMPLATE, sizeof(TMP_TEMPLATE));
    assert_non_null(mkdtemp(e->dir));
    config_defaults(&e->cfg);
    strlcpy(e->cfg.storage_driver, "sqlite", sizeof(e->cfg.storage_driver));
    snprintf(e->cfg.storage_path, sizeof(e->cfg.storage_path), "%s/%s", e->dir, DB_NAME);
    *state = e;
    return 0;
}

static int setup_mysql(void **state)
{
    struct env *e = calloc(1, sizeof(*e));

    assert_non_null(e);
    *state = e;
    e->mysql = true;
    e->skip = mdb_env.socket[0] == '\0';
    if (e->skip)
        return 0;
    e->admin = mdb_connect(NULL, 0);
    snprintf(e->db, sizeof(e->db), "qchat_s%d_%u", (int)getpid(), ++db_counter);
    mdb_exec(e->admin, "CREATE DATABASE `%s` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", e->db);
    config_defaults(&e->cfg);
    strlcpy(e->cfg.storage_driver, "mysql", sizeof(e->cfg.storage_driver));
    strlcpy(e->cfg.storage_socket, mdb_env.socket, sizeof(e->cfg.storage_socket));
    strlcpy(e->cfg.storage_user, mdb_env.user, sizeof(e->cfg.storage_user));
    strlcpy(e->cfg.storage_password_file, mdb_env.password_file,
            sizeof(e->cfg.storage_password_file));
    strlcpy(e->cfg.storage_database, e->db, sizeof(e->cfg.storage_database));
    return 0;
}

static void remove_in(const char *dir, const char *name)
{
    char path[PATH_MAX];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    (void)unlink(path);
}

static int teardown(void **state)
{
    struct env *e = *state;

    if (e->mysql && e->admin != NULL) {
        mdb_exec(e->admin, "DROP DATABASE IF EXISTS `%s`", e->db);
        mysql_close(e->admin);
    }
    if (!e->mysql) {
        remove_in(e->dir, DB_NAME);
        remove_in(e->dir, DB_NAME "-wal");
        remove_in(e->dir, DB_NAME "-shm");
        if (rmdir(e->dir) != 0)
            fprintf(stderr, "rmdir %s: %s\n", e->dir, strerror(errno));
    }
    free(e);
    return 0;
}

static struct env *env_of(void **state)
{
    struct env *e = *state;

    if (e->skip)
        skip();
    return e;
}

static struct storage *start(struct env *e)
{
    char err[ERR_MAX] = "";
    struct storage *s = storage_start(&e->cfg, err, sizeof(err));

    if (s == NULL)
        fail_msg("storage_start: %s", err);
    return s;
}

/* A store handle of the test's own, to look at what the threads wrote. */
static struct store *open_direct(struct env *e, const struct store_ops **ops)
{
    char err[ERR_MAX] = "";
    struct store *st = NULL;

    *ops = store_driver(e->cfg.storage_driver);
    assert_non_null(*ops);
    if ((*ops)->open(&st, &e->cfg, err, sizeof(err)) != QC_OK)
        fail_msg("open: %s", err);
    return st;
}

/* ---- completion ----------------------------------------------------- */

/* What the done callbacks saw; they must run on the thread that submitted. */
struct tally {
    pthread_t owner;
    atomic_size_t done;
    atomic_size_t failed;
    atomic_size_t wrong_thread;
};

static void count_done(void *arg, int err)
{
    struct tally *t = arg;

    if (err != QC_OK)
        atomic_fetch_add(&t->failed, 1);
    if (!pthread_equal(pthread_self(), t->owner))
        atomic_fetch_add(&t->wrong_thread, 1);
    atomic_fetch_add(&t->done, 1);
}

/* Watch the eventfd like a worker's loop until want items are done. */
static void drain(struct storage *s, struct tally *t, size_t want)
{
    struct pollfd pfd = { storage_fd(s), POLLIN, 0 };
    int64_t deadline = now_ms() + DRAIN_MS;

    while (atomic_load(&t->done) < want) {
        int left = (int)(deadline - now_ms());

        assert_true(left > 0);
        if (poll(&pfd, 1, left) > 0)
            (void)storage_complete(s);
    }
}

static void make_body(char *out, size_t size, const char *tag, int64_t cseq, size_t *len)
{
    *len = (size_t)snprintf(out, size, "{\"w\":\"%s\",\"cseq\":%lld}", tag, (long long)cseq);
}

static int append_one(struct storage *s, int64_t conv, int64_t cseq, int32_t sender,
                      const char *tag, struct tally *t)
{
    char body[BODY_MAX];
    struct store_logmsg m = { conv, cseq, cseq, 1700000000000LL + cseq, sender, body, 0 };

    make_body(body, sizeof(body), tag, cseq, &m.len);
    return storage_append(s, &m, count_done, t);
}

/* Every cseq 1..n of conv exactly once (history walked forward), bodies from tag. */
static void expect_log(struct env *e, int64_t conv, int64_t n, const char *not_tag);

struct walk {
    int64_t next;
    const char *not_tag;
    bool bad;
};

static void walk_msg(void *arg, const struct store_logmsg *m)
{
    struct walk *w = arg;
    char want[BODY_MAX];

    if (m->cseq != w->next)
        w->bad = true;
    snprintf(want, sizeof(want), "\"cseq\":%lld}", (long long)m->cseq);
    if (m->len < strlen(want) || memcmp(m->body + m->len - strlen(want), want, strlen(want)) != 0)
        w->bad = true;
    if (w->not_tag != NULL && memmem(m->body, m->len, w->not_tag, strlen(w->not_tag)) != NULL)
        w->bad = true;
    w->next++;
}

static void expect_log(struct env *e, int64_t conv, int64_t n, const char *not_tag)
{
    const struct store_ops *ops;
    struct store *st = open_direct(e, &ops);
    struct walk w = { 1, not_tag, false };
    int64_t last = -1, after = 0;
    bool more = true;

    assert_int_equal(ops->conv_last_cseq(st, conv, &last), QC_OK);
    assert_int_equal(last, n);
    while (more) {
        assert_int_equal(ops->history(st, conv, STORE_NO_CURSOR, after, PAGE, walk_msg, &w, &more),
                         QC_OK);
        assert_false(w.bad);
        after = w.next - 1;
    }
    assert_int_equal(w.next, n + 1);
    ops->close(st);
}

/* ---- tests ---------------------------------------------------------- */

/* 10,000 appends from one producer: all committed, in far fewer transactions. */
static void test_group_commit(void **state)
{
    struct env *e = env_of(state);
    struct storage *s = start(e);
    struct tally t = { .owner = pthread_self() };
    struct storage_stats st;
    int64_t conv = store_conv_pair(1, 2);
    int i;

    for (i = 1; i <= PRODUCER_MSGS; i++)
        assert_int_equal(append_one(s, conv, i, i % 2 + 1, "p", &t), QC_OK);
    drain(s, &t, PRODUCER_MSGS);
    assert_int_equal(atomic_load(&t.failed), 0);
    assert_int_equal(atomic_load(&t.wrong_thread), 0);
    storage_get_stats(s, &st);
    print_message("%s: %d appends in %llu transactions\n", e->cfg.storage_driver, PRODUCER_MSGS,
                  (unsigned long long)st.commits);
    assert_int_equal(st.appended, PRODUCER_MSGS);
    assert_true(st.commits <= PRODUCER_MSGS / 2);
    assert_int_equal(st.outstanding, 0);
    storage_stop(s);
    expect_log(e, conv, PRODUCER_MSGS, NULL);
}

/* A job runs on the storage thread, after the appends queued before it. */
struct probe {
    struct tally *t;
    pthread_t ran_on;
    int64_t conv, last;
    int32_t id;
};

static int read_last(const struct store_ops *ops, struct store *st, void *arg)
{
    struct probe *p = arg;

    p->ran_on = pthread_self();
    return ops->conv_last_cseq(st, p->conv, &p->last);
}

static int register_user(const struct store_ops *ops, struct store *st, void *arg)
{
    struct probe *p = arg;

    return ops->user_create(st, "carol", "$y$hash", &p->id);
}

static void probe_done(void *arg, int err)
{
    struct probe *p = arg;

    count_done(p->t, err);
}

static void test_jobs_in_order(void **state)
{
    struct env *e = env_of(state);
    struct storage *s = start(e);
    struct tally t = { .owner = pthread_self() };
    struct probe p = { .t = &t, .conv = store_conv_group(7) };
    int i;

    for (i = 1; i <= 3; i++)
        assert_int_equal(append_one(s, p.conv, i, 1, "j", &t), QC_OK);
    assert_int_equal(storage_submit(s, read_last, probe_done, &p), QC_OK);
    assert_int_equal(storage_submit(s, register_user, probe_done, &p), QC_OK);
    drain(s, &t, 5);
    assert_int_equal(atomic_load(&t.failed), 0);
    assert_int_equal(atomic_load(&t.wrong_thread), 0);
    assert_false(pthread_equal(p.ran_on, pthread_self()));
    assert_int_equal(p.last, 3);
    assert_true(p.id > 0);
    storage_stop(s);
}

/* A job that blocks the storage thread until the test opens the gate. */
struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool open, entered;
};

static int wait_at_gate(const struct store_ops *ops, struct store *st, void *arg)
{
    struct gate *g = arg;

    pthread_mutex_lock(&g->lock);
    g->entered = true;
    pthread_cond_broadcast(&g->cond);
    while (!g->open)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
    return QC_OK;
}

/*
 * While the storage thread is stuck (a hung database), submitting costs
 * nothing; at storage.queue_size items the next is refused at once; once
 * it is free again everything queued completes and submitting works again.
 */
static void test_blocked_and_full(void **state)
{
    struct env *e = env_of(state);
    struct gate g = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false };
    struct tally t = { .owner = pthread_self() };
    struct storage_stats st;
    struct storage *s;
    int64_t t0, conv = store_conv_pair(3, 4);
    int i;

    e->cfg.storage_queue_size = SMALL_QUEUE;
    s = start(e);
    assert_int_equal(storage_submit(s, wait_at_gate, NULL, &g), QC_OK);
    pthread_mutex_lock(&g.lock);
    while (!g.entered)
        pthread_cond_wait(&g.cond, &g.lock);
    pthread_mutex_unlock(&g.lock);

    t0 = now_ms();
    for (i = 1; i < SMALL_QUEUE; i++)
        assert_int_equal(append_one(s, conv, i, 3, "b", &t), QC_OK);
    assert_int_equal(append_one(s, conv, SMALL_QUEUE, 3, "b", &t), STORAGE_QUEUE_FULL);
    assert_int_equal(storage_submit(s, read_last, NULL, NULL), STORAGE_QUEUE_FULL);
    assert_true(now_ms() - t0 < REFUSE_MAX_MS);
    storage_get_stats(s, &st);
    assert_int_equal(st.rejected, 2);
    assert_int_equal(st.outstanding, SMALL_QUEUE);

    pthread_mutex_lock(&g.lock);
    g.open = true;
    pthread_cond_broadcast(&g.cond);
    pthread_mutex_unlock(&g.lock);
    drain(s, &t, SMALL_QUEUE - 1);
    (void)storage_complete(s); /* the gate job's completion, if it came apart */
    assert_int_equal(atomic_load(&t.failed), 0);
    assert_int_equal(append_one(s, conv, SMALL_QUEUE, 3, "b", &t), QC_OK);
    drain(s, &t, SMALL_QUEUE);
    storage_stop(s);
    expect_log(e, conv, SMALL_QUEUE, NULL);
}

/* Wait until the storage thread has entered g (it runs a job that waits there). */
static void wait_entered(struct gate *g)
{
    pthread_mutex_lock(&g->lock);
    while (!g->entered)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

static void open_gate(struct gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->open = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

/*
 * A backlog of several transactions' worth of appends (a database slower
 * than the chats for a while) comes back to the worker a transaction at a
 * time: every append is committed and handed back while a job queued
 * behind them, and so run after them, is still stuck.  Handed back only at
 * the end of the round, the worker saw no commit, and so no room to
 * append, for as long as the whole backlog took: at one node on MariaDB
 * under ping-pong that was over 2 s and chats were refused with errno 13.
 */
static void test_backlog_handed_back_per_transaction(void **state)
{
    struct env *e = env_of(state);
    struct gate first = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false };
    struct gate behind = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false };
    struct tally t = { .owner = pthread_self() };
    const int n = 2 * STORAGE_TX_MAX + 5;
    int64_t conv = store_conv_pair(5, 6);
    struct storage_stats st;
    struct storage *s = start(e);

    assert_int_equal(storage_submit(s, wait_at_gate, NULL, &first), QC_OK);
    wait_entered(&first);
    for (int i = 1; i <= n; i++)
        assert_int_equal(append_one(s, conv, i, 5, "b", &t), QC_OK);
    assert_int_equal(storage_submit(s, wait_at_gate, NULL, &behind), QC_OK);
    open_gate(&first);
    drain(s, &t, (size_t)n); /* fails (times out) if they wait for the job behind them */
    assert_int_equal(atomic_load(&t.failed), 0);
    assert_int_equal(atomic_load(&t.wrong_thread), 0);
    wait_entered(&behind);
    storage_get_stats(s, &st);
    assert_true(st.commits >= 3); /* n needs three transactions of STORAGE_TX_MAX */
    open_gate(&behind);
    storage_stop(s);
    expect_log(e, conv, n, NULL);
}

/* ---- several workers, one conversation ------------------------------ */

struct worker_run {
    struct env *e;
    atomic_llong *next_cseq;
    int index;
    int failed;
    struct tally t;
};

/* A worker: its own storage thread; cseqs from the shared counter (the sequencer). */
static void *worker_main(void *arg)
{
    struct worker_run *w = arg;
    char err[ERR_MAX] = "", tag[8];
    struct storage *s = storage_start(&w->e->cfg, err, sizeof(err));
    struct pollfd pfd;
    int i;

    w->t.owner = pthread_self();
    if (s == NULL) {
        fprintf(stderr, "worker %d: %s\n", w->index, err);
        w->failed = 1;
        return NULL;
    }
    snprintf(tag, sizeof(tag), "w%d", w->index);
    pfd = (struct pollfd){ storage_fd(s), POLLIN, 0 };
    for (i = 0; i < WORKER_MSGS; i++) {
        int64_t cseq = atomic_fetch_add(w->next_cseq, 1) + 1;

        if (append_one(s, store_conv_group(1), cseq, w->index + 1, tag, &w->t) != QC_OK)
            w->failed = 1;
        if (poll(&pfd, 1, 0) > 0) /* the loop serves completions as they come */
            (void)storage_complete(s);
    }
    while (atomic_load(&w->t.done) < WORKER_MSGS && poll(&pfd, 1, DRAIN_MS) > 0)
        (void)storage_complete(s);
    storage_stop(s);
    if (atomic_load(&w->t.done) != WORKER_MSGS || atomic_load(&w->t.failed) != 0 ||
        atomic_load(&w->t.wrong_thread) != 0)
        w->failed = 1;
    return NULL;
}

static void test_workers_one_conversation(void **state)
{
    struct env *e = env_of(state);
    struct worker_run *w = calloc(WORKERS, sizeof(*w));
    pthread_t th[WORKERS];
    atomic_llong next = 0;
    struct tally t = { .owner = pthread_self() };
    struct storage *s;
    int i;

    assert_non_null(w);
    for (i = 0; i < WORKERS; i++) {
        w[i].e = e;
        w[i].next_cseq = &next;
        w[i].index = i;
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (i = 0; i < WORKERS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(w[i].failed, 0);
    }
    expect_log(e, store_conv_group(1), WORKERS * WORKER_MSGS, NULL);

    /* A crashed worker's journal replayed: same cseqs, other bodies; nothing changes. */
    s = start(e);
    for (i = 1; i <= WORKERS * WORKER_MSGS; i++)
        assert_int_equal(append_one(s, store_conv_group(1), i, 1, "replay", &t), QC_OK);
    drain(s, &t, WORKERS * WORKER_MSGS);
    assert_int_equal(atomic_load(&t.failed), 0);
    storage_stop(s);
    expect_log(e, store_conv_group(1), WORKERS * WORKER_MSGS, "replay");
    free(w);
}

static void test_bad_append(void **state)
{
    struct env *e = env_of(state);
    struct storage *s = start(e);
    struct store_logmsg m = { 0, 1, 0, 0, 1, "{}", 2 };

    assert_int_equal(storage_append(s, &m, NULL, NULL), QC_EBADREQ);
    m.conv = store_conv_pair(1, 2);
    m.cseq = 0;
    assert_int_equal(storage_append(s, &m, NULL, NULL), QC_EBADREQ);
    storage_stop(s);
}

static void test_start_fails_cleanly(void **state)
{
    struct env *e = env_of(state);
    char err[ERR_MAX] = "";

    snprintf(e->cfg.storage_path, sizeof(e->cfg.storage_path), "%s/missing/x.db", e->dir);
    assert_null(storage_start(&e->cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "missing"));
}

/* ---- the store as the sequencer (storage_append_assign) --------------- */

#define NODE_MSGS 1500 /* per node in the two-node case */
#define TWO_NODE_CONVS \
    50                /* conversations of the many-conversation two-node case (divides NODE_MSGS) */
#define NODE_CHUNK 25 /* appends a node queues before it waits for their commit */

/* What the assign callbacks saw, in the order they ran. */
struct assigned {
    pthread_t owner;
    size_t n, failed, wrong_thread;
    int64_t *cseq; /* by queue index */
    size_t *order; /* queue indexes in callback order */
};

struct assign_ref {
    struct assigned *a;
    size_t index;
};

static void record_cseq(void *arg, int err, int64_t cseq)
{
    struct assign_ref *r = arg;
    struct assigned *a = r->a;

    if (err != QC_OK || cseq <= 0)
        a->failed++;
    if (!pthread_equal(pthread_self(), a->owner))
        a->wrong_thread++;
    a->cseq[r->index] = cseq;
    a->order[a->n++] = r->index;
}

static int assign_one(struct storage *s, int64_t conv, const char *tag, struct assign_ref *r)
{
    char body[BODY_MAX];
    struct store_logmsg m = { conv, 0, (int64_t)r->index, 1700000000000LL, 1, body, 0 };

    m.len = (size_t)snprintf(body, sizeof(body), "{\"w\":\"%s\",\"i\":%zu}", tag, r->index);
    return storage_append_assign(s, &m, record_cseq, r);
}

/* Queue n in chunks, each committed before the next; then wait for the rest. */
static void assign_all(struct storage *s, const int64_t *convs, size_t nconv, const char *tag,
                       struct assigned *a, struct assign_ref *refs, size_t n)
{
    struct pollfd pfd = { storage_fd(s), POLLIN, 0 };
    int64_t deadline = now_ms() + DRAIN_MS;

    for (size_t i = 0; i < n; i++) {
        refs[i] = (struct assign_ref){ a, i };
        if (assign_one(s, convs[i % nconv], tag, &refs[i]) != QC_OK)
            a->failed++;
        /* Every NODE_CHUNK, wait for the commit: the nodes' transactions interleave. */
        while ((i + 1) % NODE_CHUNK == 0 && a->n + a->failed < i + 1 && now_ms() < deadline)
            if (poll(&pfd, 1, (int)(deadline - now_ms())) > 0)
                (void)storage_complete(s);
    }
    while (a->n + a->failed < n && now_ms() < deadline)
        if (poll(&pfd, 1, (int)(deadline - now_ms())) > 0)
            (void)storage_complete(s);
}

static struct assigned *new_assigned(size_t n)
{
    struct assigned *a = calloc(1, sizeof(*a));

    assert_non_null(a);
    a->owner = pthread_self();
    a->cseq = calloc(n, sizeof(*a->cseq));
    a->order = calloc(n, sizeof(*a->order));
    assert_non_null(a->cseq);
    assert_non_null(a->order);
    return a;
}

static void free_assigned(struct assigned *a)
{
    free(a->cseq);
    free(a->order);
    free(a);
}

/* In one process: queue order is cseq order per conversation, callbacks in queue order. */
static void test_assign_order(void **state)
{
    struct env *e = env_of(state);
    struct storage *s = start(e);
    struct assigned *a = new_assigned(PRODUCER_MSGS);
    struct assign_ref *refs = calloc(PRODUCER_MSGS, sizeof(*refs));
    int64_t pair = store_conv_pair(5, 6), grp = store_conv_group(5), next_pair = 1, next_grp = 1;
    struct pollfd pfd = { storage_fd(s), POLLIN, 0 };
    struct storage_stats st;
    size_t i;

    assert_non_null(refs);
    for (i = 0; i < PRODUCER_MSGS; i++) {
        refs[i] = (struct assign_ref){ a, i };
        assert_int_equal(assign_one(s, i % 3 ? pair : grp, "o", &refs[i]), QC_OK);
        if (poll(&pfd, 1, 0) > 0)
            (void)storage_complete(s);
    }
    while (a->n < PRODUCER_MSGS && poll(&pfd, 1, DRAIN_MS) > 0)
        (void)storage_complete(s);
    assert_int_equal(a->n, PRODUCER_MSGS);
    assert_int_equal(a->failed, 0);
    assert_int_equal(a->wrong_thread, 0);
    for (i = 0; i < PRODUCER_MSGS; i++) {
        assert_int_equal(a->order[i], i);
        assert_int_equal(a->cseq[i], i % 3 ? next_pair++ : next_grp++);
    }
    storage_get_stats(s, &st);
    print_message("%s: %d numbered appends in %llu transactions\n", e->cfg.storage_driver,
                  PRODUCER_MSGS, (unsigned long long)st.commits);
    assert_true(st.commits <= PRODUCER_MSGS / 2);
    /* Not for this path: a given cseq, or no conversation. */
    struct store_logmsg m = { pair, 3, 0, 0, 1, "{}", 2 };
    assert_int_equal(storage_append_assign(s, &m, record_cseq, &refs[0]), QC_EBADREQ);
    m.cseq = 0;
    m.conv = 0;
    assert_int_equal(storage_append_assign(s, &m, record_cseq, &refs[0]), QC_EBADREQ);
    storage_stop(s);
    free(refs);
    free_assigned(a);
}

/*
 * One node: its own process, storage thread and handle; message i goes to
 * convs[i % nconv]; (index, cseq) pairs to fd.
 */
static void run_node(struct env *e, const int64_t *convs, size_t nconv, const char *tag, int fd)
{
    char err[ERR_MAX] = "";
    struct storage *s = storage_start(&e->cfg, err, sizeof(err));
    struct assigned *a;
    struct assign_ref *refs;

    if (s == NULL) {
        fprintf(stderr, "node %s: %s\n", tag, err);
        _exit(1);
    }
    a = calloc(1, sizeof(*a));
    refs = calloc(NODE_MSGS, sizeof(*refs));
    if (a == NULL || refs == NULL)
        _exit(2);
    a->owner = pthread_self();
    a->cseq = calloc(NODE_MSGS, sizeof(*a->cseq));
    a->order = calloc(NODE_MSGS, sizeof(*a->order));
    if (a->cseq == NULL || a->order == NULL)
        _exit(2);
    assign_all(s, convs, nconv, tag, a, refs, NODE_MSGS);
    storage_stop(s);
    if (a->n != NODE_MSGS || a->failed != 0 || a->wrong_thread != 0)
        _exit(3);
    for (size_t i = 0; i < NODE_MSGS; i++) {
        int64_t rec[2] = { (int64_t)i, a->cseq[i] };
        if (write(fd, rec, sizeof(rec)) != (ssize_t)sizeof(rec))
            _exit(4);
    }
    _exit(0);
}

/* What the nodes reported, by cseq. */
struct by_cseq {
    char tag[2 * NODE_MSGS + 1];
    int64_t index[2 * NODE_MSGS + 1];
};

/* A node's report: message i in conversation i % nconv, recorded in b[i % nconv]. */
static void read_node(int fd, char tag, struct by_cseq *b, size_t nconv)
{
    int64_t rec[2], *prev = calloc(nconv, sizeof(*prev));
    size_t n = 0;

    assert_non_null(prev);
    while (read(fd, rec, sizeof(rec)) == (ssize_t)sizeof(rec)) {
        size_t k = (size_t)rec[0] % nconv;

        assert_true(rec[0] >= 0 && rec[0] < NODE_MSGS);
        assert_true(rec[1] >= 1 && rec[1] <= (int64_t)(2 * NODE_MSGS / nconv));
        assert_true(rec[1] > prev[k]); /* a node's own messages keep their queue order */
        prev[k] = rec[1];
        assert_int_equal(b[k].tag[rec[1]], 0); /* no cseq given twice */
        b[k].tag[rec[1]] = tag;
        b[k].index[rec[1]] = rec[0];
        n++;
    }
    free(prev);
    assert_int_equal(n, NODE_MSGS);
}

struct node_walk {
    const struct by_cseq *b;
    int64_t next;
    bool bad;
};

static void node_walk_msg(void *arg, const struct store_logmsg *m)
{
    struct node_walk *w = arg;
    char want[BODY_MAX];
    int len;

    if (m->cseq != w->next)
        w->bad = true;
    len = snprintf(want, sizeof(want), "{\"w\":\"%c\",\"i\":%lld}", w->b->tag[m->cseq],
                   (long long)w->b->index[m->cseq]);
    if (m->len != (size_t)len || memcmp(m->body, want, m->len) != 0)
        w->bad = true;
    w->next++;
}

static pid_t start_node(struct env *e, const int64_t *convs, size_t nconv, const char *tag,
                        int *rfd)
{
    int fds[2];
    pid_t pid;

    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        alarm(DRAIN_MS / 1000);
        run_node(e, convs, nconv, tag, fds[1]);
    }
    close(fds[1]);
    *rfd = fds[0];
    return pid;
}

/*
 * Two nodes (processes, each its own storage thread and store handle)
 * append with cseq 0 to nconv conversations at once, message i of each to
 * conversation i % nconv: in each, every message gets a distinct cseq,
 * 1..2N/nconv with no gap, and what each node was told is what the log
 * holds under that cseq.
 */
static void two_nodes_assign(struct env *e, size_t nconv)
{
    struct by_cseq *b = calloc(nconv, sizeof(*b));
    int64_t *convs = calloc(nconv, sizeof(*convs)), per = (int64_t)(2 * NODE_MSGS / nconv);
    const struct store_ops *ops;
    struct store *st;
    int fa, fb, status, switches = 0;
    pid_t pa, pb;

    assert_non_null(b);
    assert_non_null(convs);
    for (size_t k = 0; k < nconv; k++)
        convs[k] = store_conv_pair(8, 9 + (int32_t)k);
    pa = start_node(e, convs, nconv, "A", &fa);
    pb = start_node(e, convs, nconv, "B", &fb);
    read_node(fa, 'A', b, nconv);
    read_node(fb, 'B', b, nconv);
    for (int64_t c = 2; c <= per; c++)
        switches += b[0].tag[c] != b[0].tag[c - 1];
    print_message("%s: %zu conversation(s): the two nodes' cseqs alternate %d times in the first\n",
                  e->cfg.storage_driver, nconv, switches);
    close(fa);
    close(fb);
    assert_int_equal(waitpid(pa, &status, 0), pa);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(waitpid(pb, &status, 0), pb);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    st = open_direct(e, &ops);
    for (size_t k = 0; k < nconv; k++) {
        struct node_walk w = { &b[k], 1, false };
        int64_t last = -1, after = 0;
        bool more = true;

        assert_int_equal(ops->conv_last_cseq(st, convs[k], &last), QC_OK);
        assert_int_equal(last, per);
        while (more) {
            assert_int_equal(
                ops->history(st, convs[k], STORE_NO_CURSOR, after, PAGE, node_walk_msg, &w, &more),
                QC_OK);
            assert_false(w.bad);
            after = w.next - 1;
        }
        assert_int_equal(w.next, per + 1);
    }
    ops->close(st);
    free(convs);
    free(b);
}

static void test_two_nodes_assign(void **state)
{
    two_nodes_assign(env_of(state), 1);
}

/*
 * The same over TWO_NODE_CONVS conversations: a batch numbers many
 * conversations at once (MariaDB: CONV_BATCH per multi-row reservation),
 * while the other node numbers the same ones.
 */
static void test_two_nodes_assign_many(void **state)
{
    two_nodes_assign(env_of(state), TWO_NODE_CONVS);
}

/* ---- cursor advances ------------------------------------------------ */

#define KICK_WAIT_MS 50 /* an advance queued without a kick stays queued this long */

/* Where and in which order an advance's two callbacks ran. */
struct advance_probe {
    struct tally *t;
    pthread_t applied_on;
    atomic_int applied, applied_err;
    int applied_before_done; /* 1: applied had run when done ran */
};

static void probe_applied(void *arg, int err)
{
    struct advance_probe *p = arg;

    p->applied_on = pthread_self();
    atomic_store(&p->applied_err, err);
    atomic_fetch_add(&p->applied, 1);
}

static void probe_advanced(void *arg, int err)
{
    struct advance_probe *p = arg;

    p->applied_before_done = atomic_load(&p->applied);
    count_done(p->t, err);
}

static void collect_cseq(void *arg, const struct store_logmsg *m)
{
    int64_t *got = arg;

    got[got[0] + 1] = m->cseq;
    got[0]++;
}

/* Bob's undelivered cseqs into got: got[0] the count, got[1..] the cseqs. */
static void undelivered_of(struct env *e, int32_t bob, int64_t *got)
{
    const struct store_ops *ops;
    struct store *st = open_direct(e, &ops);
    bool more = false;

    got[0] = 0;
    assert_int_equal(ops->undelivered(st, bob, 10, 65536, collect_cseq, got, &more), QC_OK);
    assert_false(more);
    ops->close(st);
}

/*
 * Alice sends Bob 3 chats; Bob's cursor is advanced to 2 in the same round:
 * 1 transaction on SQLite (0 of cursors apart), 2 on MySQL (no merge), and
 * Bob's undelivered message is 3 alone.  An advance alone (no appends) is
 * written too, and an advance of nothing is refused.
 */
static void test_advance_with_appends(void **state)
{
    struct env *e = env_of(state);
    const struct store_ops *ops;
    struct store *direct = open_direct(e, &ops);
    struct tally t = { .owner = pthread_self() };
    struct advance_probe p = { .t = &t };
    struct storage_stats st;
    int32_t alice = 0, bob = 0;
    int64_t got[11];
    struct timespec pause = { 0, KICK_WAIT_MS * 1000000L };

    assert_int_equal(ops->user_create(direct, "alice", "$y$hash", &alice), QC_OK);
    assert_int_equal(ops->user_create(direct, "bob", "$y$hash", &bob), QC_OK);
    ops->close(direct);
    int64_t conv = store_conv_pair(alice, bob);
    struct store_cursor pos[2] = { { conv, 2 }, { conv, 1 } };
    int32_t who[2] = { bob, bob }; /* the lower one second: a cursor never goes back */

    struct storage *s = start(e);
    storage_batch_turns(s);
    /* A job first: once it is done the thread waits for the next wakeup (it may not yet). */
    struct probe idle = { .t = &t, .conv = conv };
    assert_int_equal(storage_submit(s, read_last, probe_done, &idle), QC_OK);
    drain(s, &t, 1);
    for (int i = 1; i <= 3; i++)
        assert_int_equal(append_one(s, conv, i, alice, "a", &t), QC_OK);
    assert_int_equal(storage_advance(s, who, pos, 0, probe_applied, probe_advanced, &p),
                     QC_EBADREQ);
    assert_int_equal(storage_advance(s, who, pos, 2, probe_applied, probe_advanced, &p), QC_OK);
    nanosleep(&pause, NULL);
    storage_get_stats(s, &st);
    assert_int_equal(st.appended + st.advanced, 0); /* waiting for the turn's kick */
    storage_kick(s);
    drain(s, &t, 5);
    assert_int_equal(atomic_load(&t.failed), 0);
    assert_int_equal(atomic_load(&t.wrong_thread), 0);
    assert_int_equal(atomic_load(&p.applied), 1);
    assert_int_equal(atomic_load(&p.applied_err), QC_OK);
    assert_int_equal(p.applied_before_done, 1);
    assert_false(pthread_equal(p.applied_on, pthread_self()));
    storage_get_stats(s, &st);
    assert_int_equal(st.appended, 3);
    assert_int_equal(st.advanced, 2);
    assert_int_equal(st.commits, 1);
    assert_int_equal(st.cursor_tx, e->mysql ? 1 : 0);
    undelivered_of(e, bob, got);
    assert_int_equal(got[0], 1);
    assert_int_equal(got[1], 3);

    pos[0].cseq = 3; /* alone this time */
    assert_int_equal(storage_advance(s, who, pos, 1, probe_applied, probe_advanced, &p), QC_OK);
    storage_kick(s);
    drain(s, &t, 6);
    assert_int_equal(atomic_load(&t.failed), 0);
    storage_get_stats(s, &st);
    assert_int_equal(st.commits, 1);
    assert_int_equal(st.cursor_tx, e->mysql ? 2 : 1);
    storage_stop(s);
    undelivered_of(e, bob, got);
    assert_int_equal(got[0], 0);
}

/* Opens the gate GATE_OPEN_MS from now, from a thread of its own. */
static void *open_gate_later(void *arg)
{
    struct gate *g = arg;
    struct timespec ts = { GATE_OPEN_MS / 1000, (GATE_OPEN_MS % 1000) * 1000000L };

    nanosleep(&ts, NULL);
    pthread_mutex_lock(&g->lock);
    g->open = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

/*
 * [history] enabled = no: a worker stops while its storage queue is full
 * (a slow database).  The high-water marks of its live-only chats
 * (convmark.c) must still reach the store before storage_stop: the node's
 * sequencer goes with the stop, and a conversation seeded from a lagging
 * last cseq would hand those cseqs out again.  convmark_stop waits for room.
 */
static void test_marks_at_a_stop_with_the_queue_full(void **state)
{
    struct env *e = env_of(state);
    struct gate g = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false };
    struct worker *w = calloc(1, sizeof(*w));
    const struct store_ops *ops;
    struct store *st;
    pthread_t opener;

    assert_non_null(w);
    e->cfg.storage_queue_size = SMALL_QUEUE;
    w->storage = start(e);
    w->seqtab = seqtab_create(64);
    assert_non_null(w->seqtab);
    assert_int_equal(storage_submit(w->storage, wait_at_gate, NULL, &g), QC_OK);
    wait_entered(&g);
    for (int i = 1; i < SMALL_QUEUE; i++)
        assert_int_equal(storage_submit(w->storage, wait_at_gate, NULL, &g), QC_OK);
    assert_int_equal(storage_submit(w->storage, wait_at_gate, NULL, &g), STORAGE_QUEUE_FULL);

    for (int c = 1; c <= MARK_CONVS; c++) {
        int64_t conv = store_conv_pair(c, 100 + c), cseq = 0;

        assert_int_equal(seqtab_seed(w->seqtab, conv, 0), 0);
        for (int k = 0; k < c; k++)
            cseq = seqtab_next(w->seqtab, conv);
        assert_int_equal(cseq, c);
        convmark_note(w, conv, cseq, 1000 + c);
    }
    assert_int_equal(pthread_create(&opener, NULL, open_gate_later, &g), 0);
    convmark_stop(w);
    assert_int_equal(pthread_join(opener, NULL), 0);
    storage_stop(w->storage);

    st = open_direct(e, &ops);
    for (int c = 1; c <= MARK_CONVS; c++) {
        int64_t last = -1;

        assert_int_equal(ops->conv_last_cseq(st, store_conv_pair(c, 100 + c), &last), QC_OK);
        assert_int_equal(last, c);
    }
    ops->close(st);
    seqtab_destroy(w->seqtab);
    free(w->convmarks);
    free(w);
}

#define SQLITE_TEST(fn) cmocka_unit_test_setup_teardown(fn, setup_sqlite, teardown)
#define MYSQL_TEST(fn)  cmocka_unit_test_setup_teardown(fn, setup_mysql, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        SQLITE_TEST(test_group_commit),
        SQLITE_TEST(test_jobs_in_order),
        SQLITE_TEST(test_blocked_and_full),
        SQLITE_TEST(test_workers_one_conversation),
        SQLITE_TEST(test_bad_append),
        SQLITE_TEST(test_start_fails_cleanly),
        MYSQL_TEST(test_group_commit),
        MYSQL_TEST(test_jobs_in_order),
        MYSQL_TEST(test_blocked_and_full),
        MYSQL_TEST(test_workers_one_conversation),
        SQLITE_TEST(test_assign_order),
        SQLITE_TEST(test_two_nodes_assign),
        MYSQL_TEST(test_assign_order),
        MYSQL_TEST(test_two_nodes_assign),
        SQLITE_TEST(test_two_nodes_assign_many),
        MYSQL_TEST(test_two_nodes_assign_many),
        SQLITE_TEST(test_backlog_handed_back_per_transaction),
        MYSQL_TEST(test_backlog_handed_back_per_transaction),
        SQLITE_TEST(test_advance_with_appends),
        MYSQL_TEST(test_advance_with_appends),
        SQLITE_TEST(test_marks_at_a_stop_with_the_queue_full),
        MYSQL_TEST(test_marks_at_a_stop_with_the_queue_full),
    };

    (void)mdb_load_env("test_storage"); /* without it the mysql cases skip */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
