//! The synthetic trace generator: calibration (measured by analyze), determinism,
//! geometry, --fit on a small recording, the committed sample, prompts against the
//! recorded DeepSeek-V2-Lite prompts (read from ../shared), and (ignored) the
//! DeepSeek-V2-Lite comparison of docs/synthetic.md.

use std::path::{Path, PathBuf};

use moe_spill::analyze::{analyze, union_curve, Runs, UBATCH_SIZES};
use moe_spill::commands::synth::{run as synth_run, SynthOptions};
use moe_spill::input::TraceSource;
use moe_spill::model::{Model, MODELS};
use moe_spill::synth::{self, fit, generate, preset_params, Params, Shape};
use moe_spill::trace::Trace;

fn u_d(t: &Trace) -> (f64, f64) {
    analyze(t, 128, false, false).u_d()
}

fn within(v: f64, target: f64, rel: f64) -> bool {
    (v / target - 1.0).abs() <= rel
}

fn args(model: Option<&str>) -> SynthOptions {
    SynthOptions {
        model: model.map(str::to_string),
        tokens: None,
        responses: None,
        prompt_tokens: None,
        seed: 1,
        output: None,
        target_u: None,
        target_d: None,
        fit: None,
        compare: false,
        skew: None,
        affinity: None,
        dead: None,
        drift: None,
        recall: None,
        recall_decay: None,
        opening: None,
        top_k: None,
        quiet: true,
    }
}

fn read(path: &Path, model: Option<&str>) -> Trace {
    TraceSource {
        traces: vec![path.to_path_buf()],
        model: model.map(str::to_string),
        gguf: None,
        include_prompt: false,
        quiet: true,
    }
    .load()
    .unwrap()
    .trace
}

/// Every token: top-k distinct experts per layer, each id inside its layer's range.
fn check_geometry(t: &Trace, m: &Model) {
    let g = &t.geometry;
    assert_eq!(*g, m.geometry(), "{}", m.name);
    let (n, k) = (g.n_experts as usize, g.top_k as usize);
    for tok in t.ids.chunks_exact(g.accesses_per_token()) {
        for (slot, layer) in tok.chunks_exact(k).enumerate() {
            for (i, &id) in layer.iter().enumerate() {
                assert_eq!(id as usize / n, slot, "{}: id {id} in slot {slot}", m.name);
                assert!(!layer[..i].contains(&id), "{}: repeat in {layer:?}", m.name);
            }
        }
    }
}

#[test]
fn default_glm5_trace_meets_the_seeds_u_and_d() {
    let t = synth::default_trace();
    assert_eq!(t.n_responses(), synth::DEFAULT_RESPONSES);
    assert_eq!(
        t.n_tokens(),
        synth::DEFAULT_RESPONSES * synth::DEFAULT_TOKENS
    );
    assert_eq!(t.n_accesses(), 4_800_000);
    check_geometry(&t, Model::by_name("glm-5").unwrap());
    let (u, d) = u_d(&t);
    assert!(within(u, synth::GLM5_U, 0.02), "U = {u}");
    assert!(within(d, synth::GLM5_D, 0.05), "D = {d}");
    // The stored constants are what calibration finds: starting from them it is done.
    let m = Model::by_name("glm-5").unwrap();
    let (p, _) = fit::calibrate(
        &m.geometry(),
        &preset_params(m),
        0,
        synth::GLM5_U,
        synth::GLM5_D,
        synth::CALIBRATION_SEED,
    )
    .unwrap();
    assert_eq!(p, preset_params(m));
}

#[test]
fn calibration_to_targets_holds_on_the_full_output() {
    // qwen3-30b-a3b: 48 layers x 128 experts, top-8; targets unlike GLM-5's.
    let m = Model::by_name("qwen3-30b-a3b").unwrap();
    let (tu, td) = (3000.0, 450.0);
    let (p, (cu, cd)) = fit::calibrate(
        &m.geometry(),
        &preset_params(m),
        0,
        tu,
        td,
        synth::CALIBRATION_SEED,
    )
    .unwrap();
    assert!(within(cu, tu, 0.005) && within(cd, td, 0.015), "{cu} {cd}");
    let t = generate(&m.geometry(), &p, &Shape::uniform(6, 1000, 32), 99);
    let (u, d) = u_d(&t);
    assert!(within(u, tu, 0.02), "U = {u}");
    assert!(within(d, td, 0.05), "D = {d}");
}

#[test]
fn same_seed_same_trace_other_seed_other_trace() {
    let m = Model::by_name("deepseek-v2-lite").unwrap();
    let p = preset_params(m);
    let shape = Shape::uniform(3, 300, 20);
    let a = generate(&m.geometry(), &p, &shape, 7);
    assert_eq!(a, generate(&m.geometry(), &p, &shape, 7));
    let b = generate(&m.geometry(), &p, &shape, 8);
    assert_eq!(a.prompt, b.prompt);
    let same = a.ids.iter().zip(&b.ids).filter(|(x, y)| x == y).count();
    assert!(same < a.ids.len() / 2, "{same} of {} equal", a.ids.len());
}

