/*
 * route.h - where a message goes once a worker has decided to send it.
 *
 * The brief's routing steps: the recipient's session in the online table is
 * on this worker (append to its connection), on another worker of this node
 * (hand over the peer link, keep the message until the peer confirms), or
 * nowhere on this node (store offline; with Redis: the relay, later).
 *
 * A request that carries "seq" is answered once every delivery it caused is
 * safe: a pending request counts outstanding deliveries and sends the ACK
 * when the count reaches zero.
 */
#ifndef QCHAT_SERVER_ROUTE_H
#define QCHAT_SERVER_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct worker;
struct conn;
struct ipc_hdr;

enum route_result {
    ROUTE_SENT = 0, /* on its way to an online session (pending until safe) */
    ROUTE_OFFLINE,  /* recipient not online on this node: caller stores it */
};

/*
 * Open a pending request for conn c's request msgid with the given serialized
 * seq.  Returns a handle (0 when seq is empty: nobody waits for an ACK).
 */
uint32_t pending_open(struct worker *w, struct conn *c, int msgid, const char *seq);
void pending_set_mid(struct worker *w, uint32_t req, int64_t mid);
void pending_set_groupid(struct worker *w, uint32_t req, int32_t groupid);
/* One delivery of req became safe (err 0) or failed (err != 0). */
void pending_done(struct worker *w, uint32_t req, int err);

/* Send a chat to uid: ROUTE_SENT (req gets one more outstanding) or ROUTE_OFFLINE. */
enum route_result route_chat(struct worker *w, int32_t uid, const char *payload, size_t len,
                             uint32_t req);
/* Send a notice (presence, kick text) to uid's session if online; dropped otherwise. */
void route_notice(struct worker *w, int32_t uid, const char *payload, size_t len);
/* A delivery mark completed on this worker: tell its origin. */
void route_mark_done(struct worker *w, uint32_t origin, uint32_t token, int err);
/* Store a chat for uid offline now (fallback path); returns 0 or an error. */
int route_store_offline(struct worker *w, int32_t uid, const char *payload, size_t len);
/* Store a chat for uid offline if uid exists (QC_ENOUSER otherwise). */
int route_store_offline_checked(struct worker *w, int32_t uid, const char *payload, size_t len);
/*
 * In a cluster: uid's session started here (other nodes kick theirs; we
 * subscribe).  Returns true when the relay will answer IPC_SUBSCRIBED with
 * token once Redis confirms the subscription.
 */
bool route_session_started(struct worker *w, int32_t uid, uint32_t token);
/* In a cluster: uid has no session on this node any more. */
void route_session_ended(struct worker *w, int32_t uid);
/* Store each line of stash (messages taken from storage at login) again. */
int route_restore_stash(struct worker *w, int32_t uid, const char *stash);

/* Send a packet to the relay; 0, or -1 when there is no relay link. */
int route_send_relay(struct worker *w, const struct ipc_hdr *h, const void *payload, size_t len);

/* Peer link events. */
void route_peer_input(struct worker *w, uint32_t peer);
void route_peer_output(struct worker *w, uint32_t peer);
void route_peer_lost(struct worker *w, uint32_t peer);
/* Ask the worker owning (uid, slot, gen) to end that session (takeover). */
void route_kick(struct worker *w, int32_t uid, uint32_t worker, uint32_t slot, uint32_t gen);

void route_init(struct worker *w);
/* Chats handed to a live peer and not confirmed yet (a stop waits for them). */
bool route_handoffs_pending(struct worker *w);
/* At exit: every unconfirmed hand-off is stored offline. */
void route_shutdown(struct worker *w);

#endif
