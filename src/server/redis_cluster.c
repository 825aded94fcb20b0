/*
 * redis_cluster.c - the Redis Cluster side of the relay (see
 * redis_cluster.h): key-hash-slot, the slot map, and sharded pub/sub
 * commands on hiredis 0.14.
 *
 * hiredis 0.14 (Debian 12) knows SUBSCRIBE but not SSUBSCRIBE: it would
 * queue an SSUBSCRIBE's callback as a plain command's and then abort on the
 * first "smessage" that no command waits for.  So rc_sharded_subscribe lets
 * hiredis do its bookkeeping for a SUBSCRIBE of the channel (the context
 * becomes a subscriber and the channel's callback is registered by name),
 * then replaces the bytes that command put in the output buffer with the
 * SSUBSCRIBE it really sends.  Replies are found by channel name, and
 * "ssubscribe", "smessage" and "sunsubscribe" all name theirs; an error
 * reply (MOVED: the map is stale) makes hiredis drop the connection, which
 * the relay answers by reading the map again and subscribing everyone anew.
 *
 * hiredis also keeps a channel's callback by the kind of its replies: a
 * "subscribe" settles one pending subscription, an "unsubscribe" with none
 * pending forgets the callback.  The sharded kinds it does not know, so
 * every channel once subscribed would keep its callback (some 125 bytes)
 * for as long as the connection lives.  The reader of a connection that
 * sends sharded commands therefore reads the kind of a push ("ssubscribe",
 * "sunsubscribe", "smessage") as the plain one: hiredis keeps its books
 * as for SUBSCRIBE, and the relay sees the plain kinds.
 */
#include <stdio.h>
#include <string.h>
#include <hiredis/sds.h>

#include "server/redis_cluster.h"

#define RC_SLOT_MASK (RC_SLOTS - 1)
#define RC_CRC_POLY  0x1021

uint16_t rc_crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((uint8_t)buf[i] << 8);
        for (int bit = 0; bit < 8; bit++)
            crc = (crc & 0x8000) ? (uint16_t)(crc << 1 ^ RC_CRC_POLY) : (uint16_t)(crc << 1);
    }
    return crc;
}

uint32_t rc_keyslot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open != NULL) {
        size_t rest = len - (size_t)(open + 1 - key);
        const char *close = memchr(open + 1, '}', rest);
        if (close != NULL && close > open + 1)
            return rc_crc16(open + 1, (size_t)(close - open - 1)) & RC_SLOT_MASK;
    }
    return rc_crc16(key, len) & RC_SLOT_MASK;
}

uint32_t rc_master_of(const struct rc_map *map, const char *key)
{
    return map->owner[rc_keyslot(key, strlen(key))];
}

/* Index of host:port among the map's masters, added when new; -1 when full. */
static int master_index(struct rc_map *map, const char *host, int port)
{
    for (uint32_t i = 0; i < map->nmasters; i++)
        if (map->masters[i].port == port && strcmp(map->masters[i].host, host) == 0)
            return (int)i;
    if (map->nmasters == RC_MASTERS_MAX)
        return -1;
    struct rc_master *m = &map->masters[map->nmasters];
    snprintf(m->host, sizeof m->host, "%s", host);
    m->port = port;
    return (int)map->nmasters++;
}

static bool is_int(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_INTEGER;
}

int rc_map_from_slots(struct rc_map *map, const redisReply *rep, const char *seed_host, char *err,
                      size_t errlen)
{
    static bool seen[RC_SLOTS];
    memset(map, 0, sizeof *map);
    memset(seen, 0, sizeof seen);
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
        snprintf(err, errlen, "CLUSTER SLOTS: %s",
                 rep && rep->type == REDIS_REPLY_ERROR ? rep->str : "not an array");
        return -1;
    }
    for (size_t i = 0; i < rep->elements; i++) {
        const redisReply *range = rep->element[i];
        if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 || !is_int(range->element[0]) ||
            !is_int(range->element[1]) || range->element[2]->type != REDIS_REPLY_ARRAY ||
            range->element[2]->elements < 2 ||
            range->element[2]->element[0]->type != REDIS_REPLY_STRING ||
            !is_int(range->element[2]->element[1])) {
            snprintf(err, errlen, "CLUSTER SLOTS: malformed range %zu", i);
            return -1;
        }
        long long lo = range->element[0]->integer, hi = range->element[1]->integer;
        const redisReply *node = range->element[2];
        const char *host = node->element[0]->len ? node->element[0]->str : seed_host;
        long long port = node->element[1]->integer;
        if (lo < 0 || hi >= RC_SLOTS || lo > hi || port < 1 || port > 65535 ||
            strlen(host) >= RC_HOST_MAX) {
            snprintf(err, errlen, "CLUSTER SLOTS: bad range %lld-%lld at %s:%lld", lo, hi, host,
                     port);
            return -1;
        }
        int m = master_index(map, host, (int)port);
        if (m < 0) {
            snprintf(err, errlen, "CLUSTER SLOTS: more than %d masters", RC_MASTERS_MAX);
            return -1;
        }
        for (long long s = lo; s <= hi; s++) {
            map->owner[s] = (uint8_t)m;
            seen[s] = true;
        }
    }
    map->complete = true;
    for (uint32_t s = 0; s < RC_SLOTS; s++)
        map->complete = map->complete && seen[s];
    if (!map->complete) {
        snprintf(err, errlen, "CLUSTER SLOTS: not every slot is served");
        return -1;
    }
    return 0;
}

