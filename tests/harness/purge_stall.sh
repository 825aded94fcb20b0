#!/bin/sh
# purge_stall.sh - what retention costs the other work of the worker that
# purges: LOGIN latency (qchat-bench login, 4 loops, DUR seconds, one
# worker) while qchatctl purge starts a round every 0.6 s, on a SQLite
# store of CONVS pair conversations (2 messages each, one of their two
# users has had them, so the delivered purge of history.enabled=no finds
# nothing to remove and only searches).  Each purge batch is a storage job
# of worker 0: a LOGIN behind it waits for it.
#
# Each run starts B's qchatd and, if BASE is given, BASE's in turn (the
# order alternates between runs) on a copy of one store, made by BASE's
# qchatd --init-db when given (an older binary refuses a newer schema; a
# newer one migrates it at start) and filled with the sqlite3 tool.
# qchat-bench is B's.  Everything listens on a free 127.0.0.1 port in a
# temporary directory and is stopped by PID.
#
#   B=build BASE=/tmp/old/build CONVS=500000 RUNS=2 sh tests/harness/purge_stall.sh

top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
H=$top/tests/harness
. "$H/lib.sh"
. "$H/bench_lib.sh"
bench_begin purge_stall
RUNS=${RUNS:-2}
DUR=${DUR:-10}
CONVS=${CONVS:-500000}
PURGE_EVERY=0.6 # seconds between qchatctl purge calls
LOOPS=4

START_WAIT=120 # a newer binary migrates the store at start
STOP_WAIT=15

command -v sqlite3 >/dev/null || { say "the sqlite3 tool is needed"; exit 1; }
[ -z "${BASE:-}" ] || case $BASE in /*) ;; *) BASE=$top/$BASE ;; esac

qchatd_on() {
    exec "$QCHATD" -f -o server.listen="127.0.0.1:$1" -o server.workers=1 \
        -o storage.path="$tmp/q.db" -o server.control_socket="$tmp/ctl.sock" \
        -o server.mid_file="$tmp/mid" -o log.level=warning -o security.request_rate=0 \
        -o security.password_cost=1 -o security.login_checks_per_ip=0 -o history.enabled=no
}

# The store: CONVS conversations of users 2n-1 and 2n (no such accounts:
# the purge does not ask), cseqs 1 and 2, the first user's cursor at 2 and
# the second's at 0.
"${BASE:-$B}/qchatd" --init-db -o storage.path="$tmp/seed.db" -o log.level=warning ||
    { say "qchatd --init-db failed"; exit 1; }
sqlite3 "$tmp/seed.db" >/dev/null <<EOF || { say "filling the store failed"; exit 1; }
BEGIN;
WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < $CONVS)
INSERT INTO Conversation (conv, last_cseq, last_ts)
SELECT (2 * n - 1) * 4294967296 + 2 * n, 2, 1700000000000 FROM s;
INSERT INTO Message (conv, cseq, mid, sender, ts, body)
SELECT conv, k, k, conv >> 32, 1700000000000, '{}' FROM Conversation, (SELECT 1 AS k UNION ALL SELECT 2);
INSERT INTO ConvCursor (userid, conv, delivered_cseq, read_cseq) SELECT conv >> 32, conv, 2, 2 FROM Conversation;
INSERT INTO ConvCursor (userid, conv, delivered_cseq, read_cseq) SELECT conv & 4294967295, conv, 0, 0 FROM Conversation;
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
EOF

# purge_loop: qchatctl purge every PURGE_EVERY seconds for DUR + 2 seconds
purge_loop() {
    end=$(($(date +%s) + DUR + 2))
    while [ "$(date +%s)" -lt "$end" ]; do
        timeout 5 "$B/qchatctl" -s "$tmp/ctl.sock" purge >/dev/null 2>&1 &
        sleep $PURGE_EVERY
    done
    wait
}

say "machine: $(nproc) CPU, load $(cut -d' ' -f1-3 /proc/loadavg); $CONVS conversations, runs=$RUNS"
r=1
while [ $r -le "$RUNS" ]; do
    order="this"
    [ -n "${BASE:-}" ] && order="base this" && [ $((r % 2)) = 0 ] && order="this base"
    for which in $order; do
        QCHATD=$B/qchatd
        [ "$which" = base ] && QCHATD=$BASE/qchatd
        rm -f "$tmp"/q.db*
        cp "$tmp/seed.db" "$tmp/q.db"
        start "$which" qchatd_on
        purge_loop &
        loop=$!
        line=$("$BENCH" login --port "$server_port" --loops $LOOPS -d "$DUR" -q 2>&1 | tail -n 1)
        wait $loop
        stop_server "$server_pid"
        printf '%-4s run %s logins/s=%s p50=%s p99=%s max=%s errors=%s\n' "$which" "$r" \
            "$(field "$line" rate)" "$(field "$line" p50)" "$(field "$line" p99)" \
            "$(field "$line" max)" "$(field "$line" errors)"
    done
    r=$((r + 1))
done
