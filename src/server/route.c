/*
 * route.c - routing decisions (see route.h).
 *
 * route.c decides; the mechanisms live below it: conn.c appends to a local
 * session, handoff.c keeps what is handed over, peer.c carries packets,
 * pending.c answers the request once every delivery is safe.
 */
#include <string.h>

#include "common/log.h"
#include "server/conn.h"
#include "server/delivered.h"
#include "server/notice.h"
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

/*
 * [session] mode = multi in a cluster: what went to the user's sessions on
 * this node is also published for the user's sessions on the other nodes
 * (the relay there delivers it to each; this node's relay ignores it).
 * Only a chat with a cseq (committed, so a lost PUBLISH is filled from the
 * log) or a notice: nothing is kept or awaited.
 */
static void publish_for_other_nodes(struct worker *w, int32_t uid, const char *payload, size_t len,
                                    uint32_t flags)
{
    int64_t conv, cseq;
    if (!w->clustered || w->peers[RELAY_PEER].ch.fd < 0 ||
        strcmp(w->cfg.session_mode, "multi") != 0 ||
        ((flags & IPC_F_CHAT) && !delivered_position(payload, len, &conv, &cseq)))
        return;
    struct online_loc relay = { .worker = RELAY_PEER };
    send_message(w, &relay, uid, 0, flags | IPC_F_OTHERS, IPC_PUBLISH, payload, len);
}

bool route_session_started(struct worker *w, int32_t uid, uint32_t token)
{
    if (!w->clustered || w->peers[RELAY_PEER].ch.fd < 0)
        return false;
    /*
     * The relay subscribes, then announces the login (the takeover race:
     * relay.c).  The other nodes kick every session of the user: right for
     * takeover only; refuse and multi hold per node (qchatd.conf(5)).
     */
    struct ipc_sub sub = { .uid = uid, .token = token };
    if (strcmp(w->cfg.session_mode, "takeover") == 0)
        sub.flags = IPC_F_KICK;
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

/*
 * A DELIVER to a session that has gone meanwhile goes to the user's session
 * on that worker, if any (the one that took over), unless the sender
 * addressed several sessions (multi, or all but one): that session has its
 * own copy, or must not get one.
 */
static uint32_t exact_if(bool several)
{
    return several ? IPC_F_EXACT : 0;
}

/* One session of uid at loc: append here, or hand over to its worker.  0, or -1 when gone. */
static int send_to_session(struct worker *w, int32_t uid, const struct online_loc *loc,
                           const char *payload, size_t len, uint32_t req, uint32_t exact)
{
    if (loc->worker == w->index) {
        struct conn *c = conn_of_session(w, uid, loc->slot, loc->gen);
        if (c == NULL)
            return -1;
        pending_add(w, req);
        recover_send_chat(w, c, uid, payload, len, w->index, req);
        metrics_count(QM_DELIVERIES, QM_PATH_LOCAL);
        return 0;
    }
    if (loc->worker >= w->nworkers ||
        hand_over(w, loc, uid, payload, len, req, IPC_F_CHAT | exact, IPC_DELIVER) < 0)
        return -1;
    metrics_count(QM_DELIVERIES, QM_PATH_WORKER);
    return 0;
}

/* Every session of uid on this node but (skip_worker, skip_gen): how many got it. */
static size_t send_to_sessions(struct worker *w, int32_t uid, const char *payload, size_t len,
                               uint32_t req, uint32_t skip_worker, uint32_t skip_gen)
{
    struct online_loc locs[ONLINE_USER_MAX];
    size_t n = online_sessions(w->online, uid, locs, ONLINE_USER_MAX), sent = 0;
    uint32_t exact = exact_if(n > 1 || skip_worker != UINT32_MAX);
    for (size_t k = 0; k < n; k++) {
        if (locs[k].worker == skip_worker && locs[k].gen == skip_gen)
            continue;
        if (send_to_session(w, uid, &locs[k], payload, len, req, exact) == 0)
            sent++;
    }
    return sent;
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
    size_t sent = send_to_sessions(w, uid, payload, len, req, UINT32_MAX, 0);
    publish_for_other_nodes(w, uid, payload, len, IPC_F_CHAT);
    return sent > 0 ? ROUTE_SENT : ROUTE_OFFLINE;
}

void route_echo(struct worker *w, int32_t uid, uint32_t gen, const char *payload, size_t len,
                uint32_t req)
{
    send_to_sessions(w, uid, payload, len, req, w->index, gen);
    publish_for_other_nodes(w, uid, payload, len, IPC_F_CHAT);
}

/* A notice for one session at loc (dropped when it did not ask for them). */
static void notice_session(struct worker *w, int32_t uid, const struct online_loc *loc,
                           const char *payload, size_t len, uint32_t exact)
{
    if (loc->worker == w->index) {
        struct conn *c = conn_of_session(w, uid, loc->slot, loc->gen);
        if (c && !(w->hooks.notice && w->hooks.notice(w, c, payload, len)) &&
            notice_wanted(c, payload, len))
            conn_send(w, c, payload, len);
        return;
    }
    if (loc->worker < w->nworkers)
        hand_over(w, loc, uid, payload, len, 0, IPC_F_NOTICE | exact, IPC_DELIVER);
}

void route_notice(struct worker *w, int32_t uid, const char *payload, size_t len)
{
    struct online_loc locs[ONLINE_USER_MAX];
    size_t n = online_sessions(w->online, uid, locs, ONLINE_USER_MAX);
    if (n == 0) {
        publish_elsewhere(w, uid, payload, len, 0, IPC_F_NOTICE);
        return;
    }
    for (size_t k = 0; k < n; k++)
        notice_session(w, uid, &locs[k], payload, len, exact_if(n > 1));
    publish_for_other_nodes(w, uid, payload, len, IPC_F_NOTICE);
}

void route_notice_others(struct worker *w, int32_t uid, uint32_t gen, const char *payload,
                         size_t len)
{
    struct online_loc locs[ONLINE_USER_MAX];
    size_t n = online_sessions(w->online, uid, locs, ONLINE_USER_MAX);
    for (size_t k = 0; k < n; k++)
        if (locs[k].worker != w->index || locs[k].gen != gen)
            notice_session(w, uid, &locs[k], payload, len, IPC_F_EXACT);
    publish_for_other_nodes(w, uid, payload, len, IPC_F_NOTICE);
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
