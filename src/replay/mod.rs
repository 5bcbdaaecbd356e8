//! The replay: a trace's accesses, in order, through a policy sized to a budget, and
//! the misses of each run.
//!
//! Order: token by token; within a token, layers in recorded order; within a layer, the
//! experts in router order. Responses follow one another through the same cache, which
//! starts empty once. Prompt tokens are skipped unless `--phase all`. Layers held in
//! VRAM (the first `gpu_layers` MoE layers) never reach the cache.
//!
//! `plan` holds what to replay; [`run_many`] picks a [`Strategy`] per policy: one pass
//! for every capacity (`one_pass`: LRU, global OPT) or one run per capacity
//! (`per_budget`); `stats` holds the percentiles of the per-token misses.

mod one_pass;
mod per_budget;
mod plan;
pub mod stats;

use moe_spill_policies::curves::MAX_CAPACITIES;
use moe_spill_policies::registry::{BaseSpec, PolicySpec};
use serde::Serialize;

use crate::error::{Error, Result};

pub use one_pass::{lru_all, opt_all};
pub use per_budget::run_policy;
pub use plan::{per_layer_capacities, ReplayPlan};

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
    pub misses_per_token: Vec<u32>,
    /// Misses per replayed slot, counting tokens from `warmup` on.
    pub misses_per_slot: Vec<u64>,
    /// Bytes of every token's misses, each at its layer's expert size: counted when the
    /// plan has `slot_bytes` (layers of different sizes), None otherwise.
    pub bytes_per_token: Option<Vec<u64>>,
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
}
