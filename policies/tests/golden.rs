//! Exact victims on hand-made sequences, and golden miss counts taken from the real
//! libCacheSim (the `libcachesim` 0.3.5 Python package) on a reproducible trace.

mod common;

use common::{build, ctx, misses, victims};
use moe_spill_policies::{BuildContext, Outcome, Policy, PolicySpec};

/// The classic Belady-anomaly sequence.
const CLASSIC: [u16; 12] = [1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5];

fn classic(spec: &str, capacity: usize) -> (usize, String) {
    // 6 ids in 3 "layers" of 2 experts; profile: ids 1, 2 and 5 are hottest (ties ->
    // lower id first, so pin-hot:1 pins id 1).
    let profile = [0u64, 3, 3, 2, 2, 3];
    let c = ctx(capacity, 6, 2, 0, &CLASSIC, &profile);
    let mut p = build(spec, &c);
    let v = victims(p.as_mut(), &CLASSIC);
    let n = v.split(' ').filter(|s| *s != ".").count();
    (n, v)
}

#[test]
fn classic_sequence_miss_counts() {
    // The textbook numbers (LRU 10/8, FIFO 9/10 = Belady's anomaly, OPT 7/6, CLOCK 10/8,
    // ARC 10/7); libCacheSim gives the same for these and LFU 10/8, SIEVE 10/8.
    for (spec, at3, at4) in [
        ("lru", 10, 8),
        ("fifo", 9, 10),
        ("opt", 7, 6),
        ("clock", 10, 8),
        ("arc", 10, 7),
        ("lfu", 10, 8),
        ("sieve", 10, 8),
    ] {
        assert_eq!(classic(spec, 3).0, at3, "{spec} at capacity 3");
        assert_eq!(classic(spec, 4).0, at4, "{spec} at capacity 4");
    }
}

#[test]
fn classic_sequence_victims() {
    // `.` hit, `m` miss into free space, a number: the victim of that miss.
    let want = [
        ("lru", 3, "m m m 1 2 3 4 . . 5 1 2"),
        ("lru", 4, "m m m m . . 3 . . 4 5 1"),
        ("fifo", 3, "m m m 1 2 3 4 . . 1 2 ."),
        ("fifo", 4, "m m m m . . 1 2 3 4 5 1"),
        // A bit set by the hits on 1 and 2 saves them once, so 5 goes.
        ("clock", 3, "m m m 1 2 3 4 . . 5 1 2"),
        ("clock", 4, "m m m m . . 3 . . 4 5 3"),
        // At 3: T1 alone holds the cache until 1 and 2 move to T2; then 5 and 3 go to B1,
        // and the B1 hit on 5 raises p to 1, so T2's LRU (1) is replaced.
        ("arc", 3, "m m m 1 2 3 4 . . 5 3 1"),
        ("arc", 4, "m m m m . . 3 . . 4 1 ."),
        // Farthest next use; never used again first, the larger id among those.
        ("opt", 3, "m m m 3 . . 4 . . 2 3 ."),
        ("opt", 4, "m m m m . . 4 . . . 3 ."),
        // Count 1 before count 2; among equal counts the least recently used.
        ("lfu", 3, "m m m 1 2 3 4 . . 5 3 4"),
        ("lfu", 4, "m m m m . . 3 . . 4 5 3"),
        ("sieve", 3, "m m m 1 2 3 4 . . 5 1 2"),
        ("sieve", 4, "m m m m . . 3 . . 4 5 3"),
        // |S| = 1, |M| = 2, |G| = 2: before the first eviction a full S sends 2 and 3
        // to M; 1 and 4 leave S into G; their returns go straight to M.
        ("s3fifo", 3, "m m m 1 4 . 3 . . 5 3 4"),
        ("s3fifo", 4, "m m m m . . 1 5 . . . 1"),
        // Active list at most 1 (of 3): promoting 2 demotes 1 to the inactive head.
        ("linux-eager", 3, "m m m 1 2 3 4 . . 5 1 3"),
        ("linux-eager", 4, "m m m m . . 3 . . 4 5 3"),
        // Sampled references (ratio 1). At 3: the miss on 4 scans 1, 2, 3 once each
        // (bit -> flag, second trip) and evicts 1; 2 and 3 then go without a new bit;
        // the miss on 5 gives 4, 1, 2 their trips and evicts 4. The miss on 3 activates
        // 1 and 2 (bit and flag), the balance deactivates 1 (bit cleared), 5 takes its
        // trip, and 1 is evicted: the hits of 1 and 2 count only through the flag.
        ("linux", 3, "m m m 1 2 3 4 . . 1 5 3"),
        // At 4 the hits on 1 and 2 come before any scan: their bits were set by the
        // faults already, so the cache is FIFO here.
        ("linux", 4, "m m m m . . 1 2 3 4 5 1"),
        // Ids 0 and 1 pinned (layer 0 of 2 experts), the inner LRU gets 1 or 2 slots.
        ("pinned:1", 3, "m m 2 3 . 4 2 . 5 2 3 4"),
        ("pinned:1", 4, "m m m 2 . 3 4 . . 5 2 3"),
        ("pinned:1:fifo", 4, "m m m 2 . 3 4 . . 2 5 3"),
        ("pin-hot:1", 3, "m m m 2 . 3 4 . . 5 2 3"),
        ("pin-hot:1", 4, "m m m m . . 3 . . 4 5 2"),
    ];
    for (spec, cap, v) in want {
        assert_eq!(classic(spec, cap).1, v, "{spec} at capacity {cap}");
    }
}

