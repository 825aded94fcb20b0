/*
 * test_ws.c - unit tests for the WebSocket transport (ws.c, static.c).
 *
 * Everything is hand-made bytes: HTTP requests and client frames built
 * here, server output parsed here.  Covers the RFC 6455 accept key, the
 * handshake fed one byte at a time and in one piece with the first frame
 * behind it, every refusal (400 malformed, 403 Origin, 404, 405, 426, 431),
 * the Origin rule, the static files (types, HEAD, no escape from the root),
 * masked text in and unmasked text out (7-bit, 16-bit and 64-bit lengths),
 * fragments reassembled around an interleaved ping, every close code (1000
 * echo, 1002 unmasked / bad opcode / RSV / long control frame / stray
 * continuation, 1003 binary, 1007 bad UTF-8, 1008 unanswered ping and by
 * request, 1009 frame and message too big), and ping/pong timing.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "server/ws.h"

#define LIMIT       1024 /* max_message_bytes in these tests */
#define PING_MS     1000
#define PONG_MS     500
#define MAX_MSGS    8
#define HOST        "chat.example:6080"
#define GOOD_ORIGIN "http://chat.example:6080"
#define GOOD_KEY    "dGhlIHNhbXBsZSBub25jZQ=="

static char web_root[64];

struct got {
    char *msgs[MAX_MSGS];
    size_t lens[MAX_MSGS];
    int n;
};

static void collect(void *arg, const char *msg, size_t len)
{
    struct got *g = arg;

    assert_true(g->n < MAX_MSGS);
    g->msgs[g->n] = malloc(len + 1);
    memcpy(g->msgs[g->n], msg, len);
    g->msgs[g->n][len] = '\0';
    g->lens[g->n++] = len;
}

static void got_free(struct got *g)
{
    for (int i = 0; i < g->n; i++)
        free(g->msgs[i]);
    g->n = 0;
}

struct fixture {
    struct ws_config cfg;
    struct buf out;
    struct got got;
    struct ws *ws;
};

static struct fixture *fx_new(const char *origins)
{
    struct fixture *f = calloc(1, sizeof(*f));

    f->cfg.origins = origins;
    f->cfg.web_root = web_root;
    f->cfg.max_message_bytes = LIMIT;
    f->cfg.ping_interval_ms = PING_MS;
    f->cfg.pong_timeout_ms = PONG_MS;
    buf_init(&f->out);
    f->ws = ws_new(&f->cfg, &f->out, collect, &f->got, 0);
    assert_non_null(f->ws);
    return f;
}

static void fx_free(struct fixture *f)
{
    ws_free(f->ws);
    buf_free(&f->out);
    got_free(&f->got);
    free(f);
}

static enum ws_result feed_all(struct fixture *f, const void *p, size_t n, size_t step)
{
    enum ws_result r = WS_CONTINUE;
    const char *c = p;

    for (size_t off = 0; off < n; off += step) {
        size_t k = n - off < step ? n - off : step;
        r = ws_feed(f->ws, c + off, k, 1);
        if (r == WS_FINISH && off + k < n)
            return r; /* the rest would be ignored anyway */
    }
    return r;
}

static enum ws_result feed_str(struct fixture *f, const char *s)
{
    return feed_all(f, s, strlen(s), strlen(s));
}

static const char *req_ws(void)
{
    return "GET /ws HTTP/1.1\r\nHost: " HOST "\r\nUpgrade: websocket\r\n"
           "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: " GOOD_KEY "\r\n"
           "Sec-WebSocket-Version: 13\r\nOrigin: " GOOD_ORIGIN "\r\n\r\n";
}

/* The status code of the HTTP response at the head of out. */
static int response_status(const struct buf *out)
{
    int code = 0;

    if (buf_used(out) < 12 || sscanf(buf_head(out), "HTTP/1.1 %d ", &code) != 1)
        return -1;
    return code;
}

/* Open a connection and drop the 101 response from the output. */
static struct fixture *fx_open(void)
{
    struct fixture *f = fx_new("");
    char *end;

    assert_int_equal(feed_str(f, req_ws()), WS_CONTINUE);
    assert_int_equal(ws_phase(f->ws), WS_PHASE_OPEN);
    end = memmem(buf_head(&f->out), buf_used(&f->out), "\r\n\r\n", 4);
    assert_non_null(end);
    buf_consume(&f->out, (size_t)(end + 4 - buf_head(&f->out)));
    return f;
}

