//! Index-linked doubly linked lists over dense ids, all living in one flat array.
//!
//! Node `i < n` is object `i`; nodes `n..n + k` are the sentinels of `k` lists. A list
//! is circular through its sentinel, so push/unlink never branch on "empty" or "end".
//! `prev` points towards the front (head, newest), `next` towards the back (tail,
//! oldest), the same orientation as libCacheSim's `queue.prev`/`queue.next`.
//!
//! The links of an object on no list are "nil". In `Lists` (`Lists<false>`) nil is the
//! constant NIL, so "is it linked" is a compare with a constant, and [`Raw`] checks
//! every link it follows for NIL (in release builds too: memory safety rests on it).
//! In `Lists<true>` nil is a node of its own after the sentinels (`n + k`): the links
//! hold only nodes whatever the calls, and `Raw` follows them without any check. LRU
//! and the other list policies are faster with the constant, ARC without the checks
//! (measurements in docs/performance.md).

/// "No node": a policy's hand or bucket that points nowhere, and the links of an
/// object on no list in `Lists<false>`.
pub(crate) const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Link {
    prev: u32,
    next: u32,
}

/// The links of an object on no list: the nil node's number, or the constant NIL.
#[inline(always)]
fn nil<const NIL_NODE: bool>(node: u32) -> u32 {
    if NIL_NODE {
        node
    } else {
        NIL
    }
}

/// `NIL_NODE`: whether nil is a node of its own (see the module comment).
#[derive(Clone, Debug)]
pub(crate) struct Lists<const NIL_NODE: bool = false> {
    links: Vec<Link>,
    n: u32,
    nil: u32,
}

impl<const NIL_NODE: bool> Lists<NIL_NODE> {
    /// `n` objects and `k` lists.
    pub(crate) fn new(n: usize, k: usize) -> Self {
        let nodes = n
            .checked_add(k + NIL_NODE as usize)
            .filter(|&nodes| nodes < NIL as usize)
            .expect("too many ids for u32 links");
        let nil = nil::<NIL_NODE>((n + k) as u32);
        let mut links = vec![
            Link {
                prev: nil,
                next: nil
            };
            nodes
        ];
        for (s, l) in links.iter_mut().enumerate().skip(n).take(k) {
            *l = Link {
                prev: s as u32,
                next: s as u32,
            };
        }
        Lists {
            links,
            n: n as u32,
            nil,
        }
    }

    #[inline(always)]
    fn nil(&self) -> u32 {
        nil::<NIL_NODE>(self.nil)
    }

    /// Objects: the ids below `n`.
    pub(crate) fn objects(&self) -> usize {
        self.n as usize
    }

    /// Nodes: objects, sentinels, and nil if it is one (every number the links hold but
    /// NIL is below).
    pub(crate) fn nodes(&self) -> usize {
        self.links.len()
    }

    /// The number of lists.
    #[inline(always)]
    fn k(&self) -> usize {
        self.links.len() - self.n as usize - NIL_NODE as usize
    }

    #[inline]
    fn sentinel(&self, list: usize) -> u32 {
        self.n + list as u32
    }

    /// Whether object `id` is on some list.
    #[inline]
    pub(crate) fn is_linked(&self, id: u32) -> bool {
        self.links[id as usize].next != self.nil()
    }

    // The operations below go through `Raw`, which indexes without bounds checks (they
    // were a quarter of ARC's instructions). They check, in release builds too, what
    // `Raw` asks of its caller: objects are objects (`id < n`), lists exist, and a node
    // to insert after is a node. They check too that an object to insert is on no list;
    // that one to unlink or move is on one, `Lists<false>` checks (through `Raw`), and
    // `Lists<true>` only in debug builds (in release it gives wrong lists, which
    // `validate` reports).

    #[inline(always)]
    fn check_insertion(&self, id: u32) {
        assert!(
            id < self.n && !self.is_linked(id),
            "insertion of a non-object, or of an object already on a list"
        );
    }

    /// Insert `id` (not on any list) at the front of `list`.
    #[inline]
    pub(crate) fn push_front(&mut self, list: usize, id: u32) {
        self.check_insertion(id);
        assert!(list < self.k(), "no such list");
        // SAFETY: `list` exists and `id` is an object (checked).
        unsafe { self.raw().push_front(list, id) }
    }

    /// Insert `id` (not on any list) at the back of `list`.
    #[inline]
    pub(crate) fn push_back(&mut self, list: usize, id: u32) {
        self.check_insertion(id);
        // (Indexing checks the sentinel; with a nil node, list k is nil: wrong, not
        // unsafe.)
        let last = self.links[self.sentinel(list) as usize].prev;
        // SAFETY: `id` is an object (checked); `last` is read from the links.
        unsafe { self.raw().link_after(last, id) }
    }

