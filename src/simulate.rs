//! The replay: a trace's accesses, in order, through a policy sized to a budget, and the
//! statistics and time estimate of one (policy, budget) run.
//!
//! Order: token by token; within a token, layers in recorded order; within a layer, the
//! experts in router order. Responses follow one another through the same cache, which
//! starts empty once. Prompt tokens are skipped unless `--phase all`. Layers held in
//! VRAM (the first `gpu_layers` MoE layers) never reach the cache.

use std::borrow::Cow;

use moe_spill_policies::registry::{BaseSpec, BuildContext, PolicySpec};
use moe_spill_policies::OptFuture;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::hardware::Hardware;
use crate::mattson::{self, lru_curves, Curves};
use crate::opt_bands::OptBands;
use crate::report::rows::Row;
use crate::timemodel::{analytic_ssd_bytes_per_token, token_time, Placement, GIB};
use crate::trace::Trace;

/// One global cache (the page cache), or one cache per MoE layer of capacity/n_layers
/// (explicit expert caches in llama.cpp forks and MLX tools).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Partition {
    Global,
    PerLayer,
}

impl Partition {
    pub fn name(self) -> &'static str {
        match self {
            Partition::Global => "global",
            Partition::PerLayer => "per-layer",
        }
    }
}

/// What to replay: which tokens, which layers.
#[derive(Clone, Debug)]
pub struct ReplayPlan<'t> {
    /// Accesses in replay order, `per_token` per token.
    pub stream: Cow<'t, [u16]>,
    pub per_token: usize,
    pub n_tokens: usize,
    pub top_k: usize,
    pub n_experts: usize,
    pub n_ids: usize,
    /// First slot that reaches the cache (slots before it are in VRAM).
    pub first_slot: usize,
    /// Whether runs count misses per slot (`Counts::misses_per_slot`; per-layer output).
    /// On by default; a study that prints no per-layer numbers turns it off, which
    /// saves a table lookup per miss.
    pub per_slot: bool,
    /// Bytes of one expert, when a model is known: the `linux` policy sizes its
    /// active:inactive ratio from the cache's bytes, as the kernel does.
    pub expert_bytes: Option<u64>,
    /// Position of every id's first access (see `first_use`).
    first_use: std::sync::OnceLock<Vec<usize>>,
    /// The stream prepared for opt, built by the first opt run and shared by the others.
    opt_future: std::sync::OnceLock<std::result::Result<OptFuture, String>>,
}

impl<'t> ReplayPlan<'t> {
    pub fn new(trace: &'t Trace, include_prompt: bool, gpu_layers: usize) -> Self {
        let g = &trace.geometry;
        let k = g.top_k as usize;
        let a = g.accesses_per_token();
        let first_slot = gpu_layers.min(g.n_layers());
        let skip = first_slot * k;
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
        let n_tokens = trace.n_replayed(include_prompt);
        ReplayPlan {
            stream,
            per_token,
            n_tokens,
            top_k: k,
            n_experts: g.n_experts as usize,
            n_ids: g.n_ids(),
            first_slot,
            expert_bytes: None,
            per_slot: true,
            first_use: std::sync::OnceLock::new(),
            opt_future: std::sync::OnceLock::new(),
        }
    }

    /// MoE layers that reach the cache.
    pub fn n_slots(&self) -> usize {
        self.per_token / self.top_k.max(1)
    }

    /// Per-id use counts of the stream (the profile pin-hot uses as an oracle).
    pub fn profile(&self) -> Vec<u64> {
        let mut c = vec![0u64; self.n_ids];
        for &id in self.stream.iter() {
            c[id as usize] += 1;
        }
        c
    }

