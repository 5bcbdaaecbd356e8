//! `estimate`: the seed's analytic model alone (its lost estimate_speed.py, reconstructed
//! in model_facts.md section 5), from a trace's U and D or from `--u N --d N`.

use serde::Serialize;

use crate::analyze::u_d;
use crate::error::{Error, Result};
use crate::hardware::{Hardware, HardwareOverrides};
use crate::input::TraceSource;
use crate::model::Model;
use crate::quant::{quant_type, ExpertQuant};
use crate::report::{check_output, deliver, OutputFormat, Table};
use crate::setup::weights_of;
use crate::timemodel::{analytic_ssd_bytes_per_token, token_time, Placement, GB};
use crate::weights::gguf;

#[derive(Debug)]
pub struct EstimateOptions {
    pub input: TraceSource,
    /// Distinct experts per chunk (U), instead of measuring a trace (model: --model,
    /// default glm-5).
    pub u: Option<f64>,
    /// New experts per chunk (D), with --u.
    pub d: Option<f64>,
    /// Tokens per chunk (the seed's 128).
    pub chunk: u32,
    /// Expert quant: TYPE, or gate=T,up=T,down=T (default: the model's usual).
    pub quant: Option<String>,
    /// GGUF type of the non-expert weights.
    pub non_expert_quant: String,
    pub hw: HardwareOverrides,
    /// Installed RAM (default: the profile's).
    pub ram: Option<f64>,
    pub format: Option<OutputFormat>,
    /// Write the results here instead of stdout.
    pub output: Option<std::path::PathBuf>,
}

