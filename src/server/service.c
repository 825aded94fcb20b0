/*
 * service.c - the request handlers: where every client request enters.
 *
 * service_dispatch checks the envelope (msgid, seq, session) and calls one
 * handler per message id.  Handlers validate their fields, call storage
 * through w->st, and route what must be forwarded (route.c).  Identity always
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
#include "server/reply.h"
#include "server/route.h"
#include "server/service.h"
#include "server/service_session.h"
#include "server/session.h"
#include "server/worker.h"

/* One request being handled: the envelope fields every handler needs. */
struct request {
    struct json_object *obj;
    int msgid;
    const char *seq; /* serialized seq, NULL when absent */
    char seqbuf[QC_SEQ_MAX + 1];
};

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
        reply_ack(w, c, r->msgid, r->seq, 0, 0, groupid);
}

/* ---- field access ------------------------------------------------------- */

/* A positive 32-bit id field. */
static int get_id(const struct request *r, const char *key, int32_t *out)
{
    struct json_object *v;
    if (!json_object_object_get_ex(r->obj, key, &v) || !json_object_is_type(v, json_type_int))
        return QC_EBADREQ;
    int64_t x = json_object_get_int64(v);
    if (x <= 0 || x > INT32_MAX)
        return QC_EBADREQ;
    *out = (int32_t)x;
    return 0;
}

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

/*
 * LOGIN, first half: fetch the user and hand the password check to the
 * hashing threads; the connection reads nothing more until it comes back.
 * An unknown id is checked against a dummy hash: the same cost either way.
 */
