//! The subcommands, one file each: a thin `run` that takes its settings (validated by
//! `cli`) and calls the replay, time model, analysis and report modules.

pub mod analyze;
pub mod convert;
pub mod estimate;
pub mod hardware;
pub mod info;
pub mod kernel_replay;
pub mod models;
pub mod record;
pub mod simulate;
pub mod sweep;
pub mod synth;
