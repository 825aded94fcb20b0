#!/bin/sh
# bench_log.sh - the version 2 benchmark (issue 11): what the conversation
# log costs, measured with qchat-bench beside the relay_ref yardstick in one
# run, RUNS runs of each row, servers alternating inside each run, medians
# at the end.  The rows (ROWS picks some, default all):
#
#   pingpong  PAIRS pairs, 64 B, one in flight: relay_ref, qchatd with the
#             log (SQLite), qchatd with history.enabled = no, in turn
#   mysql     the same ping-pong on qchatd with the log on the private
#             MariaDB (tests/harness/mariadb.sh), beside relay_ref
#   group     MEMBERS online members of one group with the log on:
#             deliveries/s (every GROUP_CHAT appended once, ACK after commit)
#   history   HISTORY_MSG pages of LIMIT messages at random depths of a
#             one-to-one conversation of HISTORY_ROWS messages written
#             straight into the SQLite file with sqlite3
#   offline   login with OFFLINE_BACKLOG undelivered messages (SQLite, and
#             MariaDB when the mysql row runs): p50/p99 per login
#   myoffline the MariaDB login row alone (with mysql, without the SQLite one)
#
# MariaDB only, before and after a change, side by side in one run:
#   BEFORE=/tmp/main/build/qchatd ROWS="mysql myoffline" sh tests/harness/bench_log.sh
# BEFORE names a second qchatd (e.g. main's) that gets its own database
# (${DB}_before) and runs each MariaDB row right after this tree's qchatd.
#
#   B=build sh tests/harness/bench_log.sh          (RUNS=3 DUR=10 by default)
#   ROWS="mysql myoffline" sh tests/harness/bench_log.sh     (MariaDB rows only)
#   ROWS="pingpong history" RUNS=5 sh tests/harness/bench_log.sh
#   BASE=/tmp/main/build ROWS=pingpong sh tests/harness/bench_log.sh
#
# BASE: a directory holding another build's qchatd (main's, say): the
# pingpong row then also runs it, log on and log off, in the same turn
# (relay_ref, on, off, base on, base off), for before/after in one run.
#
# Users are registered on a qchatd with password_cost=1; the measured
# servers run the default configuration except request_rate=0,
# log.level=warning and password_cost=1 (see COMMON).  Everything listens
# on free 127.0.0.1 ports in a temporary directory and is stopped by PID.

top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
H=$top/tests/harness
. "$H/lib.sh"
. "$H/bench_lib.sh"
bench_begin bench_log
QCHATD=$B/qchatd
RELAY=$B/relay_ref
CC=${CC:-cc}

ROWS=${ROWS:-pingpong mysql group history offline}
BEFORE=${BEFORE:-}
RUNS=${RUNS:-3}
DUR=${DUR:-10}
PAIRS=${PAIRS:-1000}
MEMBERS=${MEMBERS:-1000}
SENDERS=${SENDERS:-4}
GROUP_INFLIGHT=${GROUP_INFLIGHT:-2}
HISTORY_ROWS=${HISTORY_ROWS:-1000000}
HISTORY_PAGES=${HISTORY_PAGES:-2000}  # pages per run
LIMIT=${LIMIT:-50}
OFFLINE_BACKLOG=${OFFLINE_BACKLOG:-1000}
OFFLINE_ROUNDS=${OFFLINE_ROUNDS:-10}
OFFLINE_INFLIGHT=32
WORKERS=${WORKERS:-$(nproc)}

START_WAIT=60
STOP_WAIT=15
RUN_SLACK=120
REG_TIMEOUT=120
QUIET_WAIT=120 # seconds mysql_quiet waits at most
DB=qchat_benchlog
HISTORY_TEXT=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef

mariadb_up=0

cleanup() {
    stop_pids "$STOP_WAIT" ""
    [ $mariadb_up = 1 ] && sh "$H/mariadb.sh" stop "$tmp/mariadb" >/dev/null 2>&1
    finish_tmp
}

# password_cost=1 on the measured servers too: a login at the default cost
# rehashes the cost-1 password (about 18 ms of CPU each), and 2,000 of them
# per ping-pong run outlived --timeout on the loaded machine; the hashing is
# not what these rows measure (the login row gives the empty-mailbox login).
COMMON="-o security.request_rate=0 -o log.level=warning -o security.password_cost=1"
# ... and at that cost 2,000 logins from one address exceed the guard's
# GUARD_ADDR_CHECKS_PER_S (256 password checks per address and second,
# refused with errno 14): the load comes from 16 loopback addresses.
SOURCES=$(seq -s, -f '127.0.1.%g' 1 16)

