//! The replay: a trace's accesses, in order, through one policy at one capacity.
//!
//! Order: token by token; within a token, layers in recorded order; within a layer, the
//! experts in router order. Responses follow one another through the same cache, which
//! starts empty once. Prompt tokens are skipped unless `--phase all`. Layers held in
//! VRAM (the first `gpu_layers` slots) never reach the cache.

use std::borrow::Cow;
use std::path::PathBuf;

use clap::Args;
use moe_spill_policies::registry::{BuildContext, PolicySpec};
use serde::Serialize;

use crate::cli::{load, FormatArgs, PhaseArg, TraceArgs};
use crate::error::{Error, Result};
use crate::output::{emit, fixed, OutputFormat, Table};
use crate::trace::Trace;

#[derive(Args, Debug)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub input: TraceArgs,
    /// Eviction policy: lru, fifo, clock, arc, opt, lfu, sieve, s3fifo, linux[:F],
    /// pinned:N[:POLICY], pin-hot:K[:POLICY].
    #[arg(long, value_name = "SPEC", default_value = "lru")]
    pub policy: String,
    /// Cache capacity in experts.
    #[arg(long, value_name = "N")]
    pub cache_experts: usize,
    /// Profile trace for pin-hot (without it the replayed trace itself is used: an oracle).
    #[arg(long, value_name = "TRACE")]
    pub pin_profile: Option<PathBuf>,
    /// Leave the first N tokens of the run out of the statistics (the cache still sees them).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub warmup_tokens: usize,
    #[command(flatten)]
    pub out: FormatArgs,
}

/// What to replay: which tokens, which layers.
#[derive(Clone, Debug)]
pub struct ReplayPlan<'t> {
    /// Accesses in replay order, `per_token` per token.
    pub stream: Cow<'t, [u16]>,
    pub per_token: usize,
    pub n_tokens: usize,
    /// First slot that reaches the cache.
    pub first_slot: usize,
}

impl<'t> ReplayPlan<'t> {
    pub fn new(trace: &'t Trace, include_prompt: bool, gpu_layers: usize) -> Self {
        let g = &trace.geometry;
        let k = g.top_k as usize;
        let a = g.accesses_per_token();
        let skip = gpu_layers.min(g.n_layers()) * k;
        let all = include_prompt || trace.prompt.iter().all(|&p| !p);
        let stream: Cow<[u16]> = if all && skip == 0 {
            Cow::Borrowed(&trace.ids)
        } else {
            let mut v = Vec::with_capacity(trace.n_accesses());
            for t in 0..trace.n_tokens() {
                if include_prompt || !trace.prompt[t] {
                    v.extend_from_slice(&trace.token(t)[skip..]);
                }
            }
            Cow::Owned(v)
        };
        let per_token = a - skip;
        let n_tokens = if per_token == 0 {
            0
        } else {
            stream.len() / per_token
        };
        ReplayPlan {
            stream,
            per_token,
            n_tokens,
            first_slot: gpu_layers.min(g.n_layers()),
        }
    }

