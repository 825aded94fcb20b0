/*
 * test_redis_cluster.c - unit tests for the relay's Redis Cluster helpers
 * (server/redis_cluster.c).
 *
 * Covers: CRC16 and key-hash-slot against the values Redis documents and
 * values CLUSTER KEYSLOT returned on a real 7.0 cluster (hash tags: the
 * first '{' and the next '}', an empty tag hashes the whole key); a CLUSTER
 * SLOTS reply becomes a map whose owner of each slot is the right master,
 * an empty host is the seed's; replies that are errors, malformed or leave
 * slots unserved are refused with a reason; a sharded subscription goes out
 * as SSUBSCRIBE/SUNSUBSCRIBE and its replies come as the plain kinds, so
 * hiredis forgets the channel's callback once it is unsubscribed.
 */
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "server/redis_cluster.h"

#define SEED "127.0.0.1"

struct keyslot_case {
    const char *key;
    uint32_t slot;
};

/*
 * The first two from the Redis Cluster specification; the others from
 * CLUSTER KEYSLOT on redis-server 7.0.15 (the cluster of
 * tests/harness/redis_cluster.sh).
 */
static const struct keyslot_case known[] = {
    { "123456789", 12739 },
    { "foo", 12182 },
    { "{user1000}.following", 3443 },
    { "{user1000}.followers", 3443 },
    { "foo{}{bar}", 8363 },
    { "foo{{bar}}zap", 4015 },
    { "foo{bar}{zap}", 5061 },
    { "qchat:u:1", 4140 },
    { "qchat:u:42", 6101 },
    { "qchat:gen:7", 6532 },
    { "", 0 },
};

static void test_crc16_check_value(void **state)
{
    (void)state;
    /* CRC-16/XMODEM's check value, as the Redis specification gives it. */
    assert_int_equal(rc_crc16("123456789", 9), 0x31C3);
}

static void test_keyslot_known_values(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        uint32_t got = rc_keyslot(known[i].key, strlen(known[i].key));
        if (got != known[i].slot)
            fail_msg("key \"%s\": slot %u, Redis says %u", known[i].key, got, known[i].slot);
    }
}

static void test_hash_tag_rules(void **state)
{
    (void)state;
    /* Only the tag counts: same tag, same slot, whatever surrounds it. */
    assert_int_equal(rc_keyslot("a{tag}b", 7), rc_keyslot("tag", 3));
    assert_int_equal(rc_keyslot("{tag}", 5), rc_keyslot("zz{tag}zz", 9));
    /* No closing brace, or an empty tag: the whole key. */
    assert_int_equal(rc_keyslot("{tag", 4), rc_crc16("{tag", 4) & (RC_SLOTS - 1));
    assert_int_equal(rc_keyslot("{}tag", 5), rc_crc16("{}tag", 5) & (RC_SLOTS - 1));
    /* Every slot is below 16384. */
    char key[32];
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(key, sizeof key, "qchat:u:%d", i);
        assert_true(rc_keyslot(key, (size_t)n) < RC_SLOTS);
    }
}

/* ---- building CLUSTER SLOTS replies by hand ------------------------------ */

static redisReply *mk(int type)
{
    redisReply *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->type = type;
    return r;
}

static redisReply *mk_int(long long v)
{
    redisReply *r = mk(REDIS_REPLY_INTEGER);
    r->integer = v;
    return r;
}

static redisReply *mk_str(const char *s)
{
    redisReply *r = mk(REDIS_REPLY_STRING);
    r->str = strdup(s);
    r->len = strlen(s);
    return r;
}

static redisReply *mk_array(size_t n)
{
    redisReply *r = mk(REDIS_REPLY_ARRAY);
    r->elements = n;
    r->element = calloc(n ? n : 1, sizeof *r->element);
    assert_non_null(r->element);
    return r;
}

static redisReply *mk_range(long long lo, long long hi, const char *host, long long port)
{
    redisReply *range = mk_array(3);
    range->element[0] = mk_int(lo);
    range->element[1] = mk_int(hi);
    redisReply *node = mk_array(3);
    node->element[0] = mk_str(host);
    node->element[1] = mk_int(port);
    node->element[2] = mk_str("0123456789abcdef");
    range->element[2] = node;
    return range;
}

/* The three-master layout redis-cli --cluster create makes, one master by empty host. */
static redisReply *three_masters(void)
{
    redisReply *rep = mk_array(4);
    rep->element[0] = mk_range(0, 5460, "127.0.0.1", 7001);
    rep->element[1] = mk_range(5461, 10922, "", 7002);
    rep->element[2] = mk_range(10923, 16000, "127.0.0.1", 7003);
    rep->element[3] = mk_range(16001, 16383, "127.0.0.1", 7001);
    return rep;
}

