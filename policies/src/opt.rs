//! Belady's MIN with demand paging: the missed object is always inserted, and the
//! victim is the resident whose next use is farthest in the future (never used again
//! first). Same counts as libCacheSim's Belady.c, which also always inserts.
//!
//! Next uses come from one backward pass over the exact sequence that will be
//! replayed (a flat array of last-seen positions, no hashing). Residents sit in an
//! indexed binary max-heap of packed keys `next_use << 16 | id` (ids are < 65536), so a
//! single u64 compare orders by next use and breaks the only possible tie, between
//! objects never used again, towards the larger id. A hit moves its object's key
//! later, which in a max-heap is a sift-up; a miss replaces the root.

use crate::list::NIL;
use crate::{ObjId, Outcome, Policy};

/// Next use of an object that is never used again (larger than any position).
const NEVER: u64 = (1 << 48) - 1;
const ID_BITS: u32 = 16;
const ID_MASK: u64 = (1 << ID_BITS) - 1;

#[derive(Clone, Debug)]
pub struct Opt {
    capacity: usize,
    /// The sequence this policy was built for, and where in it we are.
    ids: Vec<u16>,
    pos: usize,
    /// `next[i]`: position of the next access of `ids[i]` after `i`, or `u32::MAX`.
    next: Vec<u32>,
    heap: Vec<u64>,
    /// Index in `heap` of each resident id, NIL if not resident.
    slot: Vec<u32>,
}

impl Opt {
    /// A Belady cache of `capacity` objects that will replay exactly `future`.
    ///
    /// Panics if an id of `future` is `>= n_ids`, if `n_ids > 65536`, or if `future`
    /// has `u32::MAX` accesses or more.
    pub fn new(capacity: usize, n_ids: usize, future: &[u16]) -> Self {
        assert!(n_ids <= 1 << ID_BITS, "opt: n_ids {n_ids} > 65536");
        assert!(
            future.len() < u32::MAX as usize,
            "opt: trace too long for u32 positions"
        );
        let mut last = vec![u32::MAX; n_ids];
        let mut next = vec![u32::MAX; future.len()];
        for i in (0..future.len()).rev() {
            let id = future[i] as usize;
            assert!(
                id < n_ids,
                "opt: id {id} in the future sequence is >= n_ids {n_ids}"
            );
            next[i] = last[id];
            last[id] = i as u32;
        }
        Opt {
            capacity,
            ids: future.to_vec(),
            pos: 0,
            next,
            heap: Vec::with_capacity(capacity.min(n_ids)),
            slot: vec![NIL; n_ids],
        }
    }

    /// How many accesses of the future sequence have been replayed.
    pub fn position(&self) -> usize {
        self.pos
    }

    #[inline]
    fn sift_up(&mut self, mut i: usize) {
        let key = self.heap[i];
        while i > 0 {
            let parent = (i - 1) / 2;
            let pk = self.heap[parent];
            if pk >= key {
                break;
            }
            self.heap[i] = pk;
            self.slot[(pk & ID_MASK) as usize] = i as u32;
            i = parent;
        }
        self.heap[i] = key;
        self.slot[(key & ID_MASK) as usize] = i as u32;
    }

    #[inline]
    fn sift_down(&mut self, mut i: usize) {
        let key = self.heap[i];
        let n = self.heap.len();
        loop {
            let l = 2 * i + 1;
            if l >= n {
                break;
            }
            let r = l + 1;
            let c = if r < n && self.heap[r] > self.heap[l] {
                r
            } else {
                l
            };
            let ck = self.heap[c];
            if ck <= key {
                break;
            }
            self.heap[i] = ck;
            self.slot[(ck & ID_MASK) as usize] = i as u32;
            i = c;
        }
        self.heap[i] = key;
        self.slot[(key & ID_MASK) as usize] = i as u32;
    }
}

impl Policy for Opt {
    fn name(&self) -> String {
        "opt".into()
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.heap.len()
    }
    fn contains(&self, id: ObjId) -> bool {
        self.slot[id as usize] != NIL
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
        let nu = self.next[i];
        let key = (if nu == u32::MAX { NEVER } else { nu as u64 }) << ID_BITS | id as u64;
        let s = self.slot[id as usize];
        if s != NIL {
            // The old key was `i` (this access); the new one is later: sift up.
            self.heap[s as usize] = key;
            self.sift_up(s as usize);
            return Outcome::Hit;
        }
        if self.capacity == 0 {
            return Outcome::Miss { evicted: None };
        }
        if self.heap.len() < self.capacity {
            self.heap.push(key);
            let last = self.heap.len() - 1;
            self.sift_up(last);
            return Outcome::Miss { evicted: None };
        }
        let victim = (self.heap[0] & ID_MASK) as u32;
        self.slot[victim as usize] = NIL;
        self.heap[0] = key;
        self.sift_down(0);
        Outcome::Miss {
            evicted: Some(victim),
        }
    }

    fn validate(&self) -> Result<(), String> {
        let n = self.heap.len();
        if n > self.capacity {
            return Err(format!("opt: {n} resident > capacity {}", self.capacity));
        }
        for i in 0..n {
            let id = (self.heap[i] & ID_MASK) as usize;
            if self.slot[id] != i as u32 {
                return Err(format!(
                    "opt: heap[{i}] holds {id} whose slot is {}",
                    self.slot[id]
                ));
            }
            if i > 0 && self.heap[(i - 1) / 2] < self.heap[i] {
                return Err(format!("opt: heap order broken at {i}"));
            }
            if (self.heap[i] >> ID_BITS) < self.pos as u64 {
                return Err(format!("opt: {id} has a next use in the past"));
            }
        }
        let flagged = self.slot.iter().filter(|&&s| s != NIL).count();
        if flagged != n {
            return Err(format!("opt: {flagged} slots set for {n} heap entries"));
        }
        Ok(())
    }
}
