/*
 * sessreg.h - the cluster's session registry in Redis ([session] mode
 * across nodes, issue 15), the part of it that is text: the Lua script that
 * checks and claims a login in one step, its argument vector, and the
 * reading of the hash it keeps.
 *
 * One hash per account, "qchat:s:<uid>": field "<node>:<gen>" (the node's
 * session generation, unique on the node), value
 * "<deadline_ms>:<since_ms>:<device>".  Each node owns its own fields: every
 * claim and every heartbeat of a node rewrites that node's fields from its
 * online table (the truth for its sessions) with a fresh deadline, and every
 * claim drops fields whose deadline has passed, so a node that died leaves
 * nothing that outlives [redis] session_ttl.  The relay (relay.c) runs the
 * script and acts on its answer; nothing here talks to Redis.
 */
#ifndef QCHAT_SERVER_SESSREG_H
#define QCHAT_SERVER_SESSREG_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/proto.h"

#define SESSREG_PREFIX    "qchat:s:" /* + uid: the account's sessions, cluster-wide */
#define SESSREG_KEY_MAX   32
#define SESSREG_FIELD_MAX 24 /* "<node>:<gen>" */

/* What the script does besides rewriting this node's fields. */
enum sessreg_mode {
    SESSREG_TAKEOVER = 't', /* drop every other node's field (the K kick ends their sessions) */
    SESSREG_REFUSE = 'r',   /* refused while another node has a session (same device: kicked) */
    SESSREG_MULTI = 'm',    /* same device kicked; beyond max the oldest kicked, cluster-wide */
    SESSREG_SYNC = 's',     /* heartbeat: only this node's fields, and expired ones dropped */
};

/* One session of the account on this node, as the node knows it. */
struct sessreg_local {
    uint32_t gen;
    int64_t since_ms;               /* login time, epoch ms; -1: leave its field alone */
    char device[QC_DEVICE_MAX + 1]; /* "default" when unnamed */
};

/* One login to check, or one heartbeat (mode SYNC, gen 0). */
struct sessreg_claim {
    int32_t uid;
    int node;
    enum sessreg_mode mode;
    uint32_t gen; /* the new session (0: none, a heartbeat) */
    const char *device;
    bool named;
    uint32_t max;
    int64_t now_ms, ttl_ms;
    bool by_sha; /* EVALSHA (the script as Redis caches it), else EVAL with its text */
};

/* An EVAL command as hiredis takes it (redisAsyncCommandArgv). */
struct sessreg_cmd {
    int argc;
    char **argv;
    size_t *argvlen;
};

#define SESSREG_REFUSED (-2) /* the script's status for a refused login */

/* Build EVAL (or EVALSHA: c->by_sha) for claim c with the node's sessions local[0..n).  0, or -1 out of memory. */
int sessreg_build(struct sessreg_cmd *cmd, const struct sessreg_claim *c,
                  const struct sessreg_local *local, size_t n);
void sessreg_cmd_free(struct sessreg_cmd *cmd);
/* An error reply saying Redis does not hold the script (EVALSHA): send EVAL instead. */
bool sessreg_noscript(const char *err, size_t len);
/* The hash key of uid into out (SESSREG_KEY_MAX). */
void sessreg_key(int32_t uid, char *out);
/* "<node>:<gen>": true and the parts when f[0..len) is one. */
bool sessreg_parse_field(const char *f, size_t len, int *node, uint32_t *gen);
/* A value: true and its parts (*device points into v, *device_len bytes). */
bool sessreg_parse_value(const char *v, size_t len, int64_t *deadline_ms, int64_t *since_ms,
                         const char **device, size_t *device_len);

#endif
