/*
 * ws.c - the WebSocket transport: HTTP/1.1 on the websocket listener.
 *
 * Phase HTTP: bytes are collected until the end of the request head (a
 * blank line), at most WS_HEADER_BYTES_MAX.  The head is parsed strictly
 * (request line, "Name: value" lines); then:
 *   - GET /ws with Upgrade: websocket, Connection: upgrade, version 13 and
 *     a key of 16 base64 bytes, from an allowed Origin: 101, phase OPEN;
 *   - GET or HEAD of any other path: the web client's file (static.c);
 *   - otherwise 400 (malformed), 403 (Origin), 405 (method), 426 (version),
 *     431 (head too large), and the connection is finished.
 * Phase OPEN: frames go through wslay's event API, fed from the bytes of
 * ws_feed() and writing into the caller's output buffer, so it never
 * blocks and never touches a socket.  wslay enforces client masking (1002),
 * reassembles fragments, checks UTF-8 of text (1007), bounds a message and
 * every frame of it by max_message_bytes before reading its payload (1009),
 * answers pings and completes the close handshake.  Binary messages get
 * 1003: the protocol is JSON text.  Any frame from the peer counts as a
 * sign of life; after ping_interval_ms of silence the server pings, and
 * after pong_timeout_ms more it closes with 1008.
 */
#include <ctype.h>
#include <resolv.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sha1.h>
#include <wslay/wslay.h>

#include "common/log.h"
#include "server/static.h"
#include "server/ws.h"

#define WS_GUID            "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_KEY_BYTES       16  /* a Sec-WebSocket-Key decodes to 16 bytes */
#define WS_FIELD_MAX       512 /* longest header value kept (Origin, Host, ...) */
#define WS_PATH_MAX        256 /* longest request path kept */
#define WS_REASON_MAX      123 /* close reason bytes a close frame can carry */
#define WS_PING_PAYLOAD    "qchat"
#define WS_VERSION         "13"
#define WS_HEADER_NAME_MAX 64

struct ws_request {
    char method[8];
    char path[WS_PATH_MAX];
    bool http11;
    char host[WS_FIELD_MAX];
    char origin[WS_FIELD_MAX];
    char upgrade[WS_FIELD_MAX];
    char connection[WS_FIELD_MAX];
    char key[WS_FIELD_MAX];
    char version[WS_FIELD_MAX];
    bool has_origin, has_key, has_host;
    bool duplicate; /* a header that must be single was repeated */
};

struct ws {
    struct ws_config cfg;
    struct buf *out;
    ws_text_cb on_text;
    void *arg;

    enum ws_phase phase;
    int http_status;
    int close_sent;
    char path[WS_PATH_MAX];
    struct buf head; /* request head collected in phase HTTP */

    wslay_event_context_ptr ctx;
    const unsigned char *in; /* bytes of the current ws_feed not yet given to wslay */
    size_t in_len;
    bool in_feed;     /* inside ws_feed: sending waits until wslay_event_recv returns */
    bool frame_error; /* wslay refused a frame header (see send_to_output) */
    /* A close asked for inside ws_feed: queued after the replies of that feed,
       since wslay sends queued control frames ahead of queued messages. */
    int close_wanted;
    char close_reason[WS_REASON_MAX + 1];

    int64_t last_rx_ms;   /* last frame from the peer */
    int64_t ping_sent_ms; /* 0: no ping outstanding */
};

/* ---- small helpers ---------------------------------------------------- */

static void copy_field(char *dst, size_t size, const char *src, size_t len)
{
    if (len >= size)
        len = size - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/* Does the comma-separated list hold token (case-insensitive)? */
static bool list_has_token(const char *list, const char *token)
{
    size_t tl = strlen(token);
    const char *p = list;

    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if ((size_t)(end - start) == tl && strncasecmp(start, token, tl) == 0)
            return true;
    }
    return false;
}

