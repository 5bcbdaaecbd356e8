#!/usr/bin/env bash
# The figure of docs/batches.md: GLM-5 (synthetic routing) on the 4090-ddr5 preset,
# policy linux, at four RAM budgets. Prefill tokens/s against prompt length for ubatches
# of 128, 512 and 2048 tokens; decode tokens/s against --parallel.
#
# Usage: scripts/batch_figure.sh [OUT_DIR]   (default: docs; writes batches_prefill.csv,
#                                             batches_parallel.csv and batches.png)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(cd "${1:-$ROOT/docs}" && pwd)
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN=$(cd "${CARGO_TARGET_DIR:-$ROOT/target}" && pwd)/release/moe-spill
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# Traces by their bare names, so the CSVs' trace column does not hold the scratch path.
cd "$TMP"
MACHINE=(--model glm-5 --hw 4090-ddr5 --ram 96GiB..384GiB --points 4 --policies linux -q)

# Concatenate sweep CSVs that share a header.
concat() {
  local out=$1; shift
  head -n 1 "$1" > "$out"
  for f in "$@"; do
    [[ $(head -n 1 "$f") == $(head -n 1 "$out") ]] || { echo "batch_figure.sh: $f: other columns" >&2; exit 2; }
    tail -n +2 "$f" >> "$out"
  done
}

"$BIN" synth --model glm-5 --prompt-tokens 32768 --tokens 64 --responses 2 -q -o prompts.mst
for ub in 128 512 2048; do
  "$BIN" sweep prompts.mst "${MACHINE[@]}" --phase all --ubatch "$ub" \
    --prompt-tokens 512,2048,8192,32768 -o "$TMP/prefill_$ub.csv"
done
concat "$OUT/batches_prefill.csv" "$TMP"/prefill_128.csv "$TMP"/prefill_512.csv "$TMP"/prefill_2048.csv

"$BIN" synth --model glm-5 --tokens 128 --responses 32 -q -o decode.mst
files=()
for p in 1 2 4 8 16 32; do
  "$BIN" sweep decode.mst "${MACHINE[@]}" --parallel "$p" -o "$TMP/parallel_$p.csv"
  files+=("$TMP/parallel_$p.csv")
done
concat "$OUT/batches_parallel.csv" "${files[@]}"

python3 "$ROOT/scripts/plot_batches.py" "$OUT/batches_prefill.csv" "$OUT/batches_parallel.csv" \
  -o "$OUT/batches.png"
echo "batch_figure.sh: wrote $OUT/batches_prefill.csv, $OUT/batches_parallel.csv, $OUT/batches.png" >&2
