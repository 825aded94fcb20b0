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
#include "server/route.h"
#include "server/service.h"
#include "server/worker.h"

#define GROUP_BATCH_MIN 64      /* initial room for a group's member ids */

/* One request being handled: the envelope fields every handler needs. */
struct request {
    struct json_object *obj;
    int         msgid;
    const char *seq;            /* serialized seq, NULL when absent */
    char        seqbuf[QC_SEQ_MAX + 1];
};

/* ---- replies ------------------------------------------------------------ */

static void finish_reply(struct worker *w, struct conn *c, struct buf *b, struct jsonw *jw)
{
    if (jsonw_end(jw) == 0 && buf_append_char(b, '\n') == 0)
        conn_send(w, c, buf_head(b), buf_used(b));
    else
        log_error("out of memory building a reply");
    buf_free(b);
}

void service_send_ack(struct worker *w, struct conn *c, int req_msgid, const char *seq,
                      int err, int64_t mid, int32_t groupid)
{
    struct buf b;
    struct jsonw jw;
    buf_init(&b);
    jsonw_begin(&jw, &b);
    jsonw_int(&jw, "msgid", QC_ACK_MSG);
    jsonw_int(&jw, "errno", err);
    jsonw_str(&jw, "errmsg", err ? qc_strerror(err) : "ok");
    jsonw_int(&jw, "req", req_msgid);
    if (seq)
        jsonw_raw(&jw, "seq", seq, strlen(seq));
    if (mid)
        jsonw_int(&jw, "mid", mid);
    if (groupid)
        jsonw_int(&jw, "groupid", groupid);
    finish_reply(w, c, &b, &jw);
}

void service_send_kick(struct worker *w, struct conn *c, const char *reason)
{
    struct buf b;
    struct jsonw jw;
    buf_init(&b);
    jsonw_begin(&jw, &b);
    jsonw_int(&jw, "msgid", QC_KICK_MSG);
    jsonw_str(&jw, "reason", reason);
    finish_reply(w, c, &b, &jw);
}

/* The seed answers LOGIN with 2 and REG with 4; everything else gets an ACK. */
static void reply_error(struct worker *w, struct conn *c, const struct request *r, int err)
{
    if (r->msgid == QC_LOGIN_MSG || r->msgid == QC_REG_MSG) {
        struct buf b;
        struct jsonw jw;
        buf_init(&b);
        jsonw_begin(&jw, &b);
        jsonw_int(&jw, "msgid", r->msgid == QC_LOGIN_MSG ? QC_LOGIN_MSG_ACK : QC_REG_MSG_ACK);
        jsonw_int(&jw, "errno", err);
        jsonw_str(&jw, "errmsg", qc_strerror(err));
        if (r->seq)
            jsonw_raw(&jw, "seq", r->seq, strlen(r->seq));
        finish_reply(w, c, &b, &jw);
        return;
    }
    service_send_ack(w, c, r->msgid, r->seq, err, 0, 0);
}

/* Outcome of a request that has no delivery to wait for. */
static void reply_result(struct worker *w, struct conn *c, const struct request *r, int err,
                         int32_t groupid)
{
    if (err)
        reply_error(w, c, r, err);
    else if (r->seq)
        service_send_ack(w, c, r->msgid, r->seq, 0, 0, groupid);
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

static const char *state_of(struct worker *w, int32_t uid)
{
    struct online_loc loc;
    return online_lookup(w->online, uid, &loc) ? QC_STATE_ONLINE : QC_STATE_OFFLINE;
}

/* ---- presence ----------------------------------------------------------- */

struct id_list {
    int32_t *ids;
    size_t   n, cap;
    int      err;
};

static void id_list_push(struct id_list *l, int32_t id)
{
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : GROUP_BATCH_MIN;
        int32_t *p = realloc(l->ids, ncap * sizeof *p);
        if (p == NULL) {
            l->err = QC_EINTERNAL;
            return;
        }
        l->ids = p;
        l->cap = ncap;
    }
    l->ids[l->n++] = id;
}

