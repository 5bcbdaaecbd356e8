//! What `simulate` and `sweep` share: the options that set up a study (trace, model,
//! quant, machine, phase, partition, warmup) validated into settings, and the
//! `simulate` command itself.

use std::path::PathBuf;

use clap::Args;
use moe_spill_policies::registry::PolicySpec;

use crate::analyze::u_d;
use crate::cli::{load, FormatArgs, Loaded, PhaseArg, TraceArgs};
use crate::error::{Error, Result};
use crate::hardware::{parse_size_gib, Hardware, HardwareArgs};
use crate::model::Model;
use crate::output::{emit, fixed, OutputFormat, Table};
use crate::quant::{quant_type, ExpertQuant, QuantType};
use crate::simulate::{make_row, run_many, Budget, Counts, Economics, Partition, ReplayPlan, Row};
use crate::timemodel::Placement;

#[derive(Args, Debug, Clone)]
pub struct StudyArgs {
    #[command(flatten)]
    pub input: TraceArgs,
    /// Expert quant: TYPE, or gate=T,up=T,down=T (default: the model's usual, iq4_xs for most).
    #[arg(long, value_name = "SPEC")]
    pub quant: Option<String>,
    /// GGUF type of the non-expert weights (attention, shared experts, dense layers, head).
    #[arg(long, value_name = "TYPE", default_value = "q8_0")]
    pub non_expert_quant: String,
    #[command(flatten)]
    pub hw: HardwareArgs,
    /// One global cache (the page cache) or one cache per MoE layer.
    #[arg(long, value_enum, default_value_t = Partition::Global)]
    pub partition: Partition,
    /// Leave the first N replayed tokens out of the statistics (the cache still sees them).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub warmup_tokens: usize,
    /// Profile trace for pin-hot (without it the replayed trace itself is used: an oracle).
    #[arg(long, value_name = "TRACE")]
    pub pin_profile: Option<PathBuf>,
    /// Add per-layer miss counts.
    #[arg(long)]
    pub per_layer: bool,
    #[command(flatten)]
    pub out: FormatArgs,
}

/// Settings of a study, validated.
pub struct Study {
    pub loaded: Loaded,
    pub include_prompt: bool,
    pub partition: Partition,
    pub warmup: usize,
    pub per_layer: bool,
    pub quiet: bool,
    /// The TRACE arguments' names, for labels.
    pub trace_label: String,
    /// Model, quant and machine when a model is known.
    pub machine: Option<Machine>,
    /// Per-id counts for pin-hot, and whether they come from the replayed trace itself.
    pub pin_profile: Option<(Vec<u64>, bool)>,
    /// U and D of the replayed tokens (128-token chunks, threshold 100%).
    /// U and D per chunk (threshold 100%), computed on first use (see `u_d`).
    u_d: std::sync::OnceLock<(f64, f64)>,
}

pub struct Machine {
    pub model: &'static Model,
    pub quant: ExpertQuant,
    pub non_expert_quant: QuantType,
    pub hw: Hardware,
}

pub const CHUNK: usize = 128;

