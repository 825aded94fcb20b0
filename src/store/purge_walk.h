/*
 * purge_walk.h - what both drivers' retention does alike, apart from SQL:
 * one call walks one window of at most STORE_PURGE_SCAN_CONVS
 * conversations after the walk's place, deletes what a search names there
 * within the batch, and says where the next call goes on (log_purge in
 * store.h).  The driver gives the three statements.
 */
#ifndef QCHAT_STORE_PURGE_WALK_H
#define QCHAT_STORE_PURGE_WALK_H

#include <stdint.h>

#include "store/store.h"

#define PURGE_FIND_ROWS 64 /* conversations one search names */

struct purge_walk_ops {
    /* The last of the next STORE_PURGE_SCAN_CONVS conversations after from; *count: how many. */
    int (*window)(struct store *st, int64_t from, int64_t *last, int64_t *count);
    /*
     * Up to PURGE_FIND_ROWS (conversation, delete up to this cseq) pairs
     * in (from, last], in order, that search find (a driver's statement)
     * names; cap is the search's per-conversation limit (0: none).
     */
    int (*find)(struct store *st, int find, int cap, int64_t from, int64_t last, int64_t found[][2],
                int *n);
    /* Delete at most limit messages of conv up to cseq upto; *removed += how many. */
    int (*remove)(struct store *st, int64_t conv, int64_t upto, int limit, int *removed);
};

/*
 * In the open transaction: one window of the walk at *scan, deleting what
 * find names until *removed reaches batch.  *scan moves past each
 * conversation whose delete the batch did not cut short; past the window
 * when all of it is done; to STORE_SCAN_START when that window was the
 * last.  The caller keeps *scan only once the transaction committed.
 */
int purge_walk(struct store *st, const struct purge_walk_ops *ops, int find, int cap, int batch,
               int64_t *scan, int *removed);

#endif
