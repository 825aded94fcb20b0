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
#include "server/session.h"
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

static void collect_online_friend(void *arg, int32_t id, const char *name)
{
    struct worker *w = ((void **)arg)[0];
    struct id_list *l = ((void **)arg)[1];
    (void)name;
    struct online_loc loc;
    /* In a cluster a friend may be online on another node: the relay finds out. */
    if (w->clustered || online_lookup(w->online, id, &loc))
        id_list_push(l, id);
}

void session_announce(struct worker *w, int32_t uid, const char *name, const char *state)
{
    struct id_list friends = { 0 };
    void *arg[2] = { w, &friends };
    if (w->st->friend_list(w->store, uid, collect_online_friend, arg) == 0)
        session_announce_to(w, uid, name, state, friends.ids, friends.n);
    free(friends.ids);
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
    if (c->sgen == 0)
        return;
    int32_t uid = c->uid;
    bool removed = online_remove(w->online, uid, c->sgen);
    c->sgen = 0;
    c->uid = 0;
    c->presence = false;
    explicit_bzero(c->token, sizeof c->token);
    w->stats->sessions--;
    /* Presence is online while any session of the user is (several devices). */
    struct online_loc other;
    if (removed && !online_lookup(w->online, uid, &other)) {
        route_session_ended(w, uid);
        session_announce(w, uid, c->name, QC_STATE_OFFLINE);
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
