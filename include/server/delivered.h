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
 * A chat or a login stash for uid was queued on a connection with a mark
 * (conn.c), and, later, that mark was resolved: its last byte written (after
 * delivered_note) or its bytes put back for the next login (after
 * offline_keep).  Counted per bucket of uid in the worker's shared stats, so
 * that a login of uid on another worker knows that this worker still holds
 * chats of the user that are neither noted nor put back.
 */
void delivered_mark_queued(struct worker *w, int32_t uid);
void delivered_mark_resolved(struct worker *w, int32_t uid);
/* A worker starting (or the master after it died): it holds no marks. */
void delivered_marks_clear(struct worker_stats *ws);

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
 *
 * A worker that still holds marks of the user's bucket when the fence is
 * taken (an earlier session's login reply or chats, queued but not yet
 * written: its cursor_noted does not count them yet) is waited for first:
 * until it holds none, then until the cursor jobs and appends it has made
 * by then have run.  A worker that died or restarted meanwhile (its pid
 * changed) is not waited for.
 */
struct delivered_fence {
    uint64_t upto[ONLINE_MAX_WORKERS];
    uint64_t appends[ONLINE_MAX_WORKERS]; /* and the chats they had queued for the log */
    int32_t pid[ONLINE_MAX_WORKERS];      /* the worker process the fence was taken on */
    bool marks[ONLINE_MAX_WORKERS];       /* it held marks of the user's bucket: wait for them */
    uint32_t bucket;                      /* the user's bucket of marks_pending */
};
void delivered_fence_take(struct worker *w, int32_t uid, struct delivered_fence *f);
void delivered_fence_wait(struct worker *w, struct delivered_fence *f, int max_ms);

#endif
