//! `kernel-replay`: ground truth from the real Linux page cache.
//!
//! Lay out a model-like file (every expert of every MoE layer, scaled down to
//! `--expert-bytes`), drop its pages from the page cache, start a child process in a
//! memory cgroup of its own whose limit is the budget (capacity x expert bytes) plus
//! the child's measured fixed overhead, and let the child touch every routed expert's
//! pages through a read-only shared mapping, token by token in replay order, with
//! llama.cpp's advice. The bytes the kernel reads from storage per token
//! (`/proc/thread-self/io` read_bytes), divided by the expert size, are the kernel's
//! misses; the simulator's policies replay the same accesses at the same capacity, and
//! so does the page-level model with readahead ([`pagemodel`]), which reports bytes.
//!
//! Library use (for `sweep --kernel`): [`kernel_misses`] for one budget, or a
//! [`KernelSession`] that lays the file out once and runs many budgets.

mod cgroup;
mod child;
mod layout;
pub mod pagemodel;
pub mod sweep;
mod sys;

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::Instant;

use clap::Args;
use moe_spill_policies::registry::{BuildContext, PolicySpec};
use serde::{Deserialize, Serialize};

pub use cgroup::{own_memory_cgroup, MemCgroup, Version as CgroupVersion};
pub use child::{child_main, ChildSpec, SPEC_ENV};
pub use layout::{Layout, ModelFile, HEADER_BYTES};
pub use pagemodel::{page_model, PageModelConfig, PageModelRun};

/// The `source` of the page-level model's rows.
pub const PAGE_MODEL: &str = "page-model";

use crate::error::{Error, Result};
use crate::hardware::parse_size_gib;
use crate::output::{emit, fixed, write_atomic, OutputFormat, Table};
use crate::simulate::{run_policy, Counts, Partition, ReplayPlan};
use crate::study::{Study, StudyArgs};
use crate::trace::Trace;

/// How the child advises the kernel about its mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Advice {
    /// No advice: mmap read-around of the device's read_ahead_kb.
    Normal,
    /// posix_fadvise(RANDOM) and madvise(MADV_RANDOM) (llama.cpp --numa): no readahead.
    Random,
    /// posix_fadvise(SEQUENTIAL) on the fd, llama.cpp's default: twice the read-around.
    Sequential,
    /// madvise(MADV_WILLNEED) on each routed expert before touching it (a per-expert
    /// prefetch, like ik_llama.cpp --prefetch-experts), no other advice: exactly the
    /// missing pages of the routed experts are read, nothing around them.
    Willneed,
}

impl Advice {
    pub fn name(self) -> &'static str {
        match self {
            Advice::Normal => "normal",
            Advice::Random => "random",
            Advice::Sequential => "sequential",
            Advice::Willneed => "willneed",
        }
    }
}

/// How to start the measured child: a program and arguments that end up calling
/// [`child_main`]. The default re-executes this binary as `kernel-replay-child`.
#[derive(Clone, Debug)]
pub struct ChildCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl ChildCommand {
    pub fn this_binary() -> Result<ChildCommand> {
        let program = std::env::current_exe()
            .map_err(|e| Error::new(format!("cannot find this program's path: {e}")))?;
        Ok(ChildCommand {
            program,
            args: vec!["kernel-replay-child".into()],
        })
    }
}

/// Settings of a kernel replay.
#[derive(Clone, Debug)]
pub struct KernelOptions {
    /// Bytes of one expert in the laid-out file (the model's are scaled to this).
    pub expert_bytes: u64,
    /// 1: each expert contiguous; 3: gate/up/down slices in three per-layer tensors.
    pub slices: u32,
    pub advice: Advice,
    /// The file to write or reuse (None: a temporary file in the current directory,
    /// removed afterwards; pass a path to reuse one file across calls).
    pub file: Option<PathBuf>,
    /// Set the device's read_ahead_kb to this while the child opens and advises the
    /// file (the kernel copies it into the open file), restoring it right after.
    pub read_ahead_kb: Option<u32>,
    /// None: this binary's hidden `kernel-replay-child` subcommand.
    pub child: Option<ChildCommand>,
    /// No progress output on stderr.
    pub quiet: bool,
}

impl Default for KernelOptions {
    fn default() -> Self {
        KernelOptions {
            expert_bytes: 2 << 20,
            slices: 1,
            advice: Advice::Sequential,
            file: None,
            read_ahead_kb: None,
            child: None,
            quiet: true,
        }
    }
}

/// What the kernel did in one run.
#[derive(Clone, Debug)]
pub struct KernelRun {
    pub capacity: usize,
    pub expert_bytes: u64,
    /// capacity x expert bytes: the page cache the budget allows.
    pub budget_bytes: u64,
    /// The child's own charged memory measured after it joined the cgroup and set up,
    /// before the first touch: memory.usage_in_bytes (v2 memory.current) minus the page
    /// cache (memory.stat cache / file). Its buffers, the mapping's first page tables,
    /// kernel objects; what it allocated before joining stays charged to the parent.
    pub overhead_bytes: u64,
    /// Everything charged besides the file's page cache at the end: the fixed overhead
    /// plus page tables and the page cache's xarray nodes (the limit follows them).
    pub non_file_bytes: u64,
    /// The cgroup limit at the end: non-file bytes + budget.
    pub limit_bytes: u64,
    /// mmap read-around window implied by the device's read_ahead_kb and the advice.
    pub window_kb: u64,
    /// Per token: bytes read from storage, major and minor faults, wall time.
    pub read_bytes: Vec<u64>,
    pub major_faults: Vec<u64>,
    pub minor_faults: Vec<u64>,
    pub wall_ns: Vec<u64>,
    /// Resident pages of every expert at the end (mincore).
    pub resident_pages: Vec<u32>,
    pub pages_per_expert: u32,
    /// Pages reclaimed by global (not cgroup) reclaim anywhere during the run: 0 means
    /// the budget alone decided what was evicted.
    pub global_reclaim_pages: u64,
    /// Peak charged memory of the cgroup, and its file refaults (memory.stat).
    pub peak_bytes: Option<u64>,
    pub refaults: Option<u64>,
    pub seconds: f64,
}

