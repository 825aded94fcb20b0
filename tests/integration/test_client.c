/*
 * test_client.c - the qchat terminal client in script mode (`qchat -s HOST
 * PORT`, commands on stdin, one line per outcome or incoming message on
 * stdout, as documented at the top of src/client/qchat.c), against a real
 * qchatd.  The peer is driven with the client library so that what qchat
 * sends is checked on the wire and what qchat prints is checked on its
 * stdout: register, login, chat both ways, friends, groups, group chat,
 * offline messages, errors, takeover, a whole script piped at once, and
 * the reconnect after the worker holding qchat's session is killed.
 */
#include "harness.h"
#include "qchat_run.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#define NO_SUCH_ID 2147480000

/* Read lines until one starts with prefix (others are kept in the transcript). */
static void qchat_expect(struct qchat_proc *p, const char *prefix, char *out, size_t outlen,
                         const char *what)
{
    char line[QCHAT_TRANSCRIPT_MAX];
    while (qchat_line(p, line, sizeof(line), QCHAT_LINE_MS)) {
        if (strncmp(line, prefix, strlen(prefix)) == 0) {
            if (out != NULL) {
                size_t n = strlen(line) < outlen ? strlen(line) : outlen - 1;
                memcpy(out, line, n);
                out[n] = '\0';
            }
            return;
        }
    }
    H_FAIL("%s: qchat did not print a line starting with \"%s\" within %d ms%s; its output:\n%s",
           what, prefix, QCHAT_LINE_MS, p->eof ? " (it exited)" : "", p->transcript);
}

/* Register and log in through qchat; fills u. */
static void qchat_register_login(struct qchat_proc *p, struct h_user *u, const char *tag)
{
    char line[512];
    h_unique_name(u->name, sizeof(u->name), tag);
    snprintf(u->password, sizeof(u->password), "cli-pw");
    qchat_cmd(p, "register:%s:%s", u->name, u->password);
    qchat_expect(p, "registered id ", line, sizeof(line), "register");
    u->id = atoi(line + strlen("registered id "));
    H_CHECK(u->id > 0, "registered id: %s", line);
    qchat_cmd(p, "login:%d:%s", u->id, u->password);
    char want[256];
    snprintf(want, sizeof(want), "logged in: id %d name %s", u->id, u->name);
    qchat_next(p, want, "login");
}

static int32_t number_after(const char *line, const char *prefix)
{
    H_CHECK(strncmp(line, prefix, strlen(prefix)) == 0, "\"%s\" must start with \"%s\"", line,
            prefix);
    return atoi(line + strlen(prefix));
}

/* ---- tests ---------------------------------------------------------- */

static void test_qchat_chat_both_ways(void **state)
{
    static struct qchat_proc p;
    struct h_user me, peer;
    qchat_start(&p, h_srv.port);
    qchat_register_login(&p, &me, "cli");
    struct qclient *cp = h_new_user(&peer, "peer");
    char line[1024], want[1024];

    qchat_cmd(&p, "chat:%d:hello: with colon", peer.id);
    qchat_expect(&p, "sent", line, sizeof(line), "chat");
    struct json_object *m = h_expect(cp, QC_ONE_CHAT_MSG, "peer receives qchat's chat");
    H_CHECK(h_int(m, "id") == me.id && strcmp(h_str(m, "msg"), "hello: with colon") == 0,
            "the text after the second colon is the message: %s", h_json(m));
    H_CHECK(strncmp(line, "sent: mid ", 10) == 0 && atoll(line + 10) == h_int(m, "mid"),
            "qchat prints the server's mid: \"%s\" vs %s", line, h_json(m));
    json_object_put(m);

    /* incoming, seed format */
    json_object_put(
        h_request(cp, QC_ONE_CHAT_MSG, 0, "peer chats", "\"toid\":%d,\"msg\":\"hi back\"", me.id));
    snprintf(want, sizeof(want), "[%d]%s said: hi back", peer.id, peer.name);
    qchat_expect(&p, "", line, sizeof(line), "incoming chat");
    H_CHECK(strlen(line) > 20 && strcmp(line + 20, want) == 0 && line[19] == ' ',
            "incoming chat: want \"YYYY-MM-DD HH:MM:SS %s\", got \"%s\"", want, line);

    /* control characters from the network are escaped: one line per message */
    json_object_put(h_request(cp, QC_ONE_CHAT_MSG, 0, "peer chats a newline",
                              "\"toid\":%d,\"msg\":\"two\\nlines\\u001b[31m\"", me.id));
    qchat_expect(&p, "", line, sizeof(line), "incoming chat with control characters");
    H_CHECK(strstr(line, "two\\nlines") != NULL && strchr(line, '\x1b') == NULL,
            "newline and ESC must be escaped, got \"%s\"", line);

    /* errors */
    qchat_cmd(&p, "chat:%d:nobody", NO_SUCH_ID);
    qchat_expect(&p, "error 9", line, sizeof(line), "chat to an unknown id");
    qchat_cmd(&p, "frobnicate");
    qchat_expect(&p, "error: unknown command", line, sizeof(line), "unknown command");
    qchat_cmd(&p, "chat:notanumber:x");
    qchat_expect(&p, "error", line, sizeof(line), "bad id");
    qchat_quit(&p, __func__);
}

