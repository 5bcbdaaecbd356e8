//! Ground truth against the real page cache: a small kernel replay (a memory cgroup, a
//! laid-out file, a child touching experts through mmap) compared with the simulator's
//! `linux` policy and the page-level model, and `sweep --kernel` end to end.
//!
//! Needs Linux and permission to create a memory cgroup below this process's own (root
//! with cgroup v1, or a delegated v2 cgroup). When that is impossible the test prints a
//! line starting with `KERNEL-REPLAY TEST SKIPPED` and passes, unless it runs as root or
//! MOE_SPILL_REQUIRE_KERNEL=1 is set (CI runs as root): then it fails. Each test writes a
//! 64 MiB file under CARGO_TARGET_TMPDIR (a disk, not tmpfs) and removes it; they take a
//! lock, so their kernel runs never overlap.
//!
//! The test binary is also the measured child: `kernel_replay_child_entry` runs
//! `moe_spill::kernel::child_main` when the parent sets MOE_SPILL_KERNEL_CHILD.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use moe_spill::kernel::{
    self, page_model, Advice, ChildCommand, ExpertFileLayout, KernelOptions, MemCgroup,
    PageModelConfig, SPEC_ENV,
};
use moe_spill::replay::{run_policy, Partition, ReplayPlan};
use moe_spill::trace::{Geometry, Trace};
use moe_spill_policies::registry::PolicySpec;

/// Entry point of the child process (a no-op in a normal test run).
#[test]
fn kernel_replay_child_entry() {
    if std::env::var_os(SPEC_ENV).is_none() {
        return;
    }
    let code = match kernel::child_main() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("moe-spill: {e}");
            2
        }
    };
    std::process::exit(code);
}

/// 8 MoE layers x 32 experts, top-4: skewed popularity that drifts, like routing.
fn synthetic(n_tokens: usize) -> Trace {
    let g = Geometry {
        layers: (1..=8).collect(),
        n_experts: 32,
        top_k: 4,
    };
    let mut t = Trace::empty(g, true);
    use rand_xoshiro::rand_core::{RngCore, SeedableRng};
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(0x2545_F491_4F6C_DD1D);
    let mut next = move || rng.next_u64();
    for tok in 0..n_tokens {
        for slot in 0..8u16 {
            let mut chosen: Vec<u16> = Vec::with_capacity(4);
            while chosen.len() < 4 {
                // Zipf-like rank: the product of two uniforms favours small ranks.
                let r = (next() % 32) * (next() % 32) / 32;
                let e = ((r as usize + tok / 40 + slot as usize * 5) % 32) as u16;
                if !chosen.contains(&e) {
                    chosen.push(e);
                }
            }
            t.ids.extend(chosen.iter().map(|&e| slot * 32 + e));
        }
        t.prompt.push(false);
        if tok % 100 == 99 {
            t.end_response();
        }
    }
    t.end_response();
    t
}

/// A run of moe-spill that must succeed.
fn succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "moe-spill failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CSV without quoted fields: its header and rows.
fn csv_table(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = text.lines();
    let head = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    (head, rows)
}

/// The column `name` of a header.
fn col(head: &[String], name: &str) -> usize {
    head.iter().position(|h| h == name).unwrap()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no side effects.
    unsafe { libc::geteuid() == 0 }
}

fn must_run() -> bool {
    std::env::var_os("MOE_SPILL_REQUIRE_KERNEL").is_some_and(|v| v != "0") || is_root()
}

/// Kernel runs one at a time (they share the disk and the parent cgroup).
static SERIAL: Mutex<()> = Mutex::new(());

