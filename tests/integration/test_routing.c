/*
 * test_routing.c - message routing inside one qchatd node with 4 workers:
 * offline storage (order, exact form, deleted after delivery), fallback to
 * storage when the session is gone, 200 users spread across the workers
 * each chatting to another (every message delivered exactly once, in
 * order), group fan-out across workers, and takeover across workers.
 * Which worker holds a user is read from the control socket.
 */
#include "harness.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OFFLINE_MSGS   60 /* interleaved one-to-one and group messages */
#define MANY_USERS     200
#define MSGS_PER_USER  5
#define GROUP_MEMBERS  30
#define GROUP_OFFLINE  5 /* members logged out while the group chats */
#define GROUP_SENDERS  3
#define GROUP_MSGS     3 /* per sender */
#define TAKEOVER_CONNS 16
#define CTL_MAX_USERS  8192

static int32_t ctl_ids[CTL_MAX_USERS];
static int ctl_workers[CTL_MAX_USERS];

/* Worker of each user from one control-socket snapshot (-1: not online). */
static void workers_of(const struct h_user *users, int n, int *out)
{
    int m = h_ctl_users(ctl_ids, ctl_workers, CTL_MAX_USERS);
    H_CHECK(m >= 0, "control socket {\"cmd\":\"users\"} failed");
    for (int i = 0; i < n; i++) {
        out[i] = -1;
        for (int j = 0; j < m; j++)
            if (ctl_ids[j] == users[i].id)
                out[i] = ctl_workers[j];
    }
}

static int64_t send_chat(struct qclient *c, int32_t toid, const char *text)
{
    int64_t seq = h_next_seq();
    h_send(c, "{\"msgid\":5,\"toid\":%d,\"msg\":%s,\"seq\":%lld}", toid, h_q(text), (long long)seq);
    return seq;
}

static int64_t ack_mid(struct qclient *c, int req, int64_t seq, const char *what)
{
    struct json_object *ack = h_expect_ack(c, req, seq, 0, what);
    int64_t mid = h_int(ack, "mid");
    json_object_put(ack);
    return mid;
}

/* The ACK of seq; pushes received before it stay queued for later reads. */
static int64_t ack_mid_among_pushes(struct qclient *c, int req, int64_t seq, const char *what)
{
    struct json_object *ack = qclient_recv_msgid(c, QC_ACK_MSG, H_REPLY_MS);
    H_CHECK(ack != NULL, "%s: no ACK within %d ms", what, H_REPLY_MS);
    H_CHECK(h_has(ack, "seq") && h_int(ack, "seq") == seq && h_int(ack, "errno") == 0 &&
                h_int(ack, "req") == req,
            "%s: want ACK errno 0 seq %lld, got %s", what, (long long)seq, h_json(ack));
    int64_t mid = h_int(ack, "mid");
    json_object_put(ack);
    return mid;
}

/* ---- offline storage -------------------------------------------------- */

