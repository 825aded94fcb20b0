#!/bin/sh
# web_tls.sh - browsers over https/wss through nginx, the way
# etc/nginx-qchat-web.conf tells operators to do it: the shipped example,
# with its names, ports and certificate paths replaced, in a private nginx
# in front of a private qchatd's [websocket] listen.
#
#   B=build sh tests/scripts/web_tls.sh
#
# In a temporary directory: a throwaway self-signed certificate for
# localhost, qchatd (websocket.listen on a free port, the web client from
# web/), nginx (-p DIR, only http; the example included in http {}).  Then:
#   1. GET / over https (certificate verified with curl) is the web client;
#   2. GET /ws with a WebSocket handshake over https answers 101 through
#      nginx (Upgrade passed on, Origin https://localhost:PORT accepted);
#   3. plain http is redirected to https;
#   4. headless chromium loads https://localhost:PORT/, registers and logs
#      in over wss:// (tests/web/tls_smoke.js; playwright-core from the
#      lock file, installed by web_client.sh's rule into $B/web-test).
# Both servers are stopped by PID.  Exit 0 when every check passed, 1 when
# one failed (a qchatd that serves no [websocket] listen fails), 77 (SKIP)
# only when a tool is missing.

top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
B=${B:-build}
case $B in /*) ;; *) B=$top/$B ;; esac
QCHATD=$B/qchatd
NGINX=${NGINX:-nginx}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
. "$top/tests/harness/lib.sh"

PORT_MIN=20000
PORT_SPAN=12000
PORT_ATTEMPTS=5
POLL=0.05
START_WAIT=10
WS_WAIT=3
STOP_WAIT=10
BROWSER_LIMIT=120
NPM_DIR=$B/web-test
OUT=$B/test-logs/web_tls

passed=0
failed=0
pids=""
tmp=$(mktemp -d /tmp/web_tls.XXXXXX) || exit 1

say() { echo "web_tls: $*"; }
ok() {
    passed=$((passed + 1))
    say "ok   $1"
}
fail() {
    failed=$((failed + 1))
    say "FAIL $1"
}
skip() {
    say "SKIP $*"
    rm -rf "$tmp"
    exit 77
}
trap finish_script EXIT
trap 'exit 1' INT TERM

for tool in "$NGINX" openssl curl node npm ss timeout; do
    command -v "$tool" >/dev/null 2>&1 || skip "$tool not found (apt-get install nginx-light openssl curl nodejs npm)"
done
[ -x "$CHROMIUM" ] || skip "$CHROMIUM not found (apt-get install chromium)"
[ -x "$QCHATD" ] || { fail "$QCHATD not built"; exit 1; }
if ! "$QCHATD" -t -o storage.path="$tmp/probe.db" -o websocket.listen=127.0.0.1:1 >/dev/null 2>&1; then
    fail "qchatd does not accept [websocket] listen"
    exit 1
fi

# run_qchatd TCP_PORT: clients on TCP_PORT, browsers on $ws_port
run_qchatd() {
    exec "$QCHATD" -f -o server.listen="127.0.0.1:$1" -o websocket.listen="127.0.0.1:$ws_port" \
        -o websocket.web_root="$top/web" -o storage.path="$tmp/q.db" \
        -o server.control_socket="$tmp/ctl.sock" -o security.password_cost=1 \
        -o server.workers=1 -o log.level=info
}

# run_nginx TLS_PORT: the shipped example on TLS_PORT (http on $http_port)
run_nginx() {
    sed -e "s|server 127.0.0.1:6081 .*|server 127.0.0.1:$ws_port;|" \
        -e "/server 127.0.0.1:6082/d" \
        -e "s|listen 80;|listen 127.0.0.1:$http_port;|" \
        -e "s|listen 443 ssl;|listen 127.0.0.1:$1 ssl;|" \
        -e "s|chat.example.org;|localhost;|" \
        -e "s|/etc/ssl/certs/chat.example.org.pem|$tmp/cert.pem|" \
        -e "s|/etc/ssl/private/chat.example.org.key|$tmp/key.pem|" \
        "$top/etc/nginx-qchat-web.conf" >"$tmp/qchat-web.conf" || exit 1
    cat >"$tmp/nginx.conf" <<NGINX
# web_tls.sh: nginx terminates TLS for browsers in front of qchatd.
daemon off;
master_process on;
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/error.log info;
events { worker_connections 64; }
http {
    access_log $tmp/access.log;
    client_body_temp_path $tmp/body;
    proxy_temp_path $tmp/proxy;
    fastcgi_temp_path $tmp/fastcgi;
    uwsgi_temp_path $tmp/uwsgi;
    scgi_temp_path $tmp/scgi;
    include $tmp/qchat-web.conf;
}
NGINX
    "$NGINX" -t -p "$tmp/" -c "$tmp/nginx.conf" -e "$tmp/error.log" || exit 1
    exec "$NGINX" -p "$tmp/" -c "$tmp/nginx.conf" -e "$tmp/error.log"
}

free_port() {
    for _ in 1 2 3 4 5; do
        lib_p=$(random_port)
        port_free "$lib_p" && { echo "$lib_p"; return 0; }
    done
    return 1
}

# ---- certificate and servers --------------------------------------------------

if openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -days 1 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$tmp/openssl.out" 2>&1; then
    ok "self-signed certificate"
else
    fail "self-signed certificate"
    exit 1
fi

ws_port=$(free_port) || { fail "no free port"; exit 1; }
start_server qchatd run_qchatd || { fail "qchatd start"; exit 1; }
if ! wait_until "$WS_WAIT" accepting "$ws_port"; then
    fail "qchatd does not listen on websocket.listen 127.0.0.1:$ws_port"
    exit 1
fi
ok "qchatd, browsers on 127.0.0.1:$ws_port"

http_port=$(free_port) || { fail "no free port"; exit 1; }
start_server nginx run_nginx || { fail "nginx start"; sed 's/^/    /' "$tmp/error.log"; exit 1; }
tls_port=$server_port
grep -q "test is successful" "$tmp/nginx.log" && ok "nginx -t of the shipped example" ||
    fail "nginx -t of the shipped example"
base=https://localhost:$tls_port

# ---- https and wss through nginx ------------------------------------------------

curl_tls() {
    curl -s --max-time 5 --cacert "$tmp/cert.pem" --resolve "localhost:$tls_port:127.0.0.1" "$@"
}
if curl_tls -o "$tmp/index.html" -w '%{http_code}' "$base/" | grep -qx 200 &&
    grep -q '<title>qchat</title>' "$tmp/index.html"; then
    ok "GET / over https (certificate verified) is the web client"
else
    fail "GET / over https"
fi
code=$(curl_tls -o /dev/null -w '%{http_code}' -H 'Upgrade: websocket' -H 'Connection: Upgrade' \
    -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' \
    -H "Origin: $base" "$base/ws")
[ "$code" = 101 ] && ok "WebSocket handshake through nginx: 101" ||
    fail "WebSocket handshake through nginx answered $code"
code=$(curl_tls -o /dev/null -w '%{http_code}' -H 'Upgrade: websocket' -H 'Connection: Upgrade' \
    -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' \
    -H "Origin: https://evil.example" "$base/ws")
[ "$code" = 403 ] && ok "a foreign Origin through nginx: 403" ||
    fail "a foreign Origin through nginx answered $code"
loc=$(curl -s --max-time 5 -o /dev/null -w '%{redirect_url}' "http://127.0.0.1:$http_port/x")
case $loc in https://*) ok "plain http redirects to https" ;; *) fail "http redirect: '$loc'" ;; esac

# ---- a real browser over wss --------------------------------------------------------

mkdir -p "$NPM_DIR" "$OUT" || exit 1
if ! cmp -s "$top/tests/web/package-lock.json" "$NPM_DIR/package-lock.json" ||
    [ ! -d "$NPM_DIR/node_modules/playwright-core" ]; then
    cp "$top/tests/web/package.json" "$top/tests/web/package-lock.json" "$NPM_DIR/" &&
        (cd "$NPM_DIR" && npm ci --no-audit --no-fund >"$tmp/npm.log" 2>&1) ||
        { fail "npm ci of tests/web/package-lock.json"; exit 1; }
fi
if NODE_PATH=$NPM_DIR/node_modules CHROMIUM=$CHROMIUM timeout -k 10 "$BROWSER_LIMIT" \
    node "$top/tests/web/tls_smoke.js" "$base" "$OUT/https-laptop.png" >"$tmp/browser.log" 2>&1 &&
    grep -q '^all checks passed' "$tmp/browser.log"; then
    ok "chromium: page over https, register and login over wss"
else
    fail "chromium over https/wss:"
    sed 's/^/    /' "$tmp/browser.log"
fi

say "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
