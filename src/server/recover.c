/*
 * recover.c - the log fills what pub/sub lost (see recover.h).
 *
 * Per session: the last cseq written per conversation (a small table, least
 * recently used entry replaced), a flag while a fill is on the storage
 * thread, and the chats that arrived meanwhile, in order.  A fill's answer
 * is written first (skipping what the session has had), then the waiting
 * chats go through the same checks again.  A chat is dropped as a repeat
 * only when a chat of the same conversation with that cseq or a higher one
 * was written to this very session, so nothing is lost by the check.
 */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "server/conn.h"
#include "server/delivered.h"
#include "server/recover.h"
#include "server/storage.h"
#include "server/worker.h"

struct conv_pos {
    int64_t conv;
    int64_t last; /* highest cseq written to the session */
    uint64_t used;
};

struct held_chat {
    struct held_chat *next;
    int32_t uid;
    uint32_t origin, token;
    size_t len;
    char p[];
};

struct recover_state {
    int32_t uid;
    uint32_t sgen;
    struct conv_pos convs[RECOVER_CONVS_MAX];
    size_t nconvs;
    uint64_t clock;
    bool filling;
    bool overflow; /* a chat could not be kept in order: the session is closed */
    struct held_chat *head, *tail;
    size_t held;
};

/* One fill: read on the storage thread, written on the worker. */
struct fill_item {
    int64_t conv, cseq;
    size_t at, len; /* in body */
};

struct fill_job {
    struct worker *w;
    uint32_t slot, cgen, sgen;
    int32_t uid;
    int64_t conv;  /* != 0: history of conv after `after`; 0: uid's undelivered messages */
    int64_t after; /* history: the last cseq the session has */
    int64_t trig_conv, trig_cseq; /* the chat that asked for the fill (0: a resync) */
    int max_count;
    size_t max_bytes;
    struct buf body;
    struct fill_item *items;
    size_t n, cap;
    int64_t page_last; /* history: highest cseq of the page being read */
    bool full;         /* history: max_bytes reached, the rest is left to HISTORY */
    int err;
};

/* ---- the per-session table ------------------------------------------------ */

static struct recover_state *state_of(struct conn *c)
{
    struct recover_state *s = c->recover;
    if (s && (s->uid != c->uid || s->sgen != c->sgen))
        return NULL; /* a session ended here and another began: see reset_state */
    return s;
}

static void confirm_held(struct worker *w, struct recover_state *s)
{
    while (s->head) {
        struct held_chat *h = s->head;
        s->head = h->next;
        /* In the log (it carries a cseq): the recipient's next login finds it. */
        w->hooks.mark_done(w, h->origin, h->token, 0);
        free(h);
    }
    s->tail = NULL;
    s->held = 0;
}

/* The session's state, made (or renewed for a new session) on first use; NULL: out of memory. */
static struct recover_state *state_for(struct worker *w, struct conn *c)
{
    struct recover_state *s = c->recover;
    if (s && (s->uid != c->uid || s->sgen != c->sgen)) {
        confirm_held(w, s);
        memset(s, 0, sizeof *s);
        s->uid = c->uid;
        s->sgen = c->sgen;
    }
    if (s == NULL && (s = calloc(1, sizeof *s)) != NULL) {
        s->uid = c->uid;
        s->sgen = c->sgen;
        c->recover = s;
    }
    return s;
}

static struct conv_pos *pos_find(struct recover_state *s, int64_t conv)
{
    for (size_t i = 0; i < s->nconvs; i++)
        if (s->convs[i].conv == conv) {
            s->convs[i].used = ++s->clock;
            return &s->convs[i];
        }
    return NULL;
}

/* Remember conv at last (the least recently used entry makes room). */
static void pos_set(struct recover_state *s, int64_t conv, int64_t last)
{
    struct conv_pos *p = pos_find(s, conv);
    if (p == NULL) {
        if (s->nconvs < RECOVER_CONVS_MAX) {
            p = &s->convs[s->nconvs++];
        } else {
            p = &s->convs[0];
            for (size_t i = 1; i < s->nconvs; i++)
                if (s->convs[i].used < p->used)
                    p = &s->convs[i];
        }
        p->conv = conv;
        p->last = 0;
        p->used = ++s->clock;
    }
    if (last > p->last)
        p->last = last;
}

