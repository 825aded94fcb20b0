#!/bin/sh
# bench_storm.sh - the reconnect storm of issue 15: USERS accounts, each
# logged in once with its password for a login token; then every connection
# is dropped at once and every user comes back with its token.  all_in is
# the time from the drop to the last user's LOGIN_MSG_ACK (target: 20,000
# users back in <= 10 s on one node).
#
# The open-file limit here is 20,000 per process, so the users are split
# over PROCS qchat-bench processes (--skip); each says when it has its
# tokens (--ready-file) and all storm together when the script creates the
# go file (--go-file).  Each SPREADS value is one storm: 0 = every client
# reconnects at the same instant; T = each waits a random 0..T s first, as
# clients' reconnect backoff with jitter does (the qchat client's starts at
# 500 ms).  TcpExtListenOverflows (nstat) during the storm is recorded: a
# dropped SYN is retried by the client's kernel after 1, 3, 7 s.
#
#   B=build sh tests/harness/bench_storm.sh
#   MAIN_B=/tmp/x-main/build RUNS=3 sh tests/harness/bench_storm.sh
#
# PERF_OUT=FILE records `perf record -e cpu-clock -g -p` of B's qchatd (the
# master and its children) during each of its storms into FILE.SPREAD.RUN.
#
# BACKLOG=N passes server.listen_backlog=N (B's qchatd only: MAIN_B's has no
# such key).  The kernel caps it at net.core.somaxconn; to measure a node
# tuned as qchatd.conf(5) advises without touching the machine's settings,
# run the script as root in a private network namespace:
#   unshare -n sh -c 'ip link set lo up &&
#       sysctl -qw net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535 &&
#       BACKLOG=65535 sh tests/harness/bench_storm.sh'
#
# With MAIN_B, each run storms MAIN_B's qchatd and B's in turn (same
# qchat-bench, B's, for both: --storm is client-side), so the two are
# compared within one run.  Users are registered once (password_cost=1) and
# every server starts from a copy of that database.  server.max_users is
# 4 x USERS: during the storm the table holds the sessions being replaced
# and the new ones at once.  Everything listens on
# a free 127.0.0.1 port in a temporary directory and is stopped by PID.

top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
H=$top/tests/harness
. "$H/lib.sh"
. "$H/bench_lib.sh"
bench_begin bench_storm
MAIN_B=${MAIN_B:-}

USERS=${USERS:-20000}
PROCS=${PROCS:-2}
RUNS=${RUNS:-1}
SPREADS=${SPREADS:-0 1.5}
WORKERS=${WORKERS:-2}
LIMIT_S=${LIMIT_S:-30}   # a storm's -d: longer means "not all back"
SOURCES=${SOURCES:-127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8}

START_WAIT=60
STOP_WAIT=30
TOKEN_WAIT=600
REG_TIMEOUT=300

QCHATD=$B/qchatd
qchatd_on() {
    exec "$QCHATD" -f -o server.listen="127.0.0.1:$1" -o server.workers="$WORKERS" \
        -o storage.path="$tmp/run.db" -o server.control_socket="$tmp/ctl.sock" \
        -o server.mid_file="$tmp/mid" -o log.level=warning -o security.password_cost=1 \
        -o security.request_rate=0 -o security.login_checks_per_ip=0 \
        -o security.max_prelogin_per_ip=0 -o server.max_users=$((USERS * 4)) $backlog_opt
}
BACKLOG=${BACKLOG:-}
PERF_OUT=${PERF_OUT:-}
backlog_opt=

# CPU seconds (user + system, every thread) of qchatd PID and its children.
server_cpu() {
    for sc_p in $1 $(cat "/proc/$1/task/$1/children" 2>/dev/null); do
        cat "/proc/$sc_p/stat" 2>/dev/null
    done | awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); t += $12 + $13 } END { printf "%.2f", t / hz }'
}

overflows() {
    nstat -az TcpExtListenOverflows 2>/dev/null | awk '/TcpExtListenOverflows/ { print $2 }'
}

# The accounts, registered once on a scratch server; its database is the seed.
QCHATD=$B/qchatd
start reg qchatd_on
say "registering $USERS users on port $server_port"
"$BENCH" reg --port "$server_port" --users "$USERS" -c 64 --timeout "$REG_TIMEOUT" \
    --out "$tmp/ids" -q >"$tmp/reg.out" 2>&1 || { cat "$tmp/reg.out"; exit 1; }
