/*
 * service.h - request handlers: one function per message id.
 *
 * service_dispatch is where a parsed request enters: it checks the msgid,
 * the session and the seq field, then calls the handler, which validates the
 * fields, calls storage and routes what must be forwarded.
 */
#ifndef QCHAT_SERVER_SERVICE_H
#define QCHAT_SERVER_SERVICE_H

#include <json-c/json.h>
#include <stdint.h>

struct worker;
struct conn;

struct crypt_job;

void service_dispatch(struct worker *w, struct conn *c, struct json_object *req);
/* A password job of a LOGIN or REG came back from the hashing threads. */
void service_crypt_done(struct worker *w, struct crypt_job *job);
/* Reply helpers (also used by conn.c and route.c). */
void service_send_ack(struct worker *w, struct conn *c, int req_msgid, const char *seq, int err,
                      int64_t mid, int32_t groupid);
void service_send_kick(struct worker *w, struct conn *c, const char *reason);
/* An error reply in the form the request expects (msgid 2, 4, or the ACK). */
void service_reply_error(struct worker *w, struct conn *c, int msgid, const char *seq, int err);
/* Tell uid's online friends (those who asked) that uid is now state. */
void service_announce_presence(struct worker *w, int32_t uid, const char *name, const char *state);
/* The same to the listed friends (the caller knows who is online). */
void service_announce_presence_to(struct worker *w, int32_t uid, const char *name,
                                  const char *state, const int32_t *ids, size_t n);
/* End c's session: online table, presence to friends.  Keeps the connection. */
void service_end_session(struct worker *w, struct conn *c);
/* End the session (uid, gen) held on this worker because it was taken over. */
void service_kick_session(struct worker *w, int32_t uid, uint32_t slot, uint32_t gen,
                          const char *reason);

#endif