#[test]
fn every_preset_geometry_is_respected() {
    for m in MODELS {
        let t = generate(
            &m.geometry(),
            &preset_params(m),
            &Shape::uniform(2, 150, 10),
            3,
        );
        check_geometry(&t, m);
        assert_eq!(t.n_tokens(), 320);
        assert_eq!(t.n_decode_tokens(), 300);
    }
}

#[test]
fn synth_writes_forum_and_binary_files_that_load_back() {
    let dir = tempfile::tempdir().unwrap();
    let mst = dir.path().join("t.mst");
    let txt = dir.path().join("forum");
    for out in [&mst, &txt] {
        let mut a = args(Some("olmoe-1b-7b"));
        a.responses = Some(2);
        a.tokens = Some(40);
        a.prompt_tokens = Some(6);
        a.seed = 5;
        a.output = Some(out.clone());
        synth_run(a).unwrap();
    }
    let m = Model::by_name("olmoe-1b-7b").unwrap();
    let expect = generate(
        &m.geometry(),
        &preset_params(m),
        &Shape::uniform(2, 40, 6),
        5,
    );
    assert_eq!(read(&mst, None), expect);
    assert!(txt.join("single_response_001.txt").is_file());
    assert_eq!(read(&txt, None), expect);
}

#[test]
fn bad_options_are_one_line_errors() {
    let mut a = args(None);
    a.output = Some(PathBuf::from("x.mst"));
    let e = synth_run(a).unwrap_err();
    assert!(e.0.contains("--model"), "{e}");
    let e = synth_run(args(Some("glm-5"))).unwrap_err();
    assert!(e.0.contains("-o PATH"), "{e}");
    let mut a = args(Some("glm-5"));
    a.output = Some(PathBuf::from("/nonexistent/x.mst"));
    a.tokens = Some(0);
    assert!(synth_run(a).unwrap_err().0.contains("--tokens 0"));
    let mut a = args(Some("no-such-model"));
    a.output = Some(PathBuf::from("x.mst"));
    assert!(synth_run(a).unwrap_err().0.contains("unknown model"));
    let mut a = args(Some("olmoe-1b-7b"));
    a.output = Some(PathBuf::from("x.mst"));
    a.target_u = Some(5000.0); // more than its 1024 experts
    a.target_d = Some(10.0);
    assert!(synth_run(a).unwrap_err().0.contains("--target-u"));
    // Calibration solves for --dead and --drift: one given as well is refused.
    for (dead, drift, flag) in [(Some(0.3), None, "--dead"), (None, Some(0.01), "--drift")] {
        let mut a = args(Some("olmoe-1b-7b"));
        a.output = Some(PathBuf::from("x.mst"));
        a.target_u = Some(500.0);
        a.target_d = Some(50.0);
        a.dead = dead;
        a.drift = drift;
        let e = synth_run(a).unwrap_err().0;
        assert!(
            e.starts_with(&format!(
                "{flag} is what --target-u and --target-d calibrate"
            )),
            "{e}"
        );
    }
    let mut a = args(Some("olmoe-1b-7b"));
    a.output = Some(PathBuf::from("x.mst"));
    a.dead = Some(1.5);
    assert!(synth_run(a).unwrap_err().0.contains("--dead"));
}

/// A small "recording" (a synthetic trace with a shared opening and ragged responses)
/// and the fit to it: same shape and opening, U and D within the bounds.
#[test]
fn fit_to_a_small_recording() {
    let m = Model::by_name("olmoe-1b-7b").unwrap();
    let g = m.geometry();
    let truth = Params {
        skew: Params::depth_skew(g.n_layers(), 0.1, 0.6),
        affinity: 0.9,
        dead: 0.35,
        drift: 0.004,
        recall: 0.3,
        recall_decay: 1.6,
        opening: 2,
    };
    let shape = Shape {
        responses: (0..12).map(|i| (0, 100 + 100 * (i % 5))).collect(),
    };
    let rec = generate(&g, &truth, &shape, 2024);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.mst");
    moe_spill::report::write_trace(&rec, &path).unwrap();
    let rec = read(&path, None);
    let f = fit::fit(
        &rec,
        &synth::fit_base(g.n_layers()),
        synth::CALIBRATION_SEED,
    )
    .unwrap();
    assert_eq!(f.shape, shape);
    assert_eq!(f.params.opening, 2);
    assert_eq!(f.chunk, 128);
    let syn = generate(&g, &f.params, &f.shape, 1);
    let (u, d) = u_d(&syn);
    let (ru, rd) = u_d(&rec);
    assert!(within(u, ru, 0.02), "U {u} vs {ru}");
    assert!(within(d, rd, 0.05 + 1.0 / rd), "D {d} vs {rd}");
    // Per-layer entropy follows the recording's (deeper layers more skewed); a dozen
    // responses make it noisy per layer.
    let (hr, hs) = (fit::layer_entropy(&rec), fit::layer_entropy(&syn));
    for (a, b) in hr.iter().zip(&hs) {
        assert!((a - b).abs() < 0.12, "entropy {a} vs {b}");
    }
    let mean = |h: &[f64]| h.iter().sum::<f64>() / h.len() as f64;
    assert!((mean(&hr) - mean(&hs)).abs() < 0.03, "{hr:?} vs {hs:?}");
    assert!(hr[0] > hr[15] && hs[0] > hs[15]);
    // The command: --fit with --responses resamples the recorded lengths in turn.
    let out = dir.path().join("more.mst");
    let mut a = args(None);
    a.fit = Some(path);
    a.responses = Some(20);
    a.output = Some(out.clone());
    synth_run(a).unwrap();
    let more = read(&out, None);
    assert_eq!(more.n_responses(), 20);
    assert_eq!(more.response(17).len(), shape.responses[17 % 12].1);
}

