#!/bin/sh
# mariadb.sh - a private MariaDB server for the tests, never the system one.
#
#   mariadb.sh start DIR          install a fresh server into DIR, start it on a
#                                 free 127.0.0.1 port and DIR/mysql.sock, create
#                                 the user qchat (password in a 0600 file, all
#                                 privileges on the databases named qchat_*),
#                                 write DIR/env and print it
#   mariadb.sh stop DIR           stop it by its PID: SIGCONT (a test may have
#                                 stopped it), SIGTERM, bounded wait, SIGKILL
#   mariadb.sh createdb DIR NAME  create database NAME (must match qchat_[A-Za-z0-9_]*)
#   mariadb.sh dropdb DIR NAME    drop it
#   mariadb.sh sql DIR [DB]       run SQL from stdin as root (for tests and debugging)
#
# DIR/env holds shell assignments (use: set -a; . DIR/env; set +a):
#   QCHAT_MYSQL_DIR QCHAT_MYSQL_SOCKET QCHAT_MYSQL_HOST QCHAT_MYSQL_PORT
#   QCHAT_MYSQL_USER QCHAT_MYSQL_PASSWORD_FILE QCHAT_MYSQL_PID
#
# The server runs with --no-defaults (no /etc/mysql), binds only 127.0.0.1
# on a port other than 3306, and keeps its data, socket, pid file and log
# in DIR.  It is tuned for tests: no fsync per commit, no doublewrite.  As
# root it runs as root (--user=root): DIR then needs no chown.
set -eu
. "$(dirname "$0")/lib.sh"

PROG=mariadb.sh
PORT_MIN=20000
PORT_SPAN=40000           # ports tried: PORT_MIN .. PORT_MIN+PORT_SPAN-1
PORT_ATTEMPTS=5           # fresh ports tried when one turns out taken
START_WAIT=60             # seconds for the server to answer
STOP_WAIT=30              # seconds for a clean stop before SIGKILL
POLL=0.1                  # seconds between checks
DB_USER=qchat
DB_PATTERN='qchat\_%'     # grant pattern: databases named qchat_*

usage() {
    echo "usage: mariadb.sh start DIR | stop DIR | createdb DIR NAME | dropdb DIR NAME | sql DIR [DB]" >&2
    exit 2
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 not found (apt-get install mariadb-server mariadb-client)"
}

# Seconds since the epoch with fractions, for the start-up time.
now() {
    date +%s.%N
}

client() {  # client DIR [args...]: the mariadb client as root over the socket
    cdir=$1
    shift
    mariadb --no-defaults --protocol=socket --socket="$cdir/mysql.sock" -u root "$@"
}

# PID of the server in DIR if it is alive and really ours (not a reused PID).
server_pid() {
    [ -f "$1/mariadbd.pid.saved" ] || return 1
    p=$(cat "$1/mariadbd.pid.saved")
    [ -n "$p" ] && [ -r "/proc/$p/cmdline" ] || return 1
    tr '\0' ' ' < "/proc/$p/cmdline" | grep -q -- "--datadir=$1/data" || return 1
    echo "$p"
}

# The server in DIR answers a query.
answering() {
    [ -S "$1/mysql.sock" ] && client "$1" -e 'SELECT 1' >/dev/null 2>&1
}

install_datadir() {
    idir=$1
    set -- --no-defaults --datadir="$idir/data" --auth-root-authentication-method=normal \
        --skip-test-db --skip-name-resolve
    [ "$(id -u)" -eq 0 ] && set -- "$@" --user=root
    mariadb-install-db "$@" >"$idir/install.log" 2>&1 || {
        tail -n 20 "$idir/install.log" >&2
        die "mariadb-install-db failed (log: $idir/install.log)"
    }
}

# Start mariadbd on port $2; prints its PID, or fails if it did not come up.
launch() {
    ldir=$1
    lport=$2
    set -- --no-defaults --datadir="$ldir/data" --socket="$ldir/mysql.sock" \
        --port="$lport" --bind-address=127.0.0.1 --pid-file="$ldir/mariadbd.pid" \
        --log-error="$ldir/mariadbd.err" --skip-name-resolve --skip-log-bin \
        --innodb-flush-log-at-trx-commit=2 --skip-innodb-doublewrite \
        --innodb-buffer-pool-size=64M --max-connections=500 \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci
    [ "$(id -u)" -eq 0 ] && set -- "$@" --user=root
    : >"$ldir/mariadbd.err"
    mariadbd "$@" </dev/null >>"$ldir/mariadbd.out" 2>&1 &
    lpid=$!
    echo "$lpid" >"$ldir/mariadbd.pid.saved"
    if wait_started "$lpid" "$START_WAIT" answering "$ldir"; then
        echo "$lpid"
        return 0
    fi
    kill -9 "$lpid" 2>/dev/null || true
    wait "$lpid" 2>/dev/null || true
    rm -f "$ldir/mariadbd.pid.saved"
    return 1
}

