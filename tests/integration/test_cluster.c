/*
 * test_cluster.c - qchat as a cluster, on the real thing: a private
 * MariaDB, Redis, two qchatd nodes (node_id 1 and 2, storage mysql, relay
 * to Redis) and nginx's stream balancer in front (cluster_harness.h).
 *
 * Across nodes, directly and through nginx: one-to-one chat both ways,
 * group chat with members on both nodes (each gets it exactly once, the
 * sender never), presence (friends' and members' state in LOGIN_MSG_ACK,
 * PRESENCE_MSG pushes when a friend logs in or out on the other node, and
 * only to sessions that asked), takeover (KICK on the old node, messages
 * then reach the new one), two logins of one account on both nodes at the
 * same moment (40 tries: exactly one survives each time), offline messages
 * stored by the other node.
 *
 * A chat sent once the recipient's LOGIN_MSG_ACK came from the other node
 * arrives live, even when that node's relay is slow (SIGSTOPped) to
 * subscribe the user's channel.
 *
 * Faults, under pipelined one-to-one and group traffic between the nodes
 * (every acknowledged message must be delivered or found in offlinemsg at
 * the next login, once, to the right user: lost == 0):
 *   - Redis SIGKILLed while chats are in flight and restarted on its port
 *     1.5 s later: the relays say so in {"cmd":"status"} (and qchatctl),
 *     reconnect, re-subscribe (NUMSUB 1), and cross-node delivery works;
 *   - a worker of node 2 hangs (SIGSTOP) with users on it, then is
 *     SIGKILLed and restarted by its master.
 * A whole node SIGKILLed: its users' channels lose their subscribers
 * (PUBSUB NUMSUB 0), friends see them offline, messages to them are
 * stored offline and delivered when they log in on the other node
 * (directly, and through nginx, which skips the dead node); the node
 * restarted on its port serves again.
 *
 * The log fills what pub/sub lost (issue 16): 20 senders on node 1 chat
 * with seq to 20 receivers on node 2 while node 2's relay is SIGKILLed
 * (respawned), Redis is SIGKILLed and restarted, Redis is SIGSTOPped for
 * 30 s: every ACK comes (the commit, not the PUBLISH), and the receivers,
 * online all along, get every acknowledged cseq live, once.  With node 2
 * SIGKILLed and restarted, the receivers log in again (on either node)
 * and every acknowledged cseq arrives once, live or in offlinemsg; the
 * same when node 2 first hangs (SIGSTOP) for 500 ms, then is SIGKILLed.
 * On a Redis Cluster (QCHAT_TEST_REDIS_CLUSTER=1) the same traffic while
 * the slots of channels in use move to another master, and while one
 * master is SIGKILLed and restarted: the relays follow, and receivers
 * online all along get every acknowledged cseq live, once.
 * Last, both nodes stop cleanly.
 */
#include "harness.h"
#include "cluster_harness.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include <hiredis/hiredis.h>

#include "server/recover.h"
#include "server/relay.h"

#define NODE_A          0
#define NODE_B          1
#define SUB_WAIT_MS     5000 /* a session's channel subscribed / released */
#define ORDERED_MSGS    20   /* one-to-one messages checked for order */
#define OFFLINE_MSGS    3
#define NGINX_TRIES     6    /* connections to land a user on the other node */
#define LIVE_LOGINS     10   /* chats sent right after a login ACK */
#define RELAY_STALL_MS  500  /* node B's relay stopped while a login is answered */
#define BLOCK_NOTICE_MS 2000 /* a block reaches the other node's session */
#define BLOCK_POLL_MS   20
#define RACE_TRIES      40   /* simultaneous logins of one account on both nodes */
#define RACE_SETTLE_MS  3000 /* the loser's KICK and EOF arrive within this */
#define RACE_QUIET_MS   300  /* the survivor stays untouched this long after */
#define RACE_READ_MS    10
#define RACE_POLL_MS    20

/* Traffic under a fault. */
#define LOSS_PAIRS        4     /* users on node A chatting with users on node B */
#define LOSS_BEFORE_MS    700   /* traffic before the fault */
#define LOSS_OUTAGE_MS    1500  /* Redis away / the worker hung */
#define LOSS_AFTER_MS     700   /* traffic once the cluster is whole again */
#define LOSS_LIMIT_MS     30000 /* the whole phase (relay backoff <= 5 s) */
#define LOSS_ROUND_GAP_MS 20
#define LOSS_PIPELINE     4            /* chats each user has in flight per round */
#define LOSS_SEQ_BASE     1000000000LL /* seq of "loss N" is LOSS_SEQ_BASE + N */
#define LOSS_MAX_MSGS     16384
#define LOSS_TAG          "loss "
#define GLOSS_TAG         "gloss "
#define GLOSS_MAX         2048         /* group chats (one per round) */
#define GLOSS_SEQ_BASE    2000000000LL /* seq of "gloss N" is GLOSS_SEQ_BASE + N */
#define LOSS_USERS        (2 * LOSS_PAIRS)
#define DRAIN_QUIET_MS    300 /* no more pushes for this long: drained */

/* The log fills what pub/sub lost (issue 16): senders on node A, receivers on node B. */
#define FILL_PAIRS        20
#define FILL_BEFORE_MS    1000  /* traffic before the fault */
#define FILL_KILL_MS      2000  /* a killed node stays down this long */
#define FILL_RESTART_MS   1500  /* a killed Redis stays down this long */
#define FILL_RELAY_MS     1000  /* traffic while the master respawns a killed relay */
#define FILL_HANG_MS      500   /* a node hangs (SIGSTOP) this long before it is killed */
#define FILL_PAUSE_MS     30000 /* Redis SIGSTOPped this long */
#define FILL_AFTER_MS     1500  /* traffic once whole again: later chats reveal gaps */
#define FILL_LIMIT_MS     90000 /* one whole case */
#define FILL_WHOLE_MS     20000 /* relays connected again after the repair */
#define FILL_ROUND_GAP_MS 50
#define FILL_QUIET_MS     1500 /* no more chats for this long: the fills are done */
#define FILL_MAX_CSEQ     4096 /* chats per pair */
#define FILL_SEQ_BASE     3000000000LL
#define FILL_HISTORY_PAGE 100 /* HISTORY limit: the protocol maximum */

/* A Redis Cluster changes under the traffic (QCHAT_TEST_REDIS_CLUSTER=1). */
#define MOVE_MIGRATING_MS    500   /* slots MIGRATING/IMPORTING while the chats go on */
#define MOVE_KEYS_BATCH      100   /* CLUSTER GETKEYSINSLOT per call */
#define MOVE_MIGRATE_MS      5000  /* MIGRATE's own timeout */
#define MOVE_FOLLOW_MS       20000 /* the relays subscribed at the new owner within this */
#define MOVE_POLL_MS         50
#define MASTER_DOWN_MS       4000 /* past cluster-node-timeout (2 s): the cluster says fail */
#define REDIS_CMD_MS         2000
#define REDIS_ID_MAX         64
#define MOVED_SLOTS_MAX      (4 * FILL_PAIRS) /* every user's channel and generation key */
#define RELAY_GEN_KEY_PREFIX "qchat:gen:"     /* the relay's login generation keys */

/* ---- users, sessions, requests ------------------------------------------ */

static int port_of(int node)
{
    return cl.node[node].port;
}

/* Register a fresh user through port (stays offline). */
static void new_user_at(int port, struct h_user *u, const char *tag)
{
    struct qclient *c = h_connect_to(port);
    h_register(c, u, tag);
    h_close(c);
}

static void new_user(struct h_user *u, const char *tag)
{
    new_user_at(port_of(NODE_A), u, tag);
}

static void wait_subscribed(const struct h_user *u, long want)
{
    H_CHECK(cl_wait_numsub(u->id, want, SUB_WAIT_MS),
            "PUBSUB NUMSUB "
            "qchat:u:%d: want %ld within %d ms, got %ld",
            u->id, want, SUB_WAIT_MS, cl_numsub(u->id));
}

/* Log in on a node and wait until the session is reachable from the other. */
static struct qclient *login_on(int node, const struct h_user *u, bool presence,
                                struct json_object **ack)
{
    struct qclient *c = h_login_to(port_of(node), u, presence, ack);
    H_CHECK(cl_wait_node_of(u->id, node, SUB_WAIT_MS),
            "user %d logged in on node %d but "
            "node %d's {\"cmd\":\"users\"} does not list it (found on index %d)",
            u->id, node + 1, node + 1, cl_node_of(u->id));
    wait_subscribed(u, 1);
    return c;
}

static void close_and_wait_gone(struct qclient *c, const struct h_user *u)
{
    h_close(c);
    wait_subscribed(u, 0);
}

/* Send a chat with seq; returns the ACK's mid.  Pushes before the ACK stay queued. */
static int64_t chat(struct qclient *c, int32_t toid, const char *text, const char *what)
{
    int64_t seq = h_next_seq();
    h_send(c, "{\"msgid\":5,\"toid\":%d,\"msg\":%s,\"seq\":%lld}", toid, h_q(text), (long long)seq);
    struct json_object *ack = qclient_recv_msgid(c, QC_ACK_MSG, H_REPLY_MS);
    H_CHECK(ack != NULL, "%s: chat to %d: no ACK within %d ms (%s)", what, toid, H_REPLY_MS,
            qclient_eof(c) ? "EOF" : strerror(errno));
    H_CHECK(h_has(ack, "seq") && h_int(ack, "seq") == seq && h_int(ack, "req") == QC_ONE_CHAT_MSG &&
                h_int(ack, "errno") == 0 && h_has(ack, "mid"),
            "%s: chat to %d: want {\"msgid\":11,\"errno\":0,\"req\":5,\"seq\":%lld,\"mid\":..}, "
            "got %s",
            what, toid, (long long)seq, h_json(ack));
    int64_t mid = h_int(ack, "mid");
    json_object_put(ack);
    return mid;
}

static int64_t group_chat(struct qclient *c, int32_t gid, const char *text, const char *what)
{
    int64_t seq = h_next_seq();
    h_send(c, "{\"msgid\":9,\"groupid\":%d,\"msg\":%s,\"seq\":%lld}", gid, h_q(text),
           (long long)seq);
    struct json_object *ack = h_expect_ack(c, QC_GROUP_CHAT_MSG, seq, 0, what);
    int64_t mid = h_int(ack, "mid");
    json_object_put(ack);
    return mid;
}

/* The next object on c is the chat from `from` to `to` with text (and mid when > 0). */
static void expect_chat(struct qclient *c, const struct h_user *from, const struct h_user *to,
                        const char *text, int64_t mid, const char *what)
{
    struct json_object *m = h_expect(c, QC_ONE_CHAT_MSG, what);
    H_CHECK(h_int(m, "id") == from->id && strcmp(h_str(m, "name"), from->name) == 0 &&
                h_int(m, "toid") == to->id && strcmp(h_str(m, "msg"), text) == 0,
            "%s: want a chat {id:%d, name:\"%s\", toid:%d, msg:\"%s\"}, got %s", what, from->id,
            from->name, to->id, text, h_json(m));
    if (mid > 0)
        H_CHECK(h_int(m, "mid") == mid, "%s: want mid %lld (the sender's ACK), got %s", what,
                (long long)mid, h_json(m));
    h_check_time_fields(m);
    json_object_put(m);
}

static void check_group_msg(struct json_object *m, const struct h_user *from, int32_t gid,
                            const char *text, int64_t mid, const char *what)
{
    H_CHECK(h_int(m, "msgid") == QC_GROUP_CHAT_MSG && h_int(m, "groupid") == gid &&
                h_int(m, "userid") == from->id && h_int(m, "id") == from->id &&
                strcmp(h_str(m, "name"), from->name) == 0 && strcmp(h_str(m, "msg"), text) == 0 &&
                h_int(m, "mid") == mid,
            "%s: want a group chat {groupid:%d, userid:%d, name:\"%s\", msg:\"%s\", mid:%lld}, "
            "got %s",
            what, gid, from->id, from->name, text, (long long)mid, h_json(m));
}

static void expect_presence(struct qclient *c, const struct h_user *who, const char *state,
                            const char *what)
{
    struct json_object *p = h_expect(c, QC_PRESENCE_MSG, what);
    H_CHECK(h_int(p, "id") == who->id && strcmp(h_str(p, "name"), who->name) == 0 &&
                strcmp(h_str(p, "state"), state) == 0,
            "%s: want {\"msgid\":13,\"id\":%d,\"name\":\"%s\",\"state\":\"%s\"}, got %s", what,
            who->id, who->name, state, h_json(p));
    json_object_put(p);
}

static void add_friend(struct qclient *c, const struct h_user *f)
{
    json_object_put(h_request(c, QC_ADD_FRIEND_MSG, 0, "ADD_FRIEND", "\"friendid\":%d", f->id));
}

static int32_t create_group(struct qclient *c, const char *tag)
{
    char name[H_NAME_LEN];
    h_unique_name(name, sizeof(name), tag);
    struct json_object *ack = h_request(c, QC_CREATE_GROUP_MSG, 0, "CREATE_GROUP",
                                        "\"groupname\":%s,\"groupdesc\":\"cluster\"", h_q(name));
    int32_t gid = (int32_t)h_int(ack, "groupid");
    json_object_put(ack);
    return gid;
}

static void join_group(struct qclient *c, int32_t gid)
{
    json_object_put(h_request(c, QC_ADD_GROUP_MSG, 0, "ADD_GROUP", "\"groupid\":%d", gid));
}

/* "state" of the friend with this id in a LOGIN_MSG_ACK; fails if absent. */
static const char *friend_state(struct json_object *ack, int32_t id)
{
    static char state[16];
    size_t n = h_arr_len_opt(ack, "friends");
    for (size_t i = 0; i < n; i++) {
        struct json_object *f = h_parse_item(h_arr(ack, "friends"), i, "friends");
        if (h_int(f, "id") == id) {
            snprintf(state, sizeof(state), "%s", h_str(f, "state"));
            json_object_put(f);
            return state;
        }
        json_object_put(f);
    }
    H_FAIL("friend %d is not in the LOGIN_MSG_ACK: %s", id, h_json(ack));
    return NULL;
}

/* "state" of member uid of group gid in a LOGIN_MSG_ACK; fails if absent. */
static const char *member_state(struct json_object *ack, int32_t gid, int32_t uid)
{
    static char state[16];
    size_t n = h_arr_len_opt(ack, "groups");
    for (size_t i = 0; i < n; i++) {
        struct json_object *g = h_parse_item(h_arr(ack, "groups"), i, "groups");
        if (h_int(g, "groupid") != gid) {
            json_object_put(g);
            continue;
        }
        struct json_object *users = h_arr(g, "users");
        for (size_t k = 0; k < json_object_array_length(users); k++) {
            struct json_object *u = h_parse_item(users, k, "group users");
            if (h_int(u, "userid") == uid) {
                snprintf(state, sizeof(state), "%s", h_str(u, "state"));
                json_object_put(u);
                json_object_put(g);
                return state;
            }
            json_object_put(u);
        }
        json_object_put(g);
    }
    H_FAIL("member %d of group %d is not in the LOGIN_MSG_ACK: %s", uid, gid, h_json(ack));
    return NULL;
}

