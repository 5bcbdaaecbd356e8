#!/usr/bin/env python3
"""Accesses per second of every moe-spill policy, side by side with libCacheSim's C loop.

For each policy and capacity this times the whole `moe-spill simulate BIG.mst --policy P
--cache-experts C --gpus 0 --format json -q` process (wall clock, best of --repeat: process
start, loading the binary trace, the replay and the report) and libCacheSim 0.3.5's
`cache.process_trace` over the same ids from an oracleGeneral file (only the C loop is
timed, best of --repeat; the file is built once with numpy). BIG.mst is the real
DeepSeek-V2-Lite recording concatenated --copies times (2 by default: 29,379,480 accesses).
`--gpus 0` keeps every layer off the GPU so that every access goes through the cache.
linux and pinned:N have no libCacheSim peer ('-'). The misses of both tools are compared
too (column "same misses"). The wall-clock columns are the measurement; the CPU-time
columns (user + sys of the moe-spill process, thread CPU time of process_trace) are there
because a busy 2-core machine inflates wall clock far more than CPU time.

Goals (the issue): >= 100 M accesses/s for lru, fifo, clock and pinned, >= 30 M/s for arc
and opt, and >= 5x libCacheSim for every policy; the "goal" column says whether each row
meets its goals (on wall clock).

How to run it, from the repo root, on an otherwise idle machine (it takes ~10 minutes on 2
cores; the load average at start and end is printed, because other builds distort it):

    python3 -m pip install -r scripts/requirements.txt
    cargo build --release
    python3 scripts/bench_policies.py                       # all policies, 10/25/50 % of ids
    python3 scripts/bench_policies.py --policies lru,opt --capacities 166 --repeat 5

Options: --trace (default ../shared/traces/deepseek-v2-lite/csv from the repo root),
--copies, --capacities (experts, or N% of the trace's distinct ids), --policies, --repeat,
--moe-spill (binary), --workdir (keeps BIG.mst and the oracleGeneral file there).
"""

import argparse
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TRACE = os.path.join(REPO, "..", "shared", "traces", "deepseek-v2-lite", "csv")
DEFAULT_BIN = os.path.join(REPO, "target", "release", "moe-spill")
ALL_POLICIES = ["lru", "fifo", "clock", "arc", "opt", "lfu", "sieve", "s3fifo", "linux", "pinned:3"]
LCS_CLASS = {"lru": "LRU", "fifo": "FIFO", "clock": "Clock", "arc": "ARC", "opt": "Belady",
             "lfu": "LFU", "sieve": "Sieve", "s3fifo": "S3FIFO"}
ORACLE_DTYPE = np.dtype([("time", "<u4"), ("obj_id", "<u8"), ("obj_size", "<u4"), ("next", "<i8")])


def min_rate(policy):
    base = policy.split(":")[0]
    if base in ("lru", "fifo", "clock", "pinned"):
        return 100e6
    if base in ("arc", "opt"):
        return 30e6
    return None


def read_mst_ids(path):
    """The decode-phase ids of a .mst file, in replay order."""
    with open(path, "rb") as f:
        buf = f.read()
    if buf[:8] != b"MSPTRACE":
        sys.exit(f"{path}: not a .mst file")
    n_layers, _n_experts, top_k, _flags = struct.unpack_from("<HHHH", buf, 12)
    (n_resp,) = struct.unpack_from("<I", buf, 20)
    (n_tokens,) = struct.unpack_from("<Q", buf, 24)
    phase_off = 40 + 2 * n_layers + 4 * n_resp
    ids_off = phase_off + (n_tokens + 7) // 8
    ids = np.frombuffer(buf, dtype="<u2", offset=ids_off).reshape(n_tokens, n_layers * top_k)
    phase = np.frombuffer(buf, dtype=np.uint8, count=(n_tokens + 7) // 8, offset=phase_off)
    prompt = np.unpackbits(phase, bitorder="little")[:n_tokens].astype(bool)
    if prompt.any():
        ids = ids[~prompt]
    return np.ascontiguousarray(ids.reshape(-1))


def write_oracle(ids, path):
    """oracleGeneral (<IQIq time, obj_id, obj_size, next_access_vtime; -1 = never)."""
    n = len(ids)
    order = np.argsort(ids, kind="stable")
    s = ids[order]
    nxt_sorted = np.full(n, -1, dtype=np.int64)
    nxt_sorted[:-1] = np.where(s[1:] == s[:-1], order[1:], -1)
    rec = np.empty(n, dtype=ORACLE_DTYPE)
    rec["next"][order] = nxt_sorted
    rec["time"] = np.arange(n, dtype=np.uint32)
    rec["obj_id"] = ids
    rec["obj_size"] = 1
    rec.tofile(path)


def run_ours(binary, mst, policy, cap, repeat):
    cmd = [binary, "simulate", mst, "--policy", policy, "--cache-experts", str(cap),
           "--gpus", "0", "--format", "json", "-q"]
    best, best_cpu, row = None, None, None
    for _ in range(repeat):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        dt = time.perf_counter() - t
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()[-400:]}")
        best = dt if best is None else min(best, dt)
        best_cpu = cpu if best_cpu is None else min(best_cpu, cpu)
        row = json.loads(p.stdout)[0]
    return best, best_cpu, row


