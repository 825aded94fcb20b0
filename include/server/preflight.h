/*
 * preflight.h - what qchatd checks before it serves, and what "qchatd -t"
 * checks without creating anything: the storage (reachable, and for SQLite
 * writable by the user qchatd runs as) and the runtime directories of the
 * control socket and the pid file.  Every failure is logged as an error
 * naming the path and the key to change.
 */
#ifndef QCHAT_SERVER_PREFLIGHT_H
#define QCHAT_SERVER_PREFLIGHT_H

#include <stdbool.h>

#include "common/config.h"

/* Exit status for a configuration the operator must fix (sysexits EX_CONFIG):
 * systemd's RestartPreventExitStatus= names it, so a broken start is not retried. */
#define QCHATD_EXIT_CONFIG 78

/*
 * qchatd -t: check the storage without creating or changing anything.  A
 * SQLite file that does not exist yet is fine (it is created at the first
 * start, in the directory systemd's StateDirectory= makes); one that exists
 * must be a SQLite database.  Other drivers are opened and closed.  0 or -1.
 */
int preflight_test_storage(const struct qc_config *cfg);

/*
 * Before serving: open the store (creating the schema), and refuse a SQLite
 * database this process cannot write.  0, or -1 (logged).  *config_error is
 * set when only the operator can fix it (a permission, not an outage).
 */
int preflight_storage(const struct qc_config *cfg, bool *config_error);

/*
 * Open the configured store and close it again, creating the schema first
 * when init_schema (qchatd --init-db).  0, or -1 (logged).
 */
int preflight_open_store(const struct qc_config *cfg, bool init_schema);

/*
 * Before serving: make sure the directory of path (the control socket or
 * the pid file, named by key) exists, creating the last component (0755)
 * when its parent does.  0, or -1 with one error line naming the key.
 */
int preflight_runtime_dir(const char *path, const char *key);

#endif
