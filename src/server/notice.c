/*
 * notice.c - which session wants which unsolicited push (see notice.h).
 */
#include <string.h>

#include "common/proto.h"
#include "server/conn.h"
#include "server/notice.h"

#define NOTICE_PREFIX       "{\"msgid\":"
#define NOTICE_MSGID_DIGITS 4 /* msgids are small: more digits is not a push of ours */

int notice_msgid(const char *payload, size_t len)
{
    size_t plen = sizeof NOTICE_PREFIX - 1;
    if (len <= plen || memcmp(payload, NOTICE_PREFIX, plen) != 0)
        return 0;
    int id = 0;
    for (size_t i = plen; i < len && i < plen + NOTICE_MSGID_DIGITS; i++) {
        if (payload[i] < '0' || payload[i] > '9')
            return i > plen ? id : 0;
        id = id * 10 + (payload[i] - '0');
    }
    return 0;
}

bool notice_wanted(const struct conn *c, const char *payload, size_t len)
{
    switch (notice_msgid(payload, len)) {
    case QC_READ_MSG:
    case QC_FRIEND_REQUEST_MSG:
    case QC_GROUP_EVENT_MSG: return !c->legacy; /* legacy connections get chats and KICK only */
    case QC_RECEIPT_MSG: return c->receipts;
    case QC_TYPING_MSG: return c->typing;
    default: return c->presence;
    }
}
