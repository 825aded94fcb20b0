/*
 * bench.h - qchat-bench internals shared by its source files.
 *
 * qchat-bench is the load generator for qchatd and for the relay_ref
 * yardstick.  One epoll engine per thread drives many non-blocking client
 * connections; it frames the server's newline-terminated JSON objects itself
 * and pulls the few fields it needs out with a small scanner, so a message
 * costs no allocation and no JSON tree.  Each mode (reg, pingpong, login,
 * conns, group, offline, history) is a set of callbacks on that engine plus a driver
 * that runs its phases: users, connect + login, measure, drain, report.
 */
#ifndef QCHAT_BENCH_BENCH_H
#define QCHAT_BENCH_BENCH_H

#include <netdb.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define NS_PER_SEC 1000000000ULL
#define NS_PER_MS  1000000ULL
#define NS_PER_US  1000ULL

#define BENCH_RBUF_BYTES        (64 * 1024) /* one read() per engine, shared */
#define BENCH_READ_ROUNDS       4           /* full reads per event before moving on */
#define BENCH_IN_MAX            (32u << 20) /* longest server line (login ack with history) */
#define BENCH_OUT_MAX           (16u << 20) /* unsent bytes per connection before giving up */
#define BENCH_OUT_MIN           512         /* first output allocation */
#define BENCH_MAX_EVENTS        512
#define BENCH_TICK_NS           (100 * NS_PER_MS)
#define BENCH_RATE_TICK_NS      (1 * NS_PER_MS) /* tick when sends are paced by --rate */
#define BENCH_MAX_SOURCES       64
#define BENCH_MAX_THREADS       64
#define BENCH_WINDOW            64  /* in flight per pair / sender: bits in a seqwin */
#define BENCH_ERR_REPORTS       5   /* error messages printed per class and engine */
#define BENCH_LINE_MAX          512 /* a request built with printf */
#define BENCH_LOGIN_CONCURRENCY 256 /* default connects + logins at once */
#define BENCH_REG_CONCURRENCY   16  /* default registrations at once */
#define BENCH_SRV_ERRNO_MAX     32  /* server errno values counted one by one */

enum bench_mode {
    MODE_REG,
    MODE_PINGPONG,
    MODE_LOGIN,
    MODE_CONNS,
    MODE_GROUP,
    MODE_OFFLINE,
    MODE_HISTORY
};

/* ---- options ---------------------------------------------------------- */

struct endpoint {
    struct sockaddr_storage addr;
    socklen_t len;
    char name[NI_MAXHOST + 16]; /* "host:port" for messages */
};

struct bench_opts {
    enum bench_mode mode;
    const char *mode_name;
    struct endpoint ep[2];
    int nep; /* 2 with --host2/--port2 */
    struct sockaddr_storage src[BENCH_MAX_SOURCES];
    socklen_t srclen[BENCH_MAX_SOURCES];
    int nsrc;

    long users;   /* reg: accounts to create */
    long pairs;   /* pingpong */
    long loops;   /* login */
    long conns;   /* conns */
    long members; /* group */
    int senders;  /* group */
    int inflight; /* pingpong: per pair; group: per sender */
    int size;     /* chat text bytes */
    long count;   /* messages per pair / sender, 0: until duration */
    double rate;  /* group: messages/s over all senders, 0: window */
    long verify;  /* conns: sessions checked after the hold, -1: all */
    long groupid; /* group: join this group instead of creating one */
    long backlog; /* offline: messages stored before each login */
    long rounds;  /* offline: fill + login rounds */
    int limit;    /* history: messages per page */
    int threads;
    int concurrency; /* connects + logins (or registrations) at once, 0: default */

    double duration, timeout, drain, stall, heartbeat, deadline;
    double spread; /* login --storm: reconnects spread over 0..spread s */

    const char *ids_file, *out_file, *ready_file, *go_file;
    const char *password, *prefix;
    bool synthetic;
    long id_base;
    long skip; /* ids file entries to pass over */
    bool json, quiet, progress, seq, reconnect;
    bool tokens; /* login: log in with tokens (one password login each first) */
    bool storm;  /* login --tokens: one reconnect per loop, all dropped at once */
    bool ws;     /* --ws: WebSocket clients (GET /ws on the port) instead of plain TCP */
};

/* ---- users ------------------------------------------------------------ */

struct users {
    uint32_t n;
    int32_t *id;     /* -1: registration failed */
    const char **pw; /* JSON-escaped password text */
    char *text;      /* storage the pw pointers point into */
};

