//! The per-budget engine: one run of a policy built for one capacity, step by step (or
//! runs of steps of one slot's stream, for per-layer caches).

use moe_spill_policies::registry::{BaseSpec, BuildContext, PolicySpec};

use super::{per_layer_capacities, Misses, Partition, ReplayPlan};
use crate::error::{Error, Result};

/// Replay through one policy at one capacity.
pub fn run_policy(
    plan: &ReplayPlan,
    spec: &PolicySpec,
    capacity: usize,
    partition: Partition,
    profile: Option<&[u64]>,
    warmup: usize,
) -> Result<Misses> {
    let mut counts = plan.no_misses();
    if plan.per_token == 0 {
        return Ok(counts);
    }
    let warmup = plan.first_counted_step(warmup);
    match partition {
        Partition::Global => replay_into(
            plan,
            &plan.stream,
            None,
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
                let (sub, lens) = plan.slot_stream(s);
                replay_into(
                    plan,
                    &sub,
                    lens.as_deref(),
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

/// Replay `stream` and add its misses to `counts`, counting per-slot misses from step
/// `warmup` on. `slot` is Some(s) when the stream holds only slot s, and then `lens`
/// (with batches) its accesses in each step; the whole stream is cut into the plan's
/// steps.
#[allow(clippy::too_many_arguments)]
fn replay_into(
    plan: &ReplayPlan,
    stream: &[u16],
    lens: Option<&[u16]>,
    spec: &PolicySpec,
    capacity: usize,
    profile: Option<&[u64]>,
    warmup: usize,
    counts: &mut Misses,
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
    let Some(s) = slot else {
        if plan.is_batched() {
            // Step by step: a miss's slot comes from its id.
            for t in 0..plan.n_steps {
                let step = &stream[plan.step_range(t)];
                idx.clear();
                policy.replay(step, &mut idx);
                counts.misses_per_step[t] += idx.len() as u32;
                if t >= warmup && plan.per_slot {
                    for &i in &idx {
                        counts.misses_per_slot[plan.slot_of_id(step[i as usize])] += 1;
                    }
                }
                if let (Some(w), Some(bytes)) = (&plan.slot_bytes, &mut counts.bytes_per_step) {
                    // Layers of different sizes: a miss costs its slot's bytes.
                    bytes[t] += idx
                        .iter()
                        .map(|&i| w[plan.slot_of_id(step[i as usize])])
                        .sum::<u64>();
                }
            }
            return Ok(());
        }
        // Token by token (one dynamic call per token): the misses of a token are what the
        // call appended, and a position's slot comes from a table, not a division.
        let (pt, k) = (plan.per_token, plan.top_k);
        let slot_of: Vec<u16> = (0..pt).map(|i| (i / k) as u16).collect();
        if let (Some(w), Some(bytes)) = (&plan.slot_bytes, &mut counts.bytes_per_step) {
            // Layers of different sizes: a miss costs its slot's bytes (a separate loop,
            // so the one-size replay below stays as it was).
            let cost: Vec<u64> = slot_of.iter().map(|&s| w[s as usize]).collect();
            for (t, token) in stream.chunks_exact(pt).enumerate() {
                idx.clear();
                policy.replay(token, &mut idx);
                counts.misses_per_step[t] += idx.len() as u32;
                let mut b = 0;
                for &i in &idx {
                    b += cost[i as usize];
                    if t >= warmup {
                        counts.misses_per_slot[slot_of[i as usize] as usize] += 1;
                    }
                }
                bytes[t] += b;
            }
            return Ok(());
        }
        for (t, token) in stream.chunks_exact(pt).enumerate() {
            idx.clear();
            policy.replay(token, &mut idx);
            counts.misses_per_step[t] += idx.len() as u32;
            if t >= warmup && plan.per_slot {
                for &i in &idx {
                    counts.misses_per_slot[slot_of[i as usize] as usize] += 1;
                }
            }
        }
        return Ok(());
    };
    // One slot's stream: runs of whole steps, one dynamic call per run.
    const BATCH_STEPS: usize = 4096;
    let cost = plan.slot_bytes.as_ref().map_or(0, |w| w[s]);
    let Some(lens) = lens else {
        let pt = plan.top_k;
        for (b, batch) in stream.chunks(BATCH_STEPS * pt).enumerate() {
            idx.clear();
            policy.replay(batch, &mut idx);
            let base = b * BATCH_STEPS;
            for &i in &idx {
                let t = base + i as usize / pt;
                counts.misses_per_step[t] += 1;
                counts.misses_per_slot[s] += (t >= warmup) as u64;
                if let Some(bytes) = &mut counts.bytes_per_step {
                    bytes[t] += cost;
                }
            }
        }
        return Ok(());
    };
    // Steps of varying length: a miss's step found by walking the steps' ends (misses
    // come in order).
    let (mut start, mut first) = (0usize, 0usize);
    while first < lens.len() {
        let last = (first + BATCH_STEPS).min(lens.len());
        let end = start + lens[first..last].iter().map(|&l| l as usize).sum::<usize>();
        idx.clear();
        policy.replay(&stream[start..end], &mut idx);
        let (mut t, mut t_end) = (first, start + lens[first] as usize);
        for &i in &idx {
            let pos = start + i as usize;
            while pos >= t_end {
                t += 1;
                t_end += lens[t] as usize;
            }
            counts.misses_per_step[t] += 1;
            counts.misses_per_slot[s] += (t >= warmup) as u64;
            if let Some(bytes) = &mut counts.bytes_per_step {
                bytes[t] += cost;
            }
        }
        (start, first) = (end, last);
    }
    Ok(())
}
