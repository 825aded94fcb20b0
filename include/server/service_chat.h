/*
 * service_chat.h - the chat path of the conversation log (issue 11).
 *
 * ONE_CHAT_MSG and GROUP_CHAT_MSG: validate, give the chat its cseq (the
 * node's shared sequencer, or the database with several nodes), deliver it
 * live, append it once to its conversation's log on the storage thread, and
 * ACK it (with cseq) once the append has committed.  See
 * docs/ARCHITECTURE.md, "The chat path".
 */
#ifndef QCHAT_SERVER_SERVICE_CHAT_H
#define QCHAT_SERVER_SERVICE_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct worker;
struct conn;
struct json_object;

/* Handle a chat request (msgid 5 or 9); seq is the serialized seq or NULL. */
void service_chat(struct worker *w, struct conn *c, struct json_object *req, int msgid,
                  const char *seq);
/*
 * [history] enabled = no on a single node (with a driver that has
 * conv_raise): a chat written live to every recipient is not stored.
 */
bool service_chat_log_off(const struct worker *w);
/*
 * The log off: the chat payload (len bytes, conv and cseq read from it)
 * did not reach a recipient after all: append it (journal, storage thread;
 * the store ignores it when it is there already).  0 or QC_EINTERNAL.
 */
int service_chat_keep(struct worker *w, const char *payload, size_t len, int64_t conv,
                      int64_t cseq);
/* A worker starts: queue again what its predecessor left in the journal.  How many. */
size_t service_chat_replay(struct worker *w);
/* Once per loop tick: queue again the appends the store refused. */
void service_chat_tick(struct worker *w);
/* Appends waiting to be queued again (a stop waits for them, within its deadline). */
bool service_chat_waiting(const struct worker *w);

#endif
