//! Index-linked doubly linked lists over dense ids, all living in one flat array.
//!
//! Node `i < n` is object `i`; nodes `n..n + k` are the sentinels of `k` lists. A list
//! is circular through its sentinel, so push/unlink never branch on "empty" or "end".
//! `prev` points towards the front (head, newest), `next` towards the back (tail,
//! oldest), the same orientation as libCacheSim's `queue.prev`/`queue.next`.

/// "No node": an object that is on no list, or a hand that points nowhere.
pub(crate) const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Link {
    prev: u32,
    next: u32,
}

#[derive(Clone, Debug)]
pub(crate) struct Lists {
    links: Vec<Link>,
    n: u32,
}

impl Lists {
    /// `n` objects and `k` lists.
    pub(crate) fn new(n: usize, k: usize) -> Self {
        assert!(n + k < NIL as usize, "too many ids for u32 links");
        let mut links = vec![
            Link {
                prev: NIL,
                next: NIL
            };
            n + k
        ];
        for (s, l) in links.iter_mut().enumerate().skip(n) {
            *l = Link {
                prev: s as u32,
                next: s as u32,
            };
        }
        Lists { links, n: n as u32 }
    }

    /// Nodes: objects and sentinels (every number the links hold but NIL is below).
    pub(crate) fn nodes(&self) -> usize {
        self.links.len()
    }

    #[inline]
    fn sentinel(&self, list: usize) -> u32 {
        self.n + list as u32
    }

    /// Whether object `id` is on some list.
    #[inline]
    pub(crate) fn is_linked(&self, id: u32) -> bool {
        self.links[id as usize].next != NIL
    }

    // The hot operations index without bounds checks (they were a quarter of ARC's
    // instructions) through `Raw`. What keeps that sound: every operation checks, in
    // release builds too, that the object it is given is an object (`id < n`), and `Raw`
    // checks that the nodes it unlinks or inserts after are linked, so that every other
    // index it uses is read from the links of a linked node, which only ever hold nodes.

    #[inline]
    fn link_after(&mut self, at: u32, id: u32) {
        assert!(id < self.n && (at as usize) < self.links.len());
        // SAFETY: `at` and `id` are nodes (checked).
        unsafe { self.raw().link_after(at, id) }
    }

    /// Insert `id` (not on any list) at the front of `list`.
    #[inline]
    pub(crate) fn push_front(&mut self, list: usize, id: u32) {
        assert!(
            !self.is_linked(id),
            "insertion of an object already on a list"
        );
        let s = self.sentinel(list);
        self.link_after(s, id);
    }

    /// Insert `id` (not on any list) at the back of `list`.
    #[inline]
    pub(crate) fn push_back(&mut self, list: usize, id: u32) {
        assert!(
            !self.is_linked(id),
            "insertion of an object already on a list"
        );
        let s = self.sentinel(list);
        let last = self.links[s as usize].prev;
        self.link_after(last, id);
    }

    /// Remove `id` from whatever list holds it.
    #[inline]
    pub(crate) fn unlink(&mut self, id: u32) {
        assert!(id < self.n);
        // SAFETY: `id` is an object (checked).
        unsafe { self.raw().unlink(id) }
    }

    /// Move `id` (on any list) to the front of `list`.
    #[inline]
    pub(crate) fn move_to_front(&mut self, list: usize, id: u32) {
        assert!(id < self.n && list < self.links.len() - self.n as usize);
        // SAFETY: `id` is an object and `list` a list (checked).
        unsafe { self.raw().move_to_front(list, id) }
    }

