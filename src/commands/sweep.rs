//! `sweep`: every policy at every RAM budget (and optionally several VRAM sizes), in
//! parallel on all cores, one long-form row per (VRAM, policy, budget). LRU (also behind
//! a pinning decorator) takes one pass of stack distances for all budgets, OPT one pass
//! of its banded stack (policies/src/curves/opt_bands.rs); every other policy one run
//! per budget (see replay::Strategy).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use moe_spill_policies::registry::PolicySpec;

use crate::costing::{Budget, CostInputs};
use crate::error::{Error, Result};
use crate::hardware::Hardware;
use crate::kernel::sweep::{KernelSweep, KernelSweepOptions};
use crate::replay::{ReplayPlan, Strategy};
use crate::report::rows::{render_rows, Row};
use crate::report::{check_output, deliver, OutputFormat};
use crate::setup::{context_line_with, ReplaySetup, SetupOptions};
use crate::timemodel::Placement;
use crate::units::parse_size_gib;

#[derive(Debug)]
pub struct SweepOptions {
    pub study: SetupOptions,
    /// Policies, comma-separated.
    pub policies: Vec<String>,
    /// Whether they are the default list: a default that cannot run on the trace is
    /// left out with a note instead of failing the run.
    pub default_policies: bool,
    /// Installed-RAM range FROM..TO (default: 0GiB up to the RAM that holds every
    /// CPU-side expert).
    pub ram: Option<String>,
    /// Cache-capacity range FROM..TO in experts (instead of RAM; needs no model).
    pub cache_experts: Option<String>,
    /// Budgets, evenly spaced over the range, ends included.
    pub points: usize,
    /// Distance between budgets instead of --points (a size for --ram, experts for
    /// --cache-experts).
    pub step: Option<String>,
    /// VRAM sizes per GPU to sweep as well, GiB, comma-separated (0 = no GPU).
    pub vrams: Vec<f64>,
    /// Worker threads (default: all cores).
    pub jobs: Option<usize>,
    /// Write the results to FILE (atomically) instead of stdout.
    pub output: Option<PathBuf>,
    pub kernel: KernelSweepOptions,
}

/// `FROM..TO` with a parser for each end.
fn parse_range<T: PartialOrd + Copy + std::fmt::Display>(
    s: &str,
    what: &str,
    parse: impl Fn(&str) -> std::result::Result<T, String>,
) -> Result<(T, T)> {
    let (a, b) = s.split_once("..").ok_or_else(|| {
        Error::new(format!(
            "--{what} `{s}`: expected FROM..TO, e.g. 0GiB..256GiB"
        ))
    })?;
    let (a, b) = (
        parse(a).map_err(|e| Error::new(format!("--{what}: {e}")))?,
        parse(b).map_err(|e| Error::new(format!("--{what}: {e}")))?,
    );
    if a > b {
        return Err(Error::new(format!(
            "--{what} `{s}`: the range is inverted ({a} > {b})"
        )));
    }
    Ok((a, b))
}

/// Budgets a sweep takes at most (each is a row, and for most policies a replay):
/// refused before anything is allocated for them.
const MAX_BUDGETS: usize = 10_000;

/// Evenly spaced values from..=to: `points` of them, or every `step`.
fn spaced(from: f64, to: f64, points: usize, step: Option<f64>) -> Result<Vec<f64>> {
    match step {
        Some(st) => {
            if st.is_nan() || st <= 0.0 {
                return Err(Error::new("--step must be positive"));
            }
            // In floating point first: a range of 2^64 would wrap an integer count.
            let n = ((to - from) / st + 1e-9).floor();
            if n.is_nan() || n >= MAX_BUDGETS as f64 {
                return Err(Error::new(format!(
                    "--step gives {:.0} budgets; at most {MAX_BUDGETS}",
                    n + 1.0
                )));
            }
            let n = n as usize;
            Ok((0..=n).map(|i| from + i as f64 * st).collect())
        }
        None => {
            if points == 0 {
                return Err(Error::new("--points must be at least 1"));
            }
            if points > MAX_BUDGETS {
                return Err(Error::new(format!(
                    "--points {points}: at most {MAX_BUDGETS} budgets (each is a row of the output)"
                )));
            }
            if points == 1 || from == to {
                return Ok(vec![from]);
            }
            Ok((0..points)
                .map(|i| from + (to - from) * i as f64 / (points - 1) as f64)
                .collect())
        }
    }
}

