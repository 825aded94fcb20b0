/*
 * route.c - routing inside the node, hand-offs between workers, and the
 * pending requests whose ACK waits for their deliveries (see route.h).
 *
 * Two handle tables ("slabs") live in each worker:
 *   pending  - one entry per request being routed; counts deliveries not yet
 *              safe, sends the ACK (or the error) when the count hits zero;
 *   handoffs - one entry per chat handed to another worker, holding a copy of
 *              the payload until that worker confirms; if the peer dies first
 *              the copy is stored offline.
 * A handle is an index with a generation in its high bits, so a late or
 * duplicate confirmation can never complete someone else's entry.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "common/log.h"
#include "server/conn.h"
#include "server/ipc.h"
#include "server/login.h"
#include "server/route.h"
#include "server/service.h"
#include "server/slab.h"
#include "server/worker.h"

#define PEER_READS_PER_EVENT 256

struct pending {
    struct slab_hdr h;
    uint32_t slot, cgen;
    int msgid;
    int err;
    int outstanding;
    int64_t mid;
    int32_t groupid;
    char seq[QC_SEQ_MAX + 1];
};

struct handoff {
    struct slab_hdr h;
    uint32_t peer;
    int32_t uid;
    uint32_t req;
    char *payload;
    size_t len;
};

/* ---- chats in flight to a worker, by recipient ------------------------------ */

/*
 * uid -> (peer, count) for chats handed to another worker and not confirmed:
 * open addressing, linear probing, deletion by backward shift (no
 * tombstones).  route_chat asks it when the recipient just went offline.
 */
#define INFLIGHT_MIN 64

struct inflight_entry {
    int32_t uid; /* 0: empty */
    uint32_t peer;
    uint32_t count;
};

struct inflight {
    struct inflight_entry *e;
    uint32_t mask, used;
};

static struct inflight *inflight_new(void)
{
    struct inflight *m = calloc(1, sizeof *m);
    if (m && (m->e = calloc(INFLIGHT_MIN, sizeof *m->e)) == NULL) {
        free(m);
        return NULL;
    }
    if (m)
        m->mask = INFLIGHT_MIN - 1;
    return m;
}

static uint32_t inflight_home(const struct inflight *m, int32_t uid)
{
    return ((uint32_t)uid * 0x9e3779b1u) & m->mask;
}

static struct inflight_entry *inflight_find(struct inflight *m, int32_t uid)
{
    for (uint32_t i = inflight_home(m, uid); m->e[i].uid; i = (i + 1) & m->mask)
        if (m->e[i].uid == uid)
            return &m->e[i];
    return NULL;
}

static int inflight_grow(struct inflight *m)
{
    struct inflight old = *m;
    uint32_t cap = (old.mask + 1) * 2;
    struct inflight_entry *e = calloc(cap, sizeof *e);
    if (e == NULL)
        return -1;
    m->e = e;
    m->mask = cap - 1;
    for (uint32_t i = 0; i <= old.mask; i++)
        if (old.e[i].uid) {
            uint32_t j = inflight_home(m, old.e[i].uid);
            while (m->e[j].uid)
                j = (j + 1) & m->mask;
            m->e[j] = old.e[i];
        }
    free(old.e);
    return 0;
}

/* One more chat for uid in flight to peer (a failure only loses the ordering hint). */
static void inflight_add(struct inflight *m, int32_t uid, uint32_t peer)
{
    struct inflight_entry *x = inflight_find(m, uid);
    if (x == NULL) {
        if ((m->used + 1) * 2 > m->mask + 1 && inflight_grow(m) < 0)
            return;
        uint32_t i = inflight_home(m, uid);
        while (m->e[i].uid)
            i = (i + 1) & m->mask;
        x = &m->e[i];
        x->uid = uid;
        x->count = 0;
        m->used++;
    }
    x->peer = peer;
    x->count++;
}

