#!/bin/sh
# bench.sh - `make bench`: qchat-bench against qchatd and the relay_ref
# yardstick on this machine, side by side in one run, RUNS runs of each row
# (alternating servers), medians and ratios at the end.  The rows (issue 5's
# targets; ROWS picks some, default all):
#
#   pingpong  PAIRS pairs, 64-byte chats, one in flight: msgs/s and p99
#   conns     CONNS idle logged-in sessions: PSS of all server processes,
#             sampled while held, then every session must still receive
#   group     MEMBERS online members of one group: deliveries/s, compared
#             with qchatd's ping-pong deliveries/s
#   storm     qchatd ping-pong p99 alone, then during STORM_LOOPS login loops
#   cluster   ping-pong with every pair split across two nodes (MariaDB
#             store, Redis between them), through nginx and directly, each
#             beside one qchatd node run the same way (same store, workers,
#             password_cost=1, login_checks_per_ip=0), and relay_ref
#   offline   login with OFFLINE_BACKLOG stored offline messages, on SQLite
#             and on MariaDB (connect to the last byte of LOGIN_MSG_ACK)
#   big       BIG_CONNS idle sessions on one node: qchatd with BIG_WORKERS
#             workers, BIG_PROCS qchat-bench processes from their own
#             127.x.0.y source addresses; all must log in, stay and receive
#
#   B=build sh tests/harness/bench.sh           (RUNS=3 DUR=10 by default)
#   ROWS="pingpong storm" sh tests/harness/bench.sh
#
# Users are registered first on a qchatd running with password_cost=1 (so
# that setup is quick); the measurements then run on a fresh qchatd over
# the same database with the default configuration except request_rate=0
# (no per-connection rate limit) and log.level=warning, and, unless the
# storm row runs, password_cost=1 and login_checks_per_ip=0 (every row's
# sessions then log in alike); the login-storm and offline users are
# registered there.
# relay_ref runs with as many workers as qchatd.  Everything listens on free
# 127.0.0.1 ports in a temporary directory and is stopped by PID; MariaDB,
# Redis and nginx are private instances started by the harness scripts
# beside this one.  Bounded: each run has a deadline, and rows are skipped
# once BUDGET seconds have passed.

top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
H=$top/tests/harness
. "$H/lib.sh"
. "$H/bench_lib.sh"
bench_begin bench
QCHATD=$B/qchatd
QCHATCTL=$B/qchatctl
RELAY=$B/relay_ref
CC=${CC:-cc}

ROWS=${ROWS:-pingpong conns group storm cluster offline big}
RUNS=${RUNS:-3}
DUR=${DUR:-10}               # seconds measured per run
PAIRS=${PAIRS:-1000}
CONNS=${CONNS:-10000}
HOLD=${HOLD:-5}              # seconds the idle sessions are held
MEMBERS=${MEMBERS:-1000}
SENDERS=${SENDERS:-4}
GROUP_INFLIGHT=${GROUP_INFLIGHT:-2}
STORM_LOOPS=${STORM_LOOPS:-32}
STORM_STALL=${STORM_STALL:-10}  # seconds: at the default cost a login waits ~1 s in line
CLUSTER_WORKERS=${CLUSTER_WORKERS:-1}   # per node: two nodes share the 2 cores
CLUSTER_DIRECT=${CLUSTER_DIRECT:-1}     # 1: also A -> node 1, B -> node 2 without nginx
OFFLINE_BACKLOG=${OFFLINE_BACKLOG:-1000}
OFFLINE_ROUNDS=${OFFLINE_ROUNDS:-10}
OFFLINE_INFLIGHT=32          # chats being stored at once while filling a mailbox
BIG_CONNS=${BIG_CONNS:-100000}
BIG_WORKERS=${BIG_WORKERS:-8}   # each worker is a process: BIG_CONNS / BIG_WORKERS fds each
BIG_PROCS=${BIG_PROCS:-8}       # qchat-bench processes, each from its own source address
BIG_MAX_USERS=${BIG_MAX_USERS:-120000}
BIG_TIMEOUT=${BIG_TIMEOUT:-300} # seconds for all sessions to log in
BUDGET=${BUDGET:-2400}       # seconds; later rows are skipped past it
WORKERS=${WORKERS:-$(nproc)}

START_WAIT=30                # seconds for a server to listen
STOP_WAIT=15                 # seconds for a server to stop before SIGKILL
RUN_SLACK=60                 # seconds past a run's own phases before it is killed
REG_TIMEOUT=120
BIG_REG_TIMEOUT=600          # BIG_CONNS registrations at password_cost=1
REG_CONCURRENCY=32
DB_BENCH=qchat_bench         # MariaDB databases (mariadb.sh grants qchat_*)
DB_CLUSTER=qchat_cluster

