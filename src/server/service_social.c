/*
 * service_social.c - the handlers of friendship, blocking and group
 * administration (issue 12): ADD_FRIEND 6 (with [social] friend_consent),
 * CREATE_GROUP 7 and ADD_GROUP 8 (limits.max_groups), FRIEND_LIST 30,
 * FRIEND_REMOVE 32, BLOCK 33, UNBLOCK 34, FRIEND_DECLINE 36,
 * GROUP_MEMBERS 40, and GROUP_LEAVE / KICK / ROLE / UPDATE / DELETE 42-46.
 *
 * Every store call runs on the worker's storage thread (storage_submit):
 * a handler validates the fields into a job, marks the connection busy (it
 * reads no further request, so replies keep request order), and the job's
 * done callback answers once the store has.  The callback re-checks that
 * the connection is still the one that asked (slot + generation) before
 * answering.  The rules themselves (roles, consent, blocks) live in the
 * store (store/social.h); this file maps their outcome to replies and to
 * the pushes FRIEND_REQUEST 35 and GROUP_EVENT 47, which go through
 * route_notice: across workers and nodes, to sessions that asked for
 * notices at login.
 */
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "common/jsonw.h"
#include "common/log.h"
#include "server/blockcache.h"
#include "server/conn.h"
#include "server/presence.h"
#include "server/reply.h"
#include "server/request.h"
#include "server/route.h"
#include "server/seqtab.h"
#include "server/service_social.h"
#include "server/session.h"
#include "server/storage.h"
#include "server/worker.h"
#include "store/social.h"

#define SOCIAL_LOG_DELETE_BATCH 500 /* log rows removed per conv_delete call */

enum social_op {
    OP_ADD_FRIEND,
    OP_FRIEND_LIST,
    OP_FRIEND_REMOVE,
    OP_BLOCK,
    OP_UNBLOCK,
    OP_DECLINE,
    OP_LOAD_BLOCKS, /* a session started: its blocks for blockcache.c */
    OP_CREATE_GROUP,
    OP_ADD_GROUP,
    OP_MEMBERS,
    OP_LEAVE,
    OP_KICK,
    OP_ROLE,
    OP_UPDATE,
    OP_DELETE,
};

/* A user as a list holds it (copied out of the store's callbacks). */
struct person {
    int32_t id;
    char name[QC_NAME_MAX + 1];
    char role[SOCIAL_ROLE_MAX + 1];
};

struct people {
    struct person *v;
    size_t n, cap;
    int err;
};

enum { LIST_FRIENDS, LIST_IN, LIST_OUT, LIST_BLOCKED, LIST_COUNT };

/* One request's store work and its outcome, from the handler to the callback. */
struct social_job {
    struct worker *w;
    const struct social_ops *so;
    enum social_op op;
    uint32_t slot, cgen, sgen;
    int32_t uid;
    char uname[QC_NAME_MAX + 1];
    int msgid;
    char seq[QC_SEQ_MAX + 1];
    bool has_seq;

    /* request */
    int32_t target; /* friendid / userid */
    int32_t gid;
    bool consent;
    int max_friends, max_groups, max_members;
    char role[SOCIAL_ROLE_MAX + 1];
    char *gname, *gdesc; /* NULL: not given */

    /* outcome */
    int outcome; /* enum social_request_outcome */
    struct social_leave leave;
    char target_name[QC_NAME_MAX + 1];
    struct people lists[LIST_COUNT]; /* LIST_FRIENDS also holds a group's members */
    struct presence_set state;       /* FRIEND_LIST, MEMBERS: who is online elsewhere */
};

/* ---- lists -------------------------------------------------------------- */

static void people_add(struct people *l, int32_t id, const char *name, const char *role)
{
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 16;
        struct person *p = realloc(l->v, ncap * sizeof *p);
        if (p == NULL) {
            l->err = QC_EINTERNAL;
            return;
        }
        l->v = p;
        l->cap = ncap;
    }
    struct person *p = &l->v[l->n++];
    p->id = id;
    strlcpy(p->name, name ? name : "", sizeof p->name);
    strlcpy(p->role, role ? role : "", sizeof p->role);
}

