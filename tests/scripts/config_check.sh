#!/bin/sh
# config_check.sh - "qchatd -t" like "nginx -t": check a configuration file
# and the reachability of what it names, exit 0 or 1 with a clear message.
#
#  1. A good file (and the shipped etc/qchatd.conf, its database moved to a
#     temporary directory) exits 0 and says "test is successful".
#  2. Each broken file exits 1, says "test failed" and names FILE:LINE of
#     the offending line: unknown key, unknown section, key outside any
#     section, bad value of each type (integer, enum, log level), number
#     out of range (above and below), duplicate key, syntax error, a
#     listen address without a port or with a port above 65535.
#  3. A good file whose storage or Redis cannot be reached exits 1: MySQL
#     and Redis on a closed port, a SQLite path that is not a database.
#     A missing -c file and a bad -o option exit 1 too.  A SQLite file (or
#     its directory) that does not exist yet passes, and -t creates nothing.
#
# Uses $B/qchatd (B defaults to build).  Every run is bounded by timeout(1).
# Nothing listens: -t never starts the server.  Prints each problem and
# exits 1 if there is one, 0 when every case behaved.

top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
build=${B:-build}
case $build in
/*) ;;
*)  build=$top/$build ;;
esac
qchatd=$build/qchatd
RUN_LIMIT=20            # seconds one qchatd -t may take
CLOSED_PORT=1           # nothing listens there (privileged, unused)

if [ ! -x "$qchatd" ]; then
    echo "config_check: $qchatd is not built" >&2
    exit 1
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/config_check.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
cd "$tmp" || exit 1

failed=0
cases=0
fail() {
    echo "config_check: FAIL: $*"
    failed=1
}

# check_t WANT_RC WANT_TEXT LABEL ARGS...: run qchatd -t ARGS, expect the exit
# status and a line of its output (stdout and stderr) containing WANT_TEXT.
check_t() {
    want_rc=$1
    want_text=$2
    label=$3
    shift 3
    cases=$((cases + 1))
    timeout "$RUN_LIMIT" "$qchatd" -t "$@" >out.txt 2>&1 </dev/null
    rc=$?
    if [ "$rc" -ne "$want_rc" ]; then
        fail "$label: qchatd -t $*: expected exit $want_rc, got $rc:"
        sed 's/^/    /' out.txt
    elif ! grep -q -F -e "$want_text" out.txt; then
        fail "$label: qchatd -t $*: expected \"$want_text\" in the output, got:"
        sed 's/^/    /' out.txt
    fi
}

# bad_file NAME LINE LABEL TEXT: a file (contents TEXT, printf format) whose
# line LINE is wrong must fail, naming NAME:LINE.
bad_file() {
    # shellcheck disable=SC2059
    printf "$4" > "$1" || exit 1
    check_t 1 "$1:$2:" "$3" -c "$1"
    if [ "$rc" -eq 1 ] && ! grep -q "test failed" out.txt; then
        fail "$3: qchatd -t -c $1 exited 1 without saying the test failed:"
        sed 's/^/    /' out.txt
    fi
}

# 1. good files
cat > good.conf <<EOF
# a good file: every section, comments, blank lines
[server]
listen = 127.0.0.1:7999
workers = 2
node_id = 3
control_socket = $tmp/ctl.sock
shutdown_timeout = 5

[storage]
driver = sqlite
path = $tmp/good.db

[log]
level = debug   ; an inline comment
[security]
request_rate = 10
request_burst = 20
EOF
check_t 0 "test is successful" "good file" -c good.conf
check_t 0 "syntax is ok" "good file" -c good.conf
check_t 0 "test is successful" "shipped etc/qchatd.conf" -c "$top/etc/qchatd.conf" \
    -o "storage.path=$tmp/shipped.db" -o "server.control_socket=$tmp/shipped.sock"

# 2. broken files name FILE:LINE
bad_file unknown_key.conf 3 "unknown key" \
    '[server]\nworkers = 2\nbogus = 1\n'
bad_file unknown_section.conf 5 "unknown section (named at its first key)" \
    '[server]\nworkers = 2\n\n[nosuch]\nkey = 1\n'
bad_file no_section.conf 2 "key outside any section" \
    '# comment\nworkers = 2\n'
bad_file bad_int.conf 2 "bad integer" \
    '[server]\nworkers = two\n'
bad_file bad_int_suffix.conf 3 "integer with a suffix" \
    '[server]\nnode_id = 2\nmax_users = 1000k\n'
bad_file bad_enum.conf 3 "bad enum" \
    '[storage]\npath = x.db\ndriver = postgres\n'
bad_file bad_level.conf 2 "bad log level" \
    '[log]\nlevel = verbose\n'
bad_file too_big.conf 3 "number above its range" \
    '[server]\n\nworkers = 1000\n'
bad_file too_small.conf 2 "number below its range" \
    '[security]\nrequest_burst = 0\n'
bad_file overflow.conf 2 "number overflowing" \
    '[server]\nmax_users = 99999999999999999999\n'
bad_file negative.conf 2 "negative number" \
    '[server]\nshutdown_timeout = -5\n'
bad_file duplicate.conf 3 "duplicate key" \
    '[server]\nworkers = 1\nworkers = 2\n'
bad_file syntax.conf 2 "syntax error" \
    '[server]\nthis is not a key value line\n'
bad_file empty_value.conf 2 "empty number" \
    '[limits]\nmax_friends =\n'
bad_file listen_no_port.conf 3 "listen without a port" \
    '[server]\nworkers = 1\nlisten = 127.0.0.1\n'
bad_file listen_port_range.conf 2 "listen port out of range" \
    '[server]\nlisten = 127.0.0.1:99999\n'

# 3. unreachable storage / Redis, missing file, bad -o
# A fresh install: the state directory appears only at the first start
# (StateDirectory=), so -t passes, says so, and creates nothing (run as root
# it would otherwise leave a root-owned database the service cannot write).
check_t 0 "does not exist yet" "sqlite in a missing directory" \
    -c good.conf -o "storage.path=$tmp/no/such/dir/q.db"
[ -e "$tmp/no" ] && fail "qchatd -t created $tmp/no"
check_t 0 "created at the first start" "sqlite file not created yet" \
    -c good.conf -o "storage.path=$tmp/fresh.db"
[ -e "$tmp/fresh.db" ] && fail "qchatd -t created $tmp/fresh.db"
printf 'not a database, just text\n' > "$tmp/text.db"
check_t 1 "not a SQLite database" "storage.path is not a database" \
    -c good.conf -o "storage.path=$tmp/text.db"
check_t 1 "test failed" "mysql on a closed port" -c good.conf \
    -o storage.driver=mysql -o storage.host=127.0.0.1 -o "storage.port=$CLOSED_PORT"
check_t 1 "test failed" "redis on a closed port" -c good.conf \
    -o redis.host=127.0.0.1 -o "redis.port=$CLOSED_PORT"
check_t 1 "missing.conf" "missing -c file" -c missing.conf
check_t 1 "server.nope" "unknown -o key" -c good.conf -o server.nope=1
check_t 1 "server.workers" "out-of-range -o value" -c good.conf -o server.workers=999

if [ "$failed" -ne 0 ]; then
    exit 1
fi
echo "config_check: $cases qchatd -t cases behaved"
exit 0