    /// The links without bounds checks, for a policy's replay loop.
    #[inline(always)]
    pub(crate) fn raw(&mut self) -> Raw<'_> {
        Raw {
            links: &mut self.links,
            n: self.n,
        }
    }

    /// The newest object of `list`.
    #[inline]
    pub(crate) fn front(&self, list: usize) -> Option<u32> {
        let s = self.sentinel(list);
        let f = self.links[s as usize].next;
        (f != s).then_some(f)
    }

    /// The oldest object of `list`.
    #[inline]
    pub(crate) fn back(&self, list: usize) -> Option<u32> {
        let s = self.sentinel(list);
        let b = self.links[s as usize].prev;
        (b != s).then_some(b)
    }

    /// The neighbour of `id` towards the front, or `None` if `id` is the front.
    #[inline]
    pub(crate) fn towards_front(&self, id: u32) -> Option<u32> {
        let p = self.links[id as usize].prev;
        (p < self.n).then_some(p)
    }

    /// The objects of `list`, front to back (for validation and tests; allocates).
    pub(crate) fn collect(&self, list: usize) -> Vec<u32> {
        let s = self.sentinel(list);
        let mut out = Vec::new();
        let mut x = self.links[s as usize].next;
        while x != s {
            out.push(x);
            x = self.links[x as usize].next;
            if out.len() > self.n as usize {
                break; // a cycle that misses the sentinel: validate() reports it
            }
        }
        out
    }

    /// Check every list: links are mutual, each list reaches its sentinel, no object is
    /// on two lists, and unlinked objects are fully unlinked. Returns each list's
    /// contents front to back.
    pub(crate) fn validate(&self, k: usize) -> Result<Vec<Vec<u32>>, String> {
        let n = self.n as usize;
        if self.links.len() != n + k {
            return Err(format!(
                "links has {} nodes, expected {}",
                self.links.len(),
                n + k
            ));
        }
        let mut seen = vec![false; n];
        let mut lists = Vec::with_capacity(k);
        for list in 0..k {
            let s = self.sentinel(list);
            let mut out = Vec::new();
            let mut x = s;
            loop {
                let nx = self.links[x as usize].next;
                if nx == NIL || nx as usize >= n + k {
                    return Err(format!("list {list}: node {x} has a bad next {nx}"));
                }
                if self.links[nx as usize].prev != x {
                    return Err(format!("list {list}: {x}.next = {nx} but {nx}.prev != {x}"));
                }
                if nx == s {
                    break;
                }
                if nx >= self.n {
                    return Err(format!("list {list} runs into another sentinel {nx}"));
                }
                if seen[nx as usize] {
                    return Err(format!(
                        "object {nx} is on two lists or twice on list {list}"
                    ));
                }
                seen[nx as usize] = true;
                out.push(nx);
                x = nx;
            }
            lists.push(out);
        }
        for (id, &on) in seen.iter().enumerate() {
            let l = self.links[id];
            if !on && (l.prev != NIL || l.next != NIL) {
                return Err(format!("object {id} is on no list but has links"));
            }
        }
        Ok(lists)
    }
}

impl Lists {
    /// Insert `id` (not on any list) right behind `at` (towards the back).
    #[inline]
    pub(crate) fn insert_after(&mut self, at: u32, id: u32) {
        assert!(
            !self.is_linked(id),
            "insertion of an object already on a list"
        );
        self.link_after(at, id);
    }

    /// The neighbour of `id` towards the back, or `None` if `id` is the back.
    #[inline]
    pub(crate) fn next_of(&self, id: u32) -> Option<u32> {
        let x = self.links[id as usize].next;
        (x < self.n).then_some(x)
    }
}

/// The links of a [`Lists`] without bounds checks, for a policy's replay loop (`Lists`
/// hands one out by `raw`, and goes through one itself). Its operations are `unsafe`:
/// the caller promises that the nodes it passes are nodes (`< n + k`, which objects
/// below `n` are) and the lists it names exist. They check, in release builds too, that
/// a node they unlink or insert after is linked, so every other index they use is read
/// from the links of a linked node, which only ever hold nodes: memory stays safe
/// whatever the caller's logic.
pub(crate) struct Raw<'a> {
    links: &'a mut [Link],
    n: u32,
}

