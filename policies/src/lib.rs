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
//! One file per policy and one entry per policy in the table below (`policy_table!`);
//! [`registry`] turns spec strings (`lru`, `pinned:3:clock`, ...) into policies;
//! [`reference`](mod@reference) holds naive, obviously correct implementations of every
//! policy that the differential tests compare against access by access.

mod list;
mod ring;

pub mod curves;

/// The policy table: one entry per base policy (what `pinned:` and `pin-hot:` wrap), in
/// the order help and error messages list them. A new policy is its file and one entry;
/// everything else comes from the entries: `pub mod` and `pub use` here, and in
/// [`registry`] the [`registry::BaseSpec`] variant, the parser and canonical display,
/// [`POLICIES`], [`registry::BASE_POLICIES`] (which the tests iterate),
/// [`registry::POLICY_HELP`] (the CLI's `--policy` help), and the fast and reference
/// builders. CONTRIBUTING.md walks through adding one.
///
/// An entry (paths are resolved in `registry.rs`, which sees the crate root):
/// ```text
/// [/// doc of the BaseSpec variant]
/// Variant [{ field: ParamType, "[:FORM]" [/ "[:SHORT FORM for --help]"] [, tests "ARG", ...] }]
///     = "name" in module::Type [needs future]: "one-line help",
///     fast |a| <the policy, from a: registry::BaseArgs>, naive |a| <its reference>;
/// ```
/// `a.param` is the parsed parameter (`()` without one), `a.future()` the id sequence
/// (with `needs future`). Both constructors return a concrete `Policy` type: the fast
/// one is boxed (or wrapped by `Pinned<_>`) as that type, so replay is monomorphised.
/// Leaving out `naive` compiles, but the reference tests fail.
macro_rules! policy_table {
    ($then:ident) => {
        $then! {
            Lru = "lru" in lru::Lru: "least recently used",
                fast |a| Lru::new(a.capacity, a.n_ids), naive |a| reference::RefLru::new(a.capacity);
            Fifo = "fifo" in fifo::Fifo: "first in, first out",
                fast |a| Fifo::new(a.capacity, a.n_ids), naive |a| reference::RefFifo::new(a.capacity);
            Clock = "clock" in clock::Clock: "CLOCK: FIFO with a one-bit second chance (libCacheSim Clock)",
                fast |a| Clock::new(a.capacity, a.n_ids), naive |a| reference::RefClock::new(a.capacity);
            Arc = "arc" in arc::Arc: "ARC, Megiddo & Modha FAST'03: adaptive recency/frequency split with ghosts",
                fast |a| Arc::new(a.capacity, a.n_ids), naive |a| reference::RefArc::new(a.capacity);
            Opt = "opt" in opt::Opt needs future: "Belady MIN: evicts the object used farthest in the future (an oracle bound)",
                fast |a| Opt::new(a.capacity, a.n_ids, a.future()), naive |a| reference::RefOpt::new(a.capacity, a.future());
            Lfu = "lfu" in lfu::Lfu: "least frequently used, ties broken by least recently used",
                fast |a| Lfu::new(a.capacity, a.n_ids), naive |a| reference::RefLfu::new(a.capacity);
            Sieve = "sieve" in sieve::Sieve: "SIEVE, NSDI'24: FIFO with a visited bit and a lazy hand",
                fast |a| Sieve::new(a.capacity, a.n_ids), naive |a| reference::RefSieve::new(a.capacity);
            S3Fifo = "s3fifo" in s3fifo::S3Fifo: "S3-FIFO, SOSP'23: 10% probation FIFO, 90% main CLOCK, ghost ids",
                fast |a| S3Fifo::new(a.capacity, a.n_ids), naive |a| reference::RefS3Fifo::new(a.capacity);
            /// `ratio` >= 1; None: the kernel's ratio for capacity x `BuildContext::expert_bytes`.
            Linux { ratio: LinuxRatio, "[:ratio=R]", tests "ratio=2", "ratio=3", "ratio=7" }
                = "linux" in linux::Linux: "Linux page cache (split LRU): sampled reference bits, refault activation, active <= R x inactive (default: the kernel's isqrt(10 x cache GiB), 1 below 1 GiB)",
                fast |a| match a.param {
                    None => Linux::new(a.capacity, a.n_ids, a.expert_bytes),
                    Some(r) => Linux::with_ratio(a.capacity, a.n_ids, r),
                },
                naive |a| reference::RefLinux::sized(a.capacity, a.param, a.expert_bytes);
            /// `active_fraction` in [0, 1).
            LinuxEager { active_fraction: ActiveFraction, "[:FRACTION]" / "[:F]", tests "0.25", "0", "0.9" }
                = "linux-eager" in linux_eager::LinuxEager: "earlier Linux model: every access seen at once, promotion on the second, active <= FRACTION of the cache (default 0.5)",
                fast |a| LinuxEager::new(a.capacity, a.n_ids, a.param),
                naive |a| reference::RefLinuxEager::new(a.capacity, a.param);
        }
    };
}

/// `pub mod` and `pub use` of every policy in the table.
macro_rules! policy_modules {
    ($(
        $(#[$meta:meta])*
        $variant:ident $({ $($param:tt)* })?
            = $name:literal in $module:ident::$type:ident $(needs $needs:ident)?: $help:literal,
            fast $fast:expr $(, naive $naive:expr)?;
    )*) => {
        $(
            pub mod $module;
            pub use $module::$type;
        )*
    };
}

policy_table!(policy_modules);

pub mod pinned;
pub mod reference;
pub mod registry;

pub use linux::SplitLru;
pub use opt::OptFuture;
pub use pinned::Pinned;
pub use registry::{BuildContext, BuildError, PolicySpec, SpecError, POLICIES};

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
