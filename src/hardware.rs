//! Hardware profiles: GPUs, RAM, SSD. Presets (`moe-spill hardware`), a user's own
//! profile as TOML or JSON (same fields as the presets), and command-line overrides.
//!
//! Units: VRAM and RAM sizes in GiB (2^30 B); bandwidths in decimal GB/s (10^9 B/s).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cpu::{Cpu, Kernels};
use crate::drive::{DriveCurve, DrivePoint};
use crate::error::{Error, Result};
use crate::io_engine::PageCacheRates;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    /// How many identical GPUs (layer split: they run one after another).
    #[serde(default = "one")]
    pub count: u32,
    pub vram_gib: f64,
    pub bandwidth_gbs: f64,
    /// Per GPU: KV cache, CUDA context, compute buffers.
    #[serde(default)]
    pub reserve_gib: f64,
    /// TFLOP/s llama.cpp reaches multiplying a batch by quantized weights (prompt
    /// processing; default: [`DEFAULT_GEMM_TFLOPS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gemm_tflops: Option<f64>,
    /// GB/s of host-to-device copies from the mapped model file (op offload; default:
    /// [`DEFAULT_H2D_GBS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2d_gbs: Option<f64>,
}

/// A GPU's batch rate when its profile gives none: the RTX 3090's. llama.cpp's CUDA
/// scoreboard (discussion 15013): Llama-2-7B Q4_0 pp512 at 5174.69 tokens/s, x 2 x
/// 6.476e9 matmul weights = 67 TFLOP/s.
pub const DEFAULT_GEMM_TFLOPS: f64 = 67.0;

/// Host-to-device copy rate when a profile gives none: a PCIe 4.0 x16 link, 23.9-26.4
/// GB/s measured (NVIDIA/nvbandwidth#15, RTX 4090s).
pub const DEFAULT_H2D_GBS: f64 = 25.0;

impl Gpu {
    pub fn gemm_tflops(&self) -> f64 {
        self.gemm_tflops.unwrap_or(DEFAULT_GEMM_TFLOPS)
    }

    pub fn h2d_gbs(&self) -> f64 {
        self.h2d_gbs.unwrap_or(DEFAULT_H2D_GBS)
    }
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ram {
    /// Installed RAM.
    pub size_gib: f64,
    /// Effective bandwidth the CPU reaches when it reads expert weights.
    pub bandwidth_gbs: f64,
    /// OS, token embedding, buffers: what the page cache cannot use.
    #[serde(default)]
    pub reserve_gib: f64,
    /// GB/s one core moves through the page cache by buffered reads: allocating and
    /// inserting the pages a read brings in, copying them out, reclaiming as many
    /// (default: [`DEFAULT_PAGE_CACHE_GBS`]; `scripts/local_check.sh` measures it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_cache_gbs: Option<f64>,
    /// GB/s one core brings in through the page cache by page faults, which map the
    /// pages where a read copies them out (default: `page_cache_gbs`;
    /// `scripts/fault_cost.py` measures it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_gbs: Option<f64>,
    /// GB/s one core brings in through the page cache by `MADV_WILLNEED` (`--mmap-advice
    /// willneed`), in order-0 pages, and the faults that map them (default: `fault_gbs`;
    /// `scripts/fault_cost.py --advice willneed` measures it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub willneed_gbs: Option<f64>,
}

impl Ram {
    pub fn page_cache_gbs(&self) -> f64 {
        self.page_cache_gbs.unwrap_or(DEFAULT_PAGE_CACHE_GBS)
    }

    /// The page cache's rates for reads, for faults and for `MADV_WILLNEED`.
    pub fn page_cache(&self) -> PageCacheRates {
        let read_gbs = self.page_cache_gbs();
        let fault_gbs = self.fault_gbs.unwrap_or(read_gbs);
        PageCacheRates {
            read_gbs,
            fault_gbs,
            willneed_gbs: self.willneed_gbs.unwrap_or(fault_gbs),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssd {
    /// The drive's model, for descriptions (`--ssd NAME` sets it with the preset's
    /// figures; in a profile it names the drive and sets nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Rated sequential read bandwidth of one drive (the datasheet figure).
    pub bandwidth_gbs: f64,
    /// Drives in RAID0 (bandwidths add; one request still goes to one drive).
    #[serde(default = "one")]
    pub drives: u32,
    /// Fixed cost of one read request, microseconds (default: the fitted PCIe 4 curve's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<f64>,
    /// Rate at which one request streams, GB/s (default: the fitted curve's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_gbs: Option<f64>,
    /// Rated random read, thousands of requests per second (4 KiB at a deep queue, the
    /// datasheet's IOPS): caps small requests (default [`DEFAULT_KIOPS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kiops: Option<f64>,
    /// Measured points (fio): GB/s at request size and queue depth; when given they
    /// replace the three figures (scripts/measure_disk.sh writes them).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "non_empty_points"
    )]
    pub points: Vec<DrivePoint>,
    /// The largest read request the kernel sends the drive, KiB (the queue's
    /// `max_sectors_kb`, `/sys/block/DEV/queue/max_sectors_kb`; default
    /// [`DEFAULT_MAX_SECTORS_KB`]). It also sets how far a buffered read larger than the
    /// readahead window reads ahead (`bdi->io_pages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sectors_kb: Option<u64>,
}

/// Fixed cost and streaming rate of one request when a profile gives only the rated
/// bandwidth: the fit to the one published size x depth curve (a PCIe 4 DRAM-less
/// drive, 0xBakeer/deepseek-v41-flash-spark#2; see `drive.rs`).
pub const DEFAULT_LATENCY_US: f64 = 96.0;
pub const DEFAULT_STREAM_GBS: f64 = 2.37;

/// Random-read IOPS (thousands) when a profile does not say: a DRAM-less PCIe 4 drive's,
/// as the default curve's, the WD_BLACK SN770 1 TB's rated 740,000 (docs/drives.md).
pub const DEFAULT_KIOPS: f64 = 740.0;

pub use crate::drive::DEFAULT_MAX_SECTORS_KB;

/// The names whose flag is set, in order: the flags or fields a message lists.
pub fn named<'a>(pairs: impl IntoIterator<Item = (&'a str, bool)>) -> Vec<&'a str> {
    pairs
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
}

/// The most GPUs of one kind and drives in RAID0 a machine has (`--gpus` and
/// `--ssd-drives` take the same bounds).
pub const MAX_GPUS: u32 = 64;
pub const MAX_DRIVES: u32 = 256;

/// VRAM a GPU added by `--gpus` keeps for its KV cache, CUDA context and buffers (the
/// presets' 24 GB cards keep 3 GiB).
pub const DEFAULT_VRAM_RESERVE_GIB: f64 = 3.0;

/// Threads when the profile names no CPU (llama.cpp's default is the physical cores; 8
/// is a common desktop's).
pub const DEFAULT_THREADS: u32 = 8;

