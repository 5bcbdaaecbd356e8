//! `moe-spill record` end to end (needs the `record` feature, so llama.cpp is built):
//! a tiny MoE GGUF with random weights written by scripts/make_tiny_moe.py, recorded,
//! then read back by `info`, `simulate` and the library. The first MoE layer's routing
//! is checked against the script's numpy reference computed from the same weights
//! outside llama.cpp (the script zeroes the first layer's attention output, so that
//! layer's router sees the token's embedding alone: every prompt token is checked,
//! the first of each prompt included).

#![cfg(feature = "record")]

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use moe_spill::format;
use moe_spill::trace::Trace;

const PROMPTS: [&str; 3] = ["Hello, world", "The quick brown fox", "MoE"];
const GENERATED: usize = 6;

/// The tiny model's tokens of a prompt: its UTF-8 bytes, after SentencePiece's
/// escaping of a space as U+2581 (three bytes).
fn tokens_of(prompt: &str) -> Vec<u8> {
    prompt.replace(' ', "\u{2581}").into_bytes()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moe-spill"))
        .args(args)
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

/// Exit status 2, one line on stderr containing `want`, nothing on stdout.
fn fails(args: &[&str], want: &str) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "moe-spill {args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected, got: {err:?}");
    assert!(err.contains(want), "`{err}` does not contain `{want}`");
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.stdout.is_empty());
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The tiny model, its numpy reference, the dense variant and the prompts, in a
/// temporary directory.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let script = root().join("scripts/make_tiny_moe.py");
        let make = |args: &[&str]| {
            let out = Command::new("python3")
                .arg(&script)
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("python3 runs (scripts/test.sh installs gguf and numpy)");
            assert!(
                out.status.success(),
                "make_tiny_moe.py {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        make(&["moe.gguf", "--reference", "reference.json"]);
        make(&["dense.gguf", "--dense"]);
        fs::write(dir.path().join("prompts.txt"), PROMPTS.join("\n") + "\n").unwrap();
        let jsonl: String = PROMPTS
            .iter()
            .map(|p| format!("{}\n", serde_json::json!({ "prompt": p, "id": p.len() })))
            .collect();
        fs::write(dir.path().join("prompts.jsonl"), jsonl).unwrap();
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `record` on the tiny model with `extra` options; the output path.
    fn record(&self, prompts: &str, out: &str, extra: &[&str]) -> PathBuf {
        let (model, prompts, o) = (self.path("moe.gguf"), self.path(prompts), self.path(out));
        let n = GENERATED.to_string();
        let mut args = vec![
            "record",
            "--gguf",
            s(&model),
            "--prompts",
            s(&prompts),
            "-o",
            s(&o),
            "-n",
            &n,
            "--threads",
            "2",
            "--ctx-size",
            "128",
            "--ignore-eos",
        ];
        args.extend_from_slice(extra);
        let out = run(&args);
        assert!(
            out.status.success(),
            "record failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        o
    }
}

fn load(p: &Path) -> Trace {
    format::load(&[p.to_path_buf()], None, None).expect("the recorded trace loads")
}

#[test]
fn records_the_tiny_moe_and_reads_back() {
    let f = Fixture::new();
    let a = f.record("prompts.txt", "a.mst", &[]);
    let prompt_tokens: usize = PROMPTS.iter().map(|p| tokens_of(p).len()).sum();
    let tokens = prompt_tokens + PROMPTS.len() * GENERATED;

    // info: geometry and token counts.
    let info: serde_json::Value =
        serde_json::from_str(&ok(&["info", s(&a), "--format", "json"])).unwrap();
    assert_eq!(info["geometry"], "3 MoE layers (0..2) x 8 experts, top-2");
    assert_eq!(info["experts_known"], true);
    assert_eq!(info["responses"], PROMPTS.len());
    assert_eq!(info["tokens"], tokens);
    assert_eq!(info["prompt_tokens"], prompt_tokens);
    assert_eq!(info["decode_tokens"], PROMPTS.len() * GENERATED);
    assert_eq!(info["accesses"], tokens * 3 * 2);

    // simulate: generated tokens by default, every token with --phase all.
    for (phase, n) in [("decode", PROMPTS.len() * GENERATED), ("all", tokens)] {
        let out = ok(&[
            "simulate",
            s(&a),
            "--phase",
            phase,
            // Token by token: prompt ubatches would count each expert once per ubatch.
            "--ubatch",
            "1",
            "--policy",
            "lru",
            "--cache-experts",
            "6",
            "--format",
            "json",
        ]);
        let row = &serde_json::from_str::<serde_json::Value>(&out).unwrap()[0];
        assert_eq!(row["tokens"], n as u64, "{phase}");
        assert_eq!(row["accesses"], (n * 6) as u64, "{phase}");
        let (h, m) = (
            row["hits"].as_u64().unwrap(),
            row["misses"].as_u64().unwrap(),
        );
        assert_eq!(h + m, (n * 6) as u64);
        assert!(m >= 6 && h > 0, "{row}");
    }

    // The model file sizes the experts (--gguf): every miss costs one expert's gate, up
    // and down slices, 3 x 16 x 32 F32 weights = 6,144 bytes.
    let out = ok(&[
        "simulate",
        s(&a),
        "--gguf",
        s(&f.path("moe.gguf")),
        "--gpus",
        "0",
        "--policy",
        "lru",
        "--cache-experts",
        "6",
        "--format",
        "json",
    ]);
    let row = &serde_json::from_str::<serde_json::Value>(&out).unwrap()[0];
    let misses = row["misses"].as_u64().unwrap();
    assert_eq!(row["accesses"], (PROMPTS.len() * GENERATED * 6) as u64);
    assert_eq!(row["ssd_bytes"], misses * 6144, "{row}");

    // The trace itself: responses, phases, and the first layer's routing against numpy.
    let t = load(&a);
    let reference: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(f.path("reference.json")).unwrap()).unwrap();
    assert_eq!(reference["layer"], 0);
    let offset = reference["token_offset"].as_u64().unwrap() as usize;
    let routing = reference["routing"].as_array().unwrap();
    assert_eq!(t.geometry.layers, vec![0, 1, 2]);
    for (r, prompt) in PROMPTS.iter().enumerate() {
        let range = t.response(r);
        let prompt = tokens_of(prompt);
        assert_eq!(range.len(), prompt.len() + GENERATED);
        for (i, &byte) in prompt.iter().enumerate() {
            let tok = range.start + i;
            assert!(t.prompt[tok]);
            // Slot 0 is layer 0; its ids are the expert numbers themselves.
            let got: Vec<u64> = t.token(tok)[..2].iter().map(|&e| e as u64).collect();
            let want: Vec<u64> = routing[byte as usize + offset]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_u64().unwrap())
                .collect();
            assert_eq!(
                got, want,
                "prompt {r} token {i} (byte {byte:#04x}): llama.cpp routed {got:?}, numpy {want:?}"
            );
        }
        assert!(range.clone().skip(prompt.len()).all(|tok| !t.prompt[tok]));
    }

    // Determinism: the same run again, and the same prompts as JSON Lines, give the
    // same file; the forum text output holds the same trace.
    let b = f.record("prompts.txt", "b.mst", &[]);
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    let c = f.record("prompts.jsonl", "c.mst", &["--quiet"]);
    assert_eq!(fs::read(&a).unwrap(), fs::read(&c).unwrap());
    let text = f.record("prompts.txt", "forum", &[]);
    assert_eq!(fs::read_dir(&text).unwrap().count(), PROMPTS.len());
    let from_text = load(&text);
    assert_eq!(from_text.ids, t.ids);
    assert_eq!(from_text.prompt, t.prompt);
    assert_eq!(from_text.response_starts, t.response_starts);

    // Sampling: the same seed gives the same trace.
    let s1 = f.record("prompts.txt", "s1.mst", &["--temp", "0.9", "--seed", "7"]);
    let s2 = f.record("prompts.txt", "s2.mst", &["--temp", "0.9", "--seed", "7"]);
    assert_eq!(fs::read(&s1).unwrap(), fs::read(&s2).unwrap());
    assert_eq!(load(&s1).n_tokens(), tokens);
}

