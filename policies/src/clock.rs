//! CLOCK, one-bit second chance, as libCacheSim's Clock.c with its defaults
//! (`n-bit-counter=1`, `init-freq=0`): a new object enters with its bit clear, a hit
//! sets the bit, eviction looks at the oldest object: bit set -> clear it and give it a
//! second chance (it becomes the newest), bit clear -> evict.
//!
//! libCacheSim keeps a queue and moves second-chance objects from the tail to the head.
//! Here the queue is a ring of frames with a hand at the tail: moving the tail to the
//! head is just advancing the hand, and the new object takes the victim's frame behind
//! the hand. Same order, same victims, no list surgery. The reference bits live in
//! frame order, so the hand skips and clears up to 64 second chances per step.

use crate::fifo::validate_ring;
use crate::{ObjId, Outcome, Policy};

/// `frame_of` of an id that is not resident.
const ABSENT: u32 = u32::MAX;

#[derive(Clone, Debug)]
pub struct Clock {
    capacity: usize,
    frames: Vec<u32>,
    hand: usize,
    /// The frame of each resident id, ABSENT otherwise.
    frame_of: Vec<u32>,
    /// One reference bit per frame, 64 frames a word: the hand finds the next clear bit
    /// a word at a time and clears every set bit it passes in one store.
    bits: Vec<u64>,
}

impl Clock {
    pub fn new(capacity: usize, n_ids: usize) -> Self {
        let frames = capacity.min(n_ids);
        Clock {
            capacity,
            frames: Vec::with_capacity(frames),
            hand: 0,
            frame_of: vec![ABSENT; n_ids],
            bits: vec![0; frames.div_ceil(64)],
        }
    }

    fn bit(&self, frame: usize) -> bool {
        self.bits[frame / 64] >> (frame % 64) & 1 != 0
    }

    /// Advance the hand to the first frame with a clear bit, clearing the set bits it
    /// passes (at most one full turn), and return that frame. The ring is full.
    #[inline(always)]
    fn sweep(&mut self) -> usize {
        let n = self.frames.len();
        let mut hand = self.hand;
        loop {
            let w = hand / 64;
            let from = hand % 64;
            // Frames of this word the hand may still visit: from `from` up to the ring's end.
            let end = (n - w * 64).min(64);
            let span = if end == 64 { !0u64 } else { (1u64 << end) - 1 } & (!0u64 << from);
            let clear = !self.bits[w] & span;
            if clear != 0 {
                let at = clear.trailing_zeros() as usize;
                // Clear the set bits in [from, at).
                self.bits[w] &= !(span & ((1u64 << at) - 1));
                return w * 64 + at;
            }
            self.bits[w] &= !span;
            hand = w * 64 + end;
            if hand == n {
                hand = 0;
            }
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
        self.frame_of[id as usize] != ABSENT
    }

    #[inline(always)]
    fn access(&mut self, id: ObjId) -> Outcome {
        let f = self.frame_of[id as usize];
        if f != ABSENT {
            self.bits[f as usize / 64] |= 1 << (f % 64);
            return Outcome::Hit;
        }
        if self.capacity == 0 {
            return Outcome::Miss { evicted: None };
        }
        if self.frames.len() < self.capacity {
            self.frame_of[id as usize] = self.frames.len() as u32;
            self.frames.push(id);
            return Outcome::Miss { evicted: None };
        }
        let at = self.sweep();
        let victim = std::mem::replace(&mut self.frames[at], id);
        self.frame_of[victim as usize] = ABSENT;
        self.frame_of[id as usize] = at as u32;
        self.hand = if at + 1 == self.frames.len() {
            0
        } else {
            at + 1
        };
        Outcome::Miss {
            evicted: Some(victim),
        }
    }

    fn validate(&self) -> Result<(), String> {
        validate_ring(&self.frames, self.hand, self.capacity, |id| {
            self.frame_of[id as usize] != ABSENT
        })?;
        let n = self.frame_of.iter().filter(|&&f| f != ABSENT).count();
        if n != self.frames.len() {
            return Err(format!(
                "clock: {n} resident for {} frames",
                self.frames.len()
            ));
        }
        if let Some(f) =
            (0..self.frames.len()).find(|&f| self.frame_of[self.frames[f] as usize] != f as u32)
        {
            return Err(format!(
                "clock: frame {f} holds an id that points elsewhere"
            ));
        }
        let beyond = self.frames.len()..self.bits.len() * 64;
        if let Some(f) = beyond.clone().find(|&f| self.bit(f)) {
            return Err(format!(
                "clock: reference bit of the empty frame {f} is set"
            ));
        }
        Ok(())
    }
}
