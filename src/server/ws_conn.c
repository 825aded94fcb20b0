/*
 * ws_conn.c - WebSocket connections in a worker: the `[websocket] listen`
 * socket, accepting from it, and the conn.c transport that wraps ws.c.
 *
 * A websocket connection is an ordinary struct conn (sessions, routing, the
 * log, presence and the cluster see no difference); only its transport
 * differs:
 *
 *   input   bytes from the socket -> ws_feed -> each text message into
 *           conn_feed, the same request framing and dispatch as TCP.  A
 *           message must hold one whole object: one left open is malformed.
 *   output  conn.c's output buffer holds objects, one per '\n'-terminated
 *           line, at absolute offsets.  write() turns each complete line
 *           into one text frame in the transport's own wire buffer and
 *           reports the line's bytes as taken only when the socket has taken
 *           the whole frame, so a delivery mark covers the frame.
 *   closing a graceful close sends close 1000 after the replies already
 *           queued; a stream error (conn_fail) 1008.
 *   tick    pings idle peers, closes silent ones (ws_tick).
 *
 * Per-address connection caps, the pre-login cap and the login timeout are
 * those of TCP connections; the rate limit applies per request as on TCP.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/net.h"
#include "server/conn.h"
#include "server/guard.h"
#include "server/metrics.h"
#include "server/worker.h"
#include "server/ws.h"
#include "server/ws_conn.h"

#define WS_ACCEPTS_PER_EVENT 64
#define WS_SPANS_MIN         8

/* One object framed into the wire buffer, not yet reported as written. */
struct ws_span {
    uint64_t wire_end; /* absolute wire offset where its frame ends */
    uint64_t raw_end;  /* absolute conn output offset just past its '\n' */
};

struct ws_conn {
    struct ws *ws;
    struct buf wire;    /* frames (and HTTP answers) not yet taken by the socket */
    uint64_t wire_base; /* absolute wire offset of buf_head(&wire) */
    uint64_t framed_to; /* conn output offset up to which objects are framed */
    struct ws_span *spans;
    uint32_t spans_head, spans_len, spans_cap;
};

static int ws_listen_fd = -1;
static struct loop_source ws_listen_src;
static bool ws_listening;

int ws_conn_listen(const struct qc_config *cfg)
{
    char err[256];
    if (cfg->ws_listen[0] == '\0')
        return 0;
    ws_listen_fd = net_listen_tcp(cfg->ws_listen, cfg->listen_backlog, err, sizeof err);
    if (ws_listen_fd < 0) {
        log_error("websocket.listen %s: %s", cfg->ws_listen, err);
        return -1;
    }
    return 0;
}

void ws_conn_unlisten(void)
{
    if (ws_listen_fd >= 0)
        close(ws_listen_fd);
    ws_listen_fd = -1;
}

static struct ws_conn *state_of(struct conn *c)
{
    return c->tr_state;
}

static uint64_t wire_end(const struct ws_conn *s)
{
    return s->wire_base + buf_used(&s->wire);
}

static int push_span(struct ws_conn *s, uint64_t raw_end)
{
    if (s->spans_head + s->spans_len == s->spans_cap) {
        if (s->spans_head > 0) {
            memmove(s->spans, s->spans + s->spans_head, s->spans_len * sizeof *s->spans);
            s->spans_head = 0;
        } else {
            uint32_t ncap = s->spans_cap ? s->spans_cap * 2 : WS_SPANS_MIN;
            struct ws_span *n = realloc(s->spans, ncap * sizeof *n);
            if (n == NULL)
                return -1;
            s->spans = n;
            s->spans_cap = ncap;
        }
    }
    s->spans[s->spans_head + s->spans_len++] = (struct ws_span){ wire_end(s), raw_end };
    return 0;
}

/*
 * Frame the complete lines of conn output [from, from+n) at absolute offset
 * from that are not framed yet.  Output that cannot be framed (the
 * connection is not upgraded, or is closing) is dropped: it is reported as
 * written once the wire before it is.
 */
