#!/bin/sh
# systemd_boot.sh - qchatd's units under a real systemd 252 as PID 1.
#
# A minimal Debian 12 root is built once with debootstrap from the mirror
# this machine's apt uses, with qchatd's runtime libraries, and cached in
# $B/nspawn-root (later runs reuse it).  Each run boots it with
# systemd-nspawn -b --private-network --volatile=overlay (changes vanish
# with the container), installs "make install PREFIX=/usr" from a staging
# directory, runs systemd-sysusers, and checks through nsenter:
#   - qchatd -t on the fresh install passes and creates no database;
#   - start (Type=notify: active only once READY=1), STATUS= with the store,
#     exact process titles, a register and login through the installed qchat;
#   - reload: a good file reloads, a broken one makes "systemctl reload" fail
#     and the service keeps running; journalctl -p err says why;
#   - kill -9 of the master: restarted; the watchdog (WatchdogSec=4s by a
#     drop-in): a SIGSTOPped worker gets the service restarted;
#   - a broken file: exit 78, not restarted (RestartPreventExitStatus), the
#     reason at priority err; a database owned by root 0644: refused (78);
#   - a start that keeps failing (exit 1) stops at the start limit;
#   - the template: qchatd@node1 starts (stopping qchatd.service: Conflicts=),
#     reloads, and starting qchatd.service stops it again;
#   - stop: nothing left running.
# Prints "SKIP: ..." and exits 77 where this cannot run (not root, no
# systemd-nspawn/debootstrap/nsenter, no mirror, the container does not boot).
# The container is stopped by PID at the end.  About a minute after the
# first run (debootstrap: a few minutes, once).

top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
PROG=systemd_boot
. "$top/tests/harness/lib.sh"
build=${B:-build}
case $build in /*) ;; *) build=$top/$build ;; esac
ROOT=$build/nspawn-root
SKIP=77
BOOT_WAIT=60        # seconds for the container to reach multi-user
UNIT_WAIT=30        # seconds for a unit to change state
WATCHDOG_SEC=4
PASSWORD=boot-secret
RUNTIME_PKGS=libjson-c5,libhiredis0.14,libmariadb3,libsqlite3-0,libbsd0,libinih1,libsystemd0,libedit2,libcrypt1,libwslay1

say() { echo "$PROG: $*"; }
skip() { echo "SKIP: $PROG: $*"; exit $SKIP; }

[ "${SANITIZE:-}" != 1 ] || skip "not in the SANITIZE=1 pass (the units are tested with the plain build)"
[ "$(id -u)" -eq 0 ] || skip "needs root (systemd-nspawn)"
for tool in systemd-nspawn debootstrap nsenter; do
    command -v "$tool" >/dev/null 2>&1 ||
        skip "$tool not found (Debian packages systemd-container, debootstrap, util-linux)"
done
for prog in qchatd qchat qchatctl; do
    [ -x "$build/$prog" ] || die "$build/$prog is not built (make first)"
done

# The mirror apt uses: deb822 URIs: or one-line "deb URL bookworm".
mirror() {
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] && sed -n 's/^URIs: *\([^ ]*\).*/\1/p' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -e "$f" ] && sed -n 's/^deb  *\(\[[^]]*\] *\)\{0,1\}\([^ ]*\) .*/\2/p' "$f"
    done
}
# A root built for another package list (qchatd links libwslay since the
# websocket transport) is built again.
PKGS_STAMP=$ROOT/etc/qchat-runtime-pkgs
if [ -x "$ROOT/lib/systemd/systemd" ] && [ "$(cat "$PKGS_STAMP" 2>/dev/null)" != "$RUNTIME_PKGS" ]; then
    say "the root at $ROOT lacks some of $RUNTIME_PKGS: building it again"
    rm -rf "$ROOT"
