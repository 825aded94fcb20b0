/*
 * config.c - qchatd settings: defaults, the INI file (libinih), -o overrides.
 *
 * One table, config_keys[], describes every key: where it lives in struct
 * qc_config, its type and range, its default (as text, parsed by the same
 * code as the file, so a default can never be out of range), whether a HUP
 * may change it on a running server, and one line of documentation.
 * Everything else (defaults, parsing, diffing, dumping) walks that table.
 *
 * File rules:
 *  - an unknown section or key, or a bad value, is an error naming FILE:LINE;
 *  - a key given twice in one file is an error (this also catches an
 *    indented line, which inih would treat as a continuation of the key);
 *  - string values may be wrapped in double quotes, so `socket = ""` is
 *    the empty string;
 *  - a line may hold at most what inih's line buffer takes (ini_max_line
 *    less the line end); a longer line is an error, never silently cut.
 * The file is parsed into a copy, so a failed load leaves cfg untouched.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "common/config.h"
#include "common/log.h"
#include "server/ipc.h" /* IPC_MAX_PACKET: the ceiling of limits.max_text_bytes */

/* The longest chat text whose forwarded object fits in one internal packet. */
#define TEXT_BYTES_CEILING ((IPC_MAX_PACKET - QC_CHAT_ENVELOPE_MAX) / QC_TEXT_ESCAPE_MAX)

enum config_type {
    CFG_INT,     /* int, min..max */
    CFG_STR,     /* char[], any text that fits */
    CFG_ENUM,    /* char[], one of choices[] */
    CFG_LOGLEVEL /* int holding enum log_level */
};

#define CFG_CHOICES_MAX 4

struct config_key {
    const char *section;
    const char *key;
    enum config_type type;
    size_t offset;
    size_t size;                              /* bytes of the field (strings) */
    long long min, max;                       /* CFG_INT range, inclusive */
    const char *def;                          /* default, as it would be written in the file */
    const char *choices[CFG_CHOICES_MAX + 1]; /* CFG_ENUM, NULL-terminated */
    bool live;                                /* HUP applies it without a restart */
    const char *doc;
};

#define FIELD(f) offsetof(struct qc_config, f), sizeof(((struct qc_config *)0)->f)

#define INT_KEY(sec, name, field, lo, hi, dflt, lv, text)                  \
    {                                                                      \
        sec, name, CFG_INT, FIELD(field), lo, hi, dflt, { NULL }, lv, text \
    }
#define STR_KEY(sec, name, field, dflt, lv, text)                        \
    {                                                                    \
        sec, name, CFG_STR, FIELD(field), 0, 0, dflt, { NULL }, lv, text \
    }
#define ENUM_KEY(sec, name, field, dflt, lv, text, ...)                                \
    {                                                                                  \
        sec, name, CFG_ENUM, FIELD(field), 0, 0, dflt, { __VA_ARGS__, NULL }, lv, text \
    }

#define LIVE    true
#define RESTART false

