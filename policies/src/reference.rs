//! Naive, obviously correct implementations of every policy: plain `Vec`/`VecDeque`
//! scans, each a direct transcription of the policy's definition (or of the libCacheSim
//! source it must match), with no cleverness and no speed. The differential tests run
//! each fast policy against its reference access by access; the main crate's tests may
//! use them too (`reference::build` takes the same specs as `PolicySpec::build`).
//!
//! Queues are `VecDeque`s with the head (newest) at the front and the tail (oldest) at
//! the back, as in libCacheSim.

use std::collections::{HashMap, VecDeque};

use crate::linux_eager::active_max;
use crate::registry::{
    make_naive, BaseArgs, BaseFactory, BaseSpec, BuildContext, BuildError, PinSet, PolicySpec,
};
use crate::s3fifo::s3fifo_sizes;
use crate::{ObjId, Outcome, Policy};

/// Build the naive version of `spec` (same errors as `PolicySpec::build`, and an error
/// for a policy whose table entry names no naive implementation).
pub fn build(spec: &PolicySpec, ctx: &BuildContext) -> Result<Box<dyn Policy>, BuildError> {
    spec.build_with(ctx, &Naive)
}

struct Naive;

impl BaseFactory for Naive {
    fn make(
        &self,
        base: BaseSpec,
        args: BaseArgs,
        pin: Option<PinSet>,
    ) -> Result<Box<dyn Policy>, String> {
        let Some(inner) = make_naive(base, args) else {
            return Err(format!("{} has no reference implementation", base.name()));
        };
        Ok(match pin {
            None => inner,
            Some(p) => Box::new(RefPinned::new(p.name, inner, p.ids)),
        })
    }
}

fn pos(v: &VecDeque<u32>, id: u32) -> Option<usize> {
    v.iter().position(|&x| x == id)
}

const MISS: Outcome = Outcome::Miss { evicted: None };

/// LRU: the front is the most recently used.
#[derive(Clone, Debug)]
pub struct RefLru {
    cap: usize,
    q: VecDeque<u32>,
}

impl RefLru {
    pub fn new(cap: usize) -> Self {
        RefLru {
            cap,
            q: VecDeque::new(),
        }
    }
}

impl Policy for RefLru {
    fn name(&self) -> String {
        "ref-lru".into()
    }
    fn capacity(&self) -> usize {
        self.cap
    }
    fn len(&self) -> usize {
        self.q.len()
    }
    fn contains(&self, id: ObjId) -> bool {
        self.q.contains(&id)
    }
    fn access(&mut self, id: ObjId) -> Outcome {
        if let Some(i) = pos(&self.q, id) {
            self.q.remove(i);
            self.q.push_front(id);
            return Outcome::Hit;
        }
        if self.cap == 0 {
            return MISS;
        }
        let evicted = if self.q.len() == self.cap {
            self.q.pop_back()
        } else {
            None
        };
        self.q.push_front(id);
        Outcome::Miss { evicted }
    }
}

/// FIFO: the front is the newest.
#[derive(Clone, Debug)]
pub struct RefFifo {
    cap: usize,
    q: VecDeque<u32>,
}

impl RefFifo {
    pub fn new(cap: usize) -> Self {
        RefFifo {
            cap,
            q: VecDeque::new(),
        }
    }
}

impl Policy for RefFifo {
    fn name(&self) -> String {
        "ref-fifo".into()
    }
    fn capacity(&self) -> usize {
        self.cap
    }
    fn len(&self) -> usize {
        self.q.len()
    }
    fn contains(&self, id: ObjId) -> bool {
        self.q.contains(&id)
    }
    fn access(&mut self, id: ObjId) -> Outcome {
        if self.q.contains(&id) {
            return Outcome::Hit;
        }
        if self.cap == 0 {
            return MISS;
        }
        let evicted = if self.q.len() == self.cap {
            self.q.pop_back()
        } else {
            None
        };
        self.q.push_front(id);
        Outcome::Miss { evicted }
    }
}

/// CLOCK exactly as libCacheSim's Clock.c: a queue of (id, bit); the tail with its bit
/// set is moved to the head with the bit cleared, the tail with its bit clear is evicted.
#[derive(Clone, Debug)]
pub struct RefClock {
    cap: usize,
    q: VecDeque<(u32, bool)>,
}

impl RefClock {
    pub fn new(cap: usize) -> Self {
        RefClock {
            cap,
            q: VecDeque::new(),
        }
    }
}