static void test_offline_messages_in_order_then_gone(void **state)
{
    struct h_user a1, a2, b;
    struct qclient *c1 = h_new_user(&a1, "oa1");
    struct qclient *c2 = h_new_user(&a2, "oa2");
    struct qclient *cb = h_new_user(&b, "ob");
    struct json_object *ack = h_request(c1, QC_CREATE_GROUP_MSG, 0, "CREATE_GROUP",
                                        "\"groupname\":%s,\"groupdesc\":\"\"", h_q(a1.name));
    int32_t gid = (int32_t)h_int(ack, "groupid");
    json_object_put(ack);
    json_object_put(h_request(c2, QC_ADD_GROUP_MSG, 0, "ADD_GROUP", "\"groupid\":%d", gid));
    json_object_put(h_request(cb, QC_ADD_GROUP_MSG, 0, "ADD_GROUP", "\"groupid\":%d", gid));
    h_close(cb);
    H_CHECK(h_wait_online(b.id, false, H_REPLY_MS), "B still online %d ms after closing",
            H_REPLY_MS);

    /* what B should find, in order: the exact objects a live recipient gets */
    struct json_object *expected[OFFLINE_MSGS];
    for (int k = 0; k < OFFLINE_MSGS; k++) {
        char text[64];
        snprintf(text, sizeof(text), "offline #%d", k);
        if (k % 3 == 2) {
            int64_t seq = h_next_seq();
            h_send(c1, "{\"msgid\":9,\"groupid\":%d,\"msg\":%s,\"seq\":%lld}", gid, h_q(text),
                   (long long)seq);
            int64_t mid = ack_mid(c1, QC_GROUP_CHAT_MSG, seq, "group chat to an offline member");
            expected[k] = h_expect(c2, QC_GROUP_CHAT_MSG, "online member gets the group chat");
            H_CHECK(h_int(expected[k], "mid") == mid, "mid of the live copy: %s",
                    h_json(expected[k]));
        } else {
            struct qclient *c = k % 3 == 0 ? c1 : c2;
            const struct h_user *from = k % 3 == 0 ? &a1 : &a2;
            int64_t seq = send_chat(c, b.id, text);
            int64_t mid = ack_mid(c, QC_ONE_CHAT_MSG, seq, "chat to an offline user");
            expected[k] = json_object_new_object();
            json_object_object_add(expected[k], "msgid", json_object_new_int(QC_ONE_CHAT_MSG));
            json_object_object_add(expected[k], "id", json_object_new_int(from->id));
            json_object_object_add(expected[k], "name", json_object_new_string(from->name));
            json_object_object_add(expected[k], "toid", json_object_new_int(b.id));
            json_object_object_add(expected[k], "msg", json_object_new_string(text));
            json_object_object_add(expected[k], "mid", json_object_new_int64(mid));
        }
    }

    struct json_object *lb = NULL;
    cb = h_login(&b, &lb);
    size_t n = h_arr_len_opt(lb, "offlinemsg");
    H_CHECK(n == OFFLINE_MSGS, "LOGIN: want %d offline messages, got %zu", OFFLINE_MSGS, n);
    int64_t last_ts = 0;
    for (int k = 0; k < OFFLINE_MSGS; k++) {
        struct json_object *m = h_parse_item(h_arr(lb, "offlinemsg"), (size_t)k, "offlinemsg");
        h_check_time_fields(m);
        H_CHECK(h_int(m, "ts") >= last_ts, "offline messages oldest first (ts): %s", h_json(m));
        last_ts = h_int(m, "ts");
        if (k % 3 == 2) {
            H_CHECK(json_object_equal(m, expected[k]),
                    "offline group message %d must be exactly what was forwarded:\n"
                    "  live:    %s\n  offline: %s",
                    k, h_json(expected[k]), h_json(m));
        } else {
            json_object_object_foreach(expected[k], key, val)
            {
                struct json_object *got = json_object_object_get(m, key);
                H_CHECK(got != NULL && json_object_equal(got, val),
                        "offline message %d: field %s must be %s: %s", k, key, h_json(val),
                        h_json(m));
            }
            H_CHECK(!h_has(m, "seq"), "stored message must not keep the sender's seq: %s",
                    h_json(m));
        }
        json_object_put(m);
        json_object_put(expected[k]);
    }
    json_object_put(lb);
    h_expect_quiet(cb, "nothing delivered twice after the login");

    /* delivered, then gone */
    h_close(cb);
    H_CHECK(h_wait_online(b.id, false, H_REPLY_MS), "B offline after close");
    cb = h_login(&b, &lb);
    H_CHECK(h_arr_len_opt(lb, "offlinemsg") == 0, "offline messages are deleted once delivered: %s",
            h_json(lb));
    json_object_put(lb);
}

