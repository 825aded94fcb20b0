# bench_lib.sh - what the bench scripts (bench.sh, bench_log.sh,
# bench_storm.sh, bench_token_logins.sh) share: their preamble, the rows
# asked for, the servers started and stopped by PID, the figures of a
# summary line and their medians.
#
# Sourced after lib.sh, never run:
#   . "$H/bench_lib.sh"
#   bench_begin NAME
# Reads from the caller: ROWS, STOP_WAIT, pids, res (the results directory).

# bench_begin NAME: B (default build, made absolute under $top) and BENCH
# (its qchat-bench); an empty pids; tmp, a fresh /tmp/qchat-NAME.XXXXXX,
# and res, its results directory; say() prefixed "NAME: "; cleanup() on
# EXIT (a script with more to stop defines its own cleanup afterwards).
bench_begin() {
    bench_name=$1
    B=${B:-build}
    case $B in /*) ;; *) B=$top/$B ;; esac
    BENCH=$B/qchat-bench
    pids=""
    tmp=$(mktemp -d "/tmp/qchat-$bench_name.XXXXXX") || exit 1
    res=$tmp/results
    mkdir -p "$res"
    trap cleanup EXIT
    trap 'exit 1' INT TERM
}

say() { echo "$bench_name: $*"; }

# cleanup: the servers started stopped by PID, tmp removed (finish_tmp).
cleanup() {
    stop_pids "$STOP_WAIT" ""
    finish_tmp
}

# want_row NAME: NAME is among ROWS
want_row() {
    case " $ROWS " in *" $1 "*) return 0 ;; esac
    return 1
}

forget_pid() {
    rest=""
    for p in $pids; do
        [ "$p" = "$1" ] || rest="$rest $p"
    done
    pids=$rest
}

# stop_server PID: stop_pid; children that outlive it (qchatd workers
# after a KILLed master) are killed by PID too.
stop_server() {
    stop_pid "$1" "$STOP_WAIT" "" || :
    forget_pid "$1"
}

# start NAME FUNC: start_server (lib.sh), or end the run.
start() {
    start_server "$@" || exit 1
}

# field LINE KEY: VALUE of KEY=VALUE in a summary line, units stripped
field() {
    printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1 | sed 's/[^0-9.]*$//'
}

# keep METRIC VALUE: remember a figure for the medians ("-": none)
keep() {
    [ -n "$2" ] && [ "$2" != - ] && echo "$2" >>"$res/$1"
    return 0
}

# median METRIC: the median of the figures kept, "-" without any
median() {
    [ -s "$res/$1" ] || { echo "-"; return; }
    sort -n "$res/$1" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# ratio A B: A / B to two places, "-" when either is missing or B is 0
ratio() {
    case "$1$2" in *-*) echo "-"; return ;; esac
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
}
