/*
 * social.h - the storage of friendship with consent, blocking, group
 * administration, login lists and login tokens: a second table of
 * function pointers per driver, beside struct store_ops, taking the same
 * struct store handle (social_sqlite_ops for storage.driver = sqlite,
 * social_mysql_ops for mysql).
 *
 * Schema: sql/{sqlite,mysql}/003-social.sql, applied after 001 (the v1
 * schema) and 002 (the conversation log): tables FriendRequest, UserBlock
 * and LoginToken; GroupUser gains the role "admin" and a join order
 * (joinseq, increasing with every join).
 *
 * Every function returns QC_OK or an error number of common/proto.h; each
 * change of more than one row runs in one transaction.  Callbacks run
 * while the driver walks its result: they must not call store or social
 * functions on the same handle (copy what they need).  Names handed to
 * callbacks are valid only during the call.
 *
 * Rules the functions enforce (the server only maps the numbers):
 *  - friend_request(from, to): QC_ESELF; QC_ENOUSER if to does not exist;
 *    QC_EBLOCKED if either has blocked the other; QC_EALREADY if friends;
 *    if to had already asked from, this accepts (mutual friendship, the
 *    request removed, *outcome = SOCIAL_ACCEPTED, QC_ELIMIT if either side
 *    is at max_friends); otherwise the request is recorded (idempotent,
 *    *outcome = SOCIAL_REQUESTED).
 *  - friend_add (friend_consent = no): the v1 immediate friendship, but
 *    QC_EBLOCKED if either has blocked the other, QC_ELIMIT on either side.
 *  - block ends the friendship and pending requests both ways.
 *  - Group roles rank creator > admin > normal.  A caller who is not a
 *    member gets QC_ENOTMEMBER, a member whose role does not allow the
 *    change QC_ENOTALLOWED.
 */
#ifndef QCHAT_STORE_SOCIAL_H
#define QCHAT_STORE_SOCIAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/proto.h"
#include "store/store.h"

#define SOCIAL_TOKEN_BYTES 32 /* random bytes in a token */
#define SOCIAL_TOKEN_CHARS 43 /* their base64url text, no padding */
#define SOCIAL_HASH_BYTES  32 /* SHA-256 of the token text: all that is stored */
#define SOCIAL_DEVICE_MAX  64 /* bytes of a device name */
#define SOCIAL_ROLE_MAX    7  /* "creator" */
#define SOCIAL_DEVICE_DFLT "default"

enum social_request_outcome {
    SOCIAL_REQUESTED = 1, /* recorded (or was already): waiting for the target */
    SOCIAL_ACCEPTED = 2   /* the target had asked first: both are friends now */
};

/* What a leave did, for GROUP_EVENT_MSG 47. */
struct social_leave {
    int32_t new_creator; /* user who became creator, 0 if none did */
    bool deleted;        /* the last member left: the group is gone (delete its log) */
};

/*
 * One row of the login's groups list: a group of the user and one of its
 * members.  Rows come grouped by groupid (ascending), members in join order.
 */
typedef void (*social_group_row_cb)(void *arg, int32_t groupid, const char *groupname,
                                    const char *groupdesc, int32_t userid, const char *name,
                                    const char *role);

struct social_ops {
    const char *name;

    /* ---- friends ---- */
    int (*friend_request)(struct store *st, int32_t from, int32_t to, int max_friends,
                          int *outcome);
    /* Remove from's request to user: QC_OK, or QC_ENOUSER when there was none. */
    int (*friend_decline)(struct store *st, int32_t user, int32_t from);
    /* Who asked user (requests_in) / whom user asked (requests_out), oldest first. */
    int (*requests_in)(struct store *st, int32_t user, store_user_cb cb, void *arg);
    int (*requests_out)(struct store *st, int32_t user, store_user_cb cb, void *arg);
    /* Immediate mutual friendship (friend_consent = no); see the rules above. */
    int (*friend_add)(struct store *st, int32_t user, int32_t friend_id, int max_friends);
    /* Both directions; QC_ENOUSER when they were not friends. */
    int (*friend_remove)(struct store *st, int32_t user, int32_t friend_id);
    /* Friends of user with their names, by id: one query (login, FRIEND_LIST). */
    int (*friends)(struct store *st, int32_t user, store_user_cb cb, void *arg);

    /* ---- blocking ---- */
    /* QC_ESELF, QC_ENOUSER, QC_EALREADY (already blocked). */
    int (*block)(struct store *st, int32_t user, int32_t target);
    /* QC_ENOUSER when target was not blocked. */
    int (*unblock)(struct store *st, int32_t user, int32_t target);
    int (*blocked_list)(struct store *st, int32_t user, store_user_cb cb, void *arg);
    /* Who has blocked user, by id (the per-session chat check; scans UserBlock on SQLite). */
    int (*blocked_by)(struct store *st, int32_t user, store_user_cb cb, void *arg);
    /* *blocked: a has blocked b. */
    int (*is_blocked)(struct store *st, int32_t a, int32_t b, bool *blocked);

