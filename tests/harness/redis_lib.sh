# redis_lib.sh - what redis.sh and redis_cluster.sh share: finding our own
# redis-server by the PID and working directory it was started with, and
# starting one in the foreground of a background job.
#
# Sourced after lib.sh, never run:
#   . "$(dirname "$0")/redis_lib.sh"
# Reads START_WAIT (seconds) from the caller.

need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 not found (apt-get install redis-server)"
}

# PID of the server started from directory $1 if it is alive and really ours.
server_pid() {
    [ -f "$1/redis.pid.saved" ] || return 1
    p=$(cat "$1/redis.pid.saved")
    [ -n "$p" ] && [ -r "/proc/$p/cmdline" ] || return 1
    [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ] || return 1
    tr '\0' ' ' < "/proc/$p/cmdline" | grep -q "redis-server" || return 1
    [ "$(readlink "/proc/$p/cwd" 2>/dev/null)" = "$1" ] || return 1
    echo "$p"
}

# The server from directory $1 is gone.
stopped() {
    ! server_pid "$1" >/dev/null
}

answering() {
    [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]
}

# launch DIR PORT [OPTION...]: start redis-server on 127.0.0.1:PORT, no
# persistence, its dir, pid file and log in DIR, with the extra options;
# prints its PID, or fails if it did not answer PING within START_WAIT.
launch() {
    ldir=$1
    lport=$2
    shift 2
    : >"$ldir/redis.log"
    # cd: the server's cwd marks it as ours (server_pid).
    (cd "$ldir" && exec redis-server --bind 127.0.0.1 --port "$lport" --save '' \
        --appendonly no --dir "$ldir" --pidfile "$ldir/redis.pid" \
        --logfile "$ldir/redis.log" --daemonize no --protected-mode yes "$@" \
        </dev/null >>"$ldir/redis.out" 2>&1) &
    lpid=$!
    echo "$lpid" >"$ldir/redis.pid.saved"
    if wait_started "$lpid" "$START_WAIT" answering "$lport"; then
        echo "$lpid"
        return 0
    fi
    kill -9 "$lpid" 2>/dev/null || true
    wait "$lpid" 2>/dev/null || true
    rm -f "$ldir/redis.pid.saved"
    return 1
}
