/*
 * relay.c - the relay process (see relay.h).
 *
 * Redis messages on a user's channel carry one type byte, the sending node's
 * id and a colon before the payload:
 *   "M<node>:<json>"  a chat for that user   (committed to the log already: the
 *                      PUBLISH is only the fast path, see recover.h)
 *   "P<node>:<json>"  a presence notice      (dropped if nobody wants it)
 *   "K<node>:<gen>"   the user logged in on <node> with cluster generation <gen>:
 *                      every other node whose session is older kicks it
 *   "D<node>:<n>:<g>" the session registry replaced session <g> of node <n>
 *                      (refuse/multi, same device, beyond max_devices): <n> kicks it
 *   "m<node>:<json>"  a chat (an echo) <node> delivered to the user's sessions
 *   "p<node>:<json>"  there itself ([session] mode = multi): for every other node's
 *                      sessions; <node> ignores it
 *
 * Subscriptions follow the online table: a worker says SUB when a user's
 * session starts on the node and UNSUB when the last one ends, and a
 * reconciliation pass (after a worker dies, after Redis comes back, and
 * every few seconds) makes the set of subscribed channels equal to the
 * online table, so nothing stays subscribed for a user who is gone.
 *
 * Takeover across nodes (two logins of one account at the same moment on two
 * nodes must leave exactly one session, the newest): a node claims a new
 * session in three steps, each after the previous one is confirmed by Redis:
 *   1. SUBSCRIBE the user's channel (the subscription is active);
 *   2. INCR qchat:gen:<uid>, the account's cluster generation, which orders
 *      every login of the account in one sequence;
 *   3. PUBLISH "K<node>:<gen>" on the user's channel.
 * A node receiving a kick compares generations: its own session survives a
 * kick with a lower generation and is kicked by a higher one; a kick that
 * arrives while its own INCR is still out is kept and compared when the
 * generation arrives.  Of two logins A and B with gen(A) < gen(B), A's
 * SUBSCRIBE was confirmed before its INCR, which Redis ran before B's INCR,
 * which ran before B's PUBLISH: A's node always hears B's kick, and B's node
 * ignores A's (if it hears it at all).  So exactly one survives: the newest.
 *
 * The race is over within a few round trips, so a claim decided
 * RELAY_CLAIM_KEEP_MS ago is forgotten: a kick for a user without a claim
 * comes from a newer login and is obeyed.  That lets the generation keys
 * expire (RELAY_GEN_TTL_S after the account's last login, far beyond any
 * claim) instead of staying in Redis for every account that ever logged in;
 * a key that expired starts again at 1 with no claim left to compare it to.
 *
 * While Redis is away, every PUBLISH fails at once (the chat is in the log);
 * the relay reconnects with backoff, re-subscribes every online user of the
 * node and, once Redis confirmed those subscriptions, sends IPC_RESYNC to
 * every worker: each fills its sessions from the log (recover.c).  A new
 * relay (the old one killed) does the same when it first connects.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "common/clock.h"
#include "common/buf.h"
#include "common/fatal.h"
#include "common/inttable.h"
#include "common/log.h"
#include "common/loop.h"
#include "server/ipc.h"
#include "server/proc.h"
#include "server/relay.h"
#include "server/redis_cluster.h"
#include "server/sessreg.h"
#include "store/social.h"
#include "server/metrics.h"
#include "server/title.h"
#include "server/slab.h"

#define RELAY_TICK_MS          250
#define RELAY_RECONCILE_MS     3000
#define RELAY_BACKOFF_MIN_MS   100
#define RELAY_BACKOFF_MAX_MS   5000
#define RELAY_REPLY_TIMEOUT_MS 3000 /* a Redis that stops answering is dropped */
#define RELAY_CHANNEL_MAX      32
#define RELAY_BATCH_MIN        1024 /* first room for a list of stale subscriptions */
#define RELAY_READS_PER_EVENT  256
#define RELAY_GEN_PREFIX       "qchat:gen:" /* + uid: the account's cluster login generation */
#define RELAY_GEN_KEY_MAX      32
#define RELAY_GEN_TTL_S        86400 /* a generation key lives a day past the account's last login */
#define RELAY_CLAIM_KEEP_MS    600000 /* a decided claim is forgotten after 10 min (see the top) */
#define RELAY_SLOTS_TIMEOUT_MS 500    /* CLUSTER SLOTS from one node (cluster = yes) */

enum { R_REDIS_SUB = 1, R_REDIS_PUB };

struct redis_link {
    redisAsyncContext *ac;
    int fd;
    uint32_t events;    /* what hiredis asked for */
    uint32_t watched;   /* what the loop watches (see redis_update_events) */
    bool write_blocked; /* the last write left output behind: wait for EPOLLOUT */
    struct loop_source src;
    bool registered;
    bool up;
    int kind;         /* R_REDIS_SUB | R_REDIS_PUB */
    const char *host; /* where it connects: the one Redis, or a cluster master */
    int port;
    struct relay *r;
};

struct worker_link {
    struct ipc_chan ch;
    struct loop_source src; /* ch.fd in the relay's loop */
    struct relay *r;
    uint32_t index;
    bool want_write; /* EPOLLOUT armed: packets wait in ch's queue */
};

/*
 * A chat from Redis handed to a worker, kept until the worker confirms it is
 * written or stored: if the worker dies first, another stores it offline.
 */
struct delivery {
    struct slab_hdr h;
    uint32_t worker; /* RELAY_NO_WORKER: waiting for a live one */
    int32_t uid;
    char *payload;
    size_t len;
};
#define RELAY_NO_WORKER UINT32_MAX

struct relay {
    struct qc_config cfg;
    struct online_table *online;
    struct relay_stats *stats;
    uint32_t nworkers;
    struct loop loop;
    int sigfd;
    struct loop_source signal_src, channel_src;
    struct ipc_chan channel; /* to the master */
    struct worker_link workers[ONLINE_MAX_WORKERS];
    struct redis_link sub, pub;
    /*
     * cluster = yes: the slot map, and the links to masters 1.. (master 0's
     * are sub and pub); NULL with one Redis.  shards_stale: a MOVED or a
     * server-side SUNSUBSCRIBE said the map changed (read again at the tick).
     */
    struct rc_map *shards;
    struct redis_link shard_sub[RC_MASTERS_MAX], shard_pub[RC_MASTERS_MAX];
    bool shards_stale;
    int64_t sub_progress_ms;      /* the last SUBSCRIBE confirmed, or the first sent since */
    struct inttable *subscribed;  /* user ids whose channel is subscribed */
    struct inttable *sub_pending; /* uid -> SUBSCRIBE replies still to come */
    struct inttable *claims;      /* uid -> struct claim *: this node's newest login */
    struct inttable *rsess;       /* session gen -> struct rsess *: the registry's view */
    struct pclaim *pclaims;       /* registry claims waiting for their subscription */
    int64_t next_sync_ms;         /* the registry's next heartbeat */
    struct slab *deliveries;      /* chats handed to workers, unconfirmed */
    int64_t now_ms;
    int64_t next_connect_ms;
    int backoff_ms;
    int64_t next_reconcile_ms;
    uint32_t pub_outstanding;
    int64_t pub_last_progress_ms;
    bool stopping;
    bool outage_logged; /* "redis unavailable" said for this outage */
    bool resync_wanted; /* connected again: tell the workers once re-subscribed (issue 16) */
    char *pkt;
};

static struct relay the_relay;

/* ---- which connection: the one Redis, or the master of a key's slot ------ */

static uint32_t master_count(const struct relay *r)
{
    return r->shards ? r->shards->nmasters : 1;
}

static struct redis_link *sub_link(struct relay *r, uint32_t m)
{
    return m == 0 ? &r->sub : &r->shard_sub[m];
}

static struct redis_link *pub_link(struct relay *r, uint32_t m)
{
    return m == 0 ? &r->pub : &r->shard_pub[m];
}

/* The master serving key (a user's channel, a generation key); 0 with one Redis. */
static uint32_t master_for(const struct relay *r, const char *key)
{
    return r->shards ? rc_master_of(r->shards, key) : 0;
}

static bool subscribers_up(struct relay *r)
{
    for (uint32_t m = 0; m < master_count(r); m++)
        if (!sub_link(r, m)->up)
            return false;
    return true;
}

static bool all_links_up(struct relay *r)
{
    for (uint32_t m = 0; m < master_count(r); m++)
        if (!sub_link(r, m)->up || !pub_link(r, m)->up)
            return false;
    return true;
}

static bool any_link_open(struct relay *r)
{
    for (uint32_t m = 0; m < master_count(r); m++)
        if (sub_link(r, m)->ac || pub_link(r, m)->ac)
            return true;
    return false;
}

/* A cluster's error reply saying the slot map moved: it is read again at the tick. */
static void note_cluster_error(struct relay *r, const redisReply *rep)
{
    if (r->shards == NULL || rep == NULL || rep->type != REDIS_REPLY_ERROR)
        return;
    if (strncmp(rep->str, "MOVED", 5) == 0 || strncmp(rep->str, "ASK", 3) == 0 ||
        strncmp(rep->str, "CLUSTERDOWN", 11) == 0) {
        if (!r->shards_stale)
            log_warning("redis cluster: %s; reading the slot map again", rep->str);
        r->shards_stale = true;
    }
}

/* ---- the subscribed set ------------------------------------------------- */

/* true when id was added (it was not there). */
static bool set_add(struct inttable *set, uint32_t id)
{
    return !inttable_get(set, id, NULL) && inttable_put(set, id, 1) == 0;
}

static struct inttable *fresh_table(struct inttable *old)
{
    struct inttable *fresh = inttable_new();
    if (fresh == NULL)
        qc_fatal("out of memory");
    inttable_free(old);
    return fresh;
}

static void claims_clear(struct relay *r);
static void registry_claims_fail(struct relay *r);
static void registry_subscribed(struct relay *r, uint32_t uid);
static void foreign_drop(struct relay *r, int32_t uid, const char *payload, size_t len);

/*
 * Forget every subscription (Redis went away: its subscriptions went with
 * it), and every claim: a restarted Redis may have lost the generations.
 */
static void set_clear(struct relay *r)
{
    r->subscribed = fresh_table(r->subscribed);
    r->sub_pending = fresh_table(r->sub_pending);
    claims_clear(r);
}

/* ---- links to the workers ----------------------------------------------- */

