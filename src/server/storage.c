/*
 * storage.c - a worker's storage thread (see storage.h).
 *
 * One mutex guards three lists: appends and jobs queued by the worker (a
 * condition variable wakes the thread) and items done (the thread pushes,
 * the worker pops after the eventfd fires).  The thread takes everything
 * queued at once: that is the group commit (STORAGE_TX_MAX appends per
 * transaction, each transaction handed back as soon as it commits), then
 * the jobs, which so see every append queued before them.  Nothing else
 * is shared: an item carries everything it needs (an append carries a
 * copy of its body).
 *
 * An append made by storage_append_assign carries cseq 0: the store numbers
 * it inside the committing transaction, and the number it wrote back into
 * the batch goes to the item's callback.
 *
 * With storage_batch_turns (a worker) an append does not wake the thread:
 * the worker's storage_kick at the end of each loop turn does, so a turn's
 * appends are one transaction instead of a first lone one that woke the
 * thread and the rest behind it (see docs/BENCHMARKS.md, issue 11 (b)).
 * A job still wakes it at once, and takes the appends queued so far along.
 *
 * The store handle is opened by storage_start() in the caller's thread and
 * from then on used by the storage thread only (pthread_create orders the
 * two), as the drivers require: one handle, one thread at a time.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/log.h"
#include "server/storage.h"

enum item_kind { ITEM_APPEND, ITEM_JOB };

struct item {
    struct item *next;
    enum item_kind kind;
    storage_run_fn fn;
    storage_done_fn done;
    storage_assign_fn assigned; /* an append numbered by the database, instead of done */
    void *arg;
    int err;
    struct store_logmsg msg; /* ITEM_APPEND: msg.body points at body[] */
    char body[];
};

/* A singly linked FIFO. */
struct list {
    struct item *head, *tail;
    size_t n;
};

struct storage {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct list appends, jobs, done;
    size_t outstanding, limit;
    bool stopping, started;
    bool batch_turns; /* appends wait for storage_kick (storage_batch_turns) */
    int efd;
    pthread_t thread;
    const struct store_ops *ops;
    struct store *st;
    struct storage_stats stats;
};

static void list_push(struct list *l, struct item *it)
{
    it->next = NULL;
    if (l->tail != NULL)
        l->tail->next = it;
    else
        l->head = it;
    l->tail = it;
    l->n++;
}

/* Move every item of from to the end of to. */
static void list_splice(struct list *to, struct list *from)
{
    if (from->head == NULL)
        return;
    if (to->tail != NULL)
        to->tail->next = from->head;
    else
        to->head = from->head;
    to->tail = from->tail;
    to->n += from->n;
    *from = (struct list){ NULL, NULL, 0 };
}

/* ---- the thread ----------------------------------------------------- */

