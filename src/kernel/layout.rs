//! The model-like file kernel-replay pages through: a header page, then per MoE layer
//! the experts of that layer, each either one contiguous range or (like a GGUF's
//! `ffn_{gate,up,down}_exps` tensors) three slices in three per-layer tensors; or, for
//! `--gguf`, a GGUF file's own layout after the header page: its parts one after
//! another, every expert slice at its offset in its part, so the page boundaries and
//! the neighbours of every slice are the real file's. The content is pseudo-random, so
//! no storage layer can compress or deduplicate it.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::sys;
use crate::error::{printable_path, Error, Result};
use crate::report::cleanup::Temp;
use crate::weights::Weights;

/// Bytes before the first expert (one page, holds the description below).
pub const HEADER_BYTES: u64 = 4096;
const MAGIC: &str = "moe-spill kernel-replay model file\n";

/// Where every expert lives in the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpertFileLayout {
    /// Objects (MoE layers x experts), ids `slot * n_experts + expert`.
    pub n_ids: usize,
    pub n_experts: usize,
    /// Bytes of one expert (scaled down from the model's).
    pub expert_bytes: u64,
    /// 1 = each expert contiguous; 3 = gate/up/down slices in three tensors per layer
    /// (with `gguf`: the most slices a layer has).
    pub slices: u32,
    /// A GGUF file's layout instead of the one above.
    pub gguf: Option<GgufLayout>,
}

/// Where a GGUF's expert slices are, relative to the end of the header page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GgufLayout {
    /// Bytes of the GGUF (all its parts).
    pub len: u64,
    /// Per MoE layer (slot): each slice's start for expert 0 and its bytes per expert;
    /// expert `e`'s slice starts `e * bytes` later.
    pub slots: Vec<Vec<(u64, u64)>>,
}

impl GgufLayout {
    /// The layout of the GGUF file `w` was read from: its parts one after another.
    /// None for a preset's weights.
    pub fn of(w: &Weights) -> Option<GgufLayout> {
        if w.files.is_empty() {
            return None;
        }
        let mut starts = Vec::with_capacity(w.files.len());
        let mut len = 0u64;
        for (_, l) in &w.files {
            starts.push(len);
            len += l;
        }
        let slots = w
            .layers
            .iter()
            .map(|l| {
                l.slices
                    .iter()
                    .map(|s| s.at.map(|at| (starts[at.part] + at.offset, s.bytes)))
                    .collect::<Option<Vec<_>>>()
            })
            .collect::<Option<Vec<_>>>()?;
        Some(GgufLayout { len, slots })
    }

    /// FNV-1a of the slices, so a reused file is checked against the whole layout.
    fn fingerprint(&self) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut eat = |x: u64| {
            for b in x.to_le_bytes() {
                h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(self.len);
        for slot in &self.slots {
            eat(slot.len() as u64);
            for &(off, len) in slot {
                eat(off);
                eat(len);
            }
        }
        h
    }
}

impl ExpertFileLayout {
    pub fn file_len(&self) -> u64 {
        match &self.gguf {
            Some(g) => HEADER_BYTES + g.len,
            None => HEADER_BYTES + self.n_ids as u64 * self.expert_bytes,
        }
    }

    fn slice_len(&self, j: u32) -> u64 {
        let base = self.expert_bytes / self.slices as u64;
        if j + 1 == self.slices {
            self.expert_bytes - base * (self.slices as u64 - 1)
        } else {
            base
        }
    }

    /// The byte ranges `(offset, len)` of expert `id`, in the order llama.cpp reads
    /// them (gate, up, down).
    pub fn extents(&self, id: usize) -> impl Iterator<Item = (u64, u64)> + '_ {
        let slot = id / self.n_experts;
        let e = (id % self.n_experts) as u64;
        let mut out = [(0u64, 0u64); 3];
        let n = match &self.gguf {
            Some(g) => {
                for (o, &(start, len)) in out.iter_mut().zip(&g.slots[slot]) {
                    *o = (HEADER_BYTES + start + e * len, len);
                }
                g.slots[slot].len().min(3)
            }
            None => {
                let layer_base =
                    HEADER_BYTES + slot as u64 * self.n_experts as u64 * self.expert_bytes;
                let mut tensor = layer_base;
                for (j, o) in out.iter_mut().enumerate().take(self.slices as usize) {
                    let len = self.slice_len(j as u32);
                    *o = (tensor + e * len, len);
                    tensor += self.n_experts as u64 * len;
                }
                self.slices as usize
            }
        };
        out.into_iter().take(n)
    }

    fn header(&self) -> Vec<u8> {
        let mut h = format!(
            "{MAGIC}version 1\nn_ids {}\nn_experts {}\nexpert_bytes {}\nslices {}\n",
            self.n_ids, self.n_experts, self.expert_bytes, self.slices
        );
        if let Some(g) = &self.gguf {
            h += &format!("gguf {} {:016x}\n", g.len, g.fingerprint());
        }
        let mut h = h.into_bytes();
        h.resize(HEADER_BYTES as usize, 0);
        h
    }
}

