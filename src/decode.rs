//! The time of one decode token (batch 1, layers one after another) under the I/O model:
//! what the GPU reads, what the CPU reads and multiplies, and what the drive reads for
//! the token's misses through the engine.
//!
//! ```text
//! t_vram    = as in the analytic model (timemodel.rs)
//! t_ram     = CPU-side bytes (non-expert weights in RAM + routed experts of CPU layers) / RAM bw
//! t_compute = the same bytes / (threads x the CPU's per-thread rate for their type)
//! t_cpu     = max(t_ram, t_compute)
//! t_io      = per token: every CPU layer's share of the token's misses through the
//!             engine and the drive's curve (io_engine.rs, drive.rs), plus the non-expert
//!             bytes that do not fit in RAM, read again every token; through the page
//!             cache (mmap, pread) each byte also costs the reading thread CPU time
//!             (`[ram] fault_gbs` for faults, `willneed_gbs` for MADV_WILLNEED,
//!             `page_cache_gbs` for buffered reads)
//! mmap:           t = t_vram + t_cpu_ne + the experts' faults and the products of the
//!                 layers with a miss, overlapped between the threads (fault_overlap.rs):
//!                 from max(t_io, f t_cpu_exp) to t_io + f t_cpu_exp (one thread), each
//!                 faulting expert product started by all threads at once and ended by
//!                 the last; + (1 - f) t_cpu_exp, the products of the layers without a
//!                 miss (f: the share of layers with one); never more than
//!                 t_io + t_cpu_exp (lock step)
//! pread, direct:  t = t_vram + t_cpu_ne + max(t_io, h t_cpu_exp) + (1 - h) t_cpu_exp
//! ```
//! A fault stalls the thread that touches the page, but not the others: each of ggml's
//! threads faults in its own rows and multiplies them, so while one waits another
//! multiplies.
//! With worker threads, a layer's reads run while the compute threads multiply its
//! experts that were hits (share h of the experts' CPU time); the missed experts'
//! products wait for their reads. A layer's experts are known only after its router,
//! so no read overlaps another layer.

use serde::Serialize;

use crate::cpu::Kernels;
use crate::drive::DriveCurve;
use crate::fault_overlap;
use crate::hardware::Hardware;
use crate::io_engine::{IoEngine, LayerReads, PageCacheRates};
use crate::timemodel::{token_time, Placement, GB};
use crate::weights::{Proj, Slice};

/// How the engine reads and what the drive does.
#[derive(Clone, Debug, PartialEq)]
pub struct IoSetup {
    pub engine: IoEngine,
    pub drive: DriveCurve,
    /// What one core moves through the page cache, by faults and by buffered reads.
    pub page_cache: PageCacheRates,
    /// The engine waits for a layer's reads before it multiplies any of the layer's
    /// experts (`--no-read-overlap`; under page faults, see `fault_overlap.rs`).
    pub serial_reads: bool,
}

impl IoSetup {
    /// A layer's reads: the drive's time, plus the page cache's CPU time in the threads
    /// that wait for them.
    pub fn layer_reads(&self, slices: &[u64], misses: f64, neighbour_cached: f64) -> LayerReads {
        let mut r = self
            .engine
            .layer_reads(slices, misses, neighbour_cached, &self.drive);
        r.seconds +=
            self.engine
                .page_cache_seconds(r.device_bytes, slices, misses, self.page_cache);
        r
    }

    /// Whether the reads overlap the compute of the layer's hits: worker threads read
    /// while the compute threads multiply the experts already in memory, unless the
    /// engine waits for its reads first; page faults stall the thread that touches them.
    pub fn overlaps_compute(&self) -> bool {
        self.engine.overlaps_compute() && !self.serial_reads
    }