static bool is_token_char(char c)
{
    return isalnum((unsigned char)c) || strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* ---- the handshake ---------------------------------------------------- */

int ws_accept_key(const char *key, char out[WS_ACCEPT_LEN + 1])
{
    SHA1_CTX sha;
    uint8_t digest[SHA1_DIGEST_LENGTH];

    SHA1Init(&sha);
    SHA1Update(&sha, (const uint8_t *)key, strlen(key));
    SHA1Update(&sha, (const uint8_t *)WS_GUID, strlen(WS_GUID));
    SHA1Final(digest, &sha);
    return b64_ntop(digest, sizeof(digest), out, WS_ACCEPT_LEN + 1) == WS_ACCEPT_LEN ? 0 : -1;
}

static bool key_is_valid(const char *key)
{
    unsigned char raw[WS_KEY_BYTES + 3];

    /* 16 bytes encode to exactly 24 characters ending in "==" */
    return strlen(key) == 24 && b64_pton(key, raw, sizeof(raw)) == WS_KEY_BYTES;
}

static bool origin_matches_host(const char *origin, const char *host)
{
    const char *rest;

    if (host == NULL || host[0] == '\0')
        return false;
    if (strncasecmp(origin, "http://", 7) == 0)
        rest = origin + 7;
    else if (strncasecmp(origin, "https://", 8) == 0)
        rest = origin + 8;
    else
        return false;
    return strcasecmp(rest, host) == 0;
}

bool ws_origin_allowed(const char *allowed, const char *origin, const char *host)
{
    const char *p = allowed ? allowed : "";
    size_t ol;
    bool any_listed = false;

    if (origin == NULL || origin[0] == '\0')
        return false;
    ol = strlen(origin);
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *start = p;
        while (*p && *p != ' ' && *p != '\t' && *p != ',')
            p++;
        size_t n = (size_t)(p - start);
        if (n == 0)
            continue;
        any_listed = true;
        if ((n == 1 && *start == '*') || (n == ol && strncasecmp(start, origin, n) == 0))
            return true;
    }
    return !any_listed && origin_matches_host(origin, host);
}

/* One "Name: value" line into req; false when malformed. */
static bool parse_header_line(struct ws_request *req, const char *line, size_t len)
{
    const char *colon = memchr(line, ':', len);
    const char *v, *end = line + len;
    size_t nl;
    char name[WS_HEADER_NAME_MAX];

    if (colon == NULL || colon == line)
        return false;
    for (const char *c = line; c < colon; c++)
        if (!is_token_char(*c))
            return false; /* includes whitespace before the colon */
    nl = (size_t)(colon - line);
    if (nl >= sizeof(name))
        return true; /* a long unknown name: ignored */
    memcpy(name, line, nl);
    name[nl] = '\0';
    v = colon + 1;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    for (const char *c = v; c < end; c++)
        if ((unsigned char)*c < 0x20 && *c != '\t')
            return false;

    struct {
        const char *name;
        char *dst;
        bool *seen;
    } fields[] = {
        { "Host", req->host, &req->has_host },
        { "Origin", req->origin, &req->has_origin },
        { "Sec-WebSocket-Key", req->key, &req->has_key },
        { "Sec-WebSocket-Version", req->version, NULL },
        { "Upgrade", req->upgrade, NULL },
        { "Connection", req->connection, NULL },
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (strcasecmp(name, fields[i].name) != 0)
            continue;
        if (fields[i].seen) {
            if (*fields[i].seen)
                req->duplicate = true;
            *fields[i].seen = true;
        }
        copy_field(fields[i].dst, WS_FIELD_MAX, v, (size_t)(end - v));
        break;
    }
    return true;
}

/* "GET /path?q HTTP/1.1" into req; false when malformed. */
static bool parse_request_line(struct ws_request *req, const char *line, size_t len)
{
    const char *sp1 = memchr(line, ' ', len), *sp2, *target, *q;
    size_t tl;

    if (sp1 == NULL || sp1 == line || (size_t)(sp1 - line) >= sizeof(req->method))
        return false;
    sp2 = memchr(sp1 + 1, ' ', len - (size_t)(sp1 + 1 - line));
    if (sp2 == NULL || sp2 == sp1 + 1)
        return false;
    for (const char *c = line; c < sp1; c++)
        if (!isupper((unsigned char)*c))
            return false;
    copy_field(req->method, sizeof(req->method), line, (size_t)(sp1 - line));
    target = sp1 + 1;
    if (*target != '/')
        return false;
    q = memchr(target, '?', (size_t)(sp2 - target));
    tl = (size_t)((q ? q : sp2) - target);
    if (tl >= sizeof(req->path))
        return false;
    for (const char *c = target; c < sp2; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f)
            return false;
    copy_field(req->path, sizeof(req->path), target, tl);
    if ((size_t)(line + len - (sp2 + 1)) == 8 && memcmp(sp2 + 1, "HTTP/1.1", 8) == 0)
        req->http11 = true;
    else if ((size_t)(line + len - (sp2 + 1)) == 8 && memcmp(sp2 + 1, "HTTP/1.0", 8) == 0)
        req->http11 = false;
    else
        return false;
    return true;
}

