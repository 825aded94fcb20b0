/*
 * service_chat.c - the chat path of the conversation log (see service_chat.h).
 *
 * A chat, single node (no Redis):
 *   validate -> [storage thread: does the recipient exist / the group's
 *   members / the conversation's last cseq, when not known] ->
 *   cseq = seqtab_next -> build the forwarded object with its cseq ->
 *   journal_put -> storage_append (queued) -> live delivery ->
 *   on commit: seqtab_committed, journal_done, ACK {seq, mid, cseq}.
 * While the storage thread answers the first step the sender's connection
 * is parked (service_async.c): its later chats wait, so they keep order.
 *
 * Several nodes (Redis): the database is the sequencer.  The chat is
 * appended with cseq 0 (storage_append_assign), and delivered live and
 * ACKed in the callback, with the cseq the committing transaction gave it.
 *
 * An append the store refused (database down) is kept and queued again on
 * the next tick, in order: its ACK waits, nothing is lost, and its cseq
 * stays taken, so the conversation gets no gap.  While the storage queue,
 * the retry list, the journal or the sequencer is full, a chat is held
 * before it takes a cseq: its sender reads nothing more until there is
 * room (a commit or a tick releases it), and only a chat held for
 * CHAT_HOLD_MAX_MS gets errno 13.  Chats to recipients who
 * are not online anywhere need nothing more: they are in the log, after the
 * recipient's delivered cursor.
 */
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "common/inttable.h"
#include "common/jsonw.h"
#include "common/log.h"
#include "server/conn.h"
#include "server/convmark.h"
#include "server/journal.h"
#include "server/metrics.h"
#include "server/online.h"
#include "server/pending.h"
#include "server/recover.h"
#include "server/reply.h"
#include "server/route.h"
#include "server/seqtab.h"
#include "server/service_async.h"
#include "server/request.h"
#include "server/service_chat.h"
#include "server/session.h"
#include "server/rate.h"
#include "server/storage.h"
#include "server/worker.h"

#define CHAT_HOLD_MAX_MS 2000  /* a chat waits this long for room to append, then errno 13 */
#define KNOWN_USERS_MAX  65536 /* recipients remembered to exist, per worker; emptied when full */

/* A chat request between validation and its append. */
struct chat {
    int msgid; /* QC_ONE_CHAT_MSG or QC_GROUP_CHAT_MSG */
    char seq[QC_SEQ_MAX + 1];
    bool has_seq;
    int32_t sender;
    uint32_t sender_gen; /* the sending session: the echo skips it (issue 15) */
    char name[QC_NAME_MAX + 1];
    int32_t to; /* toid, or the groupid */
    int64_t conv;
    /* What the storage thread must find out first. */
    bool need_user, need_members, need_seed;
    int64_t last_cseq; /* conv_last_cseq's answer */
    bool member;       /* the sender is in the group */
    struct id_list recipients;
    /* Set once sequenced. */
    uint32_t req; /* pending request (answers the sender) */
    int64_t mid, ts;
    char time[32];
    /* Held for room to append (hold_chat): its sender's connection, since when. */
    struct chat *held_next;
    uint32_t slot, cgen;
    int64_t held_since; /* ms, 0: never held */
    size_t len;
    char text[]; /* the msg field, len bytes and a NUL */
};

/* One append queued on the storage thread (or waiting to be queued again). */
struct appended {
    struct appended *next;
    struct worker *w;
    struct chat *ch;  /* several nodes: delivered in the callback; else NULL */
    uint32_t req;     /* gets the append's outcome */
    uint64_t journal; /* journal handle, 0: none */
    struct store_logmsg m;
    char body[];
};

struct log_retry {
    struct appended *head, *tail;
    size_t n;
    struct chat *held, *held_tail; /* chats waiting for room, oldest first */
    size_t nheld;
};

static void chat_free(struct chat *ch)
{
    if (ch) {
        free(ch->recipients.ids);
        free(ch);
    }
}

static void chat_reply_error(struct worker *w, struct conn *c, const struct chat *ch, int err)
{
    reply_error(w, c, ch->msgid, ch->has_seq ? ch->seq : NULL, err);
}

/* ---- the request's fields ------------------------------------------------ */

