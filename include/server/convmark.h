/*
 * convmark.h - [history] enabled = no: the cseqs handed out to chats that
 * were written live and not stored, kept taken in the store.
 *
 * With the log off, a chat that reached every recipient live is not
 * appended, so the store's last cseq of its conversation would lag behind
 * the sequencer; after a restart (or an eviction from the sequencer) the
 * conversation would be seeded from the store and hand those cseqs out
 * again, and clients that drop duplicates by cseq would drop new chats.
 * So each such chat is noted here, and at the end of a loop turn, at most
 * once per CONVMARK_PERIOD_MS (100 ms), the highest cseq per conversation
 * goes to the storage thread as ONE job (store conv_raise: one row per
 * conversation, no message, no cursor).  When it
 * has committed, the sequencer counts those cseqs as committed (the entry
 * may then be evicted).  The chat's ACK does not wait for it.
 */
#ifndef QCHAT_SERVER_CONVMARK_H
#define QCHAT_SERVER_CONVMARK_H

#include <stdint.h>

struct worker;

/* conv's chat cseq (time ts, epoch ms) was handed out and not stored. */
void convmark_note(struct worker *w, int64_t conv, int64_t cseq, int64_t ts);
/* Send what was noted to the storage thread now. */
void convmark_flush(struct worker *w);
/* At a stop, before storage_stop: every mark sent and stored (bounded wait), or logged as not. */
void convmark_stop(struct worker *w);
/* The end of a loop turn: convmark_flush when the period since the last job is over. */
void convmark_end_turn(struct worker *w);

#endif