    /// Where each id is first accessed in the stream (`usize::MAX`: never), from one
    /// pass made the first time any of the cold-miss questions below is asked. The pass
    /// stops once every id has been seen, usually early in the stream.
    fn first_use(&self) -> &[usize] {
        self.first_use.get_or_init(|| {
            let mut first = vec![usize::MAX; self.n_ids];
            let mut unseen = self.n_ids;
            for (i, &id) in self.stream.iter().enumerate() {
                let f = &mut first[id as usize];
                if *f == usize::MAX {
                    *f = i;
                    unseen -= 1;
                    if unseen == 0 {
                        break;
                    }
                }
            }
            first
        })
    }

    /// Misses no policy avoids: ids whose first access comes at or after token `warmup`.
    pub fn cold_misses(&self, warmup: usize) -> u64 {
        let cut = warmup.saturating_mul(self.per_token);
        self.first_use()
            .iter()
            .filter(|&&f| f != usize::MAX && f >= cut)
            .count() as u64
    }

    /// The ids `spec` pins in this plan (none for an undecorated policy); errors as
    /// building the policy would (no profile for pin-hot, layers out of range).
    pub fn pinned_ids(&self, spec: &PolicySpec, profile: Option<&[u64]>) -> Result<Vec<u32>> {
        let ctx = BuildContext {
            capacity: usize::MAX,
            n_ids: self.n_ids,
            n_experts: self.n_experts,
            first_slot: self.first_slot,
            future: None,
            opt_future: None,
            profile,
            expert_bytes: self.expert_bytes,
        };
        spec.pinned_ids(&ctx).map_err(|e| Error::new(e.to_string()))
    }

    /// The stream with opt's next-use keys, prepared once.
    pub fn opt_future(&self) -> Result<&OptFuture> {
        self.opt_future
            .get_or_init(|| OptFuture::new(&self.stream, self.n_ids))
            .as_ref()
            .map_err(|e| Error::new(e.clone()))
    }

    /// Distinct ids in the stream.
    pub fn distinct(&self) -> usize {
        self.cold_misses(0) as usize
    }

    /// The counts of a cache of 0: every access misses.
    pub fn all_miss(&self, warmup: usize) -> Counts {
        let counted = self.n_tokens.saturating_sub(warmup) as u64;
        Counts {
            misses_per_token: vec![self.per_token as u32; self.n_tokens],
            misses_per_slot: vec![counted * self.top_k as u64; self.n_slots()],
        }
    }

    /// The counts of a cache that never fills: one (cold) miss per distinct id.
    pub fn cold_only(&self, warmup: usize) -> Counts {
        let mut c = Counts {
            misses_per_token: vec![0; self.n_tokens],
            misses_per_slot: vec![0; self.n_slots()],
        };
        for &f in self.first_use().iter().filter(|&&f| f != usize::MAX) {
            let t = f / self.per_token;
            c.misses_per_token[t] += 1;
            if t >= warmup {
                c.misses_per_slot[f % self.per_token / self.top_k] += 1;
            }
        }
        c
    }

    /// The accesses of one slot (index among the replayed slots), token by token.
    fn slot_stream(&self, s: usize) -> Vec<u16> {
        let k = self.top_k;
        self.stream
            .chunks_exact(self.per_token)
            .flat_map(|tok| &tok[s * k..(s + 1) * k])
            .copied()
            .collect()
    }
}

/// Capacities of the per-layer caches: `capacity` split over the slots, the remainder
/// to the first ones, so they add up.
pub fn per_layer_capacities(capacity: usize, n_slots: usize) -> Vec<usize> {
    if n_slots == 0 {
        return Vec::new();
    }
    let (base, extra) = (capacity / n_slots, capacity % n_slots);
    (0..n_slots).map(|s| base + (s < extra) as usize).collect()
}

/// Misses of one run, before warmup is cut off.
#[derive(Clone, Debug, PartialEq)]
pub struct Counts {
    pub misses_per_token: Vec<u32>,
    /// Misses per replayed slot, counting tokens from `warmup` on.
    pub misses_per_slot: Vec<u64>,
}

