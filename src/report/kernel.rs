//! kernel-replay's comparison: one row per budget and source (the kernel, the page-level
//! model, each policy) and its exporters.

use serde::Serialize;

use super::{fixed, serde_csv, Table};

/// One line of the comparison: the kernel or a policy at one budget.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CompareRow {
    pub trace: String,
    pub model: Option<String>,
    pub expert_bytes: u64,
    pub model_expert_bytes: Option<u64>,
    pub slices: u32,
    pub advice: &'static str,
    pub window_kb: u64,
    pub ram_gib: Option<f64>,
    pub cache_experts: usize,
    pub source: String,
    pub tokens: u64,
    pub accesses: u64,
    /// Kernel and page model: bytes read / expert bytes; policies: misses.
    pub misses: f64,
    pub misses_per_token: f64,
    pub misses_per_token_p50: f64,
    pub misses_per_token_p99: f64,
    /// At the model's real expert size, when a model is known.
    pub ssd_bytes_per_token: Option<f64>,
    /// (policy - kernel) / kernel.
    pub rel_err: Option<f64>,
    /// Experts' worth of pages (kernel) or objects (policy) resident at the end.
    pub resident_experts: f64,
    /// Share of the policy's resident experts the kernel also holds (>= half the pages).
    pub resident_overlap: Option<f64>,
    pub read_bytes: Option<u64>,
    /// Read requests per token: the device's completed reads (kernel; any process's),
    /// the page model's windows and pieces of them.
    pub read_requests_per_token: Option<f64>,
    pub major_faults_per_token: Option<f64>,
    pub wall_ms_per_token: Option<f64>,
    pub wall_ms_p50: Option<f64>,
    pub wall_ms_p99: Option<f64>,
    /// Page model: (predicted wall - kernel's measured wall) / measured.
    pub wall_rel_err: Option<f64>,
    pub limit_bytes: Option<u64>,
    pub overhead_bytes: Option<u64>,
    pub global_reclaim_pages: Option<u64>,
    pub seconds: Option<f64>,
}

/// Every column CompareRow serializes, one row per (budget, source).
pub fn compare_csv(rows: &[CompareRow]) -> String {
    serde_csv(rows, &[], Vec::new(), |_| Vec::new())
}

/// The columns that matter, for people.
pub fn compare_table(rows: &[CompareRow]) -> String {
    let mib = |b: Option<f64>| b.map_or("-".into(), |v| fixed(v / (1u64 << 20) as f64, 1));
    let mut t = Table::new(&[
        "ram_gib",
        "cache_experts",
        "source",
        "misses/token",
        "p50",
        "p99",
        "ssd_MiB/token",
        "rel_err",
        "resident",
        "overlap",
        "majflt/token",
        "KiB/request",
        "ms/token",
        "ms_err",
        "limit_MiB",
        "overhead_MiB",
    ]);
    for r in rows {
        t.push(vec![
            r.ram_gib.map_or("-".into(), |v| fixed(v, 1)),
            r.cache_experts.to_string(),
            r.source.clone(),
            fixed(r.misses_per_token, 2),
            fixed(r.misses_per_token_p50, 1),
            fixed(r.misses_per_token_p99, 1),
            mib(r.ssd_bytes_per_token),
            r.rel_err
                .map_or("-".into(), |e| format!("{:+.1}%", 100.0 * e)),
            fixed(r.resident_experts, 1),
            r.resident_overlap
                .map_or("-".into(), |o| format!("{:.1}%", 100.0 * o)),
            r.major_faults_per_token.map_or("-".into(), |v| fixed(v, 1)),
            r.read_bytes
                .zip(r.read_requests_per_token)
                .filter(|&(_, q)| q > 0.0)
                .map_or("-".into(), |(b, q)| {
                    fixed(b as f64 / (r.tokens.max(1) as f64 * q) / 1024.0, 0)
                }),
            r.wall_ms_per_token.map_or("-".into(), |v| fixed(v, 2)),
            r.wall_rel_err
                .map_or("-".into(), |e| format!("{:+.1}%", 100.0 * e)),
            mib(r.limit_bytes.map(|v| v as f64)),
            mib(r.overhead_bytes.map(|v| v as f64)),
        ]);
    }
    t.render()
}
