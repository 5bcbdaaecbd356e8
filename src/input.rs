//! Input: where traces come from and how they are loaded, with no command-line types.
//! A [`TraceSource`] (files, model name, phase, quiet) becomes a [`Loaded`] trace and its
//! model ([`TraceSource::load`]); with no files, the embedded default trace. Also the
//! labels output gives traces.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::format::{self, ExpertLimit, Layout};
use crate::model::Model;
use crate::trace::Trace;

/// How output names the embedded default trace.
pub const EMBEDDED_LABEL: &str = "embedded-glm-5-synthetic";

/// The traces to read, validated from the TRACE arguments.
#[derive(Clone, Debug, Default)]
pub struct TraceSource {
    /// Trace files or directories (empty: the embedded default trace).
    pub traces: Vec<PathBuf>,
    /// Model preset named by the user (checked against the trace when loaded).
    pub model: Option<String>,
    /// Replay prompt-processing tokens too (`--phase all`), not only generated ones.
    pub include_prompt: bool,
    /// No progress output on stderr.
    pub quiet: bool,
}

/// A trace and the model it belongs to (if known).
pub struct Loaded {
    pub trace: Trace,
    pub model: Option<&'static Model>,
}

impl TraceSource {
    /// Load the traces and settle the model: the named one (checked against the trace)
    /// or the single preset whose geometry matches.
    pub fn load(&self) -> Result<Loaded> {
        load_and_settle(self)
    }
}

fn load_and_settle(input: &TraceSource) -> Result<Loaded> {
    let named = input.model.as_deref().map(Model::by_name).transpose()?;
    if input.traces.is_empty() {
        let m = Model::by_name("glm-5")?;
        if let Some(n) = named {
            if n.name != m.name {
                return Err(Error::new(format!(
                    "no TRACE given, and the embedded default trace is {}, not {}: name a trace of {}",
                    m.name, n.name, n.name
                )));
            }
        }
        if !input.quiet {
            crate::note!(
                "moe-spill: no TRACE given: using the embedded default {EMBEDDED_LABEL} (GLM-5 geometry, 8 responses x 1000 tokens, calibrated to the seed's U = 13190, D = 2412)"
            );
        }
        return Ok(Loaded {
            trace: crate::synth::default_trace(),
            model: Some(m),
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
    let bar = crate::progress::bar(
        files.len() as u64,
        "reading",
        input.quiet || files.len() < 50,
    );
    let mut trace = format::load_files(&files, hint.as_ref(), limit, &mut |done, _| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    let model = match named {
        Some(m) => {
            if !m.fits(&trace.geometry, trace.n_experts_known) {
                return Err(Error::new(format!(
                    "the trace ({}) does not match model {} ({})",
                    trace.geometry.describe(),
                    m.name,
                    m.geometry().describe()
                )));
            }
            Some(m)
        }
        None => match Model::matching(&trace.geometry, trace.n_experts_known)[..] {
            [m] => Some(m),
            _ => None,
        },
    };
    if let Some(m) = model {
        trace.set_n_experts(m.n_experts);
        trace.n_experts_known = true;
    }
    Ok(Loaded { trace, model })
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
