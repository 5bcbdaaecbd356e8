//! `record`: run a GGUF model through llama.cpp on a prompts file and write the routing
//! it took as a trace (docs/record.md). Needs the cargo feature `record`.

use std::path::PathBuf;

use indicatif::ProgressBar;

use crate::error::{Error, Result};
use crate::record::{self, read_prompts, RecordSettings};
use crate::report::write_trace;

#[derive(Debug)]
pub struct RecordOptions {
    /// The model file (required; optional here so a binary without llama.cpp can say
    /// how to get one whatever it was given).
    pub gguf: Option<PathBuf>,
    /// One prompt per line, or JSON Lines with a "prompt" field.
    pub prompts: Option<PathBuf>,
    /// FILE.mst for the binary format, any other name for a directory of forum files.
    pub output: Option<PathBuf>,
    pub tokens: usize,
    pub temp: f32,
    pub seed: u32,
    /// CPU threads (None: every core).
    pub threads: Option<usize>,
    pub ctx_size: usize,
    pub ignore_eos: bool,
    pub quiet: bool,
}

struct Bar {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl record::Progress for Bar {
    fn start(&mut self, total: u64) {
        self.bar = Some(crate::progress::bar(total, "recording", self.quiet));
    }

    fn advance(&mut self, tokens: u64) {
        if let Some(b) = &self.bar {
            b.inc(tokens);
        }
    }
}

pub fn run(a: RecordOptions) -> Result<()> {
    if !record::AVAILABLE {
        return Err(Error::new(record::BUILD_HINT));
    }
    let need = |p: Option<PathBuf>, flag: &str| {
        p.ok_or_else(|| Error::new(format!("record needs {flag}")))
    };
    let gguf = need(a.gguf, "--gguf FILE (the model)")?;
    let prompts_path = need(a.prompts, "--prompts FILE")?;
    let output = need(a.output, "-o PATH (FILE.mst or a directory)")?;
    crate::report::refuse_stdout_trace(&output)?;
    if !(a.temp.is_finite() && a.temp >= 0.0) {
        return Err(Error::new(format!(
            "--temp {}: expected a number of 0 or more (0: greedy)",
            a.temp
        )));
    }
    for (input, what) in [(&gguf, "the model"), (&prompts_path, "the prompts file")] {
        let same = std::fs::canonicalize(input)
            .ok()
            .is_some_and(|i| std::fs::canonicalize(&output).is_ok_and(|o| o == i));
        if same {
            return Err(Error::in_file(
                &output,
                format!("is {what}; choose another -o"),
            ));
        }
    }
    let prompts = read_prompts(&prompts_path)?;
    let settings = RecordSettings {
        gguf,
        prompts: prompts_path,
        tokens: a.tokens,
        temp: a.temp,
        seed: a.seed,
        threads: a
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        ctx_size: a.ctx_size,
        ignore_eos: a.ignore_eos,
    };
    let mut bar = Bar {
        bar: None,
        quiet: a.quiet,
    };
    let recorded = record::record(&settings, &prompts, &mut bar)?;
    if let Some(b) = &bar.bar {
        b.finish_and_clear();
    }
    let Some(trace) = recorded.trace else {
        return Err(Error::new(
            "interrupted before the first token was recorded: nothing written",
        ));
    };
    write_trace(&trace, &output)?;
    let prompt = trace.prompt.iter().filter(|&&p| p).count();
    let summary = crate::report::written_trace(
        &trace,
        &output,
        &format!(
            "{} responses, {} tokens: {prompt} prompt, {} generated; {}",
            trace.n_responses(),
            trace.n_tokens(),
            trace.n_tokens() - prompt,
            trace.geometry.describe()
        ),
    );
    if recorded.interrupted {
        return Err(Error::new(format!(
            "interrupted: what was recorded before it is in {summary}"
        )));
    }
    if !a.quiet {
        crate::note!("moe-spill: wrote {summary}");
        if recorded.ended_early > 0 {
            crate::note!(
                "moe-spill: note: {} of {} responses ended at an end-of-generation token before -n {} (--ignore-eos generates them all)",
                recorded.ended_early,
                trace.n_responses(),
                settings.tokens
            );
        }
    }
    Ok(())
}
