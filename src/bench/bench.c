/*
 * bench.c - qchat-bench main: command line, limits and signals, the thread
 * helper, and the dispatch to one mode.  See qchat-bench(1) and --help.
 *
 *   qchat-bench MODE [options]     MODE: reg pingpong login conns group offline
 *                                  history
 *
 * Exit status: 0 no errors, 1 errors (or a failure to run), 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "bench.h"
#include "common/proto.h"

#define EXIT_USAGE       2
#define DEFAULT_HOST     "127.0.0.1"
#define DEFAULT_PORT     6000
#define DEFAULT_DURATION 10.0
#define DEFAULT_TIMEOUT  60.0
#define DEFAULT_DRAIN    5.0
#define DEFAULT_STALL    2.0
#define DEFAULT_PASSWORD "benchpw"
#define DEFAULT_IDS_OUT  "qchat-bench.ids"
#define DEFAULT_SIZE     64
#define DEFAULT_PAIRS    100
#define DEFAULT_LOOPS    32
#define DEFAULT_CONNS    1000
#define DEFAULT_MEMBERS  100
#define DEFAULT_SENDERS  4
#define DEFAULT_USERS    100
#define DEFAULT_BACKLOG  1000
#define DEFAULT_ROUNDS   5
#define DEFAULT_LIMIT    50   /* history: the server's default page */
#define MAX_LIMIT        100  /* history: the protocol's largest page */
#define HISTORY_CONNS    1    /* history: the reader */
#define OFFLINE_CONNS    2    /* offline: the sender and the receiver */
#define OFFLINE_STEPS    5    /* offline: steps of a round, each within --timeout */
#define DEADLINE_SLACK   30.0 /* seconds past the phases' own limits */
#define FD_SLACK         64   /* descriptors besides the connections */
#define SIZE_MAX_TEXT    (1 << 20)
#define PREFIX_MAX       32 /* names are PREFIX + number, <= QC_NAME_MAX */
#define MAX_COUNT        100000000L
#define MAX_POPULATION   10000000L
#define MAX_SECONDS      1e6

