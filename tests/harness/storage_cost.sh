#!/bin/sh
# storage_cost.sh - what the log-on ping-pong costs qchatd per message, by
# thread kind, and what its storage threads ask of the kernel, for
# before/after comparisons on a loaded machine (counts and CPU per message
# move far less than rates there).
#
#   sh tests/harness/storage_cost.sh QCHATD [DUR]
#   EXTRA="-o history.enabled=no" sh tests/harness/storage_cost.sh QCHATD
#
# Starts a private qchatd (QCHATD given, log on unless EXTRA says otherwise,
# a fresh SQLite file in a temporary directory, a free 127.0.0.1 port),
# registers 2,000 users with
# qchat-bench of B (default build) and runs pingpong 1,000 pairs for DUR
# seconds (default 14).  Prints:
#   - CPU per message (utime+stime of each thread from /proc, between SKIP
#     and SKIP+WIN seconds into the run, i.e. after the logins, over rate x
#     WIN messages) of the worker loops, the storage threads (the first
#     thread a worker starts) and the hash threads (the second);
#   - with perf available, the storage threads' pwrite, pread, fdatasync,
#     fcntl, clock_nanosleep (SQLite's busy handler) and futex calls and
#     their CPU time over the whole run, per 1,000 appended messages, with
#     the appended and append-transaction totals the server logs at stop;
#   - the WAL's size at the end.
# The server is stopped by its PID and the directory removed.
BIN=$1 DUR=${2:-14} SKIP=${SKIP:-5} WIN=${WIN:-7} EXTRA=${EXTRA:-}
top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
H=$top/tests/harness
. "$H/lib.sh"
. "$H/bench_lib.sh"
bench_begin storage_cost
START_WAIT=5
STOP_WAIT=15
SYSCALLS="pwrite64 pread64 fdatasync fcntl clock_nanosleep futex"

COMMON="-o security.request_rate=0 -o log.level=info -o security.password_cost=1"
# shellcheck disable=SC2086
run_qchatd() {
    exec "$BIN" -f -o server.listen="127.0.0.1:$1" -o storage.path="$tmp/q.db" \
        -o server.control_socket="$tmp/ctl.sock" $COMMON $EXTRA
}

# Ticks of each thread kind, summed over the workers: "loops storage hash".
kind_ticks() {
    for p in $(pgrep -P "$server_pid"); do
        i=0
        for t in $(ls "/proc/$p/task" | sort -n); do
            i=$((i + 1))
            echo "$i $(awk '{ print $14 + $15 }' "/proc/$p/task/$t/stat" 2>/dev/null || echo 0)"
        done
    done | awk '{ a[$1] += $2 } END { print a[1] + 0, a[2] + 0, a[3] + 0 }'
}

storage_tids() {
    for p in $(pgrep -P "$server_pid"); do
        ls "/proc/$p/task" | sort -n | sed -n 2p
    done | paste -sd, -
}

start qchatd run_qchatd
SOURCES=$(seq -s, -f '127.0.1.%g' 1 16)
"$BENCH" reg --port "$server_port" --users 2000 --out "$tmp/ids" --prefix sc_ -c 32 --timeout 120 \
    -q >"$tmp/reg.out" 2>&1 || { cat "$tmp/reg.out"; exit 1; }
perf_pid=""
if command -v perf >/dev/null 2>&1; then
    events=$(for c in $SYSCALLS; do printf 'syscalls:sys_enter_%s,' "$c"; done)task-clock
    perf stat -e "$events" -t "$(storage_tids)" -o "$tmp/perf.out" >/dev/null 2>&1 &
    perf_pid=$!
fi
"$BENCH" pingpong --port "$server_port" --ids "$tmp/ids" --pairs 1000 -d "$DUR" \
    --sources "$SOURCES" -q >"$tmp/pp.out" 2>&1 &
bench_pid=$!
sleep "$SKIP"
t0=$(kind_ticks)
sleep "$WIN"
t1=$(kind_ticks)
wait "$bench_pid"
[ -n "$perf_pid" ] && kill -INT "$perf_pid" && wait "$perf_pid"
wal=$(stat -c %s "$tmp/q.db-wal" 2>/dev/null || echo 0)
stop_server "$server_pid" # the storage totals are logged at stop

line=$(tail -n 1 "$tmp/pp.out")
echo "$line"
rate=$(echo "$line" | sed 's/.* rate=\([0-9]*\).*/\1/')
hz=$(getconf CLK_TCK)
echo "$t0 $t1" | awk -v r="$rate" -v w="$WIN" -v hz="$hz" -v l="$(cut -d' ' -f1 /proc/loadavg)" '{
    m = r * w; k = 1e6 / hz / (m > 0 ? m : 1)
    printf "steady us/msg: worker loops %.1f storage %.1f hash %.1f total %.1f (load %s)\n",
        ($4 - $1) * k, ($5 - $2) * k, ($6 - $3) * k, ($4 + $5 + $6 - $1 - $2 - $3) * k, l }'
appended=$(grep "storage:" "$tmp/qchatd.log" | sed 's/.*storage: //' |
    awk '{ a += $1; c += $5 } END { print a + 0, c + 0 }')
echo "storage: appended ${appended% *} in ${appended#* } append transaction(s); WAL $wal bytes"
[ -s "$tmp/perf.out" ] && grep -E "syscalls:|task-clock" "$tmp/perf.out" |
    awk -v a="${appended% *}" '{ gsub(",", "", $1); n = $2 == "msec" ? $3 : $2
        if (a > 0) printf "  %-36s %12s  per 1000 appended %.1f\n", n, $1, $1 * 1000 / a
        else printf "  %-36s %12s\n", n, $1 }'
exit 0
