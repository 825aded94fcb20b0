/*
 * conn.c - client connections: reading requests, queueing and writing
 * output, delivery marks, and the ways a connection ends.
 *
 * Input: bytes are fed to a frame reader as they arrive.  The worker's shared
 * reader serves every connection whose requests arrive whole; a connection
 * that leaves a request half-sent takes the reader's state with it (c->fr),
 * so a slow sender is never re-parsed and idle connections hold no parser.
 *
 * Output: replies and forwarded messages are appended to c->out and written
 * when the loop turn ends (mark_dirty), so everything a turn produced
 * for one client leaves in one write.  A chat carries a mark; a mark is
 * complete when the socket has taken its last byte.  Bytes of a mark that is
 * not complete stay in the buffer, so a connection that dies can still store
 * every unwritten chat offline, whole.
 *
 * Ending: conn_fail answers a request that killed the stream, then
 * half-closes and drains so the client reads the answer instead of a reset;
 * conn_close ends at once (peer gone, slow reader, shutdown).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "common/fatal.h"
#include "common/jsonw.h"
#include "common/log.h"
#include "common/net.h"
#include "server/conn.h"
#include "server/delivered.h"
#include "server/offline.h"
#include "server/proxy.h"
#include "server/worker.h"

#define CONN_READS_PER_EVENT 4    /* reads per wakeup before yielding */
#define CONN_DRAIN_MS        1000 /* how long a failed stream is drained */
#define CONN_DRAIN_BYTES     (256 * 1024)
#define CONN_MARKS_MIN       8

/* Output to write at the end of the loop turn: on the worker's flush list. */
static void mark_dirty(struct worker *w, struct conn *c)
{
    if (c->dirty || c->state == CONN_DEAD)
        return;
    c->dirty = true;
    c->dirty_next = w->dirty;
    w->dirty = c;
}

static void conn_event(void *ctx, uint32_t events);

static ssize_t tcp_read(struct conn *c, void *buf, size_t cap)
{
    return recv(c->fd, buf, cap, MSG_DONTWAIT);
}

static ssize_t tcp_write(struct conn *c, const void *p, size_t n)
{
    return send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
}

const struct conn_transport conn_tcp = { .name = "tcp", .read = tcp_read, .write = tcp_write };

void conn_set_transport(struct conn *c, const struct conn_transport *tr, void *state)
{
    c->tr = tr;
    c->tr_state = state;
}

struct conn *conn_open(struct worker *w, int fd)
{
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->fd = fd;
    c->w = w;
    c->tr = &conn_tcp;
    c->cgen = ++w->next_cgen;
    buf_init(&c->out);
    c->last_active = w->now_ms;
    c->tokens = w->cfg.request_burst;
    c->tokens_ms = w->now_ms;
    if (w->cfg.login_timeout > 0)
        c->deadline = w->now_ms + (int64_t)w->cfg.login_timeout * 1000;
    net_set_nodelay(fd);
    if (worker_take_slot(w, c, &c->slot) < 0) {
        free(c);
        return NULL;
    }
    if (loop_watch(&w->loop, &c->src, fd, EPOLLIN | EPOLLRDHUP, conn_event, c) < 0) {
        worker_release_slot(w, c->slot, c);
        free(c);
        return NULL;
    }
    w->stats->connections++;
    return c;
}

bool conn_count_prelogin(struct worker *w, struct conn *c)
{
    if (!guard_prelogin_open(w->guard, w->index, c->ip_hash, w->cfg.max_prelogin_per_ip)) {
        log_info("connection refused: security.max_prelogin_per_ip (%d) connections of an "
                 "address are waiting for a login",
                 w->cfg.max_prelogin_per_ip);
        return false;
    }
    c->prelogin = true;
    return true;
}

void conn_await_login(struct worker *w, struct conn *c)
{
    if (c->state != CONN_OPEN)
        return;
    if (w->cfg.login_timeout > 0)
        c->deadline = w->now_ms + (int64_t)w->cfg.login_timeout * 1000;
    if (!c->prelogin && !conn_count_prelogin(w, c))
        conn_fail(w, c, QC_ELIMIT);
}

