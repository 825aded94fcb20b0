#!/bin/sh
# lint_systemd.sh - check the systemd units and the sysusers file.
#
#  1. Copy systemd/qchatd.service and systemd/qchatd@.service into a
#     temporary directory the way "make install" would, with @SYSCONFDIR@ =
#     /etc and @SBINDIR@ = a directory whose qchatd is the built server
#     ($B/qchatd, B defaulting to build) or /bin/true when it is not built:
#     verify checks that ExecStart names an executable.  The template is
#     checked as the instance qchatd@node1.service.
#  2. "systemd-analyze verify" both.  The man: pages of Documentation= are
#     looked up in this tree's man/ (through MANPATH), so a reference to a
#     page we do not ship is caught too.
#  3. systemd-sysusers systemd/qchat.sysusers into an empty temporary root:
#     the line must parse and create the qchat user and group.
#
# verify also loads the units ours name (network.target, multi-user.target,
# mariadb.service...) from the host, and on some hosts prints warnings about
# the host's own unit files.  Those are not ours and not ours to fix, so only
# lines naming our unit files count; the rest is shown as information.
# Prints every complaint and exits 1 if there is one, 0 when clean.

top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
build=${B:-build}
case $build in
/*) ;;
*)  build=$top/$build ;;
esac

for tool in systemd-analyze systemd-sysusers; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "lint_systemd: $tool not found (Debian package: systemd)" >&2
        exit 1
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lint_systemd.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

failed=0

# 1. the units as installed, pointing at a real executable
mkdir "$tmp/sbin" "$tmp/units" || exit 1
if [ -x "$build/qchatd" ]; then
    server=$build/qchatd
else
    server=/bin/true
fi
ln -s "$server" "$tmp/sbin/qchatd" || exit 1
# ExecReload runs qchatctl from the same directory.
if [ -x "$build/qchatctl" ]; then ctl=$build/qchatctl; else ctl=/bin/true; fi
ln -s "$ctl" "$tmp/sbin/qchatctl" || exit 1
substitute() {
    sed -e "s|@SBINDIR@|$tmp/sbin|g" -e "s|@SYSCONFDIR@|/etc|g" "$1" > "$2"
}
substitute "$top/systemd/qchatd.service" "$tmp/units/qchatd.service" || exit 1
substitute "$top/systemd/qchatd@.service" "$tmp/units/qchatd@node1.service" || exit 1
if grep -n '@[A-Z_]*@' "$tmp/units/qchatd.service" "$tmp/units/qchatd@node1.service"; then
    echo "lint_systemd: FAIL: placeholders left that make install does not fill in"
    failed=1
fi

# Our pages, where man(1) finds them; without man(1), skip that check.
manopt=--man=no
if command -v man >/dev/null 2>&1; then
    for page in "$top"/man/*.[0-9]; do
        [ -e "$page" ] || continue
        section=${page##*.}
        mkdir -p "$tmp/man/man$section" && ln -s "$page" "$tmp/man/man$section/" || exit 1
    done
    manopt=--man=yes
fi

# 2. systemd-analyze verify
out=$(cd "$tmp/units" && MANPATH="$tmp/man" \
      systemd-analyze verify "$manopt" ./qchatd.service ./qchatd@node1.service 2>&1)
rc=$?
ours=$(printf '%s\n' "$out" | grep -e 'qchatd\.service' -e 'qchatd@node1\.service')
others=$(printf '%s\n' "$out" | grep -v -e 'qchatd\.service' -e 'qchatd@node1\.service' | grep .)
if [ -n "$ours" ]; then
    echo "lint_systemd: FAIL: systemd-analyze verify (ExecStart -> $server):"
    printf '%s\n' "$ours"
    failed=1
fi
if [ -n "$others" ]; then
    echo "lint_systemd: note: ignored, not about our units (exit $rc):"
    printf '%s\n' "$others" | sed 's/^/    /'
fi

# 3. sysusers
mkdir -p "$tmp/root/etc" || exit 1
if ! out=$(systemd-sysusers --root="$tmp/root" "$top/systemd/qchat.sysusers" 2>&1); then
    echo "lint_systemd: FAIL: systemd-sysusers systemd/qchat.sysusers:"
    printf '%s\n' "$out"
    failed=1
elif ! grep -q '^qchat:[^:]*:[0-9]*:[0-9]*:[^:]*:/var/lib/qchat:' "$tmp/root/etc/passwd" ||
     ! grep -q '^qchat:' "$tmp/root/etc/group"; then
    echo "lint_systemd: FAIL: systemd/qchat.sysusers did not create user and group qchat"
    cat "$tmp/root/etc/passwd" "$tmp/root/etc/group"
    failed=1
fi

if [ "$failed" -ne 0 ]; then
    exit 1
fi
echo "lint_systemd: qchatd.service, qchatd@.service, qchat.sysusers clean (ExecStart -> $server)"
exit 0
