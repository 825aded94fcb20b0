/*
 * reply.c - ACKs, KICK notices and error replies (see reply.h).
 */
#include <string.h>

#include "common/jsonw.h"
#include "common/log.h"
#include "server/conn.h"
#include "server/metrics.h"
#include "server/reply.h"
#include "server/worker.h"

void reply_finish(struct worker *w, struct conn *c, struct buf *b, struct jsonw *jw)
{
    if (jsonw_end(jw) == 0 && buf_append_char(b, '\n') == 0)
        conn_send(w, c, buf_head(b), buf_used(b));
    else
        log_error("out of memory building a reply");
    worker_buf_give(w, b);
}

void reply_ack(struct worker *w, struct conn *c, int req_msgid, const char *seq, int err,
               int64_t mid, int32_t groupid, int64_t cseq)
{
    struct buf b = worker_buf_take(w);
    struct jsonw jw;
    jsonw_begin(&jw, &b);
    jsonw_int(&jw, "msgid", QC_ACK_MSG);
    jsonw_int(&jw, "errno", err);
    jsonw_str(&jw, "errmsg", err ? qc_strerror(err) : "ok");
    jsonw_int(&jw, "req", req_msgid);
    if (seq)
        jsonw_raw(&jw, "seq", seq, strlen(seq));
    if (mid)
        jsonw_int(&jw, "mid", mid);
    if (groupid)
        jsonw_int(&jw, "groupid", groupid);
    if (cseq)
        jsonw_int(&jw, "cseq", cseq);
    reply_finish(w, c, &b, &jw);
}

void reply_kick(struct worker *w, struct conn *c, const char *reason)
{
    struct buf b = worker_buf_take(w);
    struct jsonw jw;
    jsonw_begin(&jw, &b);
    jsonw_int(&jw, "msgid", QC_KICK_MSG);
    jsonw_str(&jw, "reason", reason);
    reply_finish(w, c, &b, &jw);
}

void reply_error(struct worker *w, struct conn *c, int msgid, const char *seq, int err)
{
    if (err == QC_ESTORAGE) {
        metrics_count(QM_STORE_ERRORS, 0);
        w->stats->store_failures++;
        w->stats->store_failed_ms = w->now_ms;
    }
    if (msgid != QC_LOGIN_MSG && msgid != QC_REG_MSG) {
        reply_ack(w, c, msgid, seq, err, 0, 0, 0);
        return;
    }
    struct buf b = worker_buf_take(w);
    struct jsonw jw;
    jsonw_begin(&jw, &b);
    jsonw_int(&jw, "msgid", msgid == QC_LOGIN_MSG ? QC_LOGIN_MSG_ACK : QC_REG_MSG_ACK);
    jsonw_int(&jw, "errno", err);
    jsonw_str(&jw, "errmsg", qc_strerror(err));
    if (seq)
        jsonw_raw(&jw, "seq", seq, strlen(seq));
    reply_finish(w, c, &b, &jw);
}

/* A request that broke the stream: its error, with req 0 (no request to name). */
static void reply_stream_error(struct worker *w, struct conn *c, int err)
{
    reply_ack(w, c, 0, NULL, err, 0, 0, 0);
}

void reply_install(struct worker *w)
{
    w->hooks.answer = reply_ack;
    w->hooks.stream_error = reply_stream_error;
}
