/*
 * conn.h - one client connection inside a worker.
 *
 * A connection has a slot (its index in the worker's table, published in the
 * online table), an input side (bytes of a request not complete yet) and an
 * output side (bytes not yet written to the socket).  Chats appended to the
 * output carry a delivery mark: once the socket has taken the bytes the
 * mark's origin is told the chat is safe; if the connection dies first, the
 * chat is stored offline for the session's user and the origin told so.
 */
#ifndef QCHAT_SERVER_CONN_H
#define QCHAT_SERVER_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "common/buf.h"
#include "common/frame.h"
#include "common/loop.h"
#include "common/proto.h"

struct worker;
struct conn;

/*
 * How bytes move on a connection's socket.  The default is plain TCP
 * (conn_tcp); another listener (a WebSocket endpoint) sets its own with
 * conn_set_transport, and keeps every other part of a connection: request
 * framing, the output queue, delivery marks, closing.  read returns what
 * recv(2) would (application bytes: a transport that unwraps frames returns
 * their payload), write what send(2) would for raw output bytes.
 */
struct conn_transport {
    const char *name;
    ssize_t (*read)(struct conn *c, void *buf, size_t cap);
    ssize_t (*write)(struct conn *c, const void *p, size_t n);
    /* Optional (a framing transport, ws_conn.c); NULL for TCP: */
    void (*feed)(struct conn *c, const char *p, size_t n); /* bytes read, instead of
                                                               the request framing */
    int (*flush)(struct conn *c);                 /* own bytes: 1 while some wait, -1 error */
    void (*closing)(struct conn *c, bool failed); /* a graceful close starts */
    void (*release)(struct conn *c);              /* the connection is freed */
};
extern const struct conn_transport conn_tcp;

enum conn_state {
    CONN_OPEN = 0, /* reading requests */
    CONN_CLOSING,  /* error sent or kicked: flush, half-close, drain, close */
    CONN_DEAD,     /* closed; freed at the end of the loop turn */
};

/* TYPING_MSG: conversations remembered per connection for its rate limit (service_log.c). */
#define CONN_TYPING_SLOTS 4

/* A chat in the output buffer whose delivery someone waits for. */
struct out_mark {
    uint64_t start, end; /* absolute output offsets [start, end) incl. '\n' */
    int32_t uid;         /* recipient: whose offline queue takes it on failure */
    uint32_t origin;     /* worker index that waits (may be this one) */
    uint32_t token;      /* that worker's handle: pending request or hand-off */
    char *stash;         /* login reply: the offline messages it carries,
                               one per line, restored if it is never written */
};

struct recover_state;

struct conn {
    int fd;
    struct loop_source src; /* fd in the worker's loop */
    struct worker *w;
    const struct conn_transport *tr; /* conn_tcp unless a listener set another */
    void *tr_state;                  /* the transport's own per-connection state */
    uint32_t slot;
    uint32_t cgen; /* connection generation: stale handles fail */
    uint8_t state;
    bool dirty;          /* on the worker's flush list */
    bool presence;       /* session asked for presence notices */
    bool want_write;     /* EPOLLOUT armed */
    bool overflow;       /* output cap exceeded: close as a slow reader */
    bool half_closed;    /* shutdown(SHUT_WR) done while CLOSING */
    bool awaiting_proxy; /* server.proxy_protocol: the PROXY header comes first */
    bool ip_counted;     /* counted in the per-address connection table */
    bool prelogin;       /* ... and among its connections not logged in yet */
    bool busy;           /* a request is being finished off the loop (hashing):
                                   later requests wait in held, in order */
    bool receipts;       /* session asked for RECEIPT_MSG pushes (LOGIN "receipts") */
    bool typing;         /* session asked for TYPING_MSG pushes (LOGIN "typing") */

    int32_t uid;                    /* session user, 0 before login */
    char token[QC_TOKEN_MAX + 1];   /* the session's login token ("": none), for LOGINOUT revoke */
    uint32_t sgen;                  /* session generation in the online table, 0: none */
    char device[QC_DEVICE_MAX + 1]; /* the session's device ("default" when unnamed) */
    bool device_named;              /* the login named it */
    int64_t since_ms;               /* login time, epoch ms (the devices list, the registry) */
    char name[QC_NAME_MAX + 1];

    struct frame_reader *fr; /* own parser state while a request is incomplete */
    struct buf held;         /* input received while busy, not parsed yet */
    struct buf out;          /* output from absolute offset out_base */
    uint64_t out_base;       /* absolute offset of buf_head(&out) */
    uint64_t out_written;    /* bytes the socket has taken so far */
    uint64_t exempt_start;   /* the latest login reply starts here ... */
    uint64_t exempt_end;     /* ... and ends here: only it is not counted against the cap */
    uint64_t hold_at;        /* with hold: where the login reply goes */
    bool hold;               /* login reply being gathered: output waits, see conn_hold */
    bool nul_ended;          /* the request being handled was followed by a NUL */
    bool legacy;             /* the seed's client: see conn_legacy_shape */
    int64_t pace_until;      /* legacy: no write before this (ms, CLOCK_MONOTONIC) */
    struct out_mark *marks;  /* FIFO of chats in out */
    uint32_t marks_head, marks_len, marks_cap;

