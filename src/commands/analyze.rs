//! `analyze`: the seed's chunk analysis of a trace, as a table, CSV or JSON.

use crate::analyze::analyze;
use crate::error::{Error, Result};
use crate::input::TraceSource;
use crate::report::analysis::{analysis_csv, analysis_table};
use crate::report::{check_output, deliver, OutputFormat};

pub struct AnalyzeOptions {
    pub input: TraceSource,
    /// Tokens per chunk (at least 1).
    pub chunk: u32,
    /// Add per-layer routing uniformity.
    pub per_layer: bool,
    pub format: Option<OutputFormat>,
    /// Write the results here instead of stdout.
    pub output: Option<std::path::PathBuf>,
}

pub fn run(a: AnalyzeOptions) -> Result<()> {
    check_output(a.output.as_deref(), &a.input.input_files())?;
    let loaded = a.input.load()?;
    let tr = &loaded.trace;
    // No whole chunk: U and D are undefined (the seed's script prints zeros).
    if let Some(e) = crate::analyze::no_whole_chunk(tr, a.chunk as usize, a.input.include_prompt) {
        return Err(Error::new(e));
    }
    let res = analyze(tr, a.chunk as usize, a.input.include_prompt, a.per_layer);
    let text = match OutputFormat::for_output(a.format, a.output.as_deref()) {
        OutputFormat::Json => {
            let mut v = serde_json::to_value(&res).expect("json");
            // Without a pair of chunks D is undefined: null, not the 0 the rows hold.
            if !res.d_defined() {
                for row in v["rows"].as_array_mut().expect("rows") {
                    row["avg_new"] = serde_json::Value::Null;
                }
            }
            serde_json::to_string_pretty(&v).expect("json") + "\n"
        }
        OutputFormat::Csv => analysis_csv(&res),
        OutputFormat::Table => analysis_table(&res, tr, loaded.model),
    };
    deliver(
        &text,
        a.output.as_deref(),
        a.input.quiet,
        "the chunk analysis",
    )
}
