/*
 * test_websocket.c - integration tests of `[websocket] listen` in the
 * workers: a browser's connection is an ordinary session.
 *
 * A private qchatd serves TCP and a websocket listener; the tests speak
 * RFC 6455 by hand (a masked text frame per request, one unmasked text
 * frame per object back) and check what a user of either transport sees:
 * chats both ways between a TCP and a WebSocket session, one object per
 * frame, a frame holding half an object refused with the error and close
 * 1008, the same request rate limit, per-address connection cap (shared
 * with TCP) and login timeout as TCP, and pings from the server.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define STR_(x)         #x
#define STR(x)          STR_(x)
#define WS_FRAME_MAX    (1 << 20) /* largest frame these tests accept */
#define RATE_PER_SEC    5
#define RATE_BURST      4
#define CONN_CAP        2
#define LOGIN_TIMEOUT_S 1
#define PING_INTERVAL_S 1
#define CLOSE_POLICY    1008
#define PROBE_SETTLE_MS 300 /* ms for a late accept of the harness probe */
#define OP_TEXT         0x1
#define OP_CLOSE        0x8
#define OP_PING         0x9
#define OP_PONG         0xA

static int ws_port;
static char ws_listen_opt[64];

struct wsc {
    int fd;
    unsigned char buf[WS_FRAME_MAX + 16];
    size_t len;
};

struct frame {
    int op;
    char *payload; /* NUL-terminated */
    size_t len;
};

/* ---- server ------------------------------------------------------------- */

static void start_with(const char *extra1, const char *extra2)
{
    server_stop();
    ws_port = h_free_port();
    snprintf(ws_listen_opt, sizeof ws_listen_opt, "websocket.listen=127.0.0.1:%d", ws_port);
    const char *opts[] = { ws_listen_opt, extra1, extra2, NULL };
    H_CHECK(server_start(opts) == 0, "qchatd did not start with %s", ws_listen_opt);
}

/* Sum of workers[].connections in the control socket's status. */
static int server_connections(void)
{
    struct json_object *o = h_ctl("{\"cmd\":\"status\"}"), *ws;
    H_CHECK(o != NULL, "control socket status: no answer");
    H_CHECK(json_object_object_get_ex(o, "workers", &ws) &&
                json_object_is_type(ws, json_type_array),
            "status without workers[]: %s", h_json(o));
    int sum = 0;
    for (size_t i = 0; i < json_object_array_length(ws); i++)
        sum += (int)h_int(json_object_array_get_idx(ws, i), "connections");
    json_object_put(o);
    return sum;
}

static bool connections_are(void *arg)
{
    return server_connections() == *(int *)arg;
}

static void wait_connections(int want, const char *what)
{
    H_CHECK(h_wait_for(connections_are, &want, H_REPLY_MS),
            "%s: want %d connections on the server, status says %d", what, want,
            server_connections());
}

/* ---- a WebSocket client by hand ------------------------------------------ */

static int wsc_read_some(struct wsc *c, int timeout_ms)
{
    struct pollfd p = { .fd = c->fd, .events = POLLIN };
    if (poll(&p, 1, timeout_ms) <= 0)
        return -1;
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (n <= 0)
        return -1;
    c->len += (size_t)n;
    return 0;
}

static void wsc_consume(struct wsc *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

static void wsc_send_all(struct wsc *c, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t k = send(c->fd, s, n, MSG_NOSIGNAL);
        H_CHECK(k > 0, "send on a websocket: %s", strerror(errno));
        s += k;
        n -= (size_t)k;
    }
}

/* Connect to the websocket listener; the answer's status line is returned in status. */
static void wsc_open_status(struct wsc *c, char *status, size_t cap)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)ws_port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->len = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    H_CHECK(c->fd >= 0 && connect(c->fd, (struct sockaddr *)&sa, sizeof sa) == 0,
            "connect to the websocket port %d: %s", ws_port, strerror(errno));
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:%d\r\n\r\n",
                     ws_port, ws_port);
    wsc_send_all(c, req, (size_t)n);
    const unsigned char *end = NULL;
    while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL)
        if (wsc_read_some(c, H_REPLY_MS) < 0)
            break;
    if (end == NULL) {
        snprintf(status, cap, "(no answer)");
        return;
    }
    const unsigned char *eol = memmem(c->buf, c->len, "\r\n", 2);
    snprintf(status, cap, "%.*s", (int)(eol - c->buf), (const char *)c->buf);
    wsc_consume(c, (size_t)(end + 4 - c->buf));
}

static void wsc_open(struct wsc *c)
{
    char status[256];
    wsc_open_status(c, status, sizeof status);
    H_CHECK(strncmp(status, "HTTP/1.1 101", 12) == 0,
            "upgrade on /ws answered \"%s\", not 101 (%d connections on the server)", status,
            server_connections());
}

