/*
 * handoff.h - chats handed to another worker or to the relay, kept until
 * they are settled.
 *
 * A hand-off keeps a copy of the chat and the pending request it belongs
 * to.  It is settled by the receiver's answer (CONFIRM from a worker:
 * written or stored; PUBLISHED from the relay: a receiver count, 0 meaning
 * "store it here"), or by the link's loss (the copy is stored offline).
 * A handle is a slab handle: a late or duplicate answer finds nothing.
 *
 * Per recipient, the table also knows which worker still holds unconfirmed
 * hand-offs (the "in-flight" index): a chat for a user who just went offline
 * follows the same way, so that worker stores it after the earlier ones and
 * the offline queue keeps send order.
 */
#ifndef QCHAT_SERVER_HANDOFF_H
#define QCHAT_SERVER_HANDOFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct worker;

/* Keep a copy of a chat for uid handed to peer for request req; 0 when out of memory. */
uint32_t handoff_keep(struct worker *w, uint32_t peer, int32_t uid, uint32_t req,
                      const char *payload, size_t len);
/* token still names an unsettled hand-off. */
bool handoff_live(struct worker *w, uint32_t token);
/* The hand-off was never sent: forget it (req hears nothing; the caller stores the chat). */
void handoff_give_back(struct worker *w, uint32_t token);
/* Settled by link's answer: err 0 safe, else failed.  Fatal if it went to another link. */
void handoff_confirmed(struct worker *w, uint32_t link, uint32_t token, int err);
/* The relay's PUBLISH reached receivers (or nobody, or failed: stored here). */
void handoff_published(struct worker *w, uint32_t token, uint32_t receivers, bool failed);
/* The link to peer is gone: every hand-off to it is stored offline.  How many. */
size_t handoff_store_all_to(struct worker *w, uint32_t peer);
/* The worker still holding unconfirmed hand-offs for uid, if any. */
bool handoff_in_flight(struct worker *w, int32_t uid, uint32_t *peer);
/* Hand-offs to a live link are waiting for an answer (a stop waits for them). */
bool handoff_waiting(struct worker *w);

void handoff_init(struct worker *w);
/* At exit: every unsettled hand-off is stored offline. */
void handoff_shutdown(struct worker *w);

#endif