int users_synthetic(struct users *u, uint32_t n, long base, const char *password);
/* need users from an ids file, after skipping its first skip entries */
int users_load(struct users *u, const char *path, uint32_t skip, uint32_t need);
int users_save(const struct users *u, const char *path, const char *password);
int users_alloc(struct users *u, uint32_t n, const char *password);
void users_free(struct users *u);
/* Append s to dst (cap bytes) as JSON string content; -1 if it does not fit. */
int json_escape(char *dst, size_t cap, const char *s);

/* ---- statistics ------------------------------------------------------- */

#define HIST_SUB_BITS 7
#define HIST_HALF     (1u << (HIST_SUB_BITS - 1))
#define HIST_BUCKETS  ((64 - HIST_SUB_BITS + 2) * HIST_HALF)

/* Log-linear histogram of nanoseconds: under 1/64 relative error, fixed size. */
struct hist {
    uint64_t count, sum, min, max;
    uint64_t b[HIST_BUCKETS];
};

void hist_init(struct hist *h);
void hist_add(struct hist *h, uint64_t v);
void hist_merge(struct hist *into, const struct hist *from);
uint64_t hist_percentile(const struct hist *h, double pct);

enum err_class {
    E_CONNECT,    /* connect() failed or was refused */
    E_LOGIN,      /* login refused or connection lost before the ack */
    E_REG,        /* registration refused or lost */
    E_DISCONNECT, /* server closed an established session */
    E_STALL,      /* a pair / loop / sender made no progress for --stall */
    E_LOST,       /* sent, never received */
    E_MISROUTED,  /* received by the wrong user, or from the wrong sender */
    E_DUP,        /* received twice */
    E_REORDER,    /* received after a later one of the same stream */
    E_SERVER,     /* ACK with errno != 0 */
    E_KICKED,     /* session taken over (msgid 12) */
    E_PROTOCOL,   /* unparseable or unexpected reply, output backlog */
    E_TIMEOUT,    /* a setup step did not finish in --timeout */
    E_COUNT
};

extern const char *const err_names[E_COUNT]; /* "connfail", "lost", ... */

struct stats {
    uint64_t sent;   /* chats / requests written in the measurement */
    uint64_t msgs;   /* deliveries (pingpong, group, conns) */
    uint64_t window; /* deliveries / logins / regs in the measured window */
    uint64_t acks, logins, regs;
    uint64_t err[E_COUNT];
    uint64_t srv_errno[BENCH_SRV_ERRNO_MAX];
    struct hist lat;
};

void stats_init(struct stats *s);
void stats_merge(struct stats *into, const struct stats *from);
uint64_t stats_errors(const struct stats *s);

/* ---- the small JSON scanner and message tags ------------------------- */

enum {
    JF_MSGID = 1u << 0,
    JF_ERRNO = 1u << 1,
    JF_ID = 1u << 2,
    JF_TOID = 1u << 3,
    JF_GROUPID = 1u << 4,
    JF_REQ = 1u << 5,
    JF_MSG = 1u << 6,
    JF_USERID = 1u << 7
};

struct jfields {
    unsigned has;
    long msgid, err, id, toid, groupid, req, userid;
    const char *msg; /* raw string content (not unescaped) */
    size_t msglen;
};

/* Scan one top-level object; 0, or -1 if it is not a well-formed object. */
int jscan(const char *s, size_t n, struct jfields *f);
/* The raw value of top-level member key (a string without its quotes); 0 or -1. */
int jfind(const char *s, size_t n, const char *key, const char **v, size_t *vn);
/*
 * Iterate the string items of the array s[0..n): *pos starts at 0; each call
 * gives the next item's raw content.  1: an item, 0: the end, -1: malformed
 * (or an item that is not a string).
 */
int jarray_next(const char *s, size_t n, size_t *pos, const char **v, size_t *vn);
/* In the raw content of a string holding a serialized object: string member key. */
int jescaped_string_field(const char *s, size_t n, const char *key, const char **v, size_t *vn);

/*
 * A chat text starts with a tag: kind letter, two 32-bit numbers and the
 * CLOCK_MONOTONIC send time in ns, all fixed-width hex, then '.' padding.
 */
#define TAG_LEN 33
void tag_write(char *p, char kind, uint32_t a, uint32_t b, uint64_t ts);
int tag_read(const char *p, size_t n, char kind, uint32_t *a, uint32_t *b, uint64_t *ts);
void hex32_write(char *p, uint32_t v);

