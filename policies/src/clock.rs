//! CLOCK, one-bit second chance, as libCacheSim's Clock.c with its defaults
//! (`n-bit-counter=1`, `init-freq=0`): a new object enters with its bit clear, a hit
//! sets the bit, eviction looks at the oldest object: bit set -> clear it and give it a
//! second chance (it becomes the newest), bit clear -> evict.
//!
//! libCacheSim keeps a queue and moves second-chance objects from the tail to the head.
//! Here the queue is a ring of frames with a hand at the tail: moving the tail to the
//! head is just advancing the hand, and the new object takes the victim's frame behind
//! the hand. Same order, same victims, no list surgery.
//!
//! The reference bits live in frame order, 64 frames to a word, so the hand's turn is
//! a search for the first clear bit at or after the hand: one word at a time, clearing
//! the bits it passes, instead of one frame (and one unpredictable branch) at a time.

use crate::fifo::validate_ring;
use crate::{ObjId, Outcome, Policy};

/// `frame_of` of an object that is not resident.
const NOWHERE: u32 = u32::MAX;

#[derive(Clone, Debug)]
pub struct Clock {
    capacity: usize,
    /// The object in each frame, in ring order.
    frames: Vec<u32>,
    hand: usize,
    /// The reference bit of each frame (bit f % 64 of word f / 64); bits past the last
    /// frame stay clear and are never searched.
    bits: Vec<u64>,
    /// Per object id: its frame, or NOWHERE.
    frame_of: Vec<u32>,
}

impl Clock {
    pub fn new(capacity: usize, n_ids: usize) -> Self {
        let frames = capacity.min(n_ids);
        assert!(frames < NOWHERE as usize, "clock: too many frames");
        Clock {
            capacity,
            frames: Vec::with_capacity(frames),
            hand: 0,
            bits: vec![0; frames.div_ceil(64)],
            frame_of: vec![NOWHERE; n_ids],
        }
    }

    fn bit(&self, f: usize) -> bool {
        self.bits[f / 64] >> (f % 64) & 1 == 1
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
        self.frame_of[id as usize] != NOWHERE
    }

    #[inline(always)]
    fn access(&mut self, id: ObjId) -> Outcome {
        let f = self.frame_of[id as usize];
        if f != NOWHERE {
            set_bit(&mut self.bits, f);
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
        let mut hand = self.hand;
        let victim = turn(
            &mut self.frames,
            &mut self.bits,
            &mut self.frame_of,
            &mut hand,
            id,
        );
        self.hand = hand;
        Outcome::Miss {
            evicted: Some(victim),
        }
    }

    /// Once the cache is full, a loop of its own: the hand and the tables stay in
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
        let (frames, bits, frame_of) = (
            &mut self.frames[..],
            &mut self.bits[..],
            &mut self.frame_of[..],
        );
        for (j, &id) in ids.iter().enumerate().skip(i) {
            let f = frame_of[id as usize];
            if f != NOWHERE {
                set_bit(bits, f);
                continue;
            }
            misses.push(j as u32);
            turn(frames, bits, frame_of, &mut hand, id as ObjId);
        }
        self.hand = hand;
    }

    fn validate(&self) -> Result<(), String> {
        validate_ring(&self.frames, self.hand, self.capacity, |id| {
            self.frame_of[id as usize] != NOWHERE
        })?;
        for (f, &id) in self.frames.iter().enumerate() {
            if self.frame_of[id as usize] != f as u32 {
                return Err(format!(
                    "clock: {id} is in frame {f}, its entry says {}",
                    self.frame_of[id as usize]
                ));
            }
        }
        let n = self.frame_of.iter().filter(|&&f| f != NOWHERE).count();
        if n != self.frames.len() {
            return Err(format!(
                "clock: {n} resident for {} frames",
                self.frames.len()
            ));
        }
        if (self.frames.len()..64 * self.bits.len()).any(|f| self.bit(f)) {
            return Err("clock: a reference bit past the last frame".into());
        }
        Ok(())
    }
}

/// Set the reference bit of frame `f` (a hit).
#[inline(always)]
fn set_bit(bits: &mut [u64], f: u32) {
    // SAFETY: `f` came from `frame_of`, which holds only frame numbers, and those are
    // below the number of frames <= 64 * bits.len().
    unsafe { *bits.get_unchecked_mut(f as usize / 64) |= 1 << (f % 64) };
}

/// The hand's turn in a full cache for the missing `id`: every set bit from the hand on
/// is cleared up to the first clear one (at most one full turn, after which the hand's
/// own frame is clear), whose object is evicted and whose frame `id` takes, bit clear;
/// the hand moves just past it. Returns the victim.
///
/// Frames hold ids that indexed `frame_of` when they came in, and the hand stays below
/// the number of frames, so the turn indexes without bounds checks.
#[inline(always)]
fn turn(
    frames: &mut [u32],
    bits: &mut [u64],
    frame_of: &mut [u32],
    hand: &mut usize,
    id: ObjId,
) -> ObjId {
    let n = frames.len();
    let h = *hand;
    assert!(h < n && n <= 64 * bits.len());
    let last = (n - 1) / 64;
    // The frames of the last word (the rest are never searched nor cleared), and the
    // mask of the frames in word w.
    let tail = !0u64 >> (63 - (n - 1) % 64);
    let word_mask = |w: usize| if w == last { tail } else { !0 };
    let mut w = h / 64;
    let mut m = (!0u64 << (h % 64)) & word_mask(w);
    let f = loop {
        // SAFETY: w <= last < bits.len().
        let word = unsafe { bits.get_unchecked_mut(w) };
        let clear = !*word & m;
        if clear != 0 {
            let b = clear.trailing_zeros();
            // Clear the bits passed over: those of the mask below the found one.
            *word &= !(m & ((1u64 << b) - 1));
            break w * 64 + b as usize;
        }
        *word &= !m;
        if w == last {
            // Wrapped: the search ends at or before the hand now (its bit was just
            // cleared), so no bit past the last frame can come first.
            w = 0;
            m = !0;
        } else {
            w += 1;
            m = word_mask(w);
        }
    };
    // SAFETY: f < n: the masks hold only frames, but for the one after a wrap, where a
    // clear bit at or before the hand comes first. Frames hold valid ids.
    let victim = unsafe {
        let slot = frames.get_unchecked_mut(f);
        let victim = *slot;
        *slot = id;
        *frame_of.get_unchecked_mut(victim as usize) = NOWHERE;
        *frame_of.get_unchecked_mut(id as usize) = f as u32;
        victim
    };
    *hand = if f + 1 == n { 0 } else { f + 1 };
    victim
}