static const struct config_key config_keys[] = {
    STR_KEY("server", "listen", listen, "127.0.0.1:6000", RESTART,
            "address to accept clients on: HOST:PORT or [V6]:PORT"),
    INT_KEY("server", "workers", workers, 0, 256, "0", RESTART, "worker processes, 0: one per CPU"),
    INT_KEY("server", "node_id", node_id, 1, 511, "1", RESTART,
            "this node's number in a cluster, unique per node"),
    INT_KEY("server", "max_users", max_users, 16, 10000000, "100000", RESTART,
            "sessions this node can hold (online table size)"),
    INT_KEY("server", "listen_backlog", listen_backlog, 16, 1048576, "4096", RESTART,
            "connections the kernel queues before qchatd accepts them (capped by "
            "net.core.somaxconn)"),
    INT_KEY("server", "max_message_bytes", max_message_bytes, 256, 16777216, "65536", LIVE,
            "largest request object accepted, bytes"),
    INT_KEY("server", "max_output_bytes", max_output_bytes, 65536, 1073741824, "4194304", LIVE,
            "output queued for one slow client before it is disconnected, bytes"),
    STR_KEY("server", "control_socket", control_socket, "/run/qchat/qchatd.sock", RESTART,
            "unix socket qchatctl talks to"),
    STR_KEY("server", "pidfile", pidfile, "/run/qchat/qchatd.pid", RESTART,
            "pid file written with -d"),
    STR_KEY("server", "mid_file", mid_file, "/var/lib/qchat/qchatd.mid", RESTART,
            "file reserving message ids (mid) so a restart never reissues one, one per node"),
    INT_KEY("server", "shutdown_timeout", shutdown_timeout, 1, 300, "10", LIVE,
            "seconds a graceful stop may take"),
    ENUM_KEY("server", "proxy_protocol", proxy_protocol, "off", RESTART,
             "on: every connection starts with a PROXY v1 header from a load balancer", "off",
             "on"),

    ENUM_KEY("storage", "driver", storage_driver, "sqlite", RESTART,
             "storage driver: sqlite or mysql", "sqlite", "mysql"),
    STR_KEY("storage", "path", storage_path, "/var/lib/qchat/qchat.db", RESTART,
            "sqlite database file"),
    STR_KEY("storage", "host", storage_host, "localhost", RESTART, "mysql server host"),
    INT_KEY("storage", "port", storage_port, 1, 65535, "3306", RESTART, "mysql server port"),
    STR_KEY("storage", "socket", storage_socket, "", RESTART,
            "mysql unix socket, used instead of host and port when set"),
    STR_KEY("storage", "user", storage_user, "qchat", RESTART, "mysql user"),
    STR_KEY("storage", "password_file", storage_password_file, "", RESTART,
            "file holding the mysql password, empty: no password"),
    STR_KEY("storage", "database", storage_database, "qchat", RESTART, "mysql database"),
    INT_KEY("storage", "queue_size", storage_queue_size, 16, 10000000, "100000", RESTART,
            "store requests and log appends a worker's storage thread may have waiting;"
            " beyond it requests get errno 13 at once"),
    INT_KEY("storage", "cache_mb", storage_cache_mb, 1, 65536, "16", RESTART,
            "sqlite: the page cache of each worker's database connection, MiB"),

    STR_KEY("redis", "host", redis_host, "", RESTART,
            "redis server host, empty: single node, no relay"),
    INT_KEY("redis", "port", redis_port, 1, 65535, "6379", RESTART, "redis server port"),
    ENUM_KEY("redis", "cluster", redis_cluster, "no", RESTART,
             "yes: host:port is a seed node of a Redis Cluster; sharded pub/sub per master", "no",
             "yes"),
    INT_KEY("redis", "session_ttl", redis_session_ttl, 2, 3600, "30", LIVE,
            "seconds a node's sessions stay in the cluster's session registry without its"
            " heartbeat (a node that died stops counting after this)"),

    { "log",
      "level",
      CFG_LOGLEVEL,
      FIELD(log_level),
      0,
      0,
      "info",
      { NULL },
      LIVE,
      "least severe level logged: debug, info, warning or error" },
    ENUM_KEY("log", "target", log_target, "stderr", LIVE,
             "where records go: stderr, syslog or file", "stderr", "syslog", "file"),
    STR_KEY("log", "file", log_file, "", LIVE, "log file when target = file; reopened on SIGUSR1"),

    INT_KEY("security", "password_cost", password_cost, 1, 11, "5", LIVE,
            "yescrypt cost of new password hashes"),
    INT_KEY("security", "hash_threads", hash_threads, 1, 64, "1", RESTART,
            "password hashing threads per worker (hashing never runs on the event loop)"),
    INT_KEY("security", "request_rate", request_rate, 0, 1000000, "200", LIVE,
            "requests per second per connection, 0: unlimited"),
    INT_KEY("security", "request_burst", request_burst, 1, 1000000, "400", LIVE,
            "requests a connection may send at once above the rate"),
    INT_KEY("security", "login_timeout", login_timeout, 0, 3600, "300", LIVE,
            "seconds a new connection has to log in, 0: no limit"),
    INT_KEY("security", "idle_timeout", idle_timeout, 0, 86400, "0", LIVE,
            "seconds without traffic before a connection is closed, 0: never"),
    INT_KEY("security", "max_conns_per_ip", max_conns_per_ip, 0, 1000000, "0", LIVE,
            "connections one address may hold on a worker, 0: unlimited"),
    INT_KEY("security", "login_checks_per_ip", login_checks_per_ip, 0, 1000000, "256", LIVE,
            "password checks one address may start a second (issue 14 item 1), 0: unlimited"),
    INT_KEY("security", "max_prelogin_per_ip", max_prelogin_per_ip, 0, 1000000, "1024", LIVE,
            "connections not logged in yet one address may hold on this node, 0: unlimited"),
    INT_KEY("security", "register_rate", register_rate, 0, 1000000, "0", LIVE,
            "registrations one address may make per minute, 0: unlimited"),
    INT_KEY("security", "register_rate_global", register_rate_global, 0, 1000000, "0", LIVE,
            "registrations this node accepts per minute from all addresses, 0: unlimited"),

    INT_KEY("limits", "max_text_bytes", max_text_bytes, 1, TEXT_BYTES_CEILING, "4096", LIVE,
            "longest chat text, bytes (escaped, it must fit in one internal packet)"),
    INT_KEY("limits", "max_friends", max_friends, 1, 1000000, "1000", LIVE,
            "friends one user may have"),
    INT_KEY("limits", "max_group_members", max_group_members, 2, 1000000, "2000", LIVE,
            "members one group may have"),
    INT_KEY("limits", "max_offline_messages", max_offline_messages, 1, 10000000, "10000", LIVE,
            "offline messages in one login reply, oldest first; the rest at the next login"),
    INT_KEY("limits", "max_groups", max_groups, 1, 1000000, "500", LIVE,
            "groups one user may create or join"),

    ENUM_KEY("social", "friend_consent", friend_consent, "yes", LIVE,
             "yes: ADD_FRIEND_MSG asks the other user first; no: friends at once (the seed)", "yes",
             "no"),

    INT_KEY("session", "token_days", token_days, 1, 3650, "30", LIVE,
            "days a login token stays valid"),
    INT_KEY("session", "token_seconds", token_seconds, 0, 315360000, "0", LIVE,
            "seconds a login token stays valid, overriding token_days when not 0 (tests)"),
    ENUM_KEY("session", "mode", session_mode, "takeover", LIVE,
             "second login of an account: takeover, refuse or multi (up to max_devices)",
             "takeover", "refuse", "multi"),
    INT_KEY("session", "max_devices", max_devices, 1, 100, "5", LIVE,
            "sessions one account may hold in mode = multi"),

    STR_KEY("metrics", "listen", metrics_listen, "", RESTART,
            "HOST:PORT the master serves GET /metrics on (Prometheus text format), empty: off"),

    STR_KEY("websocket", "listen", ws_listen, "", RESTART,
            "address for browsers (HTTP/1.1, WebSocket at /ws, web client at /), empty: off"),
    STR_KEY("websocket", "origins", ws_origins, "", LIVE,
            "allowed Origin values, separated by spaces; *: any; empty: the request's own host"),
    STR_KEY("websocket", "web_root", ws_web_root, QC_DATADIR "/web", LIVE,
            "directory of the web client served at GET /, empty: serve no files"),
    INT_KEY(
        "websocket", "ping_interval", ws_ping_interval, 0, 3600, "30", LIVE,
        "seconds of silence before a websocket is pinged (and as long again for the answer), 0: never"),
    INT_KEY("limits", "max_login_reply_bytes", max_login_reply_bytes, 4096, 268435456, "1048576",
            LIVE, "bytes of one login reply: friends, whole groups, then offline messages"),

    ENUM_KEY("history", "enabled", history_enabled, "yes", LIVE,
             "yes: the conversation log keeps messages after delivery; no: only undelivered ones",
             "yes", "no"),
    INT_KEY("history", "keep_days", history_keep_days, 0, 36500, "0", LIVE,
            "days a message is kept in the log, 0: forever"),
    INT_KEY("history", "max_per_conversation", history_max_per_conversation, 0, 1000000000, "0",
            LIVE, "messages kept per conversation (the oldest are purged), 0: no cap"),
    INT_KEY("history", "journal_bytes", history_journal_bytes, 65536, 1073741824, "33554432",
            RESTART,
            "bytes of shared memory per worker for chats given a cseq and not yet committed;"
            " a worker whose journal is full answers errno 13"),
    INT_KEY("history", "sequencer_slots", history_sequencer_slots, 1024, 16777216, "262144",
            RESTART,
            "conversations the node's cseq sequencer holds at once (about 48 bytes of shared"
            " memory each); fully committed ones are evicted to make room"),
};

