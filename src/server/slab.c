/*
 * slab.c - handle tables (see slab.h): the worker's pending requests and
 * hand-offs, the relay's deliveries waiting for a worker's confirmation.
 */
#include <stdlib.h>
#include <string.h>

#include "common/fatal.h"
#include "server/slab.h"

#define HANDLE_INDEX_BITS 20
#define HANDLE_INDEX_MASK ((1u << HANDLE_INDEX_BITS) - 1)
#define HANDLE_GEN_MASK   0xfffu
#define SLAB_MIN          64

struct slab {
    char *mem;
    size_t esize;
    uint32_t cap;
    uint32_t *freelist;
    uint32_t nfree;
    uint32_t max;
};

struct slab *slab_new(size_t esize)
{
    struct slab *s = calloc(1, sizeof *s);
    if (s) {
        s->esize = esize;
        s->max = HANDLE_INDEX_MASK + 1;
    }
    return s;
}

void slab_set_max(struct slab *s, uint32_t max)
{
    s->max = max < HANDLE_INDEX_MASK + 1 ? max : HANDLE_INDEX_MASK + 1;
}

uint32_t slab_index(uint32_t handle)
{
    return handle & HANDLE_INDEX_MASK;
}

void slab_destroy(struct slab *s)
{
    if (s) {
        free(s->mem);
        free(s->freelist);
        free(s);
    }
}

uint32_t slab_capacity(const struct slab *s)
{
    return s->cap;
}

void *slab_at(struct slab *s, uint32_t i)
{
    return s->mem + (size_t)i * s->esize;
}

uint32_t slab_handle_of(struct slab *s, uint32_t i)
{
    const struct slab_hdr *h = slab_at(s, i);
    return h->gen << HANDLE_INDEX_BITS | i;
}

static int slab_grow(struct slab *s)
{
    uint32_t ncap = s->cap ? s->cap * 2 : SLAB_MIN;
    if (ncap > s->max)
        ncap = s->max;
    if (ncap <= s->cap)
        return -1;
    char *mem = realloc(s->mem, (size_t)ncap * s->esize);
    if (mem == NULL)
        return -1;
    s->mem = mem;
    uint32_t *fl = realloc(s->freelist, ncap * sizeof *fl);
    if (fl == NULL)
        return -1;
    s->freelist = fl;
    memset(mem + (size_t)s->cap * s->esize, 0, (size_t)(ncap - s->cap) * s->esize);
    for (uint32_t i = ncap; i > s->cap; i--)
        fl[s->nfree++] = i - 1;
    s->cap = ncap;
    return 0;
}

void *slab_alloc(struct slab *s, uint32_t *handle)
{
    if (s->nfree == 0 && slab_grow(s) < 0)
        return NULL;
    uint32_t i = s->freelist[--s->nfree];
    struct slab_hdr *h = slab_at(s, i);
    uint32_t gen = (h->gen + 1) & HANDLE_GEN_MASK;
    if (gen == 0)
        gen = 1;
    memset(h, 0, s->esize);
    h->gen = gen;
    h->live = 1;
    *handle = gen << HANDLE_INDEX_BITS | i;
    return h;
}

void *slab_get(struct slab *s, uint32_t handle)
{
    uint32_t i = handle & HANDLE_INDEX_MASK;
    if (handle == 0 || i >= s->cap)
        return NULL;
    struct slab_hdr *h = slab_at(s, i);
    if (!h->live || h->gen != handle >> HANDLE_INDEX_BITS)
        return NULL;
    return h;
}

void slab_free(struct slab *s, uint32_t handle)
{
    struct slab_hdr *h = slab_get(s, handle);
    qc_assert(h != NULL);
    h->live = 0;
    s->freelist[s->nfree++] = handle & HANDLE_INDEX_MASK;
}
