/*
 * test_config.c - unit tests for configuration loading.
 *
 * Defaults, a full valid file, every error path of the file parser (each
 * must name FILE:LINE), -o overrides, cross-key validation, config_diff's
 * live flags, host:port splitting, and config_dump's output loading back
 * to the same settings.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/config.h"
#include "common/log.h"
#include "server/ipc.h"

struct tmpfile {
    char path[64];
};

static void write_conf(struct tmpfile *t, const char *text)
{
    int fd;

    snprintf(t->path, sizeof(t->path), "/tmp/qchat-test-config.XXXXXX");
    fd = mkstemp(t->path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(close(fd), 0);
}

/* Load text over the defaults; return the result and the error text. */
static int load_text(const char *text, struct qc_config *cfg, char *err, size_t errlen,
                     struct tmpfile *t)
{
    int rc;

    config_defaults(cfg);
    write_conf(t, text);
    err[0] = '\0';
    rc = config_load(cfg, t->path, false, err, errlen);
    unlink(t->path);
    return rc;
}

/* The error for text must be "PATH:LINE: " followed by want. */
static void expect_error(const char *text, int line, const char *want)
{
    struct qc_config *cfg = malloc(sizeof(*cfg));
    char err[QC_CONFIG_ERR_MAX], prefix[128];
    struct tmpfile t;

    assert_non_null(cfg);
    assert_int_equal(load_text(text, cfg, err, sizeof(err), &t), -1);
    snprintf(prefix, sizeof(prefix), "%s:%d: ", t.path, line);
    if (strncmp(err, prefix, strlen(prefix)) != 0 || strstr(err, want) == NULL)
        fail_msg("error '%s' does not start with '%s' and contain '%s'", err, prefix, want);
    free(cfg);
}

static void test_defaults(void **state)
{
    struct qc_config cfg;
    char err[QC_CONFIG_ERR_MAX];

    config_defaults(&cfg);
    assert_string_equal(cfg.source, "");
    assert_string_equal(cfg.listen, "127.0.0.1:6000");
    assert_int_equal(cfg.workers, 0);
    assert_int_equal(cfg.node_id, 1);
    assert_int_equal(cfg.max_users, 100000);
    assert_int_equal(cfg.max_message_bytes, 65536);
    assert_int_equal(cfg.max_output_bytes, 4194304);
    assert_string_equal(cfg.control_socket, "/run/qchat/qchatd.sock");
    assert_string_equal(cfg.pidfile, "/run/qchat/qchatd.pid");
    assert_int_equal(cfg.shutdown_timeout, 10);
    assert_string_equal(cfg.storage_driver, "sqlite");
    assert_string_equal(cfg.storage_path, "/var/lib/qchat/qchat.db");
    assert_string_equal(cfg.storage_host, "localhost");
    assert_int_equal(cfg.storage_port, 3306);
    assert_string_equal(cfg.storage_socket, "");
    assert_string_equal(cfg.storage_user, "qchat");
    assert_string_equal(cfg.storage_password_file, "");
    assert_string_equal(cfg.storage_database, "qchat");
    assert_string_equal(cfg.redis_host, "");
    assert_int_equal(cfg.redis_port, 6379);
    assert_int_equal(cfg.log_level, LOG_LEVEL_INFO);
    assert_string_equal(cfg.log_target, "stderr");
    assert_string_equal(cfg.log_file, "");
    assert_int_equal(cfg.password_cost, 5);
    assert_int_equal(cfg.request_rate, 200);
    assert_int_equal(cfg.request_burst, 400);
    assert_int_equal(cfg.login_timeout, 300);
    assert_int_equal(cfg.max_prelogin_per_ip, 1024);
    assert_int_equal(cfg.idle_timeout, 0);
    assert_int_equal(cfg.max_conns_per_ip, 0);
    assert_int_equal(cfg.max_text_bytes, 4096);
    assert_int_equal(cfg.max_friends, 1000);
    assert_int_equal(cfg.max_group_members, 2000);
    assert_int_equal(cfg.max_offline_messages, 10000);
    assert_int_equal(cfg.max_groups, 500);
    assert_string_equal(cfg.friend_consent, "yes");
    assert_int_equal(cfg.token_days, 30);
    assert_string_equal(cfg.session_mode, "takeover");
    assert_int_equal(cfg.max_devices, 5);
    assert_int_equal(config_validate(&cfg, err, sizeof(err)), 0);
}