/// GB/s one core moves through the page cache when a profile does not say: 0.25 s of
/// the reading thread's CPU per GB. Mapping cached pages costs 0.10 s/GB
/// (quixdb/squash-benchmark#27, travisdowns); allocating, inserting and submitting the
/// pages of a miss adds about as much again ("a factor of 2 or 3" for 4 KiB pages before
/// large folios). Reclaim (about 0.17 s/GB: one kswapd core "almost 100 %" at 5-6 GB/s,
/// ik_llama.cpp discussion 258) runs on another core and is not counted; a reader
/// limited by a memory cgroup reclaims itself: measure it (docs/VALIDATION.md).
pub const DEFAULT_PAGE_CACHE_GBS: f64 = 4.0;

impl Ssd {
    /// The read curve of the drives: the points if measured, else the three figures
    /// (RAID0 multiplies the rated bandwidth, not the speed of one request).
    pub fn curve(&self) -> DriveCurve {
        let d = self.drives.max(1) as f64;
        let c = DriveCurve::from_figures(
            self.bandwidth_gbs * d,
            self.latency_us.unwrap_or(DEFAULT_LATENCY_US),
            self.stream_gbs.unwrap_or(DEFAULT_STREAM_GBS),
        )
        .with_iops(self.kiops.unwrap_or(DEFAULT_KIOPS) * 1e3 * d)
        .with_max_request((self.max_sectors_kb.unwrap_or(DEFAULT_MAX_SECTORS_KB) * 1024) as f64);
        if self.points.is_empty() {
            return c;
        }
        let points = self
            .points
            .iter()
            .map(|p| DrivePoint {
                gbs: p.gbs * d,
                ..p.clone()
            })
            .collect();
        c.with_points(points).expect("points validated")
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hardware {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    pub ram: Ram,
    pub ssd: Ssd,
    /// The CPU: threads and matmul rates (none: the CPU side is RAM-bound alone, and
    /// page faults come from 1 thread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// The override flags that changed the preset or profile (` --ssd p3 --ram-bw 50`),
    /// for the rows' `hw` label: runs of one machine with other figures stay apart.
    #[serde(skip)]
    pub overrides: String,
}

impl Hardware {
    /// The machine's name and the overrides given: the rows' `hw` label.
    pub fn label(&self) -> String {
        format!("{}{}", self.name, self.overrides)
    }

    /// Threads that multiply and fault: the CPU's, or [`DEFAULT_THREADS`] when the
    /// profile names none.
    pub fn threads(&self) -> u32 {
        self.cpu.as_ref().map_or(DEFAULT_THREADS, |c| c.threads)
    }

    pub fn ssd_bandwidth_gbs(&self) -> f64 {
        self.ssd.bandwidth_gbs * self.ssd.drives as f64
    }

    pub fn n_gpus(&self) -> u32 {
        self.gpus.iter().map(|g| g.count).sum()
    }

    /// A preset by name, or a TOML/JSON profile file.
    /// The preset called `name` (case-insensitive), if there is one.
    pub fn preset(name: &str) -> Option<Hardware> {
        let lower = name.to_ascii_lowercase();
        presets().into_iter().find(|h| h.name == lower)
    }

    pub fn resolve(name_or_file: &str) -> Result<Hardware> {
        if let Some(h) = Self::preset(name_or_file) {
            return Ok(h);
        }
        // A file, or a name that looks like one (reading it says it is missing).
        let path = Path::new(name_or_file);
        let lower = name_or_file.to_ascii_lowercase();
        if path.exists()
            || name_or_file.contains(std::path::MAIN_SEPARATOR)
            || lower.ends_with(".toml")
            || lower.ends_with(".json")
        {
            return Self::from_file(path);
        }
        let names: Vec<String> = presets().into_iter().map(|h| h.name).collect();
        Err(Error::new(format!(
            "unknown hardware `{}`: neither a preset ({}) nor a profile file",
            crate::error::printable(name_or_file),
            names.join(", ")
        )))
    }

    pub fn from_file(path: &Path) -> Result<Hardware> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let start = text.trim_start();
        // JSON by its extension or its first bracket: `{`, or `[` opening a list of
        // objects (a TOML file may open with a `[ram]` or `[[gpus]]` table instead).
        let ext = |x: &str| path.extension().is_some_and(|e| e.eq_ignore_ascii_case(x));
        let json_list = start
            .strip_prefix('[')
            .is_some_and(|r| r.trim_start().starts_with(['{', ']']));
        let is_json = ext("json") || (!ext("toml") && (start.starts_with('{') || json_list));
        let hw: Hardware = if is_json {
            let json_error = |e: serde_json::Error| {
                Error::at_line(
                    path,
                    e.line() as u64,
                    format!("{}", e).split(" at line").next().unwrap_or(""),
                )
            };
            if start.starts_with('[') {
                // What `moe-spill hardware --format json` prints: a list of profiles;
                // one of them, edited, is a profile.
                let mut list: Vec<Hardware> = serde_json::from_str(&text).map_err(json_error)?;
                if list.len() != 1 {
                    return Err(Error::in_file(
                        path,
                        format!(
                            "a list of {} profiles: keep one (as `moe-spill hardware --format json` prints them, one {{...}} each)",
                            list.len()
                        ),
                    ));
                }
                list.remove(0)
            } else {
                serde_json::from_str(&text).map_err(json_error)?
            }
        } else {
            toml::from_str(&text).map_err(|e| {
                let line = e
                    .span()
                    .map_or(1, |s| text[..s.start].matches('\n').count() as u64 + 1);
                Error::at_line(path, line, e.message())
            })?
        };
        hw.validate().map_err(|m| match line_of_field(&text, &m) {
            Some(line) => Error::at_line(path, line, m),
            None => Error::in_file(path, m),
        })?;
        Ok(hw)
    }

    /// Every number must make physical sense: positive where it must be, and within what
    /// any machine has, so that a figure in the wrong unit (MB/s for GB/s, MiB for GiB,
    /// milliseconds for microseconds) is caught ([`plausible`]).
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.validate_signs()?;
        for (v, limit) in self.limits() {
            plausible(v, limit)?;
        }
        // A drive measured at 1.5x its rated read: a figure in another unit, or the rated
        // one is wrong.
        if let Some(p) = self
            .ssd
            .points
            .iter()
            .find(|p| p.gbs > 1.5 * self.ssd.bandwidth_gbs)
        {
            return Err(format!(
                "SSD drive point gbs = {} at {} KiB, queue depth {} is more than 1.5x the rated bandwidth_gbs = {}: both are GB/s per drive",
                p.gbs, p.block_kib, p.queue_depth, self.ssd.bandwidth_gbs
            ));
        }
        Ok(())
    }

