/*
 * pair_cache.c - the pair conversations whose cursors exist (pair_cache.h).
 */
#include <stdlib.h>
#include <string.h>

#include "pair_cache.h"

#define PAIR_CACHE_BITS 14 /* 2^14 conversations remembered (128 KB) */
#define PAIR_CACHE_SIZE ((size_t)1 << PAIR_CACHE_BITS)

static size_t slot_of(int64_t conv)
{
    return (size_t)(((uint64_t)conv * UINT64_C(0x9E3779B97F4A7C15)) >> (64 - PAIR_CACHE_BITS));
}

bool pair_cache_has(const struct pair_cache *c, int64_t conv)
{
    return c->slots != NULL && c->slots[slot_of(conv)] == conv;
}

void pair_cache_add(struct pair_cache *c, int64_t conv)
{
    if (c->slots == NULL)
        c->slots = calloc(PAIR_CACHE_SIZE, sizeof(*c->slots));
    if (c->slots != NULL)
        c->slots[slot_of(conv)] = conv;
}

void pair_cache_forget(struct pair_cache *c, int64_t conv)
{
    if (pair_cache_has(c, conv))
        c->slots[slot_of(conv)] = 0;
}

void pair_cache_clear(struct pair_cache *c)
{
    if (c->slots != NULL)
        memset(c->slots, 0, PAIR_CACHE_SIZE * sizeof(*c->slots));
}

void pair_cache_free(struct pair_cache *c)
{
    free(c->slots);
    c->slots = NULL;
}
