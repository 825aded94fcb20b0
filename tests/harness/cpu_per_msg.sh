#!/bin/bash
# cpu_per_msg.sh - qchatd's CPU time per ping-pong message, for before/after
# comparisons on a loaded machine (a rate there moves 5x between runs; the
# CPU a message costs moves much less).
#
#   sh -c 'B=build; bash tests/harness/cpu_per_msg.sh $B/qchatd on|off [DUR]'
#
# Starts a private qchatd (QCHATD given, a fresh SQLite file in a temporary
# directory, a free 127.0.0.1 port, -o history.enabled=no for "off"),
# registers 2,000 users with qchat-bench of this tree's build/, runs
# pingpong 1,000 pairs for DUR seconds (default 8), and prints the rate,
# the messages, the CPU ticks of the master and its children (utime+stime
# from /proc) during the run, microseconds of CPU per message, the load,
# and the storage threads' totals from the server's log (appended,
# transactions, jobs: only builds that log them at stop).  It stops the
# server by its PID and removes the directory.
BIN=$1 MODE=$2 DUR=${3:-8}
top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
BENCH=$top/build/qchat-bench
T=$(mktemp -d /tmp/qchat-cpumsg.XXXXXX) || exit 1
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
EXTRA=""
[ "$MODE" = off ] && EXTRA="-o history.enabled=no"
COMMON="-o security.request_rate=0 -o log.level=info -o security.password_cost=1"
# shellcheck disable=SC2086
"$BIN" -f -o server.listen=127.0.0.1:$PORT -o storage.path=$T/q.db \
    -o server.control_socket=$T/ctl.sock $COMMON $EXTRA >"$T/log" 2>&1 &
QPID=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
kill -0 $QPID 2>/dev/null || { echo "qchatd did not start"; tail -n 2 "$T/log"; rm -rf "$T"; exit 1; }
SOURCES=$(seq -s, -f '127.0.1.%g' 1 16)
"$BENCH" reg --port "$PORT" --users 2000 --out "$T/ids" --prefix pf_ -c 32 --timeout 120 -q >/dev/null
cpu() {
    t=0
    for p in $QPID $(pgrep -P $QPID); do t=$((t + $(awk '{ print $14 + $15 }' /proc/$p/stat))); done
    echo $t
}
c0=$(cpu)
"$BENCH" pingpong --port "$PORT" --ids "$T/ids" --pairs 1000 -d "$DUR" --sources "$SOURCES" -q \
    >"$T/pp.out" 2>&1
c1=$(cpu)
line=$(tail -n 1 "$T/pp.out")
msgs=$(echo "$line" | sed 's/.*msgs=\([0-9]*\).*/\1/')
rate=$(echo "$line" | sed 's/.* rate=\([0-9]*\).*/\1/')
hz=$(getconf CLK_TCK)
echo "$MODE $BIN rate=$rate msgs=$msgs cpu_ticks=$((c1 - c0))" \
    "us_per_msg=$(((c1 - c0) * 1000000 / hz / (msgs > 0 ? msgs : 1))) load=$(cut -d' ' -f1 /proc/loadavg)"
kill $QPID
wait $QPID
grep "storage:" "$T/log" | sed 's/.*storage: //' |
    awk '{ a += $1; c += $5; j += $7 } END { print "storage: appended", a, "transactions", c, "jobs", j }'
rm -rf "$T"
