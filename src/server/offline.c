/*
 * offline.c - keeping a message for the recipient's next login (see offline.h).
 */
#include <string.h>

#include "common/log.h"
#include "server/delivered.h"
#include "server/metrics.h"
#include "server/offline.h"
#include "server/worker.h"

int offline_keep(struct worker *w, int32_t uid, const char *payload, size_t len)
{
    int64_t conv, cseq;
    if (delivered_position(payload, len, &conv, &cseq)) {
        /* In the log already, after uid's delivered cursor: nothing to store. */
        w->stats->offline_stored++;
        metrics_count(QM_DELIVERIES, QM_PATH_STORED);
        return 0;
    }
    int64_t t0 = metrics_now_us();
    int err = w->st->offline_store(w->store, &uid, 1, payload, len);
    metrics_observe(QM_H_STORE, metrics_now_us() - t0);
    if (err) {
        metrics_count(QM_STORE_ERRORS, 0);
        log_error("offline store for user %d failed: %s; message lost", uid, qc_strerror(err));
        w->stats->store_failures++;
        w->stats->store_failed_ms = w->now_ms;
        return err;
    }
    w->stats->offline_stored++;
    metrics_count(QM_DELIVERIES, QM_PATH_STORED);
    return 0;
}

int offline_keep_checked(struct worker *w, int32_t uid, const char *payload, size_t len)
{
    int64_t conv, cseq;
    if (delivered_position(payload, len, &conv, &cseq))
        return offline_keep(w, uid, payload, len); /* the chat path checked uid */
    struct store_user u;
    int err = w->st->user_get(w->store, uid, &u);
    explicit_bzero(u.password, sizeof u.password);
    return err ? err : offline_keep(w, uid, payload, len);
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
