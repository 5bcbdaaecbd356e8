//! Placement of the weights on VRAM / RAM / SSD, and the time per generated token
//! (batch 1, layer-sequential execution), for both the simulated SSD traffic and the
//! seed's analytic estimate (reconstructed in model_facts.md section 5):
//!
//! ```text
//! t      = t_vram + t_ram + t_ssd
//! t_vram = (non-expert bytes on GPU + expert bytes of GPU-resident layers touched) / VRAM bw
//! t_ram  = (non-expert bytes left in RAM + expert bytes touched by CPU-side layers) / RAM bw
//! t_ssd  = SSD bytes of the token / SSD bw
//! ```
//!
//! Units: bytes exact (GGUF blocks), VRAM/RAM sizes in GiB, bandwidths in decimal GB/s.

use std::ops::Range;

use serde::Serialize;

use crate::hardware::Hardware;
use crate::model::Model;
use crate::quant::QuantType;
use crate::weights::{LayerWeights, Slice, Weights};

pub const GIB: f64 = (1u64 << 30) as f64;
pub const GB: f64 = 1e9;

/// Where the weights live, and how large the page cache is in experts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Placement {
    /// Bytes one expert in the page cache counts for: every expert's when all layers'
    /// experts have one size, else the mean over the CPU-side layers.
    pub expert_bytes: u64,
    /// Non-expert weights read per token (attention, shared experts, dense FFNs, head).
    pub non_expert_bytes: f64,
    pub non_expert_vram_bytes: f64,
    pub non_expert_ram_bytes: f64,
    /// MoE layers whose experts sit in VRAM: the first ones, or with `--n-cpu-moe` the
    /// last ones.
    pub gpu_layers: usize,
    pub cpu_layers: usize,
    /// Index of the first CPU-side MoE layer: the CPU side is `cpu_range()`, VRAM holds
    /// the layers before and after it (`gpu_layers` by default, 0 with `--n-cpu-moe`).
    pub cpu_first: usize,
    pub n_layers: usize,
    pub top_k: usize,
    /// Every MoE layer's expert slices: types and bytes (after llama.cpp's fallback for
    /// a preset), what the SSD reads and the CPU multiplies.
    #[serde(skip)]
    pub layers: Vec<LayerWeights>,
    /// The non-expert weights' type.
    #[serde(skip)]
    pub non_expert_quant: QuantType,
}

impl Placement {
    /// Non-expert weights to VRAM first, then whole MoE layers from the first one on, as
    /// many as fit after the per-GPU reserve (VRAM pooled over the GPUs, as llama.cpp's
    /// layer split spreads the non-expert tensors).
    pub fn new(
        model: &Model,
        weights: &Weights,
        non_expert_quant: QuantType,
        hw: &Hardware,
    ) -> crate::error::Result<Placement> {
        let (non_expert_bytes, non_expert_quant) = weights.non_expert_bytes(non_expert_quant);
        let vram = usable_vram(hw);
        let ne_vram = non_expert_bytes.min(vram);
        let left = vram - ne_vram;
        let n_layers = weights.layers.len();
        let gpu_layers = match weights.uniform_expert_bytes() {
            Some(eb) => {
                let layer_bytes = model.n_experts as f64 * eb as f64;
                ((left / layer_bytes).floor() as usize).min(n_layers)
            }
            None => {
                let mut used = 0.0;
                let fit = weights.layers.iter().take_while(|l| {
                    used += model.n_experts as f64 * l.expert_bytes() as f64;
                    used <= left
                });
                fit.count()
            }
        };
        let mut p = Placement {
            expert_bytes: 0,
            non_expert_bytes,
            non_expert_vram_bytes: ne_vram,
            non_expert_ram_bytes: non_expert_bytes - ne_vram,
            gpu_layers,
            cpu_layers: n_layers - gpu_layers,
            cpu_first: gpu_layers,
            n_layers,
            top_k: model.top_k as usize,
            layers: weights.layers.clone(),
            non_expert_quant,
        };
        p.expert_bytes = p.cache_expert_bytes();
        Ok(p)
    }

    /// Bytes of one expert of every MoE layer.
    pub fn layer_bytes(&self) -> Vec<u64> {
        self.layers.iter().map(LayerWeights::expert_bytes).collect()
    }

