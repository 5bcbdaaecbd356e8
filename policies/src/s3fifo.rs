//! S3-FIFO (Yang et al., SOSP'23), following libCacheSim's S3FIFO.c with its defaults
//! (`small-size-ratio=0.10, ghost-size-ratio=0.90, move-to-main-threshold=2`):
//! - a small FIFO S of floor(0.1 c) objects, a main FIFO M of c - |S| objects run as a
//!   CLOCK with a 2-bit counter, and a ghost FIFO G of floor(0.9 c) ids (the size of M,
//!   up to rounding) holding what S evicted;
//! - a hit adds one to the object's frequency, capped at 3 (libCacheSim counts on but
//!   only ever looks at `>= 2` in S and `min(freq, 3)` in M, so the cap is invisible);
//! - a miss inserts at M's head if the id was in G (and removes it from G), otherwise at
//!   S's head; before the first eviction, once S is full, new objects go to M instead
//!   (this is what S3FIFO.c does, unlike S3FIFOv0.c and the paper);
//! - eviction works on M if M is over its size or S is empty, else on S;
//! - evicting from S: the tail moves to M's head (frequency reset to 0) if its frequency
//!   is >= 2 (freq > 1), else it leaves the cache and its id enters G (G drops its
//!   oldest id when full); this repeats until one object has left or S is empty;
//! - evicting from M: a tail with frequency f >= 1 is reinserted at M's head with
//!   min(f, 3) - 1, a tail with 0 leaves the cache (not into G).
//!
//! Deviations from S3FIFO.c, both only for small caches:
//! - S3FIFO.c refuses a cache with floor(0.1 c) == 0 (c < 10, it aborts); here S gets at
//!   least one object, so every capacity >= 1 works.
//! - S3FIFO.c never admits an object "whose size is >= the small FIFO's size" into S, so
//!   with unit sizes and 10 <= c < 20 (|S| = 1) it admits nothing at all and misses
//!   every access. That guard is meant for byte-sized caches; here a one-object S
//!   admits. For c >= 20 the two agree exactly.

use crate::list::Lists;
use crate::{ObjId, Outcome, Policy};

const NONE: u8 = 0;
const SMALL: u8 = 1;
const MAIN: u8 = 2;
const GHOST: u8 = 3;

const L_SMALL: usize = 0;
const L_MAIN: usize = 1;
const L_GHOST: usize = 2;

const MOVE_TO_MAIN: u8 = 2;
const MAX_FREQ: u8 = 3;

/// (small, main, ghost) sizes for capacity `c`, libCacheSim's rounding.
pub(crate) fn s3fifo_sizes(c: usize) -> (usize, usize, usize) {
    if c == 0 {
        return (0, 0, 0);
    }
    let small = ((c as f64 * 0.1) as usize).max(1);
    let ghost = (c as f64 * 0.9) as usize;
    (small, c - small, ghost)
}

#[derive(Clone, Debug)]
pub struct S3Fifo {
    capacity: usize,
    small_cap: usize,
    main_cap: usize,
    ghost_cap: usize,
    lists: Lists,
    /// NONE, SMALL, MAIN or GHOST.
    loc: Vec<u8>,
    freq: Vec<u8>,
    n_small: usize,
    n_main: usize,
    n_ghost: usize,
    has_evicted: bool,
}

impl S3Fifo {
    pub fn new(capacity: usize, n_ids: usize) -> Self {
        let (small_cap, main_cap, ghost_cap) = s3fifo_sizes(capacity);
        S3Fifo {
            capacity,
            small_cap,
            main_cap,
            ghost_cap,
            lists: Lists::new(n_ids, 3),
            loc: vec![NONE; n_ids],
            freq: vec![0; n_ids],
            n_small: 0,
            n_main: 0,
            n_ghost: 0,
            has_evicted: false,
        }
    }

    #[inline]
    fn remember_in_ghost(&mut self, id: u32) {
        if self.ghost_cap == 0 {
            self.loc[id as usize] = NONE;
            return;
        }
        if self.n_ghost == self.ghost_cap {
            let old = self.lists.back(L_GHOST).expect("a full ghost has a tail");
            self.lists.unlink(old);
            self.loc[old as usize] = NONE;
            self.n_ghost -= 1;
        }
        self.lists.push_front(L_GHOST, id);
        self.loc[id as usize] = GHOST;
        self.n_ghost += 1;
    }

