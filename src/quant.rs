//! GGUF quantisation types with their exact block geometry (ggml/src/ggml-common.h), and
//! the per-projection choice for a model's experts (`--quant iq4_xs` or
//! `--quant gate=iq3_s,up=iq3_s,down=iq4_xs`).

use std::fmt;

use crate::error::{Error, Result};

/// A GGUF tensor type: `elems` weights are stored in a block of `bytes` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantType {
    pub name: &'static str,
    pub elems: u32,
    pub bytes: u32,
}

impl QuantType {
    pub fn bits_per_weight(&self) -> f64 {
        8.0 * self.bytes as f64 / self.elems as f64
    }

    /// Bytes of a row of `n` weights; None when `n` is not a whole number of blocks.
    pub fn row_bytes(&self, n: u64) -> Option<u64> {
        n.is_multiple_of(self.elems as u64)
            .then(|| n / self.elems as u64 * self.bytes as u64)
    }
}

const fn q(name: &'static str, elems: u32, bytes: u32) -> QuantType {
    QuantType { name, elems, bytes }
}

/// Mainline llama.cpp weight types (model_facts.md section 2.2).
pub const QUANT_TYPES: &[QuantType] = &[
    q("f32", 1, 4),
    q("f16", 1, 2),
    q("bf16", 1, 2),
    q("q8_0", 32, 34),
    q("q6_k", 256, 210),
    q("q5_k", 256, 176),
    q("q5_0", 32, 22),
    q("q5_1", 32, 24),
    q("q4_k", 256, 144),
    q("q4_0", 32, 18),
    q("q4_1", 32, 20),
    q("q3_k", 256, 110),
    q("q2_k", 256, 84),
    q("iq4_xs", 256, 136),
    q("iq4_nl", 32, 18),
    q("iq3_s", 256, 110),
    q("iq3_xxs", 256, 98),
    q("iq2_s", 256, 82),
    q("iq2_xs", 256, 74),
    q("iq2_xxs", 256, 66),
    q("iq1_m", 256, 56),
    q("iq1_s", 256, 50),
    q("mxfp4", 32, 17),
    q("tq1_0", 256, 54),
    q("tq2_0", 256, 66),
];

/// The ggml type ids of GGUF tensor infos (ggml/include/ggml.h, ggml docs/gguf.md): the
/// weight types above, and the plain element types some tensors use (routing tables).
pub fn ggml_type(id: u32) -> Option<QuantType> {
    let name = match id {
        0 => "f32",
        1 => "f16",
        2 => "q4_0",
        3 => "q4_1",
        6 => "q5_0",
        7 => "q5_1",
        8 => "q8_0",
        10 => "q2_k",
        11 => "q3_k",
        12 => "q4_k",
        13 => "q5_k",
        14 => "q6_k",
        16 => "iq2_xxs",
        17 => "iq2_xs",
        18 => "iq3_xxs",
        19 => "iq1_s",
        20 => "iq4_nl",
        21 => "iq3_s",
        22 => "iq2_s",
        23 => "iq4_xs",
        24 => return Some(q("i8", 1, 1)),
        25 => return Some(q("i16", 1, 2)),
        26 => return Some(q("i32", 1, 4)),
        27 => return Some(q("i64", 1, 8)),
        28 => return Some(q("f64", 1, 8)),
        29 => "iq1_m",
        30 => "bf16",
        34 => "tq1_0",
        35 => "tq2_0",
        39 => "mxfp4",
        _ => return None,
    };
    Some(quant_type(name).expect("listed type"))
}

pub fn quant_type(name: &str) -> Result<QuantType> {
    let lower = name.trim().to_ascii_lowercase();
    QUANT_TYPES
        .iter()
        .copied()
        .find(|t| t.name == lower)
        .ok_or_else(|| {
            let names: Vec<&str> = QUANT_TYPES.iter().map(|t| t.name).collect();
            Error::new(format!(
                "unknown quant type `{name}`; known: {}",
                names.join(", ")
            ))
        })
}

/// The types of an expert's three projections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpertQuant {
    pub gate: QuantType,
    pub up: QuantType,
    pub down: QuantType,
}

impl ExpertQuant {
    pub fn uniform(t: QuantType) -> Self {
        ExpertQuant {
            gate: t,
            up: t,
            down: t,
        }
    }

