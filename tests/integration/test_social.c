/*
 * test_social.c - friends with consent, blocking and group administration
 * (issue 12), black-box against one qchatd with [social] friend_consent =
 * yes: FRIEND_REQUEST 35 pushes, accept by ADD_FRIEND back, DECLINE 36,
 * FRIEND_LIST 30/31, FRIEND_REMOVE 32, BLOCK 33 / UNBLOCK 34, presence only
 * between friends, GROUP_MEMBERS 40/41, LEAVE 42 (hand-over, last member
 * deletes), KICK 43, ROLE 44, UPDATE 45, DELETE 46, GROUP_EVENT 47, the
 * limits.max_groups limit, every error path, and the seed client's flow.
 * Users that push to each other are put on different workers (h_worker_of),
 * so every push crosses a worker-to-worker link.  The last test restarts
 * the server with friend_consent = no.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NO_SUCH_ID  2147480000 /* an id no test run registers */
#define MAX_GROUPS  3          /* limits.max_groups for this server */
#define REPLY_CAP   4096       /* limits.max_login_reply_bytes for this server */
#define BIG_MEMBERS 12         /* members of each group in the login-size test */

static const char *const consent_yes[] = { "social.friend_consent=yes", "limits.max_groups=3",
                                           "limits.max_login_reply_bytes=4096", NULL };
static const char *const consent_no[] = { "social.friend_consent=no", NULL };

/* ---- helpers ---------------------------------------------------------- */

/* Two users with notices, on different workers. */
static void two_users(struct h_user *a, struct qclient **ca, struct h_user *b, struct qclient **cb,
                      const char *tag)
{
    struct h_user u[2];
    struct qclient *c[2];
    h_users_on_workers(u, c, 2, tag, true);
    *a = u[0];
    *ca = c[0];
    *b = u[1];
    *cb = c[1];
}

/* Three users with notices, on three different workers. */
static void three_users(struct h_user *u, struct qclient **c, const char *tag)
{
    h_users_on_workers(u, c, 3, tag, true);
}

/* Send a request with seq; the ACK is found among pushes that may come first. */
static void request_skip(struct qclient *c, int req, int err, const char *what, const char *body)
{
    int64_t seq = h_next_seq();
    h_send(c, "{\"msgid\":%d,%s%s\"seq\":%lld}", req, body, *body ? "," : "", (long long)seq);
    struct json_object *o = h_expect_skip(c, QC_ACK_MSG, what);
    H_CHECK(h_int(o, "seq") == seq && h_int(o, "req") == req && h_int(o, "errno") == err,
            "%s: want ACK req %d errno %d seq %lld, got %s", what, req, err, (long long)seq,
            h_json(o));
    json_object_put(o);
}

/* A request expected to fail with err (the generic ACK, request seq echoed). */
static void refused(struct qclient *c, int req, int err, const char *what, const char *fmt,
                    int32_t x, int32_t y)
{
    char body[256];
    snprintf(body, sizeof body, fmt, x, y);
    json_object_put(h_request(c, req, err, what, "%s", body));
}

static void ok(struct qclient *c, int req, const char *what, const char *fmt, int32_t x, int32_t y)
{
    refused(c, req, 0, what, fmt, x, y);
}

/* A list request (30 or 40) answered by its own reply (31 or 41) echoing seq. */
static struct json_object *list_reply(struct qclient *c, int req, int reply, const char *body)
{
    int64_t seq = h_next_seq();
    h_send(c, "{\"msgid\":%d,%s%s\"seq\":%lld}", req, body, *body ? "," : "", (long long)seq);
    struct json_object *o = h_expect_skip(c, reply, "list reply");
    H_CHECK(h_int(o, "errno") == 0 && h_int(o, "seq") == seq,
            "list reply: want errno 0, seq %lld: %s", (long long)seq, h_json(o));
    return o;
}

/* The object of array key in o whose "id" is id, or NULL. */
static struct json_object *find_id(struct json_object *o, const char *key, int32_t id)
{
    struct json_object *a = h_arr(o, key);
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        struct json_object *it = json_object_array_get_idx(a, i);
        H_CHECK(json_object_is_type(it, json_type_object), "%s items must be objects: %s", key,
                h_json(o));
        if (h_int(it, "id") == id)
            return it;
    }
    return NULL;
}

static size_t arr_len(struct json_object *o, const char *key)
{
    return json_object_array_length(h_arr(o, key));
}

static struct json_object *friend_list(struct qclient *c)
{
    return list_reply(c, QC_FRIEND_LIST_MSG, QC_FRIEND_LIST_MSG_ACK, "");
}

static struct json_object *members(struct qclient *c, int32_t gid)
{
    char body[64];
    snprintf(body, sizeof body, "\"groupid\":%d", gid);
    struct json_object *o = list_reply(c, QC_GROUP_MEMBERS_MSG, QC_GROUP_MEMBERS_MSG_ACK, body);
    H_CHECK(h_int(o, "groupid") == gid, "41 names its group: %s", h_json(o));
    return o;
}

