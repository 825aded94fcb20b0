/*
 * worker_setup.h - the one worker the fuzz targets drive by hand.
 */
#ifndef QCHAT_FUZZ_WORKER_SETUP_H
#define QCHAT_FUZZ_WORKER_SETUP_H

#include <stdint.h>

#include "server/worker_loop.h"

/* Set up w as worker 0 of nworkers; aborts on failure. */
void fuzz_worker_setup(struct worker *w, uint32_t nworkers);

#endif
