//! Properties that hold whatever the trace: OPT is a lower bound, LRU and OPT are
//! stack algorithms, replay agrees with access, pinned ids stay.

mod common;

use common::{ctx, misses, rng};
use moe_spill_policies::{Outcome, Policy, PolicySpec};
use rand::Rng;

/// Every policy of the table with its example parameters, each wrapped by `pinned:1` and
/// `pin-hot:4`, and the specs listed here.
fn all() -> Vec<String> {
    common::spec_list(
        common::wrapped(1, 4),
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
            "linux:ratio=3",
            "linux-eager",
            "linux-eager:0.2",
            "pinned:1",
            "pinned:2:clock",
            "pin-hot:4",
            "pin-hot:8:arc",
            "pinned:1:opt",
        ],
    )
}

fn traces() -> Vec<(String, Vec<u16>, usize, usize)> {
    let mut out = Vec::new();
    for seed in 0..6 {
        let mut r = rng(seed);
        out.push((
            format!("zipf {seed}"),
            common::zipf(&mut r, 48, 0.9, 3000),
            48,
            8,
        ));
        out.push((
            format!("moe {seed}"),
            common::moe(&mut r, 6, 8, 2, 250, 0.4),
            48,
            8,
        ));
        out.push((
            format!("scans {seed}"),
            common::scans(&mut r, 48, 3000),
            48,
            8,
        ));
    }
    out
}

#[test]
fn opt_is_a_lower_bound_at_every_capacity() {
    let all = all();
    for (what, t, n_ids, n_experts) in traces() {
        let profile = common::profile_of(&t, n_ids);
        for cap in 0..=n_ids + 1 {
            let c = ctx(cap, n_ids, n_experts, 0, &t, &profile);
            let opt = misses("opt", &c, &t);
            for spec in &all {
                let s = PolicySpec::parse(spec).unwrap();
                let Ok(pinned) = s.pinned_ids(&c) else {
                    continue;
                };
                // With no slot left for the inner policy, unpinned objects bypass the
                // cache, which demand-paging MIN does not allow itself.
                if !pinned.is_empty() && pinned.len() == cap {
                    continue;
                }
                let m = misses(spec, &c, &t);
                assert!(opt <= m, "{what}: opt {opt} > {spec} {m} at capacity {cap}");
            }
        }
    }
}

#[test]
fn lru_and_opt_misses_never_grow_with_capacity() {
    for (what, t, n_ids, n_experts) in traces() {
        let profile = common::profile_of(&t, n_ids);
        for spec in ["lru", "opt"] {
            let mut last = usize::MAX;
            for cap in 0..=n_ids + 1 {
                let m = misses(spec, &ctx(cap, n_ids, n_experts, 0, &t, &profile), &t);
                assert!(
                    m <= last,
                    "{what}: {spec} misses grew to {m} at capacity {cap}"
                );
                last = m;
            }
            // Enough room for everything: only cold misses.
            let distinct = profile.iter().filter(|&&n| n > 0).count();
            assert_eq!(last, distinct, "{what}: {spec}");
        }
    }
}

/// The miss positions of `t` replayed through `p` in runs of uneven length (below
/// `max_run`, some empty; positions are relative to each run), the structures checked
/// after each. The misses of a run are appended to a vector that may already hold
/// entries (which must stay) and may have no room to spare.
fn replay_in_runs(
    p: &mut dyn Policy,
    t: &[u16],
    r: &mut common::TestRng,
    max_run: usize,
) -> Vec<u32> {
    let mut misses = Vec::new();
    let mut start = 0;
    while start < t.len() {
        let end = (start + r.gen_range(0..max_run)).min(t.len());
        let before: Vec<u32> = (0..r.gen_range(0..3)).map(|i| 7 + i).collect();
        let mut m = Vec::with_capacity(before.len());
        m.extend_from_slice(&before);
        p.replay(&t[start..end], &mut m);
        assert_eq!(m[..before.len()], before[..], "entries already there");
        misses.extend(m[before.len()..].iter().map(|&i| i + start as u32));
        p.validate().unwrap();
        start = end;
    }
    misses
}

/// clock and arc have replay loops of their own: against their access paths at every
/// capacity from 0 to past the ids, in uneven runs, with the structures checked after
/// each run, the same residents at the end, and the same outcomes when both go on (the
/// state agrees: clock's hand, arc's lists and p). A third of the traces have more than
/// 128 ids, so clock's turn crosses and wraps words of reference bits at every frame
/// count up to three words.
#[test]
fn own_replay_loops_equal_access_at_every_capacity() {
    let mut r = rng(991);
    for seed in 0..60u64 {
        let mut g = rng(seed + 5000);
        let n_ids = if seed % 3 == 0 {
            g.gen_range(129..200)
        } else {
            g.gen_range(1..80)
        };
        let t = if seed % 2 == 0 {
            common::zipf(&mut g, n_ids, 0.8, 3000)
        } else {
            common::scans(&mut g, n_ids, 3000)
        };
        let profile = common::profile_of(&t, n_ids);
        for (spec, cap) in ["clock", "arc"]
            .into_iter()
            .flat_map(|s| (0..=n_ids + 2).map(move |c| (s, c)))
        {
            let c = ctx(cap, n_ids, 8.min(n_ids), 0, &t, &profile);
            let (mut a, mut b) = (common::build(spec, &c), common::build(spec, &c));
            let by_access: Vec<u32> = (0..t.len() as u32)
                .filter(|&i| !a.access(t[i as usize] as u32).is_hit())
                .collect();
            let by_replay = replay_in_runs(b.as_mut(), &t, &mut r, 300);
            assert_eq!(by_access, by_replay, "{spec}: seed {seed}, capacity {cap}");
            for id in 0..n_ids as u32 {
                assert_eq!(
                    a.contains(id),
                    b.contains(id),
                    "{spec}: seed {seed}, capacity {cap}"
                );
            }
            for &id in t.iter().take(500) {
                assert_eq!(
                    a.access(id as u32),
                    b.access(id as u32),
                    "{spec}: seed {seed}, capacity {cap}"
                );
            }
        }
    }
}

