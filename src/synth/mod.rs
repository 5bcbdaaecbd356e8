//! Synthetic routing traces: `moe-spill synth` and the embedded default trace.
//!
//! The generative model (details in `gen`): per-layer expert popularity with a power-law
//! tail whose skew grows with depth; per response a topic (a share `dead` of each layer's
//! experts left out, log-normal affinity for the rest) that drifts slowly (a share
//! `drift` of the affinities redrawn per token); short-range recall (a pick re-uses an
//! expert of a recent token, lag power-law distributed); and optionally the opening
//! tokens that every response shares (BOS, chat template). `dead` sets U and `drift`
//! sets D, so a target U and D are met by a monotone search (`fit::calibrate`).
//!
//! traces/SYNTHETIC.md documents the model, the calibration, the fit to the recorded
//! DeepSeek-V2-Lite trace and the committed sample.

pub mod fit;
pub mod gen;
mod normal;
mod rng;
mod sampler;
mod simd;
mod work;

use std::path::PathBuf;
use std::time::Instant;

pub use gen::{generate, Params, Shape};

use crate::error::{Error, Result};
use crate::model::Model;
use crate::trace::{Geometry, Trace};

/// The seed's GLM-5 recording: U and D per 128-token chunk (of 19,200 experts).
pub const GLM5_U: f64 = 13190.0;
pub const GLM5_D: f64 = 2412.0;

/// Shape parameters fitted to the recorded DeepSeek-V2-Lite routing (traces/SYNTHETIC.md):
/// topic affinity, recall probability and recall lag exponent. Every preset uses them;
/// `dead` and `drift` are then calibrated to U and D.
pub const AFFINITY: f64 = 0.73;
pub const RECALL: f64 = 0.25;
pub const RECALL_DECAY: f64 = 1.75;
/// The topic drift fitted to DeepSeek-V2-Lite: `--fit` keeps it and sets D with the
/// affinity (see `fit::DKnob`).
pub const FIT_DRIFT: f64 = 0.0045;

/// GLM-5's popularity skew at the first and the last MoE layer (an assumption: the seed
/// only reports that the earliest layers are the most uniform).
pub const GLM5_SKEW: (f64, f64) = (0.2, 0.8);
/// `dead` and `drift` calibrated to U = 13190, D = 2412 by
/// `fit::calibrate(glm-5, ..., seed CALIBRATION_SEED)`; re-measured by the tests.
pub const GLM5_DEAD: f64 = 0.2632;
pub const GLM5_DRIFT: f64 = 0.00464;

/// Seed of the calibration traces.
pub const CALIBRATION_SEED: u64 = 0x5EED;
/// The embedded default: 8 responses of 1,000 decode tokens, this seed.
pub const DEFAULT_RESPONSES: usize = 8;
pub const DEFAULT_TOKENS: usize = 1000;
pub const DEFAULT_SEED: u64 = 5;

/// The parameters of a preset: GLM-5's calibrated ones, for every preset (the others have
/// no recorded U and D to calibrate to; use --target-u/--target-d for a measurement).
pub fn preset_params(m: &Model) -> Params {
    let n = m.n_moe_layers as usize;
    Params {
        skew: Params::depth_skew(n, GLM5_SKEW.0, GLM5_SKEW.1),
        affinity: AFFINITY,
        dead: GLM5_DEAD,
        drift: GLM5_DRIFT,
        recall: RECALL,
        recall_decay: RECALL_DECAY,
        opening: 0,
    }
}

/// Where `--fit` starts: the shape parameters fitted to DeepSeek-V2-Lite (the skew,
/// `dead` and, for D, the affinity are then fitted to the recording).
pub fn fit_base(n_layers: usize) -> Params {
    Params {
        skew: vec![0.0; n_layers],
        affinity: AFFINITY,
        dead: 0.05,
        drift: FIT_DRIFT,
        recall: RECALL,
        recall_decay: RECALL_DECAY,
        opening: 0,
    }
}

/// The embedded default trace: GLM-5, calibrated to the seed's U and D, 8 responses of
/// 1,000 decode tokens (4.8 M accesses), fixed seed.
pub fn default_trace() -> Trace {
    let m = Model::by_name("glm-5").expect("glm-5 preset");
    generate(
        &m.geometry(),
        &preset_params(m),
        &Shape::uniform(DEFAULT_RESPONSES, DEFAULT_TOKENS, 0),
        DEFAULT_SEED,
    )
}

