//! Replay speed of every policy on a real-like synthetic trace:
//!
//! ```text
//! cargo run --release -p moe-spill-policies --example bench [-- ACCESSES [SPEC,...]]
//! ```
//! 26 MoE layers x 64 experts, top-6 per layer, Zipf-skewed per layer with temporal
//! locality (half of a layer's experts reused from the previous token); ~20 M accesses
//! replayed through `Policy::replay` (one virtual call per run, as the simulator does)
//! at 25%, 50% and 75% of the 1664 experts. Build time (opt's next-use pass, pin-hot's
//! ranking) is not counted.

use std::time::Instant;

use rand::{Rng, SeedableRng};

use moe_spill_policies::{BuildContext, PolicySpec};

const LAYERS: usize = 26;
const EXPERTS: usize = 64;
const TOP_K: usize = 6;

fn trace(n_accesses: usize) -> Vec<u16> {
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(0x9E3779B97F4A7C15);
    // Zipf(1.0) over each layer's experts, through a per-layer permutation.
    let weights: Vec<f64> = (0..EXPERTS).map(|r| 1.0 / (r + 1) as f64).collect();
    let total: f64 = weights.iter().sum();
    let cdf: Vec<f64> = weights
        .iter()
        .scan(0.0, |a, w| {
            *a += w / total;
            Some(*a)
        })
        .collect();
    let perms: Vec<Vec<usize>> = (0..LAYERS)
        .map(|_| {
            let mut p: Vec<usize> = (0..EXPERTS).collect();
            for i in (1..EXPERTS).rev() {
                p.swap(i, rng.gen_range(0..=i));
            }
            p
        })
        .collect();
    let mut prev: Vec<[usize; TOP_K]> = (0..LAYERS)
        .map(|l| std::array::from_fn(|k| perms[l][k]))
        .collect();
    let mut out = Vec::with_capacity(n_accesses + LAYERS * TOP_K);
    while out.len() < n_accesses {
        for l in 0..LAYERS {
            let mut chosen = [usize::MAX; TOP_K];
            let mut n = 0;
            while n < TOP_K {
                let e = if rng.gen::<f64>() < 0.5 {
                    prev[l][rng.gen_range(0..TOP_K)]
                } else {
                    let u: f64 = rng.gen();
                    perms[l][cdf.partition_point(|&c| c < u).min(EXPERTS - 1)]
                };
                if !chosen[..n].contains(&e) {
                    chosen[n] = e;
                    n += 1;
                }
            }
            out.extend(chosen.iter().map(|&e| (l * EXPERTS + e) as u16));
            prev[l] = chosen;
        }
    }
    out
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000_000);
    let t0 = Instant::now();
    let ids = trace(n);
    let n_ids = LAYERS * EXPERTS;
    let mut profile = vec![0u64; n_ids];
    for &id in &ids {
        profile[id as usize] += 1;
    }
    println!(
        "trace: {} accesses ({} tokens of {LAYERS} layers x top-{TOP_K} of {EXPERTS}), built in {:.1} s",
        ids.len(),
        ids.len() / (LAYERS * TOP_K),
        t0.elapsed().as_secs_f64()
    );
    let caps = [n_ids / 4, n_ids / 2, 3 * n_ids / 4];
    println!(
        "{:<16} {:>9} {:>9} {:>12}",
        "policy", "capacity", "miss %", "M access/s"
    );
    let default =
        "lru,fifo,clock,arc,opt,lfu,sieve,s3fifo,linux,pinned:4,pinned:4:clock,pin-hot:200";
    let specs = std::env::args()
        .nth(2)
        .unwrap_or_else(|| default.to_string());
    let specs: Vec<&str> = specs.split(',').collect();
    let mut misses = Vec::with_capacity(ids.len());
    for spec in specs {
        let spec = PolicySpec::parse(spec).unwrap();
        for &capacity in &caps {
            let ctx = BuildContext {
                capacity,
                n_ids,
                n_experts: EXPERTS,
                first_slot: 0,
                future: Some(&ids),
                opt_future: None,
                profile: Some(&profile),
                expert_bytes: None,
            };
            let mut p = spec.build(&ctx).unwrap();
            misses.clear();
            let t = Instant::now();
            p.replay(&ids, &mut misses);
            let secs = t.elapsed().as_secs_f64();
            println!(
                "{:<16} {:>9} {:>8.2}% {:>12.1}",
                spec.to_string(),
                capacity,
                100.0 * misses.len() as f64 / ids.len() as f64,
                ids.len() as f64 / secs / 1e6
            );
        }
    }
}
