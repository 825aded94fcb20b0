/*
 * qchat.h - private to the qchat terminal client (src/client/qchat*.c):
 * the client's state and the functions its files share.
 *
 *   qchat.c       main, options, the wait loop (socket, stdin, heartbeat,
 *                 reconnect timer), script mode
 *   qchat_conn.c  the connection: connect at login/register, lost
 *                 connections, reconnect with backoff and the login token
 *   qchat_cmd.c   the commands (help, chat:ID:TEXT, ...), login display
 *   qchat_v2.c    the version 2 commands: history, conversations, friends
 *                 with consent, blocking, group administration, passwd
 *   qchat_conv.c  per-conversation state: cseqs shown (dedupe), READ marks,
 *                 typing display rate, names of users
 *   qchat_out.c   every line printed: outcomes, incoming messages, escaping
 *   qchat_tty.c   interactive mode: menu, libedit line editing and history
 */
#ifndef QCHAT_CLIENT_QCHAT_H
#define QCHAT_CLIENT_QCHAT_H

#include <stdbool.h>
#include <stdint.h>
#include <histedit.h>
#include <json-c/json.h>

#include "client/qclient.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/proto.h"

#define QCHAT_CONNECT_TIMEOUT_MS 5000         /* TCP connect */
#define QCHAT_REPLY_TIMEOUT_MS   5000         /* default wait for a reply (-t) */
#define QCHAT_EOF_LINGER_MS      300          /* script mode: wait for stragglers at EOF */
#define QCHAT_HEARTBEAT_MS       30000        /* idle time before a heartbeat is sent */
#define QCHAT_DRAIN_MAX          256          /* objects printed per wake-up before polling again */
#define QCHAT_LINE_MAX           (128 * 1024) /* longest command line accepted */
#define QCHAT_TIME_LEN           32           /* "YYYY-MM-DD HH:MM:SS" and NUL, with room */
#define QCHAT_BACKOFF_FIRST_MS   500          /* first reconnect delay, doubled per failure */
#define QCHAT_BACKOFF_MAX_MS     30000        /* reconnect delay ceiling */
#define QCHAT_DEVICE_MAX         64           /* LOGIN_MSG "device", bytes */
#define QCHAT_TOKEN_MAX          512          /* longest login token kept */
#define QCHAT_CONVS_MAX          1024         /* conversations remembered (least recent evicted) */
#define QCHAT_CONV_RANGES        32           /* runs of shown cseqs kept per conversation */
#define QCHAT_NAMES_MAX          4096         /* user names remembered for receipts */
#define QCHAT_TYPING_SHOW_MS     5000         /* one "is typing" line per user and conversation */

/* Version 2 message ids (DESIGN.md "Version 2"), as this client uses them. */
enum qchat_msgid {
    QCHAT_HISTORY = 20,
    QCHAT_HISTORY_ACK = 21,
    QCHAT_CONVERSATIONS = 22,
    QCHAT_CONVERSATIONS_ACK = 23,
    QCHAT_READ = 24,
    QCHAT_RECEIPT = 25,
    QCHAT_TYPING = 26,
    QCHAT_FRIEND_LIST = 30,
    QCHAT_FRIEND_LIST_ACK = 31,
    QCHAT_FRIEND_REMOVE = 32,
    QCHAT_BLOCK = 33,
    QCHAT_UNBLOCK = 34,
    QCHAT_FRIEND_REQUEST = 35,
    QCHAT_FRIEND_DECLINE = 36,
    QCHAT_GROUP_MEMBERS = 40,
    QCHAT_GROUP_MEMBERS_ACK = 41,
    QCHAT_GROUP_LEAVE = 42,
    QCHAT_GROUP_KICK = 43,
    QCHAT_GROUP_ROLE = 44,
    QCHAT_GROUP_UPDATE = 45,
    QCHAT_GROUP_DELETE = 46,
    QCHAT_GROUP_EVENT = 47,
    QCHAT_PASSWORD = 48,
    QCHAT_DEVICES = 49, /* an extension (qchat-protocol(7)) */
    QCHAT_DEVICES_ACK = 50,
};

/* A conversation: the other user of a one-to-one chat, or a group. */
struct conv_key {
    bool group;
    int32_t id;
};

struct conv; /* qchat_conv.c */
struct conv_names;

struct qchat {
    struct qclient *c; /* NULL while not connected */
    const char *host;
    int port;
    bool interactive; /* libedit on a terminal, else script mode */
    int reply_timeout_ms;
    int64_t next_seq;
    int64_t last_send_ms; /* monotonic time of the last request sent */

    bool logged_in; /* a session is wanted: restored after a lost connection */
    int32_t my_id;
    char device[QCHAT_DEVICE_MAX + 1];
    /* credentials for reconnecting: the token, else (a server without
     * tokens, or after passwd) the password; wiped at logout and exit */
    char token[QCHAT_TOKEN_MAX + 1];
    char password[QC_PASSWORD_MAX + 1];

    bool broken;          /* the connection failed: close it at the next chance */
    bool kicked;          /* KICK on this connection: no reconnect */
    bool timed_out;       /* "login timeout" printed for this connection */
    int64_t reconnect_at; /* monotonic ms of the next attempt, 0: none planned */
    int backoff_ms;       /* delay after the next failure */
    bool trouble;         /* last connection failed or lost, not restored (exit 1) */
    bool quit;            /* "quit" was given */

