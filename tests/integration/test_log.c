/*
 * test_log.c - the conversation log, black-box (DESIGN.md "Version 2: the
 * conversation log"; qchat-protocol(7)): cseq on every ACK, forwarded chat
 * and offline item; one log per pair and per group; HISTORY_MSG (20/21)
 * paging with before/after/limit and its errors; CONVERSATIONS_MSG (22/23)
 * with unread counts; READ_MSG (24) cursors that never move backwards and
 * the RECEIPT_MSG (25) it causes; TYPING_MSG (26) only to sessions that
 * asked for it and never stored; the delivered cursor (what was written live
 * is not offline at the next login); the login reply's count cap, with the
 * rest at the following login; the legacy (seed client) forwarded shape.
 */
#include "harness.h"
#include "mysql_env.h"

#include <limits.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"

#define HISTORY_MSG           20
#define HISTORY_MSG_ACK       21
#define CONVERSATIONS_MSG     22
#define CONVERSATIONS_MSG_ACK 23
#define READ_MSG              24
#define RECEIPT_MSG           25
#define TYPING_MSG            26

#define PAGE_TEST_MESSAGES 120 /* > two default pages */
#define OFFLINE_CAP        5   /* limits.max_offline_messages in this file's server */
#define OFFLINE_SENT       12  /* more than two login replies' worth */
#define QUIET_MS           300 /* a push that must not come: wait this long */
#define ORDER_GAP_MS       5   /* apart by this much, two messages' ts order them */

/* ---- helpers ------------------------------------------------------------ */

/*
 * Send {"msgid":req, BODY, "seq":N} and return the reply echoing N: the
 * request's own reply (reply_msgid) or the generic ACK.  Objects without that
 * seq are pushes: they are dropped (the callers expect none meanwhile).
 */
