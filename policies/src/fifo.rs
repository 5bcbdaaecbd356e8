//! First in, first out: a ring of `capacity` frames and a hand at the oldest frame.
//! A victim's frame receives the new object and the hand moves on, which is exactly a
//! queue with insertion at the head and eviction from the tail (libCacheSim FIFO.c).

use crate::{ObjId, Outcome, Policy};

#[derive(Clone, Debug)]
pub struct Fifo {
    capacity: usize,
    /// Resident ids; once full, `frames[hand]` is the oldest.
    frames: Vec<u32>,
    hand: usize,
    resident: Vec<bool>,
}

impl Fifo {
    pub fn new(capacity: usize, n_ids: usize) -> Self {
        Fifo {
            capacity,
            frames: Vec::with_capacity(capacity.min(n_ids)),
            hand: 0,
            resident: vec![false; n_ids],
        }
    }
}

impl Policy for Fifo {
    fn name(&self) -> String {
        "fifo".into()
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.frames.len()
    }
    fn contains(&self, id: ObjId) -> bool {
        self.resident[id as usize]
    }

    #[inline(always)]
    fn access(&mut self, id: ObjId) -> Outcome {
        if self.resident[id as usize] {
            return Outcome::Hit;
        }
        if self.capacity == 0 {
            return Outcome::Miss { evicted: None };
        }
        self.resident[id as usize] = true;
        if self.frames.len() < self.capacity {
            self.frames.push(id);
            return Outcome::Miss { evicted: None };
        }
        let victim = std::mem::replace(&mut self.frames[self.hand], id);
        self.resident[victim as usize] = false;
        self.hand += 1;
        if self.hand == self.capacity {
            self.hand = 0;
        }
        Outcome::Miss {
            evicted: Some(victim),
        }
    }

    fn validate(&self) -> Result<(), String> {
        validate_ring(&self.frames, self.hand, self.capacity, |id| {
            self.resident[id as usize]
        })?;
        let n = self.resident.iter().filter(|&&r| r).count();
        if n != self.frames.len() {
            return Err(format!(
                "fifo: {n} resident flags for {} frames",
                self.frames.len()
            ));
        }
        Ok(())
    }
}

/// Shared by the ring policies (fifo, clock): frames distinct and resident, hand in
/// range, hand at 0 until the ring is full.
pub(crate) fn validate_ring(
    frames: &[u32],
    hand: usize,
    capacity: usize,
    resident: impl Fn(u32) -> bool,
) -> Result<(), String> {
    if frames.len() > capacity {
        return Err(format!("{} frames > capacity {capacity}", frames.len()));
    }
    if hand != 0 && hand >= frames.len() {
        return Err(format!("hand {hand} out of {} frames", frames.len()));
    }
    if frames.len() < capacity && hand != 0 {
        return Err(format!("hand {hand} moved before the ring was full"));
    }
    let mut sorted = frames.to_vec();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err("an id is in two frames".into());
    }
    if let Some(&id) = frames.iter().find(|&&id| !resident(id)) {
        return Err(format!("frame holds {id} which is not flagged resident"));
    }
    Ok(())
}
