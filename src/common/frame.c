/*
 * frame.c - incremental JSON object framing for a byte stream.
 *
 * Objects arrive back to back, or separated by whitespace or NUL bytes (the
 * seed client sends a trailing NUL).  Separators between objects are skipped
 * here; the first other byte must open an object.
 *
 * The object's bytes go through two stages.  First a streaming scanner
 * (state in struct frame_scan, so it resumes across reads) checks what
 * json-c's strict tokener does not: well-formed UTF-8 (Unicode Table 3-7:
 * no overlongs, surrogates or code points past U+10FFFF, and a multi-byte
 * character may be split across reads), no raw control characters in
 * strings, no single quotes, no NaN/Infinity or other bare words, numbers
 * as RFC 8259 spells them, and at most FRAME_MAX_DEPTH nested objects and
 * arrays.  It also finds the brace that closes the object, so the tokener is
 * fed exactly the object's bytes and nothing after them.  Then json-c's
 * tokener parses those same bytes.
 *
 * Bytes are handed over in slices no longer than what the size limit still
 * allows plus one byte, so a peer cannot make us parse or buffer more than
 * max_bytes of one object: the byte that crosses the limit is the last one
 * looked at.
 *
 * A flat object that arrives whole in one read (every request on the chat
 * path: string and integer members only) skips the tokener: flat_object
 * builds the same json-c object from the bytes the scanner has checked.
 * json_tokener_parse_ex switches the thread to the C locale and back on
 * every call (newlocale, duplocale, freelocale) and builds its own state;
 * that was about a third of the instructions a chat cost the worker.
 * Anything else (an escape in a string, a real number, an integer of more
 * than FLAT_INT_DIGITS_MAX digits, a nested value, true/false/null, an
 * object split across reads, or anything flat_object does not expect)
 * goes to the tokener as before, which also gives every refusal.
 */
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "common/frame.h"

/*
 * json-c's own depth limit counts stack slots: depth d admits d levels when
 * the innermost one is empty but only d - 1 when it holds a value.  The
 * scanner counts levels exactly; the tokener only needs room for
 * FRAME_MAX_DEPTH levels with a value inside the innermost.
 */
#define TOKENER_DEPTH (FRAME_MAX_DEPTH + 1)

/* Strict, and no JSON_TOKENER_VALIDATE_UTF8: the scanner does that, and
 * json-c 0.16's check fails on a character split across two reads. */
#define FRAME_TOKENER_FLAGS JSON_TOKENER_STRICT

#define ASCII_CONTROL_END 0x20 /* bytes below are control characters */
#define ASCII_END         0x80 /* bytes from here on are UTF-8 sequences */
#define UTF8_CONT_MIN     0x80 /* range of a continuation byte */
#define UTF8_CONT_MAX     0xbf
#define STRING_REFUSED    SIZE_MAX

#define FLAT_INT_DIGITS_MAX 18 /* fewer digits always fit int64_t, as json-c reads them */
#define FLAT_KEY_MAX        64 /* longer member names go to the tokener */

/* Where in a number the scanner is (struct frame_scan.number). */
enum number_state {
    NUM_NONE = 0, /* not in a number */
    NUM_MINUS,    /* "-": a digit must follow */
    NUM_ZERO,     /* a leading "0": no more integer digits */
    NUM_INT,      /* integer digits */
    NUM_POINT,    /* ".": a digit must follow */
    NUM_FRACTION, /* fraction digits */
    NUM_E,        /* "e" or "E": a sign or a digit must follow */
    NUM_E_SIGN,   /* exponent sign: a digit must follow */
    NUM_EXPONENT, /* exponent digits */
    NUM_END       /* the byte does not continue the number */
};

enum scan_result {
    SCAN_OPEN,   /* all bytes are fine, the object goes on */
    SCAN_CLOSED, /* the object's closing brace is among them */
    SCAN_REFUSED /* not JSON */
};

/*
 * Unicode Table 3-7, the well-formed UTF-8 byte sequences: what a lead byte
 * asks of the bytes after it (continuation bytes after the first one are
 * always 80..BF).  Indexed by utf8_lead_kinds[byte].
 */
