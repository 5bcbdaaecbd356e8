//! `kernel-replay`: a trace on the real Linux page cache (a memory cgroup, an mmap'd
//! model-like file) beside the page-level model and the simulated policies, one
//! comparison row per budget and source.

use std::io::Write;
use std::path::PathBuf;

use moe_spill_policies::registry::PolicySpec;

use crate::costing::CostInputs;
use crate::drive::DriveCurve;
use crate::error::{printable_path, Error, Result};
use crate::io_engine::{EngineChoice, EngineKind, PageCacheRates};
use crate::kernel::{
    page_model, pagemodel, policy_run, truncate_trace, Advice, ExpertFileLayout, GgufLayout,
    KernelOptions, KernelRun, KernelSession, PageModelConfig, PageModelRun, PAGE_MODEL,
};
use crate::replay::stats::percentile;
use crate::replay::{Misses, ReplayPlan};
use crate::report::kernel::{compare_csv, compare_table, CompareRow};
use crate::report::{emit, refuse_input_as_output, write_atomic, OutputFormat, Table};
use crate::setup::{check_warmup, context_line, ReplaySetup, SetupOptions};

#[derive(Debug)]
pub struct KernelReplayOptions {
    pub study: SetupOptions,
    /// Installed RAM of the real machine, one or more (comma-separated): the page cache
    /// holds the experts `simulate --ram` gives it, at the scaled size.
    pub ram: Vec<f64>,
    /// Cache capacities in experts, exactly (comma-separated).
    pub cache_experts: Vec<usize>,
    /// Bytes of one expert in the laid-out file; the budget is scaled the same way, so
    /// the cache holds the same number of experts.
    pub expert_bytes: u64,
    /// 1: each expert's bytes contiguous; 3: gate/up/down slices in three tensors per
    /// layer, as in a GGUF.
    pub slices: u32,
    /// The model file to write, or reuse when it has this layout (default: a temporary
    /// file in the current directory, removed at the end).
    pub file: Option<PathBuf>,
    /// Replay only the first N tokens.
    pub tokens: Option<usize>,
    /// Advice on the mapping: llama.cpp's posix_fadvise(SEQUENTIAL) by default.
    pub advice: Advice,
    /// `--read-ahead-kb`: set the device's read_ahead_kb to KB while the child opens the
    /// file (the open file keeps it), restoring it right after; None: leave the device
    /// alone. The page model and the predicted wall time take the window the run had.
    pub read_ahead_kb: Option<u64>,
    /// Policies to compare, comma-separated (the page-level model, `page-model`, is
    /// always shown).
    pub policies: Vec<String>,
    /// Also write the comparison as CSV to FILE (atomically).
    pub output: Option<PathBuf>,
    /// Write per-token kernel numbers and policy misses as CSV to FILE.
    pub per_token: Option<PathBuf>,
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v
}

/// The policies to compare: plain ones (a profile would be an oracle of this trace).
fn plain_policies(names: &[String]) -> Result<Vec<PolicySpec>> {
    let specs: Vec<PolicySpec> = names
        .iter()
        .map(|s| PolicySpec::parse(s).map_err(|e| Error::new(format!("--policies: {e}"))))
        .collect::<Result<_>>()?;
    if let Some(s) = specs.iter().find(|s| s.needs_profile()) {
        return Err(Error::new(format!(
            "--policies: {s} needs a profile; kernel-replay compares plain policies"
        )));
    }
    Ok(specs)
}

/// (installed RAM, capacity) of each budget: --cache-experts as given, or --ram sized
/// by the model's placement.
fn budgets(
    a: &KernelReplayOptions,
    econ: Option<&CostInputs>,
) -> Result<Vec<(Option<f64>, usize)>> {
    Ok(if !a.cache_experts.is_empty() {
        // A memory cgroup of nothing: the replay could not make progress.
        if a.cache_experts.contains(&0) {
            return Err(Error::new(
                "--cache-experts 0: the page cache needs room for one expert at least",
            ));
        }
        a.cache_experts.iter().map(|&c| (None, c)).collect()
    } else {
        let e = econ.ok_or_else(|| {
            Error::new("--ram needs a model preset to size experts: pass --model (or use --cache-experts N)")
        })?;
        let reserve = e.hw.ram.reserve_gib;
        a.ram
            .iter()
            .map(|&r| {
                if r < reserve {
                    Err(Error::new(format!(
                        "--ram {r} GiB is below the RAM reserve of {reserve} GiB of `{}` (set --ram-reserve)",
                        e.hw.name
                    )))
                } else {
                    Ok((Some(r), e.placement.ram_capacity(r, reserve)))
                }
            })
            .collect::<Result<_>>()?
    })
}

