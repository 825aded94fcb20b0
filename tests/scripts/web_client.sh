#!/bin/sh
# web_client.sh - the web client in a real browser: Debian's headless
# chromium driven by playwright-core (tests/web/scenario.js, which says what
# is checked), against a private qchatd serving [websocket] listen and the
# web client from the source tree's web/.
#
#   B=build sh tests/scripts/web_client.sh
#
# playwright-core is installed with `npm ci` from the checked-in
# tests/web/package-lock.json into $B/web-test (once; no browser download:
# it drives /usr/bin/chromium).  Screenshots (1280x800 and 390x844) go to
# $B/test-logs/web_client/.  The server restart in the scenario is
# tests' own: qchatd is stopped by PID and started again on the same ports
# and database.
#
# Exit 0 when every check passed, 1 when one failed (a qchatd that does not
# know [websocket] listen, or does not listen on it, fails too: the workers
# serve browsers now), 77 (SKIP) only when chromium / node / npm / curl are
# not installed.

top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
B=${B:-build}
case $B in /*) ;; *) B=$top/$B ;; esac
QCHATD=$B/qchatd
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
. "$top/tests/harness/lib.sh"

PORT_MIN=20000
PORT_SPAN=12000
PORT_ATTEMPTS=5
POLL=0.05
START_WAIT=10             # seconds for qchatd to listen
WS_WAIT=3                 # seconds for the websocket port after the TCP one
STOP_WAIT=10
RESTART_PAUSE=2           # seconds qchatd stays down in the restart
SCENARIO_LIMIT=240        # seconds the browser scenario may take
OUT=$B/test-logs/web_client
NPM_DIR=$B/web-test

failed=0
pids=""
tmp=$(mktemp -d /tmp/web_client.XXXXXX) || exit 1

say() { echo "web_client: $*"; }
skip() {
    say "SKIP $*"
    rm -rf "$tmp"
    exit 77
}

finish() {
    [ -s "$tmp/qchatd.pid" ] && stop_pid "$(cat "$tmp/qchatd.pid")" "$STOP_WAIT" qchatd
    finish_script
}
trap finish EXIT
trap 'exit 1' INT TERM

for tool in node npm ss curl timeout; do
    command -v "$tool" >/dev/null 2>&1 || skip "$tool not found (apt-get install nodejs npm iproute2 curl)"
done
[ -x "$CHROMIUM" ] || skip "$CHROMIUM not found (apt-get install chromium)"
[ -x "$QCHATD" ] || { say "FAIL $QCHATD not built"; exit 1; }

# ---- does this qchatd serve browsers? ---------------------------------------

if ! "$QCHATD" -t -o storage.path="$tmp/probe.db" -o websocket.listen=127.0.0.1:1 \
    >"$tmp/probe.log" 2>&1; then
    say "FAIL qchatd does not accept [websocket] listen: $(grep -m1 -i websocket "$tmp/probe.log")"
    failed=1
    exit 1
fi

tcp_port=""
for _ in 1 2 3 4 5; do
    p=$(random_port)
    port_free "$p" && { tcp_port=$p; break; }
done
[ -n "$tcp_port" ] || { say "FAIL no free port"; exit 1; }

# start.sh WS_PORT: qchatd on the TCP port and WS_PORT, its PID in
# $tmp/qchatd.pid (exec keeps it); the first start and the scenario's restart
cat >"$tmp/start.sh" <<START
#!/bin/sh
echo \$\$ >"$tmp/qchatd.pid"
exec "$QCHATD" -f -o server.listen="127.0.0.1:$tcp_port" -o websocket.listen="127.0.0.1:\$1" \\
    -o websocket.web_root="$top/web" -o storage.path="$tmp/q.db" \\
    -o server.control_socket="$tmp/ctl.sock" -o security.password_cost=1 \\
    -o server.workers=2 -o log.level=info
START
run_qchatd_on() {
    sh "$tmp/start.sh" "$1" >>"$tmp/qchatd.log" 2>&1 &
}

ws_port=""
attempt=0
while [ -z "$ws_port" ] && [ "$attempt" -lt "$PORT_ATTEMPTS" ]; do
    attempt=$((attempt + 1))
    p=$(random_port)
    [ "$p" != "$tcp_port" ] && port_free "$p" || continue
    run_qchatd_on "$p"
    if ! wait_until "$START_WAIT" accepting "$tcp_port"; then
        [ -s "$tmp/qchatd.pid" ] && stop_pid "$(cat "$tmp/qchatd.pid")" "$STOP_WAIT" qchatd
        continue
    fi
    if ! wait_until "$WS_WAIT" accepting "$p"; then
        say "FAIL qchatd listens on 127.0.0.1:$tcp_port but not on websocket.listen 127.0.0.1:$p"
        failed=1
        exit 1
    fi
    ws_port=$p
done
[ -n "$ws_port" ] || { say "FAIL qchatd did not start"; tail -n 20 "$tmp/qchatd.log"; failed=1; exit 1; }

base=http://127.0.0.1:$ws_port
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H 'Upgrade: websocket' \
    -H 'Connection: Upgrade' -H 'Sec-WebSocket-Version: 13' \
    -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' -H "Origin: $base" "$base/ws")
if [ "$code" != 101 ]; then
    say "FAIL GET /ws with a valid handshake answered $code, not 101"
    failed=1
    exit 1
fi
say "ok   qchatd on 127.0.0.1:$tcp_port, browsers on $base (101 on /ws)"

# ---- playwright-core, from the lock file ------------------------------------

mkdir -p "$NPM_DIR" "$OUT" || exit 1
if ! cmp -s "$top/tests/web/package-lock.json" "$NPM_DIR/package-lock.json" ||
    [ ! -d "$NPM_DIR/node_modules/playwright-core" ]; then
    cp "$top/tests/web/package.json" "$top/tests/web/package-lock.json" "$NPM_DIR/" || exit 1
    if ! (cd "$NPM_DIR" && npm ci --no-audit --no-fund >"$tmp/npm.log" 2>&1); then
        say "FAIL npm ci of tests/web/package-lock.json:"
        tail -n 20 "$tmp/npm.log"
        failed=1
        exit 1
    fi
fi

# ---- the restart the scenario asks for ---------------------------------------

cat >"$tmp/restart.sh" <<RESTART
#!/bin/sh
. "$top/tests/harness/lib.sh"
POLL=$POLL
pid=\$(cat "$tmp/qchatd.pid")
kill -TERM "\$pid"
wait_until $STOP_WAIT gone "\$pid" || kill -KILL "\$pid"
sleep $RESTART_PAUSE
sh "$tmp/start.sh" "$ws_port" >>"$tmp/qchatd.log" 2>&1 &
wait_until $START_WAIT accepting "$ws_port"
RESTART

# ---- the scenario --------------------------------------------------------------

rm -f "$OUT"/*.png
NODE_PATH=$NPM_DIR/node_modules CHROMIUM=$CHROMIUM \
    timeout -k 10 "$SCENARIO_LIMIT" node "$top/tests/web/scenario.js" "$base" "$OUT" \
    "sh $tmp/restart.sh" 2>&1 | tee "$tmp/scenario.log" | sed 's/^/web_client: /'
if ! grep -q '^all checks passed' "$tmp/scenario.log"; then
    failed=1
    say "FAIL the browser scenario (qchatd log: $tmp/qchatd.log)"
    exit 1
fi
shots=$(ls "$OUT"/*.png 2>/dev/null | wc -l)
say "ok   $shots screenshots in $OUT"
exit 0
