/*
 * engine.c - qchat-bench's event loop: one epoll instance per thread driving
 * non-blocking client connections.
 *
 * Input is read into one shared buffer per engine and split at '\n' (the
 * server ends every object with one); only a partial line is copied into the
 * connection's own buffer.  Output is appended to the connection's buffer
 * and written once per read (or once per epoll batch for writes to other
 * connections), so several messages share a syscall.  Buffers are kept
 * across messages, or freed when empty in "lean" mode for many idle sessions.
 * Connects and logins are started at most `concurrency` at a time; every
 * run is bounded by a deadline.
 *
 * With --ws every connection first upgrades with GET /ws; then each object
 * sent is one masked text frame (conn_reserve writes the header, the payload
 * is masked just before it is sent) and each text frame received is one
 * line for the mode; pings are answered.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "common/proto.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

volatile sig_atomic_t bench_interrupted;

uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_SEC + (uint64_t)ts.tv_nsec;
}

static void conn_lost(struct engine *e, struct conn *c, int err);

/* ---- setup -------------------------------------------------------------- */

struct engine *engine_new(const struct bench_opts *o, const struct users *u, uint32_t nconns,
                          uint32_t gbase, int index)
{
    struct engine *e = calloc(1, sizeof *e);

    if (!e)
        return NULL;
    e->o = o;
    e->users = u;
    e->index = index;
    e->gbase = gbase;
    e->nconns = nconns;
    e->concurrency = o->concurrency > 0 ? (uint32_t)o->concurrency : BENCH_LOGIN_CONCURRENCY;
    e->tick_ns = BENCH_TICK_NS;
    e->now = e->last_tick = now_ns();
    e->wsrand = (uint32_t)e->now | 1u;
    stats_init(&e->st);
    e->ep = epoll_create1(EPOLL_CLOEXEC);
    e->conns = calloc(nconns ? nconns : 1, sizeof *e->conns);
    e->dirty = calloc(nconns ? nconns : 1, sizeof *e->dirty);
    e->restart = calloc(nconns ? nconns : 1, sizeof *e->restart);
    if (e->ep < 0 || !e->conns || !e->dirty || !e->restart) {
        engine_free(e);
        return NULL;
    }
    for (uint32_t i = 0; i < nconns; i++) {
        e->conns[i].fd = -1;
        e->conns[i].uid = -1;
    }
    return e;
}

static void conn_release(struct conn *c)
{
    free(c->in);
    free(c->out);
    c->in = c->out = NULL;
    c->inlen = c->incap = 0;
    c->outlen = c->outoff = c->outcap = 0;
}

static void conn_close(struct engine *e, struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    c->state = CS_CLOSED;
    c->armed_out = 0;
    c->inlen = 0;
    c->outlen = c->outoff = 0;
    c->ws = WSC_NONE;
    c->wsmask = 0;
    if (e->lean)
        conn_release(c);
}

void engine_free(struct engine *e)
{
    if (!e)
        return;
    for (uint32_t i = 0; e->conns && i < e->nconns; i++) {
        if (e->conns[i].fd >= 0)
            close(e->conns[i].fd);
        conn_release(&e->conns[i]);
    }
    if (e->ep >= 0)
        close(e->ep);
    free(e->conns);
    free(e->dirty);
    free(e->restart);
    free(e);
}

/* ---- errors ------------------------------------------------------------- */

void engine_error(struct engine *e, enum err_class why, const char *fmt, ...)
{
    e->st.err[why]++;
    if (!fmt || e->reported[why]++ >= BENCH_ERR_REPORTS)
        return;
    char msg[BENCH_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "qchat-bench: %s: %s%s\n", err_names[why], msg,
            e->reported[why] == BENCH_ERR_REPORTS ? " (further ones not shown)" : "");
}

/* The first connect + login of a conn is over, one way or the other. */
static void conn_settle(struct engine *e, struct conn *c, bool ok)
{
    if (c->settled)
        return;
    c->settled = 1;
    e->pending--;
    if (ok)
        e->ready++;
    else
        e->failed++;
}