impl KernelRun {
    pub fn total_read_bytes(&self) -> u64 {
        self.read_bytes.iter().sum()
    }

    /// Expert-equivalent misses: bytes read / expert bytes.
    pub fn expert_misses(&self) -> f64 {
        self.total_read_bytes() as f64 / self.expert_bytes as f64
    }

    /// Expert-equivalent misses of every token.
    pub fn misses_per_token(&self) -> Vec<f64> {
        let eb = self.expert_bytes as f64;
        self.read_bytes.iter().map(|&b| b as f64 / eb).collect()
    }

    /// As simulator counts (for `make_row`): whole expert-equivalents per token,
    /// rounded so that every prefix sum is within half an expert of the bytes read.
    /// Per-slot misses are not measured (the kernel reports bytes per token) and are 0.
    pub fn counts(&self, n_slots: usize) -> Counts {
        let eb = self.expert_bytes as f64;
        let mut cum = 0u64;
        let mut given = 0u64;
        let misses_per_token = self
            .read_bytes
            .iter()
            .map(|&b| {
                cum += b;
                let want = (cum as f64 / eb).round() as u64;
                let m = want.saturating_sub(given);
                given += m;
                m as u32
            })
            .collect();
        Counts {
            misses_per_token,
            misses_per_slot: vec![0; n_slots],
        }
    }

    /// Experts' worth of pages in the page cache at the end.
    pub fn resident_experts(&self) -> f64 {
        resident_experts(&self.resident_pages, self.pages_per_expert)
    }

    /// Ids with at least half of their pages resident at the end.
    pub fn resident_ids(&self) -> Vec<bool> {
        resident_ids(&self.resident_pages, self.pages_per_expert)
    }
}

/// Experts' worth of pages, from the pages of each id resident (in the kernel's page
/// cache or the page model's).
pub(crate) fn resident_experts(resident_pages: &[u32], pages_per_expert: u32) -> f64 {
    resident_pages.iter().map(|&p| p as f64).sum::<f64>() / pages_per_expert.max(1) as f64
}

/// Ids with at least half of their pages resident.
pub(crate) fn resident_ids(resident_pages: &[u32], pages_per_expert: u32) -> Vec<bool> {
    resident_pages
        .iter()
        .map(|&p| 2 * p >= pages_per_expert)
        .collect()
}

/// The laid-out file and how to run children on it: one per sweep, many budgets.
pub struct KernelSession {
    file: ModelFile,
    opts: KernelOptions,
    child: ChildCommand,
    bdi_read_ahead: Option<PathBuf>,
}

static CHILD_PID: AtomicI32 = AtomicI32::new(0);
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static CGROUP_NUMBER: AtomicUsize = AtomicUsize::new(1);

/// Numbers for this process's cgroups: unique across sessions (several sessions in one
/// process, e.g. tests, must not reuse a name).
fn cgroup_number() -> usize {
    CGROUP_NUMBER.fetch_add(1, Ordering::Relaxed)
}

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
    let pid = CHILD_PID.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// SIGINT/SIGTERM/SIGHUP handlers that kill the child, so the parent lives on to
/// remove the cgroup; the previous handlers come back on drop.
struct SignalGuard {
    old: Vec<(libc::c_int, libc::sigaction)>,
}

impl SignalGuard {
    fn install() -> SignalGuard {
        let mut old = Vec::new();
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: installing a handler that only touches atomics and calls kill.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as *const () as usize;
                libc::sigemptyset(&mut sa.sa_mask);
                let mut prev: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &sa, &mut prev) == 0 {
                    old.push((sig, prev));
                }
            }
        }
        SignalGuard { old }
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (sig, prev) in &self.old {
            // SAFETY: restoring what sigaction gave us.
            unsafe {
                libc::sigaction(*sig, prev, std::ptr::null_mut());
            }
        }
    }
}

fn read_u64s(r: &mut impl Read, out: &mut [u64]) -> io::Result<()> {
    let mut buf = vec![0u8; out.len() * 8];
    r.read_exact(&mut buf)?;
    for (i, w) in out.iter_mut().enumerate() {
        *w = u64::from_le_bytes(buf[i * 8..(i + 1) * 8].try_into().expect("8 bytes"));
    }
    Ok(())
}

