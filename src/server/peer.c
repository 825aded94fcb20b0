/*
 * peer.c - a worker's links to the other workers and the relay (see peer.h).
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/epoll.h>

#include "common/fatal.h"
#include "common/log.h"
#include "server/conn.h"
#include "server/notice.h"
#include "server/handoff.h"
#include "server/ipc.h"
#include "server/offline.h"
#include "server/peer.h"
#include "server/recover.h"
#include "server/worker.h"

#define PEER_READS_PER_EVENT 256

static const char *peer_kind(uint32_t peer)
{
    return peer == RELAY_PEER ? "the relay" : "worker";
}

static void watch_peer_output(struct worker *w, uint32_t peer, bool on)
{
    struct peer *pe = &w->peers[peer];
    if (pe->want_write == on)
        return;
    pe->want_write = on;
    loop_rewatch(&w->loop, &pe->src, EPOLLIN | (on ? EPOLLOUT : 0));
}

static void read_peer(struct worker *w, uint32_t peer, int max_reads);

/*
 * A send failed because the peer is gone.  Its last packets (confirmations
 * of chats it did write) may still wait in our receive queue: read them all
 * first, so that only what it really never confirmed is stored offline.
 */
static void link_broken(struct worker *w, uint32_t peer)
{
    struct peer *pe = &w->peers[peer];
    if (pe->ch.broken)
        return; /* already draining it (a send while reading its last packets) */
    pe->ch.broken = true;
    read_peer(w, peer, INT_MAX); /* all of it: ends in peer_lost at end of stream */
    peer_lost(w, peer);          /* no-op if that already happened */
}

int peer_send(struct worker *w, uint32_t peer, uint32_t type, const void *body, const void *tail,
              size_t tail_len)
{
    struct peer *pe = &w->peers[peer];
    if (pe->ch.fd < 0 || pe->ch.broken)
        return -1;
    if (ipc_chan_send(&pe->ch, type, body, tail, tail_len) < 0) {
        if (errno == EMSGSIZE)
            log_error("%s packet of %zu bytes is too large for a link; not sent",
                      ipc_type_name(type), tail_len);
        else if (errno != ENOMEM)
            link_broken(w, peer);
        return -1;
    }
    if (ipc_chan_waiting(&pe->ch) && !pe->ch.corked)
        watch_peer_output(w, peer, true);
    return 0;
}

void peer_output(struct worker *w, uint32_t peer)
{
    struct peer *pe = &w->peers[peer];
    if (ipc_chan_flush(&pe->ch) < 0) {
        link_broken(w, peer);
        return;
    }
    if (!ipc_chan_waiting(&pe->ch))
        watch_peer_output(w, peer, false);
}

bool peer_output_waiting(struct worker *w)
{
    for (uint32_t p = 0; p <= RELAY_PEER; p++)
        if (w->peers[p].ch.fd >= 0 && ipc_chan_waiting(&w->peers[p].ch))
            return true;
    return false;
}

static void flush_corked_link(struct worker *w, uint32_t peer)
{
    struct peer *pe = &w->peers[peer];
    if (pe->ch.fd < 0 || !pe->ch.corked || !ipc_chan_waiting(&pe->ch) || pe->want_write)
        return; /* nothing this round, or the socket is full and EPOLLOUT flushes */
    peer_output(w, peer);
    if (pe->ch.fd >= 0 && ipc_chan_waiting(&pe->ch))
        watch_peer_output(w, peer, true);
}

void peer_flush_corked(struct worker *w)
{
    for (uint32_t p = 0; p <= RELAY_PEER; p++)
        flush_corked_link(w, p);
}

void peer_flush_all(struct worker *w)
{
    for (uint32_t p = 0; p <= RELAY_PEER; p++)
        if (w->peers[p].ch.fd >= 0)
            peer_output(w, p);
}

void peer_lost(struct worker *w, uint32_t peer)
{
    struct peer *pe = &w->peers[peer];
    if (pe->ch.fd < 0)
        return;
    log_msg(w->stopping ? LOG_LEVEL_INFO : LOG_LEVEL_WARNING,
            "link to %s %u closed; its unconfirmed hand-offs go offline", peer_kind(peer), peer);
    loop_unwatch(&w->loop, &pe->src);
    ipc_chan_close(&pe->ch);
    pe->want_write = false;
    size_t n = handoff_store_all_to(w, peer);
    if (n)
        log_info("stored %zu unconfirmed hand-off(s) to %s %u offline", n, peer_kind(peer), peer);
    if (peer == RELAY_PEER)
        w->hooks.relay_lost(w);
}

static void peer_event(void *ctx, uint32_t events)
{
    struct peer *pe = ctx;
    if (events & EPOLLOUT)
        peer_output(pe->w, pe->index);
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        peer_input(pe->w, pe->index);
}

int peer_watch(struct worker *w, uint32_t peer, int fd)
{
    struct peer *pe = &w->peers[peer];
    ipc_chan_init(&pe->ch, fd);
    ipc_chan_cork(&pe->ch, true); /* a round's deliveries, PUBLISHes...: one sendmmsg */
    pe->w = w;
    pe->index = peer;
    pe->want_write = false;
    if (loop_watch(&w->loop, &pe->src, fd, EPOLLIN, peer_event, pe) < 0) {
        log_error("watching the link to %s %u: %s", peer_kind(peer), peer, strerror(errno));
        ipc_chan_close(&pe->ch);
        return -1;
    }
    return 0;
}