#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// Model preset whose geometry to generate (`moe-spill models`).
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Decode tokens per response [default: 1000; with --fit: the recording's].
    #[arg(long, value_name = "N")]
    pub tokens: Option<usize>,
    /// Responses [default: 8; with --fit: the recording's, lengths repeated in turn].
    #[arg(long, value_name = "N")]
    pub responses: Option<usize>,
    /// Prompt-processing tokens at the start of every response (tagged prompt; skipped by
    /// analyze and replay unless --phase all).
    #[arg(long, value_name = "N")]
    pub prompt_tokens: Option<usize>,
    /// Random seed: the same seed and options give the same trace.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Output: FILE.mst for the binary format, any other name for a directory of
    /// forum-format files single_response_NNN.txt.
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Calibrate to this U (distinct experts per 128-token chunk); needs --target-d.
    #[arg(long, value_name = "U", requires = "target_d")]
    pub target_u: Option<f64>,
    /// Calibrate to this D (new experts per 128-token chunk); needs --target-u.
    #[arg(long, value_name = "D", requires = "target_u")]
    pub target_d: Option<f64>,
    /// Fit the generator to a recorded trace: its geometry, response lengths, shared
    /// opening tokens, per-layer skew (entropy), U and D.
    #[arg(long, value_name = "TRACE", conflicts_with_all = ["target_u", "target_d"])]
    pub fit: Option<PathBuf>,
    /// With --fit: print synthetic versus real (U/D table, per-layer entropy, LRU hit
    /// rates) as Markdown on stdout.
    #[arg(long, requires = "fit")]
    pub compare: bool,
    /// Override the popularity skew: A (every layer) or A:B (first:last MoE layer).
    #[arg(long, value_name = "A[:B]")]
    pub skew: Option<String>,
    /// Override the log-normal sigma of the topic affinity.
    #[arg(long, value_name = "X")]
    pub affinity: Option<f64>,
    /// Override the share of each layer's experts outside a response's topic (sets U).
    #[arg(long, value_name = "X")]
    pub dead: Option<f64>,
    /// Override the share of affinities redrawn per token (sets D).
    #[arg(long, value_name = "X")]
    pub drift: Option<f64>,
    /// Override the probability that a pick re-uses an expert of a recent token.
    #[arg(long, value_name = "X")]
    pub recall: Option<f64>,
    /// Override the exponent of the recall lag distribution (P(d) ~ d^-X).
    #[arg(long, value_name = "X")]
    pub recall_decay: Option<f64>,
    /// Override the number of leading tokens every response shares.
    #[arg(long, value_name = "N")]
    pub opening: Option<usize>,
    /// No report on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

fn check_unit(name: &str, v: Option<f64>, max: f64) -> Result<Option<f64>> {
    match v {
        Some(x) if !(x.is_finite() && (0.0..=max).contains(&x)) => Err(Error::new(format!(
            "--{name} {x}: expected a number from 0 to {max}"
        ))),
        _ => Ok(v),
    }
}

/// Apply the command-line overrides to `p`.
fn overrides(a: &SynthArgs, p: &mut Params) -> Result<()> {
    if let Some(s) = &a.skew {
        let parse = |t: &str| -> Result<f64> {
            t.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && (0.0..=8.0).contains(x))
                .ok_or_else(|| {
                    Error::new(format!(
                        "--skew {s}: expected A or A:B, exponents from 0 to 8"
                    ))
                })
        };
        let (f, l) = match s.split_once(':') {
            Some((f, l)) => (parse(f)?, parse(l)?),
            None => (parse(s)?, parse(s)?),
        };
        p.skew = Params::depth_skew(p.skew.len(), f, l);
    }
    if let Some(x) = check_unit("affinity", a.affinity, 8.0)? {
        p.affinity = x;
    }
    if let Some(x) = check_unit("dead", a.dead, 0.99)? {
        p.dead = x;
    }
    if let Some(x) = check_unit("drift", a.drift, 1.0)? {
        p.drift = x;
    }
    if let Some(x) = check_unit("recall", a.recall, 0.99)? {
        p.recall = x;
    }
    if let Some(x) = check_unit("recall-decay", a.recall_decay, 8.0)? {
        p.recall_decay = x;
    }
    if let Some(n) = a.opening {
        p.opening = n;
    }
    Ok(())
}

/// One line describing parameters.
pub fn describe(p: &Params) -> String {
    let (lo, hi) = p
        .skew
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &s| (a.min(s), b.max(s)));
    let skew = match (p.skew.first(), p.skew.last()) {
        (Some(f), Some(l))
            if p.skew.len() > 2 && (lo < f.min(*l) - 1e-9 || hi > f.max(*l) + 1e-9) =>
        {
            format!("per layer {lo:.3}..{hi:.3}")
        }
        (Some(f), Some(l)) => format!("{f:.3}:{l:.3}"),
        _ => "-".into(),
    };
    format!(
        "--skew {skew} --affinity {:.3} --dead {:.4} --drift {:.5} --recall {:.3} --recall-decay {:.3} --opening {}",
        p.affinity, p.dead, p.drift, p.recall, p.recall_decay, p.opening
    )
}

