//! The time of a step of several tokens: a prompt ubatch (llama.cpp `-ub`) or a decode
//! step of `--parallel` sequences (docs/batches.md). A step runs every layer once for
//! all its tokens, so a layer's expert weights are read once for the union of experts its
//! tokens route to (U per layer), while the multiplications grow with the (token,
//! expert) pairs (n x top-k per layer):
//!
//! ```text
//! t_io   = the step's misses through the engine (as a decode token's, io_engine.rs)
//! CPU:     max(U bytes / RAM bw, U bytes / matvec rate, pairs x 2 weights / GEMM rate)
//!          (the GEMM term for n > 1: one token is the decode model's matrix-vector product)
//! offload: U bytes / host-to-device rate + pairs x 2 weights / GPU rate
//! GPU layers and non-expert weights in VRAM: max(bytes / VRAM bw, FLOPs / GPU rate)
//! mmap:          t = t_gpu + t_cpu + t_h2d + t_io
//! pread, direct: the reads overlap the hits' compute as in decode.rs
//! ```
//! Op offload (llama.cpp's default with a GPU, `--no-op-offload` turns it off): a step of
//! at least [`OP_OFFLOAD_MIN_BATCH`] tokens multiplies its CPU-side weights on the GPU,
//! copying the experts its tokens use (PR 15346) every step, after the router and before
//! the product, on one stream (no overlap). Missing pages then fault inside that one
//! copying thread, so the engine's faults run one at a time.

use serde::Serialize;

use crate::cpu::Cpu;
use crate::decode::IoSetup;
use crate::hardware::Hardware;
use crate::io_engine::IoEngine;
use crate::quant::QuantType;
use crate::timemodel::{Placement, GB};

/// Tokens from which llama.cpp's CUDA backend takes a CPU-resident weight's product
/// (`GGML_OP_OFFLOAD_MIN_BATCH`, ggml-cuda.cu; for MUL_MAT_ID the ubatch's tokens).
pub const OP_OFFLOAD_MIN_BATCH: u32 = 32;

/// What a step asks of the CPU-side layers: its tokens, and summed over those layers the
/// union of experts it touches and how many of them missed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLoad {
    pub tokens: u32,
    pub union: f64,
    pub misses: f64,
}

/// How the batch runs on the machine.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchMachine<'a> {
    pub placement: &'a Placement,
    pub hw: &'a Hardware,
    pub io: &'a IoSetup,
    /// Installed RAM (GiB): non-expert weights beyond it are read every step.
    pub ram_gib: f64,
    /// llama.cpp's op offload (on unless `--no-op-offload`).
    pub op_offload: bool,
    /// The share of the CPU layers' experts the cache holds (decode.rs).
    pub resident: f64,
    /// Experts per MoE layer: with no layer on the CPU side (none replayed), a GPU
    /// layer's union is that of the step's tokens routed uniformly.
    pub n_experts: usize,
}

/// Seconds of one step by part, and the bytes the device reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StepTime {
    /// GPU: VRAM-resident weights and offloaded products.
    pub t_gpu: f64,
    /// CPU: the CPU-side weights' products (RAM, matvec or GEMM bound).
    pub t_cpu: f64,
    /// Host-to-device copies of offloaded weights.
    pub t_h2d: f64,
    pub t_io: f64,
    pub total: f64,
    pub device_bytes: f64,
    /// Whether the CPU-side products ran on the GPU (op offload).
    pub offloaded: bool,
}

/// Weights in a slice of `bytes` of type `t`.
fn weights(t: &QuantType, bytes: f64) -> f64 {
    bytes * t.elems as f64 / t.bytes as f64
}

