/*
 * log_batch.h - what both drivers' log_append do alike, apart from SQL:
 * checking a batch, numbering its messages given with cseq 0 (one
 * reservation per conversation), and walking it per conversation and per
 * sender for the conversation rows and cursors.  Everything goes in
 * conversation order, so two writers never wait for each other in a cycle.
 */
#ifndef QCHAT_STORE_LOG_BATCH_H
#define QCHAT_STORE_LOG_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* One message of a batch, for the per-conversation and per-sender updates. */
struct conv_top {
    int64_t conv, cseq, ts;
    int32_t sender;
    bool numbered; /* numbered by this batch's reservation (given with cseq 0) */
};

struct log_batch {
    struct store_logmsg *msgs;
    size_t n;
    struct conv_top *tops; /* n entries, sorted by conv, sender, cseq (log_batch_number) */
    size_t *todo;          /* the messages given with cseq 0, by conv then batch order */
    size_t ntodo;
};

/*
 * Check msgs[0..n) (n > 0) and plan them: QC_OK, QC_EBADREQ (a cseq below 0
 * or no conv), QC_ETOOLONG (a body over INT_MAX bytes) or QC_ESTORAGE (out
 * of memory, logged for driver).
 */
int log_batch_init(struct log_batch *b, struct store_logmsg *msgs, size_t n, const char *driver);
void log_batch_free(struct log_batch *b);
/* Give the messages to number cseq 0 again (before a retry, after a rollback). */
void log_batch_unnumber(struct log_batch *b);

/* Reserve k cseqs in msgs[todo[0]]'s conversation and set msgs[todo[0..k)] to them. */
typedef int (*log_reserve_fn)(struct store *st, struct store_logmsg *msgs, const size_t *todo,
                              size_t k);
/*
 * Raise a conversation's last cseq to t's (and make a pair's two cursors).
 * t->numbered: every message of the conversation in the batch was numbered
 * by its reservation, which already raised the last cseq and time to t's.
 */
typedef int (*log_bump_fn)(struct store *st, const struct conv_top *t);
/* Move sender's cursor in conv over its own run from..to if it reached from - 1. */
typedef int (*log_seen_fn)(struct store *st, int32_t sender, int64_t conv, int64_t from,
                           int64_t to);

/*
 * In the open transaction: number the messages to number (reserve once per
 * conversation), sort tops by the final cseqs.
 */
int log_batch_number(struct log_batch *b, struct store *st, log_reserve_fn reserve);
/* Sort tops by the final cseqs (what log_batch_number ends with, for a driver that numbers itself). */
void log_batch_sort(struct log_batch *b);
/*
 * Per conversation: bump with its highest message, then, per sender, seen
 * over the sender's first contiguous run of cseqs (nothing of others is
 * ever skipped).
 */
int log_batch_update(const struct log_batch *b, struct store *st, log_bump_fn bump,
                     log_seen_fn seen);

#endif