impl Policy for RefClock {
    fn name(&self) -> String {
        "ref-clock".into()
    }
    fn capacity(&self) -> usize {
        self.cap
    }
    fn len(&self) -> usize {
        self.q.len()
    }
    fn contains(&self, id: ObjId) -> bool {
        self.q.iter().any(|&(x, _)| x == id)
    }
    fn access(&mut self, id: ObjId) -> Outcome {
        if let Some(e) = self.q.iter_mut().find(|e| e.0 == id) {
            e.1 = true;
            return Outcome::Hit;
        }
        if self.cap == 0 {
            return MISS;
        }
        let mut evicted = None;
        if self.q.len() == self.cap {
            loop {
                let (t, bit) = self.q.pop_back().unwrap();
                if bit {
                    self.q.push_front((t, false));
                } else {
                    evicted = Some(t);
                    break;
                }
            }
        }
        self.q.push_front((id, false));
        Outcome::Miss { evicted }
    }
}

/// SIEVE as libCacheSim's Sieve.c: insert at the head, the hand walks from the tail
/// towards the head clearing visited bits, evicts the first unvisited object and stays
/// at its neighbour towards the head.
#[derive(Clone, Debug)]
pub struct RefSieve {
    cap: usize,
    /// Index 0 is the tail (oldest), the last element the head (newest).
    q: Vec<(u32, bool)>,
    hand: Option<usize>,
}

impl RefSieve {
    pub fn new(cap: usize) -> Self {
        RefSieve {
            cap,
            q: Vec::new(),
            hand: None,
        }
    }
}

impl Policy for RefSieve {
    fn name(&self) -> String {
        "ref-sieve".into()
    }
    fn capacity(&self) -> usize {
        self.cap
    }
    fn len(&self) -> usize {
        self.q.len()
    }
    fn contains(&self, id: ObjId) -> bool {
        self.q.iter().any(|&(x, _)| x == id)
    }
    fn access(&mut self, id: ObjId) -> Outcome {
        if let Some(e) = self.q.iter_mut().find(|e| e.0 == id) {
            e.1 = true;
            return Outcome::Hit;
        }
        if self.cap == 0 {
            return MISS;
        }
        let mut evicted = None;
        if self.q.len() == self.cap {
            let mut i = self.hand.unwrap_or(0);
            while self.q[i].1 {
                self.q[i].1 = false;
                i = if i + 1 == self.q.len() { 0 } else { i + 1 };
            }
            evicted = Some(self.q.remove(i).0);
            // The neighbour towards the head now sits at index i.
            self.hand = (i < self.q.len()).then_some(i);
        }
        self.q.push((id, false));
        Outcome::Miss { evicted }
    }
}

/// ARC transcribed from libCacheSim's ARC.c (see `arc.rs` for the rules). Each list
/// has its MRU at the front.
#[derive(Clone, Debug)]
pub struct RefArc {
    cap: usize,
    t1: VecDeque<u32>,
    t2: VecDeque<u32>,
    b1: VecDeque<u32>,
    b2: VecDeque<u32>,
    p: f64,
}

impl RefArc {
    pub fn new(cap: usize) -> Self {
        RefArc {
            cap,
            t1: VecDeque::new(),
            t2: VecDeque::new(),
            b1: VecDeque::new(),
            b2: VecDeque::new(),
            p: 0.0,
        }
    }

    fn replace(&mut self, hit_in_b2: bool) -> u32 {
        let t1 = self.t1.len() as f64;
        if (!self.t1.is_empty() && (t1 > self.p || (t1 == self.p && hit_in_b2)))
            || self.t2.is_empty()
        {
            let v = self.t1.pop_back().unwrap();
            self.b1.push_front(v);
            v
        } else {
            let v = self.t2.pop_back().unwrap();
            self.b2.push_front(v);
            v
        }
    }
}

