/*
 * notice.h - which session wants which unsolicited push.
 *
 * A push other than a chat goes only to sessions that asked for it in their
 * LOGIN (the seed's client must never get traffic it did not ask for):
 * presence notices (13) to "presence": true, read receipts (25) to
 * "receipts": true, typing (26) to "typing": true; the READ_MSG sync (24)
 * to every session that is not a legacy connection (the seed's client).
 * The receiving worker decides, from the push's msgid, so the routing of a
 * notice (this worker, another worker, another node) stays one path.
 */
#ifndef QCHAT_SERVER_NOTICE_H
#define QCHAT_SERVER_NOTICE_H

#include <stdbool.h>
#include <stddef.h>

struct conn;

/* The msgid of a serialized push ({"msgid":N,...}), 0 when it does not start so. */
int notice_msgid(const char *payload, size_t len);
/* true: c's session asked for this push. */
bool notice_wanted(const struct conn *c, const char *payload, size_t len);

#endif
