//! End-to-end tests of the moe-spill binary: golden numbers from the seed's script, the
//! real DeepSeek-V2-Lite recording, format round trips, and every kind of bad input.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{csv_rows, root};

/// The real recording, beside the project in ../shared (as in CI).
fn deepseek_csv() -> PathBuf {
    let p = root().join("../shared/traces/deepseek-v2-lite/csv");
    assert!(
        p.is_dir(),
        "{} is missing: these tests read the shared DeepSeek-V2-Lite recording",
        p.display()
    );
    p
}

fn run(args: &[&str]) -> Output {
    common::run_in(&root(), args)
}

fn ok(args: &[&str]) -> String {
    common::stdout_of(run(args), args)
}

/// A bad input: exit status 2, one line on stderr containing `want`, nothing on stdout.
fn fails(args: &[&str], want: &str) -> String {
    common::bad_input(run(args), args, &[want])
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// The seed script's printed table: 8 rows of (avg_active, avg_new) at 2 decimals.
fn parse_seed_output(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| l.contains('%') && l.contains('|'))
        .map(|l| {
            let f: Vec<&str> = l.split('|').map(|s| s.trim()).collect();
            (f[1].to_string(), f[2].to_string())
        })
        .collect()
}

/// Our CSV rounded to the script's 2 decimals.
fn analyze_2dp(args: &[&str]) -> Vec<(String, String)> {
    let mut a = vec!["analyze", "--format", "csv"];
    a.extend_from_slice(args);
    let out = ok(&a);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("threshold,avg_active,avg_new"));
    lines
        .take(8)
        .map(|l| {
            let f: Vec<f64> = l.split(',').skip(1).map(|x| x.parse().unwrap()).collect();
            (format!("{:.2}", f[0]), format!("{:.2}", f[1]))
        })
        .collect()
}

#[test]
fn golden_analyze_equals_the_seed_script() {
    let expected = parse_seed_output(
        &fs::read_to_string(root().join("traces/golden/seed_output.expected")).unwrap(),
    );
    assert_eq!(expected.len(), 8);
    assert_eq!(analyze_2dp(&["traces/golden"]), expected);
}

#[test]
fn golden_analyze_skips_prompt_blocks() {
    // traces/sample = traces/golden plus prompt blocks (token-major and layer-major
    // batches); the seed script refuses prompt blocks, analyze leaves them out.
    let expected = parse_seed_output(
        &fs::read_to_string(root().join("traces/golden/seed_output.expected")).unwrap(),
    );
    assert_eq!(analyze_2dp(&["traces/sample"]), expected);
    // With --phase all the prompt tokens count, so the numbers differ.
    assert_ne!(analyze_2dp(&["traces/sample", "--phase", "all"]), expected);
}

