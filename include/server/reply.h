/*
 * reply.h - the replies every part of a worker sends to a client: the
 * generic ACK (msgid 11), the KICK notice, and an error in the form the
 * request expects (the seed's LOGIN_MSG_ACK / REG_MSG_ACK, or the ACK).
 */
#ifndef QCHAT_SERVER_REPLY_H
#define QCHAT_SERVER_REPLY_H

#include <stdint.h>

struct worker;
struct conn;
struct buf;
struct jsonw;

/* End the object jw writes into b (a worker buffer), send it with its '\n', give b back. */
void reply_finish(struct worker *w, struct conn *c, struct buf *b, struct jsonw *jw);

/* ACK of request req_msgid (seq may be NULL; mid, groupid, cseq 0: left out). */
void reply_ack(struct worker *w, struct conn *c, int req_msgid, const char *seq, int err,
               int64_t mid, int32_t groupid, int64_t cseq);
void reply_kick(struct worker *w, struct conn *c, const char *reason);
/* The seed answers LOGIN with 2 and REG with 4; everything else gets an ACK. */
void reply_error(struct worker *w, struct conn *c, int msgid, const char *seq, int err);

/* Install the worker hooks this module answers (pending answers, stream errors). */
void reply_install(struct worker *w);

#endif