static void usage(FILE *f)
{
    fputs("usage: qchat-bench MODE [options]\n"
          "\n"
          "Modes:\n"
          "  reg        register --users N accounts, write \"id password\" lines to --out\n"
          "  pingpong   --pairs P pairs, A sends ONE_CHATs to B, B answers each (K in flight)\n"
          "  login      --loops C concurrent loops of LOGIN (+ LOGINOUT, or --reconnect)\n"
          "  conns      hold --conns N idle sessions for the duration, then check each receives\n"
          "  group      --members M in one group, --senders S send GROUP_CHATs (K in flight)\n"
          "  offline    store --backlog N chats for a logged-out user, time its login\n"
          "             (connect to the full LOGIN_MSG_ACK), --rounds R times\n"
          "  history    HISTORY_MSG pages (--limit) of the conversation of the first two\n"
          "             accounts (or of --groupid), one in flight, at random depths\n"
          "\n"
          "Server:\n"
          "  --host H          server address (default " DEFAULT_HOST ")\n"
          "  --port P          server port (default 6000)\n"
          "  --host2 H         second address: B side of pairs, odd members/sessions/loops\n"
          "  --port2 P         second port (default: --port)\n"
          "  --sources LIST    comma-separated local addresses to bind, round robin\n"
          "                    (e.g. 127.0.0.1,127.0.0.2: more than 64k connections)\n"
          "\n"
          "Users:\n"
          "  --ids FILE        use the accounts in FILE (\"id password\" per line, from reg)\n"
          "  --skip N          pass over the first N accounts of --ids (several processes)\n"
          "  --synthetic       ids --id-base.. with --password, no registration (relay_ref)\n"
          "  --id-base N       first synthetic id (default 1)\n"
          "  --password PW     password of registered / synthetic users (default " DEFAULT_PASSWORD
          ")\n"
          "  --prefix NAME     registered user names are NAME<number> (default: unique per run)\n"
          "  --out FILE        reg: ids file to write (default " DEFAULT_IDS_OUT ")\n"
          "  (without --ids or --synthetic, the users a mode needs are registered first)\n"
          "\n"
          "Load:\n"
          "  --users N         reg: accounts to create (default 100)\n"
          "  --pairs P         pingpong: pairs (default 100)\n"
          "  --loops C         login: concurrent loops (default 32)\n"
          "  --conns N         conns: sessions to hold (default 1000)\n"
          "  --members M       group: members (default 100)\n"
          "  --senders S       group: members that send (default 4)\n"
          "  --groupid G       group: join group G instead of creating one; history: read\n"
          "                    group G instead of the one-to-one conversation\n"
          "  --backlog N       offline: messages stored before each login (default 1000)\n"
          "  --rounds R        offline: store + login rounds (default 5)\n"
          "  --limit L         history: messages per page (1..100, default 50)\n"
          "  -k, --inflight K  messages in flight per pair / sender, or offline: chats\n"
          "                    being stored at once (1..64, default 1)\n"
          "  -s, --size S      chat text bytes (default 64; never below the 33-byte tag)\n"
          "  -n, --count N     messages per pair / sender, or history: pages, then stop\n"
          "                    (default: duration)\n"
          "  --rate R          group: at most R messages/s over all senders\n"
          "  --seq             send chats with \"seq\" (the server ACKs each one)\n"
          "  --reconnect       login: new connection for every login\n"
          "  --tokens          login: log in with a token (each loop gets one first)\n"
          "  --storm           login --tokens: every loop drops its connection at once and\n"
          "                    reconnects once with its token, then stays (a reconnect\n"
          "                    storm); all_in is its length, -d its limit\n"
          "  --spread T        --storm: each reconnect waits a random 0..T s first, as\n"
          "                    clients' reconnect backoff with jitter does (default 0)\n"
          "  --ws              WebSocket clients: GET /ws on --port (the server's\n"
          "                    websocket.listen), one masked text frame per object\n"
          "  --verify N        conns: sessions checked after the hold (default all)\n"
          "  --heartbeat SEC   conns: HEARTBEAT every SEC while holding (default off)\n"
          "  --ready-file F    conns: create F (holding the session count) once all are up;\n"
          "                    login --storm: once every loop has its token\n"
          "  --go-file F       conns: once all are up, wait for F to exist (at most --timeout)\n"
          "                    before the hold: several processes hold at the same time;\n"
          "                    login --storm: before the storm (several processes at once)\n"
          "  -c, --concurrency N  connects + logins at once (default 256), or registrations\n"
          "                    at once (default 16: more only queue up in the server)\n"
          "  -j, --threads N   threads, each with its own epoll loop (default 1; not group)\n"
          "\n"
          "Time (seconds, fractions allowed):\n"
          "  -d, --duration D  measurement / hold time (default 10)\n"
          "  --timeout T       limit for each setup step: register, log in, join (default 60)\n"
          "  --drain T         wait for messages in flight after the duration (default 5)\n"
          "  --stall T         no progress for T with messages in flight is a stall (default 2)\n"
          "  --deadline T      hard limit for the whole run (default: the sum of the above + 30)\n"
          "\n"
          "Output:\n"
          "  --json            print the summary as one JSON object\n"
          "  -q, --quiet       no progress line or notes on stderr (errors still shown)\n"
          "  --progress        progress line even when stderr is not a terminal\n"
          "  -h, --help        this text\n"
          "\n"
          "One summary line on stdout; latency is one-way, from the send time in the\n"
          "message.  Exit status: 0 no errors, 1 errors, 2 usage.\n",
          f);
}

