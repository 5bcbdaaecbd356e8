//! The measured process. It joins the memory cgroup, maps the model file as llama.cpp
//! does, measures its own fixed memory, sets the cgroup limit to that plus the budget,
//! then reads token after token of expert ids from stdin, touches every page of every
//! routed expert and reports per token the bytes read from storage, the page faults and
//! the wall time on fd 3. It allocates nothing after the measurement, so the limit
//! leaves exactly the budget to the page cache.
//!
//! Protocol (little-endian u64 words on fd 3): a READY record `[READY, fixed_overhead,
//! page_table_bytes, limit, window_kb, read_ahead_kb]`, then per token `[read_bytes, major_faults,
//! minor_faults, wall_ns, device_reads, sys_ns]`, then `[DONE, non_file_bytes, limit]`. `device_reads`
//! is the read requests the file's device completed (its sysfs `stat`, every process's),
//! [`NO_COUNT`] where there is none; `sys_ns` the thread's system CPU time.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::cgroup::Version;
use super::layout::ExpertFileLayout;
use super::sys::{self, ProcFile, SharedMapping};
use super::Advice;
use crate::error::{Error, Result};

/// The environment variable that carries the child's [`ChildSpec`] (JSON).
pub const SPEC_ENV: &str = "MOE_SPILL_KERNEL_CHILD";
/// The descriptor the child reports on.
pub const REPORT_FD: i32 = 3;
pub const READY: u64 = 0x5944_4145_5200_0001;
pub const DONE: u64 = 0x454e_4f44_0000_0002;
pub const TOKEN_WORDS: usize = 6;
/// A count the child could not read.
pub const NO_COUNT: u64 = u64::MAX;
/// Words of the READY record.
pub const READY_WORDS: usize = 6;

/// Everything the child needs, from the parent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChildSpec {
    pub file: PathBuf,
    pub layout: ExpertFileLayout,
    pub advice: Advice,
    /// Set the device's read_ahead_kb to this while opening and advising the file.
    pub read_ahead_kb: Option<u64>,
    /// sysfs file of the device's read_ahead_kb.
    pub bdi_read_ahead: Option<PathBuf>,
    /// sysfs `stat` of the file's block device (its read requests).
    pub device_stat: Option<PathBuf>,
    pub cgroup_dir: PathBuf,
    pub cgroup_version: Version,
    /// Bytes of page cache the budget allows (capacity x expert bytes).
    pub budget_bytes: u64,
    pub per_token: usize,
    pub n_tokens: usize,
}

fn err(what: &str, e: io::Error) -> Error {
    Error::new(format!("kernel-replay child: {what}: {e}"))
}