#[test]
fn golden_analyze_on_the_real_deepseek_recording() {
    // analyze_experts.py run on the recording converted to forum text
    // (moe-spill convert ../shared/traces/deepseek-v2-lite/csv -o DIR; cd DIR; python3 analyze_experts.py).
    let expected: Vec<(String, String)> = [
        ("45.29", "24.74"),
        ("151.63", "77.93"),
        ("403.78", "170.56"),
        ("868.60", "226.97"),
        ("1269.12", "165.11"),
        ("1474.97", "96.06"),
        ("1580.28", "50.20"),
        ("1599.26", "38.81"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let csv = deepseek_csv();
    assert_eq!(analyze_2dp(&[csv.to_str().unwrap()]), expected);
}

#[test]
fn real_recording_round_trips_through_binary_and_text() {
    let csv = deepseek_csv();
    let d = tmp();
    let a = d.path().join("a.mst");
    let text = d.path().join("text");
    let b = d.path().join("b.mst");
    ok(&[
        "convert",
        csv.to_str().unwrap(),
        "-o",
        a.to_str().unwrap(),
        "-q",
    ]);
    ok(&[
        "convert",
        a.to_str().unwrap(),
        "-o",
        text.to_str().unwrap(),
        "-q",
    ]);
    ok(&[
        "convert",
        text.to_str().unwrap(),
        "-o",
        b.to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(
        fs::read(&a).unwrap(),
        fs::read(&b).unwrap(),
        "csv -> mst -> text -> mst"
    );
    assert_eq!(fs::read_dir(&text).unwrap().count(), 999);
    let info = ok(&["info", a.to_str().unwrap(), "--format", "json"]);
    assert!(info.contains("\"model\": \"deepseek-v2-lite\""), "{info}");
    assert!(info.contains("\"tokens\": 94165"), "{info}");
    assert!(info.contains("\"accesses\": 14689740"), "{info}");
}

#[test]
fn canonical_text_round_trips_byte_for_byte() {
    let d = tmp();
    let m = d.path().join("g.mst");
    let back = d.path().join("back");
    ok(&["convert", "traces/golden", "-o", m.to_str().unwrap(), "-q"]);
    ok(&[
        "convert",
        m.to_str().unwrap(),
        "-o",
        back.to_str().unwrap(),
        "-q",
    ]);
    for r in 1..=3 {
        let name = format!("single_response_{r:03}.txt");
        assert_eq!(
            fs::read(root().join("traces/golden").join(&name)).unwrap(),
            fs::read(back.join(&name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn prompt_tokens_survive_conversion() {
    let d = tmp();
    let m = d.path().join("s.mst");
    ok(&["convert", "traces/sample", "-o", m.to_str().unwrap(), "-q"]);
    let info = ok(&["info", m.to_str().unwrap(), "--format", "json"]);
    assert!(info.contains("\"prompt_tokens\": 19"), "{info}");
    assert!(info.contains("\"decode_tokens\": 810"), "{info}");
    // Same analysis from the binary as from the text.
    assert_eq!(
        analyze_2dp(&[m.to_str().unwrap()]),
        analyze_2dp(&["traces/sample"])
    );
}

#[test]
fn analyze_per_layer_and_json() {
    let out = ok(&["analyze", "traces/golden", "--per-layer", "--format", "csv"]);
    assert!(
        out.contains("layer,entropy_bits,top10_share,avg_active"),
        "{out}"
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()) && l.split(',').count() == 4)
            .count(),
        4
    );
    let json = ok(&["analyze", "traces/golden", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["chunks"], 5);
    assert_eq!(v["rows"].as_array().unwrap().len(), 8);
}

#[test]
fn models_lists_presets_with_exact_expert_bytes() {
    let out = ok(&["models", "--format", "csv"]);
    let glm = out.lines().find(|l| l.starts_with("glm-5,")).unwrap();
    assert!(glm.contains(",20054016,"), "{glm}");
    let out = ok(&[
        "models",
        "--format",
        "csv",
        "--quant",
        "gate=iq3_s,up=iq3_s,down=iq4_xs",
    ]);
    let glm = out.lines().find(|l| l.starts_with("glm-5,")).unwrap();
    assert!(glm.contains(",17498112,"), "{glm}");
    for name in [
        "glm-4.6",
        "deepseek-v3",
        "deepseek-v2-lite",
        "kimi-k2",
        "qwen3-235b-a22b",
        "qwen3-30b-a3b",
        "qwen3-next-80b-a3b",
        "gpt-oss-120b",
        "gpt-oss-20b",
        "mixtral-8x7b",
        "mixtral-8x22b",
        "llama4-scout",
        "llama4-maverick",
        "olmoe-1b-7b",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{name},"))),
            "{name} missing"
        );
    }
}

fn first_row(json: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(json).unwrap()[0].clone()
}

#[test]
fn simulate_counts_add_up() {
    let out = ok(&[
        "simulate",
        "traces/golden",
        "--policy",
        "lru",
        "--cache-experts",
        "40",
        "--format",
        "json",
    ]);
    let v = first_row(&out);
    let (acc, hits, misses) = (
        v["accesses"].as_u64().unwrap(),
        v["hits"].as_u64().unwrap(),
        v["misses"].as_u64().unwrap(),
    );
    assert_eq!(acc, 810 * 16);
    assert_eq!(hits + misses, acc);
    assert_eq!(v["cold_misses"], 128);
    // Capacity 0: everything misses; capacity >= distinct ids: only cold misses.
    let out = ok(&[
        "simulate",
        "traces/golden",
        "--policy",
        "clock",
        "--cache-experts",
        "0",
        "--format",
        "json",
    ]);
    let v = first_row(&out);
    assert_eq!(v["misses"], v["accesses"]);
    let out = ok(&[
        "simulate",
        "traces/golden",
        "--policy",
        "arc",
        "--cache-experts",
        "128",
        "--format",
        "json",
    ]);
    let v = first_row(&out);
    assert_eq!(v["misses"], 128);
}

/// Names take any case, as `--hw` and `--model` do: the same rows either way.
#[test]
fn names_take_any_case() {
    let lower = ok(&[
        "simulate",
        "traces/golden",
        "--policy",
        "pinned:1:s3fifo",
        "--cache-experts",
        "40",
        "--io",
        "pread",
        "--phase",
        "decode",
        "--format",
        "csv",
    ]);
    let upper = ok(&[
        "simulate",
        "traces/golden",
        "--policy",
        "PINNED:1:S3FIFO",
        "--cache-experts",
        "40",
        "--io",
        "PREAD",
        "--phase",
        "Decode",
        "--format",
        "CSV",
    ]);
    assert_eq!(lower, upper);
    assert!(lower.contains(",pinned:1:s3fifo,"), "{lower}");
    // A drive preset in any case labels the rows with its own name.
    let drive = |name: &str| {
        ok(&[
            "simulate",
            "--cache-experts",
            "100",
            "--ssd",
            name,
            "--format",
            "csv",
            "-q",
        ])
    };
    assert_eq!(drive("T700"), drive("t700"));
    assert!(drive("T700").contains(",3090-ddr5 --ssd t700,"));
}

// ---- bad input: exit 2, one line naming the file and line, no partial output ----

#[test]
fn usage_errors_are_one_line_with_the_tip_and_the_usage() {
    let err = fails(
        &["simulate", "--ram", "12GiB", "--polcy", "lru"],
        "'--polcy'",
    );
    assert!(
        err.contains("tip: a similar argument exists: '--policy'"),
        "{err}"
    );
    assert!(err.contains("; usage: moe-spill simulate"), "{err}");
    fails(
        &["simulate", "--ram", "128GB"],
        "sizes are binary: write 128GiB",
    );
    fails(
        &["sweep", "--io", "nope"],
        "[possible values: mmap, pread, direct, rated]",
    );
    fails(
        &["frobnicate"],
        "unrecognized subcommand 'frobnicate'; usage:",
    );
    // Help and version are not errors.
    for args in [&["--version"][..], &["simulate", "--help"]] {
        let out = run(args);
        assert!(out.status.success() && !out.stdout.is_empty(), "{args:?}");
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

#[test]
fn bad_malformed_line() {
    let d = tmp();
    let f = write(
        d.path(),
        "bad.txt",
        "layer 1 expert 2\nlayer 1 expert 3\n---token---\nlayer 1 expert x\n",
    );
    fails(
        &["analyze", f.to_str().unwrap()],
        "bad.txt:4: expected `layer L expert E`",
    );
}

#[test]
fn bad_expert_outside_the_model() {
    let d = tmp();
    // DeepSeek-V2-Lite has experts 0..63.
    let mut text = String::new();
    for l in 1..=26 {
        for e in 0..6 {
            let e = if l == 5 && e == 2 { 64 } else { e };
            text += &format!("layer {l} expert {e}\n");
        }
    }
    let f = write(d.path(), "x.txt", &text);
    fails(
        &[
            "analyze",
            f.to_str().unwrap(),
            "--model",
            "deepseek-v2-lite",
        ],
        "x.txt:27: expert 64 is out of range for deepseek-v2-lite (64 experts per layer)",
    );
}

#[test]
fn bad_layer_outside_the_model() {
    let d = tmp();
    let f = write(d.path(), "l.txt", "layer 0 expert 1\nlayer 0 expert 2\n");
    fails(
        &["analyze", f.to_str().unwrap(), "--model", "glm-5"],
        "l.txt:1: layer 0 where layer 3 was expected",
    );
}

#[test]
fn bad_mixed_geometries() {
    let d = tmp();
    write(
        d.path(),
        "a_1.txt",
        "layer 1 expert 2\nlayer 1 expert 3\n---token---\n",
    );
    write(
        d.path(),
        "a_2.txt",
        "layer 1 expert 2\nlayer 2 expert 3\n---token---\n",
    );
    fails(
        &["analyze", d.path().to_str().unwrap()],
        "a_2.txt:2: layer 2 where layer 1 was expected",
    );
    let d2 = tmp();
    write(
        d2.path(),
        "b_1.txt",
        "layer 1 expert 2\nlayer 1 expert 3\n---token---\n",
    );
    write(
        d2.path(),
        "b_2.csv",
        "Layer ID,Batch Number,Token,Activated Expert IDs\n1,0,a,\"[1, 2, 3]\"\n",
    );
    fails(
        &["analyze", d2.path().to_str().unwrap()],
        "b_2.csv: geometry",
    );
}

#[test]
fn bad_empty_traces() {
    let d = tmp();
    let f = write(d.path(), "empty.txt", "");
    fails(&["analyze", f.to_str().unwrap()], "empty.txt: empty trace");
    let f = write(d.path(), "seps.txt", "---token---\n\n---token---\n");
    fails(&["analyze", f.to_str().unwrap()], "seps.txt:3: empty trace");
    let f = write(
        d.path(),
        "h.csv",
        "Layer ID,Batch Number,Token,Activated Expert IDs\n",
    );
    fails(&["analyze", f.to_str().unwrap()], "h.csv: empty trace");
    let e = tmp();
    fails(
        &["analyze", e.path().to_str().unwrap()],
        "directory holds no trace files",
    );
}

#[test]
fn bad_binaries() {
    let d = tmp();
    let m = d.path().join("g.mst");
    ok(&["convert", "traces/golden", "-o", m.to_str().unwrap(), "-q"]);
    let bytes = fs::read(&m).unwrap();
    let cut = write_bytes(d.path(), "cut.mst", &bytes[..bytes.len() - 7]);
    fails(&["analyze", cut.to_str().unwrap()], "cut.mst: byte");
    fails(&["analyze", cut.to_str().unwrap()], "truncated");
    let head = write_bytes(d.path(), "head.mst", &bytes[..20]);
    fails(
        &["analyze", head.to_str().unwrap()],
        "head.mst: byte 0: truncated in the header",
    );
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n - 100] ^= 0x10;
    let flipped = write_bytes(d.path(), "flip.mst", &flipped);
    fails(&["analyze", flipped.to_str().unwrap()], "checksum mismatch");
    let mut ver = bytes.clone();
    ver[8] = 9;
    let ver = write_bytes(d.path(), "ver.mst", &ver);
    fails(
        &["analyze", ver.to_str().unwrap()],
        "ver.mst: byte 8: unsupported version 9",
    );
}

#[test]
fn bad_binary_id_outside_its_layer() {
    use moe_spill::trace::{Geometry, Trace};
    let t = Trace {
        geometry: Geometry {
            layers: vec![1, 2],
            n_experts: 4,
            top_k: 1,
        },
        n_experts_known: true,
        // token 1, slot 0 holds id 5, which belongs to layer 2
        ids: vec![0, 4, 5, 6].into(),
        response_starts: vec![0, 2],
        prompt: vec![false, false],
    };
    let mut bytes = Vec::new();
    moe_spill::format::binary::write(&t, &mut bytes).unwrap();
    let d = tmp();
    let f = write_bytes(d.path(), "slot.mst", &bytes);
    fails(
        &["analyze", f.to_str().unwrap()],
        "id 5 is outside layer 1 (ids 0..3)",
    );
}

fn write_bytes(dir: &Path, name: &str, b: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, b).unwrap();
    p
}

#[test]
fn bad_unknown_format_and_missing_file() {
    let d = tmp();
    let f = write(d.path(), "notes.txt", "hello world\n");
    fails(
        &["analyze", f.to_str().unwrap()],
        "notes.txt: unknown trace format",
    );
    fails(
        &["analyze", "/nonexistent/trace.txt"],
        "/nonexistent/trace.txt: no such file or directory",
    );
    fails(
        &["analyze", "--model", "kimi-k2"],
        "the embedded default trace is glm-5, not kimi-k2",
    );
}

#[test]
fn bad_options() {
    fails(
        &["analyze", "traces/golden", "--model", "gpt-9"],
        "unknown model `gpt-9`",
    );
    fails(&["models", "--quant", "q9_9"], "unknown quant type `q9_9`");
    fails(
        &[
            "simulate",
            "traces/golden",
            "--policy",
            "lru2",
            "--cache-experts",
            "4",
        ],
        "invalid policy spec",
    );
    // The toy model has 4 MoE layers; pinned:2 pins 2 x 32 experts, more than a cache of 10.
    fails(
        &[
            "simulate",
            "traces/golden",
            "--policy",
            "pinned:5",
            "--cache-experts",
            "10",
        ],
        "cannot pin 5 layers",
    );
    fails(
        &[
            "simulate",
            "traces/golden",
            "--policy",
            "pinned:2",
            "--cache-experts",
            "10",
        ],
        "pinned:2",
    );
    // An option a command does not have: no tip to pass it as a value.
    let line = fails(
        &["kernel-replay", "--cache-experts", "3", "--io", "pread"],
        "unexpected argument '--io' found; usage: moe-spill kernel-replay",
    );
    assert!(!line.contains("to pass"), "{line}");
    // A pin that does not fit a RAM budget says from which RAM it would.
    fails(
        &["simulate", "--policy", "pinned:3", "--ram", "6GiB", "-q"],
        "policy pinned:3 pins 768 experts, more than a cache of 0: --ram 6 GiB leaves 0 after the 6 GiB reserve and the non-expert weights; it fits from 20.4 GiB",
    );
    // A negative number is a value, refused by the option's own check.
    fails(
        &["simulate", "--ssd-bw", "-1", "-q"],
        "SSD bandwidth_gbs must be a positive number, got -1 (from --ssd-bw)",
    );
    fails(
        &["sweep", "--points", "-3", "-q"],
        "invalid value '-3' for '--points <N>'",
    );
    // So is a range or list that starts with one, not the flags `-1`, `-2`.
    fails(
        &["sweep", "--ram", "-1..8", "-q"],
        "--ram: `-1`: a size must be zero or positive",
    );
    fails(
        &["sweep", "--vrams", "-24,48", "-q"],
        "invalid value '-24' for '--vrams <SIZE,...>'",
    );
    fails(
        &["sweep", "-j", "-2", "-q"],
        "invalid value '-2' for '--jobs <N>'",
    );
}

/// `info --format json` gives counts as numbers and flags as booleans; the embedded
/// trace, read from no file, has no load rate.
#[test]
fn info_json_has_numbers() {
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["info", "traces/golden", "--format", "json"])).unwrap();
    assert_eq!(v["tokens"], 810);
    assert_eq!(v["accesses"], 12960);
    assert_eq!(v["experts_known"], false);
    assert!(v["load_mb_per_s"].as_f64().unwrap() > 0.0);
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["info", "--format", "json", "-q"])).unwrap();
    assert_eq!(v["file_bytes"], 0);
    assert!(v["load_mb_per_s"].is_null());
}

/// A trace shorter than one 128-token chunk has no U and D: simulate and sweep leave the
/// analytic columns empty and say why, rather than price U = D = 0.
#[test]
fn no_analytic_estimate_without_a_whole_chunk() {
    let d = tmp();
    let t = d.path().join("tiny.mst");
    let t = t.to_str().unwrap();
    ok(&[
        "synth",
        "--model",
        "glm-5",
        "--tokens",
        "50",
        "--responses",
        "2",
        "-q",
        "-o",
        t,
    ]);
    let table = ok(&["simulate", t, "--cache-experts", "100", "--format", "table"]);
    assert!(
        table.contains("U and D undefined (no response has a whole 128-token chunk"),
        "{table}"
    );
    for (cmd, budget) in [("simulate", "100"), ("sweep", "100..200")] {
        let rows: serde_json::Value = serde_json::from_str(&ok(&[
            cmd,
            t,
            "--cache-experts",
            budget,
            "--format",
            "json",
            "-q",
        ]))
        .unwrap();
        assert!(rows[0]["analytic_tok_s"].is_null(), "{cmd}");
        assert!(rows[0]["analytic_ssd_bytes_per_token"].is_null(), "{cmd}");
        assert!(rows[0]["est_tok_s"].as_f64().unwrap() > 0.0, "{cmd}");
    }
    // analyze has nothing else to say: an error, as estimate's, not a table of zeros.
    for format in ["table", "csv", "json"] {
        fails(
            &["analyze", t, "--format", format],
            "no response has a whole 128-token chunk (the longest has 50 tokens): U and D are undefined; give a smaller --chunk",
        );
    }
    assert!(ok(&["analyze", t, "--chunk", "16", "--format", "csv"]).starts_with("threshold,"));
}

/// Without llama.cpp (the default build), `record` says in one line how to get it,
/// whatever it is given.
#[cfg(not(feature = "record"))]
#[test]
fn record_without_the_feature_says_how_to_build_it() {
    for args in [
        &["record"][..],
        &[
            "record",
            "--gguf",
            "m.gguf",
            "--prompts",
            "p.txt",
            "-o",
            "t.mst",
        ],
    ] {
        fails(args, "cargo install --path . --features record");
    }
}

#[test]
fn failing_convert_leaves_no_partial_output() {
    let d = tmp();
    write(
        d.path(),
        "in_1.txt",
        "layer 1 expert 2\nlayer 1 expert 3\n---token---\n",
    );
    write(
        d.path(),
        "in_2.txt",
        "layer 1 expert 2\nlayer 1 expert 3\n---token---\nlayer 1 expert 9 9\n",
    );
    let out = tempfile::tempdir().unwrap();
    let m = out.path().join("o.mst");
    fails(
        &[
            "convert",
            d.path().to_str().unwrap(),
            "-o",
            m.to_str().unwrap(),
        ],
        "in_2.txt:4:",
    );
    let dir = out.path().join("o_dir");
    fails(
        &[
            "convert",
            d.path().to_str().unwrap(),
            "-o",
            dir.to_str().unwrap(),
        ],
        "in_2.txt:4:",
    );
    assert_eq!(
        fs::read_dir(out.path()).unwrap().count(),
        0,
        "nothing written, no temporary left"
    );
    // An existing non-empty output directory is refused, not overwritten.
    let full = tempfile::tempdir().unwrap();
    write(full.path(), "keep.txt", "x");
    fails(
        &[
            "convert",
            "traces/golden",
            "-o",
            full.path().to_str().unwrap(),
        ],
        "output directory exists",
    );
    assert!(full.path().join("keep.txt").exists());
}

// ---- issue 4: time model, estimate, simulate --ram, sweep ----

#[test]
fn estimate_reproduces_the_seed_figures() {
    let mixed = "gate=iq3_s,up=iq3_s,down=iq4_xs";
    for (hw, quant, want) in [
        ("p40x3-ddr4", "iq4_xs", 2.98),
        ("3090-ddr5", mixed, 3.47),
        ("3090-ddr5-raid0", mixed, 5.89),
    ] {
        let out = ok(&[
            "estimate", "--u", "13190", "--d", "2412", "--hw", hw, "--quant", quant, "--format",
            "csv",
        ]);
        let row = &csv_rows(&out)[0];
        let got: f64 = row["analytic_tok_s"].parse().unwrap();
        assert!((got - want).abs() < 0.01, "{hw}: {got} vs {want}");
    }
    let table = ok(&[
        "estimate", "--u", "13190", "--d", "2412", "--format", "table",
    ]);
    assert!(table.contains("54.0 ms"), "{table}");
    assert!(table.contains("45/(128*7) = 50 ms"), "{table}");
    assert!(!table.contains("beyond the RAM"), "{table}");
    // Non-expert weights beyond the RAM: the analytic model leaves them out, and says so.
    let out = run(&[
        "estimate",
        "--u",
        "13190",
        "--d",
        "2412",
        "--hw",
        "desktop-cpu",
        "--ram",
        "10GiB",
        "--format",
        "table",
    ]);
    let (table, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        table.contains(
            "(19.32 GB of them on the CPU side, 15.02 GB of those beyond the RAM, left out)"
        ),
        "{table}"
    );
    assert!(
        err.contains("a real run reads 15.02 GB of them from the drive every token, which the analytic model leaves out"),
        "{err}"
    );
}

#[test]
fn simulate_with_a_ram_budget_on_real_data() {
    let csv = deepseek_csv();
    let out = ok(&[
        "simulate",
        csv.to_str().unwrap(),
        "--policy",
        "lru",
        "--ram",
        "10GiB",
        "--hw",
        "desktop-cpu",
        "--format",
        "csv",
    ]);
    let row = &csv_rows(&out)[0];
    for col in [
        "policy",
        "ram_bytes",
        "cache_experts",
        "tokens",
        "accesses",
        "hits",
        "misses",
        "cold_misses",
        "ssd_bytes",
        "ssd_bytes_per_token",
        "ssd_bytes_per_token_p50",
        "ssd_bytes_per_token_p99",
        "est_tok_s",
        "analytic_ssd_bytes_per_token",
        "analytic_tok_s",
    ] {
        assert!(
            row.contains_key(col) && !row[col].is_empty(),
            "column {col}: {row:?}"
        );
    }
    // DeepSeek-V2-Lite at iq4_xs (down falls back to iq4_nl): 4,685,824 B per expert;
    // desktop-cpu keeps the 1.10e9 q8_0 non-expert parameters in RAM beside a 6 GiB reserve.
    let expert = 4_685_824f64;
    let free = (10.0 - 6.0) * (1u64 << 30) as f64 - 1.10e9 * 8.5 / 8.0;
    assert_eq!(
        row["cache_experts"],
        ((free / expert).floor() as u64).to_string()
    );
    let misses: u64 = row["misses"].parse().unwrap();
    assert_eq!(row["ssd_bytes"], (misses * 4_685_824).to_string());
    assert_eq!(row["accesses"], "14689740");
    // The analytic estimate is optimistic at low RAM: fewer SSD bytes than simulated.
    let sim: f64 = row["ssd_bytes_per_token"].parse().unwrap();
    let ana: f64 = row["analytic_ssd_bytes_per_token"].parse().unwrap();
    assert!(ana < sim, "analytic {ana} vs simulated {sim}");
}

#[test]
fn sweep_lru_equals_simulate_at_each_budget_and_writes_csv() {
    let csv = deepseek_csv();
    let d = tmp();
    let out = d.path().join("sweep.csv");
    ok(&[
        "sweep",
        csv.to_str().unwrap(),
        "--hw",
        "desktop-cpu",
        "--policies",
        "lru,clock,pinned:3,opt",
        "--ram",
        "7GiB..13GiB",
        "--points",
        "4",
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]);
    // The sweep takes its shortcuts (one stack-distance pass for lru and pinned:3, one
    // banded-stack pass for opt, no replay at 7 GiB = 0 experts); simulate runs each
    // budget on its own (opt as the bit-tree policy). pinned:3 (192 experts) skips the 0-expert budget.
    let rows = csv_rows(&fs::read_to_string(&out).unwrap());
    assert_eq!(rows.len(), 15);
    assert!(rows.iter().any(|r| r["cache_experts"] == "0"));
    for r in &rows {
        let sim = ok(&[
            "simulate",
            csv.to_str().unwrap(),
            "--hw",
            "desktop-cpu",
            "--policy",
            &r["policy"],
            "--cache-experts",
            &r["cache_experts"],
            "--format",
            "csv",
        ]);
        let s = &csv_rows(&sim)[0];
        for col in [
            "misses",
            "cold_misses",
            "ssd_bytes_per_token_p50",
            "ssd_bytes_per_token_p99",
        ] {
            assert_eq!(
                r[col], s[col],
                "{} at {}: {col}",
                r["policy"], r["cache_experts"]
            );
        }
    }
    // Budgets ascend, and LRU misses never grow with the budget.
    let lru: Vec<u64> = rows
        .iter()
        .filter(|r| r["policy"] == "lru")
        .map(|r| r["misses"].parse().unwrap())
        .collect();
    assert!(lru.windows(2).all(|w| w[0] >= w[1]), "{lru:?}");
}

#[test]
fn sweep_per_layer_and_vram_sizes() {
    let csv = deepseek_csv();
    let out = ok(&[
        "sweep",
        csv.to_str().unwrap(),
        "--hw",
        "4090-ddr5",
        "--policies",
        "lru,fifo",
        "--ram",
        "8GiB..12GiB",
        "--points",
        "2",
        "--partition",
        "per-layer",
        "--vrams",
        "0,8",
        "--per-layer",
        "-q",
        "--format",
        "csv",
    ]);
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), 8);
    // With 8 GiB VRAM (5 GiB usable after the 3 GiB reserve, 1.17 GB of it non-expert
    // weights) 14 MoE layers of 64 x 4.69 MB move to the GPU; per-layer misses cover
    // only the CPU-side layers.
    let g4: Vec<_> = rows.iter().filter(|r| r["vram_gib"] == "8").collect();
    let g0: Vec<_> = rows.iter().filter(|r| r["vram_gib"] == "0").collect();
    assert_eq!(g0[0]["gpu_layers"], "0");
    assert_eq!(g4[0]["gpu_layers"], "14", "{:?}", g4[0]);
    for r in &rows {
        let per_layer: u64 = (1..=26)
            .filter_map(|l| r.get(&format!("misses_layer_{l}")))
            .filter(|v| !v.is_empty())
            .map(|v| v.parse::<u64>().unwrap())
            .sum();
        assert_eq!(per_layer.to_string(), r["misses"]);
    }
}

#[test]
fn bad_time_model_inputs() {
    let csv = deepseek_csv();
    let c = csv.to_str().unwrap();
    // Below the reserve nothing is cached, as in a sweep's budgets from 0 GiB.
    let low = ok(&[
        "simulate",
        c,
        "--ram",
        "4GiB",
        "--hw",
        "3090-ddr5",
        "--format",
        "csv",
        "-q",
    ]);
    let r = &csv_rows(&low)[0];
    assert_eq!(
        (r["cache_experts"].as_str(), r["hits"].as_str()),
        ("0", "0")
    );
    fails(
        &["simulate", c, "--ram", "64GiB", "--hw", "nope"],
        "unknown hardware `nope`",
    );
    fails(
        &["simulate", c, "--ram", "64GiB", "--ssd-bw", "0"],
        "SSD bandwidth_gbs must be a positive number",
    );
    fails(
        &["simulate", c, "--ram", "64GiB", "--ram-bw=-3"],
        "RAM bandwidth_gbs must be a positive number",
    );
    fails(
        &["sweep", c, "--ram", "64GiB..8GiB"],
        "the range is inverted",
    );
    fails(
        &[
            "simulate",
            c,
            "--ram",
            "64GiB",
            "--hw",
            "desktop-cpu",
            "--policy",
            "pinned:30",
        ],
        "cannot pin 30 layers",
    );
    fails(
        &[
            "simulate",
            c,
            "--cache-experts",
            "100",
            "--gpus",
            "0",
            "--policy",
            "pinned:3",
        ],
        "policy pinned:3 pins 192 experts, more than a cache of 100",
    );
    fails(
        &["simulate", c, "--ram", "64GiB", "--model", "glm-5"],
        "prompt_1_data.csv: geometry 26 MoE layers (1..26) x 64 experts, top-6: its layers and top-k differ from the 75 MoE layers (3..77), top-8 of the chosen model",
    );
    fails(
        &["simulate", "traces/golden", "--ram", "64GiB"],
        "--ram needs a model preset",
    );
    let d = tmp();
    let f = write(d.path(), "hw.toml", "name = \"x\"\n[ram]\nsize_gib = 64\nbandwidth_gbs = 60\nspeed = 1\n[ssd]\nbandwidth_gbs = 5\n");
    fails(
        &["simulate", c, "--ram", "64GiB", "--hw", f.to_str().unwrap()],
        "hw.toml:5: unknown field `speed`",
    );
    // A failing sweep leaves no CSV behind.
    let out = d.path().join("s.csv");
    fails(
        &[
            "sweep",
            c,
            "--policies",
            "lru,pinned:2",
            "--partition",
            "per-layer",
            "-o",
            out.to_str().unwrap(),
        ],
        "per-layer",
    );
    assert!(!out.exists());
    assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1, "only hw.toml");
}