static int field_text(struct json_object *req, size_t max, const char **s, size_t *len)
{
    struct json_object *v;
    if (!json_object_object_get_ex(req, "msg", &v) || !json_object_is_type(v, json_type_string))
        return QC_EBADREQ;
    *s = json_object_get_string(v);
    *len = (size_t)json_object_get_string_len(v);
    if (*len > max)
        return QC_ETOOLONG;
    return memchr(*s, '\0', *len) ? QC_EBADREQ : 0;
}

static struct chat *chat_new(const struct conn *c, int msgid, const char *seq, int32_t to,
                             const char *text, size_t len)
{
    struct chat *ch = calloc(1, sizeof *ch + len + 1);
    if (ch == NULL)
        return NULL;
    ch->msgid = msgid;
    if (seq) {
        strlcpy(ch->seq, seq, sizeof ch->seq);
        ch->has_seq = true;
    }
    ch->sender = c->uid;
    ch->sender_gen = c->sgen;
    ch->slot = c->slot;
    ch->cgen = c->cgen;
    strlcpy(ch->name, c->name, sizeof ch->name);
    ch->to = to;
    memcpy(ch->text, text, len);
    ch->len = len;
    return ch;
}

/* ---- the forwarded object ------------------------------------------------- */

/* The chat as every recipient gets it (cseq 0: not known yet, left out). */
static int build_forwarded(const struct chat *ch, int64_t cseq, struct buf *b)
{
    struct jsonw jw;
    jsonw_begin(&jw, b);
    jsonw_int(&jw, "msgid", ch->msgid);
    jsonw_int(&jw, "id", ch->sender);
    if (ch->msgid == QC_GROUP_CHAT_MSG)
        jsonw_int(&jw, "userid", ch->sender);
    jsonw_str(&jw, "name", ch->name);
    jsonw_int(&jw, ch->msgid == QC_GROUP_CHAT_MSG ? "groupid" : "toid", ch->to);
    jsonw_strn(&jw, "msg", ch->text, ch->len);
    jsonw_str(&jw, "time", ch->time);
    jsonw_int(&jw, "ts", ch->ts);
    jsonw_int(&jw, "mid", ch->mid);
    if (cseq > 0)
        jsonw_int(&jw, "cseq", cseq);
    return jsonw_end(&jw) < 0 ? QC_EINTERNAL : 0;
}

static void stamp(struct worker *w, struct chat *ch)
{
    strlcpy(ch->time, worker_time_str(w, &ch->ts), sizeof ch->time);
    ch->mid = online_next_mid(w->online);
}

/* ---- live delivery -------------------------------------------------------- */

/*
 * Every online recipient gets it now; the others find it in the log after
 * their cursor.  How many recipients it did not reach.
 */
static size_t deliver_live(struct worker *w, const struct chat *ch, const char *body, size_t len)
{
    size_t left = 0;
    for (size_t i = 0; i < ch->recipients.n; i++)
        if (route_chat(w, ch->recipients.ids[i], body, len, ch->req) == ROUTE_OFFLINE)
            left++;
    if (ch->msgid != QC_ONE_CHAT_MSG || ch->to != ch->sender)
        route_echo(w, ch->sender, ch->sender_gen, body, len, ch->req); /* the sender's devices */
    if (left > 0) {
        metrics_add(QM_DELIVERIES, QM_PATH_STORED, left); /* "stored": left in the log */
        w->stats->offline_stored += left;
    }
    return left;
}

/* ---- appends -------------------------------------------------------------- */

static struct log_retry *retry_list(struct worker *w)
{
    if (w->log_retry == NULL)
        w->log_retry = calloc(1, sizeof *w->log_retry);
    return w->log_retry;
}

static void append_done(void *arg, int err);
static void append_assigned(void *arg, int err, int64_t cseq);
static void release_held(struct worker *w);

/* Queue a on the storage thread; false when the queue refused it. */
static bool queue_append(struct worker *w, struct appended *a)
{
    if (a->ch)
        return storage_append_assign(w->storage, &a->m, append_assigned, a) == QC_OK;
    return storage_append(w->storage, &a->m, append_done, a) == QC_OK;
}

