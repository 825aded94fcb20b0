/*
 * login.c - building the LOGIN_MSG_ACK (see login.h).
 *
 * Three steps.  collect, on the worker's storage thread (the connection
 * reads nothing meanwhile, and its output is held so the reply goes out
 * before any chat the new session receives): friends, groups with all their
 * members (one query, social login_groups), and the offline messages: the
 * log's messages after the user's delivered cursors, oldest first, at most
 * limits.max_offline_messages and limits.max_login_reply_bytes of them.
 * Nothing moves in the store: the reply carries them in a stash, and the
 * cursors advance only once the reply has been written to the socket
 * (conn.c, delivered.c); what did not fit comes at the next login.  The
 * read first waits (briefly) for the cursor jobs other workers of the node
 * had made when the login arrived, so a quick re-login on another worker
 * does not get the messages the previous session was written again.
 * resolve: who is online, from the online table, then from Redis for the
 * rest when this node is part of a cluster.  serialize: the seed's
 * encoding, each friend, group and member a JSON object serialized into a
 * string inside the arrays.
 *
 * A token login (login_checked_start) checks the token in the same storage
 * job, before the lists, and opens the session when the job is back: one
 * job per login instead of two.  The messages are then read before the
 * session is in the online table, so a chat another worker sent meanwhile
 * may have been left in the log without being in the read: the node's
 * count of chats left in the log (worker_stats.offline_stored, summed over
 * the workers) is taken when the job is queued and looked at again once
 * the session is open; if it moved, the messages are read once more (a
 * second job, only then).
 */
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "common/jsonw.h"
#include "common/log.h"
#include "server/conn.h"
#include "server/delivered.h"
#include "server/login.h"
#include "server/online.h"
#include "server/presence.h"
#include "server/recover.h"
#include "server/storage.h"
#include "store/social.h"
#include "server/reply.h"
#include "server/route.h"
#include "server/service_session.h"
#include "server/session.h"
#include "server/worker.h"

#define LOGIN_ITEM_SLACK   16  /* an item as a string: quotes, comma; escaping is bounded by 2x */
#define LOGIN_FENCE_MAX_MS 500 /* longest wait for other workers' cursor jobs */

enum person_state { STATE_UNKNOWN = 0, STATE_ONLINE, STATE_OFFLINE };

struct person {
    int32_t id;
    char *name;
    const char *role; /* static text, groups only */
};

struct group_info {
    int32_t id;
    char *name;
    char *desc;
    struct person *members;
    size_t n, cap;
};

struct login_ctx {
    struct login_ctx *next;
    struct worker *w;
    uint32_t token;
    uint32_t slot, cgen;
    int32_t uid;
    char name[QC_NAME_MAX + 1];
    char seq[QC_SEQ_MAX + 1];
    bool has_seq;
    char device[QC_DEVICE_MAX + 1];     /* a login token to issue for this device */
    int64_t token_expires;              /* its expiry (epoch s), 0: no token asked */
    char login_token[QC_TOKEN_MAX + 1]; /* the token issued, "" none */
    struct person *friends;
    size_t nfriends, capfriends;
    struct group_info *groups;
    size_t ngroups, capgroups;
    struct buf stash; /* offline messages, one per line */
    int count;
    int max_count;    /* limits.max_offline_messages */
    size_t max_bytes; /* limits.max_login_reply_bytes, for the messages */
    bool more;        /* some were left for the next login */
    bool lists_cut;   /* friends or groups left out for the byte limit */
    int err;
    bool want_numsub;             /* waiting for the relay's NUMSUB answer */
    bool want_sub;                /* waiting for Redis to confirm our SUBSCRIBE */
    bool want_claim;              /* waiting for the session registry (service_session.h) */
    bool refused;                 /* the registry refused it: [session] mode = refuse */
    struct presence_set state;    /* friends and members not online here */
    struct delivered_fence fence; /* other workers' cursors to wait for (delivered.h) */
    bool checking;                /* login_checked_start: check.open not called yet */
    struct login_check check;
    int check_err;        /* what check.check found */
    uint64_t stored_mark; /* the node's chats left in the log when the job was queued */
};

static struct login_ctx *waiting; /* replies waiting for the relay */
static uint32_t next_token;

/* ---- collect ------------------------------------------------------------ */