    /// Whether every layer's experts have one size.
    pub fn uniform(&self) -> bool {
        self.layers
            .windows(2)
            .all(|w| w[0].expert_bytes() == w[1].expert_bytes())
    }

    /// What one cached expert counts for: the one size, or the mean of the CPU-side
    /// layers' experts (of all layers when none is on the CPU side).
    fn cache_expert_bytes(&self) -> u64 {
        let cpu = if self.cpu_layers > 0 {
            &self.layers[self.cpu_range()]
        } else {
            &self.layers[..]
        };
        let sum: u64 = cpu.iter().map(LayerWeights::expert_bytes).sum();
        (sum as f64 / cpu.len().max(1) as f64).round() as u64
    }

    /// Expert bytes a token reads in the GPU-resident layers (top-k experts each).
    pub fn gpu_expert_bytes_per_token(&self) -> f64 {
        let cpu = self.cpu_range();
        let sum: u64 = self
            .layers
            .iter()
            .enumerate()
            .filter(|(i, _)| !cpu.contains(i))
            .map(|(_, l)| l.expert_bytes())
            .sum();
        (sum * self.top_k as u64) as f64
    }

    /// Expert bytes a token reads in the CPU-side layers (top-k experts each).
    pub fn cpu_expert_bytes_per_token(&self) -> f64 {
        let sum: u64 = self.layers[self.cpu_range()]
            .iter()
            .map(LayerWeights::expert_bytes)
            .sum();
        (sum * self.top_k as u64) as f64
    }

    /// The CPU-side layers grouped by their slices (types and bytes), with how many
    /// layers each group has: what the compute and I/O models price once per group.
    pub fn cpu_groups(&self) -> Vec<(&[Slice], usize)> {
        let mut groups: Vec<(&[Slice], usize)> = Vec::new();
        for l in &self.layers[self.cpu_range()] {
            let same = |s: &[Slice]| {
                s.len() == l.slices.len()
                    && s.iter()
                        .zip(&l.slices)
                        .all(|(a, b)| a.ty == b.ty && a.bytes == b.bytes)
            };
            match groups.iter_mut().find(|(s, _)| same(s)) {
                Some(g) => g.1 += 1,
                None => groups.push((&l.slices, 1)),
            }
        }
        groups
    }

    /// The same placement with a given number of GPU layers (for traces whose model is
    /// placed by hand, or tests).
    pub fn with_gpu_layers(mut self, gpu_layers: usize) -> Self {
        self.gpu_layers = gpu_layers.min(self.n_layers);
        self.cpu_layers = self.n_layers - self.gpu_layers;
        self.cpu_first = self.gpu_layers;
        self.expert_bytes = self.cache_expert_bytes();
        self
    }

    /// The MoE layers (indices into `layers`) whose experts stay on the CPU side.
    pub fn cpu_range(&self) -> Range<usize> {
        self.cpu_first..self.cpu_first + self.cpu_layers
    }

    /// llama.cpp's `--n-cpu-moe N` with every layer offloaded: the experts of blocks 0 to
    /// N - 1 (model layer numbers, as its `blk.N.ffn_*_exps` overrides count them) stay on
    /// the CPU, every later MoE layer's go to VRAM. N past the last MoE layer keeps them
    /// all on the CPU, as `--cpu-moe` (llama.cpp accepts it too). An error when the last
    /// layers' experts do not fit in the VRAM the non-expert weights leave (llama.cpp
    /// fails to allocate them).
    pub fn with_n_cpu_moe(
        mut self,
        n: u32,
        n_experts: u16,
        hw: &Hardware,
    ) -> crate::error::Result<Self> {
        if hw.gpus.is_empty() {
            // No GPU: every expert is on the CPU whatever N says.
            return Ok(self);
        }
        let cpu = self
            .layers
            .iter()
            .take_while(|l| (l.block as u32) < n)
            .count();
        let gpu_bytes = |from: usize| -> f64 {
            self.layers[from..]
                .iter()
                .map(|l| n_experts as f64 * l.expert_bytes() as f64)
                .sum()
        };
        let left = usable_vram(hw) - self.non_expert_vram_bytes;
        if gpu_bytes(cpu) > left {
            let fits = (cpu..=self.n_layers)
                .find(|&c| gpu_bytes(c) <= left)
                .unwrap_or(self.n_layers);
            // The smallest N that keeps the layers before `fits` on the CPU.
            let at_least = match self.layers.get(fits) {
                Some(l) => l.block as u32,
                None => self.layers[self.n_layers - 1].block as u32 + 1,
            };
            return Err(crate::error::Error::new(format!(
                "--n-cpu-moe {n}: the experts of the {} MoE layers from blk.{} on need {:.1} GiB of VRAM; {:.1} GiB is left on `{}` after the non-expert weights (--n-cpu-moe {} or more fits)",
                self.n_layers - cpu,
                self.layers[cpu].block,
                gpu_bytes(cpu) / GIB,
                left.max(0.0) / GIB,
                hw.name,
                at_least,
            )));
        }
        self.cpu_first = 0;
        self.cpu_layers = cpu;
        self.gpu_layers = self.n_layers - cpu;
        self.expert_bytes = self.cache_expert_bytes();
        Ok(self)
    }

