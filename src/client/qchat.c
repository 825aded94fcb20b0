/*
 * qchat.c - the qchat terminal client: `qchat [-s] [-t MS] HOST PORT`.
 *
 * On a terminal (stdin and stdout both TTYs, no -s) it behaves like the
 * seed's ChatClient: a menu (1. login 2. register 3. quit), then the
 * seed's commands with line editing and history (qchat_tty.c).  Otherwise
 * it runs in script mode: one command per line from stdin, every outcome
 * and every incoming message printed on stdout, one per line.  The
 * connection is made at login or register time, and restored when the
 * server drops it (qchat_conn.c).
 *
 * Commands (both modes; the last argument takes the rest of the line):
 *   help                         list the commands
 *   chat:ID:TEXT                 one-to-one chat
 *   addfriend:ID                 add a friend (a request, where consent is asked)
 *   creategroup:NAME:DESC        create a group (":DESC" may be left out)
 *   addgroup:ID                  join a group
 *   groupchat:ID:TEXT            group chat
 *   loginout[:revoke]            log out (interactive: back to the menu)
 *   history:ID[:BEFORE]          a page of the chat with ID (before cseq BEFORE)
 *   ghistory:GID[:BEFORE]        a page of group GID's chat
 *   convs                        conversations with unread counts
 *   friends                      friends, requests in and out, blocked users
 *   accept:ID  decline:ID        answer a friend request
 *   unfriend:ID  block:ID  unblock:ID
 *   members:GID  leave:GID  kick:GID:ID  role:GID:ID:admin|normal
 *   rename:GID:NAME  delgroup:GID
 *   passwd:OLD:NEW               change the password (interactive: "passwd" asks)
 *   devices                      the account's sessions, on every device
 *   login:ID:PASSWORD            log in
 *   register:NAME:PASSWORD       register a new user
 *   wait:MS                      print incoming messages for MS milliseconds
 *   quit                         leave
 * Script mode skips empty lines and lines starting with '#'.
 *
 * Output, script mode (stable: tests grep it; qchat(1) documents it).
 * Outcome of each command, exactly one line (login and the listings: the
 * first line, then one line per item):
 *   registered id ID
 *   logged in: id ID name NAME
 *   friend: ID NAME STATE                        one per friend
 *   group: GROUPID GROUPNAME GROUPDESC            one per group, then
 *   member: GROUPID USERID NAME STATE ROLE        one per member
 *   offline: <chat line, formats below>           offline messages, oldest first
 *   offline dropped: N                            older offline messages lost (v1 server)
 *   sent: mid MID                                 chat / groupchat ("sent" without mid)
 *   friend added: id ID
 *   group created: id GROUPID
 *   group joined: id GROUPID
 *   logged out | logged out, token revoked
 *   history with ID: N messages | history of group GID: N messages, then
 *     cseq C: <chat line>                         oldest first, then maybe
 *     more: history:ID:C | more: ghistory:GID:C   the command for the older page
 *   conversations: N, then
 *     conv: with ID NAME, unread U: <chat line>  | conv: group GID NAME, unread U: ...
 *   friends: F friends, I requests in, O requests out, B blocked, then
 *     friend: ID NAME STATE | request in: ID NAME | request out: ID NAME | blocked: ID NAME
 *   members of group GID: N, then member: lines as above
 *   friend accepted: id ID      friend request declined: id ID    friend removed: id ID
 *   user blocked: id ID         user unblocked: id ID
 *   group left: id GID          group deleted: id GID             group renamed: id GID
 *   member kicked: group GID id ID                role set: group GID id ID ROLE
 *   password changed
 *   error N: TEXT            the server refused: N its errno, TEXT qc_strerror(N)
 *   error: TEXT              a local failure: "error: usage: chat:friendid:message",
 *                            "error: no reply within MS ms", "error: bad user id",
 *                            "error: unknown command "X" (try help)",
 *                            "error: connection lost", "error: not logged in",
 *                            "error: not connected (reconnecting in S s)", ...
 * Incoming, printed as it arrives:
 *   TIME [ID]NAME said: TEXT                      one-to-one chat (seed format)
 *   group message[GROUPID]: TIME [ID]NAME said: TEXT
 *   presence: [ID]NAME online|offline
 *   read by [ID]NAME up to CSEQ                   a receipt
 *   read elsewhere: with ID up to C | read elsewhere: group GID up to C
 *   [ID]NAME is typing | group[GID]: [ID]NAME is typing
 *   friend request: [ID]NAME (accept:ID or decline:ID)
 *   group event[GID]: EVENT[ user ID][ by ID]
 *   kicked: REASON
 *   server error N: TEXT                          an error notice without seq
 *   late reply seq S: ok | late reply seq S: error N: TEXT
 *   unknown: JSON
 *   login timeout              the server closed a connection without a session
 *   disconnected               the server closed it (not logged in, or kicked)
 *   disconnected: reconnecting                    a session's connection dropped
 *   reconnected: id ID name NAME                  restored, then offline: lines
 *   reconnect failed: error N: TEXT               the token was refused: log in again
 * TIME is the server's "YYYY-MM-DD HH:MM:SS".  Text from the network has
 * control characters escaped (\n \r \t \xHH), so every item is one line.
 * A chat whose (conversation, cseq) was shown already is not shown again.
 * The interactive mode prints the same lines, except that the login
 * summary is the seed's block (friend and group lists under banners,
 * members indented, offline messages without the "offline: " prefix).
 *
 * Exit status: 0 after quit or end of input (script mode waits
 * QCHAT_EOF_LINGER_MS for stragglers first), 1 when at that point the
 * last connection could not be made or was lost and not restored (kicked,
 * or the server still away), 2 on a usage error.
 */
