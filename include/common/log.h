/*
 * log.h - one-line log records with the process role and pid.
 *
 * Destinations: stderr (with sd-daemon "<N>" priority prefixes when stderr is
 * the journal, JOURNAL_STREAM set), syslog(3), or a file (reopened on USR1).
 * Never pass a password or password hash to these functions.
 */
#ifndef QCHAT_COMMON_LOG_H
#define QCHAT_COMMON_LOG_H

enum log_level { LOG_LEVEL_DEBUG = 0, LOG_LEVEL_INFO, LOG_LEVEL_WARNING, LOG_LEVEL_ERROR };

enum log_target { LOG_TARGET_STDERR = 0, LOG_TARGET_SYSLOG, LOG_TARGET_FILE };

/* Set the role shown in every line ("master", "worker 3", "relay"). */
void log_set_role(const char *role);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Choose the destination; path is used for LOG_TARGET_FILE. Returns 0 or -1. */
int log_open(enum log_target target, const char *path);
int log_reopen(void); /* reopen the file after rotation */
struct qc_config;
/* log_open with [log] target and file of cfg (stderr, syslog or file).  0 or -1. */
int log_open_configured(const struct qc_config *cfg);
int log_level_parse(const char *s, enum log_level *out); /* 0 ok, -1 unknown */
const char *log_level_name(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...)                             \
    do {                                           \
        if (log_get_level() <= LOG_LEVEL_DEBUG)    \
            log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__); \
    } while (0)
#define log_info(...)    log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_error(...)   log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
