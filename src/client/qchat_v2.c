/*
 * qchat_v2.c - the version 2 commands (DESIGN.md "Version 2"):
 *
 *   history:ID[:before]  ghistory:GID[:before]  convs       (the log, issue 11)
 *   friends  accept:ID  decline:ID  unfriend:ID  block:ID  unblock:ID
 *   members:GID  leave:GID  kick:GID:ID  role:GID:ID:admin|normal
 *   rename:GID:NAME  delgroup:GID                           (issue 12)
 *   passwd[:OLD:NEW]  devices                               (issue 15)
 *
 * Every request carries a "seq"; a request with its own reply (20, 22, 30,
 * 40) waits for that reply or for the generic ACK with the error, the
 * others for the ACK.  Each command prints exactly one outcome line; a
 * listing follows its outcome line with one line per item.  A history page
 * is printed oldest first, its cseqs are recorded as shown (so that a
 * later duplicate delivery is not printed again) and the newest is marked
 * read (qchat_conv.c sends the READ_MSG).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qchat.h"

#define V2_OK_TEXT_MAX 160 /* room for one outcome text */

/* ---- building and sending requests ------------------------------------ */

/* {"msgid": msgid}; NULL on ENOMEM (qclient_call reports it). */
static struct json_object *new_request(int msgid)
{
    struct json_object *req = json_object_new_object();

    if (req != NULL && json_object_object_add(req, "msgid", json_object_new_int(msgid)) < 0) {
        json_object_put(req);
        return NULL;
    }
    return req;
}

/* Add key: value to *req; on failure *req is released and set to NULL. */
static void add_field(struct json_object **req, const char *key, struct json_object *value)
{
    if (*req == NULL) {
        json_object_put(value);
        return;
    }
    if (value == NULL || json_object_object_add(*req, key, value) < 0) {
        json_object_put(value);
        json_object_put(*req);
        *req = NULL;
    }
}

static void add_int(struct json_object **req, const char *key, int64_t v)
{
    add_field(req, key, json_object_new_int64(v));
}

static void add_str(struct json_object **req, const char *key, const char *s)
{
    add_field(req, key, json_object_new_string(s));
}

/* Send req with the next seq; wait for reply_msgid (or the ACK with the error). */
static int call(struct qchat *q, struct json_object *req, int reply_msgid,
                struct json_object **reply)
{
    return qclient_call(q->c, req, reply_msgid, qchat_seq(q), reply, q->reply_timeout_ms);
}

/* A request with its own reply message: the reply, or NULL once the error is printed. */
static struct json_object *query(struct qchat *q, struct json_object *req, int reply_msgid)
{
    struct json_object *reply = NULL;
    int rc = call(q, req, reply_msgid, &reply);

    if (rc == 0)
        return reply;
    out_outcome(q, rc, "");
    json_object_put(reply);
    return NULL;
}

/* A request answered by the ACK only: print ok_text or the error. */
static void call_acked(struct qchat *q, struct json_object *req, const char *ok_text)
{
    out_outcome(q, call(q, req, QC_ACK_MSG, NULL), ok_text);
}

/* The array field key of o, or NULL. */
static struct json_object *array_field(struct json_object *o, const char *key)
{
    struct json_object *a;

    if (!json_object_object_get_ex(o, key, &a) || !json_object_is_type(a, json_type_array))
        return NULL;
    return a;
}

static size_t array_count(struct json_object *o, const char *key)
{
    struct json_object *a = array_field(o, key);

    return a != NULL ? json_object_array_length(a) : 0;
}

static bool bool_field(struct json_object *o, const char *key)
{
    struct json_object *v;

    return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_boolean) &&
           json_object_get_boolean(v);
}

/* ---- history ------------------------------------------------------------ */

