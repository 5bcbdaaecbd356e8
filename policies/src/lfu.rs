//! Least frequently used, ties broken by least recently used, in O(1): the classic
//! frequency-bucket structure (as libCacheSim's LFU.c). Each bucket holds the residents
//! of one access count in the order they reached it, which is the order of their last
//! access, so the front of the lowest bucket is the LFU victim and, among equals, the
//! least recently used one: the same tie rule as LFU.c (FIFO within a frequency).
//! Like LFU.c, counts are forgotten on eviction (a returning object starts at 1).
//!
//! Buckets come from a fixed pool (at most capacity + 1 are ever alive: one per
//! distinct count among residents, plus the one a hit is moving into), and both the
//! objects of a bucket and the ascending chain of buckets are index-linked lists in
//! one arena: objects are nodes `0..n`, bucket `b` is the sentinel of list `b`.

use crate::list::{Lists, NIL};
use crate::{ObjId, Outcome, Policy};

#[derive(Clone, Debug)]
pub struct Lfu {
    capacity: usize,
    len: usize,
    /// Objects of each bucket, oldest first (list `b` = bucket `b`).
    objs: Lists,
    /// Bucket of each resident id, NIL if not resident.
    bucket: Vec<u32>,
    /// The chain of live buckets in ascending count (list 0 of a separate arena).
    chain: Lists,
    count: Vec<u64>,
    free: Vec<u32>,
}

impl Lfu {
    pub fn new(capacity: usize, n_ids: usize) -> Self {
        let pool = capacity.min(n_ids) + 1;
        Lfu {
            capacity,
            len: 0,
            objs: Lists::new(n_ids, pool),
            bucket: vec![NIL; n_ids],
            chain: Lists::new(pool, 1),
            count: vec![0; pool],
            free: (0..pool as u32).rev().collect(),
        }
    }

    /// A bucket for `count`, chained right after `after` (None = at the front).
    #[inline]
    fn new_bucket(&mut self, count: u64, after: Option<u32>) -> u32 {
        let b = self.free.pop().expect("lfu: bucket pool exhausted");
        self.count[b as usize] = count;
        match after {
            None => self.chain.push_front(0, b),
            Some(a) => self.chain.insert_after(a, b),
        }
        b
    }

    #[inline(always)] // every access; left to itself, the compiler calls it
    fn drop_if_empty(&mut self, b: u32) {
        if self.objs.front(b as usize).is_none() {
            self.chain.unlink(b);
            self.free.push(b);
        }
    }

    /// Access count of a resident id (for tests).
    pub fn count_of(&self, id: ObjId) -> Option<u64> {
        let b = self.bucket[id as usize];
        (b != NIL).then(|| self.count[b as usize])
    }
}

impl Policy for Lfu {
    fn name(&self) -> String {
        "lfu".into()
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.len
    }
    fn contains(&self, id: ObjId) -> bool {
        self.bucket[id as usize] != NIL
    }

    #[inline]
    fn access(&mut self, id: ObjId) -> Outcome {
        let b = self.bucket[id as usize];
        if b != NIL {
            let want = self.count[b as usize] + 1;
            let target = match self.chain.next_of(b) {
                Some(nb) if self.count[nb as usize] == want => nb,
                _ => self.new_bucket(want, Some(b)),
            };
            self.objs.unlink(id);
            self.objs.push_back(target as usize, id);
            self.bucket[id as usize] = target;
            self.drop_if_empty(b);
            return Outcome::Hit;
        }
        if self.capacity == 0 {
            return Outcome::Miss { evicted: None };
        }
        let mut evicted = None;
        if self.len == self.capacity {
            let low = self.chain.front(0).expect("a full cache has a bucket");
            let victim = self
                .objs
                .front(low as usize)
                .expect("live buckets are non-empty");
            self.objs.unlink(victim);
            self.bucket[victim as usize] = NIL;
            self.drop_if_empty(low);
            evicted = Some(victim);
        } else {
            self.len += 1;
        }
        let first = match self.chain.front(0) {
            Some(f) if self.count[f as usize] == 1 => f,
            _ => self.new_bucket(1, None),
        };
        self.objs.push_back(first as usize, id);
        self.bucket[id as usize] = first;
        Outcome::Miss { evicted }
    }

    fn validate(&self) -> Result<(), String> {
        let chain = self.chain.validate(1)?.pop().unwrap_or_default();
        let buckets = self.objs.validate(self.count.len())?;
        let mut prev = 0;
        let mut total = 0;
        for &b in &chain {
            let c = self.count[b as usize];
            if c <= prev {
                return Err(format!(
                    "lfu: bucket counts not ascending ({prev} then {c})"
                ));
            }
            prev = c;
            let objs = &buckets[b as usize];
            if objs.is_empty() {
                return Err(format!("lfu: live bucket {b} (count {c}) is empty"));
            }
            if let Some(&id) = objs.iter().find(|&&id| self.bucket[id as usize] != b) {
                return Err(format!(
                    "lfu: {id} in bucket {b} but points to {}",
                    self.bucket[id as usize]
                ));
            }
            total += objs.len();
        }
        let free_nonempty = self.free.iter().any(|&b| !buckets[b as usize].is_empty());
        if free_nonempty || chain.len() + self.free.len() != self.count.len() {
            return Err("lfu: bucket pool accounting broken".into());
        }
        let flagged = self.bucket.iter().filter(|&&b| b != NIL).count();
        if total != self.len || flagged != self.len || self.len > self.capacity {
            return Err(format!(
                "lfu: {total} in buckets, {flagged} flagged, len {}",
                self.len
            ));
        }
        Ok(())
    }
}