/// Pages reclaimed outside cgroup limit reclaim since boot (memcg limit reclaim is not
/// counted in /proc/vmstat's pgsteal_kswapd/direct/khugepaged).
fn global_reclaim_pages() -> u64 {
    std::fs::read_to_string("/proc/vmstat")
        .map(|s| {
            s.lines()
                .filter_map(|l| l.split_once(' '))
                .filter(|(k, _)| {
                    matches!(
                        *k,
                        "pgsteal_kswapd" | "pgsteal_direct" | "pgsteal_khugepaged"
                    )
                })
                .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

/// The sysfs read_ahead_kb of the device under `path` (its backing device info).
fn bdi_read_ahead(path: &Path) -> Option<PathBuf> {
    let (maj, min) = sys::dev_of(path).ok()?;
    let p = PathBuf::from(format!("/sys/class/bdi/{maj}:{min}/read_ahead_kb"));
    p.is_file().then_some(p)
}

impl KernelSession {
    /// Check the platform, lay out (or reuse) the file for `plan`'s ids.
    pub fn new(plan: &ReplayPlan, opts: KernelOptions) -> Result<KernelSession> {
        if !cfg!(target_os = "linux") {
            return Err(Error::new(
                "kernel-replay needs Linux (cgroups, mincore, /proc)",
            ));
        }
        if opts.expert_bytes == 0 {
            return Err(Error::new("--expert-bytes must be positive"));
        }
        if !matches!(opts.slices, 1 | 3) || opts.expert_bytes < opts.slices as u64 {
            return Err(Error::new(
                "--slices must be 1 or 3 (and each slice at least a byte)",
            ));
        }
        // Fail before writing gigabytes when no cgroup can be made.
        MemCgroup::create(cgroup_number())?.remove()?;
        let layout = Layout {
            n_ids: plan.n_ids,
            n_experts: plan.n_experts,
            expert_bytes: opts.expert_bytes,
            slices: opts.slices,
        };
        let file = ModelFile::prepare(opts.file.as_deref(), layout, opts.quiet)?;
        let child = match &opts.child {
            Some(c) => c.clone(),
            None => ChildCommand::this_binary()?,
        };
        // Bring the child's program into the page cache now, charged to us, so none of
        // its pages is read (or charged) inside the measured cgroup.
        if let Ok(mut f) = File::open(&child.program) {
            let _ = io::copy(&mut f, &mut io::sink());
        }
        let bdi_read_ahead = bdi_read_ahead(&file.path);
        if opts.read_ahead_kb.is_some() && bdi_read_ahead.is_none() {
            return Err(Error::in_file(
                &file.path,
                "--read-ahead-kb: cannot find the device's read_ahead_kb in /sys/class/bdi",
            ));
        }
        Ok(KernelSession {
            file,
            opts,
            child,
            bdi_read_ahead,
        })
    }

    pub fn file(&self) -> &Path {
        &self.file.path
    }

    /// The device's read_ahead_kb now.
    pub fn device_read_ahead_kb(&self) -> Option<u64> {
        let p = self.bdi_read_ahead.as_ref()?;
        std::fs::read_to_string(p).ok()?.trim().parse().ok()
    }

    /// One kernel replay of `plan` with page cache for `capacity` experts.
    pub fn run(&mut self, plan: &ReplayPlan, capacity: usize) -> Result<KernelRun> {
        let layout = &self.file.layout;
        if plan.n_ids != layout.n_ids || plan.n_experts != layout.n_experts {
            return Err(Error::new(format!(
                "kernel-replay: the plan has {} ids of {} experts, the file {} of {}",
                plan.n_ids, plan.n_experts, layout.n_ids, layout.n_experts
            )));
        }
        if plan.per_token == 0 || plan.n_tokens == 0 {
            return Err(Error::new(
                "kernel-replay: no access reaches the page cache (every MoE layer in VRAM? try --gpus 0)",
            ));
        }
        let started = Instant::now();
        self.file.drop_cache()?;
        let mut cg = MemCgroup::create(cgroup_number())?;
        let budget_bytes = capacity as u64 * layout.expert_bytes;
        let spec = ChildSpec {
            file: std::fs::canonicalize(&self.file.path)
                .map_err(|e| Error::io(&self.file.path, e))?,
            layout: layout.clone(),
            advice: self.opts.advice,
            read_ahead_kb: self.opts.read_ahead_kb,
            bdi_read_ahead: self.bdi_read_ahead.clone(),
            cgroup_dir: cg.dir.clone(),
            cgroup_version: cg.version,
            budget_bytes,
            per_token: plan.per_token,
            n_tokens: plan.n_tokens,
        };
        let reclaim0 = global_reclaim_pages();
        let result = self.run_child(plan, &spec, &cg);
        let reclaim1 = global_reclaim_pages();
        let oom = cg.oom_kills();
        let peak = cg.peak();
        let refaults = cg
            .stat("workingset_refault_file")
            .or_else(|| cg.stat("total_workingset_refault_file"));
        let resident = self.file.resident_pages();
        // Free the pages (and the charges) before removing the cgroup.
        let dropped = self.file.drop_cache();
        let removed = cg.remove();
        let (words, per_token) = match result {
            Ok(x) => x,
            Err(e) if oom > 0 => {
                return Err(Error::new(format!(
                    "kernel-replay: the replay process was killed by the OOM killer: the budget of {capacity} experts ({budget_bytes} B) leaves too little room ({e})"
                )))
            }
            Err(e) => return Err(e),
        };
        removed?;
        dropped?;
        let resident =
            resident.map_err(|e| Error::in_file(&self.file.path, format!("mincore: {e}")))?;
        let [_, overhead, _, _, window_kb] = words.0;
        let [_, non_file, limit] = words.1;
        let n = plan.n_tokens;
        let mut run = KernelRun {
            capacity,
            expert_bytes: layout.expert_bytes,
            budget_bytes,
            overhead_bytes: overhead,
            non_file_bytes: non_file,
            limit_bytes: limit,
            window_kb,
            read_bytes: Vec::with_capacity(n),
            major_faults: Vec::with_capacity(n),
            minor_faults: Vec::with_capacity(n),
            wall_ns: Vec::with_capacity(n),
            resident_pages: resident,
            pages_per_expert: self.file.pages_per_expert(),
            global_reclaim_pages: reclaim1.saturating_sub(reclaim0),
            peak_bytes: peak,
            refaults,
            seconds: 0.0,
        };
        for t in per_token.chunks_exact(child::TOKEN_WORDS) {
            run.read_bytes.push(t[0]);
            run.major_faults.push(t[1]);
            run.minor_faults.push(t[2]);
            run.wall_ns.push(t[3]);
        }
        run.seconds = started.elapsed().as_secs_f64();
        Ok(run)
    }

    /// Start the child in the cgroup, feed it the ids, collect its reports.
    #[allow(clippy::type_complexity)]
    fn run_child(
        &self,
        plan: &ReplayPlan,
        spec: &ChildSpec,
        cg: &MemCgroup,
    ) -> Result<(([u64; 5], [u64; 3]), Vec<u64>)> {
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 fills two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(Error::new(format!(
                "kernel-replay: pipe: {}",
                io::Error::last_os_error()
            )));
        }
        // SAFETY: fresh descriptors we own.
        let mut report = unsafe { File::from_raw_fd(fds[0]) };
        let report_w = unsafe { File::from_raw_fd(fds[1]) };
        let wfd = fds[1];
        let mut cmd = Command::new(&self.child.program);
        cmd.args(&self.child.args)
            .env(SPEC_ENV, serde_json::to_string(spec).expect("json"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: dup2 is async-signal-safe; it clears close-on-exec on fd 3.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(wfd, child::REPORT_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        SIGNAL.store(0, Ordering::SeqCst);
        let _signals = SignalGuard::install();
        let mut proc_ = cmd.spawn().map_err(|e| {
            Error::new(format!(
                "kernel-replay: cannot start {}: {e}",
                self.child.program.display()
            ))
        })?;
        CHILD_PID.store(proc_.id() as i32, Ordering::SeqCst);
        drop(report_w);
        let mut stdin = proc_.stdin.take().expect("piped");
        let mut stderr = proc_.stderr.take().expect("piped");
        let per_token = plan.per_token;
        let n = plan.n_tokens;
        let bar = crate::progress::bar(n as u64, "kernel", self.opts.quiet);
        let outcome = std::thread::scope(|s| {
            let stream: &[u16] = &plan.stream[..n * per_token];
            s.spawn(move || {
                let mut buf = Vec::with_capacity(per_token * 2 * 64);
                for chunk in stream.chunks(per_token * 64) {
                    buf.clear();
                    for id in chunk {
                        buf.extend_from_slice(&id.to_le_bytes());
                    }
                    if stdin.write_all(&buf).is_err() {
                        break;
                    }
                }
            });
            let err_text = s.spawn(move || {
                let mut t = String::new();
                let _ = stderr.read_to_string(&mut t);
                t
            });
            let mut ready = [0u64; 5];
            let mut tokens = vec![0u64; n * child::TOKEN_WORDS];
            let mut done = [0u64; 3];
            let read = (|| -> io::Result<()> {
                read_u64s(&mut report, &mut ready)?;
                if ready[0] != child::READY {
                    return Err(io::Error::other("bad READY record"));
                }
                const STEP: usize = 16;
                for (i, chunk) in tokens.chunks_mut(child::TOKEN_WORDS * STEP).enumerate() {
                    read_u64s(&mut report, chunk)?;
                    bar.set_position(((i + 1) * STEP).min(n) as u64);
                }
                read_u64s(&mut report, &mut done)?;
                if done[0] != child::DONE {
                    return Err(io::Error::other("bad DONE record"));
                }
                Ok(())
            })();
            if read.is_err() {
                let _ = proc_.kill();
            }
            let status = proc_.wait();
            CHILD_PID.store(0, Ordering::SeqCst);
            let text = err_text.join().unwrap_or_default();
            (read, status, text, ready, done, tokens)
        });
        bar.finish_and_clear();
        let (read, status, text, ready, done, tokens) = outcome;
        let sig = SIGNAL.load(Ordering::SeqCst);
        if sig != 0 {
            return Err(Error::new(format!(
                "kernel-replay interrupted by signal {sig}; cgroup {} removed",
                cg.dir.display()
            )));
        }
        let status = status.map_err(|e| Error::new(format!("kernel-replay: wait: {e}")))?;
        let last_line = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .trim_start_matches("moe-spill: ")
            .to_string();
        if let Err(e) = read {
            let why = if !last_line.is_empty() {
                last_line
            } else if let Some(s) = status.signal() {
                format!("killed by signal {s}")
            } else {
                format!("{e} ({status})")
            };
            return Err(Error::new(format!(
                "kernel-replay: the replay process failed: {why}"
            )));
        }
        if !status.success() {
            return Err(Error::new(format!(
                "kernel-replay: the replay process exited with {status}: {last_line}"
            )));
        }
        Ok(((ready, done), tokens))
    }
}

/// One kernel replay at one capacity (lays out or reuses the file; with `opts.file`
/// None a temporary file is written and removed, so a sweep should pass a path or use
/// a [`KernelSession`]).
pub fn kernel_misses(
    plan: &ReplayPlan,
    capacity_experts: usize,
    opts: &KernelOptions,
) -> Result<KernelRun> {
    KernelSession::new(plan, opts.clone())?.run(plan, capacity_experts)
}

/// The trace cut after its first `tokens` replayed tokens (decode tokens only unless
/// `include_prompt`): what `--tokens N` replays.
pub fn truncate_trace(trace: &Trace, include_prompt: bool, tokens: usize) -> Trace {
    let mut kept = 0;
    let mut end = trace.n_tokens();
    for t in 0..trace.n_tokens() {
        if kept == tokens {
            end = t;
            break;
        }
        if include_prompt || !trace.prompt[t] {
            kept += 1;
        }
    }
    let a = trace.geometry.accesses_per_token();
    let mut out = Trace::empty(trace.geometry.clone(), trace.n_experts_known);
    out.ids.extend_from_slice(&trace.ids[..end * a]);
    out.prompt.extend_from_slice(&trace.prompt[..end]);
    out.response_starts = trace
        .response_starts
        .iter()
        .copied()
        .filter(|&s| s < end)
        .chain(std::iter::once(end))
        .collect();
    out.response_starts.dedup();
    out
}

/// A byte size: `2MiB`, `512KiB`, `1GiB` or plain bytes.
pub fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    if let Ok(v) = t.parse::<u64>() {
        return Ok(v);
    }
    let lower = t.to_ascii_lowercase();
    if let Some(n) = lower
        .strip_suffix("kib")
        .or_else(|| lower.strip_suffix('k'))
    {
        let v: f64 = n
            .trim()
            .parse()
            .map_err(|_| format!("`{t}` is not a size like 2MiB"))?;
        return Ok((v * 1024.0).round() as u64);
    }
    parse_size_gib(t).map(|g| (g * (1u64 << 30) as f64).round() as u64)
}

#[derive(Args, Debug)]
pub struct KernelReplayArgs {
    #[command(flatten)]
    pub study: StudyArgs,
    /// Installed RAM of the real machine, one or more (comma-separated): the page cache
    /// holds the experts `simulate --ram` gives it, at the scaled size.
    #[arg(long, value_name = "SIZE,...", value_parser = parse_size_gib, value_delimiter = ',', required_unless_present = "cache_experts", conflicts_with = "cache_experts")]
    pub ram: Vec<f64>,
    /// Cache capacities in experts, exactly (comma-separated).
    #[arg(long, value_name = "N,...", value_delimiter = ',')]
    pub cache_experts: Vec<usize>,
    /// Bytes of one expert in the laid-out file; the budget is scaled the same way, so
    /// the cache holds the same number of experts.
    #[arg(long, value_name = "SIZE", default_value = "2MiB", value_parser = parse_bytes)]
    pub expert_bytes: u64,
    /// 1: each expert's bytes contiguous; 3: gate/up/down slices in three tensors per
    /// layer, as in a GGUF.
    #[arg(long, value_name = "1|3", default_value_t = 1)]
    pub slices: u32,
    /// The model file to write, or reuse when it has this layout (default: a temporary
    /// file in the current directory, removed at the end).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Replay only the first N tokens.
    #[arg(long, value_name = "N")]
    pub tokens: Option<usize>,
    /// Advice on the mapping: llama.cpp's posix_fadvise(SEQUENTIAL) by default.
    #[arg(long, value_enum, default_value_t = Advice::Sequential)]
    pub advice: Advice,
    /// Set the device's read_ahead_kb to KB while the child opens the file (the open
    /// file keeps it), restoring it right after; default: leave the device alone.
    #[arg(long, value_name = "KB")]
    pub read_ahead_kb: Option<u32>,
    /// Policies to compare, comma-separated (the page-level model, `page-model`, is
    /// always shown).
    #[arg(
        long,
        value_name = "SPEC,...",
        default_value = "linux,linux-eager,lru,clock,arc,fifo",
        value_delimiter = ','
    )]
    pub policies: Vec<String>,
    /// Also write the comparison as CSV to FILE (atomically).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Write per-token kernel numbers and policy misses as CSV to FILE.
    #[arg(long, value_name = "FILE")]
    pub per_token: Option<PathBuf>,
}

/// One line of the comparison: the kernel or a policy at one budget.
#[derive(Clone, Debug, Serialize)]
pub struct CompareRow {
    pub trace: String,
    pub model: Option<String>,
    pub expert_bytes: u64,
    pub model_expert_bytes: Option<u64>,
    pub slices: u32,
    pub advice: &'static str,
    pub window_kb: u64,
    pub ram_gib: Option<f64>,
    pub cache_experts: usize,
    pub source: String,
    pub tokens: u64,
    pub accesses: u64,
    /// Kernel and page model: bytes read / expert bytes; policies: misses.
    pub misses: f64,
    pub misses_per_token: f64,
    pub misses_per_token_p50: f64,
    pub misses_per_token_p99: f64,
    /// At the model's real expert size, when a model is known.
    pub ssd_bytes_per_token: Option<f64>,
    /// (policy - kernel) / kernel.
    pub rel_err: Option<f64>,
    /// Experts' worth of pages (kernel) or objects (policy) resident at the end.
    pub resident_experts: f64,
    /// Share of the policy's resident experts the kernel also holds (>= half the pages).
    pub resident_overlap: Option<f64>,
    pub read_bytes: Option<u64>,
    pub major_faults_per_token: Option<f64>,
    pub wall_ms_per_token: Option<f64>,
    pub wall_ms_p50: Option<f64>,
    pub wall_ms_p99: Option<f64>,
    pub limit_bytes: Option<u64>,
    pub overhead_bytes: Option<u64>,
    pub global_reclaim_pages: Option<u64>,
    pub seconds: Option<f64>,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v
}

/// Replay `spec` at `capacity`: misses per token (run_policy) and the final resident set.
pub fn policy_run(
    plan: &ReplayPlan,
    spec: &PolicySpec,
    capacity: usize,
) -> Result<(Counts, Vec<bool>)> {
    let counts = run_policy(plan, spec, capacity, Partition::Global, None, 0)?;
    let ctx = BuildContext {
        capacity,
        n_ids: plan.n_ids,
        n_experts: plan.n_experts,
        first_slot: plan.first_slot,
        future: spec.needs_future().then_some(&plan.stream[..]),
        opt_future: None,
        profile: None,
        expert_bytes: plan.expert_bytes,
    };
    let mut p = spec.build(&ctx).map_err(|e| Error::new(e.to_string()))?;
    let mut idx = Vec::new();
    p.replay(&plan.stream, &mut idx);
    let resident = (0..plan.n_ids).map(|id| p.contains(id as u32)).collect();
    Ok((counts, resident))
}

/// `moe-spill kernel-replay`.
pub fn run(a: KernelReplayArgs) -> Result<()> {
    let specs: Vec<PolicySpec> = a
        .policies
        .iter()
        .map(|s| PolicySpec::parse(s).map_err(|e| Error::new(format!("--policies: {e}"))))
        .collect::<Result<_>>()?;
    if let Some(s) = specs.iter().find(|s| s.needs_profile()) {
        return Err(Error::new(format!(
            "--policies: {s} needs a profile; kernel-replay compares plain policies"
        )));
    }
    if a.study.partition != Partition::Global {
        return Err(Error::new(
            "kernel-replay: the page cache is one global cache (--partition global)",
        ));
    }
    if a.tokens == Some(0) {
        return Err(Error::new("--tokens must be at least 1"));
    }
    let study = Study::new(&a.study, None, false)?;
    let econ = study.economics(None)?;
    let cut;
    let trace = match a.tokens {
        Some(n) => {
            cut = truncate_trace(&study.loaded.trace, study.include_prompt, n);
            &cut
        }
        None => &study.loaded.trace,
    };
    let gpu_layers = econ.as_ref().map_or(0, |e| e.placement.gpu_layers);
    let mut plan = ReplayPlan::new(trace, study.include_prompt, gpu_layers);
    // The policies model the kernel run, whose page cache holds the scaled experts: the
    // `linux` ratio follows the scaled bytes (what the kernel saw), not the model's.
    plan.expert_bytes = Some(a.expert_bytes);
    let budgets: Vec<(Option<f64>, usize)> = if !a.cache_experts.is_empty() {
        a.cache_experts.iter().map(|&c| (None, c)).collect()
    } else {
        let e = econ.as_ref().ok_or_else(|| {
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
    };
    if plan.per_token == 0 {
        return Err(Error::new(
            "kernel-replay: every MoE layer is in VRAM on this machine, nothing reaches the page cache (try --gpus 0 or --hw desktop-cpu)",
        ));
    }
    let quiet = a.study.input.quiet;
    let opts = KernelOptions {
        expert_bytes: a.expert_bytes,
        slices: a.slices,
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
        "kernel_experts",
        "page_model_experts",
    ]);
    per_token.header.extend(specs.iter().map(|s| s.to_string()));
    let n = plan.n_tokens;
    let mut noted = false;
    for &(ram_gib, cap) in &budgets {
        if !quiet {
            eprintln!(
                "moe-spill: kernel replay of {n} tokens at {cap} experts ({:.1} MiB of page cache) ...",
                (cap as u64 * a.expert_bytes) as f64 / (1u64 << 20) as f64
            );
        }
        let k = session.run(&plan, cap)?;
        if !quiet && !noted && k.window_kb * 1024 >= a.expert_bytes && a.advice != Advice::Willneed
        {
            noted = true;
            eprintln!(
                "moe-spill: note: the mmap read-around window ({} KiB) is as large as an expert: readahead dominates what the kernel reads (try --read-ahead-kb 128, a common NVMe value, or a larger --expert-bytes)",
                k.window_kb
            );
        }
        if k.global_reclaim_pages > 0 && !quiet {
            eprintln!(
                "moe-spill: warning: {} pages were reclaimed by global memory pressure during the run; the kernel numbers may be off",
                k.global_reclaim_pages
            );
        }
        let base = |source: String| CompareRow {
            trace: study.trace_label.clone(),
            model: study.machine.as_ref().map(|m| m.model.name.to_string()),
            expert_bytes: a.expert_bytes,
            model_expert_bytes: model_eb,
            slices: a.slices,
            advice: a.advice.name(),
            window_kb: k.window_kb,
            ram_gib,
            cache_experts: cap,
            source,
            tokens: n as u64,
            accesses: (n * plan.per_token) as u64,
            misses: 0.0,
            misses_per_token: 0.0,
            misses_per_token_p50: 0.0,
            misses_per_token_p99: 0.0,
            ssd_bytes_per_token: None,
            rel_err: None,
            resident_experts: 0.0,
            resident_overlap: None,
            read_bytes: None,
            major_faults_per_token: None,
            wall_ms_per_token: None,
            wall_ms_p50: None,
            wall_ms_p99: None,
            limit_bytes: None,
            overhead_bytes: None,
            global_reclaim_pages: None,
            seconds: None,
        };
        let kmiss = k.expert_misses();
        let kper = sorted(k.misses_per_token());
        let walls = sorted(k.wall_ns.iter().map(|&w| w as f64 / 1e6).collect());
        let mut kr = base("kernel".into());
        kr.misses = kmiss;
        kr.misses_per_token = kmiss / n as f64;
        kr.misses_per_token_p50 = pct(&kper, 50.0);
        kr.misses_per_token_p99 = pct(&kper, 99.0);
        kr.ssd_bytes_per_token = model_eb.map(|eb| kr.misses_per_token * eb as f64);
        kr.resident_experts = k.resident_experts();
        kr.read_bytes = Some(k.total_read_bytes());
        kr.major_faults_per_token = Some(k.major_faults.iter().sum::<u64>() as f64 / n as f64);
        kr.wall_ms_per_token = Some(walls.iter().sum::<f64>() / n as f64);
        kr.wall_ms_p50 = Some(pct(&walls, 50.0));
        kr.wall_ms_p99 = Some(pct(&walls, 99.0));
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
        let layout = Layout {
            n_ids: plan.n_ids,
            n_experts: plan.n_experts,
            expert_bytes: a.expert_bytes,
            slices: a.slices,
        };
        let pcfg = PageModelConfig::for_advice(layout, a.advice, k.window_kb);
        let pm = page_model(&plan.stream, plan.per_token, cap, &pcfg);
        let pmiss = pm.expert_misses();
        let pper = sorted(pm.misses_per_token());
        let mut pr = base(PAGE_MODEL.into());
        pr.misses = pmiss;
        pr.misses_per_token = pmiss / n as f64;
        pr.misses_per_token_p50 = pct(&pper, 50.0);
        pr.misses_per_token_p99 = pct(&pper, 99.0);
        pr.ssd_bytes_per_token = model_eb.map(|eb| pr.misses_per_token * eb as f64);
        pr.rel_err = (kmiss > 0.0).then(|| (pmiss - kmiss) / kmiss);
        pr.resident_experts = pm.resident_experts();
        pr.resident_overlap = overlap(&pm.resident_ids());
        pr.read_bytes = Some(pm.total_read_bytes());
        rows.push(pr);
        let mut policy_counts = Vec::new();
        for spec in &specs {
            let (c, res) = policy_run(&plan, spec, cap)?;
            let m: u64 = c.misses_per_token.iter().map(|&x| x as u64).sum();
            let per = sorted(c.misses_per_token.iter().map(|&x| x as f64).collect());
            let mut r = base(spec.to_string());
            r.misses = m as f64;
            r.misses_per_token = m as f64 / n as f64;
            r.misses_per_token_p50 = pct(&per, 50.0);
            r.misses_per_token_p99 = pct(&per, 99.0);
            r.ssd_bytes_per_token = model_eb.map(|eb| r.misses_per_token * eb as f64);
            r.rel_err = (kmiss > 0.0).then(|| (m as f64 - kmiss) / kmiss);
            r.resident_experts = res.iter().filter(|&&x| x).count() as f64;
            r.resident_overlap = overlap(&res);
            rows.push(r);
            policy_counts.push(c);
        }
        if a.per_token.is_some() {
            for t in 0..n {
                let mut cells = vec![
                    cap.to_string(),
                    t.to_string(),
                    k.read_bytes[t].to_string(),
                    k.major_faults[t].to_string(),
                    k.minor_faults[t].to_string(),
                    (k.wall_ns[t] / 1000).to_string(),
                    format!("{:.4}", k.read_bytes[t] as f64 / a.expert_bytes as f64),
                    format!(
                        "{:.4}",
                        (pm.read_pages[t] * pagemodel::PAGE) as f64 / a.expert_bytes as f64
                    ),
                ];
                cells.extend(
                    policy_counts
                        .iter()
                        .map(|c| c.misses_per_token[t].to_string()),
                );
                per_token.push(cells);
            }
        }
    }
    let csv = rows_csv(&rows);
    if let Some(p) = &a.output {
        write_atomic(p, |w| w.write_all(csv.as_bytes()))?;
    }
    if let Some(p) = &a.per_token {
        let text = per_token.to_csv();
        write_atomic(p, |w| w.write_all(text.as_bytes()))?;
    }
    let text = match OutputFormat::resolve(a.study.out.format, false) {
        OutputFormat::Csv => csv,
        OutputFormat::Json => serde_json::to_string_pretty(&rows).expect("json") + "\n",
        OutputFormat::Table => {
            let window = rows.first().map_or(0, |r| r.window_kb);
            format!(
                "{}\nkernel replay: {} tokens, experts of {} B ({} slice{}), advice {}, mmap read-around window {} KiB (device read_ahead_kb {}), file {}\n\n{}",
                crate::study::context_line(&study, econ.as_ref()),
                n,
                a.expert_bytes,
                a.slices,
                if a.slices == 1 { "" } else { "s" },
                a.advice.name(),
                window,
                session.device_read_ahead_kb().map_or("?".into(), |v| v.to_string()),
                session.file().display(),
                rows_table(&rows)
            )
        }
    };
    emit(&text, None)
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or(String::new(), |x| x.to_string())
}

/// Every column, one row per (budget, source).
pub fn rows_csv(rows: &[CompareRow]) -> String {
    let mut t = Table::new(&[
        "trace",
        "model",
        "expert_bytes",
        "model_expert_bytes",
        "slices",
        "advice",
        "window_kb",
        "ram_gib",
        "cache_experts",
        "source",
        "tokens",
        "accesses",
        "misses",
        "misses_per_token",
        "misses_per_token_p50",
        "misses_per_token_p99",
        "ssd_bytes_per_token",
        "rel_err",
        "resident_experts",
        "resident_overlap",
        "read_bytes",
        "major_faults_per_token",
        "wall_ms_per_token",
        "wall_ms_p50",
        "wall_ms_p99",
        "limit_bytes",
        "overhead_bytes",
        "global_reclaim_pages",
        "seconds",
    ]);
    for r in rows {
        t.push(vec![
            r.trace.clone(),
            r.model.clone().unwrap_or_default(),
            r.expert_bytes.to_string(),
            opt(r.model_expert_bytes),
            r.slices.to_string(),
            r.advice.to_string(),
            r.window_kb.to_string(),
            opt(r.ram_gib),
            r.cache_experts.to_string(),
            r.source.clone(),
            r.tokens.to_string(),
            r.accesses.to_string(),
            r.misses.to_string(),
            r.misses_per_token.to_string(),
            r.misses_per_token_p50.to_string(),
            r.misses_per_token_p99.to_string(),
            opt(r.ssd_bytes_per_token),
            opt(r.rel_err),
            r.resident_experts.to_string(),
            opt(r.resident_overlap),
            opt(r.read_bytes),
            opt(r.major_faults_per_token),
            opt(r.wall_ms_per_token),
            opt(r.wall_ms_p50),
            opt(r.wall_ms_p99),
            opt(r.limit_bytes),
            opt(r.overhead_bytes),
            opt(r.global_reclaim_pages),
            opt(r.seconds),
        ]);
    }
    t.to_csv()
}

/// The columns that matter, for people.
pub fn rows_table(rows: &[CompareRow]) -> String {
    let mib = |b: Option<f64>| b.map_or("-".into(), |v| fixed(v / (1u64 << 20) as f64, 1));
    let mut t = Table::new(&[
        "ram_gib",
        "cache_experts",
        "source",
        "misses/token",
        "p50",
        "p99",
        "ssd_MiB/token",
        "rel_err",
        "resident",
        "overlap",
        "majflt/token",
        "ms/token",
        "limit_MiB",
        "overhead_MiB",
    ]);
    for r in rows {
        t.push(vec![
            r.ram_gib.map_or("-".into(), |v| fixed(v, 1)),
            r.cache_experts.to_string(),
            r.source.clone(),
            fixed(r.misses_per_token, 2),
            fixed(r.misses_per_token_p50, 1),
            fixed(r.misses_per_token_p99, 1),
            mib(r.ssd_bytes_per_token),
            r.rel_err
                .map_or("-".into(), |e| format!("{:+.1}%", 100.0 * e)),
            fixed(r.resident_experts, 1),
            r.resident_overlap
                .map_or("-".into(), |o| format!("{:.1}%", 100.0 * o)),
            r.major_faults_per_token.map_or("-".into(), |v| fixed(v, 1)),
            r.wall_ms_per_token.map_or("-".into(), |v| fixed(v, 2)),
            mib(r.limit_bytes.map(|v| v as f64)),
            mib(r.overhead_bytes.map(|v| v as f64)),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("2MiB").unwrap(), 2 << 20);
        assert_eq!(parse_bytes("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert!(parse_bytes("2MB").is_err());
    }

    #[test]
    fn truncation_keeps_replayed_tokens() {
        use crate::trace::Geometry;
        let g = Geometry {
            layers: vec![1],
            n_experts: 4,
            top_k: 1,
        };
        let mut t = Trace::empty(g, true);
        for (i, p) in [true, false, false, true, false, false].iter().enumerate() {
            t.ids.push(i as u16 % 4);
            t.prompt.push(*p);
            if i == 2 {
                t.end_response();
            }
        }
        t.end_response();
        let c = truncate_trace(&t, false, 3);
        assert_eq!(c.prompt, vec![true, false, false, true, false]);
        assert_eq!(c.response_starts, vec![0, 3, 5]);
        let c = truncate_trace(&t, true, 3);
        assert_eq!(c.n_tokens(), 3);
        assert_eq!(c.response_starts, vec![0, 3]);
        assert_eq!(truncate_trace(&t, false, 99), t);
    }

    #[test]
    fn counts_round_the_running_sum() {
        let k = KernelRun {
            capacity: 0,
            expert_bytes: 100,
            budget_bytes: 0,
            overhead_bytes: 0,
            non_file_bytes: 0,
            limit_bytes: 0,
            window_kb: 0,
            read_bytes: vec![40, 40, 40, 40, 340],
            major_faults: vec![0; 5],
            minor_faults: vec![0; 5],
            wall_ns: vec![0; 5],
            resident_pages: vec![],
            pages_per_expert: 1,
            global_reclaim_pages: 0,
            peak_bytes: None,
            refaults: None,
            seconds: 0.0,
        };
        let c = k.counts(2);
        assert_eq!(c.misses_per_token, vec![0, 1, 0, 1, 3]);
        assert_eq!(c.misses_per_token.iter().sum::<u32>(), 5);
    }
}
