/*
 * service_social.h - handlers of friendship with consent, blocking and
 * group administration (msgids 6-8 and 30-46; pushes 35 and 47), every
 * store call on the worker's storage thread.  See service_social.c.
 */
#ifndef QCHAT_SERVER_SERVICE_SOCIAL_H
#define QCHAT_SERVER_SERVICE_SOCIAL_H

#include <stdbool.h>

struct worker;
struct conn;
struct request;

#include "server/request.h"

/*
 * The block check of a ONE_CHAT (error 22 when either user has blocked the
 * other), on the storage thread.  Returns true when it took the request:
 * the check is queued and the connection waits; once it passes, handler is
 * called again with the same request marked checked.  false: go on (already
 * checked, or a field is bad and the handler reports it).
 */
bool social_chat_gate(struct worker *w, struct conn *c, const struct request *r,
                      handler_fn handler);

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
