//! The time-model join: a run's counts, priced by the model's placement on the machine
//! (bytes per expert, token time) into a report row, beside the analytic estimate from U
//! and D.

use std::collections::HashMap;

use crate::decode::{decode_time, IoSetup};
use crate::hardware::Hardware;
use crate::replay::stats::{percentile, MissHistogram};
use crate::replay::{Misses, Partition, PhaseTotals, ReplayPlan};
use crate::report::rows::{BatchColumns, Row};
use crate::step_time::{BatchMachine, StepLoad, StepTime};
use crate::timemodel::{analytic_ssd_bytes_per_token, token_time, Placement, GIB};

/// What prices a run: the model's placement, the machine, and U and D for the
/// analytic estimate.
#[derive(Clone, Debug)]
pub struct CostInputs {
    pub placement: Placement,
    pub hw: Hardware,
    /// U and D per chunk (threshold 100%) of the replayed tokens (None: no response has
    /// a whole chunk, no analytic estimate).
    pub u_d: Option<(f64, f64)>,
    pub chunk: usize,
    /// The I/O model (None: SSD bytes over the rated bandwidth).
    pub io: Option<IoSetup>,
    /// llama.cpp's op offload of steps of 32 tokens or more (off: `--no-op-offload`).
    pub op_offload: bool,
    /// The prompt length the replay cut its prompt runs to (`--prompt-tokens`): time
    /// the first token of the runs that long.
    pub prompt_len: Option<u64>,
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
        hw: econ.map(|e| e.hw.label()),
        policy,
        partition: partition.name(),
        // The row's VRAM per GPU (a sweep's --vrams), else the machine's (0: no GPU).
        vram_gib: vram_gib.or_else(|| econ.map(|e| e.hw.gpus.first().map_or(0.0, |g| g.vram_gib))),
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
        hit_rate: (accesses > 0).then(|| accesses.saturating_sub(misses) as f64 / accesses as f64),
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
            ..BatchColumns::default()
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
            let stepped = row.batch.as_mut().map(|b| {
                let machine = BatchMachine {
                    placement: p,
                    hw: &e.hw,
                    io,
                    ram_gib,
                    op_offload: e.op_offload,
                    resident,
                    n_experts: plan.n_experts,
                };
                time_steps(plan, counts, warmup, &machine, e.prompt_len, b)
            });
            row.io = Some(io.engine.name());
            match stepped.filter(|_| plan.is_batched()) {
                // Steps of several tokens: the steps' times, per token.
                Some(t) => {
                    let per = |x: f64| x / tokens.max(1) as f64;
                    row.t_vram_ms = Some(per(t.t_gpu + t.t_h2d) * 1e3);
                    row.t_ram_ms = Some(per(t.t_cpu) * 1e3);
                    row.t_ssd_ms = Some(per(t.t_io) * 1e3);
                    row.device_bytes_per_token = Some(per(t.device_bytes));
                    row.est_tok_s = (t.total > 0.0).then(|| tokens as f64 / t.total);
                }
                // Token by token the decode model prices the row (the same sums, in the
                // order of the rows without batches).
                None => {
                    let t = decode_time(
                        p,
                        &e.hw,
                        io,
                        ram_gib,
                        &hist.pairs(),
                        plan.per_token as f64,
                        resident,
                    );
                    row.t_vram_ms = Some(t.t_vram * 1e3);
                    row.t_ram_ms = Some(t.t_ram * 1e3);
                    // No CPU in the profile: no matmul rate, the RAM bounds alone.
                    row.t_compute_ms = e.hw.cpu.as_ref().map(|_| t.t_compute * 1e3);
                    row.t_ssd_ms = Some(t.t_io * 1e3);
                    row.device_bytes_per_token = Some(t.device_bytes);
                    row.est_tok_s = Some(1.0 / t.total);
                }
            }
        } else {
            // `--io rated`: the missed expert bytes over the rated bandwidth, no compute.
            let t = token_time(&e.placement, &e.hw, mean);
            row.io = Some("rated");
            row.device_bytes_per_token = Some(mean);
            row.t_vram_ms = Some(t.t_vram * 1e3);
            row.t_ram_ms = Some(t.t_ram * 1e3);
            row.t_ssd_ms = Some(t.t_ssd * 1e3);
            row.est_tok_s = Some(t.tok_s());
        }
        if let Some((u, d)) = e.u_d {
            let a = analytic_ssd_bytes_per_token(&e.placement, u, d, budget.capacity, e.chunk);
            row.analytic_ssd_bytes_per_token = Some(a);
            row.analytic_tok_s = Some(token_time(&e.placement, &e.hw, a).tok_s());
        }
    }
    row
}

