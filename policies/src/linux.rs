//! `linux`: the page cache as the classic split LRU of mm/vmscan.c runs it for an
//! mmap'd model file (not MGLRU), with the kernel's own blind spots. Measured against
//! the real kernel by `moe-spill kernel-replay` (docs/kernel.md), where the simpler
//! `linux-eager` model (linux_eager.rs) missed by up to 15%. The rules, and the kernel
//! code each one stands for:
//!
//! - **Sampled references.** A hit sets the object's reference bit and moves nothing:
//!   a read through a mapping only sets the page-table accessed bit, which the kernel
//!   looks at when reclaim reaches the page (`folio_referenced` in
//!   `folio_check_references`), not when the access happens.
//! - **A miss** inserts at the inactive head with the reference bit set (the fault that
//!   instantiated the page leaves its PTE young) and the referenced flag clear
//!   (`PG_referenced`; new file folios start inactive, `folio_add_lru`).
//! - **Eviction scan.** While active > ratio x inactive the active tail moves to the
//!   inactive head with its bit cleared (`shrink_active_list` when `inactive_is_low`;
//!   referenced file folios are deactivated anyway unless `VM_EXEC`). Then the inactive
//!   tail: bit and flag set -> clear the bit, activate (to the active head); bit only ->
//!   clear the bit, set the flag, rotate to the inactive head (the "look twice" second
//!   trip); no bit -> evict it. Repeat until one object is evicted.
//! - **Refaults** (mm/workingset.c). A clock ticks at every eviction and every
//!   activation (`nonresident_age`); an evicted id keeps its eviction time (the shadow
//!   entry). A miss whose distance (now - eviction time) is at most the active list's
//!   length enters the active head instead (`workingset_refault` -> `folio_set_active`),
//!   which is an activation and ticks the clock.
//! - **The ratio** is the kernel's `inactive_ratio`: `isqrt(10 x GiB)` of the cache when
//!   it holds at least 1 GiB, else 1 (3 at 1 GiB, 5 at 3 GiB, 31 at 100 GiB). It depends
//!   on bytes, so the registry computes it from capacity x expert bytes (`linux`), or
//!   takes it from the spec (`linux:ratio=R`).
//!
//! Left out: readahead and page granularity (the page-level model of kernel-replay,
//! `src/kernel/pagemodel.rs`, runs these same lists over pages, [`SplitLru`]), large
//! folios, fault-around, dirty pages, the shadow entries' own reclaim (here an eviction
//! time is kept forever), the proportional scanning of both lists (`get_scan_count`) and
//! the deactivation of active pages whenever refaults happened since the last reclaim
//! round (`may_deactivate` in mm/vmscan.c), and MGLRU, which several distributions enable
//! by default. Measured within 2% of the kernel up to ratio 7 (6.5 GiB of cache); larger
//! ratios are the kernel's rules extrapolated.
//!
//! Two deliberate simplifications of the kernel, kept because the measurements do not
//! need more: the referenced flag survives activation and deactivation (the kernel
//! clears `PG_referenced` when it activates), and the ratio is computed once from the
//! capacity rather than from the current list sizes (equal whenever the cache is full,
//! which is the only time the ratio is consulted).

use crate::ring::Ring;
use crate::{ObjId, Outcome, Policy};

/// Per-id state bits: which list (none, inactive, active), the reference bit (the PTE
/// accessed bit) and the referenced flag (`PG_referenced`).
const INACTIVE: u8 = 1;
const ACTIVE: u8 = 2;
const WHERE: u8 = INACTIVE | ACTIVE;
const REF: u8 = 4;
const FLAG: u8 = 8;

/// The kernel's `inactive_ratio` for a file LRU of `cache_bytes` (`inactive_is_low` in
/// mm/vmscan.c): `int_sqrt(10 x GiB)` with GiB rounded down, and 1 below 1 GiB.
pub fn kernel_inactive_ratio(cache_bytes: u64) -> u32 {
    let gib = cache_bytes >> 30;
    if gib == 0 {
        1
    } else {
        (10 * gib).isqrt() as u32
    }
}