impl Policy for RefArc {
    fn name(&self) -> String {
        "ref-arc".into()
    }
    fn capacity(&self) -> usize {
        self.cap
    }
    fn len(&self) -> usize {
        self.t1.len() + self.t2.len()
    }
    fn contains(&self, id: ObjId) -> bool {
        self.t1.contains(&id) || self.t2.contains(&id)
    }
    fn access(&mut self, id: ObjId) -> Outcome {
        let c = self.cap;
        if let Some(i) = pos(&self.t1, id) {
            self.t1.remove(i);
            self.t2.push_front(id);
            return Outcome::Hit;
        }
        if let Some(i) = pos(&self.t2, id) {
            self.t2.remove(i);
            self.t2.push_front(id);
            return Outcome::Hit;
        }
        if let Some(i) = pos(&self.b1, id) {
            let delta = (self.b2.len() as f64 / self.b1.len() as f64).max(1.0);
            self.p = (self.p + delta).min(c as f64);
            self.b1.remove(i);
            let v = self.replace(false);
            self.t2.push_front(id);
            return Outcome::Miss { evicted: Some(v) };
        }
        if let Some(i) = pos(&self.b2, id) {
            let delta = (self.b1.len() as f64 / self.b2.len() as f64).max(1.0);
            self.p = (self.p - delta).max(0.0);
            self.b2.remove(i);
            let v = self.replace(true);
            self.t2.push_front(id);
            return Outcome::Miss { evicted: Some(v) };
        }
        if c == 0 {
            return MISS;
        }
        let mut evicted = None;
        if self.t1.len() + self.t2.len() == c {
            if self.t1.len() + self.b1.len() >= c {
                if !self.b1.is_empty() {
                    self.b1.pop_back();
                    evicted = Some(self.replace(false));
                } else {
                    evicted = self.t1.pop_back();
                }
            } else {
                let total = self.t1.len() + self.t2.len() + self.b1.len() + self.b2.len();
                if total >= 2 * c && !self.b2.is_empty() {
                    self.b2.pop_back();
                }
                evicted = Some(self.replace(false));
            }
        }
        self.t1.push_front(id);
        Outcome::Miss { evicted }
    }
}

/// Belady MIN: on eviction, scan the future for each resident's next use.
#[derive(Clone, Debug)]
pub struct RefOpt {
    cap: usize,
    future: Vec<u16>,
    pos: usize,
    resident: Vec<u32>,
}

impl RefOpt {
    pub fn new(cap: usize, future: &[u16]) -> Self {
        RefOpt {
            cap,
            future: future.to_vec(),
            pos: 0,
            resident: Vec::new(),
        }
    }
}

impl Policy for RefOpt {
    fn name(&self) -> String {
        "ref-opt".into()
    }
    fn capacity(&self) -> usize {
        self.cap
    }
    fn len(&self) -> usize {
        self.resident.len()
    }
    fn contains(&self, id: ObjId) -> bool {
        self.resident.contains(&id)
    }
    fn access(&mut self, id: ObjId) -> Outcome {
        assert_eq!(
            self.future[self.pos] as u32, id,
            "ref-opt: access off the future"
        );
        self.pos += 1;
        if self.resident.contains(&id) {
            return Outcome::Hit;
        }
        if self.cap == 0 {
            return MISS;
        }
        let mut evicted = None;
        if self.resident.len() == self.cap {
            let rest = &self.future[self.pos..];
            // Farthest next use; never used again counts as farthest, and among those
            // the larger id goes first.
            let key = |x: u32| {
                let next = rest
                    .iter()
                    .position(|&y| y as u32 == x)
                    .unwrap_or(usize::MAX);
                (next, x)
            };
            let (i, _) = self
                .resident
                .iter()
                .enumerate()
                .max_by_key(|&(_, &x)| key(x))
                .unwrap();
            evicted = Some(self.resident.swap_remove(i));
        }
        self.resident.push(id);
        Outcome::Miss { evicted }
    }
}

/// LFU: evict the smallest (count, time of last access); counts reset on eviction.
#[derive(Clone, Debug)]
pub struct RefLfu {
    cap: usize,
    now: u64,
    /// (id, count, last access)
    entries: Vec<(u32, u64, u64)>,
}

impl RefLfu {
    pub fn new(cap: usize) -> Self {
        RefLfu {
            cap,
            now: 0,
            entries: Vec::new(),
        }
    }
}

impl Policy for RefLfu {
    fn name(&self) -> String {
        "ref-lfu".into()
    }
    fn capacity(&self) -> usize {
        self.cap
    }
    fn len(&self) -> usize {
        self.entries.len()
    }
    fn contains(&self, id: ObjId) -> bool {
        self.entries.iter().any(|e| e.0 == id)
    }
    fn access(&mut self, id: ObjId) -> Outcome {
        self.now += 1;
        if let Some(e) = self.entries.iter_mut().find(|e| e.0 == id) {
            e.1 += 1;
            e.2 = self.now;
            return Outcome::Hit;
        }
        if self.cap == 0 {
            return MISS;
        }
        let mut evicted = None;
        if self.entries.len() == self.cap {
            let (i, _) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| (e.1, e.2))
                .unwrap();
            evicted = Some(self.entries.remove(i).0);
        }
        self.entries.push((id, 1, self.now));
        Outcome::Miss { evicted }
    }
}

