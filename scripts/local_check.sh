#!/usr/bin/env bash
# The I/O model against this machine: measure the disk (fio, O_DIRECT random reads over
# block size x queue depth) and the CPU cost of the page cache, for buffered reads, for
# page faults and for MADV_WILLNEED (system time per GB minus O_DIRECT's, in a memory
# cgroup as kernel-replay's; faults and WILLNEED by scripts/fault_cost.py on slices of the
# replay's size with its read_ahead_kb), write them as a hardware profile, then run
# kernel-replay on the DeepSeek-V2-Lite recording and print, for each advice and budget,
# the wall time per token the kernel took beside the one predicted: the page model's
# reads through the profile (the `page-model` row's ms/token) plus the replay's touches
# of cached pages, timed with every expert cached.
#
# Usage: scripts/local_check.sh [-d DIR] [-t TOKENS] [-w WARMUP] [-c EXPERTS,...] [-a "ADVICE..."]
#                               [-T TRACE] [-P PROFILE]
#   -d DIR      working folder (default ./local-check): fio file, model file, CSVs
#   -t TOKENS   tokens counted per budget (default 200)
#   -w WARMUP   tokens replayed first and left out (default 50): the cache fills in them
#   -c LIST     cache sizes in experts (default 416,832,1248: 25 %, 50 %, 75 % of 1664)
#   -a LIST     advice (default "sequential willneed")
#   -T TRACE    trace (default ../shared/traces/deepseek-v2-lite/csv beside the repo)
#   -P FILE     use this profile instead of measuring (skips fio)
# Needs root (memory cgroups, drop_caches), fio, python3, about 16 GB free in DIR and
# 8 GiB of free RAM (every expert of the recording cached).
# Takes about 20 minutes. Wall times depend on load: run it on an idle machine (the
# load average is printed with every run).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=./local-check
TOKENS=200
WARMUP=50
BUDGETS=416,832,1248
ADVICE="sequential willneed"
TRACE=$ROOT/../shared/traces/deepseek-v2-lite/csv
PROFILE=
while getopts "d:t:w:c:a:T:P:h" opt; do
  case "$opt" in
    d) DIR=$OPTARG ;; t) TOKENS=$OPTARG ;; w) WARMUP=$OPTARG ;; c) BUDGETS=$OPTARG ;;
    a) ADVICE=$OPTARG ;;
    T) TRACE=$OPTARG ;; P) PROFILE=$OPTARG ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "usage: see $0 -h" >&2; exit 2 ;;
  esac
done
[[ $(id -u) -eq 0 ]] || { echo "local_check.sh: needs root (memory cgroups, drop_caches)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "local_check.sh: python3 not found" >&2; exit 2; }
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/moe-spill

# A memory cgroup of 1 GiB for the page-cache runs (v2 or v1).
CG=
make_cgroup() {
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    CG=/sys/fs/cgroup/moe-spill-local-check
    mkdir -p "$CG"; echo 1G > "$CG/memory.max"
  else
    CG=/sys/fs/cgroup/memory/moe-spill-local-check
    mkdir -p "$CG"; echo 1G > "$CG/memory.limit_in_bytes"
  fi
}
cleanup() {
  [[ -n $CG && -d $CG ]] && rmdir "$CG" 2>/dev/null || true
  rm -f "$DIR/fio.dat"
}
trap cleanup EXIT

if [[ -z $PROFILE ]]; then
  command -v fio >/dev/null || { echo "local_check.sh: fio not found (apt-get install -y fio)" >&2; exit 2; }
  PROFILE=$DIR/local.toml
  rm -f "$DIR/fio_curve.csv"
  "$ROOT/scripts/measure_disk.sh" -f "$DIR/fio.dat" -s 8g -o "$DIR/fio_curve.csv" -j "$DIR/fio_json" \
    -t 4 -r 1 -b "65536 131072 262144 524288 1048576 2097152 4194304" -q "1 2 4 8" -n "" -k
  make_cgroup
  for direct in 1 0; do
    sync; echo 3 > /proc/sys/vm/drop_caches
    sh -c "echo \$\$ > $CG/cgroup.procs; exec fio --name=pc --filename=$DIR/fio.dat --readonly \
      --rw=randread --bs=1m --direct=$direct --ioengine=psync --runtime=8 --time_based=1 \
      --randrepeat=0 --norandommap=1 --output-format=json" > "$DIR/fio_json/page_cache_d$direct.json"
  done
  # Faults and MADV_WILLNEED: the replay's slices (4,685,824 B / 3, whole pages) with its read_ahead_kb.
  RA=/sys/class/bdi/$(stat -c %Hd:%Ld "$DIR/fio.dat")/read_ahead_kb
  [[ -f $RA ]] || { echo "local_check.sh: cannot find the read_ahead_kb of $DIR's device" >&2; exit 2; }
  RA_OLD=$(cat "$RA"); echo 128 > "$RA"
  for advice in sequential willneed; do
    sync; echo 3 > /proc/sys/vm/drop_caches
    sh -c "echo \$\$ > $CG/cgroup.procs; exec python3 $ROOT/scripts/fault_cost.py $DIR/fio.dat \
      --region 1564672 --gb 3 --advice $advice" > "$DIR/fio_json/fault_cost_$advice.txt"
  done
  echo "$RA_OLD" > "$RA"
  python3 - "$DIR" "$PROFILE" <<'EOF'
import csv, json, sys
d, out = sys.argv[1:]
def sys_s_per_gb(path):
    j = json.load(open(path))["jobs"][0]
    return j["sys_cpu"] / 100 * j["job_runtime"] / 1e3 / (j["read"]["io_bytes"] / 1e9)
direct = sys_s_per_gb(f"{d}/fio_json/page_cache_d1.json")
cost = sys_s_per_gb(f"{d}/fio_json/page_cache_d0.json") - direct
fault = float(open(f"{d}/fio_json/fault_cost_sequential.txt").read()) - direct
willneed = float(open(f"{d}/fio_json/fault_cost_willneed.txt").read()) - direct
if cost <= 0 or fault <= 0 or willneed <= 0:
    sys.exit("local_check.sh: buffered reads, faults or WILLNEED cost no more CPU than O_DIRECT: cannot size the page cache")
rows = [r for r in csv.DictReader(open(f"{d}/fio_curve.csv")) if r["direct"] == "1" and r["jobs"] == "1"]
mem_gib = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1]) / 2**20
with open(out, "w") as f:
    f.write('name = "local"\ndescription = "this machine: fio curve and page-cache cost (scripts/local_check.sh)"\n')
    f.write(f"[ram]\nsize_gib = {mem_gib:.1f}\nbandwidth_gbs = 10.0\nreserve_gib = 0.0\n"
            f"page_cache_gbs = {1 / cost:.3f}\nfault_gbs = {1 / fault:.3f}\n"
            f"willneed_gbs = {1 / willneed:.3f}\n")
    f.write(f"[ssd]\nbandwidth_gbs = {max(float(r['gbs']) for r in rows):.3f}\npoints = [\n")
    for r in rows:
        f.write(f"  {{ block_kib = {int(r['block_bytes']) // 1024}, queue_depth = {r['queue_depth']}, gbs = {float(r['gbs']):.4f} }},\n")
    f.write("]\n")