/* The head (without the blank line) into req; false when malformed. */
static bool parse_head(struct ws_request *req, const char *head, size_t len)
{
    const char *p = head, *end = head + len;
    bool first = true;

    memset(req, 0, sizeof(*req));
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        size_t ll;
        if (le > p && le[-1] == '\r')
            le--;
        ll = (size_t)(le - p);
        if (memchr(p, '\r', ll) != NULL || memchr(p, '\0', ll) != NULL)
            return false;
        if (first ? !parse_request_line(req, p, ll) : !parse_header_line(req, p, ll))
            return false;
        first = false;
        p = nl ? nl + 1 : end;
    }
    return !first && !req->duplicate && (!req->http11 || req->has_host);
}

/* ---- wslay glue ------------------------------------------------------- */

static ssize_t recv_from_feed(wslay_event_context_ptr ctx, uint8_t *dst, size_t len, int flags,
                              void *user)
{
    struct ws *ws = user;
    size_t n = len < ws->in_len ? len : ws->in_len;

    (void)flags;
    if (n == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    memcpy(dst, ws->in, n);
    ws->in += n;
    ws->in_len -= n;
    return (ssize_t)n;
}

/*
 * On a malformed frame header (a control frame over 125 bytes or
 * fragmented, a length not in its shortest form) wslay queues a close
 * frame without a status code and returns WSLAY_ERR_CALLBACK_FAILURE.  RFC
 * 6455 wants 1002 there, so that one empty close frame is sent as 1002.
 */
static const uint8_t empty_close[] = { 0x88, 0x00 };
static const uint8_t protocol_close[] = { 0x88, 0x02, WS_CLOSE_PROTOCOL >> 8,
                                          WS_CLOSE_PROTOCOL & 0xff };

static ssize_t send_to_output(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                              int flags, void *user)
{
    struct ws *ws = user;

    (void)flags;
    if (ws->frame_error && len == sizeof(empty_close) &&
        memcmp(data, empty_close, sizeof(empty_close)) == 0) {
        ws->close_sent = WS_CLOSE_PROTOCOL;
        if (buf_append(ws->out, protocol_close, sizeof(protocol_close)) < 0) {
            wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
            return -1;
        }
        return (ssize_t)len;
    }
    if (buf_append(ws->out, data, len) < 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

static void note_frame_start(wslay_event_context_ptr ctx,
                             const struct wslay_event_on_frame_recv_start_arg *arg, void *user)
{
    struct ws *ws = user;

    (void)ctx;
    (void)arg;
    ws->ping_sent_ms = 0; /* any frame is a sign of life */
}

static void deliver_message(wslay_event_context_ptr ctx,
                            const struct wslay_event_on_msg_recv_arg *arg, void *user)
{
    struct ws *ws = user;

    if (arg->opcode == WSLAY_TEXT_FRAME) {
        ws->on_text(ws->arg, (const char *)arg->msg, arg->msg_length);
    } else if (arg->opcode == WSLAY_BINARY_FRAME) {
        (void)ctx;
        ws_close(ws, WS_CLOSE_UNSUPPORTED, "text frames only");
    }
}

static int start_framing(struct ws *ws)
{
    struct wslay_event_callbacks cb = {
        .recv_callback = recv_from_feed,
        .send_callback = send_to_output,
        .on_frame_recv_start_callback = note_frame_start,
        .on_msg_recv_callback = deliver_message,
    };

    if (wslay_event_context_server_init(&ws->ctx, &cb, ws) != 0)
        return -1;
    wslay_event_config_set_max_recv_msg_length(ws->ctx, ws->cfg.max_message_bytes);
    return 0;
}

/* Move every queued frame into the output buffer. */
static void flush_frames(struct ws *ws)
{
    if (ws->ctx == NULL || ws->in_feed)
        return;
    if (wslay_event_send(ws->ctx) != 0)
        wslay_event_shutdown_write(ws->ctx);
}

/* OPEN -> DONE once a close went out, or nothing more can be read or written. */
static enum ws_result framing_result(struct ws *ws)
{
    if (ws->phase != WS_PHASE_OPEN)
        return ws->phase == WS_PHASE_DONE ? WS_FINISH : WS_CONTINUE;
    if (wslay_event_get_close_sent(ws->ctx) ||
        (!wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx))) {
        if (wslay_event_get_close_sent(ws->ctx) && ws->close_sent == 0)
            ws->close_sent = wslay_event_get_status_code_sent(ws->ctx);
        ws->phase = WS_PHASE_DONE;
        return WS_FINISH;
    }
    return WS_CONTINUE;
}

/* ---- answering the request -------------------------------------------- */

static enum ws_result answer(struct ws *ws, int status, const char *extra)
{
    ws->http_status = static_error(ws->out, status, extra) < 0 ? 500 : status;
    ws->phase = WS_PHASE_DONE;
    return WS_FINISH;
}

static enum ws_result upgrade(struct ws *ws, const struct ws_request *req)
{
    char accept[WS_ACCEPT_LEN + 1];

    if (strcmp(req->method, "GET") != 0)
        return answer(ws, 405, "Allow: GET\r\n");
    if (!req->http11 || !list_has_token(req->upgrade, "websocket") ||
        !list_has_token(req->connection, "upgrade") || !req->has_key || !key_is_valid(req->key))
        return answer(ws, 400, NULL);
    if (strcmp(req->version, WS_VERSION) != 0)
        return answer(ws, 426, "Sec-WebSocket-Version: " WS_VERSION "\r\n");
    if (!ws_origin_allowed(ws->cfg.origins, req->has_origin ? req->origin : NULL, req->host))
        return answer(ws, 403, NULL);
    if (ws_accept_key(req->key, accept) < 0 || start_framing(ws) < 0)
        return answer(ws, 500, NULL);
    if (buf_printf(ws->out,
                   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                   accept) < 0)
        return answer(ws, 500, NULL);
    ws->http_status = 101;
    ws->phase = WS_PHASE_OPEN;
    return WS_CONTINUE;
}

static enum ws_result serve_request(struct ws *ws, const char *head, size_t len)
{
    struct ws_request req;
    int status;

    if (!parse_head(&req, head, len))
        return answer(ws, 400, NULL);
    snprintf(ws->path, sizeof(ws->path), "%s", req.path);
    if (strcmp(req.path, "/ws") == 0)
        return upgrade(ws, &req);
    if (strcmp(req.method, "GET") != 0 && strcmp(req.method, "HEAD") != 0)
        return answer(ws, 405, "Allow: GET, HEAD\r\n");
    status = static_respond(ws->cfg.web_root, req.path, strcmp(req.method, "HEAD") == 0, ws->out);
    ws->http_status = status < 0 ? 500 : status;
    ws->phase = WS_PHASE_DONE;
    return WS_FINISH;
}

/* End of the head: "\r\n\r\n" (or "\n\n"); returns its length incl. the blank line, 0: not yet. */
static size_t head_end(const char *p, size_t len, size_t *body_len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (p[i] != '\n')
            continue;
        if (p[i + 1] == '\n') {
            *body_len = i;
            return i + 2;
        }
        if (p[i + 1] == '\r' && i + 2 < len && p[i + 2] == '\n') {
            *body_len = i;
            return i + 3;
        }
    }
    return 0;
}

static enum ws_result feed_http(struct ws *ws, const unsigned char **data, size_t *len)
{
    size_t before = buf_used(&ws->head), total, head_len;
    size_t take = *len, room = WS_HEADER_BYTES_MAX + 4 - before;

    if (take > room)
        take = room;
    if (buf_append(&ws->head, *data, take) < 0)
        return answer(ws, 500, NULL);
    total = head_end(buf_head(&ws->head), buf_used(&ws->head), &head_len);
    if (total == 0) {
        *data += take;
        *len -= take;
        if (buf_used(&ws->head) > WS_HEADER_BYTES_MAX)
            return answer(ws, 431, NULL);
        return WS_CONTINUE;
    }
    if (head_len > WS_HEADER_BYTES_MAX)
        return answer(ws, 431, NULL);
    /* bytes after the head belong to the frames (a client may not wait for 101) */
    *data += total - before;
    *len -= total - before;
    enum ws_result r = serve_request(ws, buf_head(&ws->head), head_len);
    buf_free(&ws->head);
    return r;
}

/* ---- the public face -------------------------------------------------- */

struct ws *ws_new(const struct ws_config *cfg, struct buf *out, ws_text_cb on_text, void *arg,
                  int64_t now_ms)
{
    struct ws *ws = calloc(1, sizeof(*ws));

    if (ws == NULL)
        return NULL;
    ws->cfg = *cfg;
    ws->out = out;
    ws->on_text = on_text;
    ws->arg = arg;
    ws->phase = WS_PHASE_HTTP;
    ws->last_rx_ms = now_ms;
    buf_init(&ws->head);
    return ws;
}

void ws_free(struct ws *ws)
{
    if (ws == NULL)
        return;
    if (ws->ctx)
        wslay_event_context_free(ws->ctx);
    buf_free(&ws->head);
    free(ws);
}

enum ws_result ws_feed(struct ws *ws, const void *data, size_t len, int64_t now_ms)
{
    const unsigned char *p = data;
    int rc;

    if (ws->phase == WS_PHASE_HTTP) {
        if (feed_http(ws, &p, &len) == WS_FINISH)
            return WS_FINISH;
        if (ws->phase == WS_PHASE_HTTP)
            return WS_CONTINUE;
    }
    if (ws->phase != WS_PHASE_OPEN)
        return WS_FINISH;
    if (len == 0)
        return framing_result(ws);
    ws->last_rx_ms = now_ms;
    ws->in = p;
    ws->in_len = len;
    ws->in_feed = true;
    rc = wslay_event_recv(ws->ctx);
    if (rc == WSLAY_ERR_CALLBACK_FAILURE)
        ws->frame_error = true;
    if (rc != 0)
        wslay_event_shutdown_read(ws->ctx);
    ws->in_feed = false;
    ws->in = NULL;
    ws->in_len = 0;
    flush_frames(ws);
    if (ws->close_wanted) {
        enum ws_close_code code = (enum ws_close_code)ws->close_wanted;
        ws->close_wanted = 0;
        ws_close(ws, code, ws->close_reason);
    }
    return framing_result(ws);
}

enum ws_result ws_tick(struct ws *ws, int64_t now_ms)
{
    struct wslay_event_msg ping = { WSLAY_PING, (const uint8_t *)WS_PING_PAYLOAD,
                                    sizeof(WS_PING_PAYLOAD) - 1 };

    if (ws->phase != WS_PHASE_OPEN || ws->cfg.ping_interval_ms <= 0)
        return framing_result(ws);
    if (ws->ping_sent_ms != 0) {
        if (now_ms - ws->ping_sent_ms >= ws->cfg.pong_timeout_ms)
            ws_close(ws, WS_CLOSE_POLICY, "no answer to ping");
    } else if (now_ms - ws->last_rx_ms >= ws->cfg.ping_interval_ms) {
        if (wslay_event_queue_msg(ws->ctx, &ping) == 0)
            ws->ping_sent_ms = now_ms;
        flush_frames(ws);
    }
    return framing_result(ws);
}

int ws_send_text(struct ws *ws, const char *msg, size_t len)
{
    struct wslay_event_msg m = { WSLAY_TEXT_FRAME, (const uint8_t *)msg, len };

    if (ws->phase != WS_PHASE_OPEN || ws->close_wanted || wslay_event_get_close_sent(ws->ctx))
        return -1;
    if (wslay_event_queue_msg(ws->ctx, &m) != 0)
        return -1;
    flush_frames(ws);
    return 0;
}

int ws_send_json(struct ws *ws, json_object *obj)
{
    size_t len;
    const char *s = json_object_to_json_string_length(obj, JSON_C_TO_STRING_PLAIN, &len);

    return s ? ws_send_text(ws, s, len) : -1;
}

void ws_close(struct ws *ws, enum ws_close_code code, const char *reason)
{
    size_t rl = reason ? strlen(reason) : 0;

    if (ws->phase != WS_PHASE_OPEN)
        return;
    if (rl > WS_REASON_MAX)
        rl = WS_REASON_MAX;
    if (ws->in_feed) {
        if (ws->close_wanted == 0) {
            ws->close_wanted = (int)code;
            memcpy(ws->close_reason, reason ? reason : "", rl);
            ws->close_reason[rl] = '\0';
        }
        return;
    }
    if (wslay_event_queue_close(ws->ctx, (uint16_t)code, (const uint8_t *)reason, rl) == 0)
        ws->close_sent = (int)code;
    wslay_event_shutdown_read(ws->ctx);
    flush_frames(ws);
}

enum ws_phase ws_phase(const struct ws *ws)
{
    return ws->phase;
}

int ws_http_status(const struct ws *ws)
{
    return ws->http_status;
}

int ws_close_sent(const struct ws *ws)
{
    if (ws->close_sent == 0 && ws->ctx && wslay_event_get_close_sent(ws->ctx))
        return wslay_event_get_status_code_sent(ws->ctx);
    return ws->close_sent;
}

const char *ws_request_path(const struct ws *ws)
{
    return ws->path;
}
