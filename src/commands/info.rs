//! `info`: what a trace holds (geometry, model, tokens, accesses) and how fast it loads.

use crate::error::{Error, Result};
use crate::format;
use crate::input::TraceSource;
use crate::report::{emit, OutputFormat, Table};

pub struct InfoOptions {
    pub input: TraceSource,
    pub format: Option<OutputFormat>,
}

pub fn run(a: InfoOptions) -> Result<()> {
    let mut bytes = 0u64;
    for arg in &a.input.traces {
        for f in format::trace_files(arg)? {
            bytes += std::fs::metadata(&f).map_err(|e| Error::io(&f, e))?.len();
        }
    }
    let start = std::time::Instant::now();
    let loaded = a.input.load()?;
    let secs = start.elapsed().as_secs_f64();
    let t = &loaded.trace;
    let g = &t.geometry;
    let prompt = t.prompt.iter().filter(|&&p| p).count();
    let mut rows: Vec<(&str, String)> = vec![
        ("geometry", g.describe()),
        (
            "model",
            loaded.model.map_or(
                "(none: no single preset matches; pass --model or --gguf)".into(),
                |m| m.name.to_string(),
            ),
        ),
        ("experts_known", t.n_experts_known.to_string()),
        ("responses", t.n_responses().to_string()),
        ("tokens", t.n_tokens().to_string()),
        ("decode_tokens", (t.n_tokens() - prompt).to_string()),
        ("prompt_tokens", prompt.to_string()),
        ("accesses", t.n_accesses().to_string()),
        ("distinct_experts", {
            let mut seen = vec![false; g.n_ids()];
            t.ids.iter().for_each(|&i| seen[i as usize] = true);
            seen.iter().filter(|&&s| s).count().to_string()
        }),
        ("file_bytes", bytes.to_string()),
        ("load_seconds", format!("{secs:.3}")),
        (
            "load_mb_per_s",
            format!("{:.1}", bytes as f64 / 1e6 / secs.max(1e-9)),
        ),
    ];
    if let Some(g) = &loaded.gguf {
        rows.insert(2, ("gguf", crate::commands::models::file_line(g)));
    }
    let text = match OutputFormat::resolve(a.format, false) {
        OutputFormat::Json => {
            let map: serde_json::Map<String, serde_json::Value> = rows
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
                .collect();
            serde_json::to_string_pretty(&map).expect("json") + "\n"
        }
        OutputFormat::Csv => {
            let mut tb = Table::new(&rows.iter().map(|r| r.0).collect::<Vec<_>>());
            tb.push(rows.iter().map(|r| r.1.clone()).collect());
            tb.to_csv()
        }
        OutputFormat::Table => rows.iter().map(|(k, v)| format!("{k:<17} {v}\n")).collect(),
    };
    emit(&text, None)
}