enum {
    OPT_HOST = 256,
    OPT_PORT,
    OPT_HOST2,
    OPT_PORT2,
    OPT_SOURCES,
    OPT_IDS,
    OPT_SYNTHETIC,
    OPT_ID_BASE,
    OPT_PASSWORD,
    OPT_PREFIX,
    OPT_OUT,
    OPT_USERS,
    OPT_PAIRS,
    OPT_LOOPS,
    OPT_CONNS,
    OPT_MEMBERS,
    OPT_SENDERS,
    OPT_GROUPID,
    OPT_RATE,
    OPT_SEQ,
    OPT_RECONNECT,
    OPT_TOKENS,
    OPT_VERIFY,
    OPT_HEARTBEAT,
    OPT_READY_FILE,
    OPT_TIMEOUT,
    OPT_DRAIN,
    OPT_STALL,
    OPT_DEADLINE,
    OPT_JSON,
    OPT_PROGRESS,
    OPT_WS,
    OPT_SKIP,
    OPT_BACKLOG,
    OPT_ROUNDS,
    OPT_LIMIT,
    OPT_GO_FILE,
    OPT_STORM,
    OPT_SPREAD
};

static const struct option longopts[] = { { "host", required_argument, NULL, OPT_HOST },
                                          { "port", required_argument, NULL, OPT_PORT },
                                          { "host2", required_argument, NULL, OPT_HOST2 },
                                          { "port2", required_argument, NULL, OPT_PORT2 },
                                          { "sources", required_argument, NULL, OPT_SOURCES },
                                          { "ids", required_argument, NULL, OPT_IDS },
                                          { "skip", required_argument, NULL, OPT_SKIP },
                                          { "synthetic", no_argument, NULL, OPT_SYNTHETIC },
                                          { "id-base", required_argument, NULL, OPT_ID_BASE },
                                          { "password", required_argument, NULL, OPT_PASSWORD },
                                          { "prefix", required_argument, NULL, OPT_PREFIX },
                                          { "out", required_argument, NULL, OPT_OUT },
                                          { "users", required_argument, NULL, OPT_USERS },
                                          { "pairs", required_argument, NULL, OPT_PAIRS },
                                          { "loops", required_argument, NULL, OPT_LOOPS },
                                          { "conns", required_argument, NULL, OPT_CONNS },
                                          { "members", required_argument, NULL, OPT_MEMBERS },
                                          { "senders", required_argument, NULL, OPT_SENDERS },
                                          { "groupid", required_argument, NULL, OPT_GROUPID },
                                          { "backlog", required_argument, NULL, OPT_BACKLOG },
                                          { "rounds", required_argument, NULL, OPT_ROUNDS },
                                          { "limit", required_argument, NULL, OPT_LIMIT },
                                          { "inflight", required_argument, NULL, 'k' },
                                          { "size", required_argument, NULL, 's' },
                                          { "count", required_argument, NULL, 'n' },
                                          { "rate", required_argument, NULL, OPT_RATE },
                                          { "seq", no_argument, NULL, OPT_SEQ },
                                          { "reconnect", no_argument, NULL, OPT_RECONNECT },
                                          { "tokens", no_argument, NULL, OPT_TOKENS },
                                          { "storm", no_argument, NULL, OPT_STORM },
                                          { "spread", required_argument, NULL, OPT_SPREAD },
                                          { "verify", required_argument, NULL, OPT_VERIFY },
                                          { "heartbeat", required_argument, NULL, OPT_HEARTBEAT },
                                          { "ready-file", required_argument, NULL, OPT_READY_FILE },
                                          { "go-file", required_argument, NULL, OPT_GO_FILE },
                                          { "concurrency", required_argument, NULL, 'c' },
                                          { "threads", required_argument, NULL, 'j' },
                                          { "duration", required_argument, NULL, 'd' },
                                          { "timeout", required_argument, NULL, OPT_TIMEOUT },
                                          { "drain", required_argument, NULL, OPT_DRAIN },
                                          { "stall", required_argument, NULL, OPT_STALL },
                                          { "deadline", required_argument, NULL, OPT_DEADLINE },
                                          { "json", no_argument, NULL, OPT_JSON },
                                          { "quiet", no_argument, NULL, 'q' },
                                          { "progress", no_argument, NULL, OPT_PROGRESS },
                                          { "ws", no_argument, NULL, OPT_WS },
                                          { "help", no_argument, NULL, 'h' },
                                          { NULL, 0, NULL, 0 } };

