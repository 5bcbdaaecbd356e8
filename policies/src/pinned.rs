//! Pinning decorators (`pinned:N[:POLICY]`, `pin-hot:K[:POLICY]`): a fixed set of ids is
//! loaded on first use (a cold miss, as with any page) and never evicted; every other id
//! goes to an inner policy of capacity `capacity - |pinned|`.
//!
//! The trade-off: a pinned id's slot is reserved from the start, loaded or not, so a
//! pin never has to evict anything and the inner policy's capacity never changes (as
//! when pinned experts are placed in memory up front). The price is that an unused
//! pinned slot is wasted for the whole run; picking the pinned set well (the most
//! uniformly used layers, or the hottest experts) is what makes it pay.
//!
//! Generic over the inner policy so the inner `access` is inlined, not a virtual call.

use crate::{ObjId, Outcome, Policy};

#[derive(Clone, Debug)]
pub struct Pinned<P> {
    name: String,
    inner: P,
    pinned: Vec<bool>,
    loaded: Vec<bool>,
    n_pinned: usize,
    n_loaded: usize,
}

impl<P: Policy> Pinned<P> {
    /// Pin `ids` (each `< n_ids`; duplicates are counted once) in front of `inner`,
    /// whose capacity must already exclude them. `name` is the spec string reported.
    pub fn new(name: String, inner: P, n_ids: usize, ids: impl IntoIterator<Item = ObjId>) -> Self {
        let mut pinned = vec![false; n_ids];
        let mut n_pinned = 0;
        for id in ids {
            if !pinned[id as usize] {
                pinned[id as usize] = true;
                n_pinned += 1;
            }
        }
        Pinned {
            name,
            inner,
            pinned,
            loaded: vec![false; n_ids],
            n_pinned,
            n_loaded: 0,
        }
    }

    pub fn inner(&self) -> &P {
        &self.inner
    }

    pub fn is_pinned(&self, id: ObjId) -> bool {
        self.pinned[id as usize]
    }

    /// Number of pinned ids (their slots are reserved whether loaded or not).
    pub fn n_pinned(&self) -> usize {
        self.n_pinned
    }
}

impl<P: Policy> Policy for Pinned<P> {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn capacity(&self) -> usize {
        self.n_pinned + self.inner.capacity()
    }
    fn len(&self) -> usize {
        self.n_loaded + self.inner.len()
    }
    fn contains(&self, id: ObjId) -> bool {
        if self.pinned[id as usize] {
            self.loaded[id as usize]
        } else {
            self.inner.contains(id)
        }
    }

    #[inline]
    fn access(&mut self, id: ObjId) -> Outcome {
        if self.pinned[id as usize] {
            let l = &mut self.loaded[id as usize];
            if *l {
                return Outcome::Hit;
            }
            *l = true;
            self.n_loaded += 1;
            return Outcome::Miss { evicted: None };
        }
        self.inner.access(id)
    }

    fn validate(&self) -> Result<(), String> {
        self.inner.validate()?;
        let loaded = self.loaded.iter().filter(|&&l| l).count();
        if loaded != self.n_loaded {
            return Err(format!(
                "pinned: {loaded} loaded flags, count {}",
                self.n_loaded
            ));
        }
        for id in 0..self.pinned.len() {
            if self.loaded[id] && !self.pinned[id] {
                return Err(format!("pinned: {id} loaded but not pinned"));
            }
            if self.pinned[id] && self.inner.contains(id as ObjId) {
                return Err(format!(
                    "pinned: {id} is pinned and also in the inner policy"
                ));
            }
        }
        if self.n_loaded > self.n_pinned || self.len() > self.capacity() {
            return Err("pinned: over capacity".into());
        }
        Ok(())
    }
}

// A boxed inner policy (the reference implementations use this).
impl Policy for Box<dyn Policy> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn capacity(&self) -> usize {
        (**self).capacity()
    }
    fn len(&self) -> usize {
        (**self).len()
    }
    fn contains(&self, id: ObjId) -> bool {
        (**self).contains(id)
    }
    fn access(&mut self, id: ObjId) -> Outcome {
        (**self).access(id)
    }
    fn replay(&mut self, ids: &[u16], misses: &mut Vec<u32>) {
        (**self).replay(ids, misses)
    }
    fn validate(&self) -> Result<(), String> {
        (**self).validate()
    }
}