/* Give up on c after an error already counted: tell the mode, close. */
static void conn_abort(struct engine *e, struct conn *c)
{
    if (e->ops.closed)
        e->ops.closed(e, c);
    conn_settle(e, c, false);
    conn_close(e, c);
}

void engine_fail(struct engine *e, struct conn *c, enum err_class why, const char *what)
{
    engine_error(e, why, "user %d: %s", (int)c->uid, what);
    conn_abort(e, c);
}

void engine_restart_later(struct engine *e, struct conn *c)
{
    conn_close(e, c);
    e->restart[e->nrestart++] = conn_index(e, c);
}

static void run_restarts(struct engine *e)
{
    uint32_t n = e->nrestart;

    e->nrestart = 0;
    for (uint32_t i = 0; i < n; i++)
        engine_start(e, &e->conns[e->restart[i]]);
}

void engine_close(struct engine *e, struct conn *c)
{
    conn_close(e, c);
}

void engine_drop(struct engine *e, struct conn *c)
{
    conn_settle(e, c, false);
    conn_close(e, c);
}

/* ---- output ------------------------------------------------------------- */

static void arm_out(struct engine *e, struct conn *c, bool on)
{
    struct epoll_event ev;

    ev.events = EPOLLIN | (on ? EPOLLOUT : 0);
    ev.data.u64 = (uint64_t)conn_index(e, c) | ((uint64_t)c->gen << 32);
    if (epoll_ctl(e->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->armed_out = on;
}

static void conn_flush(struct engine *e, struct conn *c)
{
    if (c->fd < 0 || c->state == CS_CONNECTING)
        return;
    if (c->ws == WSC_OPEN && c->wsmask < c->outlen) {
        ws_mask_frames(c->out + c->wsmask, c->outlen - c->wsmask);
        c->wsmask = c->outlen;
    }
    while (c->outoff < c->outlen) {
        ssize_t w = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
        if (w > 0) {
            c->outoff += (uint32_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->armed_out)
                arm_out(e, c, true);
            return;
        }
        conn_lost(e, c, w < 0 ? errno : EPIPE);
        return;
    }
    c->outoff = c->outlen = c->wsmask = 0;
    if (c->armed_out)
        arm_out(e, c, false);
    if (e->lean) {
        free(c->out);
        c->out = NULL;
        c->outcap = 0;
    }
}

static void flush_dirty(struct engine *e)
{
    for (uint32_t i = 0; i < e->ndirty; i++) {
        struct conn *c = &e->conns[e->dirty[i]];
        c->dirty = 0;
        if (c->outlen > c->outoff)
            conn_flush(e, c);
    }
    e->ndirty = 0;
}

static int grow(char **p, uint32_t *cap, size_t need, size_t limit, size_t first)
{
    if (need <= *cap)
        return 0;
    if (need > limit)
        return -1;
    size_t nc = *cap ? *cap : first;
    while (nc < need)
        nc *= 2;
    if (nc > limit)
        nc = limit;
    char *q = realloc(*p, nc);
    if (!q)
        return -1;
    *p = q;
    *cap = (uint32_t)nc;
    return 0;
}

static char *reserve_raw(struct engine *e, struct conn *c, size_t n)
{
    if (c->fd < 0)
        return NULL;
    if (c->outoff && c->outlen + n > c->outcap) {
        memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
        c->outlen -= c->outoff;
        c->wsmask -= c->outoff; /* sent bytes were masked: wsmask >= outoff */
        c->outoff = 0;
    }
    if (grow(&c->out, &c->outcap, (size_t)c->outlen + n, BENCH_OUT_MAX, BENCH_OUT_MIN) < 0) {
        engine_fail(e, c, E_PROTOCOL, "output backlog over its limit (server not reading?)");
        return NULL;
    }
    char *p = c->out + c->outlen;
    c->outlen += (uint32_t)n;
    if (!c->dirty) {
        c->dirty = 1;
        e->dirty[e->ndirty++] = conn_index(e, c);
    }
    return p;
}

static uint32_t next_mask_key(struct engine *e)
{
    uint32_t x = e->wsrand;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return e->wsrand = x;
}

/* Room for a frame's payload of n bytes after its header; masked at the flush. */
static char *reserve_frame(struct engine *e, struct conn *c, int opcode, size_t n)
{
    char *h = reserve_raw(e, c, ws_frame_header_len(n) + n);
    if (!h)
        return NULL;
    return h + ws_frame_header(h, opcode, n, next_mask_key(e));
}

char *conn_reserve(struct engine *e, struct conn *c, size_t n)
{
    if (c->ws == WSC_OPEN)
        return reserve_frame(e, c, WS_OP_TEXT, n);
    return reserve_raw(e, c, n);
}

int conn_send(struct engine *e, struct conn *c, const void *p, size_t n)
{
    char *d = conn_reserve(e, c, n);

    if (!d)
        return -1;
    memcpy(d, p, n);
    return 0;
}

int conn_printf(struct engine *e, struct conn *c, const char *fmt, ...)
{
    char line[BENCH_LINE_MAX];
    va_list ap;

    va_start(ap, fmt);
    int k = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= sizeof line)
        return -1;
    return conn_send(e, c, line, (size_t)k);
}

int conn_send_tmpl(struct engine *e, struct conn *c, const struct msgtmpl *t, char kind, uint32_t a,
                   uint32_t b, uint32_t seq)
{
    char *p = conn_reserve(e, c, t->len);

    if (!p)
        return -1;
    memcpy(p, t->buf, t->len);
    tag_write(p + t->tag_off, kind, a, b, e->now);
    if (t->seq_off)
        hex32_write(p + t->seq_off, seq);
    return 0;
}

void engine_send_login(struct engine *e, struct conn *c)
{
    c->state = CS_LOGIN;
    c->t_req = e->now;
    conn_printf(e, c, "{\"msgid\":%d,\"id\":%d,\"password\":\"%s\"}", QC_LOGIN_MSG, (int)c->uid,
                e->users->pw[c->user]);
}

/* ---- connect ------------------------------------------------------------ */

/* --ws: ask for the upgrade; the mode hears of the connection after the 101. */
static void send_upgrade(struct engine *e, struct conn *c)
{
    char req[BENCH_LINE_MAX];
    int n = ws_upgrade_request(req, sizeof req, e->o->ep[c->side].name);
    c->ws = WSC_HANDSHAKE;
    if (n < 0 || conn_send(e, c, req, (size_t)n) < 0)
        engine_fail(e, c, E_CONNECT, "cannot build the websocket upgrade request");
}

static void conn_connected(struct engine *e, struct conn *c)
{
    c->state = CS_OPEN;
    if (e->o->ws && c->ws == WSC_NONE) {
        send_upgrade(e, c);
        return;
    }
    if (e->ops.connected)
        e->ops.connected(e, c);
    else
        engine_send_login(e, c);
}

static int bind_source(struct engine *e, struct conn *c, int fd)
{
    const struct bench_opts *o = e->o;
    int i = (int)((e->gbase + conn_index(e, c)) % (uint32_t)o->nsrc);
    int one = 1;

    /* the port is picked at connect(), per destination: more than 64k in all */
    if (o->src[i].ss_family == AF_INET)
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    return bind(fd, (const struct sockaddr *)&o->src[i], o->srclen[i]);
}

void engine_start(struct engine *e, struct conn *c)
{
    const struct endpoint *ep = &e->o->ep[c->side];
    struct epoll_event ev;
    int one = 1;

    c->gen++;
    c->state = CS_IDLE;
    c->ws = WSC_NONE;
    c->wsmask = 0;
    c->t_req = c->t_conn = e->now;
    c->inlen = 0;
    c->outlen = c->outoff = 0;
    int fd = socket(ep->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        engine_error(e, E_CONNECT, "socket: %s", strerror(errno));
        conn_abort(e, c);
        return;
    }
    c->fd = fd;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (e->o->nsrc && bind_source(e, c, fd) < 0) {
        engine_error(e, E_CONNECT, "bind source: %s", strerror(errno));
        conn_abort(e, c);
        return;
    }
    int r = connect(fd, (const struct sockaddr *)&ep->addr, ep->len);
    if (r < 0 && errno != EINPROGRESS) {
        engine_error(e, E_CONNECT, "connect %s: %s", ep->name, strerror(errno));
        conn_abort(e, c);
        return;
    }
    ev.events = EPOLLIN | (r < 0 ? EPOLLOUT : 0);
    ev.data.u64 = (uint64_t)conn_index(e, c) | ((uint64_t)c->gen << 32);
    if (epoll_ctl(e->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        engine_error(e, E_CONNECT, "epoll_ctl: %s", strerror(errno));
        conn_abort(e, c);
        return;
    }
    c->armed_out = r < 0;
    c->state = CS_CONNECTING;
    if (r == 0)
        conn_connected(e, c);
}

static void connect_done(struct engine *e, struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err) {
        engine_error(e, E_CONNECT, "connect %s: %s", e->o->ep[c->side].name, strerror(err));
        conn_abort(e, c);
        return;
    }
    arm_out(e, c, false);
    conn_connected(e, c);
}

/* Start connects while fewer than `concurrency` are in progress. */
static void engine_pump(struct engine *e)
{
    while (e->started < e->nconns && e->pending < e->concurrency && !bench_interrupted) {
        struct conn *c = &e->conns[e->started++];
        e->pending++;
        if (c->uid < 0) {
            conn_abort(e, c); /* user never registered: already counted */
            continue;
        }
        engine_start(e, c);
    }
}

bool engine_settled(struct engine *e)
{
    return e->started == e->nconns && e->pending == 0;
}

/* ---- input -------------------------------------------------------------- */

static void conn_lost(struct engine *e, struct conn *c, int err)
{
    const char *why = err ? strerror(err) : "closed by the server";

    switch (c->state) {
    case CS_CONNECTING: engine_fail(e, c, E_CONNECT, why); break;
    case CS_LOGIN: engine_fail(e, c, c->settled ? E_DISCONNECT : E_LOGIN, why); break;
    case CS_REG: engine_fail(e, c, E_REG, why); break;
    default: engine_fail(e, c, E_DISCONNECT, why); break;
    }
}

static void login_reply(struct engine *e, struct conn *c, const struct jfields *f)
{
    long err = (f->has & JF_ERRNO) ? f->err : QC_EINTERNAL;

    if (err == QC_OK) {
        c->state = CS_READY;
        conn_settle(e, c, true);
        if (e->ops.logged_in)
            e->ops.logged_in(e, c, err);
        return;
    }
    if (e->ops.logged_in)
        e->ops.logged_in(e, c, err);
    char what[64];
    snprintf(what, sizeof what, "login refused, errno %ld", err);
    engine_fail(e, c, E_LOGIN, what);
}

void engine_unexpected(struct engine *e, struct conn *c, const struct jfields *f)
{
    switch (f->msgid) {
    case QC_ACK_MSG:
        if ((f->has & JF_ERRNO) && f->err == QC_OK) {
            e->st.acks++;
            return;
        }
        if ((f->has & JF_ERRNO) && f->err >= 0 && f->err < BENCH_SRV_ERRNO_MAX)
            e->st.srv_errno[f->err]++;
        engine_error(e, E_SERVER, "user %d: server error %ld for request %ld", (int)c->uid,
                     (f->has & JF_ERRNO) ? f->err : -1L, (f->has & JF_REQ) ? f->req : -1L);
        return;
    case QC_KICK_MSG:
        engine_error(e, E_KICKED, "user %d: kicked (logged in elsewhere)", (int)c->uid);
        return;
    case QC_PRESENCE_MSG:
    /* version 2 pushes every non-legacy session gets: read sync, friend requests, group events */
    case QC_READ_MSG:
    case QC_RECEIPT_MSG:
    case QC_TYPING_MSG:
    case QC_FRIEND_REQUEST_MSG:
    case QC_GROUP_EVENT_MSG: return;
    default:
        engine_error(e, E_PROTOCOL, "user %d: unexpected msgid %ld", (int)c->uid, f->msgid);
        return;
    }
}

static void handle_line(struct engine *e, struct conn *c, const char *p, size_t n)
{
    struct jfields f;

    if (jscan(p, n, &f) < 0 || !(f.has & JF_MSGID)) {
        engine_error(e, E_PROTOCOL, "user %d: unparseable line (%zu bytes)", (int)c->uid, n);
        return;
    }
    e->line = p;
    e->linelen = n;
    if (c->state == CS_LOGIN && f.msgid == QC_LOGIN_MSG_ACK) {
        login_reply(e, c, &f);
        return;
    }
    e->ops.line(e, c, p, n, &f);
}

/* Handle the whole lines in p[0..n); returns the bytes used, -1: c is gone. */
static long conn_lines(struct engine *e, struct conn *c, const char *p, size_t n)
{
    size_t off = 0;
    for (;;) {
        const char *nl = memchr(p + off, '\n', n - off);
        if (!nl)
            break;
        size_t len = (size_t)(nl - (p + off));
        if (len)
            handle_line(e, c, p + off, len);
        if (c->fd < 0)
            return -1;
        off += len + 1;
    }
    return (long)off;
}

/* --ws: one server frame; -1: c is gone. */
static int ws_frame_in(struct engine *e, struct conn *c, int op, const char *p, size_t n)
{
    char *d;
    switch (op) {
    case WS_OP_TEXT: handle_line(e, c, p, n); break;
    case WS_OP_PING:
        if ((d = reserve_frame(e, c, WS_OP_PONG, n)) != NULL)
            memcpy(d, p, n);
        break;
    case WS_OP_PONG: break;
    case WS_OP_CLOSE: conn_lost(e, c, 0); break;
    default: engine_fail(e, c, E_PROTOCOL, "unexpected websocket frame"); break;
    }
    return c->fd < 0 ? -1 : 0;
}

/* --ws: handle the 101, then the whole frames in p[0..n); returns the bytes
 * used, -1: c is gone. */
static long ws_frames(struct engine *e, struct conn *c, const char *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        long k;
        if (c->ws == WSC_HANDSHAKE) {
            k = ws_upgrade_answer(p + off, n - off);
            if (k > 0) {
                c->ws = WSC_OPEN;
                off += (size_t)k;
                conn_connected(e, c);
                if (c->fd < 0)
                    return -1;
                continue;
            }
        } else {
            int op;
            size_t po, pl;
            bool masked;
            k = ws_frame_parse(p + off, n - off, &op, &po, &pl, &masked);
            if (k > 0 && !masked) {
                off += (size_t)k;
                if (ws_frame_in(e, c, op, p + off - (size_t)k + po, pl) < 0)
                    return -1;
                continue;
            }
            if (k > 0)
                k = -1; /* a server never masks */
        }
        if (k < 0) {
            engine_fail(e, c, E_PROTOCOL,
                        c->ws == WSC_HANDSHAKE ? "websocket upgrade refused"
                                               : "bad websocket frame");
            return -1;
        }
        break; /* incomplete */
    }
    return (long)off;
}

