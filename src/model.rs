//! Model presets: MoE geometry, expert widths and non-expert parameters
//! (../shared/reference/model_facts.md section 1), and the expert size for a quant.

use crate::error::{Error, Result};
use crate::quant::{quant_type, ExpertQuant, QuantType};
use crate::trace::Geometry;

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    /// Model layer number of the first MoE layer.
    pub first_moe_layer: u16,
    pub n_moe_layers: u16,
    /// Distance between MoE layers (2 for Llama 4 Maverick's interleaving).
    pub moe_layer_step: u16,
    /// The MoE layers listed, when they are read from a file (empty for the presets:
    /// first, step and count give them).
    pub layer_list: &'static [u16],
    pub n_experts: u16,
    pub top_k: u16,
    /// Whether a MoE layer also has shared experts (`ffn_*_shexp` tensors): llama.cpp's
    /// quantizer counts their tensors (see weights/ftype.rs).
    pub shared_expert: bool,
    /// Hidden size (rows of gate/up, columns of down).
    pub hidden: u32,
    /// Expert FFN width (moe_intermediate_size).
    pub expert_width: u32,
    /// Parameters read in full per token other than the routed experts, excluding the
    /// input embedding (a row gather): attention, shared experts, dense FFNs, routers,
    /// norms, output head.
    pub non_expert_params: f64,
    /// The experts' usual GGUF type when the user names none.
    pub default_quant: &'static str,
}

#[allow(clippy::too_many_arguments)]
const fn m(
    name: &'static str,
    aliases: &'static [&'static str],
    first_moe_layer: u16,
    n_moe_layers: u16,
    n_experts: u16,
    top_k: u16,
    hidden: u32,
    expert_width: u32,
    non_expert_params: f64,
) -> Model {
    Model {
        name,
        aliases,
        first_moe_layer,
        n_moe_layers,
        moe_layer_step: 1,
        layer_list: &[],
        n_experts,
        top_k,
        shared_expert: true,
        hidden,
        expert_width,
        non_expert_params,
        default_quant: "iq4_xs",
    }
}

pub const MODELS: &[Model] = &[
    m("glm-5", &[], 3, 75, 256, 8, 6144, 2048, 18.18e9),
    m(
        "glm-4.6",
        &["glm-4.5", "glm-4.7"],
        3,
        89,
        160,
        8,
        5120,
        1536,
        16.06e9,
    ),
    m(
        "deepseek-v3",
        &["deepseek-r1"],
        3,
        58,
        256,
        8,
        7168,
        2048,
        16.19e9,
    ),
    // deepseek-ai/DeepSeek-V4-Flash config.json (copied in nibor1896/Crow
    // manifests/0731-encoding/config.json; the MXFP4 GGUF's header in
    // manifests/gguf-meta-0.0.6 agrees): 43 layers, all MoE (the first 3 hash-routed),
    // 256 routed experts, top-6, one shared expert, hidden 4096, expert width 2048, vocab
    // 129,280. Non-expert parameters from the published 284B total (OpenRouter's model
    // page: "284B total parameters and 13B activated"): 284e9 less 43 x 256 x 3 x 4096
    // x 2048 routed (277.03e9) and the 0.53e9 embedding: 6.44e9. Check: the MXFP4 file's
    // 154,991,536,896 B less its 147.17e9 B of experts leaves 7.82e9 B, 1.13 B per
    // non-expert weight with the embedding (Q8_0 attention and shared expert, F16
    // hyper-connections, compressor and indexer).
    Model {
        default_quant: "mxfp4",
        ..m("deepseek-v4-flash", &[], 0, 43, 256, 6, 4096, 2048, 6.44e9)
    },
    // Derived here from the config (MLA without q_lora, 2 shared experts, dense layer 0):
    // 1.10e9 non-expert parameters, 15.71e9 in all (official 15.7B).
    m("deepseek-v2-lite", &[], 1, 26, 64, 6, 2048, 1408, 1.10e9),
    m("kimi-k2", &[], 1, 60, 384, 8, 7168, 2048, 10.55e9),
    Model {
        shared_expert: false,
        ..m("qwen3-235b-a22b", &[], 0, 94, 128, 8, 4096, 1536, 7.37e9)
    },
    Model {
        shared_expert: false,
        ..m("qwen3-30b-a3b", &[], 0, 48, 128, 8, 2048, 768, 1.23e9)
    },
    m("qwen3-next-80b-a3b", &[], 0, 48, 512, 10, 2048, 512, 2.05e9),
    // Qwen/Qwen3.5-397B-A17B config.json: 60 layers, all MoE (512 experts, top-10, one
    // shared expert of 1024 with its sigmoid gate), hidden 4096, expert width 1024,
    // vocab 248,320, untied head. Hybrid attention: every 4th layer gated full attention
    // (32 q heads with an output gate, 2 KV heads, head_dim 256, q/k norms), the other 45
    // Gated DeltaNet (16 key / 64 value heads of 128: in_proj_qkv, in_proj_z, in_proj_b,
    // in_proj_a, conv1d of 4, out_proj). Non-expert parameters, embedding excluded:
    // 15 x 104.86 M + 45 x 118.01 M attention, 0.755 B shared experts, 0.126 B routers,
    // 1.017 B head: 8.78e9 (396.3 B in all, 17.35 B active: the official "A17B";
    // at 4.5 bits 5.51 GB, Flash-MoE's 5.52 GB model_weights.bin).
    m(
        "qwen3.5-397b-a17b",
        &["qwen3.5-397b"],
        0,
        60,
        512,
        10,
        4096,
        1024,
        8.78e9,
    ),
    Model {
        default_quant: "mxfp4",
        shared_expert: false,
        ..m("gpt-oss-120b", &[], 0, 36, 128, 4, 2880, 2880, 1.55e9)
    },
    Model {
        default_quant: "mxfp4",
        shared_expert: false,
        ..m("gpt-oss-20b", &[], 0, 24, 32, 4, 2880, 2880, 1.22e9)
    },
    Model {
        shared_expert: false,
        ..m("mixtral-8x7b", &[], 0, 32, 8, 2, 4096, 14336, 1.47e9)
    },
    Model {
        shared_expert: false,
        ..m("mixtral-8x22b", &[], 0, 56, 8, 2, 6144, 16384, 5.13e9)
    },
    m("llama4-scout", &[], 0, 48, 16, 1, 5120, 8192, 10.10e9),
    Model {
        moe_layer_step: 2,
        ..m("llama4-maverick", &[], 1, 24, 128, 1, 5120, 8192, 13.13e9)
    },
    Model {
        shared_expert: false,
        ..m("olmoe-1b-7b", &[], 0, 16, 64, 8, 2048, 1024, 0.37e9)
    },
];