static int frame_lines(struct ws_conn *s, const char *p, uint64_t from, size_t n)
{
    uint64_t end = from + n;
    while (s->framed_to < end) {
        const char *line = p + (s->framed_to - from);
        const char *nl = memchr(line, '\n', (size_t)(end - s->framed_to));
        if (nl == NULL)
            break; /* the rest of an object comes with a later append */
        size_t len = (size_t)(nl - line);
        if (len > 0 && ws_send_text(s->ws, line, len) < 0)
            log_debug("websocket: an object for a connection that is not open is dropped");
        if (push_span(s, s->framed_to + len + 1) < 0)
            return -1;
        s->framed_to += len + 1;
    }
    return 0;
}

/* Write wire bytes; 1 while some wait, 0 when all went, -1 on a socket error. */
static int send_wire(struct conn *c, struct ws_conn *s)
{
    while (buf_used(&s->wire) > 0) {
        ssize_t k =
            send(c->fd, buf_head(&s->wire), buf_used(&s->wire), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 1;
            return -1;
        }
        buf_consume(&s->wire, (size_t)k);
        s->wire_base += (uint64_t)k;
    }
    buf_shrink(&s->wire, 0);
    return 0;
}

/* Objects whose whole frame the socket took: report their bytes as written. */
static uint64_t take_sent_spans(struct ws_conn *s)
{
    uint64_t raw_to = 0;
    while (s->spans_len > 0 && s->spans[s->spans_head].wire_end <= s->wire_base) {
        raw_to = s->spans[s->spans_head].raw_end;
        s->spans_head++;
        s->spans_len--;
    }
    if (s->spans_len == 0)
        s->spans_head = 0;
    return raw_to;
}

static ssize_t ws_read(struct conn *c, void *buf, size_t cap)
{
    return recv(c->fd, buf, cap, MSG_DONTWAIT);
}

/* p[0..n) is conn output from absolute offset c->out_written. */
static ssize_t ws_write(struct conn *c, const void *p, size_t n)
{
    struct ws_conn *s = state_of(c);
    if (s->framed_to < c->out_written)
        s->framed_to = c->out_written;
    if (frame_lines(s, p, c->out_written, n) < 0) {
        errno = ENOMEM;
        return -1;
    }
    if (send_wire(c, s) < 0)
        return -1;
    uint64_t raw_to = take_sent_spans(s);
    if (raw_to <= c->out_written) {
        errno = EAGAIN;
        return -1;
    }
    return (ssize_t)(raw_to - c->out_written);
}

static int ws_flush(struct conn *c)
{
    return send_wire(c, state_of(c));
}

/* One text message is one request object. */
static void on_text(void *arg, const char *msg, size_t len)
{
    struct conn *c = arg;
    struct worker *w = c->w;
    if (c->state != CONN_OPEN)
        return;
    conn_feed(w, c, msg, len);
    if (c->state == CONN_OPEN && !c->busy && c->fr && c->fr->in_object)
        conn_fail(w, c, QC_EMALFORMED); /* a frame must hold a whole object */
}

static void ws_feed_bytes(struct conn *c, const char *p, size_t n)
{
    struct worker *w = c->w;
    if (ws_feed(state_of(c)->ws, p, n, w->now_ms) == WS_FINISH)
        conn_close_gracefully(w, c);
    conn_want_flush(w, c);
}

/* Frame what is queued before the close, so the close frame comes last. */
static void ws_closing(struct conn *c, bool failed)
{
    struct ws_conn *s = state_of(c);
    if (s->framed_to < c->out_written)
        s->framed_to = c->out_written;
    const char *p = buf_head(&c->out) + (c->out_written - c->out_base);
    if (frame_lines(s, p, c->out_written, (size_t)(conn_out_end(c) - c->out_written)) < 0)
        log_warning("websocket: out of memory framing the last replies");
    if (failed)
        ws_close(s->ws, WS_CLOSE_POLICY, "protocol error");
    else
        ws_close(s->ws, WS_CLOSE_NORMAL, "bye");
}