/// Whether a kernel replay can run here. If not, say so loudly (straight to fd 2, past
/// libtest's capture) and fail where it must run.
fn kernel_available() -> bool {
    let skip = |why: String| {
        let _ = writeln!(std::io::stderr(), "KERNEL-REPLAY TEST SKIPPED: {why}");
        assert!(
            !must_run(),
            "kernel replay required here (root or MOE_SPILL_REQUIRE_KERNEL=1) but: {why}"
        );
        false
    };
    if !cfg!(target_os = "linux") {
        return skip("not Linux".into());
    }
    match MemCgroup::create(0) {
        Ok(mut cg) => {
            cg.remove().expect("remove the probe cgroup");
            true
        }
        Err(e) => skip(e.to_string()),
    }
}

/// No cgroup of this process is left.
fn assert_no_cgroups_left() {
    let (parent, _) = kernel::own_memory_cgroup().unwrap();
    let prefix = format!("moe-spill-kernel-{}-", std::process::id());
    let left: Vec<_> = std::fs::read_dir(&parent)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}

const EXPERT_BYTES: u64 = 256 << 10;
const CAPACITY: usize = 96; // of 256 experts: 24 MiB of page cache
/// `linux` and the page model against the kernel with exact reads. Measured in 7 runs on
/// the project machine (2 vCPU, kernel 6.18, ext4 on virtio): the kernel read 4022-4185
/// expert-equivalents (run-to-run noise of the memcg's per-CPU charge batches, a few
/// experts' worth of budget); `linux` 4036 misses, -3.6% to +0.4%; the page model
/// 4094.8, -2.2% to +1.8%. (The earlier `linux-eager` model: -5% to -9%.)
const LINUX_TOLERANCE: f64 = 0.05;

/// The memcg charges page cache in per-CPU batches of 64 pages (one 256 KiB expert) that
/// its usage counter includes, so the budget the kernel really gets drifts by up to an
/// expert per CPU (2 on the project machine, where the drift measured 1). The exact checks
/// compare the kernel with the model's range over these capacities.
fn charge_slack() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

/// What one kernel replay measured, next to the simulator's answers.
struct Replay {
    /// Expert-equivalents the kernel read.
    kernel: f64,
    /// The policy's misses at the budget, and their range over `budgets()`.
    policy: u64,
    policy_range: (f64, f64),
    /// The page model's expert-equivalents at the budget, and their range likewise.
    page: f64,
    page_range: (f64, f64),
}

/// Whether the kernel's `kernel` expert-equivalents lie in `range`, give or take `rel`
/// of themselves and one expert.
fn within(kernel: f64, range: (f64, f64), rel: f64) -> bool {
    let slack = rel * kernel + 1.0;
    range.0 - slack <= kernel && kernel <= range.1 + slack
}

/// The policy's misses on the plan's accesses at `capacity`.
fn policy_misses(plan: &ReplayPlan, policy: &str, capacity: usize) -> u64 {
    let spec = PolicySpec::parse(policy).unwrap();
    let counts = run_policy(plan, &spec, capacity, Partition::Global, None, 0).unwrap();
    counts.misses_per_step.iter().map(|&m| m as u64).sum()
}

/// The capacities within charge_slack() of CAPACITY.
fn budgets() -> std::ops::RangeInclusive<usize> {
    CAPACITY - charge_slack()..=CAPACITY + charge_slack()
}

