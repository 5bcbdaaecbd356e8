//! How an inference engine reads a missed expert from the drive: how many bytes the
//! device reads, in requests of what size, how many in flight. The drive's curve
//! ([`DriveCurve`]) turns that into seconds.
//!
//! An expert is a few extents (in a GGUF: its gate, up and down slices in three tensors
//! per layer). Engines (`--io`):
//!
//! - **`mmap`** (llama.cpp's default): the matmul touches the mapped slices and every
//!   missing page faults. A fault reads a read-around window of W bytes centred on it
//!   (W = 2 x `read_ahead_kb` under `POSIX_FADV_SEQUENTIAL`, which llama.cpp sets; 1 x
//!   with no advice; one page under `MADV_RANDOM`); touching the window's marked page
//!   starts the next window asynchronously, one window ahead of the touches. A thread
//!   waits for each window in turn (faults are "serviced one miss at a time" per
//!   consumer, ik_llama.cpp#2101), but ggml splits a slice's rows between its `threads`
//!   compute threads, each faulting on its own part: the drive sees up to `threads`
//!   requests of W bytes, no more than the slice has windows (one thread of
//!   kernel-replay: 1; ik_llama.cpp's 16 threads on a PCIe 5 drive paged "almost
//!   6 GB/s", docs/VALIDATION.md). Reading a slice of `s` bytes starting at its first page reads
//!   W/2 before it and, on average, 1.5 W after it (the window ahead when the touches
//!   end), as kernel-replay measured (docs/kernel.md): 2 W over-read per slice when the
//!   neighbouring experts are not cached, none of it when they are. With `willneed` (a
//!   `MADV_WILLNEED` per routed expert, like ik_llama.cpp's expert prefetch) exactly the
//!   slices are read, all of a slice's chunks in flight at once.
//! - **`pread`** (Flash-MoE, colibri): explicit buffered reads by `workers` threads, one
//!   missed expert per thread, each expert one `pread` of its slices together (both
//!   engines store an expert's matrices in one extent), from a cold cache and without
//!   `fadvise`. The kernel's readahead turns a read of `n` pages into windows
//!   (mm/readahead.c, `ondemand_readahead`, as [`buffered_read`] walks it): a read
//!   larger than the readahead window (`read_ahead_kb`, `ra_pages`) may read up to
//!   `max_pages = min(n, io_pages)` at once, `io_pages` being the queue's
//!   `max_sectors_kb` (`blk_apply_bdi_limits`). The first window is `max_pages` with
//!   its readahead marker halfway; the reader waits for it, reaches the marker and the
//!   next window goes out; every later window is marked on its first page, so while the
//!   reader waits for one window the next is already in flight: two windows per thread,
//!   each `ceil(window / max_sectors_kb)` requests of up to `max_sectors_kb`. The last
//!   windows run past the slice by up to two windows: that over-read lands on the
//!   neighbouring pages, spared when they are cached. The drive sees, per reading thread
//!   (min(workers, missed experts of the layer)), the first window's requests alone and
//!   then two windows' requests.
//! - **`direct`** (O_DIRECT): each slice is read at once, its bios split by the block
//!   layer into requests of at most `max_sectors_kb` (`bio_split_to_limits`), all in
//!   flight; `workers` threads read min(workers, missed slices of the layer) slices.
//!
//! Layers execute one after another and a layer's experts are known only once its router
//! has run, so the reads of one layer never overlap those of another.

use crate::drive::DriveCurve;

/// GB/s one core moves through the page cache: by buffered reads, which allocate and
/// insert the pages, copy them out and reclaim as many, by page faults, which map them
/// instead of copying, and by `MADV_WILLNEED` and the faults that then map its pages
/// (`[ram] page_cache_gbs`, `fault_gbs` and `willneed_gbs`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PageCacheRates {
    pub read_gbs: f64,
    pub fault_gbs: f64,
    pub willneed_gbs: f64,
}

impl PageCacheRates {
    /// Reads, faults and `MADV_WILLNEED` at one rate.
    pub fn same(gbs: f64) -> PageCacheRates {
        PageCacheRates {
            read_gbs: gbs,
            fault_gbs: gbs,
            willneed_gbs: gbs,
        }
    }
}

