//! LRU stack distances in one pass (Mattson, Gecsei, Slutz & Traiger 1970): an access
//! at stack depth d hits in every LRU cache of capacity >= d, so one pass gives the LRU
//! miss count of every capacity.
//!
//! Depth = 1 + the number of distinct ids used since this id's previous use = 1 + the
//! number of ids whose *last* use is later than this id's. Every id keeps one mark at
//! the time of its last use in a bit vector over a sliding window of time; the count of
//! marks after a time is a popcount over a three-level summary (words, 8-word groups,
//! 64-word blocks), so an access costs a few dozen cache-resident operations instead of
//! a walk down the stack. When time reaches the window's end the live marks (at most
//! one per id) are compacted to its start, so the window stays 2 x n_ids wide and the
//! renumbering costs O(1) per access amortised.

/// Depth reported for an id's first use (a miss at every capacity).
pub const COLD: u32 = 0;

pub struct StackDistance {
    bits: Vec<u64>,
    /// Marks per 8-word group.
    groups: Vec<u16>,
    /// Marks per 64-word block.
    blocks: Vec<u32>,
    last: Vec<u32>,
    pos_id: Vec<u16>,
    now: u32,
    window: u32,
}

const NONE: u32 = u32::MAX;

impl StackDistance {
    pub fn new(n_ids: usize) -> Self {
        // A multiple of 4096 positions (64 words), at least eight times the ids, so a
        // compaction (O(window)) comes at most every 7/8 window accesses.
        let window = (8 * n_ids.max(1)).div_ceil(4096) * 4096;
        StackDistance {
            bits: vec![0; window / 64],
            groups: vec![0; window / 512],
            blocks: vec![0; window / 4096],
            last: vec![NONE; n_ids],
            pos_id: vec![0; window],
            now: 0,
            window: window as u32,
        }
    }

    /// The LRU stack depth of `id` before this access (COLD for a first use), then make
    /// it the most recent.
    #[inline(always)]
    pub fn access(&mut self, id: u16) -> u32 {
        let p = self.last[id as usize];
        let depth = if p == NONE {
            COLD
        } else {
            let d = 1 + self.marks_after(p);
            self.flip(p, false);
            d
        };
        if self.now == self.window {
            self.compact();
        }
        let t = self.now;
        self.flip(t, true);
        self.last[id as usize] = t;
        self.pos_id[t as usize] = id;
        self.now = t + 1;
        depth
    }

    /// Marks at positions > p (all marks lie below `now`). Fixed-length masked sums over
    /// the 8 words of p's group and the 8 groups of p's block: no data-dependent branches.
    #[inline(always)]
    fn marks_after(&self, p: u32) -> u32 {
        let w = (p / 64) as usize;
        let mut n = ((self.bits[w] >> (p % 64)) >> 1).count_ones();
        let (g, wi) = (w / 8, w % 8);
        let words: &[u64; 8] = self.bits[g * 8..g * 8 + 8].try_into().unwrap();
        // Masks, not `if`: the compiler turns a select between a popcount and 0 into a
        // branch, which mispredicts about once per call.
        for (j, x) in words.iter().enumerate() {
            n += (x & ((j > wi) as u64).wrapping_neg()).count_ones();
        }
        let (b, gi) = (g / 8, g % 8);
        let groups: &[u16; 8] = self.groups[b * 8..b * 8 + 8].try_into().unwrap();
        for (j, &c) in groups.iter().enumerate() {
            n += c as u32 & ((j > gi) as u32).wrapping_neg();
        }
        // Later blocks, up to the one holding `now`.
        let last_block = (self.now.saturating_sub(1) / 4096) as usize;
        for &c in self.blocks.get(b + 1..=last_block).unwrap_or(&[]) {
            n += c;
        }
        n
    }