static void signal_done(struct storage *s)
{
    uint64_t one = 1;

    if (write(s->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_error("storage thread: eventfd: %s", strerror(errno));
}

/* Hand the items of l, and round's counts, to the worker (the lock is not held). */
static void hand_back(struct storage *s, struct list *l, struct storage_stats *round)
{
    pthread_mutex_lock(&s->lock);
    s->stats.commits += round->commits;
    s->stats.appended += round->appended;
    s->stats.jobs += round->jobs;
    list_splice(&s->done, l);
    signal_done(s);
    pthread_mutex_unlock(&s->lock);
    memset(round, 0, sizeof(*round));
}

/* Detach the first n items of l (n <= l->n) into a list of their own. */
static struct list take_first(struct list *l, size_t n)
{
    struct list head = { l->head, NULL, n };
    struct item *it = l->head;

    for (size_t i = 1; i < n; i++)
        it = it->next;
    head.tail = it;
    l->head = it->next;
    if (l->head == NULL)
        l->tail = NULL;
    l->n -= n;
    it->next = NULL;
    return head;
}

/*
 * Write the appends of l, up to STORAGE_TX_MAX per transaction; each item
 * gets its outcome, and each transaction's items go back to the worker as
 * soon as it is committed: behind a backlog of many transactions (a slow
 * database) the worker sees commits, and room to append, one transaction
 * at a time, not after the whole backlog.  l is empty afterwards.
 */
static void write_appends(struct storage *s, struct list *l, struct storage_stats *round)
{
    size_t cap = l->n < STORAGE_TX_MAX ? l->n : STORAGE_TX_MAX;
    struct store_logmsg *batch = calloc(cap, sizeof(*batch));

    if (batch == NULL)
        log_error("storage: out of memory for a batch of %zu appends", cap);
    while (l->head != NULL) {
        struct list tx = take_first(l, l->n < STORAGE_TX_MAX ? l->n : STORAGE_TX_MAX);
        struct item *it;
        size_t i;
        int err = QC_ESTORAGE;

        if (batch != NULL) {
            for (i = 0, it = tx.head; it != NULL; it = it->next)
                batch[i++] = it->msg;
            err = s->ops->log_append(s->st, batch, tx.n);
        }
        for (i = 0, it = tx.head; it != NULL; it = it->next, i++) {
            it->err = err;
            if (batch != NULL)
                it->msg.cseq = batch[i].cseq; /* as the store numbered it (0: failed) */
        }
        round->commits++;
        if (err == QC_OK)
            round->appended += tx.n;
        hand_back(s, &tx, round);
    }
    free(batch);
}

static void run_jobs(struct storage *s, struct list *l, struct storage_stats *round)
{
    struct item *it;

    for (it = l->head; it != NULL; it = it->next) {
        it->err = it->fn(s->ops, s->st, it->arg);
        round->jobs++;
    }
}

static void *storage_thread(void *arg)
{
    struct storage *s = arg;
    struct list appends, jobs;
    struct storage_stats round;

    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->stopping && s->appends.head == NULL && s->jobs.head == NULL)
            pthread_cond_wait(&s->wake, &s->lock);
        if (s->appends.head == NULL && s->jobs.head == NULL)
            break; /* stopping, and everything queued is done */
        appends = s->appends;
        jobs = s->jobs;
        s->appends = s->jobs = (struct list){ NULL, NULL, 0 };
        pthread_mutex_unlock(&s->lock);

        memset(&round, 0, sizeof(round));
        write_appends(s, &appends, &round); /* before the jobs: they see what was queued first */
        if (jobs.head != NULL) {
            run_jobs(s, &jobs, &round);
            hand_back(s, &jobs, &round);
        }
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- the worker's side ---------------------------------------------- */

struct storage *storage_start(const struct qc_config *cfg, char *err, size_t errlen)
{
    struct storage *s = calloc(1, sizeof(*s));

    if (s == NULL) {
        snprintf(err, errlen, "storage: out of memory");
        return NULL;
    }
    s->efd = -1;
    s->limit = (size_t)cfg->storage_queue_size;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    s->ops = store_driver(cfg->storage_driver);
    if (s->ops == NULL) {
        snprintf(err, errlen, "storage: unknown driver \"%s\"", cfg->storage_driver);
        goto fail;
    }
    if (s->ops->open(&s->st, cfg, err, errlen) != QC_OK)
        goto fail;
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->efd < 0) {
        snprintf(err, errlen, "storage: eventfd: %s", strerror(errno));
        goto fail;
    }
    if (pthread_create(&s->thread, NULL, storage_thread, s) != 0) {
        snprintf(err, errlen, "storage: cannot start the storage thread");
        goto fail;
    }
    s->started = true;
    return s;
fail:
    storage_stop(s);
    return NULL;
}

int storage_fd(const struct storage *s)
{
    return s->efd;
}

/* Queue it (the caller made it) unless the bound is reached. */
static int enqueue(struct storage *s, struct item *it)
{
    pthread_mutex_lock(&s->lock);
    if (s->outstanding >= s->limit || s->stopping) {
        bool first = s->stats.rejected == 0;

        s->stats.rejected++;
        pthread_mutex_unlock(&s->lock);
        if (first)
            log_warning("storage: queue full (storage.queue_size = %zu items waiting for "
                        "the database); refusing storage requests until it drains",
                        s->limit);
        free(it);
        return STORAGE_QUEUE_FULL;
    }
    s->outstanding++;
    list_push(it->kind == ITEM_APPEND ? &s->appends : &s->jobs, it);
    if (it->kind != ITEM_APPEND || !s->batch_turns)
        pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    return QC_OK;
}

void storage_batch_turns(struct storage *s)
{
    pthread_mutex_lock(&s->lock);
    s->batch_turns = true;
    pthread_mutex_unlock(&s->lock);
}

void storage_kick(struct storage *s)
{
    pthread_mutex_lock(&s->lock);
    if (s->appends.head != NULL)
        pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
}

int storage_submit(struct storage *s, storage_run_fn fn, storage_done_fn done, void *arg)
{
    struct item *it = calloc(1, sizeof(*it));

    if (it == NULL)
        return STORAGE_QUEUE_FULL;
    it->kind = ITEM_JOB;
    it->fn = fn;
    it->done = done;
    it->arg = arg;
    return enqueue(s, it);
}

/* A copy of m (and its body) as an append item, or NULL when out of memory. */
static struct item *append_item(const struct store_logmsg *m)
{
    struct item *it = malloc(sizeof(*it) + m->len + 1);

    if (it == NULL)
        return NULL;
    memset(it, 0, sizeof(*it));
    it->kind = ITEM_APPEND;
    if (m->len)
        memcpy(it->body, m->body, m->len);
    it->body[m->len] = '\0';
    it->msg = *m;
    it->msg.body = it->body;
    return it;
}

int storage_append_assign(struct storage *s, const struct store_logmsg *m,
                          void (*done)(void *arg, int err, int64_t cseq), void *arg)
{
    struct item *it;

    if (m->conv == 0 || m->cseq != 0 || (m->len > 0 && m->body == NULL))
        return QC_EBADREQ;
    if ((it = append_item(m)) == NULL)
        return STORAGE_QUEUE_FULL;
    it->assigned = done;
    it->arg = arg;
    return enqueue(s, it);
}

int storage_append(struct storage *s, const struct store_logmsg *m, storage_done_fn done, void *arg)
{
    struct item *it;

    if (m->conv == 0 || m->cseq <= 0 || (m->len > 0 && m->body == NULL))
        return QC_EBADREQ;
    if ((it = append_item(m)) == NULL)
        return STORAGE_QUEUE_FULL;
    it->done = done;
    it->arg = arg;
    return enqueue(s, it);
}

size_t storage_complete(struct storage *s)
{
    struct list done;
    struct item *it, *next;
    uint64_t n;
    size_t count = 0;

    if (read(s->efd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        log_error("storage: eventfd: %s", strerror(errno));
    pthread_mutex_lock(&s->lock);
    done = s->done;
    s->done = (struct list){ NULL, NULL, 0 };
    s->outstanding -= done.n;
    pthread_mutex_unlock(&s->lock);
    for (it = done.head; it != NULL; it = next) {
        next = it->next;
        if (it->assigned != NULL)
            it->assigned(it->arg, it->err, it->err == QC_OK ? it->msg.cseq : 0);
        else if (it->done != NULL)
            it->done(it->arg, it->err);
        free(it);
        count++;
    }
    return count;
}

void storage_get_stats(struct storage *s, struct storage_stats *out)
{
    pthread_mutex_lock(&s->lock);
    *out = s->stats;
    out->outstanding = s->outstanding;
    pthread_mutex_unlock(&s->lock);
}

void storage_stop(struct storage *s)
{
    if (s == NULL)
        return;
    if (s->started) {
        pthread_mutex_lock(&s->lock);
        s->stopping = true;
        pthread_cond_broadcast(&s->wake);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->thread, NULL);
        (void)storage_complete(s);
        log_info("storage: %llu message(s) appended in %llu transaction(s), %llu job(s)",
                 (unsigned long long)s->stats.appended, (unsigned long long)s->stats.commits,
                 (unsigned long long)s->stats.jobs);
    }
    if (s->st != NULL)
        s->ops->close(s->st);
    if (s->efd >= 0)
        (void)close(s->efd);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
