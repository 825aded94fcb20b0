/*
 * test_faults.c - qchatd under failure: a worker killed with SIGKILL while
 * users chat (the master respawns it, its users can log in again, nothing
 * stays online, and every acknowledged chat is delivered or stored), a
 * reader that stops reading (disconnected at server.max_output_bytes, what
 * it missed is stored offline, in order), and a reader that is merely slow
 * (keeps its order, is not disconnected).  The server runs with a small
 * output cap so that the stopped reader is cut off quickly.
 */
#include "harness.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#define OUTPUT_CAP    65536 /* server.max_output_bytes for this file */
#define KILL_USERS    40
#define KILL_ROUNDS   12
#define KILL_AT_ROUND 4
#define RESPAWN_MS    10000
#define CTL_MAX_USERS 8192

#define STOP_TEXT_BYTES  4000 /* per chat to the stopped reader */
#define STOP_WINDOW      64   /* chats in flight: 256 KB, far over the cap */
#define STOP_MAX_MSGS    6000 /* bound: ~24 MB */
#define STOP_EXTRA_MSGS  20   /* sent after the disconnect: stored offline */
#define STOP_CHECK_EVERY 32   /* control socket polls */
#define SMALL_RCVBUF     4096

#define SLOW_MSGS        1000
#define SLOW_TEXT_BYTES  1000
#define SLOW_READ_BYTES  1024 /* per read(2) of the slow reader */
#define SLOW_PAUSE_US    1000 /* between its reads */
#define SLOW_DEADLINE_MS 60000

static int32_t ctl_ids[CTL_MAX_USERS];
static int ctl_workers[CTL_MAX_USERS];
static pid_t master_at_start;

static int worker_of_snapshot(int n, int32_t id)
{
    for (int j = 0; j < n; j++)
        if (ctl_ids[j] == id)
            return ctl_workers[j];
    return -1;
}

/* ---- kill -9 of a worker ------------------------------------------------ */

struct kill_state {
    struct h_user users[KILL_USERS];
    struct qclient *conns[KILL_USERS];
    int worker[KILL_USERS];
    bool alive[KILL_USERS];
    int64_t seq[KILL_USERS][KILL_ROUNDS];
    bool sent[KILL_USERS][KILL_ROUNDS];
    bool acked[KILL_USERS][KILL_ROUNDS];
    int live[KILL_USERS][KILL_ROUNDS];    /* copies received live */
    int offline[KILL_USERS][KILL_ROUNDS]; /* copies found offline */
    int victim;                           /* worker index killed */
};

/* Note a chat "k FROM ROUND" seen by user `to`, live or offline. */
static void note_chat(struct kill_state *ks, int to, struct json_object *m, bool live)
{
    int from, round;
    const char *text = h_str(m, "msg");
    H_CHECK(sscanf(text, "k %d %d", &from, &round) == 2 && from >= 0 && from < KILL_USERS &&
                round >= 0 && round < KILL_ROUNDS,
            "unexpected chat %s", h_json(m));
    H_CHECK((from + 1) % KILL_USERS == to && h_int(m, "id") == ks->users[from].id,
            "user %d got a chat meant for someone else: %s", to, h_json(m));
    (live ? ks->live : ks->offline)[from][round]++;
}

/* Read c until the ACK of seq (true) or the end of the stream (false). */
static bool read_until_ack(struct kill_state *ks, int i, int64_t seq, int round)
{
    for (;;) {
        struct json_object *o = qclient_recv(ks->conns[i], H_REPLY_MS);
        if (o == NULL) {
            if (qclient_eof(ks->conns[i]))
                return false;
            H_FAIL("user %d (worker %d): no ACK for round %d within %d ms", i, ks->worker[i], round,
                   H_REPLY_MS);
        }
        int64_t msgid = h_int(o, "msgid");
        if (msgid == QC_ONE_CHAT_MSG) {
            note_chat(ks, i, o, true);
        } else if (msgid == QC_ACK_MSG && h_has(o, "seq") && h_int(o, "seq") == seq) {
            int64_t err = h_int(o, "errno");
            H_CHECK(err == 0,
                    "user %d round %d: chat refused while a worker died: %s "
                    "(the sender's own worker is alive: it must store the chat)",
                    i, round, h_json(o));
            ks->acked[i][round] = true;
            json_object_put(o);
            return true;
        } else {
            H_FAIL("user %d: unexpected %s", i, h_json(o));
        }
        json_object_put(o);
    }
}