static void inflight_del(struct inflight *m, int32_t uid)
{
    struct inflight_entry *x = inflight_find(m, uid);
    if (x == NULL || --x->count > 0)
        return;
    uint32_t i = (uint32_t)(x - m->e);
    m->e[i].uid = 0;
    m->used--;
    /* Backward shift: entries after the hole move up if their home allows. */
    for (uint32_t j = (i + 1) & m->mask; m->e[j].uid; j = (j + 1) & m->mask) {
        uint32_t home = inflight_home(m, m->e[j].uid);
        if (((j - home) & m->mask) >= ((j - i) & m->mask)) {
            m->e[i] = m->e[j];
            m->e[j].uid = 0;
            i = j;
        }
    }
}

/* ---- hand-offs ------------------------------------------------------------ */

/* Keep a copy of a chat handed to peer until it is confirmed; 0 when out of memory. */
static uint32_t handoff_keep(struct worker *w, uint32_t peer, int32_t uid, uint32_t req,
                             const char *payload, size_t len)
{
    uint32_t token;
    struct handoff *ho = slab_alloc(w->handoffs, &token);
    char *copy = ho ? malloc(len) : NULL;
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
    if (peer < ONLINE_MAX_WORKERS)
        inflight_add(w->inflight, uid, peer);
    return token;
}

/* Forget a hand-off; its copy is first stored offline when store is set. */
static void handoff_release(struct worker *w, struct handoff *ho, uint32_t token, int err,
                            bool store)
{
    if (store)
        err = route_store_offline(w, ho->uid, ho->payload, ho->len);
    uint32_t req = ho->req;
    if (ho->peer < ONLINE_MAX_WORKERS)
        inflight_del(w->inflight, ho->uid);
    free(ho->payload);
    slab_free(w->handoffs, token);
    pending_done(w, req, err);
}

/* ---- pending requests -------------------------------------------------- */

uint32_t pending_open(struct worker *w, struct conn *c, int msgid, const char *seq)
{
    uint32_t handle;
    struct pending *p = slab_alloc(w->pending, &handle);
    if (p == NULL)
        return 0;
    p->slot = c->slot;
    p->cgen = c->cgen;
    p->msgid = msgid;
    p->outstanding = 1; /* the opener's reference */
    if (seq)
        strlcpy(p->seq, seq, sizeof p->seq);
    return handle;
}

void pending_set_mid(struct worker *w, uint32_t req, int64_t mid)
{
    struct pending *p = slab_get(w->pending, req);
    if (p)
        p->mid = mid;
}

void pending_set_groupid(struct worker *w, uint32_t req, int32_t groupid)
{
    struct pending *p = slab_get(w->pending, req);
    if (p)
        p->groupid = groupid;
}

static void pending_add(struct worker *w, uint32_t req)
{
    struct pending *p = slab_get(w->pending, req);
    if (p)
        p->outstanding++;
}

void pending_done(struct worker *w, uint32_t req, int err)
{
    struct pending *p = slab_get(w->pending, req);
    if (p == NULL)
        return;
    if (err && !p->err)
        p->err = err;
    if (--p->outstanding > 0)
        return;
    struct conn *c = worker_conn(w, p->slot);
    if (c && c->cgen == p->cgen && c->state == CONN_OPEN && (p->seq[0] || p->err))
        service_send_ack(w, c, p->msgid, p->seq[0] ? p->seq : NULL, p->err, p->err ? 0 : p->mid,
                         p->err ? 0 : p->groupid);
    slab_free(w->pending, req);
}

/* ---- offline fallback -------------------------------------------------- */

int route_store_offline(struct worker *w, int32_t uid, const char *payload, size_t len)
{
    int err = w->st->offline_store(w->store, &uid, 1, payload, len);
    if (err) {
        log_error("offline store for user %d failed: %s; message lost", uid, qc_strerror(err));
        w->stats->store_failures++;
        w->stats->store_failed_ms = w->now_ms;
        return err;
    }
    w->stats->offline_stored++;
    return 0;
}

int route_store_offline_checked(struct worker *w, int32_t uid, const char *payload, size_t len)
{
    struct store_user u;
    int err = w->st->user_get(w->store, uid, &u);
    explicit_bzero(u.password, sizeof u.password);
    return err ? err : route_store_offline(w, uid, payload, len);
}