/*
 * Bytes read from c: joined to the partial line or frame kept in c->in, the
 * whole ones handled, the rest kept in c->in for the next read (c->in is
 * freed when empty in a --lean run).  -1: c is gone.
 */
static int conn_input(struct engine *e, struct conn *c, const char *p, size_t n)
{
    const char *over =
        c->ws ? "server frame over the input limit" : "server line over the input limit";
    if (c->inlen) {
        if (grow(&c->in, &c->incap, (size_t)c->inlen + n, BENCH_IN_MAX, BENCH_RBUF_BYTES) < 0) {
            engine_fail(e, c, E_PROTOCOL, over);
            return -1;
        }
        memcpy(c->in + c->inlen, p, n);
        c->inlen += (uint32_t)n;
        p = c->in;
        n = c->inlen;
    }
    long used = c->ws ? ws_frames(e, c, p, n) : conn_lines(e, c, p, n);
    if (used < 0)
        return -1;
    size_t off = (size_t)used, left = n - off;
    if (p == c->in) {
        if (left && off)
            memmove(c->in, c->in + off, left);
        c->inlen = (uint32_t)left;
    } else if (left) {
        if (grow(&c->in, &c->incap, left, BENCH_IN_MAX, BENCH_RBUF_BYTES) < 0) {
            engine_fail(e, c, E_PROTOCOL, over);
            return -1;
        }
        memcpy(c->in, p + off, left);
        c->inlen = (uint32_t)left;
    }
    if (c->inlen == 0 && e->lean && c->in) {
        free(c->in);
        c->in = NULL;
        c->incap = 0;
    }
    return 0;
}

