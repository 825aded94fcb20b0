#!/bin/bash
# perf_per_msg.sh - what one ping-pong message costs each server, measured
# with perf stat (task-clock and system calls) as the difference of two
# bounded runs, so logins, start and stop drop out and the figure does not
# depend on how fast the noisy machine ran that second.
#
#   VARIANTS='main|build/qchatd|
#   off|build/qchatd|-o history.enabled=no
#   v1|/tmp/v1/build/qchatd|
#   relay|relay_ref|' bash tests/harness/perf_per_msg.sh
#
# One line per variant: NAME|BINARY|OPTIONS.  BINARY "relay_ref" is the
# yardstick (tests/harness/relay_ref.c, built here, 2 workers, no users);
# any other is a qchatd started on a fresh SQLite file with COMMON and
# OPTIONS, its 2,000 users registered on it.  For each variant and each of
# RUNS rounds, qchat-bench pingpong (1,000 pairs, 64 B, one in flight) runs
# N1 and then N2 round trips per pair while perf stat counts the server's
# processes (the master and its children, every thread); the figures are
# (count at N2 - count at N1) / ((N2 - N1) * 2 * 1,000 pairs):
#   cpu_us      task-clock, microseconds of CPU per message (user + kernel)
#   syscalls    system calls per message, and the ones named in SYSCALLS
#   cswitch     context switches per message
# The rate printed is the N2 run's, for reference only.
#
# Needs perf (linux-perf) with the syscalls tracepoints (root or
# perf_event_paranoid <= 1).  B (default build) gives qchat-bench.
top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
H=$top/tests/harness
. "$H/lib.sh"
. "$H/bench_lib.sh"
bench_begin perf_per_msg
START_WAIT=60
STOP_WAIT=15
REG_TIMEOUT=120
RUN_LIMIT=300 # seconds one bounded ping-pong may take
PERF_SETTLE=0.3

RUNS=${RUNS:-1}
N1=${N1:-50}
N2=${N2:-250}
PAIRS=1000
SYSCALLS=${SYSCALLS:-sendto recvfrom read writev sendmsg recvmsg epoll_wait futex pread64 pwrite64 fdatasync}
COMMON="-o security.request_rate=0 -o log.level=warning -o security.password_cost=1"
SOURCES=$(seq -s, -f '127.0.1.%g' 1 16)

command -v perf >/dev/null || { say "perf is needed (apt-get install linux-perf)"; exit 1; }
[ -n "${VARIANTS:-}" ] || { say "VARIANTS is empty (see the top of this script)"; exit 1; }
[ -x "$BENCH" ] || { say "$BENCH not built (make all)"; exit 1; }
cc -O2 -o "$tmp/relay_ref" "$H/relay_ref.c" || exit 1

events=task-clock,context-switches,raw_syscalls:sys_enter
for s in $SYSCALLS; do
    events=$events,syscalls:sys_enter_$s
done
perf stat -e "$events" -- true >/dev/null 2>&1 ||
    { say "perf stat cannot count $events here"; exit 1; }

# run_variant PORT: the variant named in $v_bin and $v_opts (set before start)
# shellcheck disable=SC2086
run_variant() {
    [ "$v_bin" = relay_ref ] && exec "$tmp/relay_ref" -l 127.0.0.1 -p "$1" -w 2
    exec "$v_bin" -f -o server.listen="127.0.0.1:$1" -o storage.path="$tmp/$v_name.db" \
        -o server.control_socket="$tmp/$v_name.sock" $COMMON $v_opts
}

names=""
while IFS='|' read -r v_name v_bin v_opts; do
    [ -n "$v_name" ] || continue
    case $v_bin in relay_ref | /*) ;; *) v_bin=$top/$v_bin ;; esac
    start "$v_name" run_variant
    names="$names $v_name"
    eval "port_$v_name=$server_port pid_$v_name=$server_pid bin_$v_name=\$v_bin"
    [ "$v_bin" = relay_ref ] && continue
    "$BENCH" reg --port "$server_port" --users $((2 * PAIRS)) --out "$tmp/ids.$v_name" \
        --prefix pm_ -c 32 --timeout $REG_TIMEOUT -q >/dev/null || { say "$v_name: register failed"; exit 1; }
done <<EOF
$VARIANTS
EOF

# count NAME N: perf stat of NAME's processes over a ping-pong of N round trips per pair
count() {
    eval "c_port=\$port_$1 c_pid=\$pid_$1 c_bin=\$bin_$1"
    c_pids=$c_pid$(for p in $(pgrep -P "$c_pid"); do printf ',%s' "$p"; done)
    perf stat -x, -e "$events" -p "$c_pids" -o "$tmp/perf.$1.$2" &
    c_perf=$!
    sleep $PERF_SETTLE
    if [ "$c_bin" = relay_ref ]; then
        set -- "$1" "$2" --synthetic
    else
        set -- "$1" "$2" --ids "$tmp/ids.$1" --sources "$SOURCES"
    fi
    timeout $RUN_LIMIT "$BENCH" pingpong --port "$c_port" --pairs $PAIRS -n "$2" -d $RUN_LIMIT "${@:3}" -q \
        >"$tmp/out.$1.$2" 2>&1
    c_rc=$?
    kill -INT $c_perf
    wait $c_perf
    return $c_rc
}

# per_msg NAME: the difference of the two runs' counts, per message
per_msg() {
    join -t, -1 3 -2 3 <(grep -v '^#' "$tmp/perf.$1.$N1" | grep , | sort -t, -k3) \
        <(grep -v '^#' "$tmp/perf.$1.$N2" | grep , | sort -t, -k3) |
        awk -F, -v m=$(((N2 - N1) * 2 * PAIRS)) '
            { d = $8 - $2; e = $1; sub(/^syscalls:sys_enter_/, "", e) }
            e == "task-clock" { printf " cpu_us=%.2f", d * 1000 / m; next }
            e == "context-switches" { printf " cswitch=%.3f", d / m; next }
            e == "raw_syscalls:sys_enter" { printf " syscalls=%.3f", d / m; next }
            { if (d / m >= 0.001) printf " %s=%.3f", e, d / m }
            END { print "" }'
}

say "machine: $(nproc) CPU, load $(cut -d' ' -f1-3 /proc/loadavg); N1=$N1 N2=$N2 runs=$RUNS"
for run in $(seq "$RUNS"); do
    for v in $names; do
        count "$v" "$N1" && count "$v" "$N2" || { say "$v: ping-pong failed"; tail -n 3 "$tmp/out.$v.$N2"; continue; }
        line=$(tail -n 1 "$tmp/out.$v.$N2")
        printf '%-8s run %s load=%s rate=%s errors=%s%s\n' "$v" "$run" "$(cut -d' ' -f1 /proc/loadavg)" \
            "$(field "$line" rate)" "$(field "$line" errors)" "$(per_msg "$v")"
    done
done
