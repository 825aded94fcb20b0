/*
 * test_client_v2.c - the qchat terminal client's version 2 behaviour
 * (issues 11, 12, 15) in script mode, against a scripted fake server in
 * this process: a loopback listener on a free port that reads the JSON
 * requests qchat sends, checks their exact fields against DESIGN.md
 * "Version 2", and answers with canned replies and pushes.  The real
 * server grows these messages on other branches; these tests pin the
 * client's side of the contract: every new command's request and printed
 * line, the pushes, dedupe by (conversation, cseq), READ after what was
 * shown, the login's version 2 fields, the reconnect with the token (after
 * a close, and after the server is gone and back on the same port), no
 * reconnect after a kick, and "login timeout".
 *
 * The fake server is driven step by step from the test thread: qchat
 * blocks on each reply, so "read request, answer, read qchat's line" is
 * deterministic without threads.
 */
#include "harness.h"
#include "qchat_run.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/frame.h"

#define ACCEPT_MS    10000 /* a (re)connection from qchat; covers the backoff */
#define QUIET_MS     1500  /* "nothing happens" windows */
#define REQUEST_MS   5000  /* one request from qchat */
#define FAKE_BUF     (64 * 1024)
#define FAKE_OBJ_MAX (1u << 20)

#define ME_ID    5
#define ME_NAME  "alice"
#define BOB_ID   7
#define CAROL_ID 8
#define GROUP_ID 9
#define TIME     "2026-12-06 10:00:00"

/* ---- the fake server ---------------------------------------------------- */

struct fake {
    int lfd; /* listening socket, -1 when stopped */
    int port;
    int cfd; /* the accepted connection, -1 when none */
    struct frame_reader fr;
    char buf[FAKE_BUF];
    size_t len;
};

static struct fake *fakes[4];