static void collect_user(void *arg, int32_t id, const char *name)
{
    people_add(arg, id, name, NULL);
}

static void collect_member(void *arg, int32_t id, const char *name, const char *role)
{
    people_add(arg, id, name, role);
}

static bool people_has(const struct people *l, int32_t id)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].id == id)
            return true;
    return false;
}

static void job_free(struct social_job *j)
{
    for (int i = 0; i < LIST_COUNT; i++)
        free(j->lists[i].v);
    free(j->gname);
    free(j->gdesc);
    presence_free(&j->state);
    free(j);
}

/* ---- on the storage thread ---------------------------------------------- */

static int read_members(struct social_job *j, struct store *st)
{
    int err = j->so->group_members(st, j->gid, collect_member, &j->lists[LIST_FRIENDS]);
    return err ? err : j->lists[LIST_FRIENDS].err;
}

static int check_group_room(struct social_job *j, const struct store_ops *ops, struct store *st)
{
    int count = 0;
    int err = j->so->group_count(st, j->uid, &count);
    if (!err && count >= j->max_groups)
        err = QC_ELIMIT;
    if (!err && j->op == OP_ADD_GROUP) {
        err = ops->group_member_count(st, j->gid, &count);
        if (!err && count >= j->max_members)
            err = QC_ELIMIT;
    }
    return err;
}

/*
 * A deleted group's log goes with it, one batch per storage job: the appends
 * queued behind it wait for one batch at most, not for the whole log.  The
 * job resubmits itself from the worker's thread while batches come back full;
 * a batch that failed or found the queue full waits for the next tick
 * (social_tick), so the log is not left behind by a busy or absent store.
 */
struct log_delete {
    struct log_delete *next; /* waiting for the next tick */
    struct worker *w;
    int32_t gid;
    int removed;
    bool warned; /* the failure was logged once */
};

static struct log_delete *log_delete_waiting; /* this worker's deletions to try again */

static int run_log_delete(const struct store_ops *ops, struct store *st, void *arg)
{
    struct log_delete *d = arg;
    return ops->conv_delete(st, store_conv_group(d->gid), SOCIAL_LOG_DELETE_BATCH, &d->removed);
}

static void log_delete_done(void *arg, int err);

static bool submit_log_delete(struct log_delete *d)
{
    return storage_submit(d->w->storage, run_log_delete, log_delete_done, d) == QC_OK;
}

static void wait_for_next_tick(struct log_delete *d)
{
    d->next = log_delete_waiting;
    log_delete_waiting = d;
}

static void log_delete_done(void *arg, int err)
{
    struct log_delete *d = arg;
    if (err) {
        if (!d->warned)
            log_warning("group %d: deleting its log failed (%s); trying again each tick", d->gid,
                        qc_strerror(err));
        d->warned = true;
        wait_for_next_tick(d);
        return;
    }
    if (d->removed == SOCIAL_LOG_DELETE_BATCH) {
        if (!submit_log_delete(d))
            wait_for_next_tick(d); /* storage queue full */
        return;
    }
    if (d->w->seqtab)
        seqtab_forget(d->w->seqtab, store_conv_group(d->gid));
    free(d);
}

static void delete_group_log(struct worker *w, int32_t gid)
{
    struct log_delete *d = calloc(1, sizeof *d);
    if (d == NULL) {
        log_error("group %d: out of memory: its log stays", gid);
        return;
    }
    *d = (struct log_delete){ .w = w, .gid = gid };
    if (!submit_log_delete(d))
        wait_for_next_tick(d);
}

void social_tick(struct worker *w)
{
    struct log_delete *d = log_delete_waiting;
    log_delete_waiting = NULL;
    while (d != NULL) {
        struct log_delete *next = d->next;
        if (!submit_log_delete(d))
            wait_for_next_tick(d);
        d = next;
    }
}

