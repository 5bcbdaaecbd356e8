//! CLOCK, one-bit second chance, as libCacheSim's Clock.c with its defaults
//! (`n-bit-counter=1`, `init-freq=0`): a new object enters with its bit clear, a hit
//! sets the bit, eviction looks at the oldest object: bit set -> clear it and give it a
//! second chance (it becomes the newest), bit clear -> evict.
//!
//! libCacheSim keeps a queue and moves second-chance objects from the tail to the head.
//! Here the queue is a ring of frames with a hand at the tail: moving the tail to the
//! head is just advancing the hand, and the new object takes the victim's frame behind
//! the hand. Same order, same victims, no list surgery.

use crate::fifo::validate_ring;
use crate::{ObjId, Outcome, Policy};

const ABSENT: u8 = 0;
const CLEAR: u8 = 1;
const SET: u8 = 2;

#[derive(Clone, Debug)]
pub struct Clock {
    capacity: usize,
    frames: Vec<u32>,
    hand: usize,
    /// ABSENT, or resident with the reference bit CLEAR or SET.
    state: Vec<u8>,
}

impl Clock {
    pub fn new(capacity: usize, n_ids: usize) -> Self {
        Clock {
            capacity,
            frames: Vec::with_capacity(capacity.min(n_ids)),
            hand: 0,
            state: vec![ABSENT; n_ids],
        }
    }
}

impl Policy for Clock {
    fn name(&self) -> String {
        "clock".into()
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.frames.len()
    }
    fn contains(&self, id: ObjId) -> bool {
        self.state[id as usize] != ABSENT
    }

    #[inline(always)]
    fn access(&mut self, id: ObjId) -> Outcome {
        let s = &mut self.state[id as usize];
        if *s != ABSENT {
            *s = SET;
            return Outcome::Hit;
        }
        if self.capacity == 0 {
            return Outcome::Miss { evicted: None };
        }
        *s = CLEAR;
        if self.frames.len() < self.capacity {
            self.frames.push(id);
            return Outcome::Miss { evicted: None };
        }
        let mut hand = self.hand;
        let victim = turn(&mut self.frames, &mut self.state, &mut hand, id);
        self.hand = hand;
        Outcome::Miss {
            evicted: Some(victim),
        }
    }

    /// Once the cache is full, a loop of its own: the hand and both tables stay in
    /// registers instead of being reloaded from `self` at every access.
    fn replay(&mut self, ids: &[u16], misses: &mut Vec<u32>) {
        let mut i = 0;
        while i < ids.len() && (self.capacity == 0 || self.frames.len() < self.capacity) {
            if !self.access(ids[i] as ObjId).is_hit() {
                misses.push(i as u32);
            }
            i += 1;
        }
        let mut hand = self.hand;
        let (frames, state) = (&mut self.frames[..], &mut self.state[..]);
        for (j, &id) in ids.iter().enumerate().skip(i) {
            let s = &mut state[id as usize];
            if *s != ABSENT {
                *s = SET;
                continue;
            }
            *s = CLEAR;
            misses.push(j as u32);
            turn(frames, state, &mut hand, id as ObjId);
        }
        self.hand = hand;
    }

    fn validate(&self) -> Result<(), String> {
        validate_ring(&self.frames, self.hand, self.capacity, |id| {
            self.state[id as usize] != ABSENT
        })?;
        let n = self.state.iter().filter(|&&s| s != ABSENT).count();
        if n != self.frames.len() {
            return Err(format!(
                "clock: {n} resident for {} frames",
                self.frames.len()
            ));
        }
        Ok(())
    }
}

/// The hand's turn in a full cache for `id` (already marked CLEAR): at most one full
/// turn, every bit passed over cleared, `id` into the first frame whose bit is clear, the
/// hand just past it. Returns the victim. The hand stays below the capacity (the number
/// of frames) and frames hold ids that indexed `state` when they came in, so the turn
/// indexes without bounds checks.
#[inline(always)]
fn turn(frames: &mut [u32], state: &mut [u8], hand: &mut usize, id: ObjId) -> ObjId {
    let cap = frames.len();
    let mut h = *hand;
    assert!(h < cap);
    loop {
        // SAFETY: h < cap = frames.len(); victim < state.len() (see above).
        let (victim, vs) = unsafe {
            let victim = *frames.get_unchecked(h);
            (victim, state.get_unchecked_mut(victim as usize))
        };
        let second_chance = *vs == SET;
        *vs = if second_chance { CLEAR } else { ABSENT };
        if !second_chance {
            // SAFETY: as above.
            unsafe { *frames.get_unchecked_mut(h) = id };
        }
        h += 1;
        if h == cap {
            h = 0;
        }
        if !second_chance {
            *hand = h;
            return victim;
        }
    }
}
