//! Cache eviction policies over dense object ids.
//!
//! Everything here knows only ids and capacities: no files, no models, no CLI.
//! An object id is `slot * n_experts + expert` (slot = index of the MoE layer), so ids
//! are dense and per-object state lives in flat arrays indexed by id.
//!
//! Conventions follow libCacheSim so miss counts can be cross-checked exactly: the first
//! access of an object is a miss, a cache of capacity C holds exactly C objects, a
//! capacity of 0 misses every access and holds nothing.
//!
//! One file per policy; [`registry`] turns spec strings (`lru`, `pinned:3:clock`, ...)
//! into policies; [`reference`] holds naive, obviously correct implementations of every
//! policy that the differential tests compare against access by access.

mod list;
mod ring;

pub mod arc;
pub mod clock;
pub mod fifo;
pub mod lfu;
pub mod linux;
pub mod linux_eager;
pub mod lru;
pub mod opt;
pub mod pinned;
pub mod reference;
pub mod registry;
pub mod s3fifo;
pub mod sieve;

pub use arc::Arc;
pub use clock::Clock;
pub use fifo::Fifo;
pub use lfu::Lfu;
pub use linux::{Linux, SplitLru};
pub use linux_eager::LinuxEager;
pub use lru::Lru;
pub use opt::{Opt, OptFuture};
pub use pinned::Pinned;
pub use registry::{BuildContext, BuildError, PolicySpec, SpecError, POLICIES};
pub use s3fifo::S3Fifo;
pub use sieve::Sieve;

/// A dense object id (`slot * n_experts + expert`).
pub type ObjId = u32;

/// What one access did to the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    /// The object was not resident. `evicted` is the victim that made room for it, if
    /// the cache was full (and the object was admitted).
    Miss {
        evicted: Option<ObjId>,
    },
}

impl Outcome {
    #[inline]
    pub fn is_hit(self) -> bool {
        matches!(self, Outcome::Hit)
    }
}

/// An eviction policy with a fixed capacity in objects.
pub trait Policy: Send {
    /// The spec string this policy was built from (e.g. `pinned:3:clock`).
    fn name(&self) -> String;
    /// Capacity in objects.
    fn capacity(&self) -> usize;
    /// Objects resident now (always `<= capacity()`).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether `id` is resident now (no side effects).
    fn contains(&self, id: ObjId) -> bool;
    /// Access one object.
    fn access(&mut self, id: ObjId) -> Outcome;

    /// Replay a run of ids, appending to `misses` the index (within `ids`) of every
    /// access that missed. A provided method, so it is compiled once per policy type:
    /// one dynamic call per run instead of one per access.
    fn replay(&mut self, ids: &[u16], misses: &mut Vec<u32>) {
        for (i, &id) in ids.iter().enumerate() {
            if !self.access(id as ObjId).is_hit() {
                misses.push(i as u32);
            }
        }
    }

    /// Check every structural invariant (list links, counters, residency flags) and
    /// return a description of the first one broken. O(n_ids): for tests, not the hot
    /// path. The default checks only `len() <= capacity()`.
    fn validate(&self) -> Result<(), String> {
        if self.len() > self.capacity() {
            return Err(format!("len {} > capacity {}", self.len(), self.capacity()));
        }
        Ok(())
    }
}