static void redispatch_deliveries(struct relay *r, uint32_t k);

static void watch_worker(struct relay *r, uint32_t k, bool out)
{
    loop_rewatch(&r->loop, &r->workers[k].src, EPOLLIN | (out ? EPOLLOUT : 0));
    r->workers[k].want_write = out;
}

static void drop_worker(struct relay *r, uint32_t k)
{
    struct worker_link *wl = &r->workers[k];
    if (wl->ch.fd < 0)
        return;
    loop_unwatch(&r->loop, &wl->src);
    ipc_chan_close(&wl->ch);
    wl->want_write = false;
    log_info("link to worker %u closed", k);
    redispatch_deliveries(r, k);
    /* Its users' rows are cleared by the master; the next pass unsubscribes them. */
    r->next_reconcile_ms = r->now_ms + RELAY_TICK_MS * 2;
}

/* Send a packet to worker k (queued while its link is full); a broken link is dropped. */
static void send_to_worker(struct relay *r, uint32_t k, uint32_t type, const void *body,
                           const void *tail, size_t tail_len)
{
    if (k >= ONLINE_MAX_WORKERS || r->workers[k].ch.fd < 0)
        return;
    struct worker_link *wl = &r->workers[k];
    if (ipc_chan_send(&wl->ch, type, body, tail, tail_len) < 0) {
        if (errno == EMSGSIZE || errno == ENOMEM)
            log_error("%s packet of %zu bytes for worker %u not sent: %s", ipc_type_name(type),
                      tail_len, k, strerror(errno));
        else
            drop_worker(r, k);
        return;
    }
    /* Corked: the packet leaves with the rest of this round's (flush_round). */
}

static uint32_t first_live_worker(struct relay *r)
{
    for (uint32_t k = 0; k < r->nworkers; k++)
        if (r->workers[k].ch.fd >= 0)
            return k;
    return RELAY_NO_WORKER;
}

/* Hand a kept chat to worker k: to its session, or (store) to its offline queue. */
static void send_delivery(struct relay *r, uint32_t token, struct delivery *d, uint32_t k,
                          const struct online_loc *loc, bool store)
{
    d->worker = k;
    if (k == RELAY_NO_WORKER)
        return; /* sent when a worker link comes back */
    struct ipc_deliver dv = { .uid = d->uid,
                              .slot = loc ? loc->slot : 0,
                              .gen = loc ? loc->gen : 0,
                              .token = token,
                              .flags = IPC_F_CHAT | (store ? IPC_F_STORE : 0) };
    send_to_worker(r, k, IPC_DELIVER, &dv, d->payload, d->len);
}

/* Worker k died (or was never there): its unconfirmed chats go to another to be stored. */
static void redispatch_deliveries(struct relay *r, uint32_t k)
{
    uint32_t to = first_live_worker(r), n = 0;
    for (uint32_t i = 0; i < slab_capacity(r->deliveries); i++) {
        struct delivery *d = slab_at(r->deliveries, i);
        if (!d->h.live || d->worker != k)
            continue;
        send_delivery(r, slab_handle_of(r->deliveries, i), d, to, NULL, true);
        n++;
    }
    if (n)
        log_info("%u unconfirmed chat(s) for worker %u handed to %s to store offline", n, k,
                 to == RELAY_NO_WORKER ? "the next live worker" : "another worker");
}

static void confirm_delivery(struct relay *r, uint32_t token)
{
    struct delivery *d = slab_get(r->deliveries, token);
    if (d == NULL)
        return;
    free(d->payload);
    slab_free(r->deliveries, token);
}

static void flush_worker(struct relay *r, uint32_t k)
{
    struct worker_link *wl = &r->workers[k];
    if (ipc_chan_flush(&wl->ch) < 0) {
        drop_worker(r, k);
        return;
    }
    bool waiting = ipc_chan_waiting(&wl->ch);
    if (waiting != wl->want_write)
        watch_worker(r, k, waiting); /* a full socket: EPOLLOUT says when to go on */
}

/* ---- Redis connections ---------------------------------------------------- */

static void redis_event(void *ctx, uint32_t events)
{
    struct redis_link *l = ctx;
    if (l->ac == NULL)
        return;
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        redisAsyncHandleRead(l->ac);
    if (l->ac && (events & EPOLLOUT))
        redisAsyncHandleWrite(l->ac);
}

/*
 * hiredis asked for other events: the loop watches what it wants now.
 * EPOLLOUT is not watched while the connection is healthy: hiredis asks for
 * it after every command, and the round's commands are written together in
 * flush_round instead (one write, Redis pipelining them); the loop watches
 * it only while the socket is connecting or full.
 */
static void redis_update_events(struct redis_link *l)
{
    uint32_t want = l->up && !l->write_blocked ? l->events & ~(uint32_t)EPOLLOUT : l->events;
    if (l->registered && want == l->watched)
        return; /* no epoll_ctl for a change the loop does not see */
    l->watched = want;
    if (want == 0) {
        if (l->registered)
            loop_unwatch(&l->r->loop, &l->src);
        l->registered = false;
        return;
    }
    int rc = l->registered ? loop_rewatch(&l->r->loop, &l->src, want)
                           : loop_watch(&l->r->loop, &l->src, l->fd, want, redis_event, l);
    if (rc == 0)
        l->registered = true;
}

static void ev_add_read(void *p)
{
    struct redis_link *l = p;
    l->events |= EPOLLIN;
    redis_update_events(l);
}
static void ev_del_read(void *p)
{
    struct redis_link *l = p;
    l->events &= ~EPOLLIN;
    redis_update_events(l);
}
static void ev_add_write(void *p)
{
    struct redis_link *l = p;
    l->events |= EPOLLOUT;
    redis_update_events(l);
}
static void ev_del_write(void *p)
{
    struct redis_link *l = p;
    l->events &= ~EPOLLOUT;
    l->write_blocked = false;
    redis_update_events(l);
}
static void ev_cleanup(void *p)
{
    struct redis_link *l = p;
    l->events = 0;
    redis_update_events(l);
}

static const char *link_name(const struct redis_link *l)
{
    return l->kind == R_REDIS_SUB ? "subscriber" : "publisher";
}

static void publish_state(struct relay *r)
{
    uint32_t st = all_links_up(r)    ? RELAY_CONNECTED
                  : any_link_open(r) ? RELAY_CONNECTING
                                     : RELAY_DOWN;
    r->stats->state = st;
}

static void schedule_reconnect(struct relay *r)
{
    r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : RELAY_BACKOFF_MIN_MS;
    if (r->backoff_ms > RELAY_BACKOFF_MAX_MS)
        r->backoff_ms = RELAY_BACKOFF_MAX_MS;
    r->next_connect_ms = r->now_ms + r->backoff_ms;
}

static void drop_redis(struct relay *r, const char *why);
static void subscribe_uid(struct relay *r, uint32_t uid, uint32_t worker, uint32_t token);
static void reconcile(struct relay *r);

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct redis_link *l = ac->ev.data;
    struct relay *r = l->r;
    if (status != REDIS_OK)
        log_warning("redis %s connection lost: %s", link_name(l), ac->errstr);
    l->ac = NULL;
    l->up = false;
    l->registered = false;
    l->events = 0;
    if (r->stopping)
        return;
    if (r->shards)
        r->shards_stale = true; /* the others are read out first (on_tick) */
    else
        drop_redis(r, "a connection went away");
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redis_link *l = ac->ev.data;
    struct relay *r = l->r;
    if (status != REDIS_OK) {
        if (!r->outage_logged) /* said once per outage, not per retry */
            log_warning("redis %s: cannot connect to %s:%d: %s", link_name(l), l->host, l->port,
                        ac->errstr);
        l->ac = NULL; /* hiredis frees it after this callback */
        l->events = 0;
        l->registered = false;
        drop_redis(r, "connect failed");
        return;
    }
    l->up = true;
    r->outage_logged = false;
    log_info("redis %s connected to %s:%d", link_name(l), l->host, l->port);
    if (all_links_up(r)) {
        r->backoff_ms = 0;
        /* Everyone online on this node listens again, then fills from the log. */
        set_clear(r);
        reconcile(r);
        r->resync_wanted = true;
        r->next_sync_ms = 0; /* a restarted Redis lost the session registry: write it now */
    }
    publish_state(r);
}

static int connect_link(struct relay *r, struct redis_link *l, int kind, const char *host, int port)
{
    l->r = r;
    l->kind = kind;
    l->host = host;
    l->port = port;
    l->up = false;
    l->events = 0;
    l->watched = 0;
    l->write_blocked = false;
    l->registered = false;
    l->ac = redisAsyncConnect(host, port);
    if (l->ac == NULL || l->ac->err) {
        log_warning("redis %s: %s", link_name(l), l->ac ? l->ac->errstr : "out of memory");
        if (l->ac)
            redisAsyncFree(l->ac);
        l->ac = NULL;
        return -1;
    }
    l->fd = l->ac->c.fd;
    l->ac->ev.data = l;
    l->ac->ev.addRead = ev_add_read;
    l->ac->ev.delRead = ev_del_read;
    l->ac->ev.addWrite = ev_add_write;
    l->ac->ev.delWrite = ev_del_write;
    l->ac->ev.cleanup = ev_cleanup;
    redisAsyncSetDisconnectCallback(l->ac, on_disconnect);
    redisAsyncSetConnectCallback(l->ac, on_connect); /* arms the first write event */
    return 0;
}

/*
 * cluster = yes: the slot map, from the seed or a master known before.  The
 * read blocks the relay for at most RELAY_SLOTS_TIMEOUT_MS per node tried,
 * only while it is connecting, when no command can be sent anyway.
 */
static int load_slot_map(struct relay *r)
{
    struct rc_map *fresh = malloc(sizeof *fresh);
    char err[256];
    if (fresh == NULL || rc_map_fetch(fresh, r->cfg.redis_host, r->cfg.redis_port, r->shards,
                                      RELAY_SLOTS_TIMEOUT_MS, err, sizeof err) < 0) {
        if (!r->outage_logged)
            log_warning("redis cluster: no slot map: %s", fresh ? err : "out of memory");
        free(fresh);
        return -1;
    }
    if (r->shards == NULL || r->shards->nmasters != fresh->nmasters)
        log_info("redis cluster: %u masters", fresh->nmasters);
    free(r->shards);
    r->shards = fresh;
    r->shards_stale = false;
    return 0;
}