/*
 * "state" of id in the list reply (31 to FRIEND_LIST 30, or 41 to
 * GROUP_MEMBERS 40 with body) that c gets now: key is its array.
 */
static const char *list_state(struct qclient *c, int req, int reply, const char *body,
                              const char *key, int32_t id)
{
    static char state[16];
    int64_t seq = h_next_seq();
    h_send(c, "{\"msgid\":%d,%s%s\"seq\":%lld}", req, body, *body ? "," : "", (long long)seq);
    struct json_object *o = h_expect_skip(c, reply, "list reply");
    H_CHECK(h_int(o, "errno") == 0 && h_int(o, "seq") == seq, "list reply %d: %s", reply,
            h_json(o));
    struct json_object *a = h_arr(o, key);
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        struct json_object *it = json_object_array_get_idx(a, i);
        if (h_int(it, "id") == id) {
            snprintf(state, sizeof(state), "%s", h_str(it, "state"));
            json_object_put(o);
            return state;
        }
    }
    H_FAIL("%d is not in %s of %s", id, key, h_json(o));
    return NULL;
}

static const char *friend_list_state(struct qclient *c, int32_t id)
{
    return list_state(c, QC_FRIEND_LIST_MSG, QC_FRIEND_LIST_MSG_ACK, "", "friends", id);
}

static const char *members_state(struct qclient *c, int32_t gid, int32_t id)
{
    char body[64];
    snprintf(body, sizeof body, "\"groupid\":%d", gid);
    return list_state(c, QC_GROUP_MEMBERS_MSG, QC_GROUP_MEMBERS_MSG_ACK, body, "users", id);
}

/* ---- chat across nodes ---------------------------------------------------- */

static void test_chat_between_nodes_directly(void **state)
{
    struct h_user a, b;
    char text[64];
    new_user(&a, "da");
    new_user(&b, "db");
    struct qclient *ca = login_on(NODE_A, &a, false, NULL);
    struct qclient *cb = login_on(NODE_B, &b, false, NULL);

    int64_t mid = chat(ca, b.id, "hello from node 1", "A->B");
    expect_chat(cb, &a, &b, "hello from node 1", mid, "B receives from node 1");
    mid = chat(cb, a.id, "hello from node 2", "B->A");
    expect_chat(ca, &b, &a, "hello from node 2", mid, "A receives from node 2");

    /* Several in a row, both ways: each arrives once, in order. */
    int64_t mids[ORDERED_MSGS];
    for (int i = 0; i < ORDERED_MSGS; i++) {
        snprintf(text, sizeof(text), "ordered %d", i);
        mids[i] = chat(i % 2 ? cb : ca, i % 2 ? a.id : b.id, text, "ordered");
    }
    for (int i = 0; i < ORDERED_MSGS; i++) {
        snprintf(text, sizeof(text), "ordered %d", i);
        if (i % 2)
            expect_chat(ca, &b, &a, text, mids[i], "ordered B->A");
        else
            expect_chat(cb, &a, &b, text, mids[i], "ordered A->B");
    }
    h_expect_quiet(ca, "A after the exchange");
    h_expect_quiet(cb, "B after the exchange");
}

static void test_chat_through_nginx(void **state)
{
    struct h_user a, b;
    new_user_at(cl.nginx_port, &a, "na");
    new_user_at(cl.nginx_port, &b, "nb");

    struct qclient *ca = h_login_to(cl.nginx_port, &a, false, NULL);
    int64_t deadline = h_now_ms() + SUB_WAIT_MS;
    int na;
    while ((na = cl_node_of(a.id)) < 0 && h_now_ms() < deadline)
        h_sleep_ms(10);
    H_CHECK(na >= 0, "user %d logged in through nginx is listed by no node", a.id);

    /* Round robin: the next connection goes to the other node; retry if not. */
    struct qclient *cb = NULL;
    int nb = -1;
    for (int t = 0; t < NGINX_TRIES && nb != 1 - na; t++) {
        if (cb != NULL)
            close_and_wait_gone(cb, &b);
        cb = h_login_to(cl.nginx_port, &b, false, NULL);
        deadline = h_now_ms() + SUB_WAIT_MS;
        while ((nb = cl_node_of(b.id)) < 0 && h_now_ms() < deadline)
            h_sleep_ms(10);
    }
    H_CHECK(nb == 1 - na, "nginx put user %d on node index %d in %d tries (user %d is on %d)", b.id,
            nb, NGINX_TRIES, a.id, na);
    print_message("through nginx: user %d on node %d, user %d on node %d\n", a.id, na + 1, b.id,
                  nb + 1);
    wait_subscribed(&a, 1);
    wait_subscribed(&b, 1);

    int64_t mid = chat(ca, b.id, "via nginx, a to b", "nginx A->B");
    expect_chat(cb, &a, &b, "via nginx, a to b", mid, "nginx: b receives");
    mid = chat(cb, a.id, "via nginx, b to a", "nginx B->A");
    expect_chat(ca, &b, &a, "via nginx, b to a", mid, "nginx: a receives");

    /* A third user directly on a's node talks to b behind nginx. */
    struct h_user d;
    new_user(&d, "nd");
    struct qclient *cd = login_on(na, &d, false, NULL);
    mid = chat(cd, b.id, "direct to nginx user", "direct D->B");
    expect_chat(cb, &d, &b, "direct to nginx user", mid, "nginx user receives from direct");
    h_expect_quiet(ca, "a");
    h_expect_quiet(cb, "b");
    h_expect_quiet(cd, "d");
}

/* Where a chat that did not arrive live went: log in again and look in offlinemsg. */
static const char *whereabouts(const struct h_user *u, int64_t mid)
{
    struct json_object *ack = NULL;
    struct qclient *c = h_login_to(port_of(NODE_A), u, false, &ack);
    const char *where = "lost (not in offlinemsg at the next login either)";
    size_t n = h_arr_len_opt(ack, "offlinemsg");
    for (size_t i = 0; i < n; i++) {
        struct json_object *m = h_parse_item(h_arr(ack, "offlinemsg"), i, "offlinemsg");
        if (h_has(m, "mid") && h_int(m, "mid") == mid)
            where = "stored offline although the recipient was online (found in offlinemsg at "
                    "the next login)";
        json_object_put(m);
    }
    json_object_put(ack);
    h_close(c);
    return where;
}

/*
 * A chat sent once the recipient's LOGIN_MSG_ACK has arrived from the other
 * node is delivered live, even when that node's relay is slow to subscribe
 * the user's channel (here: SIGSTOPped while the login is answered).
 */
static void test_chat_right_after_login_is_live(void **state)
{
    struct h_user a, b;
    new_user(&a, "la");
    new_user(&b, "lb");
    struct qclient *ca = login_on(NODE_A, &a, false, NULL);

    /* The quick path, a few times. */
    for (int i = 0; i < LIVE_LOGINS; i++) {
        struct qclient *cb = h_login_to(port_of(NODE_B), &b, false, NULL);
        int64_t mid = chat(ca, b.id, "right after login", "chat right after login");
        struct json_object *m = qclient_recv(cb, H_REPLY_MS);
        if (m == NULL) {
            h_close(cb);
            wait_subscribed(&b, 0);
            H_FAIL("login %d: a chat (mid %lld) sent from node 1 after user %d's LOGIN_MSG_ACK "
                   "on node 2 did not arrive within %d ms: %s",
                   i, (long long)mid, b.id, H_REPLY_MS, whereabouts(&b, mid));
        }
        H_CHECK(h_int(m, "msgid") == QC_ONE_CHAT_MSG && h_int(m, "mid") == mid,
                "login %d: want the chat mid %lld, got %s", i, (long long)mid, h_json(m));
        json_object_put(m);
        close_and_wait_gone(cb, &b);
    }

    /* A slow relay on node B: the login is answered while it cannot run. */
    pid_t relay = cl_node_relay_pid(NODE_B);
    H_CHECK(relay > 0, "node 2 has no process titled \"qchatd: relay\"");
    struct qclient *cb = h_connect_to(port_of(NODE_B));
    int64_t seq = h_next_seq();
    H_CHECK(kill(relay, SIGSTOP) == 0, "SIGSTOP relay %d: %s", (int)relay, strerror(errno));
    h_send(cb, "{\"msgid\":1,\"id\":%d,\"password\":%s,\"presence\":false,\"seq\":%lld}", b.id,
           h_q(b.password), (long long)seq);
    struct json_object *ack = qclient_recv(cb, RELAY_STALL_MS);
    bool answered_during_stall = ack != NULL;
    print_message("login on node 2 with its relay stopped: %s\n",
                  answered_during_stall ? "answered at once" : "answered once the relay ran again");
    if (!answered_during_stall) {
        kill(relay, SIGCONT);
        ack = h_next(cb, "LOGIN_MSG_ACK once the relay runs again");
    }
    H_CHECK(h_int(ack, "msgid") == QC_LOGIN_MSG_ACK && h_int(ack, "errno") == 0,
            "LOGIN on node 2: want msgid 2 errno 0, got %s", h_json(ack));
    json_object_put(ack);
    /* Sent after the ACK; if the ACK came during the stall, the relay is still stopped. */
    int64_t mid = chat(ca, b.id, "after a login answered by a node with a slow relay",
                       "chat after the login ACK");
    kill(relay, SIGCONT);
    struct json_object *m = qclient_recv(cb, H_REPLY_MS);
    if (m == NULL) {
        h_close(cb);
        wait_subscribed(&b, 0);
        H_FAIL("user %d's LOGIN_MSG_ACK on node 2 came %s its relay had subscribed the "
               "channel; a chat (mid %lld) sent from node 1 after that ACK did not arrive "
               "within %d ms: %s",
               b.id, answered_during_stall ? "before" : "after", (long long)mid, H_REPLY_MS,
               whereabouts(&b, mid));
    }
    H_CHECK(h_int(m, "msgid") == QC_ONE_CHAT_MSG && h_int(m, "mid") == mid,
            "want the chat mid %lld, got %s", (long long)mid, h_json(m));
    json_object_put(m);
    h_expect_quiet(cb, "b");
    h_expect_quiet(ca, "a");
}

/* ---- groups ----------------------------------------------------------------- */

static void test_group_chat_members_on_both_nodes(void **state)
{
    struct h_user a1, a2, b1, b2, off;
    new_user(&a1, "ga1");
    new_user(&a2, "ga2");
    new_user(&b1, "gb1");
    new_user(&b2, "gb2");
    new_user(&off, "goff");

    struct qclient *ca1 = login_on(NODE_A, &a1, false, NULL);
    int32_t gid = create_group(ca1, "cg");
    /* off and b2 join, then leave (b2 comes back with a LOGIN_MSG_ACK to inspect). */
    struct qclient *c = login_on(NODE_B, &off, false, NULL);
    join_group(c, gid);
    close_and_wait_gone(c, &off);
    c = login_on(NODE_B, &b2, false, NULL);
    join_group(c, gid);
    close_and_wait_gone(c, &b2);
    struct qclient *ca2 = login_on(NODE_A, &a2, false, NULL);
    join_group(ca2, gid);
    struct qclient *cb1 = login_on(NODE_B, &b1, false, NULL);
    join_group(cb1, gid);

    struct json_object *ack = NULL;
    struct qclient *cb2 = login_on(NODE_B, &b2, false, &ack);
    H_CHECK(strcmp(member_state(ack, gid, a1.id), QC_STATE_ONLINE) == 0 &&
                strcmp(member_state(ack, gid, a2.id), QC_STATE_ONLINE) == 0,
            "members on the other node must be \"online\" in groups[].users: %s", h_json(ack));
    H_CHECK(strcmp(member_state(ack, gid, b1.id), QC_STATE_ONLINE) == 0,
            "member on the same node must be \"online\": %s", h_json(ack));
    H_CHECK(strcmp(member_state(ack, gid, off.id), QC_STATE_OFFLINE) == 0,
            "the member logged in nowhere must be \"offline\": %s", h_json(ack));
    json_object_put(ack);
    /* GROUP_MEMBERS resolves presence across the cluster as the login reply does. */
    H_CHECK(strcmp(members_state(cb2, gid, a1.id), QC_STATE_ONLINE) == 0,
            "GROUP_MEMBERS on node 2: member a1 on node 1 must be \"online\"");
    H_CHECK(strcmp(members_state(cb2, gid, b1.id), QC_STATE_ONLINE) == 0,
            "GROUP_MEMBERS on node 2: member b1 on node 2 must be \"online\"");
    H_CHECK(strcmp(members_state(cb2, gid, off.id), QC_STATE_OFFLINE) == 0,
            "GROUP_MEMBERS: the member logged in nowhere must be \"offline\"");

    /* From node A: a2 (same node), b1 and b2 (other node) get it once, a1 nothing. */
    int64_t mid1 = group_chat(ca1, gid, "group hello from node 1", "GROUP_CHAT from A");
    struct qclient *recv1[] = { ca2, cb1, cb2 };
    for (size_t i = 0; i < 3; i++) {
        struct json_object *m = h_expect(recv1[i], QC_GROUP_CHAT_MSG, "member receives");
        check_group_msg(m, &a1, gid, "group hello from node 1", mid1, "member receives");
        h_check_time_fields(m);
        json_object_put(m);
    }
    /* From node B: a1, a2 (other node), b2 (same node). */
    int64_t mid2 = group_chat(cb1, gid, "group hello from node 2", "GROUP_CHAT from B");
    struct qclient *recv2[] = { ca1, ca2, cb2 };
    for (size_t i = 0; i < 3; i++) {
        struct json_object *m = h_expect(recv2[i], QC_GROUP_CHAT_MSG, "member receives");
        check_group_msg(m, &b1, gid, "group hello from node 2", mid2, "member receives");
        json_object_put(m);
    }
    /* Exactly once each, nothing to the senders. */
    struct qclient *all[] = { ca1, ca2, cb1, cb2 };
    for (size_t i = 0; i < 4; i++)
        h_expect_quiet(all[i], "group member after two group chats (each exactly once)");

    /* The offline member gets both at login, in order, on either node. */
    ack = NULL;
    c = login_on(NODE_A, &off, false, &ack);
    H_CHECK(h_arr_len_opt(ack, "offlinemsg") == 2,
            "offline member: want 2 offline group "
            "messages, got %s",
            h_json(ack));
    struct json_object *m = h_parse_item(h_arr(ack, "offlinemsg"), 0, "offlinemsg");
    check_group_msg(m, &a1, gid, "group hello from node 1", mid1, "offline group message 1");
    json_object_put(m);
    m = h_parse_item(h_arr(ack, "offlinemsg"), 1, "offlinemsg");
    check_group_msg(m, &b1, gid, "group hello from node 2", mid2, "offline group message 2");
    json_object_put(m);
    json_object_put(ack);
    h_expect_quiet(c, "offline member after login");
}

