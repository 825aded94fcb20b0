/*
 * test_xsessions.c - [session] mode across two nodes (issue 15), on a
 * private cluster (cluster_harness.h: MariaDB, Redis or a three-master
 * Redis Cluster with QCHAT_TEST_REDIS_CLUSTER=1, two nodes of two workers).
 * Each test restarts both nodes in the mode it needs.
 *
 * refuse: a login without device is refused (errno 2) while the account
 * has a session on the other node; a login naming the device that is
 * online on the other node replaces it there (KICK, EOF); two logins at
 * the same moment on both nodes leave exactly one, every try; a node that
 * died (SIGKILL) stops refusing logins once [redis] session_ttl passed.
 *
 * multi: a chat to the user reaches its sessions on both nodes, from
 * either node; the user's own chat is echoed to its session on the other
 * node; READ_MSG is pushed there; a friend hears "offline" only when the
 * last session on any node ended; max_devices counts both nodes and one
 * more kicks the oldest wherever it is; N+1 logins at once on both nodes
 * leave N; DEVICES_MSG 49 lists every session of both nodes, "this" on
 * the asking one.
 */
#include "harness.h"
#include "cluster_harness.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NODE_A         0
#define NODE_B         1
#define SUB_WAIT_MS    5000 /* a session's channel subscribed / released */
#define RACE_TRIES     20   /* simultaneous logins per race test */
#define RACE_SETTLE_MS 3000 /* every reply, KICK and EOF of a try arrives within this */
#define RACE_READ_MS   10
#define MULTI_MAX      2 /* session.max_devices of the multi tests */
#define MULTI_RACERS   (MULTI_MAX + 1)
#define SESSION_TTL_S  3 /* redis.session_ttl of the dead-node test */
#define DEAD_WAIT_MS   ((SESSION_TTL_S + 4) * 1000)
#define DEAD_POLL_MS   250
#define QUIET_MS       400
#define STR_(x)        #x
#define STR(x)         STR_(x)

/* ---- the mode: both nodes restarted with it ----------------------------- */

static char mode_opt[64], extra_opt[64], ttl_opt[64];

static void nodes_in_mode(const char *mode, const char *extra, int session_ttl)
{
    int k = 0;
    snprintf(mode_opt, sizeof mode_opt, "session.mode=%s", mode);
    cl_node_opts[k++] = mode_opt;
    if (extra) {
        snprintf(extra_opt, sizeof extra_opt, "%s", extra);
        cl_node_opts[k++] = extra_opt;
    }
    if (session_ttl) {
        snprintf(ttl_opt, sizeof ttl_opt, "redis.session_ttl=%d", session_ttl);
        cl_node_opts[k++] = ttl_opt;
    }
    cl_node_opts[k] = NULL;
    for (int i = 0; i < CL_NODES; i++) {
        cl_node_stop(i);
        H_CHECK(cl_node_start(i) == 0, "node %d did not start in session.mode=%s", i + 1, mode);
    }
}

/* ---- users and logins ---------------------------------------------------- */

static int port_of(int node)
{
    return cl.node[node].port;
}

static void new_user(struct h_user *u, const char *tag)
{
    struct qclient *c = h_connect_to(port_of(NODE_A));
    h_register(c, u, tag);
    h_close(c);
}

/* Send LOGIN (password, optional device, presence) on a new connection to node. */
static struct qclient *send_login(int node, const struct h_user *u, const char *device,
                                  bool presence)
{
    struct qclient *c = h_connect_to(port_of(node));
    char dev[96] = "";
    if (device)
        snprintf(dev, sizeof dev, ",\"device\":%s", h_q(device));
    h_send(c, "{\"msgid\":1,\"id\":%d,\"password\":%s%s%s,\"seq\":%lld}", u->id, h_q(u->password),
           dev, presence ? ",\"presence\":true" : "", (long long)h_next_seq());
    return c;
}

/* The LOGIN_MSG_ACK's errno on c (the connection stays). */
static int64_t login_errno(struct qclient *c, const char *what)
{
    struct json_object *ack = h_expect(c, QC_LOGIN_MSG_ACK, what);
    int64_t err = h_int(ack, "errno");
    json_object_put(ack);
    return err;
}

