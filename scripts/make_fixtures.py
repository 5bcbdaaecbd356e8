#!/usr/bin/env python3
"""Write the small forum-format fixtures under traces/ (deterministic, seeded).

traces/sample/  three responses with prompt blocks: a layer-major batch (as llama.cpp
                prints a batched prompt) at the start of response 1, a token-major block
                and a two-micro-batch layer-major block (a second turn) in response 2;
traces/golden/  the same responses with the prompt blocks removed, which is what the
                seed's analyze_experts.py accepts, plus seed_output.expected: that script's
                output on traces/golden (refresh with scripts/refresh_golden.sh).

Geometry: MoE layers 1..4, 32 experts, top-4 (no preset has it: a neutral toy model).
Routing: per-layer Zipf popularity over a per-response permutation (topic affinity) with
slow drift, so chunks differ and the thresholds are non-trivial.
"""
import os
import random
import sys

LAYERS = [1, 2, 3, 4]
N_EXPERTS = 32
TOP_K = 4
# (decode tokens, prompt layout) per response
RESPONSES = [
    (300, [("layer-major", 0, [7])]),
    (420, [("token-major", 0, 5), ("layer-major", 200, [3, 4])]),
    (90, []),
]


def route(rng, perm, skew):
    weights = [1.0 / (r + 1) ** skew for r in range(N_EXPERTS)]
    chosen = []
    while len(chosen) < TOP_K:
        e = rng.choices(perm, weights)[0]
        if e not in chosen:
            chosen.append(e)
    return chosen


def token(rng, perms, t):
    # drift: every 40 tokens, swap two experts of each layer's popularity order
    if t % 40 == 39:
        for p in perms:
            i, j = rng.randrange(N_EXPERTS), rng.randrange(N_EXPERTS)
            p[i], p[j] = p[j], p[i]
    return [route(rng, perms[s], 1.0 + 0.4 * s) for s in range(len(LAYERS))]


def token_lines(tok):
    return [f"layer {LAYERS[s]} expert {e}" for s, es in enumerate(tok) for e in es]


def batch_lines(toks):
    # llama.cpp evaluates a batch layer by layer: all tokens' experts of one layer first
    return [f"layer {LAYERS[s]} expert {e}" for s in range(len(LAYERS)) for tok in toks for e in tok[s]]


def main(root):
    rng = random.Random(20261128)
    os.makedirs(f"{root}/sample", exist_ok=True)
    os.makedirs(f"{root}/golden", exist_ok=True)
    for r, (n_decode, prompts) in enumerate(RESPONSES, start=1):
        perms = [rng.sample(range(N_EXPERTS), N_EXPERTS) for _ in LAYERS]
        at = {pos: (kind, arg) for kind, pos, arg in prompts}
        sample, golden = [], []
        for t in range(n_decode + 1):
            if t in at:
                kind, arg = at[t]
                sample.append("---began prompt processing---")
                if kind == "token-major":
                    for _ in range(arg):
                        sample += token_lines(token(rng, perms, t)) + ["---token---"]
                else:
                    for ubatch in arg:
                        sample += batch_lines([token(rng, perms, t) for _ in range(ubatch)])
                sample.append("---ended prompt processing---")
            if t == n_decode:
                break
            lines = token_lines(token(rng, perms, t)) + ["---token---"]
            sample += lines
            golden += lines
        for d, lines in (("sample", sample), ("golden", golden)):
            with open(f"{root}/{d}/single_response_{r:03d}.txt", "w") as f:
                f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "traces"))