/// The child's entry point (the hidden `kernel-replay-child` subcommand): reads its
/// spec from the environment, so any binary that calls it can serve as the child.
pub fn child_main() -> Result<()> {
    let spec: ChildSpec = {
        let s = std::env::var(SPEC_ENV).map_err(|_| {
            Error::new(format!(
                "kernel-replay-child is internal to kernel-replay ({SPEC_ENV} is not set)"
            ))
        })?;
        serde_json::from_str(&s).map_err(|e| Error::new(format!("{SPEC_ENV}: {e}")))?
    };
    // SAFETY: the parent opened fd 3 for us; nothing else in this process owns it.
    let mut report = unsafe { File::from_raw_fd(REPORT_FD) };
    let cg = &spec.cgroup_dir;
    let (usage_name, limit_name, file_key) = match spec.cgroup_version {
        Version::V1 => ("memory.usage_in_bytes", "memory.limit_in_bytes", "cache "),
        Version::V2 => ("memory.current", "memory.max", "file "),
    };

    // Join the cgroup first: everything allocated from here on is charged to it.
    std::fs::write(cg.join("cgroup.procs"), std::process::id().to_string())
        .map_err(|e| err("joining the memory cgroup", e))?;

    // Everything the loop needs, allocated now.
    let mut usage = ProcFile::open(&cg.join(usage_name).to_string_lossy())
        .map_err(|e| err("opening the cgroup usage file", e))?;
    let mut stat = ProcFile::open(&cg.join("memory.stat").to_string_lossy())
        .map_err(|e| err("opening memory.stat", e))?;
    let mut limit_file = OpenOptions::new()
        .write(true)
        .open(cg.join(limit_name))
        .map_err(|e| err("opening the cgroup limit file", e))?;
    let mut io_file =
        ProcFile::open("/proc/thread-self/io").map_err(|e| err("/proc/thread-self/io", e))?;
    let mut status = ProcFile::open("/proc/thread-self/status")
        .map_err(|e| err("/proc/thread-self/status", e))?;
    let mut stdin = io::stdin().lock();
    let mut ids = vec![0u8; spec.per_token * 2];
    let mut rec = [0u8; TOKEN_WORDS * 8];
    let mut limit_text = String::with_capacity(32);

    // Open, advise and map the file as llama.cpp does (src/llama-mmap.cpp).
    let saved_ra = match (spec.read_ahead_kb, &spec.bdi_read_ahead) {
        (Some(kb), Some(p)) => {
            let old = std::fs::read_to_string(p).map_err(|e| err("reading read_ahead_kb", e))?;
            std::fs::write(p, kb.to_string()).map_err(|e| err("setting read_ahead_kb", e))?;
            Some((p.clone(), old))
        }
        _ => None,
    };
    let opened = (|| -> io::Result<(File, u64, u64)> {
        let f = File::open(&spec.file)?;
        let ra_kb = match &spec.bdi_read_ahead {
            Some(p) => std::fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0),
            None => 0,
        };
        let factor = match spec.advice {
            Advice::Sequential => {
                sys::fadvise(&f, 0, 0, libc::POSIX_FADV_SEQUENTIAL)?;
                2
            }
            Advice::Random => {
                sys::fadvise(&f, 0, 0, libc::POSIX_FADV_RANDOM)?;
                0
            }
            Advice::Normal | Advice::Willneed => 1,
        };
        Ok((f, ra_kb, ra_kb * factor))
    })();
    if let Some((p, old)) = saved_ra {
        std::fs::write(&p, old.trim()).map_err(|e| err("restoring read_ahead_kb", e))?;
    }
    let (file, read_ahead_kb, window_kb) =
        opened.map_err(|e| err("opening and advising the model file", e))?;
    let map = SharedMapping::new(&file, spec.layout.file_len())
        .map_err(|e| err("mapping the model file", e))?;
    if spec.advice == Advice::Random {
        map.madvise(0, map.size() as u64, libc::MADV_RANDOM)
            .map_err(|e| err("madvise(MADV_RANDOM)", e))?;
    }
    let extents: Vec<[(u64, u64); 3]> = (0..spec.layout.n_ids)
        .map(|id| {
            let mut a = [(0, 0); 3];
            for (i, e) in spec.layout.extents(id).enumerate() {
                a[i] = e;
            }
            a
        })
        .collect();
    let slices = spec.layout.slices as usize;

    // Warm every code path and buffer once, then measure what the process itself costs:
    // everything charged to the cgroup that is not page cache of the file.
    let _ = io_file.field("read_bytes");
    let _ = sys::thread_usage();
    let mut device = spec
        .device_stat
        .as_ref()
        .and_then(|p| ProcFile::open(&p.to_string_lossy()).ok());
    let mut device_reads = move || {
        device
            .as_mut()
            // The first field of a block device's `stat`: reads completed.
            .and_then(|d| d.field("").ok().flatten())
            .unwrap_or(NO_COUNT)
    };
    let _ = device_reads();
    let mut nonfile = || -> io::Result<u64> {
        let used = usage.field("")?.unwrap_or(0);
        let file = stat.field(file_key)?.unwrap_or(0);
        Ok(used.saturating_sub(file))
    };
    let fixed = nonfile().map_err(|e| err("reading the cgroup usage", e))?;
    let pte0 = status.field("VmPTE:").ok().flatten().unwrap_or(0) * 1024;
    let mut limit = fixed + spec.budget_bytes;
    set_limit(&mut limit_file, &mut limit_text, limit)
        .map_err(|e| err("setting the cgroup limit", e))?;
    let ready: [u64; READY_WORDS] = [READY, fixed, pte0, limit, window_kb, read_ahead_kb];
    write_words(&mut report, &ready).map_err(|e| err("reporting", e))?;

    let mut sink = 0u64;
    for _ in 0..spec.n_tokens {
        stdin
            .read_exact(&mut ids)
            .map_err(|e| err("reading expert ids", e))?;
        let rb0 = io_file.field("read_bytes").ok().flatten().unwrap_or(0);
        let dr0 = device_reads();
        let (maj0, min0, sys0) = sys::thread_usage();
        let t0 = Instant::now();
        for pair in ids.chunks_exact(2) {
            let id = u16::from_le_bytes([pair[0], pair[1]]) as usize;
            let ext = &extents[id][..slices];
            if spec.advice == Advice::Willneed {
                for &(off, len) in ext {
                    let _ = map.madvise(off, len, libc::MADV_WILLNEED);
                }
            }
            for &(off, len) in ext {
                sink = sink.wrapping_add(map.touch(off, len));
            }
        }
        let wall = t0.elapsed().as_nanos() as u64;
        let (maj1, min1, sys1) = sys::thread_usage();
        let rb1 = io_file.field("read_bytes").ok().flatten().unwrap_or(0);
        let dr1 = device_reads();
        let dr = if dr0 == NO_COUNT || dr1 == NO_COUNT {
            NO_COUNT
        } else {
            dr1.saturating_sub(dr0)
        };
        // Page tables and the page cache's own index (xarray nodes, which also keep
        // the shadow entries of evicted pages) grow as the file is touched; the limit
        // follows them so the file's page cache keeps exactly the budget.
        let other = nonfile().map_err(|e| err("reading the cgroup usage", e))?;
        if other + spec.budget_bytes > limit {
            limit = other + spec.budget_bytes;
            set_limit(&mut limit_file, &mut limit_text, limit)
                .map_err(|e| err("raising the cgroup limit", e))?;
        }
        for (i, w) in [rb1 - rb0, maj1 - maj0, min1 - min0, wall, dr, sys1 - sys0]
            .iter()
            .enumerate()
        {
            rec[i * 8..(i + 1) * 8].copy_from_slice(&w.to_le_bytes());
        }
        report.write_all(&rec).map_err(|e| err("reporting", e))?;
    }
    let other = nonfile().map_err(|e| err("reading the cgroup usage", e))?;
    std::hint::black_box(sink);
    write_words(&mut report, &[DONE, other, limit]).map_err(|e| err("reporting", e))?;
    Ok(())
}

fn set_limit(f: &mut File, text: &mut String, bytes: u64) -> io::Result<()> {
    use std::fmt::Write as _;
    text.clear();
    let _ = write!(text, "{bytes}");
    f.write_all(text.as_bytes())
}

fn write_words(out: &mut File, words: &[u64]) -> io::Result<()> {
    let mut buf = [0u8; 64];
    for (i, w) in words.iter().enumerate() {
        buf[i * 8..(i + 1) * 8].copy_from_slice(&w.to_le_bytes());
    }
    out.write_all(&buf[..words.len() * 8])
}
