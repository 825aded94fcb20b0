/*
 * net.h - socket helpers: listening and connecting sockets, non-blocking
 * mode, socket options.  All return -1 with errno set (and err filled when
 * given) on failure.
 */
#ifndef QCHAT_COMMON_NET_H
#define QCHAT_COMMON_NET_H

#include <stddef.h>
#include <sys/socket.h>

#define NET_LISTEN_BACKLOG 4096 /* internal listeners (metrics, control socket) */
#define NET_SOMAXCONN_PATH "/proc/sys/net/core/somaxconn"

/*
 * "host:port", "[v6]:port"; SO_REUSEADDR, non-blocking, CLOEXEC; backlog:
 * the accept queue asked of listen(2) (the kernel caps it at somaxconn).
 */
int net_listen_tcp(const char *hostport, int backlog, char *err, size_t errlen);
/* The kernel's cap on any accept queue (net.core.somaxconn), -1 when unknown. */
int net_somaxconn(void);
/* Unix stream listening socket at path (removes a stale one), mode applied. */
int net_listen_unix(const char *path, int mode, char *err, size_t errlen);
/* Blocking connect with a timeout in ms; returns a blocking fd. */
int net_connect_tcp(const char *host, int port, int timeout_ms, char *err, size_t errlen);
int net_connect_unix(const char *path, char *err, size_t errlen);
int net_set_nonblock(int fd);
int net_set_nodelay(int fd);
/* Text form of the peer address "1.2.3.4:5678" or "[::1]:5678". */
void net_peer_name(int fd, char *out, size_t outlen);

#endif
