//! Belady's OPT at many capacities in one pass.
//!
//! OPT is a stack algorithm (Mattson et al. 1970): for every capacity C, the cache's
//! contents are the top C entries of one priority stack, so an access hits at C exactly
//! when its object was within the top C. A sweep only asks which of its capacities
//! c_0 <= c_1 <= ... an access hits, so the stack is cut at those capacities into bands
//! (band k holds depths c_{k-1} + 1 ..= c_k), and the order *inside* a band never matters:
//! each band is a set with a max-heap on next-use keys.
//!
//! An access to x (key now the current position, the smallest of all) that was in band j:
//! - band 0 gives up its largest key (what an OPT cache of c_0 evicts: the resident used
//!   farthest in the future) and takes x with its new key;
//! - each band k in 1..j takes the carried object and gives up the largest key of the two
//!   (OPT at c_k evicts the farthest of everything above it, which is either the carry or
//!   its own largest);
//! - band j loses x and keeps the carry. From beyond the last band (or a first use), the
//!   carry falls out of the bands, or fills the first band that is not full yet.
//!
//! The accessed object hits at every capacity >= c_j and misses below: j is its bucket.
//! A pass costs a heap operation per band crossed, so an access that hits at most
//! capacities is cheap, instead of one full OPT replay per capacity.
//!
//! Keys are those of [`OptFuture`]: the position of the next access, or `len + id` if
//! there is none (never used again: evicted first, the larger id first), as the
//! per-capacity `opt` policy (and libCacheSim's Belady) use, so the counts agree exactly.

use crate::OptFuture;

/// `band_of` an object that is in no band (never seen, or below the last band).
const NOWHERE: u8 = u8::MAX;

/// A heap entry: the key in the high bits and the id in the low 16, so entries compare
/// by key (keys are unique).
type Entry = u64;

#[inline(always)]
fn entry(key: u32, id: u16) -> Entry {
    (key as u64) << 16 | id as u64
}

#[inline(always)]
fn id_of(e: Entry) -> u16 {
    e as u16
}

/// The OPT stack cut into bands at the given capacities.
pub struct OptBands<'f> {
    future: &'f [u32],
    pos: usize,
    /// One max-heap per band of non-zero width, with its capacity (the band's width).
    heaps: Vec<Vec<Entry>>,
    widths: Vec<usize>,
    /// The bucket of an object in each band, and last, of an object in none. Bands of
    /// zero width (capacity 0, repeated capacities) hold nothing, so they are left out
    /// of `heaps`, but their capacities still count in the buckets.
    bucket_of_band: Vec<usize>,
    band_of: Vec<u8>,
    /// Index of each object in its band's heap.
    slot_of: Vec<u32>,
}

impl super::mattson::Buckets for OptBands<'_> {
    #[inline(always)]
    fn bucket(&mut self, id: u16) -> usize {
        self.access(id)
    }
}

impl<'f> OptBands<'f> {
    /// Bands at `capacities` (ascending, repeats allowed, at most
    /// `mattson::MAX_CAPACITIES`) for replaying exactly `future`'s sequence.
    pub fn new(future: &'f OptFuture, capacities: &[usize]) -> Self {
        assert!(
            capacities.windows(2).all(|w| w[0] <= w[1]),
            "capacities ascending"
        );
        assert!(
            capacities.len() <= super::mattson::MAX_CAPACITIES,
            "at most {} capacities",
            super::mattson::MAX_CAPACITIES
        );
        let n_ids = future.n_ids();
        // Band k spans depths c_{k-1} + 1 ..= c_k; no deeper than the ids that fill it.
        let mut above = 0;
        let (mut widths, mut bucket_of_band) = (Vec::new(), Vec::new());
        for (k, &c) in capacities.iter().enumerate() {
            let c = c.min(n_ids);
            if c > above {
                widths.push(c - above);
                bucket_of_band.push(k);
            }
            above = c;
        }
        bucket_of_band.push(capacities.len());
        OptBands {
            future: future.next_keys(),
            pos: 0,
            heaps: widths.iter().map(|&w| Vec::with_capacity(w)).collect(),
            widths,
            bucket_of_band,
            band_of: vec![NOWHERE; n_ids],
            slot_of: vec![0; n_ids],
        }
    }