/// traces/synth-sample is exactly what its documented command makes.
#[test]
fn committed_sample_is_reproducible() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("traces/synth-sample");
    let sample = read(&dir, None);
    let m = Model::by_name("olmoe-1b-7b").unwrap();
    // moe-spill synth --model olmoe-1b-7b --responses 3 --tokens 52 --prompt-tokens 12
    //   --seed 7 -o traces/synth-sample
    let expect = generate(
        &m.geometry(),
        &preset_params(m),
        &Shape::uniform(3, 52, 12),
        7,
    );
    assert_eq!(sample, expect);
    assert_eq!(sample.n_tokens() - sample.n_decode_tokens(), 36);
}

/// The synthetic-versus-real comparison of docs/synthetic.md:
/// `cargo test --release --test synth -- --ignored --nocapture deepseek`
#[test]
#[ignore = "needs ../shared/traces/deepseek-v2-lite; prints the comparison"]
fn deepseek_v2_lite_comparison() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/traces/deepseek-v2-lite/csv");
    let rec = read(&path, None);
    let base = synth::fit_base(rec.geometry.n_layers());
    let f = fit::fit(&rec, &base, synth::CALIBRATION_SEED).unwrap();
    println!("parameters: {}", synth::describe(&f.params));
    let syn = generate(&rec.geometry, &f.params, &f.shape, 1);
    let (text, gap) = fit::compare(&rec, &syn, f.chunk).unwrap();
    println!("{text}");
    assert!(gap < 0.03, "largest LRU hit-rate gap {gap}");
}

/// Synthetic prompts follow the recorded prompts' union of experts per layer per
/// ubatch within 3% at every N = 1..512: the DeepSeek-V2-Lite preset (whose parameters
/// are the fit's, checked here) and a fresh `--fit`, with prompts of 512 tokens.
#[test]
fn prompts_follow_the_recorded_union_growth() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/traces/deepseek-v2-lite/csv");
    assert!(path.is_dir(), "{} is missing", path.display());
    let rec = read(&path, None);
    // The recording is prefill read as decode tokens: its responses are the prompts.
    let real = union_curve(&rec, Runs::Responses, &UBATCH_SIZES);
    let f = fit::fit(
        &rec,
        &synth::fit_base(rec.geometry.n_layers()),
        synth::CALIBRATION_SEED,
    )
    .unwrap();
    let m = Model::by_name("deepseek-v2-lite").unwrap();
    let preset = preset_params(m);
    // The preset's constants are the fit, rounded.
    for (a, b) in preset.skew.iter().zip(&f.params.skew) {
        assert!((a - b).abs() < 1e-4, "skew {a} vs fitted {b}");
    }
    assert!((preset.affinity - f.params.affinity).abs() < 1e-3);
    assert!((preset.dead - f.params.dead).abs() < 1e-4);
    assert!((preset.drift - f.params.drift).abs() < 1e-5);
    assert_eq!(preset.opening, f.params.opening);
    let shape = Shape::uniform(100, 16, 512);
    for (what, p) in [("preset", &preset), ("--fit", &f.params)] {
        let syn = generate(&m.geometry(), p, &shape, 1);
        let curve = union_curve(&syn, Runs::Prompt, &UBATCH_SIZES);
        for (r, s) in real.iter().zip(&curve) {
            assert!(r.ubatches >= 70 && s.ubatches >= 100, "{r:?} {s:?}");
            assert!(
                within(s.union_per_layer, r.union_per_layer, 0.03),
                "{what}: N = {}: synthetic {:.2} vs recorded {:.2}",
                r.ubatch,
                s.union_per_layer,
                r.union_per_layer
            );
        }
    }
}
