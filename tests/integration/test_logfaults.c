/*
 * test_logfaults.c - the conversation log under failure (issue 11): a
 * worker killed with SIGKILL during a stream of chats with seq, and (with
 * QCHAT_TEST_STORAGE=mysql) the private MariaDB stopped with SIGSTOP
 * during appends.  Afterwards the log itself is read (the SQLite file with
 * sqlite3(1), or the test database with mysql(1)): every ACKed chat is in
 * it exactly once, and every conversation's cseqs are 1..N with no gap.
 * While MariaDB is stopped, two online users of the node keep chatting live
 * (single node: the cseq comes from the shared sequencer, not the database);
 * their ACKs come once it answers again.
 */
#include "harness.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FK_PAIRS      24 /* senders, each to its own offline recipient */
#define FK_ROUNDS     40 /* chats per sender */
#define FK_WINDOW     8  /* chats pipelined before their ACKs are read */
#define FK_KILL_ROUND 12 /* the busiest worker dies after this round */
#define FK_RESPAWN_MS 10000
#define FK_MAX_ROWS   8192 /* rows read back from the log */
#define STOP_CHATS    20   /* chats sent while MariaDB is stopped */
#define STOP_LIVE_MS  2000 /* each must arrive live within this */
#define CTL_MAX_USERS 1024

/* One row of the log: (conv, cseq, mid). */
struct row {
    long long conv, cseq, mid;
};

/* ---- reading the log back ------------------------------------------------ */

/* Every row of Message, by conv and cseq; returns how many. */
static size_t read_log(struct row *rows, size_t max)
{
    char cmd[PATH_MAX * 3];
    const char *sql = "SELECT conv, cseq, mid FROM Message ORDER BY conv, cseq";
    if (h_storage_is_mysql()) {
        char db[64];
        h_mysql_database(h_srv.db_path, db, sizeof db);
        snprintf(cmd, sizeof cmd, "mysql -N -B -S '%s' -u '%s' -p\"$(cat '%s')\" '%s' -e '%s'",
                 getenv("QCHAT_MYSQL_SOCKET"), getenv("QCHAT_MYSQL_USER"),
                 getenv("QCHAT_MYSQL_PASSWORD_FILE"), db, sql);
    } else {
        snprintf(cmd, sizeof cmd, "sqlite3 -separator ' ' '%s' '%s'", h_srv.db_path, sql);
    }
    FILE *f = popen(cmd, "r");
    H_CHECK(f != NULL, "popen %s: %s", cmd, strerror(errno));
    size_t n = 0;
    while (n < max && fscanf(f, "%lld %lld %lld", &rows[n].conv, &rows[n].cseq, &rows[n].mid) == 3)
        n++;
    H_CHECK(pclose(f) == 0, "reading the log failed: %s", cmd);
    return n;
}

/* Each conversation's cseqs are 1, 2, ... N; each mid appears once. */
static void check_no_gap_no_repeat(const struct row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bool first = i == 0 || rows[i].conv != rows[i - 1].conv;
        long long want = first ? 1 : rows[i - 1].cseq + 1;
        H_CHECK(rows[i].cseq == want, "conv %lld: cseq %lld follows %lld (a gap or a repeat)",
                rows[i].conv, rows[i].cseq, first ? 0LL : rows[i - 1].cseq);
        for (size_t j = 0; j < i; j++)
            H_CHECK(rows[j].mid != rows[i].mid, "mid %lld stored twice (conv %lld cseq %lld, %lld)",
                    rows[i].mid, rows[i].conv, rows[j].cseq, rows[i].cseq);
    }
}

static size_t count_mid(const struct row *rows, size_t n, long long mid)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += rows[i].mid == mid;
    return k;
}

/* ---- kill -9 during a stream of chats ------------------------------------ */

struct fk_state {
    struct h_user from[FK_PAIRS], to[FK_PAIRS];
    struct qclient *c[FK_PAIRS];
    bool alive[FK_PAIRS];
    int worker[FK_PAIRS];
    long long acked_mid[FK_PAIRS][FK_ROUNDS];
    long long acked_cseq[FK_PAIRS][FK_ROUNDS];
    int nacked;
};