impl Model {
    pub fn by_name(name: &str) -> Result<&'static Model> {
        let lower = name.trim().to_ascii_lowercase();
        MODELS
            .iter()
            .find(|m| m.name == lower || m.aliases.contains(&lower.as_str()))
            .ok_or_else(|| {
                let names: Vec<&str> = MODELS.iter().map(|m| m.name).collect();
                Error::new(format!(
                    "unknown model `{name}`; presets: {} (see `moe-spill models`)",
                    names.join(", ")
                ))
            })
    }

    pub fn moe_layers(&self) -> Vec<u16> {
        if !self.layer_list.is_empty() {
            return self.layer_list.to_vec();
        }
        (0..self.n_moe_layers)
            .map(|i| self.first_moe_layer + i * self.moe_layer_step)
            .collect()
    }

    pub fn geometry(&self) -> Geometry {
        Geometry {
            layers: self.moe_layers(),
            n_experts: self.n_experts,
            top_k: self.top_k,
        }
    }

    pub fn n_routed_experts(&self) -> u64 {
        self.n_moe_layers as u64 * self.n_experts as u64
    }

    /// Whether a trace of geometry `g` (whose expert count may be only max id + 1) can
    /// come from this model.
    pub fn fits(&self, g: &Geometry, n_experts_known: bool) -> bool {
        g.top_k == self.top_k && self.same_experts(g, n_experts_known)
    }

    /// Whether `g` has this model's MoE layers and experts, whatever its top-k: a trace
    /// of this model run with another number of experts per token.
    pub fn same_experts(&self, g: &Geometry, n_experts_known: bool) -> bool {
        g.layers == self.moe_layers()
            && if n_experts_known {
                g.n_experts == self.n_experts
            } else {
                g.n_experts <= self.n_experts
            }
    }

    /// This model routing `k` experts per token instead of its own top-k (Flash-MoE's
    /// `--k 4` of Qwen3.5's 10; llama.cpp's `--override-kv ARCH.expert_used_count=int:K`):
    /// the same weights, `k` experts read per MoE layer and token. A copy that lives for
    /// the run, as the presets do.
    pub fn with_top_k(&'static self, k: u16) -> &'static Model {
        if k == self.top_k {
            return self;
        }
        Box::leak(Box::new(Model {
            top_k: k,
            ..self.clone()
        }))
    }

    /// The presets a trace's geometry matches.
    pub fn matching(g: &Geometry, n_experts_known: bool) -> Vec<&'static Model> {
        MODELS
            .iter()
            .filter(|m| m.fits(g, n_experts_known))
            .collect()
    }

    pub fn default_quant(&self) -> QuantType {
        quant_type(self.default_quant).expect("preset quant exists")
    }

    /// The quant actually used for each projection: llama.cpp's quantizer falls back to
    /// another type when a row is not a whole number of blocks (llama-quant.cpp), e.g.
    /// DeepSeek-V2-Lite's 1408-wide down rows take iq4_nl under iq4_xs.
    pub fn effective_quant(&self, q: ExpertQuant) -> ExpertQuant {
        let fit = |t: QuantType, n: u32| {
            if t.row_bytes(n as u64).is_some() {
                t
            } else {
                fallback(t)
            }
        };
        ExpertQuant {
            gate: fit(q.gate, self.hidden),
            up: fit(q.up, self.hidden),
            down: fit(q.down, self.expert_width),
        }
    }

    /// Exact bytes of one routed expert (gate + up + down) at quant `q` (after fallback).
    pub fn expert_bytes(&self, q: ExpertQuant) -> Result<u64> {
        self.effective_quant(q)
            .expert_bytes(self.hidden as u64, self.expert_width as u64)
            .map_err(|e| Error::new(format!("{}: {}", self.name, e.0)))
    }

    /// Exact bytes of an expert's gate, up and down slices at quant `q` (after fallback).
    pub fn slice_bytes(&self, q: ExpertQuant) -> Result<[u64; 3]> {
        self.effective_quant(q)
            .slice_bytes(self.hidden as u64, self.expert_width as u64)
            .map_err(|e| Error::new(format!("{}: {}", self.name, e.0)))
    }
}

