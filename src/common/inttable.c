/*
 * inttable.c - integer hash and open-addressing table (see inttable.h).
 */
#include <stdlib.h>

#include "common/inttable.h"

#define INTTABLE_MIN 64 /* slots of a new table (a power of two) */

struct slot {
    uint32_t key; /* 0: empty */
    uint64_t value;
};

struct inttable {
    struct slot *s;
    uint32_t mask, used;
};

/* "lowbias32" (Chris Wellons' hash prospector): every key bit reaches every bucket bit. */
uint32_t int_hash(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

struct inttable *inttable_new(void)
{
    struct inttable *t = calloc(1, sizeof *t);
    if (t && (t->s = calloc(INTTABLE_MIN, sizeof *t->s)) == NULL) {
        free(t);
        return NULL;
    }
    if (t)
        t->mask = INTTABLE_MIN - 1;
    return t;
}

void inttable_free(struct inttable *t)
{
    if (t)
        free(t->s);
    free(t);
}

static uint32_t home_of(const struct inttable *t, uint32_t key)
{
    return int_hash(key) & t->mask;
}

static struct slot *find(const struct inttable *t, uint32_t key)
{
    for (uint32_t i = home_of(t, key); t->s[i].key; i = (i + 1) & t->mask)
        if (t->s[i].key == key)
            return &t->s[i];
    return NULL;
}

static void place(struct inttable *t, uint32_t key, uint64_t value)
{
    uint32_t i = home_of(t, key);
    while (t->s[i].key)
        i = (i + 1) & t->mask;
    t->s[i].key = key;
    t->s[i].value = value;
}

static int grow(struct inttable *t)
{
    struct inttable old = *t;
    uint32_t cap = (old.mask + 1) * 2;
    struct slot *s = calloc(cap, sizeof *s);
    if (s == NULL)
        return -1;
    t->s = s;
    t->mask = cap - 1;
    for (uint32_t i = 0; i <= old.mask; i++)
        if (old.s[i].key)
            place(t, old.s[i].key, old.s[i].value);
    free(old.s);
    return 0;
}

int inttable_put(struct inttable *t, uint32_t key, uint64_t value)
{
    if (key == 0)
        return -1; /* 0 marks an empty slot */
    struct slot *x = find(t, key);
    if (x) {
        x->value = value;
        return 0;
    }
    if ((t->used + 1) * 2 > t->mask + 1 && grow(t) < 0)
        return -1;
    place(t, key, value);
    t->used++;
    return 0;
}

bool inttable_get(const struct inttable *t, uint32_t key, uint64_t *value)
{
    const struct slot *x = key ? find(t, key) : NULL;
    if (x && value)
        *value = x->value;
    return x != NULL;
}

bool inttable_del(struct inttable *t, uint32_t key)
{
    struct slot *x = key ? find(t, key) : NULL;
    if (x == NULL)
        return false;
    uint32_t i = (uint32_t)(x - t->s);
    t->s[i].key = 0;
    t->used--;
    /* Backward shift: entries after the hole move up if their home allows. */
    for (uint32_t j = (i + 1) & t->mask; t->s[j].key; j = (j + 1) & t->mask) {
        uint32_t home = home_of(t, t->s[j].key);
        if (((j - home) & t->mask) >= ((j - i) & t->mask)) {
            t->s[i] = t->s[j];
            t->s[j].key = 0;
            i = j;
        }
    }
    return true;
}

uint32_t inttable_count(const struct inttable *t)
{
    return t->used;
}

void inttable_foreach(const struct inttable *t, void (*fn)(void *arg, uint32_t key, uint64_t value),
                      void *arg)
{
    for (uint32_t i = 0; i <= t->mask; i++)
        if (t->s[i].key)
            fn(arg, t->s[i].key, t->s[i].value);
}