    struct conv *convs; /* qchat_conv.c */
    size_t nconvs;
    uint64_t conv_clock;
    struct conv_names *names;

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
 * readable, printing whatever the server sends meanwhile, sending
 * heartbeats when idle and reconnecting when due.  1: in_fd readable,
 * 0: timeout (also: nothing left to wait for).
 */
int qchat_wait(struct qchat *q, int in_fd, int timeout_ms);
/* Print everything the server has already sent, then send the READ marks. */
void qchat_drain(struct qchat *q);

/* qchat_conn.c */
/* Connect if not connected (login, register); false with an outcome line printed. */
bool qconn_open(struct qchat *q);
/* A connection for a request needing the session; false with an outcome line. */
bool qconn_ready(struct qchat *q);
/* The connection failed (EOF, error): close it, say so, plan a reconnect. */
void qconn_lost(struct qchat *q);
/* Close the connection on purpose (logout), nothing planned. */
void qconn_close(struct qchat *q);
/* A reconnect is due: try it now. */
void qconn_reconnect_if_due(struct qchat *q);
/* Log in on the open connection with q's device and flags; the reply in *ack. */
int qconn_login(struct qchat *q, int32_t id, const char *password, const char *token,
                struct json_object **ack);
/* Keep what the login reply gives for reconnects (token), else the password. */
void qconn_keep_credentials(struct qchat *q, struct json_object *ack, const char *password);
void qconn_forget_credentials(struct qchat *q);

/* qchat_cmd.c */
/* Run one command line (no trailing newline).  Output goes through qchat_out.c. */
void qchat_exec(struct qchat *q, char *line);
int qchat_login(struct qchat *q, const char *idtext, char *password);
void qchat_register(struct qchat *q, const char *name, char *password);
void qchat_help(struct qchat *q);
/* Parsing helpers shared with qchat_v2.c. */
bool cmd_parse_id(const char *s, int32_t *out);
bool cmd_parse_cseq(const char *s, int64_t *out);
bool cmd_split_colon(char *s, char **rest);
void cmd_usage_error(struct qchat *q, const char *name);

/* qchat_v2.c: the version 2 commands, each "void cmd_NAME(q, args)" */
void cmd_history(struct qchat *q, char *args);
void cmd_ghistory(struct qchat *q, char *args);
void cmd_convs(struct qchat *q, char *args);
void cmd_friends(struct qchat *q, char *args);
void cmd_accept(struct qchat *q, char *args);
void cmd_decline(struct qchat *q, char *args);
void cmd_unfriend(struct qchat *q, char *args);
void cmd_block(struct qchat *q, char *args);
void cmd_unblock(struct qchat *q, char *args);
void cmd_members(struct qchat *q, char *args);
void cmd_leave(struct qchat *q, char *args);
void cmd_kick(struct qchat *q, char *args);
void cmd_role(struct qchat *q, char *args);
void cmd_rename(struct qchat *q, char *args);
void cmd_delgroup(struct qchat *q, char *args);
void cmd_passwd(struct qchat *q, char *args);
void cmd_devices(struct qchat *q, char *args);

/* qchat_conv.c */
/* The conversation a chat object belongs to (for me, q->my_id). */
struct conv_key conv_of_chat(struct qchat *q, struct json_object *msg);
/* Record (key, cseq) as shown; false when it was shown before (a duplicate). */
bool conv_first_sight(struct qchat *q, struct conv_key key, int64_t cseq);
/* The newest cseq shown in key: a READ is sent for it at the next flush. */
void conv_mark_shown(struct qchat *q, struct conv_key key, int64_t cseq);
/* READ_MSG pushed from another session: nothing to send up to cseq. */
void conv_mark_read_elsewhere(struct qchat *q, struct conv_key key, int64_t cseq);
/* Send READ_MSG for every conversation shown past its last READ. */
void conv_flush_reads(struct qchat *q);
/* True when a typing line from user in key may be shown now. */
bool conv_typing_due(struct qchat *q, struct conv_key key, int32_t user);
/* Names of users met (login lists, chats), for receipts. */
void conv_learn_name(struct qchat *q, int32_t id, const char *name);
const char *conv_name(struct qchat *q, int32_t id); /* NULL when unknown */
/* Forget everything (another user logs in); free at exit. */
void conv_reset(struct qchat *q);

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
/* After a reconnect: "reconnected: ..." and the offline messages. */
void out_relogin(struct qchat *q, struct json_object *ack);
/* A chat from a history page, a login reply or the wire: shown unless a duplicate. */
void out_offline_item(struct qchat *q, struct json_object *m);
void out_append_chat_member(struct qchat *q, struct buf *b, int64_t gid, struct json_object *u);
void out_append_field(struct buf *b, struct json_object *o, const char *key, const char *fallback);
void out_append_int(struct buf *b, struct json_object *o, const char *key, const char *alt_key);
/* Parse an array item (object, or a string holding one); NULL if bad. */
struct json_object *out_parse_item(struct json_object *item);

/* qchat_tty.c */
int qchat_run_tty(struct qchat *q);
/* Interactive: read a password with echo off into out (QC_PASSWORD_MAX + 1). */
bool qchat_read_password(struct qchat *q, const char *prompt, char *out);

#endif
