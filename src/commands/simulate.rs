//! `simulate`: one policy at one budget through a replay setup: SSD bytes and tokens/s.

use moe_spill_policies::registry::PolicySpec;

use crate::costing::Budget;
use crate::error::{Error, Result};
use crate::replay::run_many;
use crate::report::rows::{render_rows, Row};
use crate::report::{check_output, deliver, OutputFormat};
use crate::setup::{context_line, ReplaySetup, SetupOptions};

#[derive(Debug)]
pub struct SimulateOptions {
    pub study: SetupOptions,
    /// Eviction policy spec (the policy table's forms: `registry::POLICY_HELP`).
    pub policy: String,
    /// Installed RAM (e.g. 128GiB); the page cache gets what the reserve and non-expert
    /// weights leave.
    pub ram: Option<f64>,
    /// Cache capacity in experts, exactly.
    pub cache_experts: Option<usize>,
    /// Write the results here instead of stdout.
    pub output: Option<std::path::PathBuf>,
}

pub fn run(a: SimulateOptions) -> Result<()> {
    let spec = PolicySpec::parse(&a.policy).map_err(|e| Error::new(format!("--policy: {e}")))?;
    check_output(a.output.as_deref(), &a.study.input_files())?;
    let study = ReplaySetup::new(&a.study, a.ram, spec.needs_profile())?;
    let setup = study.setup(None)?;
    // No --ram and no --cache-experts: the profile's installed RAM.
    let ram = match (a.ram, a.cache_experts, &setup) {
        (None, None, Some((_, hw))) => {
            if !a.study.input.quiet {
                crate::note!(
                    "moe-spill: note: no --ram: the {} GiB of `{}`",
                    hw.ram.size_gib,
                    hw.name
                );
            }
            Some(hw.ram.size_gib)
        }
        (None, None, None) => {
            return Err(Error::new(format!(
                "no model preset matches the trace ({}): give --model NAME to size RAM budgets and price them, or --cache-experts N for the counts alone",
                study.loaded.trace.geometry.describe()
            )))
        }
        (ram, _, _) => ram,
    };
    let budget = match (ram, a.cache_experts) {
        (_, Some(n)) => Budget {
            ram_gib: None,
            capacity: n,
        },
        (Some(ram), None) => {
            let (placement, hw) = setup.as_ref().ok_or_else(|| {
                Error::new("--ram needs a model preset to size experts: pass --model (or use --cache-experts N)")
            })?;
            let reserve = hw.ram.reserve_gib;
            let paged = placement.paged_non_expert_bytes(ram, reserve);
            // As a sweep's budgets from 0 GiB: no page cache, every access misses.
            if ram < reserve && !a.study.input.quiet {
                let given = if a.ram.is_some() {
                    format!("--ram {ram} GiB")
                } else {
                    format!("its {ram} GiB of RAM")
                };
                crate::note!(
                    "moe-spill: note: {given} is below the {reserve} GiB RAM reserve of `{}` (--ram-reserve): no page cache, so every non-expert weight off the GPU and every expert is read from the drive every token",
                    hw.name
                );
            } else if paged > 0.0 && !a.study.input.quiet {
                crate::note!(
                    "moe-spill: note: at {ram} GiB the non-expert weights do not fit beside the {reserve} GiB reserve: {:.2} GB of them are read from the drive every token (in device_bytes_per_token), and no expert is cached; they fit from {:.1} GiB",
                    paged / 1e9,
                    crate::units::tenth_up(placement.ram_for_capacity(0, reserve))
                );
            }
            Budget {
                ram_gib: Some(ram),
                capacity: placement.ram_capacity(ram, reserve),
            }
        }
        (None, None) => unreachable!("the profile's RAM stands in"),
    };
    let placement = setup.as_ref().map(|s| &s.0);
    study.note_placement(placement, None);
    study.note_batching();
    // One replay per --prompt-tokens length (prompt runs cut to it), else one.
    let mut rows: Vec<Row> = Vec::new();
    let mut econ = None;
    for cut in study.prompt_cuts() {
        let plan = study.plan_cut(placement, cut);
        let pinned = study.min_capacity(&plan, &spec)?;
        if budget.capacity < pinned {
            // Say which RAM would hold what the policy pins, not only the cache's size.
            let fits = match (budget.ram_gib, setup.as_ref()) {
                (Some(ram), Some((placement, hw))) => format!(
                    ": --ram {ram} GiB leaves {} after the {} GiB reserve and the non-expert weights; it fits from {:.1} GiB",
                    budget.capacity,
                    hw.ram.reserve_gib,
                    crate::units::tenth_up(placement.ram_for_capacity(pinned, hw.ram.reserve_gib))
                ),
                _ => String::new(),
            };
            return Err(Error::new(format!(
                "policy {spec} pins {pinned} experts, more than a cache of {}{fits}",
                budget.capacity
            )));
        }
        // A cache larger than the experts that reach it holds them all: the rest of it
        // is never used (the row's ram_gib is still the RAM the whole capacity takes).
        let reach = plan.n_slots() * plan.n_experts;
        if budget.capacity > reach && a.cache_experts.is_some() && !a.study.input.quiet {
            let n = budget.capacity;
            if reach == 0 {
                crate::note!(
                    "moe-spill: note: --cache-experts {n}: no expert reaches the cache (every MoE layer is in VRAM), so it stays empty"
                );
            } else {
                crate::note!(
                    "moe-spill: note: --cache-experts {n} is more than the {reach} experts that reach the cache: it holds every one, the same run as --cache-experts {reach} (ram_gib is the RAM all {n} would take)"
                );
            }
        }
        // The trace statistics the rows need (U and D, cold misses) are independent of
        // the replay: the second core computes them meanwhile.
        let profile = study.profile();
        let counts = std::thread::scope(|s| {
            s.spawn(|| {
                study.u_d();
                plan.cold_misses(study.warmup);
            });
            run_many(
                &plan,
                &spec,
                &[budget.capacity],
                study.partition,
                profile,
                study.warmup,
            )
        })?;
        econ = setup.as_ref().map(|s| study.cost_inputs_cut(s, cut));
        rows.extend(
            counts
                .iter()
                .map(|c| study.row(&plan, &spec, budget, c, econ.as_ref(), None)),
        );
    }
    let format = OutputFormat::for_output(a.study.format, a.output.as_deref());
    let mut text = render_rows(&rows, format, false);
    if format == OutputFormat::Table {
        let ram_per_row = a.cache_experts.is_some();
        text = format!(
            "{}\n\n{text}",
            context_line(&study, econ.as_ref(), ram_per_row)
        );
    }
    let what = crate::report::rows_held(rows.len());
    deliver(&text, a.output.as_deref(), a.study.input.quiet, &what)
}
