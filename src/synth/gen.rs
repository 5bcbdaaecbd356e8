//! The generative routing model and the generator.
//!
//! For every MoE layer `l` an expert has a fixed popularity `pi_l(e)`: a power law
//! `(rank + 1)^-skew_l` over a random (seeded) ranking of the layer's experts. Every
//! response draws a topic affinity per expert, `exp(affinity * z)` with `z ~ N(0, 1)`,
//! and the router weight is `pi_l(e) * exp(affinity * z)`. The affinities drift: every
//! token, `drift * n_experts` experts of each layer draw a fresh `z`. A token picks its
//! top-k distinct experts of a layer one after another: with probability `recall` it
//! re-uses an expert that a recent token of the same response used in that layer (lag
//! geometric with mean `recall_lag`), otherwise it samples the router weights; a repeat
//! is drawn again (which is sampling without replacement).

use super::normal::normal_quantile;
use super::rng::Rng;
use super::sampler::State;
#[cfg(target_arch = "x86_64")]
use super::simd::Picked;
use super::work::{self, Ids, Unit};
use crate::trace::{Geometry, Trace};

/// The generator's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Power-law exponent of the expert popularity, per MoE layer.
    pub skew: Vec<f64>,
    /// Log-normal sigma of the per-response topic affinity.
    pub affinity: f64,
    /// Fraction of each layer's experts outside the response's topic (weight ~0).
    pub dead: f64,
    /// Fraction of a layer's affinities redrawn per token.
    pub drift: f64,
    /// Probability that a pick re-uses an expert of a recent token.
    pub recall: f64,
    /// The recalled token lies d tokens back with probability proportional to
    /// d^-recall_decay (d = 1..512).
    pub recall_decay: f64,
    /// Leading tokens of every response that route the same in every response (the BOS
    /// token and chat template of real recordings).
    pub opening: usize,
}

impl Params {
    /// Skew growing linearly with depth from `first` (first MoE layer) to `last`.
    pub fn depth_skew(n_layers: usize, first: f64, last: f64) -> Vec<f64> {
        (0..n_layers)
            .map(|i| {
                let f = if n_layers > 1 {
                    i as f64 / (n_layers - 1) as f64
                } else {
                    0.0
                };
                first + (last - first) * f
            })
            .collect()
    }
}

/// Tokens of every response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    /// (prompt tokens, decode tokens) of every response, prompt tokens first.
    pub responses: Vec<(usize, usize)>,
}

impl Shape {
    pub fn uniform(responses: usize, decode: usize, prompt: usize) -> Shape {
        Shape {
            responses: vec![(prompt, decode); responses],
        }
    }
    pub fn n_tokens(&self) -> usize {
        self.responses.iter().map(|(p, d)| p + d).sum()
    }
}

const STREAM_POPULARITY: u64 = 1;
/// Relative weight of an expert outside the topic: practically never picked, but never 0
/// (a layer always has top-k experts to pick).
const DEAD_WEIGHT: f32 = 1e-6;

const STREAM_OPENING: u64 = 2;
const STREAM_RESPONSE: u64 = 1 << 32;

/// The routing of the opening tokens shared by every response: the popularity sampled
/// without replacement, one token after another.
fn opening_tokens(g: &Geometry, pi: &[f64], n: usize, seed: u64) -> Vec<u16> {
    let (ne, k) = (g.n_experts as usize, g.top_k as usize);
    let mut rng = Rng::new(seed, STREAM_OPENING);
    let mut out = Vec::with_capacity(n * g.accesses_per_token());
    let mut w = vec![0.0; ne];
    for _ in 0..n {
        for slot in 0..g.n_layers() {
            w.copy_from_slice(&pi[slot * ne..(slot + 1) * ne]);
            for _ in 0..k {
                let total: f64 = w.iter().sum();
                let mut u = rng.unit() * total;
                let mut e = 0;
                while e + 1 < ne && (u >= w[e] || w[e] == 0.0) {
                    u -= w[e];
                    e += 1;
                }
                if w[e] == 0.0 {
                    e = w.iter().position(|&x| x > 0.0).unwrap();
                }
                w[e] = 0.0;
                out.push((slot * ne + e) as u16);
            }
        }
    }
    out
}

