//! Belady's MIN with demand paging: the missed object is always inserted, and the
//! victim is the resident whose next use is farthest in the future (never used again
//! first, the larger id first among those). Same counts as libCacheSim's Belady.c,
//! which also always inserts.
//!
//! One backward pass over the exact sequence that will be replayed gives every access
//! its object's *key* from then on: the position of its next access, or `len + id` if
//! there is none (above every position, larger ids higher). Keys are unique (a position
//! is one access of one object), so the residents are a set of integers in
//! `0..len + n_ids`, kept as a 64-ary hierarchical bitset (level 0: one bit per key;
//! each level above: one bit per non-empty word below, up to a single word; 1 bit per
//! access in all, 7.5 MB at 60 M accesses). A resident's key is exactly the position of
//! its next access, so the object accessed at `pos` is resident iff bit `pos` is set:
//! a hit clears that bit and sets its next key's, a miss evicts the largest key. The
//! word holding the largest key is kept up to date (inserts can only raise it, and
//! after an eviction one descent by `leading_zeros` finds the next), and a key names
//! its object (`ids[key]`, or `key - len`), so there are no per-object slots to update.
//! Memory latency dominates, so the level-0 word a step will set is prefetched a few
//! steps ahead, and `replay` (which does not report victims) never reads the victim's
//! id (a random read in the 2-byte-per-access future).

use crate::{ObjId, Outcome, Policy};
use moe_spill_huge as huge;

/// The exact sequence an `Opt` will replay, with every access's next-use key (one
/// backward pass), immutable and shared: building it costs a pass over the sequence
/// and 6 bytes per access, so a sweep builds it once for every capacity and thread.
#[derive(Clone, Debug)]
pub struct OptFuture {
    ids: SharedSlice<u16>,
    /// `next[i]`: the key of `ids[i]` after access `i`: the position of its next access,
    /// or `len + id` if there is none.
    next: SharedSlice<u32>,
    n_ids: usize,
}

type SharedSlice<T> = std::sync::Arc<[T]>;

impl OptFuture {
    /// Errors if an id is `>= n_ids`, if `n_ids > 65536`, or if the sequence is too long
    /// for u32 keys.
    pub fn new(future: &[u16], n_ids: usize) -> Result<Self, String> {
        if n_ids > 1 << 16 {
            return Err(format!("opt: n_ids {n_ids} > 65536"));
        }
        if future.len() + n_ids >= u32::MAX as usize {
            return Err("opt: trace too long for u32 positions".into());
        }
        let len = future.len() as u32;
        let mut last: Vec<u32> = (0..n_ids as u32).map(|id| len + id).collect();
        let next = huge::shared_slice_rev(future.len(), |i| {
            let id = future[i];
            let Some(l) = last.get_mut(id as usize) else {
                return Err(format!("opt: future id {id} >= n_ids {n_ids}"));
            };
            Ok(std::mem::replace(l, i as u32))
        })?;
        Ok(OptFuture {
            ids: huge::shared_copy(future),
            next,
            n_ids,
        })
    }

    /// The sequence.
    pub fn ids(&self) -> &[u16] {
        &self.ids
    }

    pub fn n_ids(&self) -> usize {
        self.n_ids
    }

    /// Every access's next-use key (see the struct's `next`).
    pub fn next_keys(&self) -> &[u32] {
        &self.next
    }
}

#[derive(Clone, Debug)]
pub struct Opt {
    capacity: usize,
    /// The sequence this policy was built for, and where in it we are.
    ids: SharedSlice<u16>,
    pos: usize,
    /// Next-use keys (see `OptFuture`).
    next: SharedSlice<u32>,
    /// The residents' keys, a set over `0..ids.len() + n_ids`.
    keys: BitTree,
    /// `key_of[id]`: the key `id` was last given (`u32::MAX`: never). It is the id's
    /// key while resident; once evicted its bit is clear (and stays clear, as only the
    /// id itself can be given that key), so residency is the bit of `key_of[id]`.
    key_of: Vec<u32>,
    len: usize,
    /// The level-0 word holding the largest key (while there is one), so an eviction
    /// does not wait for a descent.
    top_word: usize,
}