void conn_end_prelogin(struct worker *w, struct conn *c)
{
    if (!c->prelogin)
        return;
    guard_prelogin_close(w->guard, w->index, c->ip_hash);
    c->prelogin = false;
}

struct conn *conn_of_session(struct worker *w, int32_t uid, uint32_t slot, uint32_t gen)
{
    struct conn *c = worker_conn(w, slot);
    if (c && c->state == CONN_OPEN && c->uid == uid && c->sgen == gen)
        return c;
    return NULL;
}

struct conn *conn_local_session(struct worker *w, int32_t uid)
{
    struct online_loc loc;
    if (!online_lookup(w->online, uid, &loc) || loc.worker != w->index)
        return NULL;
    return conn_of_session(w, uid, loc.slot, loc.gen);
}

void conn_want_flush(struct worker *w, struct conn *c)
{
    mark_dirty(w, c);
}

void conn_free(struct worker *w, struct conn *c)
{
    if (c->tr->release)
        c->tr->release(c);
    worker_release_slot(w, c->slot, c);
    worker_buf_give(w, &c->out);
    buf_free(&c->held);
    free(c->marks);
    free(c);
}

/*
 * Queued bytes counted against server.max_output_bytes: everything not yet
 * written, as queued (escaped), except what is left of the latest login
 * reply.  A reply carrying many offline messages may be larger than the cap,
 * and its reader is not slow; but only one reply is ever exempt, so logging
 * out and in again cannot make earlier output invisible (issue 14, item 2).
 */
static uint64_t counted_output(const struct conn *c)
{
    uint64_t queued = conn_out_end(c) - c->out_written;
    uint64_t from = c->out_written > c->exempt_start ? c->out_written : c->exempt_start;
    uint64_t exempt = c->exempt_end > from ? c->exempt_end - from : 0;
    return queued - exempt;
}

static void schedule_flush(struct worker *w, struct conn *c)
{
    if (counted_output(c) > (uint64_t)w->cfg.max_output_bytes)
        c->overflow = true;
    mark_dirty(w, c);
}

/* An idle connection has no output buffer: lend it one from the worker. */
static void ensure_output_buffer(struct worker *w, struct conn *c)
{
    if (c->out.data == NULL)
        c->out = worker_buf_take(w);
}

void conn_send(struct worker *w, struct conn *c, const void *p, size_t n)
{
    if (c->state == CONN_DEAD)
        return;
    ensure_output_buffer(w, c);
    if (buf_append(&c->out, p, n) < 0) {
        c->overflow = true; /* out of memory: treat as a slow reader */
        mark_dirty(w, c);
        return;
    }
    w->stats->msgs_out++;
    schedule_flush(w, c);
}

static struct out_mark *push_mark(struct conn *c)
{
    if (c->marks_head + c->marks_len == c->marks_cap) {
        if (c->marks_head > 0) {
            memmove(c->marks, c->marks + c->marks_head, c->marks_len * sizeof *c->marks);
            c->marks_head = 0;
        } else {
            uint32_t ncap = c->marks_cap ? c->marks_cap * 2 : CONN_MARKS_MIN;
            struct out_mark *m = realloc(c->marks, ncap * sizeof *m);
            if (m == NULL)
                return NULL;
            c->marks = m;
            c->marks_cap = ncap;
        }
    }
    return &c->marks[c->marks_head + c->marks_len++];
}

/* Append bytes with a mark; on failure the caller's origin hears at once. */
static void send_marked(struct worker *w, struct conn *c, int32_t uid, const char *p, size_t n,
                        bool newline, uint32_t origin, uint32_t token, char *stash)
{
    uint64_t start = conn_out_end(c);
    ensure_output_buffer(w, c);
    struct out_mark *m = c->state == CONN_OPEN ? push_mark(c) : NULL;
    if (m == NULL || buf_append(&c->out, p, n) < 0 ||
        (newline && buf_append_char(&c->out, '\n') < 0)) {
        if (m)
            c->marks_len--;
        /* Could not queue it: keep the message safe in offline storage. */
        int err = 0;
        if (stash)
            err = offline_keep_stash(w, uid, stash);
        else
            err = offline_keep(w, uid, p, n);
        free(stash);
        w->hooks.mark_done(w, origin, token, err);
        return;
    }
    /* Marks are a FIFO of disjoint, increasing ranges: completion relies on it. */
    qc_assert(c->marks_len < 2 || c->marks[c->marks_head + c->marks_len - 2].end <= start);
    m->start = start;
    m->end = conn_out_end(c);
    m->uid = uid;
    m->origin = origin;
    m->token = token;
    m->stash = stash;
    delivered_mark_queued(w, uid); /* a login of uid on another worker waits for it */
    w->stats->msgs_out++;
    schedule_flush(w, c);
}

