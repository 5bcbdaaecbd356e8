//! A default never fails a valid input: `sweep` with its default policies on a trace
//! where `pinned:3` cannot pin leaves it out with a note in plain words; a policy named
//! explicitly still fails; a policy named twice runs once. A sweep that cannot produce
//! a single row is an error saying which budget would, also under -q; budgets left out
//! while others give rows are a note (silenced by -q).

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

/// A trace of 2 MoE layers (0 and 1) of 8 experts each, top-2, 40 tokens.
fn two_layers(dir: &std::path::Path) -> std::path::PathBuf {
    let t = dir.join("two.txt");
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
    t
}

#[test]
fn default_pinned_is_left_out_where_it_cannot_pin() {
    // A trace of 2 MoE layers: pinned:3 has nothing to pin.
    let dir = tempfile::tempdir().unwrap();
    let t = two_layers(dir.path());
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
        .contains("--points 1000000000000: at most 10000 budgets"));
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
    // An opening longer than the responses would be generated whole first.
    for extra in [
        &["--tokens", "20"][..],
        &["--tokens", "20", "--target-u", "30", "--target-d", "5"],
    ] {
        let mut args = vec!["synth", "--model", "glm-5", "--opening", "1000000000000"];
        args.extend(extra);
        args.extend(["-o", o.to_str().unwrap()]);
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("--opening 1000000000000: longer than the responses (20 tokens)"),
            "{err}"
        );
        assert!(!o.exists());
    }
    // A fit is refused before it starts: the recording's one response has 40 tokens.
    let rec = two_layers(d.path());
    let out = run(&[
        "synth",
        "--fit",
        rec.to_str().unwrap(),
        "--opening",
        "41",
        "-o",
        o.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--opening 41: longer than the responses (40 tokens)"),
        "{err}"
    );
    assert!(!err.contains("fitted"), "{err}");
    assert!(!o.exists());
    // As long as the responses is fine: every response is the opening.
    let out = run(&[
        "synth",
        "--model",
        "glm-5",
        "--opening",
        "20",
        "--tokens",
        "20",
        "--responses",
        "2",
        "-q",
        "-o",
        o.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With and without -q: exit status 2, the one line on stderr contains `want`, and
/// nothing on stdout.
fn fails_alone(args: &[&str], want: &str) {
    for quiet in [false, true] {
        let mut args = args.to_vec();
        if quiet {
            args.push("-q");
        }
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn no_row_at_all_is_an_error_naming_a_budget_that_works() {
    let dir = tempfile::tempdir().unwrap();
    let t = two_layers(dir.path());
    let p = t.to_str().unwrap();
    let o = dir.path().join("r.csv");
    // pinned:1 pins layer 0's 8 experts; no budget up to 4 holds them.
    fails_alone(
        &[
            "sweep",
            p,
            "--cache-experts",
            "0..4",
            "--points",
            "3",
            "--policies",
            "pinned:1:lru",
            "-o",
            o.to_str().unwrap(),
        ],
        "no row to write: pinned:1 pins 8 experts and the largest budget holds 4; --cache-experts 0..8 reaches a budget that holds them",
    );
    assert!(!o.exists());
    // RAM budgets (the embedded GLM-5 trace): the advice is a RAM range, and that range
    // gives the row.
    let ram = |range: &str| {
        run(&[
            "sweep",
            "--ram",
            range,
            "--points",
            "2",
            "--policies",
            "pinned:3",
            "-q",
        ])
    };
    let out = ram("0GiB..1GiB");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no row to write: pinned:3 pins 768 experts and the largest budget, 1 GiB, holds 0; --ram 0GiB..20.4GiB reaches a budget that holds them"),
        "{err}"
    );
    let out = ram("0GiB..20.4GiB");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    // A policy named beside others that give rows: still an error, not left out, and
    // nothing but the error on stderr.
    fails_alone(
        &[
            "sweep",
            "--ram",
            "0GiB..8GiB",
            "--points",
            "2",
            "--policies",
            "pinned:3,lru",
        ],
        "no row for a policy named: pinned:3 pins 768 experts and the largest budget, 8 GiB, holds 107; --ram 0GiB..20.4GiB",
    );
    // With rows at another VRAM size it runs, with a note for the size without.
    let out = run(&[
        "sweep",
        "--ram",
        "0GiB..24GiB",
        "--points",
        "2",
        "--policies",
        "pinned:3,lru",
        "--vrams",
        "0,96",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("pinned:3 pins 768 experts and the largest budget holds"),
        "{err}"
    );
    assert!(err.contains("it has no rows at one VRAM size"), "{err}");
}

#[test]
fn budgets_left_out_are_a_note_silenced_by_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let t = two_layers(dir.path());
    let sweep = |quiet: bool| {
        let mut args = vec![
            "sweep",
            t.to_str().unwrap(),
            "--cache-experts",
            "0..16",
            "--points",
            "3",
            "--policies",
            "pinned:1:lru",
            "--format",
            "csv",
        ];
        if quiet {
            args.push("-q");
        }
        run(&args)
    };
    let out = sweep(false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("pinned:1 pins 8 experts; 1 budget(s) below that are left out"),
        "{err}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    let quiet = sweep(true);
    assert!(quiet.status.success());
    assert!(quiet.stderr.is_empty());
    assert_eq!(quiet.stdout, out.stdout);
}

/// Budgets closer than one expert hold the same cache: each keeps its row, with the
/// counts of the one replay they share.
#[test]
fn budgets_closer_than_an_expert_share_a_replay() {
    let out = run(&[
        "sweep",
        "--policies",
        "clock",
        "--ram",
        "64GiB..64.001GiB",
        "--points",
        "3",
        "-q",
        "--format",
        "csv",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let h = r.headers().unwrap().clone();
    let col = |name: &str| h.iter().position(|x| x == name).unwrap();
    let rows: Vec<csv::StringRecord> = r.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 3);
    let rams: Vec<&str> = rows.iter().map(|r| &r[col("ram_gib")]).collect();
    assert_eq!(rams, ["64", "64.0005", "64.001"]);
    for r in &rows[1..] {
        assert_eq!(r[col("cache_experts")], rows[0][col("cache_experts")]);
        assert_eq!(r[col("misses")], rows[0][col("misses")]);
    }
}

/// An LRU sweep of one budget, 128 GiB, at each of `vrams`, as `format`.
fn lru_at_vrams(vrams: &str, format: &str) -> String {
    let out = run(&[
        "sweep",
        "--policies",
        "lru",
        "--vrams",
        vrams,
        "--ram",
        "128GiB..128GiB",
        "--points",
        "1",
        "-q",
        "--format",
        format,
    ]);
    assert_eq!(out.status.code(), Some(0));
    String::from_utf8(out.stdout).unwrap()
}

/// A VRAM size named twice runs once, and sizes take units as --ram does.
#[test]
fn vram_sizes_run_once_and_take_units() {
    let rows = |vrams: &str| lru_at_vrams(vrams, "csv");
    assert_eq!(rows("24,24GiB,48"), rows("24,48"));
    assert_eq!(rows("24,48").lines().count(), 3);
}

/// With --vrams the table shows each row's MoE layers on the GPU, not the first's.
#[test]
fn vram_rows_show_their_gpu_layers() {
    let text = lru_at_vrams("24,96", "table");
    assert!(
        text.contains("VRAM per row (vram_gib; gpu_layers"),
        "{text}"
    );
    assert!(!text.contains("MoE layers in VRAM"), "{text}");
    let layers: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" lru "))
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(layers, ["0", "15"], "{text}");
}

/// The machine in the table's header has the GPU of the rows, whose VRAM they give, even
/// when the first row has none; the RAM's size is the rows' too.
#[test]
fn vram_rows_keep_the_gpu_in_the_header() {
    let text = lru_at_vrams("0,48", "table");
    let header = text.lines().next().unwrap();
    assert!(
        header.contains("machine 3090-ddr5: GPU @ 936 GB/s, RAM per row (ram_gib) @ 96 GB/s"),
        "{header}"
    );
    assert!(!header.contains("no GPU"), "{header}");
}

/// A table with --per-layer has every row's per-layer misses, each named by its row (CSV
/// and JSON carry them in the row).
#[test]
fn per_layer_tables_name_their_rows() {
    let out = run(&[
        "sweep",
        "traces/golden",
        "--cache-experts",
        "0..64",
        "--points",
        "2",
        "--policies",
        "lru,fifo",
        "--per-layer",
        "--format",
        "table",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Per-layer misses, "))
        .collect();
    assert_eq!(
        names,
        [
            "lru, 0 experts:",
            "lru, 64 experts:",
            "fifo, 0 experts:",
            "fifo, 64 experts:"
        ],
        "{text}"
    );
}