struct respawn_wait {
    int index;
    pid_t old;
};

static bool worker_respawned(void *arg)
{
    struct respawn_wait *w = arg;
    pid_t now = server_worker_pid(w->index);
    return now > 0 && now != w->old;
}

struct gone_wait {
    struct kill_state *ks;
    int still;
};

static bool dead_users_gone(void *arg)
{
    struct gone_wait *g = arg;
    int n = h_ctl_users(ctl_ids, ctl_workers, CTL_MAX_USERS);
    if (n < 0)
        return false;
    g->still = 0;
    for (int i = 0; i < KILL_USERS; i++)
        if (!g->ks->alive[i] && worker_of_snapshot(n, g->ks->users[i].id) >= 0)
            g->still++;
    return g->still == 0;
}

static void test_kill9_worker_while_chatting(void **state)
{
    static struct kill_state ks;
    memset(&ks, 0, sizeof(ks));

    for (int i = 0; i < KILL_USERS; i++)
        ks.conns[i] = h_connect();
    for (int i = 0; i < KILL_USERS; i++) {
        h_register(ks.conns[i], &ks.users[i], "k9");
        struct json_object *ack = NULL;
        int rc = qclient_login(ks.conns[i], ks.users[i].id, ks.users[i].password, false, &ack,
                               H_REPLY_MS);
        H_CHECK(rc == 0, "LOGIN %d: %d %s", i, rc, h_json(ack));
        json_object_put(ack);
        ks.alive[i] = true;
    }
    int n = h_ctl_users(ctl_ids, ctl_workers, CTL_MAX_USERS);
    H_CHECK(n >= 0, "control socket users");
    int per_worker[64] = { 0 };
    for (int i = 0; i < KILL_USERS; i++) {
        ks.worker[i] = worker_of_snapshot(n, ks.users[i].id);
        H_CHECK(ks.worker[i] >= 0 && ks.worker[i] < 64, "user %d not listed online", i);
        per_worker[ks.worker[i]]++;
    }
    ks.victim = 0;
    for (int w = 1; w < 64; w++)
        if (per_worker[w] > per_worker[ks.victim])
            ks.victim = w;
    H_CHECK(per_worker[ks.victim] < KILL_USERS,
            "all %d users on worker %d: nobody would be left chatting", KILL_USERS, ks.victim);
    pid_t victim_pid = server_worker_pid(ks.victim);
    H_CHECK(victim_pid > 0, "no process titled \"qchatd: worker %d\"", ks.victim);
    print_message("killing worker %d (pid %d) holding %d of %d users\n", ks.victim, (int)victim_pid,
                  per_worker[ks.victim], KILL_USERS);

    for (int r = 0; r < KILL_ROUNDS; r++) {
        for (int i = 0; i < KILL_USERS; i++) {
            if (!ks.alive[i])
                continue;
            int to = (i + 1) % KILL_USERS;
            ks.seq[i][r] = h_next_seq();
            h_send(ks.conns[i], "{\"msgid\":5,\"toid\":%d,\"msg\":\"k %d %d\",\"seq\":%lld}",
                   ks.users[to].id, i, r, (long long)ks.seq[i][r]);
            ks.sent[i][r] = true;
        }
        if (r == KILL_AT_ROUND)
            H_CHECK(kill(victim_pid, SIGKILL) == 0, "kill -9 %d: %s", (int)victim_pid,
                    strerror(errno));
        for (int i = 0; i < KILL_USERS; i++) {
            if (!ks.alive[i])
                continue;
            if (!read_until_ack(&ks, i, ks.seq[i][r], r)) {
                H_CHECK(r >= KILL_AT_ROUND && ks.worker[i] == ks.victim,
                        "user %d on worker %d (not the killed %d) lost its connection in round %d",
                        i, ks.worker[i], ks.victim, r);
                ks.alive[i] = false;
            }
        }
        if (r == KILL_AT_ROUND) {
            struct respawn_wait rw = { ks.victim, victim_pid };
            int64_t t0 = h_now_ms();
            H_CHECK(h_wait_for(worker_respawned, &rw, RESPAWN_MS),
                    "worker %d (pid %d) killed: no new \"qchatd: worker %d\" within %d ms",
                    ks.victim, (int)victim_pid, ks.victim, RESPAWN_MS);
            print_message("worker %d respawned as pid %d after %lld ms\n", ks.victim,
                          (int)server_worker_pid(ks.victim), (long long)(h_now_ms() - t0));
            for (int i = 0; i < KILL_USERS; i++)
                if (ks.worker[i] == ks.victim && ks.alive[i]) {
                    /* its socket died with the worker: reading must end */
                    struct json_object *o;
                    while ((o = qclient_recv(ks.conns[i], H_REPLY_MS)) != NULL) {
                        if (h_int(o, "msgid") == QC_ONE_CHAT_MSG)
                            note_chat(&ks, i, o, true);
                        json_object_put(o);
                    }
                    H_CHECK(qclient_eof(ks.conns[i]),
                            "user %d of the killed worker: "
                            "connection still open",
                            i);
                    ks.alive[i] = false;
                }
            struct gone_wait gw = { &ks, 0 };
            H_CHECK(h_wait_for(dead_users_gone, &gw, H_REPLY_MS),
                    "%d user(s) of the killed worker still listed online %d ms after the kill",
                    gw.still, H_REPLY_MS);
        }
    }
    H_CHECK(server_master_pid() == master_at_start && server_running(), "the master survived");

    /* survivors: read what is still queued (everything acked is in the socket) */
    for (int i = 0; i < KILL_USERS; i++) {
        if (!ks.alive[i])
            continue;
        int64_t seq = h_next_seq();
        h_send(ks.conns[i], "{\"msgid\":14,\"seq\":%lld}", (long long)seq);
        for (;;) {
            struct json_object *o = h_next(ks.conns[i], "survivor drain");
            bool done = h_int(o, "msgid") == QC_ACK_MSG && h_int(o, "seq") == seq;
            if (!done)
                note_chat(&ks, i, o, true);
            json_object_put(o);
            if (done)
                break;
        }
        h_close(ks.conns[i]);
        ks.conns[i] = NULL;
    }
    for (int i = 0; i < KILL_USERS; i++) {
        if (ks.conns[i] != NULL) {
            h_close(ks.conns[i]);
            ks.conns[i] = NULL;
        }
        H_CHECK(h_wait_online(ks.users[i].id, false, H_REPLY_MS), "user %d offline after close", i);
    }
    /* everyone logs in again (the killed worker's users included): collect offline */
    for (int i = 0; i < KILL_USERS; i++) {
        struct json_object *ack = NULL;
        ks.conns[i] = h_connect();
        int rc = qclient_login(ks.conns[i], ks.users[i].id, ks.users[i].password, false, &ack,
                               H_REPLY_MS);
        H_CHECK(rc == 0, "user %d (worker %d) logs in again after the kill: rc %d %s", i,
                ks.worker[i], rc, h_json(ack));
        H_CHECK(!h_has(ack, "offlinedropped"), "user %d: offline messages dropped: %s", i,
                h_json(ack));
        size_t k = h_arr_len_opt(ack, "offlinemsg");
        for (size_t j = 0; j < k; j++) {
            struct json_object *m = h_parse_item(h_arr(ack, "offlinemsg"), j, "offlinemsg");
            note_chat(&ks, i, m, false);
            json_object_put(m);
        }
        json_object_put(ack);
    }

    int sent = 0, acked = 0, live = 0, offline = 0, lost = 0, dup = 0, unacked_delivered = 0;
    for (int i = 0; i < KILL_USERS; i++) {
        for (int r = 0; r < KILL_ROUNDS; r++) {
            if (!ks.sent[i][r])
                continue;
            int copies = ks.live[i][r] + ks.offline[i][r];
            sent++;
            live += ks.live[i][r] > 0;
            offline += ks.live[i][r] == 0 && ks.offline[i][r] > 0;
            dup += copies > 1;
            if (!ks.acked[i][r]) {
                unacked_delivered += copies > 0;
                continue;
            }
            acked++;
            if (copies == 0) {
                lost++;
                print_error("LOST: chat \"k %d %d\" from user %d (worker %d) to user %d "
                            "(worker %d) was acknowledged but never delivered nor stored\n",
                            i, r, ks.users[i].id, ks.worker[i], ks.users[(i + 1) % KILL_USERS].id,
                            ks.worker[(i + 1) % KILL_USERS]);
            }
            if (copies > 1)
                print_message("duplicate: \"k %d %d\" seen %d times (live %d, offline %d)\n", i, r,
                              copies, ks.live[i][r], ks.offline[i][r]);
        }
    }
    print_message("kill -9: sent %d, acked %d, delivered live %d, offline %d, lost %d, "
                  "duplicates %d, unacked but delivered %d\n",
                  sent, acked, live, offline, lost, dup, unacked_delivered);
    H_CHECK(lost == 0, "%d acknowledged chat(s) lost when worker %d was killed", lost, ks.victim);

    /* the killed worker's users are reachable again */
    int a = -1, b = -1;
    for (int i = 0; i < KILL_USERS && (a < 0 || b < 0); i++) {
        if (ks.worker[i] == ks.victim && b < 0)
            b = i;
        else if (ks.worker[i] != ks.victim && a < 0)
            a = i;
    }
    int64_t seq = h_next_seq();
    h_send(ks.conns[a], "{\"msgid\":5,\"toid\":%d,\"msg\":\"welcome back\",\"seq\":%lld}",
           ks.users[b].id, (long long)seq);
    json_object_put(h_expect_ack(ks.conns[a], QC_ONE_CHAT_MSG, seq, 0, "chat after respawn"));
    struct json_object *m =
        h_expect(ks.conns[b], QC_ONE_CHAT_MSG, "a user of the killed worker gets chats again");
    H_CHECK(strcmp(h_str(m, "msg"), "welcome back") == 0, "got %s", h_json(m));
    json_object_put(m);
    for (int i = 0; i < KILL_USERS; i++)
        h_close(ks.conns[i]);

    pid_t pids[16];
    H_CHECK(server_worker_pids(pids, 16) == H_WORKERS, "%d workers after the respawn", H_WORKERS);
    struct json_object *st = h_ctl("{\"cmd\":\"status\"}");
    H_CHECK(st != NULL, "control socket status");
    struct json_object *ws = h_arr(st, "workers");
    bool restart_counted = false;
    for (size_t i = 0; i < json_object_array_length(ws); i++) {
        struct json_object *w = json_object_array_get_idx(ws, i);
        if (h_int(w, "index") == ks.victim)
            restart_counted =
                h_int(w, "restarts") >= 1 && h_int(w, "pid") == server_worker_pid(ks.victim);
    }
    H_CHECK(restart_counted, "status must show worker %d's restart and new pid: %s", ks.victim,
            h_json(st));
    json_object_put(st);
}

