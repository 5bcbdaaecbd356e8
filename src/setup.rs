//! What `simulate`, `sweep` and `kernel-replay` share: a [`ReplaySetup`], made from
//! [`SetupOptions`] (trace, model, quant, machine, phase, batches, partition, warmup)
//! checked and loaded, with what every run of it needs (placement, plan, labels, rows,
//! the context line of a table).

use std::path::PathBuf;

use moe_spill_policies::registry::PolicySpec;

use crate::analyze::{u_d, CHUNK_TOKENS};
use crate::costing::{make_row, Budget, CostInputs};
use crate::decode::IoSetup;
use crate::error::{Error, Result};
use crate::hardware::{Hardware, HardwareOverrides};
use crate::input::{trace_label, Loaded, TraceSource};
use crate::io_engine::{EngineChoice, EngineKind};
use crate::model::Model;
use crate::quant::{quant_type, QuantType};
use crate::replay::batch::{replayed_responses, schedule};
use crate::replay::{run_many, Batching, Misses, Partition, ReplayPlan, DEFAULT_UBATCH};
use crate::report::rows::Row;
use crate::report::OutputFormat;
use crate::step_time::OP_OFFLOAD_MIN_BATCH;
use crate::timemodel::Placement;
use crate::weights::gguf::GgufModel;
use crate::weights::{NonExpert, Weights};

/// The options of a replay setup, from the command line: what to replay, on what.
#[derive(Clone, Debug)]
pub struct SetupOptions {
    pub input: TraceSource,
    /// Expert quant: TYPE, or gate=T,up=T,down=T (None: the model's usual).
    pub quant: Option<String>,
    /// GGUF type of the non-expert weights.
    pub non_expert_quant: String,
    pub hw: HardwareOverrides,
    pub partition: Partition,
    /// Tokens left out of the statistics (the cache still sees them).
    pub warmup_tokens: usize,
    /// Profile trace for pin-hot (None: the replayed trace itself, an oracle).
    pub pin_profile: Option<PathBuf>,
    /// Add per-layer miss counts.
    pub per_layer: bool,
    /// The I/O model's engine (None: SSD bytes over the rated bandwidth).
    pub io: Option<EngineChoice>,
    /// Every MoE layer's experts on the CPU (llama.cpp --cpu-moe).
    pub cpu_moe: bool,
    /// The experts of model layers 0..N on the CPU, the later ones in VRAM (llama.cpp
    /// --n-cpu-moe N).
    pub n_cpu_moe: Option<u32>,
    /// None: a table on a terminal, CSV otherwise.
    pub format: Option<OutputFormat>,
    /// Prompt tokens per ubatch (None: llama.cpp's 512).
    pub ubatch: Option<usize>,
    /// Responses decoded in lock step (None: 1).
    pub parallel: Option<usize>,
    /// Prompt lengths to time the first token of (`--prompt-tokens`).
    pub prompt_tokens: Vec<u64>,
    /// llama.cpp's op offload (false: `--no-op-offload`).
    pub op_offload: bool,
}

impl SetupOptions {
    /// Every file the setup reads, for `-o` to spare: the traces, each part of the GGUF,
    /// the pin profile and a hardware profile file.
    pub fn input_files(&self) -> Vec<PathBuf> {
        let mut files = self.input.input_files();
        files.extend(self.pin_profile.iter().cloned());
        files.extend(self.hw.profile_file());
        files
    }
}

