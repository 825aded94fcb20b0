/*
 * qchat_out.c - every line qchat prints: command outcomes, incoming
 * messages, the login summary.  The line formats are listed at the top of
 * qchat.c; keep the two in step.
 *
 * Text that comes from the network (names, messages, reasons) is escaped
 * before it reaches the terminal: control characters become \n, \r, \t or
 * \xHH, so a message is always one line and cannot carry terminal escape
 * sequences.  While the line editor shows a prompt, a printed line first
 * clears the prompt line and then has libedit redraw the prompt and the
 * half-typed input below it.  Lines are built in a struct buf; should an
 * allocation fail, the line printed is only shorter (nothing else breaks).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/proto.h"
#include "qchat.h"

#define OUT_CLEAR_LINE "\r\033[K" /* to column 0, erase to end of line */

/* ---- building lines --------------------------------------------------- */

void out_append_text(struct buf *b, const char *text)
{
    const unsigned char *p;

    for (p = (const unsigned char *)text; *p != '\0'; p++) {
        switch (*p) {
        case '\n': buf_append_str(b, "\\n"); break;
        case '\r': buf_append_str(b, "\\r"); break;
        case '\t': buf_append_str(b, "\\t"); break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                buf_printf(b, "\\x%02x", *p);
            else
                buf_append_char(b, (char)*p);
        }
    }
}

/* Append the string field key of o, escaped; fallback when absent. */
void out_append_field(struct buf *b, struct json_object *o, const char *key, const char *fallback)
{
    const char *s = qjson_str(o, key);

    out_append_text(b, s != NULL ? s : fallback);
}

/* Append the integer field key (or alt_key) of o; "?" when absent. */
void out_append_int(struct buf *b, struct json_object *o, const char *key, const char *alt_key)
{
    int64_t v;

    if (qjson_int(o, key, &v) == 0 || (alt_key != NULL && qjson_int(o, alt_key, &v) == 0))
        buf_printf(b, "%lld", (long long)v);
    else
        buf_append_char(b, '?');
}

/* The server stamps "time"; a peer that does not (relay_ref) gets ours. */
static void append_time(struct buf *b, struct json_object *msg)
{
    const char *t = qjson_str(msg, "time");
    char now[QCHAT_TIME_LEN];
    time_t secs;
    struct tm tm;

    if (t != NULL) {
        out_append_text(b, t);
        return;
    }
    secs = time(NULL);
    if (localtime_r(&secs, &tm) == NULL || strftime(now, sizeof now, "%Y-%m-%d %H:%M:%S", &tm) == 0)
        snprintf(now, sizeof now, "%lld", (long long)secs);
    buf_append_str(b, now);
}

void out_chat_line(struct buf *b, struct json_object *msg)
{
    int64_t msgid = 0;

    (void)qjson_int(msg, "msgid", &msgid);
    if (msgid == QC_GROUP_CHAT_MSG) {
        buf_append_str(b, "group message[");
        out_append_int(b, msg, "groupid", NULL);
        buf_append_str(b, "]: ");
    }
    append_time(b, msg);
    buf_append_str(b, " [");
    out_append_int(b, msg, "id", "userid");
    buf_append_char(b, ']');
    out_append_field(b, msg, "name", "");
    buf_append_str(b, " said: ");
    out_append_field(b, msg, "msg", "");
}

/* ---- printing --------------------------------------------------------- */

void out_emit(struct qchat *q, struct buf *b)
{
    if (q->in_prompt)
        fputs(OUT_CLEAR_LINE, stdout);
    fwrite(buf_head(b), 1, buf_used(b), stdout);
    fputc('\n', stdout);
    fflush(stdout);
    if (q->in_prompt)
        el_set(q->el, EL_REFRESH);
    buf_reset(b);
}

void out_line(struct qchat *q, const char *fmt, ...)
{
    struct buf b;
    va_list ap;
    char small[512];
    int n;

    va_start(ap, fmt);
    n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    buf_init(&b);
    if ((size_t)n < sizeof small) {
        buf_append(&b, small, (size_t)n);
    } else if (buf_reserve(&b, (size_t)n + 1) == 0) {
        va_start(ap, fmt);
        n = vsnprintf(b.data, (size_t)n + 1, fmt, ap);
        va_end(ap);
        if (n > 0)
            b.len = (size_t)n;
    }
    out_emit(q, &b);
    buf_free(&b);
}

