//! `models`: the model presets, with each one's expert size at a quant; or with
//! `--gguf FILE`, what a GGUF file holds: geometry, every MoE layer's expert slices
//! (type, bytes, offset), non-expert bytes.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::model::MODELS;
use crate::report::{emit, fixed, OutputFormat, Table};
use crate::weights::gguf::{self, GgufModel};
use crate::weights::Weights;

pub struct ModelsOptions {
    /// Expert quant: TYPE, or gate=T,up=T,down=T (None: each model's usual).
    pub quant: Option<String>,
    /// Describe this GGUF file instead of the presets.
    pub gguf: Option<PathBuf>,
    pub format: Option<OutputFormat>,
}

pub fn run(a: ModelsOptions) -> Result<()> {
    if let Some(p) = &a.gguf {
        return describe_file(p, a.format);
    }
    let mut t = Table::new(&[
        "model",
        "moe_layers",
        "first_moe_layer",
        "experts",
        "top_k",
        "routed_experts",
        "hidden",
        "expert_width",
        "non_expert_params_b",
        "quant",
        "expert_bytes",
        "expert_mib",
        "routed_gib",
        "aliases",
    ]);
    let mut json = Vec::new();
    for m in MODELS {
        let w = Weights::for_preset(m, a.quant.as_deref())?;
        // A file type can give layers different sizes: their mean.
        let sizes = w.layer_expert_bytes();
        let bytes = (sizes.iter().sum::<u64>() as f64 / sizes.len() as f64).round() as u64;
        let routed = sizes.iter().sum::<u64>() as f64 * m.n_experts as f64 / (1u64 << 30) as f64;
        let eq = w.quant_label();
        t.push(vec![
            m.name.to_string(),
            m.n_moe_layers.to_string(),
            m.first_moe_layer.to_string(),
            m.n_experts.to_string(),
            m.top_k.to_string(),
            m.n_routed_experts().to_string(),
            m.hidden.to_string(),
            m.expert_width.to_string(),
            fixed(m.non_expert_params / 1e9, 2),
            eq.to_string(),
            bytes.to_string(),
            fixed(bytes as f64 / (1u64 << 20) as f64, 4),
            fixed(routed, 1),
            m.aliases.join(" "),
        ]);
        json.push(serde_json::json!({
            "model": m.name, "aliases": m.aliases, "moe_layers": m.moe_layers(),
            "experts": m.n_experts, "top_k": m.top_k, "routed_experts": m.n_routed_experts(),
            "hidden": m.hidden, "expert_width": m.expert_width,
            "non_expert_params": m.non_expert_params, "quant": eq.to_string(), "expert_bytes": bytes,
        }));
    }
    let text = match OutputFormat::resolve(a.format, false) {
        OutputFormat::Table => t.render(),
        OutputFormat::Csv => t.to_csv(),
        OutputFormat::Json => serde_json::to_string_pretty(&json).expect("json") + "\n",
    };
    emit(&text, None)
}

