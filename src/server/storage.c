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
 * Cursor advances (storage_advance, a worker's delivered cursors of one
 * loop turn each) are queued apart and wait for the kick like appends:
 * one round writes all of them with one store call, inside its first
 * append transaction when the driver has log_append_advance.  They were
 * jobs, a transaction each, dozens per round under ping-pong (see
 * docs/BENCHMARKS.md, "The log on, SQLite: one commit per round").  A
 * merged transaction that fails is retried as two, so a cursor never
 * costs an append (nor an append a cursor).
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

enum item_kind { ITEM_APPEND, ITEM_ADVANCE, ITEM_JOB };

struct item {
    struct item *next;
    enum item_kind kind;
    storage_run_fn fn;
    storage_done_fn done;
    storage_assign_fn assigned; /* an append numbered by the database, instead of done */
    storage_applied_fn applied; /* ITEM_ADVANCE: on the thread, after its store call */
    const int32_t *userids;     /* ITEM_ADVANCE: the caller's arrays, n of each */
    const struct store_cursor *pos;
    size_t n;
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
    struct list appends, advances, jobs, done;
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

/* Hand the items of l, and round's counts, to the worker; the lock is held. */
static void hand_back_locked(struct storage *s, struct list *l, struct storage_stats *round)
{
    s->stats.commits += round->commits;
    s->stats.appended += round->appended;
    s->stats.advanced += round->advanced;
    s->stats.cursor_tx += round->cursor_tx;
    s->stats.jobs += round->jobs;
    list_splice(&s->done, l);
    signal_done(s);
    memset(round, 0, sizeof(*round));
}

/* The same from the middle of a round (the lock is not held). */
static void hand_back(struct storage *s, struct list *l, struct storage_stats *round)
{
    pthread_mutex_lock(&s->lock);
    hand_back_locked(s, l, round);
    pthread_mutex_unlock(&s->lock);
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

/* A round's cursor advances, gathered into one pair of arrays. */
struct cursors {
    int32_t *userids;
    struct store_cursor *pos;
    size_t n;
    bool gathered; /* false: out of memory, each advance goes alone */
    bool written;  /* by the merged append transaction */
    int err;
};

/* Concatenate every advance of l into c (c->gathered false when out of memory). */
static void gather_cursors(const struct list *l, struct cursors *c)
{
    const struct item *it;
    size_t total = 0;

    memset(c, 0, sizeof(*c));
    c->gathered = true;
    for (it = l->head; it != NULL; it = it->next)
        total += it->n;
    if (total == 0)
        return;
    c->userids = malloc(total * sizeof(*c->userids));
    c->pos = malloc(total * sizeof(*c->pos));
    if (c->userids == NULL || c->pos == NULL) {
        free(c->userids);
        free(c->pos);
        memset(c, 0, sizeof(*c));
        return;
    }
    for (it = l->head; it != NULL; it = it->next) {
        memcpy(c->userids + c->n, it->userids, it->n * sizeof(*c->userids));
        memcpy(c->pos + c->n, it->pos, it->n * sizeof(*c->pos));
        c->n += it->n;
    }
}

/* delivered_advance_many, or delivered_advance per run of one user when the driver has none. */
static int advance_cursors(struct storage *s, const int32_t *userids,
                           const struct store_cursor *pos, size_t n)
{
    int first_err = QC_OK;
    size_t i = 0, k;

    if (s->ops->delivered_advance_many != NULL)
        return s->ops->delivered_advance_many(s->st, userids, pos, n);
    while (i < n) {
        for (k = i + 1; k < n && userids[k] == userids[i]; k++)
            ;
        int err = s->ops->delivered_advance(s->st, userids[i], pos + i, k - i);
        if (err != QC_OK && first_err == QC_OK)
            first_err = err;
        i = k;
    }
    return first_err;
}

/* One transaction of n appends, with the round's cursors when they can go along. */
static int append_chunk(struct storage *s, struct store_logmsg *batch, size_t n, struct cursors *c)
{
    int err;

    if (c->n > 0 && !c->written && s->ops->log_append_advance != NULL) {
        err = s->ops->log_append_advance(s->st, batch, n, c->userids, c->pos, c->n);
        if (err == QC_OK) {
            c->written = true;
            c->err = QC_OK;
            return QC_OK;
        }
        log_warning("storage: %zu append(s) with %zu cursor(s) in one transaction: %s; "
                    "writing them apart",
                    n, c->n, qc_strerror(err));
    }
    return s->ops->log_append(s->st, batch, n);
}

/*
 * Give each advance item of l its outcome (c's, merged or written now with
 * one store call, or its own call when they could not be gathered), run
 * its applied callback, and hand them back.  l is empty afterwards.
 */
static void finish_advances(struct storage *s, struct list *l, struct cursors *c,
                            struct storage_stats *round)
{
    struct item *it;

    if (c->gathered && c->n > 0 && !c->written) {
        c->err = advance_cursors(s, c->userids, c->pos, c->n);
        round->cursor_tx++;
    }
    for (it = l->head; it != NULL; it = it->next) {
        if (c->gathered) {
            it->err = c->err;
        } else {
            it->err = advance_cursors(s, it->userids, it->pos, it->n);
            round->cursor_tx++;
        }
        if (it->err == QC_OK)
            round->advanced += it->n;
        if (it->applied != NULL)
            it->applied(it->arg, it->err);
    }
    hand_back(s, l, round);
}

/*
 * Write the appends of l, up to STORAGE_TX_MAX per transaction (the first
 * also carrying the round's cursors when the driver merges them); each
 * item gets its outcome, and each transaction's items go back to the
 * worker as soon as it is committed: behind a backlog of many
 * transactions (a slow database) the worker sees commits, and room to
 * append, one transaction at a time, not after the whole backlog.  The
 * advances of adv go back with the transaction that wrote them, or after
 * the appends in a call of their own.  l and adv are empty afterwards.
 */
static void write_round(struct storage *s, struct list *l, struct list *adv,
                        struct storage_stats *round)
{
    size_t cap = l->n < STORAGE_TX_MAX ? l->n : STORAGE_TX_MAX;
    struct store_logmsg *batch = cap > 0 ? calloc(cap, sizeof(*batch)) : NULL;
    struct cursors c;

    gather_cursors(adv, &c);
    if (cap > 0 && batch == NULL)
        log_error("storage: out of memory for a batch of %zu appends", cap);
    while (l->head != NULL) {
        struct list tx = take_first(l, l->n < STORAGE_TX_MAX ? l->n : STORAGE_TX_MAX);
        struct item *it;
        size_t i;
        int err = QC_ESTORAGE;

        if (batch != NULL) {
            for (i = 0, it = tx.head; it != NULL; it = it->next)
                batch[i++] = it->msg;
            err = append_chunk(s, batch, tx.n, &c);
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
        if (c.written && adv->head != NULL)
            finish_advances(s, adv, &c, round);
    }
    free(batch);
    if (adv->head != NULL)
        finish_advances(s, adv, &c, round);
    free(c.userids);
    free(c.pos);
}

static void run_jobs(struct storage *s, struct list *l, struct storage_stats *round)
{
    struct item *it;

    for (it = l->head; it != NULL; it = it->next) {
        it->err = it->fn(s->ops, s->st, it->arg);
        round->jobs++;
    }
}

static bool queue_empty(const struct storage *s)
{
    return s->appends.head == NULL && s->advances.head == NULL && s->jobs.head == NULL;
}

static void *storage_thread(void *arg)
{
    struct storage *s = arg;
    struct list appends, advances, jobs;
    struct storage_stats round;

    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->stopping && queue_empty(s))
            pthread_cond_wait(&s->wake, &s->lock);
        if (queue_empty(s))
            break; /* stopping, and everything queued is done */
        appends = s->appends;
        advances = s->advances;
        jobs = s->jobs;
        s->appends = s->advances = s->jobs = (struct list){ NULL, NULL, 0 };
        pthread_mutex_unlock(&s->lock);

        memset(&round, 0, sizeof(round));
        /* Appends and cursors before the jobs: they see what was queued first. */
        write_round(s, &appends, &advances, &round);
        run_jobs(s, &jobs, &round);
        /*
         * The jobs go back under the lock the wait below keeps: a worker
         * that saw them done and queues more finds the thread waiting (its
         * appends then wait for the turn's kick, as they should).
         */
        pthread_mutex_lock(&s->lock);
        if (jobs.head != NULL)
            hand_back_locked(s, &jobs, &round);
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
    list_push(it->kind == ITEM_APPEND    ? &s->appends
              : it->kind == ITEM_ADVANCE ? &s->advances
                                         : &s->jobs,
              it);
    if (it->kind == ITEM_JOB || !s->batch_turns)
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
    if (s->appends.head != NULL || s->advances.head != NULL)
        pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
}

/* A job or an advance item with its callback, or NULL when out of memory. */
static struct item *item_new(enum item_kind kind, storage_done_fn done, void *arg)
{
    struct item *it = calloc(1, sizeof(*it));

    if (it != NULL) {
        it->kind = kind;
        it->done = done;
        it->arg = arg;
    }
    return it;
}

int storage_submit(struct storage *s, storage_run_fn fn, storage_done_fn done, void *arg)
{
    struct item *it = item_new(ITEM_JOB, done, arg);

    if (it == NULL)
        return STORAGE_QUEUE_FULL;
    it->fn = fn;
    return enqueue(s, it);
}

int storage_advance(struct storage *s, const int32_t *userids, const struct store_cursor *pos,
                    size_t n, storage_applied_fn applied, storage_done_fn done, void *arg)
{
    struct item *it;

    if (n == 0 || userids == NULL || pos == NULL)
        return QC_EBADREQ;
    if ((it = item_new(ITEM_ADVANCE, done, arg)) == NULL)
        return STORAGE_QUEUE_FULL;
    it->userids = userids;
    it->pos = pos;
    it->n = n;
    it->applied = applied;
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
        log_info("storage: %llu message(s) appended in %llu transaction(s), %llu job(s), "
                 "%llu cursor(s) advanced, %llu cursor transaction(s) apart",
                 (unsigned long long)s->stats.appended, (unsigned long long)s->stats.commits,
                 (unsigned long long)s->stats.jobs, (unsigned long long)s->stats.advanced,
                 (unsigned long long)s->stats.cursor_tx);
    }
    if (s->st != NULL)
        s->ops->close(s->st);
    if (s->efd >= 0)
        (void)close(s->efd);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