/// Replay through one policy at one capacity.
pub fn run_policy(
    plan: &ReplayPlan,
    spec: &PolicySpec,
    capacity: usize,
    partition: Partition,
    profile: Option<&[u64]>,
    warmup: usize,
) -> Result<Counts> {
    let mut counts = Counts {
        misses_per_token: vec![0; plan.n_tokens],
        misses_per_slot: vec![0; plan.n_slots()],
    };
    if plan.per_token == 0 {
        return Ok(counts);
    }
    match partition {
        Partition::Global => replay_into(
            plan,
            &plan.stream,
            plan.per_token,
            spec,
            capacity,
            profile,
            warmup,
            &mut counts,
            None,
        )?,
        Partition::PerLayer => {
            if !matches!(spec, PolicySpec::Base(_)) {
                return Err(Error::new(format!(
                    "policy {spec} pins experts of a global cache; with --partition per-layer use a plain policy"
                )));
            }
            let caps = per_layer_capacities(capacity, plan.n_slots());
            for (s, &cap) in caps.iter().enumerate() {
                let sub = plan.slot_stream(s);
                replay_into(
                    plan,
                    &sub,
                    plan.top_k,
                    spec,
                    cap,
                    profile,
                    warmup,
                    &mut counts,
                    Some(s),
                )?;
            }
        }
    }
    Ok(counts)
}

/// Replay `stream` (`pt` accesses per token) and add its misses to `counts`. `slot` is
/// Some(s) when the stream holds only slot s.
#[allow(clippy::too_many_arguments)]
fn replay_into(
    plan: &ReplayPlan,
    stream: &[u16],
    pt: usize,
    spec: &PolicySpec,
    capacity: usize,
    profile: Option<&[u64]>,
    warmup: usize,
    counts: &mut Counts,
    slot: Option<usize>,
) -> Result<()> {
    let ctx = BuildContext {
        capacity,
        n_ids: plan.n_ids,
        n_experts: plan.n_experts,
        first_slot: plan.first_slot,
        future: spec.needs_future().then_some(stream),
        // The whole stream's next-use keys are prepared once for every capacity.
        opt_future: match (spec, slot) {
            (PolicySpec::Base(BaseSpec::Opt), None) => Some(plan.opt_future()?),
            _ => None,
        },
        profile,
        expert_bytes: plan.expert_bytes,
    };
    let mut policy = spec.build(&ctx).map_err(|e| Error::new(e.to_string()))?;
    let mut idx: Vec<u32> = Vec::new();
    if slot.is_none() {
        // Token by token (one dynamic call per token): the misses of a token are what the
        // call appended, and a position's slot comes from a table, not a division.
        let k = plan.top_k;
        let slot_of: Vec<u16> = (0..pt).map(|i| (i / k) as u16).collect();
        for (t, token) in stream.chunks_exact(pt).enumerate() {
            idx.clear();
            policy.replay(token, &mut idx);
            counts.misses_per_token[t] += idx.len() as u32;
            if t >= warmup && plan.per_slot {
                for &i in &idx {
                    counts.misses_per_slot[slot_of[i as usize] as usize] += 1;
                }
            }
        }
        return Ok(());
    }
    // One slot's stream: batches of whole tokens, one dynamic call per batch.
    const BATCH_TOKENS: usize = 4096;
    let s = slot.expect("checked");
    for (b, batch) in stream.chunks(BATCH_TOKENS * pt).enumerate() {
        idx.clear();
        policy.replay(batch, &mut idx);
        let base = b * BATCH_TOKENS;
        for &i in &idx {
            let t = base + i as usize / pt;
            counts.misses_per_token[t] += 1;
            counts.misses_per_slot[s] += (t >= warmup) as u64;
        }
    }
    Ok(())
}