/// The two lists with sampled reference bits and refault activation over dense ids, the
/// engine of the `linux` policy (one id per expert) and of kernel-replay's page-level
/// model (one id per page). It only orders and evicts; the caller decides when to evict
/// (the policy: before each insertion into a full cache; the page model: in reclaim
/// batches).
///
/// Both lists only take ids at their head and give them up at their tail (a hit moves
/// nothing), so each is a ring queue.
#[derive(Clone, Debug)]
pub struct SplitLru {
    inactive: Ring,
    active: Ring,
    state: Vec<u8>,
    /// Eviction time + 1 of every id evicted at least once (0: never evicted).
    evicted_at: Vec<u64>,
    /// Ticks at every eviction and every activation (the kernel's nonresident_age).
    clock: u64,
    ratio: usize,
    /// Refaults activated so far.
    refault_activations: u64,
}

impl SplitLru {
    /// Lists over ids `0..n_ids` with active:inactive at most `ratio` (>= 1) when
    /// evicting.
    pub fn new(n_ids: usize, ratio: u32) -> Self {
        Self::bounded(n_ids, ratio, n_ids)
    }

    /// The same, for a caller that never keeps more than `max_resident` ids resident:
    /// the rings are sized to that, so a small cache over a large id space stays small
    /// in the CPU's caches too.
    pub fn bounded(n_ids: usize, ratio: u32, max_resident: usize) -> Self {
        let ring = max_resident.min(n_ids);
        SplitLru {
            inactive: Ring::new(ring),
            active: Ring::new(ring),
            state: vec![0; n_ids],
            evicted_at: vec![0; n_ids],
            clock: 0,
            ratio: ratio.max(1) as usize,
            refault_activations: 0,
        }
    }

    pub fn ratio(&self) -> u32 {
        self.ratio as u32
    }