#define CONFIG_NKEYS       (sizeof(config_keys) / sizeof(config_keys[0]))
#define CONFIG_NAME_MAX    64 /* "section.key" */
#define CONFIG_VALUE_SHOWN 64 /* bytes of a bad value quoted back */
#define CONFIG_LINE_END    3  /* "\r\n\0", per ini.h */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void *field_of(struct qc_config *cfg, const struct config_key *k)
{
    return (char *)cfg + k->offset;
}

static const void *cfield_of(const struct qc_config *cfg, const struct config_key *k)
{
    return (const char *)cfg + k->offset;
}

static const struct config_key *find_key(const char *section, const char *key)
{
    for (size_t i = 0; i < CONFIG_NKEYS; i++)
        if (strcmp(config_keys[i].section, section) == 0 && strcmp(config_keys[i].key, key) == 0)
            return &config_keys[i];
    return NULL;
}

static bool section_exists(const char *section)
{
    for (size_t i = 0; i < CONFIG_NKEYS; i++)
        if (strcmp(config_keys[i].section, section) == 0)
            return true;
    return false;
}

/* "" or a pair of double quotes: an empty string value (websocket.listen = off). */
static bool is_empty(const char *value)
{
    return value[0] == '\0' || strcmp(value, "\"\"") == 0;
}