/* One message of a page: "cseq C: CHAT-LINE"; returns its cseq (0 if none). */
static int64_t print_history_item(struct qchat *q, struct conv_key key, struct json_object *m)
{
    struct buf b;
    int64_t cseq = 0, from;

    buf_init(&b);
    if (qjson_int(m, "cseq", &cseq) == 0) {
        buf_printf(&b, "cseq %lld: ", (long long)cseq);
        (void)conv_first_sight(q, key, cseq);
    } else {
        buf_append_str(&b, "cseq ?: ");
    }
    if (qjson_int(m, "id", &from) == 0 || qjson_int(m, "userid", &from) == 0)
        conv_learn_name(q, (int32_t)from, qjson_str(m, "name"));
    out_chat_line(&b, m);
    out_emit(q, &b);
    buf_free(&b);
    return cseq;
}

static void print_history_page(struct qchat *q, struct conv_key key, struct json_object *reply)
{
    struct json_object *msgs = array_field(reply, "msgs");
    size_t i, n = msgs != NULL ? json_object_array_length(msgs) : 0;
    int64_t first = 0, newest = 0;

    if (key.group)
        out_line(q, "history of group %d: %zu message%s", key.id, n, n == 1 ? "" : "s");
    else
        out_line(q, "history with %d: %zu message%s", key.id, n, n == 1 ? "" : "s");
    for (i = 0; i < n; i++) {
        struct json_object *m = json_object_array_get_idx(msgs, i);
        int64_t cseq;

        if (!json_object_is_type(m, json_type_object)) {
            out_line(q, "error: unreadable msgs entry");
            continue;
        }
        cseq = print_history_item(q, key, m);
        if (cseq > 0 && (first == 0 || cseq < first))
            first = cseq;
        if (cseq > newest)
            newest = cseq;
    }
    if (newest > 0)
        conv_mark_shown(q, key, newest);
    if (bool_field(reply, "more") && first > 0)
        out_line(q, "more: %s:%d:%lld", key.group ? "ghistory" : "history", key.id,
                 (long long)first);
}

static void history_command(struct qchat *q, char *args, bool group)
{
    const char *name = group ? "ghistory" : "history";
    struct json_object *req, *reply = NULL;
    struct conv_key key = { .group = group };
    char *before_text = NULL;
    int64_t before = 0;

    if (cmd_split_colon(args, &before_text) && !cmd_parse_cseq(before_text, &before)) {
        cmd_usage_error(q, name);
        return;
    }
    if (!cmd_parse_id(args, &key.id)) {
        cmd_usage_error(q, name);
        return;
    }
    if (!qconn_ready(q))
        return;
    req = new_request(QCHAT_HISTORY);
    add_int(&req, group ? "groupid" : "with", key.id);
    if (before > 0)
        add_int(&req, "before", before);
    reply = query(q, req, QCHAT_HISTORY_ACK);
    if (reply != NULL)
        print_history_page(q, key, reply);
    json_object_put(reply);
}

void cmd_history(struct qchat *q, char *args)
{
    history_command(q, args, false);
}

void cmd_ghistory(struct qchat *q, char *args)
{
    history_command(q, args, true);
}

/* ---- conversations ---------------------------------------------------- */

/* "conv: with ID NAME, unread N: CHAT-LINE" or "conv: group GID NAME, ...". */
static void print_conv(struct qchat *q, struct json_object *cv)
{
    struct json_object *last;
    struct buf b;
    int64_t id, unread = 0;

    buf_init(&b);
    if (qjson_int(cv, "groupid", &id) == 0)
        buf_printf(&b, "conv: group %lld ", (long long)id);
    else if (qjson_int(cv, "with", &id) == 0)
        buf_printf(&b, "conv: with %lld ", (long long)id);
    else
        buf_append_str(&b, "conv: ? ");
    out_append_field(&b, cv, "name", "");
    (void)qjson_int(cv, "unread", &unread);
    buf_printf(&b, ", unread %lld", (long long)unread);
    if (json_object_object_get_ex(cv, "last", &last) &&
        json_object_is_type(last, json_type_object)) {
        buf_append_str(&b, ": ");
        out_chat_line(&b, last);
    }
    out_emit(q, &b);
    buf_free(&b);
}