int route_restore_stash(struct worker *w, int32_t uid, const char *stash)
{
    int first_err = 0;
    for (const char *p = stash; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        int err = route_store_offline(w, uid, p, n);
        if (err && !first_err)
            first_err = err;
        p += n + (nl != NULL);
    }
    return first_err;
}

/* ---- peer links -------------------------------------------------------- */

static void queue_packet(struct peer *pe, const struct ipc_hdr *h, const void *payload, size_t len)
{
    uint32_t total = (uint32_t)(sizeof *h + len);
    if (buf_append(&pe->queue, &total, sizeof total) < 0 ||
        buf_append(&pe->queue, h, sizeof *h) < 0 ||
        (len && buf_append(&pe->queue, payload, len) < 0))
        log_error("peer queue: out of memory; the peer's confirmations will decide");
}

static void watch_peer_output(struct worker *w, uint32_t peer, bool on)
{
    struct peer *pe = &w->peers[peer];
    if (pe->want_write == on)
        return;
    pe->want_write = on;
    worker_rewatch(w, pe->fd, EPOLLIN | (on ? EPOLLOUT : 0), SRC_PEER, peer);
}

/*
 * A send failed because the peer is gone.  Its last packets (confirmations
 * of chats it did write) may still wait in our receive queue: read them
 * first, so that only what it really never confirmed is stored offline.
 */
static void read_peer(struct worker *w, uint32_t peer, int max_reads);

static void link_broken(struct worker *w, uint32_t peer)
{
    struct peer *pe = &w->peers[peer];
    if (pe->broken)
        return; /* already draining it (a send while reading its last packets) */
    pe->broken = true;
    read_peer(w, peer, INT_MAX); /* all of it: ends in route_peer_lost at end of stream */
    route_peer_lost(w, peer);    /* no-op if that already happened */
}

/* Send a packet to a peer, queueing behind anything already waiting. 0 or -1 (link lost). */
static int peer_send(struct worker *w, uint32_t peer, const struct ipc_hdr *h, const void *payload,
                     size_t len)
{
    struct peer *pe = &w->peers[peer];
    if (pe->fd < 0 || pe->broken)
        return -1;
    if (buf_used(&pe->queue) == 0) {
        if (ipc_send(pe->fd, h, payload, len, -1) == 0)
            return 0;
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) {
            link_broken(w, peer);
            return -1;
        }
    }
    queue_packet(pe, h, payload, len);
    watch_peer_output(w, peer, true);
    return 0;
}

void route_peer_output(struct worker *w, uint32_t peer)
{
    struct peer *pe = &w->peers[peer];
    while (buf_used(&pe->queue) >= sizeof(uint32_t)) {
        uint32_t total;
        memcpy(&total, buf_head(&pe->queue), sizeof total);
        const char *pkt = buf_head(&pe->queue) + sizeof total;
        struct ipc_hdr h;
        memcpy(&h, pkt, sizeof h);
        if (ipc_send(pe->fd, &h, pkt + sizeof h, total - sizeof h, -1) < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
                return;
            link_broken(w, peer);
            return;
        }
        buf_consume(&pe->queue, sizeof total + total);
    }
    buf_free(&pe->queue);
    watch_peer_output(w, peer, false);
}

void route_peer_lost(struct worker *w, uint32_t peer)
{
    struct peer *pe = &w->peers[peer];
    if (pe->fd < 0)
        return;
    log_msg(w->stopping ? LOG_LEVEL_INFO : LOG_LEVEL_WARNING,
            "link to %s %u closed; its unconfirmed hand-offs go offline",
            peer == RELAY_PEER ? "the relay" : "worker", peer);
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, pe->fd, NULL);
    close(pe->fd);
    pe->fd = -1;
    pe->want_write = false;
    pe->broken = false;
    buf_free(&pe->queue);
    size_t n = 0;
    for (uint32_t i = 0; i < slab_capacity(w->handoffs); i++) {
        struct handoff *ho = slab_at(w->handoffs, i);
        if (!ho->h.live || ho->peer != peer)
            continue;
        handoff_release(w, ho, slab_handle_of(w->handoffs, i), 0, true);
        n++;
    }
    if (n)
        log_info("stored %zu unconfirmed hand-off(s) to %s %u offline", n,
                 peer == RELAY_PEER ? "the relay" : "worker", peer);
    if (peer == RELAY_PEER)
        login_relay_lost(w);
}