/* Whole-string decimal integer within [min, max]. */
static int parse_int(const char *s, long long min, long long max, long long *out)
{
    char *end;
    long long v;

    if (*s == '\0' || isspace((unsigned char)*s))
        return -1; /* strtoll would skip leading blanks */
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Strip one pair of surrounding double quotes into out. */
static int unquote(const char *s, char *out, size_t outlen)
{
    size_t n = strlen(s);

    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
        s++;
        n -= 2;
    }
    if (n >= outlen)
        return -1;
    memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}

static void describe_choices(const struct config_key *k, char *out, size_t outlen)
{
    size_t len = 0;

    out[0] = '\0';
    for (int i = 0; k->choices[i] != NULL && len < outlen; i++) {
        int n = snprintf(out + len, outlen - len, "%s%s", i ? ", " : "", k->choices[i]);

        if (n < 0)
            return;
        len += (size_t)n;
    }
}

static int set_value(struct qc_config *cfg, const struct config_key *k, const char *value,
                     char *err, size_t errlen)
{
    char choices[CONFIG_NAME_MAX * CFG_CHOICES_MAX];
    enum log_level level;
    long long v;

    switch (k->type) {
    case CFG_INT:
        if (parse_int(value, k->min, k->max, &v) < 0) {
            set_err(err, errlen,
                    "bad value '%.*s' for %s.%s: must be an integer between %lld and %lld",
                    CONFIG_VALUE_SHOWN, value, k->section, k->key, k->min, k->max);
            return -1;
        }
        *(int *)field_of(cfg, k) = (int)v;
        return 0;
    case CFG_STR:
        if (unquote(value, field_of(cfg, k), k->size) < 0) {
            set_err(err, errlen, "bad value for %s.%s: longer than %zu bytes", k->section, k->key,
                    k->size - 1);
            return -1;
        }
        return 0;
    case CFG_ENUM:
        for (int i = 0; k->choices[i] != NULL; i++) {
            if (strcmp(value, k->choices[i]) == 0) {
                snprintf(field_of(cfg, k), k->size, "%s", k->choices[i]);
                return 0;
            }
        }
        describe_choices(k, choices, sizeof(choices));
        set_err(err, errlen, "bad value '%.*s' for %s.%s: must be one of %s", CONFIG_VALUE_SHOWN,
                value, k->section, k->key, choices);
        return -1;
    case CFG_LOGLEVEL:
        if (log_level_parse(value, &level) < 0) {
            set_err(err, errlen,
                    "bad value '%.*s' for %s.%s: must be one of debug, info, warning, error",
                    CONFIG_VALUE_SHOWN, value, k->section, k->key);
            return -1;
        }
        *(int *)field_of(cfg, k) = (int)level;
        return 0;
    }
    return -1;
}

