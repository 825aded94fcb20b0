/*
 * service.c - the request handlers: where every client request enters.
 *
 * service_dispatch checks the envelope (msgid, seq, session) and calls one
 * handler per message id.  Handlers validate their fields, call storage
 * on the worker's storage thread (service_async.c, storage.c), and route
 * what must be forwarded (route.c).  Identity always
 * comes from the session: "id", "userid" and "name" in a request are never
 * read.  Replies follow the seq rule of qchat-protocol(7): with "seq", exactly
 * one reply echoing it; without, the seed's replies plus errors.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/jsonw.h"
#include "common/log.h"
#include "common/password.h"
#include "server/conn.h"
#include "server/crypt_pool.h"
#include "server/guard.h"
#include "server/login.h"
#include "server/metrics.h"
#include "server/offline.h"
#include "server/pending.h"
#include "server/rate.h"
#include "server/reply.h"
#include "server/request.h"
#include "server/route.h"
#include "server/service.h"
#include "server/service_session.h"
#include "server/service_async.h"
#include "server/service_chat.h"
#include "server/service_social.h"
#include "server/service_log.h"
#include "server/session.h"
#include "server/storage.h"
#include "server/worker.h"

/* ---- replies ------------------------------------------------------------ */

static void reply_request_error(struct worker *w, struct conn *c, const struct request *r, int err)
{
    reply_error(w, c, r->msgid, r->seq, err);
}

/* Outcome of a request that has no delivery to wait for. */
static void reply_result(struct worker *w, struct conn *c, const struct request *r, int err,
                         int32_t groupid)
{
    if (err)
        reply_request_error(w, c, r, err);
    else if (r->seq)
        reply_ack(w, c, r->msgid, r->seq, 0, 0, groupid, 0);
}

/* ---- field access ------------------------------------------------------- */

/* A string field of min..max bytes; too long is its own error. */
static int get_text(const struct request *r, const char *key, size_t min, size_t max,
                    const char **s, size_t *len)
{
    struct json_object *v;
    if (!json_object_object_get_ex(r->obj, key, &v) || !json_object_is_type(v, json_type_string))
        return QC_EBADREQ;
    *s = json_object_get_string(v);
    *len = (size_t)json_object_get_string_len(v);
    if (*len > max)
        return QC_ETOOLONG;
    if (*len < min || memchr(*s, '\0', *len))
        return QC_EBADREQ;
    return 0;
}

static void wipe_field(const struct request *r, const char *key)
{
    struct json_object *v;
    if (json_object_object_get_ex(r->obj, key, &v) && json_object_is_type(v, json_type_string))
        explicit_bzero((char *)json_object_get_string(v), (size_t)json_object_get_string_len(v));
}

/* ---- LOGIN -------------------------------------------------------------- */

/* The request a finished password job answers (no JSON object any more). */
static void request_of_job(const struct crypt_job *job, struct request *r)
{
    memset(r, 0, sizeof *r);
    r->msgid = job->msgid;
    if (job->has_seq) {
        strlcpy(r->seqbuf, job->seq, sizeof r->seqbuf);
        r->seq = r->seqbuf;
    }
}

static struct crypt_job *new_job(struct worker *w, struct conn *c, const struct request *r,
                                 enum crypt_job_kind kind, const char *pw)
{
    struct crypt_job *job = calloc(1, sizeof *job);
    if (job == NULL)
        return NULL;
    job->kind = kind;
    job->slot = c->slot;
    job->cgen = c->cgen;
    job->msgid = r->msgid;
    if (r->seq) {
        strlcpy(job->seq, r->seq, sizeof job->seq);
        job->has_seq = true;
    }
    job->cost = w->cfg.password_cost;
    strlcpy(job->plain, pw, sizeof job->plain);
    return job;
}