void out_outcome(struct qchat *q, int rc, const char *ok_text)
{
    if (rc == 0)
        out_line(q, "%s", ok_text);
    else if (rc > 0)
        out_line(q, "error %d: %s", rc, qc_strerror(rc));
    else if (errno == ETIMEDOUT)
        out_line(q, "error: no reply within %d ms", q->reply_timeout_ms);
    else if (errno == EPROTO)
        out_line(q, "error: protocol error from the server");
    else if (q->c == NULL || qclient_eof(q->c))
        out_line(q, "error: connection lost");
    else
        out_line(q, "error: %s", strerror(errno));
    /* the caller's loop closes it, says so and plans the reconnect */
    if (rc < 0 && q->c != NULL && qclient_eof(q->c))
        q->broken = true;
}

/* ---- incoming messages ------------------------------------------------ */

static void print_presence(struct qchat *q, struct buf *b, struct json_object *obj)
{
    buf_append_str(b, "presence: [");
    out_append_int(b, obj, "id", NULL);
    buf_append_char(b, ']');
    out_append_field(b, obj, "name", "");
    buf_append_char(b, ' ');
    out_append_field(b, obj, "state", "?");
    out_emit(q, b);
}

static void print_kick(struct qchat *q, struct buf *b, struct json_object *obj)
{
    buf_append_str(b, "kicked: ");
    out_append_field(b, obj, "reason", "");
    out_emit(q, b);
}

/* An ACK nobody waited for: a late reply, or an error notice without seq. */
static void print_stray_ack(struct qchat *q, struct buf *b, struct json_object *obj)
{
    struct json_object *seq;
    int64_t err = -1, req = 0;

    (void)qjson_int(obj, "errno", &err);
    (void)qjson_int(obj, "req", &req);
    if (json_object_object_get_ex(obj, "seq", &seq)) {
        buf_append_str(b, "late reply seq ");
        out_append_text(b, json_object_to_json_string_ext(seq, JSON_C_TO_STRING_PLAIN));
        if (err == 0)
            buf_append_str(b, ": ok");
        else
            buf_printf(b, ": error %lld: %s", (long long)err, qc_strerror((int)err));
        out_emit(q, b);
        return;
    }
    if (err == 0)
        return; /* a heartbeat's answer */
    if (err == QC_ENOTLOGGEDIN && req == 0 && !q->logged_in) {
        /* the server's security.login_timeout closing a connection without a session */
        q->timed_out = true;
        buf_append_str(b, "login timeout");
        out_emit(q, b);
        return;
    }
    buf_printf(b, "server error %lld: %s", (long long)err, qc_strerror((int)err));
    out_emit(q, b);
}

static void print_unknown(struct qchat *q, struct buf *b, struct json_object *obj)
{
    buf_append_str(b, "unknown: ");
    out_append_text(b, json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
                                                               JSON_C_TO_STRING_NOSLASHESCAPE));
    out_emit(q, b);
}

/* A live chat: printed unless its (conversation, cseq) was shown already. */
static void print_chat(struct qchat *q, struct buf *b, struct json_object *obj)
{
    struct conv_key key = conv_of_chat(q, obj);
    int64_t cseq, from;

    if (qjson_int(obj, "cseq", &cseq) == 0) {
        if (!conv_first_sight(q, key, cseq))
            return; /* a duplicate delivery */
        conv_mark_shown(q, key, cseq);
    }
    if (qjson_int(obj, "id", &from) == 0 || qjson_int(obj, "userid", &from) == 0)
        conv_learn_name(q, (int32_t)from, qjson_str(obj, "name"));
    out_chat_line(b, obj);
    out_emit(q, b);
}

/* "[ID]NAME", the name from the object or from what we learned. */
static void append_user(struct qchat *q, struct buf *b, struct json_object *obj, const char *key)
{
    const char *name = qjson_str(obj, "name");
    int64_t id = 0;

    (void)qjson_int(obj, key, &id);
    if (name == NULL)
        name = conv_name(q, (int32_t)id);
    buf_printf(b, "[%lld]", (long long)id);
    out_append_text(b, name != NULL ? name : "");
}

/* RECEIPT_MSG 25 {id, cseq}: "read by [ID]NAME up to N". */
static void print_receipt(struct qchat *q, struct buf *b, struct json_object *obj)
{
    buf_append_str(b, "read by ");
    append_user(q, b, obj, "id");
    buf_append_str(b, " up to ");
    out_append_int(b, obj, "cseq", NULL);
    out_emit(q, b);
}