/// llama.cpp's fallback for rows that are not a multiple of the block size.
fn fallback(t: QuantType) -> QuantType {
    let name = match t.name {
        "tq1_0" | "tq2_0" => "q4_0",
        "iq2_xxs" | "iq2_xs" | "iq2_s" | "iq3_xxs" | "iq3_s" | "iq1_s" | "iq1_m" | "q2_k"
        | "q3_k" | "iq4_xs" => "iq4_nl",
        "q4_k" => "q5_0",
        "q5_k" => "q5_1",
        "q6_k" => "q8_0",
        _ => return t,
    };
    quant_type(name).expect("fallback type exists")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glm5_geometry_and_sizes() {
        let g = Model::by_name("GLM-5").unwrap();
        assert_eq!(g.moe_layers().first(), Some(&3));
        assert_eq!(g.moe_layers().last(), Some(&77));
        assert_eq!(g.n_routed_experts(), 19_200);
        let q = ExpertQuant::uniform(quant_type("iq4_xs").unwrap());
        assert_eq!(g.expert_bytes(q).unwrap(), 20_054_016);
    }

    #[test]
    fn aliases_and_maverick_interleave() {
        assert_eq!(Model::by_name("glm-4.7").unwrap().name, "glm-4.6");
        assert_eq!(Model::by_name("deepseek-r1").unwrap().name, "deepseek-v3");
        let mav = Model::by_name("llama4-maverick").unwrap().moe_layers();
        assert_eq!((mav[0], mav[1], mav[23]), (1, 3, 47));
        assert!(Model::by_name("gpt-5").is_err());
    }

    #[test]
    fn every_preset_has_a_valid_default_quant_and_distinct_geometry() {
        for m in MODELS {
            let q = ExpertQuant::uniform(m.default_quant());
            assert!(m.expert_bytes(q).unwrap() > 0, "{}", m.name);
            assert_eq!(Model::matching(&m.geometry(), true), vec![m], "{}", m.name);
        }
    }

    #[test]
    fn qwen35_geometry_and_reduced_top_k() {
        let m = Model::by_name("qwen3.5-397b").unwrap();
        assert_eq!(m.name, "qwen3.5-397b-a17b");
        assert_eq!((m.moe_layers()[0], m.moe_layers()[59]), (0, 59));
        // MLX 4-bit (gs64, bf16 scale and bias: 4.5 bits) is Q4_K's 144 B per 256:
        // Flash-MoE's EXPERT_SIZE.
        let q4k = ExpertQuant::uniform(quant_type("q4_k").unwrap());
        assert_eq!(m.expert_bytes(q4k).unwrap(), 7_077_888);
        let mut g = m.geometry();
        g.top_k = 4;
        assert!(!m.fits(&g, true) && m.same_experts(&g, true));
        let k4 = m.with_top_k(4);
        assert!(k4.fits(&g, true));
        assert_eq!((k4.name, k4.n_experts), (m.name, 512));
        assert!(std::ptr::eq(m.with_top_k(10), m));
    }

    #[test]
    fn deepseek_v4_flash_mxfp4_experts_are_3264_mib_per_layer() {
        // Crow #38: "3,264 MiB per layer x 43 layers"; MXFP4 is 17 B per 32 weights.
        let m = Model::by_name("deepseek-v4-flash").unwrap();
        let q = ExpertQuant::uniform(m.default_quant());
        assert_eq!(m.expert_bytes(q).unwrap(), 3 * 4096 * 2048 * 17 / 32);
        assert_eq!(m.expert_bytes(q).unwrap() * 256, 3264 << 20);
        assert_eq!(m.moe_layers().len(), 43);
    }

    #[test]
    fn deepseek_v2_lite_down_falls_back_to_iq4_nl() {
        let m = Model::by_name("deepseek-v2-lite").unwrap();
        let q = ExpertQuant::uniform(quant_type("iq4_xs").unwrap());
        assert_eq!(m.effective_quant(q).down.name, "iq4_nl");
        // gate/up: 1408 rows of 2048 at 136 B / 256; down: 2048 rows of 1408 at 18 B / 32.
        assert_eq!(
            m.expert_bytes(q).unwrap(),
            2 * 1408 * 8 * 136 + 2048 * 44 * 18
        );
    }
}
