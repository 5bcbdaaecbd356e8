//! Batches through the binary (issue 16): `--ubatch 1 --parallel 1` against the replay
//! token by token (goldens from the build before batches), hand-worked examples of a
//! ubatch and of parallel responses, sweep against simulate, bad input.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{csv_rows, header, root};

fn run(args: &[&str]) -> Output {
    common::run_in(&root(), args)
}

fn ok(args: &[&str]) -> String {
    common::stdout_of(run(args), args)
}

/// Exit status 2, one line on stderr containing `want`, nothing on stdout.
fn fails(args: &[&str], want: &str) {
    common::bad_input(run(args), args, &[want]);
}

/// Every base policy and both decorators.
const POLICIES: &str =
    "lru,fifo,clock,arc,opt,lfu,sieve,s3fifo,linux,linux-eager,pinned:1,pin-hot:64";
const BASE: &str = "lru,fifo,clock,arc,opt,lfu,sieve,s3fifo,linux,linux-eager";

/// The golden sweeps: arguments, and the file the build before batches wrote for them
/// (`moe-spill ARGS --format csv -q -j 1 > tests/data/FILE`; written again when the time
/// model changes, the counts never).
fn goldens() -> Vec<(Vec<&'static str>, &'static str)> {
    vec![
        (
            vec![
                "sweep",
                "traces/synth-sample",
                "--phase",
                "all",
                "--hw",
                "desktop-cpu",
                "--policies",
                POLICIES,
                "--ram",
                "6GiB..9GiB",
                "--points",
                "4",
                "--per-layer",
            ],
            "batches_golden_phase_all.csv",
        ),
        (
            vec![
                "sweep",
                "traces/sample",
                "--phase",
                "all",
                "--policies",
                BASE,
                "--cache-experts",
                "0..128",
                "--points",
                "5",
                "--partition",
                "per-layer",
                "--warmup-tokens",
                "20",
            ],
            "batches_golden_per_layer.csv",
        ),
        (
            vec![
                "sweep",
                "traces/synth-sample",
                "--hw",
                "desktop-cpu",
                "--policies",
                POLICIES,
                "--ram",
                "6GiB..9GiB",
                "--points",
                "4",
            ],
            "batches_golden_decode.csv",
        ),
    ]
}

fn with(args: &[&str], more: &[&str]) -> Vec<String> {
    args.iter()
        .chain(more)
        .chain(&["--format", "csv", "-q", "-j", "1"])
        .map(|s| s.to_string())
        .collect()
}

