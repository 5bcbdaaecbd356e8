//! Spec parsing, canonical display, errors, and what building needs.

mod common;

use moe_spill_policies::registry::{BaseSpec, BASE_POLICIES, POLICY_HELP};
use moe_spill_policies::{reference, BuildContext, PolicySpec, POLICIES};

fn parse(s: &str) -> PolicySpec {
    PolicySpec::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_form_parses_and_prints_back_canonically() {
    for (input, canonical) in [
        ("lru", "lru"),
        ("fifo", "fifo"),
        ("clock", "clock"),
        ("arc", "arc"),
        ("opt", "opt"),
        ("lfu", "lfu"),
        ("sieve", "sieve"),
        ("s3fifo", "s3fifo"),
        ("linux", "linux"),
        ("linux:ratio=auto", "linux"),
        ("linux:ratio=1", "linux:ratio=1"),
        ("linux:ratio=31", "linux:ratio=31"),
        ("linux-eager", "linux-eager"),
        ("linux-eager:0.5", "linux-eager"),
        ("linux-eager:0.3", "linux-eager:0.3"),
        ("linux-eager:0", "linux-eager:0"),
        ("pinned:1:linux:ratio=3", "pinned:1:linux:ratio=3"),
        (" pinned:3 ", "pinned:3"),
        ("pinned:3:lru", "pinned:3"),
        ("pinned:0:clock", "pinned:0:clock"),
        ("pinned:2:linux-eager:0.25", "pinned:2:linux-eager:0.25"),
        ("pinned:2:opt", "pinned:2:opt"),
        ("pin-hot:100", "pin-hot:100"),
        ("pin-hot:64:s3fifo", "pin-hot:64:s3fifo"),
        ("LRU", "lru"),
        ("Linux:Ratio=3", "linux:ratio=3"),
        ("PINNED:2:S3FIFO", "pinned:2:s3fifo"),
    ] {
        let s = parse(input);
        assert_eq!(s.to_string(), canonical, "{input}");
        assert_eq!(parse(canonical), s, "{canonical} round trip");
        assert_eq!(canonical.parse::<PolicySpec>().unwrap(), s);
    }
    assert_eq!(
        parse("pinned:2:linux-eager:0.25"),
        PolicySpec::Pinned {
            layers: 2,
            inner: BaseSpec::LinuxEager {
                active_fraction: 0.25
            }
        }
    );
    assert_eq!(
        parse("pin-hot:7:linux:ratio=4"),
        PolicySpec::PinHot {
            k: 7,
            inner: BaseSpec::Linux { ratio: Some(4) }
        }
    );
    assert_eq!(
        parse("linux"),
        PolicySpec::Base(BaseSpec::Linux { ratio: None })
    );
}

#[test]
fn every_table_spec_parses_prints_back_and_wraps() {
    for spec in common::table_specs() {
        let s = parse(&spec);
        assert_eq!(s.to_string(), spec, "the table lists canonical specs");
        assert_eq!(parse(&s.to_string()), s);
        let PolicySpec::Base(base) = s else {
            panic!("{spec} is not a base policy");
        };
        assert_eq!(spec.split(':').next(), Some(base.name()));
        for (wrapped, want) in [
            (
                format!("pinned:2:{spec}"),
                PolicySpec::Pinned {
                    layers: 2,
                    inner: base,
                },
            ),
            (
                format!("pin-hot:5:{spec}"),
                PolicySpec::PinHot { k: 5, inner: base },
            ),
        ] {
            assert_eq!(parse(&wrapped), want);
            let canonical = wrapped.trim_end_matches(":lru").to_string();
            assert_eq!(want.to_string(), canonical);
            assert_eq!(parse(&canonical), want);
        }
    }
}

#[test]
fn help_lists_the_table_then_the_decorators() {
    let n = BASE_POLICIES.len();
    assert_eq!(POLICIES.len(), n + 2);
    for (info, (form, help)) in BASE_POLICIES.iter().zip(POLICIES) {
        assert_eq!((info.form, info.help), (*form, *help));
        assert!(form.starts_with(info.name), "{form}");
    }
    assert_eq!(POLICIES[n].0, "pinned:N[:POLICY]");
    assert_eq!(POLICIES[n + 1].0, "pin-hot:K[:POLICY]");
    let list = POLICY_HELP.strip_prefix("Eviction policy: ").unwrap();
    let forms: Vec<&str> = list.split(", ").collect();
    assert_eq!(forms.len(), n + 2, "{POLICY_HELP}");
    for (info, form) in BASE_POLICIES.iter().zip(&forms) {
        assert!(
            *form == info.name || form.starts_with(&format!("{}[:", info.name)),
            "{form} for {}",
            info.name
        );
    }
    assert_eq!(forms[n..], ["pinned:N[:POLICY]", "pin-hot:K[:POLICY]"]);
}

#[test]
fn bad_specs_name_themselves_and_list_valid_ones() {
    for (bad, reason) in [
        ("", "empty"),
        ("lru2", "unknown policy \"lru2\""),
        ("lru:3", "lru takes no parameter"),
        ("linux:0.3", "linux takes ratio=R"),
        ("linux:0.3", "linux-eager:FRACTION"),
        ("linux:3", "linux takes ratio=R"),
        ("linux:ratio=0", "whole number R >= 1"),
        ("linux:ratio=", "whole number R >= 1"),
        ("linux:ratio=2.5", "whole number R >= 1"),
        ("linux:ratio=-1", "whole number R >= 1"),
        ("linux:ratio=99999999999", "whole number R >= 1"),
        ("linux:ratio=3:x", "whole number R >= 1"),
        ("linux:rate=3", "linux takes ratio=R"),
        ("linux-eager:1", "[0, 1)"),
        ("linux-eager:-0.1", "[0, 1)"),
        ("linux-eager:half", "[0, 1)"),
        ("linux-eager:NaN", "[0, 1)"),
        ("linux-eager:ratio=2", "[0, 1)"),
        ("pinned:1:linux:0.5", "linux takes ratio=R"),
        ("pinned", "needs a count"),
        ("pinned:", "whole number"),
        ("pinned:x", "whole number"),
        ("pinned:-1", "whole number"),
        ("pin-hot:3:pinned:2", "cannot wrap another decorator"),
        ("pinned:3:pin-hot:2", "cannot wrap another decorator"),
        ("pinned:3:bogus", "unknown policy \"bogus\""),
        ("pinned:3:opt:1", "opt takes no parameter"),
    ] {
        let e = PolicySpec::parse(bad).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&format!("\"{}\"", bad.trim())), "{msg}");
        assert!(msg.contains(reason), "{bad}: {msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
        for (name, _) in POLICIES {
            assert!(msg.contains(name), "{msg} lists {name}");
        }
    }
}

