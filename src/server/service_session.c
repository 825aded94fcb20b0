/*
 * service_session.c - devices, [session] mode, login tokens, LOGINOUT's
 * revoke and PASSWORD_MSG 48 (see service_session.h).
 *
 * The mode is applied in one locked step of the online table
 * (online_login): the sessions a login replaces are removed as the new one
 * is added, so two logins of one account racing on two workers cannot both
 * keep a session they should have replaced.  The replaced sessions are
 * then kicked wherever they are on the node (route_kick).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/jsonw.h"
#include "common/log.h"
#include "server/conn.h"
#include "server/crypt_pool.h"
#include "server/guard.h"
#include "server/login.h"
#include "server/metrics.h"
#include "server/reply.h"
#include "server/route.h"
#include "server/service_session.h"
#include "server/worker.h"
#include "store/social.h"

#define SECONDS_PER_DAY 86400

_Static_assert(QC_TOKEN_MAX == SOCIAL_TOKEN_CHARS, "a token's text is the social store's");
_Static_assert(QC_DEVICE_MAX == SOCIAL_DEVICE_MAX, "a device name is the social store's");

/* ---- the LOGIN fields --------------------------------------------------- */

int session_login_wish(struct json_object *req, struct login_wish *out)
{
    struct json_object *v;
    memset(out, 0, sizeof *out);
    strlcpy(out->device, SOCIAL_DEVICE_DFLT, sizeof out->device);
    if (json_object_object_get_ex(req, "token", &v) && json_object_is_type(v, json_type_boolean))
        out->want_token = json_object_get_boolean(v);
    if (!json_object_object_get_ex(req, "device", &v))
        return QC_OK;
    if (!json_object_is_type(v, json_type_string))
        return QC_EBADREQ;
    size_t len = (size_t)json_object_get_string_len(v);
    const char *s = json_object_get_string(v);
    if (len > QC_DEVICE_MAX)
        return QC_ETOOLONG;
    if (len == 0 || memchr(s, '\0', len))
        return QC_EBADREQ;
    memcpy(out->device, s, len + 1);
    out->named = true;
    return QC_OK;
}

bool session_is_token_login(struct json_object *req)
{
    struct json_object *v;
    return json_object_object_get_ex(req, "token", &v) && json_object_is_type(v, json_type_string);
}

/* ---- opening a session -------------------------------------------------- */

static enum online_mode configured_mode(const struct worker *w)
{
    if (strcmp(w->cfg.session_mode, "refuse") == 0)
        return ONLINE_REFUSE;
    if (strcmp(w->cfg.session_mode, "multi") == 0)
        return ONLINE_MULTI;
    return ONLINE_TAKEOVER;
}

static void kick_replaced(struct worker *w, int32_t uid, const struct online_loc *kicked, size_t n)
{
    for (size_t k = 0; k < n; k++)
        route_kick(w, uid, kicked[k].worker, kicked[k].slot, kicked[k].gen);
}

int session_open(struct worker *w, struct conn *c, int32_t uid, const char *name, bool presence,
                 const struct login_wish *wish, const char *token)
{
    struct online_loc loc = { .worker = w->index,
                              .slot = c->slot,
                              .gen = online_next_gen(w->online) };
    struct online_policy p = { .mode = configured_mode(w),
                               .device = online_device_hash(wish->device),
                               .named = wish->named,
                               .max = (uint32_t)w->cfg.max_devices };
    struct online_loc kicked[ONLINE_USER_MAX];
    size_t nkicked;
    int rc = online_login(w->online, uid, &loc, &p, kicked, &nkicked);
    if (rc == ONLINE_REFUSED)
        return QC_ERESERVED2;
    if (rc < 0)
        return QC_ELIMIT;
    c->uid = uid;
    c->sgen = loc.gen;
    c->presence = presence;
    c->deadline = 0;
    conn_end_prelogin(w, c);
    strlcpy(c->name, name, sizeof c->name);
    strlcpy(c->token, token ? token : "", sizeof c->token);
    w->stats->sessions++;
    kick_replaced(w, uid, kicked, nkicked);
    return QC_OK;
}

int session_issue_token(struct worker *w, int32_t uid, const char *device,
                        char out[QC_TOKEN_MAX + 1])
{
    int64_t life = w->cfg.token_seconds > 0 ? (int64_t)w->cfg.token_seconds
                                            : (int64_t)w->cfg.token_days * SECONDS_PER_DAY;
    int64_t t0 = metrics_now_us();
    int err = w->social->token_create(w->store, uid, device, (int64_t)time(NULL) + life, out);
    metrics_observe(QM_H_STORE, metrics_now_us() - t0);
    if (err)
        log_error("user %d: cannot issue a login token: %s", uid, qc_strerror(err));
    return err;
}

/* ---- token login -------------------------------------------------------- */