static void handle_login(struct worker *w, struct conn *c, const struct request *r)
{
    const char *pw;
    size_t pwlen;
    int32_t id;
    struct store_user u;
    struct login_wish wish;
    if (session_is_token_login(r->obj)) {
        wipe_field(r, "password");
        if (!service_login_token(w, c, r->obj, r->msgid, r->seq))
            c->busy = true; /* the login reply waits for the relay, then resumes c */
        return;
    }
    if (c->sgen) {
        wipe_field(r, "password");
        reply_request_error(w, c, r, QC_EALREADYIN);
        return;
    }
    int err = get_id(r, "id", &id);
    if (!err)
        err = get_text(r, "password", 0, QC_PASSWORD_MAX, &pw, &pwlen);
    if (err == QC_ETOOLONG)
        err = QC_EAUTH;
    if (!err)
        err = session_login_wish(r->obj, &wish);
    int64_t wait_ms = err ? 0 : guard_login_begin(w->guard, c->ip_hash, id, w->now_ms);
    if (wait_ms > 0) {
        /* Refused before any hashing: a brute force only gets slower. */
        log_info("login for user %d refused for %lld ms after repeated failures", id,
                 (long long)wait_ms);
        err = QC_ERATE;
        metrics_count(QM_LOGINS, QM_LOGIN_REFUSED);
    }
    if (!err) {
        int64_t t0 = metrics_now_us();
        err = w->st->user_get(w->store, id, &u);
        metrics_observe(QM_H_STORE, metrics_now_us() - t0);
        if (err == QC_ENOUSER) {
            u.id = 0;
            u.name[0] = '\0';
            strlcpy(u.password, w->dummy_hash, sizeof u.password);
            err = 0;
        }
    }
    struct crypt_job *job = err ? NULL : new_job(w, c, r, CRYPT_VERIFY, pw);
    wipe_field(r, "password");
    if (!err && job == NULL)
        err = QC_EINTERNAL;
    if (err) {
        explicit_bzero(u.password, sizeof u.password);
        reply_request_error(w, c, r, err);
        return;
    }
    struct json_object *v;
    job->presence = json_object_object_get_ex(r->obj, "presence", &v) && json_object_get_boolean(v);
    job->want_token = wish.want_token;
    job->device_named = wish.named;
    strlcpy(job->device, wish.device, sizeof job->device);
    job->uid = u.id;
    job->asked_uid = id;
    strlcpy(job->name, u.name, sizeof job->name);
    strlcpy(job->stored, u.password, sizeof job->stored);
    explicit_bzero(u.password, sizeof u.password);
    c->busy = true;
    crypt_pool_submit(w, job);
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
    if (job->upgraded && w->st->user_set_password(w->store, job->uid, job->hash) == 0)
        log_info("user %d: password re-hashed at the current cost", job->uid);
    struct login_wish wish = { .named = job->device_named, .want_token = job->want_token };
    strlcpy(wish.device, job->device, sizeof wish.device);
    char token[QC_TOKEN_MAX + 1] = "";
    if (wish.want_token && session_issue_token(w, job->uid, wish.device, token) != QC_OK)
        token[0] = '\0'; /* the login still succeeds, without a token */
    int err = session_open(w, c, job->uid, job->name, job->presence, &wish, token);
    metrics_count(QM_LOGINS, err ? QM_LOGIN_ERROR : QM_LOGIN_OK);
    if (err) {
        explicit_bzero(token, sizeof token);
        reply_request_error(w, c, r, err);
        return true;
    }
    bool now = login_reply_start(w, c, job->uid, job->name, r->seq, token[0] ? token : NULL);
    explicit_bzero(token, sizeof token);
    return now;
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

/* REG, second half: store the user with the hash. */
static void finish_register(struct worker *w, struct conn *c, const struct crypt_job *job)
{
    struct request rq, *r = &rq;
    request_of_job(job, r);
    int32_t id = 0;
    int err = job->ok ? w->st->user_create(w->store, job->name, job->hash, &id) : QC_EINTERNAL;
    if (err) {
        reply_request_error(w, c, r, err);
        return;
    }
    struct buf b = worker_buf_take(w);
    struct jsonw jw;
    jsonw_begin(&jw, &b);
    jsonw_int(&jw, "msgid", QC_REG_MSG_ACK);
    jsonw_int(&jw, "errno", 0);
    jsonw_int(&jw, "id", id);
    if (r->seq)
        jsonw_raw(&jw, "seq", r->seq, strlen(r->seq));
    reply_finish(w, c, &b, &jw);
    log_info("user %d registered", id);
}

void service_crypt_done(struct worker *w, struct crypt_job *job)
{
    struct conn *c = worker_conn(w, job->slot);
    if (c == NULL || c->cgen != job->cgen || c->state != CONN_OPEN)
        return; /* the client left meanwhile */
    if (job->kind == CRYPT_VERIFY && !finish_login(w, c, job))
        return; /* the login reply resumes the connection */
    if (job->kind == CRYPT_HASH)
        finish_register(w, c, job);
    if (job->kind == CRYPT_CHANGE)
        service_password_done(w, c, job);
    conn_resume(w, c);
}

/* ---- chats -------------------------------------------------------------- */

/* The forwarded form of a chat: built once, sent to every recipient as is. */
static int build_chat(struct worker *w, struct conn *c, struct buf *b, int msgid, int32_t to,
                      const char *text, size_t textlen, int64_t *mid)
{
    int64_t ts;
    const char *now = worker_time_str(w, &ts);
    *mid = online_next_mid(w->online);
    struct jsonw jw;
    jsonw_begin(&jw, b);
    jsonw_int(&jw, "msgid", msgid);
    jsonw_int(&jw, "id", c->uid);
    if (msgid == QC_GROUP_CHAT_MSG)
        jsonw_int(&jw, "userid", c->uid);
    jsonw_str(&jw, "name", c->name);
    jsonw_int(&jw, msgid == QC_GROUP_CHAT_MSG ? "groupid" : "toid", to);
    jsonw_strn(&jw, "msg", text, textlen);
    jsonw_str(&jw, "time", now);
    jsonw_int(&jw, "ts", ts);
    jsonw_int(&jw, "mid", *mid);
    return jsonw_end(&jw) < 0 ? QC_EINTERNAL : 0;
}

static void handle_one_chat(struct worker *w, struct conn *c, const struct request *r)
{
    int32_t to;
    const char *text;
    size_t len;
    int err = get_id(r, "toid", &to);
    if (!err)
        err = get_text(r, "msg", 0, (size_t)w->cfg.max_text_bytes, &text, &len);
    if (err) {
        reply_request_error(w, c, r, err);
        return;
    }
    struct buf b = worker_buf_take(w);
    int64_t mid;
    if ((err = build_chat(w, c, &b, QC_ONE_CHAT_MSG, to, text, len, &mid)) != 0) {
        worker_buf_give(w, &b);
        reply_request_error(w, c, r, err);
        return;
    }
    metrics_count(QM_MESSAGES, QM_MSG_ONE);
    uint32_t req = pending_open(w, c, r->msgid, r->seq);
    pending_set_mid(w, req, mid);
    if (route_chat(w, to, buf_head(&b), buf_used(&b), req) == ROUTE_OFFLINE)
        err = offline_keep_checked(w, to, buf_head(&b), buf_used(&b));
    if (to != c->uid)
        route_echo(w, c->uid, c->sgen, buf_head(&b), buf_used(&b), req); /* sender's devices */
    if (req)
        pending_done(w, req, err);
    else
        reply_result(w, c, r, err, 0);
    worker_buf_give(w, &b);
}

struct group_fanout {
    int32_t sender;
    bool member;
    struct id_list members;
};

static void collect_member(void *arg, int32_t userid, const char *name, const char *role)
{
    struct group_fanout *g = arg;
    (void)name;
    (void)role;
    if (userid == g->sender)
        g->member = true;
    else
        id_list_push(&g->members, userid);
}

static void handle_group_chat(struct worker *w, struct conn *c, const struct request *r)
{
    int32_t gid;
    const char *text;
    size_t len;
    int err = get_id(r, "groupid", &gid);
    if (!err)
        err = get_text(r, "msg", 0, (size_t)w->cfg.max_text_bytes, &text, &len);
    struct group_fanout g = { .sender = c->uid };
    if (!err)
        err = w->st->group_members(w->store, gid, collect_member, &g);
    if (!err && g.members.err)
        err = g.members.err;
    if (!err && !g.member)
        err = QC_ENOTMEMBER;
    struct buf b = worker_buf_take(w);
    int64_t mid;
    if (!err)
        err = build_chat(w, c, &b, QC_GROUP_CHAT_MSG, gid, text, len, &mid);
    if (err) {
        free(g.members.ids);
        worker_buf_give(w, &b);
        reply_request_error(w, c, r, err);
        return;
    }
    metrics_count(QM_MESSAGES, QM_MSG_GROUP);
    uint32_t req = pending_open(w, c, r->msgid, r->seq);
    pending_set_mid(w, req, mid);
    /* Online members get it now; the others in one batched store. */
    size_t offline = 0;
    for (size_t i = 0; i < g.members.n; i++)
        if (route_chat(w, g.members.ids[i], buf_head(&b), buf_used(&b), req) == ROUTE_OFFLINE)
            g.members.ids[offline++] = g.members.ids[i];
    route_echo(w, c->uid, c->sgen, buf_head(&b), buf_used(&b), req); /* the sender's devices */
    if (offline > 0) {
        int64_t t0 = metrics_now_us();
        err = w->st->offline_store(w->store, g.members.ids, offline, buf_head(&b), buf_used(&b));
        metrics_observe(QM_H_STORE, metrics_now_us() - t0);
        metrics_add(err ? QM_STORE_ERRORS : QM_DELIVERIES, err ? 0 : QM_PATH_STORED,
                    err ? 1 : offline);
        if (err)
            log_error("group %d: storing for %zu offline member(s) failed: %s", gid, offline,
                      qc_strerror(err));
        else
            w->stats->offline_stored += offline;
    }
    if (req)
        pending_done(w, req, err);
    else
        reply_result(w, c, r, err, 0);
    free(g.members.ids);
    worker_buf_give(w, &b);
}

/* ---- friends and groups ------------------------------------------------- */

static void handle_add_friend(struct worker *w, struct conn *c, const struct request *r)
{
    int32_t fid;
    int count = 0;
    int err = get_id(r, "friendid", &fid);
    if (!err && fid == c->uid)
        err = QC_ESELF;
    /* Friendship is mutual: both sides must have room. */
    if (!err)
        err = w->st->friend_count(w->store, c->uid, &count);
    if (!err && count >= w->cfg.max_friends)
        err = QC_ELIMIT;
    if (!err)
        err = w->st->friend_count(w->store, fid, &count);
    if (!err && count >= w->cfg.max_friends)
        err = QC_ELIMIT;
    if (!err)
        err = w->st->friend_add(w->store, c->uid, fid);
    reply_result(w, c, r, err, 0);
}

static void handle_create_group(struct worker *w, struct conn *c, const struct request *r)
{
    const char *name, *desc = "";
    size_t namelen, desclen = 0;
    int32_t gid = 0;
    int err = get_text(r, "groupname", 1, QC_NAME_MAX, &name, &namelen);
    if (!err && json_object_object_get_ex(r->obj, "groupdesc", NULL))
        err = get_text(r, "groupdesc", 0, QC_GROUPDESC_MAX, &desc, &desclen);
    if (!err)
        err = w->st->group_create(w->store, name, desc, c->uid, &gid);
    reply_result(w, c, r, err, gid);
}

static void handle_add_group(struct worker *w, struct conn *c, const struct request *r)
{
    int32_t gid;
    int count = 0;
    int err = get_id(r, "groupid", &gid);
    if (!err)
        err = w->st->group_member_count(w->store, gid, &count);
    if (!err && count >= w->cfg.max_group_members)
        err = QC_ELIMIT;
    if (!err)
        err = w->st->group_join(w->store, gid, c->uid);
    reply_result(w, c, r, err, 0);
}

static void handle_loginout(struct worker *w, struct conn *c, const struct request *r)
{
    log_info("user %d logged out on conn %u", c->uid, c->slot);
    service_loginout_revoke(w, c, r->obj);
    session_end(w, c);
    reply_result(w, c, r, 0, 0);
}

static void handle_password(struct worker *w, struct conn *c, const struct request *r)
{
    service_password(w, c, r->obj, r->msgid, r->seq);
}

static void handle_heartbeat(struct worker *w, struct conn *c, const struct request *r)
{
    reply_ack(w, c, r->msgid, r->seq, 0, 0, 0);
}

/* ---- dispatch ----------------------------------------------------------- */

typedef void (*handler_fn)(struct worker *, struct conn *, const struct request *);

static const struct {
    handler_fn fn;
    bool needs_session;
} handlers[QC_MSGID_MAX + 1] = {
    [QC_LOGIN_MSG] = { handle_login, false },
    [QC_REG_MSG] = { handle_register, false },
    [QC_ONE_CHAT_MSG] = { handle_one_chat, true },
    [QC_ADD_FRIEND_MSG] = { handle_add_friend, true },
    [QC_CREATE_GROUP_MSG] = { handle_create_group, true },
    [QC_ADD_GROUP_MSG] = { handle_add_group, true },
    [QC_GROUP_CHAT_MSG] = { handle_group_chat, true },
    [QC_LOGINOUT_MSG] = { handle_loginout, true },
    [QC_HEARTBEAT_MSG] = { handle_heartbeat, false },
    [QC_PASSWORD_MSG] = { handle_password, true },
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

/* Token bucket: request_rate per second, request_burst deep. */
static bool within_rate(struct worker *w, struct conn *c)
{
    if (w->cfg.request_rate <= 0)
        return true;
    double elapsed = (double)(w->now_ms - c->tokens_ms) / 1000.0;
    c->tokens_ms = w->now_ms;
    c->tokens += elapsed * w->cfg.request_rate;
    if (c->tokens > w->cfg.request_burst)
        c->tokens = w->cfg.request_burst;
    if (c->tokens < 1.0)
        return false;
    c->tokens -= 1.0;
    c->rate_strikes = 0;
    return true;
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
    if (!err && (msgid < 0 || msgid > QC_MSGID_MAX || handlers[msgid].fn == NULL)) {
        r.msgid = msgid >= INT32_MIN && msgid <= INT32_MAX ? (int)msgid : 0;
        err = QC_EUNKNOWN;
    }
    if (!err && handlers[r.msgid].needs_session && c->sgen == 0)
        err = QC_ENOTLOGGEDIN;
    if (!err && !within_rate(w, c)) {
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
}