void config_defaults(struct qc_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    /* The table's defaults are within their own ranges: this cannot fail. */
    for (size_t i = 0; i < CONFIG_NKEYS; i++)
        set_value(cfg, &config_keys[i], config_keys[i].def, NULL, 0);
}

/* A whole integer above what an internal packet can carry as chat text. */
static bool text_over_ceiling(const char *value)
{
    long long v;
    return parse_int(value, TEXT_BYTES_CEILING + 1LL, LLONG_MAX, &v) == 0;
}

int config_set(struct qc_config *cfg, const char *section, const char *key, const char *value,
               char *err, size_t errlen)
{
    const struct config_key *k = find_key(section, key);

    if (k == NULL) {
        if (*section == '\0')
            set_err(err, errlen, "key '%s' outside any section", key);
        else if (!section_exists(section))
            set_err(err, errlen, "unknown section [%s]", section);
        else
            set_err(err, errlen, "unknown key '%s' in section [%s]", key, section);
        return -1;
    }
    /* An address is checked where it is written, so its error names the line. */
    if (strcmp(key, "listen") == 0 && (strcmp(section, "server") == 0 || !is_empty(value))) {
        char host[QC_CONFIG_STR_MAX];
        int port;
        if (config_split_hostport(value, host, sizeof(host), &port) < 0 || port < 1) {
            set_err(err, errlen,
                    "bad value '%.64s' for %s.listen: want HOST:PORT "
                    "(e.g. 127.0.0.1:6000 or [::1]:6000), port 1-65535",
                    value, section);
            return -1;
        }
    }
    if (strcmp(section, "limits") == 0 && strcmp(key, "max_text_bytes") == 0 &&
        text_over_ceiling(value)) {
        set_err(err, errlen,
                "bad value '%.64s' for limits.max_text_bytes: at most %d, so that a chat "
                "escaped in JSON (up to %d bytes per byte) fits in one internal packet "
                "(%d bytes) with its other fields",
                value, TEXT_BYTES_CEILING, QC_TEXT_ESCAPE_MAX, IPC_MAX_PACKET);
        return -1;
    }
    return set_value(cfg, k, value, err, errlen);
}

/* State of one config_load: the line reader and the key handler share it. */
struct ini_state {
    struct qc_config *cfg;
    const char *path;
    FILE *fp;
    char *line; /* getline buffer */
    size_t linecap;
    int lineno;             /* line last handed to inih */
    int err_line;           /* first error found by us, 0: none */
    int seen[CONFIG_NKEYS]; /* line each key was set on, 0: not yet */
    char err[QC_CONFIG_ERR_MAX];
};

static void record_error(struct ini_state *st, const char *msg)
{
    if (st->err_line != 0)
        return;
    st->err_line = st->lineno;
    set_err(st->err, sizeof(st->err), "%s:%d: %s", st->path, st->lineno, msg);
}

/* fgets-like reader for inih that counts lines and refuses overlong ones. */
static char *read_line(char *str, int num, void *arg)
{
    struct ini_state *st = arg;
    char msg[QC_CONFIG_ERR_MAX];
    ssize_t n;

    n = getline(&st->line, &st->linecap, st->fp);
    if (n < 0)
        return NULL;
    st->lineno++;
    if (n >= num) {
        set_err(msg, sizeof(msg), "line too long (at most %d bytes)", num - CONFIG_LINE_END);
        record_error(st, msg);
        return NULL; /* stop: what follows cannot be trusted */
    }
    memcpy(str, st->line, (size_t)n + 1);
    return str;
}

