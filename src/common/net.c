/*
 * net.c - socket helpers: listening and connecting sockets, socket options.
 *
 * Every descriptor is created close-on-exec.  Listening sockets are
 * non-blocking (the event loops accept from them); connecting sockets are
 * returned blocking, the connect itself bounded by a timeout.  Failures
 * return -1 with errno set and, when err is given, a message naming the
 * address and the failing step.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/config.h"
#include "common/net.h"

#define NET_PORT_STR_MAX 8
#define NET_HOST_STR_MAX 256
#define NET_BIND_UMASK   0077 /* no access until chmod gives the real mode */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fill err (when given) keeping errno for the caller. */
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    int saved = errno;
    va_list ap;

    if (err != NULL && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    errno = saved;
}

static void close_keep_errno(int fd)
{
    int saved = errno;

    close(fd);
    errno = saved;
}

int net_set_nonblock(int fd)
{
    int flags = fcntl(fd, F_GETFL);

    if (flags < 0)
        return -1;
    if (flags & O_NONBLOCK)
        return 0;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static int set_blocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);

    if (flags < 0)
        return -1;
    return fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
}

int net_set_nodelay(int fd)
{
    int on = 1;

    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
}

static int resolve(const char *host, int port, int flags, struct addrinfo **res, char *err,
                   size_t errlen)
{
    struct addrinfo hints;
    char portstr[NET_PORT_STR_MAX];
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = flags | AI_NUMERICSERV;
    snprintf(portstr, sizeof(portstr), "%d", port);
    rc = getaddrinfo(host, portstr, &hints, res);
    if (rc != 0) {
        errno = rc == EAI_SYSTEM ? errno : EADDRNOTAVAIL;
        set_err(err, errlen, "%s port %d: %s", host ? host : "*", port, gai_strerror(rc));
        return -1;
    }
    return 0;
}

static int listen_on(const struct addrinfo *ai, int backlog)
{
    int on = 1;
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);

    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, backlog) < 0) {
        close_keep_errno(fd);
        return -1;
    }
    return fd;
}

int net_somaxconn(void)
{
    FILE *f = fopen(NET_SOMAXCONN_PATH, "re");
    int v = -1;

    if (f == NULL)
        return -1;
    if (fscanf(f, "%d", &v) != 1)
        v = -1;
    fclose(f);
    return v;
}

int net_listen_tcp(const char *hostport, int backlog, char *err, size_t errlen)
{
    char host[NET_HOST_STR_MAX];
    struct addrinfo *res, *ai;
    const char *node;
    int port, fd = -1;

    if (config_split_hostport(hostport, host, sizeof(host), &port) < 0) {
        errno = EINVAL;
        set_err(err, errlen, "bad listen address '%s': want HOST:PORT or [V6]:PORT", hostport);
        return -1;
    }
    /* "" and "*" mean every local address. */
    node = (host[0] == '\0' || strcmp(host, "*") == 0) ? NULL : host;
    if (resolve(node, port, AI_PASSIVE, &res, err, errlen) < 0)
        return -1;
    for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next)
        fd = listen_on(ai, backlog);
    if (fd < 0)
        set_err(err, errlen, "listen on %s: %s", hostport, strerror(errno));
    freeaddrinfo(res);
    return fd;
}

static int fill_unix_addr(struct sockaddr_un *sa, const char *path)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(sa->sun_path, path, strlen(path) + 1);
    return 0;
}

/*
 * A socket file left by a dead server is removed; one a live server
 * still accepts on, or a file that is not a socket, is left alone.
 */
static int remove_stale_socket(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    struct stat st;
    int fd, rc;

    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISSOCK(st.st_mode)) {
        errno = EEXIST;
        set_err(err, errlen, "%s exists and is not a socket", path);
        return -1;
    }
    if (fill_unix_addr(&sa, path) < 0)
        return -1;
    /* Non-blocking: a live server with a full backlog answers EAGAIN. */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    close_keep_errno(fd);
    if (rc == 0 || errno == EAGAIN) {
        errno = EADDRINUSE;
        set_err(err, errlen, "%s: another server is listening there", path);
        return -1;
    }
    if (errno != ECONNREFUSED)
        return -1;
    return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