/// What the rows at one budget are made of: the options, the setup, the plan replayed,
/// the policies and the model's real expert size.
struct Comparison<'a> {
    a: &'a KernelReplayOptions,
    study: &'a ReplaySetup,
    plan: &'a ReplayPlan<'a>,
    specs: &'a [PolicySpec],
    model_eb: Option<u64>,
    /// The drive and page-cache figures of the profile, for the page model's predicted
    /// wall time (I/O model, docs/VALIDATION.md).
    drive: Option<(DriveCurve, PageCacheRates)>,
    /// The laid-out file's layout, and the bytes one expert counts for in it.
    layout: &'a ExpertFileLayout,
}

/// The wall time per token the I/O model gives the page model's reads (ms): the one
/// thread of the replay faults its windows (or, under `willneed`, advises an expert's
/// slices and then touches them: one expert's slices in flight at once), in the
/// requests the page model issued, and pays the page cache's CPU time for every byte.
/// The engine is `--io mmap` with the run's advice and the device's read_ahead_kb the
/// file was opened with, as `simulate` would price it.
fn predicted_wall_ms(
    (drive, page_cache): (&DriveCurve, PageCacheRates),
    pm: &PageModelRun,
    slices: &[u64],
    read_ahead_kb: u64,
    advice: Advice,
) -> Vec<f64> {
    let engine = EngineChoice {
        kind: EngineKind::Mmap,
        workers: 1,
        read_ahead_kb,
        advice: advice.into(),
        serial_reads: false,
    }
    .engine(1);
    // The replay reads one expert at a time (`simulate` has a layer's misses at once).
    let misses = 1.0;
    let in_flight = engine.requests(slices, misses, drive).in_flight;
    pm.read_pages
        .iter()
        .zip(&pm.read_requests)
        .map(|(&p, &n)| {
            let bytes = (p * pagemodel::PAGE) as f64;
            // The requests the page model issued, at their mean size: the windows, and
            // the pieces of those a cached page cut short.
            let block = (bytes / n.max(1) as f64).min(drive.max_request);
            let s = drive.read_seconds(bytes, block, in_flight)
                + engine.page_cache_seconds(bytes, slices, misses, page_cache);
            s * 1e3
        })
        .collect()
}

/// The rows at one budget, and the per-token numbers behind them.
struct AtBudget {
    rows: Vec<CompareRow>,
    page_model: PageModelRun,
    policy_misses: Vec<Misses>,
}

