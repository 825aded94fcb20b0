/*
 * redis_cluster.h - what the relay needs to speak to a Redis Cluster
 * (`[redis] cluster = yes`): the key-hash-slot function exactly as Redis
 * defines it (CRC16/XMODEM of the key, or of its {hash tag}, mod 16384),
 * the slot map read with CLUSTER SLOTS from a seed node, and sharded
 * SSUBSCRIBE/SUNSUBSCRIBE on a hiredis async context that predates them.
 */
#ifndef QCHAT_SERVER_REDIS_CLUSTER_H
#define QCHAT_SERVER_REDIS_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#define RC_SLOTS       16384
#define RC_MASTERS_MAX 16 /* masters one relay connects to */
#define RC_HOST_MAX    64

struct rc_master {
    char host[RC_HOST_MAX];
    int port;
};

/* Which master owns each slot.  complete: every slot has one. */
struct rc_map {
    uint32_t nmasters;
    struct rc_master masters[RC_MASTERS_MAX];
    uint8_t owner[RC_SLOTS];
    bool complete;
};

/* CRC16/XMODEM (polynomial 0x1021, initial 0), the checksum of Redis's cluster. */
uint16_t rc_crc16(const char *buf, size_t len);

/* The hash slot of key (0..16383), honouring the first non-empty {hash tag}. */
uint32_t rc_keyslot(const char *key, size_t len);

/* Index in map->masters of the master owning key's slot. */
uint32_t rc_master_of(const struct rc_map *map, const char *key);

/*
 * Build map from a CLUSTER SLOTS reply; a master announced with an empty
 * host (cluster-announce unset) is taken at seed_host.  0, or -1 with err.
 */
int rc_map_from_slots(struct rc_map *map, const redisReply *rep, const char *seed_host, char *err,
                      size_t errlen);

/*
 * Read the slot map from the first of the nodes that answers within
 * timeout_ms each: host:port first, then the masters of old (may be NULL),
 * so a map survives the loss of the seed.  Blocking; 0, or -1 with err.
 */
int rc_map_fetch(struct rc_map *map, const char *host, int port, const struct rc_map *old,
                 int timeout_ms, char *err, size_t errlen);

/*
 * SSUBSCRIBE (subscribe true) or SUNSUBSCRIBE channel on ac, with fn called
 * for the "ssubscribe", "smessage" and "sunsubscribe" replies of that
 * channel, which ac's reader hands on as "subscribe", "message" and
 * "unsubscribe" (see redis_cluster.c for how, on hiredis 0.14).  0, or -1.
 */
int rc_sharded_subscribe(redisAsyncContext *ac, redisCallbackFn *fn, void *privdata,
                         const char *channel, bool subscribe);

#endif
