//! Every fast policy against its naive reference, access by access (same outcome,
//! victim included), with `validate()` after every step, on thousands of seeded random
//! traces: capacity 0 and 1, capacity >= distinct ids, loops of C+1, scans, Zipf and
//! real-like token/layer routing; `linux` also at the ratios its expert size gives.

mod common;

use common::{ctx, rng};
use std::sync::OnceLock;

use moe_spill_policies::registry::BASE_POLICIES;
use moe_spill_policies::{reference, BuildContext, Outcome, PolicySpec};
use rand::Rng;

/// Every policy of the table with its example parameters, each wrapped by `pinned:1`,
/// and the specs listed here (pin-hot, other counts and parameters). The pinning wrapper
/// is the same for both decorators (the invariant, golden and registry tests wrap every
/// policy of the table in pin-hot too); wrapping each in both here would cost a third
/// more time for no other path.
fn specs() -> &'static [String] {
    static SPECS: OnceLock<Vec<String>> = OnceLock::new();
    SPECS.get_or_init(|| {
        common::spec_list(
            BASE_POLICIES
                .iter()
                .map(|p| format!("pinned:1:{}", p.name))
                .collect(),
            &[
                "lru",
                "fifo",
                "clock",
                "arc",
                "opt",
                "lfu",
                "sieve",
                "s3fifo",
                "linux",
                "linux:ratio=2",
                "linux:ratio=3",
                "linux:ratio=7",
                "linux-eager",
                "linux-eager:0.25",
                "linux-eager:0",
                "linux-eager:0.9",
                "pinned:1",
                "pinned:2:arc",
                "pinned:1:opt",
                "pinned:1:s3fifo",
                "pin-hot:3",
                "pin-hot:5:clock",
                "pin-hot:2:lfu",
                "pin-hot:4:sieve",
                "pinned:1:linux-eager:0.3",
                "pinned:1:linux:ratio=2",
            ],
        )
    })
}

/// Run `spec` fast and naive side by side; returns the number of misses.
fn compare(spec: &str, c: &BuildContext, trace: &[u16], what: &str) -> usize {
    let s = PolicySpec::parse(spec).unwrap();
    let (mut fast, mut naive) = match (s.build(c), reference::build(&s, c)) {
        (Ok(f), Ok(n)) => (f, n),
        (Err(a), Err(b)) => {
            assert_eq!(a, b);
            return 0; // e.g. a pinned set larger than the cache: both refuse
        }
        (a, b) => panic!(
            "{what} {spec}: build disagrees: {:?} vs {:?}",
            a.err(),
            b.err()
        ),
    };
    let pinned = s.pinned_ids(c).unwrap();
    let mut is_pinned = vec![false; c.n_ids];
    for &id in &pinned {
        is_pinned[id as usize] = true;
    }
    let mut misses = 0;
    for (i, &id) in trace.iter().enumerate() {
        let id = id as u32;
        let a = fast.access(id);
        let b = naive.access(id);
        let at = || format!("{what} {spec} cap {} step {i} id {id}", c.capacity);
        assert_eq!(a, b, "{}", at());
        if let Err(e) = fast.validate() {
            panic!("{}: {e}", at());
        }
        assert_eq!(fast.len(), naive.len(), "{}", at());
        assert!(fast.len() <= c.capacity, "{}", at());
        assert_eq!(fast.contains(id), naive.contains(id), "{}", at());
        if let Outcome::Miss { evicted } = a {
            misses += 1;
            if let Some(v) = evicted {
                assert!(!is_pinned[v as usize], "{}: evicted pinned {v}", at());
                assert!(!fast.contains(v), "{}: victim {v} still resident", at());
            }
        }
        if is_pinned[id as usize] {
            assert!(fast.contains(id), "{}: pinned id not loaded", at());
        }
    }
    for id in 0..c.n_ids as u32 {
        assert_eq!(
            fast.contains(id),
            naive.contains(id),
            "{what} {spec}: final residency of {id}"
        );
    }
    misses
}

/// Capacities worth testing for `distinct` ids: 0, 1, 2, small, around the working set,
/// and beyond it.
fn capacities(r: &mut impl Rng, n_ids: usize) -> Vec<usize> {
    let mut caps = vec![0, 1, 2, r.gen_range(1..=n_ids), n_ids, n_ids + 3];
    caps.push(r.gen_range(2..=(n_ids / 2).max(2)));
    caps.sort_unstable();
    caps.dedup();
    caps
}

