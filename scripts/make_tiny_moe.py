#!/usr/bin/env python3
"""A tiny Mixture-of-Experts GGUF with random weights, for testing `moe-spill record`.

    python3 scripts/make_tiny_moe.py OUT.gguf [--reference OUT.json] [--seed N]
    python3 scripts/make_tiny_moe.py OUT.gguf --dense

The model is llama.cpp's `llama` architecture with experts (Mixtral's layout): 3
layers, every one a MoE layer of 8 experts with top-2 routing, a 32-wide residual
stream, 4 attention heads and a 259-token vocabulary (`<unk>`, `<s>`, `</s>` and the 256
byte tokens `<0x00>`..`<0xFF>` of a SentencePiece byte-fallback vocabulary, so any text
tokenizes to its UTF-8 bytes, token id = byte + 3). No BOS token is added and no space
is prefixed, so a prompt's tokens are exactly its bytes once SentencePiece has written
each space as U+2581 (the three byte tokens E2 96 81). Every weight is F32 (llama.cpp
computes with them as they are, so a reference in numpy agrees to rounding).

The first layer's attention output projection (`blk.0.attn_output.weight`) is all zeros:
attention adds exactly nothing to the residual stream there, so the first MoE layer's
router input is the token's embedding alone, RMS-normalised and scaled by
`blk.0.ffn_norm.weight`. Its routing is then a function of the token id only:

    x      = token_embd[token]
    h      = x / sqrt(mean(x^2) + eps) * ffn_norm            (eps = 1e-5)
    logits = ffn_gate_inp @ h                                 (8 router logits)
    top-2  = the two largest logits, largest first            (softmax keeps the order)

`--reference` writes that routing for every token id as JSON, computed here with numpy
from the same weights, outside llama.cpp: {"layer": 0, "n_experts": 8, "top_k": 2,
"token_offset": 3, "routing": [[e, e], ...] one per token id}. The weights are drawn
so that for every token the second and third largest logits are at least MARGIN apart,
far above float32 rounding, so llama.cpp must pick the same experts. The other layers
have ordinary random attention.

`--dense` writes the same model without experts (a plain feed-forward block per
layer): a model `record` must refuse.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import gguf

N_LAYERS = 3
N_EMBD = 32
N_HEAD = 4
N_FF = 16  # feed-forward width of one expert (and of the dense block with --dense)
N_EXPERTS = 8
TOP_K = 2
CONTEXT = 512
RMS_EPS = 1e-5
TOKEN_OFFSET = 3  # <unk>, <s>, </s> come before the byte tokens
N_VOCAB = TOKEN_OFFSET + 256
MARGIN = 1e-3


def vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    scores = [0.0] * N_VOCAB
    types = [
        gguf.TokenType.UNKNOWN,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
    ] + [gguf.TokenType.BYTE] * 256
    return tokens, scores, [int(t) for t in types]


def rms_norm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + RMS_EPS) * w


def first_layer_routing(embd: np.ndarray, ffn_norm: np.ndarray, gate: np.ndarray):
    """Top-k experts of the first MoE layer for every token id, and the smallest gap
    between the k-th and (k+1)-th router logit."""
    logits = rms_norm(embd, ffn_norm.astype(np.float64)) @ gate.astype(np.float64).T
    order = np.argsort(-logits, axis=1, kind="stable")
    top = order[:, :TOP_K]
    ranked = np.take_along_axis(logits, order, axis=1)
    margin = float(np.min(ranked[:, TOP_K - 1] - ranked[:, TOP_K]))
    return top, margin


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("output", type=Path)
    ap.add_argument("--reference", type=Path, help="write the first layer's routing (JSON)")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--dense", action="store_true", help="no experts: a dense model")
    a = ap.parse_args()

    rng = np.random.default_rng(a.seed)
    f32 = np.float32

    def normal(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(f32)

    embd = normal(N_VOCAB, N_EMBD)
    layers = []
    for il in range(N_LAYERS):
        s = 1.0 / np.sqrt(N_EMBD)
        t = {
            "attn_norm": (1.0 + normal(N_EMBD, scale=0.1)).astype(f32),
            "attn_q": normal(N_EMBD, N_EMBD, scale=s),
            "attn_k": normal(N_EMBD, N_EMBD, scale=s),
            "attn_v": normal(N_EMBD, N_EMBD, scale=s),
            # Zero in the first layer: attention contributes nothing there (see above).
            "attn_output": np.zeros((N_EMBD, N_EMBD), f32)
            if il == 0
            else normal(N_EMBD, N_EMBD, scale=s),
            "ffn_norm": (1.0 + normal(N_EMBD, scale=0.1)).astype(f32),
        }
        if a.dense:
            t["ffn_gate"] = normal(N_FF, N_EMBD, scale=s)
            t["ffn_up"] = normal(N_FF, N_EMBD, scale=s)
            t["ffn_down"] = normal(N_EMBD, N_FF, scale=1.0 / np.sqrt(N_FF))
        else:
            gate = normal(N_EXPERTS, N_EMBD)
            if il == 0:
                # Redraw until every token's choice is clear of float32 rounding.
                while first_layer_routing(embd, t["ffn_norm"], gate)[1] < MARGIN:
                    gate = normal(N_EXPERTS, N_EMBD)
            t["ffn_gate_inp"] = gate
            t["ffn_gate_exps"] = normal(N_EXPERTS, N_FF, N_EMBD, scale=s)
            t["ffn_up_exps"] = normal(N_EXPERTS, N_FF, N_EMBD, scale=s)
            t["ffn_down_exps"] = normal(N_EXPERTS, N_EMBD, N_FF, scale=1.0 / np.sqrt(N_FF))
        layers.append(t)

    w = gguf.GGUFWriter(str(a.output), "llama")
    w.add_name("tiny-moe" if not a.dense else "tiny-dense")
    w.add_block_count(N_LAYERS)
    w.add_context_length(CONTEXT)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    if not a.dense:
        w.add_expert_count(N_EXPERTS)
        w.add_expert_used_count(TOP_K)
    tokens, scores, types = vocab()
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.add_add_space_prefix(False)

    w.add_tensor("token_embd.weight", embd)
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, f32))
    w.add_tensor("output.weight", normal(N_VOCAB, N_EMBD, scale=1.0 / np.sqrt(N_EMBD)))
    for il, t in enumerate(layers):
        for name, arr in t.items():
            w.add_tensor(f"blk.{il}.{name}.weight", arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    if a.reference:
        if a.dense:
            print("--reference needs a MoE model (not --dense)", file=sys.stderr)
            return 2
        top, margin = first_layer_routing(embd, layers[0]["ffn_norm"], layers[0]["ffn_gate_inp"])
        a.reference.write_text(
            json.dumps(
                {
                    "layer": 0,
                    "n_experts": N_EXPERTS,
                    "top_k": TOP_K,
                    "token_offset": TOKEN_OFFSET,
                    "margin": margin,
                    "routing": top.tolist(),
                }
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