fn run(spec: &str, capacity: usize, n_ids: usize, trace: &[u16]) -> String {
    let profile = common::profile_of(trace, n_ids);
    let c = ctx(capacity, n_ids, 2, 0, trace, &profile);
    victims(build(spec, &c).as_mut(), trace)
}

#[test]
fn clock_moves_survivors_sieve_does_not() {
    // After 1 is saved by its bit, CLOCK's 1 sits at the head again while SIEVE's stays
    // put behind the hand, so SIEVE evicts the newer 4 where CLOCK evicts 1.
    let t = [1, 2, 3, 1, 4, 5, 6];
    assert_eq!(run("clock", 3, 8, &t), "m m m . 2 3 1");
    assert_eq!(run("sieve", 3, 8, &t), "m m m . 2 3 4");
}

#[test]
fn linux_eager_active_hits_do_not_reorder() {
    // Active list of at most 2 (of 4). The hit on active 1 does not move it, so the
    // promotion of 3 demotes 1, not 2, to the inactive head; 4 then 1 are evicted.
    let t = [1, 2, 3, 4, 1, 2, 1, 3, 5, 6];
    assert_eq!(run("linux-eager", 4, 8, &t), "m m m m . . . . 4 1");
    // With a fraction of 0 every promotion is demoted at once: inactive is an LRU.
    assert_eq!(run("linux-eager:0", 4, 8, &t), run("lru", 4, 8, &t));
}

/// The sequence of `linux_activates_refaults_and_keeps_the_ratio`.
const REFAULT: [u16; 11] = [1, 2, 3, 4, 5, 3, 4, 2, 6, 2, 1];

#[test]
fn linux_activates_refaults_and_keeps_the_ratio() {
    // Capacity 4, ratio 1, worked out by hand (inactive and active lists head first;
    // the clock ticks at every eviction and activation):
    // - 1 2 3 4 fill the inactive list, each with its fault's bit. The miss on 5 gives
    //   all four a second trip (bit cleared, flag set) and evicts 1 at clock 0.
    // - 3 4 2 hit: bits set again. The miss on 6 activates 2, 3, 4 (bit and flag;
    //   clock 1-3); active 3 > 1 x inactive [5] deactivates 2 (bit cleared), 5 takes its
    //   trip, and 2 (flag, no bit) is evicted at clock 4. Now [6 5] / [4 3].
    // - The miss on 2 evicts 5 (flag, no bit) at clock 5; 2 was evicted at 4, distance
    //   6 - 4 = 2 <= 2 active: a refault, straight to the active head ([6] / [2 4 3]).
    // - The miss on 1 deactivates 3 (active 3 > 1 x 1), gives 6 its trip and evicts 3;
    //   1 (evicted at 0, distance 8) starts inactive.
    let c = ctx(4, 8, 2, 0, &REFAULT, &[]);
    let mut p = moe_spill_policies::Linux::new(4, 8, None);
    assert_eq!(victims(&mut p, &REFAULT), "m m m m 1 . . . 2 5 3");
    assert_eq!(p.split_lru().lists(), (vec![1, 6], vec![2, 4]));
    assert_eq!(p.split_lru().bits(2), (true, false)); // the refault's fault bit
    assert_eq!(p.split_lru().bits(4), (false, true));
    assert_eq!(p.split_lru().bits(6), (false, true));
    assert_eq!(
        victims(build("linux", &c).as_mut(), &REFAULT),
        "m m m m 1 . . . 2 5 3"
    );
    // Without the refault rule 2 would start inactive and 6 would go instead (the
    // naive reference has the rule too; this pins that the rule decides here).
    // Ratio 3: the miss on 6 activates 2, 3, 4 and keeps them (3 <= 3 x 1), 5 goes;
    // 2 then hits, and the miss on 1 evicts 6 after its trip.
    assert_eq!(
        run("linux:ratio=3", 4, 8, &REFAULT),
        "m m m m 1 . . . 5 . 6"
    );
    assert_eq!(
        run("linux:ratio=1", 4, 8, &REFAULT),
        "m m m m 1 . . . 2 5 3"
    );
}

