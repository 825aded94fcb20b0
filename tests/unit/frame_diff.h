/*
 * frame_diff.h - the differential check of frame.c's flat-object fast path,
 * shared by tests/unit/test_frame_diff.c (a seeded generator of near-JSON
 * streams) and tests/fuzz/fuzz_frame.c (libFuzzer's inputs).
 *
 * frame_diff_check reads one stream three ways:
 *   - whole, in one read (the fast path is taken where it applies);
 *   - one byte per read (an object is never whole in one read: json-c's
 *     tokener path only, as version 1 read everything);
 *   - in reads of pseudo-random sizes (from chunk_seed).
 * The three must give the same objects (json_object_equal and the same
 * serialized text) at the same stream offsets and end in the same status
 * (with a small limit, both dead counts as the same: an object both over
 * the limit and malformed is refused as whichever it meets first, which
 * depends on where the reads cut it); and each object must be what json-c's
 * strict tokener alone makes of its bytes.  A difference is printed to
 * stderr with the stream.  Static functions only: each user includes it once.
 */
#ifndef QCHAT_TESTS_FRAME_DIFF_H
#define QCHAT_TESTS_FRAME_DIFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/frame.h"

#define FRAME_DIFF_OBJECTS_MAX \
    1024 /* objects one stream may give (fuzz_frame: 2 KB of "{}"); more fails */

struct frame_outcome {
    struct json_object *obj[FRAME_DIFF_OBJECTS_MAX];
    size_t end[FRAME_DIFF_OBJECTS_MAX]; /* stream offset just past each object */
    size_t nobj;
    enum frame_status last;
    const char *broken; /* a broken contract of frame_read, or NULL */
};

static void frame_outcome_free(struct frame_outcome *o)
{
    for (size_t i = 0; i < o->nobj; i++)
        json_object_put(o->obj[i]);
    o->nobj = 0;
}

static uint32_t frame_diff_next(uint64_t *x) /* xorshift64* */
{
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    return (uint32_t)((*x * 0x2545F4914F6CDD1Dull) >> 32);
}

/*
 * Read b[0..n) as a connection would: the bytes arrive in reads of `step`
 * bytes (0: sizes drawn from *x), unconsumed bytes stay in front of the
 * next read.
 */
static void frame_outcome_read(const char *b, size_t n, size_t step, uint64_t *x, size_t max,
                               struct frame_outcome *o)
{
    struct frame_reader fr;
    size_t dropped = 0, have = 0;

    memset(o, 0, sizeof(*o));
    o->last = FRAME_NEED_MORE;
    if (frame_reader_init(&fr, max) != 0) {
        o->broken = "frame_reader_init failed";
        return;
    }
    while (have < n && o->broken == NULL) {
        size_t k = step != 0 ? step : 1 + frame_diff_next(x) % (n - have);

        have += k < n - have ? k : n - have;
        for (;;) {
            struct json_object *obj = NULL;
            size_t consumed = 0;

            o->last = frame_read(&fr, b + dropped, have - dropped, &consumed, &obj);
            if (consumed > have - dropped) {
                o->broken = "consumed more than it was given";
                break;
            }
            dropped += consumed;
            if (o->last != FRAME_OBJECT) {
                if (obj != NULL) {
                    json_object_put(obj);
                    o->broken = "an object with a status other than FRAME_OBJECT";
                }
                if (o->last == FRAME_NEED_MORE && dropped != have)
                    o->broken = "FRAME_NEED_MORE with bytes left unconsumed";
                break;
            }
            if (obj == NULL || o->nobj == FRAME_DIFF_OBJECTS_MAX) {
                json_object_put(obj);
                o->broken = obj == NULL ? "FRAME_OBJECT without an object" : "too many objects";
                break;
            }
            o->end[o->nobj] = dropped;
            o->obj[o->nobj++] = obj;
        }
        if (o->last != FRAME_NEED_MORE)
            break;
    }
    frame_reader_free(&fr);
}

static void frame_diff_dump(const char *b, size_t n)
{
    fprintf(stderr, "stream (%zu bytes): \"", n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        fprintf(stderr, c >= 0x20 && c < 0x7f && c != '\\' ? "%c" : "\\x%02x", c);
    }
    fprintf(stderr, "\"\n");
}