print(f"page cache: {cost:.3f} s of CPU per GB read ({1 / cost:.2f} GB/s per core), {fault:.3f} per GB "
      f"faulted in ({1 / fault:.2f} GB/s per core), {willneed:.3f} per GB brought in by MADV_WILLNEED "
      f"({1 / willneed:.2f} GB/s per core); profile {out}", file=sys.stderr)
EOF
fi

for advice in $ADVICE; do
  replay=("$BIN" kernel-replay "$TRACE" --model deepseek-v2-lite --hw "$PROFILE"
    --tokens $((TOKENS + WARMUP)) --warmup-tokens "$WARMUP" --read-ahead-kb 128
    --expert-bytes 4685824 --slices 3 --advice "$advice" --policies linux --file "$DIR/model.bin")
  echo "kernel-replay --advice $advice, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  "${replay[@]}" --cache-experts "$BUDGETS" -o "$DIR/kernel_$advice.csv" > "$DIR/kernel_$advice.txt"
  # The replay's own work besides its reads (touching the pages of every routed expert,
  # and under willneed advising each one), timed with all 1664 experts of the recording
  # cached (7.3 GiB of page cache), on the tokens that read nothing.
  echo "kernel-replay --advice $advice with every expert cached, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  "${replay[@]}" --cache-experts 1664 -q -o "$DIR/cached_$advice.csv" \
    --per-token "$DIR/cached_${advice}_tokens.csv" > /dev/null
done
rm -f "$DIR/model.bin"

python3 - "$DIR" "$WARMUP" $ADVICE <<'EOF'
import csv, statistics, sys
d, warmup, advice = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def cached_ms(a):
    """Median wall time of the tokens that read nothing with every expert cached."""
    k = next(r for r in csv.DictReader(open(f"{d}/cached_{a}.csv")) if r["source"] == "kernel")
    if float(k["global_reclaim_pages"]) > 0:
        sys.exit(f"local_check.sh: global memory pressure reclaimed pages while every expert was cached ({a}): too little free RAM")
    idle = [int(r["wall_us"]) / 1e3 for r in csv.DictReader(open(f"{d}/cached_{a}_tokens.csv"))
            if int(r["token"]) >= warmup and r["read_bytes"] == "0"]
    if not idle:
        sys.exit(f"local_check.sh: with every expert cached no token read nothing ({a}): cannot time the touches")
    return statistics.median(idle), len(idle)
touch = {a: cached_ms(a) for a in advice}
print("The replay's own work on cached pages, added to the I/O model's time: "
      + ", ".join(f"{t:.1f} ms per token under {a} (median of {n} tokens)" for a, (t, n) in touch.items())
      + ", with every expert cached.\n")
print("| advice | window KiB | cache experts | kernel MB/token | model MB/token | kernel ms/token (median) | predicted ms/token (median) | error |")
print("|---|---|---|---|---|---|---|---|")
errs = []
for a in advice:
    rows = list(csv.DictReader(open(f"{d}/kernel_{a}.csv")))
    for k in (r for r in rows if r["source"] == "kernel"):
        p = next(r for r in rows if r["source"] == "page-model" and r["cache_experts"] == k["cache_experts"])
        n = float(k["tokens"])
        t = touch[a][0]
        kernel, predicted = float(k["wall_ms_per_token"]), float(p["wall_ms_per_token"]) + t
        e = predicted / kernel - 1
        errs.append(abs(e))
        print(f"| {a} | {k['window_kb']} | {k['cache_experts']} | {float(k['read_bytes']) / n / 1e6:.0f} | "
              f"{float(p['read_bytes']) / n / 1e6:.0f} | {kernel:.0f} ({float(k['wall_ms_p50']):.0f}) | "
              f"{predicted:.0f} ({float(p['wall_ms_p50']) + t:.0f}) | {100 * e:+.0f} % |")
print(f"\n{sum(e <= 0.25 for e in errs)} of {len(errs)} within 25 %; largest |error| {100 * max(errs):.0f} %")
EOF