/* On the storage thread: the account the login names (uid 0: none). */
static int fetch_account(const struct store_ops *ops, struct store *st, void *arg)
{
    struct crypt_job *job = arg;
    struct store_user u;
    int err = ops->user_get(st, job->asked_uid, &u);
    if (err == 0) {
        job->uid = u.id;
        strlcpy(job->name, u.name, sizeof job->name);
        strlcpy(job->stored, u.password, sizeof job->stored);
    }
    explicit_bzero(u.password, sizeof u.password);
    return err == QC_ENOUSER ? 0 : err;
}

/*
 * LOGIN, second step: the account is known (or not: then a dummy hash, the
 * same cost either way); the password check goes to the hashing threads.
 */
static bool account_fetched(struct worker *w, struct conn *c, void *arg, int err)
{
    struct crypt_job *job = arg;
    if (c == NULL) {
        crypt_job_free(job);
        return true;
    }
    if (err) {
        struct request r;
        request_of_job(job, &r);
        reply_request_error(w, c, &r, err);
        crypt_job_free(job);
        return true;
    }
    if (job->uid == 0) {
        job->name[0] = '\0';
        strlcpy(job->stored, w->dummy_hash, sizeof job->stored);
    }
    c->busy = true;
    crypt_pool_submit(w, job);
    return false; /* the hashing threads resume the connection */
}

/*
 * LOGIN, first step: validate, then fetch the account on the storage
 * thread; the connection reads nothing more until the reply.
 */
static void handle_login(struct worker *w, struct conn *c, const struct request *r)
{
    const char *pw;
    size_t pwlen;
    int32_t id;
    struct login_wish wish;
    if (session_is_token_login(r->obj)) {
        wipe_field(r, "password");
        service_login_token(w, c, r->obj, r->msgid, r->seq);
        return;
    }
    if (c->sgen) {
        wipe_field(r, "password");
        reply_request_error(w, c, r, QC_EALREADYIN);
        return;
    }
    int err = request_id(r->obj, "id", &id);
    if (!err)
        err = get_text(r, "password", 0, QC_PASSWORD_MAX, &pw, &pwlen);
    if (err == QC_ETOOLONG)
        err = QC_EAUTH;
    if (!err)
        err = session_login_wish(r->obj, &wish);
    const char *why = NULL;
    int64_t wait_ms = err ? 0
                          : guard_login_begin(w->guard, c->ip_hash, id, w->now_ms,
                                              w->cfg.login_checks_per_ip, &why);
    if (wait_ms > 0) {
        /* Refused before any hashing: a brute force only gets slower. */
        log_info("login for user %d refused for %lld ms: %s", id, (long long)wait_ms, why);
        err = QC_ERATE;
        metrics_count(QM_LOGINS, QM_LOGIN_REFUSED);
    }
    struct crypt_job *job = err ? NULL : new_job(w, c, r, CRYPT_VERIFY, pw);
    wipe_field(r, "password");
    if (!err && job == NULL)
        err = QC_EINTERNAL;
    if (!err) {
        job->asked_uid = id;
        job->wish = wish;
        err = service_async(w, c, fetch_account, account_fetched, job);
        if (err)
            crypt_job_free(job);
    }
    if (err)
        reply_request_error(w, c, r, err);
}

/* A seed plaintext (or an old cost) replaced by a hash: written off the loop, best effort. */
struct rehash {
    int32_t uid;
    char hash[PASSWORD_HASH_MAX];
};

static int store_rehash(const struct store_ops *ops, struct store *st, void *arg)
{
    struct rehash *h = arg;
    return ops->user_set_password(st, h->uid, h->hash);
}

static void rehash_stored(void *arg, int err)
{
    struct rehash *h = arg;
    if (err == 0)
        log_info("user %d: password re-hashed at the current cost", h->uid);
    explicit_bzero(h->hash, sizeof h->hash);
    free(h);
}

static void upgrade_password(struct worker *w, const struct crypt_job *job)
{
    struct rehash *h = malloc(sizeof *h);
    if (h == NULL)
        return; /* next login tries again */
    h->uid = job->uid;
    strlcpy(h->hash, job->hash, sizeof h->hash);
    if (storage_submit(w->storage, store_rehash, rehash_stored, h) != QC_OK)
        rehash_stored(h, QC_ESTORAGE);
}