/* Remove ,"key":INTEGER from b (a key with its comma cannot occur inside a JSON string). */
static void drop_int_field(struct buf *b, const char *key)
{
    size_t klen = strlen(key);
    char *p = buf_head(b), *end = p + buf_used(b);
    char *k = memmem(p, (size_t)(end - p), key, klen);
    if (k == NULL)
        return;
    char *q = k + klen;
    while (q < end && ((*q >= '0' && *q <= '9') || *q == '-'))
        q++;
    memmove(k, q, (size_t)(end - q));
    b->len -= (size_t)(q - k);
}

bool conn_legacy_shape(const char *p, size_t n, struct buf *out)
{
    if (n < 2 || p[0] != '{' || buf_append(out, p, n) < 0)
        return false;
    drop_int_field(out, ",\"ts\":");
    drop_int_field(out, ",\"mid\":");
    return true;
}

void conn_send_chat(struct worker *w, struct conn *c, int32_t uid, const char *payload, size_t n,
                    uint32_t origin, uint32_t token)
{
    if (c->legacy) {
        struct buf b = worker_buf_take(w);
        if (conn_legacy_shape(payload, n, &b)) {
            send_marked(w, c, uid, buf_head(&b), buf_used(&b), true, origin, token, NULL);
            worker_buf_give(w, &b);
            return;
        }
        worker_buf_give(w, &b);
    }
    send_marked(w, c, uid, payload, n, true, origin, token, NULL);
}

void conn_hold(struct worker *w, struct conn *c)
{
    (void)w;
    c->hold = true;
    c->hold_at = conn_out_end(c);
}

void conn_release(struct worker *w, struct conn *c)
{
    if (!c->hold)
        return;
    c->hold = false;
    mark_dirty(w, c);
}

/* Room for one mark at FIFO index i (relative to head), later ones moved up; NULL: no memory. */
static struct out_mark *insert_mark(struct conn *c, uint32_t i)
{
    if (push_mark(c) == NULL)
        return NULL;
    struct out_mark *at = &c->marks[c->marks_head + i];
    memmove(at + 1, at, (c->marks_len - 1 - i) * sizeof *at);
    return at;
}

/*
 * The login reply goes where the hold began: the chats queued since move
 * behind it (their marks shift by n).  Nothing after hold_at was written.
 */
static int insert_at_hold(struct worker *w, struct conn *c, int32_t uid, const char *p, size_t n,
                          char *stash)
{
    size_t rel = (size_t)(c->hold_at - c->out_base);
    struct buf nb = worker_buf_take(w);
    if (buf_append(&nb, buf_head(&c->out), rel) < 0 || buf_append(&nb, p, n) < 0 ||
        buf_append(&nb, buf_head(&c->out) + rel, buf_used(&c->out) - rel) < 0) {
        worker_buf_give(w, &nb);
        return -1;
    }
    uint32_t i = 0;
    while (i < c->marks_len && c->marks[c->marks_head + i].start < c->hold_at)
        i++;
    struct out_mark *m = stash ? insert_mark(c, i) : NULL;
    if (stash && m == NULL) {
        worker_buf_give(w, &nb);
        return -1;
    }
    for (uint32_t k = 0; k < c->marks_len; k++) {
        struct out_mark *x = &c->marks[c->marks_head + k];
        if (x != m && x->start >= c->hold_at) {
            x->start += n;
            x->end += n;
        }
    }
    if (m) {
        *m = (struct out_mark){ .start = c->hold_at,
                                .end = c->hold_at + n,
                                .uid = uid,
                                .origin = w->index,
                                .stash = stash };
        delivered_mark_queued(w, uid);
    }
    worker_buf_give(w, &c->out);
    c->out = nb;
    c->exempt_start = c->hold_at;
    c->exempt_end = c->hold_at + n;
    c->hold = false;
    w->stats->msgs_out++;
    schedule_flush(w, c);
    return 0;
}

