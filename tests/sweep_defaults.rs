//! A default never fails a valid input: `sweep` with its default policies on a trace
//! where `pinned:3` cannot pin leaves it out with a note in plain words; a policy named
//! explicitly still fails; a policy named twice runs once.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_moe-spill");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn policies(out: &Output) -> Vec<String> {
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let col = r
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "policy")
        .unwrap();
    let mut seen: Vec<String> = Vec::new();
    for rec in r.records() {
        let p = rec.unwrap()[col].to_string();
        if !seen.contains(&p) {
            seen.push(p);
        }
    }
    seen
}

#[test]
fn default_pinned_is_left_out_where_it_cannot_pin() {
    // A trace of 2 MoE layers: pinned:3 has nothing to pin.
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("two.txt");
    let mut s = String::new();
    for tok in 0..40u32 {
        for l in 0..2 {
            for k in 0..2 {
                s.push_str(&format!("layer {l} expert {}\n", (tok + k * 3 + l) % 8));
            }
        }
        s.push_str("---token---\n");
    }
    std::fs::write(&t, s).unwrap();
    let p = t.to_str().unwrap();
    let out = run(&[
        "sweep",
        p,
        "--cache-experts",
        "0..16",
        "--points",
        "3",
        "--format",
        "csv",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("the default policy pinned:3 is left out: it pins the first 3 MoE layers in RAM, and only 2 reach the cache here"),
        "{err}"
    );
    assert_eq!(policies(&out), ["lru", "clock", "arc", "linux", "opt"]);
    // Named by the user, it is an error.
    let out = run(&[
        "sweep",
        p,
        "--cache-experts",
        "0..16",
        "--points",
        "3",
        "--policies",
        "lru,pinned:3",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot pin 3 layers"));
    // Named twice, it runs once.
    let out = run(&[
        "sweep",
        p,
        "--cache-experts",
        "0..16",
        "--points",
        "3",
        "--policies",
        "lru,clock,lru",
        "--format",
        "csv",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--policies names lru more than once"));
    assert_eq!(policies(&out), ["lru", "clock"]);
}

#[test]
fn budgets_beyond_the_limit_are_refused_before_allocating() {
    let out = run(&["sweep", "--points", "1000000000000", "-q"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--points 1000000000000: at most 100000 budgets"));
}

#[test]
fn synth_sizes_beyond_memory_are_refused_before_allocating() {
    let d = tempfile::tempdir().unwrap();
    let o = d.path().join("x.mst");
    let out = run(&[
        "synth",
        "--model",
        "glm-5",
        "--prompt-tokens",
        "4294967295",
        "-o",
        o.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("GB of memory for their ids"), "{err}");
    assert!(!o.exists());
}