void cmd_convs(struct qchat *q, char *args)
{
    struct json_object *reply = NULL, *convs;
    size_t i, n;

    if (args != NULL) {
        cmd_usage_error(q, "convs");
        return;
    }
    if (!qconn_ready(q))
        return;
    reply = query(q, new_request(QCHAT_CONVERSATIONS), QCHAT_CONVERSATIONS_ACK);
    if (reply == NULL)
        return;
    convs = array_field(reply, "convs");
    n = convs != NULL ? json_object_array_length(convs) : 0;
    out_line(q, "conversations: %zu", n);
    for (i = 0; i < n; i++) {
        struct json_object *cv = json_object_array_get_idx(convs, i);

        if (json_object_is_type(cv, json_type_object))
            print_conv(q, cv);
        else
            out_line(q, "error: unreadable convs entry");
    }
    json_object_put(reply);
}

/* ---- friends ------------------------------------------------------------ */

/* "PREFIX ID NAME[ STATE]" for each item of the array key. */
static void print_people(struct qchat *q, struct json_object *reply, const char *key,
                         const char *prefix, bool with_state)
{
    struct json_object *arr = array_field(reply, key);
    size_t i, n = arr != NULL ? json_object_array_length(arr) : 0;
    struct buf b;

    buf_init(&b);
    for (i = 0; i < n; i++) {
        struct json_object *p = out_parse_item(json_object_array_get_idx(arr, i));
        int64_t id;

        if (p == NULL) {
            out_line(q, "error: unreadable %s entry", key);
            continue;
        }
        if (qjson_int(p, "id", &id) == 0)
            conv_learn_name(q, (int32_t)id, qjson_str(p, "name"));
        buf_printf(&b, "%s ", prefix);
        out_append_int(&b, p, "id", "userid");
        buf_append_char(&b, ' ');
        out_append_field(&b, p, "name", "");
        if (with_state) {
            buf_append_char(&b, ' ');
            out_append_field(&b, p, "state", "?");
        }
        out_emit(q, &b);
        json_object_put(p);
    }
    buf_free(&b);
}

void cmd_friends(struct qchat *q, char *args)
{
    struct json_object *reply = NULL;

    if (args != NULL) {
        cmd_usage_error(q, "friends");
        return;
    }
    if (!qconn_ready(q))
        return;
    reply = query(q, new_request(QCHAT_FRIEND_LIST), QCHAT_FRIEND_LIST_ACK);
    if (reply == NULL)
        return;
    out_line(q, "friends: %zu friends, %zu requests in, %zu requests out, %zu blocked",
             array_count(reply, "friends"), array_count(reply, "requests_in"),
             array_count(reply, "requests_out"), array_count(reply, "blocked"));
    print_people(q, reply, "friends", "friend:", true);
    print_people(q, reply, "requests_in", "request in:", false);
    print_people(q, reply, "requests_out", "request out:", false);
    print_people(q, reply, "blocked", "blocked:", false);
    json_object_put(reply);
}

/*
 * The commands NAME:ID that send {key: ID} and print ok_prefix followed by
 * "id ID" when the ACK says ok.
 */
static void id_command(struct qchat *q, char *args, const char *name, int msgid, const char *key,
                       const char *ok_prefix)
{
    char ok[V2_OK_TEXT_MAX];
    struct json_object *req;
    int32_t id;

    if (!cmd_parse_id(args, &id)) {
        cmd_usage_error(q, name);
        return;
    }
    if (!qconn_ready(q))
        return;
    req = new_request(msgid);
    add_int(&req, key, id);
    snprintf(ok, sizeof ok, "%s: id %d", ok_prefix, id);
    call_acked(q, req, ok);
}

void cmd_accept(struct qchat *q, char *args)
{
    id_command(q, args, "accept", QC_ADD_FRIEND_MSG, "friendid", "friend accepted");
}