static void fake_listen(struct fake *f, int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    socklen_t slen = sizeof sa;
    int one = 1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    H_CHECK(f->lfd >= 0, "socket: %s", strerror(errno));
    H_CHECK(setsockopt(f->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0, "SO_REUSEADDR");
    H_CHECK(bind(f->lfd, (struct sockaddr *)&sa, sizeof sa) == 0, "bind 127.0.0.1:%d: %s", port,
            strerror(errno));
    H_CHECK(listen(f->lfd, 8) == 0, "listen: %s", strerror(errno));
    H_CHECK(getsockname(f->lfd, (struct sockaddr *)&sa, &slen) == 0, "getsockname");
    f->port = ntohs(sa.sin_port);
}

static void fake_start(struct fake *f)
{
    memset(f, 0, sizeof *f);
    f->cfd = -1;
    H_CHECK(frame_reader_init(&f->fr, FAKE_OBJ_MAX) == 0, "frame reader");
    fake_listen(f, 0);
    for (size_t i = 0; i < sizeof fakes / sizeof fakes[0]; i++)
        if (fakes[i] == NULL) {
            fakes[i] = f;
            break;
        }
}

static void fake_drop(struct fake *f)
{
    if (f->cfd >= 0)
        close(f->cfd);
    f->cfd = -1;
    f->len = 0;
    frame_reader_reset(&f->fr);
}

/* Stop listening too (the server is gone); fake_listen(f, f->port) brings it back. */
static void fake_stop_listening(struct fake *f)
{
    fake_drop(f);
    if (f->lfd >= 0)
        close(f->lfd);
    f->lfd = -1;
}

static void fake_free(struct fake *f)
{
    fake_stop_listening(f);
    frame_reader_free(&f->fr);
    for (size_t i = 0; i < sizeof fakes / sizeof fakes[0]; i++)
        if (fakes[i] == f)
            fakes[i] = NULL;
}

/* Wait up to ms for a connection; true when one was accepted. */
static bool fake_try_accept(struct fake *f, int ms)
{
    struct pollfd pf = { .fd = f->lfd, .events = POLLIN };

    fake_drop(f);
    if (poll(&pf, 1, ms) <= 0)
        return false;
    f->cfd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
    return f->cfd >= 0;
}

static void fake_accept(struct fake *f, const char *what)
{
    H_CHECK(fake_try_accept(f, ACCEPT_MS), "%s: qchat did not connect within %d ms", what,
            ACCEPT_MS);
}

/* Next object qchat sent, or NULL after ms (or at EOF: *eof set). */
static struct json_object *fake_recv(struct fake *f, int ms, bool *eof)
{
    int64_t deadline = h_now_ms() + ms;

    *eof = false;
    for (;;) {
        struct json_object *obj = NULL;
        size_t used = 0;
        enum frame_status st = FRAME_NEED_MORE;

        if (f->len > 0) {
            st = frame_read(&f->fr, f->buf, f->len, &used, &obj);
            memmove(f->buf, f->buf + used, f->len - used);
            f->len -= used;
        }
        if (st == FRAME_OBJECT)
            return obj;
        H_CHECK(st == FRAME_NEED_MORE, "qchat sent malformed JSON");
        int left = (int)(deadline - h_now_ms());
        struct pollfd pf = { .fd = f->cfd, .events = POLLIN };
        if (left <= 0 || poll(&pf, 1, left) <= 0)
            return NULL;
        ssize_t n = read(f->cfd, f->buf + f->len, sizeof f->buf - f->len);
        if (n <= 0) {
            *eof = true;
            return NULL;
        }
        f->len += (size_t)n;
    }
}

/* The next request must have msgid; returned for more checks (caller puts). */
static struct json_object *fake_expect(struct fake *f, int msgid, const char *what)
{
    bool eof;
    struct json_object *obj = fake_recv(f, REQUEST_MS, &eof);

    H_CHECK(obj != NULL, "%s: no request from qchat within %d ms%s", what, REQUEST_MS,
            eof ? " (it closed the connection)" : "");
    H_CHECK(h_int(obj, "msgid") == msgid, "%s: want msgid %d, got %s", what, msgid, h_json(obj));
    return obj;
}

/* Nothing more from qchat for ms (no READ, no request). */
static void fake_expect_nothing(struct fake *f, int ms, const char *what)
{
    bool eof;
    struct json_object *obj = fake_recv(f, ms, &eof);

    H_CHECK(obj == NULL, "%s: qchat sent %s", what, obj != NULL ? h_json(obj) : "");
}

static void fake_expect_eof(struct fake *f, const char *what)
{
    bool eof;
    struct json_object *obj = fake_recv(f, REQUEST_MS, &eof);

    H_CHECK(obj == NULL && eof, "%s: want the connection closed, got %s", what,
            obj != NULL ? h_json(obj) : "a timeout");
}

static void fake_send(struct fake *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fake_send(struct fake *f, const char *fmt, ...)
{
    char out[FAKE_BUF];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(out, sizeof out - 1, fmt, ap);
    va_end(ap);
    H_CHECK(n > 0 && (size_t)n < sizeof out - 1, "reply too long");
    out[n++] = '\n';
    H_CHECK(send(f->cfd, out, (size_t)n, MSG_NOSIGNAL) == n, "send to qchat: %s", strerror(errno));
}

/* The generic ACK for req: errno err, echoing its seq. */
static void fake_ack(struct fake *f, struct json_object *req, int err)
{
    fake_send(f, "{\"msgid\":11,\"errno\":%d,\"errmsg\":\"%s\",\"req\":%lld,\"seq\":%lld}", err,
              qc_strerror(err), (long long)h_int(req, "msgid"), (long long)h_int(req, "seq"));
}

/* Field checks on a request. */
static bool has_key(struct json_object *o, const char *key)
{
    struct json_object *v;
    return json_object_object_get_ex(o, key, &v);
}

static void check_int(struct json_object *o, const char *key, int64_t want, const char *what)
{
    H_CHECK(has_key(o, key) && h_int(o, key) == want, "%s: want \"%s\": %lld in %s", what, key,
            (long long)want, h_json(o));
}

static void check_str(struct json_object *o, const char *key, const char *want, const char *what)
{
    H_CHECK(has_key(o, key) && strcmp(h_str(o, key), want) == 0, "%s: want \"%s\": \"%s\" in %s",
            what, key, want, h_json(o));
}

static void check_true(struct json_object *o, const char *key, const char *what)
{
    struct json_object *v;
    H_CHECK(json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_boolean) &&
                json_object_get_boolean(v),
            "%s: want \"%s\": true in %s", what, key, h_json(o));
}

static void check_absent(struct json_object *o, const char *key, const char *what)
{
    H_CHECK(!has_key(o, key), "%s: \"%s\" must not be sent: %s", what, key, h_json(o));
}

/* A request with a positive integer seq (the client matches replies by it). */
static void check_seq(struct json_object *o, const char *what)
{
    H_CHECK(has_key(o, "seq") && h_int(o, "seq") > 0, "%s: want a seq in %s", what, h_json(o));
}

/* ---- the qchat process (qchat_run.c, on the fake's port) ------------- */

/* The next line must end with suffix (chat lines start with the server's time). */
static void qchat_next_ending(struct qchat_proc *p, const char *suffix, const char *what)
{
    char line[QCHAT_TRANSCRIPT_MAX];
    bool got = qchat_line(p, line, sizeof line, QCHAT_LINE_MS);
    size_t n = got ? strlen(line) : 0, k = strlen(suffix);

    H_CHECK(got && n >= k && strcmp(line + n - k, suffix) == 0,
            "%s: want a line ending in \"%s\", got \"%s\"; output:\n%s", what, suffix,
            got ? line : "(nothing)", p->transcript);
}

/* No line for ms. */
static void qchat_quiet(struct qchat_proc *p, int ms, const char *what)
{
    char line[QCHAT_TRANSCRIPT_MAX];

    H_CHECK(!qchat_line(p, line, sizeof line, ms), "%s: unexpected line \"%s\"; output:\n%s", what,
            line, p->transcript);
}

/* ---- common steps ------------------------------------------------------- */

static char first_device[128];

/*
 * LOGIN as sent by qchat: the version 2 fields (device, token, receipts,
 * typing) and either the password or the token.
 */
static void check_login_request(struct json_object *req, const char *password, const char *token)
{
    const char *what = "LOGIN_MSG from qchat";

    check_int(req, "id", ME_ID, what);
    check_true(req, "receipts", what);
    check_true(req, "typing", what);
    check_true(req, "presence", what);
    H_CHECK(has_key(req, "device") && strncmp(h_str(req, "device"), "qchat-", 6) == 0 &&
                strlen(h_str(req, "device")) <= 64,
            "device \"qchat-HOSTNAME\" (at most 64 bytes): %s", h_json(req));
    if (first_device[0] == '\0')
        snprintf(first_device, sizeof first_device, "%s", h_str(req, "device"));
    check_str(req, "device", first_device, "the same device name on every login");
    if (token != NULL) {
        check_str(req, "token", token, what);
        check_absent(req, "password", what);
    } else {
        check_str(req, "password", password, what);
        check_true(req, "token", what); /* asks for a token */
    }
}

/* Accept qchat's connection and check its LOGIN_MSG (see check_login_request). */
static void accept_login(struct fake *f, const char *password, const char *token, const char *what)
{
    fake_accept(f, what);
    struct json_object *req = fake_expect(f, QC_LOGIN_MSG, what);
    check_login_request(req, password, token);
    json_object_put(req);
}

/* The login reply: a friend (bob), and the given offlinemsg items (a JSON array body). */
static void send_login_ack(struct fake *f, const char *token, const char *offline)
{
    fake_send(f,
              "{\"msgid\":2,\"errno\":0,\"id\":%d,\"name\":\"" ME_NAME "\"%s%s%s,"
              "\"friends\":[\"{\\\"id\\\":%d,\\\"name\\\":\\\"bob\\\",\\\"state\\\":"
              "\\\"online\\\"}\"],\"offlinemsg\":[%s]}",
              ME_ID, token != NULL ? ",\"token\":\"" : "", token != NULL ? token : "",
              token != NULL ? "\"" : "", BOB_ID, offline != NULL ? offline : "");
}

/* A chat from bob to me as forwarded, with cseq; as a JSON text. */
static void bob_chat(char *out, size_t n, int64_t cseq, const char *text)
{
    snprintf(out, n,
             "{\"msgid\":5,\"id\":%d,\"name\":\"bob\",\"toid\":%d,\"msg\":\"%s\",\"time\":\"" TIME
             "\",\"ts\":1,\"mid\":%lld,\"cseq\":%lld}",
             BOB_ID, ME_ID, text, 1000 + (long long)cseq, (long long)cseq);
}

/* A login reply's offlinemsg item is a string holding the object (the seed's format). */
static void as_json_string(char *out, size_t n, const char *json)
{
    struct json_object *s = json_object_new_string(json);
    snprintf(out, n, "%s", json_object_to_json_string_ext(s, JSON_C_TO_STRING_PLAIN));
    json_object_put(s);
}

/* Start qchat and the fake, log in with password "pw", get token tok. */
static void login(struct qchat_proc *p, struct fake *f, const char *tok, const char *offline)
{
    char want[256];

    fake_start(f);
    qchat_start(p, f->port);
    qchat_cmd(p, "login:%d:pw", ME_ID);
    accept_login(f, "pw", NULL, "login");
    send_login_ack(f, tok, offline);
    snprintf(want, sizeof want, "logged in: id %d name " ME_NAME, ME_ID);
    qchat_next(p, want, "login");
    snprintf(want, sizeof want, "friend: %d bob online", BOB_ID);
    qchat_next(p, want, "friend line");
}

/* ---- tests -------------------------------------------------------------- */

/* The menu holds no connection; the login timeout says so, not "not logged in". */
static void test_connect_at_register_and_login_timeout(void **state)
{
    static struct qchat_proc p;
    static struct fake f;
    char want[128];

    fake_start(&f);
    qchat_start(&p, f.port);
    /* help lists every command, one line each, the last being quit */
    static const char *const names[] = {
        "help",     "chat",     "addfriend", "creategroup", "addgroup", "groupchat", "loginout",
        "history",  "ghistory", "convs",     "friends",     "accept",   "decline",   "unfriend",
        "block",    "unblock",  "members",   "leave",       "kick",     "role",      "rename",
        "delgroup", "passwd",   "login",     "register",    "wait",     "quit"
    };
    bool listed[sizeof names / sizeof names[0]] = { false };
    char line[256];
    qchat_cmd(&p, "help");
    do {
        H_CHECK(qchat_line(&p, line, sizeof line, QCHAT_LINE_MS), "help output:\n%s", p.transcript);
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strncmp(line, names[i], strlen(names[i])) == 0 && line[strlen(names[i])] == ' ')
                listed[i] = true;
    } while (strncmp(line, "quit ", 5) != 0);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        H_CHECK(listed[i], "help must list %s; output:\n%s", names[i], p.transcript);
    H_CHECK(!fake_try_accept(&f, 300), "qchat must not connect before login or register");

    qchat_cmd(&p, "register:bob:pw2");
    fake_accept(&f, "register");
    struct json_object *req = fake_expect(&f, QC_REG_MSG, "register");
    check_str(req, "name", "bob", "REG_MSG");
    check_str(req, "password", "pw2", "REG_MSG");
    json_object_put(req);
    fake_send(&f, "{\"msgid\":4,\"errno\":0,\"id\":12}");
    qchat_next(&p, "registered id 12", "register outcome");

    /* what qchatd does at security.login_timeout: error 8 without a request, then close */
    fake_send(&f, "{\"msgid\":11,\"errno\":8,\"errmsg\":\"not logged in\",\"req\":0}");
    fake_drop(&f);
    qchat_next(&p, "login timeout", "the login timeout");
    qchat_quiet(&p, 300, "nothing else after the login timeout");
    H_CHECK(!fake_try_accept(&f, 1000), "no reconnect without a session");

    qchat_cmd(&p, "login:12:pw2");
    fake_accept(&f, "login after the timeout");
    req = fake_expect(&f, QC_LOGIN_MSG, "login after the timeout");
    check_int(req, "id", 12, "LOGIN_MSG");
    json_object_put(req);
    fake_send(&f, "{\"msgid\":2,\"errno\":0,\"id\":12,\"name\":\"bob\"}");
    snprintf(want, sizeof want, "logged in: id 12 name bob");
    qchat_next(&p, want, "login after the timeout");
    qchat_quit(&p, "login after the timeout");
    fake_free(&f);
}

