/*
 * qchat_cmd.c - qchat's commands: the seed client's set (help,
 * chat:ID:TEXT, addfriend:ID, creategroup:NAME:DESC, addgroup:ID,
 * groupchat:ID:TEXT, loginout) plus login:ID:PASSWORD,
 * register:NAME:PASSWORD, wait:MS and quit, and the table of every
 * command (the version 2 ones are in qchat_v2.c).
 *
 * A command is its name, then ':' and its arguments; the last argument
 * takes the rest of the line, colons included.  Every request carries a
 * "seq" and waits for its reply, printing what arrives meanwhile, so each
 * command prints exactly one outcome line (login also prints the summary).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/proto.h"
#include "qchat.h"

#define CMD_WAIT_MAX_MS (10 * 60 * 1000) /* longest wait:MS */
#define CMD_OK_TEXT_MAX 96               /* room for one outcome text */

struct command {
    const char *name;
    const char *help;
    const char *format;
    void (*run)(struct qchat *q, char *args); /* args: after "name:", NULL if none */
};

/* ---- argument parsing ------------------------------------------------- */

/* Decimal integer in [min, max], surrounding blanks allowed. */
static bool parse_number(const char *s, long long min, long long max, long long *out)
{
    char *end;
    long long v;

    if (s == NULL)
        return false;
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s < '0' || *s > '9')
        return false;
    errno = 0;
    v = strtoll(s, &end, 10);
    while (*end == ' ' || *end == '\t')
        end++;
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

bool cmd_parse_id(const char *s, int32_t *out)
{
    long long v;

    if (!parse_number(s, 0, INT32_MAX, &v))
        return false;
    *out = (int32_t)v;
    return true;
}

bool cmd_parse_cseq(const char *s, int64_t *out)
{
    long long v;

    if (!parse_number(s, 1, INT64_MAX, &v))
        return false;
    *out = v;
    return true;
}

/* Split "a:b" at the first ':' into a and b; false when there is none. */
bool cmd_split_colon(char *s, char **rest)
{
    char *colon = s != NULL ? strchr(s, ':') : NULL;

    if (colon == NULL)
        return false;
    *colon = '\0';
    *rest = colon + 1;
    return true;
}

/* ---- requests ----------------------------------------------------------- */

int qchat_login(struct qchat *q, const char *idtext, char *password)
{
    struct json_object *ack = NULL;
    int32_t id;
    int64_t v;
    int rc;

    if (!cmd_parse_id(idtext, &id)) {
        explicit_bzero(password, strlen(password));
        out_line(q, "error: bad user id");
        return -1;
    }
    if (!qconn_open(q)) {
        explicit_bzero(password, strlen(password));
        return -1;
    }
    q->reconnect_at = 0; /* this login replaces any session being restored */
    rc = qconn_login(q, id, password, NULL, &ack);
    if (rc != 0) {
        explicit_bzero(password, strlen(password));
        out_outcome(q, rc, "");
        json_object_put(ack);
        return -1;
    }
    if (qjson_int(ack, "id", &v) == 0)
        id = (int32_t)v;
    if (id != q->my_id)
        conv_reset(q); /* another user: nothing shown before counts */
    q->logged_in = true;
    q->my_id = id;
    q->trouble = false;
    qconn_keep_credentials(q, ack, password);
    explicit_bzero(password, strlen(password));
    out_login(q, ack);
    json_object_put(ack);
    return 0;
}

void qchat_register(struct qchat *q, const char *name, char *password)
{
    char ok[CMD_OK_TEXT_MAX];
    int32_t id = 0;
    int rc;

    if (!qconn_open(q)) {
        explicit_bzero(password, strlen(password));
        return;
    }
    (void)qchat_seq(q);
    rc = qclient_register(q->c, name, password, &id, q->reply_timeout_ms);
    explicit_bzero(password, strlen(password));
    snprintf(ok, sizeof ok, "registered id %d", id);
    out_outcome(q, rc, ok);
}

/*
 * "sent: mid M" from a chat ACK, "sent" if it names no mid.  The ACK's
 * cseq counts as shown in key: the same message coming back (another
 * device's echo, a login reply) is not printed as news.
 */
static void report_sent(struct qchat *q, int rc, struct json_object *ack, struct conv_key key)
{
    char ok[CMD_OK_TEXT_MAX];
    int64_t mid, cseq;

    if (rc == 0 && qjson_int(ack, "cseq", &cseq) == 0)
        (void)conv_first_sight(q, key, cseq);

    if (rc == 0 && qjson_int(ack, "mid", &mid) == 0)
        snprintf(ok, sizeof ok, "sent: mid %lld", (long long)mid);
    else
        snprintf(ok, sizeof ok, "sent");
    out_outcome(q, rc, ok);
    json_object_put(ack);
}