#[test]
fn no_trace_means_the_embedded_glm5_default() {
    let out = run(&["analyze", "--format", "csv"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("using the embedded default embedded-glm-5-synthetic"),
        "{err}"
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let last = text.lines().nth(8).unwrap();
    let f: Vec<f64> = last
        .split(',')
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    // Calibrated to the seed's U = 13190 (within 2%) and D = 2412 (within 5%).
    assert!((f[0] / 13190.0 - 1.0).abs() < 0.02, "U {}", f[0]);
    assert!((f[1] / 2412.0 - 1.0).abs() < 0.05, "D {}", f[1]);
    // The main job: a sweep with no arguments covers every default policy.
    let sweep = ok(&["sweep", "-q", "--points", "5", "--format", "csv"]);
    let rows = csv_rows(&sweep);
    let policies: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r["policy"].as_str()).collect();
    assert_eq!(
        policies.into_iter().collect::<Vec<_>>(),
        vec!["arc", "clock", "linux", "lru", "opt", "pinned:3"]
    );
    assert!(rows
        .iter()
        .all(|r| r["trace"] == "embedded-glm-5-synthetic" && r["model"] == "glm-5"));
}

/// `synth --top-k`: a trace of a preset's experts at another number per token (Flash-MoE
/// runs Qwen3.5-397B at 4 of 10), which simulate prices at that number, whether the model
/// is named or found from the trace; bad values are one-line errors.
#[test]
fn synth_top_k_gives_a_reduced_routing_that_simulate_prices() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("k4.mst");
    let t = t.to_str().unwrap();
    ok(&[
        "synth",
        "--model",
        "qwen3.5-397b",
        "--top-k",
        "4",
        "--responses",
        "1",
        "--tokens",
        "20",
        "-q",
        "-o",
        t,
    ]);
    let info = ok(&["info", t, "--format", "json"]);
    assert!(
        info.contains("top-4") || info.contains("\"top_k\":4"),
        "{info}"
    );
    for named in [true, false] {
        let mut args = vec![
            "simulate",
            t,
            "--quant",
            "q4_k",
            "--cache-experts",
            "0",
            "--gpus",
            "0",
            "--format",
            "json",
        ];
        if named {
            args.extend(["--model", "qwen3.5-397b-a17b"]);
        }
        let out = run(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("routes 4 experts") && err.contains("routes 10"),
            "{err}"
        );
        let v = first_row(&String::from_utf8(out.stdout).unwrap());
        // Every access misses: 60 layers x 4 experts of 7,077,888 B per token.
        assert_eq!(v["accesses"], 20 * 60 * 4);
        assert_eq!(v["model"], "qwen3.5-397b-a17b");
        assert_eq!(
            v["ssd_bytes_per_token"].as_f64().unwrap(),
            240.0 * 7_077_888.0
        );
    }
    fails(
        &["simulate", t, "--model", "glm-5", "--cache-experts", "0"],
        "glm-5 has 256",
    );
    let o = dir.path().join("x.mst");
    let o = o.to_str().unwrap();
    fails(
        &["synth", "--model", "qwen3.5-397b", "--top-k", "0", "-o", o],
        "--top-k 0",
    );
    fails(
        &["synth", "--model", "olmoe-1b-7b", "--top-k", "65", "-o", o],
        "1 to 64",
    );
    fails(&["synth", "--fit", t, "--top-k", "4", "-o", o], "--top-k");
}