static void test_history_pages_and_read(void **state)
{
    static struct qchat_proc p;
    static struct fake f;
    char m1[512], m2[512], m3[512], m4[512], m5[512];

    login(&p, &f, "tok-h", NULL);
    bob_chat(m3, sizeof m3, 3, "three");
    bob_chat(m4, sizeof m4, 4, "four");
    snprintf(m5, sizeof m5,
             "{\"msgid\":5,\"id\":%d,\"name\":\"" ME_NAME "\",\"toid\":%d,\"msg\":\"five\","
             "\"time\":\"" TIME "\",\"cseq\":5}",
             ME_ID, BOB_ID);

    qchat_cmd(&p, "history:%d", BOB_ID);
    struct json_object *req = fake_expect(&f, 20, "history");
    check_int(req, "with", BOB_ID, "HISTORY_MSG");
    check_seq(req, "HISTORY_MSG");
    check_absent(req, "before", "HISTORY_MSG without a cursor");
    check_absent(req, "groupid", "HISTORY_MSG one-to-one");
    fake_send(&f,
              "{\"msgid\":21,\"errno\":0,\"seq\":%lld,\"with\":%d,\"msgs\":[%s,%s,%s],"
              "\"more\":true}",
              (long long)h_int(req, "seq"), BOB_ID, m3, m4, m5);
    json_object_put(req);
    qchat_next(&p, "history with 7: 3 messages", "history outcome");
    qchat_next_ending(&p, "[7]bob said: three", "oldest first");
    qchat_next(&p, "cseq 4: " TIME " [7]bob said: four", "each line with its cseq");
    qchat_next(&p, "cseq 5: " TIME " [5]alice said: five", "my own message in the page");
    qchat_next(&p, "more: history:7:3", "how to get the older page");

    /* the newest shown is marked read */
    req = fake_expect(&f, 24, "READ after the history page");
    check_int(req, "with", BOB_ID, "READ_MSG");
    check_int(req, "cseq", 5, "READ_MSG for the newest shown");
    check_absent(req, "groupid", "READ_MSG one-to-one");
    json_object_put(req);

    /* the older page: before = the oldest shown */
    bob_chat(m1, sizeof m1, 1, "one");
    bob_chat(m2, sizeof m2, 2, "two");
    qchat_cmd(&p, "history:%d:3", BOB_ID);
    req = fake_expect(&f, 20, "older page");
    check_int(req, "with", BOB_ID, "HISTORY_MSG older page");
    check_int(req, "before", 3, "HISTORY_MSG older page");
    fake_send(&f,
              "{\"msgid\":21,\"errno\":0,\"seq\":%lld,\"with\":%d,\"msgs\":[%s,%s],"
              "\"more\":false}",
              (long long)h_int(req, "seq"), BOB_ID, m1, m2);
    json_object_put(req);
    qchat_next(&p, "history with 7: 2 messages", "older page outcome");
    qchat_next(&p, "cseq 1: " TIME " [7]bob said: one", "older page, first");
    qchat_next(&p, "cseq 2: " TIME " [7]bob said: two", "older page, second; no more line");

    /* group history: an error is one line; no READ goes out for an older page */
    qchat_cmd(&p, "ghistory:%d:10", GROUP_ID);
    req = fake_expect(&f, 20, "ghistory (no READ for the older page before it)");
    check_int(req, "groupid", GROUP_ID, "HISTORY_MSG group");
    check_int(req, "before", 10, "HISTORY_MSG group");
    check_absent(req, "with", "HISTORY_MSG group");
    fake_ack(&f, req, QC_ENOTMEMBER);
    json_object_put(req);
    qchat_next(&p, "error 11: not a member of the group", "ghistory refused");

    /* a group page: READ with groupid */
    qchat_cmd(&p, "ghistory:%d", GROUP_ID);
    req = fake_expect(&f, 20, "ghistory");
    fake_send(&f,
              "{\"msgid\":21,\"errno\":0,\"seq\":%lld,\"groupid\":%d,\"msgs\":[{\"msgid\":9,"
              "\"userid\":%d,\"name\":\"carol\",\"groupid\":%d,\"msg\":\"hey all\",\"time\":"
              "\"" TIME "\",\"cseq\":41}],\"more\":true}",
              (long long)h_int(req, "seq"), GROUP_ID, CAROL_ID, GROUP_ID);
    json_object_put(req);
    qchat_next(&p, "history of group 9: 1 message", "ghistory outcome");
    qchat_next(&p, "cseq 41: group message[9]: " TIME " [8]carol said: hey all", "group item");
    qchat_next(&p, "more: ghistory:9:41", "older group page");
    req = fake_expect(&f, 24, "READ after the group page");
    check_int(req, "groupid", GROUP_ID, "READ_MSG group");
    check_int(req, "cseq", 41, "READ_MSG group");
    json_object_put(req);

    /* bad arguments never reach the server */
    qchat_cmd(&p, "history:7:zero");
    qchat_next(&p, "error: usage: history:userid[:before]", "bad before");
    qchat_cmd(&p, "ghistory:x");
    qchat_next(&p, "error: usage: ghistory:groupid[:before]", "bad group id");
    fake_expect_nothing(&f, 300, "usage errors send nothing");
    qchat_quit(&p, __func__);
    fake_free(&f);
}