static const struct {
    const char *name;
    enum bench_mode mode;
} modes[] = {
    { "reg", MODE_REG },         { "pingpong", MODE_PINGPONG }, { "login", MODE_LOGIN },
    { "conns", MODE_CONNS },     { "group", MODE_GROUP },       { "offline", MODE_OFFLINE },
    { "history", MODE_HISTORY },
};

/* ---- option values ------------------------------------------------------ */

static int bad_value(const char *opt, const char *v, const char *why)
{
    fprintf(stderr, "qchat-bench: %s '%s': %s\n", opt, v, why);
    return -1;
}

static int parse_long_opt(const char *opt, const char *v, long min, long max, long *out)
{
    char *end;

    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end)
        return bad_value(opt, v, "not a number");
    if (n < min || n > max) {
        char why[64];
        snprintf(why, sizeof why, "must be %ld..%ld", min, max);
        return bad_value(opt, v, why);
    }
    *out = n;
    return 0;
}

static int parse_int_opt(const char *opt, const char *v, long min, long max, int *out)
{
    long n;

    if (parse_long_opt(opt, v, min, max, &n) < 0)
        return -1;
    *out = (int)n;
    return 0;
}

static int parse_secs(const char *opt, const char *v, double min, double *out)
{
    char *end;

    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || d != d)
        return bad_value(opt, v, "not a number of seconds");
    if (d < min || d > MAX_SECONDS)
        return bad_value(opt, v, "out of range");
    *out = d;
    return 0;
}

static int resolve(struct endpoint *ep, const char *host, int port)
{
    struct addrinfo hints, *res;
    char service[16];

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(service, sizeof service, "%d", port);
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "qchat-bench: %s: %s\n", host, gai_strerror(rc));
        return -1;
    }
    memcpy(&ep->addr, res->ai_addr, res->ai_addrlen);
    ep->len = res->ai_addrlen;
    freeaddrinfo(res);
    snprintf(ep->name, sizeof ep->name, "%s:%d", host, port);
    return 0;
}

static int parse_sources(struct bench_opts *o, const char *list)
{
    char buf[4096], *save = NULL;

    if (strlen(list) >= sizeof buf)
        return bad_value("--sources", list, "too long");
    strcpy(buf, list);
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (o->nsrc >= BENCH_MAX_SOURCES)
            return bad_value("--sources", list, "too many addresses");
        struct sockaddr_storage *ss = &o->src[o->nsrc];
        memset(ss, 0, sizeof *ss);
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET, t, &s4->sin_addr) == 1) {
            s4->sin_family = AF_INET;
            o->srclen[o->nsrc] = sizeof *s4;
        } else if (inet_pton(AF_INET6, t, &s6->sin6_addr) == 1) {
            s6->sin6_family = AF_INET6;
            o->srclen[o->nsrc] = sizeof *s6;
        } else {
            return bad_value("--sources", t, "not a numeric address");
        }
        o->nsrc++;
    }
    return o->nsrc ? 0 : bad_value("--sources", list, "empty");
}

static void set_defaults(struct bench_opts *o)
{
    memset(o, 0, sizeof *o);
    o->users = DEFAULT_USERS;
    o->pairs = DEFAULT_PAIRS;
    o->loops = DEFAULT_LOOPS;
    o->conns = DEFAULT_CONNS;
    o->members = DEFAULT_MEMBERS;
    o->backlog = DEFAULT_BACKLOG;
    o->rounds = DEFAULT_ROUNDS;
    o->limit = DEFAULT_LIMIT;
    o->senders = DEFAULT_SENDERS;
    o->inflight = 1;
    o->size = DEFAULT_SIZE;
    o->verify = -1;
    o->threads = 1;
    o->duration = DEFAULT_DURATION;
    o->timeout = DEFAULT_TIMEOUT;
    o->drain = DEFAULT_DRAIN;
    o->stall = DEFAULT_STALL;
    o->password = DEFAULT_PASSWORD;
    o->out_file = DEFAULT_IDS_OUT;
    o->id_base = 1;
}

