/*
 * proc.h - the signals every qchatd process (master, workers, relay) turns
 * into events on a signalfd.  (The tick is common/loop.h's, the monotonic
 * clock common/clock.h's.)
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

#endif