#include <errno.h>
#include <locale.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "qchat.h"

#define EXIT_LOST            1
#define EXIT_USAGE           2
#define REPLY_TIMEOUT_MAX_MS (10 * 60 * 1000)
#define PORT_MAX             65535

/* ---- time and sequence numbers ---------------------------------------- */

int64_t qchat_seq(struct qchat *q)
{
    q->last_send_ms = clock_now_ms();
    return q->next_seq++;
}

/* ---- the wait loop ---------------------------------------------------- */

/* Print what the server has sent, up to QCHAT_DRAIN_MAX objects. */
static void print_received(struct qchat *q)
{
    int i;

    for (i = 0; i < QCHAT_DRAIN_MAX && q->c != NULL && !q->broken; i++) {
        struct json_object *obj = qclient_recv(q->c, 0);

        if (obj == NULL) {
            if (errno == ETIMEDOUT)
                return;
            if (errno == EPROTO)
                out_line(q, "error: protocol error from the server");
            q->broken = true;
            return;
        }
        out_incoming(q, obj);
        json_object_put(obj);
    }
}

void qchat_drain(struct qchat *q)
{
    if (q->c != NULL && !q->broken)
        print_received(q);
    if (q->broken)
        qconn_lost(q);
    if (q->c != NULL && q->logged_in)
        conv_flush_reads(q);
    if (q->broken)
        qconn_lost(q);
}

/* Keep an idle session alive past the server's idle_timeout. */
static void heartbeat_if_idle(struct qchat *q)
{
    if (!q->logged_in || q->c == NULL || clock_now_ms() - q->last_send_ms < QCHAT_HEARTBEAT_MS)
        return;
    q->last_send_ms = clock_now_ms();
    if (qclient_heartbeat(q->c, 0, 0) < 0)
        qconn_lost(q);
}

static bool reconnect_planned(const struct qchat *q)
{
    return q->c == NULL && q->logged_in && q->reconnect_at > 0;
}

/* poll() timeout: the caller's, shortened to the next heartbeat or reconnect. */
static int poll_timeout(struct qchat *q, int64_t deadline)
{
    int64_t now = clock_now_ms();
    int64_t until = deadline;

    if (q->logged_in && q->c != NULL) {
        int64_t beat = q->last_send_ms + QCHAT_HEARTBEAT_MS;

        if (until < 0 || beat < until)
            until = beat;
    }
    if (reconnect_planned(q) && (until < 0 || q->reconnect_at < until))
        until = q->reconnect_at;
    if (until < 0)
        return -1;
    if (until <= now)
        return 0;
    return until - now > INT32_MAX ? INT32_MAX : (int)(until - now);
}

int qchat_wait(struct qchat *q, int in_fd, int timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? -1 : clock_now_ms() + timeout_ms;

    for (;;) {
        struct pollfd pfd[2];
        nfds_t n = 0;
        int rc, sock = -1, in = -1;

        if (q->c != NULL && qclient_buffered(q->c))
            qchat_drain(q);
        qconn_reconnect_if_due(q);
        heartbeat_if_idle(q);
        if (q->c != NULL) {
            sock = (int)n;
            pfd[n].fd = qclient_fd(q->c);
            pfd[n].events = POLLIN;
            pfd[n++].revents = 0;
        }
        if (in_fd >= 0) {
            in = (int)n;
            pfd[n].fd = in_fd;
            pfd[n].events = POLLIN;
            pfd[n++].revents = 0;
        }
        if (n == 0 && deadline < 0 && !reconnect_planned(q))
            return 0; /* nothing can ever happen */
        rc = poll(pfd, n, poll_timeout(q, deadline));
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            out_line(q, "error: poll: %s", strerror(errno));
            return 0;
        }
        if (sock >= 0 && pfd[sock].revents != 0)
            qchat_drain(q);
        if (in >= 0 && pfd[in].revents != 0)
            return 1;
        if (deadline >= 0 && clock_now_ms() >= deadline)
            return 0;
    }
}

/* ---- script mode ------------------------------------------------------ */

struct line_reader {
    struct buf buf;
    bool eof;
    bool skipping; /* discarding the rest of an overlong line */
};

