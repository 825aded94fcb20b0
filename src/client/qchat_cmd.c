/*
 * qchat_cmd.c - qchat's commands: the seed client's set (help,
 * chat:ID:TEXT, addfriend:ID, creategroup:NAME:DESC, addgroup:ID,
 * groupchat:ID:TEXT, loginout) plus login:ID:PASSWORD,
 * register:NAME:PASSWORD, wait:MS and quit.
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

static bool parse_id(const char *s, int32_t *out)
{
    long long v;

    if (!parse_number(s, 0, INT32_MAX, &v))
        return false;
    *out = (int32_t)v;
    return true;
}

/* Split "a:b" at the first ':' into a and b; false when there is none. */
static bool split_colon(char *s, char **rest)
{
    char *colon = s != NULL ? strchr(s, ':') : NULL;

    if (colon == NULL)
        return false;
    *colon = '\0';
    *rest = colon + 1;
    return true;
}

static void usage_error(struct qchat *q, const char *name);

/* ---- requests ----------------------------------------------------------- */

int qchat_login(struct qchat *q, const char *idtext, char *password)
{
    struct json_object *ack = NULL;
    int32_t id;
    int64_t v;
    int rc;

    if (!parse_id(idtext, &id)) {
        explicit_bzero(password, strlen(password));
        out_line(q, "error: bad user id");
        return -1;
    }
    (void)qchat_seq(q); /* notes the send time for the heartbeat */
    rc = qclient_login(q->c, id, password, true, &ack, q->reply_timeout_ms);
    explicit_bzero(password, strlen(password));
    if (rc != 0) {
        out_outcome(q, rc, "");
        json_object_put(ack);
        return -1;
    }
    q->logged_in = true;
    q->my_id = qjson_int(ack, "id", &v) == 0 ? (int32_t)v : id;
    out_login(q, ack);
    json_object_put(ack);
    return 0;
}

void qchat_register(struct qchat *q, const char *name, char *password)
{
    char ok[CMD_OK_TEXT_MAX];
    int32_t id = 0;
    int rc;

    (void)qchat_seq(q);
    rc = qclient_register(q->c, name, password, &id, q->reply_timeout_ms);
    explicit_bzero(password, strlen(password));
    snprintf(ok, sizeof ok, "registered id %d", id);
    out_outcome(q, rc, ok);
}

/* "sent: mid M" from a chat ACK, "sent" if it names no mid. */
static void report_sent(struct qchat *q, int rc, struct json_object *ack)
{
    char ok[CMD_OK_TEXT_MAX];
    int64_t mid;

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

    if (!split_colon(args, &text) || !parse_id(args, &toid)) {
        usage_error(q, "chat");
        return;
    }
    rc = qclient_chat(q->c, toid, text, qchat_seq(q), &ack, q->reply_timeout_ms);
    report_sent(q, rc, ack);
}

static void cmd_groupchat(struct qchat *q, char *args)
{
    struct json_object *ack = NULL;
    char *text;
    int32_t gid;
    int rc;

    if (!split_colon(args, &text) || !parse_id(args, &gid)) {
        usage_error(q, "groupchat");
        return;
    }
    rc = qclient_group_chat(q->c, gid, text, qchat_seq(q), &ack, q->reply_timeout_ms);
    report_sent(q, rc, ack);
}

static void cmd_addfriend(struct qchat *q, char *args)
{
    char ok[CMD_OK_TEXT_MAX];
    int32_t id;
    int rc;

    if (!parse_id(args, &id)) {
        usage_error(q, "addfriend");
        return;
    }
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
        usage_error(q, "creategroup");
        return;
    }
    (void)split_colon(args, &desc); /* the description may be left out */
    rc = qclient_create_group(q->c, args, desc, qchat_seq(q), &gid, q->reply_timeout_ms);
    snprintf(ok, sizeof ok, "group created: id %d", gid);
    out_outcome(q, rc, ok);
}

static void cmd_addgroup(struct qchat *q, char *args)
{
    char ok[CMD_OK_TEXT_MAX];
    int32_t gid;
    int rc;

    if (!parse_id(args, &gid)) {
        usage_error(q, "addgroup");
        return;
    }
    rc = qclient_add_group(q->c, gid, qchat_seq(q), q->reply_timeout_ms);
    snprintf(ok, sizeof ok, "group joined: id %d", gid);
    out_outcome(q, rc, ok);
}

static void cmd_loginout(struct qchat *q, char *args)
{
    int rc = qclient_logout(q->c, qchat_seq(q), q->reply_timeout_ms);

    /* Whatever the answer, this client no longer acts as logged in. */
    q->logged_in = false;
    out_outcome(q, rc, "logged out");
}

static void cmd_login(struct qchat *q, char *args)
{
    char *password;

    if (!split_colon(args, &password)) {
        if (args != NULL)
            explicit_bzero(args, strlen(args));
        usage_error(q, "login");
        return;
    }
    (void)qchat_login(q, args, password);
}

static void cmd_register(struct qchat *q, char *args)
{
    char *password;

    if (!split_colon(args, &password) || *args == '\0') {
        if (args != NULL)
            explicit_bzero(args, strlen(args));
        usage_error(q, "register");
        return;
    }
    qchat_register(q, args, password);
}

static void cmd_wait(struct qchat *q, char *args)
{
    long long ms;
    int64_t deadline;

    if (!parse_number(args, 0, CMD_WAIT_MAX_MS, &ms)) {
        usage_error(q, "wait");
        return;
    }
    deadline = clock_now_ms() + ms;
    while (!q->lost) {
        int64_t left = deadline - clock_now_ms();

        if (left <= 0 || qchat_wait(q, -1, (int)left) < 0)
            break;
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
    { "addfriend", "add a friend", "addfriend:friendid", cmd_addfriend },
    { "creategroup", "create a group", "creategroup:groupname:groupdesc", cmd_creategroup },
    { "addgroup", "join a group", "addgroup:groupid", cmd_addgroup },
    { "groupchat", "group chat", "groupchat:groupid:message", cmd_groupchat },
    { "loginout", "log out", "loginout", cmd_loginout },
    { "login", "log in", "login:userid:password", cmd_login },
    { "register", "register a new user", "register:username:password", cmd_register },
    { "wait", "print incoming messages for MS ms", "wait:MS", cmd_wait },
    { "quit", "leave qchat", "quit", cmd_quit },
};

#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage_error(struct qchat *q, const char *name)
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
        out_line(q, "%-12s %-34s %s", commands[i].name, commands[i].help, commands[i].format);
}

void qchat_exec(struct qchat *q, char *line)
{
    struct buf b;
    char *args = NULL;
    size_t i;

    (void)split_colon(line, &args);
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
