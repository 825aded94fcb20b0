/*
 * worker_setup.c - the worker the fuzz targets drive by hand: set up once
 * (worker_setup with a temporary SQLite file, an online table and a guard,
 * the hashing threads at the lowest cost), no master, no peers.
 */
#include <stdio.h>
#include <stdlib.h>

#include "common/config.h"
#include "common/log.h"
#include "server/guard.h"
#include "server/online.h"
#include "worker_setup.h"

#define FUZZ_ONLINE_USERS 1024

void fuzz_worker_setup(struct worker *w, uint32_t nworkers)
{
    static struct qc_config cfg;
    char dir[] = "/tmp/qchat-fuzz-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        abort();
    }
    config_defaults(&cfg);
    snprintf(cfg.storage_path, sizeof cfg.storage_path, "%s/fuzz.db", dir);
    cfg.password_cost = 1;
    cfg.max_message_bytes = 4096;
    cfg.max_output_bytes = 65536;
    cfg.request_rate = 0;
    log_set_level(getenv("FUZZ_DEBUG") ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR);
    log_set_role("fuzz");
    struct online_table *online = online_create(FUZZ_ONLINE_USERS);
    struct guard *guard = guard_create();
    if (online == NULL || guard == NULL || worker_setup(w, 0, &cfg, online, guard) < 0)
        abort();
    w->nworkers = nworkers;
}