/* Cut the next complete line out of r->buf into *line (NUL-terminated, in place). */
static bool take_line(struct line_reader *r, char **line)
{
    char *start, *nl;
    size_t len;

    if (buf_used(&r->buf) == 0)
        return false;
    start = buf_head(&r->buf);
    nl = memchr(start, '\n', buf_used(&r->buf));
    if (nl == NULL) {
        if (!r->eof)
            return false;
        /* last line without a newline */
        if (buf_append_char(&r->buf, '\n') < 0)
            return false;
        start = buf_head(&r->buf);
        nl = start + buf_used(&r->buf) - 1;
    }
    len = (size_t)(nl - start);
    *nl = '\0';
    if (len > 0 && start[len - 1] == '\r')
        start[len - 1] = '\0';
    buf_consume(&r->buf, len + 1);
    *line = start;
    return true;
}

/* One read(2) from stdin.  An overlong line is reported and dropped. */
static void read_stdin(struct qchat *q, struct line_reader *r)
{
    ssize_t n;

    if (buf_reserve(&r->buf, BUFSIZ) < 0) {
        out_line(q, "error: out of memory");
        r->eof = true;
        return;
    }
    n = read(STDIN_FILENO, r->buf.data + r->buf.len, r->buf.cap - r->buf.len);
    if (n < 0) {
        if (errno != EINTR && errno != EAGAIN) {
            out_line(q, "error: reading stdin: %s", strerror(errno));
            r->eof = true;
        }
        return;
    }
    if (n == 0) {
        r->eof = true;
        return;
    }
    r->buf.len += (size_t)n;
    if (r->skipping || buf_used(&r->buf) > QCHAT_LINE_MAX) {
        char *nl = memchr(buf_head(&r->buf), '\n', buf_used(&r->buf));

        if (!r->skipping)
            out_line(q, "error: line longer than %d bytes", QCHAT_LINE_MAX);
        r->skipping = nl == NULL;
        buf_consume(&r->buf, nl == NULL ? buf_used(&r->buf) : (size_t)(nl - buf_head(&r->buf)) + 1);
    }
}

static int run_script(struct qchat *q)
{
    struct line_reader r;
    int64_t linger_end;

    buf_init(&r.buf);
    r.eof = false;
    r.skipping = false;
    while (!q->quit) {
        char *line;

        if (take_line(&r, &line)) {
            if (line[0] != '\0' && line[0] != '#')
                qchat_exec(q, line);
            qchat_drain(q);
            continue;
        }
        if (r.eof)
            break;
        if (qchat_wait(q, STDIN_FILENO, -1) == 1)
            read_stdin(q, &r);
    }
    buf_free(&r.buf);
    if (!q->quit && q->c != NULL) {
        linger_end = clock_now_ms() + QCHAT_EOF_LINGER_MS;
        while (q->c != NULL && clock_now_ms() < linger_end)
            (void)qchat_wait(q, -1, (int)(linger_end - clock_now_ms()));
    }
    return q->trouble ? EXIT_LOST : EXIT_SUCCESS;
}

/* ---- main ------------------------------------------------------------- */

/* LOGIN_MSG "device": "qchat-HOSTNAME", the same for every run on this host. */
static void set_device_name(struct qchat *q)
{
    char host[QCHAT_DEVICE_MAX + 1];

    if (gethostname(host, sizeof host) < 0 || host[0] == '\0')
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    snprintf(q->device, sizeof q->device, "qchat-%.*s", QCHAT_DEVICE_MAX - 6, host);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: qchat [-s] [-t MS] HOST PORT\n"
            "  -s     script mode: commands from stdin, one per line\n"
            "  -t MS  wait at most MS milliseconds for each reply (default %d)\n",
            QCHAT_REPLY_TIMEOUT_MS);
}

static bool parse_int_arg(const char *s, long min, long max, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return false;
    *out = (int)v;
    return true;
}

int main(int argc, char **argv)
{
    struct qchat q;
    bool script = false;
    int opt, rc;

    memset(&q, 0, sizeof q);
    q.reply_timeout_ms = QCHAT_REPLY_TIMEOUT_MS;
    q.next_seq = 1;
    while ((opt = getopt(argc, argv, "st:h")) != -1) {
        switch (opt) {
        case 's': script = true; break;
        case 't':
            if (!parse_int_arg(optarg, 1, REPLY_TIMEOUT_MAX_MS, &q.reply_timeout_ms)) {
                fprintf(stderr, "qchat: -t wants milliseconds, 1..%d\n", REPLY_TIMEOUT_MAX_MS);
                return EXIT_USAGE;
            }
            break;
        case 'h': usage(stdout); return EXIT_SUCCESS;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (argc - optind != 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    q.host = argv[optind];
    if (!parse_int_arg(argv[optind + 1], 1, PORT_MAX, &q.port)) {
        fprintf(stderr, "qchat: bad port \"%s\"\n", argv[optind + 1]);
        return EXIT_USAGE;
    }
    setlocale(LC_CTYPE, "");
    q.interactive = !script && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    if (!q.interactive)
        setvbuf(stdout, NULL, _IOLBF, 0);

    set_device_name(&q);
    q.last_send_ms = clock_now_ms();

    /* No connection yet: login and register make one (qchat_conn.c). */
    rc = q.interactive ? qchat_run_tty(&q) : run_script(&q);
    qconn_close(&q);
    qconn_forget_credentials(&q);
    conv_reset(&q);
    return rc;
}