/* Log in on node; the login must succeed and be reachable cluster-wide. */
static struct qclient *login_ok(int node, const struct h_user *u, const char *device, bool presence)
{
    struct qclient *c = send_login(node, u, device, presence);
    int64_t err = login_errno(c, "LOGIN");
    H_CHECK(err == 0, "user %d on node %d (device %s): want errno 0, got %lld", u->id, node + 1,
            device ? device : "none", (long long)err);
    return c;
}

static void expect_refused(int node, const struct h_user *u, const char *device, const char *what)
{
    struct qclient *c = send_login(node, u, device, false);
    int64_t err = login_errno(c, what);
    H_CHECK(err == QC_ERESERVED2, "%s: want errno 2 (already online), got %lld", what,
            (long long)err);
    h_close(c);
}

static void expect_kicked(struct qclient *c, const char *what)
{
    struct json_object *k = h_expect(c, QC_KICK_MSG, what);
    json_object_put(k);
    h_expect_eof(c, what);
}

static void wait_registry(const struct h_user *u, long want)
{
    H_CHECK(cl_wait_registry_len(u->id, want, SUB_WAIT_MS),
            "qchat:s:%d: want %ld session(s) in the registry within %d ms, got %ld", u->id, want,
            SUB_WAIT_MS, cl_registry_len(u->id));
}

/* Chat with seq from c; returns the ACK's cseq. */
static int64_t chat(struct qclient *c, int32_t toid, const char *text)
{
    int64_t seq = h_next_seq();
    h_send(c, "{\"msgid\":5,\"toid\":%d,\"msg\":%s,\"seq\":%lld}", toid, h_q(text), (long long)seq);
    struct json_object *ack = h_expect_ack(c, QC_ONE_CHAT_MSG, seq, 0, "chat ACK");
    int64_t cseq = h_int(ack, "cseq");
    json_object_put(ack);
    return cseq;
}

static void expect_chat(struct qclient *c, int32_t from, int32_t to, const char *text, int64_t cseq,
                        const char *what)
{
    struct json_object *m = h_expect(c, QC_ONE_CHAT_MSG, what);
    H_CHECK(h_int(m, "id") == from && h_int(m, "toid") == to &&
                strcmp(h_str(m, "msg"), text) == 0 && h_int(m, "cseq") == cseq,
            "%s: want {id:%d, toid:%d, msg:\"%s\", cseq:%lld}, got %s", what, from, to, text,
            (long long)cseq, h_json(m));
    json_object_put(m);
}

/* DEVICES_MSG 49 on c: the reply's devices array (owned by the returned reply). */
static struct json_object *devices_of(struct qclient *c, struct json_object **devices)
{
    int64_t seq = h_next_seq();
    h_send(c, "{\"msgid\":49,\"seq\":%lld}", (long long)seq);
    struct json_object *r = h_expect(c, QC_DEVICES_MSG_ACK, "DEVICES reply");
    H_CHECK(h_int(r, "errno") == 0 && h_int(r, "seq") == seq, "DEVICES reply: %s", h_json(r));
    *devices = h_arr(r, "devices");
    return r;
}

/* The devices list has exactly these names (any order), "this" on `self` only. */
static void expect_devices(struct qclient *c, const char *const *names, size_t n, const char *self)
{
    struct json_object *devices, *r = devices_of(c, &devices);
    H_CHECK(json_object_array_length(devices) == n, "want %zu devices, got %s", n, h_json(r));
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (size_t k = 0; k < n && !found; k++) {
            struct json_object *d = json_object_array_get_idx(devices, k), *t;
            if (strcmp(h_str(d, "device"), names[i]) != 0)
                continue;
            found = true;
            H_CHECK(json_object_object_get_ex(d, "this", &t) &&
                        json_object_get_boolean(t) == (strcmp(names[i], self) == 0) &&
                        h_int(d, "since") > 0,
                    "device %s: want this=%d and a since: %s", names[i],
                    strcmp(names[i], self) == 0, h_json(r));
        }
        H_CHECK(found, "device %s is not listed: %s", names[i], h_json(r));
    }
    json_object_put(r);
}

/* ---- refuse ------------------------------------------------------------- */

