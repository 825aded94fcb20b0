/*
 * offline.h - the fallback of every delivery: keep a message in storage for
 * the recipient's next login.
 *
 * A chat whose session vanished, whose connection died before the socket
 * took it, or whose recipient is online nowhere ends here.  These are the
 * only calls that store a message for a user; they count what they store
 * (and what storage refused) in the worker's shared statistics.
 */
#ifndef QCHAT_SERVER_OFFLINE_H
#define QCHAT_SERVER_OFFLINE_H

#include <stddef.h>
#include <stdint.h>

struct worker;

/* Store payload for uid now; 0 or an error number (logged: the message is lost). */
int offline_keep(struct worker *w, int32_t uid, const char *payload, size_t len);
/* The same, if uid exists (QC_ENOUSER otherwise). */
int offline_keep_checked(struct worker *w, int32_t uid, const char *payload, size_t len);
/* Store each line of stash (messages taken from storage for a login reply) again. */
int offline_keep_stash(struct worker *w, int32_t uid, const char *stash);

#endif
