//! The replay rows of `simulate` and `sweep` (one per policy and budget) and their
//! exporters: a table for people, CSV (the columns Row serializes) and JSON.

use serde::Serialize;

use super::{fixed, serde_csv, OutputFormat, Table};

/// One (policy, budget) result: the columns of `simulate` and `sweep`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Row {
    /// What was replayed, on what: labels for plots and tables.
    pub trace: String,
    pub model: Option<String>,
    pub quant: Option<String>,
    pub hw: Option<String>,
    pub policy: String,
    pub partition: &'static str,
    pub vram_gib: Option<f64>,
    pub gpu_layers: usize,
    pub ram_gib: Option<f64>,
    pub ram_bytes: Option<u64>,
    pub cache_experts: usize,
    pub tokens: u64,
    pub accesses: u64,
    pub hits: u64,
    pub misses: u64,
    pub cold_misses: u64,
    /// None without an access on the CPU side (every MoE layer in VRAM).
    pub hit_rate: Option<f64>,
    pub misses_per_token: f64,
    pub ssd_bytes: Option<u64>,
    pub ssd_bytes_per_token: Option<f64>,
    pub ssd_bytes_per_token_p50: Option<u64>,
    pub ssd_bytes_per_token_p99: Option<u64>,
    pub ssd_bytes_per_token_max: Option<u64>,
    pub t_vram_ms: Option<f64>,
    pub t_ram_ms: Option<f64>,
    pub t_ssd_ms: Option<f64>,
    pub est_tok_s: Option<f64>,
    pub analytic_ssd_bytes_per_token: Option<f64>,
    pub analytic_tok_s: Option<f64>,
    /// Misses per MoE layer (model layer number, misses), with --per-layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_layer_misses: Option<Vec<(u16, u64)>>,
    /// The time model (`--io`, or `rated`), the bytes the device reads per token
    /// (readahead and paged non-expert weights included), and the CPU's matmul time
    /// (none under `rated`); all none without a model. Every row has the keys.
    pub io: Option<&'static str>,
    pub device_bytes_per_token: Option<f64>,
    pub t_compute_ms: Option<f64>,
    /// With --ubatch or --parallel (or prompt tokens replayed in ubatches): the batches
    /// and the prompt and decode totals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchColumns>,
}

/// A batched replay's columns (docs/batches.md): the batch sizes, then the prompt
/// ubatches' and the decode steps' totals over the counted steps. Accesses are the
/// steps' unions of experts per layer, summed; per-token bytes divide by the tokens the
/// steps carried.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BatchColumns {
    pub ubatch: usize,
    pub parallel: usize,
    pub prompt_ubatches: u64,
    pub prompt_tokens: u64,
    pub prompt_accesses: u64,
    pub prompt_misses: u64,
    pub prompt_ssd_bytes_per_token: Option<f64>,
    pub decode_steps: u64,
    pub decode_tokens: u64,
    pub decode_accesses: u64,
    pub decode_misses: u64,
    pub decode_ssd_bytes_per_token: Option<f64>,
    /// With the I/O model, the time of the steps (docs/batches.md): prompt tokens per
    /// second of prompt processing, and the mean time to first token of the prompt
    /// runs; with --prompt-tokens, of the runs cut to `prompt_len` tokens.
    pub prompt_len: Option<u64>,
    pub ttft_s: Option<f64>,
    /// The prompt runs `ttft_s` is the mean of.
    pub ttft_runs: Option<u64>,
    pub prefill_tok_s: Option<f64>,
    /// Decode tokens per second of all sequences together, and of one sequence.
    pub decode_tok_s: Option<f64>,
    pub decode_tok_s_per_seq: Option<f64>,
}

/// The I/O model's columns, after the others, in rows made with --io.
const IO_COLUMNS: [&str; 3] = ["io", "device_bytes_per_token", "t_compute_ms"];

/// The batch columns' names (BatchColumns' fields, in order).
fn batch_columns() -> Vec<String> {
    match serde_json::to_value(BatchColumns::default()).expect("serializes") {
        serde_json::Value::Object(m) => m.into_iter().map(|(k, _)| k).collect(),
        _ => unreachable!("a struct serializes as a map"),
    }
}