void peer_adopt(struct worker *w, uint32_t peer, int fd)
{
    if ((peer >= ONLINE_MAX_WORKERS && peer != RELAY_PEER) || peer == w->index)
        qc_fatal("the master sent a link to peer %u (this is worker %u)", peer, w->index);
    if (w->peers[peer].ch.fd >= 0)
        peer_lost(w, peer);
    if (peer_watch(w, peer, fd) < 0)
        return;
    if (peer < ONLINE_MAX_WORKERS && peer >= w->nworkers)
        w->nworkers = peer + 1;
    if (peer == RELAY_PEER)
        log_info("link to the relay (re)established");
    else
        log_info("link to worker %u (re)established", peer);
}

void peer_confirm(struct worker *w, uint32_t origin, uint32_t token, int err)
{
    if (token == 0)
        return; /* nobody waits */
    struct ipc_confirm c = { .token = token, .err = err };
    peer_send(w, origin, IPC_CONFIRM, &c, NULL, 0); /* a dead origin stored its copy already */
}

/* ---- what arrives -------------------------------------------------------- */

static void on_deliver(void *ctx, uint32_t link, const struct ipc_msg *m)
{
    struct worker *w = ctx;
    const struct ipc_deliver *d = m->body;
    struct conn *c = conn_of_session(w, d->uid, d->slot, d->gen);
    if (c == NULL && !(d->flags & IPC_F_EXACT))
        c = conn_local_session(w, d->uid); /* its successor (takeover) */
    if (d->flags & IPC_F_NOTICE) {
        if (c && !(w->hooks.notice && w->hooks.notice(w, c, m->tail, m->tail_len)) &&
            notice_wanted(c, m->tail, m->tail_len))
            conn_send(w, c, m->tail, m->tail_len);
        return;
    }
    if (d->flags & IPC_F_STORE)
        c = NULL; /* the relay asks only for storage */
    if (c) {
        recover_send_chat(w, c, d->uid, m->tail, m->tail_len, link, d->token);
        return;
    }
    /* The session vanished in between: keep the message for the next login. */
    peer_confirm(w, link, d->token, offline_keep(w, d->uid, m->tail, m->tail_len));
}

static void on_confirm(void *ctx, uint32_t link, const struct ipc_msg *m)
{
    const struct ipc_confirm *c = m->body;
    handoff_confirmed(ctx, link, c->token, c->err);
}

static void on_published(void *ctx, uint32_t link, const struct ipc_msg *m)
{
    const struct ipc_published *p = m->body;
    (void)link;
    handoff_published(ctx, p->token, p->receivers, p->failed != 0);
}

static void on_kick(void *ctx, uint32_t link, const struct ipc_msg *m)
{
    struct worker *w = ctx;
    const struct ipc_session *s = m->body;
    (void)link;
    w->hooks.kick(w, s->uid, s->slot, s->gen, "logged in elsewhere");
}

static void on_claimed(void *ctx, uint32_t link, const struct ipc_msg *m)
{
    struct worker *w = ctx;
    const struct ipc_answer *a = m->body;
    (void)link;
    if (w->hooks.claimed)
        w->hooks.claimed(w, a->token, a->failed);
}

static void on_devices_reply(void *ctx, uint32_t link, const struct ipc_msg *m)
{
    struct worker *w = ctx;
    const struct ipc_answer *a = m->body;
    (void)link;
    if (w->hooks.devices_done)
        w->hooks.devices_done(w, a->token, m->tail, m->tail_len, a->failed != 0);
}

static void on_numsub_reply(void *ctx, uint32_t link, const struct ipc_msg *m)
{
    struct worker *w = ctx;
    const struct ipc_answer *a = m->body;
    (void)link;
    w->hooks.numsub_done(w, a->token, (const uint8_t *)m->tail, m->tail_len, a->failed != 0);
}

static void on_subscribed(void *ctx, uint32_t link, const struct ipc_msg *m)
{
    struct worker *w = ctx;
    const struct ipc_answer *a = m->body;
    (void)link;
    w->hooks.subscribed(w, a->token, a->failed != 0);
}

/* The relay's Redis connection came back: what pub/sub lost comes from the log. */
static void on_resync(void *ctx, uint32_t link, const struct ipc_msg *m)
{
    (void)link;
    (void)m;
    recover_resync_all(ctx);
}

/* What a worker accepts from another worker, and from the relay. */
static const struct ipc_handlers from_worker = {
    .from = "worker",
    .fn = { [IPC_DELIVER] = on_deliver, [IPC_CONFIRM] = on_confirm, [IPC_KICK] = on_kick },
};
static const struct ipc_handlers from_relay = {
    .from = "relay",
    .fn = { [IPC_DELIVER] = on_deliver,
            [IPC_KICK] = on_kick,
            [IPC_PUBLISHED] = on_published,
            [IPC_NUMSUB_REPLY] = on_numsub_reply,
            [IPC_SUBSCRIBED] = on_subscribed,
            [IPC_RESYNC] = on_resync,
            [IPC_CLAIMED] = on_claimed,
            [IPC_DEVICES_REPLY] = on_devices_reply },
};

const struct ipc_handlers *peer_handlers(uint32_t peer)
{
    return peer == RELAY_PEER ? &from_relay : &from_worker;
}

/* Read and handle up to max_reads packets; a closed link ends in peer_lost. */
static void read_peer(struct worker *w, uint32_t peer, int max_reads)
{
    if (ipc_chan_read(&w->peers[peer].ch, w->ipcbuf, max_reads, peer_handlers(peer), w, peer) ==
        IPC_READ_CLOSED)
        peer_lost(w, peer);
}

void peer_input(struct worker *w, uint32_t peer)
{
    read_peer(w, peer, PEER_READS_PER_EVENT);
}
