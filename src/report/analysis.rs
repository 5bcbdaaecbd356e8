//! The chunk analysis (`analyze`) as CSV and as a table.

use super::{fixed, Table};
use crate::analyze::{Analysis, THRESHOLD_LABELS};
use crate::model::Model;
use crate::trace::Trace;

/// The analysis as CSV: one row per threshold, then per-layer rows if asked for.
/// New experts are empty without a pair of chunks: D is undefined, not zero.
pub fn analysis_csv(res: &Analysis) -> String {
    let mut t = Table::new(&["threshold", "avg_active", "avg_new"]);
    for (row, label) in res.rows.iter().zip(THRESHOLD_LABELS) {
        t.push(vec![
            label.to_string(),
            row.avg_active.to_string(),
            if res.d_defined() {
                row.avg_new.to_string()
            } else {
                String::new()
            },
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

/// The analysis for people: a summary line, the thresholds, U and D, per-layer rows.
pub fn analysis_table(res: &Analysis, tr: &Trace, model: Option<&Model>) -> String {
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
        let new = if res.d_defined() {
            fixed(row.avg_new, 2)
        } else {
            "-".into()
        };
        t.push(vec![label, fixed(row.avg_active, 2), new]);
    }
    out.push_str(&t.render());
    let (u, d) = res.u_d();
    let n = tr.geometry.n_ids() as f64;
    let d = if res.d_defined() {
        format!("D = {d:.2} new per chunk")
    } else {
        "D undefined: no response has two whole chunks to compare".into()
    };
    out.push_str(&format!(
        "\nU = {u:.2} distinct experts per chunk ({:.1}% of {}), {d}\n",
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
        // Counted over the chunks' tokens, as U and D are: a response's tail shorter than a
        // chunk is left out (`synth --compare` counts every decode token).
        out.push_str(&format!(
            "\nPer-layer routing uniformity over the {} tokens of whole chunks (max entropy log2({}) = {:.3} bits):\n",
            res.chunks * res.chunk_tokens as u64,
            tr.geometry.n_experts,
            (tr.geometry.n_experts as f64).log2()
        ));
        out.push_str(&l.render());
    }
    out
}