    /// Each figure the profile gives, with the range it must fall in.
    fn limits(&self) -> Vec<(f64, &'static Limit)> {
        let mut out = Vec::new();
        for g in &self.gpus {
            out.push((g.vram_gib, &VRAM_GIB));
            out.push((g.bandwidth_gbs, &VRAM_GBS));
            out.extend(g.gemm_tflops.map(|t| (t, &GPU_TFLOPS)));
            out.extend(g.h2d_gbs.map(|b| (b, &H2D_GBS)));
        }
        out.push((self.ram.size_gib, &RAM_GIB));
        out.push((self.ram.reserve_gib, &RAM_RESERVE_GIB));
        out.push((self.ram.bandwidth_gbs, &RAM_GBS));
        out.extend(self.ram.page_cache_gbs.map(|g| (g, &PAGE_CACHE_GBS)));
        out.extend(self.ram.fault_gbs.map(|g| (g, &FAULT_GBS)));
        out.extend(self.ram.willneed_gbs.map(|g| (g, &WILLNEED_GBS)));
        out.push((self.ssd.bandwidth_gbs, &SSD_GBS));
        out.extend(self.ssd.stream_gbs.map(|s| (s, &SSD_STREAM_GBS)));
        out.extend(self.ssd.latency_us.map(|l| (l, &SSD_LATENCY_US)));
        out.extend(self.ssd.kiops.map(|r| (r, &SSD_KIOPS)));
        out.extend(self.ssd.max_sectors_kb.map(|k| (k as f64, &MAX_SECTORS_KB)));
        for p in &self.ssd.points {
            out.push((p.gbs, &POINT_GBS));
            out.push((p.block_kib, &POINT_KIB));
        }
        if let Some(c) = &self.cpu {
            out.push((c.threads as f64, &THREADS));
            out.extend(c.gbs_per_thread.values().map(|&r| (r, &CPU_GBS)));
            out.extend(c.gemm_gflops_per_thread.values().map(|&r| (r, &CPU_GFLOPS)));
        }
        out
    }

    fn validate_signs(&self) -> std::result::Result<(), String> {
        if self.name.chars().any(char::is_control) {
            return Err(format!(
                "name {} has control characters",
                crate::error::printable(&self.name)
            ));
        }
        let pos = crate::drive::check_positive;
        let nonneg = |v: f64, what: &str| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "{what} must be zero or positive, got {}",
                    crate::units::shown(v)
                ))
            }
        };
        for g in &self.gpus {
            pos(g.vram_gib, "GPU vram_gib")?;
            pos(g.bandwidth_gbs, "GPU bandwidth_gbs")?;
            nonneg(g.reserve_gib, "GPU reserve_gib")?;
            if let Some(t) = g.gemm_tflops {
                pos(t, "GPU gemm_tflops")?;
            }
            if let Some(b) = g.h2d_gbs {
                pos(b, "GPU h2d_gbs")?;
            }
            if g.count == 0 || g.count > MAX_GPUS {
                return Err(format!(
                    "GPU count must be 1 to {MAX_GPUS} (leave the GPU out for none), got {}",
                    g.count
                ));
            }
            if g.reserve_gib >= g.vram_gib {
                return Err(format!(
                    "GPU reserve_gib = {} leaves nothing of vram_gib = {}: the reserve is the part of the VRAM the KV cache and buffers take, in GiB (3 for a 24 GB card)",
                    g.reserve_gib, g.vram_gib
                ));
            }
        }
        nonneg(self.ram.size_gib, "RAM size_gib")?;
        pos(self.ram.bandwidth_gbs, "RAM bandwidth_gbs")?;
        nonneg(self.ram.reserve_gib, "RAM reserve_gib")?;
        if let Some(g) = self.ram.page_cache_gbs {
            pos(g, "RAM page_cache_gbs")?;
        }
        if let Some(g) = self.ram.fault_gbs {
            pos(g, "RAM fault_gbs")?;
        }
        if let Some(g) = self.ram.willneed_gbs {
            pos(g, "RAM willneed_gbs")?;
        }
        pos(self.ssd.bandwidth_gbs, "SSD bandwidth_gbs")?;
        if self.ssd.drives == 0 || self.ssd.drives > MAX_DRIVES {
            return Err(format!(
                "SSD drives must be 1 to {MAX_DRIVES} (drives in RAID0), got {}",
                self.ssd.drives
            ));
        }
        if let Some(l) = self.ssd.latency_us {
            pos(l, "SSD latency_us")?;
        }
        if let Some(s) = self.ssd.stream_gbs {
            pos(s, "SSD stream_gbs")?;
        }
        if let Some(r) = self.ssd.kiops {
            pos(r, "SSD kiops")?;
        }
        if let Some(k) = self.ssd.max_sectors_kb {
            // The kernel refuses less than one page (blk_validate_limits).
            if k < 4 {
                return Err(format!(
                    "SSD max_sectors_kb must be at least 4 (one page), got {k}"
                ));
            }
        }
        DriveCurve::from_figures(1.0, 1.0, 1.0)
            .with_points(self.ssd.points.clone())
            .map_err(|e| format!("SSD {e}"))?;
        if let Some(c) = &self.cpu {
            c.validate()?;
        }
        Ok(())
    }

    /// One line for tables and titles.
    pub fn describe(&self) -> String {
        self.describe_with(false, false)
    }

    /// One line for tables and titles; with `vram_per_row` the GPUs' VRAM is the rows'
    /// (a sweep over `--vrams`) and the line names only their count and bandwidth; with
    /// `ram_per_row` the RAM's size is the rows' (`ram_gib`: a sweep's budgets, or the RAM
    /// a cache of `--cache-experts` takes).
    pub fn describe_with(&self, vram_per_row: bool, ram_per_row: bool) -> String {
        let gpus: Vec<String> = self
            .gpus
            .iter()
            .map(|g| {
                let count = if g.count > 1 {
                    format!("{}x ", g.count)
                } else {
                    String::new()
                };
                if vram_per_row {
                    format!("{count}GPU @ {} GB/s", g.bandwidth_gbs)
                } else {
                    format!("{count}{} GiB @ {} GB/s", g.vram_gib, g.bandwidth_gbs)
                }
            })
            .collect();
        format!(
            "{}{} @ {} GB/s, SSD {}{} GB/s{}",
            if gpus.is_empty() {
                "no GPU, ".to_string()
            } else {
                gpus.join(" + ") + ", "
            },
            if ram_per_row {
                "RAM per row (ram_gib)".to_string()
            } else {
                format!("{} GiB RAM", self.ram.size_gib)
            },
            self.ram.bandwidth_gbs,
            self.ssd.model.as_ref().map_or(String::new(), |m| format!(
                "{} ",
                crate::error::printable(m)
            )),
            self.ssd_bandwidth_gbs(),
            if self.ssd.drives > 1 {
                format!(" ({} drives RAID0)", self.ssd.drives)
            } else {
                String::new()
            }
        )
    }
}

/// The line of a profile (TOML or JSON) that holds the field a [`Hardware::validate`]
/// message names (`RAM fault_gbs ...`, `CPU gbs_per_thread.q4_0 ...`, `CPU
/// gbs_per_thread: unknown quant type `x``): its section, then each key in turn after
/// it. None when the field is not written out (a default).
fn line_of_field(text: &str, message: &str) -> Option<u64> {
    let mut words = message.split_whitespace();
    let section = match words.next()? {
        "GPU" => "gpus",
        "RAM" => "ram",
        "SSD" => "ssd",
        "CPU" => "cpu",
        _ => return None,
    };
    let field = words.next()?.trim_end_matches(':');
    let mut keys = vec![section];
    if field == "drive" {
        keys.push("points");
    } else {
        keys.extend(field.split('.'));
    }
    // A name the message quotes (an unknown quant type) is the key itself.
    if let Some(quoted) = message.split('`').nth(1) {
        keys.push(quoted);
    }
    let mut at = 0;
    for key in keys {
        at = find_key(text, at, key)?;
    }
    Some(text[..at].matches('\n').count() as u64 + 1)
}

