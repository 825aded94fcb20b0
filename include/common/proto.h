/*
 * proto.h - the qchat wire protocol: message ids, error numbers and limits.
 *
 * Ids 1-10 are the seed (C++ QQChatServer) protocol and must never change;
 * ids from 11 up are qchat extensions, documented in qchat-protocol(7).
 * Error numbers are stable: a number, once published, keeps its meaning.
 */
#ifndef QCHAT_COMMON_PROTO_H
#define QCHAT_COMMON_PROTO_H

enum qc_msgid {
    QC_LOGIN_MSG = 1,        /* id, password [, presence] [, seq]        */
    QC_LOGIN_MSG_ACK = 2,    /* errno, errmsg | id, name, offlinemsg[], friends[], groups[] */
    QC_REG_MSG = 3,          /* name, password [, seq]                   */
    QC_REG_MSG_ACK = 4,      /* errno [, errmsg], id                     */
    QC_ONE_CHAT_MSG = 5,     /* toid, msg                                */
    QC_ADD_FRIEND_MSG = 6,   /* friendid                                 */
    QC_CREATE_GROUP_MSG = 7, /* groupname, groupdesc                     */
    QC_ADD_GROUP_MSG = 8,    /* groupid                                  */
    QC_GROUP_CHAT_MSG = 9,   /* groupid, msg                             */
    QC_LOGINOUT_MSG = 10,    /* -                                        */
    /* extensions */
    QC_ACK_MSG = 11,       /* errno, errmsg, req (request msgid) [, seq] [, groupid] [, mid] */
    QC_KICK_MSG = 12,      /* reason: the session was taken over        */
    QC_PRESENCE_MSG = 13,  /* id, name, state ("online" | "offline")   */
    QC_HEARTBEAT_MSG = 14, /* request; answered by an ACK (req 14)     */
    /* version 2: the conversation log (service_log.c) */
    QC_HISTORY_MSG = 20,           /* with | groupid [, before] [, after] [, limit] */
    QC_HISTORY_MSG_ACK = 21,       /* errno, with | groupid, msgs[], more */
    QC_CONVERSATIONS_MSG = 22,     /* [limit] */
    QC_CONVERSATIONS_MSG_ACK = 23, /* errno, convs[] */
    QC_READ_MSG = 24,              /* with | groupid, cseq; also the push to other sessions */
    QC_RECEIPT_MSG = 25,           /* push: id (reader), cseq */
    QC_TYPING_MSG = 26,            /* toid | groupid; forwarded with id, name */
    /* version 2: friends with consent, blocking, group administration (issue 12) */
    QC_FRIEND_LIST_MSG = 30,       /* -> 31 friends, requests_in, requests_out, blocked */
    QC_FRIEND_LIST_MSG_ACK = 31,   /* errno, the four arrays of objects      */
    QC_FRIEND_REMOVE_MSG = 32,     /* friendid                               */
    QC_BLOCK_MSG = 33,             /* userid                                 */
    QC_UNBLOCK_MSG = 34,           /* userid                                 */
    QC_FRIEND_REQUEST_MSG = 35,    /* push: id, name (asks to be your friend) */
    QC_FRIEND_DECLINE_MSG = 36,    /* friendid                               */
    QC_GROUP_MEMBERS_MSG = 40,     /* groupid -> 41                          */
    QC_GROUP_MEMBERS_MSG_ACK = 41, /* errno, groupid, users [{id,name,state,role}] */
    QC_GROUP_LEAVE_MSG = 42,       /* groupid                                */
    QC_GROUP_KICK_MSG = 43,        /* groupid, userid                        */
    QC_GROUP_ROLE_MSG = 44,        /* groupid, userid, role                  */
    QC_GROUP_UPDATE_MSG = 45,      /* groupid, groupname and/or groupdesc    */
    QC_GROUP_DELETE_MSG = 46,      /* groupid                                */
    QC_GROUP_EVENT_MSG = 47,       /* push: groupid, event, userid, by       */
    QC_PASSWORD_MSG = 48,          /* old, new: change the password, revoke every token */
    QC_DEVICES_MSG = 49,           /* -> 50: the account's sessions (extension, issue 15) */
    QC_DEVICES_MSG_ACK = 50,       /* errno, devices [{device, since, this}] */
    QC_MSGID_MAX = 50
};

/* Stable error numbers, carried in "errno". */
enum qc_err {
    QC_OK = 0,
    QC_EAUTH = 1,        /* bad id or password (seed value)           */
    QC_ERESERVED2 = 2,   /* seed's "already online": session.mode = refuse */
    QC_ENAMETAKEN = 3,   /* register: user name already taken         */
    QC_EMALFORMED = 4,   /* not JSON, or not an object: conn closed   */
    QC_ETOOBIG = 5,      /* object over max_message_bytes: conn closed */
    QC_EBADREQ = 6,      /* missing or mistyped field                 */
    QC_EUNKNOWN = 7,     /* unknown msgid                             */
    QC_ENOTLOGGEDIN = 8, /* request needs a session                   */
    QC_ENOUSER = 9,      /* no such user                              */
    QC_ENOGROUP = 10,    /* no such group                             */
    QC_ENOTMEMBER = 11,  /* group chat by a non-member                */
    QC_EALREADY = 12,    /* already friends / already a member        */
    QC_ESTORAGE = 13,    /* storage unavailable                       */
    QC_ERATE = 14,       /* rate limited                              */
    QC_EINTERNAL = 15,   /* internal error                            */
    QC_ESELF = 16,       /* befriending yourself                      */
    QC_ELIMIT = 17,      /* a per-user limit (friends, group size)    */
    QC_ETOOLONG = 18,    /* a text field over its length limit        */
    QC_EGROUPTAKEN = 19, /* create group: name already taken          */
    QC_ESHUTDOWN = 20,   /* server is stopping                        */
    QC_EALREADYIN = 21,  /* login while this connection is logged in  */
    QC_EBLOCKED = 22,    /* the other user has blocked you (or you them) */
    QC_ENOTALLOWED = 23, /* your group role does not allow it         */
    QC_EBADTOKEN = 24,   /* login token bad, expired or revoked       */
    QC_EDEVICES = 25,    /* too many devices (reserved)               */
    QC_EREGRATE = 26,    /* too many registrations: try again later   */
    QC_ERR_MAX = 26
};

/* Human-readable text for an error number (never NULL). */
const char *qc_strerror(int err);

/* Field length limits (bytes of UTF-8), from the seed's schema. */
#define QC_NAME_MAX      50  /* User.name, AllGroup.groupname */
#define QC_GROUPDESC_MAX 200 /* AllGroup.groupdesc            */
#define QC_PASSWORD_MAX  128 /* plaintext password on the wire */
#define QC_SEQ_MAX       64  /* serialized "seq" value echoed back */
#define QC_DEVICE_MAX    64  /* LOGIN_MSG "device" */
#define QC_TOKEN_MAX     43  /* a login token's text (base64url of 32 bytes) */
#define QC_HASH_MAX      256 /* stored password hash (column width) */

#define QC_STATE_ONLINE  "online"
#define QC_STATE_OFFLINE "offline"
#define QC_ROLE_CREATOR  "creator"
#define QC_ROLE_ADMIN    "admin"
#define QC_ROLE_NORMAL   "normal"

#endif
