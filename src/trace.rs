//! The in-memory trace: responses -> tokens -> for every MoE layer the routed experts in
//! router order, as one flat buffer of dense u16 ids.
//!
//! Every token has the same layout (n_layers slots x top_k experts), so token t occupies
//! `ids[t * A .. (t + 1) * A]` with `A = n_layers * top_k`, and the slot of an access is
//! implicit in its position. Ids are dense: `slot * n_experts + expert`, which is what the
//! policies see.

use crate::error::{Error, Result};
use crate::ids::Ids;

/// The routing geometry of a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Model layer number of every MoE layer, in slot order (GLM-5: 3..=77).
    pub layers: Vec<u16>,
    /// Routed experts per MoE layer (the id stride).
    pub n_experts: u16,
    /// Experts used per token and layer.
    pub top_k: u16,
}

impl Geometry {
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Accesses per token: n_layers * top_k.
    pub fn accesses_per_token(&self) -> usize {
        self.layers.len() * self.top_k as usize
    }

    /// Number of distinct object ids (n_layers * n_experts).
    pub fn n_ids(&self) -> usize {
        self.layers.len() * self.n_experts as usize
    }

    /// The slot of a model layer number.
    pub fn slot_of(&self, layer: u16) -> Option<usize> {
        self.layers.iter().position(|&l| l == layer)
    }

    /// Short human form, e.g. `26 MoE layers (1..26) x 64 experts, top-6`.
    pub fn describe(&self) -> String {
        let span = match (self.layers.first(), self.layers.last()) {
            (Some(a), Some(b)) => format!(" ({a}..{b})"),
            _ => String::new(),
        };
        format!(
            "{} MoE layers{} x {} experts, top-{}",
            self.layers.len(),
            span,
            self.n_experts,
            self.top_k
        )
    }

    /// The (layers, top_k) part must agree for traces to be concatenated.
    pub fn same_layout(&self, other: &Geometry) -> bool {
        self.layers == other.layers && self.top_k == other.top_k
    }
}

/// Prompt-processing or generated token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Prompt,
    Decode,
}

/// A loaded trace: one or more responses replayed one after another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    pub geometry: Geometry,
    /// Whether `n_experts` came from the source (binary header, model preset) or was only
    /// observed as max expert id + 1 (text formats carry no expert count).
    pub n_experts_known: bool,
    /// Dense ids, token-major (a view into the file for a mapped `.mst`).
    pub ids: Ids,
    /// Token index where each response starts; one extra entry at the end (= n_tokens).
    pub response_starts: Vec<usize>,
    /// Per token: true for a prompt-processing token.
    pub prompt: Vec<bool>,
}

impl Trace {
    pub fn empty(geometry: Geometry, n_experts_known: bool) -> Self {
        Trace {
            geometry,
            n_experts_known,
            ids: Ids::new(),
            response_starts: vec![0],
            prompt: Vec::new(),
        }
    }

    pub fn n_tokens(&self) -> usize {
        self.prompt.len()
    }

    pub fn n_responses(&self) -> usize {
        self.response_starts.len() - 1
    }

    pub fn n_accesses(&self) -> usize {
        self.ids.len()
    }

    pub fn n_decode_tokens(&self) -> usize {
        self.prompt.iter().filter(|&&p| !p).count()
    }

    /// Tokens a replay sees: decode tokens, or all of them with prompt tokens included.
    pub fn n_replayed(&self, include_prompt: bool) -> usize {
        if include_prompt {
            self.n_tokens()
        } else {
            self.n_decode_tokens()
        }
    }

    /// The ids of token `t`.
    #[inline]
    pub fn token(&self, t: usize) -> &[u16] {
        let a = self.geometry.accesses_per_token();
        &self.ids[t * a..(t + 1) * a]
    }

    pub fn phase(&self, t: usize) -> Phase {
        if self.prompt[t] {
            Phase::Prompt
        } else {
            Phase::Decode
        }
    }

    /// Token range of response `r`.
    pub fn response(&self, r: usize) -> std::ops::Range<usize> {
        self.response_starts[r]..self.response_starts[r + 1]
    }

    /// (slot, expert) of a dense id.
    #[inline]
    pub fn split_id(&self, id: u16) -> (usize, u16) {
        let n = self.geometry.n_experts;
        ((id / n) as usize, id % n)
    }