enum utf8_lead_kind {
    LEAD_NONE = 0, /* cannot lead: ASCII, continuation, C0, C1, F5..FF */
    LEAD_2,        /* C2..DF */
    LEAD_E0,
    LEAD_3, /* E1..EC, EE..EF */
    LEAD_ED,
    LEAD_F0,
    LEAD_4, /* F1..F3 */
    LEAD_F4
};

static const struct utf8_lead {
    unsigned char continuations, next_min, next_max;
} utf8_leads[] = {
    [LEAD_NONE] = { 0, 0, 0 },     [LEAD_2] = { 1, 0x80, 0xbf },
    [LEAD_E0] = { 2, 0xa0, 0xbf },                                /* no overlong forms */
    [LEAD_3] = { 2, 0x80, 0xbf },  [LEAD_ED] = { 2, 0x80, 0x9f }, /* no surrogates D800..DFFF */
    [LEAD_F0] = { 3, 0x90, 0xbf },                                /* no overlong forms */
    [LEAD_4] = { 3, 0x80, 0xbf },  [LEAD_F4] = { 3, 0x80, 0x8f }, /* nothing past U+10FFFF */
};

/* Ranges in initializers are a GNU C extension (gcc and clang). */
static const unsigned char utf8_lead_kinds[UCHAR_MAX + 1] = {
    [0xc2 ... 0xdf] = LEAD_2, [0xe0] = LEAD_E0, [0xe1 ... 0xec] = LEAD_3, [0xed] = LEAD_ED,
    [0xee ... 0xef] = LEAD_3, [0xf0] = LEAD_F0, [0xf1 ... 0xf3] = LEAD_4, [0xf4] = LEAD_F4,
};

/* Bytes that stand for themselves inside a string: printable ASCII but the
 * quote and the backslash. */
static const bool plain_string_byte[UCHAR_MAX + 1] = {
    [ASCII_CONTROL_END... '"' - 1] = true,
    ['"' + 1 ... '\\' - 1] = true,
    ['\\' + 1 ... ASCII_END - 1] = true,
};

static bool is_separator(unsigned char c)
{
    return c == '\0' || c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_exponent_mark(unsigned char c)
{
    return c == 'e' || c == 'E';
}

/* What may follow a number or a literal: JSON whitespace, ',', ']', '}'. */
static bool ends_value(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',' || c == ']' || c == '}';
}

/* The byte after a backslash in a string. */
static bool is_escape_char(unsigned char c)
{
    switch (c) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't':
    case 'u': return true;
    default: return false;
    }
}

static enum number_state number_next(enum number_state st, unsigned char c)
{
    switch (st) {
    case NUM_MINUS: return c == '0' ? NUM_ZERO : is_digit(c) ? NUM_INT : NUM_END;
    case NUM_ZERO: return c == '.' ? NUM_POINT : is_exponent_mark(c) ? NUM_E : NUM_END;
    case NUM_INT:
        return is_digit(c) ? NUM_INT : c == '.' ? NUM_POINT : is_exponent_mark(c) ? NUM_E : NUM_END;
    case NUM_POINT: return is_digit(c) ? NUM_FRACTION : NUM_END;
    case NUM_FRACTION: return is_digit(c) ? NUM_FRACTION : is_exponent_mark(c) ? NUM_E : NUM_END;
    case NUM_E: return c == '+' || c == '-' ? NUM_E_SIGN : is_digit(c) ? NUM_EXPONENT : NUM_END;
    case NUM_E_SIGN:
    case NUM_EXPONENT: return is_digit(c) ? NUM_EXPONENT : NUM_END;
    default: return NUM_END;
    }
}

static bool number_may_end_in(enum number_state st)
{
    return st == NUM_ZERO || st == NUM_INT || st == NUM_FRACTION || st == NUM_EXPONENT;
}

/* Continuation bytes due from p[*i] on, as many as there are. */
static bool take_continuations(struct frame_scan *s, const unsigned char *p, size_t *i, size_t n)
{
    while (s->utf8_left > 0 && *i < n) {
        unsigned char c = p[*i];

        if (c < s->utf8_min || c > s->utf8_max)
            return false;
        s->utf8_min = UTF8_CONT_MIN;
        s->utf8_max = UTF8_CONT_MAX;
        s->utf8_left--;
        (*i)++;
    }
    return true;
}