static int busiest_worker(struct fk_state *s)
{
    static int32_t ids[CTL_MAX_USERS];
    static int workers[CTL_MAX_USERS];
    int n = h_ctl_users(ids, workers, CTL_MAX_USERS), per[64] = { 0 }, best = 0;
    H_CHECK(n >= 0, "control socket users");
    for (int i = 0; i < FK_PAIRS; i++) {
        s->worker[i] = -1;
        for (int j = 0; j < n; j++)
            if (ids[j] == s->from[i].id)
                s->worker[i] = workers[j];
        H_CHECK(s->worker[i] >= 0 && s->worker[i] < 64, "sender %d not online", i);
        per[s->worker[i]]++;
    }
    for (int w = 1; w < 64; w++)
        if (per[w] > per[best])
            best = w;
    H_CHECK(per[best] < FK_PAIRS, "every sender on worker %d: nobody would survive", best);
    return best;
}

/* Read sender i's ACKs for rounds [r0, r1); false when its connection ended. */
static bool read_acks(struct fk_state *s, int i, int64_t seq0, int r0, int r1)
{
    for (int r = r0; r < r1;) {
        struct json_object *o = qclient_recv(s->c[i], H_REPLY_MS);
        if (o == NULL) {
            H_CHECK(qclient_eof(s->c[i]), "sender %d: no ACK for round %d within %d ms", i, r,
                    H_REPLY_MS);
            return false;
        }
        H_CHECK(h_int(o, "msgid") == QC_ACK_MSG && h_int(o, "seq") == seq0 + (r - r0),
                "sender %d: want the ACK of round %d, got %s", i, r, h_json(o));
        H_CHECK(h_int(o, "errno") == 0 && h_has(o, "cseq") && h_has(o, "mid"),
                "sender %d round %d: ACK with errno 0, cseq and mid: %s", i, r, h_json(o));
        s->acked_mid[i][r] = h_int(o, "mid");
        s->acked_cseq[i][r] = h_int(o, "cseq");
        s->nacked++;
        json_object_put(o);
        r++;
    }
    return true;
}

static bool worker_replaced(void *arg)
{
    pid_t *old = arg;
    pid_t now = server_worker_pid((int)old[1]);
    return now > 0 && now != old[0];
}

static void test_kill9_during_appends(void **state)
{
    (void)state;
    static struct fk_state s;
    memset(&s, 0, sizeof s);
    for (int i = 0; i < FK_PAIRS; i++) {
        h_new_offline_user(&s.to[i], "fk_to");
        s.c[i] = h_new_user(&s.from[i], "fk_from");
        s.alive[i] = true;
    }
    int victim = busiest_worker(&s);
    pid_t victim_pid = server_worker_pid(victim);
    H_CHECK(victim_pid > 0, "no worker %d", victim);

    bool killed = false;
    for (int r0 = 0; r0 < FK_ROUNDS; r0 += FK_WINDOW) {
        int r1 = r0 + FK_WINDOW < FK_ROUNDS ? r0 + FK_WINDOW : FK_ROUNDS;
        int64_t seq0[FK_PAIRS];
        for (int i = 0; i < FK_PAIRS; i++) {
            if (!s.alive[i])
                continue;
            seq0[i] = 0;
            for (int r = r0; r < r1 && s.alive[i]; r++) {
                int64_t seq = h_next_seq();
                if (r == r0)
                    seq0[i] = seq;
                if (qclient_sendf(s.c[i],
                                  "{\"msgid\":5,\"toid\":%d,\"msg\":\"fk %d %d\",\"seq\":%lld}",
                                  s.to[i].id, i, r, (long long)seq) == 0)
                    continue;
                /* A sender of the killed worker whose last ACKs all came before the kill. */
                H_CHECK(killed && s.worker[i] == victim,
                        "sender %d on worker %d could not send round %d: %s", i, s.worker[i], r,
                        strerror(errno));
                s.alive[i] = false;
            }
        }
        if (r0 <= FK_KILL_ROUND && FK_KILL_ROUND < r1) {
            H_CHECK(kill(victim_pid, SIGKILL) == 0, "kill -9 worker %d: %s", victim,
                    strerror(errno));
            killed = true;
        }
        for (int i = 0; i < FK_PAIRS; i++)
            if (s.alive[i] && !read_acks(&s, i, seq0[i], r0, r1)) {
                H_CHECK(s.worker[i] == victim, "sender %d on worker %d (alive) lost its connection",
                        i, s.worker[i]);
                s.alive[i] = false;
            }
    }
    pid_t wait_arg[2] = { victim_pid, victim };
    H_CHECK(h_wait_for(worker_replaced, wait_arg, FK_RESPAWN_MS), "worker %d not respawned",
            victim);
    h_sleep_ms(500); /* the new worker replays its predecessor's journal */

    static struct row rows[FK_MAX_ROWS];
    size_t n = read_log(rows, FK_MAX_ROWS);
    check_no_gap_no_repeat(rows, n);
    for (int i = 0; i < FK_PAIRS; i++)
        for (int r = 0; r < FK_ROUNDS; r++)
            if (s.acked_mid[i][r])
                H_CHECK(count_mid(rows, n, s.acked_mid[i][r]) == 1,
                        "ACKed chat %d/%d (mid %lld, cseq %lld) is in the log %zu times", i, r,
                        s.acked_mid[i][r], s.acked_cseq[i][r],
                        count_mid(rows, n, s.acked_mid[i][r]));
    print_message("%d chats ACKed, %zu rows in the log, no gap, none twice\n", s.nacked, n);
    for (int i = 0; i < FK_PAIRS; i++)
        if (s.alive[i])
            h_close(s.c[i]);
}