fn check_all(trace: &[u16], n_ids: usize, n_experts: usize, caps: &[usize], what: &str) {
    let profile = common::profile_of(trace, n_ids);
    for &cap in caps {
        for first_slot in [0, 1] {
            if first_slot == 1 && n_ids < 2 * n_experts {
                continue;
            }
            let c = ctx(cap, n_ids, n_experts, first_slot, trace, &profile);
            for spec in specs() {
                if first_slot == 1 && !spec.starts_with("pinned") {
                    continue;
                }
                compare(spec, &c, trace, what);
            }
        }
    }
}

/// A policy without a reference would escape the differential tests: every entry of the
/// table names one, and it is an implementation of its own, not the fast policy again.
#[test]
fn every_policy_has_a_reference() {
    let trace = [0u16, 1, 2, 3, 0, 1];
    let profile = common::profile_of(&trace, 4);
    let c = ctx(2, 4, 2, 0, &trace, &profile);
    for info in BASE_POLICIES {
        assert!(
            info.has_reference,
            "{}: its entry in policy_table! (lib.rs) names no naive implementation",
            info.name
        );
        let wrapped = [
            format!("pinned:1:{}", info.name),
            format!("pin-hot:1:{}", info.name),
        ];
        for spec in info.specs().map(String::from).chain(wrapped) {
            let s = PolicySpec::parse(&spec).unwrap();
            let fast = s.build(&c).unwrap_or_else(|e| panic!("{e}"));
            let naive = reference::build(&s, &c).unwrap_or_else(|e| panic!("{e}"));
            assert_ne!(
                naive.name(),
                fast.name(),
                "{spec}: the reference is the fast policy"
            );
            assert_eq!(naive.capacity(), fast.capacity(), "{spec}");
        }
    }
}

#[test]
fn uniform_traces() {
    for seed in 0..900 {
        let mut r = rng(seed);
        let n_ids = r.gen_range(1..=24);
        let len = r.gen_range(0..300);
        let t = common::uniform(&mut r, n_ids, len);
        let caps = capacities(&mut r, n_ids);
        check_all(
            &t,
            n_ids,
            r.gen_range(1..=4),
            &caps,
            &format!("uniform seed {seed}"),
        );
    }
}

#[test]
fn zipf_traces() {
    for seed in 0..600 {
        let mut r = rng(10_000 + seed);
        let n_ids = r.gen_range(2..=64);
        let s = r.gen_range(0.6..1.4);
        let len = r.gen_range(100..500);
        let t = common::zipf(&mut r, n_ids, s, len);
        let caps = capacities(&mut r, n_ids);
        check_all(
            &t,
            n_ids,
            r.gen_range(1..=8),
            &caps,
            &format!("zipf seed {seed}"),
        );
    }
}

#[test]
fn loops_of_capacity_plus_one() {
    for cap in 1..=12usize {
        let n_ids = cap + 1;
        let t = common::looping(n_ids, 10 * n_ids + 3);
        check_all(&t, n_ids, 1, &[cap], &format!("loop {n_ids}"));
        // LRU and FIFO miss every access; OPT about 1 in C after the cold misses.
        let profile = common::profile_of(&t, n_ids);
        let c = ctx(cap, n_ids, 1, 0, &t, &profile);
        assert_eq!(common::misses("lru", &c, &t), t.len());
        assert_eq!(common::misses("fifo", &c, &t), t.len());
        let opt = common::misses("opt", &c, &t);
        assert!(
            opt <= n_ids + (t.len() - n_ids).div_ceil(cap),
            "opt {opt} on loop {n_ids}"
        );
    }
}

#[test]
fn scan_traces() {
    for seed in 0..500 {
        let mut r = rng(20_000 + seed);
        let n_ids = r.gen_range(4..=48);
        let len = r.gen_range(100..400);
        let t = common::scans(&mut r, n_ids, len);
        let caps = capacities(&mut r, n_ids);
        check_all(
            &t,
            n_ids,
            r.gen_range(1..=6),
            &caps,
            &format!("scans seed {seed}"),
        );
    }
}

