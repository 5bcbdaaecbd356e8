//! What to replay: the accesses that reach the cache (tokens of the phase, layers not
//! in VRAM) in order, cut into steps (a token, or a batch: `batch`), with what every
//! engine asks of them (first uses, cold misses, pinned ids, opt's next-use keys, one
//! slot's accesses) prepared once.

use std::borrow::Cow;
use std::ops::Range;

use moe_spill_policies::curves::StepLayout;
use moe_spill_policies::registry::{BuildContext, PolicySpec};
use moe_spill_policies::OptFuture;

use super::batch::{self, Batching, Steps};
use super::stats::{BatchStats, PhaseTotals};
use super::Misses;
use crate::error::{Error, Result};
use crate::trace::Trace;

/// What to replay: which tokens, which layers, in which steps.
#[derive(Clone, Debug)]
pub struct ReplayPlan<'t> {
    /// Accesses in replay order: `per_token` per token, or with batches, each step's
    /// unions (see `steps`).
    pub stream: Cow<'t, [u16]>,
    /// Accesses of one token: the slots that reach the cache x top-k.
    pub per_token: usize,
    /// Tokens replayed.
    pub n_tokens: usize,
    /// Steps (forward passes): `n_tokens` steps of one token each unless batched.
    pub n_steps: usize,
    pub top_k: usize,
    pub n_experts: usize,
    pub n_ids: usize,
    /// First slot that reaches the cache (slots before it are in VRAM).
    pub first_slot: usize,
    /// One past the last slot that reaches the cache (slots from it on are in VRAM:
    /// `--n-cpu-moe` keeps the first layers' experts on the CPU, the last on the GPU).
    pub end_slot: usize,
    /// Whether runs count misses per slot (`Misses::misses_per_slot`; per-layer output).
    /// On by default; a setup that prints no per-layer numbers turns it off, which
    /// saves a table lookup per miss.
    pub per_slot: bool,
    /// Bytes of one expert, when a model is known: the `linux` policy sizes its
    /// active:inactive ratio from the cache's bytes, as the kernel does.
    pub expert_bytes: Option<u64>,
    /// Bytes of one expert of every replayed slot, when layers differ in size (a GGUF
    /// with per-layer quants): runs then also count each step's missed bytes, a miss
    /// in a slot costing that slot's bytes. None when every expert has one size.
    pub slot_bytes: Option<Vec<u64>>,
    /// How tokens were grouped into steps.
    pub batching: Batching,
    /// The steps when some carry more than one token or vary in length (None: every
    /// step is one token of `per_token` accesses).
    steps: Option<Steps>,
    /// Per step, whether it is prompt processing (a prompt token or ubatch).
    step_prompt: Vec<bool>,
    /// Per step, the prompt tokens of its run before it (`Steps::offsets`).
    step_offset: Vec<u32>,
    /// Position of every id's first access (see `first_use`).
    first_use: std::sync::OnceLock<Vec<usize>>,
    /// The stream prepared for opt, built by the first opt run and shared by the others.
    opt_future: std::sync::OnceLock<std::result::Result<OptFuture, String>>,
}

/// One step of a plan: what a forward pass carries and what it asks of the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Tokens it carries (a ubatch's length, or the sequences of a decode step).
    pub tokens: u32,
    /// A prompt ubatch (or prompt token), not a decode step.
    pub prompt: bool,
    /// Accesses: the union of experts its tokens route to, summed over the slots that
    /// reach the cache.
    pub accesses: usize,
}

impl<'t> ReplayPlan<'t> {
    /// The replay token by token (`Batching::TOKEN_BY_TOKEN`), the first `gpu_layers`
    /// MoE layers in VRAM.
    pub fn new(trace: &'t Trace, include_prompt: bool, gpu_layers: usize) -> Self {
        let n = trace.geometry.n_layers();
        ReplayPlan::for_slots(trace, include_prompt, gpu_layers.min(n)..n)
    }