#[test]
fn linux_ratio_follows_the_cache_bytes() {
    // 4 experts of 256 MiB = 1 GiB: the kernel's ratio isqrt(10 x 1) = 3; one byte less
    // per expert and the cache is below 1 GiB: ratio 1.
    let with = |eb: u64| {
        let c = BuildContext {
            expert_bytes: Some(eb),
            ..ctx(4, 8, 2, 0, &REFAULT, &[])
        };
        victims(build("linux", &c).as_mut(), &REFAULT)
    };
    assert_eq!(with(256 << 20), run("linux:ratio=3", 4, 8, &REFAULT));
    assert_eq!(with((256 << 20) - 1), run("linux:ratio=1", 4, 8, &REFAULT));
    // An explicit ratio ignores the bytes.
    let c = BuildContext {
        expert_bytes: Some(256 << 20),
        ..ctx(4, 8, 2, 0, &REFAULT, &[])
    };
    assert_eq!(
        victims(build("linux:ratio=1", &c).as_mut(), &REFAULT),
        "m m m m 1 . . . 2 5 3"
    );
    for (cap, eb, ratio) in [(4, 256u64 << 20, 3), (4, 1 << 30, 6), (0, 1 << 40, 1)] {
        assert_eq!(
            moe_spill_policies::Linux::new(cap, 8, Some(eb)).ratio(),
            ratio
        );
    }
    // Pinned (mlock'd) ids leave the file LRU, so the ratio comes from the inner
    // capacity: 20 experts of 105 MiB pinning 2 leave 18 (1890 MiB: ratio 3), where all
    // 20 (2100 MiB) would give ratio 4.
    let t = lcg_trace(5000, 7);
    let c = BuildContext {
        expert_bytes: Some(105 << 20),
        ..ctx(20, 200, 2, 0, &t, &[])
    };
    let v = |spec: &str| victims(build(spec, &c).as_mut(), &t);
    assert_eq!(v("pinned:1:linux"), v("pinned:1:linux:ratio=3"));
    assert_ne!(v("pinned:1:linux"), v("pinned:1:linux:ratio=4"));
}

#[test]
fn arc_p_moves_both_ways() {
    // On a trace whose counts match libCacheSim (below), B1 hits raise p and B2 hits
    // lower it: both paths of the adaptation run.
    let t = lcg_trace(20000, 42);
    let mut arc = moe_spill_policies::Arc::new(16, 200);
    let (mut up, mut down) = (0, 0);
    for &id in &t {
        let before = arc.p();
        arc.access(id as u32);
        up += (arc.p() > before) as usize;
        down += (arc.p() < before) as usize;
    }
    arc.validate().unwrap();
    assert!(
        up > 100 && down > 100,
        "p rose {up} times, fell {down} times"
    );
}

#[test]
fn capacity_zero_misses_everything_and_holds_nothing() {
    let also = [
        "lru",
        "fifo",
        "clock",
        "arc",
        "opt",
        "lfu",
        "sieve",
        "s3fifo",
        "linux",
        "linux:ratio=4",
        "linux-eager",
        "pinned:0:arc",
        "pin-hot:0",
    ];
    for spec in &common::spec_list(common::wrapped(0, 0), &also) {
        let v = run(spec, 0, 6, &CLASSIC);
        assert!(v.split(' ').all(|s| s == "m"), "{spec}: {v}");
    }
}