    #[inline(always)]
    fn flip(&mut self, p: u32, on: bool) {
        let w = (p / 64) as usize;
        let m = 1u64 << (p % 64);
        if on {
            self.bits[w] |= m;
            self.groups[w / 8] += 1;
            self.blocks[w / 64] += 1;
        } else {
            self.bits[w] &= !m;
            self.groups[w / 8] -= 1;
            self.blocks[w / 64] -= 1;
        }
    }

    /// Renumber the live marks 0..live in time order.
    #[cold]
    fn compact(&mut self) {
        let mut rank: u32 = 0;
        let mut new_pos = vec![0u16; self.pos_id.len()];
        for (w, word) in self.bits.iter().enumerate() {
            let mut x = *word;
            while x != 0 {
                let b = x.trailing_zeros();
                x &= x - 1;
                let id = self.pos_id[w * 64 + b as usize];
                self.last[id as usize] = rank;
                new_pos[rank as usize] = id;
                rank += 1;
            }
        }
        self.pos_id = new_pos;
        self.bits.iter_mut().for_each(|w| *w = 0);
        self.groups.iter_mut().for_each(|c| *c = 0);
        self.blocks.iter_mut().for_each(|c| *c = 0);
        for t in 0..rank {
            let w = (t / 64) as usize;
            self.bits[w] |= 1 << (t % 64);
            self.groups[w / 8] += 1;
            self.blocks[w / 64] += 1;
        }
        self.now = rank;
    }
}

/// Most capacities one pass takes (buckets are counted in bytes).
pub const MAX_CAPACITIES: usize = 254;

/// How a stream is cut into steps (the unit misses are counted in: a token, or a batch
/// of tokens) and every step into slots (the unit per-slot misses are counted in).
#[derive(Clone, Copy, Debug)]
pub enum StepLayout<'a> {
    /// Every step `per_step` accesses, `k` per slot (a token, replayed token by token).
    Uniform { per_step: usize, k: usize },
    /// Step i holds, for every slot s = 0..n_slots in order, `lens[i * n_slots + s]`
    /// accesses (a batch: each slot's union of experts).
    Ragged { n_slots: usize, lens: &'a [u16] },
}

impl StepLayout<'_> {
    /// Steps of a stream of `len` accesses.
    pub fn n_steps(&self, len: usize) -> usize {
        match *self {
            StepLayout::Uniform { per_step, .. } => len.checked_div(per_step).unwrap_or(0),
            StepLayout::Ragged { n_slots, lens } => lens.len().checked_div(n_slots).unwrap_or(0),
        }
    }

    pub fn n_slots(&self) -> usize {
        match *self {
            StepLayout::Uniform { per_step, k } => per_step.checked_div(k).unwrap_or(0),
            StepLayout::Ragged { n_slots, .. } => n_slots,
        }
    }
}

/// Misses of a stream at several capacities, from one pass.
pub struct Curves {
    /// Capacities, ascending.
    pub capacities: Vec<usize>,
    /// misses_per_step[j][t]: misses of step t at capacities[j].
    pub misses_per_step: Vec<Vec<u32>>,
    /// per_slot[j][s]: misses of slot s (index among the replayed slots) at capacities[j],
    /// counting steps from `count_from` on.
    pub misses_per_slot: Vec<Vec<u64>>,
    /// With slot weights: bytes[j][t], the weights of step t's misses at capacities[j].
    pub bytes_per_step: Option<Vec<Vec<u64>>>,
}

/// What a one-pass curve needs of a stack algorithm: for each access in order, its
/// bucket, the number of the (ascending) capacities it misses at.
pub trait Buckets {
    fn bucket(&mut self, id: u16) -> usize;
}