impl Study {
    /// `ram_gib` overrides the installed RAM of the profile (`--ram`).
    pub fn new(a: &StudyArgs, ram_gib: Option<f64>, needs_profile: bool) -> Result<Study> {
        let non_expert_quant = quant_type(&a.non_expert_quant)
            .map_err(|e| Error::new(format!("--non-expert-quant: {}", e.0)))?;
        let hw = a.hw.resolve(ram_gib)?;
        let loaded = load(&a.input)?;
        let include_prompt = a.input.phase == PhaseArg::All;
        let machine = match loaded.model {
            Some(model) => {
                let quant = match &a.quant {
                    Some(s) => ExpertQuant::parse(s, model.default_quant())?,
                    None => ExpertQuant::uniform(model.default_quant()),
                };
                model.expert_bytes(quant)?;
                Some(Machine {
                    model,
                    quant,
                    non_expert_quant,
                    hw,
                })
            }
            None => None,
        };
        let pin_profile = if needs_profile {
            Some(match &a.pin_profile {
                Some(p) => {
                    let prof = load(&TraceArgs {
                        traces: vec![p.clone()],
                        model: loaded.model.map(|m| m.name.to_string()),
                        phase: a.input.phase,
                        quiet: true,
                    })?;
                    if !prof.trace.geometry.same_layout(&loaded.trace.geometry)
                        || prof.trace.geometry.n_experts != loaded.trace.geometry.n_experts
                    {
                        return Err(Error::in_file(
                            p,
                            format!(
                                "profile geometry {} differs from the replayed trace's {}",
                                prof.trace.geometry.describe(),
                                loaded.trace.geometry.describe()
                            ),
                        ));
                    }
                    (
                        ReplayPlan::new(&prof.trace, include_prompt, 0).profile(),
                        false,
                    )
                }
                None => (
                    ReplayPlan::new(&loaded.trace, include_prompt, 0).profile(),
                    true,
                ),
            })
        } else {
            None
        };
        // Counted from the phase bits: building a plan here would copy the stream.
        let n_replayed = loaded.trace.n_replayed(include_prompt);
        if n_replayed == 0 {
            return Err(Error::new(
                "the trace has no tokens to replay (only prompt tokens? use --phase all)",
            ));
        }
        if a.warmup_tokens > 0 && a.warmup_tokens >= n_replayed {
            return Err(Error::new(format!(
                "--warmup-tokens {} leaves no token to count (the run has {n_replayed})",
                a.warmup_tokens
            )));
        }
        Ok(Study {
            loaded,
            include_prompt,
            partition: a.partition,
            warmup: a.warmup_tokens,
            per_layer: a.per_layer,
            quiet: a.input.quiet,
            trace_label: trace_label(&a.input),
            machine,
            pin_profile,
            u_d: std::sync::OnceLock::new(),
        })
    }

    /// Placement and economics with `vram_gib` per GPU (None: the profile's).
    pub fn economics(&self, vram_gib: Option<f64>) -> Result<Option<Economics>> {
        Ok(self.setup(vram_gib)?.as_ref().map(|s| self.economics_of(s)))
    }

    /// The economics of a placement already made by `setup` (adds U and D).
    pub fn economics_of(&self, (placement, hw): &(Placement, Hardware)) -> Economics {
        let (u, d) = self.u_d();
        Economics {
            placement: placement.clone(),
            hw: hw.clone(),
            u,
            d,
            chunk: CHUNK,
        }
    }

    /// U and D of the replayed tokens per chunk, threshold 100% (one pass over the
    /// trace, made once, by whichever thread asks first).
    pub fn u_d(&self) -> (f64, f64) {
        *self
            .u_d
            .get_or_init(|| u_d(&self.loaded.trace, CHUNK, self.include_prompt))
    }

    /// The machine and the model's placement on it (no trace statistics).
    pub fn setup(&self, vram_gib: Option<f64>) -> Result<Option<(Placement, Hardware)>> {
        let Some(m) = &self.machine else {
            return Ok(None);
        };
        let mut hw = m.hw.clone();
        if let Some(v) = vram_gib {
            if v == 0.0 {
                hw.gpus.clear();
            } else {
                if hw.gpus.is_empty() {
                    return Err(Error::new(format!(
                        "VRAM {v} GiB given but `{}` has no GPU (add --gpus 1)",
                        hw.name
                    )));
                }
                hw.gpus.iter_mut().for_each(|g| g.vram_gib = v);
            }
        }
        let placement = Placement::new(m.model, m.quant, m.non_expert_quant, &hw)?;
        Ok(Some((placement, hw)))
    }

    /// Tell the user when the whole model fits in VRAM (nothing to cache).
    pub fn note_placement(&self, placement: Option<&Placement>, vram_gib: Option<f64>) {
        if let (Some(p), Some(m), false) = (placement, &self.machine, self.quiet) {
            if p.cpu_layers == 0 {
                eprintln!(
                    "moe-spill: note: every MoE layer of {} fits in VRAM on {}{}: nothing reaches the page cache (try --gpus 0 or a smaller --vram)",
                    m.model.name,
                    m.hw.name,
                    vram_gib.map_or(String::new(), |v| format!(" with {v} GiB")),
                );
            }
        }
    }