#[test]
fn needs_future_and_profile() {
    assert!(parse("opt").needs_future());
    assert!(parse("pinned:2:opt").needs_future());
    assert!(parse("pin-hot:2:opt").needs_future());
    assert!(!parse("arc").needs_future());
    assert!(parse("pin-hot:2").needs_profile());
    assert!(!parse("pinned:2").needs_profile());
    assert!(!parse("opt").needs_profile());
}

#[test]
fn every_listed_policy_builds() {
    let future = [0u16, 1, 2, 3, 4, 5, 6, 7];
    let profile = [1u64; 8];
    let c = BuildContext {
        capacity: 4,
        n_ids: 8,
        n_experts: 2,
        first_slot: 0,
        future: Some(&future),
        opt_future: None,
        profile: Some(&profile),
        expert_bytes: Some(1 << 20),
    };
    for spec in common::spec_list(common::wrapped(1, 2), &["pinned:1", "pin-hot:2"]) {
        let p = parse(&spec).build(&c).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.name(), parse(&spec).to_string());
        assert_eq!(p.capacity(), 4);
        assert!(p.is_empty());
        let naive = reference::build(&parse(&spec), &c).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(naive.capacity(), 4);
        assert!(naive.is_empty());
    }
}

#[test]
fn build_errors() {
    let future = [0u16, 1, 9];
    let c = BuildContext {
        capacity: 4,
        n_ids: 8,
        n_experts: 2,
        ..Default::default()
    };
    let err = |spec: &str, c: &BuildContext| parse(spec).build(c).err().expect(spec).to_string();
    assert!(err("opt", &c).contains("needs the future"));
    assert!(err("pinned:1:opt", &c).contains("needs the future"));
    assert!(err(
        "opt",
        &BuildContext {
            future: Some(&future),
            opt_future: None,
            ..c
        }
    )
    .contains("future id 9"));
    assert!(err("pin-hot:2", &c).contains("needs a profile"));
    assert!(err("pinned:3", &c).contains("6 pinned objects do not fit in a cache of 4"));
    assert!(err("pinned:5", &BuildContext { capacity: 100, ..c }).contains("cover 4 slots"));
    assert!(err("pinned:1", &BuildContext { n_experts: 0, ..c }).contains("n_experts"));
    let profile = [0u64; 8];
    assert!(err(
        "pin-hot:9",
        &BuildContext {
            profile: Some(&profile),
            capacity: 20,
            ..c
        }
    )
    .contains("9 of 8"));
    assert!(err(
        "pin-hot:5",
        &BuildContext {
            profile: Some(&profile),
            ..c
        }
    )
    .contains("do not fit"));
    assert!(err("lru", &BuildContext { n_ids: 70000, ..c }).contains("65536"));
    let e = parse("pinned:3").build(&c).err().unwrap();
    assert_eq!(e.spec, "pinned:3");
    // A pinned set exactly the size of the cache is fine: the inner policy gets 0.
    let mut p = parse("pinned:2").build(&c).unwrap();
    assert_eq!(p.capacity(), 4);
    assert!(!p.access(5).is_hit());
    assert!(!p.contains(5));
}