    /// Under page faults in windows ([`IoEngine::faulting`]): the seconds of `reads`
    /// (device bytes, with the slices they come from) faulted in by the compute threads
    /// and of the expert products (`work_at(j)`: their seconds with `j` threads at them).
    /// The products of the layers with a miss (share `faulting` of the work) run in
    /// `barriers` ops that start and end at a barrier of the threads, each thread
    /// multiplying its share between its faults, one thread's products running while
    /// another waits (`fault_overlap.rs`); those of the layers without one fault nothing
    /// and run on every thread. At most the reads alone (`reads_alone`, each layer's
    /// one after another) and then the products: the chain takes each thread's time at
    /// a station as exponential, so an op ends with the slowest of its threads, and
    /// the drive's last requests run at a falling depth; a few windows of one size
    /// issued together end together, so an op of them takes no longer than its faults
    /// and then its products (lock step). None for the other engines.
    pub fn faulting_seconds(
        &self,
        reads: &[(f64, Vec<u64>)],
        barriers: f64,
        faulting: f64,
        reads_alone: f64,
        work_at: &dyn Fn(f64) -> f64,
    ) -> Option<f64> {
        let (window, threads) = self.engine.faulting()?;
        let faulting = faulting.clamp(0.0, 1.0);
        let faulting_work = |j: f64| faulting * work_at(j);
        let drive_at = |q: f64| {
            reads
                .iter()
                .map(|(b, sl)| self.engine.fault_seconds(*b, sl, q, &self.drive))
                .sum::<f64>()
        };
        let bytes: f64 = reads.iter().map(|r| r.0).sum();
        let ops = fault_overlap::ops_seconds(
            threads,
            bytes / window as f64,
            barriers,
            &drive_at,
            bytes / (self.engine.page_cache_gbs(self.page_cache) * GB),
            &faulting_work,
        );
        let all = work_at(threads as f64);
        Some((ops + (1.0 - faulting) * all).min(reads_alone + all))
    }
}

/// The ops that multiply a layer's experts, each between two barriers of the threads:
/// one per slice (gate, up, down; a merged gate_up tensor is one), except that
/// ik_llama.cpp fuses gate and up of one type into one op (`-fmoe`, its default).
pub fn expert_ops(slices: &[Slice], hw: &Hardware) -> f64 {
    let ty = |p: Proj| slices.iter().find(|s| s.proj == p).map(|s| s.ty);
    let ik = hw
        .cpu
        .as_ref()
        .is_some_and(|c| c.kernels == Kernels::IkLlamaCpp);
    let fused = ik && ty(Proj::Gate).is_some() && ty(Proj::Gate) == ty(Proj::Up);
    slices.len() as f64 - if fused { 1.0 } else { 0.0 }
}

/// Seconds per token by part, and the device bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct DecodeTime {
    pub t_vram: f64,
    pub t_ram: f64,
    pub t_compute: f64,
    pub t_io: f64,
    /// The token's total, with the engine's overlap.
    pub total: f64,
    /// Bytes the device reads per token, readahead and paged non-expert weights included.
    pub device_bytes: f64,
}

/// A decode token's time, the mean over the run's tokens. `misses` lists (misses in a
/// token, tokens with that many) for the CPU-side layers; `accesses` is the CPU-side
/// layers' accesses per token; `resident` the share of the CPU layers' experts the cache
/// holds (the chance a neighbour of a missed slice is cached). Each count of misses is
/// priced as a token of its own and the times averaged: tokens run one after another, so
/// the run takes the sum of their times (its reads and products are not linear in the
/// misses: the time of the mean token is not the mean time).
pub fn decode_time(
    p: &Placement,
    hw: &Hardware,
    io: &IoSetup,
    ram_gib: f64,
    misses: &[(u32, u64)],
    accesses: f64,
    resident: f64,
) -> DecodeTime {
    let token = TokenCost::new(p, hw, io, ram_gib, resident);
    let tokens: u64 = misses.iter().map(|&(_, n)| n).sum();
    if tokens == 0 {
        return token.time(0.0, accesses);
    }
    let priced = Priced::new(&token, misses, accesses);
    let mut mean = DecodeTime::default();
    for &(m, n) in misses {
        let t = priced.time(m);
        let w = n as f64 / tokens as f64;
        mean.t_io += w * t.t_io;
        mean.total += w * t.total;
        mean.device_bytes += w * t.device_bytes;
        (mean.t_vram, mean.t_ram, mean.t_compute) = (t.t_vram, t.t_ram, t.t_compute);
    }
    mean
}