static void ws_release(struct conn *c)
{
    struct ws_conn *s = state_of(c);
    ws_free(s->ws);
    buf_free(&s->wire);
    free(s->spans);
    free(s);
    c->tr_state = NULL;
}

static const struct conn_transport ws_transport = {
    .name = "websocket",
    .read = ws_read,
    .write = ws_write,
    .feed = ws_feed_bytes,
    .flush = ws_flush,
    .closing = ws_closing,
    .release = ws_release,
};

static int attach_transport(struct worker *w, struct conn *c)
{
    struct ws_conn *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -1;
    struct ws_config cfg = {
        .origins = w->cfg.ws_origins,
        .web_root = w->cfg.ws_web_root,
        .max_message_bytes = (size_t)w->cfg.max_message_bytes,
        .ping_interval_ms = w->cfg.ws_ping_interval * 1000,
        .pong_timeout_ms = w->cfg.ws_ping_interval * 1000,
    };
    buf_init(&s->wire);
    s->ws = ws_new(&cfg, &s->wire, on_text, c, w->now_ms);
    if (s->ws == NULL) {
        free(s);
        return -1;
    }
    conn_set_transport(c, &ws_transport, s);
    return 0;
}

/* Over the per-address cap: an HTTP answer, then the door. */
static void refuse_connection(struct worker *w, int fd)
{
    static const char answer[] = "HTTP/1.1 503 Service Unavailable\r\n"
                                 "Content-Type: text/plain\r\nContent-Length: 38\r\n"
                                 "Connection: close\r\n\r\n"
                                 "too many connections from your address";
    if (send(fd, answer, sizeof answer - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_debug("refused websocket connection: %s", strerror(errno));
    close(fd);
    log_info("websocket connection refused: server.max_conns_per_ip (%d) reached for an address",
             w->cfg.max_conns_per_ip);
}

static void accept_one(struct worker *w, int fd, const struct sockaddr_storage *peer)
{
    uint32_t addr = guard_addr_hash(peer);
    if (!guard_conn_open(w->guard, w->index, addr, w->cfg.max_conns_per_ip)) {
        refuse_connection(w, fd);
        return;
    }
    struct conn *c = conn_open(w, fd);
    if (c == NULL || attach_transport(w, c) < 0) {
        log_error("cannot take a new websocket connection: out of memory or slots");
        guard_conn_close(w->guard, w->index, addr);
        if (c)
            conn_close(w, c, "out of memory");
        else
            close(fd);
        return;
    }
    metrics_count(QM_ACCEPTED, 0);
    c->ip_hash = addr;
    c->ip_counted = true;
    if (!conn_count_prelogin(w, c))
        conn_fail(w, c, QC_ELIMIT);
}

static void accept_clients(void *ctx, uint32_t events)
{
    struct worker *w = ctx;
    (void)events;
    for (int i = 0; i < WS_ACCEPTS_PER_EVENT && ws_listening; i++) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        int fd =
            accept4(ws_listen_fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_warning("accept (websocket): %s", strerror(errno));
            return;
        }
        accept_one(w, fd, &peer);
    }
}

int ws_conn_start(struct worker *w)
{
    if (ws_listen_fd < 0)
        return 0;
    if (loop_watch(&w->loop, &ws_listen_src, ws_listen_fd, EPOLLIN | EPOLLEXCLUSIVE, accept_clients,
                   w) < 0)
        return -1;
    ws_listening = true;
    return 0;
}

void ws_conn_stop(struct worker *w)
{
    if (ws_listening)
        loop_unwatch(&w->loop, &ws_listen_src);
    ws_listening = false;
    ws_conn_unlisten();
}

void ws_conn_tick(struct worker *w)
{
    for (uint32_t i = 0; i < worker_slot_count(w); i++) {
        struct conn *c = worker_conn(w, i);
        if (c == NULL || c->tr != &ws_transport || c->state != CONN_OPEN)
            continue;
        if (ws_tick(state_of(c)->ws, w->now_ms) == WS_FINISH)
            conn_close_gracefully(w, c);
        conn_want_flush(w, c);
    }
}