# qchatd_as PORT BINARY NAME [OPTION...]: BINARY on PORT with $tmp/NAME.db
# and $tmp/NAME.sock, COMMON and the options.
# shellcheck disable=SC2086
qchatd_as() {
    q_port=$1 q_bin=$2 q_name=$3
    shift 3
    exec "$q_bin" -f -o server.listen="127.0.0.1:$q_port" -o storage.path="$tmp/$q_name.db" \
        -o server.control_socket="$tmp/$q_name.sock" $COMMON "$@"
}

run_setup() {
    qchatd_as "$1" "$QCHATD" on # stopped before log-on starts
}

run_log_on() {
    qchatd_as "$1" "$QCHATD" on
}

run_log_off() {
    qchatd_as "$1" "$QCHATD" off -o history.enabled=no
}

# shellcheck disable=SC2086
run_mysql() {
    exec "$QCHATD" -f -o server.listen="127.0.0.1:$1" -o server.control_socket="$tmp/my.sock" \
        $MYSQL_OPTS $COMMON
}

run_base_on() {
    qchatd_as "$1" "$BASE/qchatd" base_on
}

run_base_off() {
    qchatd_as "$1" "$BASE/qchatd" base_off -o history.enabled=no
}

run_relay_ref() {
    exec "$RELAY" -l 127.0.0.1 -p "$1" -w "$WORKERS"
}

load() {
    cut -d' ' -f1 /proc/loadavg
}

# bench LABEL ARGS...: qchat-bench, its summary line in $line (and printed)
bench() {
    label=$1
    shift
    echo "+ qchat-bench $*" >>"$tmp/commands"
    timeout $((DUR + REG_TIMEOUT + RUN_SLACK)) "$BENCH" "$@" -q >"$tmp/out" 2>"$tmp/err"
    rc=$?
    line=$(tail -n 1 "$tmp/out")
    printf '%-24s load=%s %s\n' "$label" "$(load)" "$line"
    if [ $rc -ne 0 ]; then
        say "$label: exit $rc"
        head -n 5 "$tmp/err" | sed 's/^/    /'
    fi
    return $rc
}

# pair_ratio A B: A's and B's figures of one run divided, kept as NAME
pair_ratio() {
    keep "$1" "$(ratio "$2" "$3")"
}

# ---- setup ------------------------------------------------------------------

for f in "$BENCH" "$QCHATD"; do
    [ -x "$f" ] || { say "$f not built (make all)"; exit 1; }
done
$CC -O2 -o "$RELAY" "$H/relay_ref.c" || exit 1
command -v sqlite3 >/dev/null || { say "sqlite3 (the command) is needed to fill the history"; exit 1; }

say "machine: $(nproc) CPU, load $(cat /proc/loadavg)"
say "rows: $ROWS; runs=$RUNS duration=${DUR}s pairs=$PAIRS members=$MEMBERS history=$HISTORY_ROWS"

start setup run_setup
sp=$server_port
bench "register pp" reg --port "$sp" --users $((2 * PAIRS)) --out "$tmp/ids.pp" --prefix lpp_ \
    -c 32 --timeout $REG_TIMEOUT || exit 1
if want_row group; then
    bench "register group" reg --port "$sp" --users "$MEMBERS" --out "$tmp/ids.group" \
        --prefix lgr_ -c 32 --timeout $REG_TIMEOUT || exit 1
fi
bench "register history" reg --port "$sp" --users 2 --out "$tmp/ids.hist" --prefix lhi_ \
    --timeout $REG_TIMEOUT || exit 1
bench "register offline" reg --port "$sp" --users 2 --out "$tmp/ids.off" --prefix lof_ \
    --timeout $REG_TIMEOUT || exit 1
stop_server "$server_pid"

