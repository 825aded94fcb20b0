#!/bin/sh
# redis_cluster.sh - a private three-master Redis Cluster (Redis 7: sharded
# pub/sub) for the tests of `[redis] cluster = yes`, never the system Redis.
#
#   redis_cluster.sh start DIR     start three redis-server --cluster-enabled
#                                  on free loopback ports (each node in DIR/nK),
#                                  join them with redis-cli --cluster create,
#                                  wait until every node says cluster_state:ok;
#                                  write DIR/redis.env and print it
#   redis_cluster.sh restart DIR   start the nodes that are not running again
#                                  on their ports, from their nodes.conf (after
#                                  a test killed all or one of them), and wait
#                                  for cluster_state:ok
#   redis_cluster.sh stop DIR      stop every node by its PID: SIGTERM, bounded
#                                  wait, SIGKILL
#
# DIR/redis.env holds shell assignments, the seed node first (the names of
# redis.sh, so a caller reading QCHAT_REDIS_PORT and QCHAT_REDIS_PID works
# unchanged with the seed):
#   QCHAT_REDIS_DIR QCHAT_REDIS_PORT QCHAT_REDIS_PID
#   QCHAT_REDIS_PORTS QCHAT_REDIS_PIDS   (space-separated, all nodes)
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/redis_lib.sh"

PROG=redis_cluster.sh
NODES=3
PORT_MIN=20000
PORT_SPAN=9000            # 20000..28999: each node's bus port (+10000) stays below 39000
BUS_OFFSET=10000          # Redis Cluster's bus port is the client port + 10000
PORT_ATTEMPTS=10
DEFAULT_PORT=6379
START_WAIT=20             # seconds for a node to answer PING
JOIN_WAIT=30              # seconds for the cluster to say cluster_state:ok
STOP_WAIT=10
NODE_TIMEOUT_MS=2000      # cluster-node-timeout
POLL=0.1

usage() {
    echo "usage: redis_cluster.sh start DIR | restart DIR | stop DIR" >&2
    exit 2
}

cluster_ok() {
    for cp in "$@"; do
        redis-cli -h 127.0.0.1 -p "$cp" cluster info 2>/dev/null | grep -q '^cluster_state:ok' ||
            return 1
    done
}

# Start one node in directory $1 on port $2; prints its PID, or fails.
launch_node() {
    echo "$2" >"$1/port"
    launch "$1" "$2" --cluster-enabled yes --cluster-config-file "$1/nodes.conf" \
        --cluster-node-timeout "$NODE_TIMEOUT_MS"
}

write_env() {
    cat >"$DIR/redis.env" <<EOT
export QCHAT_REDIS_DIR='$DIR'
export QCHAT_REDIS_PORT='${PORTS%% *}'
export QCHAT_REDIS_PID='${PIDS%% *}'
export QCHAT_REDIS_PORTS='$PORTS'
export QCHAT_REDIS_PIDS='$PIDS'
EOT
}

wait_joined() {
    # shellcheck disable=SC2086
    wait_until "$JOIN_WAIT" cluster_ok $PORTS || {
        for k in $(seq 1 $NODES); do tail -n 5 "$DIR/n$k/redis.log" >&2; done
        die "the cluster did not reach cluster_state:ok within ${JOIN_WAIT}s"
    }
}

cmd_start() {
    DIR=$(absdir "$1" new)
    PORTS=""
    PIDS=""
    for k in $(seq 1 $NODES); do
        nd=$(absdir "$DIR/n$k" new)
        ! server_pid "$nd" >/dev/null || die "a node from $nd is already running"
        rm -f "$nd/nodes.conf"
        pid=""
        attempt=0
        while [ $attempt -lt $PORT_ATTEMPTS ] && [ -z "$pid" ]; do
            attempt=$((attempt + 1))
            port=$(random_port)
            [ "$port" -ne "$DEFAULT_PORT" ] && port_free "$port" &&
                port_free $((port + BUS_OFFSET)) || continue
            case " $PORTS " in *" $port "*) continue ;; esac
            pid=$(launch_node "$nd" "$port") || pid=""
        done
        [ -n "$pid" ] || die "node $k: no free port after $PORT_ATTEMPTS attempts (log: $nd/redis.log)"
        PORTS="${PORTS:+$PORTS }$port"
        PIDS="${PIDS:+$PIDS }$pid"
    done
    addrs=""
    for p in $PORTS; do addrs="$addrs 127.0.0.1:$p"; done
    # shellcheck disable=SC2086
    redis-cli --cluster create $addrs --cluster-replicas 0 --cluster-yes \
        >"$DIR/create.log" 2>&1 || {
        cat "$DIR/create.log" >&2
        die "redis-cli --cluster create failed"
    }
    wait_joined
    write_env
    cat "$DIR/redis.env"
    echo "redis_cluster.sh: started pids $PIDS on 127.0.0.1 ports $PORTS" >&2
}

cmd_restart() {
    DIR=$(absdir "$1")
    PORTS=""
    PIDS=""
    for k in $(seq 1 $NODES); do
        nd="$DIR/n$k"
        [ -f "$nd/port" ] && [ -f "$nd/nodes.conf" ] || die "$nd: no node to restart"
        port=$(cat "$nd/port")
        pid=$(server_pid "$nd") ||
            pid=$(launch_node "$nd" "$port") || die "node $k did not answer on port $port"
        PORTS="${PORTS:+$PORTS }$port"
        PIDS="${PIDS:+$PIDS }$pid"
    done
    wait_joined
    write_env
    cat "$DIR/redis.env"
}

cmd_stop() {
    if [ ! -d "$1" ]; then
        echo "redis_cluster.sh: no cluster running from $1" >&2
        return 0
    fi
    DIR=$(absdir "$1")
    for k in $(seq 1 $NODES); do
        nd="$DIR/n$k"
        [ -d "$nd" ] || continue
        pid=$(server_pid "$nd") || { rm -f "$nd/redis.pid.saved"; continue; }
        kill -CONT "$pid" 2>/dev/null || true
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_until "$STOP_WAIT" stopped "$nd"; then
            echo "redis_cluster.sh: pid $pid did not stop within ${STOP_WAIT}s: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$nd/redis.pid.saved"
    done
}

[ $# -eq 2 ] || usage
need redis-server
need redis-cli
need ss
case $1 in
    start)   cmd_start "$2" ;;
    restart) cmd_restart "$2" ;;
    stop)    cmd_stop "$2" ;;
    *)       usage ;;
esac
