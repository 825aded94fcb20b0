/*
 * route.h - where a message goes once a worker has decided to send it.
 *
 * The brief's routing steps: the recipient's session in the online table is
 * on this worker (append to its connection), on another worker of this node
 * (hand it over the peer link, kept until the peer confirms: handoff.c), on
 * another node (PUBLISH through the relay), or nowhere (the caller stores
 * it offline).  Also: the cluster side of a session's start and end, and
 * where a completed delivery mark is reported.
 */
#ifndef QCHAT_SERVER_ROUTE_H
#define QCHAT_SERVER_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct worker;

enum route_result {
    ROUTE_SENT = 0, /* on its way to an online session (pending until safe) */
    ROUTE_OFFLINE,  /* recipient not online on this node: caller stores it */
};

/* Send a chat to every session of uid: ROUTE_SENT (req gets one more outstanding) or ROUTE_OFFLINE. */
enum route_result route_chat(struct worker *w, int32_t uid, const char *payload, size_t len,
                             uint32_t req);
/*
 * uid's own chat, sent from its session of generation gen on this worker:
 * the same forwarded object to every other session of uid on the node
 * ([session] mode = multi), each delivery adding to req like route_chat.
 */
void route_echo(struct worker *w, int32_t uid, uint32_t gen, const char *payload, size_t len,
                uint32_t req);
/* Send a notice (presence) to uid's sessions that asked for them; dropped otherwise. */
void route_notice(struct worker *w, int32_t uid, const char *payload, size_t len);
/*
 * A push for uid's sessions on this node other than its session of
 * generation gen on this worker (READ_MSG 24 to the reader's other devices);
 * like route_notice, only sessions that asked for pushes get it.
 */
void route_notice_others(struct worker *w, int32_t uid, uint32_t gen, const char *payload,
                         size_t len);
/* Ask the worker owning (uid, slot, gen) to end that session (takeover). */
void route_kick(struct worker *w, int32_t uid, uint32_t worker, uint32_t slot, uint32_t gen);
/*
 * In a cluster: uid's session started here (other nodes kick theirs; we
 * subscribe).  Returns true when the relay will answer IPC_SUBSCRIBED with
 * token once Redis confirms the subscription.
 */
bool route_session_started(struct worker *w, int32_t uid, uint32_t token);
/* In a cluster: uid has no session on this node any more. */
void route_session_ended(struct worker *w, int32_t uid);
/* Send a packet (see ipc.h) to the relay; 0, or -1 when there is no relay link. */
int route_send_relay(struct worker *w, uint32_t type, const void *body, const void *tail,
                     size_t tail_len);

/* Install the worker hooks this module answers (mark_done). */
void route_install(struct worker *w);

#endif
