#!/bin/sh
# bench_token_logins.sh - token and password logins/s (issue 15) of two
# qchatd builds side by side: 64 users, 64 loops of LOGINOUT + LOGIN on one
# connection each for DUR seconds, 32 source addresses (the per-address
# budget of password checks is not what is measured), the default
# password_cost (5).  Each run starts MAIN_B's qchatd and B's in turn from
# a copy of one database (the order alternates between runs); the first
# PASSWORD_RUNS runs also measure password logins.  qchat-bench is B's for
# both.  Everything listens on a free 127.0.0.1 port in a temporary
# directory and is stopped by PID.
#
#   MAIN_B=/tmp/x-main/build B=build RUNS=4 sh tests/harness/bench_token_logins.sh

top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
H=$top/tests/harness
. "$H/lib.sh"
. "$H/bench_lib.sh"
bench_begin bench_token_logins
MAIN_B=${MAIN_B:?MAIN_B: the other build directory (e.g. main built from git archive)}
RUNS=${RUNS:-4}
PASSWORD_RUNS=${PASSWORD_RUNS:-2}
DUR=${DUR:-10}
LOOPS=64

START_WAIT=60
STOP_WAIT=15

SOURCES=$(i=1; while [ $i -le 32 ]; do printf '127.0.0.%d,' $i; i=$((i + 1)); done)
SOURCES=${SOURCES%,}

qchatd_on() {
    exec "$QCHATD" -f -o server.listen="127.0.0.1:$1" -o server.workers=2 \
        -o storage.path="$tmp/q.db" -o server.control_socket="$tmp/ctl.sock" \
        -o server.mid_file="$tmp/mid" -o log.level=warning -o security.request_rate=0
}

# login_rate [--tokens]: "rate=... p50=... p99=..." of one measurement
login_rate() {
    "$BENCH" login --port "$server_port" --ids "$tmp/ids" --loops $LOOPS -d "$DUR" --stall 60 \
        --sources "$SOURCES" -q "$@" 2>&1 | grep 'rate=' | tr ' ' '\n' |
        grep -E '^(rate|p50|p99)=' | tr '\n' ' '
}

QCHATD=$B/qchatd
start reg qchatd_on
"$BENCH" reg --port "$server_port" --users $LOOPS --out "$tmp/ids" -q >"$tmp/reg.out" 2>&1 ||
    { cat "$tmp/reg.out"; exit 1; }
stop_server "$server_pid"
cp "$tmp/q.db" "$tmp/seed.db"

r=1
while [ $r -le "$RUNS" ]; do
    order="main this"
    [ $((r % 2)) = 0 ] && order="this main"
    for which in $order; do
        QCHATD=$B/qchatd
        [ $which = main ] && QCHATD=$MAIN_B/qchatd
        rm -f "$tmp"/q.db*
        cp "$tmp/seed.db" "$tmp/q.db"
        start "$which" qchatd_on
        load=$(cut -d' ' -f1 /proc/loadavg)
        t=$(login_rate --tokens)
        say "$which run=$r load=$load token: $t"
        keep "$which.token" "$(field "$t" rate)"
        if [ $r -le "$PASSWORD_RUNS" ]; then
            p=$(login_rate)
            say "$which run=$r load=$load password: $p"
        fi
        stop_server "$server_pid"
    done
    r=$((r + 1))
done
say "median token logins/s: main $(median main.token), this $(median this.token)"