static void cmd_chat(struct qchat *q, char *args)
{
    struct json_object *ack = NULL;
    char *text;
    int32_t toid;
    int rc;

    if (!cmd_split_colon(args, &text) || !cmd_parse_id(args, &toid)) {
        cmd_usage_error(q, "chat");
        return;
    }
    if (!qconn_ready(q))
        return;
    rc = qclient_chat(q->c, toid, text, qchat_seq(q), &ack, q->reply_timeout_ms);
    report_sent(q, rc, ack, (struct conv_key){ .group = false, .id = toid });
}

static void cmd_groupchat(struct qchat *q, char *args)
{
    struct json_object *ack = NULL;
    char *text;
    int32_t gid;
    int rc;

    if (!cmd_split_colon(args, &text) || !cmd_parse_id(args, &gid)) {
        cmd_usage_error(q, "groupchat");
        return;
    }
    if (!qconn_ready(q))
        return;
    rc = qclient_group_chat(q->c, gid, text, qchat_seq(q), &ack, q->reply_timeout_ms);
    report_sent(q, rc, ack, (struct conv_key){ .group = true, .id = gid });
}

static void cmd_addfriend(struct qchat *q, char *args)
{
    char ok[CMD_OK_TEXT_MAX];
    int32_t id;
    int rc;

    if (!cmd_parse_id(args, &id)) {
        cmd_usage_error(q, "addfriend");
        return;
    }
    if (!qconn_ready(q))
        return;
    rc = qclient_add_friend(q->c, id, qchat_seq(q), q->reply_timeout_ms);
    snprintf(ok, sizeof ok, "friend added: id %d", id);
    out_outcome(q, rc, ok);
}

static void cmd_creategroup(struct qchat *q, char *args)
{
    char ok[CMD_OK_TEXT_MAX];
    char *desc = "";
    int32_t gid = 0;
    int rc;

    if (args == NULL || *args == '\0') {
        cmd_usage_error(q, "creategroup");
        return;
    }
    (void)cmd_split_colon(args, &desc); /* the description may be left out */
    if (!qconn_ready(q))
        return;
    rc = qclient_create_group(q->c, args, desc, qchat_seq(q), &gid, q->reply_timeout_ms);
    snprintf(ok, sizeof ok, "group created: id %d", gid);
    out_outcome(q, rc, ok);
}

static void cmd_addgroup(struct qchat *q, char *args)
{
    char ok[CMD_OK_TEXT_MAX];
    int32_t gid;
    int rc;

    if (!cmd_parse_id(args, &gid)) {
        cmd_usage_error(q, "addgroup");
        return;
    }
    if (!qconn_ready(q))
        return;
    rc = qclient_add_group(q->c, gid, qchat_seq(q), q->reply_timeout_ms);
    snprintf(ok, sizeof ok, "group joined: id %d", gid);
    out_outcome(q, rc, ok);
}

/* LOGINOUT_MSG, with "revoke": true for loginout:revoke. */
static int send_logout(struct qchat *q, bool revoke)
{
    struct json_object *req = json_object_new_object();
    int64_t seq = qchat_seq(q);

    if (req != NULL &&
        (json_object_object_add(req, "msgid", json_object_new_int(QC_LOGINOUT_MSG)) < 0 ||
         (revoke && json_object_object_add(req, "revoke", json_object_new_boolean(1)) < 0))) {
        json_object_put(req);
        req = NULL;
    }
    return qclient_call(q->c, req, QC_ACK_MSG, seq, NULL, q->reply_timeout_ms);
}

static void cmd_loginout(struct qchat *q, char *args)
{
    bool revoke = args != NULL && strcmp(args, "revoke") == 0;
    int rc;

    if (args != NULL && !revoke) {
        cmd_usage_error(q, "loginout");
        return;
    }
    if (!qconn_ready(q))
        return;
    rc = send_logout(q, revoke);
    /* Whatever the answer, this client no longer acts as logged in. */
    q->logged_in = false;
    q->reconnect_at = 0;
    qconn_forget_credentials(q);
    out_outcome(q, rc, revoke ? "logged out, token revoked" : "logged out");
    qconn_close(q); /* sitting at the menu costs the server nothing */
}