static void connect_redis(struct relay *r)
{
    r->next_connect_ms = 0;
    r->stats->reconnects++;
    if (strcmp(r->cfg.redis_cluster, "yes") == 0 && load_slot_map(r) < 0) {
        drop_redis(r, "connect failed");
        return;
    }
    for (uint32_t m = 0; m < master_count(r); m++) {
        const char *host = r->shards ? r->shards->masters[m].host : r->cfg.redis_host;
        int port = r->shards ? r->shards->masters[m].port : r->cfg.redis_port;
        if ((sub_link(r, m)->ac == NULL &&
             connect_link(r, sub_link(r, m), R_REDIS_SUB, host, port) < 0) ||
            (pub_link(r, m)->ac == NULL &&
             connect_link(r, pub_link(r, m), R_REDIS_PUB, host, port) < 0)) {
            drop_redis(r, "connect failed");
            return;
        }
    }
    publish_state(r);
}

/* Close both connections; outstanding PUBLISH callbacks fire with no reply (failed). */
static void drop_redis(struct relay *r, const char *why)
{
    if (!r->outage_logged && (any_link_open(r) || strcmp(why, "connect failed") == 0))
        log_warning("redis unavailable (%s); cross-node messages go offline until it returns", why);
    redisAsyncContext *open[2 * RC_MASTERS_MAX];
    uint32_t nopen = 0;
    for (uint32_t m = 0; m < master_count(r); m++) {
        struct redis_link *pair[2] = { sub_link(r, m), pub_link(r, m) };
        for (int i = 0; i < 2; i++) {
            if (pair[i]->ac)
                open[nopen++] = pair[i]->ac;
            pair[i]->ac = NULL;
            pair[i]->up = false;
        }
    }
    r->outage_logged = true;
    for (uint32_t i = 0; i < nopen; i++)
        redisAsyncFree(open[i]);
    r->shards_stale = false; /* the next connection reads the map anew */
    set_clear(r);
    registry_claims_fail(r);
    r->stats->subscribed = 0;
    r->pub_outstanding = 0;
    if (!r->stopping && r->next_connect_ms == 0)
        schedule_reconnect(r);
    publish_state(r);
}

/* ---- subscriber: messages for users of this node ------------------------ */

static int32_t uid_of_channel(const char *ch, size_t len)
{
    size_t plen = strlen(RELAY_CHANNEL_PREFIX);
    if (len <= plen || len >= RELAY_CHANNEL_MAX || memcmp(ch, RELAY_CHANNEL_PREFIX, plen) != 0)
        return 0;
    char tmp[RELAY_CHANNEL_MAX];
    memcpy(tmp, ch + plen, len - plen);
    tmp[len - plen] = '\0';
    char *end;
    long v = strtol(tmp, &end, 10);
    return *end == '\0' && v > 0 && v <= INT32_MAX ? (int32_t)v : 0;
}

/* ---- claims: which login of an account survives (see the top) ---------- */

enum claim_state { CLAIM_WAIT_SUB = 1, CLAIM_WAIT_GEN, CLAIM_DONE };

struct claim {
    struct online_loc loc; /* the session claimed */
    enum claim_state state;
    uint64_t gen;     /* the cluster generation (CLAIM_DONE) */
    int64_t done_ms;  /* when it became CLAIM_DONE */
    uint64_t foreign; /* the highest generation another node kicked with meanwhile */
    uint32_t token;   /* a login reply waiting for the subscription (0: none) */
    uint32_t token_worker;
};

static struct claim *claim_of(struct relay *r, uint32_t uid)
{
    uint64_t v;
    return inttable_get(r->claims, uid, &v) ? (struct claim *)(uintptr_t)v : NULL;
}

static void claim_forget(struct relay *r, uint32_t uid)
{
    struct claim *cl = claim_of(r, uid);
    if (cl == NULL)
        return;
    inttable_del(r->claims, uid);
    free(cl);
}

static void free_claim(void *arg, uint32_t uid, uint64_t value)
{
    (void)arg;
    (void)uid;
    free((struct claim *)(uintptr_t)value);
}

static void claims_clear(struct relay *r)
{
    if (r->claims)
        inttable_foreach(r->claims, free_claim, NULL);
    r->claims = fresh_table(r->claims);
}

static void tell_subscribed(struct relay *r, uint32_t worker, uint32_t token, bool failed);
static void *publish_tag(uint32_t worker, uint32_t token, uint32_t flags);
static void on_published(redisAsyncContext *ac, void *reply, void *priv);

/* The session this node claimed for uid lost to a newer login elsewhere. */
static void kick_claimed(struct relay *r, uint32_t uid, struct claim *cl)
{
    struct ipc_session kick = { .uid = (int32_t)uid, .slot = cl->loc.slot, .gen = cl->loc.gen };
    log_info("user %u: a newer login elsewhere (generation %llu > %llu) takes over", uid,
             (unsigned long long)cl->foreign, (unsigned long long)cl->gen);
    send_to_worker(r, cl->loc.worker, IPC_KICK, &kick, NULL, 0);
    claim_forget(r, uid);
}

/* INCR's privdata: the user and the session generation claimed. */
static void *claim_tag(uint32_t uid, uint32_t sgen)
{
    return (void *)(uintptr_t)((uint64_t)uid << 32 | sgen);
}

/* Step 3: the generation is known; announce it, unless a newer login already won. */
static void on_claim_gen(redisAsyncContext *ac, void *reply, void *priv)
{
    struct relay *r = &the_relay;
    redisReply *rep = reply;
    (void)ac;
    uint64_t tag = (uintptr_t)priv;
    uint32_t uid = (uint32_t)(tag >> 32), sgen = (uint32_t)tag;
    if (r->pub_outstanding)
        r->pub_outstanding--;
    r->pub_last_progress_ms = r->now_ms;
    struct claim *cl = claim_of(r, uid);
    if (cl == NULL || cl->loc.gen != sgen || cl->state != CLAIM_WAIT_GEN)
        return; /* superseded by a newer login on this node, or Redis went away */
    note_cluster_error(r, rep);
    if (rep == NULL || rep->type != REDIS_REPLY_INTEGER || rep->integer <= 0) {
        log_warning("user %u: no login generation from redis; the takeover is not announced", uid);
        claim_forget(r, uid);
        return;
    }
    cl->gen = (uint64_t)rep->integer;
    cl->state = CLAIM_DONE;
    cl->done_ms = r->now_ms;
    if (cl->foreign > cl->gen) {
        kick_claimed(r, uid, cl);
        return;
    }
    char ch[RELAY_CHANNEL_MAX], msg[48];
    snprintf(ch, sizeof ch, RELAY_CHANNEL_PREFIX "%u", uid);
    int n = snprintf(msg, sizeof msg, "K%d:%llu", r->cfg.node_id, (unsigned long long)cl->gen);
    struct redis_link *pub = pub_link(r, master_for(r, ch));
    if (!pub->up)
        return; /* Redis went away: the claims go with it */
    r->stats->published++;
    redisAsyncCommand(pub->ac, on_published, publish_tag(0, 0, IPC_F_KICK),
                      r->shards ? "SPUBLISH %s %b" : "PUBLISH %s %b", ch, msg, (size_t)n);
    r->pub_outstanding++;
}

/* Step 2: the channel is subscribed; ask for the login's generation. */
static void claim_generation(struct relay *r, uint32_t uid, struct claim *cl)
{
    if (cl->token) {
        tell_subscribed(r, cl->token_worker, cl->token, false);
        cl->token = 0;
    }
    char key[RELAY_GEN_KEY_MAX];
    snprintf(key, sizeof key, RELAY_GEN_PREFIX "%u", uid);
    struct redis_link *pub = pub_link(r, master_for(r, key)); /* the key's own slot */
    if (!pub->up) {
        claim_forget(r, uid);
        return;
    }
    cl->state = CLAIM_WAIT_GEN;
    if (r->pub_outstanding == 0)
        r->pub_last_progress_ms = r->now_ms;
    r->pub_outstanding++;
    redisAsyncCommand(pub->ac, on_claim_gen, claim_tag(uid, cl->loc.gen), "INCR %s", key);
    redisAsyncCommand(pub->ac, NULL, NULL, "EXPIRE %s %d", key, RELAY_GEN_TTL_S);
}

/* Redis answered every SUBSCRIBE sent for uid: a claim waiting for it goes on. */
static void subscription_confirmed(struct relay *r, uint32_t uid)
{
    uint64_t n;
    r->sub_progress_ms = r->now_ms;
    if (inttable_get(r->sub_pending, uid, &n)) {
        if (n > 1) {
            inttable_put(r->sub_pending, uid, n - 1);
            return;
        }
        inttable_del(r->sub_pending, uid);
    }
    struct claim *cl = claim_of(r, uid);
    if (cl && cl->state == CLAIM_WAIT_SUB && inttable_get(r->subscribed, uid, NULL))
        claim_generation(r, uid, cl);
    registry_subscribed(r, uid); /* even if unsubscribed meanwhile: nobody is left waiting */
}

static bool subscription_active(struct relay *r, uint32_t uid)
{
    return inttable_get(r->subscribed, uid, NULL) && !inttable_get(r->sub_pending, uid, NULL);
}

/*
 * Step 1: a new session of uid on this node (the worker's SUB with
 * IPC_F_KICK).  Returns the token the caller still has to answer (0 when
 * the claim answers it once the subscription is active).
 */
static uint32_t claim_start(struct relay *r, uint32_t uid, uint32_t worker, uint32_t token)
{
    struct online_loc loc;
    if (!online_lookup(r->online, (int32_t)uid, &loc) || loc.worker >= r->nworkers)
        return token; /* the session ended already */
    struct claim *cl = claim_of(r, uid);
    if (cl == NULL) {
        cl = calloc(1, sizeof *cl);
        if (cl == NULL || inttable_put(r->claims, uid, (uintptr_t)cl) < 0) {
            free(cl);
            log_error("user %u: out of memory claiming the login; no takeover announced", uid);
            return token;
        }
    }
    *cl = (struct claim){ .loc = loc, .state = CLAIM_WAIT_SUB };
    if (inttable_get(r->subscribed, uid, NULL) && !subscription_active(r, uid)) {
        cl->token = token; /* told with the confirmation still to come */
        cl->token_worker = worker;
        token = 0;
    }
    return token;
}

