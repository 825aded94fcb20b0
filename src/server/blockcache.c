/*
 * blockcache.c - each session's blocks, by connection slot (see
 * blockcache.h).  One table per worker process; an entry is valid for the
 * connection generation and session generation it was begun for, so a slot
 * reused by another connection or session never sees the old sets.  The
 * sets are small unsorted arrays: a user blocks few others, and the check
 * walks them.
 */
#include <stdlib.h>
#include <string.h>

#include "server/blockcache.h"
#include "server/conn.h"

#define BLOCKSET_MIN 8 /* first room in one side's array */

struct idset {
    int32_t *ids;
    uint32_t n, cap;
};

struct blockset {
    uint32_t cgen, sgen; /* the session this entry belongs to */
    bool loaded;
    struct idset side[2];
};

static struct blockset *table;
static uint32_t table_len;

static struct blockset *entry_of(const struct conn *c, bool create)
{
    if (c->slot >= table_len) {
        if (!create)
            return NULL;
        uint32_t len = table_len ? table_len : 64;
        while (len <= c->slot)
            len *= 2;
        struct blockset *t = realloc(table, len * sizeof *t);
        if (t == NULL)
            return NULL;
        memset(t + table_len, 0, (len - table_len) * sizeof *t);
        table = t;
        table_len = len;
    }
    struct blockset *b = &table[c->slot];
    if (!create && (b->cgen != c->cgen || b->sgen != c->sgen))
        return NULL;
    return b;
}

static bool idset_has(const struct idset *s, int32_t id)
{
    for (uint32_t i = 0; i < s->n; i++)
        if (s->ids[i] == id)
            return true;
    return false;
}

static void idset_put(struct idset *s, int32_t id)
{
    if (idset_has(s, id))
        return;
    if (s->n == s->cap) {
        uint32_t cap = s->cap ? s->cap * 2 : BLOCKSET_MIN;
        int32_t *p = realloc(s->ids, cap * sizeof *p);
        if (p == NULL)
            return;
        s->ids = p;
        s->cap = cap;
    }
    s->ids[s->n++] = id;
}

static void idset_drop(struct idset *s, int32_t id)
{
    for (uint32_t i = 0; i < s->n; i++)
        if (s->ids[i] == id) {
            s->ids[i] = s->ids[--s->n];
            return;
        }
}

void blockcache_begin(const struct conn *c)
{
    struct blockset *b = entry_of(c, true);
    if (b == NULL)
        return;
    b->cgen = c->cgen;
    b->sgen = c->sgen;
    b->loaded = false;
    b->side[0].n = b->side[1].n = 0;
}

void blockcache_set(const struct conn *c, enum blockcache_side side, int32_t id, bool on)
{
    struct blockset *b = entry_of(c, false);
    if (b == NULL)
        return;
    if (on)
        idset_put(&b->side[side], id);
    else
        idset_drop(&b->side[side], id);
}

void blockcache_loaded(const struct conn *c)
{
    struct blockset *b = entry_of(c, false);
    if (b)
        b->loaded = true;
}

bool blockcache_blocked(const struct conn *c, int32_t id)
{
    const struct blockset *b = entry_of(c, false);
    return b && b->loaded && (idset_has(&b->side[0], id) || idset_has(&b->side[1], id));
}