/*
 * String content from p[i], up to p[n]: the index of the closing quote,
 * n when the string goes on past the bytes, STRING_REFUSED if not JSON
 * (raw control characters, bad escapes, ill-formed UTF-8).  An escape or a
 * character is taken whole where it starts; only one cut by the end of the
 * bytes is left in *s for the next call.
 */
static size_t scan_string(struct frame_scan *s, const unsigned char *p, size_t i, size_t n)
{
    if (s->escaped && i < n) {
        if (!is_escape_char(p[i++]))
            return STRING_REFUSED;
        s->escaped = 0;
    }
    if (!take_continuations(s, p, &i, n))
        return STRING_REFUSED;

    while (i < n) {
        unsigned char c = p[i++];

        if (plain_string_byte[c])
            continue; /* most bytes of a request */
        if (c == '"') {
            s->in_string = 0;
            return i - 1;
        }
        if (c == '\\') {
            if (i == n) {
                s->escaped = 1;
                break;
            }
            if (!is_escape_char(p[i++])) /* \u's hex digits are json-c's job */
                return STRING_REFUSED;
        } else if (c >= ASCII_END && utf8_lead_kinds[c] != LEAD_NONE) {
            const struct utf8_lead *lead = &utf8_leads[utf8_lead_kinds[c]];

            s->utf8_left = lead->continuations;
            s->utf8_min = lead->next_min;
            s->utf8_max = lead->next_max;
            if (!take_continuations(s, p, &i, n))
                return STRING_REFUSED;
        } else {
            return STRING_REFUSED; /* a control character or a byte that cannot lead */
        }
    }
    return n;
}

/*
 * Check p[0..*len) as the continuation of the object being read.  When the
 * object's closing brace is among the bytes, *len is cut back to end with it.
 */
static enum scan_result scan_bytes(struct frame_scan *sc, const unsigned char *p, size_t *len)
{
    struct frame_scan s = *sc;
    enum scan_result res = SCAN_OPEN;
    size_t i;

    for (i = 0; i < *len; i++) {
        unsigned char c;

        if (s.in_string) {
            /* On to its closing quote, or to the end of the bytes. */
            i = scan_string(&s, p, i, *len);
            if (i == STRING_REFUSED)
                goto refused;
            continue;
        }
        c = p[i];
        if (s.number != NUM_NONE) {
            enum number_state next = number_next((enum number_state)s.number, c);

            if (next != NUM_END) {
                if (next == NUM_POINT || next == NUM_E)
                    s.has_real = 1;
                s.number = (unsigned char)next;
                continue;
            }
            if (!number_may_end_in((enum number_state)s.number) || !ends_value(c))
                goto refused;
            s.number = NUM_NONE;
        }
        if (s.literal != NULL) {
            if (*s.literal != '\0') {
                if (c != (unsigned char)*s.literal)
                    goto refused;
                s.literal++;
                continue;
            }
            if (!ends_value(c))
                goto refused;
            s.literal = NULL;
        }
        switch (c) {
        case '"': s.in_string = 1; break;
        case '{':
        case '[':
            if (++s.depth > FRAME_MAX_DEPTH)
                goto refused;
            break;
        case '}':
        case ']':
            if (--s.depth == 0) {
                *len = i + 1;
                res = SCAN_CLOSED;
                goto done;
            }
            break;
        case ',':
        case ':':
        case ' ':
        case '\t':
        case '\n':
        case '\r': break;
        case '-': s.number = NUM_MINUS; break;
        case '0': s.number = NUM_ZERO; break;
        case '1':
        case '2':
        case '3':
        case '4':
        case '5':
        case '6':
        case '7':
        case '8':
        case '9': s.number = NUM_INT; break;
        case 't': s.literal = "rue"; break;
        case 'f': s.literal = "alse"; break;
        case 'n': s.literal = "ull"; break;
        default: goto refused; /* quotes, NaN, Infinity, comments, stray bytes */
        }
    }
done:
    *sc = s;
    return res;
refused:
    *sc = s;
    return SCAN_REFUSED;
}

