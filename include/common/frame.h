/*
 * frame.h - incremental JSON object framing for a byte stream.
 *
 * The peer sends JSON objects separated by nothing, whitespace or NUL bytes.
 * A frame_reader is fed bytes as they arrive and hands back each complete
 * top-level object, parsed with json-c's tokener (json_tokener_parse_ex,
 * strict, UTF-8 validated, bounded depth).  The size of one object is checked
 * while it is being read, so an oversize object is refused before it is
 * buffered whole.  Anything but an object at the top level is malformed.
 */
#ifndef QCHAT_COMMON_FRAME_H
#define QCHAT_COMMON_FRAME_H

#include <stddef.h>
#include <json-c/json.h>

#define FRAME_MAX_DEPTH 16   /* nesting accepted in one request */

enum frame_status {
    FRAME_OBJECT = 0,   /* *out holds a complete object (caller must json_object_put) */
    FRAME_NEED_MORE,    /* all input consumed, no complete object yet */
    FRAME_MALFORMED,    /* not JSON / not an object / too deep / bad UTF-8: stream is dead */
    FRAME_TOO_BIG       /* current object exceeds max_bytes: stream is dead */
};

struct frame_reader {
    struct json_tokener *tok;
    size_t max_bytes;       /* bytes one object may take */
    size_t obj_bytes;       /* bytes of the object being parsed so far */
    int    in_object;       /* tokener has started an object */
};

int  frame_reader_init(struct frame_reader *fr, size_t max_bytes);   /* 0 or -1 */
void frame_reader_free(struct frame_reader *fr);
void frame_reader_reset(struct frame_reader *fr);

/*
 * Parse from buf[0..len).  *consumed is set to the bytes used (the caller
 * drops them); call again with the rest while FRAME_OBJECT is returned.
 * Separators (whitespace, NUL) before an object are consumed too.
 */
enum frame_status frame_read(struct frame_reader *fr, const char *buf, size_t len,
                             size_t *consumed, struct json_object **out);

#endif