/// Time every counted step of a batched run on `machine` (steps alike priced once), fill
/// the batch columns' rates (prefill and decode tokens/s, the mean time to first token
/// of the prompt runs, or with `prompt_len` of the runs that long) and return the steps'
/// summed times.
fn time_steps(
    plan: &ReplayPlan,
    counts: &Misses,
    warmup: usize,
    machine: &BatchMachine,
    prompt_len: Option<u64>,
    b: &mut BatchColumns,
) -> StepTime {
    let mut priced: HashMap<(u32, usize, u32), StepTime> = HashMap::new();
    let mut sum = StepTime::default();
    let (mut prompt_s, mut decode_s) = (0.0, 0.0);
    // Prompt runs: (tokens, seconds) summed over the ubatches of each run.
    let mut runs: Vec<(u64, f64)> = Vec::new();
    let mut in_run = false;
    for i in plan.first_counted_step(warmup)..plan.n_steps {
        let st = plan.step(i);
        let misses = counts.misses_per_step[i];
        let t = *priced
            .entry((st.tokens, st.accesses, misses))
            .or_insert_with(|| {
                machine.step_time(StepLoad {
                    tokens: st.tokens,
                    union: st.accesses as f64,
                    misses: misses as f64,
                })
            });
        sum.t_gpu += t.t_gpu;
        sum.t_cpu += t.t_cpu;
        sum.t_h2d += t.t_h2d;
        sum.t_io += t.t_io;
        sum.total += t.total;
        sum.device_bytes += t.device_bytes;
        if st.prompt {
            prompt_s += t.total;
            // A run whose start lies before the warmup is left out.
            if plan.step_offset(i) == 0 {
                runs.push((0, 0.0));
                in_run = true;
            }
            if let Some(run) = runs.last_mut().filter(|_| in_run) {
                run.0 += st.tokens as u64;
                run.1 += t.total;
            }
        } else {
            decode_s += t.total;
            in_run = false;
        }
    }
    let rate = |tokens: u64, s: f64| (tokens > 0 && s > 0.0).then(|| tokens as f64 / s);
    b.decode_tok_s = rate(b.decode_tokens, decode_s);
    b.decode_tok_s_per_seq = rate(b.decode_steps, decode_s);
    b.prompt_len = prompt_len;
    match prompt_len {
        None => {
            b.prefill_tok_s = rate(b.prompt_tokens, prompt_s);
            if !runs.is_empty() {
                b.ttft_s = Some(runs.iter().map(|r| r.1).sum::<f64>() / runs.len() as f64);
                b.ttft_runs = Some(runs.len() as u64);
            }
        }
        Some(len) => {
            let full: Vec<f64> = runs.iter().filter(|r| r.0 == len).map(|r| r.1).collect();
            if !full.is_empty() {
                let ttft = full.iter().sum::<f64>() / full.len() as f64;
                b.ttft_s = Some(ttft);
                b.ttft_runs = Some(full.len() as u64);
                b.prefill_tok_s = rate(len, ttft);
            }
        }
    }
    sum
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

    /// The time to first token, worked out from the trace's prompt runs directly: the
    /// prompt steps consumed in order, run after run, each run cut to 20 tokens.
    #[test]
    fn time_to_first_token_sums_the_ubatches_of_each_prompt_run() {
        use crate::decode::IoSetup;
        use crate::drive::DriveCurve;
        use crate::io_engine::IoEngine;
        use crate::quant::quant_type;
        use crate::replay::tests::toy_with_prompts;
        use crate::replay::Batching;
        use crate::step_time::{BatchMachine, StepLoad};
        use crate::timemodel::Placement;

        let trace = toy_with_prompts(500, 3);
        let q4 = quant_type("q4_0").unwrap();
        let p = Placement {
            expert_bytes: 3 << 20,
            non_expert_bytes: 0.0,
            non_expert_vram_bytes: 0.0,
            non_expert_ram_bytes: 0.0,
            gpu_layers: 0,
            cpu_layers: 3,
            cpu_first: 0,
            n_layers: 3,
            top_k: 2,
            layers: crate::timemodel::tests::layers(3, [(q4, 1 << 20); 3]),
            non_expert_quant: q4,
        };
        let hw: Hardware = toml::from_str(
            "name='t'\n[ram]\nsize_gib=10\nbandwidth_gbs=10\n[ssd]\nbandwidth_gbs=2\n[cpu]\nthreads=2\n",
        )
        .unwrap();
        let io = IoSetup {
            engine: IoEngine::Mmap {
                window: 1 << 18,
                threads: 2,
            },
            drive: DriveCurve::from_figures(2.0, 100.0, 1.0),
            page_cache: crate::io_engine::PageCacheRates::same(4.0),
            serial_reads: false,
        };
        let m = BatchMachine {
            placement: &p,
            hw: &hw,
            io: &io,
            ram_gib: 10.0,
            op_offload: true,
            resident: 0.25,
            n_experts: 8,
        };
        // Runs of consecutive prompt tokens in the trace (lengths).
        let mut runs: Vec<usize> = Vec::new();
        for t in 0..trace.n_tokens() {
            if trace.prompt[t] {
                if t > 0 && trace.prompt[t - 1] {
                    *runs.last_mut().unwrap() += 1;
                } else {
                    runs.push(1);
                }
            }
        }
        let spec = PolicySpec::parse("lru").unwrap();
        for cut in [None, Some(20u64)] {
            let b = Batching {
                ubatch: 16,
                parallel: 1,
                prompt_cut: cut.map(|c| c as usize),
            };
            let plan = ReplayPlan::batched(&trace, true, 0, b);
            let counts = run_policy(&plan, &spec, 12, Partition::Global, None, 0).unwrap();
            let st = plan.batch_stats(&counts, 0);
            let mut cols = BatchColumns {
                prompt_tokens: st.prompt.tokens,
                decode_tokens: st.decode.tokens,
                decode_steps: st.decode.steps,
                ..BatchColumns::default()
            };
            let sum = time_steps(&plan, &counts, 0, &m, cut, &mut cols);
            // Each run's (cut) length and seconds, consuming the prompt steps in order.
            let mut per_run: Vec<(usize, f64)> = Vec::new();
            let mut left = 0usize;
            let (mut total, mut prompt_s) = (0.0, 0.0);
            for i in 0..plan.n_steps {
                let s = plan.step(i);
                let t = m
                    .step_time(StepLoad {
                        tokens: s.tokens,
                        union: s.accesses as f64,
                        misses: counts.misses_per_step[i] as f64,
                    })
                    .total;
                total += t;
                if s.prompt {
                    prompt_s += t;
                    if left == 0 {
                        let len = runs[per_run.len()];
                        let len = cut.map_or(len, |c| len.min(c as usize));
                        per_run.push((len, 0.0));
                        left = len;
                    }
                    per_run.last_mut().unwrap().1 += t;
                    left -= s.tokens as usize;
                }
            }
            assert_eq!(per_run.len(), runs.len());
            assert!((sum.total - total).abs() < 1e-9 * total);
            let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * b;
            match cut {
                None => {
                    assert!(close(
                        cols.prefill_tok_s.unwrap(),
                        st.prompt.tokens as f64 / prompt_s
                    ));
                    let mean = prompt_s / runs.len() as f64;
                    assert!(close(cols.ttft_s.unwrap(), mean));
                }
                Some(c) => {
                    // The runs of 40 cut to 20: a ubatch of 16 and one of 4 each.
                    let full: Vec<f64> =
                        per_run.iter().filter(|r| r.0 == 20).map(|r| r.1).collect();
                    assert!(full.len() >= 5 && full.len() < runs.len());
                    let want = full.iter().sum::<f64>() / full.len() as f64;
                    assert_eq!(cols.prompt_len, Some(c));
                    assert!(close(cols.ttft_s.unwrap(), want));
                    assert!(close(cols.prefill_tok_s.unwrap(), 20.0 / want));
                    assert_eq!(plan.n_tokens as u64, st.prompt.tokens + st.decode.tokens);
                }
            }
        }
    }
}
