/*
 * qclient.h - the qchat client library, used by qchat, qchat-bench and the
 * tests.  One struct qclient is one TCP connection to a qchatd (or anything
 * speaking its protocol).  Sends are blocking; receives take a timeout.
 * Received objects are framed with common/frame.h like the server does.
 */
#ifndef QCHAT_CLIENT_QCLIENT_H
#define QCHAT_CLIENT_QCLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <json-c/json.h>

struct qclient;

/* Connect to host:port within timeout_ms.  NULL with err filled on failure. */
struct qclient *qclient_connect(const char *host, int port, int timeout_ms, char *err,
                                size_t errlen);
void qclient_close(struct qclient *c);
int qclient_fd(const struct qclient *c);

/* Send bytes as they are (tests use it for malformed input). 0 or -1. */
int qclient_send_raw(struct qclient *c, const void *p, size_t n);
/* Serialize obj and send it (no separator unless qclient_set_trailing_nul). */
int qclient_send(struct qclient *c, struct json_object *obj);
/* Send a JSON text given with printf formatting. */
int qclient_sendf(struct qclient *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append a NUL after each object, as the seed's client does. */
void qclient_set_trailing_nul(struct qclient *c, bool on);

/*
 * Next object from the server, waiting at most timeout_ms (-1: forever).
 * NULL on timeout (errno ETIMEDOUT), end of stream (qclient_eof true) or a
 * framing error (errno EPROTO).  The caller owns the object (json_object_put).
 */
struct json_object *qclient_recv(struct qclient *c, int timeout_ms);
/* Like qclient_recv, but skip objects whose msgid differs (kept for later). */
struct json_object *qclient_recv_msgid(struct qclient *c, int msgid, int timeout_ms);
/* Objects received and set aside by qclient_recv_msgid are returned first. */
bool qclient_eof(const struct qclient *c);
/*
 * True when objects or bytes already wait in user space, so that a poll()
 * on qclient_fd alone would not report them: call qclient_recv(c, 0) then.
 */
bool qclient_buffered(const struct qclient *c);
/*
 * Where qclient_recv_msgid and the request helpers put the objects they skip
 * while waiting: by default the FIFO; with a handler, fn(arg, obj) at once,
 * in arrival order (obj is borrowed: json_object_get it to keep it).
 * fn must not call back into the library.  NULL restores the FIFO.
 */
typedef void qclient_skip_fn(void *arg, struct json_object *obj);
void qclient_set_skip_handler(struct qclient *c, qclient_skip_fn *fn, void *arg);

/* Field helpers: 0 when present with the right type. */
int qjson_int(struct json_object *o, const char *key, int64_t *out);
const char *qjson_str(struct json_object *o, const char *key); /* NULL if absent */

/*
 * Requests.  Each returns the reply's errno (0 ok, >0 server error) or -1 on
 * a transport error / timeout.  seq > 0 adds a "seq" field; replies with seq
 * are matched.  *ack (if given) receives the reply object to inspect.
 */
int qclient_register(struct qclient *c, const char *name, const char *password, int32_t *id,
                     int timeout_ms);
int qclient_login(struct qclient *c, int32_t id, const char *password, bool presence,
                  struct json_object **ack, int timeout_ms);
/* Requests whose only reply is the generic ACK (msgid 11): send with seq. */
int qclient_chat(struct qclient *c, int32_t toid, const char *text, int64_t seq,
                 struct json_object **ack, int timeout_ms);
int qclient_add_friend(struct qclient *c, int32_t friendid, int64_t seq, int timeout_ms);
/* *groupid gets the new group's id from the ACK (0 when seq == 0: no ACK). */
int qclient_create_group(struct qclient *c, const char *name, const char *desc, int64_t seq,
                         int32_t *groupid, int timeout_ms);
int qclient_add_group(struct qclient *c, int32_t groupid, int64_t seq, int timeout_ms);
int qclient_group_chat(struct qclient *c, int32_t groupid, const char *text, int64_t seq,
                       struct json_object **ack, int timeout_ms);
int qclient_logout(struct qclient *c, int64_t seq, int timeout_ms);
int qclient_heartbeat(struct qclient *c, int64_t seq, int timeout_ms);

/*
 * Version 2 requests whose success has its own reply (HISTORY 20 -> 21,
 * CONVERSATIONS 22 -> 23, FRIEND_LIST 30 -> 31, GROUP_MEMBERS 40 -> 41) and
 * whose failure is the generic ACK: send req (consumed; NULL counts as
 * ENOMEM) after adding "seq" (seq > 0 required), then wait for reply_msgid
 * or QC_ACK_MSG echoing seq.  Returns the reply's errno or -1 as above;
 * *reply receives the reply when it is not NULL.
 */
int qclient_call(struct qclient *c, struct json_object *req, int reply_msgid, int64_t seq,
                 struct json_object **reply, int timeout_ms);

/* LOGIN_MSG with the version 2 fields; NULL or false fields are left out. */
struct qclient_login_opts {
    const char *password; /* or token */
    const char *token;    /* log in with a token instead of the password */
    const char *device;   /* names this device's session */
    bool presence;        /* presence notices */
    bool receipts;        /* RECEIPT_MSG pushes */
    bool typing;          /* TYPING_MSG pushes */
    bool want_token;      /* "token": true, the reply carries a token */
};
int qclient_login_opts(struct qclient *c, int32_t id, const struct qclient_login_opts *o,
                       struct json_object **ack, int timeout_ms);

#endif