static int grow(void **arr, size_t *cap, size_t n, size_t esize)
{
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 8;
    void *p = realloc(*arr, ncap * esize);
    if (p == NULL)
        return -1;
    *arr = p;
    *cap = ncap;
    return 0;
}

static void add_friend(void *arg, int32_t id, const char *name)
{
    struct login_ctx *x = arg;
    if (grow((void **)&x->friends, &x->capfriends, x->nfriends, sizeof *x->friends) < 0 ||
        (x->friends[x->nfriends].name = strdup(name)) == NULL) {
        x->err = QC_EINTERNAL;
        return;
    }
    x->friends[x->nfriends++].id = id;
}

static void add_group(void *arg, int32_t id, const char *name, const char *desc)
{
    struct login_ctx *x = arg;
    if (grow((void **)&x->groups, &x->capgroups, x->ngroups, sizeof *x->groups) < 0) {
        x->err = QC_EINTERNAL;
        return;
    }
    struct group_info *g = &x->groups[x->ngroups];
    memset(g, 0, sizeof *g);
    g->id = id;
    g->name = strdup(name);
    g->desc = strdup(desc ? desc : "");
    if (g->name == NULL || g->desc == NULL) {
        free(g->name);
        free(g->desc);
        x->err = QC_EINTERNAL;
        return;
    }
    x->ngroups++;
}

static const char *role_of(const char *role)
{
    if (strcmp(role, QC_ROLE_CREATOR) == 0)
        return QC_ROLE_CREATOR;
    return strcmp(role, "admin") == 0 ? "admin" : QC_ROLE_NORMAL;
}

/* One row of social login_groups: a group and one member (rows of a group together). */
static void add_group_row(void *arg, int32_t groupid, const char *groupname, const char *groupdesc,
                          int32_t userid, const char *name, const char *role)
{
    struct login_ctx *x = arg;
    if (x->err)
        return;
    if (x->ngroups == 0 || x->groups[x->ngroups - 1].id != groupid) {
        add_group(x, groupid, groupname, groupdesc);
        if (x->err)
            return;
    }
    struct group_info *g = &x->groups[x->ngroups - 1];
    if (userid <= 0)
        return; /* a group listed without members */
    if (grow((void **)&g->members, &g->cap, g->n, sizeof *g->members) < 0 ||
        (g->members[g->n].name = strdup(name)) == NULL) {
        x->err = QC_EINTERNAL;
        return;
    }
    g->members[g->n].id = userid;
    g->members[g->n].role = role_of(role);
    g->n++;
}

/*
 * A body without "cseq" (migrated from the v1 offline table): the field is
 * added, so every offline item carries its place in the log.
 */
