//! The generation split into units of work for the threads: a response, or a group of
//! its layers, each made by one thread into its own cells of the shared id buffer.

use super::gen::Shape;

/// A part of the generation: layers `layers` of response `r`, which has `n_tok` tokens
/// from `offset` in the id buffer, the first `shared` of them the common opening.
pub(super) struct Unit {
    pub(super) r: usize,
    pub(super) offset: usize,
    pub(super) n_tok: usize,
    pub(super) shared: usize,
    pub(super) layers: std::ops::Range<usize>,
}

/// The id buffer of a trace being generated, shared by the generating threads: each
/// (response, layer) cell is written and read by the one unit that makes it.
#[derive(Clone, Copy)]
pub(super) struct Ids(pub(super) *mut u16, pub(super) usize);

// SAFETY: see `Ids`: the threads use disjoint parts of the buffer.
unsafe impl Send for Ids {}
unsafe impl Sync for Ids {}

/// The threads to use for `accesses` accesses: one below 1 M (not worth starting more).
pub(super) fn threads(accesses: usize) -> usize {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if accesses < 1 << 20 {
        1
    } else {
        threads
    }
}

/// Work units: a response, or when there are few responses for the threads a group of
/// its layers (the layers of a response are independent given its seed), longest first;
/// threads take the next unit when done, so they finish together. `a`: accesses per
/// token; `shared`: the opening tokens every response starts with (not generated).
pub(super) fn units(
    shape: &Shape,
    a: usize,
    n_layers: usize,
    shared: usize,
    threads: usize,
) -> Vec<Unit> {
    let groups = (8 * threads)
        .div_ceil(shape.responses.len().max(1))
        .clamp(1, n_layers);
    let mut units: Vec<Unit> = Vec::with_capacity(shape.responses.len() * groups);
    let mut offset = 0;
    for (r, &(pr, d)) in shape.responses.iter().enumerate() {
        let n_tok = pr + d;
        for grp in 0..groups {
            units.push(Unit {
                r,
                offset,
                n_tok,
                shared: shared.min(n_tok),
                layers: grp * n_layers / groups..(grp + 1) * n_layers / groups,
            });
        }
        offset += n_tok * a;
    }
    units.retain(|u| !u.layers.is_empty() && u.n_tok > u.shared);
    units.sort_by_key(|u| std::cmp::Reverse((u.n_tok - u.shared) * u.layers.len()));
    units
}

/// Make every unit: `threads` threads (or this one) each with its own scratch from
/// `scratch`, taking the next unit from `units` until none is left.
pub(super) fn run<S>(
    threads: usize,
    units: &[Unit],
    scratch: impl Fn() -> S + Sync,
    make: impl Fn(&Unit, &mut S) + Sync,
) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut s = scratch();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(u) = units.get(i) else { break };
            make(u, &mut s);
        }
    };
    if threads <= 1 || units.len() <= 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads.min(units.len()) {
                s.spawn(work);
            }
        });
    }
}