/// kernel-replay runs token by token through the page cache, faulting through a mapping
/// with `--advice`: the options of the simulated engines and batches are not its own.
#[test]
fn kernel_replay_has_no_simulate_only_options() {
    for extra in [
        &["--mmap-advice", "willneed"][..],
        &["--io", "pread"],
        &["--io-workers", "3"],
        &["--no-read-overlap"],
        &["--partition", "per-layer"],
        &["--pin-profile", "x.mst"],
        &["--per-layer"],
        &["--ubatch", "4"],
        &["--parallel", "2"],
        &["--prompt-tokens", "5"],
        &["--no-op-offload"],
    ] {
        let mut args = vec!["kernel-replay", "--cache-experts", "10", "-q"];
        args.extend_from_slice(extra);
        fails(&args, &format!("unexpected argument '{}'", extra[0]));
    }
    // A budget is required: either form, not both.
    fails(
        &["kernel-replay", "-q"],
        "required arguments were not provided: <--ram <SIZE,...>|--cache-experts <N,...>>",
    );
    fails(
        &[
            "kernel-replay",
            "--ram",
            "8GiB",
            "--cache-experts",
            "3",
            "-q",
        ],
        "cannot be used with",
    );
    // Outputs onto the model file it lays out, or onto each other, before the run.
    let d = tmp();
    let f = d.path().join("kf.bin");
    let f = f.to_str().unwrap();
    let budget = [
        "kernel-replay",
        "traces/golden",
        "--cache-experts",
        "5",
        "-q",
    ];
    for out in [["-o", f], ["--per-token", f]] {
        fails(
            &[&budget[..], &["--file", f], &out[..]].concat(),
            "is also the model's --file",
        );
    }
    let (o, t) = (d.path().join("a.csv"), d.path().join("./a.csv"));
    let (o, t) = (o.to_str().unwrap(), t.to_str().unwrap());
    fails(
        &[&budget[..], &["-o", o, "--per-token", t]].concat(),
        "is also --per-token",
    );
    assert!(!d.path().join("kf.bin").exists());
}