    pub fn plan(&self, placement: Option<&Placement>) -> ReplayPlan<'_> {
        let gpu_layers = placement.map_or(0, |p| p.gpu_layers);
        let mut plan = ReplayPlan::new(&self.loaded.trace, self.include_prompt, gpu_layers);
        plan.per_slot = self.per_layer;
        plan.expert_bytes = placement.map(|p| p.expert_bytes);
        plan
    }

    /// Per-id use counts for pin-hot, when a policy needs them.
    pub fn profile(&self) -> Option<&[u64]> {
        self.pin_profile.as_ref().map(|p| &p.0[..])
    }

    /// The label of a policy in output: pin-hot from the replayed trace is an oracle.
    pub fn label(&self, spec: &PolicySpec) -> String {
        match (&self.pin_profile, spec.needs_profile()) {
            (Some((_, true)), true) => format!("{spec}(oracle)"),
            _ => spec.to_string(),
        }
    }

    /// Run one policy at the given budgets (LRU: one pass for all of them).
    pub fn run(
        &self,
        plan: &ReplayPlan,
        spec: &PolicySpec,
        budgets: &[Budget],
        econ: Option<&Economics>,
        vram: Option<f64>,
    ) -> Result<Vec<Row>> {
        let caps: Vec<usize> = budgets.iter().map(|b| b.capacity).collect();
        let profile = self.profile();
        let counts = run_many(plan, spec, &caps, self.partition, profile, self.warmup)?;
        Ok(budgets
            .iter()
            .zip(&counts)
            .map(|(b, c)| self.row(plan, spec, *b, c, econ, vram))
            .collect())
    }

    /// Check a policy against this study before running it: decorators need the global
    /// cache, and pinned sets need room. Returns the smallest capacity it can run at.
    pub fn min_capacity(&self, plan: &ReplayPlan, spec: &PolicySpec) -> Result<usize> {
        if self.partition == Partition::PerLayer && !matches!(spec, PolicySpec::Base(_)) {
            return Err(Error::new(format!(
                "policy {spec} pins experts of a global cache; with --partition per-layer use a plain policy"
            )));
        }
        plan.pinned_ids(spec, self.profile()).map(|ids| ids.len())
    }

    pub fn row(
        &self,
        plan: &ReplayPlan,
        spec: &PolicySpec,
        b: Budget,
        c: &Counts,
        econ: Option<&Economics>,
        vram: Option<f64>,
    ) -> Row {
        self.labelled_row(self.label(spec), self.per_layer, plan, b, c, econ, vram)
    }

    /// A row under any label (`kernel` for `sweep --kernel`), with per-layer misses if
    /// `per_layer` and the study asks for them.
    #[allow(clippy::too_many_arguments)]
    pub fn labelled_row(
        &self,
        label: String,
        per_layer: bool,
        plan: &ReplayPlan,
        b: Budget,
        c: &Counts,
        econ: Option<&Economics>,
        vram: Option<f64>,
    ) -> Row {
        let layers =
            (self.per_layer && per_layer).then_some(&self.loaded.trace.geometry.layers[..]);
        let mut row = make_row(
            label,
            self.partition,
            plan,
            b,
            c,
            plan.cold_misses(self.warmup),
            self.warmup,
            econ,
            layers,
            vram,
        );
        row.trace = self.trace_label.clone();
        if let Some(m) = &self.machine {
            row.model = Some(m.model.name.to_string());
            row.quant = Some(m.model.effective_quant(m.quant).to_string());
        }
        row
    }
}

/// Short name of what was replayed: the TRACE arguments' last two path components.
pub fn trace_label(input: &TraceArgs) -> String {
    if input.traces.is_empty() {
        return crate::cli::EMBEDDED_LABEL.to_string();
    }
    let names: Vec<String> = input
        .traces
        .iter()
        .map(|p| {
            let mut c: Vec<String> = p
                .components()
                .rev()
                .take(2)
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            c.reverse();
            c.join("/")
        })
        .collect();
    names.join("+")
}