started=$(date +%s)
mariadb_up=0
redis_up=0
nginx_dirs=""

cleanup() {
    stop_pids "$STOP_WAIT" ""
    for d in $nginx_dirs; do
        sh "$H/nginx.sh" stop "$d" >/dev/null 2>&1
    done
    [ $redis_up = 1 ] && sh "$H/redis.sh" stop "$tmp/redis" >/dev/null 2>&1
    [ $mariadb_up = 1 ] && sh "$H/mariadb.sh" stop "$tmp/mariadb" >/dev/null 2>&1
    finish_tmp
}

QCHATD_COMMON="-o security.request_rate=0 -o log.level=warning"
QCHATD_SQLITE="-o storage.path=$tmp/q.db -o server.control_socket=$tmp/ctl.sock"

run_relay_ref() {
    exec "$RELAY" -l 127.0.0.1 -p "$1" -w "$WORKERS"
}

# shellcheck disable=SC2086
run_qchatd_setup() {
    exec "$QCHATD" -f -o server.listen="127.0.0.1:$1" $QCHATD_SQLITE $QCHATD_COMMON \
        -o security.password_cost=1
}

# A login's check costs a hash at the server's security.password_cost: the
# one-node qchatd logs the ping-pong sessions in at cost 1, as the cluster
# row's nodes do, unless the storm row (which measures logins at the
# default cost) is asked for.
QCHATD_ONE_LOGIN="-o security.password_cost=1 -o security.login_checks_per_ip=0"
want_row storm && QCHATD_ONE_LOGIN=""

# shellcheck disable=SC2086
run_qchatd() {
    exec "$QCHATD" -f -o server.listen="127.0.0.1:$1" $QCHATD_SQLITE $QCHATD_COMMON $QCHATD_ONE_LOGIN
}

over_budget() {
    [ $(($(date +%s) - started)) -ge "$BUDGET" ]
}

# bench LABEL ARGS...: run qchat-bench, print and keep its summary line in $line
bench() {
    label=$1
    shift
    echo "+ qchat-bench $*" >>"$tmp/commands"
    timeout $((DUR + HOLD + REG_TIMEOUT + RUN_SLACK)) "$BENCH" "$@" -q >"$tmp/out" 2>"$tmp/err"
    rc=$?
    line=$(tail -n 1 "$tmp/out")
    printf '%-22s %s\n' "$label" "$line"
    if [ $rc -ne 0 ]; then
        say "$label: exit $rc"
        head -n 5 "$tmp/err" | sed 's/^/    /'
    fi
    return $rc
}

# pss_kib PID: proportional set size of PID and its children, KiB
pss_kib() {
    total=0
    for p in "$1" $(pgrep -P "$1"); do
        v=$(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null)
        total=$((total + ${v:-0}))
    done
    echo $total
}

# max_fds PID: the most descriptors any of PID's children holds
max_fds() {
    most=0
    for p in $(pgrep -P "$1"); do
        n=$(ls "/proc/$p/fd" 2>/dev/null | wc -l)
        [ "$n" -gt "$most" ] && most=$n
    done
    echo $most
}

# hold_and_measure LABEL SERVER_PID ARGS...: conns run; PSS sampled once all are up
hold_and_measure() {
    label=$1
    spid=$2
    shift 2
    rm -f "$tmp/ready"
    echo "+ qchat-bench $* --ready-file READY" >>"$tmp/commands"
    timeout $((HOLD + REG_TIMEOUT + RUN_SLACK)) "$BENCH" "$@" -q --ready-file "$tmp/ready" \
        >"$tmp/out" 2>"$tmp/err" &
    bpid=$!
    wait_started "$bpid" "$REG_TIMEOUT" test -s "$tmp/ready"
    pss=$(pss_kib "$spid")
    wait $bpid
    rc=$?
    line=$(tail -n 1 "$tmp/out")
    printf '%-22s %s pss=%sKiB\n' "$label" "$line" "$pss"
    [ $rc -ne 0 ] && head -n 5 "$tmp/err" | sed 's/^/    /'
    return $rc
}

# ---- build and users ------------------------------------------------------

for f in "$BENCH" "$QCHATD" "$QCHATCTL"; do
    [ -x "$f" ] || { say "$f not built (make all)"; exit 1; }
