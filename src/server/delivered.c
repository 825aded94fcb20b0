/*
 * delivered.c - noting written chats and advancing the delivered cursors
 * in batches (see delivered.h).
 *
 * The notes of one loop turn are sorted by user and conversation, the
 * highest cseq of each pair kept, and handed to the storage thread as one
 * advance (storage_advance): written with the storage thread's next group
 * commit, in the appends' transaction when the driver can merge them.  A
 * failed advance is logged
 * and dropped: the cursor stays lower, so those chats come again at the next
 * login (a duplicate the client drops by cseq), never lost.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/inttable.h"
#include "common/log.h"
#include "server/delivered.h"
#include "server/seqtab.h"
#include "server/service_chat.h"
#include "server/storage.h"
#include "server/worker.h"

#define DELIVERED_BATCH_MAX     65536 /* notes held before a turn ends: flushed early beyond */
#define DELIVERED_FENCE_POLL_US 500   /* a waiting login looks at the counters this often */

struct note {
    int32_t uid;
    struct store_cursor pos;
};

struct delivered_batch {
    struct note *notes;
    size_t n, cap;
};

/* ---- reading a forwarded chat --------------------------------------------- */

/* The members delivered_position reads, as bits of struct chat_ints.have. */
enum chat_int {
    CI_MSGID = 1 << 0,
    CI_CSEQ = 1 << 1,
    CI_GROUPID = 1 << 2,
    CI_ID = 1 << 3,
    CI_TOID = 1 << 4,
};

struct chat_ints {
    unsigned have; /* enum chat_int bits: the members found, each the first of its name */
    int64_t msgid, cseq, groupid, id, toid;
};

/* The member of key name [k, k + klen), or 0 when delivered_position needs none. */
static unsigned member_of(const char *k, size_t klen, struct chat_ints *ci, int64_t **slot)
{
#define MEMBER(lit, bit, field)                                 \
    if (klen == sizeof(lit) - 1 && memcmp(k, lit, klen) == 0) { \
        *slot = &ci->field;                                     \
        return bit;                                             \
    }
    MEMBER("msgid", CI_MSGID, msgid)
    MEMBER("cseq", CI_CSEQ, cseq)
    MEMBER("groupid", CI_GROUPID, groupid)
    MEMBER("id", CI_ID, id)
    MEMBER("toid", CI_TOID, toid)
#undef MEMBER
    return 0;
}

/* The closing quote of the string whose content starts at k (escaped quotes skipped), or NULL. */
static const char *string_close(const char *k, const char *end)
{
    const char *q = k;
    while ((q = memchr(q, '"', (size_t)(end - q))) != NULL) {
        const char *b = q;
        while (b > k && b[-1] == '\\')
            b--;
        if ((q - b) % 2 == 0)
            return q; /* an even run of backslashes escapes itself, not the quote */
        q++;
    }
    return NULL;
}

/*
 * The integer members of the JSON object in p that delivered_position
 * needs, in one pass (this runs for every chat written to a socket).  Each
 * string, name or value, is skipped whole up to its closing quote, so a
 * string opened right after '{' or ',' is a member name of the object (of
 * the outer one: a chat has no nested objects), and a value that ends in
 * ',' or '{' (a user's name "bob,") does not make the quote closing it look
 * like one.  The first member of each name counts.  A member whose value is
 * not an unsigned integer counts as absent.
 */
static void read_chat_ints(const char *p, size_t n, struct chat_ints *ci)
{
    const char *end = p + n, *q = p;
    unsigned seen = 0;
    ci->have = 0;
    while (q < end && (q = memchr(q, '"', (size_t)(end - q))) != NULL) {
        const char *k = q + 1, *ke = string_close(k, end);
        if (ke == NULL)
            return;
        bool is_name = q > p && (q[-1] == '{' || q[-1] == ',');
        q = ke + 1;
        if (!is_name)
            continue; /* a string value, skipped whole */
        int64_t *slot;
        unsigned bit = member_of(k, (size_t)(ke - k), ci, &slot);
        if (bit == 0 || (seen & bit) || q >= end || *q != ':')
            continue;
        seen |= bit;
        const char *d = q + 1;
        if (d >= end || *d < '0' || *d > '9')
            continue;
        int64_t v = 0;
        while (d < end && *d >= '0' && *d <= '9' && v < INT64_MAX / 10)
            v = v * 10 + (*d++ - '0');
        *slot = v;
        ci->have |= bit;
        q = d;
    }
}

