/*
 * purge.h - retention of the conversation log, in the background.
 *
 * One worker (worker 0) runs it, so that two workers never delete the same
 * rows: every PURGE_INTERVAL_MS (and at once after `qchatctl purge`, which
 * the master passes on as IPC_PURGE) it queues one storage job removing at
 * most PURGE_BATCH messages, by age ([history] keep_days) and count
 * ([history] max_per_conversation), and, with [history] enabled = no, the
 * messages every participant has had delivered.  While a batch comes back
 * full the next one follows at the next tick, so a large backlog drains in
 * small transactions and never stalls the loop or the database.  What is
 * removed is counted in qchat_history_purged_total and logged.
 */
#ifndef QCHAT_SERVER_PURGE_H
#define QCHAT_SERVER_PURGE_H

struct worker;

#define PURGE_INTERVAL_MS 60000 /* a purge round starts this often when there is work */
#define PURGE_BATCH       500   /* messages removed in one storage job (one transaction) */
#define PURGE_WORKER      0     /* the worker that purges */

/* Set up w's purge state (worker PURGE_WORKER only); 0 or -1. */
int purge_init(struct worker *w);
/* The worker's tick: start the next batch when one is due. */
void purge_tick(struct worker *w);
/* qchatctl purge: start a round now (it runs until a batch is not full). */
void purge_now(struct worker *w);
/* Free the state (the storage thread has finished its jobs). */
void purge_stop(struct worker *w);

#endif