done
relay_src=""
for f in "${RELAY_REF_SRC:-}" "$H/relay_ref.c" "$top/../shared/bench/relay_ref.c"; do
    [ -n "$f" ] && [ -f "$f" ] && { relay_src=$f; break; }
done
[ -n "$relay_src" ] || { say "relay_ref.c not found (set RELAY_REF_SRC)"; exit 1; }
$CC -O2 -o "$RELAY" "$relay_src" || exit 1

say "machine: $(nproc) CPU, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1)," \
    "$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)," \
    "Linux $(uname -r), open files $(ulimit -Sn)/$(ulimit -Hn)"
say "rows: $ROWS"
say "runs=$RUNS duration=${DUR}s pairs=$PAIRS conns=$CONNS members=$MEMBERS storm=$STORM_LOOPS" \
    "workers=$WORKERS backlog=$OFFLINE_BACKLOG big=$BIG_CONNS/$BIG_WORKERS workers"

start qchatd-setup run_qchatd_setup
setup_pid=$server_pid
sp=$server_port
for set in pp:$((2 * PAIRS)) conns:$CONNS group:$MEMBERS; do
    name=${set%%:*}
    n=${set#*:}
    case $name in
        pp) want_row pingpong || want_row storm || want_row cluster || continue ;;
        conns) want_row conns || continue ;;
        group) want_row group || continue ;;
    esac
    bench "register $name" reg --port "$sp" --users "$n" --out "$tmp/ids.$name" \
        --prefix "b${name}_" -c $REG_CONCURRENCY --timeout $REG_TIMEOUT || exit 1
done
stop_server "$setup_pid"

one_node=0
for r in pingpong conns group storm cluster offline; do
    want_row $r && one_node=1
done
[ $one_node = 1 ] && start qchatd run_qchatd
qpid=$server_pid
qp=$server_port
if want_row storm; then
    bench "register storm" reg --port "$qp" --users "$STORM_LOOPS" --out "$tmp/ids.storm" \
        --prefix bstorm_ --timeout $REG_TIMEOUT || exit 1
fi
if want_row offline; then
    bench "register offline" reg --port "$qp" --users 2 --out "$tmp/ids.offline" \
        --prefix boff_ --timeout $REG_TIMEOUT || exit 1
fi
if [ $one_node = 1 ]; then
    start relay_ref run_relay_ref
    rpid=$server_pid
    rp=$server_port
    say "qchatd $QCHATD -f -o server.listen=127.0.0.1:$qp $QCHATD_SQLITE $QCHATD_COMMON" \
        "$QCHATD_ONE_LOGIN (pid $qpid)"
    say "relay_ref -l 127.0.0.1 -p $rp -w $WORKERS (pid $rpid)"
fi

# ---- one node -------------------------------------------------------------

if want_row pingpong; then
    echo
    say "row pingpong: $PAIRS pairs, 64 B, one in flight, ${DUR}s"
    for run in $(seq "$RUNS"); do
        over_budget && { say "over budget, row skipped"; break; }
        bench "relay_ref run $run" pingpong --port "$rp" --synthetic --pairs "$PAIRS" -d "$DUR" &&
            { keep pp_rate_r "$(field "$line" rate)"; keep pp_p99_r "$(field "$line" p99)"; }
        bench "qchatd run $run" pingpong --port "$qp" --ids "$tmp/ids.pp" --pairs "$PAIRS" -d "$DUR" &&
            { keep pp_rate_q "$(field "$line" rate)"; keep pp_p99_q "$(field "$line" p99)"; }
    done
fi

if want_row conns; then
    echo
    say "row conns: $CONNS idle sessions held ${HOLD}s, then each must receive"
    for run in $(seq "$RUNS"); do
        over_budget && { say "over budget, row skipped"; break; }
        hold_and_measure "relay_ref run $run" "$rpid" conns --port "$rp" --synthetic \
            --id-base 100000 --conns "$CONNS" -d "$HOLD" && keep conns_pss_r "$pss"
        hold_and_measure "qchatd run $run" "$qpid" conns --port "$qp" --ids "$tmp/ids.conns" \
            --conns "$CONNS" -d "$HOLD" && { keep conns_pss_q "$pss"; keep conns_rate_q "$(field "$line" rate)"; }
    done
fi