static void test_qchat_friends_groups_offline(void **state)
{
    static struct qchat_proc p;
    struct h_user me, peer;
    qchat_start(&p, h_srv.port);
    qchat_register_login(&p, &me, "clg");
    struct qclient *cp = h_new_user(&peer, "peer");
    char line[1024], want[1024];

    qchat_cmd(&p, "addfriend:%d", peer.id);
    snprintf(want, sizeof(want), "friend added: id %d", peer.id);
    qchat_next(&p, want, "addfriend");

    char gname[H_NAME_LEN];
    h_unique_name(gname, sizeof(gname), "cg");
    qchat_cmd(&p, "creategroup:%s:a test group", gname);
    qchat_expect(&p, "group created: id ", line, sizeof(line), "creategroup");
    int32_t gid = number_after(line, "group created: id ");
    H_CHECK(gid > 0, "group id: %s", line);
    json_object_put(h_request(cp, QC_ADD_GROUP_MSG, 0, "peer joins", "\"groupid\":%d", gid));

    qchat_cmd(&p, "groupchat:%d:hello group", gid);
    qchat_expect(&p, "sent", line, sizeof(line), "groupchat");
    struct json_object *m = h_expect(cp, QC_GROUP_CHAT_MSG, "peer receives the group chat");
    H_CHECK(h_int(m, "groupid") == gid && h_int(m, "userid") == me.id &&
                strcmp(h_str(m, "msg"), "hello group") == 0,
            "group chat from qchat: %s", h_json(m));
    json_object_put(m);

    json_object_put(h_request(cp, QC_GROUP_CHAT_MSG, 0, "peer group-chats",
                              "\"groupid\":%d,\"msg\":\"hello from peer\"", gid));
    snprintf(want, sizeof(want), "group message[%d]: ", gid);
    qchat_expect(&p, want, line, sizeof(line), "incoming group chat");
    snprintf(want, sizeof(want), "[%d]%s said: hello from peer", peer.id, peer.name);
    H_CHECK(strstr(line, want) != NULL, "incoming group chat line \"%s\" must contain \"%s\"", line,
            want);

    /* join a group created by someone else */
    char g2[H_NAME_LEN];
    h_unique_name(g2, sizeof(g2), "cg2");
    struct json_object *ack = h_request(cp, QC_CREATE_GROUP_MSG, 0, "peer creates a group",
                                        "\"groupname\":%s,\"groupdesc\":\"\"", h_q(g2));
    int32_t gid2 = (int32_t)h_int(ack, "groupid");
    json_object_put(ack);
    qchat_cmd(&p, "addgroup:%d", gid2);
    snprintf(want, sizeof(want), "group joined: id %d", gid2);
    qchat_next(&p, want, "addgroup");

    /* offline: log out, the peer writes, log in again */
    qchat_cmd(&p, "loginout");
    qchat_next(&p, "logged out", "loginout");
    H_CHECK(h_wait_online(me.id, false, H_REPLY_MS), "qchat's user offline after loginout");
    json_object_put(h_request(cp, QC_ONE_CHAT_MSG, 0, "peer chats while qchat is out",
                              "\"toid\":%d,\"msg\":\"while you were out\"", me.id));
    json_object_put(h_request(cp, QC_GROUP_CHAT_MSG, 0, "peer group-chats while qchat is out",
                              "\"groupid\":%d,\"msg\":\"group while out\"", gid));
    qchat_cmd(&p, "login:%d:%s", me.id, me.password);
    snprintf(want, sizeof(want), "logged in: id %d name %s", me.id, me.name);
    qchat_next(&p, want, "login again");
    snprintf(want, sizeof(want), "friend: %d %s online", peer.id, peer.name);
    qchat_expect(&p, want, NULL, 0, "friend line in the login summary");
    snprintf(want, sizeof(want), "group: %d %s a test group", gid, gname);
    qchat_expect(&p, want, NULL, 0, "group line in the login summary");
    snprintf(want, sizeof(want), "member: %d %d %s ", gid, me.id, me.name);
    qchat_expect(&p, want, line, sizeof(line), "creator member line");
    H_CHECK(strcmp(line + strlen(line) - strlen(" creator"), " creator") == 0,
            "member line \"%s\" must end with the role creator", line);
    qchat_expect(&p, "offline: ", line, sizeof(line), "first offline message");
    snprintf(want, sizeof(want), "[%d]%s said: while you were out", peer.id, peer.name);
    H_CHECK(strstr(line, want) != NULL, "offline one-to-one chat: \"%s\" lacks \"%s\"", line, want);
    qchat_expect(&p, "offline: ", line, sizeof(line), "second offline message");
    snprintf(want, sizeof(want), "group message[%d]: ", gid);
    H_CHECK(strstr(line, want) != NULL && strstr(line, "group while out") != NULL,
            "offline group chat, in order: \"%s\"", line);
    qchat_quit(&p, __func__);
}

