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
//! - **`pread`** (Flash-MoE, colibri): explicit buffered reads of each missed expert's
//!   slices by `workers` threads, one expert per thread. The kernel reads a large
//!   buffered request in readahead-sized chunks, one chunk ahead: each thread keeps one
//!   chunk in flight, so the drive sees min(workers, missed experts of the layer)
//!   requests of `chunk` bytes.
//! - **`direct`** (O_DIRECT): each slice is one request of its whole size, from
//!   `workers` threads: min(workers, missed slices of the layer) in flight.
//!
//! Layers execute one after another and a layer's experts are known only once its router
//! has run, so the reads of one layer never overlap those of another.

use crate::drive::DriveCurve;

/// Page size of the machines modelled.
pub const PAGE: u64 = 4096;

/// The engine and its parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum IoEngine {
    /// Page faults on a shared mapping from `threads` compute threads; `window` bytes
    /// per fault (0: exact reads of the missing pages, all in flight, as under
    /// `MADV_WILLNEED`).
    Mmap { window: u64, threads: u32 },
    /// Buffered reads by `workers` threads in chunks of `chunk` bytes.
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
}

impl EngineChoice {
    /// The engine with `threads` compute threads: mmap's read-around window is
    /// 2 x read_ahead_kb under `POSIX_FADV_SEQUENTIAL`, 1 x with no advice, one page
    /// under `MADV_RANDOM`, none (exact reads) under `MADV_WILLNEED`; buffered reads go
    /// in chunks of the readahead window (read_ahead_kb, no advice on a pread fd).
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
    /// read-around its over-read. The seconds are the drive's alone: see
    /// [`IoEngine::page_cache_seconds`] for the CPU the page cache adds.
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
        let device_bytes = match *self {
            IoEngine::Mmap { window, .. } if window > 0 => {
                let over = 2.0 * window as f64 * (1.0 - neighbour_cached.clamp(0.0, 1.0));
                misses * (expert + over * slices.len() as f64)
            }
            _ => misses * expert,
        };
        LayerReads {
            device_bytes,
            seconds: self.device_seconds(device_bytes, slices, misses, drive),
        }
    }

    /// The requests the engine issues for `misses` missed experts of one layer made of
    /// `slices`: their size and how many are in flight.
    pub fn requests(&self, slices: &[u64], misses: f64) -> Requests {
        let n = slices.len().max(1) as f64;
        let slice = slices.iter().map(|&s| s as f64).sum::<f64>() / n;
        let (block, in_flight) = match *self {
            // All the chunks of every slice are requested at once: the device sees the
            // slice-sized request at the depth of the layer's misses.
            IoEngine::Mmap { window: 0, .. } => (slice, misses * n),
            // Each thread waits for its windows one at a time.
            IoEngine::Mmap { window, threads } => {
                let w = window as f64;
                (w, (threads as f64).min((slice / w).ceil()))
            }
            IoEngine::Pread { workers, chunk } => {
                let largest = slices.iter().copied().max().unwrap_or(0);
                (chunk.min(largest) as f64, misses.min(workers as f64))
            }
            IoEngine::Direct { workers } => (slice, (misses * n).min(workers as f64)),
        };
        Requests {
            block,
            in_flight: in_flight.max(1.0),
        }
    }

    /// Seconds the drive needs to read `bytes` in the requests of
    /// [`IoEngine::requests`].
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
        let r = self.requests(slices, misses.max(1e-9));
        drive.read_seconds(bytes, r.block, r.in_flight)
    }

    /// CPU seconds the page cache adds to a thread that reads `bytes` through it:
    /// allocating and inserting the pages, reclaiming as many, mapping them on a fault.
    /// The thread that faults or calls `read` does that work before and after its
    /// request, so it adds to the wait; threads reading at once share it. O_DIRECT
    /// bypasses the page cache. `page_cache_gbs` is what one core moves through it.
    pub fn page_cache_seconds(
        &self,
        bytes: f64,
        slices: &[u64],
        misses: f64,
        page_cache_gbs: f64,
    ) -> f64 {
        if bytes <= 0.0 {
            return 0.0;
        }
        let threads = match *self {
            IoEngine::Direct { .. } => return 0.0,
            // One MADV_WILLNEED call brings in the whole expert.
            IoEngine::Mmap { window: 0, .. } => 1.0,
            _ => self.requests(slices, misses.max(1e-9)).in_flight,
        };
        bytes / (page_cache_gbs * 1e9) / threads
    }

    /// Whether the engine's reads overlap compute: page faults stall the thread that
    /// touches the page; worker threads read while the compute threads multiply the
    /// layer's experts that are already in memory.
    pub fn overlaps_compute(&self) -> bool {
        !matches!(self, IoEngine::Mmap { .. })
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
    fn workers_bound_the_queue_depth() {
        let d = DriveCurve::from_figures(14.0, 50.0, 2.0);
        let slices = [2 * MIB, 2 * MIB, 3 * MIB];
        let bytes = 7.0 * MIB as f64;
        let p = |workers, misses: f64| {
            IoEngine::Pread {
                workers,
                chunk: 512 * 1024,
            }
            .layer_reads(&slices, misses, 0.0, &d)
        };
        // One miss: one chunk in flight whatever the workers.
        assert!(close(
            p(8, 1.0).seconds,
            d.read_seconds(bytes, 524288.0, 1.0)
        ));
        // Six misses, four workers: four in flight.
        assert!(close(
            p(4, 6.0).seconds,
            d.read_seconds(6.0 * bytes, 524288.0, 4.0)
        ));
        assert!(p(4, 6.0).seconds < p(1, 6.0).seconds);
        let r = IoEngine::Direct { workers: 2 }.layer_reads(&slices, 1.0, 0.0, &d);
        assert!(close(r.seconds, d.read_seconds(bytes, bytes / 3.0, 2.0)));
    }
}