static void test_load_valid(void **state)
{
    const char *text = "; comment\n"
                       "# another comment\n"
                       "[server]\n"
                       "listen = [::1]:7000\n"
                       "workers = 4   ; inline comment\n"
                       "node_id=511\n"
                       "\n"
                       "[storage]\n"
                       "driver = mysql\n"
                       "socket = \"\"\n"
                       "password_file = \"/etc/qchat/db pass\"\n"
                       "[redis]\n"
                       "host = 127.0.0.1\n"
                       "port = 6380\n"
                       "[log]\n"
                       "level = debug\n"
                       "target = file\n"
                       "file = /var/log/qchat.log\n"
                       "[limits]\n"
                       "max_text_bytes = 1\n";
    struct qc_config cfg;
    char err[QC_CONFIG_ERR_MAX];
    struct tmpfile t;

    assert_int_equal(load_text(text, &cfg, err, sizeof(err), &t), 0);
    assert_string_equal(cfg.source, t.path);
    assert_string_equal(cfg.listen, "[::1]:7000");
    assert_int_equal(cfg.workers, 4);
    assert_int_equal(cfg.node_id, 511);
    assert_string_equal(cfg.storage_driver, "mysql");
    assert_string_equal(cfg.storage_socket, "");
    assert_string_equal(cfg.storage_password_file, "/etc/qchat/db pass");
    assert_string_equal(cfg.redis_host, "127.0.0.1");
    assert_int_equal(cfg.redis_port, 6380);
    assert_int_equal(cfg.log_level, LOG_LEVEL_DEBUG);
    assert_string_equal(cfg.log_target, "file");
    assert_string_equal(cfg.log_file, "/var/log/qchat.log");
    assert_int_equal(cfg.max_text_bytes, 1);
    /* Untouched keys keep their defaults. */
    assert_int_equal(cfg.max_users, 100000);
    assert_int_equal(config_validate(&cfg, err, sizeof(err)), 0);
}

static void test_missing_file(void **state)
{
    struct qc_config cfg;
    char err[QC_CONFIG_ERR_MAX];
    const char *path = "/nonexistent/qchat/qchatd.conf";

    config_defaults(&cfg);
    assert_int_equal(config_load(&cfg, path, true, err, sizeof(err)), 0);
    assert_string_equal(cfg.source, "");
    assert_int_equal(config_load(&cfg, path, false, err, sizeof(err)), -1);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "No such file"));
}

static void test_unknown_names(void **state)
{
    expect_error("[server]\nworkers = 2\nbogus = 1\n", 3,
                 "unknown key 'bogus' in section [server]");
    expect_error("[server]\n[nosuch]\nkey = 1\n", 3, "unknown section [nosuch]");
    expect_error("workers = 2\n", 1, "key 'workers' outside any section");
    /* Keys are looked up in their own section only. */
    expect_error("[log]\nworkers = 2\n", 2, "unknown key 'workers' in section [log]");
}

static void test_bad_integers(void **state)
{
    const char *range = "bad value '%s' for server.workers: must be an integer between 0 and 256";
    const char *bad[] = { "12abc",
                          "abc",
                          "",
                          "1.5",
                          "0x10",
                          "257",
                          "-1",
                          "99999999999999999999",
                          "-99999999999999999999",
                          "4 4" };
    char text[128], want[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "[server]\n\nworkers = %s\n", bad[i]);
        snprintf(want, sizeof(want), range, bad[i]);
        expect_error(text, 3, want);
    }
    expect_error("[security]\npassword_cost = 12\n", 2,
                 "bad value '12' for security.password_cost: must be an integer between 1 and 11");
    expect_error("[redis]\nport = 0\n", 2, "between 1 and 65535");
}

/*
 * server.listen_backlog (issue 15): the default an operator gets, both ends
 * of its range, and values outside it refused with FILE:LINE, by -o too
 * (the old value kept).
 */