fn budgets(
    a: &SweepOptions,
    setup: Option<&(Placement, Hardware)>,
    plan: &ReplayPlan,
) -> Result<Vec<Budget>> {
    if let Some(r) = &a.cache_experts {
        let parse = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{s}` is not a number of experts"))
        };
        let (from, to) = parse_range(r, "cache-experts", parse)?;
        let step = a
            .step
            .as_deref()
            .map(|s| parse(s).map(|v| v as f64))
            .transpose()
            .map_err(|e| Error::new(format!("--step: {e}")))?;
        let mut caps: Vec<usize> = spaced(from as f64, to as f64, a.points, step)?
            .iter()
            .map(|v| v.round() as usize)
            .collect();
        caps.dedup();
        return Ok(caps
            .into_iter()
            .map(|c| Budget {
                ram_gib: None,
                capacity: c,
            })
            .collect());
    }
    let (placement, hw) = setup.ok_or_else(|| {
        Error::new("RAM budgets need a model preset to size experts: pass --model, or sweep --cache-experts FROM..TO")
    })?;
    let (from, to) = match &a.ram {
        Some(r) => {
            let (from, to) = parse_range(r, "ram", parse_size_gib)?;
            crate::hardware::plausible_ram_gib(to)
                .map_err(|m| Error::new(format!("--ram {r}: {m}")))?;
            (from, to)
        }
        None => {
            let every_cpu_expert = plan.n_slots() * plan.n_experts;
            (
                0.0,
                placement
                    .ram_for_capacity(every_cpu_expert, hw.ram.reserve_gib)
                    .ceil(),
            )
        }
    };
    let step = a
        .step
        .as_deref()
        .map(parse_size_gib)
        .transpose()
        .map_err(|e| Error::new(format!("--step: {e}")))?;
    Ok(spaced(from, to, a.points, step)?
        .into_iter()
        .map(|ram| Budget {
            ram_gib: Some(ram),
            capacity: placement.ram_capacity(ram, hw.ram.reserve_gib),
        })
        .collect())
}

/// Why a pinned policy cannot run here, in words.
fn plain_reason(spec: &PolicySpec, plan: &ReplayPlan, error: &str) -> String {
    match spec {
        PolicySpec::Pinned { layers, .. } if plan.n_slots() < *layers => format!(
            "it pins the first {layers} MoE layers in RAM, and only {} reach the cache here",
            plan.n_slots()
        ),
        _ => error.to_string(),
    }
}

/// One unit of parallel work: a policy at a set of budgets (all of them for LRU's one
/// pass, a single one otherwise) for one VRAM size.
struct Job {
    vram: usize,
    policy: usize,
    budgets: Vec<usize>,
}

/// A policy whose pinned set no budget of a VRAM size holds: its experts pinned.
struct Unheld {
    vram: usize,
    policy: usize,
    pinned: usize,
}

/// The jobs of a sweep, longest first: per VRAM size and policy, every budget that
/// holds the policy's pinned set, in one job for a one-pass policy, else one job each;
/// and the policies no budget holds.
fn plan_jobs(
    study: &ReplaySetup,
    specs: &[PolicySpec],
    plans: &[ReplayPlan],
    budget_sets: &[Vec<Budget>],
    quiet: bool,
    default_policies: bool,
) -> Result<(Vec<Job>, Vec<Unheld>)> {
    let mut jobs: Vec<Job> = Vec::new();
    let mut unheld = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    for v in 0..plans.len() {
        for (p, spec) in specs.iter().enumerate() {
            // Budgets too small for a pinned set are left out (in a single simulate they
            // are an error).
            let min = match study.min_capacity(&plans[v], spec) {
                Ok(m) => m,
                Err(e) if default_policies => {
                    if !quiet {
                        crate::note!(
                            "moe-spill: note: the default policy {spec} is left out: {}",
                            plain_reason(spec, &plans[v], &e.0)
                        );
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            let fits: Vec<usize> = (0..budget_sets[v].len())
                .filter(|&b| budget_sets[v][b].capacity >= min)
                .collect();
            // A note, silenced by -q like every note: the rows that are there say which
            // budgets ran (the default range starts at 0 GiB, below pinned:3's set, so
            // the default sweep has this case). No row at all is an error (`no_rows`).
            if !fits.is_empty() && fits.len() < budget_sets[v].len() && !quiet {
                crate::note!(
                    "moe-spill: note: {spec} pins {min} experts; {} budget(s) below that are left out",
                    budget_sets[v].len() - fits.len()
                );
            }
            if fits.is_empty() {
                // Other policies (or VRAM sizes) may still give rows: say why this one
                // has none (with no row at all, `no_rows` says it as the error).
                if !quiet {
                    let largest = budget_sets[v].iter().map(|b| b.capacity).max().unwrap_or(0);
                    notes.push(format!(
                        "moe-spill: note: {spec} pins {min} experts and the largest budget holds {largest}: it has no rows{}",
                        if plans.len() > 1 { " at one VRAM size" } else { "" }
                    ));
                }
                unheld.push(Unheld {
                    vram: v,
                    policy: p,
                    pinned: min,
                });
                continue;
            }
            if Strategy::of(spec, study.partition).one_pass() {
                jobs.push(Job {
                    vram: v,
                    policy: p,
                    budgets: fits,
                });
            } else {
                // Budgets closer than one expert hold the same cache: one replay gives
                // the rows of them all.
                let mut groups: Vec<Vec<usize>> = Vec::new();
                for b in fits {
                    let cap = budget_sets[v][b].capacity;
                    match groups.last_mut() {
                        Some(g) if budget_sets[v][g[0]].capacity == cap => g.push(b),
                        _ => groups.push(vec![b]),
                    }
                }
                jobs.extend(groups.into_iter().map(|budgets| Job {
                    vram: v,
                    policy: p,
                    budgets,
                }));
            }
        }
    }
    // A policy named on the command line gives rows, or the sweep is an error
    // (`unrun`, without these notes); a default one is left out with a note.
    if default_policies || unrun(specs.len(), &jobs).is_none() {
        for note in notes {
            crate::note!("{note}");
        }
    }
    // Long jobs first (LRU's pass covers every budget; big budgets run longer for most
    // policies only a little), so the tail of the run stays short.
    jobs.sort_by_key(|j| std::cmp::Reverse(j.budgets.len()));
    Ok((jobs, unheld))
}

const NO_ROWS: &str = "no row to write";

/// The first of `policies` without a job: no budget holds its pinned set.
fn unrun(policies: usize, jobs: &[Job]) -> Option<usize> {
    (0..policies).find(|&p| !jobs.iter().any(|j| j.policy == p))
}

/// The error of a sweep with no row at all (`lead`), or none for a policy named: why,
/// and a range of budgets that gives rows (for the policy of `unheld` that needs the
/// least). An empty output with exit 0 would hide it.
fn no_rows(
    lead: &str,
    specs: &[PolicySpec],
    unheld: &[Unheld],
    setups: &[Option<(Placement, Hardware)>],
    budget_sets: &[Vec<Budget>],
    vrams: &[Option<f64>],
) -> Error {
    // RAM (GiB, rounded up to a tenth) at which the cache holds `u`'s pinned set, for RAM
    // budgets; its size in experts for --cache-experts.
    let need = |u: &Unheld| match &setups[u.vram] {
        Some((placement, hw)) if budget_sets[u.vram][0].ram_gib.is_some() => {
            crate::units::tenth_up(placement.ram_for_capacity(u.pinned, hw.ram.reserve_gib))
        }
        _ => u.pinned as f64,
    };
    let Some(u) = unheld.iter().min_by(|x, y| need(x).total_cmp(&need(y))) else {
        return Error::new(format!("sweep: {lead}: no policy can run on this trace"));
    };
    let set = &budget_sets[u.vram];
    let largest = set.iter().max_by_key(|b| b.capacity).expect("budgets");
    let (largest, range) = match (set[0].ram_gib, largest.ram_gib) {
        (Some(from), Some(top)) => (
            format!("the largest budget, {top} GiB, holds {}", largest.capacity),
            format!("--ram {from}GiB..{}GiB", need(u)),
        ),
        _ => (
            format!("the largest budget holds {}", largest.capacity),
            format!("--cache-experts {}..{}", set[0].capacity, u.pinned),
        ),
    };
    let vram = match vrams[u.vram] {
        Some(v) => format!(" (with {v} GiB of VRAM)"),
        None => String::new(),
    };
    Error::new(format!(
        "sweep: {lead}: {} pins {} experts and {largest}; {range} reaches a budget that holds them{vram}",
        specs[u.policy], u.pinned
    ))
}

/// Run the jobs on `threads` workers, each taking the next job; the rows of each job
/// tagged (vram, policy, budget) for sorting. The first error stops the workers.
fn run_jobs(
    jobs: &[Job],
    threads: usize,
    quiet: bool,
    run_job: impl Fn(&Job) -> Result<Vec<Row>> + Sync,
) -> Result<Vec<(usize, usize, usize, Row)>> {
    let bar = crate::progress::bar(jobs.len() as u64, "sweeping", quiet);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, usize, usize, Row)>> = Mutex::new(Vec::new());
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.min(jobs.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                if failure.lock().unwrap().is_some() {
                    break;
                }
                let run = run_job(job);
                match run {
                    Ok(rows) => {
                        let mut r = results.lock().unwrap();
                        for (&b, row) in job.budgets.iter().zip(rows) {
                            r.push((job.vram, job.policy, b, row));
                        }
                    }
                    Err(e) => {
                        failure.lock().unwrap().get_or_insert(e);
                    }
                }
                bar.inc(1);
            });
        }
    });
    bar.finish_and_clear();
    if let Some(e) = failure.into_inner().unwrap() {
        return Err(e);
    }
    Ok(results.into_inner().unwrap())
}

pub fn run(a: SweepOptions) -> Result<()> {
    if a.jobs == Some(0) {
        return Err(Error::new(
            "-j 0: give at least one worker thread (default: all cores)",
        ));
    }
    let specs: Vec<PolicySpec> = a
        .policies
        .iter()
        .map(|p| PolicySpec::parse(p.trim()).map_err(|e| Error::new(format!("--policies: {e}"))))
        .collect::<Result<_>>()?;
    if specs.is_empty() {
        return Err(Error::new("--policies: name at least one policy"));
    }
    let specs = crate::notes::once(specs, "--policies", a.study.input.quiet);
    let mut inputs = a.study.input_files();
    inputs.extend(a.kernel.kernel_file.iter().cloned());
    check_output(a.output.as_deref(), &inputs)?;
    let study = ReplaySetup::new(&a.study, None, specs.iter().any(|s| s.needs_profile()))?;
    // Sizes are finite and not negative (parse_size_gib); within what a GPU has here.
    for &v in &a.vrams {
        crate::hardware::plausible_vram_gib(v)
            .map_err(|m| Error::new(format!("--vrams {v}: {m}")))?;
    }
    let vrams: Vec<Option<f64>> = if a.vrams.is_empty() {
        vec![None]
    } else {
        crate::notes::once(a.vrams.clone(), "--vrams", a.study.input.quiet)
            .into_iter()
            .map(Some)
            .collect()
    };
    // One replay per VRAM size and --prompt-tokens length (prompt runs cut to it): the
    // jobs' `vram` indexes these variants.
    let cuts = study.prompt_cuts();
    let variants: Vec<(Option<f64>, Option<u64>)> = vrams
        .iter()
        .flat_map(|&v| cuts.iter().map(move |&c| (v, c)))
        .collect();
    let vrams: Vec<Option<f64>> = variants.iter().map(|v| v.0).collect();
    // Placement first; the trace statistics of the rows (U and D) are computed by the
    // first job that finishes, while the other workers go on.
    let setups: Vec<Option<(Placement, Hardware)>> = vrams
        .iter()
        .map(|&v| study.setup(v))
        .collect::<Result<_>>()?;
    let plans: Vec<ReplayPlan> = setups
        .iter()
        .zip(&variants)
        .map(|(s, v)| study.plan_cut(s.as_ref().map(|s| &s.0), v.1))
        .collect();
    let budget_sets: Vec<Vec<Budget>> = setups
        .iter()
        .zip(&plans)
        .map(|(s, p)| budgets(&a, s.as_ref(), p))
        .collect::<Result<_>>()?;
    let (jobs, unheld) = plan_jobs(
        &study,
        &specs,
        &plans,
        &budget_sets,
        a.study.input.quiet,
        a.default_policies,
    )?;
    // The error for no row at all (NO_ROWS) or none for a policy named, with the pinned
    // sets no budget holds.
    let no_rows_of = |lead: &str, unheld: &[Unheld]| {
        no_rows(lead, &specs, unheld, &setups, &budget_sets, &vrams)
    };
    if jobs.is_empty() && !a.kernel.kernel {
        return Err(no_rows_of(NO_ROWS, &unheld));
    }
    // A policy the user named that gives no row at all is an error, as in simulate.
    if let (false, Some(p)) = (a.default_policies, unrun(specs.len(), &jobs)) {
        let mine: Vec<Unheld> = unheld.into_iter().filter(|u| u.policy == p).collect();
        return Err(no_rows_of("no row for a policy named", &mine));
    }
    // Checked (and the file laid out) before the policies run; the kernel runs after.
    let mut kernel = KernelSweep::new(&a.kernel, &study, &plans[0], a.study.input.quiet)?;
    for ((s, v), budgets) in setups
        .iter()
        .zip(&variants)
        .zip(&budget_sets)
        .step_by(cuts.len())
    {
        study.note_placement(s.as_ref().map(|s| &s.0), v.0);
        note_paged_non_expert(s.as_ref(), budgets, a.study.input.quiet);
    }
    study.note_batching();
    let threads = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut results = run_jobs(&jobs, threads, a.study.input.quiet, |job| {
        let set = &budget_sets[job.vram];
        let bs: Vec<Budget> = job.budgets.iter().map(|&b| set[b]).collect();
        let cut = variants[job.vram].1;
        let econ = setups[job.vram]
            .as_ref()
            .map(|s| study.cost_inputs_cut(s, cut));
        study.replay_rows(
            &plans[job.vram],
            &specs[job.policy],
            &bs,
            econ.as_ref(),
            vrams[job.vram],
        )
    })?;
    if let Some(k) = kernel.as_mut() {
        let econs: Vec<Option<CostInputs>> = setups
            .iter()
            .map(|s| s.as_ref().map(|s| study.cost_inputs_of(s)))
            .collect();
        let rows = k.rows(&study, &plans, &budget_sets, &econs, &vrams)?;
        results.extend(rows.into_iter().map(|(v, b, row)| (v, specs.len(), b, row)));
    }
    results.sort_by_key(|r| (r.0, r.1, r.2));
    let rows: Vec<Row> = results.into_iter().map(|r| r.3).collect();
    if rows.is_empty() {
        // With --kernel, whose rows leave out budgets of 0 experts.
        return Err(no_rows_of(NO_ROWS, &unheld));
    }
    let format = OutputFormat::for_output(a.study.format, a.output.as_deref());
    let mut text = render_rows(&rows, format, !a.vrams.is_empty());
    if format == OutputFormat::Table {
        let econ = setups[0].as_ref().map(|s| study.cost_inputs_of(s));
        let line = context_line_with(&study, econ.as_ref(), !a.vrams.is_empty(), true);
        text = format!("{line}\n\n{text}");
    }
    let what = crate::report::rows_held(rows.len());
    deliver(&text, a.output.as_deref(), a.study.input.quiet, &what)
}

/// Budgets whose RAM cannot hold the non-expert weights beside the reserve: their rows
/// read those weights from the drive every token and cache no expert.
fn note_paged_non_expert(setup: Option<&(Placement, Hardware)>, budgets: &[Budget], quiet: bool) {
    let Some((p, hw)) = setup else { return };
    let reserve = hw.ram.reserve_gib;
    let short = budgets
        .iter()
        .filter_map(|b| b.ram_gib)
        .filter(|&r| p.paged_non_expert_bytes(r, reserve) > 0.0)
        .count();
    if short > 0 && !quiet {
        crate::note!(
            "moe-spill: note: {short} budget(s) below {:.1} GiB cannot hold the non-expert weights beside the {reserve} GiB reserve: their rows read the rest from the drive every token (in device_bytes_per_token) and cache no expert",
            p.ram_for_capacity(0, reserve)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacing() {
        assert_eq!(spaced(0.0, 256.0, 33, None).unwrap()[1], 8.0);
        assert_eq!(spaced(0.0, 256.0, 33, None).unwrap().len(), 33);
        assert_eq!(
            spaced(0.0, 10.0, 5, Some(2.5)).unwrap(),
            vec![0.0, 2.5, 5.0, 7.5, 10.0]
        );
        assert_eq!(spaced(4.0, 4.0, 33, None).unwrap(), vec![4.0]);
        assert!(spaced(0.0, 1.0, 0, None).is_err());
        assert!(parse_range("8GiB..2GiB", "ram", parse_size_gib).is_err());
        assert_eq!(
            parse_range("0GiB..2GiB", "ram", parse_size_gib).unwrap(),
            (0.0, 2.0)
        );
        assert!(parse_range("0GiB-2GiB", "ram", parse_size_gib).is_err());
    }
}
