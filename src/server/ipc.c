/*
 * ipc.c - the channel between qchatd's processes (see ipc.h): packet rules,
 * sending with a queue, reading into a handler table.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/config.h"
#include "common/fatal.h"
#include "common/log.h"
#include "server/ipc.h"

#define IPC_SOCKBUF     (4 * 1024 * 1024) /* room for bursts of hand-offs */
#define IPC_CORK_KEEP   (64 * 1024)       /* queue memory a corked link keeps between rounds */
#define IPC_FLUSH_BATCH 64                /* packets per sendmmsg */

/* What a packet of each type carries. */
struct ipc_rule {
    const char *name;
    size_t body;      /* size of the payload struct */
    size_t tail_unit; /* 0: no tail; else the tail is a whole number of these */
    bool fd;          /* a descriptor comes along */
};

static const struct ipc_rule rules[IPC_TYPE_COUNT] = {
    [IPC_DELIVER] = { "DELIVER", sizeof(struct ipc_deliver), 1, false },
    [IPC_CONFIRM] = { "CONFIRM", sizeof(struct ipc_confirm), 0, false },
    [IPC_KICK] = { "KICK", sizeof(struct ipc_session), 0, false },
    [IPC_NEW_PEER] = { "NEW_PEER", sizeof(struct ipc_new_peer), 0, true },
    [IPC_CONFIG] = { "CONFIG", sizeof(struct qc_config), 0, false },
    [IPC_KICK_USER] = { "KICK_USER", sizeof(struct ipc_user), 0, false },
    [IPC_SUB] = { "SUB", sizeof(struct ipc_sub), 0, false },
    [IPC_UNSUB] = { "UNSUB", sizeof(struct ipc_user), 0, false },
    [IPC_PUBLISH] = { "PUBLISH", sizeof(struct ipc_publish), 1, false },
    [IPC_PUBLISHED] = { "PUBLISHED", sizeof(struct ipc_published), 0, false },
    [IPC_NUMSUB] = { "NUMSUB", sizeof(struct ipc_token), sizeof(int32_t), false },
    [IPC_NUMSUB_REPLY] = { "NUMSUB_REPLY", sizeof(struct ipc_answer), 1, false },
    [IPC_SUBSCRIBED] = { "SUBSCRIBED", sizeof(struct ipc_answer), 0, false },
    [IPC_REVOKE_USER] = { "REVOKE_USER", sizeof(struct ipc_user), 0, true },
    [IPC_PURGE] = { "PURGE", sizeof(struct ipc_token), 0, false },
    [IPC_RESYNC] = { "RESYNC", sizeof(struct ipc_token), 0, false },
    [IPC_CLAIM] = { "CLAIM", sizeof(struct ipc_claim), 1, false },
    [IPC_CLAIMED] = { "CLAIMED", sizeof(struct ipc_answer), 0, false },
    [IPC_SESSION_END] = { "SESSION_END", sizeof(struct ipc_session), 0, false },
    [IPC_DEVICES] = { "DEVICES", sizeof(struct ipc_query), 0, false },
    [IPC_DEVICES_REPLY] = { "DEVICES_REPLY", sizeof(struct ipc_answer), 1, false },
};

static const struct ipc_rule *rule_of(uint32_t type)
{
    return type < IPC_TYPE_COUNT && rules[type].name ? &rules[type] : NULL;
}

const char *ipc_type_name(uint32_t type)
{
    const struct ipc_rule *r = rule_of(type);
    return r ? r->name : "unknown";
}

int ipc_pair(int sv[2])
{
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return -1;
    int size = IPC_SOCKBUF;
    for (int i = 0; i < 2; i++) {
        setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
        setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    }
    return 0;
}

/* ---- decoding ----------------------------------------------------------- */

const char *ipc_decode(const char *pkt, size_t n, int fd, const struct ipc_handlers *hs,
                       struct ipc_msg *m)
{
    struct ipc_hdr h;
    if (n < sizeof h)
        return "shorter than a header";
    memcpy(&h, pkt, sizeof h);
    const struct ipc_rule *r = rule_of(h.type);
    if (r == NULL)
        return "unknown type";
    if (hs && hs->fn[h.type] == NULL)
        return "a type not accepted on this link";
    if ((size_t)h.len != n - sizeof h)
        return "length field does not match the packet";
    if (h.len < r->body)
        return "payload shorter than its type's struct";
    size_t tail = h.len - r->body;
    if (tail > 0 && (r->tail_unit == 0 || tail % r->tail_unit != 0))
        return "tail of the wrong size for its type";
    if ((fd >= 0) != r->fd)
        return r->fd ? "descriptor missing" : "unexpected descriptor";
    m->type = h.type;
    m->body = pkt + sizeof h;
    m->tail = pkt + sizeof h + r->body; /* valid even when empty */
    m->tail_len = tail;
    m->fd = fd;
    return NULL;
}