static void test_offline_when_session_closed(void **state)
{
    struct h_user a, b;
    struct qclient *ca = h_new_user(&a, "sa");
    struct qclient *cb = h_new_user(&b, "sb");
    h_close(cb);
    H_CHECK(h_wait_online(b.id, false, H_REPLY_MS),
            "a user whose connection closed must leave the online table within %d ms", H_REPLY_MS);
    int64_t seq = send_chat(ca, b.id, "after you left");
    int64_t mid = ack_mid(ca, QC_ONE_CHAT_MSG, seq, "chat to a user who just disconnected");
    struct json_object *lb = NULL;
    cb = h_login(&b, &lb);
    H_CHECK(h_arr_len_opt(lb, "offlinemsg") == 1, "the chat was stored: %s", h_json(lb));
    struct json_object *m = h_parse_item(h_arr(lb, "offlinemsg"), 0, "offlinemsg");
    H_CHECK(h_int(m, "mid") == mid && strcmp(h_str(m, "msg"), "after you left") == 0,
            "stored chat: %s", h_json(m));
    json_object_put(m);
    json_object_put(lb);
}

/* ---- many users across workers ---------------------------------------- */

static void test_200_users_across_workers_all_delivered(void **state)
{
    static struct h_user users[MANY_USERS];
    static struct qclient *conns[MANY_USERS];
    static int worker[MANY_USERS];
    static int64_t seqs[MANY_USERS][MSGS_PER_USER];

    /* connect in a burst so the kernel spreads the accepts, then log in */
    for (int i = 0; i < MANY_USERS; i++)
        conns[i] = h_connect();
    for (int i = 0; i < MANY_USERS; i++) {
        h_register(conns[i], &users[i], "many");
        struct json_object *ack = NULL;
        int rc = qclient_login(conns[i], users[i].id, users[i].password, false, &ack, H_REPLY_MS);
        H_CHECK(rc == 0, "LOGIN user %d of %d: rc %d %s", i, MANY_USERS, rc, h_json(ack));
        json_object_put(ack);
    }
    workers_of(users, MANY_USERS, worker);
    int per_worker[64] = { 0 }, used = 0;
    for (int i = 0; i < MANY_USERS; i++) {
        H_CHECK(worker[i] >= 0 && worker[i] < 64,
                "user %d (%d) logged in but not listed online "
                "by the control socket",
                i, users[i].id);
        if (per_worker[worker[i]]++ == 0)
            used++;
    }
    print_message("200 users per worker:");
    for (int w = 0; w < H_WORKERS; w++)
        print_message(" w%d=%d", w, per_worker[w]);
    print_message("\n");
    H_CHECK(used > 1, "all %d users are on one worker: accepts are not spread over the %d workers",
            MANY_USERS, H_WORKERS);

    /* everyone sends to the next user, all requests first */
    int cross = 0;
    for (int k = 0; k < MSGS_PER_USER; k++) {
        for (int i = 0; i < MANY_USERS; i++) {
            int to = (i + 1) % MANY_USERS;
            char text[64];
            snprintf(text, sizeof(text), "m %d %d", i, k);
            seqs[i][k] = send_chat(conns[i], users[to].id, text);
            cross += k == 0 && worker[i] != worker[to];
        }
    }
    print_message("pairs across workers: %d of %d\n", cross, MANY_USERS);

    /* each user: its acks, then exactly the messages of the previous user, in order */
    for (int i = 0; i < MANY_USERS; i++) {
        int from = (i + MANY_USERS - 1) % MANY_USERS, acks = 0, got = 0;
        while (acks < MSGS_PER_USER || got < MSGS_PER_USER) {
            struct json_object *o = qclient_recv(conns[i], H_REPLY_MS);
            if (o == NULL)
                H_FAIL("user %d (worker %d): after %d acks and %d of %d messages from user %d "
                       "(worker %d), nothing more: %s",
                       i, worker[i], acks, got, MSGS_PER_USER, from, worker[from],
                       qclient_eof(conns[i]) ? "EOF" : strerror(errno));
            int64_t msgid = h_int(o, "msgid");
            if (msgid == QC_ACK_MSG) {
                int64_t seq = h_has(o, "seq") ? h_int(o, "seq") : -1;
                int k = 0;
                while (k < MSGS_PER_USER && seqs[i][k] != seq)
                    k++;
                H_CHECK(k < MSGS_PER_USER && h_int(o, "errno") == 0,
                        "user %d: want an ACK errno 0 for one of its chats, got %s", i, h_json(o));
                seqs[i][k] = -1; /* each ACK once */
                acks++;
            } else {
                char want[64];
                snprintf(want, sizeof(want), "m %d %d", from, got);
                H_CHECK(msgid == QC_ONE_CHAT_MSG && got < MSGS_PER_USER &&
                            h_int(o, "id") == users[from].id && strcmp(h_str(o, "msg"), want) == 0,
                        "user %d: message %d must be \"%s\" from %d (each once, in order), got %s",
                        i, got, want, users[from].id, h_json(o));
                got++;
            }
            json_object_put(o);
        }
    }
    for (int i = 0; i < MANY_USERS; i++)
        h_expect_quiet(conns[i], "no duplicate or stray message");
    for (int i = 0; i < MANY_USERS; i++)
        h_close(conns[i]);
}

