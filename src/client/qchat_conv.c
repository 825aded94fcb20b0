/*
 * qchat_conv.c - what qchat remembers per conversation (a one-to-one
 * chat, keyed by the other user, or a group):
 *
 *  - the cseqs already shown, as a few sorted runs [lo, hi], so that a
 *    chat delivered twice (live, then again in a login reply after a
 *    reconnect) is printed once.  Messages arrive almost in order, so a
 *    conversation needs one run or two; past QCHAT_CONV_RANGES the oldest
 *    run is forgotten (at worst a very old message would print again);
 *  - the newest cseq shown and the newest one marked read, so that
 *    conv_flush_reads sends one READ_MSG per conversation that moved;
 *  - when a typing line was last shown, and from whom.
 *
 * At most QCHAT_CONVS_MAX conversations are kept; a new one evicts the
 * least recently used.  Also a small map of user names (from the login
 * lists, chats, history and friend lists) for the receipt lines, which
 * carry only an id.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qchat.h"

struct cseq_range {
    int64_t lo, hi;
};

struct conv {
    struct conv_key key;
    uint64_t used; /* q->conv_clock at the last use */
    struct cseq_range ranges[QCHAT_CONV_RANGES];
    size_t nranges;
    int64_t shown; /* newest cseq shown */
    int64_t read;  /* newest cseq marked read (sent, or read elsewhere) */
    int64_t typing_ms;
    int32_t typing_user;
};

struct conv_name {
    int32_t id;
    char name[QC_NAME_MAX * 4 + 1]; /* escaped later; bytes as received, cut */
};

struct conv_names {
    struct conv_name items[QCHAT_NAMES_MAX];
    size_t n, next; /* next: slot replaced when full (round robin) */
};

/* ---- the table of conversations --------------------------------------- */

static bool same_key(struct conv_key a, struct conv_key b)
{
    return a.group == b.group && a.id == b.id;
}

/* The entry for key, created (evicting the least recently used) if needed. */
static struct conv *conv_get(struct qchat *q, struct conv_key key)
{
    struct conv *victim = NULL;
    size_t i;

    if (q->convs == NULL) {
        q->convs = calloc(QCHAT_CONVS_MAX, sizeof *q->convs);
        if (q->convs == NULL)
            return NULL;
    }
    q->conv_clock++;
    for (i = 0; i < q->nconvs; i++) {
        if (same_key(q->convs[i].key, key)) {
            q->convs[i].used = q->conv_clock;
            return &q->convs[i];
        }
        if (victim == NULL || q->convs[i].used < victim->used)
            victim = &q->convs[i];
    }
    if (q->nconvs < QCHAT_CONVS_MAX)
        victim = &q->convs[q->nconvs++];
    memset(victim, 0, sizeof *victim);
    victim->key = key;
    victim->used = q->conv_clock;
    return victim;
}

struct conv_key conv_of_chat(struct qchat *q, struct json_object *msg)
{
    struct conv_key key = { .group = false, .id = 0 };
    int64_t msgid = 0, v;

    (void)qjson_int(msg, "msgid", &msgid);
    if (msgid == QC_GROUP_CHAT_MSG && qjson_int(msg, "groupid", &v) == 0) {
        key.group = true;
        key.id = (int32_t)v;
    } else if (qjson_int(msg, "id", &v) == 0) {
        /* my own chat, echoed from another device: the conversation is its toid */
        if (v == q->my_id && qjson_int(msg, "toid", &v) < 0)
            v = q->my_id;
        key.id = (int32_t)v;
    }
    return key;
}

/* ---- cseqs shown ------------------------------------------------------ */

static void remove_range(struct conv *cv, size_t i)
{
    memmove(&cv->ranges[i], &cv->ranges[i + 1], (cv->nranges - i - 1) * sizeof cv->ranges[0]);
    cv->nranges--;
}

/* Insert [cseq, cseq] before index i, forgetting the oldest run when full. */
static void insert_range(struct conv *cv, size_t i, int64_t cseq)
{
    if (cv->nranges == QCHAT_CONV_RANGES) {
        if (i == 0)
            return; /* older than all we keep: cannot be remembered */
        remove_range(cv, 0);
        i--;
    }
    memmove(&cv->ranges[i + 1], &cv->ranges[i], (cv->nranges - i) * sizeof cv->ranges[0]);
    cv->ranges[i].lo = cv->ranges[i].hi = cseq;
    cv->nranges++;
}