/* GROUP_EVENT_MSG 47 crosses nodes through the relay: joined, role, kicked. */
static void test_group_events_across_nodes(void **state)
{
    struct h_user a, b;
    new_user(&a, "gea");
    new_user(&b, "geb");
    struct qclient *ca = login_on(NODE_A, &a, true, NULL);
    struct qclient *cb = login_on(NODE_B, &b, true, NULL);
    int32_t gid = create_group(ca, "ge");
    join_group(cb, gid);
    struct json_object *e = h_expect(ca, QC_GROUP_EVENT_MSG, "joined, from the other node");
    H_CHECK(h_int(e, "groupid") == gid && strcmp(h_str(e, "event"), "joined") == 0 &&
                h_int(e, "userid") == b.id && h_int(e, "by") == b.id,
            "joined event across nodes: %s", h_json(e));
    json_object_put(e);
    json_object_put(h_request(ca, QC_GROUP_ROLE_MSG, 0, "ROLE",
                              "\"groupid\":%d,\"userid\":%d,\"role\":\"admin\"", gid, b.id));
    e = h_expect(cb, QC_GROUP_EVENT_MSG, "role, from the other node");
    H_CHECK(strcmp(h_str(e, "event"), "role") == 0 && h_int(e, "userid") == b.id &&
                h_int(e, "by") == a.id && strcmp(h_str(e, "role"), "admin") == 0,
            "role event across nodes: %s", h_json(e));
    json_object_put(e);
    json_object_put(
        h_request(ca, QC_GROUP_KICK_MSG, 0, "KICK", "\"groupid\":%d,\"userid\":%d", gid, b.id));
    e = h_expect(cb, QC_GROUP_EVENT_MSG, "kicked, from the other node");
    H_CHECK(strcmp(h_str(e, "event"), "kicked") == 0 && h_int(e, "userid") == b.id &&
                h_int(e, "by") == a.id,
            "kicked event across nodes: %s", h_json(e));
    json_object_put(e);
    json_object_put(h_request(cb, QC_GROUP_CHAT_MSG, QC_ENOTMEMBER, "post after the kick",
                              "\"groupid\":%d,\"msg\":\"x\"", gid));
    h_expect_quiet(ca, "nothing more for the creator");
}

/*
 * A block on one node reaches the blocked user's session on the other (an
 * internal notice through the relay): its chats get error 22 within
 * BLOCK_NOTICE_MS, and so does a session it opens later (loaded at login).
 */
static void test_block_across_nodes(void **state)
{
    struct h_user a, b;
    new_user(&a, "bla");
    new_user(&b, "blb");
    struct qclient *ca = login_on(NODE_A, &a, false, NULL);
    struct qclient *cb = login_on(NODE_B, &b, false, NULL);
    json_object_put(h_request(ca, QC_BLOCK_MSG, 0, "BLOCK", "\"userid\":%d", b.id));
    int64_t t0 = h_now_ms();
    int err = 0;
    while (err != QC_EBLOCKED && h_now_ms() - t0 < BLOCK_NOTICE_MS) {
        struct json_object *ack = NULL;
        err = qclient_chat(cb, a.id, "knock", h_next_seq(), &ack, H_REPLY_MS);
        json_object_put(ack);
        if (err != QC_EBLOCKED)
            h_sleep_ms(BLOCK_POLL_MS);
    }
    print_message("cluster: block seen on the other node after %lld ms\n",
                  (long long)(h_now_ms() - t0));
    H_CHECK(err == QC_EBLOCKED, "chat of a user blocked on the other node: errno %d", err);
    /* (a may have got the knocks sent before the notice arrived: the ACK is found past them.) */
    struct json_object *ack = NULL;
    err = qclient_chat(ca, b.id, "x", h_next_seq(), &ack, H_REPLY_MS);
    json_object_put(ack);
    H_CHECK(err == QC_EBLOCKED, "the blocker's chat: errno %d", err);
    /* A new session of b loads the block from the store; a list request orders after it. */
    close_and_wait_gone(cb, &b);
    cb = login_on(NODE_A, &b, false, NULL);
    h_send(cb, "{\"msgid\":30,\"seq\":1}");
    json_object_put(h_expect(cb, QC_FRIEND_LIST_MSG_ACK, "FRIEND_LIST"));
    json_object_put(h_request(cb, QC_ONE_CHAT_MSG, QC_EBLOCKED, "chat from a new session",
                              "\"toid\":%d,\"msg\":\"x\"", a.id));
}

/* ---- presence -------------------------------------------------------------- */

static void test_presence_across_nodes(void **state)
{
    struct h_user a, b, s;
    new_user(&a, "pa");
    new_user(&b, "pb");
    new_user(&s, "ps");
    struct json_object *ack = NULL;

    struct qclient *ca = login_on(NODE_A, &a, true, NULL);
    add_friend(ca, &b);
    add_friend(ca, &s);

    /* s logs in on node B like the seed's client (no presence): a is told, s never is. */
    struct qclient *cs = login_on(NODE_B, &s, false, &ack);
    H_CHECK(strcmp(friend_state(ack, a.id), QC_STATE_ONLINE) == 0,
            "s on node 2: friend a on node 1 must be \"online\": %s", h_json(ack));
    json_object_put(ack);
    expect_presence(ca, &s, QC_STATE_ONLINE, "a: s logged in on node 2");

    /* b logs in on node B with presence. */
    struct qclient *cb = login_on(NODE_B, &b, true, &ack);
    H_CHECK(strcmp(friend_state(ack, a.id), QC_STATE_ONLINE) == 0,
            "b on node 2: friend a on node 1 must be \"online\": %s", h_json(ack));
    json_object_put(ack);
    H_CHECK(strcmp(friend_list_state(cb, a.id), QC_STATE_ONLINE) == 0,
            "b on node 2: FRIEND_LIST: friend a on node 1 must be \"online\"");
    expect_presence(ca, &b, QC_STATE_ONLINE, "a: b logged in on node 2");

    /* LOGINOUT, then a new login on the same connection, then a disconnect. */
    json_object_put(h_request(cb, QC_LOGINOUT_MSG, 0, "LOGINOUT", "%s", ""));
    expect_presence(ca, &b, QC_STATE_OFFLINE, "a: b logged out on node 2");
    int rc = qclient_login(cb, b.id, b.password, true, &ack, H_REPLY_MS);
    H_CHECK(rc == 0, "b logs in again on the same connection: rc %d %s", rc, h_json(ack));
    json_object_put(ack);
    expect_presence(ca, &b, QC_STATE_ONLINE, "a: b logged in again on node 2");
    close_and_wait_gone(cb, &b);
    expect_presence(ca, &b, QC_STATE_OFFLINE, "a: b disconnected on node 2");

    /* a goes away; b comes back and sees a offline, then a online. */
    close_and_wait_gone(ca, &a);
    cb = login_on(NODE_B, &b, true, &ack);
    H_CHECK(strcmp(friend_state(ack, a.id), QC_STATE_OFFLINE) == 0,
            "b: friend a logged in nowhere must be \"offline\": %s", h_json(ack));
    json_object_put(ack);
    H_CHECK(strcmp(friend_list_state(cb, a.id), QC_STATE_OFFLINE) == 0,
            "b: FRIEND_LIST: friend a logged in nowhere must be \"offline\"");
    ca = login_on(NODE_A, &a, true, &ack);
    H_CHECK(strcmp(friend_state(ack, b.id), QC_STATE_ONLINE) == 0 &&
                strcmp(friend_state(ack, s.id), QC_STATE_ONLINE) == 0,
            "a on node 1: friends b and s on node 2 must be \"online\": %s", h_json(ack));
    json_object_put(ack);
    expect_presence(cb, &a, QC_STATE_ONLINE, "b: a logged in on node 1");

    h_expect_quiet(ca, "a");
    h_expect_quiet(cb, "b");
    h_expect_quiet(cs, "s logged in without presence: no presence notice, ever");
}

/* Restart both nodes with one more option (NULL: back to the defaults). */
static void restart_nodes_with(const char *opt)
{
    cl_node_opts[0] = opt; /* NULL ends the list */
    cl_node_opts[1] = NULL;
    for (int i = 0; i < CL_NODES; i++) {
        cl_node_stop(i);
        H_CHECK(cl_node_start(i) == 0, "node %d did not start again with %s", i + 1,
                opt ? opt : "the defaults");
    }
}

/*
 * c sent a request with seq: its ACK (errno 0) and the presence notice of
 * who (online) both come, in either order, and nothing else.
 */
static void expect_ack_and_presence(struct qclient *c, int64_t seq, const struct h_user *who,
                                    const char *what)
{
    bool acked = false, told = false;
    while (!acked || !told) {
        struct json_object *o = h_next(c, what);
        if (h_int(o, "msgid") == QC_ACK_MSG) {
            H_CHECK(!acked && h_int(o, "seq") == seq && h_int(o, "errno") == 0,
                    "%s: want one ACK of seq %lld with errno 0, got %s", what, (long long)seq,
                    h_json(o));
            acked = true;
        } else {
            H_CHECK(!told && h_int(o, "msgid") == QC_PRESENCE_MSG && h_int(o, "id") == who->id &&
                        strcmp(h_str(o, "state"), QC_STATE_ONLINE) == 0,
                    "%s: want one presence {id %d, state online}, got %s", what, who->id,
                    h_json(o));
            told = true;
        }
        json_object_put(o);
    }
}

/*
 * With friend_consent = yes, a request accepted on the other node: the
 * requester hears the accepter is online, and the accepter hears the
 * requester is (a user online on another node, known through the relay).
 */
static void test_friend_request_accepted_across_nodes(void **state)
{
    restart_nodes_with("social.friend_consent=yes");
    struct h_user a, b;
    new_user(&a, "fra");
    new_user(&b, "frb");
    struct qclient *ca = login_on(NODE_A, &a, true, NULL);
    struct qclient *cb = login_on(NODE_B, &b, true, NULL);

    json_object_put(
        h_request(ca, QC_ADD_FRIEND_MSG, 0, "ADD_FRIEND asks", "\"friendid\":%d", b.id));
    struct json_object *p = h_expect(cb, QC_FRIEND_REQUEST_MSG, "request from the other node");
    H_CHECK(h_int(p, "id") == a.id && strcmp(h_str(p, "name"), a.name) == 0,
            "push 35 names the requester: %s", h_json(p));
    json_object_put(p);
    h_expect_quiet(ca, "a: no presence before the request is accepted");

    int64_t seq = h_next_seq();
    h_send(cb, "{\"msgid\":%d,\"friendid\":%d,\"seq\":%lld}", QC_ADD_FRIEND_MSG, a.id,
           (long long)seq);
    expect_ack_and_presence(cb, seq, &a, "b accepts: a on node 1 is online");
    expect_presence(ca, &b, QC_STATE_ONLINE, "a: b on node 2 accepted");
    H_CHECK(strcmp(friend_list_state(cb, a.id), QC_STATE_ONLINE) == 0,
            "b: FRIEND_LIST: the new friend a on node 1 must be \"online\"");
    h_expect_quiet(ca, "a");
    h_expect_quiet(cb, "b");
    h_close(ca);
    h_close(cb);
    restart_nodes_with(NULL);
}

/* ---- takeover ------------------------------------------------------------- */

static void expect_kicked(struct qclient *c, const char *what)
{
    struct json_object *k = h_expect(c, QC_KICK_MSG, what);
    H_CHECK(h_has(k, "reason"), "%s: KICK without a reason: %s", what, h_json(k));
    json_object_put(k);
    h_expect_eof(c, what);
}

static void test_takeover_across_nodes(void **state)
{
    struct h_user a, b, d;
    new_user(&a, "ta");
    new_user(&b, "tb");
    new_user(&d, "td");
    struct qclient *cb = login_on(NODE_B, &b, false, NULL);
    struct qclient *cd = login_on(NODE_A, &d, false, NULL);

    struct qclient *c1 = login_on(NODE_A, &a, false, NULL);
    struct qclient *c2 = h_login_to(port_of(NODE_B), &a, false, NULL);
    expect_kicked(c1, "session on node 1 after a login on node 2");
    H_CHECK(cl_wait_node_of(a.id, NODE_B, SUB_WAIT_MS),
            "after the takeover user %d must be "
            "listed on node 2 only (found on index %d)",
            a.id, cl_node_of(a.id));
    wait_subscribed(&a, 1);
    /* The login generation key does not outlive the account's logins forever. */
    long ttl = cl_gen_ttl(a.id);
    H_CHECK(ttl > 0 && ttl <= 86400, "qchat:gen:%d: want a TTL of at most a day, got %ld", a.id,
            ttl);

    int64_t mid = chat(cd, a.id, "from node 1 after takeover", "D(A)->a(B)");
    expect_chat(c2, &d, &a, "from node 1 after takeover", mid, "new session on node 2");
    mid = chat(cb, a.id, "from node 2 after takeover", "b(B)->a(B)");
    expect_chat(c2, &b, &a, "from node 2 after takeover", mid, "new session on node 2");

    /* And back to node A. */
    struct qclient *c3 = h_login_to(port_of(NODE_A), &a, false, NULL);
    expect_kicked(c2, "session on node 2 after a login on node 1");
    H_CHECK(cl_wait_node_of(a.id, NODE_A, SUB_WAIT_MS),
            "after the second takeover user %d "
            "must be listed on node 1 only (found on index %d)",
            a.id, cl_node_of(a.id));
    wait_subscribed(&a, 1);
    mid = chat(cb, a.id, "from node 2 after takeover back", "b(B)->a(A)");
    expect_chat(c3, &b, &a, "from node 2 after takeover back", mid, "newest session on node 1");
    mid = chat(c3, b.id, "reply from the newest session", "a(A)->b(B)");
    expect_chat(cb, &a, &b, "reply from the newest session", mid, "b gets the reply");
    h_expect_quiet(c3, "a");
    h_expect_quiet(cb, "b");
    h_expect_quiet(cd, "d");
}

/* ---- offline ------------------------------------------------------------------ */

/*
 * Two logins of one account on the two nodes at the same moment: exactly
 * one session survives (the other gets KICK and EOF), every try.
 */
struct race_side {
    struct qclient *c;
    int node;
    bool acked, kicked, eof;
};