/// The smallest and largest of `at(c)` over `budgets()`.
fn range_over_budgets(at: impl Fn(usize) -> f64) -> (f64, f64) {
    budgets()
        .map(at)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// The range of the policy's misses over `budgets()`.
fn policy_range(plan: &ReplayPlan, policy: &str) -> (f64, f64) {
    range_over_budgets(|c| policy_misses(plan, policy, c) as f64)
}

/// Kernel replay of the first `tokens` tokens at CAPACITY, and `policy` and the page
/// model on the same accesses.
fn replay(trace: &Trace, tokens: usize, advice: Advice, policy: &str) -> Replay {
    let trace = kernel::truncate_trace(trace, false, tokens);
    let mut plan = ReplayPlan::new(&trace, false, 0);
    plan.expert_bytes = Some(EXPERT_BYTES);
    let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kernel-test-{}.bin", std::process::id()));
    let opts = KernelOptions {
        expert_bytes: EXPERT_BYTES,
        slices: 1,
        gguf: None,
        advice,
        file: Some(file.clone()),
        read_ahead_kb: None,
        child: Some(ChildCommand {
            program: std::env::current_exe().expect("test binary"),
            args: vec![
                "kernel_replay_child_entry".into(),
                "--exact".into(),
                "--nocapture".into(),
                "--test-threads=1".into(),
            ],
        }),
        quiet: true,
    };
    let started = std::time::Instant::now();
    let run = kernel::kernel_misses(&plan, CAPACITY, &opts);
    let _ = std::fs::remove_file(&file);
    let run = run.expect("kernel replay");
    let sim = policy_misses(&plan, policy, CAPACITY);
    let policy_range = policy_range(&plan, policy);
    let kern = run.expert_misses();
    let layout = ExpertFileLayout {
        n_ids: plan.n_ids,
        n_experts: plan.n_experts,
        expert_bytes: EXPERT_BYTES,
        slices: 1,
        gguf: None,
    };
    let pcfg = PageModelConfig::for_advice(layout, advice, run.window_kb)
        .with_io_limit(run.max_io_kb, run.read_ahead_kb);
    let page_at =
        |capacity| page_model(&plan.stream, plan.per_token, capacity, &pcfg).expert_misses();
    let page = page_at(CAPACITY);
    let page_range = range_over_budgets(page_at);
    eprintln!(
        "kernel replay ({advice:?}): {} accesses, kernel {kern:.1} expert-equivalents read, {policy} {sim} misses ({:+.2}%; {}..={} at {}..={} experts), page model {page:.1} ({:+.2}%; {:.1}..={:.1}), {:.1} experts resident, limit {} B, overhead {} B, {:.1} s",
        plan.stream.len(),
        100.0 * (sim as f64 - kern) / kern,
        policy_range.0,
        policy_range.1,
        budgets().start(),
        budgets().end(),
        100.0 * (page - kern) / kern,
        page_range.0,
        page_range.1,
        run.resident_experts(),
        run.limit_bytes,
        run.overhead_bytes,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(run.read_bytes.len(), tokens);
    assert_eq!(
        run.global_reclaim_pages, 0,
        "global memory pressure reclaimed pages during the run: the numbers are not the budget's"
    );
    // The limit leaves the page cache exactly the budget: what stays resident at the end
    // is the capacity, give or take the memcg's per-CPU charge batching.
    let resident = run.resident_experts();
    assert!(
        (resident - CAPACITY as f64).abs() <= charge_slack() as f64,
        "{resident:.2} experts resident at the end, budget {CAPACITY}"
    );
    // The device completed at least the requests the bytes need at its largest size
    // (more when other processes read from it too).
    if let Some(d) = &run.device_reads {
        let largest = run.max_io_kb.max(4) * 1024;
        let requests: u64 = d.iter().sum();
        assert!(
            requests >= run.total_read_bytes() / largest,
            "{requests} device reads for {} bytes",
            run.total_read_bytes()
        );
    }
    // The first token's 32 accesses are cold misses, read exactly.
    let first = run.read_bytes[0] as f64 / EXPERT_BYTES as f64;
    assert!(
        (first - 32.0).abs() < 0.01,
        "first token read {first} experts"
    );
    Replay {
        kernel: kern,
        policy: sim,
        policy_range,
        page,
        page_range,
    }
}

#[test]
fn kernel_bytes_match_the_simulator() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !kernel_available() {
        return;
    }
    let trace = synthetic(300);

    // MADV_RANDOM makes the kernel ignore page-table references to the mapping
    // (vma_has_recency), and there is no readahead: the page cache is exactly FIFO.
    // This pins down the machinery (budget, accounting, file layout) to a few pages. The
    // page model has no references and no readahead here either: FIFO over pages.
    // FIFO is exact up to the budget's drift by the charge batches: the kernel reads what
    // FIFO misses at a capacity within charge_slack() experts of the budget. FIFO misses
    // 1531 at 94 down to 1419 at 98 experts (1495 at 96); the kernel read 1472.9 here
    // with 97.2 experts resident.
    let r = replay(&trace, 100, Advice::Random, "fifo");
    let fifo = r.policy_range;
    assert!(
        within(r.kernel, fifo, 0.002),
        "random advice: kernel {:.2} expert-equivalents vs fifo {}..={} within {} experts of the budget",
        r.kernel,
        fifo.0,
        fifo.1,
        charge_slack()
    );
    assert!(
        within(r.kernel, r.page_range, 0.002),
        "random advice: kernel {:.2} expert-equivalents vs page model {:.2}..={:.2}",
        r.kernel,
        r.page_range.0,
        r.page_range.1
    );

    // Per-expert WILLNEED reads exactly the missing experts and keeps recency: the
    // kernel's two lists, with reference bits sampled when reclaim reaches a page.
    // The budget drifts by the charge batches here too: the kernel is compared with the
    // policy at the capacities within charge_slack() experts of the budget (it read 5.1
    // and 5.3 % more than the policy at the budget itself in two runs, inside that range).
    let r = replay(&trace, 300, Advice::Willneed, "linux");
    assert!(
        within(r.kernel, r.policy_range, LINUX_TOLERANCE),
        "linux policy {} misses ({:.0}..={:.0} within {} experts of the budget) vs kernel {:.1} expert-equivalents (tolerance {}%)",
        r.policy,
        r.policy_range.0,
        r.policy_range.1,
        charge_slack(),
        r.kernel,
        100.0 * LINUX_TOLERANCE
    );
    let rel = (r.page - r.kernel) / r.kernel;
    assert!(
        rel.abs() <= LINUX_TOLERANCE,
        "page model {:.1} vs kernel {:.1} expert-equivalents: {:+.1}% (tolerance {}%)",
        r.page,
        r.kernel,
        100.0 * rel,
        100.0 * LINUX_TOLERANCE
    );
    assert_no_cgroups_left();
}

/// Removes its files when the test ends, passed or not.
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `sweep --kernel` through the real binary: a `kernel` row at every budget, equal to
/// `fifo` under MADV_RANDOM (see above), the cgroups removed; and as an unprivileged
/// user, a one-line error before anything runs.
#[test]
fn sweep_adds_the_kernel_at_every_budget() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !kernel_available() {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let pid = std::process::id();
    let trace_path = dir.join(format!("kernel-sweep-{pid}.mst"));
    let file = dir.join(format!("kernel-sweep-{pid}.bin"));
    let _cleanup = RemoveOnDrop(vec![trace_path.clone(), file.clone()]);
    let trace = kernel::truncate_trace(&synthetic(300), false, 100);
    moe_spill::report::write_trace(&trace, &trace_path).unwrap();
    let args = |extra: &[&str]| {
        let mut v: Vec<String> = vec![
            trace_path.to_string_lossy().into_owned(),
            "--cache-experts".into(),
            "0..96".into(),
            "--points".into(),
            "2".into(),
            "--policies".into(),
            "fifo,linux".into(),
            "--kernel".into(),
            "--kernel-expert-bytes".into(),
            "256KiB".into(),
            "--kernel-advice".into(),
            "random".into(),
            "--kernel-file".into(),
            file.to_string_lossy().into_owned(),
            "--format".into(),
            "csv".into(),
            "-q".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let bin = env!("CARGO_BIN_EXE_moe-spill");
    let out = Command::new(bin)
        .arg("sweep")
        .args(args(&[]))
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sweep --kernel failed: {stderr}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |n: &str| head.iter().position(|h| *h == n).unwrap();
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    let get = |policy: &str, cap: &str| -> f64 {
        let r = rows
            .iter()
            .find(|r| r[col("policy")] == policy && r[col("cache_experts")] == cap)
            .unwrap_or_else(|| panic!("no {policy} row at {cap} experts in\n{text}"));
        r[col("misses")].parse().unwrap()
    };
    // Budgets 0 and 96 experts: the kernel is measured where there is a cache.
    assert_eq!(rows.len(), 2 + 2 + 1, "{text}");
    assert!(!rows
        .iter()
        .any(|r| r[col("policy")] == "kernel" && r[col("cache_experts")] == "0"));
    // With the moe-spill binary as the child the kernel read 1537 (= fifo) or 1546
    // expert-equivalents in the runs here: the budget drifts by the memcg's per-CPU
    // charge batches, as in kernel_bytes_match_the_simulator, so the kernel must read
    // what FIFO misses within charge_slack() experts of the budget.
    let (k, f) = (get("kernel", "96"), get("fifo", "96"));
    let plan = ReplayPlan::new(&trace, false, 0);
    assert_eq!(policy_misses(&plan, "fifo", CAPACITY) as f64, f);
    let (lo, hi) = policy_range(&plan, "fifo");
    eprintln!(
        "sweep --kernel at 96 experts: kernel {k}, fifo {f} ({lo}..={hi} within {} experts)",
        charge_slack()
    );
    assert!(
        within(k, (lo, hi), 0.002),
        "at 96 experts: kernel {k} vs fifo {lo}..={hi} within {} experts",
        charge_slack()
    );
    // The kernel rows sit after the policies of their budget set.
    assert_eq!(rows.last().unwrap()[col("policy")], "kernel");
    assert_no_cgroups_left();

    // Without permission for a cgroup (an unprivileged user), the sweep refuses at once,
    // in one line, before writing the file.
    if is_root() && std::path::Path::new("/usr/bin/setpriv").exists() {
        let out = Command::new("/usr/bin/setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                bin,
                "sweep",
            ])
            .args(args(&[]))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.starts_with("moe-spill: --kernel: cannot create a memory cgroup in ")
                && err.contains("kernel-replay needs root or a delegated cgroup")
                && err.trim_end().lines().count() == 1,
            "{err}"
        );
        assert!(
            !file.exists(),
            "the file was written before the cgroup check"
        );
    } else {
        let _ = writeln!(
            std::io::stderr(),
            "note: the no-permission path of sweep --kernel is checked only as root with setpriv"
        );
    }
}

/// The sysfs read_ahead_kb of the device holding `path` (None: not a block device's
/// file system, e.g. tmpfs or overlay).
fn device_read_ahead(path: &std::path::Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let p = PathBuf::from(format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    ));
    p.is_file().then_some(p)
}

