#!/bin/sh
# cluster.sh - `make cluster`: a two-node qchat cluster on this machine.
#
#   B=build sh tests/harness/cluster.sh
#
# Starts, all on 127.0.0.1 ports under one temporary directory:
#   - a private MariaDB (tests/harness/mariadb.sh), database qchat_cluster
#   - a private Redis (tests/harness/redis.sh)
#   - qchatd node 1 and node 2 (driver mysql, redis configured, control
#     sockets and logs in the directory)
#   - nginx (tests/harness/nginx.sh), a TCP balancer in front of both nodes
# then prints the address to point qchat at and each node's qchatctl
# command, and waits.  Ctrl-C (INT) or TERM stops everything by PID and
# removes the directory (kept with KEEP=1).
#
# Environment:
#   CLUSTER_PORT=N     nginx listens on N (default: a free port)
#   CLUSTER_WORKERS=N  workers per node (default 2)
#   CLUSTER_OPTS="SECTION.KEY=VALUE ..."  more qchatd -o options for both nodes
#                      (e.g. "security.request_rate=0 log.level=debug")
#   CLUSTER_SMOKE=1    non-interactive: run a scripted `qchat -s` exchange
#                      through nginx (two users landing on different nodes
#                      chat both ways), check it, stop; exit 0 if it worked
#   KEEP=1             keep the directory (logs) after stopping

