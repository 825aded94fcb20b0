/*
 * test_sessions.c - several devices per account, login tokens and password
 * change (issue 15), against a private qchatd with 4 workers: each
 * [session] mode (takeover, refuse, multi) with the device rule, a chat
 * reaching every session of a user and echoed to the sender's other
 * sessions, presence while any session is online, the oldest session
 * kicked beyond max_devices, tokens (login without the password, errno 24,
 * expiry, revocation by LOGINOUT and by a password change, the failed-login
 * throttle), and PASSWORD_MSG 48.  Each test starts its own server with
 * the mode it needs (the failed-login throttle lives in the server's
 * shared memory, so tests do not share it).
 */
#include "harness.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MULTI_DEVICES      5  /* sessions of one account in the fan-out test */
#define SPREAD_DEVICES_MAX 16 /* sessions the DEVICES test opens to reach a second worker */
#define THROTTLE_AFTER     5  /* failed logins before guard.c refuses (docs/SECURITY.md) */
#define TOKEN_LIFE_S       1  /* session.token_seconds in the expiry test */
#define TOKEN_CHARS        43 /* base64url of 32 bytes */
#define EXPIRY_WAIT_US     2500000
#define STR_(x)            #x
#define STR(x)             STR_(x)

static void start_mode(const char *mode, const char *extra)
{
    char mode_opt[64];
    snprintf(mode_opt, sizeof mode_opt, "session.mode=%s", mode);
    const char *opts[] = { mode_opt, extra, NULL }; /* each becomes -o KEY=VALUE */
    server_stop();                                  /* the previous test's, if it failed */
    H_CHECK(server_start(opts) == 0, "qchatd (session.mode=%s) did not start", mode);
}

static void stop_clean(void)
{
    h_stop_and_check_clean();
    server_stop();
}

/* A LOGIN on a new connection with extra fields; returns the connection and the ACK. */
static struct qclient *login_with(const struct h_user *u, const char *fields,
                                  struct json_object **ack)
{
    struct qclient *c = h_connect();
    h_send(c, "{\"msgid\":1,\"id\":%d%s%s,\"seq\":%lld}", u->id, fields[0] ? "," : "", fields,
           (long long)h_next_seq());
    *ack = h_expect(c, QC_LOGIN_MSG_ACK, "LOGIN reply");
    return c;
}

/* Log in with the password and extra fields; the login must succeed. */
static struct qclient *login_ok(const struct h_user *u, const char *fields)
{
    char all[256];
    struct json_object *ack;
    snprintf(all, sizeof all, "\"password\":%s%s%s", h_q(u->password), fields[0] ? "," : "",
             fields);
    struct qclient *c = login_with(u, all, &ack);
    H_CHECK(h_int(ack, "errno") == 0, "login of %d with %s: %s", u->id, fields, h_json(ack));
    json_object_put(ack);
    return c;
}

/* Log in with the password and extra fields; the login must fail with err. */
static void login_fails(const struct h_user *u, const char *fields, int err)
{
    char all[256];
    struct json_object *ack;
    snprintf(all, sizeof all, "\"password\":%s%s%s", h_q(u->password), fields[0] ? "," : "",
             fields);
    struct qclient *c = login_with(u, all, &ack);
    H_CHECK(h_int(ack, "errno") == err, "login of %d with %s: want errno %d, got %s", u->id, fields,
            err, h_json(ack));
    json_object_put(ack);
    h_close(c);
}

/* The password login asking for a token; returns its connection, the token in tok. */
static struct qclient *login_for_token(const struct h_user *u, const char *device, char *tok)
{
    char fields[160];
    struct json_object *ack;
    snprintf(fields, sizeof fields, "\"password\":%s,\"token\":true,\"device\":%s",
             h_q(u->password), h_q(device));
    struct qclient *c = login_with(u, fields, &ack);
    H_CHECK(h_int(ack, "errno") == 0 && h_has(ack, "token"), "token login: %s", h_json(ack));
    const char *t = h_str(ack, "token");
    H_CHECK(strlen(t) == TOKEN_CHARS, "token of %zu chars: %s", strlen(t), t);
    strcpy(tok, t);
    json_object_put(ack);
    return c;
}

/* A LOGIN with a token; returns its errno (the connection is closed unless kept). */
static int token_login(const struct h_user *u, const char *tok, struct qclient **keep)
{
    char fields[160];
    struct json_object *ack;
    snprintf(fields, sizeof fields, "\"token\":%s", h_q(tok));
    struct qclient *c = login_with(u, fields, &ack);
    int err = (int)h_int(ack, "errno");
    if (err == 0)
        H_CHECK(h_int(ack, "id") == u->id && strcmp(h_str(ack, "name"), u->name) == 0,
                "token login reply names another user: %s", h_json(ack));
    json_object_put(ack);
    if (keep && err == 0)
        *keep = c;
    else
        h_close(c);
    return err;
}

