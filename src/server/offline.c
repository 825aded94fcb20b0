/*
 * offline.c - keeping a message for the recipient's next login (see offline.h).
 *
 * With the log on every chat is in the log before it goes out; with it off
 * ([history] enabled = no) a chat written live only is not, and is
 * appended here when its write fails (service_chat_keep).
 */
#include <string.h>

#include "common/log.h"
#include "server/delivered.h"
#include "server/metrics.h"
#include "server/offline.h"
#include "server/service_chat.h"
#include "server/worker.h"

int offline_keep(struct worker *w, int32_t uid, const char *payload, size_t len)
{
    int64_t conv, cseq;
    if (!delivered_position(payload, len, &conv, &cseq)) {
        /*
         * Every chat is appended to the log before it is delivered, and
         * carries its cseq; a login reads only the log.  A message without
         * one has nowhere to wait: its origin hears the error.
         */
        log_error("user %d: undeliverable message without a cseq: %.*s", uid,
                  len > 200 ? 200 : (int)len, payload);
        w->stats->store_failures++;
        w->stats->store_failed_ms = w->now_ms;
        metrics_count(QM_STORE_ERRORS, 0);
        return QC_EINTERNAL;
    }
    /*
     * In the log already, after uid's delivered cursor: nothing to store;
     * with the log off it may not be (written live only): append it now.
     */
    if (service_chat_log_off(w) && service_chat_keep(w, payload, len, conv, cseq) != 0) {
        log_error("user %d: conv %lld cseq %lld: cannot keep the undelivered chat", uid,
                  (long long)conv, (long long)cseq);
        w->stats->store_failures++;
        w->stats->store_failed_ms = w->now_ms;
        metrics_count(QM_STORE_ERRORS, 0);
        return QC_EINTERNAL;
    }
    w->stats->offline_stored++;
    metrics_count(QM_DELIVERIES, QM_PATH_STORED);
    return 0;
}

int offline_keep_stash(struct worker *w, int32_t uid, const char *stash)
{
    int first_err = 0;
    for (const char *p = stash; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        int err = offline_keep(w, uid, p, n);
        if (err && !first_err)
            first_err = err;
        p += n + (nl != NULL);
    }
    return first_err;
}