static const char *role_of(struct json_object *m, int32_t id)
{
    struct json_object *u = find_id(m, "users", id);
    H_CHECK(u != NULL, "user %d not among the members: %s", id, h_json(m));
    return h_str(u, "role");
}

static int32_t create_group(struct qclient *c, const char *tag)
{
    char name[H_NAME_LEN];
    h_unique_name(name, sizeof name, tag);
    struct json_object *ack = h_request(c, QC_CREATE_GROUP_MSG, 0, "CREATE_GROUP",
                                        "\"groupname\":%s,\"groupdesc\":\"d\"", h_q(name));
    int32_t gid = (int32_t)h_int(ack, "groupid");
    json_object_put(ack);
    H_CHECK(gid > 0, "CREATE_GROUP gives a group id");
    return gid;
}

/* The next GROUP_EVENT_MSG on c must be (gid, event, userid, by). */
static void expect_event(struct qclient *c, int32_t gid, const char *event, int32_t userid,
                         int32_t by)
{
    struct json_object *e = h_expect_skip(c, QC_GROUP_EVENT_MSG, event);
    H_CHECK(h_int(e, "groupid") == gid && strcmp(h_str(e, "event"), event) == 0 &&
                h_int(e, "userid") == userid && h_int(e, "by") == by,
            "want event {groupid %d, event %s, userid %d, by %d}, got %s", gid, event, userid, by,
            h_json(e));
    json_object_put(e);
}

static void expect_presence(struct qclient *c, int32_t id, const char *state)
{
    struct json_object *p = h_expect_skip(c, QC_PRESENCE_MSG, "presence");
    H_CHECK(h_int(p, "id") == id && strcmp(h_str(p, "state"), state) == 0,
            "want presence of %d %s, got %s", id, state, h_json(p));
    json_object_put(p);
}

/* a and b become friends: a asks, b accepts. */
static void make_friends(struct qclient *ca, const struct h_user *a, struct qclient *cb,
                         const struct h_user *b)
{
    ok(ca, QC_ADD_FRIEND_MSG, "request", "\"friendid\":%d", b->id, 0);
    json_object_put(h_expect_skip(cb, QC_FRIEND_REQUEST_MSG, "request push"));
    char body[64];
    snprintf(body, sizeof body, "\"friendid\":%d", a->id);
    request_skip(cb, QC_ADD_FRIEND_MSG, 0, "accept", body);
    expect_presence(ca, b->id, QC_STATE_ONLINE);
    expect_presence(cb, a->id, QC_STATE_ONLINE);
}

/* ---- friends ------------------------------------------------------------ */

static void test_friend_request_and_accept(void **state)
{
    struct h_user a, b;
    struct qclient *ca, *cb;
    two_users(&a, &ca, &b, &cb, "fr");
    ok(ca, QC_ADD_FRIEND_MSG, "ADD_FRIEND asks", "\"friendid\":%d", b.id, 0);
    struct json_object *p = h_expect(cb, QC_FRIEND_REQUEST_MSG, "FRIEND_REQUEST push");
    H_CHECK(h_int(p, "id") == a.id && strcmp(h_str(p, "name"), a.name) == 0,
            "push 35 names the requester: %s", h_json(p));
    json_object_put(p);
    ok(ca, QC_ADD_FRIEND_MSG, "asking again is idempotent", "\"friendid\":%d", b.id, 0);
    json_object_put(h_expect(cb, QC_FRIEND_REQUEST_MSG, "repeated push"));

    struct json_object *la = friend_list(ca), *lb = friend_list(cb);
    H_CHECK(arr_len(la, "friends") == 0 && find_id(la, "requests_out", b.id) &&
                arr_len(la, "requests_in") == 0 && arr_len(la, "blocked") == 0,
            "requester's list: %s", h_json(la));
    H_CHECK(arr_len(lb, "friends") == 0 && find_id(lb, "requests_in", a.id) &&
                strcmp(h_str(find_id(lb, "requests_in", a.id), "name"), a.name) == 0,
            "target's list: %s", h_json(lb));
    json_object_put(la);
    json_object_put(lb);

    /* Not friends yet: no presence flows. */
    h_expect_quiet(ca, "no presence before acceptance");

    char body[64];
    snprintf(body, sizeof body, "\"friendid\":%d", a.id);
    request_skip(cb, QC_ADD_FRIEND_MSG, 0, "accept by asking back", body);
    expect_presence(ca, b.id, QC_STATE_ONLINE);
    expect_presence(cb, a.id, QC_STATE_ONLINE);
    la = friend_list(ca);
    struct json_object *f = find_id(la, "friends", b.id);
    H_CHECK(f && strcmp(h_str(f, "state"), QC_STATE_ONLINE) == 0 &&
                strcmp(h_str(f, "name"), b.name) == 0 && arr_len(la, "requests_out") == 0,
            "friends after acceptance, state online: %s", h_json(la));
    json_object_put(la);
    refused(ca, QC_ADD_FRIEND_MSG, QC_EALREADY, "already friends", "\"friendid\":%d", b.id, 0);
    refused(ca, QC_ADD_FRIEND_MSG, QC_ESELF, "self", "\"friendid\":%d", a.id, 0);
    refused(ca, QC_ADD_FRIEND_MSG, QC_ENOUSER, "no such user", "\"friendid\":%d", NO_SUCH_ID, 0);

    /* Presence now flows both ways: b leaves. */
    h_close(cb);
    expect_presence(ca, b.id, QC_STATE_OFFLINE);
    lb = NULL;
    la = friend_list(ca);
    H_CHECK(strcmp(h_str(find_id(la, "friends", b.id), "state"), QC_STATE_OFFLINE) == 0,
            "state offline once b left: %s", h_json(la));
    json_object_put(la);
}

