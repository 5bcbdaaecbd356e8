//! Routing as llama.cpp hands it out, assembled into a trace. Every evaluated batch of
//! tokens shows each MoE layer's `ffn_moe_topk` tensor once per micro-batch: top-k
//! expert ids for each of its tokens, the layers one after another. The ids of each
//! layer are queued as they come; when the batch is done, each of its tokens takes its
//! top-k ids from every layer's queue, so the tokens enter the trace in order with
//! every MoE layer, in layer order, whatever the micro-batching was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::MAX_EXPERT_ID;
use crate::trace::{Geometry, Trace};

pub struct Routing {
    model: PathBuf,
    n_experts: u16,
    top_k: Option<u16>,
    /// Per model layer number, the ids of tokens not yet in the trace, token-major.
    queued: BTreeMap<u16, Vec<u16>>,
    trace: Option<Trace>,
}

impl Routing {
    /// Routing of a model with `n_experts` routed experts per MoE layer (`model` names
    /// it in messages).
    pub fn new(model: &Path, n_experts: usize) -> Result<Routing> {
        if n_experts == 0 || n_experts > MAX_EXPERT_ID as usize + 1 {
            return Err(Error::in_file(
                model,
                format!(
                    "{n_experts} routed experts per layer; moe-spill supports 1 to {}",
                    MAX_EXPERT_ID as usize + 1
                ),
            ));
        }
        Ok(Routing {
            model: model.to_path_buf(),
            n_experts: n_experts as u16,
            top_k: None,
            queued: BTreeMap::new(),
            trace: None,
        })
    }

    /// One layer's `ffn_moe_topk` tensor: `n_tokens` rows of `k` expert ids, `id(token,
    /// i)` the i-th of a token.
    pub fn add(
        &mut self,
        layer: u16,
        k: usize,
        n_tokens: usize,
        id: impl Fn(usize, usize) -> i32,
    ) -> Result<()> {
        let top_k = *self.top_k.get_or_insert(k.min(u16::MAX as usize) as u16);
        if k != top_k as usize || k == 0 || k > self.n_experts as usize {
            return Err(self.error(format!(
                "layer {layer} routes {k} experts per token, expected {top_k} of {}",
                self.n_experts
            )));
        }
        let queue = self.queued.entry(layer).or_default();
        for t in 0..n_tokens {
            let start = queue.len();
            for i in 0..k {
                let e = id(t, i);
                if e < 0 || e >= self.n_experts as i32 {
                    let n = self.n_experts;
                    return Err(self.error(format!(
                        "layer {layer} routed a token to expert {e}, outside its {n} experts"
                    )));
                }
                let e = e as u16;
                if queue[start..].contains(&e) {
                    return Err(
                        self.error(format!("layer {layer} routed a token to expert {e} twice"))
                    );
                }
                queue.push(e);
            }
        }
        Ok(())
    }

    /// The routing ids queued for `layer` (for tests and checks).
    pub fn queued(&self, layer: u16) -> usize {
        self.queued.get(&layer).map_or(0, Vec::len)
    }

    /// A batch of `n` tokens was evaluated: move their routing into the trace.
    pub fn commit(&mut self, n: usize, prompt: bool) -> Result<()> {
        if self.queued.is_empty() && n > 0 {
            return Err(self.error(
                "no ffn_moe_topk tensor was evaluated: the model routes no experts (a dense model?); record needs a Mixture-of-Experts model",
            ));
        }
        let k = self.top_k.unwrap_or(1) as usize;
        self.fix_layers()?;
        for (&layer, q) in &self.queued {
            if q.len() != n * k {
                return Err(self.error(format!(
                    "llama.cpp evaluated {n} tokens, but layer {layer} routed {}",
                    q.len() / k
                )));
            }
        }
        self.move_tokens(n, prompt);
        Ok(())
    }

    /// After an interrupted batch: move the tokens that every MoE layer routed into the
    /// trace and drop the rest (nothing when the layers are not known yet).
    pub fn commit_complete(&mut self, prompt: bool) {
        let Some(t) = &self.trace else {
            return;
        };
        let k = t.geometry.top_k as usize;
        let n = t
            .geometry
            .layers
            .iter()
            .map(|l| self.queued.get(l).map_or(0, |q| q.len() / k))
            .min()
            .unwrap_or(0);
        self.move_tokens(n, prompt);
        self.queued.clear();
    }

    /// The current response is complete.
    pub fn end_response(&mut self) {
        if let Some(t) = &mut self.trace {
            t.end_response();
        }
    }

    /// Tokens recorded so far.
    pub fn n_tokens(&self) -> usize {
        self.trace.as_ref().map_or(0, Trace::n_tokens)
    }

    /// The trace (None if no token was recorded).
    pub fn finish(mut self) -> Option<Trace> {
        self.end_response();
        self.trace.filter(|t| t.n_tokens() > 0)
    }

    /// The layer set comes from the first batch; every later one must show the same.
    fn fix_layers(&mut self) -> Result<()> {
        let layers: Vec<u16> = self.queued.keys().copied().collect();
        match &self.trace {
            Some(t) if t.geometry.layers != layers => {
                let g = t.geometry.layers.clone();
                Err(self.error(format!(
                    "routing came from MoE layers {layers:?}, earlier from {g:?}"
                )))
            }
            Some(_) => Ok(()),
            None => {
                let g = Geometry {
                    layers,
                    n_experts: self.n_experts,
                    top_k: self.top_k.unwrap_or(1),
                };
                crate::format::check_id_space(&self.model, &g)?;
                self.trace = Some(Trace::empty(g, true));
                Ok(())
            }
        }
    }