static void collect_online_friend(void *arg, int32_t id, const char *name)
{
    struct worker *w = ((void **)arg)[0];
    struct id_list *l = ((void **)arg)[1];
    (void)name;
    struct online_loc loc;
    if (online_lookup(w->online, id, &loc))
        id_list_push(l, id);
}

/* Tell online friends (who asked for it) that uid came or went. */
static void announce_presence(struct worker *w, int32_t uid, const char *name, const char *state)
{
    struct id_list friends = { 0 };
    void *arg[2] = { w, &friends };
    if (w->st->friend_list(w->store, uid, collect_online_friend, arg) != 0 || friends.n == 0) {
        free(friends.ids);
        return;
    }
    struct buf b;
    struct jsonw jw;
    buf_init(&b);
    jsonw_begin(&jw, &b);
    jsonw_int(&jw, "msgid", QC_PRESENCE_MSG);
    jsonw_int(&jw, "id", uid);
    jsonw_str(&jw, "name", name);
    jsonw_str(&jw, "state", state);
    if (jsonw_end(&jw) == 0 && buf_append_char(&b, '\n') == 0)
        for (size_t i = 0; i < friends.n; i++)
            route_notice(w, friends.ids[i], buf_head(&b), buf_used(&b));
    buf_free(&b);
    free(friends.ids);
}

/* ---- sessions ----------------------------------------------------------- */

void service_end_session(struct worker *w, struct conn *c)
{
    if (c->sgen == 0)
        return;
    int32_t uid = c->uid;
    bool removed = online_remove(w->online, uid, c->sgen);
    c->sgen = 0;
    c->uid = 0;
    c->presence = false;
    w->stats->sessions--;
    if (removed)
        announce_presence(w, uid, c->name, QC_STATE_OFFLINE);
    log_debug("user %d: session ended on conn %u", uid, c->slot);
}

void service_kick_session(struct worker *w, int32_t uid, uint32_t slot, uint32_t gen,
                          const char *reason)
{
    struct conn *c = worker_conn(w, slot);
    if (c == NULL || c->state != CONN_OPEN || c->uid != uid || c->sgen != gen)
        return;
    log_info("user %d: session on conn %u ended (%s)", uid, slot, reason);
    service_send_kick(w, c, reason);
    conn_close_gracefully(w, c);
}

/* ---- LOGIN -------------------------------------------------------------- */

struct login_reply {
    struct worker *w;
    struct jsonw  *jw;
    struct buf    *item;          /* scratch for one nested object */
    struct buf     stash;         /* offline messages, one per line */
    int            count;
    int            err;
};

static void begin_item(struct login_reply *lr, struct jsonw *iw)
{
    buf_reset(lr->item);
    jsonw_begin(iw, lr->item);
}

static void end_item(struct login_reply *lr, struct jsonw *iw)
{
    if (jsonw_end(iw) < 0) {
        lr->err = QC_EINTERNAL;
        return;
    }
    jsonw_array_str(lr->jw, buf_head(lr->item), buf_used(lr->item));
}

static void add_offline_msg(void *arg, const char *msg, size_t len)
{
    struct login_reply *lr = arg;
    size_t at = buf_used(&lr->stash);
    if (buf_append(&lr->stash, msg, len) < 0 || buf_append_char(&lr->stash, '\n') < 0) {
        lr->err = QC_EINTERNAL;
        return;
    }
    /* A raw newline in JSON text is whitespace: a space keeps the stash one line per message. */
    for (char *p = buf_head(&lr->stash) + at, *end = p + len; p < end; p++)
        if (*p == '\n')
            *p = ' ';
    lr->count++;
}