impl Raw<'_> {
    /// # Safety
    /// `i` is a node.
    #[inline(always)]
    unsafe fn at(&mut self, i: u32) -> &mut Link {
        debug_assert!((i as usize) < self.links.len());
        self.links.get_unchecked_mut(i as usize)
    }

    /// The oldest object of `list`, or its sentinel if the list is empty.
    ///
    /// # Safety
    /// `list` exists.
    #[inline(always)]
    pub(crate) unsafe fn back(&mut self, list: usize) -> u32 {
        self.at(self.n + list as u32).prev
    }

    /// Insert `id` right behind `at` (towards the back).
    ///
    /// # Safety
    /// `at` and `id` are nodes.
    #[inline(always)]
    unsafe fn link_after(&mut self, at: u32, id: u32) {
        let next = self.at(at).next;
        assert!(next != NIL, "insertion after a node on no list");
        *self.at(id) = Link { prev: at, next };
        self.at(at).next = id;
        self.at(next).prev = id;
    }

    /// Join the neighbours of `id` to each other, taking it out of its list; its own
    /// links are left stale for the caller to rewrite.
    ///
    /// # Safety
    /// `id` is a node.
    #[inline(always)]
    unsafe fn join_neighbours(&mut self, id: u32) {
        let Link { prev, next } = *self.at(id);
        assert!(next != NIL && prev != NIL, "an object on no list");
        self.at(prev).next = next;
        self.at(next).prev = prev;
    }

    /// Insert `id` (on no list) at the front of `list`.
    ///
    /// # Safety
    /// `id` is a node and `list` exists.
    #[inline(always)]
    pub(crate) unsafe fn push_front(&mut self, list: usize, id: u32) {
        self.link_after(self.n + list as u32, id);
    }

    /// Remove `id` from its list.
    ///
    /// # Safety
    /// `id` is a node.
    #[inline(always)]
    pub(crate) unsafe fn unlink(&mut self, id: u32) {
        self.join_neighbours(id);
        *self.at(id) = Link {
            prev: NIL,
            next: NIL,
        };
    }

    /// Move `id` (on any list) to the front of `list`: unlink and push without marking
    /// `id` unlinked in between, or checking again that the sentinel is linked.
    ///
    /// # Safety
    /// `id` is a node and `list` exists.
    #[inline(always)]
    pub(crate) unsafe fn move_to_front(&mut self, list: usize, id: u32) {
        self.join_neighbours(id);
        let s = self.n + list as u32;
        let first = self.at(s).next;
        *self.at(id) = Link {
            prev: s,
            next: first,
        };
        self.at(s).next = id;
        self.at(first).prev = id;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_unlink_and_order() {
        let mut l = Lists::new(6, 2);
        l.push_front(0, 1);
        l.push_front(0, 2);
        l.push_back(0, 3);
        l.push_front(1, 4);
        assert_eq!(l.validate(2).unwrap(), vec![vec![2, 1, 3], vec![4]]);
        assert_eq!((l.front(0), l.back(0)), (Some(2), Some(3)));
        assert_eq!((l.towards_front(1), l.towards_front(2)), (Some(2), None));
        assert_eq!((l.next_of(1), l.next_of(3)), (Some(3), None));
        l.move_to_front(1, 3);
        l.unlink(2);
        assert!(!l.is_linked(2));
        assert_eq!(l.validate(2).unwrap(), vec![vec![1], vec![3, 4]]);
        l.unlink(1);
        assert_eq!((l.front(0), l.back(0)), (None, None));
        l.insert_after(4, 5);
        assert_eq!(l.collect(1), vec![3, 4, 5]);
    }

    #[test]
    #[should_panic(expected = "already on a list")]
    fn inserting_a_linked_object_panics() {
        let mut l = Lists::new(2, 1);
        l.push_front(0, 0);
        l.push_front(0, 0);
    }

    #[test]
    #[should_panic(expected = "after a node on no list")]
    fn inserting_after_an_unlinked_node_panics() {
        let mut l = Lists::new(2, 1);
        l.insert_after(0, 1);
    }

    #[test]
    #[should_panic(expected = "on no list")]
    fn unlinking_an_unlinked_object_panics() {
        let mut l = Lists::new(2, 1);
        l.unlink(1);
    }

    #[test]
    fn validate_catches_broken_links() {
        let mut l = Lists::new(4, 1);
        l.push_front(0, 0);
        l.push_front(0, 1);
        l.links[1].next = 2; // 2 is not linked back
        assert!(l.validate(1).is_err());
        let mut l = Lists::new(4, 1);
        l.push_front(0, 0);
        l.links[3] = Link { prev: 0, next: 0 }; // stray links on an unlisted node
        assert!(l.validate(1).is_err());
    }
}