static void test_listen_backlog(void **state)
{
    struct qc_config cfg;
    char err[QC_CONFIG_ERR_MAX];
    struct tmpfile t;
    const char *range = "bad value '%s' for server.listen_backlog: must be an integer between "
                        "16 and 1048576";
    const char *bad[] = { "15", "0", "-1", "1048577", "lots", "" };
    char text[128], want[256];

    config_defaults(&cfg);
    assert_int_equal(cfg.listen_backlog, 4096);
    assert_int_equal(load_text("[server]\nlisten_backlog = 16\n", &cfg, err, sizeof(err), &t), 0);
    assert_int_equal(cfg.listen_backlog, 16);
    assert_int_equal(load_text("[server]\nlisten_backlog = 1048576\n", &cfg, err, sizeof(err), &t),
                     0);
    assert_int_equal(cfg.listen_backlog, 1048576);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "[server]\nlisten_backlog = %s\n", bad[i]);
        snprintf(want, sizeof(want), range, bad[i]);
        expect_error(text, 2, want);
    }
    config_defaults(&cfg);
    assert_int_equal(config_override(&cfg, "server.listen_backlog=65535", err, sizeof(err)), 0);
    assert_int_equal(cfg.listen_backlog, 65535);
    assert_int_equal(config_override(&cfg, "server.listen_backlog=8", err, sizeof(err)), -1);
    assert_string_equal(err, "-o server.listen_backlog=8: bad value '8' for "
                             "server.listen_backlog: must be an integer between 16 and 1048576");
    assert_int_equal(cfg.listen_backlog, 65535);
}

/*
 * limits.max_text_bytes beyond what an internal packet can carry, escaped
 * (issue 14, item 9): refused with FILE:LINE and the reason; the ceiling
 * itself loads.  The packet's own size is checked against it too.
 */
static void test_text_limit_fits_internal_packet(void **state)
{
    int ceiling = (IPC_MAX_PACKET - QC_CHAT_ENVELOPE_MAX) / QC_TEXT_ESCAPE_MAX;
    char text[128], err[QC_CONFIG_ERR_MAX];
    struct qc_config cfg;
    struct tmpfile t;

    assert_true((long long)ceiling * QC_TEXT_ESCAPE_MAX + QC_CHAT_ENVELOPE_MAX <= IPC_MAX_PACKET);
    snprintf(text, sizeof(text), "[limits]\nmax_text_bytes = %d\n", ceiling + 1);
    expect_error(text, 2, "fits in one internal packet");
    expect_error("[limits]\nmax_text_bytes = 1048576\n", 2, "at most");
    snprintf(text, sizeof(text),
             "[server]\nmax_message_bytes = 16777216\n[limits]\n"
             "max_text_bytes = %d\n",
             ceiling);
    assert_int_equal(load_text(text, &cfg, err, sizeof(err), &t), 0);
    assert_int_equal(cfg.max_text_bytes, ceiling);
    assert_int_equal(config_validate(&cfg, err, sizeof(err)), 0);
    snprintf(text, sizeof(text), "limits.max_text_bytes=%d", ceiling + 1);
    config_defaults(&cfg);
    assert_int_equal(config_override(&cfg, text, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "internal packet"));
}

static void test_bad_enums(void **state)
{
    expect_error("[storage]\ndriver = postgres\n", 2,
                 "bad value 'postgres' for storage.driver: must be one of sqlite, mysql");
    expect_error("[log]\ntarget = journal\n", 2,
                 "bad value 'journal' for log.target: must be one of stderr, syslog, file");
    expect_error("[log]\nlevel = verbose\n", 2,
                 "bad value 'verbose' for log.level: must be one of debug, info, warning, error");
    /* Case matters: values are written as documented. */
    expect_error("[log]\nlevel = INFO\n", 2, "bad value 'INFO' for log.level");
    expect_error("[session]\nmode = shared\n", 2,
                 "bad value 'shared' for session.mode: must be one of takeover, refuse, multi");
    expect_error("[social]\nfriend_consent = maybe\n", 2,
                 "bad value 'maybe' for social.friend_consent: must be one of yes, no");
    expect_error("[session]\ntoken_days = 0\n", 2,
                 "bad value '0' for session.token_days: must be an integer between 1 and 3650");
    expect_error("[limits]\nmax_groups = 0\n", 2,
                 "bad value '0' for limits.max_groups: must be an integer between 1 and 1000000");
}