static void add_friend_item(void *arg, int32_t id, const char *name)
{
    struct login_reply *lr = arg;
    struct jsonw iw;
    begin_item(lr, &iw);
    jsonw_int(&iw, "id", id);
    jsonw_str(&iw, "name", name);
    jsonw_str(&iw, "state", state_of(lr->w, id));
    end_item(lr, &iw);
}

struct group_row {
    int32_t id;
    char   *name;
    char   *desc;
};

struct group_rows {
    struct group_row *rows;
    size_t n, cap;
    int err;
};

static void collect_group(void *arg, int32_t groupid, const char *name, const char *desc)
{
    struct group_rows *g = arg;
    if (g->n == g->cap) {
        size_t ncap = g->cap ? g->cap * 2 : 8;
        struct group_row *p = realloc(g->rows, ncap * sizeof *p);
        if (p == NULL) {
            g->err = QC_EINTERNAL;
            return;
        }
        g->rows = p;
        g->cap = ncap;
    }
    struct group_row *row = &g->rows[g->n];
    row->id = groupid;
    row->name = strdup(name);
    row->desc = strdup(desc ? desc : "");
    if (row->name == NULL || row->desc == NULL) {
        free(row->name);
        free(row->desc);
        g->err = QC_EINTERNAL;
        return;
    }
    g->n++;
}

static void free_group_rows(struct group_rows *g)
{
    for (size_t i = 0; i < g->n; i++) {
        free(g->rows[i].name);
        free(g->rows[i].desc);
    }
    free(g->rows);
}

struct member_items {
    struct login_reply *lr;
    struct jsonw       *gw;       /* the group object being written */
    struct buf         *user;     /* scratch for one member */
};

static void add_member_item(void *arg, int32_t userid, const char *name, const char *role)
{
    struct member_items *mi = arg;
    struct jsonw uw;
    buf_reset(mi->user);
    jsonw_begin(&uw, mi->user);
    jsonw_int(&uw, "id", userid);
    jsonw_int(&uw, "userid", userid);
    jsonw_str(&uw, "name", name);
    jsonw_str(&uw, "state", state_of(mi->lr->w, userid));
    jsonw_str(&uw, "role", role);
    if (jsonw_end(&uw) < 0) {
        mi->lr->err = QC_EINTERNAL;
        return;
    }
    jsonw_array_str(mi->gw, buf_head(mi->user), buf_used(mi->user));
}

/* groups[]: one JSON string per group, each with its members as strings. */
static int add_groups(struct worker *w, struct login_reply *lr, int32_t uid)
{
    struct group_rows g = { 0 };
    int err = w->st->user_groups(w->store, uid, collect_group, &g);
    if (err || g.err || g.n == 0) {
        free_group_rows(&g);
        return err ? err : g.err;
    }
    struct buf user;
    buf_init(&user);
    jsonw_array_begin(lr->jw, "groups");
    for (size_t i = 0; i < g.n && !err; i++) {
        struct jsonw gw;
        begin_item(lr, &gw);
        jsonw_int(&gw, "id", g.rows[i].id);
        jsonw_int(&gw, "groupid", g.rows[i].id);
        jsonw_str(&gw, "groupname", g.rows[i].name);
        jsonw_str(&gw, "groupdesc", g.rows[i].desc);
        jsonw_array_begin(&gw, "users");
        struct member_items mi = { lr, &gw, &user };
        err = w->st->group_members(w->store, g.rows[i].id, add_member_item, &mi);
        if (err == QC_ENOGROUP)
            err = 0;                 /* deleted meanwhile: list it empty */
        jsonw_array_end(&gw);
        end_item(lr, &gw);
    }
    jsonw_array_end(lr->jw);
    buf_free(&user);
    free_group_rows(&g);
    return err;
}

static void friend_counter(void *arg, int32_t id, const char *name)
{
    (void)id;
    (void)name;
    ++*(int *)arg;
}