    /// The bucket of the next access of the sequence (`id`, which must be the
    /// sequence's next id): how many of the capacities it misses at.
    #[inline(always)]
    pub fn access(&mut self, id: u16) -> usize {
        let key = self.future[self.pos];
        self.pos += 1;
        let x = entry(key, id);
        let m = self.heaps.len();
        let j = match self.band_of[id as usize] {
            NOWHERE => m,
            b => b as usize,
        };
        // Read before x enters the first band, which moves its index.
        let old_slot = self.slot_of[id as usize] as usize;
        // The first band takes x; each band above x's own passes the carry on.
        let mut carry = x;
        if j > 0 {
            if self.heaps[0].len() < self.widths[0] {
                // A band not full yet: everything below it is empty (so x was in no
                // band), and the carry stays here.
                self.push(0, x);
                return self.bucket_of_band[j];
            }
            // x itself is never the victim: the band's largest goes, x comes in.
            carry = self.replace_top(0, x);
            for k in 1..j {
                if self.heaps[k].len() < self.widths[k] {
                    self.push(k, carry);
                    return self.bucket_of_band[j];
                }
                if carry < self.heaps[k][0] {
                    carry = self.replace_top(k, carry);
                }
            }
        }
        if j < m {
            // x leaves its band and the carry takes its place (if x was in the first
            // band, the carry is x itself with its new key). Every band above x's is
            // full, so the carry always gets this far.
            self.set(j, old_slot, carry);
        } else {
            // Fell out of every band (or there are none).
            self.band_of[id_of(carry) as usize] = NOWHERE;
        }
        self.bucket_of_band[j]
    }

    /// Put `e` at heap index `s` of band `k` and restore the heap around it.
    #[inline(always)]
    fn set(&mut self, k: usize, s: usize, e: Entry) {
        let old = self.heaps[k][s];
        self.heaps[k][s] = e;
        self.band_of[id_of(e) as usize] = k as u8;
        if e > old {
            self.sift_up(k, s);
        } else {
            self.sift_down(k, s);
        }
    }

    fn push(&mut self, k: usize, e: Entry) {
        self.heaps[k].push(e);
        let s = self.heaps[k].len() - 1;
        self.band_of[id_of(e) as usize] = k as u8;
        self.sift_up(k, s);
    }

    /// Swap `e` in for band `k`'s largest entry and return that one.
    #[inline(always)]
    fn replace_top(&mut self, k: usize, e: Entry) -> Entry {
        let top = self.heaps[k][0];
        self.heaps[k][0] = e;
        self.band_of[id_of(e) as usize] = k as u8;
        self.sift_down(k, 0);
        top
    }

    #[inline(always)]
    fn sift_up(&mut self, k: usize, s: usize) {
        sift_up(&mut self.heaps[k], &mut self.slot_of, s);
    }

    #[inline(always)]
    fn sift_down(&mut self, k: usize, s: usize) {
        sift_down(&mut self.heaps[k], &mut self.slot_of, s);
    }
}

// The heap walks below index without bounds checks: they are most of the instructions
// of a pass otherwise. Every index is a heap index below `h.len()` (`s` by the callers,
// parents and children by the loop conditions), and every entry's id is below
// `slot_of.len()`: entries only hold ids that `access` took, which indexes `band_of`
// (as long as `slot_of`) with them first.

/// Move the entry at `s` up to its place.
#[inline(always)]
fn sift_up(h: &mut [Entry], slot_of: &mut [u32], mut s: usize) {
    assert!(s < h.len());
    // SAFETY: see above; p < s < h.len().
    unsafe {
        let e = *h.get_unchecked(s);
        while s > 0 {
            let p = (s - 1) / 2;
            let up = *h.get_unchecked(p);
            if up >= e {
                break;
            }
            put(h, slot_of, s, up);
            s = p;
        }
        put(h, slot_of, s, e);
    }
}

