/*
 * proxy.h - the PROXY protocol (version 1, text) header that a TCP load
 * balancer such as nginx (`proxy_protocol on;` in a stream server) sends
 * first on each connection, naming the client's real address.  Enabled by
 * server.proxy_protocol; then every connection must start with one, so the
 * per-address limits apply to clients, not to the balancer.
 */
#ifndef QCHAT_SERVER_PROXY_H
#define QCHAT_SERVER_PROXY_H

#include <stddef.h>
#include <sys/socket.h>

#define PROXY_V1_MAX 107 /* longest header, "\r\n" included (the spec's bound) */

/*
 * Parse a header at the start of p[0..n).  Returns the bytes it takes (> 0)
 * with *addr the client's address (ss_family AF_UNSPEC for "PROXY UNKNOWN"),
 * 0 when more bytes are needed, -1 when it is not a valid header.
 */
int proxy_parse_v1(const char *p, size_t n, struct sockaddr_storage *addr);

#endif