/* Take what arrived on one side within wait_ms: the login's ACK, a KICK, the EOF. */
static void race_read(struct race_side *s, int wait_ms, int try)
{
    if (s->eof)
        return;
    struct json_object *o = qclient_recv(s->c, wait_ms);
    if (o == NULL) {
        s->eof = qclient_eof(s->c);
        return;
    }
    int64_t msgid = h_int(o, "msgid");
    if (msgid == QC_LOGIN_MSG_ACK) {
        H_CHECK(h_int(o, "errno") == 0, "try %d: login on node %d: want errno 0, got %s", try,
                s->node + 1, h_json(o));
        s->acked = true;
    } else if (msgid == QC_KICK_MSG) {
        s->kicked = true;
    } else {
        H_FAIL("try %d: login on node %d: want LOGIN_MSG_ACK or KICK, got %s", try, s->node + 1,
               h_json(o));
    }
    json_object_put(o);
}

static bool race_settled(const struct race_side *s)
{
    return (s[0].eof && s[1].acked) || (s[1].eof && s[0].acked) || (s[0].eof && s[1].eof);
}

static int nodes_listing(int32_t uid)
{
    int n = 0;
    for (int i = 0; i < CL_NODES; i++)
        n += cl_worker_of(i, uid) >= 0;
    return n;
}

static bool wait_listed_on(int32_t uid, int node, int timeout_ms)
{
    int64_t deadline = h_now_ms() + timeout_ms;
    while (!(nodes_listing(uid) == (node >= 0) && (node < 0 || cl_worker_of(node, uid) >= 0))) {
        if (h_now_ms() >= deadline)
            return false;
        h_sleep_ms(RACE_POLL_MS);
    }
    return true;
}

/* One try: both logins sent back to back; returns the surviving node. */
static int takeover_race_once(const struct h_user *a, int try)
{
    struct race_side s[2] = { { .c = h_connect_to(port_of(NODE_A)), .node = NODE_A },
                              { .c = h_connect_to(port_of(NODE_B)), .node = NODE_B } };
    for (int i = 0; i < 2; i++)
        h_send(s[i].c, "{\"msgid\":1,\"id\":%d,\"password\":%s}", a->id, h_q(a->password));
    int64_t deadline = h_now_ms() + RACE_SETTLE_MS;
    while (!race_settled(s) && h_now_ms() < deadline)
        for (int i = 0; i < 2; i++)
            race_read(&s[i], RACE_READ_MS, try);
    H_CHECK(!(s[0].eof && s[1].eof), "try %d: both simultaneous logins were kicked", try);
    H_CHECK(s[0].eof || s[1].eof,
            "try %d: two simultaneous logins on node 1 and node 2 both stayed logged in "
            "for %d ms (acked: %d, %d)",
            try, RACE_SETTLE_MS, s[0].acked, s[1].acked);
    struct race_side *loser = s[0].eof ? &s[0] : &s[1], *winner = s[0].eof ? &s[1] : &s[0];
    H_CHECK(loser->kicked, "try %d: the session on node %d closed without a KICK", try,
            loser->node + 1);
    /* The survivor stays: no late kick, answers a heartbeat, and is the one listed. */
    race_read(winner, RACE_QUIET_MS, try);
    H_CHECK(!winner->eof && !winner->kicked,
            "try %d: the surviving session on node %d was kicked too", try, winner->node + 1);
    h_expect_quiet(winner->c, "the surviving session");
    H_CHECK(wait_listed_on(a->id, winner->node, SUB_WAIT_MS),
            "try %d: user %d must be listed on node %d only (listed on %d node(s))", try, a->id,
            winner->node + 1, nodes_listing(a->id));
    h_close(loser->c);
    h_close(winner->c);
    H_CHECK(wait_listed_on(a->id, -1, SUB_WAIT_MS), "try %d: user %d still listed after closing",
            try, a->id);
    wait_subscribed(a, 0);
    return winner->node;
}

static void test_simultaneous_logins_on_two_nodes_leave_one(void **state)
{
    struct h_user a;
    new_user(&a, "race");
    int won[CL_NODES] = { 0 };
    for (int try = 1; try <= RACE_TRIES; try++)
        won[takeover_race_once(&a, try)]++;
    fprintf(stderr, "takeover race: %d tries, the survivor was on node 1 %d times, node 2 %d\n",
            RACE_TRIES, won[NODE_A], won[NODE_B]);
}

static void test_offline_messages_stored_by_the_other_node(void **state)
{
    struct h_user a, b;
    char text[64];
    int64_t mids[OFFLINE_MSGS];
    new_user(&a, "oa");
    new_user(&b, "ob");
    struct qclient *ca = login_on(NODE_A, &a, false, NULL);
    for (int i = 0; i < OFFLINE_MSGS; i++) {
        snprintf(text, sizeof(text), "stored by node 1, %d", i);
        mids[i] = chat(ca, b.id, text, "chat to a user logged in nowhere");
    }

    struct json_object *ack = NULL;
    struct qclient *cb = login_on(NODE_B, &b, false, &ack);
    H_CHECK(h_arr_len_opt(ack, "offlinemsg") == OFFLINE_MSGS,
            "b on node 2: want %d offline "
            "messages stored by node 1, got %s",
            OFFLINE_MSGS, h_json(ack));
    for (int i = 0; i < OFFLINE_MSGS; i++) {
        struct json_object *m = h_parse_item(h_arr(ack, "offlinemsg"), (size_t)i, "offlinemsg");
        snprintf(text, sizeof(text), "stored by node 1, %d", i);
        H_CHECK(h_int(m, "msgid") == QC_ONE_CHAT_MSG && h_int(m, "id") == a.id &&
                    h_int(m, "toid") == b.id && strcmp(h_str(m, "msg"), text) == 0 &&
                    h_int(m, "mid") == mids[i],
                "offline message %d (oldest first): want {msgid:5, id:%d, toid:%d, msg:\"%s\", "
                "mid:%lld}, got %s",
                i, a.id, b.id, text, (long long)mids[i], h_json(m));
        json_object_put(m);
    }
    json_object_put(ack);
    close_and_wait_gone(cb, &b);

    /* Delivered means deleted: the next login has only the newer one, on node A. */
    int64_t mid = chat(ca, b.id, "stored while b was away again", "second offline chat");
    cb = login_on(NODE_A, &b, false, &ack);
    H_CHECK(h_arr_len_opt(ack, "offlinemsg") == 1,
            "b's second login: want exactly the 1 new "
            "offline message, got %s",
            h_json(ack));
    struct json_object *m = h_parse_item(h_arr(ack, "offlinemsg"), 0, "offlinemsg");
    H_CHECK(h_int(m, "mid") == mid, "want mid %lld, got %s", (long long)mid, h_json(m));
    json_object_put(m);
    json_object_put(ack);
    h_expect_quiet(cb, "b");
    h_expect_quiet(ca, "a");
}

/* ---- traffic under a fault: Redis restarted, a worker killed ------------- */

/*
 * LOSS_PAIRS users on node A chat with LOSS_PAIRS users on node B, each
 * with LOSS_PIPELINE chats in flight per round, and one of them sends a
 * group chat to a group of all of them per round.  A fault is injected
 * while a round is in flight, repaired after LOSS_OUTAGE_MS, and the
 * traffic goes on until LOSS_AFTER_MS after the cluster is whole again.
 * Then everyone logs in again on the other node: every acknowledged chat
 * must have arrived live or be in offlinemsg, once, to the right user.
 */
enum fault_kind { FAULT_REDIS, FAULT_WORKER };

struct loss_user {
    struct h_user u;
    struct qclient *c;
    int index;
    int partner;     /* index of the user it chats with */
    int burst_first; /* its first chat index in this round, -1: none */
    bool gone;       /* session closed by the fault, not yet back */
};

static struct {
    enum fault_kind kind;
    pid_t victim; /* FAULT_WORKER: the killed worker */
    pid_t killer; /* the process that SIGKILLs it */
    int sent, acked, refused, unanswered;
    int cut;                        /* the sender's session closed before its ACK */
    int relogins;                   /* sessions closed by the fault, logged in again */
    int sent_outage;                /* sent while the fault lasted */
    int in_flight_at_fault;         /* sent, not yet acknowledged, at the fault */
    int32_t to[LOSS_MAX_MSGS];      /* recipient's user index */
    bool ok[LOSS_MAX_MSGS];         /* acknowledged with errno 0 */
    uint16_t live[LOSS_MAX_MSGS];   /* deliveries on a live session */
    uint16_t stored[LOSS_MAX_MSGS]; /* found in offlinemsg at a later login */
    int misrouted;
    int last_refusal;
    bool saw_down; /* the fault was visible (relay state, worker count) */

    int32_t gid;
    int gsent, gacked, grefused;
    int8_t gfrom[GLOSS_MAX]; /* sender's user index */
    bool gok[GLOSS_MAX];
    uint16_t glive[GLOSS_MAX][LOSS_USERS];
    uint16_t gstored[GLOSS_MAX][LOSS_USERS];
} lt;

static struct loss_user lu[LOSS_USERS];

static int node_of_user(int k)
{
    return k < LOSS_PAIRS ? NODE_A : NODE_B;
}

/* Index N of a chat text "TAG N" below limit, -1 if it is not one. */
static int tagged_index(struct json_object *m, const char *tag, int limit)
{
    struct json_object *v;
    if (!json_object_object_get_ex(m, "msg", &v) || !json_object_is_type(v, json_type_string))
        return -1;
    const char *s = json_object_get_string(v);
    if (strncmp(s, tag, strlen(tag)) != 0)
        return -1;
    int i = atoi(s + strlen(tag));
    return i >= 0 && i < limit ? i : -1;
}

/* Count a chat or group chat of the test received by user k, live or offline. */
static void record_received(int k, struct json_object *o, bool offline)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, "msgid", &v))
        return;
    int msgid = json_object_get_int(v), i;
    if (msgid == QC_ONE_CHAT_MSG && (i = tagged_index(o, LOSS_TAG, lt.sent)) >= 0) {
        if (offline)
            lt.stored[i]++;
        else
            lt.live[i]++;
        if (lt.to[i] != k)
            lt.misrouted++;
    } else if (msgid == QC_GROUP_CHAT_MSG && (i = tagged_index(o, GLOSS_TAG, lt.gsent)) >= 0) {
        if (offline)
            lt.gstored[i][k]++;
        else
            lt.glive[i][k]++;
        if (lt.gfrom[i] == k)
            lt.misrouted++; /* the sender is excluded */
    }
}

static void record_push(void *arg, struct json_object *o)
{
    record_received(((struct loss_user *)arg)->index, o, false);
}

/* Record the offline messages of a LOGIN_MSG_ACK for user k. */
static void record_offline(int k, struct json_object *ack)
{
    H_CHECK(!h_has(ack, "offlinedropped"), "offline messages dropped: %s", h_json(ack));
    size_t n = h_arr_len_opt(ack, "offlinemsg");
    for (size_t j = 0; j < n; j++) {
        struct json_object *m = h_parse_item(h_arr(ack, "offlinemsg"), j, "offlinemsg");
        record_received(k, m, true);
        json_object_put(m);
    }
}

/* What a session the fault took had received before it closed, then close it. */
static void drain_and_close(struct loss_user *u)
{
    struct json_object *o;
    while ((o = qclient_recv(u->c, DRAIN_QUIET_MS)) != NULL) {
        record_push(u, o);
        json_object_put(o);
    }
    h_close(u->c);
    u->c = NULL;
}

static void login_loss_user(int k, int node)
{
    struct json_object *ack = NULL;
    if (lu[k].c != NULL)
        drain_and_close(&lu[k]);
    lu[k].c = login_on(node, &lu[k].u, false, &ack);
    record_offline(k, ack);
    json_object_put(ack);
    qclient_set_skip_handler(lu[k].c, record_push, &lu[k]);
    lu[k].gone = false;
}

/*
 * A closed session is a failure, except on node B when a worker of node B
 * was killed: that user is then gone until the repair.  False if gone.
 */
static bool session_open(struct loss_user *u)
{
    if (u->gone)
        return false;
    if (!qclient_eof(u->c))
        return true;
    H_CHECK(lt.kind == FAULT_WORKER && node_of_user(u->index) == NODE_B,
            "user %d's session (node %d) was closed during the fault", u->u.id,
            node_of_user(u->index) + 1);
    u->gone = true;
    return false;
}

/* Read every push already waiting; with quiet_ms, until none came for that long. */
static void drain_all(int quiet_ms)
{
    int64_t last = h_now_ms();
    do {
        bool got = false;
        for (int k = 0; k < LOSS_USERS; k++) {
            struct json_object *o;
            while (session_open(&lu[k]) && (o = qclient_recv(lu[k].c, 0)) != NULL) {
                record_push(&lu[k], o);
                json_object_put(o);
                got = true;
            }
        }
        if (got)
            last = h_now_ms();
        else if (quiet_ms > 0)
            h_sleep_ms(10);
    } while (quiet_ms > 0 && h_now_ms() - last < quiet_ms);
}

/*
 * Each user with a session sends LOSS_PIPELINE chats to its partner without
 * waiting, and one of them a group chat (its index in *g, -1 if none).
 */
static void send_burst(bool outage, int round, int *g)
{
    *g = -1;
    int k = round % LOSS_USERS;
    if (lt.gsent < GLOSS_MAX && session_open(&lu[k])) {
        *g = lt.gsent++;
        lt.gfrom[*g] = (int8_t)k;
        h_send(lu[k].c, "{\"msgid\":9,\"groupid\":%d,\"msg\":\"" GLOSS_TAG "%d\",\"seq\":%lld}",
               lt.gid, *g, GLOSS_SEQ_BASE + *g);
    }
    for (k = 0; k < LOSS_USERS; k++) {
        struct loss_user *from = &lu[k], *to = &lu[from->partner];
        from->burst_first = -1;
        if (!session_open(from))
            continue;
        from->burst_first = lt.sent;
        for (int j = 0; j < LOSS_PIPELINE; j++) {
            int i = lt.sent++;
            lt.to[i] = to->index;
            lt.sent_outage += outage;
            /* A send to a session the fault just closed fails: its ACK never comes. */
            qclient_sendf(from->c,
                          "{\"msgid\":5,\"toid\":%d,\"msg\":\"" LOSS_TAG "%d\","
                          "\"seq\":%lld}",
                          to->u.id, i, LOSS_SEQ_BASE + i);
        }
    }
}

static void count_group_ack(int g, struct json_object *o)
{
    H_CHECK(h_int(o, "req") == QC_GROUP_CHAT_MSG, "group chat ACK: %s", h_json(o));
    if (h_int(o, "errno") == 0) {
        lt.gok[g] = true;
        lt.gacked++;
    } else {
        lt.grefused++;
        lt.last_refusal = (int)h_int(o, "errno");
    }
}