    /// Insert `id` (not on any list) right behind `at` (towards the back).
    #[inline]
    pub(crate) fn insert_after(&mut self, at: u32, id: u32) {
        self.check_insertion(id);
        assert!((at as usize) < self.links.len(), "no such node");
        // SAFETY: `at` is a node and `id` an object (checked).
        unsafe { self.raw().link_after(at, id) }
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
        assert!(id < self.n && list < self.k());
        // SAFETY: `id` is an object and `list` a list (checked).
        unsafe { self.raw().move_to_front(list, id) }
    }

    /// The links without bounds checks, for a policy's replay loop.
    #[inline(always)]
    pub(crate) fn raw(&mut self) -> Raw<'_, NIL_NODE> {
        Raw {
            links: &mut self.links,
            n: self.n,
            nil: self.nil,
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

    /// The neighbour of `id` towards the back, or `None` if `id` is the back.
    #[inline]
    pub(crate) fn next_of(&self, id: u32) -> Option<u32> {
        let x = self.links[id as usize].next;
        (x < self.n).then_some(x)
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
        let nil = self.nil();
        let nodes = n + k + NIL_NODE as usize;
        if self.links.len() != nodes {
            return Err(format!(
                "links has {} nodes, expected {nodes}",
                self.links.len()
            ));
        }
        if NIL_NODE && (self.links[n + k].prev != nil || self.links[n + k].next != nil) {
            return Err("the nil node has links".into());
        }
        let mut seen = vec![false; n];
        let mut lists = Vec::with_capacity(k);
        for list in 0..k {
            let s = self.sentinel(list);
            let mut out = Vec::new();
            let mut x = s;
            loop {
                let nx = self.links[x as usize].next;
                if nx as usize >= n + k {
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
            if !on && (l.prev != nil || l.next != nil) {
                return Err(format!("object {id} is on no list but has links"));
            }
        }
        Ok(lists)
    }
}

/// The links of a [`Lists`] without bounds checks, for a policy's replay loop (`Lists`
/// hands one out by `raw`, and goes through one itself). Its operations are `unsafe`:
/// the caller promises that the lists it names exist, and that the nodes it gives are
/// nodes (`< nodes()`), and objects (`< n`) where it links or unlinks them unless nil
/// is a node. Every other index they use is read from the links, and every link they
/// write is one of those, a sentinel, or nil: so the links only ever hold nodes (a
/// sentinel's, only nodes), and NIL if nil is not a node, which they check for before
/// following a link. Memory stays safe whatever the caller's logic; broken logic gives
/// broken lists, which `Lists::validate` reports.
pub(crate) struct Raw<'a, const NIL_NODE: bool> {
    links: &'a mut [Link],
    n: u32,
    nil: u32,
}

impl<const NIL_NODE: bool> Raw<'_, NIL_NODE> {
    /// # Safety
    /// `i` is a node.
    #[inline(always)]
    unsafe fn at(&mut self, i: u32) -> &mut Link {
        debug_assert!((i as usize) < self.links.len());
        self.links.get_unchecked_mut(i as usize)
    }

    #[inline(always)]
    fn sentinel(&self, list: usize) -> u32 {
        self.n + list as u32
    }

    #[inline(always)]
    fn nil(&self) -> u32 {
        nil::<NIL_NODE>(self.nil)
    }

    /// A link read from the links, about to be followed: with NIL it must not be NIL
    /// (checked in release builds too: memory safety rests on it); with a nil node it
    /// is a node anyway, and nil only where the caller's logic is broken (checked in
    /// debug builds).
    #[inline(always)]
    fn check_link(&self, x: u32) {
        let nil = self.nil();
        if NIL_NODE {
            debug_assert!(x != nil, "a link of a node on no list");
        } else {
            assert!(x != nil, "a link of a node on no list");
        }
    }

    /// The oldest object of `list`, or its sentinel if the list is empty.
    ///
    /// # Safety
    /// `list` exists.
    #[inline(always)]
    pub(crate) unsafe fn back(&mut self, list: usize) -> u32 {
        self.at(self.sentinel(list)).prev
    }

    /// Insert `id` right behind `at` (towards the back).
    ///
    /// # Safety
    /// `at` is a node; `id` an object, or a node if nil is one.
    #[inline(always)]
    unsafe fn link_after(&mut self, at: u32, id: u32) {
        let next = self.at(at).next;
        self.check_link(next);
        *self.at(id) = Link { prev: at, next };
        self.at(at).next = id;
        self.at(next).prev = id;
    }

    /// Join the neighbours of `id` to each other, taking it out of its list; its own
    /// links are left stale for the caller to rewrite.
    ///
    /// # Safety
    /// `id` is an object, or a node if nil is one.
    #[inline(always)]
    unsafe fn join_neighbours(&mut self, id: u32) {
        let Link { prev, next } = *self.at(id);
        self.check_link(prev);
        self.check_link(next);
        self.at(prev).next = next;
        self.at(next).prev = prev;
    }

    /// Insert `id` (on no list) at the front of `list`.
    ///
    /// # Safety
    /// `list` exists; `id` is an object, or a node if nil is one.
    #[inline(always)]
    pub(crate) unsafe fn push_front(&mut self, list: usize, id: u32) {
        self.link_after(self.sentinel(list), id);
    }

    /// Remove `id` from its list.
    ///
    /// # Safety
    /// `id` is an object, or a node if nil is one.
    #[inline(always)]
    pub(crate) unsafe fn unlink(&mut self, id: u32) {
        self.join_neighbours(id);
        let nil = self.nil();
        *self.at(id) = Link {
            prev: nil,
            next: nil,
        };
    }

    /// Move `id` (on any list) to the front of `list`: unlink and push without marking
    /// `id` unlinked in between. The sentinel's successor needs no check: with NIL, a
    /// sentinel is never unlinked (the caller links and unlinks only objects), so its
    /// links are never NIL.
    ///
    /// # Safety
    /// `list` exists; `id` is an object, or a node if nil is one.
    #[inline(always)]
    pub(crate) unsafe fn move_to_front(&mut self, list: usize, id: u32) {
        self.join_neighbours(id);
        let s = self.sentinel(list);
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

    fn push_unlink_and_order<const NIL_NODE: bool>() {
        let mut l = Lists::<NIL_NODE>::new(6, 2);
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
        assert_eq!(l.nodes(), 6 + 2 + NIL_NODE as usize);
    }

    #[test]
    fn push_unlink_and_order_with_nil_and_with_a_nil_node() {
        push_unlink_and_order::<false>();
        push_unlink_and_order::<true>();
    }

    #[test]
    #[should_panic(expected = "already on a list")]
    fn inserting_a_linked_object_panics() {
        let mut l = Lists::<false>::new(2, 1);
        l.push_front(0, 0);
        l.push_front(0, 0);
    }

    #[test]
    #[should_panic(expected = "a link of a node on no list")]
    fn inserting_after_an_unlinked_node_panics() {
        let mut l = Lists::<false>::new(2, 1);
        l.insert_after(0, 1);
    }

    #[test]
    #[should_panic(expected = "a link of a node on no list")]
    fn unlinking_an_unlinked_object_panics() {
        let mut l = Lists::<false>::new(2, 1);
        l.unlink(1);
    }

    /// With a nil node, the misuses above are checked in debug builds only (release
    /// builds give wrong lists, which validate reports: below).
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "a link of a node on no list")]
    fn with_a_nil_node_unlinking_an_unlinked_object_panics_in_debug_builds() {
        let mut l = Lists::<true>::new(2, 1);
        l.unlink(1);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "a link of a node on no list")]
    fn with_a_nil_node_inserting_after_an_unlinked_node_panics_in_debug_builds() {
        let mut l = Lists::<true>::new(2, 1);
        l.insert_after(0, 1);
    }

    #[test]
    #[should_panic(expected = "no such list")]
    fn pushing_onto_a_list_that_does_not_exist_panics() {
        let mut l = Lists::<true>::new(2, 1);
        l.push_front(1, 0);
    }

    fn validate_catches_broken_links<const NIL_NODE: bool>() {
        let mut l = Lists::<NIL_NODE>::new(4, 1);
        l.push_front(0, 0);
        l.push_front(0, 1);
        l.links[1].next = 2; // 2 is not linked back
        assert!(l.validate(1).is_err());
        let mut l = Lists::<NIL_NODE>::new(4, 1);
        l.push_front(0, 0);
        l.links[3] = Link { prev: 0, next: 0 }; // stray links on an unlisted node
        assert!(l.validate(1).is_err());
    }

    #[test]
    fn validate_catches_broken_links_with_nil_and_with_a_nil_node() {
        validate_catches_broken_links::<false>();
        validate_catches_broken_links::<true>();
        let mut l = Lists::<true>::new(4, 1);
        l.push_front(0, 0);
        assert!(l.validate(1).is_ok());
        l.links[5].prev = 0; // the nil node linked in
        assert!(l.validate(1).is_err());
        // Misuse in a release build (no check): the nil node is linked in, and
        // validate says so.
        if !cfg!(debug_assertions) {
            let mut l = Lists::<true>::new(4, 1);
            l.insert_after(1, 2);
            assert!(l.validate(1).is_err());
        }
    }
}