/*
 * The highest cseq of conv in a login reply queued on c and not yet written
 * (its stash), 0 if none: the cursor has not moved past it yet, so the
 * store would hand those chats out again.
 */
static int64_t stash_last(const struct conn *c, int64_t conv)
{
    int64_t best = 0;
    for (uint32_t i = 0; i < c->marks_len; i++) {
        const char *p = c->marks[c->marks_head + i].stash;
        while (p && *p) {
            const char *nl = strchr(p, '\n');
            size_t n = nl ? (size_t)(nl - p) : strlen(p);
            int64_t cv, cseq;
            if (delivered_position(p, n, &cv, &cseq) && cv == conv && cseq > best)
                best = cseq;
            p += n + (nl != NULL);
        }
    }
    return best;
}

/* ---- fills ---------------------------------------------------------------- */

static int add_item(struct fill_job *j, const struct store_logmsg *m)
{
    if (j->n == j->cap) {
        size_t ncap = j->cap ? j->cap * 2 : 32;
        struct fill_item *g = realloc(j->items, ncap * sizeof *g);
        if (g == NULL)
            return -1;
        j->items = g;
        j->cap = ncap;
    }
    struct fill_item *it = &j->items[j->n];
    int64_t conv, cseq;
    it->conv = m->conv;
    it->cseq = m->cseq;
    it->at = buf_used(&j->body);
    if (buf_append(&j->body, m->body, m->len) < 0)
        return -1;
    /* Stored by the database sequencer without its cseq: the body gets it (before the '}'). */
    if (!delivered_position(m->body, m->len, &conv, &cseq)) {
        char *end = buf_head(&j->body) + buf_used(&j->body);
        while (end > buf_head(&j->body) + it->at && end[-1] != '}')
            end--;
        if (end == buf_head(&j->body) + it->at)
            return 0; /* not an object: left out */
        j->body.len = (size_t)(end - 1 - buf_head(&j->body));
        char tail[40];
        int tl = snprintf(tail, sizeof tail, ",\"cseq\":%lld}", (long long)m->cseq);
        if (buf_append(&j->body, tail, (size_t)tl) < 0)
            return -1;
    }
    it->len = buf_used(&j->body) - it->at;
    j->n++;
    return 0;
}

static void collect(void *arg, const struct store_logmsg *m)
{
    struct fill_job *j = arg;
    if (m->cseq > j->page_last)
        j->page_last = m->cseq;
    if (j->err || j->full || m->sender == j->uid)
        return; /* the user's own chats are not delivered to the user */
    if (j->conv != 0 && j->n > 0 && buf_used(&j->body) + m->len > j->max_bytes) {
        j->full = true; /* as a login reply: bounded by bytes, the oldest first */
        return;
    }
    if (add_item(j, m) < 0)
        j->err = QC_EINTERNAL;
}

static int fill_on_store(const struct store_ops *ops, struct store *st, void *arg)
{
    struct fill_job *j = arg;
    bool more = false;
    if (j->conv == 0) {
        int err = ops->undelivered(st, j->uid, j->max_count, j->max_bytes, collect, j, &more);
        return err ? err : j->err;
    }
    int64_t after = j->after;
    for (int page = 0; page < RECOVER_FILL_PAGES; page++) {
        j->page_last = after;
        int err =
            ops->history(st, j->conv, STORE_NO_CURSOR, after, STORE_HISTORY_MAX, collect, j, &more);
        if (err || j->err)
            return err ? err : j->err;
        if (!more || j->full || j->page_last <= after)
            break;
        after = j->page_last;
    }
    return 0;
}

static void release_held(struct worker *w, struct conn *c, struct recover_state *s);
static void close_if_overflowed(struct worker *w, struct conn *c, struct recover_state *s);

/* Write what the fill found and the session has not had, in order. */
static size_t write_fill(struct worker *w, struct conn *c, struct recover_state *s,
                         const struct fill_job *j)
{
    size_t wrote = 0;
    for (size_t i = 0; i < j->n; i++) {
        const struct fill_item *it = &j->items[i];
        struct conv_pos *p = pos_find(s, it->conv);
        int64_t last = p ? p->last : stash_last(c, it->conv);
        if (it->cseq <= last)
            continue;
        conn_send_chat(w, c, s->uid, buf_head(&j->body) + it->at, it->len, w->index, 0);
        pos_set(s, it->conv, it->cseq);
        wrote++;
    }
    return wrote;
}