    /// Resident ids.
    pub fn len(&self) -> usize {
        self.inactive.len() + self.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn n_active(&self) -> usize {
        self.active.len()
    }

    #[inline]
    pub fn is_resident(&self, id: ObjId) -> bool {
        self.state[id as usize] & WHERE != 0
    }

    /// A use of a resident id: set its reference bit, move nothing. Returns false (and
    /// does nothing) if `id` is not resident.
    #[inline]
    pub fn reference(&mut self, id: ObjId) -> bool {
        let s = &mut self.state[id as usize];
        if *s & WHERE == 0 {
            return false;
        }
        *s |= REF;
        true
    }

    /// Bring in a non-resident id: at the active head if it refaults within the active
    /// list's length, else at the inactive head; its reference bit set if `referenced`
    /// (a fault on it), clear if not (read ahead of use). The caller makes room first.
    #[inline]
    pub fn insert(&mut self, id: ObjId, referenced: bool) {
        self.insert_within(id, referenced, self.active.len());
    }

    /// As [`SplitLru::insert`], but a refault is activated when its distance is at most
    /// `workingset` pages instead of the active list's current length: for a caller whose
    /// kernel compares with a statistic that lags the lists (`workingset_test_recent`
    /// reads the memcg's flushed NR_ACTIVE_FILE, `lruvec_page_state`).
    #[inline]
    pub fn insert_within(&mut self, id: ObjId, referenced: bool, workingset: usize) {
        let i = id as usize;
        debug_assert!(self.state[i] & WHERE == 0, "insert of a resident id {id}");
        let bit = if referenced { REF } else { 0 };
        let at = self.evicted_at[i];
        if at != 0 && self.clock - (at - 1) <= workingset as u64 {
            self.active.push_front(id);
            self.state[i] = ACTIVE | bit;
            self.clock += 1;
            self.refault_activations += 1;
        } else {
            self.inactive.push_front(id);
            self.state[i] = INACTIVE | bit;
        }
    }

    /// Scan until one id is evicted and return it. Panics if nothing is resident.
    pub fn evict(&mut self) -> ObjId {
        assert!(!self.is_empty(), "evict from empty lists");
        // The steps of `deactivate_tail` and `scan_inactive_tail`, written out with the
        // state's pointer taken once: the hot loop of the `linux` replay (built from the
        // two calls it ran 7-9 % slower in `bench_replay`, 3 % with them inline(always)).
        // Every id on the rings came in through `insert`, which indexed `state` and
        // `evicted_at` with it: here they are indexed without bounds checks.
        let state = self.state.as_mut_ptr();
        loop {
            // inactive_is_low: deactivate from the active tail. With inactive empty and
            // active not, the condition holds, so the inactive list is never empty below.
            while self.active.len() > self.ratio * self.inactive.len() {
                let t = self.active.pop_back();
                self.inactive.push_front(t);
                // SAFETY: t came off a ring (see above).
                let s = unsafe { &mut *state.add(t as usize) };
                *s = INACTIVE | (*s & FLAG);
            }
            let v = self.inactive.pop_back();
            // SAFETY: v came off a ring (see above).
            let sv = unsafe { &mut *state.add(v as usize) };
            let s = *sv;
            if s & REF == 0 {
                *sv = 0;
                // SAFETY: as for `state`, the same length.
                unsafe { *self.evicted_at.get_unchecked_mut(v as usize) = self.clock + 1 };
                self.clock += 1;
                return v;
            }
            if s & FLAG != 0 {
                self.active.push_front(v);
                *sv = ACTIVE | (s & FLAG);
                self.clock += 1;
            } else {
                self.inactive.push_front(v);
                *sv = INACTIVE | FLAG;
            }
        }
    }

    /// Whether the active list is over `ratio` x the inactive one (`inactive_is_low`).
    #[inline]
    pub fn inactive_is_low(&self) -> bool {
        self.inactive_is_low_at(self.active.len(), self.inactive.len())
    }

    /// `inactive_is_low` on list sizes a caller holds (the kernel's reclaim reads them
    /// from the memcg's statistics as of their last flush, not from the lists).
    #[inline]
    pub fn inactive_is_low_at(&self, active: usize, inactive: usize) -> bool {
        active > self.ratio * inactive
    }

    pub fn n_inactive(&self) -> usize {
        self.inactive.len()
    }

    /// Refaults activated so far (the kernel's `WORKINGSET_ACTIVATE_FILE` counter).
    pub fn refault_activations(&self) -> u64 {
        self.refault_activations
    }

    /// `shrink_active_list` on the active tail (the list must not be empty): move it to
    /// the inactive head with its reference bit cleared (`folio_referenced` clears the
    /// young PTEs it sums; referenced file folios are deactivated anyway).
    #[inline]
    pub fn deactivate_tail(&mut self) {
        let t = self.active.pop_back();
        self.inactive.push_front(t);
        // SAFETY: every id on the rings came in through `insert`, which indexed `state`
        // with it.
        let s = unsafe { self.state.get_unchecked_mut(t as usize) };
        *s = INACTIVE | (*s & FLAG);
    }

    /// `shrink_folio_list` on the inactive tail (the list must not be empty): evict it
    /// and return it if unreferenced, else activate it (flag or several young PTEs) or
    /// give it a second trip (look twice) and return None.
    #[inline]
    pub fn scan_inactive_tail(&mut self) -> Option<ObjId> {
        let v = self.inactive.pop_back();
        // SAFETY: as in `deactivate_tail`; `evicted_at` has the same length.
        let sv = unsafe { self.state.get_unchecked_mut(v as usize) };
        let s = *sv;
        if s & REF == 0 {
            *sv = 0;
            unsafe { *self.evicted_at.get_unchecked_mut(v as usize) = self.clock + 1 };
            self.clock += 1;
            return Some(v);
        }
        if s & FLAG != 0 {
            self.active.push_front(v);
            *sv = ACTIVE | (s & FLAG);
            self.clock += 1;
        } else {
            self.inactive.push_front(v);
            *sv = INACTIVE | FLAG;
        }
        None
    }

    /// Resident ids of (inactive, active), head first (for tests).
    pub fn lists(&self) -> (Vec<ObjId>, Vec<ObjId>) {
        (self.inactive.collect(), self.active.collect())
    }

    /// (reference bit, referenced flag) of `id` (for tests).
    pub fn bits(&self, id: ObjId) -> (bool, bool) {
        let s = self.state[id as usize];
        (s & REF != 0, s & FLAG != 0)
    }

    /// Check the lists against the states and counts (O(n_ids)).
    pub fn validate(&self) -> Result<(), String> {
        let mut all = Vec::with_capacity(self.len());
        for (l, st) in [(&self.inactive, INACTIVE), (&self.active, ACTIVE)] {
            let ids = l.collect();
            if ids.iter().any(|&id| self.state[id as usize] & WHERE != st) {
                return Err(format!("split lru: list {st} holds an id of another state"));
            }
            all.extend(ids);
        }
        all.sort_unstable();
        if let Some(w) = all.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("split lru: id {} is listed twice", w[0]));
        }
        if let Some(id) = self.state.iter().position(|&s| s & WHERE == 0 && s != 0) {
            return Err(format!("split lru: non-resident id {id} has bits set"));
        }
        if self.state.iter().filter(|&&s| s & WHERE != 0).count() != self.len() {
            return Err("split lru: states do not match the lists".into());
        }
        if let Some(id) = self.evicted_at.iter().position(|&t| t > self.clock) {
            return Err(format!("split lru: id {id} evicted in the future"));
        }
        Ok(())
    }
}