static int64_t send_chat(struct qclient *c, int32_t toid, const char *text)
{
    int64_t seq = h_next_seq();
    h_send(c, "{\"msgid\":5,\"toid\":%d,\"msg\":%s,\"seq\":%lld}", toid, h_q(text), (long long)seq);
    return seq;
}

/* c is told it was replaced (KICK) and closed. */
static void expect_kicked(struct qclient *c, const char *what)
{
    json_object_put(h_expect(c, QC_KICK_MSG, what));
    h_expect_eof(c, what);
}

/* The next object on c is the chat text from from_id. */
static void expect_chat(struct qclient *c, int32_t from_id, const char *text, const char *what)
{
    struct json_object *m = h_expect(c, QC_ONE_CHAT_MSG, what);
    H_CHECK(h_int(m, "id") == from_id && strcmp(h_str(m, "msg"), text) == 0,
            "%s: want %s from %d, got %s", what, text, from_id, h_json(m));
    json_object_put(m);
}

/* ---- takeover -------------------------------------------------------- */

static void test_takeover_kicks_older_session(void **state)
{
    start_mode("takeover", NULL);
    struct h_user a, b;
    struct qclient *old = h_new_user(&a, "tk");
    struct qclient *cb = h_new_user(&b, "tkb");
    struct qclient *phone = login_ok(&a, "\"device\":\"phone\"");
    expect_kicked(old, "the older session (another device) in takeover");
    struct qclient *again = login_ok(&a, "");
    expect_kicked(phone, "the phone session, by a login without device");
    send_chat(cb, a.id, "only the newest");
    expect_chat(again, b.id, "only the newest", "the newest session gets the chat");
    h_close(again);
    h_close(cb);
    stop_clean();
}

/* ---- refuse ---------------------------------------------------------- */

static void test_refuse_mode(void **state)
{
    start_mode("refuse", NULL);
    struct h_user a;
    struct qclient *first = h_new_user(&a, "rf");
    login_fails(&a, "", QC_ERESERVED2);
    login_fails(&a, "\"device\":\"laptop\"", QC_ERESERVED2);
    h_expect_quiet(first, "the first session is untouched by refused logins");
    /* The seed's behaviour: after the first logs out, the next login works. */
    json_object_put(h_request(first, QC_LOGINOUT_MSG, 0, "LOGINOUT", "%s", ""));
    struct qclient *phone = login_ok(&a, "\"device\":\"phone\"");
    /* A device reconnecting replaces its own session, even in refuse. */
    struct qclient *phone2 = login_ok(&a, "\"device\":\"phone\"");
    expect_kicked(phone, "the phone's earlier session");
    login_fails(&a, "", QC_ERESERVED2);
    h_expect_quiet(phone2, "the phone session stays");
    h_close(phone2);
    h_close(first);
    stop_clean();
}

/* ---- multi ----------------------------------------------------------- */

static void test_multi_fanout_echo_and_oldest_kicked(void **state)
{
    start_mode("multi", "session.max_devices=" STR(MULTI_DEVICES));
    struct h_user a, b;
    struct qclient *cb = h_new_user(&b, "mub");
    h_new_offline_user(&a, "mu");
    struct qclient *dev[MULTI_DEVICES + 1];
    for (int i = 0; i < MULTI_DEVICES; i++) {
        char f[48];
        snprintf(f, sizeof f, "\"device\":\"dev%d\"", i);
        dev[i] = login_ok(&a, f);
    }
    /* The sessions are spread over the workers: the control socket lists each. */
    int32_t ids[64];
    int workers[64], seen = 0, nsess = 0;
    int n = h_ctl_users(ids, workers, 64);
    for (int i = 0; i < n; i++)
        if (ids[i] == a.id) {
            nsess++;
            seen |= 1 << workers[i];
        }
    H_CHECK(nsess == MULTI_DEVICES, "control socket lists %d sessions of %d, want %d", nsess, a.id,
            MULTI_DEVICES);
    print_message("%d sessions on worker mask %#x\n", nsess, seen);

    /* A chat to the user reaches every session, once. */
    int64_t seq = send_chat(cb, a.id, "to every device");
    json_object_put(h_expect_ack(cb, QC_ONE_CHAT_MSG, seq, 0, "ACK of the chat to every device"));
    for (int i = 0; i < MULTI_DEVICES; i++)
        expect_chat(dev[i], b.id, "to every device", "each device gets the chat");
    /* The user's own chat is echoed to the other sessions, not to the sender. */
    seq = send_chat(dev[2], b.id, "from dev2");
    json_object_put(h_expect_ack(dev[2], QC_ONE_CHAT_MSG, seq, 0, "ACK of dev2's chat"));
    expect_chat(cb, a.id, "from dev2", "the other user gets it");
    for (int i = 0; i < MULTI_DEVICES; i++)
        if (i != 2) {
            struct json_object *m = h_expect(dev[i], QC_ONE_CHAT_MSG, "echo to the other devices");
            H_CHECK(h_int(m, "id") == a.id && h_int(m, "toid") == b.id &&
                        strcmp(h_str(m, "msg"), "from dev2") == 0,
                    "echo: %s", h_json(m));
            json_object_put(m);
        }
    h_expect_quiet(dev[2], "the sender gets no echo of its own chat");

    /* One device too many: the oldest session is kicked, the others stay. */
    dev[MULTI_DEVICES] = login_ok(&a, "\"device\":\"one-more\"");
    expect_kicked(dev[0], "the oldest session beyond max_devices");
    for (int i = 1; i <= MULTI_DEVICES; i++)
        h_expect_quiet(dev[i], "the other sessions stay");
    for (int i = 1; i <= MULTI_DEVICES; i++)
        h_close(dev[i]);
    h_close(cb);
    stop_clean();
}

