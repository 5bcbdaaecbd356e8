//! The command line: every clap type (in `args`), parsed, turned into the commands'
//! settings in one step (`args`' conversions) and dispatched. No other module imports
//! this one or clap; everything downstream trusts its inputs.

pub mod args;

use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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

/// The command line, parsed. Help and version print as clap prints them; a usage error (an
/// unknown flag, a bad or missing value) comes back as one line, as every other error does:
/// clap's message, its tips and the usage, without the blank lines between them.
pub fn parse() -> std::result::Result<Cli, String> {
    // A negative number is a value (`--ssd-bw -1`), refused by the option's own check
    // with its reason, not taken for a flag.
    let command = Cli::command().mut_subcommands(|sc| {
        sc.mut_args(|a| {
            if a.get_action().takes_values() {
                a.allow_negative_numbers(true)
            } else {
                a
            }
        })
    });
    command
        .clone()
        .try_get_matches_from(join_negative_values(
            &command,
            std::env::args_os().collect(),
        ))
        .and_then(|m| Cli::from_arg_matches(&m))
        .map_err(|e| match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
            _ => one_line(&e.render().to_string()),
        })
}

/// `--ram -1..8` as `--ram=-1..8`: a value that starts with '-' and a digit or a dot
/// (a negative range or list; clap takes a lone negative number itself) goes to the
/// option before it, to be refused with that option's reason, not read as flags `-1`.
fn join_negative_values(
    command: &clap::Command,
    args: Vec<std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let Some(sub) = args
        .get(1)
        .and_then(|a| a.to_str())
        .and_then(|name| command.find_subcommand(name))
    else {
        return args;
    };
    let takes_value = |flag: &str| {
        sub.get_arguments().any(|a| {
            a.get_action().takes_values()
                && match flag.strip_prefix("--") {
                    Some(long) => a.get_long() == Some(long),
                    None => {
                        let mut c = flag.chars().skip(1);
                        flag.len() == 2 && c.next() == a.get_short()
                    }
                }
        })
    };
    let negative = |v: &str| {
        let mut c = v.chars();
        c.next() == Some('-') && c.next().is_some_and(|c| c.is_ascii_digit() || c == '.')
    };
    let mut out: Vec<std::ffi::OsString> = Vec::with_capacity(args.len());
    let mut rest = args.into_iter();
    while let Some(a) = rest.next() {
        if a == "--" {
            out.push(a);
            out.extend(rest.by_ref());
            break;
        }
        let flag = a.to_str().filter(|f| f.starts_with('-') && takes_value(f));
        match (flag, rest.as_slice().first().and_then(|v| v.to_str())) {
            (Some(f), Some(v)) if negative(v) => {
                out.push(format!("{f}={v}").into());
                rest.next();
            }
            _ => out.push(a),
        }
    }
    out
}

/// clap's error text in one line: "MESSAGE (TIP; TIP); usage: USAGE".
fn one_line(text: &str) -> String {
    let (mut message, mut tips, mut usage) = (Vec::new(), Vec::new(), None);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(u) = line.strip_prefix("Usage: ") {
            usage = Some(u);
        } else if line.starts_with("tip: to pass '") {
            // "use '-- X'": no option of moe-spill takes a value that starts with '-'.
        } else if line.starts_with("tip: ") {
            tips.push(line);
        } else if !line.starts_with("For more information") {
            message.push(line.strip_prefix("error: ").unwrap_or(line));
        }
    }
    let mut out = message.join(" ");
    if !tips.is_empty() {
        out += &format!(" ({})", tips.join("; "));
    }
    if let Some(u) = usage {
        out += &format!("; usage: {u}");
    }
    out
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

/// The note on machine flags the run's time leaves out (held until the checks pass).
fn note_unused(replay: &args::ReplayArgs, engine: Option<(args::EngineArg, args::AdviceArg)>) {
    if !replay.input.quiet {
        if let Some(n) = replay.hw.unused_note(engine) {
            crate::notes::note(n);
        }
    }
}

/// Run the parsed command line.
pub fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Models(a) => commands::models::run(a.into()),
        Command::Analyze(a) => commands::analyze::run(a.into()),
        Command::Convert(a) => commands::convert::run(a.into()),
        Command::Info(a) => commands::info::run(a.into()),
        Command::Hardware(a) if a.drives => commands::hardware::run_drives(a.out.format()),
        Command::Hardware(a) => commands::hardware::run(a.out.format()),
        Command::Simulate(a) => {
            a.study.io.check()?;
            note_unused(&a.study.replay, Some(a.study.io.engine()));
            commands::simulate::run(a.into())
        }
        Command::Sweep(a) => {
            a.study.io.check()?;
            note_unused(&a.study.replay, Some(a.study.io.engine()));
            commands::sweep::run(a.into())
        }
        Command::Estimate(a) => {
            if !a.input.quiet {
                if let Some(n) = a.hw.unused_note(None) {
                    crate::notes::note(n);
                }
            }
            commands::estimate::run(a.into())
        }
        Command::Synth(a) => commands::synth::run(a.into()),
        Command::Record(a) => commands::record::run(a.into()),
        Command::KernelReplay(a) => commands::kernel_replay::run(a.into()),
        Command::KernelReplayChild => crate::kernel::child_main(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// clap's own checks of the definition, on every subcommand: among them that no two
    /// arguments share an id (clap would give the value to one of them only).
    #[test]
    fn the_command_line_is_well_defined() {
        Cli::command().debug_assert();
    }

    /// The checks run in this build (the release profile keeps clap_builder's debug
    /// assertions on): a command with a duplicate id is refused.
    #[test]
    fn clap_checks_are_on() {
        let refused = std::panic::catch_unwind(|| {
            clap::Command::new("broken")
                .arg(clap::Arg::new("kb").long("a"))
                .arg(clap::Arg::new("kb").long("b"))
                .debug_assert()
        })
        .is_err();
        assert!(
            refused,
            "clap's debug assertions are off: set debug-assertions for clap_builder in Cargo.toml's release profile"
        );
    }
}