/// Rows as a people table: the columns that matter, in readable units.
pub fn rows_table(rows: &[Row]) -> String {
    let mib = |b: Option<f64>| b.map_or("-".into(), |v| fixed(v / (1u64 << 20) as f64, 1));
    let mib_u = |b: Option<u64>| mib(b.map(|v| v as f64));
    let with_vram = rows.iter().any(|r| r.vram_gib.is_some());
    let mut head = vec![];
    if with_vram {
        head.push("vram_gib");
    }
    head.extend([
        "policy",
        "ram_gib",
        "cache_experts",
        "hit_rate",
        "misses/token",
        "ssd_MiB/token",
        "p50",
        "p99",
        "est_tok/s",
        "analytic_MiB/token",
        "analytic_tok/s",
    ]);
    let mut t = Table::new(&head);
    for r in rows {
        let mut cells = vec![];
        if with_vram {
            cells.push(r.vram_gib.map_or("-".into(), |v| format!("{v}")));
        }
        cells.extend([
            r.policy.clone(),
            r.ram_gib.map_or("-".into(), |v| fixed(v, 1)),
            r.cache_experts.to_string(),
            fixed(r.hit_rate, 4),
            fixed(r.misses_per_token, 2),
            mib(r.ssd_bytes_per_token),
            mib_u(r.ssd_bytes_per_token_p50),
            mib_u(r.ssd_bytes_per_token_p99),
            r.est_tok_s.map_or("-".into(), |v| fixed(v, 2)),
            mib(r.analytic_ssd_bytes_per_token),
            r.analytic_tok_s.map_or("-".into(), |v| fixed(v, 2)),
        ]);
        t.push(cells);
    }
    t.render()
}

/// Rows as CSV: every column, per-layer misses as `misses_layer_L` columns.
pub fn rows_csv(rows: &[Row]) -> String {
    let opt_f = |v: Option<f64>| v.map_or(String::new(), |x| x.to_string());
    let opt_u = |v: Option<u64>| v.map_or(String::new(), |x| x.to_string());
    let mut head: Vec<String> = [
        "trace",
        "model",
        "quant",
        "hw",
        "policy",
        "partition",
        "vram_gib",
        "gpu_layers",
        "ram_gib",
        "ram_bytes",
        "cache_experts",
        "tokens",
        "accesses",
        "hits",
        "misses",
        "cold_misses",
        "hit_rate",
        "misses_per_token",
        "ssd_bytes",
        "ssd_bytes_per_token",
        "ssd_bytes_per_token_p50",
        "ssd_bytes_per_token_p99",
        "ssd_bytes_per_token_max",
        "t_vram_ms",
        "t_ram_ms",
        "t_ssd_ms",
        "est_tok_s",
        "analytic_ssd_bytes_per_token",
        "analytic_tok_s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Per-layer columns: every layer any row has (rows with VRAM-resident layers leave
    // those cells empty).
    let mut layers: Vec<u16> = Vec::new();
    for r in rows {
        for (l, _) in r.per_layer_misses.iter().flatten() {
            if !layers.contains(l) {
                layers.push(*l);
            }
        }
    }
    layers.sort_unstable();
    head.extend(layers.iter().map(|l| format!("misses_layer_{l}")));
    let mut t = Table {
        header: head,
        rows: Vec::new(),
    };
    for r in rows {
        let opt_s = |v: &Option<String>| v.clone().unwrap_or_default();
        let mut cells = vec![
            r.trace.clone(),
            opt_s(&r.model),
            opt_s(&r.quant),
            opt_s(&r.hw),
            r.policy.clone(),
            r.partition.to_string(),
            opt_f(r.vram_gib),
            r.gpu_layers.to_string(),
            opt_f(r.ram_gib),
            opt_u(r.ram_bytes),
            r.cache_experts.to_string(),
            r.tokens.to_string(),
            r.accesses.to_string(),
            r.hits.to_string(),
            r.misses.to_string(),
            r.cold_misses.to_string(),
            r.hit_rate.to_string(),
            r.misses_per_token.to_string(),
            opt_u(r.ssd_bytes),
            opt_f(r.ssd_bytes_per_token),
            opt_u(r.ssd_bytes_per_token_p50),
            opt_u(r.ssd_bytes_per_token_p99),
            opt_u(r.ssd_bytes_per_token_max),
            opt_f(r.t_vram_ms),
            opt_f(r.t_ram_ms),
            opt_f(r.t_ssd_ms),
            opt_f(r.est_tok_s),
            opt_f(r.analytic_ssd_bytes_per_token),
            opt_f(r.analytic_tok_s),
        ];
        for l in &layers {
            let m = r.per_layer_misses.iter().flatten().find(|(x, _)| x == l);
            cells.push(m.map_or(String::new(), |(_, m)| m.to_string()));
        }
        t.rows.push(cells);
    }
    t.to_csv()
}

pub fn render_rows(rows: &[Row], format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => serde_json::to_string_pretty(rows).expect("json") + "\n",
        OutputFormat::Csv => rows_csv(rows),
        OutputFormat::Table => {
            let mut s = rows_table(rows);
            if let Some(pl) = rows.first().and_then(|r| r.per_layer_misses.as_ref()) {
                let mut t = Table::new(&["layer", "misses", "misses/token"]);
                for (l, m) in pl {
                    t.push(vec![
                        l.to_string(),
                        m.to_string(),
                        fixed(*m as f64 / rows[0].tokens.max(1) as f64, 3),
                    ]);
                }
                s.push_str("\nPer-layer misses:\n");
                s.push_str(&t.render());
            }
            s
        }
    }
}