/// The `synth` subcommand.
pub fn run(a: SynthArgs) -> Result<()> {
    for (name, v) in [("tokens", a.tokens), ("responses", a.responses)] {
        if v == Some(0) {
            return Err(Error::new(format!("--{name} 0: expected at least 1")));
        }
    }
    if a.output.is_none() && !a.compare {
        return Err(Error::new(
            "synth: give -o PATH (FILE.mst for the binary format, otherwise a directory of forum-format files)",
        ));
    }
    let say = |s: String| {
        if !a.quiet {
            eprintln!("moe-spill: {s}");
        }
    };
    let (g, params, shape, chunk, recording): (Geometry, Params, Shape, usize, Option<Trace>) =
        if let Some(path) = &a.fit {
            let loaded = crate::cli::load(&crate::cli::TraceArgs {
                traces: vec![path.clone()],
                model: a.model.clone(),
                phase: crate::cli::PhaseArg::Decode,
                quiet: a.quiet,
            })?;
            let rec = loaded.trace;
            let mut base = fit_base(rec.geometry.n_layers());
            overrides(&a, &mut base)?;
            let t0 = Instant::now();
            let f = fit::fit(&rec, &base, CALIBRATION_SEED)?;
            let mut p = f.params;
            // Explicit overrides win over the fitted values.
            overrides(&a, &mut p)?;
            say(format!(
                "fitted to {} ({}): U = {:.2}, D = {:.2} per {}-token chunk; calibration trace U = {:.2}, D = {:.2} ({:.1} s)",
                path.display(),
                rec.geometry.describe(),
                f.target.0,
                f.target.1,
                f.chunk,
                f.reached.0,
                f.reached.1,
                t0.elapsed().as_secs_f64()
            ));
            let shape = resize(&f.shape, a.responses, a.tokens, a.prompt_tokens);
            (rec.geometry.clone(), p, shape, f.chunk, Some(rec))
        } else {
            let name = a.model.as_deref().ok_or_else(|| {
                Error::new("synth: give --model NAME (see `moe-spill models`) or --fit TRACE")
            })?;
            let m = Model::by_name(name)?;
            let g = m.geometry();
            let mut p = preset_params(m);
            overrides(&a, &mut p)?;
            let prompt = a.prompt_tokens.unwrap_or(0);
            if let (Some(u), Some(d)) = (a.target_u, a.target_d) {
                let t0 = Instant::now();
                let (q, reached) = fit::calibrate(&g, &p, prompt, u, d, CALIBRATION_SEED)?;
                p = q;
                say(format!(
                    "calibrated to U = {u}, D = {d}: calibration trace U = {:.2}, D = {:.2} ({:.1} s)",
                    reached.0,
                    reached.1,
                    t0.elapsed().as_secs_f64()
                ));
            }
            let shape = Shape::uniform(
                a.responses.unwrap_or(DEFAULT_RESPONSES),
                a.tokens.unwrap_or(DEFAULT_TOKENS),
                prompt,
            );
            (g, p, shape, fit::CHUNK, None)
        };
    if g.n_ids() > 1 << 16 {
        return Err(Error::new(format!(
            "{}: more than 65536 experts in all",
            g.describe()
        )));
    }
    say(format!("parameters: {}", describe(&params)));
    let t0 = Instant::now();
    let trace = generate(&g, &params, &shape, a.seed);
    let secs = t0.elapsed().as_secs_f64();
    // U and D of the output, for the report, measured while the file is written (the
    // write mostly waits for the disk). With --compare the file comes after the report.
    let ((u, d), written) = std::thread::scope(|s| {
        let ud = s.spawn(|| crate::analyze::u_d(&trace, chunk, false));
        let written = match &a.output {
            Some(out) if !a.compare => Some(crate::cli::write_trace(&trace, out)),
            _ => None,
        };
        (ud.join().expect("U and D"), written)
    });
    say(format!(
        "generated {} responses, {} tokens, {} accesses in {:.3} s ({:.1} M accesses/s); U = {u:.2}, D = {d:.2} per {chunk}-token chunk",
        trace.n_responses(),
        trace.n_tokens(),
        trace.n_accesses(),
        secs,
        trace.n_accesses() as f64 / secs.max(1e-9) / 1e6
    ));
    if a.compare {
        let rec = recording.as_ref().expect("--compare requires --fit");
        let (text, _) = fit::compare(rec, &trace, chunk)?;
        crate::output::emit(&text, None)?;
    }
    if let Some(out) = &a.output {
        match written {
            Some(result) => result?,
            None => crate::cli::write_trace(&trace, out)?,
        }
        say(format!("wrote {}", out.display()));
    }
    Ok(())
}

/// A recording's shape changed by --responses (lengths repeated in turn), --tokens (every
/// response that many decode tokens) and --prompt-tokens.
fn resize(
    s: &Shape,
    responses: Option<usize>,
    tokens: Option<usize>,
    prompt: Option<usize>,
) -> Shape {
    let n = responses.unwrap_or(s.responses.len());
    Shape {
        responses: (0..n)
            .map(|i| {
                let (p, d) = s.responses[i % s.responses.len()];
                (prompt.unwrap_or(p), tokens.unwrap_or(d))
            })
            .collect(),
    }
}