static int add_friends(struct worker *w, struct login_reply *lr, int32_t uid)
{
    int n = 0;
    int err = w->st->friend_list(w->store, uid, friend_counter, &n);
    if (err || n == 0)
        return err;
    jsonw_array_begin(lr->jw, "friends");
    err = w->st->friend_list(w->store, uid, add_friend_item, lr);
    jsonw_array_end(lr->jw);
    return err;
}

/* Make (uid) this connection's session; the previous session, anywhere on the node, is kicked. */
static int open_session(struct worker *w, struct conn *c, const struct store_user *u,
                        bool presence)
{
    struct online_loc loc = { .worker = w->index, .slot = c->slot,
                              .gen = online_next_gen(w->online) };
    struct online_loc prev;
    int rc = online_insert(w->online, u->id, &loc, &prev);
    if (rc < 0)
        return QC_ELIMIT;
    c->uid = u->id;
    c->sgen = loc.gen;
    c->presence = presence;
    c->deadline = 0;
    strlcpy(c->name, u->name, sizeof c->name);
    w->stats->sessions++;
    if (rc == 1)
        route_kick(w, u->id, prev.worker, prev.slot, prev.gen);
    return 0;
}

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
    if (c->sgen) {
        wipe_field(r, "password");
        reply_error(w, c, r, QC_EALREADYIN);
        return;
    }
    int err = get_id(r, "id", &id);
    if (!err)
        err = get_text(r, "password", 0, QC_PASSWORD_MAX, &pw, &pwlen);
    if (err == QC_ETOOLONG)
        err = QC_EAUTH;
    if (!err) {
        err = w->st->user_get(w->store, id, &u);
        if (err == QC_ENOUSER) {
            u.id = 0;
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
        reply_error(w, c, r, err);
        return;
    }
    struct json_object *v;
    job->presence = json_object_object_get_ex(r->obj, "presence", &v) &&
                    json_object_get_boolean(v);
    job->uid = u.id;
    strlcpy(job->name, u.name, sizeof job->name);
    strlcpy(job->stored, u.password, sizeof job->stored);
    explicit_bzero(u.password, sizeof u.password);
    c->busy = true;
    crypt_pool_submit(w, job);
}

