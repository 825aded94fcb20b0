/*
 * service_log.c - the conversation log's requests (see service_log.h):
 * HISTORY_MSG 20 -> 21, CONVERSATIONS_MSG 22 -> 23, READ_MSG 24 (+ the READ
 * sync push 24 to the reader's other sessions, RECEIPT_MSG 25 to the other
 * user of a pair), TYPING_MSG 26 (forwarded, never stored, rate limited).
 *
 * Each request becomes one log_job: validated here on the loop, its store
 * work run on the storage thread (run_*), its reply written back on the
 * loop (resume_*), through service_async: while the job is out the
 * connection is parked and reads no further request, and the resume step
 * answers only the connection that asked (slot and connection generation
 * unchanged; NULL otherwise).  Errors follow the seq rule through
 * reply_error: a failed request gets ACK_MSG 11 with the errno.
 */
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/jsonw.h"
#include "common/log.h"
#include "server/conn.h"
#include "server/online.h"
#include "server/reply.h"
#include "server/request.h"
#include "server/route.h"
#include "server/service_async.h"
#include "server/service_log.h"
#include "server/session.h"
#include "server/storage.h"
#include "server/worker.h"
#include "store/social.h"
#include "store/store.h"

/* One request of this module, carried to the storage thread and back. */
struct log_job {
    uint32_t slot, sgen; /* the asking connection's slot and session */
    int32_t uid;
    char name[QC_NAME_MAX + 1];
    int msgid;
    bool has_seq;
    char seq[QC_SEQ_MAX + 1];

    int32_t with, groupid; /* the conversation named: exactly one is set */
    int64_t conv;
    int64_t before, after; /* HISTORY cursors, STORE_NO_CURSOR when absent */
    int64_t cseq;          /* READ: the cseq asked, then the cursor after the store */
    bool moved;            /* READ: the cursor is where the request put it (not behind it) */
    int limit;             /* HISTORY, CONVERSATIONS page size */

    struct buf out;         /* HISTORY msgs / CONVERSATIONS convs: a JSON array */
    bool out_err;           /* out of memory while writing out */
    bool more;              /* HISTORY: more messages beyond the page */
    struct id_list members; /* TYPING to a group: the other members */
};

/* ---- fields ------------------------------------------------------------- */

static bool has_field(struct json_object *obj, const char *key)
{
    return json_object_object_get_ex(obj, key, NULL);
}

/* An optional cseq (>= 0); absent: STORE_NO_CURSOR. */
static int get_cursor(struct json_object *obj, const char *key, int64_t *out)
{
    struct json_object *v;
    *out = STORE_NO_CURSOR;
    if (!json_object_object_get_ex(obj, key, &v))
        return QC_OK;
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
        return QC_EBADREQ;
    *out = json_object_get_int64(v);
    return QC_OK;
}

/* An optional limit in lo..hi (default dflt); out of range or mistyped: QC_EBADREQ. */
static int get_limit(struct json_object *obj, int lo, int hi, int dflt, int *out)
{
    struct json_object *v;
    *out = dflt;
    if (!json_object_object_get_ex(obj, "limit", &v))
        return QC_OK;
    if (!json_object_is_type(v, json_type_int))
        return QC_EBADREQ;
    int64_t x = json_object_get_int64(v);
    if (x < lo || x > hi)
        return QC_EBADREQ;
    *out = (int)x;
    return QC_OK;
}

/* Exactly one of user_key ("with" / "toid") and "groupid". */
static int get_conversation(struct json_object *obj, const char *user_key, struct log_job *j)
{
    bool user = has_field(obj, user_key), group = has_field(obj, "groupid");
    if (user == group)
        return QC_EBADREQ;
    return user ? request_id(obj, user_key, &j->with) : request_id(obj, "groupid", &j->groupid);
}

/* ---- the job's life ----------------------------------------------------- */

static struct log_job *job_new(const struct conn *c, int msgid, const char *seq)
{
    struct log_job *j = calloc(1, sizeof *j);
    if (j == NULL)
        return NULL;
    j->slot = c->slot;
    j->sgen = c->sgen;
    j->uid = c->uid;
    strlcpy(j->name, c->name, sizeof j->name);
    j->msgid = msgid;
    if (seq) {
        strlcpy(j->seq, seq, sizeof j->seq);
        j->has_seq = true;
    }
    j->before = j->after = STORE_NO_CURSOR;
    buf_init(&j->out);
    return j;
}

