//! End-to-end tests of the moe-spill binary: golden numbers from the seed's script, the
//! real DeepSeek-V2-Lite recording, format round trips, and every kind of bad input.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_moe-spill"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

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
    bin()
        .args(args)
        .current_dir(root())
        .output()
        .expect("run moe-spill")
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "moe-spill {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A bad input: exit status 2, one line on stderr containing `want`, nothing on stdout.
fn fails(args: &[&str], want: &str) -> String {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "moe-spill {args:?}: expected exit 2, stderr: {err}"
    );
    assert_eq!(
        err.lines().count(),
        1,
        "one-line error expected, got: {err}"
    );
    assert!(
        err.contains(want),
        "moe-spill {args:?}: `{err}` does not contain `{want}`"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.stdout.is_empty(), "no output on error");
    err
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
    assert!(info.contains("\"tokens\": \"94165\""), "{info}");
    assert!(info.contains("\"accesses\": \"14689740\""), "{info}");
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
    assert!(info.contains("\"prompt_tokens\": \"19\""), "{info}");
    assert!(info.contains("\"decode_tokens\": \"810\""), "{info}");
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

// ---- bad input: exit 2, one line naming the file and line, no partial output ----

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
        "does not match model deepseek-v2-lite",
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
        ids: vec![0, 4, 5, 6],
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
    fails(&["analyze"], "no TRACE given");
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
