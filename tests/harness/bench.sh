#!/bin/sh
# bench.sh - `make bench`: qchat-bench against qchatd and the relay_ref
# yardstick on this machine, side by side in one run, RUNS runs of each row,
# medians and ratios at the end.  The rows (issue 5's targets, one node):
#
#   pingpong  PAIRS pairs, 64-byte chats, one in flight: msgs/s and p99
#   conns     CONNS idle logged-in sessions: PSS of all server processes,
#             sampled while held, then every session must still receive
#   group     MEMBERS online members of one group: deliveries/s, compared
#             with qchatd's ping-pong deliveries/s
#   storm     qchatd ping-pong p99 alone, then during STORM_LOOPS login loops
#
#   B=build sh tests/harness/bench.sh       (RUNS=3 DUR=10 by default)
#
# Users are registered first on a qchatd running with password_cost=1 (so
# that setup is quick); the measurements then run on a fresh qchatd over
# the same database with the default configuration except request_rate=0
# (no per-connection rate limit) and log.level=warning; the login-storm
# users are registered there, at the default password cost.  relay_ref runs
# with as many workers as qchatd.  Everything listens on free 127.0.0.1
# ports in a temporary directory and is stopped by PID.  Bounded: each run
# has a deadline, and rows are skipped once BUDGET seconds have passed.

