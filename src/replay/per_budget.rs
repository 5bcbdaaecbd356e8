//! The per-budget engine: one run of a policy built for one capacity, token by token
//! (or batches of tokens of one slot's stream, for per-layer caches).

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
    if slot.is_none() {
        // Token by token (one dynamic call per token): the misses of a token are what the
        // call appended, and a position's slot comes from a table, not a division.
        let k = plan.top_k;
        let slot_of: Vec<u16> = (0..pt).map(|i| (i / k) as u16).collect();
        if let (Some(w), Some(bytes)) = (&plan.slot_bytes, &mut counts.bytes_per_token) {
            // Layers of different sizes: a miss costs its slot's bytes (a separate loop,
            // so the one-size replay below stays as it was).
            let cost: Vec<u64> = slot_of.iter().map(|&s| w[s as usize]).collect();
            for (t, token) in stream.chunks_exact(pt).enumerate() {
                idx.clear();
                policy.replay(token, &mut idx);
                counts.misses_per_token[t] += idx.len() as u32;
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
    let cost = plan.slot_bytes.as_ref().map_or(0, |w| w[s]);
    for (b, batch) in stream.chunks(BATCH_TOKENS * pt).enumerate() {
        idx.clear();
        policy.replay(batch, &mut idx);
        let base = b * BATCH_TOKENS;
        for &i in &idx {
            let t = base + i as usize / pt;
            counts.misses_per_token[t] += 1;
            counts.misses_per_slot[s] += (t >= warmup) as u64;
            if let Some(bytes) = &mut counts.bytes_per_token {
                bytes[t] += cost;
            }
        }
    }
    Ok(())
}
