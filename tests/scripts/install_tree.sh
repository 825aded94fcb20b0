#!/bin/sh
# install_tree.sh - "make install" and "make uninstall" into a scratch DESTDIR.
#
#  1. make install DESTDIR=$tmp PREFIX=/usr SYSCONFDIR=/etc lays out the
#     tree a Debian admin expects: the four programs (sbin/qchatd,
#     sbin/qchatctl, bin/qchat, bin/qchat-bench, executable), the six man
#     pages in their sections, etc/qchat/qchatd.conf (identical to
#     etc/qchatd.conf), the sql schemas, the nginx example, both systemd
#     units with @SBINDIR@ / @SYSCONFDIR@ filled in, and the sysusers file.
#  2. A second install keeps a modified qchatd.conf as the admin left it.
#  3. make uninstall DESTDIR=$tmp removes everything but the config.
#
# Never touches the real system: every make call has DESTDIR, and the tree
# is checked for files outside /usr and /etc.  The programs are the ones
# already built in $B (default build): "all" is not remade (make -o all),
# so this neither rebuilds nor switches a sanitizer build dir.  Prints each
# problem and exits 1 if there is one, 0 when everything is in place.

top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
build=${B:-build}
PREFIX=/usr
SYSCONFDIR=/etc
CONF_MARK="# install_tree.sh: modified by the admin"

cd "$top" || exit 1
for prog in qchatd qchatctl qchat qchat-bench; do
    if [ ! -x "$build/$prog" ]; then
        echo "install_tree: $build/$prog is not built (make all first)" >&2
        exit 1
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/install_tree.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
dest=$tmp/root
log=$tmp/make.log

failed=0
fail() {
    echo "install_tree: FAIL: $*"
    failed=1
}

# run_make TARGET: make TARGET into $dest, with the existing programs.
run_make() {
    if ! make --no-print-directory -o all B="$build" DESTDIR="$dest" PREFIX="$PREFIX" \
              SYSCONFDIR="$SYSCONFDIR" "$1" >"$log" 2>&1; then
        fail "make $1 DESTDIR=$dest PREFIX=$PREFIX SYSCONFDIR=$SYSCONFDIR failed:"
        sed 's/^/    /' "$log"
        return 1
    fi
    return 0
}

# Every file make install must lay out, relative to $dest.
expected_files() {
    cat <<EOF
$PREFIX/sbin/qchatd
$PREFIX/sbin/qchatctl
$PREFIX/bin/qchat
$PREFIX/bin/qchat-bench
$PREFIX/share/man/man1/qchat.1
$PREFIX/share/man/man1/qchat-bench.1
$PREFIX/share/man/man5/qchatd.conf.5
$PREFIX/share/man/man7/qchat-protocol.7
$PREFIX/share/man/man8/qchatd.8
$PREFIX/share/man/man8/qchatctl.8
$SYSCONFDIR/qchat/qchatd.conf
$PREFIX/share/qchat/examples/nginx-qchat.conf
$PREFIX/lib/systemd/system/qchatd.service
$PREFIX/lib/systemd/system/qchatd@.service
$PREFIX/lib/systemd/system/qchatd-nodes.target
$PREFIX/share/qchat/examples/grafana-qchat.json
$PREFIX/lib/sysusers.d/qchat.conf
EOF
    for f in sql/mysql/*.sql sql/sqlite/*.sql; do
        [ -e "$f" ] && echo "$PREFIX/share/qchat/$f"
    done
}

# 1. first install
mkdir "$dest" || exit 1
if ! run_make install; then
    exit 1
fi

for f in $(expected_files); do
    [ -f "$dest$f" ] || fail "missing $f"
done
for p in sbin/qchatd sbin/qchatctl bin/qchat bin/qchat-bench; do
    [ -x "$dest$PREFIX/$p" ] || fail "$PREFIX/$p is not executable"
done
for page in man/*.[0-9]; do
    section=${page##*.}
    [ -f "$dest$PREFIX/share/man/man$section/$(basename "$page")" ] ||
        fail "man page $page not installed in man$section"
done
if [ -f "$dest$SYSCONFDIR/qchat/qchatd.conf" ] &&
   ! cmp -s etc/qchatd.conf "$dest$SYSCONFDIR/qchat/qchatd.conf"; then
    fail "$SYSCONFDIR/qchat/qchatd.conf differs from etc/qchatd.conf"
fi
for unit in qchatd.service qchatd@.service; do
    u=$dest$PREFIX/lib/systemd/system/$unit
    [ -f "$u" ] || continue
    if grep -n '@[A-Z_]*@' "$u"; then
        fail "$unit still has @..@ placeholders"
    fi
    grep -q "^ExecStart=$PREFIX/sbin/qchatd " "$u" ||
        fail "$unit: ExecStart does not run $PREFIX/sbin/qchatd: $(grep '^ExecStart=' "$u")"
    grep -q "^ExecStart=.* -c $SYSCONFDIR/qchat/" "$u" ||
        fail "$unit: ExecStart does not read $SYSCONFDIR/qchat/: $(grep '^ExecStart=' "$u")"
done
if [ -f "$dest$PREFIX/lib/sysusers.d/qchat.conf" ] &&
   ! cmp -s systemd/qchat.sysusers "$dest$PREFIX/lib/sysusers.d/qchat.conf"; then
    fail "lib/sysusers.d/qchat.conf differs from systemd/qchat.sysusers"
fi
# Nothing outside PREFIX and SYSCONFDIR.
stray=$(cd "$dest" && find . -type f | sed 's|^\.||' |
        grep -v -e "^$PREFIX/" -e "^$SYSCONFDIR/")
[ -z "$stray" ] || fail "files outside $PREFIX and $SYSCONFDIR: $stray"
count=$(cd "$dest" && find . -type f | wc -l)
echo "install_tree: make install laid out $count files"

# 2. a modified config survives a second install
conf=$dest$SYSCONFDIR/qchat/qchatd.conf
if [ -f "$conf" ]; then
    echo "$CONF_MARK" >> "$conf" || exit 1
    cp "$conf" "$tmp/conf.before" || exit 1
    if run_make install; then
        cmp -s "$tmp/conf.before" "$conf" ||
            fail "a second make install overwrote the modified $SYSCONFDIR/qchat/qchatd.conf"
    fi
fi

# 3. uninstall keeps only the config
if run_make uninstall; then
    left=$(cd "$dest" && find . -type f | sed 's|^\.||' | grep -v -x "$SYSCONFDIR/qchat/qchatd.conf")
    [ -z "$left" ] || fail "make uninstall left files behind:
$left"
    if [ ! -f "$conf" ] || ! grep -q -x "$CONF_MARK" "$conf"; then
        fail "make uninstall removed or changed $SYSCONFDIR/qchat/qchatd.conf"
    fi
fi

if [ "$failed" -ne 0 ]; then
    exit 1
fi
echo "install_tree: install, reinstall (config kept) and uninstall (config kept) ok"
exit 0
