/*
 * qchatctl.c - the qchatd operator tool:
 *
 *   qchatctl [-s SOCKET] [--json] status | users | kick ID | revoke ID | reload | stats | purge
 *
 * Speaks the master's control protocol (PROTOCOL.md, "Control socket"):
 * one JSON line to the unix socket, one JSON line back, then the master
 * closes.  The socket is -s SOCKET, else $QCHATCTL_SOCKET, else
 * QCHATCTL_DEFAULT_SOCKET.
 *
 * Output: --json prints the server's reply as it came.  Otherwise status
 * prints aligned "key: value" lines and a table of workers, users a table
 * of online users, kick and reload one line, stats the node's metrics (the
 * counters GET /metrics serves) one per line, histograms as count and mean.
 * reload waits for the outcome; purge waits (up to PURGE_WAIT_MS) until the
 * purge round it started has finished and prints how many messages it
 * removed.  Errors go to stderr.
 *
 * Exit status: 0 ok, 1 the server answered with an error ("ok":false),
 * 2 usage error, cannot connect, no or unreadable reply.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/clock.h"
#include "common/buf.h"
#include "common/net.h"

#define QCHATCTL_DEFAULT_SOCKET "/run/qchat/qchatd.sock"
#define QCHATCTL_SOCKET_ENV     "QCHATCTL_SOCKET"
#define CTL_TIMEOUT_MS          5000        /* whole exchange */
#define CTL_REPLY_MAX           (16u << 20) /* largest reply accepted */
#define CTL_READ_CHUNK          4096
#define CTL_KEY_WIDTH           9  /* "node_id: " column */
#define STATS_NAME_WIDTH        48 /* "qchat_deliveries_total{path=\"worker\"}" column */
#define STATS_LINE_MAX          512
#define SECS_PER_DAY            86400
#define SECS_PER_HOUR           3600
#define SECS_PER_MIN            60
#define PURGE_WAIT_MS           60000 /* purge: how long to wait for the round to finish */
#define PURGE_POLL_MS           50    /* purge: how often to ask whether it has */

enum { EXIT_OK = 0, EXIT_SERVER_ERROR = 1, EXIT_USAGE = 2 };

struct ctl {
    const char *socket_path;
    bool json;
};

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: qchatctl [-s SOCKET] [--json] status | users | kick ID | revoke ID | reload | stats\n"
        "                | purge\n"
        "  -s, --socket SOCKET  control socket (default $%s or %s)\n"
        "  -j, --json           print the server's JSON reply as is\n",
        QCHATCTL_SOCKET_ENV, QCHATCTL_DEFAULT_SOCKET);
}

/* ---- the exchange ------------------------------------------------------- */

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read the reply line into b (until '\n' or EOF).  0, or -1 with a message. */
static int read_reply(int fd, struct buf *b, const char *path)
{
    int64_t deadline = clock_now_ms() + CTL_TIMEOUT_MS;

    for (;;) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN, .revents = 0 };
        int64_t left = deadline - clock_now_ms();
        ssize_t n;
        int rc;

        if (buf_used(b) > 0 && memchr(buf_head(b), '\n', buf_used(b)) != NULL)
            return 0;
        if (left <= 0) {
            fprintf(stderr, "qchatctl: %s: no reply within %d ms\n", path, CTL_TIMEOUT_MS);
            return -1;
        }
        rc = poll(&pfd, 1, (int)left);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0) {
            fprintf(stderr, "qchatctl: poll: %s\n", strerror(errno));
            return -1;
        }
        if (rc == 0)
            continue;
        if (buf_used(b) >= CTL_REPLY_MAX || buf_reserve(b, CTL_READ_CHUNK) < 0) {
            fprintf(stderr, "qchatctl: %s: reply too large\n", path);
            return -1;
        }
        n = read(fd, b->data + b->len, b->cap - b->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "qchatctl: %s: read: %s\n", path, strerror(errno));
            return -1;
        }
        if (n == 0)
            return 0; /* closed: the reply is what we have */
        b->len += (size_t)n;
    }
}

/* Send request (one line) and return the parsed reply object; raw gets its text. */
static struct json_object *exchange(const struct ctl *ctl, const char *request, struct buf *raw)
{
    struct json_object *reply;
    char err[256];
    size_t len;
    int fd;