static void test_refuse_across_nodes(void **state)
{
    nodes_in_mode("refuse", NULL, 0);
    struct h_user a;
    new_user(&a, "xr");
    struct qclient *first = login_ok(NODE_A, &a, NULL, false);
    wait_registry(&a, 1);
    expect_refused(NODE_B, &a, NULL, "a second login without device on node 2");
    expect_refused(NODE_B, &a, "phone", "a login naming another device on node 2");
    h_expect_quiet(first, "the first session after the refusals");
    h_close(first);
    wait_registry(&a, 0);

    /* Named: the same device on the other node replaces it there. */
    struct qclient *phone_a = login_ok(NODE_A, &a, "phone", false);
    wait_registry(&a, 1);
    struct qclient *phone_b = login_ok(NODE_B, &a, "phone", false);
    expect_kicked(phone_a, "the phone's session on node 1 after the phone logged in on node 2");
    expect_refused(NODE_A, &a, NULL, "a login without device on node 1 while node 2 has one");
    expect_devices(phone_b, (const char *[]){ "phone" }, 1, "phone");
    h_close(phone_b);
    wait_registry(&a, 0);
    struct qclient *again = login_ok(NODE_A, &a, NULL, false);
    h_close(again);
}

/* Two logins without device at the same moment, one per node: exactly one stays. */
static void test_refuse_race_leaves_one(void **state)
{
    nodes_in_mode("refuse", NULL, 0);
    struct h_user a;
    new_user(&a, "xrr");
    int won[CL_NODES] = { 0 };
    for (int t = 1; t <= RACE_TRIES; t++) {
        struct qclient *c[2];
        for (int i = 0; i < 2; i++) {
            c[i] = h_connect_to(port_of(i));
        }
        for (int i = 0; i < 2; i++)
            h_send(c[i], "{\"msgid\":1,\"id\":%d,\"password\":%s,\"seq\":%lld}", a.id,
                   h_q(a.password), (long long)h_next_seq());
        int64_t err[2];
        for (int i = 0; i < 2; i++)
            err[i] = login_errno(c[i], "a racing login");
        H_CHECK((err[0] == 0) != (err[1] == 0),
                "try %d: want exactly one login accepted, got errno %lld on node 1 and %lld on "
                "node 2",
                t, (long long)err[0], (long long)err[1]);
        int winner = err[0] == 0 ? 0 : 1;
        H_CHECK(err[1 - winner] == QC_ERESERVED2, "try %d: the loser got errno %lld, want 2", t,
                (long long)err[1 - winner]);
        won[winner]++;
        h_expect_quiet(c[winner], "the surviving session");
        H_CHECK(cl_registry_len(a.id) == 1, "try %d: the registry holds %ld sessions, want 1", t,
                cl_registry_len(a.id));
        h_close(c[0]);
        h_close(c[1]);
        wait_registry(&a, 0);
    }
    fprintf(stderr, "refuse race: %d tries, node 1 won %d, node 2 won %d\n", RACE_TRIES, won[0],
            won[1]);
}

/* A node SIGKILLed with the account's session: logins are refused until session_ttl passes. */
static void test_dead_node_stops_refusing(void **state)
{
    nodes_in_mode("refuse", NULL, SESSION_TTL_S);
    struct h_user a;
    new_user(&a, "xdead");
    struct qclient *on_b = login_ok(NODE_B, &a, NULL, false);
    wait_registry(&a, 1);
    expect_refused(NODE_A, &a, NULL, "a login on node 1 while node 2 holds the session");
    int64_t killed = h_now_ms();
    cl_node_kill(NODE_B);
    h_close(on_b);
    struct qclient *c = NULL;
    int64_t err = -1;
    while (h_now_ms() - killed < DEAD_WAIT_MS) {
        c = send_login(NODE_A, &a, NULL, false);
        err = login_errno(c, "a login on node 1 after node 2 died");
        if (err == 0)
            break;
        H_CHECK(err == QC_ERESERVED2, "want errno 0 or 2, got %lld", (long long)err);
        h_close(c);
        c = NULL;
        h_sleep_ms(DEAD_POLL_MS);
    }
    int64_t took = h_now_ms() - killed;
    H_CHECK(err == 0, "logins still refused %lld ms after node 2 died (session_ttl %d s)",
            (long long)took, SESSION_TTL_S);
    fprintf(stderr, "dead node: the login on node 1 succeeded %lld ms after node 2's SIGKILL\n",
            (long long)took);
    H_CHECK(took >= 1000,
            "a login succeeded %lld ms after the kill: the dead node's session "
            "never counted?",
            (long long)took);
    h_close(c);
    H_CHECK(cl_node_start(NODE_B) == 0, "node 2 did not start again");
}

/* ---- multi ---------------------------------------------------------------- */

