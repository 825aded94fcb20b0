/*
 * handoff.c - chats handed over and not settled yet (see handoff.h).
 */
#include <stdlib.h>
#include <string.h>

#include "common/fatal.h"
#include "common/inttable.h"
#include "common/log.h"
#include "server/handoff.h"
#include "server/offline.h"
#include "server/pending.h"
#include "server/slab.h"
#include "server/worker.h"

struct handoff {
    struct slab_hdr h;
    uint32_t peer;
    int32_t uid;
    uint32_t req;
    char *payload;
    size_t len;
};

/* In-flight index: uid -> (peer << 32 | count) of unconfirmed hand-offs to workers. */
static void inflight_add(struct worker *w, int32_t uid, uint32_t peer)
{
    uint64_t v = 0;
    uint32_t count = inttable_get(w->inflight, (uint32_t)uid, &v) ? (uint32_t)v : 0;
    /* A failure only loses the ordering hint. */
    inttable_put(w->inflight, (uint32_t)uid, (uint64_t)peer << 32 | (count + 1));
}

static void inflight_del(struct worker *w, int32_t uid)
{
    uint64_t v;
    if (!inttable_get(w->inflight, (uint32_t)uid, &v))
        return;
    uint32_t count = (uint32_t)v;
    if (count <= 1)
        inttable_del(w->inflight, (uint32_t)uid);
    else
        inttable_put(w->inflight, (uint32_t)uid, (v & ~(uint64_t)UINT32_MAX) | (count - 1));
}

bool handoff_in_flight(struct worker *w, int32_t uid, uint32_t *peer)
{
    uint64_t v;
    if (!inttable_get(w->inflight, (uint32_t)uid, &v))
        return false;
    *peer = (uint32_t)(v >> 32);
    return true;
}

uint32_t handoff_keep(struct worker *w, uint32_t peer, int32_t uid, uint32_t req,
                      const char *payload, size_t len)
{
    uint32_t token;
    struct handoff *ho = slab_alloc(w->handoffs, &token);
    char *copy = ho ? malloc(len ? len : 1) : NULL;
    if (copy == NULL) {
        if (ho)
            slab_free(w->handoffs, token);
        return 0;
    }
    memcpy(copy, payload, len);
    ho->peer = peer;
    ho->uid = uid;
    ho->req = req;
    ho->payload = copy;
    ho->len = len;
    pending_add(w, req);
    if (peer < ONLINE_MAX_WORKERS)
        inflight_add(w, uid, peer);
    return token;
}

/* Forget a hand-off; its copy is first stored offline when store is set. */
static void release(struct worker *w, struct handoff *ho, uint32_t token, int err, bool store)
{
    if (store)
        err = offline_keep(w, ho->uid, ho->payload, ho->len);
    uint32_t req = ho->req;
    if (ho->peer < ONLINE_MAX_WORKERS)
        inflight_del(w, ho->uid);
    free(ho->payload);
    slab_free(w->handoffs, token);
    pending_done(w, req, err);
}

bool handoff_live(struct worker *w, uint32_t token)
{
    return slab_get(w->handoffs, token) != NULL;
}

void handoff_give_back(struct worker *w, uint32_t token)
{
    struct handoff *ho = slab_get(w->handoffs, token);
    qc_assert(ho != NULL);
    release(w, ho, token, 0, false); /* drops the reference handoff_keep took */
}

/* The hand-off token names, which must have gone to this link. */
static struct handoff *handoff_of(struct worker *w, uint32_t link, uint32_t token)
{
    struct handoff *ho = slab_get(w->handoffs, token);
    if (ho && ho->peer != link)
        qc_fatal("%s %u answered for hand-off %u, which went to %u",
                 link == RELAY_PEER ? "the relay" : "worker", link, token, ho->peer);
    return ho; /* NULL: already settled (the link was lost and found again) */
}

void handoff_confirmed(struct worker *w, uint32_t link, uint32_t token, int err)
{
    struct handoff *ho = handoff_of(w, link, token);
    if (ho)
        release(w, ho, token, err, false);
}

void handoff_published(struct worker *w, uint32_t token, uint32_t receivers, bool failed)
{
    struct handoff *ho = handoff_of(w, RELAY_PEER, token);
    if (ho == NULL)
        return;
    int err = 0;
    if (failed || receivers == 0)
        err = offline_keep(w, ho->uid, ho->payload, ho->len);
    release(w, ho, token, err, false);
}

size_t handoff_store_all_to(struct worker *w, uint32_t peer)
{
    size_t n = 0;
    for (uint32_t i = 0; i < slab_capacity(w->handoffs); i++) {
        struct handoff *ho = slab_at(w->handoffs, i);
        if (!ho->h.live || ho->peer != peer)
            continue;
        release(w, ho, slab_handle_of(w->handoffs, i), 0, true);
        n++;
    }
    return n;
}

bool handoff_waiting(struct worker *w)
{
    for (uint32_t i = 0; i < slab_capacity(w->handoffs); i++) {
        struct handoff *ho = slab_at(w->handoffs, i);
        if (ho->h.live && w->peers[ho->peer].ch.fd >= 0)
            return true;
    }
    return false;
}

void handoff_init(struct worker *w)
{
    w->handoffs = slab_new(sizeof(struct handoff));
    w->inflight = inttable_new();
    if (w->handoffs == NULL || w->inflight == NULL)
        qc_fatal("out of memory at start");
}

void handoff_shutdown(struct worker *w)
{
    size_t n = 0;
    for (uint32_t i = 0; i < slab_capacity(w->handoffs); i++) {
        struct handoff *ho = slab_at(w->handoffs, i);
        if (!ho->h.live)
            continue;
        offline_keep(w, ho->uid, ho->payload, ho->len);
        free(ho->payload);
        ho->h.live = 0;
        n++;
    }
    if (n)
        log_info("stored %zu unconfirmed hand-off(s) offline at exit", n);
    slab_destroy(w->handoffs);
    inttable_free(w->inflight);
    w->handoffs = NULL;
    w->inflight = NULL;
}
