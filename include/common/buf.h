/*
 * buf.h - growable byte buffers with a read offset.
 *
 * A buf holds bytes in [data + off, data + len). Appending grows the
 * allocation geometrically; consuming advances off and compacts lazily.
 * All functions return 0 on success and -1 on allocation failure.
 */
#ifndef QCHAT_COMMON_BUF_H
#define QCHAT_COMMON_BUF_H

#include <stddef.h>

struct buf {
    char *data;
    size_t off; /* first unread byte */
    size_t len; /* end of valid bytes */
    size_t cap; /* allocated size */
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);                 /* releases memory, re-inits */
void buf_reset(struct buf *b);                /* empties, keeps memory */
int buf_reserve(struct buf *b, size_t extra); /* room for extra more bytes */
int buf_append(struct buf *b, const void *p, size_t n);
int buf_append_str(struct buf *b, const char *s);
int buf_append_char(struct buf *b, char c);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_consume(struct buf *b, size_t n);       /* drop n bytes from the front */
void buf_compact(struct buf *b);                 /* move unread bytes to data[0] */
void buf_shrink(struct buf *b, size_t keep_cap); /* free memory above keep_cap when empty-ish */
static inline size_t buf_used(const struct buf *b)
{
    return b->len - b->off;
}
static inline char *buf_head(const struct buf *b)
{
    return b->data + b->off;
}

#endif
