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
    char device[QC_DEVICE_MAX + 1];  /* "default" when not named */
    bool named;                      /* the request named its device */
    bool want_token;                 /* "token": true */
    bool presence, receipts, typing; /* the pushes the session asks for */
};

/*
 * Read LOGIN's "device" (optional string, 1..QC_DEVICE_MAX bytes),
 * "token": true and the booleans "presence", "receipts" and "typing".  QC_OK, QC_EBADREQ (mistyped or empty device) or
 * QC_ETOOLONG (device too long).
 */
int session_login_wish(struct json_object *req, struct login_wish *out);
/* True when the LOGIN carries "token" as a string: a token login. */
bool session_is_token_login(struct json_object *req);

/*
 * Make (uid, name) c's session on the wish's device under [session] mode:
 * the sessions it replaces anywhere on the node are kicked, the session
 * takes the pushes the wish asks for, and its blocks start loading
 * (service_social.c).  token (may be NULL or "") is the token the session
 * holds, for LOGINOUT's revoke.
 * QC_OK, QC_ERESERVED2 (mode refuse: the account is online) or QC_ELIMIT
 * (the online table is full).
 */
int session_open(struct worker *w, struct conn *c, int32_t uid, const char *name,
                 const struct login_wish *wish, const char *token);
/*
 * In a cluster: claim c's new session in the cluster's session registry
 * (relay.c, sessreg.h), which applies [session] mode across nodes; the
 * relay answers IPC_CLAIMED with token (the worker's claimed hook).  true
 * when that answer is to be awaited; false when there is no relay to ask
 * (the mode then holds on this node only) or in takeover, where the claim
 * only lists the session (the cluster generation kicks, relay.c).
 */
bool session_claim(struct worker *w, struct conn *c, uint32_t token);
/* Session gen of uid ended on this node: its registry field goes. */
void session_registry_end(struct worker *w, int32_t uid, uint32_t gen);
/*
 * The last session of uid on this node ended: friends hear "offline" unless
 * the registry still lists a session of uid on another node.
 */
void session_last_here_ended(struct worker *w, int32_t uid, const char *name);
/* The relay link went away: questions to the registry are answered as failed. */
void session_devices_relay_lost(struct worker *w);
/*
 * DEVICES_MSG 49: 50 {errno, devices: [{device, since, this}]}, the
 * account's sessions from the registry (cluster-wide), or of this node
 * when there is none.
 */
void service_devices(struct worker *w, struct conn *c, const char *seq);
void service_session_install(struct worker *w);

/* When a token issued now expires (epoch seconds): [session] token_days or token_seconds. */
int64_t session_token_expiry(const struct worker *w);

/*
 * A LOGIN with "token" as a string: the check (no hashing) runs on the
 * storage thread with the connection parked; then the session and the
 * login reply, or errno 24 (counted as a failed login).
 */
void service_login_token(struct worker *w, struct conn *c, struct json_object *req, int msgid,
                         const char *seq);
/*
 * LOGINOUT with "revoke": true and a session holding a token: ends the
 * session, revokes the token on the storage thread and answers when it is
 * done; true when it took the request over, false when the caller answers
 * a plain LOGINOUT.
 */
bool service_loginout_revoke(struct worker *w, struct conn *c, struct json_object *req, int msgid,
                             const char *seq);
/*
 * qchatctl revoke ID (the master passed the control connection fd): revoke
 * every token of uid, answer {"ok":true,"revoked":N} or an error on fd,
 * close it.
 */
void service_revoke_user(struct worker *w, int32_t uid, int fd);
/*
 * PASSWORD_MSG 48 {old, new}: the stored hash is fetched off the loop, the
 * check and the new hash go to the hashing threads.
 */
void service_password(struct worker *w, struct conn *c, struct json_object *req, int msgid,
                      const char *seq);
/*
 * The hashing threads finished a CRYPT_CHANGE job: store the hash and
 * revoke every token (one transaction, off the loop), then answer.  false:
 * parked, the store's answer resumes the connection.
 */
bool service_password_done(struct worker *w, struct conn *c, const struct crypt_job *job);

#endif
