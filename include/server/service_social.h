/*
 * service_social.h - handlers of friendship with consent, blocking and
 * group administration (msgids 6-8 and 30-46; pushes 35 and 47), every
 * store call on the worker's storage thread.  See service_social.c.
 */
#ifndef QCHAT_SERVER_SERVICE_SOCIAL_H
#define QCHAT_SERVER_SERVICE_SOCIAL_H

#include <stdbool.h>
#include <stddef.h>

struct worker;
struct conn;
struct request;

#include "server/request.h"

/*
 * The block check of a request to one user named by "toid" (ONE_CHAT, and
 * TYPING when it comes), from the session's cache (blockcache.h): true when
 * it answered error 22 (either user blocked the other); false: go on.
 */
bool social_chat_gate(struct worker *w, struct conn *c, const struct request *r);
/* A session started on c: load its blocks for the chat check, off the loop. */
void social_session_started(struct worker *w, struct conn *c);
/* Once a tick: deleted groups' logs whose deletion waits for the store. */
void social_tick(struct worker *w);
/*
 * A notice for c's session (route_notice's payload): true when it was the
 * internal notice of a BLOCK / UNBLOCK by another user, taken here and
 * never shown to the client.
 */
bool social_notice(struct worker *w, struct conn *c, const char *payload, size_t len);

void social_add_friend(struct worker *w, struct conn *c, const struct request *r);
void social_create_group(struct worker *w, struct conn *c, const struct request *r);
void social_add_group(struct worker *w, struct conn *c, const struct request *r);
void social_friend_list(struct worker *w, struct conn *c, const struct request *r);
void social_friend_remove(struct worker *w, struct conn *c, const struct request *r);
void social_block(struct worker *w, struct conn *c, const struct request *r);
void social_unblock(struct worker *w, struct conn *c, const struct request *r);
void social_friend_decline(struct worker *w, struct conn *c, const struct request *r);
void social_group_members(struct worker *w, struct conn *c, const struct request *r);
void social_group_leave(struct worker *w, struct conn *c, const struct request *r);
void social_group_kick(struct worker *w, struct conn *c, const struct request *r);
void social_group_role(struct worker *w, struct conn *c, const struct request *r);
void social_group_update(struct worker *w, struct conn *c, const struct request *r);
void social_group_delete(struct worker *w, struct conn *c, const struct request *r);

#endif
