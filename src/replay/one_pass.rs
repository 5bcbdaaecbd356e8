//! The one-pass engines: every capacity of LRU (stack distances) or of global OPT (the
//! banded next-use stack) from one pass over the plan's stream, through the curves of
//! the policies crate; each equal to a per-budget run at every capacity.

use moe_spill_policies::curves::{self, lru_curves, Curves, OptBands, StepLayout};

use super::{per_layer_capacities, Misses, Partition, ReplayPlan};
use crate::error::Result;

/// OPT (one global cache) at many capacities from one pass of the banded OPT stack.
/// Equal to `run_policy(opt)` at each capacity.
pub fn opt_all(plan: &ReplayPlan, capacities: &[usize], warmup: usize) -> Result<Vec<Misses>> {
    let mut out = empty_counts(plan, capacities.len());
    if plan.per_token == 0 || capacities.is_empty() {
        return Ok(out);
    }
    let order = ascending(capacities);
    let caps: Vec<usize> = order.iter().map(|&j| capacities[j]).collect();
    let mut bands = OptBands::new(plan.opt_future()?, &caps);
    let curves = curves::curves(
        &plan.stream,
        plan.layout(),
        &caps,
        plan.first_counted_step(warmup),
        plan.slot_bytes.as_deref(),
        &mut bands,
    );
    scatter(&order, curves, &mut out);
    Ok(out)
}

/// Zeroed counts for `m` runs.
fn empty_counts(plan: &ReplayPlan, m: usize) -> Vec<Misses> {
    (0..m).map(|_| plan.no_misses()).collect()
}

/// The caller's indices of `capacities` in ascending order of capacity (one pass takes
/// them ascending).
fn ascending(capacities: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..capacities.len()).collect();
    order.sort_by_key(|&j| capacities[j]);
    order
}

/// Copy one pass's curves (ascending) back to the caller's order.
fn scatter(order: &[usize], curves: Curves, out: &mut [Misses]) {
    for (r, &j) in order.iter().enumerate() {
        out[j]
            .misses_per_step
            .copy_from_slice(&curves.misses_per_step[r]);
        out[j]
            .misses_per_slot
            .copy_from_slice(&curves.misses_per_slot[r]);
        if let (Some(b), Some(c)) = (&mut out[j].bytes_per_step, &curves.bytes_per_step) {
            b.copy_from_slice(&c[r]);
        }
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
) -> Vec<Misses> {
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
    let warmup = plan.first_counted_step(warmup);
    match partition {
        Partition::Global => {
            let caps: Vec<usize> = order.iter().map(|&j| capacities[j]).collect();
            let curves = lru_curves(
                &plan.stream,
                plan.layout(),
                plan.n_ids,
                &caps,
                warmup,
                pinned,
                plan.slot_bytes.as_deref(),
            );
            scatter(&order, curves, &mut out);
        }
        Partition::PerLayer => {
            for s in 0..plan.n_slots() {
                let caps: Vec<usize> = order
                    .iter()
                    .map(|&j| per_layer_capacities(capacities[j], plan.n_slots())[s])
                    .collect();
                let (sub, lens) = plan.slot_stream(s);
                let layout = match &lens {
                    None => StepLayout::Uniform {
                        per_step: plan.top_k,
                        k: plan.top_k,
                    },
                    Some(lens) => StepLayout::Ragged { n_slots: 1, lens },
                };
                let curves = lru_curves(&sub, layout, plan.n_ids, &caps, warmup, None, None);
                // One slot's misses all cost that slot's bytes.
                let cost = plan.slot_bytes.as_ref().map_or(0, |w| w[s]);
                for (r, &j) in order.iter().enumerate() {
                    for (t, &x) in curves.misses_per_step[r].iter().enumerate() {
                        out[j].misses_per_step[t] += x;
                        if let Some(b) = &mut out[j].bytes_per_step {
                            b[t] += x as u64 * cost;
                        }
                    }
                    out[j].misses_per_slot[s] += curves.misses_per_slot[r][0];
                }
            }
        }
    }
    out
}