static bool cluster_state_ok(redisContext *c)
{
    redisReply *rep = redisCommand(c, "CLUSTER INFO");
    bool ok = rep && rep->type == REDIS_REPLY_STRING && strstr(rep->str, "cluster_state:ok");
    if (rep)
        freeReplyObject(rep);
    return ok;
}

/* The map from one node, or -1 with err. */
static int fetch_from(struct rc_map *map, const char *host, int port, int timeout_ms, char *err,
                      size_t errlen)
{
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (c == NULL || c->err) {
        snprintf(err, errlen, "%s:%d: %s", host, port, c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return -1;
    }
    redisSetTimeout(c, tv);
    redisReply *rep = redisCommand(c, "CLUSTER SLOTS");
    int rc = -1;
    if (rep == NULL)
        snprintf(err, errlen, "%s:%d: CLUSTER SLOTS: %s", host, port, c->errstr);
    else
        rc = rc_map_from_slots(map, rep, host, err, errlen);
    if (rep)
        freeReplyObject(rep);
    if (rc == 0 && !cluster_state_ok(c)) {
        /* A restarted cluster knows its slots before its nodes have met again. */
        snprintf(err, errlen, "%s:%d: the cluster is not ready (cluster_state is not ok)", host,
                 port);
        rc = -1;
    }
    redisFree(c);
    return rc;
}

int rc_map_fetch(struct rc_map *map, const char *host, int port, const struct rc_map *old,
                 int timeout_ms, char *err, size_t errlen)
{
    if (fetch_from(map, host, port, timeout_ms, err, errlen) == 0)
        return 0;
    for (uint32_t i = 0; old != NULL && i < old->nmasters; i++) {
        char again[256];
        const struct rc_master *m = &old->masters[i];
        if (fetch_from(map, m->host, m->port, timeout_ms, again, sizeof again) == 0)
            return 0;
    }
    return -1;
}

static redisReplyObjectFunctions sharded_reader;
static void *(*plain_create_string)(const redisReadTask *, char *, size_t);

/* The first element of a top-level array: a push's kind, read without its 's'. */
static void *create_string_sharded(const redisReadTask *task, char *str, size_t len)
{
    const redisReadTask *array = task->parent;
    if (task->idx == 0 && array != NULL && array->parent == NULL &&
        array->type == REDIS_REPLY_ARRAY &&
        ((len == 10 && memcmp(str, "ssubscribe", len) == 0) ||
         (len == 12 && memcmp(str, "sunsubscribe", len) == 0) ||
         (len == 8 && memcmp(str, "smessage", len) == 0)))
        return plain_create_string(task, str + 1, len - 1);
    return plain_create_string(task, str, len);
}

static void use_sharded_reader(redisAsyncContext *ac)
{
    redisReader *reader = ac->c.reader;
    if (reader == NULL || reader->fn == NULL || reader->fn == &sharded_reader)
        return;
    if (plain_create_string == NULL) {
        sharded_reader = *reader->fn;
        plain_create_string = sharded_reader.createString;
        sharded_reader.createString = create_string_sharded;
    }
    reader->fn = &sharded_reader;
}

int rc_sharded_subscribe(redisAsyncContext *ac, redisCallbackFn *fn, void *privdata,
                         const char *channel, bool subscribe)
{
    use_sharded_reader(ac); /* before any sharded reply can come */
    char *wire;
    int wire_len =
        redisFormatCommand(&wire, subscribe ? "SSUBSCRIBE %s" : "SUNSUBSCRIBE %s", channel);
    if (wire_len < 0)
        return -1;
    size_t before = sdslen(ac->c.obuf);
    int rc = subscribe ? redisAsyncCommand(ac, fn, privdata, "SUBSCRIBE %s", channel)
                       : redisAsyncCommand(ac, NULL, NULL, "UNSUBSCRIBE %s", channel);
    if (rc != REDIS_OK || ac->c.obuf == NULL || sdslen(ac->c.obuf) < before) {
        redisFreeCommand(wire);
        return -1;
    }
    /* What the SUBSCRIBE appended goes; the sharded command takes its place. */
    sdsIncrLen(ac->c.obuf, -(int)(sdslen(ac->c.obuf) - before));
    sds grown = sdscatlen(ac->c.obuf, wire, (size_t)wire_len);
    redisFreeCommand(wire);
    if (grown == NULL)
        return -1;
    ac->c.obuf = grown;
    return 0;
}