/// U and D a trace of `model` could give: U at least one token's experts and at most
/// what a chunk can route to (every MoE layer's, and top-k per layer and token), D at
/// most U.
fn check_u_d(model: &Model, u: f64, d: f64, chunk: u32) -> Result<()> {
    let layers = model.n_moe_layers as f64;
    let most = (layers * model.n_experts as f64).min(layers * model.top_k as f64 * chunk as f64);
    if u > most {
        return Err(Error::new(format!(
            "--u {u} is more than a {chunk}-token chunk of {} can route to ({most}: {} MoE layers x {} experts, top-{})",
            model.name, model.n_moe_layers, model.n_experts, model.top_k
        )));
    }
    // A chunk has a token at least, which routes to top-k experts of every layer.
    let least = layers * model.top_k as f64;
    if u < least {
        return Err(Error::new(format!(
            "--u {u} is fewer than one token of {} routes to ({least}: {} MoE layers x top-{})",
            model.name, model.n_moe_layers, model.top_k
        )));
    }
    if d > u {
        return Err(Error::new(format!(
            "--d {d} is more than --u {u}: the experts new in a chunk are among its distinct ones"
        )));
    }
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct Estimate {
    pub model: String,
    pub hw: String,
    pub quant: String,
    pub expert_bytes: u64,
    pub ram_gib: f64,
    pub gpu_layers: usize,
    pub cache_experts: usize,
    pub u: f64,
    pub d: f64,
    pub u_cpu: f64,
    pub d_cpu: f64,
    pub s: f64,
    pub chunk: usize,
    pub t_vram_ms: f64,
    pub t_ram_ms: f64,
    pub t_ssd_ms: f64,
    pub analytic_ssd_bytes_per_token: f64,
    pub analytic_tok_s: f64,
}

pub fn run(a: EstimateOptions) -> Result<()> {
    let mut inputs = a.input.input_files();
    inputs.extend(a.hw.profile_file());
    check_output(a.output.as_deref(), &inputs)?;
    let (model, file, u, d) = match (a.u, a.d) {
        (Some(u), Some(d)) => {
            if !a.input.traces.is_empty() {
                return Err(Error::new("give either TRACE or --u/--d, not both"));
            }
            if !(u >= 0.0 && d >= 0.0 && u.is_finite() && d.is_finite()) {
                return Err(Error::new("--u and --d must be zero or positive"));
            }
            match &a.input.gguf {
                Some(p) => {
                    let g = gguf::read(p)?;
                    (g.model(), Some(g), u, d)
                }
                None => (
                    Model::by_name(a.input.model.as_deref().unwrap_or("glm-5"))?,
                    None,
                    u,
                    d,
                ),
            }
        }
        _ => {
            let loaded = a.input.load()?;
            let model = loaded.model.ok_or_else(|| {
                Error::new(format!(
                    "no model preset matches the trace ({}): pass --model",
                    loaded.trace.geometry.describe()
                ))
            })?;
            let tr = &loaded.trace;
            let chunk = a.chunk as usize;
            if let Some(e) = crate::analyze::no_whole_chunk(tr, chunk, a.input.include_prompt) {
                return Err(Error::new(format!("{e}, or --u N --d N")));
            }
            let longest = crate::analyze::longest_response(tr, a.input.include_prompt);
            if longest < 2 * chunk {
                return Err(Error::new(format!(
                    "no response has two whole {chunk}-token chunks (the longest has {longest} tokens): D, the experts new against the previous chunk, is undefined; give a smaller --chunk, or --u N --d N"
                )));
            }
            let (u, d) = u_d(tr, chunk, a.input.include_prompt);
            (model, loaded.gguf, u, d)
        }
    };
    if a.u.is_some() {
        check_u_d(model, u, d, a.chunk)?;
    }
    let weights = weights_of(model, file.as_ref(), a.quant.as_deref())?;
    let neq = quant_type(&a.non_expert_quant)
        .map_err(|e| Error::new(format!("--non-expert-quant: {}", e.0)))?;
    let hw = a.hw.resolve(a.ram)?;
    // As simulate and sweep take such a budget: no page cache.
    if hw.ram.size_gib < hw.ram.reserve_gib && !a.input.quiet {
        crate::note!(
            "moe-spill: note: RAM {} GiB is below the {} GiB reserve of `{}` (--ram-reserve): no page cache",
            hw.ram.size_gib,
            hw.ram.reserve_gib,
            hw.name
        );
    }
    let p = Placement::new(model, &weights, neq, &hw)?;
    let c = p.ram_capacity(hw.ram.size_gib, hw.ram.reserve_gib);
    // The seed's model prices expert bytes alone; a real run reads the non-expert
    // weights beyond the RAM every token (simulate's I/O model counts them).
    let paged = p.paged_non_expert_bytes(hw.ram.size_gib, hw.ram.reserve_gib);
    if paged > 0.0 && hw.ram.size_gib >= hw.ram.reserve_gib && !a.input.quiet {
        crate::note!(
            "moe-spill: note: at {} GiB the non-expert weights do not fit beside the {} GiB reserve: a real run reads {:.2} GB of them from the drive every token, which the analytic model leaves out (simulate counts them); they fit from {:.1} GiB",
            hw.ram.size_gib,
            hw.ram.reserve_gib,
            paged / GB,
            crate::units::tenth_up(p.ram_for_capacity(0, hw.ram.reserve_gib))
        );
    }
    let chunk = a.chunk as usize;
    let ssd = analytic_ssd_bytes_per_token(&p, u, d, c, chunk);
    let t = token_time(&p, &hw, ssd);
    let f = p.cpu_fraction();
    let e = Estimate {
        model: model.name.into(),
        hw: hw.label(),
        quant: weights.quant_label(),
        expert_bytes: p.expert_bytes,
        ram_gib: hw.ram.size_gib,
        gpu_layers: p.gpu_layers,
        cache_experts: c,
        u,
        d,
        u_cpu: u * f,
        d_cpu: d * f,
        s: (u * f - c as f64).max(0.0),
        chunk,
        t_vram_ms: t.t_vram * 1e3,
        t_ram_ms: t.t_ram * 1e3,
        t_ssd_ms: t.t_ssd * 1e3,
        analytic_ssd_bytes_per_token: ssd,
        analytic_tok_s: t.tok_s(),
    };
    let text = match OutputFormat::for_output(a.format, a.output.as_deref()) {
        OutputFormat::Json => serde_json::to_string_pretty(&e).expect("json") + "\n",
        OutputFormat::Csv => {
            let v = serde_json::to_value(&e).expect("json");
            let obj = v.as_object().expect("object");
            let mut t = Table::new(&obj.keys().map(|k| k.as_str()).collect::<Vec<_>>());
            t.push(
                obj.values()
                    .map(|v| v.as_str().map_or(v.to_string(), |s| s.to_string()))
                    .collect(),
            );
            t.to_csv()
        }
        OutputFormat::Table => explain(&e, &p, &hw, paged),
    };
    deliver(&text, a.output.as_deref(), a.input.quiet, "the estimate")
}

/// The estimate as text; `paged`: the non-expert bytes beyond the RAM, left out.
fn explain(e: &Estimate, p: &Placement, hw: &Hardware, paged: f64) -> String {
    let mib = p.expert_bytes as f64 / (1u64 << 20) as f64;
    let s0_ms =
        e.d_cpu * p.expert_bytes as f64 / (e.chunk as f64 * hw.ssd_bandwidth_gbs() * GB) * 1e3;
    format!(
        "model {} at {} ({} B = {:.4} MiB per expert{}), {} MoE layers\n\
         machine {}: {}\n\
         placement: {} MoE layers in VRAM, non-expert weights {:.2} GB ({:.2} GB of them on the CPU side{});\n\
         \x20          page cache C = floor(({} GiB - {} GiB reserve - non-expert in RAM) / expert) = {} experts\n\
         U = {:.2}, D = {:.2} per {}-token chunk; CPU side U = {:.2}, D = {:.2}; S = max(0, U - C) = {:.2}\n\n\
         t_vram = {:>7.1} ms\n\
         t_ram  = {:>7.1} ms\n\
         t_ssd  = {:>7.1} ms   (D + S) x expert / {} = {:.1} MiB per token, over {} GB/s\n\
         total  = {:>7.1} ms   -> {:.2} tok/s (analytic)\n\n\
         At S = 0 the SSD term is D x expert / ({} x SSD bw) = {:.1} ms per token here. The seed's GLM-5 example,\n\
         \"45/(128*7) = 50 ms\", divides GiB of data (2412 x 19.125 MiB = 45.05 GiB) by GB/s; in consistent units\n\
         (48.37 GB / (128 x 7 GB/s)) it is {:.1} ms. Sizes here are GiB (2^30 B), bandwidths GB/s (10^9 B/s).\n",
        e.model,
        e.quant,
        p.expert_bytes,
        mib,
        if p.uniform() {
            ""
        } else {
            ", the mean over the CPU-side layers"
        },
        p.n_layers,
        hw.name,
        hw.describe(),
        p.gpu_layers,
        p.non_expert_bytes / GB,
        p.non_expert_ram_bytes / GB,
        if paged > 0.0 {
            format!(", {:.2} GB of those beyond the RAM, left out", paged / GB)
        } else {
            String::new()
        },
        hw.ram.size_gib,
        hw.ram.reserve_gib,
        e.cache_experts,
        e.u,
        e.d,
        e.chunk,
        e.u_cpu,
        e.d_cpu,
        e.s,
        e.t_vram_ms,
        e.t_ram_ms,
        e.t_ssd_ms,
        e.chunk,
        e.analytic_ssd_bytes_per_token / (1u64 << 20) as f64,
        hw.ssd_bandwidth_gbs(),
        e.t_vram_ms + e.t_ram_ms + e.t_ssd_ms,
        e.analytic_tok_s,
        e.chunk,
        s0_ms,
        seed_example_ms(),
    )
}

/// The seed's "45/(128*7)" in consistent units: D = 2412 GLM-5 IQ4_XS experts over 128
/// tokens at 7 GB/s.
pub fn seed_example_ms() -> f64 {
    let glm = Model::by_name("glm-5").expect("preset");
    let e = glm
        .expert_bytes(ExpertQuant::uniform(quant_type("iq4_xs").expect("type")))
        .expect("bytes") as f64;
    2412.0 * e / (128.0 * 7.0 * GB) * 1e3
}