if want_row group; then
    echo
    say "row group: $MEMBERS members, $SENDERS senders, $GROUP_INFLIGHT in flight each, ${DUR}s (qchatd only)"
    gid=""
    for run in $(seq "$RUNS"); do
        over_budget && { say "over budget, row skipped"; break; }
        bench "qchatd run $run" group --port "$qp" --ids "$tmp/ids.group" --members "$MEMBERS" \
            --senders "$SENDERS" -k "$GROUP_INFLIGHT" -d "$DUR" ${gid:+--groupid "$gid"} &&
            { keep group_rate_q "$(field "$line" rate)"; keep group_p99_q "$(field "$line" p99)"; }
        g=$(field "$line" groupid)
        [ -n "$g" ] && [ "$g" != 0 ] && gid=$g
    done
fi

if want_row storm; then
    echo
    say "row storm: qchatd pingpong p99 alone, then during $STORM_LOOPS login loops (default password cost)"
    for run in $(seq "$RUNS"); do
        over_budget && { say "over budget, row skipped"; break; }
        bench "alone run $run" pingpong --port "$qp" --ids "$tmp/ids.pp" --pairs "$PAIRS" -d "$DUR" &&
            keep storm_p99_alone "$(field "$line" p99)"
        echo "+ qchat-bench login --port $qp --ids IDS --loops $STORM_LOOPS -d $((DUR + 4)) --stall $STORM_STALL" \
            >>"$tmp/commands"
        timeout $((DUR + RUN_SLACK)) "$BENCH" login --port "$qp" --ids "$tmp/ids.storm" \
            --loops "$STORM_LOOPS" -d $((DUR + 4)) --stall "$STORM_STALL" -q \
            >"$tmp/storm.out" 2>"$tmp/storm.err" &
        lpid=$!
        sleep 2
        bench "storm run $run" pingpong --port "$qp" --ids "$tmp/ids.pp" --pairs "$PAIRS" -d "$DUR" &&
            keep storm_p99_storm "$(field "$line" p99)"
        wait $lpid
        sline=$(tail -n 1 "$tmp/storm.out")
        printf '%-22s %s\n' "  (login storm)" "$sline"
        keep storm_login_rate "$(field "$sline" rate)"
    done
fi

# ---- MariaDB, Redis, two nodes, nginx ---------------------------------------

start_mariadb() {
    [ $mariadb_up = 1 ] && return 0
    say "starting a private MariaDB ($H/mariadb.sh)"
    sh "$H/mariadb.sh" start "$tmp/mariadb" >"$tmp/mariadb.out" 2>&1 ||
        { cat "$tmp/mariadb.out" >&2; say "MariaDB did not start"; exit 1; }
    mariadb_up=1
    set -a; . "$tmp/mariadb/env"; set +a
    for db in $DB_BENCH $DB_CLUSTER; do
        sh "$H/mariadb.sh" createdb "$tmp/mariadb" "$db" || exit 1
    done
    QCHATD_MYSQL="-o storage.driver=mysql -o storage.socket=$QCHAT_MYSQL_SOCKET"
    QCHATD_MYSQL="$QCHATD_MYSQL -o storage.user=$QCHAT_MYSQL_USER"
    QCHATD_MYSQL="$QCHATD_MYSQL -o storage.password_file=$QCHAT_MYSQL_PASSWORD_FILE"
}

# shellcheck disable=SC2086
run_qchatd_mysql() {
    exec "$QCHATD" -f -o server.listen="127.0.0.1:$1" -o server.control_socket="$tmp/my.sock" \
        $QCHATD_MYSQL -o storage.database=$DB_BENCH $QCHATD_COMMON
}

# Every qchatd of the cluster row logs its sessions in the same way: cheap
# password checks, and no per-address limit (through nginx every login
# comes from 127.0.0.1, and 2,000 of them exceed the default 256 a second).
CLUSTER_LOGIN="-o security.password_cost=1 -o security.login_checks_per_ip=0"

# shellcheck disable=SC2086
run_node() {
    exec "$QCHATD" -f -o server.listen="127.0.0.1:$1" -o server.node_id="$node" \
        -o server.workers="$CLUSTER_WORKERS" -o server.control_socket="$tmp/node$node.sock" \
        $QCHATD_MYSQL -o storage.database=$DB_CLUSTER \
        -o redis.host=127.0.0.1 -o redis.port="$QCHAT_REDIS_PORT" \
        $QCHATD_COMMON $CLUSTER_LOGIN
}

# The cluster row's one-node reference: a node as above, without Redis, on a
# database of its own (one node numbers a conversation's cseq itself).
# shellcheck disable=SC2086
run_one_node() {
    exec "$QCHATD" -f -o server.listen="127.0.0.1:$1" -o server.workers="$CLUSTER_WORKERS" \
        -o server.control_socket="$tmp/one.sock" \
        $QCHATD_MYSQL -o storage.database=$DB_BENCH $QCHATD_COMMON $CLUSTER_LOGIN
}