/* LOGIN, second half: the password was checked off the loop.  false: the reply waits. */
static bool finish_login(struct worker *w, struct conn *c, const struct crypt_job *job)
{
    struct request rq, *r = &rq;
    request_of_job(job, r);
    if (!job->ok || job->uid == 0) {
        log_info("login failed on conn %u", c->slot);
        guard_login_failed(w->guard, c->ip_hash, job->uid ? job->uid : job->asked_uid, w->now_ms);
        metrics_count(QM_LOGINS, QM_LOGIN_BAD);
        reply_request_error(w, c, r, QC_EAUTH);
        return true;
    }
    if (c->sgen) {
        reply_request_error(w, c, r, QC_EALREADYIN);
        return true;
    }
    guard_login_succeeded(w->guard, c->ip_hash, job->uid);
    if (job->upgraded)
        upgrade_password(w, job);
    int err = session_open(w, c, job->uid, job->name, &job->wish, NULL);
    metrics_count(QM_LOGINS, err ? QM_LOGIN_ERROR : QM_LOGIN_OK);
    if (err) {
        reply_request_error(w, c, r, err);
        return true;
    }
    return login_reply_start(w, c, job->uid, job->name, r->seq, job->wish.device,
                             job->wish.want_token ? session_token_expiry(w) : 0);
}

/* ---- REG ---------------------------------------------------------------- */

/* REG, first half: the hash is computed off the loop. */
static void handle_register(struct worker *w, struct conn *c, const struct request *r)
{
    const char *name, *pw;
    size_t namelen, pwlen;
    int err = get_text(r, "name", 1, QC_NAME_MAX, &name, &namelen);
    if (!err)
        err = get_text(r, "password", 1, QC_PASSWORD_MAX, &pw, &pwlen);
    if (!err && !guard_register_allowed(w->guard, c->ip_hash, w->cfg.register_rate,
                                        w->cfg.register_rate_global, w->now_ms))
        err = QC_EREGRATE; /* before hashing: a burst costs the server nothing */
    struct crypt_job *job = err ? NULL : new_job(w, c, r, CRYPT_HASH, pw);
    wipe_field(r, "password");
    if (!err && job == NULL)
        err = QC_EINTERNAL;
    if (err) {
        reply_request_error(w, c, r, err);
        return;
    }
    strlcpy(job->name, name, sizeof job->name);
    c->busy = true;
    crypt_pool_submit(w, job);
}

/* On the storage thread: the new user, with the hash (job->uid: the new id). */
static int store_new_user(const struct store_ops *ops, struct store *st, void *arg)
{
    struct crypt_job *job = arg;
    return job->ok ? ops->user_create(st, job->name, job->hash, &job->uid) : QC_EINTERNAL;
}

/* REG, last step: the user is stored. */
static bool user_stored(struct worker *w, struct conn *c, void *arg, int err)
{
    struct crypt_job *job = arg;
    struct request rq, *r = &rq;
    request_of_job(job, r);
    if (c && err)
        reply_request_error(w, c, r, err);
    if (c && !err) {
        struct buf b = worker_buf_take(w);
        struct jsonw jw;
        jsonw_begin(&jw, &b);
        jsonw_int(&jw, "msgid", QC_REG_MSG_ACK);
        jsonw_int(&jw, "errno", 0);
        jsonw_int(&jw, "id", job->uid);
        if (r->seq)
            jsonw_raw(&jw, "seq", r->seq, strlen(r->seq));
        reply_finish(w, c, &b, &jw);
        log_info("user %d registered", job->uid);
    }
    crypt_job_free(job);
    return true;
}

