//! llama.cpp's file types (`llama-quantize`'s Q4_K_M, Q2_K, IQ2_XXS ...) as the types its
//! quantizer gives a preset's expert tensors, layer by layer. The rules are those of
//! ggml-org/llama.cpp `src/llama-quant.cpp`: `llama_ftype_get_default_type` for the
//! default type of a file type, and `llama_tensor_get_type_impl` (called by
//! `llama_tensor_get_type`) for the exceptions that apply to `ffn_gate_exps`,
//! `ffn_up_exps` and `ffn_down_exps` (categories FFN_GATE, FFN_UP, FFN_DOWN); then
//! `Model::effective_quant` applies the fallback for rows that are not whole blocks.
//!
//! Assumptions where the rules depend on what a preset does not say: the quantization
//! used an importance matrix (llama-quantize requires one for the IQ1, IQ2 and IQ3_XXS
//! types, and published quants use one), the architecture is not Falcon, and `n_layer`
//! is the model's main block count (last MoE layer + 1; MTP blocks left out).

use crate::model::Model;
use crate::quant::{quant_type, ExpertQuant, QuantType};

/// The file types whose expert tensors this module knows, with their default type.
pub const FILE_TYPES: &[(&str, &str)] = &[
    ("Q4_0", "q4_0"),
    ("Q4_1", "q4_1"),
    ("Q5_0", "q5_0"),
    ("Q5_1", "q5_1"),
    ("Q8_0", "q8_0"),
    ("F16", "f16"),
    ("BF16", "bf16"),
    ("Q2_K", "q2_k"),
    ("Q2_K_S", "q2_k"),
    ("Q3_K_S", "q3_k"),
    ("Q3_K_M", "q3_k"),
    ("Q3_K_L", "q3_k"),
    ("Q4_K_S", "q4_k"),
    ("Q4_K_M", "q4_k"),
    ("Q5_K_S", "q5_k"),
    ("Q5_K_M", "q5_k"),
    ("Q6_K", "q6_k"),
    ("IQ1_S", "iq1_s"),
    ("IQ1_M", "iq1_m"),
    ("IQ2_XXS", "iq2_xxs"),
    ("IQ2_XS", "iq2_xs"),
    ("IQ2_S", "iq2_xs"),
    ("IQ2_M", "iq2_s"),
    ("IQ3_XXS", "iq3_xxs"),
    ("IQ3_XS", "iq3_s"),
    ("IQ3_S", "iq3_s"),
    ("IQ3_M", "iq3_s"),
    ("IQ4_NL", "iq4_nl"),
    ("IQ4_XS", "iq4_xs"),
    ("TQ1_0", "tq1_0"),
    ("TQ2_0", "tq2_0"),
    ("MXFP4_MOE", "mxfp4"),
];

/// A file type by its llama-quantize name, written in capitals as llama.cpp writes
/// them (lower-case names are ggml tensor types: `q2_k` is every expert tensor Q2_K).
pub fn file_type(name: &str) -> Option<&'static str> {
    let name = name.trim();
    if name.bytes().any(|b| b.is_ascii_lowercase()) {
        return None;
    }
    FILE_TYPES.iter().find(|(n, _)| *n == name).map(|(n, _)| *n)
}

/// llama-quant.cpp's `use_more_bits`: the first and last eighth of the layers and every
/// third one between.
fn use_more_bits(i: i64, n: i64) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

fn t(name: &str) -> QuantType {
    quant_type(name).expect("listed type")
}