static void count_chat_ack(int i, struct json_object *o)
{
    if (h_int(o, "errno") == 0) {
        lt.ok[i] = true;
        lt.acked++;
    } else {
        lt.refused++;
        lt.last_refusal = (int)h_int(o, "errno");
    }
}

/* The ACKs of user k's chats of this round (and of group chat g, -1: none). */
static void collect_acks(int k, int g)
{
    struct loss_user *u = &lu[k];
    if (u->burst_first < 0)
        return;
    int lo = u->burst_first, got = 0, want = LOSS_PIPELINE + (g >= 0);
    int64_t deadline = h_now_ms() + H_REPLY_MS;
    while (got < want && session_open(u)) {
        int left = (int)(deadline - h_now_ms());
        struct json_object *o = left > 0 ? qclient_recv(u->c, left) : NULL, *v;
        if (o == NULL) {
            if (session_open(u))
                break; /* a timeout */
            continue;
        }
        int64_t seq =
            json_object_object_get_ex(o, "seq", &v) && json_object_is_type(v, json_type_int)
                ? json_object_get_int64(v)
                : -1;
        int i = (int)(seq - LOSS_SEQ_BASE);
        if (h_int(o, "msgid") == QC_ACK_MSG && g >= 0 && seq == GLOSS_SEQ_BASE + g) {
            count_group_ack(g, o);
            got++;
        } else if (h_int(o, "msgid") == QC_ACK_MSG && i >= lo && i < lo + LOSS_PIPELINE) {
            count_chat_ack(i, o);
            got++;
        } else {
            record_push(u, o);
        }
        json_object_put(o);
    }
    if (u->gone)
        lt.cut += want - got;
    else
        lt.unanswered += want - got;
}

static bool both_relays_connected(void)
{
    char s[64];
    bool all = true;
    for (int i = 0; i < CL_NODES; i++)
        if (!cl_relay_state(i, s, sizeof(s)) || strcmp(s, "connected") != 0)
            all = false;
    return all;
}

/*
 * Redis: SIGKILL.  Worker: the node-B worker of lu[LOSS_PAIRS] is stopped
 * (a worker hung, e.g. in a slow query), its users fall silent; a child
 * SIGKILLs it LOSS_OUTAGE_MS later, and the master restarts it.
 */
static void inject_fault(void)
{
    if (lt.kind == FAULT_REDIS) {
        H_CHECK(cl_redis_kill() == 0, "SIGKILL redis-server failed");
        return;
    }
    const struct loss_user *b = &lu[LOSS_PAIRS];
    int w = cl_worker_of(NODE_B, b->u.id);
    H_CHECK(w >= 0, "user %d is not listed on node 2", b->u.id);
    lt.victim = cl_node_worker_pid(NODE_B, w);
    H_CHECK(lt.victim > 0, "node 2 has no worker %d", w);
    for (int k = LOSS_PAIRS; k < LOSS_USERS; k++)
        if (cl_worker_of(NODE_B, lu[k].u.id) == w)
            lu[k].gone = true; /* its session stays open, unanswered */
    H_CHECK(kill(lt.victim, SIGSTOP) == 0, "SIGSTOP node 2's worker %d (pid %d): %s", w,
            (int)lt.victim, strerror(errno));
    /* Requests waiting for it may hold the test up: the kill comes on its own time. */
    lt.killer = fork();
    H_CHECK(lt.killer >= 0, "fork: %s", strerror(errno));
    if (lt.killer == 0) {
        h_sleep_ms(LOSS_OUTAGE_MS);
        kill(lt.victim, SIGKILL);
        _exit(0);
    }
}

static void repair_fault(void)
{
    if (lt.kind == FAULT_REDIS)
        H_CHECK(cl_redis_restart() == 0, "redis-server did not start again on port %d",
                cl.redis_port);
    else
        H_CHECK(waitpid(lt.killer, NULL, 0) == lt.killer, "the process killing worker %d: %s",
                (int)lt.victim, strerror(errno));
}

static bool fault_repaired(void)
{
    if (lt.kind == FAULT_REDIS)
        return both_relays_connected();
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d", (int)lt.victim);
    return access(path, F_OK) != 0 && cl_node_workers(NODE_B) >= CL_WORKERS;
}

/* After the repair: cross-node delivery works again. */
static void check_cross_node_live(struct loss_user *x, struct loss_user *y, const char *what)
{
    int64_t mid = chat(x->c, y->u.id, "after the repair", what);
    struct json_object *m = qclient_recv_msgid(y->c, QC_ONE_CHAT_MSG, H_REPLY_MS);
    H_CHECK(m != NULL,
            "%s: a chat from node %d to node %d after the repair did not arrive "
            "live within %d ms",
            what, node_of_user(x->index) + 1, node_of_user(y->index) + 1, H_REPLY_MS);
    H_CHECK(h_int(m, "mid") == mid, "%s: want mid %lld, got %s", what, (long long)mid, h_json(m));
    json_object_put(m);
}

/* qchatctl (the operator's tool) shows the relay connected. */
static void check_qchatctl_relay(int node)
{
    const char *bdir = getenv("B");
    char cmd[2 * PATH_MAX], line[512];
    snprintf(cmd, sizeof(cmd), "%s/qchatctl -s '%s' status 2>&1",
             bdir != NULL && *bdir ? bdir : "build", cl.node[node].ctl_path);
    FILE *p = popen(cmd, "r");
    H_CHECK(p != NULL, "popen %s: %s", cmd, strerror(errno));
    bool connected = false;
    while (fgets(line, sizeof(line), p) != NULL)
        if (strncmp(line, "relay:", 6) == 0 && strstr(line, "connected") != NULL)
            connected = true;
    int st = pclose(p);
    H_CHECK(st == 0 && connected,
            "%s: want exit 0 and a line \"relay: connected ...\" (exit "
            "status 0x%x)",
            cmd, st);
}

static void setup_loss_users(enum fault_kind kind)
{
    memset(&lt, 0, sizeof(lt));
    lt.kind = kind;
    for (int k = 0; k < LOSS_USERS; k++) {
        struct loss_user *u = &lu[k];
        u->c = NULL;
        u->index = k;
        u->partner = k < LOSS_PAIRS ? k + LOSS_PAIRS : k - LOSS_PAIRS;
        new_user(&u->u, "rl");
        login_loss_user(k, node_of_user(k));
    }
    lt.gid = create_group(lu[0].c, "rg");
    for (int k = 1; k < LOSS_USERS; k++)
        join_group(lu[k].c, lt.gid);
}

/* The traffic, the fault and its repair; fills lt. */
static void run_traffic_under_fault(const char *name)
{
    int64_t t0 = h_now_ms(), fault = 0, repaired = 0, back = 0;
    int rounds = 0;
    for (;;) {
        int64_t now = h_now_ms();
        H_CHECK(now - t0 < LOSS_LIMIT_MS,
                "%s: the phase took over %d ms (fault %lld ms in, "
                "repair %lld, whole again %lld)",
                name, LOSS_LIMIT_MS, (long long)(fault ? fault - t0 : -1),
                (long long)(repaired ? repaired - t0 : -1), (long long)(back ? back - t0 : -1));
        if (fault && !repaired && now - fault >= LOSS_OUTAGE_MS) {
            repair_fault();
            repaired = h_now_ms();
        }
        if (fault && !back) {
            bool whole = fault_repaired();
            lt.saw_down |= !whole;
            if (repaired && whole) {
                back = h_now_ms();
                for (int k = 0; k < LOSS_USERS; k++)
                    if (lu[k].gone) {
                        login_loss_user(k, node_of_user(k));
                        lt.relogins++;
                    }
            }
        }
        if (back && now - back >= LOSS_AFTER_MS)
            break;

        int g, first = lt.sent;
        send_burst(fault && !back, rounds, &g);
        if (!fault && now - t0 >= LOSS_BEFORE_MS) {
            inject_fault(); /* while this round is in flight */
            fault = h_now_ms();
            lt.in_flight_at_fault = lt.sent - first;
        }
        for (int k = 0; k < LOSS_USERS; k++)
            collect_acks(k, g >= 0 && lt.gfrom[g] == k ? g : -1);
        drain_all(0);
        rounds++;
        h_sleep_ms(LOSS_ROUND_GAP_MS);
        H_CHECK(lt.sent + LOSS_USERS * LOSS_PIPELINE < LOSS_MAX_MSGS, "raise LOSS_MAX_MSGS");
    }
    print_message("%s: %d rounds; fault at %lld ms, repaired +%lld ms, whole again +%lld ms "
                  "after the repair\n",
                  name, rounds, (long long)(fault - t0), (long long)(repaired - fault),
                  (long long)(back - repaired));
}

/* Everyone logs in again on the other node; then count and check. */
/*
 * A worker killed right after it wrote a chat to its socket dies before the
 * recipient's delivered cursor moves past it: the chat arrives live and
 * again in the next login's offlinemsg, with the same cseq, which the client
 * drops (the log is at-least-once across a crash; qchat-protocol(7)).  Where
 * a test kills a process, one live copy plus one login copy is counted as
 * such a repeat, not as a duplicate; two live or two stored copies still
 * fail.
 */
static void account_and_check_crash(const char *name, bool crash);

static void account_and_check(const char *name)
{
    account_and_check_crash(name, false);
}

static void account_and_check_crash(const char *name, bool crash)
{
    drain_all(DRAIN_QUIET_MS);
    for (int k = 0; k < LOSS_USERS; k++) {
        close_and_wait_gone(lu[k].c, &lu[k].u);
        lu[k].c = NULL;
    }
    for (int k = 0; k < LOSS_USERS; k++)
        login_loss_user(k, 1 - node_of_user(k));

    int live = 0, stored = 0, lost = 0, dup = 0, repeats = 0, refused_arrived = 0;
    for (int i = 0; i < lt.sent; i++) {
        int got = lt.live[i] + lt.stored[i];
        live += lt.live[i] > 0;
        stored += lt.stored[i] > 0;
        if (!lt.ok[i]) {
            refused_arrived += got > 0;
            continue;
        }
        if (got == 0 && lost++ < 10)
            print_error("%s: lost: chat %d to user %d (acknowledged, neither delivered nor "
                        "stored)\n",
                        name, i, lu[lt.to[i]].u.id);
        if (crash && lt.live[i] == 1 && lt.stored[i] == 1) {
            repeats++;
            continue;
        }
        if (got > 1 && dup++ < 10)
            print_error("%s: duplicate: chat %d to user %d delivered live %u time(s), stored %u "
                        "time(s)\n",
                        name, i, lu[lt.to[i]].u.id, lt.live[i], lt.stored[i]);
    }
    int glost = 0, gdup = 0, gcopies = 0;
    for (int g = 0; g < lt.gsent; g++) {
        for (int k = 0; k < LOSS_USERS && lt.gok[g]; k++) {
            int got = lt.glive[g][k] + lt.gstored[g][k];
            if (k == lt.gfrom[g])
                continue;
            gcopies++;
            if (got == 0 && glost++ < 10)
                print_error("%s: lost: group chat %d from user %d to member %d\n", name, g,
                            lu[lt.gfrom[g]].u.id, lu[k].u.id);
            if (crash && lt.glive[g][k] == 1 && lt.gstored[g][k] == 1) {
                repeats++;
                continue;
            }
            if (got > 1 && gdup++ < 10)
                print_error("%s: duplicate: group chat %d to member %d: live %u, stored %u\n", name,
                            g, lu[k].u.id, lt.glive[g][k], lt.gstored[g][k]);
        }
    }
    print_message("%s: chats sent %d (%d in flight at the fault, %d while it lasted), acked %d, "
                  "refused %d (last errno %d; %d arrived anyway), unanswered %d, cut with the "
                  "sender's session %d; delivered live %d, offline %d, lost %d, duplicates %d; "
                  "group chats sent %d, acked %d, member copies %d, lost %d, duplicates %d; "
                  "misrouted %d; sessions logged in again %d\n",
                  name, lt.sent, lt.in_flight_at_fault, lt.sent_outage, lt.acked, lt.refused,
                  lt.last_refusal, refused_arrived, lt.unanswered, lt.cut, live, stored, lost, dup,
                  lt.gsent, lt.gacked, gcopies, glost, gdup, lt.misrouted, lt.relogins);
    H_CHECK(lt.sent_outage > 0, "%s: no chat was sent while the fault lasted", name);
    H_CHECK(lt.unanswered == 0,
            "%s: %d request(s) on open sessions got no ACK within %d ms: a "
            "worker blocked?",
            name, lt.unanswered, H_REPLY_MS);
    if (repeats > 0)
        print_message("%s: %d chat(s) written live just before the crash came again at login "
                      "(same cseq: the client drops them)\n",
                      name, repeats);
    H_CHECK(lost == 0, "%s: %d acknowledged chat(s) lost", name, lost);
    H_CHECK(glost == 0, "%s: %d member copies of acknowledged group chats lost", name, glost);
    H_CHECK(lt.misrouted == 0, "%s: %d message(s) reached the wrong user", name, lt.misrouted);
    H_CHECK(dup == 0, "%s: %d chat(s) delivered more than once", name, dup);
    H_CHECK(gdup == 0, "%s: %d member copies of group chats delivered more than once", name, gdup);
    for (int k = 0; k < LOSS_USERS; k++)
        h_expect_quiet(lu[k].c, "after the accounting");
}

static void test_redis_restart_loses_nothing(void **state)
{
    setup_loss_users(FAULT_REDIS);
    run_traffic_under_fault("redis restart");
    H_CHECK(lt.saw_down, "{\"cmd\":\"status\"} said \"relay\":{\"state\":\"connected\"} on both "
                         "nodes all through the Redis outage");
    for (int i = 0; i < CL_NODES; i++)
        check_qchatctl_relay(i);

    /* Every session is subscribed again and cross-node chat is live again. */
    for (int k = 0; k < LOSS_USERS; k++)
        H_CHECK(cl_wait_numsub(lu[k].u.id, 1, SUB_WAIT_MS),
                "user %d (node %d) not "
                "re-subscribed after Redis came back: NUMSUB %ld",
                lu[k].u.id, node_of_user(k) + 1, cl_numsub(lu[k].u.id));
    drain_all(DRAIN_QUIET_MS);
    check_cross_node_live(&lu[0], &lu[LOSS_PAIRS], "A->B after the restart");
    check_cross_node_live(&lu[LOSS_PAIRS], &lu[0], "B->A after the restart");
    account_and_check("redis restart");
}

static void test_hung_worker_killed_under_cross_node_traffic_loses_nothing(void **state)
{
    setup_loss_users(FAULT_WORKER);
    run_traffic_under_fault("hung worker killed");
    H_CHECK(lt.relogins > 0, "no session was on node 2's worker %d", (int)lt.victim);
    drain_all(DRAIN_QUIET_MS);
    check_cross_node_live(&lu[0], &lu[LOSS_PAIRS], "A->B after the worker restart");
    check_cross_node_live(&lu[LOSS_PAIRS], &lu[0], "B->A after the worker restart");
    account_and_check_crash("hung worker killed", true);
}

