/*
 * buf.c - growable byte buffers with a read offset.
 *
 * Bytes live in [data + off, data + len).  Appending grows the allocation
 * geometrically (doubling, starting at BUF_MIN_CAP); consuming only moves
 * off forward, and the unread bytes are moved back to the front lazily,
 * when an append would otherwise have to grow the allocation or when the
 * buffer becomes empty.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

#define BUF_MIN_CAP      256 /* first allocation, bytes */
#define BUF_PRINTF_GUESS 64  /* room tried before measuring a printf */

void buf_init(struct buf *b)
{
    b->data = NULL;
    b->off = 0;
    b->len = 0;
    b->cap = 0;
}

void buf_free(struct buf *b)
{
    free(b->data);
    buf_init(b);
}

void buf_reset(struct buf *b)
{
    b->off = 0;
    b->len = 0;
}

void buf_compact(struct buf *b)
{
    if (b->off == 0)
        return;
    if (b->len > b->off)
        memmove(b->data, b->data + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
}

static size_t grown_capacity(size_t cap, size_t need)
{
    size_t n = cap < BUF_MIN_CAP ? BUF_MIN_CAP : cap;

    while (n < need) {
        if (n > SIZE_MAX / 2)
            return need;
        n *= 2;
    }
    return n;
}

int buf_reserve(struct buf *b, size_t extra)
{
    size_t used = b->len - b->off;
    size_t ncap;
    char *p;

    if (b->cap - b->len >= extra)
        return 0;
    if (extra > SIZE_MAX - used)
        return -1;
    /* Reclaiming the consumed prefix may be enough. */
    buf_compact(b);
    if (b->cap - used >= extra)
        return 0;
    ncap = grown_capacity(b->cap, used + extra);
    p = realloc(b->data, ncap);
    if (p == NULL)
        return -1;
    b->data = p;
    b->cap = ncap;
    return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int buf_append_str(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_append_char(struct buf *b, char c)
{
    if (b->len == b->cap && buf_reserve(b, 1) < 0)
        return -1;
    b->data[b->len++] = c;
    return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    size_t room;
    int n;

    /* Try in the room we have; grow once to the exact size if needed. */
    if (buf_reserve(b, BUF_PRINTF_GUESS) < 0)
        return -1;
    room = b->cap - b->len;
    va_start(ap, fmt);
    n = vsnprintf(b->data + b->len, room, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t)n >= room) {
        if (buf_reserve(b, (size_t)n + 1) < 0)
            return -1;
        va_start(ap, fmt);
        n = vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
        if (n < 0)
            return -1;
    }
    b->len += (size_t)n;
    return 0;
}

void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len - b->off) {
        b->off = 0;
        b->len = 0;
        return;
    }
    b->off += n;
}

void buf_shrink(struct buf *b, size_t keep_cap)
{
    size_t used = b->len - b->off;
    size_t ncap;
    char *p;

    if (b->cap <= keep_cap || used > keep_cap)
        return;
    buf_compact(b);
    if (keep_cap == 0 && used == 0) {
        buf_free(b);
        return;
    }
    ncap = keep_cap > used ? keep_cap : used;
    p = realloc(b->data, ncap);
    if (p == NULL)
        return; /* keeping the larger block is harmless */
    b->data = p;
    b->cap = ncap;
}