static void test_map_from_slots(void **state)
{
    (void)state;
    struct rc_map *map = malloc(sizeof *map);
    char err[128] = "";
    redisReply *rep = three_masters();
    assert_int_equal(rc_map_from_slots(map, rep, SEED, err, sizeof err), 0);
    assert_true(map->complete);
    assert_int_equal(map->nmasters, 3);
    assert_int_equal(map->masters[0].port, 7001);
    assert_string_equal(map->masters[1].host, SEED); /* the empty host */
    assert_int_equal(map->masters[1].port, 7002);
    assert_int_equal(map->owner[0], 0);
    assert_int_equal(map->owner[5460], 0);
    assert_int_equal(map->owner[5461], 1);
    assert_int_equal(map->owner[10923], 2);
    assert_int_equal(map->owner[16383], 0); /* a second range of the same master */
    /* "foo" is slot 12182: the third master; "qchat:u:1" is 4140: the first. */
    assert_int_equal(rc_master_of(map, "foo"), 2);
    assert_int_equal(rc_master_of(map, "qchat:u:1"), 0);
    assert_int_equal(rc_master_of(map, "qchat:u:42"), 1);
    freeReplyObject(rep);
    free(map);
}

static void test_bad_slot_replies_are_refused(void **state)
{
    (void)state;
    struct rc_map *map = malloc(sizeof *map);
    char err[128];

    redisReply *e = mk(REDIS_REPLY_ERROR);
    e->str = strdup("ERR This instance has cluster support disabled");
    e->len = strlen(e->str);
    assert_int_equal(rc_map_from_slots(map, e, SEED, err, sizeof err), -1);
    assert_non_null(strstr(err, "cluster support disabled"));
    freeReplyObject(e);

    redisReply *gap = three_masters();
    freeReplyObject(gap->element[3]);
    gap->elements = 3; /* slots 16001..16383 unserved */
    assert_int_equal(rc_map_from_slots(map, gap, SEED, err, sizeof err), -1);
    assert_non_null(strstr(err, "not every slot"));
    freeReplyObject(gap);

    redisReply *range = three_masters();
    range->element[1]->element[1]->integer = RC_SLOTS; /* past the last slot */
    assert_int_equal(rc_map_from_slots(map, range, SEED, err, sizeof err), -1);
    assert_non_null(strstr(err, "bad range"));
    freeReplyObject(range);

    redisReply *shape = three_masters();
    shape->element[0]->element[2]->element[1]->type = REDIS_REPLY_STRING; /* port not an int */
    shape->element[0]->element[2]->element[1]->str = strdup("7001");
    assert_int_equal(rc_map_from_slots(map, shape, SEED, err, sizeof err), -1);
    assert_non_null(strstr(err, "malformed"));
    freeReplyObject(shape);

    assert_int_equal(rc_map_from_slots(map, NULL, SEED, err, sizeof err), -1);
    free(map);
}

/* ---- sharded subscriptions, against a fake Redis on a local socket ------ */

static int pushes;
static char push_kind[8][16];

static void on_push(redisAsyncContext *ac, void *reply, void *priv)
{
    redisReply *rep = reply;
    (void)ac;
    (void)priv;
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 &&
        rep->element[0]->type == REDIS_REPLY_STRING)
        snprintf(push_kind[pushes++ % 8], sizeof push_kind[0], "%s", rep->element[0]->str);
}

/* What the client sent, up to the first byte of want's length that matches. */
static void expect_sent(int fd, const char *want)
{
    char got[512];
    size_t n = 0;
    while (n < strlen(want)) {
        ssize_t k = read(fd, got + n, sizeof got - 1 - n);
        assert_true(k > 0);
        n += (size_t)k;
    }
    got[n] = '\0';
    assert_string_equal(got, want);
}

/* The fake server writes wire; the client reads until all of it is handled. */
static void server_says(redisAsyncContext *ac, int fd, const char *wire)
{
    assert_int_equal(write(fd, wire, strlen(wire)), (ssize_t)strlen(wire));
    int avail;
    do {
        struct pollfd p = { .fd = ac->c.fd, .events = POLLIN };
        assert_int_equal(poll(&p, 1, 5000), 1);
        redisAsyncHandleRead(ac);
        assert_int_equal(ioctl(ac->c.fd, FIONREAD, &avail), 0);
    } while (avail > 0);
}