impl BatchMachine<'_> {
    /// Whether a step of `tokens` runs its CPU-side products on the GPU.
    pub fn offloads(&self, tokens: u32) -> bool {
        self.op_offload && !self.hw.gpus.is_empty() && tokens >= OP_OFFLOAD_MIN_BATCH
    }

    /// The GPU's batch rate (FLOP/s) and host-to-device rate (B/s): the first GPU's,
    /// where llama.cpp offloads.
    fn gpu_rates(&self) -> (f64, f64) {
        match self.hw.gpus.first() {
            Some(g) => (g.gemm_tflops() * 1e12, g.h2d_gbs() * GB),
            None => (f64::INFINITY, f64::INFINITY),
        }
    }

    /// Seconds per byte the GPUs read from VRAM: in layer split each reads its share
    /// (in proportion to usable VRAM) at its own bandwidth, as timemodel.rs's t_vram.
    fn vram_seconds_per_byte(&self) -> f64 {
        let usable: Vec<(f64, f64)> = self
            .hw
            .gpus
            .iter()
            .map(|g| {
                let u = g.count as f64 * (g.vram_gib - g.reserve_gib).max(0.0);
                (u, g.bandwidth_gbs * GB)
            })
            .collect();
        let total: f64 = usable.iter().map(|u| u.0).sum();
        if total > 0.0 {
            usable.iter().map(|&(u, bw)| u / total / bw).sum()
        } else {
            0.0
        }
    }

    /// One step's time.
    pub fn step_time(&self, s: StepLoad) -> StepTime {
        let p = self.placement;
        let n = s.tokens.max(1);
        let offload = self.offloads(n);
        let (gpu_flops, h2d) = self.gpu_rates();
        let vram_spb = self.vram_seconds_per_byte();
        let layers = p.cpu_layers.max(1) as f64;
        let (mut u, m) = (s.union / layers, s.misses / layers);
        let pairs = n as f64 * p.top_k as f64;
        if p.cpu_layers == 0 {
            // No replayed layer to take the GPU layers' union from: n tokens of top-k
            // distinct experts each, uniform over the layer's (exactly top-k for one).
            let e = self.n_experts.max(p.top_k) as f64;
            u = e * (1.0 - (1.0 - p.top_k as f64 / e).powi(n as i32));
        }

        // Expert weights of the CPU-side layers.
        let mut cpu = CpuWork::default();
        let (mut t_gpu, mut t_h2d) = (0.0, 0.0);
        let mut t_io = 0.0;
        // Device bytes of each group, with its slices (and of the paged non-expert
        // weights), for the faulting threads' overlap.
        let mut reads: Vec<(f64, Vec<u64>)> = Vec::new();
        let io = match (&self.io.engine, offload) {
            // The copying thread faults alone.
            (IoEngine::Mmap { window, .. }, true) => IoSetup {
                engine: IoEngine::Mmap {
                    window: *window,
                    threads: 1,
                },
                ..self.io.clone()
            },
            _ => self.io.clone(),
        };
        // The expert products that fault, each between two barriers of the threads
        // (decode.rs).
        let mut barriers = 0.0;
        // The CPU layers with a miss, whose products fault.
        let faulting = crate::fault_overlap::layers_with_a_miss(layers, s.misses);
        for (slices, g) in p.cpu_groups() {
            let g = g as f64;
            barriers += faulting * g / layers * crate::decode::expert_ops(slices, self.hw);
            for sl in slices {
                let touched = g * u * sl.bytes as f64;
                let pair_bytes = g * pairs * sl.bytes as f64;
                if offload {
                    t_h2d += touched / h2d;
                    t_gpu += 2.0 * weights(&sl.ty, pair_bytes) / gpu_flops;
                } else {
                    cpu.add(self.hw, &sl.ty, touched, pair_bytes, n);
                }
            }
            let bytes: Vec<u64> = slices.iter().map(|s| s.bytes).collect();
            let r = io.layer_reads(&bytes, m, self.resident);
            t_io += g * r.seconds;
            reads.push((g * r.device_bytes, bytes));
        }
        let t_cpu_exp = cpu.seconds();
        let t_exp = t_cpu_exp + t_gpu + t_h2d;

        // GPU-resident layers: their union taken as the CPU layers' (alike layers).
        let mut t_vram = 0.0;
        let cpu_side = p.cpu_range();
        let gpu_side = p
            .layers
            .iter()
            .enumerate()
            .filter(|(i, _)| !cpu_side.contains(i));
        for (_, l) in gpu_side {
            for sl in &l.slices {
                let bytes = u * sl.bytes as f64;
                let flops = 2.0 * weights(&sl.ty, pairs * sl.bytes as f64);
                t_vram += (bytes * vram_spb).max(flops / gpu_flops);
            }
        }
        // Non-expert weights: each token multiplies all of them.
        let ne = &p.non_expert_quant;
        if p.non_expert_vram_bytes > 0.0 {
            let flops = 2.0 * weights(ne, p.non_expert_vram_bytes) * n as f64;
            t_vram += (p.non_expert_vram_bytes * vram_spb).max(flops / gpu_flops);
        }
        let ne_ram = p.non_expert_ram_bytes;
        let t_ne = if ne_ram <= 0.0 {
            0.0
        } else if offload {
            let h = ne_ram / h2d;
            t_h2d += h;
            h + 2.0 * weights(ne, ne_ram) * n as f64 / gpu_flops
        } else {
            let mut w = CpuWork::default();
            w.add(self.hw, ne, ne_ram, ne_ram * n as f64, n);
            w.seconds()
        };
        // Non-expert weights beyond the RAM left after the reserve, read every step.
        let paged = p.paged_non_expert_bytes(self.ram_gib, self.hw.ram.reserve_gib);
        if paged > 0.0 {
            let r = io.layer_reads(&[paged as u64], 1.0, 0.0);
            t_io += r.seconds;
            reads.push((r.device_bytes, vec![paged as u64]));
        }
        let device_bytes: f64 = reads.iter().map(|r| r.0).sum::<f64>() + 0.0;
        t_gpu += t_vram;
        // The threads that fault multiply what they faulted in (the CPU's threads, or
        // under op offload the one copying thread, which then copies).
        let threads = self.hw.threads();
        let work_at = |j: f64| {
            if offload {
                t_exp
            } else {
                cpu.seconds_on(j, threads)
            }
        };
        let total = if let Some(ops) =
            io.faulting_seconds(&reads, barriers, faulting / layers, t_io, &work_at)
        {
            t_vram + t_ne + ops
        } else if io.overlaps_compute() {
            let h = if s.union > 0.0 {
                (1.0 - s.misses / s.union).clamp(0.0, 1.0)
            } else {
                1.0
            };
            t_vram + t_ne + t_io.max(h * t_exp) + (1.0 - h) * t_exp
        } else {
            t_vram + t_ne + t_exp + t_io
        };
        StepTime {
            t_gpu,
            t_cpu: t_cpu_exp + if offload { 0.0 } else { t_ne },
            t_h2d,
            t_io,
            total,
            device_bytes,
            offloaded: offload,
        }
    }
}

