/*
 * clock.h - the one monotonic millisecond clock of every qchat program.
 *
 * Timeouts, deadlines, backoff and rate limits measure intervals, so they use
 * CLOCK_MONOTONIC: a wall clock stepped by NTP or an operator must not make a
 * deadline fire early or never.
 */
#ifndef QCHAT_COMMON_CLOCK_H
#define QCHAT_COMMON_CLOCK_H

#include <stdint.h>

/* Milliseconds on CLOCK_MONOTONIC (an arbitrary origin: only differences mean anything). */
int64_t clock_now_ms(void);

#endif
