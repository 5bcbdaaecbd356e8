//! `hardware`: the hardware presets, and with `--drives` the drive presets.

use crate::error::Result;
use crate::report::{emit, OutputFormat, Table};

pub fn run(format: Option<OutputFormat>) -> Result<()> {
    let presets = crate::hardware::presets();
    let text = match OutputFormat::resolve(format, false) {
        OutputFormat::Json => serde_json::to_string_pretty(&presets).expect("json") + "\n",
        f => {
            let none = || missing(f);
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
                s.push_str("\nSizes in GiB, bandwidths in GB/s (10^9 B/s); gemm_tflops: the GPU's rate on batches (prompt processing), h2d_gbs: its copies from RAM (docs/batches.md); page_cache_gbs, fault_gbs and willneed_gbs: GB/s per core through the page cache by buffered reads, by page faults and by MADV_WILLNEED (scripts/fault_cost.py measures the last two). Your own machine: --hw FILE.toml (or .json) with the\nfields of `moe-spill hardware --format json`; or override a preset with --vram, --vram-bw, --ram-bw, --ssd DRIVE (`moe-spill hardware --drives`), --ssd-bw, ...\n");
            }
            s
        }
    };
    emit(&text, None)
}

/// `hardware --drives`: the drive presets `--ssd` takes. JSON names the figures as a
/// profile's `[ssd]` does.
pub fn run_drives(format: Option<OutputFormat>) -> Result<()> {
    use crate::drive::DEFAULT_MAX_SECTORS_KB;
    use crate::drive_presets::DRIVES;
    use crate::hardware::{DEFAULT_KIOPS, DEFAULT_LATENCY_US, DEFAULT_STREAM_GBS};
    let text = match OutputFormat::resolve(format, false) {
        OutputFormat::Json => {
            let all: Vec<serde_json::Value> = DRIVES
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "model": d.name,
                        "bandwidth_gbs": d.rated_gbs,
                        "kiops": d.kiops,
                        "max_sectors_kb": d.max_sectors_kb(),
                        "mdts_kib": d.mdts_kib,
                        "description": d.description,
                    })
                })
                .collect();
            serde_json::to_string_pretty(&all).expect("json") + "\n"
        }
        f => {
            let mut t = Table::new(&[
                "drive",
                "ssd_gbs",
                "kiops",
                "mdts_kib",
                "max_sectors_kb",
                "description",
            ]);
            for d in DRIVES {
                t.push(vec![
                    d.name.into(),
                    d.rated_gbs.to_string(),
                    d.kiops.map_or_else(|| missing(f), |r| r.to_string()),
                    d.mdts_kib.map_or_else(|| missing(f), |m| m.to_string()),
                    d.max_sectors_kb().to_string(),
                    d.description.into(),
                ]);
            }
            if f == OutputFormat::Csv {
                t.to_csv()
            } else {
                let mut s = t.render();
                s.push_str(&format!(
                    "\nssd_gbs: the rated sequential read (GB/s); kiops: the rated random read, thousands of 4 KiB requests per second, which caps small requests ({DEFAULT_KIOPS} where no rating was found); mdts_kib: the controller's largest transfer; max_sectors_kb: the largest request Linux sends it, the MDTS at most {DEFAULT_MAX_SECTORS_KB} KiB up to Linux 6.16 (from 6.17 up to 4096: give --max-sectors-kb; an IOMMU that translates DMA or a RAID0 array can lower it: /sys/block/DEV/queue/max_sectors_kb). Each preset keeps the default curve's {DEFAULT_LATENCY_US} us per request and {DEFAULT_STREAM_GBS} GB/s for one request alone (a DRAM-less PCIe 4 drive's random reads): how fast one request streams is published for too few drives to tell them apart. Sources: docs/drives.md. Use: --ssd NAME (with --ssd-bw for another capacity).\n"
                ));
                s
            }
        }
    };
    emit(&text, None)
}

/// A figure a listing has not: "-" for people, an empty cell in CSV.
fn missing(f: OutputFormat) -> String {
    if f == OutputFormat::Csv {
        String::new()
    } else {
        "-".into()
    }
}
