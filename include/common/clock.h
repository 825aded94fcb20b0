/*
 * clock.h - the millisecond clocks of every qchat program: the monotonic
 * one for intervals, and the wall clock for times other processes or nodes
 * read (login times, deadlines kept in Redis).
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
/* Milliseconds since the epoch on CLOCK_REALTIME (stepped by NTP: not for intervals). */
int64_t clock_wall_ms(void);

#endif
