//! SIEVE (Zhang et al., NSDI'24), as libCacheSim's Sieve.c: new objects enter at the
//! head with the visited bit clear, a hit sets the bit, and a hand moves from the tail
//! towards the head: visited -> clear and move on, not visited -> evict, and the hand
//! stays where the victim was (at its neighbour towards the head). Unlike CLOCK,
//! survivors are not moved, so new objects are judged quickly.

use crate::list::{Lists, NIL};
use crate::{ObjId, Outcome, Policy};

#[derive(Clone, Debug)]
pub struct Sieve {
    capacity: usize,
    len: usize,
    list: Lists,
    visited: Vec<bool>,
    /// The next object the hand looks at; NIL = start again from the tail.
    hand: u32,
}

impl Sieve {
    pub fn new(capacity: usize, n_ids: usize) -> Self {
        Sieve {
            capacity,
            len: 0,
            list: Lists::new(n_ids, 1),
            visited: vec![false; n_ids],
            hand: NIL,
        }
    }
}

impl Policy for Sieve {
    fn name(&self) -> String {
        "sieve".into()
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.len
    }
    fn contains(&self, id: ObjId) -> bool {
        self.list.is_linked(id)
    }

    #[inline(always)]
    fn access(&mut self, id: ObjId) -> Outcome {
        if self.list.is_linked(id) {
            self.visited[id as usize] = true;
            return Outcome::Hit;
        }
        if self.capacity == 0 {
            return Outcome::Miss { evicted: None };
        }
        let mut evicted = None;
        if self.len == self.capacity {
            let tail = self.list.back(0).expect("a full cache has a tail");
            let mut x = if self.hand == NIL { tail } else { self.hand };
            while self.visited[x as usize] {
                self.visited[x as usize] = false;
                x = self.list.towards_front(x).unwrap_or(tail);
            }
            self.hand = self.list.towards_front(x).unwrap_or(NIL);
            self.list.unlink(x);
            evicted = Some(x);
        } else {
            self.len += 1;
        }
        self.list.push_front(0, id);
        self.visited[id as usize] = false;
        Outcome::Miss { evicted }
    }

    fn validate(&self) -> Result<(), String> {
        let lists = self.list.validate(1)?;
        if lists[0].len() != self.len || self.len > self.capacity {
            return Err(format!("sieve: list {} len {}", lists[0].len(), self.len));
        }
        if self.hand != NIL && !self.list.is_linked(self.hand) {
            return Err(format!(
                "sieve: hand at {} which is not resident",
                self.hand
            ));
        }
        if let Some(id) =
            (0..self.visited.len()).find(|&i| self.visited[i] && !self.list.is_linked(i as u32))
        {
            return Err(format!("sieve: {id} visited but not resident"));
        }
        Ok(())
    }
}