void conn_send_stashed(struct worker *w, struct conn *c, int32_t uid, const void *p, size_t n,
                       char *stash)
{
    if (c->hold && c->state != CONN_DEAD) {
        ensure_output_buffer(w, c);
        if (insert_at_hold(w, c, uid, p, n, stash) == 0)
            return;
        c->hold = false; /* out of memory: the reply goes last */
    }
    c->exempt_start = conn_out_end(c);
    c->exempt_end = c->exempt_start + n;
    if (stash == NULL)
        conn_send(w, c, p, n);
    else
        send_marked(w, c, uid, p, n, false, w->index, 0, stash);
}

/* The login reply's offline messages (one per line) reached the socket. */
static void note_stash_delivered(struct worker *w, int32_t uid, const char *stash)
{
    for (const char *p = stash; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        delivered_note(w, uid, p, n);
        p += n + (nl != NULL);
    }
}

/* Marks whose last byte the socket took are complete: tell their origins. */
static void complete_written_marks(struct worker *w, struct conn *c)
{
    while (c->marks_len > 0 && c->marks[c->marks_head].end <= c->out_written) {
        struct out_mark m = c->marks[c->marks_head];
        c->marks_head++;
        c->marks_len--;
        if (m.stash == NULL)
            delivered_note(w, m.uid, buf_head(&c->out) + (m.start - c->out_base), m.end - m.start);
        else
            note_stash_delivered(w, m.uid, m.stash);
        delivered_mark_resolved(w, m.uid); /* after the notes: a waiting login counts them */
        free(m.stash);
        if (m.token)
            w->hooks.mark_done(w, m.origin, m.token, 0);
    }
    if (c->marks_len == 0)
        c->marks_head = 0;
}

/* Drop written bytes, but keep those of a chat only partly written. */
static void trim_output(struct worker *w, struct conn *c)
{
    uint64_t keep_from = c->out_written;
    if (c->marks_len > 0 && c->marks[c->marks_head].start < keep_from)
        keep_from = c->marks[c->marks_head].start;
    buf_consume(&c->out, keep_from - c->out_base);
    c->out_base = keep_from;
    if (buf_used(&c->out) == 0)
        worker_buf_give(w, &c->out); /* idle connections hold no output memory */
}

/* Input is watched unless a request is being finished; output while some waits. */
static void update_events(struct worker *w, struct conn *c)
{
    uint32_t ev = (c->busy ? 0 : EPOLLIN | EPOLLRDHUP) | (c->want_write ? EPOLLOUT : 0);
    loop_rewatch(&w->loop, &c->src, ev);
}

static void watch_output(struct worker *w, struct conn *c, bool on)
{
    if (c->want_write == on)
        return;
    c->want_write = on;
    update_events(w, c);
}

/* ---- legacy pacing: one object per write(), a gap between them ---- */

static int pace_fd = -1; /* one timerfd per worker process */
static struct loop_source pace_src;
static int64_t pace_armed_until; /* when it fires (ms), while w->paced is not empty */

static void pace_arm(struct worker *w);

static void unpace(struct worker *w, struct conn *c)
{
    if (!c->paced)
        return;
    if (c->paced_prev)
        c->paced_prev->paced_next = c->paced_next;
    else
        w->paced = c->paced_next;
    if (c->paced_next)
        c->paced_next->paced_prev = c->paced_prev;
    c->paced_next = c->paced_prev = NULL;
    c->paced = false;
}

