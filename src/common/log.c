/*
 * log.c - one-line log records with the process role and pid.
 *
 * Every record is formatted into one stack buffer and written with a single
 * write(2), so lines from the master, workers and relay sharing one stderr
 * or one O_APPEND file never interleave.  Lines longer than LOG_LINE_MAX
 * are cut and end in "...".  The pid is read at each call, so the module is
 * safe to use in a child right after fork().  errno is preserved, and "%m"
 * works in formats.
 *
 * stderr:  "2024-05-01T12:00:00.123+0200 qchatd[42] worker 3 info: text"
 * journal: "<6>worker 3[42]: info: text" when stderr is the journal stream
 *          (JOURNAL_STREAM names stderr's device:inode); journald stamps time.
 * syslog:  openlog("qchatd", LOG_PID | LOG_NDELAY, LOG_DAEMON).
 * file:    as stderr, appended; log_reopen() reopens it after rotation.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"

#define LOG_IDENT       "qchatd"
#define LOG_LINE_MAX    4096
#define LOG_ROLE_MAX    32
#define LOG_TIME_MAX    40
#define LOG_FILE_MODE   0640
#define LOG_WRITE_TRIES 8 /* partial writes retried at most this often */
#define LOG_ELLIPSIS    "...\n"

static struct {
    enum log_level level;
    enum log_target target;
    char role[LOG_ROLE_MAX];
    char path[PATH_MAX];
    int fd;       /* stderr or the log file */
    bool journal; /* stderr is connected to journald */
    bool journal_checked;
} logger = {
    .level = LOG_LEVEL_INFO,
    .target = LOG_TARGET_STDERR,
    .role = "main",
    .fd = STDERR_FILENO,
};

static const char *const level_names[] = {
    [LOG_LEVEL_DEBUG] = "debug",
    [LOG_LEVEL_INFO] = "info",
    [LOG_LEVEL_WARNING] = "warning",
    [LOG_LEVEL_ERROR] = "error",
};

static const char *const journal_prefixes[] = {
    [LOG_LEVEL_DEBUG] = SD_DEBUG,
    [LOG_LEVEL_INFO] = SD_INFO,
    [LOG_LEVEL_WARNING] = SD_WARNING,
    [LOG_LEVEL_ERROR] = SD_ERR,
};

static const int syslog_priorities[] = {
    [LOG_LEVEL_DEBUG] = LOG_DEBUG,
    [LOG_LEVEL_INFO] = LOG_INFO,
    [LOG_LEVEL_WARNING] = LOG_WARNING,
    [LOG_LEVEL_ERROR] = LOG_ERR,
};

static bool level_is_valid(int level)
{
    return level >= LOG_LEVEL_DEBUG && level <= LOG_LEVEL_ERROR;
}

void log_set_role(const char *role)
{
    snprintf(logger.role, sizeof(logger.role), "%s", role);
}

void log_set_level(enum log_level level)
{
    if (level_is_valid((int)level))
        logger.level = level;
}

enum log_level log_get_level(void)
{
    return logger.level;
}

