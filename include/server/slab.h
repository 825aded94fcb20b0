/*
 * slab.h - tables of fixed-size entries named by 32-bit handles.
 *
 * A handle is an index with a generation in its high bits, so a late or
 * duplicate reference (a confirmation arriving twice, for a request long
 * gone) never reaches someone else's entry: slab_get returns NULL.  Each
 * entry starts with a struct slab_hdr.  Pointers into a slab are valid only
 * until the next slab_alloc (the table may move when it grows).
 */
#ifndef QCHAT_SERVER_SLAB_H
#define QCHAT_SERVER_SLAB_H

#include <stddef.h>
#include <stdint.h>

struct slab_hdr {
    uint32_t gen;
    uint32_t live;
};

struct slab;

struct slab *slab_new(size_t esize);
/* At most max entries (default: all that a handle can index). */
void slab_set_max(struct slab *s, uint32_t max);
/* The index a handle names (for tables published by index, like connection slots). */
uint32_t slab_index(uint32_t handle);
void slab_destroy(struct slab *s);
/* A fresh zeroed entry (header set); *handle names it.  NULL when full or out of memory. */
void *slab_alloc(struct slab *s, uint32_t *handle);
/* The live entry named by handle, or NULL. */
void *slab_get(struct slab *s, uint32_t handle);
/* Free a live entry: a stale or foreign handle is a broken contract (fatal). */
void slab_free(struct slab *s, uint32_t handle);
/* Walking every entry: index i < slab_capacity; check hdr->live. */
uint32_t slab_capacity(const struct slab *s);
void *slab_at(struct slab *s, uint32_t i);
uint32_t slab_handle_of(struct slab *s, uint32_t i);

#endif
