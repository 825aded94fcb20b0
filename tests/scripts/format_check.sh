#!/bin/sh
# format_check.sh - fail when a C source or header is not in the house style.
#
# The style is .clang-format at the top of the tree; `make format` applies it.
# Runs `clang-format --dry-run --Werror` on every tracked *.c and *.h file
# (or every one on disk when this is not a git checkout) and prints the
# files that differ.  Exits 0 when every file is formatted.

top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
cd "$top" || exit 1

if ! command -v clang-format >/dev/null 2>&1; then
    echo "format_check: clang-format not found (Debian package: clang-format)" >&2
    exit 1
fi

if git rev-parse --git-dir >/dev/null 2>&1; then
    files=$(git ls-files '*.c' '*.h')
else
    files=$(find src include tests -name '*.c' -o -name '*.h')
fi

bad=0
for f in $files; do
    [ -f "$f" ] || continue
    if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
        echo "format_check: not formatted: $f (run: make format)"
        bad=$((bad + 1))
    fi
done
[ "$bad" -eq 0 ] && echo "format_check: $(echo "$files" | wc -w) files formatted"
[ "$bad" -eq 0 ]