bool delivered_position(const char *p, size_t n, int64_t *conv, int64_t *cseq)
{
    struct chat_ints ci;
    read_chat_ints(p, n, &ci);
    if (!(ci.have & CI_MSGID) || !(ci.have & CI_CSEQ) || ci.cseq <= 0)
        return false;
    *cseq = ci.cseq;
    if (ci.msgid == QC_GROUP_CHAT_MSG && (ci.have & CI_GROUPID) && ci.groupid <= INT32_MAX) {
        *conv = store_conv_group((int32_t)ci.groupid);
        return true;
    }
    if (ci.msgid == QC_ONE_CHAT_MSG && (ci.have & CI_ID) && (ci.have & CI_TOID) && ci.id > 0 &&
        ci.id <= INT32_MAX && ci.toid > 0 && ci.toid <= INT32_MAX) {
        *conv = store_conv_pair((int32_t)ci.id, (int32_t)ci.toid);
        return true;
    }
    return false;
}

/* ---- noting --------------------------------------------------------------- */

static struct delivered_batch *batch_of(struct worker *w)
{
    if (w->delivered == NULL)
        w->delivered = calloc(1, sizeof *w->delivered);
    return w->delivered;
}

void delivered_note(struct worker *w, int32_t uid, const char *p, size_t n)
{
    struct note nt = { .uid = uid };
    if (!delivered_position(p, n, &nt.pos.conv, &nt.pos.cseq))
        return;
    /* The log off: a chat written live only is not stored; its cursor need not move. */
    if (service_chat_log_off(w) && !seqtab_maybe_stored(w->seqtab, nt.pos.conv, nt.pos.cseq))
        return;
    struct delivered_batch *b = batch_of(w);
    if (b == NULL)
        return; /* out of memory: the chat comes again at the next login */
    if (b->n == b->cap) {
        size_t ncap = b->cap ? b->cap * 2 : 64;
        struct note *g = realloc(b->notes, ncap * sizeof *g);
        if (g == NULL)
            return;
        b->notes = g;
        b->cap = ncap;
    }
    b->notes[b->n++] = nt;
    w->stats->cursor_noted++;
    if (b->n >= DELIVERED_BATCH_MAX)
        delivered_flush(w);
}

/* ---- advancing ------------------------------------------------------------ */

static int by_user_conv(const void *x, const void *y)
{
    const struct note *a = x, *b = y;
    if (a->uid != b->uid)
        return a->uid < b->uid ? -1 : 1;
    if (a->pos.conv != b->pos.conv)
        return a->pos.conv < b->pos.conv ? -1 : 1;
    return a->pos.cseq < b->pos.cseq ? -1 : a->pos.cseq > b->pos.cseq;
}

/* Sorted: keep the last (highest cseq) note of each (user, conv). */
static size_t keep_highest(struct note *v, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k > 0 && v[k - 1].uid == v[i].uid && v[k - 1].pos.conv == v[i].pos.conv)
            v[k - 1] = v[i];
        else
            v[k++] = v[i];
    }
    return k;
}

struct advance_job {
    struct worker_stats *stats;
    uint64_t upto; /* cursor_noted when the job was made: cursor_done once it ran */
    int32_t *uids;
    struct store_cursor *pos;
    size_t n;
};

/* On the storage thread, as soon as it committed: a login on another worker may be waiting. */
static void advance_applied(void *arg, int err)
{
    struct advance_job *j = arg;
    (void)err; /* failed: those chats come again at the next login, the fence need not wait */
    j->stats->cursor_done = j->upto;
}

static void advance_done(void *arg, int err)
{
    struct advance_job *j = arg;
    if (err)
        log_warning("delivered cursors of %zu conversation(s) not advanced: %s (those chats "
                    "come again at the next login)",
                    j->n, qc_strerror(err));
    free(j->uids);
    free(j->pos);
    free(j);
}

/* The job for the batch's notes (sorted, highest of each pair kept), or NULL when out of memory. */
static struct advance_job *advance_job_of(struct worker *w, const struct delivered_batch *b)
{
    struct advance_job *j = malloc(sizeof *j);
    int32_t *uids = malloc(b->n * sizeof *uids);
    struct store_cursor *pos = malloc(b->n * sizeof *pos);
    if (j == NULL || uids == NULL || pos == NULL) {
        free(j);
        free(uids);
        free(pos);
        return NULL;
    }
    for (size_t i = 0; i < b->n; i++) {
        uids[i] = b->notes[i].uid;
        pos[i] = b->notes[i].pos;
    }
    *j = (struct advance_job){ w->stats, w->stats->cursor_noted, uids, pos, b->n };
    return j;
}

/*
 * The turn's cursors go to the storage thread as one advance, written with
 * its next group commit (storage_advance), not as a transaction of their own.
 */
