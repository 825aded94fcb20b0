/*
 * pending.h - requests whose ACK waits for their deliveries.
 *
 * A request that carries "seq" is answered once every delivery it caused is
 * safe: a pending request counts outstanding deliveries (the opener holds one
 * reference) and is answered through the worker's answer hook (reply.c)
 * when the count reaches zero, with the first error any delivery reported.
 * Handles are slab handles: a late completion for a request long gone finds
 * nothing.
 */
#ifndef QCHAT_SERVER_PENDING_H
#define QCHAT_SERVER_PENDING_H

#include <stdint.h>

struct worker;
struct conn;

/*
 * Open a pending request for conn c's request msgid with the given serialized
 * seq (NULL: none).  Returns a handle, 0 when out of memory.
 */
uint32_t pending_open(struct worker *w, struct conn *c, int msgid, const char *seq);
void pending_set_mid(struct worker *w, uint32_t req, int64_t mid);
/* The chat's position in its conversation, for its ACK. */
void pending_set_cseq(struct worker *w, uint32_t req, int64_t cseq);
void pending_set_groupid(struct worker *w, uint32_t req, int32_t groupid);
/* One more delivery of req is on its way. */
void pending_add(struct worker *w, uint32_t req);
/* One delivery of req became safe (err 0) or failed (err != 0). */
void pending_done(struct worker *w, uint32_t req, int err);

void pending_init(struct worker *w);
void pending_destroy(struct worker *w);

#endif