/* Names must be unique per run unless the user picks a prefix. */
static void default_prefix(char *buf, size_t len)
{
    snprintf(buf, len, "qb%lx%lx_", (unsigned long)getpid(), (unsigned long)time(NULL));
}

static int parse_option(struct bench_opts *o, int opt, const char *arg, const char **host,
                        const char **host2, int *port, int *port2)
{
    switch (opt) {
    case OPT_HOST: *host = arg; return 0;
    case OPT_HOST2: *host2 = arg; return 0;
    case OPT_PORT: return parse_int_opt("--port", arg, 1, 65535, port);
    case OPT_PORT2: return parse_int_opt("--port2", arg, 1, 65535, port2);
    case OPT_SOURCES: return parse_sources(o, arg);
    case OPT_IDS: o->ids_file = arg; return 0;
    case OPT_SKIP: return parse_long_opt("--skip", arg, 0, MAX_POPULATION, &o->skip);
    case OPT_SYNTHETIC: o->synthetic = true; return 0;
    case OPT_ID_BASE: return parse_long_opt("--id-base", arg, 0, INT32_MAX, &o->id_base);
    case OPT_PASSWORD:
        if (!*arg || strlen(arg) > QC_PASSWORD_MAX || strchr(arg, '\n'))
            return bad_value("--password", arg, "must be 1..128 bytes, one line");
        o->password = arg;
        return 0;
    case OPT_PREFIX:
        if (!*arg || strlen(arg) > PREFIX_MAX || strpbrk(arg, "\"\\"))
            return bad_value("--prefix", arg, "must be 1..32 bytes without quotes");
        o->prefix = arg;
        return 0;
    case OPT_OUT: o->out_file = arg; return 0;
    case OPT_USERS: return parse_long_opt("--users", arg, 1, MAX_POPULATION, &o->users);
    case OPT_PAIRS: return parse_long_opt("--pairs", arg, 1, MAX_POPULATION / 2, &o->pairs);
    case OPT_LOOPS: return parse_long_opt("--loops", arg, 1, MAX_POPULATION, &o->loops);
    case OPT_CONNS: return parse_long_opt("--conns", arg, 1, MAX_POPULATION, &o->conns);
    case OPT_MEMBERS: return parse_long_opt("--members", arg, 2, MAX_POPULATION, &o->members);
    case OPT_SENDERS: return parse_int_opt("--senders", arg, 1, 1000000, &o->senders);
    case OPT_GROUPID: return parse_long_opt("--groupid", arg, 1, INT32_MAX, &o->groupid);
    case OPT_BACKLOG: return parse_long_opt("--backlog", arg, 0, MAX_COUNT, &o->backlog);
    case OPT_ROUNDS: return parse_long_opt("--rounds", arg, 1, MAX_COUNT, &o->rounds);
    case OPT_LIMIT: return parse_int_opt("--limit", arg, 1, MAX_LIMIT, &o->limit);
    case 'k': return parse_int_opt("--inflight", arg, 1, BENCH_WINDOW, &o->inflight);
    case 's': return parse_int_opt("--size", arg, 0, SIZE_MAX_TEXT, &o->size);
    case 'n': return parse_long_opt("--count", arg, 1, MAX_COUNT, &o->count);
    case OPT_RATE: return parse_secs("--rate", arg, 0, &o->rate);
    case OPT_SEQ: o->seq = true; return 0;
    case OPT_RECONNECT: o->reconnect = true; return 0;
    case OPT_TOKENS: o->tokens = true; return 0;
    case OPT_STORM: o->storm = true; return 0;
    case OPT_SPREAD: return parse_secs("--spread", arg, 0, &o->spread);
    case OPT_VERIFY: return parse_long_opt("--verify", arg, 0, MAX_POPULATION, &o->verify);
    case OPT_HEARTBEAT: return parse_secs("--heartbeat", arg, 0, &o->heartbeat);
    case OPT_READY_FILE: o->ready_file = arg; return 0;
    case OPT_GO_FILE: o->go_file = arg; return 0;
    case 'c': return parse_int_opt("--concurrency", arg, 1, 1000000, &o->concurrency);
    case 'j': return parse_int_opt("--threads", arg, 1, BENCH_MAX_THREADS, &o->threads);
    case 'd': return parse_secs("--duration", arg, 0, &o->duration);
    case OPT_TIMEOUT: return parse_secs("--timeout", arg, 0.1, &o->timeout);
    case OPT_DRAIN: return parse_secs("--drain", arg, 0, &o->drain);
    case OPT_STALL: return parse_secs("--stall", arg, 0.01, &o->stall);
    case OPT_DEADLINE: return parse_secs("--deadline", arg, 1, &o->deadline);
    case OPT_JSON: o->json = true; return 0;
    case 'q': o->quiet = true; return 0;
    case OPT_PROGRESS: o->progress = true; return 0;
    case OPT_WS: o->ws = true; return 0;
    default: return -1;
    }
}