static int append_with_cseq(struct buf *out, const struct store_logmsg *m)
{
    if (memmem(m->body, m->len, "\"cseq\":", 7) != NULL)
        return buf_append(out, m->body, m->len);
    struct json_tokener *tok = json_tokener_new();
    struct json_object *o = tok ? json_tokener_parse_ex(tok, m->body, (int)m->len) : NULL;
    json_tokener_free(tok);
    int rc = -1;
    if (o && json_object_is_type(o, json_type_object)) {
        json_object_object_add(o, "cseq", json_object_new_int64(m->cseq));
        rc = buf_append_str(out, json_object_to_json_string_ext(
                                     o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    } else {
        rc = buf_append(out, m->body, m->len); /* not an object: as stored */
    }
    json_object_put(o);
    return rc;
}

static void add_offline(void *arg, const struct store_logmsg *m)
{
    struct login_ctx *x = arg;
    size_t at = buf_used(&x->stash);
    if (append_with_cseq(&x->stash, m) < 0 || buf_append_char(&x->stash, '\n') < 0) {
        x->err = QC_EINTERNAL;
        return;
    }
    size_t len = buf_used(&x->stash) - at - 1;
    /* A raw newline in JSON text is whitespace: a space keeps one message per line. */
    for (char *p = buf_head(&x->stash) + at, *end = p + len; p < end; p++)
        if (*p == '\n')
            *p = ' ';
    x->count++;
}

static void free_group(struct group_info *g);

static void free_ctx(struct login_ctx *x)
{
    explicit_bzero(x->login_token, sizeof x->login_token);
    for (size_t i = 0; i < x->nfriends; i++)
        free(x->friends[i].name);
    free(x->friends);
    for (size_t i = 0; i < x->ngroups; i++)
        free_group(&x->groups[i]);
    free(x->groups);
    buf_free(&x->stash);
    presence_free(&x->state);
    free(x);
}

/*
 * The reply stays within limits.max_login_reply_bytes: friends first, then
 * groups whole, in order, while their serialized size (estimated, escaping
 * counted generously) fits; what does not fit is left out of this reply
 * (FRIEND_LIST_MSG and GROUP_MEMBERS_MSG list everything).  The offline
 * messages get what is left (at least the first one, however big).
 */
#define LOGIN_REPLY_BASE   256 /* msgid, errno, id, name, seq, array brackets */
#define LOGIN_FRIEND_BYTES 64  /* one friends[] item besides its name */
#define LOGIN_GROUP_BYTES  112 /* one groups[] item besides names and members */
#define LOGIN_MEMBER_BYTES 128 /* one users[] item (a string in a string) besides its name */

static void free_group(struct group_info *g)
{
    for (size_t j = 0; j < g->n; j++)
        free(g->members[j].name);
    free(g->members);
    free(g->name);
    free(g->desc);
}

static size_t group_bytes(const struct group_info *g)
{
    size_t n = LOGIN_GROUP_BYTES + 2 * (strlen(g->name) + strlen(g->desc));
    for (size_t j = 0; j < g->n; j++)
        n += LOGIN_MEMBER_BYTES + 4 * strlen(g->members[j].name);
    return n;
}

static void fit_lists(struct login_ctx *x)
{
    size_t used = LOGIN_REPLY_BASE, max = x->max_bytes;
    size_t i = 0;
    while (i < x->nfriends && used + LOGIN_FRIEND_BYTES + 2 * strlen(x->friends[i].name) <= max)
        used += LOGIN_FRIEND_BYTES + 2 * strlen(x->friends[i++].name);
    for (size_t k = i; k < x->nfriends; k++)
        free(x->friends[k].name);
    x->lists_cut = i < x->nfriends;
    x->nfriends = i;
    for (i = 0; i < x->ngroups && used + group_bytes(&x->groups[i]) <= max; i++)
        used += group_bytes(&x->groups[i]);
    for (size_t k = i; k < x->ngroups; k++)
        free_group(&x->groups[k]);
    x->lists_cut = x->lists_cut || i < x->ngroups;
    x->ngroups = i;
    x->max_bytes = used < max ? max - used : 1;
}

/* On the storage thread: everything the reply lists (the credentials first, if asked). */
static int collect_on_store(const struct store_ops *ops, struct store *st, void *arg)
{
    struct login_ctx *x = arg;
    const struct social_ops *so = social_driver(ops->name);
    if (x->checking &&
        (x->check_err = x->check.check(ops, st, x->check.arg, x->name, sizeof x->name)) != QC_OK)
        return QC_OK; /* refused: nothing more to read */
    /* A token asked for with "token": true; the login succeeds without one if this fails. */
    if (x->token_expires && so &&
        so->token_create(st, x->uid, x->device, x->token_expires, x->login_token) != QC_OK) {
        log_error("user %d: cannot issue a login token", x->uid);
        x->login_token[0] = '\0';
    }
    int err = ops->friend_list(st, x->uid, add_friend, x);
    if (!err && !x->err)
        err = so ? so->login_groups(st, x->uid, add_group_row, x) : QC_EINTERNAL;
    if (!err && !x->err) {
        fit_lists(x);
        delivered_fence_wait(x->w, &x->fence, LOGIN_FENCE_MAX_MS);
        err = ops->undelivered(st, x->uid, x->max_count, x->max_bytes, add_offline, x, &x->more);
    }
    return err ? err : x->err;
}

/* On the storage thread: the messages read again (the session opened after the first read). */
static int reread_on_store(const struct store_ops *ops, struct store *st, void *arg)
{
    struct login_ctx *x = arg;
    delivered_fence_wait(x->w, &x->fence, LOGIN_FENCE_MAX_MS);
    int err = ops->undelivered(st, x->uid, x->max_count, x->max_bytes, add_offline, x, &x->more);
    return err ? err : x->err;
}

/* ---- resolve ------------------------------------------------------------ */

/* The ids whose state only Redis knows. */
static void list_unknown(struct worker *w, struct login_ctx *x)
{
    for (size_t i = 0; i < x->nfriends; i++)
        presence_add(w, &x->state, x->friends[i].id);
    for (size_t i = 0; i < x->ngroups; i++)
        for (size_t j = 0; j < x->groups[i].n; j++)
            if (x->groups[i].members[j].id != x->uid)
                presence_add(w, &x->state, x->groups[i].members[j].id);
}

static const char *state_text(struct worker *w, const struct login_ctx *x, int32_t id)
{
    return id == x->uid || presence_online(w, &x->state, id) ? QC_STATE_ONLINE : QC_STATE_OFFLINE;
}

/* ---- serialize ---------------------------------------------------------- */

/*
 * Whether one more list item of item_len bytes keeps the reply within
 * limits.max_login_reply_bytes; what does not fit is left out (logged),
 * the lists being available in full by FRIEND_LIST and GROUP_MEMBERS.
 */
static bool list_item_fits(struct worker *w, const struct jsonw *jw, size_t item_len)
{
    return buf_used(jw->b) + item_len <= (size_t)w->cfg.max_login_reply_bytes;
}

static void string_item(struct jsonw *outer, struct buf *item, struct jsonw *iw)
{
    if (jsonw_end(iw) == 0)
        jsonw_array_str(outer, buf_head(item), buf_used(item));
    else
        outer->err = 1;
}

static void write_friends(struct worker *w, const struct login_ctx *x, struct jsonw *jw,
                          struct buf *item)
{
    if (x->nfriends == 0)
        return;
    jsonw_array_begin(jw, "friends");
    for (size_t i = 0; i < x->nfriends; i++) {
        struct jsonw iw;
        buf_reset(item);
        jsonw_begin(&iw, item);
        jsonw_int(&iw, "id", x->friends[i].id);
        jsonw_str(&iw, "name", x->friends[i].name);
        jsonw_str(&iw, "state", state_text(w, x, x->friends[i].id));
        if (!list_item_fits(w, jw, 2 * buf_used(item) + LOGIN_ITEM_SLACK)) {
            log_warning("user %d: login reply over limits.max_login_reply_bytes: %zu of %zu "
                        "friend(s) left out",
                        x->uid, x->nfriends - i, x->nfriends);
            break;
        }
        string_item(jw, item, &iw);
    }
    jsonw_array_end(jw);
}

static void write_groups(struct worker *w, const struct login_ctx *x, struct jsonw *jw,
                         struct buf *item, struct buf *member)
{
    if (x->ngroups == 0)
        return;
    jsonw_array_begin(jw, "groups");
    for (size_t i = 0; i < x->ngroups; i++) {
        const struct group_info *g = &x->groups[i];
        struct jsonw gw;
        buf_reset(item);
        jsonw_begin(&gw, item);
        jsonw_int(&gw, "id", g->id);
        jsonw_int(&gw, "groupid", g->id);
        jsonw_str(&gw, "groupname", g->name);
        jsonw_str(&gw, "groupdesc", g->desc);
        jsonw_array_begin(&gw, "users");
        for (size_t j = 0; j < g->n; j++) {
            struct jsonw uw;
            buf_reset(member);
            jsonw_begin(&uw, member);
            jsonw_int(&uw, "id", g->members[j].id);
            jsonw_int(&uw, "userid", g->members[j].id);
            jsonw_str(&uw, "name", g->members[j].name);
            jsonw_str(&uw, "state", state_text(w, x, g->members[j].id));
            jsonw_str(&uw, "role", g->members[j].role);
            string_item(&gw, member, &uw);
        }
        jsonw_array_end(&gw);
        if (!list_item_fits(w, jw, 2 * buf_used(item) + LOGIN_ITEM_SLACK)) {
            log_warning("user %d: login reply over limits.max_login_reply_bytes: %zu of %zu "
                        "group(s) left out",
                        x->uid, x->ngroups - i, x->ngroups);
            break;
        }
        string_item(jw, item, &gw);
    }
    jsonw_array_end(jw);
}

/* Legacy connections get each item in the seed's shape (conn_legacy_shape). */
static void write_offline(const struct login_ctx *x, struct jsonw *jw, bool legacy,
                          struct buf *item)
{
    if (x->count == 0)
        return;
    jsonw_array_begin(jw, "offlinemsg");
    const char *p = buf_head(&x->stash), *end = p + buf_used(&x->stash);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        buf_reset(item);
        if (legacy && conn_legacy_shape(p, (size_t)(nl - p), item))
            jsonw_array_str(jw, buf_head(item), buf_used(item));
        else
            jsonw_array_str(jw, p, (size_t)(nl - p));
        p = nl + 1;
    }
    jsonw_array_end(jw);
}

/*
 * The reply just told this user who of its friends is online; the same
 * friends hear that it came online.  No second friend query, and in a
 * cluster no PUBLISH to friends who are online nowhere.
 */
static void announce_to_online_friends(struct worker *w, const struct login_ctx *x)
{
    int32_t *ids = malloc((x->nfriends ? x->nfriends : 1) * sizeof *ids);
    size_t n = 0;
    if (ids == NULL) {
        session_announce(w, x->uid, x->name, QC_STATE_ONLINE);
        return;
    }
    for (size_t i = 0; i < x->nfriends; i++)
        if (strcmp(state_text(w, x, x->friends[i].id), QC_STATE_ONLINE) == 0)
            ids[n++] = x->friends[i].id;
    session_announce_to(w, x->uid, x->name, QC_STATE_ONLINE, ids, n);
    free(ids);
}

static void send_reply(struct worker *w, struct conn *c, struct login_ctx *x)
{
    struct buf b, item, member;
    struct jsonw jw;
    buf_init(&b);
    buf_init(&item);
    buf_init(&member);
    jsonw_begin(&jw, &b);
    jsonw_int(&jw, "msgid", QC_LOGIN_MSG_ACK);
    jsonw_int(&jw, "errno", 0);
    jsonw_int(&jw, "id", x->uid);
    jsonw_str(&jw, "name", x->name);
    if (x->has_seq)
        jsonw_raw(&jw, "seq", x->seq, strlen(x->seq));
    if (x->login_token[0])
        jsonw_str(&jw, "token", x->login_token);
    write_friends(w, x, &jw, &item);
    write_groups(w, x, &jw, &item, &member);
    write_offline(x, &jw, c->legacy, &item);
    if (jsonw_end(&jw) < 0 || buf_append_char(&b, '\n') < 0) {
        conn_release(w, c);
        session_end(w, c);
        reply_error(w, c, QC_LOGIN_MSG, x->has_seq ? x->seq : NULL, QC_EINTERNAL);
    } else {
        char *stash = NULL;
        if (x->count > 0 && buf_append_char(&x->stash, '\0') == 0) {
            stash = x->stash.data; /* the connection takes it */
            buf_init(&x->stash);
        }
        conn_send_stashed(w, c, x->uid, buf_head(&b), buf_used(&b), stash);
        recover_login_sent(w, c); /* chats held meanwhile, repeats of the reply dropped */
        log_info("user %d logged in on conn %u (%d offline message(s)%s%s)", x->uid, c->slot,
                 x->count, x->more ? ", more at the next login" : "",
                 x->lists_cut ? ", lists cut to limits.max_login_reply_bytes" : "");
        announce_to_online_friends(w, x);
    }
    buf_free(&b);
    buf_free(&item);
    buf_free(&member);
}

/* The connection is still the one that logged in, with the same session. */
static struct conn *still_there(struct worker *w, const struct login_ctx *x)
{
    struct conn *c = worker_conn(w, x->slot);
    return c && c->cgen == x->cgen && c->state == CONN_OPEN && c->uid == x->uid ? c : NULL;
}

/* A session on another node holds the account ([session] mode = refuse): errno 2. */
static void refuse(struct worker *w, struct conn *c, struct login_ctx *x)
{
    conn_release(w, c);
    session_end(w, c);
    reply_error(w, c, QC_LOGIN_MSG, x->has_seq ? x->seq : NULL, QC_ERESERVED2);
}

static void finish(struct worker *w, struct login_ctx *x)
{
    struct conn *c = still_there(w, x);
    if (c && x->refused) {
        refuse(w, c, x);
        conn_resume(w, c);
    } else if (c) {
        send_reply(w, c, x);
        conn_resume(w, c);
    } else if ((c = worker_conn(w, x->slot)) != NULL && c->cgen == x->cgen &&
               c->state == CONN_OPEN) {
        conn_release(w, c); /* the session was taken over meanwhile: no reply */
        conn_resume(w, c);
    }
    /* the messages not sent stay after the user's cursors */
    free_ctx(x);
}

/* ---- entry points ------------------------------------------------------- */

static void presence_known(struct worker *w, void *arg);
static void collected(void *arg, int err);

/* Chats left in the log by this node's workers so far (each worker counts its own). */
static uint64_t node_stored_mark(struct worker *w)
{
    uint64_t n = 0;
    for (uint32_t k = 0; k < w->nworkers; k++)
        n += online_stats(w->online, k)->offline_stored;
    return n;
}

/* The open session's messages read again: the first read may have missed a chat. */
static void read_again(struct worker *w, struct login_ctx *x)
{
    buf_reset(&x->stash);
    x->count = 0;
    x->more = false;
    x->max_bytes = (size_t)w->cfg.max_login_reply_bytes;
    bool cut = x->lists_cut;
    fit_lists(x); /* the room the lists leave, as the first read had it */
    x->lists_cut = cut;
    delivered_fence_take(w, x->uid, &x->fence);
    if (storage_submit(w->storage, reread_on_store, collected, x) != QC_OK)
        collected(x, QC_ESTORAGE);
}

/*
 * A checked login's job came back: check.open applies the result (and
 * frees its argument).  true: go on with the reply, the session open.
 */
static bool open_checked_session(struct worker *w, struct login_ctx *x, int err)
{
    struct conn *c = worker_conn(w, x->slot);
    if (c && (c->cgen != x->cgen || c->state != CONN_OPEN))
        c = NULL;
    x->checking = false;
    int answered = x->check.open(w, c, x->check.arg, x->check_err);
    if (c == NULL || answered) {
        if (c)
            conn_resume(w, c);
        free_ctx(x);
        return false;
    }
    conn_hold(w, c); /* chats to the new session wait behind the reply */
    if (!err && node_stored_mark(w) != x->stored_mark) {
        read_again(w, x);
        return false;
    }
    return true;
}

/* The collected lists came back: resolve who is online, then reply. */
static void collected(void *arg, int err)
{
    struct login_ctx *x = arg;
    struct worker *w = x->w;
    if (x->checking && !open_checked_session(w, x, err))
        return;
    struct conn *c = worker_conn(w, x->slot);
    if (c == NULL || c->cgen != x->cgen || c->state != CONN_OPEN) {
        free_ctx(x); /* the client left: nothing was taken from the store */
        return;
    }
    if (c->uid != x->uid) {
        conn_release(w, c); /* the session was taken over meanwhile */
        conn_resume(w, c);
        free_ctx(x);
        return;
    }
    if (err) {
        conn_release(w, c);
        session_end(w, c);
        reply_error(w, c, QC_LOGIN_MSG, x->has_seq ? x->seq : NULL, err);
        conn_resume(w, c);
        free_ctx(x);
        return;
    }
    if (x->login_token[0])
        strlcpy(c->token, x->login_token, sizeof c->token); /* for LOGINOUT's revoke */
    /*
     * In a cluster the reply waits until Redis confirms this node's
     * subscription (so a chat sent by anyone who sees the reply reaches the
     * session), and for the states of people online elsewhere.
     */
    x->token = ++next_token ? next_token : ++next_token;
    x->want_sub = route_session_started(w, x->uid, x->token);
    x->want_claim = x->want_sub && session_claim(w, c, x->token); /* mode across nodes */
    if (w->clustered)
        list_unknown(w, x);
    x->want_numsub = presence_ask(w, &x->state, presence_known, x);
    if (x->want_sub || x->want_claim || x->want_numsub) {
        x->next = waiting;
        waiting = x;
        return;
    }
    finish(w, x);
}

static struct login_ctx *ctx_new(struct worker *w, const struct conn *c, int32_t uid,
                                 const char *seq)
{
    struct login_ctx *x = calloc(1, sizeof *x);
    if (x == NULL)
        return NULL;
    x->w = w;
    x->slot = c->slot;
    x->cgen = c->cgen;
    x->uid = uid;
    x->max_count = w->cfg.max_offline_messages;
    x->max_bytes = (size_t)w->cfg.max_login_reply_bytes;
    if (seq) {
        strlcpy(x->seq, seq, sizeof x->seq);
        x->has_seq = true;
    }
    buf_init(&x->stash);
    return x;
}

bool login_reply_start(struct worker *w, struct conn *c, int32_t uid, const char *name,
                       const char *seq, const char *token_device, int64_t token_expires)
{
    struct login_ctx *x = ctx_new(w, c, uid, seq);
    if (x == NULL) {
        session_end(w, c);
        reply_error(w, c, QC_LOGIN_MSG, seq, QC_EINTERNAL);
        return true;
    }
    strlcpy(x->name, name, sizeof x->name);
    if (token_expires > 0) {
        strlcpy(x->device, token_device, sizeof x->device);
        x->token_expires = token_expires;
    }
    delivered_fence_take(w, x->uid, &x->fence);
    if (storage_submit(w->storage, collect_on_store, collected, x) != QC_OK) {
        session_end(w, c);
        reply_error(w, c, QC_LOGIN_MSG, seq, QC_ESTORAGE);
        free_ctx(x);
        return true;
    }
    conn_hold(w, c); /* chats to the new session wait behind the reply */
    return false;
}

int login_checked_start(struct worker *w, struct conn *c, int32_t uid, const char *seq,
                        const struct login_check *chk)
{
    struct login_ctx *x = ctx_new(w, c, uid, seq);
    if (x == NULL)
        return QC_EINTERNAL;
    x->checking = true;
    x->check = *chk;
    x->check_err = QC_ESTORAGE; /* until the check has run: a job never run opens nothing */
    x->stored_mark = node_stored_mark(w); /* before the read: a chat left after it shows */
    delivered_fence_take(w, x->uid, &x->fence);
    if (storage_submit(w->storage, collect_on_store, collected, x) != QC_OK) {
        x->checking = false;
        free_ctx(x);
        return QC_ESTORAGE;
    }
    c->busy = true; /* reads nothing more until the reply (conn_resume) */
    return QC_OK;
}

/* The waiting reply with token, unlinked when nothing more is awaited. */
static struct login_ctx *waiting_reply(uint32_t token, struct login_ctx ***where)
{
    for (struct login_ctx **pp = &waiting; *pp; pp = &(*pp)->next)
        if ((*pp)->token == token) {
            *where = pp;
            return *pp;
        }
    return NULL;
}

static void finish_if_complete(struct worker *w, struct login_ctx *x, struct login_ctx **where)
{
    if (x->want_sub || x->want_claim || x->want_numsub)
        return;
    *where = x->next;
    finish(w, x);
}

/* The relay told who of the login's people is online elsewhere (or could not). */
static void presence_known(struct worker *w, void *arg)
{
    struct login_ctx *x = arg, **where;
    if (waiting_reply(x->token, &where) != x)
        return;
    x->want_numsub = false;
    finish_if_complete(w, x, where);
}

void login_subscribed(struct worker *w, uint32_t token, bool failed)
{
    struct login_ctx **where, *x = waiting_reply(token, &where);
    if (x == NULL || !x->want_sub)
        return;
    if (failed)
        log_warning("user %d: redis did not confirm the subscription; replying anyway", x->uid);
    x->want_sub = false;
    finish_if_complete(w, x, where);
}

/* The session registry answered the login's claim (IPC_CLAIM_*). */
static void login_claimed(struct worker *w, uint32_t token, int32_t result)
{
    struct login_ctx **where, *x = waiting_reply(token, &where);
    if (x == NULL || !x->want_claim)
        return;
    if (result == IPC_CLAIM_UNAVAILABLE)
        log_warning("user %d: no answer from the session registry; [session] mode held on "
                    "this node only",
                    x->uid);
    x->refused = result == IPC_CLAIM_REFUSED;
    x->want_claim = false;
    finish_if_complete(w, x, where);
}

void login_relay_lost(struct worker *w)
{
    session_devices_relay_lost(w);
    presence_relay_lost(w); /* first: a reply that waited only for presence goes now */
    while (waiting) {
        struct login_ctx *x = waiting;
        waiting = x->next;
        finish(w, x);
    }
}

void login_install(struct worker *w)
{
    w->hooks.numsub_done = presence_numsub_done;
    w->hooks.subscribed = login_subscribed;
    w->hooks.claimed = login_claimed;
    w->hooks.relay_lost = login_relay_lost;
}
