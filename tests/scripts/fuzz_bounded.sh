#!/bin/sh
# fuzz_bounded.sh - every libFuzzer target for a bounded time: the request
# stream (arbitrary bytes through a worker's framing, decoding and dispatch,
# FUZZ_TIME, default 40 s), the internal packets between processes and the
# control-socket requests (FUZZ_TIME_SMALL each, default 15 s), and the PROXY
# protocol v1 header parser with its contract checked (FUZZ_PROXY_TIME, default 15 s),
# and frame.c's flat-object fast path against its tokener path (FUZZ_FRAME_TIME, default 15 s).
# Fails on any crash, sanitizer report, leak or hang (-timeout per input).
# Needs clang and libclang-rt (make check installs them).
set -u
cd "$(dirname "$0")/../.." || exit 1
FUZZ_TIME=${FUZZ_TIME:-40}
FUZZ_TIME_SMALL=${FUZZ_TIME_SMALL:-15}
FUZZ_PROXY_TIME=${FUZZ_PROXY_TIME:-15}
FUZZ_FRAME_TIME=${FUZZ_FRAME_TIME:-15}
if [ "${SANITIZE:-}" = 1 ]; then echo "fuzz_bounded: skipped in the SANITIZE=1 pass (the fuzz build is already ASan+UBSan)"; exit 0; fi
if ! make -s fuzz-build >/tmp/qchat-fuzz-build.$$ 2>&1; then
    cat /tmp/qchat-fuzz-build.$$; rm -f /tmp/qchat-fuzz-build.$$
    echo "fuzz_bounded: build failed"; exit 1
fi
rm -f /tmp/qchat-fuzz-build.$$
work=$(mktemp -d /tmp/qchat-fuzzrun.XXXXXX)
trap 'rm -rf "$work"' EXIT

# run_target NAME CORPUS SECONDS MAX_LEN: 0 when it ran clean.
run_target() {
    name=$1; corpus=$2; secs=$3; max_len=$4
    dir=$work/$name
    mkdir -p "$dir/corpus" "$dir/artifacts"
    cp "$corpus"/* "$dir/corpus/"
    build-fuzz/"$name" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -max_len="$max_len" -print_final_stats=1 -artifact_prefix="$dir/artifacts/" "$dir/corpus" \
        >"$dir/log" 2>&1
    rc=$?
    echo "== $name (${secs}s)"
    grep -E "^#[0-9]+ +DONE|stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)" "$dir/log"
    if [ "$rc" -ne 0 ] || [ -n "$(ls "$dir/artifacts")" ]; then
        tail -n 60 "$dir/log"
        for f in "$dir"/artifacts/*; do [ -f "$f" ] && { echo "== $f"; od -c "$f" | head -20; }; done
        echo "fuzz_bounded: $name FAILED (rc $rc)"
        return 1
    fi
    return 0
}

failed=0
run_target fuzz_requests tests/fuzz/corpus "$FUZZ_TIME" 8192 || failed=1
run_target fuzz_ipc tests/fuzz/corpus_ipc "$FUZZ_TIME_SMALL" 4096 || failed=1
run_target fuzz_control tests/fuzz/corpus_control "$FUZZ_TIME_SMALL" 4097 || failed=1
run_target fuzz_proxy tests/fuzz/corpus_proxy "$FUZZ_PROXY_TIME" 512 || failed=1
run_target fuzz_frame tests/fuzz/corpus_frame "$FUZZ_FRAME_TIME" 2048 || failed=1
[ "$failed" -eq 0 ] || exit 1
echo "fuzz_bounded: ok (requests ${FUZZ_TIME}s, ipc and control ${FUZZ_TIME_SMALL}s each, proxy ${FUZZ_PROXY_TIME}s, frame ${FUZZ_FRAME_TIME}s)"