static struct json_object *call(struct qclient *c, int req, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static struct json_object *call(struct qclient *c, int req, const char *fmt, ...)
{
    char body[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    int64_t seq = h_next_seq();
    h_send(c, "{\"msgid\":%d%s%s,\"seq\":%lld}", req, *body ? "," : "", body, (long long)seq);
    int64_t deadline = h_now_ms() + H_REPLY_MS;
    while (h_now_ms() < deadline) {
        struct json_object *o = qclient_recv(c, (int)(deadline - h_now_ms()));
        if (o == NULL)
            break;
        struct json_object *s;
        if (json_object_object_get_ex(o, "seq", &s) && json_object_get_int64(s) == seq)
            return o;
        json_object_put(o);
    }
    H_FAIL("no reply to msgid %d (%s) within %d ms", req, body, H_REPLY_MS);
    return NULL;
}

/* A reply that must be the request's own (reply_msgid with errno 0). */
static struct json_object *call_ok(struct qclient *c, int req, int reply_msgid, const char *fmt,
                                   ...) __attribute__((format(printf, 4, 5)));

static struct json_object *call_ok(struct qclient *c, int req, int reply_msgid, const char *fmt,
                                   ...)
{
    char body[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    struct json_object *r = call(c, req, "%s", body);
    H_CHECK(h_int(r, "msgid") == reply_msgid && h_int(r, "errno") == 0,
            "msgid %d {%s}: want reply %d with errno 0, got %s", req, body, reply_msgid, h_json(r));
    return r;
}

/* The request must fail with the generic ACK carrying err. */
static void call_err(struct qclient *c, int req, int err, const char *body)
{
    struct json_object *r = call(c, req, "%s", body);
    H_CHECK(h_int(r, "msgid") == QC_ACK_MSG && h_int(r, "errno") == err && h_int(r, "req") == req,
            "msgid %d {%s}: want ACK errno %d, got %s", req, body, err, h_json(r));
    json_object_put(r);
}

/* A one-to-one chat with seq; returns the cseq its ACK carries. */
static int64_t chat(struct qclient *c, int32_t to, const char *text)
{
    struct json_object *ack =
        h_request(c, QC_ONE_CHAT_MSG, 0, "ONE_CHAT", "\"toid\":%d,\"msg\":%s", to, h_q(text));
    H_CHECK(h_has(ack, "cseq"), "a chat's ACK must carry cseq: %s", h_json(ack));
    int64_t cseq = h_int(ack, "cseq");
    json_object_put(ack);
    return cseq;
}

static int64_t group_chat(struct qclient *c, int32_t gid, const char *text)
{
    struct json_object *ack = h_request(c, QC_GROUP_CHAT_MSG, 0, "GROUP_CHAT",
                                        "\"groupid\":%d,\"msg\":%s", gid, h_q(text));
    H_CHECK(h_has(ack, "cseq"), "a group chat's ACK must carry cseq: %s", h_json(ack));
    int64_t cseq = h_int(ack, "cseq");
    json_object_put(ack);
    return cseq;
}

static int32_t new_group(struct qclient *c, const char *tag)
{
    char name[H_NAME_LEN];
    h_unique_name(name, sizeof name, tag);
    struct json_object *ack = h_request(c, QC_CREATE_GROUP_MSG, 0, "CREATE_GROUP",
                                        "\"groupname\":%s,\"groupdesc\":\"log\"", h_q(name));
    int32_t gid = (int32_t)h_int(ack, "groupid");
    json_object_put(ack);
    return gid;
}

/* Log in with extra LOGIN fields (e.g. "receipts":true). */
static struct qclient *login_with(const struct h_user *u, const char *extra,
                                  struct json_object **ack_out)
{
    struct qclient *c = h_connect();
    int64_t seq = h_next_seq();
    h_send(c, "{\"msgid\":1,\"id\":%d,\"password\":%s%s%s,\"seq\":%lld}", u->id, h_q(u->password),
           *extra ? "," : "", extra, (long long)seq);
    struct json_object *ack = h_expect(c, QC_LOGIN_MSG_ACK, "LOGIN with extra fields");
    H_CHECK(h_int(ack, "errno") == 0, "LOGIN {%s}: %s", extra, h_json(ack));
    if (ack_out)
        *ack_out = ack;
    else
        json_object_put(ack);
    return c;
}

/* The cseqs of a HISTORY reply's msgs (objects, ascending); returns the count. */
static size_t history_cseqs(struct json_object *reply, int64_t *out, size_t max)
{
    struct json_object *msgs = h_arr(reply, "msgs");
    size_t n = json_object_array_length(msgs);
    H_CHECK(n <= max, "more msgs than asked: %zu", n);
    for (size_t i = 0; i < n; i++) {
        struct json_object *m = json_object_array_get_idx(msgs, i);
        H_CHECK(json_object_is_type(m, json_type_object),
                "history msgs[] items are JSON objects, not strings: %s", h_json(reply));
        out[i] = h_int(m, "cseq");
        H_CHECK(h_has(m, "mid") && h_has(m, "ts"), "history item needs mid and ts: %s", h_json(m));
        if (i > 0)
            H_CHECK(out[i] == out[i - 1] + 1, "history cseqs ascend without gaps: %s",
                    h_json(reply));
    }
    return n;
}

static bool more_of(struct json_object *reply)
{
    struct json_object *v;
    H_CHECK(json_object_object_get_ex(reply, "more", &v) &&
                json_object_is_type(v, json_type_boolean),
            "HISTORY reply needs a boolean more: %s", h_json(reply));
    return json_object_get_boolean(v);
}

/* Fetch one history page of the pair (with) and check its range. */
static void expect_page(struct qclient *c, const char *key, int32_t id, const char *cursor,
                        int limit, int64_t first, int64_t last, bool more)
{
    struct json_object *r = call_ok(c, HISTORY_MSG, HISTORY_MSG_ACK, "\"%s\":%d%s%s,\"limit\":%d",
                                    key, id, *cursor ? "," : "", cursor, limit);
    H_CHECK(h_int(r, key) == id, "HISTORY reply echoes %s: %s", key, h_json(r));
    int64_t cs[100];
    size_t n = history_cseqs(r, cs, 100);
    H_CHECK(n == (size_t)(last - first + 1), "page {%s}: want cseq %lld..%lld, got %zu msgs: %s",
            cursor, (long long)first, (long long)last, n, h_json(r));
    if (n > 0)
        H_CHECK(cs[0] == first && cs[n - 1] == last, "page {%s}: want cseq %lld..%lld: %s", cursor,
                (long long)first, (long long)last, h_json(r));
    H_CHECK(more_of(r) == more, "page {%s}: more must be %s: %s", cursor, more ? "true" : "false",
            h_json(r));
    json_object_put(r);
}

/* No object arrives on c within QUIET_MS. */
static void expect_nothing(struct qclient *c, const char *what)
{
    struct json_object *o = qclient_recv(c, QUIET_MS);
    H_CHECK(o == NULL, "%s: nothing must arrive, got %s", what, h_json(o));
}

/* ---- tests -------------------------------------------------------------- */

static void test_cseq_on_ack_and_forward(void **state)
{
    (void)state;
    struct h_user a, b;
    struct qclient *ca = h_new_user(&a, "cs_a");
    struct qclient *cb = h_new_user(&b, "cs_b");
    /* One log per pair: both directions share it, 1, 2, 3, ... */
    for (int i = 1; i <= 3; i++) {
        struct qclient *from = i == 2 ? cb : ca, *to = i == 2 ? ca : cb;
        int32_t toid = i == 2 ? a.id : b.id;
        int64_t cseq = chat(from, toid, "hello");
        H_CHECK(cseq == i, "chat %d of a new pair: want cseq %d, got %lld", i, i, (long long)cseq);
        struct json_object *m = h_expect(to, QC_ONE_CHAT_MSG, "forwarded chat");
        H_CHECK(h_int(m, "cseq") == cseq, "forwarded cseq must equal the ACK's %lld: %s",
                (long long)cseq, h_json(m));
        json_object_put(m);
    }
}

static void test_offline_items_carry_cseq_once(void **state)
{
    (void)state;
    struct h_user a, b;
    struct qclient *ca = h_new_user(&a, "off_a");
    h_new_offline_user(&b, "off_b");
    for (int i = 1; i <= 3; i++)
        H_CHECK(chat(ca, b.id, "while away") == i, "cseq %d", i);
    struct json_object *ack = NULL;
    struct qclient *cb = h_login(&b, &ack);
    H_CHECK(h_arr_len_opt(ack, "offlinemsg") == 3, "3 offline items: %s", h_json(ack));
    for (size_t i = 0; i < 3; i++) {
        struct json_object *m = h_parse_item(h_arr(ack, "offlinemsg"), i, "offlinemsg[]");
        H_CHECK(h_int(m, "cseq") == (int64_t)i + 1, "offline items oldest first by cseq: %s",
                h_json(ack));
        H_CHECK(h_int(m, "id") == a.id && h_int(m, "msgid") == QC_ONE_CHAT_MSG,
                "offline item as forwarded: %s", h_json(m));
        json_object_put(m);
    }
    json_object_put(ack);
    h_close(cb);
    /*
     * Delivered once: the next login has none, even at once on another
     * worker (its read waits for the writing worker's cursor job).
     */
    cb = h_login(&b, &ack);
    H_CHECK(h_arr_len_opt(ack, "offlinemsg") == 0, "delivered messages are not offline again: %s",
            h_json(ack));
    json_object_put(ack);
    /* Written live: not offline at the next login either. */
    H_CHECK(chat(ca, b.id, "live") == 4, "cseq continues");
    json_object_put(h_expect(cb, QC_ONE_CHAT_MSG, "live chat"));
    h_close(cb);
    cb = h_login(&b, &ack);
    H_CHECK(h_arr_len_opt(ack, "offlinemsg") == 0, "a chat written live is not offline: %s",
            h_json(ack));
    json_object_put(ack);
}

/*
 * A sender whose name ends in ',' puts "name":"...," right before "toid" in
 * every chat it sends: a chat written live must still move the receiver's
 * delivered cursor (delivered_position reads past that name), so it is not
 * offline again at her next login.
 */
static void test_sender_named_with_a_trailing_comma(void **state)
{
    (void)state;
    struct h_user a, b;
    struct qclient *ca = h_connect();
    h_unique_name(a.name, sizeof a.name - 1, "comma");
    strcat(a.name, ",");
    snprintf(a.password, sizeof a.password, "pw-comma-%d", (int)getpid());
    H_CHECK(qclient_register(ca, a.name, a.password, &a.id, H_REPLY_MS) == 0 && a.id > 0,
            "REG {name:\"%s\"}", a.name);
    h_close(ca);
    ca = h_login(&a, NULL);
    struct qclient *cb = h_new_user(&b, "comma_b");
    H_CHECK(chat(ca, b.id, "live") == 1, "the conversation's first cseq");
    json_object_put(h_expect(cb, QC_ONE_CHAT_MSG, "live chat"));
    h_close(cb);
    struct json_object *ack = NULL;
    cb = h_login(&b, &ack);
    H_CHECK(h_arr_len_opt(ack, "offlinemsg") == 0,
            "a chat written live is not offline again, whatever the sender's name: %s",
            h_json(ack));
    json_object_put(ack);
}

static void test_history_pages(void **state)
{
    (void)state;
    struct h_user a, b;
    struct qclient *ca = h_new_user(&a, "hp_a");
    h_new_offline_user(&b, "hp_b");
    for (int i = 1; i <= PAGE_TEST_MESSAGES; i++) {
        char text[32];
        snprintf(text, sizeof text, "m%d", i);
        chat(ca, b.id, text);
    }
    expect_page(ca, "with", b.id, "", 50, 71, 120, true);
    expect_page(ca, "with", b.id, "\"before\":71", 50, 21, 70, true);
    expect_page(ca, "with", b.id, "\"before\":21", 50, 1, 20, false);
    expect_page(ca, "with", b.id, "\"after\":100", 10, 101, 110, true);
    expect_page(ca, "with", b.id, "\"after\":110", 10, 111, 120, false);
    expect_page(ca, "with", b.id, "\"after\":120", 10, 1, 0, false);
    /* The other participant sees the same log; default limit is 50. */
    struct json_object *ack = NULL;
    struct qclient *cb = h_login(&b, &ack);
    json_object_put(ack);
    struct json_object *r = call_ok(cb, HISTORY_MSG, HISTORY_MSG_ACK, "\"with\":%d", a.id);
    int64_t cs[100];
    H_CHECK(history_cseqs(r, cs, 100) == 50 && cs[49] == PAGE_TEST_MESSAGES,
            "default limit 50, newest last: %s", h_json(r));
    struct json_object *m = json_object_array_get_idx(h_arr(r, "msgs"), 49);
    H_CHECK(strcmp(h_str(m, "msg"), "m120") == 0 && h_int(m, "id") == a.id,
            "history items as forwarded: %s", h_json(m));
    json_object_put(r);
}

static void test_history_errors(void **state)
{
    (void)state;
    struct h_user a, b, outsider;
    struct qclient *ca = h_new_user(&a, "he_a");
    struct qclient *cb = h_new_user(&b, "he_b");
    struct qclient *co = h_new_user(&outsider, "he_o");
    char body[128];
    snprintf(body, sizeof body, "\"with\":%d,\"limit\":0", b.id);
    call_err(ca, HISTORY_MSG, QC_EBADREQ, body);
    snprintf(body, sizeof body, "\"with\":%d,\"limit\":101", b.id);
    call_err(ca, HISTORY_MSG, QC_EBADREQ, body);
    snprintf(body, sizeof body, "\"with\":\"%d\"", b.id);
    call_err(ca, HISTORY_MSG, QC_EBADREQ, body);
    call_err(ca, HISTORY_MSG, QC_EBADREQ, "\"limit\":10");
    snprintf(body, sizeof body, "\"with\":%d", 2147480000);
    call_err(ca, HISTORY_MSG, QC_ENOUSER, body);
    /* Groups: members only. */
    int32_t gid = new_group(cb, "he_g");
    group_chat(cb, gid, "members only");
    snprintf(body, sizeof body, "\"groupid\":%d", gid);
    call_err(co, HISTORY_MSG, QC_ENOTMEMBER, body);
    call_err(co, CONVERSATIONS_MSG, QC_EBADREQ, "\"limit\":0");
    call_err(co, CONVERSATIONS_MSG, QC_EBADREQ, "\"limit\":1001");
    /* Before login: refused, connection kept. */
    struct qclient *anon = h_connect();
    snprintf(body, sizeof body, "\"with\":%d", b.id);
    call_err(anon, HISTORY_MSG, QC_ENOTLOGGEDIN, body);
    h_expect_quiet(anon, "connection kept after a refused HISTORY");
    (void)ca;
}

static void test_group_log_stored_once(void **state)
{
    (void)state;
    struct h_user a, b, c;
    struct qclient *ca = h_new_user(&a, "gl_a");
    struct qclient *cb = h_new_user(&b, "gl_b");
    h_new_offline_user(&c, "gl_c");
    int32_t gid = new_group(ca, "gl_g");
    json_object_put(h_request(cb, QC_ADD_GROUP_MSG, 0, "ADD_GROUP", "\"groupid\":%d", gid));
    struct json_object *ack = NULL;
    struct qclient *cc = h_login(&c, &ack);
    json_object_put(ack);
    json_object_put(h_request(cc, QC_ADD_GROUP_MSG, 0, "ADD_GROUP", "\"groupid\":%d", gid));
    h_close(cc);
    /* One cseq per group message, whoever sends it. */
    H_CHECK(group_chat(ca, gid, "one") == 1, "first group message cseq 1");
    struct json_object *m = h_expect(cb, QC_GROUP_CHAT_MSG, "group chat to b");
    H_CHECK(h_int(m, "cseq") == 1, "forwarded group chat carries cseq: %s", h_json(m));
    json_object_put(m);
    H_CHECK(group_chat(cb, gid, "two") == 2, "second group message cseq 2");
    json_object_put(h_expect(ca, QC_GROUP_CHAT_MSG, "group chat to a"));
    /* The offline member gets both at login, with their cseqs. */
    cc = h_login(&c, &ack);
    H_CHECK(h_arr_len_opt(ack, "offlinemsg") == 2, "offline member gets 2: %s", h_json(ack));
    for (size_t i = 0; i < 2; i++) {
        m = h_parse_item(h_arr(ack, "offlinemsg"), i, "offlinemsg[]");
        H_CHECK(h_int(m, "msgid") == QC_GROUP_CHAT_MSG && h_int(m, "cseq") == (int64_t)i + 1,
                "group offline items in order: %s", h_json(ack));
        json_object_put(m);
    }
    json_object_put(ack);
    expect_page(cc, "groupid", gid, "", 50, 1, 2, false);
}

static void test_conversations_and_unread(void **state)
{
    (void)state;
    struct h_user me, x, y;
    struct qclient *cm = h_new_user(&me, "cv_me");
    struct qclient *cx = h_new_user(&x, "cv_x");
    struct qclient *cy = h_new_user(&y, "cv_y");
    chat(cx, me.id, "from x 1");
    chat(cx, me.id, "from x 2");
    /* me is online: take the forwarded chats before me's own requests read their replies. */
    for (int i = 0; i < 2; i++)
        json_object_put(h_expect(cm, QC_ONE_CHAT_MSG, "chat from x"));
    /* "Most recent" is by the millisecond: keep the conversations' last messages apart. */
    chat(cm, x.id, "to x");
    h_sleep_ms(ORDER_GAP_MS);
    chat(cy, me.id, "from y");
    json_object_put(h_expect(cm, QC_ONE_CHAT_MSG, "chat from y"));
    h_sleep_ms(ORDER_GAP_MS);
    int32_t gid = new_group(cm, "cv_g");
    group_chat(cm, gid, "to my group");
    struct json_object *r = call_ok(cm, CONVERSATIONS_MSG, CONVERSATIONS_MSG_ACK, "%s", "");
    struct json_object *convs = h_arr(r, "convs");
    H_CHECK(json_object_array_length(convs) == 3, "three conversations: %s", h_json(r));
    /* Most recent first: the group, then y, then x. */
    struct json_object *g = json_object_array_get_idx(convs, 0);
    struct json_object *cvy = json_object_array_get_idx(convs, 1);
    struct json_object *cvx = json_object_array_get_idx(convs, 2);
    H_CHECK(h_int(g, "groupid") == gid && h_int(g, "last_cseq") == 1 && h_int(g, "unread") == 0,
            "group conversation, my own message is not unread: %s", h_json(g));
    H_CHECK(h_int(cvy, "with") == y.id && h_int(cvy, "unread") == 1 && h_int(cvy, "last_cseq") == 1,
            "y: 1 unread: %s", h_json(cvy));
    H_CHECK(strcmp(h_str(cvy, "name"), y.name) == 0, "conversation name is the other user's: %s",
            h_json(cvy));
    H_CHECK(h_int(cvx, "with") == x.id && h_int(cvx, "unread") == 2 && h_int(cvx, "last_cseq") == 3,
            "x: the other side's 2 messages unread: %s", h_json(cvx));
    struct json_object *last;
    H_CHECK(json_object_object_get_ex(cvx, "last", &last) &&
                json_object_is_type(last, json_type_object) && h_int(last, "cseq") == 3,
            "last is the newest message object: %s", h_json(cvx));
    H_CHECK(h_int(cvx, "read_cseq") == 0, "nothing read yet: %s", h_json(cvx));
    json_object_put(r);
    /* Reading clears unread; limit works. */
    json_object_put(call(cm, READ_MSG, "\"with\":%d,\"cseq\":3", x.id));
    r = call_ok(cm, CONVERSATIONS_MSG, CONVERSATIONS_MSG_ACK, "\"limit\":1");
    H_CHECK(json_object_array_length(h_arr(r, "convs")) == 1, "limit 1: %s", h_json(r));
    json_object_put(r);
    r = call_ok(cm, CONVERSATIONS_MSG, CONVERSATIONS_MSG_ACK, "\"limit\":10");
    cvx = json_object_array_get_idx(h_arr(r, "convs"), 2);
    H_CHECK(h_int(cvx, "unread") == 0 && h_int(cvx, "read_cseq") == 3, "x read: %s", h_json(cvx));
    json_object_put(r);
    (void)cx;
    (void)cy;
}

static void test_read_cursor_and_receipt(void **state)
{
    (void)state;
    struct h_user a, b;
    h_new_offline_user(&a, "rd_a");
    struct qclient *ca = login_with(&a, "\"receipts\":true", NULL);
    struct qclient *cb = h_new_user(&b, "rd_b");
    for (int i = 0; i < 3; i++)
        chat(ca, b.id, "read me");
    for (int i = 0; i < 3; i++)
        json_object_put(h_expect(cb, QC_ONE_CHAT_MSG, "chat to b"));
    struct json_object *r = call(cb, READ_MSG, "\"with\":%d,\"cseq\":2", a.id);
    H_CHECK(h_int(r, "errno") == 0, "READ ok: %s", h_json(r));
    json_object_put(r);
    struct json_object *rc = h_expect(ca, RECEIPT_MSG, "receipt to the sender");
    H_CHECK(h_int(rc, "id") == b.id && h_int(rc, "cseq") == 2, "RECEIPT {id: reader, cseq}: %s",
            h_json(rc));
    json_object_put(rc);
    /* Never backwards; clamped to the last cseq. */
    json_object_put(call(cb, READ_MSG, "\"with\":%d,\"cseq\":1", a.id));
    json_object_put(call(cb, READ_MSG, "\"with\":%d,\"cseq\":999", a.id));
    r = call_ok(cb, CONVERSATIONS_MSG, CONVERSATIONS_MSG_ACK, "%s", "");
    struct json_object *cv = json_object_array_get_idx(h_arr(r, "convs"), 0);
    H_CHECK(h_int(cv, "read_cseq") == 3, "read cursor clamped to last cseq, never back: %s",
            h_json(cv));
    json_object_put(r);
    char body[64];
    snprintf(body, sizeof body, "\"with\":%d", a.id);
    call_err(cb, READ_MSG, QC_EBADREQ, body); /* cseq missing */
}

static void test_typing(void **state)
{
    (void)state;
    struct h_user a, b, c;
    h_new_offline_user(&a, "ty_a");
    struct qclient *ca = login_with(&a, "\"typing\":true", NULL);
    struct qclient *cb = h_new_user(&b, "ty_b");
    struct qclient *cc = h_new_user(&c, "ty_c");
    struct json_object *r = call(cb, TYPING_MSG, "\"toid\":%d", a.id);
    H_CHECK(h_int(r, "errno") == 0, "TYPING ok: %s", h_json(r));
    json_object_put(r);
    struct json_object *t = h_expect(ca, TYPING_MSG, "typing push");
    H_CHECK(h_int(t, "id") == b.id && h_int(t, "toid") == a.id &&
                strcmp(h_str(t, "name"), b.name) == 0,
            "typing push {id, name, toid}: %s", h_json(t));
    json_object_put(t);
    /* c did not ask for typing notices. */
    json_object_put(call(cb, TYPING_MSG, "\"toid\":%d", c.id));
    expect_nothing(cc, "typing to a session that did not ask");
    /* Never stored. */
    r = call_ok(cb, HISTORY_MSG, HISTORY_MSG_ACK, "\"with\":%d", a.id);
    H_CHECK(json_object_array_length(h_arr(r, "msgs")) == 0, "typing is not in history: %s",
            h_json(r));
    json_object_put(r);
}

/*
 * A block stops typing as it stops chats: between the two, either way, it
 * is error 22; in a group they share, each one's notice skips the other.
 */
static void test_typing_blocked(void **state)
{
    (void)state;
    struct h_user a, b, c;
    h_new_offline_user(&a, "tb_a");
    h_new_offline_user(&b, "tb_b");
    h_new_offline_user(&c, "tb_c");
    struct qclient *ca = login_with(&a, "\"typing\":true", NULL);
    struct qclient *cb = login_with(&b, "\"typing\":true", NULL);
    struct qclient *cc = login_with(&c, "\"typing\":true", NULL);
    int32_t gid = new_group(cc, "tb_g");
    json_object_put(h_request(ca, QC_ADD_GROUP_MSG, 0, "ADD_GROUP", "\"groupid\":%d", gid));
    json_object_put(h_request(cb, QC_ADD_GROUP_MSG, 0, "ADD_GROUP", "\"groupid\":%d", gid));
    json_object_put(h_expect_skip(ca, QC_GROUP_EVENT_MSG, "b joined"));
    json_object_put(h_request(ca, QC_BLOCK_MSG, 0, "BLOCK", "\"userid\":%d", b.id));
    char body[64];
    snprintf(body, sizeof body, "\"toid\":%d", a.id);
    call_err(cb, TYPING_MSG, QC_EBLOCKED, body);
    snprintf(body, sizeof body, "\"toid\":%d", b.id);
    call_err(ca, TYPING_MSG, QC_EBLOCKED, body);
    json_object_put(call_ok(cb, TYPING_MSG, QC_ACK_MSG, "\"groupid\":%d", gid));
    struct json_object *t = h_expect_skip(cc, TYPING_MSG, "group typing of the blocked user");
    H_CHECK(h_int(t, "id") == b.id && h_int(t, "groupid") == gid, "b types to the group: %s",
            h_json(t));
    json_object_put(t);
    json_object_put(call_ok(ca, TYPING_MSG, QC_ACK_MSG, "\"groupid\":%d", gid));
    t = h_expect_skip(cc, TYPING_MSG, "group typing of the blocker");
    H_CHECK(h_int(t, "id") == a.id && h_int(t, "groupid") == gid, "a types to the group: %s",
            h_json(t));
    json_object_put(t);
    expect_nothing(ca, "the blocker gets no typing from the blocked user in a group");
    expect_nothing(cb, "the blocked user gets no typing from the blocker in a group");
}

static void test_login_reply_count_cap(void **state)
{
    (void)state;
    struct h_user a, b;
    struct qclient *ca = h_new_user(&a, "cap_a");
    h_new_offline_user(&b, "cap_b");
    for (int i = 0; i < OFFLINE_SENT; i++)
        chat(ca, b.id, "queued");
    int64_t next = 1;
    int logins = 0;
    while (next <= OFFLINE_SENT && logins < 4) {
        struct json_object *ack = NULL;
        struct qclient *cb = h_login(&b, &ack);
        size_t n = h_arr_len_opt(ack, "offlinemsg");
        H_CHECK(n > 0 && n <= OFFLINE_CAP, "login %d: 1..%d offline items, got %zu", logins + 1,
                OFFLINE_CAP, n);
        for (size_t i = 0; i < n; i++) {
            struct json_object *m = h_parse_item(h_arr(ack, "offlinemsg"), i, "offlinemsg[]");
            H_CHECK(h_int(m, "cseq") == next, "no message skipped or repeated: want %lld: %s",
                    (long long)next, h_json(m));
            next++;
            json_object_put(m);
        }
        json_object_put(ack);
        h_close(cb);
        logins++;
    }
    H_CHECK(next == OFFLINE_SENT + 1, "all %d arrived over %d logins", OFFLINE_SENT, logins);
}

static void test_legacy_forward_shape(void **state)
{
    (void)state;
    struct h_user a, b;
    struct qclient *ca = h_new_user(&a, "lg_a");
    h_new_offline_user(&b, "lg_b");
    /* The seed client: trailing NUL, no seq. */
    struct qclient *cb = h_connect();
    qclient_set_trailing_nul(cb, true);
    /* h_send is raw (no NUL even with trailing_nul): the NUL goes explicitly. */
    char login[256];
    int n = snprintf(login, sizeof login, "{\"msgid\":1,\"id\":%d,\"password\":%s}", b.id,
                     h_q(b.password));
    H_CHECK(n > 0 && (size_t)n < sizeof login && qclient_send_raw(cb, login, (size_t)n + 1) == 0,
            "send the seed's login with its NUL");
    json_object_put(h_expect(cb, QC_LOGIN_MSG_ACK, "legacy login"));
    chat(ca, b.id, "to the seed client");
    struct json_object *m = h_expect(cb, QC_ONE_CHAT_MSG, "legacy forwarded chat");
    static const char *const allowed[] = { "msgid", "id", "name", "toid", "msg", "time", "cseq" };
    json_object_object_foreach(m, key, val)
    {
        (void)val;
        bool ok = false;
        for (size_t i = 0; i < sizeof allowed / sizeof *allowed; i++)
            ok = ok || strcmp(key, allowed[i]) == 0;
        H_CHECK(ok, "legacy receivers get only the seed's fields plus cseq, not %s: %s", key,
                h_json(m));
    }
    H_CHECK(h_has(m, "cseq"), "legacy receivers still get cseq: %s", h_json(m));
    json_object_put(m);
}

/*
 * The login reply stays within limits.max_login_reply_bytes (this file's
 * server: REPLY_CAP): a user in more groups than fit gets the groups that
 * fit, whole, and the reply is not larger than the cap (this branch's
 * addition to the lead's tests).
 */
#define REPLY_CAP   4096
#define MANY_GROUPS 40

static void test_login_reply_byte_cap(void **state)
{
    (void)state;
    struct h_user u;
    struct qclient *c = h_new_user(&u, "rb");
    for (int i = 0; i < MANY_GROUPS; i++)
        new_group(c, "rb_group_with_a_longish_name");
    h_close(c);
    struct json_object *ack = NULL;
    c = h_login(&u, &ack);
    size_t len = strlen(json_object_to_json_string_ext(ack, JSON_C_TO_STRING_PLAIN));
    size_t n = h_arr_len_opt(ack, "groups");
    H_CHECK(len <= REPLY_CAP, "login reply of %zu bytes, over the cap %d", len, REPLY_CAP);
    H_CHECK(n > 0 && n < MANY_GROUPS, "want some but not all of %d groups, got %zu", MANY_GROUPS,
            n);
    for (size_t i = 0; i < n; i++) {
        struct json_object *g = h_parse_item(h_arr(ack, "groups"), i, "groups[]");
        H_CHECK(h_arr_len_opt(g, "users") == 1, "a listed group is whole: %s", h_json(g));
        json_object_put(g);
    }
    json_object_put(ack);
    h_close(c);
}

/* ---- log-b: errors of every field, typing limit, pushes across workers, retention ---- */

#define TYPING_GAP_MS 1100 /* just over the server's TYPING_INTERVAL_MS (1 s) */
#define TYPING_SLOTS  4    /* conversations one connection may type to per second */
#define PURGE_KEEP    5    /* history.max_per_conversation in the purge test's server */
#define PURGE_SENT    12
#define WORKER_TRIES  16 /* logins tried to land two users on different workers */

/* One request body must fail with err for each of HISTORY / READ / TYPING's field rules. */
static void expect_errors(struct qclient *c, int req, int err, const char *const *bodies)
{
    for (size_t i = 0; bodies[i]; i++)
        call_err(c, req, err, bodies[i]);
}

static void test_log_request_field_errors(void **state)
{
    (void)state;
    struct h_user a, b, o;
    struct qclient *ca = h_new_user(&a, "fe_a");
    struct qclient *cb = h_new_user(&b, "fe_b");
    struct qclient *co = h_new_user(&o, "fe_o");
    int32_t gid = new_group(cb, "fe_g");
    char w[64], g[64], self[64], nouser[64], nogroup[64], both[96];
    snprintf(w, sizeof w, "\"with\":%d", b.id);
    snprintf(g, sizeof g, "\"groupid\":%d", gid);
    snprintf(self, sizeof self, "\"with\":%d", a.id);
    snprintf(nouser, sizeof nouser, "\"with\":%d", 2147480001);
    snprintf(nogroup, sizeof nogroup, "\"groupid\":%d", 2147480002);
    snprintf(both, sizeof both, "\"with\":%d,\"groupid\":%d", b.id, gid);
    char b1[128], b2[128], b3[128], b4[128], b5[128], b6[128], b7[128];
    snprintf(b1, sizeof b1, "%s,\"before\":-1", w);
    snprintf(b2, sizeof b2, "%s,\"after\":\"3\"", w);
    snprintf(b3, sizeof b3, "%s,\"limit\":\"10\"", w);
    snprintf(b4, sizeof b4, "%s,\"limit\":0", w);
    snprintf(b5, sizeof b5, "%s,\"limit\":101", w);
    snprintf(b6, sizeof b6, "\"with\":0");
    snprintf(b7, sizeof b7, "\"groupid\":true");
    const char *const history_bad[] = { "", both, b1, b2, b3, b4, b5, b6, b7, NULL };
    expect_errors(ca, HISTORY_MSG, QC_EBADREQ, history_bad);
    call_err(ca, HISTORY_MSG, QC_ENOUSER, nouser);
    call_err(ca, HISTORY_MSG, QC_ESELF, self);
    call_err(ca, HISTORY_MSG, QC_ENOGROUP, nogroup);
    call_err(co, HISTORY_MSG, QC_ENOTMEMBER, g);
    /* A page of a conversation without messages: empty, no more. */
    struct json_object *r = call_ok(ca, HISTORY_MSG, HISTORY_MSG_ACK, "%s", w);
    H_CHECK(json_object_array_length(h_arr(r, "msgs")) == 0 && !more_of(r) &&
                h_int(r, "with") == b.id,
            "empty conversation: %s", h_json(r));
    json_object_put(r);
    /* CONVERSATIONS: limit 1..1000, an integer. */
    const char *const convs_bad[] = { "\"limit\":0", "\"limit\":1001", "\"limit\":\"5\"",
                                      "\"limit\":1.5", NULL };
    expect_errors(ca, CONVERSATIONS_MSG, QC_EBADREQ, convs_bad);
    /* A group without messages is listed, with last_cseq 0 and no last. */
    r = call_ok(cb, CONVERSATIONS_MSG, CONVERSATIONS_MSG_ACK, "\"limit\":1000");
    struct json_object *cv = json_object_array_get_idx(h_arr(r, "convs"), 0);
    H_CHECK(cv && h_int(cv, "groupid") == gid && h_int(cv, "last_cseq") == 0 &&
                h_int(cv, "unread") == 0 && !h_has(cv, "last"),
            "an empty group in the list: %s", h_json(r));
    json_object_put(r);
    /* READ: the conversation, and cseq (required, >= 0). */
    char r1[128], r2[128], r3[128], r4[128];
    snprintf(r1, sizeof r1, "%s", w);
    snprintf(r2, sizeof r2, "%s,\"cseq\":-1", w);
    snprintf(r3, sizeof r3, "%s,\"cseq\":\"1\"", w);
    snprintf(r4, sizeof r4, "%s,\"cseq\":1", both);
    const char *const read_bad[] = { r1, r2, r3, r4, "\"cseq\":1", NULL };
    expect_errors(ca, READ_MSG, QC_EBADREQ, read_bad);
    snprintf(r1, sizeof r1, "%s,\"cseq\":1", nouser);
    call_err(ca, READ_MSG, QC_ENOUSER, r1);
    snprintf(r1, sizeof r1, "%s,\"cseq\":1", nogroup);
    call_err(ca, READ_MSG, QC_ENOGROUP, r1);
    snprintf(r1, sizeof r1, "%s,\"cseq\":1", g);
    call_err(co, READ_MSG, QC_ENOTMEMBER, r1);
    /* TYPING: toid or groupid. */
    char t1[96], t2[96];
    snprintf(t1, sizeof t1, "\"toid\":%d,\"groupid\":%d", b.id, gid);
    snprintf(t2, sizeof t2, "\"toid\":\"%d\"", b.id);
    const char *const typing_bad[] = { "", t1, t2, "\"toid\":-4", NULL };
    expect_errors(ca, TYPING_MSG, QC_EBADREQ, typing_bad);
    snprintf(t1, sizeof t1, "\"toid\":%d", 2147480003);
    call_err(ca, TYPING_MSG, QC_ENOUSER, t1);
    snprintf(t1, sizeof t1, "\"toid\":%d", a.id);
    call_err(ca, TYPING_MSG, QC_ESELF, t1);
    call_err(ca, TYPING_MSG, QC_ENOGROUP, nogroup);
    call_err(co, TYPING_MSG, QC_ENOTMEMBER, g);
    /* Every refusal left the connections usable. */
    json_object_put(h_request(ca, QC_HEARTBEAT_MSG, 0, "HEARTBEAT", "%s", "\"x\":0"));
    (void)cb;
}

static void test_typing_rate_limit_and_group(void **state)
{
    (void)state;
    struct h_user a, b, m[TYPING_SLOTS + 1];
    h_new_offline_user(&a, "tl_a");
    struct qclient *ca = login_with(&a, "\"typing\":true", NULL);
    struct qclient *cb = h_new_user(&b, "tl_b");
    /* The first notice goes, a second within the interval is ACKed and dropped. */
    json_object_put(call_ok(cb, TYPING_MSG, QC_ACK_MSG, "\"toid\":%d", a.id));
    json_object_put(h_expect(ca, TYPING_MSG, "first typing notice"));
    json_object_put(call_ok(cb, TYPING_MSG, QC_ACK_MSG, "\"toid\":%d", a.id));
    expect_nothing(ca, "a second typing notice within a second");
    h_sleep_ms(TYPING_GAP_MS);
    json_object_put(call_ok(cb, TYPING_MSG, QC_ACK_MSG, "\"toid\":%d", a.id));
    json_object_put(h_expect(ca, TYPING_MSG, "typing again after the interval"));
    /* Per connection at most TYPING_SLOTS conversations a second. */
    h_sleep_ms(TYPING_GAP_MS);
    struct qclient *cm[TYPING_SLOTS + 1];
    for (int i = 0; i <= TYPING_SLOTS; i++) {
        h_new_offline_user(&m[i], "tl_m");
        cm[i] = login_with(&m[i], "\"typing\":true", NULL);
    }
    for (int i = 0; i <= TYPING_SLOTS; i++)
        json_object_put(call_ok(cb, TYPING_MSG, QC_ACK_MSG, "\"toid\":%d", m[i].id));
    for (int i = 0; i < TYPING_SLOTS; i++)
        json_object_put(h_expect(cm[i], TYPING_MSG, "typing to one of the first conversations"));
    expect_nothing(cm[TYPING_SLOTS], "typing to one conversation too many within a second");
    /* A group: every other member who asked, not the typist, not one who did not ask. */
    int32_t gid = new_group(cb, "tl_g");
    json_object_put(h_request(ca, QC_ADD_GROUP_MSG, 0, "ADD_GROUP", "\"groupid\":%d", gid));
    json_object_put(h_request(cm[0], QC_ADD_GROUP_MSG, 0, "ADD_GROUP", "\"groupid\":%d", gid));
    struct h_user quiet;
    struct qclient *cq = h_new_user(&quiet, "tl_q");
    json_object_put(h_request(cq, QC_ADD_GROUP_MSG, 0, "ADD_GROUP", "\"groupid\":%d", gid));
    json_object_put(call_ok(ca, TYPING_MSG, QC_ACK_MSG, "\"groupid\":%d", gid));
    struct json_object *t = h_expect(cm[0], TYPING_MSG, "group typing");
    H_CHECK(h_int(t, "groupid") == gid && h_int(t, "id") == a.id && !h_has(t, "toid"),
            "group typing {id, name, groupid}: %s", h_json(t));
    json_object_put(t);
    expect_nothing(ca, "the typist gets no copy");
    expect_nothing(cq, "a member who did not ask for typing");
    (void)cb;
}

/*
 * A fresh user logged in with receipts:true on another worker than not_on
 * (u is filled in); NULL if none lands there.  The users that landed on
 * not_on stay connected, so that worker counts as busier for the next
 * accept.
 */
static struct qclient *login_elsewhere(struct h_user *u, int not_on)
{
    for (int i = 0; i < WORKER_TRIES; i++) {
        h_new_offline_user(u, "rw_a");
        struct qclient *c = login_with(u, "\"receipts\":true", NULL);
        int w = h_worker_of(u->id);
        if (w >= 0 && w != not_on)
            return c;
    }
    return NULL;
}

static void test_receipt_across_workers_and_no_self_push(void **state)
{
    (void)state;
    struct h_user a, b;
    struct qclient *cb = h_new_user(&b, "rw_b");
    struct qclient *ca = login_elsewhere(&a, h_worker_of(b.id));
    H_CHECK(ca != NULL, "could not place two users on different workers in %d logins",
            WORKER_TRIES);
    for (int i = 0; i < 2; i++) {
        chat(ca, b.id, "across");
        json_object_put(h_expect(cb, QC_ONE_CHAT_MSG, "chat across workers"));
    }
    json_object_put(call_ok(cb, READ_MSG, QC_ACK_MSG, "\"with\":%d,\"cseq\":2", a.id));
    struct json_object *rc = h_expect(ca, RECEIPT_MSG, "receipt from another worker");
    H_CHECK(h_int(rc, "id") == b.id && h_int(rc, "cseq") == 2, "RECEIPT {id, cseq}: %s",
            h_json(rc));
    json_object_put(rc);
    /* The reader's only session gets no READ sync of its own READ. */
    expect_nothing(cb, "the reader's own session");
    /* A READ behind the cursor changes nothing and causes no receipt. */
    json_object_put(call_ok(cb, READ_MSG, QC_ACK_MSG, "\"with\":%d,\"cseq\":1", a.id));
    expect_nothing(ca, "a READ behind the cursor");
    /* Without seq: no ACK on success (the seed rule), the receipt still goes. */
    h_send(cb, "{\"msgid\":%d,\"with\":%d,\"cseq\":2}", READ_MSG, a.id);
    json_object_put(h_expect(ca, RECEIPT_MSG, "receipt of a READ without seq"));
    expect_nothing(cb, "a READ without seq that succeeded");
}

/* Stop the file's server (cleanly) and start one with extra options on a fresh store. */
static void restart_with(const char *opt)
{
    h_stop_and_check_clean();
    const char *const opts[] = { "limits.max_offline_messages=5",
                                 "limits.max_login_reply_bytes=4096", opt, NULL };
    H_CHECK(server_start(opts) == 0, "qchatd with %s did not start", opt);
}

/* qchatctl purge against the current server; returns its exit status, out its stdout. */
static int run_purge(char *out, size_t outlen)
{
    const char *bdir = getenv("B");
    char cmd[PATH_MAX * 2 + 64];
    snprintf(cmd, sizeof cmd, "%s/qchatctl -s '%s' purge", bdir && *bdir ? bdir : "build",
             h_srv.ctl_path);
    return h_run_capture(cmd, out, outlen);
}

static void test_purge_max_per_conversation(void **state)
{
    (void)state;
    char opt[64];
    snprintf(opt, sizeof opt, "history.max_per_conversation=%d", PURGE_KEEP);
    restart_with(opt);
    struct h_user a, b;
    struct qclient *ca = h_new_user(&a, "pg_a");
    h_new_offline_user(&b, "pg_b");
    for (int i = 1; i <= PURGE_SENT; i++)
        H_CHECK(chat(ca, b.id, "old and new") == i, "cseq %d", i);
    char out[256];
    int rc = run_purge(out, sizeof out);
    char want[64];
    snprintf(want, sizeof want, "purged %d message(s)\n", PURGE_SENT - PURGE_KEEP);
    H_CHECK(rc == 0 && strcmp(out, want) == 0, "qchatctl purge: exit %d, \"%s\", want \"%s\"", rc,
            out, want);
    /* History keeps the newest; nothing older is reported. */
    expect_page(ca, "with", b.id, "", 50, PURGE_SENT - PURGE_KEEP + 1, PURGE_SENT, false);
    /* cseq continues after the purge: never reused. */
    H_CHECK(chat(ca, b.id, "after the purge") == PURGE_SENT + 1, "cseq continues");
    rc = run_purge(out, sizeof out);
    H_CHECK(rc == 0 && strcmp(out, "purged 1 message(s)\n") == 0, "second purge: %d \"%s\"", rc,
            out);
    struct json_object *st = h_ctl("{\"cmd\":\"stats\"}");
    H_CHECK(st && strstr(h_str(st, "metrics"), "qchat_history_purged_total") != NULL,
            "the purge counter is in the metrics: %s", h_json(st));
    json_object_put(st);
}

/*
 * A burst beyond storage.queue_size: the chats that find the queue full are
 * held (the sender is read no further) until commits make room, not
 * refused with errno 13; every one is ACKed, in order, cseq 1..N.
 */
#define BURST_QUEUE 16 /* storage.queue_size's minimum */
#define BURST_CHATS 96

static void test_full_queue_holds_the_sender(void **state)
{
    (void)state;
    char opt[64];
    snprintf(opt, sizeof opt, "storage.queue_size=%d", BURST_QUEUE);
    restart_with(opt);
    struct h_user a, b;
    struct qclient *ca = h_new_user(&a, "burst_a");
    struct qclient *cb = h_new_user(&b, "burst_b"); /* online: no store lookup per chat */
    int64_t seq0 = 0;
    for (int k = 0; k < BURST_CHATS; k++) {
        int64_t seq = h_next_seq();
        if (k == 0)
            seq0 = seq;
        h_send(ca, "{\"msgid\":5,\"toid\":%d,\"msg\":\"burst %d\",\"seq\":%lld}", b.id, k,
               (long long)seq);
    }
    for (int k = 0; k < BURST_CHATS; k++) {
        struct json_object *ack = h_expect_ack(ca, QC_ONE_CHAT_MSG, seq0 + k, 0, "burst chat");
        H_CHECK(h_int(ack, "cseq") == k + 1, "burst chat %d: cseq %d in order: %s", k, k + 1,
                h_json(ack));
        json_object_put(ack);
    }
    h_close(ca);
    h_close(cb);
}

static void test_history_disabled_keeps_only_undelivered(void **state)
{
    (void)state;
    restart_with("history.enabled=no");
    struct h_user a, b, c;
    struct qclient *ca = h_new_user(&a, "hd_a");
    struct qclient *cb = h_new_user(&b, "hd_b");
    h_new_offline_user(&c, "hd_c");
    for (int i = 0; i < 3; i++) {
        chat(ca, b.id, "delivered live");
        json_object_put(h_expect(cb, QC_ONE_CHAT_MSG, "live chat"));
    }
    chat(ca, c.id, "waiting for c");
    char out[256];
    /* The delivery cursor may trail the write by a moment: purge until it has. */
    int64_t deadline = h_now_ms() + H_REPLY_MS;
    size_t left = 1;
    while (left > 0 && h_now_ms() < deadline) {
        H_CHECK(run_purge(out, sizeof out) == 0, "qchatctl purge: %s", out);
        struct json_object *r = call_ok(ca, HISTORY_MSG, HISTORY_MSG_ACK, "\"with\":%d", b.id);
        left = json_object_array_length(h_arr(r, "msgs"));
        json_object_put(r);
    }
    H_CHECK(left == 0, "history.enabled = no: delivered messages are removed");
    expect_page(ca, "with", c.id, "", 50, 1, 1, false); /* undelivered: kept */
    struct json_object *ack = NULL;
    struct qclient *cc = h_login(&c, &ack);
    H_CHECK(h_arr_len_opt(ack, "offlinemsg") == 1, "c still gets it: %s", h_json(ack));
    json_object_put(ack);
    (void)cc;
}

/* ---- the log off: only what was not delivered live is kept ------------------ */

/* A store that outlives one server: a path outside the harness's per-server directory. */
struct kept_store {
    char dir[PATH_MAX];
    char opt[PATH_MAX + 32]; /* "storage.path=..." */
};

static void kept_store_make(struct kept_store *k)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(k->dir, sizeof k->dir, "%s/qchat-logoff.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    H_CHECK(mkdtemp(k->dir) != NULL, "mkdtemp %s", k->dir);
    snprintf(k->opt, sizeof k->opt, "storage.path=%s/qchat.db", k->dir);
}

/* (Re)start the server with the log off on the kept store. */
static void start_log_off(const struct kept_store *k)
{
    h_stop_and_check_clean();
    const char *const opts[] = { "limits.max_offline_messages=5",
                                 "limits.max_login_reply_bytes=4096", "history.enabled=no", k->opt,
                                 NULL };
    H_CHECK(server_start(opts) == 0, "qchatd with history.enabled=no on %s did not start", k->opt);
}

/* The cseqs of the HISTORY of key=id (any order of gaps), at most max. */
static size_t stored_cseqs(struct qclient *c, const char *key, int32_t id, int64_t *out, size_t max)
{
    struct json_object *r =
        call_ok(c, HISTORY_MSG, HISTORY_MSG_ACK, "\"%s\":%d,\"limit\":100", key, id);
    struct json_object *msgs = h_arr(r, "msgs");
    size_t n = json_object_array_length(msgs);
    H_CHECK(n <= max, "more history than expected: %s", h_json(r));
    for (size_t i = 0; i < n; i++)
        out[i] = h_int(json_object_array_get_idx(msgs, i), "cseq");
    json_object_put(r);
    return n;
}

/* Log u in; the offlinemsg cseqs of its login reply must be want[0..n) of msgid. */
static struct qclient *login_expecting_offline(struct h_user *u, int msgid, const int64_t *want,
                                               size_t n, const char *who)
{
    struct json_object *ack = NULL;
    struct qclient *c = h_login(u, &ack);
    H_CHECK(h_arr_len_opt(ack, "offlinemsg") == n, "%s: want %zu offline item(s): %s", who, n,
            h_json(ack));
    for (size_t i = 0; i < n; i++) {
        struct json_object *m = h_parse_item(h_arr(ack, "offlinemsg"), i, "offlinemsg[]");
        H_CHECK(h_int(m, "msgid") == msgid && h_int(m, "cseq") == want[i],
                "%s: offline item %zu must be cseq %lld: %s", who, i, (long long)want[i],
                h_json(ack));
        json_object_put(m);
    }
    json_object_put(ack);
    return c;
}

/* The end of a log-off test: the server checked clean, the kept store removed, the usual
 * server back. */
static void end_log_off(const struct kept_store *k)
{
    h_stop_and_check_clean();
    h_remove_dir(k->dir);
    H_CHECK(server_start(NULL) == 0, "qchatd with the file's options again");
}

/*
 * A store of more conversations than one purge batch examines
 * (STORE_PURGE_SCAN_CONVS): the first two windows' conversations hold one
 * message each, at the cap; the WALK_OVER after them two, one over it.
 * qchatctl purge's round must walk past the windows where its batches find
 * nothing and remove one message of each of the last; the next round finds
 * nothing.  The conversations are written straight into the store while no
 * server runs (thousands of users chatting would take minutes).
 */
#define WALK_OVER  100
#define WALK_CONVS (2 * STORE_PURGE_SCAN_CONVS + WALK_OVER)
#define WALK_SQLITE_SQL                                                                   \
    "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < %d)"        \
    " INSERT INTO Conversation (conv, last_cseq, last_ts) SELECT n * 4294967296 + n + 1," \
    " CASE WHEN n > %d THEN 2 ELSE 1 END, 1700000000000 FROM s;"                          \
    " INSERT INTO Message (conv, cseq, mid, sender, ts, body) SELECT conv, c.k, c.k, 1,"  \
    " 1700000000000, '{}' FROM Conversation, (SELECT 1 AS k UNION ALL SELECT 2) AS c"     \
    " WHERE c.k <= last_cseq"
#define WALK_MYSQL_SQL                                                                       \
    "INSERT INTO Conversation (conv, last_cseq, last_ts) SELECT seq * 4294967296 + seq + 1," \
    " IF(seq > %d, 2, 1), 1700000000000 FROM seq_1_to_%d;\n"                                 \
    "INSERT INTO Message (conv, cseq, mid, sender, ts, body) SELECT conv, k.seq, k.seq, 1,"  \
    " 1700000000000, '{}' FROM Conversation JOIN seq_1_to_2 k ON k.seq <= last_cseq;\n"

static void fill_walk_store(const char *path)
{
    char sql[512];
    if (h_storage_is_mysql()) {
        char db[64];
        H_CHECK(mdb_load_env("it_log"), "QCHAT_TEST_STORAGE=mysql without its MariaDB");
        h_mysql_database(path, db, sizeof db);
        snprintf(sql, sizeof sql, WALK_MYSQL_SQL, WALK_CONVS - WALK_OVER, WALK_CONVS);
        MYSQL *m = mdb_connect(db, CLIENT_MULTI_STATEMENTS);
        mdb_run(m, sql, "filling the walk's store");
        mysql_close(m);
        return;
    }
    sqlite3 *db = NULL;
    char *err = NULL;
    snprintf(sql, sizeof sql, WALK_SQLITE_SQL, WALK_CONVS, WALK_CONVS - WALK_OVER);
    H_CHECK(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK, "open %s", path);
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    H_CHECK(rc == SQLITE_OK, "fill %s: %s", path, err ? err : sqlite3_errstr(rc));
    H_CHECK(sqlite3_close(db) == SQLITE_OK, "close %s", path);
}

static void test_purge_walks_every_conversation(void **state)
{
    (void)state;
    struct kept_store k;
    kept_store_make(&k);
    const char *const opts[] = { k.opt, "history.max_per_conversation=1", NULL };
    h_stop_and_check_clean();
    H_CHECK(server_start(opts) == 0, "qchatd on %s did not start", k.opt); /* the schema */
    h_stop_and_check_clean();
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/qchat.db", k.dir);
    fill_walk_store(path);
    H_CHECK(server_start(opts) == 0, "qchatd on the filled %s did not start", k.opt);

    char out[256], want[64];
    int rc = run_purge(out, sizeof out);
    snprintf(want, sizeof want, "purged %d message(s)\n", WALK_OVER);
    H_CHECK(rc == 0 && strcmp(out, want) == 0, "qchatctl purge: exit %d, \"%s\", want \"%s\"", rc,
            out, want);
    rc = run_purge(out, sizeof out);
    H_CHECK(rc == 0 && strcmp(out, "purged 0 message(s)\n") == 0, "second purge: %d \"%s\"", rc,
            out);
    end_log_off(&k);
}

/*
 * Close c and wait until the server has seen it: a chat written to a socket
 * the client is closing counts as delivered (the kernel took it), as in
 * version 1, so "offline" must mean the server knows.
 */
static void go_offline(struct qclient *c, int32_t id)
{
    h_close(c);
    H_CHECK(h_wait_online(id, false, H_REPLY_MS), "user %d still online after closing", id);
}

/* a sends to b (online); b must get it live with cseq want. */
static void chat_live(struct qclient *ca, struct qclient *cb, int32_t to, int64_t want)
{
    H_CHECK(chat(ca, to, "live") == want, "live chat: cseq %lld", (long long)want);
    struct json_object *m = h_expect(cb, QC_ONE_CHAT_MSG, "live chat");
    H_CHECK(h_int(m, "cseq") == want, "forwarded with cseq %lld: %s", (long long)want, h_json(m));
    json_object_put(m);
}

/*
 * history.enabled = no, one to one: chats written live are not stored (not
 * in HISTORY, not offline at the next login), a chat to an offline user is,
 * and reaches that user at login with its cseq; across a restart cseq
 * continues (the live ones' numbers are never handed out again), so the
 * stored log has gaps but no reuse.
 */
static void test_log_off_keeps_only_undelivered_chats(void **state)
{
    (void)state;
    struct kept_store k;
    kept_store_make(&k);
    start_log_off(&k);
    struct h_user a, b, c;
    struct qclient *ca = h_new_user(&a, "lo_a");
    struct qclient *cb = h_new_user(&b, "lo_b");
    h_new_offline_user(&c, "lo_c");
    for (int64_t i = 1; i <= 3; i++)
        chat_live(ca, cb, b.id, i);
    int64_t cs[8];
    H_CHECK(stored_cseqs(ca, "with", b.id, cs, 8) == 0, "live chats are not in HISTORY");
    H_CHECK(chat(ca, c.id, "for c, offline") == 1, "first chat to c: cseq 1");
    H_CHECK(stored_cseqs(ca, "with", c.id, cs, 8) == 1 && cs[0] == 1,
            "a chat to an offline user is stored");
    h_close(ca);
    h_close(cb);

    start_log_off(&k); /* the same store */
    struct json_object *ack = NULL;
    int64_t want1[] = { 1 };
    struct qclient *cc =
        login_expecting_offline(&c, QC_ONE_CHAT_MSG, want1, 1, "c after the restart");
    ca = h_login(&a, &ack);
    json_object_put(ack);
    cb = login_expecting_offline(&b, QC_ONE_CHAT_MSG, NULL, 0, "b (had everything live)");
    chat_live(ca, cb, b.id, 4); /* never 1..3 again */
    go_offline(cb, b.id);
    H_CHECK(chat(ca, b.id, "for b, offline") == 5, "chat to b offline: cseq 5");
    int64_t want5[] = { 5 };
    cb = login_expecting_offline(&b, QC_ONE_CHAT_MSG, want5, 1, "b after going offline");
    H_CHECK(stored_cseqs(ca, "with", b.id, cs, 8) == 1 && cs[0] == 5,
            "only the undelivered chat is in HISTORY");
    /* Delivered at login: not offline again. */
    h_close(cb);
    cb = login_expecting_offline(&b, QC_ONE_CHAT_MSG, NULL, 0, "b's second login");
    /* Delivered to everyone: the purge removes it (the cursors do not stop at the gaps). */
    char out[256];
    int64_t deadline = h_now_ms() + H_REPLY_MS;
    size_t left = 1;
    while (left > 0 && h_now_ms() < deadline) {
        H_CHECK(run_purge(out, sizeof out) == 0, "qchatctl purge: %s", out);
        left = stored_cseqs(ca, "with", b.id, cs, 8);
    }
    H_CHECK(left == 0, "the delivered chat is purged with the log off");
    h_close(ca);
    h_close(cb);
    h_close(cc);
    end_log_off(&k);
}

#define MARK_CONVS 80 /* more conversations than convmark.c's first batch has room for (64) */
#define MARK_CHATS 3

/*
 * history.enabled = no, many conversations at once: the high-water marks of
 * chats written live only are kept per conversation (the highest) and
 * stored together, at most every 100 ms and at a stop; after a restart
 * each conversation goes on after its own last cseq, none handed out again.
 */
static void test_log_off_marks_of_many_conversations(void **state)
{
    (void)state;
    struct kept_store k;
    kept_store_make(&k);
    start_log_off(&k);
    struct h_user a, b[MARK_CONVS];
    struct qclient *cb[MARK_CONVS];
    struct qclient *ca = h_new_user(&a, "lm_a");
    for (int i = 0; i < MARK_CONVS; i++)
        cb[i] = h_new_user(&b[i], "lm_b");
    for (int64_t n = 1; n <= MARK_CHATS; n++)
        for (int i = 0; i < MARK_CONVS; i++)
            chat_live(ca, cb[i], b[i].id, n);
    h_close(ca);
    for (int i = 0; i < MARK_CONVS; i++)
        h_close(cb[i]);

    start_log_off(&k); /* the same store */
    struct json_object *ack = NULL;
    ca = h_login(&a, &ack);
    json_object_put(ack);
    for (int i = 0; i < MARK_CONVS; i++) {
        cb[i] = h_login(&b[i], &ack);
        json_object_put(ack);
    }
    for (int i = 0; i < MARK_CONVS; i++)
        chat_live(ca, cb[i], b[i].id, MARK_CHATS + 1);
    h_close(ca);
    for (int i = 0; i < MARK_CONVS; i++)
        h_close(cb[i]);
    end_log_off(&k);
}

/*
 * history.enabled = no, a group: with a member offline the chat is stored
 * once (not per member) and that member gets it at login with its cseq; the
 * member who got it live does not get it again at the next login; a chat
 * every member gets live is not stored, and its cseq is not handed out
 * again after a restart.
 */
static void test_log_off_group_stores_once_for_offline_members(void **state)
{
    (void)state;
    struct kept_store k;
    kept_store_make(&k);
    start_log_off(&k);
    struct h_user a, b, c;
    struct qclient *ca = h_new_user(&a, "lg_a");
    struct qclient *cb = h_new_user(&b, "lg_b");
    h_new_offline_user(&c, "lg_c");
    int32_t gid = new_group(ca, "lg_g");
    json_object_put(h_request(cb, QC_ADD_GROUP_MSG, 0, "ADD_GROUP", "\"groupid\":%d", gid));
    struct json_object *ack = NULL;
    struct qclient *cc = h_login(&c, &ack);
    json_object_put(ack);
    json_object_put(h_request(cc, QC_ADD_GROUP_MSG, 0, "ADD_GROUP", "\"groupid\":%d", gid));
    go_offline(cc, c.id);
    /* c offline: stored once. */
    H_CHECK(group_chat(ca, gid, "c is away") == 1, "group cseq 1");
    struct json_object *m = h_expect(cb, QC_GROUP_CHAT_MSG, "group chat to b");
    H_CHECK(h_int(m, "cseq") == 1, "b gets cseq 1 live: %s", h_json(m));
    json_object_put(m);
    int64_t cs[8];
    H_CHECK(stored_cseqs(ca, "groupid", gid, cs, 8) == 1 && cs[0] == 1,
            "the chat a member missed is stored, once");
    int64_t want1[] = { 1 };
    cc = login_expecting_offline(&c, QC_GROUP_CHAT_MSG, want1, 1, "c (missed cseq 1)");
    /* Everyone online: live only. */
    H_CHECK(group_chat(ca, gid, "all here") == 2, "group cseq 2");
    json_object_put(h_expect(cb, QC_GROUP_CHAT_MSG, "group chat to b"));
    json_object_put(h_expect(cc, QC_GROUP_CHAT_MSG, "group chat to c"));
    H_CHECK(stored_cseqs(ca, "groupid", gid, cs, 8) == 1 && cs[0] == 1,
            "a chat every member got live is not stored");
    h_close(ca);
    h_close(cb);
    h_close(cc);

    start_log_off(&k);
    cc = login_expecting_offline(&c, QC_GROUP_CHAT_MSG, NULL, 0, "c (had cseq 1 at login, 2 live)");
    cb = login_expecting_offline(&b, QC_GROUP_CHAT_MSG, NULL, 0, "b (got cseq 1 live)");
    ca = login_expecting_offline(&a, QC_GROUP_CHAT_MSG, NULL, 0, "a (the sender)");
    H_CHECK(group_chat(ca, gid, "after the restart") == 3, "group cseq continues at 3");
    json_object_put(h_expect(cb, QC_GROUP_CHAT_MSG, "group chat to b"));
    json_object_put(h_expect(cc, QC_GROUP_CHAT_MSG, "group chat to c"));
    h_close(ca);
    h_close(cb);
    h_close(cc);
    end_log_off(&k);
}

static void test_no_worker_died_and_sigterm_stops(void **state)
{
    (void)state;
    h_stop_and_check_clean();
}

static int group_setup(void **state)
{
    (void)state;
    static const char *const opts[] = { "limits.max_offline_messages=5",
                                        "limits.max_login_reply_bytes=4096", NULL };
    return h_group_setup_with(opts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        H_TEST(test_cseq_on_ack_and_forward),
        H_TEST(test_offline_items_carry_cseq_once),
        H_TEST(test_sender_named_with_a_trailing_comma),
        H_TEST(test_history_pages),
        H_TEST(test_history_errors),
        H_TEST(test_group_log_stored_once),
        H_TEST(test_conversations_and_unread),
        H_TEST(test_read_cursor_and_receipt),
        H_TEST(test_typing),
        H_TEST(test_typing_blocked),
        H_TEST(test_login_reply_count_cap),
        H_TEST(test_legacy_forward_shape),
        H_TEST(test_login_reply_byte_cap),
        /* log-b */
        H_TEST(test_log_request_field_errors),
        H_TEST(test_typing_rate_limit_and_group),
        H_TEST(test_receipt_across_workers_and_no_self_push),
        H_TEST(test_purge_max_per_conversation),                    /* restarts the server */
        H_TEST(test_purge_walks_every_conversation),                /* restarts the server */
        H_TEST(test_history_disabled_keeps_only_undelivered),       /* restarts the server */
        H_TEST(test_full_queue_holds_the_sender),                   /* restarts the server */
        H_TEST(test_log_off_keeps_only_undelivered_chats),          /* restarts the server */
        H_TEST(test_log_off_group_stores_once_for_offline_members), /* restarts the server */
        H_TEST(test_log_off_marks_of_many_conversations),           /* restarts the server */
        H_TEST(test_no_worker_died_and_sigterm_stops),
    };
    h_apply_filter();
    return cmocka_run_group_tests_name("log", tests, group_setup, h_group_teardown);
}
