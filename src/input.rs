//! Input: where traces come from and how they are loaded, with no command-line types.
//! A [`TraceSource`] (files, model name, phase, quiet) becomes a [`Loaded`] trace and its
//! model ([`TraceSource::load`]); with no files, the embedded default trace. Also the
//! labels output gives traces.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::format::{self, ExpertLimit, Layout};
use crate::model::{Model, MODELS};
use crate::trace::Trace;
use crate::weights::gguf::{self, GgufModel};

/// How output names the embedded default trace.
pub const EMBEDDED_LABEL: &str = "embedded-glm-5-synthetic";

/// The traces to read, validated from the TRACE arguments.
#[derive(Clone, Debug, Default)]
pub struct TraceSource {
    /// Trace files or directories (empty: the embedded default trace).
    pub traces: Vec<PathBuf>,
    /// Model preset named by the user (checked against the trace when loaded).
    pub model: Option<String>,
    /// A GGUF model file (any part of a split one): the model and its exact sizes
    /// instead of a preset and a quant.
    pub gguf: Option<PathBuf>,
    /// Replay prompt-processing tokens too (`--phase all`), not only generated ones.
    pub include_prompt: bool,
    /// No progress output on stderr.
    pub quiet: bool,
}

impl TraceSource {
    /// The files loading reads, for `-o` to spare: the traces and each part of the GGUF.
    pub fn input_files(&self) -> Vec<PathBuf> {
        let mut files = self.traces.clone();
        if let Some(g) = &self.gguf {
            files.extend(crate::format::gguf::split_parts(g));
        }
        files
    }
}

/// A trace and the model it belongs to (if known).
pub struct Loaded {
    pub trace: Trace,
    pub model: Option<&'static Model>,
    /// The GGUF file the model was read from (`--gguf`).
    pub gguf: Option<GgufModel>,
}

impl TraceSource {
    /// Load the traces and settle the model: the named one (checked against the trace)
    /// or the single preset whose geometry matches.
    pub fn load(&self) -> Result<Loaded> {
        load_and_settle(self)
    }
}

fn load_and_settle(input: &TraceSource) -> Result<Loaded> {
    if input.gguf.is_some() && input.model.is_some() {
        return Err(Error::new("give --gguf or --model, not both"));
    }
    let file = input.gguf.as_deref().map(gguf::read).transpose()?;
    let named = match &file {
        Some(g) => Some(g.model()),
        None => input.model.as_deref().map(Model::by_name).transpose()?,
    };
    // How messages name the model the user gave.
    let given = |m: &Model| match &file {
        Some(g) => format!("{} (from {})", m.name, g.path.display()),
        None => m.name.to_string(),
    };
    if input.traces.is_empty() {
        let m = Model::by_name("glm-5")?;
        match (named, &file) {
            (Some(n), None) if n.name != m.name => {
                return Err(Error::new(format!(
                    "no TRACE given, and the embedded default trace is {}, not {}: name a trace of {}, or make one: moe-spill synth --model {} -o {}.mst",
                    m.name, n.name, n.name, n.name, n.name
                )));
            }
            (Some(n), Some(_)) if n.geometry() != m.geometry() => {
                return Err(Error::new(format!(
                    "no TRACE given, and the embedded default trace is {} ({}), not {} ({}): name a trace of that model",
                    m.name,
                    m.geometry().describe(),
                    given(n),
                    n.geometry().describe()
                )));
            }
            _ => {}
        }
        if !input.quiet {
            crate::note!(
                "moe-spill: no TRACE given: using the embedded default {EMBEDDED_LABEL} (GLM-5 geometry, 8 responses x 1000 tokens, calibrated to the seed's U = 13190, D = 2412)"
            );
        }
        return Ok(Loaded {
            trace: crate::synth::default_trace(),
            model: Some(named.unwrap_or(m)),
            gguf: file,
        });
    }
    let hint = named.map(|m| Layout::of(&m.geometry()));
    let limit = named.map(|m| ExpertLimit {
        n_experts: m.n_experts,
        model: m.name,
    });
    let mut files = Vec::new();
    for arg in &input.traces {
        files.extend(format::trace_files(arg)?);
    }
    let bar = crate::progress::bar_before_checks(
        files.len() as u64,
        "reading",
        input.quiet || files.len() < 50,
    );
    let mut trace = format::load_files(&files, hint.as_ref(), limit, &mut |done, _| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    let (g, known) = (&trace.geometry, trace.n_experts_known);
    let model = match named {
        Some(m) if m.fits(g, known) => Some(m),
        Some(m) if m.same_experts(g, known) => Some(reduced(m, g.top_k, input.quiet)),
        Some(m) => {
            return Err(Error::new(format!(
                "the trace ({}) does not match model {} ({})",
                g.describe(),
                given(m),
                m.geometry().describe()
            )));
        }
        None => match Model::matching(g, known)[..] {
            [m] => Some(m),
            // Another top-k of the experts of exactly one preset (said on stderr).
            [] => match MODELS
                .iter()
                .filter(|m| m.same_experts(g, known))
                .collect::<Vec<_>>()[..]
            {
                [m] => Some(reduced(m, g.top_k, input.quiet)),
                [] => {
                    note_ids_beyond_a_preset(g, known, input.quiet);
                    None
                }
                _ => None,
            },
            _ => None,
        },
    };
    if let Some(m) = model {
        trace.set_n_experts(m.n_experts);
        trace.n_experts_known = true;
    }
    Ok(Loaded {
        trace,
        model,
        gguf: file,
    })
}

/// A trace with a preset's MoE layers but expert ids beyond its experts matches no
/// preset: say which, since a single corrupt id is the likely cause and `--model` names
/// its line.
fn note_ids_beyond_a_preset(g: &crate::trace::Geometry, known: bool, quiet: bool) {
    if quiet || known {
        return;
    }
    let layers_match: Vec<&Model> = MODELS
        .iter()
        .filter(|m| g.layers == m.moe_layers() && g.n_experts > m.n_experts)
        .collect();
    if let [m] = layers_match[..] {
        crate::note!(
            "moe-spill: note: the trace has the MoE layers of {} but expert ids up to {} (it has {} experts per layer), so no model preset matches; --model {} names the line of the first id beyond them",
            m.name,
            g.n_experts - 1,
            m.n_experts,
            m.name
        );
    }
}

/// `m` routing the trace's `k` experts per token instead of its own top-k, said on stderr.
fn reduced(m: &'static Model, k: u16, quiet: bool) -> &'static Model {
    if !quiet {
        crate::note!(
            "moe-spill: note: the trace routes {k} experts per MoE layer and token where {} routes {}: priced as {} with top-{k} (a reduced or raised expert count, as Flash-MoE's --k or llama.cpp's expert_used_count override)",
            m.name,
            m.top_k,
            m.name
        );
    }
    m.with_top_k(k)
}

/// Short name of what was replayed: the TRACE arguments' last two path components.
pub fn trace_label(input: &TraceSource) -> String {
    if input.traces.is_empty() {
        return EMBEDDED_LABEL.to_string();
    }
    let names: Vec<String> = input
        .traces
        .iter()
        .map(|p| {
            let mut c: Vec<String> = p
                .components()
                .rev()
                .take(2)
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            c.reverse();
            c.join("/")
        })
        .collect();
    names.join("+")
}
