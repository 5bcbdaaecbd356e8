//! Synthetic routing traces: `moe-spill synth` and the embedded default trace.
//!
//! The generative model (details in `gen`): per-layer expert popularity with a power-law
//! tail whose skew grows with depth; per response a topic (a share `dead` of each layer's
//! experts left out, log-normal affinity for the rest) that drifts slowly (a share
//! `drift` of the affinities redrawn per token); short-range recall (a pick re-uses an
//! expert of a recent token, lag power-law distributed); and optionally the opening
//! tokens that every response shares (BOS, chat template). `dead` sets U and `drift`
//! sets D, so a target U and D are met by a monotone search (`fit::calibrate`).
//!
//! docs/synthetic.md documents the model, the calibration, the fit to the recorded
//! DeepSeek-V2-Lite trace and the committed sample.

pub mod fit;
pub mod gen;
mod normal;
mod rng;
mod sampler;
mod simd;
mod work;

pub use gen::{generate, Params, Shape};

use crate::model::Model;
use crate::trace::Trace;

/// The seed's GLM-5 recording: U and D per 128-token chunk (of 19,200 experts).
pub const GLM5_U: f64 = 13190.0;
pub const GLM5_D: f64 = 2412.0;

/// Shape parameters fitted to the recorded DeepSeek-V2-Lite routing (docs/synthetic.md):
/// topic affinity, recall probability and recall lag exponent. Every preset uses them;
/// `dead` and `drift` are then calibrated to U and D.
pub const AFFINITY: f64 = 0.73;
pub const RECALL: f64 = 0.25;
pub const RECALL_DECAY: f64 = 1.75;
/// The topic drift fitted to DeepSeek-V2-Lite: `--fit` keeps it and sets D with the
/// affinity (see `fit::DKnob`).
pub const FIT_DRIFT: f64 = 0.0045;

/// GLM-5's popularity skew at the first and the last MoE layer (an assumption: the seed
/// only reports that the earliest layers are the most uniform).
pub const GLM5_SKEW: (f64, f64) = (0.2, 0.8);
/// `dead` and `drift` calibrated to U = 13190, D = 2412 by
/// `fit::calibrate(glm-5, ..., seed CALIBRATION_SEED)`; re-measured by the tests.
pub const GLM5_DEAD: f64 = 0.2632;
pub const GLM5_DRIFT: f64 = 0.00464;

/// Seed of the calibration traces.
pub const CALIBRATION_SEED: u64 = 0x5EED;
/// The embedded default: 8 responses of 1,000 decode tokens, this seed.
pub const DEFAULT_RESPONSES: usize = 8;
pub const DEFAULT_TOKENS: usize = 1000;
pub const DEFAULT_SEED: u64 = 5;

/// The parameters `--fit` finds on the DeepSeek-V2-Lite recording
/// (`../shared/traces/deepseek-v2-lite/csv`, seed `CALIBRATION_SEED`), which that
/// preset uses: its prompts then follow the recorded prompts (docs/synthetic.md).
pub const DEEPSEEK_V2_LITE_SKEW: [f64; 26] = [
    0.2214, 0.1438, 0.2053, 0.2202, 0.2023, 0.1994, 0.2594, 0.3060, 0.2533, 0.2596, 0.2858, 0.2278,
    0.2673, 0.2045, 0.1888, 0.2205, 0.2052, 0.2302, 0.2577, 0.2765, 0.2318, 0.2966, 0.2819, 0.2963,
    0.2934, 0.2707,
];
pub const DEEPSEEK_V2_LITE_AFFINITY: f64 = 0.728;
pub const DEEPSEEK_V2_LITE_DEAD: f64 = 0.0412;
pub const DEEPSEEK_V2_LITE_DRIFT: f64 = 0.00492;

/// The parameters of a preset: for DeepSeek-V2-Lite, those fitted to its recording; for
/// every other preset GLM-5's calibrated ones (they have no recording to fit; use
/// --target-u/--target-d for a measured U and D).
pub fn preset_params(m: &Model) -> Params {
    let n = m.n_moe_layers as usize;
    if m.name == "deepseek-v2-lite" && n == DEEPSEEK_V2_LITE_SKEW.len() {
        return Params {
            skew: DEEPSEEK_V2_LITE_SKEW.to_vec(),
            affinity: DEEPSEEK_V2_LITE_AFFINITY,
            dead: DEEPSEEK_V2_LITE_DEAD,
            drift: DEEPSEEK_V2_LITE_DRIFT,
            recall: RECALL,
            recall_decay: RECALL_DECAY,
            opening: 1,
        };
    }
    Params {
        skew: Params::depth_skew(n, GLM5_SKEW.0, GLM5_SKEW.1),
        affinity: AFFINITY,
        dead: GLM5_DEAD,
        drift: GLM5_DRIFT,
        recall: RECALL,
        recall_decay: RECALL_DECAY,
        opening: 0,
    }
}

/// Where `--fit` starts: the shape parameters fitted to DeepSeek-V2-Lite (the skew,
/// `dead` and, for D, the affinity are then fitted to the recording).
pub fn fit_base(n_layers: usize) -> Params {
    Params {
        skew: vec![0.0; n_layers],
        affinity: AFFINITY,
        dead: 0.05,
        drift: FIT_DRIFT,
        recall: RECALL,
        recall_decay: RECALL_DECAY,
        opening: 0,
    }
}

/// The embedded default trace: GLM-5, calibrated to the seed's U and D, 8 responses of
/// 1,000 decode tokens (4.8 M accesses), fixed seed.
pub fn default_trace() -> Trace {
    let m = Model::by_name("glm-5").expect("glm-5 preset");
    generate(
        &m.geometry(),
        &preset_params(m),
        &Shape::uniform(DEFAULT_RESPONSES, DEFAULT_TOKENS, 0),
        DEFAULT_SEED,
    )
}

/// One line describing parameters.
pub fn describe(p: &Params) -> String {
    let (lo, hi) = p
        .skew
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &s| (a.min(s), b.max(s)));
    let skew = match (p.skew.first(), p.skew.last()) {
        (Some(f), Some(l))
            if p.skew.len() > 2 && (lo < f.min(*l) - 1e-9 || hi > f.max(*l) + 1e-9) =>
        {
            format!("per layer {lo:.3}..{hi:.3}")
        }
        (Some(f), Some(l)) => format!("{f:.3}:{l:.3}"),
        _ => "-".into(),
    };
    format!(
        "--skew {skew} --affinity {:.3} --dead {:.4} --drift {:.5} --recall {:.3} --recall-decay {:.3} --opening {}",
        p.affinity, p.dead, p.drift, p.recall, p.recall_decay, p.opening
    )
}