/* ---- a node killed -------------------------------------------------------- */

static void test_node_killed_users_go_offline_then_elsewhere(void **state)
{
    struct h_user a, b, c, f, d;
    new_user(&a, "ka");
    new_user(&b, "kb");
    new_user(&c, "kc");
    new_user(&f, "kf");
    struct qclient *ca = login_on(NODE_A, &a, false, NULL);
    struct qclient *cf = login_on(NODE_A, &f, false, NULL);
    add_friend(cf, &b);
    close_and_wait_gone(cf, &f);
    struct qclient *cb = login_on(NODE_B, &b, false, NULL);
    struct qclient *cc = login_on(NODE_B, &c, false, NULL);

    pid_t children[CL_MAX_CHILDREN];
    int nchildren = cl_node_children(NODE_B, children, CL_MAX_CHILDREN);
    H_CHECK(nchildren >= CL_WORKERS + 1, "node 2 has %d children, want %d workers + the relay",
            nchildren, CL_WORKERS);
    cl_node_kill(NODE_B);
    H_CHECK(cl.node[NODE_B].leftover_children == 0, "%d child(ren) of node 2 survived SIGKILL",
            cl.node[NODE_B].leftover_children);
    struct json_object *o = qclient_recv(cb, H_REPLY_MS);
    H_CHECK(o == NULL && errno != ETIMEDOUT,
            "b's connection to the killed node must be closed, "
            "got %s",
            o != NULL ? h_json(o) : "a timeout");
    h_close(cb);
    h_close(cc);

    /* The dead node's subscriptions are gone with its relay's connection. */
    wait_subscribed(&b, 0);
    wait_subscribed(&c, 0);

    int64_t mid_b = chat(ca, b.id, "to b, whose node died", "A->b(dead node)");
    int64_t mid_c = chat(ca, c.id, "to c, whose node died", "A->c(dead node)");

    /* Presence is not stale: a friend logging in sees b offline. */
    struct json_object *ack = NULL;
    cf = login_on(NODE_A, &f, false, &ack);
    H_CHECK(strcmp(friend_state(ack, b.id), QC_STATE_OFFLINE) == 0,
            "friend b, whose node was killed, must be \"offline\": %s", h_json(ack));
    json_object_put(ack);

    /* b logs in on node A directly and gets the message. */
    cb = login_on(NODE_A, &b, false, &ack);
    H_CHECK(h_arr_len_opt(ack, "offlinemsg") == 1,
            "b on node 1: want the 1 message stored "
            "while its node was dead, got %s",
            h_json(ack));
    struct json_object *m = h_parse_item(h_arr(ack, "offlinemsg"), 0, "offlinemsg");
    H_CHECK(h_int(m, "mid") == mid_b && h_int(m, "id") == a.id, "want mid %lld from %d, got %s",
            (long long)mid_b, a.id, h_json(m));
    json_object_put(m);
    json_object_put(ack);

    /* c comes back through nginx, which must send it to the live node. */
    cc = h_login_to(cl.nginx_port, &c, false, &ack);
    H_CHECK(cl_wait_node_of(c.id, NODE_A, SUB_WAIT_MS),
            "c logged in through nginx with node 2 "
            "dead must be on node 1 (found on index %d)",
            cl_node_of(c.id));
    H_CHECK(h_arr_len_opt(ack, "offlinemsg") == 1,
            "c through nginx: want the 1 message stored "
            "while its node was dead, got %s",
            h_json(ack));
    m = h_parse_item(h_arr(ack, "offlinemsg"), 0, "offlinemsg");
    H_CHECK(h_int(m, "mid") == mid_c, "want mid %lld, got %s", (long long)mid_c, h_json(m));
    json_object_put(m);
    json_object_put(ack);

    /* The node comes back on its port and serves cross-node chat again. */
    H_CHECK(cl_node_start(NODE_B) == 0, "node 2 did not start again on port %d",
            cl.node[NODE_B].port);
    new_user(&d, "kd");
    struct qclient *cd = login_on(NODE_B, &d, false, NULL);
    int64_t mid = chat(ca, d.id, "to the restarted node", "A->restarted B");
    expect_chat(cd, &a, &d, "to the restarted node", mid, "user on the restarted node");
    mid = chat(cd, b.id, "from the restarted node", "restarted B->A");
    expect_chat(cb, &d, &b, "from the restarted node", mid, "b on node 1");
    h_expect_quiet(ca, "a");
    h_expect_quiet(cb, "b");
    h_expect_quiet(cc, "c");
    h_expect_quiet(cd, "d");
    h_expect_quiet(cf, "f");
}

/* ---- the log fills what pub/sub lost (issue 16) -------------------------- */

/*
 * FILL_PAIRS senders on node A chat with seq, one chat per round each, to
 * FILL_PAIRS receivers on node B (one conversation per pair).  Every chat a
 * receiver gets is counted by its cseq: live, or in offlinemsg at a login.
 * The fault comes FILL_BEFORE_MS in; after the repair the traffic goes on
 * for FILL_AFTER_MS (so every conversation has later chats, which reveal a
 * gap), the receivers drain, then all log in again on node A and ask
 * HISTORY after the last cseq up to which they have everything.  Every
 * acknowledged cseq must have arrived exactly once.
 */
enum fill_fault {
    FILL_NODE_KILL,
    FILL_NODE_HANG_KILL,
    FILL_RELAY_KILL,
    FILL_REDIS_RESTART,
    FILL_REDIS_PAUSE,
    FILL_SLOTS_MOVED, /* a Redis Cluster resharded (slots_move_begin/slots_move_end) */
    FILL_MASTER_KILL  /* one master of a Redis Cluster SIGKILLed, restarted */
};

struct fill_pair {
    struct h_user s, r;
    struct qclient *sc, *rc;
    bool gone; /* the receiver's session died with its node */
    int64_t max_cseq;
    bool acked[FILL_MAX_CSEQ + 1];       /* by cseq, from the ACK */
    uint16_t live[FILL_MAX_CSEQ + 1];    /* received as a push */
    uint16_t login[FILL_MAX_CSEQ + 1];   /* in offlinemsg */
    uint16_t history[FILL_MAX_CSEQ + 1]; /* fetched by HISTORY after= (never seen before) */
};

static struct fill_pair fp[FILL_PAIRS];
static struct {
    enum fill_fault kind;
    int sent, acked, refused, unanswered, foreign;
    int sent_during; /* sent between the fault and the repair */
} ft;

/* A chat received by pair k's receiver: counted by cseq. */
static void fill_record(int k, struct json_object *o, bool login)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, "msgid", &v) || json_object_get_int(v) != QC_ONE_CHAT_MSG)
        return;
    int64_t cseq = json_object_object_get_ex(o, "cseq", &v) ? json_object_get_int64(v) : 0;
    if (h_int(o, "id") != fp[k].s.id || h_int(o, "toid") != fp[k].r.id || cseq <= 0 ||
        cseq > FILL_MAX_CSEQ) {
        ft.foreign++;
        return;
    }
    if (login)
        fp[k].login[cseq]++;
    else
        fp[k].live[cseq]++;
}

static void fill_push(void *arg, struct json_object *o)
{
    fill_record((int)((struct fill_pair *)arg - fp), o, false);
}

static void fill_login_receiver(int k, int node)
{
    struct json_object *ack = NULL;
    fp[k].rc = h_login_to(port_of(node), &fp[k].r, false, &ack);
    size_t n = h_arr_len_opt(ack, "offlinemsg");
    for (size_t j = 0; j < n; j++) {
        struct json_object *m = h_parse_item(h_arr(ack, "offlinemsg"), j, "offlinemsg");
        fill_record(k, m, true);
        json_object_put(m);
    }
    json_object_put(ack);
    qclient_set_skip_handler(fp[k].rc, fill_push, &fp[k]);
    fp[k].gone = false;
}

/* Read what waits on every open receiver; with quiet_ms, until nothing came for that long. */
static void fill_drain(int quiet_ms)
{
    int64_t last = h_now_ms();
    do {
        bool got = false;
        for (int k = 0; k < FILL_PAIRS; k++) {
            struct json_object *o;
            while (!fp[k].gone && (o = qclient_recv(fp[k].rc, 0)) != NULL) {
                fill_push(&fp[k], o);
                json_object_put(o);
                got = true;
            }
            if (!fp[k].gone && qclient_eof(fp[k].rc)) {
                H_CHECK(ft.kind == FILL_NODE_KILL || ft.kind == FILL_NODE_HANG_KILL,
                        "receiver %d's session closed", fp[k].r.id);
                fp[k].gone = true;
            }
        }
        if (got)
            last = h_now_ms();
        else if (quiet_ms > 0)
            h_sleep_ms(10);
    } while (quiet_ms > 0 && h_now_ms() - last < quiet_ms);
}

static void fill_setup(enum fill_fault kind)
{
    memset(&ft, 0, sizeof(ft));
    memset(fp, 0, sizeof(fp));
    ft.kind = kind;
    for (int k = 0; k < FILL_PAIRS; k++) {
        new_user(&fp[k].s, "fs");
        new_user(&fp[k].r, "fr");
        fp[k].sc = login_on(NODE_A, &fp[k].s, false, NULL);
        fp[k].rc = login_on(NODE_B, &fp[k].r, false, NULL);
        qclient_set_skip_handler(fp[k].rc, fill_push, &fp[k]);
    }
}

/* One chat from every sender, then every ACK (its cseq noted). */
static void fill_round(bool during)
{
    for (int k = 0; k < FILL_PAIRS; k++) {
        int i = ft.sent++;
        ft.sent_during += during;
        h_send(fp[k].sc, "{\"msgid\":5,\"toid\":%d,\"msg\":\"fill %d\",\"seq\":%lld}", fp[k].r.id,
               i, FILL_SEQ_BASE + i);
    }
    for (int k = 0; k < FILL_PAIRS; k++) {
        struct json_object *ack = qclient_recv_msgid(fp[k].sc, QC_ACK_MSG, H_REPLY_MS);
        if (ack == NULL) {
            ft.unanswered++;
            continue;
        }
        int64_t cseq = h_has(ack, "cseq") ? h_int(ack, "cseq") : 0;
        if (h_int(ack, "errno") == 0 && cseq > 0 && cseq <= FILL_MAX_CSEQ) {
            fp[k].acked[cseq] = true;
            if (cseq > fp[k].max_cseq)
                fp[k].max_cseq = cseq;
            ft.acked++;
        } else {
            ft.refused++;
        }
        json_object_put(ack);
    }
}

static pid_t fill_relay_pid, fill_killer;

/*
 * Node 2 hangs (every process SIGSTOPped: Redis still counts its relay as a
 * subscriber, and its sockets take what comes), then a child SIGKILLs it
 * FILL_HANG_MS later while the traffic goes on.
 */
static void fill_hang_then_kill(void)
{
    pid_t pids[CL_MAX_CHILDREN + 1];
    int n = cl_node_children(NODE_B, pids, CL_MAX_CHILDREN);
    H_CHECK(n > 0, "node 2 has no children");
    pids[n++] = cl.node[NODE_B].pid;
    for (int k = 0; k < n; k++)
        kill(pids[k], SIGSTOP);
    fill_killer = fork();
    H_CHECK(fill_killer >= 0, "fork: %s", strerror(errno));
    if (fill_killer == 0) {
        h_sleep_ms(FILL_HANG_MS);
        for (int k = 0; k < n; k++)
            kill(pids[k], SIGKILL);
        _exit(0);
    }
}

static void slots_move_begin(void);
static void slots_move_end(void);
static void master_kill(void);
static void master_restart(void);

static void fill_inject(void)
{
    switch (ft.kind) {
    case FILL_NODE_KILL: cl_node_kill(NODE_B); break;
    case FILL_NODE_HANG_KILL: fill_hang_then_kill(); break;
    case FILL_RELAY_KILL:
        fill_relay_pid = cl_node_relay_pid(NODE_B);
        H_CHECK(fill_relay_pid > 0, "node 2 has no relay");
        H_CHECK(kill(fill_relay_pid, SIGKILL) == 0, "SIGKILL the relay: %s", strerror(errno));
        break;
    case FILL_REDIS_RESTART: H_CHECK(cl_redis_kill() == 0, "SIGKILL redis-server failed"); break;
    case FILL_REDIS_PAUSE:
        H_CHECK(kill(cl.redis_pid, SIGSTOP) == 0, "SIGSTOP redis-server: %s", strerror(errno));
        break;
    case FILL_SLOTS_MOVED: slots_move_begin(); break;
    case FILL_MASTER_KILL: master_kill(); break;
    }
}

static int fill_outage_ms(void)
{
    switch (ft.kind) {
    case FILL_NODE_KILL:
    case FILL_NODE_HANG_KILL: return FILL_KILL_MS;
    case FILL_REDIS_RESTART: return FILL_RESTART_MS;
    case FILL_REDIS_PAUSE: return FILL_PAUSE_MS;
    case FILL_SLOTS_MOVED: return MOVE_MIGRATING_MS;
    case FILL_MASTER_KILL: return MASTER_DOWN_MS;
    default: return FILL_RELAY_MS; /* the master respawns the relay by itself meanwhile */
    }
}

static void fill_wait_connected(int node)
{
    H_CHECK(cl_wait_relay(node, "connected", FILL_WHOLE_MS),
            "node %d's relay not connected within %d ms of the repair", node + 1, FILL_WHOLE_MS);
}

/* The repair, and the cluster whole again (receivers of a killed node logged in again). */
static void fill_repair(void)
{
    switch (ft.kind) {
    case FILL_NODE_HANG_KILL:
        H_CHECK(waitpid(fill_killer, NULL, 0) == fill_killer, "the killer of node 2: %s",
                strerror(errno));
        cl_node_kill(NODE_B); /* reaps what the killer killed */
        /* FALLTHROUGH */
    case FILL_NODE_KILL:
        H_CHECK(cl_node_start(NODE_B) == 0, "node 2 did not start again");
        fill_drain(0);
        /* Logged in again anywhere: half on node 1, half on the restarted node 2. */
        for (int k = 0; k < FILL_PAIRS; k++) {
            H_CHECK(fp[k].gone, "receiver %d's session outlived its node", fp[k].r.id);
            h_close(fp[k].rc);
            fill_login_receiver(k, k % 2 ? NODE_B : NODE_A);
        }
        break;
    case FILL_RELAY_KILL: {
        int64_t deadline = h_now_ms() + FILL_WHOLE_MS;
        pid_t now;
        while (((now = cl_node_relay_pid(NODE_B)) <= 0 || now == fill_relay_pid) &&
               h_now_ms() < deadline)
            h_sleep_ms(20);
        H_CHECK(now > 0 && now != fill_relay_pid, "node 2's relay was not respawned");
        fill_wait_connected(NODE_B);
        break;
    }
    case FILL_REDIS_RESTART:
        H_CHECK(cl_redis_restart() == 0, "redis-server did not start again");
        fill_wait_connected(NODE_A);
        fill_wait_connected(NODE_B);
        break;
    case FILL_REDIS_PAUSE:
        H_CHECK(kill(cl.redis_pid, SIGCONT) == 0, "SIGCONT redis-server: %s", strerror(errno));
        fill_wait_connected(NODE_A);
        fill_wait_connected(NODE_B);
        break;
    case FILL_SLOTS_MOVED: slots_move_end(); break;
    case FILL_MASTER_KILL: master_restart(); break;
    }
}

