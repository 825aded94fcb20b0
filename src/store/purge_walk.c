/*
 * purge_walk.c - the driver-independent half of retention (purge_walk.h).
 */
#include "common/proto.h"
#include "purge_walk.h"

int purge_walk(struct store *st, const struct purge_walk_ops *ops, int find, int cap, int batch,
               int64_t *scan, int *removed)
{
    int64_t found[PURGE_FIND_ROWS][2], last = 0, count = 0, from = *scan;
    int i, n, err;

    if (*removed >= batch)
        return QC_OK;
    if ((err = ops->window(st, from, &last, &count)) != QC_OK)
        return err;
    if (count == 0) {
        *scan = STORE_SCAN_START;
        return QC_OK;
    }
    do {
        if ((err = ops->find(st, find, cap, from, last, found, &n)) != QC_OK)
            return err;
        for (i = 0; i < n; i++) {
            if ((err = ops->remove(st, found[i][0], found[i][1], batch - *removed, removed)) !=
                QC_OK)
                return err;
            if (*removed >= batch) {
                *scan = from; /* found[i] may have more: the next call sees it again */
                return QC_OK;
            }
            from = found[i][0];
        }
    } while (n == PURGE_FIND_ROWS);
    *scan = count < STORE_PURGE_SCAN_CONVS ? STORE_SCAN_START : last;
    return QC_OK;
}