stop_server "$server_pid"
cp "$tmp/run.db" "$tmp/seed.db"
per=$(( (USERS + PROCS - 1) / PROCS ))

# storm LABEL SPREAD RUN: one storm on a fresh server started from the seed.
storm() {
    rm -f "$tmp"/run.db* "$tmp"/ready.* "$tmp/go"
    cp "$tmp/seed.db" "$tmp/run.db"
    start "$1" qchatd_on
    i=0
    bpids=""
    while [ $i -lt "$PROCS" ]; do
        n=$per
        [ $((i * per + n)) -gt "$USERS" ] && n=$((USERS - i * per))
        "$BENCH" login --port "$server_port" --ids "$tmp/ids" --skip $((i * per)) --loops "$n" \
            --tokens --storm --spread "$2" -d "$LIMIT_S" --stall 60 --timeout "$TOKEN_WAIT" \
            --sources "$SOURCES" --ready-file "$tmp/ready.$i" --go-file "$tmp/go" \
            >"$tmp/storm.$i.out" 2>&1 &
        bpids="$bpids $!"
        i=$((i + 1))
    done
    i=0
    while [ $i -lt "$PROCS" ]; do
        wait_until "$TOKEN_WAIT" test -e "$tmp/ready.$i" || { say "no tokens"; exit 1; }
        i=$((i + 1))
    done
    sleep 1
    load=$(cut -d' ' -f1 /proc/loadavg)
    o0=$(overflows)
    cpu0=$(server_cpu "$server_pid")
    ppid=""
    if [ -n "$PERF_OUT" ] && [ "$1" = this ]; then
        perf record -e cpu-clock -F 999 -g -o "$PERF_OUT.$2.$3" \
            -p "$(echo "$server_pid" $(cat "/proc/$server_pid/task/$server_pid/children") |
                tr ' ' ',')" >"$tmp/perf.log" 2>&1 &
        ppid=$!
        sleep 1
    fi
    touch "$tmp/go"
    for p in $bpids; do wait "$p"; done
    o1=$(overflows)
    cpu1=$(server_cpu "$server_pid")
    if [ -n "$ppid" ]; then
        kill -INT "$ppid"
        wait "$ppid"
    fi
    i=0
    worst=0
    line=""
    while [ $i -lt "$PROCS" ]; do
        l=$(grep 'all_in=' "$tmp/storm.$i.out" | tail -n 1)
        a=$(field "$l" all_in)
        say "  $1 spread=$2 run=$3 proc=$i: $l"
        grep -v 'all_in=' "$tmp/storm.$i.out" | grep -v '^$' | head -n 5 | sed 's/^/      /'
        case $a in -* | "") worst=-1 ;; *) [ "$worst" = -1 ] ||
            worst=$(awk -v a="$a" -v w="$worst" 'BEGIN { print (a > w ? a : w) }') ;; esac
        i=$((i + 1))
    done
    cpu=$(awk -v a="$cpu0" -v b="$cpu1" -v n="$USERS" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }')
    say "$1 spread=$2 run=$3: all back in ${worst} s (-1: not within ${LIMIT_S} s)," \
        "listen overflows $((${o1:-0} - ${o0:-0})), qchatd CPU $cpu us per login, load $load"
    keep "$1.$2" "$worst"
    keep "$1.$2.cpu" "$cpu"
    stop_server "$server_pid"
}

r=1
while [ $r -le "$RUNS" ]; do
    for s in $SPREADS; do
        if [ -n "$MAIN_B" ]; then
            QCHATD=$MAIN_B/qchatd
            backlog_opt=""
            storm main "$s" "$r"
        fi
        QCHATD=$B/qchatd
        [ -n "$BACKLOG" ] && backlog_opt="-o server.listen_backlog=$BACKLOG"
        storm this "$s" "$r"
    done
    r=$((r + 1))
done
for s in $SPREADS; do
    [ -n "$MAIN_B" ] && say "median all back, spread $s: main $(median "main.$s") s"
    say "median all back, spread $s: this $(median "this.$s") s"
    [ -n "$MAIN_B" ] && say "median qchatd CPU per login, spread $s: main $(median "main.$s.cpu") us"
    say "median qchatd CPU per login, spread $s: this $(median "this.$s.cpu") us"
done
