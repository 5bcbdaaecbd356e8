//! The command line: every clap type (in `args`), parsed, turned into the commands'
//! settings in one step (`args`' conversions) and dispatched. No other module imports
//! this one or clap; everything downstream trusts its inputs.

pub mod args;

use clap::{Parser, Subcommand};

use crate::commands;
use crate::error::Result;
use args::{
    AnalyzeArgs, ConvertArgs, EstimateArgs, HardwareListArgs, InfoArgs, KernelReplayArgs,
    ModelsArgs, RecordArgs, SimulateArgs, SweepArgs, SynthArgs,
};

#[derive(Parser, Debug)]
#[command(
    name = "moe-spill",
    version,
    about = "Replay recorded MoE expert routing through page-cache policies sized to a RAM budget, count the SSD bytes per token and estimate tokens/s",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the model presets: layers, experts, top-k, expert bytes.
    Models(ModelsArgs),
    /// The seed's chunk analysis: active (U) and new (D) experts per 128-token chunk.
    Analyze(AnalyzeArgs),
    /// Convert traces to the binary format (-o FILE.mst) or to forum text (-o DIR).
    Convert(ConvertArgs),
    /// Describe traces: geometry, model, responses, tokens, accesses, load speed.
    Info(InfoArgs),
    /// List the hardware presets (GPUs, RAM, SSD).
    Hardware(HardwareListArgs),
    /// Replay a trace through one eviction policy at one RAM budget: SSD bytes and tokens/s.
    Simulate(SimulateArgs),
    /// Every policy at every RAM budget, in parallel; long-form rows for plotting.
    Sweep(SweepArgs),
    /// The seed's analytic estimate alone, from a trace's U and D or --u N --d N.
    Estimate(EstimateArgs),
    /// Generate a synthetic routing trace (calibrated to U and D, or fitted to a recording).
    Synth(SynthArgs),
    /// Record real routing: run a GGUF model through llama.cpp on a prompts file and
    /// write every MoE layer's routed experts of every token (build feature `record`).
    Record(RecordArgs),
    /// Replay a trace on the real Linux page cache (memory cgroup, mmap'd model-like file)
    /// beside the simulated policies.
    KernelReplay(KernelReplayArgs),
    /// Internal: the replay process that kernel-replay starts inside its cgroup.
    #[command(hide = true)]
    KernelReplayChild,
}

/// Run the parsed command line.
pub fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Models(a) => commands::models::run(a.into()),
        Command::Analyze(a) => commands::analyze::run(a.into()),
        Command::Convert(a) => commands::convert::run(a.into()),
        Command::Info(a) => commands::info::run(a.into()),
        Command::Hardware(a) => commands::hardware::run(a.out.format()),
        Command::Simulate(a) => commands::simulate::run(a.into()),
        Command::Sweep(a) => commands::sweep::run(a.into()),
        Command::Estimate(a) => commands::estimate::run(a.into()),
        Command::Synth(a) => commands::synth::run(a.into()),
        Command::Record(a) => commands::record::run(a.into()),
        Command::KernelReplay(a) => commands::kernel_replay::run(a.into()),
        Command::KernelReplayChild => crate::kernel::child_main(),
    }
}
