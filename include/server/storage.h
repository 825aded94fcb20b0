/*
 * storage.h - a worker's storage thread: every store call off the event loop.
 *
 * Each worker starts one storage thread with its own store handle.  The
 * worker's loop queues work and never waits for the database; the thread
 * runs it and reports completion through an eventfd the loop watches
 * (storage_fd); the loop then calls storage_complete(), which runs each
 * finished item's done callback on the worker's own thread.  A hung
 * database therefore delays callbacks (ACKs, history, login lists), never
 * the loop.
 *
 * Two kinds of work:
 *   - appends to the conversation log (storage_append), with GROUP COMMIT:
 *     every append queued while the previous transaction ran is written in
 *     the next one, one store_ops.log_append call (one transaction) for all
 *     of them.  The message's cseq is assigned by the caller before it is
 *     queued (live delivery does not wait), and log_append ignores a
 *     (conv, cseq) that is already stored, so appends can be replayed.
 *     With several nodes, storage_append_assign queues it with cseq 0 and
 *     the store numbers it in the same group-commit transaction.
 *   - delivered-cursor advances (storage_advance): every advance queued by
 *     the next round is written in one store call, and in the same
 *     transaction as the round's appends when the driver has
 *     store_ops.log_append_advance (one commit per round, not one per loop
 *     turn's cursors plus one for the appends).
 *   - any other store call (storage_submit): a function run on the thread
 *     with the thread's store handle, its result handed to the callback.
 * In one round the thread writes the appends and the advances first, then
 * runs the jobs, so a job queued after an append or an advance sees it
 * committed.
 *
 * The queue is bounded (storage.queue_size items submitted and not yet
 * completed): beyond it storage_submit and storage_append refuse at once
 * with STORAGE_QUEUE_FULL, and the caller answers QC_ESTORAGE.
 */
#ifndef QCHAT_SERVER_STORAGE_H
#define QCHAT_SERVER_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "store/store.h"

#define STORAGE_QUEUE_FULL (-1)  /* storage_submit / storage_append: queue at its bound */
#define STORAGE_TX_MAX     10000 /* appends in one transaction at most */

struct storage;

/* Runs on the storage thread; returns QC_OK or a QC_E* error. */
typedef int (*storage_run_fn)(const struct store_ops *ops, struct store *st, void *arg);
/* Runs on the worker's thread, in storage_complete(), with the outcome. */
typedef void (*storage_done_fn)(void *arg, int err);
/* Runs on the worker's thread with the outcome and the cseq the store assigned (0 on error). */
typedef void (*storage_assign_fn)(void *arg, int err, int64_t cseq);
/* Runs on the storage thread as soon as its store call committed (err QC_OK) or failed. */
typedef void (*storage_applied_fn)(void *arg, int err);

struct storage_stats {
    uint64_t appended;  /* messages written by log_append (including replays) */
    uint64_t commits;   /* log_append transactions (with the round's advances, if merged) */
    uint64_t advanced;  /* delivered cursors written by storage_advance items */
    uint64_t cursor_tx; /* transactions of advances alone (not merged with appends) */
    uint64_t jobs;      /* generic jobs run */
    uint64_t rejected;  /* refused with STORAGE_QUEUE_FULL */
    size_t outstanding; /* submitted, not yet completed */
};

/*
 * Open a store handle (cfg's driver), start the thread.  NULL with err
 * set when the store cannot be opened or the thread cannot start.
 */
struct storage *storage_start(const struct qc_config *cfg, char *err, size_t errlen);
/* The eventfd that becomes readable when items are done. */
int storage_fd(const struct storage *s);
/* Queue fn(arg) for the thread; done(arg, err) later.  QC_OK or STORAGE_QUEUE_FULL. */
int storage_submit(struct storage *s, storage_run_fn fn, storage_done_fn done, void *arg);
/*
 * Queue one message for the log (m and its body are copied); done(arg, err)
 * once the transaction that holds it committed (err QC_OK) or failed.
 * QC_OK, QC_EBADREQ (cseq or conv unset) or STORAGE_QUEUE_FULL.
 */
int storage_append(struct storage *s, const struct store_logmsg *m, storage_done_fn done,
                   void *arg);
/*
 * Queue one message with cseq 0 for the log (copied like storage_append):
 * the store gives it the next cseq of its conversation inside the
 * transaction that commits it (several nodes: the database is the
 * sequencer), in queue order within one conversation.  done(arg, err, cseq)
 * once committed (cseq > 0) or failed (cseq 0).  QC_OK, QC_EBADREQ (conv
 * unset or cseq not 0) or STORAGE_QUEUE_FULL.
 */
int storage_append_assign(struct storage *s, const struct store_logmsg *m,
                          void (*done)(void *arg, int err, int64_t cseq), void *arg);
/*
 * Queue delivered-cursor advances: userids[i]'s cursor to pos[i], never
 * lowered (store_ops.delivered_advance_many).  The arrays stay the
 * caller's and must live until done runs.  All advances queued when the
 * thread next takes its queue are one store call, merged with that
 * round's first append transaction when the driver can.  applied(arg, err)
 * runs on the storage thread right after that call (may be NULL), done(arg,
 * err) later on the worker.  Like an append it waits for storage_kick
 * under storage_batch_turns.  QC_OK, QC_EBADREQ (n 0) or STORAGE_QUEUE_FULL.
 */
int storage_advance(struct storage *s, const int32_t *userids, const struct store_cursor *pos,
                    size_t n, storage_applied_fn applied, storage_done_fn done, void *arg);
/* Run the done callbacks of finished items (the eventfd fired); returns how many. */
size_t storage_complete(struct storage *s);
/*
 * From now on an append does not wake the thread by itself: storage_kick
 * does (the worker calls it at the end of each loop turn), so one turn's
 * appends (and cursor advances) are one group commit.  Jobs still wake it
 * at once.
 */
void storage_batch_turns(struct storage *s);
/* Wake the thread if appends or advances are waiting. */
void storage_kick(struct storage *s);
void storage_get_stats(struct storage *s, struct storage_stats *out);
/*
 * Finish everything queued, stop the thread, run the last callbacks,
 * close the store handle and free s.
 */
void storage_stop(struct storage *s);

#endif