/// Per-layer popularity `pi_l(e)`, normalised to sum 1 per layer (index = dense id).
pub fn popularity(g: &Geometry, skew: &[f64], seed: u64) -> Vec<f64> {
    let n = g.n_experts as usize;
    let mut rng = Rng::new(seed, STREAM_POPULARITY);
    let mut pi = vec![0.0; g.n_ids()];
    let mut perm: Vec<usize> = (0..n).collect();
    for (slot, &a) in skew.iter().enumerate() {
        for i in (1..n).rev() {
            perm.swap(i, rng.below(i + 1));
        }
        let layer = &mut pi[slot * n..(slot + 1) * n];
        for (rank, &e) in perm.iter().enumerate() {
            layer[e] = ((rank + 1) as f64).powf(-a);
        }
        let s: f64 = layer.iter().sum();
        layer.iter_mut().for_each(|w| *w /= s);
    }
    pi
}

const LAG_TABLE: usize = 4096;
const MAX_LAG: usize = 512;

const AFFINITY_TABLE: usize = 4096;

/// exp(sigma * z) at the 4096 quantiles (i + 1/2) / 4096 of the standard normal: a
/// log-normal draw is one lookup (12 random bits).
fn affinity_table(sigma: f64) -> Vec<f32> {
    (0..AFFINITY_TABLE)
        .map(|i| (sigma * normal_quantile((i as f64 + 0.5) / AFFINITY_TABLE as f64)).exp() as f32)
        .collect()
}

/// Quantised inverse CDF of the recall lag: P(d) proportional to d^-decay, d in 1..=MAX_LAG.
fn lag_table(decay: f64) -> Vec<u16> {
    let w: Vec<f64> = (1..=MAX_LAG).map(|d| (d as f64).powf(-decay)).collect();
    let total: f64 = w.iter().sum();
    let mut out = Vec::with_capacity(LAG_TABLE);
    let mut cum = 0.0;
    let mut d = 0;
    for i in 0..LAG_TABLE {
        let u = (i as f64 + 0.5) / LAG_TABLE as f64 * total;
        while d < MAX_LAG - 1 && cum + w[d] < u {
            cum += w[d];
            d += 1;
        }
        out.push(d as u16 + 1);
    }
    out
}

/// Generate a trace. Deterministic for (`g`, `p`, `shape`, `seed`), whatever the number
/// of threads: every response and layer has its own random stream.
pub fn generate(g: &Geometry, p: &Params, shape: &Shape, seed: u64) -> Trace {
    assert_eq!(p.skew.len(), g.n_layers(), "one skew per layer");
    assert!(
        g.top_k >= 1 && g.top_k <= g.n_experts,
        "1 <= top_k <= n_experts"
    );
    let a = g.accesses_per_token();
    let n_tokens = shape.n_tokens();
    let mut trace = Trace::empty(g.clone(), true);
    trace.ids = moe_spill_huge::zeroed_vec(n_tokens * a).into();
    trace.prompt = Vec::with_capacity(n_tokens);
    for &(pr, d) in &shape.responses {
        trace.prompt.extend(std::iter::repeat_n(true, pr));
        trace.prompt.extend(std::iter::repeat_n(false, d));
        trace.end_response();
    }
    let pi = popularity(g, &p.skew, seed);
    let opening = opening_tokens(g, &pi, p.opening, seed);
    let lags = lag_table(p.recall_decay);
    let table = affinity_table(p.affinity);
    let pi32: Vec<f32> = pi.iter().map(|&x| x as f32).collect();
    let threads = work::threads(n_tokens * a);
    let n_layers = g.n_layers();
    // The shared opening tokens, copied whole into every response.
    let shared = opening.len() / a;
    let mut offset = 0;
    for &(pr, d) in &shape.responses {
        let n = shared.min(pr + d) * a;
        trace.ids[offset..offset + n].copy_from_slice(&opening[..n]);
        offset += (pr + d) * a;
    }
    let units = work::units(shape, a, n_layers, shared, threads);
    let ids = Ids(trace.ids.as_mut_ptr(), trace.ids.len());
    work::run(
        threads,
        &units,
        || (0..n_layers).map(|_| State::new(g)).collect::<Vec<State>>(),
        // SAFETY: `trace.ids` outlives the threads and is not otherwise touched until
        // they end; units are disjoint (response, layer) cells.
        |u, states| unsafe { unit(g, p, &pi32, &lags, &table, seed, u, ids, states) },
    );
    trace
}

/// Tokens generated per layer in turn: the block of the trace stays in cache while
/// every layer's state is visited once per block.
const BLOCK_TOKENS: usize = 128;

