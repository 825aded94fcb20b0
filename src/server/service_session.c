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

#include "common/clock.h"
#include "common/jsonw.h"
#include "common/log.h"
#include "server/conn.h"
#include "server/crypt_pool.h"
#include "server/guard.h"
#include "server/ipc.h"
#include "server/online.h"
#include "server/peer.h"
#include "server/login.h"
#include "server/metrics.h"
#include "server/reply.h"
#include "server/request.h"
#include "server/route.h"
#include "server/service_async.h"
#include "server/service_session.h"
#include "server/service_social.h"
#include "server/session.h"
#include "server/storage.h"
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
    out->presence = json_object_object_get_ex(req, "presence", &v) && json_object_get_boolean(v);
    out->receipts = json_object_object_get_ex(req, "receipts", &v) && json_object_get_boolean(v);
    out->typing = json_object_object_get_ex(req, "typing", &v) && json_object_get_boolean(v);
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

int session_open(struct worker *w, struct conn *c, int32_t uid, const char *name,
                 const struct login_wish *wish, const char *token)
{
    struct online_loc loc = { .worker = w->index,
                              .slot = c->slot,
                              .gen = online_next_gen(w->online) };
    struct online_note note = { .since_ms = clock_wall_ms() };
    strlcpy(note.device, wish->device, sizeof note.device);
    struct online_policy p = { .mode = configured_mode(w),
                               .device = online_device_hash(wish->device),
                               .named = wish->named,
                               .max = (uint32_t)w->cfg.max_devices,
                               .note = &note };
    struct online_loc kicked[ONLINE_USER_MAX];
    size_t nkicked;
    int rc = online_login(w->online, uid, &loc, &p, kicked, &nkicked);
    if (rc == ONLINE_REFUSED)
        return QC_ERESERVED2;
    if (rc < 0)
        return QC_ELIMIT;
    c->uid = uid;
    c->sgen = loc.gen;
    c->presence = wish->presence;
    c->receipts = wish->receipts;
    c->typing = wish->typing;
    c->deadline = 0;
    conn_end_prelogin(w, c);
    strlcpy(c->name, name, sizeof c->name);
    strlcpy(c->token, token ? token : "", sizeof c->token);
    strlcpy(c->device, wish->device, sizeof c->device);
    c->device_named = wish->named;
    c->since_ms = note.since_ms;
    w->stats->sessions++;
    kick_replaced(w, uid, kicked, nkicked);
    social_session_started(w, c); /* the session's blocks, for the chat check */
    return QC_OK;
}

int64_t session_token_expiry(const struct worker *w)
{
    int64_t life = w->cfg.token_seconds > 0 ? (int64_t)w->cfg.token_seconds
                                            : (int64_t)w->cfg.token_days * SECONDS_PER_DAY;
    return (int64_t)time(NULL) + life;
}

/* ---- token login -------------------------------------------------------- */

/* A token login between the loop and the storage thread. */
struct token_login {
    int msgid;
    char seq[QC_SEQ_MAX + 1];
    bool has_seq;
    struct login_wish wish;
    int32_t id;
    char token[QC_TOKEN_MAX + 1];
    int64_t now;                    /* epoch seconds of the check */
    char device[QC_DEVICE_MAX + 1]; /* out: the token's device */
    char name[QC_NAME_MAX + 1];     /* out: the account's name */
};

static void token_login_free(struct token_login *t)
{
    explicit_bzero(t->token, sizeof t->token);
    free(t);
}

static void wipe_token_field(struct json_object *req)
{
    struct json_object *v;
    if (json_object_object_get_ex(req, "token", &v) && json_object_is_type(v, json_type_string))
        explicit_bzero((char *)json_object_get_string(v), (size_t)json_object_get_string_len(v));
}

/* On the storage thread: the token's check (constant-time in the store) and the account. */
static int check_token_on_store(const struct store_ops *ops, struct store *st, void *arg)
{
    struct token_login *t = arg;
    const struct social_ops *so = social_driver(ops->name);
    if (so == NULL)
        return QC_EINTERNAL;
    int err = so->token_check(st, t->id, t->token, t->now, t->device);
    struct store_user u;
    if (err == QC_OK && (err = ops->user_get(st, t->id, &u)) == QC_OK)
        strlcpy(t->name, u.name, sizeof t->name);
    explicit_bzero(&u, sizeof u);
    return err == QC_ENOUSER ? QC_EBADTOKEN : err;
}

/*
 * The token was checked: the throttle hears the result and, when it was
 * good, the session opens.  0: open; else the error (not answered yet).
 */