/// `kernel-replay --read-ahead-kb KB` through the real binary: the child opens the file
/// with the device's read_ahead_kb set to KB, so under POSIX_FADV_SEQUENTIAL the run
/// reports a read-around window of 2 x KB, and the device gets its own value back.
#[test]
fn kernel_replay_sets_the_device_read_ahead() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !kernel_available() {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let Some(sysfs) = device_read_ahead(&dir) else {
        let _ = writeln!(
            std::io::stderr(),
            "KERNEL-REPLAY TEST SKIPPED: {} is on no block device with a read_ahead_kb",
            dir.display()
        );
        return;
    };
    let read = || -> u64 {
        let s = std::fs::read_to_string(&sysfs).unwrap();
        s.trim().parse().unwrap()
    };
    let before = read();
    // A value the device does not already have, so the window tells who set it.
    let kb: u64 = if before == 64 { 96 } else { 64 };
    let pid = std::process::id();
    let trace_path = dir.join(format!("kernel-ra-{pid}.mst"));
    let file = dir.join(format!("kernel-ra-{pid}.bin"));
    let _cleanup = RemoveOnDrop(vec![trace_path.clone(), file.clone()]);
    let trace = kernel::truncate_trace(&synthetic(20), false, 20);
    moe_spill::report::write_trace(&trace, &trace_path).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_moe-spill"))
        .arg("kernel-replay")
        .arg(&trace_path)
        .args(["--cache-experts", "96", "--expert-bytes", "256KiB"])
        .args(["--advice", "sequential", "--policies", "fifo"])
        .args(["--read-ahead-kb", &kb.to_string()])
        .arg("--file")
        .arg(&file)
        .args(["--format", "csv", "-q"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kernel-replay failed: {stderr}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let window = head.iter().position(|h| *h == "window_kb").unwrap();
    let windows: Vec<&str> = lines.map(|l| l.split(',').nth(window).unwrap()).collect();
    assert!(!windows.is_empty(), "{text}");
    assert!(
        windows.iter().all(|w| *w == (2 * kb).to_string()),
        "--read-ahead-kb {kb} under sequential advice: windows {windows:?}, want {} KiB (the device had {before})",
        2 * kb
    );
    assert_eq!(
        read(),
        before,
        "the device's read_ahead_kb was not restored"
    );
    assert_no_cgroups_left();
}

/// `kernel-replay --warmup-tokens W`: every row counts the tokens after the first W (the
/// cache still saw them), as `simulate` does; the per-token CSV keeps every token. A
/// warm-up as long as the replay is refused.
#[test]
fn kernel_replay_leaves_the_warmup_tokens_out() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !kernel_available() {
        return;
    }
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let trace_path = d.path().join("t.mst");
    let trace = kernel::truncate_trace(&synthetic(30), false, 30);
    moe_spill::report::write_trace(&trace, &trace_path).unwrap();
    let (csv, per_token) = (d.path().join("r.csv"), d.path().join("t.csv"));
    let replay = |warmup: &str| {
        Command::new(env!("CARGO_BIN_EXE_moe-spill"))
            .arg("kernel-replay")
            .arg(&trace_path)
            .args(["--cache-experts", "96", "--expert-bytes", "256KiB"])
            .args(["--policies", "lru", "--warmup-tokens", warmup, "-q"])
            .arg("-o")
            .arg(&csv)
            .arg("--per-token")
            .arg(&per_token)
            .arg("--file")
            .arg(d.path().join("m.bin"))
            .output()
            .unwrap()
    };
    succeeded(&replay("10"));
    let table = |p: &PathBuf| csv_table(&std::fs::read_to_string(p).unwrap());
    let (h, rows) = table(&csv);
    let (ph, pt) = table(&per_token);
    assert_eq!(pt.len(), 30, "every token in the per-token CSV");
    let sum_after = |c: &str| -> f64 {
        pt[10..]
            .iter()
            .map(|r| r[col(&ph, c)].parse::<f64>().unwrap())
            .sum()
    };
    for r in &rows {
        assert_eq!(r[col(&h, "tokens")], "20", "{r:?}");
    }
    let row = |source: &str| {
        rows.iter()
            .find(|r| r[col(&h, "source")] == source)
            .unwrap()
    };
    let kernel = row("kernel");
    assert_eq!(
        kernel[col(&h, "read_bytes")].parse::<f64>().unwrap(),
        sum_after("read_bytes")
    );
    let lru: f64 = row("lru")[col(&h, "misses")].parse().unwrap();
    assert_eq!(lru, sum_after("lru"));
    // The page model's bytes (expert-equivalents to 4 decimals per token) and the
    // kernel's wall time (whole microseconds per token) over the same tokens.
    let page: f64 = row(PAGE_MODEL_ROW)[col(&h, "read_bytes")].parse().unwrap();
    let want = sum_after("page_model_experts") * 256.0 * 1024.0;
    assert!((page - want).abs() <= 20.0 * 26.3, "{page} vs {want}");
    let wall: f64 = kernel[col(&h, "wall_ms_per_token")].parse().unwrap();
    let want = sum_after("wall_us") / 20.0 / 1e3;
    assert!((wall - want).abs() <= 1e-3, "{wall} vs {want}");
    let out = replay("30");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--warmup-tokens 30 leaves no token to count"));
    // With --tokens the replay is the shorter: a warm-up as long as it is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_moe-spill"))
        .arg("kernel-replay")
        .arg(&trace_path)
        .args([
            "--cache-experts",
            "96",
            "--tokens",
            "10",
            "--warmup-tokens",
            "10",
            "-q",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--warmup-tokens 10 leaves no token to count (the run has 10)"));
    assert_no_cgroups_left();
}

/// `kernel-replay --phase all` replays the prompt tokens one by one as the kernel run
/// faults them (it has no --ubatch): its policy rows equal `simulate --ubatch 1`'s.
#[test]
fn kernel_replay_takes_prompt_tokens_one_by_one() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !kernel_available() {
        return;
    }
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let trace_path = d.path().join("t.mst");
    let mut trace = kernel::truncate_trace(&synthetic(30), false, 30);
    trace.prompt[..12].fill(true);
    moe_spill::report::write_trace(&trace, &trace_path).unwrap();
    let csv = d.path().join("r.csv");
    let out = Command::new(env!("CARGO_BIN_EXE_moe-spill"))
        .arg("kernel-replay")
        .arg(&trace_path)
        .args(["--phase", "all", "--cache-experts", "96"])
        .args(["--expert-bytes", "256KiB", "--policies", "lru", "-q", "-o"])
        .arg(&csv)
        .arg("--file")
        .arg(d.path().join("m.bin"))
        .output()
        .unwrap();
    succeeded(&out);
    let (h, rows) = csv_table(&std::fs::read_to_string(&csv).unwrap());
    let lru = rows.iter().find(|r| r[col(&h, "source")] == "lru").unwrap();
    assert_eq!(lru[col(&h, "tokens")], "30");
    let sim = Command::new(env!("CARGO_BIN_EXE_moe-spill"))
        .arg("simulate")
        .arg(&trace_path)
        .args(["--phase", "all", "--ubatch", "1", "--cache-experts", "96"])
        .args(["--policy", "lru", "--format", "csv", "-q"])
        .output()
        .unwrap();
    succeeded(&sim);
    let (sh, srows) = csv_table(&String::from_utf8(sim.stdout).unwrap());
    assert_eq!(lru[col(&h, "misses")], srows[0][col(&sh, "misses")]);
    assert_no_cgroups_left();
}

/// `sweep --kernel` without --kernel-file lays out a temporary model file in the current
/// directory, which lives until the kernel rows are done: a signal during the policies
/// (here as soon as the file is in place) removes it, as it removes `-o` temporaries.
#[test]
fn a_signal_removes_the_temporary_model_file() {
    use std::os::unix::process::ExitStatusExt;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !kernel_available() {
        return;
    }
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let trace_path = d.path().join("t.mst");
    moe_spill::report::write_trace(&synthetic(100_000), &trace_path).unwrap();
    let ours = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".moe-spill-kernel") || n.ends_with(".tmp"))
            .collect()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_moe-spill"))
        .args([
            "sweep",
            "t.mst",
            "--cache-experts",
            "0..96",
            "--points",
            "40",
        ])
        .args(["--policies", "clock,arc,linux", "--kernel"])
        .args(["--kernel-expert-bytes", "256KiB", "-q", "-o", "r.csv"])
        .current_dir(d.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !ours(d.path()).iter().any(|n| n.ends_with(".bin")) {
        assert!(child.try_wait().unwrap().is_none(), "ended before its file");
        assert!(start.elapsed().as_secs() < 300, "no model file");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // SAFETY: a signal to our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
    assert_eq!(ours(d.path()), Vec::<String>::new());
    assert!(!d.path().join("r.csv").exists());
    assert_no_cgroups_left();
}

/// The page model under llama.cpp's advice on a shape other than the recording's:
/// `moe-spill synth` OLMoE (16 MoE layers x 64 experts) routed top-2, 1 MiB contiguous
/// experts, POSIX_FADV_SEQUENTIAL with read_ahead_kb 128 (a 256 KiB read-around window),
/// 150 tokens, at 30 % of the experts (scripts/pagemodel_check.sh runs the whole table,
/// docs/kernel.md). The kernel reads readahead windows, far more than the experts the
/// `linux` policy misses; the page model reads them too.
#[test]
fn page_model_follows_readahead_on_a_synthetic_shape() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !kernel_available() {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    if device_read_ahead(&dir).is_none() {
        let _ = writeln!(
            std::io::stderr(),
            "KERNEL-REPLAY TEST SKIPPED: {} is on no block device with a read_ahead_kb",
            dir.display()
        );
        return;
    }
    let pid = std::process::id();
    let trace_path = dir.join(format!("kernel-pm-{pid}.mst"));
    let file = dir.join(format!("kernel-pm-{pid}.bin"));
    let csv = dir.join(format!("kernel-pm-{pid}.csv"));
    let _cleanup = RemoveOnDrop(vec![trace_path.clone(), file.clone(), csv.clone()]);
    let bin = env!("CARGO_BIN_EXE_moe-spill");
    let out = Command::new(bin)
        .args(["synth", "--model", "olmoe-1b-7b", "--top-k", "2"])
        .args(["--tokens", "150", "--responses", "1", "-q", "-o"])
        .arg(&trace_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin)
        .arg("kernel-replay")
        .arg(&trace_path)
        .args(["--hw", "desktop-cpu", "--cache-experts", "307"])
        .args(["--expert-bytes", "1MiB", "--advice", "sequential"])
        .args(["--read-ahead-kb", "128", "--policies", "linux", "-q", "-o"])
        .arg(&csv)
        .arg("--file")
        .arg(&file)
        .output()
        .unwrap();
    succeeded(&out);
    let text = std::fs::read_to_string(&csv).unwrap();
    let (head, rows) = csv_table(&text);
    let get = |source: &str, c: &str| -> f64 {
        let r = rows
            .iter()
            .find(|r| r[col(&head, "source")] == source)
            .unwrap_or_else(|| panic!("no {source} row in\n{text}"));
        r[col(&head, c)].parse().unwrap()
    };
    let kern = get("kernel", "misses_per_token");
    let (page, linux) = (get(PAGE_MODEL_ROW, "rel_err"), get("linux", "rel_err"));
    eprintln!(
        "readahead on synthetic OLMoE top-2 at 307 experts: kernel {kern:.2} expert-equivalents per token, page model {:+.1}%, linux {:+.1}%",
        100.0 * page,
        100.0 * linux
    );
    assert_eq!(get("kernel", "global_reclaim_pages"), 0.0, "{text}");
    assert!(
        page.abs() <= PAGE_MODEL_READAHEAD_TOLERANCE,
        "page model {:+.1}% from the kernel (tolerance {}%)\n{text}",
        100.0 * page,
        100.0 * PAGE_MODEL_READAHEAD_TOLERANCE
    );
    // The windows the `linux` policy cannot see: it misses far fewer experts.
    assert!(linux < -0.2, "linux {:+.1}%\n{text}", 100.0 * linux);
    assert_no_cgroups_left();
}

const PAGE_MODEL_ROW: &str = kernel::PAGE_MODEL;
/// The page model against the kernel under readahead, the goal of docs/kernel.md.
/// Measured in 4 runs on the project machine: kernel 18.06-18.31 expert-equivalents per
/// token, page model +1.4% to +2.8%, `linux` -38.4% to -39.2%. (The page model without
/// the kernel's folio orders, alignment and per-folio references: -9.6% at 300 tokens.)
const PAGE_MODEL_READAHEAD_TOLERANCE: f64 = 0.05;