static void job_free(struct log_job *j)
{
    buf_free(&j->out);
    free(j->members.ids);
    free(j);
}

static const char *job_seq(const struct log_job *j)
{
    return j->has_seq ? j->seq : NULL;
}

/* Hand j to the storage thread; c reads nothing more until resume runs. */
static void job_submit(struct worker *w, struct conn *c, struct log_job *j, storage_run_fn run,
                       service_resume_fn resume)
{
    int err = service_async(w, c, run, resume, j);
    if (err) {
        reply_error(w, c, j->msgid, job_seq(j), err);
        job_free(j);
    }
}

/* ---- on the storage thread ---------------------------------------------- */

static bool body_has_key(const char *body, size_t len, const char *quoted_key)
{
    return memmem(body, len, quoted_key, strlen(quoted_key)) != NULL;
}

/*
 * One message as its JSON object, with cseq, mid and ts whatever the stored
 * body holds (a quoted key cannot occur inside a JSON string: its quotes
 * would be escaped there).
 */
static int append_message(struct buf *b, const struct store_logmsg *m)
{
    size_t len = m->len;
    while (len > 0 && m->body[len - 1] != '}')
        len--;
    if (len < 2 || m->body[0] != '{')
        return -1;
    size_t inner = len - 1; /* up to, not including, the closing brace */
    bool empty = inner == 1;
    int rc = buf_append(b, m->body, inner);
    if (!body_has_key(m->body, len, "\"cseq\":")) {
        rc |= buf_printf(b, "%s\"cseq\":%lld", empty ? "" : ",", (long long)m->cseq);
        empty = false;
    }
    if (!body_has_key(m->body, len, "\"mid\":"))
        rc |= buf_printf(b, "%s\"mid\":%lld", empty ? "" : ",", (long long)m->mid), empty = false;
    if (!body_has_key(m->body, len, "\"ts\":"))
        rc |= buf_printf(b, "%s\"ts\":%lld", empty ? "" : ",", (long long)m->ts);
    rc |= buf_append_char(b, '}');
    return rc < 0 ? -1 : 0;
}

static void add_history_item(void *arg, const struct store_logmsg *m)
{
    struct log_job *j = arg;
    if (buf_used(&j->out) > 1 && buf_append_char(&j->out, ',') < 0)
        j->out_err = true;
    if (append_message(&j->out, m) < 0)
        j->out_err = true;
}

/*
 * The conversation j names, checked for the asking user: the other user
 * must exist (QC_ENOUSER; oneself: QC_ESELF), the group must exist
 * (QC_ENOGROUP) and have the user as a member now (QC_ENOTMEMBER).
 */
static int resolve_conversation(const struct store_ops *ops, struct store *st, struct log_job *j)
{
    if (j->with) {
        struct store_user u;
        if (j->with == j->uid)
            return QC_ESELF;
        int err = ops->user_get(st, j->with, &u);
        explicit_bzero(u.password, sizeof u.password);
        if (err)
            return err;
        j->conv = store_conv_pair(j->uid, j->with);
        return QC_OK;
    }
    int count = 0;
    bool member = false;
    int err = ops->group_member_count(st, j->groupid, &count);
    if (err)
        return err;
    j->conv = store_conv_group(j->groupid);
    err = ops->conv_member(st, j->uid, j->conv, &member);
    if (err)
        return err;
    return member ? QC_OK : QC_ENOTMEMBER;
}

static int run_history(const struct store_ops *ops, struct store *st, void *arg)
{
    struct log_job *j = arg;
    int err = resolve_conversation(ops, st, j);
    if (err)
        return err;
    buf_append_char(&j->out, '[');
    err = ops->history(st, j->conv, j->before, j->after, j->limit, add_history_item, j, &j->more);
    if (buf_append_char(&j->out, ']') < 0)
        j->out_err = true;
    return err ? err : j->out_err ? QC_EINTERNAL : QC_OK;
}