static void confirm_to(struct worker *w, uint32_t origin, uint32_t token, int err)
{
    if (token == 0)
        return; /* nobody waits */
    struct ipc_hdr h = {
        .type = IPC_CONFIRM, .from = (uint16_t)w->index, .token = token, .flags = (uint32_t)err
    };
    peer_send(w, origin, &h, NULL, 0); /* a dead origin stored its copy already */
}

void route_mark_done(struct worker *w, uint32_t origin, uint32_t token, int err)
{
    if (token == 0)
        return;
    if (origin == w->index)
        pending_done(w, token, err);
    else
        confirm_to(w, origin, token, err);
}

static void confirm_handoff(struct worker *w, uint32_t token, int err)
{
    struct handoff *ho = slab_get(w->handoffs, token);
    if (ho)
        handoff_release(w, ho, token, err, false);
}

/* The relay's PUBLISH of a chat was answered: receivers elsewhere, or store it. */
static void publish_answered(struct worker *w, uint32_t token, uint32_t receivers, bool failed)
{
    struct handoff *ho = slab_get(w->handoffs, token);
    if (ho == NULL)
        return;
    int err = 0;
    if (failed || receivers == 0)
        err = route_store_offline_checked(w, ho->uid, ho->payload, ho->len);
    handoff_release(w, ho, token, err, false);
}

/* The session a packet names, if it is still here. */
static struct conn *session_conn(struct worker *w, int32_t uid, uint32_t slot, uint32_t gen)
{
    struct conn *c = worker_conn(w, slot);
    if (c && c->state == CONN_OPEN && c->uid == uid && c->sgen == gen)
        return c;
    return NULL;
}

/* The session of uid on this worker now, whatever its generation. */
static struct conn *local_session(struct worker *w, int32_t uid)
{
    struct online_loc loc;
    if (!online_lookup(w->online, uid, &loc) || loc.worker != w->index)
        return NULL;
    return session_conn(w, uid, loc.slot, loc.gen);
}

static void accept_delivery(struct worker *w, const struct ipc_hdr *h, const char *payload,
                            size_t len)
{
    struct conn *c = session_conn(w, h->uid, h->slot, h->gen);
    if (c == NULL)
        c = local_session(w, h->uid);
    if (h->flags & IPC_F_NOTICE) {
        if (c && c->presence)
            conn_send(w, c, payload, len);
        return;
    }
    if (h->flags & IPC_F_STORE)
        c = NULL; /* the relay asks only for storage */
    if (c) {
        conn_send_chat(w, c, h->uid, payload, len, h->from, h->token);
        return;
    }
    /* The session vanished in between: keep the message for the next login. */
    confirm_to(w, h->from, h->token, route_store_offline(w, h->uid, payload, len));
}

void route_peer_input(struct worker *w, uint32_t peer)
{
    read_peer(w, peer, PEER_READS_PER_EVENT);
}

/* Read and handle up to max_reads packets; a closed link ends in route_peer_lost. */
static void read_peer(struct worker *w, uint32_t peer, int max_reads)
{
    struct peer *pe = &w->peers[peer];
    for (int i = 0; i < max_reads && pe->fd >= 0; i++) {
        struct ipc_hdr h;
        int passed;
        ssize_t n = ipc_recv(pe->fd, &h, w->ipcbuf, IPC_MAX_PACKET, &passed);
        if (passed >= 0)
            close(passed); /* peers never pass descriptors */
        if (n == -2) {
            route_peer_lost(w, peer);
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EBADMSG) {
                log_error("bad packet from worker %u ignored", peer);
                continue;
            }
            route_peer_lost(w, peer);
            return;
        }
        switch (h.type) {
        case IPC_DELIVER: accept_delivery(w, &h, w->ipcbuf, (size_t)n); break;
        case IPC_CONFIRM: confirm_handoff(w, h.token, (int)h.flags); break;
        case IPC_KICK: service_kick_session(w, h.uid, h.slot, h.gen, "logged in elsewhere"); break;
        case IPC_PUBLISHED: publish_answered(w, h.token, h.gen, h.flags != 0); break;
        case IPC_NUMSUB_REPLY:
            login_numsub_done(w, h.token, (const uint8_t *)w->ipcbuf, (size_t)n, h.flags != 0);
            break;
        case IPC_SUBSCRIBED: login_subscribed(w, h.token, h.flags != 0); break;
        default: log_error("unknown packet type %u from worker %u ignored", h.type, peer);
        }
    }
}

