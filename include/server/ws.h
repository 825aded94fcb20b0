/*
 * ws.h - the WebSocket transport: HTTP/1.1 on the websocket listener.
 *
 * One struct ws per accepted connection on `[websocket] listen`.  It is a
 * byte-in / byte-out state machine that knows nothing of workers, sessions
 * or sockets:
 *
 *   bytes read from the socket  -> ws_feed()
 *   each complete text message  -> the on_text callback (one JSON object)
 *   ws_send_text()/ws_send_json -> a frame appended to the output buffer
 *   ws_tick() from a timer      -> pings idle peers, gives up on silent ones
 *
 * The connection starts as an HTTP request.  `GET /ws` with a valid RFC 6455
 * handshake from an allowed Origin is answered with 101 and the connection
 * becomes a WebSocket (framing by wslay: client masking required, fragments
 * reassembled, UTF-8 of text checked, message size bounded, pings answered,
 * close handshake).  Anything else is answered once (a static file of the
 * web client, or 400/403/404/405/426/431) and the connection is finished.
 *
 * WS_FINISH from ws_feed/ws_tick means: write out what is in the output
 * buffer, then close the socket; nothing more will be produced.
 */
#ifndef QCHAT_SERVER_WS_H
#define QCHAT_SERVER_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "common/buf.h"

#define WS_HEADER_BYTES_MAX 8192 /* an HTTP request head larger than this: 431 */

/* Close status codes (RFC 6455 7.4.1) the server sends. */
enum ws_close_code {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL = 1002,
    WS_CLOSE_UNSUPPORTED = 1003, /* a binary message: the protocol is JSON text */
    WS_CLOSE_BAD_DATA = 1007,    /* invalid UTF-8 in a text message */
    WS_CLOSE_POLICY = 1008,      /* unanswered pings, flood, login timeout */
    WS_CLOSE_TOO_BIG = 1009,
};

enum ws_phase {
    WS_PHASE_HTTP = 0, /* reading the request head */
    WS_PHASE_OPEN,     /* upgraded: frames both ways */
    WS_PHASE_DONE,     /* answered or closed: flush the output and close */
};

enum ws_result {
    WS_CONTINUE = 0, /* keep reading */
    WS_FINISH = 1,   /* flush the output, then close the socket */
};

struct ws_config {
    const char *origins;      /* allow-list, see ws_origin_allowed(); not copied */
    const char *web_root;     /* directory served at GET /, "" or NULL: none; not copied */
    size_t max_message_bytes; /* largest text message (and so frame) accepted */
    int ping_interval_ms;     /* silence before the server pings, 0: never */
    int pong_timeout_ms;      /* silence after a ping before closing with 1008 */
};

/* A complete text message (valid UTF-8, not NUL-terminated). */
typedef void (*ws_text_cb)(void *arg, const char *msg, size_t len);

struct ws;

/* A new connection in the HTTP phase; frames and responses go to out. NULL: no memory. */
struct ws *ws_new(const struct ws_config *cfg, struct buf *out, ws_text_cb on_text, void *arg,
                  int64_t now_ms);
void ws_free(struct ws *ws);

/* Bytes read from the socket.  Calls on_text for every message completed. */
enum ws_result ws_feed(struct ws *ws, const void *data, size_t len, int64_t now_ms);

/* Timer: ping a silent peer, close one that does not answer. */
enum ws_result ws_tick(struct ws *ws, int64_t now_ms);

/* One text frame; -1 when the connection is not open (not upgraded, or closing). */
int ws_send_text(struct ws *ws, const char *msg, size_t len);
int ws_send_json(struct ws *ws, json_object *obj);

/* Start the close handshake with code and a short reason (<= 123 bytes). */
void ws_close(struct ws *ws, enum ws_close_code code, const char *reason);

enum ws_phase ws_phase(const struct ws *ws);
int ws_http_status(const struct ws *ws);          /* status answered to the request, 0: none yet */
int ws_close_sent(const struct ws *ws);           /* close code sent, 0: none */
const char *ws_request_path(const struct ws *ws); /* path of the request, "" before it */

/*
 * The Origin rule.  allowed is a list separated by spaces or commas of
 * origins ("https://chat.example.org"); "*" allows any origin; an empty
 * list allows only the request's own host (http:// or https:// + Host).
 * A missing Origin is never allowed.
 */
bool ws_origin_allowed(const char *allowed, const char *origin, const char *host);

/* Sec-WebSocket-Accept for a key: base64(SHA-1(key + GUID)); out holds 29 bytes. */
#define WS_ACCEPT_LEN 28
int ws_accept_key(const char *key, char out[WS_ACCEPT_LEN + 1]);

#endif
