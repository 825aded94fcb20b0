/*
 * qclient.c - the qchat client library: one blocking TCP connection to a
 * qchatd, request helpers that follow the protocol's "seq rule", and a
 * receive side that frames the server's newline-terminated JSON objects
 * with common/frame.h.
 *
 * Receiving: bytes read from the socket go to an input buffer; the frame
 * reader takes objects out of it one at a time, so several objects in one
 * read and objects split across reads both work.  Objects that a waiting
 * call (qclient_recv_msgid, the request helpers) is not looking for are set
 * aside in a FIFO, oldest first, and handed out by later qclient_recv
 * calls -- or, when a skip handler is installed, passed to it at once in
 * arrival order.
 *
 * Sending: the whole object (plus the optional trailing NUL) is written
 * with send(MSG_NOSIGNAL), retried on EINTR and short writes.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "client/qclient.h"
#include "common/buf.h"
#include "common/frame.h"
#include "common/net.h"
#include "common/proto.h"

#define QCLIENT_MAX_OBJECT_BYTES (64u << 20) /* largest server object (login ack) */
#define QCLIENT_READ_CHUNK       16384       /* bytes asked of one read(2) */
#define QCLIENT_FIFO_MIN         16          /* first FIFO allocation, objects */
#define QCLIENT_JSON_FLAGS       (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

struct qclient {
    int fd;
    bool trailing_nul; /* append '\0' after each object sent */
    bool eof;          /* peer closed (or the socket failed) */
    bool broken;       /* framing error: the stream cannot be resynced */
    struct frame_reader fr;
    struct buf in;  /* received bytes not yet given to the frame reader */
    struct buf out; /* serialization scratch */

    /* FIFO of set-aside objects: ring of fifo_cap slots */
    struct json_object **fifo;
    size_t fifo_head, fifo_len, fifo_cap;

    qclient_skip_fn *skip_fn;
    void *skip_arg;
};

/* ---- time ------------------------------------------------------------- */

/* Deadline for a timeout in ms; -1 stays "forever". */
static int64_t deadline_after(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : clock_now_ms() + timeout_ms;
}

/* Milliseconds left until deadline, for poll(): -1 forever, 0 expired. */
static int ms_until(int64_t deadline)
{
    int64_t left;

    if (deadline < 0)
        return -1;
    left = deadline - clock_now_ms();
    if (left <= 0)
        return 0;
    return left > INT32_MAX ? INT32_MAX : (int)left;
}

/* ---- connection ------------------------------------------------------- */

struct qclient *qclient_connect(const char *host, int port, int timeout_ms, char *err,
                                size_t errlen)
{
    struct qclient *c;

    c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->fd = -1;
    buf_init(&c->in);
    buf_init(&c->out);
    if (frame_reader_init(&c->fr, QCLIENT_MAX_OBJECT_BYTES) < 0) {
        snprintf(err, errlen, "out of memory");
        free(c);
        return NULL;
    }
    c->fd = net_connect_tcp(host, port, timeout_ms, err, errlen);
    if (c->fd < 0) {
        int saved = errno;

        qclient_close(c);
        errno = saved;
        return NULL;
    }
    /* Requests are small and latency matters; failure only costs speed. */
    (void)net_set_nodelay(c->fd);
    return c;
}

