#!/bin/sh
# tls_termination.sh - TLS in front of qchatd with nginx's stream module, the
# way docs/SECURITY.md tells operators to do it: nginx terminates TLS
# (`listen PORT ssl`) and proxies the plaintext stream to qchatd on loopback.
#
#   B=build sh tests/scripts/tls_termination.sh
#
# In a temporary directory: a throwaway self-signed certificate (openssl,
# CN and subjectAltName localhost / 127.0.0.1), a private qchatd and a
# private nginx (-p DIR, its own config, pid file and logs; only the stream
# module is loaded), each on a free 127.0.0.1 port.  Then, through TLS only,
# with the certificate verified (openssl s_client -verify_return_error):
#   1. user B registers, logs in and waits for a chat;
#   2. user A registers, logs in, sends B a chat with "seq";
#   3. A gets its ACK (errno 0), B gets the chat from A.
# Plaintext sent to the TLS port must get no qchat reply (checked when
# python3 is there).  Both servers are
# stopped by PID.  Exit 0 when every check passed, 1 otherwise.

top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
B=${B:-build}
case $B in /*) ;; *) B=$top/$B ;; esac
QCHATD=$B/qchatd
STREAM_MODULE=${NGINX_STREAM_MODULE:-/usr/lib/nginx/modules/ngx_stream_module.so}
NGINX=${NGINX:-nginx}
. "$top/tests/harness/lib.sh"

PORT_MIN=20000
PORT_SPAN=12000           # 20000..31999: below the ephemeral range
PORT_ATTEMPTS=5
POLL=0.05                 # seconds between checks
START_WAIT=10             # seconds for a server to listen
STOP_WAIT=10              # seconds for a server to stop before SIGKILL
REPLY_WAIT=5              # seconds for one expected reply
CLIENT_LIMIT=30           # seconds one TLS client may run
PASSWORD=tls-test-pw

passed=0
failed=0
pids=""
tmp=$(mktemp -d /tmp/tls_termination.XXXXXX) || exit 1

say() { echo "tls_termination: $*"; }

ok() {
    passed=$((passed + 1))
    say "ok   $1"
}

fail() {
    failed=$((failed + 1))
    say "FAIL $1"
}

show() {
    [ -s "$1" ] && sed 's/^/    /' "$1"
}

trap finish_script EXIT
trap 'exit 1' INT TERM

run_qchatd() {
    exec "$QCHATD" -f -o server.listen="127.0.0.1:$1" -o storage.path="$tmp/q.db" \
        -o server.control_socket="$tmp/ctl.sock" -o security.password_cost=1 \
        -o server.workers=1 -o log.level=info
}

run_nginx() {
    write_nginx_conf "$1" || exit 1
    "$NGINX" -t -p "$tmp/" -c "$tmp/nginx.conf" -e "$tmp/error.log" || exit 1
    exec "$NGINX" -p "$tmp/" -c "$tmp/nginx.conf" -e "$tmp/error.log"
}

# write_nginx_conf PORT: TLS on 127.0.0.1:PORT, plaintext to qchatd
write_nginx_conf() {
    cat >"$tmp/nginx.conf" <<EOF
# tls_termination.sh: nginx terminates TLS and proxies to qchatd.
load_module $STREAM_MODULE;
daemon off;
master_process on;
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/error.log info;
events { worker_connections 64; }
stream {
    log_format tls '\$remote_addr [\$time_local] \$status \$ssl_protocol \$ssl_cipher'
                   ' \$bytes_received \$bytes_sent \$session_time';
    access_log $tmp/access.log tls;
    server {
        listen 127.0.0.1:$1 ssl;
        ssl_certificate     $tmp/cert.pem;
        ssl_certificate_key $tmp/key.pem;
        ssl_protocols       TLSv1.2 TLSv1.3;
        ssl_session_cache   shared:qchat_tls:1m;
        ssl_handshake_timeout 10s;
        proxy_connect_timeout 2s;
        proxy_timeout 1h;
        proxy_pass 127.0.0.1:$qchatd_port;
    }
}
EOF
}

# wait_for FILE PATTERN: 0 once a line of FILE matches, 1 after REPLY_WAIT seconds
wait_for() {
    wait_until "$REPLY_WAIT" grep -q -- "$2" "$1" 2>/dev/null
}

# id_in FILE: the "id" of the REG_MSG_ACK line in FILE
id_in() {
    grep '"msgid":4,' "$1" | head -n 1 | sed -n 's/.*"id":\([0-9][0-9]*\).*/\1/p'
}

# tls_client OUT: openssl s_client to the TLS port, verifying the certificate;
# stdin is the requests, OUT gets the replies.  Ends when stdin ends.
tls_client() {
    timeout $CLIENT_LIMIT openssl s_client -quiet -no_ign_eof \
        -connect "127.0.0.1:$tls_port" -servername localhost \
        -CAfile "$tmp/cert.pem" -verify_hostname localhost -verify_return_error \
        >"$1" 2>"$1.err"
}

# user_b: register and log in as B, then wait for A's chat.
user_b() {
    printf '{"msgid":3,"name":"tls_b_%s","password":"%s","seq":1}' "$$" "$PASSWORD"
    wait_for "$tmp/b.out" '"msgid":4,' || return
    id=$(id_in "$tmp/b.out")
    [ -n "$id" ] || return
    printf '{"msgid":1,"id":%s,"password":"%s","seq":2}' "$id" "$PASSWORD"
    wait_for "$tmp/b.out" '"msgid":2,' || return
    wait_for "$tmp/b.out" '"msgid":5,' || return
    printf '{"msgid":10,"seq":3}'
    wait_for "$tmp/b.out" '"seq":3'
}

