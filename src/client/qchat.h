/*
 * qchat.h - private to the qchat terminal client (src/client/qchat*.c):
 * the client's state and the functions its files share.
 *
 *   qchat.c      main, options, the wait loop (socket, stdin, heartbeat),
 *                script mode
 *   qchat_cmd.c  the commands (help, chat:ID:TEXT, ...), login display
 *   qchat_out.c  every line printed: outcomes, incoming messages, escaping
 *   qchat_tty.c  interactive mode: menu, libedit line editing and history
 */
#ifndef QCHAT_CLIENT_QCHAT_H
#define QCHAT_CLIENT_QCHAT_H

#include <stdbool.h>
#include <stdint.h>
#include <histedit.h>
#include <json-c/json.h>

#include "client/qclient.h"
#include "common/buf.h"

#define QCHAT_CONNECT_TIMEOUT_MS 5000         /* TCP connect */
#define QCHAT_REPLY_TIMEOUT_MS   5000         /* default wait for a reply (-t) */
#define QCHAT_EOF_LINGER_MS      300          /* script mode: wait for stragglers at EOF */
#define QCHAT_HEARTBEAT_MS       30000        /* idle time before a heartbeat is sent */
#define QCHAT_DRAIN_MAX          256          /* objects printed per wake-up before polling again */
#define QCHAT_LINE_MAX           (128 * 1024) /* longest command line accepted */
#define QCHAT_TIME_LEN           32           /* "YYYY-MM-DD HH:MM:SS" and NUL, with room */

struct qchat {
    struct qclient *c;
    const char *host;
    int port;
    bool interactive; /* libedit on a terminal, else script mode */
    int reply_timeout_ms;
    int64_t next_seq;
    int64_t last_send_ms; /* monotonic time of the last request sent */

    bool logged_in;
    int32_t my_id;
    bool lost;          /* the server closed the connection */
    bool lost_reported; /* "disconnected" printed */
    bool quit;          /* "quit" was given */

    /* interactive mode */
    EditLine *el;
    History *hist;
    const char *prompt;
    bool in_prompt; /* inside el_gets: output must redraw the line */
};

/* qchat.c */
int64_t qchat_seq(struct qchat *q); /* next request seq, also notes the send time */
/*
 * Wait up to timeout_ms (-1: forever) for in_fd (-1: none) to become
 * readable, printing whatever the server sends meanwhile and sending
 * heartbeats when idle.  1: in_fd readable, 0: timeout, -1: connection lost.
 */
int qchat_wait(struct qchat *q, int in_fd, int timeout_ms);
/* Print everything the server has already sent; false once the connection is lost. */
bool qchat_drain(struct qchat *q);

/* qchat_cmd.c */
/* Run one command line (no trailing newline).  Output goes through qchat_out.c. */
void qchat_exec(struct qchat *q, char *line);
int qchat_login(struct qchat *q, const char *idtext, char *password);
void qchat_register(struct qchat *q, const char *name, char *password);
void qchat_help(struct qchat *q);

/* qchat_out.c */
void out_line(struct qchat *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append text with control characters escaped (\n, \t, \xHH): one line, no terminal escapes. */
void out_append_text(struct buf *b, const char *text);
void out_emit(struct qchat *q, struct buf *b); /* print b as one line and reset it */
void out_incoming(struct qchat *q, struct json_object *obj);
void out_chat_line(struct buf *b, struct json_object *msg); /* seed format, no newline */
/* Outcome of a request: rc from qclient (errno, or -1); ok_text printed when rc == 0. */
void out_outcome(struct qchat *q, int rc, const char *ok_text);
void out_login(struct qchat *q, struct json_object *ack);
void out_disconnected(struct qchat *q); /* "disconnected", printed once */

/* qchat_tty.c */
int qchat_run_tty(struct qchat *q);

#endif
