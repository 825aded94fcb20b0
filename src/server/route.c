/*
 * route.c - routing decisions (see route.h).
 *
 * route.c decides; the mechanisms live below it: conn.c appends to a local
 * session, handoff.c keeps what is handed over, peer.c carries packets,
 * pending.c answers the request once every delivery is safe.
 */
#include "common/log.h"
#include "server/conn.h"
#include "server/delivered.h"
#include "server/handoff.h"
#include "server/ipc.h"
#include "server/metrics.h"
#include "server/pending.h"
#include "server/peer.h"
#include "server/recover.h"
#include "server/route.h"
#include "server/worker.h"

/* A DELIVER to the worker at loc, or a PUBLISH to the relay. */
static int send_message(struct worker *w, const struct online_loc *loc, int32_t uid, uint32_t token,
                        uint32_t flags, uint32_t type, const char *payload, size_t len)
{
    if (type == IPC_PUBLISH) {
        struct ipc_publish p = { .uid = uid, .token = token, .kind = flags };
        return peer_send(w, RELAY_PEER, IPC_PUBLISH, &p, payload, len);
    }
    struct ipc_deliver d = {
        .uid = uid, .slot = loc->slot, .gen = loc->gen, .token = token, .flags = flags
    };
    return peer_send(w, loc->worker, IPC_DELIVER, &d, payload, len);
}

static int hand_over(struct worker *w, const struct online_loc *loc, int32_t uid,
                     const char *payload, size_t len, uint32_t req, uint32_t flags, uint32_t type)
{
    uint32_t token = 0;
    if ((flags & IPC_F_CHAT) && (token = handoff_keep(w, loc->worker, uid, req, payload, len)) == 0)
        return -1;
    if (send_message(w, loc, uid, token, flags, type, payload, len) == 0)
        return 0;
    /*
     * Not sent: give the copy back, the caller stores the chat.  A link that
     * broke while sending was handled by peer_lost (copy stored): done.
     */
    if (token == 0)
        return -1;
    if (!handoff_live(w, token))
        return 0;
    handoff_give_back(w, token);
    return -1;
}

int route_send_relay(struct worker *w, uint32_t type, const void *body, const void *tail,
                     size_t tail_len)
{
    return w->clustered ? peer_send(w, RELAY_PEER, type, body, tail, tail_len) : -1;
}

/* Not on this node: PUBLISH through the relay, keeping a copy of a chat until it answers. */
static int publish_elsewhere(struct worker *w, int32_t uid, const char *payload, size_t len,
                             uint32_t req, uint32_t flags)
{
    if (!w->clustered || w->peers[RELAY_PEER].ch.fd < 0)
        return -1;
    struct online_loc relay = { .worker = RELAY_PEER };
    int64_t conv, cseq;
    /*
     * A chat with a cseq is committed before it goes out: safe.  Its PUBLISH
     * is only the fast path (a lost one is filled from the log by the
     * receiving node, recover.c), so the ACK does not wait for it.
     */
    if ((flags & IPC_F_CHAT) && !delivered_position(payload, len, &conv, &cseq))
        return hand_over(w, &relay, uid, payload, len, req, flags, IPC_PUBLISH);
    return send_message(w, &relay, uid, 0, flags, IPC_PUBLISH, payload, len);
}

bool route_session_started(struct worker *w, int32_t uid, uint32_t token)
{
    if (!w->clustered || w->peers[RELAY_PEER].ch.fd < 0)
        return false;
    /* The relay subscribes, then announces the login (the takeover race: relay.c). */
    struct ipc_sub sub = { .uid = uid, .token = token, .flags = IPC_F_KICK };
    return peer_send(w, RELAY_PEER, IPC_SUB, &sub, NULL, 0) == 0 && token != 0;
}

void route_session_ended(struct worker *w, int32_t uid)
{
    struct ipc_user u = { .uid = uid };
    if (w->clustered)
        peer_send(w, RELAY_PEER, IPC_UNSUB, &u, NULL, 0);
}

/*
 * A worker that still holds unconfirmed hand-offs of ours for uid (its
 * session just ended there): the next chat goes the same way, so that worker
 * stores it after the earlier ones and the offline queue keeps send order.
 */
static bool follow_in_flight(struct worker *w, int32_t uid, struct online_loc *loc)
{
    uint32_t peer;
    if (!handoff_in_flight(w, uid, &peer) || w->peers[peer].ch.fd < 0)
        return false;
    *loc = (struct online_loc){ .worker = peer };
    return true;
}

enum route_result route_chat(struct worker *w, int32_t uid, const char *payload, size_t len,
                             uint32_t req)
{
    struct online_loc loc;
    if (!online_lookup(w->online, uid, &loc)) {
        if (follow_in_flight(w, uid, &loc) &&
            hand_over(w, &loc, uid, payload, len, req, IPC_F_CHAT, IPC_DELIVER) == 0) {
            metrics_count(QM_DELIVERIES, QM_PATH_WORKER);
            return ROUTE_SENT;
        }
        if (publish_elsewhere(w, uid, payload, len, req, IPC_F_CHAT) < 0)
            return ROUTE_OFFLINE;
        metrics_count(QM_DELIVERIES, QM_PATH_RELAY);
        return ROUTE_SENT;
    }
    if (loc.worker == w->index) {
        struct conn *c = conn_of_session(w, uid, loc.slot, loc.gen);
        if (c == NULL)
            return ROUTE_OFFLINE;
        pending_add(w, req);
        recover_send_chat(w, c, uid, payload, len, w->index, req);
        metrics_count(QM_DELIVERIES, QM_PATH_LOCAL);
        return ROUTE_SENT;
    }
    if (loc.worker >= w->nworkers ||
        hand_over(w, &loc, uid, payload, len, req, IPC_F_CHAT, IPC_DELIVER) < 0)
        return ROUTE_OFFLINE;
    metrics_count(QM_DELIVERIES, QM_PATH_WORKER);
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
        struct conn *c = conn_of_session(w, uid, loc.slot, loc.gen);
        if (c && !(w->hooks.notice && w->hooks.notice(w, c, payload, len)) && c->presence)
            conn_send(w, c, payload, len);
        return;
    }
    if (loc.worker < w->nworkers)
        hand_over(w, &loc, uid, payload, len, 0, IPC_F_NOTICE, IPC_DELIVER);
}

void route_kick(struct worker *w, int32_t uid, uint32_t worker, uint32_t slot, uint32_t gen)
{
    if (worker == w->index) {
        w->hooks.kick(w, uid, slot, gen, "logged in elsewhere");
        return;
    }
    struct ipc_session s = { .uid = uid, .slot = slot, .gen = gen };
    if (worker < w->nworkers && peer_send(w, worker, IPC_KICK, &s, NULL, 0) < 0)
        log_warning("kick of user %d on worker %u: link down (the master clears it)", uid, worker);
}

/* A delivery mark completed on this worker: tell its origin (a request here, or a peer). */
static void mark_done(struct worker *w, uint32_t origin, uint32_t token, int err)
{
    if (token == 0)
        return;
    if (origin == w->index)
        pending_done(w, token, err);
    else
        peer_confirm(w, origin, token, err);
}

void route_install(struct worker *w)
{
    w->hooks.mark_done = mark_done;
}
