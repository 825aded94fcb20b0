/*
 * journal.h - messages given a cseq and not yet committed, in shared memory.
 *
 * A worker assigns a cseq (seqtab.h), delivers the message live and queues
 * its append on the storage thread.  If the worker dies before the
 * transaction commits, the message would leave a gap in its conversation.
 * So before the message is delivered it is copied into the worker's ring in
 * this journal (one mapping made by the master before it forks, one ring per
 * worker index); the copy is released when its append has committed.  The
 * worker that replaces a dead one replays what its predecessor left
 * (journal_replay) through the store, whose appends are idempotent on
 * (conv, cseq), so nothing is lost and nothing is written twice.
 *
 * A ring is written by its worker only; the records are released in the
 * order they were put (the storage thread commits in queue order).
 */
#ifndef QCHAT_SERVER_JOURNAL_H
#define QCHAT_SERVER_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

struct journal;

/* One ring of ring_bytes per worker; NULL (errno) on failure. */
struct journal *journal_create(uint32_t nworkers, size_t ring_bytes);
void journal_destroy(struct journal *j);

/* Copy m into worker's ring: a handle > 0, or 0 when the ring is full. */
uint64_t journal_put(struct journal *j, uint32_t worker, const struct store_logmsg *m);
/* The append of handle committed: its record (and those before it) may go. */
void journal_done(struct journal *j, uint32_t worker, uint64_t handle);
/*
 * Call cb for every record put and not done in worker's ring (left by the
 * previous process of that index), oldest first; returns how many.  The
 * records stay until journal_done (cb may queue them again).
 */
size_t journal_replay(struct journal *j, uint32_t worker,
                      void (*cb)(void *arg, uint64_t handle, const struct store_logmsg *m),
                      void *arg);
/* Bytes in use in worker's ring. */
size_t journal_used(const struct journal *j, uint32_t worker);

#endif
