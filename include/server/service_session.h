/*
 * service_session.h - the session side of the login path (issue 15):
 * devices and [session] mode, login tokens, LOGINOUT's revoke, and
 * PASSWORD_MSG 48.
 *
 * service.c keeps the envelope and the password half of LOGIN; what a
 * session is (which device, which other sessions it replaces, which token
 * it holds) is decided here.  Tokens are issued and checked through the
 * social store (include/store/social.h): only their SHA-256 is stored, a
 * check is constant-time, and a bad token counts as a failed login in
 * guard.c, exactly like a bad password.
 */
#ifndef QCHAT_SERVER_SERVICE_SESSION_H
#define QCHAT_SERVER_SERVICE_SESSION_H

#include <stdbool.h>
#include <stdint.h>

#include "common/proto.h"

struct worker;
struct conn;
struct crypt_job;
struct json_object;

/* What a LOGIN asks of its session, besides the credentials. */
struct login_wish {
    char device[QC_DEVICE_MAX + 1]; /* "default" when not named */
    bool named;                     /* the request named its device */
    bool want_token;                /* "token": true */
};

/*
 * Read LOGIN's "device" (optional string, 1..QC_DEVICE_MAX bytes) and
 * "token": true.  QC_OK, QC_EBADREQ (mistyped or empty device) or
 * QC_ETOOLONG (device too long).
 */
int session_login_wish(struct json_object *req, struct login_wish *out);
/* True when the LOGIN carries "token" as a string: a token login. */
bool session_is_token_login(struct json_object *req);

/*
 * Make (uid, name) c's session on the wish's device under [session] mode:
 * the sessions it replaces anywhere on the node are kicked.  token (may be
 * NULL or "") is the token the session holds, for LOGINOUT's revoke.
 * QC_OK, QC_ERESERVED2 (mode refuse: the account is online) or QC_ELIMIT
 * (the online table is full).
 */
int session_open(struct worker *w, struct conn *c, int32_t uid, const char *name, bool presence,
                 const struct login_wish *wish, const char *token);
/*
 * A new token for uid on device, valid for [session] token_days (or
 * token_seconds).  QC_OK with out filled, or the store's error.
 */
int session_issue_token(struct worker *w, int32_t uid, const char *device,
                        char out[QC_TOKEN_MAX + 1]);

/*
 * A LOGIN with "token" as a string: checked without hashing, then the
 * session and the login reply.  Returns false when the reply waits (the
 * login reply resumes the connection), true when it was answered now.
 */
bool service_login_token(struct worker *w, struct conn *c, struct json_object *req, int msgid,
                         const char *seq);
/* LOGINOUT with "revoke": true: revoke the session's token (before the session ends). */
void service_loginout_revoke(struct worker *w, struct conn *c, struct json_object *req);
/*
 * qchatctl revoke ID (the master passed the control connection fd): revoke
 * every token of uid, answer {"ok":true,"revoked":N} or an error on fd,
 * close it.
 */
void service_revoke_user(struct worker *w, int32_t uid, int fd);
/* PASSWORD_MSG 48 {old, new}: the check and the new hash go to the hashing threads. */
void service_password(struct worker *w, struct conn *c, struct json_object *req, int msgid,
                      const char *seq);
/* The hashing threads finished a CRYPT_CHANGE job: store it, revoke every token, answer. */
void service_password_done(struct worker *w, struct conn *c, const struct crypt_job *job);

#endif