static void test_live_chats_dedupe_and_pushes(void **state)
{
    static struct qchat_proc p;
    static struct fake f;
    char c10[512], c11[512];

    login(&p, &f, "tok-l", NULL);
    bob_chat(c10, sizeof c10, 10, "ten");
    bob_chat(c11, sizeof c11, 11, "eleven");
    /* cseq 10 arrives twice (a duplicate delivery), then 11 */
    fake_send(&f, "%s", c10);
    fake_send(&f, "%s", c10);
    fake_send(&f, "%s", c11);
    fake_send(&f,
              "{\"msgid\":9,\"userid\":%d,\"name\":\"carol\",\"groupid\":%d,\"msg\":\"g\","
              "\"time\":\"" TIME "\",\"cseq\":4}",
              CAROL_ID, GROUP_ID);
    fake_send(&f,
              "{\"msgid\":9,\"userid\":%d,\"name\":\"carol\",\"groupid\":%d,\"msg\":\"g\","
              "\"time\":\"" TIME "\",\"cseq\":4}",
              CAROL_ID, GROUP_ID);
    qchat_next(&p, TIME " [7]bob said: ten", "live chat, seed look");
    qchat_next(&p, TIME " [7]bob said: eleven", "the duplicate of cseq 10 is not shown");
    qchat_next(&p, "group message[9]: " TIME " [8]carol said: g", "group chat");

    /* READ for the newest shown per conversation (several may come, ascending) */
    int64_t read_with = 0, read_group = 0;
    for (int i = 0; i < 6 && (read_with != 11 || read_group != 4); i++) {
        struct json_object *r = fake_expect(&f, 24, "READ after live chats");
        if (has_key(r, "with")) {
            check_int(r, "with", BOB_ID, "READ_MSG");
            H_CHECK(h_int(r, "cseq") > read_with && h_int(r, "cseq") <= 11,
                    "READ cseq ascending, at most 11: %s", h_json(r));
            read_with = h_int(r, "cseq");
        } else {
            check_int(r, "groupid", GROUP_ID, "READ_MSG group");
            read_group = h_int(r, "cseq");
        }
        check_absent(r, "seq", "READ_MSG needs no reply");
        json_object_put(r);
    }
    H_CHECK(read_with == 11 && read_group == 4, "READ up to 11 with bob and 4 in the group");

    /* pushes, one line each; typing rate-limited on display */
    fake_send(&f, "{\"msgid\":25,\"id\":%d,\"cseq\":11}", BOB_ID);
    qchat_next(&p, "read by [7]bob up to 11", "receipt, name from the friend list");
    fake_send(&f, "{\"msgid\":26,\"id\":%d,\"name\":\"bob\",\"toid\":%d}", BOB_ID, ME_ID);
    fake_send(&f, "{\"msgid\":26,\"id\":%d,\"name\":\"bob\",\"toid\":%d}", BOB_ID, ME_ID);
    fake_send(&f, "{\"msgid\":26,\"id\":%d,\"name\":\"carol\",\"groupid\":%d}", CAROL_ID, GROUP_ID);
    qchat_next(&p, "[7]bob is typing", "typing");
    qchat_next(&p, "group[9]: [8]carol is typing", "the repeated typing is not shown again");
    fake_send(&f, "{\"msgid\":35,\"id\":%d,\"name\":\"carol\"}", CAROL_ID);
    qchat_next(&p, "friend request: [8]carol (accept:8 or decline:8)", "friend request push");
    fake_send(&f, "{\"msgid\":47,\"groupid\":%d,\"event\":\"kicked\",\"userid\":%d,\"by\":%d}",
              GROUP_ID, CAROL_ID, ME_ID);
    qchat_next(&p, "group event[9]: kicked user 8 by 5", "group event push");
    fake_send(&f, "{\"msgid\":47,\"groupid\":%d,\"event\":\"deleted\",\"by\":%d}", GROUP_ID,
              CAROL_ID);
    qchat_next(&p, "group event[9]: deleted by 8", "group event without userid");
    /* read on another device up to 12: a later chat 12 needs no READ from here */
    fake_send(&f, "{\"msgid\":24,\"with\":%d,\"cseq\":12}", BOB_ID);
    qchat_next(&p, "read elsewhere: with 7 up to 12", "READ synced from another session");
    bob_chat(c10, sizeof c10, 12, "twelve");
    fake_send(&f, "%s", c10);
    qchat_next(&p, TIME " [7]bob said: twelve", "chat 12");
    fake_expect_nothing(&f, 500, "no READ for what another device read already");
    qchat_quit(&p, __func__);
    fake_free(&f);
}