static void keep_for_retry(struct worker *w, struct appended *a)
{
    struct log_retry *r = retry_list(w);
    if (r == NULL) {
        /* Out of memory: the journal still holds it for the next worker. */
        log_error("conv %lld cseq %lld: cannot keep the append for a retry", (long long)a->m.conv,
                  (long long)a->m.cseq);
        pending_done(w, a->req, QC_ESTORAGE);
        chat_free(a->ch);
        free(a);
        return;
    }
    a->next = NULL;
    if (r->tail)
        r->tail->next = a;
    else
        r->head = a;
    r->tail = a;
    r->n++;
}

/* In order: behind any append already waiting for a retry. */
static void append_in_order(struct worker *w, struct appended *a)
{
    if ((w->log_retry && w->log_retry->head) || !queue_append(w, a))
        keep_for_retry(w, a);
}

static struct appended *appended_new(struct worker *w, const struct store_logmsg *m, uint32_t req)
{
    struct appended *a = calloc(1, sizeof *a + m->len);
    if (a == NULL)
        return NULL;
    a->w = w;
    a->req = req;
    a->m = *m;
    memcpy(a->body, m->body, m->len);
    a->m.body = a->body;
    return a;
}

/* Single node: the append of a sequenced chat committed (or failed: retried). */
static void append_done(void *arg, int err)
{
    struct appended *a = arg;
    struct worker *w = a->w;
    if (err) {
        log_warning("conv %lld cseq %lld: append failed (%s), retrying", (long long)a->m.conv,
                    (long long)a->m.cseq, qc_strerror(err));
        keep_for_retry(w, a);
        return;
    }
    if (w->seqtab)
        seqtab_committed(w->seqtab, a->m.conv, a->m.cseq);
    if (w->journal && a->journal)
        journal_done(w->journal, w->index, a->journal);
    w->stats->appends_done++;
    pending_done(w, a->req, 0);
    free(a);
    release_held(w); /* the commit made room */
}

/*
 * Several nodes: the sending session has its own chat (recover.c), so the
 * answer that comes next in the conversation does not look like a gap.
 */
static void note_sent_by_session(struct worker *w, const struct chat *ch, int64_t cseq)
{
    struct online_loc locs[ONLINE_USER_MAX];
    size_t n = online_sessions(w->online, ch->sender, locs, ONLINE_USER_MAX);
    for (size_t k = 0; k < n; k++) {
        if (locs[k].worker != w->index || locs[k].gen != ch->sender_gen)
            continue;
        struct conn *c = conn_of_session(w, ch->sender, locs[k].slot, locs[k].gen);
        if (c)
            recover_sent_own(w, c, ch->conv, cseq);
    }
}

/* Several nodes: the database numbered the chat; now it goes out. */
static void append_assigned(void *arg, int err, int64_t cseq)
{
    struct appended *a = arg;
    struct worker *w = a->w;
    struct chat *ch = a->ch;
    if (err) {
        log_warning("conv %lld: append failed (%s), retrying", (long long)a->m.conv,
                    qc_strerror(err));
        a->m.cseq = 0;
        keep_for_retry(w, a);
        return;
    }
    struct buf b = worker_buf_take(w);
    if (build_forwarded(ch, cseq, &b) == 0) {
        pending_set_cseq(w, ch->req, cseq);
        note_sent_by_session(w, ch, cseq);
        deliver_live(w, ch, buf_head(&b), buf_used(&b));
    } else {
        log_error("conv %lld cseq %lld: stored, but out of memory to deliver it live",
                  (long long)a->m.conv, (long long)cseq);
    }
    worker_buf_give(w, &b);
    pending_done(w, a->req, 0);
    chat_free(ch);
    free(a);
    release_held(w); /* the commit made room */
}

void service_chat_tick(struct worker *w)
{
    struct log_retry *r = w->log_retry;
    while (r && r->head) {
        struct appended *a = r->head;
        if (!queue_append(w, a))
            break; /* still full: next tick */
        r->head = a->next;
        if (r->head == NULL)
            r->tail = NULL;
        r->n--;
    }
    release_held(w); /* room again, or held too long */
}

bool service_chat_waiting(const struct worker *w)
{
    return w->log_retry && w->log_retry->head;
}