static void fill_traffic(const char *name)
{
    int64_t t0 = h_now_ms(), fault = 0, repaired = 0;
    for (;;) {
        int64_t now = h_now_ms();
        H_CHECK(now - t0 < FILL_LIMIT_MS, "%s: the traffic phase took over %d ms", name,
                FILL_LIMIT_MS);
        if (!fault && now - t0 >= FILL_BEFORE_MS) {
            fill_inject();
            fault = h_now_ms();
        }
        if (fault && !repaired && now - fault >= fill_outage_ms()) {
            fill_repair();
            repaired = h_now_ms();
        }
        if (repaired && now - repaired >= FILL_AFTER_MS)
            break;
        fill_round(fault && !repaired);
        fill_drain(0);
        h_sleep_ms(FILL_ROUND_GAP_MS);
    }
    fill_drain(FILL_QUIET_MS);
    print_message("%s: fault %lld ms in, repaired %lld ms later, %lld ms in all\n", name,
                  (long long)(fault - t0), (long long)(repaired - fault),
                  (long long)(h_now_ms() - t0));
}

/*
 * What a client does after a login: HISTORY after the last cseq up to which
 * it has everything, page by page; a cseq it had not seen is counted.
 */
static void fill_history(int k)
{
    int64_t after = 0;
    while (after < FILL_MAX_CSEQ && fp[k].live[after + 1] + fp[k].login[after + 1] > 0)
        after++;
    for (int page = 0; page <= FILL_MAX_CSEQ / FILL_HISTORY_PAGE; page++) {
        int64_t seq = h_next_seq();
        h_send(fp[k].rc, "{\"msgid\":20,\"with\":%d,\"after\":%lld,\"limit\":%d,\"seq\":%lld}",
               fp[k].s.id, (long long)after, FILL_HISTORY_PAGE, (long long)seq);
        struct json_object *r = qclient_recv_msgid(fp[k].rc, QC_HISTORY_MSG_ACK, H_REPLY_MS), *v;
        H_CHECK(r != NULL && h_int(r, "errno") == 0 && h_int(r, "seq") == seq,
                "HISTORY after %lld for user %d: want msgid 21 with errno 0, got %s",
                (long long)after, fp[k].r.id, r ? h_json(r) : "nothing");
        struct json_object *msgs = h_arr(r, "msgs");
        for (size_t j = 0; j < json_object_array_length(msgs); j++) {
            struct json_object *m = json_object_array_get_idx(msgs, j);
            int64_t q = h_int(m, "cseq");
            H_CHECK(q > after && q <= FILL_MAX_CSEQ, "HISTORY after %lld gave %s", (long long)after,
                    h_json(m));
            if (h_int(m, "id") == fp[k].s.id && fp[k].live[q] + fp[k].login[q] == 0)
                fp[k].history[q]++;
            after = q;
        }
        bool more = json_object_object_get_ex(r, "more", &v) && json_object_get_boolean(v);
        json_object_put(r);
        if (!more)
            return;
    }
}

/*
 * Count by cseq; receivers online all along must have everything live.
 * Then every receiver logs in again on node A: nothing may be missing, and
 * nothing may come twice (except after a SIGKILLed node: a cursor advance
 * it had not committed yet brings a chat written just before back once).
 */
static void fill_account(const char *name, bool online_all_along)
{
    int missing_live = 0;
    for (int k = 0; k < FILL_PAIRS; k++)
        for (int64_t q = 1; q <= fp[k].max_cseq; q++)
            missing_live += fp[k].acked[q] && fp[k].live[q] == 0;
    for (int k = 0; k < FILL_PAIRS; k++) {
        close_and_wait_gone(fp[k].rc, &fp[k].r);
        fill_login_receiver(k, NODE_A);
    }
    fill_drain(DRAIN_QUIET_MS);
    for (int k = 0; k < FILL_PAIRS; k++)
        fill_history(k);
    int live = 0, login = 0, history = 0, lost = 0, dup = 0, unacked = 0;
    for (int k = 0; k < FILL_PAIRS; k++) {
        for (int64_t q = 1; q <= FILL_MAX_CSEQ; q++) {
            int got = fp[k].live[q] + fp[k].login[q] + fp[k].history[q];
            live += fp[k].live[q];
            login += fp[k].login[q];
            history += fp[k].history[q];
            if (!fp[k].acked[q]) {
                unacked += got > 0;
                continue;
            }
            if (got == 0 && lost++ < 10)
                print_error("%s: lost: cseq %lld of pair %d (to user %d)\n", name, (long long)q, k,
                            fp[k].r.id);
            if (got > 1 && dup++ < 10)
                print_error("%s: repeated: cseq %lld to user %d: live %u, login %u\n", name,
                            (long long)q, fp[k].r.id, fp[k].live[q], fp[k].login[q]);
        }
    }
    print_message("%s: sent %d (%d during the fault), acked %d, refused %d, unanswered %d; "
                  "delivered live %d, via login %d, via history %d; missing before the relogin "
                  "%d; lost %d, duplicates %d; unacknowledged that arrived %d; foreign %d\n",
                  name, ft.sent, ft.sent_during, ft.acked, ft.refused, ft.unanswered, live, login,
                  history, missing_live, lost, dup, unacked, ft.foreign);
    H_CHECK(ft.sent_during > 0, "%s: no chat was sent during the fault", name);
    H_CHECK(ft.unanswered == 0 && ft.refused == 0,
            "%s: %d chat(s) without an ACK within %d ms, %d refused: the ACK must not depend on "
            "Redis or node 2",
            name, ft.unanswered, H_REPLY_MS, ft.refused);
    H_CHECK(ft.foreign == 0, "%s: %d chat(s) reached the wrong user or had no cseq", name,
            ft.foreign);
    H_CHECK(lost == 0, "%s: %d acknowledged chat(s) lost", name, lost);
    if (online_all_along)
        H_CHECK(missing_live == 0,
                "%s: %d acknowledged chat(s) did not reach receivers online all along", name,
                missing_live);
    if (ft.kind != FILL_NODE_KILL && ft.kind != FILL_NODE_HANG_KILL)
        H_CHECK(dup == 0, "%s: %d chat(s) delivered more than once", name, dup);
    for (int k = 0; k < FILL_PAIRS; k++) {
        h_expect_quiet(fp[k].rc, "receiver after the accounting");
        h_close(fp[k].rc);
        h_close(fp[k].sc);
    }
}

static void test_node_killed_receivers_get_everything_once(void **state)
{
    fill_setup(FILL_NODE_KILL);
    fill_traffic("node killed");
    fill_account("node killed", false);
}

static void test_node_hung_then_killed_receivers_get_everything_once(void **state)
{
    fill_setup(FILL_NODE_HANG_KILL);
    fill_traffic("node hung 500 ms, then killed");
    fill_account("node hung 500 ms, then killed", false);
}

static void test_relay_killed_online_receivers_get_everything(void **state)
{
    fill_setup(FILL_RELAY_KILL);
    fill_traffic("relay killed");
    fill_account("relay killed", true);
}

static void test_redis_restarted_online_receivers_get_everything(void **state)
{
    fill_setup(FILL_REDIS_RESTART);
    fill_traffic("redis restarted");
    fill_account("redis restarted", true);
}

static void test_redis_paused_online_receivers_get_everything(void **state)
{
    fill_setup(FILL_REDIS_PAUSE);
    fill_traffic("redis paused 30 s");
    fill_account("redis paused 30 s", true);
}

/* ---- a Redis Cluster changing under the chats (issue 16) ------------------ */

/*
 * QCHAT_TEST_REDIS_CLUSTER=1 only (the relays on sharded pub/sub, a
 * three-master Redis Cluster without replicas); with one Redis there is no
 * slot map to change and both cases say so and return.  The traffic is the
 * fill cases' (FILL_PAIRS senders on node A chatting with seq to receivers
 * on node B, one chat per round each), and the accounting too: receivers
 * online all along get every acknowledged cseq live, exactly once.
 *
 * Resharding: every slot holding the channel of one of the test's users on
 * the master of the first receiver's channel moves to the next master, as
 * redis-cli --cluster reshard moves a slot: CLUSTER SETSLOT IMPORTING on
 * the target, MIGRATING on the source, the slot's keys MIGRATEd (the slots
 * of the users' login generation keys on that master move too, so the
 * logins of the accounting increment them at their new owner), the chats going on for MOVE_MIGRATING_MS, then SETSLOT NODE on
 * the target, the source and the third master.  The source then
 * unsubscribes node B's relay from the moved receiver channels (a
 * server-side "sunsubscribe") and answers node A's SPUBLISH to them with
 * MOVED.  Both relays must read the slot map again (their logs say so) and
 * subscribe at the new owner (PUBSUB SHARDNUMSUB there counts one
 * subscriber for every moved channel of a logged-in user).
 *
 * One master SIGKILLed: after cluster-node-timeout the other two say
 * cluster_state:fail (no replica takes the slots over) and answer
 * everything with CLUSTERDOWN; both relays are then without Redis
 * (neither says "connected") while the chats are still acknowledged (the
 * commit, not the PUBLISH).  The master restarted on its port from its
 * nodes.conf makes the cluster whole; the relays read the map, subscribe
 * everyone again and the workers fill their sessions from the log.
 */
#define SLOT_MAP_TEXT "reading the slot map again"

static struct {
    int from, to; /* indexes into cl.redis_ports */
    int slots[MOVED_SLOTS_MAX], nslots;
    int32_t moved_users[2 * FILL_PAIRS]; /* logged-in users whose channel moved */
    int nmoved_users, keys;
    int victim;        /* the master killed */
    int64_t follow_ms; /* SETSLOT NODE to every moved channel subscribed anew */
    int map_reads[CL_NODES];
} mv;

/* One command to the cluster node on port; the reply (the caller frees it). */
static redisReply *redis_command_at(int port, const char *fmt, ...)
{
    struct timeval tv = { REDIS_CMD_MS / 1000, (REDIS_CMD_MS % 1000) * 1000 };
    redisContext *c = redisConnectWithTimeout(H_HOST, port, tv);
    H_CHECK(c != NULL && !c->err, "redis " H_HOST ":%d: %s", port, c ? c->errstr : "no memory");
    redisSetTimeout(c, tv);
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    H_CHECK(r != NULL, "redis " H_HOST ":%d: %s: %s", port, fmt, c->errstr);
    redisFree(c);
    return r;
}

static void redis_expect_ok(redisReply *r, int port, const char *what)
{
    H_CHECK(r->type == REDIS_REPLY_STATUS, "redis :%d: %s: %s", port, what,
            r->type == REDIS_REPLY_ERROR ? r->str : "not a status reply");
    freeReplyObject(r);
}

static void cluster_node_id(int k, char *out)
{
    redisReply *r = redis_command_at(cl.redis_ports[k], "CLUSTER MYID");
    H_CHECK(r->type == REDIS_REPLY_STRING && r->len < REDIS_ID_MAX, "CLUSTER MYID on :%d",
            cl.redis_ports[k]);
    memcpy(out, r->str, r->len + 1);
    freeReplyObject(r);
}

/* The slot of prefix<uid>: a user's channel, or its login generation key. */
static int user_slot(const char *prefix, int32_t uid)
{
    redisReply *r = redis_command_at(cl.redis_port, "CLUSTER KEYSLOT %s%d", prefix, (int)uid);
    H_CHECK(r->type == REDIS_REPLY_INTEGER, "CLUSTER KEYSLOT %s%d", prefix, uid);
    int slot = (int)r->integer;
    freeReplyObject(r);
    return slot;
}

static int channel_slot(int32_t uid)
{
    return user_slot(RELAY_CHANNEL_PREFIX, uid);
}

/* The master (index into cl.redis_ports) serving slot, as the seed sees it. */
static int slot_owner(int slot)
{
    redisReply *r = redis_command_at(cl.redis_port, "CLUSTER SLOTS");
    int owner = -1;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        redisReply *range = r->element[i];
        if (range->elements < 3 || range->element[0]->integer > slot ||
            range->element[1]->integer < slot)
            continue;
        for (int k = 0; k < cl.redis_nodes; k++)
            if (cl.redis_ports[k] == range->element[2]->element[1]->integer)
                owner = k;
    }
    freeReplyObject(r);
    H_CHECK(owner >= 0, "no master serves slot %d", slot);
    return owner;
}

static long shard_subscribers_at(int port, int32_t uid)
{
    redisReply *r =
        redis_command_at(port, "PUBSUB SHARDNUMSUB " RELAY_CHANNEL_PREFIX "%d", (int)uid);
    long n = r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                     r->element[1]->type == REDIS_REPLY_INTEGER
                 ? (long)r->element[1]->integer
                 : -1;
    freeReplyObject(r);
    return n;
}

static int log_lines_with(int node, const char *needle)
{
    FILE *f = fopen(cl.node[node].log_path, "r");
    char line[1024];
    int n = 0;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        n += strstr(line, needle) != NULL;
    if (f != NULL)
        fclose(f);
    return n;
}

/* slot moves with the others (once) if it is on the moving master; false if not. */
static bool note_moving_slot(int slot)
{
    if (slot_owner(slot) != mv.from)
        return false;
    for (int i = 0; i < mv.nslots; i++)
        if (mv.slots[i] == slot)
            return true;
    H_CHECK(mv.nslots < MOVED_SLOTS_MAX, "raise MOVED_SLOTS_MAX");
    mv.slots[mv.nslots++] = slot;
    return true;
}

/*
 * uid's channel on the moving master moves (and is checked at the new
 * owner after); so does its login generation key (qchat:gen:<uid>, which
 * the next login increments there).
 */
static void note_moving_user(int32_t uid)
{
    if (note_moving_slot(channel_slot(uid)))
        mv.moved_users[mv.nmoved_users++] = uid;
    note_moving_slot(user_slot(RELAY_GEN_KEY_PREFIX, uid));
}