/// The laid-out file; a temporary one is removed on drop, or on a signal.
#[derive(Debug)]
pub struct ModelFile {
    pub path: PathBuf,
    pub layout: ExpertFileLayout,
    /// For a temporary file: its registration for removal.
    pub temporary: Option<Temp>,
    /// Whether this run wrote it (false: reused).
    pub written: bool,
}

/// SplitMix64: fast, and its output does not compress.
fn fill_random(buf: &mut [u8], mut state: u64) {
    for chunk in buf.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
}

/// Check that `dir` can hold a kernel-replay file of `need` bytes whose pages really
/// come from storage.
pub fn check_file_system(dir: &Path, need: u64) -> Result<()> {
    let magic = sys::fs_magic(dir).map_err(|e| Error::io(dir, e))?;
    if let Some(name) = sys::memory_fs_name(magic) {
        return Err(Error::in_file(
            dir,
            format!("is on {name}: its pages live in memory and are never read from storage; put --file on a disk file system"),
        ));
    }
    let free = sys::free_bytes(dir).map_err(|e| Error::io(dir, e))?;
    let margin = 512 << 20;
    if free < need + margin {
        return Err(Error::in_file(
            dir,
            format!(
                "not enough room for the kernel-replay file: it needs {:.2} GiB (+0.5 GiB margin), {:.2} GiB free (use a smaller --expert-bytes)",
                need as f64 / (1u64 << 30) as f64,
                free as f64 / (1u64 << 30) as f64
            ),
        ));
    }
    Ok(())
}