#[test]
fn replay_in_pieces_equals_access_by_access() {
    let mut r = rng(77);
    let all = all();
    for (what, t, n_ids, n_experts) in traces().into_iter().take(6) {
        let profile = common::profile_of(&t, n_ids);
        // Each spec at a cache of some size and at a tiny one (0 to 3), where a policy's
        // replay may take another path than its access (or the spec cannot be built).
        for (spec, tiny) in all.iter().flat_map(|s| [(s, false), (s, true)]) {
            let cap = if tiny {
                r.gen_range(0..4)
            } else {
                r.gen_range(20..n_ids)
            };
            let c = ctx(cap, n_ids, n_experts, 0, &t, &profile);
            let parsed = PolicySpec::parse(spec).unwrap();
            let (Ok(mut a), Ok(mut b)) = (parsed.build(&c), parsed.build(&c)) else {
                assert!(cap < 20, "{spec} at capacity {cap}");
                continue;
            };
            let mut by_access = Vec::new();
            let (mut hits, mut miss) = (0, 0);
            for (i, &id) in t.iter().enumerate() {
                match a.access(id as u32) {
                    Outcome::Hit => hits += 1,
                    Outcome::Miss { .. } => {
                        miss += 1;
                        by_access.push(i as u32);
                    }
                }
            }
            assert_eq!(hits + miss, t.len(), "{what} {spec}");
            let by_replay = replay_in_runs(b.as_mut(), &t, &mut r, 700);
            assert_eq!(by_access, by_replay, "{what} {spec}");
            assert_eq!(a.len(), b.len());
            assert!(a.len() <= cap);
        }
    }
}

#[test]
fn pinned_ids_are_never_evicted() {
    for (what, t, n_ids, n_experts) in traces() {
        let profile = common::profile_of(&t, n_ids);
        for spec in [
            "pinned:2",
            "pinned:3:arc",
            "pin-hot:10:s3fifo",
            "pin-hot:5:opt",
            "pinned:1:linux",
            "pinned:2:linux:ratio=4",
        ] {
            for cap in [24, 30, 40] {
                for first_slot in [0, 2] {
                    let c = ctx(cap, n_ids, n_experts, first_slot, &t, &profile);
                    let s = PolicySpec::parse(spec).unwrap();
                    let pinned = s.pinned_ids(&c).unwrap();
                    let mut p = s.build(&c).unwrap();
                    for &id in &t {
                        if let Outcome::Miss { evicted: Some(v) } = p.access(id as u32) {
                            assert!(!pinned.contains(&v), "{what} {spec}: evicted pinned {v}");
                        }
                    }
                    for &id in &pinned {
                        assert_eq!(
                            p.contains(id),
                            profile[id as usize] > 0,
                            "{what} {spec} {id}"
                        );
                    }
                    p.validate().unwrap();
                }
            }
        }
    }
}

#[test]
fn pinning_a_layer_pins_exactly_its_experts() {
    let t: Vec<u16> = (0..40).collect();
    let profile = common::profile_of(&t, 40);
    let c = ctx(20, 40, 8, 1, &t, &profile);
    let ids = PolicySpec::parse("pinned:2")
        .unwrap()
        .pinned_ids(&c)
        .unwrap();
    assert_eq!(ids, (8..24).collect::<Vec<u32>>());
    let mut p = PolicySpec::parse("pinned:2").unwrap().build(&c).unwrap();
    assert_eq!(p.capacity(), 20);
    let mut m = Vec::new();
    p.replay(&t, &mut m);
    p.replay(&t, &mut m);
    // Second pass: the 16 pinned ids hit; the 24 others loop through an inner LRU of 4
    // and all miss.
    assert_eq!(m.len(), 40 + 24);
    assert_eq!(p.len(), 20);
}

#[test]
fn opt_checks_it_replays_its_own_future() {
    let t = [1u16, 2, 3];
    let c = ctx(2, 4, 1, 0, &t, &[]);
    let mut p = common::build("opt", &c);
    p.access(1);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.access(3)));
    assert!(r.is_err());
}

/// arc sizes its lists and states by the number of ids, so that number must fit.
#[test]
#[should_panic(expected = "too many ids")]
fn arc_rejects_more_ids_than_its_links_hold() {
    moe_spill_policies::Arc::new(1, usize::MAX);
}

/// arc's replay checks a run's ids once, before it indexes without checks.
#[test]
#[should_panic(expected = "out of range")]
fn arc_replay_rejects_an_id_out_of_range() {
    let mut a = moe_spill_policies::Arc::new(2, 10);
    a.replay(&[1, 2, 10, 3], &mut Vec::new());
}