    /// One `S3FIFO_evict` call: returns the object that left, if any did.
    #[inline]
    fn evict_once(&mut self) -> Option<u32> {
        self.has_evicted = true;
        if self.n_main > self.main_cap || self.n_small == 0 {
            while let Some(t) = self.lists.back(L_MAIN) {
                let f = self.freq[t as usize];
                self.lists.unlink(t);
                if f >= 1 {
                    self.lists.push_front(L_MAIN, t);
                    self.freq[t as usize] = f.min(MAX_FREQ) - 1;
                } else {
                    self.loc[t as usize] = NONE;
                    self.n_main -= 1;
                    return Some(t);
                }
            }
            None
        } else {
            while let Some(t) = self.lists.back(L_SMALL) {
                self.lists.unlink(t);
                self.n_small -= 1;
                if self.freq[t as usize] >= MOVE_TO_MAIN {
                    self.lists.push_front(L_MAIN, t);
                    self.loc[t as usize] = MAIN;
                    self.freq[t as usize] = 0;
                    self.n_main += 1;
                } else {
                    self.remember_in_ghost(t);
                    return Some(t);
                }
            }
            None
        }
    }
}

impl Policy for S3Fifo {
    fn name(&self) -> String {
        "s3fifo".into()
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.n_small + self.n_main
    }
    fn contains(&self, id: ObjId) -> bool {
        matches!(self.loc[id as usize], SMALL | MAIN)
    }

    #[inline(always)]
    fn access(&mut self, id: ObjId) -> Outcome {
        let loc = self.loc[id as usize];
        if loc == SMALL || loc == MAIN {
            let f = &mut self.freq[id as usize];
            *f = (*f + 1).min(MAX_FREQ);
            return Outcome::Hit;
        }
        if self.capacity == 0 {
            return Outcome::Miss { evicted: None };
        }
        let hit_on_ghost = loc == GHOST;
        if hit_on_ghost {
            self.lists.unlink(id);
            self.loc[id as usize] = NONE;
            self.n_ghost -= 1;
        }
        let mut evicted = None;
        while self.n_small + self.n_main >= self.capacity {
            if let Some(v) = self.evict_once() {
                evicted = Some(v);
            }
        }
        let into_main = hit_on_ghost || (!self.has_evicted && self.n_small >= self.small_cap);
        if into_main {
            self.lists.push_front(L_MAIN, id);
            self.loc[id as usize] = MAIN;
            self.n_main += 1;
        } else {
            self.lists.push_front(L_SMALL, id);
            self.loc[id as usize] = SMALL;
            self.n_small += 1;
        }
        self.freq[id as usize] = 0;
        Outcome::Miss { evicted }
    }

    fn validate(&self) -> Result<(), String> {
        let lists = self.lists.validate(3)?;
        let want = [
            (SMALL, self.n_small),
            (MAIN, self.n_main),
            (GHOST, self.n_ghost),
        ];
        for (l, &(loc, n)) in lists.iter().zip(want.iter()) {
            if l.len() != n {
                return Err(format!(
                    "s3fifo: list {loc} holds {} but count is {n}",
                    l.len()
                ));
            }
            if let Some(&id) = l.iter().find(|&&id| self.loc[id as usize] != loc) {
                return Err(format!(
                    "s3fifo: {id} on list {loc} has loc {}",
                    self.loc[id as usize]
                ));
            }
        }
        if self.loc.iter().filter(|&&l| l != NONE).count()
            != self.n_small + self.n_main + self.n_ghost
        {
            return Err("s3fifo: loc flags do not match the lists".into());
        }
        if self.n_small + self.n_main > self.capacity || self.n_ghost > self.ghost_cap {
            return Err("s3fifo: over capacity".into());
        }
        if self.freq.iter().any(|&f| f > MAX_FREQ) {
            return Err("s3fifo: frequency above 3".into());
        }
        Ok(())
    }
}
