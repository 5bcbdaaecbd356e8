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
        // At most one full turn: every bit passed over is cleared. The hand stays below
        // the capacity, which is the number of frames now, and frames hold ids that
        // indexed `state` when they came in: no bounds checks in the turn.
        let cap = self.capacity;
        let mut hand = self.hand;
        assert!(hand < cap && self.frames.len() == cap);
        loop {
            // SAFETY: hand < cap = frames.len(); victim < state.len() (see above).
            let (victim, vs) = unsafe {
                let victim = *self.frames.get_unchecked(hand);
                (victim, self.state.get_unchecked_mut(victim as usize))
            };
            let second_chance = *vs == SET;
            *vs = if second_chance { CLEAR } else { ABSENT };
            if !second_chance {
                // SAFETY: as above.
                unsafe { *self.frames.get_unchecked_mut(hand) = id };
            }
            hand += 1;
            if hand == cap {
                hand = 0;
            }
            if !second_chance {
                self.hand = hand;
                return Outcome::Miss {
                    evicted: Some(victim),
                };
            }
        }
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
