//! Replay benchmarks (an example, run explicitly; numbers, not assertions):
//!
//!     cargo run --release --example bench_replay
//!
//! On the real DeepSeek-V2-Lite recording (14.7 M accesses): each policy through
//! `run_policy` at three capacities, LRU at all 33 sweep capacities from one
//! stack-distance pass, and the batched stream of four responses in lock step (built,
//! then replayed through LRU), timed in-process (trace loading excluded).

use std::path::PathBuf;
use std::time::Instant;

use moe_spill::format;
use moe_spill::replay::{lru_all, run_policy, Batching, Partition, ReplayPlan};
use moe_spill_policies::registry::PolicySpec;

fn trace() -> moe_spill::trace::Trace {
    let csv =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/traces/deepseek-v2-lite/csv");
    format::load(&[csv], None, None).expect("the shared DeepSeek-V2-Lite recording")
}

fn main() {
    let t = trace();
    let mut plan = ReplayPlan::new(&t, false, 0);
    // As `sweep --hw desktop-cpu` replays it: `linux` takes its ratio from the real
    // expert size (IQ4_XS/IQ4_NL, 4,685,824 B): 3, 5 and 7 at the capacities below.
    plan.expert_bytes = Some(4_685_824);
    let n = plan.stream.len() as f64;
    let caps = [416usize, 832, 1248];
    println!(
        "{} accesses; M accesses/s at capacities {:?}",
        plan.stream.len(),
        caps
    );
    for spec in [
        "lru",
        "fifo",
        "clock",
        "arc",
        "opt",
        "lfu",
        "sieve",
        "s3fifo",
        "linux",
        "linux-eager",
        "pinned:3",
        "pin-hot:100",
    ] {
        let s = PolicySpec::parse(spec).unwrap();
        let profile = plan.profile();
        let mut line = format!("{spec:>12}");
        for &c in &caps {
            let t0 = Instant::now();
            let r = run_policy(&plan, &s, c, Partition::Global, Some(&profile), 0).unwrap();
            let dt = t0.elapsed().as_secs_f64();
            std::hint::black_box(r);
            line += &format!("  {:7.1}", n / dt / 1e6);
        }
        println!("{line}");
    }
    let lru = PolicySpec::parse("lru").unwrap();
    let t0 = Instant::now();
    std::hint::black_box(run_policy(&plan, &lru, 832, Partition::Global, None, 0).unwrap());
    let one = t0.elapsed().as_secs_f64();
    let all: Vec<usize> = (0..33).map(|i| i * 1664 / 32).collect();
    let t0 = Instant::now();
    std::hint::black_box(lru_all(&plan, &all, Partition::Global, 0, None));
    let pass = t0.elapsed().as_secs_f64();
    println!(
        "one LRU run: {:.3} s; one stack-distance pass for 33 capacities: {:.3} s ({:.2}x one run, {:.1}x faster than 33 runs)",
        one,
        pass,
        pass / one,
        33.0 * one / pass
    );
    let t0 = Instant::now();
    let four = Batching {
        ubatch: 512,
        parallel: 4,
        prompt_cut: None,
    };
    let batched = ReplayPlan::batched(&t, false, 0, four);
    let build = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    std::hint::black_box(run_policy(&batched, &lru, 832, Partition::Global, None, 0).unwrap());
    let run = t0.elapsed().as_secs_f64();
    println!(
        "--parallel 4: stream of {} accesses in {} steps built in {:.3} s ({:.0} M source accesses/s); one LRU run {:.3} s ({:.1} M accesses/s)",
        batched.stream.len(),
        batched.n_steps,
        build,
        n / build / 1e6,
        run,
        batched.stream.len() as f64 / run / 1e6
    );
}