    /// Largest expert number used anywhere (None for an empty trace).
    pub fn max_expert(&self) -> Option<u16> {
        let n = self.geometry.n_experts;
        self.ids.iter().map(|&id| id % n).max()
    }

    /// Append a finished response (its tokens already pushed with `push_token`).
    pub fn end_response(&mut self) {
        let n = self.n_tokens();
        if *self.response_starts.last().unwrap() != n {
            self.response_starts.push(n);
        }
    }

    /// Renumber ids for a new expert count (the text formats only know the largest
    /// expert id seen; a model preset or another file may know the real count).
    pub fn set_n_experts(&mut self, n_experts: u16) {
        let old = self.geometry.n_experts;
        if old == n_experts {
            return;
        }
        debug_assert!(self.max_expert().is_none_or(|m| m < n_experts));
        for id in self.ids.iter_mut() {
            let (slot, e) = (*id / old, *id % old);
            *id = slot * n_experts + e;
        }
        self.geometry.n_experts = n_experts;
    }

    /// Concatenate traces (responses of `b` after those of `a`). Layouts must agree; the
    /// expert count becomes the larger one (a known count wins and must cover the other).
    pub fn concat(mut a: Trace, mut b: Trace, b_name: &str) -> Result<Trace> {
        if !a.geometry.same_layout(&b.geometry) {
            return Err(Error::new(format!(
                "{b_name}: geometry {} differs from the files before it ({})",
                b.geometry.describe(),
                a.geometry.describe()
            )));
        }
        let n = merged_n_experts(&a, &b).map_err(|m| Error::new(format!("{b_name}: {m}")))?;
        a.n_experts_known |= b.n_experts_known;
        a.set_n_experts(n);
        b.set_n_experts(n);
        let base = a.n_tokens();
        a.ids.extend_from_slice(&b.ids);
        a.prompt.extend_from_slice(&b.prompt);
        a.response_starts
            .extend(b.response_starts[1..].iter().map(|s| s + base));
        Ok(a)
    }
}

fn merged_n_experts(a: &Trace, b: &Trace) -> std::result::Result<u16, String> {
    let (na, nb) = (a.geometry.n_experts, b.geometry.n_experts);
    match (a.n_experts_known, b.n_experts_known) {
        (true, true) if na != nb => Err(format!(
            "{nb} experts per layer, but the files before it have {na}"
        )),
        (true, false) if nb > na => Err(format!(
            "expert id {} is outside the {na} experts per layer of the files before it",
            nb - 1
        )),
        (false, true) if na > nb => Err(format!(
            "{nb} experts per layer, but the files before it use expert id {}",
            na - 1
        )),
        _ => Ok(na.max(nb)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(n_experts: u16) -> Geometry {
        Geometry {
            layers: vec![1, 2],
            n_experts,
            top_k: 2,
        }
    }

    #[test]
    fn restride_keeps_slot_and_expert() {
        let mut t = Trace::empty(geo(4), false);
        // token: layer1 {3,0}, layer2 {1,2}
        t.ids = vec![3, 0, 4 + 1, 4 + 2].into();
        t.prompt = vec![false];
        t.end_response();
        t.set_n_experts(64);
        assert_eq!(t.ids, vec![3, 0, 65, 66]);
        assert_eq!(t.split_id(66), (1, 2));
    }

    #[test]
    fn concat_takes_the_larger_observed_count() {
        let mut a = Trace::empty(geo(4), false);
        a.ids = vec![3, 0, 5, 6].into();
        a.prompt = vec![false];
        a.end_response();
        let mut b = Trace::empty(geo(8), false);
        b.ids = vec![7, 0, 8 + 7, 8].into();
        b.prompt = vec![true];
        b.end_response();
        let c = Trace::concat(a, b, "b").unwrap();
        assert_eq!(c.geometry.n_experts, 8);
        assert_eq!(c.ids, vec![3, 0, 9, 10, 7, 0, 15, 8]);
        assert_eq!(c.response_starts, vec![0, 1, 2]);
        assert_eq!(c.prompt, vec![false, true]);
    }

    #[test]
    fn concat_rejects_ids_beyond_a_known_count() {
        let mut a = Trace::empty(geo(4), true);
        a.end_response();
        let b = Trace::empty(geo(8), false);
        assert!(Trace::concat(a, b, "b").is_err());
    }
}