static int open_token_session(struct worker *w, struct conn *c, struct token_login *t, int err)
{
    if (err == QC_EBADTOKEN) {
        log_info("token login failed on conn %u", c->slot);
        guard_login_failed(w->guard, c->ip_hash, t->id, w->now_ms);
        metrics_count(QM_LOGINS, QM_LOGIN_BAD);
    }
    if (!err && c->sgen)
        err = QC_EALREADYIN;
    if (!err) {
        guard_login_succeeded(w->guard, c->ip_hash, t->id);
        /* Unnamed, the session is the token's device: a reconnect replaces itself. */
        if (!t->wish.named) {
            strlcpy(t->wish.device, t->device[0] ? t->device : SOCIAL_DEVICE_DFLT,
                    sizeof t->wish.device);
            t->wish.named = true;
        }
        err = session_open(w, c, t->id, t->name, &t->wish, t->wish.want_token ? NULL : t->token);
        metrics_count(QM_LOGINS, err ? QM_LOGIN_ERROR : QM_LOGIN_OK);
    }
    return err;
}

/* A token login asking for a new token: checked by one job, the reply read by a second. */
static bool token_checked(struct worker *w, struct conn *c, void *arg, int err)
{
    struct token_login *t = arg;
    const char *seq = t->has_seq ? t->seq : NULL;
    if (c == NULL) {
        token_login_free(t);
        return true;
    }
    if ((err = open_token_session(w, c, t, err)) != 0) {
        reply_error(w, c, t->msgid, seq, err);
        token_login_free(t);
        return true;
    }
    bool now = login_reply_start(w, c, t->id, t->name, seq, t->wish.device,
                                 t->wish.want_token ? session_token_expiry(w) : 0);
    token_login_free(t);
    return now;
}

/* login_check.check: the token and the account, in the login reply's own job. */
static int check_token_for_reply(const struct store_ops *ops, struct store *st, void *arg,
                                 char *name, size_t namelen)
{
    struct token_login *t = arg;
    int err = check_token_on_store(ops, st, t);
    if (err == QC_OK)
        strlcpy(name, t->name, namelen);
    return err;
}

/* login_check.open: the session, or errno 24 (or another error) answered here. */
static int open_for_reply(struct worker *w, struct conn *c, void *arg, int err)
{
    struct token_login *t = arg;
    if (c != NULL && (err = open_token_session(w, c, t, err)) != 0)
        reply_error(w, c, t->msgid, t->has_seq ? t->seq : NULL, err);
    token_login_free(t);
    return err;
}

/*
 * The usual token login (a reconnect) is one storage job: the check, then
 * the reply's lists (login_checked_start).  One asking for a new token too
 * takes the two-job way, so that no token is issued before the session is
 * known to open.
 */
static int queue_token_login(struct worker *w, struct conn *c, struct token_login *t)
{
    if (t->wish.want_token)
        return service_async(w, c, check_token_on_store, token_checked, t);
    struct login_check chk = { .check = check_token_for_reply, .open = open_for_reply, .arg = t };
    return login_checked_start(w, c, t->id, t->has_seq ? t->seq : NULL, &chk);
}

void service_login_token(struct worker *w, struct conn *c, struct json_object *req, int msgid,
                         const char *seq)
{
    struct json_object *v;
    struct token_login *t = calloc(1, sizeof *t);
    int err = t == NULL ? QC_EINTERNAL : c->sgen ? QC_EALREADYIN : request_id(req, "id", &t->id);
    if (!err)
        err = session_login_wish(req, &t->wish);
    if (!err) {
        json_object_object_get_ex(req, "token", &v);
        if ((size_t)json_object_get_string_len(v) <= QC_TOKEN_MAX)
            strlcpy(t->token, json_object_get_string(v), sizeof t->token);
        t->msgid = msgid;
        t->has_seq = seq != NULL;
        if (seq)
            strlcpy(t->seq, seq, sizeof t->seq);
        t->now = (int64_t)time(NULL);
    }
    wipe_token_field(req);
    /* The same failure delays as a password; no hash, so no check-rate budget. */
    int64_t wait_ms = err ? 0 : guard_token_begin(w->guard, c->ip_hash, t->id, w->now_ms);
    if (wait_ms > 0) {
        log_info("token login for user %d refused for %lld ms after repeated failures", t->id,
                 (long long)wait_ms);
        metrics_count(QM_LOGINS, QM_LOGIN_REFUSED);
        err = QC_ERATE;
    }
    if (!err)
        err = queue_token_login(w, c, t);
    if (err) {
        if (t)
            token_login_free(t);
        reply_error(w, c, msgid, seq, err);
    }
}

