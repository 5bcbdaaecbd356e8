//! `analyze`: the seed's chunk analysis of a trace, as a table, CSV or JSON.

use crate::analyze::{analyze, Analysis, THRESHOLD_LABELS};
use crate::error::Result;
use crate::input::TraceSource;
use crate::model::Model;
use crate::report::{emit, fixed, OutputFormat, Table};
use crate::trace::Trace;

pub struct AnalyzeOptions {
    pub input: TraceSource,
    /// Tokens per chunk (at least 1).
    pub chunk: u32,
    /// Add per-layer routing uniformity.
    pub per_layer: bool,
    pub format: Option<OutputFormat>,
}

pub fn run(a: AnalyzeOptions) -> Result<()> {
    let loaded = a.input.load()?;
    let tr = &loaded.trace;
    let res = analyze(tr, a.chunk as usize, a.input.include_prompt, a.per_layer);
    if res.chunks == 0 && !a.input.quiet {
        eprintln!(
            "moe-spill: note: no response has {} tokens, so there is no chunk to analyse",
            a.chunk
        );
    }
    let text = match OutputFormat::resolve(a.format, false) {
        OutputFormat::Json => serde_json::to_string_pretty(&res).expect("json") + "\n",
        OutputFormat::Csv => analysis_csv(&res),
        OutputFormat::Table => analysis_table(&res, tr, loaded.model),
    };
    emit(&text, None)
}

fn analysis_csv(res: &Analysis) -> String {
    let mut t = Table::new(&["threshold", "avg_active", "avg_new"]);
    for (row, label) in res.rows.iter().zip(THRESHOLD_LABELS) {
        t.push(vec![
            label.to_string(),
            row.avg_active.to_string(),
            row.avg_new.to_string(),
        ]);
    }
    let mut out = t.to_csv();
    if let Some(layers) = &res.per_layer {
        let mut l = Table::new(&["layer", "entropy_bits", "top10_share", "avg_active"]);
        for r in layers {
            l.push(vec![
                r.layer.to_string(),
                r.entropy_bits.to_string(),
                r.top10_share.to_string(),
                r.avg_active.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&l.to_csv());
    }
    out
}

fn analysis_table(res: &Analysis, tr: &Trace, model: Option<&Model>) -> String {
    let mut out = format!(
        "{} responses, {} tokens analysed, {} chunks of {} tokens, {} chunk pairs; {}{}\n\n",
        res.responses,
        res.tokens,
        res.chunks,
        res.chunk_tokens,
        res.chunk_pairs,
        tr.geometry.describe(),
        model.map(|m| format!(" ({})", m.name)).unwrap_or_default()
    );
    let mut t = Table::new(&[
        "threshold",
        "avg active experts (K)",
        "avg new experts (delta)",
    ]);
    for row in &res.rows {
        let label = if row.threshold == 0.999 {
            "99.9%".to_string()
        } else {
            format!("{:.1}%", row.threshold * 100.0)
        };
        t.push(vec![label, fixed(row.avg_active, 2), fixed(row.avg_new, 2)]);
    }
    out.push_str(&t.render());
    let (u, d) = res.u_d();
    let n = tr.geometry.n_ids() as f64;
    out.push_str(&format!(
        "\nU = {u:.2} distinct experts per chunk ({:.1}% of {}), D = {d:.2} new per chunk\n",
        100.0 * u / n,
        tr.geometry.n_ids()
    ));
    if let Some(layers) = &res.per_layer {
        let top = ((tr.geometry.n_experts as f64 * 0.1).round() as usize).max(1);
        let mut l = Table::new(&[
            "layer",
            "entropy (bits)",
            &format!("top {top} share"),
            "distinct/chunk",
        ]);
        for r in layers {
            l.push(vec![
                r.layer.to_string(),
                fixed(r.entropy_bits, 3),
                format!("{:.1}%", 100.0 * r.top10_share),
                fixed(r.avg_active, 2),
            ]);
        }
        out.push_str(&format!(
            "\nPer-layer routing uniformity (max entropy log2({}) = {:.3} bits):\n",
            tr.geometry.n_experts,
            (tr.geometry.n_experts as f64).log2()
        ));
        out.push_str(&l.render());
    }
    out
}