/* A request prebuilt once, sent by copy + tag write (+ seq write). */
struct msgtmpl {
    char *buf;
    uint32_t len, tag_off, seq_off; /* seq_off 0: no seq field */
};

/* head is the object up to the text, e.g. {"msgid":5,"id":1,"toid":2, */
int tmpl_init(struct msgtmpl *t, const char *head, int size, bool with_seq);
void tmpl_free(struct msgtmpl *t);

/*
 * Receive window of one in-order stream (seq numbers from 0): base is the
 * lowest seq not yet received, mask bit i says base + i arrived, top is one
 * past the highest seq received.
 */
struct seqwin {
    uint32_t base, top;
    uint64_t mask;
};

enum { SEQ_NEW = 0, SEQ_LATE = 1, SEQ_DUP = -1 };
int seqwin_add(struct seqwin *w, uint32_t seq);

/* ---- engine ----------------------------------------------------------- */

enum conn_state {
    CS_IDLE, /* not started */
    CS_CONNECTING,
    CS_OPEN,  /* connected, nothing pending */
    CS_REG,   /* registration request pending */
    CS_LOGIN, /* login request pending */
    CS_READY, /* logged in */
    CS_CLOSED
};

struct conn {
    int fd;
    uint8_t state;
    uint8_t side;      /* endpoint index */
    uint8_t dirty;     /* on the engine's flush list */
    uint8_t armed_out; /* EPOLLOUT requested */
    uint8_t settled;   /* first connect + login finished (either way) */
    uint8_t role;      /* mode's use */
    uint16_t gen;      /* bumped at each connect: stale events are ignored */
    int32_t uid;
    uint32_t user;   /* index in the users table */
    uint32_t slot;   /* mode's index: pair, loop, member */
    uint64_t t_req;  /* when the pending request was sent */
    uint64_t t_conn; /* when the connection was started */
    uint8_t ws;      /* --ws: enum wsc_phase */
    uint32_t wsmask; /* --ws: offset in out of the first frame not masked yet */
    char *in;
    uint32_t inlen, incap;
    char *out;
    uint32_t outlen, outoff, outcap;
};

/* ---- WebSocket clients (--ws, wsframe.c) -------------------------------- */

enum wsc_phase { WSC_NONE = 0, WSC_HANDSHAKE, WSC_OPEN };
enum ws_opcode { WS_OP_TEXT = 0x1, WS_OP_CLOSE = 0x8, WS_OP_PING = 0x9, WS_OP_PONG = 0xA };

/* The upgrade request for GET /ws on hostport; its length, -1 if cap is too small. */
int ws_upgrade_request(char *dst, size_t cap, const char *hostport);
/* Length of a complete 101 answer head in p[0..n), 0: incomplete, -1: refused or bad. */
long ws_upgrade_answer(const char *p, size_t n);
/* Bytes of a client frame's header (with its mask key) for a payload of this size. */
size_t ws_frame_header_len(size_t payload);
/* Write a masked frame header (FIN, opcode, length, key); returns its length. */
size_t ws_frame_header(char *dst, int opcode, size_t payload, uint32_t key);
/* The frame at p[0..n): total length, 0: incomplete, -1: malformed or fragmented. */
long ws_frame_parse(const char *p, size_t n, int *opcode, size_t *off, size_t *len, bool *masked);
/* Mask, in place, the payloads of complete client frames in p[0..n). */
void ws_mask_frames(char *p, size_t n);

struct engine;

struct engine_ops {
    /* connected: default sends LOGIN */
    void (*connected)(struct engine *e, struct conn *c);
    /* LOGIN ack arrived (err 0: ok); the engine already updated state */
    void (*logged_in)(struct engine *e, struct conn *c, long err);
    /* any other line from the server */
    void (*line)(struct engine *e, struct conn *c, const char *p, size_t n,
                 const struct jfields *f);
    /* the server closed the connection or it failed (before the fd is closed) */
    void (*closed)(struct engine *e, struct conn *c);
    /* about every tick_ns */
    void (*tick)(struct engine *e);
};

struct engine {
    int ep;
    int index; /* thread number */
    const struct bench_opts *o;
    const struct users *users;
    struct conn *conns;
    uint32_t nconns, gbase; /* gbase: global number of conns[0] */
    uint32_t started, pending, ready, failed;
    uint32_t concurrency;
    uint32_t *dirty, ndirty;
    uint32_t *restart, nrestart; /* conns to connect again next iteration */
    struct engine_ops ops;
    void *ctx;
    uint64_t now, tick_ns, last_tick;
    bool lean; /* free idle buffers (many idle sessions) */
    bool measuring;
    bool draining; /* only a second SIGINT stops engine_run */
    struct stats st;
    const char *line; /* the server line being handled */
    size_t linelen;
    const uint64_t *pcount;         /* what the progress line counts */
    uint64_t pub_count, pub_errors; /* published for the progress line */
    uint32_t pub_ready;
    uint32_t reported[E_COUNT];
    uint32_t wsrand; /* --ws: mask keys (xorshift) */
    char rbuf[BENCH_RBUF_BYTES];
};