/* ---- a reader that stops reading -------------------------------------- */

/* Log in on a raw connection (no client library: we control its reads). */
static void raw_login(struct h_raw *r, const struct h_user *u)
{
    char req[256];
    int n = snprintf(req, sizeof(req), "{\"msgid\":1,\"id\":%d,\"password\":%s}", u->id,
                     h_q(u->password));
    H_CHECK(h_raw_send(r, req, (size_t)n) == 0, "send LOGIN");
    struct json_object *ack = h_raw_recv(r, H_REPLY_MS);
    H_CHECK(ack != NULL && h_int(ack, "msgid") == QC_LOGIN_MSG_ACK && h_int(ack, "errno") == 0,
            "raw LOGIN of %d: %s", u->id, h_json(ack));
    json_object_put(ack);
}

static const char *numbered_text(int n, size_t bytes)
{
    static char text[STOP_TEXT_BYTES + 1];
    int len = snprintf(text, sizeof(text), "r %d ", n);
    memset(text + len, 'x', bytes - (size_t)len);
    text[bytes] = '\0';
    return text;
}

static int text_number(struct json_object *m)
{
    int n = -1;
    const char *t = h_str(m, "msg");
    H_CHECK(sscanf(t, "r %d ", &n) == 1, "unexpected text in %.100s", h_json(m));
    return n;
}