    /// Per-id use counts of the stream (the profile pin-hot uses as an oracle).
    pub fn profile(&self, n_ids: usize) -> Vec<u64> {
        let mut c = vec![0u64; n_ids];
        for &id in self.stream.iter() {
            c[id as usize] += 1;
        }
        c
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimStats {
    pub policy: String,
    pub cache_experts: usize,
    pub tokens: u64,
    pub accesses: u64,
    pub hits: u64,
    pub misses: u64,
    /// Misses on an object's first access in the whole run (no policy avoids them).
    pub cold_misses: u64,
    #[serde(skip)]
    pub misses_per_token: Vec<u32>,
}

/// Replay `plan` through `spec` at `capacity` experts. Tokens before `warmup` are replayed
/// but not counted.
pub fn replay(
    plan: &ReplayPlan,
    spec: &PolicySpec,
    capacity: usize,
    n_ids: usize,
    n_experts: usize,
    profile: Option<&[u64]>,
    warmup: usize,
) -> Result<SimStats> {
    let ctx = BuildContext {
        capacity,
        n_ids,
        n_experts,
        first_slot: plan.first_slot,
        future: spec.needs_future().then_some(&plan.stream[..]),
        profile,
    };
    let mut policy = spec.build(&ctx).map_err(|e| Error::new(e.to_string()))?;
    let pt = plan.per_token;
    let mut misses_per_token = vec![0u32; plan.n_tokens];
    let mut seen = vec![false; n_ids];
    let mut cold = 0u64;
    let mut idx: Vec<u32> = Vec::new();
    // Batches of tokens: one dynamic call per batch, a bounded miss buffer.
    const BATCH_TOKENS: usize = 4096;
    for (b, batch) in plan.stream.chunks(BATCH_TOKENS * pt.max(1)).enumerate() {
        idx.clear();
        policy.replay(batch, &mut idx);
        let base = b * BATCH_TOKENS;
        for &i in &idx {
            let t = base + i as usize / pt;
            misses_per_token[t] += 1;
            let id = batch[i as usize] as usize;
            if !seen[id] {
                seen[id] = true;
                if t >= warmup {
                    cold += 1;
                }
            }
        }
    }
    let counted = &misses_per_token[warmup.min(plan.n_tokens)..];
    let tokens = counted.len() as u64;
    let accesses = tokens * pt as u64;
    let misses: u64 = counted.iter().map(|&m| m as u64).sum();
    Ok(SimStats {
        policy: policy.name(),
        cache_experts: capacity,
        tokens,
        accesses,
        hits: accesses - misses,
        misses,
        cold_misses: cold,
        misses_per_token: counted.to_vec(),
    })
}

pub fn run(a: SimulateArgs) -> Result<()> {
    let spec = PolicySpec::parse(&a.policy).map_err(|e| Error::new(format!("--policy: {e}")))?;
    let loaded = load(&a.input)?;
    let trace = &loaded.trace;
    let g = &trace.geometry;
    let plan = ReplayPlan::new(trace, a.input.phase == PhaseArg::All, 0);
    if plan.n_tokens == 0 {
        return Err(Error::new(
            "the trace has no tokens to replay (only prompt tokens? use --phase all)",
        ));
    }
    let profile = if spec.needs_profile() {
        Some(match &a.pin_profile {
            Some(p) => {
                let prof = load(&TraceArgs {
                    traces: vec![p.clone()],
                    model: loaded.model.map(|m| m.name.to_string()),
                    phase: a.input.phase,
                    quiet: true,
                })?;
                if prof.trace.geometry != *g {
                    return Err(Error::in_file(
                        p,
                        "profile trace geometry differs from the replayed trace",
                    ));
                }
                ReplayPlan::new(&prof.trace, a.input.phase == PhaseArg::All, 0).profile(g.n_ids())
            }
            None => plan.profile(g.n_ids()),
        })
    } else {
        None
    };
    let mut stats = replay(
        &plan,
        &spec,
        a.cache_experts,
        g.n_ids(),
        g.n_experts as usize,
        profile.as_deref(),
        a.warmup_tokens,
    )?;
    if spec.needs_profile() && a.pin_profile.is_none() {
        stats.policy.push_str("(oracle)");
    }
    let text = match OutputFormat::resolve(a.out.format, false) {
        OutputFormat::Json => serde_json::to_string_pretty(&stats).expect("json") + "\n",
        f => {
            let mut t = Table::new(&[
                "policy",
                "cache_experts",
                "tokens",
                "accesses",
                "hits",
                "misses",
                "cold_misses",
                "hit_rate",
                "misses_per_token",
            ]);
            let per = |x: u64, n: u64| if n == 0 { 0.0 } else { x as f64 / n as f64 };
            t.push(vec![
                stats.policy.clone(),
                stats.cache_experts.to_string(),
                stats.tokens.to_string(),
                stats.accesses.to_string(),
                stats.hits.to_string(),
                stats.misses.to_string(),
                stats.cold_misses.to_string(),
                fixed(per(stats.hits, stats.accesses), 6),
                fixed(per(stats.misses, stats.tokens), 4),
            ]);
            if f == OutputFormat::Csv {
                t.to_csv()
            } else {
                t.render()
            }
        }
    };
    emit(&text, None)
}