fi
if [ ! -x "$ROOT/lib/systemd/systemd" ]; then
    url=$(mirror | grep -v security | head -n 1)
    [ -n "$url" ] || skip "no Debian mirror in /etc/apt/sources.list*"
    say "building the Debian 12 root once from $url (debootstrap, a few minutes)"
    rm -rf "$ROOT.tmp"
    if ! debootstrap --variant=minbase --include="systemd,systemd-sysv,dbus,$RUNTIME_PKGS" \
        bookworm "$ROOT.tmp" "$url" >"$build/debootstrap.log" 2>&1; then
        tail -n 5 "$build/debootstrap.log"
        rm -rf "$ROOT.tmp"
        skip "debootstrap from $url failed (log: $build/debootstrap.log)"
    fi
    echo "$RUNTIME_PKGS" >"$ROOT.tmp/etc/qchat-runtime-pkgs" || exit 1
    mv "$ROOT.tmp" "$ROOT" || exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/qchat-nspawn.XXXXXX") || exit 1
machine=qchat-boot-$$
nspawn_pid=""
failed=0
checks=0
stop_container() {
    [ -n "$nspawn_pid" ] || return 0
    kill -TERM "$nspawn_pid" 2>/dev/null    # nspawn shuts the container down
    wait_until 20 gone "$nspawn_pid" || kill -KILL "$nspawn_pid" 2>/dev/null
    wait "$nspawn_pid" 2>/dev/null
    nspawn_pid=""
}
finish() {
    stop_container
    [ "$failed" -eq 0 ] || KEEP=1
    finish_tmp
}
trap 'finish' EXIT
trap 'exit 1' HUP INT TERM
fail() { say "FAIL: $*"; failed=$((failed + 1)); }
ok() { checks=$((checks + 1)); }

# Stage the installation (the container's root is an overlay: nothing stays).
make -C "$top" --no-print-directory B="${B:-build}" install DESTDIR="$tmp/stage" PREFIX=/usr \
    SYSCONFDIR=/etc >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; die "make install"; }

systemd-nspawn --register=no --keep-unit -D "$ROOT" -b --private-network --volatile=overlay \
    --bind-ro="$tmp/stage:/stage" -M "$machine" >"$tmp/console.log" 2>&1 </dev/null &
nspawn_pid=$!
leader=""
container_pid1() {
    leader=$(cat "/proc/$nspawn_pid/task/$nspawn_pid/children" 2>/dev/null | awk '{print $1}')
    [ -n "$leader" ] && [ "$(cat "/proc/$leader/comm" 2>/dev/null)" = systemd ]
}
in_ct() { nsenter -t "$leader" -m -u -i -n -p -C -r -w env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
booted() {
    st=$(in_ct systemctl is-system-running 2>/dev/null)
    [ "$st" = running ] || [ "$st" = degraded ]
}
if ! wait_until 10 container_pid1 || ! wait_until "$BOOT_WAIT" booted; then
    tail -n 15 "$tmp/console.log"
    skip "the container did not boot here (systemd-nspawn -b)"
fi
say "container booted (leader $leader): $(in_ct systemctl --version | head -n 1)"

# unit_is UNIT STATE: ActiveState of UNIT is STATE.
unit_is() { [ "$(in_ct systemctl show -p ActiveState --value "$1")" = "$2" ]; }
prop() { in_ct systemctl show -p "$2" --value "$1"; }
main_pid() { prop "$1" MainPID; }
children_of() { in_ct cat "/proc/$1/task/$1/children" 2>/dev/null; }
title_of() { in_ct cat "/proc/$1/cmdline" | tr '\0' '|'; }
conf=/etc/qchat/qchatd.conf
in_ct sh -c "cp -a /stage/. / && cp $conf $conf.good" || die "copying the installation in"
in_ct systemd-sysusers >/dev/null 2>&1
in_ct systemctl daemon-reload
in_ct getent passwd qchat >/dev/null && ok || fail "systemd-sysusers made no qchat user"

# qchatd -t on the fresh install: passes, creates nothing.
out=$(in_ct qchatd -t 2>&1) && ok || fail "qchatd -t on a fresh install: $out"
in_ct test -e /var/lib/qchat/qchat.db && fail "qchatd -t created /var/lib/qchat/qchat.db"

# start
in_ct systemctl start qchatd || fail "systemctl start qchatd"
unit_is qchatd.service active && ok || fail "qchatd is not active: $(in_ct systemctl status qchatd)"
main=$(main_pid qchatd)
status=$(prop qchatd StatusText)
case $status in *"workers, store sqlite ok"*) ok ;; *) fail "STATUS=: '$status'" ;; esac
t=$(title_of "$main")
[ "$t" = "qchatd: master" ] || [ "$t" = "qchatd: master|" ] && ok || fail "master title '$t'"
for k in $(children_of "$main"); do
    t=$(title_of "$k")
    case $t in "qchatd: worker "[0-9]|"qchatd: worker "[0-9]"|") ok ;; *) fail "worker title '$t'" ;; esac
