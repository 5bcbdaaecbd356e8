//! `models`: the model presets, with each one's expert size at a quant.

use crate::error::Result;
use crate::model::MODELS;
use crate::quant::ExpertQuant;
use crate::report::{emit, fixed, OutputFormat, Table};

pub struct ModelsOptions {
    /// Expert quant: TYPE, or gate=T,up=T,down=T (None: each model's usual).
    pub quant: Option<String>,
    pub format: Option<OutputFormat>,
}

pub fn run(a: ModelsOptions) -> Result<()> {
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
        let q = match &a.quant {
            Some(s) => ExpertQuant::parse(s, m.default_quant())?,
            None => ExpertQuant::uniform(m.default_quant()),
        };
        let eq = m.effective_quant(q);
        let bytes = m.expert_bytes(q)?;
        let routed = bytes as f64 * m.n_routed_experts() as f64 / (1u64 << 30) as f64;
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