static void test_stopped_reader_disconnected_then_offline(void **state)
{
    struct h_user s, rd;
    struct qclient *cs = h_new_user(&s, "stops");
    h_new_offline_user(&rd, "stopr");
    struct h_raw r;
    h_raw_connect(&r, SMALL_RCVBUF);
    raw_login(&r, &rd);

    static int64_t seqs[STOP_MAX_MSGS];
    static bool acked[STOP_MAX_MSGS];
    int sent = 0, outstanding = 0, stop_at = STOP_MAX_MSGS, disconnected_after = -1;
    memset(acked, 0, sizeof(acked));
    while (sent < stop_at || outstanding > 0) {
        if (sent < stop_at && outstanding < STOP_WINDOW) {
            seqs[sent] = h_next_seq();
            h_send(cs, "{\"msgid\":5,\"toid\":%d,\"msg\":\"%s\",\"seq\":%lld}", rd.id,
                   numbered_text(sent, STOP_TEXT_BYTES), (long long)seqs[sent]);
            sent++;
            outstanding++;
            if (disconnected_after < 0 && sent % STOP_CHECK_EVERY == 0 && h_worker_of(rd.id) < 0) {
                disconnected_after = sent;
                stop_at =
                    sent + STOP_EXTRA_MSGS < STOP_MAX_MSGS ? sent + STOP_EXTRA_MSGS : STOP_MAX_MSGS;
            }
            continue;
        }
        struct json_object *o = qclient_recv(cs, H_REPLY_MS * 2);
        if (o == NULL)
            H_FAIL("sender: no ACK within %d ms with %d chats in flight to a reader that "
                   "stopped reading (%d sent, %s)",
                   H_REPLY_MS * 2, outstanding, sent,
                   disconnected_after < 0 ? "reader still online" : "reader disconnected");
        H_CHECK(h_int(o, "msgid") == QC_ACK_MSG && h_int(o, "errno") == 0,
                "sender: want ACK errno 0, got %s", h_json(o));
        int64_t seq = h_int(o, "seq");
        int idx = (int)(seq - seqs[0]);
        H_CHECK(idx >= 0 && idx < sent && seqs[idx] == seq && !acked[idx], "stray ACK %s",
                h_json(o));
        acked[idx] = true;
        outstanding--;
        json_object_put(o);
    }
    H_CHECK(disconnected_after > 0,
            "the server never disconnected a reader that stopped "
            "reading, after %d chats of %d bytes (server.max_output_bytes=%d)",
            sent, STOP_TEXT_BYTES, OUTPUT_CAP);

    /* what reached the reader's socket: complete lines, then EOF */
    static int live[STOP_MAX_MSGS];
    int nlive = 0;
    struct json_object *o;
    while ((o = h_raw_recv(&r, H_REPLY_MS)) != NULL) {
        H_CHECK(h_int(o, "msgid") == QC_ONE_CHAT_MSG, "reader got %s", h_json(o));
        H_CHECK(nlive < STOP_MAX_MSGS, "too many");
        live[nlive++] = text_number(o);
        json_object_put(o);
    }
    H_CHECK(r.eof || r.error, "the server must close the stopped reader's connection");
    print_message("stopped reader: connection ended by %s\n", r.eof ? "FIN" : strerror(r.error));
    h_raw_close(&r);

    struct json_object *ack = NULL;
    struct qclient *cr = h_login(&rd, &ack);
    H_CHECK(!h_has(ack, "offlinedropped"), "offline messages dropped: %s", h_json(ack));
    size_t noff = h_arr_len_opt(ack, "offlinemsg");
    static int seen[STOP_MAX_MSGS];
    memset(seen, 0, sizeof(seen));
    int order_errors = 0, prev = -1, dup = 0, lost = 0;
    for (int i = 0; i < nlive; i++) {
        if (live[i] <= prev)
            order_errors++;
        prev = live[i];
        seen[live[i]]++;
    }
    int first_offline = -1;
    for (size_t j = 0; j < noff; j++) {
        struct json_object *m = h_parse_item(h_arr(ack, "offlinemsg"), j, "offlinemsg");
        int k = text_number(m);
        json_object_put(m);
        if (first_offline < 0)
            first_offline = k;
        if (k <= prev && seen[k] == 0)
            order_errors++;
        if (k > prev)
            prev = k;
        seen[k]++;
    }
    json_object_put(ack);
    for (int i = 0; i < sent; i++) {
        dup += seen[i] > 1;
        if (acked[i] && seen[i] == 0) {
            lost++;
            if (lost <= 10)
                print_error("LOST: chat %d (acked) neither received nor stored\n", i);
        }
    }
    print_message("stopped reader: disconnected after %d chats, sent %d (%d KB), received live "
                  "%d, offline %zu (first %d), lost %d, duplicates %d, out of order %d\n",
                  disconnected_after, sent, sent * STOP_TEXT_BYTES / 1024, nlive, noff,
                  first_offline, lost, dup, order_errors);
    H_CHECK(lost == 0, "%d acknowledged chat(s) to the stopped reader lost", lost);
    H_CHECK(order_errors == 0, "received + offline must be in send order (%d out of order)",
            order_errors);
    H_CHECK(noff > 0, "the chats sent after the disconnect must be stored offline");
    if (dup > 0)
        print_message("NOTE: %d chat(s) both received and stored (at-least-once)\n", dup);
    h_close(cr);
}

