/*
 * log_batch.c - the driver-independent half of log_append (log_batch.h).
 */
#include <limits.h>
#include <stdlib.h>

#include "common/log.h"
#include "log_batch.h"

static int by_conv_sender_cseq(const void *a, const void *b)
{
    const struct conv_top *x = a, *y = b;

    if (x->conv != y->conv)
        return x->conv < y->conv ? -1 : 1;
    if (x->sender != y->sender)
        return x->sender < y->sender ? -1 : 1;
    return x->cseq < y->cseq ? -1 : x->cseq > y->cseq;
}

/* Order of the messages to number: by conversation, then batch order. */
static int by_conv_then_index(const void *a, const void *b, void *arg)
{
    const struct store_logmsg *msgs = arg;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;

    if (msgs[x].conv != msgs[y].conv)
        return msgs[x].conv < msgs[y].conv ? -1 : 1;
    return x < y ? -1 : x > y;
}

int log_batch_init(struct log_batch *b, struct store_logmsg *msgs, size_t n, const char *driver)
{
    size_t i;

    *b = (struct log_batch){ msgs, n, NULL, NULL, 0 };
    for (i = 0; i < n; i++) {
        if (msgs[i].cseq < 0 || msgs[i].conv == 0)
            return QC_EBADREQ;
        if (msgs[i].len > INT_MAX)
            return QC_ETOOLONG;
    }
    b->tops = malloc(n * sizeof(*b->tops));
    b->todo = malloc(n * sizeof(*b->todo));
    if (b->tops == NULL || b->todo == NULL) {
        log_error("%s: log append: out of memory for %zu messages", driver, n);
        log_batch_free(b);
        return QC_ESTORAGE;
    }
    for (i = 0; i < n; i++)
        if (msgs[i].cseq == 0)
            b->todo[b->ntodo++] = i;
    qsort_r(b->todo, b->ntodo, sizeof(*b->todo), by_conv_then_index, msgs);
    return QC_OK;
}

void log_batch_free(struct log_batch *b)
{
    free(b->tops);
    free(b->todo);
    b->tops = NULL;
    b->todo = NULL;
}

void log_batch_unnumber(struct log_batch *b)
{
    for (size_t i = 0; i < b->ntodo; i++)
        b->msgs[b->todo[i]].cseq = 0;
}

int log_batch_number(struct log_batch *b, struct store *st, log_reserve_fn reserve)
{
    const struct store_logmsg *m = b->msgs;
    size_t i = 0, j;
    int err = QC_OK;

    while (i < b->ntodo && err == QC_OK) {
        for (j = i; j < b->ntodo && m[b->todo[j]].conv == m[b->todo[i]].conv; j++)
            ;
        err = reserve(st, b->msgs, b->todo + i, j - i);
        i = j;
    }
    if (err != QC_OK)
        return err;
    log_batch_sort(b);
    return QC_OK;
}

void log_batch_sort(struct log_batch *b)
{
    const struct store_logmsg *m = b->msgs;

    for (size_t i = 0; i < b->n; i++)
        b->tops[i] = (struct conv_top){ m[i].conv, m[i].cseq, m[i].ts, m[i].sender, false };
    for (size_t k = 0; k < b->ntodo; k++)
        b->tops[b->todo[k]].numbered = true;
    qsort(b->tops, b->n, sizeof(*b->tops), by_conv_sender_cseq);
}

/* The sender's own messages t[0..n) (one conversation, ascending cseq): its first run. */
static int sender_run(struct store *st, const struct conv_top *t, size_t n, log_seen_fn seen)
{
    size_t k = 1;

    while (k < n && t[k].cseq == t[k - 1].cseq + 1)
        k++;
    return seen(st, t[0].sender, t[0].conv, t[0].cseq, t[k - 1].cseq);
}

int log_batch_update(const struct log_batch *b, struct store *st, log_bump_fn bump,
                     log_seen_fn seen)
{
    const struct conv_top *t = b->tops;
    size_t i = 0, j, k, top;
    int err = QC_OK;

    while (i < b->n && err == QC_OK) {
        bool all_numbered = true;

        for (j = i, top = i; j < b->n && t[j].conv == t[i].conv; j++) {
            if (t[j].cseq > t[top].cseq)
                top = j;
            all_numbered = all_numbered && t[j].numbered;
        }
        struct conv_top highest = t[top];

        highest.numbered = all_numbered;
        err = bump(st, &highest);
        for (k = i; k < j && err == QC_OK; k = i) {
            for (i = k; i < j && t[i].sender == t[k].sender; i++)
                ;
            err = sender_run(st, &t[k], i - k, seen);
        }
        i = j;
    }
    return err;
}
