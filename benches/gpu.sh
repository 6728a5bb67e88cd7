#!/usr/bin/env bash
# One command for every GPU run, so each is the same: the whole bench
# (criterion, floors, shapes, formats and fused ops, small batches, growth
# curves) and the Burn peer, on Vulkan, with the card's name and peak
# bandwidth, into benches/results/<card>/: report.md, growth_n.svg and
# growth_c.svg (BN_CURVES_DIR moves the curves).
#
#   bash benches/gpu.sh                 # peak bandwidth from the table below
#   BN_PEAK_GBPS=3350 bash benches/gpu.sh
#
# On a machine without the Vulkan loader, put its .deb files (libvulkan1,
# libegl1, libglvnd0) in .gl/ beside this repository's root: they are
# unpacked first. NVIDIA's ICD is found through VK_DRIVER_FILES when the
# driver lives under /usr/local/nvidia.
#
# On a machine without a Rust toolchain, build the two programs elsewhere
# (same CPU architecture) and name their folder in BN_GPU_BINS:
#
#   cargo bench --bench batchnorm --no-run     # target/release/deps/batchnorm-<hash>
#   (cd bench-peers && cargo build --release)  # bench-peers/target/release/bench-peers
#   BN_GPU_BINS=bins BN_COMMIT=$(git rev-parse --short HEAD) bash benches/gpu.sh
#
# with the files copied to bins/batchnorm and bins/bench-peers
# (benches/gpu_pack.sh packs the bench and the test binaries; without
# bench-peers the Burn section says so).
set -euo pipefail
cd "$(dirname "$0")/.."

source benches/gpu_env.sh
export WGPU_BACKEND=vulkan

card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
card=${card:-unknown GPU}
# Peak memory bandwidth (GB/s) of cards we may be lent; BN_PEAK_GBPS wins.
case "$card" in
    *H200*) peak=4800 ;;
    *H100*PCIe*) peak=2000 ;;
    *H100*) peak=3350 ;;
    *A100*80GB*) peak=2039 ;;
    *A100*) peak=1555 ;;
    *L40S*) peak=864 ;;
    *) peak= ;;
esac
export BN_PEAK_GBPS=${BN_PEAK_GBPS:-$peak}

slug=$(echo "$card" | tr -c 'A-Za-z0-9\n' '-' | tr -s '-')
dir="benches/results/${slug%-}"
mkdir -p "$dir"
out="$dir/report.md"
export BN_CURVES_DIR=${BN_CURVES_DIR:-$PWD/$dir}
{
    commit=${BN_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo '?')}
    echo "# $card (peak ${BN_PEAK_GBPS:-unknown} GB/s), $(date -u +%F), commit $commit"
    echo
    echo "Host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
    echo
    if [ -n "${BN_GPU_BINS:-}" ]; then
        "$BN_GPU_BINS/batchnorm" --bench 2>&1
    else
        cargo bench --bench batchnorm 2>&1
    fi
    echo
    echo "## Against Burn"
    echo
    if [ -n "${BN_GPU_BINS:-}" ]; then
        if [ -x "$BN_GPU_BINS/bench-peers" ]; then
            "$BN_GPU_BINS/bench-peers" 2>&1
        else
            echo "(no bench-peers in $BN_GPU_BINS: the Burn peer was not built for this run)"
        fi
    else
        (cd bench-peers && cargo run --release 2>&1)
    fi
} | tee "$out"
echo "written to $out and $BN_CURVES_DIR/growth_n.svg, growth_c.svg"