static void test_syntax_and_shape(void **state)
{
    char *text;
    size_t n;

    expect_error("[server]\nworkers 4\n", 2, "syntax error");
    expect_error("[server\nworkers = 4\n", 1, "syntax error");
    expect_error("[server]\nworkers = 1\nnode_id = 2\nworkers = 3\n", 4,
                 "duplicate key 'workers' in section [server] (first set on line 2)");
    /* An indented line continues the previous key in inih: refused too. */
    expect_error("[server]\nworkers = 1\n  2\n", 3, "duplicate key 'workers'");
    /* The first error is the one reported. */
    expect_error("[server]\nworkers = x\nbogus = 1\n", 2, "bad value 'x'");

    /* A line longer than inih's buffer is an error, not silently cut. */
    n = 1000;
    text = malloc(n + 64);
    assert_non_null(text);
    strcpy(text, "[server]\npidfile = /");
    memset(text + strlen(text), 'p', n);
    text[20 + n] = '\0';
    strcat(text, "\nworkers = 1\n");
    expect_error(text, 2, "line too long");
    free(text);
}

static void test_string_too_long(void **state)
{
    char text[QC_CONFIG_STR_MAX + 64];

    /* storage.user is QC_CONFIG_STR_MAX bytes; a value of that length has no room for NUL. */
    snprintf(text, sizeof(text), "[storage]\nuser = ");
    assert_true(strlen(text) + 180 < sizeof(text));
    memset(text + strlen(text), 'u', 180);
    text[17 + 180] = '\0';
    strcat(text, "\n");
    {
        struct qc_config cfg;
        char err[QC_CONFIG_ERR_MAX];
        struct tmpfile t;

        /* Within the 200-byte line buffer and within the field: accepted. */
        assert_int_equal(load_text(text, &cfg, err, sizeof(err), &t), 0);
        assert_int_equal(strlen(cfg.storage_user), 180);
    }
    /* Through -o the field size is the only limit. */
    {
        struct qc_config cfg;
        char err[QC_CONFIG_ERR_MAX], spec[QC_CONFIG_STR_MAX + 64];

        config_defaults(&cfg);
        snprintf(spec, sizeof(spec), "storage.user=");
        memset(spec + strlen(spec), 'u', QC_CONFIG_STR_MAX);
        spec[13 + QC_CONFIG_STR_MAX] = '\0';
        assert_int_equal(config_override(&cfg, spec, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "longer than 255 bytes"));
        assert_string_equal(cfg.storage_user, "qchat");
    }
}

static void test_failed_load_keeps_config(void **state)
{
    struct qc_config cfg;
    char err[QC_CONFIG_ERR_MAX];
    struct tmpfile t;

    config_defaults(&cfg);
    write_conf(&t, "[server]\nworkers = 7\nnode_id = 0\n");
    assert_int_equal(config_load(&cfg, t.path, false, err, sizeof(err)), -1);
    unlink(t.path);
    assert_int_equal(cfg.workers, 0);
    assert_string_equal(cfg.source, "");
}

static void test_overrides(void **state)
{
    struct qc_config cfg;
    char err[QC_CONFIG_ERR_MAX];

    config_defaults(&cfg);
    assert_int_equal(config_override(&cfg, "server.workers=3", err, sizeof(err)), 0);
    assert_int_equal(cfg.workers, 3);
    assert_int_equal(config_override(&cfg, "storage.path=/tmp/a=b.db", err, sizeof(err)), 0);
    assert_string_equal(cfg.storage_path, "/tmp/a=b.db");
    assert_int_equal(config_override(&cfg, "redis.host=", err, sizeof(err)), 0);
    assert_string_equal(cfg.redis_host, "");
    assert_int_equal(config_override(&cfg, "log.level=error", err, sizeof(err)), 0);
    assert_int_equal(cfg.log_level, LOG_LEVEL_ERROR);

    assert_int_equal(config_override(&cfg, "server.workers", err, sizeof(err)), -1);
    assert_string_equal(err, "-o server.workers: expected SECTION.KEY=VALUE");
    assert_int_equal(config_override(&cfg, "workers=3", err, sizeof(err)), -1);
    assert_string_equal(err, "-o workers=3: expected SECTION.KEY=VALUE");
    assert_int_equal(config_override(&cfg, ".workers=3", err, sizeof(err)), -1);
    assert_int_equal(config_override(&cfg, "server.=3", err, sizeof(err)), -1);
    assert_int_equal(config_override(&cfg, "server.nope=3", err, sizeof(err)), -1);
    assert_string_equal(err, "-o server.nope=3: unknown key 'nope' in section [server]");
    assert_int_equal(config_override(&cfg, "server.workers=many", err, sizeof(err)), -1);
    assert_string_equal(err, "-o server.workers=many: bad value 'many' for server.workers: "
                             "must be an integer between 0 and 256");
    assert_int_equal(cfg.workers, 3);
}