#[test]
fn pin_hot_takes_the_most_used_ties_to_lower_ids() {
    let profile = [5u64, 9, 1, 9, 0, 5];
    let c = BuildContext {
        capacity: 6,
        n_ids: 6,
        n_experts: 3,
        profile: Some(&profile),
        ..Default::default()
    };
    assert_eq!(parse("pin-hot:4").pinned_ids(&c).unwrap(), vec![1, 3, 0, 5]);
    // A short profile counts missing ids as never used.
    let short = [0u64, 0, 0, 0, 7];
    let c = BuildContext {
        profile: Some(&short),
        ..c
    };
    assert_eq!(parse("pin-hot:3").pinned_ids(&c).unwrap(), vec![4, 0, 1]);
}

#[test]
fn pinned_layers_start_at_first_slot_and_clip_to_n_ids() {
    let c = BuildContext {
        capacity: 30,
        n_ids: 26,
        n_experts: 8,
        first_slot: 2,
        ..Default::default()
    };
    // Slot 3 holds only ids 24 and 25 (the last layer's top experts were never used).
    assert_eq!(
        parse("pinned:2").pinned_ids(&c).unwrap(),
        (16..26).collect::<Vec<u32>>()
    );
    assert!(parse("pinned:3").pinned_ids(&c).is_err());
    assert!(parse("pinned:0").pinned_ids(&c).unwrap().is_empty());
}

#[test]
fn a_shared_opt_future_gives_the_same_victims() {
    // One prepared future serves several capacities, as in a sweep; each must miss
    // exactly where an opt built from the plain future does.
    use rand::{Rng, SeedableRng};
    let mut r = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(12345);
    let future: Vec<u16> = (0..5000)
        .map(|i| r.gen_range(0..if i % 3 == 0 { 60 } else { 15 }))
        .collect();
    let shared = moe_spill_policies::OptFuture::new(&future, 64).unwrap();
    for capacity in [0, 1, 7, 20, 64] {
        let plain = BuildContext {
            capacity,
            n_ids: 64,
            n_experts: 8,
            future: Some(&future),
            ..Default::default()
        };
        let prepared = BuildContext {
            future: None,
            opt_future: Some(&shared),
            ..plain
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        parse("opt").build(&plain).unwrap().replay(&future, &mut a);
        parse("opt")
            .build(&prepared)
            .unwrap()
            .replay(&future, &mut b);
        assert_eq!(a, b, "capacity {capacity}");
    }
    let wrong = BuildContext {
        capacity: 4,
        n_ids: 32,
        opt_future: Some(&shared),
        ..Default::default()
    };
    assert!(parse("opt").build(&wrong).is_err());
    assert!(moe_spill_policies::OptFuture::new(&future, 50).is_err());
}
