//! ARC (Megiddo & Modha, FAST'03) with capacity in objects, step for step as
//! libCacheSim's ARC.c so miss counts agree exactly:
//! - T1 (seen once recently) and T2 (seen at least twice) hold the resident objects,
//!   B1 and B2 are their ghosts (ids only); all four are LRU lists.
//! - `p` (the target size of T1) is a float, as in libCacheSim since it was
//!   cross-checked against trauzti/cache's ARC.py: a B1 hit adds max(|B2|/|B1|, 1), a
//!   B2 hit subtracts max(|B1|/|B2|, 1), both measured before the ghost is removed.
//! - REPLACE evicts T1's LRU into B1 if T1 is non-empty and (|T1| > p or (|T1| == p and
//!   the request hit B2)), or if T2 is empty (libCacheSim's `cond4`, which the paper
//!   does not need); otherwise T2's LRU into B2.
//! - A miss in all four lists (case IV): if |T1| + |B1| == c, drop B1's LRU and REPLACE,
//!   or, with B1 empty, evict T1's LRU without a ghost; otherwise, if the four lists
//!   hold 2c, drop B2's LRU, then REPLACE.
//!
//! Ghost lists only exist once the cache is full, and it stays full, so a ghost hit
//! always needs a REPLACE.

use crate::list::{Lists, Raw};
use crate::{ObjId, Outcome, Policy};

/// An object's state is the number of the list that holds it (a data list's ghost is
/// two further on), or NONE.
const T1: u8 = 0;
const T2: u8 = 1;
const B1: u8 = 2;
const B2: u8 = 3;
const NONE: u8 = 4;

#[derive(Clone, Debug)]
pub struct Arc {
    capacity: usize,
    /// With a nil node: `Raw` follows its links without any check.
    lists: Lists<true>,
    /// T1, T2, B1, B2 or NONE, for every node of `lists` (objects first).
    state: Vec<u8>,
    counts: Counts,
}

/// The lists' lengths and `p`: what a run keeps in registers.
#[derive(Clone, Copy, Debug)]
struct Counts {
    t1: usize,
    t2: usize,
    b1: usize,
    b2: usize,
    p: f64,
}

/// A count as a float, exactly (counts are far below 2^53), through i64: x86 converts
/// that in one instruction, an unsigned 64-bit integer in six.
#[inline(always)]
fn float(n: usize) -> f64 {
    n as i64 as f64
}

impl Arc {
    pub fn new(capacity: usize, n_ids: usize) -> Self {
        let lists = Lists::<true>::new(n_ids, 4);
        Arc {
            capacity,
            state: vec![NONE; lists.nodes()],
            lists,
            counts: Counts {
                t1: 0,
                t2: 0,
                b1: 0,
                b2: 0,
                p: 0.0,
            },
        }
    }

    /// The adaptive target size of T1.
    pub fn p(&self) -> f64 {
        self.counts.p
    }

    /// Run `f` over a [`Run`] of this cache, whose counts live in locals (registers)
    /// until it ends: kept in the struct, every access loaded and stored them.
    #[inline(always)]
    fn run<R>(&mut self, f: impl FnOnce(&mut Run) -> R) -> R {
        let mut run = Run {
            lists: self.lists.raw(),
            state: &mut self.state,
            c: self.capacity,
            k: self.counts,
        };
        let r = f(&mut run);
        self.counts = run.k;
        r
    }
}

/// ARC over the lists and states without bounds checks. Sound whatever its logic: the
/// accessed id is an object (the caller checks), every other node it touches is read
/// from the links (which hold only nodes: nil is one), and `state` has an entry for
/// every node, sentinels and nil included (what `back` gives for an empty list, and
/// the links of an object on no list).
struct Run<'a> {
    lists: Raw<'a, true>,
    state: &'a mut [u8],
    c: usize,
    k: Counts,
}