/* ---- MariaDB stopped during appends --------------------------------------- */

static void test_mariadb_stopped_live_chat_goes_on(void **state)
{
    (void)state;
    const char *pidtext = getenv("QCHAT_MYSQL_PID");
    if (!h_storage_is_mysql() || pidtext == NULL) {
        print_message(
            "SQLite run: nothing to stop (this case runs with QCHAT_TEST_STORAGE=mysql)\n");
        return;
    }
    pid_t db = (pid_t)atoi(pidtext);
    struct h_user a, b;
    struct qclient *ca = h_new_user(&a, "st_a");
    struct qclient *cb = h_new_user(&b, "st_b");
    /* The conversation is warm: its cseq no longer needs the database. */
    json_object_put(
        h_request(ca, QC_ONE_CHAT_MSG, 0, "warm-up chat", "\"toid\":%d,\"msg\":\"w\"", b.id));
    json_object_put(h_expect(cb, QC_ONE_CHAT_MSG, "warm-up chat"));

    H_CHECK(kill(db, SIGSTOP) == 0, "SIGSTOP MariaDB %d: %s", (int)db, strerror(errno));
    int64_t seq0 = 0;
    long long cseq_live[STOP_CHATS];
    for (int k = 0; k < STOP_CHATS; k++) {
        int64_t seq = h_next_seq();
        if (k == 0)
            seq0 = seq;
        h_send(ca, "{\"msgid\":5,\"toid\":%d,\"msg\":\"stopped %d\",\"seq\":%lld}", b.id, k,
               (long long)seq);
        struct json_object *m = qclient_recv(cb, STOP_LIVE_MS);
        if (m == NULL)
            kill(db, SIGCONT); /* do not leave the database stopped */
        H_CHECK(m != NULL, "chat %d did not arrive live within %d ms while MariaDB is stopped", k,
                STOP_LIVE_MS);
        cseq_live[k] = h_int(m, "cseq");
        H_CHECK(k == 0 || cseq_live[k] == cseq_live[k - 1] + 1, "live cseqs consecutive: %s",
                h_json(m));
        json_object_put(m);
    }
    H_CHECK(kill(db, SIGCONT) == 0, "SIGCONT MariaDB: %s", strerror(errno));
    /* Now the appends commit and the ACKs come, in order, with the live cseqs. */
    for (int k = 0; k < STOP_CHATS; k++) {
        struct json_object *ack =
            h_expect_ack(ca, QC_ONE_CHAT_MSG, seq0 + k, 0, "ACK after SIGCONT");
        H_CHECK(h_int(ack, "cseq") == cseq_live[k], "ACK cseq equals the forwarded one: %s",
                h_json(ack));
        json_object_put(ack);
    }
    static struct row rows[FK_MAX_ROWS];
    size_t n = read_log(rows, FK_MAX_ROWS);
    check_no_gap_no_repeat(rows, n);
    h_close(ca);
    h_close(cb);
}

static void test_server_stops_cleanly(void **state)
{
    (void)state;
    h_stop_and_check_clean();
}

static int group_setup(void **state)
{
    (void)state;
    return h_group_setup_with(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        H_TEST(test_mariadb_stopped_live_chat_goes_on),
        H_TEST(test_kill9_during_appends),
        H_TEST(test_server_stops_cleanly),
    };
    h_apply_filter();
    return cmocka_run_group_tests_name("logfaults", tests, group_setup, h_group_teardown);
}