static void add_conversation(void *arg, const struct store_conv_info *ci)
{
    struct log_job *j = arg;
    struct buf *b = &j->out;
    int rc = buf_used(b) > 1 ? buf_append_char(b, ',') : 0;
    if (ci->groupid)
        rc |= buf_printf(b, "{\"groupid\":%d,\"name\":", (int)ci->groupid);
    else
        rc |= buf_printf(b, "{\"with\":%d,\"name\":", (int)ci->with);
    rc |= json_append_string(b, ci->name ? ci->name : "", ci->name ? strlen(ci->name) : 0);
    rc |= buf_printf(b, ",\"last_cseq\":%lld,\"read_cseq\":%lld,\"unread\":%lld",
                     (long long)ci->last_cseq, (long long)ci->read_cseq, (long long)ci->unread);
    if (ci->last && ci->last_len > 0) {
        struct store_logmsg m = { .conv = ci->conv,
                                  .cseq = ci->last_cseq,
                                  .ts = ci->last_ts,
                                  .body = ci->last,
                                  .len = ci->last_len };
        rc |= buf_append_str(b, ",\"last\":");
        rc |= append_message(b, &m);
    }
    rc |= buf_append_char(b, '}');
    if (rc < 0)
        j->out_err = true;
}

static int run_conversations(const struct store_ops *ops, struct store *st, void *arg)
{
    struct log_job *j = arg;
    buf_append_char(&j->out, '[');
    int err = ops->conversations(st, j->uid, j->limit, add_conversation, j);
    if (buf_append_char(&j->out, ']') < 0)
        j->out_err = true;
    return err ? err : j->out_err ? QC_EINTERNAL : QC_OK;
}

static int run_read(const struct store_ops *ops, struct store *st, void *arg)
{
    struct log_job *j = arg;
    int err = resolve_conversation(ops, st, j);
    if (err)
        return err;
    int64_t asked = j->cseq;
    err = ops->read_set(st, j->uid, j->conv, asked, &j->cseq);
    j->moved = !err && asked >= j->cseq; /* lower than the cursor: nothing changed */
    return err;
}

static void collect_other_member(void *arg, int32_t userid, const char *name, const char *role)
{
    struct log_job *j = arg;
    (void)name;
    (void)role;
    if (userid == j->uid)
        j->cseq = 1; /* the sender is a member */
    else
        id_list_push(&j->members, userid);
}

/* A user separated from the typist by a block (either way): struck off the members. */
static void drop_member(void *arg, int32_t userid, const char *name)
{
    struct id_list *m = arg;
    (void)name;
    for (size_t i = 0; i < m->n; i++)
        if (m->ids[i] == userid) {
            m->ids[i] = m->ids[--m->n];
            return;
        }
}

/*
 * TYPING: the recipient exists and neither of the two blocked the other
 * (as for a chat); or the sender is a member of the group, and the notice
 * goes to the other members but those separated from the sender by a block.
 */
static int run_typing(const struct store_ops *ops, struct store *st, void *arg)
{
    struct log_job *j = arg;
    const struct social_ops *so = social_driver(ops->name);
    int err;
    if (j->with) {
        struct store_user u;
        if (j->with == j->uid)
            return QC_ESELF;
        err = ops->user_get(st, j->with, &u);
        explicit_bzero(u.password, sizeof u.password);
        if (err)
            return err;
        bool blocked = false;
        if (so && (err = so->is_blocked(st, j->with, j->uid, &blocked)) == 0 && !blocked)
            err = so->is_blocked(st, j->uid, j->with, &blocked);
        return err ? err : blocked ? QC_EBLOCKED : QC_OK;
    }
    j->cseq = 0;
    err = ops->group_members(st, j->groupid, collect_other_member, j);
    if (err)
        return err;
    if (j->members.err)
        return QC_EINTERNAL;
    if (!j->cseq)
        return QC_ENOTMEMBER;
    if (so && j->members.n > 0 && (err = so->blocked_by(st, j->uid, drop_member, &j->members)) == 0)
        err = so->blocked_list(st, j->uid, drop_member, &j->members);
    return err;
}

/* ---- back on the loop --------------------------------------------------- */

/* The conversation's key in a reply or push: "with" or "groupid". */
static void write_conversation(struct jsonw *jw, const struct log_job *j)
{
    if (j->with)
        jsonw_int(jw, "with", j->with);
    else
        jsonw_int(jw, "groupid", j->groupid);
}

/*
 * The end of every job: the asking connection (NULL when it has gone) gets
 * the error, or reply(w, c, j) on success; then it reads requests again.
 */
