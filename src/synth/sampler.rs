//! One layer's router weights as running sums, sampled in two short counts.

use super::rng::Rng;
use super::simd::{count_le, count_le_sorted};
use crate::trace::Geometry;

/// The sampling state of one layer of one response: the weights as two levels of
/// running sums over blocks of `b` experts, so that a sample is two short branch-free
/// counts and an update two short sums. An update recomputes the sums it touches from
/// the weights, so no rounding accumulates and f32 suffices.
pub(super) struct State {
    pub(super) n: usize,
    /// Block size (a power of two about sqrt(n)) and number of blocks.
    pub(super) b: usize,
    pub(super) nb: usize,
    /// Weights, padded with 0 to nb * b.
    pub(super) w: Vec<f32>,
    /// Running sum of the weights inside each block.
    pub(super) inner: Vec<f32>,
    /// 0, then the running sum of the block totals (`outer[i + 1]`: blocks 0..=i), then
    /// +inf up to a multiple of 4 sums (a count of sums <= u never includes them).
    pub(super) outer: Vec<f32>,
    /// The layer's random stream in the current response.
    pub(super) rng: Rng,
    /// Drift redraws owed (fractional).
    pub(super) acc: f64,
    /// Scratch of `exact_rest`.
    pub(super) saved: Vec<(usize, f32)>,
}

impl State {
    pub(super) fn new(g: &Geometry) -> State {
        let n = g.n_experts as usize;
        let b = ((n as f64).sqrt().ceil() as usize).next_power_of_two();
        let nb = n.div_ceil(b);
        let mut outer = vec![f32::INFINITY; 1 + nb.next_multiple_of(4)];
        outer[..=nb].fill(0.0);
        State {
            n,
            b,
            nb,
            w: vec![0.0; nb * b],
            inner: vec![0.0; nb * b],
            outer,
            rng: Rng::new(0, 0),
            acc: 0.0,
            saved: Vec::with_capacity(g.top_k as usize),
        }
    }

    /// The block size: `B` when known at compile time (not 0).
    #[inline(always)]
    pub(super) fn bsize<const B: usize>(&self) -> usize {
        if B > 0 {
            B
        } else {
            self.b
        }
    }

    /// Recompute the running sums of expert `from`'s block from `from` on (the sums
    /// before it do not depend on its weight).
    #[inline(always)]
    pub(super) fn block_from<const B: usize>(&mut self, from: usize) {
        let b = self.bsize::<B>();
        let end = (from & !(b - 1)) + b;
        let mut s = if from & (b - 1) > 0 {
            self.inner[from - 1]
        } else {
            0.0f32
        };
        for (x, &w) in self.inner[from..end].iter_mut().zip(&self.w[from..end]) {
            s += w;
            *x = s;
        }
    }

    /// Recompute the running block totals from block `from` on.
    #[inline(always)]
    pub(super) fn totals_from<const B: usize>(&mut self, from: usize) {
        let b = self.bsize::<B>();
        let mut s = self.outer[from];
        let ends = self.inner[from * b + b - 1..].iter().step_by(b);
        for (o, &x) in self.outer[from + 1..=self.nb].iter_mut().zip(ends) {
            s += x;
            *o = s;
        }
    }

    /// Recompute all running block totals, for the block size `B` and number of blocks
    /// `NB` known at compile time (a fixed-length loop).
    #[inline(always)]
    pub(super) fn totals<const B: usize, const NB: usize>(&mut self) {
        let blocks = &self.inner.as_chunks::<B>().0[..NB];
        let outer: &mut [f32; NB] = (&mut self.outer[1..=NB]).try_into().unwrap();
        let mut s = 0.0f32;
        for (o, blk) in outer.iter_mut().zip(blocks) {
            s += blk[B - 1];
            *o = s;
        }
    }

    pub(super) fn rebuild(&mut self) {
        for blk in 0..self.nb {
            self.block_from::<0>(blk * self.b);
        }
        self.totals_from::<0>(0);
    }

    /// `outer[nb] * 2^-32`: a 32-bit random number times it is uniform in [0, total).
    #[inline(always)]
    pub(super) fn scale(&self) -> f64 {
        self.outer[self.nb] as f64 * (1.0 / 4294967296.0)
    }

    /// An expert with probability proportional to its weight, for 32 random bits `x`
    /// and `scale = self.scale()`. `B` and `NB` (the block size and the number of
    /// blocks) when known at compile time, else 0.
    #[inline(always)]
    pub(super) fn sample<const B: usize, const NB: usize>(&self, x: u32, scale: f64) -> usize {
        // (x * 2^-32) * total and x * (total * 2^-32) are the same product: scaling by
        // a power of two is exact.
        let u = (x as f64 * scale) as f32;
        if B > 0 && NB > 0 {
            debug_assert!(self.b == B && self.nb == NB && self.outer.len() > NB);
            // SAFETY: outer holds 1 + NB sums and +inf up to a multiple of 4 (checked by
            // `layer_tokens`), and the block `blk < NB` is one of the NB * B inner sums.
            unsafe {
                let outer = self.outer.as_ptr();
                let blk = count_le_sorted::<NB>(outer.add(1), u).min(NB - 1);
                let u = u - *outer.add(blk);
                let start = blk * B;
                let j = count_le_sorted::<B>(self.inner.as_ptr().add(start), u);
                (start + j.min(B - 1)).min(self.n - 1)
            }
        } else {
            let (b, nb) = (self.b, self.nb);
            let blk = count_le(&self.outer[1..], u).min(nb - 1);
            let u = u - self.outer[blk];
            let start = blk * b;
            let j = count_le(&self.inner[start..start + b], u).min(b - 1);
            (start + j).min(self.n - 1)
        }
    }
}
