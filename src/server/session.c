/*
 * session.c - how a session ends, and presence notices (see session.h).
 */
#include <stdlib.h>
#include <string.h>

#include "common/jsonw.h"
#include "common/log.h"
#include "server/conn.h"
#include "server/reply.h"
#include "server/route.h"
#include "server/recover.h"
#include "server/service_session.h"
#include "server/session.h"
#include "server/storage.h"
#include "server/worker.h"

#define ID_LIST_MIN 64 /* initial room for a list of ids */

void id_list_push(struct id_list *l, int32_t id)
{
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : ID_LIST_MIN;
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

/* A presence change whose friend list is read on the storage thread. */
struct announce {
    struct worker *w;
    int32_t uid;
    char name[QC_NAME_MAX + 1];
    const char *state; /* static text */
    struct id_list friends;
};

static void collect_friend(void *arg, int32_t id, const char *name)
{
    struct announce *a = arg;
    (void)name;
    id_list_push(&a->friends, id);
}

static int list_friends_on_store(const struct store_ops *ops, struct store *st, void *arg)
{
    struct announce *a = arg;
    int err = ops->friend_list(st, a->uid, collect_friend, a);
    return err ? err : a->friends.err;
}

/* Back on the worker: tell the friends online here (in a cluster: the relay finds out). */
static void friends_listed(void *arg, int err)
{
    struct announce *a = arg;
    struct worker *w = a->w;
    size_t n = 0;
    for (size_t i = 0; !err && i < a->friends.n; i++) {
        struct online_loc loc;
        if (w->clustered || online_lookup(w->online, a->friends.ids[i], &loc))
            a->friends.ids[n++] = a->friends.ids[i];
    }
    if (!err)
        session_announce_to(w, a->uid, a->name, a->state, a->friends.ids, n);
    free(a->friends.ids);
    free(a);
}

void session_announce(struct worker *w, int32_t uid, const char *name, const char *state)
{
    struct announce *a = calloc(1, sizeof *a);
    if (a == NULL)
        return; /* presence is best effort */
    a->w = w;
    a->uid = uid;
    strlcpy(a->name, name, sizeof a->name);
    a->state = strcmp(state, QC_STATE_ONLINE) == 0 ? QC_STATE_ONLINE : QC_STATE_OFFLINE;
    if (storage_submit(w->storage, list_friends_on_store, friends_listed, a) != QC_OK)
        friends_listed(a, QC_ESTORAGE);
}

void session_announce_to(struct worker *w, int32_t uid, const char *name, const char *state,
                         const int32_t *ids, size_t n)
{
    if (n == 0)
        return;
    struct buf b = worker_buf_take(w);
    struct jsonw jw;
    jsonw_begin(&jw, &b);
    jsonw_int(&jw, "msgid", QC_PRESENCE_MSG);
    jsonw_int(&jw, "id", uid);
    jsonw_str(&jw, "name", name);
    jsonw_str(&jw, "state", state);
    if (jsonw_end(&jw) == 0 && buf_append_char(&b, '\n') == 0)
        for (size_t i = 0; i < n; i++)
            route_notice(w, ids[i], buf_head(&b), buf_used(&b));
    worker_buf_give(w, &b);
}

void session_end(struct worker *w, struct conn *c)
{
    recover_forget(w, c); /* chats waiting behind a fill from the log: in the log */
    if (c->sgen == 0)
        return;
    int32_t uid = c->uid;
    uint32_t gen = c->sgen;
    bool removed = online_remove(w->online, uid, gen);
    c->sgen = 0;
    c->uid = 0;
    c->presence = false;
    explicit_bzero(c->token, sizeof c->token);
    c->receipts = c->typing = false;
    w->stats->sessions--;
    if (removed)
        session_registry_end(w, uid, gen);
    /* Presence is online while any session of the user is (several devices, several nodes). */
    struct online_loc other;
    if (removed && !online_lookup(w->online, uid, &other)) {
        route_session_ended(w, uid);
        session_last_here_ended(w, uid, c->name);
    }
    log_debug("user %d: session ended on conn %u", uid, c->slot);
}

void session_kick(struct worker *w, int32_t uid, uint32_t slot, uint32_t gen, const char *reason)
{
    struct conn *c = conn_of_session(w, uid, slot, gen);
    if (c == NULL)
        return;
    log_info("user %d: session on conn %u ended (%s)", uid, slot, reason);
    reply_kick(w, c, reason);
    conn_close_gracefully(w, c);
}

void session_install(struct worker *w)
{
    w->hooks.session_closing = session_end;
    w->hooks.kick = session_kick;
}