/// Run the stream (cut into steps and slots by `layout`) through the stack once and count
/// misses at every capacity of `capacities` (ascending, repeats allowed). Per-slot counts
/// leave out steps before `count_from`.
///
/// With `pinned`, the ids it marks stay out of the stack: loaded on first use (a miss at
/// every capacity) and hits ever after, as in front of a `pinned:` decorator whose
/// inner LRU has `capacities`. With `slot_weights` (one per slot), the misses of every
/// step are also summed by weight (`Curves::bytes_per_step`).
#[allow(clippy::too_many_arguments)]
pub fn lru_curves(
    stream: &[u16],
    layout: StepLayout,
    n_ids: usize,
    capacities: &[usize],
    count_from: usize,
    pinned: Option<&[bool]>,
    slot_weights: Option<&[u64]>,
) -> Curves {
    let run = LruRun {
        stream,
        layout,
        n_ids,
        capacities,
        count_from,
        pinned,
        slot_weights,
    };
    // The hot loop is popcounts: compile it once more with the CPU's popcnt instruction
    // (not in the x86-64 baseline) and use that where the CPU has it.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("popcnt") {
        // SAFETY: the CPU supports popcnt, checked just above.
        return unsafe { run.with_popcnt() };
    }
    run.run()
}

/// The arguments of one `lru_curves` pass.
struct LruRun<'a> {
    stream: &'a [u16],
    layout: StepLayout<'a>,
    n_ids: usize,
    capacities: &'a [usize],
    count_from: usize,
    pinned: Option<&'a [bool]>,
    slot_weights: Option<&'a [u64]>,
}

impl LruRun<'_> {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    unsafe fn with_popcnt(&self) -> Curves {
        self.run()
    }

    #[inline(always)]
    fn run(&self) -> Curves {
        let (caps, w) = (self.capacities, self.slot_weights);
        match self.pinned {
            None => {
                let mut b = LruBuckets::<false>::new(self.n_ids, caps, &[]);
                curves(self.stream, self.layout, caps, self.count_from, w, &mut b)
            }
            Some(p) => {
                let mut b = LruBuckets::<true>::new(self.n_ids, caps, p);
                curves(self.stream, self.layout, caps, self.count_from, w, &mut b)
            }
        }
    }
}

/// LRU buckets from stack depths, with or without pinned ids.
struct LruBuckets<'p, const PINNED: bool> {
    sd: StackDistance,
    /// bucket[d] = how many capacities are < d: an access of depth d misses at capacity
    /// j exactly when bucket[d] > j. A cold access misses everywhere.
    by_depth: Vec<u8>,
    pinned: &'p [bool],
    /// A pinned id's bucket: all (miss everywhere) until loaded, then 0 (hit everywhere).
    pin_bucket: Vec<u8>,
}

impl<'p, const PINNED: bool> LruBuckets<'p, PINNED> {
    fn new(n_ids: usize, capacities: &[usize], pinned: &'p [bool]) -> Self {
        let m = capacities.len();
        assert!(
            m <= MAX_CAPACITIES,
            "at most {MAX_CAPACITIES} capacities per pass"
        );
        let mut by_depth = vec![0u8; n_ids + 2];
        for (d, b) in by_depth.iter_mut().enumerate() {
            *b = capacities.partition_point(|&c| c < d) as u8;
        }
        by_depth[COLD as usize] = m as u8;
        let pin_bucket = if PINNED {
            assert_eq!(pinned.len(), n_ids, "one pinned flag per id");
            vec![m as u8; n_ids]
        } else {
            Vec::new()
        };
        LruBuckets {
            sd: StackDistance::new(n_ids),
            by_depth,
            pinned,
            pin_bucket,
        }
    }
}

impl<const PINNED: bool> Buckets for LruBuckets<'_, PINNED> {
    #[inline(always)]
    fn bucket(&mut self, id: u16) -> usize {
        if PINNED && self.pinned[id as usize] {
            let b = &mut self.pin_bucket[id as usize];
            let out = *b as usize;
            *b = 0;
            out
        } else {
            self.by_depth[self.sd.access(id) as usize] as usize
        }
    }
}

