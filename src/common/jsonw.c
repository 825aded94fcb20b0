/*
 * jsonw.c - append JSON text to a buf without building a json-c tree.
 *
 * The writer keeps one flag, "first", telling whether a comma is due before
 * the next member or element; arrays nest one level inside an object, which
 * is all the protocol's replies need.  Strings are escaped in one pass into
 * space reserved up front (the worst case is six bytes per input byte), so
 * the hot path makes no per-character calls.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/jsonw.h"

#define JSON_ESCAPE_MAX  6  /* "\u00XX" */
#define JSON_INT_MAX_LEN 24 /* "-9223372036854775808" and room */

static const char hex_digits[] = "0123456789abcdef";

/* The bytes with a two-character escape, and the letter after the backslash. */
static const char short_escaped[] = "\"\\\b\f\n\r\t";
static const char short_letter[] = "\"\\bfnrt";

/* Write byte c, escaped when JSON requires it; returns the bytes written. */
static size_t escape_byte(unsigned char c, char *out)
{
    const char *s = memchr(short_escaped, c, sizeof(short_escaped) - 1);

    if (s != NULL) {
        out[0] = '\\';
        out[1] = short_letter[s - short_escaped];
        return 2;
    }
    if (c < 0x20) {
        memcpy(out, "\\u00", 4);
        out[4] = hex_digits[c >> 4];
        out[5] = hex_digits[c & 0xf];
        return JSON_ESCAPE_MAX;
    }
    out[0] = (char)c;
    return 1;
}

static int needs_escape(unsigned char c)
{
    return c < 0x20 || c == '"' || c == '\\';
}

int json_append_string(struct buf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    char *out;

    if (n > (SIZE_MAX - 2) / JSON_ESCAPE_MAX)
        return -1;
    if (buf_reserve(b, n * JSON_ESCAPE_MAX + 2) < 0)
        return -1;
    out = b->data + b->len;
    *out++ = '"';
    while (i < n) {
        size_t run = i;

        while (run < n && !needs_escape(p[run]))
            run++;
        memcpy(out, p + i, run - i);
        out += run - i;
        i = run;
        if (i < n)
            out += escape_byte(p[i++], out);
    }
    *out++ = '"';
    b->len = (size_t)(out - b->data);
    return 0;
}

/*
 * Comma if needed, then "key": (key may be NULL for array elements).  Keys
 * are the program's own literals (member names of the protocol), never
 * client text, so they are copied without escaping, in one reserve.
 */
static void write_key(struct jsonw *w, const char *key)
{
    size_t klen;
    char *out;

    if (w->err)
        return;
    klen = key != NULL ? strlen(key) : 0;
    if (buf_reserve(w->b, klen + 4) < 0) { /* , " key " : */
        w->err = 1;
        return;
    }
    out = w->b->data + w->b->len;
    if (!w->first)
        *out++ = ',';
    w->first = 0;
    if (key != NULL) {
        *out++ = '"';
        memcpy(out, key, klen);
        out += klen;
        *out++ = '"';
        *out++ = ':';
    }
    w->b->len = (size_t)(out - w->b->data);
}

static void write_raw(struct jsonw *w, const char *s, size_t n)
{
    if (!w->err && buf_append(w->b, s, n) < 0)
        w->err = 1;
}

void jsonw_begin(struct jsonw *w, struct buf *b)
{
    w->b = b;
    w->first = 1;
    w->err = 0;
    w->depth = 1;
    write_raw(w, "{", 1);
}

/* Decimal digits of v at the end of buf[0..JSON_INT_MAX_LEN); returns the start. */
static char *format_int(char *end, int64_t v)
{
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    char *p = end;

    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        *--p = '-';
    return p;
}

void jsonw_int(struct jsonw *w, const char *key, int64_t v)
{
    char num[JSON_INT_MAX_LEN];
    char *end = num + sizeof(num);
    char *start;

    write_key(w, key);
    start = format_int(end, v); /* no snprintf: this runs for every field */
    write_raw(w, start, (size_t)(end - start));
}

void jsonw_strn(struct jsonw *w, const char *key, const char *s, size_t n)
{
    write_key(w, key);
    if (!w->err && json_append_string(w->b, s, n) < 0)
        w->err = 1;
}

void jsonw_str(struct jsonw *w, const char *key, const char *s)
{
    jsonw_strn(w, key, s, strlen(s));
}

void jsonw_raw(struct jsonw *w, const char *key, const char *json, size_t n)
{
    write_key(w, key);
    write_raw(w, json, n);
}

void jsonw_bool(struct jsonw *w, const char *key, int v)
{
    write_key(w, key);
    if (v)
        write_raw(w, "true", 4);
    else
        write_raw(w, "false", 5);
}

void jsonw_array_begin(struct jsonw *w, const char *key)
{
    write_key(w, key);
    write_raw(w, "[", 1);
    w->first = 1;
    w->depth++;
}

void jsonw_array_str(struct jsonw *w, const char *s, size_t n)
{
    jsonw_strn(w, NULL, s, n);
}

void jsonw_array_end(struct jsonw *w)
{
    write_raw(w, "]", 1);
    w->first = 0; /* the array itself was a member */
    w->depth--;
}

int jsonw_end(struct jsonw *w)
{
    write_raw(w, "}", 1);
    w->depth--;
    return w->err ? -1 : 0;
}
