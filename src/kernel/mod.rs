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

use moe_spill_policies::registry::{BuildContext, PolicySpec};
use serde::{Deserialize, Serialize};

pub use cgroup::{own_memory_cgroup, MemCgroup, Version as CgroupVersion};
pub use child::{child_main, ChildSpec, SPEC_ENV};
pub use layout::{ExpertFileLayout, GgufLayout, ModelFile, HEADER_BYTES};
pub use pagemodel::{page_model, PageModelConfig, PageModelRun};

/// The `source` of the page-level model's rows.
pub const PAGE_MODEL: &str = "page-model";

use crate::error::{printable_path, Error, Result};
use crate::io_engine::FaultAdvice;
use crate::replay::{run_policy, Misses, Partition, ReplayPlan};
use crate::trace::Trace;

/// How the child advises the kernel about its mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// The I/O model's advice for the kernel's: one mapping for `--mmap-advice` and for
/// kernel-replay's predicted wall time, whose windows [`EngineChoice::engine`] gives.
///
/// [`EngineChoice::engine`]: crate::io_engine::EngineChoice::engine
impl From<Advice> for FaultAdvice {
    fn from(a: Advice) -> Self {
        match a {
            Advice::Normal => FaultAdvice::Normal,
            Advice::Random => FaultAdvice::Random,
            Advice::Sequential => FaultAdvice::Sequential,
            Advice::Willneed => FaultAdvice::Willneed,
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
    /// A GGUF file's layout instead (`expert_bytes` is then what one expert of the page
    /// cache counts for, for the budget).
    pub gguf: Option<GgufLayout>,
    pub advice: Advice,
    /// The file to write or reuse (None: a temporary file in the current directory,
    /// removed afterwards; pass a path to reuse one file across calls).
    pub file: Option<PathBuf>,
    /// Set the device's read_ahead_kb to this while the child opens and advises the
    /// file (the kernel copies it into the open file), restoring it right after.
    pub read_ahead_kb: Option<u64>,
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
            gguf: None,
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
    /// The device's read_ahead_kb the child opened the file with (the open file keeps
    /// it).
    pub read_ahead_kb: u64,
    /// The device's max_sectors_kb (the kernel's io_pages for it): MADV_WILLNEED reads
    /// at most max(this, read_ahead_kb) of a range per call. 0: not found.
    pub max_io_kb: u64,
    /// Per token: bytes read from storage, major and minor faults, wall time.
    pub read_bytes: Vec<u64>,
    pub major_faults: Vec<u64>,
    pub minor_faults: Vec<u64>,
    pub wall_ns: Vec<u64>,
    /// Read requests the file's device completed during each token (any process's);
    /// None where the device has no `stat`.
    pub device_reads: Option<Vec<u64>>,
    /// The thread's system CPU time per token (faults, reclaim, advice), ns.
    pub sys_ns: Vec<u64>,
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
    /// The run with its first `w` tokens left out of the per-token figures
    /// (`--warmup-tokens`: the cache saw them).
    pub fn counted_from(&self, w: usize) -> KernelRun {
        let skip = |v: &Vec<u64>| v[w.min(v.len())..].to_vec();
        KernelRun {
            read_bytes: skip(&self.read_bytes),
            major_faults: skip(&self.major_faults),
            minor_faults: skip(&self.minor_faults),
            wall_ns: skip(&self.wall_ns),
            device_reads: self.device_reads.as_ref().map(skip),
            sys_ns: skip(&self.sys_ns),
            ..self.clone()
        }
    }

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
    pub fn counts(&self, n_slots: usize) -> Misses {
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
        Misses {
            misses_per_step: misses_per_token,
            misses_per_slot: vec![0; n_slots],
            bytes_per_step: None,
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
    device_stat: Option<PathBuf>,
    max_io_kb: u64,
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

/// The device's max_sectors_kb under `path` (its queue; a partition's is its disk's),
/// which the kernel takes as the backing device's io_pages; 0 if not found.
fn max_io_kb(path: &Path) -> u64 {
    let Ok((maj, min)) = sys::dev_of(path) else {
        return 0;
    };
    ["queue", "../queue"]
        .iter()
        .find_map(|q| {
            std::fs::read_to_string(format!("/sys/dev/block/{maj}:{min}/{q}/max_sectors_kb"))
                .ok()
                .and_then(|t| t.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The sysfs `stat` of the block device under `path` (a partition's own).
fn device_stat(path: &Path) -> Option<PathBuf> {
    let (maj, min) = sys::dev_of(path).ok()?;
    let p = PathBuf::from(format!("/sys/dev/block/{maj}:{min}/stat"));
    p.is_file().then_some(p)
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
        if opts.gguf.is_none()
            && (!matches!(opts.slices, 1 | 3) || opts.expert_bytes < opts.slices as u64)
        {
            return Err(Error::new(
                "--slices must be 1 or 3 (and each slice at least a byte)",
            ));
        }
        if let Some(g) = &opts.gguf {
            if g.slots.len() * plan.n_experts != plan.n_ids {
                return Err(Error::new(format!(
                    "kernel-replay: the GGUF layout has {} MoE layers, the trace {}",
                    g.slots.len(),
                    plan.n_ids / plan.n_experts.max(1)
                )));
            }
        }
        // Fail before writing gigabytes when no cgroup can be made.
        MemCgroup::create(cgroup_number())?.remove()?;
        let layout = ExpertFileLayout {
            n_ids: plan.n_ids,
            n_experts: plan.n_experts,
            expert_bytes: opts.expert_bytes,
            slices: match &opts.gguf {
                Some(g) => g.slots.iter().map(|s| s.len()).max().unwrap_or(1) as u32,
                None => opts.slices,
            },
            gguf: opts.gguf.clone(),
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
        let max_io_kb = max_io_kb(&file.path);
        let device_stat = device_stat(&file.path);
        Ok(KernelSession {
            file,
            opts,
            child,
            bdi_read_ahead,
            device_stat,
            max_io_kb,
        })
    }

    pub fn file(&self) -> &Path {
        &self.file.path
    }

    /// Where every expert lies in the file.
    pub fn layout(&self) -> &ExpertFileLayout {
        &self.file.layout
    }

    /// The device's read_ahead_kb now.
    pub fn device_read_ahead_kb(&self) -> Option<u64> {
        let p = self.bdi_read_ahead.as_ref()?;
        std::fs::read_to_string(p).ok()?.trim().parse().ok()
    }

    /// One kernel replay of `plan` with page cache for `capacity` experts.
    pub fn measure(&mut self, plan: &ReplayPlan, capacity: usize) -> Result<KernelRun> {
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
            device_stat: self.device_stat.clone(),
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
        let [_, overhead, _, _, window_kb, read_ahead_kb] = words.0;
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
            read_ahead_kb,
            max_io_kb: self.max_io_kb,
            read_bytes: Vec::with_capacity(n),
            major_faults: Vec::with_capacity(n),
            minor_faults: Vec::with_capacity(n),
            wall_ns: Vec::with_capacity(n),
            device_reads: Some(Vec::with_capacity(n)),
            sys_ns: Vec::with_capacity(n),
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
            run.sys_ns.push(t[5]);
            if t[4] == child::NO_COUNT {
                run.device_reads = None;
            }
            if let Some(d) = &mut run.device_reads {
                d.push(t[4]);
            }
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
    ) -> Result<(([u64; child::READY_WORDS], [u64; 3]), Vec<u64>)> {
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
                printable_path(&self.child.program)
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
            let mut ready = [0u64; child::READY_WORDS];
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
                printable_path(&cg.dir)
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
    KernelSession::new(plan, opts.clone())?.measure(plan, capacity_experts)
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

/// Replay `spec` at `capacity`: misses per token (run_policy) and the final resident set.
pub fn policy_run(
    plan: &ReplayPlan,
    spec: &PolicySpec,
    capacity: usize,
) -> Result<(Misses, Vec<bool>)> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
            read_ahead_kb: 0,
            max_io_kb: 0,
            read_bytes: vec![40, 40, 40, 40, 340],
            major_faults: vec![0; 5],
            minor_faults: vec![0; 5],
            wall_ns: vec![0; 5],
            device_reads: None,
            sys_ns: vec![0; 5],
            resident_pages: vec![],
            pages_per_expert: 1,
            global_reclaim_pages: 0,
            peak_bytes: None,
            refaults: None,
            seconds: 0.0,
        };
        let c = k.counts(2);
        assert_eq!(c.misses_per_step, vec![0, 1, 0, 1, 3]);
        assert_eq!(c.misses_per_step.iter().sum::<u32>(), 5);
    }
}
