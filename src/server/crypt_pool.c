/*
 * crypt_pool.c - password hashing threads of one worker (see crypt_pool.h).
 *
 * A login's check costs one hash at the job's cost (the current
 * security.password_cost, which a reload changes) whatever the account:
 * see password_check.
 *
 * Two queues under one mutex: "todo" (the loop pushes, threads pop, a
 * condition variable wakes them) and "done" (threads push, the loop pops
 * after the eventfd fires).  Nothing else is shared with the threads: a job
 * carries everything it needs, and the loop re-checks that the connection
 * is still the same one (slot and generation) when the job comes back.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/log.h"
#include "server/crypt_pool.h"

#define CRYPT_POOL_MAX_THREADS 64

struct crypt_pool {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct crypt_job *todo_head, *todo_tail;
    struct crypt_job *done_head, *done_tail;
    bool stopping;
    int efd;
    int nthreads;
    pthread_t threads[CRYPT_POOL_MAX_THREADS];
};

static struct crypt_pool pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .efd = -1,
};

static void push(struct crypt_job **head, struct crypt_job **tail, struct crypt_job *job)
{
    job->next = NULL;
    if (*tail)
        (*tail)->next = job;
    else
        *head = job;
    *tail = job;
}

static void run_job(struct crypt_job *job)
{
    if (job->kind == CRYPT_VERIFY) {
        /* an unknown user (uid 0) is checked against nothing, at the same price */
        job->ok = password_check(job->plain, job->uid ? job->stored : NULL, job->cost, job->hash,
                                 sizeof job->hash, &job->upgraded);
    } else if (job->kind == CRYPT_CHANGE) {
        bool upgraded;
        job->ok = password_check(job->plain, job->stored, job->cost, job->hash, sizeof job->hash,
                                 &upgraded) &&
                  password_hash(job->newplain, job->cost, job->hash, sizeof job->hash) == 0;
    } else {
        job->ok = password_hash(job->plain, job->cost, job->hash, sizeof job->hash) == 0;
    }
    explicit_bzero(job->plain, sizeof job->plain);
    explicit_bzero(job->newplain, sizeof job->newplain);
    explicit_bzero(job->stored, sizeof job->stored);
}

static void *hash_thread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        while (!pool.stopping && pool.todo_head == NULL)
            pthread_cond_wait(&pool.wake, &pool.lock);
        if (pool.stopping)
            break;
        struct crypt_job *job = pool.todo_head;
        pool.todo_head = job->next;
        if (pool.todo_head == NULL)
            pool.todo_tail = NULL;
        pthread_mutex_unlock(&pool.lock);

        run_job(job);

        pthread_mutex_lock(&pool.lock);
        push(&pool.done_head, &pool.done_tail, job);
        uint64_t one = 1;
        if (write(pool.efd, &one, sizeof one) < 0 && errno != EAGAIN)
            log_error("hash thread: eventfd: %s", strerror(errno));
    }
    pthread_mutex_unlock(&pool.lock);
    return NULL;
}

int crypt_pool_start(struct worker *w, int nthreads)
{
    (void)w;
    if (nthreads < 1)
        nthreads = 1;
    if (nthreads > CRYPT_POOL_MAX_THREADS)
        nthreads = CRYPT_POOL_MAX_THREADS;
    pool.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (pool.efd < 0)
        return -1;
    for (int i = 0; i < nthreads; i++) {
        if (pthread_create(&pool.threads[i], NULL, hash_thread, NULL) != 0) {
            log_error("cannot start hash thread %d", i);
            break;
        }
        pool.nthreads++;
    }
    return pool.nthreads > 0 ? pool.efd : -1;
}

void crypt_pool_submit(struct worker *w, struct crypt_job *job)
{
    (void)w;
    pthread_mutex_lock(&pool.lock);
    push(&pool.todo_head, &pool.todo_tail, job);
    pthread_cond_signal(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
}

struct crypt_job *crypt_pool_done(struct worker *w)
{
    (void)w;
    uint64_t n;
    if (read(pool.efd, &n, sizeof n) < 0 && errno != EAGAIN)
        log_error("hash pool: eventfd: %s", strerror(errno));
    pthread_mutex_lock(&pool.lock);
    struct crypt_job *list = pool.done_head;
    pool.done_head = pool.done_tail = NULL;
    pthread_mutex_unlock(&pool.lock);
    return list;
}

void crypt_job_free(struct crypt_job *job)
{
    if (job == NULL)
        return;
    explicit_bzero(job, sizeof *job);
    free(job);
}

void crypt_pool_stop(struct worker *w)
{
    (void)w;
    pthread_mutex_lock(&pool.lock);
    pool.stopping = true;
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    for (int i = 0; i < pool.nthreads; i++)
        pthread_join(pool.threads[i], NULL);
    pool.nthreads = 0;
    for (struct crypt_job *j = pool.todo_head, *next; j; j = next) {
        next = j->next;
        crypt_job_free(j);
    }
    for (struct crypt_job *j = pool.done_head, *next; j; j = next) {
        next = j->next;
        crypt_job_free(j);
    }
    pool.todo_head = pool.todo_tail = pool.done_head = pool.done_tail = NULL;
    if (pool.efd >= 0)
        close(pool.efd);
    pool.efd = -1;
}