static void test_friend_decline_and_remove(void **state)
{
    struct h_user a, b;
    struct qclient *ca, *cb;
    two_users(&a, &ca, &b, &cb, "fd");
    ok(ca, QC_ADD_FRIEND_MSG, "ask", "\"friendid\":%d", b.id, 0);
    json_object_put(h_expect(cb, QC_FRIEND_REQUEST_MSG, "push"));
    ok(cb, QC_FRIEND_DECLINE_MSG, "decline", "\"friendid\":%d", a.id, 0);
    refused(cb, QC_FRIEND_DECLINE_MSG, QC_ENOUSER, "nothing left to decline", "\"friendid\":%d",
            a.id, 0);
    refused(cb, QC_FRIEND_DECLINE_MSG, QC_EBADREQ, "decline without friendid", "\"x\":%d", 1, 0);
    struct json_object *la = friend_list(ca);
    H_CHECK(arr_len(la, "requests_out") == 0 && arr_len(la, "friends") == 0,
            "declined: gone from the requester's list: %s", h_json(la));
    json_object_put(la);

    make_friends(ca, &a, cb, &b);
    ok(ca, QC_FRIEND_REMOVE_MSG, "remove", "\"friendid\":%d", b.id, 0);
    struct json_object *lb = friend_list(cb);
    H_CHECK(arr_len(lb, "friends") == 0, "removed on both sides: %s", h_json(lb));
    json_object_put(lb);
    refused(ca, QC_FRIEND_REMOVE_MSG, QC_ENOUSER, "not friends any more", "\"friendid\":%d", b.id,
            0);
    refused(ca, QC_FRIEND_REMOVE_MSG, QC_EBADREQ, "friendid a string", "\"friendid\":\"%d\"", b.id,
            0);
    /* No presence between former friends. */
    h_close(cb);
    h_expect_quiet(ca, "no presence after removal");
}

