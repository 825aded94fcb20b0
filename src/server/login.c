/*
 * login.c - building the LOGIN_MSG_ACK (see login.h).
 *
 * Three steps.  collect: friends, groups with their members, and the offline
 * messages (taken from storage last, into a stash that is restored if the
 * reply is never written).  resolve: who is online, from the online table,
 * then from Redis for the rest when this node is part of a cluster.
 * serialize: the seed's encoding, each friend, group and member a JSON
 * object serialized into a string inside the arrays.
 */
#include <stdlib.h>
#include <string.h>

#include "common/jsonw.h"
#include "common/log.h"
#include "server/conn.h"
#include "server/ipc.h"
#include "server/login.h"
#include "server/offline.h"
#include "server/reply.h"
#include "server/route.h"
#include "server/session.h"
#include "server/worker.h"

#define LOGIN_CHECK_MAX (IPC_MAX_PACKET / sizeof(int32_t)) /* ids asked of Redis at once */

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
    uint32_t token;
    uint32_t slot, cgen;
    int32_t uid;
    char name[QC_NAME_MAX + 1];
    char seq[QC_SEQ_MAX + 1];
    bool has_seq;
    char login_token[QC_TOKEN_MAX + 1]; /* a login token issued with this login, "" none */
    struct person *friends;
    size_t nfriends, capfriends;
    struct group_info *groups;
    size_t ngroups, capgroups;
    struct buf stash; /* offline messages, one per line */
    int count;
    int dropped;
    int err;
    bool want_numsub; /* waiting for the relay's NUMSUB answer */
    bool want_sub;    /* waiting for Redis to confirm our SUBSCRIBE */
    int32_t *check;   /* sorted ids not online here */
    uint8_t *remote;  /* 1: online on another node */
    size_t ncheck;
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

static void add_member(void *arg, int32_t id, const char *name, const char *role)
{
    struct group_info *g = ((void **)arg)[0];
    struct login_ctx *x = ((void **)arg)[1];
    if (grow((void **)&g->members, &g->cap, g->n, sizeof *g->members) < 0 ||
        (g->members[g->n].name = strdup(name)) == NULL) {
        x->err = QC_EINTERNAL;
        return;
    }
    g->members[g->n].id = id;
    g->members[g->n].role = strcmp(role, QC_ROLE_CREATOR) == 0 ? QC_ROLE_CREATOR : QC_ROLE_NORMAL;
    g->n++;
}

static void add_offline(void *arg, const char *msg, size_t len)
{
    struct login_ctx *x = arg;
    size_t at = buf_used(&x->stash);
    if (buf_append(&x->stash, msg, len) < 0 || buf_append_char(&x->stash, '\n') < 0) {
        x->err = QC_EINTERNAL;
        return;
    }
    /* A raw newline in JSON text is whitespace: a space keeps one message per line. */
    for (char *p = buf_head(&x->stash) + at, *end = p + len; p < end; p++)
        if (*p == '\n')
            *p = ' ';
    x->count++;
}

static void free_ctx(struct login_ctx *x)
{
    explicit_bzero(x->login_token, sizeof x->login_token);
    for (size_t i = 0; i < x->nfriends; i++)
        free(x->friends[i].name);
    free(x->friends);
    for (size_t i = 0; i < x->ngroups; i++) {
        struct group_info *g = &x->groups[i];
        for (size_t j = 0; j < g->n; j++)
            free(g->members[j].name);
        free(g->members);
        free(g->name);
        free(g->desc);
    }
    free(x->groups);
    buf_free(&x->stash);
    free(x->check);
    free(x->remote);
    free(x);
}

static int collect(struct worker *w, struct login_ctx *x)
{
    int err = w->st->friend_list(w->store, x->uid, add_friend, x);
    if (!err && !x->err)
        err = w->st->user_groups(w->store, x->uid, add_group, x);
    for (size_t i = 0; i < x->ngroups && !err && !x->err; i++) {
        void *arg[2] = { &x->groups[i], x };
        err = w->st->group_members(w->store, x->groups[i].id, add_member, arg);
        if (err == QC_ENOGROUP)
            err = 0; /* deleted meanwhile: listed empty */
    }
    /* Taken last: once deleted from storage, the messages ride in the stash. */
    if (!err && !x->err)
        err = w->st->offline_take(w->store, x->uid, add_offline, x, &x->dropped);
    return err ? err : x->err;
}

/* ---- resolve ------------------------------------------------------------ */

static int cmp_id(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static bool online_here(struct worker *w, int32_t id)
{
    struct online_loc loc;
    return online_lookup(w->online, id, &loc);
}

static void want_check(struct worker *w, struct login_ctx *x, int32_t id, size_t *cap)
{
    if (id == x->uid || online_here(w, id) || x->ncheck >= LOGIN_CHECK_MAX)
        return;
    if (grow((void **)&x->check, cap, x->ncheck, sizeof *x->check) == 0)
        x->check[x->ncheck++] = id;
}

/* The ids whose state only Redis knows: sorted, unique. */
static void list_unknown(struct worker *w, struct login_ctx *x)
{
    size_t cap = 0;
    for (size_t i = 0; i < x->nfriends; i++)
        want_check(w, x, x->friends[i].id, &cap);
    for (size_t i = 0; i < x->ngroups; i++)
        for (size_t j = 0; j < x->groups[i].n; j++)
            want_check(w, x, x->groups[i].members[j].id, &cap);
    if (x->ncheck == 0)
        return;
    qsort(x->check, x->ncheck, sizeof *x->check, cmp_id);
    size_t n = 1;
    for (size_t i = 1; i < x->ncheck; i++)
        if (x->check[i] != x->check[n - 1])
            x->check[n++] = x->check[i];
    x->ncheck = n;
}

static const char *state_text(struct worker *w, const struct login_ctx *x, int32_t id)
{
    if (id == x->uid || online_here(w, id))
        return QC_STATE_ONLINE;
    if (x->remote) {
        const int32_t *hit = bsearch(&id, x->check, x->ncheck, sizeof id, cmp_id);
        if (hit && x->remote[hit - x->check])
            return QC_STATE_ONLINE;
    }
    return QC_STATE_OFFLINE;
}

/* ---- serialize ---------------------------------------------------------- */

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
        string_item(jw, item, &gw);
    }
    jsonw_array_end(jw);
}