/// The `linux` policy: [`SplitLru`] over experts, one eviction before each insertion
/// into a full cache.
#[derive(Clone, Debug)]
pub struct Linux {
    capacity: usize,
    /// Some(R): built from `linux:ratio=R`; None: the kernel's ratio for the cache size.
    fixed_ratio: Option<u32>,
    lru: SplitLru,
}

impl Linux {
    /// With the kernel's ratio for `capacity` x `expert_bytes` (1 when the expert size
    /// is unknown: the kernel's value below 1 GiB).
    pub fn new(capacity: usize, n_ids: usize, expert_bytes: Option<u64>) -> Self {
        let bytes = expert_bytes.map_or(0, |b| b.saturating_mul(capacity as u64));
        Linux {
            capacity,
            fixed_ratio: None,
            lru: SplitLru::bounded(n_ids, kernel_inactive_ratio(bytes), capacity),
        }
    }

    /// With active:inactive at most `ratio` (>= 1).
    pub fn with_ratio(capacity: usize, n_ids: usize, ratio: u32) -> Self {
        Linux {
            capacity,
            fixed_ratio: Some(ratio),
            lru: SplitLru::bounded(n_ids, ratio, capacity),
        }
    }

    /// The active:inactive ratio in use.
    pub fn ratio(&self) -> u32 {
        self.lru.ratio()
    }

    /// The lists and bits (for tests).
    pub fn split_lru(&self) -> &SplitLru {
        &self.lru
    }
}

impl Policy for Linux {
    fn name(&self) -> String {
        match self.fixed_ratio {
            None => "linux".into(),
            Some(r) => format!("linux:ratio={r}"),
        }
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.lru.len()
    }
    fn contains(&self, id: ObjId) -> bool {
        self.lru.is_resident(id)
    }

    #[inline(always)]
    fn access(&mut self, id: ObjId) -> Outcome {
        if self.lru.reference(id) {
            return Outcome::Hit;
        }
        if self.capacity == 0 {
            return Outcome::Miss { evicted: None };
        }
        let evicted = (self.lru.len() == self.capacity).then(|| self.lru.evict());
        self.lru.insert(id, true);
        Outcome::Miss { evicted }
    }