/* ---- LOGINOUT revoke ---------------------------------------------------- */

struct revoke_one {
    int msgid;
    char seq[QC_SEQ_MAX + 1];
    bool has_seq;
    int32_t uid;
    char token[QC_TOKEN_MAX + 1];
};

static int revoke_on_store(const struct store_ops *ops, struct store *st, void *arg)
{
    struct revoke_one *r = arg;
    const struct social_ops *so = social_driver(ops->name);
    int err = so ? so->token_revoke(st, r->uid, r->token) : QC_EINTERNAL;
    return err == QC_EBADTOKEN ? QC_OK : err; /* revoked already (a password change) */
}

static bool token_revoked(struct worker *w, struct conn *c, void *arg, int err)
{
    struct revoke_one *r = arg;
    if (err)
        log_error("user %d: revoking the session's token failed: %s", r->uid, qc_strerror(err));
    else
        log_info("user %d: token revoked at logout", r->uid);
    if (c && err)
        reply_error(w, c, r->msgid, r->has_seq ? r->seq : NULL, err);
    else if (c && r->has_seq)
        reply_ack(w, c, r->msgid, r->seq, 0, 0, 0, 0);
    explicit_bzero(r, sizeof *r);
    free(r);
    return true;
}

bool service_loginout_revoke(struct worker *w, struct conn *c, struct json_object *req, int msgid,
                             const char *seq)
{
    struct json_object *v;
    if (!json_object_object_get_ex(req, "revoke", &v) || !json_object_get_boolean(v) ||
        c->token[0] == '\0')
        return false;
    struct revoke_one *r = calloc(1, sizeof *r);
    if (r == NULL)
        return false; /* the logout goes on; the token stays until it expires */
    r->msgid = msgid;
    r->has_seq = seq != NULL;
    if (seq)
        strlcpy(r->seq, seq, sizeof r->seq);
    r->uid = c->uid;
    strlcpy(r->token, c->token, sizeof r->token);
    session_end(w, c);
    int err = service_async(w, c, revoke_on_store, token_revoked, r);
    if (err) {
        explicit_bzero(r, sizeof *r);
        free(r);
        reply_error(w, c, msgid, seq, err);
    }
    return true;
}

/* ---- qchatctl revoke ---------------------------------------------------- */

struct revoke_all {
    int32_t uid;
    int fd; /* the qchatctl connection, answered and closed here */
    int revoked;
    struct worker *w;
};

static int revoke_all_on_store(const struct store_ops *ops, struct store *st, void *arg)
{
    struct revoke_all *r = arg;
    const struct social_ops *so = social_driver(ops->name);
    return so ? so->token_revoke_all(st, r->uid, &r->revoked) : QC_EINTERNAL;
}