/* Presence: a friend sees the user online while any device is. */
static void test_multi_presence_while_any_session(void **state)
{
    start_mode("multi", "social.friend_consent=no");
    struct h_user a, f;
    struct qclient *cf = h_new_user(&f, "muf");
    struct qclient *a1 = h_new_user(&a, "mup");
    json_object_put(h_request(a1, QC_ADD_FRIEND_MSG, 0, "ADD_FRIEND", "\"friendid\":%d", f.id));
    h_close(cf);
    cf = h_login_presence(&f, NULL);
    struct qclient *a2 = login_ok(&a, "\"device\":\"second\"");
    struct json_object *p = h_expect_skip(cf, QC_PRESENCE_MSG, "online notice of the 2nd device");
    H_CHECK(strcmp(h_str(p, "state"), QC_STATE_ONLINE) == 0, "presence: %s", h_json(p));
    json_object_put(p);
    h_close(a1);
    h_expect_quiet(cf, "no offline notice while the second device is online");
    H_CHECK(h_wait_online(a.id, true, 1000), "user offline with a session left");
    h_close(a2);
    p = h_expect_skip(cf, QC_PRESENCE_MSG, "offline notice after the last device");
    H_CHECK(strcmp(h_str(p, "state"), QC_STATE_OFFLINE) == 0, "presence: %s", h_json(p));
    json_object_put(p);
    h_close(cf);
    stop_clean();
}

/* The cseq of the next chat on c, which must be text from from_id. */
static int64_t expect_chat_cseq(struct qclient *c, int32_t from_id, const char *text,
                                const char *what)
{
    struct json_object *m = h_expect(c, QC_ONE_CHAT_MSG, what);
    H_CHECK(h_int(m, "id") == from_id && strcmp(h_str(m, "msg"), text) == 0 && h_has(m, "cseq"),
            "%s: want %s from %d with cseq, got %s", what, text, from_id, h_json(m));
    int64_t cseq = h_int(m, "cseq");
    json_object_put(m);
    return cseq;
}

/*
 * READ on one device is pushed to the others (msgid 24); a device away for
 * a while finds what the others received meanwhile through CONVERSATIONS
 * and HISTORY after its own last cseq (the account-level delivered cursor
 * does not bring it back in its login reply: another device had it).
 */