/// Whether `run_many` answers every capacity of `spec` from one pass: LRU, alone or
/// behind a pinning decorator (pinned ids stay out of the stack), and OPT with one
/// global cache (from the next-use keys of the whole stream).
pub fn one_pass(spec: &PolicySpec, partition: Partition) -> bool {
    spec.base() == BaseSpec::Lru
        || (*spec == PolicySpec::Base(BaseSpec::Opt) && partition == Partition::Global)
}

/// Counts of one policy at several capacities, the cheapest exact way: LRU (alone or
/// behind a pinning decorator) and global OPT from one stack pass when there are two
/// capacities or more; otherwise one run per capacity, except where the answer needs no
/// replay: a global cache of 0 misses every access, and one that holds every id of the
/// stream only takes cold misses (no policy evicts before it is full).
pub fn run_many(
    plan: &ReplayPlan,
    spec: &PolicySpec,
    capacities: &[usize],
    partition: Partition,
    profile: Option<&[u64]>,
    warmup: usize,
) -> Result<Vec<Counts>> {
    if one_pass(spec, partition) && capacities.len() > 1 {
        if capacities.len() > mattson::MAX_CAPACITIES {
            // A pass counts misses by bucket in bytes: a pass per group of capacities.
            let mut out = Vec::with_capacity(capacities.len());
            for group in capacities.chunks(mattson::MAX_CAPACITIES) {
                out.extend(run_many(plan, spec, group, partition, profile, warmup)?);
            }
            return Ok(out);
        }
        if spec.base() == BaseSpec::Opt {
            return opt_all(plan, capacities, warmup);
        }
        let ids = plan.pinned_ids(spec, profile)?;
        if ids.is_empty() {
            return Ok(lru_all(plan, capacities, partition, warmup, None));
        }
        let mut pinned = vec![false; plan.n_ids];
        ids.iter().for_each(|&id| pinned[id as usize] = true);
        let n_pinned = pinned.iter().filter(|&&p| p).count();
        let inner = capacities
            .iter()
            .map(|&c| {
                c.checked_sub(n_pinned).ok_or_else(|| {
                    Error::new(format!(
                        "cannot build policy \"{spec}\": {n_pinned} pinned objects do not fit in a cache of {c}"
                    ))
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        return Ok(lru_all(plan, &inner, partition, warmup, Some(&pinned)));
    }
    let trivial = matches!(spec, PolicySpec::Base(_)) && partition == Partition::Global;
    capacities
        .iter()
        .map(|&c| {
            if trivial && c == 0 {
                Ok(plan.all_miss(warmup))
            } else if trivial && c >= plan.distinct() {
                Ok(plan.cold_only(warmup))
            } else {
                run_policy(plan, spec, c, partition, profile, warmup)
            }
        })
        .collect()
}

/// OPT (one global cache) at many capacities from one pass of the banded OPT stack.
/// Equal to `run_policy(opt)` at each capacity.
pub fn opt_all(plan: &ReplayPlan, capacities: &[usize], warmup: usize) -> Result<Vec<Counts>> {
    let mut out = empty_counts(plan, capacities.len());
    if plan.per_token == 0 || capacities.is_empty() {
        return Ok(out);
    }
    let order = ascending(capacities);
    let caps: Vec<usize> = order.iter().map(|&j| capacities[j]).collect();
    let mut bands = OptBands::new(plan.opt_future()?, &caps);
    let curves = mattson::curves(
        &plan.stream,
        plan.per_token,
        plan.top_k,
        &caps,
        warmup,
        &mut bands,
    );
    scatter(&order, curves, &mut out);
    Ok(out)
}

/// Zeroed counts for `m` runs.
fn empty_counts(plan: &ReplayPlan, m: usize) -> Vec<Counts> {
    (0..m)
        .map(|_| Counts {
            misses_per_token: vec![0; plan.n_tokens],
            misses_per_slot: vec![0; plan.n_slots()],
        })
        .collect()
}

/// The caller's indices of `capacities` in ascending order of capacity (one pass takes
/// them ascending).
fn ascending(capacities: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..capacities.len()).collect();
    order.sort_by_key(|&j| capacities[j]);
    order
}

/// Copy one pass's curves (ascending) back to the caller's order.
fn scatter(order: &[usize], curves: Curves, out: &mut [Counts]) {
    for (r, &j) in order.iter().enumerate() {
        out[j]
            .misses_per_token
            .copy_from_slice(&curves.misses_per_token[r]);
        out[j]
            .misses_per_slot
            .copy_from_slice(&curves.misses_per_slot[r]);
    }
}

/// LRU at many capacities from one pass of stack distances (per slot with per-layer
/// caches). Equal to `run_policy(lru)` at each capacity; with `pinned` (global cache
/// only), equal to a `pinned:` decorator with those ids around an LRU of each capacity.
pub fn lru_all(
    plan: &ReplayPlan,
    capacities: &[usize],
    partition: Partition,
    warmup: usize,
    pinned: Option<&[bool]>,
) -> Vec<Counts> {
    assert!(
        pinned.is_none() || partition == Partition::Global,
        "pinned ids need the global cache"
    );
    let m = capacities.len();
    let mut out = empty_counts(plan, m);
    if plan.per_token == 0 || m == 0 {
        return out;
    }
    let order = ascending(capacities);
    match partition {
        Partition::Global => {
            let caps: Vec<usize> = order.iter().map(|&j| capacities[j]).collect();
            let curves = lru_curves(
                &plan.stream,
                plan.per_token,
                plan.top_k,
                plan.n_ids,
                &caps,
                warmup,
                pinned,
            );
            scatter(&order, curves, &mut out);
        }
        Partition::PerLayer => {
            for s in 0..plan.n_slots() {
                let caps: Vec<usize> = order
                    .iter()
                    .map(|&j| per_layer_capacities(capacities[j], plan.n_slots())[s])
                    .collect();
                let sub = plan.slot_stream(s);
                let curves = lru_curves(
                    &sub, plan.top_k, plan.top_k, plan.n_ids, &caps, warmup, None,
                );
                for (r, &j) in order.iter().enumerate() {
                    for (t, &x) in curves.misses_per_token[r].iter().enumerate() {
                        out[j].misses_per_token[t] += x;
                    }
                    out[j].misses_per_slot[s] += curves.misses_per_slot[r][0];
                }
            }
        }
    }
    out
}

/// The economics around a run: model placement, machine, analytic U and D.
#[derive(Clone, Debug)]
pub struct Economics {
    pub placement: Placement,
    pub hw: Hardware,
    /// U and D per chunk (threshold 100%) of the replayed tokens.
    pub u: f64,
    pub d: f64,
    pub chunk: usize,
}

/// Budget of a row: installed RAM (GiB) when known, and the cache capacity.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub ram_gib: Option<f64>,
    pub capacity: usize,
}

/// Per-token miss counts as a histogram (a count never exceeds the accesses of a
/// token), so percentiles cost one pass instead of a sort of every row's tokens.
pub struct MissHistogram {
    counts: Vec<u64>,
    n: u64,
}

impl MissHistogram {
    pub fn new(values: &[u32]) -> Self {
        let top = values.iter().copied().max().unwrap_or(0) as usize;
        let mut counts = vec![0u64; top + 1];
        values.iter().for_each(|&v| counts[v as usize] += 1);
        MissHistogram {
            counts,
            n: values.len() as u64,
        }
    }

    /// Nearest-rank percentile (p in 0..=100), as `percentile` of the sorted values.
    pub fn percentile(&self, p: f64) -> u32 {
        if self.n == 0 {
            return 0;
        }
        let rank = (((p / 100.0) * self.n as f64).ceil().max(1.0) as u64).min(self.n);
        let mut seen = 0;
        for (v, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return v as u32;
            }
        }
        unreachable!("rank <= n")
    }

    pub fn max(&self) -> u32 {
        (self.counts.len() - 1) as u32
    }
}

/// Assemble a row from the counts of a run.
#[allow(clippy::too_many_arguments)]
pub fn make_row(
    policy: String,
    partition: Partition,
    plan: &ReplayPlan,
    budget: Budget,
    counts: &Counts,
    cold: u64,
    warmup: usize,
    econ: Option<&Economics>,
    layer_numbers: Option<&[u16]>,
    vram_gib: Option<f64>,
) -> Row {
    let counted = &counts.misses_per_token[warmup.min(plan.n_tokens)..];
    let tokens = counted.len() as u64;
    let accesses = tokens * plan.per_token as u64;
    let misses: u64 = counted.iter().map(|&m| m as u64).sum();
    let hist = MissHistogram::new(counted);
    let per = |x: u64| {
        if tokens == 0 {
            0.0
        } else {
            x as f64 / tokens as f64
        }
    };
    let mut row = Row {
        trace: String::new(),
        model: None,
        quant: None,
        hw: econ.map(|e| e.hw.name.clone()),
        policy,
        partition: partition.name(),
        vram_gib,
        gpu_layers: plan.first_slot,
        ram_gib: budget.ram_gib,
        ram_bytes: None,
        cache_experts: budget.capacity,
        tokens,
        accesses,
        // The kernel's expert-equivalent misses (sweep --kernel) can exceed the accesses
        // when readahead reads more than the routed experts.
        hits: accesses.saturating_sub(misses),
        misses,
        cold_misses: cold,
        hit_rate: if accesses == 0 {
            0.0
        } else {
            accesses.saturating_sub(misses) as f64 / accesses as f64
        },
        misses_per_token: per(misses),
        ssd_bytes: None,
        ssd_bytes_per_token: None,
        ssd_bytes_per_token_p50: None,
        ssd_bytes_per_token_p99: None,
        ssd_bytes_per_token_max: None,
        t_vram_ms: None,
        t_ram_ms: None,
        t_ssd_ms: None,
        est_tok_s: None,
        analytic_ssd_bytes_per_token: None,
        analytic_tok_s: None,
        per_layer_misses: layer_numbers.map(|ls| {
            counts
                .misses_per_slot
                .iter()
                .enumerate()
                .map(|(s, &m)| (ls[plan.first_slot + s], m))
                .collect()
        }),
    };
    if let Some(e) = econ {
        let eb = e.placement.expert_bytes;
        let ram_gib = budget.ram_gib.unwrap_or_else(|| {
            e.placement
                .ram_for_capacity(budget.capacity, e.hw.ram.reserve_gib)
        });
        row.ram_gib = Some(ram_gib);
        row.ram_bytes = Some((ram_gib * GIB).round() as u64);
        row.ssd_bytes = Some(misses * eb);
        let mean = per(misses) * eb as f64;
        row.ssd_bytes_per_token = Some(mean);
        row.ssd_bytes_per_token_p50 = Some(hist.percentile(50.0) as u64 * eb);
        row.ssd_bytes_per_token_p99 = Some(hist.percentile(99.0) as u64 * eb);
        row.ssd_bytes_per_token_max = Some(hist.max() as u64 * eb);
        let t = token_time(&e.placement, &e.hw, mean);
        row.t_vram_ms = Some(t.t_vram * 1e3);
        row.t_ram_ms = Some(t.t_ram * 1e3);
        row.t_ssd_ms = Some(t.t_ssd * 1e3);
        row.est_tok_s = Some(t.tok_s());
        let a = analytic_ssd_bytes_per_token(&e.placement, e.u, e.d, budget.capacity, e.chunk);
        row.analytic_ssd_bytes_per_token = Some(a);
        row.analytic_tok_s = Some(token_time(&e.placement, &e.hw, a).tok_s());
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mattson::MAX_CAPACITIES;
    use crate::trace::Geometry;

    fn toy(n_tokens: usize, seed: u64) -> Trace {
        // 3 layers x 16 experts, top-2, skewed with drift.
        let g = Geometry {
            layers: vec![1, 2, 3],
            n_experts: 16,
            top_k: 2,
        };
        let mut t = Trace::empty(g, true);
        let mut s = seed;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as usize
        };
        for tok in 0..n_tokens {
            for slot in 0..3u16 {
                let a = (next() % 16 * (next() % 16) / 16 + tok / 50) % 16;
                let mut b = (next() % 16 + tok / 30) % 16;
                if b == a {
                    b = (b + 1) % 16;
                }
                t.ids.push(slot * 16 + a as u16);
                t.ids.push(slot * 16 + b as u16);
            }
            t.prompt.push(tok % 17 == 0);
            if tok % 97 == 96 {
                t.end_response();
            }
        }
        t.end_response();
        t
    }

    #[test]
    fn one_pass_lru_equals_per_capacity_runs() {
        let trace = toy(2000, 7);
        let lru = PolicySpec::parse("lru").unwrap();
        for gpu_layers in [0, 1] {
            for include_prompt in [false, true] {
                let plan = ReplayPlan::new(&trace, include_prompt, gpu_layers);
                let caps: Vec<usize> = vec![40, 0, 1, 5, 12, 24, 33, 48, 100];
                for partition in [Partition::Global, Partition::PerLayer] {
                    for warmup in [0, 150] {
                        let all = lru_all(&plan, &caps, partition, warmup, None);
                        for (j, &c) in caps.iter().enumerate() {
                            let one = run_policy(&plan, &lru, c, partition, None, warmup).unwrap();
                            assert_eq!(
                                all[j], one,
                                "cap {c} {partition:?} warmup {warmup} gpu {gpu_layers}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn per_layer_capacities_add_up() {
        for c in [0, 1, 7, 74, 75, 76, 19_199, 1_000_003] {
            let caps = per_layer_capacities(c, 75);
            assert_eq!(caps.iter().sum::<usize>(), c);
            assert!(caps.iter().max().unwrap() - caps.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn hits_plus_misses_and_cold_misses() {
        let trace = toy(500, 3);
        let plan = ReplayPlan::new(&trace, true, 0);
        let spec = PolicySpec::parse("clock").unwrap();
        let counts = run_policy(&plan, &spec, 10, Partition::Global, None, 0).unwrap();
        let cold = plan.cold_misses(0);
        let row = make_row(
            "clock".into(),
            Partition::Global,
            &plan,
            Budget {
                ram_gib: None,
                capacity: 10,
            },
            &counts,
            cold,
            0,
            None,
            None,
            None,
        );
        assert_eq!(row.hits + row.misses, row.accesses);
        assert_eq!(row.accesses, 500 * 6);
        assert_eq!(cold, 48);
        assert!(row.misses >= cold);
        assert_eq!(counts.misses_per_slot.iter().sum::<u64>(), row.misses);
    }

    #[test]
    fn run_many_equals_one_run_per_capacity() {
        // Every shortcut of run_many (one pass for LRU behind pins and for OPT, capacity 0, a cache
        // that holds every id) against a plain run at each capacity.
        let trace = toy(1500, 11);
        let specs = [
            "lru",
            "pinned:1",
            "pin-hot:7",
            "pinned:1:clock",
            "clock",
            "arc",
            "opt",
            "fifo",
            "linux",
        ];
        for gpu_layers in [0, 1] {
            let plan = ReplayPlan::new(&trace, false, gpu_layers);
            let profile = plan.profile();
            assert!(plan.distinct() <= plan.n_ids);
            for spec in specs {
                let spec = PolicySpec::parse(spec).unwrap();
                let pinned = matches!(spec, PolicySpec::Pinned { .. } | PolicySpec::PinHot { .. });
                let low = if pinned { 16 } else { 0 };
                let caps: Vec<usize> = vec![40, low, low + 1, 20, plan.distinct(), 48, 100];
                let partitions: &[Partition] = if pinned {
                    &[Partition::Global]
                } else {
                    &[Partition::Global, Partition::PerLayer]
                };
                for &partition in partitions {
                    for warmup in [0, 150] {
                        let many = run_many(&plan, &spec, &caps, partition, Some(&profile), warmup)
                            .unwrap();
                        let single =
                            run_many(&plan, &spec, &caps[..1], partition, Some(&profile), warmup)
                                .unwrap();
                        assert_eq!(single[0], many[0]);
                        for (j, &c) in caps.iter().enumerate() {
                            let one =
                                run_policy(&plan, &spec, c, partition, Some(&profile), warmup)
                                    .unwrap();
                            assert_eq!(
                                many[j], one,
                                "{spec} cap {c} {partition:?} warmup {warmup} gpu {gpu_layers}"
                            );
                        }
                    }
                }
            }
            // More capacities than one pass takes: passes over groups, same counts.
            let caps: Vec<usize> = (0..600).map(|i| (i * 7) % 53).collect();
            // pinned:1 pins the 16 experts of layer 1: only capacities that hold them run
            // (the others are an error, checked below), and they still make several passes.
            let mut pinned_checked = 0;
            for spec in ["lru", "pinned:1", "opt"] {
                let spec = PolicySpec::parse(spec).unwrap();
                let min = plan.pinned_ids(&spec, None).unwrap().len();
                let caps: Vec<usize> = caps.iter().copied().filter(|&c| c >= min).collect();
                assert!(
                    caps.len() > MAX_CAPACITIES,
                    "{spec}: {} capacities",
                    caps.len()
                );
                let many = run_many(&plan, &spec, &caps, Partition::Global, None, 0).unwrap();
                pinned_checked += (min > 0) as usize;
                assert_eq!(many.len(), caps.len());
                for j in (0..caps.len()).step_by(23) {
                    let one =
                        run_policy(&plan, &spec, caps[j], Partition::Global, None, 0).unwrap();
                    assert_eq!(many[j], one, "{spec} cap {} of {}", caps[j], caps.len());
                }
            }
            assert_eq!(pinned_checked, 1, "the pinned spec's grouped path ran");
            let below: Vec<usize> = caps.iter().copied().filter(|&c| c < 16).collect();
            let spec = PolicySpec::parse("pinned:1").unwrap();
            assert!(run_many(&plan, &spec, &below, Partition::Global, None, 0).is_err());
            // A pinned set larger than a capacity is an error, not a wrong count.
            let spec = PolicySpec::parse("pinned:2").unwrap();
            assert!(run_many(&plan, &spec, &[10, 40], Partition::Global, None, 0).is_err());
        }
    }

    /// Nearest-rank percentile (p in 0..=100) of a sorted slice: the reference.
    pub fn percentile(sorted: &[u32], p: f64) -> u32 {
        if sorted.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
        sorted[rank.min(sorted.len()) - 1]
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(MissHistogram::new(&[]).percentile(50.0), 0);
        // The histogram agrees with the sort on skewed random counts.
        let mut x = 7u64;
        for len in [1usize, 2, 3, 10, 99, 100, 101, 1000, 4097] {
            let v: Vec<u32> = (0..len)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((x >> 33) % 600) as u32 * ((x >> 20) % 2) as u32
                })
                .collect();
            let mut sorted = v.clone();
            sorted.sort_unstable();
            let h = MissHistogram::new(&v);
            for p in [0.0, 1.0, 50.0, 90.0, 99.0, 99.9, 100.0] {
                assert_eq!(h.percentile(p), percentile(&sorted, p), "len {len} p {p}");
            }
            assert_eq!(h.max(), *sorted.last().unwrap());
        }
    }
}
