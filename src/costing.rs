//! The time-model join: a run's counts, priced by the model's placement on the machine
//! (bytes per expert, token time) into a report row, beside the analytic estimate from U
//! and D.

use crate::decode::{decode_time, IoSetup};
use crate::hardware::Hardware;
use crate::replay::stats::{percentile, MissHistogram};
use crate::replay::{Misses, Partition, PhaseTotals, ReplayPlan};
use crate::report::rows::{BatchColumns, Row};
use crate::timemodel::{analytic_ssd_bytes_per_token, token_time, Placement, GIB};

/// What prices a run: the model's placement, the machine, and U and D for the
/// analytic estimate.
#[derive(Clone, Debug)]
pub struct CostInputs {
    pub placement: Placement,
    pub hw: Hardware,
    /// U and D per chunk (threshold 100%) of the replayed tokens.
    pub u: f64,
    pub d: f64,
    pub chunk: usize,
    /// The I/O model (None: SSD bytes over the rated bandwidth).
    pub io: Option<IoSetup>,
}

/// Budget of a row: installed RAM (GiB) when known, and the cache capacity.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub ram_gib: Option<f64>,
    pub capacity: usize,
}

/// Assemble a row from the counts of a run; `batch`: add the batch columns.
#[allow(clippy::too_many_arguments)]
pub fn make_row(
    policy: String,
    partition: Partition,
    plan: &ReplayPlan,
    budget: Budget,
    counts: &Misses,
    cold: u64,
    warmup: usize,
    econ: Option<&CostInputs>,
    layer_numbers: Option<&[u16]>,
    vram_gib: Option<f64>,
    batch: bool,
) -> Row {
    // Per token: a step's misses spread over the tokens it carried (token by token,
    // the steps' own counts).
    let counted = plan.misses_per_token(counts, warmup);
    let tokens = counted.len() as u64;
    let accesses = if plan.is_batched() {
        (plan.first_counted_step(warmup)..plan.n_steps)
            .map(|i| plan.step_range(i).len() as u64)
            .sum()
    } else {
        tokens * plan.per_token as u64
    };
    let misses: u64 = counted.iter().map(|&m| m as u64).sum();
    let hist = MissHistogram::new(&counted);
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
        gpu_layers: plan.gpu_slots(),
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
        io: None,
        device_bytes_per_token: None,
        t_compute_ms: None,
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
        batch: None,
    };
    if batch {
        let st = plan.batch_stats(counts, warmup);
        let eb = econ.map(|e| e.placement.expert_bytes as f64);
        // None for a phase without tokens (nothing to divide by).
        // Layers of different sizes: the phase's own bytes, every miss at its layer's.
        let per_token = |ph: &PhaseTotals| {
            eb.filter(|_| ph.tokens > 0)
                .map(|eb| ph.bytes.map_or(ph.misses as f64 * eb, |b| b as f64) / ph.tokens as f64)
        };
        row.batch = Some(BatchColumns {
            ubatch: plan.batching.ubatch,
            parallel: plan.batching.parallel,
            prompt_ubatches: st.prompt.steps,
            prompt_tokens: st.prompt.tokens,
            prompt_accesses: st.prompt.accesses,
            prompt_misses: st.prompt.misses,
            prompt_ssd_bytes_per_token: per_token(&st.prompt),
            decode_steps: st.decode.steps,
            decode_tokens: st.decode.tokens,
            decode_accesses: st.decode.accesses,
            decode_misses: st.decode.misses,
            decode_ssd_bytes_per_token: per_token(&st.decode),
        });
    }
    if let Some(e) = econ {
        let eb = e.placement.expert_bytes;
        let ram_gib = budget.ram_gib.unwrap_or_else(|| {
            e.placement
                .ram_for_capacity(budget.capacity, e.hw.ram.reserve_gib)
        });
        row.ram_gib = Some(ram_gib);
        row.ram_bytes = Some((ram_gib * GIB).round() as u64);
        let mean = match plan.bytes_per_token(counts, warmup) {
            // Layers of different sizes: every miss at its own layer's bytes (a step's
            // spread over its tokens, as its misses are).
            Some(bytes) => {
                let mut b = bytes.into_owned();
                let total: u64 = b.iter().sum();
                b.sort_unstable();
                row.ssd_bytes = Some(total);
                row.ssd_bytes_per_token_p50 = Some(percentile(&b, 50.0));
                row.ssd_bytes_per_token_p99 = Some(percentile(&b, 99.0));
                row.ssd_bytes_per_token_max = Some(b.last().copied().unwrap_or(0));
                per(total)
            }
            None => {
                row.ssd_bytes = Some(misses * eb);
                row.ssd_bytes_per_token_p50 = Some(hist.percentile(50.0) as u64 * eb);
                row.ssd_bytes_per_token_p99 = Some(hist.percentile(99.0) as u64 * eb);
                row.ssd_bytes_per_token_max = Some(hist.max() as u64 * eb);
                per(misses) * eb as f64
            }
        };
        row.ssd_bytes_per_token = Some(mean);
        if let Some(io) = &e.io {
            let p = &e.placement;
            let resident =
                (budget.capacity as f64 / (p.cpu_layers * plan.n_experts).max(1) as f64).min(1.0);
            let t = decode_time(p, &e.hw, io, ram_gib, &hist.pairs(), row.hit_rate, resident);
            row.t_vram_ms = Some(t.t_vram * 1e3);
            row.t_ram_ms = Some(t.t_ram * 1e3);
            row.t_compute_ms = Some(t.t_compute * 1e3);
            row.t_ssd_ms = Some(t.t_io * 1e3);
            row.device_bytes_per_token = Some(t.device_bytes);
            row.io = Some(io.engine.name());
            row.est_tok_s = Some(1.0 / t.total);
        } else {
            let t = token_time(&e.placement, &e.hw, mean);
            row.t_vram_ms = Some(t.t_vram * 1e3);
            row.t_ram_ms = Some(t.t_ram * 1e3);
            row.t_ssd_ms = Some(t.t_ssd * 1e3);
            row.est_tok_s = Some(t.tok_s());
        }
        let a = analytic_ssd_bytes_per_token(&e.placement, e.u, e.d, budget.capacity, e.chunk);
        row.analytic_ssd_bytes_per_token = Some(a);
        row.analytic_tok_s = Some(token_time(&e.placement, &e.hw, a).tok_s());
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::run_policy;
    use crate::replay::tests::toy;
    use moe_spill_policies::registry::PolicySpec;

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
            false,
        );
        assert_eq!(row.hits + row.misses, row.accesses);
        assert_eq!(row.accesses, 500 * 6);
        assert_eq!(cold, 48);
        assert!(row.misses >= cold);
        assert_eq!(counts.misses_per_slot.iter().sum::<u64>(), row.misses);
    }
}
