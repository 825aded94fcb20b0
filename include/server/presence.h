/*
 * presence.h - who of a list of users is online anywhere in the cluster.
 *
 * A user online on this node is found in the online table; for the rest
 * the relay asks Redis (PUBSUB NUMSUB on their channels) and answers
 * asynchronously, so state never comes from a column a crashed node could
 * leave wrong.  The login reply (login.c) and the list replies
 * FRIEND_LIST 31 and GROUP_MEMBERS 41 (service_social.c) both use it: the
 * caller collects the ids, asks, keeps its connection waiting, and writes
 * its reply in the callback.
 */
#ifndef QCHAT_SERVER_PRESENCE_H
#define QCHAT_SERVER_PRESENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct worker;

/* The ids only Redis can tell about, then its answer. */
struct presence_set {
    int32_t *ids; /* not online here; sorted and unique once asked */
    size_t n, cap;
    uint8_t *remote; /* after the answer: 1 per id online on another node; NULL: unknown */
};

/* The answer came (set->remote filled, or left NULL when Redis could not tell). */
typedef void (*presence_done_fn)(struct worker *w, void *arg);

/* Note id, unless it is online on this node (or the set is full: it counts as offline). */
void presence_add(struct worker *w, struct presence_set *set, int32_t id);
/*
 * Ask the relay about set's ids.  true: done(w, arg) runs later, exactly
 * once (also when the relay link is lost); false: nothing to ask (not a
 * cluster, no id, no relay link), set stays as it is.
 */
bool presence_ask(struct worker *w, struct presence_set *set, presence_done_fn done, void *arg);
/* id online on this node, or on another by set's answer. */
bool presence_online(struct worker *w, const struct presence_set *set, int32_t id);
void presence_free(struct presence_set *set);

/* The relay answered NUMSUB (peer.c, through the worker's numsub_done hook). */
void presence_numsub_done(struct worker *w, uint32_t token, const uint8_t *online, size_t n,
                          bool failed);
/* The relay link is gone: every waiting ask is answered as unknown. */
void presence_relay_lost(struct worker *w);

#endif
