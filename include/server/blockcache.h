/*
 * blockcache.h - each session's blocks, kept in the worker for the chat
 * check: whom the session's user has blocked and who has blocked them.
 *
 * Loaded through the storage thread when a session starts, then kept right
 * by the session's own BLOCK / UNBLOCK and by the notice the other side's
 * BLOCK / UNBLOCK sends (service_social.c).  A chat (or typing) between two
 * users one of whom blocked the other is refused with error 22 by looking
 * here: no store call on the chat path, so a hung database never stalls it.
 * Until the load has come back, nothing counts as blocked.
 */
#ifndef QCHAT_SERVER_BLOCKCACHE_H
#define QCHAT_SERVER_BLOCKCACHE_H

#include <stdbool.h>
#include <stdint.h>

struct conn;

enum blockcache_side {
    BLOCKS_MINE = 0, /* users this session's user blocked */
    BLOCKS_OF_ME = 1 /* users who blocked this session's user */
};

/* Forget what slot held and start empty for c's current session (not loaded yet). */
void blockcache_begin(const struct conn *c);
/* Add or remove id on one side of c's set; ignored when c's session changed. */
void blockcache_set(const struct conn *c, enum blockcache_side side, int32_t id, bool on);
/* The load of c's session came back: the set now counts. */
void blockcache_loaded(const struct conn *c);
/* Whether c's user and id are separated by a block, either way. */
bool blockcache_blocked(const struct conn *c, int32_t id);

#endif
