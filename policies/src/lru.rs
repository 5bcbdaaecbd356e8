//! Least recently used: one index-linked list, newest at the front, victims from the
//! back.

use crate::list::Lists;
use crate::{ObjId, Outcome, Policy};

#[derive(Clone, Debug)]
pub struct Lru {
    capacity: usize,
    len: usize,
    list: Lists,
}

impl Lru {
    /// A cache of `capacity` objects over ids `< n_ids`.
    pub fn new(capacity: usize, n_ids: usize) -> Self {
        Lru {
            capacity,
            len: 0,
            list: Lists::new(n_ids, 1),
        }
    }
}

impl Policy for Lru {
    fn name(&self) -> String {
        "lru".into()
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
            self.list.move_to_front(0, id);
            return Outcome::Hit;
        }
        if self.capacity == 0 {
            return Outcome::Miss { evicted: None };
        }
        let mut evicted = None;
        if self.len == self.capacity {
            let victim = self.list.back(0).expect("a full cache has a back");
            self.list.unlink(victim);
            evicted = Some(victim);
        } else {
            self.len += 1;
        }
        self.list.push_front(0, id);
        Outcome::Miss { evicted }
    }

    fn validate(&self) -> Result<(), String> {
        let lists = self.list.validate(1)?;
        if lists[0].len() != self.len || self.len > self.capacity {
            return Err(format!(
                "lru: list holds {}, len {}, capacity {}",
                lists[0].len(),
                self.len,
                self.capacity
            ));
        }
        Ok(())
    }
}

impl Lru {
    /// Resident ids, most recent first (for tests).
    pub fn order(&self) -> Vec<ObjId> {
        self.list.collect(0)
    }
}