    fn validate(&self) -> Result<(), String> {
        self.lru.validate()?;
        if self.len() > self.capacity {
            return Err(format!(
                "linux: {} resident > capacity {}",
                self.len(),
                self.capacity
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_within_compares_the_given_workingset() {
        // 0 is evicted at clock 0; two more evictions make its refault distance 3.
        let mut l = SplitLru::new(8, 1);
        for id in 0..3 {
            l.insert(id, false);
        }
        for _ in 0..3 {
            l.evict();
        }
        let mut a = l.clone();
        a.insert_within(0, false, 2);
        assert_eq!((a.n_active(), a.refault_activations()), (0, 0));
        l.insert_within(0, false, 3);
        assert_eq!((l.n_active(), l.refault_activations()), (1, 1));
    }

    #[test]
    fn kernel_ratios() {
        let gib = 1u64 << 30;
        for (bytes, r) in [
            (0, 1),
            (gib - 1, 1),
            (gib, 3),
            (2 * gib, 4),
            (3 * gib, 5),
            (10 * gib, 10),
            (100 * gib, 31),
            (1024 * gib, 101),
        ] {
            assert_eq!(kernel_inactive_ratio(bytes), r, "{bytes} B");
        }
    }

    #[test]
    fn scan_rotates_then_activates_then_evicts() {
        // Three ids inserted referenced; the first scan gives each a second trip
        // (flag set, bit cleared); with nothing referenced since, the oldest goes.
        let mut l = SplitLru::new(4, 1);
        for id in [0, 1, 2] {
            l.insert(id, true);
        }
        assert_eq!(l.evict(), 0);
        assert_eq!(l.lists(), (vec![2, 1], vec![]));
        assert_eq!(l.bits(1), (false, true));
        // 1 is referenced again: bit and flag -> activated; 2 (flag, no bit) goes.
        l.reference(1);
        assert_eq!(l.evict(), 2);
        assert_eq!(l.lists(), (vec![], vec![1]));
        // Only an active id left: it is deactivated (bit cleared) and then evicted.
        assert_eq!(l.evict(), 1);
        assert!(l.is_empty());
        l.validate().unwrap();
        // Eviction times 0, 2 (after the activation of 1) and 3; 1 returns at distance
        // 1 but the active list is empty, so it starts inactive.
        l.insert(1, true);
        assert_eq!(l.lists(), (vec![1], vec![]));
    }

    #[test]
    fn refault_within_the_active_list_activates() {
        let mut l = SplitLru::new(8, 3);
        // Build an active list of 3: ids 0, 1, 2 referenced twice.
        for id in [0, 1, 2, 3] {
            l.insert(id, true);
        }
        assert_eq!(l.evict(), 0); // 0..3 rotated once (flag), 0 not referenced again
        for id in [1, 2, 3] {
            l.reference(id);
        }
        l.insert(4, false);
        // 1, 2, 3 have bit and flag: all three activated (clock 1..3), then 4 evicted
        // at clock 4.
        assert_eq!(l.evict(), 4);
        assert_eq!(l.lists(), (vec![], vec![3, 2, 1]));
        // 4 comes back at distance 5 - 4 = 1 <= 3 active: straight to the active head.
        l.insert(4, true);
        assert_eq!(l.lists(), (vec![], vec![4, 3, 2, 1]));
        assert_eq!(l.refault_activations(), 1);
        // 0, evicted at clock 0, is 6 ticks away: > 4 active, so inactive.
        l.insert(0, true);
        assert_eq!(l.lists(), (vec![0], vec![4, 3, 2, 1]));
        assert_eq!(l.refault_activations(), 1);
        l.validate().unwrap();
        // The scan's steps one at a time: the active tail 1 is deactivated with its bit
        // cleared; the inactive tail 0 (bit only) gets its second trip, then 1 goes.
        assert!(l.inactive_is_low());
        l.deactivate_tail();
        assert_eq!(l.lists(), (vec![1, 0], vec![4, 3, 2]));
        assert_eq!(l.bits(1), (false, true));
        assert_eq!(l.scan_inactive_tail(), None);
        assert_eq!(l.lists(), (vec![0, 1], vec![4, 3, 2]));
        assert_eq!(l.scan_inactive_tail(), Some(1));
        assert_eq!(l.n_inactive(), 1);
        l.validate().unwrap();
    }
}