/* READ_MSG 24 pushed from another session of ours: "read elsewhere: ...". */
static void print_read_elsewhere(struct qchat *q, struct buf *b, struct json_object *obj)
{
    struct conv_key key = { .group = false, .id = 0 };
    int64_t v, cseq = 0;

    if (qjson_int(obj, "groupid", &v) == 0) {
        key.group = true;
        key.id = (int32_t)v;
    } else if (qjson_int(obj, "with", &v) == 0) {
        key.id = (int32_t)v;
    }
    if (qjson_int(obj, "cseq", &cseq) == 0)
        conv_mark_read_elsewhere(q, key, cseq);
    buf_printf(b, "read elsewhere: %s %d up to %lld", key.group ? "group" : "with", key.id,
               (long long)cseq);
    out_emit(q, b);
}

/* TYPING_MSG 26: "[ID]NAME is typing", at most once per QCHAT_TYPING_SHOW_MS. */
static void print_typing(struct qchat *q, struct buf *b, struct json_object *obj)
{
    struct conv_key key = { .group = false, .id = 0 };
    int64_t from = 0, gid;

    (void)qjson_int(obj, "id", &from);
    if (qjson_int(obj, "groupid", &gid) == 0) {
        key.group = true;
        key.id = (int32_t)gid;
        buf_printf(b, "group[%lld]: ", (long long)gid);
    } else {
        key.id = (int32_t)from;
    }
    if (!conv_typing_due(q, key, (int32_t)from))
        return;
    append_user(q, b, obj, "id");
    buf_append_str(b, " is typing");
    out_emit(q, b);
}

/* FRIEND_REQUEST_MSG 35 {id, name}. */
static void print_friend_request(struct qchat *q, struct buf *b, struct json_object *obj)
{
    int64_t id = 0;

    (void)qjson_int(obj, "id", &id);
    buf_append_str(b, "friend request: ");
    append_user(q, b, obj, "id");
    buf_printf(b, " (accept:%lld or decline:%lld)", (long long)id, (long long)id);
    out_emit(q, b);
}

/* GROUP_EVENT_MSG 47 {groupid, event, userid, by}: "group event[GID]: EVENT user U by B". */
static void print_group_event(struct qchat *q, struct buf *b, struct json_object *obj)
{
    int64_t v;

    buf_append_str(b, "group event[");
    out_append_int(b, obj, "groupid", NULL);
    buf_append_str(b, "]: ");
    out_append_field(b, obj, "event", "?");
    if (qjson_int(obj, "userid", &v) == 0)
        buf_printf(b, " user %lld", (long long)v);
    if (qjson_int(obj, "by", &v) == 0)
        buf_printf(b, " by %lld", (long long)v);
    out_emit(q, b);
}

void out_incoming(struct qchat *q, struct json_object *obj)
{
    struct buf b;
    int64_t msgid = 0;

    buf_init(&b);
    (void)qjson_int(obj, "msgid", &msgid);
    switch (msgid) {
    case QC_ONE_CHAT_MSG:
    case QC_GROUP_CHAT_MSG: print_chat(q, &b, obj); break;
    case QC_PRESENCE_MSG: print_presence(q, &b, obj); break;
    case QC_KICK_MSG:
        q->kicked = true;
        print_kick(q, &b, obj);
        break;
    case QC_ACK_MSG: print_stray_ack(q, &b, obj); break;
    case QCHAT_READ: print_read_elsewhere(q, &b, obj); break;
    case QCHAT_RECEIPT: print_receipt(q, &b, obj); break;
    case QCHAT_TYPING: print_typing(q, &b, obj); break;
    case QCHAT_FRIEND_REQUEST: print_friend_request(q, &b, obj); break;
    case QCHAT_GROUP_EVENT: print_group_event(q, &b, obj); break;
    default: print_unknown(q, &b, obj);
    }
    buf_free(&b);
}

/* ---- the login summary ------------------------------------------------ */

/* Array items are JSON texts (the seed's format); parse one, NULL if bad. */
struct json_object *out_parse_item(struct json_object *item)
{
    struct json_object *o;

