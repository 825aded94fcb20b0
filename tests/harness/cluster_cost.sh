#!/bin/sh
# cluster_cost.sh - where a ping-pong message's CPU goes, one node against
# two: each process's CPU time per message and MariaDB's own counters per
# message, for a one-node qchatd (one worker, MariaDB, no Redis) and for two
# nodes (one worker each, MariaDB, Redis) with every pair split across them.
# CPU per message moves far less with the machine's load than msgs/s does.
#
#   sh tests/harness/cluster_cost.sh [QCHATD]     (default: B's qchatd)
#   RUNS=2 B=build sh tests/harness/cluster_cost.sh /tmp/old/build/qchatd
#
# Starts a private MariaDB and Redis (tests/harness/mariadb.sh, redis.sh)
# and the three qchatd in a temporary directory, registers 2,000 users on
# each store with qchat-bench of B (default build), then per setup and run
# two bounded ping-pongs of 1,000 pairs (SHORT and LONG seconds) and takes
# the difference, so logins, start and stop drop out:
#   - CPU (utime + stime from /proc) per message of each qchatd process,
#     of redis-server, of mariadbd and (with GNU time installed) of
#     qchat-bench;
#   - MariaDB's statements, commits and handler counters per message
#     (SHOW GLOBAL STATUS);
#   - the statements MariaDB ran during LOGWIN seconds in the middle of the
#     long run (its general log), by kind.
# Everything it started is stopped by PID and the directory removed.
top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
H=$top/tests/harness
. "$H/lib.sh"
. "$H/bench_lib.sh"
bench_begin cluster_cost
QCHATD=${1:-$B/qchatd}
QCHATCTL=$B/qchatctl
START_WAIT=60
STOP_WAIT=15
RUNS=${RUNS:-1}
SHORT=${SHORT:-4}
LONG=${LONG:-14}
LOGWIN=0.5
PAIRS=1000
REG_TIMEOUT=120
STATUS="'Questions','Com_commit','Handler_read_key','Handler_read_next','Handler_write',\
'Handler_update','Handler_tmp_write','Created_tmp_tables','Innodb_row_lock_waits'"

mariadb_up=0
redis_up=0
cleanup() {
    stop_pids "$STOP_WAIT" ""
    [ $redis_up = 1 ] && sh "$H/redis.sh" stop "$tmp/redis" >/dev/null 2>&1
    [ $mariadb_up = 1 ] && sh "$H/mariadb.sh" stop "$tmp/mariadb" >/dev/null 2>&1
    finish_tmp
}

sh "$H/mariadb.sh" start "$tmp/mariadb" >"$tmp/mariadb.out" 2>&1 ||
    { cat "$tmp/mariadb.out" >&2; say "MariaDB did not start"; exit 1; }
mariadb_up=1
set -a; . "$tmp/mariadb/env"; set +a
for db in qchat_one qchat_two; do
    sh "$H/mariadb.sh" createdb "$tmp/mariadb" $db >/dev/null || exit 1
done
sh "$H/redis.sh" start "$tmp/redis" >"$tmp/redis.out" 2>&1 ||
    { cat "$tmp/redis.out" >&2; say "Redis did not start"; exit 1; }
redis_up=1
set -a; . "$tmp/redis/redis.env"; set +a

MYSQL="-o storage.driver=mysql -o storage.socket=$QCHAT_MYSQL_SOCKET -o storage.user=$QCHAT_MYSQL_USER"
MYSQL="$MYSQL -o storage.password_file=$QCHAT_MYSQL_PASSWORD_FILE"
COMMON="-o server.workers=1 -o security.request_rate=0 -o log.level=warning"
COMMON="$COMMON -o security.password_cost=1 -o security.login_checks_per_ip=0"
# shellcheck disable=SC2086
run_one() {
    exec "$QCHATD" -f -o server.listen="127.0.0.1:$1" -o server.control_socket="$tmp/one.sock" \
        $MYSQL -o storage.database=qchat_one $COMMON
}
# shellcheck disable=SC2086
run_node() {
    exec "$QCHATD" -f -o server.listen="127.0.0.1:$1" -o server.node_id="$node" \
        -o server.control_socket="$tmp/node$node.sock" $MYSQL -o storage.database=qchat_two \
        -o redis.host=127.0.0.1 -o redis.port="$QCHAT_REDIS_PORT" $COMMON
}

start one run_one
one_port=$server_port
server_pids=$server_pid
for node in 1 2; do
    start "node$node" run_node
    eval "node${node}_port=$server_port"
    server_pids="$server_pids $server_pid"
    wait_until "$START_WAIT" relay_connected "$tmp/node$node.sock" ||
        { say "node $node: relay not connected"; exit 1; }
done
"$BENCH" reg --port "$one_port" --users $((2 * PAIRS)) --out "$tmp/ids.one" --prefix cc1_ -c 32 \
    --timeout $REG_TIMEOUT -q >/dev/null || { say "register on one node failed"; exit 1; }
"$BENCH" reg --port "$node1_port" --users $((2 * PAIRS)) --out "$tmp/ids.two" --prefix cc2_ -c 32 \
    --timeout $REG_TIMEOUT -q >/dev/null || { say "register on two nodes failed"; exit 1; }

sql() {
    sh "$H/mariadb.sh" sql "$tmp/mariadb"
}