static void test_multi_read_sync_and_device_catch_up(void **state)
{
    start_mode("multi", NULL);
    struct h_user a, b;
    struct qclient *cb = h_new_user(&b, "rsb");
    h_new_offline_user(&a, "rsa");
    struct qclient *phone = login_ok(&a, "\"device\":\"phone\"");
    struct qclient *laptop = login_ok(&a, "\"device\":\"laptop\"");
    int64_t seq = send_chat(cb, a.id, "m1");
    json_object_put(h_expect_ack(cb, QC_ONE_CHAT_MSG, seq, 0, "ACK m1"));
    int64_t c1 = expect_chat_cseq(phone, b.id, "m1", "phone gets m1");
    H_CHECK(expect_chat_cseq(laptop, b.id, "m1", "laptop gets m1") == c1, "same cseq");

    json_object_put(h_request(phone, 24, 0, "READ on the phone", "\"with\":%d,\"cseq\":%lld", b.id,
                              (long long)c1));
    struct json_object *r = h_expect(laptop, 24, "the READ pushed to the laptop");
    H_CHECK(h_int(r, "with") == b.id && h_int(r, "cseq") == c1, "READ push: %s", h_json(r));
    json_object_put(r);
    h_expect_quiet(phone, "the reader gets no push of its own READ");

    /* The laptop goes away; the phone receives three more. */
    h_close(laptop);
    const char *texts[] = { "m2", "m3", "m4" };
    int64_t last = c1;
    for (int i = 0; i < 3; i++) {
        seq = send_chat(cb, a.id, texts[i]);
        json_object_put(h_expect_ack(cb, QC_ONE_CHAT_MSG, seq, 0, "ACK while the laptop is away"));
        last = expect_chat_cseq(phone, b.id, texts[i], "phone gets it");
    }
    H_CHECK(last == c1 + 3, "cseqs %lld..%lld", (long long)c1, (long long)last);

    /* The laptop comes back with its own position, c1. */
    struct json_object *ack;
    char f[160];
    snprintf(f, sizeof f, "\"password\":%s,\"device\":\"laptop\"", h_q(a.password));
    laptop = login_with(&a, f, &ack);
    H_CHECK(h_int(ack, "errno") == 0 && h_arr_len_opt(ack, "offlinemsg") == 0,
            "the account's delivered cursor is past them (the phone had them): %s", h_json(ack));
    json_object_put(ack);
    h_send(laptop, "{\"msgid\":22,\"seq\":%lld}", (long long)h_next_seq());
    struct json_object *convs = h_expect(laptop, 23, "CONVERSATIONS");
    struct json_object *arr = h_arr(convs, "convs");
    H_CHECK(json_object_array_length(arr) == 1, "one conversation: %s", h_json(convs));
    struct json_object *cv = json_object_array_get_idx(arr, 0);
    H_CHECK(h_int(cv, "with") == b.id && h_int(cv, "last_cseq") == last &&
                h_int(cv, "read_cseq") == c1,
            "conversation: %s", h_json(convs));
    json_object_put(convs);
    h_send(laptop, "{\"msgid\":20,\"with\":%d,\"after\":%lld,\"seq\":%lld}", b.id, (long long)c1,
           (long long)h_next_seq());
    struct json_object *hist = h_expect(laptop, 21, "HISTORY after the laptop's cseq");
    struct json_object *msgs = h_arr(hist, "msgs");
    H_CHECK(json_object_array_length(msgs) == 3, "three missed: %s", h_json(hist));
    for (size_t i = 0; i < 3; i++) {
        struct json_object *m = json_object_array_get_idx(msgs, i);
        H_CHECK(h_int(m, "cseq") == c1 + 1 + (int64_t)i && strcmp(h_str(m, "msg"), texts[i]) == 0,
                "missed message %zu: %s", i, h_json(hist));
    }
    json_object_put(hist);
    h_close(laptop);
    h_close(phone);
    h_close(cb);
    stop_clean();
}

/* ---- tokens ---------------------------------------------------------- */

static void test_token_login_and_revocations(void **state)
{
    start_mode("takeover", NULL);
    struct h_user a;
    char tok[TOKEN_CHARS + 1], tok2[TOKEN_CHARS + 1];
    h_new_offline_user(&a, "tok");
    struct qclient *c = login_for_token(&a, "laptop", tok);
    struct qclient *c2 = NULL;
    H_CHECK(token_login(&a, tok, &c2) == 0, "login with the token refused");
    expect_kicked(c, "the password session, replaced by the token login");
    /* LOGINOUT revoke: true ends the token. */
    json_object_put(h_request(c2, QC_LOGINOUT_MSG, 0, "LOGINOUT revoke", "\"revoke\":true"));
    h_close(c2);
    H_CHECK(token_login(&a, tok, NULL) == QC_EBADTOKEN, "a revoked token still logs in");

    /* A password change revokes every token. */
    c = login_for_token(&a, "phone", tok);
    h_close(c);
    c = login_for_token(&a, "tablet", tok2);
    json_object_put(h_request(c, QC_PASSWORD_MSG, QC_EAUTH, "PASSWORD with a wrong old one",
                              "\"old\":\"not-it\",\"new\":\"whatever1\""));
    H_CHECK(token_login(&a, tok, &c2) == 0, "a wrong old password revoked the tokens");
    expect_kicked(c, "tablet session replaced by phone token login (takeover)");
    json_object_put(h_request(c2, QC_PASSWORD_MSG, 0, "PASSWORD",
                              "\"old\":%s,\"new\":\"n3w-password\"", h_q(a.password)));
    /* (each bad attempt below counts in the failed-login throttle: 3 of them) */
    char old_password[H_PASSWORD_LEN];
    strcpy(old_password, a.password);
    strcpy(a.password, "n3w-password");
    h_close(login_ok(&a, "\"device\":\"tablet\""));
    H_CHECK(token_login(&a, tok, NULL) == QC_EBADTOKEN, "token alive after a password change");
    H_CHECK(token_login(&a, tok2, NULL) == QC_EBADTOKEN, "2nd token alive after the change");
    strcpy(a.password, old_password);
    login_fails(&a, "", QC_EAUTH);
    h_close(c2);
    stop_clean();
}

