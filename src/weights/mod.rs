//! The bytes of a model's weights as deployed: for every MoE layer, each projection's
//! slice of one expert (its type and bytes), the non-expert weights, and for a GGUF file
//! where every slice lies. Made from a preset and a quant (every layer alike) or read
//! from a GGUF file ([`gguf`]), where dynamic quants give every layer its own types.

pub mod ftype;
pub mod gguf;

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::quant::{ExpertQuant, QuantType};

/// One projection of an expert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proj {
    Gate,
    Up,
    Down,
    /// gate and up in one tensor (`ffn_gate_up_exps`).
    GateUp,
}

impl Proj {
    pub fn name(self) -> &'static str {
        match self {
            Proj::Gate => "gate",
            Proj::Up => "up",
            Proj::Down => "down",
            Proj::GateUp => "gate_up",
        }
    }
}

/// Where expert 0's slice of a projection starts: a part of the model file and the
/// offset in it. Expert `e`'s slice starts `e * bytes` later (the expert index is the
/// outermost dimension of an `ffn_*_exps` tensor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilePos {
    pub part: usize,
    pub offset: u64,
}

/// One projection's slice of one expert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slice {
    pub proj: Proj,
    pub ty: QuantType,
    pub bytes: u64,
    /// In a GGUF file: where the slices of this projection start.
    pub at: Option<FilePos>,
}

/// The experts of one MoE layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerWeights {
    /// The model's layer number (`blk.N`).
    pub block: u16,
    /// In the order llama.cpp reads them: gate, up (or gate_up), down.
    pub slices: Vec<Slice>,
}

impl LayerWeights {
    pub fn expert_bytes(&self) -> u64 {
        self.slices.iter().map(|s| s.bytes).sum()
    }

    /// The types of the slices, as `--quant` writes them: one type, or PROJ=TYPE pairs.
    pub fn quant_label(&self) -> String {
        let first = self.slices[0].ty;
        if self.slices.iter().all(|s| s.ty == first) {
            first.name.to_string()
        } else {
            self.slices
                .iter()
                .map(|s| format!("{}={}", s.proj.name(), s.ty.name))
                .collect::<Vec<_>>()
                .join(",")
        }
    }

    /// Bytes and types of the slices: what the I/O and compute models take.
    pub fn slice_bytes(&self) -> Vec<u64> {
        self.slices.iter().map(|s| s.bytes).collect()
    }
}

/// The weights read in full per token besides the routed experts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NonExpert {
    /// Parameters of a preset, priced at `--non-expert-quant`.
    Params(f64),
    /// Exact bytes from a GGUF file, and the type that holds most of them (what the CPU
    /// multiplies).
    Bytes { bytes: u64, quant: QuantType },
}

/// A model's weights: per MoE layer (in the trace's layer order) and the rest.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    pub layers: Vec<LayerWeights>,
    pub non_expert: NonExpert,
    /// The GGUF parts (path, length in bytes) the sizes were read from; empty for a preset.
    pub files: Vec<(PathBuf, u64)>,
    /// The llama.cpp file type the quant was named by (`--quant Q4_K_M`), for labels.
    pub file_type: Option<&'static str>,
}

impl Weights {
    /// A preset at `--quant SPEC`: a ggml type or PROJ=TYPE pairs for every layer alike,
    /// or a llama.cpp file type in capitals (Q4_K_M, IQ2_XXS: the types its quantizer
    /// picks, layer by layer, see [`ftype`]); None: the preset's usual type.
    pub fn for_preset(model: &Model, spec: Option<&str>) -> Result<Weights> {
        if let Some(ft) = spec.and_then(ftype::file_type) {
            let mut w = Weights::preset_layers(model, &ftype::expert_quants(model, ft))?;
            w.file_type = Some(ft);
            return Ok(w);
        }
        let quant = match spec {
            Some(s) => ExpertQuant::parse(s, model.default_quant()).map_err(|e| {
                // `q4_k_m`: a file type written in lower case, which names tensor types.
                match ftype::file_type(&s.to_ascii_uppercase()) {
                    Some(ft) => Error::new(format!(
                        "{}; for the llama.cpp file type write it in capitals: --quant {ft}",
                        e.0
                    )),
                    None => e,
                }
            })?,
            None => ExpertQuant::uniform(model.default_quant()),
        };
        Weights::preset(model, quant)
    }

    /// `--quant q2_k` names one tensor type for every expert tensor, where `Q2_K` in
    /// capitals is llama.cpp's file type with its own per-layer types: said when the two
    /// differ for `model`, since names elsewhere take any case.
    pub fn case_twin_note(model: &Model, spec: Option<&str>) -> Option<String> {
        let s = spec?;
        if ftype::file_type(s).is_some() {
            return None;
        }
        let ft = ftype::file_type(&s.to_ascii_uppercase())?;
        let twin = Weights::preset_layers(model, &ftype::expert_quants(model, ft)).ok()?;
        let mine = Weights::for_preset(model, Some(s)).ok()?;
        (twin.layers != mine.layers).then(|| {
            format!(
                "moe-spill: note: --quant {s} puts every expert tensor at {s}; --quant {ft} in capitals is llama.cpp's file type of that name, whose quantizer picks other types for some tensors"
            )
        })
    }

    /// A preset at a quant: every MoE layer alike (after llama.cpp's fallback for rows
    /// that are not whole blocks).
    pub fn preset(model: &Model, quant: ExpertQuant) -> Result<Weights> {
        Weights::preset_layers(model, &vec![quant; model.n_moe_layers as usize])
    }