wait_relay() {
    wait_until "$START_WAIT" relay_connected "$1"
}

# start_nginx NAME UPSTREAM: a private nginx (stream) in front of one node; sets nginx_port
start_nginx() {
    sh "$H/nginx.sh" start "$tmp/$1" 0 "$2" >"$tmp/$1.out" 2>&1 ||
        { cat "$tmp/$1.out" >&2; say "nginx did not start"; exit 1; }
    nginx_dirs="$nginx_dirs $tmp/$1"
    nginx_port=$(sed -n "s/^export QCHAT_NGINX_PORT='\([0-9]*\)'/\1/p" "$tmp/$1/nginx.env")
}

if want_row cluster && ! over_budget; then
    echo
    start_mariadb
    say "starting a private Redis ($H/redis.sh)"
    sh "$H/redis.sh" start "$tmp/redis" >"$tmp/redis.out" 2>&1 ||
        { cat "$tmp/redis.out" >&2; say "Redis did not start"; exit 1; }
    redis_up=1
    set -a; . "$tmp/redis/redis.env"; set +a
    start one-node run_one_node
    one_pid=$server_pid
    one_port=$server_port
    for node in 1 2; do
        start "node$node" run_node
        eval "node${node}_pid=$server_pid node${node}_port=$server_port"
        wait_relay "$tmp/node$node.sock" || { say "node $node: relay not connected"; exit 1; }
    done
    # one balancer per node, so that A of every pair lands on node 1 and B on node 2
    start_nginx nginx0 "127.0.0.1:$one_port"
    n0=$nginx_port
    start_nginx nginx1 "127.0.0.1:$node1_port"
    n1=$nginx_port
    start_nginx nginx2 "127.0.0.1:$node2_port"
    n2=$nginx_port
    say "one node: 127.0.0.1:$one_port ($CLUSTER_WORKERS worker(s), MariaDB, no Redis), nginx 127.0.0.1:$n0"
    say "nodes: 127.0.0.1:$node1_port 127.0.0.1:$node2_port ($CLUSTER_WORKERS worker(s) each," \
        "MariaDB, Redis $QCHAT_REDIS_PORT); nginx 127.0.0.1:$n1 -> node 1, 127.0.0.1:$n2 -> node 2"
    say "all with $QCHATD_COMMON $CLUSTER_LOGIN"
    bench "register one node" reg --port "$one_port" --users $((2 * PAIRS)) --out "$tmp/ids.one" \
        --prefix bone_ -c $REG_CONCURRENCY --timeout $REG_TIMEOUT || exit 1
    bench "register cluster" reg --port "$n1" --users $((2 * PAIRS)) --out "$tmp/ids.cluster" \
        --prefix bcl_ -c $REG_CONCURRENCY --timeout $REG_TIMEOUT || exit 1
    say "row cluster: $PAIRS pairs, 64 B, one in flight, ${DUR}s: one node, then split over two nodes"
    cl_uptime_first=$(cut -d ' ' -f 1-3 /proc/loadavg)
    for run in $(seq "$RUNS"); do
        over_budget && { say "over budget, row skipped"; break; }
        say "run $run: load average $(cut -d ' ' -f 1-3 /proc/loadavg)"
        bench "relay_ref run $run" pingpong --port "$rp" --synthetic --pairs "$PAIRS" -d "$DUR" &&
            keep cl_rate_r "$(field "$line" rate)"
        # Every rate is kept, stalls or not (each row prints its own errors
        # and stalls): on a loaded machine a hiccup of 2 s stalls a few pairs.
        bench "one/nginx run $run" pingpong --port "$n0" --ids "$tmp/ids.one" \
            --pairs "$PAIRS" -d "$DUR"
        one_n=$(field "$line" rate)
        one_n=${one_n:--}
        keep cl_rate_qn "$one_n"
        bench "cluster/nginx run $run" pingpong --port "$n1" --port2 "$n2" --ids "$tmp/ids.cluster" \
            --pairs "$PAIRS" -d "$DUR"
        two_n=$(field "$line" rate)
        keep cl_rate_c "$two_n"
        keep cl_p99_c "$(field "$line" p99)"
        keep cl_errors_c "$(field "$line" errors)"
        keep cl_stalls_c "$(field "$line" stalls)"
        keep cl_ratio_n "$(ratio "${two_n:--}" "$one_n")"
        say "run $run: two nodes / one node via nginx $(ratio "${two_n:--}" "$one_n")"
        [ "$CLUSTER_DIRECT" = 1 ] || continue
        bench "one/direct run $run" pingpong --port "$one_port" --ids "$tmp/ids.one" \
            --pairs "$PAIRS" -d "$DUR"
        one_d=$(field "$line" rate)
        one_d=${one_d:--}
        keep cl_rate_q "$one_d"
        bench "cluster/direct run $run" pingpong --port "$node1_port" --port2 "$node2_port" \
            --ids "$tmp/ids.cluster" --pairs "$PAIRS" -d "$DUR"
        two_d=$(field "$line" rate)
        keep cl_rate_d "$two_d"
        keep cl_errors_d "$(field "$line" errors)"
        keep cl_stalls_d "$(field "$line" stalls)"
        keep cl_ratio_d "$(ratio "${two_d:--}" "$one_d")"
        say "run $run: two nodes / one node directly $(ratio "${two_d:--}" "$one_d")"
    done
    say "row cluster: load average $cl_uptime_first at the start, $(cut -d ' ' -f 1-3 /proc/loadavg) at the end"
    for node in 1 2; do
        printf '%-22s ' "  node $node"
        "$QCHATCTL" -s "$tmp/node$node.sock" --json status 2>/dev/null |
            grep -o '"relay": *{[^}]*}' || echo
    done
    for d in $nginx_dirs; do
        sh "$H/nginx.sh" stop "$d" >/dev/null 2>&1
    done
    nginx_dirs=""
    stop_server "$node1_pid"
    stop_server "$node2_pid"
    stop_server "$one_pid"
    sh "$H/redis.sh" stop "$tmp/redis" >/dev/null 2>&1
    redis_up=0