static void test_block(void **state)
{
    struct h_user a, b;
    struct qclient *ca, *cb;
    two_users(&a, &ca, &b, &cb, "bl");
    make_friends(ca, &a, cb, &b);
    ok(ca, QC_BLOCK_MSG, "block", "\"userid\":%d", b.id, 0);
    refused(ca, QC_BLOCK_MSG, QC_EALREADY, "block twice", "\"userid\":%d", b.id, 0);
    refused(ca, QC_BLOCK_MSG, QC_ESELF, "block self", "\"userid\":%d", a.id, 0);
    refused(ca, QC_BLOCK_MSG, QC_ENOUSER, "block nobody", "\"userid\":%d", NO_SUCH_ID, 0);
    refused(ca, QC_BLOCK_MSG, QC_EBADREQ, "block without userid", "\"friendid\":%d", b.id, 0);

    struct json_object *la = friend_list(ca), *lb = friend_list(cb);
    H_CHECK(find_id(la, "blocked", b.id) && arr_len(la, "friends") == 0,
            "blocking ends the friendship and lists the block: %s", h_json(la));
    H_CHECK(arr_len(lb, "friends") == 0 && arr_len(lb, "blocked") == 0,
            "the blocked side loses the friend, blocks nobody: %s", h_json(lb));
    json_object_put(la);
    json_object_put(lb);

    /* Chats get 22 both ways, with seq (the ACK) and without (an error reply). */
    refused(cb, QC_ONE_CHAT_MSG, QC_EBLOCKED, "chat to the blocker", "\"toid\":%d,\"msg\":\"x%d\"",
            a.id, 0);
    refused(ca, QC_ONE_CHAT_MSG, QC_EBLOCKED, "chat to the blocked", "\"toid\":%d,\"msg\":\"x%d\"",
            b.id, 0);
    h_send(cb, "{\"msgid\":5,\"toid\":%d,\"msg\":\"no seq\"}", a.id);
    struct json_object *e = h_expect(cb, QC_ACK_MSG, "blocked chat without seq");
    H_CHECK(h_int(e, "errno") == QC_EBLOCKED, "want errno 22: %s", h_json(e));
    json_object_put(e);
    /* The blocked user's friend requests get 22, and so do the blocker's. */
    refused(cb, QC_ADD_FRIEND_MSG, QC_EBLOCKED, "request to the blocker", "\"friendid\":%d", a.id,
            0);
    refused(ca, QC_ADD_FRIEND_MSG, QC_EBLOCKED, "request to the blocked", "\"friendid\":%d", b.id,
            0);
    h_expect_quiet(ca, "no request pushed");

    /* Presence stops both ways. */
    h_close(cb);
    h_expect_quiet(ca, "no presence from a blocked user");
    cb = h_login_presence(&b, NULL);
    h_expect_quiet(ca, "still none at its login");
    /* Its new session learnt the block from the store (a list request orders after the load). */
    json_object_put(friend_list(cb));
    refused(cb, QC_ONE_CHAT_MSG, QC_EBLOCKED, "chat to the blocker after a new login",
            "\"toid\":%d,\"msg\":\"x%d\"", a.id, 1);

    ok(ca, QC_UNBLOCK_MSG, "unblock", "\"userid\":%d", b.id, 0);
    refused(ca, QC_UNBLOCK_MSG, QC_ENOUSER, "unblock twice", "\"userid\":%d", b.id, 0);
    refused(ca, QC_UNBLOCK_MSG, QC_EBADREQ, "unblock userid 0", "\"userid\":%d", 0, 0);
    la = friend_list(ca);
    H_CHECK(arr_len(la, "blocked") == 0 && arr_len(la, "friends") == 0,
            "unblocking does not restore the friendship: %s", h_json(la));
    json_object_put(la);
    ok(cb, QC_ONE_CHAT_MSG, "chat after unblock", "\"toid\":%d,\"msg\":\"y%d\"", a.id, 0);
    struct json_object *m = h_expect(ca, QC_ONE_CHAT_MSG, "the chat arrives");
    H_CHECK(h_int(m, "id") == b.id, "from b: %s", h_json(m));
    json_object_put(m);
    ok(cb, QC_ADD_FRIEND_MSG, "a request after unblock", "\"friendid\":%d", a.id, 0);
    json_object_put(h_expect(ca, QC_FRIEND_REQUEST_MSG, "request reaches a again"));
}

/* The seed's client asks for nothing: it gets no push, and both adding each other makes friends. */
static void test_seed_client_flow_with_consent(void **state)
{
    struct h_user a, b;
    h_new_offline_user(&a, "sa");
    h_new_offline_user(&b, "sb");
    struct qclient *ca = h_login(&a, NULL), *cb = h_login(&b, NULL);
    h_send(ca, "{\"msgid\":6,\"id\":%d,\"friendid\":%d}%c", a.id, b.id, '\0');
    h_send(cb, "{\"msgid\":6,\"id\":%d,\"friendid\":%d}%c", b.id, a.id, '\0');
    h_expect_quiet(ca, "seed client: nothing on success");
    h_expect_quiet(cb, "seed client: no push for a request");
    h_close(ca);
    struct json_object *ack = NULL;
    ca = h_login(&a, &ack);
    H_CHECK(h_arr_len_opt(ack, "friends") == 1, "the login's friends after both added: %s",
            h_json(ack));
    struct json_object *f = h_parse_item(h_arr(ack, "friends"), 0, "friend item");
    H_CHECK(h_int(f, "id") == b.id, "friend is b: %s", h_json(f));
    json_object_put(f);
    json_object_put(ack);
}

/* ---- groups ------------------------------------------------------------- */

