//! How fast the CPU multiplies quantized weights at batch 1 (decode).
//!
//! A matrix-vector product reads every weight once, so the CPU side of a token takes the
//! longer of two times: its bytes over the RAM bandwidth, or its bytes over the rate at
//! which the cores dequantize and multiply them. Low-bit codebook quants (IQ1 to IQ3)
//! cost about three times more per byte than k-quants, so a desktop can be bound by
//! compute before RAM bandwidth (colibri on a 9950X: 5.8x more disk bandwidth bought
//! 2.9x more tok/s, and the profile flipped to 57 % matmul).
//!
//! Rates are GB/s of weights per thread, from llama.cpp's `llama-bench` token generation
//! on a Ryzen 9 7950X with 2 threads (ik_llama.cpp discussion 164, mainline build 4384,
//! LLaMA-3.1-8B: the model's file bytes x tokens/s / 2; at 2 threads the run is bound by
//! compute, not by RAM). The same post measured ik_llama.cpp's kernels (with `-rtr`, the
//! weights repacked row-interleaved as its `_R4`/`_R8` types are) on the same machine and
//! model: 1.1x to 1.7x faster at batch 1, 1.8x to 5.2x for prompt processing; a profile's
//! `[cpu] kernels = "ik_llama.cpp"` or `--cpu-kernels ik_llama.cpp` takes that column. A
//! profile may give its own rates per type (`[cpu.gbs_per_thread]`). Types without a
//! published figure borrow the nearest kernel's, as [`published_rate`] says.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::quant::QuantType;

/// Whose CPU kernels multiply the weights: mainline llama.cpp's or ik_llama.cpp's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kernels {
    #[default]
    #[serde(rename = "llama.cpp")]
    LlamaCpp,
    #[serde(rename = "ik_llama.cpp")]
    IkLlamaCpp,
}

impl Kernels {
    /// The engine's name, as `--cpu-kernels` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Kernels::LlamaCpp => "llama.cpp",
            Kernels::IkLlamaCpp => "ik_llama.cpp",
        }
    }

    fn is_llama_cpp(&self) -> bool {
        *self == Kernels::LlamaCpp
    }

    /// This engine's figure of a published pair (llama.cpp, ik_llama.cpp).
    fn pick(self, llama: f64, ik: f64) -> f64 {
        match self {
            Kernels::LlamaCpp => llama,
            Kernels::IkLlamaCpp => ik,
        }
    }
}

/// The CPU of a hardware profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    /// What it is (for tables).
    #[serde(default)]
    pub name: String,
    /// Threads llama.cpp multiplies with (`--threads`; physical cores: SMT siblings add
    /// nothing to a bandwidth-heavy matmul).
    pub threads: u32,
    /// GB/s of weights one thread multiplies, per GGUF type (lower case); types not
    /// listed take the published rate.
    #[serde(default)]
    pub gbs_per_thread: BTreeMap<String, f64>,
    /// GFLOP/s one thread reaches multiplying a batch of tokens (prompt processing),
    /// per GGUF type; types not listed take the published rate ([`published_gemm_rate`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gemm_gflops_per_thread: BTreeMap<String, f64>,
    /// Whose kernels the published rates are (mainline llama.cpp's by default).
    #[serde(default, skip_serializing_if = "Kernels::is_llama_cpp")]
    pub kernels: Kernels,
}

/// The published per-thread rate (GFLOP/s) at which llama.cpp's CPU backend multiplies
/// a batch of tokens by weights of type `t`, with the type whose figure it is.
///
/// llama-bench pp512, mainline build 4384, Ryzen 9 7950X, 16 threads, LLaMA-3.1-8B
/// (ik_llama.cpp discussion 164): 2 x 6.979e9 matmul weights (the 8.03e9 parameters less
/// the token embedding and the output, computed for one token of the batch) x tokens/s /
/// 16. The K-quant figures are of the `_S` mixes of the type; IQ2_S is IQ2_M's figure.
/// Types without one borrow the nearest kernel's, as for the decode rates.
pub fn published_gemm_rate(t: &QuantType, kernels: Kernels) -> Option<(f64, &'static str)> {
    // (type, pp512 tokens/s at 16 threads: llama.cpp, ik_llama.cpp -rtr 1)
    const MEASURED: &[(&str, f64, f64)] = &[
        ("bf16", 78.58, 256.90),
        ("q8_0", 147.92, 268.19),
        ("q5_0", 111.68, 251.21),
        ("q4_0", 153.52, 273.54),
        ("q2_k", 122.37, 269.96),
        ("q3_k", 85.19, 255.30),
        ("q4_k", 108.40, 269.60),
        ("q5_k", 75.52, 254.68),
        ("q6_k", 82.56, 259.21),
        ("iq4_nl", 123.36, 265.88),
        ("iq4_xs", 74.39, 269.91),
        ("iq2_xxs", 45.78, 164.37),
        ("iq2_xs", 49.72, 156.50),
        ("iq2_s", 43.80, 181.64),
        ("iq3_xxs", 34.17, 149.68),
        ("iq3_s", 30.20, 156.47),
    ];
    const FLOP_PER_TOKEN: f64 = 2.0 * 6.979e9;
    let like = match t.name {
        "iq1_m" | "iq1_s" => "iq2_xxs",
        "q4_1" => "q4_0",
        "q5_1" => "q5_0",
        "f16" => "bf16",
        name => name,
    };
    measured(MEASURED, like, kernels).map(|(r, n)| (r * FLOP_PER_TOKEN / 16.0 / 1e9, n))
}