    if (json_object_is_type(item, json_type_object))
        return json_object_get(item);
    if (!json_object_is_type(item, json_type_string))
        return NULL;
    o = json_tokener_parse(json_object_get_string(item));
    if (o != NULL && !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

/* Call fn on each parsed item of the array field key. */
static void for_each_item(struct qchat *q, struct json_object *ack, const char *key,
                          void (*fn)(struct qchat *, struct json_object *))
{
    struct json_object *arr;
    size_t i, n;

    if (!json_object_object_get_ex(ack, key, &arr) || !json_object_is_type(arr, json_type_array))
        return;
    n = json_object_array_length(arr);
    for (i = 0; i < n; i++) {
        struct json_object *o = out_parse_item(json_object_array_get_idx(arr, i));

        if (o == NULL) {
            out_line(q, "error: unreadable %s entry", key);
            continue;
        }
        fn(q, o);
        json_object_put(o);
    }
}

static void print_friend(struct qchat *q, struct json_object *f)
{
    struct buf b;
    int64_t id;

    if (qjson_int(f, "id", &id) == 0)
        conv_learn_name(q, (int32_t)id, qjson_str(f, "name"));

    buf_init(&b);
    if (!q->interactive)
        buf_append_str(&b, "friend: ");
    out_append_int(&b, f, "id", NULL);
    buf_append_char(&b, ' ');
    out_append_field(&b, f, "name", "");
    buf_append_char(&b, ' ');
    out_append_field(&b, f, "state", "?");
    out_emit(q, &b);
    buf_free(&b);
}

void out_append_chat_member(struct qchat *q, struct buf *b, int64_t gid, struct json_object *u)
{
    if (q->interactive)
        buf_append_str(b, "    ");
    else
        buf_printf(b, "member: %lld ", (long long)gid);
    out_append_int(b, u, "userid", "id");
    buf_append_char(b, ' ');
    out_append_field(b, u, "name", "");
    buf_append_char(b, ' ');
    out_append_field(b, u, "state", "?");
    buf_append_char(b, ' ');
    out_append_field(b, u, "role", "?");
    out_emit(q, b);
}

static void print_group(struct qchat *q, struct json_object *g)
{
    struct json_object *users;
    struct buf b;
    int64_t gid = 0;
    size_t i, n;

    if (qjson_int(g, "groupid", &gid) < 0)
        (void)qjson_int(g, "id", &gid);
    buf_init(&b);
    buf_printf(&b, "%s%lld ", q->interactive ? "" : "group: ", (long long)gid);
    out_append_field(&b, g, "groupname", "");
    buf_append_char(&b, ' ');
    out_append_field(&b, g, "groupdesc", "");
    out_emit(q, &b);
    if (json_object_object_get_ex(g, "users", &users) &&
        json_object_is_type(users, json_type_array)) {
        n = json_object_array_length(users);
        for (i = 0; i < n; i++) {
            struct json_object *u = out_parse_item(json_object_array_get_idx(users, i));

            if (u == NULL)
                continue;
            out_append_chat_member(q, &b, gid, u);
            json_object_put(u);
        }
    }
    buf_free(&b);
}

void out_offline_item(struct qchat *q, struct json_object *m)
{
    struct conv_key key = conv_of_chat(q, m);
    struct buf b;
    int64_t cseq;

    if (qjson_int(m, "cseq", &cseq) == 0) {
        if (!conv_first_sight(q, key, cseq))
            return; /* shown live before the connection dropped */
        conv_mark_shown(q, key, cseq);
    }
    buf_init(&b);
    if (!q->interactive)
        buf_append_str(&b, "offline: ");
    out_chat_line(&b, m);
    out_emit(q, &b);
    buf_free(&b);
}

void out_relogin(struct qchat *q, struct json_object *ack)
{
    struct buf b;

    buf_init(&b);
    buf_printf(&b, "reconnected: id %d name ", q->my_id);
    out_append_field(&b, ack, "name", "");
    out_emit(q, &b);
    buf_free(&b);
    for_each_item(q, ack, "offlinemsg", out_offline_item);
}

void out_login(struct qchat *q, struct json_object *ack)
{
    struct buf b;
    int64_t dropped = 0;

    buf_init(&b);
    if (q->interactive) {
        out_line(q, "======================login user======================");
        buf_printf(&b, "current login user => id:%d name:", q->my_id);
    } else {
        buf_printf(&b, "logged in: id %d name ", q->my_id);
    }
    out_append_field(&b, ack, "name", "");
    out_emit(q, &b);
    buf_free(&b);

    if (q->interactive)
        out_line(q, "----------------------friend list---------------------");
    for_each_item(q, ack, "friends", print_friend);
    if (q->interactive)
        out_line(q, "----------------------group list----------------------");
    for_each_item(q, ack, "groups", print_group);
    if (q->interactive)
        out_line(q, "======================================================");
    for_each_item(q, ack, "offlinemsg", out_offline_item);
    if (qjson_int(ack, "offlinedropped", &dropped) == 0 && dropped > 0)
        out_line(q, "offline dropped: %lld", (long long)dropped);
}
