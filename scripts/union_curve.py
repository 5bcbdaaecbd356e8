#!/usr/bin/env python3
"""How a prompt's union of experts per layer per ubatch grows with the ubatch size N.

Every run of tokens (the prompt runs of each response, or each whole response) is cut into
ubatches of N consecutive tokens from its start, the last one left out when shorter than N;
in every ubatch the distinct experts of each MoE layer are counted, and the mean over
ubatches and layers is printed for N = 1, 2, 4, ..., 512. At N = 1 it is top-k, and it
can reach the experts per layer. This is what `--ubatch N` makes the cache see per layer
(docs/batches.md) and what analyze::union_curve computes in the Rust tests.

    python3 scripts/union_curve.py ../shared/traces/deepseek-v2-lite/csv
    python3 scripts/union_curve.py synth.mst --runs prompt --format csv

TRACE is anything moe-spill reads (converted to .mst with `moe-spill convert` unless it is
one; --model is passed on for forum text of prompt tokens only). --runs auto (default)
takes the prompt runs when the trace tags prompt tokens and whole responses otherwise
(the MoE-Beyond CSV of the DeepSeek-V2-Lite recording is a prefill read as decode tokens).
The release binary is built with `cargo build --release` when it is missing.
"""

import argparse
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(REPO, "target", "release", "moe-spill")
SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
# Ids gathered per numpy step, to bound memory on long traces.
CHUNK_IDS = 1 << 23


def read_mst(path):
    """(ids as tokens x layers x top-k, n_experts, response lengths, prompt flags)."""
    with open(path, "rb") as f:
        buf = f.read()
    if buf[:8] != b"MSPTRACE":
        sys.exit(f"{path}: not a .mst file")
    n_layers, n_experts, top_k, _flags = struct.unpack_from("<HHHH", buf, 12)
    (n_resp,) = struct.unpack_from("<I", buf, 20)
    (n_tokens,) = struct.unpack_from("<Q", buf, 24)
    lens_off = 40 + 2 * n_layers
    lens = np.frombuffer(buf, dtype="<u4", count=n_resp, offset=lens_off).astype(np.int64)
    phase_off = lens_off + 4 * n_resp
    ids_off = phase_off + (n_tokens + 7) // 8
    phase = np.frombuffer(buf, dtype=np.uint8, count=(n_tokens + 7) // 8, offset=phase_off)
    prompt = np.unpackbits(phase, bitorder="little")[:n_tokens].astype(bool)
    ids = np.frombuffer(buf, dtype="<u2", offset=ids_off).reshape(n_tokens, n_layers, top_k)
    return ids, n_experts, lens, prompt


def runs_of(lens, prompt, which):
    """(start, end) token ranges: each response, or each run of prompt tokens in one."""
    starts = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    spans = []
    for r in range(len(lens)):
        a, b = int(starts[r]), int(starts[r + 1])
        if which == "responses":
            spans.append((a, b))
            continue
        t = a
        while t < b:
            if not prompt[t]:
                t += 1
                continue
            e = t
            while e < b and prompt[e]:
                e += 1
            spans.append((t, e))
            t = e
    return spans


def curve(ids, spans, sizes):
    """[(N, ubatches, mean distinct experts per layer per ubatch)]."""
    n_tokens, n_layers, top_k = ids.shape
    out = []
    for n in sizes:
        firsts = [np.arange(a, b - n + 1, n, dtype=np.int64) for a, b in spans if b - a >= n]
        firsts = np.concatenate(firsts) if firsts else np.zeros(0, dtype=np.int64)
        distinct = 0
        step = max(1, CHUNK_IDS // (n * n_layers * top_k))
        for i in range(0, len(firsts), step):
            f = firsts[i : i + step]
            block = ids[f[:, None] + np.arange(n)]  # ubatches x N x layers x k
            block = np.sort(block.transpose(0, 2, 1, 3).reshape(len(f), n_layers, n * top_k), axis=-1)
            distinct += int(len(f) * n_layers + (np.diff(block, axis=-1) != 0).sum())
        mean = distinct / (len(firsts) * n_layers) if len(firsts) else float("nan")
        out.append((n, len(firsts), mean))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--runs", choices=["auto", "prompt", "responses"], default="auto")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="ubatch sizes, comma-separated")
    ap.add_argument("--model", help="model preset, passed to moe-spill convert")
    ap.add_argument("--format", choices=["table", "csv"], default="table")
    ap.add_argument("--bin", default=DEFAULT_BIN, help="the moe-spill binary")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    if any(s < 1 for s in sizes):
        sys.exit("--sizes: every size is at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        path = a.trace
        if not (os.path.isfile(path) and path.lower().endswith(".mst")):
            if not os.path.exists(a.bin):
                subprocess.run(["cargo", "build", "--release"], cwd=REPO, check=True)
            mst = os.path.join(tmp, "t.mst")
            cmd = [a.bin, "convert", path, "-q", "-o", mst]
            if a.model:
                cmd += ["--model", a.model]
            subprocess.run(cmd, check=True)
            path = mst
        ids, n_experts, lens, prompt = read_mst(path)
    which = a.runs
    if which == "auto":
        which = "prompt" if prompt.any() else "responses"
    spans = runs_of(lens, prompt, which)
    rows = curve(ids, spans, sizes)
    n_tokens = sum(b - a for a, b in spans)
    if a.format == "csv":
        print("ubatch,ubatches,union_per_layer,share_of_experts")
        for n, u, m in rows:
            print(f"{n},{u},{m:.4f},{m / n_experts:.4f}")
        return
    print(
        f"{len(spans)} runs ({which}), {n_tokens} tokens; {ids.shape[1]} MoE layers x "
        f"{n_experts} experts, top-{ids.shape[2]}"
    )
    print(f"{'N':>5}  {'ubatches':>8}  {'union/layer':>11}  {'share':>6}")
    for n, u, m in rows:
        print(f"{n:>5}  {u:>8}  {m:>11.3f}  {m / n_experts:>6.3f}")


if __name__ == "__main__":
    main()