/* One ACK-answered command: request msgid with its fields checked by the caller. */
static struct json_object *acked(struct qchat_proc *p, struct fake *f, const char *cmd, int msgid,
                                 int err, const char *want_line)
{
    qchat_cmd(p, "%s", cmd);
    struct json_object *req = fake_expect(f, msgid, cmd);
    check_seq(req, cmd);
    fake_ack(f, req, err);
    qchat_next(p, want_line, cmd);
    return req;
}

static void test_conversations_friends_groups(void **state)
{
    static struct qchat_proc p;
    static struct fake f;
    char last[512];

    login(&p, &f, "tok-s", NULL);

    qchat_cmd(&p, "convs");
    struct json_object *req = fake_expect(&f, 22, "convs");
    check_seq(req, "CONVERSATIONS_MSG");
    bob_chat(last, sizeof last, 12, "latest");
    fake_send(&f,
              "{\"msgid\":23,\"errno\":0,\"seq\":%lld,\"convs\":[{\"with\":%d,\"name\":\"bob\","
              "\"last_cseq\":12,\"read_cseq\":10,\"unread\":2,\"last\":%s},{\"groupid\":%d,"
              "\"name\":\"team\",\"last_cseq\":3,\"read_cseq\":3,\"unread\":0}]}",
              (long long)h_int(req, "seq"), BOB_ID, last, GROUP_ID);
    json_object_put(req);
    qchat_next(&p, "conversations: 2", "convs outcome");
    qchat_next(&p, "conv: with 7 bob, unread 2: " TIME " [7]bob said: latest", "a one-to-one");
    qchat_next(&p, "conv: group 9 team, unread 0", "a group without last");
    fake_expect_nothing(&f, 300, "convs marks nothing read");

    qchat_cmd(&p, "friends");
    req = fake_expect(&f, 30, "friends");
    check_seq(req, "FRIEND_LIST_MSG");
    fake_send(&f,
              "{\"msgid\":31,\"errno\":0,\"seq\":%lld,\"friends\":[{\"id\":7,\"name\":\"bob\","
              "\"state\":\"online\"}],\"requests_in\":[{\"id\":8,\"name\":\"carol\"}],"
              "\"requests_out\":[{\"id\":20,\"name\":\"dave\"}],\"blocked\":[{\"id\":30,"
              "\"name\":\"eve\"},{\"id\":31,\"name\":\"mallory\"}]}",
              (long long)h_int(req, "seq"));
    json_object_put(req);
    qchat_next(&p, "friends: 1 friends, 1 requests in, 1 requests out, 2 blocked", "friends");
    qchat_next(&p, "friend: 7 bob online", "friend line");
    qchat_next(&p, "request in: 8 carol", "request in");
    qchat_next(&p, "request out: 20 dave", "request out");
    qchat_next(&p, "blocked: 30 eve", "blocked 1");
    qchat_next(&p, "blocked: 31 mallory", "blocked 2");

    req = acked(&p, &f, "accept:8", QC_ADD_FRIEND_MSG, 0, "friend accepted: id 8");
    check_int(req, "friendid", 8, "accept = ADD_FRIEND_MSG back");
    json_object_put(req);
    req = acked(&p, &f, "decline:8", 36, 0, "friend request declined: id 8");
    check_int(req, "friendid", 8, "FRIEND_DECLINE_MSG");
    json_object_put(req);
    req = acked(&p, &f, "unfriend:7", 32, 0, "friend removed: id 7");
    check_int(req, "friendid", 7, "FRIEND_REMOVE_MSG");
    json_object_put(req);
    req = acked(&p, &f, "block:30", 33, 0, "user blocked: id 30");
    check_int(req, "userid", 30, "BLOCK_MSG");
    json_object_put(req);
    req = acked(&p, &f, "unblock:30", 34, 0, "user unblocked: id 30");
    check_int(req, "userid", 30, "UNBLOCK_MSG");
    json_object_put(req);
    req = acked(&p, &f, "block:31", 33, QC_EBLOCKED, "error 22: blocked");
    json_object_put(req);

    qchat_cmd(&p, "members:%d", GROUP_ID);
    req = fake_expect(&f, 40, "members");
    check_int(req, "groupid", GROUP_ID, "GROUP_MEMBERS_MSG");
    check_seq(req, "GROUP_MEMBERS_MSG");
    fake_send(&f,
              "{\"msgid\":41,\"errno\":0,\"seq\":%lld,\"users\":[{\"id\":5,\"name\":\"alice\","
              "\"state\":\"online\",\"role\":\"creator\"},{\"id\":8,\"name\":\"carol\",\"state\":"
              "\"offline\",\"role\":\"admin\"}]}",
              (long long)h_int(req, "seq"));
    json_object_put(req);
    qchat_next(&p, "members of group 9: 2", "members outcome");
    qchat_next(&p, "member: 9 5 alice online creator", "member 1");
    qchat_next(&p, "member: 9 8 carol offline admin", "member 2");
    qchat_cmd(&p, "members:%d", GROUP_ID + 1);
    req = fake_expect(&f, 40, "members of a group I am not in");
    fake_ack(&f, req, QC_ENOTMEMBER);
    json_object_put(req);
    qchat_next(&p, "error 11: not a member of the group", "members refused");

    req = acked(&p, &f, "leave:9", 42, 0, "group left: id 9");
    check_int(req, "groupid", 9, "GROUP_LEAVE_MSG");
    json_object_put(req);
    req = acked(&p, &f, "kick:9:8", 43, 0, "member kicked: group 9 id 8");
    check_int(req, "groupid", 9, "GROUP_KICK_MSG");
    check_int(req, "userid", 8, "GROUP_KICK_MSG");
    json_object_put(req);
    req = acked(&p, &f, "kick:9:8", 43, QC_ENOTALLOWED, "error 23: not allowed by your group role");
    json_object_put(req);
    req = acked(&p, &f, "role:9:8:admin", 44, 0, "role set: group 9 id 8 admin");
    check_int(req, "groupid", 9, "GROUP_ROLE_MSG");
    check_int(req, "userid", 8, "GROUP_ROLE_MSG");
    check_str(req, "role", "admin", "GROUP_ROLE_MSG");
    json_object_put(req);
    req = acked(&p, &f, "rename:9:new: name", 45, 0, "group renamed: id 9");
    check_int(req, "groupid", 9, "GROUP_UPDATE_MSG");
    check_str(req, "groupname", "new: name", "GROUP_UPDATE_MSG, the rest of the line");
    check_absent(req, "groupdesc", "GROUP_UPDATE_MSG renames only");
    json_object_put(req);
    req = acked(&p, &f, "delgroup:9", 46, 0, "group deleted: id 9");
    check_int(req, "groupid", 9, "GROUP_DELETE_MSG");
    json_object_put(req);

    qchat_cmd(&p, "role:9:8:boss");
    qchat_next(&p, "error: usage: role:groupid:userid:admin|normal", "bad role");
    qchat_cmd(&p, "kick:9");
    qchat_next(&p, "error: usage: kick:groupid:userid", "kick without user");
    fake_expect_nothing(&f, 300, "usage errors send nothing");

    /* passwd: the tokens are revoked by the change, so the next reconnect uses the new one */
    req = acked(&p, &f, "passwd:pw:s3cret:x", 48, 0, "password changed");
    check_str(req, "old", "pw", "PASSWORD_MSG");
    check_str(req, "new", "s3cret:x", "PASSWORD_MSG, the rest of the line");
    json_object_put(req);
    req = acked(&p, &f, "passwd:bad:other", 48, QC_EAUTH, "error 1: id or password is invalid!");
    json_object_put(req);
    fake_drop(&f);
    qchat_next(&p, "disconnected: reconnecting", "the server drops the connection");
    accept_login(&f, "s3cret:x", NULL, "reconnect after passwd");
    send_login_ack(&f, "tok-new", NULL);
    qchat_next(&p, "reconnected: id 5 name alice", "reconnected");
    qchat_quit(&p, __func__);
    fake_free(&f);
}

