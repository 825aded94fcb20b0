#!/bin/sh
# pingpong_repeat.sh BUILD TAG - one qchatd of BUILD with the log on
# (SQLite), 2,000 users registered, then RUNS (default 4) ping-pongs of
# 1,000 pairs for 10 s in a row against the same server: what a long
# sustained load does (the storage backlog, WAL checkpoints) that one
# 10 s run does not show.  Prints each run's rate, p50, p999, max and
# errors, then the server's warnings counted.  The server runs in
# /tmp/qchat-repeat.TAG (kept), and is stopped by its PID.
#   make -j2 all && sh tests/harness/pingpong_repeat.sh build now
BIN=$1 TAG=$2 RUNS=${RUNS:-4}
[ -n "$BIN" ] && [ -n "$TAG" ] || { echo "usage: $0 BUILD TAG" >&2; exit 2; }
BIN=$(cd "$BIN" && pwd) || exit 1
D=/tmp/qchat-repeat.$TAG
rm -rf "$D" && mkdir -p "$D" || exit 1
PORT=$((30000 + $$ % 20000))
"$BIN/qchatd" -f -o server.listen=127.0.0.1:$PORT -o storage.path="$D/q.db" \
    -o server.control_socket="$D/ctl.sock" -o security.request_rate=0 -o log.level=warning \
    -o security.password_cost=1 >"$D/qchatd.log" 2>&1 &
QPID=$!
trap 'kill $QPID 2>/dev/null' EXIT
sleep 1
"$BIN/qchat-bench" reg --port $PORT --users 2000 --out "$D/ids" --prefix r_ -c 32 --timeout 120 \
    >"$D/reg.out" 2>&1 || { echo "registration failed: $D/reg.out" >&2; exit 1; }
i=1
while [ $i -le "$RUNS" ]; do
    "$BIN/qchat-bench" pingpong --port $PORT --ids "$D/ids" --pairs 1000 -d 10 \
        --sources 127.0.1.1,127.0.1.2,127.0.1.3,127.0.1.4 2>&1 |
        grep -o "rate=[0-9]*/s.*max=[0-9.]*ms errors=[0-9]*" | sed 's/p90.*p999=/p999=/' |
        sed "s/^/$TAG $i /"
    i=$((i + 1))
done
kill $QPID
wait $QPID 2>/dev/null
trap - EXIT
grep -v "master warning" "$D/qchatd.log" | cut -c1-160 | sed 's/conv [0-9]*/conv N/; s/^[^ ]* //' |
    sort | uniq -c | sort -rn | head -5
