/*
 * service_async.h - park a request while its store work runs off the loop.
 *
 * The async store rule (docs/ARCHITECTURE.md, "Store calls off the loop"):
 * a handler validates its fields, then calls service_async() with the
 * store work (run on the worker's storage thread with that thread's store
 * handle) and a resume function (run later on the worker's thread).  Until
 * resume says the request is finished, the connection reads no further
 * request, so replies keep request order.  resume gets c == NULL when the
 * connection closed (or its slot was reused) meanwhile: it then only frees
 * what it owns.  It returns true when the request is finished (the
 * connection reads again), false when it parked the connection once more
 * (it called service_async again).
 */
#ifndef QCHAT_SERVER_SERVICE_ASYNC_H
#define QCHAT_SERVER_SERVICE_ASYNC_H

#include <stdbool.h>

#include "server/storage.h"

struct worker;
struct conn;

typedef bool (*service_resume_fn)(struct worker *w, struct conn *c, void *arg, int err);

/*
 * Park c and queue run(arg) on the storage thread; resume(w, c, arg, err)
 * follows.  QC_OK, or an error (queue full: QC_ESTORAGE; out of memory):
 * then nothing was queued, c is not parked and the caller answers.
 */
int service_async(struct worker *w, struct conn *c, storage_run_fn run, service_resume_fn resume,
                  void *arg);

#endif