/* REG, second step: the hash is computed; the user is stored off the loop.  false: parked. */
static bool finish_register(struct worker *w, struct conn *c, const struct crypt_job *job)
{
    struct request rq, *r = &rq;
    request_of_job(job, r);
    struct crypt_job *copy = malloc(sizeof *copy);
    int err = copy ? 0 : QC_EINTERNAL;
    if (copy) {
        *copy = *job;
        copy->next = NULL;
        explicit_bzero(copy->plain, sizeof copy->plain);
        err = service_async(w, c, store_new_user, user_stored, copy);
        if (err)
            crypt_job_free(copy);
    }
    if (err)
        reply_request_error(w, c, r, err);
    return err != 0;
}

void service_crypt_done(struct worker *w, struct crypt_job *job)
{
    struct conn *c = worker_conn(w, job->slot);
    if (c == NULL || c->cgen != job->cgen || c->state != CONN_OPEN)
        return; /* the client left meanwhile */
    if (job->kind == CRYPT_VERIFY && !finish_login(w, c, job))
        return; /* the login reply resumes the connection */
    if (job->kind == CRYPT_HASH && !finish_register(w, c, job))
        return; /* the store's answer resumes the connection */
    if (job->kind == CRYPT_CHANGE && !service_password_done(w, c, job))
        return; /* the store's answer resumes the connection */
    conn_resume(w, c);
}

/* ---- chats -------------------------------------------------------------- */

/* The chat path of the log lives in service_chat.c. */
static void handle_chat(struct worker *w, struct conn *c, const struct request *r)
{
    if (r->msgid == QC_ONE_CHAT_MSG && social_chat_gate(w, c, r))
        return; /* error 22: one of the two blocked the other */
    service_chat(w, c, r->obj, r->msgid, r->seq);
}

/* ---- session ---------------------------------------------------------- */

static void handle_loginout(struct worker *w, struct conn *c, const struct request *r)
{
    log_info("user %d logged out on conn %u", c->uid, c->slot);
    if (service_loginout_revoke(w, c, r->obj, r->msgid, r->seq))
        return; /* answered once the token is revoked */
    session_end(w, c);
    reply_result(w, c, r, 0, 0);
    conn_await_login(w, c); /* issue 14, item 11: login_timeout applies again */
}

static void handle_password(struct worker *w, struct conn *c, const struct request *r)
{
    service_password(w, c, r->obj, r->msgid, r->seq);
}

/* DEVICES_MSG 49 (an extension: qchat-protocol(7)): service_session.c. */
static void handle_devices(struct worker *w, struct conn *c, const struct request *r)
{
    service_devices(w, c, r->seq);
}

static void handle_heartbeat(struct worker *w, struct conn *c, const struct request *r)
{
    reply_ack(w, c, r->msgid, r->seq, 0, 0, 0, 0);
}

/* HISTORY, CONVERSATIONS, READ, TYPING: service_log.c. */
static void handle_log(struct worker *w, struct conn *c, const struct request *r)
{
    service_log_dispatch(w, c, r->obj, r->msgid, r->seq);
}

/* ---- dispatch ----------------------------------------------------------- */