/// Where `key` is next written as a key at or after byte `from`: a whole word, not in a
/// comment, followed (past quotes and brackets) by `=`, `:`, `.` or the line's end.
fn find_key(text: &str, from: usize, key: &str) -> Option<usize> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut start = from;
    while let Some(i) = text[start..].find(key).map(|i| i + start) {
        start = i + key.len();
        let before = text[..i].chars().next_back();
        let line_start = text[..i].rfind('\n').map_or(0, |n| n + 1);
        let in_comment = text[line_start..i].contains('#');
        let after = text[start..].trim_start_matches(['"', ']']);
        let after = after.trim_start_matches([' ', '\t']);
        let ends_key = after.is_empty() || after.starts_with(['=', ':', '.', '\n', '\r']);
        if !before.is_some_and(word) && !in_comment && ends_key {
            return Some(i);
        }
    }
    None
}

/// The range a profile's figure must fall in: no machine has less or more, so a figure
/// outside is one in another unit. `hint` says which unit the field is in.
pub struct Limit {
    field: &'static str,
    max: f64,
    min: f64,
    hint: &'static str,
}

const fn limit(field: &'static str, min: f64, max: f64, hint: &'static str) -> Limit {
    Limit {
        field,
        max,
        min,
        hint,
    }
}

// Upper ends well above the fastest parts there are (HBM3e GPUs 8 TB/s and 288 GB,
// PCIe 6.0 x4 drives 28 GB/s, NVLink-C2C 450 GB/s, a GB200's 20 PFLOP/s of FP4); lower
// ends well below the slowest (a GT 710's 14 GB/s, single-channel DDR3's 8.5, an SD
// card's 20 MB/s), so a figure in TB/s for GB/s is caught too.
const VRAM_GIB: Limit = limit(
    "GPU vram_gib",
    0.0,
    1024.0,
    "GiB per GPU (24 for a 24 GB card)",
);
const VRAM_GBS: Limit = limit(
    "GPU bandwidth_gbs",
    5.0,
    20_000.0,
    "GB/s (936 for an RTX 3090)",
);
const GPU_TFLOPS: Limit = limit(
    "GPU gemm_tflops",
    0.1,
    20_000.0,
    "TFLOP/s (67 for an RTX 3090)",
);
const H2D_GBS: Limit = limit("GPU h2d_gbs", 0.1, 1_000.0, "GB/s (25 for PCIe 4.0 x16)");
const RAM_GIB: Limit = limit("RAM size_gib", 0.0, 65_536.0, "GiB (128 for 128 GiB)");
const RAM_RESERVE_GIB: Limit = limit(
    "RAM reserve_gib",
    0.0,
    65_536.0,
    "GiB (6 for the OS and buffers of a desktop)",
);
const RAM_GBS: Limit = limit(
    "RAM bandwidth_gbs",
    1.0,
    20_000.0,
    "GB/s (67 for dual-channel DDR5-5600)",
);
// The lower ends: 5 s of CPU per GB, several times the slowest page cache measured (a
// figure in seconds per GB, as scripts/fault_cost.py prints, lands below it).
const PAGE_CACHE_GBS: Limit = limit(
    "RAM page_cache_gbs",
    0.2,
    1_000.0,
    "GB/s per core, 1 / (seconds of CPU per GB) (4 by default)",
);
const FAULT_GBS: Limit = limit(
    "RAM fault_gbs",
    0.2,
    1_000.0,
    "GB/s per core, 1 / (seconds of CPU per GB) (page_cache_gbs by default)",
);
const WILLNEED_GBS: Limit = limit(
    "RAM willneed_gbs",
    0.2,
    1_000.0,
    "GB/s per core, 1 / (seconds of CPU per GB) (fault_gbs by default)",
);
const SSD_GBS: Limit = limit(
    "SSD bandwidth_gbs",
    0.01,
    200.0,
    "GB/s per drive (7 for a 7,000 MB/s drive)",
);
const SSD_STREAM_GBS: Limit = limit("SSD stream_gbs", 0.01, 200.0, "GB/s (2.37 by default)");
// One request: from an Optane's 7 us to a hard disk's 20 ms, with room either side
// (96000 is nanoseconds).
const SSD_LATENCY_US: Limit = limit(
    "SSD latency_us",
    0.5,
    50_000.0,
    "microseconds (96 by default; 0.096 ms is 96)",
);
// From a hard disk's hundreds of requests per second to many times the fastest SSD's
// millions (a figure in IOPS, not thousands, lands above it).
const SSD_KIOPS: Limit = limit(
    "SSD kiops",
    0.05,
    100_000.0,
    "thousands of requests per second (740 by default; 1,400,000 IOPS is 1400)",
);
const MAX_SECTORS_KB: Limit = limit(
    "SSD max_sectors_kb",
    4.0,
    1_048_576.0,
    "KiB (1280 by default)",
);
const POINT_GBS: Limit = limit(
    "SSD drive point gbs",
    0.0,
    200.0,
    "GB/s (fio's MB/s / 1000)",
);
// fio's block sizes stop well below 64 MiB; a size in bytes lands above.
const POINT_KIB: Limit = limit(
    "SSD drive point block_kib",
    0.0,
    65_536.0,
    "KiB (256 for 256 KiB reads)",
);
const THREADS: Limit = limit("CPU threads", 1.0, 16_384.0, "threads");
const CPU_GBS: Limit = limit(
    "CPU gbs_per_thread",
    0.01,
    1_000.0,
    "GB/s per thread (26 for Q4_0 on a Ryzen 9 7950X)",
);
const CPU_GFLOPS: Limit = limit(
    "CPU gemm_gflops_per_thread",
    0.1,
    100_000.0,
    "GFLOP/s per thread (134 for Q4_0 on a Ryzen 9 7950X)",
);

/// A RAM size a sweep's budgets reach, within what any machine has.
pub fn plausible_ram_gib(v: f64) -> std::result::Result<(), String> {
    plausible(v, &RAM_GIB)
}

/// A VRAM size per GPU (`sweep --vrams`), within what any GPU has.
pub fn plausible_vram_gib(v: f64) -> std::result::Result<(), String> {
    plausible(v, &VRAM_GIB)
}

/// `v` within its limit, else a one-line error saying the unit.
fn plausible(v: f64, l: &Limit) -> std::result::Result<(), String> {
    if v > l.max {
        Err(format!(
            "{} = {} is more than any machine has (at most {}): the field is in {}",
            l.field,
            crate::units::shown(v),
            l.max,
            l.hint
        ))
    } else if v < l.min {
        Err(format!(
            "{} = {} is less than any machine has (at least {}): the field is in {}",
            l.field,
            crate::units::shown(v),
            l.min,
            l.hint
        ))
    } else {
        Ok(())
    }
}

