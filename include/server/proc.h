/*
 * proc.h - plumbing every qchatd process shares (master, workers, relay):
 * the signals it turns into events on a signalfd and its periodic tick on a
 * timerfd.  (The monotonic clock is common/clock.h, shared by every program.)
 */
#ifndef QCHAT_SERVER_PROC_H
#define QCHAT_SERVER_PROC_H

#include <stdint.h>

/*
 * Block TERM, INT, HUP, USR1 and CHLD (they become events, handled in the
 * loop), ignore SIGPIPE (a closed peer is an error return, not a death), and
 * return a non-blocking signalfd for them, or -1.
 */
int proc_signal_fd(void);
/* A non-blocking timerfd firing every ms milliseconds, or -1. */
int proc_tick_fd(int ms);

#endif
