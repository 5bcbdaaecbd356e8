//! The replay: a trace's accesses, in order, through a policy sized to a budget, and
//! the misses of each run.
//!
//! Order: step by step; within a step, layers in recorded order; within a layer, the
//! experts in router order. A step is one token, or with batches (`batch`) a prompt
//! ubatch or a decode step of several responses, whose tokens' experts the cache sees
//! once per layer. Responses follow one another (or share the decode steps) through the
//! same cache, which starts empty once. Prompt tokens are skipped unless `--phase all`.
//! Layers held in VRAM (the first `gpu_layers` MoE layers) never reach the cache.
//!
//! `plan` holds what to replay; [`run_many`] picks a [`Strategy`] per policy: one pass
//! for every capacity (`one_pass`: LRU, global OPT) or one run per capacity
//! (`per_budget`); `stats` holds the percentiles of the per-token misses and the
//! prompt and decode totals.

pub mod batch;
mod one_pass;
mod per_budget;
mod plan;
pub mod stats;

use moe_spill_policies::curves::MAX_CAPACITIES;
use moe_spill_policies::registry::{BaseSpec, PolicySpec};
use serde::Serialize;

use crate::error::{Error, Result};

pub use batch::{Batching, DEFAULT_UBATCH};
pub use one_pass::{lru_all, opt_all};
pub use per_budget::run_policy;
pub use plan::{per_layer_capacities, ReplayPlan, Step};
pub use stats::{BatchStats, PhaseTotals};

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

/// Misses of one run, before warmup is cut off.
#[derive(Clone, Debug, PartialEq)]
pub struct Misses {
    /// Misses of every step of the plan (a token, unless batched: `ReplayPlan::step`).
    pub misses_per_step: Vec<u32>,
    /// Misses per replayed slot, counting the steps from the warmup on
    /// (`ReplayPlan::first_counted_step`).
    pub misses_per_slot: Vec<u64>,
    /// Bytes of every step's misses, each at its layer's expert size: counted when the
    /// plan has `slot_bytes` (layers of different sizes), None otherwise.
    pub bytes_per_step: Option<Vec<u64>>,
}

/// How [`run_many`] answers a policy at several capacities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// LRU, alone or behind a pinning decorator (pinned ids stay out of the stack): one
    /// pass of stack distances for every capacity.
    OnePassLru,
    /// OPT with one global cache: one pass of the banded stack over the next-use keys of
    /// the whole stream.
    OnePassOpt,
    /// Any other policy: one run per capacity.
    PerBudget,
}

impl Strategy {
    pub fn of(spec: &PolicySpec, partition: Partition) -> Strategy {
        if spec.base() == BaseSpec::Lru {
            Strategy::OnePassLru
        } else if *spec == PolicySpec::Base(BaseSpec::Opt) && partition == Partition::Global {
            Strategy::OnePassOpt
        } else {
            Strategy::PerBudget
        }
    }

    /// Whether one pass answers every capacity.
    pub fn one_pass(self) -> bool {
        self != Strategy::PerBudget
    }
}