#[test]
fn moe_traces() {
    for seed in 0..400 {
        let mut r = rng(30_000 + seed);
        let layers = r.gen_range(1..=6);
        let n_experts = r.gen_range(4..=12);
        let k = r.gen_range(1..=n_experts.min(4));
        let tokens = r.gen_range(5..60);
        let reuse = r.gen_range(0.0..0.8);
        let t = common::moe(&mut r, layers, n_experts, k, tokens, reuse);
        let n_ids = layers * n_experts;
        let mut caps = capacities(&mut r, n_ids);
        caps.push(k * layers); // exactly one token's working set
        check_all(&t, n_ids, n_experts, &caps, &format!("moe seed {seed}"));
    }
}

#[test]
fn larger_s3fifo_and_arc_traces() {
    // Capacities >= 20, where S3-FIFO's small queue holds more than one object and
    // ARC's ghosts grow long.
    for seed in 0..60 {
        let mut r = rng(40_000 + seed);
        let n_ids = r.gen_range(40..=160);
        let s = r.gen_range(0.5..1.2);
        let t = common::zipf(&mut r, n_ids, s, 1500);
        let profile = common::profile_of(&t, n_ids);
        for cap in [20, 25, n_ids / 2, n_ids - 5] {
            let c = ctx(cap, n_ids, 8, 0, &t, &profile);
            for spec in [
                "s3fifo",
                "arc",
                "lfu",
                "sieve",
                "pin-hot:7:s3fifo",
                "linux-eager:0.4",
                "linux:ratio=3",
                "linux:ratio=5",
            ] {
                compare(spec, &c, &t, &format!("larger seed {seed}"));
            }
        }
    }
}

#[test]
fn clock_at_larger_capacities() {
    // Capacities past 64, 128 and 192 (where clock's per-frame bits change words) and odd
    // ones, on traces long enough for the hand to wrap many times.
    for seed in 0..20 {
        let mut r = rng(45_000 + seed);
        let n_ids = r.gen_range(140..=260);
        let s = r.gen_range(0.4..1.1);
        let t = common::zipf(&mut r, n_ids, s, 2000);
        let profile = common::profile_of(&t, n_ids);
        let odd = r.gen_range(2..n_ids);
        for cap in [63, 64, 65, 127, 128, 129, 191, 192, 193, odd, n_ids - 1] {
            let c = ctx(cap, n_ids, 16, 0, &t, &profile);
            for spec in ["clock", "pinned:2:clock"] {
                compare(spec, &c, &t, &format!("clock seed {seed}"));
            }
        }
    }
}

#[test]
fn linux_with_the_kernel_ratio_of_its_bytes() {
    // `linux` sizes its ratio from capacity x expert bytes (the fast policy with an
    // integer square root, the reference through floating point): expert sizes that put
    // the cache on both sides of 1, 2, 3, 4, 9, 10 and 100 GiB, on real-like routing and
    // Zipf traces, plain and with pinned layers (ratio from the inner capacity).
    const GIB: f64 = (1u64 << 30) as f64;
    for seed in 0..400 {
        let mut r = rng(50_000 + seed);
        let (t, n_ids, n_experts) = if seed % 2 == 0 {
            let layers = r.gen_range(2..=8);
            let n_experts = r.gen_range(6..=16);
            let k = r.gen_range(1..=4);
            let tokens = r.gen_range(20..120);
            let reuse = r.gen_range(0.0..0.7);
            let t = common::moe(&mut r, layers, n_experts, k, tokens, reuse);
            (t, layers * n_experts, n_experts)
        } else {
            let n_ids = r.gen_range(8..=96);
            let s = r.gen_range(0.5..1.3);
            (common::zipf(&mut r, n_ids, s, 800), n_ids, 4)
        };
        let profile = common::profile_of(&t, n_ids);
        let mut caps = capacities(&mut r, n_ids);
        caps.retain(|&c| c >= 2);
        for &cap in &caps {
            let target_gib = [0.5, 1.0, 2.0, 3.0, 4.0, 9.0, 10.5, 100.0][r.gen_range(0..8)];
            let eb = (target_gib * GIB / cap as f64).ceil() as u64;
            let c = BuildContext {
                expert_bytes: Some(eb),
                ..ctx(cap, n_ids, n_experts, 0, &t, &profile)
            };
            for spec in ["linux", "pinned:1:linux", "linux:ratio=2"] {
                compare(spec, &c, &t, &format!("ratio seed {seed} eb {eb}"));
            }
        }
    }
}
