/*
 * login.h - the reply to a successful LOGIN (msgid 2).
 *
 * The reply lists the user's friends and groups with each person's state and
 * carries the offline messages.  State comes from presence.c: the node's
 * online table and, in a cluster, Redis for the people not online here.
 * Asking Redis is asynchronous: the connection reads nothing more until the
 * reply is sent.
 */
#ifndef QCHAT_SERVER_LOGIN_H
#define QCHAT_SERVER_LOGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct worker;
struct conn;

/*
 * Gather and send the reply for c's new session of (uid, name).  Returns true
 * when it was sent (or failed) now, false when it waits for the relay and
 * will call conn_resume itself.  seq may be NULL.  token_expires > 0: the
 * same storage job issues a login token for token_device, valid until then
 * (epoch seconds), carried as "token" (issue 15).
 */
bool login_reply_start(struct worker *w, struct conn *c, int32_t uid, const char *name,
                       const char *seq, const char *token_device, int64_t token_expires);
/* Redis confirmed the subscription of the login with token (failed: Redis away). */
void login_subscribed(struct worker *w, uint32_t token, bool failed);
/* The relay link is gone: every waiting reply is sent with what is known. */
void login_relay_lost(struct worker *w);
/* Install the relay's answers as the worker's continuations of a login. */
void login_install(struct worker *w);

#endif