fn ok_owned(args: &[String]) -> String {
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn without_the_options_outputs_are_todays_byte_for_byte() {
    // --phase decode (the default) never batches: the build before batches' output.
    let (args, file) = &goldens()[2];
    let want = fs::read_to_string(root().join("tests/data").join(file)).unwrap();
    assert_eq!(ok_owned(&with(args, &[])), want);
}

#[test]
fn ubatch_1_parallel_1_equal_the_replay_token_by_token() {
    // Every column of the build before batches, bit for bit; the batch columns follow.
    for (args, file) in goldens() {
        let want = fs::read_to_string(root().join("tests/data").join(file)).unwrap();
        let got = ok_owned(&with(&args, &["--ubatch", "1", "--parallel", "1"]));
        let (w, g) = (csv_rows(&want), csv_rows(&got));
        assert_eq!(w.len(), g.len(), "{file}");
        let head = header(&want);
        let got_head = header(&got);
        assert_eq!(
            got_head[..head.len() - per_layer_columns(&head)],
            head[..head.len() - per_layer_columns(&head)]
        );
        for (a, b) in w.iter().zip(&g) {
            for col in &head {
                assert_eq!(
                    a[col], b[col],
                    "{file}: {} at {}: {col}",
                    a["policy"], a["cache_experts"]
                );
            }
            assert_eq!(b["ubatch"], "1");
            assert_eq!(b["parallel"], "1");
            // Token by token every step is one token.
            let steps: u64 = b["prompt_ubatches"].parse::<u64>().unwrap()
                + b["decode_steps"].parse::<u64>().unwrap();
            assert_eq!(steps.to_string(), b["tokens"], "{file}");
        }
    }
}

fn per_layer_columns(head: &[String]) -> usize {
    head.iter()
        .filter(|c| c.starts_with("misses_layer_"))
        .count()
}

/// One MoE layer (1) of 4 experts, top-2. Response A: prompt tokens {0,1} {1,2} {2,3},
/// decode token {0,1}; response B: decode tokens {1,3} {0,3}.
fn hand_trace(dir: &Path) -> PathBuf {
    let t = dir.join("t");
    fs::create_dir(&t).unwrap();
    let tok = |a: u16, b: u16| format!("layer 1 expert {a}\nlayer 1 expert {b}\n---token---\n");
    let a = format!(
        "---began prompt processing---\n{}{}{}---ended prompt processing---\n{}",
        tok(0, 1),
        tok(1, 2),
        tok(2, 3),
        tok(0, 1)
    );
    fs::write(t.join("a.txt"), a).unwrap();
    fs::write(t.join("b.txt"), format!("{}{}", tok(1, 3), tok(0, 3))).unwrap();
    t
}

fn json_row(args: &[&str]) -> serde_json::Value {
    let out = ok(args);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

#[test]
fn a_ubatch_and_parallel_responses_by_hand() {
    let d = tempfile::tempdir().unwrap();
    let t = hand_trace(d.path());
    let t = t.to_str().unwrap();
    let sim = |more: &[&str]| {
        let mut args = vec![
            "simulate",
            t,
            "--phase",
            "all",
            "--policy",
            "lru",
            "--cache-experts",
            "3",
            "--format",
            "json",
            "-q",
        ];
        args.extend(more);
        json_row(&args)
    };
    // Token by token, LRU of 3: A0 misses 0 1; A1 hits 1, misses 2; A2 hits 2, misses 3
    // (evicts 0); A3 misses 0 (evicts 1) and 1 (evicts 2); B0 {1,3} and B1 {0,3} hit.
    let r = sim(&["--ubatch", "1"]);
    assert_eq!(
        (r["accesses"].as_u64(), r["misses"].as_u64()),
        (Some(12), Some(6))
    );
    // --ubatch 2: the ubatch A0 A1 asks for 0 1 2 once each (3 misses), the ubatch A2
    // for 2 3 (2 hits, 3 misses, evicting 0); then as above: A3 misses 2, B hits.
    let r = sim(&["--ubatch", "2"]);
    assert_eq!(r["tokens"], 6);
    assert_eq!(
        (r["accesses"].as_u64(), r["misses"].as_u64()),
        (Some(11), Some(6))
    );
    let b = &r["batch"];
    assert_eq!(b["ubatch"], 2);
    assert_eq!(b["parallel"], 1);
    assert_eq!(
        [
            &b["prompt_ubatches"],
            &b["prompt_tokens"],
            &b["prompt_accesses"],
            &b["prompt_misses"]
        ],
        [2, 3, 5, 4]
    );
    assert_eq!(
        [
            &b["decode_steps"],
            &b["decode_tokens"],
            &b["decode_accesses"],
            &b["decode_misses"]
        ],
        [3, 3, 6, 2]
    );
    // --parallel 2: A's prompt ubatches first (B's next token is a decode token), then
    // the step A3 B0 asks for 0 1 3 once each (misses 0 and 1, hits 3), then B1 alone
    // (0 and 3 hit).
    let r = sim(&["--ubatch", "2", "--parallel", "2"]);
    assert_eq!(
        (r["accesses"].as_u64(), r["misses"].as_u64()),
        (Some(10), Some(6))
    );
    let b = &r["batch"];
    assert_eq!(
        [
            &b["decode_steps"],
            &b["decode_tokens"],
            &b["decode_accesses"],
            &b["decode_misses"]
        ],
        [2, 3, 5, 2]
    );
    // Per token: the decode step of two tokens carries 2 misses, 1 per token.
    assert_eq!(r["misses_per_token"].as_f64(), Some(1.0));
}

#[test]
fn sweep_equals_simulate_with_batches() {
    let sample = "traces/synth-sample";
    for (ub, par, partition) in [
        ("4", "2", "global"),
        ("5", "3", "per-layer"),
        ("512", "1", "global"),
    ] {
        let policies = if partition == "global" {
            POLICIES
        } else {
            BASE
        };
        let out = ok(&[
            "sweep",
            sample,
            "--phase",
            "all",
            "--hw",
            "desktop-cpu",
            "--policies",
            policies,
            "--ram",
            "6GiB..9GiB",
            "--points",
            "4",
            "--ubatch",
            ub,
            "--parallel",
            par,
            "--partition",
            partition,
            "--warmup-tokens",
            "30",
            // The rated time model: the I/O models also take the RAM size, which simulate
            // --cache-experts derives instead of naming it.
            "--io",
            "rated",
            "--format",
            "csv",
            "-q",
        ]);
        let rows = csv_rows(&out);
        assert!(rows.len() >= 40, "{}", rows.len());
        for r in &rows {
            let policy = r["policy"].trim_end_matches("(oracle)");
            let sim = ok(&[
                "simulate",
                sample,
                "--phase",
                "all",
                "--hw",
                "desktop-cpu",
                "--policy",
                policy,
                "--cache-experts",
                &r["cache_experts"],
                "--ubatch",
                ub,
                "--parallel",
                par,
                "--partition",
                partition,
                "--warmup-tokens",
                "30",
                "--io",
                "rated",
                "--format",
                "csv",
                "-q",
            ]);
            let s = &csv_rows(&sim)[0];
            for (col, v) in r {
                if ["ram_gib", "ram_bytes"].contains(&col.as_str()) {
                    continue; // simulate --cache-experts names no RAM size
                }
                assert_eq!(
                    v, &s[col],
                    "{} at {} ({ub}, {par}, {partition}): {col}",
                    r["policy"], r["cache_experts"]
                );
            }
        }
    }
}

#[test]
fn parallel_sweep_on_the_recording_equals_simulate() {
    // The one-pass engines (lru, opt) on real data with steps of four responses.
    let csv = root().join("../shared/traces/deepseek-v2-lite/csv");
    assert!(csv.is_dir(), "{} is missing", csv.display());
    let csv = csv.to_str().unwrap();
    let out = ok(&[
        "sweep",
        csv,
        "--hw",
        "desktop-cpu",
        "--policies",
        "lru,opt,clock",
        "--ram",
        "8GiB..12GiB",
        "--points",
        "3",
        "--parallel",
        "4",
        "--format",
        "csv",
        "-q",
    ]);
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), 9);
    for r in &rows {
        let s = &csv_rows(&ok(&[
            "simulate",
            csv,
            "--hw",
            "desktop-cpu",
            "--policy",
            &r["policy"],
            "--cache-experts",
            &r["cache_experts"],
            "--parallel",
            "4",
            "--format",
            "csv",
            "-q",
        ]))[0];
        for col in [
            "accesses",
            "misses",
            "cold_misses",
            "ssd_bytes_per_token_p99",
            "decode_steps",
            "decode_accesses",
        ] {
            assert_eq!(
                r[col], s[col],
                "{} at {}: {col}",
                r["policy"], r["cache_experts"]
            );
        }
        // Four responses share each step: fewer steps than tokens, fewer accesses than
        // tokens x 156.
        let steps: u64 = r["decode_steps"].parse().unwrap();
        let tokens: u64 = r["decode_tokens"].parse().unwrap();
        assert_eq!(tokens, 94165);
        assert!(steps < tokens / 3, "{steps} steps");
        assert!(r["accesses"].parse::<u64>().unwrap() < tokens * 156);
    }
}

