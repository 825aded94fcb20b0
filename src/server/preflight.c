/*
 * preflight.c - checks before serving, and for "qchatd -t" (see preflight.h).
 *
 * The point of -t creating nothing: run as root before the first start, a
 * SQLite open would create the database (and its -wal and -shm files) owned
 * by root, which the service user then cannot write; SQLite opens such a
 * file read-only without complaint and every write fails later.  So -t only
 * looks at the file, and startup refuses a database it cannot write.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "common/log.h"
#include "server/preflight.h"
#include "store/store.h"

#define SQLITE_MAGIC     "SQLite format 3" /* the first 16 bytes, with the NUL */
#define SQLITE_MAGIC_LEN 16
#define SQLITE_MEMORY    ":memory:"
#define RUNTIME_DIR_MODE 0755

static bool is_sqlite(const struct qc_config *cfg)
{
    return strcmp(cfg->storage_driver, "sqlite") == 0;
}

static void dir_of(const char *path, char *out, size_t outlen)
{
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", path);
    snprintf(out, outlen, "%s", dirname(copy));
}

static void describe_owner(const struct stat *sb, char *out, size_t outlen)
{
    struct passwd *pw = getpwuid(sb->st_uid);
    struct group *gr = getgrgid(sb->st_gid);
    char u[32], g[32];
    snprintf(u, sizeof u, "%u", (unsigned)sb->st_uid);
    snprintf(g, sizeof g, "%u", (unsigned)sb->st_gid);
    snprintf(out, outlen, "owner %s:%s, mode %04o", pw ? pw->pw_name : u, gr ? gr->gr_name : g,
             (unsigned)(sb->st_mode & 07777));
}

static bool has_sqlite_header(const char *path)
{
    char head[SQLITE_MAGIC_LEN];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, head, sizeof head);
    close(fd);
    /* A zero-length file is an empty database to SQLite. */
    return n == 0 || (n == SQLITE_MAGIC_LEN && memcmp(head, SQLITE_MAGIC, SQLITE_MAGIC_LEN) == 0);
}

static int test_sqlite_file(const struct qc_config *cfg)
{
    const char *path = cfg->storage_path;
    char dir[PATH_MAX], owner[96];
    struct stat sb;
    if (strcmp(path, SQLITE_MEMORY) == 0)
        return 0;
    if (stat(path, &sb) != 0) {
        if (errno != ENOENT) {
            log_error("storage.path %s: %s", path, strerror(errno));
            return -1;
        }
        dir_of(path, dir, sizeof dir);
        if (stat(dir, &sb) != 0)
            printf("qchatd: storage (sqlite): %s does not exist yet; create directory %s "
                   "(qchatd.service's StateDirectory= does) or set storage.path\n",
                   path, dir);
        else
            printf("qchatd: storage (sqlite): %s does not exist yet; it is created at the first "
                   "start\n",
                   path);
        return 0;
    }
    if (!S_ISREG(sb.st_mode) || !has_sqlite_header(path)) {
        log_error("storage.path %s is not a SQLite database", path);
        return -1;
    }
    describe_owner(&sb, owner, sizeof owner);
    printf("qchatd: storage (sqlite): %s exists (%s)\n", path, owner);
    return 0;
}

int preflight_open_store(const struct qc_config *cfg, bool init_schema)
{
    const struct store_ops *ops = store_driver(cfg->storage_driver);
    char err[QC_CONFIG_ERR_MAX];
    struct store *st;
    if (ops == NULL) {
        log_error("storage driver '%s' is not available", cfg->storage_driver);
        return -1;
    }
    if (ops->open(&st, cfg, err, sizeof err) != 0) {
        log_error("storage (%s): %s", cfg->storage_driver, err);
        return -1;
    }
    int rc = 0;
    if (init_schema && ops->init_schema(st) != 0) {
        log_error("storage (%s): creating the schema failed", cfg->storage_driver);
        rc = -1;
    }
    ops->close(st);
    return rc;
}

/*
 * -t against a database store: reach it and read its schema version, and
 * migrate nothing (opening would: an older qchatd still serving the
 * database would then refuse it at its next start).  A database newer than
 * this build fails the test, as it would fail the start.
 */
static int test_store_schema(const struct qc_config *cfg, const struct store_ops *ops)
{
    char err[QC_CONFIG_ERR_MAX];
    int have = 0, want = 0;
    if (ops->probe_schema(cfg, &have, &want, err, sizeof err) != QC_OK) {
        log_error("storage (%s): %s", cfg->storage_driver, err);
        return -1;
    }
    if (have > want) {
        log_error("storage (%s): the database has schema version %d, newer than this qchatd (%d)",
                  cfg->storage_driver, have, want);
        return -1;
    }
    if (have < want)
        printf("qchatd: storage (%s): schema version %d; starting (or --init-db) will migrate "
               "it to %d\n",
               cfg->storage_driver, have, want);
    else
        printf("qchatd: storage (%s): schema version %d, current\n", cfg->storage_driver, have);
    return 0;
}

int preflight_test_storage(const struct qc_config *cfg)
{
    const struct store_ops *ops = store_driver(cfg->storage_driver);
    if (is_sqlite(cfg))
        return test_sqlite_file(cfg);
    if (ops != NULL && ops->probe_schema != NULL)
        return test_store_schema(cfg, ops);
    return preflight_open_store(cfg, false);
}

/* SQLite writes the database, and its -wal and -shm files next to it. */
static int sqlite_writable(const struct qc_config *cfg)
{
    const char *path = cfg->storage_path;
    char dir[PATH_MAX], owner[96];
    struct stat sb;
    if (strcmp(path, SQLITE_MEMORY) == 0)
        return 0;
    dir_of(path, dir, sizeof dir);
    if (stat(path, &sb) == 0 && access(path, R_OK | W_OK) != 0) {
        describe_owner(&sb, owner, sizeof owner);
        log_error("storage.path %s is not writable by uid %u (%s): refusing to start read-only; "
                  "fix its owner (chown) or set storage.path",
                  path, (unsigned)geteuid(), owner);
        return -1;
    }
    if (stat(dir, &sb) == 0 && access(dir, W_OK | X_OK) != 0) {
        describe_owner(&sb, owner, sizeof owner);
        log_error("storage.path %s: directory %s is not writable by uid %u (%s)", path, dir,
                  (unsigned)geteuid(), owner);
        return -1;
    }
    return 0;
}

int preflight_storage(const struct qc_config *cfg, bool *config_error)
{
    *config_error = false;
    if (is_sqlite(cfg) && sqlite_writable(cfg) < 0) {
        *config_error = true;
        return -1;
    }
    return preflight_open_store(cfg, false);
}

int preflight_runtime_dir(const char *path, const char *key)
{
    char dir[PATH_MAX];
    struct stat sb;
    if (path[0] == '\0')
        return 0;
    dir_of(path, dir, sizeof dir);
    if (stat(dir, &sb) == 0) {
        if (S_ISDIR(sb.st_mode))
            return 0;
        log_error("%s = %s: %s is not a directory; set %s", key, path, dir, key);
        return -1;
    }
    if (errno == ENOENT && mkdir(dir, RUNTIME_DIR_MODE) == 0) {
        log_info("created directory %s for %s", dir, key);
        return 0;
    }
    log_error("%s = %s: cannot create directory %s (%s); create it or set %s", key, path, dir,
              strerror(errno), key);
    return -1;
}