/// The work of pricing a run's counts of misses under page faults, in threads^3 (the
/// states of an op's chain) x counts: beyond it, [`Priced`] prices fewer counts.
const PRICING_BUDGET: f64 = 600.0 * 32.0 * 32.0 * 32.0;

/// Token times by count of misses: each count priced, or, where that is more work than
/// [`PRICING_BUDGET`] (a hundred threads and more faulting, hundreds of counts), the
/// times at evenly spaced counts (at least 16, both ends included) and straight lines
/// between them; a token's time is smooth in its misses.
struct Priced {
    /// (misses, time), by misses.
    points: Vec<(u32, DecodeTime)>,
}

impl Priced {
    fn new(token: &TokenCost, misses: &[(u32, u64)], accesses: f64) -> Self {
        let mut counts: Vec<u32> = misses.iter().map(|&(m, _)| m).collect();
        counts.sort_unstable();
        counts.dedup();
        let n = token.io.engine.faulting().map_or(0.0, |(_, t)| {
            t.min(fault_overlap::MAX_OP_THREADS as u32) as f64
        });
        let work = counts.len() as f64 * n * n * n;
        if work > PRICING_BUDGET {
            let (lo, hi) = (counts[0], *counts.last().expect("counts"));
            let k = ((PRICING_BUDGET / (n * n * n)) as u32).max(16);
            counts = (0..=k)
                .map(|i| lo + ((hi - lo) as u64 * i as u64 / k as u64) as u32)
                .collect();
            counts.dedup();
        }
        Priced {
            points: counts
                .into_iter()
                .map(|m| (m, token.time(m as f64, accesses)))
                .collect(),
        }
    }

    fn time(&self, m: u32) -> DecodeTime {
        let i = self.points.partition_point(|p| p.0 < m);
        match (
            self.points.get(i),
            i.checked_sub(1).map(|j| &self.points[j]),
        ) {
            (Some(p), _) if p.0 == m => p.1,
            (Some(b), Some(a)) => {
                let f = (m - a.0) as f64 / (b.0 - a.0) as f64;
                let mix = |x: f64, y: f64| x + f * (y - x);
                DecodeTime {
                    t_io: mix(a.1.t_io, b.1.t_io),
                    total: mix(a.1.total, b.1.total),
                    device_bytes: mix(a.1.device_bytes, b.1.device_bytes),
                    ..a.1
                }
            }
            (Some(p), None) | (None, Some(p)) => p.1,
            (None, None) => unreachable!("a count priced at least"),
        }
    }
}

/// What every token of a run shares (the placement's CPU work, the machine), for the
/// time of a token with a given number of misses.
struct TokenCost<'a> {
    p: &'a Placement,
    hw: &'a Hardware,
    io: &'a IoSetup,
    resident: f64,
    t_vram: f64,
    t_ram_exp: f64,
    t_ram_ne: f64,
    t_compute_exp: f64,
    t_compute_ne: f64,
    /// Non-expert bytes that do not fit in RAM: read every token.
    paged: f64,
    /// The CPU-side layers in groups of alike slices: their slices' bytes, the layers in
    /// the group and the expert ops of each (the same for every token).
    groups: Vec<(Vec<u64>, usize, f64)>,
}

impl<'a> TokenCost<'a> {
    fn new(
        p: &'a Placement,
        hw: &'a Hardware,
        io: &'a IoSetup,
        ram_gib: f64,
        resident: f64,
    ) -> Self {
        let mut t_compute_exp = 0.0;
        let mut known = true;
        let mut t_compute_ne = 0.0;
        if let Some(cpu) = &hw.cpu {
            // The CPU-side layers in groups of alike slices: each group's bytes priced once.
            for &(slices, n) in &p.cpu_groups() {
                let e = p.top_k as f64 * n as f64;
                for s in slices {
                    match cpu.matmul_seconds(&s.ty, e * s.bytes as f64) {
                        Some(x) => t_compute_exp += x,
                        None => known = false,
                    }
                }
            }
            t_compute_ne = cpu
                .matmul_seconds(&p.non_expert_quant, p.non_expert_ram_bytes)
                .unwrap_or(0.0);
        }
        if !known {
            t_compute_exp = 0.0;
        }
        let ram_bw = hw.ram.bandwidth_gbs * GB;
        TokenCost {
            p,
            hw,
            io,
            resident,
            t_vram: token_time(p, hw, 0.0).t_vram,
            t_ram_exp: p.cpu_expert_bytes_per_token() / ram_bw,
            t_ram_ne: p.non_expert_ram_bytes / ram_bw,
            t_compute_exp,
            t_compute_ne,
            paged: p.paged_non_expert_bytes(ram_gib, hw.ram.reserve_gib),
            groups: p
                .cpu_groups()
                .into_iter()
                .map(|(slices, g)| {
                    let bytes = slices.iter().map(|s| s.bytes).collect();
                    (bytes, g, expert_ops(slices, hw))
                })
                .collect(),
        }
    }