#[test]
fn bad_batches() {
    let s = "traces/sample";
    let base = ["simulate", s, "--cache-experts", "10", "--phase", "all"];
    let with = |more: &[&'static str]| {
        let mut v: Vec<&str> = base.to_vec();
        v.extend(more);
        v
    };
    fails(
        &with(&["--ubatch", "0"]),
        "--ubatch 0: a ubatch holds at least one token",
    );
    fails(&with(&["--parallel", "0"]), "--parallel 0");
    // Three responses: at most three in parallel.
    fails(
        &with(&["--parallel", "4"]),
        "--parallel 4: the trace has 3 response(s) to replay, so at most 3 can decode in parallel",
    );
    ok(&with(&["--parallel", "3", "--format", "csv"]));
    // Warmup that leaves no whole step: the hand trace tagged prompt throughout is two
    // ubatches of 4 (tokens 0-3) and 2 (tokens 4-5); token 5 is inside the last.
    let d = tempfile::tempdir().unwrap();
    let prompts = d.path().join("p.mst");
    let p = prompts.to_str().unwrap();
    ok(&[
        "convert",
        hand_trace(d.path()).to_str().unwrap(),
        "--as-prompt",
        "-q",
        "-o",
        p,
    ]);
    let warm = |w: &'static str| {
        vec![
            "simulate",
            p,
            "--phase",
            "all",
            "--ubatch",
            "4",
            "--cache-experts",
            "2",
            "--warmup-tokens",
            w,
            "--format",
            "csv",
            "-q",
        ]
    };
    let r = &csv_rows(&ok(&warm("4")))[0];
    assert_eq!(
        (r["tokens"].as_str(), r["prompt_ubatches"].as_str()),
        ("2", "1")
    );
    fails(&warm("5"), "--warmup-tokens 5 leaves no step to count");
    // Only prompt tokens: nothing to replay in the decode phase.
    fails(
        &["simulate", p, "--cache-experts", "2"],
        "the trace has no tokens to replay",
    );
    // The kernel replays token by token (kernel-replay has no --parallel).
    fails(
        &[
            "sweep",
            s,
            "--cache-experts",
            "0..10",
            "--parallel",
            "2",
            "--kernel",
        ],
        "sweep --kernel replays token by token, but this replay has steps of several tokens (--parallel 2)",
    );
    // --phase all on prompt tokens batches by default: one line, no note before it.
    fails(
        &[
            "sweep",
            s,
            "--phase",
            "all",
            "--cache-experts",
            "0..10",
            "--kernel",
        ],
        "(prompt tokens in ubatches of 512, the default with --phase all)",
    );
    // Where --ubatch changes nothing, a note says why (and the run goes on).
    let note = |args: &[&str], want: &str| {
        let out = run(args);
        assert!(out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
    };
    note(
        &[
            "simulate",
            s,
            "--cache-experts",
            "10",
            "--ubatch",
            "8",
            "--format",
            "csv",
        ],
        "--ubatch applies to prompt tokens, which --phase decode skips",
    );
    note(
        &[
            "simulate",
            "traces/golden",
            "--cache-experts",
            "10",
            "--phase",
            "all",
            "--ubatch",
            "8",
            "--format",
            "csv",
        ],
        "the trace has no prompt-processing tokens",
    );
    note(
        &[
            "simulate",
            s,
            "--cache-experts",
            "10",
            "--phase",
            "all",
            "--format",
            "csv",
        ],
        "prompt tokens are replayed in ubatches of 512",
    );
}