void cmd_decline(struct qchat *q, char *args)
{
    id_command(q, args, "decline", QCHAT_FRIEND_DECLINE, "friendid", "friend request declined");
}

void cmd_unfriend(struct qchat *q, char *args)
{
    id_command(q, args, "unfriend", QCHAT_FRIEND_REMOVE, "friendid", "friend removed");
}

void cmd_block(struct qchat *q, char *args)
{
    id_command(q, args, "block", QCHAT_BLOCK, "userid", "user blocked");
}

void cmd_unblock(struct qchat *q, char *args)
{
    id_command(q, args, "unblock", QCHAT_UNBLOCK, "userid", "user unblocked");
}

/* ---- groups ------------------------------------------------------------- */

void cmd_members(struct qchat *q, char *args)
{
    struct json_object *req, *reply = NULL, *users;
    int32_t gid;
    size_t i, n;
    struct buf b;

    if (!cmd_parse_id(args, &gid)) {
        cmd_usage_error(q, "members");
        return;
    }
    if (!qconn_ready(q))
        return;
    req = new_request(QCHAT_GROUP_MEMBERS);
    add_int(&req, "groupid", gid);
    reply = query(q, req, QCHAT_GROUP_MEMBERS_ACK);
    if (reply == NULL)
        return;
    users = array_field(reply, "users");
    n = users != NULL ? json_object_array_length(users) : 0;
    out_line(q, "members of group %d: %zu", gid, n);
    buf_init(&b);
    for (i = 0; i < n; i++) {
        struct json_object *u = out_parse_item(json_object_array_get_idx(users, i));

        if (u == NULL) {
            out_line(q, "error: unreadable users entry");
            continue;
        }
        out_append_chat_member(q, &b, gid, u);
        json_object_put(u);
    }
    buf_free(&b);
    json_object_put(reply);
}

void cmd_leave(struct qchat *q, char *args)
{
    id_command(q, args, "leave", QCHAT_GROUP_LEAVE, "groupid", "group left");
}

void cmd_delgroup(struct qchat *q, char *args)
{
    id_command(q, args, "delgroup", QCHAT_GROUP_DELETE, "groupid", "group deleted");
}

/* "GID:ID" at the start of args; *rest gets what follows a further ':' (or NULL). */
static bool parse_group_and_user(char *args, int32_t *gid, int32_t *uid, char **rest)
{
    char *user;

    *rest = NULL;
    if (!cmd_split_colon(args, &user))
        return false;
    (void)cmd_split_colon(user, rest);
    return cmd_parse_id(args, gid) && cmd_parse_id(user, uid);
}

void cmd_kick(struct qchat *q, char *args)
{
    char ok[V2_OK_TEXT_MAX];
    struct json_object *req;
    int32_t gid, uid;
    char *rest;

    if (!parse_group_and_user(args, &gid, &uid, &rest) || rest != NULL) {
        cmd_usage_error(q, "kick");
        return;
    }
    if (!qconn_ready(q))
        return;
    req = new_request(QCHAT_GROUP_KICK);
    add_int(&req, "groupid", gid);
    add_int(&req, "userid", uid);
    snprintf(ok, sizeof ok, "member kicked: group %d id %d", gid, uid);
    call_acked(q, req, ok);
}

void cmd_role(struct qchat *q, char *args)
{
    char ok[V2_OK_TEXT_MAX];
    struct json_object *req;
    int32_t gid, uid;
    char *role;

    if (!parse_group_and_user(args, &gid, &uid, &role) || role == NULL ||
        (strcmp(role, QC_ROLE_ADMIN) != 0 && strcmp(role, QC_ROLE_NORMAL) != 0)) {
        cmd_usage_error(q, "role");
        return;
    }
    if (!qconn_ready(q))
        return;
    req = new_request(QCHAT_GROUP_ROLE);
    add_int(&req, "groupid", gid);
    add_int(&req, "userid", uid);
    add_str(&req, "role", role);
    snprintf(ok, sizeof ok, "role set: group %d id %d %s", gid, uid, role);
    call_acked(q, req, ok);
}

