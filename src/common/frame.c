/*
 * frame.c - incremental JSON object framing for a byte stream.
 *
 * Objects arrive back to back, or separated by whitespace or NUL bytes (the
 * seed client sends a trailing NUL).  Separators between objects are skipped
 * here; the first other byte must open an object.  The object itself is fed
 * to json-c's tokener (strict, UTF-8 validated, FRAME_MAX_DEPTH levels) in
 * slices no longer than what the size limit still allows plus one byte, so
 * a peer cannot make us parse or buffer more than max_bytes of one object:
 * the byte that crosses the limit is the last one looked at.
 */
#include <limits.h>
#include <stdbool.h>
#include <string.h>

#include "common/frame.h"

/* Trailing characters are the next object: allowed, we resume there. */
#define FRAME_TOKENER_FLAGS \
    (JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS | JSON_TOKENER_VALIDATE_UTF8)

static bool
is_separator(unsigned char c)
{
    return c == '\0' || c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int
frame_reader_init(struct frame_reader *fr, size_t max_bytes)
{
    /* json-c's depth counts its stack slots: depth d admits d - 1 levels. */
    fr->tok = json_tokener_new_ex(FRAME_MAX_DEPTH + 1);
    if (fr->tok == NULL)
        return -1;
    json_tokener_set_flags(fr->tok, FRAME_TOKENER_FLAGS);
    fr->max_bytes = max_bytes;
    fr->obj_bytes = 0;
    fr->in_object = 0;
    return 0;
}

void
frame_reader_free(struct frame_reader *fr)
{
    if (fr->tok != NULL)
        json_tokener_free(fr->tok);
    fr->tok = NULL;
    fr->obj_bytes = 0;
    fr->in_object = 0;
}

void
frame_reader_reset(struct frame_reader *fr)
{
    json_tokener_reset(fr->tok);
    fr->obj_bytes = 0;
    fr->in_object = 0;
}

static size_t
skip_separators(const char *buf, size_t len)
{
    size_t i = 0;

    while (i < len && is_separator((unsigned char)buf[i]))
        i++;
    return i;
}

/* Separator bytes at the end of buf[0..len), i.e. after an object's '}'. */
static size_t
trailing_separators(const char *buf, size_t len)
{
    size_t n = 0;

    while (n < len && is_separator((unsigned char)buf[len - n - 1]))
        n++;
    return n;
}

/* Bytes we may hand the tokener now: what is left of the limit, plus one. */
static size_t
slice_allowed(const struct frame_reader *fr, size_t avail)
{
    size_t room = fr->max_bytes - fr->obj_bytes + 1;

    if (room > INT_MAX)     /* json_tokener_parse_ex takes an int length */
        room = INT_MAX;
    return avail < room ? avail : room;
}

/*
 * A dead stream leaves the reader ready for the next one: a worker shares one
 * reader among all its connections, so an error must not outlive its stream.
 */
static enum frame_status
stream_failed(struct frame_reader *fr, enum frame_status st)
{
    frame_reader_reset(fr);
    return st;
}

enum frame_status
frame_read(struct frame_reader *fr, const char *buf, size_t len,
           size_t *consumed, struct json_object **out)
{
    size_t pos = 0;

    *out = NULL;
    *consumed = 0;

    while (pos < len) {
        struct json_object *obj;
        enum json_tokener_error jerr;
        size_t n, used;

        if (!fr->in_object) {
            pos += skip_separators(buf + pos, len - pos);
            *consumed = pos;
            if (pos == len)
                break;
            if (buf[pos] != '{')
                return stream_failed(fr, FRAME_MALFORMED);
            fr->in_object = 1;
            fr->obj_bytes = 0;
        }

        n = slice_allowed(fr, len - pos);
        obj = json_tokener_parse_ex(fr->tok, buf + pos, (int)n);
        jerr = json_tokener_get_error(fr->tok);

        if (jerr == json_tokener_continue) {
            fr->obj_bytes += n;
            pos += n;
            *consumed = pos;
            if (fr->obj_bytes > fr->max_bytes)
                return stream_failed(fr, FRAME_TOO_BIG);
            continue;
        }
        if (jerr != json_tokener_success || obj == NULL) {
            if (obj != NULL)
                json_object_put(obj);
            return stream_failed(fr, FRAME_MALFORMED);
        }

        /* The tokener also eats whitespace after the closing brace. */
        used = json_tokener_get_parse_end(fr->tok);
        fr->obj_bytes += used - trailing_separators(buf + pos, used);
        if (fr->obj_bytes > fr->max_bytes || !json_object_is_type(obj, json_type_object)) {
            enum frame_status st = fr->obj_bytes > fr->max_bytes ? FRAME_TOO_BIG
                                                                 : FRAME_MALFORMED;
            json_object_put(obj);
            return stream_failed(fr, st);
        }
        pos += used;
        *consumed = pos;
        *out = obj;
        frame_reader_reset(fr);
        return FRAME_OBJECT;
    }
    return FRAME_NEED_MORE;
}
