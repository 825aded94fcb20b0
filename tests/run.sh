#!/bin/sh
# run.sh - run every test binary and script, print one line per binary and
# a last line "N passed, N failed" (test cases), exit non-zero on any failure.
#
#   B=build sh tests/run.sh          (make check does this; B=build-san for SANITIZE=1)
#
# Runs $B/tests/test_* (unit, cmocka), $B/tests/it_* (integration, cmocka)
# and every executable tests/scripts/*.sh (exit 0 counts as 1 passed, exit
# 77 as 1 skipped -- the script could not run here and said why in a SKIP
# line --, else 1 failed), each under `timeout`.  The last line then ends
# in ", N skipped".  Counts come from cmocka's summary:
# "[==========] Running N test(s)." and "[  PASSED  ] N test(s)." (a test
# that errored in a fixture is counted as failed); a binary that crashed
# or timed out without a summary, or exited non-zero after it (a sanitizer
# report at exit), counts one more failure.  Full output of each binary:
# $B/test-logs/NAME.log; the logs of failures are shown at the end.

B=${B:-build}
TIME_LIMIT=${TEST_TIME_LIMIT:-300}   # seconds per binary
KILL_AFTER=10                        # then SIGKILL
LOG_LINES=${TEST_LOG_LINES:-300}     # lines of a failure's log shown

cd "$(dirname "$0")/.." || exit 2
LOGDIR=$B/test-logs
mkdir -p "$LOGDIR" || exit 2

# cmocka's plain format, whatever the caller's environment says.
CMOCKA_MESSAGE_OUTPUT=stdout
export CMOCKA_MESSAGE_OUTPUT B
if [ "${SANITIZE:-}" = 1 ]; then
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=1}
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    export ASAN_OPTIONS UBSAN_OPTIONS
fi

SKIP_STATUS=77                       # a script that cannot run here
total_pass=0
total_fail=0
total_skip=0
failed_logs=""

# summary_number PATTERN LOG: the N of the first line "PATTERN N test(s)".
summary_number() {
    sed -n "s/^$1 \([0-9][0-9]*\) test(s).*/\1/p" "$2" | head -n 1
}

# run_one KIND PATH [LABEL]: run a binary or script, count, print its line.
run_one() {
    kind=$1
    path=$2
    name=$(basename "$path")${3:+[$3]}
    log=$LOGDIR/$name.log
    start=$(date +%s)
    timeout -k "$KILL_AFTER" "$TIME_LIMIT" "$path" >"$log" 2>&1 </dev/null
    rc=$?
    secs=$(( $(date +%s) - start ))

    skip=0
    if [ "$kind" = script ]; then
        if [ "$rc" -eq 0 ]; then pass=1; fail=0;
        elif [ "$rc" -eq "$SKIP_STATUS" ]; then pass=0; fail=0; skip=1;
        else pass=0; fail=1; fi
    else
        running=$(summary_number '\[==========\] Running' "$log")
        passed=$(summary_number '\[  PASSED  \]' "$log")
        failed=$(summary_number '\[  FAILED  \]' "$log")
        skipped=$(summary_number '\[  SKIPPED \]' "$log")
        pass=${passed:-0}
        fail=${failed:-0}
        if [ -n "$passed" ] && [ -n "$running" ]; then
            # errors in fixtures are in neither PASSED nor FAILED
            missing=$(( running - pass - ${skipped:-0} ))
            [ "$missing" -gt "$fail" ] && fail=$missing
        fi
        if [ -z "$passed" ]; then
            fail=1          # crashed or timed out: no summary
        elif [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
            fail=1          # e.g. a sanitizer report after the summary
        fi
    fi

    case $rc in
        0)   how="" ;;
        "$SKIP_STATUS") how=" (skipped: $(grep -m1 'SKIP' "$log" | sed 's/^.*SKIP:* *//' | cut -c1-100))" ;;
        124) how=" (timed out after ${TIME_LIMIT}s)" ;;
        137) how=" (killed)" ;;
        *)   if [ "$rc" -gt 128 ]; then how=" (signal $((rc - 128)))"; else how=" (exit $rc)"; fi ;;
    esac
    if [ "$fail" -ne 0 ]; then status=FAIL; elif [ "$skip" -ne 0 ]; then status=skip; else status=ok; fi
    printf '%-4s  %-28s %4d passed, %3d failed  %4ds%s\n' "$status" "$name" "$pass" "$fail" \
        "$secs" "$how"
    total_pass=$((total_pass + pass))
    total_fail=$((total_fail + fail))
    total_skip=$((total_skip + skip))
    [ "$fail" -eq 0 ] || failed_logs="$failed_logs $log"
}