/// The trace loaded, the model deployed on the machine, and the checked options every
/// run of a command shares.
pub struct ReplaySetup {
    pub loaded: Loaded,
    pub include_prompt: bool,
    pub partition: Partition,
    pub warmup: usize,
    pub per_layer: bool,
    pub quiet: bool,
    /// The TRACE arguments' names, for labels.
    pub trace_label: String,
    /// Model, quant and machine when a model is known.
    pub deployment: Option<Deployment>,
    /// Per-id counts for pin-hot, and whether they come from the replayed trace itself.
    pub pin_profile: Option<(Vec<u64>, bool)>,
    /// The I/O model's engine (None: rated bandwidth).
    pub io: Option<EngineChoice>,
    /// Every MoE layer's experts on the CPU.
    pub cpu_moe: bool,
    /// The experts of model layers 0..N on the CPU, the later ones in VRAM.
    pub n_cpu_moe: Option<u32>,
    /// How tokens are grouped into steps (docs/batches.md).
    pub batching: Batching,
    /// Whether rows carry the batch columns: --ubatch or --parallel given, or prompt
    /// tokens replayed in ubatches.
    pub batch_columns: bool,
    /// Whether --ubatch was given (else the default applies).
    ubatch_given: bool,
    /// Prompt lengths to time the first token of (`--prompt-tokens`).
    pub prompt_lengths: Vec<u64>,
    /// llama.cpp's op offload (false: `--no-op-offload`).
    pub op_offload: bool,
    /// U and D per chunk (threshold 100%) and the longest response's tokens, computed
    /// on first use (see `u_d`).
    u_d: std::sync::OnceLock<(f64, f64, usize)>,
}

/// A model as run: its weights (a preset at a quant, or a GGUF file's) on a machine.
pub struct Deployment {
    pub model: &'static Model,
    pub weights: Weights,
    pub non_expert_quant: QuantType,
    pub hw: Hardware,
}

impl Deployment {
    /// How output names the experts' types.
    pub fn quant_label(&self) -> String {
        self.weights.quant_label()
    }
}

/// A model's weights: the GGUF file's when one was read, else the preset at `--quant`
/// (its usual quant by default).
pub fn weights_of(model: &Model, gguf: Option<&GgufModel>, quant: Option<&str>) -> Result<Weights> {
    match (gguf, quant) {
        (Some(_), Some(_)) => Err(Error::new("give --gguf or --quant, not both")),
        (Some(g), None) => Ok(g.weights.clone()),
        (None, q) => Weights::for_preset(model, q),
    }
}

