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

use crate::list::Lists;
use crate::{ObjId, Outcome, Policy};

const NONE: u8 = 0;
const T1: u8 = 1;
const T2: u8 = 2;
const B1: u8 = 3;
const B2: u8 = 4;

/// List numbers inside `Lists` (one sentinel each).
const L_T1: usize = 0;
const L_T2: usize = 1;
const L_B1: usize = 2;
const L_B2: usize = 3;

#[derive(Clone, Debug)]
pub struct Arc {
    capacity: usize,
    lists: Lists,
    /// NONE, T1, T2, B1 or B2.
    state: Vec<u8>,
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
        Arc {
            capacity,
            lists: Lists::new(n_ids, 4),
            state: vec![NONE; n_ids],
            t1: 0,
            t2: 0,
            b1: 0,
            b2: 0,
            p: 0.0,
        }
    }

    /// The adaptive target size of T1.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// Move the LRU of `from` (a data list) to the front of its ghost list.
    #[inline(always)]
    fn demote_to_ghost(&mut self, from_t1: bool) -> u32 {
        let (list, ghost, ghost_state) = if from_t1 {
            (L_T1, L_B1, B1)
        } else {
            (L_T2, L_B2, B2)
        };
        let victim = self.lists.back(list).expect("REPLACE on an empty list");
        self.lists.move_to_front(ghost, victim);
        self.state[victim as usize] = ghost_state;
        if from_t1 {
            self.t1 -= 1;
            self.b1 += 1;
        } else {
            self.t2 -= 1;
            self.b2 += 1;
        }
        victim
    }

    /// The paper's REPLACE (libCacheSim `_ARC_replace`).
    #[inline(always)]
    fn replace(&mut self, hit_in_b2: bool) -> u32 {
        let t1 = float(self.t1);
        let from_t1 = (self.t1 > 0 && (t1 > self.p || (t1 == self.p && hit_in_b2))) || self.t2 == 0;
        self.demote_to_ghost(from_t1)
    }

    #[inline(always)]
    fn forget(&mut self, ghost: usize) {
        let id = self.lists.back(ghost).expect("forget from an empty ghost");
        self.lists.unlink(id);
        self.state[id as usize] = NONE;
        if ghost == L_B1 {
            self.b1 -= 1;
        } else {
            self.b2 -= 1;
        }
    }

    /// Case IV: the object is in none of the four lists and the cache is full.
    #[inline(always)]
    fn evict_miss_on_all(&mut self) -> u32 {
        let c = self.capacity;
        if self.t1 + self.b1 + 1 > c {
            if self.b1 > 0 {
                self.forget(L_B1);
                self.replace(false)
            } else {
                let victim = self.lists.back(L_T1).expect("T1 holds the cache");
                self.lists.unlink(victim);
                self.state[victim as usize] = NONE;
                self.t1 -= 1;
                victim
            }
        } else {
            if self.t1 + self.b1 + self.t2 + self.b2 >= 2 * c && self.b2 > 0 {
                self.forget(L_B2);
            }
            self.replace(false)
        }
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
        self.t1 + self.t2
    }
    fn contains(&self, id: ObjId) -> bool {
        matches!(self.state[id as usize], T1 | T2)
    }

    #[inline(always)]
    fn access(&mut self, id: ObjId) -> Outcome {
        let c = self.capacity;
        let state = self.state[id as usize];
        if state == T1 || state == T2 {
            // Either hit moves the object to T2's front; one path, no branch on which.
            let from_t1 = (state == T1) as usize;
            self.t1 -= from_t1;
            self.t2 += from_t1;
            self.state[id as usize] = T2;
            self.lists.move_to_front(L_T2, id);
            return Outcome::Hit;
        }
        match state {
            B1 => {
                let delta = (float(self.b2) / float(self.b1)).max(1.0);
                self.p = (self.p + delta).min(float(c));
                self.b1 -= 1;
                let victim = self.replace(false);
                // Out of B1 (where REPLACE never looks) to T2's front.
                self.lists.move_to_front(L_T2, id);
                self.state[id as usize] = T2;
                self.t2 += 1;
                Outcome::Miss {
                    evicted: Some(victim),
                }
            }
            B2 => {
                let delta = (float(self.b1) / float(self.b2)).max(1.0);
                self.p = (self.p - delta).max(0.0);
                self.b2 -= 1;
                let victim = self.replace(true);
                self.lists.move_to_front(L_T2, id);
                self.state[id as usize] = T2;
                self.t2 += 1;
                Outcome::Miss {
                    evicted: Some(victim),
                }
            }
            _ => {
                if c == 0 {
                    return Outcome::Miss { evicted: None };
                }
                let evicted = (self.t1 + self.t2 == c).then(|| self.evict_miss_on_all());
                self.lists.push_front(L_T1, id);
                self.state[id as usize] = T1;
                self.t1 += 1;
                Outcome::Miss { evicted }
            }
        }
    }

    fn validate(&self) -> Result<(), String> {
        let lists = self.lists.validate(4)?;
        let counts = [self.t1, self.t2, self.b1, self.b2];
        for (i, (l, &n)) in lists.iter().zip(counts.iter()).enumerate() {
            if l.len() != n {
                return Err(format!(
                    "arc: list {i} holds {} but its count is {n}",
                    l.len()
                ));
            }
            let want = [T1, T2, B1, B2][i];
            if let Some(&id) = l.iter().find(|&&id| self.state[id as usize] != want) {
                return Err(format!(
                    "arc: {id} on list {i} has state {}",
                    self.state[id as usize]
                ));
            }
        }
        let on_lists: usize = counts.iter().sum();
        let flagged = self.state.iter().filter(|&&s| s != NONE).count();
        if on_lists != flagged {
            return Err(format!("arc: {flagged} ids flagged, {on_lists} on lists"));
        }
        if self.t1 + self.t2 > self.capacity {
            return Err(format!(
                "arc: {} resident > capacity {}",
                self.t1 + self.t2,
                self.capacity
            ));
        }
        if (self.b1 + self.b2 > 0) && self.t1 + self.t2 != self.capacity {
            return Err("arc: ghosts exist but the cache is not full".into());
        }
        if !(0.0..=self.capacity as f64).contains(&self.p) {
            return Err(format!("arc: p = {} out of [0, c]", self.p));
        }
        Ok(())
    }
}