    fn move_tokens(&mut self, n: usize, prompt: bool) {
        let Some(t) = &mut self.trace else {
            return;
        };
        let k = t.geometry.top_k as usize;
        let n_experts = t.geometry.n_experts;
        let ids = t.ids.to_mut();
        for token in 0..n {
            for (slot, layer) in t.geometry.layers.iter().enumerate() {
                let base = slot as u16 * n_experts;
                let q = &self.queued[layer];
                ids.extend(q[token * k..(token + 1) * k].iter().map(|&e| base + e));
            }
            t.prompt.push(prompt);
        }
        for q in self.queued.values_mut() {
            q.drain(..(n * k).min(q.len()));
        }
    }

    /// An error about the model's routing, naming the model file.
    pub fn error(&self, msg: impl std::fmt::Display) -> Error {
        Error::in_file(&self.model, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer's tensor from rows of ids.
    fn add(r: &mut Routing, layer: u16, rows: &[[i32; 2]]) -> Result<()> {
        r.add(layer, 2, rows.len(), |t, i| rows[t][i])
    }

    #[test]
    fn micro_batches_assemble_into_tokens_in_order() {
        let mut r = Routing::new(Path::new("m.gguf"), 4).unwrap();
        // A prompt of 3 tokens evaluated as micro-batches of 2 and 1.
        add(&mut r, 1, &[[0, 1], [2, 3]]).unwrap();
        add(&mut r, 3, &[[3, 2], [1, 0]]).unwrap();
        add(&mut r, 1, &[[1, 2]]).unwrap();
        add(&mut r, 3, &[[0, 3]]).unwrap();
        r.commit(3, true).unwrap();
        // One generated token.
        add(&mut r, 1, &[[3, 0]]).unwrap();
        add(&mut r, 3, &[[2, 1]]).unwrap();
        r.commit(1, false).unwrap();
        r.end_response();
        add(&mut r, 1, &[[2, 0]]).unwrap();
        add(&mut r, 3, &[[1, 3]]).unwrap();
        r.commit(1, true).unwrap();
        let t = r.finish().unwrap();
        assert_eq!(t.geometry.layers, vec![1, 3]);
        assert_eq!((t.geometry.n_experts, t.geometry.top_k), (4, 2));
        assert!(t.n_experts_known);
        assert_eq!(
            t.ids,
            vec![0, 1, 7, 6, 2, 3, 5, 4, 1, 2, 4, 7, 3, 0, 6, 5, 2, 0, 5, 7]
        );
        assert_eq!(t.prompt, vec![true, true, true, false, true]);
        assert_eq!(t.response_starts, vec![0, 4, 5]);
    }

    #[test]
    fn inconsistent_routing_is_an_error() {
        let mut r = Routing::new(Path::new("m.gguf"), 4).unwrap();
        assert!(add(&mut r, 0, &[[0, 4]])
            .unwrap_err()
            .0
            .contains("outside its 4"));
        let mut r = Routing::new(Path::new("m.gguf"), 4).unwrap();
        assert!(add(&mut r, 0, &[[2, 2]]).unwrap_err().0.contains("twice"));
        let mut r = Routing::new(Path::new("m.gguf"), 4).unwrap();
        add(&mut r, 0, &[[0, 1], [1, 2]]).unwrap();
        add(&mut r, 1, &[[0, 1]]).unwrap();
        assert!(r
            .commit(2, true)
            .unwrap_err()
            .0
            .contains("layer 1 routed 1"));
        let mut r = Routing::new(Path::new("m.gguf"), 4).unwrap();
        add(&mut r, 0, &[[0, 1]]).unwrap();
        r.commit(1, true).unwrap();
        add(&mut r, 2, &[[0, 1]]).unwrap();
        assert!(r
            .commit(1, false)
            .unwrap_err()
            .0
            .contains("earlier from [0]"));
        let mut r = Routing::new(Path::new("m.gguf"), 4).unwrap();
        assert!(add(&mut r, 0, &[[0, 1]]).is_ok());
        assert!(r
            .add(1, 3, 1, |_, i| i as i32)
            .unwrap_err()
            .0
            .contains("expected 2"));
    }

    #[test]
    fn a_model_without_experts_is_refused() {
        let mut r = Routing::new(Path::new("d.gguf"), 8).unwrap();
        let e = r.commit(5, true).unwrap_err().0;
        assert!(e.starts_with("d.gguf: no ffn_moe_topk"), "{e}");
        assert!(Routing::new(Path::new("d.gguf"), 0).is_err());
    }

    #[test]
    fn an_interrupted_batch_keeps_the_tokens_every_layer_routed() {
        let mut r = Routing::new(Path::new("m.gguf"), 4).unwrap();
        add(&mut r, 0, &[[0, 1]]).unwrap();
        add(&mut r, 1, &[[0, 1]]).unwrap();
        r.commit(1, true).unwrap();
        // Interrupted: layer 0 saw two micro-batches, layer 1 only the first.
        add(&mut r, 0, &[[1, 2], [2, 3], [3, 0]]).unwrap();
        add(&mut r, 1, &[[1, 2]]).unwrap();
        r.commit_complete(true);
        assert_eq!(r.n_tokens(), 2);
        assert_eq!(r.queued(0), 0);
        // Interrupted before any batch finished: nothing is known, nothing kept.
        let mut r = Routing::new(Path::new("m.gguf"), 4).unwrap();
        add(&mut r, 0, &[[0, 1]]).unwrap();
        r.commit_complete(true);
        assert!(r.finish().is_none());
    }
}