    /// The replay token by token of the slots in `slots` (the MoE layers whose experts
    /// reach the cache; the others are in VRAM).
    pub fn for_slots(trace: &'t Trace, include_prompt: bool, slots: Range<usize>) -> Self {
        let g = &trace.geometry;
        let k = g.top_k as usize;
        let a = g.accesses_per_token();
        let end_slot = slots.end.min(g.n_layers());
        let first_slot = slots.start.min(end_slot);
        let (from, to) = (first_slot * k, end_slot * k);
        let all = include_prompt || trace.prompt.iter().all(|&p| !p);
        let stream: Cow<[u16]> = if all && from == 0 && to == a {
            Cow::Borrowed(&trace.ids)
        } else {
            let mut v = Vec::with_capacity(trace.n_accesses());
            for t in 0..trace.n_tokens() {
                if include_prompt || !trace.prompt[t] {
                    v.extend_from_slice(&trace.token(t)[from..to]);
                }
            }
            Cow::Owned(v)
        };
        let per_token = to - from;
        let n_tokens = trace.n_replayed(include_prompt);
        let (step_prompt, step_offset) = if include_prompt {
            (trace.prompt.clone(), batch::prompt_positions(trace))
        } else {
            (vec![false; n_tokens], vec![0; n_tokens])
        };
        ReplayPlan {
            stream,
            per_token,
            n_tokens,
            n_steps: n_tokens,
            top_k: k,
            n_experts: g.n_experts as usize,
            n_ids: g.n_ids(),
            first_slot,
            end_slot,
            expert_bytes: None,
            slot_bytes: None,
            per_slot: true,
            batching: Batching::TOKEN_BY_TOKEN,
            steps: None,
            step_prompt,
            step_offset,
            first_use: std::sync::OnceLock::new(),
            opt_future: std::sync::OnceLock::new(),
        }
    }

    /// The replay in the steps of `batching` (docs/batches.md): the plan of `new` when
    /// every step is one token anyway.
    pub fn batched(
        trace: &'t Trace,
        include_prompt: bool,
        gpu_layers: usize,
        batching: Batching,
    ) -> Self {
        let n = trace.geometry.n_layers();
        ReplayPlan::batched_slots(trace, include_prompt, gpu_layers.min(n)..n, batching)
    }

    /// `batched` for the slots in `slots`.
    pub fn batched_slots(
        trace: &'t Trace,
        include_prompt: bool,
        slots: Range<usize>,
        batching: Batching,
    ) -> Self {
        let mut plan = ReplayPlan::for_slots(trace, include_prompt, slots);
        plan.batching = batching;
        if !batching.is_token_by_token(trace, include_prompt) {
            plan.use_steps(trace, include_prompt, batching);
        }
        plan
    }

    /// Replace the stream with the batched one of `batching` (also when it is token by
    /// token: the tests compare the two).
    pub(super) fn use_steps(&mut self, trace: &Trace, include_prompt: bool, batching: Batching) {
        let slots = self.first_slot..self.end_slot;
        let (stream, steps) = batch::build_slots(trace, include_prompt, slots, batching);
        self.stream = Cow::Owned(stream);
        self.n_steps = steps.len();
        // A prompt cut replays fewer tokens than the trace has.
        self.n_tokens = steps.tokens.iter().map(|&n| n as usize).sum();
        self.step_prompt = steps.prompt.clone();
        self.step_offset = steps.offsets.clone();
        self.steps = Some(steps);
        self.batching = batching;
        self.first_use = std::sync::OnceLock::new();
        self.opt_future = std::sync::OnceLock::new();
    }

    /// Whether steps carry several tokens or vary in length (the engines then take the
    /// steps' boundaries instead of a fixed stride).
    pub fn is_batched(&self) -> bool {
        self.steps.is_some()
    }