top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
B=${B:-build}
case $B in /*) ;; *) B=$top/$B ;; esac
QCHATD=$B/qchatd
QCHAT=$B/qchat
QCHATCTL=$B/qchatctl
H=$top/tests/harness
. "$H/lib.sh"

NODES=2
WORKERS=${CLUSTER_WORKERS:-2}
NGINX_PORT=${CLUSTER_PORT:-0}
DBNAME=qchat_cluster
PORT_MIN=20000
PORT_SPAN=12000             # 20000..31999: below the ephemeral range
PORT_ATTEMPTS=5
START_WAIT=15               # seconds for a node to accept and answer its control socket
STOP_WAIT=15                # seconds for a node's graceful stop before SIGKILL
POLL=0.1
SMOKE_REPLY_MS=5000         # qchat -t in the smoke run
SMOKE_WAIT_MS=3000          # how long the receiving client listens
SMOKE_LIMIT=30              # seconds any smoke client may run

tmp=""
node_pids=""                # every qchatd master started, for the cleanup
node1_pid="" node1_port=""  # set by start_node
node2_pid="" node2_port=""
stopping=0

say() { echo "cluster: $*"; }
die() { echo "cluster: $*" >&2; cleanup; exit 1; }

# stop_node PID: SIGTERM the master, bounded wait, then SIGKILL it and
# every child it had (workers, relay), by PID.
stop_node() {
    alive "$1" || return 0
    stop_pid "$1" "$STOP_WAIT" qchatd: ||
        say "node pid $1 did not stop within ${STOP_WAIT}s: SIGKILL"
}

cleanup() {
    [ $stopping -eq 0 ] || return 0
    stopping=1
    trap '' INT TERM
    [ -n "$tmp" ] || return 0
    say "stopping"
    [ -d "$tmp/nginx" ] && sh "$H/nginx.sh" stop "$tmp/nginx" 2>/dev/null
    for p in $node_pids; do
        stop_node "$p"
    done
    [ -d "$tmp/redis" ] && sh "$H/redis.sh" stop "$tmp/redis" 2>/dev/null
    [ -d "$tmp/mariadb" ] && sh "$H/mariadb.sh" stop "$tmp/mariadb" 2>/dev/null
    finish_tmp
}

on_signal() {
    echo
    cleanup
    exit 0
}

# node_ready N PORT: node N accepts on PORT and answers on its control socket.
node_ready() {
    accepting "$2" && "$QCHATCTL" -s "$tmp/node$1.sock" status >/dev/null 2>&1
}

# start_node N: qchatd node_id N on a free port; sets node_port.
start_node() {
    n=$1
    set --
    for o in ${CLUSTER_OPTS:-}; do
        set -- "$@" -o "$o"
    done
    attempt=0
    while [ $attempt -lt $PORT_ATTEMPTS ]; do
        attempt=$((attempt + 1))
        node_port=$(random_port)
        port_free "$node_port" || continue
        log=$tmp/node$n.log
        "$QCHATD" -f \
            -o "server.listen=127.0.0.1:$node_port" \
            -o "server.node_id=$n" \
            -o "server.workers=$WORKERS" \
            -o "server.control_socket=$tmp/node$n.sock" \
            -o "server.pidfile=$tmp/node$n.pid" \
            -o storage.driver=mysql \
            -o "storage.socket=$QCHAT_MYSQL_SOCKET" \
            -o "storage.user=$QCHAT_MYSQL_USER" \
            -o "storage.password_file=$QCHAT_MYSQL_PASSWORD_FILE" \
            -o "storage.database=$DBNAME" \
            -o redis.host=127.0.0.1 \
            -o "redis.port=$QCHAT_REDIS_PORT" \
            -o log.level=info \
            "$@" </dev/null >>"$log" 2>&1 &
        np=$!
        node_pids="$node_pids $np"
        if wait_started "$np" "$START_WAIT" node_ready "$n" "$node_port"; then
            eval "node${n}_pid=$np node${n}_port=$node_port"
            return 0
        fi
        stop_node "$np"
        grep -q 'in use' "$log" 2>/dev/null || break
    done
    tail -n 20 "$tmp/node$n.log" >&2
    die "node $n did not start (log: $tmp/node$n.log)"
}

# wait_relay N: node N's relay says connected (qchatctl status --json).
wait_relay() {
    wait_until "$START_WAIT" relay_connected "$tmp/node$1.sock"
}

print_banner() {
    cat <<EOF

  qchat cluster is up ($NODES nodes behind nginx, MariaDB, Redis), in $tmp

  connect:   $QCHAT 127.0.0.1 $QCHAT_NGINX_PORT
  node 1:    $QCHAT 127.0.0.1 $node1_port      (directly)
             $QCHATCTL -s $tmp/node1.sock status
  node 2:    $QCHAT 127.0.0.1 $node2_port      (directly)
             $QCHATCTL -s $tmp/node2.sock status
  redis:     redis-cli -p $QCHAT_REDIS_PORT
  mariadb:   sh $H/mariadb.sh sql $tmp/mariadb $DBNAME
  logs:      $tmp/node1.log $tmp/node2.log $tmp/nginx/error.log

  Ctrl-C stops everything.

EOF
}

# ---- the scripted exchange (CLUSTER_SMOKE=1) ----------------------------

# qchat_run OUT: a qchat -s through nginx, commands from stdin, output to OUT.
qchat_run() {
    timeout -k 2 $SMOKE_LIMIT "$QCHAT" -s -t $SMOKE_REPLY_MS 127.0.0.1 "$QCHAT_NGINX_PORT" >"$1" 2>&1
}

register_user() {
    out=$tmp/smoke-reg-$1.out
    printf 'register:%s:%s\nquit\n' "$1" "$2" | qchat_run "$out"
    sed -n 's/^registered id \([0-9][0-9]*\)$/\1/p' "$out" | head -n 1
}

# node_of ID: the node (1, 2) on which user ID is online, "" if none.
node_of() {
    for n in 1 2; do
        "$QCHATCTL" -s "$tmp/node$n.sock" --json users 2>/dev/null |
            grep -q "\"id\": *$1[,}]" && { echo $n; return 0; }
    done
    echo ""
}

smoke_fail() {
    for f in "$tmp"/smoke-*.out; do
        [ -f "$f" ] && { echo "---- $f"; cat "$f"; }
    done
    KEEP=1
    die "smoke: $*"
}

smoke() {
    stamp=$$_$(date +%s)
    pw=smoke-pw-$stamp
    a=$(register_user "alice_$stamp" "$pw")
    b=$(register_user "bob_$stamp" "$pw")
    [ -n "$a" ] && [ -n "$b" ] || smoke_fail "registering through nginx failed"
    say "smoke: registered alice=$a bob=$b through nginx"

    # Alice logs in and listens; Bob logs in, chats to her and listens.
    # nginx balances round robin, so the two connections land on both nodes;
    # if they do not, Bob reconnects (bounded).
    { printf 'login:%s:%s\nwait:%d\nchat:%s:hello bob from alice\nwait:%d\nquit\n' \
          "$a" "$pw" "$SMOKE_WAIT_MS" "$b" "$SMOKE_WAIT_MS"; } |
        qchat_run "$tmp/smoke-alice.out" &
    alice_job=$!
    w=0
    while [ -z "$(node_of "$a")" ] && [ $w -lt 50 ]; do sleep $POLL; w=$((w + 1)); done
    na=$(node_of "$a")
    [ -n "$na" ] || smoke_fail "alice never came online"
    printf 'login:%s:%s\nchat:%s:hello alice from bob\nwait:%d\nquit\n' \
        "$b" "$pw" "$a" "$((SMOKE_WAIT_MS * 2))" | qchat_run "$tmp/smoke-bob.out" &
    bob_job=$!
    w=0
    while [ -z "$(node_of "$b")" ] && [ $w -lt 50 ]; do sleep $POLL; w=$((w + 1)); done
    nb=$(node_of "$b")
    wait $alice_job
    wait $bob_job
    say "smoke: alice on node ${na:-?}, bob on node ${nb:-?}"
    [ -n "$nb" ] || smoke_fail "bob never came online"
    [ "$na" != "$nb" ] || smoke_fail "nginx put both users on node $na (round robin expected)"
    grep -q "^logged in: id $a " "$tmp/smoke-alice.out" || smoke_fail "alice did not log in"
    grep -q "^logged in: id $b " "$tmp/smoke-bob.out" || smoke_fail "bob did not log in"
    grep -q "\[$b\]bob_$stamp said: hello alice from bob\$" "$tmp/smoke-alice.out" ||
        smoke_fail "alice (node $na) did not get bob's chat"
    grep -q "\[$a\]alice_$stamp said: hello bob from alice\$" "$tmp/smoke-bob.out" ||
        smoke_fail "bob (node $nb) did not get alice's chat"
    say "smoke: cross-node chat through nginx works both ways"
    cat "$tmp/smoke-alice.out" "$tmp/smoke-bob.out" | sed 's/^/  | /'
}

# ---- main ----------------------------------------------------------------

for p in "$QCHATD" "$QCHAT" "$QCHATCTL"; do
    [ -x "$p" ] || { echo "cluster: $p is missing (make all)" >&2; exit 1; }
done
tmp=$(mktemp -d /tmp/qchat-cluster.XXXXXX) || exit 1
trap on_signal INT TERM
trap cleanup EXIT

say "starting MariaDB"
sh "$H/mariadb.sh" start "$tmp/mariadb" >/dev/null || die "MariaDB did not start"
set -a; . "$tmp/mariadb/env"; set +a
sh "$H/mariadb.sh" createdb "$tmp/mariadb" "$DBNAME" || die "cannot create database $DBNAME"
say "starting Redis"
sh "$H/redis.sh" start "$tmp/redis" >/dev/null || die "Redis did not start"
set -a; . "$tmp/redis/redis.env"; set +a
for n in 1 2; do
    say "starting node $n"
    start_node $n
done
for n in 1 2; do
    wait_relay $n || die "node $n: relay not connected to Redis (log: $tmp/node$n.log)"
done
say "starting nginx"
sh "$H/nginx.sh" start "$tmp/nginx" "$NGINX_PORT" "127.0.0.1:$node1_port" \
    "127.0.0.1:$node2_port" >/dev/null || die "nginx did not start"
set -a; . "$tmp/nginx/nginx.env"; set +a
print_banner

if [ "${CLUSTER_SMOKE:-0}" = 1 ]; then
    smoke
    cleanup
    exit 0
fi

# Wait for Ctrl-C; say so if a node dies meanwhile.
while :; do
    for n in 1 2; do
        eval "np=\$node${n}_pid"
        if [ -n "$np" ] && ! alive "$np"; then
            say "node $n (pid $np) exited: see $tmp/node$n.log"
            eval "node${n}_pid="
        fi
    done
    sleep 1
done