# history_sql A B ROWS: the rows of the conversation of users A < B,
# written as the server writes them (body = the forwarded object), and
# both users' cursors at its end (so that neither login brings it).
history_sql() {
    a=$1 b=$2
    [ "$a" -lt "$b" ] || { a=$2 b=$1; }
    cat <<EOF
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $3)
INSERT INTO Message (conv, cseq, mid, sender, ts, body)
SELECT ($a << 32) | $b, i, i, CASE WHEN i % 2 THEN $a ELSE $b END, 1700000000000 + i,
       '{"msgid":5,"id":' || (CASE WHEN i % 2 THEN $a ELSE $b END) ||
       ',"name":"lhi_","toid":' || (CASE WHEN i % 2 THEN $b ELSE $a END) ||
       ',"msg":"$HISTORY_TEXT","time":"2023-11-14 22:13:20","ts":' || (1700000000000 + i) ||
       ',"mid":' || i || ',"cseq":' || i || '}'
FROM n;
INSERT OR REPLACE INTO Conversation (conv, last_cseq, last_ts)
    VALUES (($a << 32) | $b, $3, 1700000000000 + $3);
INSERT OR REPLACE INTO ConvCursor (userid, conv, delivered_cseq, read_cseq)
    VALUES ($a, ($a << 32) | $b, $3, $3), ($b, ($a << 32) | $b, $3, $3);
COMMIT;
EOF
}

if want_row history; then
    # the two ids, one per word
    # shellcheck disable=SC2046
    set -- $(awk '{ print $1 }' "$tmp/ids.hist")
    t0=$(date +%s)
    history_sql "$1" "$2" "$HISTORY_ROWS" | sqlite3 "$tmp/on.db" || exit 1
    say "history: $HISTORY_ROWS messages written into on.db in $(($(date +%s) - t0))s" \
        "($(du -m "$tmp/on.db" | cut -f1) MB)"
fi
# The copies must hold every registration: fold what a stopped server left
# in the write-ahead log into the file first (a copy of on.db alone missed
# up to 710 of the 2,004 users, whose logins then failed with errno 1).
sqlite3 "$tmp/on.db" "PRAGMA wal_checkpoint(TRUNCATE)" >/dev/null || exit 1
users=$(sqlite3 "$tmp/on.db" "SELECT COUNT(*) FROM User")
[ "$users" -ge $((2 * PAIRS)) ] || { say "setup database holds $users users"; exit 1; }
cp "$tmp/on.db" "$tmp/off.db"
if [ -n "${BASE:-}" ]; then
    cp "$tmp/on.db" "$tmp/base_on.db"
    cp "$tmp/on.db" "$tmp/base_off.db"
fi

start log-on run_log_on
qon_pid=$server_pid qon=$server_port
start log-off run_log_off
qoff_pid=$server_pid qoff=$server_port
start relay_ref run_relay_ref
rp=$server_port
say "qchatd (log on)  $QCHATD -f -o storage.path=on.db $COMMON: port $qon"
say "qchatd (log off) $QCHATD -f -o storage.path=off.db -o history.enabled=no $COMMON: port $qoff"
say "relay_ref -w $WORKERS: port $rp"
if [ -n "${BASE:-}" ]; then
    start base-on run_base_on
    bon=$server_port
    start base-off run_base_off
    boff=$server_port
    say "base: $BASE/qchatd, log on port $bon, log off port $boff"
fi

# ---- rows ---------------------------------------------------------------------