static void answer_revoke(void *arg, int err)
{
    struct revoke_all *r = arg;
    struct buf b = worker_buf_take(r->w);
    if (err) {
        buf_append_str(&b, "{\"ok\":false,\"error\":");
        json_append_string(&b, qc_strerror(err), strlen(qc_strerror(err)));
        buf_append_str(&b, "}\n");
        log_error("qchatctl revoke %d: %s", r->uid, qc_strerror(err));
    } else {
        buf_printf(&b, "{\"ok\":true,\"id\":%d,\"revoked\":%d}\n", r->uid, r->revoked);
        log_info("operator revoked %d login token(s) of user %d", r->revoked, r->uid);
    }
    /* A reply of a few dozen bytes into a fresh socket: it does not block. */
    if (send(r->fd, buf_head(&b), buf_used(&b), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_warning("qchatctl revoke %d: the answer was not sent: %s", r->uid, strerror(errno));
    close(r->fd);
    worker_buf_give(r->w, &b);
    free(r);
}

void service_revoke_user(struct worker *w, int32_t uid, int fd)
{
    if (fd < 0)
        return;
    struct revoke_all *r = calloc(1, sizeof *r);
    if (r == NULL) {
        close(fd); /* qchatctl reports the closed connection */
        return;
    }
    *r = (struct revoke_all){ .uid = uid, .fd = fd, .w = w };
    if (storage_submit(w->storage, revoke_all_on_store, answer_revoke, r) != QC_OK)
        answer_revoke(r, QC_ESTORAGE);
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

/* PASSWORD_MSG between the loop, the storage thread and the hashing threads. */
static struct crypt_job *change_job(struct worker *w, struct conn *c, int msgid, const char *seq,
                                    const char *old, const char *new)
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
    return job;
}

/* On the storage thread: the stored hash the old password is checked against. */
static int fetch_stored_hash(const struct store_ops *ops, struct store *st, void *arg)
{
    struct crypt_job *job = arg;
    struct store_user u;
    int err = ops->user_get(st, job->uid, &u);
    if (err == QC_OK)
        strlcpy(job->stored, u.password, sizeof job->stored);
    explicit_bzero(&u, sizeof u);
    return err;
}

/* The stored hash is here: the check and the new hash go to the hashing threads. */
static bool stored_hash_fetched(struct worker *w, struct conn *c, void *arg, int err)
{
    struct crypt_job *job = arg;
    if (c != NULL && err)
        reply_error(w, c, job->msgid, job->has_seq ? job->seq : NULL, err);
    if (c == NULL || err) {
        crypt_job_free(job);
        return true;
    }
    c->busy = true;
    crypt_pool_submit(w, job);
    return false; /* the hashing threads resume the connection */
}

void service_password(struct worker *w, struct conn *c, struct json_object *req, int msgid,
                      const char *seq)
{
    const char *old = NULL, *new = NULL;
    struct crypt_job *job = NULL;
    int err = password_field(req, "old", 0, &old);
    if (!err)
        err = password_field(req, "new", 1, &new);
    if (err == QC_ETOOLONG && new == NULL)
        err = QC_EAUTH; /* an old password that long cannot be right */
    /* A wrong old password is a failed login: the same throttle guards it. */
    if (!err && guard_login_begin(w->guard, c->ip_hash, c->uid, w->now_ms,
                                  w->cfg.login_checks_per_ip, NULL) > 0)
        err = QC_ERATE;
    if (!err && (job = change_job(w, c, msgid, seq, old, new)) == NULL)
        err = QC_EINTERNAL;
    wipe_password_fields(req);
    if (!err && (err = service_async(w, c, fetch_stored_hash, stored_hash_fetched, job)) != 0)
        crypt_job_free(job);
    if (err)
        reply_error(w, c, msgid, seq, err);
}

/* On the storage thread: the new hash and every token revoked, one transaction. */
static int change_on_store(const struct store_ops *ops, struct store *st, void *arg)
{
    struct crypt_job *job = arg;
    const struct social_ops *so = social_driver(ops->name);
    return so ? so->password_change(st, job->uid, job->hash) : QC_EINTERNAL;
}

static bool password_changed(struct worker *w, struct conn *c, void *arg, int err)
{
    struct crypt_job *job = arg;
    const char *seq = job->has_seq ? job->seq : NULL;
    if (!err)
        log_info("user %d changed the password; every login token revoked", job->uid);
    if (c && !err && c->uid == job->uid)
        explicit_bzero(c->token, sizeof c->token); /* revoked with every other token */
    if (c && err)
        reply_error(w, c, job->msgid, seq, err);
    else if (c && seq)
        reply_ack(w, c, job->msgid, seq, 0, 0, 0, 0);
    crypt_job_free(job);
    return true;
}

bool service_password_done(struct worker *w, struct conn *c, const struct crypt_job *job)
{
    const char *seq = job->has_seq ? job->seq : NULL;
    if (c->uid != job->uid || c->sgen == 0) {
        reply_error(w, c, job->msgid, seq, QC_ENOTLOGGEDIN); /* logged out meanwhile */
        return true;
    }
    if (!job->ok) {
        guard_login_failed(w->guard, c->ip_hash, job->uid, w->now_ms);
        reply_error(w, c, job->msgid, seq, QC_EAUTH);
        return true;
    }
    guard_login_succeeded(w->guard, c->ip_hash, job->uid);
    struct crypt_job *copy = malloc(sizeof *copy);
    int err = copy ? 0 : QC_EINTERNAL;
    if (copy) {
        *copy = *job;
        copy->next = NULL;
        explicit_bzero(copy->plain, sizeof copy->plain);
        explicit_bzero(copy->newplain, sizeof copy->newplain);
        if ((err = service_async(w, c, change_on_store, password_changed, copy)) != 0)
            crypt_job_free(copy);
    }
    if (err)
        reply_error(w, c, job->msgid, seq, err);
    return err != 0;
}

/* ---- the cluster's session registry (relay.c, sessreg.h) ----------------- */

static bool relay_linked(const struct worker *w)
{
    return w->clustered && w->peers[RELAY_PEER].ch.fd >= 0;
}

bool session_claim(struct worker *w, struct conn *c, uint32_t token)
{
    if (!relay_linked(w) || c->sgen == 0)
        return false;
    /*
     * takeover: the cluster generation decides (relay.c); the claim only
     * lists the session for DEVICES, and the login does not wait for it.
     */
    bool wait = configured_mode(w) != ONLINE_TAKEOVER;
    struct ipc_claim cl = { .uid = c->uid,
                            .token = wait ? token : 0,
                            .gen = c->sgen,
                            .mode = (uint32_t)configured_mode(w),
                            .max = (uint32_t)w->cfg.max_devices,
                            .named = c->device_named,
                            .since_ms = c->since_ms };
    return peer_send(w, RELAY_PEER, IPC_CLAIM, &cl, c->device, strlen(c->device)) == 0 && wait;
}

void session_registry_end(struct worker *w, int32_t uid, uint32_t gen)
{
    struct ipc_session s = { .uid = uid, .gen = gen };
    if (relay_linked(w))
        peer_send(w, RELAY_PEER, IPC_SESSION_END, &s, NULL, 0);
}

/* ---- asking the registry for an account's sessions ----------------------- */

typedef void (*devices_fn)(struct worker *w, void *arg, const char *tail, size_t len, bool failed);

/* A question to the relay, answered by IPC_DEVICES_REPLY with its token. */
struct devices_ask {
    struct devices_ask *next;
    uint32_t token;
    devices_fn fn;
    void *arg;
};

static struct devices_ask *asking; /* this worker's questions in flight */
static uint32_t next_ask_token;

/* Ask for uid's sessions cluster-wide; false when there is no relay to ask. */
static bool ask_devices(struct worker *w, int32_t uid, devices_fn fn, void *arg)
{
    if (!relay_linked(w))
        return false;
    struct devices_ask *a = calloc(1, sizeof *a);
    if (a == NULL)
        return false;
    a->token = ++next_ask_token ? next_ask_token : ++next_ask_token;
    a->fn = fn;
    a->arg = arg;
    struct ipc_query q = { .token = a->token, .uid = uid };
    if (peer_send(w, RELAY_PEER, IPC_DEVICES, &q, NULL, 0) < 0) {
        free(a);
        return false;
    }
    a->next = asking;
    asking = a;
    return true;
}

static void devices_answered(struct worker *w, uint32_t token, const char *tail, size_t len,
                             bool failed)
{
    for (struct devices_ask **pp = &asking; *pp; pp = &(*pp)->next) {
        struct devices_ask *a = *pp;
        if (a->token != token)
            continue;
        *pp = a->next;
        a->fn(w, a->arg, tail, len, failed);
        free(a);
        return;
    }
}

/* The relay went away: every question is answered as failed (the caller falls back). */
void session_devices_relay_lost(struct worker *w)
{
    while (asking) {
        struct devices_ask *a = asking;
        asking = a->next;
        a->fn(w, a->arg, NULL, 0, true);
        free(a);
    }
}

/* ---- presence across nodes: offline only when the last session anywhere ended ---- */

struct offline_check {
    int32_t uid;
    char name[QC_NAME_MAX + 1];
};

static void offline_checked(struct worker *w, void *arg, const char *tail, size_t len, bool failed)
{
    struct offline_check *o = arg;
    struct online_loc loc;
    (void)tail;
    /* Sessions elsewhere (len > 0), or one here again meanwhile: still online. */
    if ((failed || len == 0) && !online_lookup(w->online, o->uid, &loc))
        session_announce(w, o->uid, o->name, QC_STATE_OFFLINE);
    free(o);
}

void session_last_here_ended(struct worker *w, int32_t uid, const char *name)
{
    struct offline_check *o = calloc(1, sizeof *o);
    if (o == NULL) {
        session_announce(w, uid, name, QC_STATE_OFFLINE);
        return;
    }
    o->uid = uid;
    strlcpy(o->name, name, sizeof o->name);
    if (!ask_devices(w, uid, offline_checked, o)) {
        session_announce(w, uid, name, QC_STATE_OFFLINE);
        free(o);
    }
}

/* ---- DEVICES_MSG 49 ------------------------------------------------------ */

/* A DEVICES_MSG waiting for the registry (the connection is parked). */
struct devices_req {
    uint32_t slot, cgen;
    int32_t uid;
    uint32_t sgen;
    char seq[QC_SEQ_MAX + 1];
    bool has_seq;
};

static void device_item(struct buf *b, const char *device, size_t dlen, int64_t since_ms, bool self,
                        int *rc)
{
    *rc |= buf_used(b) > 1 ? buf_append_char(b, ',') : 0;
    *rc |= buf_append_str(b, "{\"device\":");
    *rc |= json_append_string(b, device, dlen);
    *rc |= buf_printf(b, ",\"since\":%lld,\"this\":%s}", (long long)(since_ms / 1000),
                      self ? "true" : "false");
}

/* The registry's records: {node, gen, since, device_len} + device, one after another. */
static int list_from_registry(struct worker *w, struct conn *c, const char *tail, size_t len,
                              struct buf *items)
{
    int rc = buf_append_char(items, '[');
    size_t at = 0;
    while (at + sizeof(struct ipc_device) <= len) {
        struct ipc_device d;
        memcpy(&d, tail + at, sizeof d);
        at += sizeof d;
        if (d.device_len > len - at)
            break;
        bool self = d.node == w->cfg.node_id && d.gen == c->sgen;
        device_item(items, tail + at, d.device_len, d.since_ms, self, &rc);
        at += d.device_len;
    }
    return rc | buf_append_char(items, ']');
}

/*
 * Without the registry: the sessions of this node, on every worker, with
 * the device and login time each login left beside its online-table entry.
 */
static int list_from_node(struct worker *w, struct conn *c, struct buf *items)
{
    struct online_loc locs[ONLINE_USER_MAX];
    struct online_note notes[ONLINE_USER_MAX];
    size_t n = online_sessions_noted(w->online, c->uid, locs, notes, ONLINE_USER_MAX);
    int rc = buf_append_char(items, '[');
    for (size_t i = 0; i < n; i++) {
        bool self = locs[i].worker == w->index && locs[i].slot == c->slot && locs[i].gen == c->sgen;
        device_item(items, notes[i].device, strnlen(notes[i].device, QC_DEVICE_MAX),
                    notes[i].since_ms, self, &rc);
    }
    return rc | buf_append_char(items, ']');
}

static void send_devices(struct worker *w, struct conn *c, const char *seq, struct buf *items,
                         int rc)
{
    if (rc < 0) {
        reply_error(w, c, QC_DEVICES_MSG, seq, QC_EINTERNAL);
        return;
    }
    struct buf b = worker_buf_take(w);
    struct jsonw jw;
    jsonw_begin(&jw, &b);
    jsonw_int(&jw, "msgid", QC_DEVICES_MSG_ACK);
    jsonw_int(&jw, "errno", 0);
    if (seq)
        jsonw_raw(&jw, "seq", seq, strlen(seq));
    jsonw_raw(&jw, "devices", buf_head(items), buf_used(items));
    reply_finish(w, c, &b, &jw);
}

static void devices_listed(struct worker *w, void *arg, const char *tail, size_t len, bool failed)
{
    struct devices_req *q = arg;
    struct conn *c = worker_conn(w, q->slot);
    if (c && c->cgen == q->cgen && c->state == CONN_OPEN) {
        const char *seq = q->has_seq ? q->seq : NULL;
        struct buf items;
        buf_init(&items);
        if (c->uid != q->uid || c->sgen != q->sgen)
            reply_error(w, c, QC_DEVICES_MSG, seq, QC_ENOTLOGGEDIN);
        else if (failed) /* Redis away: this node's sessions */
            send_devices(w, c, seq, &items, list_from_node(w, c, &items));
        else
            send_devices(w, c, seq, &items, list_from_registry(w, c, tail, len, &items));
        buf_free(&items);
        conn_resume(w, c);
    }
    free(q);
}

void service_devices(struct worker *w, struct conn *c, const char *seq)
{
    struct devices_req *q = calloc(1, sizeof *q);
    if (q != NULL) {
        *q = (struct devices_req){
            .slot = c->slot, .cgen = c->cgen, .uid = c->uid, .sgen = c->sgen
        };
        if (seq) {
            strlcpy(q->seq, seq, sizeof q->seq);
            q->has_seq = true;
        }
        if (ask_devices(w, c->uid, devices_listed, q)) {
            c->busy = true; /* later requests wait for the answer, in order */
            return;
        }
        free(q);
    }
    struct buf items;
    buf_init(&items);
    send_devices(w, c, seq, &items, list_from_node(w, c, &items));
    buf_free(&items);
}

void service_session_install(struct worker *w)
{
    w->hooks.devices_done = devices_answered;
}
