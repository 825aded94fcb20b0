/*
 * ipc.c - typed packets over SOCK_SEQPACKET socketpairs (see ipc.h).
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "server/ipc.h"

#define IPC_SOCKBUF (4 * 1024 * 1024) /* room for bursts of hand-offs */

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

int ipc_send(int fd, const struct ipc_hdr *h, const void *payload, size_t len, int pass_fd)
{
    struct iovec iov[2] = {
        { .iov_base = (void *)h, .iov_len = sizeof *h },
        { .iov_base = (void *)payload, .iov_len = len },
    };
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };
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

ssize_t ipc_recv(int fd, struct ipc_hdr *h, void *payload, size_t cap, int *passed_fd)
{
    struct iovec iov[2] = {
        { .iov_base = h, .iov_len = sizeof *h },
        { .iov_base = payload, .iov_len = cap },
    };
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {
        .msg_iov = iov,
        .msg_iovlen = 2,
        .msg_control = control.buf,
        .msg_controllen = sizeof control.buf,
    };
    *passed_fd = -1;
    ssize_t n = recv_retrying(fd, &msg);
    if (n < 0)
        return -1;
    if (n == 0)
        return -2;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
            memcpy(passed_fd, CMSG_DATA(cm), sizeof(int));
    if ((size_t)n < sizeof *h || (msg.msg_flags & MSG_TRUNC)) {
        if (*passed_fd >= 0)
            close(*passed_fd);
        errno = EBADMSG;
        return -1;
    }
    return n - (ssize_t)sizeof *h;
}