/// Page size of the machines modelled.
pub const PAGE: u64 = 4096;

/// The engine and its parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum IoEngine {
    /// Page faults on a shared mapping from `threads` compute threads; `window` bytes
    /// per fault (0: exact reads of the missing pages, all in flight, as under
    /// `MADV_WILLNEED`).
    Mmap { window: u64, threads: u32 },
    /// Buffered reads by `workers` threads; `chunk` is the readahead window
    /// (`read_ahead_kb`), which the drive's `max_sectors_kb` may widen
    /// ([`buffered_read`]).
    Pread { workers: u32, chunk: u64 },
    /// O_DIRECT reads of whole slices by `workers` threads.
    Direct { workers: u32 },
}

/// What the mapping is advised (llama.cpp: `sequential`; `--numa`: `random`;
/// ik_llama.cpp's and `--lazy-experts`' per-expert prefetch: `willneed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAdvice {
    Normal,
    Random,
    Sequential,
    Willneed,
}

/// Which engine, as the user names it: `--io`, `--io-workers`, `--read-ahead-kb`,
/// `--mmap-advice`, and the threads that fault (the CPU's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    Mmap,
    Pread,
    Direct,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EngineChoice {
    pub kind: EngineKind,
    pub workers: u32,
    pub read_ahead_kb: u64,
    pub advice: FaultAdvice,
    /// `pread`, `direct`: the engine reads a layer's misses before it multiplies any of
    /// its experts (colibri before its PIPE pool, Flash-MoE's `load_experts`).
    pub serial_reads: bool,
}

impl EngineChoice {
    /// The engine with `threads` compute threads: mmap's read-around window is
    /// 2 x read_ahead_kb under `POSIX_FADV_SEQUENTIAL`, 1 x with no advice, one page
    /// under `MADV_RANDOM`, none (exact reads) under `MADV_WILLNEED`; buffered reads
    /// start from the readahead window (read_ahead_kb, no advice on a pread fd).
    pub fn engine(&self, threads: u32) -> IoEngine {
        let ra = self.read_ahead_kb * 1024;
        match self.kind {
            EngineKind::Mmap => IoEngine::Mmap {
                window: match self.advice {
                    FaultAdvice::Sequential => (2 * ra).max(PAGE),
                    FaultAdvice::Normal => ra.max(PAGE),
                    FaultAdvice::Random => PAGE,
                    FaultAdvice::Willneed => 0,
                },
                threads,
            },
            EngineKind::Pread => IoEngine::Pread {
                workers: self.workers,
                chunk: ra.max(PAGE),
            },
            EngineKind::Direct => IoEngine::Direct {
                workers: self.workers,
            },
        }
    }
}

/// The requests of one layer's reads: bytes each, and how many the drive has at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Requests {
    pub block: f64,
    pub in_flight: f64,
}

/// What a layer's misses cost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LayerReads {
    /// Bytes the device reads (readahead included).
    pub device_bytes: f64,
    pub seconds: f64,
}