# user_a: register and log in as A, send B one chat, wait for the ACK.
user_a() {
    printf '{"msgid":3,"name":"tls_a_%s","password":"%s","seq":1}' "$$" "$PASSWORD"
    wait_for "$tmp/a.out" '"msgid":4,' || return
    id=$(id_in "$tmp/a.out")
    [ -n "$id" ] || return
    printf '{"msgid":1,"id":%s,"password":"%s","seq":2}' "$id" "$PASSWORD"
    wait_for "$tmp/a.out" '"msgid":2,' || return
    printf '{"msgid":5,"toid":%s,"msg":"over TLS","seq":3}' "$b_id"
    wait_for "$tmp/a.out" '"seq":3' || return
    printf '{"msgid":10,"seq":4}'
    wait_for "$tmp/a.out" '"seq":4'
}

# ---- prerequisites --------------------------------------------------------

for tool in openssl "$NGINX" ss od timeout; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        say "FAIL $tool not found (apt-get install openssl nginx-light libnginx-mod-stream iproute2)"
        exit 1
    fi
done
if [ ! -x "$QCHATD" ]; then
    say "FAIL $QCHATD not built"
    exit 1
fi
if [ ! -r "$STREAM_MODULE" ]; then
    say "FAIL $STREAM_MODULE missing (apt-get install libnginx-mod-stream)"
    exit 1
fi

# ---- certificate ------------------------------------------------------------

if openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -days 1 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$tmp/openssl.out" 2>&1; then
    ok "self-signed certificate"
else
    fail "self-signed certificate"
    show "$tmp/openssl.out"
    exit 1
fi

# ---- servers ----------------------------------------------------------------

start_server qchatd run_qchatd || { fail "qchatd start"; exit 1; }
qchatd_port=$server_port
ok "qchatd on 127.0.0.1:$qchatd_port"

start_server nginx run_nginx || { fail "nginx start"; show "$tmp/error.log"; exit 1; }
tls_port=$server_port
if grep -q "test is successful" "$tmp/nginx.log"; then
    ok "nginx -t"
else
    fail "nginx -t"
    show "$tmp/nginx.log"
fi
ok "nginx TLS on 127.0.0.1:$tls_port -> 127.0.0.1:$qchatd_port"

# ---- a chat over TLS --------------------------------------------------------

: >"$tmp/b.out"
: >"$tmp/a.out"
user_b | tls_client "$tmp/b.out" &
b_client=$!
if wait_for "$tmp/b.out" '"msgid":2,"errno":0'; then
    ok "B registered and logged in over TLS"
else
    fail "B register + login over TLS"
    show "$tmp/b.out"
    show "$tmp/b.out.err"
fi
b_id=$(id_in "$tmp/b.out")

if [ -n "$b_id" ]; then
    user_a | tls_client "$tmp/a.out"
    if grep -q '"msgid":2,"errno":0' "$tmp/a.out"; then
        ok "A registered and logged in over TLS"
    else
        fail "A register + login over TLS"
    fi
    if grep '"seq":3' "$tmp/a.out" | grep -q '"msgid":11,"errno":0'; then
        ok "A's chat acknowledged (errno 0)"
    else
        fail "A's chat ACK"
        show "$tmp/a.out"
        show "$tmp/a.out.err"
    fi
fi
wait "$b_client"
a_id=$(id_in "$tmp/a.out")
if [ -n "$a_id" ] && grep '"msgid":5,' "$tmp/b.out" | grep '"msg":"over TLS"' |
    grep -q "\"id\":$a_id,"; then
    ok "B received A's chat over TLS"
else
    fail "B did not receive A's chat"
    show "$tmp/b.out"
fi
if grep -q "verify return:1" "$tmp/a.out.err" && ! grep -qi "verify error" "$tmp/a.out.err"; then
    ok "server certificate verified by the client"
else
    fail "certificate verification"
    show "$tmp/a.out.err"
fi

# ---- plaintext to the TLS port gets no qchat reply --------------------------

if command -v python3 >/dev/null 2>&1; then
    python3 - "$tls_port" >"$tmp/plain.out" 2>&1 <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b'{"msgid":14,"seq":1}')
data = b""
try:
    while True:
        d = s.recv(4096)
        if not d:
            break
        data += d
except OSError:
    pass
sys.stdout.write(repr(data))
EOF
    if ! grep -q 'msgid' "$tmp/plain.out"; then
        ok "plaintext JSON to the TLS port gets no qchat reply"
    else
        fail "plaintext reached qchatd through the TLS port"
        show "$tmp/plain.out"
    fi
fi

# ---- logs -------------------------------------------------------------------

if grep -q "logged in" "$tmp/qchatd.log"; then
    ok "qchatd logged the logins"
else
    fail "qchatd log"
    show "$tmp/qchatd.log"
fi
# nginx writes a session's line when it ends: A's and B's, soon after their clients.
two_sessions_logged() {
    tls_sessions=$(grep -c ' 200 TLSv1\.[23] ' "$tmp/access.log" 2>/dev/null)
    [ "${tls_sessions:-0}" -ge 2 ]
}
if wait_until "$REPLY_WAIT" two_sessions_logged; then
    ok "nginx access log: $tls_sessions TLS sessions proxied ($(grep ' 200 TLSv1' "$tmp/access.log" |
        head -n 1 | awk '{print $4, $5}'))"
else
    fail "nginx access log shows no TLS sessions"
    show "$tmp/access.log"
fi
if grep -q "\[emerg\]\|\[alert\]\|\[crit\]" "$tmp/error.log"; then
    fail "nginx error log"
    show "$tmp/error.log"
else
    ok "nginx error log clean"
fi

say "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
