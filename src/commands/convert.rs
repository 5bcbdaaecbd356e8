//! `convert`: traces to the binary format or to forum text.

use std::path::PathBuf;

use crate::error::Result;
use crate::input::TraceSource;
use crate::report::{refuse_input_as_output, write_trace, written_trace};

pub struct ConvertOptions {
    pub input: TraceSource,
    /// FILE.mst for the binary format, any other name for a directory of forum files.
    pub output: PathBuf,
    /// Tag every token as prompt processing (a recording of prompts, such as the
    /// MoE-Beyond CSV, to replay in ubatches).
    pub as_prompt: bool,
}

pub fn run(a: ConvertOptions) -> Result<()> {
    crate::report::refuse_stdout_trace(&a.output)?;
    refuse_input_as_output(&a.output, &a.input.traces)?;
    let mut loaded = a.input.load()?;
    if a.as_prompt {
        loaded.trace.prompt.iter_mut().for_each(|p| *p = true);
    }
    let trace = &loaded.trace;
    if !a.as_prompt && !a.input.include_prompt && trace.prompt.iter().any(|&p| p) && !a.input.quiet
    {
        crate::note!("moe-spill: note: convert keeps prompt tokens (--phase applies to replay, not conversion)");
    }
    write_trace(trace, &a.output)?;
    if !a.input.quiet {
        crate::note!(
            "moe-spill: wrote {}",
            written_trace(
                trace,
                &a.output,
                &format!(
                    "{} responses, {} tokens, {} accesses",
                    trace.n_responses(),
                    trace.n_tokens(),
                    trace.n_accesses()
                )
            )
        );
    }
    Ok(())
}
