/*
 * pair_cache.h - the pair conversations whose two ConvCursor rows a store
 * handle knows exist, so that not every append of a pair makes them again
 * (INSERT IGNORE of two rows: a third of the writes of a chat numbered in a
 * transaction of its own).  Both drivers keep one per handle.
 *
 * A pair's cursors are deleted only by conv_delete (which forgets its
 * conversation here; the server deletes groups' conversations only), so an
 * entry, once committed, holds for every handle.  Direct-mapped: a
 * conversation that takes another's slot just makes the other's cursors
 * again at its next append.
 */
#ifndef QCHAT_STORE_PAIR_CACHE_H
#define QCHAT_STORE_PAIR_CACHE_H

#include <stdbool.h>
#include <stdint.h>

struct pair_cache {
    int64_t *slots; /* 2^PAIR_CACHE_BITS, 0 empty; NULL until the first entry */
};

bool pair_cache_has(const struct pair_cache *c, int64_t conv);
/* Remember conv (> 0); out of memory simply remembers nothing. */
void pair_cache_add(struct pair_cache *c, int64_t conv);
void pair_cache_forget(struct pair_cache *c, int64_t conv);
void pair_cache_clear(struct pair_cache *c);
void pair_cache_free(struct pair_cache *c);

#endif
