//! `--gguf FILE` end to end, on tiny GGUF files written by scripts/make_test_gguf.py with
//! the `gguf` package (scripts/requirements.txt): sizes and offsets read from the file,
//! split models, bad files (exit 2 with the file and byte offset), and SSD bytes that
//! charge every miss its own layer's expert bytes, checked against a naive LRU.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

mod common;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files of scripts/make_test_gguf.py, written once per test run, and a trace of
/// their geometry (MoE layers 1..3, 8 experts, top-2).
fn data() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gguf-tests");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let out = Command::new("python3")
            .arg(root().join("scripts/make_test_gguf.py"))
            .arg(&dir)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "scripts/make_test_gguf.py failed (pip install -r scripts/requirements.txt): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::write(dir.join("trace.txt"), forum_trace(&trace())).unwrap();
        dir
    })
}

fn file(name: &str) -> String {
    data().join(name).to_str().unwrap().to_string()
}

/// 600 tokens, 3 MoE layers of top-2 among 8 experts, skewed and drifting so that
/// caches of a few experts both hit and miss. `[token][slot]` = the two experts.
fn trace() -> Vec<[[u16; 2]; 3]> {
    let mut s = 17u64;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as usize
    };
    (0..600)
        .map(|t| {
            let mut tok = [[0u16; 2]; 3];
            for slot in &mut tok {
                let a = (next() % 8 * (next() % 8) / 8 + t / 40) % 8;
                let mut b = (next() % 8 + t / 25) % 8;
                if b == a {
                    b = (b + 1) % 8;
                }
                *slot = [a as u16, b as u16];
            }
            tok
        })
        .collect()
}

fn forum_trace(tr: &[[[u16; 2]; 3]]) -> String {
    let mut s = String::new();
    for tok in tr {
        for (slot, experts) in tok.iter().enumerate() {
            for e in experts {
                s += &format!("layer {} expert {e}\n", slot + 1);
            }
        }
        s += "---token---\n";
    }
    s
}

/// Runs moe-spill in the data directory. The tiny model fits in any GPU, so commands
/// that place it run without one (`--gpus 0`) unless they say otherwise.
fn run(args: &[&str]) -> Output {
    let mut args: Vec<&str> = args.to_vec();
    let places = ["simulate", "sweep", "estimate", "kernel-replay"].contains(&args[0]);
    if places && !args.contains(&"--gpus") {
        args.extend(["--gpus", "0"]);
    }
    Command::new(env!("CARGO_BIN_EXE_moe-spill"))
        .args(&args)
        .current_dir(data())
        .output()
        .expect("run moe-spill")
}

fn ok(args: &[&str]) -> String {
    common::stdout_of(run(args), args)
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).unwrap()
}

/// Exit 2 with one line on stderr containing every `want`, nothing on stdout.
fn fails(args: &[&str], want: &[&str]) -> String {
    common::bad_input(run(args), args, want)
}

/// Bytes of one expert's slice: `rows` rows of 256 weights in `block` bytes per 256
/// (the 256-weight block types of ggml-common.h).
fn slice(block: u64) -> u64 {
    256 * block
}

/// One expert of each MoE layer of mixed.gguf (scripts/make_test_gguf.py MIXED):
/// IQ2_XXS 66 B, IQ3_S 110, IQ4_XS 136, Q2_K 84, Q3_K 110, Q4_K 144, Q6_K 210.
const MIXED_BYTES: [u64; 3] = [
    2 * 256 * 66 + 256 * 144,
    2 * 256 * 110 + 256 * 136,
    256 * 84 + 256 * 110 + 256 * 210,
];