impl IoEngine {
    pub fn name(&self) -> &'static str {
        match self {
            IoEngine::Mmap { .. } => "mmap",
            IoEngine::Pread { .. } => "pread",
            IoEngine::Direct { .. } => "direct",
        }
    }

    /// Reads for `misses` missed experts of one layer (a mean may be fractional), each
    /// made of `slices` (bytes per extent). `neighbour_cached` is the chance that the
    /// pages next to a slice are already in the cache (the hit rate), which spares the
    /// read-around and the readahead their over-read. The seconds are the drive's alone:
    /// see [`IoEngine::page_cache_seconds`] for the CPU the page cache adds.
    pub fn layer_reads(
        &self,
        slices: &[u64],
        misses: f64,
        neighbour_cached: f64,
        drive: &DriveCurve,
    ) -> LayerReads {
        if misses <= 0.0 {
            return LayerReads::default();
        }
        let expert: f64 = slices.iter().map(|&s| s as f64).sum();
        let spared = 1.0 - neighbour_cached.clamp(0.0, 1.0);
        let device_bytes = match *self {
            IoEngine::Mmap { window, .. } if window > 0 => {
                let over = 2.0 * window as f64 * spared;
                misses * (expert + over * slices.len() as f64)
            }
            IoEngine::Pread { chunk, .. } => {
                let e = one_read(slices);
                let over = (buffered_read(e, chunk, drive.max_request).total - e) as f64;
                misses * (expert + over * spared)
            }
            _ => misses * expert,
        };
        LayerReads {
            device_bytes,
            seconds: self.device_seconds(device_bytes, slices, misses, drive),
        }
    }

    /// The requests the engine issues for `misses` missed experts of one layer made of
    /// `slices`, on a drive that takes requests of at most `drive.max_request` bytes:
    /// their size and how many are in flight (for `pread`, once the first window is
    /// read: two windows per thread).
    pub fn requests(&self, slices: &[u64], misses: f64, drive: &DriveCurve) -> Requests {
        let n = slices.len().max(1) as f64;
        let slice = slices.iter().map(|&s| s as f64).sum::<f64>() / n;
        let (block, in_flight) = match *self {
            // All the chunks of every slice are requested at once: the device sees the
            // slice-sized request at the depth of the layer's misses.
            IoEngine::Mmap { window: 0, .. } => (slice, misses * n),
            // Each thread waits for its windows one at a time; the block layer splits a
            // window larger than the drive's largest request, and the pieces go at once.
            IoEngine::Mmap { window, threads } => {
                let (block, pieces) = split(window as f64, drive.max_request);
                (block, faulting_threads(window, threads, slices) * pieces)
            }
            IoEngine::Pread { workers, chunk } => {
                let p = PreadShape::of(one_read(slices), chunk, drive.max_request);
                (p.block, 2.0 * p.per_window * misses.min(workers as f64))
            }
            IoEngine::Direct { workers } => {
                let (block, pieces) = split(slice, drive.max_request);
                (block, (misses * n).min(workers as f64) * pieces)
            }
        };
        Requests {
            block,
            in_flight: in_flight.max(1.0),
        }
    }

    /// Seconds the drive needs to read `bytes` in the requests of
    /// [`IoEngine::requests`]; for `pread`, the first window of each slice alone, the
    /// rest two windows at a time.
    pub fn device_seconds(
        &self,
        bytes: f64,
        slices: &[u64],
        misses: f64,
        drive: &DriveCurve,
    ) -> f64 {
        if bytes <= 0.0 {
            return 0.0;
        }
        let misses = misses.max(1e-9);
        if let IoEngine::Pread { workers, chunk } = *self {
            let p = PreadShape::of(one_read(slices), chunk, drive.max_request);
            let threads = misses.min(workers as f64).max(1.0);
            let first = bytes * p.first_share;
            return drive.read_seconds(first, p.block, p.per_window * threads)
                + drive.read_seconds(bytes - first, p.block, 2.0 * p.per_window * threads);
        }
        let r = self.requests(slices, misses, drive);
        drive.read_seconds(bytes, r.block, r.in_flight)
    }

    /// CPU seconds the page cache adds to a thread that reads `bytes` through it:
    /// allocating and inserting the pages, reclaiming as many, and mapping them on a
    /// fault or copying them out of a read. The thread that faults or calls `read` does
    /// that work before and after its request, so it adds to the wait; threads reading
    /// at once share it. O_DIRECT bypasses the page cache.
    pub fn page_cache_seconds(
        &self,
        bytes: f64,
        slices: &[u64],
        misses: f64,
        rates: PageCacheRates,
    ) -> f64 {
        if bytes <= 0.0 {
            return 0.0;
        }
        let threads = match *self {
            IoEngine::Direct { .. } => return 0.0,
            // One MADV_WILLNEED call brings in the whole expert.
            IoEngine::Mmap { window: 0, .. } => 1.0,
            IoEngine::Mmap { window, threads } => faulting_threads(window, threads, slices),
            IoEngine::Pread { workers, .. } => misses.min(workers as f64),
        };
        bytes / (self.page_cache_gbs(rates) * 1e9) / threads.max(1.0)
    }

    /// What one core moves through the page cache under this engine: faults map the
    /// pages, buffered reads copy them out. `MADV_WILLNEED` (a window of 0) has its own
    /// rate: it reads order-0 pages (`force_page_cache_ra`), where a fault's readahead
    /// brings large folios in (Linux 6.x), so each page costs its own allocation,
    /// insertion and reclaim (on the development VM 0.22 to 0.33 s of CPU per GB against
    /// a fault's 0.10, docs/VALIDATION.md).
    pub fn page_cache_gbs(&self, rates: PageCacheRates) -> f64 {
        match self {
            IoEngine::Mmap { window: 0, .. } => rates.willneed_gbs,
            IoEngine::Mmap { .. } => rates.fault_gbs,
            IoEngine::Pread { .. } | IoEngine::Direct { .. } => rates.read_gbs,
        }
    }

    /// Under page faults in read-around windows (`mmap` without `willneed`): the window
    /// and the compute threads that fault, whose waits and products overlap one another
    /// (`fault_overlap.rs`).
    pub fn faulting(&self) -> Option<(u64, u32)> {
        match *self {
            IoEngine::Mmap { window, threads } if window > 0 => Some((window, threads)),
            _ => None,
        }
    }

    /// Seconds the drive needs for `bytes` faulted in by `in_flight` threads at once
    /// (no more than fault on a slice: [`IoEngine::requests`]); `mmap` only.
    pub fn fault_seconds(
        &self,
        bytes: f64,
        slices: &[u64],
        in_flight: f64,
        drive: &DriveCurve,
    ) -> f64 {
        let r = self.requests(slices, 1.0, drive);
        drive.read_seconds(bytes, r.block, in_flight.clamp(1.0, r.in_flight))
    }

    /// Whether worker threads read while the compute threads multiply the layer's
    /// experts that are already in memory. A page fault stalls the thread that touches
    /// the page, not the others: `faulting` and `fault_overlap.rs` price that.
    pub fn overlaps_compute(&self) -> bool {
        !matches!(self, IoEngine::Mmap { .. })
    }
}