/// S3-FIFO transcribed from libCacheSim's S3FIFO.c (see `s3fifo.rs` for the rules and
/// the two small-cache deviations).
#[derive(Clone, Debug)]
pub struct RefS3Fifo {
    cap: usize,
    small_cap: usize,
    main_cap: usize,
    ghost_cap: usize,
    small: VecDeque<(u32, u32)>,
    main: VecDeque<(u32, u32)>,
    ghost: VecDeque<u32>,
    has_evicted: bool,
}

impl RefS3Fifo {
    pub fn new(cap: usize) -> Self {
        let (small_cap, main_cap, ghost_cap) = s3fifo_sizes(cap);
        RefS3Fifo {
            cap,
            small_cap,
            main_cap,
            ghost_cap,
            small: VecDeque::new(),
            main: VecDeque::new(),
            ghost: VecDeque::new(),
            has_evicted: false,
        }
    }

    fn evict(&mut self) -> Option<u32> {
        self.has_evicted = true;
        if self.main.len() > self.main_cap || self.small.is_empty() {
            while let Some((t, f)) = self.main.pop_back() {
                if f >= 1 {
                    self.main.push_front((t, f.min(3) - 1));
                } else {
                    return Some(t);
                }
            }
        } else {
            while let Some((t, f)) = self.small.pop_back() {
                if f >= 2 {
                    self.main.push_front((t, 0));
                } else {
                    if self.ghost_cap > 0 {
                        if self.ghost.len() == self.ghost_cap {
                            self.ghost.pop_back();
                        }
                        self.ghost.push_front(t);
                    }
                    return Some(t);
                }
            }
        }
        None
    }
}

impl Policy for RefS3Fifo {
    fn name(&self) -> String {
        "ref-s3fifo".into()
    }
    fn capacity(&self) -> usize {
        self.cap
    }
    fn len(&self) -> usize {
        self.small.len() + self.main.len()
    }
    fn contains(&self, id: ObjId) -> bool {
        self.small.iter().chain(self.main.iter()).any(|e| e.0 == id)
    }
    fn access(&mut self, id: ObjId) -> Outcome {
        if let Some(e) = self
            .small
            .iter_mut()
            .chain(self.main.iter_mut())
            .find(|e| e.0 == id)
        {
            e.1 += 1; // uncapped, as in libCacheSim
            return Outcome::Hit;
        }
        if self.cap == 0 {
            return MISS;
        }
        let hit_on_ghost = match pos(&self.ghost, id) {
            Some(i) => {
                self.ghost.remove(i);
                true
            }
            None => false,
        };
        let mut evicted = None;
        while self.small.len() + self.main.len() >= self.cap {
            if let Some(v) = self.evict() {
                evicted = Some(v);
            }
        }
        if hit_on_ghost || (!self.has_evicted && self.small.len() >= self.small_cap) {
            self.main.push_front((id, 0));
        } else {
            self.small.push_front((id, 0));
        }
        Outcome::Miss { evicted }
    }
}

/// The earlier Linux two-list model (see `linux_eager.rs` for the rules).
#[derive(Clone, Debug)]
pub struct RefLinuxEager {
    cap: usize,
    active_max: usize,
    inactive: VecDeque<u32>,
    active: VecDeque<u32>,
}

impl RefLinuxEager {
    pub fn new(cap: usize, fraction: f64) -> Self {
        RefLinuxEager {
            cap,
            active_max: active_max(cap, fraction),
            inactive: VecDeque::new(),
            active: VecDeque::new(),
        }
    }
}

impl Policy for RefLinuxEager {
    fn name(&self) -> String {
        "ref-linux-eager".into()
    }
    fn capacity(&self) -> usize {
        self.cap
    }
    fn len(&self) -> usize {
        self.inactive.len() + self.active.len()
    }
    fn contains(&self, id: ObjId) -> bool {
        self.inactive.contains(&id) || self.active.contains(&id)
    }
    fn access(&mut self, id: ObjId) -> Outcome {
        if self.active.contains(&id) {
            return Outcome::Hit;
        }
        if let Some(i) = pos(&self.inactive, id) {
            self.inactive.remove(i);
            self.active.push_front(id);
            if self.active.len() > self.active_max {
                let t = self.active.pop_back().unwrap();
                self.inactive.push_front(t);
            }
            return Outcome::Hit;
        }
        if self.cap == 0 {
            return MISS;
        }
        let evicted = if self.len() == self.cap {
            self.inactive.pop_back()
        } else {
            None
        };
        self.inactive.push_front(id);
        Outcome::Miss { evicted }
    }
}