impl Opt {
    /// A Belady cache of `capacity` objects that will replay exactly `future`.
    ///
    /// Panics if an id of `future` is `>= n_ids`, if `n_ids > 65536`, or if
    /// `future.len() + n_ids >= u32::MAX`.
    pub fn new(capacity: usize, n_ids: usize, future: &[u16]) -> Self {
        Opt::with_future(
            capacity,
            &OptFuture::new(future, n_ids).unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// A Belady cache of `capacity` objects over a future prepared once (next-use keys
    /// included) and shared with other caches: the usual way to run many capacities.
    pub fn with_future(capacity: usize, future: &OptFuture) -> Self {
        Opt {
            capacity,
            ids: future.ids.clone(),
            pos: 0,
            next: future.next.clone(),
            keys: BitTree::new(future.ids.len() + future.n_ids),
            key_of: vec![u32::MAX; future.n_ids],
            len: 0,
            top_word: 0,
        }
    }

    /// How many accesses of the future sequence have been replayed.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The object a key belongs to.
    #[inline(always)]
    fn owner(&self, key: usize) -> u32 {
        match self.ids.get(key) {
            Some(&id) => id as u32,
            None => (key - self.ids.len()) as u32,
        }
    }

    /// Insert a key (of an object now resident), keeping `top_word`.
    #[inline(always)]
    fn insert<const VICTIM: bool>(&mut self, key: usize) {
        self.keys.insert(key);
        if key >> 6 > self.top_word {
            self.top_word = key >> 6;
            if VICTIM {
                prefetch(self.ids.as_ptr().wrapping_add(key));
            }
        }
    }

    /// Access number `i` (of `id`, already checked to be `ids[i]`). With `VICTIM` false
    /// the victim's id is not looked up: `evicted` is always `None`.
    #[inline(always)]
    fn step<const VICTIM: bool>(&mut self, i: usize, id: u16) -> Outcome {
        if let Some(&nu) = self.next.get(i + PREFETCH) {
            prefetch(self.keys.words.as_ptr().wrapping_add(nu as usize >> 6));
        }
        let key = self.next[i] as usize;
        if self.keys.contains(i) {
            self.keys.remove(i);
            self.insert::<VICTIM>(key);
            self.key_of[id as usize] = key as u32;
            return Outcome::Hit;
        }
        if self.capacity == 0 {
            return Outcome::Miss { evicted: None };
        }
        let mut evicted = None;
        if self.len < self.capacity {
            self.len += 1;
        } else {
            // Every resident's key is > i, so the set is not empty and its largest key
            // is in `top_word`.
            let w = self.keys.words[self.top_word];
            let k = self.top_word << 6 | (63 - w.leading_zeros() as usize);
            if VICTIM {
                evicted = Some(self.owner(k));
            }
            if self.keys.remove(k) {
                // k was the largest key: the next largest is below it.
                self.top_word = self.keys.pred_word(self.top_word);
                let p = self.top_word << 6;
                if VICTIM {
                    prefetch(self.ids.as_ptr().wrapping_add(p));
                    prefetch(self.ids.as_ptr().wrapping_add(p + 63));
                }
                prefetch(self.keys.words.as_ptr().wrapping_add(self.top_word));
            }
        }
        self.insert::<VICTIM>(key);
        self.key_of[id as usize] = key as u32;
        Outcome::Miss { evicted }
    }
}

/// How many accesses ahead `step` prefetches the bit of the next use it will set.
const PREFETCH: usize = 32;

/// Hint that `p` will be accessed soon.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults and has no visible effect, for
    // any address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl Policy for Opt {
    fn name(&self) -> String {
        "opt".into()
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.len
    }
    fn contains(&self, id: ObjId) -> bool {
        let k = self.key_of[id as usize];
        k != u32::MAX && self.keys.contains(k as usize)
    }

    #[inline]
    fn access(&mut self, id: ObjId) -> Outcome {
        let i = self.pos;
        match self.ids.get(i) {
            Some(&want) if want as u32 == id => {}
            Some(&want) => panic!("opt: access #{i} is id {id} but the future sequence has {want}"),
            None => panic!("opt: access #{i} is past the end of the future sequence"),
        }
        self.pos = i + 1;
        self.step::<true>(i, id as u16)
    }

    /// Checks the whole run against the future once, then steps without per-access
    /// checks.
    fn replay(&mut self, ids: &[u16], misses: &mut Vec<u32>) {
        let start = self.pos;
        let end = start + ids.len();
        if self.ids.get(start..end) != Some(ids) {
            // Let `access` report the first mismatch.
            for (j, &id) in ids.iter().enumerate() {
                if !self.access(id as ObjId).is_hit() {
                    misses.push(j as u32);
                }
            }
            return;
        }
        for (j, &id) in ids.iter().enumerate() {
            if !self.step::<false>(start + j, id).is_hit() {
                misses.push(j as u32);
            }
        }
        self.pos = end;
    }

    fn validate(&self) -> Result<(), String> {
        if self.len > self.capacity {
            return Err(format!(
                "opt: {} resident > capacity {}",
                self.len, self.capacity
            ));
        }
        for (id, &k) in self.key_of.iter().enumerate() {
            if k != u32::MAX && self.owner(k as usize) as usize != id {
                return Err(format!("opt: key_of[{id}] = {k} belongs to another id"));
            }
        }
        let resident: Vec<bool> = (0..self.key_of.len() as u32)
            .map(|id| self.contains(id))
            .collect();
        let n = resident.iter().filter(|&&r| r).count();
        if n != self.len {
            return Err(format!("opt: {n} residents for len {}", self.len));
        }
        // The keys must be exactly the next uses (from pos on) of the residents.
        let mut want = vec![false; self.keys.n];
        let mut seen = vec![false; resident.len()];
        for (p, &id) in self.ids.iter().enumerate().skip(self.pos) {
            if !seen[id as usize] {
                seen[id as usize] = true;
                want[p] = resident[id as usize];
            }
        }
        for (id, &r) in resident.iter().enumerate() {
            if r && !seen[id] {
                want[self.ids.len() + id] = true;
            }
        }
        for (k, &w) in want.iter().enumerate() {
            if self.keys.contains(k) != w {
                return Err(format!(
                    "opt: key {k} (id {}) is {} but should {}be",
                    self.owner(k),
                    if w { "missing" } else { "set" },
                    if w { "" } else { "not " }
                ));
            }
        }
        self.keys.validate()?;
        if self.len > 0 && self.top_word != self.keys.max_word() {
            return Err(format!(
                "opt: top word {} is not the largest key's",
                self.top_word
            ));
        }
        Ok(())
    }
}

/// A set of integers in `0..n`: a 64-ary tree of bit words, level 0 first, each level
/// above one bit per non-empty word of the level below, the last level a single word.
#[derive(Clone, Debug)]
struct BitTree {
    n: usize,
    /// All levels, level 0 at offset 0.
    words: Vec<u64>,
    /// Start of each level above 0 in `words` (`up[l - 1]` for level `l`).
    up: Vec<usize>,
}

impl BitTree {
    fn new(n: usize) -> Self {
        let mut size = n.div_ceil(64).max(1);
        let mut total = size;
        let mut up = Vec::new();
        while size > 1 {
            up.push(total);
            size = size.div_ceil(64);
            total += size;
        }
        BitTree {
            n,
            words: huge::zeroed_vec(total),
            up,
        }
    }

