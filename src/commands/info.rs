//! `info`: what a trace holds (geometry, model, tokens, accesses) and how fast it loads.

use crate::error::{Error, Result};
use crate::format;
use crate::input::TraceSource;
use serde_json::Value;

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
    let distinct = {
        let mut seen = vec![false; g.n_ids()];
        t.ids.iter().for_each(|&i| seen[i as usize] = true);
        seen.iter().filter(|&&s| s).count()
    };
    // Each field as people read it and as JSON has it (numbers as numbers); the embedded
    // trace has no file, so no load rate.
    let text_of = |s: String| (s.clone(), Value::String(s));
    let count = |n: u64| (n.to_string(), Value::from(n));
    let mut rows: Vec<(&str, (String, Value))> = vec![
        ("geometry", text_of(g.describe())),
        (
            "model",
            text_of(loaded.model.map_or(
                "(none: no single preset matches; pass --model or --gguf)".into(),
                |m| m.name.to_string(),
            )),
        ),
        (
            "experts_known",
            (
                t.n_experts_known.to_string(),
                Value::Bool(t.n_experts_known),
            ),
        ),
        ("responses", count(t.n_responses() as u64)),
        ("tokens", count(t.n_tokens() as u64)),
        ("decode_tokens", count((t.n_tokens() - prompt) as u64)),
        ("prompt_tokens", count(prompt as u64)),
        ("accesses", count(t.n_accesses() as u64)),
        ("distinct_experts", count(distinct as u64)),
        ("file_bytes", count(bytes)),
        ("load_seconds", (format!("{secs:.3}"), Value::from(secs))),
        (
            "load_mb_per_s",
            if bytes == 0 {
                ("-".into(), Value::Null)
            } else {
                let r = bytes as f64 / 1e6 / secs.max(1e-9);
                (format!("{r:.1}"), Value::from(r))
            },
        ),
    ];
    if let Some(g) = &loaded.gguf {
        rows.insert(2, ("gguf", text_of(crate::commands::models::file_line(g))));
    }
    let text = match OutputFormat::resolve(a.format, false) {
        OutputFormat::Json => {
            let map: serde_json::Map<String, Value> = rows
                .iter()
                .map(|(k, v)| (k.to_string(), v.1.clone()))
                .collect();
            serde_json::to_string_pretty(&map).expect("json") + "\n"
        }
        OutputFormat::Csv => {
            let mut tb = Table::new(&rows.iter().map(|r| r.0).collect::<Vec<_>>());
            tb.push(rows.iter().map(|r| r.1 .0.clone()).collect());
            tb.to_csv()
        }
        OutputFormat::Table => rows
            .iter()
            .map(|(k, v)| format!("{k:<17} {}\n", v.0))
            .collect(),
    };
    emit(&text, None)
}
