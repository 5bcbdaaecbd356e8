//! moe-spill: replay recorded Mixture-of-Experts routing through page-cache eviction
//! policies sized to a RAM budget, count the SSD bytes per token, estimate tokens/s.
//!
//! Data flows one way: `format` (readers) -> `trace` -> `simulate` (a policy from
//! moe-spill-policies per run) -> stats -> output. `analyze` is the seed's chunk analysis.

pub mod analyze;
pub mod cli;
pub mod cpu;
pub mod decode;
pub mod drive;
pub mod error;
pub mod estimate;
pub mod format;
pub mod hardware;
pub mod ids;
pub mod io_engine;
pub mod kernel;
pub mod mattson;
pub mod model;
pub mod opt_bands;
pub mod output;
pub mod progress;
pub mod quant;
pub mod simulate;
pub mod study;
pub mod sweep;
pub mod synth;
pub mod timemodel;
pub mod trace;