static int run_friend_op(struct social_job *j, const struct store_ops *ops, struct store *st)
{
    switch (j->op) {
    case OP_ADD_FRIEND: {
        int err = j->consent
                      ? j->so->friend_request(st, j->uid, j->target, j->max_friends, &j->outcome)
                      : j->so->friend_add(st, j->uid, j->target, j->max_friends);
        struct store_user u;
        if (!err && ops->user_get(st, j->target, &u) == 0) {
            strlcpy(j->target_name, u.name, sizeof j->target_name);
            explicit_bzero(u.password, sizeof u.password);
        }
        return err;
    }
    case OP_FRIEND_LIST: {
        int err = j->so->friends(st, j->uid, collect_user, &j->lists[LIST_FRIENDS]);
        if (!err)
            err = j->so->requests_in(st, j->uid, collect_user, &j->lists[LIST_IN]);
        if (!err)
            err = j->so->requests_out(st, j->uid, collect_user, &j->lists[LIST_OUT]);
        if (!err)
            err = j->so->blocked_list(st, j->uid, collect_user, &j->lists[LIST_BLOCKED]);
        for (int i = 0; i < LIST_COUNT && !err; i++)
            err = j->lists[i].err;
        return err;
    }
    case OP_FRIEND_REMOVE: return j->so->friend_remove(st, j->uid, j->target);
    case OP_BLOCK: return j->so->block(st, j->uid, j->target);
    case OP_UNBLOCK: return j->so->unblock(st, j->uid, j->target);
    case OP_DECLINE: return j->so->friend_decline(st, j->uid, j->target);
    case OP_LOAD_BLOCKS: {
        int err = j->so->blocked_list(st, j->uid, collect_user, &j->lists[LIST_BLOCKED]);
        if (!err)
            err = j->so->blocked_by(st, j->uid, collect_user, &j->lists[LIST_IN]);
        if (!err)
            err = j->lists[LIST_BLOCKED].err ? j->lists[LIST_BLOCKED].err : j->lists[LIST_IN].err;
        return err;
    }
    default: return QC_EINTERNAL;
    }
}

static int run_group_op(struct social_job *j, const struct store_ops *ops, struct store *st)
{
    int err;
    switch (j->op) {
    case OP_CREATE_GROUP:
        err = check_group_room(j, ops, st);
        return err ? err
                   : ops->group_create(st, j->gname, j->gdesc ? j->gdesc : "", j->uid, &j->gid);
    case OP_ADD_GROUP:
        err = check_group_room(j, ops, st);
        if (!err)
            err = ops->group_join(st, j->gid, j->uid);
        return err ? err : read_members(j, st);
    case OP_MEMBERS:
        err = read_members(j, st);
        return !err && !people_has(&j->lists[LIST_FRIENDS], j->uid) ? QC_ENOTMEMBER : err;
    case OP_LEAVE:
        err = read_members(j, st);
        if (!err)
            err = j->so->group_leave(st, j->gid, j->uid, &j->leave);
        return err;
    case OP_KICK:
        err = read_members(j, st);
        return err ? err : j->so->group_kick(st, j->gid, j->uid, j->target);
    case OP_ROLE:
        err = j->so->group_set_role(st, j->gid, j->uid, j->target, j->role);
        return err ? err : read_members(j, st);
    case OP_UPDATE:
        err = j->so->group_update(st, j->gid, j->uid, j->gname, j->gdesc);
        return err ? err : read_members(j, st);
    case OP_DELETE:
        err = read_members(j, st);
        return err ? err : j->so->group_delete(st, j->gid, j->uid);
    default: return QC_EINTERNAL;
    }
}

static int run_job(const struct store_ops *ops, struct store *st, void *arg)
{
    struct social_job *j = arg;
    return j->op < OP_CREATE_GROUP ? run_friend_op(j, ops, st) : run_group_op(j, ops, st);
}

/* ---- pushes ------------------------------------------------------------- */

/* Send the object jw wrote into b to uid's sessions that take notices. */
static void push_to(struct worker *w, struct buf *b, const int32_t *ids, size_t n)
{
    if (buf_append_char(b, '\n') != 0)
        return;
    for (size_t i = 0; i < n; i++)
        route_notice(w, ids[i], buf_head(b), buf_used(b));
}