    /// Experts the page cache holds with `ram_gib` installed: floor((RAM - reserve -
    /// non-expert bytes kept in RAM) / expert bytes), 0 at or below the reserve.
    pub fn ram_capacity(&self, ram_gib: f64, reserve_gib: f64) -> usize {
        let free = (ram_gib - reserve_gib) * GIB - self.non_expert_ram_bytes;
        if free <= 0.0 {
            0
        } else {
            (free / self.expert_bytes as f64).floor() as usize
        }
    }

    /// Non-expert bytes the RAM left after the reserve cannot hold: read from the drive
    /// every token (the page cache then holds no expert either).
    pub fn paged_non_expert_bytes(&self, ram_gib: f64, reserve_gib: f64) -> f64 {
        (self.non_expert_ram_bytes - (ram_gib - reserve_gib).max(0.0) * GIB).max(0.0)
    }

    /// Installed RAM (GiB) at which the cache holds exactly `experts` experts.
    pub fn ram_for_capacity(&self, experts: usize, reserve_gib: f64) -> f64 {
        reserve_gib + (self.non_expert_ram_bytes + experts as f64 * self.expert_bytes as f64) / GIB
    }

    /// Fraction of the routed experts that stay on the CPU side.
    pub fn cpu_fraction(&self) -> f64 {
        self.cpu_layers as f64 / self.n_layers as f64
    }
}

/// VRAM after the per-GPU reserve, pooled over the GPUs (bytes).
fn usable_vram(hw: &Hardware) -> f64 {
    hw.gpus
        .iter()
        .map(|g| g.count as f64 * (g.vram_gib - g.reserve_gib).max(0.0) * GIB)
        .sum()
}

/// Seconds per token, by tier.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TokenTime {
    pub t_vram: f64,
    pub t_ram: f64,
    pub t_ssd: f64,
}

impl TokenTime {
    pub fn total(&self) -> f64 {
        self.t_vram + self.t_ram + self.t_ssd
    }

    pub fn tok_s(&self) -> f64 {
        1.0 / self.total()
    }
}

/// Time per token with `ssd_bytes` read from SSD on average.
pub fn token_time(p: &Placement, hw: &Hardware, ssd_bytes: f64) -> TokenTime {
    let vram_bytes = p.non_expert_vram_bytes + p.gpu_expert_bytes_per_token();
    // GPUs in layer split run one after another: each reads its share of the bytes at
    // its own bandwidth, shares in proportion to usable VRAM.
    let usable: Vec<(f64, f64)> = hw
        .gpus
        .iter()
        .map(|g| {
            (
                g.count as f64 * (g.vram_gib - g.reserve_gib).max(0.0),
                g.bandwidth_gbs,
            )
        })
        .collect();
    let total_usable: f64 = usable.iter().map(|u| u.0).sum();
    let t_vram = if total_usable > 0.0 {
        usable
            .iter()
            .map(|&(u, bw)| vram_bytes * (u / total_usable) / (bw * GB))
            .sum()
    } else {
        0.0
    };
    let ram_bytes = p.non_expert_ram_bytes + p.cpu_expert_bytes_per_token();
    TokenTime {
        t_vram,
        t_ram: ram_bytes / (hw.ram.bandwidth_gbs * GB),
        t_ssd: ssd_bytes / (hw.ssd_bandwidth_gbs() * GB),
    }
}