/* A kick from another node with its login's generation (0: from an older version: obey). */
static void foreign_kick(struct relay *r, int32_t uid, const struct ipc_session *current,
                         uint32_t worker, uint64_t gen)
{
    struct claim *cl = claim_of(r, (uint32_t)uid);
    if (cl == NULL || gen == 0) {
        /* No login of ours is in the race: the kicker is newer than anything here. */
        if (cl)
            claim_forget(r, (uint32_t)uid);
        if (worker < r->nworkers)
            send_to_worker(r, worker, IPC_KICK, current, NULL, 0);
        return;
    }
    if (gen > cl->foreign)
        cl->foreign = gen;
    if (cl->state == CLAIM_DONE && cl->foreign > cl->gen)
        kick_claimed(r, (uint32_t)uid, cl);
    /* Otherwise ours is newer (that node hears our kick), or compared once ours is known. */
}

/*
 * A copy for every session of uid here but skip_gen, confirmed by nobody:
 * a chat is in the log already (a session that misses it is filled from
 * there), a notice is best effort.  Each copy names its session exactly.
 */
static void deliver_to_sessions(struct relay *r, int32_t uid, uint32_t flags, uint32_t skip_gen,
                                const char *payload, size_t plen)
{
    struct online_loc locs[ONLINE_USER_MAX];
    size_t n = online_sessions(r->online, uid, locs, ONLINE_USER_MAX);
    for (size_t i = 0; i < n; i++) {
        if (locs[i].gen == skip_gen || locs[i].worker >= r->nworkers)
            continue;
        struct ipc_deliver dv = {
            .uid = uid, .slot = locs[i].slot, .gen = locs[i].gen, .flags = flags | IPC_F_EXACT
        };
        send_to_worker(r, locs[i].worker, IPC_DELIVER, &dv, payload, plen);
    }
}

static void deliver_from_redis(struct relay *r, int32_t uid, const char *msg, size_t len)
{
    if (len < 3)
        return;
    char type = msg[0];
    const char *colon = memchr(msg, ':', len);
    if (colon == NULL)
        return;
    long node = strtol(msg + 1, NULL, 10);
    /*
     * 'm' and 'p': a chat or notice the sending node delivered to the user's
     * sessions there itself, published for every other node's ([session]
     * mode = multi); it goes to every session here.
     */
    if (type == 'm' || type == 'p') {
        if (node == r->cfg.node_id)
            return;
        r->stats->received++;
        deliver_to_sessions(r, uid, type == 'm' ? IPC_F_CHAT : IPC_F_NOTICE, 0, colon + 1,
                            len - (size_t)(colon + 1 - msg));
        return;
    }
    const char *payload = colon + 1;
    size_t plen = len - (size_t)(payload - msg);
    struct online_loc loc;
    r->stats->received++;
    if (!online_lookup(r->online, uid, &loc) || loc.worker >= r->nworkers) {
        if (type == 'M')
            log_warning("chat for user %d arrived after the session ended; the worker was gone",
                        uid);
        if (type != 'M')
            return;
        /* Any worker can store it offline: the first live one (or the next to come back). */
        loc.worker = first_live_worker(r);
        loc.slot = 0;
        loc.gen = 0;
    }
    struct ipc_deliver dv = { .uid = uid, .slot = loc.slot, .gen = loc.gen };
    struct ipc_session kick = { .uid = uid, .slot = loc.slot, .gen = loc.gen };
    switch (type) {
    case 'M': {
        uint32_t token;
        struct delivery *d = slab_alloc(r->deliveries, &token);
        char *copy = d ? malloc(plen ? plen : 1) : NULL;
        if (copy == NULL) {
            if (d)
                slab_free(r->deliveries, token);
            log_error("out of memory keeping a chat for user %d: delivered unconfirmed", uid);
            dv.flags = IPC_F_CHAT;
            send_to_worker(r, loc.worker, IPC_DELIVER, &dv, payload, plen);
            break;
        }
        memcpy(copy, payload, plen);
        d->uid = uid;
        d->payload = copy;
        d->len = plen;
        send_delivery(r, token, d, loc.worker, &loc, loc.gen == 0);
        if (loc.gen != 0) /* the user's other sessions here (multi) */
            deliver_to_sessions(r, uid, IPC_F_CHAT, loc.gen, payload, plen);
        break;
    }
    case 'P': deliver_to_sessions(r, uid, IPC_F_NOTICE, 0, payload, plen); break;
    case 'K':
        if (node != r->cfg.node_id)
            foreign_kick(r, uid, &kick, loc.worker, strtoull(payload, NULL, 10));
        break;
    case 'D': foreign_drop(r, uid, payload, plen); break;
    default: break;
    }
}

/* A SUBSCRIBE's privdata: the worker and login token waiting for it (0: nobody). */
static void *subscribe_tag(uint32_t worker, uint32_t token)
{
    return token ? (void *)(uintptr_t)((uint64_t)token << 32 | worker) : NULL;
}

static void tell_subscribed(struct relay *r, uint32_t worker, uint32_t token, bool failed)
{
    struct ipc_answer a = { .token = token, .failed = failed ? 1 : 0 };
    if (token)
        send_to_worker(r, worker, IPC_SUBSCRIBED, &a, NULL, 0);
}

/*
 * A "sunsubscribe" for a channel still in the subscribed set, with no
 * SSUBSCRIBE of it outstanding, did not answer ours: the cluster moved the
 * slot away.  The map is read again and everyone subscribed anew.
 */
static void unsubscribed_by_server(struct relay *r, const redisReply *ch)
{
    int32_t uid = ch->type == REDIS_REPLY_STRING ? uid_of_channel(ch->str, ch->len) : 0;
    if (uid <= 0 || !inttable_get(r->subscribed, (uint32_t)uid, NULL) ||
        inttable_get(r->sub_pending, (uint32_t)uid, NULL))
        return;
    if (!r->shards_stale)
        log_warning("redis cluster: the channel of user %d moved; reading the slot map again", uid);
    r->shards_stale = true;
}

static void on_subscription(redisAsyncContext *ac, void *reply, void *priv)
{
    struct relay *r = &the_relay;
    redisReply *rep = reply;
    (void)ac;
    uint64_t tag = (uintptr_t)priv;
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3) {
        if (rep == NULL && tag)
            tell_subscribed(r, (uint32_t)tag, (uint32_t)(tag >> 32), true);
        return;
    }
    redisReply *kind = rep->element[0];
    if (kind->type != REDIS_REPLY_STRING)
        return;
    /* cluster = yes: the sharded kinds, read as the plain ones (redis_cluster.h). */
    const char *what = kind->str;
    if (r->shards && strcmp(what, "unsubscribe") == 0) {
        unsubscribed_by_server(r, rep->element[1]);
        return;
    }
    if (strcmp(what, "subscribe") == 0) {
        if (tag)
            tell_subscribed(r, (uint32_t)tag, (uint32_t)(tag >> 32), false);
        redisReply *sch = rep->element[1];
        int32_t suid = sch->type == REDIS_REPLY_STRING ? uid_of_channel(sch->str, sch->len) : 0;
        if (suid > 0)
            subscription_confirmed(r, (uint32_t)suid);
        return;
    }
    if (strcmp(what, "message") != 0)
        return;
    redisReply *ch = rep->element[1], *msg = rep->element[2];
    if (ch->type != REDIS_REPLY_STRING || msg->type != REDIS_REPLY_STRING)
        return;
    int32_t uid = uid_of_channel(ch->str, ch->len);
    if (uid > 0)
        deliver_from_redis(r, uid, msg->str, msg->len);
}

static void channel_of(uint32_t uid, char *out)
{
    snprintf(out, RELAY_CHANNEL_MAX, RELAY_CHANNEL_PREFIX "%u", uid);
}

/* Subscribe uid's channel; (worker, token) hears when Redis confirms it. */
static void subscribe_uid(struct relay *r, uint32_t uid, uint32_t worker, uint32_t token)
{
    char ch[RELAY_CHANNEL_MAX];
    channel_of(uid, ch);
    struct redis_link *sub = sub_link(r, master_for(r, ch));
    if (!sub->up) {
        tell_subscribed(r, worker, token, true);
        return;
    }
    if (!set_add(r->subscribed, uid)) {
        tell_subscribed(r, worker, token, false); /* already listening */
        return;
    }
    uint64_t pending = 0;
    if (inttable_count(r->sub_pending) == 0)
        r->sub_progress_ms = r->now_ms;
    inttable_get(r->sub_pending, uid, &pending);
    if (inttable_put(r->sub_pending, uid, pending + 1) < 0)
        qc_fatal("out of memory");
    if (r->shards == NULL)
        redisAsyncCommand(sub->ac, on_subscription, subscribe_tag(worker, token), "SUBSCRIBE %s",
                          ch);
    else if (rc_sharded_subscribe(sub->ac, on_subscription, subscribe_tag(worker, token), ch,
                                  true) < 0)
        r->shards_stale = true; /* out of memory: the next connection subscribes it */
    r->stats->subscribed = inttable_count(r->subscribed);
}

static void unsubscribe_uid(struct relay *r, uint32_t uid)
{
    claim_forget(r, uid);
    char ch[RELAY_CHANNEL_MAX];
    channel_of(uid, ch);
    struct redis_link *sub = sub_link(r, master_for(r, ch));
    if (!sub->up || !inttable_del(r->subscribed, uid))
        return;
    if (r->shards == NULL)
        redisAsyncCommand(sub->ac, on_subscription, NULL, "UNSUBSCRIBE %s", ch);
    else
        rc_sharded_subscribe(sub->ac, NULL, NULL, ch, false);
    r->stats->subscribed = inttable_count(r->subscribed);
}

static void subscribe_online(void *arg, int32_t uid, const struct online_loc *loc)
{
    (void)loc;
    subscribe_uid(arg, (uint32_t)uid, 0, 0);
}

/* Subscribed users no longer online on this node (collected, then unsubscribed). */
struct id_batch {
    struct relay *r;
    uint32_t *ids;
    uint32_t n, cap;
};

static void batch_add(struct id_batch *b, uint32_t id)
{
    if (b->n == b->cap) {
        uint32_t ncap = b->cap ? b->cap * 2 : RELAY_BATCH_MIN;
        uint32_t *p = realloc(b->ids, ncap * sizeof *p);
        if (p == NULL)
            return; /* the next pass gets it */
        b->ids = p;
        b->cap = ncap;
    }
    b->ids[b->n++] = id;
}