/// The threads that fault on a missed slice at once: ggml splits a slice's rows between
/// `threads` compute threads, each waiting for its own windows, so no more than the
/// slice has windows of `window` bytes.
fn faulting_threads(window: u64, threads: u32, slices: &[u64]) -> f64 {
    let n = slices.len().max(1) as f64;
    let slice = slices.iter().map(|&s| s as f64).sum::<f64>() / n;
    (threads as f64).min((slice / window as f64).ceil())
}

/// mm/readahead.c `get_next_ra_size`: the readahead window after one of `cur` pages, at
/// most `max` (the page model of kernel-replay ramps its windows with it too).
pub fn next_ra_size(cur: u64, max: u64) -> u64 {
    if cur < max / 16 {
        4 * cur
    } else if cur <= max / 2 {
        2 * cur
    } else {
        max
    }
}

/// How the kernel reads one buffered `read` of `slice` bytes from a cold cache with no
/// advice on the file (mm/readahead.c `ondemand_readahead`, Linux 5.x to 6.x): `ra` is
/// the readahead window (`ra_pages`), `io` the queue's `max_sectors_kb` in bytes
/// (`bdi->io_pages`). Pages, not bytes, as the kernel counts them; large folios are left
/// out (ext4 before 6.16 has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readahead {
    /// Bytes of the first window, read synchronously before any other goes out.
    pub first: u64,
    /// Bytes of the largest window.
    pub window: u64,
    /// Bytes every window covers, the readahead past the slice's end included.
    pub total: u64,
}