impl Run<'_> {
    /// # Safety
    /// `x` is a node.
    #[inline(always)]
    unsafe fn set_state(&mut self, x: u32, s: u8) {
        *self.state.get_unchecked_mut(x as usize) = s;
    }

    /// Move the LRU of `list` (T1 or T2) to the front of its ghost list.
    #[inline(always)]
    fn demote(&mut self, list: u8) -> u32 {
        // Folds away: `list` is a constant.
        assert!(list == T1 || list == T2);
        // SAFETY: the lists exist (checked); the victim is read from the links.
        unsafe {
            let victim = self.lists.back(list as usize);
            self.lists.move_to_front(list as usize + 2, victim);
            self.set_state(victim, list + 2);
            victim
        }
    }

    /// The paper's REPLACE (libCacheSim `_ARC_replace`).
    #[inline(always)]
    fn replace(&mut self, hit_in_b2: bool) -> u32 {
        let k = self.k;
        let t1 = float(k.t1);
        if (k.t1 > 0 && (t1 > k.p || (t1 == k.p && hit_in_b2))) || k.t2 == 0 {
            // The counts last: ending both branches alike, the list work would be
            // merged into one path that picks its list by index, which is slower.
            let victim = self.demote(T1);
            self.k.t1 -= 1;
            self.k.b1 += 1;
            victim
        } else {
            let victim = self.demote(T2);
            self.k.t2 -= 1;
            self.k.b2 += 1;
            victim
        }
    }

    /// Drop the LRU of a ghost list, or T1's LRU without a ghost: it leaves the cache's
    /// history.
    #[inline(always)]
    fn forget(&mut self, list: u8) -> u32 {
        // Folds away: `list` is a constant.
        match list {
            T1 => self.k.t1 -= 1,
            B1 => self.k.b1 -= 1,
            B2 => self.k.b2 -= 1,
            _ => unreachable!("T2 is never forgotten"),
        }
        // SAFETY: the list exists (checked); the object is read from the links.
        unsafe {
            let id = self.lists.back(list as usize);
            self.lists.unlink(id);
            self.set_state(id, NONE);
            id
        }
    }

    /// Case IV: the object is in none of the four lists and the cache is full.
    #[inline(always)]
    fn evict_miss_on_all(&mut self) -> u32 {
        let (c, k) = (self.c, self.k);
        if k.t1 + k.b1 + 1 > c {
            if k.b1 > 0 {
                self.forget(B1);
                self.replace(false)
            } else {
                self.forget(T1)
            }
        } else {
            if k.t1 + k.b1 + k.t2 + k.b2 >= 2 * c && k.b2 > 0 {
                self.forget(B2);
            }
            self.replace(false)
        }
    }

    /// Access object `id`.
    ///
    /// # Safety
    /// `id` is a node (a checked object id is).
    #[inline(always)]
    unsafe fn access(&mut self, id: u32) -> Outcome {
        let state = *self.state.get_unchecked(id as usize);
        if state <= T2 {
            // Either hit moves the object to T2's front; one path, no branch on which.
            let from_t1 = (state == T1) as usize;
            self.k.t1 -= from_t1;
            self.k.t2 += from_t1;
            self.set_state(id, T2);
            self.lists.move_to_front(T2 as usize, id);
            return Outcome::Hit;
        }
        let c = self.c;
        let evicted = if state == B1 {
            let k = &mut self.k;
            let delta = (float(k.b2) / float(k.b1)).max(1.0);
            k.p = (k.p + delta).min(float(c));
            k.b1 -= 1;
            Some(self.ghost_hit(id, false))
        } else if state == B2 {
            let k = &mut self.k;
            let delta = (float(k.b1) / float(k.b2)).max(1.0);
            k.p = (k.p - delta).max(0.0);
            k.b2 -= 1;
            Some(self.ghost_hit(id, true))
        } else {
            if c == 0 {
                return Outcome::Miss { evicted: None };
            }
            let evicted = (self.k.t1 + self.k.t2 == c).then(|| self.evict_miss_on_all());
            self.lists.push_front(T1 as usize, id);
            self.set_state(id, T1);
            self.k.t1 += 1;
            evicted
        };
        Outcome::Miss { evicted }
    }

    /// After a hit in B1 or B2 has adapted `p`: REPLACE, then the object moves from its
    /// ghost list (where REPLACE never looks) to T2's front.
    ///
    /// # Safety
    /// `id` is a node.
    #[inline(always)]
    unsafe fn ghost_hit(&mut self, id: u32, in_b2: bool) -> u32 {
        let victim = self.replace(in_b2);
        self.lists.move_to_front(T2 as usize, id);
        self.set_state(id, T2);
        self.k.t2 += 1;
        victim
    }
}

impl Policy for Arc {
    fn name(&self) -> String {
        "arc".into()
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.counts.t1 + self.counts.t2
    }
    fn contains(&self, id: ObjId) -> bool {
        self.state[..self.lists.objects()][id as usize] <= T2
    }

    #[inline(always)]
    fn access(&mut self, id: ObjId) -> Outcome {
        assert!((id as usize) < self.lists.objects(), "id {id} out of range");
        // SAFETY: `id` is an object (checked).
        self.run(|r| unsafe { r.access(id) })
    }

    /// The run's ids are checked once, its counts kept in registers, and its misses
    /// written into room reserved once (faster than access by access: docs/performance.md).
    fn replay(&mut self, ids: &[u16], misses: &mut Vec<u32>) {
        let max = ids.iter().fold(0, |m, &id| m.max(id));
        assert!(
            ids.is_empty() || (max as usize) < self.lists.objects(),
            "id {max} out of range"
        );
        misses.reserve(ids.len());
        let room = &mut misses.spare_capacity_mut()[..ids.len()];
        let missed = self.run(|r| {
            let mut missed = 0;
            for (i, &id) in ids.iter().enumerate() {
                // SAFETY: every id is an object (checked).
                if !unsafe { r.access(id as u32) }.is_hit() {
                    // SAFETY: missed <= i < ids.len() == room.len().
                    unsafe { room.get_unchecked_mut(missed).write(i as u32) };
                    missed += 1;
                }
            }
            missed
        });
        // SAFETY: the first `missed` slots of the room were written.
        unsafe { misses.set_len(misses.len() + missed) };
    }

    fn validate(&self) -> Result<(), String> {
        let lists = self.lists.validate(4)?;
        let Counts { t1, t2, b1, b2, p } = self.counts;
        let counts = [t1, t2, b1, b2];
        for (i, (l, &n)) in lists.iter().zip(counts.iter()).enumerate() {
            if l.len() != n {
                return Err(format!(
                    "arc: list {i} holds {} but its count is {n}",
                    l.len()
                ));
            }
            if let Some(&id) = l.iter().find(|&&id| self.state[id as usize] != i as u8) {
                return Err(format!(
                    "arc: {id} on list {i} has state {}",
                    self.state[id as usize]
                ));
            }
        }
        let on_lists: usize = counts.iter().sum();
        let flagged = self.state.iter().filter(|&&s| s != NONE).count();
        if on_lists != flagged {
            return Err(format!("arc: {flagged} nodes flagged, {on_lists} on lists"));
        }
        if t1 + t2 > self.capacity {
            return Err(format!(
                "arc: {} resident > capacity {}",
                t1 + t2,
                self.capacity
            ));
        }
        if (b1 + b2 > 0) && t1 + t2 != self.capacity {
            return Err("arc: ghosts exist but the cache is not full".into());
        }
        if !(0.0..=self.capacity as f64).contains(&p) {
            return Err(format!("arc: p = {p} out of [0, c]"));
        }
        Ok(())
    }
}