static void test_group_fanout_across_workers(void **state)
{
    static struct h_user m[GROUP_MEMBERS];
    static struct qclient *c[GROUP_MEMBERS];
    static int worker[GROUP_MEMBERS];
    static int64_t mids[GROUP_SENDERS * GROUP_MSGS];

    for (int i = 0; i < GROUP_MEMBERS; i++)
        c[i] = h_connect();
    for (int i = 0; i < GROUP_MEMBERS; i++) {
        h_register(c[i], &m[i], "gm");
        struct json_object *ack = NULL;
        H_CHECK(qclient_login(c[i], m[i].id, m[i].password, false, &ack, H_REPLY_MS) == 0,
                "LOGIN member %d", i);
        json_object_put(ack);
    }
    struct json_object *ack =
        h_request(c[0], QC_CREATE_GROUP_MSG, 0, "CREATE_GROUP",
                  "\"groupname\":%s,\"groupdesc\":\"fanout\"", h_q(m[0].name));
    int32_t gid = (int32_t)h_int(ack, "groupid");
    json_object_put(ack);
    for (int i = 1; i < GROUP_MEMBERS; i++)
        json_object_put(h_request(c[i], QC_ADD_GROUP_MSG, 0, "ADD_GROUP", "\"groupid\":%d", gid));
    workers_of(m, GROUP_MEMBERS, worker);
    /* the last GROUP_OFFLINE members leave */
    for (int i = GROUP_MEMBERS - GROUP_OFFLINE; i < GROUP_MEMBERS; i++)
        json_object_put(h_request(c[i], QC_LOGINOUT_MSG, 0, "LOGINOUT", "%s", ""));

    /* senders 0..GROUP_SENDERS-1 take turns */
    for (int k = 0; k < GROUP_SENDERS * GROUP_MSGS; k++) {
        int s = k % GROUP_SENDERS;
        int64_t seq = h_next_seq();
        h_send(c[s], "{\"msgid\":9,\"groupid\":%d,\"msg\":\"g%d\",\"seq\":%lld}", gid, k,
               (long long)seq);
        mids[k] = ack_mid_among_pushes(c[s], QC_GROUP_CHAT_MSG, seq, "group chat");
    }
    /* every online member: all messages of the others, in order, once */
    for (int i = 0; i < GROUP_MEMBERS - GROUP_OFFLINE; i++) {
        for (int k = 0; k < GROUP_SENDERS * GROUP_MSGS; k++) {
            int s = k % GROUP_SENDERS;
            if (s == i)
                continue;
            char what[128], text[16];
            snprintf(what, sizeof(what), "member %d (worker %d) gets g%d from %d (worker %d)", i,
                     worker[i], k, s, worker[s]);
            struct json_object *o = h_expect(c[i], QC_GROUP_CHAT_MSG, what);
            snprintf(text, sizeof(text), "g%d", k);
            H_CHECK(h_int(o, "mid") == mids[k] && strcmp(h_str(o, "msg"), text) == 0 &&
                        h_int(o, "userid") == m[s].id,
                    "%s: got %s", what, h_json(o));
            json_object_put(o);
        }
        h_expect_quiet(c[i], "no group message twice, none of one's own");
    }
    /* offline members: all of them, in order */
    for (int i = GROUP_MEMBERS - GROUP_OFFLINE; i < GROUP_MEMBERS; i++) {
        struct json_object *la = NULL;
        H_CHECK(qclient_login(c[i], m[i].id, m[i].password, false, &la, H_REPLY_MS) == 0,
                "offline member %d logs in", i);
        H_CHECK(h_arr_len_opt(la, "offlinemsg") == GROUP_SENDERS * GROUP_MSGS,
                "offline member %d: want %d stored group messages: %s", i,
                GROUP_SENDERS * GROUP_MSGS, h_json(la));
        for (int k = 0; k < GROUP_SENDERS * GROUP_MSGS; k++) {
            struct json_object *o = h_parse_item(h_arr(la, "offlinemsg"), (size_t)k, "offlinemsg");
            H_CHECK(h_int(o, "mid") == mids[k], "offline member %d: message %d in order: %s", i, k,
                    h_json(o));
            json_object_put(o);
        }
        json_object_put(la);
    }
    for (int i = 0; i < GROUP_MEMBERS; i++)
        h_close(c[i]);
}