/// Synthetic GLM-5 responses with prompts of 1,024 tokens, in a scratch folder.
fn long_prompts(dir: &Path) -> PathBuf {
    let p = dir.join("prompts.mst");
    ok(&[
        "synth",
        "--model",
        "glm-5",
        "--prompt-tokens",
        "1024",
        "--tokens",
        "8",
        "--responses",
        "3",
        "-o",
        p.to_str().unwrap(),
        "-q",
    ]);
    p
}

/// `simulate` of `trace` as GLM-5 on the 4090-ddr5 preset at 128 GiB, CSV, with `extra`.
fn glm5_on_4090(trace: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "simulate",
        trace,
        "--model",
        "glm-5",
        "--hw",
        "4090-ddr5",
        "--ram",
        "128GiB",
        "--format",
        "csv",
    ];
    args.extend(extra);
    run(&args)
}

/// Its rows, of a run that must succeed.
fn glm5_on_4090_rows(trace: &str, extra: &[&str]) -> Vec<HashMap<String, String>> {
    let out = glm5_on_4090(trace, extra);
    assert!(
        out.status.success(),
        "{extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    csv_rows(&String::from_utf8(out.stdout).unwrap())
}

#[test]
fn prompt_lengths_give_a_row_each_and_sweep_equals_simulate() {
    let dir = tempfile::tempdir().unwrap();
    let trace = long_prompts(dir.path());
    let t = trace.to_str().unwrap();
    let common = [
        t,
        "--model",
        "glm-5",
        "--hw",
        "4090-ddr5",
        "--phase",
        "all",
        "--prompt-tokens",
        "256,1024",
        "--format",
        "csv",
        "-q",
    ];
    let mut sim = vec!["simulate"];
    sim.extend(common);
    sim.extend(["--policy", "lru", "--ram", "128GiB"]);
    let text = ok(&sim);
    let rows = csv_rows(&text);
    assert_eq!(rows.len(), 2);
    // A length named twice runs once, as a policy or a VRAM size does.
    let twice: Vec<&str> = sim
        .iter()
        .map(|&a| if a == "256,1024" { "256,1024,256" } else { a })
        .collect();
    assert_eq!(ok(&twice), text);
    let num = |r: &HashMap<String, String>, k: &str| r[k].parse::<f64>().unwrap();
    assert_eq!(
        (&rows[0]["prompt_len"][..], &rows[1]["prompt_len"][..]),
        ("256", "1024")
    );
    for r in &rows {
        let len = num(r, "prompt_len");
        // Every prompt is cut to the length: 3 runs of it.
        assert_eq!(num(r, "prompt_tokens"), 3.0 * len);
        let ttft = num(r, "ttft_s");
        assert!((num(r, "prefill_tok_s") - len / ttft).abs() < 1e-9 * len / ttft);
    }
    // A longer prompt takes longer to its first token.
    assert!(num(&rows[1], "ttft_s") > num(&rows[0], "ttft_s"));
    // The same rows from sweep at that one budget.
    let mut sw = vec!["sweep"];
    sw.extend(common);
    sw.extend([
        "--policies",
        "lru",
        "--ram",
        "128GiB..128GiB",
        "--points",
        "1",
    ]);
    let swept = csv_rows(&ok(&sw));
    assert_eq!(swept.len(), 2);
    for (a, b) in rows.iter().zip(&swept) {
        for k in [
            "prompt_len",
            "ttft_s",
            "prefill_tok_s",
            "misses",
            "est_tok_s",
        ] {
            assert_eq!(a[k], b[k], "{k}");
        }
    }
}

#[test]
fn op_offload_and_parallel_decode_rates() {
    let dir = tempfile::tempdir().unwrap();
    let trace = long_prompts(dir.path());
    let t = trace.to_str().unwrap();
    let row = |more: &[&str]| {
        glm5_on_4090_rows(t, &[&["--policy", "lru", "-q"][..], more].concat()).remove(0)
    };
    let num = |r: &HashMap<String, String>, k: &str| r[k].parse::<f64>().unwrap();
    // Ubatches of 512 offload their products to the GPU unless told not to: the rates
    // differ, the bytes do not.
    let on = row(&["--phase", "all"]);
    let off = row(&["--phase", "all", "--no-op-offload"]);
    assert_eq!(on["misses"], off["misses"]);
    assert_ne!(on["prefill_tok_s"], off["prefill_tok_s"]);
    // Three responses in lock step: every step carries 3 tokens (8 steps), so all of
    // them together decode 3x one of them.
    let par = row(&["--parallel", "3"]);
    assert_eq!(num(&par, "decode_steps"), 8.0);
    let (all, one) = (num(&par, "decode_tok_s"), num(&par, "decode_tok_s_per_seq"));
    assert!((all - 3.0 * one).abs() < 1e-9 * all, "{all} {one}");
}

/// Decode one token at a time (`--parallel 1`): the row's tokens/s and its decode
/// tokens/s price the same tokens, each at its own misses, so they agree; under page
/// faults on 16 threads (desktop-cpu) a token's time is not linear in its misses. With
/// every layer in VRAM each token reads its top-k experts of each layer there.
#[test]
fn one_token_steps_decode_at_the_rows_rate() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("ds.mst");
    let t = trace.to_str().unwrap();
    ok(&[
        "synth",
        "--model",
        "deepseek-v2-lite",
        "--tokens",
        "200",
        "--responses",
        "3",
        "-q",
        "-o",
        t,
    ]);
    // At 14 GiB most accesses hit: the hits' products hide under each token's own reads.
    let cases = [
        ("mmap", "10GiB"),
        ("pread", "10GiB"),
        ("pread", "14GiB"),
        ("direct", "14GiB"),
    ];
    for (io, ram) in cases {
        let r = json_row(&[
            "simulate",
            t,
            "--hw",
            "desktop-cpu",
            "--ram",
            ram,
            "--parallel",
            "1",
            "--io",
            io,
            "--format",
            "json",
            "-q",
        ]);
        let est = r["est_tok_s"].as_f64().unwrap();
        let decode = r["batch"]["decode_tok_s"].as_f64().unwrap();
        assert!(
            (est - decode).abs() <= 1e-9 * est,
            "{io} {ram}: {est} {decode}"
        );
    }
    // Every MoE layer in VRAM (3090-ddr5): no layer replayed, the GPU's tokens alone.
    let r = json_row(&[
        "simulate",
        t,
        "--hw",
        "3090-ddr5",
        "--parallel",
        "1",
        "--format",
        "json",
        "-q",
    ]);
    assert_eq!(r["gpu_layers"], 26);
    let est = r["est_tok_s"].as_f64().unwrap();
    let decode = r["batch"]["decode_tok_s"].as_f64().unwrap();
    assert!(
        (est - decode).abs() <= 1e-9 * est,
        "GPU only: {est} {decode}"
    );
}