bool conv_first_sight(struct qchat *q, struct conv_key key, int64_t cseq)
{
    struct conv *cv = conv_get(q, key);
    size_t i;

    if (cv == NULL)
        return true; /* out of memory: show it, duplicates are the lesser harm */
    for (i = 0; i < cv->nranges && cv->ranges[i].hi + 1 < cseq; i++)
        ;
    /* now ranges[i] (if any) ends at cseq - 1 or later */
    if (i < cv->nranges && cv->ranges[i].lo <= cseq && cseq <= cv->ranges[i].hi)
        return false;
    if (i < cv->nranges && cv->ranges[i].hi + 1 == cseq) {
        cv->ranges[i].hi = cseq;
        if (i + 1 < cv->nranges && cv->ranges[i + 1].lo == cseq + 1) {
            cv->ranges[i].hi = cv->ranges[i + 1].hi;
            remove_range(cv, i + 1);
        }
    } else if (i < cv->nranges && cv->ranges[i].lo == cseq + 1) {
        cv->ranges[i].lo = cseq;
    } else {
        insert_range(cv, i, cseq);
    }
    return true;
}

/* ---- read marks ------------------------------------------------------- */

void conv_mark_shown(struct qchat *q, struct conv_key key, int64_t cseq)
{
    struct conv *cv = conv_get(q, key);

    if (cv != NULL && cseq > cv->shown)
        cv->shown = cseq;
}

void conv_mark_read_elsewhere(struct qchat *q, struct conv_key key, int64_t cseq)
{
    struct conv *cv = conv_get(q, key);

    if (cv != NULL && cseq > cv->read)
        cv->read = cseq;
}

/* READ_MSG {with|groupid, cseq}, without seq: the server answers only an error. */
static int send_read(struct qchat *q, struct conv_key key, int64_t cseq)
{
    return qclient_sendf(q->c, "{\"msgid\":%d,\"%s\":%d,\"cseq\":%lld}", QCHAT_READ,
                         key.group ? "groupid" : "with", key.id, (long long)cseq);
}

void conv_flush_reads(struct qchat *q)
{
    size_t i;

    for (i = 0; i < q->nconvs && q->c != NULL && !q->broken; i++) {
        struct conv *cv = &q->convs[i];

        if (cv->shown <= cv->read)
            continue;
        if (send_read(q, cv->key, cv->shown) < 0) {
            q->broken = true;
            return;
        }
        cv->read = cv->shown;
        q->last_send_ms = clock_now_ms();
    }
}

/* ---- typing ----------------------------------------------------------- */

bool conv_typing_due(struct qchat *q, struct conv_key key, int32_t user)
{
    struct conv *cv = conv_get(q, key);
    int64_t now = clock_now_ms();

    if (cv == NULL)
        return true;
    if (cv->typing_user == user && cv->typing_ms > 0 && now - cv->typing_ms < QCHAT_TYPING_SHOW_MS)
        return false;
    cv->typing_user = user;
    cv->typing_ms = now;
    return true;
}

/* ---- names ------------------------------------------------------------ */

void conv_learn_name(struct qchat *q, int32_t id, const char *name)
{
    struct conv_names *nm;
    struct conv_name *slot = NULL;
    size_t i;

    if (name == NULL)
        return;
    if (q->names == NULL && (q->names = calloc(1, sizeof *q->names)) == NULL)
        return;
    nm = q->names;
    for (i = 0; i < nm->n && slot == NULL; i++)
        if (nm->items[i].id == id)
            slot = &nm->items[i];
    if (slot == NULL && nm->n < QCHAT_NAMES_MAX)
        slot = &nm->items[nm->n++];
    if (slot == NULL) {
        slot = &nm->items[nm->next];
        nm->next = (nm->next + 1) % QCHAT_NAMES_MAX;
    }
    slot->id = id;
    snprintf(slot->name, sizeof slot->name, "%s", name);
}

const char *conv_name(struct qchat *q, int32_t id)
{
    size_t i;

    if (q->names == NULL)
        return NULL;
    for (i = 0; i < q->names->n; i++)
        if (q->names->items[i].id == id)
            return q->names->items[i].name;
    return NULL;
}

void conv_reset(struct qchat *q)
{
    free(q->convs);
    free(q->names);
    q->convs = NULL;
    q->names = NULL;
    q->nconvs = 0;
    q->conv_clock = 0;
}
