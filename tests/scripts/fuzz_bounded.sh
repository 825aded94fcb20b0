#!/bin/sh
# fuzz_bounded.sh - the libFuzzer target for a bounded time (FUZZ_TIME, default
# 60 s): arbitrary bytes through a worker's framing, decoding and dispatch.
# Fails on any crash, sanitizer report, leak or hang (-timeout per input).
# Needs clang and libclang-rt (make check installs them).
set -u
cd "$(dirname "$0")/../.." || exit 1
FUZZ_TIME=${FUZZ_TIME:-60}
if [ "${SANITIZE:-}" = 1 ]; then echo "fuzz_bounded: skipped in the SANITIZE=1 pass (the fuzz build is already ASan+UBSan)"; exit 0; fi
if ! make -s fuzz-build >/tmp/qchat-fuzz-build.$$ 2>&1; then
    cat /tmp/qchat-fuzz-build.$$; rm -f /tmp/qchat-fuzz-build.$$
    echo "fuzz_bounded: build failed"; exit 1
fi
rm -f /tmp/qchat-fuzz-build.$$
work=$(mktemp -d /tmp/qchat-fuzzrun.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp tests/fuzz/corpus/* "$work/"
mkdir "$work/artifacts"
build-fuzz/fuzz_requests -max_total_time="$FUZZ_TIME" -timeout=10 -rss_limit_mb=2048 \
    -max_len=8192 -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work" \
    >"$work/log" 2>&1
rc=$?
grep -E "^#[0-9]+ +DONE|stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)" "$work/log"
if [ "$rc" -ne 0 ] || [ -n "$(ls "$work/artifacts")" ]; then
    tail -n 60 "$work/log"
    for f in "$work"/artifacts/*; do [ -f "$f" ] && { echo "== $f"; od -c "$f" | head -20; }; done
    echo "fuzz_bounded: FAILED (rc $rc)"
    exit 1
fi
echo "fuzz_bounded: ok (${FUZZ_TIME}s)"