/* qchatctl revoke ID: a worker revokes every token of the user and answers. */
static void test_operator_revokes_tokens(void **state)
{
    start_mode("multi", NULL);
    struct h_user a;
    char t1[TOKEN_CHARS + 1], t2[TOKEN_CHARS + 1];
    h_new_offline_user(&a, "ctl");
    struct qclient *c1 = login_for_token(&a, "phone", t1);
    struct qclient *c2 = login_for_token(&a, "laptop", t2);
    char req[96];
    snprintf(req, sizeof req, "{\"cmd\":\"revoke\",\"id\":%d}", a.id);
    struct json_object *o = h_ctl(req);
    H_CHECK(o != NULL, "control socket revoke: no answer");
    struct json_object *ok;
    H_CHECK(json_object_object_get_ex(o, "ok", &ok) && json_object_get_boolean(ok) &&
                h_int(o, "revoked") == 2 && h_int(o, "id") == a.id,
            "revoke answer: %s", h_json(o));
    json_object_put(o);
    H_CHECK(token_login(&a, t1, NULL) == QC_EBADTOKEN, "phone token alive after revoke");
    H_CHECK(token_login(&a, t2, NULL) == QC_EBADTOKEN, "laptop token alive after revoke");
    h_expect_quiet(c1, "open sessions stay after a revoke");
    o = h_ctl("{\"cmd\":\"revoke\",\"id\":0}");
    H_CHECK(o != NULL && json_object_object_get_ex(o, "ok", &ok) && !json_object_get_boolean(ok),
            "revoke without an id: %s", h_json(o));
    json_object_put(o);
    h_close(c1);
    h_close(c2);
    stop_clean();
}

static void test_token_expires(void **state)
{
    start_mode("takeover", "session.token_seconds=" STR(TOKEN_LIFE_S));
    struct h_user a;
    char tok[TOKEN_CHARS + 1];
    h_new_offline_user(&a, "exp");
    h_close(login_for_token(&a, "phone", tok));
    usleep(EXPIRY_WAIT_US);
    H_CHECK(token_login(&a, tok, NULL) == QC_EBADTOKEN, "an expired token logs in");
    stop_clean();
}

static void test_bad_tokens_throttled_like_passwords(void **state)
{
    start_mode("takeover", NULL);
    struct h_user a, other;
    char tok[TOKEN_CHARS + 1];
    h_new_offline_user(&a, "thr");
    h_new_offline_user(&other, "tho");
    h_close(login_for_token(&a, "phone", tok));
    H_CHECK(token_login(&a, "not-a-token", NULL) == QC_EBADTOKEN, "a malformed token");
    /* another user's valid token is bad for this one */
    char other_tok[TOKEN_CHARS + 1];
    h_close(login_for_token(&other, "phone", other_tok));
    H_CHECK(token_login(&a, other_tok, NULL) == QC_EBADTOKEN, "another user's token");
    char wrong[TOKEN_CHARS + 1];
    strcpy(wrong, tok);
    wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
    for (int i = 2; i < THROTTLE_AFTER; i++)
        H_CHECK(token_login(&a, wrong, NULL) == QC_EBADTOKEN, "a wrong token, try %d", i);
    /* Now refused before any check, even with the right token. */
    H_CHECK(token_login(&a, tok, NULL) == QC_ERATE, "no throttle after %d bad tokens",
            THROTTLE_AFTER);
    stop_clean();
}

static void test_login_field_errors(void **state)
{
    start_mode("multi", NULL);
    struct h_user a;
    struct json_object *ack;
    h_new_offline_user(&a, "fe");
    char f[256];
    snprintf(f, sizeof f, "\"password\":%s,\"device\":%s", h_q(a.password),
             h_q(h_fill('d', 65, "")));
    struct qclient *c = login_with(&a, f, &ack);
    H_CHECK(h_int(ack, "errno") == QC_ETOOLONG, "device of 65 bytes: %s", h_json(ack));
    json_object_put(ack);
    h_close(c);
    snprintf(f, sizeof f, "\"password\":%s,\"device\":7", h_q(a.password));
    c = login_with(&a, f, &ack);
    H_CHECK(h_int(ack, "errno") == QC_EBADREQ, "device not a string: %s", h_json(ack));
    json_object_put(ack);
    h_close(c);
    c = login_with(&a, "\"token\":\"\"", &ack);
    H_CHECK(h_int(ack, "errno") == QC_EBADTOKEN, "empty token: %s", h_json(ack));
    json_object_put(ack);
    h_close(c);
    c = login_ok(&a, "");
    json_object_put(
        h_request(c, QC_PASSWORD_MSG, QC_EBADREQ, "PASSWORD without new", "\"old\":\"x\""));
    json_object_put(h_request(c, QC_PASSWORD_MSG, QC_EBADREQ, "PASSWORD with an empty new",
                              "\"old\":%s,\"new\":\"\"", h_q(a.password)));
    h_close(c);
    stop_clean();
}