/* LOGIN, second half: the password was checked off the loop. */
static void finish_login(struct worker *w, struct conn *c, const struct crypt_job *job)
{
    struct request rq, *r = &rq;
    request_of_job(job, r);
    if (!job->ok || job->uid == 0) {
        log_info("login failed on conn %u", c->slot);
        reply_error(w, c, r, QC_EAUTH);
        return;
    }
    if (c->sgen) {
        reply_error(w, c, r, QC_EALREADYIN);
        return;
    }
    if (job->upgraded && w->st->user_set_password(w->store, job->uid, job->hash) == 0)
        log_info("user %d: seed plaintext password replaced by a hash", job->uid);
    struct store_user u = { .id = job->uid };
    strlcpy(u.name, job->name, sizeof u.name);
    int err = open_session(w, c, &u, job->presence);
    if (err) {
        reply_error(w, c, r, err);
        return;
    }

    struct buf b, item;
    struct jsonw jw;
    buf_init(&b);
    buf_init(&item);
    struct login_reply lr = { .w = w, .jw = &jw, .item = &item };
    buf_init(&lr.stash);
    jsonw_begin(&jw, &b);
    jsonw_int(&jw, "msgid", QC_LOGIN_MSG_ACK);
    jsonw_int(&jw, "errno", 0);
    jsonw_int(&jw, "id", u.id);
    jsonw_str(&jw, "name", u.name);
    if (r->seq)
        jsonw_raw(&jw, "seq", r->seq, strlen(r->seq));
    err = add_friends(w, &lr, u.id);
    if (!err)
        err = add_groups(w, &lr, u.id);
    int dropped = 0;
    if (!err)   /* taken last: once deleted from storage, the messages ride in the stash */
        err = w->st->offline_take(w->store, u.id, add_offline_msg, &lr, &dropped);
    if (!err && lr.count > 0) {
        jsonw_array_begin(&jw, "offlinemsg");
        for (const char *p = buf_head(&lr.stash), *end = p + buf_used(&lr.stash); p < end; ) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            jsonw_array_str(&jw, p, (size_t)(nl - p));
            p = nl + 1;
        }
        jsonw_array_end(&jw);
    }
    if (dropped > 0)
        jsonw_int(&jw, "offlinedropped", dropped);
    if (!err && (lr.err || jsonw_end(&jw) < 0 || buf_append_char(&b, '\n') < 0))
        err = QC_EINTERNAL;
    if (err) {
        /* Nothing was sent: undo the session and restore what was taken. */
        if (lr.count > 0 && buf_append_char(&lr.stash, '\0') == 0)
            route_restore_stash(w, u.id, buf_head(&lr.stash));
        buf_free(&lr.stash);
        service_end_session(w, c);
        reply_error(w, c, r, err);
    } else {
        char *stash = NULL;
        if (lr.count > 0 && buf_append_char(&lr.stash, '\0') == 0) {
            stash = lr.stash.data;        /* conn takes it */
            buf_init(&lr.stash);
        }
        buf_free(&lr.stash);
        conn_send_stashed(w, c, u.id, buf_head(&b), buf_used(&b), stash);
        log_info("user %d logged in on conn %u (%d offline message(s))", u.id, c->slot, lr.count);
        announce_presence(w, u.id, u.name, QC_STATE_ONLINE);
    }
    buf_free(&b);
    buf_free(&item);
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
    struct crypt_job *job = err ? NULL : new_job(w, c, r, CRYPT_HASH, pw);
    wipe_field(r, "password");
    if (!err && job == NULL)
        err = QC_EINTERNAL;
    if (err) {
        reply_error(w, c, r, err);
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
        reply_error(w, c, r, err);
        return;
    }
    struct buf b;
    struct jsonw jw;
    buf_init(&b);
    jsonw_begin(&jw, &b);
    jsonw_int(&jw, "msgid", QC_REG_MSG_ACK);
    jsonw_int(&jw, "errno", 0);
    jsonw_int(&jw, "id", id);
    if (r->seq)
        jsonw_raw(&jw, "seq", r->seq, strlen(r->seq));
    finish_reply(w, c, &b, &jw);
    log_info("user %d registered", id);
}

void service_crypt_done(struct worker *w, struct crypt_job *job)
{
    struct conn *c = worker_conn(w, job->slot);
    if (c == NULL || c->cgen != job->cgen || c->state != CONN_OPEN)
        return;                      /* the client left meanwhile */
    if (job->kind == CRYPT_VERIFY)
        finish_login(w, c, job);
    else
        finish_register(w, c, job);
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

static int store_for_existing_user(struct worker *w, int32_t uid, const char *p, size_t n)
{
    struct store_user u;
    int err = w->st->user_get(w->store, uid, &u);
    explicit_bzero(u.password, sizeof u.password);
    return err ? err : route_store_offline(w, uid, p, n);
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
        reply_error(w, c, r, err);
        return;
    }
    struct buf b;
    int64_t mid;
    buf_init(&b);
    if ((err = build_chat(w, c, &b, QC_ONE_CHAT_MSG, to, text, len, &mid)) != 0) {
        buf_free(&b);
        reply_error(w, c, r, err);
        return;
    }
    uint32_t req = pending_open(w, c, r->msgid, r->seq);
    pending_set_mid(w, req, mid);
    if (route_chat(w, to, buf_head(&b), buf_used(&b), req) == ROUTE_OFFLINE)
        err = store_for_existing_user(w, to, buf_head(&b), buf_used(&b));
    if (req)
        pending_done(w, req, err);
    else
        reply_result(w, c, r, err, 0);
    buf_free(&b);
}