static void push_friend_request(struct worker *w, const struct social_job *j)
{
    struct buf b = worker_buf_take(w);
    struct jsonw jw;
    jsonw_begin(&jw, &b);
    jsonw_int(&jw, "msgid", QC_FRIEND_REQUEST_MSG);
    jsonw_int(&jw, "id", j->uid);
    jsonw_str(&jw, "name", j->uname);
    if (jsonw_end(&jw) == 0)
        push_to(w, &b, &j->target, 1);
    worker_buf_give(w, &b);
}

/* The accepted friend is online (here, or elsewhere by the cluster's answer): tell the accepter. */
static void announce_friend_to_accepter(struct worker *w, const struct social_job *j)
{
    if (j->target_name[0] && presence_online(w, &j->state, j->target))
        session_announce_to(w, j->target, j->target_name, QC_STATE_ONLINE, &j->uid, 1);
}

static bool accepted_request(const struct social_job *j)
{
    return j->op == OP_ADD_FRIEND && j->consent && j->outcome == SOCIAL_ACCEPTED;
}

/*
 * An accepted request: both learn of the other as a friend, as presence
 * notices.  The requester hears of the accepter at once (a notice finds its
 * sessions on any node); the accepter hears of the requester here when the
 * requester is online on this node, else once the cluster has answered
 * (ask_presence, presence_known).
 */
static void announce_new_friends(struct worker *w, const struct social_job *j)
{
    session_announce_to(w, j->uid, j->uname, QC_STATE_ONLINE, &j->target, 1);
    if (!w->clustered)
        announce_friend_to_accepter(w, j);
}

static const char *event_name(enum social_op op)
{
    switch (op) {
    case OP_ADD_GROUP: return "joined";
    case OP_LEAVE: return "left";
    case OP_KICK: return "kicked";
    case OP_ROLE: return "role";
    case OP_UPDATE: return "updated";
    default: return "deleted";
    }
}

/* GROUP_EVENT_MSG 47 about userid to every member of the job's list but the actor. */
static void push_group_event(struct worker *w, const struct social_job *j, const char *event,
                             int32_t userid, const char *role)
{
    const struct people *m = &j->lists[LIST_FRIENDS];
    struct buf b = worker_buf_take(w);
    struct jsonw jw;
    jsonw_begin(&jw, &b);
    jsonw_int(&jw, "msgid", QC_GROUP_EVENT_MSG);
    jsonw_int(&jw, "groupid", j->gid);
    jsonw_str(&jw, "event", event);
    jsonw_int(&jw, "userid", userid);
    jsonw_int(&jw, "by", j->uid);
    if (role)
        jsonw_str(&jw, "role", role);
    if (j->op == OP_UPDATE && j->gname)
        jsonw_str(&jw, "groupname", j->gname);
    if (j->op == OP_UPDATE && j->gdesc)
        jsonw_str(&jw, "groupdesc", j->gdesc);
    if (jsonw_end(&jw) == 0 && buf_append_char(&b, '\n') == 0)
        for (size_t i = 0; i < m->n; i++)
            if (m->v[i].id != j->uid)
                route_notice(w, m->v[i].id, buf_head(&b), buf_used(&b));
    worker_buf_give(w, &b);
}

/* Blocks on the chat path: defined with the chat check below. */
static void update_blocks(struct worker *w, const struct social_job *j);
static void blocks_loaded(struct worker *w, const struct social_job *j, int err);

static void push_outcome(struct worker *w, const struct social_job *j)
{
    switch (j->op) {
    case OP_ADD_FRIEND:
        if (j->consent && j->outcome == SOCIAL_REQUESTED)
            push_friend_request(w, j);
        else if (j->consent && j->outcome == SOCIAL_ACCEPTED)
            announce_new_friends(w, j);
        break;
    case OP_ADD_GROUP:
    case OP_LEAVE:
    case OP_DELETE:
        if (!(j->op == OP_LEAVE && j->leave.deleted))
            push_group_event(w, j, event_name(j->op), j->uid, NULL);
        if (j->op == OP_LEAVE && j->leave.new_creator)
            push_group_event(w, j, "role", j->leave.new_creator, "creator");
        break;
    case OP_KICK:
    case OP_UPDATE:
        push_group_event(w, j, event_name(j->op), j->op == OP_KICK ? j->target : j->uid, NULL);
        break;
    case OP_ROLE: push_group_event(w, j, "role", j->target, j->role); break;
    case OP_BLOCK:
    case OP_UNBLOCK: update_blocks(w, j); break;
    default: break;
    }
}