if want_row pingpong; then
    echo
    say "row pingpong: $PAIRS pairs, 64 B, one in flight, ${DUR}s; relay_ref, log on, log off"
    # pp_build / pp_base: one run of this build's two servers, of BASE's
    pp_build() {
        bench "log on run $run" pingpong --port "$qon" --ids "$tmp/ids.pp" --pairs "$PAIRS" -d "$DUR" \
            --sources "$SOURCES" &&
            { q=$(field "$line" rate); keep pp_on "$q"; keep pp_p99_on "$(field "$line" p99)";
              pair_ratio pp_on_ratio "$q" "$r"; }
        bench "log off run $run" pingpong --port "$qoff" --ids "$tmp/ids.pp" --pairs "$PAIRS" -d "$DUR" \
            --sources "$SOURCES" &&
            { q=$(field "$line" rate); keep pp_off "$q"; keep pp_p99_off "$(field "$line" p99)";
              pair_ratio pp_off_ratio "$q" "$r"; }
        return 0
    }
    pp_base() {
        bench "base on run $run" pingpong --port "$bon" --ids "$tmp/ids.pp" --pairs "$PAIRS" \
            -d "$DUR" --sources "$SOURCES" &&
            { q=$(field "$line" rate); keep pp_bon "$q"; pair_ratio pp_bon_ratio "$q" "$r"; }
        bench "base off run $run" pingpong --port "$boff" --ids "$tmp/ids.pp" --pairs "$PAIRS" \
            -d "$DUR" --sources "$SOURCES" &&
            { q=$(field "$line" rate); keep pp_boff "$q"; pair_ratio pp_boff_ratio "$q" "$r"; }
        return 0
    }
    for run in $(seq "$RUNS"); do
        bench "relay_ref run $run" pingpong --port "$rp" --synthetic --pairs "$PAIRS" -d "$DUR" &&
            { r=$(field "$line" rate); keep pp_r "$r"; keep pp_p99_r "$(field "$line" p99)"; }
        # BASE first in even runs: the servers that ran last in a round won
        # by 5-12% whichever binary they were (docs/BENCHMARKS.md, phase 8).
        if [ -z "${BASE:-}" ]; then
            pp_build
        elif [ $((run % 2)) -eq 1 ]; then
            pp_build && pp_base
        else
            pp_base && pp_build
        fi
    done
fi

if want_row group; then
    echo
    say "row group: $MEMBERS members, $SENDERS senders, $GROUP_INFLIGHT in flight, log on, ${DUR}s"
    gid=""
    for run in $(seq "$RUNS"); do
        bench "group run $run" group --port "$qon" --ids "$tmp/ids.group" --members "$MEMBERS" \
            --senders "$SENDERS" -k "$GROUP_INFLIGHT" --seq -d "$DUR" ${gid:+--groupid "$gid"} \
            --sources "$SOURCES" &&
            { keep group_rate "$(field "$line" rate)"; keep group_p99 "$(field "$line" p99)"; }
        g=$(field "$line" groupid)
        [ -n "$g" ] && [ "$g" != 0 ] && gid=$g
    done
fi

if want_row history; then
    echo
    say "row history: pages of $LIMIT at random depths of $HISTORY_ROWS messages, $HISTORY_PAGES per run"
    for run in $(seq "$RUNS"); do
        bench "history run $run" history --port "$qon" --ids "$tmp/ids.hist" --limit "$LIMIT" \
            -n "$HISTORY_PAGES" --id-base "$run" &&
            { keep hist_p50 "$(field "$line" p50)"; keep hist_p99 "$(field "$line" p99)";
              keep hist_rate "$(field "$line" rate)"; }
    done
fi

if want_row offline; then
    echo
    say "row offline: login with $OFFLINE_BACKLOG undelivered, $OFFLINE_ROUNDS rounds per run (log on, SQLite)"
    for run in $(seq "$RUNS"); do
        bench "offline run $run" offline --port "$qon" --ids "$tmp/ids.off" --backlog "$OFFLINE_BACKLOG" \
            --rounds "$OFFLINE_ROUNDS" -k $OFFLINE_INFLIGHT &&
            { keep off_p50 "$(field "$line" p50)"; keep off_p99 "$(field "$line" p99)";
              keep off_empty "$(field "$line" empty_p50)"; }
    done
fi

# mysql_opts DATABASE: the storage options of a qchatd on the private MariaDB
mysql_opts() {
    echo "-o storage.driver=mysql -o storage.socket=$QCHAT_MYSQL_SOCKET" \
        "-o storage.user=$QCHAT_MYSQL_USER" \
        "-o storage.password_file=$QCHAT_MYSQL_PASSWORD_FILE -o storage.database=$1"
}

# shellcheck disable=SC2086,SC2046
run_mysql_before() {
    exec "$BEFORE" -f -o server.listen="127.0.0.1:$1" -o server.control_socket="$tmp/myb.sock" \
        $(mysql_opts "${DB}_before") $COMMON
}

# mysql_register RUNNER SUFFIX: the ping-pong and offline users on a fresh server
mysql_register() {
    start "mysql-setup$2" "$1"
    bench "register mysql pp$2" reg --port "$server_port" --users $((2 * PAIRS)) \
        --out "$tmp/ids.mypp$2" --prefix lmy_ -c 32 --timeout $REG_TIMEOUT || exit 1
    bench "register mysql off$2" reg --port "$server_port" --users 2 --out "$tmp/ids.myoff$2" \
        --prefix lmo_ --timeout $REG_TIMEOUT || exit 1
    stop_server "$server_pid"
}