    /// A token with `misses` over the CPU layers, spread evenly over them, each layer's
    /// read at its own slice sizes; `accesses`: the CPU layers' per token.
    fn time(&self, misses: f64, accesses: f64) -> DecodeTime {
        let (p, hw, io) = (self.p, self.hw, self.io);
        let t_cpu_exp = self.t_ram_exp.max(self.t_compute_exp);
        let t_cpu_ne = self.t_ram_ne.max(self.t_compute_ne);
        let layers = p.cpu_layers.max(1) as f64;
        let mut t_io = 0.0;
        // Device bytes of each group, with its slices (and of the paged non-expert
        // weights), for the faulting threads' overlap.
        let mut reads: Vec<(f64, Vec<u64>)> = Vec::new();
        // The expert products that fault (the ops of the layers with a miss), each
        // between two barriers of the compute threads.
        let mut barriers = 0.0;
        let faulting_layers = fault_overlap::layers_with_a_miss(layers, misses);
        for (bytes, g, ops) in &self.groups {
            let r = io.layer_reads(bytes, misses / layers, self.resident);
            t_io += *g as f64 * r.seconds;
            barriers += faulting_layers * *g as f64 / layers * ops;
            reads.push((*g as f64 * r.device_bytes, bytes.clone()));
        }
        if self.paged > 0.0 {
            let r = io.layer_reads(&[self.paged as u64], 1.0, 0.0);
            t_io += r.seconds;
            reads.push((r.device_bytes, vec![self.paged as u64]));
        }
        // A sum of nothing is -0.0 in Rust's f64 `sum`: printed as "-0".
        let device_bytes: f64 = reads.iter().map(|r| r.0).sum::<f64>() + 0.0;
        let threads = hw.threads() as f64;
        let cpu_at = |j: f64| self.t_ram_exp.max(self.t_compute_exp * threads / j);
        let total = if let Some(faulting) =
            io.faulting_seconds(&reads, barriers, faulting_layers / layers, t_io, &cpu_at)
        {
            self.t_vram + t_cpu_ne + faulting
        } else if io.overlaps_compute() {
            // The hits' products run while the layer's reads do.
            let h = if accesses > 0.0 {
                (1.0 - misses / accesses).clamp(0.0, 1.0)
            } else {
                1.0
            };
            self.t_vram + t_cpu_ne + t_io.max(h * t_cpu_exp) + (1.0 - h) * t_cpu_exp
        } else {
            self.t_vram + t_cpu_ne + t_cpu_exp + t_io
        };
        DecodeTime {
            t_vram: self.t_vram,
            t_ram: self.t_ram_exp + self.t_ram_ne,
            t_compute: self.t_compute_exp + self.t_compute_ne,
            t_io,
            total,
            device_bytes,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::quant::quant_type;
    use crate::timemodel::GIB;

    /// The hand-computed machine of timemodel.rs: 2 CPU layers, top-1, experts of
    /// 1 GiB in slices of 256 + 256 + 512 MiB, no GPU; RAM 10 GiB at 10 GB/s.
    pub(crate) fn setup() -> (Placement, Hardware) {
        let q8 = quant_type("q8_0").unwrap();
        let p = Placement {
            expert_bytes: 1 << 30,
            non_expert_bytes: 0.5 * GIB,
            non_expert_vram_bytes: 0.0,
            non_expert_ram_bytes: 0.5 * GIB,
            gpu_layers: 0,
            cpu_layers: 2,
            cpu_first: 0,
            n_layers: 2,
            top_k: 1,
            layers: crate::timemodel::tests::layers(
                2,
                [(q8, 1 << 28), (q8, 1 << 28), (q8, 1 << 29)],
            ),
            non_expert_quant: q8,
        };
        let hw: Hardware = toml::from_str(
            "name='t'\n[ram]\nsize_gib=10\nreserve_gib=1\nbandwidth_gbs=10\n[ssd]\nbandwidth_gbs=2\n[cpu]\nthreads=1\n",
        )
        .unwrap();
        (p, hw)
    }

    /// The tests' mmap engine: `threads` faulting in windows of `window` bytes on
    /// `drive`, the page cache at `page_cache_gbs` per core for every path.
    fn mmap(window: u64, threads: u32, drive: DriveCurve, page_cache_gbs: f64) -> IoSetup {
        IoSetup {
            engine: IoEngine::Mmap { window, threads },
            drive,
            page_cache: PageCacheRates::same(page_cache_gbs),
            serial_reads: false,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
    }

    #[test]
    fn mmap_adds_the_faults_to_the_cpu_time() {
        let (p, hw) = setup();
        let drive = DriveCurve::from_figures(2.0, 100.0, 1.0);
        let io = mmap(1 << 20, 1, drive.clone(), f64::INFINITY);
        // Two tokens, one with 2 misses, one with none: 1 miss per token, half a miss
        // per layer, the neighbours all cached.
        let t = decode_time(&p, &hw, &io, 10.0, &[(2, 1), (0, 1)], 2.0, 1.0);
        let bytes = GIB;
        assert!(close(t.device_bytes, bytes));
        let io_s = drive.read_seconds(bytes, (1 << 20) as f64, 1.0);
        assert!(close(t.t_io, io_s));
        // CPU: 2 GiB of experts + 0.5 GiB non-expert at 10 GB/s, or at q8_0's 21.1 GB/s
        // per thread: RAM-bound.
        assert!(close(t.t_ram, 2.5 * GIB / 10e9));
        assert!(close(t.t_compute, 2.5 * GIB / 21.1e9));
        assert!(close(t.total, t.t_ram + io_s));
    }

    #[test]
    fn faulting_threads_overlap_their_reads_and_products() {
        let (p, mut hw) = setup();
        let drive = DriveCurve::from_figures(2.0, 100.0, 1.0);
        let io = |threads| mmap(1 << 20, threads, drive.clone(), 4.0);
        let misses = [(2, 1), (0, 1)];
        for threads in [1, 2, 8] {
            hw.cpu.as_mut().unwrap().threads = threads;
            let t = decode_time(&p, &hw, &io(threads), 10.0, &misses, 2.0, 1.0);
            let ne = 0.5 * GIB / 10e9;
            let exp = (2.0 * GIB / 10e9).max(2.0 * GIB / (21.1e9 * threads as f64));
            let alone = t.t_io + exp;
            if threads == 1 {
                // One thread: reads, page cache and products one after another.
                assert!(close(t.total, ne + alone), "{t:?}");
            } else {
                // Several: while one waits for the drive another multiplies (or moves
                // pages through the page cache); no faster than the drive alone at
                // every thread's fault in flight, or than the products, nor slower than
                // the sum.
                let drive_alone = drive.read_seconds(GIB, (1 << 20) as f64, threads as f64);
                assert!(t.total < ne + alone, "{threads}: {t:?}");
                assert!(t.total > ne + drive_alone.max(exp), "{threads}: {t:?}");
            }
        }
    }

    /// The products of the layers without a miss fault nothing: they run on every
    /// thread, not in the ops of the layers with one, so what misses add to a token is
    /// in proportion to how many there are, however rare (here the ops have fewer
    /// windows than threads, 64 MiB windows on 8 threads, and the products are bound by
    /// compute on fewer than 5 threads: in those ops the whole token's products would
    /// run on fewer threads).
    #[test]
    fn what_misses_add_is_in_proportion_to_them() {
        let (p, mut hw) = setup();
        hw.ram.bandwidth_gbs = 100.0;
        hw.cpu.as_mut().unwrap().threads = 8;
        let io = mmap(64 << 20, 8, DriveCurve::from_figures(2.0, 100.0, 1.0), 4.0);
        let none = decode_time(&p, &hw, &io, 10.0, &[(0, 1000)], 2.0, 1.0);
        let per_miss = |every: u64| {
            let rare = decode_time(&p, &hw, &io, 10.0, &[(1, 1), (0, every - 1)], 2.0, 1.0);
            (rare.total - none.total) * every as f64
        };
        let one_in_ten = per_miss(10);
        assert!(one_in_ten > 0.0);
        for every in [100, 1000, 100_000] {
            let x = per_miss(every);
            assert!(
                (x - one_in_ten).abs() <= 1e-6 * one_in_ten,
                "{every}: {x} vs {one_in_ten}"
            );
        }
    }

    /// The share of the products in the faulting ops: at one thread the token is the
    /// sum of its parts whatever the share (the products counted once); at eight, on a
    /// drive about as fast as the RAM, the faulting layers' products run under their
    /// faults (a fifth of all products hidden at least), and never is the token longer
    /// than the sum.
    #[test]
    fn the_products_of_the_faulting_layers_run_under_their_faults() {
        let (p, mut hw) = setup();
        hw.ram.bandwidth_gbs = 100.0;
        let io = |threads| {
            mmap(
                1 << 20,
                threads,
                DriveCurve::from_figures(200.0, 1.0, 100.0),
                f64::INFINITY,
            )
        };
        // CPU seconds at `threads`: the non-expert 0.5 GiB and the experts' 2 GiB, each
        // bound by the RAM or by q8_0's 21.1 GB/s per thread.
        let cpu = |bytes: f64, threads: f64| (bytes / 100e9).max(bytes / (21.1e9 * threads));
        // Every layer with a miss (2 a token), or one in two tokens.
        let histograms = [&[(2u32, 1u64)][..], &[(1, 1), (0, 1)][..]];
        hw.cpu.as_mut().unwrap().threads = 1;
        for misses in histograms {
            let t = decode_time(&p, &hw, &io(1), 10.0, misses, 2.0, 1.0);
            let sum = cpu(0.5 * GIB, 1.0) + t.t_io + cpu(2.0 * GIB, 1.0);
            assert!(close(t.total, sum), "{misses:?}: {t:?}");
        }
        hw.cpu.as_mut().unwrap().threads = 8;
        for misses in histograms {
            let t = decode_time(&p, &hw, &io(8), 10.0, misses, 2.0, 1.0);
            let exp = cpu(2.0 * GIB, 8.0);
            let sum = cpu(0.5 * GIB, 8.0) + t.t_io + exp;
            assert!(t.total <= sum * (1.0 + 1e-9), "{misses:?}: {t:?}");
            if misses.len() == 1 {
                assert!(t.total < sum - 0.2 * exp, "{misses:?}: {t:?}");
            }
        }
    }

    /// Ops of a few windows each (DeepSeek-V2-Lite's 1.5 MiB slices in 256 KiB windows,
    /// 16 threads, one or two misses a layer): the chain's exponential times end each op
    /// with its slowest thread and its drive's last request alone, which equal windows
    /// issued together do not; the token is no longer than its reads and then its
    /// products (without that bound it came out 10 % longer here).
    #[test]
    fn ops_of_a_few_windows_take_no_longer_than_lock_step() {
        let q = quant_type("iq4_xs").unwrap();
        let slice = 3 << 19;
        let (mut p, mut hw) = setup();
        p.expert_bytes = 3 * slice;
        p.cpu_layers = 26;
        p.n_layers = 26;
        p.top_k = 6;
        p.layers = crate::timemodel::tests::layers(26, [(q, slice), (q, slice), (q, slice)]);
        hw.ram.bandwidth_gbs = 67.2;
        hw.cpu.as_mut().unwrap().threads = 16;
        let io = mmap(
            256 << 10,
            16,
            DriveCurve::from_figures(7.0, 96.0, 2.37),
            1000.0,
        );
        for misses in [13, 26, 52] {
            let t = decode_time(&p, &hw, &io, 64.0, &[(misses, 1)], 156.0, 0.8);
            let ne = (0.5 * GIB / 67.2e9).max(0.5 * GIB / (21.1e9 * 16.0));
            let exp = t.t_compute - 0.5 * GIB / (21.1e9 * 16.0);
            let sum = ne + t.t_io + exp.max(t.t_ram - 0.5 * GIB / 67.2e9);
            assert!(t.total <= sum * (1.0 + 1e-9), "{misses}: {t:?} vs {sum}");
        }
    }

    /// A run's token is the mean of its tokens' times, each priced at its own misses
    /// (eight faulting threads: the time is not linear in the misses, so pricing the
    /// mean token instead would differ).
    #[test]
    fn a_run_takes_the_mean_of_its_tokens_times() {
        let (p, mut hw) = setup();
        hw.cpu.as_mut().unwrap().threads = 8;
        let io = mmap(1 << 20, 8, DriveCurve::from_figures(2.0, 100.0, 1.0), 4.0);
        let one = |m: u32| decode_time(&p, &hw, &io, 10.0, &[(m, 1)], 2.0, 1.0);
        let run = decode_time(&p, &hw, &io, 10.0, &[(4, 1), (0, 3)], 2.0, 1.0);
        let (four, none) = (one(4), one(0));
        assert!(
            close(run.total, (four.total + 3.0 * none.total) / 4.0),
            "{run:?}"
        );
        assert!(close(run.t_io, (four.t_io + 3.0 * none.t_io) / 4.0));
        assert!(close(run.device_bytes, four.device_bytes / 4.0));
        assert!(
            !close(run.total, one(1).total),
            "linear here: the test shows nothing"
        );
    }

    /// Many threads and many counts of misses: fewer counts priced, the rest on straight
    /// lines between them, within 0.5 % of pricing every count.
    #[test]
    fn many_threads_price_fewer_counts_closely() {
        let (mut p, mut hw) = setup();
        p.cpu_layers = 60;
        p.n_layers = 60;
        p.layers = crate::timemodel::tests::layers(60, [(quant_type("q8_0").unwrap(), 1 << 24); 3]);
        hw.ram.bandwidth_gbs = 300.0;
        hw.cpu.as_mut().unwrap().threads = 128;
        let io = mmap(
            256 << 10,
            128,
            DriveCurve::from_figures(7.0, 96.0, 2.37),
            4.0,
        );
        let misses: Vec<(u32, u64)> = (0..300).map(|m| (m, 1 + (m as u64 % 7))).collect();
        let tokens: u64 = misses.iter().map(|b| b.1).sum();
        let run = decode_time(&p, &hw, &io, 512.0, &misses, 480.0, 0.5);
        let exact: f64 = misses
            .iter()
            .map(|&(m, n)| n as f64 * decode_time(&p, &hw, &io, 512.0, &[(m, 1)], 480.0, 0.5).total)
            .sum::<f64>()
            / tokens as f64;
        assert!(
            (run.total / exact - 1.0).abs() < 0.005,
            "{} vs {exact}",
            run.total
        );
        assert!(
            run.total != exact,
            "every count priced: the test shows nothing"
        );
    }

    #[test]
    fn the_page_cache_costs_the_faulting_thread_cpu_time() {
        let (p, hw) = setup();
        let drive = DriveCurve::from_figures(2.0, 100.0, 1.0);
        let mut io = mmap(1 << 20, 1, drive.clone(), 2.0);
        let t = decode_time(&p, &hw, &io, 10.0, &[(2, 1), (0, 1)], 2.0, 1.0);
        let io_s = drive.read_seconds(GIB, (1 << 20) as f64, 1.0);
        assert!(close(t.t_io, io_s + GIB / 2e9));
        // Faults go at the rate for faults, whatever buffered reads cost; reads of the
        // same bytes at the rate for reads.
        io.page_cache = PageCacheRates {
            read_gbs: 0.5,
            fault_gbs: 8.0,
            willneed_gbs: 8.0,
        };
        let f = decode_time(&p, &hw, &io, 10.0, &[(2, 1), (0, 1)], 2.0, 1.0);
        assert!(close(f.t_io, io_s + GIB / 8e9));
        io.engine = IoEngine::Pread {
            workers: 1,
            chunk: 1 << 20,
        };
        let r = decode_time(&p, &hw, &io, 10.0, &[(2, 1), (0, 1)], 2.0, 1.0);
        io.page_cache = PageCacheRates::same(8.0);
        let r8 = decode_time(&p, &hw, &io, 10.0, &[(2, 1), (0, 1)], 2.0, 1.0);
        assert!(
            close(r.t_io - r8.t_io, GIB / 0.5e9 - GIB / 8e9),
            "{r:?} {r8:?}"
        );
        // O_DIRECT bypasses it.
        io.engine = IoEngine::Direct { workers: 1 };
        let d = decode_time(&p, &hw, &io, 10.0, &[(2, 1), (0, 1)], 2.0, 1.0);
        assert!(close(
            d.t_io,
            drive.read_seconds(GIB, (1 << 28) as f64 * 4.0 / 3.0, 1.0)
        ));
    }

    #[test]
    fn workers_overlap_reads_with_the_hits_compute() {
        let (p, hw) = setup();
        let drive = DriveCurve::from_figures(2.0, 100.0, 1.0);
        let io = IoSetup {
            engine: IoEngine::Pread {
                workers: 4,
                chunk: 1 << 20,
            },
            drive,
            page_cache: PageCacheRates::same(f64::INFINITY),
            serial_reads: false,
        };
        let t = decode_time(&p, &hw, &io, 10.0, &[(1, 1)], 2.0, 1.0);
        let exp = 2.0 * GIB / 10e9;
        let ne = 0.5 * GIB / 10e9;
        assert!(close(t.total, ne + t.t_io.max(0.5 * exp) + 0.5 * exp));
        assert!(t.total < t.t_ram + t.t_io);
        // An engine that waits for its reads first adds them to all of the compute.
        let serial = IoSetup {
            serial_reads: true,
            ..io
        };
        let s = decode_time(&p, &hw, &serial, 10.0, &[(1, 1)], 2.0, 1.0);
        assert!(close(s.total, ne + exp + t.t_io));
        assert_eq!((s.t_io, s.device_bytes), (t.t_io, t.device_bytes));
    }

    #[test]
    fn codebook_quants_can_bind_on_compute() {
        let (mut p, mut hw) = setup();
        for l in &mut p.layers {
            l.slices
                .iter_mut()
                .for_each(|s| s.ty = quant_type("iq2_xxs").unwrap());
        }
        hw.ram.bandwidth_gbs = 100.0;
        let io = mmap(
            1 << 20,
            1,
            DriveCurve::from_figures(2.0, 100.0, 1.0),
            f64::INFINITY,
        );
        let t = decode_time(&p, &hw, &io, 10.0, &[(0, 1)], 2.0, 1.0);
        // 2 GiB of IQ2_XXS at 6.5 GB/s on one thread beats 100 GB/s of RAM.
        let compute_exp = 2.0 * GIB / 6.5e9;
        assert!(close(
            t.total,
            compute_exp + (0.5 * GIB / 21.1e9).max(0.5 * GIB / 100e9)
        ));
    }

    #[test]
    fn non_expert_weights_beyond_ram_are_read_every_token() {
        let (p, hw) = setup();
        let io = mmap(
            1 << 20,
            1,
            DriveCurve::from_figures(2.0, 100.0, 1.0),
            f64::INFINITY,
        );
        // 1.25 GiB installed, 1 GiB reserve: 0.25 GiB of the 0.5 GiB stays out.
        let t = decode_time(&p, &hw, &io, 1.25, &[(0, 1)], 2.0, 0.0);
        assert!(close(t.device_bytes, 0.25 * GIB + 2.0 * (1 << 20) as f64));
        let full = decode_time(&p, &hw, &io, 10.0, &[(0, 1)], 2.0, 0.0);
        assert_eq!(full.device_bytes, 0.0);
    }
}