/* Workers of this node holding a session of uid (control socket). */
static int workers_holding(int32_t uid)
{
    int32_t ids[256];
    int workers[256], mask = 0, count = 0;
    int n = h_ctl_users(ids, workers, 256);
    for (int i = 0; i < n; i++)
        if (ids[i] == uid && workers[i] >= 0 && workers[i] < 31 && !(mask & 1 << workers[i])) {
            mask |= 1 << workers[i];
            count++;
        }
    return count;
}

/*
 * DEVICES_MSG 49 on one node without Redis: the sessions are spread over
 * the workers, and the one asked lists every session with its device and
 * login time (kept beside the online table's entries, so another worker's
 * sessions are known too), "this" on the asking one; a session that ended
 * is gone.
 */
static void test_devices_lists_the_sessions(void **state)
{
    start_mode("multi", "session.max_devices=" STR(SPREAD_DEVICES_MAX));
    struct h_user a;
    h_new_offline_user(&a, "dev");
    struct qclient *phone = login_ok(&a, "\"device\":\"phone\"");
    struct qclient *plain = login_ok(&a, "");
    struct qclient *more[SPREAD_DEVICES_MAX];
    int nmore = 0;
    while (workers_holding(a.id) < 2 && nmore < SPREAD_DEVICES_MAX - 2) {
        char f[48];
        snprintf(f, sizeof f, "\"device\":\"dev%d\"", nmore);
        more[nmore++] = login_ok(&a, f);
    }
    H_CHECK(workers_holding(a.id) >= 2, "%d sessions, all on one worker", nmore + 2);
    print_message("devices: %d sessions on %d workers\n", nmore + 2, workers_holding(a.id));

    int64_t seq = h_next_seq();
    h_send(phone, "{\"msgid\":49,\"seq\":%lld}", (long long)seq);
    struct json_object *r = h_expect(phone, 50, "DEVICES reply");
    H_CHECK(h_int(r, "errno") == 0 && h_int(r, "seq") == seq, "DEVICES: %s", h_json(r));
    struct json_object *devs = h_arr(r, "devices");
    size_t want = (size_t)nmore + 2;
    H_CHECK(json_object_array_length(devs) == want, "%zu sessions listed, want %zu: %s",
            json_object_array_length(devs), want, h_json(r));
    int seen_phone = 0, seen_default = 0, seen_more = 0;
    for (size_t i = 0; i < want; i++) {
        struct json_object *d = json_object_array_get_idx(devs, i), *t;
        bool self = json_object_object_get_ex(d, "this", &t) && json_object_get_boolean(t);
        const char *name = h_str(d, "device");
        H_CHECK(h_int(d, "since") > 0, "every session has its login time: %s", h_json(r));
        H_CHECK(self == (strcmp(name, "phone") == 0), "\"this\" on the phone alone: %s", h_json(r));
        if (strcmp(name, "phone") == 0)
            seen_phone++;
        else if (strcmp(name, "default") == 0)
            seen_default++;
        else if (strncmp(name, "dev", 3) == 0 && atoi(name + 3) < nmore)
            seen_more++;
        else
            H_CHECK(false, "a device nobody logged in with: \"%s\" in %s", name, h_json(r));
    }
    H_CHECK(seen_phone == 1 && seen_default == 1 && seen_more == nmore,
            "phone, default and the %d others, each once: %s", nmore, h_json(r));
    json_object_put(r);
    for (int i = 0; i < nmore; i++)
        h_close(more[i]);
    h_close(plain);
    H_CHECK(h_wait_online(a.id, true, H_REPLY_MS), "the phone stays online");
    int64_t out_seq = h_next_seq();
    h_send(phone, "{\"msgid\":10,\"seq\":%lld}", (long long)out_seq);
    json_object_put(h_expect_ack(phone, 10, out_seq, 0, "LOGINOUT"));
    h_send(phone, "{\"msgid\":49,\"seq\":%lld}", (long long)h_next_seq());
    r = h_expect(phone, QC_ACK_MSG, "DEVICES without a session");
    H_CHECK(h_int(r, "errno") == QC_ENOTLOGGEDIN && h_int(r, "req") == 49, "want errno 8: %s",
            h_json(r));
    json_object_put(r);
    h_close(phone);
    stop_clean();
}

/* ---- a quick re-login on another worker --------------------------------- */