/* The keys of slot go from master mv.from to mv.to (MIGRATE, one at a time). */
static void migrate_slot_keys(int slot)
{
    int from = cl.redis_ports[mv.from], to = cl.redis_ports[mv.to];
    for (;;) {
        redisReply *keys =
            redis_command_at(from, "CLUSTER GETKEYSINSLOT %d %d", slot, MOVE_KEYS_BATCH);
        H_CHECK(keys->type == REDIS_REPLY_ARRAY, "CLUSTER GETKEYSINSLOT %d", slot);
        size_t n = keys->elements;
        for (size_t i = 0; i < n; i++) {
            redisReply *r =
                redis_command_at(from, "MIGRATE " H_HOST " %d %b 0 %d", to, keys->element[i]->str,
                                 keys->element[i]->len, MOVE_MIGRATE_MS);
            H_CHECK(r->type == REDIS_REPLY_STATUS, "MIGRATE %s: %s", keys->element[i]->str,
                    r->type == REDIS_REPLY_ERROR ? r->str : "not a status reply");
            freeReplyObject(r);
            mv.keys++;
        }
        freeReplyObject(keys);
        if (n == 0)
            return;
    }
}

static void slots_move_begin(void)
{
    char from_id[REDIS_ID_MAX], to_id[REDIS_ID_MAX];
    mv.from = slot_owner(channel_slot(fp[0].r.id));
    mv.to = (mv.from + 1) % cl.redis_nodes;
    for (int k = 0; k < FILL_PAIRS; k++) {
        note_moving_user(fp[k].r.id);
        note_moving_user(fp[k].s.id);
    }
    cluster_node_id(mv.from, from_id);
    cluster_node_id(mv.to, to_id);
    for (int i = 0; i < CL_NODES; i++)
        mv.map_reads[i] = log_lines_with(i, SLOT_MAP_TEXT);
    for (int i = 0; i < mv.nslots; i++) {
        int to = cl.redis_ports[mv.to], from = cl.redis_ports[mv.from];
        redis_expect_ok(
            redis_command_at(to, "CLUSTER SETSLOT %d IMPORTING %s", mv.slots[i], from_id), to,
            "SETSLOT IMPORTING");
        redis_expect_ok(
            redis_command_at(from, "CLUSTER SETSLOT %d MIGRATING %s", mv.slots[i], to_id), from,
            "SETSLOT MIGRATING");
        migrate_slot_keys(mv.slots[i]);
    }
}

/* Every moved channel of a logged-in user has its node's relay subscribed at the new owner. */
static bool moved_channels_followed(void)
{
    for (int i = 0; i < mv.nmoved_users; i++)
        if (shard_subscribers_at(cl.redis_ports[mv.to], mv.moved_users[i]) != 1)
            return false;
    return both_relays_connected();
}

static void slots_move_end(void)
{
    char to_id[REDIS_ID_MAX];
    cluster_node_id(mv.to, to_id);
    /* The target first, then the source, then the rest (as redis-cli does). */
    int order[CL_REDIS_NODES_MAX], n = 0;
    order[n++] = mv.to;
    order[n++] = mv.from;
    for (int k = 0; k < cl.redis_nodes; k++)
        if (k != mv.to && k != mv.from)
            order[n++] = k;
    int64_t t0 = h_now_ms();
    for (int i = 0; i < mv.nslots; i++)
        for (int j = 0; j < n; j++)
            redis_expect_ok(redis_command_at(cl.redis_ports[order[j]], "CLUSTER SETSLOT %d NODE %s",
                                             mv.slots[i], to_id),
                            cl.redis_ports[order[j]], "SETSLOT NODE");
    while (!moved_channels_followed() && h_now_ms() - t0 < MOVE_FOLLOW_MS)
        h_sleep_ms(MOVE_POLL_MS);
    mv.follow_ms = h_now_ms() - t0;
    for (int i = 0; i < mv.nmoved_users; i++)
        H_CHECK(shard_subscribers_at(cl.redis_ports[mv.to], mv.moved_users[i]) == 1,
                "user %d's channel moved to :%d: PUBSUB SHARDNUMSUB there is %ld, want 1 "
                "within %d ms (the relay did not follow)",
                mv.moved_users[i], cl.redis_ports[mv.to],
                shard_subscribers_at(cl.redis_ports[mv.to], mv.moved_users[i]), MOVE_FOLLOW_MS);
    H_CHECK(both_relays_connected(), "the relays are not connected %d ms after the move",
            MOVE_FOLLOW_MS);
}

static void master_kill(void)
{
    mv.victim = slot_owner(channel_slot(fp[0].r.id));
    pid_t pid = cl.redis_pids[mv.victim];
    H_CHECK(pid > 0 && kill(pid, SIGKILL) == 0, "SIGKILL redis-server %d (:%d): %s", (int)pid,
            cl.redis_ports[mv.victim], strerror(errno));
    int64_t deadline = h_now_ms() + REDIS_CMD_MS;
    while (h_process_alive(pid) && h_now_ms() < deadline)
        h_sleep_ms(MOVE_POLL_MS);
    H_CHECK(!h_process_alive(pid), "redis-server %d outlived SIGKILL", (int)pid);
}

/* What the outage looked like (documented in docs/ARCHITECTURE.md), then the restart. */
static void master_restart(void)
{
    int survivor = (mv.victim + 1) % cl.redis_nodes;
    redisReply *r = redis_command_at(cl.redis_ports[survivor], "CLUSTER INFO");
    H_CHECK(r->type == REDIS_REPLY_STRING && strstr(r->str, "cluster_state:fail") != NULL,
            "%d ms after a master's SIGKILL the others must say cluster_state:fail (no replica "
            "serves its slots): %s",
            MASTER_DOWN_MS, r->type == REDIS_REPLY_STRING ? r->str : "no answer");
    freeReplyObject(r);
    char state[2][64];
    for (int i = 0; i < CL_NODES; i++) {
        if (!cl_relay_state(i, state[i], sizeof(state[i])))
            snprintf(state[i], sizeof(state[i]), "(none)");
        H_CHECK(strcmp(state[i], "connected") != 0,
                "node %d's relay says connected while the cluster is down", i + 1);
    }
    print_message("master :%d killed: cluster_state:fail on :%d; relays \"%s\", \"%s\"\n",
                  cl.redis_ports[mv.victim], cl.redis_ports[survivor], state[0], state[1]);
    int64_t t0 = h_now_ms();
    H_CHECK(cl_redis_restart() == 0, "the killed master did not start again on :%d",
            cl.redis_ports[mv.victim]);
    fill_wait_connected(NODE_A);
    fill_wait_connected(NODE_B);
    mv.follow_ms = h_now_ms() - t0;
}

static void test_slots_moved_while_chatting_online_receivers_get_everything(void **state)
{
    if (!cl.redis_cluster) {
        print_message("one Redis: no slot map to move (QCHAT_TEST_REDIS_CLUSTER=1 runs this)\n");
        return;
    }
    memset(&mv, 0, sizeof(mv));
    fill_setup(FILL_SLOTS_MOVED);
    fill_traffic("slots moved");
    print_message("slots moved: %d slot(s) from :%d to :%d (%d channel(s) of logged-in users, "
                  "%d key(s) migrated); every moved channel subscribed at the new owner %lld ms "
                  "after SETSLOT NODE\n",
                  mv.nslots, cl.redis_ports[mv.from], cl.redis_ports[mv.to], mv.nmoved_users,
                  mv.keys, (long long)mv.follow_ms);
    H_CHECK(mv.nslots > 0, "no slot moved");
    for (int i = 0; i < CL_NODES; i++)
        H_CHECK(log_lines_with(i, SLOT_MAP_TEXT) > mv.map_reads[i],
                "node %d's relay never read the slot map again (no \"%s\" in %s)", i + 1,
                SLOT_MAP_TEXT, cl.node[i].log_path);
    fill_account("slots moved", true);
}

static void test_master_killed_online_receivers_get_everything(void **state)
{
    if (!cl.redis_cluster) {
        print_message("one Redis: no master to lose (QCHAT_TEST_REDIS_CLUSTER=1 runs this)\n");
        return;
    }
    memset(&mv, 0, sizeof(mv));
    fill_setup(FILL_MASTER_KILL);
    fill_traffic("master killed");
    print_message("master killed: relays connected again %lld ms after the restart\n",
                  (long long)mv.follow_ms);
    fill_account("master killed", true);
}

/* ---- answers across nodes need no fill (issue 16, phase 3) ----------------- */

#define BACK_FORTH_ROUNDS 30 /* ping-pong rounds between a user on each node */
#define BOTH_AT_ONCE      20 /* chats each side sends without waiting for the other */

/* Read n chats from peer on c, in the order sent ("TAG 0".."TAG n-1"), with rising cseq. */
static void expect_chats_in_order(struct qclient *c, const struct h_user *from, const char *tag,
                                  int n, const char *what)
{
    int64_t last = 0;
    for (int i = 0; i < n; i++) {
        char text[64];
        snprintf(text, sizeof(text), "%s %d", tag, i);
        struct json_object *m = h_expect(c, QC_ONE_CHAT_MSG, what);
        H_CHECK(h_int(m, "id") == from->id && strcmp(h_str(m, "msg"), text) == 0 &&
                    h_int(m, "cseq") > last,
                "%s: want \"%s\" from %d with a cseq above %lld, got %s", what, text, from->id,
                (long long)last, h_json(m));
        last = h_int(m, "cseq");
        json_object_put(m);
    }
}

/*
 * A conversation between a user on node 1 and one on node 2: each chat's
 * cseq follows the other side's previous one, which the receiving session
 * never got (its own).  Back and forth, every chat arrives at once and no
 * session fills from the log (the nodes' debug logs would say
 * RECOVER_FILL_LOG); then both send at the same time, so the cseqs
 * interleave: each still gets every chat of the other, in order, once.
 */
static void test_answers_across_nodes_need_no_fill(void **state)
{
    struct h_user a, b;
    new_user(&a, "bf");
    new_user(&b, "bf");
    struct qclient *ca = login_on(NODE_A, &a, false, NULL), *cb = login_on(NODE_B, &b, false, NULL);
    int fills[CL_NODES];
    for (int i = 0; i < CL_NODES; i++)
        fills[i] = log_lines_with(i, RECOVER_FILL_LOG);
    for (int r = 0; r < BACK_FORTH_ROUNDS; r++) {
        char text[64];
        snprintf(text, sizeof(text), "ping %d", r);
        int64_t mid = chat(ca, b.id, text, "back and forth");
        expect_chat(cb, &a, &b, text, mid, "back and forth, node 1 to node 2");
        snprintf(text, sizeof(text), "pong %d", r);
        mid = chat(cb, a.id, text, "back and forth");
        expect_chat(ca, &b, &a, text, mid, "back and forth, node 2 to node 1");
    }
    for (int i = 0; i < CL_NODES; i++)
        H_CHECK(log_lines_with(i, RECOVER_FILL_LOG) == fills[i],
                "node %d filled a session from the log %d time(s) in %d rounds of answers", i + 1,
                log_lines_with(i, RECOVER_FILL_LOG) - fills[i], BACK_FORTH_ROUNDS);
    for (int i = 0; i < BOTH_AT_ONCE; i++) {
        h_send(ca, "{\"msgid\":5,\"toid\":%d,\"msg\":\"from a %d\",\"seq\":%lld}", b.id, i,
               (long long)h_next_seq());
        h_send(cb, "{\"msgid\":5,\"toid\":%d,\"msg\":\"from b %d\",\"seq\":%lld}", a.id, i,
               (long long)h_next_seq());
    }
    /* The ACKs come on the same connections: skip them, keep the chats. */
    for (int k = 0; k < 2; k++) {
        struct qclient *c = k ? cb : ca;
        for (int got = 0; got < BOTH_AT_ONCE; got++) {
            struct json_object *ack = qclient_recv_msgid(c, QC_ACK_MSG, H_REPLY_MS);
            H_CHECK(ack != NULL && h_int(ack, "errno") == 0, "both at once: ACK %d of %s: %s", got,
                    k ? "b" : "a", ack ? h_json(ack) : "none");
            json_object_put(ack);
        }
    }
    expect_chats_in_order(cb, &a, "from a", BOTH_AT_ONCE, "both at once, at node 2");
    expect_chats_in_order(ca, &b, "from b", BOTH_AT_ONCE, "both at once, at node 1");
    h_expect_quiet(ca, "after both at once");
    h_expect_quiet(cb, "after both at once");
    h_close(ca);
    h_close(cb);
}

/* ---- the end -------------------------------------------------------------- */

static void test_nodes_stop_cleanly(void **state)
{
    for (int i = 0; i < CL_NODES; i++) {
        H_CHECK(cl_node_running(i), "node %d is not running before the stop", i + 1);
        cl_node_stop(i);
        int st = cl.node[i].exit_status;
        H_CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
                "node %d: SIGTERM: the master must exit with status 0 (wait status 0x%x)", i + 1,
                st);
        H_CHECK(cl.node[i].leftover_children == 0,
                "node %d: %d child(ren) still running after "
                "the master exited",
                i + 1, cl.node[i].leftover_children);
        H_CHECK(cl_sanitizer_lines(i) == 0, "node %d: sanitizer report in %s", i + 1,
                cl.node[i].log_path);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        CL_TEST(test_chat_between_nodes_directly),
        CL_TEST(test_chat_through_nginx),
        CL_TEST(test_chat_right_after_login_is_live),
        CL_TEST(test_group_chat_members_on_both_nodes),
        CL_TEST(test_group_events_across_nodes),
        CL_TEST(test_block_across_nodes),
        CL_TEST(test_presence_across_nodes),
        CL_TEST(test_friend_request_accepted_across_nodes),
        CL_TEST(test_takeover_across_nodes),
        CL_TEST(test_simultaneous_logins_on_two_nodes_leave_one),
        CL_TEST(test_offline_messages_stored_by_the_other_node),
        CL_TEST(test_redis_restart_loses_nothing),
        CL_TEST(test_hung_worker_killed_under_cross_node_traffic_loses_nothing),
        CL_TEST(test_node_killed_users_go_offline_then_elsewhere),
        CL_TEST(test_relay_killed_online_receivers_get_everything),
        CL_TEST(test_redis_restarted_online_receivers_get_everything),
        CL_TEST(test_redis_paused_online_receivers_get_everything),
        CL_TEST(test_node_killed_receivers_get_everything_once),
        CL_TEST(test_node_hung_then_killed_receivers_get_everything_once),
        CL_TEST(test_answers_across_nodes_need_no_fill),
        CL_TEST(test_slots_moved_while_chatting_online_receivers_get_everything),
        CL_TEST(test_master_killed_online_receivers_get_everything),
        CL_TEST(test_nodes_stop_cleanly),
    };
    h_apply_filter();
    return cmocka_run_group_tests_name("cluster", tests, cl_group_setup, cl_group_teardown);
}
