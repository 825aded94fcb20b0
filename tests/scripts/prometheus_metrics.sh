#!/bin/sh
# prometheus_metrics.sh - qchatd's GET /metrics scraped by a real Prometheus.
#
#  1. A private qchatd (2 workers, SQLite in a temporary directory,
#     metrics.listen on a free loopback port) and a private Prometheus
#     (Debian's prometheus package: its own configuration, scrape_interval
#     1s, its data in the temporary directory, on another loopback port).
#  2. GET /metrics passes "promtool check metrics" and answers HEAD; other
#     paths get 404, other methods 405; garbage gets 400, a header over the
#     request limit 431; 20 idle connections (more than the server keeps)
#     are all closed by the per-request deadline, then GET works again.
#  3. Traffic through the installed client in script mode: two users
#     register, one logs in with a wrong password (refused), both log in,
#     CHATS one-to-one chats from one to the other (online: delivered),
#     and after the recipient left, CHATS_OFFLINE more (stored).
#  4. Prometheus's HTTP API (/api/v1/query) must then report exactly:
#     qchat_messages_total{type="one"} = CHATS + CHATS_OFFLINE,
#     qchat_deliveries_total{path="stored"} = CHATS_OFFLINE,
#     qchat_logins_total{result="ok"} = 2, {result="bad_credentials"} = 1,
#     qchat_delivery_seconds_count >= CHATS + CHATS_OFFLINE, the target up,
#     and qchatctl stats prints the same messages counter.
#
# Uses $B/qchatd, $B/qchat, $B/qchatctl (B defaults to build).  Exit 0 when
# every check holds, 1 otherwise; 77 (skipped) without prometheus/promtool.