void qclient_close(struct qclient *c)
{
    if (c == NULL)
        return;
    if (c->fd >= 0)
        close(c->fd);
    while (c->fifo_len > 0) {
        json_object_put(c->fifo[c->fifo_head]);
        c->fifo_head = (c->fifo_head + 1) % c->fifo_cap;
        c->fifo_len--;
    }
    free(c->fifo);
    frame_reader_free(&c->fr);
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

int qclient_fd(const struct qclient *c)
{
    return c->fd;
}

bool qclient_eof(const struct qclient *c)
{
    return c->eof;
}

bool qclient_buffered(const struct qclient *c)
{
    return c->fifo_len > 0 || buf_used(&c->in) > 0;
}

void qclient_set_trailing_nul(struct qclient *c, bool on)
{
    c->trailing_nul = on;
}

void qclient_set_skip_handler(struct qclient *c, qclient_skip_fn *fn, void *arg)
{
    c->skip_fn = fn;
    c->skip_arg = arg;
}

/* ---- sending ---------------------------------------------------------- */

static int send_all(struct qclient *c, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int qclient_send_raw(struct qclient *c, const void *p, size_t n)
{
    return send_all(c, p, n);
}

/* Send what is in c->out, followed by the NUL separator when asked. */
static int send_out_buffer(struct qclient *c)
{
    int rc;

    if (c->trailing_nul && buf_append_char(&c->out, '\0') < 0) {
        buf_reset(&c->out);
        errno = ENOMEM;
        return -1;
    }
    rc = send_all(c, buf_head(&c->out), buf_used(&c->out));
    buf_reset(&c->out);
    return rc;
}

int qclient_send(struct qclient *c, struct json_object *obj)
{
    size_t n;
    const char *text = json_object_to_json_string_length(obj, QCLIENT_JSON_FLAGS, &n);

    if (text == NULL) {
        errno = ENOMEM;
        return -1;
    }
    if (buf_append(&c->out, text, n) < 0) {
        errno = ENOMEM;
        return -1;
    }
    return send_out_buffer(c);
}

int qclient_sendf(struct qclient *c, const char *fmt, ...)
{
    va_list ap;
    int n;
    size_t room;

    if (buf_reserve(&c->out, 256) < 0) {
        errno = ENOMEM;
        return -1;
    }
    room = c->out.cap - c->out.len;
    va_start(ap, fmt);
    n = vsnprintf(c->out.data + c->out.len, room, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t)n >= room) {
        if (buf_reserve(&c->out, (size_t)n + 1) < 0) {
            errno = ENOMEM;
            return -1;
        }
        va_start(ap, fmt);
        n = vsnprintf(c->out.data + c->out.len, (size_t)n + 1, fmt, ap);
        va_end(ap);
        if (n < 0)
            return -1;
    }
    c->out.len += (size_t)n;
    return send_out_buffer(c);
}

/* ---- the FIFO of set-aside objects ------------------------------------ */

static int fifo_grow(struct qclient *c)
{
    size_t ncap = c->fifo_cap ? c->fifo_cap * 2 : QCLIENT_FIFO_MIN;
    struct json_object **n;
    size_t i;

    n = malloc(ncap * sizeof *n);
    if (n == NULL)
        return -1;
    for (i = 0; i < c->fifo_len; i++)
        n[i] = c->fifo[(c->fifo_head + i) % c->fifo_cap];
    free(c->fifo);
    c->fifo = n;
    c->fifo_cap = ncap;
    c->fifo_head = 0;
    return 0;
}

static int fifo_push(struct qclient *c, struct json_object *obj)
{
    if (c->fifo_len == c->fifo_cap && fifo_grow(c) < 0)
        return -1;
    c->fifo[(c->fifo_head + c->fifo_len) % c->fifo_cap] = obj;
    c->fifo_len++;
    return 0;
}

/* Remove and return entry i (0 = oldest), keeping the others in order. */
static struct json_object *fifo_take(struct qclient *c, size_t i)
{
    struct json_object *obj = c->fifo[(c->fifo_head + i) % c->fifo_cap];
    size_t j;

    for (j = i; j > 0; j--)
        c->fifo[(c->fifo_head + j) % c->fifo_cap] = c->fifo[(c->fifo_head + j - 1) % c->fifo_cap];
    c->fifo_head = (c->fifo_head + 1) % c->fifo_cap;
    c->fifo_len--;
    return obj;
}

/* An object nobody is waiting for: to the skip handler, else the FIFO. */
static int set_aside(struct qclient *c, struct json_object *obj)
{
    if (c->skip_fn != NULL) {
        c->skip_fn(c->skip_arg, obj);
        json_object_put(obj);
        return 0;
    }
    if (fifo_push(c, obj) < 0) {
        json_object_put(obj);
        errno = ENOMEM;
        return -1;
    }
    return 0;
}

/* ---- receiving -------------------------------------------------------- */

/* Take the next complete object out of the input buffer, if there is one. */
static struct json_object *next_buffered_object(struct qclient *c)
{
    struct json_object *obj = NULL;
    enum frame_status st;
    size_t consumed;

    if (buf_used(&c->in) == 0)
        return NULL;
    st = frame_read(&c->fr, buf_head(&c->in), buf_used(&c->in), &consumed, &obj);
    buf_consume(&c->in, consumed);
    if (st == FRAME_OBJECT)
        return obj;
    if (st == FRAME_MALFORMED || st == FRAME_TOO_BIG)
        c->broken = true;
    return NULL;
}

/* One read(2) into the input buffer.  0 data or retry, -1 end of stream. */
static int read_some(struct qclient *c)
{
    ssize_t n;

    if (buf_reserve(&c->in, QCLIENT_READ_CHUNK) < 0) {
        errno = ENOMEM;
        return -1;
    }
    n = read(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len);
    if (n > 0) {
        c->in.len += (size_t)n;
        return 0;
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    c->eof = true;
    if (n == 0)
        errno = ENOTCONN;
    return -1;
}

/*
 * Next object from the socket (not the FIFO), waiting until deadline.
 * NULL with errno ETIMEDOUT, EPROTO (framing) or ENOTCONN/other (stream end).
 */
static struct json_object *stream_next(struct qclient *c, int64_t deadline)
{
    for (;;) {
        struct json_object *obj;
        struct pollfd pfd;
        int rc;

        obj = next_buffered_object(c);
        if (obj != NULL)
            return obj;
        if (c->broken) {
            errno = EPROTO;
            return NULL;
        }
        if (c->eof) {
            errno = ENOTCONN;
            return NULL;
        }
        pfd.fd = c->fd;
        pfd.events = POLLIN;
        pfd.revents = 0;
        rc = poll(&pfd, 1, ms_until(deadline));
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            return NULL;
        }
        if (rc == 0) {
            errno = ETIMEDOUT;
            return NULL;
        }
        if (read_some(c) < 0)
            return NULL;
    }
}

struct json_object *qclient_recv(struct qclient *c, int timeout_ms)
{
    if (c->fifo_len > 0)
        return fifo_take(c, 0);
    return stream_next(c, deadline_after(timeout_ms));
}

static bool has_msgid(struct json_object *obj, int msgid)
{
    int64_t v;

    return qjson_int(obj, "msgid", &v) == 0 && v == msgid;
}

/* The reply we wait for: right msgid and, when seq > 0, the same seq. */
static bool is_reply(struct json_object *obj, int msgid, int64_t seq)
{
    int64_t v;

    if (!has_msgid(obj, msgid))
        return false;
    if (seq <= 0)
        return true;
    return qjson_int(obj, "seq", &v) == 0 && v == seq;
}

/*
 * The reply to a request: msgid and, when seq > 0, the same seq -- or then
 * the generic ACK with that seq, which is how a call that has its own reply
 * message is answered when it fails.
 */
static bool is_reply_to(struct json_object *obj, int msgid, int64_t seq)
{
    return is_reply(obj, msgid, seq) || (seq > 0 && is_reply(obj, QC_ACK_MSG, seq));
}

/* Wait for the first object that is_reply_to (msgid, seq); others are set aside. */
static struct json_object *wait_for(struct qclient *c, int msgid, int64_t seq, int timeout_ms)
{
    int64_t deadline = deadline_after(timeout_ms);
    size_t i;

    for (i = 0; i < c->fifo_len; i++)
        if (is_reply_to(c->fifo[(c->fifo_head + i) % c->fifo_cap], msgid, seq))
            return fifo_take(c, i);
    for (;;) {
        struct json_object *obj = stream_next(c, deadline);

        if (obj == NULL)
            return NULL;
        if (is_reply_to(obj, msgid, seq))
            return obj;
        if (set_aside(c, obj) < 0)
            return NULL;
    }
}

struct json_object *qclient_recv_msgid(struct qclient *c, int msgid, int timeout_ms)
{
    return wait_for(c, msgid, 0, timeout_ms);
}

/* ---- field helpers ---------------------------------------------------- */

int qjson_int(struct json_object *o, const char *key, int64_t *out)
{
    struct json_object *v;

    if (o == NULL || !json_object_object_get_ex(o, key, &v) ||
        !json_object_is_type(v, json_type_int))
        return -1;
    *out = json_object_get_int64(v);
    return 0;
}

const char *qjson_str(struct json_object *o, const char *key)
{
    struct json_object *v;

    if (o == NULL || !json_object_object_get_ex(o, key, &v) ||
        !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

/* ---- requests --------------------------------------------------------- */

/* Add key: value to req, where value may be NULL from a failed allocation. */
static bool request_add(struct json_object *req, const char *key, struct json_object *value)
{
    if (value == NULL)
        return false;
    if (json_object_object_add(req, key, value) < 0) {
        json_object_put(value);
        return false;
    }
    return true;
}

/* A new request object {"msgid":msgid[,"seq":seq]}; NULL on ENOMEM. */
static struct json_object *request_new(int msgid, int64_t seq)
{
    struct json_object *req = json_object_new_object();

    if (req == NULL)
        return NULL;
    if (!request_add(req, "msgid", json_object_new_int(msgid)) ||
        (seq > 0 && !request_add(req, "seq", json_object_new_int64(seq)))) {
        json_object_put(req);
        return NULL;
    }
    return req;
}

/* The reply's errno, or -1 (EPROTO) when it has none. */
static int reply_errno(struct json_object *reply)
{
    int64_t e;

    if (qjson_int(reply, "errno", &e) < 0 || e < 0 || e > INT32_MAX) {
        errno = EPROTO;
        return -1;
    }
    return (int)e;
}

/*
 * Send req (consumed) and, if wait, wait for the reply (reply_msgid, seq).
 * Returns the reply's errno, 0 when not waiting, -1 on a transport error.
 * *reply gets the reply when asked for (else it is released).
 */
static int transact(struct qclient *c, struct json_object *req, bool wait, int reply_msgid,
                    int64_t seq, struct json_object **reply, int timeout_ms)
{
    struct json_object *r;
    int rc;

    if (reply != NULL)
        *reply = NULL;
    if (req == NULL) {
        errno = ENOMEM;
        return -1;
    }
    rc = qclient_send(c, req);
    json_object_put(req);
    if (rc < 0)
        return -1;
    if (!wait)
        return 0;
    r = wait_for(c, reply_msgid, seq, timeout_ms);
    if (r == NULL)
        return -1;
    rc = reply_errno(r);
    if (reply != NULL && rc >= 0)
        *reply = r;
    else
        json_object_put(r);
    return rc;
}

/* A request answered only by the generic ACK: wait only when seq > 0. */
static int transact_acked(struct qclient *c, struct json_object *req, int64_t seq,
                          struct json_object **ack, int timeout_ms)
{
    return transact(c, req, seq > 0, QC_ACK_MSG, seq, ack, timeout_ms);
}

int qclient_register(struct qclient *c, const char *name, const char *password, int32_t *id,
                     int timeout_ms)
{
    struct json_object *req = request_new(QC_REG_MSG, 0);
    struct json_object *reply;
    int64_t v;
    int rc;

    if (req != NULL && (!request_add(req, "name", json_object_new_string(name)) ||
                        !request_add(req, "password", json_object_new_string(password)))) {
        json_object_put(req);
        req = NULL;
    }
    rc = transact(c, req, true, QC_REG_MSG_ACK, 0, &reply, timeout_ms);
    if (rc == 0 && id != NULL) {
        if (qjson_int(reply, "id", &v) < 0 || v < INT32_MIN || v > INT32_MAX) {
            json_object_put(reply);
            errno = EPROTO;
            return -1;
        }
        *id = (int32_t)v;
    }
    json_object_put(reply);
    return rc;
}

int qclient_login(struct qclient *c, int32_t id, const char *password, bool presence,
                  struct json_object **ack, int timeout_ms)
{
    struct json_object *req = request_new(QC_LOGIN_MSG, 0);

    if (req != NULL && (!request_add(req, "id", json_object_new_int(id)) ||
                        !request_add(req, "password", json_object_new_string(password)) ||
                        (presence && !request_add(req, "presence", json_object_new_boolean(1))))) {
        json_object_put(req);
        req = NULL;
    }
    return transact(c, req, true, QC_LOGIN_MSG_ACK, 0, ack, timeout_ms);
}

/* Build a chat request (one-to-one or group) with its target and text. */
static struct json_object *chat_request(int msgid, const char *target_key, int32_t target,
                                        const char *text, int64_t seq)
{
    struct json_object *req = request_new(msgid, seq);

    if (req != NULL && (!request_add(req, target_key, json_object_new_int(target)) ||
                        !request_add(req, "msg", json_object_new_string(text)))) {
        json_object_put(req);
        return NULL;
    }
    return req;
}

int qclient_chat(struct qclient *c, int32_t toid, const char *text, int64_t seq,
                 struct json_object **ack, int timeout_ms)
{
    return transact_acked(c, chat_request(QC_ONE_CHAT_MSG, "toid", toid, text, seq), seq, ack,
                          timeout_ms);
}

int qclient_group_chat(struct qclient *c, int32_t groupid, const char *text, int64_t seq,
                       struct json_object **ack, int timeout_ms)
{
    return transact_acked(c, chat_request(QC_GROUP_CHAT_MSG, "groupid", groupid, text, seq), seq,
                          ack, timeout_ms);
}

/* A request carrying one integer field. */
static struct json_object *int_request(int msgid, const char *key, int32_t value, int64_t seq)
{
    struct json_object *req = request_new(msgid, seq);

    if (req != NULL && !request_add(req, key, json_object_new_int(value))) {
        json_object_put(req);
        return NULL;
    }
    return req;
}

int qclient_add_friend(struct qclient *c, int32_t friendid, int64_t seq, int timeout_ms)
{
    return transact_acked(c, int_request(QC_ADD_FRIEND_MSG, "friendid", friendid, seq), seq, NULL,
                          timeout_ms);
}

int qclient_add_group(struct qclient *c, int32_t groupid, int64_t seq, int timeout_ms)
{
    return transact_acked(c, int_request(QC_ADD_GROUP_MSG, "groupid", groupid, seq), seq, NULL,
                          timeout_ms);
}

int qclient_create_group(struct qclient *c, const char *name, const char *desc, int64_t seq,
                         int32_t *groupid, int timeout_ms)
{
    struct json_object *req = request_new(QC_CREATE_GROUP_MSG, seq);
    struct json_object *ack;
    int64_t v;
    int rc;

    if (groupid != NULL)
        *groupid = 0;
    if (req != NULL && (!request_add(req, "groupname", json_object_new_string(name)) ||
                        !request_add(req, "groupdesc", json_object_new_string(desc)))) {
        json_object_put(req);
        req = NULL;
    }
    rc = transact_acked(c, req, seq, &ack, timeout_ms);
    if (rc == 0 && ack != NULL && groupid != NULL) {
        if (qjson_int(ack, "groupid", &v) < 0 || v < INT32_MIN || v > INT32_MAX) {
            json_object_put(ack);
            errno = EPROTO;
            return -1;
        }
        *groupid = (int32_t)v;
    }
    json_object_put(ack);
    return rc;
}

int qclient_logout(struct qclient *c, int64_t seq, int timeout_ms)
{
    return transact_acked(c, request_new(QC_LOGINOUT_MSG, seq), seq, NULL, timeout_ms);
}

int qclient_heartbeat(struct qclient *c, int64_t seq, int timeout_ms)
{
    return transact_acked(c, request_new(QC_HEARTBEAT_MSG, seq), seq, NULL, timeout_ms);
}

/* ---- version 2 requests ----------------------------------------------- */

int qclient_call(struct qclient *c, struct json_object *req, int reply_msgid, int64_t seq,
                 struct json_object **reply, int timeout_ms)
{
    if (reply != NULL)
        *reply = NULL;
    if (req == NULL || seq <= 0 || !request_add(req, "seq", json_object_new_int64(seq))) {
        json_object_put(req);
        errno = req == NULL ? ENOMEM : EINVAL;
        return -1;
    }
    return transact(c, req, true, reply_msgid, seq, reply, timeout_ms);
}

/* Add key: string when s is not NULL, key: true when flag; false on ENOMEM. */
static bool login_add_str(struct json_object *req, const char *key, const char *s)
{
    return s == NULL || request_add(req, key, json_object_new_string(s));
}

static bool login_add_flag(struct json_object *req, const char *key, bool flag)
{
    return !flag || request_add(req, key, json_object_new_boolean(1));
}

int qclient_login_opts(struct qclient *c, int32_t id, const struct qclient_login_opts *o,
                       struct json_object **ack, int timeout_ms)
{
    struct json_object *req = request_new(QC_LOGIN_MSG, 0);

    if (req != NULL &&
        (!request_add(req, "id", json_object_new_int(id)) ||
         !login_add_str(req, "password", o->token == NULL ? o->password : NULL) ||
         !login_add_str(req, "token", o->token) || !login_add_str(req, "device", o->device) ||
         !login_add_flag(req, "presence", o->presence) ||
         !login_add_flag(req, "receipts", o->receipts) ||
         !login_add_flag(req, "typing", o->typing) ||
         !login_add_flag(req, "token", o->want_token && o->token == NULL))) {
        json_object_put(req);
        req = NULL;
    }
    return transact(c, req, true, QC_LOGIN_MSG_ACK, 0, ack, timeout_ms);
}
