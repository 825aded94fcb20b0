/*
 * fuzz_frame.c - libFuzzer target: frame.c's flat-object fast path against
 * its json-c tokener path, on arbitrary bytes (tests/unit/frame_diff.h: the
 * stream read whole, byte by byte and in reads of random sizes must give
 * the same objects and the same end, each object what json-c's strict
 * tokener alone makes of its bytes).  A difference aborts.
 *
 * Input: byte 0 picks the object size limit (below SMALL_LIMIT_PICK: a small
 * one, so the limit's path is compared too; else a large one), byte 1 seeds
 * the sizes of the random reads, the rest is the stream.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "../unit/frame_diff.h"

#define BIG_LIMIT        (1024 * 1024)
#define SMALL_LIMIT_PICK 32 /* byte 0 below it: a limit of 8 + 4 * byte 0 */
#define HEADER_BYTES     2

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t objects;
    enum frame_status last;

    if (size < HEADER_BYTES)
        return 0;
    bool small = data[0] < SMALL_LIMIT_PICK;
    size_t max = small ? 8 + 4 * (size_t)data[0] : BIG_LIMIT;
    if (!frame_diff_check((const char *)data + HEADER_BYTES, size - HEADER_BYTES, max, small,
                          (uint64_t)data[1] + 1, &objects, &last))
        abort();
    return 0;
}