enum run_status { RUN_DONE, RUN_DEADLINE, RUN_INTERRUPTED, RUN_ERROR };

typedef bool (*engine_done_fn)(struct engine *e);

extern volatile sig_atomic_t bench_interrupted;

uint64_t now_ns(void);
struct engine *engine_new(const struct bench_opts *o, const struct users *u, uint32_t nconns,
                          uint32_t gbase, int index);
void engine_free(struct engine *e);
int engine_run(struct engine *e, engine_done_fn done, uint64_t deadline);
bool engine_settled(struct engine *e);
void engine_start(struct engine *e, struct conn *c);
void engine_drop(struct engine *e, struct conn *c);
/* Close c now and connect it again at the top of the next loop iteration. */
void engine_restart_later(struct engine *e, struct conn *c);
/* Close c now; the mode starts it again itself (engine_start). */
void engine_close(struct engine *e, struct conn *c);
void engine_fail(struct engine *e, struct conn *c, enum err_class why, const char *what);
void engine_error(struct engine *e, enum err_class why, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void engine_send_login(struct engine *e, struct conn *c);
/* Default handling of a line a mode did not expect: ACKs, kicks, presence. */
void engine_unexpected(struct engine *e, struct conn *c, const struct jfields *f);
char *conn_reserve(struct engine *e, struct conn *c, size_t n);
int conn_send(struct engine *e, struct conn *c, const void *p, size_t n);
int conn_printf(struct engine *e, struct conn *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int conn_send_tmpl(struct engine *e, struct conn *c, const struct msgtmpl *t, char kind, uint32_t a,
                   uint32_t b, uint32_t seq);
static inline uint32_t conn_index(const struct engine *e, const struct conn *c)
{
    return (uint32_t)(c - e->conns);
}

/* ---- threads, progress, results --------------------------------------- */

/* Run fn(arg + i * argsize) on n threads (the caller's thread is one of them). */
int run_threads(int n, void *arg, size_t argsize, void *(*fn)(void *));
/* Split total items over n threads: [*lo, *hi) for thread i. */
void split_range(uint64_t total, int n, int i, uint32_t *lo, uint32_t *hi);

void progress_setup(const struct bench_opts *o, struct engine **es, int n, const char *what);
void progress_phase(const char *phase);
void progress_tick(uint64_t now);
void progress_end(void);
void engine_publish(struct engine *e);

#define RESULT_MAX_FIELDS 16

struct rfield {
    const char *key;
    double v;
    int prec;
    const char *unit; /* text form only: "s", "/s" */
};

struct result {
    const char *mode;
    struct stats st;
    int nfields;
    struct rfield f[RESULT_MAX_FIELDS];
};

void result_init(struct result *r, const char *mode);
void result_add(struct result *r, const char *key, double v, int prec, const char *unit);
void result_print(const struct result *r, bool json);
int result_exit_code(const struct result *r);

/* ---- modes ------------------------------------------------------------ */

/* Register n users (ids filled in u, -1 on failure); st gets the counts. */
int reg_users(const struct bench_opts *o, struct users *u, struct stats *st, double *secs);
/* Users for a mode: --synthetic, --ids, or registered now (counted into st). */
int users_for_mode(const struct bench_opts *o, uint32_t n, struct users *u, struct stats *st);

int mode_reg(const struct bench_opts *o, struct result *r);
int mode_pingpong(const struct bench_opts *o, struct result *r);
int mode_login(const struct bench_opts *o, struct result *r);
int mode_conns(const struct bench_opts *o, struct result *r);
/* --ready-file: create it, holding the engines' ready count (conns.c) */
void bench_write_ready_file(const struct bench_opts *o, struct engine **es, int n);
/* --go-file: run the engine until the file exists, at most --timeout (conns.c) */
void bench_wait_for_go(struct engine *e);
int mode_group(const struct bench_opts *o, struct result *r);
int mode_offline(const struct bench_opts *o, struct result *r);
int mode_history(const struct bench_opts *o, struct result *r);

#endif
