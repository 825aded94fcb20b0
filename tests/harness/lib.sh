# lib.sh - POSIX sh helpers shared by the harness scripts (tests/harness)
# and the script tests (tests/scripts): a free 127.0.0.1 port, bounded
# waits, stopping a process by PID, the temporary directory at the end.
#
# Sourced, never run:
#   . "$(dirname "$0")/lib.sh"                 (from tests/harness)
#   . "$top/tests/harness/lib.sh"              (with top the project root)
#
# Read from the caller when set (defaults in brackets):
#   PROG       name in die's messages [the script's name]
#   PORT_MIN   first port random_port draws [20000]
#   PORT_SPAN  how many ports it draws from [12000: below the ephemeral range]
#   POLL       seconds between two checks of a wait [0.1]
#   PORT_ATTEMPTS, START_WAIT, STOP_WAIT (seconds)   start_server
#   pids       start_server, stop_pids: the PIDs to stop at the end
#   tmp        start_server, finish_tmp: the temporary directory
#   KEEP       finish_tmp: 1 keeps it
#   failed     finish_script: the count of failed checks
# The caller's say() prints start_server's and finish_tmp's notes.
# Variables set here start with "lib_": sh has no local variables.

die() {
    echo "${PROG:-${0##*/}}: $*" >&2
    exit 1
}

# Absolute path of a directory (created when $2 is "new"), without quotes
# or spaces in it (it goes into generated files and configurations).
absdir() {
    if [ "${2:-}" = new ]; then
        mkdir -p "$1"
    elif [ ! -d "$1" ]; then
        die "$1: no such directory"
    fi
    lib_dir=$(cd "$1" && pwd -P)
    case $lib_dir in
        *\'* | *' '*) die "directory '$lib_dir' must not contain quotes or spaces" ;;
    esac
    echo "$lib_dir"
}

# A port from PORT_MIN .. PORT_MIN+PORT_SPAN-1 at random.
random_port() {
    lib_n=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
    echo $((${PORT_MIN:-20000} + lib_n % ${PORT_SPAN:-12000}))
}

# Nothing listens on PORT as far as ss(8) can tell (without ss: free; a
# taken port then shows when the server binds).
port_free() {
    [ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
}

# Something listens on 127.0.0.1:PORT.
accepting() {
    [ -n "$(ss -Hltn "src 127.0.0.1:$1" 2>/dev/null)" ]
}

# PID runs (a zombie waiting to be reaped does not).
alive() {
    kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# PID has exited.
gone() {
    ! alive "$1"
}

# wait_until SECONDS CMD [ARG...]: run CMD every POLL seconds until it
# succeeds (0) or SECONDS have passed (1).
wait_until() {
    lib_deadline=$(( $(date +%s) + $1 ))
    shift
    while :; do
        "$@" && return 0
        [ "$(date +%s)" -lt "$lib_deadline" ] || return 1
        sleep "${POLL:-0.1}"
    done
}

# wait_started PID SECONDS CMD [ARG...]: the same for a server starting
# as PID; 1 at once when PID dies.
wait_started() {
    lib_pid=$1
    lib_deadline=$(( $(date +%s) + $2 ))
    shift 2
    while alive "$lib_pid"; do
        "$@" && return 0
        [ "$(date +%s)" -lt "$lib_deadline" ] || return 1
        sleep "${POLL:-0.1}"
    done
    return 1
}

# wait_listen PID PORT SECONDS: 0 once PORT listens, 1 if PID died or time ran out.
wait_listen() {
    wait_started "$1" "$3" listening "$2"
}

# Something listens on PORT (any address).
listening() {
    ! port_free "$1"
}

# stop_pid PID SECONDS [TITLE]: SIGTERM, up to SECONDS for it to exit,
# SIGKILL; reaped when it is a child of this shell.  With TITLE, its
# children whose command line starts with TITLE ("" for all) and that
# outlive it (workers of a SIGKILLed master) are SIGKILLed by PID too.
# 1 when it took SIGKILL.
stop_pid() {
    lib_stop=$1
    lib_kids=""
    [ $# -ge 3 ] && lib_kids=$(cat "/proc/$lib_stop/task/$lib_stop/children" 2>/dev/null)
    lib_rc=0
    if kill -TERM "$lib_stop" 2>/dev/null && ! wait_until "$2" gone "$lib_stop"; then
        kill -KILL "$lib_stop" 2>/dev/null
        lib_rc=1
    fi
    wait "$lib_stop" 2>/dev/null
    for lib_k in $lib_kids; do
        if alive "$lib_k" &&
            { tr '\0' ' ' <"/proc/$lib_k/cmdline"; } 2>/dev/null | grep -q "^$3"; then
            kill -KILL "$lib_k" 2>/dev/null
        fi
    done
    return $lib_rc
}

# start_server NAME FUNC: run "FUNC PORT" (which execs a server) in the
# background on a free port, output appended to $tmp/NAME.log, until the
# port listens (START_WAIT seconds); PORT_ATTEMPTS fresh ports at most.
# Sets server_pid and server_port and adds the PID to $pids; 1 if it did
# not start (what it left is stopped, STOP_WAIT seconds; the end of its log
# shown).
start_server() {
    lib_attempt=0
    while [ "$lib_attempt" -lt "${PORT_ATTEMPTS:-5}" ]; do
        lib_attempt=$((lib_attempt + 1))
        lib_port=$(random_port)
        port_free "$lib_port" || continue
        "$2" "$lib_port" >>"$tmp/$1.log" 2>&1 &
        server_pid=$!
        if wait_listen "$server_pid" "$lib_port" "$START_WAIT"; then
            server_port=$lib_port
            pids="$pids $server_pid"
            return 0
        fi
        stop_pid "$server_pid" "$STOP_WAIT" "" || :
    done
    say "could not start $1 (log: $tmp/$1.log):"
    tail -n 20 "$tmp/$1.log" 2>/dev/null | sed 's/^/    /'
    return 1
}

# stop_pids SECONDS [TITLE]: stop_pid every PID in $pids; pids emptied.
stop_pids() {
    for lib_p in $pids; do
        stop_pid "$lib_p" "$@" || :
    done
    pids=""
}

# relay_connected SOCKET: the qchatd with that control socket says its
# relay is connected to Redis ($QCHATCTL status --json).
relay_connected() {
    "$QCHATCTL" -s "$1" --json status 2>/dev/null |
        grep -q '"relay": *{[^}]*"state": *"connected"'
}

# finish_script: the EXIT trap of a script test: its servers stopped by
# PID, $tmp removed unless a check failed ($failed not 0) or KEEP=1.
finish_script() {
    stop_pids "$STOP_WAIT"
    [ "${failed:-0}" -eq 0 ] || KEEP=1
    finish_tmp
}

# finish_tmp: remove $tmp, or with KEEP=1 leave it and say so.
finish_tmp() {
    [ -n "${tmp:-}" ] || return 0
    if [ "${KEEP:-0}" = 1 ]; then
        say "kept $tmp"
    else
        rm -rf "$tmp"
    fi
}