    /* ---- groups ---- */
    /* user's role in group: QC_ENOGROUP, QC_ENOTMEMBER. */
    int (*group_role)(struct store *st, int32_t group, int32_t user,
                      char role[SOCIAL_ROLE_MAX + 1]);
    /* Members with roles in join order (oldest first), one query; QC_ENOGROUP. */
    int (*group_members)(struct store *st, int32_t group, store_member_cb cb, void *arg);
    /*
     * user leaves.  A leaving creator hands the group to the oldest admin,
     * else the oldest member; the last member's leaving deletes the group.
     * QC_ENOGROUP, QC_ENOTMEMBER.
     */
    int (*group_leave)(struct store *st, int32_t group, int32_t user, struct social_leave *out);
    /* by (creator or admin) removes target of a lower role: QC_ENOGROUP, QC_ENOTMEMBER, QC_ENOTALLOWED. */
    int (*group_kick)(struct store *st, int32_t group, int32_t by, int32_t target);
    /*
     * The creator makes target "admin" or "normal" (else QC_EBADREQ):
     * QC_ENOTALLOWED unless by is the creator or if target is; QC_EALREADY
     * when target already has the role.
     */
    int (*group_set_role)(struct store *st, int32_t group, int32_t by, int32_t target,
                          const char *role);
    /*
     * Creator or admin renames and/or redescribes (NULL: unchanged; both
     * NULL: QC_EBADREQ): QC_ETOOLONG, QC_EGROUPTAKEN, QC_ENOTALLOWED.
     */
    int (*group_update)(struct store *st, int32_t group, int32_t by, const char *name,
                        const char *desc);
    /* The creator deletes the group and its memberships (the caller deletes its log). */
    int (*group_delete)(struct store *st, int32_t group, int32_t by);
    /* Groups user created or joined (limits.max_groups). */
    int (*group_count)(struct store *st, int32_t user, int *count);
    /* Every group of user with all members and roles: one query (login reply). */
    int (*login_groups)(struct store *st, int32_t user, social_group_row_cb cb, void *arg);

    /* ---- login tokens (issue 15) ---- */
    /*
     * A new token for user on device (NULL or "": "default"), replacing
     * that device's previous token; only its hash is stored.  expires_at:
     * epoch seconds.  QC_ENOUSER, QC_ETOOLONG (device).
     */
    int (*token_create)(struct store *st, int32_t user, const char *device, int64_t expires_at,
                        char token[SOCIAL_TOKEN_CHARS + 1]);
    /*
     * QC_OK when token is user's, unrevoked and not expired at now (epoch
     * seconds), with its device in device (may be NULL); else QC_EBADTOKEN.
     * Hashes are compared in constant time, against every token of user.
     */
    int (*token_check)(struct store *st, int32_t user, const char *token, int64_t now,
                       char device[SOCIAL_DEVICE_MAX + 1]);
    /* QC_EBADTOKEN when user has no such token. */
    int (*token_revoke)(struct store *st, int32_t user, const char *token);
    /* *revoked (may be NULL): how many were removed. */
    int (*token_revoke_all)(struct store *st, int32_t user, int *revoked);
    /* New password hash and every token revoked, in one transaction: QC_ENOUSER, QC_ETOOLONG. */
    int (*password_change)(struct store *st, int32_t user, const char *pwhash);
};

extern const struct social_ops social_sqlite_ops;
extern const struct social_ops social_mysql_ops;

/* The social ops of driver name ("sqlite" or "mysql"), or NULL. */
const struct social_ops *social_driver(const char *name);

/* ---- shared by the drivers (src/store/social_common.c) ---- */

/* A fresh token: SOCIAL_TOKEN_BYTES from arc4random_buf, base64url. */
void social_token_new(char token[SOCIAL_TOKEN_CHARS + 1]);
/* SHA-256 of a token's text; -1 (and no hash) when it is not a token's shape. */
int social_token_hash(const char *token, uint8_t hash[SOCIAL_HASH_BYTES]);
/* Constant-time equality of two hashes. */
bool social_hash_equal(const uint8_t a[SOCIAL_HASH_BYTES], const uint8_t b[SOCIAL_HASH_BYTES]);
/* The device name to store: NULL or "" is "default"; NULL when too long. */
const char *social_device_name(const char *device);
/* creator 3, admin 2, normal 1, anything else 0. */
int social_role_rank(const char *role);

#endif