static void test_group_members_and_roles(void **state)
{
    struct h_user a, b, x;
    struct qclient *ca, *cb;
    two_users(&a, &ca, &b, &cb, "gm");
    struct qclient *cx = h_new_user(&x, "gmx");
    int32_t gid = create_group(ca, "gm");
    ok(cb, QC_ADD_GROUP_MSG, "join", "\"groupid\":%d", gid, 0);
    expect_event(ca, gid, "joined", b.id, b.id);

    struct json_object *m = members(cb, gid);
    H_CHECK(arr_len(m, "users") == 2, "two members: %s", h_json(m));
    H_CHECK(strcmp(role_of(m, a.id), "creator") == 0 && strcmp(role_of(m, b.id), "normal") == 0,
            "roles: %s", h_json(m));
    H_CHECK(strcmp(h_str(find_id(m, "users", a.id), "state"), QC_STATE_ONLINE) == 0 &&
                strcmp(h_str(find_id(m, "users", a.id), "name"), a.name) == 0,
            "member state and name: %s", h_json(m));
    json_object_put(m);

    refused(cx, QC_GROUP_MEMBERS_MSG, QC_ENOTMEMBER, "members: not a member", "\"groupid\":%d", gid,
            0);
    refused(ca, QC_GROUP_MEMBERS_MSG, QC_ENOGROUP, "members: no such group", "\"groupid\":%d",
            NO_SUCH_ID, 0);
    refused(ca, QC_GROUP_MEMBERS_MSG, QC_EBADREQ, "members: no groupid", "\"gid\":%d", gid, 0);

    /* ROLE: creator only, "admin" or "normal". */
    refused(cb, QC_GROUP_ROLE_MSG, QC_ENOTALLOWED, "role by a normal member",
            "\"groupid\":%d,\"userid\":%d,\"role\":\"admin\"", gid, b.id);
    refused(ca, QC_GROUP_ROLE_MSG, QC_EBADREQ, "role boss",
            "\"groupid\":%d,\"userid\":%d,\"role\":\"boss\"", gid, b.id);
    refused(ca, QC_GROUP_ROLE_MSG, QC_EBADREQ, "role missing", "\"groupid\":%d,\"userid\":%d", gid,
            b.id);
    refused(ca, QC_GROUP_ROLE_MSG, QC_ENOTMEMBER, "role of a non-member",
            "\"groupid\":%d,\"userid\":%d,\"role\":\"admin\"", gid, x.id);
    refused(cx, QC_GROUP_ROLE_MSG, QC_ENOTMEMBER, "role by a non-member",
            "\"groupid\":%d,\"userid\":%d,\"role\":\"admin\"", gid, b.id);
    ok(ca, QC_GROUP_ROLE_MSG, "make b admin", "\"groupid\":%d,\"userid\":%d,\"role\":\"admin\"",
       gid, b.id);
    struct json_object *e = h_expect_skip(cb, QC_GROUP_EVENT_MSG, "role event");
    H_CHECK(strcmp(h_str(e, "event"), "role") == 0 && h_int(e, "userid") == b.id &&
                h_int(e, "by") == a.id && strcmp(h_str(e, "role"), "admin") == 0,
            "role event: %s", h_json(e));
    json_object_put(e);
    refused(ca, QC_GROUP_ROLE_MSG, QC_EALREADY, "admin twice",
            "\"groupid\":%d,\"userid\":%d,\"role\":\"admin\"", gid, b.id);
    refused(cb, QC_GROUP_ROLE_MSG, QC_ENOTALLOWED, "admin changes the creator",
            "\"groupid\":%d,\"userid\":%d,\"role\":\"normal\"", gid, a.id);
    m = members(ca, gid);
    H_CHECK(strcmp(role_of(m, b.id), "admin") == 0, "b is admin: %s", h_json(m));
    json_object_put(m);

    /* UPDATE: creator or admin; at least one field. */
    ok(cb, QC_GROUP_UPDATE_MSG, "admin renames", "\"groupid\":%d,\"groupdesc\":\"new desc %d\"",
       gid, 1);
    expect_event(ca, gid, "updated", b.id, b.id);
    refused(cx, QC_GROUP_UPDATE_MSG, QC_ENOTMEMBER, "update by a non-member",
            "\"groupid\":%d,\"groupdesc\":\"x%d\"", gid, 0);
    refused(ca, QC_GROUP_UPDATE_MSG, QC_EBADREQ, "update with nothing", "\"groupid\":%d", gid, 0);
    refused(ca, QC_GROUP_UPDATE_MSG, QC_ETOOLONG, "name too long",
            "\"groupid\":%d,\"groupname\":\"%0100d\"", gid, 0);
    refused(ca, QC_GROUP_UPDATE_MSG, QC_ENOGROUP, "update no group",
            "\"groupid\":%d,\"groupdesc\":\"x%d\"", NO_SUCH_ID, 0);
    ok(ca, QC_GROUP_ROLE_MSG, "b back to normal",
       "\"groupid\":%d,\"userid\":%d,\"role\":\"normal\"", gid, b.id);
    expect_event(cb, gid, "role", b.id, a.id);
    refused(cb, QC_GROUP_UPDATE_MSG, QC_ENOTALLOWED, "update by a normal member",
            "\"groupid\":%d,\"groupdesc\":\"x%d\"", gid, 0);
    h_expect_quiet(cx, "non-members get no group events");
}