static void test_reconnect_with_token(void **state)
{
    static struct qchat_proc p;
    static struct fake f;
    char c10[512], c11[512], s10[1024], s11[1024], offline[2048];

    login(&p, &f, "tok-A", NULL);
    bob_chat(c10, sizeof c10, 10, "before the drop");
    fake_send(&f, "%s", c10);
    qchat_next(&p, TIME " [7]bob said: before the drop", "live chat before the drop");
    struct json_object *req = fake_expect(&f, 24, "READ 10");
    json_object_put(req);

    /* the server closes the connection: qchat says so in one line and comes back */
    fake_drop(&f);
    qchat_next(&p, "disconnected: reconnecting", "one line for the drop");
    int64_t t0 = h_now_ms();
    fake_accept(&f, "reconnect");
    H_CHECK(h_now_ms() - t0 < 2000, "the first attempt within the first backoff step");
    req = fake_expect(&f, QC_LOGIN_MSG, "reconnect");
    check_login_request(req, NULL, "tok-A");
    json_object_put(req);
    /* the login reply repeats cseq 10 (delivered twice) and brings 11 */
    bob_chat(c11, sizeof c11, 11, "while away");
    as_json_string(s10, sizeof s10, c10);
    as_json_string(s11, sizeof s11, c11);
    snprintf(offline, sizeof offline, "%s,%s", s10, s11);
    send_login_ack(&f, "tok-B", offline);
    qchat_next(&p, "reconnected: id 5 name alice", "reconnected");
    qchat_next(&p, "offline: " TIME " [7]bob said: while away", "only the new message");
    req = fake_expect(&f, 24, "READ after the reconnect");
    check_int(req, "with", BOB_ID, "READ_MSG");
    check_int(req, "cseq", 11, "READ_MSG");
    json_object_put(req);

    /* the server goes away: attempts fail until it is back on the same port */
    fake_stop_listening(&f);
    qchat_next(&p, "disconnected: reconnecting", "server gone");
    h_sleep_ms(1500);
    qchat_cmd(&p, "chat:%d:while down", BOB_ID);
    char line[256];
    H_CHECK(qchat_line(&p, line, sizeof line, QCHAT_LINE_MS) &&
                strncmp(line, "error: not connected (reconnecting in ", 38) == 0,
            "a command while the server is down: one error line, got \"%s\"; output:\n%s", line,
            p.transcript);
    fake_listen(&f, f.port);
    accept_login(&f, NULL, "tok-B", "reconnect after the restart"); /* the newest token */
    send_login_ack(&f, NULL, NULL);
    qchat_next(&p, "reconnected: id 5 name alice", "reconnected after the restart");
    qchat_cmd(&p, "chat:%d:after", BOB_ID);
    req = fake_expect(&f, QC_ONE_CHAT_MSG, "chat after the reconnect");
    check_int(req, "toid", BOB_ID, "ONE_CHAT_MSG");
    check_str(req, "msg", "after", "ONE_CHAT_MSG");
    fake_send(&f,
              "{\"msgid\":11,\"errno\":0,\"errmsg\":\"ok\",\"req\":5,\"seq\":%lld,\"mid\":99,"
              "\"cseq\":13}",
              (long long)h_int(req, "seq"));
    json_object_put(req);
    qchat_next(&p, "sent: mid 99", "chat outcome");

    req = acked(&p, &f, "loginout:revoke", QC_LOGINOUT_MSG, 0, "logged out, token revoked");
    check_true(req, "revoke", "LOGINOUT_MSG revoke");
    json_object_put(req);
    fake_expect_eof(&f, "qchat closes the connection after loginout");
    H_CHECK(!fake_try_accept(&f, QUIET_MS), "no reconnect after loginout");
    qchat_cmd(&p, "chat:%d:x", BOB_ID);
    qchat_next(&p, "error: not logged in", "after loginout");
    qchat_quit(&p, "after loginout");
    fake_free(&f);
}

