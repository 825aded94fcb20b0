#!/bin/sh
# lint_man.sh - check every manual page in man/ with mandoc's linter.
#
# Runs "mandoc -Tlint -W warning" on each man/*.[0-9] page: any output
# (a warning, an error, an unsupported construct) is a failure.  Prints the
# complaints and exits 1 if there are any; exits 0 when every page is clean.
# Run from anywhere; the pages are found relative to this script.

top=$(cd "$(dirname "$0")/../.." && pwd) || exit 1

if ! command -v mandoc >/dev/null 2>&1; then
    echo "lint_man: mandoc not found (Debian package: mandoc)" >&2
    exit 1
fi

pages=0
failed=0
for page in "$top"/man/*.[0-9]; do
    [ -e "$page" ] || continue
    pages=$((pages + 1))
    # mandoc exits non-zero on warnings too; its output is what counts.
    out=$(mandoc -Tlint -W warning "$page" 2>&1)
    if [ -n "$out" ]; then
        echo "lint_man: FAIL ${page#"$top"/}"
        printf '%s\n' "$out"
        failed=$((failed + 1))
    fi
done

if [ "$pages" -eq 0 ]; then
    echo "lint_man: no pages found in $top/man" >&2
    exit 1
fi
if [ "$failed" -ne 0 ]; then
    echo "lint_man: $failed of $pages pages have complaints"
    exit 1
fi
echo "lint_man: $pages pages clean"
exit 0