    /// How the stream is cut into steps and slots, for the one-pass curves.
    pub fn layout(&self) -> StepLayout<'_> {
        match &self.steps {
            None => StepLayout::Uniform {
                per_step: self.per_token,
                k: self.top_k,
            },
            Some(s) => StepLayout::Ragged {
                n_slots: self.n_slots(),
                lens: &s.slot_lens,
            },
        }
    }

    /// Stream positions of step `i`.
    pub fn step_range(&self, i: usize) -> Range<usize> {
        match &self.steps {
            None => i * self.per_token..(i + 1) * self.per_token,
            Some(s) => s.starts[i]..s.starts[i + 1],
        }
    }

    /// Step `i`: its tokens, phase and accesses.
    pub fn step(&self, i: usize) -> Step {
        Step {
            tokens: self.steps.as_ref().map_or(1, |s| s.tokens[i]),
            prompt: self.step_prompt[i],
            accesses: self.step_range(i).len(),
        }
    }

    /// The prompt tokens of step `i`'s run before it (0 for decode steps).
    pub fn step_offset(&self, i: usize) -> u32 {
        self.step_offset[i]
    }

    /// Accesses of replayed slot `s` in step `i` (that slot's union of experts).
    pub fn step_slot_accesses(&self, i: usize, s: usize) -> usize {
        match &self.steps {
            None => self.top_k,
            Some(st) => st.slot_lens[i * self.n_slots() + s] as usize,
        }
    }

    /// The first step counted in statistics when the first `warmup` tokens are left
    /// out: the first step that starts at or after token `warmup` (the replay's tokens
    /// numbered in step order), or `n_steps` if none does.
    pub fn first_counted_step(&self, warmup: usize) -> usize {
        match &self.steps {
            None => warmup.min(self.n_steps),
            Some(s) => {
                let mut start = 0usize;
                for (i, &n) in s.tokens.iter().enumerate() {
                    if start >= warmup {
                        return i;
                    }
                    start += n as usize;
                }
                self.n_steps
            }
        }
    }

    /// Prompt and decode totals of a run over the steps counted from `warmup` tokens
    /// on (see `first_counted_step`).
    pub fn batch_stats(&self, counts: &Misses, warmup: usize) -> BatchStats {
        let mut out = BatchStats::default();
        for i in self.first_counted_step(warmup)..self.n_steps {
            let st = self.step(i);
            let phase: &mut PhaseTotals = if st.prompt {
                &mut out.prompt
            } else {
                &mut out.decode
            };
            phase.steps += 1;
            phase.tokens += st.tokens as u64;
            phase.accesses += st.accesses as u64;
            phase.misses += counts.misses_per_step[i] as u64;
            if let Some(b) = &counts.bytes_per_step {
                *phase.bytes.get_or_insert(0) += b[i];
            }
        }
        if counts.bytes_per_step.is_some() {
            out.prompt.bytes.get_or_insert(0);
            out.decode.bytes.get_or_insert(0);
        }
        out
    }

    /// Per-token misses of the counted steps: a step's misses spread over its tokens as
    /// evenly as whole numbers allow (the first tokens take one more), so they add up
    /// to the step's; token by token, the steps' own counts.
    pub fn misses_per_token<'c>(&self, counts: &'c Misses, warmup: usize) -> Cow<'c, [u32]> {
        let from = self.first_counted_step(warmup);
        let Some(s) = &self.steps else {
            return Cow::Borrowed(&counts.misses_per_step[from..]);
        };
        let mut out = Vec::with_capacity(self.n_tokens);
        for i in from..self.n_steps {
            let (m, n) = (counts.misses_per_step[i], s.tokens[i].max(1));
            let (q, r) = (m / n, m % n);
            out.extend((0..n).map(|j| q + (j < r) as u32));
        }
        Cow::Owned(out)
    }

    /// Per-token missed bytes of the counted steps, when the run counted them: a step's
    /// bytes spread over its tokens as `misses_per_token` spreads its misses (evenly as
    /// whole numbers allow, the first tokens taking one more), so they add up to the
    /// step's; token by token, the steps' own bytes.
    pub fn bytes_per_token<'c>(&self, counts: &'c Misses, warmup: usize) -> Option<Cow<'c, [u64]>> {
        let bytes = counts.bytes_per_step.as_ref()?;
        let from = self.first_counted_step(warmup);
        let Some(s) = &self.steps else {
            return Some(Cow::Borrowed(&bytes[from..]));
        };
        let mut out = Vec::with_capacity(self.n_tokens);
        for (&b, &n) in bytes.iter().zip(&s.tokens).skip(from) {
            let n = n.max(1) as u64;
            let (q, r) = (b / n, b % n);
            out.extend((0..n).map(|j| q + (j < r) as u64));
        }
        Some(Cow::Owned(out))
    }

    /// The step holding stream position `pos`.
    fn step_of(&self, pos: usize) -> usize {
        match &self.steps {
            None => pos / self.per_token,
            Some(s) => s.starts.partition_point(|&x| x <= pos) - 1,
        }
    }

    /// The replayed slot of an id.
    #[inline]
    pub fn slot_of_id(&self, id: u16) -> usize {
        id as usize / self.n_experts - self.first_slot
    }

    /// MoE layers that reach the cache.
    pub fn n_slots(&self) -> usize {
        self.end_slot - self.first_slot
    }

    /// MoE layers whose experts are in VRAM (before `first_slot` and from `end_slot` on).
    pub fn gpu_slots(&self) -> usize {
        self.n_ids / self.n_experts.max(1) - self.n_slots()
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

    /// Misses no policy avoids: ids whose first access comes in a counted step (from
    /// `warmup` tokens on).
    pub fn cold_misses(&self, warmup: usize) -> u64 {
        let from = self.first_counted_step(warmup);
        let cut = if from == self.n_steps {
            usize::MAX
        } else {
            self.step_range(from).start
        };
        self.first_use()
            .iter()
            .filter(|&&f| f != usize::MAX && f >= cut)
            .count() as u64
    }

    /// The ids `spec` pins in this plan (none for an undecorated policy); errors as
    /// building the policy would (no profile for pin-hot, layers out of range).
    pub fn pinned_ids(&self, spec: &PolicySpec, profile: Option<&[u64]>) -> Result<Vec<u32>> {
        if let PolicySpec::Pinned { layers, .. } = *spec {
            // The policy crate knows the first replayed slot, not the last.
            if layers > self.n_slots() {
                return Err(Error::new(format!(
                    "policy {spec}: cannot pin {layers} layers: {} MoE layers reach the cache",
                    self.n_slots()
                )));
            }
        }
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

    /// Zero counts for a run, with bytes per step when the plan weighs slots.
    pub fn no_misses(&self) -> Misses {
        Misses {
            misses_per_step: vec![0; self.n_steps],
            misses_per_slot: vec![0; self.n_slots()],
            bytes_per_step: self.slot_bytes.as_ref().map(|_| vec![0; self.n_steps]),
        }
    }

    /// The counts of a cache of 0: every access misses.
    pub fn all_miss(&self, warmup: usize) -> Misses {
        let from = self.first_counted_step(warmup);
        let k = self.top_k as u64;
        let Some(s) = &self.steps else {
            let counted = (self.n_tokens - from) as u64;
            return Misses {
                misses_per_step: vec![self.per_token as u32; self.n_tokens],
                misses_per_slot: vec![counted * k; self.n_slots()],
                bytes_per_step: self
                    .slot_bytes
                    .as_ref()
                    .map(|w| vec![w.iter().sum::<u64>() * k; self.n_tokens]),
            };
        };
        let n_slots = self.n_slots();
        let mut misses_per_slot = vec![0u64; n_slots];
        for lens in s.slot_lens.chunks_exact(n_slots.max(1)).skip(from) {
            for (m, &l) in misses_per_slot.iter_mut().zip(lens) {
                *m += l as u64;
            }
        }
        let bytes_per_step = self.slot_bytes.as_ref().map(|w| {
            s.slot_lens
                .chunks_exact(n_slots.max(1))
                .map(|lens| lens.iter().zip(w).map(|(&l, &b)| l as u64 * b).sum())
                .collect()
        });
        Misses {
            misses_per_step: (0..self.n_steps)
                .map(|i| self.step_range(i).len() as u32)
                .collect(),
            misses_per_slot,
            bytes_per_step,
        }
    }

    /// The counts of a cache that never fills: one (cold) miss per distinct id.
    pub fn cold_only(&self, warmup: usize) -> Misses {
        let from = self.first_counted_step(warmup);
        let mut c = self.no_misses();
        for (id, &f) in self.first_use().iter().enumerate() {
            if f == usize::MAX {
                continue;
            }
            let t = self.step_of(f);
            let s = self.slot_of_id(id as u16);
            c.misses_per_step[t] += 1;
            if t >= from {
                c.misses_per_slot[s] += 1;
            }
            if let (Some(b), Some(w)) = (&mut c.bytes_per_step, &self.slot_bytes) {
                b[t] += w[s];
            }
        }
        c
    }

    /// The accesses of one slot (index among the replayed slots), step by step, and
    /// with batches, that slot's accesses in every step.
    pub(super) fn slot_stream(&self, s: usize) -> (Vec<u16>, Option<Vec<u16>>) {
        let k = self.top_k;
        let Some(st) = &self.steps else {
            let sub = self
                .stream
                .chunks_exact(self.per_token)
                .flat_map(|tok| &tok[s * k..(s + 1) * k])
                .copied()
                .collect();
            return (sub, None);
        };
        let n_slots = self.n_slots();
        let mut sub = Vec::new();
        let mut lens = Vec::with_capacity(self.n_steps);
        for i in 0..self.n_steps {
            let row = &st.slot_lens[i * n_slots..(i + 1) * n_slots];
            let at = st.starts[i] + row[..s].iter().map(|&l| l as usize).sum::<usize>();
            sub.extend_from_slice(&self.stream[at..at + row[s] as usize]);
            lens.push(row[s]);
        }
        (sub, Some(lens))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Geometry, Trace};

    /// Which layers the cache sees, by hand: 3 MoE layers (blocks 1, 2, 3) of 4 experts,
    /// top-1, two tokens routing to experts (0, 1, 2) and (3, 3, 3): ids are
    /// `slot * 4 + expert`.
    #[test]
    fn a_slot_range_replays_only_its_layers() {
        let g = Geometry {
            layers: vec![1, 2, 3],
            n_experts: 4,
            top_k: 1,
        };
        let mut t = Trace::empty(g, true);
        t.ids = vec![0, 5, 10, 3, 7, 11].into();
        t.prompt = vec![false, false];
        t.response_starts = vec![0];
        // Default placement with one layer in VRAM: layers 2 and 3 reach the cache.
        let p = ReplayPlan::new(&t, false, 1);
        assert_eq!(
            (&p.stream[..], p.n_slots(), p.gpu_slots()),
            (&[5, 10, 7, 11][..], 2, 1)
        );
        // --n-cpu-moe 2: block 1 on the CPU, blocks 2 and 3 in VRAM.
        let p = ReplayPlan::for_slots(&t, false, 0..1);
        assert_eq!(
            (&p.stream[..], p.per_token, p.gpu_slots()),
            (&[0, 3][..], 1, 2)
        );
        assert_eq!(p.slot_of_id(3), 0);
        let b = ReplayPlan::batched_slots(
            &t,
            false,
            0..2,
            Batching {
                ubatch: 512,
                parallel: 1,
                prompt_cut: None,
            },
        );
        assert_eq!(&b.stream[..], &[0, 5, 3, 7]);
        let pin = PolicySpec::parse("pinned:2").unwrap();
        assert_eq!(
            b.pinned_ids(&pin, None).unwrap(),
            (0..8).collect::<Vec<u32>>()
        );
        let pin3 = PolicySpec::parse("pinned:3").unwrap();
        assert!(b.pinned_ids(&pin3, None).is_err());
    }
}