/* json-c turns a number beyond a double's range into an infinity. */
static bool doubles_all_finite(struct json_object *o)
{
    switch (json_object_get_type(o)) {
    case json_type_double: return isfinite(json_object_get_double(o));
    case json_type_object: {
        struct json_object_iter member;

        json_object_object_foreachC(o, member)
        {
            if (!doubles_all_finite(member.val))
                return false;
        }
        return true;
    }
    case json_type_array:
        for (size_t i = 0; i < json_object_array_length(o); i++) {
            if (!doubles_all_finite(json_object_array_get_idx(o, i)))
                return false;
        }
        return true;
    default: return true;
    }
}

/* ---- the flat-object fast path -------------------------------------------- */

static const char *skip_blanks(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* The closing quote of the string opened at p, when it has no escape; else NULL. */
static const char *plain_string_end(const char *p, const char *end)
{
    const char *q = memchr(p + 1, '"', (size_t)(end - p - 1));
    if (q == NULL || memchr(p + 1, '\\', (size_t)(q - p - 1)) != NULL)
        return NULL;
    return q;
}

/* The string or integer value at *pp (past it on success), or NULL: not flat. */
static struct json_object *flat_value(const char **pp, const char *end)
{
    const char *p = *pp;
    if (*p == '"') {
        const char *q = plain_string_end(p, end);
        if (q == NULL)
            return NULL;
        *pp = q + 1;
        return json_object_new_string_len(p + 1, (int)(q - p - 1));
    }
    bool negative = *p == '-';
    const char *d = p + negative, *q = d;
    int64_t v = 0;
    while (q < end && is_digit((unsigned char)*q)) {
        if (q - d == FLAT_INT_DIGITS_MAX)
            return NULL;
        v = v * 10 + (*q++ - '0');
    }
    if (q == d)
        return NULL;
    *pp = q;
    return json_object_new_int64(negative ? -v : v);
}

/*
 * The object in p[0..n) (checked by the scanner, '{' first and its closing
 * '}' last) when it is flat: members whose names and string values have no
 * escape and whose other values are integers.  NULL: the tokener parses it.
 * A repeated name keeps its last value, as with the tokener.
 */
static struct json_object *flat_object(const char *p, size_t n)
{
    const char *end = p + n, *q = skip_blanks(p + 1, end);
    struct json_object *obj = json_object_new_object();
    if (obj == NULL)
        return NULL;
    if (q < end && *q == '}')
        goto closed;
    for (;;) {
        char key[FLAT_KEY_MAX + 1];
        const char *ke = q < end && *q == '"' ? plain_string_end(q, end) : NULL;
        if (ke == NULL || (size_t)(ke - q - 1) > FLAT_KEY_MAX)
            goto not_flat;
        memcpy(key, q + 1, (size_t)(ke - q - 1));
        key[ke - q - 1] = '\0';
        q = skip_blanks(ke + 1, end);
        if (q >= end || *q != ':')
            goto not_flat;
        q = skip_blanks(q + 1, end);
        struct json_object *v = q < end ? flat_value(&q, end) : NULL;
        if (v == NULL)
            goto not_flat;
        if (json_object_object_add(obj, key, v) != 0) {
            json_object_put(v);
            goto not_flat;
        }
        q = skip_blanks(q, end);
        if (q < end && *q == '}')
            break;
        if (q >= end || *q != ',')
            goto not_flat;
        q = skip_blanks(q + 1, end);
    }
closed:
    if (q + 1 == end)
        return obj;
not_flat:
    json_object_put(obj);
    return NULL;
}

static void scan_reset(struct frame_scan *s)
{
    *s = (struct frame_scan){ .literal = NULL, .number = NUM_NONE };
}

int frame_reader_init(struct frame_reader *fr, size_t max_bytes)
{
    fr->tok = json_tokener_new_ex(TOKENER_DEPTH);
    if (fr->tok == NULL)
        return -1;
    json_tokener_set_flags(fr->tok, FRAME_TOKENER_FLAGS);
    scan_reset(&fr->scan);
    fr->max_bytes = max_bytes;
    fr->obj_bytes = 0;
    fr->in_object = 0;
    return 0;
}

void frame_reader_free(struct frame_reader *fr)
{
    if (fr->tok != NULL)
        json_tokener_free(fr->tok);
    fr->tok = NULL;
    scan_reset(&fr->scan);
    fr->obj_bytes = 0;
    fr->in_object = 0;
}

void frame_reader_reset(struct frame_reader *fr)
{
    json_tokener_reset(fr->tok);
    scan_reset(&fr->scan);
    fr->obj_bytes = 0;
    fr->in_object = 0;
}

static size_t skip_separators(const char *buf, size_t len)
{
    size_t i = 0;

    while (i < len && is_separator((unsigned char)buf[i]))
        i++;
    return i;
}

/* Bytes we may hand the tokener now: what is left of the limit, plus one. */
static size_t slice_allowed(const struct frame_reader *fr, size_t avail)
{
    size_t room = fr->max_bytes - fr->obj_bytes + 1;

    if (room > INT_MAX) /* json_tokener_parse_ex takes an int length */
        room = INT_MAX;
    return avail < room ? avail : room;
}

/*
 * A dead stream leaves the reader ready for the next one: a worker shares one
 * reader among all its connections, so an error must not outlive its stream.
 */
static enum frame_status stream_failed(struct frame_reader *fr, enum frame_status st)
{
    frame_reader_reset(fr);
    return st;
}

/* The tokener's verdict on the bytes that closed the object. */
static bool object_complete(struct frame_reader *fr, struct json_object *obj, size_t fed)
{
    return json_tokener_get_error(fr->tok) == json_tokener_success && obj != NULL &&
           json_tokener_get_parse_end(fr->tok) == fed &&
           json_object_is_type(obj, json_type_object) &&
           (!fr->scan.has_real || doubles_all_finite(obj));
}

enum frame_status frame_read(struct frame_reader *fr, const char *buf, size_t len, size_t *consumed,
                             struct json_object **out)
{
    size_t pos = 0;

    *out = NULL;
    *consumed = 0;

    while (pos < len) {
        struct json_object *obj;
        enum scan_result scan;
        size_t n;

        if (!fr->in_object) {
            pos += skip_separators(buf + pos, len - pos);
            *consumed = pos;
            if (pos == len)
                break;
            if (buf[pos] != '{')
                return stream_failed(fr, FRAME_MALFORMED);
            fr->in_object = 1;
            fr->obj_bytes = 0;
            scan_reset(&fr->scan);
        }

        n = slice_allowed(fr, len - pos);
        scan = scan_bytes(&fr->scan, (const unsigned char *)buf + pos, &n);
        if (scan == SCAN_REFUSED)
            return stream_failed(fr, FRAME_MALFORMED);
        fr->obj_bytes += n;
        if (fr->obj_bytes > fr->max_bytes) {
            *consumed = pos + n;
            return stream_failed(fr, FRAME_TOO_BIG);
        }

        if (scan == SCAN_CLOSED && fr->obj_bytes == n && !fr->scan.has_real &&
            (obj = flat_object(buf + pos, n)) != NULL) {
            /* Whole in this read and flat: the tokener has not seen it. */
            pos += n;
            *consumed = pos;
            *out = obj;
            frame_reader_reset(fr);
            return FRAME_OBJECT;
        }
        obj = json_tokener_parse_ex(fr->tok, buf + pos, (int)n);
        if (scan == SCAN_OPEN && json_tokener_get_error(fr->tok) == json_tokener_continue) {
            pos += n;
            *consumed = pos;
            continue;
        }
        if (scan == SCAN_OPEN || !object_complete(fr, obj, n)) {
            if (obj != NULL)
                json_object_put(obj);
            return stream_failed(fr, FRAME_MALFORMED);
        }
        pos += n;
        *consumed = pos;
        *out = obj;
        frame_reader_reset(fr);
        return FRAME_OBJECT;
    }
    return FRAME_NEED_MORE;
}