/// `models --gguf FILE`: a summary, then one row per expert slice (layer, projection):
/// long form in CSV, nested in JSON.
fn describe_file(path: &Path, format: Option<OutputFormat>) -> Result<()> {
    let g = gguf::read(path)?;
    let w = &g.weights;
    let mib = |b: u64| fixed(b as f64 / (1u64 << 20) as f64, 4);
    let routed: u64 = w
        .layers
        .iter()
        .map(|l| l.expert_bytes() * g.n_experts as u64)
        .sum();
    let (non_expert, ne_type) = match w.non_expert {
        crate::weights::NonExpert::Bytes { bytes, quant } => (bytes, quant.name),
        crate::weights::NonExpert::Params(_) => unreachable!("a file has bytes"),
    };
    let summary: Vec<(&str, String)> = vec![
        ("model", g.name.clone()),
        ("general_name", g.general_name.clone().unwrap_or_default()),
        ("arch", g.arch.clone()),
        (
            "file_type",
            g.file_type.map_or(String::new(), |t| t.to_string()),
        ),
        ("parts", g.parts.len().to_string()),
        (
            "file_bytes",
            g.parts.iter().map(|p| p.1).sum::<u64>().to_string(),
        ),
        ("tensors", g.n_tensors.to_string()),
        ("block_count", g.block_count.to_string()),
        ("nextn_layers", g.nextn_layers.to_string()),
        ("leading_dense", g.leading_dense().to_string()),
        (
            "leading_dense_key",
            g.leading_dense_key.map_or(String::new(), |v| v.to_string()),
        ),
        ("moe_layers", w.layers.len().to_string()),
        ("first_moe_layer", g.leading_dense().to_string()),
        ("experts", g.n_experts.to_string()),
        ("top_k", g.top_k.to_string()),
        ("hidden", g.hidden.to_string()),
        ("expert_width", g.expert_width.to_string()),
        ("quant", w.quant_label()),
        (
            "expert_bytes",
            match w.uniform_expert_bytes() {
                Some(b) => b.to_string(),
                None => format!(
                    "{}..{}",
                    w.layer_expert_bytes().iter().min().expect("layers"),
                    w.layer_expert_bytes().iter().max().expect("layers")
                ),
            },
        ),
        ("routed_expert_bytes", routed.to_string()),
        ("non_expert_bytes", non_expert.to_string()),
        ("non_expert_main_type", ne_type.to_string()),
        ("non_expert_params_b", fixed(g.non_expert_params / 1e9, 3)),
        ("token_embd_bytes", g.token_embd_bytes.to_string()),
        ("unused_bytes", g.unused_bytes.to_string()),
    ];
    let mut slices = Table::new(&[
        "layer",
        "projection",
        "type",
        "bytes_per_expert",
        "tensor_bytes",
        "part",
        "offset",
    ]);
    for l in &w.layers {
        for s in &l.slices {
            let at = s.at.expect("slices of a file have offsets");
            slices.push(vec![
                l.block.to_string(),
                s.proj.name().to_string(),
                s.ty.name.to_string(),
                s.bytes.to_string(),
                (s.bytes * g.n_experts as u64).to_string(),
                (at.part + 1).to_string(),
                at.offset.to_string(),
            ]);
        }
    }
    let text = match OutputFormat::resolve(format, false) {
        OutputFormat::Csv => slices.to_csv(),
        OutputFormat::Json => {
            let mut obj: serde_json::Map<String, serde_json::Value> = summary
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
                .collect();
            obj.insert(
                "parts".into(),
                serde_json::json!(g
                    .parts
                    .iter()
                    .map(|(p, len, data)| serde_json::json!({
                        "path": p.display().to_string(), "bytes": len, "data_offset": data
                    }))
                    .collect::<Vec<_>>()),
            );
            obj.insert(
                "layers".into(),
                serde_json::json!(w
                    .layers
                    .iter()
                    .map(|l| serde_json::json!({
                        "layer": l.block,
                        "expert_bytes": l.expert_bytes(),
                        "slices": l.slices.iter().map(|s| {
                            let at = s.at.expect("offsets");
                            serde_json::json!({
                                "projection": s.proj.name(), "type": s.ty.name,
                                "bytes_per_expert": s.bytes, "part": at.part + 1,
                                "offset": at.offset,
                            })
                        }).collect::<Vec<_>>(),
                    }))
                    .collect::<Vec<_>>()),
            );
            serde_json::to_string_pretty(&obj).expect("json") + "\n"
        }
        OutputFormat::Table => {
            let mut out: String = summary
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| format!("{k:<20} {v}\n"))
                .collect();
            let mut t = Table::new(&["layer", "quant", "expert_bytes", "expert_mib"]);
            for l in &w.layers {
                t.push(vec![
                    l.block.to_string(),
                    l.quant_label(),
                    l.expert_bytes().to_string(),
                    mib(l.expert_bytes()),
                ]);
            }
            out.push('\n');
            out.push_str(&t.render());
            out
        }
    };
    emit(&text, None)
}

/// For `info --gguf`: the model file's line.
pub fn file_line(g: &GgufModel) -> String {
    format!(
        "{} ({} part{}, {} MoE layers, {})",
        g.path.display(),
        g.parts.len(),
        if g.parts.len() == 1 { "" } else { "s" },
        g.weights.layers.len(),
        g.weights.quant_label()
    )
}
