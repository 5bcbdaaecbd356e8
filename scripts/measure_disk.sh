#!/usr/bin/env bash
# Measure a drive's read latency/throughput curve over block size x queue depth with fio,
# for moe-spill's I/O model.  Writes one CSV row per fio run (raw fio JSON kept beside it).
#
# Usage:
#   measure_disk.sh [-f FILE] [-s SIZE] [-o CSV] [-j JSONDIR] [-t RUNTIME] [-r RAMP]
#                   [-e ENGINE] [-b "BS..."] [-q "QD..."] [-n "JOBS..."] [-J BS]
#                   [-p PASSES] [-P FIRST] [-B] [-k]
#     -f FILE     test file on the file system / drive to measure   (default ./fio.dat)
#     -s SIZE     its size (fio syntax: 16g); reads use random offsets over all of it (16g)
#     -o CSV      output CSV (default ./fio_curve.csv; rows are appended if it exists)
#     -j DIR      where the raw fio JSON goes (default ./fio_json)
#     -t SECONDS  runtime of each point (default 6)      -r SECONDS  ramp_time (default 1)
#     -e ENGINE   libaio or io_uring (default libaio)
#     -b "LIST"   block sizes in bytes (default 4k..16m: 4096 16384 ... 16777216)
#     -q "LIST"   queue depths with one job (default "1 2 4 8 16 32")
#     -n "LIST"   numjobs for the threads-vs-queue-depth comparison, iodepth=1 (default "2 4")
#     -J BS       block size of that comparison in bytes (default 262144)
#     -p N        passes over the whole table (default 1; use 3 and take min/median)
#     -P N        number of the first pass in the CSV's pass column (default 1; to append later passes)
#     -B          also buffered (direct=0) runs after dropping caches: sequential 1m and
#                 random 256k reads (needs root for /proc/sys/vm/drop_caches)
#     -k          keep FILE at the end (default: delete it if this script created it)
#
# CSV columns: block_bytes,queue_depth,jobs,direct,gbs,iops,lat_mean_us,lat_p50_us,lat_p99_us,
#              load1,rw,pass,utc
#   gbs = read bandwidth in GB/s (10^9 B/s), summed over jobs; latencies are fio's completion
#   latency (clat) of one request, merged over jobs; load1 = 1-minute load average at the start.
# Requirements: fio >= 3.x, python3.
set -euo pipefail

FILE=./fio.dat
SIZE=16g
CSV=./fio_curve.csv
JSONDIR=./fio_json
RUNTIME=6
RAMP=1
ENGINE=libaio
BSS="4096 16384 65536 131072 262144 524288 1048576 4194304 16777216"
QDS="1 2 4 8 16 32"
JOBS_LIST="2 4"
JOBS_BS=262144
PASSES=1
FIRST=1
BUFFERED=0
KEEP=0

while getopts "f:s:o:j:t:r:e:b:q:n:J:p:P:Bkh" opt; do
  case "$opt" in
    f) FILE=$OPTARG ;; s) SIZE=$OPTARG ;; o) CSV=$OPTARG ;; j) JSONDIR=$OPTARG ;;
    t) RUNTIME=$OPTARG ;; r) RAMP=$OPTARG ;; e) ENGINE=$OPTARG ;; b) BSS=$OPTARG ;;
    q) QDS=$OPTARG ;; n) JOBS_LIST=$OPTARG ;; J) JOBS_BS=$OPTARG ;; p) PASSES=$OPTARG ;; P) FIRST=$OPTARG ;;
    B) BUFFERED=1 ;; k) KEEP=1 ;;
    h) sed -n '2,/^# Requirements/p' "$0"; exit 0 ;;
    *) echo "usage: see $0 -h" >&2; exit 2 ;;
  esac
done

command -v fio >/dev/null || { echo "fio not found (apt-get install -y fio)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 not found" >&2; exit 2; }
mkdir -p "$JSONDIR"