/// The seed's analytic SSD bytes per token: (D_cpu + S) experts per chunk, with
/// S = max(0, U_cpu - C) and U, D scaled by the CPU-side fraction of the MoE layers.
pub fn analytic_ssd_bytes_per_token(
    p: &Placement,
    u: f64,
    d: f64,
    capacity: usize,
    chunk: usize,
) -> f64 {
    let f = p.cpu_fraction();
    let (u_cpu, d_cpu) = (u * f, d * f);
    let s = (u_cpu - capacity as f64).max(0.0);
    (d_cpu + s) * p.expert_bytes as f64 / chunk as f64
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::hardware::Hardware;
    use crate::quant::{quant_type, ExpertQuant};
    use crate::weights::Proj;

    /// `n` layers whose experts have these slices (gate, up, down).
    pub(crate) fn layers(n: usize, slices: [(QuantType, u64); 3]) -> Vec<LayerWeights> {
        let slices: Vec<Slice> = [Proj::Gate, Proj::Up, Proj::Down]
            .into_iter()
            .zip(slices)
            .map(|(proj, (ty, bytes))| Slice {
                proj,
                ty,
                bytes,
                at: None,
            })
            .collect();
        (0..n)
            .map(|i| LayerWeights {
                block: i as u16,
                slices: slices.clone(),
            })
            .collect()
    }

    fn placed(m: &Model, q: ExpertQuant, hw: &Hardware) -> Placement {
        let w = Weights::preset(m, q).unwrap();
        Placement::new(m, &w, quant_type("q8_0").unwrap(), hw).unwrap()
    }

    fn figure(hw: &str, quant: &str) -> f64 {
        let m = Model::by_name("glm-5").unwrap();
        let hw = Hardware::resolve(hw).unwrap();
        let q = ExpertQuant::parse(quant, quant_type("iq4_xs").unwrap()).unwrap();
        let p = placed(m, q, &hw);
        let c = p.ram_capacity(hw.ram.size_gib, hw.ram.reserve_gib);
        let ssd = analytic_ssd_bytes_per_token(&p, 13190.0, 2412.0, c, 128);
        token_time(&p, &hw, ssd).tok_s()
    }

    #[test]
    fn reproduces_the_seed_figures() {
        // DESIGN.md: 2.98, 3.47, 5.89 tok/s (the post: "just under 3", "3.5", "over 6").
        assert!((figure("p40x3-ddr4", "iq4_xs") - 2.98).abs() < 0.01);
        let mixed = "gate=iq3_s,up=iq3_s,down=iq4_xs";
        assert!((figure("3090-ddr5", mixed) - 3.47).abs() < 0.01);
        assert!((figure("3090-ddr5-raid0", mixed) - 5.89).abs() < 0.01);
    }

    #[test]
    fn placement_of_the_seed_machines() {
        let m = Model::by_name("glm-5").unwrap();
        let iq4 = ExpertQuant::uniform(quant_type("iq4_xs").unwrap());
        let p40 = Hardware::resolve("p40x3-ddr4").unwrap();
        let p = placed(m, iq4, &p40);
        assert_eq!(p.gpu_layers, 10);
        assert_eq!(p.ram_capacity(288.0, 8.0), 14991);
        let mixed = ExpertQuant::parse("gate=iq3_s,up=iq3_s,down=iq4_xs", iq4.down).unwrap();
        let p = placed(m, mixed, &Hardware::resolve("3090-ddr5").unwrap());
        assert_eq!((p.gpu_layers, p.ram_capacity(128.0, 6.0)), (0, 7486));
        assert_eq!(p.ram_capacity(6.0, 6.0), 0);
        assert_eq!(p.ram_capacity(2.0, 6.0), 0);
    }

    /// A tiny machine computed by hand: 2 MoE layers, 4 experts of 1 GiB, top-1; non-expert
    /// weights of 1.5 GiB; one GPU with 4 GiB usable at 100 GB/s; RAM 10 GiB (reserve 1)
    /// at 10 GB/s; SSD 2 GB/s.
    #[test]
    fn hand_computed_placement_and_time() {
        let q8 = quant_type("q8_0").unwrap();
        let p = Placement {
            expert_bytes: 1 << 30,
            non_expert_bytes: 1.5 * GIB,
            non_expert_vram_bytes: 1.5 * GIB,
            non_expert_ram_bytes: 0.0,
            gpu_layers: 0,
            cpu_layers: 2,
            cpu_first: 0,
            n_layers: 2,
            top_k: 1,
            layers: layers(2, [(q8, 1 << 28), (q8, 1 << 28), (q8, 1 << 29)]),
            non_expert_quant: q8,
        };
        let hw: Hardware = toml::from_str(
            "name='t'\n[[gpus]]\nvram_gib=5\nreserve_gib=1\nbandwidth_gbs=100\n[ram]\nsize_gib=10\nreserve_gib=1\nbandwidth_gbs=10\n[ssd]\nbandwidth_gbs=2\n",
        )
        .unwrap();
        // 4 GiB usable - 1.5 GiB non-expert = 2.5 GiB: no whole layer (4 GiB) fits.
        assert_eq!(p.ram_capacity(10.0, 1.0), 9);
        // One token misses one expert: 1 GiB from SSD.
        let t = token_time(&p, &hw, GIB);
        assert!((t.t_vram - 1.5 * GIB / 100e9).abs() < 1e-12);
        assert!((t.t_ram - 2.0 * GIB / 10e9).abs() < 1e-12);
        assert!((t.t_ssd - GIB / 2e9).abs() < 1e-12);
        // Analytic: U = 3, D = 1 per chunk of 4 tokens, capacity 2: S = 1, (1 + 1) / 4 experts per token.
        assert_eq!(analytic_ssd_bytes_per_token(&p, 3.0, 1.0, 2, 4), 0.5 * GIB);
    }

    /// --n-cpu-moe by hand: MoE layers at blocks 1, 2, 3 (2 experts of 1, 2 and 3 GiB,
    /// top-1), no non-expert weights, one GPU with 10 GiB usable. Default placement: the
    /// first layers in VRAM (2 + 4 GiB fit, not + 6). --n-cpu-moe 2: block 1 on the CPU,
    /// blocks 2 and 3 (4 + 6 = 10 GiB) in VRAM; --n-cpu-moe 1 would need 12 GiB.
    #[test]
    fn n_cpu_moe_keeps_the_first_blocks_on_the_cpu() {
        let q8 = quant_type("q8_0").unwrap();
        let mut ls = layers(3, [(q8, 1 << 30), (q8, 0), (q8, 0)]);
        for (i, l) in ls.iter_mut().enumerate() {
            l.block = i as u16 + 1;
            l.slices[0].bytes = (i as u64 + 1) << 30;
        }
        let p = Placement {
            expert_bytes: 0,
            non_expert_bytes: 0.0,
            non_expert_vram_bytes: 0.0,
            non_expert_ram_bytes: 0.0,
            gpu_layers: 2,
            cpu_layers: 1,
            cpu_first: 2,
            n_layers: 3,
            top_k: 1,
            layers: ls,
            non_expert_quant: q8,
        };
        let hw: Hardware = toml::from_str(
            "name='t'\n[[gpus]]\nvram_gib=11\nreserve_gib=1\nbandwidth_gbs=100\n[ram]\nsize_gib=64\nbandwidth_gbs=10\n[ssd]\nbandwidth_gbs=2\n",
        )
        .unwrap();
        let n2 = p.clone().with_n_cpu_moe(2, 2, &hw).unwrap();
        assert_eq!((n2.cpu_range(), n2.gpu_layers), (0..1, 2));
        assert_eq!(n2.expert_bytes, 1 << 30);
        assert_eq!(n2.cpu_expert_bytes_per_token(), GIB);
        assert_eq!(n2.gpu_expert_bytes_per_token(), 5.0 * GIB);
        let e = p.clone().with_n_cpu_moe(1, 2, &hw).unwrap_err();
        assert!(
            e.0.contains("need 12.0 GiB") && e.0.contains("--n-cpu-moe 2 or more"),
            "{e}"
        );
        // Past the last block: all on the CPU, as --cpu-moe.
        let all = p.clone().with_n_cpu_moe(9, 2, &hw).unwrap();
        assert_eq!(all, p.clone().with_gpu_layers(0));
        assert_eq!(all.cpu_range(), 0..3);
        // The default keeps the first layers in VRAM.
        assert_eq!(p.cpu_range(), 2..3);
    }

    #[test]
    fn seed_example_in_consistent_units() {
        // "45/(128*7) = 50 ms": D x 19.125 MiB over 128 tokens at 7 GB/s is 54.0 ms.
        let ms: f64 = 2412.0 * 20_054_016.0 / (128.0 * 7e9) * 1e3;
        assert!((ms - 54.0).abs() < 0.05, "{ms}");
    }
}