top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
PROG=prometheus_metrics
. "$top/tests/harness/lib.sh"
build=${B:-build}
case $build in /*) ;; *) build=$top/$build ;; esac
QCHATD=$build/qchatd
QCHAT=$build/qchat
QCHATCTL=$build/qchatctl
START_WAIT=15
STOP_WAIT=10
SCRAPE_WAIT=20     # seconds for Prometheus to see the final values
CHATS=7
CHATS_OFFLINE=3
PASSWORD=prom-secret

say() { echo "$PROG: $*"; }
for tool in prometheus promtool curl python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "SKIP: $PROG: $tool not found (Debian packages prometheus, curl)"
        exit 77
    fi
done
[ -x "$QCHATD" ] && [ -x "$QCHAT" ] && [ -x "$QCHATCTL" ] || die "build first (make)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/qchat-prom.XXXXXX") || exit 1
tmp=$(absdir "$tmp")
pids=""
failed=0
trap 'finish_script' EXIT
trap 'exit 1' HUP INT TERM
fail() { say "FAIL: $*"; failed=$((failed + 1)); }

# 1. qchatd with metrics; the metrics port is drawn first and must be free.
metrics_port=$(random_port)
while ! port_free "$metrics_port"; do metrics_port=$(random_port); done
run_qchatd() {
    exec "$QCHATD" -f -o "server.listen=127.0.0.1:$1" -o server.workers=2 \
        -o "storage.path=$tmp/qchat.db" -o "server.control_socket=$tmp/qchatd.sock" \
        -o "metrics.listen=127.0.0.1:$metrics_port" -o security.password_cost=1
}
start_server qchatd run_qchatd || exit 1
qport=$server_port
wait_until "$START_WAIT" listening "$metrics_port" || { fail "no metrics port"; exit 1; }

cat > "$tmp/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: qchat
    static_configs:
      - targets: ['127.0.0.1:$metrics_port']
YML
run_prometheus() {
    exec prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/tsdb" \
        --web.listen-address="127.0.0.1:$1" --log.level=warn
}
start_server prometheus run_prometheus || exit 1
pport=$server_port

# 2. the endpoint itself
curl -sf "http://127.0.0.1:$metrics_port/metrics" > "$tmp/metrics.txt" || fail "GET /metrics"
if ! promtool check metrics < "$tmp/metrics.txt" > "$tmp/promtool.out" 2>&1; then
    fail "promtool check metrics:"
    cat "$tmp/promtool.out"
fi
for name in qchat_connections qchat_sessions qchat_messages_total qchat_deliveries_total \
    qchat_delivery_seconds_bucket qchat_store_seconds_bucket qchat_logins_total \
    qchat_relay_up qchat_worker_restarts_total qchat_output_queue_bytes qchat_storage_errors_total \
    qchat_rate_limited_total qchat_slow_readers_kicked_total; do
    grep -q "^$name[ {]" "$tmp/metrics.txt" || fail "/metrics has no $name"
done
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
[ "$(code "http://127.0.0.1:$metrics_port/nope")" = 404 ] || fail "GET /nope is not 404"
[ "$(code -X POST "http://127.0.0.1:$metrics_port/metrics")" = 405 ] || fail "POST is not 405"
[ "$(code -I "http://127.0.0.1:$metrics_port/metrics")" = 200 ] || fail "HEAD is not 200"
cat > "$tmp/abuse.py" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
def talk(data, wait=3.0):
    s = socket.create_connection(("127.0.0.1", port)); s.settimeout(wait)
    try:
        s.sendall(data)
    except OSError:
        pass
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b: break
            out += b
    except OSError:
        pass
    s.close(); return out.split(b"\r\n", 1)[0].decode(errors="replace")
fails = []
r = talk(b"GARBAGE\r\n\r\n");            r == "HTTP/1.1 400 Bad Request" or fails.append("garbage: " + r)
r = talk(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n")
r.startswith("HTTP/1.1 431") or fails.append("big header: " + r)
idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
for s in idle: s.settimeout(8)
t0 = time.time(); closed = 0
for s in idle:
    try:
        if s.recv(1) == b"": closed += 1
    except OSError: pass
took = time.time() - t0
closed == 20 or fails.append("idle connections not closed: %d" % closed)
took < 7.5 or fails.append("idle connections closed after %.1f s" % took)
r = talk(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"); r == "HTTP/1.1 200 OK" or fails.append("after idle: " + r)
print("\n".join(fails) if fails else "metrics_http abuse ok (idle closed in %.1f s)" % took)
sys.exit(1 if fails else 0)
PY
python3 "$tmp/abuse.py" "$metrics_port" > "$tmp/abuse.out" 2>&1 || fail "$(cat "$tmp/abuse.out")"

# 3. traffic
client() { timeout 30 "$QCHAT" 127.0.0.1 "$qport" > "$tmp/$1.out" 2>&1; }
printf 'register:alice:%s\nregister:bob:%s\nquit\n' "$PASSWORD" "$PASSWORD" | client reg
a=$(sed -n 's/^registered id \([0-9]*\)$/\1/p' "$tmp/reg.out" | sed -n 1p)
b=$(sed -n 's/^registered id \([0-9]*\)$/\1/p' "$tmp/reg.out" | sed -n 2p)
[ -n "$a" ] && [ -n "$b" ] || { fail "register:"; cat "$tmp/reg.out"; exit 1; }
printf 'login:%s:wrong\nquit\n' "$a" | client bad
grep -q '^error 1:' "$tmp/bad.out" || fail "a wrong password was not refused: $(cat "$tmp/bad.out")"

{ printf 'login:%s:%s\nwait:4000\nquit\n' "$b" "$PASSWORD"; } | client bob &
bob=$!
wait_until 10 grep -q '^logged in' "$tmp/bob.out" || fail "bob did not log in"
{
    printf 'login:%s:%s\n' "$a" "$PASSWORD"
    i=0
    while [ $i -lt $CHATS ]; do printf 'chat:%s:hello %s\n' "$b" $i; i=$((i + 1)); done
    printf 'quit\n'
} | client alice
wait "$bob"
[ "$(grep -c '^sent: mid' "$tmp/alice.out")" -eq $CHATS ] || fail "alice's chats: $(cat "$tmp/alice.out")"
[ "$(grep -c 'said: hello' "$tmp/bob.out")" -eq $CHATS ] || fail "bob's chats: $(cat "$tmp/bob.out")"
{
    printf 'login:%s:%s\n' "$a" "$PASSWORD"
    i=0
    while [ $i -lt $CHATS_OFFLINE ]; do printf 'chat:%s:later %s\n' "$b" $i; i=$((i + 1)); done
    printf 'quit\n'
} | client alice2
[ "$(grep -c '^sent: mid' "$tmp/alice2.out")" -eq $CHATS_OFFLINE ] ||
    fail "alice's offline chats: $(cat "$tmp/alice2.out")"

# 4. what Prometheus scraped
query() {
    curl -sf --data-urlencode "query=$1" "http://127.0.0.1:$pport/api/v1/query" |
        sed -n 's/.*"value":\[[0-9.]*,"\([^"]*\)"\].*/\1/p'
}
# expect QUERY OP VALUE: wait until Prometheus's answer compares, else fail.
expect() {
    lib_deadline=$(($(date +%s) + SCRAPE_WAIT))
    while :; do
        got=$(query "$1")
        [ -n "$got" ] && [ "${got%.*}" "$2" "$3" ] && return 0
        [ "$(date +%s)" -ge "$lib_deadline" ] && break
        sleep 0.5
    done
    fail "Prometheus: $1 = '${got}', expected $2 $3"
}
total=$((CHATS + CHATS_OFFLINE))
expect 'up{job="qchat"}' -eq 1
expect 'qchat_messages_total{type="one"}' -eq $total
expect 'qchat_messages_total{type="group"}' -eq 0
expect 'qchat_deliveries_total{path="stored"}' -eq $CHATS_OFFLINE
expect 'sum(qchat_deliveries_total{path=~"local|worker"})' -eq $CHATS
expect 'qchat_logins_total{result="ok"}' -eq 3
expect 'qchat_logins_total{result="bad_credentials"}' -eq 1
expect 'qchat_delivery_seconds_count' -ge $total
expect 'qchat_store_seconds_count' -ge 1
expect 'qchat_workers_running' -eq 2
expect 'qchat_worker_restarts_total' -eq 0

"$QCHATCTL" -s "$tmp/qchatd.sock" stats > "$tmp/stats.out" 2>&1 || fail "qchatctl stats failed"
grep -Eq '^qchat_messages_total\{type="one"\} +'"$total"'$' "$tmp/stats.out" ||
    { fail "qchatctl stats:"; cat "$tmp/stats.out"; }
grep -Eq '^qchat_delivery_seconds +[0-9]+ observed, mean' "$tmp/stats.out" ||
    fail "qchatctl stats shows no delivery histogram"

if [ "$failed" -ne 0 ]; then
    exit 1
fi
say "Prometheus scraped $total chats, 3 logins ok, 1 refused; promtool clean"
exit 0
