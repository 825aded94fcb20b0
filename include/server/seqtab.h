/*
 * seqtab.h - the node's per-conversation cseq sequencer, in shared memory.
 *
 * Every chat gets cseq, its position in its conversation: 1, 2, 3, ... with
 * no gap and no reuse.  On a single node (no Redis) the sequencer is this
 * table, created by the master with mmap(MAP_SHARED|MAP_ANONYMOUS) before it
 * forks, like the online table: conversation key (store_conv_pair /
 * store_conv_group) -> the last cseq assigned and the last one the store has
 * committed.  A worker assigns a cseq before the message is delivered or
 * stored (live delivery does not wait for the database); the append that
 * carries it is made durable through the journal (journal.h) and the
 * storage thread.
 *
 * An entry starts cold: the first message of a conversation since the node
 * started waits for one store read (conv_last_cseq) and seqtab_seed().  An
 * entry whose every assigned cseq is committed may be evicted to make room;
 * it is seeded again from the store the next time.
 *
 * Concurrency: one process-shared robust mutex (a worker SIGKILLed while it
 * holds it leaves nothing locked; every entry is valid at every instant).
 * With several nodes the sequencer is the database instead (store_ops
 * log_append with cseq 0: assigned in the committing transaction).
 */
#ifndef QCHAT_SERVER_SEQTAB_H
#define QCHAT_SERVER_SEQTAB_H

#include <stdbool.h>
#include <stdint.h>

#define SEQ_COLD ((int64_t)0)  /* seqtab_next: seed the conversation first */
#define SEQ_FULL ((int64_t)-1) /* seqtab_next: no room, nothing evictable */

struct seqtab;

/* Map a table for capacity conversations (rounded up); NULL (errno) on failure. */
struct seqtab *seqtab_create(uint32_t capacity);
void seqtab_destroy(struct seqtab *t);

/* The next cseq of conv (> 0), or SEQ_COLD, or SEQ_FULL. */
int64_t seqtab_next(struct seqtab *t, int64_t conv);
/* conv's last stored cseq, read from the store: warms the entry (no-op if warm). 0 or -1 (full). */
int seqtab_seed(struct seqtab *t, int64_t conv, int64_t last);
/* The store committed conv's messages up to cseq (monotonic). */
void seqtab_committed(struct seqtab *t, int64_t conv, int64_t cseq);
/*
 * [history] enabled = no: conv's message cseq is kept in the log (appended
 * for a recipient it did not reach live).  A seeded entry counts every
 * cseq up to the store's last as kept.
 */
void seqtab_stored(struct seqtab *t, int64_t conv, int64_t cseq);
/*
 * May conv's message cseq be in the log?  false only when the entry is here
 * and no message at or after cseq was kept (a chat written live only, whose
 * delivered cursor need not move); true when unknown (entry evicted).
 */
bool seqtab_maybe_stored(struct seqtab *t, int64_t conv, int64_t cseq);
/* Forget conv (its log was deleted with its group). */
void seqtab_forget(struct seqtab *t, int64_t conv);
/* Entries in use, for status and tests. */
uint32_t seqtab_count(const struct seqtab *t);

#endif