#[test]
fn bad_prompt_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let trace = long_prompts(dir.path());
    let t = trace.to_str().unwrap();
    let base = ["simulate", t, "--policy", "lru", "--ram", "128GiB", "-q"];
    fn with<'a>(base: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
        base.iter().chain(more).copied().collect()
    }
    fails(
        &with(&base, &["--model", "glm-5", "--prompt-tokens", "512"]),
        "add --phase all",
    );
    fails(
        &with(
            &base,
            &[
                "--model",
                "glm-5",
                "--phase",
                "all",
                "--prompt-tokens",
                "512,2048",
            ],
        ),
        "the trace's longest prompt is 1024 tokens; `moe-spill synth --prompt-tokens 2048`",
    );
    fails(
        &with(
            &base,
            &[
                "--model",
                "glm-5",
                "--phase",
                "all",
                "--prompt-tokens",
                "512",
                "--io",
                "rated",
            ],
        ),
        "needs a model (--model) and the I/O model",
    );
    fails(
        &with(
            &base,
            &["--model", "glm-5", "--phase", "all", "--prompt-tokens", "0"],
        ),
        "--prompt-tokens 0: a prompt has at least one token",
    );
    // A trace of decode tokens only: a recording can be tagged as prompts instead.
    let dec = dir.path().join("decode.mst");
    let d = dec.to_str().unwrap();
    ok(&[
        "synth",
        "--model",
        "glm-5",
        "--tokens",
        "16",
        "--responses",
        "1",
        "-q",
        "-o",
        d,
    ]);
    fails(
        &[
            "simulate", d, "--ram", "128GiB", "-q", "--phase", "all", "--prompt-tokens", "512",
        ],
        "the trace has no prompt tokens; `moe-spill synth --prompt-tokens 512` generates prompts that long; `moe-spill convert --as-prompt` tags",
    );
}