/* ---- sequencing ----------------------------------------------------------- */

/* Room for one more append in the queue and the journal: checked before a cseq is taken. */
static bool room_to_append(struct worker *w, size_t len)
{
    struct storage_stats st;
    storage_get_stats(w->storage, &st);
    if (st.outstanding + 1 >= (size_t)w->cfg.storage_queue_size)
        return false;
    if (w->log_retry && w->log_retry->n >= (size_t)w->cfg.storage_queue_size)
        return false;
    /* A record is its body plus a header of well under 256 bytes. */
    return w->journal == NULL ||
           journal_used(w->journal, w->index) + len + 256 <= (size_t)w->cfg.history_journal_bytes;
}

/* Journal the sequenced message m and queue its append; the ACK (req) waits for the commit. */
static bool append_sequenced(struct worker *w, const struct store_logmsg *m, uint32_t req)
{
    struct appended *a = appended_new(w, m, req);
    if (a == NULL)
        return false;
    if (w->journal && (a->journal = journal_put(w->journal, w->index, m)) == 0)
        log_warning("conv %lld cseq %lld: journal full, appended without it", (long long)m->conv,
                    (long long)m->cseq);
    if (req)
        pending_add(w, req);    /* the append's reference: the ACK waits for the commit */
    w->stats->appends_queued++; /* a login on another worker may wait for it (delivered.c) */
    append_in_order(w, a);
    return true;
}

/* Is every recipient online on this node now (the log off: it need not be stored)? */
static bool all_recipients_online(struct worker *w, const struct chat *ch)
{
    struct online_loc loc;
    for (size_t i = 0; i < ch->recipients.n; i++)
        if (!online_lookup(w->online, ch->recipients.ids[i], &loc))
            return false;
    return true;
}

/*
 * The log off: a chat that reached every recipient live is not stored, only
 * its cseq is kept taken (convmark.c); one that did not reach someone is
 * appended as with the log on.  The decision comes before delivery, so the
 * delivered cursors of the recipients it reaches move when it is stored
 * (delivered.c asks seqtab_maybe_stored), and a live write that fails later
 * stores it then (offline.c).  false: out of memory, the cseq is lost.
 */
static bool send_log_off(struct worker *w, const struct chat *ch, const struct store_logmsg *m,
                         const char *body, size_t len)
{
    if (!all_recipients_online(w, ch)) {
        seqtab_stored(w->seqtab, m->conv, m->cseq);
        if (!append_sequenced(w, m, ch->req))
            return false;
        deliver_live(w, ch, body, len);
        return true;
    }
    if (deliver_live(w, ch, body, len) == 0) {
        convmark_note(w, m->conv, m->cseq, m->ts);
        return true;
    }
    /* Someone went meanwhile: stored after all (nothing was written to a socket yet). */
    seqtab_stored(w->seqtab, m->conv, m->cseq);
    return append_sequenced(w, m, ch->req);
}

bool service_chat_log_off(const struct worker *w)
{
    return w->seqtab != NULL && w->st->conv_raise != NULL &&
           strcmp(w->cfg.history_enabled, "no") == 0;
}

/* Single node: the chat has cseq; journal, queue the append, deliver. */
static void send_sequenced(struct worker *w, struct conn *c, struct chat *ch, int64_t cseq)
{
    stamp(w, ch); /* after the cseq: mid grows with cseq within a conversation */
    struct buf b = worker_buf_take(w);
    int err = build_forwarded(ch, cseq, &b);
    struct store_logmsg m = { .conv = ch->conv,
                              .cseq = cseq,
                              .mid = ch->mid,
                              .ts = ch->ts,
                              .sender = ch->sender,
                              .body = buf_head(&b),
                              .len = buf_used(&b) };
    ch->req = err ? 0 : pending_open(w, c, ch->msgid, ch->has_seq ? ch->seq : NULL);
    bool sent = false;
    if (ch->req) {
        rate_charge(w, c, rate_fanout_cost(ch->recipients.n, buf_used(&b))); /* issue 14 item 4 */
        pending_set_mid(w, ch->req, ch->mid);
        pending_set_cseq(w, ch->req, cseq);
        if (service_chat_log_off(w)) {
            sent = send_log_off(w, ch, &m, buf_head(&b), buf_used(&b));
        } else if ((sent = append_sequenced(w, &m, ch->req))) {
            deliver_live(w, ch, buf_head(&b), buf_used(&b));
        }
    }
    if (!sent) {
        /* cseq is taken: the conversation would have a gap.  Only out of memory gets here. */
        log_error("conv %lld cseq %lld: out of memory, the cseq is lost", (long long)ch->conv,
                  (long long)cseq);
        if (ch->req)
            pending_done(w, ch->req, QC_EINTERNAL);
        else
            chat_reply_error(w, c, ch, QC_EINTERNAL);
        worker_buf_give(w, &b);
        return;
    }
    pending_done(w, ch->req, 0); /* the opener's reference */
    worker_buf_give(w, &b);
}