static void wsc_close(struct wsc *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

/* One masked frame with this opcode and payload. */
static void wsc_send_frame(struct wsc *c, int op, const char *p, size_t n)
{
    static const unsigned char key[4] = { 0x37, 0xfa, 0x21, 0x3d };
    unsigned char *f = malloc(n + 14);
    size_t h = 2;
    H_CHECK(f != NULL, "out of memory");
    f[0] = (unsigned char)(0x80 | op);
    if (n < 126) {
        f[1] = (unsigned char)(0x80 | n);
    } else {
        H_CHECK(n <= 0xffff, "test frames stay under 64 KiB");
        f[1] = 0x80 | 126;
        f[2] = (unsigned char)(n >> 8);
        f[3] = (unsigned char)n;
        h = 4;
    }
    memcpy(f + h, key, 4);
    for (size_t i = 0; i < n; i++)
        f[h + 4 + i] = (unsigned char)p[i] ^ key[i & 3];
    wsc_send_all(c, f, h + 4 + n);
    free(f);
}

static void wsc_sendf(struct wsc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void wsc_sendf(struct wsc *c, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    H_CHECK(n > 0 && (size_t)n < sizeof text, "request too long for the test");
    wsc_send_frame(c, OP_TEXT, text, (size_t)n);
}

/* The next frame from the server; false on timeout or EOF. */
static bool wsc_frame(struct wsc *c, struct frame *f, int timeout_ms)
{
    for (;;) {
        if (c->len >= 2) {
            size_t plen = c->buf[1] & 0x7f, h = 2;
            H_CHECK(!(c->buf[1] & 0x80), "the server masked a frame");
            H_CHECK(c->buf[0] & 0x80, "the server fragmented a message");
            if (plen == 126 && c->len >= 4) {
                plen = (size_t)c->buf[2] << 8 | c->buf[3];
                h = 4;
            } else if (plen == 127) {
                H_CHECK(c->len < 10 || c->buf[2] == 0, "frame over the test's limit");
                plen = c->len >= 10 ? (size_t)c->buf[6] << 24 | (size_t)c->buf[7] << 16 |
                                          (size_t)c->buf[8] << 8 | c->buf[9]
                                    : SIZE_MAX;
                h = 10;
            }
            if (plen != SIZE_MAX && (plen != 126 || h == 4) && c->len >= h + plen) {
                f->op = c->buf[0] & 0x0f;
                f->payload = malloc(plen + 1);
                H_CHECK(f->payload != NULL, "out of memory");
                memcpy(f->payload, c->buf + h, plen);
                f->payload[plen] = '\0';
                f->len = plen;
                wsc_consume(c, h + plen);
                return true;
            }
        }
        if (wsc_read_some(c, timeout_ms) < 0)
            return false;
    }
}

/* The next text frame (pings answered on the way) as one JSON object. */
static struct json_object *wsc_next(struct wsc *c, const char *what)
{
    struct frame f;
    for (;;) {
        H_CHECK(wsc_frame(c, &f, H_REPLY_MS), "%s: no frame within %d ms", what, H_REPLY_MS);
        if (f.op == OP_PING) {
            wsc_send_frame(c, OP_PONG, f.payload, f.len);
            free(f.payload);
            continue;
        }
        break;
    }
    H_CHECK(f.op == OP_TEXT, "%s: want a text frame, got opcode %d", what, f.op);
    struct json_tokener *tok = json_tokener_new();
    struct json_object *o = json_tokener_parse_ex(tok, f.payload, (int)f.len);
    bool whole = o != NULL && (size_t)json_tokener_get_parse_end(tok) == f.len;
    json_tokener_free(tok);
    H_CHECK(whole && json_object_is_type(o, json_type_object),
            "%s: a text frame must hold exactly one JSON object, got \"%s\"", what, f.payload);
    free(f.payload);
    return o;
}

static struct json_object *wsc_expect(struct wsc *c, int msgid, const char *what)
{
    struct json_object *o = wsc_next(c, what);
    H_CHECK(h_int(o, "msgid") == msgid, "%s: want msgid %d, got %s", what, msgid, h_json(o));
    return o;
}

static void wsc_expect_ack(struct wsc *c, int64_t seq, int err, const char *what)
{
    struct json_object *o = wsc_expect(c, QC_ACK_MSG, what);
    H_CHECK(h_has(o, "seq") && h_int(o, "seq") == seq && h_int(o, "errno") == err,
            "%s: want ACK seq %lld errno %d, got %s", what, (long long)seq, err, h_json(o));
    json_object_put(o);
}

/* The server's last words: ACK req 0 with err, close 1008, then EOF. */
static void wsc_expect_fatal(struct wsc *c, int err, const char *what)
{
    struct json_object *o = wsc_expect(c, QC_ACK_MSG, what);
    H_CHECK(h_int(o, "errno") == err && h_int(o, "req") == 0,
            "%s: want {\"msgid\":11,\"errno\":%d,\"req\":0}, got %s", what, err, h_json(o));
    json_object_put(o);
    struct frame f;
    H_CHECK(wsc_frame(c, &f, H_REPLY_MS), "%s: no close frame after the error", what);
    int code = f.len >= 2 ? (unsigned char)f.payload[0] << 8 | (unsigned char)f.payload[1] : 0;
    free(f.payload);
    H_CHECK(f.op == OP_CLOSE && code == CLOSE_POLICY, "%s: want close %d, got opcode %d code %d",
            what, CLOSE_POLICY, f.op, code);
    wsc_send_frame(c, OP_CLOSE, "\x03\xf0", 2); /* 1008 back: the close handshake */
    H_CHECK(!wsc_frame(c, &f, H_REPLY_MS), "%s: a frame after the close", what);
}

/* Register and log in over the websocket; returns the user's id. */
static int32_t wsc_new_user(struct wsc *c, const char *tag, char *name, size_t cap)
{
    h_unique_name(name, cap, tag);
    wsc_sendf(c, "{\"msgid\":%d,\"name\":\"%s\",\"password\":\"pw-%s\"}", QC_REG_MSG, name, tag);
    struct json_object *o = wsc_expect(c, QC_REG_MSG_ACK, "REG over a websocket");
    H_CHECK(h_int(o, "errno") == 0, "REG over a websocket: %s", h_json(o));
    int32_t id = (int32_t)h_int(o, "id");
    json_object_put(o);
    wsc_sendf(c, "{\"msgid\":%d,\"id\":%d,\"password\":\"pw-%s\"}", QC_LOGIN_MSG, id, tag);
    o = wsc_expect(c, QC_LOGIN_MSG_ACK, "LOGIN over a websocket");
    H_CHECK(h_int(o, "errno") == 0, "LOGIN over a websocket: %s", h_json(o));
    json_object_put(o);
    return id;
}

/* ---- tests ------------------------------------------------------------ */

static void test_chat_between_tcp_and_websocket(void **state)
{
    start_with(NULL, NULL);
    struct wsc w = { .fd = -1 };
    struct h_user a;
    char wname[H_NAME_LEN];
    wsc_open(&w);
    int32_t wid = wsc_new_user(&w, "wsb", wname, sizeof wname);
    struct qclient *ca = h_new_user(&a, "tca");

    /* TCP -> WebSocket: one text frame holding the forwarded chat */
    h_send(ca, "{\"msgid\":5,\"id\":%d,\"toid\":%d,\"msg\":\"你好 🎉 over ws\",\"seq\":1}", a.id,
           wid);
    json_object_put(h_expect_ack(ca, QC_ONE_CHAT_MSG, 1, 0, "chat to a websocket session"));
    struct json_object *m = wsc_expect(&w, QC_ONE_CHAT_MSG, "chat from TCP");
    H_CHECK(strcmp(h_str(m, "msg"), "你好 🎉 over ws") == 0 && h_int(m, "id") == a.id,
            "want the chat from %d, got %s", a.id, h_json(m));
    json_object_put(m);

    /* WebSocket -> TCP */
    wsc_sendf(&w, "{\"msgid\":5,\"id\":%d,\"toid\":%d,\"msg\":\"back\",\"seq\":7}", wid, a.id);
    wsc_expect_ack(&w, 7, 0, "chat from a websocket session");
    m = h_expect(ca, QC_ONE_CHAT_MSG, "chat from the websocket session");
    H_CHECK(strcmp(h_str(m, "msg"), "back") == 0 && h_int(m, "id") == wid, "got %s", h_json(m));
    json_object_put(m);

    /* a frame holding half an object is malformed: the error, close 1008 */
    wsc_send_frame(&w, OP_TEXT, "{\"msgid\":14,", 12);
    wsc_expect_fatal(&w, QC_EMALFORMED, "half an object in a frame");
    wsc_close(&w);
    H_CHECK(h_wait_online(wid, false, H_REPLY_MS), "the websocket session did not end");
    h_close(ca);
    h_stop_and_check_clean();
    server_stop();
}

static void test_request_rate_over_websocket(void **state)
{
    start_with("security.request_rate=" STR(RATE_PER_SEC),
               "security.request_burst=" STR(RATE_BURST));
    struct wsc w = { .fd = -1 };
    wsc_open(&w);
    for (int i = 1; i <= RATE_BURST + 1; i++)
        wsc_sendf(&w, "{\"msgid\":%d,\"seq\":%d}", QC_HEARTBEAT_MSG, i);
    for (int i = 1; i <= RATE_BURST; i++)
        wsc_expect_ack(&w, i, 0, "heartbeat within the burst");
    wsc_expect_ack(&w, RATE_BURST + 1, QC_ERATE, "heartbeat burst+1");

    /* sustained abuse closes the connection, as on TCP */
    wsc_close(&w);
    wsc_open(&w);
    for (int i = 1; i <= 3 * RATE_BURST; i++)
        wsc_sendf(&w, "{\"msgid\":%d,\"seq\":%d}", QC_HEARTBEAT_MSG, i);
    for (int i = 1; i <= 2 * RATE_BURST; i++)
        wsc_expect_ack(&w, i, i <= RATE_BURST ? 0 : QC_ERATE, "flooding websocket");
    wsc_expect_fatal(&w, QC_ERATE, "request 2*burst+1 of a flood");
    wsc_close(&w);
    h_stop_and_check_clean();
    server_stop();
}

static void test_conns_per_ip_shared_with_tcp(void **state)
{
    start_with("security.max_conns_per_ip=" STR(CONN_CAP), NULL);
    /* the harness's start probe on the TCP port may be accepted late */
    h_sleep_ms(PROBE_SETTLE_MS);
    wait_connections(0, "before the test");
    struct h_raw tcp;
    struct wsc w[CONN_CAP];
    char status[256];
    h_raw_connect(&tcp, 0);
    for (int i = 0; i < CONN_CAP - 1; i++) {
        wsc_open(&w[i]);
        wsc_sendf(&w[i], "{\"msgid\":%d,\"seq\":1}", QC_HEARTBEAT_MSG);
        wsc_expect_ack(&w[i], 1, 0, "a websocket under the cap is served");
    }
    /* the TCP connection and the websockets count together */
    wsc_open_status(&w[CONN_CAP - 1], status, sizeof status);
    H_CHECK(strncmp(status, "HTTP/1.1 503", 12) == 0,
            "websocket over max_conns_per_ip: want 503, got \"%s\"", status);
    wsc_close(&w[CONN_CAP - 1]);
    h_raw_close(&tcp);
    wait_connections(CONN_CAP - 1, "after the TCP connection closed");
    wsc_open(&w[CONN_CAP - 1]);
    wsc_sendf(&w[CONN_CAP - 1], "{\"msgid\":%d,\"seq\":2}", QC_HEARTBEAT_MSG);
    wsc_expect_ack(&w[CONN_CAP - 1], 2, 0, "a websocket after a TCP connection closed");
    for (int i = 0; i < CONN_CAP; i++)
        wsc_close(&w[i]);
    h_stop_and_check_clean();
    server_stop();
}

static void test_login_timeout_and_pings(void **state)
{
    start_with("security.login_timeout=" STR(LOGIN_TIMEOUT_S),
               "websocket.ping_interval=" STR(PING_INTERVAL_S));
    struct wsc w = { .fd = -1 }, idle = { .fd = -1 };
    struct frame f;

    /* silent and not logged in: closed like a TCP client, with 1008 */
    int64_t t0 = h_now_ms();
    wsc_open(&w);
    wsc_expect_fatal(&w, QC_ENOTLOGGEDIN, "a websocket that never logs in");
    int64_t took = h_now_ms() - t0;
    H_CHECK(took >= LOGIN_TIMEOUT_S * 1000 - 100 && took < LOGIN_TIMEOUT_S * 1000 + 2000,
            "closed after %lld ms, want about %d s", (long long)took, LOGIN_TIMEOUT_S);
    wsc_close(&w);

    /* a logged-in, silent websocket is pinged */
    char name[H_NAME_LEN];
    wsc_open(&idle);
    wsc_new_user(&idle, "wsp", name, sizeof name);
    H_CHECK(wsc_frame(&idle, &f, (PING_INTERVAL_S + 2) * 1000), "no ping within %d s of silence",
            PING_INTERVAL_S + 2);
    H_CHECK(f.op == OP_PING, "want a ping, got opcode %d", f.op);
    wsc_send_frame(&idle, OP_PONG, f.payload, f.len);
    free(f.payload);
    print_message("websocket: login timeout closed after %lld ms; ping after silence\n",
                  (long long)took);
    wsc_close(&idle);
    h_stop_and_check_clean();
    server_stop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        H_TEST(test_chat_between_tcp_and_websocket),
        H_TEST(test_request_rate_over_websocket),
        H_TEST(test_conns_per_ip_shared_with_tcp),
        H_TEST(test_login_timeout_and_pings),
    };
    h_apply_filter();
    return cmocka_run_group_tests_name("websocket", tests, NULL, h_group_teardown);
}