static void test_refused_token_and_kick(void **state)
{
    static struct qchat_proc p;
    static struct fake f;

    login(&p, &f, "tok-R", NULL);
    fake_drop(&f);
    qchat_next(&p, "disconnected: reconnecting", "drop");
    accept_login(&f, NULL, "tok-R", "reconnect");
    fake_send(&f, "{\"msgid\":2,\"errno\":24,\"errmsg\":\"bad or expired token\"}");
    qchat_next(&p, "reconnect failed: error 24: bad or expired token", "token refused");
    H_CHECK(!fake_try_accept(&f, QUIET_MS), "no more attempts once the token is refused");
    qchat_cmd(&p, "friends");
    qchat_next(&p, "error: not logged in", "the session is over");

    /* log in again; a KICK is not answered by reconnecting (it would take the account back) */
    qchat_cmd(&p, "login:%d:pw", ME_ID);
    accept_login(&f, "pw", NULL, "login again");
    send_login_ack(&f, "tok-K", NULL);
    qchat_next(&p, "logged in: id 5 name alice", "login again");
    qchat_next(&p, "friend: 7 bob online", "friend line");
    fake_send(&f, "{\"msgid\":12,\"reason\":\"logged in elsewhere\"}");
    fake_drop(&f);
    qchat_next(&p, "kicked: logged in elsewhere", "kick");
    qchat_next(&p, "disconnected", "disconnected, no reconnect");
    H_CHECK(!fake_try_accept(&f, QUIET_MS), "no reconnect after a kick");
    int rc = qchat_finish(&p);
    H_CHECK(rc == 1, "a session lost to a kick: exit 1, got %d; output:\n%s", rc, p.transcript);
    fake_free(&f);
}