static bool finish_job(struct worker *w, struct conn *c, struct log_job *j, int err,
                       void (*reply)(struct worker *w, struct conn *c, struct log_job *j))
{
    if (c && err)
        reply_error(w, c, j->msgid, job_seq(j), err);
    else if (c)
        reply(w, c, j);
    job_free(j);
    return true;
}

static void reply_history(struct worker *w, struct conn *c, struct log_job *j)
{
    struct buf b = worker_buf_take(w);
    struct jsonw jw;
    jsonw_begin(&jw, &b);
    jsonw_int(&jw, "msgid", QC_HISTORY_MSG_ACK);
    jsonw_int(&jw, "errno", 0);
    write_conversation(&jw, j);
    jsonw_raw(&jw, "msgs", buf_head(&j->out), buf_used(&j->out));
    jsonw_bool(&jw, "more", j->more);
    if (j->has_seq)
        jsonw_raw(&jw, "seq", j->seq, strlen(j->seq));
    reply_finish(w, c, &b, &jw);
}

static bool resume_history(struct worker *w, struct conn *c, void *arg, int err)
{
    return finish_job(w, c, arg, err, reply_history);
}

static void reply_conversations(struct worker *w, struct conn *c, struct log_job *j)
{
    struct buf b = worker_buf_take(w);
    struct jsonw jw;
    jsonw_begin(&jw, &b);
    jsonw_int(&jw, "msgid", QC_CONVERSATIONS_MSG_ACK);
    jsonw_int(&jw, "errno", 0);
    jsonw_raw(&jw, "convs", buf_head(&j->out), buf_used(&j->out));
    if (j->has_seq)
        jsonw_raw(&jw, "seq", j->seq, strlen(j->seq));
    reply_finish(w, c, &b, &jw);
}

static bool resume_conversations(struct worker *w, struct conn *c, void *arg, int err)
{
    return finish_job(w, c, arg, err, reply_conversations);
}

/* The generic ACK, only when the request carried seq (the seed rule). */
static void reply_acked(struct worker *w, struct conn *c, struct log_job *j)
{
    if (j->has_seq)
        reply_ack(w, c, j->msgid, j->seq, 0, 0, 0, 0);
}

/* Send a push to uid's sessions other than the asking one (route_notice filters by wish). */
static void push_to_other_sessions(struct worker *w, const struct log_job *j, const char *p,
                                   size_t n)
{
    route_notice_others(w, j->uid, j->sgen, p, n); /* every session but the reader's (issue 15) */
}

/* READ done: the reader's other sessions follow; the other user of a pair gets a receipt. */
static void push_read(struct worker *w, const struct log_job *j)
{
    struct buf b = worker_buf_take(w);
    struct jsonw jw;
    jsonw_begin(&jw, &b);
    jsonw_int(&jw, "msgid", QC_READ_MSG);
    write_conversation(&jw, j);
    jsonw_int(&jw, "cseq", j->cseq);
    if (jsonw_end(&jw) == 0 && buf_append_char(&b, '\n') == 0)
        push_to_other_sessions(w, j, buf_head(&b), buf_used(&b));
    if (j->with && j->cseq > 0) {
        buf_reset(&b);
        jsonw_begin(&jw, &b);
        jsonw_int(&jw, "msgid", QC_RECEIPT_MSG);
        jsonw_int(&jw, "id", j->uid);
        jsonw_int(&jw, "cseq", j->cseq);
        if (jsonw_end(&jw) == 0 && buf_append_char(&b, '\n') == 0)
            route_notice(w, j->with, buf_head(&b), buf_used(&b));
    }
    worker_buf_give(w, &b);
}

/* The pushes go whether or not the reader's connection is still there. */
static bool resume_read(struct worker *w, struct conn *c, void *arg, int err)
{
    struct log_job *j = arg;
    if (!err && j->moved)
        push_read(w, j);
    return finish_job(w, c, j, err, reply_acked);
}

/* TYPING done: {msgid 26, id, name, toid | groupid} to each recipient that asked for it. */
static void push_typing(struct worker *w, const struct log_job *j)
{
    struct buf b = worker_buf_take(w);
    struct jsonw jw;
    jsonw_begin(&jw, &b);
    jsonw_int(&jw, "msgid", QC_TYPING_MSG);
    jsonw_int(&jw, "id", j->uid);
    jsonw_str(&jw, "name", j->name);
    if (j->with)
        jsonw_int(&jw, "toid", j->with);
    else
        jsonw_int(&jw, "groupid", j->groupid);
    if (jsonw_end(&jw) == 0 && buf_append_char(&b, '\n') == 0) {
        if (j->with)
            route_notice(w, j->with, buf_head(&b), buf_used(&b));
        for (size_t i = 0; i < j->members.n; i++)
            route_notice(w, j->members.ids[i], buf_head(&b), buf_used(&b));
    }
    worker_buf_give(w, &b);
}

