/*
 * jsonw.h - append JSON text to a buf without building a json-c tree.
 *
 * Replies and forwarded messages are written field by field: the caller
 * opens an object, adds members, closes it.  Strings are escaped per RFC 8259
 * (control characters as \u00XX, '"' and '\\' escaped, "/" left alone; bytes
 * >= 0x80 copied, the input being valid UTF-8 already).  Errors are sticky:
 * after an allocation failure every call is a no-op and jsonw_end returns -1.
 */
#ifndef QCHAT_COMMON_JSONW_H
#define QCHAT_COMMON_JSONW_H

#include <stddef.h>
#include <stdint.h>
#include "common/buf.h"

struct jsonw {
    struct buf *b;
    int first; /* no member written yet at this level */
    int err;
    int depth;
};

void jsonw_begin(struct jsonw *w, struct buf *b); /* writes "{" */
void jsonw_int(struct jsonw *w, const char *key, int64_t v);
void jsonw_str(struct jsonw *w, const char *key, const char *s);
void jsonw_strn(struct jsonw *w, const char *key, const char *s, size_t n);
void jsonw_raw(struct jsonw *w, const char *key, const char *json,
               size_t n); /* pre-serialized value */
void jsonw_bool(struct jsonw *w, const char *key, int v);
void jsonw_array_begin(struct jsonw *w, const char *key);       /* "key":[ */
void jsonw_array_str(struct jsonw *w, const char *s, size_t n); /* string element */
void jsonw_array_end(struct jsonw *w);                          /* ] */
int jsonw_end(struct jsonw *w);                                 /* writes "}", 0 or -1 */

/* Append s[0..n) as a quoted JSON string. */
int json_append_string(struct buf *b, const char *s, size_t n);

#endif