/* ---- takeover across workers ---------------------------------------- */

static void test_takeover_across_workers(void **state)
{
    struct h_user a, b;
    struct qclient *cb = h_new_user(&b, "xb");
    h_new_offline_user(&a, "xa");
    struct qclient *conns[TAKEOVER_CONNS];
    for (int i = 0; i < TAKEOVER_CONNS; i++)
        conns[i] = h_connect();

    int prev_worker = -1, cross = 0, same = 0;
    for (int i = 0; i < TAKEOVER_CONNS; i++) {
        struct json_object *ack = NULL;
        int rc = qclient_login(conns[i], a.id, a.password, false, &ack, H_REPLY_MS);
        H_CHECK(rc == 0, "takeover %d: LOGIN: rc %d %s", i, rc, h_json(ack));
        json_object_put(ack);
        if (i > 0) {
            struct json_object *k = h_next(conns[i - 1], "old session after takeover");
            H_CHECK(h_int(k, "msgid") == QC_KICK_MSG, "takeover %d: old session wants KICK, got %s",
                    i, h_json(k));
            json_object_put(k);
            h_expect_eof(conns[i - 1], "old session closed after KICK");
        }
        int n = h_ctl_users(ctl_ids, ctl_workers, CTL_MAX_USERS), listed = 0, w = -1;
        for (int j = 0; j < n; j++)
            if (ctl_ids[j] == a.id) {
                listed++;
                w = ctl_workers[j];
            }
        H_CHECK(listed == 1, "takeover %d: user listed %d times online", i, listed);
        if (i > 0 && w == prev_worker)
            same++;
        else if (i > 0)
            cross++;
        prev_worker = w;

        char text[32];
        snprintf(text, sizeof(text), "to session %d", i);
        int64_t seq = send_chat(cb, a.id, text);
        int64_t mid = ack_mid(cb, QC_ONE_CHAT_MSG, seq, "chat to the newest session");
        struct json_object *m = h_expect(conns[i], QC_ONE_CHAT_MSG, "newest session receives");
        H_CHECK(h_int(m, "mid") == mid && strcmp(h_str(m, "msg"), text) == 0,
                "takeover %d (worker %d): got %s", i, w, h_json(m));
        json_object_put(m);
    }
    print_message("takeovers: %d across workers, %d on the same worker\n", cross, same);
    H_CHECK(cross > 0, "no takeover happened across workers in %d tries (connections not spread)",
            TAKEOVER_CONNS - 1);
    for (int i = 0; i < TAKEOVER_CONNS; i++)
        h_close(conns[i]);
}

static int group_setup(void **state)
{
    return h_group_setup_with(NULL);
}

static void test_server_stops_cleanly(void **state)
{
    h_stop_and_check_clean();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        H_TEST(test_offline_messages_in_order_then_gone),
        H_TEST(test_offline_when_session_closed),
        H_TEST(test_200_users_across_workers_all_delivered),
        H_TEST(test_group_fanout_across_workers),
        H_TEST(test_takeover_across_workers),
        H_TEST(test_server_stops_cleanly),
    };
    h_apply_filter();
    return cmocka_run_group_tests_name("routing", tests, group_setup, h_group_teardown);
}
