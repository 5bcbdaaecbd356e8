//! Miss curves: the misses of every capacity of a policy from one pass over the stream,
//! for the stack algorithms (a cache of C holds the top C of one priority stack).
//! [`mattson`] gives LRU's from stack distances (optionally with pinned ids kept out of
//! the stack), [`opt_bands`] gives Belady's OPT's from a banded next-use stack. Both
//! know only ids, steps of accesses (tokens or batches) and capacities.

pub mod mattson;
pub mod opt_bands;

pub use mattson::{curves, lru_curves, Buckets, Curves, StepLayout, MAX_CAPACITIES};
pub use opt_bands::OptBands;