/* A gap is over: those legacy connections write their next object. */
static void on_pace(void *ctx, uint32_t events)
{
    struct worker *w = ctx;
    uint64_t expirations;
    (void)events;
    if (read(pace_fd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
        log_warning("legacy pacing timer: %s", strerror(errno));
    for (struct conn *c = w->paced, *next; c; c = next) {
        next = c->paced_next;
        if (w->now_ms >= c->pace_until) {
            unpace(w, c);
            mark_dirty(w, c);
        }
    }
    pace_arm(w);
}

/* The timer fires at the end of the earliest gap on the paced list. */
static void pace_arm(struct worker *w)
{
    if (w->paced == NULL)
        return;
    if (pace_fd < 0) {
        pace_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (pace_fd < 0 || loop_watch(&w->loop, &pace_src, pace_fd, EPOLLIN, on_pace, w) < 0) {
            log_error("legacy pacing timer: %s", strerror(errno));
            if (pace_fd >= 0)
                close(pace_fd);
            pace_fd = -1;
            return;
        }
    }
    int64_t until = w->paced->pace_until;
    for (struct conn *c = w->paced->paced_next; c; c = c->paced_next)
        if (c->pace_until < until)
            until = c->pace_until;
    pace_armed_until = until;
    int64_t ms = until > w->now_ms ? until - w->now_ms : 1;
    struct itimerspec t = { .it_value = { .tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000L } };
    timerfd_settime(pace_fd, 0, &t, NULL);
}

/* c has output but must wait until pace_until: the timer resumes it. */
static void pace_later(struct worker *w, struct conn *c)
{
    if (c->paced)
        return;
    bool sooner = w->paced == NULL || c->pace_until < pace_armed_until;
    c->paced = true;
    c->paced_prev = NULL;
    c->paced_next = w->paced;
    if (w->paced)
        w->paced->paced_prev = c;
    w->paced = c;
    if (sooner)
        pace_arm(w);
}

/* Legacy: how much of the output may go in this write (up to one object's end). */
static size_t legacy_write_size(struct worker *w, struct conn *c, const char *p, size_t n)
{
    if (!c->legacy)
        return n;
    if (w->now_ms < c->pace_until) {
        pace_later(w, c);
        return 0;
    }
    const char *nl = memchr(p, '\n', n);
    return nl ? (size_t)(nl - p) + 1 : n;
}

int conn_flush(struct worker *w, struct conn *c)
{
    if (c->hold && c->state == CONN_OPEN)
        return 0; /* the login reply goes first: conn_send_stashed releases */
    while (c->out_written < conn_out_end(c)) {
        const char *p = buf_head(&c->out) + (c->out_written - c->out_base);
        size_t n = legacy_write_size(w, c, p, conn_out_end(c) - c->out_written);
        if (n == 0)
            break;
        ssize_t k = c->tr->write(c, p, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -1;
        }
        c->out_written += (uint64_t)k;
        if (c->legacy && (size_t)k == n && p[n - 1] == '\n') {
            c->pace_until = w->now_ms + CONN_LEGACY_GAP_MS; /* its own read(), then the next */
            if (c->out_written < conn_out_end(c))
                pace_later(w, c);
            break;
        }
    }
    int more = c->tr->flush ? c->tr->flush(c) : 0; /* the transport's own bytes */
    if (more < 0)
        return -1;
    complete_written_marks(w, c);
    trim_output(w, c);
    bool paced = c->legacy && w->now_ms < c->pace_until; /* the timer resumes it */
    watch_output(w, c, more > 0 || (c->out_written < conn_out_end(c) && !paced));
    if (c->state == CONN_CLOSING && !c->half_closed && !more && c->out_written == conn_out_end(c)) {
        shutdown(c->fd, SHUT_WR);
        c->half_closed = true;
    }
    return 0;
}

/* Bytes that never reached the client: chats and stashes go offline. */
static void store_unwritten_marks(struct worker *w, struct conn *c)
{
    while (c->marks_len > 0) {
        struct out_mark m = c->marks[c->marks_head++];
        c->marks_len--;
        int err;
        if (m.stash) {
            err = offline_keep_stash(w, m.uid, m.stash);
            free(m.stash);
        } else {
            const char *p = buf_head(&c->out) + (m.start - c->out_base);
            err = offline_keep(w, m.uid, p, m.end - m.start - 1); /* no '\n' */
        }
        delivered_mark_resolved(w, m.uid); /* back after the cursor: a waiting login reads it */
        if (m.token)
            w->hooks.mark_done(w, m.origin, m.token, err);
    }
    c->marks_head = 0;
}

void conn_close(struct worker *w, struct conn *c, const char *why)
{
    if (c->state == CONN_DEAD)
        return;
    /* One last attempt, then whatever is left is stored. */
    if (c->out_written < conn_out_end(c) && !c->overflow)
        conn_flush(w, c);
    if (c->marks_len > 0)
        log_info("conn %u: closing with %u unwritten chat(s) (%s); storing them offline", c->slot,
                 c->marks_len, why);
    /*
     * Stored while the session is still in the online table: a chat sent
     * after these can only be stored after them, so the queue keeps order.
     */
    store_unwritten_marks(w, c);
    unpace(w, c);
    if (c->sgen)
        w->hooks.session_closing(w, c);
    log_debug("conn %u: closed (%s)", c->slot, why);
    loop_unwatch(&w->loop, &c->src);
    close(c->fd);
    c->fd = -1;
    if (c->ip_counted)
        guard_conn_close(w->guard, w->index, c->ip_hash);
    conn_end_prelogin(w, c);
    if (c->fr) {
        frame_reader_free(c->fr);
        free(c->fr);
        c->fr = NULL;
    }
    c->state = CONN_DEAD;
    w->stats->connections--;
    c->dead_next = w->dead;
    w->dead = c;
}

static void close_gracefully(struct worker *w, struct conn *c, bool failed)
{
    if (c->state != CONN_OPEN)
        return;
    if (c->tr->closing)
        c->tr->closing(c, failed);
    if (c->sgen)
        w->hooks.session_closing(w, c);
    c->state = CONN_CLOSING;
    c->deadline = w->now_ms + CONN_DRAIN_MS;
    mark_dirty(w, c);
}

void conn_close_gracefully(struct worker *w, struct conn *c)
{
    close_gracefully(w, c, false);
}

void conn_fail(struct worker *w, struct conn *c, int err)
{
    if (c->state != CONN_OPEN)
        return;
    log_info("conn %u: %s; closing the stream", c->slot, qc_strerror(err));
    w->hooks.stream_error(w, c, err);
    close_gracefully(w, c, true);
}

void conn_drain(struct worker *w, struct conn *c)
{
    char sink[4096];
    for (size_t total = 0; total < CONN_DRAIN_BYTES;) {
        ssize_t n = c->tr->read(c, sink, sizeof sink);
        if (n > 0) {
            total += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EINTR))
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        break; /* EOF or error: the client is done */
    }
    conn_close(w, c, "drained");
}

/* Separators between objects: whitespace and the seed client's NUL. */
static size_t skip_separators(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r' || p[i] == '\0'))
        i++;
    return i;
}

/* This connection keeps the parser state of its incomplete request. */
static int keep_parser(struct worker *w, struct conn *c)
{
    struct frame_reader *fr = malloc(sizeof *fr);
    if (fr == NULL)
        return -1;
    *fr = w->fr;
    if (frame_reader_init(&w->fr, (size_t)w->cfg.max_message_bytes) < 0) {
        w->fr = *fr;
        free(fr);
        return -1;
    }
    c->fr = fr;
    return 0;
}

static void release_parser(struct conn *c)
{
    frame_reader_free(c->fr);
    free(c->fr);
    c->fr = NULL;
}

/* Parse and dispatch every complete request in p[0..n). */
static void feed_requests(struct worker *w, struct conn *c, const char *p, size_t n)
{
    while (n > 0 && c->state == CONN_OPEN) {
        if (c->busy) {
            /* Keep the rest, in order, for when the busy request is done. */
            if (buf_append(&c->held, p, n) < 0)
                conn_close(w, c, "out of memory");
            return;
        }
        struct frame_reader *fr = c->fr ? c->fr : &w->fr;
        if (!fr->in_object) {
            size_t skip = skip_separators(p, n);
            p += skip;
            n -= skip;
            if (n == 0)
                break;
        }
        size_t used = 0;
        struct json_object *req = NULL;
        enum frame_status st = frame_read(fr, p, n, &used, &req);
        p += used;
        n -= used;
        switch (st) {
        case FRAME_OBJECT:
            c->nul_ended = n > 0 && *p == '\0';
            w->hooks.request(w, c, req);
            json_object_put(req);
            if (c->busy && c->state == CONN_OPEN)
                update_events(w, c); /* stop reading until it is done */
            break;
        case FRAME_NEED_MORE:
            if (c->fr == NULL && keep_parser(w, c) < 0) {
                conn_close(w, c, "out of memory");
                return;
            }
            return;
        case FRAME_MALFORMED: conn_fail(w, c, QC_EMALFORMED); return;
        case FRAME_TOO_BIG: conn_fail(w, c, QC_ETOOBIG); return;
        }
    }
    if (c->fr && !c->fr->in_object)
        release_parser(c);
}

void conn_feed(struct worker *w, struct conn *c, const char *p, size_t n)
{
    feed_requests(w, c, p, n);
}

void conn_resume(struct worker *w, struct conn *c)
{
    c->busy = false;
    if (c->state != CONN_OPEN)
        return;
    if (buf_used(&c->held) > 0) {
        struct buf held = c->held;
        buf_init(&c->held);
        feed_requests(w, c, buf_head(&held), buf_used(&held));
        buf_free(&held);
    }
    if (!c->busy && c->state == CONN_OPEN)
        update_events(w, c);
}

/*
 * server.proxy_protocol: the connection starts with a PROXY header naming the
 * client.  Returns how many of p[0..n) it took (the rest are requests), or -1
 * when the connection was refused or is still waiting for the header.
 */
static ssize_t take_proxy_header(struct worker *w, struct conn *c, const char *p, size_t n)
{
    size_t before = buf_used(&c->held);
    size_t want = PROXY_V1_MAX - before < n ? PROXY_V1_MAX - before : n;
    if (buf_append(&c->held, p, want) < 0) {
        conn_close(w, c, "out of memory");
        return -1;
    }
    struct sockaddr_storage addr;
    int used = proxy_parse_v1(buf_head(&c->held), buf_used(&c->held), &addr);
    if (used == 0)
        return -1; /* more to come */
    if (used < 0) {
        log_info("conn %u: no valid PROXY header (server.proxy_protocol is on); closing", c->slot);
        buf_free(&c->held);
        conn_close(w, c, "bad PROXY header");
        return -1;
    }
    c->awaiting_proxy = false;
    buf_free(&c->held);
    if (addr.ss_family != AF_UNSPEC)
        c->ip_hash = guard_addr_hash(&addr);
    if (!guard_conn_open(w->guard, w->index, c->ip_hash, w->cfg.max_conns_per_ip)) {
        log_info("connection refused: server.max_conns_per_ip (%d) reached for an address",
                 w->cfg.max_conns_per_ip);
        conn_fail(w, c, QC_ELIMIT);
        return -1;
    }
    c->ip_counted = true;
    if (!conn_count_prelogin(w, c)) {
        conn_fail(w, c, QC_ELIMIT);
        return -1;
    }
    return (ssize_t)((size_t)used - before);
}

void conn_handle_input(struct worker *w, struct conn *c)
{
    for (int i = 0; i < CONN_READS_PER_EVENT && c->state == CONN_OPEN && !c->busy; i++) {
        ssize_t n = c->tr->read(c, w->rbuf, w->rbuf_size);
        if (n > 0) {
            c->last_active = w->now_ms;
            ssize_t skip = 0;
            if (c->awaiting_proxy && (skip = take_proxy_header(w, c, w->rbuf, (size_t)n)) < 0)
                return;
            if (c->tr->feed)
                c->tr->feed(c, w->rbuf + skip, (size_t)(n - skip));
            else
                feed_requests(w, c, w->rbuf + skip, (size_t)(n - skip));
            if ((size_t)n < w->rbuf_size)
                return;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        conn_close(w, c, n == 0 ? "client closed" : strerror(errno));
        return;
    }
}

/* The loop's callback: output writable, input or hang-up. */
static void conn_event(void *ctx, uint32_t events)
{
    struct conn *c = ctx;
    struct worker *w = c->w;
    if (c->state == CONN_DEAD)
        return; /* closed earlier in this batch; freed before the loop sleeps */
    if (c->busy && (events & (EPOLLHUP | EPOLLERR))) {
        conn_close(w, c, "connection lost");
        return;
    }
    if ((events & EPOLLOUT) && conn_flush(w, c) < 0) {
        conn_close(w, c, strerror(errno));
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        if (c->state == CONN_OPEN && !c->busy)
            conn_handle_input(w, c);
        else if (c->state == CONN_CLOSING)
            conn_drain(w, c);
    }
}