/// The refined Linux model, transcribed rule by rule from docs/kernel.md (the `linux`
/// policy's rules): reference bits and flags in a map, the lists as deques (front =
/// head), eviction times in a map.
#[derive(Clone, Debug)]
pub struct RefLinux {
    cap: usize,
    ratio: usize,
    inactive: VecDeque<u32>,
    active: VecDeque<u32>,
    /// Resident id -> (reference bit, referenced flag).
    bits: HashMap<u32, (bool, bool)>,
    /// Evicted id -> clock at its (last) eviction.
    evicted_at: HashMap<u32, u64>,
    clock: u64,
}

impl RefLinux {
    pub fn new(cap: usize, ratio: u32) -> Self {
        RefLinux {
            cap,
            ratio: ratio as usize,
            inactive: VecDeque::new(),
            active: VecDeque::new(),
            bits: HashMap::new(),
            evicted_at: HashMap::new(),
            clock: 0,
        }
    }

    /// With `ratio`, or the kernel's ratio for `cap` x `expert_bytes` (1 when unknown).
    pub fn sized(cap: usize, ratio: Option<u32>, expert_bytes: Option<u64>) -> Self {
        let ratio =
            ratio.unwrap_or_else(|| RefLinux::kernel_ratio(cap as u64 * expert_bytes.unwrap_or(0)));
        RefLinux::new(cap, ratio)
    }

    /// isqrt(10 x GiB) of the cache, 1 below 1 GiB (through floating point, unlike the
    /// fast policy's integer square root).
    pub fn kernel_ratio(bytes: u64) -> u32 {
        let gib = bytes / (1 << 30);
        if gib == 0 {
            1
        } else {
            ((10 * gib) as f64).sqrt().floor() as u32
        }
    }

    /// One step of reclaim: balance the lists, then look at the inactive tail. Returns
    /// the victim if it was evicted.
    fn scan_one(&mut self) -> Option<u32> {
        while self.active.len() > self.ratio * self.inactive.len() {
            let t = self.active.pop_back().unwrap();
            self.bits.get_mut(&t).unwrap().0 = false;
            self.inactive.push_front(t);
        }
        let v = self.inactive.pop_back().unwrap();
        let (bit, flag) = self.bits[&v];
        if bit && flag {
            self.bits.insert(v, (false, true));
            self.active.push_front(v);
            self.clock += 1;
            None
        } else if bit {
            self.bits.insert(v, (false, true));
            self.inactive.push_front(v);
            None
        } else {
            self.bits.remove(&v);
            self.evicted_at.insert(v, self.clock);
            self.clock += 1;
            Some(v)
        }
    }
}

impl Policy for RefLinux {
    fn name(&self) -> String {
        "ref-linux".into()
    }
    fn capacity(&self) -> usize {
        self.cap
    }
    fn len(&self) -> usize {
        self.inactive.len() + self.active.len()
    }
    fn contains(&self, id: ObjId) -> bool {
        self.bits.contains_key(&id)
    }
    fn access(&mut self, id: ObjId) -> Outcome {
        if let Some(b) = self.bits.get_mut(&id) {
            b.0 = true;
            return Outcome::Hit;
        }
        if self.cap == 0 {
            return MISS;
        }
        let mut evicted = None;
        if self.len() == self.cap {
            while evicted.is_none() {
                evicted = self.scan_one();
            }
        }
        self.bits.insert(id, (true, false));
        let refault = self
            .evicted_at
            .get(&id)
            .is_some_and(|&t| self.clock - t <= self.active.len() as u64);
        if refault {
            self.active.push_front(id);
            self.clock += 1;
        } else {
            self.inactive.push_front(id);
        }
        Outcome::Miss { evicted }
    }
}

/// Pinning decorator: a list of pinned ids, a list of those loaded, and the inner policy.
pub struct RefPinned {
    name: String,
    inner: Box<dyn Policy>,
    pinned: Vec<u32>,
    loaded: Vec<u32>,
}

impl RefPinned {
    pub fn new(name: String, inner: Box<dyn Policy>, pinned: Vec<u32>) -> Self {
        RefPinned {
            name,
            inner,
            pinned,
            loaded: Vec::new(),
        }
    }
}

impl Policy for RefPinned {
    fn name(&self) -> String {
        format!("ref-{}", self.name)
    }
    fn capacity(&self) -> usize {
        self.pinned.len() + self.inner.capacity()
    }
    fn len(&self) -> usize {
        self.loaded.len() + self.inner.len()
    }
    fn contains(&self, id: ObjId) -> bool {
        self.loaded.contains(&id) || self.inner.contains(id)
    }
    fn access(&mut self, id: ObjId) -> Outcome {
        if !self.pinned.contains(&id) {
            return self.inner.access(id);
        }
        if self.loaded.contains(&id) {
            return Outcome::Hit;
        }
        self.loaded.push(id);
        MISS
    }
}
