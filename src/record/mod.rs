//! `record`'s engine: a GGUF model run through llama.cpp on a list of prompts, every MoE
//! layer's routed experts of every token read from the layer's `ffn_moe_topk` tensor
//! (an I32 tensor of top-k expert ids per token, in router order) through the
//! scheduler's eval callback, and assembled into a trace.
//!
//! llama.cpp is built only with the cargo feature `record` (`llama`, the one file that
//! calls it); the prompts reader (`prompts`) and the assembly of routing into a trace
//! (`routing`) build and are tested without it.

pub mod prompts;
pub mod routing;

#[cfg(feature = "record")]
mod llama;
#[cfg(feature = "record")]
mod signal;

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::trace::Trace;

pub use prompts::{read_prompts, Prompt};

/// Whether this binary was built with llama.cpp (the cargo feature `record`).
pub const AVAILABLE: bool = cfg!(feature = "record");

/// How to get a binary that records, for the message of one built without llama.cpp.
pub const BUILD_HINT: &str = "record needs llama.cpp, which this moe-spill was built without: build it with `cargo install --path . --features record` (needs cmake, a C/C++ compiler and libclang; see docs/record.md)";

/// What to run and how.
#[derive(Clone, Debug)]
pub struct RecordSettings {
    /// The model file.
    pub gguf: PathBuf,
    /// The prompts file (named in messages about a prompt).
    pub prompts: PathBuf,
    /// Generated tokens per prompt (fewer when the model ends its answer first).
    pub tokens: usize,
    /// Sampling temperature; 0 picks the most likely token (greedy).
    pub temp: f32,
    /// Seed of the sampler (used when `temp` > 0).
    pub seed: u32,
    /// CPU threads.
    pub threads: usize,
    /// Context size in tokens: a prompt plus its generated tokens must fit.
    pub ctx_size: usize,
    /// Generate all `tokens` even past an end-of-generation token.
    pub ignore_eos: bool,
}

/// What a run recorded.
pub struct Recorded {
    /// Every recorded token (None when interrupted before the first one).
    pub trace: Option<Trace>,
    /// Stopped early by Ctrl-C (SIGINT), SIGTERM or SIGHUP: the trace holds what came
    /// before.
    pub interrupted: bool,
    /// Responses that ended at an end-of-generation token before `tokens`.
    pub ended_early: usize,
}

/// Progress of a run: tokens recorded so far, of `total` planned (after tokenizing).
pub trait Progress {
    fn start(&mut self, total: u64);
    fn advance(&mut self, tokens: u64);
}

/// Run the model on `prompts` and record its routing. Ctrl-C (SIGINT), SIGTERM or SIGHUP
/// stops the run at the next token (or inside a batch) and returns what was recorded so
/// far.
pub fn record(
    settings: &RecordSettings,
    prompts: &[Prompt],
    progress: &mut dyn Progress,
) -> Result<Recorded> {
    if prompts.is_empty() {
        return Err(Error::new("no prompts to run"));
    }
    run(settings, prompts, progress)
}

#[cfg(feature = "record")]
fn run(s: &RecordSettings, prompts: &[Prompt], progress: &mut dyn Progress) -> Result<Recorded> {
    llama::run(s, prompts, progress)
}

#[cfg(not(feature = "record"))]
fn run(_: &RecordSettings, _: &[Prompt], _: &mut dyn Progress) -> Result<Recorded> {
    Err(Error::new(BUILD_HINT))
}