static void test_sharded_subscribe_reads_plain_kinds(void **state)
{
    (void)state;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof a;
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lfd, 1), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    redisAsyncContext *ac = redisAsyncConnect("127.0.0.1", ntohs(a.sin_port));
    assert_non_null(ac);
    assert_int_equal(ac->err, 0);
    int sfd = accept(lfd, NULL, NULL);
    assert_true(sfd >= 0);

    assert_int_equal(rc_sharded_subscribe(ac, on_push, NULL, "qchat:u:7", true), 0);
    assert_int_equal(rc_sharded_subscribe(ac, on_push, NULL, "qchat:u:8", true), 0);
    redisAsyncHandleWrite(ac); /* connected, then the commands */
    redisAsyncHandleWrite(ac);
    expect_sent(sfd, "*2\r\n$10\r\nSSUBSCRIBE\r\n$9\r\nqchat:u:7\r\n"
                     "*2\r\n$10\r\nSSUBSCRIBE\r\n$9\r\nqchat:u:8\r\n");
    server_says(ac, sfd,
                "*3\r\n$10\r\nssubscribe\r\n$9\r\nqchat:u:7\r\n:1\r\n"
                "*3\r\n$10\r\nssubscribe\r\n$9\r\nqchat:u:8\r\n:2\r\n"
                "*3\r\n$8\r\nsmessage\r\n$9\r\nqchat:u:7\r\n$2\r\nhi\r\n");
    assert_int_equal(pushes, 3);
    assert_string_equal(push_kind[0], "subscribe");
    assert_string_equal(push_kind[1], "subscribe");
    assert_string_equal(push_kind[2], "message");

    assert_int_equal(rc_sharded_subscribe(ac, NULL, NULL, "qchat:u:7", false), 0);
    redisAsyncHandleWrite(ac);
    expect_sent(sfd, "*2\r\n$12\r\nSUNSUBSCRIBE\r\n$9\r\nqchat:u:7\r\n");
    server_says(ac, sfd, "*3\r\n$12\r\nsunsubscribe\r\n$9\r\nqchat:u:7\r\n:1\r\n");
    assert_int_equal(pushes, 4);
    assert_string_equal(push_kind[3], "unsubscribe");

    /* hiredis forgot the channel's callback: a late message reaches nobody. */
    server_says(ac, sfd,
                "*3\r\n$8\r\nsmessage\r\n$9\r\nqchat:u:7\r\n$2\r\nhi\r\n"
                "*3\r\n$8\r\nsmessage\r\n$9\r\nqchat:u:8\r\n$2\r\nyo\r\n");
    assert_int_equal(pushes, 5); /* u:8's only */
    assert_string_equal(push_kind[4], "message");

    /* A user who logs out and in at once: SUNSUBSCRIBE and SSUBSCRIBE of one
     * channel in one round keep the new subscription's callback. */
    assert_int_equal(rc_sharded_subscribe(ac, NULL, NULL, "qchat:u:8", false), 0);
    assert_int_equal(rc_sharded_subscribe(ac, on_push, NULL, "qchat:u:8", true), 0);
    redisAsyncHandleWrite(ac);
    expect_sent(sfd, "*2\r\n$12\r\nSUNSUBSCRIBE\r\n$9\r\nqchat:u:8\r\n"
                     "*2\r\n$10\r\nSSUBSCRIBE\r\n$9\r\nqchat:u:8\r\n");
    server_says(ac, sfd,
                "*3\r\n$12\r\nsunsubscribe\r\n$9\r\nqchat:u:8\r\n:0\r\n"
                "*3\r\n$10\r\nssubscribe\r\n$9\r\nqchat:u:8\r\n:1\r\n"
                "*3\r\n$8\r\nsmessage\r\n$9\r\nqchat:u:8\r\n$2\r\nok\r\n");
    assert_int_equal(pushes, 8);
    assert_string_equal(push_kind[5], "unsubscribe");
    assert_string_equal(push_kind[6], "subscribe");
    assert_string_equal(push_kind[7], "message");

    redisAsyncFree(ac);
    close(sfd);
    close(lfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc16_check_value),
        cmocka_unit_test(test_keyslot_known_values),
        cmocka_unit_test(test_hash_tag_rules),
        cmocka_unit_test(test_map_from_slots),
        cmocka_unit_test(test_bad_slot_replies_are_refused),
        cmocka_unit_test(test_sharded_subscribe_reads_plain_kinds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