fi

if want_row offline && ! over_budget; then
    echo
    start_mariadb
    start qchatd-mysql run_qchatd_mysql
    mpid=$server_pid
    mp=$server_port
    say "qchatd (mysql) $QCHATD -f -o server.listen=127.0.0.1:$mp $QCHATD_MYSQL" \
        "-o storage.database=$DB_BENCH $QCHATD_COMMON (pid $mpid)"
    bench "register offline/my" reg --port "$mp" --users 2 --out "$tmp/ids.offline.my" \
        --prefix boff_ --timeout $REG_TIMEOUT || exit 1
    say "row offline: login with $OFFLINE_BACKLOG stored offline messages, $OFFLINE_ROUNDS rounds per run"
    for run in $(seq "$RUNS"); do
        over_budget && { say "over budget, row skipped"; break; }
        for st in sqlite mysql; do
            if [ $st = sqlite ]; then port=$qp ids=$tmp/ids.offline; else port=$mp ids=$tmp/ids.offline.my; fi
            bench "$st run $run" offline --port "$port" --ids "$ids" --backlog "$OFFLINE_BACKLOG" \
                --rounds "$OFFLINE_ROUNDS" -k $OFFLINE_INFLIGHT &&
                { keep "off_p50_$st" "$(field "$line" p50)"; keep "off_max_$st" "$(field "$line" max)";
                  keep "off_empty_$st" "$(field "$line" empty_p50)";
                  keep "off_store_$st" "$(field "$line" store_rate)"; }
        done
    done
    stop_server "$mpid"
fi

if [ $one_node = 1 ]; then
    stop_server "$rpid"
    stop_server "$qpid"
fi
if [ $mariadb_up = 1 ]; then
    sh "$H/mariadb.sh" stop "$tmp/mariadb" >/dev/null 2>&1
    mariadb_up=0
fi

# ---- 100,000 sessions on one node ------------------------------------------

# shellcheck disable=SC2086
run_qchatd_big_setup() {
    exec "$QCHATD" -f -o server.listen="127.0.0.1:$1" -o storage.path="$tmp/big.db" \
        -o server.control_socket="$tmp/big.sock" -o server.max_users="$BIG_MAX_USERS" \
        $QCHATD_COMMON -o security.password_cost=1
}

# shellcheck disable=SC2086
run_qchatd_big() {
    exec "$QCHATD" -f -o server.listen="127.0.0.1:$1" -o storage.path="$tmp/big.db" \
        -o server.control_socket="$tmp/big.sock" -o server.max_users="$BIG_MAX_USERS" \
        -o server.workers="$BIG_WORKERS" $QCHATD_COMMON
}

run_relay_ref_big() {
    exec "$RELAY" -l 127.0.0.1 -p "$1" -w "$BIG_WORKERS"
}