# A private MariaDB for the mysql driver's tests and the suite's second pass
# (unless the caller exported one already, or asked for none: QCHAT_NO_MYSQL=1).
MDB=""
stop_mariadb() {
    [ -n "$MDB" ] && sh tests/harness/mariadb.sh stop "$MDB" >/dev/null 2>&1
    [ -n "$MDB" ] && rm -rf "$MDB"
    MDB=""
}
trap 'stop_mariadb' EXIT
trap 'stop_mariadb; exit 130' INT TERM
if [ -z "${QCHAT_MYSQL_SOCKET:-}" ] && [ "${QCHAT_NO_MYSQL:-0}" != 1 ]; then
    MDB=$(mktemp -d /tmp/qchat-mariadb.XXXXXX)
    if sh tests/harness/mariadb.sh start "$MDB" >"$LOGDIR/mariadb-start.log" 2>&1; then
        set -a; . "$MDB/env"; set +a
        echo "private MariaDB on 127.0.0.1:$QCHAT_MYSQL_PORT (pid $QCHAT_MYSQL_PID)"
    else
        echo "FAIL  private MariaDB did not start:"; cat "$LOGDIR/mariadb-start.log"
        total_fail=$((total_fail + 1))
        rm -rf "$MDB"
        MDB=""
    fi
fi

found=0
for t in "$B"/tests/test_* "$B"/tests/it_*; do
    [ -f "$t" ] && [ -x "$t" ] || continue
    found=1
    run_one cmocka "$t"
done
# The whole integration suite once more on the MySQL driver, from the same code.
# Not in the SANITIZE=1 pass (CI time): there the MariaDB driver runs under the
# sanitizers in test_store_mysql, test_social_mysql, it_mysql and the cluster
# tests (whose nodes all use MariaDB).
if [ -n "${QCHAT_MYSQL_SOCKET:-}" ] && [ "${SANITIZE:-}" != 1 ]; then
    for t in "$B"/tests/it_*; do
        [ -f "$t" ] && [ -x "$t" ] || continue
        case $(basename "$t") in it_mysql|it_cluster|it_xsessions) continue ;; esac
        QCHAT_TEST_STORAGE=mysql run_one cmocka "$t" mysql
    done
fi
# The cluster tests once more on a private three-master Redis Cluster, the
# relays with redis.cluster = yes (sharded pub/sub, issue 16).
if [ -x "$B/tests/it_cluster" ]; then
    QCHAT_TEST_REDIS_CLUSTER=1 run_one cmocka "$B/tests/it_cluster" rediscluster
fi
# [session] mode across nodes (issue 15), on the Redis Cluster too.
if [ -x "$B/tests/it_xsessions" ]; then
    QCHAT_TEST_REDIS_CLUSTER=1 run_one cmocka "$B/tests/it_xsessions" rediscluster
fi
if [ -d tests/scripts ]; then
    for t in tests/scripts/*.sh; do
        [ -f "$t" ] && [ -x "$t" ] || continue
        found=1
        run_one script "$t"
    done
fi
if [ "$found" -eq 0 ]; then
    echo "no test binaries under $B/tests (build them: make tests)" >&2
    total_fail=1
fi

for log in $failed_logs; do
    echo
    echo "==== $log (last $LOG_LINES lines) ===="
    tail -n "$LOG_LINES" "$log"
done
[ -n "$failed_logs" ] && echo
echo "$total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]
