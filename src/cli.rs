//! Command-line parsing (clap) and the subcommands' plumbing. Raw flags are validated
//! here into settings; everything downstream trusts its inputs.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::analyze::{analyze, Analysis, THRESHOLD_LABELS};
use crate::error::{Error, Result};
use crate::format::{self, Layout};
use crate::model::{Model, MODELS};
use crate::output::{emit, fixed, write_atomic, write_dir_atomic, OutputFormat, Table};
use crate::quant::ExpertQuant;
use crate::trace::Trace;

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
    Simulate(crate::study::SimulateArgs),
    /// Every policy at every RAM budget, in parallel; long-form rows for plotting.
    Sweep(crate::sweep::SweepArgs),
    /// The seed's analytic estimate alone, from a trace's U and D or --u N --d N.
    Estimate(crate::estimate::EstimateArgs),
    /// Generate a synthetic routing trace (calibrated to U and D, or fitted to a recording).
    Synth(crate::synth::SynthArgs),
    /// Replay a trace on the real Linux page cache (memory cgroup, mmap'd model-like file)
    /// beside the simulated policies.
    KernelReplay(crate::kernel::KernelReplayArgs),
    /// Internal: the replay process that kernel-replay starts inside its cgroup.
    #[command(hide = true)]
    KernelReplayChild,
}

/// Where traces come from and how they are read.
#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    /// Trace files or directories (forum text, MoE-Beyond CSV or .mst; detected from content).
    #[arg(value_name = "TRACE")]
    pub traces: Vec<PathBuf>,
    /// Model preset (inferred from the trace geometry when exactly one preset matches).
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Replay generated tokens only (decode), or prompt-processing tokens too (all).
    #[arg(long, value_enum, default_value_t = PhaseArg::Decode)]
    pub phase: PhaseArg,
    /// No progress output on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PhaseArg {
    Decode,
    All,
}

#[derive(Args, Debug, Clone)]
pub struct FormatArgs {
    /// Output format (default: table on a terminal, CSV otherwise).
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
}

#[derive(Args, Debug)]
pub struct ModelsArgs {
    /// Expert quant: TYPE, or gate=T,up=T,down=T (default: each model's usual, iq4_xs for most).
    #[arg(long, value_name = "SPEC")]
    pub quant: Option<String>,
    #[command(flatten)]
    pub out: FormatArgs,
}

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    #[command(flatten)]
    pub input: TraceArgs,
    /// Tokens per chunk.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub chunk: u32,
    /// Add per-layer routing uniformity (entropy, top-10% share, distinct experts per chunk).
    #[arg(long)]
    pub per_layer: bool,
    #[command(flatten)]
    pub out: FormatArgs,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    #[command(flatten)]
    pub input: TraceArgs,
    /// Output: FILE.mst for the binary format, any other name for a directory of
    /// forum-format files single_response_NNN.txt.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
}

#[derive(Args, Debug)]
pub struct HardwareListArgs {
    #[command(flatten)]
    pub out: FormatArgs,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub input: TraceArgs,
    #[command(flatten)]
    pub out: FormatArgs,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Models(a) => models(a),
        Command::Analyze(a) => analyze_cmd(a),
        Command::Convert(a) => convert(a),
        Command::Info(a) => info(a),
        Command::Hardware(a) => hardware(a),
        Command::Simulate(a) => crate::study::simulate(a),
        Command::Sweep(a) => crate::sweep::sweep(a),
        Command::Estimate(a) => crate::estimate::estimate(a),
        Command::Synth(a) => crate::synth::run(a),
        Command::KernelReplay(a) => crate::kernel::run(a),
        Command::KernelReplayChild => crate::kernel::child_main(),
    }
}

/// How output names the embedded default trace.
pub const EMBEDDED_LABEL: &str = "embedded-glm-5-synthetic";

/// A trace and the model it belongs to (if known).
pub struct Loaded {
    pub trace: Trace,
    pub model: Option<&'static Model>,
}