static void note_gone(void *arg, uint32_t id, uint64_t value)
{
    struct id_batch *b = arg;
    struct online_loc loc;
    (void)value;
    if (!online_lookup(b->r->online, (int32_t)id, &loc))
        batch_add(b, id);
}

/* Claims decided long enough ago that no login can still race them. */
static void note_settled(void *arg, uint32_t id, uint64_t value)
{
    struct id_batch *b = arg;
    const struct claim *cl = (const struct claim *)(uintptr_t)value;
    if (cl->state == CLAIM_DONE && b->r->now_ms - cl->done_ms >= RELAY_CLAIM_KEEP_MS)
        batch_add(b, id);
}

/* Make the subscribed set equal to the online table. */
static void reconcile(struct relay *r)
{
    r->next_reconcile_ms = r->now_ms + RELAY_RECONCILE_MS;
    if (!subscribers_up(r))
        return;
    online_foreach(r->online, subscribe_online, r);
    struct id_batch gone = { .r = r };
    inttable_foreach(r->subscribed, note_gone, &gone);
    for (uint32_t i = 0; i < gone.n; i++)
        unsubscribe_uid(r, gone.ids[i]);
    struct id_batch settled = { .r = r, .ids = gone.ids, .cap = gone.cap };
    inttable_foreach(r->claims, note_settled, &settled);
    for (uint32_t i = 0; i < settled.n; i++)
        claim_forget(r, settled.ids[i]);
    free(settled.ids);
}

/* ---- the session registry: [session] mode across nodes (sessreg.h) ------- */

/*
 * Every session of the node as the registry knows it (by its node-unique
 * generation): login time and device, which the online table does not
 * keep.  A login's claim runs the registry's script once the user's channel
 * is subscribed here (so every field in the registry stands for a node that
 * hears a 'D' kick published for it), with this node's sessions from the
 * online table; sessions this relay kicked no longer count.
 */
struct rsess {
    int32_t uid;
    bool kicked;    /* this relay kicked it, or its login was refused: it no longer counts */
    bool claimed;   /* its login's claim is answered (or it was here before the relay) */
    bool inherited; /* online before this relay started: device and login time unknown */
    int64_t since_ms;
    char device[QC_DEVICE_MAX + 1];
};

/* A login's claim, waiting for its subscription, then for the script's answer. */
struct pclaim {
    struct pclaim *next;
    int32_t uid;
    uint32_t worker, token, gen, max;
    enum online_mode mode;
    bool named;
    char device[QC_DEVICE_MAX + 1];
};

/* HGETALL for a devices list: who asks. */
struct devices_req {
    uint32_t worker, token;
};

#define RELAY_SYNC_MIN_MS 500 /* the registry's heartbeat, at most this often */

static int64_t registry_ttl_ms(const struct relay *r)
{
    return (int64_t)r->cfg.redis_session_ttl * 1000;
}

static struct rsess *rsess_of(struct relay *r, uint32_t gen)
{
    uint64_t v;
    return inttable_get(r->rsess, gen, &v) ? (struct rsess *)(uintptr_t)v : NULL;
}

static void rsess_note(struct relay *r, int32_t uid, uint32_t gen, int64_t since_ms,
                       const char *device, size_t device_len)
{
    struct rsess *s = rsess_of(r, gen);
    if (s == NULL) {
        s = calloc(1, sizeof *s);
        if (s == NULL || inttable_put(r->rsess, gen, (uintptr_t)s) < 0) {
            free(s);
            log_error("user %d: out of memory noting a session for the registry", uid);
            return;
        }
    }
    s->uid = uid;
    s->kicked = s->inherited = false;
    s->since_ms = since_ms;
    if (device_len == 0 || device_len > QC_DEVICE_MAX) {
        device = SOCIAL_DEVICE_DFLT;
        device_len = strlen(SOCIAL_DEVICE_DFLT);
    }
    memcpy(s->device, device, device_len);
    s->device[device_len] = '\0';
}

static void rsess_drop(struct relay *r, uint32_t gen)
{
    struct rsess *s = rsess_of(r, gen);
    if (s == NULL)
        return;
    inttable_del(r->rsess, gen);
    free(s);
}

/* A session already online when this relay started (its device is not known here). */
static void rsess_inherit(void *arg, int32_t uid, const struct online_loc *loc)
{
    struct relay *r = arg;
    rsess_note(r, uid, loc->gen, clock_wall_ms(), NULL, 0);
    struct rsess *s = rsess_of(r, loc->gen);
    if (s)
        s->claimed = s->inherited = true;
}

/*
 * uid's sessions on this node that count, for the script; locs[] is room
 * for the online table's rows.  A heartbeat writes only sessions whose
 * login was claimed and leaves the field of one whose claim is still out
 * alone (two logins racing must meet in their claims: a heartbeat that
 * wrote one early, or dropped the field its claim had just written, would
 * let both stay).
 */
static size_t registry_local(struct relay *r, int32_t uid, struct sessreg_local *out,
                             struct online_loc *locs, bool claimed_only)
{
    size_t n = online_sessions(r->online, uid, locs, ONLINE_USER_MAX), k = 0;
    for (size_t i = 0; i < n; i++) {
        struct rsess *s = rsess_of(r, locs[i].gen);
        /* Without a record its CLAIM is still on the way: it counts when that runs. */
        if (s == NULL || s->kicked)
            continue;
        out[k].gen = locs[i].gen;
        /* a heartbeat leaves a login whose claim is still out to that claim */
        out[k].since_ms = claimed_only && !s->claimed ? -1 : s->since_ms;
        /* "": the registry keeps what it holds for a session older than this relay */
        strlcpy(out[k].device, s->inherited ? "" : s->device, sizeof out[k].device);
        k++;
    }
    return k;
}

/* A session of this node that a login elsewhere (or here) replaces. */
static void kick_local_gen(struct relay *r, int32_t uid, uint32_t gen)
{
    struct online_loc locs[ONLINE_USER_MAX];
    size_t n = online_sessions(r->online, uid, locs, ONLINE_USER_MAX);
    for (size_t i = 0; i < n; i++) {
        if (locs[i].gen != gen || locs[i].worker >= r->nworkers)
            continue;
        struct rsess *s = rsess_of(r, gen);
        if (s)
            s->kicked = true;
        struct ipc_session kick = { .uid = uid, .slot = locs[i].slot, .gen = gen };
        log_info("user %d: session %u replaced by a login (session registry)", uid, gen);
        send_to_worker(r, locs[i].worker, IPC_KICK, &kick, NULL, 0);
    }
}

/* "D<this node>:<node>:<gen>": the relay of <node> kicks its session <gen>. */
static void publish_drop(struct relay *r, int32_t uid, int node, uint32_t gen)
{
    char ch[RELAY_CHANNEL_MAX], msg[64];
    channel_of((uint32_t)uid, ch);
    struct redis_link *pub = pub_link(r, master_for(r, ch));
    if (!pub->up)
        return;
    int n = snprintf(msg, sizeof msg, "D%d:%d:%u", r->cfg.node_id, node, gen);
    if (r->pub_outstanding == 0)
        r->pub_last_progress_ms = r->now_ms;
    r->pub_outstanding++;
    r->stats->published++;
    redisAsyncCommand(pub->ac, on_published, publish_tag(0, 0, IPC_F_KICK),
                      r->shards ? "SPUBLISH %s %b" : "PUBLISH %s %b", ch, msg, (size_t)n);
}

static void answer_claim(struct relay *r, const struct pclaim *q, int32_t result)
{
    struct ipc_answer a = { .token = q->token, .failed = result };
    if (q->token) /* 0: nobody waits (takeover: the claim only lists the session) */
        send_to_worker(r, q->worker, IPC_CLAIMED, &a, NULL, 0);
}

/* The kicked fields the script listed: this node's sessions here, the others' by 'D'. */
static void act_on_kicked(struct relay *r, const struct pclaim *q, const redisReply *rep)
{
    for (size_t i = 1; i < rep->elements; i++) {
        const redisReply *f = rep->element[i];
        int node;
        uint32_t gen;
        if (f->type != REDIS_REPLY_STRING || !sessreg_parse_field(f->str, f->len, &node, &gen))
            continue;
        if (node == r->cfg.node_id) {
            kick_local_gen(r, q->uid, gen); /* the login itself when it was the oldest */
        } else if (q->mode != ONLINE_TAKEOVER) {
            publish_drop(r, q->uid, node, gen); /* takeover: the generation's K kicks */
        }
    }
}

static void claim_go(struct relay *r, struct pclaim *q, bool by_sha);

static void on_claim_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct relay *r = &the_relay;
    struct pclaim *q = priv;
    redisReply *rep = reply;
    (void)ac;
    if (r->pub_outstanding)
        r->pub_outstanding--;
    r->pub_last_progress_ms = r->now_ms;
    note_cluster_error(r, rep);
    if (rep && rep->type == REDIS_REPLY_ERROR && sessreg_noscript(rep->str, rep->len)) {
        claim_go(r, q, false); /* this Redis has not seen the script yet */
        return;
    }
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
        rep->element[0]->type != REDIS_REPLY_INTEGER) {
        log_warning("user %d: the session registry did not answer (%s); [session] mode holds "
                    "on this node only for this login",
                    q->uid, rep && rep->type == REDIS_REPLY_ERROR ? rep->str : "no reply");
        answer_claim(r, q, IPC_CLAIM_UNAVAILABLE);
    } else if (rep->element[0]->integer == SESSREG_REFUSED) {
        struct rsess *s = rsess_of(r, q->gen);
        if (s)
            s->kicked = true; /* the worker ends it */
        log_info("user %d: login refused: a session on another node ([session] mode = refuse)",
                 q->uid);
        answer_claim(r, q, IPC_CLAIM_REFUSED);
    } else {
        struct rsess *s = rsess_of(r, q->gen);
        if (s)
            s->claimed = true;
        answer_claim(r, q, IPC_CLAIM_OK); /* first: a KICK of this very login follows it */
        act_on_kicked(r, q, rep);
    }
    free(q);
}

static char registry_mode(enum online_mode m)
{
    return m == ONLINE_REFUSE  ? SESSREG_REFUSE
           : m == ONLINE_MULTI ? SESSREG_MULTI
                               : SESSREG_TAKEOVER;
}

static bool run_registry(struct relay *r, int32_t uid, struct pclaim *q, bool by_sha);

