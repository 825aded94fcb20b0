/*
 * recover.h - the log fills what pub/sub lost (issue 16).
 *
 * In a cluster the log is the truth and Redis pub/sub only the fast path:
 * a chat published to a node that is hung, dying, or whose relay has no
 * Redis connection at that moment is lost on the way, although it is
 * committed and ACKed.  Each session therefore remembers, per conversation
 * it has been sent a chat in, the last cseq written to it (bounded:
 * RECOVER_CONVS_MAX conversations, the least recently used forgotten).
 * A chat for the session is written only when it is the next one:
 *   - cseq <= last: a repeat (it came from the log already): dropped;
 *   - cseq == last + 1: written;
 *   - cseq > last + 1: a gap.  The chat (and every later one for the
 *     session) waits while the storage thread reads the conversation's log
 *     after last (history); the missing chats are written first, in order,
 *     at most limits.max_login_reply_bytes of them (the rest: HISTORY).
 *   - a conversation the session has not seen: the storage thread reads
 *     the user's undelivered messages (after the delivered cursors, which
 *     only move when a chat is written) and they are written first.
 * While a login reply is being read from the log, chats for the new session
 * wait here, and those the reply carries (committed before it was read)
 * are dropped by cseq when it is queued.
 * When the relay's Redis connection comes back (or a new relay starts),
 * the relay sends IPC_RESYNC once the re-subscriptions are confirmed, and
 * every session of the worker is filled the same way from its undelivered
 * messages.  A node that restarted after a crash has no sessions: its users'
 * next logins read the log after their delivered cursors.
 *
 * Only with several nodes (w->clustered); a single node loses nothing
 * between its workers.
 */
#ifndef QCHAT_SERVER_RECOVER_H
#define QCHAT_SERVER_RECOVER_H

#include <stddef.h>
#include <stdint.h>

struct worker;
struct conn;

#define RECOVER_CONVS_MAX  256  /* conversations remembered per session */
#define RECOVER_FILL_PAGES 20   /* history pages (STORE_HISTORY_MAX each) read for one gap */
#define RECOVER_HELD_MAX   4096 /* chats waiting behind a fill; beyond, the session is closed */
#define RECOVER_FILL_LOG   "filling from the log" /* a fill started (log level debug) */

/* Write chat p (n bytes, a forwarded chat) to c's session uid: in order, once, gaps filled. */
void recover_send_chat(struct worker *w, struct conn *c, int32_t uid, const char *p, size_t n,
                       uint32_t origin, uint32_t token);
/* c's session sent the chat numbered cseq in conv (committed): it counts as written to c. */
void recover_sent_own(struct worker *w, struct conn *c, int64_t conv, int64_t cseq);
/* c's login reply is queued (its stash marks what it carries): the chats held meanwhile go. */
void recover_login_sent(struct worker *w, struct conn *c);
/* Redis is back: fill every session of this worker from the log. */
void recover_resync_all(struct worker *w);
/* c is freed: its waiting chats are confirmed (they are in the log), its state goes. */
void recover_forget(struct worker *w, struct conn *c);

#endif