/// What the layers of a response share.
struct Draws<'a> {
    n: usize,
    k: usize,
    /// Accesses per token.
    a: usize,
    /// The recall lag table (`lag_table`).
    lags: &'a [u16; LAG_TABLE],
    /// The affinity quantiles (`affinity_table`).
    table: &'a [f32; AFFINITY_TABLE],
    /// 32-bit thresholds: below `dead_below` an affinity draw is outside the topic.
    dead_below: u64,
    /// 16-bit threshold: below it a pick is a recall.
    recall_below: u64,
    /// Drift redraws per token.
    per_token: f64,
}

impl Draws<'_> {
    /// A topic affinity for 64 random bits.
    #[inline(always)]
    fn affinity(&self, x: u64) -> f32 {
        // A select on the bits, not a branch: the draw is unpredictable.
        let live = self.table[(x >> 52) as usize];
        std::hint::select_unpredictable((x & 0xFFFF_FFFF) < self.dead_below, DEAD_WEIGHT, live)
    }
}

/// Generate a unit: its layers of its response, token-major in the response's part of
/// `ids`. Each layer has its own random stream, so the unit is made in blocks of tokens,
/// layer after layer inside a block (the block of the trace stays in cache).
///
/// # Safety
/// `ids` is the trace's buffer, `u` inside it, and no other thread uses `u`'s cells.
#[allow(clippy::too_many_arguments)]
unsafe fn unit(
    g: &Geometry,
    p: &Params,
    pi: &[f32],
    lags: &[u16],
    table: &[f32],
    seed: u64,
    u: &Unit,
    ids: Ids,
    states: &mut [State],
) {
    let n = g.n_experts as usize;
    let k = g.top_k as usize;
    let a = g.accesses_per_token();
    assert!(u.offset + u.n_tok * a <= ids.1 && u.layers.end <= g.n_layers());
    // SAFETY: inside the buffer (asserted).
    let resp = Ids(unsafe { ids.0.add(u.offset) }, u.n_tok * a);
    let dr = Draws {
        n,
        k,
        a,
        lags: lags.try_into().expect("LAG_TABLE lags"),
        table: table.try_into().expect("AFFINITY_TABLE quantiles"),
        dead_below: (p.dead.clamp(0.0, 1.0) * 4294967296.0) as u64,
        recall_below: (p.recall.clamp(0.0, 1.0) * 65536.0) as u64,
        per_token: p.drift * n as f64,
    };
    let states = &mut states[u.layers.clone()];
    for (slot, st) in u.layers.clone().zip(states.iter_mut()) {
        st.rng = Rng::new(seed, STREAM_RESPONSE + ((u.r as u64) << 16) + slot as u64);
        st.acc = 0.0;
        let pi = &pi[slot * n..(slot + 1) * n];
        for (w, &x) in st.w.iter_mut().zip(pi) {
            *w = x * dr.affinity(st.rng.next_u64());
        }
        st.rebuild();
    }
    let run = layer_fn(states[0].b, states[0].nb, k);
    let mut start = u.shared;
    while start < u.n_tok {
        let end = (start + BLOCK_TOKENS).min(u.n_tok);
        for (slot, st) in u.layers.clone().zip(states.iter_mut()) {
            // SAFETY: the cells of layer `slot` of this response are this unit's.
            unsafe {
                run(
                    st,
                    &dr,
                    &pi[slot * n..(slot + 1) * n],
                    slot,
                    resp,
                    start,
                    end,
                )
            };
        }
        start = end;
    }
}

type LayerFn = unsafe fn(&mut State, &Draws, &[f32], usize, Ids, usize, usize);

/// `layer_tokens` compiled for the block size `b`, the number of blocks `nb` and top-k
/// `k`: the presets' sizes unrolled, any other through the general version.
fn layer_fn(b: usize, nb: usize, k: usize) -> LayerFn {
    macro_rules! pick {
        ($($b:literal x $nb:literal),*) => {
            match (b, nb, cfg!(target_arch = "x86_64") && k <= 8) {
                $(($b, $nb, true) => layer_tokens::<true, $b, $nb>,)*
                (32, 16, false) => layer_tokens::<false, 32, 16>,
                (_, _, true) => layer_tokens::<true, 0, 0>,
                (_, _, false) => layer_tokens::<false, 0, 0>,
            }
        };
    }
    pick!(4 x 2, 4 x 4, 8 x 4, 8 x 8, 16 x 8, 16 x 10, 16 x 16, 32 x 12, 32 x 16)
}