def run_lcs(lcs, reader, policy, cap, repeat):
    best, best_cpu, misses = None, None, None
    n = reader.get_num_of_req()
    for _ in range(repeat):
        reader.reset()
        cache = getattr(lcs, LCS_CLASS[policy])(int(cap))
        c = time.thread_time()
        t = time.perf_counter()
        ratio, _ = cache.process_trace(reader)
        dt = time.perf_counter() - t
        cpu = time.thread_time() - c
        best = dt if best is None else min(best, dt)
        best_cpu = cpu if best_cpu is None else min(best_cpu, cpu)
        misses = round(ratio * n)
        del cache
    return best, best_cpu, misses


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trace", default=DEFAULT_TRACE, help="trace to concatenate (any format moe-spill reads)")
    ap.add_argument("--copies", type=int, default=2, help="times the trace is concatenated (default: 2)")
    ap.add_argument("--capacities", default="10%,25%,50%",
                    help="comma-separated, in experts or N%% of the distinct ids (default: %(default)s)")
    ap.add_argument("--policies", default=",".join(ALL_POLICIES), help="default: %(default)s")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement, best taken (default: 3)")
    ap.add_argument("--moe-spill", dest="binary", default=DEFAULT_BIN, help="moe-spill binary")
    ap.add_argument("--workdir", default=None, help="keep the big .mst and oracleGeneral file here")
    args = ap.parse_args()

    load0 = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average at start "
          f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} (1/5/15 min)", flush=True)
    binary = os.path.abspath(args.binary)
    if not os.path.exists(binary):
        if binary != DEFAULT_BIN:
            sys.exit(f"{binary}: not found")
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    import libcachesim as lcs

    own = args.workdir is None
    workdir = tempfile.mkdtemp(prefix="bench-policies-") if own else args.workdir
    os.makedirs(workdir, exist_ok=True)
    try:
        mst = os.path.join(workdir, "big.mst")
        trace = os.path.abspath(args.trace)
        subprocess.run([binary, "convert"] + [trace] * args.copies + ["-o", mst, "-q"], check=True)
        ids = read_mst_ids(mst)
        n = len(ids)
        distinct = int(np.count_nonzero(np.bincount(ids)))
        oracle = os.path.join(workdir, "big.oracleGeneral")
        write_oracle(ids, oracle)
        del ids
        print(f"trace: {args.trace} x {args.copies}: {n:,} accesses, {distinct:,} distinct ids, "
              f"{os.path.getsize(mst) / 1e6:.1f} MB .mst", flush=True)
        caps = []
        for c in args.capacities.split(","):
            c = c.strip()
            caps.append(max(1, round(distinct * float(c[:-1]) / 100)) if c.endswith("%") else int(c))
        reader = lcs.TraceReader(trace=oracle, trace_type=lcs.TraceType.ORACLE_GENERAL_TRACE)
        assert reader.get_num_of_req() == n

        print(f"\n| policy | capacity | moe-spill M acc/s (whole process) | "
              f"libCacheSim M acc/s (C loop) | ratio | goal | moe-spill M acc/s (CPU time) | "
              f"libCacheSim M acc/s (CPU time) | CPU ratio | same misses |")
        print("|---|---:|---:|---:|---:|---|---:|---:|---:|---|")
        for policy in [p.strip() for p in args.policies.split(",") if p.strip()]:
            for cap in caps:
                try:
                    t_ours, c_ours, row = run_ours(binary, mst, policy, cap, args.repeat)
                except RuntimeError as e:
                    msg = str(e).rsplit(": ", 1)[-1]
                    print(f"| {policy} | {cap} | error: {msg} |{' |' * 7}", flush=True)
                    continue
                if row["accesses"] != n:
                    sys.exit(f"{policy} {cap}: moe-spill replayed {row['accesses']} accesses, expected {n}")
                ours, ours_cpu = n / t_ours, n / c_ours
                theirs, theirs_cpu, same = None, None, "-"
                base = policy.split(":")[0]
                if base in LCS_CLASS and not (base == "s3fifo" and cap < 20):
                    t_lcs, c_lcs, misses = run_lcs(lcs, reader, base, cap, args.repeat)
                    theirs, theirs_cpu = n / t_lcs, n / c_lcs
                    same = "yes" if misses == row["misses"] else f"NO ({row['misses']} vs {misses})"
                goals = []
                if min_rate(policy) is not None:
                    goals.append(ours >= min_rate(policy))
                if theirs is not None:
                    goals.append(ours >= 5 * theirs)
                goal = "-" if not goals else ("ok" if all(goals) else "MISSED")
                line = (f"| {policy} | {cap} | {ours / 1e6:.1f} | "
                        f"{'-' if theirs is None else f'{theirs / 1e6:.1f}'} | "
                        f"{'-' if theirs is None else f'{ours / theirs:.1f}x'} | {goal} | "
                        f"{ours_cpu / 1e6:.1f} | "
                        f"{'-' if theirs is None else f'{theirs_cpu / 1e6:.1f}'} | "
                        f"{'-' if theirs is None else f'{ours_cpu / theirs_cpu:.1f}x'} | {same} |")
                print(line, flush=True)
        load1 = os.getloadavg()
        print(f"\nload average at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}; "
              f"best of {args.repeat}; moe-spill timed as a whole process, libCacheSim as "
              f"process_trace only", flush=True)
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
