#!/usr/bin/env python3
"""Cross-check moe-spill's eviction policies against libCacheSim, miss count for miss count.

The trace's expert ids are replayed in the simulator's order (a .mst file's id block, prompt
tokens dropped as `simulate --phase decode` does) through libCacheSim's C loop
(`cache.process_trace` on an oracleGeneral file, which also carries the next-access times
Belady needs) and compared exactly with `moe-spill simulate --format json --gpus 0` (no GPU
layers: every access goes through the one global cache). Any difference fails the run.

Run from anywhere (scripts/test.sh runs it after `cargo test`):

    python3 -m pip install -r scripts/requirements.txt
    python3 scripts/crosscheck_libcachesim.py                 # real DeepSeek-V2-Lite data
    python3 scripts/crosscheck_libcachesim.py --trace T.mst --capacities 20,100 --policies lru,opt

Default trace: ../shared/traces/deepseek-v2-lite/csv relative to the repo root (converted to
.mst with `moe-spill convert`). The release binary is built with `cargo build --release` when
the default one is missing. The last line is `crosscheck: N passed, M failed`; the exit status
is 1 when M > 0.
"""

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TRACE = os.path.join(REPO, "..", "shared", "traces", "deepseek-v2-lite", "csv")
# Where cargo builds it: CARGO_TARGET_DIR when set (relative to the repository, as cargo
# run there reads it), else target/.
DEFAULT_BIN = os.path.join(
    REPO, os.environ.get("CARGO_TARGET_DIR", "target"), "release", "moe-spill")
ALL_POLICIES = ["lru", "fifo", "clock", "arc", "opt", "sieve", "lfu", "s3fifo"]
# moe-spill policy name -> libcachesim class name
LCS_CLASS = {
    "lru": "LRU",
    "fifo": "FIFO",
    "clock": "Clock",
    "arc": "ARC",
    "opt": "Belady",
    "sieve": "Sieve",
    "lfu": "LFU",
    "s3fifo": "S3FIFO",
}
# libcachesim's S3FIFO aborts the process below 10 objects and admits nothing below 20
# (moe-spill deliberately differs there), so it is only compared from 20 up.
S3FIFO_MIN = 20
ORACLE_DTYPE = np.dtype([("time", "<u4"), ("obj_id", "<u8"), ("obj_size", "<u4"), ("next", "<i8")])
assert ORACLE_DTYPE.itemsize == 24