# big_hold LABEL SERVER_PID PORT RUN USERS...: BIG_PROCS conns processes,
# process i from source 127.RUN.0.(i+2); all must be up before any holds.
big_hold() {
    label=$1 spid=$2 port=$3 brun=$4
    shift 4
    per=$((BIG_CONNS / BIG_PROCS))
    rm -f "$tmp"/big.ready.* "$tmp/big.go"
    bpids=""
    i=0
    while [ $i -lt $BIG_PROCS ]; do
        if [ "$1" = --synthetic ]; then users="--synthetic --id-base $((200000 + i * per))"
        else users="--ids $1 --skip $((i * per))"; fi
        args="conns --port $port $users --conns $per --sources 127.$brun.0.$((i + 2))"
        args="$args -d $HOLD --timeout $BIG_TIMEOUT --ready-file $tmp/big.ready.$i --go-file $tmp/big.go"
        [ $i = 0 ] && echo "+ qchat-bench $args (x$BIG_PROCS: --skip/--id-base, source per process)" \
            >>"$tmp/commands"
        # shellcheck disable=SC2086
        timeout $((2 * BIG_TIMEOUT + HOLD + RUN_SLACK)) "$BENCH" $args -q \
            >"$tmp/big.out.$i" 2>"$tmp/big.err.$i" &
        bpids="$bpids $!"
        i=$((i + 1))
    done
    t0=$(date +%s)
    while :; do
        ready=0 dead=0 i=0
        for p in $bpids; do
            if [ -s "$tmp/big.ready.$i" ]; then ready=$((ready + 1))
            elif ! alive "$p"; then dead=$((dead + 1)); fi
            i=$((i + 1))
        done
        [ $ready -eq $BIG_PROCS ] || [ $dead -gt 0 ] && break
        [ $(($(date +%s) - t0)) -gt $((BIG_TIMEOUT + RUN_SLACK)) ] && break
        sleep 1
    done
    setup=$(($(date +%s) - t0))
    held=$(cat "$tmp"/big.ready.* 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
    online=-
    [ "$spid" = "$bigq_pid" ] &&
        online=$("$QCHATCTL" -s "$tmp/big.sock" --json status 2>/dev/null |
                 sed -n 's/.*"online":\([0-9]*\).*/\1/p')
    pss=$(pss_kib "$spid")
    fds=$(max_fds "$spid")
    : >"$tmp/big.go"
    brc=0
    for p in $bpids; do
        wait "$p" || brc=1
    done
    got=0 checked=0 errors=0
    i=0
    while [ $i -lt $BIG_PROCS ]; do
        l=$(tail -n 1 "$tmp/big.out.$i")
        v=$(field "$l" received)
        got=$((got + ${v:-0}))
        v=$(field "$l" checked)
        checked=$((checked + ${v:-0}))
        v=$(field "$l" errors)
        errors=$((errors + ${v:-1}))
        [ -s "$tmp/big.err.$i" ] && head -n 3 "$tmp/big.err.$i" | sed "s/^/    [$i] /"
        i=$((i + 1))
    done
    printf '%-22s held=%s online=%s setup=%ss received=%s/%s errors=%s pss=%sKiB maxfds/worker=%s\n' \
        "$label" "$held" "$online" "$setup" "$got" "$checked" "$errors" "$pss" "$fds"
    big_ok=0
    [ "$held" -eq "$BIG_CONNS" ] && [ "$got" -eq "$BIG_CONNS" ] && [ "$errors" -eq 0 ] &&
        [ $brc -eq 0 ] && big_ok=1
}

if want_row big && ! over_budget; then
    echo
    say "row big: $BIG_CONNS idle sessions on one node, $BIG_WORKERS workers, $BIG_PROCS bench processes"
    start qchatd-big-setup run_qchatd_big_setup
    bsp=$server_port
    bench "register big" reg --port "$bsp" --users "$BIG_CONNS" --out "$tmp/ids.big" \
        --prefix bbig_ -c $REG_CONCURRENCY --timeout $BIG_REG_TIMEOUT
    stop_server "$server_pid"
    start qchatd-big run_qchatd_big
    bigq_pid=$server_pid
    bqp=$server_port
    start relay_ref-big run_relay_ref_big
    bigr_pid=$server_pid
    brp=$server_port
    say "qchatd $QCHATD -f -o server.listen=127.0.0.1:$bqp -o storage.path=big.db" \
        "-o server.max_users=$BIG_MAX_USERS -o server.workers=$BIG_WORKERS $QCHATD_COMMON"
    say "relay_ref -l 127.0.0.1 -p $brp -w $BIG_WORKERS"
    for run in $(seq "$RUNS"); do
        over_budget && { say "over budget, row skipped"; break; }
        big_hold "relay_ref run $run" "$bigr_pid" "$brp" $((2 * run - 1)) --synthetic
        keep big_pss_r "$pss"
        big_hold "qchatd run $run" "$bigq_pid" "$bqp" $((2 * run)) "$tmp/ids.big"
        keep big_pss_q "$pss"
        keep big_held_q "$held"
        keep big_ok_q "$big_ok"
        keep big_setup_q "$setup"
    done
    stop_server "$bigr_pid"
    stop_server "$bigq_pid"
fi

# ---- summary --------------------------------------------------------------

r_rate=$(median pp_rate_r); q_rate=$(median pp_rate_q)
r_p99=$(median pp_p99_r); q_p99=$(median pp_p99_q)
r_pss=$(median conns_pss_r); q_pss=$(median conns_pss_q)
g_rate=$(median group_rate_q)
s_alone=$(median storm_p99_alone); s_storm=$(median storm_p99_storm)
c_r=$(median cl_rate_r); c_q=$(median cl_rate_q); c_c=$(median cl_rate_c); c_qn=$(median cl_rate_qn)

echo
say "medians of $RUNS runs"
printf '%-40s %14s %14s %8s\n' "row" "relay_ref" "qchatd" "ratio"
printf '%-40s %14s %14s %8s\n' "pingpong $PAIRS pairs msgs/s" "$r_rate" "$q_rate" "$(ratio "$q_rate" "$r_rate")"
printf '%-40s %14s %14s %8s\n' "pingpong $PAIRS pairs p99 ms" "$r_p99" "$q_p99" "$(ratio "$q_p99" "$r_p99")"
printf '%-40s %14s %14s\n' "conns $CONNS PSS KiB (all processes)" "$r_pss" "$q_pss"
printf '%-40s %14s %14s %8s\n' "group $MEMBERS deliveries/s (vs pp)" "-" "$g_rate" "$(ratio "$g_rate" "$q_rate")"
printf '%-40s %14s %14s %8s\n' "p99 ms alone / during login storm" "$s_alone" "$s_storm" "$(ratio "$s_storm" "$s_alone")"
printf '%-40s %14s %14s\n' "login storm logins/s" "-" "$(median storm_login_rate)"
printf '%-40s %14s %14s %8s\n' "cluster via nginx msgs/s (vs one node)" "$c_qn" "$c_c" "$(ratio "$c_c" "$c_qn")"
printf '%-40s %14s %14s %8s\n' "  per-run ratios, their median" "-" \
    "$(tr '\n' ' ' <"$res/cl_ratio_n" 2>/dev/null)" "$(median cl_ratio_n)"
printf '%-40s %14s %14s %8s\n' "  p99 ms / errors / stalls" "-" "$(median cl_p99_c)" \
    "$(median cl_errors_c)/$(median cl_stalls_c)"
printf '%-40s %14s %14s %8s\n' "cluster directly msgs/s (vs one node)" "$c_q" "$(median cl_rate_d)" \
    "$(ratio "$(median cl_rate_d)" "$c_q")"
printf '%-40s %14s %14s %8s\n' "  per-run ratios, their median" "-" \
    "$(tr '\n' ' ' <"$res/cl_ratio_d" 2>/dev/null)" "$(median cl_ratio_d)"
printf '%-40s %14s %14s %8s\n' "  errors / stalls" "-" "-" "$(median cl_errors_d)/$(median cl_stalls_d)"
printf '%-40s %14s %14s\n' "relay_ref in the cluster row msgs/s" "$c_r" "-"
for st in sqlite mysql; do
    printf '%-40s %14s %14s\n' "offline $OFFLINE_BACKLOG: login p50 / max ms ($st)" \
        "$(median "off_p50_$st")" "$(median "off_max_$st")"
    printf '%-40s %14s %14s\n' "  empty-mailbox login p50 ms / store/s" \
        "$(median "off_empty_$st")" "$(median "off_store_$st")"
done
printf '%-40s %14s %14s\n' "big $BIG_CONNS sessions PSS KiB" "$(median big_pss_r)" "$(median big_pss_q)"
printf '%-40s %14s %14s\n' "big: held (median) / runs all held" "-" \
    "$(median big_held_q)/$(cat "$res/big_ok_q" 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')"
echo
say "commands (ids files and ports vary per run):"
sed 's/^/    /' "$tmp/commands"
say "done in $(($(date +%s) - started))s"