#[test]
fn models_describes_the_layers_of_a_file() {
    let v = json(&["models", "--gguf", &file("mixed.gguf"), "--format", "json"]);
    assert_eq!(v["arch"], "deepseek2");
    assert_eq!(v["block_count"], "4");
    assert_eq!(v["leading_dense"], "1");
    assert_eq!(v["experts"], "8");
    assert_eq!(v["top_k"], "2");
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    let types: Vec<Vec<&str>> = layers
        .iter()
        .map(|l| {
            l["slices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["type"].as_str().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(
        types,
        [
            ["iq2_xxs", "iq2_xxs", "q4_k"],
            ["iq3_s", "iq3_s", "iq4_xs"],
            ["q2_k", "q3_k", "q6_k"]
        ]
    );
    for (l, want) in layers.iter().zip(MIXED_BYTES) {
        assert_eq!(l["expert_bytes"], want);
    }
    assert_eq!(layers[0]["slices"][0]["bytes_per_expert"], slice(66));
    // Non-expert bytes: everything but the expert tensors and the token embedding
    // (q8_0 blocks of 32 weights in 34 bytes; f32 norms and routers).
    let q8 = |n: u64| n / 32 * 34;
    let dense_ffn = 3 * q8(256 * 512);
    let per_block = 2 * 256 * 4 + 2 * q8(256 * 256);
    let moe_extra = 256 * 8 * 4 + 3 * q8(256 * 256);
    let want = 256 * 4 + q8(256 * 32) + 4 * per_block + dense_ffn + 3 * moe_extra;
    assert_eq!(v["non_expert_bytes"], want.to_string());
    assert_eq!(v["token_embd_bytes"], q8(256 * 32).to_string());
    // Offsets: each slice tensor lies inside the file, aligned to 32.
    let len: u64 = v["file_bytes"].as_str().unwrap().parse().unwrap();
    for l in layers {
        for s in l["slices"].as_array().unwrap() {
            let off = s["offset"].as_u64().unwrap();
            assert_eq!(off % 32, 0);
            assert!(off + 8 * s["bytes_per_expert"].as_u64().unwrap() <= len);
        }
    }
    let csv = ok(&["models", "--gguf", &file("uniform.gguf"), "--format", "csv"]);
    assert_eq!(
        csv.lines().next().unwrap(),
        "layer,projection,type,bytes_per_expert,tensor_bytes,part,offset"
    );
    assert_eq!(csv.lines().count(), 1 + 9);
    assert!(csv
        .lines()
        .skip(1)
        .all(|l| l.contains(",iq4_xs,34816,278528,1,")));
    let table = ok(&[
        "models",
        "--gguf",
        &file("uniform.gguf"),
        "--format",
        "table",
    ]);
    assert!(table.contains("quant                iq4_xs"), "{table}");
}

#[test]
fn split_models_read_as_one_from_any_part() {
    let whole = json(&["models", "--gguf", &file("mixed.gguf"), "--format", "json"]);
    for part in ["split-00001-of-00002.gguf", "split-00002-of-00002.gguf"] {
        let v = json(&["models", "--gguf", &file(part), "--format", "json"]);
        assert_eq!(v["parts"].as_array().unwrap().len(), 2);
        assert_eq!(v["model"], "split");
        for (a, b) in v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .zip(whole["layers"].as_array().unwrap())
        {
            assert_eq!(a["expert_bytes"], b["expert_bytes"]);
        }
        assert_eq!(v["non_expert_bytes"], whole["non_expert_bytes"]);
        // Both parts hold expert tensors.
        let parts: Vec<u64> = v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|l| l["slices"].as_array().unwrap().clone())
            .map(|s| s["part"].as_u64().unwrap())
            .collect();
        assert!(parts.contains(&1) && parts.contains(&2), "{parts:?}");
    }
    // A missing part is named.
    let lonely = data().join("lonely");
    fs::create_dir_all(&lonely).unwrap();
    let p1 = lonely.join("split-00001-of-00002.gguf");
    fs::copy(data().join("split-00001-of-00002.gguf"), &p1).unwrap();
    fails(
        &["models", "--gguf", p1.to_str().unwrap()],
        &[
            "split-00002-of-00002.gguf",
            "part 2 of the split model",
            "missing",
        ],
    );
}

#[test]
fn fused_gate_up_and_mtp_blocks() {
    let v = json(&["models", "--gguf", &file("fused.gguf"), "--format", "json"]);
    let l0 = &v["layers"][0];
    assert_eq!(l0["slices"][0]["projection"], "gate_up");
    assert_eq!(l0["slices"][0]["bytes_per_expert"], 2 * 256 * 144);
    assert_eq!(l0["expert_bytes"], 2 * 256 * 144 + 256 * 210);
    let v = json(&["models", "--gguf", &file("mtp.gguf"), "--format", "json"]);
    assert_eq!(v["block_count"], "5");
    assert_eq!(v["nextn_layers"], "1");
    assert_eq!(
        v["layers"].as_array().unwrap().len(),
        3,
        "the MTP block is no MoE layer"
    );
    assert_ne!(v["unused_bytes"], "0");
    // The trace's layers 1..3 match both.
    for f in ["fused.gguf", "mtp.gguf"] {
        let rows = json(&[
            "simulate",
            "trace.txt",
            "--gguf",
            &file(f),
            "--cache-experts",
            "6",
            "--format",
            "json",
        ]);
        assert_eq!(rows[0]["model"], f.trim_end_matches(".gguf"));
    }
}

#[test]
fn bad_files_exit_2_with_the_file_and_byte() {
    fails(
        &["models", "--gguf", &file("dense.gguf")],
        &["dense.gguf", "no expert tensors"],
    );
    fails(
        &[
            "simulate",
            "trace.txt",
            "--gguf",
            &file("dense.gguf"),
            "--cache-experts",
            "4",
        ],
        &["no expert tensors"],
    );
    fails(
        &["models", "--gguf", &file("trace.txt")],
        &["trace.txt: byte 0: not a GGUF file"],
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    fails(
        &["models", "--gguf", d],
        &["is a directory; --gguf takes a GGUF file"],
    );
    // The other way round: a model file given as a trace.
    fails(
        &["simulate", &file("uniform.gguf"), "--cache-experts", "4"],
        &["uniform.gguf: is a GGUF model file, not a trace: give it with --gguf FILE"],
    );
    let bytes = fs::read(data().join("uniform.gguf")).unwrap();
    let cut = data().join("truncated.gguf");
    fs::write(&cut, &bytes[..300]).unwrap();
    let err = fails(
        &["models", "--gguf", cut.to_str().unwrap()],
        &["truncated.gguf: byte ", "truncated GGUF header"],
    );
    let at: u64 = err
        .split("byte ")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(at <= 300, "{err}");
    // The weights cut off: the tensor table names a tensor past the end.
    let short = data().join("short.gguf");
    fs::write(&short, &bytes[..bytes.len() - 1000]).unwrap();
    fails(
        &["models", "--gguf", short.to_str().unwrap()],
        &["short.gguf: byte ", "past the end"],
    );
    // An unknown type id in blk.1.ffn_up_exps.weight's info: after the name, 3 dims.
    let name = b"blk.1.ffn_up_exps.weight";
    let pos = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let type_at = pos + 4 + 3 * 8;
    let mut bad = bytes.clone();
    bad[type_at..type_at + 4].copy_from_slice(&99u32.to_le_bytes());
    let p = data().join("unknown-type.gguf");
    fs::write(&p, bad).unwrap();
    fails(
        &["models", "--gguf", p.to_str().unwrap()],
        &[
            &format!("unknown-type.gguf: byte {type_at}:"),
            "blk.1.ffn_up_exps.weight",
            "ggml type 99",
        ],
    );
    // A trace of another geometry: read with the file's layout, it fails at its line.
    let other = data().join("other.txt");
    fs::write(&other, "layer 1 expert 0\nlayer 1 expert 1\n---token---\n").unwrap();
    fails(
        &[
            "simulate",
            other.to_str().unwrap(),
            "--gguf",
            &file("mixed.gguf"),
            "--cache-experts",
            "1",
        ],
        &[
            "other.txt:2:",
            "token ends after 2 expert lines (1 layers x top-2); the chosen model has 3 MoE layers (1..3)",
        ],
    );
}

#[test]
fn gguf_with_model_or_quant_is_a_usage_error() {
    for extra in [
        ["--model", "glm-5"],
        ["--quant", "q4_k"],
        ["--non-expert-quant", "q4_k"],
    ] {
        let mut args = vec!["simulate", "trace.txt", "--cache-experts", "4"];
        let g = file("mixed.gguf");
        args.extend(["--gguf", &g]);
        args.extend(extra);
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
    }
    let out = run(&["models", "--gguf", &file("mixed.gguf"), "--quant", "q4_k"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&[
        "estimate",
        "--u",
        "5",
        "--d",
        "1",
        "--gguf",
        &file("mixed.gguf"),
        "--quant",
        "q4_k",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

/// A naive LRU over the trace: per layer (slot) the misses, and the bytes missed per
/// token at each layer's expert size. `per_layer`: one cache per layer, the capacity
/// split with the remainder to the first layers.
fn naive_lru(capacity: usize, per_layer: bool, bytes: [u64; 3]) -> ([u64; 3], Vec<u64>) {
    let caps: Vec<usize> = if per_layer {
        (0..3)
            .map(|s| capacity / 3 + (s < capacity % 3) as usize)
            .collect()
    } else {
        vec![capacity]
    };
    let mut caches: Vec<Vec<(usize, u16)>> = vec![Vec::new(); caps.len()];
    let mut misses = [0u64; 3];
    let mut per_token = Vec::new();
    for tok in trace() {
        let mut b = 0;
        for (slot, experts) in tok.iter().enumerate() {
            let c = if per_layer { slot } else { 0 };
            for &e in experts {
                let key = (slot, e);
                let cache = &mut caches[c];
                match cache.iter().position(|&k| k == key) {
                    Some(i) => {
                        cache.remove(i);
                        cache.push(key);
                    }
                    None => {
                        misses[slot] += 1;
                        b += bytes[slot];
                        if caps[c] > 0 {
                            if cache.len() == caps[c] {
                                cache.remove(0);
                            }
                            cache.push(key);
                        }
                    }
                }
            }
        }
        per_token.push(b);
    }
    (misses, per_token)
}

fn nearest_rank(sorted: &[u64], p: f64) -> u64 {
    let r = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[r - 1]
}

/// The done-when of issue 17: `simulate --gguf` on a mixed-quant file charges every miss
/// its own layer's expert bytes, equal to a naive count from the trace, whichever engine
/// answers (one run per capacity, one pass for a sweep, the capacity-0 and cold-only
/// shortcuts, per-layer caches).
#[test]
fn ssd_bytes_charge_each_miss_its_layers_bytes() {
    let g = file("mixed.gguf");
    let check = |row: &Value, cap: usize, per_layer: bool| {
        let (misses, per_token) = naive_lru(cap, per_layer, MIXED_BYTES);
        let want: u64 = misses.iter().zip(MIXED_BYTES).map(|(m, b)| m * b).sum();
        assert_eq!(row["misses"], misses.iter().sum::<u64>(), "cap {cap}");
        assert_eq!(row["ssd_bytes"], want, "cap {cap} per_layer {per_layer}");
        let mean = row["ssd_bytes_per_token"].as_f64().unwrap();
        assert!((mean - want as f64 / 600.0).abs() < 1e-6, "{mean}");
        let mut sorted = per_token.clone();
        sorted.sort_unstable();
        assert_eq!(row["ssd_bytes_per_token_p50"], nearest_rank(&sorted, 50.0));
        assert_eq!(row["ssd_bytes_per_token_p99"], nearest_rank(&sorted, 99.0));
        assert_eq!(row["ssd_bytes_per_token_max"], *sorted.last().unwrap());
        // Not the total times one expert size.
        let mean = MIXED_BYTES.iter().sum::<u64>() / 3;
        if cap > 0 {
            assert_ne!(want, misses.iter().sum::<u64>() * mean);
        }
    };
    for cap in [0usize, 1, 5, 11, 24, 30] {
        let c = cap.to_string();
        let rows = json(&[
            "simulate",
            "trace.txt",
            "--gguf",
            &g,
            "--cache-experts",
            &c,
            "--format",
            "json",
        ]);
        check(&rows[0], cap, false);
        if cap >= 3 {
            let rows = json(&[
                "simulate",
                "trace.txt",
                "--gguf",
                &g,
                "--cache-experts",
                &c,
                "--partition",
                "per-layer",
                "--format",
                "json",
            ]);
            check(&rows[0], cap, true);
        }
    }
    // A sweep answers LRU from one stack pass.
    let rows = json(&[
        "sweep",
        "trace.txt",
        "--gguf",
        &g,
        "--policies",
        "lru",
        "--cache-experts",
        "0..24",
        "--step",
        "3",
        "--format",
        "json",
    ]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 9);
    for r in rows {
        check(r, r["cache_experts"].as_u64().unwrap() as usize, false);
    }
    // Every policy's bytes add up from its per-layer misses.
    for policy in ["clock", "opt", "arc", "linux", "pinned:1"] {
        let rows = json(&[
            "simulate",
            "trace.txt",
            "--gguf",
            &g,
            "--cache-experts",
            "12",
            "--policy",
            policy,
            "--per-layer",
            "--format",
            "json",
        ]);
        let r = &rows[0];
        let by_layer: u64 = r["per_layer_misses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_u64().unwrap() * MIXED_BYTES[p[0].as_u64().unwrap() as usize - 1])
            .sum();
        assert_eq!(r["ssd_bytes"], by_layer, "{policy}");
    }
}

#[test]
fn every_command_takes_gguf() {
    let g = file("mixed.gguf");
    let info = ok(&["info", "trace.txt", "--gguf", &g, "--format", "json"]);
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["model"], "mixed");
    assert!(info["gguf"].as_str().unwrap().contains("3 MoE layers"));
    let e = json(&[
        "estimate",
        "trace.txt",
        "--gguf",
        &g,
        "--chunk",
        "64",
        "--format",
        "json",
    ]);
    assert_eq!(e["model"], "mixed");
    assert!(e["quant"].as_str().unwrap().starts_with("mixed:"));
    // The mean of the three layers' experts (all on the CPU without a GPU).
    let e = json(&[
        "estimate", "--u", "10", "--d", "2", "--gguf", &g, "--format", "json",
    ]);
    assert_eq!(
        e["expert_bytes"],
        (MIXED_BYTES.iter().sum::<u64>() as f64 / 3.0).round() as u64
    );
    let rows = json(&[
        "sweep",
        "trace.txt",
        "--gguf",
        &g,
        "--points",
        "3",
        "--policies",
        "lru,clock",
        "--format",
        "json",
    ]);
    assert_eq!(rows.as_array().unwrap().len(), 6);
    // A uniform file: every miss the same bytes.
    let rows = json(&[
        "simulate",
        "trace.txt",
        "--gguf",
        &file("uniform.gguf"),
        "--cache-experts",
        "7",
        "--format",
        "json",
    ]);
    let r = &rows[0];
    assert_eq!(r["quant"], "iq4_xs");
    assert_eq!(
        r["ssd_bytes"].as_u64().unwrap(),
        r["misses"].as_u64().unwrap() * 3 * slice(136)
    );
}

/// `kernel-replay --gguf` lays its file out as the GGUF is: a header page, then the
/// file's bytes, every expert slice at its offset. Needs a memory cgroup (root, as in
/// CI); elsewhere it says `KERNEL-REPLAY TEST SKIPPED` and passes.
#[test]
fn kernel_replay_lays_out_the_gguf() {
    if let Err(e) = moe_spill::kernel::MemCgroup::create(0).and_then(|mut c| c.remove()) {
        // SAFETY: geteuid has no side effects.
        let root = unsafe { libc::geteuid() == 0 };
        eprintln!("KERNEL-REPLAY TEST SKIPPED: {e}");
        assert!(!root, "kernel replay required as root but: {e}");
        return;
    }
    let g = file("mixed.gguf");
    let laid = data().join("kernel-mixed.bin");
    // A page cache that holds every expert (a budget of a few experts' pages is below the
    // memory cgroup's charge batches): each routed slice's pages are read once.
    let rows = json(&[
        "kernel-replay",
        "trace.txt",
        "--gguf",
        &g,
        "--cache-experts",
        "200",
        "--tokens",
        "200",
        "--policies",
        "lru",
        "--advice",
        "willneed",
        "--file",
        laid.to_str().unwrap(),
        "--format",
        "json",
        "-q",
    ]);
    let len = fs::metadata(&g).unwrap().len();
    let bytes = fs::read(&laid).unwrap();
    let _ = fs::remove_file(&laid);
    assert_eq!(bytes.len() as u64, 4096 + len);
    let header = String::from_utf8_lossy(&bytes[..4096]);
    assert!(header.contains(&format!("gguf {len} ")), "{header}");
    let mean = (MIXED_BYTES.iter().sum::<u64>() as f64 / 3.0).round() as u64;
    let rows = rows.as_array().unwrap();
    let kernel = rows.iter().find(|r| r["source"] == "kernel").unwrap();
    assert_eq!(kernel["expert_bytes"], mean);
    assert_eq!(kernel["slices"], 3);
    assert!(kernel["read_bytes"].as_u64().unwrap() > 0);
    // With willneed exactly the routed experts' pages are read, once: the 24 experts'
    // bytes, and at most the partly shared first and last page of each of their 72 slices.
    let read = kernel["read_bytes"].as_u64().unwrap();
    let all = 8 * MIXED_BYTES.iter().sum::<u64>();
    assert!(
        read >= all && read <= all + 72 * 2 * 4096,
        "{read} against {all}"
    );
}

/// `--quant` with a llama.cpp file type: the quantizer's per-layer types for a preset
/// (docs/gguf.md), and each miss at its layer's bytes. GLM-5 IQ1_M: ffn_down of blocks
/// 3, 4, 5 is Q2_K (the first 78/8 ffn_down tensors, shared experts counted), the rest
/// IQ1_M (56 B per 256 weights; Q2_K 84).
#[test]
fn file_type_quants_give_layers_their_own_sizes() {
    let iq1m = |n: u64| n / 256 * 56;
    let gate_up = 2 * iq1m(6144) * 2048;
    let small = gate_up + iq1m(2048) * 6144;
    let big = gate_up + 2048 / 256 * 84 * 6144;
    let rows = json(&[
        "simulate",
        "--quant",
        "IQ1_M",
        "--cache-experts",
        "6000",
        "--per-layer",
        "--format",
        "json",
        "-q",
    ]);
    let r = &rows[0];
    assert_eq!(r["quant"], "IQ1_M");
    let want: u64 = r["per_layer_misses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let layer = p[0].as_u64().unwrap();
            p[1].as_u64().unwrap() * if layer <= 5 { big } else { small }
        })
        .sum();
    assert_eq!(r["ssd_bytes"], want);
    // Lower case: every tensor IQ1_M, every miss the same bytes.
    let rows = json(&[
        "simulate",
        "--quant",
        "iq1_m",
        "--cache-experts",
        "6000",
        "--format",
        "json",
        "-q",
    ]);
    assert_eq!(
        rows[0]["ssd_bytes"],
        rows[0]["misses"].as_u64().unwrap() * small
    );
    let v = json(&["models", "--quant", "Q4_K_M", "--format", "json"]);
    let glm = v
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "glm-5")
        .unwrap();
    assert_eq!(glm["quant"], "Q4_K_M");
}

/// `--gguf` with batches (docs/batches.md): a ubatch's missed bytes are its misses, each
/// at its own layer's expert bytes, whichever engine answers (one run per capacity, one
/// pass for a sweep, the capacity-0 and cold-only shortcuts, per-layer caches); the
/// per-token figures spread a ubatch's bytes over its tokens.
#[test]
fn ssd_bytes_with_ubatches_charge_each_miss_its_layers_bytes() {
    let g = file("mixed.gguf");
    let d = tempfile::tempdir().unwrap();
    let prompts = d.path().join("p.mst");
    let p = prompts.to_str().unwrap();
    ok(&["convert", "trace.txt", "--as-prompt", "-q", "-o", p]);
    let by_layer = |r: &Value| -> u64 {
        r["per_layer_misses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_u64().unwrap() * MIXED_BYTES[p[0].as_u64().unwrap() as usize - 1])
            .sum()
    };
    let sim = |policy: &str, cap: &str, partition: &str| -> Value {
        let rows = json(&[
            "simulate",
            p,
            "--gguf",
            &g,
            "--phase",
            "all",
            "--ubatch",
            "8",
            "--policy",
            policy,
            "--cache-experts",
            cap,
            "--partition",
            partition,
            "--per-layer",
            "--format",
            "json",
            "-q",
        ]);
        rows[0].clone()
    };
    for partition in ["global", "per-layer"] {
        // A sweep answers LRU from one (weighted) stack pass; simulate runs each capacity.
        let rows = json(&[
            "sweep",
            p,
            "--gguf",
            &g,
            "--phase",
            "all",
            "--ubatch",
            "8",
            "--policies",
            "lru",
            "--cache-experts",
            "0..30",
            "--step",
            "3",
            "--partition",
            partition,
            "--per-layer",
            "--format",
            "json",
            "-q",
        ]);
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), 11);
        for r in rows {
            let cap = r["cache_experts"].as_u64().unwrap();
            if partition == "per-layer" && (1..3).contains(&cap) {
                continue;
            }
            let s = sim("lru", &cap.to_string(), partition);
            assert_eq!(r["ssd_bytes"], by_layer(r), "{partition} cap {cap}");
            assert_eq!(s["ssd_bytes"], by_layer(&s), "{partition} cap {cap}");
            for col in [
                "misses",
                "ssd_bytes",
                "ssd_bytes_per_token_p50",
                "ssd_bytes_per_token_p99",
                "ssd_bytes_per_token_max",
            ] {
                assert_eq!(r[col], s[col], "{partition} cap {cap} {col}");
            }
            let tokens = r["tokens"].as_f64().unwrap();
            let total = r["ssd_bytes"].as_f64().unwrap();
            let mean = r["ssd_bytes_per_token"].as_f64().unwrap();
            assert!((mean - total / tokens).abs() < 1e-6, "{mean}");
            let prompt = r["batch"]["prompt_ssd_bytes_per_token"].as_f64().unwrap();
            assert!((prompt - total / tokens).abs() < 1e-6, "{prompt}");
            // Batched: fewer misses than the accesses of the tokens one by one.
            assert!(r["batch"]["prompt_ubatches"].as_u64().unwrap() < 600);
        }
    }
    // Capacity 0 misses every access of every ubatch.
    let r = sim("lru", "0", "global");
    assert_eq!(r["misses"], r["accesses"]);
    assert_eq!(r["ssd_bytes"], by_layer(&r));
    // Every policy's bytes add up from its per-layer misses.
    for policy in ["clock", "opt", "arc", "linux", "pinned:1"] {
        let r = sim(policy, "12", "global");
        assert_eq!(r["ssd_bytes"], by_layer(&r), "{policy}");
    }
}

/// `--n-cpu-moe N` on mixed.gguf (MoE blocks 1..3 of different sizes), with a GPU that
/// holds every layer: the experts of blocks before N stay on the CPU and reach the cache,
/// the later ones are in VRAM. The bytes follow the layers the cache sees, each miss at
/// its own layer's size; N past the last block is --cpu-moe; too little VRAM is an error.
#[test]
fn n_cpu_moe_keeps_the_first_layers_on_the_cpu() {
    let g = file("mixed.gguf");
    let gpu = ["--gpus", "1", "--vram", "1", "--vram-reserve", "0"];
    let sim = |extra: &[&str]| -> Value {
        let mut args = vec![
            "simulate",
            "trace.txt",
            "--gguf",
            &g,
            "--cache-experts",
            "5",
            "--per-layer",
            "--format",
            "json",
        ];
        args.extend(gpu);
        args.extend(extra);
        json(&args)[0].clone()
    };
    for (n, slots) in [("2", 0..1usize), ("3", 0..2)] {
        let r = sim(&["--n-cpu-moe", n]);
        // A naive LRU of 5 experts over the slots on the CPU only.
        let mut cache: Vec<(usize, u16)> = Vec::new();
        let (mut misses, mut bytes) = ([0u64; 3], 0u64);
        for tok in trace() {
            for s in slots.clone() {
                for &e in &tok[s] {
                    match cache.iter().position(|&k| k == (s, e)) {
                        Some(i) => {
                            cache.remove(i);
                        }
                        None => {
                            misses[s] += 1;
                            bytes += MIXED_BYTES[s];
                            if cache.len() == 5 {
                                cache.remove(0);
                            }
                        }
                    }
                    cache.push((s, e));
                }
            }
        }
        let layers: Vec<u64> = r["per_layer_misses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_u64().unwrap())
            .collect();
        let want: Vec<u64> = slots.clone().map(|s| s as u64 + 1).collect();
        assert_eq!(
            layers, want,
            "--n-cpu-moe {n}: the cache sees blocks below {n}"
        );
        assert_eq!(r["accesses"], 600 * 2 * slots.len() as u64);
        assert_eq!(r["misses"], misses.iter().sum::<u64>(), "--n-cpu-moe {n}");
        assert_eq!(r["ssd_bytes"], bytes, "--n-cpu-moe {n}");
        assert_eq!(r["gpu_layers"], 3 - slots.len() as u64);
    }
    // Every block on the CPU: --cpu-moe's row.
    assert_eq!(sim(&["--n-cpu-moe", "4"]), sim(&["--cpu-moe"]));
    assert_eq!(sim(&["--n-cpu-moe", "99"]), sim(&["--cpu-moe"]));
    // The default placement fills VRAM from the first layer: nothing reaches the cache.
    assert_eq!(sim(&[])["accesses"], 0);
    // The last layers must fit in the VRAM the non-expert weights leave.
    fails(
        &[
            "simulate",
            "trace.txt",
            "--gguf",
            &g,
            "--cache-experts",
            "5",
            "--gpus",
            "1",
            "--vram",
            "0.0001",
            "--vram-reserve",
            "0",
            "--n-cpu-moe",
            "2",
        ],
        &[
            "--n-cpu-moe 2",
            "MoE layers from blk.2 on need",
            "--n-cpu-moe 4 or more fits",
        ],
    );
    fails(
        &[
            "simulate",
            "trace.txt",
            "--gguf",
            &g,
            "--cache-experts",
            "5",
            "--cpu-moe",
            "--n-cpu-moe",
            "2",
        ],
        &["--cpu-moe or --n-cpu-moe"],
    );
}
