/*
 * fatal.c - the one way a qchatd process gives up (see fatal.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/fatal.h"
#include "common/log.h"

#define FATAL_MSG_MAX 512

void qc_fatal_at(const char *func, const char *fmt, ...)
{
    char msg[FATAL_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_error("fatal: %s: %s", func, msg);
    abort();
}