void cmd_rename(struct qchat *q, char *args)
{
    char ok[V2_OK_TEXT_MAX];
    struct json_object *req;
    char *name;
    int32_t gid;

    if (!cmd_split_colon(args, &name) || !cmd_parse_id(args, &gid) || *name == '\0') {
        cmd_usage_error(q, "rename");
        return;
    }
    if (!qconn_ready(q))
        return;
    req = new_request(QCHAT_GROUP_UPDATE);
    add_int(&req, "groupid", gid);
    add_str(&req, "groupname", name);
    snprintf(ok, sizeof ok, "group renamed: id %d", gid);
    call_acked(q, req, ok);
}

/* ---- password ----------------------------------------------------------- */

static void change_password(struct qchat *q, const char *old, const char *new)
{
    struct json_object *req;
    int rc;

    if (!qconn_ready(q))
        return;
    req = new_request(QCHAT_PASSWORD);
    add_str(&req, "old", old);
    add_str(&req, "new", new);
    rc = call(q, req, QC_ACK_MSG, NULL);
    /* The change revoked every token, ours too: the new password reconnects. */
    if (rc == 0)
        qconn_keep_credentials(q, NULL, new);
    out_outcome(q, rc, "password changed");
}

void cmd_passwd(struct qchat *q, char *args)
{
    char old[QC_PASSWORD_MAX + 1], new[QC_PASSWORD_MAX + 1];
    char *newtext;

    if (args == NULL && q->interactive) {
        if (qchat_read_password(q, "old password: ", old) &&
            qchat_read_password(q, "new password: ", new))
            change_password(q, old, new);
        explicit_bzero(old, sizeof old);
        explicit_bzero(new, sizeof new);
        return;
    }
    if (!cmd_split_colon(args, &newtext) || *args == '\0' || *newtext == '\0') {
        if (args != NULL)
            explicit_bzero(args, strlen(args));
        cmd_usage_error(q, "passwd");
        return;
    }
    change_password(q, args, newtext);
    explicit_bzero(args, strlen(args));
    explicit_bzero(newtext, strlen(newtext));
}

/* ---- devices -------------------------------------------------------------- */

/* "device NAME since YYYY-MM-DD HH:MM:SS UTC[ (this one)]" */
static void print_device(struct qchat *q, struct json_object *d)
{
    struct json_object *self;
    int64_t since = 0;
    char when[32] = "?";
    const char *name = qjson_str(d, "device");

    if (qjson_int(d, "since", &since) == 0 && since > 0) {
        time_t t = (time_t)since;
        struct tm tm;

        if (gmtime_r(&t, &tm) != NULL)
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
    }
    out_line(q, "device %s since %s%s", name != NULL && *name ? name : "?", when,
             json_object_object_get_ex(d, "this", &self) && json_object_get_boolean(self)
                 ? " (this one)"
                 : "");
}

void cmd_devices(struct qchat *q, char *args)
{
    struct json_object *reply, *devices;
    size_t i, n;

    if (args != NULL) {
        cmd_usage_error(q, "devices");
        return;
    }
    if (!qconn_ready(q))
        return;
    reply = query(q, new_request(QCHAT_DEVICES), QCHAT_DEVICES_ACK);
    if (reply == NULL)
        return;
    devices = array_field(reply, "devices");
    n = devices != NULL ? json_object_array_length(devices) : 0;
    out_line(q, "devices: %zu", n);
    for (i = 0; i < n; i++) {
        struct json_object *d = json_object_array_get_idx(devices, i);

        if (json_object_is_type(d, json_type_object))
            print_device(q, d);
        else
            out_line(q, "error: unreadable devices entry");
    }
    json_object_put(reply);
}
