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

struct store;
struct store_ops;

/*
 * A login whose credentials are checked in the reply's own storage job (a
 * token login, issue 15): one job checks them and reads the lists, instead
 * of one job for the check and a second for the reply.  check runs first on
 * the storage thread and fills the account's name (QC_OK, or the error that
 * refuses the login: the lists are then not read).  open runs once on the
 * worker with the check's result: it applies the failure throttle, opens
 * the session (session_open) and returns 0 to go on with the reply, or
 * nonzero when it has answered the login itself (an error); it owns arg and
 * frees it (c is NULL when the connection went meanwhile: free only).
 * Chats the node left in the log between the read and the session's
 * opening are not lost: the messages are read again then (login.c).
 */
struct login_check {
    int (*check)(const struct store_ops *ops, struct store *st, void *arg, char *name,
                 size_t namelen);
    int (*open)(struct worker *w, struct conn *c, void *arg, int err);
    void *arg;
};

/*
 * Like login_reply_start, the session opened by chk->open once the check
 * passed.  QC_OK: queued, the connection parked until the reply (chk->open
 * will be called); else the error, and chk->arg is still the caller's.
 */
int login_checked_start(struct worker *w, struct conn *c, int32_t uid, const char *seq,
                        const struct login_check *chk);
/* Redis confirmed the subscription of the login with token (failed: Redis away). */
void login_subscribed(struct worker *w, uint32_t token, bool failed);
/* The relay link is gone: every waiting reply is sent with what is known. */
void login_relay_lost(struct worker *w);
/* Install the relay's answers as the worker's continuations of a login. */
void login_install(struct worker *w);

#endif
