#!/usr/bin/env bash
# The page model and the `linux` policy against the real page cache on traces of several
# shapes: the table of docs/kernel.md, "The page model on other shapes". Every run is
# kernel-replay at 10, 30, 50, 70 and 90 % of the experts, --hw desktop-cpu (every MoE
# layer on the CPU), --read-ahead-kb 128, 300 tokens (experts over 4 MiB: 100 tokens at
# 30 and 70 %, which MADV_WILLNEED's limit of 4 MiB per call splits here). Needs root
# (a memory cgroup) and room beside WORK_DIR for the largest file (n_ids x expert bytes:
# 19 GiB for glm5-k2). About 30 minutes on the machine of docs/kernel.md.
#
# Usage: scripts/pagemodel_check.sh [WORK_DIR]   (default: ./pagemodel-check)
# RUNS (environment) replaces the list of runs, SHAPE:EXPERT_BYTES:SLICES:ADVICE each.
# Writes WORK_DIR/SHAPE-BYTES-SLICES-ADVICE.csv (kernel-replay -o) and prints the table
# (Markdown) on stdout. A run whose CSV exists is not repeated (delete WORK_DIR to start
# over, e.g. after changing the page model); each model file is removed after its runs.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-pagemodel-check}
RUNS=${RUNS:-"deepseek:1048576:1:sequential deepseek:1048576:1:willneed
  deepseek:1048576:3:sequential deepseek:4194304:1:sequential
  olmoe:1048576:1:sequential
  olmoe-k2:1048576:1:sequential olmoe-k2:1048576:1:willneed olmoe-k2:1048576:3:sequential
  olmoe-k2:4194304:1:sequential olmoe-k2:4194304:1:willneed olmoe-k2:8388608:1:willneed
  qwen3-k2:1048576:1:sequential glm5-k2:1048576:1:sequential"}
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/moe-spill
mkdir -p "$WORK"
SHARED=$ROOT/../shared/traces/deepseek-v2-lite/csv

# The trace of a shape (300 tokens of one response; the recording's first 300 decode
# tokens), and its n_layers x n_experts.
trace() {
  local t=$WORK/$1.mst
  if [[ ! -f $t ]]; then
    local synth=("$BIN" synth --tokens 300 --responses 1 -q -o "$t")
    case $1 in
      deepseek) "$BIN" convert "$SHARED" -q -o "$t" ;;
      olmoe) "${synth[@]}" --model olmoe-1b-7b ;;
      olmoe-k2) "${synth[@]}" --model olmoe-1b-7b --top-k 2 ;;
      qwen3-k2) "${synth[@]}" --model qwen3-30b-a3b --top-k 2 ;;
      glm5-k2) "${synth[@]}" --model glm-5 --top-k 2 ;;
      *) echo "pagemodel_check.sh: unknown shape $1" >&2; exit 2 ;;
    esac
  fi
  echo "$t"
}
n_ids() {
  case $1 in
    deepseek) echo $((26 * 64)) ;;
    olmoe | olmoe-k2) echo $((16 * 64)) ;;
    qwen3-k2) echo $((48 * 128)) ;;
    glm5-k2) echo $((75 * 256)) ;;
  esac
}

runs=($RUNS)
for i in "${!runs[@]}"; do
  IFS=: read -r shape bytes slices advice <<< "${runs[i]}"
  out=$WORK/$shape-$bytes-$slices-$advice.csv
  file=$WORK/$shape-$bytes-$slices.bin
  if [[ ! -f $out ]]; then
    t=$(trace "$shape")
    n=$(n_ids "$shape")
    tokens=300 pcts="10 30 50 70 90"
    if ((bytes > 4194304)); then tokens=100 pcts="30 70"; fi
    caps=$(for p in $pcts; do echo $((n * p / 100)); done | paste -sd,)
    "$BIN" kernel-replay "$t" --hw desktop-cpu --tokens "$tokens" --cache-experts "$caps" \
      --expert-bytes "$bytes" --slices "$slices" --advice "$advice" --read-ahead-kb 128 \
      --policies linux --file "$file" -q -o "$out.tmp" > /dev/null
    mv "$out.tmp" "$out"
  fi
  # The file stays while a later run has its layout.
  later=" ${runs[*]:i+1} "
  [[ $later == *" $shape:$bytes:$slices:"* ]] || rm -f "$file"
done

# Per run and budget: the kernel's misses per token (expert-equivalents read) and the
# page model's and linux's errors versus the kernel.
echo "| shape | expert bytes | slices | advice | budget (experts) | kernel misses/token | page-model | linux |"
echo "|---|---|---|---|---|---|---|---|"
for run in $RUNS; do
  IFS=: read -r shape bytes slices advice <<< "$run"
  awk -F, -v shape="$shape" -v n="$(n_ids "$shape")" -v bytes="$bytes" -v slices="$slices" -v advice="$advice" '
    NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    { c = $col["cache_experts"]; s = $col["source"] }
    s == "kernel" { k[c] = $col["misses_per_token"]; order[++m] = c }
    s == "page-model" { pm[c] = $col["rel_err"] }
    s == "linux" { li[c] = $col["rel_err"] }
    END {
      for (j = 1; j <= m; j++) {
        c = order[j]
        printf "| %s | %s | %s | %s | %d%% (%d) | %.2f | %+.1f%% | %+.1f%% |\n", shape, bytes, slices, advice, int(100 * c / n + 0.5), c, k[c], 100 * pm[c], 100 * li[c]
      }
    }' "$WORK/$shape-$bytes-$slices-$advice.csv"
done
