/*
 * session.h - a user's session on a connection: its end (online table,
 * cluster subscription, presence to friends), its end by takeover (the KICK
 * notice), and presence notices.
 *
 * A session starts in service.c (LOGIN); it ends here whatever the reason:
 * LOGINOUT, the connection closing (the worker's session_closing hook), a
 * takeover from this or another worker (the kick hook).
 */
#ifndef QCHAT_SERVER_SESSION_H
#define QCHAT_SERVER_SESSION_H

#include <stddef.h>
#include <stdint.h>

struct worker;
struct conn;

/* A growable list of user ids (err set when out of memory). */
struct id_list {
    int32_t *ids;
    size_t n, cap;
    int err;
};
void id_list_push(struct id_list *l, int32_t id);

/* End c's session: online table, presence to friends.  Keeps the connection. */
void session_end(struct worker *w, struct conn *c);
/* End the session (uid, gen) on this worker's slot because it was taken over. */
void session_kick(struct worker *w, int32_t uid, uint32_t slot, uint32_t gen, const char *reason);
/* Tell uid's online friends (those who asked) that uid is now state. */
void session_announce(struct worker *w, int32_t uid, const char *name, const char *state);
/* The same to the listed friends (the caller knows who is online). */
void session_announce_to(struct worker *w, int32_t uid, const char *name, const char *state,
                         const int32_t *ids, size_t n);

/* Install the worker hooks this module answers (session_closing, kick). */
void session_install(struct worker *w);

#endif