impl ReplaySetup {
    /// `ram_gib` overrides the installed RAM of the profile (`--ram`).
    pub fn new(a: &SetupOptions, ram_gib: Option<f64>, needs_profile: bool) -> Result<ReplaySetup> {
        if let (Some(p), false) = (&a.pin_profile, needs_profile) {
            return Err(Error::in_file(
                p,
                "--pin-profile is for pin-hot policies, and none runs here",
            ));
        }
        let non_expert_quant = quant_type(&a.non_expert_quant)
            .map_err(|e| Error::new(format!("--non-expert-quant: {}", e.0)))?;
        let hw = a.hw.resolve(ram_gib)?;
        let loaded = a.input.load()?;
        let include_prompt = a.input.include_prompt;
        if let (Some(model), None, false) = (loaded.model, &loaded.gguf, a.input.quiet) {
            if let Some(n) = Weights::case_twin_note(model, a.quant.as_deref()) {
                crate::note!("{n}");
            }
        }
        let deployment = match loaded.model {
            Some(model) => Some(Deployment {
                model,
                weights: weights_of(model, loaded.gguf.as_ref(), a.quant.as_deref())?,
                non_expert_quant,
                hw,
            }),
            None => None,
        };
        let pin_profile = if needs_profile {
            Some(match &a.pin_profile {
                Some(p) => {
                    let prof = TraceSource {
                        traces: vec![p.clone()],
                        model: match a.input.gguf {
                            Some(_) => None,
                            None => loaded.model.map(|m| m.name.to_string()),
                        },
                        gguf: a.input.gguf.clone(),
                        include_prompt,
                        quiet: true,
                    }
                    .load()?;
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
        check_warmup(a.warmup_tokens, n_replayed)?;
        if a.cpu_moe && a.n_cpu_moe.is_some() {
            return Err(Error::new(
                "give --cpu-moe or --n-cpu-moe N, not both (--cpu-moe is every layer's experts on the CPU)",
            ));
        }
        let batching = check_batching(a, &loaded.trace, include_prompt)?;
        let batched = !batching.is_token_by_token(&loaded.trace, include_prompt);
        if batched && a.warmup_tokens > 0 {
            // Warmup leaves out whole steps: some step must start at or after it.
            let mut start = 0usize;
            let mut counted = false;
            schedule(&loaded.trace, include_prompt, batching, |_, tokens| {
                counted |= start >= a.warmup_tokens;
                start += tokens.len();
            });
            if !counted {
                return Err(Error::new(format!(
                    "--warmup-tokens {} leaves no step to count (every step of the {n_replayed} tokens starts before it)",
                    a.warmup_tokens
                )));
            }
        }
        check_prompt_lengths(a, &loaded.trace, include_prompt, deployment.is_some())?;
        // A profile without a CPU: the I/O model still needs threads that fault.
        if let Some(d) = deployment.as_ref().filter(|d| d.hw.cpu.is_none()) {
            if a.io.is_some() && !a.input.quiet {
                crate::note!(
                    "moe-spill: note: `{}` names no CPU: {} threads fault and read (--threads N sets them), and the CPU's products are priced by RAM bandwidth alone (t_compute_ms empty)",
                    d.hw.name,
                    crate::hardware::DEFAULT_THREADS
                );
            }
        }
        Ok(ReplaySetup {
            loaded,
            include_prompt,
            partition: a.partition,
            warmup: a.warmup_tokens,
            per_layer: a.per_layer,
            quiet: a.input.quiet,
            trace_label: trace_label(&a.input),
            deployment,
            pin_profile,
            io: a.io,
            cpu_moe: a.cpu_moe,
            n_cpu_moe: a.n_cpu_moe,
            batching,
            batch_columns: batched
                || a.ubatch.is_some()
                || a.parallel.is_some()
                || !a.prompt_tokens.is_empty(),
            ubatch_given: a.ubatch.is_some(),
            prompt_lengths: crate::notes::once(
                a.prompt_tokens.clone(),
                "--prompt-tokens",
                a.input.quiet,
            ),
            op_offload: a.op_offload,
            u_d: std::sync::OnceLock::new(),
        })
    }

    /// Tell the user where --ubatch changes nothing, or where the default ubatch applies
    /// (simulate and sweep, once their other checks have passed).
    pub fn note_batching(&self) {
        let trace = &self.loaded.trace;
        let ub = self.batching.ubatch;
        if self.quiet || ub <= 1 {
            return;
        }
        let has_prompt = trace.prompt.iter().any(|&p| p);
        match (self.ubatch_given, has_prompt, self.include_prompt) {
            (true, false, _) => crate::note!(
                "moe-spill: note: the trace has no prompt-processing tokens (MoE-Beyond CSV files are read as decode tokens; convert --as-prompt tags them): --ubatch {ub} changes nothing"
            ),
            (true, true, false) => crate::note!(
                "moe-spill: note: --ubatch applies to prompt tokens, which --phase decode skips: --ubatch {ub} changes nothing (add --phase all)"
            ),
            (false, true, true) => crate::note!(
                "moe-spill: note: prompt tokens are replayed in ubatches of {ub} (llama.cpp's default; --ubatch 1 replays them token by token)"
            ),
            _ => {}
        }
    }

    /// Refuse batches in a command that replays token by token (`what`: its name).
    pub fn require_token_by_token(&self, what: &str) -> Result<()> {
        if !self.prompt_lengths.is_empty() {
            return Err(Error::new(format!(
                "{what} replays whole prompts: --prompt-tokens is for simulate and sweep"
            )));
        }
        if self
            .batching
            .is_token_by_token(&self.loaded.trace, self.include_prompt)
        {
            return Ok(());
        }
        let b = self.batching;
        let mut why = Vec::new();
        let ubatches = Batching { parallel: 1, ..b };
        if !ubatches.is_token_by_token(&self.loaded.trace, self.include_prompt) {
            why.push(if self.ubatch_given {
                format!("--ubatch {}", b.ubatch)
            } else {
                format!(
                    "prompt tokens in ubatches of {}, the default with --phase all",
                    b.ubatch
                )
            });
        }
        if b.parallel > 1 {
            why.push(format!("--parallel {}", b.parallel));
        }
        Err(Error::new(format!(
            "{what} replays token by token, but this replay has steps of several tokens ({}): pass --ubatch 1 --parallel 1, or use simulate or sweep",
            why.join(", ")
        )))
    }

    /// Placement and economics with `vram_gib` per GPU (None: the profile's).
    pub fn cost_inputs(&self, vram_gib: Option<f64>) -> Result<Option<CostInputs>> {
        Ok(self
            .setup(vram_gib)?
            .as_ref()
            .map(|s| self.cost_inputs_of(s)))
    }

    /// `cost_inputs_of` for a replay whose prompt runs were cut to `cut` tokens.
    pub fn cost_inputs_cut(&self, s: &(Placement, Hardware), cut: Option<u64>) -> CostInputs {
        CostInputs {
            prompt_len: cut,
            ..self.cost_inputs_of(s)
        }
    }

    /// The economics of a placement already made by `setup` (adds U and D).
    pub fn cost_inputs_of(&self, (placement, hw): &(Placement, Hardware)) -> CostInputs {
        CostInputs {
            placement: placement.clone(),
            hw: hw.clone(),
            u_d: self.u_d(),
            chunk: CHUNK_TOKENS,
            io: self.io.map(|c| IoSetup {
                engine: c.engine(hw.threads()),
                drive: hw.ssd.curve(),
                page_cache: hw.ram.page_cache(),
                serial_reads: c.serial_reads,
            }),
            op_offload: self.op_offload,
            prompt_len: None,
        }
    }

    /// U and D of the replayed tokens per chunk, threshold 100% (one pass over the
    /// trace, made once, by whichever thread asks first); None where no response has two
    /// whole chunks (D, the mean over no pair, is undefined, and so the analytic
    /// estimate; U too without a whole chunk).
    pub fn u_d(&self) -> Option<(f64, f64)> {
        let (u, d, longest) = self.chunk_statistics();
        (longest >= 2 * CHUNK_TOKENS).then_some((u, d))
    }

    /// Tokens of the longest response replayed.
    fn longest_response(&self) -> usize {
        self.chunk_statistics().2
    }

    /// U, D and the longest response, from one pass each, made once.
    fn chunk_statistics(&self) -> (f64, f64, usize) {
        *self.u_d.get_or_init(|| {
            let (tr, p) = (&self.loaded.trace, self.include_prompt);
            let (u, d) = u_d(tr, CHUNK_TOKENS, p);
            (u, d, crate::analyze::longest_response(tr, p))
        })
    }

    /// The machine and the model's placement on it (no trace statistics).
    pub fn setup(&self, vram_gib: Option<f64>) -> Result<Option<(Placement, Hardware)>> {
        let Some(m) = &self.deployment else {
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
        let mut placement = Placement::new(m.model, &m.weights, m.non_expert_quant, &hw)?;
        if self.cpu_moe {
            placement = placement.with_gpu_layers(0);
        }
        if let Some(n) = self.n_cpu_moe {
            placement = placement.with_n_cpu_moe(n, m.model.n_experts, &hw)?;
        }
        Ok(Some((placement, hw)))
    }

    /// The most tokens one step of the replay carries: a prompt ubatch (the ubatch, at
    /// most the longest prompt run, cut to the longest --prompt-tokens) or a decode step
    /// of --parallel sequences.
    fn largest_step(&self) -> usize {
        let trace = &self.loaded.trace;
        let prompt = if self.include_prompt {
            let longest = crate::replay::batch::longest_prompt_run(trace);
            let cut = self
                .prompt_lengths
                .iter()
                .max()
                .map_or(longest, |&l| l as usize);
            self.batching.ubatch.min(longest).min(cut)
        } else {
            0
        };
        let decode = (trace.prompt.iter().any(|&p| !p)).then_some(self.batching.parallel);
        prompt.max(decode.unwrap_or(0))
    }

    /// Tell the user when the whole model fits in VRAM (nothing to cache).
    pub fn note_placement(&self, placement: Option<&Placement>, vram_gib: Option<f64>) {
        if let (Some(p), Some(m), false) = (placement, &self.deployment, self.quiet) {
            let no_gpu = m.hw.gpus.is_empty() || vram_gib == Some(0.0);
            if no_gpu && (self.cpu_moe || self.n_cpu_moe.is_some()) {
                crate::note!(
                    "moe-spill: note: {} changes nothing without a GPU{}: every expert is on the CPU side already",
                    if self.cpu_moe { "--cpu-moe" } else { "--n-cpu-moe" },
                    if m.hw.gpus.is_empty() {
                        format!(" (`{}` has none)", m.hw.name)
                    } else {
                        " (the rows at VRAM 0)".to_string()
                    }
                );
            }
            if let (Some(n), Some(last)) = (self.n_cpu_moe, p.layers.last()) {
                if n > last.block as u32 + 1 {
                    crate::note!(
                        "moe-spill: note: --n-cpu-moe {n} counts model layers past {}'s last MoE layer (blk.{}): every MoE layer's experts stay on the CPU, as with --cpu-moe",
                        m.model.name,
                        last.block
                    );
                }
            }
            // The copy that op offload makes faults from one thread: a GPU can make a
            // spilled prompt slower than the CPU alone, which surprises.
            let batches = self.largest_step() as u32 >= OP_OFFLOAD_MIN_BATCH;
            if !self.op_offload && (no_gpu || !batches) {
                crate::note!(
                    "moe-spill: note: --no-op-offload changes nothing here: {}",
                    if no_gpu {
                        "there is no GPU to offload to".to_string()
                    } else {
                        format!("no step of the replay carries {OP_OFFLOAD_MIN_BATCH} tokens, below which llama.cpp offloads nothing")
                    }
                );
            }
            let faults = matches!(&self.io, Some(io) if io.kind == EngineKind::Mmap);
            if !no_gpu && self.op_offload && batches && faults && p.cpu_layers > 0 {
                crate::note!(
                    "moe-spill: note: op offload (llama.cpp's default with a GPU): batches of {OP_OFFLOAD_MIN_BATCH} tokens or more copy the CPU-side experts to the GPU from one thread, which faults the missing ones in one window at a time; --no-op-offload prices the CPU's products instead (docs/batches.md)"
                );
            }
            // Non-expert weights beyond VRAM run from RAM: llama.cpp with every layer
            // offloaded would not load, so the user should know the row is not that run.
            if !no_gpu && p.non_expert_ram_bytes > 0.0 {
                crate::note!(
                    "moe-spill: note: the non-expert weights ({:.1} GiB at {}) do not fit in the VRAM left on {}: {:.1} GiB of them run from RAM in these rows (llama.cpp would need them placed there, e.g. -ngl below the layer count; a smaller --non-expert-quant or more --vram keeps them on the GPU)",
                    p.non_expert_bytes / crate::timemodel::GIB,
                    p.non_expert_quant.name,
                    m.hw.name,
                    p.non_expert_ram_bytes / crate::timemodel::GIB,
                );
            }
            if p.cpu_layers == 0 {
                crate::note!(
                    "moe-spill: note: every MoE layer of {} fits in VRAM on {}{}: nothing reaches the page cache (try --gpus 0 or a smaller --vram)",
                    m.model.name,
                    m.hw.name,
                    vram_gib.map_or(String::new(), |v| format!(" with {v} GiB")),
                );
            }
        }
    }

    pub fn plan(&self, placement: Option<&Placement>) -> ReplayPlan<'_> {
        self.plan_cut(placement, None)
    }

    /// The prompt lengths rows are made for: each `--prompt-tokens` length, or None
    /// (whole prompt runs) without it.
    pub fn prompt_cuts(&self) -> Vec<Option<u64>> {
        if self.prompt_lengths.is_empty() {
            vec![None]
        } else {
            self.prompt_lengths.iter().map(|&l| Some(l)).collect()
        }
    }

    /// `plan` with every prompt run cut to its first `cut` tokens (`--prompt-tokens`).
    pub fn plan_cut(&self, placement: Option<&Placement>, cut: Option<u64>) -> ReplayPlan<'_> {
        let trace = &self.loaded.trace;
        let slots = placement.map_or(0..trace.geometry.n_layers(), Placement::cpu_range);
        let batching = Batching {
            prompt_cut: cut.map(|c| c as usize),
            ..self.batching
        };
        let mut plan = ReplayPlan::batched_slots(trace, self.include_prompt, slots, batching);
        plan.per_slot = self.per_layer;
        plan.expert_bytes = placement.map(|p| p.expert_bytes);
        if let Some(p) = placement.filter(|p| !p.uniform()) {
            // Layers of different sizes: a miss costs its own layer's bytes.
            plan.slot_bytes = Some(p.layer_bytes()[plan.first_slot..plan.end_slot].to_vec());
        }
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
    pub fn replay_rows(
        &self,
        plan: &ReplayPlan,
        spec: &PolicySpec,
        budgets: &[Budget],
        econ: Option<&CostInputs>,
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

    /// Check a policy against this setup before running it: decorators need the global
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
        c: &Misses,
        econ: Option<&CostInputs>,
        vram: Option<f64>,
    ) -> Row {
        self.labelled_row(self.label(spec), self.per_layer, plan, b, c, econ, vram)
    }

    /// A row under any label (`kernel` for `sweep --kernel`), with per-layer misses if
    /// `per_layer` and the setup asks for them.
    #[allow(clippy::too_many_arguments)]
    pub fn labelled_row(
        &self,
        label: String,
        per_layer: bool,
        plan: &ReplayPlan,
        b: Budget,
        c: &Misses,
        econ: Option<&CostInputs>,
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
            self.batch_columns,
        );
        row.trace = self.trace_label.clone();
        if let Some(m) = &self.deployment {
            row.model = Some(m.model.name.to_string());
            row.quant = Some(m.quant_label());
        }
        row
    }
}

/// `--prompt-tokens`: prompt processing replayed and timed, and a prompt run in the
/// trace at least as long as every length asked for.
fn check_prompt_lengths(
    a: &SetupOptions,
    trace: &crate::trace::Trace,
    include_prompt: bool,
    has_model: bool,
) -> Result<()> {
    let Some(&longest_asked) = a.prompt_tokens.iter().max() else {
        return Ok(());
    };
    let flag = format!(
        "--prompt-tokens {}",
        a.prompt_tokens
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    if a.prompt_tokens.contains(&0) {
        return Err(Error::new(
            "--prompt-tokens 0: a prompt has at least one token",
        ));
    }
    if !include_prompt {
        return Err(Error::new(format!(
            "{flag} times prompt processing, which --phase decode skips: add --phase all"
        )));
    }
    if !has_model || a.io.is_none() {
        return Err(Error::new(format!(
            "{flag} needs a model (--model) and the I/O model (--io mmap, pread or direct) to time the prompts"
        )));
    }
    let longest = crate::replay::batch::longest_prompt_run(trace) as u64;
    if longest < longest_asked {
        // A recording of decode tokens only may be prompt routing all the same.
        let (has, tag) = match longest {
            0 => (
                "the trace has no prompt tokens".to_string(),
                "; `moe-spill convert --as-prompt` tags a recording's tokens as prompt processing",
            ),
            n => (format!("the trace's longest prompt is {n} tokens"), ""),
        };
        return Err(Error::new(format!(
            "{flag}: {has}; `moe-spill synth --prompt-tokens {longest_asked}` generates prompts that long{tag}"
        )));
    }
    Ok(())
}

/// A warm-up (`--warmup-tokens`) that leaves a token of the `n_replayed` to count.
pub fn check_warmup(warmup: usize, n_replayed: usize) -> Result<()> {
    if warmup > 0 && warmup >= n_replayed {
        return Err(Error::new(format!(
            "--warmup-tokens {warmup} leaves no token to count (the run has {n_replayed})"
        )));
    }
    Ok(())
}

/// The batches of the options, checked against the trace.
fn check_batching(
    a: &SetupOptions,
    trace: &crate::trace::Trace,
    include_prompt: bool,
) -> Result<Batching> {
    let b = Batching {
        ubatch: a.ubatch.unwrap_or(DEFAULT_UBATCH),
        parallel: a.parallel.unwrap_or(1),
        prompt_cut: None,
    };
    if b.ubatch == 0 {
        return Err(Error::new("--ubatch 0: a ubatch holds at least one token"));
    }
    if b.parallel == 0 {
        return Err(Error::new(
            "--parallel 0: at least one response decodes at a time",
        ));
    }
    let responses = replayed_responses(trace, include_prompt);
    if b.parallel > responses {
        return Err(Error::new(format!(
            "--parallel {}: the trace has {responses} response(s) to replay, so at most {responses} can decode in parallel",
            b.parallel
        )));
    }
    Ok(b)
}

/// A note for people on what the numbers rest on.
pub fn context_line(study: &ReplaySetup, econ: Option<&CostInputs>, ram_per_row: bool) -> String {
    context_line_with(study, econ, false, ram_per_row)
}

/// The note, for rows whose VRAM varies (`sweep --vrams`): the rows' own columns give
/// the VRAM and the MoE layers in it, not the first row's.
pub fn context_line_with(
    study: &ReplaySetup,
    econ: Option<&CostInputs>,
    vram_per_row: bool,
    ram_per_row: bool,
) -> String {
    let tr = &study.loaded.trace;
    let mut s = format!(
        "trace: {} responses, {} tokens replayed ({}); ",
        tr.n_responses(),
        tr.n_replayed(study.include_prompt),
        tr.geometry.describe()
    );
    if study.batch_columns {
        // The ubatch only where prompt tokens are replayed; what the rates count only
        // where the steps are timed.
        let prompts = study.include_prompt && tr.prompt.iter().any(|&p| p);
        if prompts {
            s.push_str(&format!("ubatch {}, ", study.batching.ubatch));
        }
        s.push_str(&format!("parallel {}", study.batching.parallel));
        if study.io.is_some() {
            s.push_str(" (est_tok/s: every token the steps carried over their time");
            if prompts {
                s.push_str(", prompt and decode; ttft_runs: the prompt runs ttft_s is the mean of");
            }
            s.push(')');
        }
        s.push_str("; ");
    }
    match (&study.deployment, econ) {
        (Some(m), Some(e)) => s.push_str(&format!(
            "model {} at {} ({} B per expert{}), non-expert {}; machine {}: {}; {}; io {}; {}",
            m.model.name,
            m.quant_label(),
            e.placement.expert_bytes,
            if e.placement.uniform() {
                ""
            } else {
                ", the mean of the CPU side's; each layer's own in SSD bytes"
            },
            match m.weights.non_expert {
                NonExpert::Params(_) => m.non_expert_quant.name.to_string(),
                NonExpert::Bytes { bytes, .. } => format!("{bytes} B from the file"),
            },
            e.hw.name,
            if vram_per_row {
                // The machine before a row's VRAM replaced its GPUs' (or took them away).
                m.hw.describe_with(true, ram_per_row)
            } else {
                e.hw.describe_with(false, ram_per_row)
            },
            if vram_per_row {
                "VRAM per row (vram_gib; gpu_layers: its MoE layers)".to_string()
            } else {
                format!(
                    "{} of {} MoE layers in VRAM{}",
                    e.placement.gpu_layers,
                    e.placement.n_layers,
                    if e.placement.cpu_first == 0 && e.placement.gpu_layers > 0 {
                        " (the last ones: --n-cpu-moe)"
                    } else {
                        ""
                    }
                )
            },
            e.io.as_ref().map_or("rated", |io| io.engine.name()),
            match study.u_d() {
                Some((u, d)) => format!("U = {u:.1}, D = {d:.1} per {CHUNK_TOKENS}-token chunk"),
                None if study.longest_response() >= CHUNK_TOKENS => format!(
                    "D undefined (no response has two whole {CHUNK_TOKENS}-token chunks: no analytic estimate)"
                ),
                None => format!(
                    "U and D undefined (no response has a whole {CHUNK_TOKENS}-token chunk: no analytic estimate)"
                ),
            }
        )),
        _ => s.push_str("no model preset matches the trace (pass --model for bytes and tokens/s)"),
    }
    s
}
