/*
 * qchat_run.h - one qchat terminal client process in script mode
 * (`qchat -s HOST PORT`) driven by a test: its stdin and stdout (with
 * stderr) on pipes, its output read line by line with a transcript kept
 * for failure messages, and its exit collected.  Shared by
 * test_client.c (qchat against a real qchatd) and test_client_v2.c
 * (qchat against a scripted fake server).
 *
 * The helpers fail the running cmocka test on any error.
 */
#ifndef QCHAT_TESTS_QCHAT_RUN_H
#define QCHAT_TESTS_QCHAT_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define QCHAT_LINE_MS        5000 /* longest wait for one expected line */
#define QCHAT_EXIT_MS        5000 /* qchat's exit after stdin is closed */
#define QCHAT_TRANSCRIPT_MAX (64 * 1024)

struct qchat_proc {
    pid_t pid;
    int in;                         /* its stdin, -1 once closed */
    int out;                        /* its stdout + stderr */
    char buf[QCHAT_TRANSCRIPT_MAX]; /* output not yet consumed */
    size_t len;
    char transcript[QCHAT_TRANSCRIPT_MAX]; /* every line so far, for failures */
    size_t tlen;
    bool eof;
};

/* Start $B/qchat (default build/qchat) -s H_HOST port into p. */
void qchat_start(struct qchat_proc *p, int port);

/* Write one command line (a newline is added) to qchat's stdin. */
void qchat_cmd(struct qchat_proc *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Next output line into out; false on timeout or EOF. */
bool qchat_line(struct qchat_proc *p, char *out, size_t outlen, int timeout_ms);

/* The next line must be exactly want. */
void qchat_next(struct qchat_proc *p, const char *want, const char *what);

/* Close stdin, read the rest, return the exit status (-1: did not exit). */
int qchat_finish(struct qchat_proc *p);

/* Send quit; qchat must exit with status 0 (what names the step in a failure). */
void qchat_quit(struct qchat_proc *p, const char *what);

/* Kill and reap every qchat a failed test left behind. */
void qchat_kill_leftovers(void);

#endif