static void test_group_kick(void **state)
{
    struct h_user u[3];
    struct qclient *k[3];
    three_users(u, k, "gk");
    struct h_user a = u[0], b = u[1], c = u[2];
    struct qclient *ca = k[0], *cb = k[1], *cc = k[2];
    int32_t gid = create_group(ca, "gk");
    ok(cb, QC_ADD_GROUP_MSG, "b joins", "\"groupid\":%d", gid, 0);
    expect_event(ca, gid, "joined", b.id, b.id);
    ok(cc, QC_ADD_GROUP_MSG, "c joins", "\"groupid\":%d", gid, 0);
    expect_event(ca, gid, "joined", c.id, c.id);
    expect_event(cb, gid, "joined", c.id, c.id);
    refused(cc, QC_ADD_GROUP_MSG, QC_EALREADY, "join twice", "\"groupid\":%d", gid, 0);

    refused(cb, QC_GROUP_KICK_MSG, QC_ENOTALLOWED, "normal kicks normal",
            "\"groupid\":%d,\"userid\":%d", gid, c.id);
    ok(ca, QC_GROUP_ROLE_MSG, "b admin", "\"groupid\":%d,\"userid\":%d,\"role\":\"admin\"", gid,
       b.id);
    expect_event(cb, gid, "role", b.id, a.id);
    expect_event(cc, gid, "role", b.id, a.id);
    refused(cb, QC_GROUP_KICK_MSG, QC_ENOTALLOWED, "admin kicks the creator",
            "\"groupid\":%d,\"userid\":%d", gid, a.id);
    refused(cb, QC_GROUP_KICK_MSG, QC_EBADREQ, "kick without userid", "\"groupid\":%d", gid, 0);
    refused(cb, QC_GROUP_KICK_MSG, QC_ENOGROUP, "kick in no group", "\"groupid\":%d,\"userid\":%d",
            NO_SUCH_ID, c.id);
    ok(cb, QC_GROUP_KICK_MSG, "admin kicks c", "\"groupid\":%d,\"userid\":%d", gid, c.id);
    expect_event(ca, gid, "kicked", c.id, b.id);
    expect_event(cc, gid, "kicked", c.id, b.id);

    /* A former member cannot post, list or be kicked again. */
    refused(cc, QC_GROUP_CHAT_MSG, QC_ENOTMEMBER, "former member posts",
            "\"groupid\":%d,\"msg\":\"hi%d\"", gid, 0);
    refused(cc, QC_GROUP_MEMBERS_MSG, QC_ENOTMEMBER, "former member lists", "\"groupid\":%d", gid,
            0);
    refused(cc, QC_HISTORY_MSG, QC_ENOTMEMBER, "former member reads the history", "\"groupid\":%d",
            gid, 0);
    refused(cb, QC_GROUP_KICK_MSG, QC_ENOTMEMBER, "kick a non-member",
            "\"groupid\":%d,\"userid\":%d", gid, c.id);
    refused(cc, QC_GROUP_KICK_MSG, QC_ENOTMEMBER, "kick by a non-member",
            "\"groupid\":%d,\"userid\":%d", gid, b.id);
    h_expect_quiet(cc, "no more events for the kicked user");
}

static void test_group_leave_hands_over_and_deletes(void **state)
{
    struct h_user u[3];
    struct qclient *k[3];
    three_users(u, k, "gl");
    struct h_user a = u[0], b = u[1], c = u[2];
    struct qclient *ca = k[0], *cb = k[1], *cc = k[2];
    int32_t gid = create_group(ca, "gl");
    ok(cb, QC_ADD_GROUP_MSG, "b joins", "\"groupid\":%d", gid, 0);
    ok(cc, QC_ADD_GROUP_MSG, "c joins", "\"groupid\":%d", gid, 0);
    expect_event(ca, gid, "joined", b.id, b.id);
    expect_event(ca, gid, "joined", c.id, c.id);
    ok(ca, QC_GROUP_ROLE_MSG, "c admin", "\"groupid\":%d,\"userid\":%d,\"role\":\"admin\"", gid,
       c.id);
    expect_event(cb, gid, "joined", c.id, c.id);
    expect_event(cb, gid, "role", c.id, a.id);

    /* The creator leaves: the oldest admin (c, though b joined first) becomes creator. */
    ok(ca, QC_GROUP_LEAVE_MSG, "creator leaves", "\"groupid\":%d", gid, 0);
    expect_event(cb, gid, "left", a.id, a.id);
    struct json_object *e = h_expect_skip(cb, QC_GROUP_EVENT_MSG, "hand-over");
    H_CHECK(strcmp(h_str(e, "event"), "role") == 0 && h_int(e, "userid") == c.id &&
                strcmp(h_str(e, "role"), "creator") == 0,
            "hand-over event: %s", h_json(e));
    json_object_put(e);
    struct json_object *m = members(cb, gid);
    H_CHECK(arr_len(m, "users") == 2 && strcmp(role_of(m, c.id), "creator") == 0 &&
                find_id(m, "users", a.id) == NULL,
            "c is creator, a gone: %s", h_json(m));
    json_object_put(m);
    refused(ca, QC_GROUP_LEAVE_MSG, QC_ENOTMEMBER, "leave twice", "\"groupid\":%d", gid, 0);
    refused(ca, QC_GROUP_LEAVE_MSG, QC_ENOGROUP, "leave no group", "\"groupid\":%d", NO_SUCH_ID, 0);

    expect_event(cc, gid, "role", c.id, a.id);
    expect_event(cc, gid, "left", a.id, a.id);
    expect_event(cc, gid, "role", c.id, a.id);
    /* The new creator leaves: the oldest remaining member, b. */
    ok(cc, QC_GROUP_LEAVE_MSG, "c leaves", "\"groupid\":%d", gid, 0);
    expect_event(cb, gid, "left", c.id, c.id);
    expect_event(cb, gid, "role", b.id, c.id);
    /* The last member leaves: the group is gone. */
    ok(cb, QC_GROUP_LEAVE_MSG, "last member leaves", "\"groupid\":%d", gid, 0);
    refused(cb, QC_GROUP_MEMBERS_MSG, QC_ENOGROUP, "deleted group", "\"groupid\":%d", gid, 0);
    refused(cb, QC_ADD_GROUP_MSG, QC_ENOGROUP, "join a deleted group", "\"groupid\":%d", gid, 0);
}

