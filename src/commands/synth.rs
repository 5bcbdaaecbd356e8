//! `synth`: generate a synthetic routing trace (a preset's geometry, calibrated to U and
//! D, or fitted to a recording) and write it.

use std::path::PathBuf;
use std::time::Instant;

use crate::analyze::{longest_response, u_d, CHUNK_TOKENS};
use crate::error::{printable_path, Error, Result};
use crate::input::TraceSource;
use crate::model::Model;
use crate::report::{emit, write_trace, written_trace};
use crate::synth::{
    describe, fit, fit_base, generate, preset_params, Params, Shape, CALIBRATION_SEED,
    DEFAULT_RESPONSES, DEFAULT_TOKENS,
};
use crate::trace::{Geometry, Trace};

#[derive(Debug)]
pub struct SynthOptions {
    /// Model preset whose geometry to generate (`moe-spill models`).
    pub model: Option<String>,
    /// Decode tokens per response [default: 1000; with --fit: the recording's].
    pub tokens: Option<usize>,
    /// Responses [default: 8; with --fit: the recording's, lengths repeated in turn].
    pub responses: Option<usize>,
    /// Prompt-processing tokens at the start of every response (tagged prompt; skipped by
    /// analyze and replay unless --phase all).
    pub prompt_tokens: Option<usize>,
    /// Random seed: the same seed and options give the same trace.
    pub seed: u64,
    /// Output: FILE.mst for the binary format, any other name for a directory of
    /// forum-format files single_response_NNN.txt.
    pub output: Option<PathBuf>,
    /// Calibrate to this U (distinct experts per 128-token chunk); needs --target-d.
    pub target_u: Option<f64>,
    /// Calibrate to this D (new experts per 128-token chunk); needs --target-u.
    pub target_d: Option<f64>,
    /// Fit the generator to a recorded trace: its geometry, response lengths, shared
    /// opening tokens, per-layer skew (entropy), U and D.
    pub fit: Option<PathBuf>,
    /// With --fit: print synthetic versus real (U/D table, per-layer entropy, LRU hit
    /// rates) as Markdown on stdout.
    pub compare: bool,
    /// Override the popularity skew: A (every layer) or A:B (first:last MoE layer).
    pub skew: Option<String>,
    /// Override the log-normal sigma of the topic affinity.
    pub affinity: Option<f64>,
    /// Override the share of each layer's experts outside a response's topic (sets U).
    pub dead: Option<f64>,
    /// Override the share of affinities redrawn per token (sets D).
    pub drift: Option<f64>,
    /// Override the probability that a pick re-uses an expert of a recent token.
    pub recall: Option<f64>,
    /// Override the exponent of the recall lag distribution (P(d) ~ d^-X).
    pub recall_decay: Option<f64>,
    /// Override the number of leading tokens every response shares.
    pub opening: Option<usize>,
    /// Experts per MoE layer and token instead of the preset's top-k (not with --fit).
    pub top_k: Option<u16>,
    /// No report on stderr.
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
fn overrides(a: &SynthOptions, p: &mut Params) -> Result<()> {
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

/// A shared opening (`--opening`) no longer than the longest response: every response
/// starts with it, and it is generated whole before them.
fn check_opening(opening: Option<usize>, shape: &Shape) -> Result<()> {
    let longest = shape
        .responses
        .iter()
        .map(|&(p, d)| p + d)
        .max()
        .unwrap_or(0);
    match opening {
        Some(n) if n > longest => Err(Error::new(format!(
            "--opening {n}: longer than the responses ({longest} tokens); every response starts with the opening, so at most {longest}"
        ))),
        _ => Ok(()),
    }
}

/// The `synth` subcommand.
pub fn run(a: SynthOptions) -> Result<()> {
    for (name, v) in [("tokens", a.tokens), ("responses", a.responses)] {
        if v == Some(0) {
            return Err(Error::new(format!("--{name} 0: expected at least 1")));
        }
    }
    if a.fit.is_some() && a.top_k.is_some() {
        return Err(Error::new(
            "--top-k applies to --model presets; a fitted trace keeps the recording's top-k",
        ));
    }
    if a.output.is_none() && !a.compare {
        return Err(Error::new(
            "synth: give -o PATH (FILE.mst for the binary format, otherwise a directory of forum-format files)",
        ));
    }
    if let Some(out) = &a.output {
        let inputs: Vec<PathBuf> = a.fit.iter().cloned().collect();
        crate::report::refuse_stdout_trace(out)?;
        crate::report::refuse_input_as_output(out, &inputs)?;
    }
    let say = |s: String| {
        if !a.quiet {
            crate::note!("moe-spill: {s}");
        }
    };
    let (g, params, shape, chunk, recording): (Geometry, Params, Shape, usize, Option<Trace>) =
        if let Some(path) = &a.fit {
            let loaded = TraceSource {
                traces: vec![path.clone()],
                model: a.model.clone(),
                gguf: None,
                include_prompt: false,
                quiet: a.quiet,
            }
            .load()?;
            let rec = loaded.trace;
            let shape = resize(&fit::shape_of(&rec), a.responses, a.tokens, a.prompt_tokens);
            check_opening(a.opening, &shape)?;
            let mut base = fit_base(rec.geometry.n_layers());
            overrides(&a, &mut base)?;
            let t0 = Instant::now();
            let f = fit::fit(&rec, &base, CALIBRATION_SEED)?;
            let mut p = f.params;
            // Explicit overrides win over the fitted values.
            overrides(&a, &mut p)?;
            say(format!(
                "fitted to {} ({}): U = {:.2}, D = {:.2} per {}-token chunk; calibration trace U = {:.2}, D = {:.2} ({:.1} s)",
                printable_path(path),
                rec.geometry.describe(),
                f.target.0,
                f.target.1,
                f.chunk,
                f.reached.0,
                f.reached.1,
                t0.elapsed().as_secs_f64()
            ));
            (rec.geometry.clone(), p, shape, f.chunk, Some(rec))
        } else {
            let name = a.model.as_deref().ok_or_else(|| {
                Error::new("synth: give --model NAME (see `moe-spill models`) or --fit TRACE")
            })?;
            let m = Model::by_name(name)?;
            let mut g = m.geometry();
            if let Some(k) = a.top_k {
                if k == 0 || k > m.n_experts {
                    return Err(Error::new(format!(
                        "--top-k {k}: {} has {} experts per MoE layer; expected 1 to {}",
                        m.name, m.n_experts, m.n_experts
                    )));
                }
                g.top_k = k;
            }
            let mut p = preset_params(m);
            overrides(&a, &mut p)?;
            let prompt = a.prompt_tokens.unwrap_or(0);
            let shape = Shape::uniform(
                a.responses.unwrap_or(DEFAULT_RESPONSES),
                a.tokens.unwrap_or(DEFAULT_TOKENS),
                prompt,
            );
            check_opening(a.opening, &shape)?;
            if let (Some(u), Some(d)) = (a.target_u, a.target_d) {
                // Calibration solves for these two: a value given would be replaced.
                if let Some(flag) = [("--dead", a.dead), ("--drift", a.drift)]
                    .into_iter()
                    .find_map(|(flag, v)| v.map(|_| flag))
                {
                    return Err(Error::new(format!(
                        "{flag} is what --target-u and --target-d calibrate (--dead sets U, --drift sets D): give one or the other"
                    )));
                }
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
            (g, p, shape, CHUNK_TOKENS, None)
        };
    if g.n_ids() > 1 << 16 {
        return Err(Error::new(format!(
            "{}: more than 65536 experts in all",
            g.describe()
        )));
    }
    fits_in_memory(&g, &shape)?;
    say(format!("parameters: {}", describe(&params)));
    let t0 = Instant::now();
    let trace = generate(&g, &params, &shape, a.seed);
    let secs = t0.elapsed().as_secs_f64();
    // U and D of the output, for the report, measured while the file is written (the
    // write mostly waits for the disk). With --compare the file comes after the report.
    let ((u, d), written) = std::thread::scope(|s| {
        let ud = s.spawn(|| u_d(&trace, chunk, false));
        let written = match &a.output {
            Some(out) if !a.compare => Some(write_trace(&trace, out)),
            _ => None,
        };
        (ud.join().expect("U and D"), written)
    });
    // U needs a whole chunk of generated tokens in a response, D two of them.
    let longest = longest_response(&trace, false);
    let ud = if longest < chunk {
        format!("U and D undefined: no response has a whole {chunk}-token chunk")
    } else if longest < 2 * chunk {
        format!("U = {u:.2} per {chunk}-token chunk, D undefined: no response has two")
    } else {
        format!("U = {u:.2}, D = {d:.2} per {chunk}-token chunk")
    };
    say(format!(
        "generated {} responses, {} tokens, {} accesses in {:.3} s ({:.1} M accesses/s); {ud}",
        trace.n_responses(),
        trace.n_tokens(),
        trace.n_accesses(),
        secs,
        trace.n_accesses() as f64 / secs.max(1e-9) / 1e6
    ));
    if a.compare {
        let rec = recording.as_ref().expect("--compare requires --fit");
        let (text, _) = fit::compare(rec, &trace, chunk)?;
        emit(&text, None)?;
    }
    if let Some(out) = &a.output {
        match written {
            Some(result) => result?,
            None => write_trace(&trace, out)?,
        }
        say(format!("wrote {}", written_trace(&trace, out, "")));
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

/// Refuse a trace whose ids (2 bytes per access, plus a byte per token) would not fit in
/// the memory the system has available, before anything is allocated for it.
fn fits_in_memory(g: &Geometry, shape: &Shape) -> Result<()> {
    let tokens: u128 = shape
        .responses
        .iter()
        .map(|&(p, d)| p as u128 + d as u128)
        .sum();
    let bytes = tokens * (2 * g.accesses_per_token() as u128 + 1);
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u128>().ok())
            .map(|kib| kib * 1024)
    });
    match available {
        Some(avail) if bytes > avail => Err(Error::new(format!(
            "synth: {tokens} tokens x {} accesses need {:.1} GB of memory for their ids; {:.1} GB is available (fewer --tokens, --prompt-tokens or --responses)",
            g.accesses_per_token(),
            bytes as f64 / 1e9,
            avail as f64 / 1e9
        ))),
        _ => Ok(()),
    }
}
