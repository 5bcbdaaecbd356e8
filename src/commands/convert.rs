//! `convert`: traces to the binary format or to forum text.

use std::path::PathBuf;

use crate::error::{printable_path, Result};
use crate::input::TraceSource;
use crate::report::{refuse_input_as_output, write_trace};

pub struct ConvertOptions {
    pub input: TraceSource,
    /// FILE.mst for the binary format, any other name for a directory of forum files.
    pub output: PathBuf,
}

pub fn run(a: ConvertOptions) -> Result<()> {
    refuse_input_as_output(&a.output, &a.input.traces)?;
    let loaded = a.input.load()?;
    let trace = &loaded.trace;
    if !a.input.include_prompt && trace.prompt.iter().any(|&p| p) && !a.input.quiet {
        crate::note!("moe-spill: note: convert keeps prompt tokens (--phase applies to replay, not conversion)");
    }
    write_trace(trace, &a.output)?;
    if !a.input.quiet {
        crate::note!(
            "moe-spill: wrote {} ({} responses, {} tokens, {} accesses)",
            printable_path(&a.output),
            trace.n_responses(),
            trace.n_tokens(),
            trace.n_accesses()
        );
    }
    Ok(())
}
