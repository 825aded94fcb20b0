#!/bin/sh
# redis.sh - a private Redis for the tests and `make cluster`, never the
# system one.
#
#   redis.sh start DIR [PORT]   start redis-server on 127.0.0.1:PORT (default:
#                               a free port, never 6379), no persistence, its
#                               dir, pid file and log in DIR; wait until it
#                               answers PING; write DIR/redis.env and print it
#   redis.sh stop DIR           stop it by its PID: SIGTERM, bounded wait, SIGKILL
#
# DIR/redis.env holds shell assignments (use: set -a; . DIR/redis.env; set +a):
#   QCHAT_REDIS_DIR QCHAT_REDIS_PORT QCHAT_REDIS_PID
#
# start with an explicit PORT is how a test brings Redis back on the same
# address after killing it (SIGKILL): the old instance must be gone.  The
# server runs in the caller's process group, in the foreground of a
# background job (no daemonize), so its PID is known without a race.
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/redis_lib.sh"

PROG=redis.sh
PORT_MIN=20000
PORT_SPAN=12000           # ports tried: 20000..31999, below the ephemeral range
PORT_ATTEMPTS=5           # fresh ports tried when one turns out taken
DEFAULT_PORT=6379         # the system instance's port: never used
START_WAIT=20             # seconds for the server to answer PING
STOP_WAIT=10              # seconds for a clean stop before SIGKILL
POLL=0.05                 # seconds between checks

usage() {
    echo "usage: redis.sh start DIR [PORT] | stop DIR" >&2
    exit 2
}

write_env() {
    cat >"$1/redis.env" <<EOF
export QCHAT_REDIS_DIR='$1'
export QCHAT_REDIS_PORT='$2'
export QCHAT_REDIS_PID='$3'
EOF
}

cmd_start() {
    need redis-server
    need redis-cli
    need ss
    dir=$(absdir "$1" new)
    want=${2:-}
    if p=$(server_pid "$dir"); then
        die "a server from $dir is already running (pid $p)"
    fi
    pid=""
    if [ -n "$want" ]; then
        case $want in
            *[!0-9]* | '') die "bad port '$want'" ;;
        esac
        [ "$want" -ne "$DEFAULT_PORT" ] || die "port $DEFAULT_PORT is the system instance's"
        pid=$(launch "$dir" "$want") || {
            tail -n 20 "$dir/redis.log" >&2
            die "redis-server did not answer on port $want within ${START_WAIT}s"
        }
        port=$want
    else
        attempt=0
        while [ $attempt -lt $PORT_ATTEMPTS ] && [ -z "$pid" ]; do
            attempt=$((attempt + 1))
            port=$(random_port)
            [ "$port" -ne "$DEFAULT_PORT" ] && port_free "$port" || continue
            pid=$(launch "$dir" "$port") || pid=""
            if [ -z "$pid" ] && ! grep -q 'Address already in use' "$dir/redis.log"; then
                tail -n 20 "$dir/redis.log" >&2
                die "redis-server did not answer within ${START_WAIT}s (log: $dir/redis.log)"
            fi
        done
        [ -n "$pid" ] || die "no free port after $PORT_ATTEMPTS attempts"
    fi
    write_env "$dir" "$port" "$pid"
    cat "$dir/redis.env"
    echo "redis.sh: started pid $pid on 127.0.0.1:$port" >&2
}

cmd_stop() {
    if [ ! -d "$1" ]; then
        echo "redis.sh: no server running from $1" >&2
        return 0
    fi
    dir=$(absdir "$1")
    if ! pid=$(server_pid "$dir"); then
        echo "redis.sh: no server running from $dir" >&2
        rm -f "$dir/redis.pid.saved"
        return 0
    fi
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_until "$STOP_WAIT" stopped "$dir"; then
        echo "redis.sh: pid $pid did not stop within ${STOP_WAIT}s: SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/redis.pid.saved"
}

[ $# -ge 2 ] || usage
cmd=$1
shift
case $cmd in
    start) [ $# -ge 1 ] && [ $# -le 2 ] || usage; cmd_start "$@" ;;
    stop)  [ $# -eq 1 ] || usage; cmd_stop "$1" ;;
    *)     usage ;;
esac