#[test]
fn capacity_at_least_distinct_ids_only_cold_misses() {
    let also = [
        "lru",
        "fifo",
        "clock",
        "arc",
        "opt",
        "lfu",
        "sieve",
        "s3fifo",
        "linux",
        "linux:ratio=3",
        "linux-eager",
        "pinned:1",
        "pin-hot:2:clock",
    ];
    for spec in &common::spec_list(common::wrapped(1, 2), &also) {
        // Pinned slots are reserved even for ids never used (id 0 here).
        let caps: &[usize] = if spec.starts_with("pin") {
            &[7, 9]
        } else {
            &[5, 6, 9]
        };
        for &cap in caps {
            let v = run(spec, cap, 6, &CLASSIC);
            assert_eq!(
                v.split(' ').filter(|s| *s == "m").count(),
                5,
                "{spec} {cap}: {v}"
            );
            assert!(
                v.split(' ').all(|s| s == "m" || s == "."),
                "{spec} {cap}: {v}"
            );
        }
    }
}

/// The same generator as the cross-check script: a 64-bit LCG, 10/16 of the accesses
/// to 16 hot ids, the rest to 200 ids.
fn lcg_trace(n: usize, seed: u64) -> Vec<u16> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let hi = x >> 33;
            (if (x >> 60) < 10 { hi % 16 } else { hi % 200 }) as u16
        })
        .collect()
}

#[test]
fn golden_counts_from_libcachesim() {
    let t = lcg_trace(20000, 42);
    assert_eq!(&t[..10], &[6, 2, 2, 103, 94, 12, 9, 6, 14, 13]);
    let caps = [1, 4, 16, 20, 50, 100, 199, 250];
    // Miss counts of libcachesim 0.3.5 (LRU, FIFO, Clock, ARC, Belady, LFU, Sieve,
    // S3FIFO; object size 1, object ids + 1). S3FIFO below 20 objects is where we
    // deviate on purpose (see s3fifo.rs), so those are not pinned here.
    let golden: [(&str, [Option<usize>; 8]); 8] = [
        (
            "lru",
            [19457, 17856, 12280, 10865, 5803, 3746, 234, 200].map(Some),
        ),
        (
            "fifo",
            [19457, 17910, 13096, 11984, 7558, 4425, 242, 200].map(Some),
        ),
        (
            "clock",
            [19457, 17822, 11813, 10255, 5693, 3772, 228, 200].map(Some),
        ),
        (
            "arc",
            [19457, 17363, 9219, 7695, 5723, 3751, 232, 200].map(Some),
        ),
        (
            "opt",
            [19457, 13731, 6854, 5959, 3409, 1690, 205, 200].map(Some),
        ),
        (
            "lfu",
            [19457, 17040, 7648, 6818, 5701, 3853, 230, 200].map(Some),
        ),
        (
            "sieve",
            [19457, 17474, 8740, 6849, 5708, 3805, 227, 200].map(Some),
        ),
        (
            "s3fifo",
            [
                None,
                None,
                None,
                Some(6816),
                Some(5682),
                Some(3761),
                Some(231),
                Some(200),
            ],
        ),
    ];
    let profile = common::profile_of(&t, 200);
    for (spec, counts) in golden {
        for (&cap, want) in caps.iter().zip(counts) {
            let Some(want) = want else { continue };
            let c = ctx(cap, 200, 8, 0, &t, &profile);
            assert_eq!(misses(spec, &c, &t), want, "{spec} at capacity {cap}");
        }
    }
}

#[test]
fn replay_reports_the_missing_positions() {
    let c = BuildContext {
        capacity: 3,
        n_ids: 6,
        future: Some(&CLASSIC),
        opt_future: None,
        ..Default::default()
    };
    let mut p = PolicySpec::parse("lru").unwrap().build(&c).unwrap();
    let mut m = vec![99];
    p.replay(&CLASSIC, &mut m);
    assert_eq!(m, vec![99, 0, 1, 2, 3, 4, 5, 6, 9, 10, 11]);
    assert_eq!(p.access(5), Outcome::Hit);
}