/// Move the entry at `s` down to its place.
#[inline(always)]
fn sift_down(h: &mut [Entry], slot_of: &mut [u32], mut s: usize) {
    let n = h.len();
    assert!(s < n);
    // SAFETY: see above; l < n is checked, r = l + 1 is read only when r < n.
    unsafe {
        let e = *h.get_unchecked(s);
        loop {
            let l = 2 * s + 1;
            if l >= n {
                break;
            }
            // The larger child by arithmetic, not a branch: which one it is, is data.
            let c = if l + 1 < n {
                l + (*h.get_unchecked(l + 1) > *h.get_unchecked(l)) as usize
            } else {
                l
            };
            let down = *h.get_unchecked(c);
            if down <= e {
                break;
            }
            put(h, slot_of, s, down);
            s = c;
        }
        put(h, slot_of, s, e);
    }
}

/// Write `e` at heap index `s` and record the index as its object's slot.
///
/// # Safety
/// `s < h.len()` and `id_of(e) < slot_of.len()`.
#[inline(always)]
unsafe fn put(h: &mut [Entry], slot_of: &mut [u32], s: usize, e: Entry) {
    debug_assert!(s < h.len() && (id_of(e) as usize) < slot_of.len());
    *h.get_unchecked_mut(s) = e;
    *slot_of.get_unchecked_mut(id_of(e) as usize) = s as u32;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Opt, Policy};

    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// Every access's bucket against one OPT policy per capacity, on skewed random
    /// streams, with capacities that repeat, are zero, or exceed the ids, many of them,
    /// or none.
    #[test]
    fn buckets_equal_one_opt_run_per_capacity() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for round in 0..320 {
            // The last rounds have deep heaps (bands of hundreds of ids).
            let (ids, accesses) = if round < 300 {
                (60, 2000)
            } else {
                (3000, 40_000)
            };
            let n_ids = 1 + (xorshift(&mut x) % ids) as usize;
            let hot = 1 + xorshift(&mut x) % n_ids as u64;
            let len = (xorshift(&mut x) % accesses) as usize;
            let stream: Vec<u16> = (0..len)
                .map(|_| {
                    let r = xorshift(&mut x);
                    let m = if r & 3 != 0 { hot } else { n_ids as u64 };
                    ((r >> 8) % m) as u16
                })
                .collect();
            // Up to 5 capacities, or up to 60 every seventh round; none, or all zero, now
            // and then.
            let n_caps = match round % 7 {
                0 => xorshift(&mut x) % 61,
                _ => 1 + xorshift(&mut x) % 5,
            };
            let mut caps: Vec<usize> = (0..n_caps)
                .map(|_| (xorshift(&mut x) % (n_ids as u64 + 3)) as usize)
                .collect();
            if round % 5 == 0 {
                caps.push(0);
                caps.push(1);
            }
            match round % 23 {
                3 => caps.clear(),
                4 => caps.iter_mut().for_each(|c| *c = 0),
                _ => {}
            }
            caps.sort();
            let future = OptFuture::new(&stream, n_ids).unwrap();
            let mut bands = OptBands::new(&future, &caps);
            let mut opts: Vec<Opt> = caps.iter().map(|&c| Opt::with_future(c, &future)).collect();
            for (i, &id) in stream.iter().enumerate() {
                let b = bands.access(id);
                let want = opts
                    .iter_mut()
                    .map(|o| !o.access(id as u32).is_hit() as usize)
                    .sum::<usize>();
                assert_eq!(b, want, "round {round}, access {i}, caps {caps:?}");
            }
        }
    }

    /// The classic sequence at capacities 3 and 4: OPT misses 7 and 6 times.
    #[test]
    fn belady_textbook_sequence() {
        let s: Vec<u16> = [1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5].to_vec();
        let future = OptFuture::new(&s, 6).unwrap();
        let mut bands = OptBands::new(&future, &[3, 4]);
        let buckets: Vec<usize> = s.iter().map(|&id| bands.access(id)).collect();
        let misses_at = |j: usize| buckets.iter().filter(|&&b| b > j).count();
        assert_eq!((misses_at(0), misses_at(1)), (7, 6));
    }
}