    fd = net_connect_unix(ctl->socket_path, err, sizeof err);
    if (fd < 0) {
        fprintf(stderr, "qchatctl: control socket: %s\n", err);
        return NULL;
    }
    if (send_all(fd, request, strlen(request)) < 0) {
        fprintf(stderr, "qchatctl: %s: send: %s\n", ctl->socket_path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (read_reply(fd, raw, ctl->socket_path) < 0) {
        close(fd);
        return NULL;
    }
    close(fd);
    len = buf_used(raw);
    while (len > 0 &&
           (raw->data[raw->off + len - 1] == '\n' || raw->data[raw->off + len - 1] == '\r'))
        len--;
    raw->len = raw->off + len;
    if (len == 0) {
        fprintf(stderr, "qchatctl: %s: the server closed without a reply\n", ctl->socket_path);
        return NULL;
    }
    if (buf_append_char(raw, '\0') < 0) {
        fprintf(stderr, "qchatctl: out of memory\n");
        return NULL;
    }
    raw->len--; /* keep the NUL out of the text, but in memory */
    reply = json_tokener_parse(buf_head(raw));
    if (reply == NULL || !json_object_is_type(reply, json_type_object)) {
        json_object_put(reply);
        fprintf(stderr, "qchatctl: %s: the reply is not a JSON object\n", ctl->socket_path);
        return NULL;
    }
    return reply;
}

/* ---- field access ------------------------------------------------------- */

static struct json_object *field(struct json_object *o, const char *key)
{
    struct json_object *v;

    return o != NULL && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

/* A field as text: strings bare, anything else as JSON; "-" when absent. */
static const char *field_text(struct json_object *o, const char *key)
{
    struct json_object *v = field(o, key);

    if (v == NULL)
        return "-";
    if (json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
}

static bool reply_ok(struct json_object *reply)
{
    struct json_object *ok = field(reply, "ok");

    return ok != NULL && json_object_is_type(ok, json_type_boolean) && json_object_get_boolean(ok);
}

/* ---- human output ------------------------------------------------------- */

static void print_kv(const char *key, const char *value)
{
    size_t len = strlen(key);
    int pad = len < CTL_KEY_WIDTH ? (int)(CTL_KEY_WIDTH - len) : 1;

    printf("%s:%*s%s\n", key, pad, "", value);
}

/* "3d 04:05:06" style uptime, with the seconds first so scripts can cut it. */
static void print_uptime(struct json_object *status)
{
    struct json_object *v = field(status, "uptime");
    char text[96];
    int64_t s;

    if (v == NULL || !json_object_is_type(v, json_type_int)) {
        print_kv("uptime", field_text(status, "uptime"));
        return;
    }
    s = json_object_get_int64(v);
    snprintf(text, sizeof text, "%lld s (%lldd %02lld:%02lld:%02lld)", (long long)s,
             (long long)(s / SECS_PER_DAY), (long long)(s % SECS_PER_DAY / SECS_PER_HOUR),
             (long long)(s % SECS_PER_HOUR / SECS_PER_MIN), (long long)(s % SECS_PER_MIN));
    print_kv("uptime", text);
}

/* A detail worth showing: present, and not a zero (e.g. no relay pid). */
static bool has_detail(struct json_object *o, const char *key)
{
    struct json_object *v = field(o, key);

    return v != NULL && !(json_object_is_type(v, json_type_int) && json_object_get_int64(v) == 0);
}

/* "store: sqlite (ok)", "relay: connected (pid 42)". */
static void print_sub(struct json_object *status, const char *key, const char *main_key,
                      const char *extra_key, const char *extra_label)
{
    struct json_object *o = field(status, key);
    char text[512];

    if (o == NULL || !json_object_is_type(o, json_type_object)) {
        print_kv(key, field_text(status, key));
        return;
    }
    if (has_detail(o, extra_key))
        snprintf(text, sizeof text, "%s (%s%s)", field_text(o, main_key), extra_label,
                 field_text(o, extra_key));
    else
        snprintf(text, sizeof text, "%s", field_text(o, main_key));
    print_kv(key, text);
}

static const char *const worker_columns[] = { "index",   "pid",      "connections", "sessions",
                                              "msgs_in", "msgs_out", "restarts" };
#define NWORKER_COLUMNS (sizeof worker_columns / sizeof worker_columns[0])

static void print_workers(struct json_object *status)
{
    struct json_object *workers = field(status, "workers");
    size_t i, j, n;

    if (workers == NULL || !json_object_is_type(workers, json_type_array))
        return;
    n = json_object_array_length(workers);
    printf("\n%-6s %-8s %12s %9s %12s %12s %9s\n", "index", "pid", "connections", "sessions",
           "msgs_in", "msgs_out", "restarts");
    for (i = 0; i < n; i++) {
        struct json_object *w = json_object_array_get_idx(workers, i);
        const char *v[NWORKER_COLUMNS];

        for (j = 0; j < NWORKER_COLUMNS; j++)
            v[j] = field_text(w, worker_columns[j]);
        printf("%-6s %-8s %12s %9s %12s %12s %9s\n", v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
    }
}

static bool is_known_status_key(const char *key)
{
    static const char *const known[] = { "ok",     "node_id", "pid",   "version", "uptime",
                                         "listen", "online",  "store", "relay",   "workers" };
    size_t i;

    for (i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(known[i], key) == 0)
            return true;
    return false;
}

static void print_status(struct json_object *status)
{
    static const char *const plain[] = { "node_id", "pid", "version" };
    size_t i;

    for (i = 0; i < sizeof plain / sizeof plain[0]; i++)
        print_kv(plain[i], field_text(status, plain[i]));
    print_uptime(status);
    print_kv("listen", field_text(status, "listen"));
    print_kv("online", field_text(status, "online"));
    print_sub(status, "store", "driver", "state", "");
    print_sub(status, "relay", "state", "pid", "pid ");
    /* Keys a newer server adds are shown too. */
    json_object_object_foreach(status, key, val)
    {
        (void)val;
        if (!is_known_status_key(key))
            print_kv(key, field_text(status, key));
    }
    print_workers(status);
}

static void print_users(struct json_object *reply)
{
    struct json_object *users = field(reply, "users");
    size_t i, n = 0;

    if (users != NULL && json_object_is_type(users, json_type_array))
        n = json_object_array_length(users);
    printf("%-12s %s\n", "id", "worker");
    for (i = 0; i < n; i++) {
        struct json_object *u = json_object_array_get_idx(users, i);

        printf("%-12s %s\n", field_text(u, "id"), field_text(u, "worker"));
    }
    printf("%zu user%s online\n", n, n == 1 ? "" : "s");
}

/* ---- stats ------------------------------------------------------------- */

/* "name value" of a histogram's _sum or _count line, remembered for its mean. */
struct hist_line {
    char name[STATS_LINE_MAX];
    double sum;
};

/* Print the exposition text human-readably: samples aligned, buckets left out. */
static void print_stats(struct json_object *reply)
{
    const char *text = field_text(reply, "metrics");
    struct hist_line h = { "", 0 };
    while (*text) {
        size_t len = strcspn(text, "\n");
        char line[STATS_LINE_MAX];
        snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), text);
        text += len + (text[len] == '\n');
        char *space = strrchr(line, ' ');
        if (line[0] == '#' || space == NULL || strstr(line, "_bucket{"))
            continue;
        *space = '\0';
        const char *value = space + 1;
        size_t nlen = strlen(line);
        if (nlen > 4 && strcmp(line + nlen - 4, "_sum") == 0) {
            snprintf(h.name, sizeof h.name, "%.*s", (int)(nlen - 4), line);
            h.sum = strtod(value, NULL);
            continue;
        }
        if (nlen > 6 && strcmp(line + nlen - 6, "_count") == 0 && h.name[0] &&
            strncmp(line, h.name, nlen - 6) == 0) {
            double n = strtod(value, NULL);
            printf("%-*s %s observed, mean %.3f ms\n", STATS_NAME_WIDTH, h.name, value,
                   n > 0 ? h.sum / n * 1000.0 : 0.0);
            h.name[0] = '\0';
            continue;
        }
        printf("%-*s %s\n", STATS_NAME_WIDTH, line, value);
    }
}

/* ---- commands ----------------------------------------------------------- */

/* Parse a user id: decimal, 1..INT32_MAX. */
static bool parse_user_id(const char *s, long *out)
{
    char *end;
    long v;

    if (*s < '0' || *s > '9')
        return false;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 1 || v > INT32_MAX)
        return false;
    *out = v;
    return true;
}

static uint64_t field_u64(struct json_object *o, const char *key)
{
    struct json_object *v = field(o, key);
    return v && json_object_is_type(v, json_type_int) ? (uint64_t)json_object_get_int64(v) : 0;
}

/*
 * purge: the master started a round and answered with the rounds finished
 * and messages purged before it; poll until one more round has finished.
 * Returns the last status reply (the caller frees it), or NULL.
 */
static struct json_object *wait_for_purge(const struct ctl *ctl, struct json_object *start,
                                          struct buf *raw)
{
    uint64_t runs0 = field_u64(start, "runs");
    int64_t deadline = clock_now_ms() + PURGE_WAIT_MS;
    while (clock_now_ms() < deadline) {
        struct timespec ts = { 0, PURGE_POLL_MS * 1000000L };
        nanosleep(&ts, NULL);
        buf_reset(raw);
        struct json_object *st = exchange(ctl, "{\"cmd\":\"purge_status\"}\n", raw);
        if (st == NULL || !reply_ok(st) || field_u64(st, "runs") > runs0)
            return st;
        json_object_put(st);
    }
    fprintf(stderr, "qchatctl: purge: still running after %d s; see the server's log\n",
            PURGE_WAIT_MS / 1000);
    return NULL;
}

static int run(const struct ctl *ctl, const char *cmd, const char *request, long kick_id)
{
    struct json_object *reply;
    struct buf raw;
    int rc;

    buf_init(&raw);
    reply = exchange(ctl, request, &raw);
    if (reply == NULL) {
        buf_free(&raw);
        return EXIT_USAGE;
    }
    rc = reply_ok(reply) ? EXIT_OK : EXIT_SERVER_ERROR;
    uint64_t purged0 = field_u64(reply, "purged");
    if (rc == EXIT_OK && strcmp(cmd, "purge") == 0) {
        struct json_object *done = wait_for_purge(ctl, reply, &raw);
        json_object_put(reply);
        if (done == NULL) {
            buf_free(&raw);
            return EXIT_SERVER_ERROR;
        }
        reply = done;
        rc = reply_ok(reply) ? EXIT_OK : EXIT_SERVER_ERROR;
    }
    if (ctl->json) {
        printf("%s\n", buf_head(&raw));
    } else if (rc != EXIT_OK) {
        fprintf(stderr, "qchatctl: %s: %s\n", cmd, field_text(reply, "error"));
    } else if (strcmp(cmd, "status") == 0) {
        print_status(reply);
    } else if (strcmp(cmd, "users") == 0) {
        print_users(reply);
    } else if (strcmp(cmd, "kick") == 0) {
        printf("kicked user %ld\n", kick_id);
    } else if (strcmp(cmd, "revoke") == 0) {
        struct json_object *n;
        printf("revoked %lld login token(s) of user %ld\n",
               json_object_object_get_ex(reply, "revoked", &n) ? (long long)json_object_get_int64(n)
                                                               : 0LL,
               kick_id);
    } else if (strcmp(cmd, "stats") == 0) {
        print_stats(reply);
    } else if (strcmp(cmd, "purge") == 0) {
        printf("purged %llu message(s)\n",
               (unsigned long long)(field_u64(reply, "purged") - purged0));
    } else {
        printf("configuration reloaded\n");
    }
    json_object_put(reply);
    buf_free(&raw);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "qchatctl: writing output: %s\n", strerror(errno));
        return EXIT_USAGE;
    }
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option options[] = { { "socket", required_argument, NULL, 's' },
                                             { "json", no_argument, NULL, 'j' },
                                             { "help", no_argument, NULL, 'h' },
                                             { NULL, 0, NULL, 0 } };
    struct ctl ctl = { .socket_path = NULL, .json = false };
    char request[128];
    const char *cmd;
    long kick_id = 0;
    int opt;