static int handle_key(void *arg, const char *section, const char *name, const char *value)
{
    struct ini_state *st = arg;
    char msg[QC_CONFIG_ERR_MAX];
    const struct config_key *k;

    if (config_set(st->cfg, section, name, value, msg, sizeof(msg)) < 0) {
        record_error(st, msg);
        return 0;
    }
    k = find_key(section, name);
    if (st->seen[k - config_keys] != 0) {
        set_err(msg, sizeof(msg), "duplicate key '%s' in section [%s] (first set on line %d)", name,
                section, st->seen[k - config_keys]);
        record_error(st, msg);
        return 0;
    }
    st->seen[k - config_keys] = st->lineno;
    return 1;
}

int config_load(struct qc_config *cfg, const char *path, bool missing_ok, char *err, size_t errlen)
{
    struct ini_state *st;
    int rc;

    st = calloc(1, sizeof(*st));
    if (st == NULL || (st->cfg = malloc(sizeof(*cfg))) == NULL) {
        free(st);
        set_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    st->fp = fopen(path, "re");
    if (st->fp == NULL) {
        int saved = errno;

        free(st->cfg);
        free(st);
        if (saved == ENOENT && missing_ok)
            return 0;
        set_err(err, errlen, "%s: %s", path, strerror(saved));
        return -1;
    }
    *st->cfg = *cfg;
    st->path = path;
    rc = ini_parse_stream(read_line, st, handle_key, st);
    if (rc == 0 && st->err_line == 0 && ferror(st->fp)) {
        rc = -1;
        set_err(err, errlen, "%s: read error", path);
    } else if (rc > 0 && (st->err_line == 0 || rc < st->err_line)) {
        set_err(err, errlen, "%s:%d: syntax error: expected [SECTION] or KEY = VALUE", path, rc);
    } else if (st->err_line != 0) {
        rc = st->err_line;
        set_err(err, errlen, "%s", st->err);
    } else if (rc != 0) {
        set_err(err, errlen, "%s: cannot parse (inih error %d)", path, rc);
    }
    if (rc == 0) {
        snprintf(st->cfg->source, sizeof(st->cfg->source), "%s", path);
        *cfg = *st->cfg;
    }
    fclose(st->fp);
    free(st->line);
    free(st->cfg);
    free(st);
    return rc == 0 ? 0 : -1;
}

int config_override(struct qc_config *cfg, const char *spec, char *err, size_t errlen)
{
    char section[CONFIG_NAME_MAX], msg[QC_CONFIG_ERR_MAX];
    const char *dot = strchr(spec, '.');
    const char *eq = strchr(spec, '=');
    char key[CONFIG_NAME_MAX];
    size_t slen, klen;

    if (dot == NULL || eq == NULL || dot > eq) {
        set_err(err, errlen, "-o %s: expected SECTION.KEY=VALUE", spec);
        return -1;
    }
    slen = (size_t)(dot - spec);
    klen = (size_t)(eq - dot - 1);
    if (slen == 0 || klen == 0 || slen >= sizeof(section) || klen >= sizeof(key)) {
        set_err(err, errlen, "-o %s: expected SECTION.KEY=VALUE", spec);
        return -1;
    }
    memcpy(section, spec, slen);
    section[slen] = '\0';
    memcpy(key, dot + 1, klen);
    key[klen] = '\0';
    if (config_set(cfg, section, key, eq + 1, msg, sizeof(msg)) < 0) {
        set_err(err, errlen, "-o %s: %s", spec, msg);
        return -1;
    }
    return 0;
}

int config_split_hostport(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon, *hstart = s;
    size_t hlen;
    long long v;

    if (s[0] == '[') {
        const char *close = strchr(s, ']');

        if (close == NULL || close[1] != ':')
            return -1;
        hstart = s + 1;
        hlen = (size_t)(close - hstart);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL)
            return -1; /* a bare IPv6 address needs brackets */
        hlen = (size_t)(colon - s);
    }
    if (hlen >= hostlen || parse_int(colon + 1, 0, UINT16_MAX, &v) < 0)
        return -1;
    memcpy(host, hstart, hlen);
    host[hlen] = '\0';
    *port = (int)v;
    return 0;
}