static int token_login_id(struct json_object *req, int32_t *id)
{
    struct json_object *v;
    if (!json_object_object_get_ex(req, "id", &v) || !json_object_is_type(v, json_type_int))
        return QC_EBADREQ;
    int64_t x = json_object_get_int64(v);
    if (x <= 0 || x > INT32_MAX)
        return QC_EBADREQ;
    *id = (int32_t)x;
    return QC_OK;
}

static void wipe_token_field(struct json_object *req)
{
    struct json_object *v;
    if (json_object_object_get_ex(req, "token", &v) && json_object_is_type(v, json_type_string))
        explicit_bzero((char *)json_object_get_string(v), (size_t)json_object_get_string_len(v));
}

/* Check (id, token) without hashing; QC_OK with the user's name and the token's device. */
static int check_token(struct worker *w, struct conn *c, int32_t id, const char *token,
                       struct store_user *u, char device[QC_DEVICE_MAX + 1])
{
    int64_t wait_ms = guard_token_begin(w->guard, c->ip_hash, id, w->now_ms);
    if (wait_ms > 0) {
        log_info("token login for user %d refused for %lld ms after repeated failures", id,
                 (long long)wait_ms);
        metrics_count(QM_LOGINS, QM_LOGIN_REFUSED);
        return QC_ERATE;
    }
    int64_t t0 = metrics_now_us();
    int err = w->social->token_check(w->store, id, token, (int64_t)time(NULL), device);
    if (err == QC_OK)
        err = w->st->user_get(w->store, id, u);
    metrics_observe(QM_H_STORE, metrics_now_us() - t0);
    explicit_bzero(u->password, sizeof u->password);
    if (err == QC_EBADTOKEN || err == QC_ENOUSER) {
        log_info("token login failed on conn %u", c->slot);
        guard_login_failed(w->guard, c->ip_hash, id, w->now_ms);
        metrics_count(QM_LOGINS, QM_LOGIN_BAD);
        return QC_EBADTOKEN;
    }
    return err;
}

bool service_login_token(struct worker *w, struct conn *c, struct json_object *req, int msgid,
                         const char *seq)
{
    struct json_object *v;
    struct login_wish wish;
    struct store_user u;
    char device[QC_DEVICE_MAX + 1] = "";
    char token[QC_TOKEN_MAX + 1] = "", fresh[QC_TOKEN_MAX + 1] = "";
    int32_t id = 0;
    int err = c->sgen ? QC_EALREADYIN : token_login_id(req, &id);
    if (!err)
        err = session_login_wish(req, &wish);
    json_object_object_get_ex(req, "token", &v);
    if (!err && (size_t)json_object_get_string_len(v) <= QC_TOKEN_MAX)
        strlcpy(token, json_object_get_string(v), sizeof token);
    wipe_token_field(req);
    if (!err)
        err = check_token(w, c, id, token, &u, device);
    if (!err) {
        guard_login_succeeded(w->guard, c->ip_hash, id);
        /* Unnamed, the session is the token's device: a reconnect replaces itself. */
        if (!wish.named) {
            strlcpy(wish.device, device[0] ? device : SOCIAL_DEVICE_DFLT, sizeof wish.device);
            wish.named = true;
        }
        if (wish.want_token && session_issue_token(w, id, wish.device, fresh) != QC_OK)
            fresh[0] = '\0';
        err = session_open(w, c, id, u.name,
                           json_object_object_get_ex(req, "presence", &v) &&
                               json_object_get_boolean(v),
                           &wish, fresh[0] ? fresh : token);
        metrics_count(QM_LOGINS, err ? QM_LOGIN_ERROR : QM_LOGIN_OK);
    }
    explicit_bzero(token, sizeof token);
    if (err) {
        explicit_bzero(fresh, sizeof fresh);
        reply_error(w, c, msgid, seq, err);
        return true;
    }
    bool now = login_reply_start(w, c, id, u.name, seq, fresh[0] ? fresh : NULL);
    explicit_bzero(fresh, sizeof fresh);
    return now;
}

/* ---- LOGINOUT revoke ---------------------------------------------------- */

void service_loginout_revoke(struct worker *w, struct conn *c, struct json_object *req)
{
    struct json_object *v;
    if (!json_object_object_get_ex(req, "revoke", &v) || !json_object_get_boolean(v) ||
        c->token[0] == '\0')
        return;
    int err = w->social->token_revoke(w->store, c->uid, c->token);
    if (err && err != QC_EBADTOKEN)
        log_error("user %d: revoking the session's token failed: %s", c->uid, qc_strerror(err));
    else
        log_info("user %d: token revoked at logout", c->uid);
    explicit_bzero(c->token, sizeof c->token);
}

/* ---- qchatctl revoke ---------------------------------------------------- */

