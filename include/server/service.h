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
/* Install the worker hooks this module answers (request). */
void service_install(struct worker *w);

#endif