fn gpu(count: u32, vram_gib: f64, bandwidth_gbs: f64, reserve_gib: f64) -> Gpu {
    Gpu {
        count,
        vram_gib,
        bandwidth_gbs,
        reserve_gib,
        gemm_tflops: None,
        h2d_gbs: None,
    }
}

/// A GPU's batch figures: TFLOP/s from llama.cpp's CUDA scoreboard (discussion 15013,
/// Llama-2-7B Q4_0 pp512 x 2 x 6.476e9 matmul weights) and its link's host-to-device GB/s.
fn with_batch(g: Gpu, gemm_tflops: f64, h2d_gbs: f64) -> Gpu {
    Gpu {
        gemm_tflops: Some(gemm_tflops),
        h2d_gbs: Some(h2d_gbs),
        ..g
    }
}

fn hw(
    name: &str,
    description: &str,
    gpus: Vec<Gpu>,
    ram: (f64, f64, f64),
    ssd: (f64, u32),
    cpu: Option<(&str, u32)>,
) -> Hardware {
    Hardware {
        name: name.into(),
        description: description.into(),
        gpus,
        ram: Ram {
            size_gib: ram.0,
            bandwidth_gbs: ram.1,
            reserve_gib: ram.2,
            page_cache_gbs: None,
            fault_gbs: None,
            willneed_gbs: None,
        },
        ssd: Ssd {
            model: None,
            bandwidth_gbs: ssd.0,
            drives: ssd.1,
            latency_us: None,
            stream_gbs: None,
            kiops: None,
            points: Vec::new(),
            max_sectors_kb: None,
        },
        cpu: cpu.map(|(name, threads)| Cpu::new(name, threads)),
        overrides: String::new(),
    }
}

/// The seed's machines (numbers in DESIGN.md, reconstructed in model_facts.md section 5)
/// and a few that people own. RAM bandwidths are effective values: the seed's measured
/// box reaches 57.6 GB/s; the others take 75% of the channel peak (model_facts.md §4)
/// except the seed's hypothetical 3090 box, which the post computed at DDR5-6000 peak.
/// Host-to-device rates are of copies from a mapped file (pageable memory): a PCIe 4.0
/// x16 link's 25 GB/s (NVIDIA/nvbandwidth#15); on PCIe 5.0 x16 the staging of pageable
/// memory binds first: experts copied from a mapped DeepSeek-V3.2 at about 30 GB/s
/// (llama.cpp PR 23346: pp512 22.2 tokens/s, about 695 GB of experts per ubatch); PCIe
/// 3.0 "without pinned memory 5-6 GB/s" (rapidsai/dask-cuda#98). The P40's batch rate is
/// llama-bench's llama 7B Q4_0 pp512 on a P40, 934.74 tokens/s (llama.cpp PR 4766),
/// times 2 x 6.476e9 matmul weights: 12.1 TFLOP/s (it has no tensor cores).
pub fn presets() -> Vec<Hardware> {
    vec![
        hw(
            "p40x3-ddr4",
            "the seed author's box: 3x Tesla P40, 288 GiB DDR4-2400 (57.6 GB/s effective), 3.5 GB/s SSD",
            vec![with_batch(gpu(3, 24.0, 346.0, 2.0), 12.1, 5.5)],
            (288.0, 57.6, 8.0),
            (3.5, 1),
            None,
        ),
        hw(
            "3090-ddr5",
            "the seed's hypothetical box: RTX 3090, 128 GiB dual-channel DDR5 at peak 96 GB/s, 7 GB/s SSD",
            vec![with_batch(gpu(1, 24.0, 936.0, 3.0), 67.0, 25.0)],
            (128.0, 96.0, 6.0),
            (7.0, 1),
            Some(("Ryzen 9 7950X (assumed)", 16)),
        ),
        hw(
            "3090-ddr5-raid0",
            "the same with four 7 GB/s drives in RAID0 (28 GB/s)",
            vec![with_batch(gpu(1, 24.0, 936.0, 3.0), 67.0, 25.0)],
            (128.0, 96.0, 6.0),
            (7.0, 4),
            Some(("Ryzen 9 7950X (assumed)", 16)),
        ),
        hw(
            "4090-ddr5",
            "RTX 4090, 96 GiB dual-channel DDR5-6000 (72 GB/s = 75% of 96 peak), PCIe 4 SSD 7 GB/s",
            vec![with_batch(gpu(1, 24.0, 1008.0, 3.0), 155.0, 25.0)],
            (96.0, 72.0, 6.0),
            (7.0, 1),
            Some(("Ryzen 9 7950X (assumed)", 16)),
        ),
        hw(
            "5090-ddr5",
            "RTX 5090, 192 GiB dual-channel DDR5-6000 (72 GB/s effective), PCIe 5 SSD 14 GB/s",
            vec![with_batch(gpu(1, 32.0, 1792.0, 3.0), 182.0, 30.0)],
            (192.0, 72.0, 8.0),
            (14.0, 1),
            Some(("Ryzen 9 7950X (assumed)", 16)),
        ),
        hw(
            "desktop-cpu",
            "CPU only: 64 GiB dual-channel DDR5-5600 (67 GB/s = 75% of 89.6 peak), PCIe 4 SSD 7 GB/s",
            vec![],
            (64.0, 67.2, 6.0),
            (7.0, 1),
            Some(("Ryzen 9 7950X (assumed)", 16)),
        ),
        hw(
            "epyc-12ch-ddr5",
            "CPU-only server: EPYC 9004, 768 GiB 12-channel DDR5-4800 (346 GB/s = 75% of 460.8 peak), 2x PCIe 5 SSD",
            vec![],
            (768.0, 345.6, 16.0),
            (14.0, 2),
            Some(("EPYC 9354 (assumed)", 32)),
        ),
    ]
}

/// `points = []` is a mistake, not a request for the rated curve: said, not ignored.
fn non_empty_points<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<DrivePoint>, D::Error> {
    let points = Vec::<DrivePoint>::deserialize(d)?;
    if points.is_empty() {
        return Err(serde::de::Error::custom(
            "points lists no point: give measured points, or leave the field out for the curve of the rated figures",
        ));
    }
    Ok(points)
}