# mysql_quiet: wait (at most QUIET_WAIT s) until MariaDB has run no write for
# a second: a server's append backlog from the row before (the journal holds up
# to history.journal_bytes of chats not yet committed) must not load the next.
mysql_quiet() {
    q_prev="" q_waited=0
    while [ "$q_waited" -lt "$QUIET_WAIT" ]; do
        q_now=$(echo "SELECT SUM(VARIABLE_VALUE) FROM information_schema.GLOBAL_STATUS" \
            "WHERE VARIABLE_NAME IN ('COM_COMMIT', 'COM_INSERT', 'COM_UPDATE', 'COM_UPDATE_MULTI')" |
            sh "$H/mariadb.sh" sql "$tmp/mariadb" | tail -n 1)
        [ "$q_now" = "$q_prev" ] && return 0
        q_prev=$q_now
        sleep 1
        q_waited=$((q_waited + 1))
    done
    say "MariaDB still writing after ${QUIET_WAIT}s"
}

# mysql_stored DATABASE: messages in its log (cseqs have no gaps)
mysql_stored() {
    echo "SELECT COALESCE(SUM(last_cseq), 0) FROM Conversation" |
        sh "$H/mariadb.sh" sql "$tmp/mariadb" "$1" | tail -n 1
}

# mysql_rows LABEL PORT SUFFIX: one run's MariaDB ping-pong (and login) on one
# server.  Chats are delivered before they are committed (the ACK waits for
# the commit), so besides msgs/s it gives what was committed during the run
# (committed/s) and how long the backlog took to be written afterwards.
mysql_rows() {
    case $3 in _b) d=${DB}_before ;; *) d=$DB ;; esac
    mysql_quiet
    c0=$(mysql_stored "$d")
    bench "$1 run $run" pingpong --port "$2" --ids "$tmp/ids.mypp$3" --pairs "$PAIRS" -d "$DUR" \
        --sources "$SOURCES" &&
        { q=$(field "$line" rate); keep "my_q$3" "$q"; keep "my_p99$3" "$(field "$line" p99)";
          pair_ratio "my_ratio$3" "$q" "$r"; }
    c1=$(mysql_stored "$d")
    t0=$(date +%s)
    mysql_quiet
    c2=$(mysql_stored "$d")
    printf '%-24s committed during the run %s (%s/s), backlog %s written in %ss\n' "$1 run $run" \
        $((c1 - c0)) $(((c1 - c0) / DUR)) $((c2 - c1)) $(($(date +%s) - t0))
    keep "my_commit$3" $(((c1 - c0) / DUR))
    want_row offline || want_row myoffline || return 0
    mysql_quiet
    bench "$1 offline run $run" offline --port "$2" --ids "$tmp/ids.myoff$3" \
        --backlog "$OFFLINE_BACKLOG" --rounds "$OFFLINE_ROUNDS" -k $OFFLINE_INFLIGHT &&
        { keep "myoff_p50$3" "$(field "$line" p50)"; keep "myoff_p99$3" "$(field "$line" p99)"; }
}

if want_row mysql; then
    echo
    say "starting a private MariaDB ($H/mariadb.sh)"
    sh "$H/mariadb.sh" start "$tmp/mariadb" >"$tmp/mariadb.out" 2>&1 ||
        { cat "$tmp/mariadb.out" >&2; say "MariaDB did not start"; exit 1; }
    mariadb_up=1
    set -a; . "$tmp/mariadb/env"; set +a
    sh "$H/mariadb.sh" createdb "$tmp/mariadb" "$DB" || exit 1
    MYSQL_OPTS=$(mysql_opts "$DB")
    mysql_register run_mysql ""
    start mysql run_mysql
    mp=$server_port
    say "qchatd (mysql) $QCHATD -f $MYSQL_OPTS $COMMON: port $mp"
    if [ -n "$BEFORE" ]; then
        sh "$H/mariadb.sh" createdb "$tmp/mariadb" "${DB}_before" || exit 1
        mysql_register run_mysql_before _b
        start mysql-before run_mysql_before
        mbp=$server_port
        say "qchatd (mysql, before) $BEFORE -f $(mysql_opts "${DB}_before") $COMMON: port $mbp"
    fi
    say "MariaDB settings: $(echo "SELECT @@innodb_flush_log_at_trx_commit, @@sync_binlog," \
        "@@log_bin, @@innodb_doublewrite, @@innodb_buffer_pool_size" |
        sh "$H/mariadb.sh" sql "$tmp/mariadb" | tr '\n\t' '  ')"
    say "row mysql: $PAIRS pairs, log on, MariaDB; relay_ref${BEFORE:+, before} then qchatd per run"
    for run in $(seq "$RUNS"); do
        bench "relay_ref run $run" pingpong --port "$rp" --synthetic --pairs "$PAIRS" -d "$DUR" &&
            { r=$(field "$line" rate); keep my_r "$r"; }
        [ -n "$BEFORE" ] && mysql_rows "mysql before" "$mbp" _b
        mysql_rows mysql "$mp" ""
    done
