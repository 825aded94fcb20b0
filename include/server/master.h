/*
 * master.h - the master process: forks the workers (and the relay), then only
 * supervises: respawns a child that dies, clears a dead worker's rows from
 * the online table, turns signals into actions (TERM/INT stop, HUP reload,
 * USR1 reopen logs), answers qchatctl on the control socket and keeps
 * systemd informed (sd_notify READY, STATUS, WATCHDOG, RELOADING, STOPPING).
 */
#ifndef QCHAT_SERVER_MASTER_H
#define QCHAT_SERVER_MASTER_H

#include "common/config.h"
#include "server/guard.h"
#include "server/online.h"

struct master_args {
    const char *config_path; /* file given with -c, or NULL for the default */
    const char **overrides;  /* -o SECTION.KEY=VALUE, in order */
    int noverrides;
};

/* Run until stopped; returns the process exit status. */
int master_run(const struct master_args *args, const struct qc_config *cfg, int listen_fd,
               struct online_table *online, struct guard *guard);

/* Load config the way the command line asks (file, then -o overrides, then checks). */
int master_load_config(const struct master_args *args, struct qc_config *cfg, char *err,
                       size_t errlen);

#endif
