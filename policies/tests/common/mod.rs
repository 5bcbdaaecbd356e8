//! Seeded trace generators and helpers shared by the policy tests.
#![allow(dead_code)]

use moe_spill_policies::registry::BASE_POLICIES;
use moe_spill_policies::{BuildContext, Outcome, Policy, PolicySpec};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

/// The tests' generator: xoshiro256++, whose stream for a seed no rand release changes
/// (StdRng's may).
pub type TestRng = rand_xoshiro::Xoshiro256PlusPlus;

pub fn rng(seed: u64) -> TestRng {
    TestRng::seed_from_u64(seed)
}

pub fn uniform(r: &mut TestRng, n_ids: usize, len: usize) -> Vec<u16> {
    (0..len).map(|_| r.gen_range(0..n_ids) as u16).collect()
}

/// Zipf over a random permutation of the ids (so hot ids are not always the low ones).
pub fn zipf(r: &mut TestRng, n_ids: usize, s: f64, len: usize) -> Vec<u16> {
    let z = Zipf::new(n_ids as u64, s).unwrap();
    let mut perm: Vec<u16> = (0..n_ids as u16).collect();
    perm.shuffle(r);
    (0..len).map(|_| perm[z.sample(r) as usize - 1]).collect()
}

/// 0, 1, ..., period-1, 0, 1, ... (a loop of C+1 defeats LRU and FIFO completely).
pub fn looping(period: usize, len: usize) -> Vec<u16> {
    (0..len).map(|i| (i % period) as u16).collect()
}

/// A hot set with sequential scans of cold ids mixed in.
pub fn scans(r: &mut TestRng, n_ids: usize, len: usize) -> Vec<u16> {
    let hot = (n_ids / 4).max(1);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        if r.gen_bool(0.1) {
            let start = r.gen_range(hot..n_ids.max(hot + 1));
            let n = r.gen_range(1..=n_ids);
            out.extend((0..n).map(|k| ((start + k) % n_ids) as u16));
        } else {
            out.push(r.gen_range(0..hot) as u16);
        }
    }
    out.truncate(len);
    out
}

/// Real-like MoE routing: each token visits `layers` layers, choosing `k` distinct
/// experts of `n_experts` in each, Zipf-skewed per layer with temporal locality
/// (reusing the previous token's experts with probability `reuse`).
pub fn moe(
    r: &mut TestRng,
    layers: usize,
    n_experts: usize,
    k: usize,
    tokens: usize,
    reuse: f64,
) -> Vec<u16> {
    let z = Zipf::new(n_experts as u64, 1.1).unwrap();
    let perms: Vec<Vec<usize>> = (0..layers)
        .map(|_| {
            let mut p: Vec<usize> = (0..n_experts).collect();
            p.shuffle(r);
            p
        })
        .collect();
    let mut prev: Vec<Vec<usize>> = (0..layers).map(|l| perms[l][..k].to_vec()).collect();
    let mut out = Vec::with_capacity(tokens * layers * k);
    for _ in 0..tokens {
        for l in 0..layers {
            let mut chosen: Vec<usize> = Vec::with_capacity(k);
            while chosen.len() < k {
                let e = if r.gen_bool(reuse) {
                    prev[l][r.gen_range(0..k)]
                } else {
                    perms[l][z.sample(r) as usize - 1]
                };
                if !chosen.contains(&e) {
                    chosen.push(e);
                }
            }
            out.extend(chosen.iter().map(|&e| (l * n_experts + e) as u16));
            prev[l] = chosen;
        }
    }
    out
}

pub fn profile_of(trace: &[u16], n_ids: usize) -> Vec<u64> {
    let mut p = vec![0u64; n_ids];
    for &id in trace {
        p[id as usize] += 1;
    }
    p
}

pub fn ctx<'a>(
    capacity: usize,
    n_ids: usize,
    n_experts: usize,
    first_slot: usize,
    trace: &'a [u16],
    profile: &'a [u64],
) -> BuildContext<'a> {
    BuildContext {
        capacity,
        n_ids,
        n_experts,
        first_slot,
        future: Some(trace),
        opt_future: None,
        profile: Some(profile),
        expert_bytes: None,
    }
}

pub fn build(spec: &str, ctx: &BuildContext) -> Box<dyn Policy> {
    PolicySpec::parse(spec)
        .unwrap()
        .build(ctx)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Misses of `spec` over `trace` through `replay`.
pub fn misses(spec: &str, ctx: &BuildContext, trace: &[u16]) -> usize {
    let mut p = build(spec, ctx);
    let mut m = Vec::new();
    p.replay(trace, &mut m);
    m.len()
}

/// One character per access: `.` hit, `m` miss without victim, else the victim id
/// (space separated), for golden victim sequences.
pub fn victims(p: &mut dyn Policy, trace: &[u16]) -> String {
    let mut out = Vec::new();
    for &id in trace {
        out.push(match p.access(id as u32) {
            Outcome::Hit => ".".to_string(),
            Outcome::Miss { evicted: None } => "m".to_string(),
            Outcome::Miss { evicted: Some(v) } => v.to_string(),
        });
        p.validate().unwrap();
    }
    out.join(" ")
}

/// Every base policy of the table with the parameter values its entry lists for tests,
/// in table order: `lru`, ..., `linux`, `linux:ratio=2`, ...
pub fn table_specs() -> Vec<String> {
    BASE_POLICIES
        .iter()
        .flat_map(|p| p.specs())
        .map(String::from)
        .collect()
}

/// `pinned:N:X` and `pin-hot:K:X` for every base policy X of the table.
pub fn wrapped(n: usize, k: usize) -> Vec<String> {
    BASE_POLICIES
        .iter()
        .flat_map(|p| {
            [
                format!("pinned:{n}:{}", p.name),
                format!("pin-hot:{k}:{}", p.name),
            ]
        })
        .collect()
}

/// The table's specs, then `more`, then `also`, each spec once (by canonical form): a
/// test list that grows with the table.
pub fn spec_list(more: Vec<String>, also: &[&str]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    table_specs()
        .into_iter()
        .chain(more)
        .chain(also.iter().map(|s| s.to_string()))
        .filter(|s| seen.insert(PolicySpec::parse(s).unwrap().to_string()))
        .collect()
}
