#!/bin/sh
# fuzz_bounded.sh - the libFuzzer targets for a bounded time each:
#   fuzz_requests  arbitrary bytes through a worker's framing, decoding and
#                  dispatch (FUZZ_TIME, default 60 s);
#   fuzz_proxy     arbitrary bytes as a PROXY protocol v1 header, with the
#                  parser's contract checked (FUZZ_PROXY_TIME, default 20 s).
# Fails on any crash, sanitizer report, leak or hang (-timeout per input).
# Needs clang and libclang-rt (make check installs them).
set -u
cd "$(dirname "$0")/../.." || exit 1
FUZZ_TIME=${FUZZ_TIME:-60}
FUZZ_PROXY_TIME=${FUZZ_PROXY_TIME:-20}
if [ "${SANITIZE:-}" = 1 ]; then echo "fuzz_bounded: skipped in the SANITIZE=1 pass (the fuzz build is already ASan+UBSan)"; exit 0; fi
if ! make -s fuzz-build >/tmp/qchat-fuzz-build.$$ 2>&1; then
    cat /tmp/qchat-fuzz-build.$$; rm -f /tmp/qchat-fuzz-build.$$
    echo "fuzz_bounded: build failed"; exit 1
fi
rm -f /tmp/qchat-fuzz-build.$$
work=$(mktemp -d /tmp/qchat-fuzzrun.XXXXXX)
trap 'rm -rf "$work"' EXIT

# run TARGET CORPUS SECONDS MAX_LEN [more libFuzzer flags]: 0 clean, 1 findings
run() {
    target=$1 corpus=$2 secs=$3 maxlen=$4
    shift 4
    mkdir "$work/$target" "$work/$target.artifacts"
    cp "$corpus"/* "$work/$target/"
    "build-fuzz/$target" -max_total_time="$secs" -timeout=10 -max_len="$maxlen" \
        -print_final_stats=1 -artifact_prefix="$work/$target.artifacts/" "$@" "$work/$target" \
        >"$work/$target.log" 2>&1
    rc=$?
    echo "== $target (${secs}s)"
    grep -E "^#[0-9]+ +DONE|stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)" \
        "$work/$target.log"
    if [ "$rc" -ne 0 ] || [ -n "$(ls "$work/$target.artifacts")" ]; then
        tail -n 60 "$work/$target.log"
        for f in "$work/$target.artifacts"/*; do
            [ -f "$f" ] && { echo "== $f"; od -c "$f" | head -20; }
        done
        echo "fuzz_bounded: $target FAILED (rc $rc)"
        return 1
    fi
    return 0
}

failed=0
run fuzz_requests tests/fuzz/corpus "$FUZZ_TIME" 8192 -rss_limit_mb=2048 || failed=1
run fuzz_proxy tests/fuzz/corpus_proxy "$FUZZ_PROXY_TIME" 512 || failed=1
[ "$failed" -eq 0 ] || exit 1
echo "fuzz_bounded: ok (fuzz_requests ${FUZZ_TIME}s, fuzz_proxy ${FUZZ_PROXY_TIME}s)"