const char *log_level_name(enum log_level level)
{
    return level_is_valid((int)level) ? level_names[level] : "unknown";
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (int i = LOG_LEVEL_DEBUG; i <= LOG_LEVEL_ERROR; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

/* JOURNAL_STREAM is "DEV:INO" of the stream journald gave us. */
static bool stderr_is_journal(void)
{
    const char *env = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    if (env == NULL || sscanf(env, "%llu:%llu", &dev, &ino) != 2)
        return false;
    if (fstat(STDERR_FILENO, &st) < 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

static int open_log_file(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, LOG_FILE_MODE);
}

static void close_log_file(void)
{
    if (logger.target == LOG_TARGET_FILE && logger.fd > STDERR_FILENO)
        close(logger.fd);
    logger.fd = STDERR_FILENO;
}

int log_open(enum log_target target, const char *path)
{
    int fd = -1;

    if (target == LOG_TARGET_FILE) {
        if (path == NULL || *path == '\0') {
            errno = EINVAL;
            return -1;
        }
        if (strlen(path) >= sizeof(logger.path)) {
            errno = ENAMETOOLONG;
            return -1;
        }
        fd = open_log_file(path);
        if (fd < 0)
            return -1;
    }
    if (logger.target == LOG_TARGET_SYSLOG && target != LOG_TARGET_SYSLOG)
        closelog();
    close_log_file();

    switch (target) {
    case LOG_TARGET_FILE:
        snprintf(logger.path, sizeof(logger.path), "%s", path);
        logger.fd = fd;
        break;
    case LOG_TARGET_SYSLOG: openlog(LOG_IDENT, LOG_PID | LOG_NDELAY, LOG_DAEMON); break;
    case LOG_TARGET_STDERR: break;
    default: errno = EINVAL; return -1;
    }
    logger.target = target;
    logger.journal = stderr_is_journal();
    logger.journal_checked = true;
    return 0;
}

int log_reopen(void)
{
    int fd;

    if (logger.target != LOG_TARGET_FILE)
        return 0;
    fd = open_log_file(logger.path);
    if (fd < 0)
        return -1;
    /* Keep the descriptor number: replace the old file atomically. */
    if (dup3(fd, logger.fd, O_CLOEXEC) < 0) {
        int saved = errno;

        close(fd);
        errno = saved;
        return -1;
    }
    close(fd);
    return 0;
}

static size_t format_time(char *out, size_t outlen)
{
    struct timespec ts;
    struct tm tm;
    char zone[8];
    size_t n;

    if (clock_gettime(CLOCK_REALTIME, &ts) < 0 || localtime_r(&ts.tv_sec, &tm) == NULL)
        return 0;
    n = strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &tm);
    if (n == 0 || strftime(zone, sizeof(zone), "%z", &tm) == 0)
        return 0;
    return n + (size_t)snprintf(out + n, outlen - n, ".%03ld%s", ts.tv_nsec / 1000000L, zone);
}

/* One write(2) in the normal case; a short write is finished, bounded. */
static void write_line(int fd, const char *p, size_t n)
{
    for (int tries = 0; n > 0 && tries < LOG_WRITE_TRIES; tries++) {
        ssize_t w = write(fd, p, n);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Clamp a snprintf result to what was really written into room bytes. */
static size_t written(int n, size_t room)
{
    if (n < 0)
        return 0;
    return (size_t)n < room ? (size_t)n : room - 1;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    int saved_errno = errno;
    char line[LOG_LINE_MAX];
    size_t len = 0, room;
    bool truncated;
    va_list ap;
    int n;

    if (!level_is_valid((int)level) || level < logger.level)
        return;
    if (!logger.journal_checked) {
        logger.journal = stderr_is_journal();
        logger.journal_checked = true;
    }

    if (logger.target == LOG_TARGET_STDERR && logger.journal) {
        n = snprintf(line, sizeof(line), "%s%s[%ld]: %s: ", journal_prefixes[level], logger.role,
                     (long)getpid(), level_names[level]);
        len = written(n, sizeof(line));
    } else if (logger.target != LOG_TARGET_SYSLOG) {
        char when[LOG_TIME_MAX];

        if (format_time(when, sizeof(when)) == 0)
            snprintf(when, sizeof(when), "-");
        n = snprintf(line, sizeof(line), "%s %s[%ld] %s %s: ", when, LOG_IDENT, (long)getpid(),
                     logger.role, level_names[level]);
        len = written(n, sizeof(line));
    }

    /* Leave room for "\n"; keep errno intact for "%m". */
    room = sizeof(line) - len - 1;
    errno = saved_errno;
    va_start(ap, fmt);
    n = vsnprintf(line + len, room + 1, fmt, ap);
    va_end(ap);
    truncated = n >= 0 && (size_t)n > room;
    len += written(n, room + 1);
    if (truncated) {
        len = sizeof(line) - strlen(LOG_ELLIPSIS);
        memcpy(line + len, LOG_ELLIPSIS, strlen(LOG_ELLIPSIS));
        len += strlen(LOG_ELLIPSIS);
    } else {
        line[len++] = '\n';
    }

    if (logger.target == LOG_TARGET_SYSLOG) {
        line[len - 1] = '\0';
        syslog(syslog_priorities[level], "%s %s: %s", logger.role, level_names[level], line);
    } else {
        write_line(logger.fd, line, len);
    }
    errno = saved_errno;
}

int log_open_configured(const struct qc_config *cfg)
{
    enum log_target target = LOG_TARGET_STDERR;

    if (strcmp(cfg->log_target, "syslog") == 0)
        target = LOG_TARGET_SYSLOG;
    else if (strcmp(cfg->log_target, "file") == 0)
        target = LOG_TARGET_FILE;
    log_set_level((enum log_level)cfg->log_level);
    return log_open(target, cfg->log_file);
}
