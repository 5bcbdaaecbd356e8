//! What to replay: the accesses that reach the cache (tokens of the phase, layers not
//! in VRAM) in order, with what every engine asks of them (first uses, cold misses,
//! pinned ids, opt's next-use keys, one slot's accesses) prepared once.

use std::borrow::Cow;

use moe_spill_policies::registry::{BuildContext, PolicySpec};
use moe_spill_policies::OptFuture;

use super::Misses;
use crate::error::{Error, Result};
use crate::trace::Trace;

/// What to replay: which tokens, which layers.
#[derive(Clone, Debug)]
pub struct ReplayPlan<'t> {
    /// Accesses in replay order, `per_token` per token.
    pub stream: Cow<'t, [u16]>,
    pub per_token: usize,
    pub n_tokens: usize,
    pub top_k: usize,
    pub n_experts: usize,
    pub n_ids: usize,
    /// First slot that reaches the cache (slots before it are in VRAM).
    pub first_slot: usize,
    /// Whether runs count misses per slot (`Misses::misses_per_slot`; per-layer output).
    /// On by default; a setup that prints no per-layer numbers turns it off, which
    /// saves a table lookup per miss.
    pub per_slot: bool,
    /// Bytes of one expert, when a model is known: the `linux` policy sizes its
    /// active:inactive ratio from the cache's bytes, as the kernel does.
    pub expert_bytes: Option<u64>,
    /// Bytes of one expert of every replayed slot, when layers differ in size (a GGUF
    /// with per-layer quants): runs then also count each token's missed bytes, a miss
    /// in a slot costing that slot's bytes. None when every expert has one size.
    pub slot_bytes: Option<Vec<u64>>,
    /// Position of every id's first access (see `first_use`).
    first_use: std::sync::OnceLock<Vec<usize>>,
    /// The stream prepared for opt, built by the first opt run and shared by the others.
    opt_future: std::sync::OnceLock<std::result::Result<OptFuture, String>>,
}

impl<'t> ReplayPlan<'t> {
    pub fn new(trace: &'t Trace, include_prompt: bool, gpu_layers: usize) -> Self {
        let g = &trace.geometry;
        let k = g.top_k as usize;
        let a = g.accesses_per_token();
        let first_slot = gpu_layers.min(g.n_layers());
        let skip = first_slot * k;
        let all = include_prompt || trace.prompt.iter().all(|&p| !p);
        let stream: Cow<[u16]> = if all && skip == 0 {
            Cow::Borrowed(&trace.ids)
        } else {
            let mut v = Vec::with_capacity(trace.n_accesses());
            for t in 0..trace.n_tokens() {
                if include_prompt || !trace.prompt[t] {
                    v.extend_from_slice(&trace.token(t)[skip..]);
                }
            }
            Cow::Owned(v)
        };
        let per_token = a - skip;
        let n_tokens = trace.n_replayed(include_prompt);
        ReplayPlan {
            stream,
            per_token,
            n_tokens,
            top_k: k,
            n_experts: g.n_experts as usize,
            n_ids: g.n_ids(),
            first_slot,
            expert_bytes: None,
            slot_bytes: None,
            per_slot: true,
            first_use: std::sync::OnceLock::new(),
            opt_future: std::sync::OnceLock::new(),
        }
    }

    /// MoE layers that reach the cache.
    pub fn n_slots(&self) -> usize {
        self.per_token / self.top_k.max(1)
    }

    /// Per-id use counts of the stream (the profile pin-hot uses as an oracle).
    pub fn profile(&self) -> Vec<u64> {
        let mut c = vec![0u64; self.n_ids];
        for &id in self.stream.iter() {
            c[id as usize] += 1;
        }
        c
    }

    /// Where each id is first accessed in the stream (`usize::MAX`: never), from one
    /// pass made the first time any of the cold-miss questions below is asked. The pass
    /// stops once every id has been seen, usually early in the stream.
    fn first_use(&self) -> &[usize] {
        self.first_use.get_or_init(|| {
            let mut first = vec![usize::MAX; self.n_ids];
            let mut unseen = self.n_ids;
            for (i, &id) in self.stream.iter().enumerate() {
                let f = &mut first[id as usize];
                if *f == usize::MAX {
                    *f = i;
                    unseen -= 1;
                    if unseen == 0 {
                        break;
                    }
                }
            }
            first
        })
    }