top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
B=${B:-build}
case $B in /*) ;; *) B=$top/$B ;; esac
BENCH=$B/qchat-bench
QCHATD=$B/qchatd
RELAY=$B/relay_ref
CC=${CC:-cc}

RUNS=${RUNS:-3}
DUR=${DUR:-10}               # seconds measured per run
PAIRS=${PAIRS:-1000}
CONNS=${CONNS:-10000}
HOLD=${HOLD:-5}              # seconds the idle sessions are held
MEMBERS=${MEMBERS:-1000}
SENDERS=${SENDERS:-4}
GROUP_INFLIGHT=${GROUP_INFLIGHT:-2}
STORM_LOOPS=${STORM_LOOPS:-32}
STORM_STALL=${STORM_STALL:-10}  # seconds: at the default cost a login waits ~1 s in line
BUDGET=${BUDGET:-600}        # seconds; later rows are skipped past it
WORKERS=${WORKERS:-$(nproc)}

PORT_MIN=20000
PORT_SPAN=12000              # below the ephemeral range (32768..)
PORT_ATTEMPTS=5
START_WAIT=300               # polls of POLL seconds for a server to listen
STOP_WAIT=150
POLL=0.1
RUN_SLACK=60                 # seconds past a run's own phases before it is killed
REG_TIMEOUT=120

started=$(date +%s)
pids=""
tmp=$(mktemp -d /tmp/qchat-bench.XXXXXX) || exit 1
res=$tmp/results
mkdir -p "$res"

say() { echo "bench: $*"; }

stop_pid() {
    kill -TERM "$1" 2>/dev/null || return 0
    n=0
    while kill -0 "$1" 2>/dev/null && [ $n -lt $STOP_WAIT ]; do
        sleep $POLL
        n=$((n + 1))
    done
    kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
    return 0
}

forget_pid() {
    rest=""
    for p in $pids; do
        [ "$p" = "$1" ] || rest="$rest $p"
    done
    pids=$rest
}

cleanup() {
    for p in $pids; do
        stop_pid "$p"
    done
    pids=""
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

port_busy() {
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

random_port() {
    echo $((PORT_MIN + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % PORT_SPAN))
}

wait_listen() {
    n=0
    while [ $n -lt $START_WAIT ]; do
        kill -0 "$1" 2>/dev/null || return 1
        port_busy "$2" && return 0
        sleep $POLL
        n=$((n + 1))
    done
    return 1
}

# start_server NAME FUNC: FUNC PORT execs the server; sets server_pid, server_port
start_server() {
    attempt=0
    while [ $attempt -lt $PORT_ATTEMPTS ]; do
        attempt=$((attempt + 1))
        port=$(random_port)
        port_busy "$port" && continue
        "$2" "$port" >>"$tmp/$1.log" 2>&1 &
        server_pid=$!
        if wait_listen "$server_pid" "$port"; then
            server_port=$port
            pids="$pids $server_pid"
            return 0
        fi
        stop_pid "$server_pid"
    done
    say "could not start $1:"
    tail -n 20 "$tmp/$1.log" >&2
    exit 1
}

QCHATD_COMMON="-o storage.path=$tmp/q.db -o server.control_socket=$tmp/ctl.sock -o security.request_rate=0 -o log.level=warning"

run_relay_ref() {
    exec "$RELAY" -l 127.0.0.1 -p "$1" -w "$WORKERS"
}

# shellcheck disable=SC2086
run_qchatd_setup() {
    exec "$QCHATD" -f -o server.listen="127.0.0.1:$1" $QCHATD_COMMON -o security.password_cost=1
}

# shellcheck disable=SC2086
run_qchatd() {
    exec "$QCHATD" -f -o server.listen="127.0.0.1:$1" $QCHATD_COMMON
}

over_budget() {
    [ $(($(date +%s) - started)) -ge "$BUDGET" ]
}

# field LINE KEY: VALUE of KEY=VALUE in a summary line, units stripped
field() {
    printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1 | sed 's/[^0-9.]*$//'
}

# bench LABEL ARGS...: run qchat-bench, print and keep its summary line in $line
bench() {
    label=$1
    shift
    echo "+ qchat-bench $*" >>"$tmp/commands"
    timeout $((DUR + HOLD + REG_TIMEOUT + RUN_SLACK)) "$BENCH" "$@" -q >"$tmp/out" 2>"$tmp/err"
    rc=$?
    line=$(tail -n 1 "$tmp/out")
    printf '%-22s %s\n' "$label" "$line"
    if [ $rc -ne 0 ]; then
        say "$label: exit $rc"
        head -n 5 "$tmp/err" | sed 's/^/    /'
    fi
    return $rc
}

# keep METRIC VALUE: remember a figure for the medians
keep() {
    [ -n "$2" ] && echo "$2" >>"$res/$1"
}

median() {
    [ -s "$res/$1" ] || { echo "-"; return; }
    sort -n "$res/$1" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

ratio() {
    case "$1$2" in *-*) echo "-"; return ;; esac
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
}

# pss_kib PID: proportional set size of PID and its children, KiB
pss_kib() {
    total=0
    for p in "$1" $(pgrep -P "$1"); do
        v=$(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null)
        total=$((total + ${v:-0}))
    done
    echo $total
}

# hold_and_measure LABEL SERVER_PID ARGS...: conns run; PSS sampled once all are up
hold_and_measure() {
    label=$1
    spid=$2
    shift 2
    rm -f "$tmp/ready"
    echo "+ qchat-bench $* --ready-file READY" >>"$tmp/commands"
    timeout $((HOLD + REG_TIMEOUT + RUN_SLACK)) "$BENCH" "$@" -q --ready-file "$tmp/ready" \
        >"$tmp/out" 2>"$tmp/err" &
    bpid=$!
    n=0
    while [ ! -s "$tmp/ready" ] && kill -0 $bpid 2>/dev/null && [ $n -lt $((REG_TIMEOUT * 10)) ]; do
        sleep $POLL
        n=$((n + 1))
    done
    pss=$(pss_kib "$spid")
    wait $bpid
    rc=$?
    line=$(tail -n 1 "$tmp/out")
    printf '%-22s %s pss=%sKiB\n' "$label" "$line" "$pss"
    [ $rc -ne 0 ] && head -n 5 "$tmp/err" | sed 's/^/    /'
    return $rc
}

# ---- build and users ------------------------------------------------------

for f in "$BENCH" "$QCHATD"; do
    [ -x "$f" ] || { say "$f not built (make all)"; exit 1; }
done
relay_src=""
for f in "${RELAY_REF_SRC:-}" "$top/tests/harness/relay_ref.c" "$top/../shared/bench/relay_ref.c"; do
    [ -n "$f" ] && [ -f "$f" ] && { relay_src=$f; break; }
done
[ -n "$relay_src" ] || { say "relay_ref.c not found (set RELAY_REF_SRC)"; exit 1; }
$CC -O2 -o "$RELAY" "$relay_src" || exit 1

say "machine: $(nproc) CPU, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1), Linux $(uname -r)"
say "runs=$RUNS duration=${DUR}s pairs=$PAIRS conns=$CONNS members=$MEMBERS storm=$STORM_LOOPS workers=$WORKERS"

start_server qchatd-setup run_qchatd_setup
setup_pid=$server_pid
sp=$server_port
for set in pp:$((2 * PAIRS)) conns:$CONNS group:$MEMBERS; do
    name=${set%%:*}
    n=${set#*:}
    bench "register $name" reg --port "$sp" --users "$n" --out "$tmp/ids.$name" \
        --prefix "b${name}_" --timeout $REG_TIMEOUT || exit 1
done
stop_pid "$setup_pid"
forget_pid "$setup_pid"

start_server qchatd run_qchatd
qpid=$server_pid
qp=$server_port
bench "register storm" reg --port "$qp" --users "$STORM_LOOPS" --out "$tmp/ids.storm" \
    --prefix bstorm_ --timeout $REG_TIMEOUT || exit 1
start_server relay_ref run_relay_ref
rpid=$server_pid
rp=$server_port
say "qchatd $QCHATD -f -o server.listen=127.0.0.1:$qp $QCHATD_COMMON (pid $qpid)"
say "relay_ref -l 127.0.0.1 -p $rp -w $WORKERS (pid $rpid)"

# ---- rows -----------------------------------------------------------------

echo
say "row 1: pingpong, $PAIRS pairs, 64 B, one in flight, ${DUR}s"
for run in $(seq "$RUNS"); do
    over_budget && { say "over budget, row skipped"; break; }
    bench "relay_ref run $run" pingpong --port "$rp" --synthetic --pairs "$PAIRS" -d "$DUR" &&
        { keep pp_rate_r "$(field "$line" rate)"; keep pp_p99_r "$(field "$line" p99)"; }
    bench "qchatd run $run" pingpong --port "$qp" --ids "$tmp/ids.pp" --pairs "$PAIRS" -d "$DUR" &&
        { keep pp_rate_q "$(field "$line" rate)"; keep pp_p99_q "$(field "$line" p99)"; }
done

echo
say "row 2: conns, $CONNS idle sessions held ${HOLD}s, then each must receive"
for run in $(seq "$RUNS"); do
    over_budget && { say "over budget, row skipped"; break; }
    hold_and_measure "relay_ref run $run" "$rpid" conns --port "$rp" --synthetic \
        --id-base 100000 --conns "$CONNS" -d "$HOLD" && keep conns_pss_r "$pss"
    hold_and_measure "qchatd run $run" "$qpid" conns --port "$qp" --ids "$tmp/ids.conns" \
        --conns "$CONNS" -d "$HOLD" && { keep conns_pss_q "$pss"; keep conns_rate_q "$(field "$line" rate)"; }
done

echo
say "row 3: group, $MEMBERS members, $SENDERS senders, $GROUP_INFLIGHT in flight each, ${DUR}s (qchatd only)"
gid=""
for run in $(seq "$RUNS"); do
    over_budget && { say "over budget, row skipped"; break; }
    bench "qchatd run $run" group --port "$qp" --ids "$tmp/ids.group" --members "$MEMBERS" \
        --senders "$SENDERS" -k "$GROUP_INFLIGHT" -d "$DUR" ${gid:+--groupid "$gid"} &&
        { keep group_rate_q "$(field "$line" rate)"; keep group_p99_q "$(field "$line" p99)"; }
    g=$(field "$line" groupid)
    [ -n "$g" ] && [ "$g" != 0 ] && gid=$g
done

echo
say "row 4: qchatd pingpong p99 alone, then during $STORM_LOOPS login loops (default password cost)"
for run in $(seq "$RUNS"); do
    over_budget && { say "over budget, row skipped"; break; }
    bench "alone run $run" pingpong --port "$qp" --ids "$tmp/ids.pp" --pairs "$PAIRS" -d "$DUR" &&
        keep storm_p99_alone "$(field "$line" p99)"
    echo "+ qchat-bench login --port $qp --ids IDS --loops $STORM_LOOPS -d $((DUR + 4)) --stall $STORM_STALL" \
        >>"$tmp/commands"
    timeout $((DUR + RUN_SLACK)) "$BENCH" login --port "$qp" --ids "$tmp/ids.storm" \
        --loops "$STORM_LOOPS" -d $((DUR + 4)) --stall "$STORM_STALL" -q \
        >"$tmp/storm.out" 2>"$tmp/storm.err" &
    spid=$!
    sleep 2
    bench "storm run $run" pingpong --port "$qp" --ids "$tmp/ids.pp" --pairs "$PAIRS" -d "$DUR" &&
        keep storm_p99_storm "$(field "$line" p99)"
    wait $spid
    sline=$(tail -n 1 "$tmp/storm.out")
    printf '%-22s %s\n' "  (login storm)" "$sline"
    keep storm_login_rate "$(field "$sline" rate)"
done

stop_pid "$rpid"
forget_pid "$rpid"
stop_pid "$qpid"
forget_pid "$qpid"

# ---- summary --------------------------------------------------------------

r_rate=$(median pp_rate_r); q_rate=$(median pp_rate_q)
r_p99=$(median pp_p99_r); q_p99=$(median pp_p99_q)
r_pss=$(median conns_pss_r); q_pss=$(median conns_pss_q)
g_rate=$(median group_rate_q)
s_alone=$(median storm_p99_alone); s_storm=$(median storm_p99_storm)

echo
say "medians of $RUNS runs"
printf '%-36s %14s %14s %8s\n' "row" "relay_ref" "qchatd" "ratio"
printf '%-36s %14s %14s %8s\n' "pingpong $PAIRS pairs msgs/s" "$r_rate" "$q_rate" "$(ratio "$q_rate" "$r_rate")"
printf '%-36s %14s %14s %8s\n' "pingpong $PAIRS pairs p99 ms" "$r_p99" "$q_p99" "$(ratio "$q_p99" "$r_p99")"
printf '%-36s %14s %14s\n' "conns $CONNS PSS KiB (all processes)" "$r_pss" "$q_pss"
printf '%-36s %14s %14s %8s\n' "group $MEMBERS deliveries/s (vs pp)" "-" "$g_rate" "$(ratio "$g_rate" "$q_rate")"
printf '%-36s %14s %14s %8s\n' "p99 ms alone / during login storm" "$s_alone" "$s_storm" "$(ratio "$s_storm" "$s_alone")"
printf '%-36s %14s %14s\n' "login storm logins/s" "-" "$(median storm_login_rate)"
echo
say "commands (ids files and ports vary per run):"
sed 's/^/    /' "$tmp/commands"
say "done in $(($(date +%s) - started))s"