/* A heartbeat's answer: only a Redis without the script matters (it gets the text). */
static void on_sync_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    const redisReply *rep = reply;
    (void)ac;
    if (rep && rep->type == REDIS_REPLY_ERROR && sessreg_noscript(rep->str, rep->len))
        run_registry(&the_relay, (int32_t)(uintptr_t)priv, NULL, false);
}

/*
 * Run the registry's script for uid: a login's claim (q), or the heartbeat
 * (q NULL); by_sha: by EVALSHA (a NOSCRIPT answer sends it again by EVAL).
 * false when Redis is not there or memory ran out.
 */
static bool run_registry(struct relay *r, int32_t uid, struct pclaim *q, bool by_sha)
{
    char key[SESSREG_KEY_MAX];
    sessreg_key(uid, key);
    struct redis_link *pub = pub_link(r, master_for(r, key));
    if (!pub->up)
        return false;
    static struct sessreg_local local[ONLINE_USER_MAX];
    struct online_loc locs[ONLINE_USER_MAX];
    size_t n = registry_local(r, uid, local, locs, q == NULL);
    struct sessreg_claim c = { .uid = uid,
                               .node = r->cfg.node_id,
                               .mode = q ? (enum sessreg_mode)registry_mode(q->mode) : SESSREG_SYNC,
                               .gen = q ? q->gen : 0,
                               .device = q ? q->device : "",
                               .named = q && q->named,
                               .max = q ? q->max : 0,
                               .now_ms = clock_wall_ms(),
                               .ttl_ms = registry_ttl_ms(r),
                               .by_sha = by_sha };
    struct sessreg_cmd cmd;
    if (sessreg_build(&cmd, &c, local, n) < 0)
        return false;
    if (q) {
        if (r->pub_outstanding == 0)
            r->pub_last_progress_ms = r->now_ms;
        r->pub_outstanding++;
    }
    redisAsyncCommandArgv(pub->ac, q ? on_claim_reply : on_sync_reply,
                          q ? (void *)q : (void *)(uintptr_t)(uint32_t)uid, cmd.argc,
                          (const char **)cmd.argv, cmd.argvlen);
    sessreg_cmd_free(&cmd);
    return true;
}

static void claim_go(struct relay *r, struct pclaim *q, bool by_sha)
{
    if (!run_registry(r, q->uid, q, by_sha)) {
        answer_claim(r, q, IPC_CLAIM_UNAVAILABLE);
        free(q);
    }
}

/* uid's channel is active here: its waiting claims go to the registry. */
static void registry_subscribed(struct relay *r, uint32_t uid)
{
    for (struct pclaim **pp = &r->pclaims; *pp;) {
        struct pclaim *q = *pp;
        if ((uint32_t)q->uid != uid) {
            pp = &q->next;
            continue;
        }
        *pp = q->next;
        claim_go(r, q, true);
    }
}

/* Redis went away: every waiting claim is answered (the mode held on this node only). */
static void registry_claims_fail(struct relay *r)
{
    while (r->pclaims) {
        struct pclaim *q = r->pclaims;
        r->pclaims = q->next;
        answer_claim(r, q, IPC_CLAIM_UNAVAILABLE);
        free(q);
    }
}

static void on_claim(void *ctx, uint32_t k, const struct ipc_msg *m)
{
    struct relay *r = ctx;
    const struct ipc_claim *c = m->body;
    rsess_note(r, c->uid, c->gen, c->since_ms, m->tail, m->tail_len);
    struct pclaim *q = calloc(1, sizeof *q);
    if (q == NULL) {
        struct ipc_answer a = { .token = c->token, .failed = IPC_CLAIM_UNAVAILABLE };
        if (c->token)
            send_to_worker(r, k, IPC_CLAIMED, &a, NULL, 0);
        return;
    }
    *q = (struct pclaim){ .uid = c->uid,
                          .worker = k,
                          .token = c->token,
                          .gen = c->gen,
                          .max = c->max,
                          .mode = (enum online_mode)c->mode,
                          .named = c->named != 0 };
    const struct rsess *s = rsess_of(r, c->gen);
    strlcpy(q->device, s ? s->device : SOCIAL_DEVICE_DFLT, sizeof q->device);
    if (!inttable_get(r->subscribed, (uint32_t)c->uid, NULL)) {
        answer_claim(r, q, IPC_CLAIM_UNAVAILABLE); /* the SUB found Redis away */
        free(q);
    } else if (subscription_active(r, (uint32_t)c->uid)) {
        claim_go(r, q, true);
    } else {
        q->next = r->pclaims;
        r->pclaims = q;
    }
}

static void on_session_end(void *ctx, uint32_t k, const struct ipc_msg *m)
{
    struct relay *r = ctx;
    const struct ipc_session *s = m->body;
    (void)k;
    rsess_drop(r, s->gen);
    char key[SESSREG_KEY_MAX], field[SESSREG_FIELD_MAX];
    sessreg_key(s->uid, key);
    snprintf(field, sizeof field, "%d:%u", r->cfg.node_id, s->gen);
    struct redis_link *pub = pub_link(r, master_for(r, key));
    if (pub->up)
        redisAsyncCommand(pub->ac, NULL, NULL, "HDEL %s %s", key, field);
}

/* A 'D' kick: "<node>:<gen>" names a session; ours is kicked. */
static void foreign_drop(struct relay *r, int32_t uid, const char *payload, size_t len)
{
    int node;
    uint32_t gen;
    if (sessreg_parse_field(payload, len, &node, &gen) && node == r->cfg.node_id)
        kick_local_gen(r, uid, gen);
}

/* ---- the devices list ---- */

static void on_devices_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct relay *r = &the_relay;
    struct devices_req *q = priv;
    redisReply *rep = reply;
    (void)ac;
    note_cluster_error(r, rep);
    struct ipc_answer a = { .token = q->token, .failed = 1 };
    struct buf tail;
    buf_init(&tail);
    if (rep && rep->type == REDIS_REPLY_ARRAY) {
        a.failed = 0;
        int64_t now = clock_wall_ms();
        for (size_t i = 0; i + 1 < rep->elements; i += 2) {
            const redisReply *f = rep->element[i], *v = rep->element[i + 1];
            struct ipc_device d = { 0 };
            int64_t deadline;
            const char *dev;
            size_t dlen;
            int node;
            if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
                !sessreg_parse_field(f->str, f->len, &node, &d.gen) ||
                !sessreg_parse_value(v->str, v->len, &deadline, &d.since_ms, &dev, &dlen) ||
                deadline < now || dlen > QC_DEVICE_MAX)
                continue;
            d.node = node;
            d.device_len = (uint32_t)dlen;
            if (buf_append(&tail, &d, sizeof d) < 0 || buf_append(&tail, dev, dlen) < 0) {
                a.failed = 1;
                break;
            }
        }
    }
    send_to_worker(r, q->worker, IPC_DEVICES_REPLY, &a, a.failed ? NULL : buf_head(&tail),
                   a.failed ? 0 : buf_used(&tail));
    buf_free(&tail);
    free(q);
}

static void on_devices(void *ctx, uint32_t k, const struct ipc_msg *m)
{
    struct relay *r = ctx;
    const struct ipc_query *h = m->body;
    char key[SESSREG_KEY_MAX];
    sessreg_key(h->uid, key);
    struct redis_link *pub = pub_link(r, master_for(r, key));
    struct devices_req *q = pub->up ? malloc(sizeof *q) : NULL;
    if (q == NULL) {
        struct ipc_answer a = { .token = h->token, .failed = 1 };
        send_to_worker(r, k, IPC_DEVICES_REPLY, &a, NULL, 0);
        return;
    }
    *q = (struct devices_req){ .worker = k, .token = h->token };
    redisAsyncCommand(pub->ac, on_devices_reply, q, "HGETALL %s", key);
}

/* ---- the heartbeat ---- */

static void note_uid(void *arg, int32_t uid, const struct online_loc *loc)
{
    (void)loc;
    set_add(arg, (uint32_t)uid);
}

static void sync_uid(void *arg, uint32_t uid, uint64_t value)
{
    (void)value;
    run_registry(arg, (int32_t)uid, NULL, true);
}

struct gone_sessions {
    struct relay *r;
    struct id_batch *b;
};

/* A noted session no longer in the online table (its worker died): forgotten. */
static void note_gone_session(void *arg, uint32_t gen, uint64_t value)
{
    struct gone_sessions *g = arg;
    const struct rsess *s = (const struct rsess *)(uintptr_t)value;
    struct online_loc locs[ONLINE_USER_MAX];
    size_t n = online_sessions(g->r->online, s->uid, locs, ONLINE_USER_MAX);
    for (size_t i = 0; i < n; i++)
        if (locs[i].gen == gen)
            return;
    batch_add(g->b, gen);
}

/*
 * Every registry_ttl/3: each user of the node gets its fields rewritten
 * with a fresh deadline (and fields of sessions that are gone dropped), so
 * the registry holds a node's sessions exactly while the node lives.
 */
static void registry_heartbeat(struct relay *r)
{
    if (r->now_ms < r->next_sync_ms || !all_links_up(r))
        return;
    int64_t every = registry_ttl_ms(r) / 3;
    r->next_sync_ms = r->now_ms + (every < RELAY_SYNC_MIN_MS ? RELAY_SYNC_MIN_MS : every);
    struct id_batch gone = { .r = r };
    struct gone_sessions g = { .r = r, .b = &gone };
    inttable_foreach(r->rsess, note_gone_session, &g);
    for (uint32_t i = 0; i < gone.n; i++)
        rsess_drop(r, gone.ids[i]);
    free(gone.ids);
    struct inttable *users = inttable_new();
    if (users == NULL)
        return;
    online_foreach(r->online, note_uid, users);
    inttable_foreach(users, sync_uid, r);
    inttable_free(users);
}

/* ---- publisher: messages for users elsewhere ---------------------------- */

/* A PUBLISH's privdata: the asking worker and its token, no allocation. */
static void *publish_tag(uint32_t worker, uint32_t token, uint32_t flags)
{
    return (void *)(uintptr_t)((uint64_t)token << 32 | (uint64_t)(flags & 0xff) << 8 | worker);
}

