/*
 * request.h - one client request being handled: the envelope fields that
 * service_dispatch reads before it calls a handler, shared by the handler
 * files (service.c, service_social.c, ...).
 */
#ifndef QCHAT_SERVER_REQUEST_H
#define QCHAT_SERVER_REQUEST_H

#include <stdint.h>

#include "common/proto.h"

struct json_object;
struct worker;
struct conn;

struct request {
    struct json_object *obj;
    int msgid;
    const char *seq; /* serialized seq, NULL when absent */
    char seqbuf[QC_SEQ_MAX + 1];
};

/* The positive 32-bit id in obj's field key: QC_OK, or QC_EBADREQ (missing, mistyped, out of range). */
int request_id(struct json_object *obj, const char *key, int32_t *out);

/* A handler of one message id (the dispatch table of service.c). */
typedef void (*handler_fn)(struct worker *, struct conn *, const struct request *);

#endif