create_user() {
    udir=$1
    pwfile=$udir/qchat.password
    (umask 077 && head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$pwfile")
    chmod 600 "$pwfile"
    pw=$(cat "$pwfile")
    [ ${#pw} -ge 16 ] || die "could not make a password"
    # Over stdin: the password never appears on a command line.
    client "$udir" <<EOF
CREATE USER '$DB_USER'@'localhost' IDENTIFIED BY '$pw';
CREATE USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$pw';
GRANT ALL PRIVILEGES ON \`$DB_PATTERN\`.* TO '$DB_USER'@'localhost';
GRANT ALL PRIVILEGES ON \`$DB_PATTERN\`.* TO '$DB_USER'@'127.0.0.1';
EOF
}

write_env() {
    edir=$1
    cat >"$edir/env" <<EOF
export QCHAT_MYSQL_DIR='$edir'
export QCHAT_MYSQL_SOCKET='$edir/mysql.sock'
export QCHAT_MYSQL_HOST='127.0.0.1'
export QCHAT_MYSQL_PORT='$2'
export QCHAT_MYSQL_USER='$DB_USER'
export QCHAT_MYSQL_PASSWORD_FILE='$edir/qchat.password'
export QCHAT_MYSQL_PID='$3'
EOF
}

cmd_start() {
    need mariadbd
    need mariadb-install-db
    need mariadb
    dir=$(absdir "$1" new)
    if p=$(server_pid "$dir"); then
        die "a server from $dir is already running (pid $p)"
    fi
    [ -e "$dir/data" ] && die "$dir/data exists: start needs a fresh directory"
    t0=$(now)
    install_datadir "$dir"
    pid=""
    attempt=0
    while [ $attempt -lt $PORT_ATTEMPTS ] && [ -z "$pid" ]; do
        attempt=$((attempt + 1))
        port=$(random_port)
        [ "$port" -ne 3306 ] && port_free "$port" || continue
        pid=$(launch "$dir" "$port") || pid=""
        if [ -z "$pid" ] && ! grep -q 'Address already in use' "$dir/mariadbd.err"; then
            tail -n 20 "$dir/mariadbd.err" >&2
            die "mariadbd did not answer within ${START_WAIT}s (log: $dir/mariadbd.err)"
        fi
    done
    [ -n "$pid" ] || die "no free port after $PORT_ATTEMPTS attempts"
    create_user "$dir" || { cmd_stop "$dir"; die "creating user $DB_USER failed"; }
    write_env "$dir" "$port" "$pid"
    cat "$dir/env"
    echo "mariadb.sh: started pid $pid on 127.0.0.1:$port in" \
        "$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')s" >&2
}

cmd_stop() {
    if [ ! -d "$1" ]; then
        echo "mariadb.sh: no server running from $1" >&2
        return 0
    fi
    dir=$(absdir "$1")
    if ! pid=$(server_pid "$dir"); then
        echo "mariadb.sh: no server running from $dir" >&2
        return 0
    fi
    kill -CONT "$pid" 2>/dev/null || true
    stop_pid "$pid" "$STOP_WAIT" ||
        echo "mariadb.sh: pid $pid did not stop within ${STOP_WAIT}s: SIGKILL" >&2
    rm -f "$dir/mariadbd.pid.saved"
}

check_dbname() {
    printf '%s' "$1" | grep -Eq '^qchat_[A-Za-z0-9_]{1,58}$' \
        || die "database name '$1' must match qchat_[A-Za-z0-9_]* (at most 64 characters)"
}

cmd_createdb() {
    dir=$(absdir "$1")
    check_dbname "$2"
    server_pid "$dir" >/dev/null || die "no server running from $dir"
    client "$dir" -e "CREATE DATABASE IF NOT EXISTS \`$2\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
}

cmd_dropdb() {
    dir=$(absdir "$1")
    check_dbname "$2"
    server_pid "$dir" >/dev/null || die "no server running from $dir"
    client "$dir" -e "DROP DATABASE IF EXISTS \`$2\`"
}

cmd_sql() {
    dir=$(absdir "$1")
    server_pid "$dir" >/dev/null || die "no server running from $dir"
    if [ $# -ge 2 ]; then
        client "$dir" --default-character-set=utf8mb4 "$2"
    else
        client "$dir" --default-character-set=utf8mb4
    fi
}

[ $# -ge 2 ] || usage
cmd=$1
shift
case $cmd in
    start)    [ $# -eq 1 ] || usage; cmd_start "$1" ;;
    stop)     [ $# -eq 1 ] || usage; cmd_stop "$1" ;;
    createdb) [ $# -eq 2 ] || usage; cmd_createdb "$1" "$2" ;;
    dropdb)   [ $# -eq 2 ] || usage; cmd_dropdb "$1" "$2" ;;
    sql)      [ $# -ge 1 ] && [ $# -le 2 ] || usage; cmd_sql "$@" ;;
    *)        usage ;;
esac