/* ---- routing ----------------------------------------------------------- */

static int hand_over(struct worker *w, const struct online_loc *loc, int32_t uid,
                     const char *payload, size_t len, uint32_t req, uint32_t flags, uint16_t type)
{
    uint32_t token = 0;
    if (flags & IPC_F_CHAT) {
        if ((token = handoff_keep(w, loc->worker, uid, req, payload, len)) == 0)
            return -1;
        pending_add(w, req);
    }
    struct ipc_hdr h = { .type = type,
                         .from = (uint16_t)w->index,
                         .token = token,
                         .uid = uid,
                         .slot = loc->slot,
                         .gen = loc->gen,
                         .flags = flags };
    if (peer_send(w, loc->worker, &h, payload, len) == 0)
        return 0;
    /*
     * No link: give the copy back, the caller stores the chat.  A link that
     * broke while sending was handled by route_peer_lost (copy stored): done.
     */
    struct handoff *ho = token ? slab_get(w->handoffs, token) : NULL;
    if (ho) {
        handoff_release(w, ho, token, 0, false);
        return -1;
    }
    return token ? 0 : -1;
}

int route_send_relay(struct worker *w, const struct ipc_hdr *h, const void *payload, size_t len)
{
    return w->clustered ? peer_send(w, RELAY_PEER, h, payload, len) : -1;
}

/* Not on this node: PUBLISH through the relay, keeping a copy until it answers. */
static int publish_elsewhere(struct worker *w, int32_t uid, const char *payload, size_t len,
                             uint32_t req, uint32_t flags)
{
    if (!w->clustered || w->peers[RELAY_PEER].fd < 0)
        return -1;
    struct online_loc relay = { .worker = RELAY_PEER };
    if (flags & IPC_F_CHAT)
        return hand_over(w, &relay, uid, payload, len, req, flags, IPC_PUBLISH);
    struct ipc_hdr h = {
        .type = IPC_PUBLISH, .from = (uint16_t)w->index, .uid = uid, .flags = flags
    };
    return peer_send(w, RELAY_PEER, &h, payload, len);
}

bool route_session_started(struct worker *w, int32_t uid, uint32_t token)
{
    if (!w->clustered || w->peers[RELAY_PEER].fd < 0)
        return false;
    struct ipc_hdr kick = {
        .type = IPC_PUBLISH, .from = (uint16_t)w->index, .uid = uid, .flags = IPC_F_KICK
    };
    struct ipc_hdr sub = {
        .type = IPC_SUB, .from = (uint16_t)w->index, .uid = uid, .token = token
    };
    peer_send(w, RELAY_PEER, &kick, NULL, 0);
    return peer_send(w, RELAY_PEER, &sub, NULL, 0) == 0 && token != 0;
}

void route_session_ended(struct worker *w, int32_t uid)
{
    struct ipc_hdr h = { .type = IPC_UNSUB, .from = (uint16_t)w->index, .uid = uid };
    if (w->clustered)
        peer_send(w, RELAY_PEER, &h, NULL, 0);
}

/*
 * A worker that still holds unconfirmed hand-offs of ours for uid (its
 * session just ended there): the next chat goes the same way, so that worker
 * stores it after the earlier ones and the offline queue keeps send order.
 */