/// The windows of a buffered read (see [`Readahead`]).
///
/// - No larger than `ra`: read as is, one window (a lone small read, `do_page_cache_ra`
///   of the request).
/// - Larger: `max_pages` is `min(remaining pages, io_pages)` when both exceed `ra_pages`,
///   else `ra_pages`. The miss at the first page is an "oversize read":
///   `get_init_ra_size` gives `max_pages`, and merging the window's own next one
///   (`readit:`) keeps `max_pages` with `async_size = max_pages / 2`, so the marker is
///   halfway. Reaching a marker sends the next window, `get_next_ra_size` of the last
///   (x4 below max/16, x2 up to max/2, else max), marked on its first page; `max_pages`
///   shrinks with the pages the read has left past the marker, and a window goes out
///   only from a marker inside the read.
pub fn buffered_read(slice: u64, ra: u64, io: f64) -> Readahead {
    let n = slice.div_ceil(PAGE).max(1);
    let ra_p = (ra / PAGE).max(1);
    let io_p = if io.is_finite() {
        ((io.max(0.0) as u64) / PAGE).max(1)
    } else {
        u64::MAX
    };
    if n <= ra_p {
        let b = n * PAGE;
        return Readahead {
            first: b,
            window: b,
            total: b,
        };
    }
    let max_pages = |req: u64| {
        if req > ra_p && io_p > ra_p {
            req.min(io_p)
        } else {
            ra_p
        }
    };
    let first = max_pages(n);
    let (mut start, mut size) = (0, first);
    let mut mark = first - (first >> 1);
    let mut largest = first;
    while mark < n {
        let max = max_pages(n - mark);
        start += size;
        size = next_ra_size(size, max);
        mark = start;
        largest = largest.max(size);
    }
    Readahead {
        first: first * PAGE,
        window: largest * PAGE,
        total: (start + size) * PAGE,
    }
}

/// The bytes of an expert's one `pread`: Flash-MoE and colibri store an expert's
/// matrices together and read each missed expert with one call (Flash-MoE
/// `cuda_infer/infer.cu` `load_experts`; colibri's 19 MB reads, docs/VALIDATION.md).
fn one_read(slices: &[u64]) -> u64 {
    slices.iter().sum()
}

/// The requests of an expert's buffered read: their size (the first window, cut at
/// `max_sectors_kb`), how many make a window, and the share of the bytes read in the
/// first window (one window in flight per thread).
struct PreadShape {
    block: f64,
    per_window: f64,
    first_share: f64,
}

/// A read of `bytes` as the block layer sends it to a drive that takes at most
/// `max_request` bytes: the size of each request and how many go at once.
fn split(bytes: f64, max_request: f64) -> (f64, f64) {
    let block = bytes.min(max_request);
    (block, (bytes / block).ceil())
}