/// The published per-thread rate of a type (GB/s), with the type whose figure it is.
/// None: no figure for it or a kernel like it (f32, f16, bf16: these run at RAM speed).
pub fn published_rate(t: &QuantType, kernels: Kernels) -> Option<(f64, &'static str)> {
    // (type, GB/s per thread: llama.cpp, ik_llama.cpp -rtr 1) from ik_llama.cpp
    // discussion 164: file GB x tg128 tokens/s / 2 threads.
    const MEASURED: &[(&str, f64, f64)] = &[
        ("q8_0", 21.1, 32.6),
        ("q4_0", 26.2, 30.2),
        ("q2_k", 16.9, 25.5),
        ("q3_k", 16.1, 23.8),
        ("q4_k", 22.4, 31.6),
        ("q5_k", 21.0, 31.9),
        ("q6_k", 25.1, 33.1),
        ("iq4_nl", 13.9, 21.7),
        ("iq4_xs", 18.1, 30.1),
        ("iq2_xxs", 6.5, 10.5),
        ("iq2_xs", 7.6, 8.9),
        ("iq2_s", 7.7, 8.2),
        ("iq3_xxs", 6.8, 10.2),
        ("iq3_s", 6.8, 8.2),
    ];
    // Types without a figure, and the kernel they are closest to: the one-bit codebook
    // types decode like IQ2_XXS (a grid lookup per 8 weights); q4_1/q5_0/q5_1 are
    // q4_0's block layout with an offset or a fifth bit.
    let like = match t.name {
        "iq1_m" | "iq1_s" => "iq2_xxs",
        "q4_1" | "q5_0" | "q5_1" => "q4_0",
        name => name,
    };
    measured(MEASURED, like, kernels)
}

/// The figure `kernels` measured for type `like` in a table of (type, llama.cpp,
/// ik_llama.cpp), with the type's name.
fn measured(
    table: &'static [(&'static str, f64, f64)],
    like: &str,
    kernels: Kernels,
) -> Option<(f64, &'static str)> {
    table
        .iter()
        .find(|(n, ..)| *n == like)
        .map(|&(n, llama, ik)| (kernels.pick(llama, ik), n))
}

impl Cpu {
    /// A CPU of `threads` threads at the published rates.
    pub fn new(name: impl Into<String>, threads: u32) -> Cpu {
        Cpu {
            name: name.into(),
            threads,
            gbs_per_thread: BTreeMap::new(),
            gemm_gflops_per_thread: BTreeMap::new(),
            kernels: Kernels::LlamaCpp,
        }
    }

    /// Seconds to multiply `bytes` of type `t` with all threads; None when no rate is
    /// known (the time is then RAM-bound alone).
    pub fn matmul_seconds(&self, t: &QuantType, bytes: f64) -> Option<f64> {
        let rate = match self.gbs_per_thread.get(t.name) {
            Some(&r) => r,
            None => published_rate(t, self.kernels)?.0,
        };
        Some(bytes / (rate * 1e9 * self.threads as f64))
    }