/* A client frame: masked unless told otherwise; returns its length. */
static size_t client_frame(unsigned char *dst, bool fin, int rsv, int opcode, const void *payload,
                           uint64_t len, bool masked)
{
    static const unsigned char mask[4] = { 0x37, 0xfa, 0x21, 0x3d };
    size_t n = 0;

    dst[n++] = (unsigned char)((fin ? 0x80 : 0) | (rsv << 4) | opcode);
    if (len < 126) {
        dst[n++] = (unsigned char)((masked ? 0x80 : 0) | len);
    } else if (len < 65536) {
        dst[n++] = (unsigned char)((masked ? 0x80 : 0) | 126);
        dst[n++] = (unsigned char)(len >> 8);
        dst[n++] = (unsigned char)len;
    } else {
        dst[n++] = (unsigned char)((masked ? 0x80 : 0) | 127);
        for (int i = 7; i >= 0; i--)
            dst[n++] = (unsigned char)(len >> (8 * i));
    }
    if (masked) {
        memcpy(dst + n, mask, 4);
        n += 4;
    }
    if (payload != NULL) {
        for (uint64_t i = 0; i < len; i++)
            dst[n + i] = ((const unsigned char *)payload)[i] ^ (masked ? mask[i % 4] : 0);
        n += len;
    }
    return n;
}

struct sframe {
    int fin, opcode, masked;
    uint64_t len;
    const unsigned char *payload;
};

/* Parse the server frame at *pos of out; false at the end. */
static bool server_frame(const struct buf *out, size_t *pos, struct sframe *sf)
{
    const unsigned char *p = (const unsigned char *)buf_head(out) + *pos;
    size_t avail = buf_used(out) - *pos, n = 2;

    if (avail < 2)
        return false;
    sf->fin = p[0] >> 7;
    sf->opcode = p[0] & 0x0f;
    sf->masked = p[1] >> 7;
    sf->len = p[1] & 0x7f;
    if (sf->len == 126) {
        sf->len = ((uint64_t)p[2] << 8) | p[3];
        n = 4;
    } else if (sf->len == 127) {
        sf->len = 0;
        for (int i = 0; i < 8; i++)
            sf->len = (sf->len << 8) | p[2 + i];
        n = 10;
    }
    assert_true(n + sf->len <= avail);
    sf->payload = p + n;
    *pos += n + sf->len;
    return true;
}

/* The close code of the last close frame in out; 0: none. */
static int close_code_out(const struct buf *out)
{
    struct sframe sf;
    size_t pos = 0;
    int code = 0;

    while (server_frame(out, &pos, &sf))
        if (sf.opcode == 8)
            code = sf.len >= 2 ? (sf.payload[0] << 8) | sf.payload[1] : 1005;
    return code;
}

static void expect_close(struct fixture *f, const void *frames, size_t n, int code)
{
    assert_int_equal(feed_all(f, frames, n, n), WS_FINISH);
    assert_int_equal(close_code_out(&f->out), code);
    assert_int_equal(ws_close_sent(f->ws), code);
    assert_int_equal(ws_phase(f->ws), WS_PHASE_DONE);
}

/* ---- handshake ---------------------------------------------------------- */