/// With a GPU, op offload and faults, steps of 32 tokens or more get a note on the copy
/// that faults from one thread; smaller steps (whatever --ubatch says), no GPU,
/// --no-op-offload or reads by workers get none.
#[test]
fn op_offload_from_faults_is_noted() {
    let dir = tempfile::tempdir().unwrap();
    let trace = long_prompts(dir.path());
    let t = trace.to_str().unwrap();
    let stderr = |extra: &[&str]| {
        let out = glm5_on_4090(t, extra);
        assert!(out.status.success(), "{extra:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let noted = |extra: &[&str]| stderr(extra).contains("note: op offload");
    let all = ["--phase", "all"];
    assert!(noted(&all));
    assert!(noted(&[&all[..], &["--ubatch", "32"]].concat()));
    assert!(!noted(&[&all[..], &["--ubatch", "31"]].concat()));
    // Prompts cut to 16 tokens make ubatches of 16, whatever --ubatch is.
    assert!(!noted(&[&all[..], &["--prompt-tokens", "16"]].concat()));
    assert!(noted(&[&all[..], &["--prompt-tokens", "16,64"]].concat()));
    assert!(!noted(&[&all[..], &["--no-op-offload"]].concat()));
    assert!(!noted(&[&all[..], &["--gpus", "0"]].concat()));
    assert!(!noted(&[&all[..], &["--io", "pread"]].concat()));
    // Decode steps carry --parallel tokens: 3 responses, so never 32; prompt tokens left
    // out (--phase decode) make no ubatch at all.
    assert!(!noted(&["--parallel", "3"]));
    assert!(!noted(&["--ubatch", "64"]));
    // --no-op-offload where no step offloads says it changes nothing.
    let said = |extra: &[&str]| {
        stderr(&[&["--no-op-offload"][..], extra].concat())
            .contains("--no-op-offload changes nothing here")
    };
    assert!(said(&[]));
    assert!(said(&["--phase", "all", "--gpus", "0"]));
    assert!(!said(&["--phase", "all"]));
}

/// docs/batches_prefill.csv and docs/batches_parallel.csv are what scripts/batch_figure.sh
/// writes with this build: every ubatch size and every --parallel, rerun here, equal
/// their rows byte for byte (so the figure's data cannot go stale).
#[test]
fn the_batches_figure_data_is_current() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run_ok = |args: &[&str]| {
        let out = common::run_in(d, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let machine = [
        "--model",
        "glm-5",
        "--hw",
        "4090-ddr5",
        "--ram",
        "96GiB..384GiB",
        "--points",
        "4",
        "--policies",
        "linux",
        "-q",
        "--format",
        "csv",
    ];
    run_ok(&[
        "synth",
        "--model",
        "glm-5",
        "--prompt-tokens",
        "32768",
        "--tokens",
        "64",
        "--responses",
        "2",
        "-q",
        "-o",
        "prompts.mst",
    ]);
    run_ok(&[
        "synth",
        "--model",
        "glm-5",
        "--tokens",
        "128",
        "--responses",
        "32",
        "-q",
        "-o",
        "decode.mst",
    ]);
    let docs = |name: &str| fs::read_to_string(root().join("docs").join(name)).unwrap();
    let mut runs: Vec<(&str, Vec<&str>, &str, &str)> = Vec::new();
    for ub in ["128", "512", "2048"] {
        runs.push((
            "batches_prefill.csv",
            vec![
                "sweep",
                "prompts.mst",
                "--phase",
                "all",
                "--ubatch",
                ub,
                "--prompt-tokens",
                "512,2048,8192,32768",
            ],
            "ubatch",
            ub,
        ));
    }
    for p in ["1", "2", "4", "8", "16", "32"] {
        runs.push((
            "batches_parallel.csv",
            vec!["sweep", "decode.mst", "--parallel", p],
            "parallel",
            p,
        ));
    }
    for (file, args, column, value) in runs {
        let fresh = run_ok(&[&args[..], &machine[..]].concat());
        let doc = docs(file);
        assert_eq!(header(&fresh), header(&doc), "{file}: columns");
        let col = header(&doc).iter().position(|c| c == column).unwrap();
        let want: Vec<&str> = doc
            .lines()
            .skip(1)
            .filter(|l| l.split(',').nth(col) == Some(value))
            .collect();
        let got: Vec<&str> = fresh.lines().skip(1).collect();
        assert!(!want.is_empty(), "{file}: no rows at {column} {value}");
        assert_eq!(
            got, want,
            "{file} at {column} {value}: run scripts/batch_figure.sh"
        );
    }
}

/// ttft_runs counts the prompt runs ttft_s is the mean of: every run cut to the length,
/// less those whose first ubatch the warm-up leaves out; none, no time to first token.
#[test]
fn ttft_runs_counts_the_runs_timed() {
    let dir = tempfile::tempdir().unwrap();
    let trace = long_prompts(dir.path());
    let t = trace.to_str().unwrap();
    for (warmup, runs) in [("0", "3"), ("100", "2"), ("1100", "")] {
        let rows = glm5_on_4090_rows(
            t,
            &[
                "--phase",
                "all",
                "--prompt-tokens",
                "256",
                "--warmup-tokens",
                warmup,
                "-q",
            ],
        );
        let row = &rows[0];
        assert_eq!(row["ttft_runs"], runs, "--warmup-tokens {warmup}");
        assert_eq!(row["ttft_s"].is_empty(), runs.is_empty());
    }
}
