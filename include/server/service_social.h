/*
 * service_social.h - handlers of friendship with consent, blocking and
 * group administration (msgids 6-8 and 30-46; pushes 35 and 47), every
 * store call on the worker's storage thread.  See service_social.c.
 */
#ifndef QCHAT_SERVER_SERVICE_SOCIAL_H
#define QCHAT_SERVER_SERVICE_SOCIAL_H

struct worker;
struct conn;
struct request;

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
