//! A GGUF model file as moe-spill's model description: the geometry from the metadata
//! (`{arch}.block_count`, `{arch}.expert_count`, `{arch}.expert_used_count`) and from
//! which blocks hold expert tensors, every MoE layer's expert slices (type, bytes, file
//! offset) from its `blk.N.ffn_{gate,up,down}_exps.weight` (or fused
//! `ffn_gate_up_exps`) tensors, and the non-expert bytes read per token.
//!
//! An expert tensor is 3-D, `{n_embd, n_ff, n_expert}` for gate and up (`2 n_ff` for
//! gate_up) and `{n_ff, n_embd, n_expert}` for down; expert `e`'s slice is the `e`-th
//! `1/n_expert` of its bytes. Blocks past `block_count - nextn_predict_layers` (MTP
//! layers: in the file, never run) are not MoE layers of the geometry and cost no I/O.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{FilePos, LayerWeights, NonExpert, Proj, Slice, Weights};
use crate::error::{Error, Result};
use crate::format::gguf::{read_model, GgufFile, TensorInfo, Value};
use crate::format::show;
use crate::model::Model;
use crate::quant::QuantType;
use crate::trace::Geometry;

/// What a GGUF file says about its model.
#[derive(Clone, Debug)]
pub struct GgufModel {
    /// The path as given (any part of a split model).
    pub path: PathBuf,
    /// The file name without `-0000N-of-0000M` and `.gguf`: how output names the model.
    pub name: String,
    pub arch: String,
    /// `general.name`, if set.
    pub general_name: Option<String>,
    /// `general.file_type` (llama.cpp's LLAMA_FTYPE), if set.
    pub file_type: Option<u64>,
    pub block_count: u32,
    /// MTP layers at the end (`{arch}.nextn_predict_layers`), not run.
    pub nextn_layers: u32,
    /// `{arch}.leading_dense_block_count`, if set (the geometry comes from the tensors).
    pub leading_dense_key: Option<u64>,
    pub n_experts: u16,
    pub top_k: u16,
    /// Rows of gate/up (n_embd) and the experts' FFN width (n_ff) of the first MoE layer.
    pub hidden: u32,
    pub expert_width: u32,
    pub weights: Weights,
    /// Elements of the non-expert tensors read per token (excluding the input
    /// embedding, a row gather).
    pub non_expert_params: f64,
    /// Bytes of the token embedding (only a row per token is read, unless the output
    /// head shares it).
    pub token_embd_bytes: u64,
    /// Bytes of tensors never read in decoding: MTP layers.
    pub unused_bytes: u64,
    /// Every part: path, file length, start of its tensor data.
    pub parts: Vec<(PathBuf, u64, u64)>,
    pub n_tensors: usize,
}

/// `blk.N.ffn_{gate,up,down,gate_up}_exps.weight` as (N, projection).
fn expert_tensor(name: &str) -> Option<(u32, Proj)> {
    let rest = name.strip_prefix("blk.")?;
    let (n, rest) = rest.split_once('.')?;
    let proj = match rest {
        "ffn_gate_exps.weight" => Proj::Gate,
        "ffn_up_exps.weight" => Proj::Up,
        "ffn_down_exps.weight" => Proj::Down,
        "ffn_gate_up_exps.weight" => Proj::GateUp,
        _ => return None,
    };
    Some((n.parse().ok()?, proj))
}

fn block_of(name: &str) -> Option<u32> {
    name.strip_prefix("blk.")?.split_once('.')?.0.parse().ok()
}

fn key_u64(f: &GgufFile, key: &str) -> Result<Option<u64>> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            Error::in_file(
                &f.path,
                format!("{key} is {v:?}, not a non-negative integer"),
            )
        }),
    }
}

/// The model's name in output: the file name less the split suffix and extension.
fn model_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".gguf").unwrap_or(&name);
    match stem.rsplit_once("-of-") {
        Some((head, total)) if total.len() == 5 && total.bytes().all(|b| b.is_ascii_digit()) => {
            match head.rsplit_once('-') {
                Some((base, no)) if no.len() == 5 && no.bytes().all(|b| b.is_ascii_digit()) => {
                    base.to_string()
                }
                _ => stem.to_string(),
            }
        }
        _ => stem.to_string(),
    }
}

/// Read a GGUF model (every part of a split one) and describe it.
pub fn read(path: &Path) -> Result<GgufModel> {
    let parts = read_model(path)?;
    describe(path, &parts)
}