#define FENCE_MSGS      300   /* undelivered chats: a login reply of about 9 MB */
#define FENCE_MSG_BYTES 30000 /* each (limits.max_text_bytes raised for it) */
#define FENCE_RCVBUF    4096  /* the first session's receive buffer: its reply is not written */
#define FENCE_POOL      8     /* connections opened at once to spread over the workers */
#define FENCE_SETTLE_MS 100   /* the second login's worker reads meanwhile (without the fence) */
#define FENCE_READ_MS   10000 /* longest wait for a reply of several MB */
#define FENCE_REPLY_MAX "limits.max_login_reply_bytes=16777216"
#define FENCE_TEXT_MAX  "limits.max_text_bytes=32768"

/* The next object with msgid on r (others skipped); NULL on EOF or timeout. */
static struct json_object *raw_expect(struct h_raw *r, int msgid, int timeout_ms)
{
    int64_t deadline = h_now_ms() + timeout_ms;
    for (;;) {
        int left = (int)(deadline - h_now_ms());
        struct json_object *o = left > 0 ? h_raw_recv(r, left) : NULL;
        if (o == NULL || h_int(o, "msgid") == msgid)
            return o;
        json_object_put(o);
    }
}

static void raw_send_text(struct h_raw *r, const char *text)
{
    H_CHECK(h_raw_send(r, text, strlen(text)) == 0, "send %.200s: %s", text, strerror(errno));
}

static void raw_login_sent(struct h_raw *r, const struct h_user *u)
{
    char req[256];
    snprintf(req, sizeof req, "{\"msgid\":1,\"id\":%d,\"password\":%s,\"seq\":%lld}", u->id,
             h_q(u->password), (long long)h_next_seq());
    raw_send_text(r, req);
}

/*
 * FENCE_POOL raw connections, each left logged out on a known worker: opened
 * at once (the kernel queues them before any worker accepts), each logged in
 * as a fresh user to learn its worker, then LOGINOUT (the connection stays).
 */
static void raw_pool_on_workers(struct h_raw *pool, int *worker)
{
    for (int i = 0; i < FENCE_POOL; i++)
        h_raw_connect(&pool[i], 0);
    for (int i = 0; i < FENCE_POOL; i++) {
        struct h_user u;
        h_new_offline_user(&u, "fpool");
        raw_login_sent(&pool[i], &u);
        struct json_object *ack = raw_expect(&pool[i], QC_LOGIN_MSG_ACK, H_REPLY_MS);
        H_CHECK(ack != NULL && h_int(ack, "errno") == 0, "pool login: %s", h_json(ack));
        json_object_put(ack);
        worker[i] = h_worker_of(u.id);
        raw_send_text(&pool[i], "{\"msgid\":10,\"seq\":1}");
        struct json_object *out = raw_expect(&pool[i], QC_ACK_MSG, H_REPLY_MS);
        H_CHECK(out != NULL && h_int(out, "errno") == 0, "pool LOGINOUT: %s", h_json(out));
        json_object_put(out);
    }
}

/* Marks seen[cseq] for every offlinemsg item of a LOGIN_MSG_ACK; returns how many. */
static int offline_cseqs(struct json_object *ack, bool *seen, int max)
{
    size_t n = h_arr_len_opt(ack, "offlinemsg");
    for (size_t i = 0; i < n; i++) {
        struct json_object *m = h_parse_item(h_arr(ack, "offlinemsg"), i, "offlinemsg item");
        int64_t cseq = h_int(m, "cseq");
        H_CHECK(cseq >= 1 && cseq <= max, "offline cseq %lld outside 1..%d", (long long)cseq, max);
        H_CHECK(!seen[cseq], "cseq %lld twice in one reply", (long long)cseq);
        seen[cseq] = true;
        json_object_put(m);
    }
    return (int)n;
}

static bool worker_of_is(void *arg)
{
    const int *want = arg; /* {user id, worker} */
    return h_worker_of(want[0]) == want[1];
}

/*
 * The first session's login reply (many offline messages) is still being
 * written, its reader slow, when the same account logs in on another
 * worker: the second login must not read the delivered cursors before the
 * first reply's fate is known.  first_reads: the first client then reads
 * its reply whole, and the second reply carries none of its messages; else
 * it hangs up unread, and the second reply carries them all.  Together the
 * replies carry every message.
 */