fi

# ---- summary ------------------------------------------------------------------

echo
say "medians of $RUNS runs (load now $(cat /proc/loadavg))"
printf '%-44s %12s %12s %8s %8s\n' "row" "relay_ref" "qchatd" "ratio" "paired"
printf '%-44s %12s %12s %8s %8s\n' "pingpong $PAIRS pairs msgs/s, log on (SQLite)" "$(median pp_r)" \
    "$(median pp_on)" "$(ratio "$(median pp_on)" "$(median pp_r)")" "$(median pp_on_ratio)"
printf '%-44s %12s %12s %8s %8s\n' "pingpong msgs/s, log off" "$(median pp_r)" \
    "$(median pp_off)" "$(ratio "$(median pp_off)" "$(median pp_r)")" "$(median pp_off_ratio)"
if [ -n "${BASE:-}" ]; then
    printf '%-44s %12s %12s %8s %8s\n' "pingpong msgs/s, BASE log on" "$(median pp_r)" \
        "$(median pp_bon)" "$(ratio "$(median pp_bon)" "$(median pp_r)")" "$(median pp_bon_ratio)"
    printf '%-44s %12s %12s %8s %8s\n' "pingpong msgs/s, BASE log off" "$(median pp_r)" \
        "$(median pp_boff)" "$(ratio "$(median pp_boff)" "$(median pp_r)")" "$(median pp_boff_ratio)"
fi
printf '%-44s %12s %12s\n' "pingpong p99 ms: relay_ref / on / off" "$(median pp_p99_r)" \
    "$(median pp_p99_on) / $(median pp_p99_off)"
printf '%-44s %12s %12s %8s %8s\n' "pingpong msgs/s, log on (MariaDB)" "$(median my_r)" \
    "$(median my_q)" "$(ratio "$(median my_q)" "$(median my_r)")" "$(median my_ratio)"
printf '%-44s %12s %12s\n' "group $MEMBERS deliveries/s, p99 ms" "$(median group_rate)" "$(median group_p99)"
printf '%-44s %12s %12s\n' "history page of $LIMIT: p50 / p99 ms" "$(median hist_p50)" "$(median hist_p99)"
printf '%-44s %12s %12s\n' "login, $OFFLINE_BACKLOG undelivered: p50 / p99 ms" "$(median off_p50)" "$(median off_p99)"
printf '%-44s %12s %12s\n' "  empty mailbox p50 ms / MariaDB p50" "$(median off_empty)" "$(median myoff_p50)"
printf '%-44s %12s %12s\n' "  MariaDB login p99 ms / committed/s in ping-pong" "$(median myoff_p99)" \
    "$(median my_commit)"
if [ -n "$BEFORE" ]; then
    printf '%-44s %12s %12s %8s %8s\n' "before: pingpong msgs/s, log on (MariaDB)" "$(median my_r)" \
        "$(median my_q_b)" "$(ratio "$(median my_q_b)" "$(median my_r)")" "$(median my_ratio_b)"
    printf '%-44s %12s %12s\n' "MariaDB committed/s during the run: before / after" \
        "$(median my_commit_b)" "$(median my_commit)"
    printf '%-44s %12s %12s\n' "before: MariaDB login p50 / p99 ms" "$(median myoff_p50_b)" \
        "$(median myoff_p99_b)"
fi
echo
say "commands (ids files and ports vary per run):"
sed 's/^/    /' "$tmp/commands"