CREATED=0
cleanup() {
  if [[ $CREATED -eq 1 && $KEEP -eq 0 ]]; then rm -f -- "$FILE"; fi
}
trap cleanup EXIT

# Lay out the file once with incompressible data (O_DIRECT writes, no page cache left behind).
want=$(python3 - "$SIZE" <<'EOF'
import sys, re
s = sys.argv[1].strip().lower()
m = re.fullmatch(r'(\d+)([kmgt]?)i?b?', s)
if not m: sys.exit("bad size: " + s)
print(int(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))
EOF
)
have=$(stat -c %s -- "$FILE" 2>/dev/null || echo 0)
if [[ "$have" -lt "$want" ]]; then
  echo "laying out $FILE ($SIZE)" >&2
  fio --name=layout --filename="$FILE" --size="$SIZE" --rw=write --bs=4m --direct=1 \
      --ioengine="$ENGINE" --iodepth=8 --output-format=json > "$JSONDIR/layout.json"
  CREATED=1
fi

if [[ ! -s "$CSV" ]]; then
  echo "block_bytes,queue_depth,jobs,direct,gbs,iops,lat_mean_us,lat_p50_us,lat_p99_us,load1,rw,pass,utc" > "$CSV"
fi

# run_point BS QD JOBS DIRECT RW PASS
run_point() {
  local bs=$1 qd=$2 jobs=$3 direct=$4 rw=$5 pass=$6
  local load1 utc engine=$ENGINE json
  load1=$(cut -d' ' -f1 /proc/loadavg)
  utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  json="$JSONDIR/${rw}_bs${bs}_qd${qd}_j${jobs}_d${direct}_p${pass}.json"
  if [[ $direct -eq 0 ]]; then
    engine=psync                       # buffered I/O is synchronous anyway
    sync; echo 3 > /proc/sys/vm/drop_caches
  fi
  # randrepeat=0: new random offsets every run (a host-side cache cannot replay them);
  # norandommap: pure random offsets over the whole file, as page-cache misses are.
  fio --name=p --filename="$FILE" --size="$SIZE" --rw="$rw" --bs="$bs" \
      --direct="$direct" --ioengine="$engine" --iodepth="$qd" --numjobs="$jobs" \
      --group_reporting=1 --time_based=1 --runtime="$RUNTIME" --ramp_time="$RAMP" \
      --randrepeat=0 --norandommap=1 --invalidate=1 \
      --percentile_list=50:99 --output-format=json > "$json"
  python3 - "$json" "$bs" "$qd" "$jobs" "$direct" "$load1" "$rw" "$pass" "$utc" >> "$CSV" <<'EOF'
import json, sys
path, bs, qd, jobs, direct, load1, rw, pas, utc = sys.argv[1:]
j = json.load(open(path))
r = j["jobs"][0]["read"]          # group_reporting: one merged job
c = r["clat_ns"]
pct = c.get("percentile", {})
def p(k):
    v = pct.get(k)
    return f"{v/1e3:.1f}" if v is not None else ""
print(f'{bs},{qd},{jobs},{direct},{r["bw_bytes"]/1e9:.4f},{r["iops"]:.1f},'
      f'{c["mean"]/1e3:.1f},{p("50.000000")},{p("99.000000")},{load1},{rw},{pas},{utc}')
EOF
  tail -n1 "$CSV" >&2
}

for pass in $(seq "$FIRST" $((FIRST + PASSES - 1))); do
  for bs in $BSS; do
    for qd in $QDS; do
      run_point "$bs" "$qd" 1 1 randread "$pass"
    done
  done
  for n in $JOBS_LIST; do
    run_point "$JOBS_BS" 1 "$n" 1 randread "$pass"
  done
  if [[ $BUFFERED -eq 1 ]]; then
    run_point 1048576 1 1 0 read "$pass"
    run_point 262144 1 1 0 randread "$pass"
  fi
done
