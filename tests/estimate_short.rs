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
    // One chunk but no pair: D is undefined, not 0, and each command says so.
    let mid = synth(d.path(), "200");
    let out = Command::new(BIN)
        .args(["estimate", &mid, "--format", "csv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "no response has two whole 128-token chunks (the longest has 200 tokens): D, the experts new against the previous chunk, is undefined"
    ));
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let table = run(&["analyze", &mid, "--format", "table"]);
    assert!(
        table.contains("D undefined: no response has two whole chunks to compare"),
        "{table}"
    );
    let csv = run(&["analyze", &mid, "--format", "csv"]);
    assert!(csv.lines().nth(1).unwrap().ends_with(','), "{csv}");
    let json: serde_json::Value =
        serde_json::from_str(&run(&["analyze", &mid, "--format", "json"])).unwrap();
    assert!(json["rows"][0]["avg_new"].is_null());
    // The analytic columns of a replay are empty, and the context line says why.
    let simulate = |format: &str| {
        run(&[
            "simulate",
            &mid,
            "--cache-experts",
            "100",
            "--hw",
            "desktop-cpu",
            "--format",
            format,
            "-q",
        ])
    };
    let sweep = simulate("csv");
    let mut r = csv::Reader::from_reader(sweep.as_bytes());
    let h = r.headers().unwrap().clone();
    let row = r.records().next().unwrap().unwrap();
    let col = |name: &str| row[h.iter().position(|c| c == name).unwrap()].to_string();
    assert_eq!(col("analytic_tok_s"), "");
    assert_ne!(col("est_tok_s"), "");
    let table = simulate("table");
    assert!(
        table.contains(
            "D undefined (no response has two whole 128-token chunks: no analytic estimate)"
        ),
        "{table}"
    );
}
