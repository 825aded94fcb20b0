/*
 * qchat_run.c - one qchat terminal client process in script mode driven
 * by a test (see qchat_run.h): start, write commands, read lines, finish,
 * and kill what a failed test left running.
 */
#include "qchat_run.h"

#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define QCHAT_PROCS_MAX 8 /* qchat processes one test may run at once */

static struct qchat_proc *procs[QCHAT_PROCS_MAX];

static void remember_proc(struct qchat_proc *p)
{
    for (size_t i = 0; i < QCHAT_PROCS_MAX; i++)
        if (procs[i] == NULL) {
            procs[i] = p;
            return;
        }
    H_FAIL("more than %d qchat processes at once", QCHAT_PROCS_MAX);
}

static void forget_proc(struct qchat_proc *p)
{
    for (size_t i = 0; i < QCHAT_PROCS_MAX; i++)
        if (procs[i] == p)
            procs[i] = NULL;
}

void qchat_start(struct qchat_proc *p, int port)
{
    const char *bdir = getenv("B");
    char bin[PATH_MAX], porttext[16];
    int to_child[2], from_child[2];

    snprintf(bin, sizeof bin, "%s/qchat", bdir != NULL && *bdir ? bdir : "build");
    snprintf(porttext, sizeof porttext, "%d", port);
    H_CHECK(access(bin, X_OK) == 0, "%s is not there: %s", bin, strerror(errno));
    H_CHECK(pipe2(to_child, O_CLOEXEC) == 0 && pipe2(from_child, O_CLOEXEC) == 0, "pipe");
    memset(p, 0, sizeof *p);
    p->pid = fork();
    H_CHECK(p->pid >= 0, "fork: %s", strerror(errno));
    if (p->pid == 0) {
        if (dup2(to_child[0], 0) < 0 || dup2(from_child[1], 1) < 0 || dup2(from_child[1], 2) < 0)
            _exit(126);
        signal(SIGPIPE, SIG_DFL);
        execl(bin, bin, "-s", H_HOST, porttext, (char *)NULL);
        _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    p->in = to_child[1];
    p->out = from_child[0];
    remember_proc(p);
}

void qchat_cmd(struct qchat_proc *p, const char *fmt, ...)
{
    char line[8192];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    H_CHECK(n > 0 && (size_t)n < sizeof line - 1, "command too long");
    line[n++] = '\n';
    H_CHECK(write(p->in, line, (size_t)n) == n, "write to qchat: %s", strerror(errno));
}

static void note_transcript(struct qchat_proc *p, const char *line)
{
    size_t n = strlen(line);

    if (p->tlen + n + 2 < sizeof p->transcript) {
        memcpy(p->transcript + p->tlen, line, n);
        p->tlen += n;
        p->transcript[p->tlen++] = '\n';
        p->transcript[p->tlen] = '\0';
    }
}

bool qchat_line(struct qchat_proc *p, char *out, size_t outlen, int timeout_ms)
{
    int64_t deadline = h_now_ms() + timeout_ms;

    for (;;) {
        char *nl = memchr(p->buf, '\n', p->len);
        if (nl != NULL) {
            size_t n = (size_t)(nl - p->buf);
            snprintf(out, outlen, "%.*s", (int)n, p->buf);
            memmove(p->buf, nl + 1, p->len - n - 1);
            p->len -= n + 1;
            note_transcript(p, out);
            return true;
        }
        int left = (int)(deadline - h_now_ms());
        if (p->eof || left <= 0)
            return false;
        struct pollfd pf = { .fd = p->out, .events = POLLIN };
        if (poll(&pf, 1, left) <= 0)
            continue;
        if (p->len == sizeof p->buf)
            H_FAIL("qchat printed a line longer than %zu bytes", sizeof p->buf);
        ssize_t r = read(p->out, p->buf + p->len, sizeof p->buf - p->len);
        if (r <= 0)
            p->eof = true;
        else
            p->len += (size_t)r;
    }
}

void qchat_next(struct qchat_proc *p, const char *want, const char *what)
{
    char line[QCHAT_TRANSCRIPT_MAX];
    bool got = qchat_line(p, line, sizeof line, QCHAT_LINE_MS);

    H_CHECK(got && strcmp(line, want) == 0, "%s: want the line \"%s\", got %s%s%s; output:\n%s",
            what, want, got ? "\"" : "", got ? line : "nothing", got ? "\"" : "", p->transcript);
}

int qchat_finish(struct qchat_proc *p)
{
    char line[QCHAT_TRANSCRIPT_MAX];
    int64_t deadline = h_now_ms() + QCHAT_EXIT_MS;
    int status = 0;
    pid_t r;

    if (p->in >= 0)
        close(p->in);
    p->in = -1;
    while (!p->eof && h_now_ms() < deadline)
        (void)qchat_line(p, line, sizeof line, (int)(deadline - h_now_ms()));
    while (qchat_line(p, line, sizeof line, 0))
        ;
    while ((r = waitpid(p->pid, &status, WNOHANG)) == 0 && h_now_ms() < deadline)
        h_sleep_ms(10);
    if (r == 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &status, 0);
        status = -1;
    }
    close(p->out);
    p->pid = 0;
    forget_proc(p);
    return status == -1 ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void qchat_quit(struct qchat_proc *p, const char *what)
{
    qchat_cmd(p, "quit");
    int rc = qchat_finish(p);
    H_CHECK(rc == 0, "%s: exit status 0 after quit, got %d; output:\n%s", what, rc, p->transcript);
}

void qchat_kill_leftovers(void)
{
    for (size_t i = 0; i < QCHAT_PROCS_MAX; i++) {
        if (procs[i] != NULL && procs[i]->pid > 0) {
            kill(procs[i]->pid, SIGKILL);
            waitpid(procs[i]->pid, NULL, 0);
            if (procs[i]->in >= 0)
                close(procs[i]->in);
            close(procs[i]->out);
            procs[i]->pid = 0;
        }
        procs[i] = NULL;
    }
}