impl PreadShape {
    fn of(expert: u64, chunk: u64, io: f64) -> PreadShape {
        let r = buffered_read(expert, chunk, io);
        let (block, per_window) = split(r.first as f64, io);
        PreadShape {
            block,
            per_window,
            first_share: r.first.min(r.total) as f64 / r.total.max(1) as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn mmap_reads_windows_one_at_a_time_with_the_over_read() {
        let d = DriveCurve::from_figures(7.0, 60.0, 3.0);
        let w = 256 * 1024;
        let e = IoEngine::Mmap {
            window: w,
            threads: 1,
        };
        let slices = [4 * MIB, 4 * MIB, 4 * MIB];
        // Nothing cached around: 2 windows over-read per slice.
        let r = e.layer_reads(&slices, 2.0, 0.0, &d);
        let bytes = 2.0 * (12.0 * MIB as f64 + 3.0 * 2.0 * w as f64);
        assert!(close(r.device_bytes, bytes));
        // One window at a time: latency, streaming and the rated transfer of each.
        let per_window = 60e-6 + w as f64 / 3e9 + w as f64 / 7e9;
        assert!(close(r.seconds, bytes / w as f64 * per_window));
        // Everything around cached: the slices alone.
        let r = e.layer_reads(&slices, 2.0, 1.0, &d);
        assert!(close(r.device_bytes, 24.0 * MIB as f64));
        assert_eq!(e.layer_reads(&slices, 0.0, 0.0, &d), LayerReads::default());
        // Eight threads fault on eight windows of a slice at once; a slice of three
        // windows has at most three in flight.
        let e8 = IoEngine::Mmap {
            window: w,
            threads: 8,
        };
        let r8 = e8.layer_reads(&slices, 2.0, 1.0, &d);
        assert!(close(
            r8.seconds,
            24.0 * MIB as f64 / d.throughput(w as f64, 8.0)
        ));
        let small = [3 * w, 3 * w, 3 * w];
        let r3 = e8.layer_reads(&small, 1.0, 1.0, &d);
        assert!(close(
            r3.seconds,
            9.0 * w as f64 / d.throughput(w as f64, 3.0)
        ));
        // A drive whose largest request is 96 KiB: each window goes as three requests at
        // once, and the over-read is the same.
        let d96 = d.clone().with_max_request(96.0 * 1024.0);
        let r = e.layer_reads(&slices, 2.0, 0.0, &d96);
        assert!(close(r.device_bytes, bytes));
        assert_eq!(
            e.requests(&slices, 2.0, &d96),
            Requests {
                block: 96.0 * 1024.0,
                in_flight: 3.0
            }
        );
        assert!(close(r.seconds, bytes / d96.throughput(96.0 * 1024.0, 3.0)));
    }

    #[test]
    fn exact_reads_put_a_layer_in_flight_at_once() {
        let d = DriveCurve::from_figures(7.0, 60.0, 3.0);
        let slices = [MIB, MIB, MIB];
        let r = IoEngine::Mmap {
            window: 0,
            threads: 1,
        }
        .layer_reads(&slices, 4.0, 0.0, &d);
        assert!(close(r.device_bytes, 12.0 * MIB as f64));
        let qd12 = d.throughput(MIB as f64, 12.0);
        assert!(close(r.seconds, 12.0 * MIB as f64 / qd12));
        // Faster than the same bytes through 256 KiB faults.
        let f = IoEngine::Mmap {
            window: 256 * 1024,
            threads: 1,
        }
        .layer_reads(&slices, 4.0, 1.0, &d);
        assert!(r.seconds < f.seconds);
    }

    #[test]
    fn a_buffered_read_goes_out_in_windows_of_max_sectors() {
        const KIB: u64 = 1024;
        // Flash-MoE's expert, 7,077,888 B = 1728 pages, read_ahead_kb 128 (32 pages),
        // max_sectors_kb 1280 (320 pages): windows of 320 pages from 0, the first marked
        // at 160; markers at 320, 640, 960, 1280 send windows up to 1920; the one at
        // 1600 has 128 pages left to read: a last window of 128. 2048 pages in all.
        let r = buffered_read(7_077_888, 128 * KIB, (1280 * KIB) as f64);
        assert_eq!(
            r,
            Readahead {
                first: 1280 * KIB,
                window: 1280 * KIB,
                total: 2048 * PAGE,
            }
        );
        // max_sectors_kb no larger than the window: windows of read_ahead_kb, the last
        // sent from the marker at page 1696: 1728 + 32 pages.
        for io in [128 * KIB, 64 * KIB] {
            let r = buffered_read(7_077_888, 128 * KIB, io as f64);
            assert_eq!(
                (r.first, r.window, r.total),
                (128 * KIB, 128 * KIB, 1760 * PAGE)
            );
        }
        // 3 MiB (768 pages) at 1 MiB (256 pages): windows at 0, 256, 512, and one more
        // from the marker at 512, whose 256 remaining pages still allow 256.
        let r = buffered_read(3 * MIB, 128 * KIB, MIB as f64);
        assert_eq!((r.first, r.total), (MIB, 4 * MIB));
        // No limit: the first window is the whole read, the marker halfway sends half
        // as much again.
        let r = buffered_read(3 * MIB, 128 * KIB, f64::INFINITY);
        assert_eq!((r.first, r.total), (3 * MIB, 3 * MIB + 3 * MIB / 2));
        // A read no larger than the window is read as it is.
        let r = buffered_read(100 * KIB, 128 * KIB, MIB as f64);
        assert_eq!((r.first, r.total), (100 * KIB, 100 * KIB));
    }

    #[test]
    fn pread_keeps_two_windows_in_flight_after_the_first() {
        let d = DriveCurve::from_figures(14.0, 50.0, 2.0).with_max_request(MIB as f64);
        let m = MIB as f64;
        let slices = [3 * MIB];
        let p = |workers, misses: f64, cached: f64| {
            IoEngine::Pread {
                workers,
                chunk: 128 * 1024,
            }
            .layer_reads(&slices, misses, cached, &d)
        };
        // One miss, nothing cached around: the 4 MiB of windows, the first 1 MiB alone,
        // the other 3 MiB two 1 MiB windows at a time.
        let r = p(8, 1.0, 0.0);
        assert!(close(r.device_bytes, 4.0 * m));
        // An expert of three 1 MiB slices is one 3 MiB read.
        let three = IoEngine::Pread {
            workers: 8,
            chunk: 128 * 1024,
        }
        .layer_reads(&[MIB, MIB, MIB], 1.0, 0.0, &d);
        assert_eq!(three, r);
        let one = d.read_seconds(m, m, 1.0) + d.read_seconds(3.0 * m, m, 2.0);
        assert!(close(r.seconds, one));
        // The neighbours cached: the slice alone, in the same shares.
        let r = p(8, 1.0, 1.0);
        assert!(close(r.device_bytes, 3.0 * m));
        let one = d.read_seconds(0.75 * m, m, 1.0) + d.read_seconds(2.25 * m, m, 2.0);
        assert!(close(r.seconds, one));
        // Six misses, four workers: four threads, four then eight requests in flight.
        let r = p(4, 6.0, 1.0);
        let six = d.read_seconds(4.5 * m, m, 4.0) + d.read_seconds(13.5 * m, m, 8.0);
        assert!(close(r.seconds, six));
        assert!(r.seconds < p(1, 6.0, 1.0).seconds);
        // max_sectors_kb below the window: 128 KiB windows of two 64 KiB requests; the
        // first of the 800 pages' windows is 32 pages.
        let small = d.clone().with_max_request(65536.0);
        let r = IoEngine::Pread {
            workers: 8,
            chunk: 128 * 1024,
        }
        .layer_reads(&slices, 1.0, 1.0, &small);
        let f = 3.0 * m * 32.0 / 800.0;
        let t = small.read_seconds(f, 65536.0, 2.0) + small.read_seconds(3.0 * m - f, 65536.0, 4.0);
        assert!(close(r.seconds, t));
        // The page cache's CPU time is shared by the reading threads, not the requests.
        let e = IoEngine::Pread {
            workers: 4,
            chunk: 128 * 1024,
        };
        assert!(close(
            e.page_cache_seconds(8e9, &slices, 6.0, PageCacheRates::same(4.0)),
            8e9 / 4e9 / 4.0
        ));
        // Faults map the pages at their own rate, reads copy them at theirs.
        let rates = PageCacheRates {
            read_gbs: 2.0,
            fault_gbs: 8.0,
            willneed_gbs: 8.0,
        };
        assert!(close(e.page_cache_seconds(8e9, &slices, 1.0, rates), 4.0));
        let m = IoEngine::Mmap {
            window: 0,
            threads: 4,
        };
        assert!(close(m.page_cache_seconds(8e9, &slices, 1.0, rates), 1.0));
    }

    #[test]
    fn direct_splits_a_slice_at_max_sectors() {
        let slices = [2 * MIB, 2 * MIB, 3 * MIB];
        let bytes = 7.0 * MIB as f64;
        // No limit: each slice one request, two workers.
        let d = DriveCurve::from_figures(14.0, 50.0, 2.0);
        let r = IoEngine::Direct { workers: 2 }.layer_reads(&slices, 1.0, 0.0, &d);
        assert!(close(r.seconds, d.read_seconds(bytes, bytes / 3.0, 2.0)));
        // 1 MiB requests: each slice (7/3 MiB on average) goes out as three at once, from
        // two workers: six in flight.
        let d = d.with_max_request(MIB as f64);
        let r = IoEngine::Direct { workers: 2 }.layer_reads(&slices, 1.0, 0.0, &d);
        assert!(close(r.seconds, d.read_seconds(bytes, MIB as f64, 6.0)));
    }
}