fn describe(path: &Path, parts: &[GgufFile]) -> Result<GgufModel> {
    let first = &parts[0];
    let arch = match first.get("general.architecture") {
        Some(Value::Str(s)) => s.clone(),
        _ => {
            return Err(Error::in_file(
                &first.path,
                "no general.architecture: not a llama.cpp model file",
            ))
        }
    };
    let key = |k: &str| format!("{arch}.{k}");
    // The architecture as messages show it (file content, escaped).
    let shown = |k: &str| show(key(k).as_bytes(), 120);
    let block_count = key_u64(first, &key("block_count"))?.ok_or_else(|| {
        Error::in_file(
            &first.path,
            format!("no {} in the metadata", shown("block_count")),
        )
    })?;
    let nextn = key_u64(first, &key("nextn_predict_layers"))?.unwrap_or(0);
    let main_blocks = block_count.saturating_sub(nextn);
    let leading_dense_key = key_u64(first, &key("leading_dense_block_count"))?;
    // Every tensor of every part, with its part.
    let all: Vec<(usize, &TensorInfo)> = parts
        .iter()
        .enumerate()
        .flat_map(|(i, f)| f.tensors.iter().map(move |t| (i, t)))
        .collect();
    let mut layers: BTreeMap<u32, Vec<(usize, &TensorInfo, Proj)>> = BTreeMap::new();
    let mut non_expert_bytes = 0u64;
    let mut non_expert_params = 0f64;
    let mut by_type: BTreeMap<&'static str, (u64, QuantType)> = BTreeMap::new();
    let mut token_embd: Option<&TensorInfo> = None;
    let mut has_output = false;
    let mut unused_bytes = 0u64;
    for &(i, t) in &all {
        if block_of(&t.name).is_some_and(|b| b >= main_blocks as u32) {
            unused_bytes += t.bytes;
            continue;
        }
        if let Some((b, proj)) = expert_tensor(&t.name) {
            layers.entry(b).or_default().push((i, t, proj));
            continue;
        }
        match t.name.as_str() {
            "token_embd.weight" => {
                token_embd = Some(t);
                continue;
            }
            "output.weight" => has_output = true,
            _ => {}
        }
        non_expert_bytes += t.bytes;
        non_expert_params += t.dims.iter().product::<u64>() as f64;
        let e = by_type.entry(t.ty.name).or_insert((0, t.ty));
        e.0 += t.bytes;
    }
    if let (Some(t), false) = (token_embd, has_output) {
        // Tied embeddings: the output head reads the whole embedding every token.
        non_expert_bytes += t.bytes;
        non_expert_params += t.dims.iter().product::<u64>() as f64;
        by_type.entry(t.ty.name).or_insert((0, t.ty)).0 += t.bytes;
    }
    if layers.is_empty() {
        return Err(Error::in_file(
            &first.path,
            format!(
                "no expert tensors (blk.N.ffn_{{gate,up,down}}_exps.weight) among its {} tensors: a dense model has no experts to page",
                all.len()
            ),
        ));
    }
    let expert_count = key_u64(first, &key("expert_count"))?;
    let top_k = key_u64(first, &key("expert_used_count"))?.ok_or_else(|| {
        Error::in_file(
            &first.path,
            format!(
                "no {} in the metadata (experts per token)",
                shown("expert_used_count")
            ),
        )
    })?;
    let mut n_experts: Option<u64> = expert_count;
    let mut out = Vec::with_capacity(layers.len());
    let mut dims0: Option<(u64, u64)> = None;
    for (&block, tensors) in &layers {
        let find = |p: Proj| tensors.iter().find(|(_, _, q)| *q == p);
        let order: &[Proj] = if find(Proj::GateUp).is_some() {
            &[Proj::GateUp, Proj::Down]
        } else {
            &[Proj::Gate, Proj::Up, Proj::Down]
        };
        let mut slices = Vec::with_capacity(order.len());
        for &p in order {
            let &(part, t, _) = find(p).ok_or_else(|| {
                Error::in_file(
                    &first.path,
                    format!(
                        "blk.{block} has expert tensors but no ffn_{}_exps.weight",
                        p.name()
                    ),
                )
            })?;
            let at = |msg: String| Error::at_byte(&parts[part].path, t.info_at, msg);
            if t.dims.len() != 3 {
                return Err(at(format!(
                    "expert tensor `{}` has shape {:?}, not 3-D {{rows, cols, experts}}",
                    t.name, t.dims
                )));
            }
            let e = t.dims[2];
            match n_experts {
                Some(n) if n != e => {
                    return Err(at(format!(
                        "expert tensor `{}` holds {e} experts, the model {n}",
                        t.name
                    )))
                }
                _ => n_experts = Some(e),
            }
            if e == 0 {
                return Err(at(format!("expert tensor `{}` holds no expert", t.name)));
            }
            if p == Proj::Gate && dims0.is_none() {
                dims0 = Some((t.dims[0], t.dims[1]));
            }
            if p == Proj::GateUp && dims0.is_none() {
                dims0 = Some((t.dims[0], t.dims[1] / 2));
            }
            slices.push(Slice {
                proj: p,
                ty: t.ty,
                bytes: t.bytes / e,
                at: Some(FilePos {
                    part,
                    offset: t.offset,
                }),
            });
        }
        let block = u16::try_from(block).map_err(|_| {
            Error::in_file(&first.path, format!("block number {block} is too large"))
        })?;
        out.push(LayerWeights { block, slices });
    }
    let n_experts = n_experts.expect("at least one layer");
    let n_ids = n_experts.saturating_mul(out.len() as u64);
    if n_experts > u16::MAX as u64 || top_k == 0 || top_k > n_experts || n_ids > 1 << 16 {
        return Err(Error::in_file(
            &first.path,
            format!(
                "{} MoE layers of {n_experts} experts, top-{top_k}: moe-spill takes top-k from 1 to the expert count and at most 65,536 experts in all",
                out.len()
            ),
        ));
    }
    let (hidden, width) = dims0.unwrap_or((0, 0));
    let quant = by_type
        .values()
        .max_by_key(|(b, _)| *b)
        .map(|&(_, t)| t)
        .unwrap_or(out[0].slices[0].ty);
    Ok(GgufModel {
        path: path.to_path_buf(),
        name: model_name(path),
        general_name: first
            .get("general.name")
            .and_then(Value::as_str)
            .map(String::from),
        file_type: key_u64(first, "general.file_type")?,
        arch,
        block_count: block_count.min(u32::MAX as u64) as u32,
        nextn_layers: nextn.min(u32::MAX as u64) as u32,
        leading_dense_key,
        n_experts: n_experts as u16,
        top_k: top_k as u16,
        hidden: hidden.min(u32::MAX as u64) as u32,
        expert_width: width.min(u32::MAX as u64) as u32,
        weights: Weights {
            layers: out,
            non_expert: NonExpert::Bytes {
                bytes: non_expert_bytes,
                quant,
            },
            files: parts.iter().map(|f| (f.path.clone(), f.file_len)).collect(),
            file_type: None,
        },
        non_expert_params,
        token_embd_bytes: token_embd.map_or(0, |t| t.bytes),
        unused_bytes,
        parts: parts
            .iter()
            .map(|f| (f.path.clone(), f.file_len, f.data_offset))
            .collect(),
        n_tensors: all.len(),
    })
}