done
owner=$(in_ct stat -c %U:%G /var/lib/qchat/qchat.db)
[ "$owner" = qchat:qchat ] && ok || fail "the database is owned by $owner"

# a client through the installed qchat
reg=$(printf 'register:boot:%s\nquit\n' "$PASSWORD" | in_ct timeout 20 qchat 127.0.0.1 6000 2>&1)
id=$(printf '%s\n' "$reg" | sed -n 's/^registered id \([0-9]*\)$/\1/p')
[ -n "$id" ] || fail "register through qchat: $reg"
login=$(printf 'login:%s:%s\nquit\n' "$id" "$PASSWORD" | in_ct timeout 20 qchat 127.0.0.1 6000 2>&1)
case $login in *"logged in: id $id"*) ok ;; *) fail "login through qchat: $login" ;; esac

# reload: good, then broken
in_ct sed -i 's/^level = .*/level = warning/' $conf
in_ct systemctl reload qchatd && ok || fail "systemctl reload with a good file failed"
in_ct sh -c "printf '[server]\nbogus = 1\n' >> $conf"
if in_ct systemctl reload qchatd 2>/dev/null; then
    fail "systemctl reload with an unknown key succeeded"
else
    ok
fi
unit_is qchatd.service active && ok || fail "a failed reload stopped the service"
[ "$(main_pid qchatd)" = "$main" ] || fail "a failed reload replaced the master"
# journald stores a line a moment after qchatd writes it: poll, do not read once.
journal_err_says() { in_ct journalctl -p err -u qchatd --no-pager | grep -q "$1"; }
wait_until "$UNIT_WAIT" journal_err_says "reload failed" && ok ||
    fail "journalctl -p err does not show the failed reload"
in_ct cp $conf.good $conf

# kill -9 of the master: restarted
in_ct systemctl kill -s KILL --kill-who=main qchatd
restarted() { unit_is qchatd.service active && [ "$(main_pid qchatd)" != "$main" ] &&
    [ "$(main_pid qchatd)" != 0 ]; }
wait_until "$UNIT_WAIT" restarted && ok || fail "kill -9: not restarted ($(prop qchatd ActiveState))"

# the watchdog: a stopped worker gets the service restarted
in_ct mkdir -p /run/systemd/system/qchatd.service.d
in_ct sh -c "printf '[Service]\nWatchdogSec=${WATCHDOG_SEC}s\n' > /run/systemd/system/qchatd.service.d/wd.conf"
in_ct systemctl daemon-reload
in_ct systemctl restart qchatd || fail "restart with WatchdogSec=${WATCHDOG_SEC}s"
main=$(main_pid qchatd)
worker=$(children_of "$main" | awk '{print $1}')
[ -n "$worker" ] && in_ct sh -c "kill -STOP $worker"
wait_until "$UNIT_WAIT" restarted && ok || fail "SIGSTOPped worker: the watchdog did not restart qchatd"
journal_says() { in_ct journalctl -u qchatd --no-pager | grep -qi "$1"; }
wait_until "$UNIT_WAIT" journal_says "watchdog timeout" && ok || fail "no watchdog timeout in the journal"
in_ct rm -rf /run/systemd/system/qchatd.service.d
in_ct systemctl daemon-reload

# a broken file: exit 78, not restarted, the reason at priority err
in_ct systemctl stop qchatd
in_ct sh -c "printf '[server]\nbogus = 1\n' >> $conf"
in_ct systemctl start qchatd 2>/dev/null && fail "start with a broken file succeeded"
sleep 3    # past RestartSec: a restart would show
[ "$(prop qchatd ExecMainStatus)" = 78 ] && ok || fail "broken file: exit $(prop qchatd ExecMainStatus), not 78"
unit_is qchatd.service failed && ok || fail "broken file: $(prop qchatd ActiveState), not failed (restarting?)"
wait_until "$UNIT_WAIT" journal_err_says "unknown key 'bogus'" && ok ||
    fail "journalctl -p err does not show the unknown key"