/* Several nodes: append with cseq 0; chat_assigned delivers it. */
static void send_to_database(struct worker *w, struct conn *c, struct chat *ch)
{
    stamp(w, ch);
    struct buf b = worker_buf_take(w);
    int err = build_forwarded(ch, 0, &b);
    struct store_logmsg m = { .conv = ch->conv,
                              .mid = ch->mid,
                              .ts = ch->ts,
                              .sender = ch->sender,
                              .body = buf_head(&b),
                              .len = buf_used(&b) };
    ch->req = err ? 0 : pending_open(w, c, ch->msgid, ch->has_seq ? ch->seq : NULL);
    struct appended *a = ch->req ? appended_new(w, &m, ch->req) : NULL;
    if (a != NULL)
        rate_charge(w, c, rate_fanout_cost(ch->recipients.n, buf_used(&b))); /* issue 14 item 4 */
    worker_buf_give(w, &b);
    if (a == NULL) {
        if (ch->req)
            pending_done(w, ch->req, QC_EINTERNAL);
        else
            chat_reply_error(w, c, ch, QC_EINTERNAL);
        chat_free(ch);
        return;
    }
    pending_set_mid(w, ch->req, ch->mid);
    pending_add(w, ch->req);
    a->ch = ch;
    append_in_order(w, a);
    pending_done(w, ch->req, 0);
}

static bool chat_prepared(struct worker *w, struct conn *c, void *arg, int err);
static int prepare_on_store(const struct store_ops *ops, struct store *st, void *arg);

/* Park the sender and ask the storage thread; true when it could not (answered). */
static bool ask_store_first(struct worker *w, struct conn *c, struct chat *ch)
{
    int err = service_async(w, c, prepare_on_store, chat_prepared, ch);
    if (err == 0)
        return false;
    chat_reply_error(w, c, ch, err);
    chat_free(ch);
    return true;
}

static bool chat_go(struct worker *w, struct conn *c, struct chat *ch);

/*
 * No room to append: park the sender with the chat at the end of the held
 * list (false), or, held too long already, answer errno 13 (true).
 */
static bool hold_chat(struct worker *w, struct conn *c, struct chat *ch)
{
    struct log_retry *r = retry_list(w);
    if (ch->held_since == 0)
        ch->held_since = w->now_ms;
    if (r == NULL || w->now_ms - ch->held_since >= CHAT_HOLD_MAX_MS) {
        log_warning("conv %lld: sequencer, journal or storage queue full for %d ms, chat refused",
                    (long long)ch->conv, CHAT_HOLD_MAX_MS);
        chat_reply_error(w, c, ch, QC_ESTORAGE);
        chat_free(ch);
        return true;
    }
    ch->held_next = NULL;
    if (r->held_tail)
        r->held_tail->held_next = ch;
    else
        r->held = ch;
    r->held_tail = ch;
    r->nheld++;
    c->busy = true; /* reads nothing more until the chat is sent or answered */
    return false;
}