impl GgufModel {
    pub fn moe_layers(&self) -> Vec<u16> {
        self.weights.layers.iter().map(|l| l.block).collect()
    }

    pub fn geometry(&self) -> Geometry {
        Geometry {
            layers: self.moe_layers(),
            n_experts: self.n_experts,
            top_k: self.top_k,
        }
    }

    /// Dense blocks before the first MoE layer.
    pub fn leading_dense(&self) -> u16 {
        self.weights.layers[0].block
    }

    /// The model as a preset-like description, for the rest of the program. It lives
    /// for the whole run, as the presets do.
    pub fn model(&self) -> &'static Model {
        let layers = self.moe_layers();
        let m = Model {
            name: self.name.clone().leak(),
            aliases: &[],
            first_moe_layer: layers[0],
            n_moe_layers: layers.len() as u16,
            moe_layer_step: 1,
            layer_list: layers.leak(),
            n_experts: self.n_experts,
            top_k: self.top_k,
            shared_expert: false,
            hidden: self.hidden,
            expert_width: self.expert_width,
            non_expert_params: self.non_expert_params,
            default_quant: self.weights.layers[0].slices[0].ty.name,
        };
        Box::leak(Box::new(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_expert_tensors_and_models() {
        assert_eq!(
            expert_tensor("blk.12.ffn_down_exps.weight"),
            Some((12, Proj::Down))
        );
        assert_eq!(
            expert_tensor("blk.0.ffn_gate_up_exps.weight"),
            Some((0, Proj::GateUp))
        );
        assert_eq!(expert_tensor("blk.3.ffn_down_shexp.weight"), None);
        assert_eq!(expert_tensor("blk.3.ffn_gate_exps.bias"), None);
        assert_eq!(expert_tensor("output.weight"), None);
        assert_eq!(
            model_name(Path::new("/m/GLM-5.2-UD-IQ1_M-00001-of-00005.gguf")),
            "GLM-5.2-UD-IQ1_M"
        );
        assert_eq!(model_name(Path::new("tiny-moe.gguf")), "tiny-moe");
    }
}