/// Misses of one policy at several capacities, the cheapest exact way: LRU (alone or
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
) -> Result<Vec<Misses>> {
    let strategy = Strategy::of(spec, partition);
    if strategy.one_pass() && capacities.len() > 1 {
        if capacities.len() > MAX_CAPACITIES {
            // A pass counts misses by bucket in bytes: a pass per group of capacities.
            let mut out = Vec::with_capacity(capacities.len());
            for group in capacities.chunks(MAX_CAPACITIES) {
                out.extend(run_many(plan, spec, group, partition, profile, warmup)?);
            }
            return Ok(out);
        }
        if strategy == Strategy::OnePassOpt {
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
    let mut out: Vec<Misses> = Vec::with_capacity(capacities.len());
    for (i, &c) in capacities.iter().enumerate() {
        let m = if i > 0 && capacities[i - 1] == c {
            // The same cache again (budgets closer than one expert).
            out[i - 1].clone()
        } else if trivial && c == 0 {
            plan.all_miss(warmup)
        } else if trivial && c >= plan.distinct() {
            plan.cold_only(warmup)
        } else {
            run_policy(plan, spec, c, partition, profile, warmup)?
        };
        out.push(m);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::trace::{Geometry, Trace};

    /// 3 layers x 16 experts, top-2, skewed with drift; every 17th token a prompt token.
    pub(crate) fn toy(n_tokens: usize, seed: u64) -> Trace {
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

    /// Every base policy, plain and behind both decorators.
    fn every_spec() -> Vec<String> {
        let mut v: Vec<String> = moe_spill_policies::registry::BASE_POLICIES
            .iter()
            .map(|p| p.name.to_string())
            .collect();
        v.extend(["pinned:1", "pinned:1:clock", "pin-hot:7", "pin-hot:5:arc"].map(String::from));
        v
    }

    #[test]
    fn batched_token_by_token_replay_equals_todays_bit_for_bit() {
        // The batched path (steps with boundaries, unions per slot) forced on a replay
        // whose steps are single tokens: every policy, engine and shortcut counts
        // exactly as the token-by-token path.
        let trace = toy(1200, 5);
        for include_prompt in [false, true] {
            for gpu_layers in [0, 1] {
                let plain = ReplayPlan::new(&trace, include_prompt, gpu_layers);
                let mut forced = ReplayPlan::new(&trace, include_prompt, gpu_layers);
                forced.use_steps(&trace, include_prompt, Batching::TOKEN_BY_TOKEN);
                assert!(forced.is_batched() && !plain.is_batched());
                assert_eq!(forced.stream, plain.stream);
                assert_eq!(forced.n_steps, plain.n_steps);
                let profile = plain.profile();
                for warmup in [0, 100] {
                    assert_eq!(forced.cold_misses(warmup), plain.cold_misses(warmup));
                    assert_eq!(forced.all_miss(warmup), plain.all_miss(warmup));
                    assert_eq!(forced.cold_only(warmup), plain.cold_only(warmup));
                }
                for spec in every_spec() {
                    let spec = PolicySpec::parse(&spec).unwrap();
                    let pinned = !matches!(spec, PolicySpec::Base(_));
                    let low = if pinned { 16 } else { 0 };
                    let caps = vec![low, low + 3, 20, 33, 100];
                    let partitions: &[Partition] = if pinned {
                        &[Partition::Global]
                    } else {
                        &[Partition::Global, Partition::PerLayer]
                    };
                    for &partition in partitions {
                        for warmup in [0, 100] {
                            let a =
                                run_many(&plain, &spec, &caps, partition, Some(&profile), warmup)
                                    .unwrap();
                            let b =
                                run_many(&forced, &spec, &caps, partition, Some(&profile), warmup)
                                    .unwrap();
                            assert_eq!(a, b, "{spec} {partition:?} warmup {warmup}");
                            let one =
                                run_policy(&forced, &spec, 20, partition, Some(&profile), warmup)
                                    .unwrap();
                            assert_eq!(one, a[2], "{spec} {partition:?} warmup {warmup}");
                            assert_eq!(
                                forced.batch_stats(&b[1], warmup),
                                plain.batch_stats(&a[1], warmup)
                            );
                        }
                    }
                }
            }
        }
    }

    /// A naive batched replay: one cache per slot (or one for all), fed each step's
    /// accesses one at a time.
    fn naive(plan: &ReplayPlan, spec: &str, capacity: usize, per_layer: bool) -> Vec<u32> {
        use moe_spill_policies::registry::BuildContext;
        let spec = PolicySpec::parse(spec).unwrap();
        let n_slots = plan.n_slots();
        let caps = if per_layer {
            per_layer_capacities(capacity, n_slots)
        } else {
            vec![capacity]
        };
        let slot_streams: Vec<Vec<u16>> = (0..caps.len())
            .map(|c| {
                plan.stream
                    .iter()
                    .copied()
                    .filter(|&id| !per_layer || plan.slot_of_id(id) == c)
                    .collect()
            })
            .collect();
        let mut policies: Vec<_> = caps
            .iter()
            .zip(&slot_streams)
            .map(|(&capacity, future)| {
                spec.build(&BuildContext {
                    capacity,
                    n_ids: plan.n_ids,
                    n_experts: plan.n_experts,
                    first_slot: plan.first_slot,
                    future: Some(future),
                    opt_future: None,
                    profile: None,
                    expert_bytes: None,
                })
                .unwrap()
            })
            .collect();
        (0..plan.n_steps)
            .map(|i| {
                plan.stream[plan.step_range(i)]
                    .iter()
                    .filter(|&&id| {
                        let c = if per_layer { plan.slot_of_id(id) } else { 0 };
                        !policies[c].access(id as u32).is_hit()
                    })
                    .count() as u32
            })
            .collect()
    }

    /// The toy with runs of prompt tokens: the first 40 tokens of every response and 10
    /// in its middle.
    pub(crate) fn toy_with_prompts(n_tokens: usize, seed: u64) -> Trace {
        let mut trace = toy(n_tokens, seed);
        for (i, p) in trace.prompt.iter_mut().enumerate() {
            *p = i % 97 < 40 || (60..70).contains(&(i % 97));
        }
        trace
    }

    #[test]
    fn batched_replay_equals_a_naive_one_and_one_pass_equals_per_capacity() {
        let trace = toy_with_prompts(1500, 13);
        for (ubatch, parallel) in [(4, 1), (64, 1), (1, 3), (16, 4)] {
            let b = Batching {
                ubatch,
                parallel,
                prompt_cut: None,
            };
            for gpu_layers in [0, 1] {
                let plan = ReplayPlan::batched(&trace, true, gpu_layers, b);
                assert!(plan.is_batched());
                // Steps carry every replayed token once.
                let tokens: u64 = (0..plan.n_steps).map(|i| plan.step(i).tokens as u64).sum();
                assert_eq!(tokens as usize, trace.n_tokens());
                let unbatched = trace.n_tokens() * plan.per_token;
                if ubatch > 1 {
                    assert!(plan.stream.len() < unbatched, "{b:?}: unions are smaller");
                }
                assert_eq!(
                    plan.misses_per_token(&plan.all_miss(0), 0).len(),
                    trace.n_tokens()
                );
                for spec in ["lru", "clock", "arc", "opt", "linux"] {
                    for per_layer in [false, true] {
                        let partition = if per_layer {
                            Partition::PerLayer
                        } else {
                            Partition::Global
                        };
                        for cap in [5, 17, 40] {
                            let run = run_policy(
                                &plan,
                                &PolicySpec::parse(spec).unwrap(),
                                cap,
                                partition,
                                None,
                                0,
                            )
                            .unwrap();
                            assert_eq!(
                                run.misses_per_step,
                                naive(&plan, spec, cap, per_layer),
                                "{spec} cap {cap} per-layer {per_layer} {b:?} gpu {gpu_layers}"
                            );
                        }
                    }
                }
                let caps = [40, 0, 1, 12, 33, plan.distinct(), 100];
                for spec in ["lru", "pinned:1", "opt", "fifo"] {
                    let spec = PolicySpec::parse(spec).unwrap();
                    // pinned:1 pins the 16 experts of the first slot: room for them.
                    let low = if matches!(spec, PolicySpec::Base(_)) {
                        0
                    } else {
                        16
                    };
                    let caps: Vec<usize> = caps.iter().map(|&c| c + low).collect();
                    let partitions: &[Partition] = if matches!(spec, PolicySpec::Base(_)) {
                        &[Partition::Global, Partition::PerLayer]
                    } else {
                        &[Partition::Global]
                    };
                    for &partition in partitions {
                        for warmup in [0, 300] {
                            let many =
                                run_many(&plan, &spec, &caps, partition, None, warmup).unwrap();
                            for (j, &c) in caps.iter().enumerate() {
                                let one =
                                    run_policy(&plan, &spec, c, partition, None, warmup).unwrap();
                                assert_eq!(
                                    many[j], one,
                                    "{spec} cap {c} {partition:?} warmup {warmup} {b:?}"
                                );
                            }
                            let st = plan.batch_stats(&many[0], warmup);
                            let counted: u64 = plan
                                .misses_per_token(&many[0], warmup)
                                .iter()
                                .map(|&m| m as u64)
                                .sum();
                            assert_eq!(st.prompt.misses + st.decode.misses, counted);
                            assert_eq!(
                                many[0].misses_per_slot.iter().sum::<u64>(),
                                counted,
                                "per-slot misses count the same steps"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn warmup_counts_whole_steps() {
        // Ubatches of 64 over runs of 40 and 10 prompt tokens and parallel decode steps:
        // warmup drops every step that starts before the token, never part of one.
        let trace = toy_with_prompts(600, 2);
        let plan = ReplayPlan::batched(
            &trace,
            true,
            0,
            Batching {
                ubatch: 64,
                parallel: 3,
                prompt_cut: None,
            },
        );
        let counts = plan.all_miss(0);
        for warmup in [0, 1, 2, 3, 50, 599, 600, 10_000] {
            let from = plan.first_counted_step(warmup);
            let before: u64 = (0..from).map(|i| plan.step(i).tokens as u64).sum();
            assert!(before >= warmup.min(600) as u64);
            if from > 0 {
                let last = plan.step(from - 1).tokens as u64;
                assert!(
                    before - last < warmup as u64,
                    "step {} starts before token {warmup}",
                    from - 1
                );
            }
            let st = plan.batch_stats(&counts, warmup);
            assert_eq!(st.prompt.tokens + st.decode.tokens, 600 - before);
        }
    }
}