void service_revoke_user(struct worker *w, int32_t uid, int fd)
{
    int revoked = 0;
    int err = w->social->token_revoke_all(w->store, uid, &revoked);
    struct buf b = worker_buf_take(w);
    if (err) {
        buf_append_str(&b, "{\"ok\":false,\"error\":");
        json_append_string(&b, qc_strerror(err), strlen(qc_strerror(err)));
        buf_append_str(&b, "}\n");
        log_error("qchatctl revoke %d: %s", uid, qc_strerror(err));
    } else {
        buf_printf(&b, "{\"ok\":true,\"id\":%d,\"revoked\":%d}\n", uid, revoked);
        log_info("operator revoked %d login token(s) of user %d", revoked, uid);
    }
    /* A reply of a few dozen bytes into a fresh socket: it does not block. */
    if (fd >= 0 && send(fd, buf_head(&b), buf_used(&b), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_warning("qchatctl revoke %d: the answer was not sent: %s", uid, strerror(errno));
    if (fd >= 0)
        close(fd);
    worker_buf_give(w, &b);
}

/* ---- PASSWORD_MSG 48 ---------------------------------------------------- */

/* A string field of min..max bytes (a password). */
static int password_field(struct json_object *req, const char *key, size_t min, const char **s)
{
    struct json_object *v;
    if (!json_object_object_get_ex(req, key, &v) || !json_object_is_type(v, json_type_string))
        return QC_EBADREQ;
    size_t len = (size_t)json_object_get_string_len(v);
    *s = json_object_get_string(v);
    if (len > QC_PASSWORD_MAX)
        return QC_ETOOLONG;
    if (len < min || memchr(*s, '\0', len))
        return QC_EBADREQ;
    return QC_OK;
}

static void wipe_password_fields(struct json_object *req)
{
    static const char *const keys[] = { "old", "new" };
    struct json_object *v;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (json_object_object_get_ex(req, keys[i], &v) && json_object_is_type(v, json_type_string))
            explicit_bzero((char *)json_object_get_string(v),
                           (size_t)json_object_get_string_len(v));
}

static struct crypt_job *change_job(struct worker *w, struct conn *c, int msgid, const char *seq,
                                    const char *old, const char *new, const char *stored)
{
    struct crypt_job *job = calloc(1, sizeof *job);
    if (job == NULL)
        return NULL;
    job->kind = CRYPT_CHANGE;
    job->slot = c->slot;
    job->cgen = c->cgen;
    job->msgid = msgid;
    if (seq) {
        strlcpy(job->seq, seq, sizeof job->seq);
        job->has_seq = true;
    }
    job->uid = c->uid;
    job->asked_uid = c->uid;
    job->cost = w->cfg.password_cost;
    strlcpy(job->plain, old, sizeof job->plain);
    strlcpy(job->newplain, new, sizeof job->newplain);
    strlcpy(job->stored, stored, sizeof job->stored);
    return job;
}

void service_password(struct worker *w, struct conn *c, struct json_object *req, int msgid,
                      const char *seq)
{
    const char *old = NULL, *new = NULL;
    struct store_user u = { 0 };
    struct crypt_job *job = NULL;
    int err = password_field(req, "old", 0, &old);
    if (!err)
        err = password_field(req, "new", 1, &new);
    if (err == QC_ETOOLONG && new == NULL)
        err = QC_EAUTH; /* an old password that long cannot be right */
    /* A wrong old password is a failed login: the same throttle guards it. */
    if (!err && guard_login_begin(w->guard, c->ip_hash, c->uid, w->now_ms) > 0)
        err = QC_ERATE;
    if (!err)
        err = w->st->user_get(w->store, c->uid, &u);
    if (!err && (job = change_job(w, c, msgid, seq, old, new, u.password)) == NULL)
        err = QC_EINTERNAL;
    explicit_bzero(u.password, sizeof u.password);
    wipe_password_fields(req);
    if (err) {
        reply_error(w, c, msgid, seq, err);
        return;
    }
    c->busy = true;
    crypt_pool_submit(w, job);
}

void service_password_done(struct worker *w, struct conn *c, const struct crypt_job *job)
{
    const char *seq = job->has_seq ? job->seq : NULL;
    if (c->uid != job->uid || c->sgen == 0) {
        reply_error(w, c, job->msgid, seq, QC_ENOTLOGGEDIN); /* logged out meanwhile */
        return;
    }
    if (!job->ok) {
        guard_login_failed(w->guard, c->ip_hash, job->uid, w->now_ms);
        reply_error(w, c, job->msgid, seq, QC_EAUTH);
        return;
    }
    guard_login_succeeded(w->guard, c->ip_hash, job->uid);
    int64_t t0 = metrics_now_us();
    int err = w->social->password_change(w->store, job->uid, job->hash);
    metrics_observe(QM_H_STORE, metrics_now_us() - t0);
    if (err) {
        reply_error(w, c, job->msgid, seq, err);
        return;
    }
    explicit_bzero(c->token, sizeof c->token); /* revoked with every other token */
    log_info("user %d changed the password; every login token revoked", job->uid);
    if (seq)
        reply_ack(w, c, job->msgid, seq, 0, 0, 0);
}