static const char *frame_diff_text(struct json_object *o)
{
    return json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
}

static bool frame_diff_same_end(enum frame_status a, enum frame_status b, bool small_limit)
{
    bool a_dead = a == FRAME_MALFORMED || a == FRAME_TOO_BIG;
    bool b_dead = b == FRAME_MALFORMED || b == FRAME_TOO_BIG;

    return a == b || (small_limit && a_dead && b_dead);
}

static bool frame_outcomes_same(const struct frame_outcome *a, const struct frame_outcome *o,
                                const char *how, bool small_limit)
{
    bool same = a->broken == NULL && o->broken == NULL && a->nobj == o->nobj &&
                frame_diff_same_end(a->last, o->last, small_limit);

    for (size_t i = 0; same && i < a->nobj; i++)
        same = a->end[i] == o->end[i] && json_object_equal(a->obj[i], o->obj[i]) &&
               strcmp(frame_diff_text(a->obj[i]), frame_diff_text(o->obj[i])) == 0;
    if (!same) {
        fprintf(stderr, "whole: %zu object(s), status %d%s%s; %s: %zu object(s), status %d%s%s\n",
                a->nobj, a->last, a->broken ? ", " : "", a->broken ? a->broken : "", how, o->nobj,
                o->last, o->broken ? ", " : "", o->broken ? o->broken : "");
        for (size_t i = 0; i < a->nobj || i < o->nobj; i++)
            fprintf(stderr, "  [%zu] whole %s (to %zu) | %s %s (to %zu)\n", i,
                    i < a->nobj ? frame_diff_text(a->obj[i]) : "-", i < a->nobj ? a->end[i] : 0,
                    how, i < o->nobj ? frame_diff_text(o->obj[i]) : "-",
                    i < o->nobj ? o->end[i] : 0);
    }
    return same;
}

/* Each object is what json-c's strict tokener alone makes of its bytes. */
static bool frame_tokener_agrees(const struct frame_outcome *o, const char *b)
{
    size_t start = 0;

    for (size_t i = 0; i < o->nobj; i++) {
        struct json_tokener *tok = json_tokener_new_ex(FRAME_MAX_DEPTH + 1);
        struct json_object *want = NULL;
        bool same = false;

        if (tok == NULL)
            return false;
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
        while (start < o->end[i] && b[start] != '{')
            start++; /* the separators before it */
        want = json_tokener_parse_ex(tok, b + start, (int)(o->end[i] - start));
        same = want != NULL && json_tokener_get_parse_end(tok) == o->end[i] - start &&
               json_object_equal(want, o->obj[i]) &&
               strcmp(frame_diff_text(want), frame_diff_text(o->obj[i])) == 0;
        if (!same)
            fprintf(stderr, "object %zu: frame_read %s, the tokener alone %s\n", i,
                    frame_diff_text(o->obj[i]), want != NULL ? frame_diff_text(want) : "(refused)");
        json_object_put(want);
        json_tokener_free(tok);
        if (!same)
            return false;
        start = o->end[i];
    }
    return true;
}

/* b[0..n) read whole, byte by byte and in reads of random sizes: the same. */
static bool frame_diff_check(const char *b, size_t n, size_t max, bool small_limit,
                             uint64_t chunk_seed, size_t *objects, enum frame_status *last)
{
    struct frame_outcome whole, bytewise, chunks;
    uint64_t x = chunk_seed | 1;
    bool same;

    frame_outcome_read(b, n, n > 0 ? n : 1, &x, max, &whole);
    frame_outcome_read(b, n, 1, &x, max, &bytewise);
    frame_outcome_read(b, n, 0, &x, max, &chunks);
    same = frame_outcomes_same(&whole, &bytewise, "byte by byte", small_limit) &&
           frame_outcomes_same(&whole, &chunks, "random reads", small_limit) &&
           frame_tokener_agrees(&whole, b);
    if (!same)
        frame_diff_dump(b, n);
    *objects = whole.nobj;
    *last = whole.last;
    frame_outcome_free(&whole);
    frame_outcome_free(&bytewise);
    frame_outcome_free(&chunks);
    return same;
}

#endif