/* The held chats, oldest first, while there is room (or they waited too long). */
static void release_held(struct worker *w)
{
    struct log_retry *r = w->log_retry;
    /* Each at most once: a chat the sequencer holds again goes to the end. */
    for (size_t n = r ? r->nheld : 0; n > 0 && r->held; n--) {
        struct chat *ch = r->held;
        struct conn *c = worker_conn(w, ch->slot);
        if (c && c->cgen != ch->cgen)
            c = NULL;
        if (c && c->state == CONN_OPEN && !room_to_append(w, ch->len) &&
            w->now_ms - ch->held_since < CHAT_HOLD_MAX_MS)
            return;
        r->held = ch->held_next;
        if (r->held == NULL)
            r->held_tail = NULL;
        r->nheld--;
        if (c == NULL || c->state != CONN_OPEN) {
            chat_free(ch); /* the sender left: the chat was never accepted */
            if (c)
                conn_resume(w, c);
        } else if (chat_go(w, c, ch)) {
            conn_resume(w, c);
        }
    }
}

/*
 * Take the chat as far as it goes now.  true: the request is finished (sent
 * or answered); false: the sender is parked until the store answers or
 * there is room to append.
 */
static bool chat_go(struct worker *w, struct conn *c, struct chat *ch)
{
    if (ch->need_user || ch->need_members || ch->need_seed)
        return ask_store_first(w, c, ch);
    if (!room_to_append(w, ch->len))
        return hold_chat(w, c, ch);
    if (w->seqtab == NULL) {
        send_to_database(w, c, ch);
        return true;
    }
    int64_t cseq = seqtab_next(w->seqtab, ch->conv);
    if (cseq == SEQ_COLD) {
        ch->need_seed = true;
        return ask_store_first(w, c, ch);
    }
    if (cseq == SEQ_FULL)
        return hold_chat(w, c, ch);
    send_sequenced(w, c, ch, cseq);
    chat_free(ch);
    return true;
}

/*
 * Recipients known to exist.  An account is never deleted and its id never
 * reused, so once the store (or this node's online table) has shown a user,
 * a chat to them needs no store call to ask again.  It matters most in a
 * cluster: a recipient online on another node is not in this node's table,
 * and asking cost every cross-node chat a storage-thread round (behind the
 * round's commit) before its own append.  Bounded: emptied when full.
 */
static bool recipient_known(const struct worker *w, int32_t uid)
{
    uint64_t unused;
    return w->known_users != NULL && inttable_get(w->known_users, (uint32_t)uid, &unused);
}

static void remember_recipient(struct worker *w, int32_t uid)
{
    if (w->known_users != NULL && inttable_count(w->known_users) >= KNOWN_USERS_MAX) {
        inttable_free(w->known_users);
        w->known_users = NULL;
    }
    if (w->known_users == NULL)
        w->known_users = inttable_new();
    if (w->known_users != NULL)
        (void)inttable_put(w->known_users, (uint32_t)uid, 1); /* out of memory: asked again */
}

/* On the storage thread: what the chat needs to know before it gets its cseq. */
static void collect_member(void *arg, int32_t userid, const char *name, const char *role)
{
    struct chat *ch = arg;
    (void)name;
    (void)role;
    if (userid == ch->sender)
        ch->member = true;
    else
        id_list_push(&ch->recipients, userid);
}

static int prepare_on_store(const struct store_ops *ops, struct store *st, void *arg)
{
    struct chat *ch = arg;
    int err = 0;
    if (ch->need_user) {
        struct store_user u;
        err = ops->user_get(st, ch->to, &u);
        explicit_bzero(u.password, sizeof u.password);
    }
    if (!err && ch->need_members) {
        ch->recipients.n = 0;
        ch->member = false;
        err = ops->group_members(st, ch->to, collect_member, ch);
        if (!err && ch->recipients.err)
            err = ch->recipients.err;
        if (!err && !ch->member)
            err = QC_ENOTMEMBER;
    }
    if (!err && ch->need_seed)
        err = ops->conv_last_cseq(st, ch->conv, &ch->last_cseq);
    return err;
}

/* Back on the worker: the store answered; go on with the chat. */
static bool chat_prepared(struct worker *w, struct conn *c, void *arg, int err)
{
    struct chat *ch = arg;
    if (c == NULL) {
        chat_free(ch); /* the sender left: the chat was never accepted */
        return true;
    }
    if (!err && ch->need_user)
        remember_recipient(w, ch->to);
    if (!err && ch->need_seed && seqtab_seed(w->seqtab, ch->conv, ch->last_cseq) < 0)
        err = QC_ESTORAGE;
    if (err) {
        chat_reply_error(w, c, ch, err);
        chat_free(ch);
        return true;
    }
    ch->need_user = ch->need_members = ch->need_seed = false;
    return chat_go(w, c, ch);
}