/// The CPU's share of a step, summed over weights of several types: RAM seconds,
/// matrix-vector seconds (None: a type without a rate) and GEMM seconds; the step takes
/// the longest of the three sums, as decode.rs does for one token.
#[derive(Clone, Copy, Debug, Default)]
struct CpuWork {
    ram: f64,
    matvec: Option<f64>,
    unknown: bool,
    gemm: f64,
}

impl CpuWork {
    /// `bytes` touched once; `pair_bytes`: the bytes each of the `n` tokens multiplies,
    /// summed over the tokens.
    fn add(&mut self, hw: &Hardware, t: &QuantType, bytes: f64, pair_bytes: f64, n: u32) {
        self.ram += bytes / (hw.ram.bandwidth_gbs * GB);
        let flops = 2.0 * weights(t, pair_bytes);
        // No CPU named: RAM-bound at one token, as decode.rs; a batch still needs its
        // FLOPs, at the published rates on the default threads.
        if let Some(cpu) = &hw.cpu {
            match cpu.matmul_seconds(t, bytes) {
                Some(x) => *self.matvec.get_or_insert(0.0) += x,
                None => self.unknown = true,
            }
        }
        if n > 1 {
            let gemm = match &hw.cpu {
                Some(cpu) => cpu.gemm_seconds(t, flops),
                None => Cpu::new("", hw.threads()).gemm_seconds(t, flops),
            };
            self.gemm += gemm.unwrap_or(0.0);
        }
    }

    fn seconds(&self) -> f64 {
        self.ram.max(self.matvec_seconds()).max(self.gemm)
    }

