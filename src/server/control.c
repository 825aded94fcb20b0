/*
 * control.c - the master's control socket, non-blocking in its loop (see
 * control.h).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <json-c/json.h>

#include "common/jsonw.h"
#include "common/log.h"
#include "common/net.h"
#include "server/control.h"

struct client {
    struct loop_source src;
    struct control *ctl;
    int fd; /* -1: free */
    int64_t deadline;
    char req[CONTROL_REQUEST_MAX + 1];
    size_t len;
    struct buf out; /* the reply, while it is being written */
    size_t sent;
    bool replying;
};

struct control {
    struct loop *loop;
    int fd;
    struct loop_source src;
    char path[256];
    control_command_fn *run;
    void *ctx;
    struct client *current; /* the client whose command runs, NULL otherwise */
    struct client clients[CONTROL_CLIENTS_MAX];
};

void control_error(struct buf *out, const char *msg)
{
    buf_append_str(out, "{\"ok\":false,\"error\":");
    json_append_string(out, msg, strlen(msg));
    buf_append_char(out, '}');
}

struct json_object *control_parse(const char *req, size_t len, const char **why)
{
    const char *nl = memchr(req, '\n', len);
    if (nl)
        len = (size_t)(nl - req);
    if (len == 0) {
        *why = "bad request: expected one JSON object line";
        return NULL;
    }
    struct json_tokener *tok = json_tokener_new();
    if (tok == NULL) {
        *why = "out of memory";
        return NULL;
    }
    struct json_object *obj = json_tokener_parse_ex(tok, req, (int)len);
    bool whole = obj && json_tokener_get_error(tok) == json_tokener_success;
    json_tokener_free(tok);
    if (!whole || !json_object_is_type(obj, json_type_object)) {
        json_object_put(obj);
        *why = "bad request: expected one JSON object line";
        return NULL;
    }
    return obj;
}

static void drop_client(struct client *cl)
{
    if (cl->fd < 0)
        return;
    loop_unwatch(cl->ctl->loop, &cl->src);
    close(cl->fd);
    cl->fd = -1;
    buf_free(&cl->out);
}

/* Write what the socket takes; the connection ends with the reply's last byte. */
static void write_reply(struct client *cl)
{
    while (cl->sent < buf_used(&cl->out)) {
        ssize_t n = send(cl->fd, buf_head(&cl->out) + cl->sent, buf_used(&cl->out) - cl->sent,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return; /* EPOLLOUT brings us back */
        if (n <= 0) {
            drop_client(cl);
            return;
        }
        cl->sent += (size_t)n;
    }
    drop_client(cl);
}

static void answer(struct client *cl)
{
    const char *why = NULL;
    struct json_object *obj = control_parse(cl->req, cl->len, &why);
    if (obj == NULL) {
        control_error(&cl->out, why);
    } else {
        cl->ctl->current = cl;
        cl->ctl->run(cl->ctl->ctx, obj, &cl->out);
        cl->ctl->current = NULL;
    }
    json_object_put(obj);
    if (buf_used(&cl->out) == 0) {
        drop_client(cl); /* the command handed the connection to a worker, which answers */
        return;
    }
    buf_append_char(&cl->out, '\n');
    cl->replying = true;
    loop_rewatch(cl->ctl->loop, &cl->src, EPOLLOUT);
    write_reply(cl);
}

/* Read what has come; answer at the end of the line, the stream, or the room. */
static void read_request(struct client *cl)
{
    for (;;) {
        ssize_t n = recv(cl->fd, cl->req + cl->len, CONTROL_REQUEST_MAX - cl->len, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0) {
            drop_client(cl);
            return;
        }
        bool line_done = n > 0 && memchr(cl->req + cl->len, '\n', (size_t)n) != NULL;
        cl->len += (size_t)n;
        if (n == 0 || line_done || cl->len == CONTROL_REQUEST_MAX) {
            answer(cl);
            return;
        }
    }
}

static void client_event(void *ctx, uint32_t events)
{
    struct client *cl = ctx;
    if (cl->fd < 0)
        return;
    if (cl->replying)
        write_reply(cl);
    else if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        read_request(cl);
}

static struct client *free_client(struct control *ctl)
{
    for (int i = 0; i < CONTROL_CLIENTS_MAX; i++)
        if (ctl->clients[i].fd < 0)
            return &ctl->clients[i];
    return NULL;
}

static void refuse(int fd)
{
    static const char busy[] = "{\"ok\":false,\"error\":\"control socket busy; try again\"}\n";
    if (send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_debug("control: refusing a connection: %s", strerror(errno));
    close(fd);
}

static void accept_event(void *ctx, uint32_t events)
{
    struct control *ctl = ctx;
    (void)events;
    for (;;) {
        int fd = accept4(ctl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct client *cl = free_client(ctl);
        if (cl == NULL) {
            log_warning("control socket: %d connections already open; refusing one",
                        CONTROL_CLIENTS_MAX);
            refuse(fd);
            continue;
        }
        *cl = (struct client){ .ctl = ctl,
                               .fd = fd,
                               .deadline = ctl->loop->now_ms + CONTROL_DEADLINE_MS };
        buf_init(&cl->out);
        if (loop_watch(ctl->loop, &cl->src, fd, EPOLLIN, client_event, cl) < 0) {
            close(fd);
            cl->fd = -1;
        }
    }
}

struct control *control_open(struct loop *loop, const char *path, control_command_fn *run,
                             void *ctx, char *err, size_t errlen)
{
    struct control *ctl = calloc(1, sizeof *ctl);
    if (ctl == NULL) {
        strlcpy(err, "out of memory", errlen);
        return NULL;
    }
    ctl->loop = loop;
    ctl->run = run;
    ctl->ctx = ctx;
    strlcpy(ctl->path, path, sizeof ctl->path);
    for (int i = 0; i < CONTROL_CLIENTS_MAX; i++)
        ctl->clients[i].fd = -1;
    ctl->fd = net_listen_unix(path, 0660, err, errlen);
    if (ctl->fd < 0) {
        free(ctl);
        return NULL;
    }
    if (loop_watch(loop, &ctl->src, ctl->fd, EPOLLIN, accept_event, ctl) < 0) {
        strlcpy(err, strerror(errno), errlen);
        close(ctl->fd);
        free(ctl);
        return NULL;
    }
    return ctl;
}

int control_client_fd(const struct control *ctl)
{
    return ctl->current ? ctl->current->fd : -1;
}

void control_expire(struct control *ctl, int64_t now_ms)
{
    for (int i = 0; ctl && i < CONTROL_CLIENTS_MAX; i++) {
        struct client *cl = &ctl->clients[i];
        if (cl->fd >= 0 && now_ms >= cl->deadline) {
            log_warning("control socket: a client took more than %d ms; closed",
                        CONTROL_DEADLINE_MS);
            drop_client(cl);
        }
    }
}

void control_close(struct control *ctl, int unlink_path)
{
    if (ctl == NULL)
        return;
    for (int i = 0; i < CONTROL_CLIENTS_MAX; i++)
        drop_client(&ctl->clients[i]);
    loop_unwatch(ctl->loop, &ctl->src);
    close(ctl->fd);
    if (unlink_path)
        unlink(ctl->path);
    free(ctl);
}

void control_close_in_child(struct control *ctl)
{
    if (ctl == NULL)
        return;
    for (int i = 0; i < CONTROL_CLIENTS_MAX; i++)
        if (ctl->clients[i].fd >= 0)
            close(ctl->clients[i].fd);
    close(ctl->fd);
}
