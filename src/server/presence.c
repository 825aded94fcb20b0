/*
 * presence.c - cluster presence of a list of users (see presence.h): one
 * IPC_NUMSUB to the relay per ask, its answer matched back by token.
 */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "server/ipc.h"
#include "server/online.h"
#include "server/presence.h"
#include "server/route.h"
#include "server/worker.h"

/* ids asked of Redis at once: what fits in one IPC_NUMSUB packet after its header and token */
#define PRESENCE_IDS_MAX \
    ((IPC_MAX_PACKET - sizeof(struct ipc_hdr) - sizeof(struct ipc_token)) / sizeof(int32_t))

struct presence_wait {
    struct presence_wait *next;
    uint32_t token;
    struct presence_set *set;
    presence_done_fn done;
    void *arg;
};

static struct presence_wait *waiting; /* asks the relay has not answered yet */
static uint32_t next_token;

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

void presence_add(struct worker *w, struct presence_set *set, int32_t id)
{
    if (online_here(w, id) || set->n >= PRESENCE_IDS_MAX)
        return;
    if (set->n == set->cap) {
        size_t ncap = set->cap ? set->cap * 2 : 16;
        int32_t *p = realloc(set->ids, ncap * sizeof *p);
        if (p == NULL)
            return; /* unknown counts as offline */
        set->ids = p;
        set->cap = ncap;
    }
    set->ids[set->n++] = id;
}

bool presence_ask(struct worker *w, struct presence_set *set, presence_done_fn done, void *arg)
{
    if (!w->clustered || set->n == 0 || w->peers[RELAY_PEER].ch.fd < 0)
        return false;
    qsort(set->ids, set->n, sizeof *set->ids, cmp_id);
    size_t n = 1;
    for (size_t i = 1; i < set->n; i++)
        if (set->ids[i] != set->ids[n - 1])
            set->ids[n++] = set->ids[i];
    set->n = n;
    struct presence_wait *pw = malloc(sizeof *pw);
    if (pw == NULL)
        return false;
    pw->token = ++next_token ? next_token : ++next_token;
    struct ipc_token t = { .token = pw->token };
    if (route_send_relay(w, IPC_NUMSUB, &t, set->ids, set->n * sizeof *set->ids) != 0) {
        free(pw);
        return false;
    }
    pw->set = set;
    pw->done = done;
    pw->arg = arg;
    pw->next = waiting;
    waiting = pw;
    return true;
}

bool presence_online(struct worker *w, const struct presence_set *set, int32_t id)
{
    if (online_here(w, id))
        return true;
    if (set->remote == NULL)
        return false;
    const int32_t *hit = bsearch(&id, set->ids, set->n, sizeof id, cmp_id);
    return hit && set->remote[hit - set->ids];
}

void presence_free(struct presence_set *set)
{
    free(set->ids);
    free(set->remote);
    memset(set, 0, sizeof *set);
}

void presence_numsub_done(struct worker *w, uint32_t token, const uint8_t *online, size_t n,
                          bool failed)
{
    struct presence_wait **pp = &waiting;
    while (*pp && (*pp)->token != token)
        pp = &(*pp)->next;
    struct presence_wait *pw = *pp;
    if (pw == NULL)
        return;
    *pp = pw->next;
    struct presence_set *set = pw->set;
    if (!failed && n == set->n && (set->remote = malloc(n)) != NULL)
        memcpy(set->remote, online, n);
    else if (failed)
        log_warning("cluster presence unknown (redis unavailable)");
    pw->done(w, pw->arg);
    free(pw);
}

void presence_relay_lost(struct worker *w)
{
    while (waiting) {
        struct presence_wait *pw = waiting;
        waiting = pw->next;
        pw->done(w, pw->arg);
        free(pw);
    }
}