/// A note for people on what the numbers rest on.
pub fn context_line(study: &Study, econ: Option<&Economics>) -> String {
    let tr = &study.loaded.trace;
    let mut s = format!(
        "trace: {} responses, {} tokens replayed ({}); ",
        tr.n_responses(),
        tr.n_replayed(study.include_prompt),
        tr.geometry.describe()
    );
    match (&study.machine, econ) {
        (Some(m), Some(e)) => s.push_str(&format!(
            "model {} at {} ({} B per expert), non-expert {}; machine {}: {}; {} of {} MoE layers in VRAM; U = {:.1}, D = {:.1} per {CHUNK}-token chunk",
            m.model.name,
            m.model.effective_quant(m.quant),
            e.placement.expert_bytes,
            m.non_expert_quant.name,
            e.hw.name,
            e.hw.describe(),
            e.placement.gpu_layers,
            e.placement.n_layers,
            study.u_d().0,
            study.u_d().1
        )),
        _ => s.push_str("no model preset matches the trace (pass --model for bytes and tokens/s)"),
    }
    s
}

#[derive(Args, Debug)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub study: StudyArgs,
    // The help lists every spec form: the policy table generates it.
    #[arg(long, value_name = "SPEC", default_value = "lru", help = moe_spill_policies::registry::POLICY_HELP)]
    pub policy: String,
    /// Installed RAM (e.g. 128GiB); the page cache gets what the reserve and non-expert
    /// weights leave.
    #[arg(long, value_name = "SIZE", value_parser = parse_size_gib, required_unless_present = "cache_experts", conflicts_with = "cache_experts")]
    pub ram: Option<f64>,
    /// Cache capacity in experts, exactly.
    #[arg(long, value_name = "N")]
    pub cache_experts: Option<usize>,
}

pub fn simulate(a: SimulateArgs) -> Result<()> {
    let spec = PolicySpec::parse(&a.policy).map_err(|e| Error::new(format!("--policy: {e}")))?;
    let study = Study::new(&a.study, a.ram, spec.needs_profile())?;
    let setup = study.setup(None)?;
    let budget = match (a.ram, a.cache_experts) {
        (_, Some(n)) => Budget {
            ram_gib: None,
            capacity: n,
        },
        (Some(ram), None) => {
            let (placement, hw) = setup.as_ref().ok_or_else(|| {
                Error::new("--ram needs a model preset to size experts: pass --model (or use --cache-experts N)")
            })?;
            let reserve = hw.ram.reserve_gib;
            if ram < reserve {
                return Err(Error::new(format!(
                    "--ram {ram} GiB is below the RAM reserve of {reserve} GiB of `{}` (set --ram-reserve)",
                    hw.name
                )));
            }
            Budget {
                ram_gib: Some(ram),
                capacity: placement.ram_capacity(ram, reserve),
            }
        }
        (None, None) => unreachable!("clap requires one"),
    };
    let placement = setup.as_ref().map(|s| &s.0);
    let plan = study.plan(placement);
    study.min_capacity(&plan, &spec)?;
    study.note_placement(placement, None);
    // The trace statistics the rows need (U and D, cold misses) are independent of the
    // replay: the second core computes them meanwhile.
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
    let econ = setup.as_ref().map(|s| study.economics_of(s));
    let rows: Vec<Row> = counts
        .iter()
        .map(|c| study.row(&plan, &spec, budget, c, econ.as_ref(), None))
        .collect();
    let format = OutputFormat::resolve(a.study.out.format, false);
    let mut text = render_rows(&rows, format);
    if format == OutputFormat::Table {
        text = format!("{}\n\n{text}", context_line(&study, econ.as_ref()));
    }
    emit(&text, None)
}
