/*
 * offline.h - the fallback of every delivery: the message waits for the
 * recipient's next login.
 *
 * A chat whose session vanished, whose connection died before the socket
 * took it, or whose recipient is online nowhere ends here.  Since version 2
 * every chat is in the conversation log before it is delivered, after the
 * recipient's delivered cursor (which only moves when a socket took it):
 * nothing needs storing, and no store call is made on the event loop.  The
 * calls count what waits in the worker's shared statistics.
 */
#ifndef QCHAT_SERVER_OFFLINE_H
#define QCHAT_SERVER_OFFLINE_H

#include <stddef.h>
#include <stdint.h>

struct worker;

/*
 * payload (a forwarded chat, with its cseq) waits in the log for uid: 0, or
 * QC_EINTERNAL (logged) for a message that carries no cseq.
 */
int offline_keep(struct worker *w, int32_t uid, const char *payload, size_t len);
/* The same for each line of stash (messages taken from the log for a login reply). */
int offline_keep_stash(struct worker *w, int32_t uid, const char *stash);

#endif