impl Comparison<'_> {
    /// The kernel's row (from its measured run), then the page-level model's with the
    /// window the kernel run had, then each policy's, at capacity `cap`: their figures
    /// over the tokens after `--warmup-tokens` (the per-token numbers returned are of
    /// every token).
    fn at(&self, ram_gib: Option<f64>, cap: usize, run: &KernelRun) -> Result<AtBudget> {
        let w = self.study.warmup;
        let n = self.plan.n_tokens - w;
        let k = &run.counted_from(w);
        let mut rows = Vec::new();
        let base = |source: String| CompareRow {
            trace: self.study.trace_label.clone(),
            model: self
                .study
                .deployment
                .as_ref()
                .map(|m| m.model.name.to_string()),
            expert_bytes: self.layout.expert_bytes,
            model_expert_bytes: self.model_eb,
            slices: self.layout.slices,
            advice: self.a.advice.name(),
            window_kb: k.window_kb,
            ram_gib,
            cache_experts: cap,
            source,
            tokens: n as u64,
            accesses: (n * self.plan.per_token) as u64,
            ..CompareRow::default()
        };
        let kmiss = k.expert_misses();
        let kper = sorted(k.misses_per_token());
        let walls = sorted(k.wall_ns.iter().map(|&w| w as f64 / 1e6).collect());
        let mut kr = base("kernel".into());
        kr.misses = kmiss;
        kr.misses_per_token = kmiss / n as f64;
        kr.misses_per_token_p50 = percentile(&kper, 50.0);
        kr.misses_per_token_p99 = percentile(&kper, 99.0);
        kr.ssd_bytes_per_token = self.model_eb.map(|eb| kr.misses_per_token * eb as f64);
        kr.resident_experts = k.resident_experts();
        kr.read_bytes = Some(k.total_read_bytes());
        kr.major_faults_per_token = Some(k.major_faults.iter().sum::<u64>() as f64 / n as f64);
        kr.read_requests_per_token = k
            .device_reads
            .as_ref()
            .map(|d| d.iter().sum::<u64>() as f64 / n as f64);
        kr.wall_ms_per_token = Some(walls.iter().sum::<f64>() / n as f64);
        let kr_wall = kr.wall_ms_per_token.filter(|&w| w > 0.0);
        kr.wall_ms_p50 = Some(percentile(&walls, 50.0));
        kr.wall_ms_p99 = Some(percentile(&walls, 99.0));
        kr.limit_bytes = Some(k.limit_bytes);
        kr.overhead_bytes = Some(k.overhead_bytes);
        kr.global_reclaim_pages = Some(k.global_reclaim_pages);
        kr.seconds = Some(k.seconds);
        rows.push(kr);
        let kres = k.resident_ids();
        let overlap = |res: &[bool]| {
            let held = res.iter().filter(|&&x| x).count();
            (held > 0).then(|| {
                res.iter().zip(&kres).filter(|(p, k)| **p && **k).count() as f64 / held as f64
            })
        };
        // The page-level model with the window the kernel run had.
        let pcfg = PageModelConfig::for_advice(self.layout.clone(), self.a.advice, k.window_kb)
            .with_io_limit(k.max_io_kb, k.read_ahead_kb);
        let pm_all = page_model(&self.plan.stream, self.plan.per_token, cap, &pcfg);
        let pm = pm_all.counted_from(w);
        let pmiss = pm.expert_misses();
        let pper = sorted(pm.misses_per_token());
        let mut pr = base(PAGE_MODEL.into());
        pr.misses = pmiss;
        pr.misses_per_token = pmiss / n as f64;
        pr.misses_per_token_p50 = percentile(&pper, 50.0);
        pr.misses_per_token_p99 = percentile(&pper, 99.0);
        pr.ssd_bytes_per_token = self.model_eb.map(|eb| pr.misses_per_token * eb as f64);
        pr.rel_err = (kmiss > 0.0).then(|| (pmiss - kmiss) / kmiss);
        pr.resident_experts = pm.resident_experts();
        pr.resident_overlap = overlap(&pm.resident_ids());
        pr.read_bytes = Some(pm.total_read_bytes());
        pr.read_requests_per_token = Some(pm.read_requests.iter().sum::<u64>() as f64 / n as f64);
        if let Some((drive, page_cache)) = &self.drive {
            let l = self.layout;
            let slices = vec![l.expert_bytes / l.slices as u64; l.slices as usize];
            let wall = predicted_wall_ms(
                (drive, *page_cache),
                &pm,
                &slices,
                k.read_ahead_kb,
                self.a.advice,
            );
            pr.wall_ms_per_token = Some(wall.iter().sum::<f64>() / n as f64);
            let walls = sorted(wall);
            pr.wall_ms_p50 = Some(percentile(&walls, 50.0));
            pr.wall_ms_p99 = Some(percentile(&walls, 99.0));
            pr.wall_rel_err = kr_wall.map(|m| (pr.wall_ms_per_token.unwrap() - m) / m);
        }
        rows.push(pr);
        let mut policy_misses = Vec::new();
        for spec in self.specs {
            let (c, res) = policy_run(self.plan, spec, cap)?;
            let counted = &c.misses_per_step[w..];
            let m: u64 = counted.iter().map(|&x| x as u64).sum();
            let per = sorted(counted.iter().map(|&x| x as f64).collect());
            let mut r = base(spec.to_string());
            r.misses = m as f64;
            r.misses_per_token = m as f64 / n as f64;
            r.misses_per_token_p50 = percentile(&per, 50.0);
            r.misses_per_token_p99 = percentile(&per, 99.0);
            r.ssd_bytes_per_token = self.model_eb.map(|eb| r.misses_per_token * eb as f64);
            r.rel_err = (kmiss > 0.0).then(|| (m as f64 - kmiss) / kmiss);
            r.resident_experts = res.iter().filter(|&&x| x).count() as f64;
            r.resident_overlap = overlap(&res);
            rows.push(r);
            policy_misses.push(c);
        }
        Ok(AtBudget {
            rows,
            page_model: pm_all,
            policy_misses,
        })
    }
}