static void test_multi_chat_echo_read_presence_across_nodes(void **state)
{
    nodes_in_mode("multi", NULL, 0);
    struct h_user a, b, d, f;
    new_user(&a, "xma");
    new_user(&b, "xmb");
    new_user(&d, "xmd");
    new_user(&f, "xmf");
    struct qclient *cf = login_ok(NODE_A, &f, NULL, true);
    json_object_put(h_request(cf, QC_ADD_FRIEND_MSG, 0, "ADD_FRIEND", "\"friendid\":%d", a.id));
    struct qclient *cb = login_ok(NODE_A, &b, NULL, false);
    struct qclient *cd = login_ok(NODE_B, &d, NULL, false);
    struct qclient *phone = login_ok(NODE_A, &a, "phone", false);
    struct qclient *laptop = login_ok(NODE_B, &a, "laptop", false);
    wait_registry(&a, 2);
    H_CHECK(cl_wait_numsub(a.id, 2, SUB_WAIT_MS), "both nodes subscribe user %d: NUMSUB %ld", a.id,
            cl_numsub(a.id));
    /* Friend f sees a come online (twice, once per session: no offline in between). */
    for (int i = 0; i < 2; i++) {
        struct json_object *p = h_expect_skip(cf, QC_PRESENCE_MSG, "a online");
        H_CHECK(strcmp(h_str(p, "state"), "online") == 0, "presence: %s", h_json(p));
        json_object_put(p);
    }

    /* From node 1 and from node 2: both sessions get it. */
    int64_t c1 = chat(cb, a.id, "from b on node 1");
    expect_chat(phone, b.id, a.id, "from b on node 1", c1, "phone (node 1) gets b's chat");
    expect_chat(laptop, b.id, a.id, "from b on node 1", c1, "laptop (node 2) gets b's chat");
    int64_t c2 = chat(cd, a.id, "from d on node 2");
    expect_chat(phone, d.id, a.id, "from d on node 2", c2, "phone (node 1) gets d's chat");
    expect_chat(laptop, d.id, a.id, "from d on node 2", c2, "laptop (node 2) gets d's chat");

    /* a's own chat from the phone is echoed to the laptop on node 2. */
    int64_t c3 = chat(phone, b.id, "a's reply from the phone");
    expect_chat(cb, a.id, b.id, "a's reply from the phone", c3, "b gets a's reply");
    expect_chat(laptop, a.id, b.id, "a's reply from the phone", c3, "the echo on node 2");

    /* READ on the laptop is pushed to the phone on node 1. */
    json_object_put(h_request(laptop, QC_READ_MSG, 0, "READ on the laptop",
                              "\"with\":%d,\"cseq\":%lld", b.id, (long long)c3));
    struct json_object *r = h_expect(phone, QC_READ_MSG, "the READ pushed to node 1");
    H_CHECK(h_int(r, "with") == b.id && h_int(r, "cseq") == c3, "READ push: %s", h_json(r));
    json_object_put(r);
    h_expect_quiet(laptop, "the reader gets no push of its own READ");

    expect_devices(phone, (const char *[]){ "phone", "laptop" }, 2, "phone");
    expect_devices(laptop, (const char *[]){ "phone", "laptop" }, 2, "laptop");

    /* Presence: offline only when the last session anywhere ends. */
    h_close(phone);
    wait_registry(&a, 1);
    h_expect_quiet(cf, "no offline notice while a's laptop is online on node 2");
    h_close(laptop);
    struct json_object *p = h_expect_skip(cf, QC_PRESENCE_MSG, "a offline");
    H_CHECK(h_int(p, "id") == a.id && strcmp(h_str(p, "state"), "offline") == 0, "presence: %s",
            h_json(p));
    json_object_put(p);
    wait_registry(&a, 0);
    h_close(cb);
    h_close(cd);
    h_close(cf);
}

