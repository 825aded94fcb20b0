/*
 * service_log.h - the conversation log's requests: HISTORY_MSG (20),
 * CONVERSATIONS_MSG (22), READ_MSG (24, with the READ sync push and
 * RECEIPT_MSG 25) and TYPING_MSG (26), as qchat-protocol(7) defines them.
 *
 * Every store call runs on the worker's storage thread (storage_submit):
 * the handler validates the fields, marks the connection busy (later
 * requests wait, so replies keep request order) and finishes the reply in
 * the completion callback, once it has checked that the connection is still
 * the one that asked (slot + generation).
 */
#ifndef QCHAT_SERVER_SERVICE_LOG_H
#define QCHAT_SERVER_SERVICE_LOG_H

#include <json-c/json.h>

struct worker;
struct conn;

/* TYPING_MSG: a conversation gets at most one typing notice per this many ms per connection. */
#define TYPING_INTERVAL_MS 1000

/* HISTORY_MSG / CONVERSATIONS_MSG page sizes. */
#define HISTORY_LIMIT_DEFAULT 50
#define CONVS_LIMIT_DEFAULT   100

/* Handle request obj (msgid 20, 22, 24 or 26; seq: the serialized seq or NULL). */
void service_log_dispatch(struct worker *w, struct conn *c, struct json_object *obj, int msgid,
                          const char *seq);

#endif