int config_validate(const struct qc_config *cfg, char *err, size_t errlen)
{
    const char *src = cfg->source[0] ? cfg->source : "configuration";
    char host[QC_CONFIG_STR_MAX];
    int port;

    if (config_split_hostport(cfg->listen, host, sizeof(host), &port) < 0) {
        set_err(err, errlen, "%s: server.listen = %s: want HOST:PORT or [V6]:PORT", src,
                cfg->listen);
        return -1;
    }
    if (cfg->ws_listen[0] != '\0' && strcmp(cfg->ws_listen, cfg->listen) == 0) {
        set_err(err, errlen, "%s: websocket.listen must differ from server.listen (%s)", src,
                cfg->listen);
        return -1;
    }
    if (strcmp(cfg->log_target, "file") == 0 && cfg->log_file[0] == '\0') {
        set_err(err, errlen, "%s: log.target = file needs log.file", src);
        return -1;
    }
    if (cfg->max_text_bytes >= cfg->max_message_bytes) {
        set_err(err, errlen,
                "%s: limits.max_text_bytes (%d) must be less than "
                "server.max_message_bytes (%d)",
                src, cfg->max_text_bytes, cfg->max_message_bytes);
        return -1;
    }
    if (strcmp(cfg->storage_driver, "sqlite") == 0 && cfg->storage_path[0] == '\0') {
        set_err(err, errlen, "%s: storage.driver = sqlite needs storage.path", src);
        return -1;
    }
    if (strcmp(cfg->storage_driver, "mysql") == 0 &&
        (cfg->storage_database[0] == '\0' || cfg->storage_user[0] == '\0')) {
        set_err(err, errlen, "%s: storage.driver = mysql needs storage.database and storage.user",
                src);
        return -1;
    }
    return 0;
}

static bool values_differ(const struct qc_config *a, const struct qc_config *b,
                          const struct config_key *k)
{
    if (k->type == CFG_INT || k->type == CFG_LOGLEVEL)
        return *(const int *)cfield_of(a, k) != *(const int *)cfield_of(b, k);
    return strcmp(cfield_of(a, k), cfield_of(b, k)) != 0;
}

int config_diff(const struct qc_config *a, const struct qc_config *b, config_diff_cb cb, void *arg)
{
    char name[CONFIG_NAME_MAX];
    int n = 0;

    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        const struct config_key *k = &config_keys[i];

        if (!values_differ(a, b, k))
            continue;
        n++;
        if (cb != NULL) {
            snprintf(name, sizeof(name), "%s.%s", k->section, k->key);
            cb(arg, name, k->live);
        }
    }
    return n;
}

void config_apply_live(struct qc_config *dst, const struct qc_config *src)
{
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        const struct config_key *k = &config_keys[i];

        if (k->live)
            memcpy((char *)dst + k->offset, (const char *)src + k->offset, k->size);
    }
}

static void format_value(const struct qc_config *cfg, const struct config_key *k, char *out,
                         size_t outlen)
{
    const char *s;

    switch (k->type) {
    case CFG_INT: snprintf(out, outlen, "%d", *(const int *)cfield_of(cfg, k)); return;
    case CFG_LOGLEVEL:
        snprintf(out, outlen, "%s", log_level_name(*(const int *)cfield_of(cfg, k)));
        return;
    case CFG_STR:
    case CFG_ENUM:
        s = cfield_of(cfg, k);
        snprintf(out, outlen, "%s", *s ? s : "\"\"");
        return;
    }
}

void config_dump(const struct qc_config *cfg, void (*out)(void *arg, const char *line), void *arg)
{
    char line[QC_CONFIG_ERR_MAX + PATH_MAX], value[PATH_MAX];
    const char *section = NULL;

    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        const struct config_key *k = &config_keys[i];

        if (section == NULL || strcmp(section, k->section) != 0) {
            if (section != NULL)
                out(arg, "");
            snprintf(line, sizeof(line), "[%s]", k->section);
            out(arg, line);
            section = k->section;
        }
        snprintf(line, sizeof(line), "# %s%s", k->doc, k->live ? "" : " (restart)");
        out(arg, line);
        format_value(cfg, k, value, sizeof(value));
        snprintf(line, sizeof(line), "%s = %s", k->key, value);
        out(arg, line);
    }
}
