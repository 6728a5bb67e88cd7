#!/usr/bin/env bash
# Runs every test binary of a folder (benches/gpu_pack.sh makes one) on
# this machine's GPU, with CI=true (a missing adapter fails), four at a
# time, once per leg: the kernels as chosen, per-thread partials forced
# (the CPU adapters' kernels on the GPU), the column kernels forced on, and
# off. Prints a line per leg and the failures; full logs go to
# BN_GPU_LOGS (default /tmp/gpu-test-logs), one file per leg.
#
#   BN_GPU_BINS=/tmp/b bash benches/gpu_tests.sh
#   BN_GPU_LEGS="default partials" BN_GPU_BINS=/tmp/b bash benches/gpu_tests.sh
set -uo pipefail
cd "$(dirname "$0")/.."
bins=${BN_GPU_BINS:?set BN_GPU_BINS to the folder of test binaries}
logs=${BN_GPU_LOGS:-/tmp/gpu-test-logs}
mkdir -p "$logs"
source benches/gpu_env.sh
# The data the tests read lies under the path they were built in.
if [ -f "$bins/MANIFEST_DIR" ]; then
    built=$(cat "$bins/MANIFEST_DIR")
    if [ ! -e "$built" ]; then
        mkdir -p "$(dirname "$built")" && ln -s "$PWD" "$built"
    fi
fi
export CI=true WGPU_BACKEND=${WGPU_BACKEND:-vulkan}
# dispatch_cost times small ops against a bound: it runs alone after the
# others (beside three other binaries on the card it once took 5 ms).
alone="dispatch_cost"
list=$(find "$bins" -maxdepth 1 -type f -perm -u+x ! -name batchnorm ! -name "$alone" -printf '%f\n' | sort)
status=0
for leg in ${BN_GPU_LEGS:-default partials columns nocolumns}; do
    case $leg in
        default) env=() ;;
        partials) env=(BN_THREAD_PARTIALS=1) ;;
        columns) env=(BN_THREAD_PARTIALS=0 BN_COLUMNS=1) ;;
        nocolumns) env=(BN_COLUMNS=0) ;;
        *) echo "unknown leg $leg" >&2; exit 2 ;;
    esac
    dir=$(mktemp -d)
    start=$(date +%s)
    # A binary that fails, crashes, hangs (timeout: 124) or cannot start
    # fails the leg, whatever its log says.
    echo "$list" | env "${env[@]}" xargs -P4 -I{} sh -c \
        'timeout 300 "$0/{}" >"$1/{}.log" 2>&1 || { rc=$?; echo "  {} exit $rc"; exit 1; }' \
        "$bins" "$dir" || status=1
    if [ -x "$bins/$alone" ]; then
        env "${env[@]}" timeout 300 "$bins/$alone" >"$dir/$alone.log" 2>&1 ||
            { echo "  $alone exit $?"; status=1; }
    else
        echo "  $alone missing from $bins"
        status=1
    fi
    summary=$(cat "$dir"/*.log | grep -h '^test result' |
        awk '{p+=$4; f+=$6; i+=$8} END {print p" passed, "f" failed, "i" ignored"}')
    echo "== $leg (${env[*]:-as chosen}): $summary, $(($(date +%s) - start)) s"
    grep -h -E '^test .*FAILED|panicked' "$dir"/*.log | head -20
    grep -q -E 'FAILED|panicked' "$dir"/*.log && status=1
    for f in "$dir"/*.log; do echo "=== $(basename "$f")"; cat "$f"; done >"$logs/$leg.log"
    rm -rf "$dir"
done
exit $status
