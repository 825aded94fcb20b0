/*
 * frame.h - incremental JSON object framing for a byte stream.
 *
 * The peer sends JSON objects separated by nothing, whitespace or NUL bytes.
 * A frame_reader is fed bytes as they arrive and hands back each complete
 * top-level object, parsed with json-c's tokener (json_tokener_parse_ex).
 * Every byte is first checked by a streaming scanner that refuses what
 * json-c lets through but RFC 8259 does not (ill-formed UTF-8, single
 * quotes, NaN/Infinity, raw control characters in strings, numbers outside
 * the grammar) and counts nesting.  The size of one object is checked while
 * it is being read, so an oversize object is refused before it is buffered
 * whole.  Anything but an object at the top level is malformed.
 */
#ifndef QCHAT_COMMON_FRAME_H
#define QCHAT_COMMON_FRAME_H

#include <stddef.h>
#include <json-c/json.h>

#define FRAME_MAX_DEPTH 16 /* objects/arrays nested in one request, the outer one included */

enum frame_status {
    FRAME_OBJECT = 0, /* *out holds a complete object (caller must json_object_put) */
    FRAME_NEED_MORE,  /* all input consumed, no complete object yet */
    FRAME_MALFORMED,  /* not JSON / not an object / too deep / bad UTF-8: stream is dead */
    FRAME_TOO_BIG     /* current object exceeds max_bytes: stream is dead */
};

/*
 * Where the scanner is in the object being read, so that it resumes across
 * reads.  Plain values: a frame_reader may be copied by assignment.
 */
struct frame_scan {
    const char *literal;  /* rest of true/false/null being read; "" = just ended */
    int depth;            /* objects and arrays open */
    unsigned char number; /* where in a number (frame.c), 0 outside one */
    unsigned char in_string;
    unsigned char escaped;   /* a backslash came last, inside a string */
    unsigned char utf8_left; /* continuation bytes still due */
    unsigned char utf8_min;  /* range of the next continuation byte */
    unsigned char utf8_max;
    unsigned char has_real; /* a number with a fraction or exponent */
};

struct frame_reader {
    struct json_tokener *tok;
    struct frame_scan scan;
    size_t max_bytes; /* bytes one object may take */
    size_t obj_bytes; /* bytes of the object being parsed so far */
    int in_object;    /* tokener has started an object */
};

int frame_reader_init(struct frame_reader *fr, size_t max_bytes); /* 0 or -1 */
void frame_reader_free(struct frame_reader *fr);
void frame_reader_reset(struct frame_reader *fr);

/*
 * Parse from buf[0..len).  *consumed is set to the bytes used (the caller
 * drops them); call again with the rest while FRAME_OBJECT is returned.
 * Separators (whitespace, NUL) before an object are consumed too.
 */
enum frame_status frame_read(struct frame_reader *fr, const char *buf, size_t len, size_t *consumed,
                             struct json_object **out);

#endif
