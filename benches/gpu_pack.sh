#!/usr/bin/env bash
# Packs what a GPU machine without a Rust toolchain needs to run the test
# suite and the bench (benches/gpu_tests.sh, benches/gpu.sh): the release
# test binaries and the bench, stripped, in one xz archive small enough to
# travel with the working tree (about 25 MiB for 180 MiB of binaries).
#
#   bash benches/gpu_pack.sh            # -> .bins/bins.tar.xz (BN_GPU_PACK moves it)
#
# On the GPU machine, from the repository root:
#
#   mkdir -p /tmp/b && tar xJf .bins/bins.tar.xz -C /tmp/b
#   BN_GPU_BINS=/tmp/b bash benches/gpu_tests.sh      # every test binary, each strategy forced
#   BN_GPU_BINS=/tmp/b bash benches/gpu.sh            # the bench (bench-peers absent: skipped)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BN_GPU_PACK:-.bins/bins.tar.xz}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cargo bench --bench batchnorm --no-run 2>&1 | tail -1
bench=$(cargo bench --bench batchnorm --no-run 2>&1 | grep -o 'target/release/deps/batchnorm-[0-9a-f]*' | head -1)
strip -o "$dir/batchnorm" "$bench"
for f in $(cargo test --release --no-run 2>&1 | grep -o 'target/release/deps/[^)]*'); do
    strip -o "$dir/$(basename "$f" | sed 's/-[0-9a-f]*$//')" "$f"
done
# The tests find their data through the path they were built in.
pwd >"$dir/MANIFEST_DIR"
mkdir -p "$(dirname "$out")"
tar cf - -C "$dir" . | xz -T2 -6 >"$out"
echo "packed $(ls "$dir" | wc -l) files into $out ($(du -h "$out" | cut -f1))"
