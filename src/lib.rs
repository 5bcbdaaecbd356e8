//! moe-spill: replay recorded Mixture-of-Experts routing through page-cache eviction
//! policies sized to a RAM budget, count the SSD bytes per token, estimate tokens/s.
//!
//! Dependencies run one way (scripts/import_graph.py checks there is no cycle):
//! `main` -> `cli` (clap, raw flags -> settings) -> `commands` (one file per subcommand)
//! -> `setup`, `costing` (counts priced by the time model), `replay`, `timemodel` (and `decode`, `io_engine`: the I/O model),
//! `analyze`, `report`, `kernel`, `synth`, `record` (llama.cpp, feature `record`) ->
//! `input`, `weights` (a model's expert and non-expert bytes per layer, from a preset or
//! a GGUF file), `format` (trace formats and the GGUF reader), `trace`, `model`,
//! `hardware` (with `drive` and `cpu`), `quant`, `units` -> the policies crate (the
//! policies and their one-pass miss curves).

/// A note on stderr: held until the command's checks pass (`notes`), then printed.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {{
        $crate::notes::note(format!($($arg)*));
    }};
}

pub mod analyze;
pub mod cli;
pub mod commands;
pub mod costing;
pub mod cpu;
pub mod decode;
pub mod drive;
pub mod drive_presets;
pub mod error;
pub mod fault_overlap;
pub mod format;
pub mod hardware;
pub mod ids;
pub mod input;
pub mod io_engine;
pub mod kernel;
pub mod model;
pub mod notes;
pub mod progress;
pub mod quant;
pub mod record;
pub mod replay;
pub mod report;
pub mod setup;
pub mod step_time;
pub mod synth;
pub mod timemodel;
pub mod trace;
pub mod units;
pub mod weights;
