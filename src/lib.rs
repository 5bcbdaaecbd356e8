//! moe-spill: replay recorded Mixture-of-Experts routing through page-cache eviction
//! policies sized to a RAM budget, count the SSD bytes per token, estimate tokens/s.
//!
//! Dependencies run one way (scripts/import_graph.py checks there is no cycle):
//! `main` -> `cli` (clap, raw flags -> settings) -> `commands` (one file per subcommand)
//! -> `study`, `simulate` (the replay), `timemodel`, `analyze`, `report`, `kernel`,
//! `synth` -> `input`, `format`, `trace`, `model`, `hardware`, `quant`, `units` -> the
//! policies crate.

pub mod analyze;
pub mod cli;
pub mod commands;
pub mod error;
pub mod format;
pub mod hardware;
pub mod ids;
pub mod input;
pub mod kernel;
pub mod mattson;
pub mod model;
pub mod opt_bands;
pub mod progress;
pub mod quant;
pub mod report;
pub mod simulate;
pub mod study;
pub mod synth;
pub mod timemodel;
pub mod trace;
pub mod units;