static void conn_readable(struct engine *e, struct conn *c)
{
    for (int round = 0; round < BENCH_READ_ROUNDS; round++) {
        ssize_t r = recv(c->fd, e->rbuf, sizeof e->rbuf, 0);
        if (r > 0) {
            e->now = now_ns();
            if (conn_input(e, c, e->rbuf, (size_t)r) < 0)
                return;
            if ((size_t)r < sizeof e->rbuf)
                break;
            continue;
        }
        if (r == 0) {
            conn_lost(e, c, 0);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        conn_lost(e, c, errno);
        return;
    }
    if (c->outlen > c->outoff)
        conn_flush(e, c);
}

static void dispatch(struct engine *e, const struct epoll_event *ev)
{
    uint32_t idx = (uint32_t)ev->data.u64;
    uint16_t gen = (uint16_t)(ev->data.u64 >> 32);

    if (idx >= e->nconns)
        return;
    struct conn *c = &e->conns[idx];
    if (c->fd < 0 || c->gen != gen)
        return; /* closed earlier in this batch */
    if (c->state == CS_CONNECTING) {
        connect_done(e, c);
        return;
    }
    if (ev->events & EPOLLOUT)
        conn_flush(e, c);
    if (c->fd >= 0 && (ev->events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        conn_readable(e, c);
}

/* ---- loop --------------------------------------------------------------- */

static void engine_tick(struct engine *e)
{
    e->last_tick = e->now;
    if (e->ops.tick)
        e->ops.tick(e);
    engine_publish(e);
    if (e->index == 0)
        progress_tick(e->now);
}

int engine_run(struct engine *e, engine_done_fn done, uint64_t deadline)
{
    struct epoll_event ev[BENCH_MAX_EVENTS];

    for (;;) {
        e->now = now_ns();
        run_restarts(e);
        engine_pump(e);
        flush_dirty(e);
        if (done && done(e))
            return RUN_DONE;
        /* a first SIGINT ends the measurement; drains stop at a second one */
        if (bench_interrupted > (e->draining ? 1 : 0))
            return RUN_INTERRUPTED;
        if (e->now >= deadline)
            return RUN_DEADLINE;
        if (e->now - e->last_tick >= e->tick_ns) {
            engine_tick(e);
            flush_dirty(e);
        }
        uint64_t wait = e->tick_ns - (e->now - e->last_tick);
        if (deadline - e->now < wait)
            wait = deadline - e->now;
        int ms = (int)((wait + NS_PER_MS - 1) / NS_PER_MS);
        if (e->nrestart > 0)
            ms = 0; /* connections to start again: do not sleep until the tick */
        int n = epoll_wait(e->ep, ev, BENCH_MAX_EVENTS, ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "qchat-bench: epoll_wait: %s\n", strerror(errno));
            return RUN_ERROR;
        }
        e->now = now_ns();
        for (int i = 0; i < n; i++)
            dispatch(e, &ev[i]);
    }
}