    /// Misses no policy avoids: ids whose first access comes at or after token `warmup`.
    pub fn cold_misses(&self, warmup: usize) -> u64 {
        let cut = warmup.saturating_mul(self.per_token);
        self.first_use()
            .iter()
            .filter(|&&f| f != usize::MAX && f >= cut)
            .count() as u64
    }

    /// The ids `spec` pins in this plan (none for an undecorated policy); errors as
    /// building the policy would (no profile for pin-hot, layers out of range).
    pub fn pinned_ids(&self, spec: &PolicySpec, profile: Option<&[u64]>) -> Result<Vec<u32>> {
        let ctx = BuildContext {
            capacity: usize::MAX,
            n_ids: self.n_ids,
            n_experts: self.n_experts,
            first_slot: self.first_slot,
            future: None,
            opt_future: None,
            profile,
            expert_bytes: self.expert_bytes,
        };
        spec.pinned_ids(&ctx).map_err(|e| Error::new(e.to_string()))
    }

    /// The stream with opt's next-use keys, prepared once.
    pub fn opt_future(&self) -> Result<&OptFuture> {
        self.opt_future
            .get_or_init(|| OptFuture::new(&self.stream, self.n_ids))
            .as_ref()
            .map_err(|e| Error::new(e.clone()))
    }

    /// Distinct ids in the stream.
    pub fn distinct(&self) -> usize {
        self.cold_misses(0) as usize
    }

    /// Zero counts for a run, with bytes per token when the plan weighs slots.
    pub fn no_misses(&self) -> Misses {
        Misses {
            misses_per_token: vec![0; self.n_tokens],
            misses_per_slot: vec![0; self.n_slots()],
            bytes_per_token: self.slot_bytes.as_ref().map(|_| vec![0; self.n_tokens]),
        }
    }

    /// The counts of a cache of 0: every access misses.
    pub fn all_miss(&self, warmup: usize) -> Misses {
        let counted = self.n_tokens.saturating_sub(warmup) as u64;
        let k = self.top_k as u64;
        Misses {
            misses_per_token: vec![self.per_token as u32; self.n_tokens],
            misses_per_slot: vec![counted * k; self.n_slots()],
            bytes_per_token: self
                .slot_bytes
                .as_ref()
                .map(|w| vec![w.iter().sum::<u64>() * k; self.n_tokens]),
        }
    }

    /// The counts of a cache that never fills: one (cold) miss per distinct id.
    pub fn cold_only(&self, warmup: usize) -> Misses {
        let mut c = self.no_misses();
        for &f in self.first_use().iter().filter(|&&f| f != usize::MAX) {
            let t = f / self.per_token;
            let s = f % self.per_token / self.top_k;
            c.misses_per_token[t] += 1;
            if t >= warmup {
                c.misses_per_slot[s] += 1;
            }
            if let (Some(b), Some(w)) = (&mut c.bytes_per_token, &self.slot_bytes) {
                b[t] += w[s];
            }
        }
        c
    }

    /// The accesses of one slot (index among the replayed slots), token by token.
    pub(super) fn slot_stream(&self, s: usize) -> Vec<u16> {
        let k = self.top_k;
        self.stream
            .chunks_exact(self.per_token)
            .flat_map(|tok| &tok[s * k..(s + 1) * k])
            .copied()
            .collect()
    }
}

/// Capacities of the per-layer caches: `capacity` split over the slots, the remainder
/// to the first ones, so they add up.
pub fn per_layer_capacities(capacity: usize, n_slots: usize) -> Vec<usize> {
    if n_slots == 0 {
        return Vec::new();
    }
    let (base, extra) = (capacity / n_slots, capacity % n_slots);
    (0..n_slots).map(|s| base + (s < extra) as usize).collect()
}