/* ---- sending ------------------------------------------------------------- */

void ipc_chan_init(struct ipc_chan *ch, int fd)
{
    ch->fd = fd;
    buf_init(&ch->queue);
    ch->broken = false;
    ch->corked = false;
}

void ipc_chan_cork(struct ipc_chan *ch, bool on)
{
    ch->corked = on;
}

void ipc_chan_close(struct ipc_chan *ch)
{
    if (ch->fd >= 0)
        close(ch->fd);
    ch->fd = -1;
    buf_free(&ch->queue);
    ch->broken = false;
}

bool ipc_chan_waiting(const struct ipc_chan *ch)
{
    return buf_used(&ch->queue) > 0;
}

static bool is_full(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS;
}

/* One sendmsg of a whole packet (header + rest), with a descriptor or not. */
static int send_packet(int fd, const struct ipc_hdr *h, const void *body, size_t blen,
                       const void *tail, size_t tlen, int pass_fd)
{
    struct iovec iov[3] = {
        { .iov_base = (void *)h, .iov_len = sizeof *h },
        { .iov_base = (void *)body, .iov_len = blen },
        { .iov_base = (void *)tail, .iov_len = tlen },
    };
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = tlen ? 3 : 2 };
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    if (pass_fd >= 0) {
        memset(&control, 0, sizeof control);
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof control.buf;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &pass_fd, sizeof(int));
    }
    ssize_t n;
    do
        n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -1 : 0;
}

static int queue_packet(struct ipc_chan *ch, const struct ipc_hdr *h, const void *body, size_t blen,
                        const void *tail, size_t tlen)
{
    uint32_t total = (uint32_t)(sizeof *h + blen + tlen);
    if (buf_append(&ch->queue, &total, sizeof total) < 0 ||
        buf_append(&ch->queue, h, sizeof *h) < 0 || buf_append(&ch->queue, body, blen) < 0 ||
        (tlen && buf_append(&ch->queue, tail, tlen) < 0)) {
        errno = ENOMEM;
        return -1;
    }
    return 0;
}

static struct ipc_hdr header_for(uint32_t type, const struct ipc_rule *r, size_t tail_len)
{
    qc_assert(r != NULL);
    qc_assert(tail_len == 0 || (r->tail_unit != 0 && tail_len % r->tail_unit == 0));
    return (struct ipc_hdr){ .type = type, .len = (uint32_t)(r->body + tail_len) };
}

int ipc_chan_send(struct ipc_chan *ch, uint32_t type, const void *body, const void *tail,
                  size_t tail_len)
{
    const struct ipc_rule *r = rule_of(type);
    struct ipc_hdr h = header_for(type, r, tail_len);
    qc_assert(!r->fd);
    if (sizeof h + r->body + tail_len > IPC_MAX_PACKET) {
        errno = EMSGSIZE; /* the link is fine; this packet cannot travel */
        return -1;
    }
    if (ch->fd < 0 || ch->broken) {
        errno = EPIPE;
        return -1;
    }
    if (!ipc_chan_waiting(ch) && !ch->corked) {
        if (send_packet(ch->fd, &h, body, r->body, tail, tail_len, -1) == 0)
            return 0;
        if (!is_full(errno))
            return -1;
    }
    if (queue_packet(ch, &h, body, r->body, tail, tail_len) < 0) {
        log_error("%s packet: out of memory queueing it; the link is treated as broken", r->name);
        return -1;
    }
    return 0;
}

int ipc_chan_send_fd(struct ipc_chan *ch, uint32_t type, const void *body, int fd)
{
    const struct ipc_rule *r = rule_of(type);
    struct ipc_hdr h = header_for(type, r, 0);
    qc_assert(r->fd && fd >= 0);
    if (ch->fd < 0) {
        errno = EPIPE;
        return -1;
    }
    return send_packet(ch->fd, &h, body, r->body, NULL, 0, fd);
}

/*
 * Up to IPC_FLUSH_BATCH queued packets from the head of the queue, one
 * sendmmsg: how many the kernel took (>= 0), or -1 with errno.
 */