int net_listen_unix(const char *path, int mode, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    mode_t old_umask;
    int fd, rc;

    if (fill_unix_addr(&sa, path) < 0) {
        set_err(err, errlen, "%s: path too long for a unix socket", path);
        return -1;
    }
    if (remove_stale_socket(path, err, errlen) < 0) {
        if (errno != EEXIST && errno != EADDRINUSE)
            set_err(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        set_err(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    old_umask = umask(NET_BIND_UMASK);
    rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old_umask);
    if (rc < 0) {
        set_err(err, errlen, "bind %s: %s", path, strerror(errno));
        close_keep_errno(fd);
        return -1;
    }
    if (chmod(path, (mode_t)mode) < 0 || listen(fd, NET_LISTEN_BACKLOG) < 0) {
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        unlink(path);
        close_keep_errno(fd);
        return -1;
    }
    return fd;
}

/* Wait for a non-blocking connect until the deadline (-1: forever). */
static int finish_connect(int fd, long long deadline)
{
    struct pollfd pfd = { .fd = fd, .events = POLLOUT };
    socklen_t len = sizeof(int);
    int soerr = 0, rc;

    for (;;) {
        int wait_ms = -1;

        if (deadline >= 0) {
            long long left = deadline - clock_now_ms();

            if (left <= 0) {
                errno = ETIMEDOUT;
                return -1;
            }
            wait_ms = (int)left;
        }
        rc = poll(&pfd, 1, wait_ms);
        if (rc > 0)
            break;
        if (rc == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (errno != EINTR)
            return -1;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        return -1;
    if (soerr != 0) {
        errno = soerr;
        return -1;
    }
    return 0;
}

static int connect_one(const struct addrinfo *ai, long long deadline)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);

    if (fd < 0)
        return -1;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 &&
        (errno != EINPROGRESS || finish_connect(fd, deadline) < 0)) {
        close_keep_errno(fd);
        return -1;
    }
    if (set_blocking(fd) < 0) {
        close_keep_errno(fd);
        return -1;
    }
    return fd;
}

int net_connect_tcp(const char *host, int port, int timeout_ms, char *err, size_t errlen)
{
    long long deadline = timeout_ms > 0 ? clock_now_ms() + timeout_ms : -1;
    struct addrinfo *res, *ai;
    int fd = -1;

    if (resolve(host, port, 0, &res, err, errlen) < 0)
        return -1;
    for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next)
        fd = connect_one(ai, deadline);
    if (fd < 0)
        set_err(err, errlen, "connect to %s port %d: %s", host, port, strerror(errno));
    freeaddrinfo(res);
    return fd;
}

int net_connect_unix(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    int fd;

    if (fill_unix_addr(&sa, path) < 0) {
        set_err(err, errlen, "%s: path too long for a unix socket", path);
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        set_err(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (errno == EINTR)
            continue;
        set_err(err, errlen, "connect to %s: %s", path, strerror(errno));
        close_keep_errno(fd);
        return -1;
    }
    return fd;
}

void net_peer_name(int fd, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char addr[INET6_ADDRSTRLEN];

    if (outlen == 0)
        return;
    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0) {
        snprintf(out, outlen, "?");
        return;
    }
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;

        inet_ntop(AF_INET, &sin->sin_addr, addr, sizeof(addr));
        snprintf(out, outlen, "%s:%u", addr, (unsigned)ntohs(sin->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;

        inet_ntop(AF_INET6, &sin6->sin6_addr, addr, sizeof(addr));
        snprintf(out, outlen, "[%s]:%u", addr, (unsigned)ntohs(sin6->sin6_port));
    } else if (ss.ss_family == AF_UNIX) {
        snprintf(out, outlen, "unix");
    } else {
        snprintf(out, outlen, "?");
    }
}