impl ModelFile {
    /// Reuse `path` when it holds this layout, or write it. `path` None: a temporary
    /// file in the current directory, removed when the returned value is dropped.
    pub fn prepare(
        path: Option<&Path>,
        layout: ExpertFileLayout,
        quiet: bool,
    ) -> Result<ModelFile> {
        let (path, temporary) = match path {
            Some(p) => (p.to_path_buf(), false),
            None => (
                PathBuf::from(format!(
                    ".moe-spill-kernel-{}-{}x{}.bin",
                    std::process::id(),
                    layout.n_ids,
                    layout.expert_bytes
                )),
                true,
            ),
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let header = layout.header();
        if let Ok(mut f) = File::open(&path) {
            let mut head = vec![0u8; HEADER_BYTES as usize];
            let len = f.metadata().map_err(|e| Error::io(&path, e))?.len();
            let got = f.read(&mut head).map_err(|e| Error::io(&path, e))?;
            let ours = head[..got].starts_with(MAGIC.as_bytes());
            if !ours {
                return Err(Error::in_file(
                    &path,
                    "exists and is not a kernel-replay file; remove it or choose another --file",
                ));
            }
            if head == header && len == layout.file_len() {
                let magic = sys::fs_magic(&dir).map_err(|e| Error::io(&dir, e))?;
                if let Some(name) = sys::memory_fs_name(magic) {
                    return Err(Error::in_file(
                        &dir,
                        format!("is on {name}: its pages live in memory and are never read from storage; put --file on a disk file system"),
                    ));
                }
                if !quiet {
                    crate::note!(
                        "moe-spill: reusing {} ({:.2} GiB)",
                        printable_path(&path),
                        len as f64 / (1u64 << 30) as f64
                    );
                }
                return Ok(ModelFile {
                    temporary: temporary.then(|| Temp::register(path.clone())),
                    path,
                    layout,
                    written: false,
                });
            }
            if !quiet {
                crate::note!(
                    "moe-spill: {} holds another layout; rewriting it",
                    printable_path(&path)
                );
            }
            drop(f);
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
        let total = layout.file_len();
        check_file_system(&dir, total)?;
        let file = ModelFile {
            temporary: temporary.then(|| Temp::register(path.clone())),
            path,
            layout,
            written: true,
        };
        let bar = crate::progress::bar(total >> 20, "writing", quiet);
        if !quiet {
            crate::note!(
                "moe-spill: writing {} ({:.2} GiB, {} experts of {} B)",
                printable_path(&file.path),
                total as f64 / (1u64 << 30) as f64,
                file.layout.n_ids,
                file.layout.expert_bytes
            );
        }
        crate::report::write_atomic(&file.path, |w| {
            w.write_all(&header)?;
            let mut buf = vec![0u8; 1 << 20];
            let mut left = total - HEADER_BYTES;
            let mut chunk = 0u64;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                fill_random(&mut buf[..n], chunk.wrapping_mul(0xA076_1D64_78BD_642F));
                w.write_all(&buf[..n])?;
                left -= n as u64;
                chunk += 1;
                bar.set_position((total - left) >> 20);
            }
            Ok(())
        })?;
        bar.finish_and_clear();
        Ok(file)
    }

    /// Drop every page of the file from the page cache (posix_fadvise DONTNEED after
    /// writing back dirty pages) and check with mincore that they are gone.
    pub fn drop_cache(&self) -> Result<()> {
        let f = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let map = sys::SharedMapping::new(&f, self.layout.file_len())
            .map_err(|e| Error::in_file(&self.path, format!("cannot mmap the file: {e}")))?;
        let mut vec = Vec::new();
        for attempt in 0..5 {
            // Dirty pages cannot be dropped: write them first.
            f.sync_data().map_err(|e| Error::io(&self.path, e))?;
            sys::fadvise(&f, 0, 0, libc::POSIX_FADV_DONTNEED).map_err(|e| {
                Error::in_file(
                    &self.path,
                    format!("the file system does not support posix_fadvise(DONTNEED): {e}"),
                )
            })?;
            map.residency(&mut vec).map_err(|e| {
                Error::in_file(
                    &self.path,
                    format!("the file system does not support mincore: {e}"),
                )
            })?;
            let left = vec.iter().filter(|&&b| b & 1 != 0).count();
            if left == 0 {
                return Ok(());
            }
            if attempt == 4 {
                return Err(Error::in_file(
                    &self.path,
                    format!("{left} pages stay in the page cache after posix_fadvise(DONTNEED) (is another process mapping the file?)"),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        unreachable!()
    }

    /// Resident pages of every expert, from mincore.
    pub fn resident_pages(&self) -> io::Result<Vec<u32>> {
        let f = File::open(&self.path)?;
        let map = sys::SharedMapping::new(&f, self.layout.file_len())?;
        let mut vec = Vec::new();
        map.residency(&mut vec)?;
        let page = sys::page_size();
        Ok((0..self.layout.n_ids)
            .map(|id| {
                self.layout
                    .extents(id)
                    .map(|(off, len)| {
                        let (a, b) = (off / page, (off + len).div_ceil(page));
                        vec[a as usize..b as usize]
                            .iter()
                            .filter(|&&x| x & 1 != 0)
                            .count() as u32
                    })
                    .sum()
            })
            .collect())
    }

    /// Pages of one expert (an extent's first and last page may be shared): the mean
    /// over every expert when layers differ.
    pub fn pages_per_expert(&self) -> u32 {
        let page = sys::page_size();
        let pages = |id: usize| -> u64 {
            self.layout
                .extents(id)
                .map(|(off, len)| (off + len).div_ceil(page) - off / page)
                .sum()
        };
        if self.layout.gguf.is_none() {
            return pages(0) as u32;
        }
        let n = self.layout.n_ids.max(1) as u64;
        ((0..self.layout.n_ids).map(pages).sum::<u64>() as f64 / n as f64).round() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_tile_the_file() {
        for slices in [1, 3] {
            let l = ExpertFileLayout {
                n_ids: 3 * 5,
                n_experts: 5,
                expert_bytes: 1000,
                slices,
                gguf: None,
            };
            let mut all: Vec<(u64, u64)> = (0..l.n_ids).flat_map(|id| l.extents(id)).collect();
            assert_eq!(all.iter().map(|e| e.1).sum::<u64>(), 15 * 1000);
            all.sort();
            let mut at = HEADER_BYTES;
            for (off, len) in all {
                assert_eq!(off, at);
                at += len;
            }
            assert_eq!(at, l.file_len());
        }
        let l = ExpertFileLayout {
            n_ids: 4,
            n_experts: 2,
            expert_bytes: 300,
            slices: 3,
            gguf: None,
        };
        // layer 1, expert 1: gate after layer 0 (600 B) and expert 0's gate.
        let e: Vec<_> = l.extents(3).collect();
        assert_eq!(
            e,
            vec![
                (HEADER_BYTES + 600 + 100, 100),
                (HEADER_BYTES + 600 + 200 + 100, 100),
                (HEADER_BYTES + 600 + 400 + 100, 100)
            ]
        );
    }

    #[test]
    fn a_gguf_layout_keeps_the_files_offsets() {
        // Two layers of 4 experts: gate/up/down of 96 B at 1000, 1384, 1768 (the
        // down tensor after a gap), then a fused gate_up of 64 B and a down of 32 B.
        let g = GgufLayout {
            len: 5000,
            slots: vec![
                vec![(1000, 96), (1384, 96), (1800, 96)],
                vec![(3000, 64), (3256, 32)],
            ],
        };
        let l = ExpertFileLayout {
            n_ids: 8,
            n_experts: 4,
            expert_bytes: 250,
            slices: 3,
            gguf: Some(g.clone()),
        };
        assert_eq!(l.file_len(), HEADER_BYTES + 5000);
        let e: Vec<_> = l.extents(2).collect();
        assert_eq!(
            e,
            vec![
                (HEADER_BYTES + 1000 + 192, 96),
                (HEADER_BYTES + 1384 + 192, 96),
                (HEADER_BYTES + 1800 + 192, 96)
            ]
        );
        let e: Vec<_> = l.extents(7).collect();
        assert_eq!(
            e,
            vec![
                (HEADER_BYTES + 3000 + 192, 64),
                (HEADER_BYTES + 3256 + 96, 32)
            ]
        );
        // Another layout has another header.
        let mut other = l.clone();
        other.gguf.as_mut().unwrap().slots[1][1].0 += 32;
        assert_ne!(l.header(), other.header());
    }
}
