/*
 * delivered.h - the delivered cursors: which chats reached a user's socket.
 *
 * Per user and conversation the store keeps `delivered`, the highest cseq
 * written to a session of the user; a login's offline messages are those
 * after it.  When a chat's last byte has been written to a recipient's
 * socket (conn.c's delivery marks), the worker notes (user, conv, cseq)
 * here; once per loop turn the notes go to the storage thread as one job
 * (store delivered_advance, which never lowers a cursor).  A chat that
 * never reached the socket is simply not noted: it stays after the cursor,
 * in the log, for the next login.
 */
#ifndef QCHAT_SERVER_DELIVERED_H
#define QCHAT_SERVER_DELIVERED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/online.h"

struct worker;

/*
 * A forwarded chat's place in the log, read from its bytes (as service_chat.c
 * builds them: msgid 5 or 9, id, toid or groupid, cseq).  false: not a chat
 * with a cseq.
 */
bool delivered_position(const char *p, size_t n, int64_t *conv, int64_t *cseq);
/* The chat p (n bytes) was written to uid's socket. */
void delivered_note(struct worker *w, int32_t uid, const char *p, size_t n);
/* Send what was noted to the storage thread (end of a loop turn). */
void delivered_flush(struct worker *w);

/*
 * A login's read of its offline messages must see the cursors of chats
 * already written by this node's other workers (a quick re-login on
 * another worker would otherwise get them again).  Taken on the worker's
 * loop when the login is handled: how far each other live worker has
 * noted; waited on the storage thread before the read: until those
 * workers' cursor jobs have run, at most max_ms.  The worker's own jobs
 * run before on the same storage thread.  The same fence waits for the
 * chats those workers had queued for the log (one node: a chat left in the
 * log for a user who was logging in is committed before the read; the
 * token login's second read, login.c, relies on it).
 */
struct delivered_fence {
    uint64_t upto[ONLINE_MAX_WORKERS];
    uint64_t appends[ONLINE_MAX_WORKERS]; /* and the chats they had queued for the log */
};
void delivered_fence_take(struct worker *w, struct delivered_fence *f);
void delivered_fence_wait(struct worker *w, const struct delivered_fence *f, int max_ms);

#endif