static bool handoff_in_flight(struct worker *w, int32_t uid, struct online_loc *loc)
{
    struct inflight_entry *x = inflight_find(w->inflight, uid);
    if (x == NULL || w->peers[x->peer].fd < 0)
        return false;
    *loc = (struct online_loc){ .worker = x->peer };
    return true;
}

enum route_result route_chat(struct worker *w, int32_t uid, const char *payload, size_t len,
                             uint32_t req)
{
    struct online_loc loc;
    if (!online_lookup(w->online, uid, &loc)) {
        if (handoff_in_flight(w, uid, &loc) &&
            hand_over(w, &loc, uid, payload, len, req, IPC_F_CHAT, IPC_DELIVER) == 0)
            return ROUTE_SENT;
        return publish_elsewhere(w, uid, payload, len, req, IPC_F_CHAT) == 0 ? ROUTE_SENT
                                                                             : ROUTE_OFFLINE;
    }
    if (loc.worker == w->index) {
        struct conn *c = session_conn(w, uid, loc.slot, loc.gen);
        if (c == NULL)
            return ROUTE_OFFLINE;
        pending_add(w, req);
        conn_send_chat(w, c, uid, payload, len, w->index, req);
        return ROUTE_SENT;
    }
    if (loc.worker >= w->nworkers ||
        hand_over(w, &loc, uid, payload, len, req, IPC_F_CHAT, IPC_DELIVER) < 0)
        return ROUTE_OFFLINE;
    return ROUTE_SENT;
}

void route_notice(struct worker *w, int32_t uid, const char *payload, size_t len)
{
    struct online_loc loc;
    if (!online_lookup(w->online, uid, &loc)) {
        publish_elsewhere(w, uid, payload, len, 0, IPC_F_NOTICE);
        return;
    }
    if (loc.worker == w->index) {
        struct conn *c = session_conn(w, uid, loc.slot, loc.gen);
        if (c && c->presence)
            conn_send(w, c, payload, len);
        return;
    }
    if (loc.worker < w->nworkers)
        hand_over(w, &loc, uid, payload, len, 0, IPC_F_NOTICE, IPC_DELIVER);
}

void route_kick(struct worker *w, int32_t uid, uint32_t worker, uint32_t slot, uint32_t gen)
{
    if (worker == w->index) {
        service_kick_session(w, uid, slot, gen, "logged in elsewhere");
        return;
    }
    struct ipc_hdr h = {
        .type = IPC_KICK, .from = (uint16_t)w->index, .uid = uid, .slot = slot, .gen = gen
    };
    if (worker < w->nworkers && peer_send(w, worker, &h, NULL, 0) < 0)
        log_warning("kick of user %d on worker %u: link down (the master clears it)", uid, worker);
}

bool route_handoffs_pending(struct worker *w)
{
    for (uint32_t i = 0; i < slab_capacity(w->handoffs); i++) {
        struct handoff *ho = slab_at(w->handoffs, i);
        if (ho->h.live && w->peers[ho->peer].fd >= 0)
            return true;
    }
    return false;
}

void route_init(struct worker *w)
{
    w->pending = slab_new(sizeof(struct pending));
    w->handoffs = slab_new(sizeof(struct handoff));
    w->inflight = inflight_new();
    if (w->pending == NULL || w->handoffs == NULL || w->inflight == NULL) {
        log_error("out of memory at start");
        exit(1);
    }
}

void route_shutdown(struct worker *w)
{
    size_t n = 0;
    for (uint32_t i = 0; i < slab_capacity(w->handoffs); i++) {
        struct handoff *ho = slab_at(w->handoffs, i);
        if (!ho->h.live)
            continue;
        route_store_offline(w, ho->uid, ho->payload, ho->len);
        free(ho->payload);
        ho->h.live = 0;
        n++;
    }
    if (n)
        log_info("stored %zu unconfirmed hand-off(s) offline at exit", n);
    slab_destroy(w->pending);
    slab_destroy(w->handoffs);
    free(w->inflight->e);
    free(w->inflight);
    w->pending = w->handoffs = NULL;
    w->inflight = NULL;
}
