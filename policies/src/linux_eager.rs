//! `linux-eager`: the first, simpler model of the Linux page cache's two lists (the
//! classic split LRU of mm/vmscan.c and mm/swap.c, not MGLRU), kept for comparison with
//! the refined `linux` (linux.rs). It sees every access when it happens; the kernel
//! does not (it samples page-table accessed bits when reclaim reaches a page), which is
//! why this model evicts too well at large budgets (docs/kernel.md: -9% to -15% of
//! the kernel's reads at 75-90% of the experts). Each rule and the kernel behaviour it
//! approximates:
//! - a miss (page fault that reads the expert from disk) puts the object at the head of
//!   the inactive list: new file folios are added to the inactive file LRU
//!   (`folio_add_lru`), so use-once data never displaces the active list;
//! - a hit on an inactive object promotes it to the head of the active list: the
//!   fault counts as the first reference and this hit as the second, the
//!   "referenced twice while inactive -> activate" rule of `mark_page_accessed`
//!   (mm/swap.c) and `folio_check_references` (mm/vmscan.c);
//! - a hit on an active object changes nothing: `shrink_active_list` deactivates
//!   referenced file folios anyway unless they are `VM_EXEC` (model weights are not),
//!   so the active list is ordered by activation, not by recency;
//! - the active list holds at most `floor(fraction * capacity)` objects; when a
//!   promotion overflows it, its tail is demoted to the head of the inactive list
//!   (`shrink_active_list` run when `inactive_is_low`; an inactive_ratio of 1, the
//!   kernel's value below 1 GiB of file LRU, is the default fraction 1/2);
//! - the victim is the tail of the inactive list (`shrink_inactive_list`); with
//!   fraction < 1 the inactive list is never empty when the cache is full.
//!
//! Left out (the refined `linux` has the first three): shadow entries and refault
//! activation (mm/workingset.c), sampling of PTE accessed bits by reclaim scans, the
//! kernel's size-dependent active:inactive ratio, readahead (faults around the missing page), page
//! granularity (an expert is one object, not many pages), dirty/writeback pages, cgroups,
//! and MGLRU, which several distributions enable by default.

use crate::list::Lists;
use crate::{ObjId, Outcome, Policy};

const NONE: u8 = 0;
const INACTIVE: u8 = 1;
const ACTIVE: u8 = 2;

const L_INACTIVE: usize = 0;
const L_ACTIVE: usize = 1;

/// The default largest share of the cache that the active list may hold.
pub const DEFAULT_ACTIVE_FRACTION: f64 = 0.5;

#[derive(Clone, Debug)]
pub struct LinuxEager {
    capacity: usize,
    fraction: f64,
    active_max: usize,
    lists: Lists,
    state: Vec<u8>,
    n_inactive: usize,
    n_active: usize,
}

/// The largest active list for `capacity` and `fraction` (in [0, 1)).
pub(crate) fn active_max(capacity: usize, fraction: f64) -> usize {
    ((fraction * capacity as f64).floor() as usize).min(capacity.saturating_sub(1))
}

impl LinuxEager {
    /// `fraction` must be in [0, 1) (checked by the registry; clamped here).
    pub fn new(capacity: usize, n_ids: usize, fraction: f64) -> Self {
        LinuxEager {
            capacity,
            fraction,
            active_max: active_max(capacity, fraction.clamp(0.0, 1.0)),
            lists: Lists::new(n_ids, 2),
            state: vec![NONE; n_ids],
            n_inactive: 0,
            n_active: 0,
        }
    }

    /// Resident ids of (inactive, active), head first (for tests).
    pub fn lists(&self) -> (Vec<ObjId>, Vec<ObjId>) {
        (self.lists.collect(L_INACTIVE), self.lists.collect(L_ACTIVE))
    }
}

impl Policy for LinuxEager {
    fn name(&self) -> String {
        if self.fraction == DEFAULT_ACTIVE_FRACTION {
            "linux-eager".into()
        } else {
            format!("linux-eager:{}", self.fraction)
        }
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.n_inactive + self.n_active
    }
    fn contains(&self, id: ObjId) -> bool {
        self.state[id as usize] != NONE
    }

    #[inline]
    fn access(&mut self, id: ObjId) -> Outcome {
        match self.state[id as usize] {
            ACTIVE => Outcome::Hit,
            INACTIVE => {
                self.lists.move_to_front(L_ACTIVE, id);
                self.state[id as usize] = ACTIVE;
                self.n_inactive -= 1;
                self.n_active += 1;
                if self.n_active > self.active_max {
                    let t = self
                        .lists
                        .back(L_ACTIVE)
                        .expect("an overfull active list has a tail");
                    self.lists.move_to_front(L_INACTIVE, t);
                    self.state[t as usize] = INACTIVE;
                    self.n_active -= 1;
                    self.n_inactive += 1;
                }
                Outcome::Hit
            }
            _ => {
                if self.capacity == 0 {
                    return Outcome::Miss { evicted: None };
                }
                let mut evicted = None;
                if self.n_inactive + self.n_active == self.capacity {
                    let v = self
                        .lists
                        .back(L_INACTIVE)
                        .expect("inactive is non-empty when full");
                    self.lists.unlink(v);
                    self.state[v as usize] = NONE;
                    self.n_inactive -= 1;
                    evicted = Some(v);
                }
                self.lists.push_front(L_INACTIVE, id);
                self.state[id as usize] = INACTIVE;
                self.n_inactive += 1;
                Outcome::Miss { evicted }
            }
        }
    }

    fn validate(&self) -> Result<(), String> {
        let lists = self.lists.validate(2)?;
        for (l, (st, n)) in lists
            .iter()
            .zip([(INACTIVE, self.n_inactive), (ACTIVE, self.n_active)])
        {
            if l.len() != n || l.iter().any(|&id| self.state[id as usize] != st) {
                return Err(format!(
                    "linux-eager: list {st} does not match its count or states"
                ));
            }
        }
        if self.state.iter().filter(|&&s| s != NONE).count() != self.n_inactive + self.n_active {
            return Err("linux-eager: state flags do not match the lists".into());
        }
        if self.n_active > self.active_max || self.len() > self.capacity {
            return Err(format!(
                "linux-eager: active {} > max {}",
                self.n_active, self.active_max
            ));
        }
        Ok(())
    }
}