static void test_qchat_kicked_by_second_login(void **state)
{
    static struct qchat_proc p;
    struct h_user me;
    qchat_start(&p, h_srv.port);
    qchat_register_login(&p, &me, "clk");
    struct qclient *other = h_login(&me, NULL);
    qchat_expect(&p, "kicked: ", NULL, 0, "the old session is told");
    qchat_expect(&p, "disconnected", NULL, 0, "and disconnected");
    int rc = qchat_finish(&p);
    H_CHECK(rc == 1, "a lost connection exits with status 1, got %d; output:\n%s", rc,
            p.transcript);
    h_expect_quiet(other, "the new session is fine");
}

static void test_qchat_whole_script_piped(void **state)
{
    static struct qchat_proc p;
    struct h_user peer;
    struct qclient *cp = h_new_user(&peer, "pip");
    char name[H_NAME_LEN];
    h_unique_name(name, sizeof(name), "piped");

    /* register first to learn the id, then pipe a whole script and close stdin */
    qchat_start(&p, h_srv.port);
    qchat_cmd(&p, "# a comment, then an empty line\n");
    qchat_cmd(&p, "register:%s:pw", name);
    char line[512];
    qchat_expect(&p, "registered id ", line, sizeof(line), "register");
    int32_t id = number_after(line, "registered id ");
    qchat_cmd(&p, "login:%d:pw\nchat:%d:one\nchat:%d:two\nchat:%d:three", id, peer.id, peer.id,
              peer.id);
    int rc = qchat_finish(&p);
    H_CHECK(rc == 0, "end of input: exit status 0, got %d; output:\n%s", rc, p.transcript);
    static const char *const texts[] = { "one", "two", "three" };
    for (int i = 0; i < 3; i++) {
        struct json_object *m = h_expect(cp, QC_ONE_CHAT_MSG, "piped chats arrive in order");
        H_CHECK(strcmp(h_str(m, "msg"), texts[i]) == 0 && h_int(m, "id") == id,
                "chat %d: want \"%s\" from %d, got %s", i, texts[i], id, h_json(m));
        json_object_put(m);
    }
    H_CHECK(strstr(p.transcript, "sent: mid ") != NULL, "outcomes printed:\n%s", p.transcript);
}

/* The worker holding qchat's session dies: qchat says so in one line and logs in again. */
static void test_qchat_reconnects_after_worker_killed(void **state)
{
    static struct qchat_proc p;
    struct h_user me, peer;
    char want[256], line[1024];
    qchat_start(&p, h_srv.port);
    qchat_register_login(&p, &me, "clr");
    H_CHECK(h_wait_online(me.id, true, H_REPLY_MS), "qchat's user online");
    int worker = h_worker_of(me.id);
    pid_t pid = server_worker_pid(worker);
    H_CHECK(pid > 0, "the pid of worker %d", worker);
    H_CHECK(kill(pid, SIGKILL) == 0, "kill worker %d (pid %d): %s", worker, (int)pid,
            strerror(errno));
    qchat_next(&p, "disconnected: reconnecting", "one line for the lost connection");
    snprintf(want, sizeof(want), "reconnected: id %d name %s", me.id, me.name);
    qchat_next(&p, want, "the session comes back by itself");
    H_CHECK(h_wait_online(me.id, true, H_REPLY_MS), "online again after the reconnect");

    struct qclient *cp = h_new_user(&peer, "clrp");
    qchat_cmd(&p, "chat:%d:after the crash", peer.id);
    qchat_expect(&p, "sent", line, sizeof(line), "chat after the reconnect");
    struct json_object *m = h_expect(cp, QC_ONE_CHAT_MSG, "peer receives it");
    H_CHECK(h_int(m, "id") == me.id && strcmp(h_str(m, "msg"), "after the crash") == 0,
            "chat after the reconnect: %s", h_json(m));
    json_object_put(m);
    qchat_quit(&p, "restored session");
    /* the master restarts the worker; later tests need all of them */
    int64_t deadline = h_now_ms() + H_START_MS;
    while (server_worker_pid(worker) <= 0 && h_now_ms() < deadline)
        h_sleep_ms(50);
    H_CHECK(server_worker_pid(worker) > 0, "worker %d restarted", worker);
}