/* ---- the request ---------------------------------------------------------- */

/* A chat to oneself is a conversation too: the pair (me, me), the seed allows it. */
static int read_chat(struct worker *w, struct conn *c, struct json_object *req, int msgid,
                     int32_t *to, const char **text, size_t *len)
{
    int err = request_id(req, msgid == QC_GROUP_CHAT_MSG ? "groupid" : "toid", to);
    if (!err)
        err = field_text(req, (size_t)w->cfg.max_text_bytes, text, len);
    return err;
}

void service_chat(struct worker *w, struct conn *c, struct json_object *req, int msgid,
                  const char *seq)
{
    int32_t to;
    const char *text;
    size_t len;
    int err = read_chat(w, c, req, msgid, &to, &text, &len);
    struct chat *ch = err ? NULL : chat_new(c, msgid, seq, to, text, len);
    if (!err && ch == NULL)
        err = QC_EINTERNAL;
    if (err) {
        reply_error(w, c, msgid, seq, err);
        return;
    }
    metrics_count(QM_MESSAGES, msgid == QC_GROUP_CHAT_MSG ? QM_MSG_GROUP : QM_MSG_ONE);
    if (msgid == QC_GROUP_CHAT_MSG) {
        ch->conv = store_conv_group(to);
        ch->need_members = true;
    } else {
        struct online_loc loc;
        ch->conv = store_conv_pair(c->uid, to);
        /* Online here, or seen before: it exists. */
        ch->need_user = !online_lookup(w->online, to, &loc) && !recipient_known(w, to);
        id_list_push(&ch->recipients, to);
        if (ch->recipients.err) {
            reply_error(w, c, msgid, seq, QC_EINTERNAL);
            chat_free(ch);
            return;
        }
    }
    chat_go(w, c, ch);
}

/* ---- the log off: a live write that failed -------------------------------- */

/* The integer member name of obj, or dflt. */
static int64_t int_member(struct json_object *obj, const char *name, int64_t dflt)
{
    struct json_object *v;
    if (json_object_object_get_ex(obj, name, &v) && json_object_is_type(v, json_type_int))
        return json_object_get_int64(v);
    return dflt;
}

int service_chat_keep(struct worker *w, const char *payload, size_t len, int64_t conv, int64_t cseq)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *obj = tok ? json_tokener_parse_ex(tok, payload, (int)len) : NULL;
    if (tok)
        json_tokener_free(tok);
    if (obj == NULL || !json_object_is_type(obj, json_type_object)) {
        json_object_put(obj);
        return QC_EINTERNAL;
    }
    /* A legacy connection's copy has no ts and mid: it is stored as it was written. */
    int64_t ts;
    worker_time_str(w, &ts);
    struct store_logmsg m = { .conv = conv,
                              .cseq = cseq,
                              .mid = int_member(obj, "mid", 0),
                              .ts = int_member(obj, "ts", ts),
                              .sender = (int32_t)int_member(obj, "id", 0),
                              .body = payload,
                              .len = len };
    json_object_put(obj);
    seqtab_stored(w->seqtab, conv, cseq);
    /* Stored already (a group member offline, another failed write): the store ignores it. */
    return append_sequenced(w, &m, 0) ? 0 : QC_EINTERNAL;
}

/* ---- a worker's start: what its predecessor left -------------------------- */

static void replay_one(void *arg, uint64_t handle, const struct store_logmsg *m)
{
    struct worker *w = arg;
    struct appended *a = appended_new(w, m, 0);
    if (a == NULL) {
        log_error("journal replay: out of memory (conv %lld cseq %lld stays in the journal)",
                  (long long)m->conv, (long long)m->cseq);
        return;
    }
    a->journal = handle;
    append_in_order(w, a);
}

size_t service_chat_replay(struct worker *w)
{
    if (w->journal == NULL)
        return 0;
    size_t n = journal_replay(w->journal, w->index, replay_one, w);
    if (n > 0)
        log_info("journal: %zu chat(s) left uncommitted by the previous worker queued again", n);
    return n;
}