    /// `iq4_xs`, or `gate=iq3_s,up=iq3_s,down=iq4_xs` (unnamed projections keep `default`).
    pub fn parse(spec: &str, default: QuantType) -> Result<Self> {
        if !spec.contains('=') {
            return Ok(Self::uniform(quant_type(spec)?));
        }
        let mut q = Self::uniform(default);
        let mut named: Vec<&str> = Vec::new();
        for part in spec.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                Error::new(format!(
                    "--quant: `{part}` is not PROJ=TYPE (e.g. gate=iq3_s,up=iq3_s,down=iq4_xs)"
                ))
            })?;
            let t = quant_type(v)?;
            // gate_up names both; a projection named twice would keep the last silently.
            let projs: &[&str] = match k.trim() {
                "gate_up" | "gate+up" => &["gate", "up"],
                "gate" => &["gate"],
                "up" => &["up"],
                "down" => &["down"],
                _ => &[],
            };
            if let Some(p) = projs.iter().find(|p| named.contains(p)) {
                return Err(Error::new(format!(
                    "--quant: `{p}` is given twice in `{spec}`"
                )));
            }
            named.extend(projs);
            match k.trim() {
                "gate" => q.gate = t,
                "up" => q.up = t,
                "down" => q.down = t,
                "gate_up" | "gate+up" => {
                    q.gate = t;
                    q.up = t;
                }
                other => {
                    return Err(Error::new(format!(
                        "--quant: unknown projection `{other}` (use gate, up, down)"
                    )))
                }
            }
        }
        Ok(q)
    }

    /// Exact bytes of one expert: gate and up are {hidden x width}, down is {width x hidden}
    /// (ggml rows run along the first dimension).
    pub fn expert_bytes(&self, hidden: u64, width: u64) -> Result<u64> {
        Ok(self.slice_bytes(hidden, width)?.iter().sum())
    }

    /// Exact bytes of each projection's slice (gate, up, down): in a GGUF each is a
    /// contiguous range of its layer's `ffn_*_exps` tensor.
    pub fn slice_bytes(&self, hidden: u64, width: u64) -> Result<[u64; 3]> {
        let row = |t: QuantType, n: u64, proj: &str| {
            t.row_bytes(n).ok_or_else(|| {
                Error::new(format!(
                    "{} needs rows that are a multiple of {} weights; the {proj} projection's rows have {n}",
                    t.name, t.elems
                ))
            })
        };
        Ok([
            row(self.gate, hidden, "gate")? * width,
            row(self.up, hidden, "up")? * width,
            row(self.down, width, "down")? * hidden,
        ])
    }

    /// The projections' types in slice order.
    pub fn types(&self) -> [QuantType; 3] {
        [self.gate, self.up, self.down]
    }
}

impl fmt::Display for ExpertQuant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.gate == self.up && self.up == self.down {
            f.write_str(self.gate.name)
        } else {
            write!(
                f,
                "gate={},up={},down={}",
                self.gate.name, self.up.name, self.down.name
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glm5_expert_bytes_are_exact() {
        let iq4 = quant_type("IQ4_XS").unwrap();
        assert_eq!(
            ExpertQuant::uniform(iq4).expert_bytes(6144, 2048).unwrap(),
            20_054_016
        );
        let mixed = ExpertQuant::parse("gate=iq3_s,up=iq3_s,down=iq4_xs", iq4).unwrap();
        assert_eq!(mixed.expert_bytes(6144, 2048).unwrap(), 17_498_112);
        assert_eq!(mixed.to_string(), "gate=iq3_s,up=iq3_s,down=iq4_xs");
    }

    #[test]
    fn ggml_ids_name_the_listed_types() {
        assert_eq!(ggml_type(23).unwrap().name, "iq4_xs");
        assert_eq!(ggml_type(39).unwrap(), quant_type("mxfp4").unwrap());
        assert_eq!(ggml_type(26).unwrap().bytes, 4);
        assert!(ggml_type(4).is_none() && ggml_type(40).is_none());
        // Every weight type of the list has an id.
        for t in QUANT_TYPES {
            assert!((0..64).any(|id| ggml_type(id) == Some(*t)), "{}", t.name);
        }
    }

    #[test]
    fn bad_specs_are_errors() {
        assert!(quant_type("q9_9").is_err());
        let iq4 = quant_type("iq4_xs").unwrap();
        assert!(ExpertQuant::parse("left=q8_0", iq4).is_err());
        // gpt-oss rows of 2880 are not a whole number of 256-weight blocks.
        assert!(ExpertQuant::uniform(iq4).expert_bytes(2880, 2880).is_err());
    }
}