static void cmd_login(struct qchat *q, char *args)
{
    char *password;

    if (!cmd_split_colon(args, &password)) {
        if (args != NULL)
            explicit_bzero(args, strlen(args));
        cmd_usage_error(q, "login");
        return;
    }
    (void)qchat_login(q, args, password);
}

static void cmd_register(struct qchat *q, char *args)
{
    char *password;

    if (!cmd_split_colon(args, &password) || *args == '\0') {
        if (args != NULL)
            explicit_bzero(args, strlen(args));
        cmd_usage_error(q, "register");
        return;
    }
    qchat_register(q, args, password);
}

static void cmd_wait(struct qchat *q, char *args)
{
    long long ms;
    int64_t deadline;

    if (!parse_number(args, 0, CMD_WAIT_MAX_MS, &ms)) {
        cmd_usage_error(q, "wait");
        return;
    }
    deadline = clock_now_ms() + ms;
    for (;;) {
        int64_t left = deadline - clock_now_ms();

        if (left <= 0)
            break;
        (void)qchat_wait(q, -1, (int)left);
    }
}

static void cmd_quit(struct qchat *q, char *args)
{
    q->quit = true;
}

static void cmd_help(struct qchat *q, char *args)
{
    qchat_help(q);
}

static const struct command commands[] = {
    { "help", "show the commands", "help", cmd_help },
    { "chat", "one-to-one chat", "chat:friendid:message", cmd_chat },
    { "addfriend", "add a friend (ask, with consent)", "addfriend:friendid", cmd_addfriend },
    { "creategroup", "create a group", "creategroup:groupname:groupdesc", cmd_creategroup },
    { "addgroup", "join a group", "addgroup:groupid", cmd_addgroup },
    { "groupchat", "group chat", "groupchat:groupid:message", cmd_groupchat },
    { "loginout", "log out (revoke: end the token too)", "loginout[:revoke]", cmd_loginout },
    { "history", "a page of a one-to-one chat", "history:userid[:before]", cmd_history },
    { "ghistory", "a page of a group chat", "ghistory:groupid[:before]", cmd_ghistory },
    { "convs", "conversations, unread counts", "convs", cmd_convs },
    { "friends", "friends, requests, blocked users", "friends", cmd_friends },
    { "accept", "accept a friend request", "accept:userid", cmd_accept },
    { "decline", "decline a friend request", "decline:userid", cmd_decline },
    { "unfriend", "end a friendship", "unfriend:userid", cmd_unfriend },
    { "block", "block a user", "block:userid", cmd_block },
    { "unblock", "unblock a user", "unblock:userid", cmd_unblock },
    { "members", "members of a group", "members:groupid", cmd_members },
    { "leave", "leave a group", "leave:groupid", cmd_leave },
    { "kick", "remove a member of a group", "kick:groupid:userid", cmd_kick },
    { "role", "make a member admin or normal", "role:groupid:userid:admin|normal", cmd_role },
    { "rename", "rename a group", "rename:groupid:groupname", cmd_rename },
    { "delgroup", "delete a group", "delgroup:groupid", cmd_delgroup },
    { "passwd", "change the password", "passwd:oldpassword:newpassword", cmd_passwd },
    { "devices", "the account's sessions, every device", "devices", cmd_devices },
    { "login", "log in", "login:userid:password", cmd_login },
    { "register", "register a new user", "register:username:password", cmd_register },
    { "wait", "print incoming messages for MS ms", "wait:MS", cmd_wait },
    { "quit", "leave qchat", "quit", cmd_quit },
};

#define NCOMMANDS (sizeof commands / sizeof commands[0])

void cmd_usage_error(struct qchat *q, const char *name)
{
    size_t i;

    for (i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            out_line(q, "error: usage: %s", commands[i].format);
}

void qchat_help(struct qchat *q)
{
    size_t i;

    for (i = 0; i < NCOMMANDS; i++)
        out_line(q, "%-12s %-38s %s", commands[i].name, commands[i].help, commands[i].format);
}

void qchat_exec(struct qchat *q, char *line)
{
    struct buf b;
    char *args = NULL;
    size_t i;

    (void)cmd_split_colon(line, &args);
    for (i = 0; i < NCOMMANDS; i++) {
        if (strcmp(commands[i].name, line) == 0) {
            commands[i].run(q, args);
            return;
        }
    }
    buf_init(&b);
    buf_append_str(&b, "error: unknown command \"");
    out_append_text(&b, line);
    buf_append_str(&b, "\" (try help)");
    out_emit(q, &b);
    buf_free(&b);
}