/// Load the TRACE arguments and settle the model: the named one (checked against the
/// trace) or the single preset whose geometry matches.
pub fn load(input: &TraceArgs) -> Result<Loaded> {
    let named = input.model.as_deref().map(Model::by_name).transpose()?;
    if input.traces.is_empty() {
        let m = Model::by_name("glm-5")?;
        if let Some(n) = named {
            if n.name != m.name {
                return Err(Error::new(format!(
                    "no TRACE given, and the embedded default trace is {}, not {}: name a trace of {}",
                    m.name, n.name, n.name
                )));
            }
        }
        if !input.quiet {
            eprintln!(
                "moe-spill: no TRACE given: using the embedded default {EMBEDDED_LABEL} (GLM-5 geometry, 8 responses x 1000 tokens, calibrated to the seed's U = 13190, D = 2412)"
            );
        }
        return Ok(Loaded {
            trace: crate::synth::default_trace(),
            model: Some(m),
        });
    }
    let hint = named.map(|m| Layout::of(&m.geometry()));
    let mut files = Vec::new();
    for arg in &input.traces {
        files.extend(format::trace_files(arg)?);
    }
    let bar = crate::progress::bar(
        files.len() as u64,
        "reading",
        input.quiet || files.len() < 50,
    );
    let mut trace = format::load_files(&files, hint.as_ref(), &mut |done, _| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    let model = match named {
        Some(m) => {
            if !m.fits(&trace.geometry, trace.n_experts_known) {
                return Err(Error::new(format!(
                    "the trace ({}) does not match model {} ({})",
                    trace.geometry.describe(),
                    m.name,
                    m.geometry().describe()
                )));
            }
            Some(m)
        }
        None => match Model::matching(&trace.geometry, trace.n_experts_known)[..] {
            [m] => Some(m),
            _ => None,
        },
    };
    if let Some(m) = model {
        trace.set_n_experts(m.n_experts);
        trace.n_experts_known = true;
    }
    Ok(Loaded { trace, model })
}

fn models(a: ModelsArgs) -> Result<()> {
    let mut t = Table::new(&[
        "model",
        "moe_layers",
        "first_moe_layer",
        "experts",
        "top_k",
        "routed_experts",
        "hidden",
        "expert_width",
        "non_expert_params_b",
        "quant",
        "expert_bytes",
        "expert_mib",
        "routed_gib",
        "aliases",
    ]);
    let mut json = Vec::new();
    for m in MODELS {
        let q = match &a.quant {
            Some(s) => ExpertQuant::parse(s, m.default_quant())?,
            None => ExpertQuant::uniform(m.default_quant()),
        };
        let eq = m.effective_quant(q);
        let bytes = m.expert_bytes(q)?;
        let routed = bytes as f64 * m.n_routed_experts() as f64 / (1u64 << 30) as f64;
        t.push(vec![
            m.name.to_string(),
            m.n_moe_layers.to_string(),
            m.first_moe_layer.to_string(),
            m.n_experts.to_string(),
            m.top_k.to_string(),
            m.n_routed_experts().to_string(),
            m.hidden.to_string(),
            m.expert_width.to_string(),
            fixed(m.non_expert_params / 1e9, 2),
            eq.to_string(),
            bytes.to_string(),
            fixed(bytes as f64 / (1u64 << 20) as f64, 4),
            fixed(routed, 1),
            m.aliases.join(" "),
        ]);
        json.push(serde_json::json!({
            "model": m.name, "aliases": m.aliases, "moe_layers": m.moe_layers(),
            "experts": m.n_experts, "top_k": m.top_k, "routed_experts": m.n_routed_experts(),
            "hidden": m.hidden, "expert_width": m.expert_width,
            "non_expert_params": m.non_expert_params, "quant": eq.to_string(), "expert_bytes": bytes,
        }));
    }
    let text = match OutputFormat::resolve(a.out.format, false) {
        OutputFormat::Table => t.render(),
        OutputFormat::Csv => t.to_csv(),
        OutputFormat::Json => serde_json::to_string_pretty(&json).expect("json") + "\n",
    };
    emit(&text, None)
}

fn analyze_cmd(a: AnalyzeArgs) -> Result<()> {
    let loaded = load(&a.input)?;
    let tr = &loaded.trace;
    let res = analyze(
        tr,
        a.chunk as usize,
        a.input.phase == PhaseArg::All,
        a.per_layer,
    );
    if res.chunks == 0 && !a.input.quiet {
        eprintln!(
            "moe-spill: note: no response has {} tokens, so there is no chunk to analyse",
            a.chunk
        );
    }
    let text = match OutputFormat::resolve(a.out.format, false) {
        OutputFormat::Json => serde_json::to_string_pretty(&res).expect("json") + "\n",
        OutputFormat::Csv => analysis_csv(&res),
        OutputFormat::Table => analysis_table(&res, tr, loaded.model),
    };
    emit(&text, None)
}

fn analysis_csv(res: &Analysis) -> String {
    let mut t = Table::new(&["threshold", "avg_active", "avg_new"]);
    for (row, label) in res.rows.iter().zip(THRESHOLD_LABELS) {
        t.push(vec![
            label.to_string(),
            row.avg_active.to_string(),
            row.avg_new.to_string(),
        ]);
    }
    let mut out = t.to_csv();
    if let Some(layers) = &res.per_layer {
        let mut l = Table::new(&["layer", "entropy_bits", "top10_share", "avg_active"]);
        for r in layers {
            l.push(vec![
                r.layer.to_string(),
                r.entropy_bits.to_string(),
                r.top10_share.to_string(),
                r.avg_active.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&l.to_csv());
    }
    out
}

fn analysis_table(res: &Analysis, tr: &Trace, model: Option<&Model>) -> String {
    let mut out = format!(
        "{} responses, {} tokens analysed, {} chunks of {} tokens, {} chunk pairs; {}{}\n\n",
        res.responses,
        res.tokens,
        res.chunks,
        res.chunk_tokens,
        res.chunk_pairs,
        tr.geometry.describe(),
        model.map(|m| format!(" ({})", m.name)).unwrap_or_default()
    );
    let mut t = Table::new(&[
        "threshold",
        "avg active experts (K)",
        "avg new experts (delta)",
    ]);
    for row in &res.rows {
        let label = if row.threshold == 0.999 {
            "99.9%".to_string()
        } else {
            format!("{:.1}%", row.threshold * 100.0)
        };
        t.push(vec![label, fixed(row.avg_active, 2), fixed(row.avg_new, 2)]);
    }
    out.push_str(&t.render());
    let (u, d) = res.u_d();
    let n = tr.geometry.n_ids() as f64;
    out.push_str(&format!(
        "\nU = {u:.2} distinct experts per chunk ({:.1}% of {}), D = {d:.2} new per chunk\n",
        100.0 * u / n,
        tr.geometry.n_ids()
    ));
    if let Some(layers) = &res.per_layer {
        let top = ((tr.geometry.n_experts as f64 * 0.1).round() as usize).max(1);
        let mut l = Table::new(&[
            "layer",
            "entropy (bits)",
            &format!("top {top} share"),
            "distinct/chunk",
        ]);
        for r in layers {
            l.push(vec![
                r.layer.to_string(),
                fixed(r.entropy_bits, 3),
                format!("{:.1}%", 100.0 * r.top10_share),
                fixed(r.avg_active, 2),
            ]);
        }
        out.push_str(&format!(
            "\nPer-layer routing uniformity (max entropy log2({}) = {:.3} bits):\n",
            tr.geometry.n_experts,
            (tr.geometry.n_experts as f64).log2()
        ));
        out.push_str(&l.render());
    }
    out
}

fn convert(a: ConvertArgs) -> Result<()> {
    let loaded = load(&a.input)?;
    let trace = &loaded.trace;
    if a.input.phase == PhaseArg::Decode && trace.prompt.iter().any(|&p| p) && !a.input.quiet {
        eprintln!("moe-spill: note: convert keeps prompt tokens (--phase applies to replay, not conversion)");
    }
    write_trace(trace, &a.output)?;
    if !a.input.quiet {
        eprintln!(
            "moe-spill: wrote {} ({} responses, {} tokens, {} accesses)",
            a.output.display(),
            trace.n_responses(),
            trace.n_tokens(),
            trace.n_accesses()
        );
    }
    Ok(())
}

/// Write a trace to `path`: `.mst` = one binary file, anything else = a directory of
/// forum-format files.
pub fn write_trace(trace: &Trace, path: &Path) -> Result<()> {
    if path.extension().is_some_and(|e| e == "mst") {
        write_atomic(path, |w| format::binary::write(trace, w))
    } else {
        let digits = trace.n_responses().to_string().len().max(3);
        write_dir_atomic(path, |dir| {
            for r in 0..trace.n_responses() {
                let name = format!("single_response_{:0digits$}.txt", r + 1);
                let f = std::fs::File::create(dir.join(name))?;
                let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
                format::forum::write(trace, r, &mut w)?;
                std::io::Write::flush(&mut w)?;
            }
            Ok(())
        })
    }
}

fn info(a: InfoArgs) -> Result<()> {
    let mut bytes = 0u64;
    for arg in &a.input.traces {
        for f in format::trace_files(arg)? {
            bytes += std::fs::metadata(&f).map_err(|e| Error::io(&f, e))?.len();
        }
    }
    let start = std::time::Instant::now();
    let loaded = load(&a.input)?;
    let secs = start.elapsed().as_secs_f64();
    let t = &loaded.trace;
    let g = &t.geometry;
    let prompt = t.prompt.iter().filter(|&&p| p).count();
    let rows: Vec<(&str, String)> = vec![
        ("geometry", g.describe()),
        (
            "model",
            loaded.model.map_or(
                "(none: no single preset matches; pass --model)".into(),
                |m| m.name.to_string(),
            ),
        ),
        ("experts_known", t.n_experts_known.to_string()),
        ("responses", t.n_responses().to_string()),
        ("tokens", t.n_tokens().to_string()),
        ("decode_tokens", (t.n_tokens() - prompt).to_string()),
        ("prompt_tokens", prompt.to_string()),
        ("accesses", t.n_accesses().to_string()),
        ("distinct_experts", {
            let mut seen = vec![false; g.n_ids()];
            t.ids.iter().for_each(|&i| seen[i as usize] = true);
            seen.iter().filter(|&&s| s).count().to_string()
        }),
        ("file_bytes", bytes.to_string()),
        ("load_seconds", format!("{secs:.3}")),
        (
            "load_mb_per_s",
            format!("{:.1}", bytes as f64 / 1e6 / secs.max(1e-9)),
        ),
    ];
    let text = match OutputFormat::resolve(a.out.format, false) {
        OutputFormat::Json => {
            let map: serde_json::Map<String, serde_json::Value> = rows
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
                .collect();
            serde_json::to_string_pretty(&map).expect("json") + "\n"
        }
        OutputFormat::Csv => {
            let mut tb = Table::new(&rows.iter().map(|r| r.0).collect::<Vec<_>>());
            tb.push(rows.iter().map(|r| r.1.clone()).collect());
            tb.to_csv()
        }
        OutputFormat::Table => rows.iter().map(|(k, v)| format!("{k:<17} {v}\n")).collect(),
    };
    emit(&text, None)
}

fn hardware(a: HardwareListArgs) -> Result<()> {
    let presets = crate::hardware::presets();
    let text = match OutputFormat::resolve(a.out.format, false) {
        OutputFormat::Json => serde_json::to_string_pretty(&presets).expect("json") + "\n",
        f => {
            let mut t = Table::new(&[
                "hardware",
                "gpus",
                "vram_gib",
                "vram_gbs",
                "vram_reserve_gib",
                "ram_gib",
                "ram_gbs",
                "ram_reserve_gib",
                "ssd_gbs",
                "ssd_drives",
                "description",
            ]);
            for h in &presets {
                let g = h.gpus.first();
                t.push(vec![
                    h.name.clone(),
                    h.n_gpus().to_string(),
                    g.map_or("0".into(), |g| g.vram_gib.to_string()),
                    g.map_or("-".into(), |g| g.bandwidth_gbs.to_string()),
                    g.map_or("-".into(), |g| g.reserve_gib.to_string()),
                    h.ram.size_gib.to_string(),
                    h.ram.bandwidth_gbs.to_string(),
                    h.ram.reserve_gib.to_string(),
                    h.ssd.bandwidth_gbs.to_string(),
                    h.ssd.drives.to_string(),
                    h.description.clone(),
                ]);
            }
            let mut s = if f == OutputFormat::Csv {
                t.to_csv()
            } else {
                t.render()
            };
            if f == OutputFormat::Table {
                s.push_str("\nSizes in GiB, bandwidths in GB/s (10^9 B/s). Your own machine: --hw FILE.toml (or .json) with the\nfields of `moe-spill hardware --format json`; or override a preset with --vram, --vram-bw, --ram-bw, --ssd-bw, ...\n");
            }
            s
        }
    };
    emit(&text, None)
}
