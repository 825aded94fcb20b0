/*
 * metrics_http.h - the master's Prometheus endpoint and the text it serves.
 *
 * metrics_render writes the node's metrics in the Prometheus text
 * exposition format (0.0.4): the shared counters and histograms the
 * children keep (metrics.h) plus the gauges the online table already holds.
 * qchatctl stats gets the same text over the control socket.
 *
 * metrics_http is a small non-blocking HTTP/1.1 server for GET /metrics,
 * run from the master's loop through one epoll descriptor of its own:
 * bounded connections, a bounded request size and a per-request deadline,
 * one response per connection ("Connection: close").
 */
#ifndef QCHAT_SERVER_METRICS_HTTP_H
#define QCHAT_SERVER_METRICS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "server/online.h"

/* What the master knows that the exposition needs besides metrics.h. */
struct metrics_source {
    struct online_table *online;
    uint32_t nworkers;
    bool clustered;
    bool store_failing;
};

void metrics_render(struct buf *out, const struct metrics_source *src);

struct metrics_http;

/* Listen on HOST:PORT; NULL with err set on failure. */
struct metrics_http *metrics_http_open(const char *hostport, char *err, size_t errlen);
/* The descriptor to watch for EPOLLIN (an epoll set of its own). */
int metrics_http_fd(const struct metrics_http *h);
/* Serve whatever is ready: accept, read requests, write responses. */
void metrics_http_run(struct metrics_http *h, const struct metrics_source *src);
/* Close connections past their deadline (call from the master's tick). */
void metrics_http_tick(struct metrics_http *h, int64_t now_ms);
void metrics_http_close(struct metrics_http *h);

#endif