/// Overrides of a profile's numbers (the command line's --hw, --gpus, --vram, ...).
#[derive(Debug, Clone, Default)]
pub struct HardwareOverrides {
    /// Hardware preset or profile file (TOML or JSON).
    pub hw: String,
    /// Override: number of GPUs (0 for CPU only); they share the first GPU's numbers.
    pub gpus: Option<u32>,
    /// Override: VRAM per GPU, GiB.
    pub vram: Option<f64>,
    /// Override: VRAM bandwidth per GPU, GB/s.
    pub vram_bw: Option<f64>,
    /// Override: VRAM reserve per GPU (KV cache, buffers), GiB.
    pub vram_reserve: Option<f64>,
    /// Override: host-to-device GB/s per GPU (op offload's expert copies).
    pub h2d_gbs: Option<f64>,
    /// Override: TFLOP/s per GPU multiplying a batch.
    pub gemm_tflops: Option<f64>,
    /// Override: effective RAM bandwidth, GB/s.
    pub ram_bw: Option<f64>,
    /// Override: RAM the page cache cannot use (OS, buffers), GiB.
    pub ram_reserve: Option<f64>,
    /// Override: the drive, a preset of `drive_presets.rs` (its rated read and largest
    /// transfer, the default curve's latency and single-request rate).
    pub ssd: Option<String>,
    /// Override: SSD read bandwidth per drive, GB/s.
    pub ssd_bw: Option<f64>,
    /// Override: SSD drives in RAID0.
    pub ssd_drives: Option<u32>,
    /// Override: fixed cost of one read request, microseconds.
    pub ssd_latency_us: Option<f64>,
    /// Override: rate at which one read request streams, GB/s.
    pub ssd_stream_gbs: Option<f64>,
    /// Override: the drive's rated random-read IOPS, thousands.
    pub ssd_kiops: Option<f64>,
    /// Override: the queue's max_sectors_kb.
    pub max_sectors_kb: Option<u64>,
    /// Override: the CPU's threads (llama.cpp `--threads`).
    pub threads: Option<u32>,
    /// Override: whose CPU kernels the published rates are.
    pub cpu_kernels: Option<Kernels>,
    /// Override: GB/s one core moves through the page cache by buffered reads.
    pub page_cache_gbs: Option<f64>,
    /// Override: GB/s one core brings in through the page cache by page faults.
    pub fault_gbs: Option<f64>,
    /// Override: GB/s one core brings in through the page cache by `MADV_WILLNEED`.
    pub willneed_gbs: Option<f64>,
}

impl HardwareOverrides {
    /// The profile file `--hw` names, for `-o` to spare (none for a preset: its name is
    /// read as the preset even where a file has that name).
    pub fn profile_file(&self) -> Option<std::path::PathBuf> {
        let path = std::path::Path::new(&self.hw);
        (path.is_file() && Hardware::preset(&self.hw).is_none()).then(|| path.to_path_buf())
    }

    /// The profile with the overrides applied and checked. `ram_gib` overrides the
    /// installed RAM (`--ram`).
    pub fn resolve(&self, ram_gib: Option<f64>) -> Result<Hardware> {
        let mut h = Hardware::resolve(&self.hw)?;
        let gpu_flags = named([
            ("--vram", self.vram.is_some()),
            ("--vram-bw", self.vram_bw.is_some()),
            ("--vram-reserve", self.vram_reserve.is_some()),
            ("--h2d-gbs", self.h2d_gbs.is_some()),
            ("--gemm-tflops", self.gemm_tflops.is_some()),
        ]);
        let describe = if gpu_flags.len() == 1 {
            "describes"
        } else {
            "describe"
        };
        if self.vram == Some(0.0) {
            return Err(Error::new(
                "--vram 0: a GPU has VRAM; for a machine without one give --gpus 0",
            ));
        }
        match self.gpus {
            Some(0) if !gpu_flags.is_empty() => {
                return Err(Error::new(format!(
                    "{} {describe} a GPU, and --gpus 0 leaves none",
                    gpu_flags.join(", ")
                )));
            }
            Some(0) => h.gpus.clear(),
            Some(n) => {
                let base = match (h.gpus.first(), self.vram, self.vram_bw) {
                    (Some(g), _, _) => g.clone(),
                    // New GPUs share the figures given: without a GPU in the profile,
                    // both must be.
                    (None, Some(vram), Some(bw)) => gpu(1, vram, bw, DEFAULT_VRAM_RESERVE_GIB),
                    (None, vram, bw) => {
                        let missing: Vec<&str> = [("--vram", vram), ("--vram-bw", bw)]
                            .into_iter()
                            .filter_map(|(f, v)| v.is_none().then_some(f))
                            .collect();
                        return Err(Error::new(format!(
                            "--gpus {n}: `{}` has no GPU whose figures they could share: give {} too",
                            h.name,
                            missing.join(" and ")
                        )));
                    }
                };
                h.gpus = vec![Gpu { count: n, ..base }];
            }
            None => {}
        }
        if !gpu_flags.is_empty() && h.gpus.is_empty() {
            return Err(Error::new(format!(
                "{} {describe} a GPU: `{}` has none (add --gpus 1)",
                gpu_flags.join(", "),
                h.name
            )));
        }
        for g in &mut h.gpus {
            g.vram_gib = self.vram.unwrap_or(g.vram_gib);
            g.bandwidth_gbs = self.vram_bw.unwrap_or(g.bandwidth_gbs);
            g.reserve_gib = self.vram_reserve.unwrap_or(g.reserve_gib);
            if self.h2d_gbs.is_some() {
                g.h2d_gbs = self.h2d_gbs;
            }
            if self.gemm_tflops.is_some() {
                g.gemm_tflops = self.gemm_tflops;
            }
        }
        h.ram.bandwidth_gbs = self.ram_bw.unwrap_or(h.ram.bandwidth_gbs);
        h.ram.reserve_gib = self.ram_reserve.unwrap_or(h.ram.reserve_gib);
        if self.page_cache_gbs.is_some() {
            h.ram.page_cache_gbs = self.page_cache_gbs;
        }
        if self.fault_gbs.is_some() {
            h.ram.fault_gbs = self.fault_gbs;
        }
        if self.willneed_gbs.is_some() {
            h.ram.willneed_gbs = self.willneed_gbs;
        }
        h.ram.size_gib = ram_gib.unwrap_or(h.ram.size_gib);
        if let Some(name) = &self.ssd {
            // The drive is replaced, figures and curve; RAID0 keeps its count. A curve
            // the profile gives (measured, as a rule) is not dropped silently.
            let d = crate::drive_presets::find(name).map_err(Error::new)?;
            let own = named([
                ("points", !h.ssd.points.is_empty()),
                ("latency_us", h.ssd.latency_us.is_some()),
                ("stream_gbs", h.ssd.stream_gbs.is_some()),
            ]);
            if !own.is_empty() {
                return Err(Error::new(format!(
                    "--ssd {} would replace the drive curve of `{}` ({} in its [ssd]): leave out --ssd to keep the curve, or the curve to take the preset's",
                    d.name,
                    crate::error::printable(&h.name),
                    own.join(", ")
                )));
            }
            h.ssd = Ssd {
                model: Some(d.name.into()),
                bandwidth_gbs: d.rated_gbs,
                drives: h.ssd.drives,
                latency_us: None,
                stream_gbs: None,
                kiops: d.kiops,
                points: Vec::new(),
                max_sectors_kb: Some(d.max_sectors_kb()),
            };
        }
        h.ssd.bandwidth_gbs = self.ssd_bw.unwrap_or(h.ssd.bandwidth_gbs);
        h.ssd.drives = self.ssd_drives.unwrap_or(h.ssd.drives);
        // Measured points replace the three figures: overriding one would do nothing.
        if !h.ssd.points.is_empty() {
            let dropped = named([
                ("--ssd-latency-us", self.ssd_latency_us.is_some()),
                ("--ssd-stream-gbs", self.ssd_stream_gbs.is_some()),
                ("--ssd-kiops", self.ssd_kiops.is_some()),
            ]);
            if !dropped.is_empty() {
                return Err(Error::new(format!(
                    "{} would change nothing: the drive points of `{}` replace the latency, the single-request rate and the IOPS ceiling (leave out the flag, or the points)",
                    dropped.join(" and "),
                    crate::error::printable(&h.name)
                )));
            }
        }
        if self.ssd_latency_us.is_some() {
            h.ssd.latency_us = self.ssd_latency_us;
        }
        if self.ssd_stream_gbs.is_some() {
            h.ssd.stream_gbs = self.ssd_stream_gbs;
        }
        if self.ssd_kiops.is_some() {
            h.ssd.kiops = self.ssd_kiops;
        }
        if self.max_sectors_kb.is_some() {
            h.ssd.max_sectors_kb = self.max_sectors_kb;
        }
        if let Some(t) = self.threads {
            match &mut h.cpu {
                Some(c) => c.threads = t,
                None => h.cpu = Some(Cpu::new("", t)),
            }
        }
        if let Some(k) = self.cpu_kernels {
            let threads = h.threads();
            h.cpu.get_or_insert_with(|| Cpu::new("", threads)).kernels = k;
        }
        h.overrides = self.given();
        h.validate().map_err(|m| {
            // A figure a flag gave is named by its flag too.
            let flag = self
                .flags(ram_gib.is_some())
                .into_iter()
                .find(|(field, _, given)| *given && m.starts_with(field))
                .map_or(String::new(), |(_, flag, _)| format!(" (from {flag})"));
            Error::new(format!("hardware {}: {m}{flag}", h.name))
        })?;
        Ok(h)
    }