/// Tokens `start..end` of MoE layer `slot` of a response (`ids`: its tokens): per
/// token the drift, then the top-k picks, each a recall or a weighted sample, a repeat
/// drawn again. `NARROW`: k <= 8, repeats checked in one SSE register; `B`, `NB`: see
/// `State::sample`.
///
/// # Safety
/// `ids` is valid, and no other thread uses the cells of layer `slot`.
#[inline(never)]
unsafe fn layer_tokens<const NARROW: bool, const B: usize, const NB: usize>(
    st: &mut State,
    dr: &Draws,
    pi: &[f32],
    slot: usize,
    ids: Ids,
    start: usize,
    end: usize,
) {
    let (n, k, a) = (dr.n, dr.k, dr.a);
    assert!(B == 0 || (st.b == B && st.nb == NB && st.inner.len() == NB * B));
    assert!(NB == 0 || st.outer.len() == 1 + NB.next_multiple_of(4));
    assert!(end * a <= ids.1 && slot * k + k <= a && k <= a);
    let p = ids.0;
    let base = (slot * n) as u16;
    let mut rng = st.rng.clone();
    for t in start..end {
        st.acc += dr.per_token;
        let m = st.acc as usize;
        st.acc -= m as f64;
        if m > 0 {
            // The sums are a function of the weights. With the block size known, the
            // touched block and all block totals are recomputed whole (fixed-length
            // unrolled loops, no mispredictions); otherwise from the change on.
            let mut first = usize::MAX;
            for _ in 0..m {
                let e = rng.below(n);
                st.w[e] = pi[e] * dr.affinity(rng.next_u64());
                if B > 0 {
                    st.block_from::<B>(e & !(B - 1));
                } else {
                    st.block_from::<B>(e);
                }
                first = first.min(e);
            }
            if B > 0 {
                st.totals::<B, NB>();
            } else {
                st.totals_from::<B>(first / st.bsize::<B>());
            }
        }
        // The token's picks go to ids[pos..pos + k]; a recall reads an earlier token's.
        let pos = t * a + slot * k;
        #[cfg(target_arch = "x86_64")]
        let mut picked = Picked::new();
        let scale = st.scale();
        let idle_back = if t > 0 { a } else { 0 };
        let mut j = 0;
        let mut rejects = 0;
        while j < k {
            // One draw per pick: bits 48.. decide recall, 36..48 the lag, 0..32 the
            // recalled pick or the sampled expert.
            let x = rng.next_u64();
            let lag = dr.lags[((x >> 36) & 0xFFF) as usize] as usize;
            let recall = ((x >> 48) < dr.recall_below) & (lag <= t);
            let i = (((x & 0xFFFF_FFFF) * k as u64) >> 32) as usize;
            // Both candidates, then a select: no unpredictable branch. Without a recall
            // the read is of the token before (recently written, so cached), or of
            // ids[pos] for the first token.
            let back = std::hint::select_unpredictable(recall, lag * a - i, idle_back);
            debug_assert!(back <= pos);
            // SAFETY: pos - back is ids[pos - a] (t > 0), ids[pos] (t = 0) or, for a
            // recall (lag <= t, i < k <= a), pick i of token t - lag in this layer; and
            // pos + j < pos + k <= end * a <= ids.len() (asserted above).
            let recalled = unsafe { *p.add(pos - back) }.wrapping_sub(base);
            let sampled = st.sample::<B, NB>(x as u32, scale) as u16;
            let e = std::hint::select_unpredictable(recall, recalled, sampled);
            // SAFETY (the picks so far, and pick j): as above.
            let earlier = || unsafe { std::slice::from_raw_parts(p.add(pos), j) };
            #[cfg(target_arch = "x86_64")]
            let dup = if NARROW {
                picked.check_and_put(e, j)
            } else {
                earlier().contains(&(base + e))
            };
            #[cfg(not(target_arch = "x86_64"))]
            let dup = earlier().contains(&(base + e));
            unsafe { *p.add(pos + j) = base + e };
            j += !dup as usize;
            rejects += dup as usize;
            if rejects > 32 {
                // SAFETY: the token's cells of this layer, not otherwise referenced.
                let out = unsafe { std::slice::from_raw_parts_mut(p.add(pos), k) };
                exact_rest(st, base, out, j, &mut rng);
                break;
            }
        }
    }
    st.rng = rng;
}

