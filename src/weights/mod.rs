//! The bytes of a model's weights as deployed: for every MoE layer, each projection's
//! slice of one expert (its type and bytes), the non-expert weights, and for a GGUF file
//! where every slice lies. Made from a preset and a quant (every layer alike) or read
//! from a GGUF file ([`gguf`]), where dynamic quants give every layer its own types.

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
}

impl Weights {
    /// A preset at a quant: every MoE layer alike (after llama.cpp's fallback for rows
    /// that are not whole blocks).
    pub fn preset(model: &Model, quant: ExpertQuant) -> Result<Weights> {
        let q = model.effective_quant(quant);
        let bytes = model.slice_bytes(quant)?;
        let slices: Vec<Slice> = [Proj::Gate, Proj::Up, Proj::Down]
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
        Ok(Weights {
            layers: model
                .moe_layers()
                .into_iter()
                .map(|block| LayerWeights {
                    block,
                    slices: slices.clone(),
                })
                .collect(),
            non_expert: NonExpert::Params(model.non_expert_params),
            files: Vec::new(),
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
}