static int send_queued_batch(struct ipc_chan *ch)
{
    struct mmsghdr msgs[IPC_FLUSH_BATCH];
    struct iovec iov[IPC_FLUSH_BATCH];
    const char *p = buf_head(&ch->queue), *end = p + buf_used(&ch->queue);
    unsigned n = 0;
    while (n < IPC_FLUSH_BATCH && (size_t)(end - p) >= sizeof(uint32_t)) {
        uint32_t total;
        memcpy(&total, p, sizeof total);
        iov[n] = (struct iovec){ .iov_base = (void *)(p + sizeof total), .iov_len = total };
        msgs[n] = (struct mmsghdr){ .msg_hdr = { .msg_iov = &iov[n], .msg_iovlen = 1 } };
        p += sizeof total + total;
        n++;
    }
    int sent;
    do
        sent = sendmmsg(ch->fd, msgs, n, MSG_NOSIGNAL);
    while (sent < 0 && errno == EINTR);
    if (sent < 0)
        return is_full(errno) ? 0 : -1;
    size_t done = 0;
    for (int i = 0; i < sent; i++)
        done += sizeof(uint32_t) + iov[i].iov_len;
    buf_consume(&ch->queue, done);
    return sent;
}

int ipc_chan_flush(struct ipc_chan *ch)
{
    while (buf_used(&ch->queue) >= sizeof(uint32_t)) {
        int sent = send_queued_batch(ch);
        if (sent < 0)
            return -1;
        if (sent == 0)
            return 0; /* full: the rest waits for EPOLLOUT */
    }
    buf_reset(&ch->queue);
    buf_shrink(&ch->queue, ch->corked ? IPC_CORK_KEEP : 0);
    return 0;
}

/* ---- receiving ----------------------------------------------------------- */

/*
 * recvmsg, retried after EINTR and after one ECONNRESET.  A peer that closed
 * while packets of ours were still unread in its queue makes the kernel
 * report ECONNRESET once, *ahead of* the packets that peer sent us before it
 * closed: they are still queued (confirmations of chats it wrote, say), and
 * the end of the stream (0) comes only after them.  Treating the reset as the
 * end would throw them away and store offline chats already delivered.
 */
static ssize_t recv_retrying(int fd, struct msghdr *msg)
{
    bool reset_seen = false;
    for (;;) {
        ssize_t n = recvmsg(fd, msg, MSG_CMSG_CLOEXEC);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == ECONNRESET && !reset_seen) {
            reset_seen = true;
            continue;
        }
        return -1;
    }
}

/* One packet into buf: its length (> 0), 0 at end of stream, -1 with errno. */
static ssize_t recv_packet(int fd, char *buf, size_t cap, int *passed_fd, bool *truncated)
{
    struct iovec iov = { .iov_base = buf, .iov_len = cap };
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = control.buf,
        .msg_controllen = sizeof control.buf,
    };
    *passed_fd = -1;
    ssize_t n = recv_retrying(fd, &msg);
    if (n <= 0)
        return n;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
            memcpy(passed_fd, CMSG_DATA(cm), sizeof(int));
    *truncated = (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0;
    return n;
}

enum ipc_read_result ipc_chan_read(struct ipc_chan *ch, char *buf, int max_packets,
                                   const struct ipc_handlers *hs, void *ctx, uint32_t link)
{
    for (int i = 0; i < max_packets; i++) {
        if (ch->fd < 0)
            return IPC_READ_CLOSED;
        int fd;
        bool truncated = false;
        ssize_t n = recv_packet(ch->fd, buf, IPC_MAX_PACKET, &fd, &truncated);
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? IPC_READ_IDLE : IPC_READ_CLOSED;
        if (n == 0)
            return IPC_READ_CLOSED;
        const char *why = truncated ? "truncated (larger than IPC_MAX_PACKET)"
                                    : ipc_dispatch(buf, (size_t)n, fd, hs, ctx, link);
        if (why) {
            uint32_t type = 0;
            if ((size_t)n >= sizeof type)
                memcpy(&type, buf, sizeof type);
            qc_fatal("malformed packet from %s %u (type %u %s, %zd bytes): %s", hs->from, link,
                     type, ipc_type_name(type), n, why);
        }
    }
    return IPC_READ_MORE;
}

const char *ipc_dispatch(const char *pkt, size_t n, int fd, const struct ipc_handlers *hs,
                         void *ctx, uint32_t link)
{
    struct ipc_msg m;
    const char *why = ipc_decode(pkt, n, fd, hs, &m);
    if (why == NULL)
        hs->fn[m.type](ctx, link, &m);
    return why;
}
