/*
 * inttable.h - the one integer hash and the one open-addressing table.
 *
 * int_hash mixes a 32-bit key (user ids, address hashes) so that sequential
 * ids spread over a power-of-two table.  struct inttable maps a non-zero
 * 32-bit key to a 64-bit value: linear probing, at most half full, deletion
 * by backward shift (no tombstones, so lookups never slow down with churn).
 * The shared-memory online table keeps its own layout (fixed, shared between
 * processes, lock-free readers) but hashes with int_hash too.
 */
#ifndef QCHAT_COMMON_INTTABLE_H
#define QCHAT_COMMON_INTTABLE_H

#include <stdbool.h>
#include <stdint.h>

uint32_t int_hash(uint32_t key);

struct inttable;

struct inttable *inttable_new(void);
void inttable_free(struct inttable *t);
/* Set key's value (key != 0).  0, or -1 when out of memory (nothing changed). */
int inttable_put(struct inttable *t, uint32_t key, uint64_t value);
/* key's value into *value: true when present. */
bool inttable_get(const struct inttable *t, uint32_t key, uint64_t *value);
/* Remove key: true when it was present. */
bool inttable_del(struct inttable *t, uint32_t key);
uint32_t inttable_count(const struct inttable *t);
/* Walk: call fn for every entry (the table must not change meanwhile). */
void inttable_foreach(const struct inttable *t, void (*fn)(void *arg, uint32_t key, uint64_t value),
                      void *arg);

#endif
