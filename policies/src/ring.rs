//! A bounded queue of ids in a power-of-two ring: push at the front (newest), pop at the
//! back (oldest). For lists that are only ever appended to and taken from their oldest
//! end, like the kernel's LRU lists as [`crate::linux`] runs them. The next ids to come
//! off the back sit side by side in memory, so a scan over them chases no links.

#[derive(Clone, Debug)]
pub(crate) struct Ring {
    buf: Vec<u32>,
    mask: usize,
    /// Monotonic counters: `head` is where the next push goes, `tail` the oldest id.
    head: usize,
    tail: usize,
}

impl Ring {
    /// A queue that can hold `n` ids at once.
    pub(crate) fn new(n: usize) -> Self {
        let size = n.max(1).next_power_of_two();
        Ring {
            buf: vec![0; size],
            mask: size - 1,
            head: 0,
            tail: 0,
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.head - self.tail
    }

    #[inline]
    pub(crate) fn push_front(&mut self, id: u32) {
        assert!(self.len() < self.buf.len(), "ring full");
        // SAFETY: `mask` is `buf.len() - 1` for a power-of-two length.
        unsafe { *self.buf.get_unchecked_mut(self.head & self.mask) = id };
        self.head += 1;
    }

    /// The oldest id (the queue must not be empty).
    #[inline]
    pub(crate) fn back(&self) -> u32 {
        debug_assert!(self.len() > 0, "back of an empty ring");
        // SAFETY: as in `push_front`.
        unsafe { *self.buf.get_unchecked(self.tail & self.mask) }
    }

    /// Drop the oldest id (the queue must not be empty).
    #[inline]
    pub(crate) fn pop_back(&mut self) -> u32 {
        let id = self.back();
        self.tail += 1;
        id
    }

    /// The ids, newest first (for validation and tests; allocates).
    pub(crate) fn collect(&self) -> Vec<u32> {
        (self.tail..self.head)
            .rev()
            .map(|i| self.buf[i & self.mask])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_order_across_wraps() {
        let mut r = Ring::new(3); // 4 slots
        let mut model = std::collections::VecDeque::new();
        for i in 0..50u32 {
            if model.len() == 4 || (i % 3 == 0 && !model.is_empty()) {
                assert_eq!(r.pop_back(), model.pop_back().unwrap());
            }
            r.push_front(i);
            model.push_front(i);
            assert_eq!(r.len(), model.len());
            assert_eq!(r.back(), *model.back().unwrap());
            assert_eq!(r.collect(), model.iter().copied().collect::<Vec<_>>());
        }
    }
}