static void test_group_delete(void **state)
{
    struct h_user a, b;
    struct qclient *ca, *cb;
    two_users(&a, &ca, &b, &cb, "gd");
    int32_t gid = create_group(ca, "gd");
    ok(cb, QC_ADD_GROUP_MSG, "b joins", "\"groupid\":%d", gid, 0);
    expect_event(ca, gid, "joined", b.id, b.id);
    ok(ca, QC_GROUP_CHAT_MSG, "a message in its log", "\"groupid\":%d,\"msg\":\"x%d\"", gid, 0);
    json_object_put(h_expect_skip(cb, QC_GROUP_CHAT_MSG, "the chat"));
    ok(ca, QC_GROUP_ROLE_MSG, "b admin", "\"groupid\":%d,\"userid\":%d,\"role\":\"admin\"", gid,
       b.id);
    expect_event(cb, gid, "role", b.id, a.id);
    refused(cb, QC_GROUP_DELETE_MSG, QC_ENOTALLOWED, "admin deletes", "\"groupid\":%d", gid, 0);
    refused(ca, QC_GROUP_DELETE_MSG, QC_EBADREQ, "delete groupid 0", "\"groupid\":%d", 0, 0);
    ok(ca, QC_GROUP_DELETE_MSG, "creator deletes", "\"groupid\":%d", gid, 0);
    expect_event(cb, gid, "deleted", a.id, a.id);
    refused(ca, QC_GROUP_DELETE_MSG, QC_ENOGROUP, "delete twice", "\"groupid\":%d", gid, 0);
    refused(cb, QC_GROUP_MEMBERS_MSG, QC_ENOGROUP, "members of a deleted group", "\"groupid\":%d",
            gid, 0);
    int64_t seq = h_next_seq();
    h_send(cb, "{\"msgid\":9,\"groupid\":%d,\"msg\":\"late\",\"seq\":%lld}", gid, (long long)seq);
    struct json_object *r = h_expect(cb, QC_ACK_MSG, "post to a deleted group");
    H_CHECK(h_int(r, "errno") == QC_ENOGROUP || h_int(r, "errno") == QC_ENOTMEMBER,
            "post to a deleted group: want 10 or 11, got %s", h_json(r));
    json_object_put(r);
}

static void test_max_groups(void **state)
{
    struct h_user a, b;
    struct qclient *ca = h_new_user(&a, "mg"), *cb = h_new_user(&b, "mgb");
    int32_t other = create_group(cb, "mgb");
    for (int i = 0; i < MAX_GROUPS; i++)
        create_group(ca, "mg");
    char name[H_NAME_LEN];
    h_unique_name(name, sizeof name, "mg");
    json_object_put(h_request(ca, QC_CREATE_GROUP_MSG, QC_ELIMIT, "create over max_groups",
                              "\"groupname\":%s", h_q(name)));
    refused(ca, QC_ADD_GROUP_MSG, QC_ELIMIT, "join over max_groups", "\"groupid\":%d", other, 0);
    refused(ca, QC_CREATE_GROUP_MSG, QC_EBADREQ, "create without a name", "\"groupdesc\":\"x%d\"",
            0, 0);
}

/* The login's groups list (one query) stays within limits.max_login_reply_bytes. */
static void test_login_lists_within_reply_cap(void **state)
{
    struct h_user a, m;
    struct qclient *ca = h_new_user(&a, "cap");
    int32_t gid[MAX_GROUPS];
    for (int g = 0; g < MAX_GROUPS; g++) {
        char name[H_NAME_LEN];
        h_unique_name(name, sizeof name, "cap");
        struct json_object *ack = h_request(ca, QC_CREATE_GROUP_MSG, 0, "CREATE_GROUP",
                                            "\"groupname\":%s,\"groupdesc\":%s", h_q(name),
                                            h_q(h_fill('d', QC_GROUPDESC_MAX, "")));
        gid[g] = (int32_t)h_int(ack, "groupid");
        json_object_put(ack);
    }
    for (int i = 0; i < BIG_MEMBERS; i++) {
        struct qclient *cm = h_new_user(&m, "capmember_with_a_long_name");
        for (int g = 0; g < MAX_GROUPS; g++)
            ok(cm, QC_ADD_GROUP_MSG, "join", "\"groupid\":%d", gid[g], 0);
        h_close(cm);
    }
    h_close(ca);
    struct json_object *ack = NULL;
    ca = h_login(&a, &ack);
    size_t len = strlen(json_object_to_json_string_ext(ack, JSON_C_TO_STRING_PLAIN |
                                                                JSON_C_TO_STRING_NOSLASHESCAPE));
    size_t n = h_arr_len_opt(ack, "groups");
    H_CHECK(len <= REPLY_CAP, "login reply of %zu bytes over the cap %d", len, REPLY_CAP);
    H_CHECK(n >= 1 && n < MAX_GROUPS, "want some but not all %d groups within the cap, got %zu",
            MAX_GROUPS, n);
    struct json_object *g = h_parse_item(h_arr(ack, "groups"), 0, "group item");
    H_CHECK(json_object_array_length(h_arr(g, "users")) == BIG_MEMBERS + 1,
            "a listed group has all its members: %s", h_json(g));
    json_object_put(g);
    json_object_put(ack);
}