    int64_t deadline;      /* ms (CLOCK_MONOTONIC): login or drain deadline, 0: none */
    int64_t last_active;   /* ms of the last request */
    double tokens;         /* request rate limiter bucket */
    int64_t tokens_ms;     /* when the bucket was last filled */
    uint32_t ip_hash;      /* source address, for per-address limits */
    uint32_t rate_strikes; /* requests refused in a row by the rate limit */
    /* TYPING_MSG rate limit (service_log.c): the conversations last typed to, and when */
    int64_t typing_conv[CONN_TYPING_SLOTS];
    int64_t typing_ms[CONN_TYPING_SLOTS];
    struct conn *dirty_next;
    struct conn *dead_next;
    struct conn *paced_next, *paced_prev; /* on the worker's paced list */
    bool paced;                           /* ... which it is on */
    /* cluster: the last cseq written per conversation, chats behind a fill (recover.c) */
    struct recover_state *recover;
};

/* Absolute output offset of the next byte appended. */
static inline uint64_t conn_out_end(const struct conn *c)
{
    return c->out_base + buf_used(&c->out);
}

struct conn *conn_open(struct worker *w, int fd);
/* Use transport tr (with its state) for c's bytes from now on. */
void conn_set_transport(struct conn *c, const struct conn_transport *tr, void *state);
/* The open connection holding session (uid, gen) in slot, or NULL. */
struct conn *conn_of_session(struct worker *w, int32_t uid, uint32_t slot, uint32_t gen);
/* The connection of uid's current session on this worker, or NULL. */
struct conn *conn_local_session(struct worker *w, int32_t uid);
/* Queue bytes (a whole reply ending in '\n'); schedules a flush. */
void conn_send(struct worker *w, struct conn *c, const void *p, size_t n);
/* Queue a chat payload (no trailing newline) with a delivery mark. */
void conn_send_chat(struct worker *w, struct conn *c, int32_t uid, const char *payload, size_t n,
                    uint32_t origin, uint32_t token);
/*
 * A login reply is being gathered off the loop while the session already
 * receives chats: hold c's output from here (nothing more is written) so
 * that the reply, when conn_send_stashed queues it, goes out before them.
 */
void conn_hold(struct worker *w, struct conn *c);
/* The reply will not come (login failed): write what was held. */
void conn_release(struct worker *w, struct conn *c);
/* Queue a login reply (at the hold point if c is held, then released);
   stash (the offline messages it carries, one per line, may be NULL)
   advances uid's delivered cursors once the reply is written.  Takes stash. */
void conn_send_stashed(struct worker *w, struct conn *c, int32_t uid, const void *p, size_t n,
                       char *stash);
/*
 * Legacy connections (the seed's client: requests end in NUL and carry no
 * seq) read one object per recv() into 1024 bytes: they get each object in
 * its own write(), CONN_LEGACY_GAP_MS apart, and chats in the seed's shape.
 * Copy the forwarded chat p (n bytes) into out without "ts" and "mid";
 * false if p is not such a chat or out of memory (then send p as is).
 */
#define CONN_LEGACY_GAP_MS 50
bool conn_legacy_shape(const char *p, size_t n, struct buf *out);
/* Output waits in the transport: write it at the end of the loop turn. */
void conn_want_flush(struct worker *w, struct conn *c);
/* Free a dead connection (end of the loop turn). */
void conn_free(struct worker *w, struct conn *c);
/* Write what the socket takes; completes marks.  -1 if the connection died. */
int conn_flush(struct worker *w, struct conn *c);
/* Parse and dispatch the requests in p[0..n) as if just read (fuzz target, tests). */
void conn_feed(struct worker *w, struct conn *c, const char *p, size_t n);
/* Read and dispatch requests (EPOLLIN). */
void conn_handle_input(struct worker *w, struct conn *c);
/* Send err (ACK 11, req 0), then half-close, drain and close. */
void conn_fail(struct worker *w, struct conn *c, int err);
/* Stop reading, flush, half-close, drain briefly, close. */
void conn_close_gracefully(struct worker *w, struct conn *c);
/* Count c (address known) as not logged in yet; false: its address has
   security.max_prelogin_per_ip such connections already (nothing counted). */
bool conn_count_prelogin(struct worker *w, struct conn *c);
/* c's session ended but it stays open: like a fresh connection, it has
   security.login_timeout to log in again and counts as waiting for a login
   (over security.max_prelogin_per_ip it gets errno 17 and is closed). */
void conn_await_login(struct worker *w, struct conn *c);
/* c logged in (or closes): no longer counted as waiting for a login. */
void conn_end_prelogin(struct worker *w, struct conn *c);
/* Close now: unflushed chats go offline, the session ends. */
void conn_close(struct worker *w, struct conn *c, const char *why);
/* The request that made c busy is finished: parse what was held, read again. */
void conn_resume(struct worker *w, struct conn *c);
/* Called by the loop for a connection that is CLOSING when input arrives / deadline passes. */
void conn_drain(struct worker *w, struct conn *c);

#endif