    /// A preset with a quant per MoE layer (after the fallback).
    fn preset_layers(model: &Model, quants: &[ExpertQuant]) -> Result<Weights> {
        let layers = model
            .moe_layers()
            .into_iter()
            .zip(quants)
            .map(|(block, &quant)| {
                let q = model.effective_quant(quant);
                let bytes = model.slice_bytes(quant)?;
                let slices = [Proj::Gate, Proj::Up, Proj::Down]
                    .into_iter()
                    .zip(q.types())
                    .zip(bytes)
                    .map(|((proj, ty), bytes)| Slice {
                        proj,
                        ty,
                        bytes,
                        at: None,
                    })
                    .collect();
                Ok(LayerWeights { block, slices })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Weights {
            layers,
            non_expert: NonExpert::Params(model.non_expert_params),
            files: Vec::new(),
            file_type: None,
        })
    }

    /// Bytes of one expert of every MoE layer.
    pub fn layer_expert_bytes(&self) -> Vec<u64> {
        self.layers.iter().map(LayerWeights::expert_bytes).collect()
    }

    /// The expert size when every layer's experts have the same size.
    pub fn uniform_expert_bytes(&self) -> Option<u64> {
        let first = self.layers.first()?.expert_bytes();
        self.layers
            .iter()
            .all(|l| l.expert_bytes() == first)
            .then_some(first)
    }

    /// Bytes of the non-expert weights and their type: a preset's parameters at
    /// `non_expert_quant`, or a file's exact bytes.
    pub fn non_expert_bytes(&self, non_expert_quant: QuantType) -> (f64, QuantType) {
        match self.non_expert {
            NonExpert::Params(p) => (
                p * non_expert_quant.bits_per_weight() / 8.0,
                non_expert_quant,
            ),
            NonExpert::Bytes { bytes, quant } => (bytes as f64, quant),
        }
    }

    /// How output names the experts' types: one label when every layer has the same
    /// (`iq4_xs`, `gate=iq3_s,up=iq3_s,down=iq4_xs`), else `mixed:` and the types used.
    pub fn quant_label(&self) -> String {
        if let Some(ft) = self.file_type {
            return ft.to_string();
        }
        let first = match self.layers.first() {
            Some(l) => l.quant_label(),
            None => return String::new(),
        };
        if self.layers.iter().all(|l| l.quant_label() == first) {
            return first;
        }
        let mut types: Vec<&str> = self
            .layers
            .iter()
            .flat_map(|l| l.slices.iter().map(|s| s.ty.name))
            .collect();
        types.sort_unstable();
        types.dedup();
        format!("mixed:{}", types.join("+"))
    }

    /// Check that the weights cover a trace's MoE layers, in order.
    pub fn check_layers(&self, layers: &[u16]) -> Result<()> {
        let ours: Vec<u16> = self.layers.iter().map(|l| l.block).collect();
        if ours != layers {
            return Err(Error::new(format!(
                "the weights have MoE layers {}, the trace {}",
                describe(&ours),
                describe(layers)
            )));
        }
        Ok(())
    }
}

fn describe(layers: &[u16]) -> String {
    match (layers.first(), layers.last()) {
        (Some(a), Some(b)) => format!("{a}..{b} ({} layers)", layers.len()),
        _ => "none".into(),
    }
}

impl fmt::Display for Proj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quant_type;

    #[test]
    fn a_preset_has_every_layer_alike() {
        let m = Model::by_name("glm-5").unwrap();
        let q = ExpertQuant::parse("gate=iq3_s,up=iq3_s,down=iq4_xs", m.default_quant()).unwrap();
        let w = Weights::preset(m, q).unwrap();
        assert_eq!(w.layers.len(), 75);
        assert_eq!(w.layers[0].block, 3);
        assert_eq!(w.uniform_expert_bytes(), Some(17_498_112));
        assert_eq!(w.quant_label(), "gate=iq3_s,up=iq3_s,down=iq4_xs");
        let q8 = quant_type("q8_0").unwrap();
        assert_eq!(w.non_expert_bytes(q8).0, 18.18e9 * 8.5 / 8.0);
        let mut mixed = w.clone();
        mixed.layers[1].slices[2].ty = quant_type("q4_k").unwrap();
        assert_eq!(mixed.quant_label(), "mixed:iq3_s+iq4_xs+q4_k");
    }

    #[test]
    fn file_types_give_layers_their_own_types() {
        let m = Model::by_name("glm-5").unwrap();
        let w = Weights::for_preset(m, Some("Q4_K_M")).unwrap();
        assert_eq!(w.quant_label(), "Q4_K_M");
        assert_eq!(w.uniform_expert_bytes(), None);
        // blk.3: down Q6_K (use_more_bits); blk.9: down Q4_K.
        let row = |t: &str, n: u64| quant_type(t).unwrap().row_bytes(n).unwrap();
        let gate_up = 2 * row("q4_k", 6144) * 2048;
        assert_eq!(
            w.layers[0].expert_bytes(),
            gate_up + row("q6_k", 2048) * 6144
        );
        assert_eq!(
            w.layers[6].expert_bytes(),
            gate_up + row("q4_k", 2048) * 6144
        );
        // Lower case is a ggml type for every projection.
        let w = Weights::for_preset(m, Some("q2_k")).unwrap();
        assert_eq!(w.quant_label(), "q2_k");
        assert!(w.uniform_expert_bytes().is_some());
        // DeepSeek-V2-Lite's 1408-wide down rows fall back as before.
        let d = Model::by_name("deepseek-v2-lite").unwrap();
        let w = Weights::for_preset(d, Some("IQ4_XS")).unwrap();
        assert_eq!(w.layers[0].slices[2].ty.name, "iq4_nl");
    }
}
