#!/bin/sh
# bench_smoke.sh - qchat-bench works: a short, bounded functional run of each
# mode against relay_ref (the yardstick) and, when $B/qchatd exists, against
# a private qchatd (over TCP, and over its websocket listener with --ws).
# Not a timed test: it asserts that every run ends with
# exit status 0, zero errors (lost, misrouted, duplicate, stalls...), a
# summary line that parses, and a --json object that parses.
#
#   B=build sh tests/scripts/bench_smoke.sh
#
# relay_ref.c is looked for in $RELAY_REF_SRC, tests/harness/relay_ref.c and
# ../shared/bench/relay_ref.c; without it that half is skipped.  Servers run
# on free 127.0.0.1 ports in a temporary directory and are stopped by PID.
# Exit 0 when every check passed, 1 otherwise.

top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
B=${B:-build}
case $B in /*) ;; *) B=$top/$B ;; esac
BENCH=$B/qchat-bench
QCHATD=$B/qchatd
. "$top/tests/harness/lib.sh"

PORT_MIN=20000
PORT_SPAN=12000           # below the ephemeral range (32768..)
PORT_ATTEMPTS=5
START_WAIT=10             # seconds for a server to listen
STOP_WAIT=10              # seconds for a server to stop before SIGKILL
POLL=0.1
RUN_LIMIT=60              # seconds any one qchat-bench run may take
GO_WAIT=1                 # seconds a conns run must keep waiting for its go file
CC=${CC:-cc}

passed=0
failed=0
pids=""
tmp=$(mktemp -d /tmp/bench_smoke.XXXXXX) || exit 1

say() { echo "bench_smoke: $*"; }

trap finish_script EXIT
trap 'exit 1' INT TERM

run_relay_ref() {
    exec "$tmp/relay_ref" -l 127.0.0.1 -p "$1" -w 2
}

run_qchatd() {
    exec "$QCHATD" -f -o server.listen="127.0.0.1:$1" -o websocket.listen="127.0.0.1:$ws_port" \
        -o storage.path="$tmp/q/q.db" \
        -o server.control_socket="$tmp/q/ctl.sock" -o security.password_cost=1 \
        -o security.request_rate=0 -o log.level=warning
}

ok() {
    passed=$((passed + 1))
    say "ok   $1"
}

fail() {
    failed=$((failed + 1))
    say "FAIL $1"
    [ -f "$tmp/out" ] && sed 's/^/    /' "$tmp/out"
    [ -f "$tmp/err" ] && sed 's/^/    /' "$tmp/err"
}

# field LINE KEY: the value of KEY=VALUE in a summary line
field() {
    printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}

# json_check FILE: the object parses and says errors == 0
json_check() {
    if command -v jq >/dev/null 2>&1; then
        jq -e '.errors == 0 and (.mode | type == "string") and (.latency_us.p99 | type == "number")' \
            "$1" >/dev/null 2>&1
    elif command -v python3 >/dev/null 2>&1; then
        python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); sys.exit(0 if o["errors"]==0 and isinstance(o["latency_us"]["p99"],(int,float)) else 1)' "$1"
    else
        grep -q '^{"mode":".*"errors":0,.*}$' "$1"
    fi
}

# check NAME COUNT_KEY MODE [ARGS...]: run qchat-bench, expect exit 0, zero
# errors, and the mode's summary line with COUNT_KEY above 0
check() {
    name=$1
    count_key=$2
    shift 2
    rm -f "$tmp/out" "$tmp/err"
    timeout $RUN_LIMIT "$BENCH" "$@" -q --deadline $RUN_LIMIT >"$tmp/out" 2>"$tmp/err"
    rc=$?
    line=$(tail -n 1 "$tmp/out")
    if [ $rc -ne 0 ]; then
        fail "$name (exit $rc)"
        return 1
    fi
    case $line in
    "$1 "*) ;;
    *) fail "$name (no '$1' summary line)"; return 1 ;;
    esac
    for k in errors lost misrouted dup reorder stalls srverr; do
        if [ "$(field "$line" $k)" != 0 ]; then
            fail "$name ($k=$(field "$line" $k))"
            return 1
        fi
    done
    v=$(field "$line" "$count_key")
    if [ -z "$v" ] || [ "$v" = 0 ]; then
        fail "$name ($count_key=${v:-missing})"
        return 1
    fi
    ok "$name"
    return 0
}

check_json() {
    name=$1
    shift
    rm -f "$tmp/out" "$tmp/err"
    timeout $RUN_LIMIT "$BENCH" "$@" -q --json --deadline $RUN_LIMIT >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ $rc -eq 0 ] && json_check "$tmp/out"; then
        ok "$name"
    else
        fail "$name (exit $rc or bad JSON)"
    fi
}

# check_go_file PORT: a conns run waits for its --go-file before the hold
check_go_file() {
    rm -f "$tmp/ready" "$tmp/go" "$tmp/out" "$tmp/err"
    timeout $RUN_LIMIT "$BENCH" conns --port "$1" --synthetic --id-base 5000 --conns 50 -d 0.2 \
        --ready-file "$tmp/ready" --go-file "$tmp/go" --timeout 20 -q >"$tmp/out" 2>"$tmp/err" &
    gpid=$!
    wait_started "$gpid" "$START_WAIT" test -s "$tmp/ready"
    sleep $GO_WAIT
    if ! kill -0 $gpid 2>/dev/null; then
        wait $gpid
        fail "conns --go-file (ended before the go file existed)"
        return
    fi
    : >"$tmp/go"
    wait $gpid
    rc=$?
    line=$(tail -n 1 "$tmp/out")
    if [ $rc -eq 0 ] && [ "$(field "$line" received)" = 50 ]; then
        ok "conns --go-file"
    else
        fail "conns --go-file (exit $rc)"
    fi
}

find_relay_src() {
    for f in "${RELAY_REF_SRC:-}" "$top/tests/harness/relay_ref.c" "$top/../shared/bench/relay_ref.c"; do
        [ -n "$f" ] && [ -f "$f" ] && { echo "$f"; return 0; }
    done
    return 1
}

# ---- command line ---------------------------------------------------------

if [ ! -x "$BENCH" ]; then
    say "FAIL $BENCH not built"
    exit 1
fi
if "$BENCH" --help >"$tmp/out" 2>&1 && grep -q -- '--synthetic' "$tmp/out" &&
    grep -q -- '--json' "$tmp/out"; then
    ok "--help"
else
    fail "--help"
fi
"$BENCH" pingpong --no-such-option >/dev/null 2>&1
if [ $? -eq 2 ]; then ok "usage error exits 2"; else fail "usage error exits 2"; fi
"$BENCH" nosuchmode >/dev/null 2>&1
if [ $? -eq 2 ]; then ok "unknown mode exits 2"; else fail "unknown mode exits 2"; fi

# ---- relay_ref ------------------------------------------------------------

if src=$(find_relay_src); then
    if $CC -O2 -o "$tmp/relay_ref" "$src" 2>"$tmp/cc.log"; then
        if start_server relay_ref run_relay_ref; then
            rp=$server_port
            check "relay_ref pingpong" msgs pingpong --port "$rp" --synthetic --pairs 20 -k 2 -d 1
            check "relay_ref pingpong -j 2 --count" msgs \
                pingpong --port "$rp" --synthetic --id-base 100 --pairs 10 -n 200 -j 2 -d 5
            check_json "relay_ref pingpong --json" pingpong --port "$rp" --synthetic --pairs 5 -d 0.5
            check "relay_ref reg" registered reg --port "$rp" --users 50 --out "$tmp/ids"
            if [ "$(wc -l <"$tmp/ids")" -eq 50 ]; then ok "ids file has 50 lines"; else fail "ids file"; fi
            check "relay_ref pingpong --ids" msgs pingpong --port "$rp" --ids "$tmp/ids" --pairs 25 -d 0.5
            check "relay_ref login" logins login --port "$rp" --synthetic --loops 4 -d 0.5
            check "relay_ref login --reconnect" logins login --port "$rp" --synthetic --loops 4 -d 0.5 --reconnect
            check "relay_ref conns" received conns --port "$rp" --synthetic --conns 200 -d 0.3 \
                --sources 127.0.0.1,127.0.0.2 --ready-file "$tmp/ready"
            if [ "$(cat "$tmp/ready" 2>/dev/null)" = 200 ]; then ok "ready file"; else fail "ready file"; fi
            check_go_file "$rp"
            stop_pids "$STOP_WAIT"
        else
            fail "relay_ref start"
        fi
    else
        fail "relay_ref build"
    fi
else
    say "skip relay_ref: relay_ref.c not found (set RELAY_REF_SRC)"
fi

# ---- qchatd ---------------------------------------------------------------

if [ -x "$QCHATD" ]; then
    mkdir -p "$tmp/q"
    ws_port=""
    for _ in 1 2 3 4 5; do
        p=$(random_port)
        port_free "$p" && { ws_port=$p; break; }
    done
    if [ -n "$ws_port" ] && start_server qchatd run_qchatd; then
        qp=$server_port
        check "qchatd reg" registered reg --port "$qp" --users 60 --out "$tmp/q/ids"
        head -n 20 "$tmp/q/ids" >"$tmp/q/ids.pp"
        sed -n '21,40p' "$tmp/q/ids" >"$tmp/q/ids.misc"
        sed -n '41,60p' "$tmp/q/ids" >"$tmp/q/ids.group"
        check "qchatd pingpong" msgs pingpong --port "$qp" --ids "$tmp/q/ids.pp" --pairs 10 -k 2 -d 1
        check "qchatd pingpong --seq" acks pingpong --port "$qp" --ids "$tmp/q/ids.pp" --pairs 5 -d 0.5 --seq
        check_json "qchatd pingpong --json" pingpong --port "$qp" --ids "$tmp/q/ids.pp" --pairs 10 -d 0.5
        check "qchatd login" logins login --port "$qp" --ids "$tmp/q/ids.misc" --loops 4 -d 0.5
        check "qchatd conns" received conns --port "$qp" --ids "$tmp/q/ids.misc" --conns 20 -d 0.3
        check "qchatd group" deliveries group --port "$qp" --ids "$tmp/q/ids.group" --members 20 -k 2 -d 0.5
        check "qchatd pingpong, registering" msgs pingpong --port "$qp" --pairs 4 -d 0.3
        check "qchatd pingpong --ws" msgs pingpong --port "$ws_port" --ws --ids "$tmp/q/ids.pp" \
            --pairs 10 -k 2 -d 1
        check "qchatd group --ws" deliveries group --port "$ws_port" --ws \
            --ids "$tmp/q/ids.group" --members 20 -k 2 -d 0.5
        check "qchatd offline" stored offline --port "$qp" --ids "$tmp/q/ids.misc" --skip 18 \
            --backlog 50 --rounds 2 -k 8
    else
        fail "qchatd start"
    fi
else
    say "skip qchatd: $QCHATD not built"
fi

say "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