/* ---- a reader that is merely slow -------------------------------------- */

struct slow_reader {
    int fd;
    volatile bool stop; /* set by the sender when it gives up */
    int expected;
    int received;
    int out_of_order;
    int bad_lines;
    bool eof;
    int error;
};

/* Reader thread: small reads with pauses; no cmocka calls here. */
static void *slow_reader_main(void *arg)
{
    struct slow_reader *sr = arg;
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    int64_t deadline = h_now_ms() + SLOW_DEADLINE_MS;
    int prev = -1;
    while (buf != NULL && !sr->stop && sr->received < sr->expected && h_now_ms() < deadline) {
        struct pollfd pf = { .fd = sr->fd, .events = POLLIN };
        if (poll(&pf, 1, 100) <= 0)
            continue;
        if (cap - len < SLOW_READ_BYTES) {
            sr->bad_lines++; /* a line longer than a megabyte */
            break;
        }
        ssize_t n = recv(sr->fd, buf + len, SLOW_READ_BYTES, 0);
        if (n == 0) {
            sr->eof = true;
            break;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            sr->error = errno;
            break;
        }
        len += (size_t)n;
        char *start = buf, *nl;
        while ((nl = memchr(start, '\n', len - (size_t)(start - buf))) != NULL) {
            *nl = '\0';
            struct json_object *o = json_tokener_parse(start);
            struct json_object *msg = o ? json_object_object_get(o, "msg") : NULL;
            int k = -1;
            if (msg == NULL || sscanf(json_object_get_string(msg), "r %d ", &k) != 1)
                sr->bad_lines++;
            else {
                if (k != prev + 1)
                    sr->out_of_order++;
                prev = k;
                sr->received++;
            }
            json_object_put(o);
            start = nl + 1;
        }
        len -= (size_t)(start - buf);
        memmove(buf, start, len);
        usleep(SLOW_PAUSE_US);
    }
    free(buf);
    return NULL;
}