/// Sample the rest of a layer's picks without replacement from the router weights
/// exactly (zero the chosen, sample, restore): for very concentrated weights, where
/// drawing again on a repeat would take long. Rare, so the sums are rebuilt exactly.
fn exact_rest(st: &mut State, base: u16, out: &mut [u16], j: usize, rng: &mut Rng) {
    let mut saved = std::mem::take(&mut st.saved);
    saved.clear();
    for &e in &out[..j] {
        let e = (e - base) as usize;
        saved.push((e, st.w[e]));
        st.w[e] = 0.0;
    }
    for jj in j..out.len() {
        st.rebuild();
        let scale = st.scale();
        let mut e = st.sample::<0, 0>(rng.next_u64() as u32, scale);
        // Only the clamp at the very end of the range can land on a zeroed expert.
        while out[..jj].contains(&(base + e as u16)) {
            e = st.sample::<0, 0>(rng.next_u64() as u32, scale);
        }
        out[jj] = base + e as u16;
        saved.push((e, st.w[e]));
        st.w[e] = 0.0;
    }
    for &(e, v) in &saved {
        st.w[e] = v;
    }
    st.rebuild();
    st.saved = saved;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(layers: usize, n: u16, k: u16) -> Geometry {
        Geometry {
            layers: (1..=layers as u16).collect(),
            n_experts: n,
            top_k: k,
        }
    }

    fn params(layers: usize) -> Params {
        Params {
            skew: Params::depth_skew(layers, 0.2, 0.8),
            affinity: 0.7,
            dead: 0.3,
            drift: 0.01,
            recall: 0.25,
            recall_decay: 1.75,
            opening: 0,
        }
    }

    fn check_geometry(t: &Trace) {
        let g = &t.geometry;
        let (n, k) = (g.n_experts as usize, g.top_k as usize);
        assert_eq!(t.ids.len(), t.n_tokens() * g.accesses_per_token());
        for tok in t.ids.chunks_exact(g.accesses_per_token()) {
            for (slot, layer) in tok.chunks_exact(k).enumerate() {
                for (i, &id) in layer.iter().enumerate() {
                    assert_eq!(id as usize / n, slot, "id {id} outside slot {slot}");
                    assert!(!layer[..i].contains(&id), "repeated expert in {layer:?}");
                }
            }
        }
    }

    #[test]
    fn lag_table_is_a_power_law() {
        let t = lag_table(2.0);
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(t[0], 1);
        // P(d = 1) = 1 / sum d^-2 over 1..=512, about 0.61.
        let ones = t.iter().filter(|&&d| d == 1).count() as f64 / t.len() as f64;
        assert!((ones - 0.609).abs() < 0.01, "{ones}");
        assert!(*t.last().unwrap() as usize <= MAX_LAG);
    }

    #[test]
    fn popularity_grows_more_skewed_with_depth() {
        let g = geo(4, 32, 4);
        let pi = popularity(&g, &Params::depth_skew(4, 0.0, 1.5), 3);
        let top = |s: usize| pi[s * 32..(s + 1) * 32].iter().cloned().fold(0.0, f64::max);
        assert!((top(0) - 1.0 / 32.0).abs() < 1e-12, "first layer uniform");
        assert!(top(1) < top(2) && top(2) < top(3));
        for s in 0..4 {
            let sum: f64 = pi[s * 32..(s + 1) * 32].iter().sum();
            assert!((sum - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn every_token_has_top_k_distinct_experts_in_range() {
        for (n, k) in [
            (8u16, 2u16),
            (8, 8),
            (64, 6),
            (160, 8),
            (384, 8),
            (512, 10),
            (16, 1),
        ] {
            let g = geo(3, n, k);
            let mut p = params(3);
            p.opening = 2;
            p.dead = 0.9; // fewer live experts than top-k in the small layers
            let t = generate(&g, &p, &Shape::uniform(3, 40, 5), 11);
            check_geometry(&t);
            assert_eq!(t.n_responses(), 3);
            assert_eq!(t.n_tokens(), 135);
        }
    }

    #[test]
    fn prompt_tokens_are_tagged_and_openings_shared() {
        let g = geo(2, 16, 2);
        let mut p = params(2);
        p.opening = 3;
        let t = generate(&g, &p, &Shape::uniform(4, 10, 5), 1);
        for r in 0..4 {
            let rg = t.response(r);
            assert_eq!(rg.len(), 15);
            assert!(rg.clone().take(5).all(|i| t.prompt[i]));
            assert!(rg.clone().skip(5).all(|i| !t.prompt[i]));
            for i in 0..3 {
                assert_eq!(t.token(rg.start + i), t.token(i), "opening token {i}");
            }
        }
        assert_ne!(t.token(3), t.token(t.response(1).start + 3));
    }

    #[test]
    fn deterministic_and_independent_of_threads_and_other_responses() {
        // Large enough to be generated on several threads where there are cores.
        let g = geo(20, 128, 8);
        let p = params(20);
        let shape = Shape::uniform(6, 1200, 0);
        let a = generate(&g, &p, &shape, 42);
        assert!(a.n_accesses() >= 1 << 20);
        assert_eq!(a, generate(&g, &p, &shape, 42));
        assert_ne!(a.ids, generate(&g, &p, &shape, 43).ids);
        // A response is the same whatever else is generated with it.
        let one = generate(&g, &p, &Shape::uniform(1, 1200, 0), 42);
        assert_eq!(one.ids[..], a.ids[..one.ids.len()]);
        check_geometry(&a);
    }

    /// The generator's output is pinned: FNV-1a of the ids of small traces over every
    /// code path (the presets' block sizes, the general one, k > 8, fewer live experts
    /// than k), as the generator made them before it was optimised for speed. A faster
    /// generator must give the same traces (the seed of a trace must keep its meaning).
    #[test]
    fn output_is_pinned() {
        let cases: [(usize, u16, u16, f64, f64, u64); 18] = [
            (5, 40, 6, 0.3, 0.01, 0xd0b280f2c93ce2dc),
            (4, 100, 8, 0.2, 0.02, 0x043fbfc7f2a2645f),
            (3, 1000, 8, 0.3, 0.005, 0x34c65a784c497a86),
            (3, 1000, 12, 0.1, 0.005, 0x75a613835cf03379),
            (4, 3, 2, 0.0, 0.1, 0x62fc56e84b49badf),
            (4, 2, 2, 0.0, 0.1, 0x96eb0ada94c2a745),
            (6, 20, 9, 0.5, 0.05, 0xa807e06d916ef67f),
            (3, 200, 20, 0.2, 0.01, 0x2e18847077e94815),
            (4, 40, 6, 0.97, 0.2, 0x7f1889d615065ef7),
            (3, 256, 8, 0.26, 0.005, 0x12778f0ba0d221e2),
            (3, 160, 8, 0.26, 0.005, 0x26dd69c6e42092e3),
            (3, 384, 8, 0.26, 0.005, 0xd9580bbed40afbac),
            (3, 512, 10, 0.26, 0.005, 0x4785cf55dbb3d5e6),
            (3, 64, 6, 0.05, 0.005, 0x8e4ede068820320c),
            (3, 8, 2, 0.2, 0.05, 0x9ea6aa2518538c9f),
            (3, 32, 4, 0.2, 0.05, 0x2b31c864ee55f9c6),
            (3, 16, 1, 0.2, 0.05, 0x255215cb144b624e),
            (3, 128, 8, 0.2, 0.01, 0x5116dadf255ab723),
        ];
        for (layers, n, k, dead, drift, want) in cases {
            let p = Params {
                skew: Params::depth_skew(layers, 0.3, 1.5),
                affinity: 0.8,
                dead,
                drift,
                recall: 0.3,
                recall_decay: 1.5,
                opening: 2,
            };
            let shape = Shape {
                responses: vec![(5, 700), (0, 1300), (3, 40)],
            };
            let t = generate(&geo(layers, n, k), &p, &shape, 9);
            let h = t.ids.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
                (h ^ x as u64).wrapping_mul(0x100_0000_01b3)
            });
            assert_eq!(h, want, "{n} experts, top-{k}, dead {dead}");
        }
    }

    #[test]
    fn recall_and_affinity_give_temporal_locality() {
        let g = geo(4, 64, 4);
        let shape = Shape::uniform(2, 2000, 0);
        let overlap = |p: &Params| super::super::fit::overlap(&generate(&g, p, &shape, 5), 1);
        let flat = Params {
            skew: vec![0.0; 4],
            affinity: 0.0,
            dead: 0.0,
            drift: 0.0,
            recall: 0.0,
            recall_decay: 2.0,
            opening: 0,
        };
        // Independent uniform routing: 4 of 64 experts overlap by 1/16.
        let base = overlap(&flat);
        assert!((base - 1.0 / 16.0).abs() < 0.01, "{base}");
        assert!(
            overlap(&Params {
                recall: 0.3,
                ..flat.clone()
            }) > base + 0.1
        );
        assert!(
            overlap(&Params {
                dead: 0.5,
                ..flat.clone()
            }) > base * 1.5
        );
    }
}