static void write_offline(const struct login_ctx *x, struct jsonw *jw)
{
    if (x->count == 0)
        return;
    jsonw_array_begin(jw, "offlinemsg");
    const char *p = buf_head(&x->stash), *end = p + buf_used(&x->stash);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        jsonw_array_str(jw, p, (size_t)(nl - p));
        p = nl + 1;
    }
    jsonw_array_end(jw);
}

/* Put taken messages back when no reply will carry them. */
static void restore_stash(struct worker *w, struct login_ctx *x)
{
    if (x->count > 0 && buf_append_char(&x->stash, '\0') == 0)
        offline_keep_stash(w, x->uid, buf_head(&x->stash));
    x->count = 0;
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
    write_offline(x, &jw);
    if (x->dropped > 0)
        jsonw_int(&jw, "offlinedropped", x->dropped);
    if (jsonw_end(&jw) < 0 || buf_append_char(&b, '\n') < 0) {
        restore_stash(w, x);
        session_end(w, c);
        reply_error(w, c, QC_LOGIN_MSG, x->has_seq ? x->seq : NULL, QC_EINTERNAL);
    } else {
        char *stash = NULL;
        if (x->count > 0 && buf_append_char(&x->stash, '\0') == 0) {
            stash = x->stash.data; /* the connection takes it */
            buf_init(&x->stash);
        }
        conn_send_stashed(w, c, x->uid, buf_head(&b), buf_used(&b), stash);
        log_info("user %d logged in on conn %u (%d offline message(s))", x->uid, c->slot, x->count);
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

static void finish(struct worker *w, struct login_ctx *x)
{
    struct conn *c = still_there(w, x);
    if (c) {
        send_reply(w, c, x);
        conn_resume(w, c);
    } else {
        restore_stash(w, x); /* the client left before its reply */
    }
    free_ctx(x);
}

/* ---- entry points ------------------------------------------------------- */

bool login_reply_start(struct worker *w, struct conn *c, int32_t uid, const char *name,
                       const char *seq, const char *token)
{
    struct login_ctx *x = calloc(1, sizeof *x);
    if (x == NULL) {
        session_end(w, c);
        reply_error(w, c, QC_LOGIN_MSG, seq, QC_EINTERNAL);
        return true;
    }
    x->slot = c->slot;
    x->cgen = c->cgen;
    x->uid = uid;
    strlcpy(x->name, name, sizeof x->name);
    if (seq) {
        strlcpy(x->seq, seq, sizeof x->seq);
        x->has_seq = true;
    }
    if (token)
        strlcpy(x->login_token, token, sizeof x->login_token);
    buf_init(&x->stash);
    int err = collect(w, x);
    if (err) {
        restore_stash(w, x);
        session_end(w, c);
        reply_error(w, c, QC_LOGIN_MSG, seq, err);
        free_ctx(x);
        return true;
    }
    /*
     * In a cluster the reply waits until Redis confirms this node's
     * subscription (so a chat sent by anyone who sees the reply reaches the
     * session), and for the states of people online elsewhere.
     */
    x->token = ++next_token ? next_token : ++next_token;
    x->want_sub = route_session_started(w, uid, x->token);
    if (w->clustered)
        list_unknown(w, x);
    if (x->ncheck > 0 && w->peers[RELAY_PEER].ch.fd >= 0) {
        struct ipc_token t = { .token = x->token };
        x->want_numsub =
            route_send_relay(w, IPC_NUMSUB, &t, x->check, x->ncheck * sizeof *x->check) == 0;
    }
    if (x->want_sub || x->want_numsub) {
        x->next = waiting;
        waiting = x;
        return false;
    }
    send_reply(w, c, x);
    free_ctx(x);
    return true;
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
    if (x->want_sub || x->want_numsub)
        return;
    *where = x->next;
    finish(w, x);
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

void login_numsub_done(struct worker *w, uint32_t token, const uint8_t *online, size_t n,
                       bool failed)
{
    struct login_ctx **where, *x = waiting_reply(token, &where);
    if (x == NULL || !x->want_numsub)
        return;
    if (!failed && n == x->ncheck && (x->remote = malloc(n)) != NULL)
        memcpy(x->remote, online, n);
    else if (failed)
        log_warning("cluster presence unknown for user %d's login (redis unavailable)", x->uid);
    x->want_numsub = false;
    finish_if_complete(w, x, where);
}

void login_relay_lost(struct worker *w)
{
    while (waiting) {
        struct login_ctx *x = waiting;
        waiting = x->next;
        finish(w, x);
    }
}

void login_install(struct worker *w)
{
    w->hooks.numsub_done = login_numsub_done;
    w->hooks.subscribed = login_subscribed;
    w->hooks.relay_lost = login_relay_lost;
}