/* Kill the worker holding me's session and wait for the master to restart it. */
static void kill_session_worker(const struct h_user *me)
{
    int worker = h_worker_of(me->id);
    pid_t pid = server_worker_pid(worker);
    H_CHECK(pid > 0, "the pid of worker %d", worker);
    H_CHECK(kill(pid, SIGKILL) == 0, "kill worker %d (pid %d): %s", worker, (int)pid,
            strerror(errno));
    int64_t deadline = h_now_ms() + H_START_MS;
    pid_t now = server_worker_pid(worker);
    while ((now <= 0 || now == pid) && h_now_ms() < deadline) {
        h_sleep_ms(50);
        now = server_worker_pid(worker);
    }
    H_CHECK(now > 0 && now != pid, "worker %d restarted (pid %d, was %d)", worker, (int)now,
            (int)pid);
}

/*
 * qchat reconnects with its login token, not its password: it comes back
 * after its worker is killed, and once the operator revokes the account's
 * tokens the next reconnect is refused with errno 24 (a password login
 * would have succeeded).
 */
static void test_qchat_reconnects_with_its_token(void **state)
{
    static struct qchat_proc p;
    struct h_user me;
    char want[256], line[1024], req[96];
    qchat_start(&p, h_srv.port);
    qchat_register_login(&p, &me, "clt");
    H_CHECK(h_wait_online(me.id, true, H_REPLY_MS), "qchat's user online");
    kill_session_worker(&me);
    qchat_next(&p, "disconnected: reconnecting", "the first drop");
    snprintf(want, sizeof(want), "reconnected: id %d name %s", me.id, me.name);
    qchat_next(&p, want, "back with the token");
    H_CHECK(h_wait_online(me.id, true, H_REPLY_MS), "online again after the reconnect");

    snprintf(req, sizeof req, "{\"cmd\":\"revoke\",\"id\":%d}", me.id);
    struct json_object *o = h_ctl(req);
    H_CHECK(o != NULL && h_int(o, "revoked") == 1, "revoke qchat's token: %s", h_json(o));
    json_object_put(o);
    kill_session_worker(&me);
    qchat_next(&p, "disconnected: reconnecting", "the second drop");
    qchat_expect(&p, "reconnect failed: error 24", line, sizeof(line),
                 "the revoked token is refused");
    qchat_cmd(&p, "quit");
    qchat_finish(&p);
}

static void test_server_stops_cleanly(void **state)
{
    h_stop_and_check_clean();
}

/* Kill qchat processes a failed test left behind. */
static int kill_leftover_qchats(void **state)
{
    qchat_kill_leftovers();
    return h_test_teardown(state);
}

static int group_setup(void **state)
{
    return h_group_setup_with(NULL);
}

#define QCHAT_TEST(f)                                                \
    {                                                                \
#f, h_run_test, NULL, kill_leftover_qchats, &(struct h_test) \
        {                                                            \
            f                                                        \
        }                                                            \
    }

int main(void)
{
    const struct CMUnitTest tests[] = {
        QCHAT_TEST(test_qchat_chat_both_ways),
        QCHAT_TEST(test_qchat_friends_groups_offline),
        QCHAT_TEST(test_qchat_kicked_by_second_login),
        QCHAT_TEST(test_qchat_whole_script_piped),
        QCHAT_TEST(test_qchat_reconnects_after_worker_killed),
        QCHAT_TEST(test_qchat_reconnects_with_its_token),
        H_TEST(test_server_stops_cleanly),
    };
    h_apply_filter();
    return cmocka_run_group_tests_name("client", tests, group_setup, h_group_teardown);
}