static void test_validate(void **state)
{
    struct qc_config cfg;
    char err[QC_CONFIG_ERR_MAX];

    config_defaults(&cfg);
    snprintf(cfg.log_target, sizeof(cfg.log_target), "file");
    assert_int_equal(config_validate(&cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "log.target = file needs log.file"));
    snprintf(cfg.log_file, sizeof(cfg.log_file), "/tmp/x.log");
    assert_int_equal(config_validate(&cfg, err, sizeof(err)), 0);

    cfg.max_text_bytes = cfg.max_message_bytes;
    assert_int_equal(config_validate(&cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "max_text_bytes"));
    cfg.max_text_bytes = cfg.max_message_bytes - 1;
    assert_int_equal(config_validate(&cfg, err, sizeof(err)), 0);

    snprintf(cfg.storage_driver, sizeof(cfg.storage_driver), "mysql");
    cfg.storage_user[0] = '\0';
    assert_int_equal(config_validate(&cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "storage.driver = mysql needs"));
    snprintf(cfg.storage_user, sizeof(cfg.storage_user), "u");
    cfg.storage_database[0] = '\0';
    assert_int_equal(config_validate(&cfg, err, sizeof(err)), -1);
    snprintf(cfg.storage_database, sizeof(cfg.storage_database), "d");
    assert_int_equal(config_validate(&cfg, err, sizeof(err)), 0);

    snprintf(cfg.listen, sizeof(cfg.listen), "127.0.0.1");
    assert_int_equal(config_validate(&cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "server.listen"));
}

static void test_websocket_keys(void **state)
{
    struct qc_config *cfg = malloc(sizeof(*cfg));
    char err[QC_CONFIG_ERR_MAX];
    struct tmpfile t;

    (void)state;
    assert_non_null(cfg);
    config_defaults(cfg);
    assert_string_equal(cfg->ws_listen, ""); /* off by default */
    assert_string_equal(cfg->ws_origins, "");
    assert_string_equal(cfg->ws_web_root, QC_DATADIR "/web");
    assert_int_equal(cfg->ws_ping_interval, 30);
    assert_int_equal(load_text("[websocket]\nlisten = 127.0.0.1:6080\n"
                               "origins = https://a.org https://b.org\n"
                               "web_root = /srv/web\nping_interval = 0\n",
                               cfg, err, sizeof(err), &t),
                     0);
    assert_string_equal(cfg->ws_listen, "127.0.0.1:6080");
    assert_string_equal(cfg->ws_origins, "https://a.org https://b.org");
    assert_string_equal(cfg->ws_web_root, "/srv/web");
    assert_int_equal(cfg->ws_ping_interval, 0);
    assert_int_equal(config_validate(cfg, err, sizeof(err)), 0);
    assert_int_equal(load_text("[websocket]\nlisten =\n", cfg, err, sizeof(err), &t), 0);
    expect_error("[websocket]\n\nlisten = 127.0.0.1\n", 3, "websocket.listen");
    expect_error("[websocket]\nlisten = 127.0.0.1:70000\n", 2, "websocket.listen");
    expect_error("[websocket]\nping_interval = 3601\n", 2, "ping_interval");
    expect_error("[websocket]\nport = 1\n", 2, "unknown key");

    config_defaults(cfg);
    snprintf(cfg->ws_listen, sizeof(cfg->ws_listen), "%s", cfg->listen);
    assert_int_equal(config_validate(cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "websocket.listen must differ"));
    free(cfg);
}