static bool resume_typing(struct worker *w, struct conn *c, void *arg, int err)
{
    struct log_job *j = arg;
    if (!err)
        push_typing(w, j);
    return finish_job(w, c, j, err, reply_acked);
}

/* ---- the handlers ------------------------------------------------------- */

/*
 * TYPING's rate limit: a conversation gets one notice per TYPING_INTERVAL_MS
 * from a connection, and a connection types to at most CONN_TYPING_SLOTS
 * conversations in that time.  false: drop this one.
 */
static bool typing_allowed(struct conn *c, int64_t conv, int64_t now)
{
    int slot = 0;
    for (int i = 0; i < CONN_TYPING_SLOTS; i++) {
        if (c->typing_conv[i] == conv) {
            slot = i;
            goto found;
        }
        if (c->typing_conv[i] == 0 || c->typing_ms[i] < c->typing_ms[slot])
            slot = i;
        if (c->typing_conv[i] == 0)
            break;
    }
    if (c->typing_conv[slot] != 0 && now - c->typing_ms[slot] < TYPING_INTERVAL_MS)
        return false; /* every slot used within the interval */
    c->typing_conv[slot] = conv;
    c->typing_ms[slot] = now;
    return true;
found:
    if (now - c->typing_ms[slot] < TYPING_INTERVAL_MS)
        return false;
    c->typing_ms[slot] = now;
    return true;
}

static int parse_history(struct json_object *obj, struct log_job *j)
{
    int err = get_conversation(obj, "with", j);
    if (!err)
        err = get_cursor(obj, "before", &j->before);
    if (!err)
        err = get_cursor(obj, "after", &j->after);
    if (!err)
        err = get_limit(obj, 1, STORE_HISTORY_MAX, HISTORY_LIMIT_DEFAULT, &j->limit);
    return err;
}

static int parse_read(struct json_object *obj, struct log_job *j)
{
    int err = get_conversation(obj, "with", j);
    if (!err)
        err = get_cursor(obj, "cseq", &j->cseq);
    if (!err && j->cseq == STORE_NO_CURSOR)
        err = QC_EBADREQ; /* cseq is required */
    return err;
}

void service_log_dispatch(struct worker *w, struct conn *c, struct json_object *obj, int msgid,
                          const char *seq)
{
    struct log_job *j = job_new(c, msgid, seq);
    int err = j ? QC_OK : QC_EINTERNAL;
    storage_run_fn run = NULL;
    service_resume_fn resume = NULL;
    if (!err) {
        switch (msgid) {
        case QC_HISTORY_MSG:
            err = parse_history(obj, j);
            run = run_history, resume = resume_history;
            break;
        case QC_CONVERSATIONS_MSG:
            err = get_limit(obj, 1, STORE_CONVS_MAX, CONVS_LIMIT_DEFAULT, &j->limit);
            run = run_conversations, resume = resume_conversations;
            break;
        case QC_READ_MSG:
            err = parse_read(obj, j);
            run = run_read, resume = resume_read;
            break;
        case QC_TYPING_MSG:
            err = get_conversation(obj, "toid", j);
            run = run_typing, resume = resume_typing;
            break;
        default: err = QC_EUNKNOWN; break;
        }
    }
    if (!err && msgid == QC_TYPING_MSG) {
        int64_t conv = j->with ? store_conv_pair(j->uid, j->with) : store_conv_group(j->groupid);
        if (j->with != j->uid && !typing_allowed(c, conv, w->now_ms)) {
            /* Over the limit: dropped, not an error (the typist retries anyway). */
            if (seq)
                reply_ack(w, c, msgid, seq, 0, 0, 0, 0);
            job_free(j);
            return;
        }
    }
    if (err) {
        reply_error(w, c, msgid, seq, err);
        if (j)
            job_free(j);
        return;
    }
    job_submit(w, c, j, run, resume);
}