static const struct {
    handler_fn fn;
    bool needs_session;
} handlers[QC_MSGID_MAX + 1] = {
    [QC_LOGIN_MSG] = { handle_login, false },
    [QC_REG_MSG] = { handle_register, false },
    [QC_ONE_CHAT_MSG] = { handle_chat, true },
    [QC_ADD_FRIEND_MSG] = { social_add_friend, true },
    [QC_CREATE_GROUP_MSG] = { social_create_group, true },
    [QC_ADD_GROUP_MSG] = { social_add_group, true },
    [QC_GROUP_CHAT_MSG] = { handle_chat, true },
    [QC_LOGINOUT_MSG] = { handle_loginout, true },
    [QC_HEARTBEAT_MSG] = { handle_heartbeat, false },
    /* friends, blocks, groups: service_social.c */
    [QC_FRIEND_LIST_MSG] = { social_friend_list, true },
    [QC_FRIEND_REMOVE_MSG] = { social_friend_remove, true },
    [QC_BLOCK_MSG] = { social_block, true },
    [QC_UNBLOCK_MSG] = { social_unblock, true },
    [QC_FRIEND_DECLINE_MSG] = { social_friend_decline, true },
    [QC_GROUP_MEMBERS_MSG] = { social_group_members, true },
    [QC_GROUP_LEAVE_MSG] = { social_group_leave, true },
    [QC_GROUP_KICK_MSG] = { social_group_kick, true },
    [QC_GROUP_ROLE_MSG] = { social_group_role, true },
    [QC_GROUP_UPDATE_MSG] = { social_group_update, true },
    [QC_GROUP_DELETE_MSG] = { social_group_delete, true },
    /* the conversation log (service_log.c) */
    [QC_HISTORY_MSG] = { handle_log, true },
    [QC_CONVERSATIONS_MSG] = { handle_log, true },
    [QC_READ_MSG] = { handle_log, true },
    [QC_TYPING_MSG] = { handle_log, true },
    [QC_PASSWORD_MSG] = { handle_password, true },
    [QC_DEVICES_MSG] = { handle_devices, true },
};

/* "seq" is echoed verbatim: an integer or a short string. */
static int read_seq(struct request *r)
{
    struct json_object *v;
    if (!json_object_object_get_ex(r->obj, "seq", &v))
        return 0;
    if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_string))
        return QC_EBADREQ;
    const char *s =
        json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    if (s == NULL || strlen(s) > QC_SEQ_MAX)
        return QC_EBADREQ;
    strcpy(r->seqbuf, s);
    r->seq = r->seqbuf;
    return 0;
}

void service_dispatch(struct worker *w, struct conn *c, struct json_object *obj)
{
    struct request r = { .obj = obj };
    struct json_object *v;
    w->stats->msgs_in++;
    if (!json_object_object_get_ex(obj, "msgid", &v) || !json_object_is_type(v, json_type_int)) {
        read_seq(&r);
        reply_request_error(w, c, &r, QC_EBADREQ);
        return;
    }
    int64_t msgid = json_object_get_int64(v);
    r.msgid = msgid >= 0 && msgid <= QC_MSGID_MAX ? (int)msgid : 0;
    int err = read_seq(&r);
    if (!err && r.seq)
        c->legacy = false; /* a client that numbers its requests reads replies properly */
    else if (!err && c->nul_ended)
        c->legacy = true; /* the seed's client: NUL after each request, no seq */
    if (!err && (msgid < 0 || msgid > QC_MSGID_MAX || handlers[msgid].fn == NULL)) {
        r.msgid = msgid >= INT32_MIN && msgid <= INT32_MAX ? (int)msgid : 0;
        err = QC_EUNKNOWN;
    }
    if (!err && handlers[r.msgid].needs_session && c->sgen == 0)
        err = QC_ENOTLOGGEDIN;
    if (!err && !rate_admit(w, c)) {
        metrics_count(QM_RATE_LIMITED, 0);
        /* Sustained abuse: a whole burst's worth of refused requests in a row. */
        if (++c->rate_strikes > (uint32_t)w->cfg.request_burst) {
            log_info("conn %u: request flood, closing", c->slot);
            conn_fail(w, c, QC_ERATE);
            return;
        }
        err = QC_ERATE;
    }
    if (err) {
        if (r.msgid == QC_LOGIN_MSG || r.msgid == QC_REG_MSG)
            wipe_field(&r, "password");
        if (r.msgid == QC_LOGIN_MSG)
            wipe_field(&r, "token");
        if (r.msgid == QC_PASSWORD_MSG) {
            wipe_field(&r, "old");
            wipe_field(&r, "new");
        }
        reply_request_error(w, c, &r, err);
        return;
    }
    handlers[r.msgid].fn(w, c, &r);
}

void service_install(struct worker *w)
{
    w->hooks.request = service_dispatch;
    w->hooks.notice = social_notice;
}