    #[inline(always)]
    fn contains(&self, k: usize) -> bool {
        self.words[k >> 6] >> (k & 63) & 1 != 0
    }

    /// Set `k`, and its bit in each level above while words were empty.
    #[inline(always)]
    fn insert(&mut self, k: usize) {
        let w = &mut self.words[k >> 6];
        let old = *w;
        *w = old | 1 << (k & 63);
        if old == 0 {
            self.set_up(k >> 6);
        }
    }

    #[inline(never)]
    fn set_up(&mut self, mut k: usize) {
        for &o in &self.up {
            let w = &mut self.words[o + (k >> 6)];
            let old = *w;
            *w = old | 1 << (k & 63);
            if old != 0 {
                return;
            }
            k >>= 6;
        }
    }

    /// Clear `k`, and its bit in each level above while words become empty. Returns
    /// whether `k`'s level-0 word became empty.
    #[inline(always)]
    fn remove(&mut self, k: usize) -> bool {
        let w = &mut self.words[k >> 6];
        *w &= !(1 << (k & 63));
        let emptied = *w == 0;
        if emptied {
            self.clear_up(k >> 6);
        }
        emptied
    }

    #[inline(never)]
    fn clear_up(&mut self, mut k: usize) {
        for &o in &self.up {
            let w = &mut self.words[o + (k >> 6)];
            *w &= !(1 << (k & 63));
            if *w != 0 {
                return;
            }
            k >>= 6;
        }
    }

    /// The level-0 word of the largest member (0 if the set is empty).
    #[inline(always)]
    fn max_word(&self) -> usize {
        let mut k = 0;
        for &o in self.up.iter().rev() {
            let w = self.words[o + k];
            if w == 0 {
                return 0;
            }
            k = k << 6 | (63 - w.leading_zeros() as usize);
        }
        k
    }

    /// The largest non-empty level-0 word below word `w` (0 if there is none): climb
    /// only until a word has a bit below the path, then descend by its highest bit. The
    /// next victim after an eviction is the old one's predecessor, usually in the same
    /// level-1 word, so this is one or two loads where a descent from the root is five.
    #[inline(always)]
    fn pred_word(&self, w: usize) -> usize {
        let mut k = w;
        for (l, &o) in self.up.iter().enumerate() {
            let below = self.words[o + (k >> 6)] & ((1u64 << (k & 63)) - 1);
            if below != 0 {
                let mut k = (k >> 6) << 6 | (63 - below.leading_zeros() as usize);
                for &o in self.up[..l].iter().rev() {
                    let x = self.words[o + k];
                    k = k << 6 | (63 - x.leading_zeros() as usize);
                }
                return k;
            }
            k >>= 6;
        }
        0
    }