static void test_split_hostport(void **state)
{
    char host[64];
    int port;

    assert_int_equal(config_split_hostport("127.0.0.1:6000", host, sizeof(host), &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 6000);
    assert_int_equal(config_split_hostport("[::1]:6001", host, sizeof(host), &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 6001);
    assert_int_equal(config_split_hostport("localhost:0", host, sizeof(host), &port), 0);
    assert_int_equal(port, 0);
    assert_int_equal(config_split_hostport(":6000", host, sizeof(host), &port), 0);
    assert_string_equal(host, "");

    assert_int_equal(config_split_hostport("::1:6000", host, sizeof(host), &port), -1);
    assert_int_equal(config_split_hostport("host", host, sizeof(host), &port), -1);
    assert_int_equal(config_split_hostport("host:", host, sizeof(host), &port), -1);
    assert_int_equal(config_split_hostport("host:65536", host, sizeof(host), &port), -1);
    assert_int_equal(config_split_hostport("host:6x", host, sizeof(host), &port), -1);
    assert_int_equal(config_split_hostport("[::1]6000", host, sizeof(host), &port), -1);
    assert_int_equal(config_split_hostport("[::1:6000", host, sizeof(host), &port), -1);
    assert_int_equal(config_split_hostport("averyveryverylonghostname:1", host, 8, &port), -1);
}

struct diff_seen {
    int n;
    char names[8][64];
    bool live[8];
};

static void record_diff(void *arg, const char *name, bool live)
{
    struct diff_seen *d = arg;

    assert_true(d->n < 8);
    snprintf(d->names[d->n], sizeof(d->names[d->n]), "%s", name);
    d->live[d->n] = live;
    d->n++;
}

static void test_diff(void **state)
{
    struct qc_config a, b;
    struct diff_seen d = { 0 };

    config_defaults(&a);
    config_defaults(&b);
    assert_int_equal(config_diff(&a, &b, record_diff, &d), 0);

    b.workers = 2;
    b.log_level = LOG_LEVEL_DEBUG;
    snprintf(b.storage_path, sizeof(b.storage_path), "/elsewhere.db");
    b.max_output_bytes = 1 << 20;
    b.max_friends = 5;
    assert_int_equal(config_diff(&a, &b, record_diff, &d), 5);
    assert_int_equal(d.n, 5);
    /* Reported in table order. */
    assert_string_equal(d.names[0], "server.workers");
    assert_false(d.live[0]);
    assert_string_equal(d.names[1], "server.max_output_bytes");
    assert_true(d.live[1]);
    assert_string_equal(d.names[2], "storage.path");
    assert_false(d.live[2]);
    assert_string_equal(d.names[3], "log.level");
    assert_true(d.live[3]);
    assert_string_equal(d.names[4], "limits.max_friends");
    assert_true(d.live[4]);
    assert_int_equal(config_diff(&a, &b, NULL, NULL), 5);
}

static void dump_to_file(void *arg, const char *line)
{
    FILE *f = arg;

    fprintf(f, "%s\n", line);
}

static void test_dump_round_trip(void **state)
{
    struct qc_config a, b;
    char err[QC_CONFIG_ERR_MAX];
    struct tmpfile t;
    FILE *f;

    config_defaults(&a);
    a.workers = 3;
    a.log_level = LOG_LEVEL_WARNING;
    snprintf(a.redis_host, sizeof(a.redis_host), "10.0.0.1");
    snprintf(a.storage_driver, sizeof(a.storage_driver), "mysql");

    write_conf(&t, "");
    f = fopen(t.path, "w");
    assert_non_null(f);
    config_dump(&a, dump_to_file, f);
    assert_int_equal(fclose(f), 0);

    /* Loaded over different values, the dump restores every key. */
    config_defaults(&b);
    b.node_id = 9;
    snprintf(b.storage_socket, sizeof(b.storage_socket), "/x.sock");
    if (config_load(&b, t.path, false, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    unlink(t.path);
    assert_int_equal(config_diff(&a, &b, NULL, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_load_valid),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_unknown_names),
        cmocka_unit_test(test_bad_integers),
        cmocka_unit_test(test_listen_backlog),
        cmocka_unit_test(test_text_limit_fits_internal_packet),
        cmocka_unit_test(test_bad_enums),
        cmocka_unit_test(test_syntax_and_shape),
        cmocka_unit_test(test_string_too_long),
        cmocka_unit_test(test_failed_load_keeps_config),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_websocket_keys),
        cmocka_unit_test(test_split_hostport),
        cmocka_unit_test(test_diff),
        cmocka_unit_test(test_dump_round_trip),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