static void test_multi_max_devices_counts_both_nodes(void **state)
{
    nodes_in_mode("multi", "session.max_devices=" STR(MULTI_MAX), 0);
    struct h_user a;
    new_user(&a, "xmax");
    struct qclient *s1 = login_ok(NODE_A, &a, "one", false);
    wait_registry(&a, 1);
    struct qclient *s2 = login_ok(NODE_B, &a, "two", false);
    wait_registry(&a, 2);
    struct qclient *s3 = login_ok(NODE_A, &a, "three", false);
    expect_kicked(s1, "the oldest session (node 1) beyond max_devices=2");
    wait_registry(&a, 2);
    h_expect_quiet(s2, "the second session stays");
    struct qclient *s4 = login_ok(NODE_A, &a, "four", false);
    expect_kicked(s2, "the oldest session, now on node 2, beyond max_devices=2");
    h_expect_quiet(s3, "the third session stays");
    expect_devices(s4, (const char *[]){ "three", "four" }, 2, "four");
    /* The same device on the other node replaces it there. */
    struct qclient *s5 = login_ok(NODE_B, &a, "three", false);
    expect_kicked(s3, "device three on node 1 after device three logged in on node 2");
    h_expect_quiet(s4, "device four stays");
    expect_devices(s5, (const char *[]){ "three", "four" }, 2, "three");
    h_close(s4);
    h_close(s5);
    wait_registry(&a, 0);
}

/* MULTI_MAX + 1 logins at once, on both nodes: MULTI_MAX stay. */
static void test_multi_race_leaves_max(void **state)
{
    nodes_in_mode("multi", "session.max_devices=" STR(MULTI_MAX), 0);
    struct h_user a;
    new_user(&a, "xmr");
    for (int t = 1; t <= RACE_TRIES; t++) {
        struct qclient *c[MULTI_RACERS];
        bool kicked[MULTI_RACERS] = { false }, acked[MULTI_RACERS] = { false };
        char dev[MULTI_RACERS][16];
        for (int i = 0; i < MULTI_RACERS; i++) {
            snprintf(dev[i], sizeof dev[i], "d%d", i);
            c[i] = h_connect_to(port_of(i % CL_NODES));
        }
        for (int i = 0; i < MULTI_RACERS; i++)
            h_send(c[i], "{\"msgid\":1,\"id\":%d,\"password\":%s,\"device\":%s,\"seq\":%lld}", a.id,
                   h_q(a.password), h_q(dev[i]), (long long)h_next_seq());
        int64_t deadline = h_now_ms() + RACE_SETTLE_MS;
        while (h_now_ms() < deadline) {
            for (int i = 0; i < MULTI_RACERS; i++) {
                if (kicked[i])
                    continue;
                struct json_object *o = qclient_recv(c[i], RACE_READ_MS);
                if (o == NULL) {
                    kicked[i] = kicked[i] || qclient_eof(c[i]);
                    continue;
                }
                if (h_int(o, "msgid") == QC_LOGIN_MSG_ACK) {
                    H_CHECK(h_int(o, "errno") == 0, "try %d: login %d: %s", t, i, h_json(o));
                    acked[i] = true;
                } else if (h_int(o, "msgid") == QC_KICK_MSG) {
                    kicked[i] = true;
                }
                json_object_put(o);
            }
        }
        int alive = 0;
        for (int i = 0; i < MULTI_RACERS; i++)
            alive += acked[i] && !kicked[i];
        H_CHECK(alive == MULTI_MAX,
                "try %d: %d logins at once with max_devices=%d left %d sessions", t, MULTI_RACERS,
                MULTI_MAX, alive);
        H_CHECK(cl_registry_len(a.id) == MULTI_MAX, "try %d: the registry holds %ld, want %d", t,
                cl_registry_len(a.id), MULTI_MAX);
        for (int i = 0; i < MULTI_RACERS; i++)
            h_close(c[i]);
        wait_registry(&a, 0);
    }
}

/* Last: the nodes back in the default mode, clean. */
static void test_nodes_back_to_takeover(void **state)
{
    cl_node_opts[0] = NULL;
    for (int i = 0; i < CL_NODES; i++) {
        cl_node_stop(i);
        H_CHECK(cl_node_start(i) == 0, "node %d did not start", i + 1);
        H_CHECK(cl_sanitizer_lines(i) == 0, "node %d logged a sanitizer report", i + 1);
    }
}

int main(void)
{
    h_apply_filter(); /* H_FILTER=pattern runs the matching tests only */
    const struct CMUnitTest tests[] = {
        CL_TEST(test_refuse_across_nodes),
        CL_TEST(test_refuse_race_leaves_one),
        CL_TEST(test_dead_node_stops_refusing),
        CL_TEST(test_multi_chat_echo_read_presence_across_nodes),
        CL_TEST(test_multi_max_devices_counts_both_nodes),
        CL_TEST(test_multi_race_leaves_max),
        CL_TEST(test_nodes_back_to_takeover),
    };
    return cmocka_run_group_tests(tests, cl_group_setup, cl_group_teardown);
}