static void fill_done(void *arg, int err)
{
    struct fill_job *j = arg;
    struct worker *w = j->w;
    struct conn *c = worker_conn(w, j->slot);
    struct recover_state *s = NULL;
    if (c && c->cgen == j->cgen && c->state == CONN_OPEN && c->uid == j->uid && c->sgen == j->sgen)
        s = state_of(c);
    if (s) {
        if (err)
            log_warning("user %d: filling from the log failed (%s); the client can ask HISTORY",
                        j->uid, qc_strerror(err));
        size_t wrote = err ? 0 : write_fill(w, c, s, j);
        /*
         * What came before the chat that asked is now written, or was
         * delivered before this session (the cursor had passed it), or
         * could not be read (the client still has HISTORY): it goes next.
         */
        if (j->trig_conv)
            pos_set(s, j->trig_conv, j->trig_cseq - 1);
        if (wrote)
            log_info("user %d: %zu chat(s) missed on the way written from the log", j->uid, wrote);
        s->filling = false;
        release_held(w, c, s);
        close_if_overflowed(w, c, s);
    }
    buf_free(&j->body);
    free(j->items);
    free(j);
}

/* Ask the storage thread for conv's log after `after` (conv 0: uid's undelivered). */
static bool start_fill(struct worker *w, struct conn *c, struct recover_state *s, int64_t conv,
                       int64_t after, int64_t trig_conv, int64_t trig_cseq)
{
    struct fill_job *j = calloc(1, sizeof *j);
    if (j == NULL)
        return false;
    *j = (struct fill_job){ .w = w,
                            .slot = c->slot,
                            .cgen = c->cgen,
                            .sgen = c->sgen,
                            .uid = s->uid,
                            .conv = conv,
                            .after = after,
                            .trig_conv = trig_conv,
                            .trig_cseq = trig_cseq,
                            .max_count = w->cfg.max_offline_messages,
                            .max_bytes = (size_t)w->cfg.max_login_reply_bytes };
    buf_init(&j->body);
    /* The cursors of what was written this turn move first (the thread runs jobs in order). */
    delivered_flush(w);
    if (storage_submit(w->storage, fill_on_store, fill_done, j) != QC_OK) {
        free(j);
        return false;
    }
    s->filling = true;
    log_debug("user %d: " RECOVER_FILL_LOG " (conv %lld after cseq %lld, for cseq %lld)", s->uid,
              (long long)conv, (long long)after, (long long)trig_cseq);
    return true;
}

/* ---- delivering ------------------------------------------------------------ */

/* Keep a chat behind the fill in progress; false (and it is confirmed: in the log) when no room. */
static bool hold(struct worker *w, struct recover_state *s, int32_t uid, const char *p, size_t n,
                 uint32_t origin, uint32_t token)
{
    struct held_chat *h = s->held < RECOVER_HELD_MAX ? malloc(sizeof *h + n) : NULL;
    if (h == NULL) {
        w->hooks.mark_done(w, origin, token, 0);
        s->overflow = true;
        return false;
    }
    *h = (struct held_chat){ .uid = uid, .origin = origin, .token = token, .len = n };
    memcpy(h->p, p, n);
    if (s->tail)
        s->tail->next = h;
    else
        s->head = h;
    s->tail = h;
    s->held++;
    return true;
}

/*
 * A chat could not be kept in order: the session ends (its next login reads
 * the log).  Last thing the caller does: the session's state goes with it.
 */
static void close_if_overflowed(struct worker *w, struct conn *c, struct recover_state *s)
{
    if (!s->overflow)
        return;
    log_warning("user %d: %zu chats wait behind a fill from the log; closing the session", s->uid,
                s->held);
    conn_close_gracefully(w, c);
}