/// `synth --fit` on a recording too short for pairs of 128-token chunks fits at a
/// smaller chunk; when that fails, the message says so.
#[test]
fn a_fit_that_fails_on_short_responses_says_why() {
    let d = tmp();
    let (t, o) = (d.path().join("s.mst"), d.path().join("f.mst"));
    let (t, o) = (t.to_str().unwrap(), o.to_str().unwrap());
    ok(&[
        "synth",
        "--model",
        "glm-5",
        "--tokens",
        "200",
        "--responses",
        "3",
        "-q",
        "-o",
        t,
    ]);
    fails(
        &["synth", "--fit", t, "-q", "-o", o],
        "per 32-token chunk at any topic drift (the recording has 0 pairs of consecutive 128-token chunks, fewer than the 8 a fit at 128 takes",
    );
}

/// The mistakes a new user makes first end in a line that says what to type instead.
#[test]
fn first_mistakes_name_the_next_step() {
    fails(
        &["simulate", "--model", "deepseek-v3", "--ram", "64GiB", "-q"],
        "or make one: moe-spill synth --model deepseek-v3 -o deepseek-v3.mst",
    );
    fails(
        &["simulate", "--quant", "q4_k_m", "--ram", "64GiB", "-q"],
        "for the llama.cpp file type write it in capitals: --quant Q4_K_M",
    );
    fails(
        &[
            "simulate",
            "--quant",
            "q4_k",
            "--ram",
            "64GiB",
            "--hw",
            "no-such-box.toml",
            "-q",
        ],
        "no-such-box.toml: no such file or directory",
    );
    fails(
        &["simulate", "--ram", "64GiB", "--hw", "no-such-box", "-q"],
        "unknown hardware `no-such-box`: neither a preset (p40x3-ddr4",
    );
}