#[test]
fn bad_input_is_one_line_and_writes_nothing() {
    let f = Fixture::new();
    let out = f.path("out.mst");
    let args = |model: &Path, prompts: &Path| -> Vec<String> {
        [
            "record",
            "--gguf",
            s(model),
            "--prompts",
            s(prompts),
            "-o",
            s(&out),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let check = |model: &Path, prompts: &Path, want: &str| {
        let a = args(model, prompts);
        fails(&a.iter().map(String::as_str).collect::<Vec<_>>(), want);
        assert!(!out.exists(), "{want}: output written");
    };
    let prompts = f.path("prompts.txt");
    check(
        &f.path("missing.gguf"),
        &prompts,
        "missing.gguf: no such file",
    );
    fs::write(f.path("text.gguf"), "just text\n").unwrap();
    check(&f.path("text.gguf"), &prompts, "not a GGUF file");
    let whole = fs::read(f.path("moe.gguf")).unwrap();
    fs::write(f.path("cut.gguf"), &whole[..whole.len() / 2]).unwrap();
    check(
        &f.path("cut.gguf"),
        &prompts,
        "llama.cpp cannot load this model: llama_model_load: error loading model: tensor",
    );
    check(&f.path("dense.gguf"), &prompts, "no routed experts");
    fs::write(f.path("empty.txt"), "\n\n").unwrap();
    check(
        &f.path("moe.gguf"),
        &f.path("empty.txt"),
        "empty.txt: no prompts",
    );
    check(
        &f.path("moe.gguf"),
        &f.path("missing.txt"),
        "missing.txt: no such file",
    );
    // A prompt that does not fit the context.
    let a = args(&f.path("moe.gguf"), &prompts);
    let mut a: Vec<&str> = a.iter().map(String::as_str).collect();
    a.extend(["--ctx-size", "20", "-n", "4"]);
    fails(
        &a,
        "prompts.txt:2: the prompt's 25 tokens plus -n 4 need a context of 29",
    );
    assert!(!out.exists());
    // The output must not be an input.
    let model = f.path("moe.gguf");
    fails(
        &[
            "record",
            "--gguf",
            s(&model),
            "--prompts",
            s(&prompts),
            "-o",
            s(&prompts),
        ],
        "is the prompts file; choose another -o",
    );
}

#[test]
fn ctrl_c_keeps_what_was_recorded() {
    let f = Fixture::new();
    let out = f.path("cut.mst");
    // Far more tokens than the run can generate before the signal.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_moe-spill"));
    // SIGINT at its default in the child whatever this test inherited: a shell starts
    // background jobs with SIGINT ignored, which the run would keep.
    // SAFETY: signal() is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let child = cmd
        .args([
            "record",
            "--gguf",
            s(&f.path("moe.gguf")),
            "--prompts",
            s(&f.path("prompts.txt")),
            "-o",
            s(&out),
            "-n",
            "60000",
            "--ctx-size",
            "60100",
            "--ignore-eos",
            "--threads",
            "1",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let result = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("interrupted: what was recorded before it is in"),
        "{err}"
    );
    let t = load(&out);
    let prompt = tokens_of(PROMPTS[0]).len();
    assert!(t.n_tokens() > prompt, "{} tokens", t.n_tokens());
    assert!(t.n_tokens() < prompt + 60000);
    assert_eq!(t.n_responses(), 1);
}