    /// Seconds to multiply `flops` of a batch against weights of type `t` with all
    /// threads (prompt processing); None when no rate is known.
    pub fn gemm_seconds(&self, t: &QuantType, flops: f64) -> Option<f64> {
        let rate = match self.gemm_gflops_per_thread.get(t.name) {
            Some(&r) => r,
            None => published_gemm_rate(t, self.kernels)?.0,
        };
        Some(flops / (rate * 1e9 * self.threads as f64))
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.threads == 0 {
            return Err("CPU threads must be at least 1".into());
        }
        for (name, &r) in &self.gbs_per_thread {
            crate::quant::quant_type(name).map_err(|e| format!("CPU gbs_per_thread: {e}"))?;
            crate::drive::check_positive(r, &format!("CPU gbs_per_thread.{name}"))?;
        }
        for (name, &r) in &self.gemm_gflops_per_thread {
            crate::quant::quant_type(name)
                .map_err(|e| format!("CPU gemm_gflops_per_thread: {e}"))?;
            crate::drive::check_positive(r, &format!("CPU gemm_gflops_per_thread.{name}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quant_type;

    fn cpu(threads: u32) -> Cpu {
        Cpu::new("test", threads)
    }

    #[test]
    fn batch_rates_come_from_pp512() {
        // Q4_0: 153.52 tokens/s x 2 x 6.979e9 / 16 threads = 133.9 GFLOP/s per thread.
        let (r, from) =
            published_gemm_rate(&quant_type("q4_0").unwrap(), Kernels::LlamaCpp).unwrap();
        assert_eq!(from, "q4_0");
        assert!((r - 133.92).abs() < 0.01, "{r}");
        assert_eq!(
            published_gemm_rate(&quant_type("iq1_m").unwrap(), Kernels::LlamaCpp)
                .unwrap()
                .1,
            "iq2_xxs"
        );
        let mut c = cpu(4);
        let q4 = quant_type("q4_0").unwrap();
        assert!((c.gemm_seconds(&q4, 4.0 * r * 1e9).unwrap() - 1.0).abs() < 1e-12);
        c.gemm_gflops_per_thread.insert("q4_0".into(), 10.0);
        assert!((c.gemm_seconds(&q4, 40e9).unwrap() - 1.0).abs() < 1e-12);
        c.gemm_gflops_per_thread.insert("q4_0".into(), -1.0);
        assert!(c
            .validate()
            .unwrap_err()
            .contains("gemm_gflops_per_thread.q4_0"));
    }

    #[test]
    fn rates_are_per_thread_and_codebook_types_are_slower() {
        let c = cpu(16);
        let q4k = quant_type("q4_k").unwrap();
        let iq2 = quant_type("iq2_xxs").unwrap();
        let t = c.matmul_seconds(&q4k, 22.4e9 * 16.0).unwrap();
        assert!((t - 1.0).abs() < 1e-12);
        let t2 = c.matmul_seconds(&iq2, 22.4e9 * 16.0).unwrap();
        assert!(t2 > 3.0 * t);
        // IQ1_M borrows IQ2_XXS's figure; f16 has none.
        let iq1 = quant_type("iq1_m").unwrap();
        assert_eq!(
            published_rate(&iq1, Kernels::LlamaCpp),
            Some((6.5, "iq2_xxs"))
        );
        assert_eq!(c.matmul_seconds(&quant_type("f16").unwrap(), 1e9), None);
    }

    #[test]
    fn ik_llama_cpp_kernels_are_the_posts_other_column() {
        let mut c = cpu(2);
        let q2k = quant_type("q2_k").unwrap();
        // tg128 at 2 threads: 11.33 against 17.10 tokens/s of a 2.78 GiB file.
        assert_eq!(
            published_rate(&q2k, Kernels::LlamaCpp),
            Some((16.9, "q2_k"))
        );
        assert_eq!(
            published_rate(&q2k, Kernels::IkLlamaCpp),
            Some((25.5, "q2_k"))
        );
        let llama = c.matmul_seconds(&q2k, 1e9).unwrap();
        c.kernels = Kernels::IkLlamaCpp;
        let ik = c.matmul_seconds(&q2k, 1e9).unwrap();
        assert!((llama / ik - 25.5 / 16.9).abs() < 1e-12);
        // pp512 at 16 threads: 269.96 tokens/s, 2 x 6.979e9 FLOP each.
        let (r, _) = published_gemm_rate(&q2k, Kernels::IkLlamaCpp).unwrap();
        assert!(
            (r - 269.96 * 2.0 * 6.979e9 / 16.0 / 1e9).abs() < 1e-9,
            "{r}"
        );
        // A profile names them; the default is mainline's, and is not written out.
        let t: Cpu = toml::from_str("threads = 8\nkernels = \"ik_llama.cpp\"\n").unwrap();
        assert_eq!(t.kernels, Kernels::IkLlamaCpp);
        assert!(!toml::to_string(&cpu(8)).unwrap().contains("kernels"));
        assert!(toml::from_str::<Cpu>("threads = 8\nkernels = \"ik\"\n").is_err());
    }

    #[test]
    fn a_profile_rate_overrides_the_published_one() {
        let mut c = cpu(2);
        c.gbs_per_thread.insert("q4_k".into(), 10.0);
        let t = c
            .matmul_seconds(&quant_type("q4_k").unwrap(), 20e9)
            .unwrap();
        assert!((t - 1.0).abs() < 1e-12);
        assert!(c.validate().is_ok());
        c.gbs_per_thread.insert("q9_z".into(), 1.0);
        assert!(c.validate().unwrap_err().contains("unknown quant type"));
        let mut c = cpu(2);
        c.gbs_per_thread.insert("q4_k".into(), 0.0);
        assert!(c.validate().unwrap_err().contains("positive"));
        assert!(cpu(0).validate().unwrap_err().contains("at least 1"));
    }
}