    /// The seconds with `j` of the `threads` threads multiplying: the RAM's bandwidth is
    /// shared, the products' rate is per thread.
    fn seconds_on(&self, j: f64, threads: u32) -> f64 {
        let share = threads as f64 / j.max(1.0);
        self.ram
            .max(self.matvec_seconds() * share)
            .max(self.gemm * share)
    }

    fn matvec_seconds(&self) -> f64 {
        if self.unknown {
            0.0
        } else {
            self.matvec.unwrap_or(0.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode_time;
    use crate::drive::DriveCurve;
    use crate::quant::quant_type;
    use crate::timemodel::GIB;

    /// 2 CPU layers, top-1, experts of 1 GiB in q8_0 slices of 256 + 256 + 512 MiB,
    /// 0.5 GiB of q8_0 non-expert weights; 1 thread, RAM 10 GiB at 10 GB/s; with
    /// `gpu`, a 24 GiB GPU that holds the non-expert weights.
    fn setup(gpu: bool) -> (Placement, Hardware) {
        let (mut p, mut hw) = crate::decode::tests::setup();
        if gpu {
            p.non_expert_vram_bytes = p.non_expert_bytes;
            p.non_expert_ram_bytes = 0.0;
            hw.gpus = toml::from_str::<Hardware>(
                "name='g'\n[[gpus]]\nvram_gib=24\nbandwidth_gbs=1000\ngemm_tflops=100\nh2d_gbs=20\n[ram]\nsize_gib=1\nbandwidth_gbs=1\n[ssd]\nbandwidth_gbs=1\n",
            )
            .unwrap()
            .gpus;
        }
        (p, hw)
    }

    /// The machine of `setup` with op offload on.
    fn machine<'a>(
        p: &'a Placement,
        hw: &'a Hardware,
        io: &'a IoSetup,
        resident: f64,
    ) -> BatchMachine<'a> {
        BatchMachine {
            placement: p,
            hw,
            io,
            ram_gib: 10.0,
            op_offload: true,
            resident,
            n_experts: 8,
        }
    }

    fn mmap(threads: u32) -> IoSetup {
        IoSetup {
            engine: IoEngine::Mmap {
                window: 1 << 20,
                threads,
            },
            drive: DriveCurve::from_figures(2.0, 100.0, 1.0),
            page_cache: crate::io_engine::PageCacheRates::same(4.0),
            serial_reads: false,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
    }

    #[test]
    fn a_one_token_step_is_a_decode_token() {
        for gpu in [false, true] {
            let (p, mut hw) = setup(gpu);
            for cpu in [true, false] {
                if !cpu {
                    hw.cpu = None;
                }
                for io in [
                    mmap(4),
                    IoSetup {
                        engine: IoEngine::Pread {
                            workers: 4,
                            chunk: 1 << 20,
                        },
                        ..mmap(1)
                    },
                    IoSetup {
                        engine: IoEngine::Direct { workers: 2 },
                        ..mmap(1)
                    },
                ] {
                    for (misses, ram_gib) in [(0u32, 10.0), (1, 10.0), (2, 1.2)] {
                        let m = BatchMachine {
                            placement: &p,
                            hw: &hw,
                            io: &io,
                            ram_gib,
                            op_offload: true,
                            resident: 0.5,
                            n_experts: 8,
                        };
                        let st = m.step_time(StepLoad {
                            tokens: 1,
                            union: 2.0,
                            misses: misses as f64,
                        });
                        let d = decode_time(&p, &hw, &io, ram_gib, &[(misses, 1)], 2.0, 0.5);
                        assert!(
                            close(st.total, d.total),
                            "{gpu} {cpu} {io:?} {misses}: {st:?} {d:?}"
                        );
                        assert!(close(st.device_bytes, d.device_bytes));
                        assert!(close(st.t_io, d.t_io));
                    }
                }
            }
        }
    }

    #[test]
    fn a_ubatch_on_the_cpu_is_bound_by_its_flops() {
        let (p, hw) = setup(false);
        let io = mmap(1);
        let m = machine(&p, &hw, &io, 1.0);
        // 64 tokens, every one routes to one of the 2 experts of each layer: all 4
        // experts touched, 1 missed.
        let st = m.step_time(StepLoad {
            tokens: 64,
            union: 4.0,
            misses: 1.0,
        });
        assert!(!st.offloaded);
        let q8_rate = crate::cpu::published_gemm_rate(
            &quant_type("q8_0").unwrap(),
            crate::cpu::Kernels::LlamaCpp,
        )
        .unwrap()
        .0 * 1e9;
        let weights_per_byte = 32.0 / 34.0;
        // Experts: 64 tokens x 2 layers x 1 GiB each; non-expert: 64 x 0.5 GiB.
        let gemm_exp = 2.0 * weights_per_byte * 128.0 * GIB / q8_rate;
        let gemm_ne = 2.0 * weights_per_byte * 32.0 * GIB / q8_rate;
        // The one miss: half a miss per layer, read as in decode.
        let r = io.layer_reads(&[1 << 28, 1 << 28, 1 << 29], 0.5, 1.0);
        assert!(close(st.t_io, 2.0 * r.seconds));
        assert!(close(st.total, gemm_exp + gemm_ne + st.t_io), "{st:?}");
        // Above the time to read the 4 GiB touched from RAM.
        assert!(gemm_exp > 4.0 * GIB / 10e9);
    }

    #[test]
    fn from_32_tokens_the_gpu_multiplies_what_is_copied_to_it() {
        let (p, hw) = setup(true);
        let io = mmap(4);
        let mut m = machine(&p, &hw, &io, 1.0);
        let load = |tokens| StepLoad {
            tokens,
            union: 4.0,
            misses: 2.0,
        };
        let st = m.step_time(load(32));
        assert!(st.offloaded);
        // The 4 GiB touched cross the link at 20 GB/s; the products at 100 TFLOP/s.
        let flops = 2.0 * (32.0 / 34.0) * 64.0 * GIB;
        assert!(close(st.t_h2d, 4.0 * GIB / 20e9));
        // The misses fault in the one copying thread: one miss per layer, 1 thread.
        let one = mmap(1);
        let r = one.layer_reads(&[1 << 28, 1 << 28, 1 << 29], 1.0, 1.0);
        assert!(close(st.t_io, 2.0 * r.seconds));
        // Non-expert weights in VRAM: 32 tokens' FLOPs or their bytes, whichever binds.
        let ne_flops = 2.0 * (32.0 / 34.0) * 0.5 * GIB * 32.0;
        let ne = (0.5 * GIB / 1000e9).max(ne_flops / 100e12);
        assert!(
            close(st.total, ne + st.t_h2d + flops / 100e12 + st.t_io),
            "{st:?}"
        );
        // Below 32 tokens, or with --no-op-offload, the CPU multiplies.
        assert!(!m.step_time(load(31)).offloaded);
        m.op_offload = false;
        let cpu = m.step_time(load(32));
        assert!(!cpu.offloaded);
        assert_eq!(cpu.t_h2d, 0.0);
        assert!(
            cpu.t_io < st.t_io,
            "4 threads fault at once on the CPU path"
        );
    }

    #[test]
    fn vram_layers_first_or_last_cost_as_in_decode() {
        let (mut p, hw) = setup(true);
        let q8 = quant_type("q8_0").unwrap();
        p.layers =
            crate::timemodel::tests::layers(3, [(q8, 1 << 28), (q8, 1 << 28), (q8, 1 << 29)]);
        p.n_layers = 3;
        p.gpu_layers = 1;
        let io = mmap(2);
        for cpu_first in [0, 1] {
            p.cpu_first = cpu_first;
            let m = machine(&p, &hw, &io, 0.5);
            let st = m.step_time(StepLoad {
                tokens: 1,
                union: 2.0,
                misses: 1.0,
            });
            let d = decode_time(&p, &hw, &io, 10.0, &[(1, 1)], 2.0, 0.5);
            assert!(close(st.total, d.total), "{cpu_first}: {st:?} {d:?}");
            // A ubatch reads the VRAM layer's union (as a CPU layer's: 1 expert) once.
            let big = m.step_time(StepLoad {
                tokens: 64,
                union: 2.0,
                misses: 0.0,
            });
            assert!(big.t_gpu > st.t_gpu);
        }
    }
}