    /// The overrides given, as flags (` --ssd p3 --ram-bw 50`), but `--ram` and
    /// `--vram`, which rows have columns for.
    fn given(&self) -> String {
        let num = |flag: &str, v: Option<f64>| v.map(|v| format!(" {flag} {v}"));
        [
            num("--gpus", self.gpus.map(f64::from)),
            num("--vram-bw", self.vram_bw),
            num("--vram-reserve", self.vram_reserve),
            num("--h2d-gbs", self.h2d_gbs),
            num("--gemm-tflops", self.gemm_tflops),
            num("--ram-bw", self.ram_bw),
            num("--ram-reserve", self.ram_reserve),
            // The preset's own spelling: `--ssd T700` and `--ssd t700` label rows alike.
            self.ssd.as_ref().map(|s| {
                let name = crate::drive_presets::find(s)
                    .map_or_else(|_| crate::error::printable(s), |d| d.name.to_string());
                format!(" --ssd {name}")
            }),
            num("--ssd-bw", self.ssd_bw),
            num("--ssd-drives", self.ssd_drives.map(f64::from)),
            num("--ssd-latency-us", self.ssd_latency_us),
            num("--ssd-stream-gbs", self.ssd_stream_gbs),
            num("--ssd-kiops", self.ssd_kiops),
            num("--max-sectors-kb", self.max_sectors_kb.map(|v| v as f64)),
            num("--threads", self.threads.map(f64::from)),
            self.cpu_kernels
                .map(|k| format!(" --cpu-kernels {}", k.name())),
            num("--page-cache-gbs", self.page_cache_gbs),
            num("--fault-gbs", self.fault_gbs),
            num("--willneed-gbs", self.willneed_gbs),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The profile field each override sets, its flag, and whether it was given.
    fn flags(&self, ram: bool) -> Vec<(&'static str, &'static str, bool)> {
        vec![
            ("RAM size_gib", "--ram", ram),
            ("GPU vram_gib", "--vram", self.vram.is_some()),
            (
                "GPU reserve_gib",
                "--vram-reserve",
                self.vram_reserve.is_some(),
            ),
            ("GPU bandwidth_gbs", "--vram-bw", self.vram_bw.is_some()),
            ("GPU h2d_gbs", "--h2d-gbs", self.h2d_gbs.is_some()),
            (
                "GPU gemm_tflops",
                "--gemm-tflops",
                self.gemm_tflops.is_some(),
            ),
            ("RAM bandwidth_gbs", "--ram-bw", self.ram_bw.is_some()),
            (
                "RAM reserve_gib",
                "--ram-reserve",
                self.ram_reserve.is_some(),
            ),
            (
                "RAM page_cache_gbs",
                "--page-cache-gbs",
                self.page_cache_gbs.is_some(),
            ),
            ("RAM fault_gbs", "--fault-gbs", self.fault_gbs.is_some()),
            (
                "RAM willneed_gbs",
                "--willneed-gbs",
                self.willneed_gbs.is_some(),
            ),
            ("SSD bandwidth_gbs", "--ssd-bw", self.ssd_bw.is_some()),
            (
                "SSD latency_us",
                "--ssd-latency-us",
                self.ssd_latency_us.is_some(),
            ),
            (
                "SSD stream_gbs",
                "--ssd-stream-gbs",
                self.ssd_stream_gbs.is_some(),
            ),
            ("SSD kiops", "--ssd-kiops", self.ssd_kiops.is_some()),
            (
                "SSD max_sectors_kb",
                "--max-sectors-kb",
                self.max_sectors_kb.is_some(),
            ),
            ("CPU threads", "--threads", self.threads.is_some()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_overrides_apply() {
        for h in presets() {
            h.validate().unwrap();
        }
        let a = HardwareOverrides {
            hw: "3090-ddr5".into(),
            ssd_drives: Some(4),
            ram_bw: Some(50.0),
            ..Default::default()
        };
        let h = a.resolve(Some(64.0)).unwrap();
        assert_eq!(h.ssd_bandwidth_gbs(), 28.0);
        assert_eq!(h.ram.size_gib, 64.0);
        assert_eq!(h.ram.bandwidth_gbs, 50.0);
        let batch = HardwareOverrides {
            hw: "3090-ddr5".into(),
            gpus: Some(2),
            h2d_gbs: Some(5.5),
            gemm_tflops: Some(40.0),
            ..Default::default()
        };
        let g = &batch.resolve(None).unwrap().gpus[0];
        assert_eq!((g.count, g.h2d_gbs(), g.gemm_tflops()), (2, 5.5, 40.0));
        let no_gpu = HardwareOverrides {
            hw: "desktop-cpu".into(),
            h2d_gbs: Some(5.5),
            ..Default::default()
        };
        assert!(no_gpu.resolve(None).is_err());
        let bad_link = HardwareOverrides {
            hw: "3090-ddr5".into(),
            h2d_gbs: Some(0.0),
            ..Default::default()
        };
        assert!(bad_link.resolve(None).is_err());
        let bad = HardwareOverrides {
            hw: "3090-ddr5".into(),
            ssd_bw: Some(0.0),
            ..Default::default()
        };
        assert!(bad.resolve(None).is_err());
    }

    #[test]
    fn figures_in_another_unit_are_refused_with_the_unit() {
        let with = |f: &dyn Fn(&mut Hardware)| {
            let mut h = Hardware::resolve("3090-ddr5").unwrap();
            f(&mut h);
            h.validate()
        };
        // MB/s for GB/s, MiB for GiB, milliseconds for microseconds.
        let e = with(&|h| h.ssd.bandwidth_gbs = 7000.0).unwrap_err();
        assert_eq!(e, "SSD bandwidth_gbs = 7000 is more than any machine has (at most 200): the field is in GB/s per drive (7 for a 7,000 MB/s drive)");
        let e = with(&|h| h.ram.size_gib = 131072.0).unwrap_err();
        assert!(e.starts_with("RAM size_gib = 131072 is more"), "{e}");
        let e = with(&|h| h.gpus[0].vram_gib = 24576.0).unwrap_err();
        assert!(e.starts_with("GPU vram_gib = 24576 is more"), "{e}");
        let e = with(&|h| h.ram.bandwidth_gbs = 67200.0).unwrap_err();
        assert!(e.starts_with("RAM bandwidth_gbs"), "{e}");
        let e = with(&|h| h.ssd.latency_us = Some(0.096)).unwrap_err();
        assert!(
            e.contains("at least 0.5): the field is in microseconds"),
            "{e}"
        );
        let e = with(&|h| h.cpu.as_mut().unwrap().threads = 100_000).unwrap_err();
        assert!(e.starts_with("CPU threads = 100000 is more"), "{e}");
        // The ends themselves are machines that exist or could.
        assert!(with(&|h| h.ssd.latency_us = Some(7.0)).is_ok());
        assert!(with(&|h| h.ram.size_gib = 6144.0).is_ok());
        assert!(with(&|h| h.gpus[0].bandwidth_gbs = 8000.0).is_ok());
    }

    #[test]
    fn toml_and_json_profiles() {
        let d = std::env::temp_dir().join(format!("hw-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let t = d.join("box.toml");
        std::fs::write(
            &t,
            "name = \"box\"\n[[gpus]]\nvram_gib = 16\nbandwidth_gbs = 500\n[ram]\nsize_gib = 64\nbandwidth_gbs = 60\n[ssd]\nbandwidth_gbs = 5\n",
        )
        .unwrap();
        let h = Hardware::resolve(t.to_str().unwrap()).unwrap();
        assert_eq!(
            (h.gpus[0].count, h.ram.size_gib, h.ssd.drives),
            (1, 64.0, 1)
        );
        let j = d.join("box.json");
        std::fs::write(&j, serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(Hardware::resolve(j.to_str().unwrap()).unwrap(), h);
        let bad = d.join("bad.toml");
        std::fs::write(&bad, "name = \"x\"\n[ram]\nsize_gib = 64\nbandwidth_gbs = 60\nspeed = 3\n[ssd]\nbandwidth_gbs = 5\n").unwrap();
        let e = Hardware::resolve(bad.to_str().unwrap()).unwrap_err();
        assert!(e.0.contains("bad.toml:5:") && e.0.contains("speed"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_value_error_names_the_line_of_its_field() {
        let toml = "name = \"box\" # ram = 1\n[[gpus]]\nvram_gib = 16\nbandwidth_gbs = 500\n[ram]\nsize_gib = 64\nbandwidth_gbs = 60\nfault_gbs = 0.05\n[ssd]\nbandwidth_gbs = 5000\n[cpu]\nthreads = 8\n[cpu.gbs_per_thread]\nq4_0 = 26\niq9_z = 3\n";
        let line = |m: &str| line_of_field(toml, m);
        assert_eq!(line("GPU bandwidth_gbs = 500 is"), Some(4));
        assert_eq!(line("RAM bandwidth_gbs = 60 is"), Some(7));
        assert_eq!(line("RAM fault_gbs = 0.05 is less"), Some(8));
        assert_eq!(line("SSD bandwidth_gbs = 5000 is more"), Some(10));
        assert_eq!(line("CPU gbs_per_thread.q4_0 must be"), Some(14));
        assert_eq!(
            line("CPU gbs_per_thread: unknown quant type `iq9_z`"),
            Some(15)
        );
        // A field left to its default is on no line.
        assert_eq!(line("RAM page_cache_gbs = 0.1 is less"), None);
        let json = "{\n  \"name\": \"box\",\n  \"ram\": {\n    \"size_gib\": 64,\n    \"bandwidth_gbs\": 96000\n  },\n  \"ssd\": {\"bandwidth_gbs\": 7}\n}";
        assert_eq!(line_of_field(json, "RAM bandwidth_gbs = 96000 is"), Some(5));
        assert_eq!(line_of_field(json, "SSD bandwidth_gbs = 7000 is"), Some(7));
    }

    #[test]
    fn faults_take_the_read_rate_unless_the_profile_gives_theirs() {
        let mut h = Hardware::resolve("3090-ddr5").unwrap();
        assert_eq!(
            h.ram.page_cache(),
            PageCacheRates::same(DEFAULT_PAGE_CACHE_GBS)
        );
        h.ram.page_cache_gbs = Some(2.5);
        assert_eq!(h.ram.page_cache(), PageCacheRates::same(2.5));
        h.ram.fault_gbs = Some(11.0);
        assert_eq!(
            h.ram.page_cache(),
            PageCacheRates {
                read_gbs: 2.5,
                fault_gbs: 11.0,
                willneed_gbs: 11.0
            }
        );
        h.ram.willneed_gbs = Some(3.0);
        assert_eq!(h.ram.page_cache().willneed_gbs, 3.0);
        assert_eq!(h.ram.page_cache().fault_gbs, 11.0);
        let w = HardwareOverrides {
            hw: "3090-ddr5".into(),
            willneed_gbs: Some(0.1),
            ..Default::default()
        };
        let e = w.resolve(None).unwrap_err().0;
        assert!(
            e.contains("RAM willneed_gbs = 0.1 is less") && e.contains("(from --willneed-gbs)"),
            "{e}"
        );
        h.ram.willneed_gbs = None;
        let o = HardwareOverrides {
            hw: "3090-ddr5".into(),
            fault_gbs: Some(12.0),
            ..Default::default()
        };
        assert_eq!(o.resolve(None).unwrap().ram.page_cache().fault_gbs, 12.0);
        let bad = HardwareOverrides {
            fault_gbs: Some(0.0),
            ..o
        };
        let e = bad.resolve(None).unwrap_err().0;
        assert!(
            e.contains("RAM fault_gbs") && e.contains("(from --fault-gbs)"),
            "{e}"
        );
        h.ram.fault_gbs = Some(4000.0);
        assert!(h
            .validate()
            .unwrap_err()
            .starts_with("RAM fault_gbs = 4000 is more"));
        // Seconds per GB (what scripts/fault_cost.py prints) in place of GB/s.
        h.ram.fault_gbs = Some(0.0903);
        let e = h.validate().unwrap_err();
        assert!(
            e.contains("is less than") && e.contains("1 / (seconds of CPU per GB)"),
            "{e}"
        );
    }
}