static int parse_args(struct bench_opts *o, int argc, char **argv, char *prefix, size_t plen)
{
    const char *host = DEFAULT_HOST, *host2 = NULL;
    int port = DEFAULT_PORT, port2 = 0, opt;
    size_t i;

    set_defaults(o);
    if (argc < 2 || argv[1][0] == '-') {
        if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
            usage(stdout);
            exit(0);
        }
        usage(stderr);
        return -1;
    }
    for (i = 0; i < sizeof modes / sizeof modes[0]; i++)
        if (!strcmp(argv[1], modes[i].name))
            break;
    if (i == sizeof modes / sizeof modes[0]) {
        fprintf(stderr,
                "qchat-bench: unknown mode '%s' (reg pingpong login conns group offline history)\n",
                argv[1]);
        return -1;
    }
    o->mode = modes[i].mode;
    o->mode_name = modes[i].name;
    optind = 2;
    while ((opt = getopt_long(argc, argv, "hk:s:n:c:j:d:q", longopts, NULL)) != -1) {
        if (opt == 'h') {
            usage(stdout);
            exit(0);
        }
        if (opt == '?' || parse_option(o, opt, optarg, &host, &host2, &port, &port2) < 0)
            return -1;
    }
    if (optind < argc) {
        fprintf(stderr, "qchat-bench: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (o->synthetic && o->ids_file) {
        fprintf(stderr, "qchat-bench: --synthetic and --ids exclude each other\n");
        return -1;
    }
    if (o->storm && (o->mode != MODE_LOGIN || !o->tokens)) {
        fprintf(stderr, "qchat-bench: --storm is for login --tokens\n");
        return -1;
    }
    if (o->spread > 0 && !o->storm) {
        fprintf(stderr, "qchat-bench: --spread needs --storm\n");
        return -1;
    }
    if (o->mode == MODE_GROUP && o->threads > 1) {
        fprintf(stderr, "qchat-bench: group runs on one thread (-j 1)\n");
        return -1;
    }
    if (!o->prefix) {
        default_prefix(prefix, plen);
        o->prefix = prefix;
    }
    if (resolve(&o->ep[0], host, port) < 0)
        return -1;
    o->nep = 1;
    if (host2 || port2) {
        if (resolve(&o->ep[1], host2 ? host2 : host, port2 ? port2 : port) < 0)
            return -1;
        o->nep = 2;
    }
    return 0;
}

/* ---- process setup ------------------------------------------------------ */

static long fds_needed(const struct bench_opts *o)
{
    switch (o->mode) {
    case MODE_REG: return o->concurrency > 0 ? o->concurrency : BENCH_REG_CONCURRENCY;
    case MODE_PINGPONG: return 2 * o->pairs;
    case MODE_LOGIN: return o->loops;
    case MODE_CONNS: return o->conns;
    case MODE_GROUP: return o->members;
    case MODE_OFFLINE: return OFFLINE_CONNS;
    case MODE_HISTORY: return HISTORY_CONNS;
    }
    return 0;
}