/// The cells of a row's batch columns (empty without batches).
fn batch_cells(b: Option<&BatchColumns>) -> Vec<String> {
    match b.map(|b| serde_json::to_value(b).expect("serializes")) {
        Some(serde_json::Value::Object(m)) => m.into_iter().map(|(_, v)| super::cell(&v)).collect(),
        _ => vec![String::new(); batch_columns().len()],
    }
}

/// Rows as a people table: the columns that matter, in readable units; `with_vram`: the
/// rows' VRAM and MoE layers on the GPU (they differ by row, a sweep over --vrams).
pub fn rows_table(rows: &[Row], with_vram: bool) -> String {
    let mib = |b: Option<f64>| b.map_or("-".into(), |v| fixed(v / (1u64 << 20) as f64, 1));
    let mib_u = |b: Option<u64>| mib(b.map(|v| v as f64));
    let with_batch = rows.iter().any(|r| r.batch.is_some());
    let mut head = vec![];
    if with_vram {
        head.extend(["vram_gib", "gpu_layers"]);
    }
    head.extend([
        "policy",
        "ram_gib",
        "cache_experts",
        "hit_rate",
        "misses/token",
        "ssd_MiB/token",
        "p50_MiB",
        "p99_MiB",
        "est_tok/s",
        "analytic_MiB/token",
        "analytic_tok/s",
    ]);
    if with_batch {
        head.extend([
            "ubatch",
            "parallel",
            "experts/ubatch",
            "prompt_MiB/token",
            "decode_MiB/token",
        ]);
    }
    let with_len = rows
        .iter()
        .any(|r| r.batch.as_ref().is_some_and(|b| b.prompt_len.is_some()));
    let with_time = rows.iter().any(|r| {
        r.batch
            .as_ref()
            .is_some_and(|b| b.prefill_tok_s.is_some() || b.decode_tok_s.is_some())
    });
    if with_len {
        head.push("prompt_len");
    }
    if with_time {
        head.extend([
            "ttft_s",
            "ttft_runs",
            "prefill_tok/s",
            "decode_tok/s",
            "per_seq_tok/s",
        ]);
    }
    let mut t = Table::new(&head);
    for r in rows {
        let mut cells = vec![];
        if with_vram {
            cells.push(r.vram_gib.map_or("-".into(), |v| format!("{v}")));
            cells.push(r.gpu_layers.to_string());
        }
        cells.extend([
            r.policy.clone(),
            r.ram_gib.map_or("-".into(), |v| fixed(v, 1)),
            r.cache_experts.to_string(),
            r.hit_rate.map_or("-".into(), |h| fixed(h, 4)),
            fixed(r.misses_per_token, 2),
            mib(r.ssd_bytes_per_token),
            mib_u(r.ssd_bytes_per_token_p50),
            mib_u(r.ssd_bytes_per_token_p99),
            r.est_tok_s.map_or("-".into(), |v| fixed(v, 2)),
            mib(r.analytic_ssd_bytes_per_token),
            r.analytic_tok_s.map_or("-".into(), |v| fixed(v, 2)),
        ]);
        if with_batch {
            match &r.batch {
                Some(b) => cells.extend([
                    b.ubatch.to_string(),
                    b.parallel.to_string(),
                    if b.prompt_ubatches == 0 {
                        "-".into()
                    } else {
                        fixed(b.prompt_accesses as f64 / b.prompt_ubatches as f64, 1)
                    },
                    mib(b.prompt_ssd_bytes_per_token),
                    mib(b.decode_ssd_bytes_per_token),
                ]),
                None => cells.extend(["-"; 5].map(String::from)),
            }
        }
        let opt = |v: Option<f64>, d: usize| v.map_or("-".into(), |v| fixed(v, d));
        let b = r.batch.as_ref();
        if with_len {
            cells.push(
                b.and_then(|b| b.prompt_len)
                    .map_or("-".into(), |l| l.to_string()),
            );
        }
        if with_time {
            cells.extend([
                opt(b.and_then(|b| b.ttft_s), 2),
                b.and_then(|b| b.ttft_runs)
                    .map_or("-".into(), |n| n.to_string()),
                opt(b.and_then(|b| b.prefill_tok_s), 2),
                opt(b.and_then(|b| b.decode_tok_s), 2),
                opt(b.and_then(|b| b.decode_tok_s_per_seq), 2),
            ]);
        }
        t.push(cells);
    }
    t.render()
}