/* One chat through the checks; false when it started a fill (the caller keeps it first). */
static bool deliver_one(struct worker *w, struct conn *c, struct recover_state *s, int32_t uid,
                        const char *p, size_t n, uint32_t origin, uint32_t token)
{
    int64_t conv, cseq;
    if (!delivered_position(p, n, &conv, &cseq)) {
        conn_send_chat(w, c, uid, p, n, origin, token);
        return true;
    }
    struct conv_pos *pos = pos_find(s, conv);
    int64_t last = pos ? pos->last : stash_last(c, conv);
    bool known = pos != NULL || last > 0;
    if (known && cseq <= last) {
        w->hooks.mark_done(w, origin, token, 0); /* a repeat: this session has it */
        return true;
    }
    bool gap = known && cseq > last + 1;
    /* Unknown conversation: what came before it is after the delivered cursor. */
    bool unknown = !known && cseq > 1;
    if ((gap || unknown) && start_fill(w, c, s, gap ? conv : 0, last, conv, cseq))
        return false;
    conn_send_chat(w, c, uid, p, n, origin, token);
    pos_set(s, conv, cseq);
    return true;
}

/* The chats that waited go through the checks in order, until one starts another fill. */
static void release_held(struct worker *w, struct conn *c, struct recover_state *s)
{
    while (s->head && !s->filling && !c->hold && c->state == CONN_OPEN) {
        struct held_chat *h = s->head;
        if (!deliver_one(w, c, s, h->uid, h->p, h->len, h->origin, h->token))
            break; /* it stays first in line, behind the new fill */
        s->head = h->next;
        if (s->head == NULL)
            s->tail = NULL;
        s->held--;
        free(h);
    }
}

void recover_send_chat(struct worker *w, struct conn *c, int32_t uid, const char *p, size_t n,
                       uint32_t origin, uint32_t token)
{
    struct recover_state *s = NULL;
    if (w->clustered && c->state == CONN_OPEN && c->uid == uid && c->sgen != 0)
        s = state_for(w, c);
    if (s == NULL) {
        conn_send_chat(w, c, uid, p, n, origin, token);
        return;
    }
    /*
     * While the login reply is read from the log (c->hold), chats wait here:
     * the reply may carry the same ones (committed before it was read), and
     * recover_login_sent drops those by cseq once it is queued.
     */
    if ((s->filling || s->head || c->hold || !deliver_one(w, c, s, uid, p, n, origin, token)) &&
        !hold(w, s, uid, p, n, origin, token))
        close_if_overflowed(w, c, s);
}

/*
 * The session's own chat, committed as cseq: the session has it (it sent
 * it; fills leave a user's own chats out), so the other side's answer,
 * cseq + 1, is not a gap.  Without this every reply across nodes started a
 * fill (a read on the storage thread, behind the group commits).  Only the
 * next cseq moves the position: a chat of the other side still on its way
 * below it must still come, or be filled.
 */
void recover_sent_own(struct worker *w, struct conn *c, int64_t conv, int64_t cseq)
{
    if (!w->clustered || c->state != CONN_OPEN || c->sgen == 0)
        return;
    struct recover_state *s = state_for(w, c);
    if (s == NULL)
        return; /* out of memory: the next chat of conv is filled, as before */
    struct conv_pos *pos = pos_find(s, conv);
    int64_t last = pos ? pos->last : stash_last(c, conv);
    bool known = pos != NULL || last > 0;
    if (known ? cseq == last + 1 : cseq == 1)
        pos_set(s, conv, cseq);
}

void recover_login_sent(struct worker *w, struct conn *c)
{
    struct recover_state *s = c->recover;
    if (s && !c->hold && state_of(c) == s && !s->filling) {
        release_held(w, c, s);
        close_if_overflowed(w, c, s);
    }
}

/* ---- Redis came back ------------------------------------------------------- */

void recover_resync_all(struct worker *w)
{
    size_t started = 0;
    for (uint32_t slot = 0; slot < worker_slot_count(w); slot++) {
        struct conn *c = worker_conn(w, slot);
        if (c == NULL || c->state != CONN_OPEN || c->sgen == 0 || c->hold)
            continue; /* no session, or its login reply is being read from the log now */
        struct recover_state *s = state_for(w, c);
        if (s == NULL || s->filling)
            continue; /* a fill already on its way reads after this point */
        started += start_fill(w, c, s, 0, 0, 0, 0);
    }
    if (started)
        log_info("relay reconnected: %zu session(s) filled from the log", started);
}

void recover_forget(struct worker *w, struct conn *c)
{
    struct recover_state *s = c->recover;
    if (s == NULL)
        return;
    confirm_held(w, s);
    free(s);
    c->recover = NULL;
}