static void on_published(redisAsyncContext *ac, void *reply, void *priv)
{
    struct relay *r = &the_relay;
    redisReply *rep = reply;
    (void)ac;
    uint64_t tag = (uintptr_t)priv;
    uint32_t worker = (uint32_t)(tag & 0xff), flags = (uint32_t)(tag >> 8) & 0xff;
    uint32_t token = (uint32_t)(tag >> 32);
    if (r->pub_outstanding)
        r->pub_outstanding--;
    r->pub_last_progress_ms = r->now_ms;
    bool ok = rep && rep->type == REDIS_REPLY_INTEGER;
    if (!ok)
        r->stats->publish_failed++;
    note_cluster_error(r, rep);
    if (!(flags & IPC_F_CHAT) || token == 0)
        return;
    struct ipc_published p = { .token = token,
                               .receivers = ok ? (uint32_t)rep->integer : 0,
                               .failed = ok ? 0 : 1 };
    send_to_worker(r, worker, IPC_PUBLISHED, &p, NULL, 0);
}

static void publish_for_worker(struct relay *r, uint32_t k, const struct ipc_publish *h,
                               const char *payload, size_t len)
{
    char ch[RELAY_CHANNEL_MAX], head[24];
    channel_of((uint32_t)h->uid, ch);
    struct redis_link *pub = pub_link(r, master_for(r, ch));
    if (!pub->up) {
        if (h->kind & IPC_F_CHAT) {
            struct ipc_published rep = { .token = h->token, .failed = 1 };
            send_to_worker(r, k, IPC_PUBLISHED, &rep, NULL, 0);
        }
        r->stats->publish_failed++;
        return;
    }
    char type = (h->kind & IPC_F_KICK) ? 'K' : (h->kind & IPC_F_NOTICE) ? 'P' : 'M';
    if (h->kind & IPC_F_OTHERS)
        type = type == 'P' ? 'p' : 'm'; /* the sender's own node has delivered it */
    int hl = snprintf(head, sizeof head, "%c%d:", type, r->cfg.node_id);
    struct buf body;
    buf_init(&body);
    if (buf_append(&body, head, (size_t)hl) < 0 || buf_append(&body, payload, len) < 0) {
        buf_free(&body);
        return;
    }
    if (r->pub_outstanding == 0)
        r->pub_last_progress_ms = r->now_ms;
    r->pub_outstanding++;
    r->stats->published++;
    redisAsyncCommand(pub->ac, on_published, publish_tag(k, h->token, h->kind),
                      r->shards ? "SPUBLISH %s %b" : "PUBLISH %s %b", ch, buf_head(&body),
                      buf_used(&body));
    buf_free(&body);
}

/* NUMSUB for a list of users: one byte per user, 1 when subscribed somewhere. */
struct numsub_req {
    uint32_t worker, token;
    size_t n;
};

static void on_numsub(redisAsyncContext *ac, void *reply, void *priv)
{
    struct relay *r = &the_relay;
    struct numsub_req *q = priv;
    redisReply *rep = reply;
    (void)ac;
    struct ipc_answer h = { .token = q->token };
    char *online = calloc(q->n ? q->n : 1, 1);
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 * q->n && online) {
        for (size_t i = 0; i < q->n; i++) {
            redisReply *cnt = rep->element[2 * i + 1];
            online[i] = cnt->type == REDIS_REPLY_INTEGER && cnt->integer > 0;
        }
    } else {
        h.failed = 1;
    }
    send_to_worker(r, q->worker, IPC_NUMSUB_REPLY, &h, online, online ? q->n : 0);
    free(online);
    free(q);
}

/*
 * cluster = yes: PUBSUB SHARDNUMSUB counts channels of one slot per command,
 * so each user is asked on the master of its channel's slot, one command
 * each (pipelined with the round), and the answer goes once all are back.
 */
struct shard_numsub {
    uint32_t worker, token;
    size_t n, pending;
    bool failed;
    char *online; /* one byte per user */
    struct numsub_part {
        struct shard_numsub *all;
        size_t i;
    } * parts;
};

static void shard_numsub_answer(struct relay *r, struct shard_numsub *q)
{
    struct ipc_answer h = { .token = q->token, .failed = q->failed ? 1 : 0 };
    send_to_worker(r, q->worker, IPC_NUMSUB_REPLY, &h, q->failed ? NULL : q->online,
                   q->failed ? 0 : q->n);
    free(q->online);
    free(q->parts);
    free(q);
}

static void on_shard_numsub(redisAsyncContext *ac, void *reply, void *priv)
{
    struct relay *r = &the_relay;
    struct numsub_part *part = priv;
    struct shard_numsub *q = part->all;
    redisReply *rep = reply;
    (void)ac;
    note_cluster_error(r, rep);
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[1]->type == REDIS_REPLY_INTEGER)
        q->online[part->i] = rep->element[1]->integer > 0;
    else
        q->failed = true;
    if (--q->pending == 0)
        shard_numsub_answer(r, q);
}

static void shard_numsub_for_worker(struct relay *r, uint32_t k, const struct ipc_token *h,
                                    const char *payload, size_t n)
{
    struct shard_numsub *q = calloc(1, sizeof *q);
    if (q != NULL) {
        q->online = calloc(n ? n : 1, 1);
        q->parts = calloc(n ? n : 1, sizeof *q->parts);
    }
    if (q == NULL || q->online == NULL || q->parts == NULL || !all_links_up(r)) {
        struct ipc_answer rep = { .token = h->token, .failed = 1 };
        send_to_worker(r, k, IPC_NUMSUB_REPLY, &rep, NULL, 0);
        if (q) {
            free(q->online);
            free(q->parts);
        }
        free(q);
        return;
    }
    q->worker = k;
    q->token = h->token;
    q->n = n;
    q->pending = n + 1; /* + 1: answered below, not before every command is queued */
    for (size_t i = 0; i < n; i++) {
        int32_t uid;
        char ch[RELAY_CHANNEL_MAX];
        memcpy(&uid, payload + i * sizeof uid, sizeof uid);
        channel_of((uint32_t)uid, ch);
        q->parts[i] = (struct numsub_part){ .all = q, .i = i };
        if (redisAsyncCommand(pub_link(r, master_for(r, ch))->ac, on_shard_numsub, &q->parts[i],
                              "PUBSUB SHARDNUMSUB %s", ch) != REDIS_OK) {
            q->failed = true; /* no callback will come for it */
            q->pending--;
        }
    }
    if (--q->pending == 0)
        shard_numsub_answer(r, q);
}

static void numsub_for_worker(struct relay *r, uint32_t k, const struct ipc_token *h,
                              const char *payload, size_t len)
{
    size_t n = len / sizeof(int32_t);
    if (r->shards) {
        shard_numsub_for_worker(r, k, h, payload, n);
        return;
    }
    struct numsub_req *q = calloc(1, sizeof *q);
    const char **argv = calloc(n + 2, sizeof *argv);
    size_t *argl = calloc(n + 2, sizeof *argl);
    char *names = calloc(n ? n : 1, RELAY_CHANNEL_MAX);
    if (!r->pub.up || q == NULL || argv == NULL || argl == NULL || names == NULL) {
        struct ipc_answer rep = { .token = h->token, .failed = 1 };
        send_to_worker(r, k, IPC_NUMSUB_REPLY, &rep, NULL, 0);
        free(q);
        free(argv);
        free(argl);
        free(names);
        return;
    }
    argv[0] = "PUBSUB";
    argl[0] = 6;
    argv[1] = "NUMSUB";
    argl[1] = 6;
    for (size_t i = 0; i < n; i++) {
        int32_t uid;
        memcpy(&uid, payload + i * sizeof uid, sizeof uid);
        char *ch = names + i * RELAY_CHANNEL_MAX;
        channel_of((uint32_t)uid, ch);
        argv[i + 2] = ch;
        argl[i + 2] = strlen(ch);
    }
    q->worker = k;
    q->token = h->token;
    q->n = n;
    redisAsyncCommandArgv(r->pub.ac, on_numsub, q, (int)(n + 2), argv, argl);
    free(argv);
    free(argl);
    free(names);
}

static void on_sub(void *ctx, uint32_t k, const struct ipc_msg *m)
{
    struct relay *r = ctx;
    const struct ipc_sub *sub = m->body;
    uint32_t uid = (uint32_t)sub->uid, token = sub->token;
    if (sub->flags & IPC_F_KICK)
        token = claim_start(r, uid, k, token);
    subscribe_uid(r, uid, k, token);
    struct claim *cl = claim_of(r, uid);
    if ((sub->flags & IPC_F_KICK) && cl && cl->state == CLAIM_WAIT_SUB &&
        subscription_active(r, uid))
        claim_generation(r, uid, cl);
}

static void on_unsub(void *ctx, uint32_t k, const struct ipc_msg *m)
{
    const struct ipc_user *u = m->body;
    struct online_loc loc;
    (void)k;
    /* A newer session (on another worker of this node) keeps the channel and its claim. */
    if (online_lookup(((struct relay *)ctx)->online, u->uid, &loc))
        return;
    unsubscribe_uid(ctx, (uint32_t)u->uid);
}

static void on_confirm(void *ctx, uint32_t k, const struct ipc_msg *m)
{
    struct relay *r = ctx;
    const struct ipc_confirm *c = m->body;
    struct delivery *d = slab_get(r->deliveries, c->token);
    if (d && d->worker != k)
        qc_fatal("worker %u confirmed delivery %u, which went to worker %u", k, c->token,
                 d->worker);
    confirm_delivery(r, c->token);
}

static void on_publish_request(void *ctx, uint32_t k, const struct ipc_msg *m)
{
    publish_for_worker(ctx, k, m->body, m->tail, m->tail_len);
}

static void on_numsub_request(void *ctx, uint32_t k, const struct ipc_msg *m)
{
    numsub_for_worker(ctx, k, m->body, m->tail, m->tail_len);
}

/* What the relay accepts from a worker. */
static const struct ipc_handlers from_worker = {
    .from = "worker",
    .fn = { [IPC_SUB] = on_sub,
            [IPC_UNSUB] = on_unsub,
            [IPC_CONFIRM] = on_confirm,
            [IPC_PUBLISH] = on_publish_request,
            [IPC_NUMSUB] = on_numsub_request,
            [IPC_CLAIM] = on_claim,
            [IPC_SESSION_END] = on_session_end,
            [IPC_DEVICES] = on_devices },
};

static void read_worker(struct relay *r, uint32_t k)
{
    if (ipc_chan_read(&r->workers[k].ch, r->pkt, RELAY_READS_PER_EVENT, &from_worker, r, k) ==
        IPC_READ_CLOSED)
        drop_worker(r, k);
}