static void test_bad_requests_keep_connection(void **state)
{
    struct h_user a;
    struct qclient *c = h_new_user(&a, "bad");
    static const int ids[] = { QC_FRIEND_REMOVE_MSG,  QC_BLOCK_MSG,         QC_UNBLOCK_MSG,
                               QC_FRIEND_DECLINE_MSG, QC_GROUP_MEMBERS_MSG, QC_GROUP_LEAVE_MSG,
                               QC_GROUP_KICK_MSG,     QC_GROUP_ROLE_MSG,    QC_GROUP_UPDATE_MSG,
                               QC_GROUP_DELETE_MSG };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        json_object_put(h_request(c, ids[i], QC_EBADREQ, "no fields", "%s", ""));
    /* A push id sent as a request is unknown. */
    json_object_put(h_request(c, QC_FRIEND_REQUEST_MSG, QC_EUNKNOWN, "35 from a client", "%s", ""));
    json_object_put(h_request(c, QC_GROUP_EVENT_MSG, QC_EUNKNOWN, "47 from a client", "%s", ""));
    /* Before login. */
    struct qclient *anon = h_connect();
    json_object_put(
        h_request(anon, QC_FRIEND_LIST_MSG, QC_ENOTLOGGEDIN, "list before login", "%s", ""));
    /* Pipelined: the replies come in request order although each waits for the store. */
    int64_t s1 = h_next_seq(), s2 = h_next_seq(), s3 = h_next_seq();
    h_send(c,
           "{\"msgid\":30,\"seq\":%lld}{\"msgid\":33,\"userid\":%d,\"seq\":%lld}"
           "{\"msgid\":14,\"seq\":%lld}",
           (long long)s1, NO_SUCH_ID, (long long)s2, (long long)s3);
    struct json_object *r1 = h_expect(c, QC_FRIEND_LIST_MSG_ACK, "first");
    struct json_object *r2 = h_expect_ack(c, QC_BLOCK_MSG, s2, QC_ENOUSER, "second");
    struct json_object *r3 = h_expect_ack(c, QC_HEARTBEAT_MSG, s3, 0, "third");
    H_CHECK(h_int(r1, "seq") == s1, "first reply echoes its seq: %s", h_json(r1));
    json_object_put(r1);
    json_object_put(r2);
    json_object_put(r3);
    h_expect_quiet(c, "connection usable");
}

/* friend_consent = no: the seed's immediate friendship, blocks still apply. */
static void test_consent_no(void **state)
{
    server_stop();
    H_CHECK(server_start(consent_no) == 0, "restart with friend_consent = no");
    struct h_user a, b;
    struct qclient *ca, *cb;
    two_users(&a, &ca, &b, &cb, "cn");
    ok(ca, QC_ADD_FRIEND_MSG, "immediate friendship", "\"friendid\":%d", b.id, 0);
    struct json_object *lb = friend_list(cb);
    H_CHECK(find_id(lb, "friends", a.id) && arr_len(lb, "requests_in") == 0,
            "friends at once, no request: %s", h_json(lb));
    json_object_put(lb);
    ok(cb, QC_BLOCK_MSG, "block", "\"userid\":%d", a.id, 0);
    refused(ca, QC_ADD_FRIEND_MSG, QC_EBLOCKED, "blocked, even without consent", "\"friendid\":%d",
            b.id, 0);
}

static int group_setup(void **state)
{
    return h_group_setup_with(consent_yes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        H_TEST(test_friend_request_and_accept),
        H_TEST(test_friend_decline_and_remove),
        H_TEST(test_block),
        H_TEST(test_seed_client_flow_with_consent),
        H_TEST(test_group_members_and_roles),
        H_TEST(test_group_kick),
        H_TEST(test_group_leave_hands_over_and_deletes),
        H_TEST(test_group_delete),
        H_TEST(test_max_groups),
        H_TEST(test_login_lists_within_reply_cap),
        H_TEST(test_bad_requests_keep_connection),
        H_TEST(test_consent_no),
    };
    h_apply_filter();
    return cmocka_run_group_tests_name("social", tests, group_setup, h_group_teardown);
}
