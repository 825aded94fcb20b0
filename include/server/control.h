/*
 * control.h - the master's control socket (qchatctl), served from the
 * master's event loop.
 *
 * One request per connection: a line holding one JSON object
 * ({"cmd":"status"} ...), one reply line, then the master closes.  Every
 * socket is non-blocking and every connection has a deadline
 * (CONTROL_DEADLINE_MS from accept to the last byte of the reply): a client
 * that sends half a request and waits, or never reads its reply, is closed
 * at the deadline, and the master meanwhile reaps, respawns and answers
 * everyone else.  At most CONTROL_CLIENTS_MAX connections at once; more
 * are refused with an error line.
 */
#ifndef QCHAT_SERVER_CONTROL_H
#define QCHAT_SERVER_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/loop.h"

#define CONTROL_REQUEST_MAX 4096 /* bytes of one request line */
#define CONTROL_DEADLINE_MS 1000 /* accept to last byte of the reply */
#define CONTROL_CLIENTS_MAX 8    /* connections served at once */

struct json_object;
struct control;

/* Run request (a JSON object) and write the reply object, without '\n', into out. */
typedef void control_command_fn(void *ctx, struct json_object *req, struct buf *out);

/* Listen on path (mode 0660) in loop; NULL with err on failure. */
struct control *control_open(struct loop *loop, const char *path, control_command_fn *run,
                             void *ctx, char *err, size_t errlen);
/*
 * During a command: the client's descriptor, so that a command answered by
 * a worker (qchatctl revoke: a store call) can pass it on.  A command that
 * writes nothing into out has handed the connection over: the master then
 * closes its own descriptor without a reply.  -1 outside a command.
 */
int control_client_fd(const struct control *ctl);
/* Close connections whose deadline passed (call it from the loop's tick). */
void control_expire(struct control *ctl, int64_t now_ms);
/* Stop serving: close every descriptor; unlink the socket file when asked. */
void control_close(struct control *ctl, int unlink_path);
/* In a forked child: close the descriptors, touch nothing shared (no epoll, no unlink). */
void control_close_in_child(struct control *ctl);

/*
 * The request parser (also the fuzz target): len bytes as received, ending
 * at the first '\n' if any.  A JSON object, or NULL with *why set.
 */
struct json_object *control_parse(const char *req, size_t len, const char **why);
/* {"ok":false,"error":msg} into out. */
void control_error(struct buf *out, const char *msg);

#endif