/// Rows as CSV: every column Row serializes (its field names, in order), then
/// per-layer misses as `misses_layer_L` columns.
pub fn rows_csv(rows: &[Row]) -> String {
    // Per-layer columns: every layer any row has (rows with VRAM-resident layers leave
    // those cells empty).
    let mut layers: Vec<u16> = Vec::new();
    for r in rows {
        for (l, _) in r.per_layer_misses.iter().flatten() {
            if !layers.contains(l) {
                layers.push(*l);
            }
        }
    }
    layers.sort_unstable();
    let io = rows.iter().any(|r| r.io.is_some());
    let batch = rows.iter().any(|r| r.batch.is_some());
    let mut extra: Vec<String> = Vec::new();
    if io {
        extra.extend(IO_COLUMNS.map(String::from));
    }
    if batch {
        extra.extend(batch_columns());
    }
    extra.extend(layers.iter().map(|l| format!("misses_layer_{l}")));
    let cells = |r: &Row| {
        let mut c: Vec<String> = Vec::new();
        if io {
            c.push(r.io.unwrap_or("").to_string());
            c.push(
                r.device_bytes_per_token
                    .map_or(String::new(), |v| v.to_string()),
            );
            c.push(r.t_compute_ms.map_or(String::new(), |v| v.to_string()));
        }
        if batch {
            c.extend(batch_cells(r.batch.as_ref()));
        }
        c.extend(layers.iter().map(|l| {
            let m = r.per_layer_misses.iter().flatten().find(|(x, _)| x == l);
            m.map_or(String::new(), |(_, m)| m.to_string())
        }));
        c
    };
    let mut skip = vec!["per_layer_misses", "batch"];
    skip.extend(IO_COLUMNS);
    serde_csv(rows, &skip, extra, cells)
}

/// Rows in `format`; `vram_per_row`: the table shows each row's VRAM (CSV and JSON
/// always have it).
pub fn render_rows(rows: &[Row], format: OutputFormat, vram_per_row: bool) -> String {
    match format {
        OutputFormat::Json => serde_json::to_string_pretty(rows).expect("json") + "\n",
        OutputFormat::Csv => rows_csv(rows),
        OutputFormat::Table => {
            let mut s = rows_table(rows, vram_per_row);
            // Every row's per-layer misses, each table named by its row.
            for r in rows {
                let Some(pl) = &r.per_layer_misses else {
                    continue;
                };
                let mut t = Table::new(&["layer", "misses", "misses/token"]);
                for (l, m) in pl {
                    t.push(vec![
                        l.to_string(),
                        m.to_string(),
                        fixed(*m as f64 / r.tokens.max(1) as f64, 3),
                    ]);
                }
                let mut name = r.policy.clone();
                if vram_per_row {
                    if let Some(v) = r.vram_gib {
                        name += &format!(", {v} GiB of VRAM");
                    }
                }
                match r.ram_gib {
                    Some(g) if rows.len() > 1 => {
                        name +=
                            &format!(", {} GiB of RAM ({} experts)", fixed(g, 1), r.cache_experts)
                    }
                    _ if rows.len() > 1 => name += &format!(", {} experts", r.cache_experts),
                    _ => {}
                }
                if let Some(l) = r.batch.as_ref().and_then(|b| b.prompt_len) {
                    name += &format!(", prompts of {l} tokens");
                }
                s.push_str(&format!("\nPer-layer misses, {name}:\n"));
                s.push_str(&t.render());
            }
            s
        }
    }
}