in_ct cp $conf.good $conf
in_ct systemctl reset-failed qchatd

# a database the service cannot write: refused with 78
in_ct sh -c 'chown root:root /var/lib/qchat/qchat.db && chmod 0644 /var/lib/qchat/qchat.db'
in_ct systemctl start qchatd 2>/dev/null && fail "start with a root-owned database succeeded"
[ "$(prop qchatd ExecMainStatus)" = 78 ] && ok || fail "root-owned db: exit $(prop qchatd ExecMainStatus)"
wait_until "$UNIT_WAIT" journal_err_says "not writable" && ok ||
    fail "journalctl -p err does not say the database is not writable"
in_ct sh -c 'chown qchat:qchat /var/lib/qchat/qchat.db'
in_ct systemctl reset-failed qchatd

# a start that keeps failing (listen address not local: exit 1) hits the start limit
in_ct sed -i 's/^listen = 127.0.0.1:6000/listen = 192.0.2.1:6000/' $conf
in_ct systemctl start qchatd 2>/dev/null
limited() { unit_is qchatd.service failed; }
if wait_until 40 limited; then
    n=$(prop qchatd NRestarts)
    sleep 3   # past RestartSec: no further restart
    [ "$(prop qchatd NRestarts)" = "$n" ] && unit_is qchatd.service failed && ok ||
        fail "the start limit did not stop the restarts (NRestarts $n, then $(prop qchatd NRestarts))"
    wait_until "$UNIT_WAIT" journal_says "Start request repeated too quickly" && ok ||
        fail "the journal does not say the start limit was hit"
else
    fail "no start limit: $(prop qchatd ActiveState) $(prop qchatd Result) NRestarts=$(prop qchatd NRestarts)"
fi
in_ct cp $conf.good $conf
in_ct systemctl reset-failed qchatd

# the template unit, and Conflicts= both ways
in_ct systemctl start qchatd || fail "start qchatd again"
in_ct sh -c "cat > /etc/qchat/node1.conf" <<'CONF'
[server]
listen = 127.0.0.1:6001
node_id = 2
control_socket = /run/qchat/node1/qchatd.sock
pidfile = /run/qchat/node1/qchatd.pid
[storage]
path = /var/lib/qchat/node1/qchat.db
CONF
in_ct systemctl start qchatd@node1 || fail "systemctl start qchatd@node1: $(in_ct systemctl status qchatd@node1)"
unit_is qchatd@node1.service active && ok || fail "qchatd@node1 is not active"
unit_is qchatd.service inactive && ok || fail "qchatd.service still $(prop qchatd ActiveState) beside qchatd@node1"
in_ct systemctl reload qchatd@node1 && ok || fail "systemctl reload qchatd@node1"
in_ct systemctl start qchatd || fail "start qchatd after the node"
unit_is qchatd@node1.service inactive && ok || fail "qchatd@node1 still $(prop qchatd@node1 ActiveState) beside qchatd.service"
in_ct test -S /run/qchat/qchatd.sock && ok || fail "qchatd.service has no control socket"

score=$(in_ct systemd-analyze security qchatd.service 2>/dev/null | sed -n 's/.*Overall exposure level for qchatd.service: *\([0-9.]*\).*/\1/p')
say "systemd-analyze security qchatd.service: ${score:-unknown}"

# stop: nothing left
in_ct systemctl stop qchatd
unit_is qchatd.service inactive && ok || fail "stop: $(prop qchatd ActiveState)"
left=$(in_ct sh -c 'for p in /proc/[0-9]*; do c=$(tr "\0" " " < $p/cmdline 2>/dev/null); case $c in qchatd*) echo "$c";; esac; done')
[ -z "$left" ] && ok || fail "still running after stop: $left"

if [ "$failed" -ne 0 ]; then
    say "$failed check(s) failed, $checks passed; container console: $tmp/console.log"
    exit 1
fi
say "$checks checks passed under systemd in a booted Debian 12 container"
exit 0