void delivered_flush(struct worker *w)
{
    struct delivered_batch *b = w->delivered;
    if (b == NULL || b->n == 0 || w->storage == NULL)
        return;
    qsort(b->notes, b->n, sizeof *b->notes, by_user_conv);
    b->n = keep_highest(b->notes, b->n);
    struct advance_job *j = advance_job_of(w, b);
    if (j == NULL)
        return; /* kept for the next turn */
    if (storage_advance(w->storage, j->uids, j->pos, j->n, advance_applied, advance_done, j) !=
        QC_OK) {
        /* Queue full: the notes stay for the next turn; a waiting login's fence waits for it. */
        free(j->uids);
        free(j->pos);
        free(j);
        return;
    }
    b->n = 0;
}

/* ---- marks not yet resolved ---------------------------------------------- */

/* uid's bucket of marks_pending. */
static uint32_t mark_bucket(int32_t uid)
{
    return int_hash((uint32_t)uid) % ONLINE_MARK_BUCKETS;
}

/*
 * Only this worker writes its counts (the master clears them once it is
 * gone), so a plain load and a release store do: no locked read-modify-write
 * on every written chat.  The release orders a resolved mark after its note
 * (cursor_noted) for the login that sees the count fall.
 */
static void add_marks(struct worker *w, int32_t uid, int delta)
{
    _Atomic uint32_t *n = &w->stats->marks_pending[mark_bucket(uid)];
    uint32_t now = atomic_load_explicit(n, memory_order_relaxed);

    if (delta < 0 && now == 0)
        return; /* never below zero: a count cleared by a restart stays at zero */
    atomic_store_explicit(n, now + (uint32_t)delta, memory_order_release);
}

void delivered_mark_queued(struct worker *w, int32_t uid)
{
    add_marks(w, uid, 1);
}

void delivered_mark_resolved(struct worker *w, int32_t uid)
{
    add_marks(w, uid, -1);
}

void delivered_marks_clear(struct worker_stats *ws)
{
    for (uint32_t b = 0; b < ONLINE_MARK_BUCKETS; b++)
        ws->marks_pending[b] = 0;
}

/* ---- a login on another worker -------------------------------------------- */

void delivered_fence_take(struct worker *w, int32_t uid, struct delivered_fence *f)
{
    f->bucket = mark_bucket(uid);
    for (uint32_t k = 0; k < ONLINE_MAX_WORKERS; k++) {
        struct worker_stats *ws =
            k < w->nworkers && k != w->index ? online_stats(w->online, k) : NULL;
        f->pid[k] = ws ? ws->pid : 0;
        f->upto[k] = f->pid[k] != 0 ? ws->cursor_noted : 0;
        f->appends[k] = f->pid[k] != 0 ? ws->appends_queued : 0;
        f->marks[k] = f->pid[k] != 0 && ws->marks_pending[f->bucket] > 0;
    }
}

/*
 * Worker k held marks of the user's bucket: true while it still does.  Once
 * it holds none, what they became is counted (delivered_note before the mark
 * is resolved, offline_keep likewise), so the fence moves up to its counters
 * of now and waits for those jobs like for the others.
 */
static bool marks_pending(struct worker_stats *ws, struct delivered_fence *f, uint32_t k)
{
    if (!f->marks[k])
        return false;
    if (ws->pid != f->pid[k]) {
        f->marks[k] = false; /* died or restarted: its marks went with it */
        return false;
    }
    if (ws->marks_pending[f->bucket] > 0)
        return true;
    f->marks[k] = false;
    f->upto[k] = ws->cursor_noted;
    f->appends[k] = ws->appends_queued;
    return false;
}

/* Worker k's jobs have run up to the fence (or it died or restarted: its counts began again). */
static bool fence_passed(struct worker *w, struct delivered_fence *f)
{
    for (uint32_t k = 0; k < w->nworkers && k < ONLINE_MAX_WORKERS; k++) {
        struct worker_stats *ws = online_stats(w->online, k);
        if (marks_pending(ws, f, k))
            return false;
        if (f->upto[k] != 0 && ws->pid != 0 && ws->cursor_done < f->upto[k] &&
            ws->cursor_noted >= f->upto[k])
            return false;
        if (f->appends[k] != 0 && ws->pid != 0 && ws->appends_done < f->appends[k] &&
            ws->appends_queued >= f->appends[k])
            return false;
    }
    return true;
}

void delivered_fence_wait(struct worker *w, struct delivered_fence *f, int max_ms)
{
    struct timespec pause = { .tv_nsec = DELIVERED_FENCE_POLL_US * 1000L };
    int64_t t0 = clock_now_ms();
    while (!fence_passed(w, f)) {
        if (clock_now_ms() - t0 >= max_ms) {
            log_info("login: other workers' unwritten chats, cursor jobs or appends still "
                     "pending after %d ms; the reply may repeat messages (clients drop them by "
                     "cseq) or miss one still being stored (it comes at the next login)",
                     max_ms);
            return;
        }
        nanosleep(&pause, NULL);
    }
}