    /// The largest member (the set must not be empty).
    #[cfg(test)]
    fn max(&self) -> usize {
        let k = self.max_word();
        k << 6 | (63 - self.words[k].leading_zeros() as usize)
    }

    /// Each upper bit is set exactly when its word below is non-empty; nothing >= n.
    fn validate(&self) -> Result<(), String> {
        let mut starts = vec![0];
        starts.extend(&self.up);
        starts.push(self.words.len());
        for l in 0..self.up.len() {
            let (lo, o, hi) = (starts[l], starts[l + 1], starts[l + 2]);
            for j in 0..(hi - o) * 64 {
                let below = lo + j < o && self.words[lo + j] != 0;
                if (self.words[o + j / 64] >> (j % 64) & 1 != 0) != below {
                    return Err(format!("opt: bit tree level {} bit {j} is wrong", l + 1));
                }
            }
        }
        for k in self.n..starts[1] * 64 {
            if self.contains(k) {
                return Err(format!("opt: bit tree holds {k} >= {}", self.n));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{BitTree, Opt};
    use crate::Policy;

    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    #[test]
    #[cfg_attr(miri, ignore)] // minutes under Miri
    fn bit_tree_against_a_sorted_set() {
        let mut x = 0x9E3779B97F4A7C15u64;
        for n in [1, 63, 64, 65, 4095, 4096, 4097, 300_000] {
            let mut t = BitTree::new(n);
            let mut s = std::collections::BTreeSet::new();
            for _ in 0..20_000 {
                let r = xorshift(&mut x);
                let k = (r % n as u64) as usize;
                if r >> 40 & 3 == 0 && !s.is_empty() {
                    let m = *s.iter().next_back().unwrap();
                    assert_eq!(t.max(), m);
                    s.remove(&m);
                    t.remove(m);
                } else if s.contains(&k) {
                    s.remove(&k);
                    t.remove(k);
                } else {
                    s.insert(k);
                    t.insert(k);
                }
                assert_eq!(t.contains(k), s.contains(&k));
                let w = k >> 6;
                let want = s.range(..w << 6).next_back().map_or(0, |&m| m >> 6);
                assert_eq!(t.pred_word(w), want, "n {n} below word {w}");
            }
            t.validate().unwrap();
            while let Some(&m) = s.iter().next_back() {
                assert_eq!(t.max(), m);
                s.remove(&m);
                t.remove(m);
            }
            assert!(t.words.iter().all(|&w| w == 0), "n {n}");
        }
    }

    /// `replay` (which skips the victims' ids) against `access`, in runs of random
    /// lengths: the same misses and residents, and a valid state, after every run.
    #[test]
    fn replay_matches_access() {
        let mut x = 0x2545F4914F6CDD1Du64;
        for _ in 0..300 {
            let n_ids = 1 + (xorshift(&mut x) % 40) as usize;
            let hot = 1 + xorshift(&mut x) % n_ids as u64;
            let len = (xorshift(&mut x) % 400) as usize;
            let t: Vec<u16> = (0..len)
                .map(|_| {
                    let r = xorshift(&mut x);
                    let m = if r & 1 == 0 { hot } else { n_ids as u64 };
                    ((r >> 8) % m) as u16
                })
                .collect();
            for cap in [0, 1, 2, n_ids / 2, n_ids - 1, n_ids, n_ids + 1] {
                let mut a = Opt::new(cap, n_ids, &t);
                let mut b = a.clone();
                let mut start = 0;
                while start < len {
                    let end = (start + 1 + (xorshift(&mut x) % 50) as usize).min(len);
                    let mut got = Vec::new();
                    b.replay(&t[start..end], &mut got);
                    let mut want = Vec::new();
                    for (j, &id) in t[start..end].iter().enumerate() {
                        if !a.access(id as u32).is_hit() {
                            want.push(j as u32);
                        }
                    }
                    assert_eq!(got, want, "cap {cap} run {start}..{end}");
                    b.validate().unwrap();
                    assert_eq!((b.len(), b.position()), (a.len(), end));
                    for id in 0..n_ids as u32 {
                        assert_eq!(b.contains(id), a.contains(id), "cap {cap} id {id}");
                    }
                    start = end;
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "access #2 is id 2 but the future sequence has 3")]
    fn replay_checks_the_future() {
        let t = [1u16, 2, 3, 1];
        let mut p = Opt::new(2, 4, &t);
        p.replay(&t[..2], &mut Vec::new());
        p.replay(&[2, 1], &mut Vec::new());
    }
}