static void test_accept_key_rfc_example(void **state)
{
    char acc[WS_ACCEPT_LEN + 1];

    (void)state;
    assert_int_equal(ws_accept_key(GOOD_KEY, acc), 0);
    assert_string_equal(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="); /* RFC 6455 section 1.3 */
}

static void test_handshake_byte_at_a_time(void **state)
{
    struct fixture *f = fx_new("");
    const char *r = req_ws();

    (void)state;
    for (size_t i = 0; i < strlen(r); i++) {
        assert_int_equal(ws_phase(f->ws), WS_PHASE_HTTP);
        assert_int_equal(ws_feed(f->ws, r + i, 1, 1), WS_CONTINUE);
    }
    assert_int_equal(ws_phase(f->ws), WS_PHASE_OPEN);
    assert_int_equal(ws_http_status(f->ws), 101);
    assert_int_equal(response_status(&f->out), 101);
    assert_non_null(memmem(buf_head(&f->out), buf_used(&f->out),
                           "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n", 50));
    assert_string_equal(ws_request_path(f->ws), "/ws");
    fx_free(f);
}

static void test_handshake_with_first_frame_behind(void **state)
{
    struct fixture *f = fx_new("");
    unsigned char all[1024];
    size_t n = strlen(req_ws());

    (void)state;
    memcpy(all, req_ws(), n);
    n += client_frame(all + n, true, 0, 1, "{\"msgid\":1}", 11, true);
    assert_int_equal(feed_all(f, all, n, n), WS_CONTINUE);
    assert_int_equal(f->got.n, 1);
    assert_string_equal(f->got.msgs[0], "{\"msgid\":1}");
    fx_free(f);
}

static void expect_status(const char *request, const char *origins, int status)
{
    struct fixture *f = fx_new(origins);

    assert_int_equal(feed_str(f, request), WS_FINISH);
    assert_int_equal(ws_http_status(f->ws), status);
    assert_int_equal(response_status(&f->out), status);
    assert_non_null(memmem(buf_head(&f->out), buf_used(&f->out), "Connection: close\r\n", 19));
    assert_int_equal(ws_send_text(f->ws, "x", 1), -1);
    fx_free(f);
}

static void test_malformed_handshakes_get_400(void **state)
{
    static const char *const bad[] = {
        "GARBAGE\r\n\r\n",
        "GET /ws\r\n\r\n",
        "get /ws HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET ws HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /ws HTTP/2.0\r\nHost: a\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost : a\r\n\r\n",
        "GET /ws HTTP/1.1\r\nno colon here\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: a\r\n\r\n", /* no upgrade headers at all */
        /* missing Host */
        "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: " GOOD_KEY "\r\nSec-WebSocket-Version: 13\r\nOrigin: " GOOD_ORIGIN
        "\r\n\r\n",
        /* no Upgrade: websocket */
        "GET /ws HTTP/1.1\r\nHost: " HOST "\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: " GOOD_KEY "\r\nSec-WebSocket-Version: 13\r\nOrigin: " GOOD_ORIGIN
        "\r\n\r\n",
        /* Connection without the upgrade token */
        "GET /ws HTTP/1.1\r\nHost: " HOST "\r\nUpgrade: websocket\r\nConnection: upgraded\r\n"
        "Sec-WebSocket-Key: " GOOD_KEY "\r\nSec-WebSocket-Version: 13\r\nOrigin: " GOOD_ORIGIN
        "\r\n\r\n",
        /* key of 15 bytes */
        "GET /ws HTTP/1.1\r\nHost: " HOST "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=\r\nSec-WebSocket-Version: 13\r\n"
        "Origin: " GOOD_ORIGIN "\r\n\r\n",
        /* key not base64 */
        "GET /ws HTTP/1.1\r\nHost: " HOST "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==\r\nSec-WebSocket-Version: 13\r\n"
        "Origin: " GOOD_ORIGIN "\r\n\r\n",
        /* two keys */
        "GET /ws HTTP/1.1\r\nHost: " HOST "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: " GOOD_KEY "\r\nSec-WebSocket-Key: " GOOD_KEY "\r\n"
        "Sec-WebSocket-Version: 13\r\nOrigin: " GOOD_ORIGIN "\r\n\r\n",
        /* a control byte in a value */
        "GET /ws HTTP/1.1\r\nHost: a\x01\r\n\r\n",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_status(bad[i], "", 400);
}

static void test_origin_refusals_get_403(void **state)
{
    (void)state;
    /* missing Origin */
    expect_status("GET /ws HTTP/1.1\r\nHost: " HOST "\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: " GOOD_KEY "\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n",
                  "", 403);
    /* foreign Origin against the own-host default */
    expect_status("GET /ws HTTP/1.1\r\nHost: " HOST "\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: " GOOD_KEY "\r\n"
                  "Sec-WebSocket-Version: 13\r\nOrigin: http://evil.example\r\n\r\n",
                  "", 403);
    /* own host, but not in an explicit list */
    expect_status(req_ws(), "https://chat.example.org", 403);
}

static void test_origin_rule(void **state)
{
    (void)state;
    assert_true(ws_origin_allowed("", "http://h:1", "h:1"));
    assert_true(ws_origin_allowed("", "https://h:1", "h:1"));
    assert_false(ws_origin_allowed("", "http://h:2", "h:1"));
    assert_false(ws_origin_allowed("", "null", "h:1"));
    assert_false(ws_origin_allowed("", NULL, "h:1"));
    assert_false(ws_origin_allowed("*", NULL, "h:1"));
    assert_false(ws_origin_allowed("*", "", "h:1"));
    assert_true(ws_origin_allowed("*", "http://anything", "h:1"));
    assert_true(ws_origin_allowed("https://a.org, https://b.org", "https://b.org", "x"));
    assert_true(ws_origin_allowed("https://a.org https://b.org", "HTTPS://A.ORG", "x"));
    assert_false(ws_origin_allowed("https://a.org", "https://a.org.evil", "x"));
    assert_false(ws_origin_allowed("https://a.org", "https://a.or", "x"));
    assert_false(ws_origin_allowed("https://a.org", "http://x", "x")); /* list replaces own host */
}

static void test_other_refusals(void **state)
{
    char big[WS_HEADER_BYTES_MAX + 64];

    (void)state;
    expect_status("POST /ws HTTP/1.1\r\nHost: a\r\n\r\n", "", 405);
    expect_status("DELETE /index.html HTTP/1.1\r\nHost: a\r\n\r\n", "", 405);
    expect_status("GET /ws HTTP/1.1\r\nHost: " HOST "\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: " GOOD_KEY "\r\n"
                  "Sec-WebSocket-Version: 8\r\nOrigin: " GOOD_ORIGIN "\r\n\r\n",
                  "", 426);
    expect_status("GET /nothing-here HTTP/1.1\r\nHost: a\r\n\r\n", "", 404);
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    expect_status(big, "", 431);
}

/* ---- static files ------------------------------------------------------- */

static void expect_file(const char *path, int status, const char *type, const char *body)
{
    struct fixture *f = fx_new("");
    char req[512];
    const char *sep;

    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", path);
    assert_int_equal(feed_str(f, req), WS_FINISH);
    assert_int_equal(response_status(&f->out), status);
    if (type != NULL) {
        char want[128];
        snprintf(want, sizeof(want), "Content-Type: %s\r\n", type);
        assert_non_null(memmem(buf_head(&f->out), buf_used(&f->out), want, strlen(want)));
    }
    if (body != NULL) {
        sep = memmem(buf_head(&f->out), buf_used(&f->out), "\r\n\r\n", 4);
        assert_non_null(sep);
        assert_int_equal(buf_head(&f->out) + buf_used(&f->out) - (sep + 4), strlen(body));
        assert_memory_equal(sep + 4, body, strlen(body));
    }
    fx_free(f);
}

static void test_static_files(void **state)
{
    struct fixture *f;

    (void)state;
    expect_file("/", 200, "text/html; charset=utf-8", "<p>\xe4\xbd\xa0\xe5\xa5\xbd</p>");
    expect_file("/index.html?v=2", 200, "text/html; charset=utf-8", NULL);
    expect_file("/app.js", 200, "text/javascript; charset=utf-8", "go();");
    expect_file("/sub/style.css", 200, "text/css; charset=utf-8", "p{}");
    expect_file("/../test_ws.c", 404, NULL, NULL);
    expect_file("/sub/../app.js", 404, NULL, NULL);
    expect_file("/.hidden", 404, NULL, NULL);
    expect_file("/sub/", 404, NULL, NULL);
    expect_file("/sub", 404, NULL, NULL);     /* a directory */
    expect_file("/link.js", 404, NULL, NULL); /* a symlink */
    expect_file("/a%2e%2e", 404, NULL, NULL);
    expect_file("//etc/passwd", 404, NULL, NULL);

    f = fx_new("");
    assert_int_equal(feed_str(f, "HEAD /app.js HTTP/1.0\r\n\r\n"), WS_FINISH);
    assert_int_equal(response_status(&f->out), 200);
    assert_non_null(memmem(buf_head(&f->out), buf_used(&f->out), "Content-Length: 5\r\n", 19));
    assert_true(memcmp(buf_head(&f->out) + buf_used(&f->out) - 4, "\r\n\r\n", 4) == 0);
    fx_free(f);

    f = fx_new("");
    f->cfg.web_root = "";
    ws_free(f->ws);
    f->ws = ws_new(&f->cfg, &f->out, collect, &f->got, 0);
    assert_int_equal(feed_str(f, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"), WS_FINISH);
    assert_int_equal(response_status(&f->out), 404);
    fx_free(f);
}

/* ---- frames in and out -------------------------------------------------- */

static void test_text_in_one_byte_at_a_time(void **state)
{
    struct fixture *f = fx_open();
    unsigned char fr[256];
    const char *msg = "{\"msgid\":5,\"msg\":\"\xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80\"}";
    size_t n = client_frame(fr, true, 0, 1, msg, strlen(msg), true);

    (void)state;
    n += client_frame(fr + n, true, 0, 1, "{}", 2, true);
    assert_int_equal(feed_all(f, fr, n, 1), WS_CONTINUE);
    assert_int_equal(f->got.n, 2);
    assert_string_equal(f->got.msgs[0], msg);
    assert_string_equal(f->got.msgs[1], "{}");
    assert_int_equal(buf_used(&f->out), 0);
    fx_free(f);
}

static void test_text_out_lengths(void **state)
{
    struct fixture *f = fx_open();
    static const size_t sizes[] = { 0, 125, 126, 65535, 65536, 70000 };
    char *big = malloc(70000);
    struct sframe sf;
    size_t pos = 0;
    json_object *obj = json_object_new_object();

    (void)state;
    memset(big, 'x', 70000);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        assert_int_equal(ws_send_text(f->ws, big, sizes[i]), 0);
    json_object_object_add(obj, "msgid", json_object_new_int(11));
    assert_int_equal(ws_send_json(f->ws, obj), 0);
    json_object_put(obj);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        assert_true(server_frame(&f->out, &pos, &sf));
        assert_int_equal(sf.fin, 1);
        assert_int_equal(sf.opcode, 1);
        assert_int_equal(sf.masked, 0); /* a server never masks */
        assert_int_equal(sf.len, sizes[i]);
    }
    assert_true(server_frame(&f->out, &pos, &sf));
    assert_int_equal(sf.len, strlen("{\"msgid\":11}"));
    assert_memory_equal(sf.payload, "{\"msgid\":11}", sf.len);
    assert_false(server_frame(&f->out, &pos, &sf));
    free(big);
    fx_free(f);
}

static void test_fragments_reassembled_around_ping(void **state)
{
    struct fixture *f = fx_open();
    unsigned char fr[256];
    const char *emoji = "\xf0\x9f\x98\x80"; /* split across fragments */
    struct sframe sf;
    size_t n = 0, pos = 0;

    (void)state;
    n += client_frame(fr + n, false, 0, 1, "{\"m\":\"", 6, true);
    n += client_frame(fr + n, false, 0, 0, emoji, 2, true);
    n += client_frame(fr + n, true, 0, 9, "hi", 2, true); /* a ping in between */
    n += client_frame(fr + n, true, 0, 0, "\x98\x80\"}", 4, true);
    for (size_t step = 1; step <= n; step = step * 2 + 1) {
        got_free(&f->got);
        buf_reset(&f->out);
        assert_int_equal(feed_all(f, fr, n, step), WS_CONTINUE);
        assert_int_equal(f->got.n, 1);
        assert_string_equal(f->got.msgs[0], "{\"m\":\"\xf0\x9f\x98\x80\"}");
        pos = 0;
        assert_true(server_frame(&f->out, &pos, &sf));
        assert_int_equal(sf.opcode, 10); /* pong with the ping's payload */
        assert_int_equal(sf.len, 2);
        assert_memory_equal(sf.payload, "hi", 2);
    }
    fx_free(f);
}

static void test_close_handshake_echoes_1000(void **state)
{
    struct fixture *f = fx_open();
    unsigned char fr[64];
    size_t n = client_frame(fr, true, 0, 8,
                            "\x03\xe8"
                            "bye",
                            5, true);

    (void)state;
    expect_close(f, fr, n, 1000);
    assert_int_equal(ws_send_text(f->ws, "x", 1), -1);
    fx_free(f);
}

static void test_unmasked_frame_gets_1002(void **state)
{
    struct fixture *f = fx_open();
    unsigned char fr[64];
    size_t n = client_frame(fr, true, 0, 1, "{}", 2, false);

    (void)state;
    expect_close(f, fr, n, 1002);
    assert_int_equal(f->got.n, 0);
    fx_free(f);
}

static void test_protocol_errors_get_1002(void **state)
{
    unsigned char fr[512], big[200];
    struct fixture *f;
    size_t n;

    (void)state;
    memset(big, 'p', sizeof(big));
    f = fx_open(); /* reserved opcode */
    n = client_frame(fr, true, 0, 3, "x", 1, true);
    expect_close(f, fr, n, 1002);
    fx_free(f);
    f = fx_open(); /* RSV1 without an extension */
    n = client_frame(fr, true, 4, 1, "{}", 2, true);
    expect_close(f, fr, n, 1002);
    fx_free(f);
    f = fx_open(); /* a control frame over 125 bytes */
    n = client_frame(fr, true, 0, 9, big, 126, true);
    expect_close(f, fr, n, 1002);
    fx_free(f);
    f = fx_open(); /* a fragmented control frame */
    n = client_frame(fr, false, 0, 9, "x", 1, true);
    expect_close(f, fr, n, 1002);
    fx_free(f);
    f = fx_open(); /* a continuation with nothing to continue */
    n = client_frame(fr, true, 0, 0, "x", 1, true);
    expect_close(f, fr, n, 1002);
    fx_free(f);
    f = fx_open(); /* a new text frame inside a fragmented one */
    n = client_frame(fr, false, 0, 1, "{", 1, true);
    n += client_frame(fr + n, true, 0, 1, "}", 1, true);
    expect_close(f, fr, n, 1002);
    assert_int_equal(f->got.n, 0);
    fx_free(f);
}

static void test_binary_gets_1003(void **state)
{
    struct fixture *f = fx_open();
    unsigned char fr[64];
    size_t n = client_frame(fr, true, 0, 2, "\x00\x01", 2, true);

    (void)state;
    expect_close(f, fr, n, 1003);
    fx_free(f);
}

static void test_invalid_utf8_gets_1007(void **state)
{
    static const char *const bad[] = {
        "\xc0\xaf",         /* overlong '/' */
        "\xed\xa0\x80",     /* a surrogate */
        "\xf4\x90\x80\x80", /* beyond U+10FFFF */
        "ok\xff",
    };
    unsigned char fr[64];

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct fixture *f = fx_open();
        size_t n = client_frame(fr, true, 0, 1, bad[i], strlen(bad[i]), true);
        expect_close(f, fr, n, 1007);
        assert_int_equal(f->got.n, 0);
        fx_free(f);
    }
    /* a code point cut off at the end of the message */
    struct fixture *f = fx_open();
    size_t n = client_frame(fr, false, 0, 1, "ab", 2, true);
    n += client_frame(fr + n, true, 0, 0, "\xe4\xbd", 2, true);
    expect_close(f, fr, n, 1007);
    fx_free(f);
}

static void test_too_big_gets_1009(void **state)
{
    unsigned char *fr = malloc(4 * LIMIT);
    char *payload = malloc(2 * LIMIT);
    struct fixture *f;
    size_t n;

    (void)state;
    memset(payload, 'a', 2 * LIMIT);
    f = fx_open(); /* exactly at the limit passes */
    n = client_frame(fr, true, 0, 1, payload, LIMIT, true);
    assert_int_equal(feed_all(f, fr, n, 7), WS_CONTINUE);
    assert_int_equal(f->got.n, 1);
    assert_int_equal(f->got.lens[0], LIMIT);
    fx_free(f);
    /* one frame a byte over: refused at its first payload byte, never buffered */
    f = fx_open();
    n = client_frame(fr, true, 0, 1, NULL, LIMIT + 1, true);
    fr[n++] = 'a';
    expect_close(f, fr, n, 1009);
    fx_free(f);
    f = fx_open(); /* a 64-bit length of 2^62 */
    n = client_frame(fr, true, 0, 1, NULL, 1ULL << 62, true);
    fr[n++] = 'a';
    expect_close(f, fr, n, 1009);
    fx_free(f);
    f = fx_open(); /* fragments each small, together over */
    n = client_frame(fr, false, 0, 1, payload, LIMIT / 2, true);
    n += client_frame(fr + n, false, 0, 0, payload, LIMIT / 2, true);
    n += client_frame(fr + n, true, 0, 0, payload, 1, true);
    expect_close(f, fr, n, 1009);
    assert_int_equal(f->got.n, 0);
    fx_free(f);
    free(fr);
    free(payload);
}

static void test_close_by_request_1008(void **state)
{
    struct fixture *f = fx_open();

    (void)state;
    ws_close(f->ws, WS_CLOSE_POLICY, "login timeout");
    assert_int_equal(close_code_out(&f->out), 1008);
    assert_int_equal(ws_tick(f->ws, 2), WS_FINISH);
    assert_int_equal(ws_send_text(f->ws, "x", 1), -1);
    fx_free(f);
}

static void test_ping_idle_then_1008(void **state)
{
    struct fixture *f = fx_open();
    unsigned char fr[64];
    struct sframe sf;
    size_t pos = 0, n;

    (void)state;
    assert_int_equal(ws_tick(f->ws, PING_MS - 1), WS_CONTINUE);
    assert_int_equal(buf_used(&f->out), 0);
    assert_int_equal(ws_tick(f->ws, PING_MS + 1), WS_CONTINUE);
    assert_true(server_frame(&f->out, &pos, &sf));
    assert_int_equal(sf.opcode, 9);
    /* a pong answers it: no close, the next ping only after another interval */
    n = client_frame(fr, true, 0, 10, sf.payload, sf.len, true);
    assert_int_equal(ws_feed(f->ws, fr, n, PING_MS + 100), WS_CONTINUE);
    assert_int_equal(ws_tick(f->ws, PING_MS + 100 + PONG_MS + 1), WS_CONTINUE);
    assert_int_equal(close_code_out(&f->out), 0);
    buf_reset(&f->out);
    assert_int_equal(ws_tick(f->ws, 2 * PING_MS + 200), WS_CONTINUE);
    pos = 0;
    assert_true(server_frame(&f->out, &pos, &sf));
    assert_int_equal(sf.opcode, 9);
    /* silence: closed with 1008 after the pong timeout */
    assert_int_equal(ws_tick(f->ws, 2 * PING_MS + 200 + PONG_MS - 1), WS_CONTINUE);
    assert_int_equal(ws_tick(f->ws, 2 * PING_MS + 200 + PONG_MS), WS_FINISH);
    assert_int_equal(close_code_out(&f->out), 1008);
    fx_free(f);
}

static void test_no_ping_before_upgrade(void **state)
{
    struct fixture *f = fx_new("");

    (void)state;
    assert_int_equal(ws_feed(f->ws, "GET / HT", 8, 0), WS_CONTINUE);
    assert_int_equal(ws_tick(f->ws, 10 * PING_MS), WS_CONTINUE);
    assert_int_equal(buf_used(&f->out), 0);
    fx_free(f);
}

/* ---- fixture: a web root with a few files ------------------------------- */

static void put(const char *rel, const char *text)
{
    char path[128];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", web_root, rel);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static int make_root(void **state)
{
    char path[128];

    (void)state;
    snprintf(web_root, sizeof(web_root), "/tmp/test_ws.XXXXXX");
    if (mkdtemp(web_root) == NULL)
        return -1;
    snprintf(path, sizeof(path), "%s/sub", web_root);
    mkdir(path, 0755);
    put("index.html", "<p>\xe4\xbd\xa0\xe5\xa5\xbd</p>");
    put("app.js", "go();");
    put("sub/style.css", "p{}");
    put(".hidden", "secret");
    snprintf(path, sizeof(path), "%s/link.js", web_root);
    return symlink("/etc/passwd", path);
}

static int remove_root(void **state)
{
    char cmd[160];

    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", web_root);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_key_rfc_example),
        cmocka_unit_test(test_handshake_byte_at_a_time),
        cmocka_unit_test(test_handshake_with_first_frame_behind),
        cmocka_unit_test(test_malformed_handshakes_get_400),
        cmocka_unit_test(test_origin_refusals_get_403),
        cmocka_unit_test(test_origin_rule),
        cmocka_unit_test(test_other_refusals),
        cmocka_unit_test(test_static_files),
        cmocka_unit_test(test_text_in_one_byte_at_a_time),
        cmocka_unit_test(test_text_out_lengths),
        cmocka_unit_test(test_fragments_reassembled_around_ping),
        cmocka_unit_test(test_close_handshake_echoes_1000),
        cmocka_unit_test(test_unmasked_frame_gets_1002),
        cmocka_unit_test(test_protocol_errors_get_1002),
        cmocka_unit_test(test_binary_gets_1003),
        cmocka_unit_test(test_invalid_utf8_gets_1007),
        cmocka_unit_test(test_too_big_gets_1009),
        cmocka_unit_test(test_close_by_request_1008),
        cmocka_unit_test(test_ping_idle_then_1008),
        cmocka_unit_test(test_no_ping_before_upgrade),
    };

    return cmocka_run_group_tests(tests, make_root, remove_root);
}
