#!/bin/sh
# callgrind_pingpong.sh - instructions per ping-pong message in one qchatd
# worker, under callgrind: a measure the load of a shared machine does not
# move (wall-clock rates there move 2-5x between runs).
#
#   sh tests/harness/callgrind_pingpong.sh QCHATD OUT [qchatd option...]
#   e.g. sh tests/harness/callgrind_pingpong.sh build/qchatd /tmp/cg -o history.enabled=no
#
# QCHATD (any build, version 1 included) with WORKERS workers (default 1:
# with 2, half the chats cross between workers), password_cost=1
# and request_rate=0, on a fresh SQLite file in a temporary directory:
# 2*PAIRS users are registered without valgrind, then the server runs twice
# under valgrind --tool=callgrind while qchat-bench (of B, default build)
# plays PAIRS pairs, N1 and then N2 round trips per pair (-n).  The
# difference of the two runs' totals over the difference of their messages
# is the cost of one message with everything fixed (start, logins, stop)
# taken out; every thread of the workers counts (their storage threads
# too), the master's does not.  The callgrind files stay in OUT/N1 and
# OUT/N2 (the workers' are the WORKERS largest cg.PID); compare functions
# with callgrind_annotate on each.  The server's log stays in OUT/N/server.log
# (with -o log.level=info it ends with the storage threads' totals:
# messages appended and transactions, i.e. the batches this run made).
BIN=$1 OUT=$2
shift 2
top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
H=$top/tests/harness
. "$H/lib.sh"
. "$H/bench_lib.sh"
bench_begin callgrind_pingpong
PAIRS=${PAIRS:-100}
N1=${N1:-50}
N2=${N2:-250}
WORKERS=${WORKERS:-1}
START_WAIT=60 # valgrind starts slowly
STOP_WAIT=60
BENCH_TIMEOUT=900
COMMON="-o security.request_rate=0 -o log.level=warning -o security.password_cost=1 -o server.workers=$WORKERS"
[ -x "$BIN" ] && [ -n "$OUT" ] || { say "usage: $0 QCHATD OUT [qchatd option...]"; exit 1; }
command -v valgrind >/dev/null || { say "valgrind is needed"; exit 1; }
mkdir -p "$OUT" || exit 1

# shellcheck disable=SC2086
run_plain() {
    exec "$BIN" -f -o server.listen="127.0.0.1:$1" -o storage.path="$tmp/q.db" \
        -o server.control_socket="$tmp/ctl.sock" $COMMON $OPTS
}
# shellcheck disable=SC2086
run_callgrind() {
    exec valgrind --tool=callgrind --callgrind-out-file="$run_out/cg.%p" "$BIN" -f \
        -o server.listen="127.0.0.1:$1" -o storage.path="$tmp/q.db" \
        -o server.control_socket="$tmp/ctl.sock" $COMMON $OPTS
}
OPTS="$*"

start register run_plain
"$BENCH" reg --port "$server_port" --users $((2 * PAIRS)) --out "$tmp/ids" --prefix cg_ -c 8 \
    --timeout 120 -q >"$tmp/reg.out" 2>&1 || { cat "$tmp/reg.out"; exit 1; }
stop_server "$server_pid"

# one_run N: the worker's instruction total and the messages of N round trips per pair
one_run() {
    run_out=$OUT/$1
    rm -rf "$run_out" && mkdir -p "$run_out" || exit 1
    start "callgrind-$1" run_callgrind
    "$BENCH" pingpong --port "$server_port" --ids "$tmp/ids" --pairs "$PAIRS" -n "$1" \
        -d "$BENCH_TIMEOUT" --timeout "$BENCH_TIMEOUT" -q >"$run_out/pingpong.out" 2>&1
    stop_server "$server_pid"
    cp "$tmp/callgrind-$1.log" "$run_out/server.log" 2>/dev/null || :
    msgs=$(field "$(tail -n 1 "$run_out/pingpong.out")" msgs)
    ir=$(for f in "$run_out"/cg.*; do sed -n 's/^summary: //p' "$f"; done | sort -n |
        tail -n "$WORKERS" | awk '{ t += $1 } END { print t }')
    echo "$ir $msgs"
}

set -- $(one_run "$N1")
ir1=$1 m1=$2
set -- $(one_run "$N2")
ir2=$1 m2=$2
[ -n "$m1" ] && [ -n "$m2" ] && [ "$m2" -gt "$m1" ] || { say "no messages counted ($m1, $m2)"; exit 1; }
echo "$BIN ($WORKERS worker(s)): $N1 round trips/pair: $ir1 Ir, $m1 msgs; $N2: $ir2 Ir, $m2 msgs;" \
    "instructions per message: $(((ir2 - ir1) / (m2 - m1)))"