/// `moe-spill kernel-replay`.
pub fn run(a: KernelReplayOptions) -> Result<()> {
    let specs = plain_policies(&a.policies)?;
    let inputs = a.study.input_files();
    for out in [&a.output, &a.per_token].into_iter().flatten() {
        if out.is_dir() {
            return Err(Error::in_file(
                out,
                "is a directory; -o and --per-token take a file name",
            ));
        }
        // The model file the run lays out, even when it is not there yet.
        if a.file
            .as_ref()
            .is_some_and(|f| crate::report::same_output(out, f))
        {
            return Err(Error::in_file(
                out,
                "is also the model's --file; give another",
            ));
        }
        refuse_input_as_output(out, &inputs)?;
    }
    if let (Some(o), Some(t)) = (&a.output, &a.per_token) {
        // The same file twice: the per-token numbers would replace the comparison.
        if crate::report::same_output(o, t) {
            return Err(Error::in_file(
                o,
                "is also --per-token; give them two files",
            ));
        }
    }
    if a.tokens == Some(0) {
        return Err(Error::new("--tokens must be at least 1"));
    }
    let mut study = ReplaySetup::new(&a.study, None, false)?;
    // Token by token, as the run faults: no batches to describe.
    study.batch_columns = false;
    study.require_token_by_token("kernel-replay")?;
    let econ = study.cost_inputs(None)?;
    let cut;
    let trace = match a.tokens {
        Some(n) => {
            cut = truncate_trace(&study.loaded.trace, study.include_prompt, n);
            &cut
        }
        None => &study.loaded.trace,
    };
    let slots = econ
        .as_ref()
        .map_or(0..trace.geometry.n_layers(), |e| e.placement.cpu_range());
    let mut plan = ReplayPlan::for_slots(trace, study.include_prompt, slots);
    // The replay cut by --tokens may be shorter than the trace setup checked against.
    check_warmup(study.warmup, plan.n_tokens)?;
    // With --gguf the file is laid out as the GGUF is (every slice at its offset, the
    // model's own sizes); otherwise experts are scaled to --expert-bytes.
    let gguf = study
        .deployment
        .as_ref()
        .and_then(|d| GgufLayout::of(&d.weights));
    let expert_bytes = match (&gguf, &econ) {
        (Some(_), Some(e)) => e.placement.expert_bytes,
        _ => a.expert_bytes,
    };
    // The policies model the kernel run, whose page cache holds the scaled experts: the
    // `linux` ratio follows the scaled bytes (what the kernel saw), not the model's.
    plan.expert_bytes = Some(expert_bytes);
    let budgets = budgets(&a, econ.as_ref())?;
    if plan.per_token == 0 {
        return Err(Error::new(
            "kernel-replay: every MoE layer is in VRAM on this machine, nothing reaches the page cache (try --gpus 0 or --hw desktop-cpu)",
        ));
    }
    let quiet = a.study.input.quiet;
    let opts = KernelOptions {
        expert_bytes,
        slices: a.slices,
        gguf,
        advice: a.advice,
        file: a.file.clone(),
        read_ahead_kb: a.read_ahead_kb,
        child: None,
        quiet,
    };
    let model_eb = econ.as_ref().map(|e| e.placement.expert_bytes);
    let mut session = KernelSession::new(&plan, opts)?;
    let mut rows = Vec::new();
    let mut per_token = Table::new(&[
        "cache_experts",
        "token",
        "read_bytes",
        "major_faults",
        "minor_faults",
        "wall_us",
        "sys_us",
        "device_reads",
        "kernel_experts",
        "page_model_experts",
        "page_model_requests",
    ]);
    per_token.header.extend(specs.iter().map(|s| s.to_string()));
    let n = plan.n_tokens;
    let layout = session.layout().clone();
    let compare = Comparison {
        a: &a,
        study: &study,
        plan: &plan,
        specs: &specs,
        model_eb,
        drive: econ
            .as_ref()
            .map(|e| (e.hw.ssd.curve(), e.hw.ram.page_cache())),
        layout: &layout,
    };
    let mut noted = false;
    for &(ram_gib, cap) in &budgets {
        if !quiet {
            let counted = match study.warmup {
                0 => String::new(),
                w => format!(", the first {w} left out of the rows"),
            };
            crate::note!(
                "moe-spill: kernel replay of {n} tokens at {cap} experts ({:.1} MiB of page cache{counted}) ...",
                (cap as u64 * expert_bytes) as f64 / (1u64 << 20) as f64
            );
        }
        let k = session.measure(&plan, cap)?;
        if !quiet && !noted && k.window_kb * 1024 >= expert_bytes && a.advice != Advice::Willneed {
            noted = true;
            crate::note!(
                "moe-spill: note: the mmap read-around window ({} KiB) is as large as an expert: readahead dominates what the kernel reads (try --read-ahead-kb 128, a common NVMe value, or a larger --expert-bytes)",
                k.window_kb
            );
        }
        if k.global_reclaim_pages > 0 && !quiet {
            crate::note!(
                "moe-spill: warning: {} pages were reclaimed by global memory pressure during the run; the kernel numbers may be off",
                k.global_reclaim_pages
            );
        }
        let at = compare.at(ram_gib, cap, &k)?;
        rows.extend(at.rows);
        if a.per_token.is_some() {
            for t in 0..n {
                let mut cells = vec![
                    cap.to_string(),
                    t.to_string(),
                    k.read_bytes[t].to_string(),
                    k.major_faults[t].to_string(),
                    k.minor_faults[t].to_string(),
                    (k.wall_ns[t] / 1000).to_string(),
                    (k.sys_ns[t] / 1000).to_string(),
                    k.device_reads
                        .as_ref()
                        .map_or(String::new(), |d| d[t].to_string()),
                    format!("{:.4}", k.read_bytes[t] as f64 / expert_bytes as f64),
                    format!(
                        "{:.4}",
                        (at.page_model.read_pages[t] * pagemodel::PAGE) as f64
                            / expert_bytes as f64
                    ),
                    at.page_model.read_requests[t].to_string(),
                ];
                cells.extend(
                    at.policy_misses
                        .iter()
                        .map(|c| c.misses_per_step[t].to_string()),
                );
                per_token.push(cells);
            }
        }
    }
    let csv = compare_csv(&rows);
    if let Some(p) = &a.output {
        write_atomic(p, |w| w.write_all(csv.as_bytes()))?;
    }
    if let Some(p) = &a.per_token {
        let text = per_token.to_csv();
        write_atomic(p, |w| w.write_all(text.as_bytes()))?;
    }
    let text = match OutputFormat::resolve(a.study.format, false) {
        OutputFormat::Csv => csv,
        OutputFormat::Json => serde_json::to_string_pretty(&rows).expect("json") + "\n",
        OutputFormat::Table => {
            let window = rows.first().map_or(0, |r| r.window_kb);
            format!(
                "{}\nkernel replay: {} tokens{}, experts of {} B ({}), advice {}, mmap read-around window {} KiB (device read_ahead_kb {}), file {}\n\n{}",
                context_line(&study, econ.as_ref(), true),
                n,
                match study.warmup {
                    0 => String::new(),
                    w => format!(" (the rows count the last {})", n - w),
                },
                expert_bytes,
                match &layout.gguf {
                    Some(g) => format!("laid out as the GGUF's {} bytes", g.len),
                    None if layout.slices == 1 => "1 slice".into(),
                    None => format!("{} slices", layout.slices),
                },
                a.advice.name(),
                window,
                session.device_read_ahead_kb().map_or("?".into(), |v| v.to_string()),
                printable_path(session.file()),
                compare_table(&rows)
            )
        }
    };
    emit(&text, None)
}
