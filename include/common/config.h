/*
 * config.h - qchatd settings: defaults, the INI file (libinih), -o overrides.
 *
 * Every key lives in one table in config.c (section, key, type, range,
 * default, whether a HUP can change it live).  etc/qchatd.conf and
 * qchatd.conf(5) document the same keys.  Errors name FILE:LINE.
 */
#ifndef QCHAT_COMMON_CONFIG_H
#define QCHAT_COMMON_CONFIG_H

#include <limits.h>
#include <stddef.h>
#include <stdbool.h>

#define QC_DEFAULT_CONFIG "/etc/qchat/qchatd.conf"
#define QC_CONFIG_STR_MAX 256
#define QC_CONFIG_ERR_MAX 512
#ifndef QC_DATADIR
#define QC_DATADIR "/usr/local/share/qchat" /* the Makefile passes $(DATADIR) */
#endif

/*
 * limits.max_text_bytes has a ceiling.  A chat crosses between processes
 * (worker to worker, worker and relay) as one internal packet of at most
 * IPC_MAX_PACKET bytes (server/ipc.h) holding its forwarded JSON object, in
 * which each byte of the text may take QC_TEXT_ESCAPE_MAX bytes ("\u00XX")
 * and everything else (header, other fields, name) at most
 * QC_CHAT_ENVELOPE_MAX.  A longer limit is refused when the config is read,
 * so no chat that was accepted can be too large to hand over.
 */
#define QC_TEXT_ESCAPE_MAX   6
#define QC_CHAT_ENVELOPE_MAX 4096

struct qc_config {
    char source[PATH_MAX]; /* file loaded, "" when none */

    /* [server] */
    char listen[QC_CONFIG_STR_MAX]; /* "127.0.0.1:6000", "[::1]:6000" */
    int workers;                    /* 0: one per CPU */
    int node_id;
    int max_users;         /* online table capacity (sessions per node) */
    int listen_backlog;    /* accept queue of the client listeners (listen(2)) */
    int max_message_bytes; /* largest request object accepted */
    int max_output_bytes;  /* per-connection output cap (slow reader) */
    char control_socket[PATH_MAX];
    char pidfile[PATH_MAX];  /* used with -d */
    int shutdown_timeout;    /* seconds a graceful stop may take */
    char proxy_protocol[8];  /* "on": connections start with a PROXY v1 header */
    char mid_file[PATH_MAX]; /* message ids reserved here, "": none */

    /* [storage] */
    char storage_driver[16];     /* "sqlite" | "mysql" */
    char storage_path[PATH_MAX]; /* sqlite database file */
    char storage_host[QC_CONFIG_STR_MAX];
    int storage_port;
    char storage_socket[PATH_MAX];
    char storage_user[QC_CONFIG_STR_MAX];
    char storage_password_file[PATH_MAX];
    char storage_database[QC_CONFIG_STR_MAX];
    int storage_queue_size; /* items a worker's storage thread may have waiting */
    int storage_cache_mb;   /* sqlite: each connection's page cache, MiB */

    /* [redis] */
    char redis_host[QC_CONFIG_STR_MAX]; /* "": single node, no relay */
    int redis_port;
    char redis_cluster[8]; /* "no" | "yes": Redis Cluster, sharded pub/sub (redis_cluster.c) */
    int redis_session_ttl; /* seconds: the session registry's heartbeat deadline (sessreg.h) */

    /* [log] */
    int log_level;       /* enum log_level */
    char log_target[16]; /* "stderr" | "syslog" | "file" */
    char log_file[PATH_MAX];

    /* [security] */
    int password_cost;        /* yescrypt cost, 1..11 */
    int hash_threads;         /* password hashing threads per worker */
    int request_rate;         /* requests per second per connection */
    int request_burst;        /* token bucket depth */
    int login_timeout;        /* seconds to authenticate, 0: none */
    int idle_timeout;         /* seconds without traffic, 0: none */
    int max_conns_per_ip;     /* 0: unlimited */
    int login_checks_per_ip;  /* password checks started per address a second, 0: unlimited */
    int max_prelogin_per_ip;  /* connections not logged in, per address per node, 0: unlimited */
    int register_rate;        /* registrations per address per minute, 0: unlimited */
    int register_rate_global; /* registrations per node per minute, 0: unlimited */

    /* [limits] */
    int max_text_bytes; /* "msg" field of a chat */
    int max_friends;
    int max_group_members;
    int max_offline_messages;  /* offline messages in one login reply */
    int max_groups;            /* groups a user created or joined */
    int max_login_reply_bytes; /* bytes of one login reply */

    /* [social] */
    char friend_consent[8]; /* "yes" | "no" */

    /* [session] */
    int token_days;        /* login token lifetime */
    int token_seconds;     /* lifetime in seconds when not 0 (overrides token_days) */
    char session_mode[16]; /* "takeover" | "refuse" | "multi" */
    int max_devices;       /* sessions per account in mode multi */

    /* [metrics] */
    char metrics_listen[QC_CONFIG_STR_MAX]; /* "": off; else HOST:PORT of GET /metrics */

    /* [websocket] */
    char ws_listen[QC_CONFIG_STR_MAX];      /* "": no websocket listener */
    char ws_origins[QC_CONFIG_STR_MAX * 4]; /* allow-list, see ws_origin_allowed() */
    char ws_web_root[PATH_MAX];             /* web client directory, "": none */
    int ws_ping_interval;                   /* seconds, 0: no pings */

    /* [history] */
    char history_enabled[4];          /* "yes": the log keeps what was delivered; "no" */
    int history_keep_days;            /* 0: forever */
    int history_max_per_conversation; /* 0: no cap */
    int history_journal_bytes;        /* the append journal's ring per worker, bytes */
    int history_sequencer_slots;      /* conversations in the shared cseq sequencer */
};

/* Fill cfg with the built-in defaults. */
void config_defaults(struct qc_config *cfg);

/*
 * Load an INI file over cfg.  Returns 0, or -1 with err set to
 * "FILE:LINE: message".  A missing file is an error unless missing_ok.
 */
int config_load(struct qc_config *cfg, const char *path, bool missing_ok, char *err, size_t errlen);

/* Set one key from its text; 0 or -1 with err ("unknown key", "bad value"). */
int config_set(struct qc_config *cfg, const char *section, const char *key, const char *value,
               char *err, size_t errlen);

/* Apply "-o SECTION.KEY=VALUE"; 0 or -1 with err naming the option. */
int config_override(struct qc_config *cfg, const char *spec, char *err, size_t errlen);

/* Cross-key checks after everything is loaded (e.g. mysql needs a database). */
int config_validate(const struct qc_config *cfg, char *err, size_t errlen);

/*
 * Compare two configs key by key.  For each key that differs, call cb with
 * "section.key" and whether the key can change without a restart.
 * Returns the number of differing keys.
 */
typedef void (*config_diff_cb)(void *arg, const char *name, bool live);
int config_diff(const struct qc_config *a, const struct qc_config *b, config_diff_cb cb, void *arg);

/* Copy every key that can change without a restart from src into dst. */
void config_apply_live(struct qc_config *dst, const struct qc_config *src);

/* Split "host:port" / "[v6]:port" into parts; 0 or -1. */
int config_split_hostport(const char *s, char *host, size_t hostlen, int *port);

/* Write every key with its current value as INI text (for qchatd -T / docs). */
void config_dump(const struct qc_config *cfg, void (*out)(void *arg, const char *line), void *arg);

#endif