/// Below the RAM the non-expert weights need, the rows read them every token: a note
/// says so (the cache columns alone show 0 experts at every such budget).
#[test]
fn paged_non_expert_weights_are_noted() {
    let args = [
        "simulate",
        "--hw",
        "desktop-cpu",
        "--ram",
        "12GiB",
        "--format",
        "csv",
    ];
    let out = run(&args);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("at 12 GiB the non-expert weights do not fit beside the 6 GiB reserve: 12.87 GB of them are read from the drive every token"),
        "{err}"
    );
    let fits = run(&[
        "simulate",
        "--hw",
        "desktop-cpu",
        "--ram",
        "64GiB",
        "--format",
        "csv",
    ]);
    assert!(!String::from_utf8_lossy(&fits.stderr).contains("non-expert"));
    let sweep = run(&[
        "sweep",
        "--hw",
        "desktop-cpu",
        "--policies",
        "lru",
        "--format",
        "csv",
    ]);
    let err = String::from_utf8_lossy(&sweep.stderr);
    assert!(
        err.contains("3 budget(s) below 24.0 GiB cannot hold the non-expert weights"),
        "{err}"
    );
}

/// `simulate` without --ram prices the profile's installed RAM.
#[test]
fn simulate_takes_the_profile_ram_without_ram() {
    let base = ["simulate", "--hw", "4090-ddr5", "--format", "csv", "-q"];
    let mut with = base.to_vec();
    with.extend(["--ram", "96GiB"]);
    assert_eq!(ok(&base), ok(&with));
    let out = run(&["simulate", "--hw", "4090-ddr5", "--format", "csv"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no --ram: the 96 GiB of `4090-ddr5`"));
}

/// An error after a note (the embedded default trace, the profile's RAM) is still the
/// one line: notes wait until the checks pass.
#[test]
fn argument_errors_are_one_line_after_notes() {
    for (args, want) in [
        (&["simulate", "--ubatch", "0"][..], "--ubatch 0"),
        (&["simulate", "--parallel", "0"], "--parallel 0"),
        (&["sweep", "--parallel", "0"], "--parallel 0"),
        (&["simulate", "--quant", "q4_k_m"], "--quant Q4_K_M"),
        (&["sweep", "-j", "0"], "-j 0: give at least one worker"),
        (
            &["simulate", "--gpus", "0", "--vram", "24"],
            "--vram describes a GPU, and --gpus 0 leaves none",
        ),
        (
            &["simulate", "--hw", "desktop-cpu", "--gpus", "1"],
            "`desktop-cpu` has no GPU whose figures they could share: give --vram and --vram-bw",
        ),
        (
            &["simulate", "--vram", "0"],
            "for a machine without one give --gpus 0",
        ),
        (
            &["simulate", "--hw", "desktop-cpu", "--vram", "24"],
            "--vram describes a GPU: `desktop-cpu` has none (add --gpus 1)",
        ),
        (
            &["simulate", "--ram-bw", "0.05"],
            "RAM bandwidth_gbs = 0.05 is less than any machine has",
        ),
        (
            &["simulate", "--ssd-latency-us", "96000"],
            "SSD latency_us = 96000 is more than",
        ),
        (
            &["simulate", "--ssd-bw", "0.001"],
            "SSD bandwidth_gbs = 0.001 is less",
        ),
        (
            &["estimate", "--u", "700", "--d", "800"],
            "--d 800 is more than --u 700",
        ),
        (
            &["estimate", "--u", "100", "--d", "10"],
            "--u 100 is fewer than one token of glm-5 routes to (600",
        ),
        (
            &["simulate", "--ssd-drives", "100000"],
            "100000 is not in 1..=256",
        ),
        (
            &["simulate", "--gpus", "4294967295"],
            "4294967295 is not in 0..=64",
        ),
        (
            &[
                "kernel-replay",
                "--hw",
                "desktop-cpu",
                "--cache-experts",
                "0",
            ],
            "--cache-experts 0: the page cache needs room for one expert",
        ),
        (
            &["simulate", "--quant", "gate=iq3_s,gate=q8_0"],
            "--quant: `gate` is given twice",
        ),
        (
            &[
                "simulate",
                "--hw",
                "desktop-cpu",
                "--gpus",
                "2",
                "--vram",
                "24",
            ],
            "no GPU whose figures they could share: give --vram-bw too",
        ),
        (
            &["sweep", "--vrams", "24576"],
            "GPU vram_gib = 24576 is more than any machine has",
        ),
        (
            &["sweep", "--ram", "0..131072"],
            "RAM size_gib = 131072 is more than any machine has",
        ),
        (
            &[
                "sweep",
                "--cache-experts",
                "0..18446744073709551615",
                "--step",
                "1",
            ],
            "--step gives 18446744073709551616 budgets; at most 10000",
        ),
        (
            &["simulate", "--vram-reserve", "30"],
            "GPU reserve_gib = 30 leaves nothing of vram_gib = 24",
        ),
        (
            &["sweep", "-o", "/nonexistent-dir/x.csv"],
            "/nonexistent-dir is not a directory; choose another -o",
        ),
        (
            &["synth", "--model", "glm-5", "-o", "/nonexistent-dir/a.mst"],
            "/nonexistent-dir is not a directory",
        ),
        (
            &[
                "estimate",
                "--u",
                "13190",
                "--d",
                "2412",
                "--model",
                "deepseek-v2-lite",
            ],
            "--u 13190 is more than a 128-token chunk of deepseek-v2-lite can route to (1664",
        ),
    ] {
        fails(args, want);
    }
    // A GPU added to a CPU preset takes the figures given.
    let out = ok(&[
        "simulate",
        "--hw",
        "desktop-cpu",
        "--gpus",
        "1",
        "--vram",
        "16",
        "--vram-bw",
        "448",
        "--format",
        "csv",
        "-q",
    ]);
    let t_vram: f64 = csv_rows(&out)[0]["t_vram_ms"].parse().unwrap();
    assert!(t_vram > 0.0, "{out}");
    // Every expert in VRAM: nothing from the drive, written as 0 (not -0).
    let all = ok(&["simulate", "--vram", "1000", "--format", "csv", "-q"]);
    assert_eq!(csv_rows(&all)[0]["device_bytes_per_token"], "0");
    // A cache beyond the experts that reach it holds them all: said, and the header's
    // RAM is the row's.
    let out = run(&["simulate", "--cache-experts", "99999", "--format", "table"]);
    let (table, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        err.contains("--cache-experts 99999 is more than the 19200 experts that reach the cache"),
        "{err}"
    );
    assert!(table.contains("RAM per row (ram_gib) @ 96 GB/s"), "{table}");
    let out = run(&["simulate", "--vram", "1000", "--cache-experts", "5"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--cache-experts 5: no expert reaches the cache (every MoE layer is in VRAM)"),
        "{err}"
    );
    // Nor does any access reach the cache: no hit rate (empty, null, "-"), not 0.
    assert_eq!(csv_rows(&all)[0]["accesses"], "0");
    assert_eq!(csv_rows(&all)[0]["hit_rate"], "");
    let json = ok(&["simulate", "--vram", "1000", "--format", "json", "-q"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v[0]["hit_rate"].is_null(), "{json}");
    // estimate takes a RAM below the reserve as simulate does: no page cache.
    ok(&[
        "estimate", "--u", "13190", "--d", "2412", "--ram", "4GiB", "-q",
    ]);
}

/// A profile's implausible value names the file and the line of its field.
#[test]
fn profile_value_errors_name_the_line() {
    let d = tmp();
    let profile = |name: &str, body: &str| {
        let p = d.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_string()
    };
    let base = "name = \"box\"\n[ram]\nsize_gib = 64\nbandwidth_gbs = 60\n";
    let f = profile(
        "f.toml",
        &format!("{base}fault_gbs = 0.09\n[ssd]\nbandwidth_gbs = 7\n"),
    );
    fails(
        &["simulate", "--hw", &f, "-q"],
        "f.toml:5: RAM fault_gbs = 0.09 is less than any machine has",
    );
    let s = profile("s.toml", &format!("{base}[ssd]\nbandwidth_gbs = 12400\n"));
    fails(
        &["simulate", "--hw", &s, "-q"],
        "s.toml:6: SSD bandwidth_gbs = 12400 is more",
    );
    let c = profile(
        "c.toml",
        &format!(
            "{base}[ssd]\nbandwidth_gbs = 7\n[cpu]\nthreads = 8\n[cpu.gbs_per_thread]\niq9_z = 3\n"
        ),
    );
    fails(
        &["simulate", "--hw", &c, "-q"],
        "c.toml:10: CPU gbs_per_thread",
    );
    // A TOML profile that opens with a table is TOML, not a JSON list.
    let t = profile(
        "t.toml",
        "[ram]\nsize_gib = 64\nbandwidth_gbs = 60\n[ssd]\nbandwidth_gbs = 7\n",
    );
    fails(
        &["simulate", "--hw", &t, "-q"],
        "t.toml:1: missing field `name`",
    );
}

/// A forum trace that routes fewer experts than its model (Flash-MoE's K = 4 of 10) reads
/// with --model as without it: the file's decode tokens tell its top-k, the model's only
/// splits prompt batches of a file without one; a file that names other layers or
/// another order says which.
#[test]
fn a_named_model_takes_a_forum_trace_of_another_top_k() {
    let d = tmp();
    let dir = d.path().join("q4");
    let dir = dir.to_str().unwrap();
    ok(&[
        "synth",
        "--model",
        "qwen3.5-397b-a17b",
        "--top-k",
        "4",
        "--tokens",
        "40",
        "--responses",
        "2",
        "--prompt-tokens",
        "8",
        "-q",
        "-o",
        dir,
    ]);
    let json = |more: &[&str]| {
        let mut args = vec!["info", dir, "--format", "json", "-q"];
        args.extend(more);
        let v: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
        (v["tokens"].clone(), v["geometry"].clone())
    };
    assert_eq!(json(&[]), json(&["--model", "qwen3.5-397b-a17b"]));
    assert_eq!(json(&[]).1, "60 MoE layers (0..59) x 512 experts, top-4");
    fails(
        &["info", "traces/sample/single_response_001.txt", "--model", "deepseek-v2-lite"],
        "single_response_001.txt:130: token ends after 16 expert lines (4 layers x top-4); the chosen model has 26 MoE layers (1..26)",
    );
    // Layers 2 and 3 swapped in a copy of the recording's first prompt.
    let text = std::fs::read_to_string(deepseek_csv().join("prompt_1_data.csv")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let body = lines.split_off(1);
    let first = |l: &&str| l.split(',').next().unwrap_or("").to_string();
    let layer = |n: &'static str| body.iter().filter(move |l| first(l) == n);
    let rest = body
        .iter()
        .filter(|l| !["1", "2", "3"].contains(&first(l).as_str()));
    lines.extend(layer("1").chain(layer("3")).chain(layer("2")).chain(rest));
    let swapped = d.path().join("swapped.csv");
    std::fs::write(&swapped, lines.join("\n") + "\n").unwrap();
    fails(
        &["info", swapped.to_str().unwrap(), "--model", "deepseek-v2-lite"],
        "lists its MoE layers in another order than the chosen model: layer 3 comes 2nd where the chosen model has layer 2",
    );
}

/// A recording with one expert id beyond its model's matches no preset: a note says
/// which preset it would be and how to find the line.
#[test]
fn an_id_beyond_the_presets_experts_is_named() {
    let d = tmp();
    let text = std::fs::read_to_string(deepseek_csv().join("prompt_1_data.csv")).unwrap();
    let bad = d.path().join("bad.csv");
    std::fs::write(&bad, text.replacen("\"[8, 26,", "\"[99, 26,", 1)).unwrap();
    let bad = bad.to_str().unwrap();
    let out = run(&["info", bad]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the trace has the MoE layers of deepseek-v2-lite but expert ids up to 99 (it has 64 experts per layer), so no model preset matches; --model deepseek-v2-lite names the line"),
        "{err}"
    );
    fails(
        &["info", bad, "--model", "deepseek-v2-lite"],
        "bad.csv:2: expert 99 is out of range for deepseek-v2-lite (64 experts per layer)",
    );
}

/// A preset without a CPU: hardware's CSV leaves its figures empty (the table shows
/// "-"), and simulate says which threads fault and leaves the matmul time empty.
#[test]
fn a_profile_without_a_cpu_says_what_stands_in() {
    let csv = ok(&["hardware", "--format", "csv"]);
    let p40 = &csv_rows(&csv)[0];
    assert_eq!(p40["hardware"], "p40x3-ddr4");
    assert_eq!(p40["threads"], "");
    let table = ok(&["hardware", "--format", "table"]);
    let line = table.lines().find(|l| l.starts_with("p40x3-ddr4")).unwrap();
    assert!(line.contains(" - "), "{line}");
    let out = run(&["simulate", "--hw", "p40x3-ddr4", "--format", "csv"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`p40x3-ddr4` names no CPU: 8 threads fault and read"),
        "{err}"
    );
    let row = &csv_rows(&String::from_utf8_lossy(&out.stdout))[0];
    assert_eq!(row["t_compute_ms"], "");
    assert!(row["est_tok_s"].parse::<f64>().unwrap() > 0.0);
}

/// --cpu-moe and --n-cpu-moe on a machine without a GPU change nothing, and a note says
/// so (the rows are those without them).
#[test]
fn gpu_placement_flags_without_a_gpu_are_noted() {
    let base = [
        "simulate",
        "--hw",
        "desktop-cpu",
        "--cache-experts",
        "100",
        "--format",
        "csv",
    ];
    let plain = ok(&base);
    for flag in [&["--cpu-moe"][..], &["--n-cpu-moe", "5"]] {
        let mut args = base.to_vec();
        args.extend(flag);
        let out = run(&args);
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap(), plain);
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains(&format!(
                "note: {} changes nothing without a GPU (`desktop-cpu` has none)",
                flag[0]
            )),
            "{err}"
        );
    }
}

/// Non-expert weights that do not fit in VRAM run from RAM, which llama.cpp with every
/// layer offloaded would not do: a note says so; where they fit, none.
#[test]
fn non_expert_weights_beyond_vram_are_noted() {
    let dir = tmp();
    let t = dir.path().join("g46.mst");
    let t = t.to_str().unwrap();
    ok(&[
        "synth",
        "--model",
        "glm-4.6",
        "--responses",
        "1",
        "--tokens",
        "50",
        "-q",
        "-o",
        t,
    ]);
    let note = |vram: &str| {
        let out = run(&["simulate", t, "--vram", vram, "--ram", "64GiB"]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(note("16").contains(
        "note: the non-expert weights (15.9 GiB at q8_0) do not fit in the VRAM left on 3090-ddr5: 2.9 GiB of them run from RAM"
    ));
    assert!(!note("24").contains("non-expert weights"));
}

/// `--quant q2_k` (one tensor type) and `Q2_K` (llama.cpp's file type) differ: the lower
/// case gets a note naming the capitals; a name whose twin is the same, or -q, none.
#[test]
fn quant_case_twins_are_noted() {
    let err = |args: &[&str]| {
        let out = run(&[&["simulate", "--cache-experts", "100"][..], args].concat());
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let want = "note: --quant q2_k puts every expert tensor at q2_k; --quant Q2_K in capitals is llama.cpp's file type";
    assert!(err(&["--quant", "q2_k"]).contains(want));
    assert!(!err(&["--quant", "Q2_K"]).contains("note: --quant"));
    assert!(!err(&["--quant", "q2_k", "-q"]).contains("note: --quant"));
}