static void test_slow_reader_keeps_order(void **state)
{
    struct h_user s, rd;
    struct qclient *cs = h_new_user(&s, "slows");
    h_new_offline_user(&rd, "slowr");
    struct h_raw r;
    h_raw_connect(&r, SMALL_RCVBUF);
    raw_login(&r, &rd);

    struct slow_reader sr = { .fd = r.fd, .expected = SLOW_MSGS };
    pthread_t th;
    H_CHECK(pthread_create(&th, NULL, slow_reader_main, &sr) == 0, "pthread_create");
    int failed_at = -1, rc = 0;
    struct json_object *bad = NULL;
    for (int i = 0; i < SLOW_MSGS; i++) {
        /* one chat in flight: the ACK says it reached the reader's socket */
        struct json_object *ack = NULL;
        rc = qclient_chat(cs, rd.id, numbered_text(i, SLOW_TEXT_BYTES), h_next_seq(), &ack,
                          H_REPLY_MS * 2);
        if (rc != 0) {
            failed_at = i;
            bad = ack;
            break;
        }
        json_object_put(ack);
    }
    if (failed_at >= 0)
        sr.stop = true;
    pthread_join(th, NULL);
    bool still_online = h_worker_of(rd.id) >= 0;
    print_message("slow reader: received %d of %d in order (%d out of order), %s\n", sr.received,
                  SLOW_MSGS, sr.out_of_order, still_online ? "still online" : "disconnected");
    H_CHECK(failed_at < 0, "sender: chat %d to a slow reader failed: rc %d %s", failed_at, rc,
            h_json(bad));
    H_CHECK(sr.received == SLOW_MSGS && sr.out_of_order == 0 && sr.bad_lines == 0,
            "slow reader: want all %d chats in order, got %d (%d out of order, %d bad lines, %s)",
            SLOW_MSGS, sr.received, sr.out_of_order, sr.bad_lines,
            sr.eof     ? "disconnected"
            : sr.error ? strerror(sr.error)
                       : "no close");
    H_CHECK(still_online && !sr.eof, "a reader that keeps reading must not be disconnected");
    h_raw_close(&r);
}

static int group_setup(void **state)
{
    /* floods are the point here: lift the per-connection request rate */
    static char cap[64];
    snprintf(cap, sizeof(cap), "server.max_output_bytes=%d", OUTPUT_CAP);
    const char *const opts[] = { cap, "security.request_rate=1000000",
                                 "security.request_burst=1000000", NULL };
    if (h_group_setup_with(opts) != 0)
        return -1;
    master_at_start = server_master_pid();
    return 0;
}

static void test_server_stops_cleanly(void **state)
{
    h_stop_and_check_clean();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        H_TEST(test_slow_reader_keeps_order),
        H_TEST(test_stopped_reader_disconnected_then_offline),
        H_TEST(test_kill9_worker_while_chatting),
        H_TEST(test_server_stops_cleanly),
    };
    h_apply_filter();
    return cmocka_run_group_tests_name("faults", tests, group_setup, h_group_teardown);
}