/// The pass: buckets per step and per slot, then misses at each capacity as suffix
/// sums. Generic over the stack, so each is compiled into its own loop; with
/// `slot_weights`, a second loop also sums every step's missed weights (the plain loop
/// stays as it is).
#[inline(always)]
pub fn curves<B: Buckets>(
    stream: &[u16],
    layout: StepLayout,
    capacities: &[usize],
    count_from: usize,
    slot_weights: Option<&[u64]>,
    buckets: &mut B,
) -> Curves {
    match slot_weights {
        None => curves_of::<B, false>(stream, layout, capacities, count_from, &[], buckets),
        Some(w) => curves_of::<B, true>(stream, layout, capacities, count_from, w, buckets),
    }
}

#[inline(always)]
fn curves_of<B: Buckets, const WEIGHTED: bool>(
    stream: &[u16],
    layout: StepLayout,
    capacities: &[usize],
    count_from: usize,
    weights: &[u64],
    buckets: &mut B,
) -> Curves {
    assert!(
        capacities.windows(2).all(|w| w[0] <= w[1]),
        "capacities ascending"
    );
    let m = capacities.len();
    let n_steps = layout.n_steps(stream.len());
    let n_slots = layout.n_slots();
    if WEIGHTED {
        assert_eq!(weights.len(), n_slots, "one weight per slot");
    }
    let mut misses_per_step = vec![vec![0u32; n_steps]; m];
    let mut bytes_per_step = if WEIGHTED {
        vec![vec![0u64; n_steps]; m]
    } else {
        Vec::new()
    };
    let mut slot_hist = vec![0u64; n_slots * (m + 1)];
    let mut step_hist = vec![0u32; m + 1];
    let mut step_bytes = vec![0u64; if WEIGHTED { m + 1 } else { 0 }];
    // misses at capacity j = accesses with bucket > j: a suffix sum.
    let mut close_step = |t: usize, step_hist: &mut [u32], step_bytes: &mut [u64]| {
        let mut above = 0u32;
        for j in (0..m).rev() {
            above += step_hist[j + 1];
            misses_per_step[j][t] = above;
        }
        step_hist.iter_mut().for_each(|h| *h = 0);
        if WEIGHTED {
            let mut above = 0u64;
            for j in (0..m).rev() {
                above += step_bytes[j + 1];
                bytes_per_step[j][t] = above;
            }
            step_bytes.iter_mut().for_each(|h| *h = 0);
        }
    };
    match layout {
        StepLayout::Uniform { per_step, k } => {
            for (t, step) in stream.chunks_exact(per_step.max(1)).enumerate() {
                if t >= count_from {
                    for (s, layer) in step.chunks_exact(k).enumerate() {
                        let hist = &mut slot_hist[s * (m + 1)..(s + 1) * (m + 1)];
                        for &id in layer {
                            let b = buckets.bucket(id);
                            step_hist[b] += 1;
                            hist[b] += 1;
                            if WEIGHTED {
                                step_bytes[b] += weights[s];
                            }
                        }
                    }
                } else if WEIGHTED {
                    for (s, layer) in step.chunks_exact(k).enumerate() {
                        for &id in layer {
                            let b = buckets.bucket(id);
                            step_hist[b] += 1;
                            step_bytes[b] += weights[s];
                        }
                    }
                } else {
                    for &id in step {
                        step_hist[buckets.bucket(id)] += 1;
                    }
                }
                close_step(t, &mut step_hist, &mut step_bytes);
            }
        }
        StepLayout::Ragged { n_slots, lens } => {
            let mut pos = 0;
            for (t, step_lens) in lens.chunks_exact(n_slots.max(1)).enumerate() {
                for (s, &len) in step_lens.iter().enumerate() {
                    let layer = &stream[pos..pos + len as usize];
                    pos += len as usize;
                    if t >= count_from {
                        let hist = &mut slot_hist[s * (m + 1)..(s + 1) * (m + 1)];
                        for &id in layer {
                            let b = buckets.bucket(id);
                            step_hist[b] += 1;
                            hist[b] += 1;
                            if WEIGHTED {
                                step_bytes[b] += weights[s];
                            }
                        }
                    } else {
                        for &id in layer {
                            let b = buckets.bucket(id);
                            step_hist[b] += 1;
                            if WEIGHTED {
                                step_bytes[b] += weights[s];
                            }
                        }
                    }
                }
                close_step(t, &mut step_hist, &mut step_bytes);
            }
            assert_eq!(pos, stream.len(), "the layout covers the stream");
        }
    }
    let misses_per_slot = (0..m)
        .map(|j| {
            (0..n_slots)
                .map(|s| {
                    slot_hist[s * (m + 1) + j + 1..(s + 1) * (m + 1)]
                        .iter()
                        .sum()
                })
                .collect()
        })
        .collect();
    Curves {
        capacities: capacities.to_vec(),
        misses_per_step,
        misses_per_slot,
        bytes_per_step: WEIGHTED.then_some(bytes_per_step),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive stack: a Vec with the most recent id first.
    fn naive_depths(stream: &[u16]) -> Vec<u32> {
        let mut stack: Vec<u16> = Vec::new();
        stream
            .iter()
            .map(|&id| {
                let d = match stack.iter().position(|&x| x == id) {
                    Some(i) => {
                        stack.remove(i);
                        i as u32 + 1
                    }
                    None => COLD,
                };
                stack.insert(0, id);
                d
            })
            .collect()
    }

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn depths_equal_a_naive_stack_across_compactions() {
        for (n_ids, len) in [
            (1usize, 50usize),
            (3, 1000),
            (50, 20_000),
            (300, 40_000),
            (5000, 30_000),
        ] {
            let mut seed = n_ids as u64;
            // Mix of skewed reuse and scans.
            let stream: Vec<u16> = (0..len)
                .map(|i| {
                    let r = lcg(&mut seed) as usize;
                    if i % 97 < 10 {
                        (i % n_ids) as u16
                    } else {
                        ((r % n_ids) * (r % 7 + 1) / 7 % n_ids) as u16
                    }
                })
                .collect();
            let mut sd = StackDistance::new(n_ids);
            let fast: Vec<u32> = stream.iter().map(|&id| sd.access(id)).collect();
            assert_eq!(fast, naive_depths(&stream), "n_ids {n_ids}");
        }
    }

    fn uniform(per_step: usize, k: usize) -> StepLayout<'static> {
        StepLayout::Uniform { per_step, k }
    }

    #[test]
    fn curves_count_misses_per_step_and_slot() {
        // 2 slots x top-1, ids 0..3 in slot 0 and 4..7 in slot 1.
        let stream: Vec<u16> = vec![0, 4, 1, 5, 0, 4, 2, 6, 1, 5];
        let c = lru_curves(&stream, uniform(2, 1), 8, &[0, 2, 4, 8], 0, None, None);
        // capacity 0: everything misses.
        assert_eq!(c.misses_per_step[0], vec![2, 2, 2, 2, 2]);
        // capacity 2: token 3 (0,4) finds 0 at depth 3 -> miss, 4 at depth 3 -> miss.
        assert_eq!(c.misses_per_step[1], vec![2, 2, 2, 2, 2]);
        // capacity 4: token 3 hits both; token 5 (1,5): depth 5 -> miss.
        assert_eq!(c.misses_per_step[2], vec![2, 2, 0, 2, 2]);
        assert_eq!(c.misses_per_step[3], vec![2, 2, 0, 2, 0]);
        assert_eq!(c.misses_per_slot[3], vec![3, 3]);
        assert!(c.bytes_per_step.is_none());
        // Weighted: slot 0's misses cost 10, slot 1's 1000; the counts do not change.
        let w = lru_curves(
            &stream,
            uniform(2, 1),
            8,
            &[0, 2, 4, 8],
            1,
            None,
            Some(&[10, 1000]),
        );
        assert_eq!(w.misses_per_step, c.misses_per_step);
        let bytes = w.bytes_per_step.unwrap();
        assert_eq!(bytes[0], vec![1010; 5]);
        assert_eq!(bytes[2], vec![1010, 1010, 0, 1010, 1010]);
        assert_eq!(bytes[3], vec![1010, 1010, 0, 1010, 0]);
    }

    #[test]
    fn pinned_ids_miss_once_and_stay_out_of_the_stack() {
        // Slot 0 (ids 0..3) pinned; slot 1 (ids 4..7) in an LRU of inner capacity 0 or 1.
        let stream: Vec<u16> = vec![0, 4, 1, 4, 0, 5, 1, 4];
        let mut pinned = vec![false; 8];
        pinned[..4].iter_mut().for_each(|p| *p = true);
        let c = lru_curves(&stream, uniform(2, 1), 8, &[0, 1], 0, Some(&pinned), None);
        // Pinned: 0 and 1 miss once each (tokens 0 and 1), then hit. Slot 1 at capacity
        // 0: every access misses; at capacity 1: 4 (cold), 4 (hit), 5 (cold), 4 (evicted
        // by 5: miss).
        assert_eq!(c.misses_per_step[0], vec![2, 2, 1, 1]);
        assert_eq!(c.misses_per_step[1], vec![2, 1, 1, 1]);
        assert_eq!(c.misses_per_slot[1], vec![2, 3]);
    }

    #[test]
    fn ragged_steps_count_like_uniform_ones_and_by_their_own_lengths() {
        // The same stream as uniform steps of 2 (1 per slot) and as ragged steps whose
        // lengths are all 1: the same counts.
        let stream: Vec<u16> = vec![0, 4, 1, 5, 0, 4, 2, 6, 1, 5];
        let lens = vec![1u16; 10];
        for pinned in [
            None,
            Some(&[true, false, false, false, false, false, false, false][..]),
        ] {
            let w = Some(&[10u64, 1000][..]);
            let a = lru_curves(&stream, uniform(2, 1), 8, &[0, 2, 4, 8], 1, pinned, w);
            let b = lru_curves(
                &stream,
                StepLayout::Ragged {
                    n_slots: 2,
                    lens: &lens,
                },
                8,
                &[0, 2, 4, 8],
                1,
                pinned,
                w,
            );
            assert_eq!(a.misses_per_step, b.misses_per_step);
            assert_eq!(a.misses_per_slot, b.misses_per_slot);
            assert_eq!(a.bytes_per_step, b.bytes_per_step);
        }
        // Steps of 3 and 2 accesses: slot 0 takes 2 then 1, slot 1 takes 1 then 1.
        // Stream 0 1 | 4 || 0 | 5: at capacity 2, the second 0 has depth 3 (4 and 1
        // since): a miss; at capacity 3 a hit.
        let stream: Vec<u16> = vec![0, 1, 4, 0, 5];
        let lens = vec![2u16, 1, 1, 1];
        let layout = StepLayout::Ragged {
            n_slots: 2,
            lens: &lens,
        };
        assert_eq!(layout.n_steps(stream.len()), 2);
        let c = lru_curves(&stream, layout, 8, &[2, 3], 0, None, Some(&[10, 1000]));
        assert_eq!(c.misses_per_step[0], vec![3, 2]);
        assert_eq!(c.misses_per_step[1], vec![3, 1]);
        assert_eq!(c.misses_per_slot[0], vec![3, 2]);
        assert_eq!(c.misses_per_slot[1], vec![2, 2]);
        // A step's missed bytes: its misses, each at its slot's weight.
        let bytes = c.bytes_per_step.unwrap();
        assert_eq!(bytes[0], vec![1020, 1010]);
        assert_eq!(bytes[1], vec![1020, 1000]);
    }
}