struct group_fanout {
    int32_t        sender;
    bool           member;
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
    struct buf b;
    int64_t mid;
    buf_init(&b);
    if (!err)
        err = build_chat(w, c, &b, QC_GROUP_CHAT_MSG, gid, text, len, &mid);
    if (err) {
        free(g.members.ids);
        buf_free(&b);
        reply_error(w, c, r, err);
        return;
    }
    uint32_t req = pending_open(w, c, r->msgid, r->seq);
    pending_set_mid(w, req, mid);
    /* Online members get it now; the others in one batched store. */
    size_t offline = 0;
    for (size_t i = 0; i < g.members.n; i++)
        if (route_chat(w, g.members.ids[i], buf_head(&b), buf_used(&b), req) == ROUTE_OFFLINE)
            g.members.ids[offline++] = g.members.ids[i];
    if (offline > 0) {
        err = w->st->offline_store(w->store, g.members.ids, offline, buf_head(&b), buf_used(&b));
        if (err)
            log_error("group %d: storing for %zu offline member(s) failed: %s",
                      gid, offline, qc_strerror(err));
        else
            w->stats->offline_stored += offline;
    }
    if (req)
        pending_done(w, req, err);
    else
        reply_result(w, c, r, err, 0);
    free(g.members.ids);
    buf_free(&b);
}

/* ---- friends and groups ------------------------------------------------- */

static void handle_add_friend(struct worker *w, struct conn *c, const struct request *r)
{
    int32_t fid;
    int count = 0;
    int err = get_id(r, "friendid", &fid);
    if (!err && fid == c->uid)
        err = QC_ESELF;
    if (!err)
        err = w->st->friend_count(w->store, c->uid, &count);
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
    service_end_session(w, c);
    reply_result(w, c, r, 0, 0);
}

static void handle_heartbeat(struct worker *w, struct conn *c, const struct request *r)
{
    service_send_ack(w, c, r->msgid, r->seq, 0, 0, 0);
}

/* ---- dispatch ----------------------------------------------------------- */

typedef void (*handler_fn)(struct worker *, struct conn *, const struct request *);

static const struct {
    handler_fn fn;
    bool       needs_session;
} handlers[QC_MSGID_MAX + 1] = {
    [QC_LOGIN_MSG]        = { handle_login, false },
    [QC_REG_MSG]          = { handle_register, false },
    [QC_ONE_CHAT_MSG]     = { handle_one_chat, true },
    [QC_ADD_FRIEND_MSG]   = { handle_add_friend, true },
    [QC_CREATE_GROUP_MSG] = { handle_create_group, true },
    [QC_ADD_GROUP_MSG]    = { handle_add_group, true },
    [QC_GROUP_CHAT_MSG]   = { handle_group_chat, true },
    [QC_LOGINOUT_MSG]     = { handle_loginout, true },
    [QC_HEARTBEAT_MSG]    = { handle_heartbeat, false },
};

/* "seq" is echoed verbatim: an integer or a short string. */
static int read_seq(struct request *r)
{
    struct json_object *v;
    if (!json_object_object_get_ex(r->obj, "seq", &v))
        return 0;
    if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_string))
        return QC_EBADREQ;
    const char *s = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN |
                                                      JSON_C_TO_STRING_NOSLASHESCAPE);
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
    return true;
}

void service_dispatch(struct worker *w, struct conn *c, struct json_object *obj)
{
    struct request r = { .obj = obj };
    struct json_object *v;
    w->stats->msgs_in++;
    if (!json_object_object_get_ex(obj, "msgid", &v) || !json_object_is_type(v, json_type_int)) {
        read_seq(&r);
        reply_error(w, c, &r, QC_EBADREQ);
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
    if (!err && !within_rate(w, c))
        err = QC_ERATE;
    if (err) {
        if (r.msgid == QC_LOGIN_MSG || r.msgid == QC_REG_MSG)
            wipe_field(&r, "password");
        reply_error(w, c, &r, err);
        return;
    }
    handlers[r.msgid].fn(w, c, &r);
}
