#!/usr/bin/env bash
# Parse throughput of the forum text and binary readers on >= 500 MB of forum text made
# from the real DeepSeek-V2-Lite recording (../shared/traces/deepseek-v2-lite), written
# as one large response. Usage: scripts/bench_parse.sh [WORKDIR]  (default /tmp/moe-spill-bench)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-/tmp/moe-spill-bench}"
csv="${TRACE_CSV:-$root/../shared/traces/deepseek-v2-lite/csv}"
bin="${CARGO_TARGET_DIR:-$root/target}/release/moe-spill"
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
mkdir -p "$work"
if [ ! -s "$work/big.txt" ]; then
  rm -rf "$work/forum"
  "$bin" convert "$csv" -o "$work/forum" -q
  # two copies of every response, concatenated: one response of ~526 MB
  for i in 1 2; do cat "$work"/forum/single_response_*.txt; done > "$work/big.txt"
  rm -rf "$work/forum"
fi
"$bin" convert "$work/big.txt" -o "$work/big.mst" -q
sync
echo "forum text: $(du -h "$work/big.txt" | cut -f1); binary: $(du -h "$work/big.mst" | cut -f1)"
for f in big.txt big.mst; do
  for run in 1 2 3; do
    "$bin" info "$work/$f" --format json | python3 -c "import json,sys; d=json.load(sys.stdin); print(f'$f run $run: {int(d[\"file_bytes\"])/1e6:.1f} MB, {d[\"accesses\"]} accesses, {d[\"load_seconds\"]} s, {d[\"load_mb_per_s\"]} MB/s')"
  done
done