    while ((opt = getopt_long(argc, argv, "s:jh", options, NULL)) != -1) {
        switch (opt) {
        case 's': ctl.socket_path = optarg; break;
        case 'j': ctl.json = true; break;
        case 'h': usage(stdout); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (ctl.socket_path == NULL)
        ctl.socket_path = getenv(QCHATCTL_SOCKET_ENV);
    if (ctl.socket_path == NULL || *ctl.socket_path == '\0')
        ctl.socket_path = QCHATCTL_DEFAULT_SOCKET;
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    cmd = argv[optind];
    if ((strcmp(cmd, "status") == 0 || strcmp(cmd, "users") == 0 || strcmp(cmd, "reload") == 0 ||
         strcmp(cmd, "stats") == 0 || strcmp(cmd, "purge") == 0) &&
        argc - optind == 1) {
        snprintf(request, sizeof request, "{\"cmd\":\"%s\"}\n", cmd);
    } else if ((strcmp(cmd, "kick") == 0 || strcmp(cmd, "revoke") == 0) && argc - optind == 2) {
        if (!parse_user_id(argv[optind + 1], &kick_id)) {
            fprintf(stderr, "qchatctl: %s: \"%s\" is not a user id\n", cmd, argv[optind + 1]);
            return EXIT_USAGE;
        }
        snprintf(request, sizeof request, "{\"cmd\":\"%s\",\"id\":%ld}\n", cmd, kick_id);
    } else {
        usage(stderr);
        return EXIT_USAGE;
    }
    return run(&ctl, cmd, request, kick_id);
}
