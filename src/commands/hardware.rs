//! `hardware`: the hardware presets.

use crate::error::Result;
use crate::report::{emit, OutputFormat, Table};

pub fn run(format: Option<OutputFormat>) -> Result<()> {
    let presets = crate::hardware::presets();
    let text = match OutputFormat::resolve(format, false) {
        OutputFormat::Json => serde_json::to_string_pretty(&presets).expect("json") + "\n",
        f => {
            // A figure the preset has not: "-" for people, an empty cell in CSV.
            let none = || {
                if f == OutputFormat::Csv {
                    String::new()
                } else {
                    "-".into()
                }
            };
            let mut t = Table::new(&[
                "hardware",
                "gpus",
                "vram_gib",
                "vram_gbs",
                "vram_reserve_gib",
                "gemm_tflops",
                "h2d_gbs",
                "ram_gib",
                "ram_gbs",
                "ram_reserve_gib",
                "page_cache_gbs",
                "fault_gbs",
                "willneed_gbs",
                "ssd_gbs",
                "ssd_drives",
                "threads",
                "description",
            ]);
            for h in &presets {
                let g = h.gpus.first();
                t.push(vec![
                    h.name.clone(),
                    h.n_gpus().to_string(),
                    g.map_or("0".into(), |g| g.vram_gib.to_string()),
                    g.map_or(none(), |g| g.bandwidth_gbs.to_string()),
                    g.map_or(none(), |g| g.reserve_gib.to_string()),
                    g.map_or(none(), |g| g.gemm_tflops().to_string()),
                    g.map_or(none(), |g| g.h2d_gbs().to_string()),
                    h.ram.size_gib.to_string(),
                    h.ram.bandwidth_gbs.to_string(),
                    h.ram.reserve_gib.to_string(),
                    h.ram.page_cache().read_gbs.to_string(),
                    h.ram.page_cache().fault_gbs.to_string(),
                    h.ram.page_cache().willneed_gbs.to_string(),
                    h.ssd.bandwidth_gbs.to_string(),
                    h.ssd.drives.to_string(),
                    h.cpu.as_ref().map_or(none(), |c| c.threads.to_string()),
                    h.description.clone(),
                ]);
            }
            let mut s = if f == OutputFormat::Csv {
                t.to_csv()
            } else {
                t.render()
            };
            if f == OutputFormat::Table {
                s.push_str("\nSizes in GiB, bandwidths in GB/s (10^9 B/s); gemm_tflops: the GPU's rate on batches (prompt processing), h2d_gbs: its copies from RAM (docs/batches.md); page_cache_gbs, fault_gbs and willneed_gbs: GB/s per core through the page cache by buffered reads, by page faults and by MADV_WILLNEED (scripts/fault_cost.py measures the last two). Your own machine: --hw FILE.toml (or .json) with the\nfields of `moe-spill hardware --format json`; or override a preset with --vram, --vram-bw, --ram-bw, --ssd-bw, ...\n");
            }
            s
        }
    };
    emit(&text, None)
}
