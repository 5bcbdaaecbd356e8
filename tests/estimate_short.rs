//! `estimate` on a trace too short for its chunk says so instead of printing U = D = 0
//! and a best-case speed.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_moe-spill");

fn synth(dir: &std::path::Path, tokens: &str) -> String {
    let p = dir.join(format!("t{tokens}.mst"));
    let out = Command::new(BIN)
        .args([
            "synth",
            "--model",
            "deepseek-v2-lite",
            "--responses",
            "1",
            "--seed",
            "1",
            "-q",
        ])
        .args(["--tokens", tokens, "-o", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.to_str().unwrap().to_string()
}

#[test]
fn short_traces_are_named_as_such() {
    let d = tempfile::tempdir().unwrap();
    let short = synth(d.path(), "50");
    let out = Command::new(BIN)
        .args(["estimate", &short, "-q"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no response has a whole 128-token chunk (the longest has 50 tokens)"),
        "{err}"
    );
    // A smaller chunk is fine.
    let out = Command::new(BIN)
        .args(["estimate", &short, "--chunk", "16", "-q", "--format", "csv"])
        .output()
        .unwrap();
    assert!(out.status.success());
    // One chunk but no pair: a note that D is 0 for that reason.
    let mid = synth(d.path(), "200");
    let out = Command::new(BIN)
        .args(["estimate", &mid, "--format", "csv"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("D, the experts new against the previous chunk, is 0"));
}