def read_mst(path):
    """The ids of a .mst file in replay order, prompt tokens dropped (decode phase)."""
    with open(path, "rb") as f:
        buf = f.read()
    if buf[:8] != b"MSPTRACE":
        sys.exit(f"{path}: not a .mst file")
    (version,) = struct.unpack_from("<I", buf, 8)
    if version != 1:
        sys.exit(f"{path}: .mst version {version}, expected 1")
    n_layers, n_experts, top_k, _flags = struct.unpack_from("<HHHH", buf, 12)
    (n_resp,) = struct.unpack_from("<I", buf, 20)
    (n_tokens,) = struct.unpack_from("<Q", buf, 24)
    phase_off = 40 + 2 * n_layers + 4 * n_resp
    ids_off = phase_off + (n_tokens + 7) // 8
    per_token = n_layers * top_k
    expected = ids_off + 2 * n_tokens * per_token
    if len(buf) != expected:
        sys.exit(f"{path}: {len(buf)} bytes, header says {expected}")
    ids = np.frombuffer(buf, dtype="<u2", offset=ids_off).reshape(n_tokens, per_token)
    phase = np.frombuffer(buf, dtype=np.uint8, count=(n_tokens + 7) // 8, offset=phase_off)
    prompt = np.unpackbits(phase, bitorder="little")[:n_tokens].astype(bool)
    if prompt.any():
        ids = ids[~prompt]
    return np.ascontiguousarray(ids.reshape(-1)), n_layers * n_experts


def next_access(ids):
    """next[i] = index of the next access of ids[i], -1 if none (vectorised, via a stable sort)."""
    n = len(ids)
    order = np.argsort(ids, kind="stable")  # radix sort for u16; equal ids keep time order
    s = ids[order]
    nxt_sorted = np.full(n, -1, dtype=np.int64)
    if n > 1:
        nxt_sorted[:-1] = np.where(s[1:] == s[:-1], order[1:], -1)
    nxt = np.empty(n, dtype=np.int64)
    nxt[order] = nxt_sorted
    return nxt


def write_oracle(ids, path):
    """libCacheSim oracleGeneral file: <IQIq time, obj_id, obj_size, next_access_vtime."""
    n = len(ids)
    rec = np.empty(n, dtype=ORACLE_DTYPE)
    rec["time"] = np.arange(n, dtype=np.uint32)
    rec["obj_id"] = ids
    rec["obj_size"] = 1
    rec["next"] = next_access(ids)
    rec.tofile(path)


# ---- libcachesim side (runs in worker processes) -------------------------------------------
_READER = None


def _lcs_init(path):
    global _READER
    import libcachesim as lcs

    _READER = lcs.TraceReader(trace=path, trace_type=lcs.TraceType.ORACLE_GENERAL_TRACE)


def lcs_misses(policy, cap):
    import libcachesim as lcs

    _READER.reset()
    cache = getattr(lcs, LCS_CLASS[policy])(int(cap))
    ratio, _ = cache.process_trace(_READER)
    n = _READER.get_num_of_req()
    return round(ratio * n), n


# ---- moe-spill side ---------------------------------------------------------------------------
def ours(binary, mst, policy, cap):
    cmd = [binary, "simulate", mst, "--policy", policy, "--cache-experts", str(cap),
           "--gpus", "0", "--format", "json", "-q"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()[-500:]}")
    rows = json.loads(p.stdout)
    if len(rows) != 1:
        raise RuntimeError(f"{' '.join(cmd)}: {len(rows)} rows, expected 1")
    return rows[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trace", default=DEFAULT_TRACE,
                    help="a .mst file, or any trace moe-spill reads (converted to .mst first); "
                         "default: ../shared/traces/deepseek-v2-lite/csv from the repo root")
    ap.add_argument("--capacities", default="20,160,256,832,1400",
                    help="comma-separated cache sizes in experts (default: %(default)s)")
    ap.add_argument("--policies", default=",".join(ALL_POLICIES),
                    help="comma-separated, from %s (default: all)" % ",".join(ALL_POLICIES))
    ap.add_argument("--moe-spill", dest="binary", default=DEFAULT_BIN,
                    help="moe-spill binary (default: release/moe-spill under $CARGO_TARGET_DIR, else target; built if missing)")
    ap.add_argument("--workdir", default=None,
                    help="where the .mst and oracleGeneral files go (default: a temp dir, removed)")
    ap.add_argument("--jobs", type=int, default=max(1, min(2, os.cpu_count() or 1)),
                    help="libcachesim worker processes (default: %(default)s)")
    args = ap.parse_args()

    t0 = time.time()
    caps = [int(c) for c in args.capacities.split(",") if c.strip()]
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    for p in policies:
        if p not in LCS_CLASS:
            sys.exit(f"unknown policy {p!r}: expected one of {','.join(ALL_POLICIES)}")
    if any(c < 1 for c in caps):
        sys.exit("capacities must be >= 1")

    binary = os.path.abspath(args.binary)
    if not os.path.exists(binary):
        if os.path.abspath(args.binary) != DEFAULT_BIN:
            sys.exit(f"{binary}: not found")
        print("building the release binary (cargo build --release)", flush=True)
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)

    passed = failed = 0
    own_workdir = args.workdir is None
    workdir = tempfile.mkdtemp(prefix="crosscheck-") if own_workdir else args.workdir
    os.makedirs(workdir, exist_ok=True)
    try:
        trace = os.path.abspath(args.trace)
        if not os.path.exists(trace):
            sys.exit(f"trace not found: {trace}")
        if os.path.isfile(trace) and open(trace, "rb").read(8) == b"MSPTRACE":
            mst = trace
        else:
            mst = os.path.join(workdir, "trace.mst")
            subprocess.run([binary, "convert", trace, "-o", mst, "-q"], check=True)
        ids, id_space = read_mst(mst)
        n = len(ids)
        distinct = int(np.count_nonzero(np.bincount(ids, minlength=id_space)))
        oracle = os.path.join(workdir, "trace.oracleGeneral")
        write_oracle(ids, oracle)
        print(f"trace: {args.trace}: {n:,} accesses, {distinct:,} distinct ids "
              f"(prepared in {time.time() - t0:.1f} s)", flush=True)

        jobs, skipped = [], []
        for p in policies:
            for c in caps:
                if p == "s3fifo" and c < S3FIFO_MIN:
                    skipped.append((p, c))
                else:
                    jobs.append((p, c))
        # Longest libcachesim runs first so the workers finish together.
        cost = {"opt": 0, "arc": 1, "lfu": 2, "s3fifo": 3}
        lcs_order = sorted(jobs, key=lambda j: (cost.get(j[0], 9), -j[1]))

        # spawn, not fork: forking while the moe-spill thread runs a subprocess can deadlock.
        with cf.ProcessPoolExecutor(max_workers=args.jobs, initializer=_lcs_init,
                                    initargs=(oracle,), mp_context=mp.get_context("spawn")) as lpool, \
                cf.ThreadPoolExecutor(max_workers=1) as opool:
            ofut = {j: opool.submit(ours, binary, mst, *j) for j in jobs}
            lfut = {j: lpool.submit(lcs_misses, *j) for j in lcs_order}
            results = []
            for j in jobs:
                err, o, t = [], None, None
                try:
                    o = ofut[j].result()
                except Exception as e:  # noqa: BLE001 - reported as a failure
                    err.append(f"moe-spill: {e}")
                try:
                    t, tn = lfut[j].result()
                    if tn != n:
                        err.append(f"libcachesim read {tn} requests, expected {n}")
                except Exception as e:  # noqa: BLE001
                    err.append(f"libcachesim: {type(e).__name__}: {e}")
                if o is not None:
                    if o["accesses"] != n:
                        err.append(f"moe-spill replayed {o['accesses']} accesses, expected {n}")
                    if o["hits"] + o["misses"] != o["accesses"]:
                        err.append("moe-spill hits + misses != accesses")
                    if o["cold_misses"] != distinct:
                        err.append(f"moe-spill cold_misses {o['cold_misses']} != {distinct} distinct ids")
                results.append((j, o, t, err))

        print()
        print(f"| policy | capacity | moe-spill misses | libCacheSim misses | result |")
        print(f"|---|---:|---:|---:|---|")
        diffs = []
        for (p, c), o, t, err in results:
            om = o["misses"] if o is not None else None
            ok = not err and om == t
            if om is not None and t is not None and om != t:
                err.insert(0, f"misses differ by {om - t:+d}")
            passed += ok
            failed += not ok
            print(f"| {p} | {c} | {om if om is not None else 'error'} | "
                  f"{t if t is not None else 'error'} | {'ok' if ok else 'FAIL'} |")
            if not ok:
                diffs.append(f"DIFF policy={p} capacity={c} ours={om} theirs={t}: {'; '.join(err)}")
        for p, c in skipped:
            print(f"| {p} | {c} | - | - | skipped (libCacheSim S3FIFO needs >= {S3FIFO_MIN}) |")
        print()
        for d in diffs:
            print(d)
        print(f"elapsed: {time.time() - t0:.1f} s")
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"crosscheck: {passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
