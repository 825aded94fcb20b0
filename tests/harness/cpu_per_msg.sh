#!/bin/sh
# cpu_per_msg.sh - qchatd's CPU time per ping-pong message, for before/after
# comparisons on a loaded machine (a rate there moves 5x between runs; the
# CPU a message costs moves much less).
#
#   sh tests/harness/cpu_per_msg.sh QCHATD on|off [DUR]
#
# Starts a private qchatd (QCHATD given, a fresh SQLite file in a temporary
# directory, a free 127.0.0.1 port, -o history.enabled=no for "off"),
# registers 2,000 users with qchat-bench of B (default build), runs
# pingpong 1,000 pairs for DUR seconds (default 8), and prints the rate,
# the messages, the CPU ticks of the master and its children (utime+stime
# from /proc) during the run, microseconds of CPU per message, the load,
# and the storage threads' totals from the server's log (appended,
# transactions, jobs: only builds that log them at stop).  The server is
# stopped by its PID and the directory removed (bench_lib.sh's cleanup).
BIN=$1 MODE=$2 DUR=${3:-8}
top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
H=$top/tests/harness
. "$H/lib.sh"
. "$H/bench_lib.sh"
bench_begin cpu_per_msg
START_WAIT=5
STOP_WAIT=15

EXTRA=""
[ "$MODE" = off ] && EXTRA="-o history.enabled=no"
COMMON="-o security.request_rate=0 -o log.level=info -o security.password_cost=1"
# shellcheck disable=SC2086
run_qchatd() {
    exec "$BIN" -f -o server.listen="127.0.0.1:$1" -o storage.path="$tmp/q.db" \
        -o server.control_socket="$tmp/ctl.sock" $COMMON $EXTRA
}

# cpu: utime+stime ticks of the server and its children
cpu() {
    t=0
    for p in $server_pid $(pgrep -P "$server_pid"); do
        t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
    done
    echo $t
}

start qchatd run_qchatd
SOURCES=$(seq -s, -f '127.0.1.%g' 1 16)
"$BENCH" reg --port "$server_port" --users 2000 --out "$tmp/ids" --prefix pf_ -c 32 --timeout 120 \
    -q >"$tmp/reg.out" 2>&1 || { cat "$tmp/reg.out"; exit 1; }
c0=$(cpu)
"$BENCH" pingpong --port "$server_port" --ids "$tmp/ids" --pairs 1000 -d "$DUR" \
    --sources "$SOURCES" -q >"$tmp/pp.out" 2>&1
c1=$(cpu)
line=$(tail -n 1 "$tmp/pp.out")
msgs=$(echo "$line" | sed 's/.*msgs=\([0-9]*\).*/\1/')
rate=$(echo "$line" | sed 's/.* rate=\([0-9]*\).*/\1/')
hz=$(getconf CLK_TCK)
echo "$MODE $BIN rate=$rate msgs=$msgs cpu_ticks=$((c1 - c0))" \
    "us_per_msg=$(((c1 - c0) * 1000000 / hz / (msgs > 0 ? msgs : 1))) load=$(cut -d' ' -f1 /proc/loadavg)"
stop_server "$server_pid" # the storage totals are logged at stop
grep "storage:" "$tmp/qchatd.log" | sed 's/.*storage: //' |
    awk '{ a += $1; c += $5; j += $7 } END { print "storage: appended", a, "transactions", c, "jobs", j }'
