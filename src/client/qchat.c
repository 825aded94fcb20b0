/*
 * qchat.c - the qchat terminal client: `qchat [-s] [-t MS] HOST PORT`.
 *
 * On a terminal (stdin and stdout both TTYs, no -s) it behaves like the
 * seed's ChatClient: a menu (1. login 2. register 3. quit), then the
 * seed's commands with line editing and history (qchat_tty.c).  Otherwise
 * it runs in script mode: one command per line from stdin, every outcome
 * and every incoming message printed on stdout, one per line.
 *
 * Commands (both modes; the last argument takes the rest of the line):
 *   help                         list the commands
 *   chat:ID:TEXT                 one-to-one chat
 *   addfriend:ID                 add a friend (mutual)
 *   creategroup:NAME:DESC        create a group (":DESC" may be left out)
 *   addgroup:ID                  join a group
 *   groupchat:ID:TEXT            group chat
 *   loginout                     log out (interactive: back to the menu)
 *   login:ID:PASSWORD            log in
 *   register:NAME:PASSWORD       register a new user
 *   wait:MS                      print incoming messages for MS milliseconds
 *   quit                         leave
 * Script mode skips empty lines and lines starting with '#'.
 *
 * Output, script mode (stable: tests grep it; qchat(1) documents it).
 * Outcome of each command, exactly one line (login: the first line, then
 * its summary lines):
 *   registered id ID
 *   logged in: id ID name NAME
 *   friend: ID NAME STATE                        one per friend
 *   group: GROUPID GROUPNAME GROUPDESC            one per group, then
 *   member: GROUPID USERID NAME STATE ROLE        one per member
 *   offline: <chat line, formats below>           offline messages, oldest first
 *   offline dropped: N                            older offline messages lost
 *   sent: mid MID                                 chat / groupchat ("sent" without mid)
 *   friend added: id ID
 *   group created: id GROUPID
 *   group joined: id GROUPID
 *   logged out
 *   error N: TEXT            the server refused: N its errno, TEXT qc_strerror(N)
 *   error: TEXT              a local failure: "error: usage: chat:friendid:message",
 *                            "error: no reply within MS ms", "error: bad user id",
 *                            "error: unknown command "X" (try help)", ...
 * Incoming, printed as it arrives:
 *   TIME [ID]NAME said: TEXT                      one-to-one chat (seed format)
 *   group message[GROUPID]: TIME [ID]NAME said: TEXT
 *   presence: [ID]NAME online|offline
 *   kicked: REASON
 *   server error N: TEXT                          an error notice without seq
 *   late reply seq S: ok | late reply seq S: error N: TEXT
 *   unknown: JSON
 *   disconnected                                  the server closed the connection
 * TIME is the server's "YYYY-MM-DD HH:MM:SS".  Text from the network has
 * control characters escaped (\n \r \t \xHH), so every item is one line.
 * The interactive mode prints the same lines, except that the login
 * summary is the seed's block (friend and group lists under banners,
 * members indented, offline messages without the "offline: " prefix).
 *
 * Exit status: 0 after quit or end of input (script mode waits
 * QCHAT_EOF_LINGER_MS for stragglers first), 1 when the connection cannot
 * be made or is lost, 2 on a usage error.
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

/* Incoming objects met while a request waits for its reply. */
static void print_skipped(void *arg, struct json_object *obj)
{
    out_incoming(arg, obj);
}

bool qchat_drain(struct qchat *q)
{
    int i;

    if (q->lost)
        return false;
    for (i = 0; i < QCHAT_DRAIN_MAX; i++) {
        struct json_object *obj = qclient_recv(q->c, 0);

        if (obj == NULL) {
            if (errno == ETIMEDOUT)
                return true;
            if (errno == EPROTO)
                out_line(q, "error: protocol error from the server");
            q->lost = true;
            return false;
        }
        out_incoming(q, obj);
        json_object_put(obj);
    }
    return true;
}

/* Keep an idle session alive past the server's idle_timeout. */
static void heartbeat_if_idle(struct qchat *q)
{
    if (!q->logged_in || clock_now_ms() - q->last_send_ms < QCHAT_HEARTBEAT_MS)
        return;
    q->last_send_ms = clock_now_ms();
    if (qclient_heartbeat(q->c, 0, 0) < 0)
        q->lost = true;
}

/* poll() timeout: the caller's, shortened to the next heartbeat. */
static int poll_timeout(struct qchat *q, int64_t deadline)
{
    int64_t now = clock_now_ms();
    int64_t until = deadline;

    if (q->logged_in) {
        int64_t beat = q->last_send_ms + QCHAT_HEARTBEAT_MS;

        if (until < 0 || beat < until)
            until = beat;
    }
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
        int rc;

        if (qclient_buffered(q->c) && !qchat_drain(q))
            break;
        heartbeat_if_idle(q);
        if (q->lost)
            break;
        pfd[n].fd = qclient_fd(q->c);
        pfd[n].events = POLLIN;
        pfd[n++].revents = 0;
        if (in_fd >= 0) {
            pfd[n].fd = in_fd;
            pfd[n].events = POLLIN;
            pfd[n++].revents = 0;
        }
        rc = poll(pfd, n, poll_timeout(q, deadline));
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            out_line(q, "error: poll: %s", strerror(errno));
            q->lost = true;
            break;
        }
        if (pfd[0].revents != 0 && !qchat_drain(q))
            break;
        if (in_fd >= 0 && pfd[1].revents != 0)
            return 1;
        if (deadline >= 0 && clock_now_ms() >= deadline)
            return 0;
    }
    out_disconnected(q);
    return -1;
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
    while (!q->quit && !q->lost) {
        char *line;

        if (take_line(&r, &line)) {
            if (line[0] != '\0' && line[0] != '#')
                qchat_exec(q, line);
            if (!qchat_drain(q))
                out_disconnected(q);
            continue;
        }
        if (r.eof)
            break;
        if (qchat_wait(q, STDIN_FILENO, -1) == 1)
            read_stdin(q, &r);
    }
    buf_free(&r.buf);
    if (!q->quit && !q->lost) {
        linger_end = clock_now_ms() + QCHAT_EOF_LINGER_MS;
        while (!q->lost && clock_now_ms() < linger_end)
            (void)qchat_wait(q, -1, (int)(linger_end - clock_now_ms()));
    }
    return q->lost ? EXIT_LOST : EXIT_SUCCESS;
}

/* ---- main ------------------------------------------------------------- */

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
    char err[256];
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

    q.c = qclient_connect(q.host, q.port, QCHAT_CONNECT_TIMEOUT_MS, err, sizeof err);
    if (q.c == NULL) {
        fprintf(stderr, "qchat: %s\n", err);
        return EXIT_LOST;
    }
    qclient_set_skip_handler(q.c, print_skipped, &q);
    q.last_send_ms = clock_now_ms();

    rc = q.interactive ? qchat_run_tty(&q) : run_script(&q);
    qclient_close(q.c);
    return rc;
}