/* devices (DEVICES_MSG 49, an extension): the request, the listing, an error, the usage. */
static void test_devices(void **state)
{
    static struct qchat_proc p;
    static struct fake f;

    login(&p, &f, "tok-d", NULL);
    qchat_cmd(&p, "devices");
    struct json_object *req = fake_expect(&f, 49, "devices");
    check_seq(req, "DEVICES_MSG");
    H_CHECK(json_object_object_length(req) == 2, "DEVICES_MSG carries msgid and seq only: %s",
            h_json(req));
    fake_send(&f,
              "{\"msgid\":50,\"errno\":0,\"seq\":%lld,\"devices\":[{\"device\":\"phone\","
              "\"since\":1765000000,\"this\":false},{\"device\":\"laptop\",\"since\":1765003600,"
              "\"this\":true}]}",
              (long long)h_int(req, "seq"));
    json_object_put(req);
    qchat_next(&p, "devices: 2", "devices outcome");
    qchat_next(&p, "device phone since 2025-12-06 05:46:40 UTC", "another device");
    qchat_next(&p, "device laptop since 2025-12-06 06:46:40 UTC (this one)", "this device");

    req = acked(&p, &f, "devices", 49, QC_ENOTLOGGEDIN, "error 8: not logged in");
    json_object_put(req);
    qchat_cmd(&p, "devices:all");
    qchat_next(&p, "error: usage: devices", "devices takes no argument");
    fake_expect_nothing(&f, 300, "a usage error sends nothing");
    qchat_quit(&p, "after devices");
    fake_free(&f);
}

/* Kill qchat processes and close fakes a failed test left behind. */
static int cleanup(void **state)
{
    qchat_kill_leftovers();
    for (size_t i = 0; i < sizeof fakes / sizeof fakes[0]; i++)
        if (fakes[i] != NULL)
            fake_free(fakes[i]);
    first_device[0] = '\0';
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_connect_at_register_and_login_timeout, cleanup),
        cmocka_unit_test_teardown(test_history_pages_and_read, cleanup),
        cmocka_unit_test_teardown(test_live_chats_dedupe_and_pushes, cleanup),
        cmocka_unit_test_teardown(test_conversations_friends_groups, cleanup),
        cmocka_unit_test_teardown(test_reconnect_with_token, cleanup),
        cmocka_unit_test_teardown(test_refused_token_and_kick, cleanup),
        cmocka_unit_test_teardown(test_devices, cleanup),
    };

    signal(SIGPIPE, SIG_IGN);
    h_apply_filter();
    return cmocka_run_group_tests_name("client_v2", tests, NULL, NULL);
}