/* ---- replies ------------------------------------------------------------ */

static struct json_object *people_json(struct worker *w, const struct social_job *j,
                                       const struct people *l, bool state, bool role)
{
    struct json_object *a = json_object_new_array_ext((int)l->n);
    for (size_t i = 0; a && i < l->n; i++) {
        struct json_object *o = json_object_new_object();
        if (o == NULL)
            break;
        json_object_object_add(o, "id", json_object_new_int(l->v[i].id));
        json_object_object_add(o, "name", json_object_new_string(l->v[i].name));
        if (state)
            json_object_object_add(o, "state",
                                   json_object_new_string(presence_online(w, &j->state, l->v[i].id)
                                                              ? QC_STATE_ONLINE
                                                              : QC_STATE_OFFLINE));
        if (role)
            json_object_object_add(o, "role", json_object_new_string(l->v[i].role));
        json_object_array_add(a, o);
    }
    return a;
}

/* The list replies 31 and 41, built with json-c (not on the chat path). */
static void reply_lists(struct worker *w, struct conn *c, const struct social_job *j)
{
    struct json_object *o = json_object_new_object();
    bool members = j->op == OP_MEMBERS;
    json_object_object_add(
        o, "msgid",
        json_object_new_int(members ? QC_GROUP_MEMBERS_MSG_ACK : QC_FRIEND_LIST_MSG_ACK));
    json_object_object_add(o, "errno", json_object_new_int(0));
    if (j->has_seq)
        json_object_object_add(o, "seq", json_tokener_parse(j->seq));
    if (members) {
        json_object_object_add(o, "groupid", json_object_new_int(j->gid));
        json_object_object_add(o, "users", people_json(w, j, &j->lists[LIST_FRIENDS], true, true));
    } else {
        json_object_object_add(o, "friends",
                               people_json(w, j, &j->lists[LIST_FRIENDS], true, false));
        json_object_object_add(o, "requests_in",
                               people_json(w, j, &j->lists[LIST_IN], false, false));
        json_object_object_add(o, "requests_out",
                               people_json(w, j, &j->lists[LIST_OUT], false, false));
        json_object_object_add(o, "blocked",
                               people_json(w, j, &j->lists[LIST_BLOCKED], false, false));
    }
    size_t len;
    const char *s = json_object_to_json_string_length(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    struct buf b = worker_buf_take(w);
    if (s && buf_append(&b, s, len) == 0 && buf_append_char(&b, '\n') == 0)
        conn_send(w, c, buf_head(&b), buf_used(&b));
    else
        reply_error(w, c, j->msgid, j->has_seq ? j->seq : NULL, QC_EINTERNAL);
    worker_buf_give(w, &b);
    json_object_put(o);
}

static void reply_outcome(struct worker *w, struct conn *c, const struct social_job *j, int err)
{
    const char *seq = j->has_seq ? j->seq : NULL;
    if (err)
        reply_error(w, c, j->msgid, seq, err);
    else if (j->op == OP_FRIEND_LIST || j->op == OP_MEMBERS)
        reply_lists(w, c, j);
    else if (seq)
        reply_ack(w, c, j->msgid, seq, 0, 0, j->op == OP_CREATE_GROUP ? j->gid : 0, 0);
}

/* The asking connection, if it is still there. */
static struct conn *asker(struct worker *w, const struct social_job *j)
{
    struct conn *c = worker_conn(w, j->slot);
    return c != NULL && c->cgen == j->cgen && c->state == CONN_OPEN ? c : NULL;
}

/* The request's outcome to the connection that asked; the job ends. */
static void answer(struct worker *w, struct social_job *j, int err)
{
    struct conn *c = asker(w, j);
    if (c != NULL) {
        reply_outcome(w, c, j, err);
        c->busy = false;
        conn_resume(w, c);
    }
    job_free(j);
}

static void presence_known(struct worker *w, void *arg)
{
    struct social_job *j = arg;
    if (accepted_request(j))
        announce_friend_to_accepter(w, j);
    answer(w, j, 0);
}

/*
 * A list's people not online on this node are asked of the cluster, as a
 * login's are; true: the reply waits for the answer (presence_known).
 */
static bool ask_presence(struct worker *w, struct social_job *j)
{
    if (!w->clustered || asker(w, j) == NULL)
        return false;
    if (accepted_request(j)) {
        presence_add(w, &j->state, j->target); /* not added when online here */
        if (presence_ask(w, &j->state, presence_known, j))
            return true;
        announce_friend_to_accepter(w, j); /* online here, or the relay cannot tell */
        return false;
    }
    if (j->op != OP_FRIEND_LIST && j->op != OP_MEMBERS)
        return false;
    const struct people *l = &j->lists[LIST_FRIENDS];
    for (size_t i = 0; i < l->n; i++)
        presence_add(w, &j->state, l->v[i].id);
    return presence_ask(w, &j->state, presence_known, j);
}

/* On the worker's thread: the store answered. */
static void job_done(void *arg, int err)
{
    struct social_job *j = arg;
    struct worker *w = j->w;
    if (j->op == OP_LOAD_BLOCKS) {
        blocks_loaded(w, j, err); /* no request waits for it */
        job_free(j);
        return;
    }
    if (!err)
        push_outcome(w, j);
    if (!err && (j->op == OP_DELETE || (j->op == OP_LEAVE && j->leave.deleted)))
        delete_group_log(w, j->gid);
    if (!err && ask_presence(w, j))
        return; /* the connection stays busy until the relay answers */
    answer(w, j, err);
}

/* ---- handlers ----------------------------------------------------------- */

static struct social_job *new_job(struct worker *w, struct conn *c, const struct request *r,
                                  enum social_op op)
{
    struct social_job *j = calloc(1, sizeof *j);
    if (j == NULL)
        return NULL;
    j->w = w;
    j->so = social_driver(w->cfg.storage_driver);
    j->op = op;
    j->slot = c->slot;
    j->cgen = c->cgen;
    j->sgen = c->sgen;
    j->uid = c->uid;
    strlcpy(j->uname, c->name, sizeof j->uname);
    j->msgid = r->msgid;
    if (r->seq) {
        strlcpy(j->seq, r->seq, sizeof j->seq);
        j->has_seq = true;
    }
    j->consent = strcmp(w->cfg.friend_consent, "no") != 0;
    j->max_friends = w->cfg.max_friends;
    j->max_groups = w->cfg.max_groups;
    j->max_members = w->cfg.max_group_members;
    return j;
}

/* Queue the job; the connection waits for it.  On failure the request is answered now. */
static void submit(struct worker *w, struct conn *c, const struct request *r, struct social_job *j)
{
    if (j == NULL || j->so == NULL) {
        if (j)
            job_free(j);
        reply_error(w, c, r->msgid, r->seq, QC_EINTERNAL);
        return;
    }
    if (storage_submit(w->storage, run_job, job_done, j) != 0) {
        job_free(j);
        reply_error(w, c, r->msgid, r->seq, QC_ESTORAGE);
        return;
    }
    c->busy = true;
}

/* An optional text field of min..max bytes, copied: *out NULL when absent. */
static int field_text(const struct request *r, const char *key, size_t min, size_t max, char **out)
{
    struct json_object *v;
    *out = NULL;
    if (!json_object_object_get_ex(r->obj, key, &v))
        return 0;
    if (!json_object_is_type(v, json_type_string))
        return QC_EBADREQ;
    const char *s = json_object_get_string(v);
    size_t len = (size_t)json_object_get_string_len(v);
    if (len > max)
        return QC_ETOOLONG;
    if (len < min || memchr(s, '\0', len))
        return QC_EBADREQ;
    *out = strdup(s);
    return *out ? 0 : QC_EINTERNAL;
}

/* A request naming one user in key (friendid or userid). */
static void user_request(struct worker *w, struct conn *c, const struct request *r,
                         enum social_op op, const char *key)
{
    int32_t id;
    int err = request_id(r->obj, key, &id);
    if (!err && id == c->uid)
        err = QC_ESELF;
    if (err) {
        reply_error(w, c, r->msgid, r->seq, err);
        return;
    }
    struct social_job *j = new_job(w, c, r, op);
    if (j)
        j->target = id;
    submit(w, c, r, j);
}

void social_add_friend(struct worker *w, struct conn *c, const struct request *r)
{
    user_request(w, c, r, OP_ADD_FRIEND, "friendid");
}

void social_friend_remove(struct worker *w, struct conn *c, const struct request *r)
{
    user_request(w, c, r, OP_FRIEND_REMOVE, "friendid");
}

void social_friend_decline(struct worker *w, struct conn *c, const struct request *r)
{
    user_request(w, c, r, OP_DECLINE, "friendid");
}

void social_block(struct worker *w, struct conn *c, const struct request *r)
{
    user_request(w, c, r, OP_BLOCK, "userid");
}

void social_unblock(struct worker *w, struct conn *c, const struct request *r)
{
    user_request(w, c, r, OP_UNBLOCK, "userid");
}

void social_friend_list(struct worker *w, struct conn *c, const struct request *r)
{
    submit(w, c, r, new_job(w, c, r, OP_FRIEND_LIST));
}

/* A request naming a group (and, for KICK and ROLE, a user in it). */
static void group_request(struct worker *w, struct conn *c, const struct request *r,
                          enum social_op op)
{
    int32_t gid, uid = 0;
    int err = request_id(r->obj, "groupid", &gid);
    if (!err && (op == OP_KICK || op == OP_ROLE))
        err = request_id(r->obj, "userid", &uid);
    if (err) {
        reply_error(w, c, r->msgid, r->seq, err);
        return;
    }
    struct social_job *j = new_job(w, c, r, op);
    if (j) {
        j->gid = gid;
        j->target = uid;
    }
    submit(w, c, r, j);
}

void social_add_group(struct worker *w, struct conn *c, const struct request *r)
{
    group_request(w, c, r, OP_ADD_GROUP);
}

void social_group_members(struct worker *w, struct conn *c, const struct request *r)
{
    group_request(w, c, r, OP_MEMBERS);
}

void social_group_leave(struct worker *w, struct conn *c, const struct request *r)
{
    group_request(w, c, r, OP_LEAVE);
}

void social_group_kick(struct worker *w, struct conn *c, const struct request *r)
{
    group_request(w, c, r, OP_KICK);
}

void social_group_delete(struct worker *w, struct conn *c, const struct request *r)
{
    group_request(w, c, r, OP_DELETE);
}

void social_group_role(struct worker *w, struct conn *c, const struct request *r)
{
    int32_t gid, uid;
    char *role = NULL;
    int err = request_id(r->obj, "groupid", &gid);
    if (!err)
        err = request_id(r->obj, "userid", &uid);
    if (!err)
        err = field_text(r, "role", 1, SOCIAL_ROLE_MAX, &role);
    if (!err && (role == NULL || (strcmp(role, "admin") != 0 && strcmp(role, "normal") != 0)))
        err = QC_EBADREQ;
    struct social_job *j = err ? NULL : new_job(w, c, r, OP_ROLE);
    if (err || j == NULL) {
        free(role);
        reply_error(w, c, r->msgid, r->seq, err ? err : QC_EINTERNAL);
        return;
    }
    j->gid = gid;
    j->target = uid;
    strlcpy(j->role, role, sizeof j->role);
    free(role);
    submit(w, c, r, j);
}

/* Name and description of CREATE_GROUP (name required) or UPDATE (at least one). */
static void named_group_request(struct worker *w, struct conn *c, const struct request *r,
                                enum social_op op)
{
    int32_t gid = 0;
    char *name = NULL, *desc = NULL;
    int err = op == OP_UPDATE ? request_id(r->obj, "groupid", &gid) : 0;
    if (!err)
        err = field_text(r, "groupname", 1, QC_NAME_MAX, &name);
    if (!err)
        err = field_text(r, "groupdesc", 0, QC_GROUPDESC_MAX, &desc);
    if (!err && name == NULL && (op == OP_CREATE_GROUP || desc == NULL))
        err = QC_EBADREQ;
    struct social_job *j = err ? NULL : new_job(w, c, r, op);
    if (err || j == NULL) {
        free(name);
        free(desc);
        reply_error(w, c, r->msgid, r->seq, err ? err : QC_EINTERNAL);
        return;
    }
    j->gid = gid;
    j->gname = name;
    j->gdesc = desc;
    submit(w, c, r, j);
}

void social_create_group(struct worker *w, struct conn *c, const struct request *r)
{
    named_group_request(w, c, r, OP_CREATE_GROUP);
}

void social_group_update(struct worker *w, struct conn *c, const struct request *r)
{
    named_group_request(w, c, r, OP_UPDATE);
}

/* ---- blocks on the chat path (blockcache.c) ------------------------------ */

/*
 * The notice one session's BLOCK / UNBLOCK sends to the other user's
 * session, through route_notice (any worker, any node): never shown to a
 * client, taken by social_notice.  Its msgid is not a protocol id.
 */
#define BLOCK_NOTICE_PREFIX "{\"msgid\":-1,"

bool social_chat_gate(struct worker *w, struct conn *c, const struct request *r)
{
    int32_t to;
    if (request_id(r->obj, "toid", &to) != 0 || !blockcache_blocked(c, to))
        return false;
    reply_error(w, c, r->msgid, r->seq, QC_EBLOCKED);
    return true;
}

static void send_block_notice(struct worker *w, const struct social_job *j)
{
    struct buf b = worker_buf_take(w);
    if (buf_printf(&b, BLOCK_NOTICE_PREFIX "\"blockedby\":%d,\"on\":%d}\n", j->uid,
                   j->op == OP_BLOCK) >= 0)
        route_notice(w, j->target, buf_head(&b), buf_used(&b));
    worker_buf_give(w, &b);
}

/* The requester's own set, and the other side's through a notice. */
static void update_blocks(struct worker *w, const struct social_job *j)
{
    struct conn *c = worker_conn(w, j->slot);
    if (c != NULL && c->cgen == j->cgen)
        blockcache_set(c, BLOCKS_MINE, j->target, j->op == OP_BLOCK);
    send_block_notice(w, j);
}

bool social_notice(struct worker *w, struct conn *c, const char *payload, size_t len)
{
    size_t plen = strlen(BLOCK_NOTICE_PREFIX);
    (void)w;
    if (len < plen || memcmp(payload, BLOCK_NOTICE_PREFIX, plen) != 0)
        return false;
    struct json_object *o = json_tokener_parse(payload), *by, *on;
    if (o != NULL && json_object_object_get_ex(o, "blockedby", &by) &&
        json_object_object_get_ex(o, "on", &on))
        blockcache_set(c, BLOCKS_OF_ME, json_object_get_int(by), json_object_get_int(on) != 0);
    json_object_put(o);
    return true;
}

static void blocks_loaded(struct worker *w, const struct social_job *j, int err)
{
    struct conn *c = worker_conn(w, j->slot);
    if (c == NULL || c->cgen != j->cgen || c->sgen != j->sgen)
        return; /* that session is over */
    if (err) {
        log_warning("user %d: blocks not loaded (%s): chats are not checked", j->uid,
                    qc_strerror(err));
        return;
    }
    for (size_t i = 0; i < j->lists[LIST_BLOCKED].n; i++)
        blockcache_set(c, BLOCKS_MINE, j->lists[LIST_BLOCKED].v[i].id, true);
    for (size_t i = 0; i < j->lists[LIST_IN].n; i++)
        blockcache_set(c, BLOCKS_OF_ME, j->lists[LIST_IN].v[i].id, true);
    blockcache_loaded(c);
}

void social_session_started(struct worker *w, struct conn *c)
{
    blockcache_begin(c);
    struct request r = { .msgid = QC_LOGIN_MSG };
    struct social_job *j = new_job(w, c, &r, OP_LOAD_BLOCKS);
    if (j == NULL || j->so == NULL || storage_submit(w->storage, run_job, job_done, j) != 0) {
        log_warning("user %d: blocks not loaded (storage queue): chats are not checked", c->uid);
        if (j)
            job_free(j);
    }
}