# processes NAME: "process ticks" for the servers this script started
# (a qchatd process named by its title and its master's PID)
processes() {
    for p in $server_pids $(pgrep -P "$(echo "$server_pids" | tr ' ' ,)"); do
        [ -r "/proc/$p/stat" ] || continue
        title=$(tr '\0' ' ' <"/proc/$p/cmdline" | cut -d' ' -f1-3 | tr ' ' _)
        case $title in
        qchatd:_master*) title=qchatd:_master.$p ;;
        qchatd:*) title=$title.$(ps -o ppid= -p "$p" | tr -d ' ') ;;
        esac
        echo "$title $(awk '{ print $14 + $15 }' "/proc/$p/stat")"
    done | sort >"$tmp/$1.cpu"
    for p in $QCHAT_MYSQL_PID $QCHAT_REDIS_PID; do
        echo "$(tr '\0' ' ' <"/proc/$p/cmdline" | cut -d' ' -f1) $(awk '{ print $14 + $15 }' "/proc/$p/stat")"
    done | sort >>"$tmp/$1.cpu"
    sort -o "$tmp/$1.cpu" "$tmp/$1.cpu"
    echo "SHOW GLOBAL STATUS WHERE Variable_name IN ($STATUS)" | sql | grep -v Variable_name |
        sort >"$tmp/$1.status"
}

# pingpong TAG SECONDS ARGS...: one bounded run between two snapshots
pingpong() {
    pp_tag=$1 pp_dur=$2
    shift 2
    processes "$pp_tag.a"
    if [ -x /usr/bin/time ]; then # GNU time (package "time"): the load generator's CPU too
        set -- /usr/bin/time -f "%U %S" -o "$tmp/$pp_tag.time" "$BENCH" pingpong "$@"
    else
        set -- "$BENCH" pingpong "$@"
    fi
    "$@" --pairs $PAIRS -d "$pp_dur" -q >"$tmp/$pp_tag.out" 2>&1 ||
        { say "$pp_tag: ping-pong failed"; return 1; }
    processes "$pp_tag.b"
}

# general_log NAME: MariaDB's statements for LOGWIN seconds, by kind
general_log() {
    echo "SET GLOBAL general_log_file='$tmp/general.$1.log'; SET GLOBAL general_log=ON" | sql
    sleep $LOGWIN
    echo "SET GLOBAL general_log=OFF" | sql
}

# difference NAME KIND: (long b - a) - (short b - a) per line of the KIND snapshots
difference() {
    join "$tmp/$1.l.a.$2" "$tmp/$1.l.b.$2" | join - "$tmp/$1.s.a.$2" | join - "$tmp/$1.s.b.$2" |
        awk '{ print $1, ($3 - $2) - ($5 - $4) }'
}

# measure NAME ARGS...: one setup's figures
measure() {
    m_name=$1
    shift
    pingpong "$m_name.s" "$SHORT" "$@" || return 1
    (sleep $((LONG / 2)) && general_log "$m_name") &
    m_log=$!
    pingpong "$m_name.l" "$LONG" "$@" || return 1
    wait $m_log
    line=$(tail -n 1 "$tmp/$m_name.l.out")
    msgs=$(($(field "$line" msgs) - $(field "$(tail -n 1 "$tmp/$m_name.s.out")" msgs)))
    printf '%s run %s: load=%s rate=%s p50=%s p99=%s errors=%s stalls=%s messages=%s\n' "$m_name" \
        "$run" "$(cut -d' ' -f1 /proc/loadavg)" "$(field "$line" rate)" "$(field "$line" p50)" \
        "$(field "$line" p99)" "$(field "$line" errors)" "$(field "$line" stalls)" "$msgs"
    hz=$(getconf CLK_TCK)
    difference "$m_name" cpu | awk -v m="$msgs" -v hz="$hz" \
        '$2 > 0 { printf "  cpu %-28s %6.1f us/msg\n", $1, $2 * 1e6 / hz / m; t += $2 }
         END { printf "  cpu %-28s %6.1f us/msg\n", "servers_total", t * 1e6 / hz / m }'
    [ -s "$tmp/$m_name.l.time" ] && paste -d' ' "$tmp/$m_name.l.time" "$tmp/$m_name.s.time" | awk -v m="$msgs" \
        '{ printf "  cpu %-28s %6.1f us/msg\n", "qchat-bench", (($1 + $2) - ($3 + $4)) * 1e6 / m }'
    difference "$m_name" status | awk -v m="$msgs" '{ printf "  db  %-28s %8.3f /msg\n", $1, $2 / m }'
    grep -E 'Execute|Query' "$tmp/general.$m_name.log" | sed -E 's/^.*(Execute|Query)[[:space:]]+//' |
        cut -c1-60 | sed -E 's/[0-9]+/N/g' | sort | uniq -c | sort -rn | head -n 10 |
        awk '{ printf "  sql %5d  ", $1; $1 = ""; print substr($0, 2) }'
}

say "machine: $(nproc) CPU, load $(cut -d' ' -f1-3 /proc/loadavg); $QCHATD; ${SHORT}s and ${LONG}s runs"
for run in $(seq "$RUNS"); do
    measure one --port "$one_port" --ids "$tmp/ids.one"
    measure two --port "$node1_port" --port2 "$node2_port" --ids "$tmp/ids.two"
done