/* ---- the master's channel, signals, timer -------------------------------- */

static void worker_link_event(void *ctx, uint32_t events)
{
    struct worker_link *wl = ctx;
    if (events & EPOLLOUT)
        flush_worker(wl->r, wl->index);
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        read_worker(wl->r, wl->index);
}

static int watch_worker_link(struct relay *r, uint32_t k, int fd)
{
    struct worker_link *wl = &r->workers[k];
    ipc_chan_init(&wl->ch, fd);
    ipc_chan_cork(&wl->ch, true); /* sent by flush_round, once per loop round */
    wl->r = r;
    wl->index = k;
    wl->want_write = false;
    if (loop_watch(&r->loop, &wl->src, fd, EPOLLIN, worker_link_event, wl) < 0) {
        log_error("watching the link to worker %u: %s", k, strerror(errno));
        ipc_chan_close(&wl->ch);
        return -1;
    }
    return 0;
}

static void adopt_worker(struct relay *r, uint32_t k, int fd)
{
    if (k >= ONLINE_MAX_WORKERS)
        qc_fatal("the master sent a link to worker %u (at most %d)", k, ONLINE_MAX_WORKERS);
    if (r->workers[k].ch.fd >= 0)
        drop_worker(r, k);
    if (watch_worker_link(r, k, fd) < 0)
        return;
    if (k >= r->nworkers)
        r->nworkers = k + 1;
    log_info("link to worker %u (re)established", k);
    redispatch_deliveries(r, RELAY_NO_WORKER);
}

static void on_new_peer(void *ctx, uint32_t link, const struct ipc_msg *m)
{
    const struct ipc_new_peer *np = m->body;
    (void)link;
    adopt_worker(ctx, np->peer, m->fd);
}

static void on_config(void *ctx, uint32_t link, const struct ipc_msg *m)
{
    struct relay *r = ctx;
    (void)link;
    config_apply_live(&r->cfg, m->body);
    log_set_level((enum log_level)r->cfg.log_level);
}

/* What the relay accepts from the master. */
static const struct ipc_handlers from_master = {
    .from = "the master",
    .fn = { [IPC_NEW_PEER] = on_new_peer, [IPC_CONFIG] = on_config },
};

static void read_channel(struct relay *r)
{
    enum ipc_read_result res;
    do
        res = ipc_chan_read(&r->channel, r->pkt, INT_MAX, &from_master, r, 0);
    while (res == IPC_READ_MORE);
    if (res == IPC_READ_CLOSED)
        r->stopping = true;
}

/*
 * Before a cluster's connections are dropped because one master's went
 * away: what the others' subscribers already received is read and handed
 * on, since a sender whose SPUBLISH counted this node has its ACK.
 */
static void drain_subscribers(struct relay *r)
{
    for (uint32_t m = 0; m < master_count(r); m++) {
        struct redis_link *l = sub_link(r, m);
        if (l->ac && l->up)
            redisAsyncHandleRead(l->ac);
    }
}

/*
 * Redis is back (or this relay is new): once every SUBSCRIBE of the node is
 * confirmed, each worker fills its sessions from the log, so a chat
 * published while nobody listened is read from the log, and one published
 * after is heard (the workers drop what comes both ways by cseq).
 */
static void resync_when_subscribed(struct relay *r)
{
    if (!r->resync_wanted || !all_links_up(r) || inttable_count(r->sub_pending) > 0)
        return;
    r->resync_wanted = false;
    struct ipc_token t = { .token = 0 };
    for (uint32_t k = 0; k < r->nworkers; k++)
        send_to_worker(r, k, IPC_RESYNC, &t, NULL, 0);
    log_info("re-subscribed: workers fill their sessions from the log");
}

static void on_tick(void *ctx)
{
    struct relay *r = ctx;
    metrics_heartbeat();
    /*
     * A cluster answers a sharded subscription it cannot take (MOVED,
     * CLUSTERDOWN) with an error that hiredis 0.14 cannot hand to anyone
     * (redis_cluster.c): one not confirmed in time counts as such.
     */
    if (r->shards && inttable_count(r->sub_pending) &&
        r->now_ms - r->sub_progress_ms > RELAY_REPLY_TIMEOUT_MS && !r->shards_stale) {
        log_warning("redis cluster: %u subscription(s) unconfirmed for %d ms",
                    (unsigned)inttable_count(r->sub_pending), RELAY_REPLY_TIMEOUT_MS);
        r->shards_stale = true;
    }
    if (r->shards_stale) {
        drain_subscribers(r);
        drop_redis(r, "a cluster connection went away or the slot map changed");
    }
    if (!any_link_open(r) && r->next_connect_ms && r->now_ms >= r->next_connect_ms)
        connect_redis(r);
    if (r->pub_outstanding && r->now_ms - r->pub_last_progress_ms > RELAY_REPLY_TIMEOUT_MS)
        drop_redis(r, "no reply within the timeout");
    if (r->now_ms >= r->next_reconcile_ms)
        reconcile(r);
    registry_heartbeat(r);
    resync_when_subscribed(r);
}

/* The commands this round queued go to Redis in one write (a pipeline). */
static void flush_redis(struct redis_link *l)
{
    if (l->ac == NULL || !l->up || l->write_blocked || !(l->events & EPOLLOUT))
        return;
    redisAsyncHandleWrite(l->ac); /* all of it, or what the socket takes */
    if (l->ac && (l->events & EPOLLOUT)) {
        l->write_blocked = true; /* the rest when the socket drains */
        redis_update_events(l);
    }
}

/*
 * Before the loop sleeps: what this round produced leaves together, the
 * Redis commands in one write per connection and the packets for each
 * worker in one sendmmsg per link (see docs/BENCHMARKS.md, cluster).
 */
static void flush_round(void *ctx)
{
    struct relay *r = ctx;
    for (uint32_t m = 0; m < master_count(r); m++) {
        flush_redis(pub_link(r, m));
        flush_redis(sub_link(r, m));
    }
    for (uint32_t k = 0; k < r->nworkers; k++) {
        struct worker_link *wl = &r->workers[k];
        if (wl->ch.fd >= 0 && !wl->want_write && ipc_chan_waiting(&wl->ch))
            flush_worker(r, k);
    }
}

static void on_signal(void *ctx, uint32_t events)
{
    struct relay *r = ctx;
    struct signalfd_siginfo si;
    (void)events;
    while (read(r->sigfd, &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
            r->stopping = true;
        else if (si.ssi_signo == SIGUSR1)
            log_reopen();
    }
}

static void on_channel_event(void *ctx, uint32_t events)
{
    (void)events;
    read_channel(ctx);
}

static void on_wake(void *ctx)
{
    struct relay *r = ctx;
    r->now_ms = r->loop.now_ms;
}

/* Signals, tick, the master's channel, the links to the workers made before the fork. */
static int open_sources(struct relay *r, const int *worker_fds)
{
    r->sigfd = proc_signal_fd();
    if (loop_init(&r->loop, r) < 0 || r->sigfd < 0 ||
        loop_set_tick(&r->loop, RELAY_TICK_MS, on_tick) < 0 ||
        loop_watch(&r->loop, &r->signal_src, r->sigfd, EPOLLIN, on_signal, r) < 0 ||
        loop_watch(&r->loop, &r->channel_src, r->channel.fd, EPOLLIN, on_channel_event, r) < 0)
        return -1;
    loop_set_on_wake(&r->loop, on_wake);
    loop_set_before_sleep(&r->loop, flush_round);
    for (uint32_t k = 0; k < r->nworkers; k++)
        if (worker_fds[k] >= 0 && watch_worker_link(r, k, worker_fds[k]) < 0)
            return -1;
    return 0;
}

void relay_main(uint32_t nworkers, int channel_fd, const int *worker_fds,
                const struct qc_config *cfg, struct online_table *online)
{
    struct relay *r = &the_relay;
    log_set_role("relay");
    title_set("qchatd: relay");
    r->cfg = *cfg;
    r->online = online;
    r->stats = online_relay_stats(online);
    r->stats->pid = getpid();
    r->nworkers = nworkers;
    ipc_chan_init(&r->channel, channel_fd);
    r->now_ms = clock_now_ms();
    r->pkt = malloc(IPC_MAX_PACKET);
    r->deliveries = slab_new(sizeof(struct delivery));
    r->subscribed = inttable_new();
    r->sub_pending = inttable_new();
    r->claims = inttable_new();
    r->rsess = inttable_new();
    for (uint32_t k = 0; k < ONLINE_MAX_WORKERS; k++)
        ipc_chan_init(&r->workers[k].ch, -1);
    if (r->pkt == NULL || r->deliveries == NULL || r->subscribed == NULL ||
        r->sub_pending == NULL || r->claims == NULL || r->rsess == NULL ||
        open_sources(r, worker_fds) < 0) {
        log_error("relay setup: %s", strerror(errno));
        _exit(1);
    }
    online_foreach(online, rsess_inherit, r); /* sessions older than this relay */
    log_info("started (pid %d), redis %s:%d", (int)getpid(), cfg->redis_host, cfg->redis_port);
    connect_redis(r);
    metrics_attach(METRICS_RELAY_SLOT);
    while (!r->stopping)
        loop_run_once(&r->loop, -1);
    log_info("stopping");
    drop_redis(r, "stopping");
    for (uint32_t k = 0; k < r->nworkers; k++)
        if (r->workers[k].ch.fd >= 0)
            flush_worker(r, k);
    r->stats->state = RELAY_DOWN;
    r->stats->pid = 0;
    log_info("stopped");
    _exit(0);
}

int relay_check_redis(const struct qc_config *cfg, char *err, size_t errlen)
{
    struct timeval tv = { 2, 0 };
    redisContext *c = redisConnectWithTimeout(cfg->redis_host, cfg->redis_port, tv);
    if (c == NULL || c->err) {
        snprintf(err, errlen, "redis %s:%d: %s", cfg->redis_host, cfg->redis_port,
                 c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return -1;
    }
    redisSetTimeout(c, tv);
    redisReply *rep = redisCommand(c, "PING");
    int rc = rep && rep->type == REDIS_REPLY_STATUS ? 0 : -1;
    if (rc < 0)
        snprintf(err, errlen, "redis %s:%d: no answer to PING", cfg->redis_host, cfg->redis_port);
    if (rep)
        freeReplyObject(rep);
    redisFree(c);
    return rc;
}
