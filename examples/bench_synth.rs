//! Generation-speed benchmark of `synth` (an example, run explicitly; numbers, not assertions):
//!
//!     cargo run --release --example bench_synth
//!
//! Times `synth::generate` in-process (no analysis, no file) for the GLM-5 run of
//! docs/performance.md (100 responses x 1,000 tokens, seed 1: 60 M accesses) and for the embedded
//! default (`synth::default_trace()`, 4.8 M accesses), several runs each. Prints wall
//! and CPU time (this process, all threads), M accesses/s against both, the load average
//! before each run (the machine is shared), and a fingerprint of the ids, so a faster
//! generator can be checked to give the same trace.

use std::time::Instant;

use moe_spill::model::Model;
use moe_spill::synth::{self, generate, preset_params, Shape};
use moe_spill::trace::Trace;

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// FNV-1a over the ids and the prompt flags.
fn fingerprint(t: &Trace) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for x in t
        .ids
        .iter()
        .copied()
        .chain(t.prompt.iter().map(|&p| p as u16))
    {
        h = (h ^ x as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn time_runs(name: &str, runs: usize, make: impl Fn() -> Trace) {
    println!("{name}:");
    for i in 0..runs {
        let load = load_average();
        let (c0, t0) = (cpu_seconds(), Instant::now());
        let t = make();
        let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        let n = t.n_accesses() as f64;
        println!(
            "  run {}: {:.1} M accesses in {:.3} s wall, {:.3} s CPU: {:.1} M/s wall, {:.1} M/s per CPU second; load {}; ids {:016x}",
            i + 1,
            n / 1e6,
            wall,
            cpu,
            n / wall / 1e6,
            n / cpu / 1e6,
            load,
            fingerprint(&t)
        );
    }
}

fn main() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{threads} hardware threads");
    let m = Model::by_name("glm-5").unwrap();
    let (g, p) = (m.geometry(), preset_params(m));
    time_runs(
        "GLM-5, 100 x 1000 tokens, seed 1 (moe-spill synth --model glm-5 --responses 100 --tokens 1000)",
        3,
        || generate(&g, &p, &Shape::uniform(100, 1000, 0), 1),
    );
    time_runs(
        "embedded default (synth::default_trace(): GLM-5, 8 x 1000 tokens, seed 5)",
        5,
        synth::default_trace,
    );
}