/* Soft limit to the hard one; as root, past it when the run needs more. */
static void raise_nofile(const struct bench_opts *o)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)(fds_needed(o) + FD_SLACK);

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    if (need > rl.rlim_max) {
        struct rlimit more = { need, need };
        if (setrlimit(RLIMIT_NOFILE, &more) == 0)
            return;
    }
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (need > rl.rlim_max)
        fprintf(stderr,
                "qchat-bench: warning: %llu descriptors needed, limit %llu "
                "(run several processes, see --skip and --id-base)\n",
                (unsigned long long)need, (unsigned long long)rl.rlim_max);
}

/* First signal: stop measuring; second: stop draining; third: exit now. */
static void on_stop(int sig)
{
    static const char msg[] = "qchat-bench: interrupted\n";
    (void)sig;
    if (bench_interrupted >= 2) {
        if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0)
            _exit(1);
        _exit(1);
    }
    bench_interrupted = bench_interrupted + 1;
}

static void on_deadline(int sig)
{
    static const char msg[] = "qchat-bench: hard deadline reached, exiting\n";
    (void)sig;
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0)
        _exit(1);
    _exit(1);
}

static void set_signals(const struct bench_opts *o)
{
    struct sigaction sa;
    double secs = o->deadline;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_deadline;
    sigaction(SIGALRM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (secs <= 0 && o->mode == MODE_OFFLINE)
        secs = o->timeout * (double)(1 + o->rounds * OFFLINE_STEPS) + DEADLINE_SLACK;
    else if (secs <= 0)
        secs = 2 * o->timeout + o->duration + 2 * o->drain + DEADLINE_SLACK;
    if (secs > MAX_SECONDS)
        secs = MAX_SECONDS;
    alarm((unsigned)(secs + 1));
}

/* ---- threads ------------------------------------------------------------ */

void split_range(uint64_t total, int n, int i, uint32_t *lo, uint32_t *hi)
{
    *lo = (uint32_t)(total * (uint64_t)i / (uint64_t)n);
    *hi = (uint32_t)(total * (uint64_t)(i + 1) / (uint64_t)n);
}

int run_threads(int n, void *arg, size_t argsize, void *(*fn)(void *))
{
    pthread_t tids[BENCH_MAX_THREADS];
    int started = 1;

    for (int i = 1; i < n; i++) {
        int rc = pthread_create(&tids[i], NULL, fn, (char *)arg + (size_t)i * argsize);
        if (rc != 0) {
            fprintf(stderr, "qchat-bench: pthread_create: %s\n", strerror(rc));
            exit(1); /* the others would wait at a barrier forever */
        }
        started++;
    }
    fn(arg);
    for (int i = 1; i < started; i++)
        pthread_join(tids[i], NULL);
    return 0;
}

int main(int argc, char **argv)
{
    struct bench_opts o;
    struct result r;
    char prefix[PREFIX_MAX + 1];
    int rc = -1;

    if (parse_args(&o, argc, argv, prefix, sizeof prefix) < 0)
        return EXIT_USAGE;
    raise_nofile(&o);
    set_signals(&o);
    result_init(&r, o.mode_name);
    switch (o.mode) {
    case MODE_REG: rc = mode_reg(&o, &r); break;
    case MODE_PINGPONG: rc = mode_pingpong(&o, &r); break;
    case MODE_LOGIN: rc = mode_login(&o, &r); break;
    case MODE_CONNS: rc = mode_conns(&o, &r); break;
    case MODE_GROUP: rc = mode_group(&o, &r); break;
    case MODE_OFFLINE: rc = mode_offline(&o, &r); break;
    case MODE_HISTORY: rc = mode_history(&o, &r); break;
    }
    if (rc < 0)
        return 1;
    result_print(&r, o.json);
    return result_exit_code(&r);
}