/// The quantizer's types for every MoE layer's experts of `model` under file type
/// `ftype` (a name of [`FILE_TYPES`]), before the row fallback.
pub fn expert_quants(model: &Model, ftype: &str) -> Vec<ExpertQuant> {
    let default = t(FILE_TYPES
        .iter()
        .find(|(n, _)| *n == ftype)
        .expect("a listed file type")
        .1);
    let layers = model.moe_layers();
    let n = layers.last().map_or(0, |&l| l as i64 + 1);
    // The IQ1/IQ2 rule counts ffn_down tensors in the loader's order (by block, then by
    // name): a dense block has ffn_down, a MoE block ffn_down_exps, then ffn_down_shexp
    // when it has a shared expert.
    let mut down_index = Vec::with_capacity(layers.len());
    let mut c = 0i64;
    for b in 0..n {
        if layers.contains(&(b as u16)) {
            down_index.push(c);
            c += 1 + model.shared_expert as i64;
        } else {
            c += 1;
        }
    }
    let quantized = !matches!(ftype, "F16" | "BF16");
    layers
        .iter()
        .zip(down_index)
        .map(|(&layer, c)| {
            let i = layer as i64;
            let (mut gate, mut up, mut down) = (default, default, default);
            if !quantized {
                return ExpertQuant { gate, up, down };
            }
            match ftype {
                "MXFP4_MOE" => {}
                "IQ2_XXS" | "IQ2_XS" | "IQ1_S" | "IQ2_S" | "IQ2_M" | "IQ1_M" => {
                    if c < n / 8 {
                        down = t(if matches!(ftype, "IQ2_S" | "IQ2_M") {
                            "iq3_s"
                        } else {
                            "q2_k"
                        });
                    }
                }
                _ => {
                    down = match ftype {
                        "Q2_K" => t("q3_k"),
                        "Q2_K_S" if i < n / 8 => t("q4_k"),
                        "Q3_K_M" if i < n / 16 => t("q5_k"),
                        "Q3_K_M" => t("q4_k"),
                        "IQ3_M" if i < n / 8 || (model.n_experts == 8 && use_more_bits(i, n)) => {
                            t("q4_k")
                        }
                        "Q3_K_L" => t("q5_k"),
                        "Q4_K_M" | "Q5_K_M" if use_more_bits(i, n) => t("q6_k"),
                        "Q4_K_S" if i < n / 8 => t("q5_k"),
                        "Q4_0" if i < n / 8 => t("q4_1"),
                        "Q5_0" if i < n / 8 => t("q5_1"),
                        _ => down,
                    };
                    if ftype == "IQ3_XS" && i >= n / 8 && i < 7 * n / 8 {
                        gate = t("iq3_xxs");
                        up = gate;
                    }
                }
            }
            ExpertQuant { gate, up, down }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn downs(model: &str, ftype: &str) -> Vec<&'static str> {
        let m = Model::by_name(model).unwrap();
        expert_quants(m, ftype)
            .iter()
            .map(|q| q.down.name)
            .collect()
    }

    #[test]
    fn names_in_capitals_are_file_types() {
        assert_eq!(file_type("Q4_K_M"), Some("Q4_K_M"));
        assert_eq!(file_type("IQ2_XXS"), Some("IQ2_XXS"));
        assert_eq!(file_type("q4_k_m"), None);
        assert_eq!(file_type("Q9_K"), None);
        for (_, ty) in FILE_TYPES {
            t(ty);
        }
    }

    #[test]
    fn glm5_down_projections_follow_llama_quant() {
        // GLM-5: blocks 0..77, MoE 3..77, n = 78, n/8 = 9, 7n/8 = 68, one shared expert.
        let q4km = downs("glm-5", "Q4_K_M");
        let more: Vec<usize> = (3..78).filter(|&i| use_more_bits(i as i64, 78)).collect();
        for (k, &d) in q4km.iter().enumerate() {
            let i = k + 3;
            assert_eq!(
                d,
                if more.contains(&i) { "q6_k" } else { "q4_k" },
                "blk.{i}"
            );
        }
        assert_eq!(&q4km[5..8], ["q6_k", "q4_k", "q4_k"].as_slice()); // blk.8, 9, 10
                                                                      // IQ1_M: ffn_down tensors 0..8 by the loader's count: blk.0-2 dense (0, 1, 2),
                                                                      // blk.3 exps 3 + shexp 4, blk.4 5 + 6, blk.5 7 + 8: layers 3, 4, 5 get Q2_K.
        let iq1m = downs("glm-5", "IQ1_M");
        assert_eq!(&iq1m[..4], ["q2_k", "q2_k", "q2_k", "iq1_m"].as_slice());
        assert!(iq1m[3..].iter().all(|&d| d == "iq1_m"));
        // Q2_K: every down Q3_K, gate/up Q2_K.
        let m = Model::by_name("glm-5").unwrap();
        let q2k = expert_quants(m, "Q2_K");
        assert!(q2k
            .iter()
            .all(|q| q.down.name == "q3_k" && q.gate.name == "q2_k"));
        // IQ3_XS: gate/up IQ3_XXS between n/8 and 7n/8.
        let iq3xs = expert_quants(m, "IQ3_XS");
        assert_eq!(iq3xs[5].gate.name, "iq3_s"); // blk.8
        assert_eq!(iq3xs[6].gate.name, "iq3_xxs"); // blk.9
        assert_eq!(iq3xs[64].up.name, "iq3_xxs"); // blk.67
        assert_eq!(iq3xs[65].up.name, "iq3_s"); // blk.68 = 7n/8
                                                // Uniform ones.
        for f in ["IQ4_XS", "Q6_K", "Q8_0", "MXFP4_MOE", "IQ3_S", "IQ3_XXS"] {
            let d = downs("glm-5", f);
            assert!(d.iter().all(|&x| x == d[0]), "{f}");
        }
        // Q3_K_M: first n/16 = 4 blocks Q5_K (blk.3), then Q4_K.
        assert_eq!(&downs("glm-5", "Q3_K_M")[..2], ["q5_k", "q4_k"].as_slice());
    }
}
