//! `sweep --kernel`: the real page cache as one more row at every budget. The file is
//! laid out (or reused) and the cgroup checked before the policies run, so a machine
//! that cannot do it says so at once; then one kernel replay per budget, one after
//! another (they measure I/O), each with its progress bar.

use std::path::PathBuf;

use super::{Advice, GgufLayout, KernelOptions, KernelSession};
use crate::costing::{Budget, CostInputs};
use crate::error::{Error, Result};
use crate::replay::{Partition, ReplayPlan};
use crate::report::rows::Row;
use crate::setup::ReplaySetup;

/// The `source`/`policy` label of kernel rows.
pub const KERNEL: &str = "kernel";

/// `sweep --kernel`'s options.
#[derive(Debug, Clone)]
pub struct KernelSweepOptions {
    /// Add the real Linux page cache as a `kernel` row at every budget (kernel-replay:
    /// needs root or a delegated memory cgroup; one replay of the whole trace per
    /// budget, serially: minutes each).
    pub kernel: bool,
    /// --kernel: bytes of one expert in the laid-out file (the budget is scaled with it).
    pub kernel_expert_bytes: u64,
    /// --kernel: 1 = each expert contiguous, 3 = gate/up/down slices as in a GGUF.
    pub kernel_slices: u32,
    /// --kernel: advice on the mapping (llama.cpp's by default).
    pub kernel_advice: Advice,
    /// --kernel: the device's read_ahead_kb while the child opens the file.
    pub kernel_read_ahead_kb: Option<u64>,
    /// --kernel: the model file to write or reuse (default: a temporary file here).
    pub kernel_file: Option<PathBuf>,
}

/// A laid-out file and a checked cgroup, ready to run every budget.
pub struct KernelSweep {
    session: KernelSession,
    quiet: bool,
}

impl KernelSweep {
    /// None without `--kernel`. Fails now (before any policy runs) if no memory cgroup
    /// can be created, the file system cannot hold the file, or the options are wrong.
    pub fn new(
        a: &KernelSweepOptions,
        study: &ReplaySetup,
        plan: &ReplayPlan,
        quiet: bool,
    ) -> Result<Option<KernelSweep>> {
        if !a.kernel {
            return Ok(None);
        }
        study.require_token_by_token("sweep --kernel")?;
        if study.partition != Partition::Global {
            return Err(Error::new(
                "--kernel: the page cache is one global cache (--partition global)",
            ));
        }
        // With --gguf the file is laid out as the GGUF is, at the model's sizes.
        let gguf = study
            .deployment
            .as_ref()
            .and_then(|d| GgufLayout::of(&d.weights));
        let opts = KernelOptions {
            expert_bytes: match (&gguf, plan.expert_bytes) {
                (Some(_), Some(eb)) => eb,
                _ => a.kernel_expert_bytes,
            },
            slices: a.kernel_slices,
            gguf,
            advice: a.kernel_advice,
            file: a.kernel_file.clone(),
            read_ahead_kb: a.kernel_read_ahead_kb,
            child: None,
            quiet,
        };
        let session =
            KernelSession::new(plan, opts).map_err(|e| Error::new(format!("--kernel: {e}")))?;
        Ok(Some(KernelSweep { session, quiet }))
    }

    /// One `kernel` row per budget of every VRAM size, as `(vram, budget, row)`.
    /// Budgets of 0 experts are left out (a page cache of nothing cannot be measured;
    /// every access misses there, as every policy says).
    pub fn rows(
        &mut self,
        study: &ReplaySetup,
        plans: &[ReplayPlan],
        budget_sets: &[Vec<Budget>],
        econs: &[Option<CostInputs>],
        vrams: &[Option<f64>],
    ) -> Result<Vec<(usize, usize, Row)>> {
        let total: usize = budget_sets
            .iter()
            .map(|s| s.iter().filter(|b| b.capacity > 0).count())
            .sum();
        let mut out = Vec::with_capacity(total);
        let mut done = 0;
        for (v, plan) in plans.iter().enumerate() {
            if plan.per_token == 0 {
                continue; // every MoE layer in VRAM: nothing reaches the page cache
            }
            for (i, b) in budget_sets[v].iter().enumerate() {
                if b.capacity == 0 {
                    continue;
                }
                done += 1;
                if !self.quiet {
                    crate::note!(
                        "moe-spill: kernel replay {done}/{total}: {} tokens at {} experts ...",
                        plan.n_tokens,
                        b.capacity
                    );
                }
                let run = self
                    .session
                    .measure(plan, b.capacity)
                    .map_err(|e| Error::new(format!("--kernel: {e}")))?;
                if run.global_reclaim_pages > 0 && !self.quiet {
                    crate::note!(
                        "moe-spill: warning: {} pages were reclaimed by global memory pressure during the kernel run at {} experts; its numbers may be off",
                        run.global_reclaim_pages, b.capacity
                    );
                }
                let counts = run.counts(plan.n_slots());
                let row = study.labelled_row(
                    KERNEL.into(),
                    false,
                    plan,
                    *b,
                    &counts,
                    econs[v].as_ref(),
                    vrams[v],
                );
                out.push((v, i, row));
            }
        }
        Ok(out)
    }
}