static void relogin_while_reply_unwritten(bool first_reads)
{
    const char *opts[] = { "session.mode=takeover", "security.request_rate=0", FENCE_REPLY_MAX,
                           FENCE_TEXT_MAX, NULL };
    server_stop();
    H_CHECK(server_start(opts) == 0, "qchatd did not start");
    struct h_raw pool[FENCE_POOL];
    int pool_worker[FENCE_POOL];
    raw_pool_on_workers(pool, pool_worker);

    struct h_user x, s;
    h_new_offline_user(&x, "fence");
    struct qclient *sc = h_new_user(&s, "fsend");
    for (int i = 0; i < FENCE_MSGS; i++)
        h_send(sc, "{\"msgid\":5,\"toid\":%d,\"msg\":\"%s\",\"seq\":%lld}", x.id,
               h_fill('f', FENCE_MSG_BYTES, ""), (long long)h_next_seq());
    for (int i = 0; i < FENCE_MSGS; i++) {
        struct json_object *ack = h_expect(sc, QC_ACK_MSG, "chat ACK");
        H_CHECK(h_int(ack, "errno") == 0 && h_int(ack, "cseq") == i + 1, "chat %d: %s", i + 1,
                h_json(ack));
        json_object_put(ack);
    }

    /* First session: logs in, its reply queued but held up by a small receive buffer. */
    struct h_raw first;
    h_raw_connect(&first, FENCE_RCVBUF);
    raw_login_sent(&first, &x);
    struct pollfd pf = { .fd = first.fd, .events = POLLIN };
    H_CHECK(poll(&pf, 1, FENCE_READ_MS) == 1, "the first login's reply never began");
    int a = h_worker_of(x.id);
    H_CHECK(a >= 0, "user %d is online", x.id);

    /* Second login of the same account on another worker, the first reply unread. */
    int k = 0;
    while (k < FENCE_POOL && pool_worker[k] == a)
        k++;
    H_CHECK(k < FENCE_POOL, "no pool connection on a worker other than %d", a);
    raw_login_sent(&pool[k], &x);
    int moved[2] = { x.id, pool_worker[k] };
    H_CHECK(h_wait_for(worker_of_is, moved, H_REPLY_MS), "the second login took over");
    h_sleep_ms(FENCE_SETTLE_MS);
    if (!first_reads)
        h_raw_close(&first); /* unread bytes: a reset, the reply never written whole */

    bool seen1[FENCE_MSGS + 1] = { false }, seen2[FENCE_MSGS + 1] = { false };
    struct json_object *ack1 =
        first_reads ? raw_expect(&first, QC_LOGIN_MSG_ACK, FENCE_READ_MS) : NULL;
    H_CHECK(ack1 != NULL || !first_reads, "the first login's reply, read at once, came whole");
    int n1 = ack1 ? offline_cseqs(ack1, seen1, FENCE_MSGS) : 0;
    json_object_put(ack1);
    struct json_object *ack2 = raw_expect(&pool[k], QC_LOGIN_MSG_ACK, FENCE_READ_MS);
    H_CHECK(ack2 != NULL && h_int(ack2, "errno") == 0, "second login: %s", h_json(ack2));
    int n2 = offline_cseqs(ack2, seen2, FENCE_MSGS);
    json_object_put(ack2);
    print_message("fence: first reply %s with %d message(s), second %d (workers %d, %d)\n",
                  ack1 ? "whole" : "cut", n1, n2, a, pool_worker[k]);
    int both = 0;
    for (int c = 1; c <= FENCE_MSGS; c++) {
        H_CHECK(seen1[c] || seen2[c], "cseq %d in neither reply", c);
        both += seen1[c] && seen2[c];
    }
    H_CHECK(both == 0, "%d message(s) in both replies, the first written whole", both);

    if (first_reads)
        h_raw_close(&first);
    for (int i = 0; i < FENCE_POOL; i++)
        h_raw_close(&pool[i]);
    h_close(sc);
    stop_clean();
}

static void test_relogin_on_another_worker_while_reply_unwritten(void **state)
{
    (void)state;
    relogin_while_reply_unwritten(true);
}

static void test_relogin_on_another_worker_reply_never_written(void **state)
{
    (void)state;
    relogin_while_reply_unwritten(false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        H_TEST(test_takeover_kicks_older_session),
        H_TEST(test_refuse_mode),
        H_TEST(test_multi_fanout_echo_and_oldest_kicked),
        H_TEST(test_multi_presence_while_any_session),
        H_TEST(test_multi_read_sync_and_device_catch_up),
        H_TEST(test_token_login_and_revocations),
        H_TEST(test_operator_revokes_tokens),
        H_TEST(test_token_expires),
        H_TEST(test_bad_tokens_throttled_like_passwords),
        H_TEST(test_login_field_errors),
        H_TEST(test_devices_lists_the_sessions),
        H_TEST(test_relogin_on_another_worker_while_reply_unwritten),
        H_TEST(test_relogin_on_another_worker_reply_never_written),
    };
    h_apply_filter();
    return cmocka_run_group_tests_name("sessions", tests, NULL, h_group_teardown);
}
