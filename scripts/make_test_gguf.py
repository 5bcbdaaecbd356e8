#!/usr/bin/env python3
"""Tiny GGUF model files for the tests of `--gguf`, written with the `gguf` package
(llama.cpp's gguf-py; scripts/requirements.txt):

    python3 scripts/make_test_gguf.py OUT_DIR

One geometry, `deepseek2` metadata keys: 4 blocks, block 0 dense, blocks 1..3 MoE with
8 experts (top-2) of n_embd = n_ff = 256, shared experts, token embedding and output
head. The weights are random bytes: only the header, the tensor table and the sizes
matter to moe-spill. Files:

- uniform.gguf         every expert tensor IQ4_XS
- mixed.gguf           per-layer and per-projection types (a dynamic quant)
- split-0000N-of-00002.gguf   mixed.gguf's tensors in two parts (gguf-split naming)
- fused.gguf           gate and up in one ffn_gate_up_exps tensor per layer
- mtp.gguf             uniform plus a fifth, MTP block (nextn_predict_layers = 1)
- dense.gguf           no expert tensors
"""

import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

ARCH = "deepseek2"
N_EMBD = 256
N_FF = 256
N_EXPERT = 8
TOP_K = 2
N_VOCAB = 32
BLOCKS = 4

RNG = np.random.default_rng(17)


def raw(ggml_dims, qtype):
    """Random bytes for a tensor of ggml shape `ggml_dims` (ne0 first) and type `qtype`,
    as the uint8 array (numpy order, last axis in bytes) the writer takes."""
    elems, size = gguf.GGML_QUANT_SIZES[qtype]
    ne0 = ggml_dims[0]
    assert ne0 % elems == 0, (ggml_dims, qtype)
    shape = list(reversed(ggml_dims[1:])) + [ne0 // elems * size]
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


def add(w, name, ggml_dims, qtype):
    data = raw(ggml_dims, qtype)
    w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)


def model(path, expert_types, *, dense=False, fused=False, mtp=False, split_max_tensors=0):
    """expert_types: per MoE block, (gate, up, down) types (gate is gate_up when fused)."""
    blocks = BLOCKS + (1 if mtp else 0)
    w = gguf.GGUFWriter(path, ARCH, split_max_tensors=split_max_tensors)
    w.add_name(Path(path).stem)
    w.add_block_count(blocks)
    w.add_context_length(4096)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(2 * N_FF)
    w.add_head_count(2)
    if not dense:
        w.add_leading_dense_block_count(1)
        w.add_expert_count(N_EXPERT)
        w.add_expert_used_count(TOP_K)
        w.add_expert_feed_forward_length(N_FF)
        w.add_expert_shared_count(1)
    if mtp:
        w.add_uint32(f"{ARCH}.nextn_predict_layers", 1)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    add(w, "token_embd.weight", [N_EMBD, N_VOCAB], T.Q8_0)
    add(w, "output_norm.weight", [N_EMBD], T.F32)
    add(w, "output.weight", [N_EMBD, N_VOCAB], T.Q8_0)
    for b in range(blocks):
        add(w, f"blk.{b}.attn_norm.weight", [N_EMBD], T.F32)
        add(w, f"blk.{b}.attn_q.weight", [N_EMBD, N_EMBD], T.Q8_0)
        add(w, f"blk.{b}.attn_output.weight", [N_EMBD, N_EMBD], T.Q8_0)
        add(w, f"blk.{b}.ffn_norm.weight", [N_EMBD], T.F32)
        if dense or b == 0:
            add(w, f"blk.{b}.ffn_gate.weight", [N_EMBD, 2 * N_FF], T.Q8_0)
            add(w, f"blk.{b}.ffn_up.weight", [N_EMBD, 2 * N_FF], T.Q8_0)
            add(w, f"blk.{b}.ffn_down.weight", [2 * N_FF, N_EMBD], T.Q8_0)
            continue
        gate, up, down = expert_types[min(b, BLOCKS - 1) - 1]
        add(w, f"blk.{b}.ffn_gate_inp.weight", [N_EMBD, N_EXPERT], T.F32)
        if fused:
            add(w, f"blk.{b}.ffn_gate_up_exps.weight", [N_EMBD, 2 * N_FF, N_EXPERT], gate)
        else:
            add(w, f"blk.{b}.ffn_gate_exps.weight", [N_EMBD, N_FF, N_EXPERT], gate)
            add(w, f"blk.{b}.ffn_up_exps.weight", [N_EMBD, N_FF, N_EXPERT], up)
        add(w, f"blk.{b}.ffn_down_exps.weight", [N_FF, N_EMBD, N_EXPERT], down)
        add(w, f"blk.{b}.ffn_gate_shexp.weight", [N_EMBD, N_FF], T.Q8_0)
        add(w, f"blk.{b}.ffn_up_shexp.weight", [N_EMBD, N_FF], T.Q8_0)
        add(w, f"blk.{b}.ffn_down_shexp.weight", [N_FF, N_EMBD], T.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


UNIFORM = [(T.IQ4_XS,) * 3] * 3
MIXED = [
    (T.IQ2_XXS, T.IQ2_XXS, T.Q4_K),
    (T.IQ3_S, T.IQ3_S, T.IQ4_XS),
    (T.Q2_K, T.Q3_K, T.Q6_K),
]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_test_gguf.py OUT_DIR")
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    model(out / "uniform.gguf", UNIFORM)
    model(out / "mixed.gguf", MIXED)
    # Split after the tensors of the first blocks: part 2 holds MoE blocks' experts too.
    model(out / "split.gguf", MIXED, split_max_tensors=25)
    model(out / "fused.gguf", [(T.Q4_K, None, T.Q6_K)] * 3, fused=True)
    model(out / "mtp.gguf", UNIFORM, mtp=True)
    model(out / "dense.gguf", [], dense=True)


if __name__ == "__main__":
    main()
