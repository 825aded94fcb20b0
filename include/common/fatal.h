/*
 * fatal.h - contracts that must hold, and the way a process gives up.
 *
 * qc_fatal logs one line naming the function, then aborts: a qchatd child
 * that aborts is reaped and respawned by the master (with backoff), which is
 * the right answer to a state that can no longer be trusted - a stale
 * handle, a count below zero, a malformed packet from a sibling process.
 * qc_assert is the check; unlike assert(3) it stays in release builds.
 */
#ifndef QCHAT_COMMON_FATAL_H
#define QCHAT_COMMON_FATAL_H

void qc_fatal_at(const char *func, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 2, 3)));

#define qc_fatal(...) qc_fatal_at(__func__, __VA_ARGS__)

#define qc_assert(cond)                                           \
    do {                                                          \
        if (__builtin_expect(!(cond), 0))                         \
            qc_fatal_at(__func__, "assertion failed: %s", #cond); \
    } while (0)

#endif
