/*
 * metrics_http.c - GET /metrics over HTTP/1.1 for Prometheus, served from
 * the master's loop (see metrics_http.h).
 *
 * The master must never block on a scraper: every socket is non-blocking,
 * at most HTTP_CONNS_MAX connections are open (one more is refused by
 * closing it), a request may be at most HTTP_REQUEST_MAX bytes of headers,
 * and a connection that has not finished within HTTP_DEADLINE_MS is closed.
 * One request per connection; the response says "Connection: close".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/net.h"
#include "server/metrics_http.h"
#include "common/clock.h"

#define HTTP_CONNS_MAX    16
#define HTTP_REQUEST_MAX  4096
#define HTTP_DEADLINE_MS  5000
#define HTTP_EVENTS_MAX   16
#define HTTP_LISTENER_TAG UINT32_MAX
#define CONTENT_TYPE      "text/plain; version=0.0.4; charset=utf-8"

struct http_conn {
    int fd; /* -1: free */
    int64_t deadline_ms;
    size_t in_len;
    char in[HTTP_REQUEST_MAX];
    struct buf out;
    bool responding;
};

struct metrics_http {
    int epfd;
    int listen_fd;
    struct http_conn conns[HTTP_CONNS_MAX];
};

static void conn_close(struct metrics_http *h, struct http_conn *c)
{
    if (c->fd < 0)
        return;
    close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    buf_free(&c->out);
}

struct metrics_http *metrics_http_open(const char *hostport, char *err, size_t errlen)
{
    struct metrics_http *h = calloc(1, sizeof *h);
    if (h == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (unsigned i = 0; i < HTTP_CONNS_MAX; i++)
        h->conns[i].fd = -1;
    h->listen_fd = net_listen_tcp(hostport, NET_LISTEN_BACKLOG, err, errlen);
    h->epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = HTTP_LISTENER_TAG };
    if (h->listen_fd < 0 || h->epfd < 0 ||
        epoll_ctl(h->epfd, EPOLL_CTL_ADD, h->listen_fd, &ev) < 0) {
        if (h->listen_fd >= 0)
            snprintf(err, errlen, "%s", strerror(errno));
        metrics_http_close(h);
        return NULL;
    }
    return h;
}

int metrics_http_fd(const struct metrics_http *h)
{
    return h->epfd;
}

void metrics_http_close(struct metrics_http *h)
{
    if (h == NULL)
        return;
    for (unsigned i = 0; i < HTTP_CONNS_MAX; i++)
        conn_close(h, &h->conns[i]);
    if (h->listen_fd >= 0)
        close(h->listen_fd);
    if (h->epfd >= 0)
        close(h->epfd);
    free(h);
}

static struct http_conn *free_conn(struct metrics_http *h)
{
    for (unsigned i = 0; i < HTTP_CONNS_MAX; i++)
        if (h->conns[i].fd < 0)
            return &h->conns[i];
    return NULL;
}

static void accept_clients(struct metrics_http *h)
{
    for (;;) {
        int fd = accept4(h->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct http_conn *c = free_conn(h);
        if (c == NULL) {
            close(fd); /* at capacity: the scraper retries */
            continue;
        }
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)(c - h->conns) };
        if (epoll_ctl(h->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->in_len = 0;
        c->responding = false;
        c->deadline_ms = clock_now_ms() + HTTP_DEADLINE_MS;
        buf_init(&c->out);
    }
}

static void respond(struct http_conn *c, int status, const char *reason, const char *type,
                    const char *body, size_t len, bool head)
{
    buf_printf(&c->out,
               "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
               "Connection: close\r\n\r\n",
               status, reason, type, len);
    if (!head)
        buf_append(&c->out, body, len);
    c->responding = true;
}

static void respond_text(struct http_conn *c, int status, const char *reason, const char *text)
{
    respond(c, status, reason, "text/plain; charset=utf-8", text, strlen(text), false);
}

/* The request line of a complete request: GET or HEAD /metrics, else an error. */
static void answer_request(struct http_conn *c, const struct metrics_source *src)
{
    char method[8], target[256], version[16];
    if (sscanf(c->in, "%7s %255s %15s", method, target, version) != 3 ||
        strncmp(version, "HTTP/1.", 7) != 0) {
        respond_text(c, 400, "Bad Request", "bad request\n");
        return;
    }
    bool head = strcmp(method, "HEAD") == 0;
    if (strcmp(method, "GET") != 0 && !head) {
        respond_text(c, 405, "Method Not Allowed", "only GET /metrics\n");
        return;
    }
    size_t path_len = strcspn(target, "?");
    if (path_len != strlen("/metrics") || strncmp(target, "/metrics", path_len) != 0) {
        respond_text(c, 404, "Not Found", "not found: try /metrics\n");
        return;
    }
    struct buf body;
    buf_init(&body);
    metrics_render(&body, src);
    respond(c, 200, "OK", CONTENT_TYPE, buf_head(&body), buf_used(&body), head);
    buf_free(&body);
}

static void read_request(struct metrics_http *h, struct http_conn *c,
                         const struct metrics_source *src)
{
    while (!c->responding) {
        ssize_t n = read(c->fd, c->in + c->in_len, sizeof c->in - 1 - c->in_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            conn_close(h, c);
            return;
        }
        c->in_len += (size_t)n;
        c->in[c->in_len] = '\0';
        if (strstr(c->in, "\r\n\r\n") || strstr(c->in, "\n\n"))
            answer_request(c, src);
        else if (c->in_len == sizeof c->in - 1)
            respond_text(c, 431, "Request Header Fields Too Large", "request too large\n");
    }
    struct epoll_event ev = { .events = EPOLLOUT, .data.u32 = (uint32_t)(c - h->conns) };
    epoll_ctl(h->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void write_response(struct metrics_http *h, struct http_conn *c)
{
    while (buf_used(&c->out) > 0) {
        ssize_t n = send(c->fd, buf_head(&c->out), buf_used(&c->out), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0)
            break;
        buf_consume(&c->out, (size_t)n);
    }
    conn_close(h, c);
}

void metrics_http_run(struct metrics_http *h, const struct metrics_source *src)
{
    struct epoll_event events[HTTP_EVENTS_MAX];
    int n = epoll_wait(h->epfd, events, HTTP_EVENTS_MAX, 0);
    for (int i = 0; i < n; i++) {
        uint32_t tag = events[i].data.u32;
        if (tag == HTTP_LISTENER_TAG) {
            accept_clients(h);
            continue;
        }
        struct http_conn *c = &h->conns[tag];
        if (c->fd < 0)
            continue;
        if (!c->responding)
            read_request(h, c, src);
        if (c->fd >= 0 && c->responding)
            write_response(h, c);
    }
}

void metrics_http_tick(struct metrics_http *h, int64_t now_ms)
{
    for (unsigned i = 0; h && i < HTTP_CONNS_MAX; i++) {
        if (h->conns[i].fd >= 0 && now_ms >= h->conns[i].deadline_ms) {
            log_debug("metrics: closing a connection past its deadline");
            conn_close(h, &h->conns[i]);
        }
    }
}
